"""The Dockerfile checked against a compiled spec and the lock, without a container engine."""
from __future__ import annotations

import json
import os
import shutil

import pytest

import pipeline_runner
from pipeline import configs
from tools import container

DOCKERFILE = os.path.join(configs.REPO_ROOT, 'Dockerfile')


@pytest.fixture(scope='module')
def spec(tmp_path_factory) -> dict:
  """The spec `compile` writes for the image (default --container-root /instcolor)."""
  output = tmp_path_factory.mktemp('spec') / 'pipeline.json'
  assert pipeline_runner.main(['compile', '--image', 'gcr.io/acme/instcolor:1.0',
                               '--pipeline-root', 'gs://acme/root', '--data-dir',
                               'gs://acme/VOCdevkit/VOC2012', '--output', str(output)]) == 0
  return json.loads(output.read_text())['pipelineSpec']


def _problems(spec, dockerfile_text: str, tmp_path, context: str = configs.REPO_ROOT):
  path = tmp_path / 'Dockerfile'
  path.write_text(dockerfile_text)
  return container.recipe_problems(spec, container.Dockerfile.parse(str(path)), context)


def _dockerfile() -> str:
  with open(DOCKERFILE) as f:
    return f.read()


def test_the_dockerfile_builds_an_image_that_runs_the_spec(spec):
  recipe = container.Dockerfile.parse(DOCKERFILE)
  assert recipe.base_tfx_version == container.read_lock()['tfx']['version'] == '1.16.0'
  assert container.recipe_problems(spec, recipe) == []
  # The schema the spec names is the repo's, where the Dockerfile copies it.
  (schema,) = [s for s in container.spec_strings(spec) if s.endswith('schema.pbtxt')]
  assert schema == '/instcolor/schema/schema.pbtxt'
  assert recipe.source_of(schema) == os.path.join(configs.REPO_ROOT, 'schema', 'schema.pbtxt')


@pytest.mark.parametrize('edit, problem', [
    (('tfx:1.16.0', 'tfx:1.15.0'), 'is not TFX 1.16.0'),
    (('COPY schema/ schema/\n', ''), '/instcolor/schema/schema.pbtxt, which no COPY puts'),
    (('COPY trainer/ trainer/\n', ''), 'the spec names trainer.run_fns.run_full, which is not in'),
    (('"dill>=0.3.1,<0.4" ', ''), "pyproject.toml requires dill"),
    (('"tensorflow-hub==0.16.1"', '"tensorflow-hub==0.15.0"'), 'but uv.lock has tensorflow-hub'),
    (('PYTHONPATH=/instcolor', 'PYTHONPATH=/opt'), 'PYTHONPATH in the image does not hold'),
    (('TF_USE_LEGACY_KERAS=1', 'TF_USE_LEGACY_KERAS=0'), 'TF_USE_LEGACY_KERAS=1'),
])
def test_a_broken_recipe_is_reported(spec, tmp_path, edit, problem):
  old, new = edit
  text = _dockerfile()
  assert old in text
  problems = _problems(spec, text.replace(old, new), tmp_path)
  assert any(problem in p for p in problems), problems


def test_an_import_the_image_lacks_is_reported(tmp_path):
  # A copy of the project whose run_fn module imports scikit-image (a dev dependency: the lock
  # has it, the image does not).
  context = tmp_path / 'project'
  shutil.copytree(configs.REPO_ROOT, context, ignore=shutil.ignore_patterns(
      '.venv', '.git', '.tools', 'data', 'instcolor_output', '__pycache__'))
  (context / 'trainer' / 'extra_run_fns.py').write_text(
      'import skimage.color\n\ndef run_fn(fn_args):\n  pass\n')
  problems = _problems({'run_fn': 'trainer.extra_run_fns.run_fn'}, _dockerfile(), tmp_path,
                       str(context))
  assert problems == ['trainer.extra_run_fns import skimage (scikit-image), which the image does '
                      'not install'], problems


def test_staging_copies_what_the_dockerfile_copies(tmp_path):
  recipe = container.Dockerfile.parse(DOCKERFILE)
  recipe.stage(str(tmp_path))
  staged = sorted(os.listdir(tmp_path))
  assert staged == sorted(['README.md', 'components', 'pipeline', 'pipeline_runner.py',
                           'pyproject.toml', 'schema', 'tools', 'trainer'])
  assert os.path.isfile(tmp_path / 'trainer' / 'run_fns.py')
  assert not any('__pycache__' in d for d, _, _ in os.walk(tmp_path))


def test_a_spec_for_a_bucket_is_refused_before_any_task(tmp_path, capsys):
  output = tmp_path / 'pipeline.json'
  assert pipeline_runner.main(['compile', '--image', 'local/instcolor:dev', '--pipeline-root',
                               'gs://acme/root', '--data-dir', 'gs://acme/VOC2012', '--output',
                               str(output)]) == 0
  assert pipeline_runner.main(['replay', str(output), '--pipeline-root', str(tmp_path)]) == 1
  assert 'compile it with a local --pipeline-root' in capsys.readouterr().err
  assert not list(tmp_path.glob('replay-*'))  # nothing started
