/*
 * The store client end to end: an embedded master on 127.0.0.1:0 and three
 * clients in this process, each with its own transfer engine and a
 * contributed segment (so replicas land in all three and same-host reads
 * use shared memory, or a plain copy for a client's own segment).
 *
 * Groups (argv[1] is a cmocka test filter; CTest runs one entry per group):
 *   data_*       put/get of 1 B .. 16 MiB from every client, bytes checked;
 *                get_alloc, ERANGE, EOBJ_EXISTS, upsert, remove
 *   batch_*      batch put/get with per-key results
 *   registered_* put_from / get_into and registered batches
 *   parts_*      scatter-gather put/get (batch_put_parts / get_parts) and
 *                ranged gets, registered or not, checksum on and off
 *   replicas_*   replica_num 2 and 3 on distinct segments; commit words
 *   corrupt_*    a flipped byte in one replica (fallback to the other) and
 *                in all of them (DANGO_ECORRUPT, never wrong bytes)
 *   cache_*      the location cache: gets served without the master, a
 *                remove by another client waiting for cached readers, a
 *                bad cached location falling back to the master
 *   meta_*       exist, size, remove (lease), list, stat, pool stat,
 *                remove_by_regex / remove_all, lease expiry
 *   mooncake_*   the Mooncake C API round trip
 *   threads_*    8 threads putting and getting 64 KiB values (ops/s shown)
 *   restart_*    a master restart (remount, and the object table rebuilt
 *                from the nodes' reports), a master that comes up
 *                after the client (mounted by the ping thread), a peer
 *                restart (reopen) and a node killed outright (reads fall
 *                back to the other replica; the node is this program run
 *                as "--node")
 * Every test gets a fresh cluster.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dango_test.h"

#include <dango/config.h>
#include <dango/mooncake_store_c.h>
#include <dango/store.h>
#include <dango/store_master.h>

#define NCLIENTS 3
#define SEG_SIZE (64u << 20)
#define MIB      (1u << 20)

/* Mirrors the record header of src/store/store_proto.h (public tests may
 * not include module headers): magic, version, key_len, value_len,
 * checksum, put_id, hdr_checksum, commit, reserved. */
typedef struct rec_hdr {
    uint32_t magic;
    uint16_t version;
    uint16_t key_len;
    uint64_t value_len;
    uint64_t checksum;
    uint64_t put_id;
    uint64_t hdr_checksum;
    uint64_t commit;
    uint8_t  reserved[16];
} rec_hdr_t;

#define REC_COMMIT_XOR 0xc0331e7dc0331e7dull

static uint64_t rec_value_off(size_t key_len)
{
    return 64 + ((key_len + 63) & ~(size_t)63);
}

typedef struct cluster {
    dango_store_master_t *m;
    char                  maddr[64];
    const char           *lease_ttl;
    const char           *cache_time; /* MASTER_LOCATION_CACHE_TIME */
    dango_store_client_t *c[NCLIENTS];
} cluster_t;

static cluster_t K;

/* ---------- helpers ---------- */

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static void fill(void *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    uint8_t *p = buf;
    size_t   i = 0;

    for (; i + 8 <= len; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + i, &x, 8);
    }

    for (; i < len; i++) {
        p[i] = (uint8_t)(seed + i);
    }
}

static void *make_value(size_t len, uint64_t seed)
{
    void *v = malloc(len ? len : 1);

    assert_non_null(v);
    fill(v, len, seed);
    return v;
}

static int master_start(const char *listen)
{
    dango_config_t *cfg;
    int             rc;

    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "MASTER_LISTEN", listen));
    assert_dango_ok(dango_config_set(cfg, "MASTER_ADMIN_LISTEN", ""));
    if (K.lease_ttl != NULL) {
        assert_dango_ok(dango_config_set(cfg, "MASTER_LEASE_TTL", K.lease_ttl));
    }
    if (K.cache_time != NULL) {
        assert_dango_ok(
            dango_config_set(cfg, "MASTER_LOCATION_CACHE_TIME", K.cache_time));
    }

    rc = dango_store_master_create(cfg, &K.m);
    dango_config_release(cfg);
    if (rc == 0) {
        snprintf(K.maddr, sizeof(K.maddr), "%s", dango_store_master_addr(K.m));
    }

    return rc;
}

/* A client with one option set beyond the test defaults (@opt NULL: none). */
static int client_start_opt(const char *listen, const char *opt,
                            const char *val, dango_store_client_t **c_p)
{
    dango_store_params_t p = {0};
    dango_config_t      *cfg;
    int                  rc;

    assert_dango_ok(dango_config_read(NULL, &cfg));
    if (opt != NULL) {
        assert_dango_ok(dango_config_set(cfg, opt, val));
    }

    assert_dango_ok(dango_config_set(cfg, "STORE_LOCAL_BUFFER_SIZE", "16MiB"));
    assert_dango_ok(dango_config_set(cfg, "STORE_PING_INTERVAL", "100ms"));
    assert_dango_ok(dango_config_set(cfg, "STORE_RPC_TIMEOUT", "10s"));
    p.field_mask = DANGO_STORE_PARAM_MASTER | DANGO_STORE_PARAM_SEGMENT_SIZE |
                   DANGO_STORE_PARAM_LISTEN;
    p.master_addr  = K.maddr;
    p.segment_size = SEG_SIZE;
    p.listen_addr  = listen;
    rc             = dango_store_client_create(&p, cfg, c_p);
    dango_config_release(cfg);
    return rc;
}

static int client_start(const char *listen, dango_store_client_t **c_p)
{
    return client_start_opt(listen, NULL, NULL, c_p);
}

static int cluster_setup(void **state)
{
    assert_dango_ok(master_start("127.0.0.1:0"));
    for (int i = 0; i < NCLIENTS; i++) {
        assert_dango_ok(client_start("127.0.0.1:0", &K.c[i]));
        assert_dango_ok(dango_store_health(K.c[i]));
    }

    return 0;
}

static int cluster_setup_short_lease(void **state)
{
    K.lease_ttl = "1ms";
    return cluster_setup(state);
}

static int cluster_setup_cache(void **state)
{
    K.cache_time = "300ms";
    return cluster_setup(state);
}

static int cluster_teardown(void **state)
{
    for (int i = 0; i < NCLIENTS; i++) {
        dango_store_client_destroy(K.c[i]);
        K.c[i] = NULL;
    }

    dango_store_master_destroy(K.m);
    K.m          = NULL;
    K.lease_ttl  = NULL;
    K.cache_time = NULL;
    return 0;
}

/* Gets @key through @c and checks it against fill(@len, @seed). */
static void check_get(dango_store_client_t *c, const char *key, size_t len,
                      uint64_t seed)
{
    void    *want = make_value(len, seed);
    char    *got  = malloc(len + 64);
    uint64_t size = 0;
    int64_t  rc;

    assert_non_null(got);
    rc = dango_store_get(c, key, got, len + 64, &size);
    if (rc != (int64_t)len) {
        fail_msg("get %s through %s: %lld (%s), expected %zu", key,
                 dango_store_client_name(c), (long long)rc,
                 dango_err_name((int)rc), len);
    }

    assert_int_equal(len, size);
    if (memcmp(want, got, len) != 0) {
        fail_msg("get %s through %s: wrong bytes", key,
                 dango_store_client_name(c));
    }

    free(want);
    free(got);
}

