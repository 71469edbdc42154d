"""colorize: run a pushed instcolor SavedModel on image files, with boxes from a file, a detector
(components/detectors.py: a TFLite SSD file, a tensorflow_hub handle or SavedModel) or none
(full-image path).

Photos are colorized upright (the serving signature applies a JPEG's EXIF orientation) and written
with the input's EXIF (orientation reset to 1), ICC profile and DPI, as PNG or JPEG. Folder runs
are resumable: each photo's outcome is appended to `<out>/manifest.csv` as it is written (input,
output, status, boxes and their source, seconds, error); outputs appear whole or not at all
(written to a temporary name, then renamed); `skip_existing` leaves photos whose output exists;
Ctrl-C (or SIGTERM) stops after the current batch, with the summary.
"""
from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import glob
import io
import json
import os
import signal
import sys
import threading
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tqdm
from PIL import Image, ImageOps

from components.detectors import Boxes, Detector
from tools import hints_file
from tools.hints_file import PhotoHints
from trainer import serving


def resolve_model_dir(path: str) -> str:
  """A SavedModel folder, or a Pusher destination holding versioned ones (newest wins)."""
  return serving.resolve_saved_model(path)


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


FORMATS = {'png': '.png', 'jpg': '.jpg'}
MANIFEST = 'manifest.csv'
MANIFEST_COLUMNS = ('input', 'output', 'status', 'boxes', 'box_source', 'seconds', 'error')
WRITTEN, EXISTING, FAILED = 'written', 'existing', 'failed'
_PARTIAL = '.instcolor-partial'  # suffix of an output being written; never a finished one
ORIENTATION_TAG = 0x0112  # EXIF


def output_names(paths: Sequence[str], out_dir: str, extension: str = '.png') -> Dict[str, str]:
  """image path -> output path. Folders below the inputs' common folder are kept, so two a.jpg
  from different folders never collide; x.jpg beside x.png become x_jpg.png and x_png.png."""
  if not paths:
    return {}
  absolute = {p: os.path.abspath(p) for p in paths}
  common = os.path.commonpath([os.path.dirname(a) for a in absolute.values()])
  stems = {p: os.path.splitext(os.path.relpath(a, common)) for p, a in absolute.items()}
  taken = collections.Counter(stem for stem, _ in stems.values())
  return {p: os.path.join(out_dir, (stem if taken[stem] == 1 else f'{stem}_{ext.lstrip(".")}')
                          + extension)
          for p, (stem, ext) in stems.items()}


@dataclasses.dataclass
class Metadata:
  """What a photo carries besides its pixels, for its colorized copy."""
  exif: Optional[bytes] = None
  icc_profile: Optional[bytes] = None
  dpi: Optional[Tuple[float, float]] = None

  @classmethod
  def of(cls, image_bytes: bytes) -> 'Metadata':
    with Image.open(io.BytesIO(image_bytes)) as image:
      exif = image.getexif()
      # The serving signature turns JPEGs upright; the copy must not be turned again by viewers.
      if image.format == 'JPEG' and exif.get(ORIENTATION_TAG, 1) != 1:
        exif[ORIENTATION_TAG] = 1
      dpi = image.info.get('dpi')
      return cls(exif=exif.tobytes() if len(exif) else None,
                 icc_profile=image.info.get('icc_profile') or None,
                 dpi=tuple(float(d) for d in dpi) if dpi else None)

  def save_options(self) -> Dict:
    return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def encode_output(colorized_png: bytes, image_bytes: bytes, image_format: str = 'png',
                  quality: int = 95, side_by_side: bool = False) -> bytes:
  """The model's PNG as the file to write: gray input | colour when side_by_side, in
  `image_format`, with the input's metadata (Metadata)."""
  metadata = Metadata.of(image_bytes)
  if image_format == 'png' and not side_by_side and not metadata.save_options():
    return colorized_png  # already what is wanted: no decode and encode again
  image = Image.open(io.BytesIO(colorized_png)).convert('RGB')
  if side_by_side:
    gray = ImageOps.exif_transpose(Image.open(io.BytesIO(image_bytes))).convert('L')
    canvas = Image.new('RGB', (2 * image.width, image.height))
    canvas.paste(gray.convert('RGB').resize(image.size), (0, 0))
    canvas.paste(image, (image.width, 0))
    image = canvas
  buffer = io.BytesIO()
  if image_format == 'jpg':
    image.save(buffer, format='JPEG', quality=quality, **metadata.save_options())
  else:
    # zlib level 1, as the signature's own PNGs: several times faster, the same pixels.
    image.save(buffer, format='PNG', compress_level=1, **metadata.save_options())
  return buffer.getvalue()


