#!/usr/bin/env bash
# Credential reads per second through the real release server's app API:
# GET /api/v1/accounts/{id}/credentials with `Authorization: Bearer sgk_…`, tokens fresh (no
# renewal). Starts server and sandbox on spare ports with a throw-away data folder
# (scripts/lib/serve-release.sh), then `engine/examples/api_bench.rs setup` writes KEYS users,
# each with a FlameConnect account connected through the engine against the sandbox and its own
# API key, into that data folder while the server runs; `api_bench load` then reads credentials
# with 1, 8 and 32 requests in flight, the keys round-robin so that the per-key rate limit
# (10/s, burst 20; not changed here) is not what is measured: it prints how many 429s there were.
# Each concurrency is also run against GET /health/live (the server's HTTP stack with nothing
# behind it), the bound the reads are held to, and the ratio printed.
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
echo "GET /api/v1/accounts/{id}/credentials, ${SECONDS_PER_RUN} s per run after 1 s of warm-up;"
echo "each beside GET /health/live at the same concurrency (the HTTP stack with nothing behind it: the bound)"
echo "load: $(uptime)"
printf '  %-12s %11s %6s %9s %10s %8s %8s %8s  %s\n' path "connections" keys requests "requests/s" "p50 ms" \
  "p99 ms" "max ms" "statuses"
for connections in 1 8 32 64; do
  read_row=$(target/release/examples/api_bench load "$APP_ORIGIN" "$keys_file" "$SECONDS_PER_RUN" "$connections")
  live_row=$(target/release/examples/api_bench load "$APP_ORIGIN" "$keys_file" "$SECONDS_PER_RUN" "$connections" live)
  echo "$read_row"
  echo "$live_row"
  awk -v r="$(awk '{ print $5 }' <<<"$read_row")" -v b="$(awk '{ print $5 }' <<<"$live_row")" -v c="$connections" \
    'BEGIN { printf "  %d in flight: %.0f reads/s against a bound of %.0f/s: ratio %.2f (goal: 10,000 reads/s, p99 <= 25 ms at 64)\n", c, r, b, r / b }'
done
echo "load: $(uptime)"
