"""export --format tflite: a pushed model as one TFLite file for phones and edge devices.

The file has a `full` signature and, for a fusion stage's model, one `fused` signature per slot
count n (K, and the powers of two below it: `fused_1`, `fused_2`, `fused_4` and `fused` for K = 8):

  full(gray [1,S,S,1]) -> {ab [1,S,S,2]}
  fused(gray [1,S,S,1], instance_gray [1,K,S,S,1], boxes [1,K,4], box_mask [1,K]) -> {ab [1,S,S,2]}
  fused_<n>(the same with n slots in place of K) -> {ab [1,S,S,2]}

A fused signature runs the instance net and the fusion on every one of its slots, so a client
calls the smallest one that holds its boxes (TFLiteColorizer does): two boxes cost two slots, not K.

  gray           the photo's CIE L resized to S x S (aspect not kept), normalised (L - 50) / 100
  instance_gray  the L of each box's crop resized to S x S, normalised the same way; zeros in the
                 slots without a box
  boxes          normalised (ymin, xmin, ymax, xmax) in the upright photo; zeros in empty slots
  box_mask       1 for a real box, 0 for an empty slot (at most K boxes: the K largest; real
                 boxes first)
  ab             the predicted a and b in Lab units at S x S: upsample it to the photo and put it
                 beside the photo's own L, as the serving signature does (trainer/serving.py)

The nets are rebuilt in float32 from the SavedModel's NetConfig record and variables (the serving
model may compute in bfloat16 or float16, which TFLite's kernels do not take), with the fusion
layers pasting by gathers (TFLite's builtin ops have no CropAndResize): builtin ops only,
no Flex delegate. A net trained with hints is exported in its automatic mode (zero hints; the
file takes none). `TFLiteColorizer` is the reference client (LiteRT's interpreter, XNNPACK): the
serving signature's own preprocessing in, PNG out; `check` compares its ab with the SavedModel's
on real photos.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import tempfile
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from ai_edge_litert import interpreter as litert

from tools.colorize import resolve_model_dir
from trainer import features, model, names, serving
from trainer.config import TFLITE_QUANTIZATIONS as QUANTIZATIONS
from trainer.config import NetConfig

FULL_SIGNATURE, FUSED_SIGNATURE = 'full', 'fused'


def fused_slot_counts(max_boxes: int) -> List[int]:
  """The slot counts of the fused signatures: the powers of two below K, and K."""
  counts = [1]
  while counts[-1] * 2 < max_boxes:
    counts.append(counts[-1] * 2)
  return sorted(set(counts) | {max_boxes})


def fused_signature(slots: int, max_boxes: int) -> str:
  """'fused' for K slots (the name files before the smaller signatures had), else 'fused_<n>'."""
  return FUSED_SIGNATURE if slots == max_boxes else f'{FUSED_SIGNATURE}_{slots}'


def smallest_slots(box_count: int, slot_counts: Sequence[int]) -> int:
  """The fewest slots (of sorted `slot_counts`) that hold `box_count` boxes; the most if none."""
  return next((n for n in slot_counts if n >= box_count), max(slot_counts))


def fused_inputs(inputs: Dict[str, np.ndarray], slots: int) -> Dict[str, np.ndarray]:
  """A fused signature's inputs from K-slot ones ([1,...] arrays) with the real boxes in the
  first slots: their first `slots` slots. A hint net's inputs hold its hint map too, which the
  file does not take."""
  return {k: inputs[k] if k == features.GRAY else inputs[k][:, :slots]
          for k in model.FusionNet.INPUTS}


def rebuild(model_dir: str) -> Tuple[NetConfig, model.ColorNet, Optional[model.FusionNet]]:
  """(float32 NetConfig, the full-image net, the fused net or None for a full or instance stage's
  model) with the SavedModel's weights; the fusion layers paste by gathers."""
  config, nets = serving.saved_nets(model_dir)
  if names.FUSION not in nets:
    return config, next(iter(nets.values())), None
  fusion = nets[names.FUSION]
  for layer in fusion.fusion_layers.values():
    layer.paste, layer.one_image = model.paste_into_frame_by_gather, True
  return config, fusion.full, fusion


