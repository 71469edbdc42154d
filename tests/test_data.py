"""Trainer input items: mirroring and random crops, on real photos with their boxes."""
from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from bench.train import write_transformed_records
from components.voc_example_gen import voc
from tests.conftest import SAMPLE
from trainer import data, features, names, preprocessing
from trainer.config import PipelineConfig


def _fusion_item(image_id: str = 'motorcycle_left'):
  """(inputs, target) of the fusion stage for a sample photo (2 real boxes, 1 padding slot)."""
  options = PipelineConfig(image_size=32, max_boxes=3).transform_options()
  f = voc.ingest_image(SAMPLE, image_id, 'train').example.features.feature
  boxes = np.stack([f[k].float_list.value for k in features.RAW_BOX_KEYS], axis=-1)
  encoded = preprocessing.encode_example(
      f[features.RAW_IMAGE].bytes_list.value[0], boxes.reshape(-1, 4).astype(np.float32),
      np.array(f[features.RAW_DIFFICULT].int64_list.value, np.int64), options)
  decoded = features.decode_example(encoded, options)
  inputs = {k: decoded[k] for k in (features.GRAY, features.INSTANCE_GRAY, features.BOXES,
                                     features.BOX_MASK)}
  return inputs, decoded[features.TARGET]


def test_mirror_flips_images_crops_and_real_boxes_only():
  inputs, target = _fusion_item()
  np.testing.assert_array_equal(inputs[features.BOX_MASK], [1, 1, 0])
  mirrored, mirrored_target = data.mirror(inputs, target)
  np.testing.assert_array_equal(mirrored[features.GRAY], inputs[features.GRAY][:, ::-1])
  np.testing.assert_array_equal(mirrored_target, target[:, ::-1])
  np.testing.assert_array_equal(mirrored[features.INSTANCE_GRAY],
                                inputs[features.INSTANCE_GRAY][:, :, ::-1])
  boxes, flipped = inputs[features.BOXES].numpy(), mirrored[features.BOXES].numpy()
  np.testing.assert_allclose(flipped[:2, [0, 2]], boxes[:2, [0, 2]])  # y unchanged
  np.testing.assert_allclose(flipped[:2, 1], 1 - boxes[:2, 3], atol=1e-6)
  np.testing.assert_allclose(flipped[:2, 3], 1 - boxes[:2, 1], atol=1e-6)
  np.testing.assert_array_equal(flipped[2], boxes[2])  # padding stays padding
  np.testing.assert_array_equal(mirrored[features.BOX_MASK], inputs[features.BOX_MASK])
  twice, _ = data.mirror(mirrored, mirrored_target)
  np.testing.assert_allclose(twice[features.BOXES], boxes, atol=1e-6)


def test_mirror_of_a_full_image_pair():
  inputs, target = _fusion_item('coffee')
  gray, flipped_target = data.mirror(inputs[features.GRAY], target)
  np.testing.assert_array_equal(gray, tf.reverse(inputs[features.GRAY], [1]))
  np.testing.assert_array_equal(flipped_target, tf.reverse(target, [1]))


def test_random_crop_boxes_lie_inside_with_sides_from_min_scale():
  tf.random.set_seed(1)
  boxes = np.stack([data.random_crop_box(0.25).numpy() for _ in range(400)])
  heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  assert boxes.min() >= 0 and boxes.max() <= 1 + 1e-6
  assert heights.min() >= 0.25 / data.CROP_ASPECT_JITTER - 1e-6 and heights.max() <= 1 + 1e-6
  assert widths.min() >= 0.25 / data.CROP_ASPECT_JITTER - 1e-6 and widths.max() <= 1 + 1e-6
  aspect = heights / widths
  assert aspect.max() <= data.CROP_ASPECT_JITTER ** 2 + 1e-4
  # The scales spread over the range: small views and (nearly) whole frames both occur.
  assert (np.sqrt(heights * widths) < 0.4).mean() > 0.1
  assert (np.sqrt(heights * widths) > 0.85).mean() > 0.1


def _encoded(image_id: str, **fields):
  options = PipelineConfig(**fields).transform_options()
  f = voc.ingest_image(SAMPLE, image_id, 'train').example.features.feature
  boxes = np.stack([f[k].float_list.value for k in features.RAW_BOX_KEYS], axis=-1)
  jpeg = f[features.RAW_IMAGE].bytes_list.value[0]
  return jpeg, preprocessing.encode_example(
      jpeg, boxes.reshape(-1, 4).astype(np.float32),
      np.array(f[features.RAW_DIFFICULT].int64_list.value, np.int64), options)


def _photo_region(jpeg: bytes, size: int, rows=(0.0, 1.0), cols=(0.0, 1.0)) -> np.ndarray:
  photo = Image.open(io.BytesIO(jpeg)).convert('RGB')
  w, h = photo.size
  window = (round(cols[0] * w), round(rows[0] * h), round(cols[1] * w), round(rows[1] * h))
  return np.asarray(photo.crop(window).resize((size, size), Image.BILINEAR), np.float32)


