"""Training throughput of the full-image net, per precision: fed from transformed TFRecords
through the Trainer's input pipeline (trainer.data.make_dataset) against in-memory tensors of the
same shape; with --replicas N, one replica against N under tf.distribute instead.

  .venv/bin/python bench/train.py [--preset cpu] [--images 200] [--steps 40]
                                  [--precisions float32 mixed_bfloat16] [--replicas N]

Records: the Transform code (trainer.preprocessing.encode_example) applied to --images images tiled
from the real shared photos (bench/voc_volume.py), written as GZIP TFRecords like Transform's output.
Per precision (default: float32 and what `auto` picks here, when that differs) the net starts from
the same weights and trains on the same feeds; prints images/s of both feeds and their ratio (goal
>= 0.9), then each precision's PSNR on the photos after that training (RGB 0..255, the photos at
S x S) and the speed-up and PSNR difference against float32.

--replicas N (the Trainers' `distribution`, trainer/distribute.py): per precision, images/s of the
net on one device (no strategy, batch B = the preset's) against MirroredStrategy over N devices at
B per replica (global N x B), as the Trainer runs it: nets built in the strategy's scope,
synchronized batch norm, input split by distribute_dataset. Both fed from memory, so the input
pipeline does not hide the strategy's cost. On a machine with N GPUs this is the scaling (goal
>= 0.85 x N); without a GPU the CPU is split into N logical devices that share its cores, so the
ratio is the strategy's overhead only (goal >= 0.8).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pipeline  # noqa: F401,E402  (sets the process up before TensorFlow loads)

import argparse
import tempfile
import time
from typing import Dict, List

import numpy as np
import tensorflow as tf

from bench.voc_volume import make_volume_voc
from components.voc_example_gen import voc
from pipeline import configs
from trainer import data, distribute, features, metrics, model, names, preprocessing
from trainer.config import PRECISIONS


def write_transformed_records(voc_root: str, path: str, config) -> int:
  options = config.transform_options()
  encode = tf.function(lambda jpeg, boxes, difficult: preprocessing.encode_example(
      jpeg, boxes, difficult, options))
  count = 0
  with tf.io.TFRecordWriter(path, options='GZIP') as writer:
    for image_id in voc.list_split_ids(voc_root, 'ImageSets/Main/train.txt').ids:
      f = voc.ingest_image(voc_root, image_id, 'train').example.features.feature
      boxes = np.stack([f[k].float_list.value for k in features.RAW_BOX_KEYS], -1)
      out = encode(f[features.RAW_IMAGE].bytes_list.value[0],
                   boxes.reshape(-1, 4).astype(np.float32),
                   np.array(f[features.RAW_DIFFICULT].int64_list.value, np.int64))
      strings = {name: out[name].numpy() for name in (features.IMAGE, features.VIEW)
                 if name in out}
      feature = {
          **{name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
             for name, value in strings.items()},
          features.INSTANCES: tf.train.Feature(bytes_list=tf.train.BytesList(
              value=list(out[features.INSTANCES].numpy()))),
          features.BOXES: tf.train.Feature(float_list=tf.train.FloatList(
              value=out[features.BOXES].numpy().ravel())),
          features.BOX_MASK: tf.train.Feature(float_list=tf.train.FloatList(
              value=out[features.BOX_MASK].numpy())),
          features.SOURCE_ID: tf.train.Feature(bytes_list=tf.train.BytesList(
              value=[image_id.encode()])),
      }
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature))
                   .SerializeToString())
      count += 1
  return count


def images_per_second(keras_model, dataset, steps: int, batch_size: int) -> float:
  start = time.perf_counter()
  keras_model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
  return steps * batch_size / (time.perf_counter() - start)


def default_precisions() -> List[str]:
  """float32, and what `auto` picks on this machine when that is something else."""
  return list(dict.fromkeys(['float32', model.resolve_precision('auto')]))


def photo_psnr(net: model.ColorNet, pairs, config) -> float:
  """Mean PSNR (RGB 0..255) of the net's colours on (gray, target) pairs against the truth."""
  gray, target = pairs
  predicted = model.to_color(net.model.predict(gray, batch_size=16, verbose=0), config)
  truth = metrics.to_rgb255(gray, target, config.color_space)
  return float(tf.reduce_mean(tf.image.psnr(
      truth, metrics.to_rgb255(gray, predicted, config.color_space), max_val=255.0)))


def bench_precision(precision: str, config, initial_weights, from_records, in_memory, pairs,
                    args) -> Dict[str, float]:
  net_config = config.replace(precision=precision).net_config()
  batch = config.full.batch_size
  net = model.ColorNet(net_config, 'full')
  net.model.set_weights(initial_weights)
  model.compile_for_training(net.model, net_config, config.full.learning_rate)
  net.model.fit(in_memory, epochs=1, steps_per_epoch=3, verbose=0)  # build the train graph
  rates = {'records': [], 'memory': []}
  for _ in range(args.rounds):  # alternate, so drift affects both feeds alike
    rates['records'].append(images_per_second(net.model, from_records, args.steps, batch))
    rates['memory'].append(images_per_second(net.model, in_memory, args.steps, batch))
  result = {feed: float(np.median(r)) for feed, r in rates.items()}
  result['psnr'] = photo_psnr(net, pairs, net_config)
  print(f'{precision} ({model.resolve_precision(precision)}): TFRecords via trainer.data '
        f'{result["records"]:.1f} images/s, in-memory {result["memory"]:.1f} images/s (median of '
        f'{args.rounds} x {args.steps} steps), ratio {result["records"] / result["memory"]:.2f} '
        f'(goal >= 0.9); PSNR after training {result["psnr"]:.2f} dB', flush=True)
  return result


