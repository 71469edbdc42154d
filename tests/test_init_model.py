"""Fine-tuning from a pushed model (`init_model`): each stage starts bit-identical to the saved
model's net of its kind, what it came from is recorded for lineage, and a model of another
architecture is refused, by the CLI before anything runs."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from tfx import v1 as tfx

import pipeline_runner
from trainer import names, run_fns, serving
from trainer.config import ConfigError, PipelineConfig

# The architecture of conftest's exported_model (a fusion model), with the tiny schedule.
CONFIG = PipelineConfig(image_size=32, width=0.125, max_boxes=3, precision='float32')


def _assert_same_weights(a, b):
  weights_a, weights_b = a.get_weights(), b.get_weights()
  assert len(weights_a) == len(weights_b) > 0
  for x, y in zip(weights_a, weights_b):
    np.testing.assert_array_equal(x, y)


def _fn_args(tmp_path, stage: str, base_model: str = None):
  return tfx.components.FnArgs(
      serving_model_dir=str(tmp_path / stage / 'Format-Serving'), base_model=base_model,
      custom_config=CONFIG.trainer_options(stage).to_dict())


@pytest.fixture(scope='module')
def saved(exported_model):
  return serving.saved_nets(exported_model)[1]


def test_each_stage_starts_from_the_saved_net_of_its_kind(exported_model, saved, tmp_path):
  config = CONFIG.replace(init_model=exported_model)

  def build(stage, **kwargs):
    fn_args = _fn_args(tmp_path, stage, kwargs.pop('base_model', None))
    return run_fns.build_stage_model(fn_args, config.trainer_options(stage), **kwargs)

  _, full_nets, encoder = build(names.FULL)
  _assert_same_weights(full_nets['full'], saved['full'].model)
  assert encoder == []  # nothing frozen: the encoder is the trained one
  record = json.load(open(tmp_path / names.FULL / names.WEIGHTS_DIR / names.INIT_MODEL_FILE))
  assert record['init_model'] == exported_model and record['stage'] == names.FUSION
  assert len(record['sha256']) == 64
  assert os.path.exists(names.weights_file(str(tmp_path / names.FULL), 'full_initial'))

  # Stage 2 from the saved instance net, not from stage 1's full net (base_model).
  full_uri = str(tmp_path / names.FULL)
  run_fns._save_weights(full_nets['full'], os.path.join(full_uri, 'Format-Serving'), 'full')
  _, instance_nets, _ = build(names.INSTANCE, base_model=os.path.join(full_uri, 'Format-Serving'))
  instance = instance_nets['instance']
  for point, block in saved['instance'].blocks.items():
    _assert_same_weights(instance.get_layer(block.name), block)
  # A fusion model does not hold the instance head (stage 3 never runs it): its full net's.
  _assert_same_weights(instance.get_layer('instance_out'), saved['full'].head)

  instance_uri = str(tmp_path / names.INSTANCE)
  run_fns._save_weights(instance_nets['instance'], os.path.join(instance_uri, 'Format-Serving'),
                        'instance')
  _, fusion_nets, _ = build(names.FUSION, base_model=os.path.join(instance_uri, 'Format-Serving'),
                            full_model_dir=os.path.join(full_uri, 'Format-Serving'))
  _assert_same_weights(fusion_nets['fusion'], saved['fusion'].model)


def test_another_architecture_is_named(exported_model):
  net = CONFIG.net_config()
  assert serving.check_architecture(exported_model, net)[0] == names.FUSION
  # image_size, max_boxes and precision do not change the weights.
  serving.check_architecture(exported_model, CONFIG.replace(
      image_size=64, max_boxes=8, precision='mixed_bfloat16').net_config())
  with pytest.raises(ConfigError, match=r"width 0.125 there, 0.25 here"):
    serving.check_architecture(exported_model, CONFIG.replace(width=0.25).net_config())
  with pytest.raises(ConfigError, match="color_space 'lab' there, 'rgb' here"):
    serving.check_architecture(exported_model, CONFIG.replace(color_space='rgb').net_config())
  with pytest.raises(ConfigError, match="objective 'huber' there, 'classification' here"):
    serving.check_architecture(exported_model,
                               CONFIG.replace(objective='classification').net_config())
  with pytest.raises(ConfigError, match='set one of them'):
    CONFIG.replace(init_model=exported_model, width=1.0, backbone_init='vgg16_hed')


def test_run_refuses_a_model_of_another_architecture_before_anything_runs(
    exported_model, tmp_path, capsys):
  # The Pusher destination (its numbered versions) resolves to its newest model.
  destination = os.path.dirname(exported_model)
  assert serving.resolve_saved_model(destination) == exported_model
  root = tmp_path / 'root'
  assert pipeline_runner.main(['run', '--preset', 'tiny', '--init-model', destination,
                               '--set', 'width=0.25', '--pipeline-root', str(root)]) == 2
  error = capsys.readouterr().err
  assert 'another architecture' in error and 'width 0.125 there, 0.25 here' in error
  assert not os.path.exists(root / 'metadata.sqlite')
  assert pipeline_runner.main(['run', '--preset', 'tiny', '--init-model', str(tmp_path / 'none'),
                               '--pipeline-root', str(root)]) == 2
  assert 'no SavedModel' in capsys.readouterr().err
