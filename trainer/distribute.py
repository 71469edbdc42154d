"""tf.distribute for the Trainers: the strategy a stage trains under, how its input is split, and
which process writes.

`distribution` (config): 'auto' (MultiWorkerMirroredStrategy when TF_CONFIG names a cluster of
several tasks, as Vertex AI and Kubeflow training jobs set it; MirroredStrategy over every local
GPU when there are several; else TensorFlow's default single-device strategy), 'mirrored' (every
local GPU, or every logical CPU device when there is no GPU), 'multi_worker' (TF_CONFIG required)
and 'one_device'.

The stage's batch size is per replica: the global batch is that times the replicas. Every worker
trains and saves (saving may take collective ops); only the chief writes into the Model artifact,
the others into a scratch folder that is removed.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from typing import Callable, Dict, Iterator, Optional, Tuple

import tensorflow as tf
from tensorflow.python.distribute import collective_all_reduce_strategy

from trainer.config import DISTRIBUTIONS

AUTO, MIRRORED, MULTI_WORKER, ONE_DEVICE = DISTRIBUTIONS
TF_CONFIG = 'TF_CONFIG'


class WorkerLost(RuntimeError):
  """A worker of a multi-worker stage stopped answering, or never came up."""


def tf_config() -> Dict:
  """TF_CONFIG as set by Vertex AI / Kubeflow training ({} when unset)."""
  raw = os.environ.get(TF_CONFIG, '').strip()
  if not raw:
    return {}
  try:
    return json.loads(raw)
  except json.JSONDecodeError as e:
    raise ValueError(f'{TF_CONFIG} is not JSON ({e}): {raw[:200]!r}') from None


def cluster_tasks(config: Optional[Dict] = None) -> int:
  """How many tasks TF_CONFIG's cluster lists (0 without one)."""
  cluster = (tf_config() if config is None else config).get('cluster') or {}
  return sum(len(addresses) for addresses in cluster.values())


def is_chief(config: Optional[Dict] = None) -> bool:
  """TensorFlow's rule: the 'chief' task, or worker 0 of a cluster without one; a process without
  a cluster is its own chief."""
  config = tf_config() if config is None else config
  cluster = config.get('cluster') or {}
  if not cluster:
    return True
  task = config.get('task') or {}
  task_type, index = task.get('type'), int(task.get('index', 0))
  if task_type in ('chief', 'master'):
    return index == 0
  return task_type == 'worker' and index == 0 and not cluster.get('chief') \
      and not cluster.get('master')


def task_name(device: str, config: Optional[Dict] = None) -> str:
  """'worker 1 (10.0.0.3:2222)' for a device or peer such as '/job:worker/replica:0/task:1'."""
  match = re.search(r'/job:(\w+)/(?:replica:\d+/)?task:(\d+)', device)
  if not match:
    return device
  job, index = match.group(1), int(match.group(2))
  addresses = ((tf_config() if config is None else config).get('cluster') or {}).get(job, [])
  where = f' ({addresses[index]})' if index < len(addresses) else ''
  return f'{job} {index}{where}'


def _local_devices() -> list:
  """Every local GPU, or every logical CPU device when there is none."""
  gpus = tf.config.list_logical_devices('GPU')
  return [d.name for d in (gpus or tf.config.list_logical_devices('CPU'))]


@contextlib.contextmanager
def _initial_timeout(seconds: int) -> Iterator[None]:
  # MultiWorkerMirroredStrategy waits for its peers in its constructor, forever by default.
  extended = collective_all_reduce_strategy.CollectiveAllReduceExtended
  previous = extended._check_health_initial_timeout  # pylint: disable=protected-access
  extended._check_health_initial_timeout = seconds  # pylint: disable=protected-access
  try:
    yield
  finally:
    extended._check_health_initial_timeout = previous  # pylint: disable=protected-access


