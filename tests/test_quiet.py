"""Quiet by default: log records below ERROR are dropped at stderr's file descriptor, nothing else."""
from __future__ import annotations

import os

from tools import quiet


def test_quiet_stderr_drops_log_records_and_keeps_errors(capfd):
  lines = [
      b'WARNING:root:crcmod package not found. This package is required if ...\n',  # Beam worker
      b'WARNING:__main__:No semi_persistent_directory found\n',
      b'W0000 00:00:1795586079.916378   13352 op_level_cost_estimator.cc:699] Error in ...\n',
      b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n',
      b'2026-11-25 05:50:18.449460: W tensorflow/core/kernels/x.cc:1] a warning\n',
      b'Exception ignored in: <function AtomicFunction.__del__ at 0x7fb0e482bd90>\n',
      b'Traceback (most recent call last):\n',
      b'  File "atomic_function.py", line 291, in __del__\n',
      b"TypeError: 'NoneType' object is not subscriptable\n",
      b'Traceback (most recent call last):\n',
      b'ValueError: full stage: nothing to train on\n',
      b'2026-11-25 05:50:18.449460: E tensorflow/core/grappler/x.cc:961] an error\n',
      b'error: VocExampleGen failed (traceback above)\n',
  ]
  with quiet.quiet_stderr():
    for line in lines:
      os.write(2, line)
  assert capfd.readouterr().err == b''.join(lines[9:]).decode()
  with quiet.quiet_stderr(enabled=False):  # --verbose: everything
    os.write(2, lines[0])
  assert capfd.readouterr().err == lines[0].decode()
