#!/usr/bin/env bash
# The disk tier of a store node against fio on the same file system, in one
# invocation: fio's sequential write and read (io_uring, O_DIRECT, 1 MiB
# blocks, iodepth 16) of a file of COUNT x SIZE bytes, then bench_store_disk
# (offload of COUNT objects of SIZE bytes from a SEGMENT-byte memory pool to
# the node's disk, and read-back of the disk-only ones). ROUNDS rounds,
# interleaved; the medians and the ratios are printed as JSON lines.
#
# usage: bench/store_disk_vs_fio.sh [BUILD_DIR]
# env:   DIR=/var/tmp (a directory on the file system to measure)
#        COUNT=2048 SIZE=1m SEGMENT=512m THREADS=4 BATCH=8 ROUNDS=3
set -euo pipefail

BUILD=${1:-build}
DIR=${DIR:-/var/tmp}
COUNT=${COUNT:-2048}
SIZE=${SIZE:-1m}
SEGMENT=${SEGMENT:-512m}
THREADS=${THREADS:-4}
BATCH=${BATCH:-8}
ROUNDS=${ROUNDS:-3}
BSD=$BUILD/bench/bench_store_disk

command -v fio >/dev/null || { echo "fio not found (bash scripts/deps.sh)" >&2; exit 1; }
[ -x "$BSD" ] || { echo "$BSD not built" >&2; exit 1; }

WORK=$(mktemp -d "$DIR/dango-disk-bench-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
OUT=$WORK/results.jsonl
: > "$OUT"

bytes=$(python3 -c "
s='$SIZE'.lower(); m={'k':1<<10,'m':1<<20,'g':1<<30}
print(int(float(s[:-1])*m[s[-1]]) if s[-1] in m else int(s))")
total=$((bytes * COUNT))

for r in $(seq 1 "$ROUNDS"); do
    for rw in write read; do
        fio --name="$rw" --filename="$WORK/fio.data" --rw="$rw" --bs=1m \
            --size="$total" --ioengine=io_uring --direct=1 --iodepth=16 \
            --output-format=json 2>/dev/null |
            python3 -c "
import json, sys
j = json.load(sys.stdin)['jobs'][0]['$rw']
print(json.dumps({'bench': 'fio', 'op': '$rw', 'round': $r,
                  'gbps': round(j['bw_bytes'] / 1e9, 3)}))" >> "$OUT"
    done
    rm -f "$WORK/fio.data"
    mkdir -p "$WORK/tier"
    "$BSD" --dir "$WORK/tier" --count "$COUNT" --size "$SIZE" \
        --segment "$SEGMENT" --threads "$THREADS" --batch "$BATCH" |
        python3 -c "
import json, sys
for l in sys.stdin:
    j = json.loads(l); j['round'] = $r; print(json.dumps(j))" >> "$OUT"
    rm -rf "$WORK/tier"
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:
    print(json.dumps(r))
def med(bench, op):
    v = [r['gbps'] for r in rows if r['bench'] == bench and r['op'] == op]
    return statistics.median(v) if v else 0.0
for ours, peer in (('offload', 'write'), ('read', 'read')):
    a, b = med('store_disk', ours), med('fio', peer)
    print(json.dumps({'bench': 'store_disk_vs_fio', 'op': ours,
                      'dango_gbps': a, 'fio_gbps': b,
                      'ratio': round(a / b, 3) if b else None}))
PY
