"""VocExampleGen: the per-image rules, the Beam PTransform, the executor and the fingerprint."""
from __future__ import annotations

import glob
import io
import json
import os

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing import util as beam_util
from PIL import Image
from tfx.components.example_gen import utils as example_gen_utils
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from components.voc_example_gen import component, driver, executor, report as ingest_report, voc
from tests.conftest import BROKEN_CASES, copy_voc
from trainer.config import ConfigError, PipelineConfig


def _feature(example: tf.train.Example, key: str):
  feature = example.features.feature[key]
  return list(getattr(feature, feature.WhichOneof('kind')).value) if feature.WhichOneof('kind') else []


def test_real_sample_is_all_kept_with_its_boxes(sample_voc):
  ids = voc.list_split_ids(sample_voc, 'ImageSets/Main/train.txt').ids
  assert ids[:2] == ['astronaut', 'chelsea'] and len(ids) == 8
  results = {i: voc.ingest_image(sample_voc, i, 'train') for i in ids}
  assert all(r.status == voc.KEPT and not r.notes for r in results.values())
  moto = results['motorcycle_left'].example
  assert _feature(moto, 'image/object/class/text') == [b'motorbike', b'bicycle']
  assert _feature(moto, 'image/object/class/label') == [14, 2]
  assert _feature(moto, 'image/object/truncated') == [0, 1]
  assert _feature(moto, 'image/width') == [741] and _feature(moto, 'image/height') == [500]
  # <bndbox> 90,95,685,450 on 741x500, normalised by the image size as the TF OD API does.
  assert _feature(moto, 'image/object/bbox/xmin')[0] == pytest.approx(90 / 741)
  assert _feature(moto, 'image/object/bbox/ymax')[0] == pytest.approx(450 / 500)
  with open(os.path.join(sample_voc, 'JPEGImages', 'motorcycle_left.jpg'), 'rb') as f:
    assert _feature(moto, 'image/encoded') == [f.read()]  # RGB JPEG kept byte for byte
  assert _feature(results['coffee'].example, 'image/object/bbox/ymin') == []


@pytest.mark.parametrize('image_id', sorted(BROKEN_CASES))
def test_each_broken_input_gets_its_verdict(broken_voc, image_id):
  status, reason = BROKEN_CASES[image_id]
  result = voc.ingest_image(broken_voc, image_id, 'train')
  assert (result.status, result.reason) == (status, reason), result.detail
  assert (result.example is not None) == (status == voc.KEPT)
  if status == voc.REJECTED:
    assert result.detail  # a human-readable why


def test_conversions_and_box_fixes_are_noted(broken_voc):
  png = voc.ingest_image(broken_voc, 'png_image', 'train')
  cmyk = voc.ingest_image(broken_voc, 'cmyk', 'train')
  for result in (png, cmyk):
    image = Image.open(io.BytesIO(_feature(result.example, 'image/encoded')[0]))
    assert (image.format, image.mode) == ('JPEG', 'RGB')
    assert any('converted' in note for note in result.notes)
  boxes = voc.ingest_image(broken_voc, 'bad_boxes', 'train')
  notes = ' | '.join(boxes.notes)
  assert 'clipped' in notes and 'inverted' in notes and 'zero area' in notes
  assert _feature(boxes.example, 'image/object/class/text') == [b'person', b'unicorn']
  assert _feature(boxes.example, 'image/object/class/label') == [15, voc.UNKNOWN_LABEL]
  assert _feature(boxes.example, 'image/object/difficult') == [0, 1]
  assert _feature(boxes.example, 'image/object/bbox/xmin')[0] == 0.0
  assert _feature(boxes.example, 'image/object/bbox/xmax')[0] == 1.0


def test_max_image_pixels_option(sample_voc):
  small_limit = PipelineConfig(max_image_pixels=100_000).ingest_options()
  result = voc.ingest_image(sample_voc, 'astronaut', 'train', small_limit)
  assert (result.status, result.reason) == (voc.REJECTED, voc.IMAGE_TOO_LARGE)
  assert '512x512' in result.detail


