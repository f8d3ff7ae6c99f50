#!/usr/bin/env bash
# Runs the demos on the embedded SQLite store: the quick start (outbox, inbox, log, dead letters), then shows
# the resulting store with the converge CLI.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p .artifacts
db=.artifacts/quickstart.db
dotnet run -c Release --project samples/QuickStart -- "$db"
dotnet build -c Release -v quiet src/Converge.Cli >/dev/null
converge() { dotnet src/Converge.Cli/bin/Release/net10.0/Converge.Cli.dll "$@"; }
converge status --db "$db"
converge dead-letters list --db "$db"

# The Shop: 2,000 orders through the place-order saga with faults injected at every step, then checked.
shop=.artifacts/shop.db
rm -f "$shop" "$shop"-wal "$shop"-shm "$shop".provider-ledger*
converge demo shop --orders 2000 --fail-rate 0.2 --db "$shop"
# The saga log: instances by state, one instance's timeline, and every message of its transaction by cause.
converge sagas list --db "$shop" --max 5
converge sagas show --db "$shop" o-000001
converge flow --db "$shop" o-000001
# The same flow choreographed with events on the log.
rm -f .artifacts/shop-events.db*
converge demo shop --orders 2000 --fail-rate 0.2 --style choreographed --db .artifacts/shop-events.db

# The month close: 20,000 accounts invoiced, charged through a simulated provider (20 ms latency, outages) after
# re-reading each account, receipts in three languages, holds on failure, and a finance report from the batch.
billing=.artifacts/billing.db
rm -f "$billing" "$billing"-wal "$billing"-shm "$billing".provider.db* "$billing".email.db*
converge demo month-close --accounts 20000 --period 2026-11 --db "$billing"
converge jobs list --db "$billing" --max 5
converge jobs batch --db "$billing" month-close:2026-11
converge jobs recurring --db "$billing"

# Identity checks for a betting account: five checks at once, each partial result on the request's stream as it exists,
# clients following their streams over HTTP through cut connections, and stakes up to £50 granted while the licence
# register is down, then confirmed or revoked when it returns.
identity=.artifacts/identity.db
rm -f "$identity" "$identity"-wal "$identity"-shm
converge demo identity --requests 200 --db "$identity"

# Reprocessing a projection while the shop runs: revenue per customer, version 1 (refunds ignored) live and read by four
# readers; version 2 (fixed) rebuilt beside it from position 0 while orders keep flowing, compared, switched; the live
# view checked against the events, with no failed read and no read that went back.
reprocess=.artifacts/reprocess.db
rm -f "$reprocess" "$reprocess"-wal "$reprocess"-shm
converge demo reprocess --orders 20000 --db "$reprocess"
