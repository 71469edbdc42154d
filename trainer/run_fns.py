"""The three Trainer run_fns (full image, instance, fusion): one training routine, three stages.

Weights travel between stages as files beside the Trainer's serving model
(`<model artifact>/weights/<net>.h5`), found through the upstream Model artifacts that TFX hands in:
`fn_args.base_model` (stage 2: the full net; stage 3: the instance net) and, for stage 3, the full
Trainer's model through the FusionTrainer's `full_model` channel. `*_initial.h5` records what a
stage started from, so lineage can be checked from the artifacts alone.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from typing import Callable, Dict, Optional

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from absl import logging
from tfx import v1 as tfx

from trainer import backbone, data, distribute, model, names, rebalance, serving
from trainer.config import BACKBONE_NONE, TFLITE_OFF, TrainerOptions

# The custom_config keys of TFX's Google Cloud AI Platform Trainer extension all start with this.
VERTEX_KEY_PREFIX = 'ai_platform_'
# Training photos a pretrained encoder's batch norms are calibrated on (backbone.calibrate).
CALIBRATION_PHOTOS = 64


def _model_uri(serving_model_dir: str) -> str:
  """The Model artifact's uri for its `<uri>/Format-Serving` directory."""
  return os.path.dirname(serving_model_dir.rstrip('/'))


def _save_weights(keras_model: keras.Model, serving_model_dir: str, net: str) -> None:
  path = names.weights_file(_model_uri(serving_model_dir), net)
  tf.io.gfile.makedirs(os.path.dirname(path))
  keras_model.save_weights(path)  # h5: needs a local or fuse-mounted path, as TFX's Keras does


def _load_weights(keras_model: keras.Model, upstream_serving_dir: str, net: str,
                  stage: str) -> None:
  path = names.weights_file(_model_uri(upstream_serving_dir), net)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'{stage} stage: upstream model has no {net} weights at {path}')
  keras_model.load_weights(path)
  logging.info('%s stage: loaded %s weights from %s', stage, net, path)


def _init_encoder(full: model.ColorNet, source: str, serving_model_dir: str,
                  gray: tf.Tensor) -> None:
  """Stage 1's conv1-conv5 from pretrained VGG16 weights, calibrated on the training photos
  `gray` so that the net's batch norms do not change what they compute; what they came from
  (file and sha256) is recorded beside the weights, for lineage."""
  weights = backbone.load(source)
  backbone.assign(full, weights)
  backbone.calibrate(full, gray)
  logging.info('full stage: encoder from %s (%s, sha256 %s), calibrated on %d photos', source,
               weights.path, weights.sha256, gray.shape[0])
  path = os.path.join(_model_uri(serving_model_dir), names.WEIGHTS_DIR, names.BACKBONE_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, 'w') as f:
    json.dump(weights.record(), f, indent=1)
  _save_weights(full.model, serving_model_dir, 'full_initial')


def _init_model_nets(options: TrainerOptions, serving_model_dir: str) -> Dict[str, object]:
  """The nets of options.init_model (fine-tuning), checked against this run's architecture, and
  what they came from recorded beside the weights for lineage; {} without one."""
  if not options.init_model:
    return {}
  source = serving.resolve_saved_model(options.init_model)
  saved_stage, _ = serving.check_architecture(source, options.net)
  _, nets = serving.saved_nets(source)
  record = {'init_model': source, 'stage': saved_stage, 'sha256': _variables_sha256(source)}
  path = os.path.join(_model_uri(serving_model_dir), names.WEIGHTS_DIR, names.INIT_MODEL_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, 'w') as f:
    json.dump(record, f, indent=1)
  logging.info('%s stage: starts from the %s model %s (nets %s)', options.stage, saved_stage,
               source, sorted(nets))
  return nets


def _variables_sha256(saved_model_dir: str) -> str:
  """sha256 over a SavedModel's variable files (its weights, whatever else it holds)."""
  digest = hashlib.sha256()
  folder = os.path.join(saved_model_dir, 'variables')
  for name in sorted(tf.io.gfile.listdir(folder)):
    with tf.io.gfile.GFile(os.path.join(folder, name), 'rb') as f:
      for chunk in iter(lambda: f.read(1 << 20), b''):
        digest.update(chunk)
  return digest.hexdigest()


