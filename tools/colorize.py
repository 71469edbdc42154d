"""colorize: run a pushed instcolor SavedModel on image files, with boxes from a file, a detector
(components/detectors.py: a TFLite SSD file, a tensorflow_hub handle or SavedModel) or none
(full-image path)."""
from __future__ import annotations

import collections
import dataclasses
import glob
import io
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tqdm
from PIL import Image

from components.detectors import Boxes, Detector


def resolve_model_dir(path: str) -> str:
  """A SavedModel folder, or a Pusher destination holding versioned ones (newest wins)."""
  if tf.io.gfile.exists(os.path.join(path, 'saved_model.pb')):
    return path
  versions = sorted((int(v.rstrip('/')) for v in tf.io.gfile.listdir(path)
                     if v.rstrip('/').isdigit()), reverse=True) if tf.io.gfile.isdir(path) else []
  for version in versions:
    candidate = os.path.join(path, str(version))
    if tf.io.gfile.exists(os.path.join(candidate, 'saved_model.pb')):
      return candidate
  raise FileNotFoundError(f'no SavedModel in {path} (nor in numbered version folders under it)')


def load_boxes_file(path: str) -> Dict[str, Boxes]:
  """JSON {"image name or path": [[ymin, xmin, ymax, xmax], ...]} (normalised)."""
  with tf.io.gfile.GFile(path) as f:
    raw = json.load(f)
  boxes = {}
  for key, rows in raw.items():
    array = np.asarray(rows, np.float32).reshape(-1, 4)
    boxes[key] = array
  return boxes


IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.gif', '.bmp')
# Up to this many images, one line each; more get a progress bar with images/s.
FEW_IMAGES = 4


