"""sRGB <-> CIE Lab (D65) in plain TensorFlow ops, plus the network and storage encodings.

The constants and branch points follow scikit-image's `rgb2lab`/`lab2rgb` so results agree with it to
float32 precision (checked in tests/test_color.py). No tensorflow-io: these ops run inside Transform,
the Trainer input pipeline and the serving signature alike.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

# sRGB (linear) -> XYZ, the matrix scikit-image uses; its inverse is computed once, in float64.
_XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                          [0.212671, 0.715160, 0.072169],
                          [0.019334, 0.119193, 0.950227]])
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_EPSILON = 0.008856  # (6/29)^3 as rounded by CIE and scikit-image
_KAPPA_SLOPE = 7.787

# Network normalisation of the paper (official code): L -> (L - 50) / 100, ab -> ab / 110.
L_CENTER = 50.0
L_SCALE = 100.0
AB_SCALE = 110.0


def _apply_matrix(pixels: tf.Tensor, matrix: np.ndarray) -> tf.Tensor:
  return tf.linalg.matvec(tf.constant(matrix, pixels.dtype), pixels)


def _linear(rgb: tf.Tensor) -> tf.Tensor:
  """sRGB in [0, 1] -> linear RGB."""
  rgb = tf.convert_to_tensor(rgb, tf.float32)
  return tf.where(rgb > 0.04045, tf.pow((rgb + 0.055) / 1.055, 2.4), rgb / 12.92)


def _lab_f(t: tf.Tensor) -> tf.Tensor:
  """CIE's f: cube root above (6/29)^3, linear below."""
  # cbrt of a non-positive number: the linear branch applies there, tf.where keeps NaN out of it.
  safe = tf.maximum(t, _EPSILON)
  return tf.where(t > _EPSILON, tf.pow(safe, 1.0 / 3.0), _KAPPA_SLOPE * t + 16.0 / 116.0)


def rgb_to_lab(rgb: tf.Tensor) -> tf.Tensor:
  """Converts sRGB in [0, 1] (any leading shape, 3 channels last) to Lab (L 0..100, a/b ~ -110..110)."""
  xyz = _apply_matrix(_linear(rgb), _XYZ_FROM_RGB) / tf.constant(_WHITE_D65, tf.float32)
  fx, fy, fz = tf.unstack(_lab_f(xyz), axis=-1)
  return tf.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def _lab_to_linear(lab: tf.Tensor) -> tf.Tensor:
  """Lab -> linear RGB, unclipped (outside [0, 1] where the colour cannot be displayed)."""
  lab = tf.convert_to_tensor(lab, tf.float32)
  l, a, b = tf.unstack(lab, axis=-1)
  fy = (l + 16.0) / 116.0
  fx = a / 500.0 + fy
  fz = tf.maximum(fy - b / 200.0, 0.0)  # scikit-image clips negative z the same way
  f = tf.stack([fx, fy, fz], axis=-1)
  cube = f * f * f  # exact where pow(f, 3.0) goes through exp/log, and 3x faster
  xyz = tf.where(cube > _EPSILON, cube, (f - 16.0 / 116.0) / _KAPPA_SLOPE)
  return _apply_matrix(xyz * tf.constant(_WHITE_D65, tf.float32), _RGB_FROM_XYZ)


def lab_to_rgb(lab: tf.Tensor) -> tf.Tensor:
  """Converts Lab to sRGB clipped to [0, 1], like scikit-image's `lab2rgb`."""
  linear = _lab_to_linear(lab)
  safe = tf.maximum(linear, 0.0031308)
  rgb = tf.where(linear > 0.0031308, 1.055 * tf.pow(safe, 1.0 / 2.4) - 0.055, 12.92 * linear)
  return tf.clip_by_value(rgb, 0.0, 1.0)


# Half an 8-bit level in linear light near white: colours this close to the cube count as inside.
_GAMUT_TOLERANCE = 1e-3
_GAMUT_STEPS = 10  # bisection steps: the chroma kept is within 0.1 % of the gamut boundary


