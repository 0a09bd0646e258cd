/*
 * The embedded master end to end on 127.0.0.1: every RPC through the RPC
 * client, malformed payloads (DANGO_EPROTO, and the master keeps serving),
 * an unknown method, the admin HTTP routes through libcurl, the embedded
 * metadata server, and configuration errors.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

/* First: it names the log component before dango/log.h is seen. */
#include "store/store_master_int.h"

#include "dango_test.h"

#include <dango/config.h>
#include <dango/store_master.h>
#include "common/alloc.h"
#include "net/rpc.h"
#include "store/store_proto.h"
#include "dango_store.pb-c.h"

#define SEG_BASE 0x10000000ull
#define SEG_SIZE (1ull << 20)

/* ---------- helpers ---------- */

static dango_store_master_t *master_start(const char *evict_ratio)
{
    dango_store_master_t *m = NULL;
    dango_config_t       *cfg;

    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "MASTER_LISTEN", "127.0.0.1:0"));
    assert_dango_ok(
        dango_config_set(cfg, "MASTER_ADMIN_LISTEN", "127.0.0.1:0"));
    assert_dango_ok(
        dango_config_set(cfg, "MASTER_METADATA_LISTEN", "127.0.0.1:0"));
    assert_dango_ok(dango_config_set(cfg, "MASTER_EVICT_INTERVAL", "5ms"));
    assert_dango_ok(
        dango_config_set(cfg, "MASTER_LOCATION_CACHE_TIME", "300ms"));
    if (evict_ratio != NULL) {
        assert_dango_ok(
            dango_config_set(cfg, "MASTER_EVICT_RATIO", evict_ratio));
    }
    assert_dango_ok(dango_store_master_create(cfg, &m));
    dango_config_release(cfg);
    return m;
}

typedef struct http_buf {
    char  *data;
    size_t len;
} http_buf_t;

static size_t http_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
    http_buf_t *b = arg;
    size_t      n = size * nmemb;

    b->data = realloc(b->data, b->len + n + 1);
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* GET (or @method) http://<addr><path>; returns the status, body in @b. */
static long http(const char *addr, const char *path, const char *method,
                 http_buf_t *b)
{
    char  url[512];
    CURL *curl = curl_easy_init();
    long  code = 0;

    assert_non_null(curl);
    snprintf(url, sizeof(url), "http://%s%s", addr, path);
    b->data = calloc(1, 1);
    b->len  = 0;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_PROXY, "");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, http_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, b);
    if (method != NULL) {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    }
    assert_int_equal(curl_easy_perform(curl), CURLE_OK);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(curl);
    return code;
}

/* Calls @method with @msg packed, discarding the reply. */
static int call_msg(dango_rpc_client_t *cli, uint32_t method,
                    const ProtobufCMessage *msg)
{
    size_t   len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len + 1);
    int      rc;

    protobuf_c_message_pack(msg, buf);
    rc = dango_rpc_call(cli, method, buf, len, NULL, NULL, 0);
    free(buf);
    return rc;
}

static Dango__Store__ClientId client_id(uint64_t n)
{
    Dango__Store__ClientId id = DANGO__STORE__CLIENT_ID__INIT;

    id.hi = 0xabc;
    id.lo = n;
    return id;
}

static int ping(dango_rpc_client_t *cli, uint64_t n, int32_t *status_p)
{
    Dango__Store__PingReq   req = DANGO__STORE__PING_REQ__INIT;
    Dango__Store__ClientId  id  = client_id(n);
    Dango__Store__PingResp *resp;
    int                     rc;

    req.client = &id;
    rc         = dango_rpc_call_pb(cli, DANGO_STORE_M_PING, &req.base,
                                   &dango__store__ping_resp__descriptor,
                                   (ProtobufCMessage **)&resp, 0);
    if (rc == 0) {
        assert_true(resp->view_version > 0);
        *status_p = resp->status;
        dango__store__ping_resp__free_unpacked(resp, NULL);
    }
    return rc;
}

static Dango__Store__StatusList *keys_call(dango_rpc_client_t *cli,
                                           uint32_t method, char **keys,
                                           size_t n, int force)
{
    Dango__Store__KeysReq     req = DANGO__STORE__KEYS_REQ__INIT;
    Dango__Store__StatusList *resp;

    req.n_keys = n;
    req.keys   = keys;
    req.force  = force;
    assert_dango_ok(dango_rpc_call_pb(cli, method, &req.base,
                                      &dango__store__status_list__descriptor,
                                      (ProtobufCMessage **)&resp, 0));
    assert_int_equal(resp->n_status, n);
    return resp;
}

