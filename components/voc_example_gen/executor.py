"""Beam executor of the VOC ExampleGen: VOCdevkit folder or plain photo folder, or several of them
-> one tf.Example per image + an ingest report (report.py folds the per-image status records into
it). With a detector in the options, each Beam worker loads it once and boxes the photos that have
no annotation."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
import tensorflow as tf
from absl import logging
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components import detectors
from components.voc_example_gen import report, voc
from trainer.config import IngestOptions

_RECORDS_DIR = 'ingest_records'
_RECORDS_DIR_KEY = '_ingest_records_dir'  # exec property set by Executor.Do for the PTransform
_PLAN_KEY = '_sources_plan'  # ... and the voc.SourcePlan of several sources
_STATUS_TAG = 'status'
# Beside the options in the custom config: the detector's content hash when it could be read where
# the pipeline was built, so that a changed detector file changes ExampleGen's cache key; and with
# several sources, their folders in order and the split mode they are planned with.
DETECTOR_SHA256_KEY = 'detector_sha256'
SOURCES_KEY = 'sources'
SOURCES_SPLIT_MODE_KEY = 'sources_split_mode'
_EXTRA_KEYS = (DETECTOR_SHA256_KEY, SOURCES_KEY, SOURCES_SPLIT_MODE_KEY)


class _IngestImage(beam.DoFn):
  """voc.SourcePhoto -> tf.Example (main output) and a status record for every photo (tagged
  output)."""

  def __init__(self, split: str, options: IngestOptions):
    self._split = split
    self._options = options
    self._detector: Optional[detectors.Detector] = None
    self._counters = {status: beam.metrics.Metrics.counter('voc_example_gen', status)
                      for status in (voc.KEPT, voc.REJECTED)}

  def setup(self):
    # Once per worker: an interpreter or SavedModel cannot be pickled, and loading it per photo
    # would cost more than detecting. One TFLite thread: Beam runs a worker per core.
    if self._options.detector:
      self._detector = detectors.load_detector(self._options.detector,
                                               self._options.detector_score,
                                               self._options.max_boxes, num_threads=1)

  def process(self, photo: voc.SourcePhoto):
    ingest = voc.ingest_photo if photo.plain else voc.ingest_image
    result = ingest(photo.root, photo.local_id, self._split, self._options, self._detector)
    if photo.source:
      _namespace(result, photo)
    self._counters[result.status].inc()
    yield beam.pvalue.TaggedOutput(_STATUS_TAG, result.record())
    if result.example is not None:
      yield result.example


def _namespace(result: voc.IngestResult, photo: voc.SourcePhoto) -> None:
  """Names a result (and its example's image/source_id) by its source: `<source>/<id>`."""
  result.image_id, result.source = photo.image_id, photo.source
  if result.example is not None:
    source_id = result.example.features.feature['image/source_id'].bytes_list.value
    source_id[:] = [photo.image_id.encode('utf-8')]


def _ingest(pipeline, split: str, photos: List[voc.SourcePhoto],
            early: List[voc.IngestResult], options: IngestOptions) -> Dict[str, Any]:
  """The photos of one split through _IngestImage; the early rejections join the status."""
  outputs = (
      pipeline
      | 'ListIds' >> beam.Create(photos)
      # Create keeps everything in one bundle; reshuffle so every worker decodes images.
      | 'Distribute' >> beam.Reshuffle()
      | 'Ingest' >> beam.ParDo(_IngestImage(split, options))
      .with_outputs(_STATUS_TAG, main='examples'))
  duplicates = pipeline | 'Duplicates' >> beam.Create([r.record() for r in early])
  status = (outputs[_STATUS_TAG], duplicates) | 'AllStatus' >> beam.Flatten()
  return {'examples': outputs.examples, 'status': status}


class ReadVoc(beam.PTransform):
  """Reads one split of a VOCdevkit folder, or a plain photo folder (`split_pattern`
  voc.PLAIN_PATTERN: every image in the tree).

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
    plain_folder = self._split_pattern == voc.PLAIN_PATTERN
    if plain_folder:
      listed = voc.SplitIds(voc.list_photos(self._input_base), [])
    else:
      listed = voc.list_split_ids(self._input_base, self._split_pattern)
    ids = [i for i in listed.ids if i not in self._claimed]
    early = [voc.rejection(i, self._split, voc.DUPLICATE_ACROSS_SPLITS,
                           f'also listed in {self._claimed[i]}; kept in that split only')
             for i in listed.ids if i in self._claimed]
    early += [voc.rejection(i, self._split, voc.DUPLICATE_IMAGE_ID, detail)
              for i, detail in listed.duplicates]
    logging.info('VOC split %s: %d image ids from %s (%d rejected as duplicates)', self._split,
                 len(ids), self._split_pattern, len(early))
    photos = [voc.SourcePhoto('', self._input_base, i, plain_folder) for i in ids]
    return _ingest(pipeline, self._split, photos, early, self._options)


class ReadSources(beam.PTransform):
  """Reads one split of several sources (VOC or plain folders) as `voc.plan_sources` assigns
  them: ids `<source>/<id>`; the same outputs as ReadVoc."""

  def __init__(self, plan: voc.SourcePlan, split: str,
               options: IngestOptions = voc.DEFAULT_OPTIONS):
    super().__init__()
    self._plan = plan
    self._split = split
    self._options = options

  def expand(self, pipeline):
    photos, early = self._plan.photos[self._split], self._plan.rejected[self._split]
    logging.info('sources, split %s: %d photos (%d rejected before reading)', self._split,
                 len(photos), len(early))
    return _ingest(pipeline, self._split, photos, early, self._options)


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


def pack_ingest_options(options: IngestOptions, detector_sha256: str = '',
                        sources: Sequence[str] = (),
                        split_mode: str = 'auto') -> example_gen_pb2.CustomConfig:
  """The options (the detector's hash; several sources and their split mode) as ExampleGen's
  CustomConfig (a Struct packed into its Any)."""
  values = {**options.to_dict(), DETECTOR_SHA256_KEY: detector_sha256}
  if sources:
    values.update({SOURCES_KEY: list(sources), SOURCES_SPLIT_MODE_KEY: split_mode})
  struct = struct_pb2.Struct()
  struct.update(values)
  config = example_gen_pb2.CustomConfig()
  config.custom_config.Pack(struct)
  return config


def _packed_values(exec_properties: Dict[str, Any]) -> Dict[str, Any]:
  packed = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
  if not packed:
    return {}
  config = example_gen_pb2.CustomConfig()
  proto_utils.json_to_proto(packed, config)
  struct = struct_pb2.Struct()
  if config.custom_config.type_url:
    config.custom_config.Unpack(struct)
  return json_format.MessageToDict(struct)


def ingest_options(exec_properties: Dict[str, Any]) -> IngestOptions:
  """Reads the options packed by pack_ingest_options back (strictly: unknown keys are errors)."""
  values = _packed_values(exec_properties)
  if not values:
    return voc.DEFAULT_OPTIONS
  for key in _EXTRA_KEYS:
    values.pop(key, None)
  # Struct stores numbers as doubles; the whole-number options come back as ints.
  return IngestOptions.from_dict({k: int(v) if isinstance(v, float) and v.is_integer() else v
                                  for k, v in values.items()})


def packed_sources(exec_properties: Dict[str, Any]) -> Tuple[List[str], str]:
  """(the folders of several sources, their split mode); ([], 'auto') for one source."""
  values = _packed_values(exec_properties)
  return list(values.get(SOURCES_KEY, [])), values.get(SOURCES_SPLIT_MODE_KEY, 'auto')


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _VocToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
                  split_pattern: str) -> beam.pvalue.PCollection:
  """The ExampleGen hook: examples of one input split; status records go to the report folder."""
  split = _split_name(exec_properties, split_pattern)
  if split_pattern.startswith(voc.SOURCES_PATTERN):
    result = pipeline | 'ReadSources' >> ReadSources(
        exec_properties[_PLAN_KEY], split, ingest_options(exec_properties))
  else:
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
    sources, split_mode = packed_sources(exec_properties)
    # Several sources: one plan for both splits, made as this run starts.
    plan = voc.plan_sources(sources, split_mode) if sources else None
    super().Do(input_dict, output_dict,
               {**exec_properties, _RECORDS_DIR_KEY: records_dir, _PLAN_KEY: plan})

    records = []
    for path in tf.io.gfile.glob(os.path.join(records_dir, '*.jsonl')):
      with tf.io.gfile.GFile(path) as f:
        records.extend(json.loads(line) for line in f if line.strip())
    summary = report.summarize(records)
    report.write_report(examples.uri, summary)
    tf.io.gfile.rmtree(records_dir)
    for key in ('total', 'kept', 'rejected', 'boxes'):
      examples.set_int_custom_property(f'ingest_{key}', summary[key])
    for source, count in summary['boxes_by_source'].items():
      examples.set_int_custom_property(f'ingest_boxes_{source}', count)
    if sources:
      examples.set_string_custom_property('ingest_sources', json.dumps(sources))
    options = ingest_options(exec_properties)
    if options.detector:  # what boxed the photos, for lineage
      examples.set_string_custom_property('ingest_detector', options.detector)
      examples.set_string_custom_property(
          'ingest_detector_sha256', _packed_values(exec_properties).get(DETECTOR_SHA256_KEY) or
          detectors.fingerprint(options.detector))
      examples.set_float_custom_property('ingest_detector_score', options.detector_score)
    logging.info('%s', report.format_summary(summary))
