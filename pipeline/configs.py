"""Every knob of the instcolor pipeline in one config object, with the tiny / cpu / paper presets."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Tuple

from trainer.model import FUSION_POINTS

PIPELINE_NAME = 'instcolor'
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_DIR = os.path.join(REPO_ROOT, 'schema')
# A real VOC-layout sample bundled with the repo, so the main command needs nothing else.
SAMPLE_DATA_ROOT = os.path.join(REPO_ROOT, 'data', 'sample', 'VOCdevkit', 'VOC2007')

# Dotted paths resolved by the components at run time (also inside a container image).
PREPROCESSING_FN = 'trainer.preprocessing.preprocessing_fn'
METRICS_MODULE = 'trainer.metrics'
RUN_FNS = {'full': 'trainer.run_fns.run_full', 'instance': 'trainer.run_fns.run_instance',
           'fusion': 'trainer.run_fns.run_fusion'}
STAGES = tuple(RUN_FNS)


@dataclasses.dataclass(frozen=True)
class StageConfig:
  """Training schedule of one Trainer stage."""
  epochs: int
  batch_size: int
  learning_rate: float
  steps_per_epoch: Optional[int] = None  # None: one pass over the split


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """One object for every setting; presets below, `replace()` for overrides."""
  preset: str
  image_size: int = 256
  max_boxes: int = 8
  color_space: str = 'lab'  # 'lab' (L in, ab out) or 'rgb' (gray in, RGB out)
  include_difficult: bool = False
  width: float = 1.0  # channel multiplier of the SIGGRAPH17 backbone
  fusion_points: Tuple[str, ...] = FUSION_POINTS  # where stage 3 mixes instance features in
  # ExampleGen
  split_mode: str = 'auto'  # 'auto' | 'lists' (ImageSets/Main) | 'hash' (on image/source_id)
  max_image_pixels: int = 40_000_000
  # Trainer schedules
  full: StageConfig = StageConfig(epochs=150, batch_size=16, learning_rate=5e-4)
  instance: StageConfig = StageConfig(epochs=150, batch_size=16, learning_rate=5e-4)
  fusion: StageConfig = StageConfig(epochs=30, batch_size=1, learning_rate=5e-5)

  # Evaluator blessing: PSNR (dB, RGB 0..255, val split) at least this, and not more than
  # `max_psnr_drop` below the latest blessed model.
  psnr_lower_bound: float = 20.0
  max_psnr_drop: float = 0.5

  def replace(self, **changes: Any) -> 'PipelineConfig':
    return dataclasses.replace(self, **changes)

  def transform_config(self) -> Dict[str, Any]:
    """Transform's custom_config (read by trainer.preprocessing.TransformOptions)."""
    return {'image_size': self.image_size, 'max_boxes': self.max_boxes,
            'color_space': self.color_space, 'include_difficult': self.include_difficult}

  def trainer_config(self, stage: str) -> Dict[str, Any]:
    """A Trainer's custom_config: the net's shape (trainer.model.NetConfig) and the schedule."""
    if stage not in STAGES:
      raise ValueError(f'stage must be one of {STAGES}, not {stage!r}')
    trainer_config = {'image_size': self.image_size, 'width': self.width,
                      'color_space': self.color_space, 'max_boxes': self.max_boxes,
                      'schedule': dataclasses.asdict(getattr(self, stage))}
    if stage == 'fusion':
      # Only stage 3 has fusion points; elsewhere they would only break the cache of stages 1-2.
      trainer_config['fusion_points'] = list(self.fusion_points)
    return trainer_config

  def ingest_options(self) -> Dict[str, Any]:
    """VocExampleGen's options (components.voc_example_gen.voc.IngestOptions)."""
    return {'max_image_pixels': self.max_image_pixels}


PRESETS: Dict[str, PipelineConfig] = {
    # Seconds per stage: for tests and smoke runs.
    'tiny': PipelineConfig(
        preset='tiny', image_size=32, max_boxes=2, width=0.125, psnr_lower_bound=10.0,
        max_psnr_drop=100.0,
        full=StageConfig(epochs=1, batch_size=2, learning_rate=1e-3, steps_per_epoch=2),
        instance=StageConfig(epochs=1, batch_size=2, learning_rate=1e-3, steps_per_epoch=2),
        fusion=StageConfig(epochs=1, batch_size=2, learning_rate=1e-4, steps_per_epoch=2)),
    # Learns visible colour in about half an hour on 2 CPU cores (bench/train.py: the full net
    # trains at ~31 images/s at this size): fixed steps per epoch, whatever the data set size.
    'cpu': PipelineConfig(
        preset='cpu', image_size=64, max_boxes=4, width=0.25,
        full=StageConfig(epochs=30, batch_size=8, learning_rate=1e-3, steps_per_epoch=100),
        instance=StageConfig(epochs=10, batch_size=8, learning_rate=5e-4, steps_per_epoch=100),
        fusion=StageConfig(epochs=5, batch_size=4, learning_rate=1e-4, steps_per_epoch=50)),
    # The official schedule at 256^2, full width (for a GPU).
    'paper': PipelineConfig(preset='paper'),
}
DEFAULT_PRESET = 'cpu'


def get_config(preset: str = DEFAULT_PRESET, **overrides: Any) -> PipelineConfig:
  if preset not in PRESETS:
    raise ValueError(f'unknown preset {preset!r}; choose one of {sorted(PRESETS)}')
  unknown = set(overrides) - {f.name for f in dataclasses.fields(PipelineConfig)}
  if unknown:
    raise ValueError(f'unknown config fields {sorted(unknown)}; PipelineConfig has '
                     f'{[f.name for f in dataclasses.fields(PipelineConfig)]}')
  return PRESETS[preset].replace(**overrides) if overrides else PRESETS[preset]


def default_beam_args(extra: Tuple[str, ...] = ()) -> list:
  """DirectRunner on every core, workers logging warnings only; later flags (e.g.
  --runner=DataflowRunner, --default_sdk_harness_log_level=INFO) win. Beam args are part of every
  Beam component's cache key, so these defaults never depend on --verbose."""
  return ['--direct_running_mode=multi_processing', '--direct_num_workers=0',
          '--default_sdk_harness_log_level=WARNING', *extra]
