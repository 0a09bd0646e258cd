/*
 * Admin HTTP server of the store master (libmicrohttpd, its own thread).
 *
 * DESIGN
 * Routes (GET or HEAD; another method on a known path is 405, an unknown
 * path 404):
 *   /health          200 "OK"
 *   /metrics         Prometheus text, every name prefixed dango_master_
 *   /segments        JSON array {name, id, client, base, size, used, status}
 *   /keys?prefix=P&limit=N
 *                    JSON array of complete keys in byte order (N: 1000 by
 *                    default, at most MS_ADMIN_KEYS_MAX)
 *   /key/<key>       JSON description of one object (the path is
 *                    URL-decoded by MHD), or 404 {"error", "code"}
 * Every reply is built on the master's loop through dango_loop_run_sync(),
 * so the state is read by its owner thread only; the HTTP thread merely
 * sends the text. Keys that are not UTF-8 are shown with '?' for the
 * offending bytes (JSON strings must be UTF-8).
 */
#include "store/store_master_int.h"

#include <errno.h>
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

#define MS_ADMIN_KEYS_DEFAULT 1000
#define MS_ADMIN_KEYS_MAX     65536
#define MS_ADMIN_CONN_LIMIT   64
#define MS_ADMIN_IDLE_S       30

/* One admin request, answered on the loop. */
typedef struct ms_admin_req {
    dango_store_master_t *m;
    const char           *path;
    const char           *prefix;
    size_t                limit;
    unsigned              status; /* HTTP status */
    const char           *type;
    char                 *body; /* dango_malloc, or NULL on ENOMEM */
    size_t                len;
} ms_admin_req_t;

/* Marks a request past its first handler call. */
static int ms_admin_seen;

/* ---------- text building ---------- */

typedef struct ms_text {
    char  *buf;
    size_t len;
    size_t cap;
    int    oom;
} ms_text_t;

