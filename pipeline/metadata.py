"""Reading the pipeline's ML Metadata: the latest outputs of a component, executions per run."""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from pipeline import configs

_NODE_CONTEXT = 'node'
_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)


def metadata_path(pipeline_root: str) -> str:
  return os.path.join(pipeline_root, 'metadata.sqlite')


def connection_config(pipeline_root: str):
  return tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path(pipeline_root))


def open_store(pipeline_root: str) -> metadata_store.MetadataStore:
  path = metadata_path(pipeline_root)
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


def latest_outputs(store: metadata_store.MetadataStore, node_id: str,
                   pipeline_name: str = configs.PIPELINE_NAME
                   ) -> Optional[Dict[str, List[metadata_store_pb2.Artifact]]]:
  """Output artifacts (by channel key) of the newest finished or cached execution of a node."""
  done = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
  for execution in reversed(node_executions(store, node_id, pipeline_name)):
    if execution.last_known_state not in done:
      continue
    events = [e for e in store.get_events_by_execution_ids([execution.id])
              if e.type in _OUTPUT_EVENTS]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    outputs: Dict[str, List[metadata_store_pb2.Artifact]] = {}
    for event in events:
      outputs.setdefault(event.path.steps[0].key, []).append(artifacts[event.artifact_id])
    return outputs
  return None
