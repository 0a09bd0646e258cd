/*
 * etcd v3 client over the JSON gateway (see etcd.h for the contract).
 *
 * DESIGN
 *
 * Wire: etcd serves its gRPC API as JSON at POST /v3/<service>/<method>
 * (etcd 3.4 and later; 3.3 used /v3beta, which is tried once when /v3
 * answers a plain 404). Keys and values travel base64-encoded, int64s as
 * decimal strings, and proto3 leaves out zero values, so a missing field
 * reads as 0. An error is a non-200 status with {"code": <gRPC code>,
 * "message": ...}.
 *
 * Requests: one curl easy handle per call, taken from a small pool so
 * connections are kept alive between calls. Failover is in etcd_call():
 * endpoints are tried in turn from the one that answered last; a request
 * that was certainly not sent (no connection, nothing written: curl's
 * CURLINFO_REQUEST_SIZE is 0) or that etcd refused as unavailable moves on
 * to the next endpoint; one that may have been applied is retried
 * elsewhere only when it is read-only.
 *
 * Watch: POST /v3/watch with one create_request streams newline-separated
 * JSON responses for as long as the connection lives. Each watch runs a
 * curl multi handle on its own thread, so dango__etcd_watch_stop() can
 * interrupt the poll at once with curl_multi_wakeup(). The thread remembers
 * the revision after the last event delivered and reconnects from there
 * (next endpoint, bounded exponential backoff) whenever the stream ends.
 *
 * Keeper: a thread per lease renewing it every TTL/3 with single
 * keepalive requests. The lease is held until (send time of the last
 * successful renewal + the TTL etcd reported); past that instant, or when
 * etcd reports the lease gone, the holder is told it lost the lease.
 */
#include "etcd.h"

#include "md_int.h"

#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>

#include "common/alloc.h"
#include "common/time.h"
#include "metadata/md_curl.h"

/* Largest unary response accepted. */
#define ETCD_RESP_MAX (512u << 20)
/* Longest single watch message accepted. */
#define ETCD_WATCH_LINE_MAX (64u << 20)
/* Watch reconnect backoff bounds. */
#define ETCD_BACKOFF_MIN_NS (50 * DANGO_NSEC_PER_MSEC)
#define ETCD_BACKOFF_MAX_NS (2 * DANGO_NSEC_PER_SEC)
/* Keeper: pause between renewal attempts after a failure. */
#define ETCD_KEEPER_RETRY_NS (200 * DANGO_NSEC_PER_MSEC)
/* gRPC status codes seen in gateway errors. */
#define GRPC_INVALID_ARGUMENT   3
#define GRPC_DEADLINE_EXCEEDED  4
#define GRPC_NOT_FOUND          5
#define GRPC_RESOURCE_EXHAUSTED 8
#define GRPC_UNAVAILABLE        14

struct dango__etcd {
    char             **endpoints; /* "host:port" */
    size_t             num_endpoints;
    size_t             current; /* atomic: endpoint that answered last */
    int                beta;    /* atomic: 1 when the API lives at /v3beta */
    uint64_t           connect_timeout_ns;
    uint64_t           timeout_ns;
    struct curl_slist *headers;
    dango__curl_pool_t pool;
};

struct dango__etcd_keeper {
    dango__etcd_t            *etcd;
    int64_t                   lease_id;
    uint64_t                  period_ns;
    dango__etcd_lease_lost_cb lost_cb;
    void                     *arg;
    uint64_t                  valid_until; /* atomic */
    pthread_t                 thread;
    pthread_mutex_t           lock;
    pthread_cond_t            cond;
    int                       stopping;
};

struct dango__etcd_watch {
    dango__etcd_t       *etcd;
    char                *key; /* raw bytes, for the snapshot range */
    size_t               key_len;
    unsigned             flags;
    int                  need_snapshot;
    char                *key_b64;
    char                *end_b64; /* NULL: the single key */
    dango__etcd_watch_cb cb;
    void                *arg;
    int64_t              next_rev; /* 0: "from now" until created */
    size_t               ep;
    CURLM               *multi;
    pthread_t            thread;
    pthread_mutex_t      lock;
    pthread_cond_t       cond;
    int                  stopping; /* atomic */
    int                  detached; /* under lock */
    /* State of the current stream (watch thread only). */
    dango__curl_buf_t line;
    int               created;
    int               restart; /* end this stream: compacted/canceled */
    int               failed;  /* the stream reported an error */
};

/* ---------- base64 ---------- */

static const char b64_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Encodes @len bytes; returns a NUL-terminated string or NULL (ENOMEM). */
static char *b64_encode(const void *data, size_t len)
{
    const unsigned char *in  = data;
    size_t               out = 4 * ((len + 2) / 3);
    char                *str = dango_malloc(out + 1, "etcd_b64");
    char                *p   = str;
    size_t               i;

    if (str == NULL) {
        return NULL;
    }

    for (i = 0; i + 2 < len; i += 3) {
        uint32_t v =
            ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];

        *p++ = b64_chars[(v >> 18) & 63];
        *p++ = b64_chars[(v >> 12) & 63];
        *p++ = b64_chars[(v >> 6) & 63];
        *p++ = b64_chars[v & 63];
    }

    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16;

        if (i + 1 < len) {
            v |= (uint32_t)in[i + 1] << 8;
        }
        *p++ = b64_chars[(v >> 18) & 63];
        *p++ = b64_chars[(v >> 12) & 63];
        *p++ = (i + 1 < len) ? b64_chars[(v >> 6) & 63] : '=';
        *p++ = '=';
    }

    *p = '\0';
    return str;
}

static int b64_value(char c)
{
    if ((c >= 'A') && (c <= 'Z')) {
        return c - 'A';
    } else if ((c >= 'a') && (c <= 'z')) {
        return c - 'a' + 26;
    } else if ((c >= '0') && (c <= '9')) {
        return c - '0' + 52;
    } else if ((c == '+') || (c == '-')) {
        return 62;
    } else if ((c == '/') || (c == '_')) {
        return 63;
    }

    return -1;
}

/*
 * Decodes @len characters (standard or URL alphabet, padding optional)
 * into a NUL-terminated allocation. Returns 0, DANGO_EMETADATA (not
 * base64) or DANGO_ENOMEM.
 */
static int b64_decode(const char *str, size_t len, char **out_p,
                      size_t *out_len_p)
{
    char    *out;
    size_t   n    = 0;
    uint32_t acc  = 0;
    int      bits = 0;

    while ((len > 0) && (str[len - 1] == '=')) {
        len--;
    }

    out = dango_malloc(len * 3 / 4 + 1, "etcd_b64_out");
    if (out == NULL) {
        return DANGO_ENOMEM;
    }

    for (size_t i = 0; i < len; i++) {
        int v = b64_value(str[i]);

        if (v < 0) {
            dango_free(out);
            return DANGO_EMETADATA;
        }

        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (char)((acc >> bits) & 0xff);
        }
    }

    out[n]     = '\0';
    *out_p     = out;
    *out_len_p = n;
    return 0;
}

/* ---------- JSON helpers ---------- */

/* An int64 field that etcd sends as a string (or a number); 0 if absent. */
static int64_t json_i64(const json_t *obj, const char *name)
{
    const json_t *v = json_object_get(obj, name);

    if (json_is_string(v)) {
        return strtoll(json_string_value(v), NULL, 10);
    } else if (json_is_integer(v)) {
        return (int64_t)json_integer_value(v);
    }

    return 0;
}

