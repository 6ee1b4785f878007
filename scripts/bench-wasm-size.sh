#!/usr/bin/env bash
# Measures what a browser downloads for the app: the release .wasm and JS glue, raw and gzip -9.
# Builds the release site first (cargo leptos runs wasm-opt on it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PWD/.tools/node_modules/.bin:$PATH"
[ "${1:-}" = "--no-build" ] || cargo leptos build --release --precompress >/dev/null
# File names carry a content hash (hash-files = true in Cargo.toml).
for f in target/site/pkg/stepgate*.wasm target/site/pkg/stepgate*.js target/site/pkg/stepgate*.css; do
  printf '%-32s raw %8d B   gzip -9 %8d B\n' "$f" "$(wc -c <"$f")" "$(gzip -9 -c "$f" | wc -c)"
done
