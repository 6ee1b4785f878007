#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests, then Playwright end-to-end tests against
# the real release server in Debian's Chromium. Ends with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-browser
export PATH="$HOME/.cargo/bin:$PWD/.tools/node_modules/.bin:$PATH"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0

echo "==> Rust tests (release profile, sharing the server build's artifacts)"
# The frontend is excluded: it turns on app/hydrate, which cannot be built together with app/ssr.
cargo test --release --workspace --exclude frontend 2>&1 | tee "$logs/cargo.txt" || status=1

echo "==> Building the release site (server + wasm-opt'd front end)"
cargo leptos build --release --precompress
cargo build --release -p sandbox

echo "==> Playwright end-to-end tests"
rm -rf end2end/.data end2end/playwright-report
(cd end2end && npx playwright test) || status=1

rust_passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed/) s += $i } END { print s + 0 }' "$logs/cargo.txt")
rust_failed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) s += $i } END { print s + 0 }' "$logs/cargo.txt")
read -r e2e_passed e2e_failed < <(node -e '
  try {
    const s = require("./end2end/playwright-report/results.json").stats;
    console.log(`${s.expected + s.flaky} ${s.unexpected}`);
  } catch { console.log("0 1"); }')

echo
echo "rust: $rust_passed passed, $rust_failed failed; end-to-end: $e2e_passed passed, $e2e_failed failed"
echo "summary: $((rust_passed + e2e_passed)) passed, $((rust_failed + e2e_failed)) failed"
exit $status