static int json_bool(const json_t *obj, const char *name)
{
    return json_is_true(json_object_get(obj, name));
}

/* Sets obj[name] = base64(data); 0 or DANGO_ENOMEM. */
static int json_set_b64(json_t *obj, const char *name, const void *data,
                        size_t len)
{
    char *b64 = b64_encode(data, len);
    int   rc;

    if (b64 == NULL) {
        return DANGO_ENOMEM;
    }

    rc = json_object_set_new(obj, name, json_string(b64));
    dango_free(b64);
    return (rc == 0) ? 0 : DANGO_ENOMEM;
}

static int json_set_i64(json_t *obj, const char *name, int64_t v)
{
    char num[24];

    snprintf(num, sizeof(num), "%" PRId64, v);
    return (json_object_set_new(obj, name, json_string(num)) == 0)
               ? 0
               : DANGO_ENOMEM;
}

/* Decodes the base64 field @name of @obj (absent: empty). */
static int json_b64(const json_t *obj, const char *name, char **out_p,
                    size_t *len_p)
{
    const json_t *v = json_object_get(obj, name);

    if (v == NULL) {
        return b64_decode("", 0, out_p, len_p);
    }

    if (!json_is_string(v)) {
        return DANGO_EMETADATA;
    }

    return b64_decode(json_string_value(v), json_string_length(v), out_p,
                      len_p);
}

static void kv_clear(dango__etcd_kv_t *kv)
{
    dango_free(kv->key);
    dango_free(kv->value);
    kv->key   = NULL;
    kv->value = NULL;
}

/* Fills @kv from a JSON mvccpb.KeyValue; values only when @with_value. */
static int kv_parse(const json_t *jkv, int with_value, dango__etcd_kv_t *kv)
{
    int rc;

    memset(kv, 0, sizeof(*kv));
    if (!json_is_object(jkv)) {
        return DANGO_EMETADATA;
    }

    rc = json_b64(jkv, "key", &kv->key, &kv->key_len);
    if ((rc == 0) && with_value) {
        rc = json_b64(jkv, "value", &kv->value, &kv->value_len);
    }

    if (rc != 0) {
        kv_clear(kv);
        return rc;
    }

    kv->create_revision = json_i64(jkv, "create_revision");
    kv->mod_revision    = json_i64(jkv, "mod_revision");
    kv->version         = json_i64(jkv, "version");
    kv->lease           = json_i64(jkv, "lease");
    return 0;
}

/* ---------- requests ---------- */

static void etcd_url(const dango__etcd_t *e, size_t ep, const char *path,
                     char *url, size_t len)
{
    snprintf(url, len, "http://%s%s/%s", e->endpoints[ep],
             __atomic_load_n(&e->beta, __ATOMIC_RELAXED) ? "/v3beta" : "/v3",
             path);
}

/*
 * One attempt on endpoint @ep. Returns 0 when an HTTP status came back
 * (in *status_p, body in @resp), or a transport error; *sent_p says
 * whether any byte of the request may have reached the server.
 */
static int etcd_attempt(dango__etcd_t *e, size_t ep, const char *path,
                        const char *body, dango__curl_buf_t *resp,
                        long *status_p, int *sent_p)
{
    char     errbuf[CURL_ERROR_SIZE] = "";
    char     url[512];
    long     req_size = 0;
    CURL    *curl;
    CURLcode code;
    int      rc;

    *sent_p = 0;
    curl    = dango__curl_pool_get(&e->pool);
    if (curl == NULL) {
        return DANGO_ENOMEM;
    }

    etcd_url(e, ep, path, url, sizeof(url));
    dango__curl_setup(curl, url, e->headers, e->connect_timeout_ns,
                      e->timeout_ns, errbuf, resp);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t)strlen(body));

    code = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_REQUEST_SIZE, &req_size);
    *sent_p = (req_size > 0);
    if (code == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status_p);
        rc = 0;
    } else if (resp->overflow) {
        dango_error("etcd %s: %s: response larger than %zu bytes",
                    e->endpoints[ep], path, resp->max);
        rc = DANGO_EMETADATA;
    } else if ((code == CURLE_OUT_OF_MEMORY) || resp->nomem) {
        rc = DANGO_ENOMEM;
    } else {
        dango_debug("etcd %s: %s: %s", e->endpoints[ep], path,
                    (errbuf[0] != '\0') ? errbuf : curl_easy_strerror(code));
        rc = (code == CURLE_OPERATION_TIMEDOUT) ? DANGO_ETIMEDOUT
                                                : DANGO_EMETADATA;
    }

    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
    dango__curl_pool_put(&e->pool, curl);
    return rc;
}

/* Maps a gateway error body {"code", "message"} to an error code. */
static int etcd_status_err(const dango__etcd_t *e, size_t ep, const char *path,
                           long status, const json_t *root, int *retry_p)
{
    const char *msg  = json_string_value(json_object_get(root, "message"));
    int64_t     code = json_i64(root, "code");

    *retry_p = 0;
    if (msg == NULL) {
        msg = "";
    }

    switch (code) {
    case GRPC_NOT_FOUND:
        return DANGO_ENOENT;
    case GRPC_INVALID_ARGUMENT:
    case GRPC_RESOURCE_EXHAUSTED:
        if ((strstr(msg, "too large") != NULL) ||
            (strstr(msg, "too many") != NULL) ||
            (code == GRPC_RESOURCE_EXHAUSTED)) {
            dango_debug("etcd %s: %s: %s", e->endpoints[ep], path, msg);
            return DANGO_EMSGSIZE;
        }
        dango_debug("etcd %s: %s: rejected: %s", e->endpoints[ep], path, msg);
        return DANGO_EINVAL;
    case GRPC_DEADLINE_EXCEEDED:
        dango_debug("etcd %s: %s: %s", e->endpoints[ep], path, msg);
        *retry_p = 1;
        return DANGO_ETIMEDOUT;
    case GRPC_UNAVAILABLE:
        dango_debug("etcd %s: %s: unavailable: %s", e->endpoints[ep], path,
                    msg);
        *retry_p = 1;
        return DANGO_EMETADATA;
    default:
        dango_error("etcd %s: %s: status %ld, code %" PRId64 ": %s",
                    e->endpoints[ep], path, status, code, msg);
        return DANGO_EMETADATA;
    }
}

/*
 * POSTs @req to <api>/@path with failover, and parses the JSON answer into
 * *resp_p. @idempotent allows retrying elsewhere a request that may have
 * been applied.
 */
