#!/usr/bin/env bash
# Tests of packaging/: the systemd unit, its sample settings and the container image.
# Usage: scripts/packaging-tests.sh [--no-containers]
#   1. unit: `systemd-analyze verify` on packaging/stepgate.service in a throw-away root (with the
#      binary it starts at /usr/local/bin/stepgate); any line it prints about the unit fails
#   2. unit: `systemd-analyze security --offline` exposure level at most 1.5 (systemd: "OK")
#   3. packaging/stepgate.env: comments only, and every variable it names is one the code reads
#   4. packaging/Containerfile: the tool versions match scripts/setup.sh
#   With podman (scripts/setup.sh --with-podman), unless --no-containers, on a Debian bookworm
#   base made here with mmdebstrap (cached in target/packaging-tests/; nothing is pulled):
#   5. the Containerfile's runtime stage builds, with target/release/stepgate as the binary
#   6. the image serves: /health/ready, /login with its stylesheet, the HEALTHCHECK, `stepgate
#      check`, and SIGTERM ends it cleanly (exit status 0)
#   7. the unit runs under systemd 252 in a container: refused without a key file; migrate, serve, the key from
#      LoadCredential=, /login and its stylesheet, packaging/stepgate-run beside it, a clean
#      stop, a second start on the same data
# Ends with one line: `packaging: N passed, M failed`; exit status 1 when any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

containers=true
for arg in "$@"; do
  case "$arg" in
    --no-containers) containers=false ;;
    *) echo "usage: scripts/packaging-tests.sh [--no-containers]" >&2; exit 2 ;;
  esac
done

unit=packaging/stepgate.service
binary=target/release/stepgate
max_exposure=15 # tenths: systemd-analyze security --threshold=15 means "at most 1.5"
cache=target/packaging-tests
tag=localhost/stepgate-pkgtest
name=stepgate-pkgtest-$$

