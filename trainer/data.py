"""Trainer input pipelines over Transform's TFRecords, one per stage."""
from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import tensorflow as tf

from trainer import features, hints, names, preprocessing
from trainer.config import NetConfig
from trainer.names import FULL, FUSION, INSTANCE


def _records(file_patterns: Sequence[str]) -> tf.data.Dataset:
  files = [f for pattern in file_patterns for f in tf.io.gfile.glob(pattern)]
  if not files:
    raise FileNotFoundError(f'no transformed examples match {list(file_patterns)}')
  return tf.data.TFRecordDataset(sorted(files), compression_type='GZIP',
                                 num_parallel_reads=tf.data.AUTOTUNE)


def count_examples(file_patterns: Sequence[str], feature_spec: Dict) -> Tuple[int, int, int]:
  """(images, images with at least one box, boxes), reading only the box masks."""
  spec = {features.BOX_MASK: feature_spec[features.BOX_MASK]}
  images = with_boxes = boxes = 0
  for batch in _records(file_patterns).batch(256).map(lambda r: tf.io.parse_example(r, spec)):
    per_image = tf.reduce_sum(batch[features.BOX_MASK], axis=1).numpy()
    images += len(per_image)
    with_boxes += int((per_image > 0).sum())
    boxes += int(per_image.sum())
  return images, with_boxes, boxes


def stage_size(counts: Tuple[int, int, int], stage: str) -> int:
  """How many training items a stage sees per pass: images, crops, or images with boxes."""
  images, with_boxes, boxes = counts
  return {FULL: images, INSTANCE: boxes, FUSION: with_boxes}[stage]


def steps_for(count: int, batch_size: int) -> int:
  return max(1, math.ceil(count / batch_size))


def mirror(inputs, target):
  """One (inputs, target) item of any stage, mirrored left-right: every image along its width
  (axis -2 of [S,S,C] and [K,S,S,1]) and, for the fusion stage, the real boxes' x coordinates."""
  target = tf.reverse(target, [-2])
  if not isinstance(inputs, dict):
    return tf.reverse(inputs, [-2]), target
  ymin, xmin, ymax, xmax = tf.unstack(inputs[features.BOXES], axis=-1)
  mirrored_boxes = tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)
  real = inputs[features.BOX_MASK][..., None] > 0
  return {**inputs,
          features.GRAY: tf.reverse(inputs[features.GRAY], [-2]),
          features.INSTANCE_GRAY: tf.reverse(inputs[features.INSTANCE_GRAY], [-2]),
          features.BOXES: tf.where(real, mirrored_boxes, inputs[features.BOXES])}, target


def _random_mirror(inputs, target):
  """`mirror` for half of the items."""
  flip = tf.random.uniform([]) < 0.5
  return tf.nest.map_structure(lambda mirrored, kept: tf.where(flip, mirrored, kept),
                               mirror(inputs, target), (inputs, target))


def gray_input(inputs) -> tf.Tensor:
  """The gray image of a stage's inputs: the inputs themselves (full and instance stages) or their
  GRAY feature (fusion stage, nets with hints)."""
  return inputs[features.GRAY] if isinstance(inputs, dict) else inputs


def with_hints(inputs, target, simulated: bool):
  """Adds the hints input of nets with config.hints: simulated from the item's truth (training,
  trainer/hints.py), or none (evaluation: the automatic colour that serving without hints gives)."""
  gray = gray_input(inputs)
  hint_map = hints.simulate(target) if simulated else hints.zeros_like_gray(gray)
  if isinstance(inputs, dict):
    return {**inputs, features.HINTS: hint_map}, target
  return {features.GRAY: inputs, features.HINTS: hint_map}, target


# Random crops stretch each side by up to this factor against the other (log-uniform).
CROP_ASPECT_JITTER = 1.2


def random_crop_box(min_scale: float) -> tf.Tensor:
  """A random normalised box [ymin, xmin, ymax, xmax] inside the unit square: each side a random
  fraction in [min_scale, 1], stretched by up to CROP_ASPECT_JITTER against the other."""
  scale = tf.random.uniform([], min_scale, 1.0)
  log_aspect = tf.math.log(CROP_ASPECT_JITTER)
  aspect = tf.exp(tf.random.uniform([], -log_aspect, log_aspect))
  height, width = tf.minimum(scale * aspect, 1.0), tf.minimum(scale / aspect, 1.0)
  top, left = tf.random.uniform([]) * (1.0 - height), tf.random.uniform([]) * (1.0 - width)
  return tf.stack([top, left, top + height, left + width])


def crop_view(view: tf.Tensor, box: tf.Tensor, net: NetConfig):
  """The `box` region of Transform's stored view (sRGB PNG, V x V), resized to S as serving
  resizes a photo -> (gray [S,S,1], target [S,S,C])."""
  rgb = tf.image.convert_image_dtype(tf.io.decode_png(view, channels=3), tf.float32)
  return features.split_rgb(preprocessing.crop(rgb, box, net.image_size), net.color_space)