static int etcd_call(dango__etcd_t *e, const char *path, json_t *req,
                     int idempotent, json_t **resp_p)
{
    size_t start      = __atomic_load_n(&e->current, __ATOMIC_RELAXED);
    int    tried_beta = 0;
    int    rc         = DANGO_EMETADATA;
    char  *body;

    body = json_dumps(req, JSON_COMPACT);
    if (body == NULL) {
        return DANGO_ENOMEM;
    }

    for (size_t i = 0; i < e->num_endpoints; i++) {
        size_t            ep   = (start + i) % e->num_endpoints;
        dango__curl_buf_t resp = {.max = ETCD_RESP_MAX};
        json_error_t      jerr;
        json_t           *root;
        long              status = 0;
        int               sent;
        int               retry;

        rc = etcd_attempt(e, ep, path, body, &resp, &status, &sent);
        if (rc != 0) {
            dango_free(resp.data);
            if (rc == DANGO_ENOMEM) {
                break;
            }
            if (!sent || idempotent) {
                continue;
            }
            /* Maybe applied: report it, and start elsewhere next time. */
            __atomic_store_n(&e->current, (ep + 1) % e->num_endpoints,
                             __ATOMIC_RELAXED);
            dango_error("etcd %s: %s: %s after sending; not retried",
                        e->endpoints[ep], path, dango_strerror(rc));
            goto out;
        }

        root = json_loadb((resp.data != NULL) ? resp.data : "", resp.len, 0,
                          &jerr);
        dango_free(resp.data);
        if ((status == 404) && (root == NULL) && !tried_beta) {
            /* A plain 404: an etcd that serves the API at the other path. */
            tried_beta = 1;
            __atomic_store_n(&e->beta, !__atomic_load_n(&e->beta, 0),
                             __ATOMIC_RELAXED);
            dango_info("etcd %s: trying the %s gateway path", e->endpoints[ep],
                       __atomic_load_n(&e->beta, 0) ? "/v3beta" : "/v3");
            i--;
            continue;
        }

        if (!json_is_object(root)) {
            dango_error("etcd %s: %s: status %ld, answer is not a JSON object"
                        " (%s): is this an etcd client port?",
                        e->endpoints[ep], path, status,
                        (root == NULL) ? jerr.text : "wrong type");
            json_decref(root);
            rc = DANGO_EMETADATA;
            continue;
        }

        if (status == 200) {
            __atomic_store_n(&e->current, ep, __ATOMIC_RELAXED);
            *resp_p = root;
            rc      = 0;
            goto out;
        }

        rc = etcd_status_err(e, ep, path, status, root, &retry);
        json_decref(root);
        if (retry && (idempotent || (rc == DANGO_EMETADATA))) {
            /* Unavailable is refused before it is applied. */
            continue;
        }

        /* An answer from etcd itself: this endpoint works. */
        __atomic_store_n(&e->current, ep, __ATOMIC_RELAXED);
        goto out;
    }

    if ((rc == DANGO_EMETADATA) || (rc == DANGO_ETIMEDOUT)) {
        dango_error("etcd: %s: no endpoint of %zu answered (last: %s)", path,
                    e->num_endpoints, dango_strerror(rc));
    }

out:
    free(body);
    return rc;
}

/* Creates a request object; NULL on ENOMEM. */
static json_t *req_new(void)
{
    return json_object();
}

/* Sets "key" and, for a prefix, "range_end" on @req. */
static int req_set_range(json_t *req, const void *key, size_t key_len,
                         int prefix)
{
    char  *end;
    size_t end_len;
    int    rc;

    rc = json_set_b64(req, "key", (key_len > 0) ? key : "\0",
                      (key_len > 0) ? key_len : 1);
    if ((rc != 0) || !prefix) {
        return rc;
    }

    end = dango_malloc(key_len + 1, "etcd_range_end");
    if (end == NULL) {
        return DANGO_ENOMEM;
    }

    end_len = dango__etcd_prefix_end(key, key_len, end);
    if (end_len == 0) {
        end[0]  = '\0';
        end_len = 1;
    }

    rc = json_set_b64(req, "range_end", end, end_len);
    dango_free(end);
    return rc;
}

static json_t *op_to_json(const dango__etcd_op_t *op)
{
    json_t *inner = req_new();
    json_t *outer = req_new();
    int     rc;

    if ((inner == NULL) || (outer == NULL)) {
        goto err;
    }

    rc = json_set_b64(inner, "key", op->key, op->key_len);
    if ((rc == 0) && (op->type == DANGO__ETCD_OP_PUT)) {
        rc = json_set_b64(inner, "value", (op->value != NULL) ? op->value : "",
                          op->value_len);
        if ((rc == 0) && (op->lease != 0)) {
            rc = json_set_i64(inner, "lease", op->lease);
        }
    }

    if ((rc != 0) || (json_object_set_new(outer,
                                          (op->type == DANGO__ETCD_OP_PUT)
                                              ? "request_put"
                                              : "request_delete_range",
                                          inner) != 0)) {
        inner = NULL; /* set_new consumed it even on failure */
        goto err;
    }

    return outer;

err:
    json_decref(inner);
    json_decref(outer);
    return NULL;
}

static json_t *cmp_to_json(const dango__etcd_cmp_t *cmp)
{
    static const char *const targets[] = {"CREATE", "MOD", "VERSION", "VALUE"};
    static const char *const fields[]  = {"create_revision", "mod_revision",
                                          "version", "value"};
    json_t                  *obj       = req_new();
    int                      rc;

    if ((obj == NULL) || ((unsigned)cmp->target > DANGO__ETCD_CMP_VALUE)) {
        json_decref(obj);
        return NULL;
    }

    rc = json_set_b64(obj, "key", cmp->key, cmp->key_len);
    if (rc == 0) {
        rc = json_object_set_new(obj, "target",
                                 json_string(targets[cmp->target]));
    }
    if (rc == 0) {
        rc = json_object_set_new(obj, "result", json_string("EQUAL"));
    }
    if (rc == 0) {
        if (cmp->target == DANGO__ETCD_CMP_VALUE) {
            rc = json_set_b64(obj, "value",
                              (cmp->value != NULL) ? cmp->value : "",
                              cmp->value_len);
        } else {
            rc = json_set_i64(obj, fields[cmp->target], cmp->rev);
        }
    }

    if (rc != 0) {
        json_decref(obj);
        return NULL;
    }

    return obj;
}

static int64_t header_revision(const json_t *resp)
{
    return json_i64(json_object_get(resp, "header"), "revision");
}

/* ---------- connection ---------- */

static int endpoint_check(const char *ep, size_t len)
{
    const char *colon = NULL;
    unsigned    port  = 0;

    if ((len == 0) || (len > 255)) {
        return DANGO_EINVAL;
    }

    if (ep[0] == '[') {
        const char *close = memchr(ep, ']', len);

        if ((close == NULL) || (close == ep + 1)) {
            return DANGO_EINVAL;
        }
        for (const char *p = ep + 1; p < close; p++) {
            if (!isxdigit((unsigned char)*p) && (*p != ':') && (*p != '.')) {
                return DANGO_EINVAL;
            }
        }
        colon = close + 1;
        if ((colon == ep + len) || (*colon != ':')) {
            return DANGO_EINVAL;
        }
    } else {
        colon = memchr(ep, ':', len);
        if ((colon == NULL) || (colon == ep)) {
            return DANGO_EINVAL;
        }
        for (const char *p = ep; p < colon; p++) {
            if (!isalnum((unsigned char)*p) && (*p != '.') && (*p != '-') &&
                (*p != '_')) {
                return DANGO_EINVAL;
            }
        }
    }

    colon++;
    if ((colon == ep + len) || (ep + len - colon > 5)) {
        return DANGO_EINVAL;
    }

    for (const char *p = colon; p < ep + len; p++) {
        if (!isdigit((unsigned char)*p)) {
            return DANGO_EINVAL;
        }
        port = port * 10 + (unsigned)(*p - '0');
    }

    return ((port == 0) || (port > 65535)) ? DANGO_EINVAL : 0;
}

