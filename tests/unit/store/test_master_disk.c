/*
 * The master's side of the disk tier (store_master_disk.c) over RPC on
 * 127.0.0.1, with this test speaking the node's protocol: DiskPoll
 * registration and tasks, offload on evict (success and failure), DiskLoad
 * through the node's staging buffer, DiskRelease, promotion on the second
 * read, a corrupt record, remove of a disk-only key, and malformed calls.
 */
#include <pthread.h>
#include <stdio.h>

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

/* First: it names the log component before dango/log.h is seen. */
#include "store/store_master_int.h"

#include "dango_test.h"

#include <dango/config.h>
#include <dango/store_master.h>
#include "common/alloc.h"
#include "common/time.h"
#include "net/rpc.h"
#include "store/store_proto.h"
#include "dango_store.pb-c.h"

#define SEG_BASE  0x10000000ull
#define SEG_SIZE  (1ull << 20)
#define VAL_SIZE  (120u << 10)
#define STAGE     0x50000000ull
#define NKEYS     8
#define TIER_SIZE (64ull << 20)

static dango_store_master_t *g_m;
static dango_rpc_client_t   *g_cli;
static uint64_t              g_put_ids[NKEYS + 1];
/* The last one does not fit while the others are in memory. */
static char *g_keys[NKEYS + 1] = {"d0", "d1", "d2", "d3", "d4",
                                  "d5", "d6", "d7", "d8"};

/* ---------- helpers ---------- */

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Calls @method with @msg packed, discarding the reply. */
static int call_msg(uint32_t method, const ProtobufCMessage *msg)
{
    size_t   len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len + 1);
    int      rc;

    protobuf_c_message_pack(msg, buf);
    rc = dango_rpc_call(g_cli, method, buf, len, NULL, NULL, 0);
    free(buf);
    return rc;
}

static Dango__Store__ClientId client_id(void)
{
    Dango__Store__ClientId id = DANGO__STORE__CLIENT_ID__INIT;

    id.hi = 0xd15c;
    id.lo = 1;
    return id;
}

static void mount(void)
{
    Dango__Store__MountReq req = DANGO__STORE__MOUNT_REQ__INIT;
    Dango__Store__Segment  seg = DANGO__STORE__SEGMENT__INIT;
    Dango__Store__ClientId id  = client_id();

    seg.id_hi     = 1;
    seg.id_lo     = 1;
    seg.name      = "node-a";
    seg.base_addr = SEG_BASE;
    seg.size      = SEG_SIZE;
    seg.host_id   = "host-a";
    req.client    = &id;
    req.segment   = &seg;
    assert_dango_ok(call_msg(DANGO_STORE_M_MOUNT, &req.base));
}

/* PutStart (+ PutEnd when it starts) of key @i with a value of @size
 * bytes; the PutStart status. */
static int put_key_size(int i, int upsert, uint64_t size)
{
    Dango__Store__PutStartReq   req = DANGO__STORE__PUT_START_REQ__INIT;
    Dango__Store__PutEndReq     end = DANGO__STORE__PUT_END_REQ__INIT;
    Dango__Store__ClientId      id  = client_id();
    Dango__Store__PutStartResp *resp;
    Dango__Store__StatusList   *st;
    uint64_t                    sum = 1000 + (uint64_t)i;
    int                         rc;

    req.client      = &id;
    req.n_keys      = 1;
    req.keys        = &g_keys[i];
    req.n_sizes     = 1;
    req.sizes       = &size;
    req.n_checksums = 1;
    req.checksums   = &sum;
    req.upsert      = upsert;
    assert_dango_ok(dango_rpc_call_pb(g_cli, DANGO_STORE_M_PUT_START, &req.base,
                                      &dango__store__put_start_resp__descriptor,
                                      (ProtobufCMessage **)&resp, 0));
    rc = resp->items[0]->status;
    if (rc == 0) {
        g_put_ids[i] = resp->items[0]->put_id;
    }
    dango__store__put_start_resp__free_unpacked(resp, NULL);
    if (rc != 0) {
        return rc;
    }

    end.client    = &id;
    end.n_keys    = 1;
    end.keys      = &g_keys[i];
    end.n_put_ids = 1;
    end.put_ids   = &g_put_ids[i];
    assert_dango_ok(dango_rpc_call_pb(g_cli, DANGO_STORE_M_PUT_END, &end.base,
                                      &dango__store__status_list__descriptor,
                                      (ProtobufCMessage **)&st, 0));
    assert_int_equal(st->status[0], 0);
    dango__store__status_list__free_unpacked(st, NULL);
    return 0;
}

static int put_key(int i, int upsert)
{
    return put_key_size(i, upsert, VAL_SIZE);
}

