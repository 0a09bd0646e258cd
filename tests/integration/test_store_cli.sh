#!/usr/bin/env bash
# The store's programs as a user runs them, on 127.0.0.1 only:
#   1. `dango serve` (master + one segment in one process): put a 1 MiB file
#      and a value from stdin, get both back (file, stdout), ls, stat, rm,
#      the error lines and exit codes, the admin port's /health and /metrics,
#      then SIGTERM and a clean exit;
#   2. `dango-master` and two `dango-node`s as separate processes: a put with
#      two replicas, a get, SIGTERM to each and clean exits.
# Every port is 0 (the programs print the ports they got), every wait is
# bounded, and the trap kills whatever is left.
#
# usage: test_store_cli.sh DANGO DANGO_MASTER DANGO_NODE
set -euo pipefail

DANGO=${1:?usage: $0 DANGO DANGO_MASTER DANGO_NODE}
MASTER_BIN=${2:?}
NODE_BIN=${3:?}
T=30 # seconds any one command may take

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dango-cli-test.XXXXXX")
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    local f
    echo "FAIL: $*" >&2
    for f in "$TMP"/*.out "$TMP"/*.err; do
        [ -s "$f" ] && { echo "==== $f" >&2; tail -n 20 "$f" >&2; }
    done
    exit 1
}

step() { echo "--- $*"; }

# start NAME CMD...: runs CMD in the background, stdout to NAME.out and
# stderr to NAME.err; sets LAST_PID.
start() {
    local name=$1
    shift
    "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# wait_line PID FILE REGEX: waits (bounded) until FILE has a line matching
# REGEX; fails if the process exits first.
wait_line() {
    local pid=$1 file=$2 re=$3 i
    for ((i = 0; i < T * 10; i++)); do
        grep -Eqs "$re" "$file" && return 0
        kill -0 "$pid" 2>/dev/null || fail "process $pid exited before '$re'"
        sleep 0.1
    done
    fail "no '$re' in $file after ${T}s"
}

# stop PID: SIGTERM, then waits (bounded) and checks the exit status is 0.
stop() {
    local pid=$1 i rc=0
    kill -TERM "$pid"
    for ((i = 0; i < T * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && fail "process $pid still running ${T}s after SIGTERM"
    wait "$pid" || rc=$?
    [ "$rc" -eq 0 ] || fail "process $pid exited $rc after SIGTERM"
}

# run_dango ARGS...: the CLI against $M, bounded.
run_dango() { timeout "$T" "$DANGO" "$@" --master "$M"; }

# expect_rc RC ARGS...: the CLI exits RC; its stderr is left in $TMP/cmd.err.
expect_rc() {
    local want=$1 rc=0
    shift
    timeout "$T" "$DANGO" "$@" >"$TMP/cmd.stdout" 2>"$TMP/cmd.err" || rc=$?
    [ "$rc" -eq "$want" ] ||
        fail "dango $* exited $rc, expected $want: $(cat "$TMP/cmd.err")"
}

# wait_segments N: until the pool counts N segments.
wait_segments() {
    local n=$1 i
    for ((i = 0; i < T * 10; i++)); do
        run_dango stat >"$TMP/pool.txt" 2>/dev/null &&
            grep -Eq "^segments +$n\$" "$TMP/pool.txt" && return 0
        sleep 0.1
    done
    fail "pool never had $n segments: $(cat "$TMP/pool.txt")"
}

head -c 1048576 /dev/urandom >"$TMP/big"
printf 'hello from stdin\n' >"$TMP/small"

# ---------------------------------------------------------------- usage
step "usage and flags"
expect_rc 2 frobnicate
expect_rc 2 put onlykey
expect_rc 2 get a b c
expect_rc 2 rm
expect_rc 2 rm k --regex x
expect_rc 2 put k "$TMP/big" --replicas 0
expect_rc 2 ls --bogus
expect_rc 0 put --help
grep -q "usage: dango put" "$TMP/cmd.stdout" || fail "put --help"
timeout "$T" "$MASTER_BIN" --help >"$TMP/help.out" || fail "dango-master --help"
grep -q -- "^  --listen VALUE" "$TMP/help.out" || fail "dango-master --help lists no --listen"
rc=0
timeout "$T" "$MASTER_BIN" --no-such-option 1 2>/dev/null || rc=$?
[ "$rc" -eq 2 ] || fail "dango-master --no-such-option exited $rc"
timeout "$T" "$NODE_BIN" --help >/dev/null || fail "dango-node --help"

# ---------------------------------------------------------------- serve
step "dango serve"
# A long lease: the gets below must still hold it when rm runs.
start serve "$DANGO" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --segment-size 64m --lease-ttl 120s
SERVE=$LAST_PID
wait_line "$SERVE" "$TMP/serve.out" '^dango serve listening on '
line=$(grep -E '^dango serve listening on ' "$TMP/serve.out")
M=$(sed -E 's/^dango serve listening on ([^,]+),.*/\1/' <<<"$line")
ADMIN=$(sed -nE 's/.*admin http:\/\/([^,]+).*/\1/p' <<<"$line")
{ [ -n "$M" ] && [ -n "$ADMIN" ]; } || fail "cannot parse '$line'"
echo "master $M, admin $ADMIN"
wait_segments 1

