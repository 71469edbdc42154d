"""Colour hints (SIGGRAPH17, Zhang et al. 2017): a sparse ab map and its mask beside L.

A hint tensor is [..., S, S, 3]: channels 0-1 hold normalised ab (ab / 110) where a hint lies and
0 elsewhere, channel 2 is the mask (1 where a hint lies). All zeros is automatic colorization.

Training simulates hints from the truth as SIGGRAPH17 does (`simulate`): a share of the items gets
none; the others get a geometric number of points (p = 1/8), each a square of 1-9 px at the net's
resolution holding the mean true ab under it. Serving renders the user's points (normalised y, x
and a colour) as squares of POINT_SIZE px (`render`); a box's colour becomes BOX_POINTS inside the
box. An instance crop sees the hints of its box, mapped into the crop (`in_boxes`).
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from trainer import color

CHANNELS = 3
# SIGGRAPH17's simulation: points ~ geometric(p), squares of 1..9 px, about half the items none.
GEOMETRIC_P = 1.0 / 8.0
MAX_POINTS = 64  # P(more than 64 points) = (7/8)^64 ~ 2e-4: the cap never matters
MIN_SIZE, MAX_SIZE = 1, 9
HINT_FREE_SHARE = 0.5
# Side of a served point's square at the net's resolution (the middle of the training sizes).
POINT_SIZE = 5
# Where a box's colour is placed, relative to the box (y, x): its centre and a cross around it,
# taller than wide (boxes of people and animals are).
BOX_POINTS = ((0.5, 0.5), (0.35, 0.5), (0.65, 0.5), (0.5, 0.4), (0.5, 0.6))


def _squares(tops: tf.Tensor, lefts: tf.Tensor, sizes: tf.Tensor, image_size: int) -> tf.Tensor:
  """[M] integer tops, lefts, sizes -> [M,S,S] float masks of the squares."""
  cells = tf.range(image_size)[None, :]
  rows = tf.logical_and(cells >= tops[:, None], cells < (tops + sizes)[:, None])
  cols = tf.logical_and(cells >= lefts[:, None], cells < (lefts + sizes)[:, None])
  return tf.cast(tf.logical_and(rows[:, :, None], cols[:, None, :]), tf.float32)


def _paint(masks: tf.Tensor, ab: tf.Tensor) -> tf.Tensor:
  """[M,S,S] squares and their [M,2] normalised ab -> [S,S,3] hints; where squares overlap, the
  later one wins (as a user's later click would)."""
  # Slot 0 is "no square": where none covers a pixel, argmax picks it and its zero colour.
  masks = tf.concat([tf.zeros(tf.concat([[1], tf.shape(masks)[1:]], 0)), masks], axis=0)
  ab = tf.concat([tf.zeros([1, 2], ab.dtype), ab], axis=0)
  order = masks * tf.cast(tf.range(tf.shape(masks)[0]), tf.float32)[:, None, None]
  last = tf.argmax(order, axis=0, output_type=tf.int32)  # [S,S]: the latest square covering it
  covered = tf.reduce_max(masks, axis=0)[..., None]
  values = tf.gather(ab, last)
  return tf.concat([values * covered, covered], axis=-1)


def draw_squares(image_size: int, seed=None):
  """SIGGRAPH17's random squares for one item: (count, sizes, tops, lefts), each [MAX_POINTS] but
  count; count is 0 for a HINT_FREE_SHARE of the items, else geometric(GEOMETRIC_P) (capped).
  `seed`: a stateless seed [2] (reproducible), else the random ops' own state (training)."""
  def uniform(shape, offset):
    if seed is None:
      return tf.random.uniform(shape)
    return tf.random.stateless_uniform(shape, seed + offset)

  free = uniform([], 0) < HINT_FREE_SHARE
  # Inverse CDF of the geometric distribution on 1, 2, ...
  u = tf.maximum(uniform([], 1), 1e-7)
  count = tf.cast(tf.floor(tf.math.log(u) / math.log(1.0 - GEOMETRIC_P)), tf.int32) + 1
  count = tf.where(free, 0, tf.minimum(count, MAX_POINTS))
  span = MAX_SIZE - MIN_SIZE + 1
  sizes = tf.minimum(MIN_SIZE + tf.cast(tf.floor(uniform([MAX_POINTS], 2) * span), tf.int32),
                     image_size)
  room = tf.cast(image_size - sizes + 1, tf.float32)
  tops = tf.cast(tf.floor(uniform([MAX_POINTS], 3) * room), tf.int32)
  lefts = tf.cast(tf.floor(uniform([MAX_POINTS], 4) * room), tf.int32)
  return count, sizes, tops, lefts


def simulate(target: tf.Tensor, seed=None) -> tf.Tensor:
  """Training hints for one item: normalised ab truth [S,S,2] -> hints [S,S,3] (module docstring);
  `seed` as in draw_squares."""
  image_size = target.shape[0]
  count, sizes, tops, lefts = draw_squares(image_size, seed)
  masks = _squares(tops, lefts, sizes, image_size)
  masks *= tf.cast(tf.range(MAX_POINTS) < count, tf.float32)[:, None, None]
  area = tf.maximum(tf.reduce_sum(masks, axis=[1, 2]), 1.0)[:, None]
  mean_ab = tf.einsum('mhw,hwc->mc', masks, target[..., :2]) / area
  return _paint(masks, mean_ab)


def render(points: tf.Tensor, ab: tf.Tensor, present: tf.Tensor, image_size: int) -> tf.Tensor:
  """Served hints for one image: [P,2] normalised (y, x) centres, their [P,2] normalised ab and
  [P] presence (1: a hint, 0: padding) -> [S,S,3], each a POINT_SIZE square inside the frame."""
  size = min(POINT_SIZE, image_size)
  centre = tf.cast(tf.floor(points * image_size), tf.int32) - size // 2
  corner = tf.clip_by_value(centre, 0, image_size - size)
  sizes = tf.fill(tf.shape(points)[:1], size)
  masks = _squares(corner[:, 0], corner[:, 1], sizes, image_size)
  masks *= tf.cast(present > 0, tf.float32)[:, None, None]
  return _paint(masks, ab)


def box_points(boxes: tf.Tensor) -> tf.Tensor:
  """[N,4] normalised boxes -> [N * len(BOX_POINTS), 2] points inside them (box-major)."""
  ymin, xmin, ymax, xmax = [t[:, None] for t in tf.unstack(boxes, axis=-1)]
  offsets = tf.constant(BOX_POINTS, tf.float32)
  y = ymin + offsets[None, :, 0] * (ymax - ymin)
  x = xmin + offsets[None, :, 1] * (xmax - xmin)
  return tf.reshape(tf.stack([y, x], axis=-1), [-1, 2])


def in_boxes(hints: tf.Tensor, boxes: tf.Tensor, image_index: tf.Tensor,
             image_size: int) -> tf.Tensor:
  """The hints inside each box, resized to an instance crop: [B,S,S,3] frames' hints, [N,4] boxes
  and the [N] frame each belongs to -> [N,S,S,3]. Nearest neighbour, so a hint keeps its colour
  and mask exactly; a box is never larger than its frame, so no hint is skipped."""
  return tf.image.crop_and_resize(hints, boxes, image_index, [image_size, image_size],
                                  method='nearest')


# The hint spread (`spread`): Gaussian widths as fractions of the image side.
SPREAD_WIDTHS = (1.0 / 8.0, 1.0 / 3.0)


def _gaussian_matrix(size: int, sigma: float) -> tf.Tensor:
  """[size, size] with exp(-(i - j)^2 / 2 sigma^2): a Gaussian blur along one axis as a matmul,
  zero outside the map (the depthwise conv it replaces crashes oneDNN when its kernel is wider
  than the map, as it is at a third of the side)."""
  offsets = np.arange(size, dtype=np.float32)
  return tf.constant(np.exp(-np.square(offsets[:, None] - offsets[None, :]) / (2 * sigma * sigma)))


def spread(pooled: tf.Tensor, sigma: float) -> tf.Tensor:
  """A dense guess from sparse hints: the hint map [B,h,w,3] (pooled) -> [B,h,w,3] holding, at
  every cell, the mean ab of the hints around it weighted by a Gaussian of `sigma` cells
  (normalised convolution), times its confidence, and the confidence min(1, weight of hints
  there). No hints give exactly zeros. A fixed, untrained propagation the net refines along the
  photo's edges."""
  rows = _gaussian_matrix(pooled.shape[1], sigma)  # peak 1: one full hint cell -> confidence 1
  cols = _gaussian_matrix(pooled.shape[2], sigma)
  blurred = tf.einsum('ij,bjkc->bikc', rows, pooled)
  blurred = tf.einsum('bikc,lk->bilc', blurred, cols)
  weight = blurred[..., 2:]
  # mean ab x confidence = (blurred ab / weight) x min(weight, 1): no division by a small weight.
  return tf.concat([blurred[..., :2] / tf.maximum(weight, 1.0), tf.minimum(weight, 1.0)], -1)


def srgb_to_ab(rgb: tf.Tensor) -> tf.Tensor:
  """sRGB colours in [0, 1] [..., 3] -> normalised ab [..., 2] (what a hint holds)."""
  return color.normalize_ab(color.rgb_to_lab(rgb)[..., 1:])


def zeros_like_gray(gray: tf.Tensor) -> tf.Tensor:
  """No hints for gray [..., S, S, 1]: automatic colorization."""
  return tf.concat([tf.zeros_like(gray)] * CHANNELS, axis=-1)
