"""A larger VOC folder for benchmarks, derived from the real shared photos (and saying so).

../shared/data holds 9 real annotated photos: enough for tests, not for throughput figures. This
tiles them into N images by random crops (60-100% of each side) and horizontal flips, resized to
VOC's typical 500 px long side, with the boxes cropped, flipped and re-clipped the same way.
"""
from __future__ import annotations

import os
import random
import xml.etree.ElementTree as ET  # our own trusted files; ingestion uses defusedxml

from PIL import Image

from pipeline import configs

SHARED_VOC = os.path.join(configs.REPO_ROOT, '..', 'shared', 'data', 'photos', 'VOCdevkit',
                          'VOC2007')
LONG_SIDE = 500


def source_voc() -> str:
  """The shared real photos when present, else the bundled sample (same photos and more)."""
  return SHARED_VOC if os.path.isdir(SHARED_VOC) else configs.SAMPLE_DATA_ROOT


def read_objects(xml_path):
  """(class, difficult, [xmin, ymin, xmax, ymax]) of each <object> in a VOC annotation."""
  root = ET.parse(xml_path).getroot()
  for obj in root.findall('object'):
    box = obj.find('bndbox')
    yield (obj.findtext('name'), obj.findtext('difficult', '0'),
           [float(box.findtext(k)) for k in ('xmin', 'ymin', 'xmax', 'ymax')])


def make_volume_voc(num_images: int, out_dir: str, seed: int = 0) -> str:
  """Writes out_dir/{JPEGImages,Annotations,ImageSets/Main}; 10% of the ids go to val.txt."""
  source = source_voc()
  rng = random.Random(seed)
  ids = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(source, 'JPEGImages')))
  for folder in ('JPEGImages', 'Annotations', 'ImageSets/Main'):
    os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
  names = []
  for i in range(num_images):
    src = ids[i % len(ids)]
    photo = Image.open(os.path.join(source, 'JPEGImages', f'{src}.jpg')).convert('RGB')
    w, h = photo.size
    cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    flip = rng.random() < 0.5
    scale = LONG_SIDE / max(cw, ch)
    out = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((round(cw * scale), round(ch * scale)))
    if flip:
      out = out.transpose(Image.FLIP_LEFT_RIGHT)
    name = f'{i:06d}_{src}'
    names.append(name)
    out.save(os.path.join(out_dir, 'JPEGImages', f'{name}.jpg'), quality=90)
    objects = ''
    for cls, difficult, (bx0, by0, bx1, by1) in read_objects(
        os.path.join(source, 'Annotations', f'{src}.xml')):
      bx0, bx1 = max(bx0 - x0, 0) * scale, min(bx1 - x0, cw) * scale
      by0, by1 = max(by0 - y0, 0) * scale, min(by1 - y0, ch) * scale
      if bx1 - bx0 < 8 or by1 - by0 < 8:
        continue
      if flip:
        bx0, bx1 = out.width - bx1, out.width - bx0
      objects += (f'<object><name>{cls}</name><difficult>{difficult}</difficult><bndbox>'
                  f'<xmin>{bx0:.0f}</xmin><ymin>{by0:.0f}</ymin><xmax>{bx1:.0f}</xmax>'
                  f'<ymax>{by1:.0f}</ymax></bndbox></object>')
    with open(os.path.join(out_dir, 'Annotations', f'{name}.xml'), 'w') as f:
      f.write(f'<annotation><filename>{name}.jpg</filename><size><width>{out.width}</width>'
              f'<height>{out.height}</height><depth>3</depth></size>{objects}</annotation>')
  val = set(names[::10])
  for split, members in (('train', [n for n in names if n not in val]), ('val', sorted(val))):
    with open(os.path.join(out_dir, 'ImageSets', 'Main', f'{split}.txt'), 'w') as f:
      f.write(''.join(f'{n}\n' for n in members))
  return out_dir
