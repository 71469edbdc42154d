"""Colour-quality metrics as tf_keras metrics, for TFMA's Evaluator and for bench/ablation code.

TFMA hands each metric `y_true` = the `label` of the `transform_features` signature and `y_pred` = the
model output. The label packs what the metrics need into one tensor: [B,S,S, 1 + C + 1] = normalised L,
the colour target (C = 2 ab or 3 RGB) and the union of the ground-truth boxes (1 inside). All
computations are batched tensor ops; nothing loops over pixels.
"""
from __future__ import annotations

from typing import Tuple

import tensorflow as tf
import tf_keras as keras

from trainer import color, features, model, names


def pack_label(gray: tf.Tensor, target: tf.Tensor, boxes: tf.Tensor,
               box_mask: tf.Tensor) -> tf.Tensor:
  """[B,S,S,1+C+1]: L, target and the box-union region on the S x S grid."""
  size = tf.shape(gray)[1]
  k = tf.shape(boxes)[1]
  cover = model.box_cover(tf.reshape(boxes, [-1, 4]), tf.reshape(box_mask, [-1]), size, size)
  region = tf.reduce_max(tf.reshape(cover, [-1, k, size, size, 1]), axis=1)
  return tf.concat([gray, target, region], axis=-1)


def to_rgb255(gray: tf.Tensor, colour: tf.Tensor, color_space: str) -> tf.Tensor:
  """Normalised L + network-space colour (ab/110 or RGB in [-1,1]) -> RGB in 0..255."""
  if color_space == names.LAB:
    lab = tf.concat([color.denormalize_l(gray), color.denormalize_ab(colour)], axis=-1)
    return color.lab_to_rgb(lab) * 255.0
  return color.denormalize_rgb(colour) * 255.0


def unpack(y_true, y_pred, color_space: str) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """-> (true RGB 0..255, predicted RGB 0..255, region [B,S,S,1])."""
  y_true = tf.convert_to_tensor(y_true, tf.float32)
  channels = features.target_channels(color_space)
  gray = y_true[..., :1]
  truth = to_rgb255(gray, y_true[..., 1:1 + channels], color_space)
  prediction = to_rgb255(gray, tf.convert_to_tensor(y_pred, tf.float32), color_space)
  return truth, prediction, y_true[..., 1 + channels:2 + channels]


def colorfulness(rgb255: tf.Tensor) -> tf.Tensor:
  """Hasler & Suesstrunk (2003) per image: std and mean of the rg / yb opponent channels."""
  r, g, b = tf.unstack(rgb255, axis=-1)
  rg = r - g
  yb = 0.5 * (r + g) - b
  std = tf.sqrt(tf.math.reduce_variance(rg, axis=[1, 2]) + tf.math.reduce_variance(yb, axis=[1, 2]))
  mean = tf.sqrt(tf.reduce_mean(rg, axis=[1, 2]) ** 2 + tf.reduce_mean(yb, axis=[1, 2]) ** 2)
  return std + 0.3 * mean


class _ColourMetric(keras.metrics.Metric):
  """Sum/count accumulators; subclasses define the per-batch sums."""

  def __init__(self, name: str, color_space: str = names.LAB, **kwargs):
    super().__init__(name=name, **kwargs)
    self.color_space = color_space
    self.total = self.add_weight('total', initializer='zeros')
    self.count = self.add_weight('count', initializer='zeros')

  def sums(self, truth, prediction, region) -> Tuple[tf.Tensor, tf.Tensor]:
    raise NotImplementedError

  def update_state(self, y_true, y_pred, sample_weight=None):
    del sample_weight
    total, count = self.sums(*unpack(y_true, y_pred, self.color_space))
    self.total.assign_add(total)
    self.count.assign_add(count)

  def result(self):
    return tf.math.divide_no_nan(self.total, self.count)

  def get_config(self):
    return {**super().get_config(), 'color_space': self.color_space}


class _PerImageMean(_ColourMetric):
  """Mean over images of a per-image value."""

  def per_image(self, truth, prediction) -> tf.Tensor:
    raise NotImplementedError

  def sums(self, truth, prediction, region):
    values = self.per_image(truth, prediction)
    return tf.reduce_sum(values), tf.cast(tf.size(values), tf.float32)


