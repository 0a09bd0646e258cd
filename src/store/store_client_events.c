/*
 * The KV event publisher of a store node (STORE_KV_EVENTS_URL): tells a
 * conductor which KV blocks are stored on, or removed from, this node's
 * segment, so that its global KV index follows the pool.
 *
 * A thread polls the master (KvEvents) every STORE_KV_EVENTS_INTERVAL; the
 * master queues, per node that polls, the keys committed on and removed
 * from the node's segments (puts, upserts, copies, removes, evictions,
 * replicas reported bad). Keys of the form STORE_KV_EVENTS_PREFIX followed
 * by exactly 16 lowercase hex digits name KV blocks (the hex is the block
 * hash the conductor schedules with): the one form the conductor's
 * replicator builds a block's key in (CONDUCTOR_STORE_KEY_PREFIX), so a
 * published block is always one the conductor can copy, and no two keys
 * publish the same block. Other keys are not blocks and are skipped.
 * Each poll's events become one POST <url>/kv_events
 *
 *   {"node": "<segment name>", "events": [{"type": "stored"|"removed",
 *    "block_hashes": ["<hex>", ...]}, ...]}
 *
 * with runs of one type grouped and the order kept (a removed-then-stored
 * block ends stored). A POST that fails for want of a conductor (no
 * connection, 5xx) is retried on the next polls; one the conductor
 * refuses (4xx: e.g. no instance registered with this node) is dropped;
 * at most SC_EV_PENDING bodies wait, older ones are dropped and counted
 * (events are scheduling hints: a lost one costs a cache miss, never a
 * wrong byte).
 */
#include "store/store_client_int.h"

#include <inttypes.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "common/alloc.h"
#include "common/log_limit.h"
#include "common/time.h"
#include "metadata/md_curl.h"
#include "store/store_proto.h"

/* Bodies waiting for the conductor, at most. */
#define SC_EV_PENDING 16
/* Bound on one POST. */
#define SC_EV_POST_TIMEOUT_NS (2 * DANGO_NSEC_PER_SEC)
/* Bound on one poll of the master (ns). */
#define SC_EV_POLL_TIMEOUT (2 * DANGO_NSEC_PER_SEC)
/* Block hashes per event entry of one body. */
#define SC_EV_RUN_MAX 4096

struct sc_events {
    pthread_t       thread;
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    int             stop;
    CURL           *curl;
    char           *url; /* <STORE_KV_EVENTS_URL>/kv_events */
    char           *pending[SC_EV_PENDING];
    size_t          npending;
    uint64_t        bodies_dropped;
    uint64_t        polls_failed;
};

static dango_log_limit_t sc_ev_log_limit = DANGO_LOG_LIMIT_INIT(5);

int dango__sc_ev_block_hex(const char *prefix, size_t plen, const uint8_t *key,
                           size_t len, char *hex)
{
    if ((len != plen + 16) || (memcmp(key, prefix, plen) != 0)) {
        return 0;
    }
    for (size_t i = plen; i < len; i++) {
        char ch = (char)key[i];

        if (!(((ch >= '0') && (ch <= '9')) || ((ch >= 'a') && (ch <= 'f')))) {
            return 0;
        }
        hex[i - plen] = ch;
    }
    hex[16] = '\0';
    return 1;
}

/* The body of one poll's events, or NULL when none names a block. */
static char *ev_body(dango_store_client_t             *c,
                     const Dango__Store__KvEventsResp *r)
{
    const char *prefix = c->cfg.kv_events_prefix;
    size_t      plen   = strlen(prefix);
    json_t     *root   = json_object();
    json_t     *evs    = json_array();
    json_t     *run    = NULL;
    int         type   = -1;
    size_t      nblk   = 0;
    char       *body   = NULL;

    if ((root == NULL) || (evs == NULL)) {
        goto out;
    }

    for (size_t i = 0; i < r->n_events; i++) {
        const Dango__Store__KvEvent *e = r->events[i];
        char                         hex[17];

        if (!dango__sc_ev_block_hex(prefix, plen, e->key.data, e->key.len,
                                    hex)) {
            continue;
        }
        if ((run == NULL) || (type != (int)e->stored) ||
            (json_array_size(run) == SC_EV_RUN_MAX)) {
            json_t *ev = json_object();

            run  = json_array();
            type = (int)e->stored;
            if ((ev == NULL) || (run == NULL) ||
                (json_object_set_new(
                     ev, "type", json_string(type ? "stored" : "removed")) !=
                 0) ||
                (json_object_set_new(ev, "block_hashes", run) != 0) ||
                (json_array_append_new(evs, ev) != 0)) {
                json_decref(ev);
                goto out;
            }
        }
        if (json_array_append_new(run, json_string(hex)) != 0) {
            goto out;
        }
        nblk++;
    }

    if ((nblk > 0) &&
        (json_object_set_new(root, "node", json_string(c->name)) == 0) &&
        (json_object_set(root, "events", evs) == 0)) {
        body = json_dumps(root, JSON_COMPACT);
    }

out:
    json_decref(evs);
    json_decref(root);
    return body;
}