/* Put @n keys of @size bytes (start + end); returns nothing, asserts 0. */
static void put_keys(dango_rpc_client_t *cli, char **keys, size_t n,
                     uint64_t size)
{
    Dango__Store__PutStartReq   req = DANGO__STORE__PUT_START_REQ__INIT;
    Dango__Store__PutEndReq     end = DANGO__STORE__PUT_END_REQ__INIT;
    Dango__Store__ClientId      id  = client_id(1);
    Dango__Store__PutStartResp *resp;
    Dango__Store__StatusList   *st;
    uint64_t                    sizes[16];
    uint64_t                    sums[16];
    uint64_t                    ids[16];

    for (size_t i = 0; i < n; i++) {
        sizes[i] = size + i;
        sums[i]  = 1000 + i;
    }
    req.client      = &id;
    req.n_keys      = n;
    req.keys        = keys;
    req.n_sizes     = n;
    req.sizes       = sizes;
    req.n_checksums = n;
    req.checksums   = sums;
    assert_dango_ok(dango_rpc_call_pb(cli, DANGO_STORE_M_PUT_START, &req.base,
                                      &dango__store__put_start_resp__descriptor,
                                      (ProtobufCMessage **)&resp, 0));
    assert_int_equal(resp->n_items, n);
    for (size_t i = 0; i < n; i++) {
        Dango__Store__Replica *r;

        assert_int_equal(resp->items[i]->status, 0);
        assert_int_equal(resp->items[i]->n_replicas, 1);
        r = resp->items[i]->replicas[0];
        assert_string_equal(r->segment, "node-a");
        assert_string_equal(r->host_id, "host-a");
        assert_int_equal(r->status, DANGO_STORE_REPLICA_PROCESSING);
        assert_int_equal(r->length,
                         dango_store_rec_size(strlen(keys[i]), sizes[i]));
        assert_true(r->addr >= SEG_BASE);
        assert_true(r->addr + r->length <= SEG_BASE + SEG_SIZE);
        assert_int_equal(r->seg_hi, 1);
        assert_int_equal(r->seg_lo, 1);
        ids[i] = resp->items[i]->put_id;
    }
    dango__store__put_start_resp__free_unpacked(resp, NULL);

    end.client    = &id;
    end.n_keys    = n;
    end.keys      = keys;
    end.n_put_ids = n;
    end.put_ids   = ids;
    assert_dango_ok(dango_rpc_call_pb(cli, DANGO_STORE_M_PUT_END, &end.base,
                                      &dango__store__status_list__descriptor,
                                      (ProtobufCMessage **)&st, 0));
    assert_int_equal(st->n_status, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(st->status[i], 0);
    }
    dango__store__status_list__free_unpacked(st, NULL);
}

/* ---------- tests ---------- */

