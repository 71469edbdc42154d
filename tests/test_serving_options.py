"""The pushed model's signatures on real photos: EXIF orientation (phone photos come out upright,
boxes are in the upright frame) and the saturation input."""
from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import sample_image
from tests.test_orientation import camera_jpeg
from trainer import color, metrics

BOX = [0.15, 0.3, 0.9, 0.75]  # normalised, in the upright frame


@pytest.fixture(scope='module')
def signatures(exported_model):
  return tf.saved_model.load(exported_model).signatures


@pytest.fixture(scope='module')
def photo() -> Image.Image:
  return sample_image('motorcycle_left').convert('RGB')


def _decode(png: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(png)).convert('RGB'), np.float32)


def _lightness(rgb: np.ndarray) -> np.ndarray:
  return color.lightness(tf.constant(rgb / 255.0)).numpy()


@pytest.mark.parametrize('tag', (3, 6, 8))
def test_a_phone_photo_comes_out_upright_with_its_boxes_in_the_upright_frame(signatures, photo,
                                                                              tag):
  serve = signatures['serving_default']
  boxes = tf.constant([[BOX]], tf.float32)
  upright = serve(images=tf.constant([camera_jpeg(photo, 1)]), boxes=boxes)
  turned = serve(images=tf.constant([camera_jpeg(photo, tag)]), boxes=boxes)
  out = _decode(turned['colorized'].numpy()[0])
  assert out.shape == (photo.height, photo.width, 3)
  # The lightness is the upright photo's; the colour is what the same photo stored upright gets.
  reference = _decode(upright['colorized'].numpy()[0])
  assert np.abs(_lightness(out) - _lightness(reference)).mean() < 1.0
  assert np.abs(turned['ab'].numpy() - upright['ab'].numpy()).mean() < 1.0
  # ... which the box read in another frame (here the stored one of orientation 6) would not give.
  stored_frame = serve(images=tf.constant([camera_jpeg(photo, tag)]),
                       boxes=tf.constant([[[1 - BOX[3], BOX[0], 1 - BOX[1], BOX[2]]]], tf.float32))
  assert np.abs(stored_frame['ab'].numpy() - upright['ab'].numpy()).mean() > \
      2 * np.abs(turned['ab'].numpy() - upright['ab'].numpy()).mean()


def test_saturation_one_is_serving_default_and_more_adds_colour_not_light(signatures, photo):
  images = tf.constant([camera_jpeg(photo, 1)] * 3)
  boxes = tf.constant([[BOX]] * 3, tf.float32)
  plain = signatures['serving_default'](images=images, boxes=boxes)['colorized'].numpy()
  vivid = signatures['colorize_with_saturation'](
      images=images, boxes=boxes, saturation=tf.constant([1.0, 0.0, 3.0]))['colorized'].numpy()
  assert vivid[0] == plain[0]  # byte for byte
  outputs = [_decode(png) for png in (plain[0], vivid[1], vivid[2])]
  cf = [float(metrics.colorfulness(tf.constant(o[None]))[0]) for o in outputs]
  assert cf[1] < 1.0 < cf[0] < cf[2]
  for out in outputs[1:]:  # the photo's own lightness, within 8-bit rounding
    assert np.abs(_lightness(out) - _lightness(outputs[0])).mean() < 0.5


@pytest.mark.parametrize('saturation, message', [([-0.5], 'saturation must be >= 0'),
                                                 ([9.0], 'saturation must be <= 4'),
                                                 ([1.0, 1.0], 'one value per image')])
def test_bad_saturation_is_refused(signatures, photo, saturation, message):
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    signatures['colorize_with_saturation'](
        images=tf.constant([camera_jpeg(photo, 1)]), boxes=tf.zeros([1, 0, 4]),
        saturation=tf.constant(saturation))
