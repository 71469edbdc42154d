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
  kept, _ = evaluate.read_photos(SAMPLE, 'val')
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
  fused_inputs = {'inputs': ['box_mask', 'boxes', 'gray', 'instance_gray'], 'outputs': ['ab']}
  assert k == 3 and signatures == {'full': {'inputs': ['gray'], 'outputs': ['ab']},
                                   'fused_1': fused_inputs, 'fused_2': fused_inputs,
                                   'fused': fused_inputs}
  for name, n in (('fused_1', 1), ('fused_2', 2), ('fused', k)):
    shapes = {key: list(d['shape']) for key, d in
              tflite.interpreter.get_signature_runner(name).get_input_details().items()}
    assert shapes == {'gray': [1, s, s, 1], 'instance_gray': [1, n, s, s, 1], 'boxes': [1, n, 4],
                      'box_mask': [1, n]}
  check = export_tflite.check(tflite, exported_model, photos)
  assert check.requests == len(photos) + sum(1 for _, b in photos if len(b))
  assert check.max_ab_difference < tolerance
  # ... and small against the colour itself (an untrained net's ab is a few units).
  assert check.mean_ab > 0.5 and check.mean_ab_difference < 0.02 * check.mean_ab
  jpeg, boxes = next(p for p in photos if len(p[1]))
  # A PNG at the photo's size, like serving_default's.
  png = tflite.colorize(jpeg, boxes)
  assert tf.io.decode_png(png).shape[:2] == tf.io.decode_jpeg(jpeg).shape[:2]


def test_a_request_runs_the_fewest_slots_that_hold_its_boxes(exports, photos):
  """One box runs fused_1, and gives what the K-slot signature gives for it with empty slots."""
  path, config = exports['none']
  tflite = export_tflite.TFLiteColorizer(path, config)
  assert [tflite.signature(n) for n in range(5)] == [
      ('full', 0), ('fused_1', 1), ('fused_2', 2), ('fused', 3), ('fused', 3)]
  jpeg, boxes = next(p for p in photos if len(p[1]))
  one_box = boxes[:1]
  padded = {key: value.numpy()[None] for key, value in
            tflite._prepare(tf.constant(jpeg), tf.constant(one_box, tf.float32)).items()}
  assert padded['box_mask'].tolist() == [[1, 0, 0]]
  every_slot = tflite.interpreter.get_signature_runner('fused')(
      **{key: padded[key] for key in ('gray', 'instance_gray', 'boxes', 'box_mask')})['ab'][0]
  np.testing.assert_allclose(tflite.ab(jpeg, one_box), every_slot, atol=1e-5)
  assert np.abs(tflite.ab(jpeg, one_box) - tflite.ab(jpeg, np.zeros([0, 4]))).max() > 1e-3


def test_every_signature_shares_one_copy_of_the_weights(exported_model, exports):
  """The file holds each weight once (full and every fused signature): hardly more than the fused
  net's float32 weights."""
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
  assert 'signatures full, fused, fused_1, fused_2 at 32x32' in printed
  assert 'ab against the SavedModel on 4 photos' in printed


def test_export_into_writes_the_checked_file_into_the_model(exported_model, exports, photos,
                                                            tmp_path):
  """What the fusion Trainer does with tflite_export: the file and its record inside the serving
  model (so Pusher pushes them with it), checked on real items, the same file `convert` gives."""
  import hashlib
  import json
  import shutil

  from trainer import names, serving

  model_dir = str(tmp_path / 'model')
  shutil.copytree(exported_model, model_dir)
  _, config = exports['float16']
  items = [{k: v.numpy()[None] for k, v in serving.prepare(
               tf.constant(jpeg), tf.constant(np.asarray(boxes, np.float32).reshape(-1, 4)),
               tf.constant(0), config).items()} for jpeg, boxes in photos]
  record = export_tflite.export_into(model_dir, 'float16', iter(items), check_items=3)
  written = (tmp_path / 'model' / names.TFLITE_FILE).read_bytes()
  on_disk = json.loads((tmp_path / 'model' / names.TFLITE_RECORD).read_text())
  assert on_disk == record and not list((tmp_path / 'model').glob('**/*.partial'))
  assert record['sha256'] == hashlib.sha256(written).hexdigest()
  assert record['bytes'] == len(written) and record['quantization'] == 'float16'
  assert record['signatures'] == ['full', 'fused_1', 'fused_2', 'fused']
  # Three items: each through `full`, and those with boxes through a fused signature too.
  with_boxes = sum(1 for _, boxes in photos[:3] if len(boxes))
  assert record['checked_items'] == 3 and record['checked_requests'] == 3 + with_boxes > 3
  assert record['max_ab_difference'] < 2.0 and record['mean_ab'] > 0.5
  # The file runs as the command's does: the same colours on a photo with boxes.
  ours = export_tflite.TFLiteColorizer(str(tmp_path / 'model' / names.TFLITE_FILE), config)
  theirs = export_tflite.TFLiteColorizer(exports['float16'][0], config)
  jpeg, boxes = next(p for p in photos if len(p[1]))
  np.testing.assert_allclose(ours.ab(jpeg, boxes), theirs.ab(jpeg, boxes), atol=1e-4)
  assert f"{model_dir}/{names.TFLITE_FILE}: " in export_tflite.describe(record, model_dir)


def test_a_net_fused_at_some_points_is_rebuilt_and_exported_with_those(tmp_path, photos):
  """A run with `--set fusion_points=...` pushes a net with fewer fusion layers, its instance net
  run up to the last of them only (before, a serving model without conv10_2 failed to save: its
  signatures captured instance weights the fusion model does not hold). Its record names the
  points, so the tools (this export, fine-tuning's init_model) rebuild exactly its nets from its
  variables (before: all 13 points, and the variables failed to load), and the file gives its
  colours."""
  import json

  from tests.conftest import export_fusion_model
  from trainer import serving

  points = ('conv2_2', 'conv5_3')
  path = str(tmp_path / 'serving_model' / '1')
  exported = export_fusion_model(path, points)
  _, nets = serving.saved_nets(path)
  assert tuple(nets['fusion'].fusion_layers) == points
  for ours, theirs in zip(nets['fusion'].model.get_weights(), exported.model.get_weights()):
    np.testing.assert_array_equal(ours, theirs)
  # The instance blocks the model does not hold are its full net's, not random ones.
  for point in ('conv6_3', 'conv10_2'):
    for ours, theirs in zip(nets['instance'].blocks[point].get_weights(),
                            nets['full'].blocks[point].get_weights()):
      np.testing.assert_array_equal(ours, theirs)
  flatbuffer, config = export_tflite.convert(path, 'none')
  (tmp_path / 'm.tflite').write_bytes(flatbuffer)
  check = export_tflite.check(export_tflite.TFLiteColorizer(str(tmp_path / 'm.tflite'), config),
                              path, photos)
  assert check.max_ab_difference < 0.5 and check.mean_ab_difference < 0.02 * check.mean_ab

  # A record without the points (as written before it held them) is named, never half-read.
  record_path = os.path.join(path, serving.NET_RECORD)
  with open(record_path) as f:
    record = json.load(f)
  assert record['fusion_points'] == list(points)
  del record['fusion_points']
  with open(record_path, 'w') as f:
    json.dump(record, f)
  with pytest.raises(ValueError, match='its variables do not fit the fusion nets'):
    serving.saved_nets(path)