def _multi_worker(worker_timeout: int) -> tf.distribute.Strategy:
  if cluster_tasks() < 2:
    raise ValueError(f"distribution 'multi_worker' needs {TF_CONFIG} naming a cluster of at least "
                     f'two tasks (Vertex AI and Kubeflow training jobs set it); got '
                     f'{os.environ.get(TF_CONFIG)!r}')
  options = tf.distribute.experimental.CommunicationOptions(
      implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
  try:
    with _initial_timeout(worker_timeout):
      strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
  except RuntimeError as e:
    if 'program startup' in str(e):
      raise RuntimeError(
          "distribution 'multi_worker' must set TensorFlow up before anything else runs in the "
          'process: run the Trainer in its own process (as a Vertex AI or Kubeflow training job '
          f'does), not after other components in one LocalDagRunner process ({e})') from e
    if 'Timeout waiting for the cluster' in str(e):
      raise WorkerLost(f'the other workers of {TF_CONFIG} did not all come up within '
                       f'worker_timeout={worker_timeout} s: {tf_config().get("cluster")}') from e
    raise
  # A peer that stops answering aborts the collectives (UnavailableError) within about half of
  # worker_timeout, rather than after TensorFlow's default of a minute or more.
  extended = strategy.extended
  extended._check_health_interval = max(1, worker_timeout // 4)  # pylint: disable=protected-access
  extended._check_health_timeout = max(1, worker_timeout // 8)  # pylint: disable=protected-access
  extended._check_health_retry_limit = 2  # pylint: disable=protected-access
  return strategy


def make_strategy(distribution: str, worker_timeout: int = 300) -> tf.distribute.Strategy:
  """The strategy `distribution` names on this machine (see the module docstring). Call it before
  any other TensorFlow op of the process when the result may be multi-worker."""
  if distribution not in DISTRIBUTIONS:
    raise ValueError(f'distribution must be one of {DISTRIBUTIONS}, not {distribution!r}')
  if distribution == MULTI_WORKER or (distribution == AUTO and cluster_tasks() > 1):
    return _multi_worker(worker_timeout)
  if distribution == ONE_DEVICE:
    gpus = tf.config.list_logical_devices('GPU')
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else '/cpu:0')
  if distribution == MIRRORED or len(tf.config.list_physical_devices('GPU')) > 1:
    devices = _local_devices()
    # Reduction through host memory where there is no NCCL (CPU devices).
    cross_device = (None if tf.config.list_logical_devices('GPU')
                    else tf.distribute.ReductionToOneDevice(reduce_to_device='/cpu:0'))
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device)
  return tf.distribute.get_strategy()


def is_default(strategy: tf.distribute.Strategy) -> bool:
  """TensorFlow's default strategy (no tf.distribute at all: one device, plain datasets)."""
  return type(strategy).__name__ == '_DefaultDistributionStrategy'


def _short_device(device: str) -> str:
  """'CPU:1' for a local device, 'worker 1 GPU:0' for a device of another task."""
  match = re.search(r'/job:(\w+)/replica:\d+/task:(\d+)/device:(.+)', device)
  if not match:
    return device
  job, task, local = match.groups()
  return local if job == 'localhost' else f'{job} {task} {local}'


def describe(strategy: tf.distribute.Strategy) -> str:
  """'MirroredStrategy: 2 replicas (GPU:0, GPU:1)' for the log and the run summary."""
  if is_default(strategy):
    return 'one device (no tf.distribute strategy)'
  replicas = strategy.num_replicas_in_sync
  devices = ', '.join(_short_device(d) for d in strategy.extended.worker_devices)
  multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
  name = 'MultiWorkerMirroredStrategy' if multi_worker else type(strategy).__name__
  workers = cluster_tasks() if multi_worker else 1
  return (f'{name}: {replicas} replica{"s" if replicas != 1 else ""}'
          + (f' on {workers} workers' if workers > 1 else '') + f' ({devices})')


def distribute_dataset(strategy: tf.distribute.Strategy, global_batch: int,
                       make: Callable[[int, Tuple[int, int]], tf.data.Dataset]):
  """make(per_replica_batch, (shards, shard_index)) built once per worker, its examples sharded
  across workers (every worker reads the files and keeps every n-th record), distributed across
  the worker's replicas; the plain dataset under a single-replica default strategy."""
  if is_default(strategy):
    return make(global_batch, (1, 0))

  def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
    return make(context.get_per_replica_batch_size(global_batch),
                (context.num_input_pipelines, context.input_pipeline_id))

  return strategy.distribute_datasets_from_function(per_worker)


@contextlib.contextmanager
def writer_dirs(serving_model_dir: str, model_run_dir: str) -> Iterator[Tuple[str, str]]:
  """(serving dir, run dir) this process writes: the Model / ModelRun artifacts' on the chief, a
  scratch folder on the others, removed afterwards whatever happens."""
  if is_chief():
    yield serving_model_dir, model_run_dir
    return
  scratch = tempfile.mkdtemp(prefix='instcolor-worker-')
  try:
    yield os.path.join(scratch, 'model', 'Format-Serving'), os.path.join(scratch, 'model_run')
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def barrier(strategy: tf.distribute.Strategy) -> None:
  """Waits until every worker gets here (a cross-worker all-reduce): the others must not report
  the stage done before the chief has written the model."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return

  @tf.function
  def all_reduce():
    return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce('sum', 1.0))

  strategy.reduce('sum', all_reduce(), axis=None)


def lost_worker_message(error: tf.errors.OpError, stage: str, worker_timeout: int) -> str:
  """The one line a stage fails with when a peer died: which worker, and why it did not hang."""
  text = error.message or ''
  # 'Task /job:worker/replica:0/task:1 heartbeat timeout' (coordination service) or
  # '... /job:worker/replica:0/task:1 is down' (collective health check).
  match = (re.search(r'(/job:\w+/replica:\d+/task:\d+)\W*(?:heartbeat timeout|is down)', text)
           or re.search(r'(/job:\w+/(?:replica:\d+/)?task:\d+)', text))
  who = task_name(match.group(1)) if match else 'a worker'
  cause = next((line.strip() for line in text.splitlines() if match and match.group(1) in line),
               text.strip().splitlines()[0] if text.strip() else type(error).__name__)
  return (f'{stage} stage: {who} stopped answering, so training stopped after the health check '
          f'(worker_timeout={worker_timeout} s) instead of waiting for it: {cause[:300]}')