/* Waits until every client mounted and the master sees @segments. */
static void wait_segments(dango_store_client_t *c, uint64_t segments)
{
    uint64_t deadline = now_ns() + 15000000000ull;

    for (;;) {
        dango_store_pool_info_t pi;

        if ((dango_store_pool_stat(c, &pi) == 0) && (pi.segments == segments)) {
            return;
        }

        if (now_ns() > deadline) {
            fail_msg("the master never saw %lu segments",
                     (unsigned long)segments);
        }

        sleep_ms(50);
    }
}

/* ---------- data ---------- */

static const size_t sizes[] = {1,
                               2,
                               63,
                               64,
                               65,
                               1000,
                               4095,
                               4096,
                               (64 << 10) - 1,
                               64 << 10,
                               (64 << 10) + 1,
                               300000,
                               MIB + 3,
                               4 * MIB,
                               16 * MIB};

static void data_sizes_every_client(void **state)
{
    for (size_t s = 0; s < DANGO_ARRAY_SIZE(sizes); s++) {
        char  key[64];
        void *v = make_value(sizes[s], s + 1);

        snprintf(key, sizeof(key), "data/%zu", sizes[s]);
        assert_dango_ok(
            dango_store_put(K.c[s % NCLIENTS], key, v, sizes[s], NULL));
        for (int i = 0; i < NCLIENTS; i++) {
            check_get(K.c[i], key, sizes[s], s + 1);
        }

        /* An existing key keeps its value. */
        assert_dango_err(DANGO_EOBJ_EXISTS,
                         dango_store_put(K.c[0], key, "x", 1, NULL));
        check_get(K.c[1], key, sizes[s], s + 1);
        assert_int_equal((int64_t)sizes[s], dango_store_size(K.c[2], key));
        free(v);
    }
}

static void data_alloc_and_range(void **state)
{
    void    *v = make_value(100000, 7), *got = NULL;
    size_t   len = 0;
    char     small[10];
    uint64_t size = 0;

    assert_dango_ok(dango_store_put(K.c[0], "alloc/1", v, 100000, NULL));
    for (int i = 0; i < NCLIENTS; i++) {
        assert_dango_ok(dango_store_get_alloc(K.c[i], "alloc/1", &got, &len));
        assert_int_equal(100000, len);
        assert_memory_equal(v, got, len);
        dango_store_free(got);
    }

    assert_dango_err(
        DANGO_ERANGE,
        (int)dango_store_get(K.c[1], "alloc/1", small, sizeof(small), &size));
    assert_int_equal(100000, size);
    assert_dango_err(DANGO_ENO_OBJECT,
                     (int)dango_store_get(K.c[1], "alloc/none", small,
                                          sizeof(small), &size));
    assert_dango_err(DANGO_ENO_OBJECT,
                     dango_store_get_alloc(K.c[2], "alloc/none", &got, &len));
    free(v);
}

static void data_upsert_and_remove(void **state)
{
    void *v1 = make_value(5000, 1), *v2 = make_value(70000, 2);

    assert_dango_ok(dango_store_upsert(K.c[0], "u/1", v1, 5000, NULL));
    check_get(K.c[1], "u/1", 5000, 1);
    assert_dango_ok(dango_store_upsert(K.c[2], "u/1", v2, 70000, NULL));
    check_get(K.c[0], "u/1", 70000, 2);
    check_get(K.c[1], "u/1", 70000, 2);
    assert_int_equal(1, dango_store_exist(K.c[0], "u/1"));
    assert_dango_ok(dango_store_remove(K.c[0], "u/1", 1));
    assert_int_equal(0, dango_store_exist(K.c[0], "u/1"));
    assert_dango_err(DANGO_ENO_OBJECT, dango_store_remove(K.c[1], "u/1", 1));
    /* A removed key can be put again. */
    assert_dango_ok(dango_store_put(K.c[1], "u/1", v1, 5000, NULL));
    check_get(K.c[2], "u/1", 5000, 1);
    free(v1);
    free(v2);
}

/* ---------- batch ---------- */

#define NB 40

static void batch_put_get(void **state)
{
    const char *keys[NB + 1];
    char        names[NB + 1][32];
    const void *vals[NB];
    size_t      lens[NB + 1];
    void       *bufs[NB + 1];
    int         res[NB];
    int64_t     gres[NB + 1];

    for (int i = 0; i < NB; i++) {
        snprintf(names[i], sizeof(names[i]), "batch/%d", i);
        keys[i] = names[i];
        lens[i] = 1 + (size_t)i * 7919 + (i % 5 == 0 ? 200000 : 0);
        vals[i] = make_value(lens[i], 100 + i);
    }

    assert_dango_ok(
        dango_store_batch_put(K.c[1], NB, keys, vals, lens, 0, NULL, res));
    for (int i = 0; i < NB; i++) {
        assert_dango_ok(res[i]);
    }

    /* Again: every key exists. */
    assert_dango_ok(
        dango_store_batch_put(K.c[0], NB, keys, vals, lens, 0, NULL, res));
    for (int i = 0; i < NB; i++) {
        assert_int_equal(DANGO_EOBJ_EXISTS, res[i]);
    }

    snprintf(names[NB], sizeof(names[NB]), "batch/missing");
    keys[NB] = names[NB];
    for (int i = 0; i <= NB; i++) {
        size_t want = (i < NB) ? lens[i] : 16;

        bufs[i] = malloc(want + 8);
        assert_non_null(bufs[i]);
    }

    for (int i = 0; i <= NB; i++) {
        lens[i] = (i < NB) ? lens[i] + 8 : 24;
    }

    lens[3] = 1; /* too small */
    assert_dango_ok(dango_store_batch_get(K.c[2], NB + 1, keys,
                                          (void *const *)bufs, lens, 0, gres));
    for (int i = 0; i < NB; i++) {
        size_t len = 1 + (size_t)i * 7919 + (i % 5 == 0 ? 200000 : 0);

        if (i == 3) {
            assert_int_equal(DANGO_ERANGE, gres[i]);
            continue;
        }

        assert_int_equal((int64_t)len, gres[i]);
        assert_memory_equal(vals[i], bufs[i], len);
    }

    assert_int_equal(DANGO_ENO_OBJECT, gres[NB]);
    for (int i = 0; i <= NB; i++) {
        free(bufs[i]);
        if (i < NB) {
            free((void *)vals[i]);
        }
    }
}

/* ---------- registered ---------- */

