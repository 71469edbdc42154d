"""export --format tflite on a pushed model (tests/conftest.py: exported_model) and real photos:
documented signatures, one copy of the weights, and the same ab as the SavedModel."""
from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

import pipeline_runner
from tests.conftest import SAMPLE
from tools import evaluate, export_tflite


@pytest.fixture(scope='module')
def photos():
  kept, _ = evaluate._photos(SAMPLE, 'val')
  assert sum(1 for p in kept if len(p.boxes)) >= 2
  return [(p.jpeg, p.boxes) for p in kept]


@pytest.fixture(scope='module')
def exports(exported_model, tmp_path_factory):
  """quantization -> (path of the .tflite, its NetConfig)."""
  result = {}
  for quantize in ('none', 'float16'):
    flatbuffer, config = export_tflite.convert(exported_model, quantize)
    path = tmp_path_factory.mktemp('tflite') / f'{quantize}.tflite'
    path.write_bytes(flatbuffer)
    result[quantize] = (str(path), config)
  return result


# float32: the same maths, but a pixel on a box's edge may fall on the other side of it (the box
# cover's comparisons rounded differently), hence a max of a tenth of a unit, not 1e-4.
@pytest.mark.parametrize('quantize, tolerance', [('none', 0.5), ('float16', 2.0)])
def test_the_export_gives_the_saved_model_colours(exported_model, exports, photos, quantize,
                                                   tolerance):
  path, config = exports[quantize]
  tflite = export_tflite.TFLiteColorizer(path, config)
  s, k = config.image_size, config.max_boxes
  signatures = tflite.interpreter.get_signature_list()
  assert signatures == {
      'full': {'inputs': ['gray'], 'outputs': ['ab']},
      'fused': {'inputs': ['box_mask', 'boxes', 'gray', 'instance_gray'], 'outputs': ['ab']}}
  shapes = {name: list(d['shape']) for name, d in
            tflite.interpreter.get_signature_runner('fused').get_input_details().items()}
  assert shapes == {'gray': [1, s, s, 1], 'instance_gray': [1, k, s, s, 1], 'boxes': [1, k, 4],
                    'box_mask': [1, k]}
  check = export_tflite.check(tflite, exported_model, photos)
  assert check.requests == len(photos) + sum(1 for _, b in photos if len(b))
  assert check.max_ab_difference < tolerance
  # ... and small against the colour itself (an untrained net's ab is a few units).
  assert check.mean_ab > 0.5 and check.mean_ab_difference < 0.02 * check.mean_ab
  jpeg, boxes = next(p for p in photos if len(p[1]))
  # A PNG at the photo's size, like serving_default's.
  png = tflite.colorize(jpeg, boxes)
  assert tf.io.decode_png(png).shape[:2] == tf.io.decode_jpeg(jpeg).shape[:2]


def test_both_signatures_share_one_copy_of_the_weights(exported_model, exports):
  """The file holds each weight once: hardly more than the fused net's float32 weights."""
  _, _, fused = export_tflite.rebuild(exported_model)
  weights = sum(int(np.prod(w.shape)) for w in fused.model.weights) * 4
  size = os.path.getsize(exports['none'][0])
  assert weights < size < weights * 1.15


def test_the_command_writes_the_file_and_prints_the_check(exported_model, tmp_path, capsys):
  out = tmp_path / 'm.tflite'
  assert pipeline_runner.main(['export', '--model', exported_model, '--format', 'tflite',
                               '--quantize', 'float16', '--out', str(out)]) == 0
  printed = capsys.readouterr().out
  assert out.stat().st_size > 0 and f'wrote {out}' in printed
  assert 'ab against the SavedModel on 4 photos' in printed