static void rpc_end_to_end(void **state)
{
    dango_store_master_t           *m   = master_start(NULL);
    dango_rpc_client_t             *cli = NULL;
    Dango__Store__ClientId          id  = client_id(1);
    Dango__Store__ServiceReadyResp *ready;
    void                           *reply;
    size_t                          reply_len;
    int32_t                         status;
    char                           *k12[2]   = {"k1", "k2"};
    char                           *kmiss[2] = {"k1", "nope"};

    (void)state;
    assert_non_null(dango_store_master_addr(m));
    assert_non_null(dango_store_master_admin_addr(m));
    assert_non_null(dango_store_master_metadata_url(m));
    assert_int_equal(
        strncmp(dango_store_master_metadata_url(m), "http://127.0.0.1:", 17),
        0);
    assert_dango_ok(
        dango_rpc_client_create(dango_store_master_addr(m), NULL, NULL, &cli));

    /* ServiceReady takes no request. */
    assert_dango_ok(dango_rpc_call(cli, DANGO_STORE_M_SERVICE_READY, NULL, 0,
                                   &reply, &reply_len, 0));
    ready = dango__store__service_ready_resp__unpack(NULL, reply_len, reply);
    assert_non_null(ready);
    assert_string_equal(ready->version, dango_version_string());
    assert_true(ready->view_version > 0);
    dango__store__service_ready_resp__free_unpacked(ready, NULL);
    dango_free(reply);

    /* An empty batch (the first call to use scratch) is an empty answer. */
    {
        Dango__Store__StatusList *resp =
            keys_call(cli, DANGO_STORE_M_EXIST, NULL, 0, 0);

        dango__store__status_list__free_unpacked(resp, NULL);
    }

    /* Unknown client: remount; after a mount: known. */
    assert_dango_ok(ping(cli, 1, &status));
    assert_int_equal(status, DANGO_ENEED_REMOUNT);
    {
        Dango__Store__MountReq req = DANGO__STORE__MOUNT_REQ__INIT;
        Dango__Store__Segment  seg = DANGO__STORE__SEGMENT__INIT;

        seg.id_hi     = 1;
        seg.id_lo     = 1;
        seg.name      = "node-a";
        seg.base_addr = SEG_BASE;
        seg.size      = SEG_SIZE;
        seg.host_id   = "host-a";
        req.client    = &id;
        assert_dango_err(DANGO_EINVAL,
                         call_msg(cli, DANGO_STORE_M_MOUNT, &req.base));
        assert_dango_err(DANGO_EINVAL, dango_rpc_call(cli, DANGO_STORE_M_MOUNT,
                                                      NULL, 0, NULL, NULL, 0));
        req.segment = &seg;
        assert_dango_ok(call_msg(cli, DANGO_STORE_M_MOUNT, &req.base));
        assert_dango_ok(call_msg(cli, DANGO_STORE_M_MOUNT, &req.base));
        seg.size = 2 * SEG_SIZE;
        assert_dango_err(DANGO_EINVAL,
                         call_msg(cli, DANGO_STORE_M_MOUNT, &req.base));
    }
    {
        Dango__Store__RemountReq req = DANGO__STORE__REMOUNT_REQ__INIT;

        req.client = &id;
        assert_dango_ok(call_msg(cli, DANGO_STORE_M_REMOUNT, &req.base));
    }
    assert_dango_ok(ping(cli, 1, &status));
    assert_int_equal(status, 0);

    put_keys(cli, k12, 2, 100);

    /* GetReplicaList: the complete object and an unknown key. */
    {
        Dango__Store__KeysReq  req = DANGO__STORE__KEYS_REQ__INIT;
        Dango__Store__GetResp *resp;
        Dango__Store__GetItem *it;

        req.n_keys = 2;
        req.keys   = kmiss;
        assert_dango_ok(dango_rpc_call_pb(cli, DANGO_STORE_M_GET_REPLICAS,
                                          &req.base,
                                          &dango__store__get_resp__descriptor,
                                          (ProtobufCMessage **)&resp, 0));
        assert_int_equal(resp->n_items, 2);
        it = resp->items[0];
        assert_int_equal(it->status, 0);
        assert_int_equal(it->size, 100);
        assert_int_equal(it->checksum, 1000);
        assert_true(it->put_id > 0);
        assert_int_equal(it->lease_ms, 9999);
        assert_true(it->lease_ms_left > 9000);
        assert_int_equal(it->cache_ms, 299); /* 1 ms below the master's */
        assert_int_equal(it->n_replicas, 1);
        assert_int_equal(it->replicas[0]->status, DANGO_STORE_REPLICA_COMPLETE);
        assert_int_equal(resp->items[1]->status, DANGO_ENO_OBJECT);
        dango__store__get_resp__free_unpacked(resp, NULL);
    }

    /* Exist. */
    {
        Dango__Store__StatusList *resp =
            keys_call(cli, DANGO_STORE_M_EXIST, kmiss, 2, 0);

        assert_int_equal(resp->status[0], 1);
        assert_int_equal(resp->status[1], 0);
        dango__store__status_list__free_unpacked(resp, NULL);
    }

    /* List and pool stat. */
    {
        Dango__Store__ListReq   req = DANGO__STORE__LIST_REQ__INIT;
        Dango__Store__ListResp *resp;

        req.prefix = "k";
        assert_dango_ok(dango_rpc_call_pb(cli, DANGO_STORE_M_LIST, &req.base,
                                          &dango__store__list_resp__descriptor,
                                          (ProtobufCMessage **)&resp, 0));
        assert_int_equal(resp->n_keys, 2);
        assert_string_equal(resp->keys[0], "k1");
        assert_string_equal(resp->keys[1], "k2");
        assert_int_equal(resp->sizes[1], 101);
        assert_false(resp->more);
        dango__store__list_resp__free_unpacked(resp, NULL);
    }
    {
        Dango__Store__PoolStatResp *ps;

        assert_dango_ok(dango_rpc_call(cli, DANGO_STORE_M_POOL_STAT, NULL, 0,
                                       &reply, &reply_len, 0));
        ps = dango__store__pool_stat_resp__unpack(NULL, reply_len, reply);
        assert_non_null(ps);
        assert_int_equal(ps->capacity, SEG_SIZE);
        assert_int_equal(ps->keys, 2);
        assert_int_equal(ps->segments, 1);
        assert_int_equal(ps->clients, 1);
        assert_true(ps->used >= 2 * 192);
        dango__store__pool_stat_resp__free_unpacked(ps, NULL);
        dango_free(reply);
    }

    /* Garbage never unpacks: EPROTO for every method, and then the master
     * still serves. */
    {
        static const uint8_t garbage[] = {0x0a, 0xff, 0xff, 0xff,
                                          0xff, 0x0f, 0x12, 0x01};

        for (uint32_t meth = DANGO_STORE_M_PING; meth < DANGO_STORE_M_MAX;
             meth++) {
            if ((meth == DANGO_STORE_M_POOL_STAT) ||
                ((meth > DANGO_STORE_M_POOL_STAT) &&
                 (meth < DANGO_STORE_M_DISK_FIRST)) ||
                ((meth > DANGO_STORE_M_DISK_RELEASE) &&
                 (meth < DANGO_STORE_M_COPY_START))) {
                continue; /* takes no request, or no method (reserved) */
            }
            assert_dango_err(DANGO_EPROTO,
                             dango_rpc_call(cli, meth, garbage, sizeof(garbage),
                                            NULL, NULL, 0));
        }
        assert_dango_err(
            DANGO_ENOSYS,
            dango_rpc_call(cli, 999, garbage, sizeof(garbage), NULL, NULL, 0));
        assert_dango_ok(ping(cli, 1, &status));
        assert_int_equal(status, 0);
    }

    /* A key that is not UTF-8 either unpacks or is refused; no crash. */
    {
        char                     *odd[1] = {"\xff\xfe-odd"};
        Dango__Store__StatusList *resp;
        Dango__Store__KeysReq     req = DANGO__STORE__KEYS_REQ__INIT;
        int                       rc;

        req.n_keys = 1;
        req.keys   = odd;
        rc         = dango_rpc_call_pb(cli, DANGO_STORE_M_EXIST, &req.base,
                                       &dango__store__status_list__descriptor,
                                       (ProtobufCMessage **)&resp, 0);
        assert_true((rc == 0) || (rc == DANGO_EPROTO));
        if (rc == 0) {
            assert_int_equal(resp->status[0], 0);
            dango__store__status_list__free_unpacked(resp, NULL);
        }
    }

    /* Admin HTTP. */
    {
        const char *admin   = dango_store_master_admin_addr(m);
        char       *kodd[1] = {"a b/c"};
        char        help[160];
        http_buf_t  b;

        put_keys(cli, kodd, 1, 50);

        assert_int_equal(http(admin, "/health", NULL, &b), 200);
        assert_string_equal(b.data, "OK");
        free(b.data);

        assert_int_equal(http(admin, "/metrics", NULL, &b), 200);
        assert_non_null(
            strstr(b.data, "# TYPE dango_master_total_capacity_bytes gauge\n"
                           "dango_master_total_capacity_bytes 1048576\n"));
        assert_non_null(strstr(b.data, "dango_master_key_count 3\n"));
        assert_non_null(
            strstr(b.data, "dango_master_put_start_requests_total 3\n"));
        assert_non_null(
            strstr(b.data, "dango_master_put_start_failures_total 1\n"));
        assert_non_null(strstr(b.data, "# HELP dango_master_allocated_bytes"));
        assert_non_null(strstr(b.data, "dango_master_active_clients 1\n"));
        assert_non_null(
            strstr(b.data, "dango_master_malformed_requests_total"));
        /* Help texts that name a limit name the one in force. */
        snprintf(help, sizeof(help),
                 "# HELP dango_master_fence_dropped_total regions not fenced "
                 "(more than %u per segment,",
                 (unsigned)MS_FENCE_MAX);
        assert_non_null(strstr(b.data, help));
        snprintf(help, sizeof(help),
                 "# HELP dango_master_ghosts_dropped_total lost objects "
                 "forgotten (more than %u at once)",
                 (unsigned)MS_GHOST_MAX);
        assert_non_null(strstr(b.data, help));
        free(b.data);

        assert_int_equal(http(admin, "/segments", NULL, &b), 200);
        assert_non_null(strstr(b.data, "\"name\":\"node-a\""));
        assert_non_null(strstr(b.data, "\"size\":1048576"));
        free(b.data);

        assert_int_equal(http(admin, "/keys?prefix=k&limit=10", NULL, &b), 200);
        assert_string_equal(b.data, "[\"k1\",\"k2\"]");
        free(b.data);

        assert_int_equal(http(admin, "/keys?limit=x", NULL, &b), 400);
        free(b.data);

        assert_int_equal(http(admin, "/key/a%20b%2Fc", NULL, &b), 200);
        assert_non_null(strstr(b.data, "\"key\":\"a b/c\""));
        assert_non_null(strstr(b.data, "\"state\":\"COMPLETE\""));
        assert_non_null(strstr(b.data, "\"size\":50"));
        assert_non_null(strstr(b.data, "\"segment\":\"node-a\""));
        free(b.data);

        assert_int_equal(http(admin, "/key/missing", NULL, &b), 404);
        assert_non_null(strstr(b.data, "\"code\":-10304"));
        free(b.data);

        assert_int_equal(http(admin, "/nope", NULL, &b), 404);
        free(b.data);
        assert_int_equal(http(admin, "/health", "POST", &b), 405);
        free(b.data);
    }

    /* The embedded metadata server answers. */
    {
        const char *url = dango_store_master_metadata_url(m) + 7;
        char        host[64];
        http_buf_t  b;

        snprintf(host, sizeof(host), "%.*s", (int)(strchr(url, '/') - url),
                 url);
        assert_int_equal(http(host, "/health", NULL, &b), 200);
        free(b.data);
    }

    /* Remove, remove-match, report-bad, unmount. */
    {
        char                        *k2[1] = {"k2"};
        Dango__Store__KeysReq        greq  = DANGO__STORE__KEYS_REQ__INIT;
        Dango__Store__GetResp       *gresp;
        Dango__Store__StatusList    *resp;
        Dango__Store__RemoveMatchReq rm = DANGO__STORE__REMOVE_MATCH_REQ__INIT;
        Dango__Store__ReportBadReq   rb = DANGO__STORE__REPORT_BAD_REQ__INIT;
        Dango__Store__UnmountReq     um = DANGO__STORE__UNMOUNT_REQ__INIT;
        Dango__Store__CountResp     *cnt;
        int64_t                      removed = 0, deferred = 1;

        /* k2 read: its locations may be cached for 300 ms, so a forced
         * remove waits that long (and grants no new window meanwhile). */
        greq.n_keys = 1;
        greq.keys   = k2;
        assert_dango_ok(dango_rpc_call_pb(cli, DANGO_STORE_M_GET_REPLICAS,
                                          &greq.base,
                                          &dango__store__get_resp__descriptor,
                                          (ProtobufCMessage **)&gresp, 0));
        assert_int_equal(gresp->items[0]->cache_ms, 299);
        dango__store__get_resp__free_unpacked(gresp, NULL);
        resp = keys_call(cli, DANGO_STORE_M_REMOVE, k2, 1, 1);
        assert_int_equal(resp->status[0], DANGO_EAGAIN);
        assert_in_range(resp->retry_ms, 200, 300);
        usleep(resp->retry_ms * 1000u);
        dango__store__status_list__free_unpacked(resp, NULL);
        assert_dango_ok(dango_rpc_call_pb(cli, DANGO_STORE_M_GET_REPLICAS,
                                          &greq.base,
                                          &dango__store__get_resp__descriptor,
                                          (ProtobufCMessage **)&gresp, 0));
        assert_int_equal(gresp->items[0]->cache_ms, 0);
        dango__store__get_resp__free_unpacked(gresp, NULL);
        resp = keys_call(cli, DANGO_STORE_M_REMOVE, k2, 1, 1);
        assert_int_equal(resp->status[0], 0);
        assert_int_equal(resp->retry_ms, 0);
        dango__store__status_list__free_unpacked(resp, NULL);

        rm.regex = "(";
        assert_dango_err(
            DANGO_EINVAL,
            dango_rpc_call_pb(cli, DANGO_STORE_M_REMOVE_MATCH, &rm.base,
                              &dango__store__count_resp__descriptor,
                              (ProtobufCMessage **)&cnt, 0));
        rm.regex = "^k";
        rm.force = 1;
        for (int i = 0; (i < 10) && (deferred > 0); i++) {
            assert_dango_ok(
                dango_rpc_call_pb(cli, DANGO_STORE_M_REMOVE_MATCH, &rm.base,
                                  &dango__store__count_resp__descriptor,
                                  (ProtobufCMessage **)&cnt, 0));
            removed += cnt->count;
            deferred = cnt->deferred;
            assert_true((deferred == 0) || (cnt->retry_ms > 0));
            usleep(cnt->retry_ms * 1000u);
            dango__store__count_resp__free_unpacked(cnt, NULL);
        }
        assert_int_equal(deferred, 0);
        assert_int_equal(removed, 1);

        rb.client  = &id;
        rb.key     = "k1";
        rb.segment = "node-a";
        assert_dango_err(DANGO_ENO_OBJECT,
                         call_msg(cli, DANGO_STORE_M_REPORT_BAD, &rb.base));

        um.client = &id;
        um.id_hi  = 1;
        um.id_lo  = 1;
        assert_dango_ok(call_msg(cli, DANGO_STORE_M_UNMOUNT, &um.base));
    }

    dango_rpc_client_destroy(cli);
    dango_store_master_destroy(m);
}

