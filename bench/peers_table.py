"""Assembles what bench/peers.sh measured into one JSON file and the table of the speed targets with the ratios.

Usage: python3 bench/peers_table.py WORK BASE COMMIT STAMP RUNS QUICK
WORK holds NAME.ROUND.json (a Converge bench's report), NAME.ROUND.txt (a peer's output, whose last per_s= is its
figure) and NAME.ROUND.log (what either printed on stderr). Writes BASE.json and BASE.md.
"""
import json
import os
import platform
import re
import statistics
import sys

work, base, commit, stamp, runs, quick = sys.argv[1:]
runs = int(runs)


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def ours(name):
    """The reports of every round of one Converge bench; None for a round that failed."""
    reports = []
    for r in range(1, runs + 1):
        try:
            reports.append(json.loads(read(os.path.join(work, f"{name}.{r}.json"))))
        except ValueError:
            reports.append(None)
    return reports


def peer(name):
    """The per_s of every round of one peer; None for a round that printed none."""
    figures = []
    for r in range(1, runs + 1):
        found = re.findall(r"per_s=([0-9.]+)", read(os.path.join(work, f"{name}.{r}.txt")))
        figures.append(float(found[-1]) if found else None)
    return figures


def peer_error(name):
    for r in range(runs, 0, -1):
        lines = [l for l in read(os.path.join(work, f"{name}.{r}.log")).splitlines() if l.strip()]
        if lines:
            return lines[-1][:160]
    return "no output"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def n(value, digits=0):
    return "?" if value is None else f"{value:,.{digits}f}"


def spread(values, digits=0):
    values = [v for v in values if v is not None]
    return f" (runs {n(min(values), digits)}–{n(max(values), digits)})" if len(values) > 1 else ""


def field(reports, key):
    return [r.get(key) if r and r.get("verified", True) is not False else None for r in reports]


def peak(reports):
    values = [r.get("peak_working_set_mb") for r in reports if r]
    return f"{n(max(values))} MB" if values and None not in values else "?"


benches = {name: ours(name) for name in ["messages", "sagas", "sagas_fast", "jobs", "pg_jobs", "pg_messages", "pg_messages_fast", "pg_messages_4", "pg_rabbitmq", "pg_rabbitmq_fast", "latency", "month_close", "month_close_pg"]}
peers = {name: peer(name) for name in ["masstransit", "wolverine_sqlite", "masstransit_saga", "sidekiq", "graphile", "wolverine_postgres", "mt_rabbitmq", "rabbitmq_raw"]}

rows = []
verdicts = []


def compare(path, name, key, unit, peer_name, peer_label, target, absolute=None):
    ours_values = field(benches[name], key)
    mine = median(ours_values)
    theirs = median(peers[peer_name])
    ratio = mine / theirs if mine and theirs else None
    met = ratio is not None and ratio >= target and (absolute is None or mine >= absolute)
    target_text = f"≥ {target:g}" + (f" and ≥ {n(absolute)}/s" if absolute else "")
    peer_text = f"{peer_label}: {n(theirs)}/s{spread(peers[peer_name])}" if theirs else f"{peer_label}: could not run ({peer_error(peer_name)})"
    rows.append((path, f"{n(mine)} {unit}/s{spread(ours_values)}", peak(benches[name]), peer_text, n(ratio, 2), target_text, "yes" if met else "**no**"))
    verdicts.append({"path": path, "converge": mine, "converge_runs": ours_values, "peer": peer_label, "peer_per_second": theirs,
                     "peer_runs": peers[peer_name], "ratio": ratio, "target_ratio": target, "target_per_second": absolute, "met": met})


