"""The one config object: presets, overrides, validation, and the views each component receives."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from pipeline import configs
from trainer import names
from trainer.config import (ConfigError, IngestOptions, NetConfig, PipelineConfig, TrainerOptions,
                            TransformOptions)


def test_presets_build_valid_component_views():
  for name in configs.PRESETS:
    config = configs.get_config(name)
    assert TransformOptions.from_dict(config.transform_options().to_dict()).image_size == (
        config.image_size)
    assert IngestOptions.from_dict(config.ingest_options().to_dict()) == config.ingest_options()
    for stage in names.STAGES:
      options = TrainerOptions.from_dict(config.trainer_options(stage).to_dict())
      assert options == config.trainer_options(stage)
      assert options.net.image_size == config.image_size and options.net.width == config.width
      assert options.schedule == getattr(config, stage)
  paper = configs.get_config('paper')
  assert (paper.image_size, paper.width, paper.full.epochs, paper.fusion.batch_size) == (
      256, 1.0, 150, 1)


def test_views_hold_exactly_the_fields_their_component_uses():
  config = configs.get_config('tiny')
  assert set(config.transform_options().to_dict()) == {
      'image_size', 'max_boxes', 'color_space', 'include_difficult', 'min_crop_scale'}
  assert set(config.net_config().to_dict()) == {
      'image_size', 'max_boxes', 'color_space', 'width', 'precision', 'objective',
      'annealed_temperature', 'hints'}
  assert isinstance(config.trainer_options('full').net, NetConfig)


def test_fusion_points_only_reach_the_fusion_stage():
  config = configs.get_config('tiny', fusion_points=('conv1_2',))
  assert config.trainer_options('full').fusion_points == ()
  assert config.trainer_options('instance').fusion_points == ()
  assert config.trainer_options('fusion').to_dict()['fusion_points'] == ['conv1_2']
  # So changing them leaves the stage 1-2 Trainer configs (and their cache keys) untouched.
  assert config.trainer_options('full').to_dict() == (
      configs.get_config('tiny').trainer_options('full').to_dict())
  with pytest.raises(ConfigError, match='fusion stage only'):
    TrainerOptions(stage='full', net=config.net_config(), schedule=config.full,
                   fusion_points=('conv1_2',), flip_augmentation=False, min_crop_scale=1.0,
                   color_rebalance=0.0, backbone_init='none', freeze_backbone_epochs=0,
                   init_model='', distribution='auto', worker_timeout=300, tflite_export='off')


def test_the_tflite_export_is_the_fusion_stage_s_alone():
  config = configs.get_config('tiny', tflite_export='float16')
  assert config.trainer_options('fusion').tflite_export == 'float16'
  # Stages 1-2 write no file: their configs (and cache keys) do not change with it.
  for stage in ('full', 'instance'):
    assert config.trainer_options(stage).to_dict() == (
        configs.get_config('tiny').trainer_options(stage).to_dict())
  with pytest.raises(ConfigError, match='tflite_export belongs to the fusion stage only'):
    TrainerOptions.from_dict({**config.trainer_options('full').to_dict(),
                              'tflite_export': 'float16'})
  with pytest.raises(ConfigError, match='tflite_export must be one of'):
    configs.get_config('tiny', tflite_export='int8')


def test_crops_reach_transform_and_stages_1_2_only():
  config = configs.get_config('tiny', min_crop_scale=0.5)
  assert config.transform_options().min_crop_scale == 0.5  # Transform stores the view
  assert config.trainer_options('full').min_crop_scale == 0.5
  assert config.trainer_options('instance').min_crop_scale == 0.5
  assert config.trainer_options('fusion').min_crop_scale == 1.0


def test_color_rebalance_needs_lab():
  assert configs.get_config('tiny', color_rebalance=0.5).trainer_options('fusion').color_rebalance \
      == 0.5
  with pytest.raises(ConfigError, match="color_rebalance weights ab colours; it needs"):
    configs.get_config('tiny', color_space='rgb', color_rebalance=0.5)


def test_overrides_are_checked():
  assert configs.get_config('cpu', image_size=128).image_size == 128
  assert configs.get_config('cpu', **{'full.epochs': 3}).full.epochs == 3
  assert configs.get_config('cpu', **{'full.epochs': 3}).full.batch_size == 8
  assert configs.get_config('cpu', width=1).width == 1.0  # an int where a float is due is fine
  assert configs.get_config('cpu', fusion_points='conv10_2,conv1_2').fusion_points == (
      'conv1_2', 'conv10_2')  # network order
  with pytest.raises(ConfigError, match='unknown config fields'):
    configs.get_config('cpu', image_sise=128)
  with pytest.raises(ConfigError, match='unknown preset'):
    configs.get_config('huge')


@pytest.mark.parametrize('field,value,message', [
    ('image_size', '12O', "image_size must be an integer, got '12O'"),
    ('image_size', 60, 'image_size must be a multiple of 8'),
    ('image_size', True, 'image_size must be an integer'),
    ('color_space', 'hsv', r"color_space must be one of \['lab', 'rgb'\]"),
    ('split_mode', 'random', 'split_mode must be one of'),
    ('fusion_points', ('conv1_2', 'conv99'), r"unknown fusion points \['conv99'\]"),
    ('fusion_points', (), 'fusion_points must be a non-empty list'),
    ('max_boxes', 0, 'max_boxes must be >= 1'),
    ('width', 0, 'width must be > 0'),
    ('include_difficult', 'yes', 'include_difficult must be True or False'),
    ('jpeg_quality', 101, 'jpeg_quality must be in 1..100'),
    ('flip_augmentation', 1, 'flip_augmentation must be True or False'),
    ('min_crop_scale', 0, 'min_crop_scale must be > 0'),
    ('min_crop_scale', 1.5, r'min_crop_scale must be in \(0, 1\]'),
    ('color_rebalance', 1.5, r'color_rebalance must be in \[0, 1\]'),
    ('full.lr_decay', 'linear', r"full.lr_decay must be one of \['constant', 'cosine'\]"),
    ('full.epochs', 0, 'full.epochs must be >= 1'),
    ('fusion.learning_rate', -1e-4, 'fusion.learning_rate must be > 0'),
    ('instance.steps', 5, 'instance: unknown schedule fields'),
    ('distribution', 'tpu', r"distribution must be one of \['auto', 'mirrored', 'multi_worker', "
                            r"'one_device'\]"),
    ('worker_timeout', 2, 'worker_timeout must be >= 5'),
])
def test_bad_values_name_the_field_and_what_is_allowed(field, value, message):
  with pytest.raises(ConfigError, match=message):
    configs.get_config('tiny', **{field: value})


def test_config_module_needs_no_tensorflow():
  code = ('import sys; from pipeline import configs; configs.get_config("cpu"); '
          'print("tensorflow" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       cwd=configs.REPO_ROOT, check=True).stdout
  assert out.strip() == 'False'


@pytest.mark.parametrize('value', ['12O', '60'])
def test_cli_rejects_a_bad_setting_before_any_component_runs(value, tmp_path):
  root = tmp_path / 'root'
  code = ('import sys, pipeline_runner; rc = pipeline_runner.main(sys.argv[1:]); '
          'print(rc, "tensorflow" in sys.modules)')
  result = subprocess.run(
      [sys.executable, '-c', code, 'run', '--preset', 'tiny', '--set', f'image_size={value}',
       '--pipeline-root', str(root)], capture_output=True, text=True, cwd=configs.REPO_ROOT)
  assert result.stdout.split() == ['2', 'False'], result.stderr
  assert 'error: image_size must be' in result.stderr
  assert not root.exists()  # nothing ran, nothing was written


def test_help_loads_no_tensorflow():
  code = ('import sys, pipeline_runner\ntry: pipeline_runner.main(["--help"])\n'
          'except SystemExit: pass\nprint("tensorflow" in sys.modules, "tfx" in sys.modules)')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=configs.REPO_ROOT, check=True)
  assert 'run' in result.stdout and 'compile' in result.stdout
  assert result.stdout.strip().splitlines()[-1] == 'False False'


def test_colorize_boxes_and_detector_are_mutually_exclusive(capsys):
  import pipeline_runner
  with pytest.raises(SystemExit) as raised:
    pipeline_runner.main(['colorize', 'a.jpg', '--model', 'm', '--out', 'o', '--boxes', 'b.json',
                          '--detector', 'handle'])
  assert raised.value.code == 2
  assert 'not allowed with argument' in capsys.readouterr().err


def test_beam_defaults_use_every_core_and_extra_flags_come_last():
  args = configs.default_beam_args(('--direct_num_workers=1',))
  assert args[:2] == ['--direct_running_mode=multi_processing', '--direct_num_workers=0']
  assert args[-1] == '--direct_num_workers=1'


def test_config_module_is_the_only_home_of_defaults():
  # Every view field is a PipelineConfig field: nothing re-declares a setting with its own default.
  fields = set(PipelineConfig.__dataclass_fields__)
  for view in (TransformOptions, NetConfig, IngestOptions):
    assert set(view.__dataclass_fields__) <= fields
    assert all(f.default is dataclasses.MISSING for f in view.__dataclass_fields__.values())