def test_read_voc_ptransform_accounts_for_every_input(broken_voc):
  with beam.Pipeline() as pipeline:
    result = pipeline | executor.ReadVoc(broken_voc, 'ImageSets/Main/train.txt', 'train')
    beam_util.assert_that(
        result['examples'] | beam.Map(lambda e: _feature(e, 'image/source_id')[0].decode()),
        beam_util.equal_to([i for i, (s, _) in BROKEN_CASES.items() if s == voc.KEPT]),
        label='KeptExamples')
    beam_util.assert_that(
        result['status'] | beam.Map(lambda r: (r['image_id'], r['status'], r['reason'])),
        beam_util.equal_to([(i, s, r) for i, (s, r) in BROKEN_CASES.items()]),
        label='StatusOfEveryInput')


def _run_executor(input_base: str, output_dir: str, input_config, output_config=None,
                  ingest_options=None):
  examples = standard_artifacts.Examples()
  examples.uri = output_dir
  if output_config is None:
    output_config = example_gen_utils.make_default_output_config(input_config)
  exec_properties = {
      standard_component_specs.INPUT_BASE_KEY: input_base,
      standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(input_config),
      standard_component_specs.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(output_config),
      standard_component_specs.OUTPUT_DATA_FORMAT_KEY: 6,  # FORMAT_TF_EXAMPLE
      standard_component_specs.OUTPUT_FILE_FORMAT_KEY: 5,  # FORMAT_TFRECORDS_GZIP
  }
  if ingest_options is not None:
    exec_properties[standard_component_specs.CUSTOM_CONFIG_KEY] = proto_utils.proto_to_json(
        executor.pack_ingest_options(ingest_options))
  executor.Executor().Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]}, exec_properties)
  return examples


def _read_split(uri: str, split: str):
  files = glob.glob(os.path.join(uri, f'Split-{split}', '*.gz'))
  return [tf.train.Example.FromString(r.numpy())
          for r in tf.data.TFRecordDataset(files, compression_type='GZIP')]


def test_executor_writes_splits_and_report(broken_voc, tmp_path):
  input_config, output_config = component.split_configs(broken_voc)
  assert output_config is None  # ImageSets lists exist
  examples = _run_executor(broken_voc, str(tmp_path / 'out'), input_config)
  assert artifact_utils.decode_split_names(examples.split_names) == ['train', 'val']
  kept = sorted(i for i, (s, _) in BROKEN_CASES.items() if s == voc.KEPT)
  train = _read_split(examples.uri, 'train')
  assert sorted(_feature(e, 'image/source_id')[0].decode() for e in train) == kept
  assert len(_read_split(examples.uri, 'val')) == 1

  report = ingest_report.read_report(examples.uri)
  assert report['total'] == len(BROKEN_CASES) + 1
  assert report['kept'] + report['rejected'] == report['total']
  assert report['splits']['train'] == {'total': len(BROKEN_CASES), 'kept': len(kept),
                                       'rejected': len(BROKEN_CASES) - len(kept),
                                       'boxes': 1 + 1 + 2}  # good, cmyk, bad_boxes (2 survive)
  assert {r['image_id']: r['reason'] for r in report['rejections']} == {
      i: r for i, (s, r) in BROKEN_CASES.items() if s == voc.REJECTED}
  assert examples.get_int_custom_property('ingest_rejected') == report['rejected']
  assert not os.path.exists(os.path.join(examples.uri, 'ingest_records'))
  summary = ingest_report.format_summary(report)
  assert f"{report['kept']} kept + {report['rejected']} rejected = {report['total']}" in summary


