/*
 * The scheduler: instances, the global index fed by KV events, Algorithm 1
 * under each policy, decode selection and early rejection.
 */
#include "conductor/conductor_int.h"

#include <math.h>
#include <string.h>

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

#define BS 512

/* A conductor with @np prefill (cache @cache blocks) and @nd decode
 * instances; ids 0..np-1 prefill, np.. decode. predict off unless asked. */
static dango_conductor_t *make(dango_conductor_policy_t pol, int np, int nd,
                               size_t cache, int predict)
{
    dango_conductor_params_t p;
    dango_conductor_t       *c;
    int                      id;

    dango_conductor_params_init(&p);
    p.policy     = pol;
    p.predict    = predict;
    p.field_mask = DANGO_CONDUCTOR_PARAM_POLICY | DANGO_CONDUCTOR_PARAM_PREDICT;
    assert_dango_ok(dango_conductor_create(&p, &c));
    for (int i = 0; i < np; i++) {
        char name[16];

        snprintf(name, sizeof(name), "p%d", i);
        assert_dango_ok(dango_conductor_instance_add(
            c, name, DANGO_CONDUCTOR_PREFILL, cache, 0, &id));
        assert_int_equal(id, i);
    }
    for (int i = 0; i < nd; i++) {
        char name[16];

        snprintf(name, sizeof(name), "d%d", i);
        assert_dango_ok(dango_conductor_instance_add(
            c, name, DANGO_CONDUCTOR_DECODE, 0, 0, &id));
        assert_int_equal(id, np + i);
    }
    return c;
}

/* A request of @n blocks keyed base, base+1, ... (full blocks). */
static dango_conductor_request_t req(uint64_t *keys, size_t n, uint64_t base)
{
    dango_conductor_request_t q;

    for (size_t i = 0; i < n; i++) {
        keys[i] = base + i;
    }
    q.keys          = keys;
    q.n_keys        = n;
    q.input_tokens  = n * BS;
    q.output_tokens = 100;
    return q;
}