static void put_one(int i)
{
    assert_dango_ok(put_key(i, 0));
}

/* One DiskPoll; the reply (to free) or NULL with *rc_p. */
static Dango__Store__DiskPollResp *poll_once(int reset, int wait,
                                             Dango__Store__DiskDone **done,
                                             size_t ndone, int *rc_p)
{
    Dango__Store__DiskPollReq   req  = DANGO__STORE__DISK_POLL_REQ__INIT;
    Dango__Store__ClientId      id   = client_id();
    Dango__Store__DiskPollResp *resp = NULL;

    req.client   = &id;
    req.capacity = TIER_SIZE;
    req.used     = 4096;
    req.reset    = reset;
    req.wait     = wait;
    req.n_done   = ndone;
    req.done     = done;
    *rc_p        = dango_rpc_call_pb(g_cli, DANGO_STORE_M_DISK_POLL, &req.base,
                                     &dango__store__disk_poll_resp__descriptor,
                                     (ProtobufCMessage **)&resp, 0);
    return resp;
}

/* Polls (bounded) until the reply has a task. */
static Dango__Store__DiskPollResp *poll_task(void)
{
    uint64_t deadline = dango_time_ns() + 5ull * DANGO_NSEC_PER_SEC;

    while (dango_time_ns() < deadline) {
        int                         rc;
        Dango__Store__DiskPollResp *r = poll_once(0, 1, NULL, 0, &rc);

        assert_dango_ok(rc);
        assert_int_equal(r->status, 0);
        if (r->n_tasks > 0) {
            return r;
        }
        dango__store__disk_poll_resp__free_unpacked(r, NULL);
    }
    fail_msg("no disk task in 5 s");
    return NULL;
}

static void report(uint64_t task, int status, uint64_t off)
{
    Dango__Store__DiskDone      d  = DANGO__STORE__DISK_DONE__INIT;
    Dango__Store__DiskDone     *dp = &d;
    Dango__Store__DiskPollResp *r;
    int                         rc;

    d.task_id = task;
    d.status  = status;
    d.off     = off;
    r         = poll_once(0, 0, &dp, 1, &rc);
    assert_dango_ok(rc);
    dango__store__disk_poll_resp__free_unpacked(r, NULL);
}

static Dango__Store__GetItem *get_item(const char             *key,
                                       Dango__Store__GetResp **resp_p)
{
    Dango__Store__KeysReq req = DANGO__STORE__KEYS_REQ__INIT;
    char                 *k   = (char *)key;

    req.n_keys   = 1;
    req.keys     = &k;
    req.no_lease = 1;
    assert_dango_ok(dango_rpc_call_pb(
        g_cli, DANGO_STORE_M_GET_REPLICAS, &req.base,
        &dango__store__get_resp__descriptor, (ProtobufCMessage **)resp_p, 0));
    return (*resp_p)->items[0];
}

static int exist(const char *key)
{
    Dango__Store__KeysReq     req = DANGO__STORE__KEYS_REQ__INIT;
    Dango__Store__StatusList *st;
    char                     *k = (char *)key;
    int                       v;

    req.n_keys = 1;
    req.keys   = &k;
    assert_dango_ok(dango_rpc_call_pb(g_cli, DANGO_STORE_M_EXIST, &req.base,
                                      &dango__store__status_list__descriptor,
                                      (ProtobufCMessage **)&st, 0));
    v = st->status[0];
    dango__store__status_list__free_unpacked(st, NULL);
    return v;
}

/* DiskLoad on its own connection and thread (the reply waits for us). */
typedef struct load {
    const char            *key;
    pthread_t              th;
    int                    rc;
    Dango__Store__GetResp *resp;
} load_t;

static void *load_main(void *arg)
{
    load_t               *l   = arg;
    dango_rpc_client_t   *cli = NULL;
    Dango__Store__KeysReq req = DANGO__STORE__KEYS_REQ__INIT;
    char                 *k   = (char *)l->key;

    l->rc =
        dango_rpc_client_create(dango_store_master_addr(g_m), NULL, NULL, &cli);
    if (l->rc == 0) {
        req.n_keys = 1;
        req.keys   = &k;
        l->rc      = dango_rpc_call_pb(cli, DANGO_STORE_M_DISK_LOAD, &req.base,
                                       &dango__store__get_resp__descriptor,
                                       (ProtobufCMessage **)&l->resp, 0);
    }
    dango_rpc_client_destroy(cli);
    return NULL;
}

static void load_start(load_t *l, const char *key)
{
    memset(l, 0, sizeof(*l));
    l->key = key;
    assert_int_equal(pthread_create(&l->th, NULL, load_main, l), 0);
}

