"""End to end with LocalDagRunner on the bundled real sample and the tiny preset (select: -m e2e)."""
from __future__ import annotations

import csv
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from typing import Optional
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from tfx.utils import json_utils, path_utils

from components.voc_example_gen import report as ingest_report
from pipeline import configs
from pipeline import pipeline as pipeline_module
from tests import handoff
from tests.conftest import SAMPLE, copy_voc
from tools import metadata
from trainer import features, names
from trainer.config import ConfigError

pytestmark = pytest.mark.e2e

CONFIG = configs.get_config('tiny')
# In-process Beam: the same code paths as multi-processing, a minute faster on 2 cores.
BEAM_ARGS = ['--direct_running_mode=in_memory', '--direct_num_workers=1']


def run_pipeline(pipeline_root: str, data_root: str = SAMPLE, config=CONFIG,
                 custom_configs=None) -> None:
  """Runs the pipeline; `custom_configs` ({node id: dict}) replaces components' custom_config
  as a hand-edited or stale compiled spec would."""
  tfx_pipeline = pipeline_module.create_pipeline(
      config, data_root=data_root, pipeline_root=pipeline_root,
      metadata_connection_config=metadata.connection_config(pipeline_root),
      beam_pipeline_args=BEAM_ARGS, serving_model_dir=os.path.join(pipeline_root, 'serving'))
  for component in tfx_pipeline.components:
    if component.id in (custom_configs or {}):
      component.exec_properties['custom_config'] = json_utils.dumps(custom_configs[component.id])
  # TFX's Beam executors parse sys.argv + Beam args with absl: pytest's own flags (-v) must not
  # be in sys.argv then.
  with mock.patch.object(sys, 'argv', sys.argv[:1]):
    tfx.orchestration.LocalDagRunner().run(tfx_pipeline)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> str:
  """A private copy of the bundled sample, so a test may edit a photo."""
  return copy_voc(SAMPLE, str(tmp_path_factory.mktemp('data') / 'VOC2007'))


@pytest.fixture(scope='module')
def first_run(tmp_path_factory, data_root):
  """Run 1, in a root no test runs the pipeline in again, and a snapshot of its ML Metadata."""
  root = str(tmp_path_factory.mktemp('pipeline'))
  run_pipeline(root, data_root)
  snapshot = str(tmp_path_factory.mktemp('snapshot') / 'metadata.sqlite')
  shutil.copyfile(configs.metadata_path(root), snapshot)
  return root, snapshot


@pytest.fixture
def pipeline_root(first_run) -> str:
  """Run 1's root, read only: whatever order the tests run in, it holds exactly one run."""
  return first_run[0]


@pytest.fixture
def rerun_root(first_run, tmp_path) -> str:
  """A fresh root whose ML Metadata is run 1's snapshot (run 1's artifacts stay where they are):
  a test that runs the pipeline again starts from exactly run 1's state, and writes only here."""
  root = str(tmp_path / 'rerun')
  os.makedirs(root)
  shutil.copyfile(first_run[1], configs.metadata_path(root))
  return root


def test_every_component_completed(pipeline_root):
  store = metadata.open_store(pipeline_root)
  for node in ('VocExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'ExampleValidator',
               'Transform', 'full_trainer', 'instance_trainer', 'fusion_trainer', 'Evaluator',
               'Pusher', 'AblationGallery'):
    states = [e.last_known_state for e in metadata.node_executions(store, node)]
    assert states == [metadata_store_pb2.Execution.COMPLETE], node


def test_ingest_report_accounts_for_the_sample(pipeline_root):
  store = metadata.open_store(pipeline_root)
  examples = metadata.latest_outputs(store, 'VocExampleGen')['examples'][0]
  report = ingest_report.read_report(examples.uri)
  assert report['splits']['train']['total'] == 8 and report['splits']['val']['total'] == 4
  assert report['kept'] == 12 and report['rejected'] == 0
  assert examples.custom_properties['ingest_kept'].int_value == 12


def test_validator_finds_no_anomaly_on_real_data(pipeline_root):
  from tensorflow_metadata.proto.v0 import anomalies_pb2
  store = metadata.open_store(pipeline_root)
  uri = metadata.latest_outputs(store, 'ExampleValidator')['anomalies'][0].uri
  for split in ('train', 'val'):
    anomalies = anomalies_pb2.Anomalies()
    with open(os.path.join(uri, f'Split-{split}', 'SchemaDiff.pb'), 'rb') as f:
      anomalies.ParseFromString(f.read())
    assert dict(anomalies.anomaly_info) == {}, split


def test_transformed_records_decode_to_the_expected_shapes(pipeline_root):
  store = metadata.open_store(pipeline_root)
  outputs = metadata.latest_outputs(store, 'Transform')
  graph = tft.TFTransformOutput(outputs['transform_graph'][0].uri)
  spec = graph.transformed_feature_spec()
  s, k = CONFIG.image_size, CONFIG.max_boxes
  assert spec == features.transformed_feature_spec(CONFIG.transform_options())
  files = glob.glob(os.path.join(outputs['transformed_examples'][0].uri, 'Split-train', '*.gz'))
  records = tf.data.TFRecordDataset(files, compression_type='GZIP')
  decoded = [features.decode_example(tf.io.parse_single_example(r, spec),
                                     CONFIG.transform_options()) for r in records]
  assert len(decoded) == 8
  for example in decoded:
    assert example[features.GRAY].shape == (s, s, 1)
    assert example[features.TARGET].shape == (s, s, 2)
    assert example[features.INSTANCE_TARGET].shape == (k, s, s, 2)
    assert example[features.BOX_MASK].shape == (k,)
  # 4 train boxes in the sample (astronaut, chelsea, motorcycle_left x2) -> masks sum to 4.
  assert sum(float(tf.reduce_sum(e[features.BOX_MASK])) for e in decoded) == 4


def _model_uri(store, trainer: str) -> str:
  return metadata.latest_outputs(store, trainer)['model'][0].uri


def test_instance_net_starts_from_the_full_net(pipeline_root):
  store = metadata.open_store(pipeline_root)
  handoff.assert_instance_starts_from_full(
      CONFIG, _model_uri(store, 'full_trainer'), _model_uri(store, 'instance_trainer'))


