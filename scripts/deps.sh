#!/usr/bin/env bash
# Installs everything Coppice needs to build, test and run, from Debian's
# packages and npm (tests/e2e/package-lock.json). Idempotent: a second run
# installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  build-essential cmake ninja-build pkg-config
  libboost1.81-dev nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev
  libseccomp-dev libsqlite3-dev zlib1g-dev
  # sandbox networking: netlink (libmnl), nftables (libnftables), the DNS
  # forwarder's wire format (ldns)
  libmnl-dev libnftables-dev libldns-dev
  # TLS on the gateway's port (--tls-cert/--tls-key); the e2e tests make certificates with openssl
  libssl-dev openssl
  iproute2 procps attr curl ca-certificates
  # the sandboxes' network: nftables; the network tests' fake internet: its DNS
  # server (dnsmasq-base) and the conntrack CLI for their leak check
  nftables dnsmasq-base conntrack
  # the sandboxes' writable layers: a btrfs image with per-sandbox quotas
  btrfs-progs
  # the host-derived base template sees the host's /usr: sudo for its
  # passwordless sudo, `python` as a name for python3 (as on E2B)
  sudo python-is-python3
  # code interpreter: libzmq for coppice-interp; the Jupyter kernel and the
  # scientific stack, which the host-derived templates see through /usr
  libzmq3-dev python3-ipykernel python3-numpy python3-pandas python3-matplotlib python3-pil
  # its other languages (tests/e2e/interp_languages.test.mjs): acorn and
  # typescript for node, R with IRkernel, a JDK for JShell
  node-acorn node-typescript r-base-core r-cran-irkernel openjdk-17-jdk-headless
  # template builder: Debian packages (mmdebstrap); OCI images (skopeo fetches
  # and checks them, umoci unpacks them); a loopback registry for its tests
  mmdebstrap skopeo umoci docker-registry
  # rootless builds: newuidmap and newgidmap map a user's /etc/subuid range
  uidmap
  # benchmark peers
  runc crun bubblewrap
  # fuzz targets (scripts/fuzz.sh): clang 14 and its libFuzzer, ASan and UBSan runtimes
  clang libclang-rt-14-dev
  # building CRIU (scripts/criu.sh): its libraries and code generators, and
  # what fetches and checks its source
  libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev protobuf-compiler libnl-3-dev libnet1-dev
  libcap-dev libbsd-dev libgnutls28-dev uuid-dev python3 xz-utils debian-archive-keyring patch lz4
)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  PKGS+=(nodejs npm)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The tests start their own registry on loopback; the service the package
  # enables would listen on every address (port 5000): not wanted here.
  if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi

# The end-to-end tests' SDKs, exactly as locked.
if [ ! -d tests/e2e/node_modules/e2b ] || [ tests/e2e/package-lock.json -nt tests/e2e/node_modules/.package-lock.json ]; then
  echo "deps: npm ci (tests/e2e)"
  npm ci --prefix tests/e2e --no-audit --no-fund --loglevel=error
fi
# CRIU 4.x for checkpoints (pause to disk, snapshots, fork): Debian 13's
# source built here against Debian 12's libraries, with our patches.
./scripts/criu.sh
./scripts/test-debs.sh  # local packages for the template builder tests, which use no network
