"""Ingest throughput: ExampleGen + Transform (LocalDagRunner, multi-process Beam) against a plain
single-process Python loop doing decode -> resize -> Lab (full frame and box crops) on the same files.

  .venv/bin/python bench/ingest.py [--images 2000] [--small 100] [--image-size 256] [--max-boxes 8]
  .venv/bin/python bench/ingest.py --detector FILE.tflite [--images 400] [--small 50]

Data: bench/voc_volume.py tiles the 9 real shared photos into --images crops/flips (see there).
Prints images/s of both, their ratio (goal >= 0.5) and the transformed bytes per example.

--detector: ExampleGen alone on the same photos as a plain folder, boxing each with the detector,
against a plain Python loop that reads each photo and runs the same TFLite interpreter on it
(decode, resize, detect; every core); goal >= 0.8 per image beyond start-up.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pipeline  # noqa: F401,E402  (sets the process up before TensorFlow loads)

import argparse
import glob
import tempfile
import time

import numpy as np
from absl import logging
from PIL import Image
from skimage import color as skcolor
from tfx import v1 as tfx

from bench.voc_volume import make_volume_voc, read_objects
from components import detectors
from pipeline import configs
from pipeline import pipeline as pipeline_module
from tools import metadata
from trainer import names


def plain_loop(voc_root: str, image_size: int, max_boxes: int) -> float:
  """Seconds for the straightforward Python version of Transform's per-image work."""
  ids = [l.strip() for split in ('train', 'val')
         for l in open(os.path.join(voc_root, 'ImageSets', 'Main', f'{split}.txt'))]
  start = time.perf_counter()
  for image_id in ids:
    photo = Image.open(os.path.join(voc_root, 'JPEGImages', f'{image_id}.jpg')).convert('RGB')
    frames = [photo.resize((image_size, image_size), Image.BILINEAR)]
    boxes = sorted((b for _, d, b in read_objects(os.path.join(voc_root, 'Annotations',
                                                           f'{image_id}.xml')) if d == '0'),
                   key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))[:max_boxes]
    frames += [photo.crop(tuple(int(v) for v in b)).resize((image_size, image_size),
                                                           Image.BILINEAR) for b in boxes]
    for frame in frames:
      skcolor.rgb2lab(np.asarray(frame, np.float32) / 255.0)
  return time.perf_counter() - start


def detector_loop(folder: str, detector_file: str) -> float:
  """Seconds for the plain Python version of ExampleGen's detection: read, then the interpreter
  (its own decode and resize) on every core."""
  detector = detectors.TFLiteDetector(detector_file, score_threshold=0.5)
  paths = sorted(glob.glob(os.path.join(folder, '*.jpg')))
  start = time.perf_counter()
  for path in paths:
    with open(path, 'rb') as f:
      detector(f.read())
  return time.perf_counter() - start


def pipeline_seconds(voc_root: str, pipeline_root: str, config,
                     with_transform: bool = True) -> dict:
  """Runs ExampleGen (-> ImportSchemaGen -> Transform); returns each executor's seconds from
  MLMD."""
  # The pipeline's own component builders, so the bench measures exactly what a run does.
  example_gen = pipeline_module.example_gen(config, voc_root)
  components = [example_gen]
  if with_transform:
    schema = pipeline_module.schema_gen(configs.SCHEMA_DIR)
    components += [schema, pipeline_module.transform(config, example_gen, schema)]
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name='instcolor_bench', pipeline_root=pipeline_root,
      components=components, enable_cache=False,
      metadata_connection_config=metadata.connection_config(pipeline_root),
      beam_pipeline_args=configs.default_beam_args()))
  store = metadata.open_store(pipeline_root)
  seconds = {}
  if not with_transform:
    execution = metadata.node_executions(store, names.EXAMPLE_GEN, 'instcolor_bench')[-1]
    return {names.EXAMPLE_GEN: (execution.last_update_time_since_epoch -
                                execution.create_time_since_epoch) / 1000}
  for node in (names.EXAMPLE_GEN, names.TRANSFORM):
    execution = metadata.node_executions(store, node, 'instcolor_bench')[-1]
    seconds[node] = (execution.last_update_time_since_epoch -
                     execution.create_time_since_epoch) / 1000
  seconds['transformed_bytes'] = sum(
      os.path.getsize(f) for f in glob.glob(os.path.join(
          metadata.latest_outputs(store, names.TRANSFORM, 'instcolor_bench')['transformed_examples'][0]
          .uri, 'Split-*', '*')))
  return seconds


