#!/usr/bin/env bash
# The test command: set up, check layering and generated code, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
node tools/check-layering.mjs
node tools/check-proto.mjs
node tools/typecheck.mjs
report=$(mktemp)
status=0
npx vitest run --reporter=default --reporter=json --outputFile="$report" || status=$?
# One plain closing line with the counts.
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
' "$report" || true
rm -f "$report"
exit "$status"
