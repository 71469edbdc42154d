"""EXIF orientation inside the TensorFlow graph, so the serving signature turns phone photos upright.

tf.io.decode_image returns a JPEG's pixels as stored; a camera held upright stores them on their side
and says so in the EXIF Orientation tag (0x0112), which every viewer applies. `exif_orientation`
reads that tag from the JPEG bytes with tensor ops only (no Python, so it is saved in the
SavedModel and runs in TF Serving), and `upright` applies it as PIL's `ImageOps.exif_transpose`
does. PNG, GIF and BMP inputs, and JPEGs without the tag, are used as stored (orientation 1).
"""
from __future__ import annotations

import tensorflow as tf

ORIENTATION_TAG = 0x0112
# The APP1 (Exif) segment follows SOI and at most a few APPn segments, each at most 64 KiB; this
# prefix of the file is scanned, padded with zeros so every read below is in range.
_SCAN_BYTES = 1 << 18
_MAX_SEGMENTS = 16  # segments before the Exif one that are looked past
_MAX_IFD_ENTRIES = 64  # IFD0 entries looked at (cameras write 10-20)


def _byte_vector(image_bytes: tf.Tensor) -> tf.Tensor:
  """The first _SCAN_BYTES bytes as int32 [_SCAN_BYTES], zero-padded."""
  prefix = tf.strings.substr(image_bytes, 0, _SCAN_BYTES)
  padded = tf.strings.join([prefix, tf.constant(b'\0' * _SCAN_BYTES)])
  return tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 0, _SCAN_BYTES), tf.uint8), tf.int32)


def exif_orientation(image_bytes: tf.Tensor) -> tf.Tensor:
  """A scalar string of image bytes -> its EXIF orientation, int32 in 1..8 (1 when there is none,
  it is not a JPEG, or the tag holds anything else)."""
  data = _byte_vector(image_bytes)

  def at(positions):
    return tf.gather(data, tf.clip_by_value(positions, 0, _SCAN_BYTES - 1))

  def find_exif(count, position, tiff):
    """One JPEG marker segment at `position`: the TIFF header's offset if it is Exif APP1."""
    marker, length = at(position + 1), at(position + 2) * 256 + at(position + 3)
    is_exif = tf.logical_and(
        marker == 0xE1,
        tf.reduce_all(at(position + 4 + tf.range(6)) == tf.constant(list(b'Exif\0\0'))))
    return count + 1, position + 2 + length, tf.where(is_exif, position + 10, tiff)

  def keep_looking(count, position, tiff):
    marker = at(position + 1)
    in_segments = tf.logical_and(at(position) == 0xFF, tf.logical_and(
        marker != 0xDA, marker != 0xD9))  # start of scan / end of image: no more headers
    return tf.logical_and(tf.logical_and(count < _MAX_SEGMENTS, tiff < 0),
                          tf.logical_and(in_segments, position < _SCAN_BYTES - 4))

  is_jpeg = tf.logical_and(at(0) == 0xFF, at(1) == 0xD8)
  _, _, tiff = tf.while_loop(keep_looking, find_exif, (0, tf.constant(2), tf.constant(-1)))
  little_endian = tf.logical_and(at(tiff) == 0x49, at(tiff + 1) == 0x49)  # 'II', else 'MM'

  def u16(positions):
    low, high = at(positions), at(positions + 1)
    return tf.where(little_endian, low + 256 * high, 256 * low + high)

  def u32(position):
    return tf.where(little_endian, u16(position) + 65536 * u16(position + 2),
                    65536 * u16(position) + u16(position + 2))

  ifd = tiff + u32(tiff + 4)
  entries = ifd + 2 + 12 * tf.range(_MAX_IFD_ENTRIES)
  listed = tf.range(_MAX_IFD_ENTRIES) < u16(ifd)
  is_tag = tf.logical_and(listed, u16(entries) == ORIENTATION_TAG)
  value = tf.reduce_max(tf.where(is_tag, u16(entries + 8), 0))  # a SHORT, left-justified
  valid = tf.logical_and(tf.logical_and(is_jpeg, tiff >= 0),
                         tf.logical_and(value >= 1, value <= 8))
  return tf.where(valid, value, 1)


def upright(pixels: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
  """[H, W, C] as stored -> as shown (EXIF orientation 1..8, PIL's exif_transpose)."""
  transpose = lambda image: tf.transpose(image, [1, 0, 2])  # noqa: E731
  branches = [
      lambda: pixels,                                  # 1: upright
      lambda: pixels[:, ::-1],                         # 2: mirrored
      lambda: tf.image.rot90(pixels, 2),               # 3: upside down
      lambda: pixels[::-1],                            # 4: mirrored upside down
      lambda: transpose(pixels),                       # 5: transposed
      lambda: tf.image.rot90(pixels, 3),               # 6: stored turned left
      lambda: tf.image.rot90(transpose(pixels), 2),    # 7: transversed
      lambda: tf.image.rot90(pixels, 1),               # 8: stored turned right
  ]
  return tf.switch_case(tf.clip_by_value(orientation, 1, 8) - 1, branches)


def upright_boxes(boxes: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
  """[N, 4] normalised (ymin, xmin, ymax, xmax) in the stored frame -> the same regions in the
  upright frame of `upright(pixels, orientation)`."""
  boxes = tf.convert_to_tensor(boxes, tf.float32)
  y0, x0, y1, x1 = tf.unstack(tf.reshape(boxes, [-1, 4]), axis=-1)
  # Each orientation as (upright y, upright x) of a stored point (y, x).
  corners = [
      lambda y, x: (y, x), lambda y, x: (y, 1 - x), lambda y, x: (1 - y, 1 - x),
      lambda y, x: (1 - y, x), lambda y, x: (x, y), lambda y, x: (x, 1 - y),
      lambda y, x: (1 - x, 1 - y), lambda y, x: (1 - x, y)]

  def mapped(corner):
    ya, xa = corner(y0, x0)
    yb, xb = corner(y1, x1)
    return tf.stack([tf.minimum(ya, yb), tf.minimum(xa, xb), tf.maximum(ya, yb),
                     tf.maximum(xa, xb)], axis=-1)

  return tf.switch_case(tf.clip_by_value(orientation, 1, 8) - 1,
                        [lambda c=c: mapped(c) for c in corners])
