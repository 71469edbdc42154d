"""Colour as classification (Zhang, Isola, Efros 2016, section 2.1): quantised ab classes, soft
targets and the annealed-mean decoding.

A regression loss answers an ambiguous pixel (a shirt that could be red or blue) with the mean
colour, which is grayish; a distribution over ab classes keeps both answers, and the annealed mean
(the distribution sharpened by a temperature T, then averaged) picks a vivid colour where the net
is sure and stays spatially smooth where it is not.

The classes are the ab cells of AB_BIN units centred on multiples of AB_BIN (Zhang's grid) that
hold a displayable colour at some lightness: 262 cells. Zhang keeps 313, the cells his ImageNet
pixels fell into after a looser gamut test; no sRGB pixel lies outside these 262, so they cover
every colour a photo can hold.
"""
from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from trainer import color, rebalance

AB_BIN = rebalance.AB_BIN  # one grid for the classes and the rebalancing prior
SOFT_NEIGHBOURS = 5  # a true colour spreads over its 5 nearest classes (Zhang)
SOFT_SIGMA = 5.0  # ab units, Gaussian weights of those neighbours (Zhang)
_GAMUT_SAMPLES = 5  # per cell side, when testing whether a cell holds a displayable colour
_GAMUT_LIGHTNESS = np.linspace(0.0, 100.0, 101)


def _linear_rgb(lab: np.ndarray) -> np.ndarray:
  """Lab -> unclipped linear RGB, the inverse of `color.rgb_to_lab` (NumPy, float64)."""
  fy = (lab[..., 0] + 16.0) / 116.0
  f = np.stack([lab[..., 1] / 500.0 + fy, fy, fy - lab[..., 2] / 200.0], axis=-1)
  xyz = np.where(f > 6.0 / 29.0, f ** 3, (f - 16.0 / 116.0) / color._KAPPA_SLOPE)
  return (xyz * color._WHITE_D65) @ color._RGB_FROM_XYZ.T


@functools.lru_cache(maxsize=1)
def class_centres() -> np.ndarray:
  """[Q, 2] ab centres (Lab units) of the in-gamut cells, row-major over (a, b)."""
  # Centres on multiples of AB_BIN (Zhang's), so gray (0, 0) is a class of its own.
  centres = np.arange(-color.AB_SCALE, color.AB_SCALE + AB_BIN / 2, AB_BIN)
  offsets = np.linspace(-AB_BIN / 2, AB_BIN / 2, _GAMUT_SAMPLES)
  samples = (centres[:, None] + offsets[None, :]).reshape(-1)  # every cell, _GAMUT_SAMPLES a side
  a, b, lightness = np.meshgrid(samples, samples, _GAMUT_LIGHTNESS, indexing='ij')
  rgb = _linear_rgb(np.stack([lightness, a, b], axis=-1))
  displayable = np.all((rgb >= 0.0) & (rgb <= 1.0), axis=-1).any(axis=-1)
  n = len(centres)
  in_cell = displayable.reshape(n, _GAMUT_SAMPLES, n, _GAMUT_SAMPLES).any(axis=(1, 3))
  cells_a, cells_b = np.nonzero(in_cell)
  return np.stack([centres[cells_a], centres[cells_b]], axis=-1)


def num_classes() -> int:
  return len(class_centres())


def _normalised_centres() -> tf.Tensor:
  return tf.constant(class_centres() / color.AB_SCALE, tf.float32)


def soft_targets(normalised_ab: tf.Tensor):
  """Each pixel's true colour as (indices [..., 5] of its nearest classes, weights [..., 5] summing
  to 1), Gaussian in the distance (Zhang's soft encoding)."""
  ab = color.denormalize_ab(tf.convert_to_tensor(normalised_ab, tf.float32))
  centres = tf.constant(class_centres(), tf.float32)
  distance2 = tf.reduce_sum(tf.square(ab[..., None, :] - centres), axis=-1)  # [..., Q]
  neg_nearest, indices = tf.math.top_k(-distance2, SOFT_NEIGHBOURS)
  weights = tf.nn.softmax(neg_nearest / (2.0 * SOFT_SIGMA ** 2), axis=-1)
  return indices, weights


def cross_entropy(normalised_ab: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Per-pixel cross-entropy [...] of class logits [..., Q] against the soft targets."""
  indices, weights = soft_targets(normalised_ab)
  log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
  return -tf.reduce_sum(weights * tf.gather(log_probs, indices, batch_dims=len(indices.shape) - 1),
                        axis=-1)


def annealed_mean(logits: tf.Tensor, temperature: float) -> tf.Tensor:
  """Class logits [..., Q] -> normalised ab [..., 2]: the mean of softmax(logits / T)."""
  probs = tf.nn.softmax(tf.cast(logits, tf.float32) / temperature, axis=-1)
  return tf.linalg.matmul(probs, _normalised_centres())