class PSNR(_PerImageMean):
  """Mean per-image PSNR in RGB on 0..255."""

  def __init__(self, name: str = 'psnr', **kwargs):
    super().__init__(name=name, **kwargs)

  def per_image(self, truth, prediction):
    return tf.image.psnr(truth, prediction, max_val=255.0)


class PSNRGainOverGray(_ColourMetric):
  """Mean per-image PSNR gain (dB) over the gray baseline of the same image (its own L, ab = 0):
  what the predicted colour adds. 0 for a model that outputs no colour."""

  def __init__(self, name: str = 'psnr_gain_over_gray', **kwargs):
    super().__init__(name=name, **kwargs)

  def update_state(self, y_true, y_pred, sample_weight=None):
    del sample_weight
    y_true = tf.convert_to_tensor(y_true, tf.float32)
    truth, prediction, _ = unpack(y_true, y_pred, self.color_space)
    gray = y_true[..., :1]
    baseline = to_rgb255(gray, tf.zeros_like(tf.concat([gray, gray], -1)), names.LAB)
    gain = (tf.image.psnr(truth, prediction, max_val=255.0) -
            tf.image.psnr(truth, baseline, max_val=255.0))
    self.total.assign_add(tf.reduce_sum(gain))
    self.count.assign_add(tf.cast(tf.size(gain), tf.float32))


class SSIM(_PerImageMean):
  """Mean per-image SSIM in RGB on 0..255."""

  def __init__(self, name: str = 'ssim', **kwargs):
    super().__init__(name=name, **kwargs)

  def per_image(self, truth, prediction):
    return tf.image.ssim(truth, prediction, max_val=255.0)


class Colorfulness(_PerImageMean):
  """Mean colourfulness of the predictions (source='prediction') or of the ground truth."""

  def __init__(self, name: str = 'colorfulness', source: str = 'prediction', **kwargs):
    super().__init__(name=name, **kwargs)
    if source not in ('prediction', 'label'):
      raise ValueError(f"source must be 'prediction' or 'label', not {source!r}")
    self.source = source

  def per_image(self, truth, prediction):
    return colorfulness(prediction if self.source == 'prediction' else truth)

  def get_config(self):
    return {**super().get_config(), 'source': self.source}


class ColorfulnessGap(keras.metrics.Metric):
  """dCF = |mean CF(prediction) - mean CF(ground truth)| over the evaluated set."""

  def __init__(self, name: str = 'colorfulness_gap', color_space: str = names.LAB, **kwargs):
    super().__init__(name=name, **kwargs)
    self.color_space = color_space
    self.predicted = self.add_weight('predicted', initializer='zeros')
    self.truth = self.add_weight('truth', initializer='zeros')
    self.count = self.add_weight('count', initializer='zeros')

  def update_state(self, y_true, y_pred, sample_weight=None):
    del sample_weight
    truth, prediction, _ = unpack(y_true, y_pred, self.color_space)
    self.predicted.assign_add(tf.reduce_sum(colorfulness(prediction)))
    self.truth.assign_add(tf.reduce_sum(colorfulness(truth)))
    self.count.assign_add(tf.cast(tf.shape(truth)[0], tf.float32))

  def result(self):
    return tf.abs(tf.math.divide_no_nan(self.predicted - self.truth, self.count))

  def get_config(self):
    return {**super().get_config(), 'color_space': self.color_space}


class InstancePSNR(_ColourMetric):
  """PSNR over the pixels inside ground-truth boxes, pooled over the set (where the paper gains)."""

  def __init__(self, name: str = 'instance_psnr', **kwargs):
    super().__init__(name=name, **kwargs)

  def sums(self, truth, prediction, region):
    squared = tf.reduce_sum(tf.square(truth - prediction) * region)
    return squared, tf.reduce_sum(region) * 3.0

  def result(self):
    mse = tf.math.divide_no_nan(self.total, self.count)
    return tf.where(self.count > 0, 10.0 * tf.math.log(255.0 ** 2 / mse) / tf.math.log(10.0), 0.0)
