"""Colour priors: the reference points a trained model must beat, scored as `evaluate` scores.

  .venv/bin/python bench/priors.py [--data imagenet1k|raccoon | --data-dir DIR]
                                   [--probe vgg16_hed none ...] [--probe-size 224]

Each prior is fitted on the folder's train split and colours its val split at each photo's full
resolution, against the gray baseline (the photo's own L, ab = 0):
  mean ab            the train photos' mean ab on every pixel;
  lightness prior    the train photos' mean ab per lightness bin (a lookup of LIGHTNESS_BINS
                     entries on L: what a net learns when it learns only "mid-tones are warm");
  --probe ENCODER    a per-pixel head on the hypercolumns of a frozen VGG16 (Larsson et al. 2016):
                     its 13 convs from ENCODER (a backbone_init: vgg16_hed, a weights file, or
                     `none` for random ones) on the gray photo at --probe-size^2, conv1_2 ...
                     conv5_3 resized to the conv3_3 grid, two dense layers with dropout trained
                     under MSE on normalised ab at PROBE_SAMPLES pixels per photo, early stopping
                     on held-out train photos.
Each row: PSNR gain over gray (and its standard error over the photos), CF, dCF, the gain at the
truth's colourfulness read off the saturation frontier (`evaluate`), and the frontier itself. The
mean and lightness priors are shown at ab scales PRIOR_SCALES (per-image PSNR rewards shrinking
colour where a photo's own colour is unknown).

What it tells: a model on the lightness prior's frontier knows no more colour than a 20-entry
lookup on L; the probe says how much more frozen ImageNet features can say from this train split
in the best case (a head fitted on cached features, no augmentation, no budget).
"""
from __future__ import annotations

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
import pipeline  # noqa: F401,E402  (sets the process up before TensorFlow loads)

import argparse
import time
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from bench.quality import DATA_SETS
from tools import evaluate
from trainer import backbone, color

LIGHTNESS_BINS = 20
PRIOR_SCALES = (0.5, 1.0, 1.5)
FIT_SIZE = 128  # train photos are resized to this before fitting, so each counts the same
PROBE_SAMPLES = 256  # pixels per train photo for the probe's head
PROBE_HELD_OUT = 0.15  # share of train photos that early stopping watches
PROBE_MAX_EPOCHS = 50
SEED = 0


def lab_at(truth: np.ndarray, size: int) -> np.ndarray:
  """[size, size, 3] Lab of an RGB 0..255 photo resized (area) to size^2."""
  small = tf.image.resize(truth[None] / 255.0, [size, size], 'area')[0]
  return color.rgb_to_lab(tf.clip_by_value(small, 0.0, 1.0)).numpy()


def lightness_bin(lightness: np.ndarray) -> np.ndarray:
  """The lookup's bin of each L (0..100)."""
  return np.clip((lightness / 100.0 * LIGHTNESS_BINS).astype(int), 0, LIGHTNESS_BINS - 1)


def read_splits(data_dir: str) -> Tuple[List[evaluate.Photo], List[evaluate.Photo]]:
  """(train photos, val photos) of a VOC folder's ImageSets/Main lists; ValueError when a list is
  missing (evaluate would read every photo of the folder) or holds no readable photo."""
  splits = []
  for split in ('train', 'val'):
    if not os.path.exists(os.path.join(data_dir, 'ImageSets', 'Main', f'{split}.txt')):
      raise ValueError(f'{data_dir} has no ImageSets/Main/{split}.txt: the priors are fitted on '
                       'the train split and scored on the val split')
    photos, skipped = evaluate.read_photos(data_dir, split)
    if not photos:
      raise ValueError(f'no readable photo in the {split} split of {data_dir} '
                       f'({len(skipped)} skipped)')
    splits.append(photos)
  return splits[0], splits[1]


