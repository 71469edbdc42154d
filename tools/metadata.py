"""Reading the pipeline's ML Metadata: executions per node, their artifacts by channel, producers.

Every MLMD event walk of the project is here; summary.py and lineage.py only ask questions.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from pipeline import configs

Artifacts = Dict[str, List[metadata_store_pb2.Artifact]]  # channel key -> artifacts

_NODE_CONTEXT = 'node'
_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
_DONE = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)


def connection_config(pipeline_root: str):
  return tfx.orchestration.metadata.sqlite_metadata_connection_config(
      configs.metadata_path(pipeline_root))


def open_store(pipeline_root: str) -> metadata_store.MetadataStore:
  path = configs.metadata_path(pipeline_root)
  if not os.path.exists(path):
    raise FileNotFoundError(f'no ML Metadata at {path}: run the pipeline first '
                            f'(pipeline_runner.py run --pipeline-root {pipeline_root})')
  return metadata_store.MetadataStore(connection_config(pipeline_root))


def node_executions(store: metadata_store.MetadataStore, node_id: str,
                    pipeline_name: str = configs.PIPELINE_NAME) -> List[metadata_store_pb2.Execution]:
  """Executions of one component, oldest first."""
  context = store.get_context_by_type_and_name(_NODE_CONTEXT, f'{pipeline_name}.{node_id}')
  if context is None:
    return []
  return sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)


def execution_artifacts(store: metadata_store.MetadataStore,
                        execution_id: int) -> Tuple[Artifacts, Artifacts]:
  """(inputs, outputs) of one execution, each by channel key."""
  events = store.get_events_by_execution_ids([execution_id])
  by_id = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
  inputs: Artifacts = {}
  outputs: Artifacts = {}
  for event in events:
    target = outputs if event.type in _OUTPUT_EVENTS else inputs
    target.setdefault(event.path.steps[0].key, []).append(by_id[event.artifact_id])
  return inputs, outputs


def latest_outputs(store: metadata_store.MetadataStore, node_id: str,
                   pipeline_name: str = configs.PIPELINE_NAME) -> Optional[Artifacts]:
  """Output artifacts (by channel key) of the newest finished or cached execution of a node."""
  for execution in reversed(node_executions(store, node_id, pipeline_name)):
    if execution.last_known_state in _DONE:
      return execution_artifacts(store, execution.id)[1]
  return None


def producer(store: metadata_store.MetadataStore,
             artifact_id: int) -> Optional[metadata_store_pb2.Execution]:
  """The execution that output an artifact (its latest, for an artifact a cached run re-used)."""
  events = [e for e in store.get_events_by_artifact_ids([artifact_id]) if e.type in _OUTPUT_EVENTS]
  if not events:
    return None
  return store.get_executions_by_id([events[-1].execution_id])[0]


def node_id(store: metadata_store.MetadataStore, execution: metadata_store_pb2.Execution) -> str:
  """The component id, from the execution's `node` context (named '<pipeline>.<node id>')."""
  node_type = store.get_context_type(_NODE_CONTEXT)
  for context in store.get_contexts_by_execution(execution.id):
    if context.type_id == node_type.id:
      return context.name.split('.', 1)[-1]
  return '?'


def is_resolver(store: metadata_store.MetadataStore,
                execution: metadata_store_pb2.Execution) -> bool:
  """Resolvers only look artifacts up (on every run): no component a user waits for or caches."""
  return store.get_execution_types_by_id([execution.type_id])[0].name.endswith('Resolver')


def latest_executions(store: metadata_store.MetadataStore
                      ) -> Dict[str, metadata_store_pb2.Execution]:
  """node id -> its newest execution, for every node that ran an executor (no resolvers)."""
  latest = {}
  for context in store.get_contexts_by_type(_NODE_CONTEXT):
    executions = store.get_executions_by_context(context.id)
    if not executions:
      continue
    execution = max(executions, key=lambda e: e.id)
    if is_resolver(store, execution):
      continue
    latest[context.name.split('.', 1)[-1]] = execution
  return latest
