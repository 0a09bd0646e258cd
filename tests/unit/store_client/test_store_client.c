/*
 * Store client without a master: every argument check with its exact code,
 * options and parameters, the errors a client gets when nothing listens at
 * the master address (promptly, within the timeouts the test sets), the
 * record helpers of store_proto.h, which keys KV events name blocks, the
 * Mooncake C API's argument checks and its translation of Dango codes into
 * Mooncake ErrorCode numbers, and an OOM walk over create.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The module's private header first: it names the log component. */
#include "store/store_client_int.h"
#include "store/store_proto.h"

#include "dango_test.h"

#include <dango/config.h>
#include <dango/mooncake_store_c.h>
#include <dango/store.h>
#include "common/alloc.h"
#include "common/time.h"

/* "127.0.0.1:<port>" where nothing listens (a port just released). */
static void dead_addr(char *buf, size_t len)
{
    struct sockaddr_in sa = {0};
    socklen_t          sl = sizeof(sa);
    int                fd = socket(AF_INET, SOCK_STREAM, 0);

    sa.sin_family      = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(0, bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
    assert_int_equal(0, getsockname(fd, (struct sockaddr *)&sa, &sl));
    snprintf(buf, len, "127.0.0.1:%u", ntohs(sa.sin_port));
    close(fd);
}

static dango_config_t *test_config(void)
{
    dango_config_t *cfg;

    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "STORE_RPC_TIMEOUT", "2s"));
    assert_dango_ok(dango_config_set(cfg, "STORE_CONNECT_TIMEOUT", "1s"));
    assert_dango_ok(dango_config_set(cfg, "STORE_LOCAL_BUFFER_SIZE", "1MiB"));
    assert_dango_ok(dango_config_set(cfg, "STORE_PING_INTERVAL", "100ms"));
    assert_dango_ok(dango_config_set(cfg, "XFER_LISTEN", "127.0.0.1:0"));
    return cfg;
}

/* A client whose master does not exist. */
static dango_store_client_t *client_nomaster(uint64_t segment_size)
{
    dango_store_params_t  p   = {0};
    dango_store_client_t *c   = NULL;
    dango_config_t       *cfg = test_config();
    char                  addr[64];

    dead_addr(addr, sizeof(addr));
    p.field_mask   = DANGO_STORE_PARAM_MASTER | DANGO_STORE_PARAM_SEGMENT_SIZE;
    p.master_addr  = addr;
    p.segment_size = segment_size;
    assert_dango_ok(dango_store_client_create(&p, cfg, &c));
    dango_config_release(cfg);
    return c;
}

static int is_unreachable(int rc)
{
    return (rc == DANGO_ECONNREFUSED) || (rc == DANGO_EPEER_GONE);
}

/* ---------- create ---------- */

static void create_rejects_bad_params(void **state)
{
    dango_store_params_t  p   = {0};
    dango_store_client_t *c   = NULL;
    dango_config_t       *cfg = test_config();

    assert_dango_err(DANGO_EINVAL, dango_store_client_create(NULL, cfg, NULL));

    p.field_mask   = DANGO_STORE_PARAM_SEGMENT_SIZE;
    p.segment_size = 1000; /* below 1 KiB */
    assert_dango_err(DANGO_EINVAL, dango_store_client_create(&p, cfg, &c));
    assert_null(c);

    p.segment_size = (1ull << 40) + 1;
    assert_dango_err(DANGO_EINVAL, dango_store_client_create(&p, cfg, &c));
    assert_null(c);

    p.field_mask        = DANGO_STORE_PARAM_BUFFER_SIZE;
    p.local_buffer_size = (1ull << 40) + 1;
    assert_dango_err(DANGO_EINVAL, dango_store_client_create(&p, cfg, &c));

    p.field_mask  = DANGO_STORE_PARAM_MASTER;
    p.master_addr = "no-port-here";
    assert_dango_err(DANGO_EINVAL, dango_store_client_create(&p, cfg, &c));
    assert_null(c);

    p.field_mask = DANGO_STORE_PARAM_TRANSPORTS;
    p.transports = "carrier-pigeon";
    assert_dango_err(DANGO_EINVAL, dango_store_client_create(&p, cfg, &c));
    assert_null(c);
    dango_config_release(cfg);
}

