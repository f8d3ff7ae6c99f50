#!/usr/bin/env bash
# Runs every bench on SQLite in Release and writes one results file: the machine, the commit, the SQLite ceiling
# measured before and after the benches, and each bench's JSON (medians of N runs, each run verified, and the peak
# working set of the process that ran it), plus a markdown table of the figures the README quotes.
#
# Usage: bench/run.sh [--quick] [--runs N] [--out DIR]
#        bench/run.sh --peers [--quick] [--runs N] [--out DIR]
#   --peers   instead: Converge and the peers of ../shared/peers in one window, with the ratios to the speed targets
#             (bench/peers.sh; 3 rounds by default)
#   --quick   small sizes, for a smoke test of this script (a minute or two); its files end in -quick and are not
#             meant for the README
#   --runs N  measured runs per bench, whose medians are reported (default 5; 3 with --quick)
#   --out DIR where the results go (default bench/results)
# Progress goes to stderr; the paths of the two files written are printed last. Exits 1 when a bench or the demo
# failed (its entry in the results says so), 2 for bad arguments. Assembling the results needs python3.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
runs=
out=bench/results
for argument in "$@"; do
  if [ "$argument" = --peers ]; then
    args=()
    for a in "$@"; do [ "$a" = --peers ] || args+=("$a"); done
    exec bench/peers.sh "${args[@]}"
  fi
done
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=true; shift ;;
    --runs) runs=${2:?--runs needs a number}; shift 2 ;;
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if $quick; then
  runs=${runs:-3}
  messages=3000; latency_messages=1000; sagas=500; jobs=5000; accounts=500
  ceiling=(--commits 500 --rows 20000)
  suffix=-quick
else
  runs=${runs:-5}
  messages=100000; latency_messages=20000; sagas=20000; jobs=200000; accounts=200000
  ceiling=()
  suffix=
fi
case "$runs" in ''|*[!0-9]*|0) echo "bench/run.sh: --runs must be a positive number" >&2; exit 2 ;; esac

