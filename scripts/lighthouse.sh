#!/usr/bin/env bash
# Lighthouse, mobile preset, on Stepgate's pages (release build, Debian's Chromium): starts the
# server and the sandbox on spare ports with a throw-away data folder, prints the scores, and
# leaves the full reports in target/lighthouse/. Usage: scripts/lighthouse.sh [login register code accounts]
set -euo pipefail
cd "$(dirname "$0")/.."
APP_PORT=${LIGHTHOUSE_APP_PORT:-3500}
SANDBOX_PORT=${LIGHTHOUSE_SANDBOX_PORT:-3600}
# On localhost, so /login is measured with "Sign in with a passkey" on it.
PUBLIC_HOST=${PUBLIC_HOST:-localhost}
source scripts/lib/serve-release.sh
node end2end/lighthouse.mjs "$APP_ORIGIN" "$@"