static void create_rejects_bad_options(void **state)
{
    dango_store_client_t *c   = NULL;
    dango_config_t       *cfg = test_config();

    assert_dango_err(DANGO_ECONFIG,
                     dango_config_set(cfg, "STORE_SEGMENT_SIZE", "lots"));
    assert_dango_err(DANGO_ECONFIG,
                     dango_config_set(cfg, "STORE_VERIFY_CHECKSUM", "maybe"));
    assert_dango_ok(dango_config_set(cfg, "STORE_REPLICA_NUM", "9"));
    assert_dango_err(DANGO_ECONFIG, dango_store_client_create(NULL, cfg, &c));
    assert_dango_ok(dango_config_set(cfg, "STORE_REPLICA_NUM", "0"));
    assert_dango_err(DANGO_ECONFIG, dango_store_client_create(NULL, cfg, &c));
    assert_dango_ok(dango_config_set(cfg, "STORE_REPLICA_NUM", "2"));
    assert_dango_ok(dango_config_set(cfg, "STORE_TRANSFER_TIMEOUT", "0"));
    assert_dango_err(DANGO_ECONFIG, dango_store_client_create(NULL, cfg, &c));
    assert_null(c);
    dango_config_release(cfg);
}

static void options_are_listed(void **state)
{
    char buf[64];

    assert_dango_ok(dango_config_get(NULL, "STORE_MASTER", buf, sizeof(buf)));
    assert_string_equal("127.0.0.1:50051", buf);
    assert_dango_ok(
        dango_config_get(NULL, "STORE_LOCAL_BUFFER_SIZE", buf, sizeof(buf)));
    assert_dango_ok(
        dango_config_get(NULL, "STORE_PING_FAILURES", buf, sizeof(buf)));
    assert_string_equal("3", buf);
}

/* ---------- no master ---------- */

static void master_down_at_create(void **state)
{
    dango_store_client_t *c  = client_nomaster(1 << 20);
    uint64_t              t0 = dango_time_ns();
    char                  v[4096];
    uint64_t              size = 1;
    int                   rc;

    assert_non_null(dango_store_client_name(c));
    assert_dango_err(DANGO_EPEER_GONE, dango_store_health(c));

    rc = dango_store_put(c, "k", "v", 1, NULL);
    assert_true(is_unreachable(rc));
    rc = (int)dango_store_get(c, "k", v, sizeof(v), &size);
    assert_true(is_unreachable(rc));
    assert_int_equal(0, size);
    rc = dango_store_exist(c, "k");
    assert_true(is_unreachable(rc));
    rc = (int)dango_store_size(c, "k");
    assert_true(is_unreachable(rc));
    rc = dango_store_remove(c, "k", 0);
    assert_true(is_unreachable(rc));
    rc = (int)dango_store_remove_all(c, 1);
    assert_true(is_unreachable(rc));

    /* Refused connections fail at once, not after the call timeout. */
    assert_true(dango_time_ns() - t0 < 2 * DANGO_NSEC_PER_SEC);
    dango_store_client_destroy(c);
}

static int list_cb(void *arg, const char *key, uint64_t size)
{
    (*(int *)arg)++;
    return 0;
}

