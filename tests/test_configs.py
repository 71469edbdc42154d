"""The one config object: presets, overrides, and what each component receives from it."""
from __future__ import annotations

import pytest

from pipeline import configs
from trainer import model, preprocessing


def test_presets_build_valid_component_configs():
  for name in configs.PRESETS:
    config = configs.get_config(name)
    preprocessing.TransformOptions.from_custom_config(config.transform_config())
    for stage in configs.STAGES:
      net = model.NetConfig.from_dict(config.trainer_config(stage))
      assert net.image_size == config.image_size and net.width == config.width
  paper = configs.get_config('paper')
  assert (paper.image_size, paper.width, paper.full.epochs, paper.fusion.batch_size) == (
      256, 1.0, 150, 1)


def test_fusion_points_only_reach_the_fusion_stage():
  config = configs.get_config('tiny', fusion_points=('conv1_2',))
  assert 'fusion_points' not in config.trainer_config('full')
  assert 'fusion_points' not in config.trainer_config('instance')
  assert config.trainer_config('fusion')['fusion_points'] == ['conv1_2']
  # So changing them leaves the stage 1-2 Trainer configs (and their cache keys) untouched.
  assert config.trainer_config('full') == configs.get_config('tiny').trainer_config('full')


def test_overrides_are_checked():
  assert configs.get_config('cpu', image_size=128).image_size == 128
  with pytest.raises(ValueError, match='unknown config fields'):
    configs.get_config('cpu', image_sise=128)
  with pytest.raises(ValueError, match='unknown preset'):
    configs.get_config('huge')


def test_beam_defaults_use_every_core_and_extra_flags_come_last():
  args = configs.default_beam_args(('--direct_num_workers=1',))
  assert args[:2] == ['--direct_running_mode=multi_processing', '--direct_num_workers=0']
  assert args[-1] == '--direct_num_workers=1'