def write_atomically(path: str, data: bytes) -> None:
  """`path` holds all of `data` or is left as it was: written under a temporary name, renamed."""
  tf.io.gfile.makedirs(os.path.dirname(path) or '.')
  partial = f'{path}.{os.getpid()}{_PARTIAL}'
  with tf.io.gfile.GFile(partial, 'wb') as f:
    f.write(data)
  tf.io.gfile.rename(partial, path, overwrite=True)


def remove_partial_outputs(out_dir: str) -> int:
  """Deletes what killed runs left half-written in out_dir (local folders); returns the count."""
  removed = 0
  if os.path.isdir(out_dir):
    for folder, _, files in os.walk(out_dir):
      for name in files:
        if name.endswith(_PARTIAL):
          os.remove(os.path.join(folder, name))
          removed += 1
  return removed


class Manifest:
  """`<out>/manifest.csv`, one row per photo appended (and flushed) as it is done. `finish`
  rewrites it with one row per input, the last outcome of each, so a resumed run ends with each
  photo once."""

  def __init__(self, out_dir: str):
    self.path = os.path.join(out_dir, MANIFEST)
    self.rows: Dict[str, Dict[str, str]] = {}
    if tf.io.gfile.exists(self.path):
      with tf.io.gfile.GFile(self.path) as f:
        for row in csv.DictReader(f):
          if row.get('input'):
            self.rows[row['input']] = row
    tf.io.gfile.makedirs(out_dir)
    fresh = not self.rows and not (tf.io.gfile.exists(self.path) and
                                   tf.io.gfile.stat(self.path).length)
    self._file = open(self.path, 'a', newline='') if '://' not in out_dir else None
    self._writer = csv.DictWriter(self._file, MANIFEST_COLUMNS) if self._file else None
    if self._writer and fresh:
      self._writer.writeheader()

  def written_before(self, path: str) -> bool:
    return self.rows.get(path, {}).get('status') in (WRITTEN, EXISTING)

  def add(self, path: str, target: str, status: str, boxes: Boxes = None, box_source: str = '',
          seconds: Optional[float] = None, error: str = '') -> None:
    row = {'input': path, 'output': target, 'status': status,
           'boxes': '' if boxes is None else json.dumps(np.round(boxes, 4).tolist()),
           'box_source': box_source, 'seconds': '' if seconds is None else f'{seconds:.3f}',
           'error': error}
    self.rows[path] = row
    if self._writer:
      self._writer.writerow(row)
      self._file.flush()

  def finish(self) -> None:
    """One row per input (the latest), written whole under a temporary name and renamed."""
    if self._file:
      self._file.close()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, MANIFEST_COLUMNS)
    writer.writeheader()
    writer.writerows(self.rows.values())
    write_atomically(self.path, buffer.getvalue().encode())


@contextlib.contextmanager
def stop_requests() -> Iterator[threading.Event]:
  """An Event set by the first Ctrl-C or SIGTERM (the run stops after its current batch); a second
  Ctrl-C interrupts at once. Outside the main thread, signals are left as they are."""
  requested = threading.Event()
  if threading.current_thread() is not threading.main_thread():
    yield requested
    return

  def handler(signum, frame):
    del frame
    if requested.is_set() and signum == signal.SIGINT:
      raise KeyboardInterrupt
    requested.set()
    print(f'\ncolorize: {signal.Signals(signum).name}: stopping after the current batch '
          '(Ctrl-C again to stop now)', file=sys.stderr, flush=True)

  previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield requested
  finally:
    for s, old in previous.items():
      signal.signal(s, old)


@dataclasses.dataclass
class _Job:
  path: str
  target: str
  image_bytes: bytes = b''
  boxes: Boxes = dataclasses.field(default_factory=lambda: np.zeros([0, 4], np.float32))
  box_source: str = 'none'
  hints: Optional[PhotoHints] = None  # with --hints: the photo's (maybe none)
  seconds: float = 0.0  # reading and detecting; the batch's model time is shared out on top


@dataclasses.dataclass
class Outcome:
  written: List[str]
  failed: List[Tuple[str, str]]  # (input, one-line reason)
  skipped: List[str] = dataclasses.field(default_factory=list)  # outputs there before the run
  interrupted: bool = False
  manifest: Optional[str] = None


def _one_line(error: Exception) -> str:
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  message = lines[-1] if lines else ''
  return f'{type(error).__name__}: {message}'[:300]


