"""The curated raw-example schema: real VOC examples conform; a record that breaks it is an anomaly."""
from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_data_validation as tfdv

from components.voc_example_gen import voc
from pipeline import configs
from tests.conftest import SAMPLE

SCHEMA = tfdv.load_schema_text(os.path.join(configs.SCHEMA_DIR, 'schema.pbtxt'))


def _anomalies(examples, tmp_path):
  path = str(tmp_path / 'examples.tfrecord')
  with tf.io.TFRecordWriter(path) as writer:
    for example in examples:
      writer.write(example.SerializeToString())
  stats = tfdv.generate_statistics_from_tfrecord(path)
  return dict(tfdv.validate_statistics(stats, SCHEMA).anomaly_info)


def _sample_examples():
  ids = voc.list_split_ids(SAMPLE, 'ImageSets/Main/train.txt').ids
  return [voc.ingest_image(SAMPLE, i, 'train').example for i in ids]


def test_sample_conforms_including_images_without_boxes(tmp_path):
  examples = _sample_examples()
  assert any(not e.features.feature['image/object/bbox/xmin'].float_list.value for e in examples)
  assert _anomalies(examples, tmp_path) == {}


def test_out_of_range_box_and_missing_image_are_anomalies(tmp_path):
  examples = _sample_examples()
  examples[0].features.feature['image/object/bbox/xmax'].float_list.value[0] = 1.5
  del examples[1].features.feature['image/encoded']
  anomalies = _anomalies(examples, tmp_path)
  assert 'image/object/bbox/xmax' in anomalies
  assert 'image/encoded' in anomalies
  assert 'image/object/bbox/xmin' not in anomalies