static void config_errors(void **state)
{
    dango_store_master_t *m = NULL;
    dango_store_master_t *m2;
    dango_config_t       *cfg;

    (void)state;
    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "MASTER_LISTEN", "127.0.0.1:0"));
    assert_dango_ok(dango_config_set(cfg, "MASTER_ADMIN_LISTEN", ""));
    assert_dango_ok(dango_config_set(cfg, "MASTER_EVICT_RATIO", "2"));
    assert_dango_err(DANGO_ECONFIG, dango_store_master_create(cfg, &m));
    assert_dango_ok(dango_config_set(cfg, "MASTER_EVICT_RATIO", "0.1"));
    assert_dango_ok(dango_config_set(cfg, "MASTER_EVICT_HIGH_WATERMARK", "0"));
    assert_dango_err(DANGO_ECONFIG, dango_store_master_create(cfg, &m));
    assert_dango_ok(dango_config_set(cfg, "MASTER_EVICT_HIGH_WATERMARK", "1"));
    assert_dango_ok(dango_config_set(cfg, "MASTER_LEASE_TTL", "0"));
    assert_dango_err(DANGO_ECONFIG, dango_store_master_create(cfg, &m));
    assert_dango_ok(dango_config_set(cfg, "MASTER_LEASE_TTL", "1s"));
    assert_dango_ok(dango_config_set(cfg, "MASTER_PUT_RELEASE_TIMEOUT", "1s"));
    assert_dango_err(DANGO_ECONFIG, dango_store_master_create(cfg, &m));
    assert_dango_ok(dango_config_set(cfg, "MASTER_PUT_RELEASE_TIMEOUT", "60s"));
    assert_dango_ok(dango_config_set(cfg, "MASTER_LISTEN", "nonsense"));
    assert_dango_err(DANGO_EINVAL, dango_store_master_create(cfg, &m));
    assert_null(m);

    /* Admin off; the same RPC address twice. */
    assert_dango_ok(dango_config_set(cfg, "MASTER_LISTEN", "127.0.0.1:0"));
    assert_dango_ok(dango_config_set(cfg, "MASTER_VIEW_VERSION", "77"));
    assert_dango_ok(dango_store_master_create(cfg, &m));
    assert_null(dango_store_master_admin_addr(m));
    assert_null(dango_store_master_metadata_url(m));
    assert_dango_ok(
        dango_config_set(cfg, "MASTER_LISTEN", dango_store_master_addr(m)));
    assert_dango_err(DANGO_EADDRINUSE, dango_store_master_create(cfg, &m2));
    {
        dango_rpc_client_t *cli;
        int32_t             status;

        assert_dango_ok(dango_rpc_client_create(dango_store_master_addr(m),
                                                NULL, NULL, &cli));
        assert_dango_ok(ping(cli, 5, &status));
        dango_rpc_client_destroy(cli);
    }
    dango_store_master_destroy(m);
    dango_store_master_destroy(NULL);
    dango_config_release(cfg);
}