def expand_inputs(inputs: Sequence[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
  """Files, folders (their images, recursively) and globs -> (image paths, [(input, problem)])."""
  paths: List[str] = []
  problems = []
  for item in inputs:
    if os.path.isdir(item):
      found = sorted(os.path.join(folder, name) for folder, _, names in os.walk(item)
                     for name in names if name.lower().endswith(IMAGE_SUFFIXES))
    elif glob.has_magic(item):
      found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
    else:
      found = [item] if os.path.isfile(item) else []
    if not found:
      problems.append((item, 'no such file' if not glob.has_magic(item) and not os.path.isdir(item)
                       else 'matches no image'))
    paths.extend(found)
  return list(dict.fromkeys(paths)), problems


def output_names(paths: Sequence[str], out_dir: str) -> Dict[str, str]:
  """image path -> output PNG path. Folders below the inputs' common folder are kept, so two
  a.jpg from different folders never collide; x.jpg beside x.png become x_jpg.png and x_png.png."""
  if not paths:
    return {}
  absolute = {p: os.path.abspath(p) for p in paths}
  common = os.path.commonpath([os.path.dirname(a) for a in absolute.values()])
  stems = {p: os.path.splitext(os.path.relpath(a, common)) for p, a in absolute.items()}
  taken = collections.Counter(stem for stem, _ in stems.values())
  return {p: os.path.join(out_dir, (stem if taken[stem] == 1 else f'{stem}_{ext.lstrip(".")}')
                          + '.png')
          for p, (stem, ext) in stems.items()}


def gray_and_colour(image_bytes: bytes, colorized_png: bytes) -> bytes:
  """gray input | colorized, one PNG at the input's resolution."""
  colour = Image.open(io.BytesIO(colorized_png)).convert('RGB')
  gray = Image.open(io.BytesIO(image_bytes)).convert('L').convert('RGB').resize(colour.size)
  canvas = Image.new('RGB', (2 * colour.width, colour.height))
  canvas.paste(gray, (0, 0))
  canvas.paste(colour, (colour.width, 0))
  buffer = io.BytesIO()
  canvas.save(buffer, format='PNG', compress_level=1)
  return buffer.getvalue()


@dataclasses.dataclass
class _Job:
  path: str
  target: str
  image_bytes: bytes = b''
  boxes: Boxes = dataclasses.field(default_factory=lambda: np.zeros([0, 4], np.float32))
  box_source: str = 'none'


@dataclasses.dataclass
class Outcome:
  written: List[str]
  failed: List[Tuple[str, str]]  # (input, one-line reason)


def _one_line(error: Exception) -> str:
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  message = lines[-1] if lines else ''
  return f'{type(error).__name__}: {message}'[:300]


class Serving:
  """A pushed model's serving_default on batches of image bytes, each with its own boxes."""

  def __init__(self, model_dir: str):
    self.model_dir = resolve_model_dir(model_dir)
    self._signature = tf.saved_model.load(self.model_dir).signatures['serving_default']

  def __call__(self, images: Sequence[bytes], boxes: Sequence[Boxes]) -> List[bytes]:
    """Colorized PNGs; the box lists are padded to the longest with zero-area rows."""
    padded = np.zeros([len(images), max(len(b) for b in boxes), 4], np.float32)
    for i, image_boxes in enumerate(boxes):
      padded[i, :len(image_boxes)] = image_boxes
    outputs = self._signature(images=tf.constant(list(images)), boxes=tf.constant(padded))
    return list(outputs['colorized'].numpy())


def colorize_files(model_dir: str, inputs: Sequence[str], out_dir: str,
                   boxes: Optional[Dict[str, Boxes]] = None,
                   detector: Optional[Detector] = None, batch_size: int = 8,
                   side_by_side: bool = False) -> Outcome:
  """Colorizes files, folders and globs into out_dir (see output_names). An unreadable file is
  reported in one line and skipped; the others go on."""
  paths, problems = expand_inputs(inputs)
  failed = list(problems)
  for item, problem in problems:
    print(f'error: {item}: {problem}', file=sys.stderr, flush=True)
  names = output_names(paths, out_dir)
  model = Serving(model_dir) if paths else None

  def serve(jobs: Sequence[_Job]) -> List[bytes]:
    return model([j.image_bytes for j in jobs], [j.boxes for j in jobs])

  written: List[str] = []
  start = time.perf_counter()
  few = len(paths) <= FEW_IMAGES
  with tqdm.tqdm(total=len(paths), unit='img', disable=few, dynamic_ncols=True) as bar:

    def fail(job: _Job, reason: str) -> None:
      failed.append((job.path, reason))
      bar.write(f'error: {job.path}: {reason}', file=sys.stderr)

    def done(job: _Job, png: bytes) -> None:
      target_dir = os.path.dirname(job.target)
      tf.io.gfile.makedirs(target_dir)
      with tf.io.gfile.GFile(job.target, 'wb') as f:
        f.write(gray_and_colour(job.image_bytes, png) if side_by_side else png)
      written.append(job.target)
      if few:
        print(f'{job.path} -> {job.target} ({len(job.boxes)} boxes from {job.box_source})',
              flush=True)

    for first in range(0, len(paths), batch_size):
      batch = []
      for path in paths[first:first + batch_size]:
        job = _Job(path, names[path])
        try:
          with tf.io.gfile.GFile(path, 'rb') as f:
            job.image_bytes = f.read()
          if detector is not None:
            job.boxes, job.box_source = detector(job.image_bytes), 'detector'
          elif boxes is not None:
            job.boxes = boxes.get(path, boxes.get(os.path.basename(path),
                                                  np.zeros([0, 4], np.float32)))
            job.box_source = 'boxes file'
          batch.append(job)
        except (OSError, tf.errors.OpError) as e:
          fail(job, _one_line(e))
          bar.update()
      if not batch:
        continue
      try:
        results = list(zip(batch, serve(batch)))
      except tf.errors.InvalidArgumentError:
        results = []  # one bad image fails its whole batch: find it, keep the others
        for job in batch:
          try:
            results.append((job, serve([job])[0]))
          except tf.errors.InvalidArgumentError as e:
            fail(job, 'not a readable image (' + _one_line(e) + ')')
            bar.update()
      for job, png in results:
        done(job, png)
        bar.update()
  seconds = time.perf_counter() - start
  rate = f', {len(written) / seconds:.1f} images/s' if written else ''
  print(f'colorize: {len(written)} of {len(paths)} images written to {out_dir} in '
        f'{seconds:.1f} s{rate}', flush=True)
  if failed:
    print(f'colorize: {len(failed)} failed:', file=sys.stderr)
    for item, reason in failed:
      print(f'  {item}: {reason}', file=sys.stderr)
  return Outcome(written, failed)
