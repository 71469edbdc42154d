"""Assertions on the weights the three Trainers hand forward, from their Model artifacts alone."""
from __future__ import annotations

import numpy as np

from trainer import model, names
from trainer.config import PipelineConfig


def _net_weights(config: PipelineConfig, model_uri: str, net: str, role: str = 'full'):
  """Weights of one colour net as written by a Trainer, loaded into a freshly built net."""
  color_net = model.ColorNet(config.net_config(), role)
  color_net.model.load_weights(names.weights_file(model_uri, net))
  return color_net.model.get_weights()


def _fusion_net(config: PipelineConfig, model_uri: str, name: str) -> model.FusionNet:
  net = config.net_config()
  fusion = model.FusionNet(net, model.ColorNet(net, 'full'), model.ColorNet(net, 'instance'),
                           config.fusion_points)
  fusion.model.load_weights(names.weights_file(model_uri, name))
  return fusion


def _assert_same(a, b) -> None:
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def assert_instance_starts_from_full(config: PipelineConfig, full_uri: str,
                                     instance_uri: str) -> None:
  """Stage 2 started from stage 1's final weights, bit for bit, and then trained."""
  stage1 = _net_weights(config, full_uri, 'full')
  _assert_same(_net_weights(config, instance_uri, 'instance_initial'), stage1)
  trained = _net_weights(config, instance_uri, 'instance')
  assert any(not np.array_equal(x, y) for x, y in zip(trained, stage1))  # stage 2 trained


def assert_fusion_keeps_both_nets(config: PipelineConfig, full_uri: str, instance_uri: str,
                                  fusion_uri: str) -> None:
  """Stage 3 kept both colour nets bit-identical to what stages 1 and 2 handed on, and trained
  every fusion layer's weights."""
  full = _net_weights(config, full_uri, 'full')
  instance = _net_weights(config, instance_uri, 'instance')
  _assert_same(_net_weights(config, fusion_uri, 'full'), full)
  _assert_same(_net_weights(config, fusion_uri, 'instance'), instance)
  trained = _fusion_net(config, fusion_uri, 'fusion')
  initial = _fusion_net(config, fusion_uri, 'fusion_initial')
  # Inside the trained fusion model too (the instance net's head is not part of it: stage 3 uses
  # the instance features only).
  _assert_same(trained.full.model.get_weights(), full)
  instance_blocks = [w for block in trained.instance.blocks.values() for w in block.get_weights()]
  head_size = len(trained.instance.head.get_weights())
  _assert_same(instance_blocks, instance[:-head_size])
  changed = [not np.array_equal(a.numpy(), b.numpy())
             for a, b in zip(trained.fusion_weights(), initial.fusion_weights())]
  assert len(changed) == len(config.fusion_points) * 2 * 6 and any(changed)
