"""Transform's preprocessing_fn: raw VOC example -> fixed-size full image + up to K instance crops.

Importable and testable without a pipeline: `encode_example` does one image eagerly; the
preprocessing_fn maps it over a batch. Settings arrive through Transform's `custom_config`
(`PipelineConfig.transform_options().to_dict()`, read back strictly).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import tensorflow as tf

from trainer import color, features
from trainer.config import TransformOptions


def select_boxes(boxes: tf.Tensor, keep: tf.Tensor, image_height: tf.Tensor,
                 image_width: tf.Tensor, max_boxes: int) -> tf.Tensor:
  """The `keep` boxes of [n,4], at most `max_boxes`, largest area (in pixels) first."""
  boxes = tf.boolean_mask(tf.reshape(boxes, [-1, 4]), tf.reshape(keep, [-1]))
  area = ((boxes[:, 2] - boxes[:, 0]) * tf.cast(image_height, tf.float32) *
          (boxes[:, 3] - boxes[:, 1]) * tf.cast(image_width, tf.float32))
  order = tf.argsort(area, direction='DESCENDING', stable=True)
  return tf.gather(boxes, order[:max_boxes])


def pixel_window(box: tf.Tensor, height: tf.Tensor, width: tf.Tensor):
  """Normalised box -> integer (top, left, rows, cols), at least one pixel, inside the image."""
  size = tf.cast(tf.stack([height, width, height, width]), tf.float32)
  ymin, xmin, ymax, xmax = tf.unstack(box * size)
  top = tf.clip_by_value(tf.cast(tf.floor(ymin), tf.int32), 0, height - 1)
  left = tf.clip_by_value(tf.cast(tf.floor(xmin), tf.int32), 0, width - 1)
  bottom = tf.clip_by_value(tf.cast(tf.math.ceil(ymax), tf.int32), top + 1, height)
  right = tf.clip_by_value(tf.cast(tf.math.ceil(xmax), tf.int32), left + 1, width)
  return top, left, bottom - top, right - left


def resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """Bilinear resize to S x S, antialiased when shrinking; like the paper, aspect is not kept."""
  return tf.clip_by_value(
      tf.image.resize(image, [image_size, image_size], method='bilinear', antialias=True), 0.0, 1.0)


def crop(rgb: tf.Tensor, box: tf.Tensor, image_size: int) -> tf.Tensor:
  """The box region of a full-resolution image [H,W,3], resized to S x S."""
  top, left, rows, cols = pixel_window(box, tf.shape(rgb)[0], tf.shape(rgb)[1])
  return resize(rgb[top:top + rows, left:left + cols], image_size)


# zlib level 1: measured on the sample at 256^2, 5x faster than the default level for 19% more bytes.
PNG_COMPRESSION = 1


def _encode_png(pixels: tf.Tensor) -> tf.Tensor:
  return tf.io.encode_png(pixels, compression=PNG_COMPRESSION)


def encode_example(jpeg: tf.Tensor, boxes: tf.Tensor, difficult: tf.Tensor,
                   options: TransformOptions) -> Dict[str, tf.Tensor]:
  """One raw image -> transformed features (PNG strings, boxes [K,4], mask [K])."""
  s, k = options.image_size, options.max_boxes
  # TF's default IDCT is the fast, inexact one; the accurate one matches PIL and libjpeg's default.
  pixels = tf.io.decode_jpeg(jpeg, channels=3, dct_method='INTEGER_ACCURATE')
  rgb = tf.image.convert_image_dtype(pixels, tf.float32)
  height, width = tf.shape(rgb)[0], tf.shape(rgb)[1]
  keep = tf.ones_like(difficult, tf.bool) if options.include_difficult else tf.equal(difficult, 0)
  chosen = select_boxes(boxes, keep, height, width, k)
  crops = tf.map_fn(lambda box: _encode_png(features.encode_pixels(crop(rgb, box, s),
                                                                   options.color_space)),
                    chosen, fn_output_signature=tf.TensorSpec([], tf.string))
  count = tf.shape(chosen)[0]
  padding = k - count
  # Padding slots hold one all-zero PNG (encoded once); box_mask marks them.
  empty = _encode_png(tf.zeros([s, s, 3], tf.uint8))
  view = {}
  if features.has_view(options):  # sRGB: the trainer crops and resizes it like serving resizes
    size = features.view_size(s, options.min_crop_scale)
    view[features.VIEW] = _encode_png(color.to_uint8(resize(rgb, size)))
  return {
      features.IMAGE: _encode_png(features.encode_pixels(resize(rgb, s), options.color_space)),
      **view,
      features.INSTANCES: tf.ensure_shape(tf.concat([crops, tf.fill([padding], empty)], 0), [k]),
      features.BOXES: tf.ensure_shape(tf.pad(chosen, [[0, padding], [0, 0]]), [k, 4]),
      features.BOX_MASK: tf.ensure_shape(tf.sequence_mask(count, k, dtype=tf.float32), [k]),
  }


def _dense_rows(values: tf.Tensor) -> tf.Tensor:
  """A batch of variable-length values (SparseTensor or RaggedTensor) as a RaggedTensor."""
  if isinstance(values, tf.SparseTensor):
    return tf.RaggedTensor.from_sparse(values)
  return values


def preprocessing_fn(inputs: Dict[str, Any],
                     custom_config: Optional[Dict[str, Any]] = None) -> Dict[str, tf.Tensor]:
  """tf.Transform entry point (batched, no analyzers)."""
  options = TransformOptions.from_dict(custom_config)
  k = options.max_boxes
  jpegs = tf.reshape(inputs[features.RAW_IMAGE], [-1])
  coords = [_dense_rows(inputs[key]) for key in features.RAW_BOX_KEYS]
  boxes = tf.stack(coords, axis=-1)  # ragged [B, None, 4]
  difficult = _dense_rows(inputs[features.RAW_DIFFICULT])

  def encode(elems):
    jpeg, row_boxes, row_difficult = elems
    return encode_example(jpeg, row_boxes, row_difficult, options)

  outputs = tf.map_fn(
      encode, (jpegs, boxes, difficult),
      fn_output_signature={
          features.IMAGE: tf.TensorSpec([], tf.string),
          **({features.VIEW: tf.TensorSpec([], tf.string)} if features.has_view(options) else {}),
          features.INSTANCES: tf.TensorSpec([k], tf.string),
          features.BOXES: tf.TensorSpec([k, 4], tf.float32),
          features.BOX_MASK: tf.TensorSpec([k], tf.float32),
      })
  outputs[features.SOURCE_ID] = tf.reshape(inputs[features.RAW_SOURCE_ID], [-1])
  return outputs