int dango__etcd_open(const char *endpoints, uint64_t connect_timeout_ns,
                     uint64_t timeout_ns, dango__etcd_t **etcd_p)
{
    const char    *p;
    size_t         n = 1;
    dango__etcd_t *e;
    int            rc;

    if ((endpoints == NULL) || (etcd_p == NULL)) {
        return DANGO_EINVAL;
    }

    if (strncasecmp(endpoints, "etcd://", 7) == 0) {
        endpoints += 7;
    }

    for (p = endpoints; *p != '\0'; p++) {
        n += (*p == ',');
    }

    rc = dango__curl_global("etcd");
    if (rc != 0) {
        return rc;
    }

    e = dango_calloc(1, sizeof(*e), "etcd");
    if (e == NULL) {
        return DANGO_ENOMEM;
    }

    e->endpoints = dango_calloc(n, sizeof(*e->endpoints), "etcd_endpoints");
    if (e->endpoints == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free;
    }

    for (p = endpoints; e->num_endpoints < n;) {
        const char *comma = strchr(p, ',');
        size_t      len   = (comma != NULL) ? (size_t)(comma - p) : strlen(p);

        if (endpoint_check(p, len) != 0) {
            dango_debug("etcd endpoint '%.*s' of '%s' is malformed (want "
                        "host:port)",
                        (int)len, p, endpoints);
            rc = DANGO_EINVAL;
            goto err_free;
        }

        e->endpoints[e->num_endpoints] = dango_strndup(p, len, "etcd_ep");
        if (e->endpoints[e->num_endpoints] == NULL) {
            rc = DANGO_ENOMEM;
            goto err_free;
        }
        e->num_endpoints++;
        p += len + 1;
    }

    e->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (e->headers == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free;
    }
    {
        struct curl_slist *hdr = curl_slist_append(e->headers, "Expect:");

        if (hdr == NULL) {
            rc = DANGO_ENOMEM;
            goto err_free;
        }
        e->headers = hdr;
    }

    e->connect_timeout_ns = connect_timeout_ns;
    e->timeout_ns         = timeout_ns;
    dango__curl_pool_init(&e->pool);
    *etcd_p = e;
    return 0;

err_free:
    curl_slist_free_all(e->headers);
    for (size_t i = 0; i < e->num_endpoints; i++) {
        dango_free(e->endpoints[i]);
    }
    dango_free(e->endpoints);
    dango_free(e);
    return rc;
}

void dango__etcd_close(dango__etcd_t *etcd)
{
    if (etcd == NULL) {
        return;
    }

    dango__curl_pool_destroy(&etcd->pool);

    for (size_t i = 0; i < etcd->num_endpoints; i++) {
        dango_free(etcd->endpoints[i]);
    }

    curl_slist_free_all(etcd->headers);
    dango_free(etcd->endpoints);
    dango_free(etcd);
}

size_t dango__etcd_num_endpoints(const dango__etcd_t *etcd)
{
    return etcd->num_endpoints;
}

const char *dango__etcd_endpoint(const dango__etcd_t *etcd, size_t i)
{
    return (i < etcd->num_endpoints) ? etcd->endpoints[i] : NULL;
}

size_t dango__etcd_prefix_end(const char *prefix, size_t len, char *end)
{
    memcpy(end, prefix, len);
    while (len > 0) {
        if ((unsigned char)end[len - 1] < 0xff) {
            end[len - 1] = (char)((unsigned char)end[len - 1] + 1);
            return len;
        }
        len--;
    }

    return 0;
}

/* ---------- key/value ---------- */

void dango__etcd_kvs_free(dango__etcd_kv_t *kvs, size_t count)
{
    if (kvs == NULL) {
        return;
    }

    for (size_t i = 0; i < count; i++) {
        kv_clear(&kvs[i]);
    }

    dango_free(kvs);
}

/* Turns a RangeResponse into a kv array. */
static int range_parse(const json_t *resp, int keys_only,
                       dango__etcd_kv_t **kvs_p, size_t *count_p)
{
    const json_t     *arr = json_object_get(resp, "kvs");
    size_t            n   = json_is_array(arr) ? json_array_size(arr) : 0;
    dango__etcd_kv_t *kvs;
    size_t            i;
    int               rc = 0;

    if ((arr != NULL) && !json_is_array(arr)) {
        return DANGO_EMETADATA;
    }

    kvs = dango_calloc(n + 1, sizeof(*kvs), "etcd_kvs");
    if (kvs == NULL) {
        return DANGO_ENOMEM;
    }

    for (i = 0; i < n; i++) {
        rc = kv_parse(json_array_get(arr, i), !keys_only, &kvs[i]);
        if (rc != 0) {
            dango__etcd_kvs_free(kvs, i);
            return rc;
        }
    }

    *kvs_p   = kvs;
    *count_p = n;
    return 0;
}

/*
 * Sends @req, built with status @rc (a failed build is not sent), and frees
 * it either way; on success *@resp_p is the answer and *@rev_p (if not
 * NULL) its header revision. As etcd_call(), or the build's error.
 */
static int etcd_send(dango__etcd_t *e, const char *path, json_t *req, int rc,
                     int idempotent, json_t **resp_p, int64_t *rev_p)
{
    if (rc == 0) {
        rc = etcd_call(e, path, req, idempotent, resp_p);
    }
    json_decref(req);
    if ((rc == 0) && (rev_p != NULL)) {
        *rev_p = header_revision(*resp_p);
    }
    return rc;
}

static int etcd_range(dango__etcd_t *e, const void *key, size_t key_len,
                      int prefix, int keys_only, int64_t revision,
                      dango__etcd_kv_t **kvs_p, size_t *count_p, int64_t *rev_p)
{
    json_t *req = req_new();
    json_t *resp;
    int     rc;

    if (req == NULL) {
        return DANGO_ENOMEM;
    }

    rc = req_set_range(req, key, key_len, prefix);
    if ((rc == 0) && keys_only) {
        rc = json_object_set_new(req, "keys_only", json_true()) ? DANGO_ENOMEM
                                                                : 0;
    }
    if ((rc == 0) && (revision > 0)) {
        rc = json_set_i64(req, "revision", revision);
    }
    if ((rc == 0) && prefix) {
        rc = (json_object_set_new(req, "sort_order", json_string("ASCEND")) ||
              json_object_set_new(req, "sort_target", json_string("KEY")))
                 ? DANGO_ENOMEM
                 : 0;
    }
    rc = etcd_send(e, "kv/range", req, rc, 1, &resp, rev_p);
    if (rc != 0) {
        return rc;
    }

    rc = range_parse(resp, keys_only, kvs_p, count_p);

    json_decref(resp);
    return rc;
}

int dango__etcd_get(dango__etcd_t *etcd, const void *key, size_t key_len,
                    dango__etcd_kv_t **kv_p, int64_t *rev_p)
{
    dango__etcd_kv_t *kvs;
    size_t            count;
    int               rc;

    if ((etcd == NULL) || (key == NULL) || (key_len == 0) || (kv_p == NULL)) {
        return DANGO_EINVAL;
    }

    rc = etcd_range(etcd, key, key_len, 0, 0, 0, &kvs, &count, rev_p);
    if (rc != 0) {
        return rc;
    }

    if (count == 0) {
        dango__etcd_kvs_free(kvs, 0);
        return DANGO_ENOENT;
    }

    *kv_p = kvs;
    return 0;
}