static void batch_calls_without_master(void **state)
{
    dango_store_client_t *c       = client_nomaster(0);
    const char           *keys[3] = {"a", "", "c"};
    const void           *bufs[3] = {"1", "2", "3"};
    size_t                lens[3] = {1, 1, 1};
    char                  b0[8], b1[8], b2[8];
    void                 *gbufs[3] = {b0, b1, b2};
    size_t                glens[3] = {8, 8, 8};
    int                   res[3];
    int64_t               gres[3];
    int                   calls = 0, rc;

    rc = dango_store_batch_put(c, 3, keys, bufs, lens, 0, NULL, res);
    assert_true(is_unreachable(rc));
    assert_true(is_unreachable(res[0]));
    assert_int_equal(DANGO_EINVAL, res[1]);
    assert_true(is_unreachable(res[2]));

    rc = dango_store_batch_get(c, 3, keys, gbufs, glens, 0, gres);
    assert_true(is_unreachable(rc));
    assert_true(is_unreachable((int)gres[0]));
    assert_int_equal(DANGO_EINVAL, gres[1]);

    rc = dango_store_batch_exist(c, 3, keys, res);
    assert_true(is_unreachable(rc));
    assert_int_equal(DANGO_EINVAL, res[1]);

    rc = dango_store_batch_remove(c, 3, keys, 0, res);
    assert_true(is_unreachable(rc));

    rc = dango_store_list(c, "", list_cb, &calls);
    assert_true(is_unreachable(rc));
    assert_int_equal(0, calls);
    dango_store_client_destroy(c);
}

/* ---------- argument checks ---------- */