/* POSTs @body; 0 when done with it (taken, or refused for good: 4xx),
 * -1 to try again later (no connection, 5xx). */
static int ev_post(struct sc_events *ev, const char *body)
{
    struct curl_slist *hdr  = curl_slist_append(NULL, "Content-Type: "
                                                       "application/json");
    long               code = 0;
    CURLcode           cc;

    curl_easy_reset(ev->curl);
    dango__curl_setup(ev->curl, ev->url, hdr, SC_EV_POST_TIMEOUT_NS,
                      SC_EV_POST_TIMEOUT_NS, NULL, NULL);
    curl_easy_setopt(ev->curl, CURLOPT_POSTFIELDS, body);
    cc = curl_easy_perform(ev->curl);
    if (cc == CURLE_OK) {
        curl_easy_getinfo(ev->curl, CURLINFO_RESPONSE_CODE, &code);
    }
    curl_slist_free_all(hdr);

    if ((cc == CURLE_OK) && (code >= 400) && (code < 500)) {
        /* Refused for good (e.g. no instance registered with this node
         * yet): sending the same body again cannot succeed. */
        dango_error_limited(&sc_ev_log_limit,
                            "store: KV events to %s refused (HTTP %ld): "
                            "batch dropped",
                            ev->url, code);
        ev->bodies_dropped++;
        return 0;
    }
    if ((cc != CURLE_OK) || (code < 200) || (code > 299)) {
        dango_error_limited(
            &sc_ev_log_limit, "store: KV events to %s: %s (HTTP %ld)", ev->url,
            (cc != CURLE_OK) ? curl_easy_strerror(cc) : "server error", code);
        return -1;
    }
    return 0;
}

static void ev_queue(struct sc_events *ev, char *body)
{
    if (ev->npending == SC_EV_PENDING) {
        free(ev->pending[0]);
        memmove(&ev->pending[0], &ev->pending[1],
                (SC_EV_PENDING - 1) * sizeof(ev->pending[0]));
        ev->npending--;
        ev->bodies_dropped++;
        dango_error_limited(&sc_ev_log_limit,
                            "store: KV events: conductor unreachable, %" PRIu64
                            " batches dropped so far",
                            ev->bodies_dropped);
    }
    ev->pending[ev->npending++] = body;
}

static void ev_flush(struct sc_events *ev)
{
    size_t sent = 0;

    while ((sent < ev->npending) && (ev_post(ev, ev->pending[sent]) == 0)) {
        free(ev->pending[sent]);
        sent++;
    }
    memmove(&ev->pending[0], &ev->pending[sent],
            (ev->npending - sent) * sizeof(ev->pending[0]));
    ev->npending -= sent;
}

static void ev_poll(dango_store_client_t *c, struct sc_events *ev)
{
    Dango__Store__KvEventsReq   req  = DANGO__STORE__KV_EVENTS_REQ__INIT;
    Dango__Store__ClientId      cid  = DANGO__STORE__CLIENT_ID__INIT;
    Dango__Store__KvEventsResp *resp = NULL;
    int                         rc;

    cid.hi     = c->id_hi;
    cid.lo     = c->id_lo;
    req.client = &cid;
    rc         = dango__sc_call(c, DANGO_STORE_M_KV_EVENTS, &req.base,
                                &dango__store__kv_events_resp__descriptor,
                                (ProtobufCMessage **)&resp,
                                DANGO_MIN(c->cfg.rpc_timeout, SC_EV_POLL_TIMEOUT));
    if (rc != 0) {
        ev->polls_failed++;
        return;
    }

    if (resp->dropped > 0) {
        dango_error_limited(&sc_ev_log_limit,
                            "store: master dropped %" PRIu64
                            " KV events of this node (queue full)",
                            resp->dropped);
    }
    if (resp->n_events > 0) {
        char *body = ev_body(c, resp);

        if (body != NULL) {
            ev_queue(ev, body);
        }
    }
    dango__store__kv_events_resp__free_unpacked(resp, NULL);
}

