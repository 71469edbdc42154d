"""evaluate: score a pushed SavedModel on any VOC folder, through its serving signature only.

At each photo's full resolution, in RGB 0..255 against the photo itself:
  gray baseline   the photo's own L with ab = 0 (what "no colour" scores)
  full-image      serving_default without boxes
  fusion (truth)  serving_default with the annotation's boxes
  fusion (detector) with the boxes of a detector, when one is given
PSNR and SSIM per image (mean over images), colourfulness CF of the outputs and of the truth,
dCF = |mean CF(output) - mean CF(truth)|, instance PSNR over the pixels inside the annotated boxes
(pooled over the set), and the share of photos with boxes where fusion beats full-image inside them.
Photos the ExampleGen would reject (unreadable, gray, missing annotation, ...) are skipped, counted
and listed with the same reasons.

PSNR rewards grayish colour wherever the model is unsure, so a model can buy PSNR with
colourfulness. The saturation frontier shows the trade: the full-image and fusion outputs with their
ab scaled by each of SATURATION_SCALES (same L, kept displayable as the serving signature's
saturation input does), scored again; the PSNR gain over gray at the truth's colourfulness
(interpolated along the frontier; None when even the largest scale stays below it), one number
that desaturating cannot improve; and the scale that reaches it, the `colorize --saturation` that
gives this model the truth's colourfulness.

With hint counts (`evaluate --hints 0,1,2,5,10,20`, models trained with hints), SIGGRAPH17's
protocol: each photo gets a fixed sequence of random points (seeded by HINT_SEED and its id, so
every model sees the same), each hint the truth's mean colour under the square the model renders
for it (hints.POINT_SIZE px at its resolution); n hints are the first n. Full-image and fusion are
scored with each count; the PSNR-vs-hints table goes to the output, metrics.json (`hints`),
per_image.csv and psnr_vs_hints.png. 0 hints is the plain output.

A JPEG's EXIF orientation is applied to the truth and to the annotation's boxes (in the stored
frame, as the pipeline reads them), as the serving signature applies it to its input.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import posixpath
import zlib
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from components.voc_example_gen import voc
from components.detectors import Detector
from tools.colorize import Serving
from tools.hints_file import PhotoHints
from trainer import color, hints, metrics, model, orientation, serving

GRAY, FULL, FUSION, DETECTOR = 'gray baseline', 'full-image', 'fusion (truth boxes)', \
    'fusion (detector boxes)'
GALLERY_ROWS = 4  # photos per gallery page
PANEL_HEIGHT = 256  # pixels; each panel keeps its photo's aspect
HEADER = 24  # pixels for the column titles
COLUMNS = ('gray (L only)', 'full-image', 'fusion (truth boxes)', 'truth')
SATURATION_SCALES = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5)
HINT_SEED = 20170501  # the hint points of every photo, for every model
HINT_PLOT = 'psnr_vs_hints.png'


@dataclasses.dataclass
class Photo:
  image_id: str
  jpeg: bytes
  boxes: np.ndarray  # [N, 4] normalised, from the annotation
  truth: np.ndarray  # [H, W, 3] float RGB 0..255


def read_photos(data_dir: str, split: str):
  """(kept photos, [(id, reason, detail)] skipped), read and validated like the ExampleGen."""
  pattern = f'ImageSets/Main/{split}.txt'
  if not tf.io.gfile.exists(posixpath.join(data_dir, pattern)):
    pattern = 'JPEGImages/*'  # no list: every image of the folder
  kept, skipped = [], []
  for image_id in voc.list_split_ids(data_dir, pattern).ids:
    result = voc.ingest_image(data_dir, image_id, split)
    if result.example is None:
      skipped.append((image_id, result.reason, result.detail))
      continue
    feature = result.example.features.feature
    jpeg = feature['image/encoded'].bytes_list.value[0]
    boxes = np.stack([feature[f'image/object/bbox/{k}'].float_list.value
                      for k in ('ymin', 'xmin', 'ymax', 'xmax')], axis=-1).reshape(-1, 4)
    # The serving signature turns a photo upright by its EXIF orientation; the annotation's boxes
    # are in the stored frame, as the pipeline reads them.
    tag = orientation.exif_orientation(tf.constant(jpeg))
    truth = orientation.upright(
        tf.constant(np.asarray(Image.open(io.BytesIO(jpeg)).convert('RGB'), np.float32)), tag)
    boxes = orientation.upright_boxes(boxes.astype(np.float32), tag)
    kept.append(Photo(image_id, jpeg, boxes.numpy(), truth.numpy()))
  return kept, skipped


def gray_baseline(truth: np.ndarray) -> np.ndarray:
  l = color.lightness(truth / 255.0)
  return color.lab_to_rgb(tf.concat([l, tf.zeros_like(l), tf.zeros_like(l)], -1)).numpy() * 255.0


def _region(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
  """[H, W, 1]: 1 inside the union of the boxes."""
  if not len(boxes):
    return np.zeros([height, width, 1], np.float32)
  cover = model.box_cover(tf.constant(boxes), tf.ones([len(boxes)]), height, width)
  return tf.reduce_max(cover, axis=0).numpy()


def score(truth: np.ndarray, output: np.ndarray, region: np.ndarray) -> Dict[str, float]:
  t, o = tf.constant(truth[None]), tf.constant(output[None])
  squared = np.square(truth - output)
  return {'psnr': float(tf.image.psnr(t, o, max_val=255.0)[0]),
          'ssim': float(tf.image.ssim(t, o, max_val=255.0)[0]),
          'cf': float(metrics.colorfulness(o)[0]),
          'cf_truth': float(metrics.colorfulness(t)[0]),
          # Sums for the pooled instance PSNR.
          'region_sse': float((squared * region).sum()),
          'region_values': float(region.sum() * 3)}


def saturation_scores(truth: np.ndarray, output: np.ndarray) -> List[Dict[str, float]]:
  """PSNR and CF of `output` with its ab scaled by each of SATURATION_SCALES (its L kept)."""
  lab = color.rgb_to_lab(tf.constant(output / 255.0))
  t = tf.constant(truth[None])
  scores = []
  for scale in SATURATION_SCALES:
    # What the serving signature's saturation input gives (kept displayable, hue and L kept).
    scaled = color.lab_to_rgb(color.saturate(lab[..., :1], lab[..., 1:], scale))
    rgb = tf.round(scaled * 255.0)[None]
    scores.append({'psnr': float(tf.image.psnr(t, rgb, max_val=255.0)[0]),
                   'cf': float(metrics.colorfulness(rgb)[0])})
  return scores


def saturation_frontier(per_image: List[List[Dict[str, float]]], gray_psnr: float,
                        cf_truth: float) -> List[Dict[str, float]]:
  """One output's frontier over a set: per scale of SATURATION_SCALES, its mean PSNR gain over
  gray, mean CF and dCF, from each photo's `saturation_scores`."""
  frontier = []
  for index, scale in enumerate(SATURATION_SCALES):
    psnr = float(np.mean([scores[index]['psnr'] for scores in per_image]))
    cf = float(np.mean([scores[index]['cf'] for scores in per_image]))
    frontier.append({'scale': scale, 'gain': psnr - gray_psnr, 'CF': cf,
                     'dCF': abs(cf - cf_truth)})
  return frontier


