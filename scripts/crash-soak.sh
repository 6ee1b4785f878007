#!/usr/bin/env bash
# Crash soak: 1,000 flows (sign-ins with a TOTP second factor, FlameConnect and Lynk & Co
# connects against the sandbox) over HTTP while a supervisor kill -9s a random server instance
# at random moments and starts it again; failed requests are sent again to the other instance.
# At the end it checks the database (every flow completed, no session or account lost or
# duplicated, tokens readable, integrity check), prints the counts, and exits non-zero on any
# violation. The driver is loadgen/src/bin/crash_soak.rs.
#
# Usage: scripts/crash-soak.sh [--sqlite] [--no-build] [crash_soak options]
#   default      two instances sharing Postgres + Redis (scripts/lib/services.sh), when those
#                can be installed and started; otherwise (or with --sqlite) one instance on
#                SQLite, restarted after each kill
#   options (defaults): --flows 1000 --concurrency 24 --spread 90 (seconds over which the flow
#                starts are spread) --kill-every 300-2500 (ms between kills) --down-max-ms 1000
#                --instances N
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PWD/.tools/node_modules/.bin:$PATH"

sqlite=false
build=true
args=()
for arg in "$@"; do
  case "$arg" in
    --sqlite) sqlite=true ;;
    --no-build) build=false ;;
    --postgres) ;;
    *) args+=("$arg") ;;
  esac
done

if $build; then
  source scripts/lib/build-release.sh
  build_release_rig
fi

if ! $sqlite; then
  # shellcheck source=lib/services.sh
  source scripts/lib/services.sh
  if bash scripts/setup.sh --with-services >/dev/null && start_services; then
    args=(--postgres "${args[@]}")
  else
    echo "crash-soak: Postgres + Redis unavailable; soaking one SQLite instance instead" >&2
  fi
fi

ulimit -n 65536 2>/dev/null || true
target/release/crash_soak "${args[@]}"
