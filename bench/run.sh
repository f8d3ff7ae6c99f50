#!/usr/bin/env bash
# Runs the standard benchmarks in Release; each prints one JSON object on stdout (progress on stderr).
# Usage: bench/run.sh            (from anywhere; builds src/Converge.Cli first)
set -euo pipefail
cd "$(dirname "$0")/.."

dotnet build src/Converge.Cli -c Release -nologo -v quiet >&2
converge() { dotnet src/Converge.Cli/bin/Release/net10.0/Converge.Cli.dll "$@"; }

echo "== bench ceiling" >&2
converge bench ceiling --json

echo "== bench messages: throughput, 100,000 messages, median of 5 runs" >&2
converge bench messages --count 100000 --runs 5 --json

echo "== bench messages: 1,000 messages per second, 20,000 messages, median of 3 runs" >&2
converge bench messages --count 20000 --rate 1000 --runs 3 --json

echo "== bench jobs: 200,000 no-op jobs enqueued then drained, median of 3 runs" >&2
converge bench jobs --count 200000 --runs 3 --json
