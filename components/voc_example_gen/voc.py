"""Reads one PASCAL VOC image + annotation into a tf.Example, validating everything on the way.

Pure Python (no Beam) so each rule is testable on its own. Every input either becomes an example or a
rejection with a reason; fixes that keep the image (a clipped box, a PNG re-encoded as JPEG) are
recorded as notes. Policy, in short:

* image: JPEG kept byte for byte; PNG and CMYK JPEG converted to RGB JPEG; grayscale images rejected
  (nothing to learn colour from); undecodable, truncated or over-large images rejected.
* annotation: parsed with defusedxml (entity expansion is refused); missing, malformed or unsafe XML
  rejects the image; a `filename` that leaves JPEGImages/ rejects it.
* boxes: clipped to the image; inverted, zero-area or non-numeric boxes dropped with a note.
* a detector (optional, `IngestOptions.detector`): boxes the photos of a plain folder, and the VOC
  images whose annotation is missing (instead of rejecting them); an annotation, where there is
  one, always wins.

Plain photo folders (no JPEGImages/): every image in the tree, its id the path relative to the
folder (`trips/2019/beach.jpg`), which is unique and stable, so the hash split keeps each photo in
its split as the folder grows.

Several sources at once (`plan_sources`): ids are namespaced by source (`<source>/<id>`), each
source keeps its own lists (or is hash-split), and a photo whose bytes another source already
holds is reported and kept once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import posixpath
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import defusedxml
import defusedxml.ElementTree as safe_xml
import numpy as np
import tensorflow as tf
from PIL import Image

from components.detectors import Detector
from trainer.config import IngestOptions, PipelineConfig

# The 20 PASCAL VOC classes; labels 1..20 as in the TF Object Detection API's pascal_label_map.
VOC_CLASSES: Tuple[str, ...] = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
    'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
    'tvmonitor')
UNKNOWN_LABEL = 0
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')

KEPT = 'kept'
REJECTED = 'rejected'

# Where an example's boxes came from (the report counts boxes by source).
FROM_ANNOTATION = 'annotation'
FROM_DETECTOR = 'detector'
BOX_SOURCES: Tuple[str, ...] = (FROM_ANNOTATION, FROM_DETECTOR)
# The input split pattern that means "a plain photo folder: every image in the tree".
PLAIN_PATTERN = '**'
# Input split patterns `sources:train` and `sources:val`: that split of several sources.
SOURCES_PATTERN = 'sources:'

# Rejection reasons (the report groups by these codes; `detail` says what exactly was wrong).
MISSING_IMAGE = 'missing_image'
MISSING_ANNOTATION = 'missing_annotation'
MALFORMED_ANNOTATION = 'malformed_annotation'
UNSAFE_ANNOTATION = 'unsafe_annotation'
FILENAME_OUTSIDE_FOLDER = 'filename_outside_folder'
CORRUPT_IMAGE = 'corrupt_image'
UNSUPPORTED_FORMAT = 'unsupported_format'
IMAGE_TOO_LARGE = 'image_too_large'
GRAYSCALE_IMAGE = 'grayscale_image'
# Listed in an earlier split too (train before val): kept there, rejected here, so no image is
# both trained on and evaluated on.
DUPLICATE_ACROSS_SPLITS = 'duplicate_across_splits'
# Another file in JPEGImages/ has the same stem (x.jpg and x.png): one id, one image.
DUPLICATE_IMAGE_ID = 'duplicate_image_id'
# The same bytes as another photo of the sources (see _drop_repeated_bytes): kept there only.
DUPLICATE_PHOTO = 'duplicate_photo'


# Validation limits when none are given (the defaults of PipelineConfig).
DEFAULT_OPTIONS: IngestOptions = PipelineConfig().ingest_options()


@dataclasses.dataclass
class IngestResult:
  """What became of one input image: `example` is set exactly when status is KEPT."""
  image_id: str
  split: str
  status: str
  reason: Optional[str] = None
  detail: Optional[str] = None
  notes: List[str] = dataclasses.field(default_factory=list)
  num_boxes: int = 0
  box_source: Optional[str] = None  # one of BOX_SOURCES for a kept image
  source: Optional[str] = None  # its source's name, when several sources are read together
  example: Optional[tf.train.Example] = None

  def record(self) -> Dict[str, Any]:
    """The JSON-serialisable report line (everything but the example)."""
    out = dataclasses.asdict(self)
    out.pop('example')
    return out


class _Reject(Exception):

  def __init__(self, reason: str, detail: str):
    super().__init__(detail)
    self.reason = reason
    self.detail = detail


@dataclasses.dataclass
class _Box:
  ymin: float
  xmin: float
  ymax: float
  xmax: float
  name: str
  difficult: int
  truncated: int


@dataclasses.dataclass(frozen=True)
class SplitIds:
  """The image ids of one split, and the inputs that name an id a second time."""
  ids: List[str]
  # (id, detail) of list lines or image files that repeat an id already in `ids`.
  duplicates: List[Tuple[str, str]]


def list_split_ids(input_base: str, split_pattern: str) -> SplitIds:
  """Image ids of one split: the lines of an ImageSets list file, or the stems of matching images.

  List files may carry a UTF-8 byte-order mark, CRLF line ends and trailing spaces (files edited
  on Windows). An id listed twice is one example; two images with one stem (x.jpg, x.png) are one
  id, and the second file is reported as a duplicate (the .jpg wins, as `_find_image` looks it
  up first).
  """
  path = posixpath.join(input_base, split_pattern)
  if split_pattern.endswith('.txt'):
    with tf.io.gfile.GFile(path, 'rb') as f:
      text = f.read().decode('utf-8-sig')  # utf-8-sig drops a leading BOM
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    return SplitIds(list(dict.fromkeys(ids)), [])
  files = sorted(tf.io.gfile.glob(path), key=lambda p: (_stem(p), _extension_rank(p)))
  chosen: Dict[str, str] = {}
  duplicates = []
  for file_path in files:
    stem = _stem(file_path)
    if stem in chosen:
      duplicates.append((stem, f'JPEGImages/{posixpath.basename(file_path)} has the same id as '
                               f'JPEGImages/{posixpath.basename(chosen[stem])}, which is used'))
    else:
      chosen[stem] = file_path
  return SplitIds(list(chosen), duplicates)


def is_voc_folder(input_base: str) -> bool:
  return tf.io.gfile.isdir(posixpath.join(input_base, 'JPEGImages'))


def is_image_file(name: str) -> bool:
  return not name.startswith('.') and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_photos(input_base: str) -> List[str]:
  """The ids of a plain photo folder: the relative (posix) path of every image in its tree,
  sorted; hidden files and folders (a leading dot) are skipped."""
  base = input_base.rstrip('/')
  photos = []
  for folder, subfolders, files in tf.io.gfile.walk(base):
    subfolders[:] = [d for d in subfolders if not d.rstrip('/').startswith('.')]
    relative = folder[len(base):].strip('/')
    photos.extend(posixpath.join(relative, f) if relative else f
                  for f in files if is_image_file(f))
  return sorted(photos)


def _stem(path: str) -> str:
  return os.path.splitext(posixpath.basename(path))[0]


def _extension_rank(path: str) -> int:
  """Where `_find_image` looks first: .jpg, .jpeg, .png, then their upper-case forms."""
  order = IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS)
  extension = os.path.splitext(path)[1]
  return order.index(extension) if extension in order else len(order)


def rejection(image_id: str, split: str, reason: str, detail: str,
              source: Optional[str] = None) -> 'IngestResult':
  """A rejection decided before the image is read (e.g. an id that another split holds)."""
  return IngestResult(image_id, split, REJECTED, reason, detail, source=source)


def _find_image(input_base: str, image_id: str) -> str:
  for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
    path = posixpath.join(input_base, 'JPEGImages', image_id + ext)
    if tf.io.gfile.exists(path):
      return path
  raise _Reject(MISSING_IMAGE, f'no JPEGImages/{image_id}.jpg (or .jpeg/.png)')


def _read_capped(path: str, limit: int, reason: str, what: str) -> bytes:
  size = tf.io.gfile.stat(path).length
  if size > limit:
    raise _Reject(reason, f'{what} is {size} bytes, above the {limit}-byte limit')
  with tf.io.gfile.GFile(path, 'rb') as f:
    return f.read()


def _text(node, tag: str, default: Optional[str] = None) -> Optional[str]:
  child = node.find(tag)
  return child.text.strip() if child is not None and child.text else default


def _parse_annotation(xml_bytes: bytes):
  try:
    return safe_xml.fromstring(xml_bytes, forbid_dtd=False)
  except defusedxml.DefusedXmlException as e:
    raise _Reject(UNSAFE_ANNOTATION, f'refused unsafe XML ({type(e).__name__}: {e})') from e
  except safe_xml.ParseError as e:
    raise _Reject(MALFORMED_ANNOTATION, f'XML does not parse: {e}') from e


def _check_filename(root, image_path: str, notes: List[str]) -> None:
  filename = _text(root, 'filename')
  if filename is None:
    return
  normalized = posixpath.normpath(filename.replace('\\', '/'))
  if (posixpath.isabs(normalized) or normalized.startswith('..') or '/' in normalized):
    raise _Reject(FILENAME_OUTSIDE_FOLDER,
                  f'annotation filename {filename!r} points outside JPEGImages/')
  if normalized != posixpath.basename(image_path):
    notes.append(f'annotation filename {filename!r} differs from {posixpath.basename(image_path)!r}; '
                 'used the image named by the id')


def _parse_boxes(root, width: int, height: int, notes: List[str]) -> List[_Box]:
  """Normalised boxes of every <object>; fixes or drops bad ones and says so in `notes`."""
  boxes = []
  for index, obj in enumerate(root.findall('object')):
    name = (_text(obj, 'name') or '').lower()
    bndbox = obj.find('bndbox')
    try:
      if bndbox is None:
        raise ValueError('no <bndbox>')
      xmin, ymin, xmax, ymax = (float(_text(bndbox, k)) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
      if not all(np.isfinite([xmin, ymin, xmax, ymax])):
        raise ValueError('non-finite coordinate')
    except (TypeError, ValueError) as e:
      notes.append(f'object {index} ({name}): dropped, bad <bndbox>: {e}')
      continue
    if xmin > xmax or ymin > ymax:
      notes.append(f'object {index} ({name}): dropped, inverted box '
                   f'({xmin:g},{ymin:g},{xmax:g},{ymax:g})')
      continue
    # The TF Object Detection API normalises VOC pixel coordinates by the image size as they are.
    raw = np.array([ymin / height, xmin / width, ymax / height, xmax / width])
    clipped = np.clip(raw, 0.0, 1.0)
    if not np.array_equal(raw, clipped):
      notes.append(f'object {index} ({name}): clipped to the image')
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
      notes.append(f'object {index} ({name}): dropped, zero area after clipping')
      continue
    if name not in VOC_CLASSES:
      notes.append(f'object {index}: unknown class {name!r}, label {UNKNOWN_LABEL}')
    boxes.append(_Box(*clipped.tolist(), name=name,
                      difficult=int(_text(obj, 'difficult', '0') == '1'),
                      truncated=int(_text(obj, 'truncated', '0') == '1')))
  return boxes


@dataclasses.dataclass
class _Loaded:
  """A validated image: the JPEG bytes to store, its size, and its decoded RGB pixels (for the
  detector: a photo is decoded once)."""
  jpeg: bytes
  width: int
  height: int
  rgb: Image.Image


def _load_image(image_bytes: bytes, options: IngestOptions, notes: List[str]) -> _Loaded:
  """Validates and, where needed, converts the image."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('error', Image.DecompressionBombWarning)
      image = Image.open(io.BytesIO(image_bytes))
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise _Reject(IMAGE_TOO_LARGE, str(e)) from e
  except Exception as e:  # PIL raises several types for undecodable input.
    raise _Reject(CORRUPT_IMAGE, f'not a readable image: {e}') from e
  width, height = image.size
  if image.format not in ('JPEG', 'PNG'):
    raise _Reject(UNSUPPORTED_FORMAT, f'{image.format} image; JPEG or PNG expected')
  if width * height > options.max_image_pixels:
    raise _Reject(IMAGE_TOO_LARGE, f'{width}x{height} image is above the '
                  f'{options.max_image_pixels}-pixel limit (the header is not decoded further)')
  try:
    image.load()  # full decode: truncated or corrupt data fails here, not in Transform
  except Exception as e:
    raise _Reject(CORRUPT_IMAGE, f'{image.format} data does not decode: {e}') from e
  rgb = image.convert('RGB')
  thumb = np.asarray(rgb.resize((64, 64)), dtype=np.int16)
  spread = int(np.max(thumb.max(axis=-1) - thumb.min(axis=-1)))
  if image.mode in ('1', 'L', 'LA', 'I', 'I;16', 'F') or spread <= options.grayscale_tolerance:
    raise _Reject(GRAYSCALE_IMAGE, f'{image.format} image (mode {image.mode}) has no colour')
  if image.format == 'JPEG' and image.mode == 'RGB':
    return _Loaded(image_bytes, width, height, rgb)
  buffer = io.BytesIO()
  rgb.save(buffer, format='JPEG', quality=options.jpeg_quality)
  notes.append(f'converted {image.format} {image.mode} to RGB JPEG (quality {options.jpeg_quality})')
  return _Loaded(buffer.getvalue(), width, height, rgb)