class Serving:
  """A pushed model's serving signatures on batches of image bytes, each with its own boxes."""

  def __init__(self, model_dir: str):
    self.model_dir = resolve_model_dir(model_dir)
    self._signatures = tf.saved_model.load(self.model_dir).signatures

  def __call__(self, images: Sequence[bytes], boxes: Sequence[Boxes], saturation: float = 1.0,
               hints: Optional[Sequence[PhotoHints]] = None) -> List[bytes]:
    """Colorized PNGs; the box lists are padded to the longest with zero-area rows. With `hints`
    (one per image), each image's hint boxes are added to its boxes with their colours."""
    if hints is not None:
      boxes = [np.concatenate([b, h.boxes]) for b, h in zip(boxes, hints)]
    padded = np.zeros([len(images), max(len(b) for b in boxes), 4], np.float32)
    for i, image_boxes in enumerate(boxes):
      padded[i, :len(image_boxes)] = image_boxes
    inputs = {'images': tf.constant(list(images)), 'boxes': tf.constant(padded)}
    if hints is not None:
      outputs = self._hints_signature()(**inputs, **self.hint_inputs(boxes, hints),
                                        saturation=tf.fill([len(images)], float(saturation)))
    elif saturation == 1.0:
      outputs = self._signatures['serving_default'](**inputs)
    else:
      outputs = self._saturation_signature()(
          **inputs, saturation=tf.fill([len(images)], float(saturation)))
    return list(outputs['colorized'].numpy())

  @staticmethod
  def hint_inputs(boxes: Sequence[Boxes], hints: Sequence[PhotoHints]) -> Dict[str, tf.Tensor]:
    """colorize_with_hints' hints [B,P,6] and box_colors [B,N,4] for boxes that end with each
    image's hint boxes."""
    rows = np.zeros([len(hints), max(len(h.points) for h in hints), 6], np.float32)
    box_colors = np.zeros([len(hints), max(len(b) for b in boxes), 4], np.float32)
    for i, (image_boxes, image_hints) in enumerate(zip(boxes, hints)):
      rows[i, :len(image_hints.points)] = image_hints.rows()
      first = len(image_boxes) - len(image_hints.boxes)
      box_colors[i, first:len(image_boxes), :3] = image_hints.box_colors
      box_colors[i, first:len(image_boxes), 3] = 1.0
    return {'hints': tf.constant(rows), 'box_colors': tf.constant(box_colors)}

  def _hints_signature(self):
    if 'colorize_with_hints' not in self._signatures:
      raise LookupError(f'{self.model_dir} takes no colour hints: it was trained without them '
                        '(run the pipeline with --set hints=True), or exported by an earlier '
                        'instcolor')
    return self._signatures['colorize_with_hints']

  def _saturation_signature(self):
    if 'colorize_with_saturation' not in self._signatures:
      raise LookupError(f'{self.model_dir} has no colorize_with_saturation signature (it was '
                        'exported by an earlier instcolor); run the pipeline again, or leave '
                        '--saturation at 1')
    return self._signatures['colorize_with_saturation']


def _photo_entry(table: Dict[str, object], path: str, default):
  """A boxes or hints file's entry for `path`: under its path, else its file name."""
  return table.get(path, table.get(os.path.basename(path), default))