def fit_priors(truths: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
  """(the mean ab [2] of the photos' pixels, their mean ab per lightness bin [LIGHTNESS_BINS, 2],
  0 where a bin has none)."""
  sums, counts = np.zeros([LIGHTNESS_BINS, 2]), np.zeros(LIGHTNESS_BINS)
  for truth in truths:
    lab = lab_at(truth, FIT_SIZE).reshape(-1, 3)
    bins = lightness_bin(lab[:, 0])
    np.add.at(sums, bins, lab[:, 1:])
    np.add.at(counts, bins, 1)
  mean_ab = sums.sum(0) / max(counts.sum(), 1)
  return mean_ab.astype(np.float32), (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def with_ab(truth: np.ndarray, ab: np.ndarray) -> np.ndarray:
  """RGB 0..255 (rounded like the serving PNG) of the photo's own L with `ab` ([H, W, 2] or any
  size, resized bilinearly to the photo)."""
  height, width = truth.shape[:2]
  lightness = color.lightness(truth / 255.0)
  ab = tf.image.resize(tf.constant(ab, tf.float32)[None], [height, width], 'bilinear')[0]
  return tf.round(color.lab_to_rgb(tf.concat([lightness, ab], -1)) * 255.0).numpy()


def lightness_prior_output(truth: np.ndarray, prior: np.ndarray, scale: float = 1.0) -> np.ndarray:
  """The photo coloured by the lightness prior, its ab scaled by `scale`."""
  lightness = color.lightness(truth / 255.0).numpy()[..., 0]
  return with_ab(truth, prior[lightness_bin(lightness)] * scale)


def gray_psnrs(photos: Sequence[evaluate.Photo]) -> List[float]:
  """Each photo's PSNR with no colour (evaluate's gray baseline): what every row's gain is over,
  computed once per set rather than once per row."""
  return [evaluate.score(photo.truth, evaluate.gray_baseline(photo.truth),
                         np.zeros(photo.truth.shape[:2] + (1,), np.float32))['psnr']
          for photo in photos]


def score_set(photos: Sequence[evaluate.Photo], gray_psnr: Sequence[float],
              colorize: Callable[[int, np.ndarray], np.ndarray]) -> Dict:
  """`colorize(index, truth) -> RGB` scored on every photo like `evaluate`'s variants, against the
  photos' `gray_psnrs`: mean PSNR gain over gray with its standard error, CF, dCF, the frontier and
  the gain at the truth's CF."""
  gains, cfs, cf_truths, saturation = [], [], [], []
  for index, (photo, gray) in enumerate(zip(photos, gray_psnr, strict=True)):
    output = colorize(index, photo.truth)
    scores = evaluate.score(photo.truth, output, np.zeros(photo.truth.shape[:2] + (1,), np.float32))
    gains.append(scores['psnr'] - gray)
    cfs.append(scores['cf'])
    cf_truths.append(scores['cf_truth'])
    saturation.append(evaluate.saturation_scores(photo.truth, output))
  cf_truth = float(np.mean(cf_truths))
  frontier = evaluate.saturation_frontier(saturation, float(np.mean(gray_psnr)), cf_truth)
  return {'gain': float(np.mean(gains)), 'se': float(np.std(gains, ddof=1) / np.sqrt(len(gains))),
          'CF': float(np.mean(cfs)), 'dCF': abs(float(np.mean(cfs)) - cf_truth),
          'CF_truth': cf_truth, 'at_truth_cf': evaluate.at_cf(frontier, cf_truth),
          'frontier': frontier}


def lightness_prior_frontier(train: Sequence[evaluate.Photo], val: Sequence[evaluate.Photo]
                             ) -> List[Dict[str, float]]:
  """The lightness prior's saturation frontier on `val` from ab x0.5 to x2.5 (`scale` its ab scale,
  CF rising): what a model must beat at its own colourfulness."""
  _, prior = fit_priors([photo.truth for photo in train])
  gray = gray_psnrs(val)
  points = {}
  for base in (0.5, 1.0):  # x0.5 covers ab x0.5 ... x1.25, x1 the rest up to x2.5
    row = score_set(val, gray, lambda index, truth: lightness_prior_output(truth, prior, base))
    for point in row['frontier']:
      points.setdefault(round(base * point['scale'], 4), {**point, 'scale': base * point['scale']})
  return [points[scale] for scale in sorted(points)]


# --- the probe: a head on frozen VGG16 hypercolumns ----------------------------------------------

def _vgg16(source: str, size: int) -> keras.Model:
  """VGG16's conv1-conv5 on L_n at size^2, returning each block's last conv (conv1_2 ... conv5_3),
  with weights from `source` (backbone.load; its first conv already takes one gray channel)."""
  inputs = keras.Input([size, size, 1])
  x, outputs = inputs, []
  for block, count in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)):
    for i in range(count):
      name = f'conv{block}_{i + 1}'
      channels = backbone.VGG16_CONVS[backbone.ENCODER_LAYERS.index(name)][1]
      x = keras.layers.Conv2D(channels, 3, padding='same', activation='relu', name=name)(x)
    outputs.append(x)
    if block < 5:
      x = keras.layers.MaxPool2D()(x)
  net = keras.Model(inputs, outputs)
  if source != 'none':
    for name, (kernel, bias) in zip(backbone.ENCODER_LAYERS, backbone.load(source).convs):
      net.get_layer(name).set_weights([kernel, bias])
  return net


