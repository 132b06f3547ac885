#!/usr/bin/env bash
# The e2e suite on the containerd worker (issue 14): every daemon and cluster
# the testkit starts for a spec that does not pin a worker runs
# `kiln daemon --worker containerd` on a containerd the testkit starts
# (KILN_E2E_WORKER=containerd). Not part of tools/test.sh: it takes as long
# as the e2e suite itself. Needs root, Debian's containerd and a build.
#   tools/e2e-containerd.sh                      every e2e spec but the diffsuite
#   tools/e2e-containerd.sh e2e/src/run.spec.ts  only these spec files
#   tools/e2e-containerd.sh --worker oci ...     the same specs on the OCI worker (the baseline)
# Ends with one line: `e2e on containerd: N passed, N failed, N skipped`.
# The diffsuite (../shared/diffsuite) starts its own daemon from its own
# script, outside the testkit, so it stays on the OCI worker and is left out.
set -euo pipefail
cd "$(dirname "$0")/.."
worker=containerd
if [ "${1:-}" = --worker ]; then
  worker=${2:?--worker needs oci or containerd}
  shift 2
fi
case "$worker" in oci | containerd) ;; *) echo "--worker must be oci or containerd, got \"$worker\"" >&2; exit 2 ;; esac
if [ "$worker" = containerd ] && ! command -v containerd >/dev/null; then
  echo "containerd not found: install Debian's package containerd (tools/setup.sh does)" >&2
  exit 1
fi
report=$(mktemp)
trap 'rm -f "$report"' EXIT
status=0
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(e2e/src)
KILN_E2E_WORKER=$worker npx vitest run --project e2e --exclude '**/diffsuite.spec.ts' \
  --reporter=default --reporter=json --outputFile="$report" "${specs[@]}" || status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`e2e on ${process.argv[2]}: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + (r.numTodoTests ?? 0)} skipped`);
' "$report" "$worker" || true
exit "$status"
