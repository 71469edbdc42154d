"""Lab maths against scikit-image on real photographs, and the storage/network encodings."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from skimage import color as skcolor

from tests.conftest import sample_image
from trainer import color

PHOTOS = ('astronaut', 'chelsea', 'coffee', 'motorcycle_left', 'flower')


@pytest.mark.parametrize('name', PHOTOS)
def test_rgb_to_lab_matches_skimage(name):
  rgb = np.asarray(sample_image(name), dtype=np.float64) / 255.0
  ours = color.rgb_to_lab(rgb).numpy()
  np.testing.assert_allclose(ours, skcolor.rgb2lab(rgb), atol=1e-3, rtol=0)


@pytest.mark.parametrize('name', PHOTOS)
def test_lab_to_rgb_matches_skimage(name):
  lab = skcolor.rgb2lab(np.asarray(sample_image(name), dtype=np.float64) / 255.0)
  # Push some pixels out of the sRGB gamut to exercise the clipping branches too.
  lab[::7, ::5, 1:] *= 1.8
  np.testing.assert_allclose(color.lab_to_rgb(lab.astype(np.float32)).numpy(),
                             skcolor.lab2rgb(lab), atol=1e-3, rtol=0)


def test_round_trip_and_extremes():
  corners = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]],
                     dtype=np.float32)
  lab = color.rgb_to_lab(corners).numpy()
  np.testing.assert_allclose(lab[0], [0, 0, 0], atol=1e-3)
  np.testing.assert_allclose(lab[1], [100, 0, 0], atol=1e-2)
  assert np.abs(lab[:, 1:]).max() < 128  # sRGB gamut fits the Lab8 +-128 range
  np.testing.assert_allclose(color.lab_to_rgb(lab).numpy(), corners, atol=1e-4)


def test_lab8_quantisation_error_is_below_half_a_step():
  rgb = np.asarray(sample_image('astronaut'), dtype=np.float32) / 255.0
  lab = color.rgb_to_lab(rgb)
  back = color.lab8_to_lab(color.lab_to_lab8(lab)).numpy()
  error = np.abs(back - lab.numpy()).reshape(-1, 3).max(axis=0)
  assert error[0] <= 100 / 255 / 2 + 1e-4 and error[1] <= 0.5 + 1e-4 and error[2] <= 0.5 + 1e-4


def test_network_normalisation_matches_the_paper():
  assert float(color.normalize_l(tf.constant(50.0))) == 0.0
  assert float(color.normalize_l(tf.constant(100.0))) == 0.5
  assert float(color.normalize_ab(tf.constant(110.0))) == 1.0
  np.testing.assert_allclose(color.denormalize_rgb(color.normalize_rgb(tf.constant([0.25]))), [0.25])


@pytest.mark.parametrize('name', ['astronaut', 'coffee', 'flower'])
def test_lightness_is_the_l_of_rgb_to_lab(name):
  rgb = np.asarray(sample_image(name).convert('RGB'), np.float32) / 255.0
  np.testing.assert_allclose(color.lightness(rgb), color.rgb_to_lab(rgb)[..., :1], rtol=0,
                             atol=2e-4)


def test_saturate_keeps_lightness_and_hue_and_stays_displayable():
  from tests.conftest import sample_image
  rgb = np.asarray(sample_image('coffee').convert('RGB'), np.float32) / 255.0
  lab = color.rgb_to_lab(tf.constant(rgb))
  l, ab = lab[..., :1], lab[..., 1:]
  for scale in (0.5, 1.0, 3.0):
    out = color.saturate(l, ab, scale)
    assert bool(tf.reduce_all(color.in_gamut(out)))
    np.testing.assert_array_equal(out[..., :1], l)
    chroma, new_chroma = tf.norm(ab, axis=-1), tf.norm(out[..., 1:], axis=-1)
    ratio = (new_chroma / tf.maximum(chroma, 1e-6)).numpy()
    coloured = chroma.numpy() > 5
    assert ratio[coloured].max() <= scale + 1e-4
    hue = lambda x: np.arctan2(x[..., 1], x[..., 0])  # noqa: E731
    delta = np.angle(np.exp(1j * (hue(out[..., 1:].numpy()) - hue(ab.numpy()))))
    assert np.abs(delta[coloured]).max() < 1e-3
    whole = color.in_gamut(tf.concat([l, ab * scale], -1)).numpy()
    np.testing.assert_allclose(ratio[coloured & whole], scale, rtol=1e-4)
    if scale == 3.0:  # the coffee photo's reds leave the gamut at x3: reduced, never below the
      # photo's own chroma (displayable), within the bisection's step
      assert (coloured & ~whole).mean() > 0.05
      assert ratio[coloured & ~whole].min() > 1.0 - scale / 2 ** 10
