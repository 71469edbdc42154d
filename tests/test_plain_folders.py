"""Training on plain photo folders: the ExampleGen executor boxes real photos with the shared TFLite
detector at ingest (the same boxes as the shared imagenet1k annotations, which that file made),
VOC images missing their annotation are boxed instead of rejected, and the report, the artifact's
lineage properties and the cache fingerprint follow."""
from __future__ import annotations

import json
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


@pytest.fixture
def three_sources(sample_voc, tmp_path) -> list:
  """The VOC sample, and two plain folders that each hold a `0001.jpg` (different photos); one of
  them also holds a copy of the sample's astronaut photo under another name."""
  voc_root = copy_voc(sample_voc, str(tmp_path / 'VOC2007'))
  ids = _val_ids(4)
  for folder, image_id in (('family', ids[0]), ('museum', ids[1])):
    os.makedirs(tmp_path / folder / 'scans')
    shutil.copy(os.path.join(IMAGENET1K, 'JPEGImages', f'{image_id}.jpg'),
                tmp_path / folder / '0001.jpg')
  shutil.copy(os.path.join(IMAGENET1K, 'JPEGImages', f'{ids[2]}.jpg'),
              tmp_path / 'family' / 'scans' / 'beach.jpg')
  shutil.copy(os.path.join(voc_root, 'JPEGImages', 'astronaut.jpg'),
              tmp_path / 'family' / 'scans' / 'astro.jpg')
  return [voc_root, str(tmp_path / 'family'), str(tmp_path / 'museum')]


def _run_sources(sources, out: str):
  from tfx.components.example_gen import utils as example_gen_utils
  from tfx.types import standard_artifacts, standard_component_specs
  from tfx.utils import proto_utils

  from components.voc_example_gen import executor

  examples = standard_artifacts.Examples()
  examples.uri = out
  input_config = component.sources_split_config()
  exec_properties = {
      standard_component_specs.INPUT_BASE_KEY: sources[0],
      standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(input_config),
      standard_component_specs.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(
          example_gen_utils.make_default_output_config(input_config)),
      standard_component_specs.OUTPUT_DATA_FORMAT_KEY: 6,  # FORMAT_TF_EXAMPLE
      standard_component_specs.OUTPUT_FILE_FORMAT_KEY: 5,  # FORMAT_TFRECORDS_GZIP
      standard_component_specs.CUSTOM_CONFIG_KEY: proto_utils.proto_to_json(
          executor.pack_ingest_options(DETECTING, sources=sources)),
  }
  executor.Executor().Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]}, exec_properties)
  return examples, exec_properties


def test_several_sources_are_namespaced_keep_their_lists_and_a_repeated_photo_once(
    three_sources, tmp_path):
  examples, _ = _run_sources(three_sources, str(tmp_path / 'out'))
  ids = {split: {_feature(e, 'image/source_id')[0].decode()
                 for e in _read_split(examples.uri, split)} for split in ('train', 'val')}
  sample_lists = {split: open(os.path.join(three_sources[0], 'ImageSets', 'Main',
                                           f'{split}.txt')).read().split()
                  for split in ('train', 'val')}
  for split in ('train', 'val'):  # the VOC source keeps its own lists
    assert {i for i in ids[split] if i.startswith('VOC2007/')} == {
        f'VOC2007/{i}' for i in sample_lists[split]}
  plain = {'family/0001.jpg', 'museum/0001.jpg', 'family/scans/beach.jpg'}
  assert plain <= ids['train'] | ids['val']  # one id per source: no collision
  for image_id in plain:
    assert image_id in ids[voc.hash_split(image_id)]
  report = ingest_report.read_report(examples.uri)
  assert {r['image_id']: (r['reason'], r['detail']) for r in report['rejections']} == {
      'family/scans/astro.jpg': (voc.DUPLICATE_PHOTO,
                                 'the same bytes as VOC2007/astronaut; kept there only')}
  assert report['sources'] == {
      'VOC2007': {'total': 12, 'kept': 12, 'rejected': 0,
                  'boxes': report['boxes_by_source'][voc.FROM_ANNOTATION]},
      'family': {'total': 3, 'kept': 2, 'rejected': 1,
                 'boxes': report['sources']['family']['boxes']},
      'museum': {'total': 1, 'kept': 1, 'rejected': 0,
                 'boxes': report['sources']['museum']['boxes']}}
  assert (report['sources']['family']['boxes'] + report['sources']['museum']['boxes'] ==
          report['boxes_by_source'][voc.FROM_DETECTOR])
  assert 'source family: 2 kept, 1 rejected' in ingest_report.format_summary(report)
  assert json.loads(examples.get_string_custom_property('ingest_sources')) == three_sources


def test_the_fingerprint_of_several_sources_follows_each_of_them(three_sources, tmp_path):
  from tfx.components.example_gen import utils as example_gen_utils
  from tfx.utils import proto_utils

  from components.voc_example_gen import driver, executor

  def fingerprint():
    props = {
        'input_base': three_sources[0],
        'input_config': proto_utils.proto_to_json(component.sources_split_config()),
        'custom_config': proto_utils.proto_to_json(
            executor.pack_ingest_options(DETECTING, sources=three_sources))}
    resolved = driver.VocDriver(metadata_handle=None).resolve_exec_properties(props, None, None)
    return resolved[example_gen_utils.FINGERPRINT_PROPERTY_NAME]

  before = fingerprint()
  assert fingerprint() == before and all(root in before for root in three_sources)
  shutil.copy(os.path.join(three_sources[1], '0001.jpg'),
              os.path.join(three_sources[2], 'scans', 'new.jpg'))  # a photo added to the last
  assert fingerprint() != before
