#!/usr/bin/env bash
# Installs the Docker engines of the test matrix (see test/helpers/sandbox.ts, DOCKER_EGRESS_TEST_ENGINE)
# into <repo>/.cache/engines/<engine>/bin. Idempotent and cached: an engine whose stamp file exists
# is not installed again (delete .cache/engines/<engine> to force it).
#
#   docker-29  Docker 29.7.2 from ../shared/engines/docker-29.7.2-linux-amd64.tar.xz (beside the repo;
#              DOCKER_EGRESS_ENGINES_SRC=DIR names another folder), sha256 checked: dockerd,
#              docker-proxy, containerd, containerd-shim-runc-v2, runc 1.5.1.
#   docker-28  Docker 28.x from Debian sid (`apt-get download docker.io containerd` with a private
#              sources list; the machine's apt configuration is not touched): dockerd, docker-proxy,
#              containerd, containerd-shim-runc-v2. runc stays Debian 12's (/usr/sbin/runc).
#   Docker 20.10 is the system's docker.io (installed by apt, nothing to do here).
#
# Usage: test/engines/install.sh [docker-29] [docker-28]   (default: both)
# Needs root for apt-get (only when something is missing: xz-utils, or the sid download).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache="$repo/.cache/engines"
src=${DOCKER_EGRESS_ENGINES_SRC:-$repo/../shared/engines}
archive_29=docker-29.7.2-linux-amd64.tar.xz
sha256_29=985b01040771a441e22fc50e37dfba97d81535139859e4819b8c2e87bd364fca
# Bumped when the layout of an installed engine changes, so old caches are redone.
stamp_version=1

log() { printf 'engines: %s\n' "$*" >&2; }
die() { printf 'engines: ERROR: %s\n' "$*" >&2; exit 1; }

stamp_ok() { # engine
	[[ -f "$cache/$1/.stamp" && $(head -n1 "$cache/$1/.stamp") == "v$stamp_version" ]]
}

need_command() { # command package
	command -v "$1" >/dev/null && return
	[[ $(id -u) -eq 0 ]] || die "$1 is missing (apt-get install -y $2, as root)"
	log "installing $2 (for $1)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null \
		|| { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null; } \
		|| die "apt-get install $2 failed"
}

# Replace $cache/$engine by the finished tree $tmp atomically enough (rename), then stamp it.
finish() { # engine tmpdir description
	local engine=$1 tmp=$2 what=$3
	chmod 0755 "$tmp"
	printf 'v%s\n%s\ninstalled %s\n' "$stamp_version" "$what" "$(date -u +%FT%TZ)" >"$tmp/.stamp"
	rm -rf "$cache/$engine.old"
	[[ -e "$cache/$engine" ]] && mv "$cache/$engine" "$cache/$engine.old"
	mv "$tmp" "$cache/$engine"
	rm -rf "$cache/$engine.old"
}

install_29() {
	local engine=docker-29
	if stamp_ok $engine; then log "$engine: already installed ($cache/$engine)"; return; fi
	local tarball="$src/$archive_29"
	[[ -f "$tarball" ]] || die "$engine: $tarball not found (set DOCKER_EGRESS_ENGINES_SRC to the folder holding $archive_29)"
	need_command xz xz-utils
	log "$engine: checking sha256 of $tarball"
	echo "$sha256_29  $tarball" | sha256sum --check --status || die "$engine: sha256 of $tarball is not $sha256_29"
	local tmp
	tmp=$(mktemp -d "$cache/.$engine.XXXXXX")
	tar -xJf "$tarball" -C "$tmp"
	mv "$tmp/docker-29.7.2/bin" "$tmp/bin"
	rm -rf "$tmp/docker-29.7.2"
	for f in dockerd docker-proxy containerd containerd-shim-runc-v2 runc; do
		[[ -x "$tmp/bin/$f" ]] || { rm -rf "$tmp"; die "$engine: $f missing from $archive_29"; }
	done
	finish $engine "$tmp" "$("$tmp/bin/dockerd" --version)"
	log "$engine: installed $("$cache/$engine/bin/dockerd" --version)"
}

install_28() {
	local engine=docker-28
	if stamp_ok $engine; then log "$engine: already installed ($cache/$engine)"; return; fi
	[[ $(id -u) -eq 0 ]] || die "$engine: apt-get download from sid needs root"
	need_command dpkg-deb dpkg
	local tmp w
	tmp=$(mktemp -d "$cache/.$engine.XXXXXX")
	w="$tmp/apt"
	mkdir -p "$w/lists/partial" "$w/cache/archives/partial" "$tmp/x" "$tmp/bin"
	echo 'deb http://deb.debian.org/debian sid main' >"$w/sources.list"
	local -a A=(-o "Dir::Etc::SourceList=$w/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$w/lists" -o "Dir::Cache=$w/cache")
	log "$engine: apt-get update (sid, private lists in $w)"
	apt-get "${A[@]}" update >"$tmp/apt-update.log" 2>&1 || { cat "$tmp/apt-update.log" >&2; rm -rf "$tmp"; die "$engine: apt-get update (sid) failed"; }
	log "$engine: apt-get download docker.io containerd"
	(cd "$w" && apt-get "${A[@]}" download docker.io containerd >"$tmp/apt-download.log" 2>&1) \
		|| { cat "$tmp/apt-download.log" >&2; rm -rf "$tmp"; die "$engine: apt-get download (sid) failed"; }
	local deb
	for deb in "$w"/*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
	local f
	for f in usr/sbin/dockerd usr/sbin/docker-proxy usr/bin/containerd usr/bin/containerd-shim-runc-v2; do
		# (Debian has moved docker-proxy between /usr/sbin and /usr/libexec/docker: look around)
		local path="$tmp/x/$f"
		[[ -x "$path" ]] || path=$(find "$tmp/x" -type f -name "$(basename "$f")" -perm -u+x | head -n1)
		[[ -n "$path" && -x "$path" ]] || { rm -rf "$tmp"; die "$engine: $(basename "$f") not found in $(ls "$w"/*.deb | xargs -n1 basename | tr '\n' ' ')"; }
		cp "$path" "$tmp/bin/"
	done
	local debs version
	debs=$(cd "$w" && ls ./*.deb | sed 's|^\./||' | paste -sd' ')
	version=$("$tmp/bin/dockerd" --version) || { rm -rf "$tmp"; die "$engine: the downloaded dockerd does not run here"; }
	[[ $version == "Docker version 28."* ]] || log "$engine: WARNING: sid's dockerd is not 28.x: $version"
	rm -rf "$tmp/x" "$w" "$tmp"/apt-*.log
	finish $engine "$tmp" "$version (from $debs)"
	log "$engine: installed $version ($debs)"
}

mkdir -p "$cache"
engines=("$@")
[[ ${#engines[@]} -gt 0 ]] || engines=(docker-29 docker-28)
for e in "${engines[@]}"; do
	case $e in
		docker-29 | 29 | 29-nftables | 29-iptables) install_29 ;;
		docker-28 | 28) install_28 ;;
		20.10 | docker-20.10) log "20.10: the system's docker.io ($(command -v dockerd || echo 'dockerd missing: apt-get install docker.io'))" ;;
		*) die "unknown engine $e (docker-29, docker-28, 20.10)" ;;
	esac
done