static void text_printf(ms_text_t *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void text_printf(ms_text_t *t, const char *fmt, ...)
{
    va_list ap;
    int     n;

    if (t->oom) {
        return;
    }

    for (;;) {
        size_t room = t->cap - t->len;

        va_start(ap, fmt);
        n = vsnprintf(t->buf + t->len, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->oom = 1;
            return;
        }
        if ((size_t)n < room) {
            t->len += (size_t)n;
            return;
        }

        size_t cap = (t->cap == 0) ? 8192 : t->cap * 2;
        char  *buf;

        while (cap - t->len <= (size_t)n) {
            cap *= 2;
        }
        buf = dango_realloc(t->buf, cap, "master_metrics");
        if (buf == NULL) {
            t->oom = 1;
            return;
        }
        t->buf = buf;
        t->cap = cap;
    }
}

static void metric(ms_text_t *t, const char *name, const char *type,
                   const char *help, uint64_t value)
{
    text_printf(t,
                "# HELP dango_master_%s %s\n# TYPE dango_master_%s %s\n"
                "dango_master_%s %llu\n",
                name, help, name, type, name, (unsigned long long)value);
}

int dango__store_master_metrics(dango_store_master_t *m, char **buf_p,
                                size_t *len_p)
{
    ms_state_t *st = m->st;
    ms_text_t   t  = {NULL, 0, 0, 0};
    char        name[96];
    char        help[160];

    metric(&t, "total_capacity_bytes", "gauge", "bytes of all mounted segments",
           st->capacity);
    metric(&t, "allocated_bytes", "gauge", "bytes allocated to records",
           st->used);
    metric(&t, "key_count", "gauge", "objects (any state)",
           dango_hmap_count(&st->objs));
    metric(&t, "soft_pin_key_count", "gauge",
           "objects with a soft pin deadline (expired ones are cleared by the "
           "next eviction pass)",
           st->soft_pinned);
    metric(&t, "active_clients", "gauge", "clients known and not expired",
           dango_hmap_count(&st->clients));
    metric(&t, "segment_count", "gauge", "mounted segments", st->nsegs);
    metric(&t, "inflight_puts", "gauge",
           "puts started and not ended (slots included)", st->ninflight);
    metric(&t, "parked_versions", "gauge",
           "detached puts or values whose regions wait to be freed",
           st->nparked);
    metric(&t, "parked_bytes", "gauge", "bytes held by parked regions",
           st->parked_bytes);
    metric(&t, "view_version", "gauge", "view version reported to clients",
           (uint64_t)m->view_version);

    for (int op = 0; op < MS_OP_MAX; op++) {
        const char *on = dango__store_master_op_names[op];

        snprintf(name, sizeof(name), "%s_requests_total", on);
        snprintf(help, sizeof(help), "%s requests", on);
        metric(&t, name, "counter", help, m->ops[op].requests);
        snprintf(name, sizeof(name), "%s_failures_total", on);
        snprintf(help, sizeof(help), "%s requests that failed as a whole", on);
        metric(&t, name, "counter", help, m->ops[op].failures);
        if ((op == MS_OP_PUT_START) || (op == MS_OP_UPSERT_START) ||
            (op == MS_OP_PUT_END) || (op == MS_OP_PUT_REVOKE) ||
            (op == MS_OP_PUT_BIND) || (op == MS_OP_GET) ||
            (op == MS_OP_EXIST) || (op == MS_OP_REMOVE)) {
            snprintf(name, sizeof(name), "batch_%s_items_total", on);
            snprintf(help, sizeof(help), "keys in %s requests", on);
            metric(&t, name, "counter", help, m->ops[op].items);
            snprintf(name, sizeof(name), "batch_%s_failed_items_total", on);
            snprintf(help, sizeof(help), "keys of %s requests that failed", on);
            metric(&t, name, "counter", help, m->ops[op].failed_items);
        }
    }

    metric(&t, "malformed_requests_total", "counter",
           "requests whose payload did not unpack", m->malformed);
    metric(&t, "attempted_evictions_total", "counter", "eviction passes",
           st->c.evict_attempts);
    metric(&t, "successful_evictions_total", "counter",
           "eviction passes that evicted something", st->c.evict_successes);
    metric(&t, "evicted_key_count", "counter", "objects evicted",
           st->c.evicted_keys);
    metric(&t, "evicted_size_bytes", "counter",
           "record bytes of the evicted replicas", st->c.evicted_bytes);
    metric(&t, "put_start_alloc_failures_total", "counter",
           "put starts that found no space", st->c.alloc_failures);
    metric(&t, "put_start_partial_allocations_total", "counter",
           "put starts that placed fewer replicas than asked",
           st->c.partial_allocs);
    metric(&t, "put_start_discard_cnt", "counter",
           "stale puts preempted by a new put", st->c.discards);
    metric(&t, "put_start_release_cnt", "counter",
           "parked or stale puts whose regions were freed", st->c.releases);
    metric(&t, "put_reclaimed_total", "counter",
           "puts freed after MASTER_PUT_RELEASE_TIMEOUT", st->c.reclaims);
    metric(&t, "clients_expired_total", "counter",
           "clients expired for silence", st->c.clients_expired);
    metric(&t, "zombie_puts_total", "counter",
           "puts revoked because their client expired", st->c.zombie_puts);
    metric(&t, "bad_replicas_total", "counter",
           "replicas dropped after a reader reported them", st->c.bad_replicas);
    metric(&t, "objects_rebuilt_total", "counter",
           "objects taken back from node reports after a restart",
           st->restored);
    metric(&t, "tombs_dropped_total", "counter",
           "removed records not passed to their node (too many at once)",
           st->c.tombs_dropped);
    metric(&t, "ghosts", "gauge",
           "objects lost with their nodes that a node coming back may still "
           "give back",
           dango_hmap_count(&st->ghosts));
    metric(&t, "ghosts_restored_total", "counter",
           "lost objects given back by a node that came back",
           st->c.ghosts_restored);
    snprintf(help, sizeof(help),
             "lost objects forgotten (more than %u at once)",
             (unsigned)MS_GHOST_MAX);
    metric(&t, "ghosts_dropped_total", "counter", help, st->c.ghosts_dropped);
    metric(&t, "fence_regions_total", "counter",
           "regions of a departed segment kept from new puts (late writes)",
           st->c.fence_regions);
    metric(&t, "fence_claimed_total", "counter",
           "fenced regions taken back by a node's record", st->c.fence_claimed);
    metric(&t, "fence_released_total", "counter",
           "fenced regions freed once no late write could come",
           st->c.fence_released);
    snprintf(help, sizeof(help),
             "regions not fenced (more than %u per segment, or no memory)",
             (unsigned)MS_FENCE_MAX);
    metric(&t, "fence_dropped_total", "counter", help, st->c.fence_dropped);
    metric(&t, "fenced_bytes", "gauge",
           "bytes of segments held by fences against late writes",
           st->fenced_bytes);
    metric(&t, "leases_granted_total", "counter", "read leases granted",
           st->c.leases_granted);
    metric(&t, "put_slots", "gauge",
           "slots reserved for one round trip puts and not yet bound",
           dango_hmap_count(&st->slots));
    metric(&t, "put_slots_granted_total", "counter", "slots reserved",
           st->c.slots_granted);
    metric(&t, "put_slots_bound_total", "counter",
           "slots that became a key's value", st->c.slots_bound);
    metric(&t, "put_slots_released_total", "counter",
           "slots given back, reclaimed, lost, or whose client expired",
           st->c.slots_released);
    {
        /* Disk tiers of the nodes (store_master_disk.c). */
        ms_disk_stats_t ds;

        dango__store_ms_disk_stats(st, &ds);
        metric(&t, "disk_capacity_bytes", "gauge",
               "bytes of the nodes' disk tiers", ds.capacity);
        metric(&t, "disk_used_bytes", "gauge",
               "bytes used on the nodes' disk tiers", ds.used);
        metric(&t, "disk_key_count", "gauge", "objects held on disk tiers",
               ds.keys);
        metric(&t, "disk_nodes", "gauge", "nodes with a disk tier", ds.nodes);
        metric(&t, "disk_offloads_total", "counter",
               "objects written to a disk tier on eviction", ds.offloads);
        metric(&t, "disk_offload_bytes_total", "counter",
               "record bytes written to disk tiers on eviction",
               ds.offload_bytes);
        metric(&t, "disk_offload_failures_total", "counter",
               "offloads that failed (disk full, write error, timeout)",
               ds.offload_failures);
        metric(&t, "disk_offload_skipped_total", "counter",
               "evictions postponed because the node's offload queue was full",
               ds.offload_skipped);
        metric(&t, "disk_hits_total", "counter",
               "reads served from a disk tier", ds.loads);
        metric(&t, "disk_hit_bytes_total", "counter",
               "record bytes read from disk tiers", ds.load_bytes);
        metric(&t, "disk_load_failures_total", "counter",
               "disk reads that failed (corrupt, gone, timeout, no memory)",
               ds.load_failures);
        metric(&t, "disk_promotions_total", "counter",
               "disk objects brought back into memory", ds.promotions);
        metric(&t, "disk_corrupt_total", "counter",
               "disk records dropped for a failed checksum", ds.corrupt);
        metric(&t, "disk_node_evicted_total", "counter",
               "disk records dropped by their node's disk LRU",
               ds.node_evicted);
        metric(&t, "disk_task_timeouts_total", "counter",
               "disk tasks not finished in time", ds.timeouts);
        metric(&t, "disk_put_waits", "gauge",
               "put starts held until offloads make room", ds.put_waits);
        metric(&t, "disk_put_wait_bytes", "gauge",
               "bytes of the put start requests held", ds.put_wait_bytes);
    }

    if (t.oom) {
        dango_free(t.buf);
        return DANGO_ENOMEM;
    }

    *buf_p = t.buf;
    *len_p = t.len;
    return 0;
}

/* ---------- JSON on the loop ---------- */

/* A JSON string of @len bytes at @s; non-UTF-8 bytes become '?'. */
static json_t *json_key(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    char   *copy;

    if (j != NULL) {
        return j;
    }

    copy = dango_malloc(len + 1, "master_admin_key");
    if (copy == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        copy[i] = ((unsigned char)s[i] < 0x80) ? s[i] : '?';
    }
    j = json_stringn(copy, len);
    dango_free(copy);
    return j;
}

static void req_json(ms_admin_req_t *r, unsigned status, json_t *j)
{
    size_t size;

    r->status = status;
    r->type   = "application/json";
    r->body   = NULL;
    if (j == NULL) {
        return;
    }

    size = json_dumpb(j, NULL, 0, JSON_COMPACT);
    if (size > 0) {
        r->body = dango_malloc(size, "master_admin_body");
        if ((r->body != NULL) &&
            (json_dumpb(j, r->body, size, JSON_COMPACT) != size)) {
            dango_free(r->body);
            r->body = NULL;
        }
    }
    r->len = size;
    json_decref(j);
}

static json_t *json_replica(const ms_ver_t *v, const ms_rep_t *r)
{
    return json_pack(
        "{s:s, s:I, s:I, s:s}", "segment", r->seg->name->name, "addr",
        (json_int_t)ms_rep_addr(r), "length", (json_int_t)v->rec_len, "status",
        (r->status == DANGO_STORE_REPLICA_COMPLETE) ? "COMPLETE"
                                                    : "PROCESSING");
}

static void admin_segments(ms_admin_req_t *r)
{
    ms_state_t *st  = r->m->st;
    json_t     *arr = json_array();

    for (size_t i = 0; (arr != NULL) && (i < st->nsegs); i++) {
        ms_seg_t *seg = st->segs[i];
        char      id[40];
        char      client[40];

        snprintf(id, sizeof(id), "%016llx-%016llx",
                 (unsigned long long)seg->id_hi,
                 (unsigned long long)seg->id_lo);
        snprintf(client, sizeof(client), "%016llx-%016llx",
                 (unsigned long long)seg->client->id.hi,
                 (unsigned long long)seg->client->id.lo);
        if (json_array_append_new(
                arr,
                json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s}", "name",
                          seg->name->name, "id", id, "client", client, "base",
                          (json_int_t)seg->base, "size", (json_int_t)seg->size,
                          "capacity", (json_int_t)seg->capacity, "used",
                          (json_int_t)seg->used, "status", "OK")) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }

    req_json(r, MHD_HTTP_OK, arr);
}

