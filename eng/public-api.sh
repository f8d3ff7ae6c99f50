#!/usr/bin/env bash
# Brings the public API files of every library that tracks its API (TrackPublicApi in its project) up to date with its
# code: additions are written into PublicAPI.Unshipped.txt with the public API analyzers' own fix; a removal (RS0017)
# of a line that was added since the last release is dropped from PublicAPI.Unshipped.txt, and one of a shipped line is
# recorded there as *REMOVED*LINE. Review the diff it prints: it is the change to the public API.
set -euo pipefail
cd "$(dirname "$0")/.."
for project in $(grep -l '<TrackPublicApi>true</TrackPublicApi>' src/*/*.csproj); do
  dotnet format analyzers "$project" --diagnostics RS0016 --severity info -v quiet
done
dotnet build Converge.slnx -c Release --nologo -v quiet 2>&1 | grep ' error RS0017: ' | python3 -c '
import re, sys
removed = {}
for line in sys.stdin:
    m = re.match(r"(\S+/PublicAPI\.(Shipped|Unshipped)\.txt)\(\d+,\d+\): error RS0017: Symbol .(.*). is part of the declared API", line.strip())
    if m:
        removed.setdefault((m.group(1), m.group(2)), set()).add(m.group(3))
for (path, kind), symbols in removed.items():
    unshipped = path.replace("PublicAPI.Shipped.txt", "PublicAPI.Unshipped.txt")
    lines = open(unshipped).read().split("\n")
    if kind == "Unshipped":
        lines = [l for l in lines if l not in symbols]
    else:
        lines = [l for l in lines if l] + ["*REMOVED*" + s for s in sorted(symbols)] + [""]
    open(unshipped, "w").write("\n".join(lines))
' || true
git --no-pager diff --stat -- 'src/*/PublicAPI.Unshipped.txt'
