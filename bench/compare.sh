#!/usr/bin/env bash
# Measures one bench on two commits side by side in one window: both are built in Release in throw-away worktrees,
# then their runs alternate (base, head, base, head, ...) so that a machine getting busier or quieter weighs on both
# alike. Prints each run's figure, the medians and head/base as a ratio (above 1: head is faster).
#
# Usage: bench/compare.sh BASE HEAD RUNS -- BENCH ARGS...
#   BASE, HEAD  commits (anything git rev-parse takes; HEAD may be "." for the working tree as it is, built in place)
#   RUNS        measured runs of each (after one warm-up run of each)
#   BENCH ARGS  the converge bench command, e.g.: messages --count 100000
# Example: bench/compare.sh 7bc1c79 . 3 -- jobs --count 200000
# The figure read is the bench's JSON "per_second" (messages, sagas) or "jobs_per_second" (jobs, drained). Needs
# python3.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 5 ] && [ "$4" = "--" ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
base=$1
head=$2
runs=$3
shift 4
case "$runs" in ''|*[!0-9]*|0) echo "bench/compare.sh: RUNS must be a positive number" >&2; exit 2 ;; esac

work=$(mktemp -d -t converge-compare.XXXXXX)
trap 'git worktree remove --force "$work/base" >/dev/null 2>&1 || true; git worktree remove --force "$work/head" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

tree_of() { # $1: commit or ".", $2: name; prints the folder to build
  if [ "$1" = "." ]; then
    pwd
  else
    git worktree add --detach "$work/$2" "$1" >/dev/null 2>&1
    # The worktree's projects look for ../shared beside the repository, as a clone does.
    [ -e "$work/shared" ] || ln -s "$(cd .. && pwd)/shared" "$work/shared"
    echo "$work/$2"
  fi
}

base_tree=$(tree_of "$base" base)
head_tree=$(tree_of "$head" head)
for tree in "$base_tree" "$head_tree"; do
  echo "building $tree" >&2
  dotnet build "$tree/src/Converge.Cli" -c Release --nologo -v quiet >&2
done

run() { # $1: tree, then the bench arguments; prints the throughput of one run
  local tree=$1
  shift
  (cd "$work" && dotnet "$tree/src/Converge.Cli/bin/Release/net10.0/Converge.Cli.dll" bench "$@" --json 2>/dev/null) \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r.get("jobs_per_second", r.get("per_second")))'
}

echo "warm-up" >&2
run "$base_tree" "$@" >/dev/null
run "$head_tree" "$@" >/dev/null
results=()
for i in $(seq 1 "$runs"); do
  b=$(run "$base_tree" "$@")
  h=$(run "$head_tree" "$@")
  echo "run $i: base $b, head $h" >&2
  results+=("$b,$h")
done

printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
pairs = [tuple(float(x) for x in line.split(",")) for line in sys.stdin if line.strip()]
base = statistics.median(p[0] for p in pairs)
head = statistics.median(p[1] for p in pairs)
print(f"bench {sys.argv[1]}: base median {base:,.0f}/s, head median {head:,.0f}/s, head/base {head / base:.3f} over {len(pairs)} alternated runs")
' "$*"