static void arguments_are_checked(void **state)
{
    dango_store_client_t          *c = client_nomaster(0);
    char                           longkey[DANGO_STORE_KEY_MAX + 2];
    char                           buf[64];
    const char                    *keys[1] = {"k"};
    const void                    *bufs[1] = {buf};
    size_t                         lens[1] = {1};
    int                            res[1];
    int64_t                        gres[1];
    dango_store_object_info_t      info;
    dango_store_pool_info_t        pinfo;
    dango_store_replicate_config_t cfg     = {0};
    const char                    *pref[1] = {NULL};
    void                          *val;
    size_t                         vlen;

    memset(longkey, 'x', sizeof(longkey));
    longkey[DANGO_STORE_KEY_MAX + 1] = '\0';

    /* NULL client. */
    assert_dango_err(DANGO_EINVAL, dango_store_put(NULL, "k", buf, 1, NULL));
    assert_dango_err(DANGO_EINVAL,
                     (int)dango_store_get(NULL, "k", buf, 1, NULL));
    assert_dango_err(DANGO_EINVAL, dango_store_exist(NULL, "k"));
    assert_dango_err(DANGO_EINVAL, dango_store_health(NULL));
    assert_dango_err(DANGO_EINVAL, (int)dango_store_remove_all(NULL, 0));
    assert_dango_err(DANGO_EINVAL, dango_store_pool_stat(NULL, &pinfo));
    assert_null(dango_store_client_name(NULL));
    dango_store_client_destroy(NULL);
    dango_store_free(NULL);

    /* Keys. */
    assert_dango_err(DANGO_EINVAL, dango_store_put(c, NULL, buf, 1, NULL));
    assert_dango_err(DANGO_EINVAL, dango_store_put(c, "", buf, 1, NULL));
    assert_dango_err(DANGO_ENAMETOOLONG,
                     dango_store_put(c, longkey, buf, 1, NULL));
    assert_dango_err(DANGO_ENAMETOOLONG,
                     (int)dango_store_get(c, longkey, buf, 1, NULL));
    assert_dango_err(DANGO_EINVAL, (int)dango_store_get(c, "", buf, 1, NULL));
    assert_dango_err(DANGO_EINVAL, dango_store_exist(c, ""));
    assert_dango_err(DANGO_ENAMETOOLONG, dango_store_exist(c, longkey));
    assert_dango_err(DANGO_EINVAL, (int)dango_store_size(c, NULL));
    assert_dango_err(DANGO_EINVAL, dango_store_remove(c, "", 0));
    assert_dango_err(DANGO_ENAMETOOLONG, dango_store_stat(c, longkey, &info));
    assert_dango_err(DANGO_EINVAL, dango_store_stat(c, "k", NULL));

    /* Values and buffers. */
    assert_dango_err(DANGO_EINVAL, dango_store_put(c, "k", NULL, 1, NULL));
    assert_dango_err(DANGO_EINVAL, dango_store_put(c, "k", buf, 0, NULL));
    assert_dango_err(DANGO_EINVAL, dango_store_upsert(c, "k", buf, 0, NULL));
    assert_dango_err(DANGO_ENOTREG,
                     dango_store_put_from(c, "k", buf, sizeof(buf), NULL));
    assert_dango_err(DANGO_EINVAL, (int)dango_store_get(c, "k", NULL, 1, NULL));
    assert_dango_err(DANGO_ENOTREG,
                     (int)dango_store_get_into(c, "k", buf, sizeof(buf)));
    assert_dango_err(DANGO_EINVAL, dango_store_get_alloc(c, "k", NULL, &vlen));
    assert_dango_err(DANGO_EINVAL, dango_store_get_alloc(c, "", &val, &vlen));

    /* Replicate configs. */
    cfg.replica_num = DANGO_STORE_REPLICA_MAX + 1;
    assert_dango_err(DANGO_EINVAL, dango_store_put(c, "k", buf, 1, &cfg));
    cfg.replica_num     = 1;
    cfg.preferred_count = 1;
    assert_dango_err(DANGO_EINVAL, dango_store_put(c, "k", buf, 1, &cfg));
    cfg.preferred_segments = pref;
    assert_dango_err(DANGO_EINVAL, dango_store_put(c, "k", buf, 1, &cfg));
    cfg.preferred_count = 0;
    cfg.soft_pin        = (dango_store_soft_pin_t)7;
    assert_dango_err(DANGO_EINVAL, dango_store_put(c, "k", buf, 1, &cfg));
    cfg.soft_pin        = DANGO_STORE_SOFT_PIN_PRESERVE;
    cfg.soft_pin_ttl_ms = 1000; /* a TTL only goes with ENABLE */
    assert_dango_err(DANGO_EINVAL, dango_store_put(c, "k", buf, 1, &cfg));

    /* Batches. */
    assert_dango_err(DANGO_EINVAL, dango_store_batch_put(c, 0, keys, bufs, lens,
                                                         0, NULL, res));
    assert_dango_err(DANGO_EINVAL,
                     dango_store_batch_put(c, DANGO_STORE_BATCH_MAX + 1, keys,
                                           bufs, lens, 0, NULL, res));
    assert_dango_err(DANGO_EINVAL, dango_store_batch_put(c, 1, NULL, bufs, lens,
                                                         0, NULL, res));
    assert_dango_err(DANGO_EINVAL, dango_store_batch_put(c, 1, keys, bufs, lens,
                                                         0, NULL, NULL));
    assert_dango_err(
        DANGO_EINVAL,
        dango_store_batch_get(c, 0, keys, (void *const *)bufs, lens, 0, gres));
    assert_dango_err(DANGO_EINVAL,
                     dango_store_batch_get(c, 1, keys, NULL, lens, 0, gres));
    assert_dango_err(DANGO_EINVAL, dango_store_batch_exist(c, 0, keys, res));
    assert_dango_err(DANGO_EINVAL, dango_store_batch_exist(c, 1, keys, NULL));
    assert_dango_err(DANGO_EINVAL,
                     dango_store_batch_remove(c, 1, NULL, 0, res));
    /* Registered batch with an unregistered buffer: per key, no RPC. */
    assert_dango_ok(
        dango_store_batch_put(c, 1, keys, bufs, lens, 1, NULL, res));
    assert_int_equal(DANGO_ENOTREG, res[0]);
    assert_dango_ok(
        dango_store_batch_get(c, 1, keys, (void *const *)bufs, lens, 1, gres));
    assert_int_equal(DANGO_ENOTREG, gres[0]);

    /* Matching, listing, stats. */
    assert_dango_err(DANGO_EINVAL, (int)dango_store_remove_by_regex(c, "(", 0));
    assert_dango_err(DANGO_EINVAL,
                     (int)dango_store_remove_by_regex(c, NULL, 0));
    assert_dango_err(DANGO_EINVAL, (int)dango_store_remove_by_regex(c, "", 0));
    assert_dango_err(DANGO_EINVAL, dango_store_list(c, "", NULL, NULL));
    assert_dango_err(DANGO_EINVAL, dango_store_list(c, longkey, list_cb, res));
    assert_dango_err(DANGO_EINVAL, dango_store_pool_stat(c, NULL));
    dango_store_client_destroy(c);
}

