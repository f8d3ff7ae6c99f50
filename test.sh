#!/usr/bin/env bash
# Runs every test of Converge on a fresh machine: restores, builds (warnings are errors), runs each test
# project, and ends with one summary line "tests: N passed, N failed, N skipped".
# While it builds, scripts/services.sh installs (from Debian's packages, when missing) and starts private
# PostgreSQL and RabbitMQ instances in a temporary folder; the tests find them through
# CONVERGE_TEST_POSTGRES and CONVERGE_TEST_RABBITMQ, and they are stopped and removed at the end, also on
# failure or interruption. It installs Chromium for the browser tests too (CONVERGE_TEST_CHROMIUM).
# CONVERGE_SERVICES=none|postgres|rabbitmq|chromium|all (default all) narrows what starts.
set -euo pipefail
cd "$(dirname "$0")"

results=.artifacts/test-results
rm -rf "$results"
mkdir -p "$results"

services_dir=$(mktemp -d -t converge-services.XXXXXX)
tool_dir=$(mktemp -d -t converge-tool.XXXXXX)
services_pid=
cleanup() {
  # A start still running is ended first, so that the stop below sees all it started.
  if [ -n "$services_pid" ] && kill -0 "$services_pid" 2>/dev/null; then
    kill -TERM "$services_pid" 2>/dev/null || true
    wait "$services_pid" 2>/dev/null || true
  fi
  scripts/services.sh stop "$services_dir" || true
  rm -rf "$services_dir" "$tool_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/services.sh start "$services_dir" >"$services_dir/start.log" 2>&1 &
services_pid=$!

dotnet build Converge.slnx -c Release --nologo -v quiet

# The converge command as a user installs it: packed as a .NET tool from this build and installed into a tool path
# from that package alone (no other package source). The CLI's tests run its demos, worker processes included, from
# there (CONVERGE_TEST_TOOL); a failed pack or install leaves the variable naming a missing file, so they fail.
if dotnet pack src/Converge.Cli -c Release --no-build --nologo -v quiet -o "$tool_dir/package" \
  && printf '<?xml version="1.0" encoding="utf-8"?>\n<configuration><packageSources><clear /><add key="converge" value="%s" /></packageSources></configuration>\n' \
    "$tool_dir/package" >"$tool_dir/nuget.config" \
  && dotnet tool install --tool-path "$tool_dir/bin" --configfile "$tool_dir/nuget.config" Converge.Cli >/dev/null; then
  echo "Installed the converge tool ($(du -k "$tool_dir"/package/*.nupkg | cut -f1) KB package) into $tool_dir/bin."
else
  echo "Packing or installing the converge tool failed; the installed tool's tests will fail." >&2
fi
export CONVERGE_TEST_TOOL="$tool_dir/bin/converge"

services_status=0
wait "$services_pid" || services_status=$?
services_pid=
cat "$services_dir/start.log"
if [ "$services_status" -ne 0 ]; then
  echo "Starting the test services failed ($services_status)." >&2
  exit 1
fi
# shellcheck disable=SC1091
. "$services_dir/services.env"

status=0
dotnet test Converge.slnx -c Release --no-build --nologo \
  --logger "trx" --results-directory "$results" -- RunConfiguration.TestSessionTimeout=1500000 || status=$?
# Stopped here already, so that the summary stays the last line.
scripts/services.sh stop "$services_dir" || echo "Stopping the test services failed." >&2

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
