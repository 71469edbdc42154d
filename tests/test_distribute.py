"""tf.distribute in the Trainers (trainer/distribute.py): who is chief, where each process writes,
the strategy each `distribution` gives on this machine, how input is sharded across workers and
what a stage says when a worker dies. The runs of whole stages under a strategy (two logical CPU
devices, two worker processes, a killed worker) are in tests/test_pipeline_e2e.py."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from bench.train import write_transformed_records
from tests.conftest import SAMPLE
from trainer import data, distribute, features, names
from trainer.config import PipelineConfig

CLUSTER = {'worker': ['10.0.0.2:2222', '10.0.0.3:2222']}


def _set_tf_config(monkeypatch, cluster=None, task_type='worker', index=0):
  monkeypatch.setenv(distribute.TF_CONFIG, json.dumps(
      {'cluster': cluster or CLUSTER, 'task': {'type': task_type, 'index': index}}))


@pytest.mark.parametrize('config,chief', [
    ({}, True),  # no cluster: a process is its own chief
    ({'cluster': CLUSTER, 'task': {'type': 'worker', 'index': 0}}, True),
    ({'cluster': CLUSTER, 'task': {'type': 'worker', 'index': 1}}, False),
    ({'cluster': {**CLUSTER, 'chief': ['10.0.0.1:2222']}, 'task': {'type': 'worker', 'index': 0}},
     False),
    ({'cluster': {**CLUSTER, 'chief': ['10.0.0.1:2222']}, 'task': {'type': 'chief', 'index': 0}},
     True),
    ({'cluster': {**CLUSTER, 'evaluator': ['10.0.0.4:2222']},
      'task': {'type': 'evaluator', 'index': 0}}, False),
])
def test_the_chief_is_tensorflows(config, chief):
  assert distribute.is_chief(config) is chief


def test_tasks_are_named_with_their_address():
  config = {'cluster': CLUSTER}
  assert distribute.cluster_tasks(config) == 2
  assert distribute.cluster_tasks({}) == 0
  assert distribute.task_name('/job:worker/replica:0/task:1', config) == 'worker 1 (10.0.0.3:2222)'
  assert distribute.task_name('/job:worker/task:0', config) == 'worker 0 (10.0.0.2:2222)'
  assert distribute.task_name('/job:chief/replica:0/task:0', config) == 'chief 0'
  assert distribute.task_name('/cpu:0', config) == '/cpu:0'


def test_tf_config_that_is_not_json_is_a_clear_error(monkeypatch):
  monkeypatch.setenv(distribute.TF_CONFIG, "{'cluster': }")
  with pytest.raises(ValueError, match='TF_CONFIG is not JSON'):
    distribute.tf_config()


def test_strategies_on_this_machine(monkeypatch):
  monkeypatch.delenv(distribute.TF_CONFIG, raising=False)
  gpus = tf.config.list_physical_devices('GPU')
  auto = distribute.make_strategy('auto')
  if len(gpus) > 1:
    assert isinstance(auto, tf.distribute.MirroredStrategy)
  else:  # one device: plain Keras, no strategy in the way
    assert distribute.is_default(auto)
    assert distribute.describe(auto) == 'one device (no tf.distribute strategy)'
  one = distribute.make_strategy('one_device')
  assert isinstance(one, tf.distribute.OneDeviceStrategy)
  assert one.num_replicas_in_sync == 1
  mirrored = distribute.make_strategy('mirrored')
  assert isinstance(mirrored, tf.distribute.MirroredStrategy)
  # Every GPU, or every logical CPU device (one here: tests do not split the CPU).
  assert mirrored.num_replicas_in_sync == len(gpus or tf.config.list_logical_devices('CPU'))
  assert distribute.describe(mirrored).startswith('MirroredStrategy: ')


def test_multi_worker_without_a_cluster_fails_at_once(monkeypatch):
  monkeypatch.delenv(distribute.TF_CONFIG, raising=False)
  with pytest.raises(ValueError, match="'multi_worker' needs TF_CONFIG naming a cluster"):
    distribute.make_strategy('multi_worker')
  with pytest.raises(ValueError, match='distribution must be one of'):
    distribute.make_strategy('tpu')


def test_only_the_chief_writes_the_artifacts(monkeypatch, tmp_path):
  monkeypatch.setattr(distribute.tempfile, 'tempdir', str(tmp_path / 'tmp'))
  os.makedirs(tmp_path / 'tmp')
  _set_tf_config(monkeypatch, index=0)
  with distribute.writer_dirs('gs://b/model/Format-Serving', 'gs://b/run') as dirs:
    assert dirs == ('gs://b/model/Format-Serving', 'gs://b/run')
  _set_tf_config(monkeypatch, index=1)
  with pytest.raises(KeyError):  # the scratch goes whatever happens
    with distribute.writer_dirs('gs://b/model/Format-Serving', 'gs://b/run') as (model, run):
      assert model.startswith(str(tmp_path / 'tmp')) and run.startswith(str(tmp_path / 'tmp'))
      os.makedirs(model)
      os.makedirs(run)
      raise KeyError('stage failed')
  assert os.listdir(tmp_path / 'tmp') == []


def test_workers_read_disjoint_shards_that_cover_the_split(tmp_path):
  config = PipelineConfig(image_size=32, max_boxes=2)
  records = str(tmp_path / 'train.gz')
  count = write_transformed_records(SAMPLE, records, config)
  spec = features.transformed_feature_spec(config.transform_options())

  def ids(shard):  # each photo by its gray pixels
    batches = data.make_dataset([records], spec, names.FULL, config.net_config(), 1,
                                training=False, shard=shard)
    return [np.asarray(gray).tobytes() for gray, _ in batches]

  whole, first, second = ids((1, 0)), ids((2, 0)), ids((2, 1))
  assert len(whole) == count == len(first) + len(second)
  assert sorted(first + second) == sorted(whole)
  assert not set(first) & set(second)


def test_a_dead_worker_is_named_in_the_stages_error(monkeypatch):
  monkeypatch.setenv(distribute.TF_CONFIG, json.dumps(
      {'cluster': {'worker': ['127.0.0.1:41000', '127.0.0.1:41001']},
       'task': {'type': 'worker', 'index': 0}}))
  # The message TensorFlow 2.16 raised here when worker 1 was killed mid-epoch.
  error = tf.errors.UnavailableError(None, None, (
      'Graph execution error:\n\nDetected at node CollectiveReduceV2 defined at (most recent call '
      'last):\n  File "runpy.py", line 196, in _run_module_as_main\n\nCollective ops is aborted '
      'by: Error reported from /job:worker/task:1: Task /job:worker/replica:0/task:1 heartbeat '
      'timeout. This indicates that the remote task has failed, got preempted, or crashed '
      'unexpectedly.\nThe error could be from a previous operation. Restart your program to '
      'reset.'))
  message = distribute.lost_worker_message(error, 'full', 20)
  assert message.startswith('full stage: worker 1 (127.0.0.1:41001) stopped answering')
  assert 'worker_timeout=20 s' in message and 'heartbeat timeout' in message
  vague = distribute.lost_worker_message(tf.errors.UnavailableError(None, None, 'Socket closed'),
                                         'fusion', 300)
  assert vague.startswith('fusion stage: a worker stopped answering') and 'Socket closed' in vague
