#!/usr/bin/env bash
# Builds Stepgate (release, wasm-opt'd) and runs it at http://127.0.0.1:3000 with an embedded
# SQLite database in ./data and a demo account. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PWD/.tools/node_modules/.bin:$PATH"

cargo leptos build --release
cargo build --release -p sandbox

export LEPTOS_SITE_ADDR="${LEPTOS_SITE_ADDR:-127.0.0.1:3000}"
export LEPTOS_SITE_ROOT="${LEPTOS_SITE_ROOT:-target/site}"
export STEPGATE_DATA="${STEPGATE_DATA:-./data}"
exec target/release/server
