"""Colour metrics on real photos: known values, the label packing, and the instance region."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import sample_image
from trainer import color, metrics

S = 64


def _lab_batch(names=('astronaut', 'motorcycle_left')):
  rgb = np.stack([np.asarray(sample_image(n).convert('RGB').resize((S, S)), np.float32)
                  for n in names]) / 255.0
  lab = color.rgb_to_lab(rgb)
  return color.normalize_l(lab[..., :1]), color.normalize_ab(lab[..., 1:]), rgb


def _label(gray, ab, boxes=((0.0, 0.0, 0.5, 0.5),)):
  b = len(gray)
  boxes = tf.constant([list(boxes)] * b, tf.float32)
  return metrics.pack_label(gray, ab, boxes, tf.ones(boxes.shape[:2]))


def _value(metric, y_true, y_pred):
  metric.update_state(y_true, y_pred)
  return float(metric.result())


def test_perfect_prediction():
  gray, ab, _ = _lab_batch()
  label = _label(gray, ab)
  assert _value(metrics.SSIM(), label, ab) == pytest.approx(1.0, abs=1e-4)
  assert _value(metrics.PSNR(), label, ab + 1e-3) > 45
  assert _value(metrics.ColorfulnessGap(), label, ab) == pytest.approx(0.0, abs=1e-3)


def test_gray_prediction_has_no_colourfulness_and_lower_psnr():
  gray, ab, _ = _lab_batch()
  label = _label(gray, ab)
  zeros = tf.zeros_like(ab)
  assert _value(metrics.Colorfulness(), label, zeros) < 1.0
  truth_cf = _value(metrics.Colorfulness(source='label'), label, zeros)
  assert truth_cf > 15
  assert _value(metrics.ColorfulnessGap(), label, zeros) == pytest.approx(truth_cf, abs=1.0)
  assert 10 < _value(metrics.PSNR(), label, zeros) < _value(metrics.PSNR(), label, ab * 0.9)


def test_colorfulness_matches_the_formula():
  _, _, rgb = _lab_batch()
  r, g, b = (rgb[0, ..., i].astype(np.float64) * 255 for i in range(3))
  rg, yb = r - g, 0.5 * (r + g) - b
  expected = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
  ours = float(metrics.colorfulness(tf.constant(rgb[:1] * 255))[0])
  assert ours == pytest.approx(expected, rel=1e-4)


def test_instance_psnr_only_sees_the_boxes():
  gray, ab, _ = _lab_batch()
  label = _label(gray, ab, boxes=((0.0, 0.0, 0.5, 0.5),))
  noisy = ab.numpy().copy()
  noisy[:, :, S // 2:] = 0.3  # garbage right of the box
  assert _value(metrics.InstancePSNR(), label, noisy) > 45
  assert _value(metrics.PSNR(), label, noisy) < 25
  noisy[:, :S // 2, :S // 2] += 0.05  # now inside too
  assert _value(metrics.InstancePSNR(), label, noisy) < 30


def test_rgb_colour_space():
  _, _, rgb = _lab_batch()
  gray = color.normalize_l(color.lightness(rgb))
  target = color.normalize_rgb(rgb)
  label = _label(gray, target)
  assert _value(metrics.SSIM(color_space='rgb'), label, target) == pytest.approx(1.0, abs=1e-4)
  assert metrics.PSNR(color_space='rgb').get_config()['color_space'] == 'rgb'


def test_psnr_gain_over_gray_is_zero_without_colour_and_positive_with_it():
  gray, ab, _ = _lab_batch()
  label = _label(gray, ab)
  no_colour = np.zeros_like(ab)
  assert _value(metrics.PSNRGainOverGray(), label, no_colour) == pytest.approx(0.0, abs=1e-4)
  gain = _value(metrics.PSNRGainOverGray(), label, ab * 0.5)  # half the true colour
  expected = (_value(metrics.PSNR(), label, ab * 0.5) - _value(metrics.PSNR(), label, no_colour))
  assert gain == pytest.approx(expected, abs=1e-3) and gain > 1.0
  # Colour that is wrong scores below the gray baseline.
  assert _value(metrics.PSNRGainOverGray(), label, -ab) < 0
