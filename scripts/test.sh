#!/usr/bin/env bash
# Sets up (idempotent) and runs the test suite; arguments go to pytest, e.g. -m "not e2e".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
