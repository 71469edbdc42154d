"""Beam executor of the VOC ExampleGen: VOCdevkit folder -> one tf.Example per image + an ingest report
(report.py folds the per-image status records into it)."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional

import apache_beam as beam
import tensorflow as tf
from absl import logging
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.voc_example_gen import report, voc
from trainer.config import IngestOptions

_RECORDS_DIR = 'ingest_records'
_RECORDS_DIR_KEY = '_ingest_records_dir'  # exec property set by Executor.Do for the PTransform
_STATUS_TAG = 'status'


class _IngestImage(beam.DoFn):
  """Image id -> tf.Example (main output) and a status record for every id (tagged output)."""

  def __init__(self, input_base: str, split: str, options: IngestOptions):
    self._input_base = input_base
    self._split = split
    self._options = options
    self._counters = {status: beam.metrics.Metrics.counter('voc_example_gen', status)
                      for status in (voc.KEPT, voc.REJECTED)}

  def process(self, image_id: str):
    result = voc.ingest_image(self._input_base, image_id, self._split, self._options)
    self._counters[result.status].inc()
    yield beam.pvalue.TaggedOutput(_STATUS_TAG, result.record())
    if result.example is not None:
      yield result.example


class ReadVoc(beam.PTransform):
  """Reads one split of a VOCdevkit folder.

  Returns a dict with 'examples' (tf.train.Example) and 'status' (one JSON-able record per input:
  kept or rejected, the reason, and notes on anything fixed). `claimed` maps ids that an earlier
  split already holds to that split's list file: they are rejected here, never read twice.
  """

  def __init__(self, input_base: str, split_pattern: str, split: str,
               options: IngestOptions = voc.DEFAULT_OPTIONS,
               claimed: Optional[Mapping[str, str]] = None):
    super().__init__()
    self._input_base = input_base
    self._split_pattern = split_pattern
    self._split = split
    self._options = options
    self._claimed = dict(claimed or {})

  def expand(self, pipeline):
    listed = voc.list_split_ids(self._input_base, self._split_pattern)
    ids = [i for i in listed.ids if i not in self._claimed]
    early = [voc.rejection(i, self._split, voc.DUPLICATE_ACROSS_SPLITS,
                           f'also listed in {self._claimed[i]}; kept in that split only')
             for i in listed.ids if i in self._claimed]
    early += [voc.rejection(i, self._split, voc.DUPLICATE_IMAGE_ID, detail)
              for i, detail in listed.duplicates]
    logging.info('VOC split %s: %d image ids from %s (%d rejected as duplicates)', self._split,
                 len(ids), self._split_pattern, len(early))
    outputs = (
        pipeline
        | 'ListIds' >> beam.Create(ids)
        # Create keeps everything in one bundle; reshuffle so every worker decodes images.
        | 'Distribute' >> beam.Reshuffle()
        | 'Ingest' >> beam.ParDo(_IngestImage(self._input_base, self._split, self._options))
        .with_outputs(_STATUS_TAG, main='examples'))
    duplicates = pipeline | 'Duplicates' >> beam.Create([r.record() for r in early])
    status = (outputs[_STATUS_TAG], duplicates) | 'AllStatus' >> beam.Flatten()
    return {'examples': outputs.examples, 'status': status}


def _input_splits(exec_properties: Dict[str, Any]) -> List[example_gen_pb2.Input.Split]:
  input_config = example_gen_pb2.Input()
  proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                            input_config)
  return list(input_config.splits)


def _split_name(exec_properties: Dict[str, Any], split_pattern: str) -> str:
  for split in _input_splits(exec_properties):
    if split.pattern == split_pattern:
      return split.name
  return 'all'


def claimed_ids(exec_properties: Dict[str, Any], split_pattern: str) -> Dict[str, str]:
  """Ids listed by the splits before this one (train before val), each with its list file."""
  claimed: Dict[str, str] = {}
  base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
  for split in _input_splits(exec_properties):
    if split.pattern == split_pattern:
      break
    for image_id in voc.list_split_ids(base, split.pattern).ids:
      claimed.setdefault(image_id, split.pattern)
  return claimed


def pack_ingest_options(options: IngestOptions) -> example_gen_pb2.CustomConfig:
  """The options as ExampleGen's CustomConfig (a Struct packed into its Any)."""
  struct = struct_pb2.Struct()
  struct.update(options.to_dict())
  config = example_gen_pb2.CustomConfig()
  config.custom_config.Pack(struct)
  return config


def ingest_options(exec_properties: Dict[str, Any]) -> IngestOptions:
  """Reads the options packed by pack_ingest_options back (strictly: unknown keys are errors)."""
  packed = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
  if not packed:
    return voc.DEFAULT_OPTIONS
  config = example_gen_pb2.CustomConfig()
  proto_utils.json_to_proto(packed, config)
  struct = struct_pb2.Struct()
  if config.custom_config.type_url:
    config.custom_config.Unpack(struct)
  values = json_format.MessageToDict(struct)
  # Struct stores numbers as doubles; the options are whole numbers.
  return IngestOptions.from_dict({k: int(v) if isinstance(v, float) and v.is_integer() else v
                                  for k, v in values.items()})


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _VocToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
                  split_pattern: str) -> beam.pvalue.PCollection:
  """The ExampleGen hook: examples of one input split; status records go to the report folder."""
  split = _split_name(exec_properties, split_pattern)
  result = pipeline | 'ReadVoc' >> ReadVoc(
      exec_properties[standard_component_specs.INPUT_BASE_KEY], split_pattern, split,
      ingest_options(exec_properties), claimed_ids(exec_properties, split_pattern))
  records_dir = exec_properties.get(_RECORDS_DIR_KEY)
  if records_dir:
    _ = (result['status']
         | 'ToJson' >> beam.Map(json.dumps, sort_keys=True)
         | 'WriteStatus' >> beam.io.WriteToText(os.path.join(records_dir, split),
                                                file_name_suffix='.jsonl'))
  return result['examples']


class Executor(BaseExampleGenExecutor):
  """FileBasedExampleGen executor for PASCAL VOC folders."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    return _VocToExample

  def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
         exec_properties: Dict[str, Any]) -> None:
    examples = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.EXAMPLES_KEY])
    records_dir = os.path.join(examples.uri, _RECORDS_DIR)
    super().Do(input_dict, output_dict, {**exec_properties, _RECORDS_DIR_KEY: records_dir})

    records = []
    for path in tf.io.gfile.glob(os.path.join(records_dir, '*.jsonl')):
      with tf.io.gfile.GFile(path) as f:
        records.extend(json.loads(line) for line in f if line.strip())
    summary = report.summarize(records)
    report.write_report(examples.uri, summary)
    tf.io.gfile.rmtree(records_dir)
    for key in ('total', 'kept', 'rejected', 'boxes'):
      examples.set_int_custom_property(f'ingest_{key}', summary[key])
    logging.info('%s', report.format_summary(summary))
