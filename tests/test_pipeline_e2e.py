"""End to end with LocalDagRunner on the bundled real sample and the tiny preset (select: -m e2e)."""
from __future__ import annotations

import glob
import os

import pytest
import tensorflow as tf
import tensorflow_transform as tft
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from components.voc_example_gen import executor as voc_executor
from pipeline import configs, metadata
from pipeline import pipeline as pipeline_module
from tests.conftest import SAMPLE
from trainer import features

pytestmark = pytest.mark.e2e

CONFIG = configs.get_config('tiny')
# In-process Beam: the same code paths as multi-processing, a minute faster on 2 cores.
BEAM_ARGS = ['--direct_running_mode=in_memory', '--direct_num_workers=1']


def run_pipeline(pipeline_root: str, data_root: str = SAMPLE, config=CONFIG) -> None:
  tfx.orchestration.LocalDagRunner().run(pipeline_module.create_pipeline(
      config, data_root=data_root, pipeline_root=pipeline_root,
      metadata_connection_config=metadata.connection_config(pipeline_root),
      beam_pipeline_args=BEAM_ARGS))


@pytest.fixture(scope='module')
def pipeline_root(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp('pipeline'))
  run_pipeline(root)
  return root


def test_every_component_completed(pipeline_root):
  store = metadata.open_store(pipeline_root)
  for node in ('VocExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'ExampleValidator',
               'Transform'):
    states = [e.last_known_state for e in metadata.node_executions(store, node)]
    assert states == [metadata_store_pb2.Execution.COMPLETE], node


def test_ingest_report_accounts_for_the_sample(pipeline_root):
  store = metadata.open_store(pipeline_root)
  examples = metadata.latest_outputs(store, 'VocExampleGen')['examples'][0]
  report = voc_executor.read_report(examples.uri)
  assert report['splits']['train']['total'] == 8 and report['splits']['val']['total'] == 4
  assert report['kept'] == 12 and report['rejected'] == 0
  assert examples.custom_properties['ingest_kept'].int_value == 12


def test_validator_finds_no_anomaly_on_real_data(pipeline_root):
  from tensorflow_metadata.proto.v0 import anomalies_pb2
  store = metadata.open_store(pipeline_root)
  uri = metadata.latest_outputs(store, 'ExampleValidator')['anomalies'][0].uri
  for split in ('train', 'val'):
    anomalies = anomalies_pb2.Anomalies()
    with open(os.path.join(uri, f'Split-{split}', 'SchemaDiff.pb'), 'rb') as f:
      anomalies.ParseFromString(f.read())
    assert dict(anomalies.anomaly_info) == {}, split


def test_transformed_records_decode_to_the_expected_shapes(pipeline_root):
  store = metadata.open_store(pipeline_root)
  outputs = metadata.latest_outputs(store, 'Transform')
  graph = tft.TFTransformOutput(outputs['transform_graph'][0].uri)
  spec = graph.transformed_feature_spec()
  s, k = CONFIG.image_size, CONFIG.max_boxes
  assert spec[features.INSTANCES].shape == [k] and spec[features.BOXES].shape == [k, 4]
  files = glob.glob(os.path.join(outputs['transformed_examples'][0].uri, 'Split-train', '*.gz'))
  records = tf.data.TFRecordDataset(files, compression_type='GZIP')
  decoded = [features.decode_example(tf.io.parse_single_example(r, spec), s, k,
                                     CONFIG.color_space) for r in records]
  assert len(decoded) == 8
  for example in decoded:
    assert example[features.GRAY].shape == (s, s, 1)
    assert example[features.TARGET].shape == (s, s, 2)
    assert example[features.INSTANCE_TARGET].shape == (k, s, s, 2)
    assert example[features.BOX_MASK].shape == (k,)
  # 4 train boxes in the sample (astronaut, chelsea, motorcycle_left x2) -> masks sum to 4.
  assert sum(float(tf.reduce_sum(e[features.BOX_MASK])) for e in decoded) == 4