def _hypercolumns(net: keras.Model, lab: np.ndarray) -> np.ndarray:
  """[N, G, G, 1 + 1472] float16 on the conv3_3 grid (G = size / 4): L_n and each block's output."""
  grid = lab.shape[1] // 4
  l_norm = tf.constant(color.normalize_l(lab[..., :1]), tf.float32)
  parts = [tf.image.resize(l_norm, [grid, grid], 'area')]
  for features in net(l_norm, training=False):
    method = 'area' if features.shape[1] > grid else 'bilinear'
    parts.append(tf.image.resize(features, [grid, grid], method))
  return tf.concat(parts, -1).numpy().astype(np.float16)


def _batched_hypercolumns(net: keras.Model, labs: Sequence[np.ndarray], batch: int = 16):
  for start in range(0, len(labs), batch):
    yield start, _hypercolumns(net, np.stack(labs[start:start + batch]))


def probe(source: str, size: int, train: Sequence[evaluate.Photo],
          val: Sequence[evaluate.Photo]) -> Callable[[int, np.ndarray], np.ndarray]:
  """Fits the probe's head on `train`; returns the colorize function for `val` (by index)."""
  rng = np.random.default_rng(SEED)
  keras.utils.set_random_seed(SEED)
  net = _vgg16(source, size)
  grid = size // 4
  train_labs = [lab_at(photo.truth, size) for photo in train]
  columns, targets, owner = [], [], []
  for start, batch in _batched_hypercolumns(net, train_labs):
    for offset, hyper in enumerate(batch):
      picked = rng.choice(grid * grid, PROBE_SAMPLES, replace=False)
      ab = tf.image.resize(color.normalize_ab(train_labs[start + offset][None, ..., 1:]),
                           [grid, grid], 'area')[0].numpy()
      columns.append(hyper.reshape(grid * grid, -1)[picked])
      targets.append(ab.reshape(-1, 2)[picked])
      owner.append(np.full(PROBE_SAMPLES, start + offset))
  x, y, owner = np.concatenate(columns), np.concatenate(targets), np.concatenate(owner)
  held = owner >= int((1.0 - PROBE_HELD_OUT) * len(train))  # whole photos
  mean, std = x[~held].astype(np.float32).mean(0), x[~held].astype(np.float32).std(0) + 1e-3
  inputs = keras.Input([x.shape[1]])
  h = keras.layers.Dropout(0.25)((inputs - mean) / std)
  for units in (256, 128):
    h = keras.layers.Dense(units, activation='relu')(h)
    h = keras.layers.Dropout(0.5)(h)
  head = keras.Model(inputs, keras.layers.Dense(2)(h))
  head.compile(keras.optimizers.Adam(1e-3), 'mse')
  history = head.fit(x[~held], y[~held], batch_size=1024, epochs=PROBE_MAX_EPOCHS, verbose=0,
                     validation_data=(x[held], y[held]),
                     callbacks=[keras.callbacks.EarlyStopping(patience=3,
                                                              restore_best_weights=True)])
  trivial = float(np.mean(np.square(y[held] - y[~held].mean(0))))
  print(f'  probe {source}: {len(history.history["loss"])} epochs, held-out loss '
        f'{min(history.history["val_loss"]):.4f} (the train mean ab: {trivial:.4f})', flush=True)
  val_ab = {}
  for start, batch in _batched_hypercolumns(net, [lab_at(photo.truth, size) for photo in val]):
    flat = head.predict(batch.reshape(-1, batch.shape[-1]), batch_size=8192, verbose=0)
    for offset, ab in enumerate(flat.reshape(len(batch), grid, grid, 2)):
      val_ab[start + offset] = np.asarray(color.denormalize_ab(ab))
  return lambda index, truth: with_ab(truth, val_ab[index])


