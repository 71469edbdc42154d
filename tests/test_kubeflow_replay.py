"""The compiled Kubeflow V2 spec, replayed task by task through the image's entrypoints (-m e2e).

Compiles the tiny preset for the bundled sample and a local root, then runs every task as its
container would (tools/replay.py): the image's WORKDIR staged from the Dockerfile's COPY lines, a
subprocess per task with the Dockerfile's ENV, ExecutorInputs built from the spec.
"""
from __future__ import annotations

import glob
import io
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import pipeline_runner
from pipeline import configs
from tests import handoff
from tests.conftest import SAMPLE
from tools import replay
from trainer import names

pytestmark = pytest.mark.e2e

CONFIG = configs.get_config('tiny')
CONTAINER_TASKS = {names.EXAMPLE_GEN, 'StatisticsGen', 'ImportSchemaGen', 'ExampleValidator',
                   names.TRANSFORM, *names.TRAINERS.values(), names.EVALUATOR, names.PUSHER,
                   names.ABLATION}


def _compile(root: str, output: str) -> str:
  assert pipeline_runner.main([
      'compile', '--preset', 'tiny', '--image', 'local/instcolor:test', '--pipeline-root', root,
      '--data-dir', SAMPLE, '--output', output,
      # In-process Beam, as in the LocalDagRunner e2e: the same code paths, faster on 2 cores.
      '--beam-arg=--direct_running_mode=in_memory', '--beam-arg=--direct_num_workers=1']) == 0
  return output


def _replay(spec: str, root: str):
  return {run.name: run for run in replay.Replay(spec, root, log=lambda line: None).run()}


@pytest.fixture(scope='module')
def first(tmp_path_factory):
  """(root, spec, {task: TaskRun}) of a first replay in a fresh root."""
  root = str(tmp_path_factory.mktemp('replay_root'))
  spec = _compile(root, str(tmp_path_factory.mktemp('spec') / 'pipeline.json'))
  return root, spec, _replay(spec, root)


def _output(runs, task: str, key: str) -> dict:
  (artifact,) = runs[task].outputs[key]
  return artifact


def test_every_task_ran_and_the_first_has_no_baseline(first):
  _, _, runs = first
  assert {name for name, run in runs.items() if run.status == 'ran'} == CONTAINER_TASKS
  resolvers = {name: run for name, run in runs.items() if run.status == 'resolved'}
  assert len(resolvers) == 2 and all(r.outputs and not any(r.outputs.values())
                                     for r in resolvers.values())  # nothing blessed before
  assert json.loads(_output(runs, names.EXAMPLE_GEN, 'examples')['metadata']['split_names']) == [
      'train', 'val']
  assert _output(runs, names.EVALUATOR, 'blessing')['metadata']['blessed'] == 1


def test_the_trainers_hand_weights_forward(first):
  _, _, runs = first
  full, instance, fusion = (_output(runs, names.TRAINERS[stage], 'model')['uri']
                            for stage in names.STAGES)
  handoff.assert_instance_starts_from_full(CONFIG, full, instance)
  handoff.assert_fusion_keeps_both_nets(CONFIG, full, instance, fusion)


def test_the_pushed_model_serves_a_real_photo(first):
  root, _, runs = first
  pushed = _output(runs, names.PUSHER, 'pushed_model')['metadata']
  assert pushed['pushed'] == 1 and pushed['pushed_destination'].startswith(root)
  serve = tf.saved_model.load(pushed['pushed_destination']).signatures['serving_default']
  photo = sorted(glob.glob(os.path.join(SAMPLE, 'JPEGImages', '*.jpg')))[0]
  with open(photo, 'rb') as f:
    jpeg = f.read()
  out = serve(images=tf.constant([jpeg]), boxes=tf.constant([[[0.1, 0.2, 0.8, 0.7]]]))
  colorized = Image.open(io.BytesIO(out['colorized'].numpy()[0]))
  assert colorized.size == Image.open(photo).size and colorized.mode == 'RGB'
  assert np.asarray(colorized).std() > 0


def test_a_second_replay_reuses_the_cache_and_evaluates_against_the_blessed_model(first):
  root, spec, runs = first
  again = _replay(spec, root)
  assert {n for n, r in again.items() if r.status == 'ran'} == {names.EVALUATOR, names.PUSHER}
  baseline = again['latest_blessed_model_resolver-model-resolver'].outputs['model']
  assert [a['name'] for a in baseline] == [_output(runs, names.TRAINERS[names.FUSION],
                                                   'model')['name']]
  assert _output(again, names.EVALUATOR, 'blessing')['metadata']['blessed'] == 1


