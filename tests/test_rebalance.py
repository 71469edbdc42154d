"""Colour rebalancing of the loss, from the ab prior of real photos."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import sample_image
from trainer import color, model, rebalance

PHOTOS = ('astronaut', 'chelsea', 'coffee', 'motorcycle_left', 'rocket')


def _targets(size: int = 64) -> np.ndarray:
  """Normalised ab of real photos, [B,S,S,2]."""
  rgb = np.stack([np.asarray(sample_image(n).convert('RGB').resize((size, size)), np.float32)
                  for n in PHOTOS]) / 255.0
  return color.normalize_ab(color.rgb_to_lab(rgb)[..., 1:]).numpy()


def _chroma(targets: np.ndarray) -> np.ndarray:
  return np.linalg.norm(targets * color.AB_SCALE, axis=-1)


def test_cells_cover_the_ab_plane():
  ab = tf.constant([[-1.0, -1.0], [0.0, 0.0], [0.999, 0.999], [1.5, -2.0], [5 / 110, -5 / 110]])
  cells = rebalance.ab_cells(ab).numpy()
  last = rebalance.AB_BINS - 1
  np.testing.assert_array_equal(cells, [[0, 0], [11, 11], [last, last], [last, 0], [11, 10]])


def test_rare_colours_weigh_more_and_the_mean_weight_is_one():
  targets = _targets()
  histogram = rebalance.ab_histogram(targets[i:i + 2] for i in range(0, len(targets), 2))
  assert histogram.sum() == targets.size // 2
  np.testing.assert_array_equal(rebalance.rebalancing_weights(histogram, 0.0), 1.0)
  chroma = _chroma(targets)
  previous_ratio = 1.0
  for strength in (0.5, 1.0):
    weights = rebalance.rebalancing_weights(histogram, strength)
    per_pixel = rebalance.pixel_weights(weights, targets).numpy()
    assert per_pixel.mean() == pytest.approx(1.0, rel=1e-4)  # the loss keeps its scale
    # Saturated pixels of these photos are rare: they weigh more than the near-gray ones.
    ratio = per_pixel[chroma > 30].mean() / per_pixel[chroma < 5].mean()
    assert ratio > 1.5 * previous_ratio, (strength, ratio)
    previous_ratio = ratio
    # Mixing with a uniform prior bounds every weight (Zhang's lambda).
    cells = np.count_nonzero(histogram)
    assert weights.max() < (5 * cells / rebalance.REBALANCE_MIX) ** strength
  with pytest.raises(ValueError, match='no pixels'):
    rebalance.rebalancing_weights(np.zeros_like(histogram), 1.0)


def test_weighted_loss_scales_each_pixel_by_its_true_colour():
  targets = _targets(16)[:2]
  predictions = np.zeros_like(targets)  # gray everywhere: each pixel's error is its own chroma
  plain = model.colorization_loss('lab')
  ones = np.ones([rebalance.AB_BINS, rebalance.AB_BINS], np.float32)
  assert float(model.colorization_loss('lab', ones)(targets, predictions)) == pytest.approx(
      float(plain(targets, predictions)), rel=1e-5)
  weights = rebalance.rebalancing_weights(rebalance.ab_histogram([targets]), 1.0)
  per_pixel = float(plain(targets, predictions))  # unweighted mean
  weighted = float(model.colorization_loss('lab', weights)(targets, predictions))
  # Gray is furthest from the rare saturated colours, which now weigh more: the loss grows.
  assert weighted > 1.2 * per_pixel
  with pytest.raises(ValueError, match='rebalancing weights ab'):
    model.colorization_loss('rgb', weights)
