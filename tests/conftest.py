"""Shared fixtures: the bundled real VOC sample and a VOC folder full of broken inputs built from it."""
from __future__ import annotations

import os

import pipeline  # noqa: F401  (sets the process up before TensorFlow loads)

import io
import shutil
import struct
from typing import Optional, Sequence

import numpy as np
import pytest
from PIL import Image

from pipeline import configs

SAMPLE = configs.SAMPLE_DATA_ROOT
SHARED_VOC = os.path.join(configs.REPO_ROOT, '..', 'shared', 'data', 'photos', 'VOCdevkit',
                          'VOC2007')
# 200 real photos (Dat Tran's raccoon set, 160/40 split), for tests that need more than a handful.
RACCOON_VOC = os.path.join(configs.REPO_ROOT, '..', 'shared', 'data', 'raccoon', 'VOCdevkit',
                           'VOC2007')

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<annotation><filename>&lol4;</filename></annotation>
"""


def voc_xml(filename: str, width: int, height: int, objects=()) -> str:
  body = ''.join(
      f'<object><name>{name}</name><difficult>{difficult}</difficult><truncated>0</truncated>'
      f'<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>'
      f'</object>' for name, (x0, y0, x1, y1), difficult in objects)
  return (f'<annotation><folder>VOC2007</folder><filename>{filename}</filename>'
          f'<size><width>{width}</width><height>{height}</height><depth>3</depth></size>'
          f'{body}</annotation>')


def sample_image(name: str) -> Image.Image:
  return Image.open(os.path.join(SAMPLE, 'JPEGImages', f'{name}.jpg'))


def jpeg_claiming_size(jpeg: bytes, width: int, height: int) -> bytes:
  """A real JPEG whose SOF header is patched to claim another size (a decompression bomb)."""
  data = bytearray(jpeg)
  i = 2
  while i < len(data):
    marker, length = data[i + 1], struct.unpack('>H', data[i + 2:i + 4])[0]
    if marker in (0xC0, 0xC1, 0xC2):
      data[i + 5:i + 9] = struct.pack('>HH', height, width)
      return bytes(data)
    i += 2 + length
  raise ValueError('no SOF marker')


def pytest_collection_modifyitems(config, items):
  """INSTCOLOR_TEST_ORDER=reverse runs the tests backwards: no test may depend on another's
  leftovers (scripts/test.sh runs them in file order)."""
  del config
  if os.environ.get('INSTCOLOR_TEST_ORDER') == 'reverse':
    items.reverse()


@pytest.fixture(scope='session')
def sample_voc() -> str:
  return SAMPLE


# What each broken input must become: id -> (status, reason or None).
BROKEN_CASES = {
    'good': ('kept', None),
    'corrupt': ('rejected', 'corrupt_image'),
    'truncated': ('rejected', 'corrupt_image'),
    'png_image': ('kept', None),
    'cmyk': ('kept', None),
    'gray': ('rejected', 'grayscale_image'),
    'no_xml': ('rejected', 'missing_annotation'),
    'bad_xml': ('rejected', 'malformed_annotation'),
    'laughs': ('rejected', 'unsafe_annotation'),
    'bad_boxes': ('kept', None),
    'escape': ('rejected', 'filename_outside_folder'),
    'bomb': ('rejected', 'image_too_large'),
    'no_image': ('rejected', 'missing_image'),
    '../passwd': ('rejected', 'filename_outside_folder'),
}


@pytest.fixture(scope='session')
def broken_voc(tmp_path_factory) -> str:
  """A VOC folder with one real photo per failure mode (ids in BROKEN_CASES, all in train.txt)."""
  root = str(tmp_path_factory.mktemp('broken') / 'VOC2007')
  for folder in ('JPEGImages', 'Annotations', 'ImageSets/Main'):
    os.makedirs(os.path.join(root, folder))
  photo = sample_image('astronaut')
  with open(os.path.join(SAMPLE, 'JPEGImages', 'astronaut.jpg'), 'rb') as f:
    jpeg = f.read()
  w, h = photo.size
  person = [('person', (60, 20, 430, 512), 0)]

  def write(image_id, image_bytes=None, xml=None, ext='.jpg'):
    if image_bytes is not None:
      with open(os.path.join(root, 'JPEGImages', image_id + ext), 'wb') as f:
        f.write(image_bytes)
    if xml is not None:
      with open(os.path.join(root, 'Annotations', image_id + '.xml'), 'wb') as f:
        f.write(xml if isinstance(xml, bytes) else xml.encode())

  def encoded(image, fmt, **kw):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()

  write('good', jpeg, voc_xml('good.jpg', w, h, person))
  write('good_val', jpeg, voc_xml('good_val.jpg', w, h, person))  # the val split's only image
  write('corrupt', np.random.default_rng(0).bytes(5000), voc_xml('corrupt.jpg', w, h))
  write('truncated', jpeg[:len(jpeg) // 2], voc_xml('truncated.jpg', w, h))
  write('png_image', encoded(sample_image('chelsea'), 'PNG'), voc_xml('png_image.png', 451, 300),
        ext='.png')
  write('cmyk', encoded(photo.convert('CMYK'), 'JPEG'), voc_xml('cmyk.jpg', w, h, person))
  write('gray', encoded(photo.convert('L'), 'JPEG'), voc_xml('gray.jpg', w, h))
  write('no_xml', jpeg)
  write('bad_xml', jpeg, '<annotation><object><name>person</name></annotation')
  write('laughs', jpeg, BILLION_LAUGHS)
  write('bad_boxes', jpeg, voc_xml('bad_boxes.jpg', w, h, [
      ('person', (-20, 10, 600, 300), 0),   # out of range: clipped
      ('dog', (300, 200, 100, 400), 0),     # inverted: dropped
      ('cat', (100, 100, 100, 300), 0),     # zero area: dropped
      ('unicorn', (10, 10, 50, 50), 1),     # unknown class, difficult: kept, label 0
  ]))
  write('escape', jpeg, voc_xml('../../../etc/passwd', w, h))
  write('bomb', jpeg_claiming_size(jpeg, 20000, 20000), voc_xml('bomb.jpg', 20000, 20000))
  write('no_image', None, voc_xml('no_image.jpg', w, h))
  with open(os.path.join(root, 'ImageSets', 'Main', 'train.txt'), 'w') as f:
    f.write(''.join(f'{image_id}\n' for image_id in BROKEN_CASES))
  with open(os.path.join(root, 'ImageSets', 'Main', 'val.txt'), 'w') as f:
    f.write('good_val\n')
  return root


def copy_voc(source: str, destination: str) -> str:
  shutil.copytree(source, destination)
  for folder, _, files in os.walk(destination):
    os.chmod(folder, 0o755)
    for name in files:
      os.chmod(os.path.join(folder, name), 0o644)
  return destination


def export_fusion_model(path: str, fusion_points: Optional[Sequence[str]] = None):
  """A small fusion net (32^2, width 1/8, K=3, untrained: its weights are random, its signatures
  are the Trainer's own) exported to `path` as Pusher pushes it; returns its FusionNet."""
  from trainer import model, names, serving
  from trainer.config import PipelineConfig

  config = PipelineConfig(image_size=32, width=0.125, max_boxes=3, precision='float32'
                          ).net_config()
  fusion = model.FusionNet(config, model.ColorNet(config, 'full'),
                           model.ColorNet(config, 'instance'),
                           fusion_points or names.FUSION_POINTS)
  colorizer = serving.Colorizer(fusion.model, names.FUSION, config,
                                predict=fusion.predict_real_boxes)
  serving.save(colorizer, path, colorizer.image_signatures())
  return fusion


@pytest.fixture(scope='session')
def exported_model(tmp_path_factory) -> str:
  """export_fusion_model's net, for the tools that read a pushed model."""
  path = str(tmp_path_factory.mktemp('pushed') / 'serving_model' / '1')
  export_fusion_model(path)
  return path
