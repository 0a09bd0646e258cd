/*
 * The conductor's HTTP service (libmicrohttpd + jansson): instance
 * registry, scheduling, KV events, instances and metrics.
 *
 * DESIGN
 * One scheduler (dango_conductor_t) behind one mutex. MHD runs a single
 * internal polling thread, so requests are served one at a time anyway;
 * the mutex only makes create/destroy and that thread safe against each
 * other. A request body is gathered up to CONDUCTOR_MAX_BODY (beyond it
 * the rest is drained and the answer is 413), parsed whole, checked
 * completely before anything changes (a batch of KV events with one bad
 * event changes nothing), and answered with JSON; every error is a 4xx
 * with {"error": "..."} naming the field at fault.
 *
 * Routes and bodies are in conductor.h (dango_conductor_server_create)
 * and docs/design/conductor.md. Block hashes travel as JSON integers
 * (0 .. 2^63-1) or as strings of up to 16 hex digits (the full 64 bits).
 * Times in the scheduler are the monotonic clock in seconds.
 */
#include "conductor/conductor_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "common/alloc.h"
#include "common/time.h"
#include "net/sock.h"

#define SRV_CONN_LIMIT 256
#define SRV_IDLE_S     30

/* Metrics of the service itself. */
typedef struct srv_metrics {
    uint64_t http_requests;
    uint64_t http_4xx;
    uint64_t schedule_ok;
    uint64_t schedule_rejected;
    uint64_t kv_event_batches;
    uint64_t kv_events;
    uint64_t replications;
    uint64_t replication_blocks;
    double   decide_seconds; /* sum of decision times */
    uint64_t decide_count;
    double   decide_max;
} srv_metrics_t;

struct dango_conductor_server {
    pthread_mutex_t                     lock;
    dango_conductor_t                  *c;
    cd_config_t                         cfg;
    struct MHD_Daemon                  *mhd;
    char                                addr[DANGO_ADDR_STR_MAX];
    char                               *node[DANGO_CONDUCTOR_MAX_INSTANCES];
    unsigned                            n_instances;
    dango_conductor_server_replicate_cb cb;
    void                               *cb_arg;
    cd_repl_t                          *repl; /* with CONDUCTOR_STORE_MASTER */
    srv_metrics_t                       m;
};

/* One HTTP request: its body so far. */
typedef struct srv_req {
    char  *body;
    size_t len, cap;
    int    too_big;
} srv_req_t;

/* A reply under construction. */
typedef struct srv_reply {
    unsigned    status;
    const char *type;
    char       *body; /* malloc'd by jansson or vasprintf (free()) */
} srv_reply_t;

/* ---------- replies ---------- */

static void reply_json(srv_reply_t *r, unsigned status, json_t *j)
{
    r->status = status;
    r->type   = "application/json";
    r->body   = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER |
                                  JSON_REAL_PRECISION(9));
    json_decref(j);
}

