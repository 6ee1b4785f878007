# Sourced by the measuring scripts: builds the release site if needed and starts the server and
# the sandbox on spare ports (APP_PORT, SANDBOX_PORT and the four ports after it) with a
# throw-away data folder; sets APP_ORIGIN; stops both on exit.
bash scripts/setup.sh --with-browser >/dev/null
export PATH="$HOME/.cargo/bin:$PWD/.tools/node_modules/.bin:$PATH"
if [ "${NO_BUILD:-0}" != 1 ]; then
  cargo leptos build --release --precompress >/dev/null 2>&1 || cargo leptos build --release --precompress
  cargo build --release -p sandbox -q
fi
data=$(mktemp -d)
double() { echo "127.0.0.1:$((SANDBOX_PORT + $1))"; }
# The simulated third-party hosts on spare ports too, so a running demo is not disturbed.
STEPGATE_SANDBOX_LYNKCO_B2C_ADDR=$(double 5) STEPGATE_SANDBOX_LYNKCO_IAM_ADDR=$(double 6) \
  STEPGATE_SANDBOX_FLAMECONNECT_ADDR=$(double 7) \
  STEPGATE_SANDBOX_LIBRUS_API_ADDR=$(double 1) STEPGATE_SANDBOX_LIBRUS_SYNERGIA_ADDR=$(double 2) \
  STEPGATE_SANDBOX_XIAOMI_ACCOUNT_ADDR=$(double 3) STEPGATE_SANDBOX_XIAOMI_STS_ADDR=$(double 4) \
  STEPGATE_SANDBOX_ADDR=127.0.0.1:$SANDBOX_PORT STEPGATE_APP_ORIGIN=http://127.0.0.1:$APP_PORT \
  target/release/sandbox >/dev/null 2>&1 &
sandbox_pid=$!
LEPTOS_SITE_ADDR=127.0.0.1:$APP_PORT LEPTOS_SITE_ROOT=target/site STEPGATE_DATA=$data STEPGATE_DEMO=0 \
  STEPGATE_REGISTRATION=open \
  STEPGATE_TOTP_PROVIDER_URL=http://127.0.0.1:$SANDBOX_PORT RUST_LOG=warn \
  STEPGATE_UPSTREAMS="https://api.librus.pl=http://$(double 1) https://synergia.librus.pl=http://$(double 2) https://account.xiaomi.com=http://$(double 3) https://sts.api.io.mi.com=http://$(double 4) https://login.lynkco.com=http://$(double 5) https://iam-service-prod.westeurope.cloudapp.azure.com=http://$(double 6) https://gdhvb2cflameconnect.b2clogin.com=http://$(double 7)" \
  target/release/server >/dev/null 2>&1 &
server_pid=$!
trap 'kill $server_pid $sandbox_pid 2>/dev/null || true; rm -rf "$data"' EXIT
APP_ORIGIN="http://127.0.0.1:$APP_PORT"
for _ in $(seq 100); do
  curl -sf -o /dev/null "$APP_ORIGIN/login" && break
  sleep 0.2
done
