#!/usr/bin/env bash
# Build the Python plugin into a WebAssembly component: examples/python-plugin/py-auth.wasm.
# Needs componentize-py (PyPI); COMPONENTIZE_PY names the binary, else it is looked up on PATH
# and then in the repository's target/py venv, which `.ci/run` creates.
set -euo pipefail
cd "$(dirname "$0")"
tool="${COMPONENTIZE_PY:-}"
if [ -z "$tool" ]; then
  if command -v componentize-py >/dev/null; then
    tool=componentize-py
  elif [ -x ../../target/py/bin/componentize-py ]; then
    tool=../../target/py/bin/componentize-py
  else
    echo "componentize-py not found: python3 -m venv target/py && target/py/bin/pip install componentize-py==0.25.1" >&2
    exit 1
  fi
fi
"$tool" -d ../../wit -w request-filter componentize app -o py-auth.wasm
echo "built $(pwd)/py-auth.wasm ($(stat -c %s py-auth.wasm) bytes)"
