# Sourced by bench/run.sh and bench/peers.sh: builds the command line in Release and names the results files.
# Needs $out (the results folder) and $suffix; sets $commit, $stamp and $base, and defines converge().

dotnet build src/Converge.Cli -c Release -nologo -v quiet >&2
converge() { dotnet src/Converge.Cli/bin/Release/net10.0/Converge.Cli.dll "$@"; }

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit-dirty"
fi
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$out"
base="$out/$stamp-$commit$suffix"
