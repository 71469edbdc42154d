"""Colour as classification (trainer/ab_classes.py): the classes cover real photos' colours, soft
targets, the annealed mean, and a net that learns on them."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import sample_image
from trainer import ab_classes, color, model
from trainer.config import ConfigError, PipelineConfig


def _photo_ab(name: str, size: int = 64) -> tf.Tensor:
  rgb = np.asarray(sample_image(name).convert('RGB').resize((size, size)), np.float32) / 255.0
  return color.rgb_to_lab(tf.constant(rgb))[..., 1:]


def test_classes_are_the_in_gamut_cells_and_cover_every_pixel_of_real_photos():
  centres = ab_classes.class_centres()
  assert centres.shape == (262, 2) and ab_classes.num_classes() == 262
  assert np.all(centres % ab_classes.AB_BIN == 0)
  assert any((centres == 0).all(axis=-1))  # gray is a class of its own
  for name in ('astronaut', 'chelsea', 'coffee', 'flower', 'motorcycle_left', 'rocket'):
    ab = tf.reshape(_photo_ab(name), [-1, 1, 2])
    nearest = tf.reduce_min(tf.norm(ab - centres.astype(np.float32), axis=-1), axis=-1)
    # Every pixel lies in a class's cell: at most half a cell diagonal from its centre.
    assert float(tf.reduce_max(nearest)) <= ab_classes.AB_BIN / np.sqrt(2) + 1e-3, name


def test_soft_targets_weigh_the_nearest_classes_most():
  ab = _photo_ab('flower', 16)
  indices, weights = ab_classes.soft_targets(color.normalize_ab(ab))
  assert indices.shape == (16, 16, ab_classes.SOFT_NEIGHBOURS)
  np.testing.assert_allclose(tf.reduce_sum(weights, -1), 1.0, atol=1e-5)
  assert np.all(np.diff(weights.numpy(), axis=-1) <= 1e-6)  # nearest first, weights falling
  nearest = tf.gather(ab_classes.class_centres().astype(np.float32), indices[..., 0])
  assert float(tf.reduce_max(tf.norm(nearest - ab, axis=-1))) <= 10 / np.sqrt(2) + 1e-3


def test_annealed_mean_goes_from_the_mean_to_the_mode():
  centres = ab_classes.class_centres()
  red = int(np.argmin(np.linalg.norm(centres - [60, 40], axis=-1)))
  blue = int(np.argmin(np.linalg.norm(centres - [10, -60], axis=-1)))
  logits = np.full([1, ab_classes.num_classes()], -30.0, np.float32)
  logits[0, red], logits[0, blue] = 1.0, 0.5  # red slightly more likely than blue
  mean = color.denormalize_ab(ab_classes.annealed_mean(logits, 1.0)).numpy()[0]
  sharp = color.denormalize_ab(ab_classes.annealed_mean(logits, 0.38)).numpy()[0]
  mode = color.denormalize_ab(ab_classes.annealed_mean(logits, 0.01)).numpy()[0]
  np.testing.assert_allclose(mode, centres[red], atol=1e-3)
  # T = 1 averages red and blue into a duller colour; T = 0.38 leans towards red.
  assert np.linalg.norm(mean) < np.linalg.norm(sharp) < np.linalg.norm(mode)


def test_cross_entropy_is_lowest_for_the_soft_target_itself():
  ab = color.normalize_ab(_photo_ab('chelsea', 8))
  indices, weights = ab_classes.soft_targets(ab)
  perfect = tf.math.log(tf.reduce_sum(
      tf.one_hot(indices, ab_classes.num_classes()) * weights[..., None], axis=-2) + 1e-9)
  uniform = tf.zeros([8, 8, ab_classes.num_classes()])
  assert float(tf.reduce_mean(ab_classes.cross_entropy(ab, perfect))) < float(
      tf.reduce_mean(ab_classes.cross_entropy(ab, uniform)))
  np.testing.assert_allclose(tf.reduce_mean(ab_classes.cross_entropy(ab, uniform)),
                             np.log(ab_classes.num_classes()), rtol=1e-5)


def test_a_classification_net_learns_a_real_photos_colours():
  """Logits out, one ab image after the annealed mean; training on one photo brings its decoded
  colours closer than the untrained net's."""
  config = PipelineConfig(image_size=32, width=0.125, objective='classification').net_config()
  # Seeded: from some random starts 60 steps bring the colours only 26 % closer (CI met one).
  tf.keras.utils.set_random_seed(0)
  net = model.ColorNet(config, 'full')
  assert net.model.output_shape == (None, 32, 32, ab_classes.num_classes())
  rgb = np.asarray(sample_image('chelsea').convert('RGB').resize((32, 32)), np.float32) / 255.0
  lab = color.rgb_to_lab(tf.constant(rgb[None]))
  gray, target = color.normalize_l(lab[..., :1]), color.normalize_ab(lab[..., 1:])
  before = float(tf.reduce_mean(tf.abs(model.to_color(net.model(gray), config) - target)))
  model.compile_for_training(net.model, config, 1e-3)
  history = net.model.fit(tf.data.Dataset.from_tensors((gray, target)).repeat(60), epochs=1,
                          verbose=0)
  assert history.history['loss'][-1] < np.log(ab_classes.num_classes())
  after = float(tf.reduce_mean(tf.abs(model.to_color(net.model(gray), config) - target)))
  assert after < 0.7 * before


def test_classification_needs_lab():
  with pytest.raises(ConfigError, match='classifies ab colours'):
    PipelineConfig(color_space='rgb', objective='classification')
