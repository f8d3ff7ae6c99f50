#!/usr/bin/env bash
# Starts and stops the services the PostgreSQL store and RabbitMQ transport tests need, each a private
# instance whose data, logs, sockets and pid files all live in one throw-away folder, and installs the
# Chromium the browser tests drive.
#
#   scripts/services.sh start DIR   installs what is missing from Debian's packages (as root), starts
#                                   PostgreSQL and RabbitMQ on free loopback ports, and writes
#                                   DIR/services.env (export CONVERGE_TEST_POSTGRES=..., export
#                                   CONVERGE_TEST_RABBITMQ=..., export CONVERGE_TEST_CHROMIUM=...), which
#                                   it also prints
#   scripts/services.sh stop DIR    stops whatever a start in DIR left running; safe to repeat
#   scripts/services.sh rabbitmqctl DIR ARGS...
#                                   runs rabbitmqctl against the RabbitMQ a start in DIR started, e.g.
#                                   stop_app (the broker stops; its node and data stay) and start_app
#
# CONVERGE_SERVICES=all|postgres|rabbitmq|chromium|none (default all) chooses what start starts;
# chromium is installed only (Debian's package, when missing) and its path exported: nothing runs until
# a test launches it. The packages' own system services are neither started nor used. For a demo:
#   scripts/services.sh start /tmp/converge-services && source /tmp/converge-services/services.env
# shellcheck disable=SC1090 # the files it sources are this instance's own, written by start
set -euo pipefail

usage() {
  echo "usage: $0 start DIR | stop DIR | rabbitmqctl DIR ARGS...    (CONVERGE_SERVICES=all|postgres|rabbitmq|chromium|none)" >&2
  exit 2
}

[ $# -ge 2 ] || usage
action=$1
dir=$2
shift 2
case "$action" in
  start | stop) [ $# -eq 0 ] || usage ;;
  rabbitmqctl) [ $# -ge 1 ] || usage ;;
  *) usage ;;
esac

services=${CONVERGE_SERVICES:-all}
case "$services" in all | postgres | rabbitmq | chromium | none) ;; *)
  echo "CONVERGE_SERVICES must be all, postgres, rabbitmq, chromium or none, not '$services'" >&2
  exit 2
  ;;
esac
wants() { [ "$services" = all ] || [ "$services" = "$1" ]; }

