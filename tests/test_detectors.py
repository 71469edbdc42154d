"""The offline TFLite detector (components/detectors.py) on real photos: it finds the sample's
people and reproduces the shared imagenet1k boxes, which were made with the same file."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from components import detectors
from pipeline import configs
from tests.conftest import SAMPLE

SHARED = os.path.join(configs.REPO_ROOT, '..', 'shared')
SSD_FILE = os.path.join(SHARED, 'models', 'ssd_mobilenet_v1_coco_quant', 'detect.tflite')
IMAGENET1K = os.path.join(SHARED, 'data', 'imagenet1k', 'VOCdevkit', 'VOC2012')


def _iou(a: np.ndarray, b: np.ndarray) -> float:
  top, left = np.maximum(a[:2], b[:2])
  bottom, right = np.minimum(a[2:], b[2:])
  inter = max(0.0, bottom - top) * max(0.0, right - left)
  area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
  return inter / (area(a) + area(b) - inter)


def _annotated_boxes(root: str, image_id: str) -> np.ndarray:
  tree = ET.parse(os.path.join(root, 'Annotations', f'{image_id}.xml')).getroot()
  width, height = (float(tree.find(f'size/{k}').text) for k in ('width', 'height'))
  boxes = [[float(o.find(f'bndbox/{k}').text) / scale
            for k, scale in (('ymin', height), ('xmin', width), ('ymax', height),
                             ('xmax', width))] for o in tree.findall('object')]
  return np.asarray(boxes, np.float32).reshape(-1, 4)


def _read(root: str, image_id: str) -> bytes:
  with open(os.path.join(root, 'JPEGImages', f'{image_id}.jpg'), 'rb') as f:
    return f.read()


@pytest.fixture(scope='module')
def ssd():
  return detectors.load_detector(SSD_FILE, score_threshold=0.5, max_detections=10)


def test_tflite_files_load_as_tflite_detectors(ssd):
  assert isinstance(ssd, detectors.TFLiteDetector)
  assert (ssd.height, ssd.width) == (300, 300)
  with pytest.raises(FileNotFoundError, match='no TFLite detector file'):
    detectors.load_detector(SSD_FILE + '.missing.tflite')


@pytest.mark.parametrize('image_id', ['astronaut', 'grace_hopper'])
def test_the_people_in_the_sample_are_found(ssd, image_id):
  person = _annotated_boxes(SAMPLE, image_id)[0]
  found = ssd(_read(SAMPLE, image_id))
  assert max(_iou(person, box) for box in found) >= 0.7


def test_boxes_agree_with_the_shared_annotations_made_by_the_same_file(ssd):
  with open(os.path.join(IMAGENET1K, 'ImageSets', 'Main', 'val.txt')) as f:
    ids = [line.strip() for line in f if line.strip()][:25]
  matches = []
  for image_id in ids:
    found = ssd(_read(IMAGENET1K, image_id))
    assert np.all((found >= 0) & (found <= 1))
    for box in _annotated_boxes(IMAGENET1K, image_id):
      matches.append(max((_iou(box, other) for other in found), default=0.0))
  assert len(matches) >= 25
  assert np.mean(np.asarray(matches) >= 0.9) >= 0.95


def test_threshold_and_count_limit_the_boxes():
  photo = _read(SAMPLE, 'grace_hopper')
  everything = detectors.load_detector(SSD_FILE, score_threshold=0.0, max_detections=10)(photo)
  assert len(everything) == 10
  assert len(detectors.load_detector(SSD_FILE, 0.0, max_detections=2)(photo)) == 2
  confident = detectors.load_detector(SSD_FILE, score_threshold=0.5)(photo)
  assert 0 < len(confident) < 10
  np.testing.assert_array_equal(confident, everything[:len(confident)])  # best first


def test_a_decoded_photo_gives_the_same_boxes_as_its_bytes(ssd):
  """ExampleGen hands the detector the photo it has decoded already (detect_image)."""
  import io

  from PIL import Image

  photo = _read(SAMPLE, 'astronaut')
  boxes = ssd(photo)
  assert len(boxes) >= 1
  np.testing.assert_array_equal(ssd.detect_image(Image.open(io.BytesIO(photo)).convert('RGB')),
                                boxes)