int dango__etcd_range_prefix(dango__etcd_t *etcd, const void *prefix,
                             size_t prefix_len, int keys_only, int64_t revision,
                             dango__etcd_kv_t **kvs_p, size_t *count_p,
                             int64_t *rev_p)
{
    if ((etcd == NULL) || ((prefix == NULL) && (prefix_len > 0)) ||
        (kvs_p == NULL) || (count_p == NULL)) {
        return DANGO_EINVAL;
    }

    return etcd_range(etcd, prefix, prefix_len, 1, keys_only, revision, kvs_p,
                      count_p, rev_p);
}

int dango__etcd_put(dango__etcd_t *etcd, const void *key, size_t key_len,
                    const void *value, size_t value_len, int64_t lease,
                    int64_t *rev_p)
{
    json_t *req;
    json_t *resp;
    int     rc;

    if ((etcd == NULL) || (key == NULL) || (key_len == 0) ||
        ((value == NULL) && (value_len > 0))) {
        return DANGO_EINVAL;
    }

    req = req_new();
    if (req == NULL) {
        return DANGO_ENOMEM;
    }

    rc = json_set_b64(req, "key", key, key_len);
    if (rc == 0) {
        rc =
            json_set_b64(req, "value", (value != NULL) ? value : "", value_len);
    }
    if ((rc == 0) && (lease != 0)) {
        rc = json_set_i64(req, "lease", lease);
    }
    /* A put of the same value is harmless to repeat. */
    rc = etcd_send(etcd, "kv/put", req, rc, 1, &resp, rev_p);
    if (rc != 0) {
        return rc;
    }

    json_decref(resp);
    return 0;
}

int dango__etcd_delete(dango__etcd_t *etcd, const void *key, size_t key_len,
                       int prefix, int64_t *deleted_p, int64_t *rev_p)
{
    json_t *req;
    json_t *resp;
    int     rc;

    if ((etcd == NULL) || ((key == NULL) && (key_len > 0)) ||
        ((key_len == 0) && !prefix)) {
        return DANGO_EINVAL;
    }

    req = req_new();
    if (req == NULL) {
        return DANGO_ENOMEM;
    }

    /* Not idempotent in its answer (the count), so not retried. */
    rc = etcd_send(etcd, "kv/deleterange", req,
                   req_set_range(req, key, key_len, prefix), 0, &resp, rev_p);
    if (rc != 0) {
        return rc;
    }

    if (deleted_p != NULL) {
        *deleted_p = json_i64(resp, "deleted");
    }

    json_decref(resp);
    return 0;
}

/* ---------- transactions ---------- */

static int ops_to_json(json_t *req, const char *name,
                       const dango__etcd_op_t *ops, size_t n)
{
    json_t *arr;

    if (n == 0) {
        return 0;
    }

    arr = json_array();
    if ((arr == NULL) || (json_object_set_new(req, name, arr) != 0)) {
        return DANGO_ENOMEM;
    }

    for (size_t i = 0; i < n; i++) {
        json_t *op;

        if ((ops[i].key == NULL) || (ops[i].key_len == 0) ||
            ((unsigned)ops[i].type > DANGO__ETCD_OP_DELETE)) {
            return DANGO_EINVAL;
        }

        op = op_to_json(&ops[i]);
        if ((op == NULL) || (json_array_append_new(arr, op) != 0)) {
            return DANGO_ENOMEM;
        }
    }

    return 0;
}

int dango__etcd_txn(dango__etcd_t *etcd, const dango__etcd_cmp_t *cmps,
                    size_t num_cmps, const dango__etcd_op_t *success,
                    size_t num_success, const dango__etcd_op_t *failure,
                    size_t num_failure, int *succeeded_p, int64_t *rev_p)
{
    json_t *req;
    json_t *arr;
    json_t *resp;
    int     rc = 0;

    if ((etcd == NULL) || (succeeded_p == NULL) ||
        ((cmps == NULL) && (num_cmps > 0)) ||
        ((success == NULL) && (num_success > 0)) ||
        ((failure == NULL) && (num_failure > 0))) {
        return DANGO_EINVAL;
    }

    req = req_new();
    arr = json_array();
    if ((req == NULL) || (arr == NULL) ||
        (json_object_set_new(req, "compare", arr) != 0)) {
        json_decref(req);
        return DANGO_ENOMEM;
    }

    for (size_t i = 0; (rc == 0) && (i < num_cmps); i++) {
        json_t *cmp;

        if ((cmps[i].key == NULL) || (cmps[i].key_len == 0) ||
            ((unsigned)cmps[i].target > DANGO__ETCD_CMP_VALUE)) {
            rc = DANGO_EINVAL;
            break;
        }

        cmp = cmp_to_json(&cmps[i]);
        if ((cmp == NULL) || (json_array_append_new(arr, cmp) != 0)) {
            rc = DANGO_ENOMEM;
        }
    }

    if (rc == 0) {
        rc = ops_to_json(req, "success", success, num_success);
    }
    if (rc == 0) {
        rc = ops_to_json(req, "failure", failure, num_failure);
    }
    /* A compare-and-swap retried after it applied would report failure. */
    rc = etcd_send(etcd, "kv/txn", req, rc, 0, &resp, rev_p);
    if (rc != 0) {
        return rc;
    }

    *succeeded_p = json_bool(resp, "succeeded");

    json_decref(resp);
    return 0;
}

/* ---------- leases ---------- */

/* Calls a lease method taking {"ID": id} (plus @ttl_s when > 0). */
static int lease_call(dango__etcd_t *e, const char *path, int64_t id,
                      int64_t ttl_s, int idempotent, json_t **resp_p)
{
    json_t *req = req_new();
    int     rc  = 0;

    if (req == NULL) {
        return DANGO_ENOMEM;
    }

    if (id != 0) {
        rc = json_set_i64(req, "ID", id);
    }
    if ((rc == 0) && (ttl_s > 0)) {
        rc = json_set_i64(req, "TTL", ttl_s);
    }
    if (rc == 0) {
        rc = etcd_call(e, path, req, idempotent, resp_p);
    }

    json_decref(req);
    return rc;
}

int dango__etcd_lease_grant(dango__etcd_t *etcd, int64_t ttl_s, int64_t *id_p,
                            int64_t *granted_ttl_p)
{
    json_t *resp;
    int64_t id;
    int     rc;

    if ((etcd == NULL) || (id_p == NULL) || (ttl_s <= 0) ||
        (ttl_s > DANGO__ETCD_LEASE_TTL_MAX)) {
        return DANGO_EINVAL;
    }

    rc = lease_call(etcd, "lease/grant", 0, ttl_s, 0, &resp);
    if (rc != 0) {
        return rc;
    }

    id = json_i64(resp, "ID");
    if (id == 0) {
        const char *err = json_string_value(json_object_get(resp, "error"));

        dango_error("etcd: lease grant of %" PRId64 " s refused: %s", ttl_s,
                    (err != NULL) ? err : "no lease id in the answer");
        json_decref(resp);
        return DANGO_EMETADATA;
    }

    *id_p = id;
    if (granted_ttl_p != NULL) {
        *granted_ttl_p = json_i64(resp, "TTL");
    }

    json_decref(resp);
    return 0;
}

