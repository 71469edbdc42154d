"""colorize: run a pushed instcolor SavedModel on image files, with boxes from a file, a
tensorflow_hub detector (TF Object Detection API outputs) or none (full-image path)."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

Boxes = np.ndarray  # [N, 4] normalised (ymin, xmin, ymax, xmax)


def resolve_model_dir(path: str) -> str:
  """A SavedModel folder, or a Pusher destination holding versioned ones (newest wins)."""
  if tf.io.gfile.exists(os.path.join(path, 'saved_model.pb')):
    return path
  versions = sorted((int(v.rstrip('/')) for v in tf.io.gfile.listdir(path)
                     if v.rstrip('/').isdigit()), reverse=True) if tf.io.gfile.isdir(path) else []
  for version in versions:
    candidate = os.path.join(path, str(version))
    if tf.io.gfile.exists(os.path.join(candidate, 'saved_model.pb')):
      return candidate
  raise FileNotFoundError(f'no SavedModel in {path} (nor in numbered version folders under it)')


def load_boxes_file(path: str) -> Dict[str, Boxes]:
  """JSON {"image name or path": [[ymin, xmin, ymax, xmax], ...]} (normalised)."""
  with tf.io.gfile.GFile(path) as f:
    raw = json.load(f)
  boxes = {}
  for key, rows in raw.items():
    array = np.asarray(rows, np.float32).reshape(-1, 4)
    boxes[key] = array
  return boxes


class HubDetector:
  """A tensorflow_hub detector with the TF Object Detection API outputs."""

  def __init__(self, handle: str, score_threshold: float = 0.7, max_detections: int = 8):
    import tensorflow_hub as hub  # imported only when a detector is asked for
    self._detector = hub.load(handle)
    self.score_threshold = score_threshold
    self.max_detections = max_detections

  def __call__(self, image_bytes: bytes) -> Boxes:
    pixels = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    outputs = self._detector(pixels[tf.newaxis])
    boxes = np.asarray(outputs['detection_boxes'])[0].reshape(-1, 4)
    scores = np.asarray(outputs['detection_scores'])[0].reshape(-1)
    keep = np.argsort(-scores)[:self.max_detections]
    keep = keep[scores[keep] >= self.score_threshold]
    return boxes[keep].astype(np.float32)


def colorize_files(model_dir: str, images: Sequence[str], out_dir: str,
                   boxes: Optional[Dict[str, Boxes]] = None,
                   detector: Optional[HubDetector] = None) -> List[str]:
  """Writes <out_dir>/<stem>.png for each image; returns the written paths."""
  serving = tf.saved_model.load(resolve_model_dir(model_dir)).signatures['serving_default']
  tf.io.gfile.makedirs(out_dir)
  written = []
  for path in images:
    with tf.io.gfile.GFile(path, 'rb') as f:
      image_bytes = f.read()
    if detector is not None:
      image_boxes, source = detector(image_bytes), 'detector'
    elif boxes is not None:
      image_boxes = boxes.get(path, boxes.get(os.path.basename(path), np.zeros([0, 4], np.float32)))
      source = 'boxes file'
    else:
      image_boxes, source = np.zeros([0, 4], np.float32), 'none'
    outputs = serving(images=tf.constant([image_bytes]),
                      boxes=tf.constant(image_boxes[np.newaxis], tf.float32))
    target = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + '.png')
    with tf.io.gfile.GFile(target, 'wb') as f:
      f.write(outputs['colorized'].numpy()[0])
    print(f'{path} -> {target} ({len(image_boxes)} boxes from {source})', flush=True)
    written.append(target)
  return written
