"""Rebuilds data/sample/VOCdevkit/VOC2007, the real-photo sample bundled with the repo.

Sources (no downloads; these machines have no internet):
* ../shared/data/photos/VOCdevkit/VOC2007: 9 real photos from the scikit-image, scikit-learn and
  matplotlib wheels with hand-drawn, visually checked VOC boxes (5 train, 4 val);
* 3 more real colour photographs from the scikit-image wheel with no VOC object in them
  (hubble_deep_field, retina resized to 700 px, ihc), re-encoded as JPEG, added to train.

  .venv/bin/python data/build_sample.py [--shared ../shared]
"""
from __future__ import annotations

import argparse
import os
import shutil

import skimage
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, 'sample', 'VOCdevkit', 'VOC2007')
EXTRA_PHOTOS = {'hubble_deep_field': 'hubble_deep_field.jpg', 'retina': 'retina.jpg',
                'ihc': 'ihc.png'}
MAX_SIDE = 700

_EMPTY_XML = """<annotation>
  <folder>VOC2007</folder>
  <filename>{name}.jpg</filename>
  <source><database>photos shipped in the scikit-image wheel</database></source>
  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>
  <segmented>0</segmented>
</annotation>
"""


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--shared', default=os.path.join(HERE, '..', '..', 'shared'))
  args = parser.parse_args()
  source = os.path.join(args.shared, 'data', 'photos', 'VOCdevkit', 'VOC2007')
  shutil.rmtree(OUT, ignore_errors=True)
  shutil.copytree(source, OUT)
  for folder, _, files in os.walk(OUT):  # the shared copy is read-only
    for name in files + ['.']:
      os.chmod(os.path.join(folder, name), 0o755 if name == '.' else 0o644)
  skimage_data = os.path.join(os.path.dirname(skimage.__file__), 'data')
  for name, filename in EXTRA_PHOTOS.items():
    image = Image.open(os.path.join(skimage_data, filename)).convert('RGB')
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    image.save(os.path.join(OUT, 'JPEGImages', f'{name}.jpg'), quality=92)
    with open(os.path.join(OUT, 'Annotations', f'{name}.xml'), 'w') as f:
      f.write(_EMPTY_XML.format(name=name, width=image.width, height=image.height))
  with open(os.path.join(OUT, 'ImageSets', 'Main', 'train.txt'), 'a') as f:
    f.write(''.join(f'{name}\n' for name in EXTRA_PHOTOS))
  print(f'wrote {OUT}')


if __name__ == '__main__':
  main()
