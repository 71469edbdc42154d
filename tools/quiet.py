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


def _drop_finalizer_noise(default_hook):
  """An unraisablehook that ignores TensorFlow's AtomicFunction.__del__ failing at clean-up
  (a known, harmless TypeError when a function is collected late); anything else is reported."""

  def hook(unraisable) -> None:
    if getattr(unraisable.object, '__qualname__', '') != 'AtomicFunction.__del__':
      default_hook(unraisable)

  return hook


@contextlib.contextmanager
def quiet_stderr(enabled: bool = True) -> Iterator[None]:
  """Within the block, stderr lines that are warning/info log records are dropped."""
  if not enabled:
    yield
    return
  default_hook = sys.unraisablehook
  sys.unraisablehook = _drop_finalizer_noise(default_hook)
  sys.stderr.flush()
  original = os.dup(2)
  read_end, write_end = os.pipe()
  os.dup2(write_end, 2)
  os.close(write_end)
  # Ends the reader at the block's end even if a process started inside it still holds the
  # pipe (so EOF would not come).
  sentinel = f'quiet-stderr-end-{os.getpid()}-{id(read_end)}\n'.encode()

  def forward() -> None:
    with os.fdopen(read_end, 'rb') as lines, os.fdopen(os.dup(original), 'wb', 0) as out:
      for line in lines:
        if line == sentinel:
          return
        if not NOISE.match(line.decode('utf-8', 'replace')):
          try:
            out.write(line)
          except OSError:  # keep draining: a writer must never block on a full pipe
            pass

  thread = threading.Thread(target=forward, daemon=True)
  thread.start()
  try:
    yield
  finally:
    sys.unraisablehook = default_hook
    sys.stderr.flush()
    os.write(2, sentinel)
    thread.join()
    os.dup2(original, 2)
    os.close(original)
