"""The colour nets and the fusion module: shapes, exactness without boxes, mixing inside boxes."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import sample_image
from trainer import color, features, model, names
from trainer.config import PipelineConfig, StageConfig


def _config(**overrides):
  return PipelineConfig(**{'image_size': 32, 'width': 0.125, 'max_boxes': 3,
                           **overrides}).net_config()


def _gray_batch(size: int, names=('astronaut', 'chelsea')) -> np.ndarray:
  """Normalised L of real photos, [B,S,S,1]."""
  rgb = np.stack([np.asarray(sample_image(n).convert('RGB').resize((size, size)), np.float32)
                  for n in names]) / 255.0
  return color.normalize_l(color.lightness(rgb)).numpy()


def _fusion_inputs(gray, boxes, mask, max_boxes):
  batch = gray.shape[0]
  crops = np.repeat(gray[:, None], max_boxes, axis=1)  # any real image content works as crops
  return {features.GRAY: gray, features.INSTANCE_GRAY: crops[:, :, ::-1],
          features.BOXES: np.asarray(boxes, np.float32).reshape(batch, max_boxes, 4),
          features.BOX_MASK: np.asarray(mask, np.float32).reshape(batch, max_boxes)}


@pytest.fixture(scope='module')
def nets():
  config = _config()
  full, instance = model.ColorNet(config, 'full'), model.ColorNet(config, 'instance')
  # Distinct weights in the two streams, so mixing is visible.
  instance.model.set_weights([w * 1.5 + 0.01 for w in full.model.get_weights()])
  return config, full, instance, model.FusionNet(config, full, instance)


@pytest.mark.parametrize('color_space,channels', [('lab', 2), ('rgb', 3)])
@pytest.mark.parametrize('size', [32, 64])
def test_backbone_shapes(color_space, channels, size):
  net = model.ColorNet(_config(image_size=size, color_space=color_space), 'full')
  out = net.model(_gray_batch(size))
  assert out.shape == (2, size, size, channels)
  assert float(tf.reduce_max(tf.abs(out))) <= 1.0  # tanh head
  _, feats = net(tf.constant(_gray_batch(size)))
  assert list(feats) == list(names.FUSION_POINTS)
  assert feats['conv4_3'].shape[1] == size // 8 and feats['conv10_2'].shape[1] == size


def test_width_scales_parameters_and_full_width_matches_siggraph17():
  assert model.ColorNet(_config(image_size=64, width=1.0), 'full').model.count_params() > 30e6
  assert model.ColorNet(_config(), 'full').model.count_params() < 1e6


def test_fusion_shapes_for_rgb_batches():
  config = _config(color_space='rgb', image_size=64, max_boxes=2)
  fusion = model.FusionNet(config, model.ColorNet(config, 'full'),
                           model.ColorNet(config, 'instance'))
  gray = _gray_batch(64)
  inputs = _fusion_inputs(gray, [[0.1, 0.1, 0.6, 0.5], [0, 0, 0, 0]] * 2, [1, 0, 1, 0], 2)
  assert fusion.model(inputs).shape == (2, 64, 64, 3)


def test_no_boxes_gives_exactly_the_full_net_output(nets):
  config, full, _, fusion = nets
  gray = _gray_batch(config.image_size)
  inputs = _fusion_inputs(gray, np.zeros((2, 3, 4)), np.zeros((2, 3)), config.max_boxes)
  np.testing.assert_array_equal(fusion.model(inputs).numpy(), full.model(gray).numpy())


def test_padding_boxes_change_nothing(nets):
  config, _, _, fusion = nets
  gray = _gray_batch(config.image_size)
  boxes = [[0.1, 0.2, 0.7, 0.9], [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.5, 0.5]] * 2
  one_real = fusion.model(_fusion_inputs(gray, boxes, [1, 0, 0] * 2, 3)).numpy()
  only_that = [[0.1, 0.2, 0.7, 0.9], [0, 0, 0, 0], [0, 0, 0, 0]] * 2
  np.testing.assert_array_equal(
      one_real, fusion.model(_fusion_inputs(gray, only_that, [1, 0, 0] * 2, 3)).numpy())


@pytest.mark.parametrize('one_image', [False, True])
def test_padding_slots_take_nothing_however_low_the_real_logits(one_image):
  """An untrained or diverging net can put every real mixing logit far below any finite floor;
  the padding slots must still take no weight (CI once met such a net)."""
  layer = model.FusionLayer(2)
  layer.one_image = one_image
  full = tf.random.normal([1, 8, 8, 4], seed=1)
  instance = tf.random.normal([2, 8, 8, 4], seed=2)
  mask = tf.constant([[1.0, 0.0]])

  def mixed(padding_box):
    return layer([full, instance, tf.constant([[[0.25, 0.25, 0.75, 0.75], padding_box]]),
                  mask]).numpy()

  mixed([0.0, 0.0, 1.0, 1.0])  # builds the weight generators
  for generator in (layer.full_weights, layer.instance_weights):
    kernel, bias = generator.layers[-1].get_weights()
    generator.layers[-1].set_weights([kernel * 0, bias - 1e12])
  with_padding = mixed([0.0, 0.0, 1.0, 1.0])
  np.testing.assert_array_equal(with_padding, mixed([0.0, 0.0, 0.0, 0.0]))
  assert np.isfinite(with_padding).all()
  inside = with_padding[0, 2:6, 2:6] - full.numpy()[0, 2:6, 2:6]
  assert np.abs(inside).max() > 1e-3  # the real box still mixes, at equal logits half-half


def _first_fusion_point(full, fusion, gray, inputs):
  """(the fusion layer at conv1_2, the full and instance features that reach it)."""
  instance_feature = fusion.instance.blocks['conv1_2'](
      tf.reshape(inputs[features.INSTANCE_GRAY], [-1, 32, 32, 1]))
  return fusion.fusion_layers['conv1_2'], full.blocks['conv1_2'](gray), instance_feature


def test_box_over_whole_image_mixes_both_streams(nets):
  config, full, _, fusion = nets
  gray = _gray_batch(config.image_size)
  inputs = _fusion_inputs(gray, [[0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]] * 2, [1, 0, 0] * 2, 3)
  layer, full_feature, instance_feature = _first_fusion_point(full, fusion, gray, inputs)
  weights, _ = layer.mixing_weights([full_feature, instance_feature, inputs[features.BOXES],
                                     inputs[features.BOX_MASK]])
  weights = weights.numpy()[..., 0]  # [B, K+1, h, w]
  assert (weights[:, 0] > 0.01).all() and (weights[:, 1] > 0.01).all()  # both streams, everywhere
  np.testing.assert_allclose(weights[:, 2:], 0)  # padding slots take nothing
  np.testing.assert_allclose(weights.sum(axis=1), 1, atol=1e-6)
  assert np.abs(fusion.model(inputs).numpy() - full.model(gray).numpy()).max() > 1e-3


def test_box_only_changes_its_region_at_the_first_fusion_point(nets):
  config, full, _, fusion = nets
  gray = _gray_batch(config.image_size)
  inputs = _fusion_inputs(gray, [[0.5, 0.5, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]] * 2,
                          [1, 0, 0] * 2, 3)
  layer, full_feature, instance_feature = _first_fusion_point(full, fusion, gray, inputs)
  fused = layer([full_feature, instance_feature, inputs[features.BOXES],
                 inputs[features.BOX_MASK]]).numpy()
  np.testing.assert_array_equal(fused[:, :16], full_feature.numpy()[:, :16])  # above the box
  np.testing.assert_array_equal(fused[:, :, :16], full_feature.numpy()[:, :, :16])  # left of it
  assert np.abs(fused[:, 16:, 16:] - full_feature.numpy()[:, 16:, 16:]).max() > 1e-4


def test_one_image_mix_is_the_batched_mix(nets):
  """The export's 4-D mix (mix_one_image) gives the training mix's values for each photo, with
  real, padding and overlapping boxes."""
  config, full, _, fusion = nets
  gray = _gray_batch(config.image_size)
  inputs = _fusion_inputs(gray, [[0.1, 0.2, 0.7, 0.9], [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.5, 0.5],
                                 [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.6, 0.4], [0, 0, 0, 0]],
                          [1, 1, 0, 1, 1, 0], 3)
  layer, full_feature, instance_feature = _first_fusion_point(full, fusion, gray, inputs)
  batched = layer([full_feature, instance_feature, inputs[features.BOXES],
                   inputs[features.BOX_MASK]]).numpy()
  assert np.abs(batched - full_feature.numpy()).max() > 1e-3  # the boxes do mix
  for i in range(2):
    one = layer.mix_one_image(full_feature[i:i + 1], instance_feature[3 * i:3 * i + 3],
                              inputs[features.BOXES][i:i + 1], inputs[features.BOX_MASK][i:i + 1])
    np.testing.assert_allclose(one.numpy(), batched[i:i + 1], atol=1e-5)


def test_paste_into_frame_places_a_crop_in_its_box():
  crop = tf.ones([1, 4, 4, 1])
  pasted = model.paste_into_frame(crop, tf.constant([[0.25, 0.5, 0.75, 1.0]]), 8, 8).numpy()[0, ..., 0]
  assert pasted[2:6, 4:8].min() > 0.99
  assert pasted[:1].max() == 0 and pasted[7:].max() == 0 and pasted[:, :3].max() == 0


def test_pasting_by_gather_is_crop_and_resize():
  """The TFLite export's paste gives the serving paste's values, on real features of a photo:
  boxes inside, on the edge, past it, tiny and whole-frame."""
  photo = np.asarray(sample_image('chelsea').convert('RGB').resize((24, 24)), np.float32) / 255.0
  crops = tf.constant(np.stack([photo, photo[::-1], photo[:, ::-1], photo.transpose(1, 0, 2),
                                photo * 0.5]))
  boxes = tf.constant([[0.1, 0.2, 0.6, 0.9], [0.0, 0.0, 1.0, 1.0], [0.5, 0.7, 1.0, 1.0],
                       [0.3, 0.3, 0.32, 0.35], [0.05, 0.0, 0.95, 0.5]])
  for height, width in ((16, 16), (32, 24), (7, 40)):
    np.testing.assert_allclose(model.paste_into_frame_by_gather(crops, boxes, height, width),
                               model.paste_into_frame(crops, boxes, height, width), atol=2e-5)


def test_fusion_points_subset_and_validation():
  config = _config()
  fusion = model.FusionNet(config, model.ColorNet(config, 'full'),
                           model.ColorNet(config, 'instance'), ('conv1_2', 'conv10_2'))
  assert sorted(fusion.fusion_layers) == ['conv10_2', 'conv1_2']
  with pytest.raises(ValueError, match='unknown fusion points'):
    _config(fusion_points=('conv99',))
  with pytest.raises(ValueError, match='unknown fusion points'):
    model.FusionNet(config, model.ColorNet(config, 'full'), model.ColorNet(config, 'instance'),
                    ('conv99',))
  with pytest.raises(ValueError, match='multiple of 8'):
    _config(image_size=36)


def test_loss_is_ten_times_huber_with_one_ab_unit_delta():
  loss = model.colorization_loss('lab')
  small = float(loss(tf.zeros([1, 2]), tf.fill([1, 2], 0.5 / 110)))
  assert small == pytest.approx(10 * 0.5 * (0.5 / 110) ** 2, rel=1e-4)  # quadratic below delta
  big = float(loss(tf.zeros([1, 2]), tf.fill([1, 2], 11 / 110)))
  assert big == pytest.approx(10 * (1 / 110) * (11 / 110 - 0.5 / 110), rel=1e-4)  # linear above


def test_cosine_schedule_decays_to_its_floor_over_the_stage():
  constant = StageConfig(epochs=3, batch_size=4, learning_rate=1e-3)
  assert model.learning_rate_schedule(constant, 300) == 1e-3
  cosine = model.learning_rate_schedule(
      StageConfig(epochs=3, batch_size=4, learning_rate=1e-3, lr_decay='cosine'), 300)
  rates = [float(cosine(step)) for step in (0, 150, 300, 400)]
  assert rates[0] == pytest.approx(1e-3)
  assert rates[1] == pytest.approx(1e-3 * (model.COSINE_FLOOR + (1 - model.COSINE_FLOOR) / 2))
  assert rates[2] == pytest.approx(1e-3 * model.COSINE_FLOOR) == pytest.approx(rates[3])


def test_a_schedule_continues_across_training_phases():
  """Stage 1 compiles again when its frozen encoder thaws: the new optimizer counts from 0, the
  offset schedule carries on from the step the first phase ended at."""
  cosine = model.learning_rate_schedule(
      StageConfig(epochs=3, batch_size=4, learning_rate=1e-3, lr_decay='cosine'), 300)
  later = model.offset_schedule(cosine, 120)
  assert [float(later(step)) for step in (0, 30)] == [float(cosine(120)), float(cosine(150))]
  assert model.offset_schedule(1e-3, 120) == 1e-3  # a constant rate needs no offset
  assert model.offset_schedule(cosine, 0) is cosine
