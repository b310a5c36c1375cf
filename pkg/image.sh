#!/usr/bin/env bash
# Builds the container image of docker egress (`make image`) without pulling anything: a root
# filesystem assembled from this machine's own files — the executable, `nft`, iptables (nft and
# legacy flavours), `ip`, `conntrack`, the shared libraries they load (ldd) and the dynamic loader,
# a few /etc files — imported with `docker import` as one layer. The image runs `watch` by default:
#
#   docker run -d --name egress --restart always --network host --cap-add NET_ADMIN \
#     -v /var/run/docker.sock:/var/run/docker.sock -v /var/lib/docker-egress:/var/lib/docker-egress \
#     docker-egress
#
# Usage: pkg/image.sh [--docker CMD] [--name NAME] [--tar FILE] EXECUTABLE
#   --docker  the docker CLI to import with (default $IMAGE_DOCKER, else docker; DOCKER_HOST and
#             DOCKER_CONFIG pass through), e.g. a sandbox daemon's in the tests
#   --name    image name (default docker-egress): tagged NAME:<package.json version> and NAME:latest
#   --tar     write the root filesystem as a tar file instead of importing it
#
# The tar is reproducible from the same inputs (sorted, owner 0, mtime $SOURCE_DATE_EPOCH, else
# the last commit's time), so the image's layer digest only changes when a file in it does.
# The binaries are this host's (Debian 12 here): the image carries their versions (and their
# security fixes) as they are installed here; rebuild it after the host's packages are updated.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
docker_cli=${IMAGE_DOCKER:-docker}
name=docker-egress
tar_out=
die() { printf 'pkg/image: %s\n' "$*" >&2; exit 1; }
log() { printf 'pkg/image: %s\n' "$*" >&2; }

while [[ $# -gt 0 ]]; do
	case $1 in
		--docker) docker_cli=${2:?--docker needs a command}; shift 2 ;;
		--name) name=${2:?--name needs a name}; shift 2 ;;
		--tar) tar_out=${2:?--tar needs a file}; shift 2 ;;
		-h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
		-*) die "unknown option $1" ;;
		*) break ;;
	esac
