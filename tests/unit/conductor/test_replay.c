/*
 * Trace loading and the replay invariants: cache-only (spec conductor.md
 * §B) on the real traces when they are present, and the timed simulation
 * on small synthetic traces written by the test.
 */
#include "conductor/conductor_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dango_test.h"

#ifndef assert_double_equal /* cmocka before 1.1.6 */
#define assert_double_equal(_a, _b, _eps)                                      \
    do {                                                                       \
        double _x = (_a), _y = (_b);                                           \
        if (!(fabs(_x - _y) <= (_eps))) {                                      \
            fail_msg("%s is %.12g, expected %.12g", #_a, _x, _y);              \
        }                                                                      \
    } while (0)
#endif

#ifndef DANGO_TRACE_DIR
#define DANGO_TRACE_DIR "../shared/data/traces"
#endif

static size_t bad_lines[16];
static size_t n_bad;

static void on_bad_line(void *arg, size_t line, const char *msg)
{
    (void)arg;
    (void)msg;
    if (n_bad < DANGO_ARRAY_SIZE(bad_lines)) {
        bad_lines[n_bad] = line;
    }
    n_bad++;
}

/* Writes @text to a new temporary file; returns its name (static). */
static const char *write_tmp(const char *text)
{
    static char name[64];
    int         fd;
    FILE       *f;

    snprintf(name, sizeof(name), "/tmp/dango-trace-XXXXXX");
    fd = mkstemp(name);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return name;
}

static dango_conductor_trace_t *load_real(const char *file)
{
    char                     path[512];
    dango_conductor_trace_t *t = NULL;

    snprintf(path, sizeof(path), "%s/%s", DANGO_TRACE_DIR, file);
    if (access(path, R_OK) != 0) {
        return NULL;
    }
    assert_dango_ok(dango_conductor_trace_load(path, NULL, NULL, &t));
    return t;
}

static void trace_skips_malformed_lines(void **state)
{
    const char *name = write_tmp(
        "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 3, "
        "\"hash_ids\": [1, 2]}\n"
        "not json\n"
        "\n"
        "{\"timestamp\": 5, \"input_length\": 600, \"hash_ids\": [1, 2]}\n"
        "{\"timestamp\": 5, \"input_length\": 600, \"output_length\": 1, "
        "\"hash_ids\": [1, -2]}\n"
        "[1, 2]\n"
        "{\"timestamp\": -1, \"input_length\": 6, \"output_length\": 1, "
        "\"hash_ids\": [1]}\n"
        "{\"timestamp\": 9, \"input_length\": 600, \"output_length\": 1, "
        "\"hash_ids\": []}\n"
        "{\"timestamp\": 9, \"input_length\": 600, \"output_length\": 1, "
        "\"hash_ids\": [1, 3]} trailing\n"
        "{\"timestamp\": 10.5, \"input_length\": 700, \"output_length\": 9, "
        "\"hash_ids\": [1, 4], \"extra\": true}");
    dango_conductor_trace_t    *t;
    dango_conductor_trace_req_t r;

    n_bad = 0;
    assert_dango_ok(dango_conductor_trace_load(name, on_bad_line, NULL, &t));
    unlink(name);
    assert_int_equal(dango_conductor_trace_count(t), 2);
    assert_int_equal(dango_conductor_trace_skipped(t), 7);
    assert_int_equal(n_bad, 7);
    assert_int_equal(bad_lines[0], 2);
    assert_int_equal(bad_lines[1], 4);
    assert_int_equal(bad_lines[6], 9);
    assert_dango_ok(dango_conductor_trace_get(t, 1, &r));
    assert_double_equal(r.timestamp_ms, 10.5, 1e-12);
    assert_int_equal(r.input_length, 700);
    assert_int_equal(r.output_length, 9);
    assert_int_equal(r.n_blocks, 2);
    assert_int_equal(r.hash_ids[1], 4);
    assert_dango_err(DANGO_ERANGE, dango_conductor_trace_get(t, 2, &r));
    dango_conductor_trace_destroy(t);

    name = write_tmp("garbage\n{}\n");
    assert_dango_err(DANGO_EINVAL,
                     dango_conductor_trace_load(name, NULL, NULL, &t));
    unlink(name);
    assert_dango_err(
        DANGO_ENOENT,
        dango_conductor_trace_load("/nonexistent/trace.jsonl", NULL, NULL, &t));
}

/* Fraction of blocks whose id appeared in an earlier request, computed
 * independently of the LRU code: sort (id, request) pairs. */
static int cmp_pair(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;

    if (x[0] != y[0]) {
        return (x[0] > y[0]) - (x[0] < y[0]);
    }
    return (x[1] > y[1]) - (x[1] < y[1]);
}

static double seen_earlier(const dango_conductor_trace_t *t)
{
    size_t    n = dango_conductor_trace_count(t), total = 0, k = 0, hits = 0;
    uint64_t *pairs;

    for (size_t i = 0; i < n; i++) {
        dango_conductor_trace_req_t r;

        dango_conductor_trace_get(t, i, &r);
        total += r.n_blocks;
    }
    pairs = malloc(total * 2 * sizeof(uint64_t));
    assert_non_null(pairs);
    for (size_t i = 0; i < n; i++) {
        dango_conductor_trace_req_t r;

        dango_conductor_trace_get(t, i, &r);
        for (size_t b = 0; b < r.n_blocks; b++) {
            pairs[2 * k]     = r.hash_ids[b];
            pairs[2 * k + 1] = i;
            k++;
        }
    }
    qsort(pairs, total, 2 * sizeof(uint64_t), cmp_pair);
    for (size_t i = 1; i < total; i++) {
        hits += (pairs[2 * i] == pairs[2 * i - 2]) &&
                (pairs[2 * i + 1] != pairs[2 * i - 1]);
    }
    free(pairs);
    return (double)hits / (double)total;
}

static void replay_cache_invariants(const char *file)
{
    static const size_t caps[] = {0, 100, 1000, 5000, 10000, 50000, 100000};
    dango_conductor_trace_t       *t = load_real(file);
    dango_conductor_cache_params_t p = {0, 1, DANGO_CONDUCTOR_ROUTE_RR, 0, 512};
    dango_conductor_cache_result_t r;
    double                         prev = -1, max;

    if (t == NULL) {
        skip();
    }

    /* One LRU: the hit rate never falls as the capacity grows. */
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(caps); i++) {
        double rate;

        p.capacity_blocks = caps[i];
        assert_dango_ok(dango_conductor_replay_cache(t, &p, &r));
        rate = (double)r.hit_blocks / (double)r.total_blocks;
        assert_true(rate >= prev);
        assert_true(r.hit_tokens <= r.total_tokens);
        prev = rate;
    }
    assert_true(prev > 0);

    /* Infinite capacity: exactly the blocks seen in an earlier request. */
    p.capacity_blocks = DANGO_CONDUCTOR_CAPACITY_INF;
    assert_dango_ok(dango_conductor_replay_cache(t, &p, &r));
    max = seen_earlier(t);
    assert_double_equal((double)r.hit_blocks / (double)r.total_blocks, max,
                        1e-12);
    assert_true(prev <= max);
    assert_int_equal(r.evictions, 0);

    /* Local caches: floor(C/N) each, RR serves them in turn. */
    p.capacity_blocks = 1000;
    p.instances       = 16;
    assert_dango_ok(dango_conductor_replay_cache(t, &p, &r));
    assert_int_equal(r.instances_used, 16);
    assert_true(r.per_instance[0] - r.per_instance[15] <= 1);
    dango_conductor_trace_destroy(t);
}

