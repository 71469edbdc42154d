"""What a run prints at the end, read from ML Metadata: ingest accounting, Transform output, each
Trainer's model, the evaluation, the ablation table and where Pusher put the model."""
from __future__ import annotations

import json
import os
from typing import Dict, Optional

import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2
from tfx.utils import path_utils

from components.voc_example_gen import report as ingest_report
from tools import metadata
from trainer import names


def _human_bytes(size: float) -> str:
  for unit in ('B', 'KB', 'MB', 'GB'):
    if size < 1024 or unit == 'GB':
      return f'{size:.1f} {unit}'
    size /= 1024
  return f'{size:.1f} GB'


def print_summary(pipeline_root: str) -> None:
  """ExampleGen's ingest accounting and where Transform wrote what, from this run's MLMD."""
  store = metadata.open_store(pipeline_root)
  examples = metadata.latest_outputs(store, names.EXAMPLE_GEN)
  if examples:
    uri = examples['examples'][0].uri
    report = ingest_report.read_report(uri)
    print(ingest_report.format_summary(report))
    print(f'  examples: {uri}\n  report:   {os.path.join(uri, ingest_report.REPORT_FILE)}')
  transform = metadata.latest_outputs(store, names.TRANSFORM)
  if transform and examples:
    transformed = transform['transformed_examples'][0]
    print(f'Transform: {transformed.uri}')
    for folder in sorted(tf.io.gfile.glob(os.path.join(transformed.uri, 'Split-*'))):
      split = os.path.basename(folder.rstrip('/'))[len('Split-'):]
      files = tf.io.gfile.glob(os.path.join(folder, '*'))
      size = sum(tf.io.gfile.stat(f).length for f in files)
      kept = report['splits'].get(split, {}).get('kept')
      if kept is None:  # a hash split: ExampleGen counted its input split ('all') only
        print(f'  {split:>6}: {_human_bytes(size)} (gzip TFRecord)')
      else:
        per_example = size / kept if kept else 0
        print(f'  {split:>6}: {kept} examples, {_human_bytes(size)} '
              f'({_human_bytes(per_example)} per example, gzip TFRecord)')
    print(f"  transform graph: {transform['transform_graph'][0].uri}")
  for trainer in names.TRAINERS.values():
    outputs = metadata.latest_outputs(store, trainer)
    if not outputs:
      continue
    model_uri = outputs['model'][0].uri
    weights_dir = os.path.join(model_uri, names.WEIGHTS_DIR)
    history = _read_json(os.path.join(weights_dir, names.HISTORY_FILE))
    losses = ', '.join(f'{k} {v[-1]:.4f}' for k, v in (history or {}).items())
    training = _read_json(os.path.join(weights_dir, names.TRAINING_FILE))
    trained = (f"\n  trained on:    {training['strategy']}, batch {training['global_batch']} "
               f"({training['per_replica_batch']} per replica), {training['precision']}"
               if training else '')
    print(f'{trainer}: {model_uri}  ({losses})\n'
          f'  serving model: {path_utils.serving_model_path(model_uri)}\n'
          f'  weights:       {weights_dir}\n'
          f'  TensorBoard:   {outputs["model_run"][0].uri}{trained}')
  print_evaluation(store)
  print_cache_report(store)


def _read_json(path: str) -> Optional[Dict]:
  """A JSON file's content, None where a model from an older version did not write it."""
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def print_evaluation(store) -> None:
  """The Evaluator's metrics and blessing, and where Pusher put the model (if it did)."""
  import tensorflow_model_analysis as tfma

  evaluator = metadata.latest_outputs(store, names.EVALUATOR)
  if evaluator:
    uri = evaluator['evaluation'][0].uri
    for _, slices in tfma.load_eval_result(uri).slicing_metrics:
      values = slices[''][''] if '' in slices else {}
      print('Evaluator (val split): ' + ', '.join(
          f"{name} {value.get('doubleValue', float('nan')):.3f}" for name, value in values.items()))
    blessed = evaluator['blessing'][0].custom_properties['blessed'].int_value == 1
    print(f"  {'BLESSED' if blessed else 'NOT blessed'} ({uri})")
  ablation = metadata.latest_outputs(store, names.ABLATION)
  if ablation:
    uri = ablation['report_dir'][0].uri
    with tf.io.gfile.GFile(os.path.join(uri, 'ablation.md')) as f:
      print(f.read().rstrip())
    print(f"  gallery: {os.path.join(uri, 'gallery.png')}")
  pusher = metadata.latest_outputs(store, names.PUSHER)
  if pusher:
    pushed = pusher['pushed_model'][0]
    if pushed.custom_properties['pushed'].int_value == 1:
      destination = pushed.custom_properties['pushed_destination'].string_value
      print(f'Pusher: serving model at {destination}')
      record = os.path.join(destination, names.TFLITE_RECORD)
      if tf.io.gfile.exists(record):  # the fusion Trainer's tflite_export
        from tools import export_tflite
        with tf.io.gfile.GFile(record) as f:
          print(f'  TFLite file {export_tflite.describe(json.load(f), destination)}')
    else:
      print('Pusher: not pushed (the model was not blessed)')


def print_cache_report(store) -> None:
  """Which components the latest run took from the cache and which it ran."""
  cached, ran = [], []
  for node, execution in metadata.latest_executions(store).items():
    if execution.last_known_state == metadata_store_pb2.Execution.CACHED:
      cached.append(node)
    else:
      state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
      ran.append(f'{node} ({state})')
  if not cached:
    print(f'cache: no component reused ({len(ran)} ran)')
  else:
    print(f'cache: {len(cached)} of {len(cached) + len(ran)} components reused'
          + (f"; ran: {', '.join(ran)}" if ran else ''))