static void buffers_register_and_unregister(void **state)
{
    dango_store_client_t *c   = client_nomaster(0);
    char                 *mem = malloc(1 << 16);

    assert_dango_err(DANGO_EINVAL, dango_store_register_buffer(c, NULL, 10));
    assert_dango_err(DANGO_EINVAL, dango_store_register_buffer(c, mem, 0));
    assert_dango_err(DANGO_EINVAL, dango_store_register_buffer(NULL, mem, 1));
    assert_dango_ok(dango_store_register_buffer(c, mem, 4096));
    assert_dango_err(DANGO_EOVERLAP,
                     dango_store_register_buffer(c, mem + 100, 10));
    assert_dango_err(DANGO_EOVERLAP, dango_store_register_buffer(c, mem, 8192));
    assert_dango_ok(dango_store_register_buffer(c, mem + 8192, 4096));
    assert_dango_err(DANGO_ENOTREG, dango_store_unregister_buffer(c, mem + 1));
    assert_dango_err(DANGO_EINVAL, dango_store_unregister_buffer(c, NULL));

    /* Inside a registration: put_from passes the check (then no master). */
    assert_true(
        is_unreachable(dango_store_put_from(c, "k", mem + 16, 128, NULL)));
    /* Straddling two registrations: not one buffer. */
    assert_dango_err(DANGO_ENOTREG,
                     dango_store_put_from(c, "k", mem + 4000, 200, NULL));

    assert_dango_ok(dango_store_unregister_buffer(c, mem));
    assert_dango_err(DANGO_ENOTREG, dango_store_unregister_buffer(c, mem));
    assert_dango_err(DANGO_ENOTREG,
                     dango_store_put_from(c, "k", mem + 16, 128, NULL));
    /* The last one is released by destroy. */
    dango_store_client_destroy(c);
    free(mem);
}

/* ---------- record helpers ---------- */

/* KV event keys: only the prefix and exactly 16 lowercase hex digits (the
 * form the conductor's replicator builds keys in) name a block. */
static void kv_event_block_keys(void **state)
{
    static const struct {
        const char *key;
        const char *hex; /* NULL: not a block */
    } cases[] = {
        {"kv/00000000000000ab", "00000000000000ab"},
        {"kv/0123456789abcdef", "0123456789abcdef"},
        {"kv/ab", NULL},                /* short: another key than the
                                         * replicator's for block 0xab */
        {"kv/00000000000000AB", NULL},  /* upper case */
        {"kv/000000000000000ab", NULL}, /* 17 digits */
        {"kv/00000000000000ag", NULL},  /* not hex */
        {"kx/00000000000000ab", NULL},  /* other prefix */
        {"kv/", NULL},
        {"00000000000000ab", NULL},
    };
    char hex[17];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *k = cases[i].key;
        int is = dango__sc_ev_block_hex("kv/", 3, (const uint8_t *)k, strlen(k),
                                        hex);

        assert_int_equal(cases[i].hex != NULL, is);
        if (is) {
            assert_string_equal(cases[i].hex, hex);
        }
    }

    /* An empty prefix: the whole key is the hash. */
    assert_int_equal(
        1, dango__sc_ev_block_hex("", 0, (const uint8_t *)"ffffffffffffffff",
                                  16, hex));
    assert_string_equal("ffffffffffffffff", hex);
}