def at_cf(frontier: List[Dict[str, float]], target_cf: float, key: str = 'gain'
          ) -> Optional[float]:
  """`key` ('gain': PSNR gain over gray; 'scale': the ab scale) where the frontier (CF rising with
  the scale) reaches target_cf, linearly interpolated between scales; the unscaled point when the
  output is already that colourful; None when even the largest scale stays below it."""
  if frontier[0]['CF'] >= target_cf:
    return frontier[0][key]
  for low, high in zip(frontier, frontier[1:]):
    if high['CF'] >= target_cf:
      share = (target_cf - low['CF']) / (high['CF'] - low['CF'])
      return low[key] + share * (high[key] - low[key])
  return None


def truth_hints(photo: Photo, count: int, image_size: int) -> PhotoHints:
  """The photo's first `count` evaluation hints: random points (seeded by HINT_SEED and the photo's
  id), each with the truth's mean sRGB under the POINT_SIZE square the model renders there."""
  rng = np.random.default_rng([HINT_SEED, zlib.crc32(photo.image_id.encode())])
  points = rng.random([count, 2]).astype(np.float32)
  height, width = photo.truth.shape[:2]
  size = min(hints.POINT_SIZE, image_size)
  rows = []
  for y, x in points:
    # The cells hints.render covers, as fractions of the frame, then as the photo's pixels.
    top, left = (np.clip(np.floor(np.array([y, x]) * image_size).astype(int) - size // 2, 0,
                         image_size - size))
    r0, r1 = int(top * height / image_size), int(np.ceil((top + size) * height / image_size))
    c0, c1 = int(left * width / image_size), int(np.ceil((left + size) * width / image_size))
    mean = photo.truth[r0:max(r1, r0 + 1), c0:max(c1, c0 + 1)].reshape(-1, 3).mean(axis=0)
    rows.append([y, x, *(mean / 255.0)])
  return PhotoHints(np.asarray(rows, np.float32).reshape(-1, 5), np.zeros([0, 4], np.float32),
                    np.zeros([0, 3], np.float32))


