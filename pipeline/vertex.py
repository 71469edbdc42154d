"""Vertex AI training for the three Trainers: `compile --vertex-training KEY=VALUE,...` turns them
into TFX's Google Cloud AI Platform Trainer extension, which starts a Vertex custom job with the
worker pool below and runs the same executor (and run_fn) on each of its replicas.

Replicas > 1: pool 0 is the chief and pool 1 holds the other replicas; Vertex sets TF_CONFIG on
each, and the stage's distribution 'auto' (or 'multi_worker') trains with
MultiWorkerMirroredStrategy over every GPU of every replica (trainer/distribute.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

from tfx import v1 as tfx

from trainer.config import ConfigError, PipelineConfig

# What `--vertex-training` accepts; required keys have no default.
_FIELDS = ('project', 'region', 'machine_type', 'accelerator_type', 'accelerator_count',
           'replicas')


@dataclasses.dataclass(frozen=True)
class VertexTraining:
  """Where a Trainer's Vertex custom job runs, and in which image."""
  project: str
  machine_type: str
  image: str
  region: str = 'us-central1'
  accelerator_type: str = ''  # e.g. NVIDIA_TESLA_A100; '' for CPU machines
  accelerator_count: int = 0
  replicas: int = 1

  @classmethod
  def parse(cls, text: str, image: str) -> 'VertexTraining':
    """'project=p,machine_type=a2-highgpu-8g,accelerator_type=NVIDIA_TESLA_A100,
    accelerator_count=8,replicas=2' (region defaults to us-central1)."""
    values: Dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(','))):
      key, equals, value = item.partition('=')
      key = key.strip()
      if not equals or key not in _FIELDS:
        raise ConfigError(f'--vertex-training: {item!r} is not KEY=VALUE with KEY one of '
                          f'{list(_FIELDS)}')
      values[key] = value.strip()
    missing = [key for key in ('project', 'machine_type') if not values.get(key)]
    if missing:
      raise ConfigError(f'--vertex-training needs {" and ".join(missing)} (got {text!r})')
    for key in ('accelerator_count', 'replicas'):
      if key in values:
        try:
          values[key] = int(values[key])
        except ValueError:
          raise ConfigError(f'--vertex-training: {key} must be an integer, got '
                            f'{values[key]!r}') from None
    training = cls(image=image, **values)
    training.check()
    return training

  def check(self) -> None:
    if self.replicas < 1:
      raise ConfigError(f'--vertex-training: replicas must be >= 1, got {self.replicas}')
    if self.accelerator_count < 0:
      raise ConfigError(f'--vertex-training: accelerator_count must be >= 0, got '
                        f'{self.accelerator_count}')
    if bool(self.accelerator_type) != bool(self.accelerator_count):
      raise ConfigError('--vertex-training: accelerator_type and accelerator_count go together '
                        f'(got {self.accelerator_type!r} x {self.accelerator_count})')

  def check_config(self, config: PipelineConfig) -> None:
    """Several replicas train one stage only under a multi-worker strategy."""
    if self.replicas > 1 and config.distribution not in ('auto', 'multi_worker'):
      raise ConfigError(f'--vertex-training replicas={self.replicas} trains each stage on '
                        f'{self.replicas} machines, which needs distribution auto or '
                        f'multi_worker, not {config.distribution!r}')

  def worker_pool_specs(self):
    """Vertex CustomJobSpec.worker_pool_specs: the chief, then the other replicas."""
    machine: Dict[str, Any] = {'machine_type': self.machine_type}
    if self.accelerator_type:
      machine.update(accelerator_type=self.accelerator_type,
                     accelerator_count=self.accelerator_count)
    pool = {'machine_spec': machine, 'container_spec': {'image_uri': self.image}}
    pools = [{**pool, 'replica_count': 1}]
    if self.replicas > 1:
      pools.append({**pool, 'replica_count': self.replicas - 1})
    return pools

  def custom_config(self, stage: str) -> Dict[str, Any]:
    """The extension's keys, next to the stage's TrainerOptions in its custom_config (run_fns
    drops them: they are for the executor that starts the job)."""
    extension = tfx.extensions.google_cloud_ai_platform
    return {
        extension.ENABLE_VERTEX_KEY: True,
        extension.VERTEX_REGION_KEY: self.region,
        extension.TRAINING_ARGS_KEY: {
            'project': self.project,
            'job_spec': {'worker_pool_specs': self.worker_pool_specs()},
        },
        extension.JOB_ID_KEY: f'instcolor-{stage}-trainer',
    }


def parse(text: Optional[str], image: str, config: PipelineConfig) -> Optional[VertexTraining]:
  """The compile flag's value checked against the config (None without the flag)."""
  if not text:
    return None
  training = VertexTraining.parse(text, image)
  training.check_config(config)
  return training