def test_fusion_stage_keeps_both_nets_bit_identical_and_trains_the_fusion(pipeline_root):
  store = metadata.open_store(pipeline_root)
  handoff.assert_fusion_keeps_both_nets(CONFIG, *(_model_uri(store, t) for t in (
      'full_trainer', 'instance_trainer', 'fusion_trainer')))


def test_mlmd_records_the_weight_hand_offs(pipeline_root):
  store = metadata.open_store(pipeline_root)

  def model_inputs(trainer):
    execution = metadata.node_executions(store, trainer)[-1]
    events = store.get_events_by_execution_ids([execution.id])
    return {e.path.steps[0].key: e.artifact_id for e in events
            if e.type == metadata_store_pb2.Event.INPUT and e.path.steps[0].key in (
                'base_model', 'full_model')}

  full_id = metadata.latest_outputs(store, 'full_trainer')['model'][0].id
  instance_id = metadata.latest_outputs(store, 'instance_trainer')['model'][0].id
  assert model_inputs('full_trainer') == {}
  assert model_inputs('instance_trainer') == {'base_model': full_id}
  assert model_inputs('fusion_trainer') == {'base_model': instance_id, 'full_model': full_id}


def test_each_stage_logs_tensorboard_and_evaluates_raw_examples(pipeline_root):
  store = metadata.open_store(pipeline_root)
  examples_uri = metadata.latest_outputs(store, 'VocExampleGen')['examples'][0].uri
  files = glob.glob(os.path.join(examples_uri, 'Split-val', '*.gz'))
  raw = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type='GZIP')]
  for trainer in ('full_trainer', 'instance_trainer', 'fusion_trainer'):
    outputs = metadata.latest_outputs(store, trainer)
    run_dir = outputs['model_run'][0].uri
    assert glob.glob(os.path.join(run_dir, '**', 'events.out.tfevents.*'), recursive=True)
    serving = tf.saved_model.load(path_utils.serving_model_path(outputs['model'][0].uri))
    prediction = serving.signatures['evaluate'](examples=tf.constant(raw))['prediction']
    assert prediction.shape == (len(raw), CONFIG.image_size, CONFIG.image_size, 2), trainer


# Runs in a fresh interpreter with nothing but TensorFlow: what a serving user has.
_SERVE_SCRIPT = r"""
import json, sys
import tensorflow as tf
model_dir, requests, out_dir = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
serve = tf.saved_model.load(model_dir).signatures['serving_default']
for i, request in enumerate(requests):
  image = open(request['path'], 'rb').read()
  out = serve(images=tf.constant([image]), boxes=tf.constant([request['boxes']], tf.float32,
                                                             shape=[1, len(request['boxes']), 4]))
  open(f'{out_dir}/{i}.png', 'wb').write(out['colorized'].numpy()[0])
try:
  serve(images=tf.constant([b'not an image at all']), boxes=tf.zeros([1, 0, 4]))
  print('NO ERROR')
except tf.errors.InvalidArgumentError as e:
  print('INVALID ARGUMENT:', str(e).splitlines()[-1] if 'images[0]' not in str(e) else 'images[0]')
"""


def _pushed_model_dirs(pipeline_root):
  return sorted(glob.glob(os.path.join(pipeline_root, 'serving', '*', 'saved_model.pb')))


