#!/usr/bin/env bash
# Creates .venv (Python 3.10) with exactly the locked dependencies of uv.lock and this project.
# Idempotent: a second call checks the environment against the lock and changes nothing.
#   INSTCOLOR_PYTHON=/path/to/python3.10  picks the interpreter explicitly.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
TOOLS_DIR=.tools

is_python310() {
  "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1
}

find_python310() {
  local candidate root
  if [ -n "${INSTCOLOR_PYTHON:-}" ]; then
    is_python310 "$INSTCOLOR_PYTHON" && { echo "$INSTCOLOR_PYTHON"; return 0; }
    echo "setup: INSTCOLOR_PYTHON=$INSTCOLOR_PYTHON is not a working Python 3.10" >&2
    return 1
  fi
  # PATH first (a pyenv shim fails this check unless PYENV_VERSION names 3.10, so it is skipped).
  for candidate in python3.10 python3 python; do
    candidate=$(command -v "$candidate" 2>/dev/null) || continue
    is_python310 "$candidate" && { echo "$candidate"; return 0; }
  done
  root=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}
  for candidate in "$root"/versions/3.10*/bin/python3.10 /usr/local/bin/python3.10 \
                   /usr/bin/python3.10 /opt/python/3.10*/bin/python3.10; do
    [ -x "$candidate" ] && is_python310 "$candidate" && { echo "$candidate"; return 0; }
  done
  return 1
}

if ! PYTHON=$(find_python310); then
  cat >&2 <<'MSG'
setup: no Python 3.10 interpreter found (TFX 1.16 supports Python 3.9-3.10; this project pins 3.10).
Looked on PATH (python3.10, python3, python), in $(pyenv root)/versions/3.10*, /usr/local/bin and /usr/bin.
Install one, then re-run, for example:
  pyenv install 3.10.13                     # then: scripts/setup.sh
  sudo apt-get install python3.10-venv      # Debian/Ubuntu with 3.10 packages
  INSTCOLOR_PYTHON=/path/to/python3.10 scripts/setup.sh
MSG
  exit 1
fi

if command -v uv >/dev/null 2>&1 && [ "$(uv --version | cut -d' ' -f2)" = "$UV_VERSION" ]; then
  UV=$(command -v uv)
else
  UV="$TOOLS_DIR/bin/uv"
  if [ ! -x "$UV" ] || [ "$("$UV" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    echo "setup: installing uv $UV_VERSION into $TOOLS_DIR/"
    # -qq: errors only (pip's warnings about find-links and root are not ours to act on).
    "$PYTHON" -m pip install -qq --disable-pip-version-check --upgrade \
      --target "$TOOLS_DIR" "uv==$UV_VERSION"
  fi
fi

echo "setup: Python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])') at $PYTHON; syncing .venv with uv.lock"
# --frozen: install what uv.lock says, never re-resolve. Bytecode compiled once here, not at first
# import (TensorFlow + TFX imports take ~40 s without it).
"$UV" sync --frozen --compile-bytecode --python "$PYTHON" --quiet
echo "setup: ready (.venv/bin/python)"