def format_row(name: str, row: Dict) -> str:
  at_truth = 'beyond ab x2.5' if row['at_truth_cf'] is None else f'{row["at_truth_cf"]:+.2f}'
  frontier = ' '.join(f'{p["gain"]:+.2f}/{p["CF"]:.1f}' for p in row['frontier'])
  return (f'| {name} | {row["gain"]:+.2f} ± {row["se"]:.2f} | {row["CF"]:.1f} | {row["dCF"]:.1f} '
          f'| {at_truth} | {frontier} |')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data', choices=sorted(DATA_SETS), default='imagenet1k')
  parser.add_argument('--data-dir',
                      help='any VOC folder with train and val splits instead of --data')
  parser.add_argument('--probe', nargs='*', default=[], metavar='ENCODER',
                      help='backbone_init sources for the hypercolumn probe (vgg16_hed, none, a '
                           'file): about 3 min each on 2 cores at 224^2 for 727 photos')
  parser.add_argument('--probe-size', type=int, default=224)
  args = parser.parse_args()
  data_dir = args.data_dir or DATA_SETS[args.data]
  if args.probe_size % 16:
    parser.error(f'--probe-size must be a multiple of 16 (VGG16 pools four times), got '
                 f'{args.probe_size}')
  for source in args.probe:
    if source != 'none':
      backbone.check_available(source)

  start = time.time()
  try:
    train, val = read_splits(data_dir)
  except ValueError as e:
    raise SystemExit(str(e)) from None
  print(f'{data_dir}: {len(train)} train, {len(val)} val photos ({time.time() - start:.0f} s)',
        flush=True)
  mean_ab, prior = fit_priors([photo.truth for photo in train])
  rows: List = []
  for scale in PRIOR_SCALES:
    rows.append((f'mean ab ×{scale:g}',
                 lambda i, t, s=scale: with_ab(t, np.broadcast_to(mean_ab * s, [1, 1, 2]))))
  for scale in PRIOR_SCALES:
    rows.append((f'lightness prior ×{scale:g}',
                 lambda i, t, s=scale: lightness_prior_output(t, prior, s)))
  for source in args.probe:
    rows.append((f'probe: frozen VGG16 from {source} at {args.probe_size}²',
                 probe(source, args.probe_size, train, val)))

  lines = ['| prior | gain over gray (dB) ± SE | CF | dCF | gain at the truth\'s CF | '
           'frontier (gain/CF at ab ×' + ', '.join(f'{s:g}' for s in evaluate.SATURATION_SCALES)
           + ') |', '|---|---|---|---|---|---|']
  gray = gray_psnrs(val)
  for name, colorize in rows:
    row = score_set(val, gray, colorize)
    lines.append(format_row(name, row))
    print(lines[-1], f'({time.time() - start:.0f} s)', flush=True)
  print(f'\n{len(val)} val photos of {data_dir} at full resolution; gray {np.mean(gray):.3f} dB, '
        f'truth CF {row["CF_truth"]:.1f}; fitted on {len(train)} train photos; '
        f'{time.time() - start:.0f} s')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