passed=0
failed=0
pass() { echo "ok   $1"; passed=$((passed + 1)); }
fail() {
  echo "FAIL $1"
  shift
  [ $# -gt 0 ] && printf '       %s\n' "$@"
  failed=$((failed + 1))
}
finish() {
  echo "packaging: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

work=$(mktemp -d)
cleanup() {
  if command -v podman >/dev/null 2>&1; then
    podman rm -f -v -t 0 "$name-image" "$name-systemd" >/dev/null 2>&1
    podman volume rm -f "$name-data" >/dev/null 2>&1
    podman secret rm "$name-key" >/dev/null 2>&1
    podman rmi -f "$tag-image:$$" "$tag-binary:$$" >/dev/null 2>&1
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# One copy of the binary for every test (a build running meanwhile may replace it).
[ -x "$binary" ] && cp "$binary" "$work/stepgate"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# ---------------------------------------------------------------------------------------------
echo "==> The systemd unit"
root=$work/root
mkdir -p "$root/etc/systemd/system" "$root/usr/local/bin" "$root/usr/lib/systemd"
cp "$unit" "$root/etc/systemd/system/stepgate.service"
# The targets and slices the unit names come from the host's systemd.
cp -a /lib/systemd/system "$root/usr/lib/systemd/"
if [ -x "$work/stepgate" ]; then
  cp "$work/stepgate" "$root/usr/local/bin/stepgate"
else
  echo "(no $binary: the unit is verified with a stand-in executable)"
  printf '#!/bin/sh\nexit 0\n' >"$root/usr/local/bin/stepgate"
  chmod 0755 "$root/usr/local/bin/stepgate"
fi

if ! command -v systemd-analyze >/dev/null 2>&1; then
  fail "unit: systemd-analyze verify" "systemd-analyze is missing (Debian's systemd package)"
  fail "unit: exposure level at most 1.$((max_exposure % 10))" "systemd-analyze is missing"
else
  out=$(systemd-analyze verify --root="$root" stepgate.service 2>&1)
  rc=$?
  copy=$root/etc/systemd/system/stepgate.service
  out=${out//"$copy"/$unit}
  about_unit=$(grep -E 'stepgate' <<<"$out")
  if [ $rc -eq 0 ] && [ -z "$about_unit" ]; then
    pass "unit: systemd-analyze verify"
    # Lines about the host's own units are not this unit's fault, but are shown.
    [ -n "$out" ] && printf '       (about other units) %s\n' "$out"
  else
    mapfile -t lines <<<"${out:-exit status $rc}"
    fail "unit: systemd-analyze verify" "${lines[@]}"
  fi

  out=$(systemd-analyze security --offline=true --root="$root" --threshold=$max_exposure stepgate.service 2>&1)
  rc=$?
  level=$(grep -o 'Overall exposure level for stepgate.service: .*' <<<"$out" | sed 's/.*: //')
  if [ $rc -eq 0 ] && [ -n "$level" ]; then
    pass "unit: exposure level at most 1.$((max_exposure % 10)) (systemd-analyze security: $level)"
  else
    mapfile -t lines < <(grep -E '✗|Overall|rror' <<<"$out")
    fail "unit: exposure level at most 1.$((max_exposure % 10)) (systemd-analyze security: ${level:-none})" "${lines[@]}"
  fi
fi

# ---------------------------------------------------------------------------------------------
echo "==> The sample settings and the Containerfile"
env_file=packaging/stepgate.env
problems=()
while IFS= read -r line; do
  case "$line" in '' | '#'*) ;; *) problems+=("not a comment: $line") ;; esac
done <"$env_file"
# Every variable the file or the unit sets must be one the code (or a library it names) reads.
for var in $( (grep -oE '^#?[A-Z][A-Z0-9_]+=' "$env_file"; grep -oE '^Environment=[A-Z_]+=' "$unit" | sed 's/^Environment=//') | tr -d '#=' | sort -u); do
  case "$var" in
    LEPTOS_SITE_ADDR | RUST_LOG | NO_COLOR) continue ;; # Leptos, tracing's env filter, colours
  esac
  grep -rqF "\"$var\"" server/src engine/src app/src || problems+=("$var is read nowhere in server/, engine/, app/")
done
if [ ${#problems[@]} -eq 0 ]; then
  pass "stepgate.env: comments only, every variable is one Stepgate reads"
else
  fail "stepgate.env: comments only, every variable is one Stepgate reads" "${problems[@]}"
fi

problems=()
for pair in CARGO_LEPTOS_VERSION BINARYEN_VERSION; do
  wanted=$(grep -oE "^$pair=[^ ]+" scripts/setup.sh | cut -d= -f2)
  given=$(grep -oE "^ARG $pair=[^ ]+" packaging/Containerfile | cut -d= -f2)
  [ -n "$wanted" ] && [ "$wanted" = "$given" ] || problems+=("$pair: setup.sh ${wanted:-?}, Containerfile ${given:-?}")
done
if [ ${#problems[@]} -eq 0 ]; then
  pass "Containerfile: cargo-leptos and binaryen versions as in scripts/setup.sh"
else
  fail "Containerfile: cargo-leptos and binaryen versions as in scripts/setup.sh" "${problems[@]}"
fi

if ! $containers; then
  echo "(--no-containers: the image and the unit under systemd are not tried)"
  finish
fi

# ---------------------------------------------------------------------------------------------
echo "==> The container image and the unit under systemd (podman)"
container_tests=("image: the Containerfile's runtime stage builds"
  "image: serves /login and its stylesheet (key from a secret), healthy, \`stepgate check\` passes, SIGTERM exits 0"
  "unit under systemd: refused without a key, migrate, serve with the key from LoadCredential=, stepgate-run check, clean stop, restart")
missing=()
for tool in podman mmdebstrap curl python3; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ -x "$work/stepgate" ] || missing+=("$binary (cargo leptos build --release --precompress)")
if [ ${#missing[@]} -gt 0 ]; then
  for test in "${container_tests[@]}"; do
    fail "$test" "missing: ${missing[*]} (scripts/setup.sh --with-podman installs the tools)"
  done
  finish
fi

# crun 1.8 (Debian 12) refuses a host with both cgroup versions mounted ("cgroups in hybrid mode
# not supported"): runc when present. Only lowered limits: raising them needs CAP_SYS_RESOURCE.
mkdir -p "$work/conf"
{
  echo '[containers]'
  echo 'default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]'
  if command -v runc >/dev/null 2>&1; then
    echo '[engine]'
    echo 'runtime = "runc"'
  fi
} >"$work/conf/containers.conf"
export CONTAINERS_CONF=$work/conf/containers.conf
# Podman starts healthcheck timers through systemd; without it that is one harmless error line.
quiet() { grep -v 'unable to get systemd connection' >&2; }

# The base: Debian bookworm from deb.debian.org (what debian:bookworm-slim holds, plus systemd
# for the unit's test), made once a month.
mkdir -p "$cache"
rootfs=$cache/bookworm-rootfs.tar
if [ ! -s "$rootfs" ] || [ -n "$(find "$rootfs" -mtime +30)" ]; then
  echo "(making the Debian bookworm base with mmdebstrap, about a minute)"
  if ! mmdebstrap --variant=minbase --mode=root --format=tar \
    --include=systemd,systemd-sysv,dbus,ca-certificates \
    bookworm "$rootfs.part" http://deb.debian.org/debian >"$work/mmdebstrap.log" 2>&1; then
    mapfile -t lines < <(tail -5 "$work/mmdebstrap.log")
    for test in "${container_tests[@]}"; do fail "$test" "mmdebstrap failed:" "${lines[@]}"; done
    finish
  fi
  mv "$rootfs.part" "$rootfs"
fi
base=$tag-base:bookworm
stamp=$(stat -c %Y "$rootfs")
if [ "$(podman image inspect --format '{{index .Labels "stamp"}}' "$base" 2>/dev/null)" != "$stamp" ]; then
  podman import --change "LABEL stamp=$stamp" --change 'CMD ["/bin/bash"]' "$rootfs" "$base" >/dev/null 2>"$work/import.log" ||
    cat "$work/import.log" >&2
fi
# The binary as an image of its own, for the Containerfile's BINARY_FROM.
mkdir -p "$work/binary/usr/local/bin"
cp "$work/stepgate" "$work/binary/usr/local/bin/stepgate"
tar -C "$work/binary" -c . | podman import - "$tag-binary:$$" >/dev/null 2>"$work/import.log" ||
  cat "$work/import.log" >&2

# 5. The image.
image_built=false
if podman build --format docker --network host -f packaging/Containerfile \
  --build-arg RUNTIME_BASE="$base" --build-arg BINARY_FROM="$tag-binary:$$" \
  -t "$tag-image:$$" packaging >"$work/build.log" 2>&1; then
  image_built=true
  pass "${container_tests[0]}"
else
  mapfile -t lines < <(tail -15 "$work/build.log")
  fail "${container_tests[0]}" "${lines[@]}"
fi

# Waits until $1 answers 200 (at most $2 seconds).
wait_ready() {
  local url=$1 deadline=$((SECONDS + $2))
  while [ $SECONDS -lt $deadline ]; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "$url")" = 200 ] && return 0
    sleep 0.5
  done
  return 1
}
# Checks /login at $1 and the stylesheet it links; prints what is wrong.
check_login() {
  local base_url=$1 page css code type
  page=$(curl -s -m 5 "$base_url/login") || { echo "GET /login failed"; return 1; }
  css=$(grep -oE '<link[^>]*rel="stylesheet"[^>]*>' <<<"$page" | grep -oE 'href="[^"]+"' | head -1 | cut -d'"' -f2)
  [ -n "$css" ] || { echo "/login has no stylesheet link"; return 1; }
  read -r code type < <(curl -s -o /dev/null -w '%{http_code} %{content_type}\n' -m 5 "$base_url$css")
  [ "$code" = 200 ] && [[ "$type" == text/css* ]] || { echo "GET $css: $code $type"; return 1; }
}

# 6. The image serves.
if $image_built; then
  port=$(free_port)
  problems=()
  # The key as a secret, as the Containerfile's notes say.
  head -c 32 /dev/urandom | od -An -vtx1 | tr -d ' \n' >"$work/secret.key"
  podman secret create "$name-key" "$work/secret.key" >/dev/null
  # The host's network (no bridge, NAT rules or forwarding on the machine); the HEALTHCHECK
  # follows LEPTOS_SITE_ADDR's port.
  if ! podman run -d --name "$name-image" --network host -e LEPTOS_SITE_ADDR="127.0.0.1:$port" \
    -v "$name-data:/var/lib/stepgate" \
    --secret "$name-key,target=/run/secrets/stepgate-key" -e STEPGATE_KEY_FILE=/run/secrets/stepgate-key \
    -e STEPGATE_PUBLIC_URL="http://localhost:$port" "$tag-image:$$" >/dev/null 2> >(quiet); then
    problems+=("podman run failed")
  elif ! wait_ready "http://127.0.0.1:$port/health/ready" 30; then
    problems+=("/health/ready did not answer 200 within 30 s")
  else
    why=$(check_login "http://127.0.0.1:$port") || problems+=("$why")
    podman healthcheck run "$name-image" >/dev/null 2> >(quiet) || problems+=("the image's HEALTHCHECK failed")
    out=$(podman exec "$name-image" stepgate check 2>&1) || problems+=("stepgate check in the container:" "$out")
    [ "$(podman exec "$name-image" id -u)" = 10001 ] || problems+=("the server does not run as uid 10001")
    podman exec "$name-image" test -e /var/lib/stepgate/secret.key && problems+=("a key file was made in the volume")
    start=$SECONDS
    podman stop -t 20 "$name-image" >/dev/null 2> >(quiet)
    status=$(podman inspect --format '{{.State.ExitCode}}' "$name-image")
    [ "$status" = 0 ] || problems+=("exit status after SIGTERM: $status")
    [ $((SECONDS - start)) -lt 15 ] || problems+=("SIGTERM took $((SECONDS - start)) s")
  fi
  if [ ${#problems[@]} -eq 0 ]; then
    pass "${container_tests[1]}"
  else
    mapfile -t lines < <(podman logs "$name-image" 2>&1 | tail -8)
    fail "${container_tests[1]}" "${problems[@]}" "-- its log:" "${lines[@]}"
  fi
else
  fail "${container_tests[1]}" "no image"
fi

# 7. The unit under systemd (PID 1 of a container on the same base; host network).
port=$(free_port)
problems=()
sd() { podman exec "$name-systemd" "$@"; }
if ! podman run -d --name "$name-systemd" --systemd=always --network host "$base" /sbin/init >/dev/null 2>"$work/systemd.err"; then
  mapfile -t problems <"$work/systemd.err"
else
  for _ in $(seq 1 40); do
    state=$(sd systemctl is-system-running 2>/dev/null)
    case "$state" in running | degraded) break ;; esac
    sleep 0.5
  done
  podman cp "$work/stepgate" "$name-systemd:/usr/local/bin/stepgate"
  podman cp "$unit" "$name-systemd:/etc/systemd/system/stepgate.service"
  podman cp packaging/stepgate-run "$name-systemd:/usr/local/sbin/stepgate-run"
  sd install -d -m 0700 /etc/stepgate
  sd systemctl daemon-reload
  # Without the key file the unit refuses to start, and says why.
  if sd systemctl start stepgate >/dev/null 2>&1; then
    problems+=("started without /etc/stepgate/secret.key")
    sd systemctl stop stepgate
  elif [ "$(sd systemctl show -p AssertResult --value stepgate)" != no ]; then
    problems+=("a start without the key file failed, but not at its AssertFileNotEmpty=")
  fi
  sd sh -c 'umask 077; head -c 32 /dev/urandom | od -An -vtx1 | tr -d " \n" >/etc/stepgate/secret.key'
  # The sample settings as shipped, and this test's address.
  { cat packaging/stepgate.env
    echo "LEPTOS_SITE_ADDR=127.0.0.1:$port"
    echo "STEPGATE_PUBLIC_URL=http://localhost:$port"
    echo "STEPGATE_SHUTDOWN_DELAY=1"; } >"$work/stepgate.env"
  podman cp "$work/stepgate.env" "$name-systemd:/etc/stepgate/stepgate.env"
  sd chmod 0600 /etc/stepgate/stepgate.env
  sd systemctl daemon-reload
  for round in first second; do
    if ! sd systemctl start stepgate 2>&1; then
      problems+=("the $round start failed")
      break
    fi
    if ! wait_ready "http://127.0.0.1:$port/health/ready" 30; then
      problems+=("$round start: /health/ready did not answer 200 within 30 s")
      break
    fi
    why=$(check_login "http://127.0.0.1:$port") || problems+=("$round start: $why")
    if [ $round = first ]; then
      # An operator's command beside the running server, as its user.
      out=$(sd stepgate-run check 2>&1) || problems+=("stepgate-run check:" "$out")
      pid=$(sd systemctl show -p MainPID --value stepgate)
      owners=$(sd stat -c %U /var/lib/private/stepgate/stepgate.db "/proc/$pid" | sort -u | wc -l)
      [ "$owners" = 1 ] || problems+=("the database and the server have different owners")
      # The sandbox is really on: a system call filter, no new privileges, no capabilities.
      confined=$(sd grep -cE '^(Seccomp:[[:space:]]+2|NoNewPrivs:[[:space:]]+1|CapBnd:[[:space:]]+0+)$' "/proc/$pid/status")
      [ "$confined" = 3 ] || problems+=("the server is not confined: $(sd grep -E '^(Seccomp|NoNewPrivs|CapBnd):' "/proc/$pid/status" | tr -s '\t\n' '  ')")
    fi
    sd systemctl stop stepgate
    result=$(sd systemctl show -p Result --value stepgate)
    [ "$result" = success ] || problems+=("$round stop: Result=$result")
  done
  journal=$(sd journalctl -u stepgate --no-pager -o cat 2>&1)
  grep -q '^Migrations: ' <<<"$journal" || problems+=("no line of \`stepgate migrate\` in the journal")
  grep -qi 'key file is in the data folder' <<<"$journal" && problems+=("the key was not taken from the credential")
  sd test -e /var/lib/private/stepgate/secret.key && problems+=("a key file was made in the data folder")
  sd test -s /var/lib/private/stepgate/stepgate.db || problems+=("no database in /var/lib/private/stepgate")
  if [ ${#problems[@]} -gt 0 ]; then
    mapfile -t lines < <(tail -12 <<<"$journal")
    problems+=("-- the journal:" "${lines[@]}")
  fi
fi
if [ ${#problems[@]} -eq 0 ]; then
  pass "${container_tests[2]}"
else
  fail "${container_tests[2]}" "${problems[@]}"
fi

finish
