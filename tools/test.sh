#!/usr/bin/env bash
# The test command: set up, check layering and generated code, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
node tools/check-layering.mjs
node tools/check-proto.mjs
npx vitest run