def test_pushed_model_serves_any_image_in_a_fresh_process(pipeline_root, tmp_path):
  import io
  import json
  import sys

  from PIL import Image

  from tests.conftest import sample_image
  from trainer import color

  pushed = _pushed_model_dirs(pipeline_root)
  assert len(pushed) == 1
  inputs = {
      'odd.jpg': sample_image('motorcycle_left').crop((13, 7, 314, 224)),  # 301 x 217
      'odd.png': sample_image('chelsea').crop((0, 0, 255, 151)),
      'gray.jpg': sample_image('coffee').convert('L').resize((123, 77)),
  }
  requests = []
  for name, image in inputs.items():
    path = str(tmp_path / name)
    image.save(path)
    requests.append({'path': path, 'boxes': []})
    requests.append({'path': path, 'boxes': [[0.1, 0.2, 0.8, 0.7], [-0.5, 0.0, 0.5, 2.0],
                                             [0.0, 0.0, 0.0, 0.0], [0.3, 0.3, 0.4, 0.4]]})
  out_dir = tmp_path / 'out'
  out_dir.mkdir()
  result = subprocess.run(
      [sys.executable, '-c', _SERVE_SCRIPT, os.path.dirname(pushed[0]), json.dumps(requests),
       str(out_dir)], capture_output=True, text=True, timeout=600,
      env={**os.environ, 'PYTHONPATH': ''}, cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'INVALID ARGUMENT: images[0]' in result.stdout, result.stdout
  for i, request in enumerate(requests):
    source = Image.open(request['path']).convert('RGB')
    output = Image.open(io.BytesIO((out_dir / f'{i}.png').read_bytes()))
    assert output.size == source.size and output.mode == 'RGB'
    l_in = color.lightness(np.asarray(source, np.float32) / 255).numpy()
    l_out = color.lightness(np.asarray(output, np.float32) / 255).numpy()
    assert np.abs(l_in - l_out).mean() < 0.6, request  # L units of 100; rounding + gamut clip


def test_ablation_table_and_gallery(pipeline_root):
  import json

  from PIL import Image

  store = metadata.open_store(pipeline_root)
  uri = metadata.latest_outputs(store, 'AblationGallery')['report_dir'][0].uri
  with open(os.path.join(uri, 'ablation.json')) as f:
    table = json.load(f)
  assert table['images'] == 4 and table['split'] == 'val'
  assert list(table['metrics']) == ['gray baseline', 'full-image net', 'fusion net']
  for row in table['metrics'].values():
    assert set(row) == {'PSNR', 'SSIM', 'CF', 'dCF', 'instance PSNR'}
  assert table['metrics']['gray baseline']['CF'] < 0.5  # ab = 0 has no colour
  assert '| fusion net |' in open(os.path.join(uri, 'ablation.md')).read()
  s = CONFIG.image_size
  assert Image.open(os.path.join(uri, 'gallery.png')).size == (5 * s, 4 * s)


NODES = names.EXECUTED_NODES


def test_second_run_reuses_every_component(rerun_root, data_root):
  """Run 2 re-evaluates once, because the Resolver now finds run 1's blessed model as the baseline
  (a real input change); everything else, and from run 3 on everything, comes from the cache."""
  store = metadata.open_store(rerun_root)
  run_pipeline(rerun_root, data_root)
  for node in NODES:
    states = [e.last_known_state for e in metadata.node_executions(store, node)]
    expected = (metadata_store_pb2.Execution.COMPLETE if node in ('Evaluator', 'Pusher')
                else metadata_store_pb2.Execution.CACHED)
    assert states == [metadata_store_pb2.Execution.COMPLETE, expected], node

  run_pipeline(rerun_root, data_root)
  for node in NODES:
    assert metadata.node_executions(store, node)[-1].last_known_state == (
        metadata_store_pb2.Execution.CACHED), node
  assert len(metadata.node_executions(store, 'Evaluator')) == 3


def test_failed_fusion_stage_resumes_from_cached_upstream(rerun_root, data_root):
  # The config refuses a fusion point that does not exist; a stale or hand-edited spec can still
  # carry one, and then stage 3 fails at run time, after stages 1-2 are done.
  with pytest.raises(ConfigError, match='conv99'):
    CONFIG.replace(fusion_points=('conv1_2', 'conv99'))
  config = CONFIG.replace(fusion_points=('conv1_2',))
  stale = {**config.trainer_options(names.FUSION).to_dict(), 'fusion_points': ['conv1_2', 'conv99']}
  with pytest.raises(Exception, match='conv99'):
    run_pipeline(rerun_root, data_root, config=config,
                 custom_configs={names.TRAINERS[names.FUSION]: stale})
  store = metadata.open_store(rerun_root)
  assert metadata.node_executions(store, 'fusion_trainer')[-1].last_known_state == (
      metadata_store_pb2.Execution.FAILED)
  runs_before = {n: len(metadata.node_executions(store, n)) for n in NODES}
  run_pipeline(rerun_root, data_root,
               config=CONFIG.replace(fusion_points=('conv1_2', 'conv10_2')))
  for node in ('VocExampleGen', 'Transform', 'full_trainer', 'instance_trainer'):
    executions = metadata.node_executions(store, node)
    assert len(executions) == runs_before[node] + 1
    assert executions[-1].last_known_state == metadata_store_pb2.Execution.CACHED, node
  for node in ('fusion_trainer', 'Evaluator', 'Pusher', 'AblationGallery'):
    assert metadata.node_executions(store, node)[-1].last_known_state == (
        metadata_store_pb2.Execution.COMPLETE), node


def test_lineage_names_every_stage_in_order(pipeline_root, data_root, capsys):
  import json

  import pipeline_runner

  assert pipeline_runner.main(['lineage', '--pipeline-root', pipeline_root, '--json']) == 0
  chain = json.loads(capsys.readouterr().out)
  assert [entry['stage'] for entry in chain] == [
      'pushed model', 'Pusher', 'Evaluator', 'fusion_trainer', 'instance_trainer', 'full_trainer',
      'Transform', 'VocExampleGen', 'input data']
  assert chain[0]['pushed'] == 1
  evaluator = chain[2]
  assert {'psnr', 'ssim', 'instance_psnr'} <= set(evaluator['metrics'])
  assert any(a['key'] == 'blessing' and a['blessed'] == 1 for a in evaluator['outputs'])
  fusion = chain[3]
  keys = {a['key']: a['id'] for a in fusion['inputs']}
  assert keys['base_model'] == next(a['id'] for a in chain[4]['outputs'] if a['key'] == 'model')
  assert keys['full_model'] == next(a['id'] for a in chain[5]['outputs'] if a['key'] == 'model')
  assert chain[-1]['input_base'] == data_root and 'JPEGImages' in chain[-1]['input_fingerprint']


def test_impossible_threshold_blocks_the_push(rerun_root, data_root):
  before = _pushed_model_dirs(rerun_root)
  run_pipeline(rerun_root, data_root, config=CONFIG.replace(psnr_lower_bound=1000.0))
  store = metadata.open_store(rerun_root)
  blessing = metadata.latest_outputs(store, 'Evaluator')['blessing'][0]
  assert blessing.custom_properties['blessed'].int_value == 0
  pushed = metadata.latest_outputs(store, 'Pusher')['pushed_model'][0]
  assert pushed.custom_properties['pushed'].int_value == 0
  assert _pushed_model_dirs(rerun_root) == before
  # Only the evaluation and the push ran again: everything upstream came from the cache.
  for node in ('VocExampleGen', 'Transform', 'full_trainer', 'instance_trainer', 'fusion_trainer'):
    assert metadata.node_executions(store, node)[-1].last_known_state == (
        metadata_store_pb2.Execution.CACHED), node


def test_colorize_cli_with_a_local_hub_detector(pipeline_root, tmp_path, capsys):
  import pipeline_runner

  class Detector(tf.Module):
    """TF Object Detection API outputs: one confident box in the middle, one weak one."""

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)])
    def __call__(self, images):
      del images
      return {'detection_boxes': tf.constant([[[0.2, 0.2, 0.8, 0.8], [0.0, 0.0, 0.3, 0.3]]]),
              'detection_scores': tf.constant([[0.9, 0.2]]),
              'detection_classes': tf.constant([[1.0, 18.0]]),
              'num_detections': tf.constant([2.0])}

  detector_dir = str(tmp_path / 'detector')
  tf.saved_model.save(Detector(), detector_dir)
  images = [os.path.join(SAMPLE, 'JPEGImages', f'{n}.jpg') for n in ('rocket', 'chelsea')]
  out = tmp_path / 'colorized'
  assert pipeline_runner.main(['colorize', *images, '--model', os.path.join(pipeline_root, 'serving'),
                               '--detector', detector_dir, '--out', str(out)]) == 0
  printed = capsys.readouterr().out
  assert printed.count('(1 boxes from detector)') == 2  # the 0.2-score box is below 0.7
  assert sorted(os.listdir(out)) == ['chelsea.png', 'manifest.csv', 'rocket.png']
  with open(out / 'manifest.csv') as f:
    rows = list(csv.DictReader(f))
  assert [(r['status'], len(json.loads(r['boxes'])), r['box_source']) for r in rows] == [
      ('written', 1, 'detector')] * 2
  boxes_file = tmp_path / 'boxes.json'
  boxes_file.write_text('{"rocket.jpg": [[0.1, 0.1, 0.9, 0.5]]}')
  assert pipeline_runner.main(['colorize', images[0], '--model',
                               os.path.join(pipeline_root, 'serving'), '--boxes', str(boxes_file),
                               '--out', str(out)]) == 0
  assert '(1 boxes from boxes file)' in capsys.readouterr().out