def _bytes_feature(values: Sequence[bytes]) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _float_feature(values: Sequence[float]) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def _int_feature(values: Sequence[int]) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _make_example(image_id: str, filename: str, jpeg: bytes, width: int, height: int,
                  boxes: List[_Box]) -> tf.train.Example:
  feature = {
      'image/encoded': _bytes_feature([jpeg]),
      'image/format': _bytes_feature([b'jpeg']),
      'image/filename': _bytes_feature([filename.encode('utf-8')]),
      'image/source_id': _bytes_feature([image_id.encode('utf-8')]),
      'image/height': _int_feature([height]),
      'image/width': _int_feature([width]),
      'image/object/bbox/ymin': _float_feature([b.ymin for b in boxes]),
      'image/object/bbox/xmin': _float_feature([b.xmin for b in boxes]),
      'image/object/bbox/ymax': _float_feature([b.ymax for b in boxes]),
      'image/object/bbox/xmax': _float_feature([b.xmax for b in boxes]),
      'image/object/class/text': _bytes_feature([b.name.encode('utf-8') for b in boxes]),
      'image/object/class/label': _int_feature(
          [VOC_CLASSES.index(b.name) + 1 if b.name in VOC_CLASSES else UNKNOWN_LABEL
           for b in boxes]),
      'image/object/difficult': _int_feature([b.difficult for b in boxes]),
      'image/object/truncated': _int_feature([b.truncated for b in boxes]),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature))