static void registered_put_from_get_into(void **state)
{
    size_t      rlen = 40 * MIB;
    char       *src = malloc(rlen), *dst = malloc(rlen);
    const char *keys[4] = {"reg/b0", "reg/b1", "reg/b2", "reg/b3"};
    const void *vals[4];
    void       *outs[4];
    size_t      lens[4] = {1, 4096, 2 * MIB, 5 * MIB};
    int         res[4];
    int64_t     gres[4];
    size_t      off = 0;

    assert_non_null(src);
    assert_non_null(dst);
    fill(src, rlen, 42);
    assert_dango_ok(dango_store_register_buffer(K.c[0], src, rlen));
    assert_dango_ok(dango_store_register_buffer(K.c[2], dst, rlen));

    for (size_t s = 0; s < DANGO_ARRAY_SIZE(sizes); s++) {
        char key[64];

        snprintf(key, sizeof(key), "reg/%zu", sizes[s]);
        assert_dango_ok(
            dango_store_put_from(K.c[0], key, src + s, sizes[s], NULL));
        memset(dst, 0, sizes[s]);
        assert_int_equal(
            (int64_t)sizes[s],
            dango_store_get_into(K.c[2], key, dst + 64, rlen - 64));
        assert_memory_equal(src + s, dst + 64, sizes[s]);
        /* Not registered on that client. */
        assert_dango_err(DANGO_ENOTREG,
                         (int)dango_store_get_into(K.c[1], key, dst, rlen));
    }

    for (int i = 0; i < 4; i++) {
        vals[i] = src + off;
        outs[i] = dst + off;
        off += lens[i] + 100;
    }

    assert_dango_ok(
        dango_store_batch_put(K.c[0], 4, keys, vals, lens, 1, NULL, res));
    for (int i = 0; i < 4; i++) {
        assert_dango_ok(res[i]);
    }

    memset(dst, 0, off);
    assert_dango_ok(dango_store_batch_get(K.c[2], 4, keys, (void *const *)outs,
                                          lens, 1, gres));
    for (int i = 0; i < 4; i++) {
        assert_int_equal((int64_t)lens[i], gres[i]);
        assert_memory_equal(vals[i], outs[i], lens[i]);
    }

    assert_dango_ok(dango_store_unregister_buffer(K.c[0], src));
    assert_dango_ok(dango_store_unregister_buffer(K.c[2], dst));
    free(src);
    free(dst);
}

/* ---------- parts and ranges ---------- */

/* Splits @len bytes at @base into parts of the lengths in @cut (repeated
 * until @len is used up; zero lengths included); returns the count. */
static size_t split(char *base, size_t len, const size_t *cut, size_t ncut,
                    dango_store_iov_t *parts, size_t max)
{
    size_t n = 0, off = 0;

    while ((off < len) && (n < max)) {
        size_t l = cut[n % ncut];

        l        = (l > len - off) ? len - off : l;
        parts[n] = (dango_store_iov_t){base + off, l};
        off += l;
        n++;
    }

    assert_int_equal(len, off);
    return n;
}

static void parts_put_get_every_client(void **state)
{
    static const size_t      put_cut[] = {1, 0, 4095, 65543, 1000000};
    static const size_t      get_cut[] = {77777, 0, 3, 500000};
    size_t                   len = 3 * MIB + 11, blen = len + 4096;
    char                    *v = make_value(len, 31), *reg = malloc(blen);
    char                    *out = malloc(blen);
    dango_store_iov_t        pp[64], gp[64];
    const char              *keys[2] = {"parts/copied", "parts/registered"};
    const dango_store_iov_t *pl[2]   = {pp, pp};
    size_t                   pn[2], gn;
    int                      res[2];
    int64_t                  gres;

    assert_non_null(reg);
    assert_non_null(out);
    memcpy(reg, v, len);
    assert_dango_ok(dango_store_register_buffer(K.c[0], reg, blen));

    /* Gathered through staging, then from registered memory. */
    pn[0] = split(v, len, put_cut, DANGO_ARRAY_SIZE(put_cut), pp, 64);
    assert_dango_ok(
        dango_store_batch_put_parts(K.c[0], 1, keys, pl, pn, 0, NULL, res));
    assert_dango_ok(res[0]);
    pn[1] = split(reg, len, put_cut, DANGO_ARRAY_SIZE(put_cut), pp, 64);
    assert_dango_ok(dango_store_batch_put_parts(
        K.c[0], 1, keys + 1, pl, pn + 1, DANGO_STORE_REGISTERED, NULL, res));
    assert_dango_ok(res[0]);
    for (int k = 0; k < 2; k++) {
        check_get(K.c[1], keys[k], len, 31);
    }

    /* Scattered into unregistered parts through every client (own
     * replica, shared memory); then into registered ones. */
    for (int i = 0; i < NCLIENTS; i++) {
        for (int k = 0; k < 2; k++) {
            const dango_store_iov_t *gl = gp;

            memset(out, 0, blen);
            gn = split(out, blen, get_cut, DANGO_ARRAY_SIZE(get_cut), gp, 64);
            assert_dango_ok(dango_store_batch_get_parts(K.c[i], 1, keys + k,
                                                        &gl, &gn, 0, &gres));
            assert_int_equal((int64_t)len, gres);
            assert_memory_equal(v, out, len);
        }
    }

    assert_dango_ok(dango_store_register_buffer(K.c[2], out, blen));
    for (int i = 0; i < NCLIENTS; i += 2) {
        const dango_store_iov_t *gl = gp;

        memset(out, 0, blen);
        gn   = split(out, blen, get_cut, DANGO_ARRAY_SIZE(get_cut), gp, 64);
        gres = 0;
        assert_dango_ok(dango_store_batch_get_parts(
            K.c[i], 1, keys, &gl, &gn, (i == 2) ? DANGO_STORE_REGISTERED : 0,
            &gres));
        assert_int_equal((int64_t)len, gres);
        assert_memory_equal(v, out, len);
    }

    /* Parts too small for the object; unregistered parts with the flag. */
    {
        const dango_store_iov_t *gl = gp;

        gn = split(out, len - 1, get_cut, DANGO_ARRAY_SIZE(get_cut), gp, 64);
        assert_dango_ok(
            dango_store_batch_get_parts(K.c[1], 1, keys, &gl, &gn, 0, &gres));
        assert_int_equal(DANGO_ERANGE, gres);
        assert_dango_ok(dango_store_batch_get_parts(
            K.c[1], 1, keys, &gl, &gn, DANGO_STORE_REGISTERED, &gres));
        assert_int_equal(DANGO_ENOTREG, gres);
    }

    /* Bad arguments: no parts, all-empty value, unknown flag, NULL base;
     * and an upsert replaces the value. */
    pn[0] = 0;
    assert_dango_ok(
        dango_store_batch_put_parts(K.c[0], 1, keys, pl, pn, 0, NULL, res));
    assert_dango_err(DANGO_EINVAL, res[0]);
    pp[0] = (dango_store_iov_t){v, 0};
    pn[0] = 1;
    assert_dango_ok(
        dango_store_batch_put_parts(K.c[0], 1, keys, pl, pn, 0, NULL, res));
    assert_dango_err(DANGO_EINVAL, res[0]);
    pp[0] = (dango_store_iov_t){NULL, 5};
    assert_dango_ok(
        dango_store_batch_put_parts(K.c[0], 1, keys, pl, pn, 0, NULL, res));
    assert_dango_err(DANGO_EINVAL, res[0]);
    assert_dango_err(DANGO_EINVAL,
                     dango_store_batch_put_parts(K.c[0], 1, keys, pl, pn,
                                                 1u << 7, NULL, res));
    pp[0] = (dango_store_iov_t){v + 5, 1000};
    pp[1] = (dango_store_iov_t){v + 9, 24};
    pn[0] = 2;
    assert_dango_ok(
        dango_store_batch_put_parts(K.c[2], 1, keys, pl, pn, 0, NULL, res));
    assert_dango_err(DANGO_EOBJ_EXISTS, res[0]);
    assert_dango_ok(dango_store_batch_put_parts(K.c[2], 1, keys, pl, pn,
                                                DANGO_STORE_UPSERT, NULL, res));
    assert_dango_ok(res[0]);
    memset(out, 0, 1024);
    assert_int_equal(1024, dango_store_get(K.c[1], keys[0], out, blen, NULL));
    assert_memory_equal(v + 5, out, 1000);
    assert_memory_equal(v + 9, out + 1000, 24);

    assert_dango_ok(dango_store_unregister_buffer(K.c[0], reg));
    assert_dango_ok(dango_store_unregister_buffer(K.c[2], out));
    free(v);
    free(reg);
    free(out);
}