# shellcheck source=bench/common.sh
. bench/common.sh
work=$(mktemp -d -t converge-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

failed=0
# run NAME DESCRIPTION ARGS...: runs one bench, keeps its JSON as $work/NAME.json (or its exit code and last lines).
run() {
  local name=$1 description=$2
  shift 2
  echo "== $name: $description" >&2
  local started=$SECONDS status
  set +e
  converge "$@" --json 2>&1 >"$work/$name.json" | tee "$work/$name.log" >&2
  status=${PIPESTATUS[0]}
  set -e
  printf '%s\n' "$status" >"$work/$name.status"
  printf '%s\n' "$((SECONDS - started))" >"$work/$name.seconds"
  printf '%s\n' "converge $* --json" >"$work/$name.command"
  if [ "$status" -ne 0 ]; then
    echo "== $name failed (exit $status)" >&2
    failed=1
  fi
}

run ceiling_before "raw SQLite on this disk, before the benches" bench ceiling "${ceiling[@]}"
run messages "throughput, $messages messages, median of $runs runs" \
  bench messages --count "$messages" --runs "$runs"
run latency "1,000 messages/s in bus.BeginTransactionAsync() transactions, $latency_messages messages, median of $runs runs" \
  bench messages --count "$latency_messages" --rate 1000 --runs "$runs"
run latency_own "1,000 messages/s in the caller's own SqliteConnection transaction, $latency_messages messages, median of $runs runs" \
  bench messages --count "$latency_messages" --rate 1000 --sender own --runs "$runs"
run sagas "three-step orchestrated sagas, $sagas per run, median of $runs runs" \
  bench sagas --count "$sagas" --runs "$runs"
run jobs "no-op jobs enqueued then drained, $jobs per run, median of $runs runs" \
  bench jobs --count "$jobs" --runs "$runs"
run month_close "demo month-close, $accounts accounts, provider latency 20 ms, in this process, one run" \
  demo month-close --accounts "$accounts" --latency 20 --period 2026-11 --db "$work/month-close.db"
run ceiling_after "raw SQLite on this disk, after the benches" bench ceiling "${ceiling[@]}"

python3 - "$work" "$base" "$commit" "$stamp" "$runs" "$quick" <<'PY'
import json, os, platform, subprocess, sys

work, base, commit, stamp, runs, quick = sys.argv[1:]
names = ["ceiling_before", "messages", "latency", "latency_own", "sagas", "jobs", "month_close", "ceiling_after"]

def read(name, ext):
    with open(os.path.join(work, f"{name}.{ext}"), encoding="utf-8") as f:
        return f.read().strip()

benches = {}
for name in names:
    status = int(read(name, "status"))
    entry = {"command": read(name, "command"), "exit_code": status, "wall_seconds": int(read(name, "seconds"))}
    try:
        entry["report"] = json.loads(read(name, "json"))
    except ValueError:
        entry["report"] = None
    if status != 0 or entry["report"] is None:
        entry["error"] = read(name, "log").splitlines()[-20:]
    benches[name] = entry

def cpu():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

def memory_mb():
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return None

dotnet = subprocess.run(["dotnet", "--version"], capture_output=True, text=True).stdout.strip()
results = {
    "commit": commit,
    "date": stamp,
    "quick": quick == "true",
    "runs": int(runs),
    "machine": {"cores": os.cpu_count(), "cpu": cpu(), "memory_mb": memory_mb(), "os": platform.platform(), "dotnet_sdk": dotnet},
    "benches": benches,
}
with open(base + ".json", "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
    f.write("\n")

def report(name):
    return benches[name]["report"] or {}

def n(value, digits=0):
    if value is None:
        return "?"
    return f"{value:,.{digits}f}"

def spread(values, digits=0):
    return f" (runs {n(min(values), digits)}–{n(max(values), digits)})" if values else ""

def peak(name):
    return f"{n(report(name).get('peak_working_set_mb'))} MB"

def ok(name):
    return "" if benches[name]["exit_code"] == 0 and benches[name]["report"] else f" **FAILED (exit {benches[name]['exit_code']})**"

def ceiling(name):
    r = report(name)
    return (f"{n(r.get('single_row_commits_per_second'))} single-row commits/s (commit p50 {n(r.get('single_row_commit_p50_ms'), 2)} ms, "
            f"p99 {n(r.get('single_row_commit_p99_ms'), 2)} ms); {n(r.get('batched_rows_per_second'))} rows/s in transactions of {n(r.get('batch_rows'))}")

m, lat, own, s, j, mc = (report(x) for x in ["messages", "latency", "latency_own", "sagas", "jobs", "month_close"])
rows = [
    ("raw SQLite on this disk, before (`bench ceiling`)", ceiling("ceiling_before") + ok("ceiling_before"), peak("ceiling_before")),
    (f"outbox → claim → handler writes one row with its inbox record → complete (`bench messages --count {n(m.get('messages'))}`)",
     f"{n(m.get('per_second'))} messages/s{spread(m.get('per_second_runs'))}" + ok("messages"), peak("messages")),
    ("latency at 1,000 messages/s, sent in `bus.BeginTransactionAsync()` transactions (`--rate 1000`)",
     f"p50 {n(lat.get('p50_ms'), 2)} ms, p99 {n(lat.get('p99_ms'), 2)} ms, max {n(lat.get('max_ms'), 1)} ms" + ok("latency"), peak("latency")),
    ("the same, sent in the caller's own `SqliteConnection` transaction (`--sender own`)",
     f"p50 {n(own.get('p50_ms'), 2)} ms, p99 {n(own.get('p99_ms'), 2)} ms, max {n(own.get('max_ms'), 1)} ms" + ok("latency_own"), peak("latency_own")),
    (f"three-step orchestrated saga, fully durable (`bench sagas --count {n(s.get('sagas'))}`)",
     f"{n(s.get('per_second'))} sagas/s{spread(s.get('per_second_runs'))}" + ok("sagas"), peak("sagas")),
    (f"no-op jobs enqueued in transactions of 1,000, then drained (`bench jobs --count {n(j.get('jobs'))}`)",
     f"drained at {n(j.get('jobs_per_second'))} jobs/s{spread(j.get('jobs_per_second_runs'))}, enqueued at {n(j.get('enqueue_per_second'))} jobs/s{spread(j.get('enqueue_per_second_runs'))}" + ok("jobs"), peak("jobs")),
    (f"month close of {n(mc.get('accounts'))} accounts, provider latency 20 ms, one run (`demo month-close --accounts {n(mc.get('accounts'))}`)",
     f"{n(mc.get('seconds'), 1)} s ({n(mc.get('accounts_per_second'))} accounts/s), {mc.get('violations', '?')} violations, {mc.get('double_charges', '?')} double charges, {mc.get('duplicate_emails', '?')} duplicate emails" + ok("month_close"), peak("month_close")),
    ("raw SQLite on this disk, after (`bench ceiling`)", ceiling("ceiling_after") + ok("ceiling_after"), peak("ceiling_after")),
]
machine = results["machine"]
lines = [
    f"# Bench results {stamp}, commit {commit}" + (" (quick: not for quoting)" if quick == "true" else ""),
    "",
    f"`bench/run.sh{' --quick' if quick == 'true' else ''}` on {machine['cores']} cores ({machine['cpu']}), {n(machine['memory_mb'])} MB, {machine['os']}, .NET SDK {dotnet}.",
    f"SQLite with `synchronous=FULL`. The `bench messages`, `bench sagas` and `bench jobs` figures are medians of {runs} runs, each",
    "verified, after an unreported warm-up run; the ceiling (before and after the rest) and the month close are single runs.",
    "Peak memory is the peak working set of the process that ran the bench or the demo, warm-up included.",
    f"Full reports: {os.path.basename(base)}.json.",
    "",
    "| what | figure | peak memory |",
    "| --- | --- | --- |",
] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
with open(base + ".md", "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
PY

echo "$base.json"
echo "$base.md"
exit "$failed"