def _detected_boxes(detector: Detector, image: _Loaded) -> List[_Box]:
  """The detector's boxes on the decoded photo, class unknown (label 0)."""
  return [_Box(*map(float, box), name='', difficult=0, truncated=0)
          for box in detector.detect_image(image.rgb) if box[2] > box[0] and box[3] > box[1]]


def _kept(image_id: str, path: str, split: str, image: _Loaded, boxes: List[_Box],
          box_source: Optional[str], notes: List[str]) -> IngestResult:
  example = _make_example(image_id, posixpath.basename(path), image.jpeg, image.width,
                          image.height, boxes)
  return IngestResult(image_id, split, KEPT, notes=notes, num_boxes=len(boxes),
                      box_source=box_source, example=example)


def ingest_photo(input_base: str, relative_path: str, split: str,
                 options: IngestOptions = DEFAULT_OPTIONS,
                 detector: Optional[Detector] = None) -> IngestResult:
  """One photo of a plain folder (its id: `relative_path`) -> a kept example or a rejection;
  boxed by `detector` when there is one, else without boxes."""
  notes: List[str] = []
  try:
    normalized = posixpath.normpath(relative_path)
    if (not relative_path or normalized != relative_path or normalized.startswith('..') or
        posixpath.isabs(normalized)):
      raise _Reject(FILENAME_OUTSIDE_FOLDER, f'{relative_path!r} is not a path inside the folder')
    path = posixpath.join(input_base, relative_path)
    if not tf.io.gfile.exists(path):
      raise _Reject(MISSING_IMAGE, f'{relative_path} is gone')
    image = _load_image(
        _read_capped(path, options.max_file_bytes, IMAGE_TOO_LARGE, 'image file'), options, notes)
  except _Reject as rejection:
    return IngestResult(relative_path, split, REJECTED, rejection.reason, rejection.detail, notes)
  boxes = _detected_boxes(detector, image) if detector else []
  return _kept(relative_path, path, split, image, boxes, FROM_DETECTOR if detector else None,
               notes)