/* Ranges of @key through @c into @out (registered when @flags says so),
 * checked against @v. */
static void check_ranges(dango_store_client_t *c, const char *key,
                         const char *v, size_t len, char *out, unsigned flags)
{
    dango_store_range_t r[5] = {
        {0, out, 1},
        {len - 1, out + 16, 1},
        {4096, out + 64, 0},
        {1000, out + 128, 70000},
        {1000, out + 128 + 70000, 3}, /* overlaps the one before */
    };
    const dango_store_range_t *rl = r;
    size_t                     rn = 5;
    int64_t                    res;

    memset(out, 0, 128 + 70003);
    assert_dango_ok(
        dango_store_batch_get_ranges(c, 1, &key, &rl, &rn, flags, &res));
    assert_int_equal(1 + 1 + 70000 + 3, res);
    assert_int_equal(v[0], out[0]);
    assert_int_equal(v[len - 1], out[16]);
    assert_memory_equal(v + 1000, out + 128, 70000);
    assert_memory_equal(v + 1000, out + 128 + 70000, 3);

    /* A range that ends past the object. */
    r[1].len = 2;
    assert_dango_ok(
        dango_store_batch_get_ranges(c, 1, &key, &rl, &rn, flags, &res));
    assert_int_equal(DANGO_ERANGE, res);
}

static void parts_ranges(void **state)
{
    size_t                    len = 200000;
    char                     *v = make_value(len, 32), *out = malloc(MIB);
    dango_store_client_t     *nv = NULL;
    dango_store_object_info_t info;
    const char               *key = "ranges/1";

    assert_non_null(out);
    assert_dango_ok(dango_store_put(K.c[1], key, v, len, NULL));
    for (int i = 0; i < NCLIENTS; i++) {
        check_ranges(K.c[i], key, v, len, out, 0);
    }

    assert_dango_ok(dango_store_register_buffer(K.c[2], out, MIB));
    check_ranges(K.c[2], key, v, len, out, DANGO_STORE_REGISTERED);

    /* Checksums off: only the ranges travel (straight into registered
     * memory). */
    assert_dango_ok(
        client_start_opt("127.0.0.1:0", "STORE_VERIFY_CHECKSUM", "no", &nv));
    check_ranges(nv, key, v, len, out + MIB / 2, 0);
    assert_dango_ok(dango_store_unregister_buffer(K.c[2], out));
    assert_dango_ok(dango_store_register_buffer(nv, out, MIB));
    check_ranges(nv, key, v, len, out, DANGO_STORE_REGISTERED);
    dango_store_client_destroy(nv);

    /* A flipped byte outside every range still fails the whole read. */
    assert_dango_ok(dango_store_stat(K.c[0], key, &info));
    assert_int_equal(1, info.num_replicas);
    ((char *)(uintptr_t)info.replicas[0]
         .addr)[rec_value_off(strlen(key)) + len / 2] ^= 0x40;
    {
        dango_store_range_t        r  = {0, out, 10};
        const dango_store_range_t *rl = &r;
        size_t                     rn = 1;
        int64_t                    res;

        assert_dango_ok(
            dango_store_batch_get_ranges(K.c[0], 1, &key, &rl, &rn, 0, &res));
        assert_int_equal(DANGO_ECORRUPT, res);
    }

    free(v);
    free(out);
}

/* ---------- replicas ---------- */

static const rec_hdr_t *replica_hdr(const dango_store_replica_info_t *r)
{
    return (const rec_hdr_t *)(uintptr_t)r->addr;
}

static void replicas_on_distinct_segments(void **state)
{
    dango_store_replicate_config_t cfg = {0};
    dango_store_object_info_t      info;
    void                          *v = make_value(MIB, 9);

    for (unsigned n = 2; n <= 3; n++) {
        char key[32];

        snprintf(key, sizeof(key), "rep/%u", n);
        cfg.replica_num = n;
        assert_dango_ok(dango_store_put(K.c[0], key, v, MIB, &cfg));
        assert_dango_ok(dango_store_stat(K.c[1], key, &info));
        assert_int_equal(MIB, info.size);
        assert_int_equal(n, info.num_replicas);
        for (unsigned a = 0; a < n; a++) {
            assert_true(info.replicas[a].complete);
            for (unsigned b = a + 1; b < n; b++) {
                assert_string_not_equal(info.replicas[a].segment,
                                        info.replicas[b].segment);
            }
        }

        for (int i = 0; i < NCLIENTS; i++) {
            check_get(K.c[i], key, MIB, 9);
        }
    }

    free(v);
}

static void replicas_commit_words(void **state)
{
    dango_store_replicate_config_t cfg = {.replica_num = 3};
    dango_store_object_info_t      info;
    uint64_t                       deadline;
    void                          *v = make_value(12345, 3);

    assert_dango_ok(dango_store_put(K.c[1], "commit/1", v, 12345, &cfg));
    assert_dango_ok(dango_store_stat(K.c[0], "commit/1", &info));
    assert_int_equal(3, info.num_replicas);

    /* All segments are in this process: read the records directly. */
    deadline = now_ns() + 5000000000ull;
    for (unsigned a = 0; a < info.num_replicas; a++) {
        const rec_hdr_t *h = replica_hdr(&info.replicas[a]);

        assert_int_equal(0x424f4744u, h->magic);
        assert_int_equal(12345, h->value_len);
        assert_int_equal(strlen("commit/1"), h->key_len);
        while (__atomic_load_n(&h->commit, __ATOMIC_ACQUIRE) !=
               (h->put_id ^ REC_COMMIT_XOR)) {
            if (now_ns() > deadline) {
                fail_msg("commit word of replica %u never written", a);
            }

            sleep_ms(1);
        }
    }

    free(v);
}

/* ---------- corruption ---------- */