compare("SQLite, durable messages (outbox, handler row + inbox, complete)", "messages", "per_second", "msg", "masstransit", "MassTransit 8 in-memory, not durable", 2.0)
compare("same, vs a durable peer", "messages", "per_second", "msg", "wolverine_sqlite", "Wolverine 6 durable local queue on SQLite", 10.0)
compare("durable 3-step saga", "sagas", "per_second", "saga", "masstransit_saga", "MassTransit state machine in-memory", 2.0)
compare("same, isolated on failure only (`--isolation on-failure`)", "sagas_fast", "per_second", "saga", "masstransit_saga", "MassTransit state machine in-memory", 2.0)
compare("SQLite no-op jobs", "jobs", "jobs_per_second", "job", "sidekiq", "Sidekiq on Redis, no persistence", 10.0)
compare("PostgreSQL no-op jobs", "pg_jobs", "jobs_per_second", "job", "graphile", "graphile-worker batched", 1.5)
compare("PostgreSQL messages, one consumer", "pg_messages", "per_second", "msg", "wolverine_postgres", "Wolverine durable on PostgreSQL", 5.0, 20000)
compare("same, one consumer isolated on failure only (`--isolation on-failure`)", "pg_messages_fast", "per_second", "msg", "wolverine_postgres", "Wolverine durable on PostgreSQL", 5.0, 20000)
compare("same, 4 consumers isolated on failure only (`--concurrency 4 --isolation on-failure`)", "pg_messages_4", "per_second", "msg", "wolverine_postgres", "Wolverine durable on PostgreSQL", 5.0, 20000)
compare("PostgreSQL + RabbitMQ messages", "pg_rabbitmq", "per_second", "msg", "mt_rabbitmq", "MassTransit 8 on RabbitMQ (quorum, confirms)", 2.0)
compare("same, isolated on failure only (`--isolation on-failure`)", "pg_rabbitmq_fast", "per_second", "msg", "mt_rabbitmq", "MassTransit 8 on RabbitMQ (quorum, confirms)", 2.0)
compare("same, vs the client's ceiling", "pg_rabbitmq", "per_second", "msg", "rabbitmq_raw", "raw RabbitMQ.Client confirm + ack", 0.5)

p99s = field(benches["latency"], "p99_ms")
worst = max([v for v in p99s if v is not None], default=None)
latency_met = worst is not None and None not in p99s and worst <= 5.0
rows.append(("latency at 1,000 msg/s, SQLite, the first run of each process", "p99 " + ", ".join(n(v, 1) for v in p99s) + " ms",
             peak(benches["latency"]), "", "", "p99 ≤ 5 ms in every run", "yes" if latency_met else "**no**"))
verdicts.append({"path": "latency", "p99_ms_runs": p99s, "worst_p99_ms": worst, "target_ms": 5.0, "met": latency_met})

sqlite_close = field(benches["month_close"], "seconds")
pg_close = field(benches["month_close_pg"], "seconds")
accounts = next((r.get("accounts") for r in benches["month_close"] if r), None)
close_ratio = median(sqlite_close) / median(pg_close) if median(sqlite_close) and median(pg_close) else None
close_met = close_ratio is not None and close_ratio >= 1.0
rows.append((f"month close, {n(accounts)} accounts", f"PostgreSQL, 3 processes: {n(median(pg_close), 1)} s{spread(pg_close, 1)}", peak(benches["month_close_pg"]),
             f"SQLite, one process: {n(median(sqlite_close), 1)} s{spread(sqlite_close, 1)}", n(close_ratio, 2), "scale-out no slower (≥ 1)", "yes" if close_met else "**no**"))
verdicts.append({"path": "month close", "accounts": accounts, "sqlite_seconds": sqlite_close, "postgres_3_processes_seconds": pg_close, "ratio": close_ratio, "met": close_met})


def cpu():
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


results = {"commit": commit, "date": stamp, "quick": quick == "true", "rounds": runs,
           "machine": {"cores": os.cpu_count(), "cpu": cpu(), "os": platform.platform()},
           "targets": verdicts, "converge": benches, "peers": peers}
with open(base + ".json", "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
    f.write("\n")

lines = [
    f"# Converge and its peers, {stamp}, commit {commit}" + (" (quick: not for quoting)" if quick == "true" else ""),
    "",
    f"`bench/run.sh --peers{' --quick' if quick == 'true' else ''} --runs {runs}` on {os.cpu_count()} cores ({cpu()}). Each round ran every",
    "Converge bench in a process of its own (verified) and its peer right after it; figures are medians over the rounds,",
    "ratios are Converge's median over the peer's. Peak memory is the Converge process's peak working set.",
    "",
    "| path | Converge | peak memory | peer, same window | ratio | target | met |",
    "| --- | --- | --- | --- | --- | --- | --- |",
] + [f"| {' | '.join(row)} |" for row in rows]
with open(base + ".md", "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