def _copy_net(net: model.ColorNet, blocks_from: model.ColorNet, head_from: model.ColorNet) -> None:
  for point, block in net.blocks.items():
    block.set_weights(blocks_from.blocks[point].get_weights())
  for point, conv in net.hint_convs.items():  # the hint branch belongs with the blocks
    conv.set_weights(blocks_from.hint_convs[point].get_weights())
  net.head.set_weights(head_from.head.get_weights())


def _gray_sample(items: tf.data.Dataset, count: int = CALIBRATION_PHOTOS) -> tf.Tensor:
  """The first `count` gray inputs [N,S,S,1] of a stage's (unshuffled) dataset."""
  grays, total = [], 0
  for inputs, _ in items:
    gray = data.gray_input(inputs)
    grays.append(gray)
    total += int(gray.shape[0])
    if total >= count:
      break
  return tf.concat(grays, axis=0)[:count]


def build_stage_model(fn_args: tfx.components.FnArgs, options: TrainerOptions,
                      full_model_dir: Optional[str] = None,
                      training_gray: Optional[Callable[[], tf.Tensor]] = None):
  """The stage's net built from upstream weights: (its serving Colorizer, {net name: keras model
  whose weights the stage writes}, the layers frozen with a pretrained encoder: stage 1 with
  backbone_init only); `colorizer.keras_model` is what trains. `training_gray` returns training
  photos [N,S,S,1] to calibrate a pretrained encoder on (stage 1 with backbone_init).

  With options.init_model each stage starts from that model's net of its own kind instead: stage
  1 from its full net, stage 2 from its instance net and stage 3's fusion layers from its fusion
  layers, where it has them (a full stage's model has only the first; the others then start as
  without it)."""
  stage, config, out_dir = options.stage, options.net, fn_args.serving_model_dir
  init = _init_model_nets(options, out_dir)
  if stage == names.FULL:
    full = model.ColorNet(config, 'full')
    encoder = []
    if init:
      # An instance stage's model has the same net, trained on crops.
      full.model.set_weights(init.get('full', init.get('instance')).model.get_weights())
      _save_weights(full.model, out_dir, 'full_initial')
    elif options.backbone_init != BACKBONE_NONE:
      if training_gray is None:
        raise ValueError('full stage: backbone_init needs training photos to calibrate on')
      _init_encoder(full, options.backbone_init, out_dir, training_gray())
      encoder = full.encoder_convs() + backbone.feeding_batch_norms(full)
    return serving.Colorizer(full.model, stage, config), {'full': full.model}, encoder
  if not fn_args.base_model:
    raise ValueError(f'{stage} stage needs the upstream model through {names.BASE_MODEL_KEY}')
  if stage == names.INSTANCE:
    instance = model.ColorNet(config, 'instance')
    if 'instance' in init:
      # A fusion stage's model holds its instance net's blocks only (stage 3 mixes features, never
      # the instance head's colours): the head then starts from its full net's.
      _copy_net(instance, blocks_from=init['instance'], head_from=init.get('full', init['instance']))
    else:
      _load_weights(instance.model, fn_args.base_model, 'full', stage)
    _save_weights(instance.model, out_dir, 'instance_initial')
    return serving.Colorizer(instance.model, stage, config), {'instance': instance.model}, []
  if not full_model_dir:
    raise ValueError(f'fusion stage needs the full Trainer model through the '
                     f'{names.FULL_MODEL_KEY} channel')
  full, instance = model.ColorNet(config, 'full'), model.ColorNet(config, 'instance')
  _load_weights(full.model, full_model_dir, 'full', stage)
  _load_weights(instance.model, fn_args.base_model, 'instance', stage)
  full.freeze()
  instance.freeze()
  fusion = model.FusionNet(config, full, instance, options.fusion_points)
  if 'fusion' in init:
    saved_layers = init['fusion'].fusion_layers
    for point, layer in fusion.fusion_layers.items():
      if point in saved_layers:  # a point the saved model did not fuse at starts fresh
        layer.set_weights(saved_layers[point].get_weights())
  _save_weights(fusion.model, out_dir, 'fusion_initial')
  # Serving runs the instance net on real boxes only; training always sees K slots.
  colorizer = serving.Colorizer(fusion.model, stage, config, predict=fusion.predict_real_boxes)
  return (colorizer, {'full': full.model, 'instance': instance.model, 'fusion': fusion.model},
          [])


