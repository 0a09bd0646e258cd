#!/usr/bin/env bash
# Installs the Debian 12 packages Dango needs to build, test and benchmark.
#
# Idempotent: when dpkg already reports every package installed, nothing is
# run at all (no apt-get update, no network). Otherwise the list is installed
# non-interactively. Runs as root; as another user it uses sudo when present.
set -euo pipefail

PACKAGES=(
    build-essential       # cc, make, libc headers
    cmake
    pkg-config
    libjansson-dev        # JSON (descriptors, config)
    libxxhash-dev         # xxh3 checksums
    libprotobuf-c-dev     # control-plane messages
    protobuf-c-compiler   # protoc-c, run at build time
    liburing-dev          # file transport (io_uring)
    libmicrohttpd-dev     # embedded metadata HTTP server
    libcurl4-openssl-dev  # metadata HTTP client
    libnuma-dev           # NUMA placement of registered memory
    libssl-dev            # HMAC-SHA256 for cluster token proofs
    libcmocka-dev         # unit tests
    clang-format          # formatting check in scripts/run-tests.sh
    python3               # tools/check_layers.py
    iproute2              # network-namespace tests (ip netns, veth)
    iperf3                # bench/xfer_vs_peers.sh reference figures
    ucx-utils             # ucx_perftest, same
    redis-server          # bench/store_vs_peers.sh peers
    memcached             # same
    libhiredis-dev        # bench_kv_peer, redis:// metadata backend (Redis client)
    libmemcached-dev      # bench_kv_peer (memcached client)
    etcd-server           # etcd:// metadata tests (a real etcd on loopback)
    python3-dev           # the Python extension module (python/)
    python3-numpy         # Python tests: numpy round trips
    python3-pytest        # Python tests (Debian /usr/bin/python3)
    gnuplot-nox           # dango replay --plot
    fio                   # bench/store_disk_vs_fio.sh peer
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "installed" ]; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "deps: all ${#PACKAGES[@]} packages are installed"
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "deps: missing packages: ${missing[*]}" >&2
        echo "deps: not root and no sudo: install them as root" >&2
        exit 1
    fi
fi

echo "deps: installing ${missing[*]}"
"${SUDO[@]}" apt-get update </dev/null
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${PACKAGES[@]}" </dev/null