static Dango__Store__GetItem *load_end(load_t *l)
{
    pthread_join(l->th, NULL);
    assert_dango_ok(l->rc);
    assert_int_equal(l->resp->n_items, 1);
    return l->resp->items[0];
}

static int key_index(const uint8_t *k, size_t len)
{
    for (int i = 0; i < NKEYS; i++) {
        if ((strlen(g_keys[i]) == len) && (memcmp(g_keys[i], k, len) == 0)) {
            return i;
        }
    }
    return -1;
}

static void setup_master(void)
{
    dango_config_t *cfg;

    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "MASTER_LISTEN", "127.0.0.1:0"));
    assert_dango_ok(
        dango_config_set(cfg, "MASTER_ADMIN_LISTEN", "127.0.0.1:0"));
    assert_dango_ok(dango_config_set(cfg, "MASTER_EVICT_INTERVAL", "5ms"));
    assert_dango_ok(dango_store_master_create(cfg, &g_m));
    dango_config_release(cfg);
    assert_dango_ok(dango_rpc_client_create(dango_store_master_addr(g_m), NULL,
                                            NULL, &g_cli));
}

static size_t http_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
    char **b   = arg;
    size_t n   = size * nmemb;
    size_t old = (*b != NULL) ? strlen(*b) : 0;

    *b = realloc(*b, old + n + 1);
    memcpy(*b + old, ptr, n);
    (*b)[old + n] = '\0';
    return n;
}

/* The master's /metrics (to free). */
static char *metrics(void)
{
    char  url[128];
    char *body = NULL;
    CURL *curl = curl_easy_init();

    assert_non_null(curl);
    snprintf(url, sizeof(url), "http://%s/metrics",
             dango_store_master_admin_addr(g_m));
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_PROXY, "");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, http_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    assert_int_equal(curl_easy_perform(curl), CURLE_OK);
    curl_easy_cleanup(curl);
    assert_non_null(body);
    return body;
}

/* The value of metric dango_master_@name in @text. */
static uint64_t metric_value(const char *text, const char *name)
{
    char        line[128];
    const char *at;

    snprintf(line, sizeof(line), "\ndango_master_%s ", name);
    at = strstr(text, line);
    assert_non_null(at);
    return strtoull(at + strlen(line), NULL, 10);
}

static void teardown_master(void)
{
    dango_rpc_client_destroy(g_cli);
    dango_store_master_destroy(g_m);
    g_cli = NULL;
    g_m   = NULL;
}

/* ---------- tests ---------- */

/* A master and a mounted node whose tier has reported, holding the NKEYS
 * values: above the watermark, so offloads are queued. */
static void setup_full_node(void)
{
    Dango__Store__DiskPollResp *r;
    int                         rc;

    setup_master();
    mount();
    r = poll_once(1, 0, NULL, 0, &rc);
    assert_dango_ok(rc);
    dango__store__disk_poll_resp__free_unpacked(r, NULL);
    for (int i = 0; i < NKEYS; i++) {
        put_one(i);
    }
}

/* Takes the next @n offload tasks (they may come in one reply or several):
 * the index of each one's key in @ks, its task id in @tid. */
static void take_offloads(int n, int *ks, uint64_t *tid)
{
    for (int k = 0; k < n;) {
        Dango__Store__DiskPollResp *r = poll_task();

        for (size_t t = 0; (t < r->n_tasks) && (k < n); t++, k++) {
            ks[k]  = key_index(r->tasks[t]->key.data, r->tasks[t]->key.len);
            tid[k] = r->tasks[t]->id;
        }
        dango__store__disk_poll_resp__free_unpacked(r, NULL);
    }
}

