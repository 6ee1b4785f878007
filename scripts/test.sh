#!/usr/bin/env bash
# Runs every test, twice over: on the embedded default (SQLite, one instance) and scaled out
# (Postgres + Redis, started here on free ports with throw-away data and stopped at the end).
#   1. Rust unit and integration tests on SQLite
#   2. the same Rust tests on Postgres + Redis (STEPGATE_TEST_DATABASE_URL, STEPGATE_TEST_REDIS_URL)
#   3. Playwright end-to-end tests against one release server on SQLite, in Debian's Chromium
#   4. the same Playwright suite against two release servers sharing Postgres + Redis behind a
#      round-robin proxy (end2end/round-robin-proxy.mjs: each request to the other instance)
#   5. the Python client's unit tests, and its integration tests against that release build
#      (scripts/python-tests.sh: a server and sandbox of their own)
#   6. the packaging: the systemd unit (systemd-analyze verify and security) and the container
#      image built and run with podman, the unit under systemd in a container
#      (scripts/packaging-tests.sh)
# Ends with one line per run and one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-browser --with-services --with-python --with-podman
export PATH="$HOME/.cargo/bin:$PWD/.tools/node_modules/.bin:$PATH"
# shellcheck source=lib/services.sh
source scripts/lib/services.sh

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT # start_services adds stopping the services to this
status=0

echo "==> Rust tests on SQLite (release profile, sharing the server build's artifacts)"
# The frontend is excluded: it turns on app/hydrate, which cannot be built together with app/ssr.
# --no-fail-fast: every test binary runs (and is counted) even when an earlier one failed.
cargo test --release --workspace --exclude frontend --no-fail-fast 2>&1 | tee "$logs/cargo-sqlite.txt" || status=1

echo "==> Starting Postgres and Redis"
services=true
start_services || { services=false; status=1; }

if $services; then
  echo "==> Rust tests on Postgres + Redis"
  cargo test --release --workspace --exclude frontend --no-fail-fast 2>&1 | tee "$logs/cargo-postgres.txt" || status=1
else
  echo "Postgres/Redis did not start: the scaled-out runs are counted as failed" | tee "$logs/cargo-postgres.txt"
fi

echo "==> Building the release site (server + wasm-opt'd front end)"
cargo leptos build --release --precompress
cargo build --release -p sandbox

echo "==> Playwright end-to-end tests: one instance on SQLite"
rm -rf end2end/.data end2end/playwright-report
(cd end2end && env -u STEPGATE_E2E_DATABASE_URL -u STEPGATE_E2E_REDIS_URL npx playwright test) || status=1

if $services; then
  echo "==> Playwright end-to-end tests: two instances on Postgres + Redis behind a round-robin proxy"
  e2e_db="e2e_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
  "$STEPGATE_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$STEPGATE_TEST_DATABASE_URL" -c "CREATE DATABASE $e2e_db"
  redis-cli -u "$STEPGATE_TEST_REDIS_URL" flushall >/dev/null
  rm -rf end2end/.data
  (
    cd end2end &&
      STEPGATE_E2E_DATABASE_URL="postgres://postgres@127.0.0.1:$STEPGATE_PG_PORT/$e2e_db" \
        STEPGATE_E2E_REDIS_URL="$STEPGATE_TEST_REDIS_URL" \
        npx playwright test
  ) || status=1
fi

echo "==> Python client tests (unit, and integration against the release build)"
NO_BUILD=1 bash scripts/python-tests.sh 2>&1 | tee "$logs/python.txt" || status=1

echo "==> Packaging tests (systemd unit, container image)"
bash scripts/packaging-tests.sh 2>&1 | tee "$logs/packaging.txt" || status=1

count() { # count <passed|failed> <cargo log>
  awk -v what="$1" '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ "^" what) s += $i } END { print s + 0 }' "$2"
}
e2e_count() { # e2e_count <results.json>: "passed failed skipped" (no report counts as one failure)
  node -e '
    try {
      const s = require(process.argv[1]).stats;
      console.log(`${s.expected + s.flaky} ${s.unexpected} ${s.skipped}`);
    } catch { console.log("0 1 0"); }' "$1"
}
rust_passed=$(count passed "$logs/cargo-sqlite.txt")
rust_failed=$(count failed "$logs/cargo-sqlite.txt")
rust_pg_passed=$(count passed "$logs/cargo-postgres.txt")
rust_pg_failed=$(count failed "$logs/cargo-postgres.txt")
# A run that did not get to its summary (a build error, no services) counts as one failure.
grep -q '^test result:' "$logs/cargo-sqlite.txt" || rust_failed=$((rust_failed + 1))
grep -q '^test result:' "$logs/cargo-postgres.txt" || rust_pg_failed=$((rust_pg_failed + 1))
read -r e2e_passed e2e_failed e2e_skipped < <(e2e_count "$PWD/end2end/playwright-report/results.json")
read -r e2e_pg_passed e2e_pg_failed e2e_pg_skipped < <(e2e_count "$PWD/end2end/playwright-report/results-scaled-out.json")
# "python client: N passed, M failed"; no such line (the run broke off) counts as one failure.
python_line=$(grep '^python client:' "$logs/python.txt" | tail -n 1 || true)
py_passed=$(awk '{ print $3 + 0 }' <<<"$python_line")
py_failed=$(awk '{ print $5 + 0 }' <<<"$python_line")
[ -n "$python_line" ] || py_failed=1
packaging_line=$(grep '^packaging:' "$logs/packaging.txt" | tail -n 1 || true)
pk_passed=$(awk '{ print $2 + 0 }' <<<"$packaging_line")
pk_failed=$(awk '{ print $4 + 0 }' <<<"$packaging_line")
[ -n "$packaging_line" ] || pk_failed=1
# Tests that did not run (the after-all check waits for every other test to pass).
not_run() { [ "$1" = 0 ] || echo " ($1 did not run)"; }

echo
echo "rust (sqlite): $rust_passed passed, $rust_failed failed"
echo "rust (postgres+redis): $rust_pg_passed passed, $rust_pg_failed failed"
echo "end-to-end (sqlite, 1 instance): $e2e_passed passed, $e2e_failed failed$(not_run "$e2e_skipped")"
echo "end-to-end (postgres+redis, 2 instances, round-robin): $e2e_pg_passed passed, $e2e_pg_failed failed$(not_run "$e2e_pg_skipped")"
echo "python client (unit + integration): $py_passed passed, $py_failed failed"
echo "packaging (systemd unit, container): $pk_passed passed, $pk_failed failed"
passed=$((rust_passed + rust_pg_passed + e2e_passed + e2e_pg_passed + py_passed + pk_passed))
failed=$((rust_failed + rust_pg_failed + e2e_failed + e2e_pg_failed + py_failed + pk_failed))
echo "summary: $passed passed, $failed failed"
[ "$failed" = 0 ] || status=1
exit $status
