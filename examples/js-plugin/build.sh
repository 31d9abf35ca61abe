#!/usr/bin/env bash
# Build the JavaScript plugin into a WebAssembly component: examples/js-plugin/js-auth.wasm.
# Needs node + npm. Run from anywhere; installs jco/componentize-js locally on first use.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x node_modules/.bin/jco ]; then
  # `npm ci` rejects this lock file (npm 11 wants every platform's optional binding listed);
  # `npm install` honours the pinned versions and the lock where it can.
  npm install --no-audit --no-fund
fi
./node_modules/.bin/jco componentize plugin.js \
  --wit ../../wit \
  --world-name request-filter \
  --backend qjs --backend-qjs-stub-wasi \
  --out js-auth.wasm
echo "built $(pwd)/js-auth.wasm ($(stat -c %s js-auth.wasm) bytes)"
