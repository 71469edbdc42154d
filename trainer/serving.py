"""Signatures of every stage's SavedModel (the fusion stage's is the one Pusher pushes).

  serving_default(images [B] string, boxes [B,N,4] float) -> {colorized [B] PNG, ab [B,S,S,2]}
      JPEG/PNG/GIF/BMP bytes of any size, colour or gray. A JPEG's EXIF orientation is applied
      first (trainer/orientation.py): boxes are in the upright frame and the output is upright.
      boxes are normalised (ymin, xmin, ymax, xmax), clipped to [0,1]; zero-area rows are padding;
      N may be 0 (full-image path); more than K boxes keeps the K largest. The predicted ab is
      upsampled to the input size and recombined with the input's own L, so the output keeps the
      input's resolution and lightness.
  colorize_with_saturation(images, boxes, saturation [B] float in [0, 4]) -> the same with each
      image's ab scaled by its saturation, kept displayable with its hue and L (color.saturate);
      1 is serving_default's output.
  colorize_images(images [B] string) -> the same, without boxes.
  colorize_with_hints(images, boxes, hints [B,P,6] float, box_colors [B,N,4] float, saturation)
      (models trained with hints only) -> the same, steered by colour hints in user terms: each
      hints row is (y, x, r, g, b, present): a point, normalised in the upright frame, and its sRGB
      colour in [0, 1]; present 1 for a hint, 0 for a padding row. box_colors row i is
      (r, g, b, present), the colour of boxes row i (placed at hints.BOX_POINTS inside the box).
      Out-of-range values are refused. No hints is serving_default's output.
  evaluate(examples [B] serialized raw tf.Example) -> {prediction [B,S,S,C]}       (for TFMA)
  transform_features(examples) -> decoded tensors + `label` (see trainer/metrics.py) (for TFMA)
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Dict, Optional, Tuple

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from tfx.utils import path_utils

from trainer import color, features, hints, metrics, model, names, orientation, preprocessing
from trainer.config import ConfigError, NetConfig

_JPEG_MAGIC = b'\xff\xd8\xff'
_PNG_MAGIC = b'\x89PNG'
_GIF_MAGIC = b'GIF8'
_BMP_MAGIC = b'BM'


def _check_image(image_bytes: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  """Raises InvalidArgument naming the input when the bytes are no supported image format."""
  head = tf.strings.substr(image_bytes, 0, 4)
  known = tf.reduce_any(tf.stack([
      tf.strings.substr(head, 0, 3) == _JPEG_MAGIC, head == _PNG_MAGIC, head == _GIF_MAGIC,
      tf.strings.substr(head, 0, 2) == _BMP_MAGIC]))
  check = tf.debugging.Assert(known, [tf.strings.format(
      'images[{}] is not a JPEG, PNG, GIF or BMP image ({} bytes)',
      (index, tf.strings.length(image_bytes)))])
  with tf.control_dependencies([check]):
    return tf.identity(image_bytes)


def decode_rgb(image_bytes: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  """Any supported image -> float RGB [H,W,3] in [0,1] (gray replicated to 3 channels), turned
  upright by its EXIF orientation as every viewer shows it."""
  pixels = tf.io.decode_image(_check_image(image_bytes, index), channels=3,
                              expand_animations=False)
  pixels = orientation.upright(pixels, orientation.exif_orientation(image_bytes))
  return tf.image.convert_image_dtype(pixels, tf.float32)


def prepare(image_bytes: tf.Tensor, boxes: tf.Tensor, index: tf.Tensor, config: NetConfig,
            hint_rows: Optional[tf.Tensor] = None,
            box_colors: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
  """One request image -> the fusion net's inputs (gray, instance_gray, boxes, box_mask, and with
  config.hints the hint map of `hint_rows` [P,6] and `box_colors` [N,4], see the module
  docstring)."""
  s, k = config.image_size, config.max_boxes
  rgb = decode_rgb(image_bytes, index)
  boxes = tf.clip_by_value(tf.reshape(boxes, [-1, 4]), 0.0, 1.0)
  real = tf.logical_and(boxes[:, 2] > boxes[:, 0], boxes[:, 3] > boxes[:, 1])
  chosen = preprocessing.select_boxes(boxes, real, tf.shape(rgb)[0], tf.shape(rgb)[1], k)
  count = tf.shape(chosen)[0]
  crops = tf.map_fn(lambda box: color.lightness(preprocessing.crop(rgb, box, s)), chosen,
                    fn_output_signature=tf.TensorSpec([s, s, 1], tf.float32))
  prepared = {
      features.GRAY: color.normalize_l(color.lightness(preprocessing.resize(rgb, s))),
      features.INSTANCE_GRAY: tf.pad(color.normalize_l(crops),
                                     [[0, k - count], [0, 0], [0, 0], [0, 0]]),
      features.BOXES: tf.pad(chosen, [[0, k - count], [0, 0]]),
      features.BOX_MASK: tf.sequence_mask(count, k, dtype=tf.float32),
  }
  if config.hints:
    prepared[features.HINTS] = hint_map(hint_rows, boxes, real, box_colors, s)
  return prepared


def hint_map(hint_rows: Optional[tf.Tensor], boxes: tf.Tensor, real: tf.Tensor,
             box_colors: Optional[tf.Tensor], image_size: int) -> tf.Tensor:
  """A request's points [P,6] and the colours [N,4] of its (clipped) boxes [N,4] (`real`: not a
  zero-area padding row) -> the [S,S,3] hint map."""
  rows = tf.zeros([0, 6]) if hint_rows is None else tf.reshape(hint_rows, [-1, 6])
  per_box = len(hints.BOX_POINTS)
  if box_colors is None:
    box_colors = tf.zeros([tf.shape(boxes)[0], 4])
  box_colors = tf.reshape(box_colors, [-1, 4])
  box_present = box_colors[:, 3] * tf.cast(real, tf.float32)
  points = tf.concat([rows[:, :2], hints.box_points(boxes)], axis=0)
  colors = tf.concat([rows[:, 2:5], tf.repeat(box_colors[:, :3], per_box, axis=0)], axis=0)
  present = tf.concat([rows[:, 5], tf.repeat(box_present, per_box)], axis=0)
  return hints.render(points, hints.srgb_to_ab(colors), present, image_size)


def _check_hints(hint_rows: tf.Tensor, box_colors: tf.Tensor, boxes: tf.Tensor,
                 count: tf.Tensor) -> list:
  """Assertions refusing malformed hints (InvalidArgument naming the input and the rule)."""
  def unit(values):
    return tf.reduce_all(tf.logical_and(values >= 0.0, values <= 1.0))

  def flag(values):
    return tf.reduce_all(tf.logical_or(tf.equal(values, 0.0), tf.equal(values, 1.0)))

  present = hint_rows[..., 5:] > 0
  return [
      tf.debugging.assert_equal(tf.shape(hint_rows)[0], count,
                                message='hints needs one row list per image'),
      tf.debugging.assert_equal(tf.shape(box_colors)[:2], tf.shape(boxes)[:2],
                                message='box_colors needs one row per boxes row'),
      tf.debugging.Assert(flag(hint_rows[..., 5]), ['hints: present (column 6) must be 0 or 1']),
      tf.debugging.Assert(unit(tf.where(present, hint_rows[..., :2], 0.0)),
                          ['hints: y and x (columns 1-2) must be in [0, 1] (normalised)']),
      tf.debugging.Assert(unit(tf.where(present, hint_rows[..., 2:5], 0.0)),
                          ['hints: r, g, b (columns 3-5) must be in [0, 1] (sRGB)']),
      tf.debugging.Assert(flag(box_colors[..., 3]), ['box_colors: present (column 4) must be 0 '
                                                     'or 1']),
      tf.debugging.Assert(unit(tf.where(box_colors[..., 3:] > 0, box_colors[..., :3], 0.0)),
                          ['box_colors: r, g, b (columns 1-3) must be in [0, 1] (sRGB)']),
  ]


def predicted_ab(prediction: tf.Tensor, color_space: str) -> tf.Tensor:
  """Network output -> ab in Lab units (for RGB nets: the ab of the predicted colours)."""
  if color_space == names.LAB:
    return color.denormalize_ab(prediction)
  return color.rgb_to_lab(color.denormalize_rgb(prediction))[..., 1:]


def recombine(image_bytes: tf.Tensor, ab: tf.Tensor, index: tf.Tensor,
              saturation: tf.Tensor = 1.0) -> tf.Tensor:
  """Input image + predicted ab [S,S,2] -> PNG at the input resolution with the input's own L;
  ab scaled by `saturation` and kept displayable (color.saturate) unless it is 1."""
  rgb = decode_rgb(image_bytes, index)
  size = tf.shape(rgb)[:2]
  ab_full = tf.image.resize(ab[None], size, method='bilinear')[0]
  l = color.lightness(rgb)
  # At 1, exactly the output of the signature without saturation, at its cost.
  lab = tf.cond(tf.equal(saturation, 1.0), lambda: tf.concat([l, ab_full], axis=-1),
                lambda: color.saturate(l, ab_full, saturation))
  # zlib level 1: several times faster than the default on photos, the same pixels.
  return tf.io.encode_png(color.to_uint8(color.lab_to_rgb(lab)), compression=1)


class Colorizer:
  """One stage's keras model and its NetConfig: image bytes (and boxes) in, colour images out.

  Needs no Transform graph: `image_signatures()` is what a serving user calls; `export` adds the
  TFMA signatures over raw tf.Examples, which do need it.
  """

  def __init__(self, keras_model: keras.Model, stage: str, config: NetConfig,
               predict: Optional[Callable[[Dict[str, tf.Tensor]], tf.Tensor]] = None):
    """`predict` maps prepared inputs to the net's output when `keras_model` on them is not the
    cheapest way (the fusion net's `predict_real_boxes`); the default calls the model."""
    if stage not in names.STAGES:
      raise ValueError(f'stage must be one of {names.STAGES}, not {stage!r}')
    self.keras_model = keras_model
    self.stage = stage
    self.config = config
    self._predict = predict or (lambda prepared: keras_model(self.model_inputs(prepared)))

  def model_inputs(self, decoded: Dict[str, tf.Tensor]):
    """What the keras model takes from decoded or prepared tensors: gray, or a dict (the fusion
    net's inputs; with config.hints the hints, zeros when `decoded` has none)."""
    hint_map = decoded.get(features.HINTS)
    if self.config.hints and hint_map is None:
      hint_map = hints.zeros_like_gray(decoded[features.GRAY])
    if self.stage == names.FUSION:
      inputs = {k: decoded[k] for k in model.FusionNet.INPUTS}
    elif self.config.hints:
      inputs = {features.GRAY: decoded[features.GRAY]}
    else:
      return decoded[features.GRAY]
    if self.config.hints:
      inputs[features.HINTS] = hint_map
    return inputs

  def predict_color(self, prepared: Dict[str, tf.Tensor]) -> tf.Tensor:
    """Prepared inputs -> the colour prediction in the target encoding (float32)."""
    return model.to_color(self._predict(prepared), self.config)

  def prepare_batch(self, images: tf.Tensor, boxes: tf.Tensor, hint_rows: Optional[tf.Tensor] = None,
                    box_colors: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
    """images [B] bytes, boxes [B,N,4] (hints [B,P,6], box_colors [B,N,4]) -> the fusion inputs
    (gray, instance_gray, boxes, mask; hints with config.hints)."""
    s, k = self.config.image_size, self.config.max_boxes
    images = tf.reshape(images, [-1])
    count = tf.shape(images)[0]
    spec = {features.GRAY: tf.TensorSpec([s, s, 1], tf.float32),
            features.INSTANCE_GRAY: tf.TensorSpec([k, s, s, 1], tf.float32),
            features.BOXES: tf.TensorSpec([k, 4], tf.float32),
            features.BOX_MASK: tf.TensorSpec([k], tf.float32)}
    if self.config.hints:
      spec[features.HINTS] = tf.TensorSpec([s, s, hints.CHANNELS], tf.float32)
    if hint_rows is None:
      hint_rows = tf.zeros([count, 0, 6])
    if box_colors is None:
      box_colors = tf.zeros(tf.concat([tf.shape(boxes)[:2], [4]], 0))
    return tf.map_fn(lambda e: prepare(e[0], e[1], e[2], self.config, e[3], e[4]),
                     (images, boxes, tf.range(count), hint_rows, box_colors),
                     fn_output_signature=spec)

  def colorize(self, images: tf.Tensor, boxes: tf.Tensor,
               saturation: Optional[tf.Tensor] = None, hint_rows: Optional[tf.Tensor] = None,
               box_colors: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
    """images [B] bytes, boxes [B,N,4], saturation [B] (default ones), hints [B,P,6] and
    box_colors [B,N,4] (default none) -> {colorized [B] PNG, ab [B,S,S,2]} (module docstring);
    `ab` is the net's, before any saturation."""
    images = tf.reshape(images, [-1])
    count = tf.shape(images)[0]
    if saturation is None:
      saturation = tf.ones([count])
    checks = [
        tf.debugging.assert_equal(tf.size(saturation), count,
                                  message='saturation needs one value per image'),
        tf.debugging.assert_non_negative(saturation, message='saturation must be >= 0'),
        tf.debugging.assert_less_equal(saturation, names.MAX_SATURATION,
                                       message=f'saturation must be <= {names.MAX_SATURATION:g}')]
    if hint_rows is not None:
      checks += _check_hints(hint_rows, box_colors, boxes, count)
    with tf.control_dependencies(checks):
      saturation = tf.reshape(saturation, [-1])
      if hint_rows is not None:
        hint_rows, box_colors = tf.identity(hint_rows), tf.identity(box_colors)
    prepared = self.prepare_batch(images, boxes, hint_rows, box_colors)
    ab = predicted_ab(self.predict_color(prepared), self.config.color_space)
    pngs = tf.map_fn(lambda e: recombine(e[0], e[1], e[2], e[3]),
                     (images, ab, tf.range(count), saturation),
                     fn_output_signature=tf.TensorSpec([], tf.string))
    return {'colorized': pngs, 'ab': ab}

  def image_signatures(self) -> Dict[str, tf.types.experimental.ConcreteFunction]:
    """serving_default(images, boxes), colorize_with_saturation(images, boxes, saturation),
    colorize_images(images) and, for nets with hints, colorize_with_hints(images, boxes, hints,
    box_colors, saturation)."""
    # autograph=False: plain tensor code; converting every nested Keras call only costs export
    # time (about half of it for the fusion model).
    images = tf.TensorSpec([None], tf.string, name='images')
    boxes = tf.TensorSpec([None, None, 4], tf.float32, name='boxes')

    @tf.function(input_signature=[images, boxes], autograph=False)
    def serving_default(images, boxes):
      return self.colorize(images, boxes)

    # A signature's inputs are all required (TF Serving and SavedModel alike): saturation is a
    # signature of its own, so clients of serving_default do not change.
    @tf.function(input_signature=[images, boxes, tf.TensorSpec([None], tf.float32,
                                                               name='saturation')],
                 autograph=False)
    def colorize_with_saturation(images, boxes, saturation):
      return self.colorize(images, boxes, saturation)

    @tf.function(input_signature=[images], autograph=False)
    def colorize_images(images):
      return self.colorize(images, tf.zeros([tf.shape(images)[0], 0, 4]))

    signatures = {'serving_default': serving_default,
                  'colorize_with_saturation': colorize_with_saturation,
                  'colorize_images': colorize_images}
    if self.config.hints:
      @tf.function(input_signature=[
          images, boxes, tf.TensorSpec([None, None, 6], tf.float32, name='hints'),
          tf.TensorSpec([None, None, 4], tf.float32, name='box_colors'),
          tf.TensorSpec([None], tf.float32, name='saturation')], autograph=False)
      def colorize_with_hints(images, boxes, hints, box_colors, saturation):  # noqa: F811
        return self.colorize(images, boxes, saturation, hints, box_colors)

      signatures['colorize_with_hints'] = colorize_with_hints
    return signatures


def evaluation_signatures(colorizer: Colorizer, tf_transform_output: tft.TFTransformOutput
                          ) -> Dict[str, tf.types.experimental.ConcreteFunction]:
  """evaluate(examples) and transform_features(examples) over raw tf.Examples, for TFMA."""
  keras_model, config = colorizer.keras_model, colorizer.config
  # Tracked by the Keras model, so the Transform graph is saved with it.
  keras_model.tft_layer = tf_transform_output.transform_features_layer()
  raw_spec = tf_transform_output.raw_feature_spec()

  def decoded(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
    transformed = keras_model.tft_layer(tf.io.parse_example(serialized, raw_spec))
    result = features.decode_batch(transformed, config)
    result['label'] = metrics.pack_label(result[features.GRAY], result[features.TARGET],
                                         result[features.BOXES], result[features.BOX_MASK])
    return result

  examples = tf.TensorSpec([None], tf.string, name='examples')

  @tf.function(input_signature=[examples], autograph=False)
  def evaluate(examples):
    prediction = keras_model(colorizer.model_inputs(decoded(examples)))
    return {'prediction': model.to_color(prediction, config)}

  @tf.function(input_signature=[examples], autograph=False)
  def transform_features(examples):
    return decoded(examples)

  return {'evaluate': evaluate, 'transform_features': transform_features}


# Beside the SavedModel, in the folder TF Serving leaves alone: the stage and the NetConfig the
# net was built with, so tools can rebuild it (pipeline_runner.py export).
NET_RECORD = os.path.join('assets.extra', 'instcolor_net.json')


def save(colorizer: Colorizer, path: str, signatures: Dict) -> None:
  # save_traces=False: the signatures are what gets used (stages hand weights on as .h5), and
  # tracing every layer's call for Keras re-loading tripled the export time.
  colorizer.keras_model.save(path, save_format='tf', save_traces=False, signatures=signatures)
  content = {'stage': colorizer.stage, 'net': colorizer.config.to_dict()}
  if colorizer.stage == names.FUSION:
    # Not a NetConfig field (the config's fusion_points reach stage 3 only), but the fusion
    # net's layers, hence its variables, depend on them.
    content['fusion_points'] = list(model.fusion_points_of(colorizer.keras_model))
  record = os.path.join(path, NET_RECORD)
  tf.io.gfile.makedirs(os.path.dirname(record))
  with tf.io.gfile.GFile(record, 'w') as f:
    json.dump(content, f, indent=1)


def _read_net_record(path: str) -> Dict[str, Any]:
  record = os.path.join(path, NET_RECORD)
  if not tf.io.gfile.exists(record):
    raise FileNotFoundError(f'{path} has no {NET_RECORD}: it was exported before instcolor '
                            'recorded its net; run the pipeline again to export it anew')
  with tf.io.gfile.GFile(record) as f:
    return json.load(f)


def _stage_and_net(raw: Dict[str, Any]) -> Tuple[str, NetConfig]:
  # Records written before nets could take hints.
  return raw['stage'], NetConfig.from_dict({'hints': False, **raw['net']})


def load_net_record(path: str) -> Tuple[str, NetConfig]:
  """(stage, NetConfig) of a SavedModel written by `save`."""
  return _stage_and_net(_read_net_record(path))


def resolve_saved_model(path: str) -> str:
  """A SavedModel folder; a Pusher destination holding versioned ones (the newest wins); or a
  Trainer's Model artifact (its Format-Serving folder)."""
  if tf.io.gfile.exists(os.path.join(path, 'saved_model.pb')):
    return path
  serving_dir = path_utils.serving_model_path(path)
  if tf.io.gfile.exists(os.path.join(serving_dir, 'saved_model.pb')):
    return serving_dir
  versions = sorted((int(v.rstrip('/')) for v in tf.io.gfile.listdir(path)
                     if v.rstrip('/').isdigit()), reverse=True) if tf.io.gfile.isdir(path) else []
  for version in versions:
    candidate = os.path.join(path, str(version))
    if tf.io.gfile.exists(os.path.join(candidate, 'saved_model.pb')):
      return candidate
  raise FileNotFoundError(f'no SavedModel in {path} (nor in numbered version folders under it, '
                          'nor a Trainer model\'s Format-Serving)')


# What a net's weights depend on (the rest, such as image_size, max_boxes or precision, only
# changes how they are run).
ARCHITECTURE_FIELDS = ('width', 'color_space', 'objective', 'hints')


def check_architecture(model_dir: str, net: NetConfig) -> Tuple[str, NetConfig]:
  """(stage, NetConfig) of a saved model whose weights fit `net`'s nets; a ConfigError naming
  every field that differs otherwise."""
  stage, saved = load_net_record(model_dir)
  differ = [f'{f} {getattr(saved, f)!r} there, {getattr(net, f)!r} here'
            for f in ARCHITECTURE_FIELDS if getattr(saved, f) != getattr(net, f)]
  if differ:
    raise ConfigError(f'{model_dir} holds nets of another architecture: {"; ".join(differ)} '
                      '(set these fields to the model\'s, or start from scratch)')
  return stage, saved


def _fusion_points(raw: Dict[str, Any]) -> Tuple[str, ...]:
  # A record written before they were recorded names none: all 13 then, the default (saved_nets
  # names a model that was fused at fewer: its variables do not fit).
  return tuple(raw.get('fusion_points', names.FUSION_POINTS))


def recorded_fusion_points(model_dir: str) -> Tuple[str, ...]:
  """The fusion points of a fusion stage's SavedModel written by `save`."""
  return _fusion_points(_read_net_record(model_dir))


def saved_nets(model_dir: str) -> Tuple[NetConfig, Dict[str, object]]:
  """The nets of a SavedModel written by `save`, rebuilt in float32 with its weights:
  (NetConfig, {'full': ColorNet} for a full stage's model, {'instance': ColorNet} for an instance
  stage's, {'full', 'instance': ColorNet, 'fusion': FusionNet} for a fusion stage's)."""
  raw = _read_net_record(model_dir)  # once: it may lie on gs://
  stage, config = _stage_and_net(raw)
  config = dataclasses.replace(config, precision='float32')
  if stage == names.FUSION:
    full, instance = model.ColorNet(config, 'full'), model.ColorNet(config, 'instance')
    fusion = model.FusionNet(config, full, instance, _fusion_points(raw))
    nets, saved = {'full': full, 'instance': instance, 'fusion': fusion}, fusion.model
  else:
    net = model.ColorNet(config, stage)
    nets, saved = {stage: net}, net.model
  # The SavedModel's variables are a checkpoint of the Keras model it was saved from, so a net
  # built the same way reads them (its other objects, the Transform graph, are not wanted here).
  # Every weight of the rebuilt nets must come from it: none left at its random initial value.
  try:
    status = saved.load_weights(os.path.join(model_dir, 'variables', 'variables'))
    status.expect_partial().assert_existing_objects_matched()
  except (AssertionError, ValueError) as e:
    raise ValueError(f'{model_dir}: its variables do not fit the {stage} nets its record '
                     f'{NET_RECORD} describes: {e}') from e
  if stage == names.FUSION:
    # The instance blocks (and hint convs) after the last fusion point never ran in stage 3, so
    # the model does not hold them: the full net's (as for the instance head), not random weights.
    after = names.FUSION_POINTS[names.FUSION_POINTS.index(fusion.last_point) + 1:]
    for point in after:
      instance.blocks[point].set_weights(full.blocks[point].get_weights())
      if point in instance.hint_convs:
        instance.hint_convs[point].set_weights(full.hint_convs[point].get_weights())
  return config, nets


def export(colorizer: Colorizer, tf_transform_output: tft.TFTransformOutput, path: str) -> None:
  """A stage's serving SavedModel with every signature of the module docstring."""
  save(colorizer, path, {**colorizer.image_signatures(),
                         **evaluation_signatures(colorizer, tf_transform_output)})
