"""Kubeflow V2 / Vertex compile: the same create_pipeline, wired as intended, resolvable in the image."""
from __future__ import annotations

import importlib
import json

import pytest

import pipeline_runner


def _resolve(dotted: str):
  module, _, name = dotted.rpartition('.')
  return getattr(importlib.import_module(module), name)


def test_compiled_spec(tmp_path):
  output = tmp_path / 'pipeline.json'
  assert pipeline_runner.main([
      'compile', '--image', 'gcr.io/acme/instcolor:1.0', '--pipeline-root', 'gs://acme/root',
      '--data-dir', 'gs://acme/VOCdevkit/VOC2012', '--output', str(output),
      '--beam-arg=--runner=DataflowRunner', '--beam-arg=--region=europe-west4']) == 0
  spec = json.loads(output.read_text())['pipelineSpec']
  assert {'VocExampleGen', 'StatisticsGen', 'ImportSchemaGen', 'ExampleValidator', 'Transform',
          'full_trainer', 'instance_trainer', 'fusion_trainer', 'Evaluator', 'Pusher',
          'AblationGallery'} <= set(spec['components'])
  tasks = spec['root']['dag']['tasks']

  def producer(task, key):
    return tasks[task]['inputs']['artifacts'][key]['taskOutputArtifact']

  assert producer('instance_trainer', 'base_model') == {'producerTask': 'full_trainer',
                                                        'outputArtifactKey': 'model'}
  assert producer('fusion_trainer', 'base_model')['producerTask'] == 'instance_trainer'
  assert producer('fusion_trainer', 'full_model')['producerTask'] == 'full_trainer'
  assert producer('Pusher', 'model')['producerTask'] == 'fusion_trainer'

  executors = spec['deploymentSpec']['executors']
  # The ExampleGen's driver on Vertex is ours (images and annotations in its fingerprint).
  hook = executors['VocExampleGen_executor']['container']['lifecycle']['preCacheCheck']
  assert hook['command'] == ['python', '-m', 'components.voc_example_gen.driver']
  containers = [e['container'] for e in executors.values() if 'container' in e]  # not resolvers
  images = {c['image'] for c in containers}
  assert images == {'gcr.io/acme/instcolor:1.0'}
  text = output.read_text()
  assert '--runner=DataflowRunner' in text and 'gs://acme/VOCdevkit/VOC2012' in text
  assert '/instcolor/schema/schema.pbtxt' in text  # the schema path inside the image

  # Every user function and class the spec names resolves from the installed package.
  def parameter(task, name):
    value = tasks[task]['inputs']['parameters'][name]['runtimeValue']['constantValue']
    return value.get('stringValue', value)

  for task in ('full_trainer', 'instance_trainer', 'fusion_trainer'):
    assert callable(_resolve(parameter(task, 'run_fn')))
  assert callable(_resolve(parameter('Transform', 'preprocessing_fn')))
  class_paths = [c['args'][c['args'].index('--executor_class_path') + 1] for c in containers]
  ours = [p for p in class_paths if p.startswith('components.')]
  assert {p.split('.')[1] for p in ours} == {'voc_example_gen', 'fusion_trainer',
                                             'ablation_gallery'}
  from tfx.dsl.components.base import base_executor
  for path in class_paths:
    assert issubclass(_resolve(path), base_executor.BaseExecutor), path


VERTEX = ('project=acme,region=europe-west4,machine_type=a2-highgpu-2g,'
          'accelerator_type=NVIDIA_TESLA_A100,accelerator_count=2,replicas=3')


def test_vertex_training_compiles_the_trainers_as_custom_jobs(tmp_path, capsys):
  output = tmp_path / 'pipeline.json'
  assert pipeline_runner.main([
      'compile', '--image', 'gcr.io/acme/instcolor:1.0', '--pipeline-root', 'gs://acme/root',
      '--data-dir', 'gs://acme/VOCdevkit/VOC2012', '--output', str(output),
      '--vertex-training', VERTEX]) == 0
  assert ('3 x a2-highgpu-2g with 2 x NVIDIA_TESLA_A100' in capsys.readouterr().out)
  spec = json.loads(output.read_text())['pipelineSpec']
  tasks, executors = spec['root']['dag']['tasks'], spec['deploymentSpec']['executors']

  def class_path(task):
    args = executors[spec['components'][task]['executorLabel']]['container']['args']
    return args[args.index('--executor_class_path') + 1]

  assert class_path('full_trainer') == class_path('instance_trainer') == (
      'tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor')
  assert class_path('fusion_trainer') == 'components.fusion_trainer.executor.VertexExecutor'
  assert class_path('Transform') == 'tfx.components.transform.executor.Executor'  # unchanged
  # The job's replicas run the FusionTrainer's own executor (full_model handed to run_fn).
  from components.fusion_trainer import executor
  assert _resolve(class_path('fusion_trainer'))()._GetExecutorClass() is executor.Executor
  for task in ('full_trainer', 'instance_trainer', 'fusion_trainer'):
    value = tasks[task]['inputs']['parameters']['custom_config']['runtimeValue']['constantValue']
    custom_config = json.loads(value['stringValue'])
    assert custom_config['ai_platform_enable_vertex'] is True
    assert custom_config['ai_platform_vertex_region'] == 'europe-west4'
    job = custom_config['ai_platform_training_args']
    assert job['project'] == 'acme'
    machine = {'machine_type': 'a2-highgpu-2g', 'accelerator_type': 'NVIDIA_TESLA_A100',
               'accelerator_count': 2}
    pool = {'machine_spec': machine, 'container_spec': {'image_uri': 'gcr.io/acme/instcolor:1.0'}}
    # The chief, then the other two replicas: Vertex sets TF_CONFIG on each.
    assert job['job_spec']['worker_pool_specs'] == [{**pool, 'replica_count': 1},
                                                    {**pool, 'replica_count': 2}]
    assert custom_config['distribution'] == 'auto'


@pytest.mark.parametrize('flags,message', [
    (['--vertex-training', 'machine_type=n1-standard-8'], 'needs project'),
    (['--vertex-training', 'project=acme,machine_type=n1-standard-8,gpus=2'],
     "'gpus=2' is not KEY=VALUE with KEY one of"),
    (['--vertex-training', 'project=acme,machine_type=a2-highgpu-1g,accelerator_count=1'],
     'accelerator_type and accelerator_count go together'),
    (['--vertex-training', 'project=acme,machine_type=n1-standard-8,replicas=two'],
     "replicas must be an integer, got 'two'"),
    (['--vertex-training', 'project=acme,machine_type=n1-standard-8,replicas=2',
      '--set', 'distribution=one_device'], "needs distribution auto or multi_worker, not "
                                          "'one_device'"),
])
def test_bad_vertex_training_is_refused_before_compiling(tmp_path, capsys, flags, message):
  output = tmp_path / 'pipeline.json'
  assert pipeline_runner.main([
      'compile', '--image', 'gcr.io/acme/instcolor:1.0', '--pipeline-root', 'gs://acme/root',
      '--data-dir', 'gs://acme/VOC2012', '--output', str(output), *flags]) != 0
  assert message in capsys.readouterr().err
  assert not output.exists()
