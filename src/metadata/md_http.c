/*
 * http:// metadata backend: a libcurl client of the metadata HTTP protocol.
 *
 * DESIGN
 *
 * Protocol (served by md_server.c and dango-metadata):
 *   GET    <path>?key=K            200 + value bytes, 404 when missing
 *   PUT    <path>?key=K[&ttl_ms=N] body = value
 *   DELETE <path>?key=K            404 when missing
 *   GET    <path>?prefix=P         200 + JSON array of keys
 * Keys and prefixes are percent-encoded with curl_easy_escape(), so any byte
 * string survives the trip.
 *
 * Threads: a handle may be used by several threads at once. Each call takes
 * a curl easy handle from a small mutex-protected pool (creating one when
 * the pool is empty) and gives it back afterwards; a pooled easy handle
 * keeps its connection open, so steady traffic reuses keep-alive
 * connections instead of paying a TCP handshake per request.
 *
 * Errors: HTTP 404 is DANGO_ENOENT, 400 DANGO_EINVAL, 413 DANGO_EMSGSIZE;
 * a curl timeout is DANGO_ETIMEDOUT; any other transport failure or status
 * is DANGO_EMETADATA. Those last two are logged here, where they are first
 * seen. Every request is bounded by MD_CONNECT_TIMEOUT and MD_TIMEOUT, and
 * every response body by a size cap, so a misbehaving server can neither
 * hang a caller nor make it allocate without limit.
 *
 * Proxies from the environment (http_proxy) are ignored: metadata traffic
 * stays inside the cluster, and a proxy would also capture 127.0.0.1.
 */
#include "md_int.h"

#include <ctype.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "common/alloc.h"
#include "common/time.h"
#include "metadata/md_curl.h"

/* Largest list response accepted (a JSON array of keys). */
#define MD_HTTP_LIST_MAX (64u << 20)
/* Path used when the connection string names none. */
#define MD_HTTP_DEFAULT_PATH "/metadata"

typedef struct md_http {
    dango_md_t         super;
    char              *base_url; /* "http://host:port/path" */
    struct curl_slist *headers;  /* shared by all requests; read-only */
    dango__curl_pool_t pool;
} md_http_t;

/* ---------- private functions ---------- */

/* Maps an unexpected HTTP status to an error code, logging real failures. */
static int http_status_err(const md_http_t *h, const char *method,
                           const char *arg, long status)
{
    switch (status) {
    case 404:
        return DANGO_ENOENT;
    case 400:
        dango_debug("md http %s: %s '%s': server rejected the request (400)",
                    h->base_url, method, arg);
        return DANGO_EINVAL;
    case 413:
        dango_debug("md http %s: %s '%s': server rejected the value size "
                    "(413)",
                    h->base_url, method, arg);
        return DANGO_EMSGSIZE;
    default:
        dango_error("md http %s: %s '%s': unexpected status %ld", h->base_url,
                    method, arg, status);
        return DANGO_EMETADATA;
    }
}

/*
 * Performs one request and returns its HTTP status in @status_p; @resp
 * receives the body (the caller frees resp->data on every path).
 * @param  is the query parameter name ("key" or "prefix") for @arg.
 * Returns 0 when a status was received, or a transport error.
 */
