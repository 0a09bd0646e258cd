#!/usr/bin/env bash
# The store against Redis 7 and memcached, measured in one invocation with
# one client shape: THREADS (8) threads, one call in flight each (one
# connection each for the peers, one shared store client for Dango), values
# of 64 KiB, 1 MiB and 4 MiB:
#   - same host: GET and PUT throughput (GB/s);
#   - two network namespaces joined by veth (servers in one, clients in the
#     other): GET and PUT throughput;
#   - small objects: Dango exist of 100-byte keys (batch 1) against GET of
#     100-byte values (ops/s), and Dango batch_exist of 64 keys (keys/s);
#   - p99 GET latency at 64 KiB, same host.
# Each server is started here on a free port (Redis with persistence off,
# memcached with -I 8m for 4 MiB items, Dango as bench_store_server: a
# master and one 4 GiB segment) and stopped at the end; no system service
# is used. The peers start every run empty (the generator flushes them at
# its end); Dango keeps each preloaded key space (bench_store --keep) for
# the next run of the same size, since the values of objects removed while
# they hold read leases stay in the pool until the leases end. Every measurement runs ROUNDS times, interleaved with its peers;
# the medians and their ratios are printed as JSON lines, then as a table
# (on stderr).
#
# usage: bench/store_vs_peers.sh [BUILD_DIR]
# env:   DURATION=3 ROUNDS=3 THREADS=8 WARMUP=0.5 SIZES="65536 1048576 4194304"
#        WORKING_SET=512m SEGMENT=4g NETNS=1 (0: skip the namespace part)
#        META_KEYS=10000 BATCH=64 SKIP_DANGO=0 (1: the peers alone)
set -euo pipefail

BUILD=${1:-build}
DURATION=${DURATION:-3}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-8}
WARMUP=${WARMUP:-0.5}
SIZES=${SIZES:-65536 1048576 4194304}
WORKING_SET=${WORKING_SET:-512m}
SEGMENT=${SEGMENT:-4g}
NETNS=${NETNS:-1}
META_KEYS=${META_KEYS:-10000}
BATCH=${BATCH:-64}
SKIP_DANGO=${SKIP_DANGO:-0}
BS=$BUILD/bench/bench_store
BSS=$BUILD/bench/bench_store_server
KP=$BUILD/bench/bench_kv_peer
PY=/usr/bin/python3

need=("$KP")
[ "$SKIP_DANGO" = 1 ] || need+=("$BS" "$BSS")
for bin in "${need[@]}"; do
    [ -x "$bin" ] || { echo "missing $bin: build first (SKIP_DANGO=1 runs the peers alone)" >&2; exit 1; }
done
for tool in redis-server memcached; do
    command -v $tool >/dev/null || { echo "missing $tool (bash scripts/deps.sh)" >&2; exit 1; }
done

OUT=$(mktemp -d)
PIDS=()
NS_A="dango-store-$$-a"
NS_B="dango-store-$$-b"
NS_MADE=0
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$NS_MADE" = 1 ]; then
        ip netns del "$NS_A" 2>/dev/null || true   # takes its veth end along
        ip netns del "$NS_B" 2>/dev/null || true
    fi
    rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_port NETNS(or "") PORT: bounded wait until something listens on PORT.
wait_port() {
    local ns=$1 port=$2 run=()
    [ -n "$ns" ] && run=(ip netns exec "$ns")
    for _ in $(seq 1 200); do
        "${run[@]}" ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && return 0
        sleep 0.05
    done
    echo "nothing listens on port $port${ns:+ in $ns}" >&2
    return 1
}

MC_USER=()
[ "$(id -u)" -eq 0 ] && MC_USER=(-u root)

# start_peers TAG NETNS(or "") ADDR: Redis and memcached on ADDR; sets
# REDIS_PORT_<TAG> and MC_PORT_<TAG>.
start_peers() {
    local tag=$1 ns=$2 addr=$3 run=() rp mp
    [ -n "$ns" ] && run=(ip netns exec "$ns")
    rp=$(free_port); mp=$(free_port)
    "${run[@]}" redis-server --bind "$addr" --port "$rp" --save '' --appendonly no \
        --protected-mode no --daemonize no --dir "$OUT" \
        --logfile "$OUT/redis-$tag.log" &
    PIDS+=($!)
    "${run[@]}" memcached "${MC_USER[@]}" -l "$addr" -p "$mp" -U 0 -m 4096 -I 8m \
        >"$OUT/memcached-$tag.log" 2>&1 &
    PIDS+=($!)
    wait_port "$ns" "$rp"; wait_port "$ns" "$mp"
    printf -v "REDIS_PORT_$tag" %s "$rp"
    printf -v "MC_PORT_$tag" %s "$mp"
}