@pytest.fixture
def edited_photo(data_root, tmp_path):
  """rocket.jpg flipped and saved again; the original (bytes and mtime, which the ExampleGen
  fingerprint reads) is put back afterwards, so later tests find the data run 1 saw."""
  from PIL import Image

  jpeg = os.path.join(data_root, 'JPEGImages', 'rocket.jpg')
  original = str(tmp_path / 'rocket.jpg')
  shutil.copy2(jpeg, original)
  Image.open(jpeg).transpose(Image.FLIP_LEFT_RIGHT).save(jpeg, quality=90)
  os.utime(jpeg, (os.path.getatime(jpeg), os.path.getmtime(jpeg) + 5))
  yield jpeg
  shutil.copy2(original, jpeg)


def test_editing_one_jpeg_reruns_from_example_gen(rerun_root, data_root, edited_photo):
  store = metadata.open_store(rerun_root)
  runs_before = {n: len(metadata.node_executions(store, n)) for n in NODES}
  run_pipeline(rerun_root, data_root)
  for node in ('VocExampleGen', 'StatisticsGen', 'Transform', 'full_trainer', 'fusion_trainer'):
    executions = metadata.node_executions(store, node)
    assert len(executions) == runs_before[node] + 1
    assert executions[-1].last_known_state == metadata_store_pb2.Execution.COMPLETE, node


def _copy_tree(source: str, destination: str) -> None:
  """A local folder to any tf.io.gfile filesystem."""
  for folder, _, files in tf.io.gfile.walk(source):
    relative = os.path.relpath(folder, source)
    target = destination if relative == '.' else f'{destination}/{relative}'
    tf.io.gfile.makedirs(target)
    for name in files:
      tf.io.gfile.copy(os.path.join(folder, name), f'{target}/{name}', overwrite=True)


def test_reports_and_readers_work_on_a_non_local_filesystem(pipeline_root, tmp_path, capsys):
  """On Vertex every artifact lives on gs://. TF's in-memory ram:// filesystem stands in for the
  bucket: run 1's artifacts are copied there and a copy of its ML Metadata points at them."""
  import json

  from components.ablation_gallery import report as ablation_report
  from tools import lineage, summary

  root = str(tmp_path / 'remote')
  os.makedirs(root)
  shutil.copyfile(configs.metadata_path(pipeline_root), configs.metadata_path(root))
  store = metadata.open_store(root)
  artifacts = [a for a in store.get_artifacts() if os.path.isdir(a.uri)]
  for artifact in artifacts:
    _copy_tree(artifact.uri, f'ram://bucket{artifact.uri}')
    artifact.uri = f'ram://bucket{artifact.uri}'
  store.put_artifacts(artifacts)

  # The ablation report reads Examples and SavedModels from the bucket and writes there.
  examples = metadata.latest_outputs(store, names.EXAMPLE_GEN)['examples'][0].uri
  full, fusion = (path_utils.serving_model_path(
      metadata.latest_outputs(store, names.TRAINERS[stage])['model'][0].uri)
                  for stage in (names.FULL, names.FUSION))
  assert examples.startswith('ram://') and fusion.startswith('ram://')
  table = ablation_report.write_report(examples, full, fusion, 'ram://bucket/ablation',
                                       CONFIG.color_space)
  with tf.io.gfile.GFile('ram://bucket/ablation/ablation.json') as f:
    written = json.load(f)
  assert written['metrics'] == table and written['images'] == 4
  local = metadata.latest_outputs(metadata.open_store(pipeline_root), names.ABLATION)
  with open(os.path.join(local['report_dir'][0].uri, 'ablation.json')) as f:
    on_disk = json.load(f)['metrics']
  for variant, row in table.items():  # the same numbers as on local disk
    assert on_disk[variant] == pytest.approx(row), variant

  # The run summary and the lineage read every artifact through the bucket.
  summary.print_summary(root)
  printed = capsys.readouterr().out
  assert 'VOC ingest: 12 kept + 0 rejected = 12 images' in printed
  assert 'Transform: ram://bucket' in printed and 'BLESSED' in printed
  assert '| fusion net |' in printed
  chain = lineage.lineage(root)
  assert {'psnr', 'ssim'} <= set(chain[2]['metrics'])
  assert all(a['uri'].startswith('ram://') for entry in chain[1:-1] for a in entry['outputs'])


def test_a_failing_component_keeps_its_traceback(tmp_path, capsys):
  """A failure inside a component is no one-line user error: the CLI shows the traceback and
  names the component, and the run's outputs stay for the next run to resume from."""
  import pipeline_runner

  root = str(tmp_path / 'root')
  rc = pipeline_runner.main(['run', '--preset', 'tiny', '--pipeline-root', root,
                             '--beam-arg=--runner=NoSuchRunner'])
  err = capsys.readouterr().err
  assert rc == 1
  assert 'Traceback (most recent call last)' in err and 'NoSuchRunner' in err
  assert f'error: {names.EXAMPLE_GEN} failed (traceback above)' in err
  store = metadata.open_store(root)
  assert metadata.node_executions(store, names.EXAMPLE_GEN)[-1].last_known_state == (
      metadata_store_pb2.Execution.FAILED)


