"""Lineage of a pushed model, read from ML Metadata events (no file-system guessing).

pushed model <- Pusher <- Evaluator (metrics, blessing) <- fusion Trainer <- instance Trainer <-
full Trainer (and the pretrained encoder weights it started from) <- Transform <- ExampleGen <-
input folder (and its fingerprint).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from tools import metadata
from trainer import names

_STATE = metadata_store_pb2.Execution.State.Name

# How to step from one execution to the next one up the chain: (node, input channel key to follow).
_CHAIN = (
    (names.PUSHER, 'model_blessing'),                            # the blessing -> the Evaluator
    (names.EVALUATOR, 'model'),                                  # the evaluated fusion model
    (names.TRAINERS[names.FUSION], names.BASE_MODEL_KEY),        # the instance model
    (names.TRAINERS[names.INSTANCE], names.BASE_MODEL_KEY),      # the full model
    (names.TRAINERS[names.FULL], 'examples'),                    # transformed examples -> Transform
    (names.TRANSFORM, 'examples'),                               # raw examples -> ExampleGen
    (names.EXAMPLE_GEN, None),
)


def _value(value: metadata_store_pb2.Value) -> Any:
  kind = value.WhichOneof('value')
  return getattr(value, kind) if kind else None


# Custom properties lineage shows: the push and blessing, what ExampleGen read (its counts, what
# boxed the photos without annotations) and the input's fingerprint.
_SHOWN_PROPERTIES = ('pushed', 'pushed_destination', 'blessed', 'ingest_kept', 'ingest_rejected',
                     'ingest_boxes_annotation', 'ingest_boxes_detector', 'ingest_detector',
                     'ingest_detector_sha256', 'ingest_detector_score', 'input_fingerprint',
                     'span')


def _artifact(artifact: metadata_store_pb2.Artifact, key: str) -> Dict[str, Any]:
  return {'key': key, 'id': artifact.id, 'uri': artifact.uri,
          **{k: _value(v) for k, v in artifact.custom_properties.items()
             if k in _SHOWN_PROPERTIES}}


class Lineage:

  def __init__(self, store: metadata_store.MetadataStore):
    self.store = store

  def latest_pushed_model(self) -> metadata_store_pb2.Artifact:
    pushed = [a for a in self.store.get_artifacts_by_type('PushedModel')
              if a.custom_properties['pushed'].int_value == 1]
    if not pushed:
      raise LookupError('no pushed model in this pipeline root yet (nothing was blessed)')
    return max(pushed, key=lambda a: a.id)

  def chain(self, artifact_id: Optional[int] = None) -> List[Dict[str, Any]]:
    start = (self.latest_pushed_model() if artifact_id is None
             else self.store.get_artifacts_by_id([artifact_id])[0])
    entries: List[Dict[str, Any]] = [{'stage': 'pushed model', **_artifact(start, 'pushed_model')}]
    # The TFLite file the fusion Trainer wrote into the model (tflite_export), pushed with it.
    tflite = _json_file(os.path.join(entries[0].get('pushed_destination') or start.uri,
                                     names.TFLITE_RECORD))
    if tflite:
      entries[0]['tflite'] = tflite
    execution = metadata.producer(self.store, start.id)
    for expected, next_key in _CHAIN:
      if execution is None:
        break
      node = metadata.node_id(self.store, execution)
      inputs, outputs = metadata.execution_artifacts(self.store, execution.id)
      entry = {
          'stage': node, 'execution_id': execution.id,
          'state': _STATE(execution.last_known_state),
          'inputs': [_artifact(a, k) for k, arts in inputs.items() for a in arts],
          'outputs': [_artifact(a, k) for k, arts in outputs.items() for a in arts],
      }
      if node != expected:
        entry['note'] = f'expected {expected} here'
      if node == names.EVALUATOR:
        entry['metrics'] = self._metrics(outputs)
      if node == names.TRAINERS[names.FULL] and outputs.get('model'):
        entry['backbone_init'] = _weights_record(outputs['model'][0].uri, names.BACKBONE_FILE)
      if node in names.TRAINERS.values() and outputs.get('model'):
        entry['init_model'] = _weights_record(outputs['model'][0].uri, names.INIT_MODEL_FILE)
      if node == names.EXAMPLE_GEN:
        props = {k: _value(v) for k, v in execution.custom_properties.items()}
        # A cached execution does not repeat the fingerprint; the Examples artifact carries it.
        examples = outputs.get('examples', [])
        fingerprint = props.get('input_fingerprint') or (
            _value(examples[0].custom_properties['input_fingerprint']) if examples else None)
        entries.append(entry)
        sources = (_value(examples[0].custom_properties['ingest_sources'])
                   if examples and 'ingest_sources' in examples[0].custom_properties else None)
        entries.append({'stage': 'input data', 'input_base': props.get('input_base'),
                        'sources': json.loads(sources) if sources else [props.get('input_base')],
                        'input_fingerprint': fingerprint})
        break
      entries.append(entry)
      upstream = inputs.get(next_key) if next_key else None
      execution = metadata.producer(self.store, upstream[0].id) if upstream else None
    return entries

  @staticmethod
  def _metrics(outputs) -> Dict[str, float]:
    import tensorflow_model_analysis as tfma
    evaluation = outputs.get('evaluation')
    if not evaluation:
      return {}
    result = {}
    for _, slices in tfma.load_eval_result(evaluation[0].uri).slicing_metrics:
      for name, value in slices.get('', {}).get('', {}).items():
        if 'doubleValue' in value:
          result[name] = value['doubleValue']
    return result


def _weights_record(model_uri: str, name: str) -> Optional[Dict[str, str]]:
  """What a stage started from, as its Trainer recorded it beside the weights: stage 1's encoder
  (BACKBONE_FILE: backbone_init, path, sha256) or a fine-tuned stage's model (INIT_MODEL_FILE:
  init_model, stage, sha256 of its variables); None where there is no record."""
  return _json_file(os.path.join(model_uri, names.WEIGHTS_DIR, name))


def _json_file(path: str) -> Optional[Dict[str, Any]]:
  import tensorflow as tf
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def format_chain(entries: List[Dict[str, Any]]) -> str:
  lines = []
  for i, entry in enumerate(entries):
    arrow = '   ' if i == 0 else '<- '
    if entry['stage'] == 'pushed model':
      destination = entry.get('pushed_destination') or entry['uri']
      lines.append(f"pushed model #{entry['id']}: {destination}")
      if entry.get('tflite'):
        tflite = entry['tflite']
        lines.append(f"     TFLite file {os.path.join(destination, tflite['file'])} "
                     f"({tflite['quantization']}, sha256 {tflite['sha256']})")
      continue
    if entry['stage'] == 'input data':
      fingerprint = (entry['input_fingerprint'] or '').replace('\n', '\n                 ')
      lines.append(f"{arrow}input {' + '.join(entry['sources'])}\n     fingerprint {fingerprint}")
      continue
    lines.append(f"{arrow}{entry['stage']} (execution #{entry['execution_id']}, {entry['state']})")
    for artifact in entry['inputs']:
      lines.append(f"     in  {artifact['key']} #{artifact['id']} {artifact['uri']}")
    for artifact in entry['outputs']:
      extra = ' blessed' if artifact.get('blessed') == 1 else (
          ' NOT blessed' if artifact.get('blessed') == 0 else '')
      lines.append(f"     out {artifact['key']} #{artifact['id']} {artifact['uri']}{extra}")
      if artifact.get('ingest_detector'):
        lines.append(f"     boxed by {artifact['ingest_detector']} (sha256 "
                     f"{artifact['ingest_detector_sha256']}, score >= "
                     f"{artifact['ingest_detector_score']:g}): "
                     f"{artifact.get('ingest_boxes_detector', 0)} boxes, "
                     f"{artifact.get('ingest_boxes_annotation', 0)} from annotations")
    if entry.get('backbone_init'):
      init = entry['backbone_init']
      lines.append(f"     encoder from {init['backbone_init']} ({init['path']}, "
                   f"sha256 {init['sha256']})")
    if entry.get('init_model'):
      init = entry['init_model']
      lines.append(f"     started from the {init['stage']} model {init['init_model']} (variables "
                   f"sha256 {init['sha256']})")
    if entry.get('metrics'):
      lines.append('     metrics ' + ', '.join(f'{k} {v:.3f}' for k, v in entry['metrics'].items()))
  return '\n'.join(lines)


def lineage(pipeline_root: str, artifact_id: Optional[int] = None) -> List[Dict[str, Any]]:
  return Lineage(metadata.open_store(pipeline_root)).chain(artifact_id)