static void corrupt_one_replica_falls_back(void **state)
{
    dango_store_replicate_config_t cfg = {.replica_num = 2};
    dango_store_object_info_t      info;
    const char                    *key = "corrupt/one";
    size_t                         len = 100000;
    void                          *v   = make_value(len, 11);
    char                          *p;

    assert_dango_ok(dango_store_put(K.c[0], key, v, len, &cfg));
    assert_dango_ok(dango_store_stat(K.c[0], key, &info));
    assert_int_equal(2, info.num_replicas);

    /* Flip a value byte of the first replica, in its owner's memory. */
    p = (char *)(uintptr_t)info.replicas[0].addr + rec_value_off(strlen(key));
    p[1234] ^= 0x20;

    /* Every reader gets the right bytes, from the other replica. */
    for (int i = 0; i < NCLIENTS; i++) {
        check_get(K.c[i], key, len, 11);
    }

    /* Once someone read the bad one, it was reported and dropped. */
    assert_dango_ok(dango_store_stat(K.c[0], key, &info));
    assert_true(info.num_replicas >= 1);
    free(v);
}

static void corrupt_all_replicas_detected(void **state)
{
    dango_store_replicate_config_t cfg = {.replica_num = 2};
    dango_store_object_info_t      info;
    const char                    *key = "corrupt/all";
    size_t                         len = 300000;
    void                          *v   = make_value(len, 12);
    char                          *got = malloc(len);
    void                          *alloc;
    size_t                         alen;

    assert_dango_ok(dango_store_put(K.c[1], key, v, len, &cfg));
    assert_dango_ok(dango_store_stat(K.c[1], key, &info));
    assert_int_equal(2, info.num_replicas);
    for (unsigned a = 0; a < 2; a++) {
        char *p = (char *)(uintptr_t)info.replicas[a].addr +
                  rec_value_off(strlen(key));

        p[len - 1 - a] ^= 0x01;
    }

    assert_dango_err(DANGO_ECORRUPT,
                     (int)dango_store_get(K.c[2], key, got, len, NULL));
    /* Both were reported: nothing readable is left. */
    alloc = NULL;
    assert_true(dango_store_get_alloc(K.c[0], key, &alloc, &alen) < 0);
    assert_null(alloc);

    /* A damaged header (the key) is caught as well. */
    assert_dango_ok(dango_store_put(K.c[1], "corrupt/hdr", v, 1000, NULL));
    assert_dango_ok(dango_store_stat(K.c[1], "corrupt/hdr", &info));
    ((char *)(uintptr_t)info.replicas[0].addr)[64] ^= 0x01;
    assert_dango_err(DANGO_ECORRUPT, (int)dango_store_get(K.c[0], "corrupt/hdr",
                                                          got, len, NULL));
    free(got);
    free(v);
}

/* ---------- location cache ---------- */

/* Within MASTER_LOCATION_CACHE_TIME (300 ms here) a client that read a key
 * reads it again without the master; then it must ask. */
static void cache_get_without_master(void **state)
{
    size_t   len = 70000;
    void    *v   = make_value(len, 41);
    char     got[16];
    uint64_t t0;

    assert_dango_ok(dango_store_put(K.c[0], "cache/1", v, len, NULL));
    check_get(K.c[1], "cache/1", len, 41);
    t0 = now_ns();
    dango_store_master_destroy(K.m);
    K.m = NULL;
    check_get(K.c[1], "cache/1", len, 41);
    if (now_ns() - t0 > 250000000ull) {
        skip(); /* too slow a machine to tell within the window */
    }

    /* A client that never read it has nothing cached. */
    assert_true(dango_store_get(K.c[2], "cache/1", got, sizeof(got), NULL) < 0);
    sleep_ms(350);
    assert_true(dango_store_get(K.c[1], "cache/1", got, sizeof(got), NULL) < 0);
    free(v);
}

/* A forced remove by another client returns only once no cached location
 * of the object can be used: the reader then finds it gone. */
static void cache_remove_by_another_client(void **state)
{
    size_t   len = 70000;
    void    *v   = make_value(len, 42);
    char    *got = malloc(len);
    uint64_t t0;

    assert_dango_ok(dango_store_put(K.c[0], "cache/2", v, len, NULL));
    t0 = now_ns();
    check_get(K.c[1], "cache/2", len, 42);
    assert_dango_ok(dango_store_remove(K.c[2], "cache/2", 1));
    /* It waited for the reader's window: 300 ms from the master's answer
     * to the read (ms granularity). */
    assert_true(now_ns() - t0 >= 299000000ull);
    assert_dango_err(DANGO_ENO_OBJECT,
                     (int)dango_store_get(K.c[1], "cache/2", got, len, NULL));
    /* An upsert waits the same way and is seen at once after. */
    assert_dango_ok(dango_store_put(K.c[0], "cache/2", v, len, NULL));
    check_get(K.c[1], "cache/2", len, 42);
    free(v);
    v = make_value(len / 2, 43);
    assert_dango_ok(dango_store_upsert(K.c[2], "cache/2", v, len / 2, NULL));
    check_get(K.c[1], "cache/2", len / 2, 43);
    free(got);
    free(v);
}

/* A cached location whose bytes went bad is not an error of its own: the
 * key is asked of the master, which lists the same replica first; that
 * read fails too, is reported, and the other replica serves the get. */
static void cache_bad_location_falls_back(void **state)
{
    dango_store_replicate_config_t cfg = {.replica_num = 2};
    dango_store_object_info_t      info;
    const char                    *key = "cache/3";
    size_t                         len = 100000;
    void                          *v   = make_value(len, 44);
    dango_store_client_t          *r   = NULL;
    char                          *p;

    assert_dango_ok(dango_store_put(K.c[0], key, v, len, &cfg));
    assert_dango_ok(dango_store_stat(K.c[0], key, &info));
    assert_int_equal(2, info.num_replicas);
    /* A reader owning neither replica tries them in the master's order. */
    for (int i = 0; (i < NCLIENTS) && (r == NULL); i++) {
        const char *name = dango_store_client_name(K.c[i]);

        if ((strcmp(name, info.replicas[0].segment) != 0) &&
            (strcmp(name, info.replicas[1].segment) != 0)) {
            r = K.c[i];
        }
    }
    assert_non_null(r);
    check_get(r, key, len, 44); /* its locations are cached now */

    p = (char *)(uintptr_t)info.replicas[0].addr + rec_value_off(strlen(key));
    p[777] ^= 0x40;
    check_get(r, key, len, 44);
    assert_dango_ok(dango_store_stat(K.c[0], key, &info));
    assert_int_equal(1, info.num_replicas);
    free(v);
}

/* ---------- metadata ---------- */

static int count_cb(void *arg, const char *key, uint64_t size)
{
    (*(int *)arg)++;
    return 0;
}

static int stop_cb(void *arg, const char *key, uint64_t size)
{
    (*(int *)arg)++;
    return 42;
}

