#!/usr/bin/env bash
# Password sign-ins and connected-account flows per second through the release server, over
# HTTP (plain form posts, as the pages send them without WebAssembly). The tool is this
# repository's small Rust client, loadgen/src/bin/load.rs (tokio + reqwest): it seeds the users
# through the engine's own stores (argon2id at today's parameters), starts the sandbox and the
# release server on spare ports with a throw-away data folder, drives the load, prints the
# numbers, and stops everything.
#
# Usage: scripts/bench-load.sh [--postgres] [--no-build] [load options]
#   --postgres   two instances sharing Postgres + Redis (scripts/lib/services.sh starts
#                throw-away servers), requests alternating between them; default: one
#                instance on SQLite
#   --no-build   use the release binaries as they are
#   load options (defaults): --clients 1000 --seconds 60 --warmup 20 (sign-ins);
#                --connect-clients 8,64 --connect-seconds 10 --connect-users 30000
#                --provider xiaomi (connects); --no-sign-in, --no-connect, --instances N
# LOADGEN_DATA_ROOT=/dev/shm puts the run's data folder (the SQLite file) on tmpfs; the default
# is target/loadgen/ (removed after a successful run).
# The servers run with STEPGATE_TRUST_PROXY=1 and every simulated client sends its own
# X-Forwarded-For address: per-address throttling counts a password try until it succeeds, so
# 1,000 clients behind one address would be throttled (that is its job).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PWD/.tools/node_modules/.bin:$PATH"

postgres=false
build=true
args=()
for arg in "$@"; do
  case "$arg" in
    --postgres) postgres=true; args+=(--postgres) ;;
    --no-build) build=false ;;
    *) args+=("$arg") ;;
  esac
done

if $build; then
  # The release server is rebuilt only when it is missing or older than its sources.
  if [ ! -x target/release/stepgate ] || [ ! -d target/site ] || [ -n "$(find app engine server frontend style public Cargo.toml Cargo.lock -newer target/release/stepgate -type f -print -quit)" ]; then
    bash scripts/setup.sh
    cargo leptos build --release --precompress
  fi
  cargo build --release -q -p sandbox -p loadgen
fi

if $postgres; then
  bash scripts/setup.sh --with-services >/dev/null
  # shellcheck source=lib/services.sh
  source scripts/lib/services.sh
  start_services
fi

# 1,000 clients keep 1,000 connections open (and the servers as many).
ulimit -n 65536 2>/dev/null || true
target/release/load "${args[@]}"
