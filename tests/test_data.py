"""Trainer input items: mirroring for flip augmentation, on a real photo with its boxes."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from components.voc_example_gen import voc
from tests.conftest import SAMPLE
from trainer import data, features, preprocessing
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
