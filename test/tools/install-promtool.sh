#!/usr/bin/env bash
# Installs Prometheus' own `promtool` (for `promtool check metrics` in test/integration/metrics.test.ts)
# into <repo>/.cache/promtool/promtool, taken from Debian's `prometheus` package without installing
# the package (no prometheus service, no user, nothing under /etc): `apt-get download` + `dpkg -x`.
# Idempotent: does nothing when it is there already. Needs root only for a first `apt-get update`.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dest="$repo/.cache/promtool"

if [[ -x $dest/promtool ]] && "$dest/promtool" --version >/dev/null 2>&1; then
	exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# apt's sandbox user cannot write to a root-only temp dir: let it.
chmod 0755 "$work"
if ! apt-get download prometheus >/dev/null 2>&1; then
	apt-get update >/dev/null
	apt-get download prometheus >/dev/null
fi
dpkg -x prometheus_*.deb root
mkdir -p "$dest"
install -m 0755 root/usr/bin/promtool "$dest/promtool"
"$dest/promtool" --version 2>&1 | head -n1 >&2