# start_dango TAG NETNS(or "") ADDR: a master and a segment on ADDR; sets
# DANGO_MASTER_<TAG>.
start_dango() {
    local tag=$1 ns=$2 addr=$3 run=() log m
    log=$OUT/dango-$tag.out
    [ -n "$ns" ] && run=(ip netns exec "$ns")
    "${run[@]}" "$BSS" --segment "$SEGMENT" --master-listen "$addr:0" \
        --xfer-listen "$addr:0" >"$log" 2>"$OUT/dango-$tag.err" &
    PIDS+=($!)
    for _ in $(seq 1 600); do
        grep -q '"ready"' "$log" 2>/dev/null && break
        kill -0 "${PIDS[-1]}" 2>/dev/null || break
        sleep 0.05
    done
    m=$($PY -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["master"])' "$log" 2>/dev/null) || {
        echo "bench_store_server did not start:" >&2; cat "$OUT/dango-$tag.err" >&2; exit 1; }
    printf -v "DANGO_MASTER_$tag" %s "$m"
    printf -v "DANGO_PID_$tag" %s "${PIDS[-1]}"
}

setup_netns() {
    local va="dsa$$" vb="dsb$$"
    va=${va:0:15}; vb=${vb:0:15}
    if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null; then
        echo "netns: skipped (needs root and ip(8))" >&2; return 1
    fi
    ip netns add "$NS_A" 2>/dev/null || { echo "netns: skipped (ip netns add refused)" >&2; return 1; }
    NS_MADE=1
    ip netns add "$NS_B"
    ip link add "$va" netns "$NS_A" type veth peer name "$vb" netns "$NS_B"
    ip -n "$NS_A" addr add 192.0.2.1/24 dev "$va"
    ip -n "$NS_B" addr add 192.0.2.2/24 dev "$vb"
    for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up; done
    ip -n "$NS_A" link set "$va" up
    ip -n "$NS_B" link set "$vb" up
}

start_peers L "" 127.0.0.1
[ "$SKIP_DANGO" = 1 ] || start_dango L "" 127.0.0.1
if [ "$NETNS" = 1 ] && setup_netns; then
    start_peers N "$NS_A" 192.0.2.1
    [ "$SKIP_DANGO" = 1 ] || start_dango N "$NS_A" 192.0.2.1
else
    NETNS=0
fi

COMMON=(--threads "$THREADS" --duration "$DURATION" --warmup "$WARMUP")
LIMIT=$(( ${DURATION%.*} * 4 + 120 ))

# measure ROUND WHERE SYSTEM ARGS...: one run, its JSON line tagged with the
# round and kept.
measure() {
    local r=$1 where=$2 sys=$3 run=() line
    shift 3
    [ "$where" = netns ] && run=(ip netns exec "$NS_B")
    case $sys in
    dango)
        local m=$DANGO_MASTER_L listen=127.0.0.1:0 pid=$DANGO_PID_L tag=L
        [ "$where" = netns ] && { m=$DANGO_MASTER_N; listen=192.0.2.2:0; pid=$DANGO_PID_N; tag=N; }
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "bench_store_server ($where) is gone (out of memory? see dmesg):" >&2
            tail -n 5 "$OUT/dango-$tag.err" >&2
            exit 1
        fi
        line=$(timeout "$LIMIT" "${run[@]}" "$BS" --master "$m" --listen "$listen" \
                   --keep --where "$where" "${COMMON[@]}" "$@" 2>"$OUT/last.err" | tail -n 1) || true ;;
    redis|memcached)
        local host=127.0.0.1 port
        [ "$where" = netns ] && host=192.0.2.1
        if [ "$sys" = redis ]; then
            port=$([ "$where" = netns ] && echo "$REDIS_PORT_N" || echo "$REDIS_PORT_L")
        else
            port=$([ "$where" = netns ] && echo "$MC_PORT_N" || echo "$MC_PORT_L")
        fi
        line=$(timeout "$LIMIT" "${run[@]}" "$KP" --system "$sys" --host "$host" --port "$port" \
                   --where "$where" "${COMMON[@]}" "$@" 2>"$OUT/last.err" | tail -n 1) || true ;;
    esac
    if [[ "$line" != "{"* ]]; then
        echo "FAILED: $sys $where $*:" >&2; head -n 5 "$OUT/last.err" >&2
        return 0
    fi
    [ -s "$OUT/last.err" ] && head -n 3 "$OUT/last.err" >&2
    echo "${line%\}},\"round\":$r}" | tee -a "$OUT/all.jsonl"
}

SYSTEMS=(dango redis memcached)
[ "$SKIP_DANGO" = 1 ] && SYSTEMS=(redis memcached)
WHERES=(local)
[ "$NETNS" = 1 ] && WHERES+=(netns)