static void reply_error(srv_reply_t *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reply_error(srv_reply_t *r, unsigned status, const char *fmt, ...)
{
    char    msg[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    reply_json(r, status, json_pack("{s:s}", "error", msg));
}

/* ---------- field parsing ---------- */

/* A block hash: integer >= 0 or a string of 1..16 hex digits ("0x" ok). */
static int parse_hash(const json_t *v, uint64_t *out)
{
    const char *s, *p;
    uint64_t    h = 0;
    size_t      n = 0;

    if (json_is_integer(v) && (json_integer_value(v) >= 0)) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (!json_is_string(v)) {
        return -1;
    }

    s = json_string_value(v);
    p = ((s[0] == '0') && ((s[1] == 'x') || (s[1] == 'X'))) ? s + 2 : s;
    for (; *p != '\0'; p++, n++) {
        int d;

        if ((*p >= '0') && (*p <= '9')) {
            d = *p - '0';
        } else if ((*p >= 'a') && (*p <= 'f')) {
            d = *p - 'a' + 10;
        } else if ((*p >= 'A') && (*p <= 'F')) {
            d = *p - 'A' + 10;
        } else {
            return -1;
        }
        if (n == 16) {
            return -1;
        }
        h = (h << 4) | (uint64_t)d;
    }
    if (n == 0) {
        return -1;
    }
    *out = h;
    return 0;
}

/* Parses an array of hashes into a new array. 0, or -1 with @why set. */
static int parse_hashes(const json_t *arr, const char *field, uint64_t **keys_p,
                        size_t *n_p, char *why, size_t why_len)
{
    size_t    n = json_array_size(arr);
    uint64_t *keys;

    if (!json_is_array(arr)) {
        snprintf(why, why_len, "%s must be an array", field);
        return -1;
    }
    if (n > DANGO_CONDUCTOR_MAX_BLOCKS) {
        snprintf(why, why_len, "%s has %zu entries (at most %d)", field, n,
                 DANGO_CONDUCTOR_MAX_BLOCKS);
        return -1;
    }

    keys = dango_malloc((n > 0 ? n : 1) * sizeof(*keys), "conductor_keys");
    if (keys == NULL) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (parse_hash(json_array_get(arr, i), &keys[i]) != 0) {
            snprintf(why, why_len,
                     "%s[%zu] is not an integer >= 0 or a hex string of up "
                     "to 16 digits",
                     field, i);
            dango_free(keys);
            return -1;
        }
    }
    *keys_p = keys;
    *n_p    = n;
    return 0;
}

static const char *get_string(const json_t *o, const char *name)
{
    const json_t *v = json_object_get(o, name);

    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* An optional non-negative integer field: 0 absent (dflt), 1 set, -1 bad. */
static int get_uint(const json_t *o, const char *name, uint64_t dflt,
                    uint64_t *out)
{
    const json_t *v = json_object_get(o, name);

    if (v == NULL) {
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v) || (json_integer_value(v) < 0)) {
        return -1;
    }
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

/* ---------- the replicate hook ---------- */

static void srv_replicate(void *arg, int src, int dst, const uint64_t *keys,
                          size_t n)
{
    dango_conductor_server_t       *srv = arg;
    dango_conductor_instance_info_t si, di;

    srv->m.replications++;
    srv->m.replication_blocks += n;
    if ((dango_conductor_instance_info(srv->c, src, &si) != 0) ||
        (dango_conductor_instance_info(srv->c, dst, &di) != 0)) {
        return;
    }

    dango_debug("conductor: replicate %zu blocks from %s to %s", n, si.name,
                di.name);
    if (srv->cb != NULL) {
        srv->cb(srv->cb_arg, si.name, srv->node[src], di.name, srv->node[dst],
                keys, n);
    } else if (srv->repl != NULL) {
        if ((srv->node[dst] == NULL) ||
            (dango__cd_repl_enqueue(srv->repl, di.name, srv->node[dst], keys,
                                    n) != 0)) {
            /* Nowhere to copy to, or no room to queue: the destination
             * will not hold the blocks, so the index must not say so. */
            dango_conductor_kv_removed(srv->c, dst, keys, n);
        }
    }
}

/* ---------- routes ---------- */

static void route_register(dango_conductor_server_t *srv, const json_t *b,
                           srv_reply_t *r)
{
    const char            *name = get_string(b, "instance_id");
    const char            *role = get_string(b, "role");
    const char            *node = get_string(b, "node");
    dango_conductor_role_t ro;
    uint64_t               cache, vram;
    int                    id, rc;

    if ((name == NULL) || (name[0] == '\0') ||
        (strlen(name) >= DANGO_CONDUCTOR_NAME_MAX)) {
        reply_error(r, MHD_HTTP_BAD_REQUEST,
                    "instance_id must be a string of 1..%d bytes",
                    DANGO_CONDUCTOR_NAME_MAX - 1);
        return;
    }
    if ((role != NULL) && !strcmp(role, "prefill")) {
        ro = DANGO_CONDUCTOR_PREFILL;
    } else if ((role != NULL) && !strcmp(role, "decode")) {
        ro = DANGO_CONDUCTOR_DECODE;
    } else {
        reply_error(r, MHD_HTTP_BAD_REQUEST,
                    "role must be \"prefill\" or \"decode\"");
        return;
    }
    if ((get_uint(b, "cache_blocks", DANGO_CONDUCTOR_CAPACITY_INF, &cache) <
         0) ||
        (get_uint(b, "vram_tokens", 0, &vram) < 0)) {
        reply_error(r, MHD_HTTP_BAD_REQUEST,
                    "cache_blocks and vram_tokens must be integers >= 0");
        return;
    }
    if ((json_object_get(b, "node") != NULL) &&
        ((node == NULL) || (strlen(node) > 255))) {
        reply_error(r, MHD_HTTP_BAD_REQUEST,
                    "node must be a string of at most 255 bytes");
        return;
    }
    if (srv->n_instances >= srv->cfg.max_instances) {
        reply_error(r, MHD_HTTP_SERVICE_UNAVAILABLE,
                    "instance table full (%lu, CONDUCTOR_MAX_INSTANCES)",
                    srv->cfg.max_instances);
        return;
    }

    rc = dango_conductor_instance_add(srv->c, name, ro, (size_t)cache, vram,
                                      &id);
    if (rc == DANGO_EEXIST) {
        reply_error(r, MHD_HTTP_CONFLICT, "instance %s is already registered",
                    name);
        return;
    }
    if (rc != 0) {
        reply_error(r,
                    (rc == DANGO_ENOSPC) ? MHD_HTTP_SERVICE_UNAVAILABLE
                                         : MHD_HTTP_INTERNAL_SERVER_ERROR,
                    "cannot register %s: %s", name, dango_strerror(rc));
        return;
    }

    srv->node[id] =
        (node != NULL) ? dango_strdup(node, "conductor_node") : NULL;
    srv->n_instances++;
    dango_info("conductor: %s instance %s registered", role, name);
    reply_json(r, MHD_HTTP_OK,
               json_pack("{s:s,s:s,s:s,s:i}", "status", "registered",
                         "instance_id", name, "role", role, "id", id));
}

static void route_deregister(dango_conductor_server_t *srv, const json_t *b,
                             srv_reply_t *r)
{
    const char *name = get_string(b, "instance_id");
    int         id;

    if (name == NULL) {
        reply_error(r, MHD_HTTP_BAD_REQUEST, "instance_id must be a string");
        return;
    }

    id = dango_conductor_instance_find(srv->c, name);
    if (id < 0) {
        reply_error(r, MHD_HTTP_NOT_FOUND, "unknown instance %s", name);
        return;
    }

    dango_conductor_instance_remove(srv->c, id);
    dango_free(srv->node[id]);
    srv->node[id] = NULL;
    srv->n_instances--;
    dango_info("conductor: instance %s deregistered", name);
    reply_json(
        r, MHD_HTTP_OK,
        json_pack("{s:s,s:s}", "status", "deregistered", "instance_id", name));
}

/* The request's keys: hashed token ids or given block hashes. */
static int schedule_keys(dango_conductor_server_t *srv, const json_t *b,
                         uint64_t **keys_p, size_t *n_p, uint64_t *in_p,
                         srv_reply_t *r)
{
    const json_t  *toks   = json_object_get(b, "token_ids");
    const json_t  *hashes = json_object_get(b, "block_hashes");
    const uint32_t bs     = (uint32_t)srv->cfg.block_size;
    char           why[160];
    uint64_t       in;
    int            rc;

    if (hashes == NULL) {
        hashes = json_object_get(b, "seq_hashes");
    }
    if ((toks == NULL) == (hashes == NULL)) {
        reply_error(r, MHD_HTTP_BAD_REQUEST,
                    "give exactly one of token_ids and block_hashes");
        return -1;
    }

    if (toks != NULL) {
        size_t    n = json_array_size(toks), nk;
        uint32_t *t;
        uint64_t *keys;

        if (!json_is_array(toks) || (n == 0)) {
            reply_error(r, MHD_HTTP_BAD_REQUEST,
                        "token_ids must be a non-empty array");
            return -1;
        }
        if (n > srv->cfg.max_tokens) {
            reply_error(r, MHD_HTTP_CONTENT_TOO_LARGE,
                        "request of %zu tokens is above the limit of %lu "
                        "(CONDUCTOR_MAX_TOKENS)",
                        n, srv->cfg.max_tokens);
            return -1;
        }

        t    = dango_malloc(n * sizeof(*t), "conductor_tokens");
        keys = dango_malloc((n / bs + 1) * sizeof(*keys), "conductor_keys");
        if ((t == NULL) || (keys == NULL)) {
            dango_free(t);
            dango_free(keys);
            reply_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            const json_t *v = json_array_get(toks, i);

            if (!json_is_integer(v) || (json_integer_value(v) < 0) ||
                (json_integer_value(v) > UINT32_MAX)) {
                dango_free(t);
                dango_free(keys);
                reply_error(r, MHD_HTTP_BAD_REQUEST,
                            "token_ids[%zu] is not an integer in "
                            "0..4294967295",
                            i);
                return -1;
            }
            t[i] = (uint32_t)json_integer_value(v);
        }
        rc = dango_conductor_hash_tokens(t, n, bs, srv->cfg.seed, keys,
                                         n / bs + 1, &nk);
        dango_free(t);
        if (rc != 0) {
            dango_free(keys);
            reply_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "hashing: %s",
                        dango_strerror(rc));
            return -1;
        }
        *keys_p = keys;
        *n_p    = nk;
        *in_p   = n;
        return 0;
    }

    if (parse_hashes(hashes, "block_hashes", keys_p, n_p, why, sizeof(why)) !=
        0) {
        reply_error(r, MHD_HTTP_BAD_REQUEST, "%s", why);
        return -1;
    }
    rc = get_uint(b, "input_length", 0, &in);
    if ((rc <= 0) || (in == 0)) {
        reply_error(r, MHD_HTTP_BAD_REQUEST,
                    "block_hashes needs input_length, an integer >= 1");
    } else if (in > srv->cfg.max_tokens) {
        reply_error(r, MHD_HTTP_CONTENT_TOO_LARGE,
                    "input_length %llu is above the limit of %lu "
                    "(CONDUCTOR_MAX_TOKENS)",
                    (unsigned long long)in, srv->cfg.max_tokens);
    } else if (*n_p > (in + bs - 1) / bs) {
        reply_error(r, MHD_HTTP_BAD_REQUEST,
                    "%zu block_hashes are more than input_length %llu has "
                    "blocks of %u tokens",
                    *n_p, (unsigned long long)in, bs);
    } else if (*n_p == 0) {
        reply_error(r, MHD_HTTP_BAD_REQUEST, "block_hashes is empty");
    } else {
        *in_p = in;
        return 0;
    }
    dango_free(*keys_p);
    *keys_p = NULL;
    return -1;
}

static void route_schedule(dango_conductor_server_t *srv, const json_t *b,
                           srv_reply_t *r)
{
    dango_conductor_request_t       q = {0};
    dango_conductor_decision_t      dec;
    dango_conductor_instance_info_t pi, di;
    uint64_t                       *keys = NULL, in = 0, out;
    const char                     *rid = get_string(b, "request_id");
    double                          t0, now;
    size_t                          n = 0;
    json_t                         *j;
    int                             rc;

    if (get_uint(b, "output_length", 1, &out) < 0) {
        reply_error(r, MHD_HTTP_BAD_REQUEST,
                    "output_length must be an integer >= 0");
        return;
    }
    if ((json_object_get(b, "request_id") != NULL) && (rid == NULL)) {
        reply_error(r, MHD_HTTP_BAD_REQUEST, "request_id must be a string");
        return;
    }
    if (schedule_keys(srv, b, &keys, &n, &in, r) != 0) {
        return;
    }

    q.keys          = keys;
    q.n_keys        = n;
    q.input_tokens  = in;
    q.output_tokens = (out == 0) ? 1 : out;
    now             = (double)dango_time_ns() / 1e9;
    t0              = now;
    rc              = dango_conductor_decide(srv->c, &q, now, &dec);
    t0              = (double)dango_time_ns() / 1e9 - t0;
    srv->m.decide_seconds += t0;
    srv->m.decide_count++;
    srv->m.decide_max = DANGO_MAX(srv->m.decide_max, t0);
    if (rc == DANGO_ENOENT) {
        reply_error(r, MHD_HTTP_SERVICE_UNAVAILABLE,
                    "no %s instance registered",
                    (srv->c->n_prefill == 0) ? "prefill" : "decode");
        goto out;
    }
    if (rc != 0) {
        reply_error(r, MHD_HTTP_BAD_REQUEST, "cannot schedule: %s",
                    dango_strerror(rc));
        goto out;
    }

    if (dec.reject != DANGO_CONDUCTOR_ACCEPT) {
        srv->m.schedule_rejected++;
        j = json_pack("{s:s,s:s,s:f,s:f}", "error", "rejected", "reason",
                      dango_conductor_reject_name(dec.reject),
                      "predicted_ttft_s", dec.ttft_s, "predicted_tbt_ms",
                      dec.tbt_s * 1e3);
        if (rid != NULL) {
            json_object_set_new(j, "request_id", json_string(rid));
        }
        reply_json(r, MHD_HTTP_TOO_MANY_REQUESTS, j);
        goto out;
    }

    rc = dango_conductor_commit(srv->c, &q, &dec, now);
    if ((rc != 0) && (rc != DANGO_ENOMEM)) {
        reply_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "commit: %s",
                    dango_strerror(rc));
        goto out;
    }
    srv->m.schedule_ok++;
    dango_conductor_instance_info(srv->c, dec.prefill, &pi);
    dango_conductor_instance_info(srv->c, dec.decode, &di);
    j = json_object();
    if (rid != NULL) {
        json_object_set_new(j, "request_id", json_string(rid));
    }
    json_object_set_new(j, "prefill", json_string(pi.name));
    json_object_set_new(j, "decode", json_string(di.name));
    json_object_set_new(j, "block_size", json_integer(srv->cfg.block_size));
    json_object_set_new(j, "blocks", json_integer((json_int_t)n));
    json_object_set_new(j, "matched_blocks",
                        json_integer((json_int_t)dec.prefix_blocks));
    json_object_set_new(j, "matched_tokens",
                        json_integer((json_int_t)dec.prefix_tokens));
    json_object_set_new(j, "local_blocks",
                        json_integer((json_int_t)dec.local_blocks));
    json_object_set_new(j, "transfer_blocks",
                        json_integer((json_int_t)dec.transfer_blocks));
    if (dec.transfer_from >= 0) {
        dango_conductor_instance_info_t si;

        dango_conductor_instance_info(srv->c, dec.transfer_from, &si);
        json_object_set_new(j, "transfer_from", json_string(si.name));
    } else {
        json_object_set_new(j, "transfer_from", json_null());
    }
    json_object_set_new(j, "predicted_ttft_s", json_real(dec.ttft_s));
    json_object_set_new(j, "predicted_queue_s", json_real(dec.queue_s));
    json_object_set_new(j, "predicted_transfer_s", json_real(dec.transfer_s));
    json_object_set_new(j, "predicted_prefill_s", json_real(dec.prefill_s));
    json_object_set_new(j, "predicted_tbt_ms", json_real(dec.tbt_s * 1e3));
    json_object_set_new(j, "decode_tokens",
                        json_integer((json_int_t)(in + q.output_tokens)));
    reply_json(r, MHD_HTTP_OK, j);

out:
    dango_free(keys);
}