static void instances_add_find_remove(void **state)
{
    dango_conductor_t *c = make(DANGO_CONDUCTOR_POLICY_GLOBAL, 2, 1, 100, 0);
    dango_conductor_instance_info_t info;
    int                             id;
    char                            long_name[DANGO_CONDUCTOR_NAME_MAX + 1];

    assert_dango_err(DANGO_EEXIST,
                     dango_conductor_instance_add(
                         c, "p0", DANGO_CONDUCTOR_PREFILL, 1, 0, &id));
    assert_dango_err(
        DANGO_EINVAL,
        dango_conductor_instance_add(c, "", DANGO_CONDUCTOR_DECODE, 0, 0, &id));
    memset(long_name, 'x', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    assert_dango_err(DANGO_EINVAL,
                     dango_conductor_instance_add(
                         c, long_name, DANGO_CONDUCTOR_DECODE, 0, 0, &id));
    assert_dango_err(DANGO_EINVAL,
                     dango_conductor_instance_add(c, "q", 7, 0, 0, &id));
    assert_int_equal(dango_conductor_instance_find(c, "d0"), 2);
    assert_dango_err(DANGO_ENOENT, dango_conductor_instance_find(c, "zz"));
    assert_dango_ok(dango_conductor_instance_info(c, 1, &info));
    assert_string_equal(info.name, "p1");
    assert_int_equal(info.cache_capacity, 100);
    assert_dango_ok(dango_conductor_instance_remove(c, 1));
    assert_dango_err(DANGO_ENOENT, dango_conductor_instance_remove(c, 1));
    assert_dango_err(DANGO_ENOENT, dango_conductor_instance_info(c, 1, &info));
    /* The freed id is reused. */
    assert_dango_ok(dango_conductor_instance_add(
        c, "p9", DANGO_CONDUCTOR_PREFILL, 1, 0, &id));
    assert_int_equal(id, 1);
    /* The table is bounded. */
    for (int i = 3; i < DANGO_CONDUCTOR_MAX_INSTANCES; i++) {
        char name[16];

        snprintf(name, sizeof(name), "x%d", i);
        assert_dango_ok(dango_conductor_instance_add(
            c, name, DANGO_CONDUCTOR_DECODE, 0, 0, &id));
    }
    assert_dango_err(DANGO_ENOSPC,
                     dango_conductor_instance_add(
                         c, "full", DANGO_CONDUCTOR_DECODE, 0, 0, &id));
    dango_conductor_destroy(c);
}

static void kv_events_feed_the_index(void **state)
{
    dango_conductor_t *c    = make(DANGO_CONDUCTOR_POLICY_GLOBAL, 3, 1, 4, 0);
    uint64_t           k[6] = {1, 2, 3, 4, 5, 6};

    assert_dango_ok(dango_conductor_kv_stored(c, 0, k, 3));
    assert_dango_ok(dango_conductor_kv_stored(c, 1, k, 2));
    assert_int_equal(dango_conductor_replicas(c, 1), 2);
    assert_int_equal(dango_conductor_replicas(c, 3), 1);
    assert_int_equal(dango_conductor_match(c, 0, k, 6), 3);
    assert_int_equal(dango_conductor_match(c, 1, k, 6), 2);
    assert_int_equal(dango_conductor_match(c, 2, k, 6), 0);
    /* Capacity 4: storing 4..6 on p0 evicts 1 and 2 there. */
    assert_dango_ok(dango_conductor_kv_stored(c, 0, k + 3, 3));
    assert_int_equal(dango_conductor_replicas(c, 1), 1);
    assert_int_equal(dango_conductor_match(c, 0, k, 6), 0);
    assert_dango_ok(dango_conductor_kv_removed(c, 1, k, 1));
    assert_int_equal(dango_conductor_replicas(c, 1), 0);
    assert_dango_ok(dango_conductor_kv_cleared(c, 0));
    assert_int_equal(dango_conductor_replicas(c, 5), 0);
    assert_dango_err(DANGO_ENOENT, dango_conductor_kv_stored(c, 3, k, 1));
    assert_dango_err(DANGO_ENOENT, dango_conductor_kv_stored(c, 77, k, 1));
    assert_dango_err(DANGO_EINVAL, dango_conductor_kv_stored(c, 0, NULL, 1));
    /* Removing an instance drops its blocks from the index. */
    assert_dango_ok(dango_conductor_kv_stored(c, 2, k, 2));
    assert_int_equal(dango_conductor_replicas(c, 2), 2);
    assert_dango_ok(dango_conductor_instance_remove(c, 2));
    assert_int_equal(dango_conductor_replicas(c, 2), 1);
    dango_conductor_destroy(c);
}

static void decide_rejects_bad_requests(void **state)
{
    dango_conductor_t *c = make(DANGO_CONDUCTOR_POLICY_GLOBAL, 1, 0, 10, 0);
    dango_conductor_decision_t dec;
    uint64_t                   k[4];
    dango_conductor_request_t  q = req(k, 4, 0);
    int                        id;

    assert_dango_err(DANGO_ENOENT, dango_conductor_decide(c, &q, 0, &dec));
    assert_dango_ok(dango_conductor_instance_add(c, "d", DANGO_CONDUCTOR_DECODE,
                                                 0, 0, &id));
    q.input_tokens = 0;
    assert_dango_err(DANGO_EINVAL, dango_conductor_decide(c, &q, 0, &dec));
    q.input_tokens = 3 * BS; /* 4 keys but only 3 blocks of input */
    assert_dango_err(DANGO_EINVAL, dango_conductor_decide(c, &q, 0, &dec));
    q.input_tokens = 4 * BS;
    q.n_keys       = DANGO_CONDUCTOR_MAX_BLOCKS + 1;
    assert_dango_err(DANGO_EINVAL, dango_conductor_decide(c, &q, 0, &dec));
    /* A prompt shorter than a block has no keys and is still placed. */
    q.keys         = NULL;
    q.n_keys       = 0;
    q.input_tokens = 100;
    assert_dango_ok(dango_conductor_decide(c, &q, 0, &dec));
    assert_int_equal(dec.reject, DANGO_CONDUCTOR_ACCEPT);
    assert_int_equal(dec.prefix_blocks, 0);
    dec.reject = DANGO_CONDUCTOR_REJECT_TTFT;
    assert_dango_err(DANGO_EINVAL, dango_conductor_commit(c, &q, &dec, 0));
    dango_conductor_destroy(c);
}

static void policy_random_spreads_by_seed(void **state)
{
    dango_conductor_t *c = make(DANGO_CONDUCTOR_POLICY_RANDOM, 4, 1, 10, 0);
    dango_conductor_decision_t dec;
    uint64_t                   k[2];
    dango_conductor_request_t  q       = req(k, 2, 0);
    int                        seen[4] = {0}, first[32];

    for (int i = 0; i < 32; i++) {
        assert_dango_ok(dango_conductor_decide(c, &q, 0, &dec));
        first[i] = dec.prefill;
        seen[dec.prefill]++;
        assert_int_equal(dec.transfer_blocks, 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_true(seen[i] > 0);
    }
    dango_conductor_destroy(c);
    /* The same seed gives the same sequence. */
    c = make(DANGO_CONDUCTOR_POLICY_RANDOM, 4, 1, 10, 0);
    for (int i = 0; i < 32; i++) {
        assert_dango_ok(dango_conductor_decide(c, &q, 0, &dec));
        assert_int_equal(dec.prefill, first[i]);
    }
    dango_conductor_destroy(c);
}

static void policy_load_takes_least_queue(void **state)
{
    dango_conductor_t *c = make(DANGO_CONDUCTOR_POLICY_LOAD, 3, 1, 100, 0);
    dango_conductor_decision_t dec;
    uint64_t                   k[8];
    dango_conductor_request_t  q = req(k, 8, 0);

    /* p0 holds the whole prefix but LOAD ignores caches. */
    assert_dango_ok(dango_conductor_kv_stored(c, 0, k, 8));
    c->inst[0].busy_until_s = 5;
    c->inst[1].busy_until_s = 2;
    c->inst[2].busy_until_s = 2.3;
    assert_dango_ok(dango_conductor_decide(c, &q, 0, &dec));
    assert_int_equal(dec.prefill, 1);
    assert_double_equal(dec.queue_s, 2.0, 1e-9);
    assert_int_equal(dec.prefix_blocks, 0);
    /* Commit grows the queue: the next request goes to p2. */
    assert_dango_ok(dango_conductor_commit(c, &q, &dec, 0));
    assert_dango_ok(dango_conductor_decide(c, &q, 0, &dec));
    assert_int_equal(dec.prefill, 2);
    dango_conductor_destroy(c);
}

static void policy_local_prefers_cache_without_transfer(void **state)
{
    dango_conductor_t *c = make(DANGO_CONDUCTOR_POLICY_LOCAL, 2, 1, 100, 0);
    dango_conductor_decision_t dec;
    uint64_t                   k[16];
    dango_conductor_request_t  q = req(k, 16, 0);

    assert_dango_ok(dango_conductor_kv_stored(c, 1, k, 12));
    assert_dango_ok(dango_conductor_decide(c, &q, 0, &dec));
    assert_int_equal(dec.prefill, 1);
    assert_int_equal(dec.local_blocks, 12);
    assert_int_equal(dec.prefix_blocks, 12);
    assert_int_equal(dec.best_instance, 1);
    assert_double_equal(dec.prefill_s,
                        dango_conductor_prefill_time(c, 16 * BS, 12 * BS),
                        1e-12);
    /* Busy holder: LOCAL recomputes on the idle instance, never fetches. */
    c->inst[1].busy_until_s = 100;
    assert_dango_ok(dango_conductor_decide(c, &q, 0, &dec));
    assert_int_equal(dec.prefill, 0);
    assert_int_equal(dec.prefix_blocks, 0);
    assert_int_equal(dec.transfer_blocks, 0);
    assert_int_equal(dec.transfer_from, -1);
    dango_conductor_destroy(c);
}

static int      repl_calls, repl_src, repl_dst;
static size_t   repl_n;
static uint64_t repl_first;

static void on_replicate(void *arg, int src, int dst, const uint64_t *keys,
                         size_t n)
{
    repl_calls++;
    repl_src   = src;
    repl_dst   = dst;
    repl_n     = n;
    repl_first = keys[0];
}

static void policy_global_fetches_and_replicates(void **state)
{
    dango_conductor_params_t   p;
    dango_conductor_t         *c;
    dango_conductor_decision_t dec;
    uint64_t                   k[16];
    dango_conductor_request_t  q = req(k, 16, 100);
    int                        id;

    dango_conductor_params_init(&p);
    p.replicate_cb = on_replicate;
    p.threshold    = 1.5;
    p.field_mask =
        DANGO_CONDUCTOR_PARAM_REPLICATE_CB | DANGO_CONDUCTOR_PARAM_THRESHOLD;
    assert_dango_ok(dango_conductor_create(&p, &c));
    assert_dango_ok(dango_conductor_instance_add(
        c, "p0", DANGO_CONDUCTOR_PREFILL, 100, 0, &id));
    assert_dango_ok(dango_conductor_instance_add(
        c, "p1", DANGO_CONDUCTOR_PREFILL, 100, 0, &id));
    assert_dango_ok(dango_conductor_instance_add(
        c, "d0", DANGO_CONDUCTOR_DECODE, 0, 0, &id));
    assert_dango_ok(dango_conductor_kv_stored(c, 0, k, 14));
    assert_dango_ok(dango_conductor_kv_stored(c, 1, k, 4));
    c->inst[0].busy_until_s = 100; /* the holder is busy */
    assert_dango_ok(dango_conductor_decide(c, &q, 0, &dec));
    assert_int_equal(dec.prefill, 1);
    assert_int_equal(dec.local_blocks, 4);
    assert_int_equal(dec.prefix_blocks, 14);
    assert_int_equal(dec.transfer_blocks, 10);
    assert_int_equal(dec.transfer_from, 0);
    assert_double_equal(dec.transfer_s, 10.0 * BS * 327680.0 / 100e9, 1e-12);
    assert_double_equal(dec.ttft_s, dec.transfer_s + dec.prefill_s, 1e-12);

    /* The commit asks for the copy and records the blocks on p1 (hot
     * blocks now have two replicas). */
    repl_calls = 0;
    assert_dango_ok(dango_conductor_commit(c, &q, &dec, 0));
    assert_int_equal(repl_calls, 1);
    assert_int_equal(repl_src, 0);
    assert_int_equal(repl_dst, 1);
    assert_int_equal(repl_n, 10);
    assert_int_equal(repl_first, 104);
    assert_int_equal(dango_conductor_replicas(c, 110), 2);
    assert_int_equal(dango_conductor_match(c, 1, k, 16), 16);

    /* Below the threshold (best 6 vs local 4: 6 <= 1.5 * 4) it recomputes. */
    assert_dango_ok(dango_conductor_kv_cleared(c, 1));
    assert_dango_ok(dango_conductor_kv_stored(c, 1, k, 4));
    assert_dango_ok(dango_conductor_kv_cleared(c, 0));
    assert_dango_ok(dango_conductor_kv_stored(c, 0, k, 6));
    c->inst[1].busy_until_s = 0;
    assert_dango_ok(dango_conductor_decide(c, &q, 0, &dec));
    assert_int_equal(dec.prefill, 1);
    assert_int_equal(dec.transfer_blocks, 0);
    assert_int_equal(dec.prefix_blocks, 4);
    dango_conductor_destroy(c);
}

static void decode_choice_and_early_rejection(void **state)
{
    dango_conductor_params_t   p;
    dango_conductor_t         *c;
    dango_conductor_decision_t dec;
    dango_conductor_stats_t    st;
    uint64_t                   k[4];
    dango_conductor_request_t  q = req(k, 4, 0);
    int                        id;

    dango_conductor_params_init(&p);
    p.ttft_slo_s = 1.0;
    p.tbt_slo_s  = 0.05;
    p.field_mask =
        DANGO_CONDUCTOR_PARAM_TTFT_SLO | DANGO_CONDUCTOR_PARAM_TBT_SLO;
    assert_dango_ok(dango_conductor_create(&p, &c));
    assert_dango_ok(dango_conductor_instance_add(
        c, "p", DANGO_CONDUCTOR_PREFILL, 10, 0, &id));
    assert_dango_ok(dango_conductor_instance_add(
        c, "d0", DANGO_CONDUCTOR_DECODE, 0, 100000, &id));
    assert_dango_ok(dango_conductor_instance_add(
        c, "d1", DANGO_CONDUCTOR_DECODE, 0, 2000000, &id));
    /* The decode with the smaller batch wins; TBT = t0 + t_kv (K + n). */
    assert_dango_ok(dango_conductor_decode_load_set(c, 1, 500000));
    assert_dango_ok(dango_conductor_decode_load_set(c, 2, 100000));
    assert_dango_ok(dango_conductor_decide(c, &q, 0, &dec));
    assert_int_equal(dec.decode, 2);
    assert_double_equal(dec.tbt_s, 0.026 + 3.3e-8 * (100000 + 4 * BS), 1e-12);
    assert_int_equal(dec.reject, DANGO_CONDUCTOR_ACCEPT);
    /* d0 has room only for 100000 tokens: the batch of d1 grows past d0's
     * but d0 cannot take it. */
    assert_dango_ok(dango_conductor_decode_load_set(c, 2, 600000));
    assert_dango_ok(dango_conductor_decide(c, &q, 0, &dec));
    assert_int_equal(dec.decode, 2);
    /* TBT above the SLO: rejected. */
    assert_dango_ok(dango_conductor_decode_load_set(c, 2, 1000000));
    assert_dango_ok(dango_conductor_decide(c, &q, 0, &dec));
    assert_int_equal(dec.reject, DANGO_CONDUCTOR_REJECT_TBT);
    /* No VRAM anywhere. */
    assert_dango_ok(dango_conductor_decode_load_set(c, 2, 1999999));
    assert_dango_ok(dango_conductor_decide(c, &q, 0, &dec));
    assert_int_equal(dec.reject, DANGO_CONDUCTOR_REJECT_VRAM);
    /* TTFT above the SLO: a long queue on the only prefill instance. */
    assert_dango_ok(dango_conductor_decode_load_set(c, 2, 0));
    c->inst[0].busy_until_s = 5;
    assert_dango_ok(dango_conductor_decide(c, &q, 1, &dec));
    assert_int_equal(dec.reject, DANGO_CONDUCTOR_REJECT_TTFT);
    assert_double_equal(dec.queue_s, 4.0, 1e-9);
    dango_conductor_stats(c, &st);
    assert_int_equal(st.rejected[DANGO_CONDUCTOR_REJECT_TTFT], 1);
    assert_int_equal(st.rejected[DANGO_CONDUCTOR_REJECT_TBT], 1);
    assert_int_equal(st.rejected[DANGO_CONDUCTOR_REJECT_VRAM], 1);
    assert_int_equal(st.decisions, 5);
    dango_conductor_destroy(c);
}

static void predicting_commit_reserves_and_records(void **state)
{
    dango_conductor_t *c = make(DANGO_CONDUCTOR_POLICY_GLOBAL, 2, 1, 100, 1);
    dango_conductor_decision_t      dec;
    dango_conductor_instance_info_t info;
    uint64_t                        k[8];
    dango_conductor_request_t       q = req(k, 8, 0);

    assert_dango_ok(dango_conductor_schedule(c, &q, 10, &dec));
    assert_int_equal(dec.prefill, 0);
    /* The blocks are recorded on p0 and its queue has grown. */
    assert_int_equal(dango_conductor_match(c, 0, k, 8), 8);
    assert_dango_ok(dango_conductor_instance_info(c, 0, &info));
    assert_double_equal(info.busy_until_s, 10 + dec.prefill_s, 1e-9);
    assert_dango_ok(dango_conductor_instance_info(c, 2, &info));
    assert_int_equal(info.decode_tokens, 8 * BS + 100);
    /* The same prompt again reuses the prefix on p0 (idle again later). */
    assert_dango_ok(dango_conductor_decide(c, &q, 1000, &dec));
    assert_int_equal(dec.prefill, 0);
    assert_int_equal(dec.local_blocks, 8);
    assert_true(dec.prefix_tokens == 8 * BS - 1);
    /* Release, once; then the reservation is gone. */
    assert_dango_ok(dango_conductor_decode_release(c, 2, 8 * BS + 100));
    assert_dango_err(DANGO_ENOENT,
                     dango_conductor_decode_release(c, 2, 8 * BS + 100));
    assert_dango_err(DANGO_ENOENT, dango_conductor_decode_release(c, 0, 1));
    dango_conductor_destroy(c);
}

static void params_are_checked(void **state)
{
    dango_conductor_params_t p;
    dango_conductor_t       *c;

    dango_conductor_params_init(&p);
    p.threshold  = 0.5;
    p.field_mask = DANGO_CONDUCTOR_PARAM_THRESHOLD;
    assert_dango_err(DANGO_EINVAL, dango_conductor_create(&p, &c));
    dango_conductor_params_init(&p);
    p.bandwidth_Bps = 0;
    p.field_mask    = DANGO_CONDUCTOR_PARAM_BANDWIDTH;
    assert_dango_err(DANGO_EINVAL, dango_conductor_create(&p, &c));
    /* A field outside the mask keeps its default. */
    p.field_mask = 0;
    assert_dango_ok(dango_conductor_create(&p, &c));
    assert_double_equal(dango_conductor_params(c)->bandwidth_Bps, 100e9, 1);
    dango_conductor_destroy(c);
    assert_dango_err(DANGO_EINVAL, dango_conductor_create(NULL, NULL));
    {
        dango_conductor_policy_t pol;

        assert_dango_ok(dango_conductor_policy_parse("GLOBAL", &pol));
        assert_int_equal(pol, DANGO_CONDUCTOR_POLICY_GLOBAL);
        assert_dango_err(DANGO_EINVAL,
                         dango_conductor_policy_parse("best", &pol));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(instances_add_find_remove),
        cmocka_unit_test(kv_events_feed_the_index),
        cmocka_unit_test(decide_rejects_bad_requests),
        cmocka_unit_test(policy_random_spreads_by_seed),
        cmocka_unit_test(policy_load_takes_least_queue),
        cmocka_unit_test(policy_local_prefers_cache_without_transfer),
        cmocka_unit_test(policy_global_fetches_and_replicates),
        cmocka_unit_test(decode_choice_and_early_rejection),
        cmocka_unit_test(predicting_commit_reserves_and_records),
        cmocka_unit_test(params_are_checked),
    };

    dango_test_quiet_logs();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
