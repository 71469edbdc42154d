"""The colorization nets: one SIGGRAPH17-shaped backbone builder for every stage, and the fusion module.

Backbone (Zhang et al. 2017, as used by InstColorization): conv1 2x64, conv2 2x128,
conv3 3x256, conv4 3x512 (each downsampling by 2 first), conv5/conv6 3x512 dilated by 2, conv7 3x512,
then three up blocks (4x4 stride-2 transposed conv + 3x3 shortcut conv from conv3/conv2/conv1) and a
1x1 tanh head. Channel counts scale with `width`. The backbone is kept as named blocks ending at the
13 fusion points so the fusion model can step through it and replace features mid-way.

With `hints` (trainer/hints.py) each net also takes a [S,S,3] hint map (ab, mask). SIGGRAPH17 feeds
it to conv1 only; here a 3x3 conv of the hint map, average-pooled to each scale, beside a Gaussian
spread of it (`hints.spread`), is added to the output of every encoder block and of the last
decoder block (HINT_POINTS): the VGG16 encoder may stay frozen (stage 1 of `cpu_pretrained`) while
the hints still reach the trainable layers, and the spread hands the head a dense guess it need
not learn to propagate from single points. These convs start at zero and have no bias, so an
untrained hint branch, and any net given no hints, is exactly the plain net.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from trainer import ab_classes, features, hints, names, rebalance
from trainer.config import CLASSIFICATION, HUBER, NetConfig, StageConfig

# Up blocks add a 3x3 conv of an earlier feature (U-Net-like shortcut).
SHORTCUTS = {'conv8_up': 'conv3_3', 'conv9_up': 'conv2_2', 'conv10_up': 'conv1_2'}
# Blocks whose output gets the hint branch added -> (base channels, downsampling factor).
HINT_POINTS = {'conv1_2': (64, 1), 'conv2_2': (128, 2), 'conv3_3': (256, 4), 'conv4_3': (512, 8),
               'conv5_3': (512, 8), 'conv6_3': (512, 8), 'conv7_3': (512, 8),
               'conv10_2': (128, 1)}
# Outside the union of boxes the full-image weight gets this bias (the paper's background term).
BACKGROUND_BIAS = 1e5
# Logit of an instance at pixels outside its own box (and of padding slots): excluded from the mix.
# -inf, not a large negative number: an untrained or diverging net's real logits can lie below any
# finite floor, and the excluded maps would then take the weight (exp(-inf - top) is exactly 0).
OUTSIDE_LOGIT = float('-inf')


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
  """Whether this CPU multiplies bfloat16 natively (AMX or AVX-512 BF16; Linux's cpuinfo flags)."""
  try:
    with open('/proc/cpuinfo') as f:
      flags = f.read()
  except OSError:
    return False
  return 'amx_bf16' in flags or 'avx512_bf16' in flags


def resolve_precision(precision: str) -> str:
  """A NetConfig precision with 'auto' replaced by the fastest this machine has: mixed_float16 on
  a GPU, mixed_bfloat16 on a CPU with BF16 units, else float32."""
  if precision != 'auto':
    return precision
  if tf.config.list_physical_devices('GPU'):
    return 'mixed_float16'
  return 'mixed_bfloat16' if cpu_has_bf16() else 'float32'


@contextlib.contextmanager
def precision_scope(precision: str) -> Iterator[None]:
  """Layers built inside compute in `precision` (resolved; variables stay float32); the global
  Keras policy is restored afterwards, so nets of other precisions can be built in one process."""
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(resolve_precision(precision))
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


def output_channels(config: NetConfig) -> int:
  """What the head predicts per pixel: ab (or RGB), or one logit per ab class."""
  if config.objective == CLASSIFICATION:
    return ab_classes.num_classes()
  return features.target_channels(config.color_space)


def to_color(output: tf.Tensor, config: NetConfig) -> tf.Tensor:
  """A net's output -> its colour prediction in the target encoding (normalised ab or RGB,
  float32): the annealed mean of class logits, or the regressed values themselves."""
  if config.objective == CLASSIFICATION:
    return ab_classes.annealed_mean(output, config.annealed_temperature)
  return tf.cast(output, tf.float32)


def _channels(base: int, width: float) -> int:
  return max(4, int(round(base * width)))


def _convs(count: int, filters: int, prefix: str, dilation: int = 1):
  return [keras.layers.Conv2D(filters, 3, padding='same', dilation_rate=dilation,
                              activation='relu', name=f'{prefix}_{i + 1}') for i in range(count)]


def _up_block(name: str, in_channels: int, shortcut_channels: int, filters: int) -> keras.Model:
  x = keras.Input([None, None, in_channels])
  shortcut = keras.Input([None, None, shortcut_channels])
  up = keras.layers.Conv2DTranspose(filters, 4, strides=2, padding='same', name=f'{name}_up')(x)
  short = keras.layers.Conv2D(filters, 3, padding='same', name=f'{name}_short')(shortcut)
  return keras.Model([x, shortcut], keras.layers.Add()([up, short]), name=name)


class ColorNet:
  """One colorization net as named blocks; `model` is the keras.Model from gray (and, with
  config.hints, {gray, hints}) to the net output (`to_color` turns it into colour). Computes in the
  config's precision; the head's output is float32."""

  def __init__(self, config: NetConfig, role: str):
    with precision_scope(config.precision):
      self._build(config, role)

  def _build(self, config: NetConfig, role: str) -> None:
    c = lambda base: _channels(base, config.width)  # noqa: E731
    down = lambda n: keras.layers.MaxPool2D(1, strides=2, name=f'{role}_{n}_down')  # subsample
    # Several replicas normalise by the statistics of the global batch, as one device would.
    synced = tf.distribute.get_strategy().num_replicas_in_sync > 1
    bn = lambda n: keras.layers.BatchNormalization(name=f'{role}_{n}_bn',  # noqa: E731
                                                   synchronized=synced)
    relu = lambda n: keras.layers.ReLU(name=f'{role}_{n}_relu')  # noqa: E731

    def seq(point, layers):
      return keras.Sequential(layers, name=f'{role}_{point}')

    self.config = config
    self.role = role
    self.blocks: Dict[str, keras.layers.Layer] = {
        'conv1_2': seq('conv1_2', _convs(2, c(64), f'{role}_conv1') + [bn('conv1')]),
        'conv2_2': seq('conv2_2', [down('conv2')] + _convs(2, c(128), f'{role}_conv2') +
                       [bn('conv2')]),
        'conv3_3': seq('conv3_3', [down('conv3')] + _convs(3, c(256), f'{role}_conv3') +
                       [bn('conv3')]),
        'conv4_3': seq('conv4_3', [down('conv4')] + _convs(3, c(512), f'{role}_conv4') +
                       [bn('conv4')]),
        'conv5_3': seq('conv5_3', _convs(3, c(512), f'{role}_conv5', dilation=2) + [bn('conv5')]),
        'conv6_3': seq('conv6_3', _convs(3, c(512), f'{role}_conv6', dilation=2) + [bn('conv6')]),
        'conv7_3': seq('conv7_3', _convs(3, c(512), f'{role}_conv7') + [bn('conv7')]),
        'conv8_up': _up_block(f'{role}_conv8_up', c(512), c(256), c(256)),
        'conv8_3': seq('conv8_3', [relu('conv8')] + _convs(2, c(256), f'{role}_conv8') +
                       [bn('conv8')]),
        'conv9_up': _up_block(f'{role}_conv9_up', c(256), c(128), c(128)),
        'conv9_3': seq('conv9_3', [relu('conv9')] + _convs(1, c(128), f'{role}_conv9') +
                       [bn('conv9')]),
        'conv10_up': _up_block(f'{role}_conv10_up', c(128), c(64), c(128)),
        'conv10_2': seq('conv10_2', [
            relu('conv10'),
            keras.layers.Conv2D(c(128), 3, padding='same', name=f'{role}_conv10_2'),
            keras.layers.LeakyReLU(0.2, name=f'{role}_conv10_lrelu')]),
    }
    # float32 head: the loss, the softmax over classes and tanh want full precision.
    if config.objective == CLASSIFICATION:
      head = [keras.layers.Conv2D(output_channels(config), 1, name=f'{role}_out_classes',
                                  dtype='float32')]
    else:
      head = [keras.layers.Conv2D(output_channels(config), 1, name=f'{role}_out', dtype='float32'),
              keras.layers.Activation('tanh', name=f'{role}_tanh', dtype='float32')]
    self.head = seq('out', head)
    self.hint_convs: Dict[str, keras.layers.Conv2D] = {}
    if config.hints:
      self.hint_convs = {
          point: keras.layers.Conv2D(c(base), 3, padding='same', use_bias=False,
                                     kernel_initializer='zeros', name=f'{role}_hint_{point}')
          for point, (base, _) in HINT_POINTS.items()}
      # float32: the hint map and its spread are 3 channels; bfloat16 would only round them.
      self.hint_pool = keras.layers.AveragePooling2D(2, name=f'{role}_hint_pool', dtype='float32')
    s = config.image_size
    gray = keras.Input([s, s, 1], name=features.GRAY)
    if config.hints:
      hint_map = keras.Input([s, s, hints.CHANNELS], name=features.HINTS)
      self.model = keras.Model({features.GRAY: gray, features.HINTS: hint_map},
                               self(gray, hint_map)[0], name=role)
    else:
      self.model = keras.Model(gray, self(gray)[0], name=role)

  def _hint_features(self, hint_map, points: Sequence[str]) -> Dict[str, tf.Tensor]:
    """{point: what the hint branch adds there}, at those of `points` it adds at: a conv of the
    hint map average-pooled to the point's scale beside its `hints.spread` at SPREAD_WIDTHS
    (computed at 1/8 scale, upsampled). Zero hints (or none given) add exactly 0."""
    if hint_map is None:
      return {}
    hint_map = tf.cast(hint_map, tf.float32)
    pyramid = {1: hint_map}
    for factor in (2, 4, 8):
      pyramid[factor] = self.hint_pool(pyramid[factor // 2])
    cells = self.config.image_size // 8
    spreads = tf.concat([hints.spread(pyramid[8], width * cells)
                         for width in hints.SPREAD_WIDTHS], axis=-1)
    added = {}
    for point, conv in self.hint_convs.items():
      if point not in points:
        continue
      factor = HINT_POINTS[point][1]
      size = self.config.image_size // factor
      dense = spreads if factor == 8 else tf.image.resize(spreads, [size, size], 'bilinear')
      added[point] = conv(tf.concat([pyramid[factor], dense], axis=-1))
    return added

  def features(self, gray, hint_map=None, fuse: Optional[Callable] = None,
               until: str = names.FUSION_POINTS[-1]) -> Dict[str, tf.Tensor]:
    """Runs the blocks (not the head) up to the point `until`, with the hint branch when the net
    has one and `hint_map` [B,S,S,3] is given; `fuse(point, feature)` may replace each
    fusion-point feature. Returns {point: feature}, in network order."""
    points = names.FUSION_POINTS[:names.FUSION_POINTS.index(until) + 1]
    feats = {}
    added = self._hint_features(hint_map, points) if self.hint_convs else {}
    x = gray
    for point in points:
      block = self.blocks[point]
      x = block([x, feats[SHORTCUTS[point]]]) if point in SHORTCUTS else block(x)
      if point in added:
        x = x + tf.cast(added[point], x.dtype)
      if fuse is not None:
        x = fuse(point, x)
      feats[point] = x
    return feats

  def __call__(self, gray, hint_map=None, fuse: Optional[Callable] = None):
    """Returns (colour output, {point: feature}); see `features`."""
    feats = self.features(gray, hint_map, fuse)
    return self.head(feats[names.FUSION_POINTS[-1]]), feats

  def model_inputs(self, gray, hint_map=None):
    """What `model` takes: gray, or {gray, hints} (zero hints when none are given)."""
    if not self.config.hints:
      return gray
    return {features.GRAY: gray,
            features.HINTS: hints.zeros_like_gray(gray) if hint_map is None else hint_map}

  @property
  def layers(self):
    return list(self.blocks.values()) + [self.head] + list(self.hint_convs.values())

  def conv(self, name: str) -> keras.layers.Conv2D:
    """The conv layer `conv<block>_<i>` (e.g. 'conv1_1')."""
    block = 'conv' + name[4:].split('_')[0]
    point = next(p for p in self.blocks if p.split('_')[0] == block and not p.endswith('_up'))
    return self.blocks[point].get_layer(f'{self.role}_{name}')

  def encoder_convs(self) -> List[keras.layers.Conv2D]:
    """conv1_1 .. conv5_3: the layers a pretrained VGG16 fills (trainer/backbone.py)."""
    from trainer.backbone import ENCODER_LAYERS  # backbone imports h5py; only needed here
    return [self.conv(name) for name in ENCODER_LAYERS]

  def freeze(self) -> None:
    for layer in self.layers:
      layer.trainable = False  # BatchNorm then also runs in inference mode


def _weight_generator(name: str) -> keras.Sequential:
  """C -> 16 -> 16 -> 1 conv stack predicting one mixing logit per pixel (float32, tiny)."""
  return keras.Sequential([
      keras.layers.Conv2D(16, 3, padding='same', activation='relu', name=f'{name}_1',
                          dtype='float32'),
      keras.layers.Conv2D(16, 3, padding='same', activation='relu', name=f'{name}_2',
                          dtype='float32'),
      keras.layers.Conv2D(1, 3, padding='same', name=f'{name}_3', dtype='float32'),
  ], name=name)


def paste_into_frame(crops: tf.Tensor, boxes: tf.Tensor, height, width) -> tf.Tensor:
  """Resizes each crop [N,h,w,C] into its normalised box on an height x width grid; zeros elsewhere.

  One crop_and_resize call: sampling each crop over the whole frame expressed in the crop's own
  normalised coordinates places it in its box and extrapolates zeros outside.
  """
  ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
  box_h = tf.maximum(ymax - ymin, 1e-6)
  box_w = tf.maximum(xmax - xmin, 1e-6)
  frame = tf.stack([-ymin / box_h, -xmin / box_w, (1 - ymin) / box_h, (1 - xmin) / box_w], -1)
  return tf.image.crop_and_resize(crops, frame, tf.range(tf.shape(crops)[0]),
                                  tf.stack([height, width]), extrapolation_value=0.0)


def _sample_along(values: tf.Tensor, starts: tf.Tensor, ends: tf.Tensor, out_size: int,
                  axis: int) -> tf.Tensor:
  """crop_and_resize's bilinear sampling of `values` [N, ...] along `axis` (1 or 2) for N boxes
  spanning starts..ends (normalised, [N]): out_size samples, zero where one falls outside."""
  in_size = values.shape[axis]
  step = (ends - starts) * (in_size - 1) / max(out_size - 1, 1)
  positions = (starts[:, None] * (in_size - 1) +
               tf.range(out_size, dtype=tf.float32)[None, :] * step[:, None])  # [N, out_size]
  inside = tf.cast(tf.logical_and(positions >= 0.0, positions <= in_size - 1.0), tf.float32)
  below = tf.floor(positions)
  share = positions - below
  low = tf.cast(tf.clip_by_value(below, 0.0, in_size - 1.0), tf.int32)
  high = tf.minimum(low + 1, in_size - 1)
  # The zero outside folded into the two [N, out_size] weights: three full-size ops, not four
  # (the pastes are memory-bound: each full-size op reads and writes N frames of features).
  shape = [-1, out_size, 1, 1] if axis == 1 else [-1, 1, out_size, 1]
  low_weight = tf.reshape((1.0 - share) * inside, shape)
  high_weight = tf.reshape(share * inside, shape)
  return (tf.gather(values, low, axis=axis, batch_dims=1) * low_weight +
          tf.gather(values, high, axis=axis, batch_dims=1) * high_weight)


def paste_into_frame_by_gather(crops: tf.Tensor, boxes: tf.Tensor, height: int,
                               width: int) -> tf.Tensor:
  """paste_into_frame with gathers (bilinear sampling is separable: rows, then columns): TFLite's
  builtin ops have no CropAndResize. Static crop shapes; the same values to float32 rounding."""
  ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
  box_h = tf.maximum(ymax - ymin, 1e-6)
  box_w = tf.maximum(xmax - xmin, 1e-6)
  rows = _sample_along(crops, -ymin / box_h, (1 - ymin) / box_h, height, axis=1)
  return _sample_along(rows, -xmin / box_w, (1 - xmin) / box_w, width, axis=2)


def box_cover(boxes: tf.Tensor, mask: tf.Tensor, height, width) -> tf.Tensor:
  """[N,4] boxes, [N] mask -> [N,height,width,1], 1 where a grid cell overlaps its (real) box."""
  ymin, xmin, ymax, xmax = [t[:, None] for t in tf.unstack(boxes, axis=-1)]
  rows = tf.cast(tf.range(height), tf.float32)[None, :]
  cols = tf.cast(tf.range(width), tf.float32)[None, :]
  h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  in_rows = tf.logical_and((rows + 1) / h > ymin, rows / h < ymax)
  in_cols = tf.logical_and((cols + 1) / w > xmin, cols / w < xmax)
  cover = tf.logical_and(in_rows[:, :, None], in_cols[:, None, :])
  cover = tf.logical_and(cover, mask[:, None, None] > 0)
  return tf.cast(cover, tf.float32)[..., None]


class FusionLayer(keras.layers.Layer):
  """Mixes the full-image feature with the instance features pasted into their boxes.

  Softmax over N+1 logit maps (full image + each instance). An instance competes only inside its own
  box (the official code zero-pads its logit instead, so an instance there also draws weight inside
  other boxes); padding slots never compete; outside every box the full image gets the paper's +1e5
  bias, so there the output is exactly the full-image feature.
  """

  def __init__(self, max_boxes: int, **kwargs):
    # float32 whatever the nets compute in: the +1e5 background bias overflows float16.
    kwargs.setdefault('dtype', 'float32')
    super().__init__(**kwargs)
    self.max_boxes = max_boxes
    # paste_into_frame_by_gather where CropAndResize is not available (the TFLite export).
    self.paste = paste_into_frame
    self.one_image = False  # True: batches of one image, mixed by mix_one_image (the export)
    self.full_weights = _weight_generator(f'{self.name}_full')
    self.instance_weights = _weight_generator(f'{self.name}_instance')

  def _grid(self, full):
    """(batch, height, width, channels) of a feature map: static where known, since inside the
    serving tf.cond grappler cannot fold tf.shape into the crop size (and logs an error per
    CropAndResize)."""
    dynamic = tf.shape(full)
    return tuple(full.shape[i] if full.shape[i] is not None else dynamic[i] for i in range(4))

  def _pasted(self, instance, boxes, height, width):
    """Instance features with their weight logit (last channel), pasted into their boxes."""
    return self.paste(tf.concat([instance, self.instance_weights(instance)], axis=-1),
                      boxes, height, width)

  def _full_logits(self, full, union):
    return self.full_weights(full) + BACKGROUND_BIAS * (1.0 - union)

  # Plain tensor code: autograph conversion (on by default for Layer.call) only costs graph-building
  # time, ~1.3 s per fusion point, through every nested Keras call.
  @tf.autograph.experimental.do_not_convert
  def mixing_weights(self, inputs):
    """Returns ([B,K+1,h,w,1] softmax weights, [B,K+1,h,w,C] features to mix), every K slot."""
    full, instance, boxes, mask = inputs
    k = self.max_boxes
    batch, height, width, channels = self._grid(full)
    flat_boxes = tf.reshape(boxes, [-1, 4])
    pasted = self._pasted(instance, flat_boxes, height, width)
    cover = box_cover(flat_boxes, tf.reshape(mask, [-1]), height, width)
    instance_logits = tf.where(cover > 0, pasted[..., -1:], OUTSIDE_LOGIT)
    union = tf.reduce_max(tf.reshape(cover, [batch, k, height, width, 1]), axis=1)
    logits = tf.concat([self._full_logits(full, union)[:, None],
                        tf.reshape(instance_logits, [batch, k, height, width, 1])], axis=1)
    mixed = tf.concat([full[:, None],
                       tf.reshape(pasted[..., :-1], [batch, k, height, width, channels])], axis=1)
    # Written out rather than tf.nn.softmax: the library kernel may round the full image's weight
    # to 1 - 6e-8 where it should be exactly 1; here an excluded map has weight exactly 0.
    exp = tf.exp(logits - tf.reduce_max(logits, axis=1, keepdims=True))
    return exp / tf.reduce_sum(exp, axis=1, keepdims=True), mixed

  @tf.autograph.experimental.do_not_convert
  def mix_real_slots(self, full, instance, boxes, mask, slots):
    """The same mix with the features of the real slots only (instance [R,h,w,C], their flat
    b*K+k indices `slots` [R]): every tensor is per real box, none per padding slot (serving)."""
    batch, height, width, _ = self._grid(full)
    image = slots // self.max_boxes  # which image each real box belongs to
    real_boxes = tf.gather(tf.reshape(boxes, [-1, 4]), slots)
    pasted = self._pasted(instance, real_boxes, height, width)
    cover = box_cover(real_boxes, tf.gather(tf.reshape(mask, [-1]), slots), height, width)
    instance_logits = tf.where(cover > 0, pasted[..., -1:], OUTSIDE_LOGIT)
    union = tf.maximum(tf.math.unsorted_segment_max(cover, image, batch), 0.0)
    full_logits = self._full_logits(full, union)
    top = tf.maximum(full_logits, tf.math.unsorted_segment_max(instance_logits, image, batch))
    full_exp = tf.exp(full_logits - top)
    instance_exp = tf.exp(instance_logits - tf.gather(top, image))
    total = full_exp + tf.math.unsorted_segment_sum(instance_exp, image, batch)
    weights = instance_exp / tf.gather(total, image)
    return full + tf.math.unsorted_segment_sum(
        weights * (pasted[..., :-1] - tf.gather(full, image)), image, batch)

  @tf.autograph.experimental.do_not_convert
  def mix_one_image(self, full, instance, boxes, mask):
    """The same mix for a batch of one image, every K slot, in 4-D tensors with reductions over
    the slots: what TFLite's kernels (XNNPACK) run fast, where the 5-D tensors of mixing_weights
    and the segment ops of mix_real_slots fall back to slow reference kernels (the export)."""
    _, height, width, _ = self._grid(full)
    boxes, mask = tf.reshape(boxes, [-1, 4]), tf.reshape(mask, [-1])
    pasted = self._pasted(instance, boxes, height, width)
    cover = box_cover(boxes, mask, height, width)
    instance_logits = tf.where(cover > 0, pasted[..., -1:], OUTSIDE_LOGIT)
    full_logits = self._full_logits(full, tf.reduce_max(cover, axis=0, keepdims=True))
    top = tf.maximum(full_logits, tf.reduce_max(instance_logits, axis=0, keepdims=True))
    full_exp, instance_exp = tf.exp(full_logits - top), tf.exp(instance_logits - top)
    weights = instance_exp / (full_exp + tf.reduce_sum(instance_exp, axis=0, keepdims=True))
    return full + tf.reduce_sum(weights * (pasted[..., :-1] - full), axis=0, keepdims=True)

  @tf.autograph.experimental.do_not_convert
  def call(self, inputs, training=None):
    """inputs: [full [B,h,w,C], instance features of every slot [B*K,h,w,C], boxes [B,K,4],
    box_mask [B,K]]; or with a fifth input `slots` [R], the instance features of those flat
    b*K+k slots only [R,h,w,C] (see mix_real_slots)."""
    del training  # no dropout or batch norm in the fusion layer
    full = inputs[0]
    if len(inputs) == 5:
      out = self.mix_real_slots(*inputs)
    elif self.one_image:
      out = self.mix_one_image(*inputs)
    else:
      weights, mixed = self.mixing_weights(inputs)
      # full + sum_k w_k (f_k - full) equals sum_k w_k f_k (weights sum to 1), and is exactly
      # `full` where every instance weight is 0: no boxes means the full-image net's output.
      out = full + tf.reduce_sum(weights[:, 1:] * (mixed[:, 1:] - full[:, None]), axis=1)
    out.set_shape(full.shape)
    return out

  def get_config(self):
    return {**super().get_config(), 'max_boxes': self.max_boxes}


def fusion_layer_name(point: str) -> str:
  return f'fusion_{point}'


def fusion_points_of(keras_model: keras.Model) -> Tuple[str, ...]:
  """The points a FusionNet's keras model mixes instance features in at (its FusionLayers)."""
  layers = {layer.name for layer in keras_model.layers}
  return tuple(p for p in names.FUSION_POINTS if fusion_layer_name(p) in layers)


class FusionNet:
  """The stage-3 model: instance net on the crops, full-image net with FusionLayers at the points.
  With config.hints it also takes the frame's hints; each crop gets the hints inside its box."""

  INPUTS = (features.GRAY, features.INSTANCE_GRAY, features.BOXES, features.BOX_MASK)

  def __init__(self, config: NetConfig, full: ColorNet, instance: ColorNet,
               fusion_points: Sequence[str] = names.FUSION_POINTS):
    s, k = config.image_size, config.max_boxes
    unknown = sorted(set(fusion_points) - set(names.FUSION_POINTS))
    if unknown:
      raise ValueError(f'unknown fusion points {unknown}; choose from {names.FUSION_POINTS}')
    self.config = config
    self.full = full
    self.instance = instance
    self.fusion_layers = {p: FusionLayer(k, name=fusion_layer_name(p)) for p in fusion_points}
    # The instance net runs up to the last point it is mixed in at: its later blocks would cost
    # time, and their weights are not the fusion model's (a SavedModel could not capture them).
    self.last_point = max(fusion_points, key=names.FUSION_POINTS.index)
    inputs = {
        features.GRAY: keras.Input([s, s, 1], name=features.GRAY),
        features.INSTANCE_GRAY: keras.Input([k, s, s, 1], name=features.INSTANCE_GRAY),
        features.BOXES: keras.Input([k, 4], name=features.BOXES),
        features.BOX_MASK: keras.Input([k], name=features.BOX_MASK),
    }
    if config.hints:
      inputs[features.HINTS] = keras.Input([s, s, hints.CHANNELS], name=features.HINTS)
    self.model = keras.Model(inputs, self.forward(inputs, inputs.get(features.HINTS)),
                             name='fusion')

  def forward(self, inputs: Dict[str, tf.Tensor], hint_map=None) -> tf.Tensor:
    """What `model` computes from the INPUTS, every slot's crop through the instance net. With
    `hint_map` None the hint branch is left out: a hint net then gives its zero-hint output
    without the crop hints' CropAndResize (the TFLite export, whose builtins have none)."""
    s, k = self.config.image_size, self.config.max_boxes
    crops = tf.reshape(inputs[features.INSTANCE_GRAY], [-1, s, s, 1])
    flat_boxes = tf.reshape(inputs[features.BOXES], [-1, 4])
    instance_feats = self.instance.features(  # features only: the instance head is never mixed
        crops, self._crop_hints(hint_map, flat_boxes, tf.range(tf.shape(flat_boxes)[0]) // k),
        until=self.last_point)
    return self._fused(inputs[features.GRAY], hint_map, instance_feats, inputs[features.BOXES],
                       inputs[features.BOX_MASK])

  @property
  def inputs(self) -> Sequence[str]:
    """The keys of `model`'s input dict."""
    return self.INPUTS + ((features.HINTS,) if self.config.hints else ())

  def _crop_hints(self, hint_map, boxes, image_index):
    """The hints inside each box [N,4] of frame image_index [N], mapped into its crop; None
    without hints."""
    if hint_map is None:
      return None
    return hints.in_boxes(hint_map, boxes, image_index, self.config.image_size)

  def _fused(self, gray, hint_map, instance_feats: Dict[str, tf.Tensor], boxes, box_mask,
             slots=None):
    """The full-image net with the instance features mixed in at the fusion points: features of
    every slot ([B*K,h,w,C] per point), or of the `slots` [R] only (see FusionLayer)."""
    extra = [] if slots is None else [slots]

    def fuse(point, x):
      if point not in self.fusion_layers:
        return x
      return self.fusion_layers[point]([x, instance_feats[point], boxes, box_mask, *extra])

    return self.full(gray, hint_map, fuse=fuse)[0]

  def fused_real_boxes(self, gray, hint_map, crops, boxes, box_mask, slots) -> tf.Tensor:
    """The fused output with the instance net run on `crops` [R,S,S,1] only, the crops of the
    flat slots `slots` [R] (b*K+k) of the [B,K] boxes."""
    crop_hints = self._crop_hints(hint_map, tf.gather(tf.reshape(boxes, [-1, 4]), slots),
                                  slots // self.config.max_boxes)
    # Features only: the instance head's colours are never mixed in.
    return self._fused(gray, hint_map,
                       self.instance.features(crops, crop_hints, until=self.last_point), boxes,
                       box_mask, slots)

  @tf.autograph.experimental.do_not_convert
  def predict_real_boxes(self, inputs: Dict[str, tf.Tensor]) -> tf.Tensor:
    """`model(inputs)` at the cost of the real boxes only (for serving).

    The instance net, the fusion weight generators and the pastes run on the slots whose box_mask
    is 1, never on padding slots (the mix gives padding weight exactly 0 in any case). With no real
    box in the batch, only the full-image net runs (its output is then what the fused net gives,
    bit for bit). A graph-level tf.cond: the SavedModel keeps fixed signatures, no Python logic.
    """
    gray, boxes, mask = inputs[features.GRAY], inputs[features.BOXES], inputs[features.BOX_MASK]
    hint_map = inputs.get(features.HINTS) if self.config.hints else None
    if self.config.hints and hint_map is None:
      hint_map = hints.zeros_like_gray(gray)
    # Flat b*K+k indices of the real boxes.
    slots = tf.cast(tf.where(tf.reshape(mask, [-1]) > 0)[:, 0], tf.int32)
    crops = tf.gather(tf.reshape(inputs[features.INSTANCE_GRAY], [-1, *gray.shape[1:]]), slots)
    return tf.cond(tf.size(slots) > 0,
                   lambda: self.fused_real_boxes(gray, hint_map, crops, boxes, mask, slots),
                   lambda: self.full(gray, hint_map)[0])

  def fusion_weights(self):
    return [w for layer in self.fusion_layers.values() for w in layer.weights]


def huber_delta(color_space: str) -> float:
  """The paper's delta of 1 ab unit (1/110 normalised); one 8-bit level for RGB in [-1, 1]."""
  return 1.0 / 110.0 if color_space == names.LAB else 2.0 / 255.0


def colorization_loss(color_space: str, color_weights: Optional[np.ndarray] = None,
                      objective: str = HUBER):
  """Huber loss x 10, as in the official training code, or (objective 'classification', Lab
  only) the cross-entropy of the ab class logits against the soft-encoded truth; with
  `color_weights` (`rebalance.rebalancing_weights`, Lab only) each pixel's term weighted by its
  true colour."""
  if objective == CLASSIFICATION:
    if color_space != names.LAB:
      raise ValueError(f'ab classes need color_space {names.LAB!r}, not {color_space!r}')

    def classification(y_true, y_pred):
      per_pixel = ab_classes.cross_entropy(y_true, y_pred)
      if color_weights is not None:
        per_pixel *= rebalance.pixel_weights(color_weights, y_true)
      return tf.reduce_mean(per_pixel)

    return classification
  if color_weights is not None and color_space != names.LAB:
    raise ValueError(f'colour rebalancing weights ab; color_space is {color_space!r}')
  # Reduced here, not by the Huber object: Keras refuses a loss object's own batch reduction
  # inside a tf.distribute replica (the stage then runs under any strategy).
  per_pixel = keras.losses.Huber(delta=huber_delta(color_space),
                                 reduction=keras.losses.Reduction.NONE)

  def loss(y_true, y_pred):
    terms = per_pixel(y_true, y_pred)
    if color_weights is not None:
      terms *= rebalance.pixel_weights(color_weights, y_true)
    return 10.0 * tf.reduce_mean(terms)

  return loss


# Cosine decay ends at this fraction of the initial learning rate.
COSINE_FLOOR = 0.02


def learning_rate_schedule(schedule: StageConfig, total_steps: int):
  """The stage's learning rate: a constant, or cosine-decayed over its `total_steps`."""
  if schedule.lr_decay == 'cosine':
    return keras.optimizers.schedules.CosineDecay(schedule.learning_rate, total_steps,
                                                  alpha=COSINE_FLOOR)
  return schedule.learning_rate


def offset_schedule(learning_rate, offset: int):
  """`learning_rate` (a float or a keras schedule) as seen `offset` steps later: training in
  phases (trainable weights changed, so compiled again) continues one schedule."""
  if not offset or not callable(learning_rate):
    return learning_rate
  return _OffsetSchedule(learning_rate, offset)


class _OffsetSchedule(keras.optimizers.schedules.LearningRateSchedule):

  def __init__(self, schedule, offset: int):
    self.schedule, self.offset = schedule, offset

  def __call__(self, step):
    return self.schedule(step + self.offset)

  def get_config(self):
    return {'schedule': keras.optimizers.schedules.serialize(self.schedule),
            'offset': self.offset}


def compile_for_training(model: keras.Model, config: NetConfig, learning_rate,
                         color_weights: Optional[np.ndarray] = None) -> None:
  """Adam on the config's loss; `learning_rate` a float or a keras schedule
  (`learning_rate_schedule`), `color_weights` as in `colorization_loss`. float16 nets get dynamic
  loss scaling (small gradients underflow float16; bfloat16 has float32's range)."""
  optimizer = keras.optimizers.Adam(learning_rate, beta_1=0.9, beta_2=0.99)
  if resolve_precision(config.precision) == 'mixed_float16':
    optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
  model.compile(optimizer=optimizer,
                loss=colorization_loss(config.color_space, color_weights, config.objective))
  # The nets are plain tensor code. Without autograph, building the fusion model's train graph
  # takes seconds instead of about a minute (each nested Keras call is otherwise converted).
  model.train_step = tf.autograph.experimental.do_not_convert(model.train_step)
  model.test_step = tf.autograph.experimental.do_not_convert(model.test_step)
