#!/usr/bin/env bash
# Installs dependencies, builds, and starts the main job (scripts/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
./scripts/build.sh
exec ./scripts/run.sh "$@"