done
[[ $# -eq 1 ]] || die "usage: pkg/image.sh [--docker CMD] [--name NAME] [--tar FILE] EXECUTABLE"
exe=$1
[[ -x $exe ]] || die "$exe: no such executable (make build)"

version=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$root/package.json")
[[ -n $version ]] || die "no version in package.json"
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}

# What the executable runs (src/adapters): nft; iptables/ip6tables -save/-restore of either flavour;
# ip (addresses, routes, policy rules, `ip monitor`); conntrack (forgetting flows).
need() { command -v "$1" >/dev/null 2>&1 || [[ -x $1 ]] || die "$1 not found: install $2"; }
need /usr/sbin/nft nftables
need /usr/sbin/xtables-nft-multi iptables
need /usr/sbin/xtables-legacy-multi iptables
need /usr/sbin/conntrack conntrack
need ldd libc-bin
ip_bin=$(readlink -f "$(command -v ip)") || die "ip not found: install iproute2"
xtables_dir=$(dirname "$(readlink -f "$(ldd /usr/sbin/xtables-nft-multi | awk '/libxtables/ {print $3}')")")/xtables
[[ -d $xtables_dir ]] || die "no xtables extensions in $xtables_dir"

rootfs=$(mktemp -d "${TMPDIR:-/tmp}/docker-egress-image.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT
chmod 0755 "$rootfs"

# The top-level directories as this host lays them out (Debian 12: /bin, /sbin, /lib, /lib64 are
# links into /usr), so every path ldd prints means the same file inside.
mkdir -p "$rootfs"/{usr/bin,usr/sbin,usr/local/bin,etc,run,var/lib/docker-egress}
for dir in /bin /sbin /lib /lib64; do
	if [[ -L $dir ]]; then
		ln -s "$(readlink "$dir")" "$rootfs$dir"
	elif [[ -d $dir ]]; then
		mkdir -p "$rootfs$dir"
	fi
done
ln -s ../run "$rootfs/var/run"
install -d -m 1777 "$rootfs/tmp"
install -d -m 0700 "$rootfs/root"

declare -A copied=()
# add FILE [DEST]: FILE's content (links followed) at DEST (default: FILE, in its real directory),
# mode kept, and the libraries it loads.
add() {
	local src=$1 dest=${2:-$(readlink -f "$(dirname "$1")")/$(basename "$1")}
	[[ -z ${copied[$dest]:-} ]] || return 0
	copied[$dest]=1
	mkdir -p "$rootfs$(dirname "$dest")"
	cp -L --preserve=mode "$src" "$rootfs$dest"
	if file_is_elf "$src"; then
		local lib
		# "libx.so.1 => /lib/…/libx.so.1 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)"
		while read -r lib; do
			add "$lib"
		done < <(ldd "$src" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p')
	fi
}
file_is_elf() { [[ $(head -c 4 "$1" | od -An -c | tr -d ' ') == '177ELF' ]]; }

add "$exe" /usr/local/bin/docker-egress
add /usr/sbin/nft
add /usr/sbin/conntrack
add "$ip_bin" /usr/bin/ip
[[ -e $rootfs/usr/sbin/ip ]] || ln -s ../bin/ip "$rootfs/usr/sbin/ip"
add /usr/sbin/xtables-nft-multi
add /usr/sbin/xtables-legacy-multi
# Plain iptables is the nft flavour, as on Debian 12 (the plugin uses the flavour that holds
# Docker's chains, by its explicit name, and plain `iptables --version` only when neither does).
for tool in iptables ip6tables; do
	for suffix in '' -save -restore; do
		ln -s xtables-nft-multi "$rootfs/usr/sbin/$tool$suffix"
		ln -s xtables-nft-multi "$rootfs/usr/sbin/$tool-nft$suffix"
		ln -s xtables-legacy-multi "$rootfs/usr/sbin/$tool-legacy$suffix"
	done
done
# The extension modules iptables loads by name (libxt_*.so, libipt_*.so …), and what they load.
for module in "$xtables_dir"/*.so; do
	add "$module"
done

# /etc: root, name lookups from files only (iptables and nft read protocol and service names),
# iproute2's tables (routing table, protocol and scope names).
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files\nprotocols: files\nservices: files\n' >"$rootfs/etc/nsswitch.conf"
for file in /etc/protocols /etc/services /etc/ethertypes; do
	[[ ! -f $file ]] || cp "$file" "$rootfs$file"
done
[[ ! -d /etc/iproute2 ]] || cp -r /etc/iproute2 "$rootfs/etc/iproute2"

# Which host packages the binaries came from, for the image's labels.
packages=$(dpkg-query -W -f '${Package}=${Version} ' nftables iptables iproute2 conntrack libc6 2>/dev/null | sed 's/ $//') || packages=unknown
os=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}") || os=unknown

make_tar() {
	tar -C "$rootfs" --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --format=gnu -cf - .
}

size=$(du -sh "$rootfs" | cut -f1)
if [[ -n $tar_out ]]; then
	make_tar >"$tar_out"
	log "root filesystem ($size) written to $tar_out"
	exit 0
fi

log "importing the root filesystem ($size) as $name:$version with $docker_cli"
read -r -a docker_cmd <<<"$docker_cli"
make_tar | "${docker_cmd[@]}" import \
	--change 'ENTRYPOINT ["/usr/local/bin/docker-egress"]' \
	--change 'CMD ["watch"]' \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'ENV DOCKER_HOST=unix:///var/run/docker.sock' \
	--change 'ENV DOCKER_EGRESS_STATE_DIR=/var/lib/docker-egress' \
	--change "LABEL org.opencontainers.image.title=docker-egress" \
	--change "LABEL org.opencontainers.image.version=$version" \
	--change "LABEL org.opencontainers.image.description=\"docker egress watch: fixed egress source IPs for Docker bridge networks\"" \
	--change "LABEL docker-egress.image.built-from=\"$os: $packages\"" \
	--message "docker egress $version: executable and firewall tools from $os" \
	- "$name:$version" >/dev/null
"${docker_cmd[@]}" tag "$name:$version" "$name:latest"
log "built $name:$version and $name:latest ($("${docker_cmd[@]}" image inspect --format '{{.Id}}' "$name:$version"))"
