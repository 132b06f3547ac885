#!/usr/bin/env bash
# The main job: set up, then build examples/hello on the embedded all-in-one
# daemon (started in the background on first use) and show the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
rm -rf out/hello
bin/kiln build --progress=plain -o type=local,dest=out/hello examples/hello
echo
echo "== result in out/hello =="
find out/hello -printf '%M %5s  %P\n' | sort -k3
echo
echo "== out/hello/hello.txt =="
cat out/hello/hello.txt
