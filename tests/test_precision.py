"""Mixed precision (PipelineConfig.precision): the nets compute in bfloat16 or float16 with float32
variables and outputs, agree with float32 on real photos, and the fusion mix stays exact."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tests.conftest import sample_image
from trainer import color, features, model
from trainer.config import PipelineConfig


def _gray(size: int) -> np.ndarray:
  rgb = np.stack([np.asarray(sample_image(n).convert('RGB').resize((size, size)), np.float32)
                  for n in ('astronaut', 'coffee')]) / 255.0
  return color.normalize_l(color.lightness(rgb)).numpy()


def _net(precision: str, objective: str = 'huber'):
  config = PipelineConfig(image_size=32, width=0.25, max_boxes=2, precision=precision,
                          objective=objective).net_config()
  return config, model.ColorNet(config, 'full')


def test_auto_is_the_fastest_this_machine_has():
  expected = 'mixed_bfloat16' if model.cpu_has_bf16() else 'float32'
  if tf.config.list_physical_devices('GPU'):
    expected = 'mixed_float16'
  assert model.resolve_precision('auto') == expected
  assert model.resolve_precision('float32') == 'float32'


@pytest.mark.parametrize('precision', ['mixed_bfloat16', 'mixed_float16'])
@pytest.mark.parametrize('objective', ['huber', 'classification'])
def test_mixed_nets_agree_with_float32_on_real_photos(precision, objective):
  config32, net32 = _net('float32', objective)
  config, net = _net(precision, objective)
  assert keras.mixed_precision.global_policy().name == 'float32'  # the scope is restored
  net.model.set_weights(net32.model.get_weights())
  assert all(w.dtype == tf.float32 for w in net.model.weights)
  gray = _gray(32)
  reference = model.to_color(net32.model(gray), config32)
  mixed = model.to_color(net.model(gray), config)
  assert mixed.dtype == tf.float32
  # Normalised ab: 0.02 is about 2 ab units.
  assert float(tf.reduce_mean(tf.abs(mixed - reference))) < 0.02


@pytest.mark.parametrize('precision', ['mixed_bfloat16', 'mixed_float16'])
def test_the_fusion_mix_stays_float32_and_exact_without_boxes(precision):
  config = PipelineConfig(image_size=32, width=0.25, max_boxes=2,
                          precision=precision).net_config()
  full, instance = model.ColorNet(config, 'full'), model.ColorNet(config, 'instance')
  fusion = model.FusionNet(config, full, instance)
  gray = _gray(32)
  inputs = {features.GRAY: gray, features.INSTANCE_GRAY: np.repeat(gray[:, None], 2, axis=1),
            features.BOXES: np.array([[[0.1, 0.1, 0.5, 0.5], [0, 0, 0, 0]]] * 2, np.float32),
            features.BOX_MASK: np.array([[1, 0]] * 2, np.float32)}
  fused = fusion.model(inputs)
  # The +1e5 background bias and the -1e9 logits would overflow float16 outside float32.
  assert fused.dtype == tf.float32 and bool(tf.reduce_all(tf.math.is_finite(fused)))
  alone = full.model(gray)
  assert float(tf.reduce_max(tf.abs(fused - alone))) > 0  # the instance was mixed in
  no_boxes = {**inputs, features.BOX_MASK: np.zeros([2, 2], np.float32)}
  np.testing.assert_array_equal(fusion.model(no_boxes).numpy(), alone.numpy())


def test_float16_training_scales_the_loss_and_learns():
  config, net = _net('mixed_float16')
  model.compile_for_training(net.model, config, 1e-3)
  assert isinstance(net.model.optimizer, keras.mixed_precision.LossScaleOptimizer)
  rgb = np.asarray(sample_image('chelsea').convert('RGB').resize((32, 32)), np.float32) / 255.0
  lab = color.rgb_to_lab(tf.constant(rgb[None]))
  pair = (color.normalize_l(lab[..., :1]), color.normalize_ab(lab[..., 1:]))
  history = net.model.fit(tf.data.Dataset.from_tensors(pair).repeat(30), epochs=2, verbose=0)
  assert np.isfinite(history.history['loss']).all()
  assert history.history['loss'][-1] < history.history['loss'][0]
  config32, net32 = _net('float32')
  model.compile_for_training(net32.model, config32, 1e-3)
  assert not isinstance(net32.model.optimizer, keras.mixed_precision.LossScaleOptimizer)