static void meta_exist_size_list_remove(void **state)
{
    const char             *keys[3] = {"meta/1", "meta/none", "meta/2"};
    int                     res[3];
    int                     n = 0;
    char                    key[32], buf[16];
    dango_store_pool_info_t pi;

    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "meta/%d", i);
        assert_dango_ok(
            dango_store_put(K.c[i % NCLIENTS], key, key, strlen(key), NULL));
    }

    assert_dango_ok(dango_store_put(K.c[0], "other/1", "x", 1, NULL));
    assert_int_equal(1, dango_store_exist(K.c[1], "meta/1"));
    assert_int_equal(0, dango_store_exist(K.c[1], "meta/none"));
    assert_dango_ok(dango_store_batch_exist(K.c[2], 3, keys, res));
    assert_int_equal(1, res[0]);
    assert_int_equal(0, res[1]);
    assert_int_equal(1, res[2]);
    assert_int_equal(6, dango_store_size(K.c[0], "meta/1"));
    assert_dango_err(DANGO_ENO_OBJECT, (int)dango_store_size(K.c[0], "meta/x"));

    assert_dango_ok(dango_store_list(K.c[0], "meta/", count_cb, &n));
    assert_int_equal(30, n);
    n = 0;
    assert_dango_ok(dango_store_list(K.c[0], NULL, count_cb, &n));
    assert_int_equal(31, n);
    n = 0;
    assert_int_equal(42, dango_store_list(K.c[0], "", stop_cb, &n));
    assert_int_equal(1, n);

    assert_dango_ok(dango_store_pool_stat(K.c[1], &pi));
    assert_int_equal(NCLIENTS, pi.segments);
    assert_true(pi.capacity >= (uint64_t)NCLIENTS * (SEG_SIZE - MIB));
    assert_int_equal(31, pi.keys);
    assert_true(pi.used > 0);

    /* A read grants a lease: remove waits for it unless forced. */
    assert_int_equal(6,
                     dango_store_get(K.c[1], "meta/1", buf, sizeof(buf), NULL));
    assert_dango_err(DANGO_ELEASE_HELD,
                     dango_store_remove(K.c[0], "meta/1", 0));
    assert_dango_ok(dango_store_remove(K.c[0], "meta/1", 1));
    assert_dango_ok(dango_store_batch_remove(K.c[0], 3, keys, 1, res));
    assert_int_equal(DANGO_ENO_OBJECT, res[0]);
    assert_int_equal(DANGO_ENO_OBJECT, res[1]);
    assert_dango_ok(res[2]);

    assert_int_equal(10,
                     dango_store_remove_by_regex(K.c[2], "^meta/1[0-9]$", 1));
    assert_int_equal(0,
                     dango_store_remove_by_regex(K.c[2], "^meta/1[0-9]$", 1));
    n = 0;
    assert_dango_ok(dango_store_list(K.c[0], "meta/", count_cb, &n));
    assert_int_equal(18, n);
    assert_int_equal(19, dango_store_remove_all(K.c[1], 1));
    n = 0;
    assert_dango_ok(dango_store_list(K.c[0], "", count_cb, &n));
    assert_int_equal(0, n);
}

static void meta_lease_expired(void **state)
{
    const char *keys[3] = {"lease/0", "lease/1", "lease/2"};
    void       *bufs[3];
    size_t      lens[3];
    int64_t     res[3];
    void       *v = make_value(16 * MIB, 1);

    /* A lease of 1 ms ends before 48 MiB can be read and checked. */
    for (int i = 0; i < 3; i++) {
        assert_dango_ok(dango_store_put(K.c[i], keys[i], v, 16 * MIB, NULL));
        bufs[i] = malloc(16 * MIB);
        lens[i] = 16 * MIB;
    }

    assert_dango_ok(dango_store_batch_get(K.c[1], 3, keys, bufs, lens, 0, res));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(DANGO_ELEASE_EXPIRED, res[i]);
        free(bufs[i]);
    }

    free(v);
}

/* ---------- Mooncake ---------- */

static void mooncake_round_trip(void **state)
{
    mooncake_store_t            s       = mooncake_store_create();
    mooncake_replicate_config_t cfg     = {.replica_num = 2};
    size_t                      rlen    = 8 * MIB;
    char                       *reg     = malloc(rlen);
    const char                 *keys[3] = {"mc/b0", "mc/b1", "mc/b2"};
    void                       *bufs[3] = {reg, reg + MIB, reg + 2 * MIB};
    size_t                      lens[3] = {10, 1000, 500000};
    int                         res[3];
    int64_t                     gres[3];
    char                        name[128];
    char                        small[4];

    assert_non_null(s);
    assert_int_equal(0, mooncake_store_setup(s, "127.0.0.1", "P2PHANDSHAKE",
                                             32 * MIB, 16 * MIB, "tcp", "",
                                             K.maddr));
    assert_int_equal(0, mooncake_store_health_check(s));
    assert_int_equal(0, mooncake_store_get_hostname(s, name, sizeof(name)));
    assert_int_equal(0, strncmp(name, "127.0.0.1:", 10));

    assert_int_equal(0, mooncake_store_put(s, "mc/1", "hello", 5, NULL));
    assert_int_equal(0, mooncake_store_put(s, "mc/1", "other", 5, NULL));
    assert_int_equal(1, mooncake_store_is_exist(s, "mc/1"));
    assert_int_equal(0, mooncake_store_is_exist(s, "mc/none"));
    assert_int_equal(5, mooncake_store_get_size(s, "mc/1"));
    assert_int_equal(-704, mooncake_store_get_size(s, "mc/none"));

    assert_int_equal(0, mooncake_store_register_buffer(s, reg, rlen));
    assert_int_equal(5, mooncake_store_get_into(s, "mc/1", reg, rlen));
    assert_memory_equal("hello", reg, 5);
    assert_int_equal(-704, mooncake_store_get_into(s, "mc/none", reg, rlen));
    assert_int_equal(-600, mooncake_store_get_into(s, "mc/1", small, 4));
    assert_int_equal(-10, mooncake_store_get_into(s, "mc/1", reg, 4));

    /* The object a native client wrote, and back. */
    {
        char b[16];

        assert_int_equal(5,
                         dango_store_get(K.c[0], "mc/1", b, sizeof(b), NULL));
        assert_memory_equal("hello", b, 5);
    }

    fill(reg, rlen, 5);
    assert_int_equal(0,
                     mooncake_store_put_from(s, "mc/big", reg, 3 * MIB, &cfg));
    check_get(K.c[2], "mc/big", 3 * MIB, 5);

    assert_int_equal(
        0, mooncake_store_batch_put_from(s, keys, bufs, lens, 3, &cfg, res));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(0, res[i]);
    }

    memset(reg + 4 * MIB, 0, 4 * MIB);
    {
        void *outs[3] = {reg + 4 * MIB, reg + 5 * MIB, reg + 6 * MIB};

        assert_int_equal(
            0, mooncake_store_batch_get_into(s, keys, outs, lens, 3, gres));
        for (int i = 0; i < 3; i++) {
            assert_int_equal((int64_t)lens[i], gres[i]);
            assert_memory_equal(bufs[i], outs[i], lens[i]);
        }
    }

    assert_int_equal(0, mooncake_store_batch_is_exist(s, keys, 3, res));
    assert_int_equal(1, res[2]);
    assert_int_equal(-706, mooncake_store_remove(s, "mc/b0", 0));
    assert_int_equal(0, mooncake_store_remove(s, "mc/b0", 1));
    assert_int_equal(-704, mooncake_store_remove(s, "mc/b0", 1));
    assert_int_equal(2, mooncake_store_remove_by_regex(s, "^mc/b[0-9]$", 1));
    assert_true(mooncake_store_remove_all(s, 1) >= 2);
    assert_int_equal(0, mooncake_store_unregister_buffer(s, reg));
    mooncake_store_destroy(s);
    free(reg);
}

