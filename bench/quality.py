"""Colour quality: train a preset on the raccoon photos, then score it on their val split.

  .venv/bin/python bench/quality.py [--preset cpu] [--set key=value ...] [--pipeline-root DIR]

Runs the whole pipeline (pipeline_runner.py run) on ../shared/data/raccoon (its own 160/40 split),
then `evaluate` on the val split with the fusion Trainer's serving model (blessed or not): gray
baseline, full-image and fusion with the annotated boxes, at each photo's full resolution. Prints
the table and the wall time of each part. A second call with the same root and settings reuses the
trained models from the cache (only the scoring runs again).
"""
from __future__ import annotations

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
import pipeline  # noqa: F401,E402  (sets the process up before TensorFlow loads)

import argparse
import subprocess
import tempfile
import time

RACCOON = os.path.join(REPO_ROOT, '..', 'shared', 'data', 'raccoon', 'VOCdevkit', 'VOC2007')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--preset', default='cpu')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE')
  parser.add_argument('--data-dir', default=RACCOON)
  parser.add_argument('--pipeline-root', default=os.path.join(tempfile.gettempdir(),
                                                              'instcolor_quality'))
  args = parser.parse_args()
  run = [sys.executable, os.path.join(REPO_ROOT, 'pipeline_runner.py'), 'run', '--preset',
         args.preset, '--data-dir', args.data_dir, '--pipeline-root', args.pipeline_root,
         *[f'--set={pair}' for pair in args.set]]
  start = time.perf_counter()
  subprocess.run(run, check=True)
  trained = time.perf_counter()

  from tfx.utils import path_utils

  from tools import evaluate, metadata
  from trainer import names

  store = metadata.open_store(args.pipeline_root)
  fusion = metadata.latest_outputs(store, names.TRAINERS[names.FUSION])['model'][0].uri
  out = os.path.join(args.pipeline_root, 'quality')
  result = evaluate.evaluate(path_utils.serving_model_path(fusion), args.data_dir, out)
  scored = time.perf_counter()
  print(f'\npreset {args.preset} {" ".join(args.set)}, trained on the train split, scored on '
        f'the val split ({os.cpu_count()} cores)')
  print(evaluate.format_table(result))
  print(f'wall time: pipeline {(trained - start) / 60:.1f} min, evaluate '
        f'{(scored - trained) / 60:.1f} min; metrics, CSV and gallery in {out}')


if __name__ == '__main__':
  main()
