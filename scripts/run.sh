#!/usr/bin/env bash
# Builds Stepgate (release, wasm-opt'd) and runs it at http://127.0.0.1:3000 with an embedded
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
export LEPTOS_SITE_ROOT="${LEPTOS_SITE_ROOT:-target/site}"
export STEPGATE_DATA="${STEPGATE_DATA:-./data}"
export STEPGATE_SANDBOX_ADDR="${STEPGATE_SANDBOX_ADDR:-127.0.0.1:3100}"
export STEPGATE_TOTP_PROVIDER_URL="${STEPGATE_TOTP_PROVIDER_URL:-http://$STEPGATE_SANDBOX_ADDR}"
export STEPGATE_APP_ORIGIN="${STEPGATE_APP_ORIGIN:-http://$LEPTOS_SITE_ADDR}"
# The demo account (never an admin: the first account you register is) and open registration.
export STEPGATE_DEMO="${STEPGATE_DEMO:-1}"
export STEPGATE_REGISTRATION="${STEPGATE_REGISTRATION:-open}"
mkdir -p "$STEPGATE_DATA"
export STEPGATE_SANDBOX_SEEDS="${STEPGATE_SANDBOX_SEEDS:-$STEPGATE_DATA/sandbox-seeds.json}"
# The simulated Librus and Xiaomi hosts (the sandbox), and Stepgate pointed at them.
export STEPGATE_SANDBOX_LIBRUS_API_ADDR="${STEPGATE_SANDBOX_LIBRUS_API_ADDR:-127.0.0.1:3101}"
export STEPGATE_SANDBOX_LIBRUS_SYNERGIA_ADDR="${STEPGATE_SANDBOX_LIBRUS_SYNERGIA_ADDR:-127.0.0.1:3102}"
export STEPGATE_SANDBOX_XIAOMI_ACCOUNT_ADDR="${STEPGATE_SANDBOX_XIAOMI_ACCOUNT_ADDR:-127.0.0.1:3103}"
export STEPGATE_SANDBOX_XIAOMI_STS_ADDR="${STEPGATE_SANDBOX_XIAOMI_STS_ADDR:-127.0.0.1:3104}"
export STEPGATE_SANDBOX_LYNKCO_B2C_ADDR="${STEPGATE_SANDBOX_LYNKCO_B2C_ADDR:-127.0.0.1:3105}"
export STEPGATE_SANDBOX_LYNKCO_IAM_ADDR="${STEPGATE_SANDBOX_LYNKCO_IAM_ADDR:-127.0.0.1:3106}"
export STEPGATE_SANDBOX_FLAMECONNECT_ADDR="${STEPGATE_SANDBOX_FLAMECONNECT_ADDR:-127.0.0.1:3107}"
export STEPGATE_UPSTREAMS="${STEPGATE_UPSTREAMS:-https://api.librus.pl=http://$STEPGATE_SANDBOX_LIBRUS_API_ADDR https://synergia.librus.pl=http://$STEPGATE_SANDBOX_LIBRUS_SYNERGIA_ADDR https://account.xiaomi.com=http://$STEPGATE_SANDBOX_XIAOMI_ACCOUNT_ADDR https://sts.api.io.mi.com=http://$STEPGATE_SANDBOX_XIAOMI_STS_ADDR https://login.lynkco.com=http://$STEPGATE_SANDBOX_LYNKCO_B2C_ADDR https://iam-service-prod.westeurope.cloudapp.azure.com=http://$STEPGATE_SANDBOX_LYNKCO_IAM_ADDR https://gdhvb2cflameconnect.b2clogin.com=http://$STEPGATE_SANDBOX_FLAMECONNECT_ADDR}"

target/release/sandbox &
sandbox_pid=$!
trap 'kill "$sandbox_pid" 2>/dev/null || true' EXIT INT TERM
target/release/server
