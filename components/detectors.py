"""Object detectors that box photos for the fusion net: a TFLite SSD file, or a tensorflow_hub
handle / SavedModel with the TF Object Detection API outputs.

Each is a callable: image bytes -> [N, 4] normalised (ymin, xmin, ymax, xmax) boxes, best first,
at most `max_detections`, each scoring at least `score_threshold`; `detect_image` does the same
for a photo already decoded (ExampleGen decodes each photo once). `load_detector` picks the kind
from the handle.
"""
from __future__ import annotations

import hashlib
import io
import os
from typing import Dict, Protocol

import numpy as np
import tensorflow as tf
from PIL import Image

Boxes = np.ndarray  # [N, 4] normalised (ymin, xmin, ymax, xmax)
class Detector(Protocol):
  """What HubDetector and TFLiteDetector are."""

  def __call__(self, image_bytes: bytes) -> Boxes:
    ...

  def detect_image(self, image: Image.Image) -> Boxes:
    ...


def _best(boxes: np.ndarray, scores: np.ndarray, score_threshold: float,
          max_detections: int) -> Boxes:
  boxes, scores = boxes.reshape(-1, 4), scores.reshape(-1)
  keep = np.argsort(-scores, kind='stable')[:max_detections]
  keep = keep[scores[keep] >= score_threshold]
  return np.clip(boxes[keep], 0.0, 1.0).astype(np.float32)


class HubDetector:
  """A tensorflow_hub handle or local SavedModel with the TF Object Detection API outputs
  (detection_boxes, detection_scores), fed the photo as uint8 [1, H, W, 3]."""

  def __init__(self, handle: str, score_threshold: float = 0.7, max_detections: int = 8):
    import tensorflow_hub as hub  # imported only when such a detector is asked for
    self._detector = hub.load(handle)
    self.score_threshold = score_threshold
    self.max_detections = max_detections

  def __call__(self, image_bytes: bytes) -> Boxes:
    return self._detect(tf.io.decode_image(image_bytes, channels=3, expand_animations=False))

  def detect_image(self, image: Image.Image) -> Boxes:
    """The same for a decoded RGB photo."""
    return self._detect(tf.constant(np.asarray(image, np.uint8)))

  def _detect(self, pixels: tf.Tensor) -> Boxes:
    outputs = self._detector(pixels[tf.newaxis])
    return _best(np.asarray(outputs['detection_boxes'])[0],
                 np.asarray(outputs['detection_scores'])[0], self.score_threshold,
                 self.max_detections)


class TFLiteDetector:
  """A TFLite SSD detector file (e.g. ../shared/models/ssd_mobilenet_v1_coco_quant/detect.tflite).

  The photo is resized to the file's own input size, aspect not kept (as such SSDs are trained),
  uint8 for quantised files, [-1, 1] floats otherwise. Outputs are found by name: the
  TFLite_Detection_PostProcess op's four (boxes, classes, scores, count), or a signature's
  detection_boxes / detection_scores. TensorFlow's own interpreter, XNNPACK on CPU.
  """

  def __init__(self, path: str, score_threshold: float = 0.7, max_detections: int = 8,
               num_threads: int | None = None):
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f'no TFLite detector file at {path}')
    with tf.io.gfile.GFile(path, 'rb') as f:
      content = f.read()
    self._interpreter = tf.lite.Interpreter(model_content=content,
                                            num_threads=num_threads or os.cpu_count())
    self._interpreter.allocate_tensors()
    self._input = self._interpreter.get_input_details()[0]
    _, self.height, self.width, channels = self._input['shape']
    if channels != 3:
      raise ValueError(f'{path}: a detector takes RGB [1, H, W, 3], this one takes '
                       f'{self._input["shape"]}')
    self._outputs = self._output_indices(path)
    self.score_threshold = score_threshold
    self.max_detections = max_detections

  def _output_indices(self, path: str) -> Dict[str, int]:
    by_name = {d['name']: d['index'] for d in self._interpreter.get_output_details()}
    post = 'TFLite_Detection_PostProcess'
    if post in by_name and f'{post}:2' in by_name:
      return {'boxes': by_name[post], 'scores': by_name[f'{post}:2']}
    for key, signature in self._interpreter.get_signature_list().items():
      if {'detection_boxes', 'detection_scores'} <= set(signature['outputs']):
        details = self._interpreter.get_signature_runner(key).get_output_details()
        return {'boxes': details['detection_boxes']['index'],
                'scores': details['detection_scores']['index']}
    raise ValueError(f'{path}: no detector outputs found (expected {post}, {post}:1..3 or a '
                     f'signature with detection_boxes and detection_scores; outputs: '
                     f'{sorted(by_name)})')

  def _pixels(self, image: Image.Image) -> np.ndarray:
    resized = np.asarray(image.resize((self.width, self.height), Image.BILINEAR))
    if self._input['dtype'] == np.uint8:
      return resized[None]
    return (resized[None].astype(np.float32) - 127.5) / 127.5

  def __call__(self, image_bytes: bytes) -> Boxes:
    return self.detect_image(Image.open(io.BytesIO(image_bytes)).convert('RGB'))

  def detect_image(self, image: Image.Image) -> Boxes:
    """The same for a decoded RGB photo."""
    self._interpreter.set_tensor(self._input['index'], self._pixels(image))
    self._interpreter.invoke()
    boxes = self._interpreter.get_tensor(self._outputs['boxes'])[0]
    scores = self._interpreter.get_tensor(self._outputs['scores'])[0]
    return _best(boxes, scores, self.score_threshold, self.max_detections)


def fingerprint(handle: str) -> str:
  """What identifies a detector in lineage: the sha256 of a file, or of a folder's files (their
  relative paths and contents, e.g. a SavedModel); a handle that is neither (a tensorflow_hub URL,
  whose versions do not change) is its own identity."""
  digest = hashlib.sha256()
  if tf.io.gfile.isdir(handle):
    for folder, _, files in sorted(tf.io.gfile.walk(handle)):
      for name in sorted(files):
        path = os.path.join(folder, name)
        digest.update(os.path.relpath(path, handle).encode('utf-8') + b'\0')
        digest.update(_file_sha256(path).encode('ascii'))
    return digest.hexdigest()
  if tf.io.gfile.exists(handle):
    return _file_sha256(handle)
  return handle


def _file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def load_detector(handle: str, score_threshold: float = 0.7, max_detections: int = 8,
                  num_threads: int | None = None) -> Detector:
  """A `.tflite` file -> TFLiteDetector (on `num_threads`, default every core); anything else
  (tensorflow_hub handle, SavedModel folder) -> HubDetector."""
  if handle.lower().endswith('.tflite'):
    return TFLiteDetector(handle, score_threshold, max_detections, num_threads)
  return HubDetector(handle, score_threshold, max_detections)
