"""colorize's input expansion and output naming (pure file-system rules; the e2e test runs it)."""
from __future__ import annotations

import os

from tools import colorize


def _touch(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(b'x')
  return str(path)


def test_files_folders_and_globs_expand_once_each_and_problems_are_named(tmp_path):
  a = _touch(tmp_path / 'in' / 'a.jpg')
  b = _touch(tmp_path / 'in' / 'sub' / 'b.PNG')
  _touch(tmp_path / 'in' / 'notes.txt')
  paths, problems = colorize.expand_inputs([
      str(tmp_path / 'in'), a, str(tmp_path / 'in' / '*.jpg'), str(tmp_path / 'missing.jpg'),
      str(tmp_path / 'nothing' / '*.png')])
  assert paths == [a, b]  # folders recursively, images only; each path once
  assert problems == [(str(tmp_path / 'missing.jpg'), 'no such file'),
                      (str(tmp_path / 'nothing' / '*.png'), 'matches no image')]


def test_output_names_never_collide(tmp_path):
  paths = [str(tmp_path / 'x' / 'a.jpg'), str(tmp_path / 'y' / 'a.jpg'),
           str(tmp_path / 'y' / 'b.jpg'), str(tmp_path / 'y' / 'b.png')]
  names = colorize.output_names(paths, 'out')
  assert names == {paths[0]: os.path.join('out', 'x', 'a.png'),
                   paths[1]: os.path.join('out', 'y', 'a.png'),
                   paths[2]: os.path.join('out', 'y', 'b_jpg.png'),
                   paths[3]: os.path.join('out', 'y', 'b_png.png')}
  assert colorize.output_names([paths[0]], 'out') == {paths[0]: os.path.join('out', 'a.png')}
