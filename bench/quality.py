"""Colour quality: train a preset on shared photos, then score it on their val split.

  .venv/bin/python bench/quality.py [--preset cpu] [--set key=value ...] [--pipeline-root DIR]
                                   [--data imagenet1k|raccoon | --data-dir DIR] [--baseline DIR]
                                   [--detector FILE|HANDLE [--score-threshold 0.5]]
                                   [--hints 0,1,2,5,10,20] [--no-prior]

Runs the whole pipeline (pipeline_runner.py run) on ../shared/data/imagenet1k (827 varied photos,
727 train / 100 val, detector boxes) or, with --data raccoon, ../shared/data/raccoon (its own
160/40 split), then `evaluate` on the val split with the fusion Trainer's serving model (blessed
or not): gray baseline, full-image and fusion with the annotated boxes (and, with --detector,
a detector's boxes), at each photo's full resolution. Prints the table and the wall time of each
part. A second call with the same root and settings reuses the trained models from the cache (only
the scoring runs again).

--baseline DIR (an earlier run's `quality` folder, or its pipeline root) adds the paired comparison
per photo: the mean PSNR difference of each variant and its standard error over the photos. On 40
photos one run against another differs by about +-0.2 to 0.3 dB of standard error, so a lever
that moves the mean less than about twice that is not distinguishable from run-to-run noise.
--hints COUNTS (a preset run with `--set hints=True`) adds evaluate's PSNR-vs-hints table; with
--baseline, the hint variants are paired too when the baseline has them.
It also compares the two runs at matched colourfulness: each variant's PSNR gain over gray at the
CF of the more colourful run, read off the other's saturation frontier (see `evaluate`), since a
lever can raise the plain gain just by giving up colour.
Last, each variant against the lightness prior at its own colourfulness (bench/priors.py: the train
split's mean ab per lightness bin, a 20-entry lookup on L): a model on or under that frontier has
learned no colour a lookup on L would not give. --no-prior skips it (about 2.5 min on imagenet1k,
kept in the quality folder for the next call).
"""
from __future__ import annotations

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
import pipeline  # noqa: F401,E402  (sets the process up before TensorFlow loads)

import argparse
import csv
import json
import math
import subprocess
import tempfile
import time
from typing import Dict, List

SHARED_DATA = os.path.join(REPO_ROOT, '..', 'shared', 'data')
DATA_SETS = {
    # 827 varied photos (one per ImageNet class), boxes from the shared COCO detector: the default.
    'imagenet1k': os.path.join(SHARED_DATA, 'imagenet1k', 'VOCdevkit', 'VOC2012'),
    # 200 raccoon photos with hand-drawn boxes: the in-domain check.
    'raccoon': os.path.join(SHARED_DATA, 'raccoon', 'VOCdevkit', 'VOC2007'),
}
PRIOR_FRONTIER_FILE = 'lightness_prior_frontier.json'


def _per_image_psnr(folder: str) -> Dict[str, Dict[str, float]]:
  """{variant: {image id: PSNR}} from an evaluate output folder (or a root holding `quality/`)."""
  path = os.path.join(folder, 'per_image.csv')
  if not os.path.exists(path):
    path = os.path.join(folder, 'quality', 'per_image.csv')
  with open(path) as f:
    rows = list(csv.DictReader(f))
  variants = [c[:-len(': psnr')] for c in rows[0] if c.endswith(': psnr')]
  return {v: {r['image_id']: float(r[f'{v}: psnr']) for r in rows} for v in variants}


def paired_comparison(run: str, baseline: str) -> str:
  """Per variant: mean PSNR difference (run - baseline) over the photos both scored, +- its
  standard error (sample standard deviation of the differences / sqrt(n))."""
  ours, theirs = _per_image_psnr(run), _per_image_psnr(baseline)
  lines = [f'paired against {baseline} (mean PSNR difference +- standard error, per photo):']
  for variant in ours:
    if variant not in theirs or variant.startswith('gray'):
      continue
    common = sorted(set(ours[variant]) & set(theirs[variant]))
    diffs = [ours[variant][i] - theirs[variant][i] for i in common]
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / max(1, len(diffs) - 1))
    lines.append(f'  {variant}: {mean:+.3f} +- {sd / math.sqrt(len(diffs)):.3f} dB '
                 f'({len(diffs)} photos)')
  return '\n'.join(lines)


def _frontiers(folder: str) -> Dict[str, List[Dict[str, float]]]:
  """{variant: saturation frontier} from an evaluate output folder (or a root holding `quality/`);
  empty for one scored before evaluate had the frontier."""
  path = os.path.join(folder, 'metrics.json')
  if not os.path.exists(path):
    path = os.path.join(folder, 'quality', 'metrics.json')
  with open(path) as f:
    return json.load(f).get('saturation_frontier', {})