static void admin_keys(ms_admin_req_t *r)
{
    ms_state_t *st = r->m->st;
    ms_key_t    prefix;
    ms_obj_t  **objs;
    json_t     *arr;
    size_t      n;
    int         more;

    objs = dango_malloc(r->limit * sizeof(*objs), "master_admin_keys");
    if (objs == NULL) {
        req_json(r, MHD_HTTP_OK, NULL);
        return;
    }

    prefix.s   = r->prefix;
    prefix.len = strlen(r->prefix);
    n          = dango__store_ms_list(st, &prefix, NULL, r->limit, objs, &more);
    arr        = json_array();
    for (size_t i = 0; (arr != NULL) && (i < n); i++) {
        if (json_array_append_new(
                arr, json_key(objs[i]->key, objs[i]->node.key_len)) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }

    dango_free(objs);
    req_json(r, MHD_HTTP_OK, arr);
}

static void admin_key(ms_admin_req_t *r)
{
    ms_state_t *st  = r->m->st;
    uint64_t    now = dango_time_ns() / DANGO_NSEC_PER_MSEC;
    ms_key_t    key = {r->path, strlen(r->path)};
    ms_obj_t   *o   = NULL;
    ms_ver_t   *v;
    json_t     *reps;
    json_t     *j;
    int         status;

    status = ((key.len == 0) || (key.len > DANGO_STORE_KEY_MAX))
                 ? DANGO_EINVAL
                 : DANGO_ENO_OBJECT;
    if (status == DANGO_ENO_OBJECT) {
        dango_hmap_node_t *node = dango_hmap_find(
            &st->objs, key.s, key.len, dango_hmap_hash(key.s, key.len));

        o = (node != NULL) ? dango_container_of(node, ms_obj_t, node) : NULL;
    }
    if (o == NULL) {
        req_json(r,
                 (status == DANGO_ENO_OBJECT) ? MHD_HTTP_NOT_FOUND
                                              : MHD_HTTP_BAD_REQUEST,
                 json_pack("{s:s, s:i}", "error", dango_strerror(status),
                           "code", status));
        return;
    }

    v    = (o->cur != NULL) ? o->cur : o->pend;
    reps = json_array();
    for (int which = 0; (reps != NULL) && (which < 2); which++) {
        ms_ver_t *w = (which == 0) ? o->cur : o->pend;

        for (unsigned i = 0; (w != NULL) && (i < w->nrep); i++) {
            if ((w->rep[i].seg != NULL) &&
                (json_array_append_new(reps, json_replica(w, &w->rep[i])) !=
                 0)) {
                json_decref(reps);
                reps = NULL;
                break;
            }
        }
    }

    j = json_pack(
        "{s:o, s:I, s:I, s:I, s:s, s:I, s:b, s:I, s:o*}", "key",
        json_key(o->key, o->node.key_len), "size", (json_int_t)v->size,
        "checksum", (json_int_t)v->checksum, "put_id", (json_int_t)v->put_id,
        "state", (o->cur != NULL) ? "COMPLETE" : "PROCESSING", "lease_ms_left",
        (json_int_t)ms_ms_left(o->lease_timeout, now), "hard_pin",
        (int)o->hard_pin, "soft_pin_ms_left",
        (json_int_t)ms_ms_left(o->soft_pin_timeout, now), "replicas", reps);
    req_json(r, MHD_HTTP_OK, j);
}

static void admin_text(ms_admin_req_t *r, unsigned status, const char *text)
{
    r->status = status;
    r->type   = "text/plain";
    r->len    = strlen(text);
    r->body   = dango_strdup(text, "master_admin_body");
}

/* Runs on the loop: fills r->status, r->type, r->body. */
static void admin_route(void *arg)
{
    ms_admin_req_t *r = arg;

    if (strcmp(r->path, "/health") == 0) {
        admin_text(r, MHD_HTTP_OK, "OK");
    } else if (strcmp(r->path, "/metrics") == 0) {
        r->status = MHD_HTTP_OK;
        r->type   = "text/plain; version=0.0.4";
        if (dango__store_master_metrics(r->m, &r->body, &r->len) != 0) {
            r->body = NULL;
        }
    } else if (strcmp(r->path, "/segments") == 0) {
        admin_segments(r);
    } else if (strcmp(r->path, "/keys") == 0) {
        admin_keys(r);
    } else if (strncmp(r->path, "/key/", 5) == 0) {
        r->path += 5;
        admin_key(r);
    } else {
        admin_text(r, MHD_HTTP_NOT_FOUND, "no such path\n");
    }
}

static int known_path(const char *url)
{
    return (strcmp(url, "/health") == 0) || (strcmp(url, "/metrics") == 0) ||
           (strcmp(url, "/segments") == 0) || (strcmp(url, "/keys") == 0) ||
           (strncmp(url, "/key/", 5) == 0);
}

/* ---------- MHD callbacks ---------- */

static enum MHD_Result admin_send(struct MHD_Connection *conn, unsigned status,
                                  const char *type, char *body, size_t len)
{
    struct MHD_Response *resp;
    enum MHD_Result      ret;

    resp = MHD_create_response_from_buffer_with_free_callback(
        len, (body != NULL) ? body : (void *)"", dango_free);
    if (resp == NULL) {
        dango_free(body);
        return MHD_NO;
    }

    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    }
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result admin_handle(void *cls, struct MHD_Connection *conn,
                                    const char *url, const char *method,
                                    const char *version,
                                    const char *upload_data,
                                    size_t *upload_data_size, void **req_cls)
{
    dango_store_master_t *m = cls;
    ms_admin_req_t        r;
    const char           *limit;

    /* Answer once the whole request is in; drop any body. */
    if (*req_cls == NULL) {
        *req_cls = &ms_admin_seen;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }

    if (!known_path(url)) {
        return admin_send(conn, MHD_HTTP_NOT_FOUND, "text/plain",
                          dango_strdup("no such path\n", "master_admin_body"),
                          13);
    }
    if ((strcmp(method, MHD_HTTP_METHOD_GET) != 0) &&
        (strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)) {
        return admin_send(
            conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
            dango_strdup("method not allowed\n", "master_admin_body"), 19);
    }

    memset(&r, 0, sizeof(r));
    r.m    = m;
    r.path = url;
    r.prefix =
        MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "prefix");
    if (r.prefix == NULL) {
        r.prefix = "";
    }
    r.limit = MS_ADMIN_KEYS_DEFAULT;
    limit   = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "limit");
    if (limit != NULL) {
        char              *end;
        unsigned long long v;

        errno = 0;
        v     = strtoull(limit, &end, 10);
        if ((errno != 0) || (end == limit) || (*end != '\0') || (v == 0)) {
            return admin_send(conn, MHD_HTTP_BAD_REQUEST, "text/plain",
                              dango_strdup("bad limit\n", "master_admin_body"),
                              10);
        }
        r.limit = (v > MS_ADMIN_KEYS_MAX) ? MS_ADMIN_KEYS_MAX : (size_t)v;
    }

    dango_loop_run_sync(m->loop, admin_route, &r);
    if (r.body == NULL) {
        return MHD_NO; /* out of memory: MHD drops the connection */
    }

    return admin_send(conn, r.status, r.type, r.body, r.len);
}

