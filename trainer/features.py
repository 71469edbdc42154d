"""Feature names and the transformed-feature codec shared by Transform, Trainer and serving.

Transform writes each S x S image (the full frame and every instance crop) as one lossless 3-channel
PNG: Lab8 (see color.py) for the Lab colour space, sRGB for the RGB one. `decode_example` turns a
transformed example back into the float tensors the nets use:

  gray [S,S,1]  normalised L          target [S,S,C]  ab/110 (C=2) or RGB in [-1,1] (C=3)
  instance_gray [K,S,S,1]             instance_target [K,S,S,C]
  boxes [K,4] normalised (ymin, xmin, ymax, xmax), largest first    box_mask [K] 1 = real box

With `min_crop_scale` < 1 Transform also writes `view`: the photo at V x V (V = `view_size`, sRGB
PNG), from which stage 1 cuts its random training crops (trainer/data.py) without upsampling any.
"""
from __future__ import annotations

import math
from typing import Dict

import tensorflow as tf

from trainer import color, names
from trainer.config import ImageLayout, TransformOptions

# Raw example (TF Object Detection API names, written by VocExampleGen).
RAW_IMAGE = 'image/encoded'
RAW_SOURCE_ID = 'image/source_id'
RAW_BOX_KEYS = ('image/object/bbox/ymin', 'image/object/bbox/xmin', 'image/object/bbox/ymax',
                'image/object/bbox/xmax')
RAW_DIFFICULT = 'image/object/difficult'

# Transformed example.
IMAGE = 'image'
VIEW = 'view'
INSTANCES = 'instances'
BOXES = 'boxes'
BOX_MASK = 'box_mask'
SOURCE_ID = 'source_id'

# Decoded tensors.
GRAY = 'gray'
TARGET = 'target'
INSTANCE_GRAY = 'instance_gray'
INSTANCE_TARGET = 'instance_target'
HINTS = 'hints'  # [S,S,3] colour hints of nets with config.hints (trainer/hints.py)


def view_size(image_size: int, min_crop_scale: float) -> int:
  """Side V of the stored training view: a crop of `min_crop_scale` of it still has S pixels, so
  no crop is upsampled. V == S (no view stored) when crops are off (scale 1)."""
  return max(image_size, math.ceil(image_size / min_crop_scale - 1e-9))


def has_view(options: TransformOptions) -> bool:
  return view_size(options.image_size, options.min_crop_scale) > options.image_size


def transformed_feature_spec(options: TransformOptions) -> Dict[str, tf.io.FixedLenFeature]:
  """What tf.Transform infers for preprocessing_fn's outputs (the e2e test checks it is equal)."""
  k = options.max_boxes
  return {
      IMAGE: tf.io.FixedLenFeature([], tf.string),
      **({VIEW: tf.io.FixedLenFeature([], tf.string)} if has_view(options) else {}),
      INSTANCES: tf.io.FixedLenFeature([k], tf.string),
      BOXES: tf.io.FixedLenFeature([k, 4], tf.float32),
      BOX_MASK: tf.io.FixedLenFeature([k], tf.float32),
      SOURCE_ID: tf.io.FixedLenFeature([], tf.string),
  }


def target_channels(color_space: str) -> int:
  if color_space not in names.COLOR_SPACES:
    raise ValueError(f'color_space must be one of {names.COLOR_SPACES}, not {color_space!r}')
  return 2 if color_space == names.LAB else 3


def encode_pixels(rgb: tf.Tensor, color_space: str) -> tf.Tensor:
  """sRGB in [0, 1] -> the uint8 pixels stored for `color_space` (Lab8 or sRGB8)."""
  target_channels(color_space)
  return (color.lab_to_lab8(color.rgb_to_lab(rgb)) if color_space == names.LAB
          else color.to_uint8(rgb))


def split_rgb(rgb: tf.Tensor, color_space: str):
  """sRGB in [0, 1] [..., 3] -> (normalised gray [..., 1], normalised target [..., C])."""
  target_channels(color_space)
  if color_space == names.LAB:
    lab = color.rgb_to_lab(rgb)
    return color.normalize_l(lab[..., :1]), color.normalize_ab(lab[..., 1:])
  return color.normalize_l(color.lightness(rgb)), color.normalize_rgb(rgb)


def split_pixels(pixels: tf.Tensor, color_space: str):
  """Stored uint8 pixels [..., 3] -> (normalised gray [..., 1], normalised target [..., C])."""
  if color_space == names.LAB:
    lab = color.lab8_to_lab(pixels)
    return color.normalize_l(lab[..., :1]), color.normalize_ab(lab[..., 1:])
  return split_rgb(tf.cast(pixels, tf.float32) / 255.0, color_space)


def decode_pngs(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
  """[N] PNG strings -> [N,S,S,3] uint8."""
  return tf.map_fn(lambda e: tf.ensure_shape(tf.io.decode_png(e, channels=3),
                                             [image_size, image_size, 3]),
                   encoded, fn_output_signature=tf.TensorSpec([image_size, image_size, 3],
                                                              tf.uint8))


def decode_full(features: Dict[str, tf.Tensor], layout: ImageLayout) -> Dict[str, tf.Tensor]:
  """The full frame of one transformed example: {gray [S,S,1], target [S,S,C]}."""
  pixels = decode_pngs(tf.reshape(features[IMAGE], [1]), layout.image_size)[0]
  gray, target = split_pixels(pixels, layout.color_space)
  return {GRAY: gray, TARGET: target}


def decode_instances(encoded: tf.Tensor, layout: ImageLayout) -> Dict[str, tf.Tensor]:
  """[N] instance PNGs -> {instance_gray [N,S,S,1], instance_target [N,S,S,C]}."""
  gray, target = split_pixels(decode_pngs(encoded, layout.image_size), layout.color_space)
  return {INSTANCE_GRAY: gray, INSTANCE_TARGET: target}


def decode_example(features: Dict[str, tf.Tensor], layout: ImageLayout) -> Dict[str, tf.Tensor]:
  """One transformed example (unbatched) -> the float tensors listed in the module docstring."""
  k = layout.max_boxes
  return {
      **decode_full(features, layout),
      **decode_instances(tf.reshape(features[INSTANCES], [k]), layout),
      BOXES: tf.reshape(features[BOXES], [k, 4]),
      BOX_MASK: tf.reshape(tf.cast(features[BOX_MASK], tf.float32), [k]),
  }


def decode_batch(features: Dict[str, tf.Tensor], layout: ImageLayout) -> Dict[str, tf.Tensor]:
  """`decode_example` over a batch (for signatures that receive batched transformed features)."""
  s, k = layout.image_size, layout.max_boxes
  channels = target_channels(layout.color_space)
  spec = {
      GRAY: tf.TensorSpec([s, s, 1], tf.float32),
      TARGET: tf.TensorSpec([s, s, channels], tf.float32),
      INSTANCE_GRAY: tf.TensorSpec([k, s, s, 1], tf.float32),
      INSTANCE_TARGET: tf.TensorSpec([k, s, s, channels], tf.float32),
      BOXES: tf.TensorSpec([k, 4], tf.float32),
      BOX_MASK: tf.TensorSpec([k], tf.float32),
  }
  elems = {name: features[name] for name in (IMAGE, INSTANCES, BOXES, BOX_MASK)}
  return tf.map_fn(lambda e: decode_example(e, layout), elems, fn_output_signature=spec)