def ingest_image(input_base: str, image_id: str, split: str,
                 options: IngestOptions = DEFAULT_OPTIONS,
                 detector: Optional[Detector] = None) -> IngestResult:
  """Turns one VOC image id into a kept example or a rejection; never raises for bad data.
  Without its annotation the image is boxed by `detector` if there is one, else rejected."""
  notes: List[str] = []
  try:
    if not image_id or '/' in image_id or '\\' in image_id or image_id.startswith('.'):
      raise _Reject(FILENAME_OUTSIDE_FOLDER, f'image id {image_id!r} is not a plain file name')
    image_path = _find_image(input_base, image_id)
    xml_path = posixpath.join(input_base, 'Annotations', image_id + '.xml')
    if not tf.io.gfile.exists(xml_path):
      if detector is None:
        raise _Reject(MISSING_ANNOTATION, f'no Annotations/{image_id}.xml')
      image = _load_image(
          _read_capped(image_path, options.max_file_bytes, IMAGE_TOO_LARGE, 'image file'),
          options, notes)
      notes.append(f'no Annotations/{image_id}.xml: boxed by the detector')
      return _kept(image_id, image_path, split, image, _detected_boxes(detector, image),
                   FROM_DETECTOR, notes)
    root = _parse_annotation(_read_capped(xml_path, options.max_annotation_bytes,
                                          MALFORMED_ANNOTATION, 'annotation'))
    _check_filename(root, image_path, notes)
    image = _load_image(
        _read_capped(image_path, options.max_file_bytes, IMAGE_TOO_LARGE, 'image file'),
        options, notes)
    size = root.find('size')
    if size is not None and (_text(size, 'width'), _text(size, 'height')) != (str(image.width),
                                                                                str(image.height)):
      notes.append(f'<size> says {_text(size, "width")}x{_text(size, "height")}, image is '
                   f'{image.width}x{image.height}; boxes normalised by the real size')
    boxes = _parse_boxes(root, image.width, image.height, notes)
  except _Reject as rejection:
    return IngestResult(image_id, split, REJECTED, rejection.reason, rejection.detail, notes)
  return _kept(image_id, image_path, split, image, boxes, FROM_ANNOTATION, notes)


