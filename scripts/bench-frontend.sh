#!/usr/bin/env bash
# Per page: the wasm and JS the browser downloads before the page is interactive (raw, gzip -9,
# brotli 11) and the time to interactive on a throttled phone (4x CPU, 1.6 Mbit/s, 150 ms RTT).
# Builds the release site, starts server and sandbox on spare ports with a throw-away data folder.
# Usage: scripts/bench-frontend.sh [--no-build] [login register code accounts]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--no-build" ]; then export NO_BUILD=1; shift; fi
APP_PORT=${BENCH_APP_PORT:-3500}
SANDBOX_PORT=${BENCH_SANDBOX_PORT:-3600}
source scripts/lib/serve-release.sh
node end2end/frontend-bench.mjs "$APP_ORIGIN" "$@"
