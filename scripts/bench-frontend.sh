#!/usr/bin/env bash
# Per page: the wasm and JS the browser downloads before the page is interactive (raw, gzip -9,
# brotli 11) and the time to interactive on a throttled phone (4x CPU, 1.6 Mbit/s, 150 ms RTT).
# Builds the release site, starts server and sandbox on spare ports with a throw-away data folder.
# Usage: scripts/bench-frontend.sh [--no-build] [login register code]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PWD/.tools/node_modules/.bin:$PATH"
if [ "${1:-}" = "--no-build" ]; then shift; else
  bash scripts/setup.sh --with-browser >/dev/null
  cargo leptos build --release --precompress >/dev/null 2>&1 || cargo leptos build --release --precompress
  cargo build --release -p sandbox -q
fi
data=$(mktemp -d)
app_port=${BENCH_APP_PORT:-3500}
sandbox_port=${BENCH_SANDBOX_PORT:-3600}
# Spare ports for the simulated Librus and Xiaomi hosts too, so a running demo is not disturbed.
STEPGATE_SANDBOX_LIBRUS_API_ADDR=127.0.0.1:$((sandbox_port + 1)) STEPGATE_SANDBOX_LIBRUS_SYNERGIA_ADDR=127.0.0.1:$((sandbox_port + 2)) \
STEPGATE_SANDBOX_XIAOMI_ACCOUNT_ADDR=127.0.0.1:$((sandbox_port + 3)) STEPGATE_SANDBOX_XIAOMI_STS_ADDR=127.0.0.1:$((sandbox_port + 4)) \
STEPGATE_SANDBOX_ADDR=127.0.0.1:$sandbox_port STEPGATE_APP_ORIGIN=http://127.0.0.1:$app_port \
  target/release/sandbox >/dev/null 2>&1 &
sandbox_pid=$!
LEPTOS_SITE_ADDR=127.0.0.1:$app_port LEPTOS_SITE_ROOT=target/site STEPGATE_DATA=$data STEPGATE_DEMO=0 \
  STEPGATE_TOTP_PROVIDER_URL=http://127.0.0.1:$sandbox_port RUST_LOG=warn \
  STEPGATE_UPSTREAMS="https://api.librus.pl=http://127.0.0.1:$((sandbox_port + 1)) https://synergia.librus.pl=http://127.0.0.1:$((sandbox_port + 2)) https://account.xiaomi.com=http://127.0.0.1:$((sandbox_port + 3)) https://sts.api.io.mi.com=http://127.0.0.1:$((sandbox_port + 4))" \
  target/release/server >/dev/null 2>&1 &
server_pid=$!
trap 'kill $server_pid $sandbox_pid 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$app_port/login" && break
  sleep 0.2
done
node end2end/frontend-bench.mjs "http://127.0.0.1:$app_port" "$@"
