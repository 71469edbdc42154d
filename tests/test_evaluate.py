"""evaluate's saturation frontier on a real photo: ab scaling of an output and the gain read off it."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import sample_image
from tools import evaluate
from trainer import metrics


def _photo(name: str = 'chelsea') -> np.ndarray:
  return np.asarray(sample_image(name).convert('RGB'), np.float32)


def test_scaled_outputs_keep_lightness_and_grow_colourfulness():
  truth = _photo()
  scores = evaluate.saturation_scores(truth, truth)
  assert len(scores) == len(evaluate.SATURATION_SCALES)
  # Scale 1 is the image itself (up to the Lab round trip), with its own colourfulness.
  assert scores[0]['psnr'] > 40
  assert scores[0]['cf'] == pytest.approx(float(metrics.colorfulness(truth[None])[0]), rel=0.02)
  cfs = [s['cf'] for s in scores]
  assert cfs == sorted(cfs) and cfs[-1] > 1.6 * cfs[0]
  assert scores[-1]['psnr'] < scores[0]['psnr'] - 5  # doubled colour is far from the truth
  # A gray output has no ab to scale: every point is the same.
  gray = np.repeat(truth.mean(axis=-1, keepdims=True), 3, axis=-1)
  assert {round(s['psnr'], 3) for s in evaluate.saturation_scores(truth, gray)} == {
      round(evaluate.saturation_scores(truth, gray)[0]['psnr'], 3)}


def test_gain_at_the_truth_colourfulness_is_read_off_the_frontier():
  frontier = [{'scale': s, 'gain': g, 'CF': cf}
              for s, g, cf in ((1.0, 1.2, 15.0), (1.5, 0.8, 20.0), (2.0, 0.2, 25.0))]
  assert evaluate.at_cf(frontier, 15.0) == pytest.approx(1.2)
  assert evaluate.at_cf(frontier, 10.0) == pytest.approx(1.2)  # already as colourful
  assert evaluate.at_cf(frontier, 22.5) == pytest.approx(0.5)
  assert evaluate.at_cf(frontier, 30.0) is None  # out of reach
  # ... and the saturation that gets there (what evaluate suggests for colorize --saturation)
  assert evaluate.at_cf(frontier, 22.5, 'scale') == pytest.approx(1.75)
  assert evaluate.at_cf(frontier, 10.0, 'scale') == pytest.approx(1.0)