static int http_request(md_http_t *h, const char *method, const char *param,
                        const char *arg, const void *body, size_t body_len,
                        uint64_t ttl_ms, dango__curl_buf_t *resp,
                        long *status_p)
{
    char     errbuf[CURL_ERROR_SIZE] = "";
    char    *escaped;
    char    *url;
    size_t   url_len;
    CURL    *curl;
    CURLcode code;
    int      rc;

    curl = dango__curl_pool_get(&h->pool);
    if (curl == NULL) {
        dango_error("md http %s: curl_easy_init failed", h->base_url);
        return DANGO_ENOMEM;
    }

    escaped = curl_easy_escape(curl, arg, 0);
    if (escaped == NULL) {
        rc = DANGO_ENOMEM;
        goto out_pool_put;
    }

    /* base + "?" + param + "=" + escaped + "&ttl_ms=" + 20 digits + NUL */
    url_len = strlen(h->base_url) + strlen(param) + strlen(escaped) + 32;
    url     = dango_malloc(url_len, "md_http_url");
    if (url == NULL) {
        rc = DANGO_ENOMEM;
        goto out_free_escaped;
    }

    if (ttl_ms > 0) {
        snprintf(url, url_len, "%s?%s=%s&ttl_ms=%llu", h->base_url, param,
                 escaped, (unsigned long long)ttl_ms);
    } else {
        snprintf(url, url_len, "%s?%s=%s", h->base_url, param, escaped);
    }

    dango__curl_setup(curl, url, h->headers, h->super.config.connect_timeout_ns,
                      h->super.config.timeout_ns, errbuf, resp);

    if (strcmp(method, "PUT") == 0) {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)body_len);
    } else if (strcmp(method, "DELETE") == 0) {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "DELETE");
    } else {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    }

    code = curl_easy_perform(curl);
    if (code == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status_p);
        rc = 0;
    } else if (resp->overflow) {
        dango_error("md http %s: %s '%s': response larger than %zu bytes",
                    h->base_url, method, arg, resp->max);
        rc = DANGO_EMETADATA;
    } else if (code == CURLE_OPERATION_TIMEDOUT) {
        dango_error("md http %s: %s '%s': %s", h->base_url, method, arg,
                    (errbuf[0] != '\0') ? errbuf : curl_easy_strerror(code));
        rc = DANGO_ETIMEDOUT;
    } else if ((code == CURLE_OUT_OF_MEMORY) || resp->nomem) {
        rc = DANGO_ENOMEM;
    } else {
        dango_error("md http %s: %s '%s': %s", h->base_url, method, arg,
                    (errbuf[0] != '\0') ? errbuf : curl_easy_strerror(code));
        rc = DANGO_EMETADATA;
    }

    /* The handle keeps a pointer to errbuf; drop it before errbuf dies. */
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
    dango_free(url);
out_free_escaped:
    curl_free(escaped);
out_pool_put:
    dango__curl_pool_put(&h->pool, curl);
    return rc;
}

static int md_http_get(dango_md_t *md, const char *key, char **value_p,
                       size_t *len_p)
{
    md_http_t        *h    = dango_container_of(md, md_http_t, super);
    dango__curl_buf_t resp = {.max = DANGO_MD_VALUE_MAX};
    long              status;
    int               rc;

    rc = http_request(h, "GET", "key", key, NULL, 0, 0, &resp, &status);
    if (rc != 0) {
        goto out_free;
    }

    if (status != 200) {
        rc = http_status_err(h, "GET", key, status);
        goto out_free;
    }

    if (resp.data == NULL) {
        /* Empty value: still hand back a NUL-terminated buffer. */
        resp.data = dango_calloc(1, 1, "md_value");
        if (resp.data == NULL) {
            return DANGO_ENOMEM;
        }
    }

    *value_p = resp.data;
    *len_p   = resp.len;
    return 0;

out_free:
    dango_free(resp.data);
    return rc;
}

static int md_http_put(dango_md_t *md, const char *key, const void *value,
                       size_t len, uint64_t ttl_ms)
{
    md_http_t        *h    = dango_container_of(md, md_http_t, super);
    dango__curl_buf_t resp = {.max = 4096};
    long              status;
    int               rc;

    rc = http_request(h, "PUT", "key", key, value, len, ttl_ms, &resp, &status);
    if ((rc == 0) && (status != 200) && (status != 201) && (status != 204)) {
        rc = http_status_err(h, "PUT", key, status);
    }

    dango_free(resp.data);
    return rc;
}