def colorize_files(model_dir: str, inputs: Sequence[str], out_dir: str,
                   boxes: Optional[Dict[str, Boxes]] = None,
                   detector: Optional[Detector] = None, batch_size: int = 8,
                   side_by_side: bool = False, saturation: float = 1.0,
                   image_format: str = 'png', quality: int = 95,
                   skip_existing: bool = False,
                   hints: Optional[Dict[str, PhotoHints]] = None) -> Outcome:
  """Colorizes files, folders and globs into out_dir (see output_names and the module docstring).
  An unreadable file is reported in one line and skipped; the others go on. `hints`
  (tools/hints_file.py, keyed like `boxes`) steers the colours of a model trained with hints."""
  if image_format not in FORMATS:
    raise ValueError(f'image_format must be one of {sorted(FORMATS)}, not {image_format!r}')
  paths, problems = expand_inputs(inputs)
  failed = list(problems)
  for item, problem in problems:
    print(f'error: {item}: {problem}', file=sys.stderr, flush=True)
  names = output_names(paths, out_dir, FORMATS[image_format])
  if remove_partial_outputs(out_dir):
    print(f'colorize: removed half-written outputs of an earlier run from {out_dir}', flush=True)
  manifest = Manifest(out_dir)
  skipped = []
  if skip_existing:
    for path in paths:
      if tf.io.gfile.exists(names[path]):
        skipped.append(path)
        if not manifest.written_before(path):  # killed between its rename and its row
          manifest.add(path, names[path], EXISTING)
    if skipped:
      print(f'colorize: {len(skipped)} of {len(paths)} outputs already in {out_dir}, skipped',
            flush=True)
    done_before = set(skipped)
    paths = [p for p in paths if p not in done_before]
  model = Serving(model_dir) if paths else None
  if model and hints is not None:
    model._hints_signature()  # a model without hints fails before any photo
    unused = sorted(set(hints) - set(paths) - {os.path.basename(p) for p in paths})
    if unused:
      print(f'colorize: warning: hints for {", ".join(unused)} match no input', file=sys.stderr,
            flush=True)
  elif model and saturation != 1.0:
    model._saturation_signature()  # a model without it fails before any photo

  def serve(jobs: Sequence[_Job]) -> List[bytes]:
    photo_hints = None if hints is None else [j.hints for j in jobs]
    return model([j.image_bytes for j in jobs], [j.boxes for j in jobs], saturation, photo_hints)

  written: List[str] = []
  start = time.perf_counter()
  few = len(paths) <= FEW_IMAGES
  interrupted = False
  with stop_requests() as stop, tqdm.tqdm(total=len(paths), unit='img', disable=few,
                                          dynamic_ncols=True) as bar:

    def fail(job: _Job, reason: str) -> None:
      failed.append((job.path, reason))
      manifest.add(job.path, job.target, FAILED, job.boxes, job.box_source, job.seconds, reason)
      bar.write(f'error: {job.path}: {reason}', file=sys.stderr)

    def done(job: _Job, png: bytes) -> None:
      write_atomically(job.target, encode_output(png, job.image_bytes, image_format, quality,
                                                 side_by_side))
      written.append(job.target)
      manifest.add(job.path, job.target, WRITTEN, job.boxes, job.box_source, job.seconds)
      if few:
        hinted = (f', {len(job.hints.points)} hint points and {len(job.hints.boxes)} coloured '
                  'boxes' if job.hints is not None else '')
        print(f'{job.path} -> {job.target} ({len(job.boxes)} boxes from {job.box_source}'
              f'{hinted})', flush=True)

    for first in range(0, len(paths), batch_size):
      if stop.is_set():
        interrupted = True
        break
      batch = []
      for path in paths[first:first + batch_size]:
        job = _Job(path, names[path])
        began = time.perf_counter()
        try:
          with tf.io.gfile.GFile(path, 'rb') as f:
            job.image_bytes = f.read()
          if detector is not None:
            job.boxes, job.box_source = detector(job.image_bytes), 'detector'
          elif boxes is not None:
            job.boxes = _photo_entry(boxes, path, np.zeros([0, 4], np.float32))
            job.box_source = 'boxes file'
          if hints is not None:
            job.hints = _photo_entry(hints, path, hints_file.NO_HINTS)
          job.seconds = time.perf_counter() - began
          batch.append(job)
        except (OSError, tf.errors.OpError) as e:
          job.seconds = time.perf_counter() - began
          fail(job, _one_line(e))
          bar.update()
      if not batch:
        continue
      began = time.perf_counter()
      try:
        results = list(zip(batch, serve(batch)))
        for job in batch:
          job.seconds += (time.perf_counter() - began) / len(batch)
      except tf.errors.InvalidArgumentError:
        results = []  # one bad image fails its whole batch: find it, keep the others
        for job in batch:
          began = time.perf_counter()
          try:
            results.append((job, serve([job])[0]))
            job.seconds += time.perf_counter() - began
          except tf.errors.InvalidArgumentError as e:
            job.seconds += time.perf_counter() - began
            fail(job, 'not a readable image (' + _one_line(e) + ')')
            bar.update()
      for job, png in results:
        try:
          done(job, png)
        except (OSError, tf.errors.OpError) as e:  # e.g. the output folder is not writable
          fail(job, 'cannot write the output (' + _one_line(e) + ')')
        bar.update()
  manifest.finish()
  seconds = time.perf_counter() - start
  rate = f', {len(written) / seconds:.1f} images/s' if written else ''
  print(f'colorize: {len(written)} of {len(paths)} images written to {out_dir} in '
        f'{seconds:.1f} s{rate}; manifest {manifest.path}', flush=True)
  if interrupted:
    left = len(paths) - len(written) - (len(failed) - len(problems))
    print(f'colorize: stopped early, {left} photos not done; the same command with '
          '--skip-existing goes on from here', file=sys.stderr, flush=True)
  if failed:
    print(f'colorize: {len(failed)} failed:', file=sys.stderr)
    for item, reason in failed:
      print(f'  {item}: {reason}', file=sys.stderr)
  return Outcome(written, failed, skipped, interrupted, manifest.path)
