"""ExampleGen drivers whose input fingerprint covers the images and annotations, not only split lists
(for a plain photo folder: every image in its tree; for several sources: each of them).

FileBasedDriver fingerprints the files matching each split pattern. Our patterns are the ImageSets list
files, so an edited JPEG or XML would leave the fingerprint (and therefore the cache key) unchanged.
`VocDriver` fixes that for LocalDagRunner; on Kubeflow V2 / Vertex the driver is a container command
instead (the task's preCacheCheck hook), which `python -m components.voc_example_gen.driver` provides
(`pipeline/kubeflow.py` puts it in the compiled spec).
"""
from __future__ import annotations

import functools
import hashlib
import os
import sys
from typing import Any, Dict, List

import tensorflow as tf

from tfx.components.example_gen import driver, utils
from tfx.orchestration import data_types
from tfx.types import standard_component_specs
from tfx.utils import io_utils

from components.voc_example_gen import executor, voc

FINGERPRINTED_FOLDERS = ('JPEGImages', 'Annotations')


def content_fingerprint(input_base: str, list_fingerprint: str) -> str:
  """The split lists' fingerprint extended with every image's and annotation's (path, size, mtime),
  or in a plain photo folder with every photo's."""
  parts = [list_fingerprint]
  if not voc.is_voc_folder(input_base):
    return '\n'.join(parts + [_photos_fingerprint(input_base)])
  for folder in FINGERPRINTED_FOLDERS:
    parts.append(io_utils.generate_fingerprint(folder, os.path.join(input_base, folder, '*')))
  return '\n'.join(parts)


def sources_fingerprint(sources: List[str]) -> str:
  """Several sources: each one's lists, images and annotations (or photos), in order."""
  parts = []
  for root in sources:
    lists = io_utils.generate_fingerprint('lists', os.path.join(root, voc.LIST_DIR, '*.txt'))
    parts.append(f'source:{root}\n' + content_fingerprint(root, lists))
  return '\n'.join(parts)


def _fingerprint(exec_properties: Dict[str, Any], list_fingerprint: str) -> str:
  sources, _ = executor.packed_sources(exec_properties)
  if sources:
    return sources_fingerprint(sources)
  return content_fingerprint(exec_properties[standard_component_specs.INPUT_BASE_KEY],
                             list_fingerprint)


def _photos_fingerprint(input_base: str) -> str:
  """io_utils.generate_fingerprint's summary over the photos of the whole tree, with a hash of
  their paths (a renamed photo is a new id)."""
  photos = voc.list_photos(input_base)
  stats = [tf.io.gfile.stat(os.path.join(input_base, p)) for p in photos]
  mtimes = [s.mtime_nsec // 1_000_000_000 for s in stats]
  xor = functools.reduce(lambda a, b: a ^ b, mtimes, 0)
  paths = hashlib.sha256('\n'.join(photos).encode('utf-8')).hexdigest()
  return (f'split:photos,num_files:{len(photos)},total_bytes:{sum(s.length for s in stats)},'
          f'xor_checksum:{xor},sum_checksum:{sum(mtimes)},paths:{paths}')


class VocDriver(driver.FileBasedDriver):

  def resolve_exec_properties(self, exec_properties: Dict[str, Any],
                              pipeline_info: data_types.PipelineInfo,
                              component_info: data_types.ComponentInfo) -> Dict[str, Any]:
    exec_properties = super().resolve_exec_properties(exec_properties, pipeline_info,
                                                      component_info)
    exec_properties[utils.FINGERPRINT_PROPERTY_NAME] = _fingerprint(
        exec_properties, exec_properties[utils.FINGERPRINT_PROPERTY_NAME])
    return exec_properties


def run_kubeflow_v2_driver(argv: List[str]) -> None:
  """TFX's Kubeflow V2 ExampleGen driver, then the same fingerprint extension as VocDriver.

  The driver writes an ExecutorOutput whose parameter values (span, version, fingerprint) the
  launcher records and the executor entrypoint reads back as exec properties.
  """
  from google.protobuf import json_format
  from kfp.pipeline_spec import pipeline_spec_pb2
  from tfx.dsl.io import fileio
  from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
  from tfx.orchestration.kubeflow.v2.file_based_example_gen import driver as kubeflow_driver

  args = kubeflow_driver._parse_flags(argv)  # pylint: disable=protected-access
  kubeflow_driver.main(args)
  executor_input = pipeline_spec_pb2.ExecutorInput()
  json_format.Parse(args.json_serialized_invocation_args, executor_input,
                    ignore_unknown_fields=True)
  inputs_spec = None
  if args.json_serialized_inputs_spec_args:
    inputs_spec = pipeline_spec_pb2.ComponentInputsSpec()
    json_format.Parse(args.json_serialized_inputs_spec_args, inputs_spec,
                      ignore_unknown_fields=True)
  output_file = executor_input.outputs.output_file
  output = pipeline_spec_pb2.ExecutorOutput()
  with fileio.open(output_file, 'rb') as f:
    json_format.Parse(f.read(), output, ignore_unknown_fields=True)
  exec_properties = kubeflow_v2_entrypoint_utils.parse_execution_properties(
      executor_input.inputs.parameter_values, executor_input.inputs.parameters, inputs_spec)
  fingerprint = output.parameter_values[utils.FINGERPRINT_PROPERTY_NAME]
  fingerprint.string_value = _fingerprint(exec_properties, fingerprint.string_value)
  with fileio.open(output_file, 'wb') as f:
    f.write(json_format.MessageToJson(output, sort_keys=True))


if __name__ == '__main__':
  run_kubeflow_v2_driver(sys.argv[1:])