def bench_detector(counts, detector_file: str, config) -> None:
  """ExampleGen boxing a plain folder against detector_loop, at two sizes (start-up removed)."""
  config = config.replace(detector=os.path.abspath(detector_file), detector_score=0.5)
  runs = {}
  for count in counts:
    with tempfile.TemporaryDirectory() as tmp:
      folder = os.path.join(make_volume_voc(count, os.path.join(tmp, 'VOC')), 'JPEGImages')
      loop = detector_loop(folder, detector_file)
      gen = pipeline_seconds(folder, os.path.join(tmp, 'pipeline'), config,
                             with_transform=False)[names.EXAMPLE_GEN]
    runs[count] = (loop, gen)
    print(f'{count:5d} photos: plain loop {count / loop:6.1f} photos/s | ExampleGen with the '
          f'detector {gen:.1f} s = {count / gen:5.1f} photos/s', flush=True)
  (loop_small, gen_small), (loop_big, gen_big) = runs[counts[0]], runs[counts[1]]
  extra = counts[1] - counts[0]
  loop_rate, gen_rate = extra / (loop_big - loop_small), extra / (gen_big - gen_small)
  print(f'ExampleGen start-up: {gen_small - counts[0] / gen_rate:.1f} s')
  print(f'per-photo rate beyond start-up: ExampleGen {gen_rate:.1f} photos/s, plain loop '
        f'{loop_rate:.1f} photos/s, ratio {gen_rate / loop_rate:.2f} (goal >= 0.8)')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--images', type=int, default=2000)
  parser.add_argument('--small', type=int, default=100,
                      help='a second, small run: the difference gives the per-image rate '
                           'without the fixed start-up cost of each Beam component')
  parser.add_argument('--image-size', type=int, default=256)
  parser.add_argument('--max-boxes', type=int, default=8)
  parser.add_argument('--detector', metavar='FILE.tflite',
                      help='bench ExampleGen boxing a plain photo folder with this detector')
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  config = configs.get_config('paper', image_size=args.image_size, max_boxes=args.max_boxes)
  if args.detector:
    print(f'data: photos tiled from the real shared photos, as a plain folder, '
          f'{os.cpu_count()} cores', flush=True)
    bench_detector((args.small, args.images), args.detector, config)
    return
  print(f'data: images tiled from the real shared photos (crops/flips, 500 px long side), '
        f'S={args.image_size}, K={args.max_boxes}, {os.cpu_count()} cores', flush=True)
  runs = {}
  for count in (args.small, args.images):
    with tempfile.TemporaryDirectory() as tmp:
      voc_root = make_volume_voc(count, os.path.join(tmp, 'VOC'))
      loop = plain_loop(voc_root, args.image_size, args.max_boxes)
      seconds = pipeline_seconds(voc_root, os.path.join(tmp, 'pipeline'), config)
    both = seconds[names.EXAMPLE_GEN] + seconds[names.TRANSFORM]
    runs[count] = (loop, both)
    print(f"{count:5d} images: plain loop {count / loop:6.1f} images/s | ExampleGen "
          f"{seconds[names.EXAMPLE_GEN]:.1f} s + Transform {seconds[names.TRANSFORM]:.1f} s = "
          f'{count / both:5.1f} images/s | '
          f"{seconds['transformed_bytes'] / count / 1024:.1f} KB per example", flush=True)
  (loop_small, pipe_small), (loop_big, pipe_big) = runs[args.small], runs[args.images]
  extra = args.images - args.small
  loop_rate, pipe_rate = extra / (loop_big - loop_small), extra / (pipe_big - pipe_small)
  print(f'fixed start-up (both components): {pipe_small - args.small / pipe_rate:.1f} s')
  print(f'per-image rate beyond start-up: pipeline {pipe_rate:.1f} images/s, '
        f'plain loop {loop_rate:.1f} images/s')
  print(f'ratio pipeline/loop: {pipe_rate / loop_rate:.2f} per image beyond start-up, '
        f'{(args.images / pipe_big) / (args.images / loop_big):.2f} end to end at '
        f'{args.images} images (goal >= 0.5)')
  print(f'float32 tensors would be '
        f'{(1 + args.max_boxes) * args.image_size ** 2 * 4 * 3 / 2 ** 20:.1f} MB per example')


if __name__ == '__main__':
  main()