static int md_http_del(dango_md_t *md, const char *key)
{
    md_http_t        *h    = dango_container_of(md, md_http_t, super);
    dango__curl_buf_t resp = {.max = 4096};
    long              status;
    int               rc;

    rc = http_request(h, "DELETE", "key", key, NULL, 0, 0, &resp, &status);
    if ((rc == 0) && (status != 200) && (status != 204)) {
        rc = http_status_err(h, "DELETE", key, status);
    }

    dango_free(resp.data);
    return rc;
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Turns a JSON array of strings into a sorted key array. */
static int http_parse_list(const md_http_t *h, const char *prefix,
                           const dango__curl_buf_t *resp, char ***keys_p,
                           size_t *count_p)
{
    json_error_t jerr;
    json_t      *arr;
    char       **keys;
    size_t       count = 0;
    size_t       n;
    int          rc;

    arr =
        json_loadb((resp->data != NULL) ? resp->data : "", resp->len, 0, &jerr);
    if ((arr == NULL) || !json_is_array(arr)) {
        dango_error("md http %s: list '%s': response is not a JSON array "
                    "(%s)",
                    h->base_url, prefix,
                    (arr == NULL) ? jerr.text : "wrong type");
        rc = DANGO_EMETADATA;
        goto out_decref;
    }

    n    = json_array_size(arr);
    keys = dango_calloc(n + 1, sizeof(*keys), "md_list");
    if (keys == NULL) {
        rc = DANGO_ENOMEM;
        goto out_decref;
    }

    for (count = 0; count < n; count++) {
        json_t *item = json_array_get(arr, count);

        if (!json_is_string(item)) {
            dango_error("md http %s: list '%s': element %zu is not a string",
                        h->base_url, prefix, count);
            rc = DANGO_EMETADATA;
            goto err_free_keys;
        }

        keys[count] = dango_strndup(json_string_value(item),
                                    json_string_length(item), "md_list_key");
        if (keys[count] == NULL) {
            rc = DANGO_ENOMEM;
            goto err_free_keys;
        }
    }

    /* The protocol says sorted; other servers may not, and it is cheap. */
    qsort(keys, count, sizeof(*keys), key_cmp);
    *keys_p  = keys;
    *count_p = count;
    rc       = 0;
    goto out_decref;

err_free_keys:
    dango_md_list_free(keys, count);
out_decref:
    json_decref(arr);
    return rc;
}

static int md_http_list(dango_md_t *md, const char *prefix, char ***keys_p,
                        size_t *count_p)
{
    md_http_t        *h    = dango_container_of(md, md_http_t, super);
    dango__curl_buf_t resp = {.max = MD_HTTP_LIST_MAX};
    long              status;
    int               rc;

    rc = http_request(h, "GET", "prefix", prefix, NULL, 0, 0, &resp, &status);
    if (rc != 0) {
        goto out_free;
    }

    if (status == 404) {
        /* No key can be missing here: a wrong path or not our server. */
        dango_error("md http %s: list '%s': 404, is this a metadata server?",
                    h->base_url, prefix);
        rc = DANGO_EMETADATA;
        goto out_free;
    } else if (status != 200) {
        rc = http_status_err(h, "GET", prefix, status);
        goto out_free;
    }

    rc = http_parse_list(h, prefix, &resp, keys_p, count_p);

out_free:
    dango_free(resp.data);
    return rc;
}

static void md_http_close(dango_md_t *md)
{
    md_http_t *h = dango_container_of(md, md_http_t, super);

    dango__curl_pool_destroy(&h->pool);
    curl_slist_free_all(h->headers);
    dango_free(h->base_url);
    dango_free(h);
}

static const dango__md_ops_t md_http_ops = {.name        = "http",
                                            .get         = md_http_get,
                                            .put         = md_http_put,
                                            .del         = md_http_del,
                                            .list        = md_http_list,
                                            .close       = md_http_close,
                                            .watch_start = NULL,
                                            .watch_stop  = NULL};

static int host_char_ok(char c)
{
    return isalnum((unsigned char)c) || (c == '.') || (c == '-') || (c == '_');
}

/*
 * Checks "host[:port]" (host may be "[v6addr]"); @len bytes at @auth.
 * Returns 0 or DANGO_EINVAL.
 */
static int http_check_authority(const char *auth, size_t len)
{
    const char *end = auth + len;
    const char *p   = auth;
    unsigned    port;

    if (len == 0) {
        return DANGO_EINVAL;
    }

    if (*p == '[') {
        for (p++; (p < end) && (*p != ']'); p++) {
            if (!isxdigit((unsigned char)*p) && (*p != ':') && (*p != '.')) {
                return DANGO_EINVAL;
            }
        }

        if ((p == end) || (p == auth + 1)) {
            return DANGO_EINVAL;
        }
        p++; /* ']' */
    } else {
        for (; (p < end) && (*p != ':'); p++) {
            if (!host_char_ok(*p)) {
                return DANGO_EINVAL;
            }
        }

        if (p == auth) {
            return DANGO_EINVAL;
        }
    }

    if (p == end) {
        return 0;
    }

    if ((*p != ':') || (++p == end) || (end - p > 5)) {
        return DANGO_EINVAL;
    }

    for (port = 0; p < end; p++) {
        if (!isdigit((unsigned char)*p)) {
            return DANGO_EINVAL;
        }
        port = port * 10 + (unsigned)(*p - '0');
    }

    return ((port == 0) || (port > 65535)) ? DANGO_EINVAL : 0;
}

static int http_check_path(const char *path)
{
    for (const char *p = path; *p != '\0'; p++) {
        if ((*p == '?') || (*p == '#') || isspace((unsigned char)*p) ||
            iscntrl((unsigned char)*p)) {
            return DANGO_EINVAL;
        }
    }

    return 0;
}

/* ---------- backend entry point ---------- */

int dango__md_http_open(const char *rest, const dango__md_config_t *config,
                        dango_md_t **md_p)
{
    const char        *slash = strchr(rest, '/');
    size_t             auth_len;
    const char        *path;
    size_t             url_len;
    struct curl_slist *hdr;
    md_http_t         *h;
    int                rc;

    auth_len = (slash != NULL) ? (size_t)(slash - rest) : strlen(rest);
    path     = (slash != NULL) ? slash : MD_HTTP_DEFAULT_PATH;
    if ((http_check_authority(rest, auth_len) != 0) ||
        (http_check_path(path) != 0)) {
        dango_debug("md http://%s: malformed (want http://host:port/path)",
                    rest);
        return DANGO_EINVAL;
    }

    rc = dango__curl_global("md http");
    if (rc != 0) {
        return rc;
    }

    h = dango_calloc(1, sizeof(*h), "md_http");
    if (h == NULL) {
        return DANGO_ENOMEM;
    }

    url_len     = strlen("http://") + auth_len + strlen(path) + 1;
    h->base_url = dango_malloc(url_len, "md_http_url");
    if (h->base_url == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free_h;
    }

    snprintf(h->base_url, url_len, "http://%.*s%s", (int)auth_len, rest, path);

    /* No "Expect: 100-continue" round trip; values are opaque bytes. */
    hdr = curl_slist_append(NULL, "Expect:");
    if (hdr == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free_url;
    }

    h->headers = hdr;
    hdr =
        curl_slist_append(h->headers, "Content-Type: application/octet-stream");
    if (hdr == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free_headers;
    }

    h->headers = hdr;
    dango__curl_pool_init(&h->pool);
    h->super.ops    = &md_http_ops;
    h->super.config = *config;
    *md_p           = &h->super;
    return 0;

err_free_headers:
    curl_slist_free_all(h->headers);
err_free_url:
    dango_free(h->base_url);
err_free_h:
    dango_free(h);
    return rc;
}
