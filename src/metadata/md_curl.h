/*
 * libcurl plumbing shared by the library's HTTP clients: the metadata HTTP
 * backend (md_http.c), the etcd client (etcd.c) and the store's KV event
 * publisher (store_client_events.c): one process-wide curl_global_init,
 * the options every request sets (dango__curl_setup),
 * a small pool of easy handles (keeps connections and DNS caches), a
 * bounded response body, and timeouts in curl's milliseconds.
 */
#ifndef DANGO_MD_CURL_H
#define DANGO_MD_CURL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

/* Easy handles kept per pool; more are cleaned up when returned. */
#define DANGO__CURL_POOL_MAX 8

/* curl_global_init once per process. 0, or DANGO_EMETADATA (logged with
 * @who) when libcurl cannot start. Thread-safe. */
int dango__curl_global(const char *who);

/* @ns rounded up to milliseconds, saturated for curl's long options. */
long dango__curl_ms(uint64_t ns);

/* A response body being received: at most @max bytes (set by the
 * caller), always NUL-terminated; @overflow or @nomem tell why a transfer
 * was cut (curl reports CURLE_WRITE_ERROR). @data is the caller's to
 * dango_free(). */
typedef struct dango__curl_buf {
    char  *data;
    size_t len;
    size_t cap;
    size_t max;
    int    overflow;
    int    nomem;
} dango__curl_buf_t;

/* Appends @n bytes; returns @n, or 0 (overflow or out of memory). */
size_t dango__curl_buf_write(dango__curl_buf_t *buf, const char *ptr, size_t n);
/* CURLOPT_WRITEFUNCTION for a dango__curl_buf_t (CURLOPT_WRITEDATA). */
size_t dango__curl_buf_cb(char *ptr, size_t size, size_t nmemb, void *arg);

/*
 * The options every request of the library sets on @curl: @url, no
 * signals, no proxy (an http_proxy variable must not send cluster traffic
 * elsewhere), the connect timeout @connect_ns and the whole-transfer
 * timeout @timeout_ns (0: none), @hdrs (may be NULL), curl's message in
 * @errbuf (CURL_ERROR_SIZE bytes; NULL: none; the caller clears the option
 * before @errbuf goes away) and the response body into @resp (NULL:
 * discarded).
 */
void dango__curl_setup(CURL *curl, const char *url,
                       const struct curl_slist *hdrs, uint64_t connect_ns,
                       uint64_t timeout_ns, char *errbuf,
                       dango__curl_buf_t *resp);

/* A pool of easy handles; thread-safe. */
typedef struct dango__curl_pool {
    pthread_mutex_t lock;
    CURL           *h[DANGO__CURL_POOL_MAX];
    size_t          n;
} dango__curl_pool_t;

void dango__curl_pool_init(dango__curl_pool_t *p);
/* Cleans up the pooled handles (none may be out). */
void dango__curl_pool_destroy(dango__curl_pool_t *p);
/* A reset handle from the pool, or a new one; NULL when out of memory. */
CURL *dango__curl_pool_get(dango__curl_pool_t *p);
/* Gives @curl back (cleaned up when the pool is full). */
void dango__curl_pool_put(dango__curl_pool_t *p, CURL *curl);

#endif
