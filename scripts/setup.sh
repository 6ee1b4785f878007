#!/usr/bin/env bash
# Installs what building and testing Stepgate needs, skipping whatever is already present.
# Usage: scripts/setup.sh [--with-browser] [--with-services] [--with-python] [--with-podman]
#   --with-browser:  Chromium and the Playwright packages (only the end-to-end tests need them)
#   --with-services: Debian's postgresql and redis-server (the Postgres + Redis test runs and the
#                    benchmarks start their own throw-away servers with scripts/lib/services.sh)
#   --with-python:   the virtualenv .tools/python-venv with the Python client (clients/python)
#                    and its test packages from PyPI (scripts/python-tests.sh)
#   --with-podman:   Debian's podman, runc and mmdebstrap (scripts/packaging-tests.sh builds and
#                    runs the container image and the systemd unit on a Debian base it makes)
# Everything comes from the Rust, npm and Debian package registries: cargo-leptos must not
# try to download its tools from the internet, so each one is put on PATH first.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_LEPTOS_VERSION=0.3.10   # 0.3.11 needs rustc 1.96
BINARYEN_VERSION=132          # Debian's binaryen 108 produces wasm that fails at start-up
with_browser=false
with_services=false
with_python=false
with_podman=false
for arg in "$@"; do
  case "$arg" in
    --with-browser) with_browser=true ;;
    --with-services) with_services=true ;;
    --with-python) with_python=true ;;
    --with-podman) with_podman=true ;;
    *) echo "usage: scripts/setup.sh [--with-browser] [--with-services] [--with-python] [--with-podman]" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

export PATH="$HOME/.cargo/bin:$PWD/.tools/node_modules/.bin:$PATH"

# webauthn-rs (passkeys) links OpenSSL: its headers and pkg-config come from Debian.
if ! dpkg -s libssl-dev pkg-config >/dev/null 2>&1; then
  say "Installing Debian's libssl-dev and pkg-config"
  as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq libssl-dev pkg-config >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "Adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

if ! cargo leptos --version 2>/dev/null | grep -q "$CARGO_LEPTOS_VERSION"; then
  say "Installing cargo-leptos $CARGO_LEPTOS_VERSION (about 16 minutes on 2 cores, once)"
  cargo install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked
fi

# The wasm-bindgen CLI must be exactly the version of the wasm-bindgen crate in Cargo.lock.
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if ! wasm-bindgen --version 2>/dev/null | grep -q " $bindgen_version\$"; then
  say "Installing wasm-bindgen-cli $bindgen_version"
  # Not --locked: one of its locked dependencies is missing from the registry.
  cargo install wasm-bindgen-cli --version "$bindgen_version" --force
fi

if ! wasm-opt --version 2>/dev/null | grep -q "version $BINARYEN_VERSION"; then
  say "Installing wasm-opt (npm binaryen@$BINARYEN_VERSION) into .tools/"
  mkdir -p .tools
  npm install --prefix .tools --no-audit --no-fund "binaryen@$BINARYEN_VERSION" >/dev/null
fi

if $with_browser; then
  if [ ! -x /usr/bin/chromium ]; then
    say "Installing Debian's chromium"
    as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null
  fi
  if [ ! -d end2end/node_modules/@playwright/test ] || [ end2end/package-lock.json -nt end2end/node_modules/.package-lock.json ]; then
    say "Installing the end-to-end test packages"
    (cd end2end && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >/dev/null)
  fi
fi

if $with_services; then
  pg_bin=/usr/lib/postgresql/15/bin
  packages=()
  [ -x "$pg_bin/postgres" ] || packages+=(postgresql)
  # pg_amcheck's extension (the crash soak's integrity check) is in postgresql 15's contrib.
  [ -x "$pg_bin/pg_amcheck" ] && [ -f /usr/share/postgresql/15/extension/amcheck.control ] || packages+=(postgresql-contrib)
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || packages+=(redis-server)
  if [ ${#packages[@]} -gt 0 ]; then
    say "Installing Debian's ${packages[*]}"
    as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${packages[@]}" >/dev/null
    # The packages may start a default cluster on 5432 and a Redis on 6379: nothing here uses
    # them (the tests start their own on free ports), so they are stopped again.
    if command -v pg_lsclusters >/dev/null 2>&1; then
      pg_lsclusters --no-header 2>/dev/null | awk '$4 == "online" { print $1, $2 }' | while read -r version cluster; do
        as_root pg_ctlcluster "$version" "$cluster" stop || true
      done
    fi
    if [ -x /etc/init.d/redis-server ] && redis-cli -p 6379 ping >/dev/null 2>&1; then
      as_root /etc/init.d/redis-server stop >/dev/null || true
    fi
  fi
fi

if $with_python; then
  venv=.tools/python-venv
  if [ ! -x "$venv/bin/pip" ] && ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian keeps ensurepip (which venv needs) in its own package.
    say "Installing Debian's python3-venv"
    as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3-venv >/dev/null
    python3 -m venv --clear "$venv"
  fi
  # The client is installed editable, so only a changed pyproject.toml (its dependencies) needs pip.
  stamp="$venv/.clients-python-pyproject.sha256"
  wanted=$(sha256sum clients/python/pyproject.toml | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    say "Installing the Python client and its test packages into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -e 'clients/python[dev]'
    echo "$wanted" >"$stamp"
  fi
fi

if $with_podman; then
  # runc as well as podman's crun: crun 1.8 refuses hosts with cgroup v1 and v2 mixed. mmdebstrap
  # makes the Debian base image from deb.debian.org, as no container registry may be reachable.
  packages=()
  for tool in podman runc mmdebstrap; do
    command -v "$tool" >/dev/null 2>&1 || packages+=("$tool")
  done
  if [ ${#packages[@]} -gt 0 ]; then
    say "Installing Debian's ${packages[*]}"
    as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${packages[@]}" >/dev/null
  fi
fi