def hint_variant(variant: str, count: int) -> str:
  return f'{variant}, {count} hints'


def _psnr_of(sse: float, count: float) -> Optional[float]:
  return 10 * np.log10(255.0 ** 2 / (sse / count)) if count and sse else None


def _panel(rgb: np.ndarray) -> Image.Image:
  image = Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8))
  return image.resize((max(1, round(image.width * PANEL_HEIGHT / image.height)), PANEL_HEIGHT))


def _gallery_pages(rows: List[List[np.ndarray]], out_dir: str) -> List[str]:
  """PNG pages of GALLERY_ROWS photos: gray | full-image | fusion | truth."""
  paths = []
  for first in range(0, len(rows), GALLERY_ROWS):
    panels = [[_panel(p) for p in row] for row in rows[first:first + GALLERY_ROWS]]
    width = max(sum(p.width for p in row) for row in panels)
    page = Image.new('RGB', (width, HEADER + PANEL_HEIGHT * len(panels)), 'white')
    draw = ImageDraw.Draw(page)
    x = 0
    for title, panel in zip(COLUMNS, panels[0]):
      draw.text((x + 6, 6), title, fill='black')
      x += panel.width
    for r, row in enumerate(panels):
      x = 0
      for panel in row:
        page.paste(panel, (x, HEADER + r * PANEL_HEIGHT))
        x += panel.width
    path = os.path.join(out_dir, f'gallery_{first // GALLERY_ROWS + 1:03d}.png')
    page.save(path)
    paths.append(path)
  return paths


def evaluate(model_dir: str, data_dir: str, out_dir: str, split: str = 'val',
             detector: Optional[Detector] = None, hint_counts: Sequence[int] = ()) -> Dict:
  """Writes metrics.json, per_image.csv and gallery pages to out_dir (and, with hint_counts, the
  PSNR-vs-hints plot); returns the metrics."""
  serve = Serving(model_dir)
  hint_counts = sorted(set(hint_counts))
  if hint_counts:
    serve._hints_signature()  # a model without hints fails before any photo
    if hint_counts[0] < 0:
      raise ValueError(f'hint counts must be >= 0, got {hint_counts[0]}')
    image_size = serving.load_net_record(serve.model_dir)[1].image_size
  hinted = [(v, n) for n in hint_counts if n for v in (FULL, FUSION)]
  photos, skipped = read_photos(data_dir, split)
  if not photos:
    raise ValueError(f'no readable photo in the {split} split of {data_dir} '
                     f'({len(skipped)} skipped)')
  variants = [GRAY, FULL, FUSION] + ([DETECTOR] if detector else [])
  per_image, rows = [], []
  for index, photo in enumerate(photos):
    height, width = photo.truth.shape[:2]
    region = _region(photo.boxes, height, width)

    def colorized(boxes: np.ndarray) -> np.ndarray:
      png = serve([photo.jpeg], [boxes])[0]
      return np.asarray(Image.open(io.BytesIO(png)), np.float32)

    outputs = {GRAY: gray_baseline(photo.truth), FULL: colorized(np.zeros([0, 4], np.float32)),
               FUSION: colorized(photo.boxes)}
    if detector:
      outputs[DETECTOR] = colorized(detector(photo.jpeg))
    for variant, count in hinted:
      png = serve([photo.jpeg], [photo.boxes if variant == FUSION else np.zeros([0, 4])],
                  hints=[truth_hints(photo, count, image_size)])[0]
      outputs[hint_variant(variant, count)] = np.asarray(Image.open(io.BytesIO(png)), np.float32)
    per_image.append({'image_id': photo.image_id, 'boxes': len(photo.boxes),
                      **{v: score(photo.truth, outputs[v], region)
                         for v in variants + [hint_variant(*h) for h in hinted]},
                      'saturation': {v: saturation_scores(photo.truth, outputs[v])
                                     for v in variants[1:]}})
    rows.append([outputs[GRAY], outputs[FULL], outputs[FUSION], photo.truth])
    print(f'  [{index + 1}/{len(photos)}] {photo.image_id}', flush=True)

  table = {}
  for variant in variants:
    scores = [image[variant] for image in per_image]
    cf = float(np.mean([s['cf'] for s in scores]))
    cf_truth = float(np.mean([s['cf_truth'] for s in scores]))
    table[variant] = {
        'PSNR': float(np.mean([s['psnr'] for s in scores])),
        'SSIM': float(np.mean([s['ssim'] for s in scores])),
        'CF': cf, 'dCF': abs(cf - cf_truth),
        'instance PSNR': _psnr_of(sum(s['region_sse'] for s in scores),
                                  sum(s['region_values'] for s in scores))}
  with_boxes = [image for image in per_image if image['boxes']]
  wins = sum(image[FUSION]['region_sse'] < image[FULL]['region_sse'] for image in with_boxes)
  result = {
      'model': serve.model_dir, 'data_dir': data_dir, 'split': split,
      'images': len(photos), 'skipped': len(skipped),
      'skipped_images': [{'image_id': i, 'reason': r, 'detail': d} for i, r, d in skipped],
      'metrics': table,
      'fusion_beats_full_in_boxes': {'photos_with_boxes': len(with_boxes), 'fusion_better': wins,
                                     'share': wins / len(with_boxes) if with_boxes else None},
      'psnr_gain_over_gray': {v: table[v]['PSNR'] - table[GRAY]['PSNR'] for v in variants[1:]},
  }
  cf_truth = float(np.mean([image[GRAY]['cf_truth'] for image in per_image]))
  result['saturation_frontier'] = {}
  result['psnr_gain_at_truth_cf'] = {}
  result['saturation_at_truth_cf'] = {}
  for variant in variants[1:]:
    frontier = saturation_frontier([image['saturation'][variant] for image in per_image],
                                   table[GRAY]['PSNR'], cf_truth)
    result['saturation_frontier'][variant] = frontier
    result['psnr_gain_at_truth_cf'][variant] = at_cf(frontier, cf_truth)
    result['saturation_at_truth_cf'][variant] = at_cf(frontier, cf_truth, 'scale')
  tf.io.gfile.makedirs(out_dir)
  if hint_counts:
    result['hints'] = _hint_curves(per_image, hint_counts, table)
    result['hints']['plot'] = _plot_hint_curves(result['hints'], os.path.join(out_dir, HINT_PLOT))
  with open(os.path.join(out_dir, 'metrics.json'), 'w') as f:
    json.dump(result, f, indent=2)
  _write_csv(per_image, variants + [hint_variant(*h) for h in hinted],
             os.path.join(out_dir, 'per_image.csv'))
  result['gallery'] = _gallery_pages(rows, out_dir)
  return result


