#!/usr/bin/env bash
# Installs what is missing, builds Dango and runs every check and test.
#
#   bash scripts/run-tests.sh
#
# Phases (each prints a header; the script exits non-zero if any failed):
#   1. dependencies        scripts/deps.sh (Debian 12 packages)
#   2. layering            tools/check_layers.py --self-test, then the tree
#   3. formatting          clang-format --dry-run over every C file
#   4. build + tests       build-ci/, -Werror, ctest
#   5. sanitizers          build-asan/, ASan + UBSan, the same ctest suite
#
# Every later phase still runs after a failure, so one run shows everything
# that is wrong. Each CTest entry carries its own TIMEOUT; --timeout below
# only bounds a test that forgot to set one.
#
# Environment: DANGO_JOBS (build jobs, default: all cores), DANGO_TEST_JOBS
# (parallel tests, default 2), DANGO_SKIP_ASAN=1 (skip phase 5 locally),
# DANGO_SKIP_CHAOS=1 (leave the chaos suite out locally).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
JOBS=${DANGO_JOBS:-$(nproc 2>/dev/null || echo 2)}
TEST_JOBS=${DANGO_TEST_JOBS:-2}
FALLBACK_TEST_TIMEOUT=600
START=$(date +%s)
FAILED=()
TOTAL_PASSED=0
TOTAL_FAILED=0

# The Debian interpreter, not whatever python3 comes first on PATH.
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON=$(command -v python3 || true)

phase() {
    printf '\n==== [%s] %s ====  (%ss elapsed)\n' "$1" "$2" \
        "$(($(date +%s) - START))"
}

fail() {
    FAILED+=("$1")
    printf '**** FAILED: %s\n' "$1"
}

# Configures, builds and runs ctest in build dir $1 with extra cmake args.
# ctest's own output (its "N% tests passed, M tests failed out of T" line
# included) goes to the terminal and to $1/ctest.log.
build_and_test() {
    local dir=$1 name=$2
    shift 2

    if ! cmake -S "$ROOT" -B "$dir" "$@"; then
        fail "$name: configure"
        return
    fi

    if ! cmake --build "$dir" --parallel "$JOBS"; then
        fail "$name: build"
        return
    fi

    # The chaos suite (label chaos, about 75 s, run serially) is part of
    # the suite; DANGO_SKIP_CHAOS=1 leaves it out of a local run.
    local exclude=()
    [ "${DANGO_SKIP_CHAOS:-0}" = 1 ] && exclude=(-LE chaos)
    (cd "$dir" && ctest --output-on-failure -j "$TEST_JOBS" "${exclude[@]}" \
        --timeout "$FALLBACK_TEST_TIMEOUT") 2>&1 | tee "$dir/ctest.log"
    local rc=${PIPESTATUS[0]}
    local line passed=0 failed=0 total

    line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' \
        "$dir/ctest.log" | tail -n 1 || true)
    if [ -n "$line" ]; then
        failed=$(sed -E 's/.* ([0-9]+) tests? failed out of.*/\1/' <<<"$line")
        total=$(sed -E 's/.*failed out of ([0-9]+).*/\1/' <<<"$line")
        passed=$((total - failed))
    fi

    TOTAL_PASSED=$((TOTAL_PASSED + passed))
    TOTAL_FAILED=$((TOTAL_FAILED + failed))
    if [ "$rc" -ne 0 ]; then
        fail "$name: ctest (exit $rc)"
    elif [ -z "$line" ] || [ "$passed" -eq 0 ]; then
        fail "$name: ctest ran no test"
    fi
}

# ---------- 1. dependencies ----------
phase 1/5 "dependencies (scripts/deps.sh)"
if ! bash scripts/deps.sh; then
    fail "dependencies"
    echo "cannot continue without the build dependencies" >&2
    exit 1
fi

[ -x "$PYTHON" ] || PYTHON=$(command -v python3 || true)

# ---------- 2. layering ----------
phase 2/5 "layering (tools/check_layers.py)"
if [ -z "$PYTHON" ]; then
    fail "layering: no python3"
else
    "$PYTHON" tools/check_layers.py --self-test || fail "layering: self-test"
    "$PYTHON" tools/check_layers.py || fail "layering: forbidden include edges"
fi

# ---------- 3. formatting ----------
phase 3/5 "formatting (clang-format)"
# Every C file must be formatted as .clang-format says (Debian 12's
# clang-format 14, installed by scripts/deps.sh); 'clang-format -i FILE'
# fixes one.
if command -v clang-format >/dev/null 2>&1; then
    if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        mapfile -t cfiles < <(git -C "$ROOT" ls-files --cached --others \
            --exclude-standard -- '*.c' '*.h' | sort -u)
    else
        mapfile -t cfiles < <(find include src apps tests bench tools \
            -name '*.[ch]' 2>/dev/null | sort)
    fi

    differ=()
    for f in "${cfiles[@]}"; do
        [ -f "$f" ] || continue
        if ! clang-format --style=file "$f" | cmp -s - "$f"; then
            differ+=("$f")
        fi
    done

    echo "clang-format: ${#differ[@]} of ${#cfiles[@]} C files differ from" \
        ".clang-format"
    for f in "${differ[@]:0:10}"; do
        echo "  $f"
    done
    [ "${#differ[@]}" -le 10 ] || echo "  ... and $((${#differ[@]} - 10)) more"
    [ "${#differ[@]}" -eq 0 ] || fail "formatting: run clang-format -i on the files above"
else
    fail "formatting: clang-format is not installed (scripts/deps.sh installs it)"
fi

# ---------- 4. build with -Werror and test ----------
phase 4/5 "build (build-ci, -Werror) and ctest"
build_and_test build-ci "build-ci" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDANGO_WERROR=ON \
    -DDANGO_BUILD_TESTS=ON -DDANGO_BUILD_BENCH=ON

# ---------- 5. the same suite under ASan + UBSan ----------
phase 5/5 "sanitizers (build-asan, address+undefined) and ctest"
if [ "${DANGO_SKIP_ASAN:-0}" = 1 ]; then
    echo "skipped (DANGO_SKIP_ASAN=1)"
else
    # Debug keeps dango_assert() and the owner-thread checks on.
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    build_and_test build-asan "build-asan" \
        -DCMAKE_BUILD_TYPE=Debug -DDANGO_SANITIZE=address,undefined \
        -DDANGO_BUILD_TESTS=ON -DDANGO_BUILD_BENCH=ON
    unset ASAN_OPTIONS UBSAN_OPTIONS
fi

# ---------- summary ----------
phase done "summary"
if [ "${#FAILED[@]}" -ne 0 ]; then
    printf 'failed phases:\n'
    printf '  %s\n' "${FAILED[@]}"
fi

printf 'total time %ss\n' "$(($(date +%s) - START))"
# Both ctest runs together, in the plain "N passed, N failed" form.
printf 'tests: %d passed, %d failed\n' "$TOTAL_PASSED" "$TOTAL_FAILED"
[ "${#FAILED[@]}" -eq 0 ]
