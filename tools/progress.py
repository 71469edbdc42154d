"""One line per component as it starts and as it finishes, read from ML Metadata while a run goes.

LocalDagRunner records every execution in MLMD as it starts (NEW/RUNNING) and ends (COMPLETE,
CACHED, FAILED); a background thread polls the store, so the progress needs no TFX log parsing.
"""
from __future__ import annotations

import os
import threading
from typing import Dict, Optional

from ml_metadata.proto import metadata_store_pb2

from pipeline import configs
from tools import metadata

_Execution = metadata_store_pb2.Execution
_RUNNING = (_Execution.NEW, _Execution.RUNNING)


class ComponentProgress:
  """`with ComponentProgress(root):` around a run prints `  Transform ... running` and
  `  Transform done (12.3 s)` / `cached` / `FAILED` lines."""

  def __init__(self, pipeline_root: str, interval: float = 1.0):
    self._root = pipeline_root
    self._interval = interval
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, daemon=True)
    self._store = None
    self._since = 0  # executions of earlier runs are not reported
    self._states: Dict[int, int] = {}
    self._nodes: Dict[int, Optional[str]] = {}

  def __enter__(self) -> 'ComponentProgress':
    if os.path.exists(configs.metadata_path(self._root)):
      self._since = max((e.id for e in self._open().get_executions()), default=0)
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()
    self.poll()  # the last transitions

  def _open(self):
    if self._store is None:
      self._store = metadata.open_store(self._root)
    return self._store

  def _loop(self) -> None:
    while not self._stop.wait(self._interval):
      self.poll()

  def _node(self, store, execution) -> Optional[str]:
    if execution.id not in self._nodes:
      self._nodes[execution.id] = (None if metadata.is_resolver(store, execution)
                                   else metadata.node_id(store, execution))
    return self._nodes[execution.id]

  def poll(self) -> None:
    if not os.path.exists(configs.metadata_path(self._root)):
      return
    try:
      store = self._open()
      executions = [e for e in store.get_executions() if e.id > self._since]
    except Exception:  # pylint: disable=broad-except  (the runner may be creating the store)
      return
    for execution in sorted(executions, key=lambda e: e.id):
      state = execution.last_known_state
      if self._states.get(execution.id) == state:
        continue
      self._states[execution.id] = state
      node = self._node(store, execution)
      if node is None:
        continue
      if state in _RUNNING:
        print(f'  {node} ... running', flush=True)
      elif state == _Execution.CACHED:
        print(f'  {node} cached', flush=True)
      else:
        seconds = (execution.last_update_time_since_epoch -
                   execution.create_time_since_epoch) / 1000
        word = 'done' if state == _Execution.COMPLETE else _Execution.State.Name(state)
        print(f'  {node} {word} ({seconds:.1f} s)', flush=True)


