"""Quiet by default: drop log records below ERROR from everything that writes to stderr.

TensorFlow's C++ code logs through absl (no environment variable silences it), and Beam's worker
processes inherit this process's stderr and log at import time, before any level applies. So the
filter sits on file descriptor 2 itself: a pipe whose reader thread drops the lines that are
warning or info records and passes everything else (tracebacks, errors, our own lines) through.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from typing import Iterator

# Log records below ERROR, in the formats that reach stderr in a run.
NOISE = re.compile(
    r'^(?:(?:WARNING|INFO|DEBUG):[\w.]+:'  # Python logging's default format (Beam workers)
    r'|[WI]\d{4} '  # absl / glog C++ lines: W0000 00:00:... or I1125 ...
    r'|WARNING: All log messages before absl::InitializeLog'
    r'|\d{4}-\d\d-\d\d [\d:.]+: [WI] '  # TensorFlow's classic C++ format
    r')')
# TensorFlow's AtomicFunction.__del__ failing at interpreter clean-up (a known, harmless TypeError,
# in this process or a Beam worker): the header, its traceback and the exception line are dropped.
FINALIZER_NOISE = 'Exception ignored in: <function AtomicFunction.__del__'


def _filtered(lines: Iterator[str]) -> Iterator[str]:
  """The lines that are not noise."""
  in_finalizer_block = False
  for line in lines:
    if line.startswith(FINALIZER_NOISE):
      in_finalizer_block = True
      continue
    if in_finalizer_block:
      # Traceback lines are 'Traceback ...' or indented; the exception line ends the block.
      in_finalizer_block = line.startswith(('Traceback', ' '))
      continue
    if not NOISE.match(line):
      yield line


@contextlib.contextmanager
def quiet_stderr(enabled: bool = True) -> Iterator[None]:
  """Within the block, stderr lines that are warning/info log records are dropped."""
  if not enabled:
    yield
    return
  sys.stderr.flush()
  original = os.dup(2)
  read_end, write_end = os.pipe()
  os.dup2(write_end, 2)
  os.close(write_end)
  # Ends the reader at the block's end even if a process started inside it still holds the
  # pipe (so EOF would not come).
  sentinel = f'quiet-stderr-end-{os.getpid()}-{id(read_end)}\n'.encode()

  def forward() -> None:
    with os.fdopen(read_end, 'rb') as pipe, os.fdopen(os.dup(original), 'wb', 0) as out:
      lines = (line.decode('utf-8', 'replace') for line in iter(pipe.readline, sentinel))
      for line in _filtered(lines):
        try:
          out.write(line.encode('utf-8'))
        except OSError:  # keep draining: a writer must never block on a full pipe
          pass

  thread = threading.Thread(target=forward, daemon=True)
  thread.start()
  try:
    yield
  finally:
    sys.stderr.flush()
    os.write(2, sentinel)
    thread.join()
    os.dup2(original, 2)
    os.close(original)
