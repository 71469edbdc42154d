"""Serving latency per 256x256 image, 0 and 8 boxes: the exported serving signature (JPEG bytes in,
PNG out: decoding, crops, Lab maths, upsampling included) against the bare Keras forward pass of the
same fusion net on ready tensors.

  .venv/bin/python bench/serve.py [--width 1.0] [--repeats 20]

The net is built untrained at 256^2 with the given width and exported with the Trainer's serving
code (trainer/serving.py); weight values do not change latency.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pipeline  # noqa: F401,E402  (sets the process up before TensorFlow loads)

import argparse
import io
import tempfile
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from bench.voc_volume import source_voc
from trainer import features, model, names, serving
from trainer.config import PipelineConfig

SIZE = 256
MAX_BOXES = 8


def _median_ms(fn, repeats: int) -> float:
  fn()  # warm-up (graph building)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--width', type=float, default=1.0)
  parser.add_argument('--repeats', type=int, default=20)
  args = parser.parse_args()
  config = PipelineConfig(image_size=SIZE, width=args.width, max_boxes=MAX_BOXES).net_config()
  fusion = model.FusionNet(config, model.ColorNet(config, 'full'),
                           model.ColorNet(config, 'instance'))
  photo = Image.open(os.path.join(source_voc(), 'JPEGImages', 'motorcycle_left.jpg'))
  buffer = io.BytesIO()
  photo.convert('RGB').resize((SIZE, SIZE)).save(buffer, format='JPEG', quality=95)
  image = tf.constant([buffer.getvalue()])
  boxes8 = tf.constant([[[0.05 * i, 0.05 * i, 0.5 + 0.05 * i, 0.5 + 0.05 * i]
                         for i in range(MAX_BOXES)]], tf.float32)
  forward = tf.function(lambda inputs: fusion.model(inputs, training=False), autograph=False)
  with tempfile.TemporaryDirectory() as tmp:
    # The serving signatures of trainer/serving.py (they need no Transform graph).
    colorizer = serving.Colorizer(fusion.model, names.FUSION, config)
    serving.save(colorizer, tmp, colorizer.image_signatures())
    serve = tf.saved_model.load(tmp).signatures['serving_default']
    print(f'fusion net at {SIZE}^2, width {args.width}, K={MAX_BOXES}, {os.cpu_count()} cores, '
          f'median of {args.repeats}', flush=True)
    for count, boxes in ((0, tf.zeros([1, 0, 4])), (MAX_BOXES, boxes8)):
      inputs = {features.GRAY: tf.zeros([1, SIZE, SIZE, 1]),
                features.INSTANCE_GRAY: tf.zeros([1, MAX_BOXES, SIZE, SIZE, 1]),
                features.BOXES: boxes8,
                features.BOX_MASK: tf.sequence_mask([count], MAX_BOXES, dtype=tf.float32)}
      served = _median_ms(lambda: serve(images=image, boxes=boxes), args.repeats)
      bare = _median_ms(lambda: forward(inputs), args.repeats)
      print(f'{count} boxes: serving signature {served:.0f} ms/image, bare Keras forward '
            f'{bare:.0f} ms, ratio {served / bare:.2f} (goal <= 1.2)', flush=True)


if __name__ == '__main__':
  main()
