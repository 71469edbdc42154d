"""Colour class rebalancing for the loss (Zhang, Isola, Efros 2016, section 3.1).

A regression loss pulls every uncertain pixel towards the mean colour, which is grayish, and the
common colours (sky, grass, fur) dominate it. Rebalancing weights each pixel by how rare its true
ab colour is among the stage's training pixels: the ab plane on a grid of AB_BIN units, the
empirical distribution p smoothed by a Gaussian of REBALANCE_SIGMA units and mixed with a uniform
one (REBALANCE_MIX), inverted, raised to `strength`, and normalised so that the expected weight
under p is 1 (the loss keeps its scale). Strength 0 gives weight 1 everywhere (the plain loss);
strength 1 gives Zhang's weights.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import tensorflow as tf

from trainer import color

AB_BIN = 10.0  # ab units per grid cell (Zhang's grid)
AB_BINS = int(2 * color.AB_SCALE / AB_BIN)  # cells per axis
REBALANCE_MIX = 0.5  # Zhang's lambda
REBALANCE_SIGMA = 5.0  # ab units


def ab_cells(normalised_ab: tf.Tensor) -> tf.Tensor:
  """Normalised ab [..., 2] -> grid cell indices [..., 2] (int32, clipped to the grid)."""
  cells = tf.floor((color.denormalize_ab(normalised_ab) + color.AB_SCALE) / AB_BIN)
  return tf.clip_by_value(tf.cast(cells, tf.int32), 0, AB_BINS - 1)


def ab_histogram(targets: Iterable[tf.Tensor]) -> np.ndarray:
  """Pixel counts [AB_BINS, AB_BINS] per ab cell over batches of normalised ab targets."""
  counts = np.zeros([AB_BINS, AB_BINS], np.float64)
  for target in targets:
    cells = ab_cells(tf.convert_to_tensor(target)).numpy().reshape(-1, 2)
    np.add.at(counts, (cells[:, 0], cells[:, 1]), 1)
  return counts


def _smoothed(prior: np.ndarray) -> np.ndarray:
  offsets = np.arange(-2, 3) * AB_BIN
  kernel = np.exp(-offsets ** 2 / (2 * REBALANCE_SIGMA ** 2))
  kernel /= kernel.sum()
  rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode='same'), 0, prior)
  return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode='same'), 1, rows)


def rebalancing_weights(histogram: np.ndarray, strength: float) -> np.ndarray:
  """Per-cell loss weights [AB_BINS, AB_BINS] from `ab_histogram` counts; mean 1 under them."""
  if histogram.sum() <= 0:
    raise ValueError('no pixels to build the colour prior from')
  observed = histogram / histogram.sum()
  prior = _smoothed(observed)
  prior /= prior.sum()
  cells = np.count_nonzero(prior > 1e-12)  # Zhang's Q: the cells colours actually fall in
  weights = ((1 - REBALANCE_MIX) * prior + REBALANCE_MIX / cells) ** -strength
  return (weights / (observed * weights).sum()).astype(np.float32)


def pixel_weights(weights: np.ndarray, normalised_ab: tf.Tensor) -> tf.Tensor:
  """The weight of each pixel's true colour: [..., 2] ab -> [...]."""
  return tf.gather_nd(tf.constant(weights), ab_cells(normalised_ab))
