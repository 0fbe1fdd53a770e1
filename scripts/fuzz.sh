#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang, ASan + UBSan) in build-fuzz/ and
# runs each for SECONDS (default 300) on a copy of its seed corpus, so the
# repository's corpus is never modified. Fails on the first target that
# crashes, leaks or stops on a check, and says where the reproducer is.
#   scripts/fuzz.sh [SECONDS]          FUZZ_TARGETS="multipart recipe" to run some only
#   build-fuzz/fuzz/fuzz_<target> <reproducer>   replays one
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-300}
if ! [[ $SECONDS_PER_TARGET =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh [seconds-per-target]" >&2
  exit 2
fi
FUZZ_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
JOBS=${FUZZ_BUILD_JOBS:-2}

if ! command -v clang++ >/dev/null; then
  echo "fuzz: clang++ is missing (scripts/deps.sh installs clang and libFuzzer)" >&2
  exit 1
fi
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
CC=clang CXX=clang++ cmake -S . -B "$FUZZ_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOPPICE_FUZZ=ON \
  "${launcher[@]}" >/dev/null
nice ninja -C "$FUZZ_DIR" -j"$JOBS"

targets=(${FUZZ_TARGETS:-connect_envelope protojson multipart http_request recipe template_toml dockerfile dns_message})
scratch=$(mktemp -d /tmp/coppice-fuzz.XXXXXX)
status=0
for t in "${targets[@]}"; do
  bin="$FUZZ_DIR/fuzz/fuzz_$t"
  corpus="$scratch/$t/corpus"
  artifacts="$scratch/$t/crashes/"
  mkdir -p "$corpus" "$artifacts"
  cp -r fuzz/corpus/"$t"/. "$corpus"/
  echo "== fuzz $t for ${SECONDS_PER_TARGET}s"
  if ! ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bin" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
      -print_final_stats=1 -artifact_prefix="$artifacts" "$corpus" >"$scratch/$t/log" 2>&1; then
    status=1
    echo "fuzz: $t FAILED; last lines of $scratch/$t/log:" >&2
    tail -n 40 "$scratch/$t/log" >&2
    for f in "$artifacts"*; do
      [ -e "$f" ] && echo "fuzz: reproducer: $f  (replay: $bin $f)" >&2
    done
    continue
  fi
  grep -E '^stat::number_of_executed_units|^Done' "$scratch/$t/log" | tr '\n' ' '
  echo
done
if [ "$status" = 0 ]; then
  rm -rf "$scratch"
  echo "fuzz: ${#targets[@]} targets, no crash"
else
  echo "fuzz: logs, corpora and reproducers kept in $scratch" >&2
fi
exit "$status"
