#!/usr/bin/env bash
# Credential reads per second through the real release server's app API:
# GET /api/v1/accounts/{id}/credentials with `Authorization: Bearer sgk_…`, tokens fresh (no
# renewal). Starts server and sandbox on spare ports with a throw-away data folder
# (scripts/lib/serve-release.sh), then `engine/examples/api_bench.rs setup` writes KEYS users,
# each with a FlameConnect account connected through the engine against the sandbox and its own
# API key, into that data folder while the server runs; `api_bench load` then reads credentials
# with 1, 8 and 32 requests in flight, the keys round-robin so that the per-key rate limit
# (10/s, burst 20; not changed here) is not what is measured: it prints how many 429s there were.
# Usage: scripts/bench-api.sh [--no-build] [SECONDS per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--no-build" ]; then export NO_BUILD=1; shift; fi
SECONDS_PER_RUN=${1:-10}
KEYS=${BENCH_API_KEYS:-1000}
APP_PORT=${BENCH_APP_PORT:-3520}
SANDBOX_PORT=${BENCH_SANDBOX_PORT:-3620}
source scripts/lib/serve-release.sh
cargo build --release -q -p engine --example api_bench
keys_file="$data/bench-keys.txt"
# The engine is pointed at the same doubles as the server (STEPGATE_UPSTREAMS from the table).
(
  eval "$doubles_env"
  target/release/examples/api_bench setup "$data" "$KEYS" "$keys_file"
)
echo "$(wc -l <"$keys_file") FlameConnect accounts, one user and one API key each, on $APP_ORIGIN"
echo "GET /api/v1/accounts/{id}/credentials, ${SECONDS_PER_RUN} s per run after 1 s of warm-up:"
printf '  %11s %6s %9s %10s %8s %8s %8s  %s\n' "connections" keys requests "requests/s" "p50 ms" \
  "p99 ms" "max ms" "statuses"
for connections in 1 8 32; do
  target/release/examples/api_bench load "$APP_ORIGIN" "$keys_file" "$SECONDS_PER_RUN" "$connections"
done