def _hint_curves(per_image: List[Dict], counts: Sequence[int], table: Dict) -> Dict:
  """{'counts', 'seed', 'point_size', variant: [{hints, PSNR, gain, CF}]} (0 hints: the plain
  output)."""
  curves = {'counts': list(counts), 'seed': HINT_SEED, 'point_size': hints.POINT_SIZE}
  gray = table[GRAY]['PSNR']
  for variant in (FULL, FUSION):
    curve = []
    for count in counts:
      key = hint_variant(variant, count) if count else variant
      psnr = float(np.mean([image[key]['psnr'] for image in per_image]))
      curve.append({'hints': count, 'PSNR': psnr, 'gain': psnr - gray,
                    'CF': float(np.mean([image[key]['cf'] for image in per_image]))})
    curves[variant] = curve
  return curves


def _plot_hint_curves(curves: Dict, path: str) -> str:
  """PSNR gain over gray against the number of hints, one line per variant (PIL, no plotting
  library), written to `path`."""
  width, height, margin = 640, 420, 60
  page = Image.new('RGB', (width, height), 'white')
  draw = ImageDraw.Draw(page)
  counts = curves['counts']
  gains = [p['gain'] for v in (FULL, FUSION) for p in curves[v]]
  low, high = min(0.0, min(gains)), max(0.5, max(gains))
  step = max(0.5, round((high - low) / 6 * 2) / 2)
  low, high = np.floor(low / step) * step, np.ceil(high / step) * step
  # x: evenly spaced counts (SIGGRAPH17 plots hints on a log-like axis).
  xs = {c: margin + i * (width - 2 * margin) / max(1, len(counts) - 1)
        for i, c in enumerate(counts)}

  def y_of(gain):
    return height - margin - (gain - low) / (high - low) * (height - 2 * margin)

  draw.line([(margin, margin // 2), (margin, height - margin),
             (width - margin // 2, height - margin)], fill='black')
  for tick in np.arange(low, high + step / 2, step):
    draw.line([(margin - 4, y_of(tick)), (width - margin // 2, y_of(tick))], fill=(225,) * 3)
    draw.text((6, y_of(tick) - 6), f'{tick:+.1f}', fill='black')
  for count, x in xs.items():
    draw.text((x - 6, height - margin + 8), str(count), fill='black')
  draw.text((width // 2 - 40, height - 24), 'hints per photo', fill='black')
  draw.text((margin, 8), 'PSNR gain over gray (dB), full resolution', fill='black')
  for row, (variant, colour) in enumerate(((FULL, (31, 119, 180)), (FUSION, (214, 39, 40)))):
    points = [(xs[p['hints']], y_of(p['gain'])) for p in curves[variant]]
    draw.line(points, fill=colour, width=2)
    for x, y in points:
      draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    legend_y = 12 + 16 * row  # top right, clear of the curves' start
    draw.line([(width - 200, legend_y + 6), (width - 176, legend_y + 6)], fill=colour, width=2)
    draw.text((width - 170, legend_y), variant, fill=colour)
  page.save(path)
  return path


def _write_csv(per_image: List[Dict], variants: Sequence[str], path: str) -> None:
  columns = ('psnr', 'ssim', 'cf', 'cf_truth')
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['image_id', 'boxes'] + [f'{v}: {c}' for v in variants for c in columns] +
                    [f'{v}: instance psnr' for v in variants])
    for image in per_image:
      writer.writerow([image['image_id'], image['boxes']] +
                      [f'{image[v][c]:.4f}' for v in variants for c in columns] +
                      [_format(_psnr_of(image[v]['region_sse'], image[v]['region_values']))
                       for v in variants])


def _format(value: Optional[float]) -> str:
  return '' if value is None else f'{value:.4f}'


def format_table(result: Dict) -> str:
  names = ('PSNR', 'SSIM', 'CF', 'dCF', 'instance PSNR')
  lines = [f"{result['images']} photos of {result['data_dir']} ({result['split']}), full "
           f"resolution, RGB 0-255; {result['skipped']} skipped", '',
           '| variant | ' + ' | '.join(names) + ' |', '|---' * (len(names) + 1) + '|']
  for variant, row in result['metrics'].items():
    lines.append(f'| {variant} | ' + ' | '.join(
        '-' if row[n] is None else f'{row[n]:.3f}' for n in names) + ' |')
  wins = result['fusion_beats_full_in_boxes']
  if wins['photos_with_boxes']:
    lines.append(f"fusion beats full-image inside the boxes on {wins['fusion_better']} of "
                 f"{wins['photos_with_boxes']} photos ({100 * wins['share']:.0f}%)")
  lines.append('PSNR gain over gray: ' + ', '.join(
      f'{v} {g:+.2f} dB' for v, g in result['psnr_gain_over_gray'].items()))
  lines += ['', 'saturation frontier: PSNR gain over gray / CF with the output ab scaled',
            '| variant | ' + ' | '.join(f'ab x {s:g}' for s in SATURATION_SCALES) + ' |',
            '|---' * (len(SATURATION_SCALES) + 1) + '|']
  for variant, frontier in result['saturation_frontier'].items():
    lines.append(f'| {variant} | ' + ' | '.join(
        f"{point['gain']:+.2f} / {point['CF']:.1f}" for point in frontier) + ' |')
  lines.append('PSNR gain over gray at the truth\'s colourfulness: ' + ', '.join(
      f'{v} ' + (f'beyond ab x {SATURATION_SCALES[-1]:g}' if g is None else f'{g:+.2f} dB')
      for v, g in result['psnr_gain_at_truth_cf'].items()))
  lines.append('saturation that reaches the truth\'s colourfulness (colorize --saturation): ' +
               ', '.join(f'{v} ' + (f'above {SATURATION_SCALES[-1]:g}' if s is None else f'{s:.2f}')
                         for v, s in result['saturation_at_truth_cf'].items()))
  if 'hints' in result:
    curves = result['hints']
    lines += ['', f"PSNR with colour hints (random points, the truth's colour; seed "
              f"{curves['seed']}): PSNR / gain over gray",
              '| hints | ' + ' | '.join((FULL, FUSION)) + ' |', '|---|---|---|']
    for index, count in enumerate(curves['counts']):
      lines.append(f'| {count} | ' + ' | '.join(
          f"{curves[v][index]['PSNR']:.3f} / {curves[v][index]['gain']:+.2f}"
          for v in (FULL, FUSION)) + ' |')
  for skipped in result['skipped_images'][:10]:
    lines.append(f"  skipped {skipped['image_id']}: {skipped['reason']}: {skipped['detail']}")
  return '\n'.join(lines)