step "put"
run_dango put big "$TMP/big"
run_dango put small - <"$TMP/small"
expect_rc 1 put big "$TMP/small" --master "$M"
grep -q "^dango: big: object already exists" "$TMP/cmd.err" ||
    fail "put of an existing key: $(cat "$TMP/cmd.err")"
: >"$TMP/empty"
expect_rc 1 put empty "$TMP/empty" --master "$M"
expect_rc 1 put nofile "$TMP/does-not-exist" --master "$M"

step "get"
run_dango get big "$TMP/big.got"
cmp "$TMP/big" "$TMP/big.got" || fail "big differs"
run_dango get small >"$TMP/small.got"
cmp "$TMP/small" "$TMP/small.got" || fail "small differs"
run_dango get big - | cmp - "$TMP/big" || fail "big to stdout differs"
expect_rc 1 get missing "$TMP/missing.got" --master "$M"
[ "$(cat "$TMP/cmd.err")" = "dango: missing: object not found" ] ||
    fail "get of a missing key said: $(cat "$TMP/cmd.err")"
[ ! -e "$TMP/missing.got" ] || fail "a failed get left its file"

step "upsert"
run_dango put small - --upsert <"$TMP/big"
run_dango get small | cmp - "$TMP/big" || fail "upsert not seen"
run_dango put small "$TMP/small" --upsert
run_dango get small | cmp - "$TMP/small" || fail "second upsert not seen"

step "ls"
run_dango ls >"$TMP/ls.txt"
grep -qx "big	1048576" "$TMP/ls.txt" || fail "ls: $(cat "$TMP/ls.txt")"
grep -qx "small	17" "$TMP/ls.txt" || fail "ls: $(cat "$TMP/ls.txt")"
[ "$(wc -l <"$TMP/ls.txt")" -eq 2 ] || fail "ls: $(cat "$TMP/ls.txt")"
run_dango ls sm >"$TMP/ls.txt"
[ "$(cat "$TMP/ls.txt")" = "small	17" ] || fail "ls sm: $(cat "$TMP/ls.txt")"

step "stat"
run_dango stat >"$TMP/stat.txt"
grep -Eq '^keys +2$' "$TMP/stat.txt" || fail "stat: $(cat "$TMP/stat.txt")"
grep -Eq '^capacity +[1-9]' "$TMP/stat.txt" || fail "stat: $(cat "$TMP/stat.txt")"
run_dango stat big >"$TMP/stat.txt"
grep -Eq '^size +1048576 ' "$TMP/stat.txt" || fail "stat big: $(cat "$TMP/stat.txt")"
grep -Eq '^replicas +1$' "$TMP/stat.txt" || fail "stat big: $(cat "$TMP/stat.txt")"
expect_rc 1 stat missing --master "$M"
[ "$(cat "$TMP/cmd.err")" = "dango: missing: object not found" ] ||
    fail "stat of a missing key said: $(cat "$TMP/cmd.err")"

step "admin http"
curl -fsS --max-time "$T" "http://$ADMIN/health" >/dev/null || fail "/health"
curl -fsS --max-time "$T" "http://$ADMIN/metrics" >"$TMP/metrics.txt" ||
    fail "/metrics"
grep -Eq '^dango_master_key_count 2$' "$TMP/metrics.txt" ||
    fail "/metrics: no key count of 2"