static void record_round_trip(void **state)
{
    const char           *key = "layer-7/block-42";
    uint16_t              kl  = (uint16_t)strlen(key);
    uint64_t              off = dango_store_rec_value_off(kl);
    char                  rec[256];
    dango_store_rec_hdr_t h;

    assert_int_equal(128, off);
    assert_int_equal(64 + 64, dango_store_rec_value_off(64));
    assert_int_equal(64 + 128, dango_store_rec_value_off(65));
    assert_int_equal(128 + 1000, dango_store_rec_size(kl, 1000));

    memset(rec, 0xee, sizeof(rec));
    dango_store_rec_format(rec, key, kl, 1000, 0x1234, 77);
    for (uint64_t i = DANGO_STORE_REC_HDR_SIZE + kl; i < off; i++) {
        assert_int_equal(0, rec[i]); /* padding zeroed */
    }

    assert_dango_ok(dango_store_rec_check(rec, key, kl, 1000, 0x1234, 77));
    assert_dango_err(DANGO_ECORRUPT,
                     dango_store_rec_check(rec, key, kl, 1001, 0x1234, 77));
    assert_dango_err(DANGO_ECORRUPT,
                     dango_store_rec_check(rec, key, kl, 1000, 0x1235, 77));
    assert_dango_err(DANGO_ECORRUPT,
                     dango_store_rec_check(rec, key, kl, 1000, 0x1234, 78));
    assert_dango_err(
        DANGO_ECORRUPT,
        dango_store_rec_check(rec, "layer-7/block-43", kl, 1000, 0x1234, 77));

    /* The commit word does not take part in the header checksum. */
    memcpy(&h, rec, sizeof(h));
    h.commit = 77 ^ DANGO_STORE_REC_COMMIT_XOR;
    memcpy(rec, &h, sizeof(h));
    assert_dango_ok(dango_store_rec_check(rec, key, kl, 1000, 0x1234, 77));

    /* Any other flipped byte of header or key is caught. */
    for (size_t i = 0; i < DANGO_STORE_REC_HDR_SIZE + kl; i++) {
        if ((i >= offsetof(dango_store_rec_hdr_t, commit)) &&
            (i < offsetof(dango_store_rec_hdr_t, commit) + 8)) {
            continue;
        }

        rec[i] ^= 0x01;
        if (dango_store_rec_check(rec, key, kl, 1000, 0x1234, 77) !=
            DANGO_ECORRUPT) {
            fail_msg("flipped byte %zu not detected", i);
        }

        rec[i] ^= 0x01;
    }

    assert_dango_ok(dango_store_rec_check(rec, key, kl, 1000, 0x1234, 77));
}

/* ---------- Mooncake C API ---------- */

static void mooncake_error_mapping(void **state)
{
    static const struct {
        int dango, mooncake;
    } map[] = {
        {0, 0},
        {DANGO_EOBJ_EXISTS, -705},
        {DANGO_ENO_OBJECT, -704},
        {DANGO_EEVICTED, -704},
        {DANGO_ENOT_READY, -703},
        {DANGO_ELEASE_HELD, -706},
        {DANGO_ELEASE_EXPIRED, -707},
        {DANGO_ENOSPC, -200},
        {DANGO_ENOMEM, -200},
        {DANGO_ECORRUPT, -801},
        {DANGO_EREPLICA_UNAVAIL, -800},
        {DANGO_ELINK_DOWN, -800},
        {DANGO_ELINK_TIMEOUT, -800},
        {DANGO_ESEGMENT_STALE, -800},
        {DANGO_EREMOTE_ACCESS, -800},
        {DANGO_ETIMEDOUT, -901},
        {DANGO_ECONNREFUSED, -900},
        {DANGO_ECONNRESET, -900},
        {DANGO_EPEER_GONE, -900},
        {DANGO_EAUTH, -900},
        {DANGO_EINVAL, -600},
        {DANGO_ENOTREG, -600},
        {DANGO_EOVERLAP, -600},
        {DANGO_ENAMETOOLONG, -400},
        {DANGO_EILLEGAL_CLIENT, -601},
        {DANGO_EINVALID_WRITE, -700},
        {DANGO_ERANGE, -10},
        {DANGO_ENO_SEGMENT, -101},
        {DANGO_ESEGMENT_EXISTS, -102},
        {DANGO_ENOTSUP, -1012},
        {DANGO_EIO, -1},
    };

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(map); i++) {
        int got = mooncake_store_errno(map[i].dango);

        if (got != map[i].mooncake) {
            fail_msg("%s maps to %d, expected %d", dango_err_name(map[i].dango),
                     got, map[i].mooncake);
        }
    }
}