: >"$OUT/all.jsonl"
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r/$ROUNDS" >&2
    for where in "${WHERES[@]}"; do
        for size in $SIZES; do
            for op in get put; do
                for sys in "${SYSTEMS[@]}"; do
                    measure "$r" "$where" "$sys" --op "$op" --size "$size" \
                        --working-set "$WORKING_SET"
                done
            done
        done
    done
    # Small objects: 100-byte keys, 100-byte values, same host.
    if [ "$SKIP_DANGO" != 1 ]; then
        measure "$r" local dango --op exist --size 100 --key-len 100 --keys "$META_KEYS"
        measure "$r" local dango --op batch_exist --batch "$BATCH" --size 100 \
            --key-len 100 --keys "$META_KEYS"
    fi
    for sys in redis memcached; do
        measure "$r" local "$sys" --op get --size 100 --key-len 100 --keys "$META_KEYS"
    done
done

$PY - "$OUT/all.jsonl" "$SIZES" "$BATCH" <<'PYEOF'
import json, math, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
sizes = [int(s) for s in sys.argv[2].split()]
batch = int(sys.argv[3])
nan = float("nan")


def med(system, op, size, where, key, b=1):
    v = [r[key] for r in rows
         if r["system"] == system and r["op"] == op and r["size"] == size
         and r["where"] == where and r.get("batch", 1) == b and key in r]
    return statistics.median(v) if v else nan


def human(n):
    return "%dK" % (n >> 10) if n < (1 << 20) else "%dM" % (n >> 20)


# Medians of every measurement, one line each.
seen = set()
for r in rows:
    k = (r["system"], r["op"], r["size"], r["where"], r.get("batch", 1))
    if k in seen:
        continue
    seen.add(k)
    m = {f: med(*k[:4], f, k[4]) for f in
         ("gbps", "ops", "keys_per_s", "p50_us", "p99_us", "errors")}
    print(json.dumps({"bench": "store_median", "system": k[0], "op": k[1],
                      "size": k[2], "where": k[3], "batch": k[4],
                      **{f: (None if math.isnan(v) else round(v, 3))
                         for f, v in m.items()},
                      "rounds": sum(1 for x in rows
                                    if (x["system"], x["op"], x["size"],
                                        x["where"], x.get("batch", 1)) == k)}))

checks = []
for where, peers in (("local", (("redis", 2.0), ("memcached", 2.0))),
                     ("netns", (("redis", 1.2), ("memcached", None)))):
    for op in ("get", "put"):
        for size in sizes:
            d = med("dango", op, size, where, "gbps")
            for peer, tgt in peers:
                p = med(peer, op, size, where, "gbps")
                if math.isnan(p) and math.isnan(d):
                    continue
                checks.append(("%s %s %s GB/s vs %s" % (where, op, human(size), peer),
                               d, p, ">=", tgt))
d = med("dango", "exist", 100, "local", "ops")
for peer in ("redis", "memcached"):
    checks.append(("exist 100B ops/s vs %s GET" % peer, d,
                   med(peer, "get", 100, "local", "ops"), ">=",
                   1.0 if peer == "redis" else None))
checks.append(("batch_exist x%d keys/s vs 1M" % batch,
               med("dango", "batch_exist", 100, "local", "keys_per_s", batch),
               1e6, ">=", 1.0))
for peer in ("redis", "memcached"):
    checks.append(("p99 GET 64K us vs %s" % peer,
                   med("dango", "get", 65536, "local", "p99_us"),
                   med(peer, "get", 65536, "local", "p99_us"), "<=",
                   1.0 if peer == "redis" else None))

table = ["%-36s %12s %12s %7s  %s" % ("figure", "dango", "peer", "ratio",
                                      "target")]
met_all = True
for name, a, b, op, tgt in checks:
    ratio = a / b if (b and not math.isnan(a) and not math.isnan(b)) else nan
    if tgt is None:
        ok, tdesc = None, "reference"
    elif math.isnan(ratio):
        ok, tdesc = False, "%s%g NOT measured" % (op, tgt)
    else:
        ok = ratio >= tgt if op == ">=" else ratio <= tgt
        tdesc = "%s%g %s" % (op, tgt, "met" if ok else "NOT met")
    if ok is False:
        met_all = False
    print(json.dumps({"bench": "summary", "figure": name,
                      "dango": None if math.isnan(a) else round(a, 3),
                      "peer": None if math.isnan(b) else round(b, 3),
                      "ratio": None if math.isnan(ratio) else round(ratio, 3),
                      "target": "reference" if tgt is None else op + str(tgt),
                      "met": ok}))
    table.append("%-36s %12.6g %12.6g %7.3f  %s" % (name, a, b, ratio, tdesc))
sys.stdout.flush()
bad = sorted({"%s %s %s %s" % (r["system"], r["where"], r["op"], r["size"])
              for r in rows if r.get("errors", 0)})
if bad:
    met_all = False
    table.append("runs with failed calls (their figures are not valid): " +
                 ", ".join(bad))
table.append("all targets %s" % ("met" if met_all else "NOT met"))
print("\n".join(table), file=sys.stderr)
PYEOF