static void disk_protocol(void **state)
{
    Dango__Store__DiskPollResp *r;
    Dango__Store__GetResp      *gr;
    Dango__Store__GetItem      *it;
    load_t                      l;
    int                         rc, ki[3] = {-1, -1, -1};
    uint64_t                    tid[3], plen[3];
    uint64_t                    promo_addr;

    (void)state;
    setup_master();
    mount();

    /* An unknown tier must report first. */
    r = poll_once(0, 0, NULL, 0, &rc);
    assert_dango_ok(rc);
    assert_int_equal(r->status, DANGO_ENEED_REMOUNT);
    dango__store__disk_poll_resp__free_unpacked(r, NULL);
    r = poll_once(1, 0, NULL, 0, &rc);
    assert_dango_ok(rc);
    assert_int_equal(r->status, 0);
    assert_int_equal(r->n_tasks, 0);
    dango__store__disk_poll_resp__free_unpacked(r, NULL);

    /* Eight records of ~120 KiB in 1 MiB: above the 0.90 watermark, so the
     * eviction pass queues offloads instead of dropping objects. */
    for (int i = 0; i < NKEYS; i++) {
        put_one(i);
    }

    for (int n = 0; n < 3;) {
        r = poll_task();
        for (size_t t = 0; (t < r->n_tasks) && (n < 3); t++) {
            Dango__Store__DiskTask *task = r->tasks[t];

            assert_int_equal(task->kind, DANGO_STORE_DISK_OFFLOAD);
            ki[n] = key_index(task->key.data, task->key.len);
            assert_true(ki[n] >= 0);
            assert_int_equal(task->put_id, g_put_ids[ki[n]]);
            assert_int_equal(task->length, dango_store_rec_size(2, VAL_SIZE));
            assert_true(task->addr >= SEG_BASE);
            assert_true(task->addr + task->length <= SEG_BASE + SEG_SIZE);
            tid[n]  = task->id;
            plen[n] = task->length;
            n++;
        }
        dango__store__disk_poll_resp__free_unpacked(r, NULL);
    }
    (void)plen;

    /* A failed offload (disk full): never on disk. Two written. */
    report(tid[0], DANGO_ENOSPC, 0);
    report(tid[1], 0, 0);
    report(tid[2], 0, 128 << 10);
    it = get_item(g_keys[ki[0]], &gr);
    assert_false(it->on_disk);
    dango__store__get_resp__free_unpacked(gr, NULL);
    it = get_item(g_keys[ki[1]], &gr);
    assert_int_equal(it->status, DANGO_ENO_OBJECT);
    assert_true(it->on_disk);
    assert_int_equal(it->size, VAL_SIZE);
    assert_int_equal(it->put_id, g_put_ids[ki[1]]);
    assert_int_equal(it->n_replicas, 0);
    dango__store__get_resp__free_unpacked(gr, NULL);
    assert_int_equal(exist(g_keys[ki[1]]), 1);

    /* First read: staged by the node, released by the reader. */
    load_start(&l, g_keys[ki[1]]);
    r = poll_task();
    assert_int_equal(r->tasks[0]->kind, DANGO_STORE_DISK_LOAD);
    assert_int_equal(r->tasks[0]->addr, 0);
    assert_int_equal(r->tasks[0]->off, 0);
    assert_int_equal(r->tasks[0]->put_id, g_put_ids[ki[1]]);
    tid[0] = r->tasks[0]->id;
    dango__store__disk_poll_resp__free_unpacked(r, NULL);
    report(tid[0], 0, STAGE);
    it = load_end(&l);
    assert_int_equal(it->status, 0);
    assert_true(it->disk_staged);
    assert_int_equal(it->put_id, g_put_ids[ki[1]]);
    assert_int_equal(it->size, VAL_SIZE);
    assert_int_equal(it->checksum, 1000 + ki[1]);
    assert_int_equal(it->n_replicas, 1);
    assert_string_equal(it->replicas[0]->segment, "node-a");
    assert_int_equal(it->replicas[0]->addr, STAGE);
    assert_int_equal(it->replicas[0]->seg_hi, 1);
    dango__store__get_resp__free_unpacked(l.resp, NULL);
    {
        Dango__Store__DiskReleaseReq rel = DANGO__STORE__DISK_RELEASE_REQ__INIT;
        Dango__Store__DiskStaged     s   = DANGO__STORE__DISK_STAGED__INIT;
        Dango__Store__DiskStaged    *sp  = &s;

        s.seg_hi     = 1;
        s.seg_lo     = 1;
        s.addr       = STAGE;
        rel.n_staged = 1;
        rel.staged   = &sp;
        assert_dango_ok(call_msg(DANGO_STORE_M_DISK_RELEASE, &rel.base));
        r = poll_once(0, 0, NULL, 0, &rc);
        assert_dango_ok(rc);
        assert_int_equal(r->n_released, 1);
        assert_int_equal(r->released[0], STAGE);
        dango__store__disk_poll_resp__free_unpacked(r, NULL);
    }

    /* Second read: promoted into the node's segment, in memory again. */
    load_start(&l, g_keys[ki[1]]);
    r = poll_task();
    assert_int_equal(r->tasks[0]->kind, DANGO_STORE_DISK_LOAD);
    promo_addr = r->tasks[0]->addr;
    assert_true(promo_addr >= SEG_BASE);
    assert_true(promo_addr < SEG_BASE + SEG_SIZE);
    tid[0] = r->tasks[0]->id;
    dango__store__disk_poll_resp__free_unpacked(r, NULL);
    report(tid[0], 0, 0);
    it = load_end(&l);
    assert_int_equal(it->status, 0);
    assert_false(it->disk_staged);
    assert_int_equal(it->replicas[0]->addr, promo_addr);
    dango__store__get_resp__free_unpacked(l.resp, NULL);
    it = get_item(g_keys[ki[1]], &gr);
    assert_int_equal(it->status, 0);
    assert_int_equal(it->put_id, g_put_ids[ki[1]]);
    assert_int_equal(it->replicas[0]->addr, promo_addr);
    dango__store__get_resp__free_unpacked(gr, NULL);

    /* A corrupt record: the load fails, the key is gone. */
    load_start(&l, g_keys[ki[2]]);
    r = poll_task();
    assert_int_equal(r->tasks[0]->off, 128 << 10);
    tid[0] = r->tasks[0]->id;
    dango__store__disk_poll_resp__free_unpacked(r, NULL);
    report(tid[0], DANGO_ECORRUPT, 0);
    it = load_end(&l);
    assert_int_equal(it->status, DANGO_ECORRUPT);
    assert_int_equal(it->n_replicas, 0);
    dango__store__get_resp__free_unpacked(l.resp, NULL);
    assert_int_equal(exist(g_keys[ki[2]]), 0);

    /* Unknown keys and bad calls. */
    load_start(&l, "no-such-key");
    it = load_end(&l);
    assert_int_equal(it->status, DANGO_ENO_OBJECT);
    dango__store__get_resp__free_unpacked(l.resp, NULL);
    {
        static const uint8_t      garbage[] = {0x0a, 0xff, 0xff, 0xff,
                                               0xff, 0x0f, 0x12, 0x01};
        Dango__Store__KeysReq     none      = DANGO__STORE__KEYS_REQ__INIT;
        Dango__Store__DiskPollReq anon      = DANGO__STORE__DISK_POLL_REQ__INIT;

        for (uint32_t meth = DANGO_STORE_M_DISK_POLL;
             meth <= DANGO_STORE_M_DISK_RELEASE; meth++) {
            assert_dango_err(DANGO_EPROTO,
                             dango_rpc_call(g_cli, meth, garbage,
                                            sizeof(garbage), NULL, NULL, 0));
        }
        assert_dango_err(DANGO_ENOSYS,
                         dango_rpc_call(g_cli, DANGO_STORE_M_DISK_LAST, garbage,
                                        sizeof(garbage), NULL, NULL, 0));
        assert_dango_err(DANGO_EINVAL,
                         call_msg(DANGO_STORE_M_DISK_LOAD, &none.base));
        assert_dango_err(DANGO_EINVAL,
                         call_msg(DANGO_STORE_M_DISK_POLL, &anon.base));
    }

    /* What operators see. */
    {
        char *text = metrics();

        assert_non_null(strstr(text, "\ndango_master_disk_capacity_bytes "
                                     "67108864\n"));
        assert_non_null(strstr(text, "\ndango_master_disk_nodes 1\n"));
        assert_non_null(strstr(text, "\ndango_master_disk_offloads_total 2\n"));
        assert_non_null(
            strstr(text, "\ndango_master_disk_offload_failures_total 1\n"));
        assert_non_null(strstr(text, "\ndango_master_disk_hits_total 2\n"));
        assert_non_null(
            strstr(text, "\ndango_master_disk_promotions_total 1\n"));
        assert_non_null(strstr(text, "\ndango_master_disk_corrupt_total 1\n"));
        assert_non_null(
            strstr(text, "# TYPE dango_master_disk_key_count gauge"));
        free(text);
    }

    teardown_master();
}