static void mooncake_arguments(void **state)
{
    mooncake_store_t            s   = mooncake_store_create();
    mooncake_replicate_config_t cfg = {0};
    char                        buf[64];
    const char                 *keys[1]  = {"k"};
    void                       *bufs[1]  = {buf};
    size_t                      sizes[1] = {1};
    int                         res[1];
    int64_t                     gres[1];

    assert_non_null(s);
    /* Not set up yet. */
    assert_int_equal(1, mooncake_store_health_check(s));
    assert_int_equal(-1, mooncake_store_health_check(NULL));
    assert_int_equal(-1, mooncake_store_put(s, "k", "v", 1, NULL));
    assert_int_equal(-1, mooncake_store_get_into(s, "k", buf, 1));
    assert_int_equal(-1, mooncake_store_get_hostname(s, buf, sizeof(buf)));
    assert_int_equal(-1, mooncake_store_is_exist(s, "k"));
    assert_int_equal(-1, mooncake_store_remove_all(s, 0));
    assert_int_equal(-1, mooncake_store_setup(s, NULL, "P2PHANDSHAKE", 0, 0,
                                              "tcp", "", NULL));
    assert_int_equal(
        -1, mooncake_store_setup(s, "127.0.0.1", NULL, 0, 0, "tcp", "", NULL));
    assert_int_equal(-1, mooncake_store_setup(NULL, "127.0.0.1", "P2PHANDSHAKE",
                                              0, 0, "tcp", "", NULL));
    /* No RDMA in this build. */
    assert_int_equal(-1011, mooncake_store_setup(s, "127.0.0.1", "P2PHANDSHAKE",
                                                 0, 0, "rdma", "mlx5_0", NULL));
    /* Segment size out of range: INVALID_PARAMS. */
    assert_int_equal(-600, mooncake_store_setup(s, "127.0.0.1", "P2PHANDSHAKE",
                                                100, 0, "tcp", "", NULL));

    {
        char addr[64];

        dead_addr(addr, sizeof(addr));
        setenv("DANGO_STORE_RPC_TIMEOUT", "2s", 1);
        assert_int_equal(0, mooncake_store_setup(s, "127.0.0.1", "P2PHANDSHAKE",
                                                 1 << 20, 1 << 20, "tcp", "",
                                                 addr));
        unsetenv("DANGO_STORE_RPC_TIMEOUT");
    }

    assert_int_equal(-1, mooncake_store_setup(s, "127.0.0.1", "P2PHANDSHAKE", 0,
                                              0, "tcp", "", NULL));
    assert_int_equal(2, mooncake_store_health_check(s));
    assert_int_equal(0, mooncake_store_get_hostname(s, buf, sizeof(buf)));
    assert_non_null(strchr(buf, ':'));
    assert_int_equal(-1, mooncake_store_get_hostname(s, buf, 3));
    assert_int_equal(-1, mooncake_store_put(s, NULL, "v", 1, NULL));
    assert_int_equal(-1, mooncake_store_put(s, "k", NULL, 1, NULL));
    cfg.replica_num = 100;
    assert_int_equal(-1, mooncake_store_put(s, "k", "v", 1, &cfg));
    assert_int_equal(-600, mooncake_store_put(s, "k", "v", 0, NULL));
    {
        char lk[DANGO_STORE_KEY_MAX + 2];

        memset(lk, 'k', sizeof(lk) - 1);
        lk[sizeof(lk) - 1] = '\0';
        assert_int_equal(-400, mooncake_store_is_exist(s, lk));
    }

    /* get_into needs registered memory. */
    assert_int_equal(-600, mooncake_store_get_into(s, "k", buf, sizeof(buf)));
    /* Master unreachable: RPC_FAIL. */
    assert_int_equal(-900, mooncake_store_is_exist(s, "k"));
    assert_int_equal(-900, mooncake_store_get_size(s, "k"));
    assert_int_equal(-900, mooncake_store_remove(s, "k", 0));
    assert_int_equal(-900, mooncake_store_put(s, "k", "v", 1, NULL));
    assert_int_equal(
        -1, mooncake_store_batch_put_from(s, keys, bufs, sizes, 0, NULL, res));
    assert_int_equal(
        -1, mooncake_store_batch_get_into(s, keys, bufs, sizes, 1, NULL));
    assert_int_equal(
        0, mooncake_store_batch_get_into(s, keys, bufs, sizes, 1, gres));
    assert_int_equal(-600, gres[0]);
    assert_int_equal(0, mooncake_store_register_buffer(s, buf, sizeof(buf)));
    assert_int_equal(-600, mooncake_store_register_buffer(s, buf, 8));
    assert_int_equal(-900, mooncake_store_batch_put_from(s, keys, bufs, sizes,
                                                         1, NULL, res));
    assert_int_equal(-900, res[0]);
    assert_int_equal(0, mooncake_store_unregister_buffer(s, buf));
    assert_int_equal(-600, mooncake_store_unregister_buffer(s, buf));
    mooncake_store_destroy(s);
    mooncake_store_destroy(NULL);
}

