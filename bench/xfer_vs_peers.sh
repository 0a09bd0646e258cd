#!/usr/bin/env bash
# Transfer engine against its peers, measured in one invocation:
#   - TCP, 4 MiB WRITE and READ, batch 32 vs iperf3 (two client/server pairs,
#     -l 1M) and ucx_perftest tag_bw over tcp (4 MiB);
#   - SHM, 4 MiB WRITE vs a single-thread memcpy of cold 4 MiB blocks;
#   - one 64 KiB WRITE over TCP, submit to completion (p50) vs the round
#     trip of ucx_perftest tag_lat 64 KiB (twice its one-way figure);
#   - for reference, the plainest blocking socket pairs (bench_tcp_pair, two
#     pairs, 1 MiB sends) over a cache-hot 1 MiB buffer (iperf3's shape) and
#     over cold 128 MiB pools (the shape of 4 MiB x batch 32): the gap is the
#     cost of cold memory to any TCP sender, not to Dango alone.
# Every measurement runs ROUNDS times, interleaved with its peers, and the
# medians and their ratios are printed as JSON lines (then a table).
#
# usage: bench/xfer_vs_peers.sh [BUILD_DIR]    env: DURATION=3 ROUNDS=3
set -euo pipefail

BUILD=${1:-build}
DURATION=${DURATION:-3}
ROUNDS=${ROUNDS:-3}
XB=$BUILD/apps/dango-xfer-bench/dango-xfer-bench
MC=$BUILD/bench/bench_memcpy
TP=$BUILD/bench/bench_tcp_pair
PY=/usr/bin/python3
for bin in "$XB" "$MC" "$TP"; do
    [ -x "$bin" ] || { echo "missing $bin: build first" >&2; exit 1; }
done
for tool in iperf3 ucx_perftest; do
    command -v $tool >/dev/null || { echo "missing $tool (bash scripts/deps.sh)" >&2; exit 1; }
done

OUT=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$OUT"
}
trap cleanup EXIT

