"""bench/priors.py: colour priors fitted on the raccoon train photos, scored on their val photos."""
from __future__ import annotations

import numpy as np
import pytest

from bench import priors
from tests.conftest import RACCOON_VOC
from tools import evaluate
from trainer import color


@pytest.fixture(scope='module')
def raccoon():
  return priors.read_splits(RACCOON_VOC)


def test_a_folder_without_split_lists_is_refused(tmp_path):
  (tmp_path / 'JPEGImages').mkdir()
  with pytest.raises(ValueError, match='no ImageSets/Main/train.txt'):
    priors.read_splits(str(tmp_path))


def test_priors_hold_the_train_photos_colours(raccoon):
  train, _ = raccoon
  mean_ab, per_lightness = priors.fit_priors([photo.truth for photo in train])
  assert per_lightness.shape == (priors.LIGHTNESS_BINS, 2)
  # Raccoon photos (fur, bark, leaves) are warm on average: b (yellow) above 0.
  assert mean_ab[1] > 2.0
  # The mean of every pixel is the mean of the bins weighted by how many pixels each holds.
  counts = np.zeros(priors.LIGHTNESS_BINS)
  for photo in train:
    lightness = priors.lab_at(photo.truth, priors.FIT_SIZE)[..., 0].ravel()
    np.add.at(counts, priors.lightness_bin(lightness), 1)
  np.testing.assert_allclose(mean_ab, (per_lightness * counts[:, None]).sum(0) / counts.sum(),
                             atol=1e-3)
  # The lookup follows lightness: its bins differ, unlike a single colour.
  assert np.ptp(per_lightness[counts > 0], axis=0).max() > 3.0


def test_no_colour_is_the_gray_baseline(raccoon):
  truth = raccoon[1][0].truth
  np.testing.assert_allclose(priors.with_ab(truth, np.zeros([4, 4, 2])),
                             np.round(evaluate.gray_baseline(truth)), atol=1.0)


def test_the_lightness_prior_beats_gray_on_photos_it_never_saw(raccoon):
  train, val = raccoon
  _, per_lightness = priors.fit_priors([photo.truth for photo in train])
  gray = priors.gray_psnrs(val)
  row = priors.score_set(val, gray, lambda index, truth: priors.lightness_prior_output(
      truth, per_lightness))
  assert row['gain'] > 2 * row['se'] > 0
  assert 5.0 < row['CF'] < row['CF_truth']
  # The frontier starts at the output itself and grows colour with the scale.
  assert row['frontier'][0]['CF'] == pytest.approx(row['CF'], rel=1e-3)
  assert [p['CF'] for p in row['frontier']] == sorted(p['CF'] for p in row['frontier'])
  # Flipping the colours (the prior's ab negated) loses to gray: the gain is the colour's, not the
  # metric's.
  def flipped_prior(index, truth):
    lightness = color.lightness(truth / 255.0).numpy()[..., 0]
    return priors.with_ab(truth, -per_lightness[priors.lightness_bin(lightness)])

  flipped = priors.score_set(val[:10], gray[:10], flipped_prior)
  assert flipped['gain'] < 0


def test_the_lightness_prior_frontier_runs_from_half_to_more_than_double_its_colour(raccoon):
  train, val = raccoon
  frontier = priors.lightness_prior_frontier(train, val[:8])
  assert [p['scale'] for p in frontier] == [0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5, 1.75, 2.0,
                                            2.5]
  cfs = [p['CF'] for p in frontier]
  assert cfs == sorted(cfs) and cfs[-1] > 4 * cfs[0]
  # More colour than the truth's costs PSNR: the far end scores below the prior itself.
  assert frontier[-1]['gain'] < frontier[4]['gain']