# --- several sources -------------------------------------------------------------------------------

LIST_DIR = 'ImageSets/Main'
SPLITS: Tuple[str, ...] = ('train', 'val')
# Hash split of the sources without lists: this many buckets of 10 go to train, the rest to val.
TRAIN_BUCKETS = 9


@dataclasses.dataclass(frozen=True)
class SourcePhoto:
  """One input photo: its source's name ('' when only one source is read: ids stay as they
  are), folder and kind, and its id inside the source (a VOC image id, or a plain folder's
  relative path)."""
  source: str
  root: str
  local_id: str
  plain: bool

  @property
  def image_id(self) -> str:
    return f'{self.source}/{self.local_id}' if self.source else self.local_id

  def path(self) -> Optional[str]:
    """The image file, or None for a VOC id without one (ingesting it says so)."""
    if self.plain:
      return posixpath.join(self.root, self.local_id)
    try:
      return _find_image(self.root, self.local_id)
    except _Reject:
      return None


@dataclasses.dataclass
class SourcePlan:
  """What each split reads from all sources, and the inputs rejected before reading."""
  photos: Dict[str, List[SourcePhoto]]
  rejected: Dict[str, List[IngestResult]]


def source_names(roots: Sequence[str]) -> List[str]:
  """Each source's name: its folder's name, `-2`, `-3`... when two folders share one."""
  names, seen = [], {}
  for root in roots:
    base = posixpath.basename(root.rstrip('/')) or 'source'
    seen[base] = seen.get(base, 0) + 1
    names.append(base if seen[base] == 1 else f'{base}-{seen[base]}')
  return names


