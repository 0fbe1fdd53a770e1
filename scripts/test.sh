#!/usr/bin/env bash
# The whole test suite: dependencies, a build, then every unit, integration and
# end-to-end test through CTest; then the unit and integration tests again,
# built with AddressSanitizer and UndefinedBehaviorSanitizer; then every fuzz
# target for a short while (scripts/fuzz.sh). Tests that need root skip
# visibly without it. SANITIZE=0 leaves out the sanitizer pass, FUZZ=0 the
# fuzz pass (FUZZ_SECONDS per target, default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
./scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
status=0
(cd "$BUILD_DIR" && ctest --output-on-failure -j"$(nproc)" --timeout 900) || status=$?

if [ "${SANITIZE:-1}" != 0 ]; then
  SAN_DIR=${SAN_BUILD_DIR:-build-asan}
  echo "== unit and integration tests under ASan + UBSan ($SAN_DIR)"
  launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  fi
  cmake -S . -B "$SAN_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOPPICE_SANITIZE=ON "${launcher[@]}" \
    -DCOPPICE_AGENTS_DIR="$(realpath "$BUILD_DIR")" >/dev/null
  ninja -C "$SAN_DIR"
  (cd "$SAN_DIR" &&
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --output-on-failure -j"$(nproc)" --timeout 900) || status=$?
fi

if [ "${FUZZ:-1}" != 0 ]; then
  echo "== fuzz targets, ${FUZZ_SECONDS:-15} s each"
  ./scripts/fuzz.sh "${FUZZ_SECONDS:-15}" || status=$?
fi
exit "$status"