static void route_complete(dango_conductor_server_t *srv, const json_t *b,
                           srv_reply_t *r)
{
    const char *name = get_string(b, "decode");
    uint64_t    tokens;
    int         id;

    if ((name == NULL) || (get_uint(b, "tokens", 0, &tokens) <= 0)) {
        reply_error(r, MHD_HTTP_BAD_REQUEST,
                    "complete needs decode (a string) and tokens (the "
                    "decode_tokens of the schedule reply)");
        return;
    }

    id = dango_conductor_instance_find(srv->c, name);
    if ((id < 0) || (dango_conductor_decode_release(srv->c, id, tokens) != 0)) {
        reply_error(r, MHD_HTTP_NOT_FOUND,
                    "no reservation of %llu tokens on decode instance %s",
                    (unsigned long long)tokens, name);
        return;
    }
    reply_json(r, MHD_HTTP_OK, json_pack("{s:s}", "status", "released"));
}

static void route_kv_events(dango_conductor_server_t *srv, const json_t *b,
                            srv_reply_t *r)
{
    const char   *name   = get_string(b, "instance_id");
    const char   *node   = get_string(b, "node");
    const json_t *evs    = json_object_get(b, "events");
    uint64_t      stored = 0, removed = 0;
    char          why[160];
    int           ids[DANGO_CONDUCTOR_MAX_INSTANCES];
    int           nids = 0;

    if ((name == NULL) == (node == NULL)) {
        reply_error(r, MHD_HTTP_BAD_REQUEST,
                    "exactly one of instance_id and node must be a string");
        return;
    }
    if (!json_is_array(evs) || (json_array_size(evs) == 0)) {
        reply_error(r, MHD_HTTP_BAD_REQUEST,
                    "events must be a non-empty array");
        return;
    }

    if (name != NULL) {
        int id = dango_conductor_instance_find(srv->c, name);

        if ((id < 0) || (srv->c->inst[id].role != DANGO_CONDUCTOR_PREFILL)) {
            reply_error(r, MHD_HTTP_NOT_FOUND, "unknown prefill instance %s",
                        name);
            return;
        }
        ids[nids++] = id;
    } else {
        /* A store node's events: every prefill instance on that node. */
        for (int id = 0; id < srv->c->n_inst; id++) {
            if ((srv->node[id] != NULL) && !strcmp(srv->node[id], node) &&
                (srv->c->inst[id].role == DANGO_CONDUCTOR_PREFILL)) {
                ids[nids++] = id;
            }
        }
        if (nids == 0) {
            reply_error(r, MHD_HTTP_NOT_FOUND,
                        "no prefill instance registered with node %s", node);
            return;
        }
    }

    /* Check every event first: a bad batch changes nothing. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < json_array_size(evs); i++) {
            const json_t *ev   = json_array_get(evs, i);
            const char   *type = get_string(ev, "type");
            const json_t *h    = json_object_get(ev, "block_hashes");
            uint64_t     *keys = NULL;
            size_t        n    = 0;

            if (type == NULL) {
                type = get_string(ev, "event_type");
            }
            if (h == NULL) {
                h = json_object_get(ev, "seq_hashes");
            }
            if (!json_is_object(ev) || (type == NULL) ||
                (strcmp(type, "stored") && strcmp(type, "removed") &&
                 strcmp(type, "cleared"))) {
                reply_error(r, MHD_HTTP_BAD_REQUEST,
                            "events[%zu]: type must be stored, removed or "
                            "cleared",
                            i);
                return;
            }
            if (!strcmp(type, "cleared")) {
                for (int j = 0; (pass == 1) && (j < nids); j++) {
                    dango_conductor_kv_cleared(srv->c, ids[j]);
                }
                continue;
            }
            if (parse_hashes(h, "block_hashes", &keys, &n, why, sizeof(why)) !=
                0) {
                reply_error(r, MHD_HTTP_BAD_REQUEST, "events[%zu]: %s", i, why);
                return;
            }
            for (int j = 0; (pass == 1) && (j < nids); j++) {
                if (!strcmp(type, "stored")) {
                    dango_conductor_kv_stored(srv->c, ids[j], keys, n);
                    stored += n;
                } else {
                    dango_conductor_kv_removed(srv->c, ids[j], keys, n);
                    removed += n;
                }
            }
            dango_free(keys);
        }
    }

    srv->m.kv_event_batches++;
    srv->m.kv_events += json_array_size(evs);
    reply_json(r, MHD_HTTP_OK,
               json_pack("{s:I,s:I,s:I}", "events",
                         (json_int_t)json_array_size(evs), "stored",
                         (json_int_t)stored, "removed", (json_int_t)removed));
}

static void route_instances(dango_conductor_server_t *srv, srv_reply_t *r)
{
    json_t *arr = json_array();
    double  now = (double)dango_time_ns() / 1e9;

    for (int id = 0; id < srv->c->n_inst; id++) {
        dango_conductor_instance_info_t in;
        json_t                         *o;

        if (dango_conductor_instance_info(srv->c, id, &in) != 0) {
            continue;
        }
        o = json_object();
        json_object_set_new(o, "instance_id", json_string(in.name));
        json_object_set_new(o, "role",
                            json_string((in.role == DANGO_CONDUCTOR_PREFILL)
                                            ? "prefill"
                                            : "decode"));
        if (srv->node[id] != NULL) {
            json_object_set_new(o, "node", json_string(srv->node[id]));
        }
        json_object_set_new(o, "requests",
                            json_integer((json_int_t)in.requests));
        if (in.role == DANGO_CONDUCTOR_PREFILL) {
            json_object_set_new(
                o, "cache_blocks",
                (in.cache_capacity == DANGO_CONDUCTOR_CAPACITY_INF)
                    ? json_null()
                    : json_integer((json_int_t)in.cache_capacity));
            json_object_set_new(o, "cached_blocks",
                                json_integer((json_int_t)in.cached_blocks));
            json_object_set_new(
                o, "queue_s", json_real(DANGO_MAX(0.0, in.busy_until_s - now)));
        } else {
            json_object_set_new(o, "decode_tokens",
                                json_integer((json_int_t)in.decode_tokens));
        }
        json_array_append_new(arr, o);
    }
    reply_json(r, MHD_HTTP_OK, arr);
}

static void route_metrics(dango_conductor_server_t *srv, srv_reply_t *r)
{
    dango_conductor_stats_t st;
    char                   *text = NULL;
    size_t                  size = 0;
    FILE                   *f    = open_memstream(&text, &size);
    double                  now  = (double)dango_time_ns() / 1e9;

    if (f == NULL) {
        reply_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
        return;
    }

    dango_conductor_stats(srv->c, &st);
#define CD_METRIC(_name, _type, _help, _fmt, _val)                             \
    fprintf(f,                                                                 \
            "# HELP dango_conductor_" _name " " _help "\n"                     \
            "# TYPE dango_conductor_" _name " " _type "\n"                     \
            "dango_conductor_" _name " " _fmt "\n",                            \
            _val)
    fprintf(f, "# HELP dango_conductor_instances registered instances\n"
               "# TYPE dango_conductor_instances gauge\n");
    fprintf(f, "dango_conductor_instances{role=\"prefill\"} %u\n",
            srv->c->n_prefill);
    fprintf(f, "dango_conductor_instances{role=\"decode\"} %u\n",
            srv->c->n_decode);
    CD_METRIC("decisions_total", "counter", "scheduling decisions", "%llu",
              (unsigned long long)st.decisions);
    CD_METRIC("scheduled_total", "counter", "requests placed", "%llu",
              (unsigned long long)st.accepted);
    fprintf(f, "# HELP dango_conductor_rejected_total requests rejected "
               "early, by reason\n"
               "# TYPE dango_conductor_rejected_total counter\n");
    for (int k = 1; k < 4; k++) {
        fprintf(f, "dango_conductor_rejected_total{reason=\"%s\"} %llu\n",
                dango_conductor_reject_name(k),
                (unsigned long long)st.rejected[k]);
    }
    CD_METRIC("transfers_total", "counter",
              "placements that fetch a prefix from another instance", "%llu",
              (unsigned long long)st.transfers);
    CD_METRIC("transfer_blocks_total", "counter", "blocks fetched", "%llu",
              (unsigned long long)st.transfer_blocks);
    CD_METRIC("matched_blocks_total", "counter",
              "prefix blocks reused by placed requests", "%llu",
              (unsigned long long)st.matched_blocks);
    CD_METRIC("request_blocks_total", "counter", "blocks of placed requests",
              "%llu", (unsigned long long)st.request_blocks);
    CD_METRIC("index_keys", "gauge", "distinct blocks held by any instance",
              "%llu", (unsigned long long)st.index_keys);
    CD_METRIC("index_replicas", "gauge", "(block, instance) pairs held", "%llu",
              (unsigned long long)st.index_replicas);
    CD_METRIC("kv_event_batches_total", "counter", "KV event batches applied",
              "%llu", (unsigned long long)srv->m.kv_event_batches);
    CD_METRIC("kv_events_total", "counter", "KV events applied", "%llu",
              (unsigned long long)srv->m.kv_events);
    CD_METRIC("kv_stored_blocks_total", "counter", "blocks recorded stored",
              "%llu", (unsigned long long)st.kv_stored);
    CD_METRIC("kv_removed_blocks_total", "counter",
              "blocks removed or evicted from the models", "%llu",
              (unsigned long long)st.kv_removed);
    CD_METRIC("replications_total", "counter",
              "replications requested (hot prefixes copied)", "%llu",
              (unsigned long long)srv->m.replications);
    CD_METRIC("replication_blocks_total", "counter", "blocks to replicate",
              "%llu", (unsigned long long)srv->m.replication_blocks);
    if (srv->repl != NULL) {
        cd_repl_stats_t rs;

        dango__cd_repl_stats(srv->repl, &rs);
        CD_METRIC("store_copy_jobs_total", "counter",
                  "replications run against the store", "%llu",
                  (unsigned long long)rs.jobs_done);
        CD_METRIC("store_copy_jobs_dropped_total", "counter",
                  "replications dropped (queue full)", "%llu",
                  (unsigned long long)rs.jobs_dropped);
        CD_METRIC("store_copy_queue", "gauge", "replications waiting", "%llu",
                  (unsigned long long)rs.queued);
        CD_METRIC("store_copied_blocks_total", "counter",
                  "blocks copied to the destination node", "%llu",
                  (unsigned long long)rs.blocks_copied);
        CD_METRIC("store_present_blocks_total", "counter",
                  "blocks the destination node already held", "%llu",
                  (unsigned long long)rs.blocks_present);
        CD_METRIC("store_failed_blocks_total", "counter",
                  "blocks not copied (taken back out of the index)", "%llu",
                  (unsigned long long)rs.blocks_failed);
    }
    CD_METRIC("http_requests_total", "counter", "HTTP requests", "%llu",
              (unsigned long long)srv->m.http_requests);
    CD_METRIC("http_client_errors_total", "counter", "4xx replies", "%llu",
              (unsigned long long)srv->m.http_4xx);
    fprintf(f,
            "# HELP dango_conductor_decision_seconds time of a decision\n"
            "# TYPE dango_conductor_decision_seconds summary\n"
            "dango_conductor_decision_seconds_sum %.9f\n"
            "dango_conductor_decision_seconds_count %llu\n",
            srv->m.decide_seconds, (unsigned long long)srv->m.decide_count);
    CD_METRIC("decision_seconds_max", "gauge", "slowest decision", "%.9f",
              srv->m.decide_max);
    fprintf(f, "# HELP dango_conductor_instance_cached_blocks blocks in a "
               "prefill instance's cache model\n"
               "# TYPE dango_conductor_instance_cached_blocks gauge\n");
    for (int id = 0; id < srv->c->n_inst; id++) {
        dango_conductor_instance_info_t in;

        if ((dango_conductor_instance_info(srv->c, id, &in) == 0) &&
            (in.role == DANGO_CONDUCTOR_PREFILL)) {
            fprintf(f,
                    "dango_conductor_instance_cached_blocks{instance=\"%s\"} "
                    "%zu\n",
                    in.name, in.cached_blocks);
        }
    }
    fprintf(f, "# HELP dango_conductor_instance_queue_seconds predicted "
               "prefill queue\n"
               "# TYPE dango_conductor_instance_queue_seconds gauge\n");
    for (int id = 0; id < srv->c->n_inst; id++) {
        dango_conductor_instance_info_t in;

        if ((dango_conductor_instance_info(srv->c, id, &in) == 0) &&
            (in.role == DANGO_CONDUCTOR_PREFILL)) {
            fprintf(f,
                    "dango_conductor_instance_queue_seconds{instance=\"%s\"} "
                    "%.6f\n",
                    in.name, DANGO_MAX(0.0, in.busy_until_s - now));
        }
    }
    fprintf(f, "# HELP dango_conductor_instance_decode_tokens context tokens "
               "reserved or reported on a decode instance\n"
               "# TYPE dango_conductor_instance_decode_tokens gauge\n");
    for (int id = 0; id < srv->c->n_inst; id++) {
        dango_conductor_instance_info_t in;

        if ((dango_conductor_instance_info(srv->c, id, &in) == 0) &&
            (in.role == DANGO_CONDUCTOR_DECODE)) {
            fprintf(f,
                    "dango_conductor_instance_decode_tokens{instance=\"%s\"} "
                    "%llu\n",
                    in.name, (unsigned long long)in.decode_tokens);
        }
    }
#undef CD_METRIC
    fclose(f);
    r->status = MHD_HTTP_OK;
    r->type   = "text/plain; version=0.0.4";
    r->body   = text;
}

static void route(dango_conductor_server_t *srv, const char *url,
                  const char *method, srv_req_t *q, srv_reply_t *r)
{
    static const char *const posts[] = {"/register",   "/deregister",
                                        "/unregister", "/schedule",
                                        "/complete",   "/kv_events"};
    static const char *const gets[]  = {"/health", "/instances", "/metrics"};
    int                      is_post = -1, is_get = -1;
    json_t                  *body;
    json_error_t             jerr;

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(posts); i++) {
        if (!strcmp(url, posts[i])) {
            is_post = (int)i;
        }
    }
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(gets); i++) {
        if (!strcmp(url, gets[i])) {
            is_get = (int)i;
        }
    }

    if ((is_post < 0) && (is_get < 0)) {
        reply_error(r, MHD_HTTP_NOT_FOUND, "no such path %s", url);
        return;
    }
    if (is_get >= 0) {
        if (strcmp(method, MHD_HTTP_METHOD_GET) &&
            strcmp(method, MHD_HTTP_METHOD_HEAD)) {
            reply_error(r, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET on %s", url);
        } else if (is_get == 0) {
            reply_json(r, MHD_HTTP_OK, json_pack("{s:s}", "status", "ok"));
        } else if (is_get == 1) {
            route_instances(srv, r);
        } else {
            route_metrics(srv, r);
        }
        return;
    }

    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
        reply_error(r, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST on %s", url);
        return;
    }
    if (q->too_big) {
        reply_error(r, MHD_HTTP_CONTENT_TOO_LARGE,
                    "body above %zu bytes (CONDUCTOR_MAX_BODY)",
                    srv->cfg.max_body);
        return;
    }
    if (q->len == 0) {
        reply_error(r, MHD_HTTP_BAD_REQUEST,
                    "empty body (a JSON object is "
                    "expected)");
        return;
    }

    body = json_loadb(q->body, q->len, 0, &jerr);
    if (body == NULL) {
        reply_error(r, MHD_HTTP_BAD_REQUEST,
                    "malformed JSON at line %d column %d: %.120s", jerr.line,
                    jerr.column, jerr.text);
        return;
    }
    if (!json_is_object(body)) {
        reply_error(r, MHD_HTTP_BAD_REQUEST, "the body must be a JSON object");
        json_decref(body);
        return;
    }

    switch (is_post) {
    case 0:
        route_register(srv, body, r);
        break;
    case 1:
    case 2:
        route_deregister(srv, body, r);
        break;
    case 3:
        route_schedule(srv, body, r);
        break;
    case 4:
        route_complete(srv, body, r);
        break;
    default:
        route_kv_events(srv, body, r);
        break;
    }
    json_decref(body);
}

/* ---------- MHD callbacks ---------- */

static enum MHD_Result srv_handle(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
    dango_conductor_server_t *srv = cls;
    srv_req_t                *q   = *req_cls;
    srv_reply_t               r   = {0};
    struct MHD_Response      *resp;
    enum MHD_Result           ret;

    if (q == NULL) {
        q = dango_calloc(1, sizeof(*q), "conductor_http_req");
        if (q == NULL) {
            return MHD_NO;
        }
        *req_cls = q;
        return MHD_YES;
    }

    /* Gather the body; past the limit keep draining, answer 413. */
    if (*upload_size > 0) {
        if (!q->too_big && (q->len + *upload_size > srv->cfg.max_body)) {
            q->too_big = 1;
        }
        if (!q->too_big) {
            if (q->len + *upload_size > q->cap) {
                size_t cap = DANGO_MAX(q->cap * 2, q->len + *upload_size);
                char  *b   = dango_realloc(q->body, cap, "conductor_http_body");

                if (b == NULL) {
                    return MHD_NO;
                }
                q->body = b;
                q->cap  = cap;
            }
            memcpy(q->body + q->len, upload, *upload_size);
            q->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }

    pthread_mutex_lock(&srv->lock);
    srv->m.http_requests++;
    route(srv, url, method, q, &r);
    if ((r.status >= 400) && (r.status < 500)) {
        srv->m.http_4xx++;
    }
    pthread_mutex_unlock(&srv->lock);
    if (r.body == NULL) {
        return MHD_NO; /* out of memory: MHD drops the connection */
    }

    resp = MHD_create_response_from_buffer_with_free_callback(strlen(r.body),
                                                              r.body, free);
    if (resp == NULL) {
        free(r.body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r.type);
    if (r.status == MHD_HTTP_METHOD_NOT_ALLOWED) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
                                strstr(url, "/health") ||
                                        strstr(url, "/instances") ||
                                        strstr(url, "/metrics")
                                    ? "GET, HEAD"
                                    : "POST");
    }
    ret = MHD_queue_response(conn, r.status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void srv_completed(void *cls, struct MHD_Connection *conn,
                          void **req_cls, enum MHD_RequestTerminationCode toe)
{
    srv_req_t *q = *req_cls;

    if (q != NULL) {
        dango_free(q->body);
        dango_free(q);
        *req_cls = NULL;
    }
}

static void srv_log(void *cls, const char *fmt, va_list ap)
{
    char   msg[256];
    size_t len;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    len = strlen(msg);
    while ((len > 0) && (msg[len - 1] == '\n')) {
        msg[--len] = '\0';
    }
    dango_debug("conductor: mhd: %s", msg);
}

/* ---------- public API ---------- */

int dango_conductor_server_create(const dango_config_t               *cfg,
                                  dango_conductor_server_replicate_cb cb,
                                  void *arg, dango_conductor_server_t **srv_p)
{
    dango_conductor_server_t *srv;
    dango_conductor_params_t  p;
    int                       fd, rc;

    if (srv_p == NULL) {
        return DANGO_EINVAL;
    }

    srv = dango_calloc(1, sizeof(*srv), "conductor_server");
    if (srv == NULL) {
        return DANGO_ENOMEM;
    }

    rc = dango__conductor_config_load(cfg, &srv->cfg);
    if (rc != 0) {
        dango_free(srv);
        return rc;
    }

    rc = dango__conductor_params_from(&srv->cfg, &p);
    if (rc == 0) {
        p.replicate_cb  = srv_replicate;
        p.replicate_arg = srv;
        p.field_mask |= DANGO_CONDUCTOR_PARAM_REPLICATE_CB;
        rc = dango_conductor_create(&p, &srv->c);
    }
    if (rc != 0) {
        goto err_cfg;
    }

    srv->cb     = cb;
    srv->cb_arg = arg;
    pthread_mutex_init(&srv->lock, NULL);
    if ((cb == NULL) && (srv->cfg.store_master[0] != '\0')) {
        rc = dango__cd_repl_create(srv, cfg, srv->cfg.store_master,
                                   srv->cfg.store_key_prefix,
                                   srv->cfg.replicate_queue, &srv->repl);
        if (rc != 0) {
            goto err_conductor;
        }
    }
    fd = dango_sock_listen(srv->cfg.listen, 128);
    if (fd < 0) {
        dango_error("conductor: cannot listen on %s: %s", srv->cfg.listen,
                    dango_strerror(fd));
        rc = fd;
        goto err_conductor;
    }

    rc = dango_sock_local_addr(fd, srv->addr, sizeof(srv->addr));
    if (rc != 0) {
        close(fd);
        goto err_conductor;
    }

    srv->mhd = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        srv_handle, srv, MHD_OPTION_NOTIFY_COMPLETED, srv_completed, srv,
        MHD_OPTION_EXTERNAL_LOGGER, srv_log, srv, MHD_OPTION_LISTEN_SOCKET,
        (MHD_socket)fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)SRV_CONN_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)SRV_IDLE_S, MHD_OPTION_END);
    if (srv->mhd == NULL) {
        dango_error("conductor: HTTP server did not start on %s", srv->addr);
        close(fd);
        rc = DANGO_EIO;
        goto err_conductor;
    }

    dango_info("conductor: serving http://%s (policy %s)", srv->addr,
               srv->cfg.policy);
    *srv_p = srv;
    return 0;

err_conductor:
    dango__cd_repl_destroy(srv->repl);
    pthread_mutex_destroy(&srv->lock);
    dango_conductor_destroy(srv->c);
err_cfg:
    dango__conductor_config_free(&srv->cfg);
    dango_free(srv);
    return rc;
}