int dango__etcd_lease_keepalive(dango__etcd_t *etcd, int64_t id, int64_t *ttl_p)
{
    json_t *resp;
    int64_t ttl;
    int     rc;

    if ((etcd == NULL) || (id == 0)) {
        return DANGO_EINVAL;
    }

    /* The stream method answers one {"result": ...} per request. */
    rc = lease_call(etcd, "lease/keepalive", id, 0, 1, &resp);
    if (rc != 0) {
        return rc;
    }

    if (json_object_get(resp, "error") != NULL) {
        const json_t *err = json_object_get(resp, "error");
        const char   *msg = json_string_value(json_object_get(err, "message"));

        dango_debug("etcd: keepalive of lease %" PRIx64 ": %s", (uint64_t)id,
                    (msg != NULL) ? msg : "stream error");
        json_decref(resp);
        return DANGO_EMETADATA;
    }

    ttl = json_i64(json_object_get(resp, "result"), "TTL");
    json_decref(resp);
    if (ttl <= 0) {
        /* etcd answers TTL 0 for a lease it does not know. */
        return DANGO_ENOENT;
    }

    if (ttl_p != NULL) {
        *ttl_p = ttl;
    }

    return 0;
}

int dango__etcd_lease_revoke(dango__etcd_t *etcd, int64_t id)
{
    json_t *resp;
    int     rc;

    if ((etcd == NULL) || (id == 0)) {
        return DANGO_EINVAL;
    }

    rc = lease_call(etcd, "lease/revoke", id, 0, 0, &resp);
    if (rc == 0) {
        json_decref(resp);
    }

    return rc;
}

int dango__etcd_lease_ttl(dango__etcd_t *etcd, int64_t id, int64_t *ttl_p,
                          int64_t *granted_ttl_p)
{
    json_t *resp;
    int64_t ttl;
    int     rc;

    if ((etcd == NULL) || (id == 0)) {
        return DANGO_EINVAL;
    }

    /* "kv/lease/timetolive" is the path both 3.3 and 3.4+ serve. */
    rc = lease_call(etcd, "kv/lease/timetolive", id, 0, 1, &resp);
    if (rc != 0) {
        return rc;
    }

    ttl = json_i64(resp, "TTL");
    if (ttl < 0) {
        json_decref(resp);
        return DANGO_ENOENT;
    }

    if (ttl_p != NULL) {
        *ttl_p = ttl;
    }
    if (granted_ttl_p != NULL) {
        *granted_ttl_p = json_i64(resp, "grantedTTL");
    }

    json_decref(resp);
    return 0;
}

/* ---------- keeper ---------- */

static int keeper_stopping(dango__etcd_keeper_t *k)
{
    return __atomic_load_n(&k->stopping, __ATOMIC_ACQUIRE);
}

/* Sleeps until @until (monotonic ns) or a stop; returns 1 when stopping. */
static int cond_sleep_until(pthread_mutex_t *lock, pthread_cond_t *cond,
                            const int *stopping, uint64_t until)
{
    struct timespec ts = {.tv_sec  = (time_t)(until / DANGO_NSEC_PER_SEC),
                          .tv_nsec = (long)(until % DANGO_NSEC_PER_SEC)};
    int             stop;

    pthread_mutex_lock(lock);
    while (!(stop = __atomic_load_n(stopping, __ATOMIC_ACQUIRE)) &&
           (pthread_cond_timedwait(cond, lock, &ts) == 0)) {
    }
    pthread_mutex_unlock(lock);
    return stop;
}

/* One renewal; updates valid_until. Returns 0, ENOENT (gone) or an error. */
static int keeper_renew(dango__etcd_keeper_t *k)
{
    uint64_t sent = dango_time_ns();
    int64_t  ttl;
    int      rc;

    rc = dango__etcd_lease_keepalive(k->etcd, k->lease_id, &ttl);
    if (rc == 0) {
        __atomic_store_n(&k->valid_until,
                         sent + (uint64_t)ttl * DANGO_NSEC_PER_SEC,
                         __ATOMIC_RELEASE);
    }

    return rc;
}

static void *keeper_thread(void *arg)
{
    dango__etcd_keeper_t *k    = arg;
    uint64_t              next = dango_time_ns() + k->period_ns;

    while (!cond_sleep_until(&k->lock, &k->cond, &k->stopping, next)) {
        uint64_t now = dango_time_ns();
        int      rc  = keeper_renew(k);

        if (rc == 0) {
            next = now + k->period_ns;
            continue;
        }

        if ((rc != DANGO_ENOENT) &&
            (dango_time_ns() <
             __atomic_load_n(&k->valid_until, __ATOMIC_ACQUIRE))) {
            next = dango_time_ns() + ETCD_KEEPER_RETRY_NS;
            continue;
        }

        dango_warn("etcd: lease %" PRIx64 " lost (%s)", (uint64_t)k->lease_id,
                   (rc == DANGO_ENOENT) ? "expired on the server"
                                        : "not renewed in time");
        __atomic_store_n(&k->valid_until, 0, __ATOMIC_RELEASE);
        if (!keeper_stopping(k) && (k->lost_cb != NULL)) {
            k->lost_cb(k->lease_id, k->arg);
        }
        /* Renewals are over; wait for the stop. */
        next = UINT64_MAX / 2;
    }

    return NULL;
}

