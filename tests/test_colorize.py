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


# --- on a pushed model (tests/conftest.py: exported_model) and real photos --------------------

import io  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image, ImageCms  # noqa: E402

import pipeline_runner  # noqa: E402
from pipeline import configs  # noqa: E402
from tests.conftest import RACCOON_VOC, sample_image  # noqa: E402
from tests.test_orientation import STORED  # noqa: E402


def _phone_photo(path, tag: int) -> Image.Image:
  """The sample's motorcycle stored as a phone stores it with orientation `tag`, with a camera
  make in its EXIF, an sRGB ICC profile and 300 DPI; returns the upright photo."""
  upright = sample_image('motorcycle_left').convert('RGB')
  stored = upright.transpose(STORED[tag]) if STORED[tag] else upright
  exif = Image.Exif()
  exif[0x010F] = 'instcolor phone'
  exif[0x0112] = tag
  icc = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()
  stored.save(path, format='JPEG', quality=92, exif=exif.tobytes(), icc_profile=icc,
              dpi=(300, 300))
  return upright


@pytest.mark.parametrize('image_format', ('png', 'jpg'))
def test_phone_photos_are_written_upright_with_their_metadata(exported_model, tmp_path,
                                                             image_format):
  tags = (3, 6, 8)
  folder = tmp_path / 'in'
  folder.mkdir()
  upright = {tag: _phone_photo(folder / f'phone{tag}.jpg', tag) for tag in tags}
  out = tmp_path / 'out'
  assert pipeline_runner.main(['colorize', str(folder), '--model', exported_model, '--out',
                               str(out), '--format', image_format]) == 0
  for tag in tags:
    with Image.open(out / f'phone{tag}.{image_format}') as result:
      assert result.format == {'png': 'PNG', 'jpg': 'JPEG'}[image_format]
      assert result.size == upright[tag].size  # shown upright without any tag to apply
      exif = result.getexif()
      assert exif.get(0x0112) == 1 and exif.get(0x010F) == 'instcolor phone'
      with Image.open(folder / f'phone{tag}.jpg') as source:
        assert result.info.get('icc_profile') == source.info['icc_profile']
      assert tuple(round(d) for d in result.info['dpi']) == (300, 300)
      # The output's lightness is the upright photo's (not the stored one's).
      gray = np.asarray(result.convert('L'), np.float32)
      assert np.abs(gray - np.asarray(upright[tag].convert('L'), np.float32)).mean() < 6


def test_a_photo_without_metadata_is_written_as_the_model_gives_it(exported_model, tmp_path):
  photo = tmp_path / 'plain.png'
  sample_image('chelsea').convert('RGB').save(photo)
  out = tmp_path / 'out'
  assert pipeline_runner.main(['colorize', str(photo), '--model', exported_model, '--out',
                               str(out), '--saturation', '2']) == 0
  served = colorize.Serving(exported_model)([photo.read_bytes()], [np.zeros([0, 4])], 2.0)[0]
  assert (out / 'plain.png').read_bytes() == served


def test_bad_saturation_and_quality_are_refused_before_anything_runs(tmp_path, capsys):
  for flags in (['--saturation', '-1'], ['--saturation', '5'], ['--quality', '0']):
    with pytest.raises(SystemExit) as exit_info:
      pipeline_runner.main(['colorize', 'x.jpg', '--model', str(tmp_path), '--out',
                            str(tmp_path), *flags])
    assert exit_info.value.code == 2
  assert 'saturation must be in [0.0, 4.0], not 5' in capsys.readouterr().err


PHOTOS = 40


@pytest.fixture
def photo_folder(tmp_path):
  """PHOTOS real photos (the shared raccoon set) in a folder tree."""
  folder = tmp_path / 'photos'
  names = sorted(os.listdir(os.path.join(RACCOON_VOC, 'JPEGImages')))[:PHOTOS]
  for i, name in enumerate(names):
    target = folder / f'part{i % 3}' / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(os.path.join(RACCOON_VOC, 'JPEGImages', name), 'rb') as f:
      target.write_bytes(f.read())
  return folder


def _start_colorize(model: str, folder, out, *flags) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, os.path.join(configs.REPO_ROOT, 'pipeline_runner.py'), 'colorize',
       str(folder), '--model', model, '--out', str(out), '--batch-size', '2', *flags],
      cwd=configs.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _manifest_rows(out) -> list:
  import csv
  with open(out / colorize.MANIFEST, newline='') as f:
    return list(csv.DictReader(f))


def _wait_for_rows(process: subprocess.Popen, out, rows: int, timeout: float = 300) -> None:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    manifest = out / colorize.MANIFEST
    if manifest.exists() and len(_manifest_rows(out)) >= rows:
      return
    assert process.poll() is None, process.communicate()
    time.sleep(0.02)
  raise AssertionError('colorize wrote no rows in time')


def _outputs(out) -> dict:
  return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob('*.png')}


def test_a_killed_run_resumes_and_ends_with_every_photo_written_once(exported_model, photo_folder,
                                                                     tmp_path):
  out = tmp_path / 'out'
  process = _start_colorize(exported_model, photo_folder, out)
  _wait_for_rows(process, out, 3)
  process.kill()  # SIGKILL: no handler runs, whatever was being written stays as it was
  process.communicate()
  before = _outputs(out)
  assert 3 <= len(before) < PHOTOS
  for path in before:  # every file under an output name is a whole image
    with Image.open(out / path) as image:
      image.load()

  resumed = _start_colorize(exported_model, photo_folder, out, '--skip-existing')
  stdout, stderr = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, stderr
  assert f'{len(before)} of {PHOTOS} outputs already in' in stdout
  after = _outputs(out)
  assert len(after) == PHOTOS
  assert {p: after[p] for p in before} == before  # not written again
  assert not [p for p in out.rglob('*') if p.name.endswith('.instcolor-partial')]
  rows = _manifest_rows(out)
  assert sorted(r['input'] for r in rows) == sorted(str(p) for p in photo_folder.rglob('*.jpg'))
  assert {r['status'] for r in rows} <= {'written', 'existing'}
  assert sorted(os.path.relpath(r['output'], out) for r in rows) == sorted(after)
  written = [r for r in rows if r['status'] == 'written']
  assert all(float(r['seconds']) > 0 and r['box_source'] == 'none' and r['boxes'] == '[]'
             for r in written)


def test_ctrl_c_stops_after_the_current_batch_with_the_summary(exported_model, photo_folder,
                                                               tmp_path):
  out = tmp_path / 'out'
  process = _start_colorize(exported_model, photo_folder, out)
  _wait_for_rows(process, out, 2)
  process.send_signal(signal.SIGINT)
  stdout, stderr = process.communicate(timeout=300)
  assert process.returncode == 130, stderr
  assert 'stopping after the current batch' in stderr
  assert 'with --skip-existing goes on from here' in stderr
  assert 'Traceback' not in stderr
  rows = _manifest_rows(out)
  assert 2 <= len(rows) < PHOTOS and len(rows) % 2 == 0  # whole batches of 2
  assert sorted(os.path.relpath(r['output'], out) for r in rows) == sorted(_outputs(out))
  assert f'colorize: {len(rows)} of {PHOTOS} images written' in stdout
