#!/usr/bin/env bash
# Measures Converge and the peers of ../shared/peers in one window, one after the other, and prints the table of the
# speed targets with the ratios: each round runs every Converge bench once (a process of its own, verified) and the
# peer it is compared with right after it, so that a machine getting busier or quieter weighs on both alike; the
# figures are the medians over the rounds.
#
# Usage: bench/peers.sh [--quick] [--runs N] [--out DIR]     (also: bench/run.sh --peers ...)
#   --quick   small sizes, for a smoke test of this script; its files end in -peers-quick
#   --runs N  rounds (default 3)
#   --out DIR where the results go (default bench/results)
# Starts PostgreSQL and RabbitMQ with scripts/services.sh for the Converge benches (the peers start their own) and
# stops them at the end. A peer that cannot run here is shown as such in the table, with its error. The table goes
# to stdout and to DIR/STAMP-COMMIT-peers.md, every figure to the .json beside it. Exits 1 when a Converge bench
# failed its verification, 2 for bad arguments. Needs python3 and ../shared/peers.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
runs=3
out=bench/results
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=true; shift ;;
    --runs) runs=${2:?--runs needs a number}; shift 2 ;;
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/peers.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$runs" in ''|*[!0-9]*|0) echo "bench/peers.sh: --runs must be a positive number" >&2; exit 2 ;; esac
peers=../shared/peers/run.sh
[ -x "$peers" ] || [ -f "$peers" ] || { echo "bench/peers.sh: $peers not found: the peers live in ../shared/peers beside the project" >&2; exit 2; }

if $quick; then
  messages=5000; sagas=1000; jobs=5000; pg=3000; latency=2000; accounts=300
  mt=20000; wolverine=2000; sidekiq=10000; graphile=5000; rabbit=20000
  suffix=-peers-quick
else
  messages=100000; sagas=20000; jobs=100000; pg=50000; latency=20000; accounts=20000
  mt=200000; wolverine=20000; sidekiq=100000; graphile=50000; rabbit=200000
  suffix=-peers
fi

# shellcheck source=bench/common.sh
. bench/common.sh
work=$(mktemp -d -t converge-peers.XXXXXX)
chmod 755 "$work" # PostgreSQL runs as its own user, which must reach its folder under it
services="$work/services"
cleanup() {
  scripts/services.sh stop "$services/postgres" >/dev/null 2>&1 || true
  scripts/services.sh stop "$services/rabbitmq" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
CONVERGE_SERVICES=postgres scripts/services.sh start "$services/postgres" >&2
CONVERGE_SERVICES=rabbitmq scripts/services.sh start "$services/rabbitmq" >&2
# shellcheck disable=SC1091
postgres=$(. "$services/postgres/services.env" && echo "$CONVERGE_TEST_POSTGRES")
# shellcheck disable=SC1091
rabbitmq=$(. "$services/rabbitmq/services.env" && echo "$CONVERGE_TEST_RABBITMQ")

failed=0
# ours NAME ROUND ARGS...: one Converge bench in a process of its own; its JSON goes to $work/NAME.ROUND.json.
ours() {
  local name=$1 round=$2
  shift 2
  echo "== round $round: converge $name: converge $*" >&2
  if ! converge "$@" --json >"$work/$name.$round.json" 2>"$work/$name.$round.log"; then
    echo "== converge $name failed:" >&2
    tail -20 "$work/$name.$round.log" >&2
    failed=1
  fi
}
# peer NAME ROUND ARGS...: one peer run; its output (the last line holds per_s=N) goes to $work/NAME.ROUND.txt.
peer() {
  local name=$1 round=$2
  shift 2
  echo "== round $round: peer $name: $peers $*" >&2
  if ! "$peers" "$@" >"$work/$name.$round.txt" 2>"$work/$name.$round.log"; then
    echo "== peer $name could not run:" >&2
    tail -5 "$work/$name.$round.log" >&2
  fi
}

for round in $(seq 1 "$runs"); do
  ours messages "$round" bench messages --count "$messages" --warmup $((messages / 5))
  peer masstransit "$round" masstransit consume "$mt"
  peer wolverine_sqlite "$round" wolverine sqlite "$wolverine"
  ours sagas "$round" bench sagas --count "$sagas" --warmup $((sagas / 5))
  ours sagas_fast "$round" bench sagas --count "$sagas" --warmup $((sagas / 5)) --isolation on-failure
  peer masstransit_saga "$round" masstransit saga "$sagas"
  ours jobs "$round" bench jobs --count "$jobs" --warmup $((jobs / 5))
  peer sidekiq "$round" sidekiq "$sidekiq" 10
  ours pg_jobs "$round" bench jobs --count "$pg" --warmup $((pg / 5)) --postgres "$postgres"
  BATCHED=1 peer graphile "$round" graphile "$graphile" 24
  ours pg_messages "$round" bench messages --count "$pg" --warmup $((pg / 5)) --postgres "$postgres"
  ours pg_messages_fast "$round" bench messages --count "$pg" --warmup $((pg / 5)) --postgres "$postgres" --isolation on-failure
  ours pg_messages_4 "$round" bench messages --count "$pg" --warmup $((pg / 5)) --postgres "$postgres" --concurrency 4 --isolation on-failure
  peer wolverine_postgres "$round" wolverine postgres "$wolverine"
  ours pg_rabbitmq "$round" bench messages --count "$pg" --warmup $((pg / 5)) --postgres "$postgres" --rabbitmq "$rabbitmq"
  ours pg_rabbitmq_fast "$round" bench messages --count "$pg" --warmup $((pg / 5)) --postgres "$postgres" --rabbitmq "$rabbitmq" --isolation on-failure
  peer mt_rabbitmq "$round" mt-rabbitmq consume "$rabbit"
  peer rabbitmq_raw "$round" mt-rabbitmq raw "$rabbit"
  # The first run of a process, on purpose: no warm-up.
  ours latency "$round" bench messages --count "$latency" --rate 1000 --warmup 0
  ours month_close "$round" demo month-close --accounts "$accounts" --latency 20 --period 2026-11 --db "$work/month-close-$round.db"
  ours month_close_pg "$round" demo month-close --accounts "$accounts" --latency 20 --period 2026-11 --postgres "$postgres" --schema "close_$round" --processes 3
done

python3 bench/peers_table.py "$work" "$base" "$commit" "$stamp" "$runs" "$quick"
cat "$base.md"
echo "$base.json" >&2
exit "$failed"