def train_stage(fn_args: tfx.components.FnArgs, stage: str) -> None:
  # Besides the TrainerOptions fields: the full net's path, which the FusionTrainer's executor
  # adds, and the keys of a Vertex AI training job (pipeline/vertex.py), which started this one.
  custom_config = {key: value for key, value in (fn_args.custom_config or {}).items()
                   if not key.startswith(VERTEX_KEY_PREFIX)}
  full_model_dir = custom_config.pop(names.FULL_MODEL_KEY, None)
  options = TrainerOptions.from_dict(custom_config)
  if options.stage != stage:
    raise ValueError(f'run_{stage} received the custom_config of the {options.stage} stage')
  # First: a multi-worker strategy must configure TensorFlow before any other op runs.
  strategy = distribute.make_strategy(options.distribution, options.worker_timeout)
  with distribute.writer_dirs(fn_args.serving_model_dir, fn_args.model_run_dir) as (out, run):
    # Every worker trains and saves; only the chief's folders are the artifacts'.
    writer_args = copy.copy(fn_args)
    writer_args.serving_model_dir, writer_args.model_run_dir = out, run
    _train(writer_args, options, strategy, full_model_dir)
    distribute.barrier(strategy)


def _train(fn_args: tfx.components.FnArgs, options: TrainerOptions,
           strategy: tf.distribute.Strategy, full_model_dir: Optional[str]) -> None:
  stage, config, schedule = options.stage, options.net, options.schedule
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  spec = tf_transform_output.transformed_feature_spec()

  train_count = data.stage_size(data.count_examples(fn_args.train_files, spec), stage)
  if train_count == 0:
    raise ValueError(f'{stage} stage: nothing to train on in {fn_args.train_files} '
                     f'({"no boxes" if stage != names.FULL else "no images"} in the train split)')
  eval_count = data.stage_size(data.count_examples(fn_args.eval_files, spec), stage)
  # batch_size is per replica; an epoch is one pass over the data at the global batch.
  global_batch = schedule.batch_size * strategy.num_replicas_in_sync
  steps = schedule.steps_per_epoch or data.steps_for(train_count, global_batch)

  def dataset(files, training, batch_size=global_batch, shard=(1, 0)):
    return data.make_dataset(files, spec, stage, config, batch_size, training, shard=shard,
                             flip_augmentation=options.flip_augmentation,
                             min_crop_scale=options.min_crop_scale)

  def distributed(files, training):
    # Keras runs a distributed dataset for a set number of steps: the eval data then repeats, so
    # no worker's shard runs out first (the last eval batch may hold a few items twice).
    repeat = not training and not distribute.is_default(strategy)

    def per_worker(batch_size, shard):
      items = dataset(files, training, batch_size, shard)
      return items.repeat() if repeat else items

    return distribute.distribute_dataset(strategy, global_batch, per_worker)

  color_weights = None
  if options.color_rebalance:
    # The prior of this stage's own training targets (whole frames, crops or boxed frames).
    histogram = rebalance.ab_histogram(
        target for _, target in dataset(fn_args.train_files, training=False))
    color_weights = rebalance.rebalancing_weights(histogram, options.color_rebalance)
    seen = color_weights[histogram > 0]
    logging.info('%s stage: colour rebalancing %.2f from %d pixels, weights %.2f..%.2f', stage,
                 options.color_rebalance, histogram.sum(), seen.min(), seen.max())
  with strategy.scope():  # every net, the frozen ones of stage 3 too, and the optimizer
    colorizer, nets, encoder = build_stage_model(
        fn_args, options, full_model_dir,
        lambda: _gray_sample(dataset(fn_args.train_files, training=False)))
  keras_model = colorizer.keras_model
  learning_rate = model.learning_rate_schedule(schedule, schedule.epochs * steps)
  how_trained = {'strategy': distribute.describe(strategy),
                 'replicas': strategy.num_replicas_in_sync, 'global_batch': global_batch,
                 'per_replica_batch': schedule.batch_size, 'epochs': schedule.epochs,
                 'steps_per_epoch': steps, 'learning_rate': schedule.learning_rate,
                 'precision': model.resolve_precision(config.precision)}
  logging.info('%s stage: %d trainable weights, %d train items, %d epochs x %d steps, batch %d '
               '(%d per replica x %d replicas; learning rate %g, not rescaled), %s, %s, %s',
               stage, len(keras_model.trainable_weights), train_count, schedule.epochs, steps,
               global_batch, schedule.batch_size, strategy.num_replicas_in_sync,
               schedule.learning_rate, how_trained['strategy'], how_trained['precision'],
               config.objective)
  train_data = distributed(fn_args.train_files, training=True)
  eval_data = distributed(fn_args.eval_files, training=False) if eval_count else None
  eval_steps = None if distribute.is_default(strategy) else data.steps_for(eval_count, global_batch)
  tensorboard = keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq='epoch')
  history = {}
  # Phases of epochs: the pretrained encoder frozen for its first epochs (stage 1), then all.
  frozen = options.freeze_backbone_epochs
  phases = [(0, frozen, True), (frozen, schedule.epochs, False)]
  for first_epoch, end_epoch, freeze_encoder in phases:
    if first_epoch == end_epoch:
      continue
    for layer in encoder:
      layer.trainable = not freeze_encoder
    # Keras wants a compile after trainable flags change; the new optimizer counts steps from 0,
    # so the learning-rate schedule is offset to continue where the last phase stopped.
    with strategy.scope():
      model.compile_for_training(keras_model, config,
                                 model.offset_schedule(learning_rate, first_epoch * steps),
                                 color_weights)
    logging.info('%s stage: epochs %d-%d%s', stage, first_epoch + 1, end_epoch,
                 ' with the pretrained encoder frozen' if freeze_encoder else '')
    try:
      fitted = keras_model.fit(train_data, initial_epoch=first_epoch, epochs=end_epoch,
                               steps_per_epoch=steps, validation_data=eval_data,
                               validation_steps=eval_steps, callbacks=[tensorboard], verbose=2)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as e:
      raise distribute.WorkerLost(
          distribute.lost_worker_message(e, stage, options.worker_timeout)) from e
    for key, values in fitted.history.items():
      history.setdefault(key, []).extend(float(v) for v in values)
  # A block with some layers frozen lists its weights trainable first: saved like that, its .h5
  # would not load into the next stage's (all trainable) net.
  for layer in encoder:
    layer.trainable = True
  for net, net_model in nets.items():
    _save_weights(net_model, fn_args.serving_model_dir, net)
  weights_dir = os.path.join(_model_uri(fn_args.serving_model_dir), names.WEIGHTS_DIR)
  for name, record in ((names.HISTORY_FILE, history), (names.TRAINING_FILE, how_trained)):
    with tf.io.gfile.GFile(os.path.join(weights_dir, name), 'w') as f:
      json.dump(record, f)
  serving.export(colorizer, tf_transform_output, fn_args.serving_model_dir)
  if options.tflite_export != TFLITE_OFF:
    _export_tflite(fn_args.serving_model_dir, options.tflite_export,
                   dataset(fn_args.eval_files if eval_count else fn_args.train_files,
                           training=False, batch_size=1))


def _export_tflite(serving_model_dir: str, quantize: str, items: tf.data.Dataset) -> None:
  """The serving model as a TFLite file inside it (Pusher pushes the two together), checked on
  real items of the stage's data."""
  from tools import export_tflite  # the converter and LiteRT: only where a file is asked for
  logging.info('fusion stage: writing the TFLite file (quantization %s)', quantize)
  record = export_tflite.export_into(
      serving_model_dir, quantize, ({k: v.numpy() for k, v in inputs.items()}
                                    for inputs, _ in items))
  logging.info('fusion stage: wrote %s in %.0f s',
               export_tflite.describe(record, serving_model_dir), record['seconds'])


def run_full(fn_args: tfx.components.FnArgs) -> None:
  """Stage 1: the full-image net on whole frames."""
  train_stage(fn_args, names.FULL)


def run_instance(fn_args: tfx.components.FnArgs) -> None:
  """Stage 2: the same net, initialised from stage 1, on instance crops."""
  train_stage(fn_args, names.INSTANCE)


def run_fusion(fn_args: tfx.components.FnArgs) -> None:
  """Stage 3: both colour nets frozen, the fusion weight generators trained."""
  train_stage(fn_args, names.FUSION)