static void replay_conversation_invariants(void **state)
{
    replay_cache_invariants("conversation_trace.jsonl");
}

static void replay_synthetic_invariants(void **state)
{
    replay_cache_invariants("synthetic_trace.jsonl");
}

static void replay_aware_sends_conversation_to_one(void **state)
{
    dango_conductor_trace_t       *t = load_real("conversation_trace.jsonl");
    dango_conductor_cache_params_t p = {10000, 8, DANGO_CONDUCTOR_ROUTE_AWARE,
                                        0, 512};
    dango_conductor_cache_result_t r;

    if (t == NULL) {
        skip();
    }

    /* Every request shares its first block: after the first one the cache
     * that served it always has the longest match. */
    for (unsigned n = 2; n <= 16; n *= 2) {
        p.instances = n;
        assert_dango_ok(dango_conductor_replay_cache(t, &p, &r));
        assert_int_equal(r.instances_used, 1);
        assert_int_equal(r.per_instance[0], r.requests);
    }
    dango_conductor_trace_destroy(t);
}

static void replay_cache_rejects_bad_params(void **state)
{
    const char *name = write_tmp("{\"timestamp\": 0, \"input_length\": 6, "
                                 "\"output_length\": 1, \"hash_ids\": [1]}\n");
    dango_conductor_trace_t       *t;
    dango_conductor_cache_params_t p = {10, 0, DANGO_CONDUCTOR_ROUTE_RR, 0,
                                        512};
    dango_conductor_cache_result_t r;

    assert_dango_ok(dango_conductor_trace_load(name, NULL, NULL, &t));
    unlink(name);
    assert_dango_err(DANGO_EINVAL, dango_conductor_replay_cache(t, &p, &r));
    p.instances = DANGO_CONDUCTOR_MAX_INSTANCES + 1;
    assert_dango_err(DANGO_EINVAL, dango_conductor_replay_cache(t, &p, &r));
    p.instances  = 1;
    p.block_size = 0;
    assert_dango_err(DANGO_EINVAL, dango_conductor_replay_cache(t, &p, &r));
    p.block_size = 512;
    p.routing    = 9;
    assert_dango_err(DANGO_EINVAL, dango_conductor_replay_cache(t, &p, &r));
    dango_conductor_trace_destroy(t);
}

