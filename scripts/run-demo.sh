#!/usr/bin/env bash
# Installs what is missing, builds Dango and runs the main job:
#
#   bash scripts/run-demo.sh [dango serve options]
#
# With no options, `dango serve` starts a whole store in the foreground: the
# master (RPC on 0.0.0.0:50051, admin HTTP with /health and /metrics on
# 0.0.0.0:9003) and one segment of memory (a quarter of MemAvailable,
# 64 MiB to 4 GiB). It prints the commands to try from another shell
# (build/apps/dango/dango put KEY FILE, get, ls, stat, rm) and runs until
# Ctrl-C. Any options are passed to dango serve as they are (see
# build/apps/dango/dango serve --help), e.g. --segment-size 8g.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
JOBS=${DANGO_JOBS:-$(nproc 2>/dev/null || echo 2)}

echo "==== dependencies ===="
bash scripts/deps.sh

echo "==== build (build/, Release) ===="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DDANGO_BUILD_TESTS=OFF \
    -DDANGO_BUILD_BENCH=ON
cmake --build build --parallel "$JOBS"

echo "==== dango serve $* ===="
exec build/apps/dango/dango serve "$@"
