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
#   --no-bound   skip measuring the sign-in bound first (see below)
#   load options (defaults): --clients 1000 --seconds 60 --warmup 20 (sign-ins);
#                --connect-clients 8,64 --connect-seconds 10 --connect-users 30000
#                --provider xiaomi (connects); --no-sign-in, --no-connect, --instances N
# Sign-ins are measured against their bound in the same run: first
# engine/examples/password_bench (argon2id verifications per second with one hash per core, a
# median of five bursts of 256), then the load, then the ratio of sign-ins/s to that bound (issue 21 asks for
# at least 0.9: hashing should be nearly all of a sign-in's cost).
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
bound=true
args=()
for arg in "$@"; do
  case "$arg" in
    --postgres) postgres=true; args+=(--postgres) ;;
    --no-build) build=false ;;
    --no-bound) bound=false ;;
    --no-sign-in) bound=false; args+=("$arg") ;;
    *) args+=("$arg") ;;
  esac
done

if $build; then
  source scripts/lib/build-release.sh
  build_release_rig
fi
if $bound && { $build || [ ! -x target/release/examples/password_bench ]; }; then
  cargo build --release -q -p engine --example password_bench
fi

verifies_per_s=""
if $bound; then
  echo "==> The bound: argon2id verifications per second, one hash per core (password_bench)"
  bound_out=$(target/release/examples/password_bench)
  echo "$bound_out"
  verifies_per_s=$(grep -o '[0-9.]* verifies/s' <<<"$bound_out" | awk '{ print $1 }' | tail -n 1)
  echo "==> The load"
fi

if $postgres; then
  bash scripts/setup.sh --with-services >/dev/null
  # shellcheck source=lib/services.sh
  source scripts/lib/services.sh
  start_services
fi

# 1,000 clients keep 1,000 connections open (and the servers as many).
ulimit -n 65536 2>/dev/null || true
# (No trap of its own: start_services has set the one that stops the services.)
out=$(mktemp)
target/release/load "${args[@]}" | tee "$out"

if [ -n "$verifies_per_s" ]; then
  # The sign-in table's row: its fifth column is **sign-ins/s**.
  sign_ins_per_s=$(grep -A2 'sign-ins/s' "$out" | tail -n 1 | awk -F'|' '{ gsub(/[ *]/, "", $6); print $6 }')
  if [ -n "$sign_ins_per_s" ]; then
    awk -v s="$sign_ins_per_s" -v b="$verifies_per_s" 'BEGIN {
      printf "\nsign-ins %.1f/s against a bound of %.1f verifications/s measured in this run: ratio %.2f (issue 21: at least 0.90)\n", s, b, s / b }'
  fi
fi
rm -f "$out"