/* A trace of @n requests every @gap_ms sharing a 20-block system prompt,
 * then 4 own blocks each (ids unique per request). */
static const char *shared_prefix_trace(int n, int gap_ms, int out)
{
    size_t      cap = (size_t)n * 256 + 64, len = 0;
    char       *text = malloc(cap);
    const char *name;

    assert_non_null(text);
    for (int i = 0; i < n; i++) {
        len += (size_t)snprintf(text + len, cap - len,
                                "{\"timestamp\": %d, \"input_length\": %d, "
                                "\"output_length\": %d, \"hash_ids\": [",
                                i * gap_ms, 24 * 512, out);
        for (int b = 0; b < 24; b++) {
            len += (size_t)snprintf(text + len, cap - len, "%s%d", b ? "," : "",
                                    (b < 20) ? b : 1000 + i * 4 + b - 20);
        }
        len += (size_t)snprintf(text + len, cap - len, "]}\n");
    }
    name = write_tmp(text);
    free(text);
    return name;
}

static void sim_invariants_and_policies(void **state)
{
    const char                  *name = shared_prefix_trace(400, 200, 20);
    dango_conductor_trace_t     *t;
    dango_conductor_sim_params_t p;
    dango_conductor_sim_result_t r[4];

    assert_dango_ok(dango_conductor_trace_load(name, NULL, NULL, &t));
    unlink(name);
    dango_conductor_sim_params_init(&p);
    p.prefill      = 4;
    p.decode       = 2;
    p.cache_blocks = 1000;
    for (int pol = 0; pol < 4; pol++) {
        p.sched.policy = (dango_conductor_policy_t)pol;
        assert_dango_ok(dango_conductor_sim_run(t, &p, &r[pol]));
        assert_int_equal(r[pol].requests, 400);
        assert_int_equal(r[pol].completed + r[pol].rejected, 400);
        assert_int_equal(r[pol].rejected, 0);
        assert_true(r[pol].ttft_mean_s > 0);
        assert_true(r[pol].ttft_p50_s <= r[pol].ttft_p90_s);
        assert_true(r[pol].ttft_p90_s <= r[pol].ttft_p99_s);
        /* Reused blocks never exceed the shared prompt (20 of 24). */
        assert_true(r[pol].block_hit_rate <= 20.0 / 24.0 + 1e-9);
        assert_true(r[pol].tbt_mean_s >= 0.026);
        if (pol != DANGO_CONDUCTOR_POLICY_GLOBAL) {
            assert_int_equal(r[pol].transfers, 0);
        }
    }
    /* The prompt is cached after the first request on each instance:
     * cache-aware policies reuse nearly all of it and beat LOAD. */
    assert_true(r[DANGO_CONDUCTOR_POLICY_LOCAL].block_hit_rate > 0.8);
    assert_true(r[DANGO_CONDUCTOR_POLICY_GLOBAL].ttft_mean_s <=
                r[DANGO_CONDUCTOR_POLICY_LOAD].ttft_mean_s * 1.0001);
    assert_true(r[DANGO_CONDUCTOR_POLICY_LOCAL].prefill_mean_s <
                r[DANGO_CONDUCTOR_POLICY_RANDOM].prefill_mean_s * 1.0001);
    /* Every prefill instance ends up with the hot prefix (replicas). */
    assert_int_equal(r[DANGO_CONDUCTOR_POLICY_LOAD].replicas_top[0], 4);

    /* A tiny TTFT SLO rejects everything up front. */
    p.sched.ttft_slo_s = 1e-6;
    assert_dango_ok(dango_conductor_sim_run(t, &p, &r[0]));
    assert_int_equal(r[0].rejected, 400);
    assert_int_equal(r[0].rejected_by[DANGO_CONDUCTOR_REJECT_TTFT], 400);
    assert_double_equal(r[0].effective[0], 0.0, 1e-12);

    /* Output length 1: no decoding, no TBT. */
    p.sched.ttft_slo_s = 0;
    p.output_length    = 1;
    assert_dango_ok(dango_conductor_sim_run(t, &p, &r[0]));
    assert_int_equal(r[0].completed, 400);
    assert_double_equal(r[0].tbt_mean_s, 0.0, 1e-12);
    assert_double_equal(r[0].effective[0], 1.0, 1e-12);

    p.prefill = 0;
    assert_dango_err(DANGO_EINVAL, dango_conductor_sim_run(t, &p, &r[0]));
    p.prefill = 1;
    p.speed   = 0;
    assert_dango_err(DANGO_EINVAL, dango_conductor_sim_run(t, &p, &r[0]));
    dango_conductor_trace_destroy(t);
}