def test_a_broken_module_path_fails_naming_the_task(first, tmp_path, capsys):
  root, spec, _ = first
  with open(spec) as f:
    job = json.load(f)
  trainer = names.TRAINERS[names.FULL]
  run_fn = job['pipelineSpec']['root']['dag']['tasks'][trainer]['inputs']['parameters']['run_fn']
  run_fn['runtimeValue']['constantValue']['stringValue'] = 'trainer.run_fns.run_ful'
  broken = tmp_path / 'broken.json'
  broken.write_text(json.dumps(job))
  assert pipeline_runner.main(['replay', str(broken), '--pipeline-root', root]) == 1
  err = capsys.readouterr().err
  assert f'task {trainer} failed' in err and 'run_ful' in err, err[-2000:]
  record = sorted(glob.glob(os.path.join(root, 'replay-*', replay.RECORD)))[-1]
  with open(record) as f:
    tasks = json.load(f)['tasks']
  # Upstream came from the cache, as on Vertex; the broken task is recorded as failed.
  assert tasks[names.TRANSFORM]['status'] == 'cached' and tasks[trainer]['status'] == 'failed'


def _root_with_earlier_replays(first, root: str) -> str:
  """A fresh root that knows the first replay's tasks (its records: their outputs stay where
  they are), so upstream tasks come from the cache and the first root is left as it was."""
  for record in glob.glob(os.path.join(first[0], 'replay-*', replay.RECORD)):
    os.makedirs(os.path.join(root, os.path.basename(os.path.dirname(record))))
    shutil.copyfile(record, os.path.join(root, os.path.basename(os.path.dirname(record)),
                                         replay.RECORD))
  return root


def _compile_vertex(root: str, output: str) -> str:
  assert pipeline_runner.main([
      'compile', '--preset', 'tiny', '--image', 'local/instcolor:test', '--pipeline-root', root,
      '--data-dir', SAMPLE, '--output', output, '--vertex-training',
      'project=acme,machine_type=a2-highgpu-2g,accelerator_type=NVIDIA_TESLA_A100,'
      'accelerator_count=2,replicas=2',
      '--beam-arg=--direct_running_mode=in_memory', '--beam-arg=--direct_num_workers=1']) == 0
  return output


def test_vertex_training_jobs_are_checked_and_their_trainers_run_here(first, tmp_path):
  root = _root_with_earlier_replays(first, str(tmp_path / 'root'))
  spec = _compile_vertex(first[0], str(tmp_path / 'vertex.json'))  # paths of the first root
  lines = []
  runs = {run.name: run for run in replay.Replay(spec, root, log=lines.append).run()}
  assert {n for n, r in runs.items() if r.status == 'ran'} == {
      *names.TRAINERS.values(), names.EVALUATOR, names.PUSHER, names.ABLATION}  # the rest: cached
  checked = [line for line in lines if 'Vertex AI job checked' in line]
  assert len(checked) == 3 and all(
      '2 x a2-highgpu-2g with 2 x NVIDIA_TESLA_A100, image local/instcolor:test' in line
      for line in checked), lines
  assert 'components.fusion_trainer.executor.Executor' in checked[-1]
  full, instance, fusion = (_output(runs, names.TRAINERS[stage], 'model')['uri']
                            for stage in names.STAGES)
  handoff.assert_fusion_keeps_both_nets(CONFIG, full, instance, fusion)
  assert _output(runs, names.PUSHER, 'pushed_model')['metadata']['pushed'] == 1


def test_a_vertex_job_in_another_image_is_refused(first, tmp_path):
  root = _root_with_earlier_replays(first, str(tmp_path / 'root'))
  spec = _compile_vertex(first[0], str(tmp_path / 'vertex.json'))
  with open(spec) as f:
    job = json.load(f)
  trainer = names.TRAINERS[names.FULL]
  custom_config = job['pipelineSpec']['root']['dag']['tasks'][trainer]['inputs']['parameters'][
      'custom_config']['runtimeValue']['constantValue']
  config = json.loads(custom_config['stringValue'])
  for pool in config['ai_platform_training_args']['job_spec']['worker_pool_specs']:
    pool['container_spec']['image_uri'] = 'gcr.io/tfx-oss-public/tfx:1.16.0'
  custom_config['stringValue'] = json.dumps(config)
  with open(spec, 'w') as f:
    json.dump(job, f)
  with pytest.raises(replay.ReplayError, match=(
      f"task {trainer}: its Vertex AI training job spec is incomplete: worker pool 0 runs image "
      f"'gcr.io/tfx-oss-public/tfx:1.16.0', not the pipeline's 'local/instcolor:test'")):
    replay.Replay(spec, root, log=lambda line: None).run()
