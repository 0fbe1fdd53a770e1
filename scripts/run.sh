#!/usr/bin/env bash
# Starts the main job in the foreground: the gateway (coppiced) on
# 127.0.0.1:3000 with its state in /var/lib/coppice (STATE_DIR, LISTEN to
# change them), or, in a tree without the gateway, the agent alone on :49983.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
if [ -x "$BUILD_DIR/coppiced" ]; then
  exec "$BUILD_DIR/coppiced" --listen "${LISTEN:-127.0.0.1:3000}" --state-dir "${STATE_DIR:-/var/lib/coppice}" "$@"
fi
exec "$BUILD_DIR/coppice-envd" --host 127.0.0.1 --port 49983 "$@"