/* ---------- OOM ---------- */

static void create_survives_oom(void **state)
{
    dango_store_params_t  p   = {0};
    dango_store_client_t *c   = NULL;
    dango_config_t       *cfg = test_config();
    char                  addr[64];
    long                  base, failures = 0, n;
    int                   rc = DANGO_ENOMEM;

    dead_addr(addr, sizeof(addr));
    p.field_mask   = DANGO_STORE_PARAM_MASTER | DANGO_STORE_PARAM_SEGMENT_SIZE;
    p.master_addr  = addr;
    p.segment_size = 1 << 20;

    /* Warm up lazily created state (log levels, registries). */
    assert_dango_ok(dango_store_client_create(&p, cfg, &c));
    dango_store_client_destroy(c);
    base = dango__alloc_live();

    for (n = 1; n <= 5000; n++) {
        c = NULL;
        dango__alloc_fail_after(n);
        rc = dango_store_client_create(&p, cfg, &c);
        dango__alloc_fail_after(-1);
        if (rc == 0) {
            break;
        }

        failures++;
        if (rc != DANGO_ENOMEM) {
            fail_msg("allocation %ld failing: create returned %s", n,
                     dango_err_name(rc));
        }

        assert_null(c);
        if (dango__alloc_live() != base) {
            fail_msg("allocation %ld failing: %ld allocations leaked", n,
                     dango__alloc_live() - base);
        }
    }

    assert_dango_ok(rc);
    assert_true(failures > 10);
    dango_store_client_destroy(c);
    assert_int_equal(base, dango__alloc_live());
    dango_config_release(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(create_rejects_bad_params),
        cmocka_unit_test(create_rejects_bad_options),
        cmocka_unit_test(options_are_listed),
        cmocka_unit_test(master_down_at_create),
        cmocka_unit_test(batch_calls_without_master),
        cmocka_unit_test(arguments_are_checked),
        cmocka_unit_test(buffers_register_and_unregister),
        cmocka_unit_test(record_round_trip),
        cmocka_unit_test(kv_event_block_keys),
        cmocka_unit_test(mooncake_error_mapping),
        cmocka_unit_test(mooncake_arguments),
        cmocka_unit_test(create_survives_oom),
    };

    dango_test_quiet_logs();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