static void cond_init_monotonic(pthread_cond_t *cond)
{
    pthread_condattr_t attr;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

int dango__etcd_keeper_start(dango__etcd_t *etcd, int64_t lease_id,
                             int64_t ttl_s, dango__etcd_lease_lost_cb lost_cb,
                             void *arg, dango__etcd_keeper_t **keeper_p)
{
    dango__etcd_keeper_t *k;
    int                   rc;

    if ((etcd == NULL) || (lease_id == 0) || (ttl_s <= 0) ||
        (keeper_p == NULL)) {
        return DANGO_EINVAL;
    }

    k = dango_calloc(1, sizeof(*k), "etcd_keeper");
    if (k == NULL) {
        return DANGO_ENOMEM;
    }

    k->etcd      = etcd;
    k->lease_id  = lease_id;
    k->period_ns = (uint64_t)ttl_s * DANGO_NSEC_PER_SEC / 6;
    k->lost_cb   = lost_cb;
    k->arg       = arg;

    /* The first renewal is synchronous: it fixes the validity bound. */
    rc = keeper_renew(k);
    if (rc != 0) {
        dango_free(k);
        return rc;
    }

    pthread_mutex_init(&k->lock, NULL);
    cond_init_monotonic(&k->cond);
    rc = pthread_create(&k->thread, NULL, keeper_thread, k);
    if (rc != 0) {
        dango_error("etcd keeper: pthread_create: %s", strerror(rc));
        pthread_cond_destroy(&k->cond);
        pthread_mutex_destroy(&k->lock);
        dango_free(k);
        return dango_err_from_errno(rc);
    }

    *keeper_p = k;
    return 0;
}

uint64_t dango__etcd_keeper_valid_until(dango__etcd_keeper_t *keeper)
{
    return __atomic_load_n(&keeper->valid_until, __ATOMIC_ACQUIRE);
}

void dango__etcd_keeper_stop(dango__etcd_keeper_t *keeper)
{
    if (keeper == NULL) {
        return;
    }

    pthread_mutex_lock(&keeper->lock);
    __atomic_store_n(&keeper->stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_signal(&keeper->cond);
    pthread_mutex_unlock(&keeper->lock);
    pthread_join(keeper->thread, NULL);
    pthread_cond_destroy(&keeper->cond);
    pthread_mutex_destroy(&keeper->lock);
    dango_free(keeper);
}

/* ---------- watch ---------- */

static int watch_stopping(dango__etcd_watch_t *w)
{
    return __atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE);
}

/* Delivers the events of one watch response. */
static void watch_deliver(dango__etcd_watch_t *w, const json_t *events)
{
    size_t               n = json_array_size(events);
    dango__etcd_event_t *evs;
    size_t               i;

    if (n == 0) {
        return;
    }

    evs = dango_calloc(n, sizeof(*evs), "etcd_events");
    if (evs == NULL) {
        /* Cannot deliver: restart the stream from the same revision. */
        w->failed  = 1;
        w->restart = 1;
        return;
    }

    for (i = 0; i < n; i++) {
        const json_t *ev   = json_array_get(events, i);
        const char   *type = json_string_value(json_object_get(ev, "type"));

        evs[i].type = ((type != NULL) && (strcmp(type, "DELETE") == 0))
                          ? DANGO__ETCD_EV_DELETE
                          : DANGO__ETCD_EV_PUT;
        if (kv_parse(json_object_get(ev, "kv"),
                     evs[i].type == DANGO__ETCD_EV_PUT, &evs[i].kv) != 0) {
            break;
        }
    }

    if (i < n) {
        /* Malformed or out of memory: deliver nothing, retry the stream. */
        dango_warn("etcd watch: could not decode an event; reconnecting");
        w->failed  = 1;
        w->restart = 1;
    } else {
        if (!watch_stopping(w)) {
            w->cb(evs, n, w->arg);
        }
        w->next_rev = evs[n - 1].kv.mod_revision + 1;
    }

    for (size_t j = 0; j < i; j++) {
        kv_clear(&evs[j].kv);
    }
    dango_free(evs);
}

/* Handles one JSON message of the stream. */
static void watch_message(dango__etcd_watch_t *w, const char *line, size_t len)
{
    json_error_t jerr;
    json_t      *root = json_loadb(line, len, 0, &jerr);
    json_t      *res;
    int64_t      compact;
    int64_t      hrev;

    if (!json_is_object(root)) {
        dango_warn("etcd watch: malformed message (%s)",
                   (root == NULL) ? jerr.text : "not an object");
        w->failed = 1;
        goto out;
    }

    res = json_object_get(root, "result");
    if (res == NULL) {
        const json_t *err = json_object_get(root, "error");
        const char   *msg = json_string_value(json_object_get(err, "message"));

        if (msg == NULL) {
            msg = json_string_value(json_object_get(root, "message"));
        }
        dango_warn("etcd watch %s: %s", w->etcd->endpoints[w->ep],
                   (msg != NULL) ? msg : "stream error");
        w->failed = 1;
        goto out;
    }

    hrev = header_revision(res);
    if (json_bool(res, "created")) {
        w->created = 1;
        if (w->next_rev == 0) {
            w->next_rev = hrev + 1;
        }
    }

    compact = json_i64(res, "compact_revision");
    if (compact > 0) {
        dango__etcd_event_t ev = {.type = DANGO__ETCD_EV_COMPACTED};

        dango_warn("etcd watch: revisions %" PRId64 "..%" PRId64
                   " were compacted; resuming at %" PRId64,
                   w->next_rev, compact - 1, compact);
        ev.kv.mod_revision = compact;
        if (!watch_stopping(w)) {
            w->cb(&ev, 1, w->arg);
        }
        w->next_rev = compact;
        w->restart  = 1;
        if (w->flags & DANGO__ETCD_WATCH_SNAPSHOT) {
            w->need_snapshot = 1;
        }
        goto out;
    }

    if (json_bool(res, "canceled")) {
        const char *why =
            json_string_value(json_object_get(res, "cancel_reason"));

        dango_warn("etcd watch: canceled by the server (%s)",
                   (why != NULL) ? why : "no reason given");
        w->failed  = 1;
        w->restart = 1;
        goto out;
    }

    if (json_array_size(json_object_get(res, "events")) > 0) {
        watch_deliver(w, json_object_get(res, "events"));
    } else if (!json_bool(res, "created") && (hrev >= w->next_rev)) {
        /* Progress: every event up to hrev has been sent. */
        w->next_rev = hrev + 1;
    }

out:
    json_decref(root);
}

static size_t watch_write_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
    dango__etcd_watch_t *w = arg;
    size_t               n = size * nmemb;
    char                *nl;
    size_t               used;

    if (dango__curl_buf_write(&w->line, ptr, n) != n) {
        dango_warn("etcd watch: message larger than %u bytes or no memory",
                   ETCD_WATCH_LINE_MAX);
        w->failed = 1;
        return 0;
    }

    /* Messages are separated by newlines (never inside JSON strings). */
    used = 0;
    while (!w->restart && !watch_stopping(w) &&
           ((nl = memchr(w->line.data + used, '\n', w->line.len - used)) !=
            NULL)) {
        size_t len = (size_t)(nl - (w->line.data + used));

        if (len > 0) {
            watch_message(w, w->line.data + used, len);
        }
        used += len + 1;
    }

    memmove(w->line.data, w->line.data + used, w->line.len - used);
    w->line.len -= used;
    w->line.data[w->line.len] = '\0';
    if (w->restart || watch_stopping(w)) {
        return 0; /* ends the transfer */
    }

    return n;
}

/* Runs one streaming request until it ends or the watch stops. */
static void watch_stream(dango__etcd_watch_t *w)
{
    char     url[512];
    json_t  *req    = req_new();
    json_t  *create = req_new();
    char    *body   = NULL;
    CURL    *curl   = NULL;
    CURLMsg *msg;
    int      running;
    int      left;

    w->created  = 0;
    w->restart  = 0;
    w->failed   = 0;
    w->line.len = 0;

    if ((req == NULL) || (create == NULL) ||
        (json_object_set_new(create, "key", json_string(w->key_b64)) != 0) ||
        ((w->end_b64 != NULL) &&
         (json_object_set_new(create, "range_end", json_string(w->end_b64)) !=
          0)) ||
        ((w->next_rev > 0) &&
         (json_set_i64(create, "start_revision", w->next_rev) != 0)) ||
        (json_object_set_new(create, "progress_notify", json_true()) != 0)) {
        json_decref(create);
        create = NULL;
        goto out;
    }

    if (json_object_set_new(req, "create_request", create) != 0) {
        goto out;
    }

    body = json_dumps(req, JSON_COMPACT);
    curl = curl_easy_init();
    if ((body == NULL) || (curl == NULL)) {
        goto out;
    }

    etcd_url(w->etcd, w->ep, "watch", url, sizeof(url));
    /* A stream: no whole-transfer timeout. */
    dango__curl_setup(curl, url, w->etcd->headers, w->etcd->connect_timeout_ns,
                      0, NULL, NULL);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, watch_write_cb);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, w);
    /* A vanished peer (host down, cable cut) ends the stream. */
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPIDLE, 5L);
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPINTVL, 2L);

    if (curl_multi_add_handle(w->multi, curl) != CURLM_OK) {
        goto out;
    }

    for (running = 1; running && !watch_stopping(w);) {
        if (curl_multi_perform(w->multi, &running) != CURLM_OK) {
            break;
        }
        if (running && !watch_stopping(w)) {
            curl_multi_poll(w->multi, NULL, 0, 1000, NULL);
        }
    }

    while ((msg = curl_multi_info_read(w->multi, &left)) != NULL) {
        if ((msg->msg == CURLMSG_DONE) && (msg->data.result != CURLE_OK) &&
            !w->restart && !watch_stopping(w)) {
            dango_debug("etcd watch %s: stream ended: %s",
                        w->etcd->endpoints[w->ep],
                        curl_easy_strerror(msg->data.result));
            w->failed = 1;
        }
    }

    curl_multi_remove_handle(w->multi, curl);

