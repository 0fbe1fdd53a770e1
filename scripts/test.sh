#!/usr/bin/env bash
# The whole test suite: dependencies, a build, then every unit, integration and
# end-to-end test through CTest. Tests that need root skip visibly without it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
./scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
cd "$BUILD_DIR"
ctest --output-on-failure -j"$(nproc)" --timeout 900
