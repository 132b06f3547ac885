#!/usr/bin/env bash
# The main job: set up, then build examples/busybox-app on the embedded
# all-in-one daemon (started in the background on first use): its base is a
# busybox image that setup made from Debian's busybox-static, and its RUN
# steps run in runc. Shows the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
rm -rf out/busybox-app
bin/kiln build --progress=plain \
  --build-context busybox=oci-layout://"$PWD"/out/base/busybox:latest \
  -o type=local,dest=out/busybox-app examples/busybox-app
echo
echo "== out/busybox-app/app (the image also holds busybox in /bin) =="
find out/busybox-app/app -printf '%M %5s  %P\n' | sort -k3
echo
echo "== out/busybox-app/app/greeting.txt (written by RUN steps) =="
cat out/busybox-app/app/greeting.txt
