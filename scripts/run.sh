#!/usr/bin/env bash
# Builds Stepgate (release, wasm-opt'd) and runs it at http://localhost:3000 with an embedded
# SQLite database in ./data, a demo account, and the simulated providers (the sandbox) at
# http://127.0.0.1:3100. Ctrl-C stops both. For trying Stepgate out: the demo account's password
# is published and anyone who reaches the port may register (STEPGATE_REGISTRATION=open).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PWD/.tools/node_modules/.bin:$PATH"

cargo leptos build --release --precompress
cargo build --release -p sandbox

export LEPTOS_SITE_ADDR="${LEPTOS_SITE_ADDR:-127.0.0.1:3000}"
export STEPGATE_DATA="${STEPGATE_DATA:-./data}"
export STEPGATE_SANDBOX_ADDR="${STEPGATE_SANDBOX_ADDR:-127.0.0.1:3100}"
export STEPGATE_TOTP_PROVIDER_URL="${STEPGATE_TOTP_PROVIDER_URL:-http://$STEPGATE_SANDBOX_ADDR}"
# Browsers reach it as localhost, not 127.0.0.1: passkeys (WebAuthn) refuse IP addresses.
export STEPGATE_PUBLIC_URL="${STEPGATE_PUBLIC_URL:-http://localhost:${LEPTOS_SITE_ADDR##*:}}"
export STEPGATE_APP_ORIGIN="${STEPGATE_APP_ORIGIN:-$STEPGATE_PUBLIC_URL}"
# The demo account (never an admin: the first account you register is) and open registration.
export STEPGATE_DEMO="${STEPGATE_DEMO:-1}"
export STEPGATE_REGISTRATION="${STEPGATE_REGISTRATION:-open}"
mkdir -p "$STEPGATE_DATA"
export STEPGATE_SANDBOX_SEEDS="${STEPGATE_SANDBOX_SEEDS:-$STEPGATE_DATA/sandbox-seeds.json}"
# Where the simulated hosts listen (ports after the sandbox's own, unless set) and Stepgate
# pointed at them: from the one table of doubles (sandbox/src/doubles.rs).
eval "$(target/release/sandbox --print-env)"

target/release/sandbox &
sandbox_pid=$!
trap 'kill "$sandbox_pid" 2>/dev/null || true' EXIT INT TERM
target/release/stepgate serve