def has_lists(root: str) -> bool:
  return all(tf.io.gfile.exists(posixpath.join(root, LIST_DIR, f'{s}.txt')) for s in SPLITS)


def hash_split(image_id: str) -> str:
  """'train' or 'val' from the id alone: stable as a folder grows, the same on every machine."""
  bucket = int(hashlib.sha256(image_id.encode('utf-8')).hexdigest(), 16) % 10
  return 'train' if bucket < TRAIN_BUCKETS else 'val'


def plan_sources(roots: Sequence[str], split_mode: str = 'auto') -> SourcePlan:
  """Every photo of every source, in its split: a VOC source with ImageSets lists by its lists
  (split_mode 'auto' or 'lists'), every other source by `hash_split` of its namespaced id; ids
  listed twice, two files with one id and photos with the same bytes as another one are
  rejected here, with the photo they repeat."""
  photos: Dict[str, List[SourcePhoto]] = {s: [] for s in SPLITS}
  rejected: Dict[str, List[IngestResult]] = {s: [] for s in SPLITS}
  for name, root in zip(source_names(roots), roots):
    plain = not is_voc_folder(root)
    lists = not plain and has_lists(root)
    if split_mode == 'lists' and not lists:
      raise ValueError(f'split_mode=lists: source {root} has no {LIST_DIR}/train.txt and val.txt')
    if lists and split_mode != 'hash':
      claimed: Dict[str, str] = {}
      for split in SPLITS:
        listed = list_split_ids(root, f'{LIST_DIR}/{split}.txt')
        for local_id in listed.ids:
          photo = SourcePhoto(name, root, local_id, plain)
          if local_id in claimed:
            rejected[split].append(rejection(photo.image_id, split, DUPLICATE_ACROSS_SPLITS,
                                             f'also listed in {claimed[local_id]}; kept there',
                                             name))
          else:
            claimed[local_id] = f'{name}/{LIST_DIR}/{split}.txt'
            photos[split].append(photo)
      continue
    if plain:
      listed = SplitIds(list_photos(root), [])
    else:
      listed = list_split_ids(root, 'JPEGImages/*')
    for local_id in listed.ids:
      photo = SourcePhoto(name, root, local_id, plain)
      photos[hash_split(photo.image_id)].append(photo)
    for local_id, detail in listed.duplicates:
      image_id = SourcePhoto(name, root, local_id, plain).image_id
      split = hash_split(image_id)
      rejected[split].append(rejection(image_id, split, DUPLICATE_IMAGE_ID, detail, name))
  _drop_repeated_bytes(photos, rejected)
  return SourcePlan(photos, rejected)


def _drop_repeated_bytes(photos: Dict[str, List[SourcePhoto]],
                         rejected: Dict[str, List[IngestResult]]) -> None:
  """Keeps the first of photos with equal bytes: a train photo before a val one, then sources in
  the order given. Only files of equal size are read and hashed."""
  ordered = [(split, photo, photo.path()) for split in SPLITS for photo in photos[split]]
  by_size: Dict[int, List[int]] = {}
  for index, (_, _, path) in enumerate(ordered):
    if path is not None:
      by_size.setdefault(tf.io.gfile.stat(path).length, []).append(index)
  first_with: Dict[str, SourcePhoto] = {}
  repeated = set()
  for indices in by_size.values():
    if len(indices) < 2:
      continue
    for index in indices:
      split, photo, path = ordered[index]
      with tf.io.gfile.GFile(path, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
      if digest in first_with:
        repeated.add(index)
        rejected[split].append(rejection(
            photo.image_id, split, DUPLICATE_PHOTO,
            f'the same bytes as {first_with[digest].image_id}; kept there only', photo.source))
      else:
        first_with[digest] = photo
  for split in SPLITS:
    photos[split] = [p for i, (s, p, _) in enumerate(ordered) if s == split and i not in repeated]
