#!/usr/bin/env bash
# Runs the demos on the embedded SQLite store: the quick start (outbox, inbox, log, dead letters), then shows
# the resulting store with the converge CLI.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p .artifacts
db=.artifacts/quickstart.db
dotnet run -c Release --project samples/QuickStart -- "$db"
if [ -d src/Converge.Cli ]; then
  dotnet run -c Release --project src/Converge.Cli -- status --db "$db"
  dotnet run -c Release --project src/Converge.Cli -- dead-letters list --db "$db"
fi