def tensor_functions(config: NetConfig, full: model.ColorNet, fused: Optional[model.FusionNet]
                     ) -> Tuple[tf.Module, Dict[str, tf.types.experimental.ConcreteFunction]]:
  """The nets as tensor-in, tensor-out functions of fixed shape (the module docstring), and a
  module that tracks their weights for saving."""
  s, k = config.image_size, config.max_boxes
  holder = tf.Module()
  # The variables, not the Keras models: saving would trace every layer call again (minutes, for
  # nothing a TFLite file keeps).
  models = [full.model] + ([fused.model] if fused is not None else [])
  holder.weights = list({id(v): v for m in models for v in m.variables}.values())

  def ab(output: tf.Tensor) -> Dict[str, tf.Tensor]:
    return {'ab': serving.predicted_ab(model.to_color(output, config), config.color_space)}

  # The fused signature mixes instance features in after each block, where the converter then
  # cannot fold a block's batch norm into the next block's convolutions; a no-op at the same
  # points keeps it from folding them here too, so the two signatures share every weight (one
  # copy in the file, not two folded differently).
  barrier = (lambda point, x: tf.minimum(x, np.finfo(np.float32).max)) if fused else None

  # A net trained with hints colours on its own here: no hint map leaves the hint branch out,
  # which is exactly its zero-hint output (the file has no hint input).
  gray = tf.TensorSpec([1, s, s, 1], tf.float32, name=features.GRAY)
  functions = {FULL_SIGNATURE: tf.function(
      lambda gray: ab(full(gray, fuse=barrier)[0]),
      autograph=False).get_concrete_function(gray)}
  if fused is not None:
    def fused_ab(gray, instance_gray, boxes, box_mask):
      return ab(fused.forward({features.GRAY: gray, features.INSTANCE_GRAY: instance_gray,
                               features.BOXES: boxes, features.BOX_MASK: box_mask}))

    # The one-image mix reduces over however many slots it is given, and a padding slot adds
    # exactly 0: n slots give the K-slot output of the same n boxes.
    for n in fused_slot_counts(k):
      functions[fused_signature(n, k)] = tf.function(
          fused_ab, autograph=False).get_concrete_function(
              gray, tf.TensorSpec([1, n, s, s, 1], tf.float32, name=features.INSTANCE_GRAY),
              tf.TensorSpec([1, n, 4], tf.float32, name=features.BOXES),
              tf.TensorSpec([1, n], tf.float32, name=features.BOX_MASK))
  return holder, functions


def _check_quantize(quantize: str) -> None:
  # Before the nets are rebuilt and traced (a minute at full width).
  if quantize not in QUANTIZATIONS:
    raise ValueError(f'quantize must be one of {QUANTIZATIONS}, not {quantize!r}')


def _flatbuffer(module: tf.Module, signatures: Dict[str, Any], quantize: str) -> bytes:
  with tempfile.TemporaryDirectory() as tmp:
    # Through a SavedModel: the converter's way to keep several named signatures in one file.
    tf.saved_model.save(module, tmp, signatures=signatures)
    converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(signatures))
    if quantize != 'none':
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == 'float16':
      converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def convert(model_dir: str, quantize: str = 'none') -> Tuple[bytes, NetConfig]:
  """The pushed model (or Pusher destination) -> (TFLite flatbuffer, its NetConfig)."""
  _check_quantize(quantize)
  config, full, fused = rebuild(resolve_model_dir(model_dir))
  return _flatbuffer(*tensor_functions(config, full, fused), quantize), config


def _item_requests(item: Dict[str, np.ndarray], max_boxes: int, slot_counts: Sequence[int]
                   ) -> List[Tuple[str, Dict[str, np.ndarray]]]:
  """A fusion item ([1,...] arrays) as the requests a client sends for it: `full` alone, and
  with boxes the smallest fused signature that holds them, given the item's first slots (where
  serving and Transform put the real boxes)."""
  requests = [(FULL_SIGNATURE, {features.GRAY: item[features.GRAY]})]
  count = int(item[features.BOX_MASK].sum())
  if count and slot_counts:
    slots = smallest_slots(count, slot_counts)
    requests.append((fused_signature(slots, max_boxes), fused_inputs(item, slots)))
  return requests