/* ---------- threads ---------- */

#define NTHREADS 8
#define TVAL     (64u << 10)
#define TROUNDS  250

typedef struct worker {
    int      id;
    unsigned ops;
    uint64_t deadline;
    int      failed;
    int      rc;
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    char     *v = malloc(TVAL), *got = malloc(TVAL);
    char      key[64];

    /* Bounded: removed regions stay parked while leased (10 s), so the
     * pool (3 x 64 MiB) must hold everything written. */
    for (unsigned i = 0; (i < TROUNDS) && (now_ns() < w->deadline); i++) {
        dango_store_client_t *wc = K.c[w->id % NCLIENTS];
        dango_store_client_t *rc = K.c[(w->id + 1) % NCLIENTS];
        int64_t               n;

        snprintf(key, sizeof(key), "t/%d/%u", w->id, i);
        fill(v, TVAL, (uint64_t)w->id << 32 | i);
        w->rc = dango_store_put(wc, key, v, TVAL, NULL);
        if (w->rc != 0) {
            w->failed = 1;
            break;
        }

        n = dango_store_get(rc, key, got, TVAL, NULL);
        if ((n != TVAL) || (memcmp(v, got, TVAL) != 0)) {
            w->rc     = (int)n;
            w->failed = 2;
            break;
        }

        w->ops++;
    }

    free(v);
    free(got);
    return NULL;
}

static void threads_put_get_64k(void **state)
{
    pthread_t th[NTHREADS];
    worker_t  w[NTHREADS];
    uint64_t  t0 = now_ns(), total = 0;
    double    secs;

    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (worker_t){.id = i, .deadline = t0 + 3000000000ull};
        assert_int_equal(0, pthread_create(&th[i], NULL, worker_main, &w[i]));
    }

    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        if (w[i].failed) {
            fail_msg("worker %d failed at step %d: %s", i, w[i].failed,
                     dango_err_name(w[i].rc));
        }

        total += w[i].ops;
    }

    secs = (double)(now_ns() - t0) / 1e9;
    print_message("%d threads, 64 KiB: %.0f put+get rounds/s "
                  "(%.2f GB/s put+get)\n",
                  NTHREADS, (double)total / secs,
                  2.0 * (double)total * TVAL / secs / 1e9);
    assert_true(total > 0);
}

/* ---------- restarts ---------- */

#define NREB 40

static size_t reb_len(int i)
{
    return 1 + (size_t)i * 12347 + ((i % 7 == 0) ? MIB : 0);
}

/*
 * A restarted master rebuilds its object table from what the nodes report
 * on remount: every committed object comes back with its bytes and its
 * replicas, the value an upsert replaced and removed objects do not, and
 * new puts (whose ids must stay above the old ones) work as before.
 */
static void restart_master_rebuilds(void **state)
{
    dango_store_replicate_config_t cfg = {.replica_num = 2};
    dango_store_object_info_t      info;
    dango_store_pool_info_t        pi;
    char                           listen[64], key[32];
    void                          *v1 = make_value(5000, 1);
    void                          *v2 = make_value(70000, 2);

    wait_segments(K.c[0], NCLIENTS);
    for (int i = 0; i < NREB; i++) {
        void *v = make_value(reb_len(i), 500 + i);

        snprintf(key, sizeof(key), "reb/%d", i);
        cfg.replica_num = 1 + (i % 2);
        assert_dango_ok(
            dango_store_put(K.c[i % NCLIENTS], key, v, reb_len(i), &cfg));
        free(v);
    }

    assert_dango_ok(dango_store_put(K.c[0], "reb/upsert", v1, 5000, NULL));
    assert_dango_ok(dango_store_upsert(K.c[1], "reb/upsert", v2, 70000, NULL));
    assert_dango_ok(dango_store_put(K.c[2], "reb/gone", v1, 5000, &cfg));
    assert_dango_ok(dango_store_remove(K.c[0], "reb/gone", 1));
    assert_dango_ok(dango_store_put(K.c[0], "reb/ugone", v1, 5000, NULL));
    assert_dango_ok(dango_store_upsert(K.c[0], "reb/ugone", v2, 70000, NULL));
    assert_dango_ok(dango_store_remove(K.c[2], "reb/ugone", 1));

    /* Pings carry the removed records to their nodes (100 ms period). */
    sleep_ms(500);
    snprintf(listen, sizeof(listen), "%s", K.maddr);
    dango_store_master_destroy(K.m);
    K.m = NULL;
    sleep_ms(300);
    assert_true(dango_store_health(K.c[1]) != 0);
    assert_dango_ok(master_start(listen));
    wait_segments(K.c[2], NCLIENTS);
    for (int i = 0; i < NCLIENTS; i++) {
        assert_dango_ok(dango_store_health(K.c[i]));
    }

    for (int i = 0; i < NREB; i++) {
        snprintf(key, sizeof(key), "reb/%d", i);
        check_get(K.c[(i + 1) % NCLIENTS], key, reb_len(i), 500 + i);
        assert_dango_ok(dango_store_stat(K.c[0], key, &info));
        assert_int_equal(1 + (i % 2), info.num_replicas);
    }

    check_get(K.c[2], "reb/upsert", 70000, 2);
    assert_int_equal(0, dango_store_exist(K.c[0], "reb/gone"));
    assert_int_equal(0, dango_store_exist(K.c[1], "reb/ugone"));
    assert_dango_ok(dango_store_pool_stat(K.c[0], &pi));
    assert_int_equal(NREB + 1, pi.keys);

    /* The rebuilt table takes new puts, upserts and removes. */
    assert_dango_ok(dango_store_put(K.c[1], "reb/new", v2, 70000, &cfg));
    check_get(K.c[0], "reb/new", 70000, 2);
    assert_dango_ok(dango_store_upsert(K.c[2], "reb/0", v1, 5000, NULL));
    check_get(K.c[1], "reb/0", 5000, 1);
    assert_dango_err(DANGO_EOBJ_EXISTS,
                     dango_store_put(K.c[0], "reb/1", v1, 5000, NULL));
    assert_dango_ok(dango_store_remove(K.c[0], "reb/2", 1));
    assert_int_equal(0, dango_store_exist(K.c[1], "reb/2"));
    free(v1);
    free(v2);
}