/* Polls (bounded) until the node is told to drop @key at @off. */
static void wait_drop(const char *key, uint64_t off)
{
    uint64_t deadline = dango_time_ns() + 5ull * DANGO_NSEC_PER_SEC;

    for (;;) {
        Dango__Store__DiskPollResp *r;
        int                         rc, found = 0;

        r = poll_once(0, 1, NULL, 0, &rc);
        assert_dango_ok(rc);
        for (size_t i = 0; i < r->n_drops; i++) {
            found |= (r->drops[i]->off == off) &&
                     (r->drops[i]->key.len == strlen(key)) &&
                     (memcmp(r->drops[i]->key.data, key, strlen(key)) == 0);
        }
        dango__store__disk_poll_resp__free_unpacked(r, NULL);
        if (found) {
            return;
        }
        assert_true(dango_time_ns() < deadline);
        sleep_ms(1);
    }
}

/* Remove, RemoveMatch and an upsert drop the disk record (the node is
 * told); a plain put of a key on disk finds it exists. */
static void disk_remove_and_put(void **state)
{
    Dango__Store__KeysReq     rm = DANGO__STORE__KEYS_REQ__INIT;
    Dango__Store__StatusList *st;
    int                       k, ks[3];
    uint64_t                  tid[3];
    char                     *key;

    (void)state;
    setup_full_node();
    take_offloads(3, ks, tid);
    report(tid[0], 0, 8192);
    report(tid[1], 0, 16384);
    report(tid[2], 0, 24576);
    k   = ks[0];
    key = g_keys[k];
    assert_int_equal(exist(key), 1);

    rm.n_keys = 1;
    rm.keys   = &key;
    assert_dango_ok(dango_rpc_call_pb(g_cli, DANGO_STORE_M_REMOVE, &rm.base,
                                      &dango__store__status_list__descriptor,
                                      (ProtobufCMessage **)&st, 0));
    assert_int_equal(st->status[0], 0);
    dango__store__status_list__free_unpacked(st, NULL);
    assert_int_equal(exist(key), 0);

    /* The node hears of it (other offloads may come in the same replies). */
    wait_drop(key, 8192);

    /* A new put of a key held on disk: the disk copy is stale, dropped. */
    k = ks[1];
    {
        Dango__Store__GetResp *gr;

        assert_true(get_item(g_keys[k], &gr)->on_disk);
        dango__store__get_resp__free_unpacked(gr, NULL);
    }
    /* A plain put finds it exists; an upsert replaces it. */
    assert_dango_err(DANGO_EOBJ_EXISTS, put_key(k, 0));
    assert_int_equal(exist(g_keys[k]), 1);
    assert_dango_ok(put_key(k, 1));
    wait_drop(g_keys[k], 16384);

    /* RemoveMatch removes what is only on disk too (and counts it). */
    {
        Dango__Store__RemoveMatchReq rmm = DANGO__STORE__REMOVE_MATCH_REQ__INIT;
        Dango__Store__CountResp     *cnt;
        int                          live = 0;

        for (int i = 0; i < NKEYS; i++) {
            live += exist(g_keys[i]);
        }
        assert_int_equal(exist(g_keys[ks[2]]), 1);
        rmm.regex = "^d[0-9]$";
        rmm.force = 1;
        /* Objects read within MASTER_LOCATION_CACHE_TIME are left until
         * no client can use cached locations of them: asked again. */
        for (int i = 0; (i < 20) && (live > 0); i++) {
            int64_t deferred;

            assert_dango_ok(
                dango_rpc_call_pb(g_cli, DANGO_STORE_M_REMOVE_MATCH, &rmm.base,
                                  &dango__store__count_resp__descriptor,
                                  (ProtobufCMessage **)&cnt, 0));
            live -= (int)cnt->count;
            deferred = cnt->deferred;
            assert_int_equal(deferred, live);
            usleep(cnt->retry_ms * 1000u);
            dango__store__count_resp__free_unpacked(cnt, NULL);
        }
        assert_int_equal(live, 0);
        for (int i = 0; i < NKEYS; i++) {
            assert_int_equal(exist(g_keys[i]), 0);
        }
        wait_drop(g_keys[ks[2]], 24576);
    }
    teardown_master();
}

