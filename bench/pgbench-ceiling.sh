#!/usr/bin/env bash
# Measures this machine's PostgreSQL ceiling for durable single-row INSERT transactions with pgbench, at
# 1 client and at 32 clients, and prints one JSON line per client count:
#   {"clients":1,"tps":812.4,"latency_ms":1.231}
# It creates a table "ceiling" in the target database, truncates it before each run and drops it after.
#
# Usage: bench/pgbench-ceiling.sh [--seconds N] [SERVICES_ENV_FILE | CONNECTION_STRING]
#        bench/pgbench-ceiling.sh [--seconds N] --host HOST --port PORT [--user USER] [--database DB]
# With neither, the connection comes from $CONVERGE_TEST_POSTGRES. A connection string is in the form
# CONVERGE_TEST_POSTGRES has ("Host=127.0.0.1;Port=5432;Username=postgres;Database=converge");
# a services env file is the one scripts/services.sh start writes. Each run lasts 10 s by default.
set -euo pipefail

usage() {
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

seconds=10
source_arg=
host='' port='' user='' database=''
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) [ $# -ge 2 ] || usage; seconds=$2; shift 2 ;;
    --host) [ $# -ge 2 ] || usage; host=$2; shift 2 ;;
    --port) [ $# -ge 2 ] || usage; port=$2; shift 2 ;;
    --user) [ $# -ge 2 ] || usage; user=$2; shift 2 ;;
    --database) [ $# -ge 2 ] || usage; database=$2; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "unknown option: $1" >&2; usage ;;
    *) [ -z "$source_arg" ] || usage; source_arg=$1; shift ;;
  esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "--seconds takes a whole number of seconds" >&2; usage; }

conn=
if [ -n "$source_arg" ]; then
  if [ -f "$source_arg" ]; then
    # shellcheck disable=SC1090
    conn=$(. "$source_arg" && echo "${CONVERGE_TEST_POSTGRES:-}")
    [ -n "$conn" ] || { echo "$source_arg does not set CONVERGE_TEST_POSTGRES" >&2; exit 2; }
  elif [[ "$source_arg" == *=* ]]; then
    conn=$source_arg
  else
    echo "not a file nor a connection string: $source_arg" >&2
    usage
  fi
elif [ -z "$host$port" ]; then
  conn=${CONVERGE_TEST_POSTGRES:-}
  [ -n "$conn" ] || { echo "no connection: pass one, or set CONVERGE_TEST_POSTGRES" >&2; usage; }
fi

# Npgsql-style "Key=Value;Key=Value" to libpq's PG* environment; explicit options win.
if [ -n "$conn" ]; then
  IFS=';' read -ra pairs <<<"$conn"
  for pair in "${pairs[@]}"; do
    [[ "$pair" == *=* ]] || continue
    key=$(tr -d ' ' <<<"${pair%%=*}" | tr '[:upper:]' '[:lower:]')
    value=${pair#*=}
    case "$key" in
      host | server) : "${host:=$value}" ;;
      port) : "${port:=$value}" ;;
      username | userid | user | uid) : "${user:=$value}" ;;
      database | db) : "${database:=$value}" ;;
      password | pwd) export PGPASSWORD=$value ;;
    esac
  done
fi
export PGHOST=${host:-127.0.0.1} PGPORT=${port:-5432} PGUSER=${user:-postgres} PGDATABASE=${database:-converge}

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
pgbench=${bin:+$bin/pgbench}
[ -x "${pgbench:-}" ] || pgbench=$(command -v pgbench) || { echo "pgbench not found (Debian package postgresql)" >&2; exit 1; }
psql=${bin:+$bin/psql}
[ -x "${psql:-}" ] || psql=$(command -v psql) || { echo "psql not found" >&2; exit 1; }

sql() { "$psql" -X -q -v ON_ERROR_STOP=1 -c "$1" >/dev/null; }

work=$(mktemp -d)
trap 'rm -rf "$work"; sql "DROP TABLE IF EXISTS ceiling" 2>/dev/null || true' EXIT
cat >"$work/insert.sql" <<'EOF'
\set id random(1, 1000000000)
INSERT INTO ceiling(id, body) VALUES (:id, repeat('x', 200));
EOF

echo "pgbench-ceiling: $PGUSER@$PGHOST:$PGPORT/$PGDATABASE, ${seconds} s per run, settings:" \
  "$("$psql" -X -Atc "select 'fsync=' || current_setting('fsync') || ' synchronous_commit=' || current_setting('synchronous_commit')")" >&2
sql "CREATE TABLE IF NOT EXISTS ceiling (id bigint NOT NULL, body text NOT NULL)"
sql "CREATE INDEX IF NOT EXISTS ceiling_id ON ceiling (id)"

for clients in 1 32; do
  jobs=1
  [ "$clients" -eq 1 ] || jobs=2
  sql "TRUNCATE ceiling"
  sql "CHECKPOINT"
  echo "pgbench-ceiling: $clients client(s), $jobs thread(s)" >&2
  out=$("$pgbench" -n -M prepared -f "$work/insert.sql" -c "$clients" -j "$jobs" -T "$seconds" 2>"$work/err") || {
    cat "$work/err" >&2
    exit 1
  }
  tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | tail -1)
  latency=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' <<<"$out")
  if [ -z "$tps" ] || [ -z "$latency" ]; then
    echo "could not read pgbench's output:" >&2
    echo "$out" >&2
    exit 1
  fi
  printf '{"clients":%d,"tps":%.1f,"latency_ms":%.3f}\n' "$clients" "$tps" "$latency"
done
