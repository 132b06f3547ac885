#!/usr/bin/env bash
# Regenerates the dashboard screenshots in docs/images/ (shown in README.md):
# runs the dashboard e2e spec, which drives Debian's headless chromium
# against a real daemon and two real builds, with KILN_DASHBOARD_SCREENSHOTS
# pointing at docs/images. Needs a built tree (npm run build) and chromium
# (tools/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/images
KILN_DASHBOARD_SCREENSHOTS=docs/images npx vitest run e2e/src/dashboard.spec.ts
ls -l docs/images/dashboard-running.png docs/images/dashboard-finished.png
