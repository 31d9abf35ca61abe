#!/usr/bin/env bash
# Build the JavaScript plugin into a WebAssembly component: examples/js-plugin/js-auth.wasm.
# Needs node + npm. Run from anywhere; installs jco/componentize-js locally on first use.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x node_modules/.bin/jco ]; then
  # `npm ci` installs exactly the lock and never rewrites it, so the tree stays clean. The lock
  # lists every platform's optional native binding (npm 11 wants them all); after changing
  # package.json, refresh it with `npm install` and commit it.
  npm ci --no-audit --no-fund
fi
./node_modules/.bin/jco componentize plugin.js \
  --wit ../../wit \
  --world-name request-filter \
  --backend qjs --backend-qjs-stub-wasi \
  --out js-auth.wasm
echo "built $(pwd)/js-auth.wasm ($(stat -c %s js-auth.wasm) bytes)"
