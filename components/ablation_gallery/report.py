"""Builds the ablation table and the gallery grid from two stage SavedModels (no TFX needed)."""
from __future__ import annotations

import io
import json
import os
from typing import Dict, List

import numpy as np
import tensorflow as tf
from PIL import Image

from trainer import features, metrics, names

VARIANTS = ('gray baseline', 'full-image net', 'fusion net')
METRICS = (('PSNR', metrics.PSNR), ('SSIM', metrics.SSIM), ('CF', metrics.Colorfulness),
           ('dCF', metrics.ColorfulnessGap), ('instance PSNR', metrics.InstancePSNR))


def read_examples(examples_uri: str, split: str) -> List[bytes]:
  # tf.io.gfile: the Examples may live on gs:// (Vertex) as well as on local disk.
  files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, f'Split-{split}', '*.gz')))
  return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type='GZIP')]


def evaluate_variants(serialized: List[bytes], full_model_dir: str, fusion_model_dir: str,
                      color_space: str) -> Dict[str, np.ndarray]:
  """label + the three predictions, same images; predictions in the network's colour space."""
  examples = tf.constant(serialized)
  fusion = tf.saved_model.load(fusion_model_dir).signatures
  full = tf.saved_model.load(full_model_dir).signatures
  decoded = fusion['transform_features'](examples=examples)
  label = decoded['label'].numpy()
  channels = features.target_channels(color_space)
  gray_prediction = np.zeros(label.shape[:-1] + (channels,), np.float32)
  if color_space == names.RGB:  # the gray baseline in RGB: every channel = the lightness
    gray_rgb = metrics.to_rgb255(label[..., :1], np.zeros_like(label[..., 1:3]), names.LAB)
    gray_prediction = gray_rgb.numpy() / 127.5 - 1.0
  return {'label': label,
          'gray baseline': gray_prediction,
          'full-image net': full['evaluate'](examples=examples)['prediction'].numpy(),
          'fusion net': fusion['evaluate'](examples=examples)['prediction'].numpy()}


def ablation_table(results: Dict[str, np.ndarray], color_space: str) -> Dict[str, Dict[str, float]]:
  table = {}
  for variant in VARIANTS:
    row = {}
    for name, metric_class in METRICS:
      metric = metric_class(color_space=color_space)
      metric.update_state(results['label'], results[variant])
      row[name] = float(metric.result())
    table[variant] = row
  return table


def markdown(table: Dict[str, Dict[str, float]], count: int) -> str:
  names = [name for name, _ in METRICS]
  lines = [f'Ablation on {count} eval images (RGB 0-255; CF = colourfulness, dCF = |CF(pred) - '
           'CF(truth)|, instance PSNR inside the ground-truth boxes)', '',
           '| variant | ' + ' | '.join(names) + ' |', '|---' * (len(names) + 1) + '|']
  for variant, row in table.items():
    lines.append(f'| {variant} | ' + ' | '.join(f'{row[n]:.3f}' for n in names) + ' |')
  return '\n'.join(lines) + '\n'


def gallery(results: Dict[str, np.ndarray], color_space: str, count: int) -> bytes:
  """PNG grid, one row per image: gray input | gray baseline | full net | fusion net | truth."""
  label = results['label'][:count]
  gray = label[..., :1]
  channels = features.target_channels(color_space)
  columns = [metrics.to_rgb255(gray, np.zeros_like(label[..., 1:3]), names.LAB)]
  for variant in VARIANTS:
    columns.append(metrics.to_rgb255(gray, results[variant][:count], color_space))
  columns.append(metrics.to_rgb255(gray, label[..., 1:1 + channels], color_space))
  rows = [np.concatenate([np.asarray(c[i]) for c in columns], axis=1) for i in range(len(label))]
  grid = np.clip(np.round(np.concatenate(rows, axis=0)), 0, 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(grid).save(buffer, format='PNG')
  return buffer.getvalue()


def write_report(examples_uri: str, full_model_dir: str, fusion_model_dir: str, out_dir: str,
                 color_space: str, split: str = 'val', gallery_images: int = 8) -> Dict:
  serialized = read_examples(examples_uri, split)
  if not serialized:
    raise ValueError(f'no {split} examples in {examples_uri}')
  results = evaluate_variants(serialized, full_model_dir, fusion_model_dir, color_space)
  table = ablation_table(results, color_space)
  tf.io.gfile.makedirs(out_dir)
  with tf.io.gfile.GFile(os.path.join(out_dir, 'ablation.json'), 'w') as f:
    json.dump({'split': split, 'images': len(serialized), 'metrics': table}, f, indent=2)
  with tf.io.gfile.GFile(os.path.join(out_dir, 'ablation.md'), 'w') as f:
    f.write(markdown(table, len(serialized)))
  with tf.io.gfile.GFile(os.path.join(out_dir, 'gallery.png'), 'wb') as f:
    f.write(gallery(results, color_space, gallery_images))
  return table
