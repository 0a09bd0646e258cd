#!/usr/bin/env bash
# Installs what is missing, builds Dango and runs the main job:
#
#   bash scripts/run-demo.sh [dango-xfer-bench options]
#
# With no options, dango-xfer-bench starts a target process on loopback
# (the same program, re-executed with --mode target), opens its segment in
# peer-to-peer handshake mode and measures WRITE and READ at 64 KiB, 1 MiB
# and 4 MiB blocks, batch 32, 3 s each: one JSON object per result on stdout
# and a table on stderr. Any options are passed to dango-xfer-bench as they
# are (see dango-xfer-bench --help).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
JOBS=${DANGO_JOBS:-$(nproc 2>/dev/null || echo 2)}

echo "==== dependencies ===="
bash scripts/deps.sh

echo "==== build (build/, Release) ===="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DDANGO_BUILD_TESTS=OFF \
    -DDANGO_BUILD_BENCH=ON
cmake --build build --parallel "$JOBS"

echo "==== dango-xfer-bench $* ===="
exec build/apps/dango-xfer-bench/dango-xfer-bench "$@"
