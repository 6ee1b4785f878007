# Throw-away Postgres and Redis servers for the tests and benchmarks (no Docker): Debian's
# postgresql 15 and redis-server (installed by `bash scripts/setup.sh --with-services`), each on a
# free port of 127.0.0.1 with a data folder under mktemp that is deleted when they stop.
#
#   source scripts/lib/services.sh
#   start_services     # exports the variables below; stops both again when the shell exits
#   ...
#   stop_services      # optional: stops both and deletes their data (safe to call twice)
#
# Exports:
#   STEPGATE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:<port>/postgres  (trust auth, local only)
#   STEPGATE_TEST_REDIS_URL=redis://127.0.0.1:<port>/
#   STEPGATE_PG_PORT, STEPGATE_REDIS_PORT, STEPGATE_PG_BIN (initdb, psql, createdb, pg_dump, pg_amcheck…)
#
# Postgres refuses to run as root, so as root its programs run as the `postgres` OS user
# (runuser). It runs without fsync: the data is thrown away, and the tests want speed.

_sg_services_dir=${_sg_services_dir:-}
_sg_redis_port=${_sg_redis_port:-}
_sg_previous_exit_trap=${_sg_previous_exit_trap:-}

# A port nobody listens on right now (the kernel's pick for port 0).
_sg_free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
  else
    node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
  fi
}

# Runs a Postgres program as the `postgres` OS user when we are root (initdb and postgres refuse root).
_sg_as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

_sg_pg_bin() {
  if [ -n "${STEPGATE_PG_BIN:-}" ] && [ -x "$STEPGATE_PG_BIN/postgres" ]; then echo "$STEPGATE_PG_BIN"; return; fi
  if [ -x /usr/lib/postgresql/15/bin/postgres ]; then echo /usr/lib/postgresql/15/bin; return; fi
  local newest
  newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$newest" ] && [ -x "$newest/postgres" ] && echo "$newest"
}

_sg_start_postgres() {
  local bin=$1 dir=$2 port
  mkdir -p "$dir/pg"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir/pg"
  _sg_as_pg "$bin/initdb" -D "$dir/pg/data" -U postgres --auth=trust -E UTF8 --locale=C -N >"$dir/pg/initdb.log" 2>&1 || {
    echo "services: initdb failed:" >&2; cat "$dir/pg/initdb.log" >&2; return 1
  }
  for _ in 1 2 3 4 5; do
    port=$(_sg_free_port)
    if _sg_as_pg "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/postgres.log" -w -t 60 start \
      -o "-p $port -k $dir/pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
      >/dev/null 2>&1; then
      for _ in $(seq 1 100); do
        if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; then
          STEPGATE_PG_PORT=$port
          return 0
        fi
        sleep 0.1
      done
      _sg_as_pg "$bin/pg_ctl" -D "$dir/pg/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    # Another program took the port between the pick and the start: pick again.
  done
  echo "services: Postgres did not start; its log:" >&2
  cat "$dir/pg/postgres.log" >&2 2>/dev/null || true
  return 1
}

_sg_start_redis() {
  local dir=$1 port
  mkdir -p "$dir/redis"
  for _ in 1 2 3 4 5; do
    port=$(_sg_free_port)
    rm -f "$dir/redis/redis.pid"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
      --dir "$dir/redis" --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" >/dev/null 2>&1 || continue
    for _ in $(seq 1 100); do
      if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
        _sg_redis_port=$port
        STEPGATE_REDIS_PORT=$port
        return 0
      fi
      sleep 0.1
    done
    [ -s "$dir/redis/redis.pid" ] && kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true
  done
  echo "services: Redis did not start; its log:" >&2
  cat "$dir/redis/redis.log" >&2 2>/dev/null || true
  return 1
}

start_services() {
  if [ -n "$_sg_services_dir" ]; then
    return 0 # already running in this shell
  fi
  local bin
  bin=$(_sg_pg_bin) || true
  if [ -z "$bin" ] || ! command -v redis-server >/dev/null 2>&1; then
    echo "services: Postgres or Redis is missing; run: bash scripts/setup.sh --with-services" >&2
    return 1
  fi
  _sg_services_dir=$(mktemp -d "${TMPDIR:-/tmp}/stepgate-services.XXXXXX")
  chmod 711 "$_sg_services_dir" # the postgres user must reach its own folder inside

  # Stop both (and delete the data) when the shell exits, before whatever EXIT trap it had.
  eval "set -- $(trap -p EXIT)"
  case "${3:-}" in
    *_sg_previous_exit_trap*) ;; # ours, from an earlier start in this shell
    *) _sg_previous_exit_trap=${3:-} ;;
  esac
  trap 'stop_services; eval "$_sg_previous_exit_trap"' EXIT
  # Without a handler, SIGINT/SIGTERM would end bash without running the EXIT trap.
  [ -z "$(trap -p INT)" ] && trap 'exit 130' INT
  [ -z "$(trap -p TERM)" ] && trap 'exit 143' TERM

  if ! _sg_start_postgres "$bin" "$_sg_services_dir" || ! _sg_start_redis "$_sg_services_dir"; then
    stop_services
    return 1
  fi
  export STEPGATE_PG_BIN=$bin STEPGATE_PG_PORT STEPGATE_REDIS_PORT
  export STEPGATE_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$STEPGATE_PG_PORT/postgres"
  export STEPGATE_TEST_REDIS_URL="redis://127.0.0.1:$STEPGATE_REDIS_PORT/"
  echo "services: Postgres on 127.0.0.1:$STEPGATE_PG_PORT, Redis on 127.0.0.1:$STEPGATE_REDIS_PORT"
}

stop_services() {
  local dir=$_sg_services_dir
  [ -n "$dir" ] || return 0
  _sg_services_dir=""
  if [ -f "$dir/pg/data/postmaster.pid" ]; then
    _sg_as_pg "$(_sg_pg_bin)/pg_ctl" -D "$dir/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ -n "$_sg_redis_port" ]; then
    redis-cli -h 127.0.0.1 -p "$_sg_redis_port" shutdown nosave >/dev/null 2>&1 || true
  fi
  _sg_redis_port=""
  if [ -s "$dir/redis/redis.pid" ]; then
    kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true
  fi
  rm -rf "$dir"
  unset STEPGATE_TEST_DATABASE_URL STEPGATE_TEST_REDIS_URL STEPGATE_PG_PORT STEPGATE_REDIS_PORT
}