def test_view_is_stored_at_the_size_the_smallest_crop_needs():
  assert features.view_size(32, 1.0) == 32 and features.view_size(32, 0.5) == 64
  assert features.view_size(64, 0.3) == 214  # ceil(64 / 0.3): a 0.3 crop keeps 64 pixels
  _, without = _encoded('coffee', image_size=32)
  assert features.VIEW not in without
  jpeg, encoded = _encoded('coffee', image_size=32, min_crop_scale=0.5)
  view = tf.io.decode_png(encoded[features.VIEW]).numpy()
  assert view.shape == (64, 64, 3)
  assert np.abs(view - _photo_region(jpeg, 64)).mean() < 3.0  # the photo itself, in sRGB


def test_crop_pair_zooms_into_the_same_window_of_gray_and_target():
  inputs, target = _fusion_item('coffee')
  gray = inputs[features.GRAY]
  whole = data.crop_pair(gray, target, tf.constant([0.0, 0.0, 1.0, 1.0]))
  np.testing.assert_allclose(whole[0], gray, atol=1e-6)
  np.testing.assert_allclose(whole[1], target, atol=1e-6)
  # The top-left quarter blown up to S: close to that quarter resized, far from the others.
  crop_gray, crop_target = data.crop_pair(gray, target, tf.constant([0.0, 0.0, 0.5, 0.5]))
  assert crop_gray.shape == gray.shape and crop_target.shape == target.shape
  def quarter(image, row, col):
    return tf.image.resize(image[16 * row:16 * row + 16, 16 * col:16 * col + 16], [32, 32])
  for image, crop in ((gray, crop_gray), (target, crop_target)):
    error = float(tf.reduce_mean(tf.abs(crop - quarter(image, 0, 0))))
    others = [float(tf.reduce_mean(tf.abs(crop - quarter(image, r, c))))
              for r, c in ((0, 1), (1, 0), (1, 1))]
    assert error < 0.25 * min(others), (error, others)


def test_view_crops_are_regions_of_the_photo():
  config = PipelineConfig(image_size=32, min_crop_scale=0.5)
  net = config.net_config()
  jpeg, encoded = _encoded('coffee', image_size=32, min_crop_scale=0.5)
  # The whole view is the stored frame (up to Lab8 rounding and the second resize).
  gray, target = data.crop_view(encoded[features.VIEW], tf.constant([0.0, 0.0, 1.0, 1.0]), net)
  frame = features.decode_full(encoded, net)
  assert gray.shape == (32, 32, 1) and target.shape == (32, 32, 2)
  assert float(tf.reduce_mean(tf.abs(gray - frame[features.GRAY]))) < 0.01  # L/100
  assert float(tf.reduce_mean(tf.abs(target - frame[features.TARGET]))) < 0.01  # ab/110
  # The top-left quarter is that quarter of the photo at S x S, far from the other quarters.
  _, crop = data.crop_view(encoded[features.VIEW], tf.constant([0.0, 0.0, 0.5, 0.5]), net)
  def ab_of(region):
    return features.split_rgb(tf.constant(region / 255.0), 'lab')[1]
  error = float(tf.reduce_mean(tf.abs(crop - ab_of(_photo_region(jpeg, 32, (0, .5), (0, .5))))))
  others = [float(tf.reduce_mean(tf.abs(crop - ab_of(_photo_region(jpeg, 32, r, c)))))
            for r, c in (((0, .5), (.5, 1)), ((.5, 1), (0, .5)), ((.5, 1), (.5, 1)))]
  assert error < 0.25 * min(others), (error, others)


def test_crops_reach_the_full_and_instance_stages_only(tmp_path):
  """Through make_dataset on Transform's encoding of the real sample: with min_crop_scale every
  full-image and instance training item is a new view; fusion items stay the photos themselves."""
  config = PipelineConfig(image_size=32, max_boxes=3, min_crop_scale=0.5)
  records = str(tmp_path / 'train.gz')
  write_transformed_records(SAMPLE, records, config)
  spec = features.transformed_feature_spec(config.transform_options())
  net = config.net_config()

  def items(stage, **options):
    batches = data.make_dataset([records], spec, stage, net, 64, **options)
    first = next(iter(batches))[0]
    return (first[features.GRAY] if stage == names.FUSION else first).numpy()

  for stage in names.STAGES:
    originals = items(stage, training=False, min_crop_scale=0.5)
    cropped = items(stage, training=True, min_crop_scale=0.5)
    assert cropped.shape[1:] == originals.shape[1:]
    def found(item):
      return any(np.array_equal(item, original) for original in originals)
    if stage == names.FUSION:
      assert all(found(item) for item in cropped)
    else:
      assert not any(found(item) for item in cropped), stage


def test_crops_need_the_view(tmp_path):
  config = PipelineConfig(image_size=32, max_boxes=3)  # Transform without crops: no view
  records = str(tmp_path / 'train.gz')
  write_transformed_records(SAMPLE, records, config)
  spec = features.transformed_feature_spec(config.transform_options())
  with pytest.raises(ValueError, match="needs the 'view' feature"):
    data.make_dataset([records], spec, names.FULL, config.net_config(), 4, training=True,
                      min_crop_scale=0.5)