/* A master with MASTER_HA refuses every call but ServiceReady until it has
 * been elected, from the very first call its RPC server takes. The probe
 * pings the master from inside dango_store_master_create(): the RPC
 * server logs "rpc server <addr>: listening" on the creating thread once
 * the loop serves it, and the log sink calls it right there, before the
 * create goes on. */
typedef struct ha_probe {
    pthread_t creator;
    int       busy; /* the probe's own calls log too */
    int       done;
    int       rc; /* of the Ping */
} ha_probe_t;

static void ha_probe_log(const dango_log_record_t *rec, void *arg)
{
    static const char   pre[] = "rpc server ", post[] = ": listening";
    const size_t        plen = sizeof(pre) - 1, qlen = sizeof(post) - 1;
    ha_probe_t         *p   = arg;
    size_t              len = strlen(rec->message);
    char                addr[128];
    dango_rpc_client_t *cli;

    dango_test_log_swallow(rec, NULL);
    if (!pthread_equal(pthread_self(), p->creator) || p->busy || p->done ||
        (len <= plen + qlen) || (len - plen - qlen >= sizeof(addr)) ||
        (strncmp(rec->message, pre, plen) != 0) ||
        (strcmp(rec->message + len - qlen, post) != 0)) {
        return;
    }

    memcpy(addr, rec->message + plen, len - plen - qlen);
    addr[len - plen - qlen] = '\0';
    p->busy                 = 1;
    p->rc                   = dango_rpc_client_create(addr, NULL, NULL, &cli);
    if (p->rc == 0) {
        Dango__Store__PingReq  req = DANGO__STORE__PING_REQ__INIT;
        Dango__Store__ClientId id  = client_id(9);

        req.client = &id;
        p->rc      = call_msg(cli, DANGO_STORE_M_PING, &req.base);
        dango_rpc_client_destroy(cli);
    }
    p->busy = 0;
    p->done = 1;
}

