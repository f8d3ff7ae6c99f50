#!/usr/bin/env bash
# Runs every test of Converge on a fresh machine: restores, builds (warnings are errors), runs each test
# project, and ends with one summary line "tests: N passed, N failed, N skipped".
# Services the scale-out tests need (PostgreSQL, RabbitMQ) are installed and started here once those
# providers exist; the embedded SQLite store needs nothing beyond the .NET SDK.
set -euo pipefail
cd "$(dirname "$0")"

results=.artifacts/test-results
rm -rf "$results"
mkdir -p "$results"

dotnet build Converge.slnx -c Release --nologo -v quiet

status=0
dotnet test Converge.slnx -c Release --no-build --nologo \
  --logger "trx" --results-directory "$results" -- RunConfiguration.TestSessionTimeout=1500000 || status=$?

passed=0; failed=0; skipped=0
for trx in "$results"/*.trx; do
  [ -e "$trx" ] || continue
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -1)
  p=$(sed -n 's/.* passed="\([0-9]*\)".*/\1/p' <<<"$counters")
  f=$(sed -n 's/.* failed="\([0-9]*\)".*/\1/p' <<<"$counters")
  t=$(sed -n 's/.* total="\([0-9]*\)".*/\1/p' <<<"$counters")
  e=$(sed -n 's/.* executed="\([0-9]*\)".*/\1/p' <<<"$counters")
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${t:-0} - ${e:-0}))
done

if [ "$passed" -eq 0 ] && [ "$status" -eq 0 ]; then
  echo "No test ran: treat that as a failure." >&2
  status=1
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$status"