curl -fsS --max-time "$T" "http://$ADMIN/keys?prefix=b" >"$TMP/keys.txt" ||
    fail "/keys"
grep -q big "$TMP/keys.txt" || fail "/keys?prefix=b: $(cat "$TMP/keys.txt")"

step "rm"
expect_rc 1 rm small --master "$M"
grep -q "^dango: small: object lease is held" "$TMP/cmd.err" ||
    fail "rm of a leased key said: $(cat "$TMP/cmd.err")"
run_dango rm small --force
expect_rc 1 get small --master "$M"
[ "$(cat "$TMP/cmd.err")" = "dango: small: object not found" ] ||
    fail "get after rm said: $(cat "$TMP/cmd.err")"
expect_rc 1 rm small --master "$M"
run_dango put a1 "$TMP/small"
run_dango put a2 "$TMP/small"
run_dango rm --regex '^a[0-9]$' >"$TMP/rm.txt"
[ "$(cat "$TMP/rm.txt")" = "removed 2" ] || fail "rm --regex: $(cat "$TMP/rm.txt")"
run_dango rm --all --force >"$TMP/rm.txt"
[ "$(cat "$TMP/rm.txt")" = "removed 1" ] || fail "rm --all: $(cat "$TMP/rm.txt")"
[ -z "$(run_dango ls)" ] || fail "keys left after rm --all"

step "serve stops on SIGTERM"
stop "$SERVE"
expect_rc 1 ls --master "$M"
grep -q "(master $M)" "$TMP/cmd.err" ||
    fail "no master named when it is down: $(cat "$TMP/cmd.err")"

# ------------------------------------------------------ master + nodes
step "dango-master and two dango-nodes"
start master bash -c 'ulimit -Sn 1024 && exec "$0" "$@"' \
    "$MASTER_BIN" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0
MPID=$LAST_PID
wait_line "$MPID" "$TMP/master.out" '^dango-master listening on '
M=$(sed -nE 's/^dango-master listening on ([^,]+).*/\1/p' "$TMP/master.out")
[ -n "$M" ] || fail "cannot parse $(cat "$TMP/master.out")"
# Started with a soft limit of 1024 open files, the master raises it so
# that its RPC server's own connection limit is what binds.
soft=$(awk '/^Max open files/ {print $4}' "/proc/$MPID/limits")
hard=$(awk '/^Max open files/ {print $5}' "/proc/$MPID/limits")
want=17408
[ "$hard" = unlimited ] || [ "$hard" -ge "$want" ] || want=$hard
[ "$soft" -ge "$want" ] || fail "master open-file limit $soft, not $want"
start node1 "$NODE_BIN" --master "$M" --segment-size 64m
N1=$LAST_PID
mkdir -p "$TMP/disk"
start node2 "$NODE_BIN" --master "$M" --segment-size 32m \
    --disk-path "$TMP/disk" --disk-size 64m
N2=$LAST_PID
wait_line "$N1" "$TMP/node1.out" '^dango-node serving segment '
wait_line "$N2" "$TMP/node2.out" '^dango-node serving segment '
wait_segments 2

run_dango put big "$TMP/big" --replicas 2
run_dango stat big >"$TMP/stat.txt"
grep -Eq '^replicas +2$' "$TMP/stat.txt" || fail "stat big: $(cat "$TMP/stat.txt")"
run_dango get big | cmp - "$TMP/big" || fail "big via nodes differs"

step "a node's disk tier in dango stat"
for _ in $(seq 1 100); do
    run_dango stat >"$TMP/stat.txt"
    grep -Eq '^disk +67108864 ' "$TMP/stat.txt" && break
    sleep 0.1
done
grep -Eq '^disk +67108864 ' "$TMP/stat.txt" ||
    fail "stat shows no disk tier: $(cat "$TMP/stat.txt")"
grep -Eq '^disk keys +0$' "$TMP/stat.txt" || fail "stat: $(cat "$TMP/stat.txt")"
[ -f "$TMP/disk/dango-disk.data" ] || fail "no tier file in $TMP/disk"

step "nodes and master stop on SIGTERM"
stop "$N1"
run_dango get big | cmp - "$TMP/big" || fail "big after one node left differs"
stop "$N2"
stop "$MPID"
echo "PASS"