def test_colorize_a_folder_with_a_corrupt_file(pipeline_root, tmp_path, capsys):
  """Folders and globs in, one PNG per photo out (names never collide), a progress bar, and a
  corrupt file reported in one line without stopping the others."""
  from PIL import Image

  import pipeline_runner
  from tests.conftest import RACCOON_VOC

  photos = sorted(glob.glob(os.path.join(RACCOON_VOC, 'JPEGImages', '*.jpg')))[:20]
  assert len(photos) == 20
  inputs = tmp_path / 'in'
  for i, photo in enumerate(photos):  # two folders; one name in both
    folder = inputs / ('a' if i < 10 else 'b')
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(photo, folder / ('same.jpg' if i in (0, 10) else os.path.basename(photo)))
  (inputs / 'a' / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is no JPEG body')
  out = tmp_path / 'out'
  rc = pipeline_runner.main(['colorize', str(inputs), '--model',
                             os.path.join(pipeline_root, 'serving'), '--out', str(out),
                             '--batch-size', '4'])
  captured = capsys.readouterr()
  assert rc == 1  # one input failed
  written = sorted(str(p.relative_to(out)) for p in out.rglob('*.png'))
  assert len(written) == 20 and {'a/same.png', 'b/same.png'} <= set(written)
  assert 'img/s' in captured.err  # the progress bar with its rate
  errors = [l for l in captured.err.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1 and 'broken.jpg' in errors[0]
  assert 'colorize: 20 of 21 images written' in captured.out
  source = Image.open(inputs / 'a' / 'same.jpg')
  assert Image.open(out / 'a' / 'same.png').size == source.size

  # --side-by-side: gray input | colour, on a glob.
  rc = pipeline_runner.main(['colorize', str(inputs / 'b' / 's*.jpg'), '--model',
                             os.path.join(pipeline_root, 'serving'), '--out',
                             str(tmp_path / 'pairs'), '--side-by-side'])
  assert rc == 0
  pair = Image.open(tmp_path / 'pairs' / 'same.png')
  assert pair.size == (2 * Image.open(inputs / 'b' / 'same.jpg').width,
                       Image.open(inputs / 'b' / 'same.jpg').height)


def test_a_model_without_colour_is_not_blessed(pipeline_root, tmp_path):
  """The Evaluator's own config, run by TFMA on the real val photos, against a model with the
  pipeline's signatures whose colour output is always 0: PSNR can be fine, the gain is exactly 0,
  so it fails the min_psnr_gain gate (the change threshold needs a baseline and is left out)."""
  import tensorflow_model_analysis as tfma
  import tf_keras as keras

  from trainer import serving

  store = metadata.open_store(pipeline_root)
  graph = tft.TFTransformOutput(metadata.latest_outputs(store, names.TRANSFORM)[
      'transform_graph'][0].uri)
  s, k = CONFIG.image_size, CONFIG.max_boxes
  inputs = {features.GRAY: keras.Input([s, s, 1], name=features.GRAY),
            features.INSTANCE_GRAY: keras.Input([k, s, s, 1], name=features.INSTANCE_GRAY),
            features.BOXES: keras.Input([k, 4], name=features.BOXES),
            features.BOX_MASK: keras.Input([k], name=features.BOX_MASK)}
  no_colour = keras.layers.Lambda(lambda g: tf.concat([g, g], axis=-1) * 0.0)(inputs[features.GRAY])
  model_dir = str(tmp_path / 'no_colour')
  serving.export(serving.Colorizer(keras.Model(inputs, no_colour), names.FUSION,
                                   CONFIG.net_config()), graph, model_dir)

  config = CONFIG.replace(psnr_lower_bound=0.0, min_psnr_gain=0.01)
  eval_config = pipeline_module.eval_config(config)
  for metric in eval_config.metrics_specs[0].metrics:
    metric.threshold.ClearField('change_threshold')
  examples = metadata.latest_outputs(store, names.EXAMPLE_GEN)['examples'][0].uri
  output = str(tmp_path / 'evaluation')
  with mock.patch.object(sys, 'argv', sys.argv[:1]):
    tfma.run_model_analysis(
        eval_shared_model=tfma.default_eval_shared_model(model_dir, eval_config=eval_config),
        eval_config=eval_config, data_location=os.path.join(examples, 'Split-val', '*'),
        file_format='tfrecords', output_path=output)
  validation = tfma.load_validation_result(output)
  assert not validation.validation_ok
  failed = {failure.metric_key.name for result in validation.metric_validations_per_slice
            for failure in result.failures}
  assert failed == {'psnr_gain_over_gray'}
  metrics_by_name = {key: value['doubleValue'] for _, slices in tfma.load_eval_result(
      output).slicing_metrics for key, value in slices[''][''].items()}
  assert metrics_by_name['psnr_gain_over_gray'] == pytest.approx(0.0, abs=1e-4)


def test_evaluate_command_scores_a_voc_folder(pipeline_root, tmp_path, capsys):
  """evaluate on the sample's val split plus a corrupt photo: the table, metrics.json, one CSV row
  per scored photo, gallery pages, and the corrupt photo skipped with the ExampleGen's reason."""
  import csv
  import json

  from PIL import Image

  import pipeline_runner

  data = copy_voc(SAMPLE, str(tmp_path / 'VOC2007'))
  with open(os.path.join(data, 'JPEGImages', 'broken.jpg'), 'wb') as f:
    f.write(b'\xff\xd8\xff\xe0 no JPEG body')
  shutil.copy(os.path.join(data, 'Annotations', 'rocket.xml'),
              os.path.join(data, 'Annotations', 'broken.xml'))
  with open(os.path.join(data, 'ImageSets', 'Main', 'val.txt'), 'a') as f:
    f.write('broken\n')
  out = tmp_path / 'scores'
  assert pipeline_runner.main(['evaluate', '--model', os.path.join(pipeline_root, 'serving'),
                               '--data-dir', data, '--out', str(out)]) == 0
  printed = capsys.readouterr().out
  assert '| fusion (truth boxes) |' in printed and 'PSNR gain over gray' in printed
  result = json.loads((out / 'metrics.json').read_text())
  assert (result['images'], result['skipped']) == (4, 1)
  assert result['skipped_images'][0]['image_id'] == 'broken'
  assert result['skipped_images'][0]['reason'] == 'corrupt_image'
  assert list(result['metrics']) == ['gray baseline', 'full-image', 'fusion (truth boxes)']
  assert result['metrics']['gray baseline']['CF'] < 0.5  # ab = 0 has no colour
  # grace_hopper and motorcycle_right have boxes; rocket and flower have none.
  assert result['fusion_beats_full_in_boxes']['photos_with_boxes'] == 2
  # The saturation frontier starts at the outputs themselves and gets more colourful with the scale.
  assert 'saturation frontier' in printed
  for variant in ('full-image', 'fusion (truth boxes)'):
    frontier = result['saturation_frontier'][variant]
    assert [point['scale'] for point in frontier] == [1.0, 1.25, 1.5, 1.75, 2.0, 2.5]
    assert frontier[0]['gain'] == pytest.approx(result['psnr_gain_over_gray'][variant], abs=0.05)
    assert frontier[0]['CF'] == pytest.approx(result['metrics'][variant]['CF'], rel=0.05)
    cfs = [point['CF'] for point in frontier]
    assert cfs == sorted(cfs) and cfs[-1] > 1.5 * cfs[0]
    suggested = result['saturation_at_truth_cf'][variant]  # None: beyond the frontier's end
    assert suggested is None or suggested >= 1.0
  assert "saturation that reaches the truth's colourfulness" in printed
  with open(out / 'per_image.csv') as f:
    assert [row['image_id'] for row in csv.DictReader(f)] == [
        'grace_hopper', 'motorcycle_right', 'rocket', 'flower']
  page = Image.open(out / 'gallery_001.png')
  assert page.height > 4 * 200  # four photos, readable size


def test_a_plain_photo_folder_and_a_voc_folder_train_together(data_root, tmp_path, capsys):
  """`run` on photos in a nested folder (no VOC structure), boxed at ingest by the shared TFLite
  detector, together with the VOC sample: every stage trains, a model is pushed, and lineage
  names both sources and the detector by content."""
  import pipeline_runner
  from components import detectors
  from tests.test_detectors import IMAGENET1K, SSD_FILE

  folder = tmp_path / 'my photos'
  photos = sorted(os.listdir(os.path.join(IMAGENET1K, 'JPEGImages')))[:16]
  for i, name in enumerate(photos):
    os.makedirs(folder / f'roll {i % 2}', exist_ok=True)
    shutil.copy(os.path.join(IMAGENET1K, 'JPEGImages', name), folder / f'roll {i % 2}' / name)
  root = str(tmp_path / 'root')
  assert pipeline_runner.main(['run', '--preset', 'tiny', '--data-dir', str(folder),
                               '--data-dir', data_root, '--detector', SSD_FILE,
                               '--pipeline-root', root,
                               *[f'--beam-arg={a}' for a in BEAM_ARGS]]) == 0
  out = capsys.readouterr().out
  assert 'from the detector' in out and 'Pusher: serving model at' in out
  store = metadata.open_store(root)
  examples = metadata.latest_outputs(store, names.EXAMPLE_GEN)['examples'][0]
  report = ingest_report.read_report(examples.uri)
  assert report['kept'] == 16 + 12 and set(report['sources']) == {'my photos', 'VOC2007'}
  assert report['sources']['my photos']['boxes'] == report['boxes_by_source']['detector'] > 0
  assert report['sources']['VOC2007']['boxes'] == report['boxes_by_source']['annotation'] > 0
  test_validator_finds_no_anomaly_on_real_data(root)  # detector boxes fit the curated schema
  assert pipeline_runner.main(['lineage', '--pipeline-root', root]) == 0
  lineage = capsys.readouterr().out
  assert f'boxed by {os.path.abspath(SSD_FILE)} (sha256 ' in lineage  # run stores it absolute
  assert detectors.fingerprint(SSD_FILE) in lineage
  assert f'input {folder} + {data_root}' in lineage


def test_fine_tuning_starts_every_stage_from_the_pushed_model(pipeline_root, data_root, tmp_path,
                                                              capsys):
  import pipeline_runner
  from trainer import model, serving

  pushed = serving.resolve_saved_model(os.path.join(pipeline_root, 'serving'))
  root = str(tmp_path / 'tuned')
  run_pipeline(root, data_root, config=CONFIG.replace(init_model=pushed))
  store = metadata.open_store(root)
  _, saved = serving.saved_nets(pushed)
  full_uri = metadata.latest_outputs(store, names.TRAINERS[names.FULL])['model'][0].uri
  started = model.ColorNet(CONFIG.net_config(), 'full').model
  started.load_weights(names.weights_file(full_uri, 'full_initial'))
  for mine, theirs in zip(started.get_weights(), saved['full'].model.get_weights()):
    np.testing.assert_array_equal(mine, theirs)  # bit-identical at the first step
  assert pipeline_runner.main(['lineage', '--pipeline-root', root]) == 0
  lineage = capsys.readouterr().out
  assert lineage.count(f'started from the fusion model {pushed}') == 3  # all three Trainers


def test_a_pipeline_with_hints_trains_every_stage_with_them_and_serves_them(data_root, tmp_path,
                                                                             capsys):
  """hints=True: every stage's net has the hint branch (stage 3's frozen nets are stage 1-2's,
  bit for bit), the pushed model takes hints, and `evaluate --hints` writes its table, metrics and
  plot. With tflite_export the pushed model holds its TFLite file, which lineage names."""
  import json

  import pipeline_runner
  from trainer import model, serving

  root = str(tmp_path / 'hinted')
  config = CONFIG.replace(hints=True, tflite_export='float16')
  run_pipeline(root, data_root, config=config)
  store = metadata.open_store(root)
  uris = {stage: metadata.latest_outputs(store, names.TRAINERS[stage])['model'][0].uri
          for stage in names.STAGES}
  for stage, net in ((names.FULL, 'full'), (names.INSTANCE, 'instance')):
    trained = model.ColorNet(config.net_config(), net)
    trained.model.load_weights(names.weights_file(uris[stage], net))
    frozen = model.ColorNet(config.net_config(), net)
    frozen.model.load_weights(names.weights_file(uris[names.FUSION], net))
    assert trained.hint_convs
    for point, conv in trained.hint_convs.items():
      np.testing.assert_array_equal(conv.get_weights()[0],
                                    frozen.hint_convs[point].get_weights()[0])
  pushed = serving.resolve_saved_model(os.path.join(root, 'serving'))
  assert serving.load_net_record(pushed)[1].hints
  # The fusion Trainer wrote the TFLite file into its model, checked on val items; Pusher pushed it.
  with open(os.path.join(pushed, names.TFLITE_RECORD)) as f:
    record = json.load(f)
  assert os.path.getsize(os.path.join(pushed, names.TFLITE_FILE)) == record['bytes']
  assert record['quantization'] == 'float16' and record['checked_items'] > 0
  assert record['max_ab_difference'] < 2.0
  assert pipeline_runner.main(['lineage', '--pipeline-root', root]) == 0
  assert (f"TFLite file {os.path.join(pushed, names.TFLITE_FILE)} (float16, sha256 "
          f"{record['sha256']})") in capsys.readouterr().out
  out = tmp_path / 'scores'
  assert pipeline_runner.main(['evaluate', '--model', pushed, '--data-dir', data_root,
                               '--hints', '0,2,5', '--out', str(out)]) == 0
  printed = capsys.readouterr().out
  assert 'PSNR with colour hints' in printed and '| 5 |' in printed
  result = json.loads((out / 'metrics.json').read_text())
  assert result['hints']['counts'] == [0, 2, 5]
  full_curve = result['hints']['full-image']
  # 0 hints is the plain output; the plot is written.
  assert full_curve[0]['PSNR'] == pytest.approx(result['metrics']['full-image']['PSNR'])
  assert os.path.getsize(result['hints']['plot']) > 1000
  # Its TFLite export colours on its own: no hint input, every signature builtin ops only (the
  # crops' hints would need CropAndResize), the same ab as the SavedModel given no hints.
  tflite = tmp_path / 'hinted.tflite'
  assert pipeline_runner.main(['export', '--model', pushed, '--format', 'tflite',
                               '--out', str(tflite)]) == 0
  printed = capsys.readouterr().out
  assert 'signatures full, fused, fused_1' in printed
  difference, magnitude = re.search(r'mean \|difference\| ([\d.]+).*mean \|ab\| is ([\d.]+)',
                                    printed).groups()
  assert float(difference) < 0.02 * float(magnitude)


# --- the Trainers under tf.distribute: tests/trainer_worker.py runs one Trainer process on run 1's
# outputs, as a replica of a training job does (TF_CONFIG, logical CPU devices set per process).

def _free_ports(count: int):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _start_trainer(pipeline_root: str, out_dir: str, *flags: str, log: Optional[str] = None,
                   tf_config=None, tmpdir: Optional[str] = None) -> subprocess.Popen:
  """A trainer process writing OUT_DIR/model and OUT_DIR/model_run, its output to `log`
  (default OUT_DIR.log)."""
  env = {k: v for k, v in os.environ.items() if k != 'TF_CONFIG'}
  if tf_config:
    env['TF_CONFIG'] = json.dumps(tf_config)
  if tmpdir:
    env['TMPDIR'] = tmpdir
  return subprocess.Popen(
      [sys.executable, '-m', 'tests.trainer_worker', pipeline_root, out_dir, *flags],
      cwd=configs.REPO_ROOT, env=env, stdout=open(log or out_dir + '.log', 'w'),
      stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen, log: str, timeout: float = 300):
  """(exit code, output) of a trainer process; one that outlives `timeout` is a hang."""
  try:
    code = process.wait(timeout)
  except subprocess.TimeoutExpired:
    process.kill()
    pytest.fail(f'{log}: still running after {timeout} s')
  with open(log) as f:
    return code, f.read()


def _start_workers(pipeline_root: str, job_dir: str, tmp_path, *flags: str,
                   worker_timeout: int = 20):
  """Two worker processes of one multi-worker full stage on 127.0.0.1, both given the output
  artifacts in job_dir as a training job's replicas are: (processes, their logs, worker
  addresses, each worker's TMPDIR)."""
  addresses = [f'127.0.0.1:{port}' for port in _free_ports(2)]
  processes, logs, tmpdirs = [], [], []
  for index in range(2):
    logs.append(str(tmp_path / f'worker{index}.log'))
    tmpdirs.append(str(tmp_path / f'tmp{index}'))
    os.makedirs(tmpdirs[-1])
    processes.append(_start_trainer(
        pipeline_root, job_dir, '--distribution', 'multi_worker', '--worker-timeout',
        str(worker_timeout), *flags,
        log=logs[-1], tmpdir=tmpdirs[-1],
        tf_config={'cluster': {'worker': addresses}, 'task': {'type': 'worker', 'index': index}}))
  return processes, logs, addresses, tmpdirs


def _read_weights_json(out_dir: str, name: str):
  with open(os.path.join(out_dir, 'model', names.WEIGHTS_DIR, name)) as f:
    return json.load(f)


def _frame_predictions(pipeline_root: str, weights_files):
  """The full net's ab on every transformed frame of run 1, with each of `weights_files`."""
  from trainer import data, model

  transform = metadata.latest_outputs(metadata.open_store(pipeline_root), names.TRANSFORM)
  spec = tft.TFTransformOutput(transform['transform_graph'][0].uri).transformed_feature_spec()
  files = glob.glob(os.path.join(transform['transformed_examples'][0].uri, 'Split-*', '*'))
  gray = np.concatenate([g for g, _ in data.make_dataset(files, spec, names.FULL,
                                                         CONFIG.net_config(), 16, False)])
  net = model.ColorNet(CONFIG.net_config(), 'full')
  predictions = []
  for path in weights_files:
    net.model.load_weights(path)
    predictions.append(net.model(gray, training=False).numpy())
  return predictions


def test_two_logical_cpus_train_the_stage_one_device_trains(pipeline_root, tmp_path):
  """MirroredStrategy over 2 logical CPU devices at 2 per replica against one device at batch 4,
  from the same weights (run 1's full net, through init_model), one step per epoch."""
  start = path_utils.serving_model_path(
      _model_uri(metadata.open_store(pipeline_root), names.TRAINERS[names.FULL]))
  common = ['--logical-cpus', '2', '--steps', '1', '--epochs', '4', '--init-model', start]
  runs = {'mirrored': '2', 'one_device': '4'}
  processes = {name: _start_trainer(pipeline_root, str(tmp_path / name), '--distribution', name,
                                    '--batch-size', batch, *common)
               for name, batch in runs.items()}
  for name, process in processes.items():
    code, output = _finish(process, str(tmp_path / name) + '.log')
    assert code == 0 and 'TRAINER DONE' in output, output[-3000:]
  mirrored, one = (str(tmp_path / name) for name in runs)
  training = _read_weights_json(mirrored, names.TRAINING_FILE)
  assert training['strategy'].startswith('MirroredStrategy: 2 replicas (CPU:0, CPU:1)')
  assert (training['global_batch'], training['per_replica_batch']) == (4, 2)
  assert _read_weights_json(one, names.TRAINING_FILE)['replicas'] == 1
  # Synchronized batch norm: the 2 replicas see the statistics of the global batch.
  np.testing.assert_allclose(_read_weights_json(mirrored, names.HISTORY_FILE)['loss'],
                             _read_weights_json(one, names.HISTORY_FILE)['loss'], rtol=0.01)
  weights = lambda run, net: names.weights_file(os.path.join(run, 'model'), net)  # noqa: E731
  initial, after_mirrored, after_one = _frame_predictions(pipeline_root, [
      weights(one, 'full_initial'), weights(mirrored, 'full'), weights(one, 'full')])
  moved = np.abs(after_one - initial).mean()
  # Adam's first steps move near-zero gradients by a whole step whatever their sign, so summing
  # in another order flips a few: outputs within 5 % of how far training moved them (about 2 %).
  assert moved > 0
  assert np.abs(after_mirrored - after_one).mean() < 0.05 * moved


def test_the_fusion_stage_trains_under_mirrored_in_float16_with_its_nets_frozen(pipeline_root,
                                                                               tmp_path):
  """Stage 3's frozen nets are built in the strategy's scope; mixed_float16 (a GPU's precision,
  which also runs on CPUs) trains with loss scaling under the strategy."""
  out_dir = str(tmp_path / 'fusion')
  code, output = _finish(_start_trainer(pipeline_root, out_dir, '--stage', names.FUSION,
                                        '--distribution', 'mirrored', '--logical-cpus', '2',
                                        '--precision', 'mixed_float16', '--steps', '2',
                                        '--epochs', '2'), out_dir + '.log')
  assert code == 0 and 'TRAINER DONE' in output, output[-3000:]
  training = _read_weights_json(out_dir, names.TRAINING_FILE)
  assert (training['replicas'], training['precision']) == (2, 'mixed_float16')
  assert np.isfinite(_read_weights_json(out_dir, names.HISTORY_FILE)['loss']).all()
  store = metadata.open_store(pipeline_root)
  handoff.assert_fusion_keeps_both_nets(CONFIG, _model_uri(store, names.TRAINERS[names.FULL]),
                                        _model_uri(store, names.TRAINERS[names.INSTANCE]),
                                        os.path.join(out_dir, 'model'))
  assert os.path.isdir(path_utils.serving_model_path(os.path.join(out_dir, 'model')))


def test_two_worker_processes_write_one_model_and_match_one_process(pipeline_root, tmp_path):
  # Global batch 8 = the sample's whole train split: every step sees the same frames however
  # the workers shard them, so the loss curve is comparable step by step.
  flags = ['--steps', '1', '--epochs', '3']
  job = str(tmp_path / 'job')
  # A third process shares the cores: a longer wait for the other worker to come up.
  processes, logs, _, tmpdirs = _start_workers(pipeline_root, job, tmp_path, '--batch-size', '4',
                                               *flags, worker_timeout=90)
  alone = str(tmp_path / 'one_process')
  processes.append(_start_trainer(pipeline_root, alone, '--distribution', 'one_device',
                                  '--batch-size', '8', *flags))
  for process, log in zip(processes, logs + [alone + '.log']):
    code, output = _finish(process, log)
    assert code == 0 and 'TRAINER DONE' in output, output[-3000:]
  training = _read_weights_json(job, names.TRAINING_FILE)
  assert training['strategy'].startswith('MultiWorkerMirroredStrategy: 2 replicas on 2 workers')
  assert training['global_batch'] == 8
  # Exactly one model and one set of summaries, the chief's: the other worker wrote into a
  # scratch folder in its TMPDIR, removed (two writers would leave two event files per folder).
  assert sorted(os.listdir(os.path.join(job, 'model', names.WEIGHTS_DIR))) == [
      'full.h5', names.HISTORY_FILE, names.TRAINING_FILE]
  assert os.path.isdir(path_utils.serving_model_path(os.path.join(job, 'model')))
  for folder in ('train', 'validation'):
    events = os.listdir(os.path.join(job, 'model_run', folder))
    assert len(events) == 1 and events[0].startswith('events.out.tfevents'), events
  assert os.listdir(tmpdirs[1]) == []
  np.testing.assert_allclose(_read_weights_json(job, names.HISTORY_FILE)['loss'],
                             _read_weights_json(alone, names.HISTORY_FILE)['loss'], rtol=0.01)


def test_a_dead_worker_fails_the_stage_naming_it(pipeline_root, tmp_path):
  job = str(tmp_path / 'job')
  processes, logs, addresses, _ = _start_workers(pipeline_root, job, tmp_path, '--steps', '5',
                                                 '--epochs', '50')
  deadline = time.monotonic() + 300
  while 'Epoch 2/50' not in open(logs[0]).read():  # in the middle of training
    assert processes[0].poll() is None and time.monotonic() < deadline, \
        open(logs[0]).read()[-3000:]
    time.sleep(0.5)
  processes[1].kill()
  killed = time.monotonic()
  code, output = _finish(processes[0], logs[0], timeout=120)  # 'not hang'
  waited = time.monotonic() - killed
  assert code != 0
  assert f'WorkerLost: full stage: worker 1 ({addresses[1]}) stopped answering' in output, \
      output[-3000:]
  assert waited < 60, f'the chief took {waited:.0f} s to give up (worker_timeout 20 s)'
  assert not os.path.exists(path_utils.serving_model_path(os.path.join(job, 'model')))