def export_into(model_dir: str, quantize: str, items: Iterable[Dict[str, Any]],
                check_items: int = 8) -> Dict[str, Any]:
  """Writes a serving model's TFLite file into the model (names.TFLITE_FILE, then its record,
  names.TFLITE_RECORD; what the fusion Trainer does with `tflite_export`) and
  returns the record. Before writing, each signature a client would call is run on up to
  `check_items` of `items` (the fusion stage's inputs, batches of one: real photos) under LiteRT
  and against the same function in TensorFlow: the converter's ab error on real inputs."""
  _check_quantize(quantize)
  start = time.perf_counter()
  config, full, fused = rebuild(model_dir)
  module, signatures = tensor_functions(config, full, fused)
  flatbuffer = _flatbuffer(module, signatures, quantize)
  interpreter = litert.Interpreter(model_content=flatbuffer, num_threads=os.cpu_count())
  slot_counts = fused_slot_counts(config.max_boxes) if fused is not None else []
  differences: List[np.ndarray] = []
  magnitudes: List[float] = []
  checked = 0
  for item in itertools.islice(items, check_items):
    item = {k: np.asarray(v, np.float32) for k, v in item.items()}
    checked += 1
    for name, inputs in _item_requests(item, config.max_boxes, slot_counts):
      ours = interpreter.get_signature_runner(name)(**inputs)['ab']
      theirs = signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})['ab'].numpy()
      differences.append(np.abs(ours - theirs))
      magnitudes.append(float(np.abs(theirs).mean()))
  if not checked:
    raise ValueError(f'tflite_export: no items to check the TFLite file of {model_dir} on')
  result = Check.of(checked, differences, magnitudes)
  record = {'file': names.TFLITE_FILE, 'quantization': quantize, 'bytes': len(flatbuffer),
            'sha256': hashlib.sha256(flatbuffer).hexdigest(),
            'signatures': list(signatures), 'image_size': config.image_size,
            'max_boxes': config.max_boxes, 'checked_items': result.photos,
            'checked_requests': result.requests, 'max_ab_difference': result.max_ab_difference,
            'mean_ab_difference': result.mean_ab_difference, 'mean_ab': result.mean_ab,
            'seconds': round(time.perf_counter() - start, 1)}
  for name, content in ((names.TFLITE_FILE, flatbuffer),
                        (names.TFLITE_RECORD, json.dumps(record, indent=1))):
    path = os.path.join(model_dir, name)
    # Written under another name and renamed: no half-written file under the final name.
    with tf.io.gfile.GFile(path + '.partial', 'wb' if isinstance(content, bytes) else 'w') as f:
      f.write(content)
    tf.io.gfile.rename(path + '.partial', path, overwrite=True)
  return record


def describe(record: Dict[str, Any], model_dir: str) -> str:
  """One line on the TFLite file export_into wrote into `model_dir`, from its record."""
  return (f"{os.path.join(model_dir, record['file'])}: {record['bytes'] / 1e6:.1f} MB, "
          f"quantization {record['quantization']}, signatures {', '.join(record['signatures'])} "
          f"at {record['image_size']}x{record['image_size']}; ab against the nets on "
          f"{record['checked_items']} val items ({record['checked_requests']} requests): mean "
          f"|difference| {record['mean_ab_difference']:.3f}, max "
          f"{record['max_ab_difference']:.3f} (mean |ab| {record['mean_ab']:.2f})")


def saved_model_bytes(model_dir: str) -> int:
  """What a SavedModel takes on disk (graph, variables, assets)."""
  model_dir = resolve_model_dir(model_dir)
  return sum(tf.io.gfile.stat(os.path.join(folder, name)).length
             for folder, _, files in tf.io.gfile.walk(model_dir) for name in files)