static void restart_peer_reopen(void **state)
{
    dango_store_replicate_config_t cfg = {0};
    char                           name[128];
    const char                    *pref[1] = {name};
    void                          *v       = make_value(256 << 10, 21);
    int                            rc      = -1;

    snprintf(name, sizeof(name), "%s", dango_store_client_name(K.c[2]));
    cfg.replica_num        = 1;
    cfg.preferred_segments = pref;
    cfg.preferred_count    = 1;

    /* Clients 0 and 1 talk to client 2's segment. */
    assert_dango_ok(dango_store_put(K.c[0], "peer/1", v, 256 << 10, &cfg));
    check_get(K.c[1], "peer/1", 256 << 10, 21);

    /* Client 2 restarts on the same address: a new instance. */
    dango_store_client_destroy(K.c[2]);
    K.c[2] = NULL;
    assert_dango_ok(client_start(name, &K.c[2]));
    assert_string_equal(name, dango_store_client_name(K.c[2]));
    wait_segments(K.c[0], NCLIENTS);

    /* A write into the restarted peer may fail once (its old regions are
     * not retried); the handle is reopened and the next one works. */
    for (int i = 0; (i < 3) && (rc != 0); i++) {
        char key[32];

        snprintf(key, sizeof(key), "peer/2/%d", i);
        rc = dango_store_put(K.c[0], key, v, 256 << 10, &cfg);
        if (rc == 0) {
            dango_store_object_info_t info;

            assert_dango_ok(dango_store_stat(K.c[0], key, &info));
            assert_string_equal(name, info.replicas[0].segment);
            /* A reader with a stale handle reopens within the call. */
            check_get(K.c[1], key, 256 << 10, 21);
        }
    }

    assert_dango_ok(rc);
    free(v);
}

static void restart_master_comes_late(void **state)
{
    dango_store_client_t *late = NULL;
    char                  listen[64];
    uint64_t              deadline;

    /* Nothing listens at the master address when the client starts. */
    snprintf(listen, sizeof(listen), "%s", K.maddr);
    for (int i = 0; i < NCLIENTS; i++) {
        dango_store_client_destroy(K.c[i]);
        K.c[i] = NULL;
    }

    dango_store_master_destroy(K.m);
    K.m = NULL;
    assert_dango_ok(client_start("127.0.0.1:0", &late));
    assert_dango_err(DANGO_EPEER_GONE, dango_store_health(late));

    /* The master comes up: the ping thread mounts the segment. */
    assert_dango_ok(master_start(listen));
    wait_segments(late, 1);
    deadline = now_ns() + 5000000000ull;
    while (dango_store_health(late) != 0) {
        assert_true(now_ns() < deadline);
        sleep_ms(20);
    }

    assert_dango_ok(dango_store_put(late, "late/1", "v", 1, NULL));
    assert_int_equal(1, dango_store_size(late, "late/1"));
    K.c[0] = late;
}

/* A node in another process: this program with --node <master>. */
typedef struct node_proc {
    pid_t pid;
    int   in_fd;
    char  name[128];
} node_proc_t;

static void node_spawn(node_proc_t *n)
{
    int   in[2], out[2];
    FILE *f;

    assert_int_equal(0, pipe(in));
    assert_int_equal(0, pipe(out));
    n->pid = fork();
    assert_true(n->pid >= 0);
    if (n->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        execl("/proc/self/exe", "node", "--node", K.maddr, (char *)NULL);
        _exit(127);
    }

    close(in[0]);
    close(out[1]);
    n->in_fd = in[1];
    f        = fdopen(out[0], "r");
    assert_non_null(f);
    assert_non_null(fgets(n->name, sizeof(n->name), f));
    n->name[strcspn(n->name, "\n")] = '\0';
    fclose(f);
}

static int node_main(const char *master)
{
    dango_store_params_t  p = {0};
    dango_store_client_t *c;
    char                  buf[16];

    p.field_mask   = DANGO_STORE_PARAM_MASTER | DANGO_STORE_PARAM_SEGMENT_SIZE;
    p.master_addr  = master;
    p.segment_size = 16 * MIB;
    if (dango_store_client_create(&p, NULL, &c) != 0) {
        return 1;
    }

    printf("%s\n", dango_store_client_name(c));
    fflush(stdout);
    while (read(0, buf, sizeof(buf)) > 0) {
    }

    dango_store_client_destroy(c);
    return 0;
}

static void restart_dead_node_fallback(void **state)
{
    dango_store_replicate_config_t cfg = {.replica_num = 2};
    dango_store_object_info_t      info;
    node_proc_t                    node;
    const char                    *pref[1];
    void                          *v       = make_value(200000, 31);
    int                            on_node = 0;

    node_spawn(&node);
    wait_segments(K.c[0], NCLIENTS + 1);
    pref[0]                = node.name;
    cfg.preferred_segments = pref;
    cfg.preferred_count    = 1;
    assert_dango_ok(dango_store_put(K.c[0], "dead/1", v, 200000, &cfg));
    assert_dango_ok(dango_store_stat(K.c[0], "dead/1", &info));
    assert_int_equal(2, info.num_replicas);
    for (unsigned a = 0; a < 2; a++) {
        on_node += strcmp(info.replicas[a].segment, node.name) == 0;
    }

    assert_int_equal(1, on_node);
    check_get(K.c[1], "dead/1", 200000, 31); /* opens the node's segment */

    /* The node dies without a word: reads go to the other replica. */
    kill(node.pid, SIGKILL);
    waitpid(node.pid, NULL, 0);
    close(node.in_fd);
    for (int i = 0; i < NCLIENTS; i++) {
        check_get(K.c[i], "dead/1", 200000, 31);
    }

    /* The preferred (first) replica was tried, reported and dropped. */
    assert_dango_ok(dango_store_stat(K.c[0], "dead/1", &info));
    assert_int_equal(1, info.num_replicas);
    assert_string_not_equal(node.name, info.replicas[0].segment);
    free(v);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
#define T(_f)                                                                  \
    cmocka_unit_test_setup_teardown(_f, cluster_setup, cluster_teardown)
        T(data_sizes_every_client),
        T(data_alloc_and_range),
        T(data_upsert_and_remove),
        T(batch_put_get),
        T(registered_put_from_get_into),
        T(parts_put_get_every_client),
        T(parts_ranges),
        T(replicas_on_distinct_segments),
        T(replicas_commit_words),
        T(corrupt_one_replica_falls_back),
        T(corrupt_all_replicas_detected),
        T(meta_exist_size_list_remove),
        cmocka_unit_test_setup_teardown(
            meta_lease_expired, cluster_setup_short_lease, cluster_teardown),
        T(mooncake_round_trip),
        T(threads_put_get_64k),
        T(restart_master_rebuilds),
        T(restart_peer_reopen),
        T(restart_dead_node_fallback),
        T(restart_master_comes_late),
#define TC(_f)                                                                 \
    cmocka_unit_test_setup_teardown(_f, cluster_setup_cache, cluster_teardown)
        TC(cache_get_without_master),
        TC(cache_remove_by_another_client),
        TC(cache_bad_location_falls_back),
#undef TC
#undef T
    };

    if ((argc > 2) && (strcmp(argv[1], "--node") == 0)) {
        return node_main(argv[2]);
    }

    dango_test_quiet_logs();
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }

    return cmocka_run_group_tests(tests, NULL, NULL);
}