def in_gamut(lab: tf.Tensor) -> tf.Tensor:
  """[...] bool: the Lab colour is displayable in sRGB."""
  linear = _lab_to_linear(lab)
  return tf.reduce_all(tf.logical_and(linear >= -_GAMUT_TOLERANCE,
                                      linear <= 1.0 + _GAMUT_TOLERANCE), axis=-1)


def saturate(l: tf.Tensor, ab: tf.Tensor, scale) -> tf.Tensor:
  """Lab [..., 3] with ab scaled by `scale`; where that colour is not displayable, its chroma is
  reduced until it is, keeping its hue and its L (clipping R, G and B one by one instead would
  shift both, most on the vivid colours a larger scale asks for)."""
  target = ab * scale
  # The bisection runs on the pixels outside the gamut only (usually a small share).
  outside = tf.where(tf.logical_not(in_gamut(tf.concat([l, target], -1))))
  l_out, ab_out = tf.gather_nd(l, outside), tf.gather_nd(target, outside)
  low, high = tf.zeros_like(l_out), tf.ones_like(l_out)  # gray (chroma 0) is always displayable
  for _ in range(_GAMUT_STEPS):
    middle = (low + high) / 2.0
    inside = in_gamut(tf.concat([l_out, ab_out * middle], -1))[..., None]
    low, high = tf.where(inside, middle, low), tf.where(inside, high, middle)
  return tf.concat([l, tf.tensor_scatter_nd_update(target, outside, ab_out * low)], -1)


def lightness(rgb: tf.Tensor) -> tf.Tensor:
  """L channel (0..100) of sRGB in [0, 1], keeping a trailing channel axis of size 1.

  rgb_to_lab's L, computing only Y (white Y is 1): a third of its cube roots and matrix work, on
  the serving path's full-resolution images.
  """
  y = tf.reduce_sum(_linear(rgb) * tf.constant(_XYZ_FROM_RGB[1], tf.float32), axis=-1,
                    keepdims=True)
  return 116.0 * _lab_f(y) - 16.0


# --- 8-bit storage encodings (what Transform writes as PNG) -------------------------------------
# Lab8 is OpenCV's 8-bit Lab layout: L * 255/100, a + 128, b + 128. The quantisation step is 0.39 L
# units and 1 ab unit, below the paper's Huber delta of 1 ab unit; sRGB gamut ab stays inside -128..127.

def lab_to_lab8(lab: tf.Tensor) -> tf.Tensor:
  l, a, b = tf.unstack(lab, axis=-1)
  scaled = tf.stack([l * (255.0 / 100.0), a + 128.0, b + 128.0], axis=-1)
  return tf.cast(tf.clip_by_value(tf.round(scaled), 0.0, 255.0), tf.uint8)


def lab8_to_lab(lab8: tf.Tensor) -> tf.Tensor:
  l, a, b = tf.unstack(tf.cast(lab8, tf.float32), axis=-1)
  return tf.stack([l * (100.0 / 255.0), a - 128.0, b - 128.0], axis=-1)


def to_uint8(unit: tf.Tensor) -> tf.Tensor:
  """[0, 1] floats to rounded uint8."""
  return tf.cast(tf.clip_by_value(tf.round(unit * 255.0), 0.0, 255.0), tf.uint8)


# --- network encodings ---------------------------------------------------------------------------

def normalize_l(l: tf.Tensor) -> tf.Tensor:
  return (l - L_CENTER) / L_SCALE


def denormalize_l(l_norm: tf.Tensor) -> tf.Tensor:
  return l_norm * L_SCALE + L_CENTER


def normalize_ab(ab: tf.Tensor) -> tf.Tensor:
  return ab / AB_SCALE


def denormalize_ab(ab_norm: tf.Tensor) -> tf.Tensor:
  return ab_norm * AB_SCALE


def normalize_rgb(rgb: tf.Tensor) -> tf.Tensor:
  """[0, 1] RGB to the tanh range [-1, 1]."""
  return rgb * 2.0 - 1.0


def denormalize_rgb(rgb_norm: tf.Tensor) -> tf.Tensor:
  return tf.clip_by_value((rgb_norm + 1.0) / 2.0, 0.0, 1.0)
