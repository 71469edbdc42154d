"""tools/replay.py's pieces that need no pipeline: task order, artifact queries, output merging."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from pipeline import configs

from tools import replay

MODEL_TYPE = {'instanceSchema': 'title: tfx.Model\ntype: object\n'}
BLESSING_TYPE = {'instanceSchema': 'title: tfx.ModelBlessing\ntype: object\n'}


def _task(*upstream, producers=()):
  return {'dependentTasks': list(upstream), 'inputs': {'artifacts': {
      f'in{i}': {'taskOutputArtifact': {'producerTask': p, 'outputArtifactKey': 'x'}}
      for i, p in enumerate(producers)}}}


def test_tasks_run_after_what_they_depend_on():
  tasks = {'pusher': _task('evaluator', producers=['trainer']), 'evaluator': _task('trainer'),
           'trainer': _task(producers=['gen']), 'gen': _task(), 'stats': _task('gen')}
  order = replay.topological_order(tasks)
  assert sorted(order) == sorted(tasks)
  for name, task in tasks.items():
    for parent in task['dependentTasks'] + [a['taskOutputArtifact']['producerTask'] for a in
                                            task['inputs']['artifacts'].values()]:
      assert order.index(parent) < order.index(name)


def test_a_cycle_or_an_unknown_task_is_an_error():
  with pytest.raises(replay.ReplayError, match='cycle: a -> b -> a'):
    replay.topological_order({'a': _task('b'), 'b': _task('a')})
  with pytest.raises(replay.ReplayError, match='task a depends on ghost'):
    replay.topological_order({'a': _task('ghost')})


def test_the_queries_tfx_compiles_for_the_latest_blessed_model():
  artifacts = [
      {'name': 'job1/Evaluator/blessing', 'type': BLESSING_TYPE,
       'metadata': {'blessed': 1.0, 'current_model_id': 'job1/fusion/model'}},
      {'name': 'job1/fusion/model', 'type': MODEL_TYPE, 'metadata': {}},
      {'name': 'job2/Evaluator/blessing', 'type': BLESSING_TYPE,
       'metadata': {'blessed': 0.0, 'current_model_id': 'job2/fusion/model'}},
      {'name': 'job2/fusion/model', 'type': MODEL_TYPE, 'metadata': {}},
  ]
  blessed = replay._query(artifacts, 'schema_title="tfx.ModelBlessing" AND state=LIVE AND '
                                     'metadata.blessed.number_value=1')
  assert [a['name'] for a in blessed] == ['job1/Evaluator/blessing']
  model = replay._query(artifacts, 'schema_title="tfx.Model" AND state=LIVE AND '
                                   'name="job1/fusion/model"')
  assert [a['name'] for a in model] == ['job1/fusion/model']
  assert replay._query(artifacts, 'schema_title="tfx.Model" AND name=""') == []
  with pytest.raises(replay.ReplayError, match="clause 'create_time>0'"):
    replay._query(artifacts, 'create_time>0')
  with pytest.raises(replay.ReplayError, match="field 'uri'"):
    replay._query(artifacts, 'uri="/x"')


def test_outputs_keep_their_uri_and_gain_what_the_executor_reported():
  assigned = {'blessing': {'artifacts': [{'name': 'n', 'uri': '/r/b', 'type': BLESSING_TYPE,
                                          'metadata': {}}]},
              'evaluation': {'artifacts': [{'name': 'e', 'uri': '/r/e', 'metadata': {}}]}}
  reported = {'artifacts': {'blessing': {'artifacts': [{'uri': '/r/b',
                                                        'metadata': {'blessed': 1.0}}]}}}
  merged = replay._merge_outputs(assigned, reported)
  assert merged['blessing'] == [{'name': 'n', 'uri': '/r/b', 'type': BLESSING_TYPE,
                                 'metadata': {'blessed': 1.0}}]
  assert merged['evaluation'] == [{'name': 'e', 'uri': '/r/e', 'metadata': {}}]


def test_a_task_process_sees_only_the_staged_image(tmp_path):
  """A module the Dockerfile would not copy fails in the task, even though this checkout (an
  editable install) has it."""
  shutil.copytree(os.path.join(configs.REPO_ROOT, 'components'), tmp_path / 'components')
  result = subprocess.run(
      [sys.executable, '-c', replay._BOOT, 'components.voc_example_gen.driver', '--help'],
      cwd=tmp_path, env={**os.environ, 'PYTHONPATH': str(tmp_path)}, capture_output=True,
      text=True, timeout=120)
  assert result.returncode != 0
  assert "No module named 'trainer'" in result.stderr, result.stderr[-2000:]