out:
    if (curl != NULL) {
        curl_easy_cleanup(curl);
    }
    free(body);
    json_decref(req);
}

/*
 * Reads the watched range and delivers it as PUT events; the stream then
 * starts after the revision read. Returns 0 or the range error.
 */
static int watch_snapshot(dango__etcd_watch_t *w)
{
    dango__etcd_event_t *evs = NULL;
    dango__etcd_kv_t    *kvs;
    size_t               n;
    int64_t              rev;
    int                  rc;

    rc = etcd_range(w->etcd, w->key, w->key_len,
                    (w->flags & DANGO__ETCD_WATCH_PREFIX) != 0, 0, 0, &kvs, &n,
                    &rev);
    if (rc != 0) {
        return rc;
    }

    if (n > 0) {
        evs = dango_calloc(n, sizeof(*evs), "etcd_events");
        if (evs == NULL) {
            dango__etcd_kvs_free(kvs, n);
            return DANGO_ENOMEM;
        }

        for (size_t i = 0; i < n; i++) {
            evs[i].type = DANGO__ETCD_EV_PUT;
            evs[i].kv   = kvs[i];
        }

        if (!watch_stopping(w)) {
            w->cb(evs, n, w->arg);
        }
        dango_free(evs);
    }

    dango__etcd_kvs_free(kvs, n);
    w->next_rev      = rev + 1;
    w->need_snapshot = 0;
    return 0;
}

static void watch_free(dango__etcd_watch_t *w)
{
    dango_free(w->key);
    curl_multi_cleanup(w->multi);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    dango_free(w->line.data);
    dango_free(w->key_b64);
    dango_free(w->end_b64);
    dango_free(w);
}

static void *watch_thread(void *arg)
{
    dango__etcd_watch_t *w       = arg;
    uint64_t             backoff = ETCD_BACKOFF_MIN_NS;
    int                  detached;

    /* Wait until watch_start() has stored w->thread. */
    pthread_mutex_lock(&w->lock);
    pthread_mutex_unlock(&w->lock);

    while (!watch_stopping(w)) {
        if (w->need_snapshot) {
            if (watch_snapshot(w) == 0) {
                backoff = ETCD_BACKOFF_MIN_NS;
                continue;
            }
            if (cond_sleep_until(&w->lock, &w->cond, &w->stopping,
                                 dango_time_ns() + backoff)) {
                break;
            }
            backoff = (backoff * 2 > ETCD_BACKOFF_MAX_NS) ? ETCD_BACKOFF_MAX_NS
                                                          : backoff * 2;
            continue;
        }

        watch_stream(w);
        if (watch_stopping(w)) {
            break;
        }

        if (w->created && !w->failed) {
            /* A healthy stream that ended (compaction, server restart). */
            backoff = ETCD_BACKOFF_MIN_NS;
            if (w->restart) {
                continue;
            }
        }

        /* Try the next endpoint after a pause. */
        w->ep = (w->ep + 1) % w->etcd->num_endpoints;
        if (cond_sleep_until(&w->lock, &w->cond, &w->stopping,
                             dango_time_ns() + backoff)) {
            break;
        }

        backoff = (backoff * 2 > ETCD_BACKOFF_MAX_NS) ? ETCD_BACKOFF_MAX_NS
                                                      : backoff * 2;
    }

    pthread_mutex_lock(&w->lock);
    detached = w->detached;
    pthread_mutex_unlock(&w->lock);
    if (detached) {
        watch_free(w);
    }

    return NULL;
}

int dango__etcd_watch_start(dango__etcd_t *etcd, const void *key,
                            size_t key_len, unsigned flags,
                            int64_t start_revision, dango__etcd_watch_cb cb,
                            void *arg, dango__etcd_watch_t **watch_p)
{
    int                  prefix = (flags & DANGO__ETCD_WATCH_PREFIX) != 0;
    dango__etcd_watch_t *w;
    int                  rc;

    if ((etcd == NULL) || (cb == NULL) || (watch_p == NULL) ||
        ((key == NULL) && (key_len > 0)) || ((key_len == 0) && !prefix) ||
        (start_revision < 0)) {
        return DANGO_EINVAL;
    }

    w = dango_calloc(1, sizeof(*w), "etcd_watch");
    if (w == NULL) {
        return DANGO_ENOMEM;
    }

    w->etcd          = etcd;
    w->cb            = cb;
    w->arg           = arg;
    w->flags         = flags;
    w->need_snapshot = (flags & DANGO__ETCD_WATCH_SNAPSHOT) != 0;
    w->next_rev      = w->need_snapshot ? 0 : start_revision;
    w->ep            = __atomic_load_n(&etcd->current, __ATOMIC_RELAXED);
    w->key_len       = key_len;
    w->key           = dango_malloc(key_len + 1, "etcd_watch_key");
    if (w->key == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free;
    }
    memcpy(w->key, (key_len > 0) ? key : "", key_len);
    w->line.max = ETCD_WATCH_LINE_MAX;
    w->key_b64 =
        b64_encode((key_len > 0) ? key : "\0", (key_len > 0) ? key_len : 1);
    if (w->key_b64 == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free;
    }

    if (prefix) {
        char  *end = dango_malloc(key_len + 1, "etcd_range_end");
        size_t end_len;

        if (end == NULL) {
            rc = DANGO_ENOMEM;
            goto err_free;
        }
        end_len = dango__etcd_prefix_end(key, key_len, end);
        if (end_len == 0) {
            end[0]  = '\0';
            end_len = 1;
        }
        w->end_b64 = b64_encode(end, end_len);
        dango_free(end);
        if (w->end_b64 == NULL) {
            rc = DANGO_ENOMEM;
            goto err_free;
        }
    }

    w->multi = curl_multi_init();
    if (w->multi == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free;
    }

    pthread_mutex_init(&w->lock, NULL);
    cond_init_monotonic(&w->cond);
    pthread_mutex_lock(&w->lock);
    rc = pthread_create(&w->thread, NULL, watch_thread, w);
    pthread_mutex_unlock(&w->lock);
    if (rc != 0) {
        dango_error("etcd watch: pthread_create: %s", strerror(rc));
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        rc = dango_err_from_errno(rc);
        goto err_free;
    }

    *watch_p = w;
    return 0;

err_free:
    curl_multi_cleanup(w->multi);
    dango_free(w->key);
    dango_free(w->key_b64);
    dango_free(w->end_b64);
    dango_free(w);
    return rc;
}

int dango__etcd_watch_stop(dango__etcd_watch_t *watch)
{
    if (watch == NULL) {
        return 0;
    }

    pthread_mutex_lock(&watch->lock);
    __atomic_store_n(&watch->stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_signal(&watch->cond);
    if (pthread_equal(pthread_self(), watch->thread)) {
        /* From our own callback: the thread frees the watch on its way out. */
        watch->detached = 1;
        pthread_detach(watch->thread);
        pthread_mutex_unlock(&watch->lock);
        return 1;
    }
    pthread_mutex_unlock(&watch->lock);

    curl_multi_wakeup(watch->multi);
    pthread_join(watch->thread, NULL);
    watch_free(watch);
    return 0;
}
