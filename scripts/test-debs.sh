#!/usr/bin/env bash
# Downloads the few Debian packages the template builder's tests build from
# into a local flat repository, /var/cache/coppice/test-debs (or $1), and
# indexes it, so those tests build a real template without any network:
#   deb [trusted=yes] file:///var/cache/coppice/test-debs ./
# Uses the host's apt sources. Idempotent: with the packages present and the
# index newer than them, it downloads nothing.
set -euo pipefail

DIR=${1:-/var/cache/coppice/test-debs}
# busybox-static has no dependencies: with variant "extract" it alone makes a
# usable tree (a static shell and coreutils).
DEBS=(busybox-static)

if ! command -v dpkg-scanpackages >/dev/null; then
  echo "test-debs: installing dpkg-dev"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends dpkg-dev >/dev/null
fi

mkdir -p "$DIR"
cd "$DIR"
missing=()
for p in "${DEBS[@]}"; do
  compgen -G "${p}_*.deb" >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "test-debs: downloading ${missing[*]} into $DIR"
  # apt's sandbox user must be able to write here, or apt warns and falls back.
  chown _apt "$DIR" 2>/dev/null || true
  apt-get download -qq "${missing[@]}"
fi
if [ ! -s Packages ] || [ -n "$(find . -maxdepth 1 -name '*.deb' -newer Packages)" ]; then
  dpkg-scanpackages --multiversion . /dev/null 2>/dev/null > Packages.new
  mv Packages.new Packages
fi

# A minimal Debian image with apt (mmdebstrap's "apt" variant) as a tar of
# its root, for the tests of Template.build() with aptInstall: they install a
# package from a local repository they make, inside a build, offline. Made
# once with the host's apt sources (~160 MB, ~2 min).
IMAGE=$DIR/debian-apt.tar
if [ ! -s "$IMAGE" ]; then
  sources=()
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$f" ] && sources+=("$f")
  done
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  echo "test-debs: making $IMAGE (mmdebstrap --variant=apt $suite)"
  mmdebstrap --quiet --variant=apt --mode=root --format=tar \
    --aptopt='APT::Install-Recommends "false"' "$suite" "$IMAGE.tmp" "${sources[@]}"
  mv "$IMAGE.tmp" "$IMAGE"
fi
