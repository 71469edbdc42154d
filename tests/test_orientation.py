"""EXIF orientation read and applied in the graph, against PIL's exif_transpose, on a real photo
saved as a camera would store it for each of the 8 orientations."""
from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from tests.conftest import sample_image
from trainer import orientation, serving

# What a camera stores for a photo shown upright with orientation k: the inverse of what
# exif_transpose does for k (2-5 and 7 are their own inverse).
STORED = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
          6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_270}


def camera_jpeg(upright: Image.Image, orientation_tag: int, little_endian: bool = False) -> bytes:
  """`upright` stored as a camera with EXIF orientation `orientation_tag` stores it (Motorola
  byte order, Pillow's default, or Intel's)."""
  stored = upright if STORED[orientation_tag] is None else upright.transpose(
      STORED[orientation_tag])
  exif = Image.Exif()
  exif.endian = '<' if little_endian else '>'
  exif[0x010F] = 'instcolor test camera'  # Make: an entry before the orientation
  exif[0x0112] = orientation_tag
  buffer = io.BytesIO()
  stored.save(buffer, format='JPEG', quality=95, exif=exif.tobytes())
  return buffer.getvalue()


@pytest.fixture(scope='module')
def photo() -> Image.Image:
  return sample_image('motorcycle_left').convert('RGB')  # 711 x 393: a turn swaps them


@pytest.mark.parametrize('tag', range(1, 9))
def test_the_tag_is_read_and_applied_as_pil_does(photo, tag):
  jpeg = camera_jpeg(photo, tag)
  assert int(orientation.exif_orientation(tf.constant(jpeg))) == tag
  ours = serving.decode_rgb(tf.constant(jpeg), tf.constant(0)).numpy()
  pil = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(jpeg))).convert('RGB'),
                   np.float32) / 255.0
  assert ours.shape == pil.shape == (photo.height, photo.width, 3)
  # Two JPEG decoders: a few levels apart at most, never a turned or mirrored photo.
  assert np.abs(ours - pil).mean() < 2 / 255.0


@pytest.mark.parametrize('tag', (3, 6, 8))
def test_intel_byte_order(photo, tag):
  jpeg = camera_jpeg(photo, tag, little_endian=True)
  assert b'Exif\0\0II' in jpeg
  assert int(orientation.exif_orientation(tf.constant(jpeg))) == tag


def test_images_without_the_tag_are_used_as_stored(photo):
  for fmt in ('JPEG', 'PNG', 'BMP'):
    buffer = io.BytesIO()
    photo.save(buffer, format=fmt)
    assert int(orientation.exif_orientation(tf.constant(buffer.getvalue()))) == 1
  broken = camera_jpeg(photo, 6)
  app1 = broken.index(b'Exif')
  truncated = broken[:app1 + 12]  # the segment ends inside the TIFF header
  assert int(orientation.exif_orientation(tf.constant(truncated))) == 1
  assert int(orientation.exif_orientation(tf.constant(b''))) == 1


@pytest.mark.parametrize('tag', range(1, 9))
def test_boxes_follow_the_photo_upright(photo, tag):
  stored = np.asarray(photo.transpose(STORED[tag]) if STORED[tag] else photo, np.float32)
  height, width = stored.shape[:2]
  y0, x0, y1, x1 = 40, 70, 200, 300  # a box in the stored frame, in pixels and normalised
  box = np.array([[y0 / height, x0 / width, y1 / height, x1 / width]], np.float32)
  crop_upright = orientation.upright(tf.constant(stored[y0:y1, x0:x1]), tf.constant(tag)).numpy()
  shown = orientation.upright(tf.constant(stored), tf.constant(tag)).numpy()
  mapped = orientation.upright_boxes(tf.constant(box), tf.constant(tag)).numpy()[0]
  h, w = shown.shape[:2]
  v0, u0, v1, u1 = (mapped * [h, w, h, w]).round().astype(int)
  np.testing.assert_array_equal(shown[v0:v1, u0:u1], crop_upright)