def split_devices(replicas: int) -> str:
  """Makes `replicas` devices the Trainer's 'mirrored' spreads over (call before TensorFlow
  runs anything): that many of the GPUs, or that many logical devices on the CPU."""
  gpus = tf.config.list_physical_devices('GPU')
  if gpus:
    if len(gpus) < replicas:
      raise SystemExit(f'--replicas {replicas}: this machine has {len(gpus)} GPU(s)')
    tf.config.set_visible_devices(gpus[:replicas], 'GPU')
    return f'{replicas} of {len(gpus)} GPUs'
  cpu = tf.config.list_physical_devices('CPU')[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
  return f'{replicas} logical devices on the CPU ({os.cpu_count()} cores shared)'


def bench_replicas(precision: str, config, initial_weights, pairs, args) -> float:
  """images/s of N replicas over images/s of one device, both at the preset's batch per replica."""
  net_config = config.replace(precision=precision).net_config()
  batch = config.full.batch_size
  gray, target = pairs

  def in_memory(batch_size, shard):
    del shard  # one worker
    return (tf.data.Dataset.from_tensor_slices((gray, target)).cache().shuffle(len(gray))
            .batch(batch_size, drop_remainder=True).repeat().prefetch(tf.data.AUTOTUNE))

  runs = {}
  for name, strategy in (('1 device', tf.distribute.get_strategy()),
                         (f'{args.replicas} replicas', distribute.make_strategy('mirrored'))):
    global_batch = batch * strategy.num_replicas_in_sync
    with strategy.scope():
      net = model.ColorNet(net_config, 'full')
      net.model.set_weights(initial_weights)
      model.compile_for_training(net.model, net_config, config.full.learning_rate)
    dataset = distribute.distribute_dataset(strategy, global_batch, in_memory)
    net.model.fit(dataset, epochs=1, steps_per_epoch=3, verbose=0)  # build the train graph
    runs[name] = (net.model, dataset, global_batch, distribute.describe(strategy), [])
  for _ in range(args.rounds):  # alternate, so drift affects both alike
    for keras_model, dataset, global_batch, _, rates in runs.values():
      rates.append(images_per_second(keras_model, dataset, args.steps, global_batch))
  medians = {}
  for name, (_, _, global_batch, described, rates) in runs.items():
    medians[name] = float(np.median(rates))
    print(f'{precision} ({model.resolve_precision(precision)}), {name}: {described}, batch '
          f'{global_batch}: {medians[name]:.1f} images/s (median of {args.rounds} x {args.steps} '
          f'steps)', flush=True)
  one, many = medians.values()
  goal = (f'>= {0.85 * args.replicas:.2f} (0.85 x N)' if tf.config.list_logical_devices('GPU')
          else '>= 0.8 (overhead only: the same cores)')
  print(f'{precision}: {args.replicas} replicas / 1 device = {many / one:.2f}x images/s '
        f'(goal {goal})', flush=True)
  return many / one


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--preset', default='cpu', choices=sorted(configs.PRESETS))
  parser.add_argument('--images', type=int, default=200)
  parser.add_argument('--steps', type=int, default=40)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--precisions', nargs='+', choices=PRECISIONS,
                      default=default_precisions())
  parser.add_argument('--replicas', type=int, default=1,
                      help='N > 1: one device against N replicas (see above)')
  args = parser.parse_args()
  devices = split_devices(args.replicas) if args.replicas > 1 else None
  config = configs.get_config(args.preset)
  s, batch = config.image_size, config.full.batch_size
  net_config = config.net_config()
  spec = features.transformed_feature_spec(config.transform_options())
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    voc_root = make_volume_voc(args.images, os.path.join(tmp, 'VOC'))
    records = os.path.join(tmp, 'train.gz')
    count = write_transformed_records(voc_root, records, config)
    from_records = data.make_dataset([records], spec, names.FULL, net_config, batch,
                                     training=True)
    pairs = list(data.make_dataset([records], spec, names.FULL, net_config, count,
                                   training=False))[0]
    in_memory = (tf.data.Dataset.from_tensor_slices((pairs[0], pairs[1])).cache()
                 .shuffle(count).batch(batch).repeat().prefetch(tf.data.AUTOTUNE))
    print(f'preset {args.preset}: S={s}, width {config.width}, {config.objective}, batch {batch}, '
          f'{count} records tiled from the real shared photos, {os.cpu_count()} cores',
          flush=True)
    initial = model.ColorNet(net_config, 'full').model.get_weights()  # the same start for all
    if devices:
      print(f'replicas: {devices}', flush=True)
      for precision in args.precisions:
        bench_replicas(precision, config, initial, pairs, args)
      return
    for precision in args.precisions:
      results[precision] = bench_precision(precision, config, initial, from_records, in_memory,
                                           pairs, args)
  if 'float32' in results:
    reference = results['float32']
    for precision, result in results.items():
      if precision != 'float32':
        speedup = result['records'] / reference['records']
        print(f'{precision} against float32: training {speedup:.2f}x images/s, PSNR '
              f'{result["psnr"] - reference["psnr"]:+.2f} dB')


if __name__ == '__main__':
  main()
