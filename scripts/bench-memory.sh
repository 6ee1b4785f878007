#!/usr/bin/env bash
# Memory: the RSS of a real `stepgate serve` process (the release build) holding 10,000
# connected accounts, 1,000 pending flows and 1,000 API keys, against the bound of 100 MiB, in
# one run. The driver is loadgen/src/bin/memory.rs: it seeds a throw-away SQLite database
# through the engine's public API (1,000 users with a session, 10 FlameConnect accounts each,
# one API key per user scoped to its accounts, one Lynk & Co connect flow per user waiting at
# its code step against the sandbox's double), starts the sandbox and the server on spare
# ports, reads the server's RSS, has every key list its accounts and read each account's
# credentials once through /api/v1, lets it sit a few seconds, and reads VmRSS and VmHWM (the
# peak) from /proc/<pid>/status again. It prints the figure, the bound and the ratio, what the
# RSS is made of, and the counts the database holds; it exits non-zero when the peak exceeds
# the bound or any read failed.
#
# Usage: scripts/bench-memory.sh [--no-build] [memory options]
#   --no-build   use the release binaries as they are
#   memory options (defaults): --users 1000 --accounts-per-user 10 --concurrency 32 --settle 3
# LOADGEN_DATA_ROOT=/dev/shm puts the run's data folder on tmpfs (faster seeding); the default
# is target/loadgen/ (removed after a successful run).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PWD/.tools/node_modules/.bin:$PATH"

build=true
args=()
for arg in "$@"; do
  case "$arg" in
    --no-build) build=false ;;
    *) args+=("$arg") ;;
  esac
done

if $build; then
  source scripts/lib/build-release.sh
  build_release_rig
fi

# The benchmark rule: the machine's load next to each figure.
echo "load before: $(uptime)"
status=0
target/release/memory "${args[@]}" || status=$?
echo "load after: $(uptime)"
exit "$status"
