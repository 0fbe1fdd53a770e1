#!/usr/bin/env bash
# Installs CRIU 4.x (checkpoint/restore of a sandbox's processes: pause to
# disk, snapshots with memory, fork) at /usr/local/lib/coppice/criu/sbin/criu.
#
# Debian 12's criu 3.17 does not start on current kernels ("Unexpected rt vDSO
# area bounds", fixed in 4.1) and Debian 13's binary package needs a newer
# glibc, so this builds Debian 13's source of it against Debian 12's
# libraries: the source index comes from Debian's signed release file (apt
# checks the signature), the tarball is checked against the index's SHA-256.
# Idempotent: nothing happens when the installed build is the wanted version.
# Called by scripts/deps.sh (which installs its build dependencies first);
# needs root and Debian's archive.
set -euo pipefail

PREFIX=/usr/local/lib/coppice/criu
BIN="$PREFIX/sbin/criu"
SUITE=trixie
MIN_VERSION=4.1

PATCHES="$(cd "$(dirname "$0")" && pwd)/criu-patches"
STAMP="$PREFIX/patches.sha256"
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }
# Our patches (each says why), applied in name order; the stamp records which.
patches_sum=$(cat "$PATCHES"/*.patch | sha256sum | cut -d' ' -f1)

installed=$("$BIN" --version 2>/dev/null | sed -n 's/^Version: //p' || true)
if [ -n "$installed" ] && version_ge "$installed" "$MIN_VERSION" && [ "$(cat "$STAMP" 2>/dev/null)" = "$patches_sum" ] &&
  [ "${1:-}" != "--force" ]; then
  exit 0
fi

# Its build dependencies are in scripts/deps.sh's list (installed before this
# runs): protobuf-c, libnl, libnet, libcap, libbsd, gnutls, uuid, nftables.
work=$(mktemp -d /var/tmp/coppice-criu.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/sources.d" "$work/lists/partial" "$work/cache/archives/partial"
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
cat > "$work/sources.d/src.sources" <<SRC
Types: deb-src
URIs: $mirror
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
apt_private=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$work/sources.d"
  -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache" -o APT::Sandbox::User=root)
echo "criu: reading Debian $SUITE's source index ($mirror)"
apt-get "${apt_private[@]}" update -qq
index=$(ls "$work"/lists/*_source_Sources* | head -1)
entry=$( (lz4cat -f "$index" 2>/dev/null || xzcat -f "$index" 2>/dev/null || cat "$index") | awk '/^Package: criu$/,/^$/')
version=$(sed -n 's/^Version: //p' <<<"$entry" | head -1)
dir=$(sed -n 's/^Directory: //p' <<<"$entry" | head -1)
read -r sha size orig < <(awk '/^Checksums-Sha256:/{f=1;next} /^[^ ]/{f=0} f && $3 ~ /\.orig\.tar\./{print $1, $2, $3}' <<<"$entry")
if [ -z "$version" ] || [ -z "$orig" ]; then echo "criu: no criu source in $SUITE's index" >&2; exit 1; fi
upstream=${version%-*}
if ! version_ge "$upstream" "$MIN_VERSION"; then echo "criu: $SUITE has criu $version, need >= $MIN_VERSION" >&2; exit 1; fi

echo "criu: fetching $orig ($size bytes)"
curl -fsS --retry 3 -o "$work/$orig" "$mirror/$dir/$orig"
echo "$sha  $work/$orig" | sha256sum -c --quiet - || { echo "criu: $orig does not match the signed index" >&2; exit 1; }
tar -xf "$work/$orig" -C "$work"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'criu-*' | head -1)
for p in "$PATCHES"/*.patch; do
  patch -d "$src" -p1 --quiet --forward <"$p" || { echo "criu: $(basename "$p") does not apply to $upstream" >&2; exit 1; }
done

echo "criu: building $upstream (a few minutes)"
# No docs (asciidoc), no python bindings: the binary alone.
nice make -C "$src" -j"$(nproc)" criu >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }
install -d "$PREFIX/sbin"
install -m 0755 "$src/criu/criu" "$BIN.new"
mv -f "$BIN.new" "$BIN"
echo "$patches_sum" >"$STAMP"
echo "criu: installed $("$BIN" --version | sed -n 's/^Version: //p') at $BIN"
