"""Kubeflow V2 / Vertex compile: the same create_pipeline, wired as intended, resolvable in the image."""
from __future__ import annotations

import importlib
import json

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