/* A plain put of a key held on disk is refused before it is placed: no
 * region is allocated, no eviction pass runs and the put does not wait for
 * offloads, even when the pool has no room for the new value. */
static void disk_put_of_disk_key_places_nothing(void **state)
{
    static const char *const counters[] = {
        "allocated_bytes",
        "attempted_evictions_total",
        "put_start_alloc_failures_total",
        "put_start_partial_allocations_total",
        "put_start_discard_cnt",
        "disk_offloads_total",
    };
    Dango__Store__GetResp *gr;
    uint64_t               before[6], tid[3], t0;
    char                  *text;
    int                    k, ks[3];

    (void)state;
    /* Three keys to disk: five stay in memory, below the watermark, so no
     * eviction pass runs on its own from here on. */
    setup_full_node();
    take_offloads(3, ks, tid);
    k = ks[0];
    for (int n = 0; n < 3; n++) {
        report(tid[n], 0, (uint64_t)n * (128 << 10));
    }
    assert_true(k >= 0);
    assert_true(get_item(g_keys[k], &gr)->on_disk);
    dango__store__get_resp__free_unpacked(gr, NULL);

    text = metrics();
    for (size_t i = 0; i < 6; i++) {
        before[i] = metric_value(text, counters[i]);
    }
    free(text);

    /* More than the free room: placing it would need an eviction pass. */
    t0 = dango_time_ns();
    assert_dango_err(DANGO_EOBJ_EXISTS, put_key_size(k, 0, 5 * VAL_SIZE));
    assert_true(dango_time_ns() - t0 < 1000ull * DANGO_NSEC_PER_MSEC);
    /* And one that fits. */
    assert_dango_err(DANGO_EOBJ_EXISTS, put_key(k, 0));

    text = metrics();
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(metric_value(text, counters[i]), before[i]);
    }
    free(text);
    assert_true(get_item(g_keys[k], &gr)->on_disk);
    dango__store__get_resp__free_unpacked(gr, NULL);
    teardown_master();
}