static void *ev_thread(void *arg)
{
    dango_store_client_t *c  = arg;
    struct sc_events     *ev = c->events;

    pthread_mutex_lock(&ev->lock);
    while (!ev->stop) {
        struct timespec ts;
        uint64_t        ns;

        pthread_mutex_unlock(&ev->lock);
        ev_poll(c, ev);
        ev_flush(ev);
        pthread_mutex_lock(&ev->lock);

        clock_gettime(CLOCK_MONOTONIC, &ts);
        ns = (uint64_t)ts.tv_nsec + c->cfg.kv_events_interval;
        ts.tv_sec += (time_t)(ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        while (!ev->stop &&
               (pthread_cond_timedwait(&ev->cond, &ev->lock, &ts) == 0)) {
        }
    }
    pthread_mutex_unlock(&ev->lock);

    /* A last poll and one try to deliver, so a clean shutdown loses
     * nothing the conductor could still take (not when the master is
     * known lost: the poll would only wait for its timeout). */
    if (__atomic_load_n(&c->health, __ATOMIC_RELAXED) == 0) {
        ev_poll(c, ev);
    }
    ev_flush(ev);
    return NULL;
}

int dango__sc_events_start(dango_store_client_t *c)
{
    struct sc_events  *ev;
    pthread_condattr_t ca;
    const char        *url = c->cfg.kv_events_url;
    size_t             len;
    int                rc;

    if ((url == NULL) || (url[0] == '\0')) {
        return 0;
    }
    if (c->seg_base == NULL) {
        dango_warn("store client: STORE_KV_EVENTS_URL is set but this client "
                   "contributes no segment: no KV events to publish");
        return 0;
    }
    if (strncmp(url, "http://", 7) != 0) {
        dango_error("store client: STORE_KV_EVENTS_URL %s: only http:// "
                    "URLs are supported",
                    url);
        return DANGO_ECONFIG;
    }

    rc = dango__curl_global("store client: KV events");
    if (rc != 0) {
        return rc;
    }

    ev = dango_calloc(1, sizeof(*ev), "store_events");
    if (ev == NULL) {
        return DANGO_ENOMEM;
    }

    len     = strlen(url);
    ev->url = dango_malloc(len + sizeof("/kv_events"), "store_events");
    if (ev->url == NULL) {
        dango_free(ev);
        return DANGO_ENOMEM;
    }
    while ((len > 0) && (url[len - 1] == '/')) {
        len--;
    }
    memcpy(ev->url, url, len);
    memcpy(ev->url + len, "/kv_events", sizeof("/kv_events"));

    ev->curl = curl_easy_init();
    if (ev->curl == NULL) {
        dango_free(ev->url);
        dango_free(ev);
        return DANGO_ENOMEM;
    }

    pthread_mutex_init(&ev->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ev->cond, &ca);
    pthread_condattr_destroy(&ca);

    c->events = ev;
    rc        = pthread_create(&ev->thread, NULL, ev_thread, c);
    if (rc != 0) {
        c->events = NULL;
        pthread_cond_destroy(&ev->cond);
        pthread_mutex_destroy(&ev->lock);
        curl_easy_cleanup(ev->curl);
        dango_free(ev->url);
        dango_free(ev);
        return dango_err_from_errno(rc);
    }

    dango_info("store client %s: publishing KV events to %s", c->name, ev->url);
    return 0;
}

void dango__sc_events_stop(dango_store_client_t *c)
{
    struct sc_events *ev = c->events;

    if (ev == NULL) {
        return;
    }

    pthread_mutex_lock(&ev->lock);
    ev->stop = 1;
    pthread_cond_signal(&ev->cond);
    pthread_mutex_unlock(&ev->lock);
    pthread_join(ev->thread, NULL);

    for (size_t i = 0; i < ev->npending; i++) {
        free(ev->pending[i]);
    }
    pthread_cond_destroy(&ev->cond);
    pthread_mutex_destroy(&ev->lock);
    curl_easy_cleanup(ev->curl);
    dango_free(ev->url);
    dango_free(ev);
    c->events = NULL;
}