def test_executor_hash_split_without_lists(sample_voc, tmp_path):
  root = copy_voc(sample_voc, str(tmp_path / 'VOC'))
  for name in ('train.txt', 'val.txt'):
    os.remove(os.path.join(root, 'ImageSets', 'Main', name))
  input_config, output_config = component.split_configs(
      root, hash_buckets=(('train', 1), ('val', 1)))
  assert output_config is not None  # no lists: hash split on image/source_id
  examples = _run_executor(root, str(tmp_path / 'out'), input_config, output_config,
                           ingest_options=PipelineConfig(max_image_pixels=300_000).ingest_options())
  train = {_feature(e, 'image/source_id')[0].decode() for e in _read_split(examples.uri, 'train')}
  val = {_feature(e, 'image/source_id')[0].decode() for e in _read_split(examples.uri, 'val')}
  report = ingest_report.read_report(examples.uri)
  # 300k pixels: exactly the photos larger than that are rejected, with the reason.
  sizes = {os.path.splitext(f)[0]: Image.open(os.path.join(root, 'JPEGImages', f)).size
           for f in os.listdir(os.path.join(root, 'JPEGImages'))}
  expected_big = {i for i, (w, h) in sizes.items() if w * h > 300_000}
  assert 0 < len(expected_big) < len(sizes)
  assert {r['image_id']: r['reason'] for r in report['rejections']} == {
      i: voc.IMAGE_TOO_LARGE for i in expected_big}
  assert train.isdisjoint(val) and train and val
  assert train | val == set(sizes) - expected_big
  assert report['kept'] + report['rejected'] == report['total'] == len(sizes)
  # The split is a hash of image/source_id: the same ids land in the same splits every time.
  again = _run_executor(root, str(tmp_path / 'again'), input_config, output_config,
                        ingest_options=PipelineConfig(max_image_pixels=300_000).ingest_options())
  assert {_feature(e, 'image/source_id')[0].decode()
          for e in _read_split(again.uri, 'train')} == train


def test_list_quirks_and_leakage_across_splits_are_reported(sample_voc, tmp_path):
  root = copy_voc(sample_voc, str(tmp_path / 'VOC'))
  lists = os.path.join(root, 'ImageSets', 'Main')
  # Edited on Windows: a byte-order mark, CRLF line ends, trailing spaces, one id listed twice.
  with open(os.path.join(lists, 'train.txt'), 'wb') as f:
    f.write('\ufeffastronaut  \r\nchelsea\r\ncoffee \r\nchelsea\r\n'.encode('utf-8'))
  # 'chelsea' is in both lists: kept in train, rejected from val (no evaluating on training data).
  with open(os.path.join(lists, 'val.txt'), 'w') as f:
    f.write('rocket\nchelsea\nflower\n')
  assert voc.list_split_ids(root, 'ImageSets/Main/train.txt').ids == [
      'astronaut', 'chelsea', 'coffee']
  input_config, _ = component.split_configs(root)
  examples = _run_executor(root, str(tmp_path / 'out'), input_config)
  ids = {split: sorted(_feature(e, 'image/source_id')[0].decode()
                       for e in _read_split(examples.uri, split)) for split in ('train', 'val')}
  assert ids == {'train': ['astronaut', 'chelsea', 'coffee'], 'val': ['flower', 'rocket']}
  report = ingest_report.read_report(examples.uri)
  assert report['splits']['train'] == {'total': 3, 'kept': 3, 'rejected': 0, 'boxes': 2}
  assert report['splits']['val'] == {'total': 3, 'kept': 2, 'rejected': 1, 'boxes': 0}
  assert report['kept'] + report['rejected'] == report['total'] == 6
  [leak] = report['rejections']
  assert (leak['split'], leak['image_id'], leak['reason']) == (
      'val', 'chelsea', voc.DUPLICATE_ACROSS_SPLITS)
  assert 'ImageSets/Main/train.txt' in leak['detail']


def test_hash_split_reports_two_images_with_one_id(sample_voc, tmp_path):
  root = copy_voc(sample_voc, str(tmp_path / 'VOC'))
  for name in ('train.txt', 'val.txt'):
    os.remove(os.path.join(root, 'ImageSets', 'Main', name))
  Image.open(os.path.join(root, 'JPEGImages', 'rocket.jpg')).save(
      os.path.join(root, 'JPEGImages', 'rocket.png'))
  listed = voc.list_split_ids(root, 'JPEGImages/*')
  assert listed.ids.count('rocket') == 1 and [i for i, _ in listed.duplicates] == ['rocket']
  input_config, output_config = component.split_configs(root)
  examples = _run_executor(root, str(tmp_path / 'out'), input_config, output_config)
  report = ingest_report.read_report(examples.uri)
  assert report['total'] == 13 and report['kept'] == 12  # 13 files, 12 ids
  [duplicate] = report['rejections']
  assert (duplicate['image_id'], duplicate['reason']) == ('rocket', voc.DUPLICATE_IMAGE_ID)
  assert 'rocket.png' in duplicate['detail'] and 'rocket.jpg' in duplicate['detail']
  # The .jpg is the image used: its bytes are kept as they are.
  [rocket] = [e for split in ('train', 'val') for e in _read_split(examples.uri, split)
              if _feature(e, 'image/source_id') == [b'rocket']]
  with open(os.path.join(root, 'JPEGImages', 'rocket.jpg'), 'rb') as f:
    assert _feature(rocket, 'image/encoded') == [f.read()]


