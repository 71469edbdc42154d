"""Training on plain photo folders: the ExampleGen executor boxes real photos with the shared TFLite
detector at ingest (the same boxes as the shared imagenet1k annotations, which that file made),
VOC images missing their annotation are boxed instead of rejected, and the report, the artifact's
lineage properties and the cache fingerprint follow."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import pipeline_runner
from components import detectors
from components.voc_example_gen import component, report as ingest_report, voc
from tests.conftest import copy_voc
from tests.test_detectors import IMAGENET1K, SSD_FILE, _annotated_boxes, _iou
from tests.test_voc_example_gen import _feature, _local_fingerprint, _read_split, _run_executor
from trainer.config import PipelineConfig

# The shared annotations were made by SSD_FILE at score 0.5 (../shared/data/imagenet1k/README.md).
DETECTING = PipelineConfig(detector=SSD_FILE, detector_score=0.5, max_boxes=10).ingest_options()


def _val_ids(count: int):
  with open(os.path.join(IMAGENET1K, 'ImageSets', 'Main', 'val.txt')) as f:
    return [line.strip() for line in f if line.strip()][:count]


@pytest.fixture(scope='module')
def photo_folder(tmp_path_factory) -> dict:
  """A few real photos in a nested folder without any VOC structure: relative path -> the id of
  the shared imagenet1k photo it is a copy of. Also a hidden folder and a text file to skip."""
  root = tmp_path_factory.mktemp('photos')
  placed = {}
  for i, image_id in enumerate(_val_ids(16)):
    relative = (f'trip {i % 3}/day_{i % 2}/{image_id}.jpg' if i % 4 else f'{image_id}.JPG')
    os.makedirs(os.path.dirname(root / relative) or root, exist_ok=True)
    shutil.copy(os.path.join(IMAGENET1K, 'JPEGImages', f'{image_id}.jpg'), root / relative)
    placed[relative] = image_id
  os.makedirs(root / '.thumbnails')
  shutil.copy(os.path.join(IMAGENET1K, 'JPEGImages', f'{_val_ids(1)[0]}.jpg'),
              root / '.thumbnails' / 'skip.jpg')
  (root / 'notes.txt').write_text('not a photo')
  return {'root': str(root), 'photos': placed}


def test_every_photo_of_the_tree_is_listed_by_its_relative_path(photo_folder):
  assert voc.list_photos(photo_folder['root']) == sorted(photo_folder['photos'])
  assert not voc.is_voc_folder(photo_folder['root'])


def test_a_plain_folder_is_boxed_by_the_detector_like_the_shared_annotations(photo_folder, tmp_path):
  root = photo_folder['root']
  input_config, output_config = component.split_configs(root)
  assert input_config.splits[0].pattern == voc.PLAIN_PATTERN and output_config is not None
  examples = _run_executor(root, str(tmp_path / 'out'), input_config, output_config,
                           ingest_options=DETECTING)
  ingested = _read_split(examples.uri, 'train') + _read_split(examples.uri, 'val')
  assert sorted(_feature(e, 'image/source_id')[0].decode() for e in ingested) == sorted(
      photo_folder['photos'])
  matches, total_boxes = [], 0
  for example in ingested:
    image_id = photo_folder['photos'][_feature(example, 'image/source_id')[0].decode()]
    found = np.stack([_feature(example, f'image/object/bbox/{k}')
                      for k in ('ymin', 'xmin', 'ymax', 'xmax')], axis=-1).reshape(-1, 4)
    total_boxes += len(found)
    for box in _annotated_boxes(IMAGENET1K, image_id):
      matches.append(max((_iou(box, other) for other in found), default=0.0))
  assert len(matches) >= 10
  assert np.mean(np.asarray(matches) >= 0.9) >= 0.95

  report = ingest_report.read_report(examples.uri)
  assert report['kept'] == report['total'] == len(photo_folder['photos'])
  assert report['boxes_by_source'] == {voc.FROM_ANNOTATION: 0, voc.FROM_DETECTOR: total_boxes}
  assert f'{total_boxes} from the detector' in ingest_report.format_summary(report)
  # Lineage: what boxed the photos, by content.
  assert examples.get_string_custom_property('ingest_detector') == SSD_FILE
  assert examples.get_string_custom_property(
      'ingest_detector_sha256') == detectors.fingerprint(SSD_FILE)
  assert len(detectors.fingerprint(SSD_FILE)) == 64
  assert examples.get_int_custom_property('ingest_boxes_detector') == total_boxes


def test_voc_images_missing_their_annotation_are_boxed_not_dropped(sample_voc, tmp_path):
  root = copy_voc(sample_voc, str(tmp_path / 'VOC'))
  os.remove(os.path.join(root, 'Annotations', 'astronaut.xml'))
  input_config, _ = component.split_configs(root)
  without = ingest_report.read_report(_run_executor(root, str(tmp_path / 'a'), input_config).uri)
  assert {r['image_id']: r['reason'] for r in without['rejections']} == {
      'astronaut': voc.MISSING_ANNOTATION}

  examples = _run_executor(root, str(tmp_path / 'b'), input_config, ingest_options=DETECTING)
  report = ingest_report.read_report(examples.uri)
  assert report['rejected'] == 0 and report['kept'] == without['kept'] + 1
  assert report['boxes_by_source'][voc.FROM_ANNOTATION] == without['boxes']
  assert report['boxes_by_source'][voc.FROM_DETECTOR] >= 1  # the astronaut herself
  assert {n['image_id']: n['notes'] for n in report['notes']}['astronaut'] == [
      'no Annotations/astronaut.xml: boxed by the detector']
  split = 'train' if 'astronaut' in open(
      os.path.join(root, 'ImageSets', 'Main', 'train.txt')).read() else 'val'
  astronaut = [e for e in _read_split(examples.uri, split)
               if _feature(e, 'image/source_id')[0] == b'astronaut']
  assert len(astronaut) == 1 and len(_feature(astronaut[0], 'image/object/bbox/ymin')) >= 1


def test_the_fingerprint_follows_the_photos_of_the_tree(photo_folder, tmp_path):
  root = shutil.copytree(photo_folder['root'], str(tmp_path / 'photos'))
  input_config, _ = component.split_configs(root)
  before = _local_fingerprint(root, input_config, tmp_path)
  assert _local_fingerprint(root, input_config, tmp_path) == before
  moved = next(p for p in photo_folder['photos'] if '/' in p)
  os.rename(os.path.join(root, moved), os.path.join(root, moved.replace('.jpg', '_b.jpg')))
  assert _local_fingerprint(root, input_config, tmp_path) != before  # a new id, deep in the tree


def test_run_refuses_a_plain_folder_without_a_detector(photo_folder, tmp_path, capsys):
  args = ['run', '--preset', 'tiny', '--data-dir', photo_folder['root'], '--pipeline-root',
          str(tmp_path / 'r')]
  assert pipeline_runner.main(args) == 2
  error = capsys.readouterr().err
  assert 'plain photo folder' in error and 'learn from boxes' in error and '--detector' in error
  assert pipeline_runner.main(args + ['--detector', str(tmp_path / 'none.tflite')]) == 2
  assert 'no detector at' in capsys.readouterr().err
  assert not os.path.exists(tmp_path / 'r' / 'metadata.sqlite')
  with pytest.raises(ValueError, match='plain photo folder'):
    component.split_configs(photo_folder['root'], 'lists')