def crop_pair(gray: tf.Tensor, target: tf.Tensor, box: tf.Tensor):
  """The `box` window of an [S,S,1] gray / [S,S,C] target pair, resized back to S x S (bilinear;
  the whole square [0, 0, 1, 1] gives the pair unchanged)."""
  both = tf.concat([gray, target], axis=-1)[None]
  crop = tf.image.crop_and_resize(both, box[None], [0], tf.shape(gray)[:2])[0]
  return crop[..., :1], crop[..., 1:]


def random_view_crop(view: tf.Tensor, min_scale: float, net: NetConfig):
  """`crop_view` at a `random_crop_box`: a new view of the photo each time. On 157 photos the net
  otherwise learns each training frame by heart within a few epochs."""
  return crop_view(view, random_crop_box(min_scale), net)


def make_dataset(file_patterns: Sequence[str], feature_spec: Dict, stage: str, net: NetConfig,
                 batch_size: int, training: bool, seed: int = 0,
                 shard: Tuple[int, int] = (1, 0), flip_augmentation: bool = False,
                 min_crop_scale: float = 1.0) -> tf.data.Dataset:
  """(inputs, target) batches for `stage`.

  full: gray -> target of whole frames. instance: each real box crop (padding slots dropped) ->
  its target. fusion: {gray, instance_gray, boxes, box_mask} -> target, images with boxes only
  (without boxes the fused net is the full net and the fusion weights get no gradient).
  `shard` (shards, index): this worker's share of the records, for multi-worker training.
  Training only: `flip_augmentation` mirrors a random half of the items left-right;
  `min_crop_scale` < 1 replaces each full-stage frame by a `random_view_crop` of the photo, which
  needs Transform's `view` (written with the same min_crop_scale), and each instance crop by a
  random window of itself (`crop_pair`, upsampled by at most 1 / min_crop_scale: Transform cuts
  instance crops from the full-resolution photo, and a view per box would cost K views). The
  fusion stage gets no crops: its instance crops and boxes would no longer match the frame.
  With net.hints every stage's inputs become a dict holding `hints` too (`with_hints`).
  """
  if stage not in names.STAGES:
    raise ValueError(f'stage must be one of {names.STAGES}, not {stage!r}')
  k = net.max_boxes
  records = _records(file_patterns)
  shards, index = shard
  if shards > 1:
    records = records.shard(shards, index)
  if training:
    records = records.shuffle(1024, seed=seed, reshuffle_each_iteration=True)
  parsed = records.map(lambda r: tf.io.parse_single_example(r, feature_spec),
                       num_parallel_calls=tf.data.AUTOTUNE)

  if stage == FULL and training and min_crop_scale < 1.0:
    if features.VIEW not in feature_spec:
      raise ValueError(f'min_crop_scale={min_crop_scale} needs the {features.VIEW!r} feature, '
                       'which Transform writes when it runs with the same min_crop_scale')
    items = parsed.map(lambda f: random_view_crop(f[features.VIEW], min_crop_scale, net),
                       num_parallel_calls=tf.data.AUTOTUNE)
  elif stage == FULL:
    def to_pair(f):
      full = features.decode_full(f, net)
      return full[features.GRAY], full[features.TARGET]
    items = parsed.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)
  elif stage == INSTANCE:
    def to_crops(f):
      real = tf.boolean_mask(tf.reshape(f[features.INSTANCES], [k]),
                             tf.reshape(f[features.BOX_MASK], [k]) > 0)
      crops = features.decode_instances(real, net)
      return tf.data.Dataset.from_tensor_slices(
          (crops[features.INSTANCE_GRAY], crops[features.INSTANCE_TARGET]))
    items = parsed.interleave(to_crops, num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=not training)
    if training:
      items = items.shuffle(256, seed=seed)
    if training and min_crop_scale < 1.0:
      items = items.map(lambda gray, target: crop_pair(gray, target,
                                                       random_crop_box(min_crop_scale)),
                        num_parallel_calls=tf.data.AUTOTUNE)
  else:
    def to_fusion(f):
      decoded = features.decode_example(f, net)
      return ({k: decoded[k] for k in (features.GRAY, features.INSTANCE_GRAY, features.BOXES,
                                        features.BOX_MASK)}, decoded[features.TARGET])
    items = parsed.filter(lambda f: tf.reduce_sum(f[features.BOX_MASK]) > 0).map(
        to_fusion, num_parallel_calls=tf.data.AUTOTUNE)
  if training and flip_augmentation:
    items = items.map(_random_mirror, num_parallel_calls=tf.data.AUTOTUNE)
  if net.hints:  # after every change of view, so the hints match the pixels
    items = items.map(lambda inputs, target: with_hints(inputs, target, simulated=training),
                      num_parallel_calls=tf.data.AUTOTUNE)
  batches = items.batch(batch_size)
  if training:
    batches = batches.repeat()
  return batches.prefetch(tf.data.AUTOTUNE)
