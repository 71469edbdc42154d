"""Serving: the instance net runs on the real boxes only, and the output is what the padded
computation gives (for 0, 1, K and more than K boxes, on real photos)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import SAMPLE
from trainer import model, names, serving
from trainer.config import PipelineConfig

S, K = 32, 3
PHOTOS = ('astronaut', 'motorcycle_left')


@pytest.fixture(scope='module')
def fusion():
  config = PipelineConfig(image_size=S, width=0.125, max_boxes=K).net_config()
  full, instance = model.ColorNet(config, 'full'), model.ColorNet(config, 'instance')
  # Distinct weights in the two streams, so the instance features change the output, at the
  # scale of a trained net (scaling every layer up instead makes features of ~1e9, where float32
  # rounding alone exceeds the tolerance below).
  rng = np.random.default_rng(0)
  instance.model.set_weights([w + 0.05 * np.std(w) * rng.standard_normal(w.shape)
                              for w in full.model.get_weights()])
  return model.FusionNet(config, full, instance)


@pytest.fixture
def instance_calls(monkeypatch):
  """Batch sizes of every instance-net forward pass (the real net runs; this only counts)."""
  calls = []
  forward = model.ColorNet.features

  def counting(net, gray, *args, **kwargs):
    if net.role == 'instance':
      calls.append(int(tf.shape(gray)[0]))
    return forward(net, gray, *args, **kwargs)

  monkeypatch.setattr(model.ColorNet, 'features', counting)
  return calls


def _images():
  photos = []
  for name in PHOTOS:
    with open(os.path.join(SAMPLE, 'JPEGImages', f'{name}.jpg'), 'rb') as f:
      photos.append(f.read())
  return tf.constant(photos)


BOX = [0.1, 0.2, 0.8, 0.7]
REQUESTS = {
    # name: (boxes [2, N, 4], real boxes the instance net must see)
    'no boxes': (np.zeros([2, 0, 4]), 0),
    'padding rows only': (np.array([[[0.3, 0.3, 0.3, 0.6]], [[0.0, 0.0, 0.0, 0.0]]]), 0),
    'one box each': (np.array([[BOX], [[0.2, 0.0, 1.0, 0.5]]]), 2),
    'one image with boxes': (np.array([[BOX, [0.5, 0.5, 0.6, 0.9]], [[0.0] * 4] * 2]), 2),
    'K boxes': (np.array([[[0.05 * i, 0.1, 0.5 + 0.1 * i, 0.9] for i in range(K)]] * 2), 2 * K),
    'more than K boxes (the K largest)': (
        np.array([[[0.02 * i, 0.0, 0.3 + 0.1 * i, 0.5 + 0.05 * i] for i in range(K + 2)]] * 2),
        2 * K),
}


@pytest.mark.parametrize('request_name', sorted(REQUESTS))
def test_serving_runs_the_instance_net_on_real_boxes_only(fusion, instance_calls, request_name):
  boxes, real = REQUESTS[request_name]
  boxes = tf.constant(boxes, tf.float32)
  colorizer = serving.Colorizer(fusion.model, names.FUSION, fusion.config,
                                predict=fusion.predict_real_boxes)
  prepared = colorizer.prepare_batch(_images(), boxes)
  assert float(tf.reduce_sum(prepared['box_mask'])) == real
  padded = fusion.model(prepared)  # every K slot through the instance net, as in training
  del instance_calls[:]

  served = colorizer.colorize(_images(), boxes)
  assert instance_calls == ([real] if real else [])  # no pass at all without a real box
  np.testing.assert_allclose(served['ab'], serving.predicted_ab(padded, 'lab'), rtol=0, atol=1e-5)
  full_only = serving.predicted_ab(fusion.full.model(prepared['gray']), 'lab')
  if not real:  # the full-image path: exactly the full net's output
    np.testing.assert_array_equal(served['ab'], full_only)
  else:  # the instance features do weigh in
    assert np.abs(served['ab'] - full_only).max() > 1e-3