static void admin_log(void *cls, const char *fmt, va_list ap)
{
    char   msg[256];
    size_t len;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    len = strlen(msg);
    while ((len > 0) && (msg[len - 1] == '\n')) {
        msg[--len] = '\0';
    }
    dango_debug("master admin: mhd: %s", msg);
}

/* ---------- internal API ---------- */

int dango__store_master_admin_start(dango_store_master_t *m)
{
    int fd;
    int rc;

    fd = dango_sock_listen(m->cfg.admin_listen, 64);
    if (fd < 0) {
        dango_error("master: cannot serve admin HTTP on %s: %s",
                    m->cfg.admin_listen, dango_strerror(fd));
        return fd;
    }

    rc = dango_sock_local_addr(fd, m->admin_addr, sizeof(m->admin_addr));
    if (rc != 0) {
        close(fd);
        return rc;
    }

    m->admin = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        admin_handle, m, MHD_OPTION_EXTERNAL_LOGGER, admin_log, m,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)MS_ADMIN_CONN_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)MS_ADMIN_IDLE_S, MHD_OPTION_END);
    if (m->admin == NULL) {
        char now_addr[sizeof(m->admin_addr)];

        dango_error("master: admin HTTP server did not start on %s",
                    m->cfg.admin_listen);
        /* MHD closes a socket it was given on some failures only: close
         * it if the number still is our listener. */
        if ((dango_sock_local_addr(fd, now_addr, sizeof(now_addr)) == 0) &&
            (strcmp(now_addr, m->admin_addr) == 0)) {
            close(fd);
        }
        return DANGO_EIO;
    }

    return 0;
}

void dango__store_master_admin_stop(dango_store_master_t *m)
{
    if (m->admin != NULL) {
        MHD_stop_daemon(m->admin);
        m->admin = NULL;
    }
}