/* A node that stopped polling does not get loads: the read fails at once
 * instead of waiting for the task's deadline. */
static void disk_silent_node(void **state)
{
    Dango__Store__DiskPollResp *r;
    Dango__Store__GetItem      *it;
    load_t                      l;
    int                         k;
    uint64_t                    t0;

    (void)state;
    setup_full_node();
    r = poll_task();
    k = key_index(r->tasks[0]->key.data, r->tasks[0]->key.len);
    report(r->tasks[0]->id, 0, 0);
    dango__store__disk_poll_resp__free_unpacked(r, NULL);
    assert_int_equal(exist(g_keys[k]), 1);

    sleep_ms(3300); /* MS_DISK_SILENT_MS without a poll */
    t0 = dango_time_ns();
    load_start(&l, g_keys[k]);
    it = load_end(&l);
    assert_int_equal(it->status, DANGO_EREPLICA_UNAVAIL);
    assert_true(dango_time_ns() - t0 < 2ull * DANGO_NSEC_PER_SEC);
    dango__store__get_resp__free_unpacked(l.resp, NULL);
    teardown_master();
}

/* A put into a full pool whose node is offloading waits for the room the
 * offloads make instead of failing; without offloads it fails at once. */
typedef struct put_thread {
    pthread_t th;
    int       rc;
    uint64_t  ns;
} put_thread_t;

static void *put_main(void *arg)
{
    put_thread_t *p  = arg;
    uint64_t      t0 = dango_time_ns();

    p->rc = put_key(NKEYS, 0);
    p->ns = dango_time_ns() - t0;
    return NULL;
}

static void disk_put_waits_for_offload(void **state)
{
    Dango__Store__DiskPollResp *r;
    put_thread_t                pt;
    uint64_t                    ids[NKEYS];
    size_t                      nids = 0;

    (void)state;
    setup_full_node();

    /* Offloads queued, none reported yet: the next put waits. */
    r = poll_task();
    for (size_t t = 0; t < r->n_tasks; t++) {
        ids[nids++] = r->tasks[t]->id;
    }
    dango__store__disk_poll_resp__free_unpacked(r, NULL);
    memset(&pt, 0, sizeof(pt));
    assert_int_equal(pthread_create(&pt.th, NULL, put_main, &pt), 0);
    sleep_ms(300);
    for (size_t t = 0; t < nids; t++) {
        report(ids[t], 0, (uint64_t)t * (128 << 10));
    }
    pthread_join(pt.th, NULL);
    assert_dango_ok(pt.rc);
    assert_true(pt.ns >= 250ull * DANGO_NSEC_PER_MSEC);
    assert_int_equal(exist(g_keys[NKEYS]), 1);
    teardown_master();
}

/* Held PutStarts are capped by the bytes their kept requests pin, not only
 * by their count: the largest batches (DANGO_STORE_BATCH_MAX keys of
 * DANGO_STORE_KEY_MAX bytes, 16 MiB a request) are held while they fit in
 * MS_DISK_PUT_WAIT_BYTES, and the one beyond is answered at once. */
#define BIG_NKEYS DANGO_STORE_BATCH_MAX

static char    **g_big_keys;
static uint64_t *g_big_sizes;

typedef struct big_put {
    pthread_t th;
    int       rc;
    int       nospc; /* keys answered ENOSPC */
} big_put_t;

static void big_put_req(Dango__Store__PutStartReq *req,
                        Dango__Store__ClientId    *id)
{
    dango__store__put_start_req__init(req);
    *id          = client_id();
    req->client  = id;
    req->n_keys  = BIG_NKEYS;
    req->keys    = g_big_keys;
    req->n_sizes = BIG_NKEYS;
    req->sizes   = g_big_sizes;
}

/* One big PutStart on a connection of its own; the call returns when the
 * master answers it. */