static void ha_standby_refuses_from_the_start(void **state)
{
    dango_store_master_t *m = NULL;
    dango_config_t       *cfg;
    dango_rpc_client_t   *cli;
    ha_probe_t            probe;
    int32_t               status;
    char                  adv[300];

    (void)state;
    memset(&probe, 0, sizeof(probe));
    probe.creator = pthread_self();
    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "MASTER_LISTEN", "127.0.0.1:0"));
    assert_dango_ok(dango_config_set(cfg, "MASTER_ADMIN_LISTEN", ""));
    /* No etcd there: the master stays a candidate, never elected. */
    assert_dango_ok(dango_config_set(cfg, "MASTER_HA", "etcd://127.0.0.1:1"));
    assert_dango_ok(dango_log_configure("rpc=debug"));
    dango_log_set_handler(ha_probe_log, &probe);
    assert_dango_ok(dango_store_master_create(cfg, &m));
    dango_log_set_handler(NULL, NULL);
    dango_test_quiet_logs();
    assert_dango_ok(dango_log_configure("rpc=warn"));

    assert_true(probe.done);
    assert_dango_err(DANGO_ENOT_LEADER, probe.rc);

    assert_dango_ok(
        dango_rpc_client_create(dango_store_master_addr(m), NULL, NULL, &cli));
    assert_dango_err(DANGO_ENOT_LEADER, ping(cli, 9, &status));
    assert_dango_ok(dango_rpc_call(cli, DANGO_STORE_M_SERVICE_READY, NULL, 0,
                                   NULL, NULL, 0));
    dango_rpc_client_destroy(cli);
    dango_store_master_destroy(m);

    /* An advertised address too long fails the create once the RPC server
     * is up (the election set up before it): all of it unwinds. */
    memset(adv, 'a', sizeof(adv) - 1);
    adv[sizeof(adv) - 1] = '\0';
    assert_dango_ok(dango_config_set(cfg, "MASTER_ADVERTISE", adv));
    m = NULL;
    assert_dango_err(DANGO_EINVAL, dango_store_master_create(cfg, &m));
    assert_null(m);
    dango_config_release(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rpc_end_to_end),
        cmocka_unit_test(config_errors),
        cmocka_unit_test(ha_standby_refuses_from_the_start),
    };
    int rc;

    unsetenv("DANGO_CLUSTER_TOKEN");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    dango_test_quiet_logs();
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