free_port() {
    $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits (bounded) until something listens on 127.0.0.1:$1.
wait_port() {
    for _ in $(seq 1 100); do
        # Look, don't connect: iperf3 -1 would count a probe as its client.
        ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
        sleep 0.05
    done
    return 1
}

iperf_two_pairs() {
    local p1 p2 s1 s2
    p1=$(free_port); p2=$(free_port)
    iperf3 -s -B 127.0.0.1 -p "$p1" -1 >/dev/null 2>&1 & s1=$!
    iperf3 -s -B 127.0.0.1 -p "$p2" -1 >/dev/null 2>&1 & s2=$!
    PIDS+=("$s1" "$s2")
    wait_port "$p1"; wait_port "$p2"
    iperf3 -c 127.0.0.1 -p "$p1" -l 1M -t "$DURATION" -J >"$OUT/i1.json" &
    local c1=$!
    iperf3 -c 127.0.0.1 -p "$p2" -l 1M -t "$DURATION" -J >"$OUT/i2.json"
    wait "$c1"; wait "$s1" "$s2" 2>/dev/null || true
    $PY - "$OUT/i1.json" "$OUT/i2.json" <<'PYEOF'
import json, sys
total = sum(json.load(open(f))["end"]["sum_received"]["bits_per_second"] / 8e9
            for f in sys.argv[1:])
print(json.dumps({"bench": "iperf3", "pairs": 2, "len": "1M", "gbps": round(total, 3)}))
PYEOF
}

# ucx_perftest over tcp on loopback; prints the "Final:" line.
ucx_run() {
    local port srv
    port=$(free_port)
    UCX_TLS=tcp UCX_NET_DEVICES=lo ucx_perftest -p "$port" >/dev/null 2>&1 & srv=$!
    PIDS+=("$srv")
    sleep 0.3
    UCX_TLS=tcp UCX_NET_DEVICES=lo timeout 60 ucx_perftest 127.0.0.1 -p "$port" "$@" 2>/dev/null | grep '^Final:' || true
    wait "$srv" 2>/dev/null || true
}

ucx_tag_bw() {
    ucx_run -t tag_bw -s 4194304 -n 1000 -w 50 | $PY -c '
import json, sys
f = sys.stdin.read().split()
# Final: iters 50% avg overall bw_avg bw_overall rate_avg rate_overall (MB = 2^20)
print(json.dumps({"bench": "ucx_tag_bw", "size": 4194304,
                  "gbps": round(float(f[6]) * 1048576 / 1e9, 3) if len(f) > 6 else 0}))'
}

ucx_tag_lat() {
    ucx_run -t tag_lat -s 65536 -n 5000 -w 500 | $PY -c '
import json, sys
f = sys.stdin.read().split()
one = float(f[2]) if len(f) > 2 else 0
print(json.dumps({"bench": "ucx_tag_lat", "size": 65536, "one_way_p50_us": one,
                  "rtt_p50_us": round(2 * one, 2)}))'
}

dango() {
    "$XB" --duration "$DURATION" --buffer-size 512m "$@" 2>/dev/null | tail -n 1
}

: >"$OUT/all.jsonl"
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r/$ROUNDS" >&2
    "$TP" --pairs 2 --pool 1m --duration "$DURATION" | sed "s/}$/,\"round\":$r}/" | tee -a "$OUT/all.jsonl"
    "$TP" --pairs 2 --pool 128m --duration "$DURATION" | sed "s/}$/,\"round\":$r}/" | tee -a "$OUT/all.jsonl"
    { iperf_two_pairs; } | sed "s/}$/,\"round\":$r}/" | tee -a "$OUT/all.jsonl"
    dango --transport tcp --op write --block-size 4m --batch 32 | sed "s/}$/,\"round\":$r}/" | tee -a "$OUT/all.jsonl"
    dango --transport tcp --op read --block-size 4m --batch 32 | sed "s/}$/,\"round\":$r}/" | tee -a "$OUT/all.jsonl"
    ucx_tag_bw | sed "s/}$/,\"round\":$r}/" | tee -a "$OUT/all.jsonl"
    "$MC" --block 4m --pool 1g --duration "$DURATION" | sed "s/}$/,\"round\":$r}/" | tee -a "$OUT/all.jsonl"
    dango --transport shm --op write --block-size 4m --batch 32 | sed "s/}$/,\"round\":$r}/" | tee -a "$OUT/all.jsonl"
    ucx_tag_lat | sed "s/}$/,\"round\":$r}/" | tee -a "$OUT/all.jsonl"
    dango --transport tcp --op write --block-size 64k --batch 1 | sed "s/}$/,\"round\":$r}/" | tee -a "$OUT/all.jsonl"
done

$PY - "$OUT/all.jsonl" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
def med(pred, key):
    v = [r[key] for r in rows if pred(r) and key in r]
    return statistics.median(v) if v else float("nan")
x = lambda tp, op, bs, b: (lambda r: r.get("bench") == "xfer" and r["transport"] == tp
                           and r["op"] == op and r["block_size"] == bs and r["batch"] == b)
M = 1 << 20
iperf = med(lambda r: r["bench"] == "iperf3", "gbps")
ucxbw = med(lambda r: r["bench"] == "ucx_tag_bw", "gbps")
ucxrtt = med(lambda r: r["bench"] == "ucx_tag_lat", "rtt_p50_us")
memcpy = med(lambda r: r["bench"] == "memcpy", "gbps")
tw = med(x("tcp", "write", 4 * M, 32), "gbps")
tr = med(x("tcp", "read", 4 * M, 32), "gbps")
sw = med(x("shm", "write", 4 * M, 32), "gbps")
lat = med(x("tcp", "write", 64 * 1024, 1), "lat_p50_us")
hot = med(lambda r: r["bench"] == "tcp_pair" and r["pool"] == M, "gbps")
cold = med(lambda r: r["bench"] == "tcp_pair" and r["pool"] == 128 * M, "gbps")
checks = [
    ("tcp_write_4m_vs_iperf3", tw, iperf, tw / iperf, ">=", 0.9),
    ("tcp_read_4m_vs_iperf3", tr, iperf, tr / iperf, ">=", 0.9),
    ("tcp_write_4m_vs_ucx_tag_bw", tw, ucxbw, tw / ucxbw, ">=", 1.2),
    ("tcp_read_4m_vs_ucx_tag_bw", tr, ucxbw, tr / ucxbw, ">=", 1.2),
    ("shm_write_4m_vs_memcpy", sw, memcpy, sw / memcpy, ">=", 0.85),
    ("tcp_64k_p50_us_vs_ucx_rtt_us", lat, ucxrtt, lat / ucxrtt, "<=", 1.0),
    ("socket_pairs_hot_vs_iperf3", hot, iperf, hot / iperf, "ref", 0),
    ("tcp_write_4m_vs_cold_socket_pairs", tw, cold, tw / cold, "ref", 0),
    ("tcp_read_4m_vs_cold_socket_pairs", tr, cold, tr / cold, "ref", 0),
]
print("%-34s %9s %9s %7s  %s" % ("figure", "dango", "peer", "ratio", "target"), file=sys.stderr)
for name, a, b, ratio, op, tgt in checks:
    ok = (ratio >= tgt if op == ">=" else ratio <= tgt) if op != "ref" else None
    print(json.dumps({"bench": "summary", "figure": name, "dango": round(a, 3),
                      "peer": round(b, 3), "ratio": round(ratio, 3),
                      "target": op + str(tgt) if op != "ref" else "reference",
                      "met": ok}))
    print("%-34s %9.3f %9.3f %7.3f  %s" % (name, a, b, ratio,
          "reference" if ok is None else
          "%s%s %s" % (op, tgt, "met" if ok else "NOT met")), file=sys.stderr)
PYEOF