static void big_put(big_put_t *b)
{
    Dango__Store__PutStartReq   req;
    Dango__Store__ClientId      id;
    Dango__Store__PutStartResp *resp = NULL;
    dango_rpc_client_t         *cli  = NULL;

    big_put_req(&req, &id);
    b->rc =
        dango_rpc_client_create(dango_store_master_addr(g_m), NULL, NULL, &cli);
    if (b->rc == 0) {
        b->rc = dango_rpc_call_pb(cli, DANGO_STORE_M_PUT_START, &req.base,
                                  &dango__store__put_start_resp__descriptor,
                                  (ProtobufCMessage **)&resp, 0);
    }
    if (b->rc == 0) {
        for (size_t i = 0; i < resp->n_items; i++) {
            b->nospc += resp->items[i]->status == DANGO_ENOSPC;
        }
        dango__store__put_start_resp__free_unpacked(resp, NULL);
    }
    dango_rpc_client_destroy(cli);
}

static void *big_put_main(void *arg)
{
    big_put(arg);
    return NULL;
}

/* Polls /metrics (bounded) until dango_master_@name reads @want. */
static void metric_wait(const char *name, uint64_t want)
{
    uint64_t deadline = dango_time_ns() + 5ull * DANGO_NSEC_PER_SEC;
    uint64_t v;

    for (;;) {
        char *text = metrics();

        v = metric_value(text, name);
        free(text);
        if ((v == want) || (dango_time_ns() >= deadline)) {
            break;
        }
        sleep_ms(5);
    }
    assert_int_equal(v, want);
}

static void disk_put_wait_capped_by_bytes(void **state)
{
    Dango__Store__DiskPollResp *r;
    Dango__Store__PutStartReq   req;
    Dango__Store__ClientId      id;
    big_put_t                   held[3], last;
    size_t                      len;
    char                       *text;
    char                        num[16];

    (void)state;
    g_big_keys  = calloc(BIG_NKEYS, sizeof(*g_big_keys));
    g_big_sizes = calloc(BIG_NKEYS, sizeof(*g_big_sizes));
    assert_non_null(g_big_keys);
    assert_non_null(g_big_sizes);
    for (size_t i = 0; i < BIG_NKEYS; i++) {
        g_big_keys[i] = malloc(DANGO_STORE_KEY_MAX + 1);
        assert_non_null(g_big_keys[i]);
        memset(g_big_keys[i], 'k', DANGO_STORE_KEY_MAX);
        g_big_keys[i][DANGO_STORE_KEY_MAX] = '\0';
        snprintf(num, sizeof(num), "%08zx", i); /* distinct in the batch */
        memcpy(g_big_keys[i], num, 8);
        g_big_sizes[i] = 2 * SEG_SIZE; /* no segment can take it */
    }
    /* Three such requests fit under the cap, a fourth does not. */
    big_put_req(&req, &id);
    len = protobuf_c_message_get_packed_size(&req.base);
    assert_true(3 * (len + 64) <= MS_DISK_PUT_WAIT_BYTES);
    assert_true(4 * len > MS_DISK_PUT_WAIT_BYTES);
    assert_true(3 < MS_DISK_PUT_WAIT_MAX);

    setup_full_node();
    /* Offloads handed out and never reported: puts without room wait. */
    r = poll_task();
    dango__store__disk_poll_resp__free_unpacked(r, NULL);

    memset(held, 0, sizeof(held));
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(
            pthread_create(&held[i].th, NULL, big_put_main, &held[i]), 0);
        metric_wait("disk_put_waits", i + 1);
    }

    /* The fourth is answered at once, while the three still wait. */
    memset(&last, 0, sizeof(last));
    big_put(&last);
    assert_dango_ok(last.rc);
    assert_int_equal(last.nospc, BIG_NKEYS);
    text = metrics();
    assert_int_equal(metric_value(text, "disk_put_waits"), 3);
    assert_true(metric_value(text, "disk_put_wait_bytes") >= 3 * len);
    assert_true(metric_value(text, "disk_put_wait_bytes") <=
                MS_DISK_PUT_WAIT_BYTES);
    free(text);

    /* They are answered ENOSPC at their deadline. */
    for (size_t i = 0; i < 3; i++) {
        pthread_join(held[i].th, NULL);
        assert_dango_ok(held[i].rc);
        assert_int_equal(held[i].nospc, BIG_NKEYS);
    }
    metric_wait("disk_put_wait_bytes", 0);
    teardown_master();
    for (size_t i = 0; i < BIG_NKEYS; i++) {
        free(g_big_keys[i]);
    }
    free(g_big_keys);
    free(g_big_sizes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(disk_protocol),
        cmocka_unit_test(disk_remove_and_put),
        cmocka_unit_test(disk_put_of_disk_key_places_nothing),
        cmocka_unit_test(disk_silent_node),
        cmocka_unit_test(disk_put_waits_for_offload),
        cmocka_unit_test(disk_put_wait_capped_by_bytes),
    };

    dango_test_quiet_logs();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