class TFLiteColorizer:
  """A TFLite export run like the serving signature: image bytes and boxes in, ab or PNG out (the
  serving signature's own preprocessing and recombination, in TensorFlow)."""

  def __init__(self, path: str, config: NetConfig, threads: Optional[int] = None):
    self.config = config
    # LiteRT's interpreter: XNNPACK, as on phones (TensorFlow's own runs 2.5x slower on x86).
    self.interpreter = litert.Interpreter(model_path=path, num_threads=threads or os.cpu_count())
    self.runners = {key: self.interpreter.get_signature_runner(key)
                    for key in self.interpreter.get_signature_list()}
    # slot count -> fused signature, smallest first.
    self.fused = {n: fused_signature(n, config.max_boxes)
                   for n in fused_slot_counts(config.max_boxes)
                   if fused_signature(n, config.max_boxes) in self.runners}
    # The serving signature's own pre- and post-processing, as graphs (as fast as in serving).
    self._prepare = tf.function(
        lambda image, boxes: serving.prepare(image, boxes, tf.constant(0), config),
        input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([None, 4], tf.float32)])
    self._recombine = tf.function(
        lambda image, ab: serving.recombine(image, ab, tf.constant(0)),
        input_signature=[tf.TensorSpec([], tf.string),
                         tf.TensorSpec([config.image_size, config.image_size, 2], tf.float32)])

  def signature(self, box_count: int) -> Tuple[str, int]:
    """(signature, slots) a request with `box_count` real boxes runs: `full` (0 slots) without
    boxes or without a fused signature, else the fused one with the fewest slots that hold them."""
    if box_count and self.fused:
      slots = smallest_slots(box_count, list(self.fused))
      return self.fused[slots], slots
    return FULL_SIGNATURE, 0

  def ab(self, image_bytes: bytes, boxes: np.ndarray) -> np.ndarray:
    """[S,S,2] ab; the full signature without boxes, the smallest fused one that holds them."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    prepared = self._prepare(tf.constant(image_bytes), tf.constant(boxes))
    inputs = {k: v.numpy()[None] for k, v in prepared.items()}
    name, slots = self.signature(int(inputs[features.BOX_MASK].sum()))
    if not slots:
      return self.runners[name](gray=inputs[features.GRAY])['ab'][0]
    return self.runners[name](**fused_inputs(inputs, slots))['ab'][0]

  def colorize(self, image_bytes: bytes, boxes: np.ndarray) -> bytes:
    """The colorized PNG at the photo's resolution, as serving_default writes it."""
    return self._recombine(tf.constant(image_bytes), tf.constant(self.ab(image_bytes, boxes))
                           ).numpy()


@dataclasses.dataclass
class Check:
  """TFLite against the SavedModel on the same photos and boxes (ab in Lab units)."""
  photos: int
  requests: int
  max_ab_difference: float
  mean_ab_difference: float
  mean_ab: float  # the SavedModel's mean |ab|: the scale of the differences

  @classmethod
  def of(cls, photos: int, differences: Sequence[np.ndarray], magnitudes: Sequence[float]
         ) -> 'Check':
    """From each request's |ab difference| array and the reference's mean |ab|."""
    flat = np.concatenate([d.ravel() for d in differences])
    return cls(photos, len(differences), float(flat.max()), float(flat.mean()),
               float(np.mean(magnitudes)))

  def __str__(self) -> str:
    return (f'ab against the SavedModel on {self.photos} photos ({self.requests} requests, with '
            f'and without boxes): mean |difference| {self.mean_ab_difference:.3f}, max '
            f'{self.max_ab_difference:.3f} (Lab units; the mean |ab| is {self.mean_ab:.2f})')


def check(tflite: TFLiteColorizer, model_dir: str,
          photos: Sequence[Tuple[bytes, np.ndarray]]) -> Check:
  """Each photo without boxes and with its boxes, through both; the ab differences."""
  signature = tf.saved_model.load(resolve_model_dir(model_dir)).signatures['serving_default']
  differences: List[np.ndarray] = []
  magnitudes: List[float] = []
  for image_bytes, boxes in photos:
    for request_boxes in [np.zeros([0, 4], np.float32)] + ([boxes] if len(boxes) else []):
      ours = tflite.ab(image_bytes, request_boxes)
      theirs = signature(images=tf.constant([image_bytes]),
                         boxes=tf.constant(np.asarray(request_boxes, np.float32)[None])
                         )['ab'].numpy()[0]
      differences.append(np.abs(ours - theirs))
      magnitudes.append(float(np.abs(theirs).mean()))
  return Check.of(len(photos), differences, magnitudes)


def median_seconds(fn, repeats: int = 5) -> float:
  fn()  # warm-up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))