def matched_colourfulness(run: str, baseline: str) -> str:
  """Per variant: both runs' PSNR gain over gray at the same colourfulness, the CF of whichever is
  more colourful unscaled (the other read off its frontier). A lever that only trades colour for
  PSNR moves the plain gain but not this one."""
  from tools import evaluate
  ours, theirs = _frontiers(run), _frontiers(baseline)
  lines = ['at matched colourfulness (PSNR gain over gray, the less colourful run\'s ab scaled):']
  for variant, frontier in ours.items():
    if variant not in theirs:
      continue
    cf = max(frontier[0]['CF'], theirs[variant][0]['CF'])
    gains = [evaluate.at_cf(f, cf) for f in (frontier, theirs[variant])]
    run_gain, base_gain = ('beyond the frontier' if g is None else f'{g:+.2f} dB' for g in gains)
    lines.append(f'  {variant} at CF {cf:.1f}: {run_gain}, baseline {base_gain}')
  return '\n'.join(lines) if len(lines) > 1 else 'the baseline has no saturation frontier'


def prior_comparison(result: Dict, data_dir: str, out: str) -> str:
  """Each variant's PSNR gain over gray against the lightness prior's (bench/priors.py: the train
  split's mean ab per lightness bin) at the variant's own colourfulness. The prior's frontier is
  kept in `out` for the next call on the same data."""
  from bench import priors
  from tools import evaluate
  path = os.path.join(out, PRIOR_FRONTIER_FILE)
  saved = {}
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
  if saved.get('data_dir') == data_dir:
    frontier = saved['frontier']
  else:
    try:
      frontier = priors.lightness_prior_frontier(*priors.read_splits(data_dir))
    except ValueError as e:
      return f'no comparison with the lightness prior: {e}'
    with open(path, 'w') as f:
      json.dump({'data_dir': data_dir, 'frontier': frontier}, f, indent=2)
  lines = ['against the lightness prior at the same colourfulness (bench/priors.py; a model '
           'that learned only "mid-tones are warm" sits on it):']
  for variant, gain in result['psnr_gain_over_gray'].items():
    cf = result['metrics'][variant]['CF']
    if cf < frontier[0]['CF']:
      lines.append(f'  {variant}: {gain:+.2f} dB at CF {cf:.1f}, less colourful than the prior '
                   f'at ab x{frontier[0]["scale"]:g} ({frontier[0]["gain"]:+.2f} dB at CF '
                   f'{frontier[0]["CF"]:.1f})')
      continue
    prior_gain = evaluate.at_cf(frontier, cf)
    prior = 'beyond its frontier' if prior_gain is None else f'{prior_gain:+.2f} dB'
    lines.append(f'  {variant}: {gain:+.2f} dB at CF {cf:.1f}, the prior {prior}')
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--preset', default='cpu')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE')
  parser.add_argument('--data', choices=sorted(DATA_SETS), default='imagenet1k',
                      help='a shared data set (default imagenet1k)')
  parser.add_argument('--data-dir', help='any VOC folder instead of --data')
  parser.add_argument('--detector', metavar='FILE|HANDLE',
                      help='also score fusion with this detector\'s boxes (evaluate --detector)')
  parser.add_argument('--score-threshold', type=float, default=0.5)
  parser.add_argument('--hints', default='', metavar='COUNTS',
                      help='hint counts to score, e.g. 0,1,2,5,10,20 (models trained with hints)')
  parser.add_argument('--pipeline-root', default=os.path.join(tempfile.gettempdir(),
                                                              'instcolor_quality'))
  parser.add_argument('--baseline', help='an earlier run\'s quality folder or pipeline root: '
                                         'adds the paired comparison per photo')
  parser.add_argument('--no-prior', action='store_true',
                      help='skip the comparison with the lightness prior (about 2.5 min on '
                           'imagenet1k the first time)')
  args = parser.parse_args()
  args.data_dir = args.data_dir or DATA_SETS[args.data]
  run = [sys.executable, os.path.join(REPO_ROOT, 'pipeline_runner.py'), 'run', '--preset',
         args.preset, '--data-dir', args.data_dir, '--pipeline-root', args.pipeline_root,
         *[f'--set={pair}' for pair in args.set]]
  start = time.perf_counter()
  subprocess.run(run, check=True)
  trained = time.perf_counter()

  from tfx.utils import path_utils

  from components import detectors
  from tools import evaluate, metadata
  from trainer import names

  store = metadata.open_store(args.pipeline_root)
  fusion = metadata.latest_outputs(store, names.TRAINERS[names.FUSION])['model'][0].uri
  out = os.path.join(args.pipeline_root, 'quality')
  detector = (detectors.load_detector(args.detector, args.score_threshold)
              if args.detector else None)
  hint_counts = [int(c) for c in args.hints.split(',') if c.strip()]
  result = evaluate.evaluate(path_utils.serving_model_path(fusion), args.data_dir, out,
                             detector=detector, hint_counts=hint_counts)
  scored = time.perf_counter()
  print(f'\npreset {args.preset} {" ".join(args.set)}, trained on the train split, scored on '
        f'the val split ({os.cpu_count()} cores)')
  print(evaluate.format_table(result))
  if args.baseline:
    print(paired_comparison(out, args.baseline))
    print(matched_colourfulness(out, args.baseline))
  if not args.no_prior:
    print(prior_comparison(result, args.data_dir, out))
  print(f'wall time: pipeline {(trained - start) / 60:.1f} min, evaluate '
        f'{(scored - trained) / 60:.1f} min; metrics, CSV and gallery in {out}')


if __name__ == '__main__':
  main()