void dango_conductor_server_destroy(dango_conductor_server_t *srv)
{
    if (srv == NULL) {
        return;
    }

    MHD_stop_daemon(srv->mhd);
    dango__cd_repl_destroy(srv->repl); /* may still take blocks back */
    for (int i = 0; i < DANGO_CONDUCTOR_MAX_INSTANCES; i++) {
        dango_free(srv->node[i]);
    }
    dango_conductor_destroy(srv->c);
    pthread_mutex_destroy(&srv->lock);
    dango__conductor_config_free(&srv->cfg);
    dango_free(srv);
}

int dango_conductor_server_kv_removed(dango_conductor_server_t *srv,
                                      const char               *instance,
                                      const uint64_t *keys, size_t n)
{
    int id;

    if ((srv == NULL) || (instance == NULL) || ((n > 0) && (keys == NULL))) {
        return DANGO_EINVAL;
    }

    pthread_mutex_lock(&srv->lock);
    id = dango_conductor_instance_find(srv->c, instance);
    if ((id >= 0) && (srv->c->inst[id].role == DANGO_CONDUCTOR_PREFILL)) {
        dango_conductor_kv_removed(srv->c, id, keys, n);
    }
    pthread_mutex_unlock(&srv->lock);
    return (id < 0) ? DANGO_ENOENT : 0;
}

const char *dango_conductor_server_addr(const dango_conductor_server_t *srv)
{
    return srv->addr;
}
