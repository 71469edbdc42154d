"""Kubeflow Pipelines V2 / Vertex AI: compile the one `create_pipeline` into a PipelineSpec JSON.

TFX's compiler hard-codes its own ExampleGen driver as the VocExampleGen task's preCacheCheck hook;
that driver fingerprints only the split list files, so on Vertex an edited JPEG or annotation would
hit the cache. The compiled spec runs ours instead (components/voc_example_gen/driver.py), which
extends the same driver's output with the images' and annotations' fingerprints.
"""
from __future__ import annotations

import json
import os

from tfx import v1 as tfx

from trainer import names

TFX_DRIVER_MODULE = 'tfx.orchestration.kubeflow.v2.file_based_example_gen.driver'
VOC_DRIVER_MODULE = 'components.voc_example_gen.driver'


def compile_spec(tfx_pipeline: tfx.dsl.Pipeline, image: str, output: str) -> str:
  """Writes the PipelineSpec job JSON for `image` to `output`; returns its path."""
  output = os.path.abspath(output)
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
      output_dir=os.path.dirname(output), output_filename=os.path.basename(output))
  runner.run(tfx_pipeline, write_out=True)
  with open(output) as f:
    job = json.load(f)
  use_voc_driver(job['pipelineSpec'])
  with open(output, 'w') as f:
    json.dump(job, f, indent=2, sort_keys=True)
  return output


def use_voc_driver(spec: dict) -> None:
  """Points the VocExampleGen task's preCacheCheck hook at our driver module."""
  executor = spec['components'][names.EXAMPLE_GEN]['executorLabel']
  hook = spec['deploymentSpec']['executors'][executor]['container']['lifecycle']['preCacheCheck']
  command = hook['command']
  if command[-1] != TFX_DRIVER_MODULE:
    raise ValueError(f'{names.EXAMPLE_GEN} preCacheCheck runs {command}, expected TFX\'s driver '
                     f'{TFX_DRIVER_MODULE} (has the TFX compiler changed?)')
  hook['command'] = [*command[:-1], VOC_DRIVER_MODULE]
