# Sourced by the measuring scripts: builds the release site if needed and starts the server and
# the sandbox on spare ports (APP_PORT, SANDBOX_PORT and the eleven ports after it) with a
# throw-away data folder; sets APP_ORIGIN; stops both on exit. PUBLIC_HOST=localhost serves
# the pages as http://localhost:APP_PORT (passkeys on: WebAuthn refuses IP addresses).
bash scripts/setup.sh --with-browser >/dev/null
export PATH="$HOME/.cargo/bin:$PWD/.tools/node_modules/.bin:$PATH"
if [ "${NO_BUILD:-0}" != 1 ]; then
  cargo leptos build --release --precompress >/dev/null 2>&1 || cargo leptos build --release --precompress
  cargo build --release -p sandbox -q
fi
data=$(mktemp -d)
APP_ORIGIN="http://${PUBLIC_HOST:-127.0.0.1}:$APP_PORT"
# The simulated third-party hosts on the ports after SANDBOX_PORT, so a running demo is not
# disturbed: their addresses and STEPGATE_UPSTREAMS from the one table (sandbox/src/doubles.rs).
doubles_env=$(STEPGATE_SANDBOX_ADDR=127.0.0.1:$SANDBOX_PORT STEPGATE_UPSTREAMS= target/release/sandbox --print-env)
(
  eval "$doubles_env"
  STEPGATE_SANDBOX_ADDR=127.0.0.1:$SANDBOX_PORT STEPGATE_APP_ORIGIN=$APP_ORIGIN \
    exec target/release/sandbox >/dev/null 2>&1
) &
sandbox_pid=$!
(
  eval "$doubles_env"
  LEPTOS_SITE_ADDR=127.0.0.1:$APP_PORT STEPGATE_DATA=$data STEPGATE_KEY_FILE=$data/secret.key STEPGATE_DEMO=0 \
    STEPGATE_REGISTRATION=open STEPGATE_PUBLIC_URL=$APP_ORIGIN \
    STEPGATE_TOTP_PROVIDER_URL=http://127.0.0.1:$SANDBOX_PORT RUST_LOG=warn \
    exec target/release/stepgate >/dev/null 2>&1
) &
server_pid=$!
trap 'kill $server_pid $sandbox_pid 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  curl -sf -o /dev/null "$APP_ORIGIN/login" && break
  sleep 0.2
done