log() { echo "services: $*" >&2; }
die() {
  echo "services: $*" >&2
  exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Runs a command as the postgres OS user when we are root (PostgreSQL refuses to run as root).
as_postgres() {
  if is_root; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# True when PID is alive and its command line contains TEXT, so a reused pid is never signalled.
alive_with() {
  local pid=$1 text=$2
  [ -n "$pid" ] && { tr '\0' '\n' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$text"
}

# True when PID is alive and was started with VAR=VALUE in its environment.
alive_env() {
  local pid=$1 entry=$2
  [ -n "$pid" ] && { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qxF -- "$entry"
}

# True while PID runs; an exited process its parent has not reaped yet (a zombie) does not count.
running() {
  local state
  state=$({ cut -d')' -f2 <"/proc/$1/stat"; } 2>/dev/null) || return 1
  [ -n "$state" ] && [[ "$state" != " Z"* ]]
}

# Waits up to SECONDS for PID to exit; false if it still runs then.
wait_gone() {
  local pid=$1 seconds=$2 i
  for ((i = 0; i < seconds * 10; i++)); do
    running "$pid" || return 0
    sleep 0.1
  done
  ! running "$pid"
}

# A loopback TCP port nobody listens on, from 20000-31999 (below the kernel's ephemeral range, so
# outgoing connections made meanwhile do not take it), never one already handed out by this run.
taken_ports=" "
free_port() {
  local port i
  for ((i = 0; i < 200; i++)); do
    port=$((20000 + RANDOM % 12000))
    case "$taken_ports" in *" $port "*) continue ;; esac
    if ! (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      taken_ports+="$port "
      echo "$port"
      return 0
    fi
  done
  die "no free TCP port found on 127.0.0.1"
}

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$bin" ] && [ -x "$bin/initdb" ] && echo "$bin"
}

rabbit_sbin=/usr/lib/rabbitmq/bin # the scripts themselves, not /usr/sbin's wrappers that su and cd

# Debian's launcher: it applies /etc/chromium.d and execs /usr/lib/chromium/chromium in its own place, so
# the process a test launches is the browser it ends.
chromium_bin=/usr/bin/chromium

policy_rc=/usr/sbin/policy-rc.d
added_policy_rc=

# Installs the Debian packages that are missing, logging to DIR/apt.log. The package lists are
# updated first only when apt knows no candidate, and again for one more try when an install fails
# (lists too old for the mirror). The packages' own services are kept from starting with a policy-rc.d
# for the duration of the install when the machine has none.
install_missing() {
  local pkgs=() pkg updated=
  if wants postgres && { [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/pgbench" ] || ! command -v pg_isready >/dev/null; }; then
    pkgs+=(postgresql postgresql-client)
  fi
  if wants rabbitmq && [ ! -x "$rabbit_sbin/rabbitmq-server" ]; then
    pkgs+=(rabbitmq-server)
  fi
  if wants chromium && [ ! -x "$chromium_bin" ]; then
    pkgs+=(chromium)
  fi
  [ ${#pkgs[@]} -gt 0 ] || return 0
  is_root || die "missing packages (${pkgs[*]}); run as root or install them: apt-get install ${pkgs[*]}"

  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get -q -o DPkg::Lock::Timeout=300)
  apt_update() {
    log "apt-get update ($1)"
    "${apt[@]}" update >>"$dir/apt.log" 2>&1 || die "apt-get update failed; end of $dir/apt.log:
$(tail -20 "$dir/apt.log")"
    updated=1
  }
  for pkg in "${pkgs[@]}"; do
    # Read whole before matching: grep -q would stop at the Candidate line, and apt-cache, still writing the
    # version table, would die of SIGPIPE and fail the pipeline (pipefail) for a package that has a candidate.
    if ! grep -q 'Candidate: [^(]' <<<"$(apt-cache policy "$pkg" 2>/dev/null)"; then
      apt_update "no install candidate for $pkg"
      break
    fi
  done

  if [ ! -e "$policy_rc" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy_rc"
    chmod 755 "$policy_rc"
    added_policy_rc=1
  fi
  log "installing ${pkgs[*]}"
  local status=0
  "${apt[@]}" install -y --no-install-recommends "${pkgs[@]}" >>"$dir/apt.log" 2>&1 || status=$?
  if [ "$status" -ne 0 ] && [ -z "$updated" ]; then
    apt_update "the install failed; trying once more"
    status=0
    "${apt[@]}" install -y --no-install-recommends "${pkgs[@]}" >>"$dir/apt.log" 2>&1 || status=$?
  fi
  if [ -n "$added_policy_rc" ]; then rm -f "$policy_rc"; added_policy_rc=; fi
  [ "$status" -eq 0 ] || die "apt-get install ${pkgs[*]} failed ($status); end of $dir/apt.log:
$(tail -30 "$dir/apt.log")"
}

# ---------------------------------------------------------------- PostgreSQL

pg_start() {
  local bin port data sock
  bin=$(pg_bin) || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
  port=$(free_port)
  data="$dir/postgres/data"
  sock="$dir/postgres/sock"

  mkdir -p "$sock"
  touch "$dir/postgres.log"
  if is_root; then chown -R postgres:postgres "$dir/postgres" "$dir/postgres.log"; fi
  as_postgres test -w "$dir/postgres" ||
    die "the postgres user cannot write $dir/postgres: use a folder every user can traverse (such as one under /tmp)"

  log "PostgreSQL: initdb"
  as_postgres "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --no-locale --no-sync >"$dir/postgres/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -20 "$dir/postgres/initdb.log")"
  cat >>"$data/postgresql.conf" <<EOF

# converge test instance
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
# The test projects run in parallel, and several start worker processes whose pools (up to 200 connections each,
# as CONVERGE_TEST_POSTGRES says) grow with their jobs' concurrency; at 300 a run of the suites hit "too many clients".
max_connections = 1000
shared_buffers = 256MB
fsync = on
synchronous_commit = on
full_page_writes = on
logging_collector = off
EOF

  log "PostgreSQL: starting on 127.0.0.1:$port"
  as_postgres "$bin/pg_ctl" start -D "$data" -l "$dir/postgres.log" -w -t 60 >/dev/null ||
    die "PostgreSQL did not start; end of $dir/postgres.log:
$(tail -30 "$dir/postgres.log")"
  local i
  for ((i = 0; i < 300; i++)); do
    pg_isready -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 1 && break
    sleep 0.1
  done
  pg_isready -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 1 ||
    die "PostgreSQL is not ready on port $port; end of $dir/postgres.log:
$(tail -30 "$dir/postgres.log")"
  "$bin/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -c 'CREATE DATABASE converge' >&2

  echo "export CONVERGE_TEST_POSTGRES=\"Host=127.0.0.1;Port=$port;Username=postgres;Database=converge;Maximum Pool Size=200;Include Error Detail=true\"" >>"$dir/services.env"
}

pg_stop() {
  local data="$dir/postgres/data" bin pid
  [ -f "$data/postmaster.pid" ] || return 0
  bin=$(pg_bin) || return 0
  pid=$(head -1 "$data/postmaster.pid")
  if as_postgres "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1; then
    log "PostgreSQL: stopping"
    as_postgres "$bin/pg_ctl" stop -D "$data" -m fast -w -t 60 >/dev/null 2>&1 || true
  fi
  if alive_with "$pid" "$data"; then
    kill -QUIT "$pid" 2>/dev/null || true # immediate shutdown
    wait_gone "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
  fi
}

# ---------------------------------------------------------------- RabbitMQ

# The environment every rabbitmq-server and rabbitmqctl call of this instance shares; written once by
# start and read back by stop.
rabbit_env_file() { echo "$dir/rabbitmq/rabbitmq.env"; }

rabbit_write_env() {
  local r=$1 amqp=$2 dist=$3 epmd=$4
  cat >"$(rabbit_env_file)" <<EOF
export HOME='$r/home'
export RABBITMQ_NODENAME='converge-$amqp@localhost'
export RABBITMQ_CONF_ENV_FILE='$r/rabbitmq-env.conf'
export RABBITMQ_CONFIG_FILE='$r/rabbitmq.conf'
export RABBITMQ_ADVANCED_CONFIG_FILE='$r/advanced.config'
export RABBITMQ_ENABLED_PLUGINS_FILE='$r/enabled_plugins'
export RABBITMQ_MNESIA_BASE='$r/mnesia'
export RABBITMQ_LOG_BASE='$r/log'
export RABBITMQ_PID_FILE='$r/beam.pid'
export RABBITMQ_DIST_PORT=$dist
export ERL_EPMD_PORT=$epmd
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
export RABBITMQ_CTL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
EOF
}

# rabbitmqctl for this instance; never runs longer than 60 s.
rabbitmqctl_() { (. "$(rabbit_env_file)" && timeout 60 "$rabbit_sbin/rabbitmqctl" -n "$RABBITMQ_NODENAME" "$@"); }

epmd_bin() { command -v epmd || ls /usr/lib/erlang/erts-*/bin/epmd 2>/dev/null | sort -V | tail -1; }

rabbit_start() {
  [ -x "$rabbit_sbin/rabbitmq-server" ] || die "RabbitMQ not found under $rabbit_sbin"
  local r="$dir/rabbitmq" amqp dist epmd epmd_exe log
  amqp=$(free_port)
  dist=$(free_port)
  epmd=$(free_port)
  mkdir -p "$r/home" "$r/mnesia" "$r/log"
  chmod 700 "$r/home"
  # A random cookie of our own, so rabbitmqctl needs nothing from /var/lib/rabbitmq.
  (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr 'a-f' 'A-F' >"$r/home/.erlang.cookie")
  chmod 400 "$r/home/.erlang.cookie"
  : >"$r/rabbitmq-env.conf"
  echo '[].' >"$r/enabled_plugins"
  cat >"$r/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$amqp
log.file.level = info
log.console = false
EOF
  rabbit_write_env "$r" "$amqp" "$dist" "$epmd"
  log="$r/log/converge-$amqp@localhost.log"

  # Our own epmd on its own port, started here so that stop knows its pid.
  epmd_exe=$(epmd_bin) || die "epmd not found (erlang-base)"
  (. "$(rabbit_env_file)" && cd "$r" && exec setsid "$epmd_exe" -port "$epmd" -address 127.0.0.1 </dev/null >"$r/epmd.out" 2>&1) &
  echo $! >"$r/epmd.pid"

  log "RabbitMQ: starting converge-$amqp@localhost on 127.0.0.1:$amqp"
  (. "$(rabbit_env_file)" && cd "$r" && exec setsid "$rabbit_sbin/rabbitmq-server" </dev/null >"$r/server.out" 2>&1) &
  local server=$!
  echo "$server" >"$r/server.pid"

  local deadline=$((SECONDS + 120)) up=
  while [ $SECONDS -lt $deadline ]; do
    running "$server" || break
    if rabbitmqctl_ -q await_startup --timeout 5 >/dev/null 2>&1; then
      up=1
      break
    fi
    sleep 0.5
  done
  if [ -z "$up" ]; then
    if running "$server"; then
      echo "services: RabbitMQ did not start within 120 s" >&2
    else
      echo "services: RabbitMQ exited while starting" >&2
    fi
    if [ -s "$log" ]; then
      echo "services: end of $log:" >&2
      tail -30 "$log" >&2
    fi
    echo "services: first errors and end of $r/server.out:" >&2
    grep -m 10 -F '[error]' "$r/server.out" >&2 || true
    echo "..." >&2
    tail -15 "$r/server.out" >&2 || true
    exit 1
  fi
  (: <"/dev/tcp/127.0.0.1/$amqp") 2>/dev/null || die "RabbitMQ is up but nothing listens on 127.0.0.1:$amqp"

  echo "export CONVERGE_TEST_RABBITMQ=\"amqp://guest:guest@127.0.0.1:$amqp/\"" >>"$dir/services.env"
}

# Ends PID if it still carries this instance's environment: TERM, then KILL after SECONDS.
rabbit_end() {
  local pid=$1 seconds=$2 mark="RABBITMQ_MNESIA_BASE=$dir/rabbitmq/mnesia"
  alive_env "$pid" "$mark" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  wait_gone "$pid" "$seconds" || { alive_env "$pid" "$mark" && kill -KILL "$pid" 2>/dev/null; } || true
}

rabbit_stop() {
  local r="$dir/rabbitmq" beam='' server='' epmd='' mark="RABBITMQ_MNESIA_BASE=$dir/rabbitmq/mnesia"
  [ -f "$(rabbit_env_file)" ] || return 0
  [ -f "$r/beam.pid" ] && beam=$(cat "$r/beam.pid")
  [ -f "$r/server.pid" ] && server=$(cat "$r/server.pid")
  [ -f "$r/epmd.pid" ] && epmd=$(cat "$r/epmd.pid")

  if alive_env "$beam" "$mark" || alive_env "$server" "$mark"; then
    log "RabbitMQ: stopping"
    rabbitmqctl_ -q stop >/dev/null 2>&1 || true
    [ -z "$beam" ] || wait_gone "$beam" 30 || true
  fi
  # Whatever is left: the node's beam, the script that launched it, then the node's own epmd.
  rabbit_end "$beam" 15
  rabbit_end "$server" 5
  rabbit_end "$epmd" 5
  return 0
}

# ---------------------------------------------------------------- Chromium

# Nothing to start: checks that the installed browser runs at all and hands its path to the tests.
chromium_ready() {
  [ -x "$chromium_bin" ] || die "Chromium not found at $chromium_bin (Debian's chromium package)"
  local version
  version=$("$chromium_bin" --version 2>>"$dir/chromium.log") ||
    die "$chromium_bin --version failed; end of $dir/chromium.log:
$(tail -20 "$dir/chromium.log")"
  log "Chromium: $version at $chromium_bin"
  echo "export CONVERGE_TEST_CHROMIUM=\"$chromium_bin\"" >>"$dir/services.env"
}

# ---------------------------------------------------------------- main

if [ "$action" = rabbitmqctl ]; then
  [ -f "$dir/rabbitmq/rabbitmq.env" ] || die "no RabbitMQ was started in $dir: run '$0 start $dir' first"
  dir=$(cd "$dir" && pwd)
  rabbitmqctl_ "$@"
  exit
fi

if [ "$action" = stop ]; then
  [ -d "$dir" ] || exit 0
  dir=$(cd "$dir" && pwd)
  rabbit_stop
  pg_stop
  exit 0
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
for part in postgres rabbitmq; do
  [ ! -e "$dir/$part" ] || die "$dir/$part exists already: run '$0 stop $dir' and remove $dir, or pick another folder"
done
chmod 755 "$dir" # the postgres user must reach its data directory inside
: >"$dir/services.env"
[ "$services" = none ] && exit 0

# On failure or interruption, stop what this start already started, so nothing is left behind.
on_exit() {
  local status=$?
  set +e
  if [ -n "$added_policy_rc" ]; then rm -f "$policy_rc"; fi
  if [ "$status" -ne 0 ]; then
    rabbit_stop
    pg_stop
  fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

install_missing

if wants postgres; then pg_start; fi
if wants rabbitmq; then rabbit_start; fi
if wants chromium; then chromium_ready; fi
log "ready after ${SECONDS} s ($services)"
cat "$dir/services.env"