def test_ingest_options_round_trip_and_unknown_keys_are_rejected():
  from google.protobuf import struct_pb2
  from tfx.proto import example_gen_pb2

  options = PipelineConfig(max_image_pixels=123_456, jpeg_quality=80).ingest_options()
  packed = proto_utils.proto_to_json(executor.pack_ingest_options(options))
  assert executor.ingest_options({standard_component_specs.CUSTOM_CONFIG_KEY: packed}) == options
  # A renamed key in a hand-edited or stale spec fails instead of falling back to a default.
  struct = struct_pb2.Struct()
  struct.update({**options.to_dict(), 'max_pixels': 1})
  config = example_gen_pb2.CustomConfig()
  config.custom_config.Pack(struct)
  with pytest.raises(ConfigError, match=r"unknown keys \['max_pixels'\]"):
    executor.ingest_options(
        {standard_component_specs.CUSTOM_CONFIG_KEY: proto_utils.proto_to_json(config)})


def _local_fingerprint(root: str, input_config, tmp_path) -> str:
  """The fingerprint VocDriver gives (LocalDagRunner)."""
  props = {standard_component_specs.INPUT_BASE_KEY: root,
           standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(input_config)}
  resolved = driver.VocDriver(metadata_handle=None).resolve_exec_properties(props, None, None)
  return resolved[example_gen_utils.FINGERPRINT_PROPERTY_NAME]


def _kubeflow_v2_fingerprint(root: str, input_config, tmp_path) -> str:
  """The fingerprint the compiled spec's preCacheCheck driver writes (Kubeflow V2 / Vertex), from
  an ExecutorInput as the launcher passes it."""
  output_file = tmp_path / 'driver_output.json'
  executor_input = {
      'inputs': {'parameters': {
          standard_component_specs.INPUT_BASE_KEY: {'stringValue': root},
          standard_component_specs.INPUT_CONFIG_KEY: {
              'stringValue': proto_utils.proto_to_json(input_config)}}},
      'outputs': {'artifacts': {'examples': {'artifacts': [{
          'name': 'examples', 'uri': str(tmp_path / 'examples'),
          'type': {'schemaTitle': 'tfx.Examples'}}]}}, 'outputFile': str(output_file)}}
  driver.run_kubeflow_v2_driver(['--json_serialized_invocation_args', json.dumps(executor_input)])
  values = json.loads(output_file.read_text())['parameterValues']
  return values[example_gen_utils.FINGERPRINT_PROPERTY_NAME]


@pytest.mark.parametrize('driver_fingerprint', [_local_fingerprint, _kubeflow_v2_fingerprint])
def test_fingerprint_changes_when_a_jpeg_changes(sample_voc, tmp_path, driver_fingerprint):
  root = copy_voc(sample_voc, str(tmp_path / 'VOC'))
  input_config, _ = component.split_configs(root)

  def fingerprint():
    return driver_fingerprint(root, input_config, tmp_path)

  before = fingerprint()
  assert fingerprint() == before
  jpeg = os.path.join(root, 'JPEGImages', 'rocket.jpg')
  Image.open(jpeg).rotate(180).save(jpeg, quality=90)
  os.utime(jpeg, (os.path.getatime(jpeg), os.path.getmtime(jpeg) + 5))
  edited_image = fingerprint()
  assert edited_image != before
  xml = os.path.join(root, 'Annotations', 'rocket.xml')
  with open(xml, 'a') as f:
    f.write('\n')
  os.utime(xml, (os.path.getatime(xml), os.path.getmtime(xml) + 5))
  assert fingerprint() not in (before, edited_image)  # an annotation edit counts too