static void sim_overload_grows_queue(void **state)
{
    /* Arrivals every 10 ms of prompts of ~1.9 s each on one instance: the
     * queue, and so the mean TTFT, grows with the arrival rate. */
    const char                  *fast = shared_prefix_trace(60, 10, 2);
    dango_conductor_trace_t     *t;
    dango_conductor_sim_params_t p;
    dango_conductor_sim_result_t r1, r2;

    assert_dango_ok(dango_conductor_trace_load(fast, NULL, NULL, &t));
    unlink(fast);
    dango_conductor_sim_params_init(&p);
    p.prefill      = 1;
    p.decode       = 1;
    p.cache_blocks = 0; /* no cache: every prompt computed whole */
    assert_dango_ok(dango_conductor_sim_run(t, &p, &r1));
    p.speed = 0.001; /* 1000 times slower: no queueing at all */
    assert_dango_ok(dango_conductor_sim_run(t, &p, &r2));
    assert_double_equal(r2.ttft_mean_s,
                        1.162e-4 * 24 * 512 + 7.14e-10 * 24.0 * 512 * 24 * 512,
                        1e-6);
    assert_true(r1.ttft_mean_s > 10 * r2.ttft_mean_s);
    assert_true(r1.queue_mean_s > 0);
    assert_double_equal(r2.queue_mean_s, 0, 1e-9);
    dango_conductor_trace_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(trace_skips_malformed_lines),
        cmocka_unit_test(replay_conversation_invariants),
        cmocka_unit_test(replay_synthetic_invariants),
        cmocka_unit_test(replay_aware_sends_conversation_to_one),
        cmocka_unit_test(replay_cache_rejects_bad_params),
        cmocka_unit_test(sim_invariants_and_policies),
        cmocka_unit_test(sim_overload_grows_queue),
    };

    dango_test_quiet_logs();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
