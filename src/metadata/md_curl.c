/* See md_curl.h. */
#define DANGO_LOG_COMPONENT dango__md_log
#include "metadata/md_curl.h"

#include <limits.h>
#include <string.h>

#include <dango/error.h>
#include <dango/log.h>
#include "common/alloc.h"
#include "common/time.h"

extern dango_log_component_t dango__md_log;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode       curl_global_rc;

static void curl_global_once(void)
{
    curl_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int dango__curl_global(const char *who)
{
    pthread_once(&curl_once, curl_global_once);
    if (curl_global_rc != CURLE_OK) {
        dango_error("%s: curl_global_init: %s", who,
                    curl_easy_strerror(curl_global_rc));
        return DANGO_EMETADATA;
    }
    return 0;
}

long dango__curl_ms(uint64_t ns)
{
    uint64_t ms = (ns + DANGO_NSEC_PER_MSEC - 1) / DANGO_NSEC_PER_MSEC;

    return (ms > LONG_MAX) ? LONG_MAX : (long)ms;
}

size_t dango__curl_buf_write(dango__curl_buf_t *buf, const char *ptr, size_t n)
{
    if (n > buf->max - buf->len) {
        buf->overflow = 1;
        return 0;
    }

    if (buf->len + n + 1 > buf->cap) {
        size_t new_cap = (buf->cap == 0) ? 4096 : buf->cap;
        char  *grown;

        while (new_cap < buf->len + n + 1) {
            new_cap *= 2;
        }

        grown = dango_realloc(buf->data, new_cap, "curl_body");
        if (grown == NULL) {
            buf->nomem = 1;
            return 0;
        }

        buf->data = grown;
        buf->cap  = new_cap;
    }

    memcpy(buf->data + buf->len, ptr, n);
    buf->len += n;
    buf->data[buf->len] = '\0';
    return n;
}

size_t dango__curl_buf_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
    return dango__curl_buf_write(arg, ptr, size * nmemb);
}

static size_t curl_discard_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
    (void)ptr;
    (void)arg;
    return size * nmemb;
}

void dango__curl_setup(CURL *curl, const char *url,
                       const struct curl_slist *hdrs, uint64_t connect_ns,
                       uint64_t timeout_ns, char *errbuf,
                       dango__curl_buf_t *resp)
{
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROXY, "");
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     dango__curl_ms(connect_ns));
    if (timeout_ns > 0) {
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, dango__curl_ms(timeout_ns));
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    if (errbuf != NULL) {
        curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    }
    if (resp != NULL) {
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, dango__curl_buf_cb);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, resp);
    } else {
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, curl_discard_cb);
    }
}

void dango__curl_pool_init(dango__curl_pool_t *p)
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->lock, NULL);
}

void dango__curl_pool_destroy(dango__curl_pool_t *p)
{
    for (size_t i = 0; i < p->n; i++) {
        curl_easy_cleanup(p->h[i]);
    }
    p->n = 0;
    pthread_mutex_destroy(&p->lock);
}

CURL *dango__curl_pool_get(dango__curl_pool_t *p)
{
    CURL *curl = NULL;

    pthread_mutex_lock(&p->lock);
    if (p->n > 0) {
        curl = p->h[--p->n];
    }
    pthread_mutex_unlock(&p->lock);

    if (curl != NULL) {
        /* Clears options; keeps the connection and DNS caches. */
        curl_easy_reset(curl);
        return curl;
    }

    return curl_easy_init();
}

void dango__curl_pool_put(dango__curl_pool_t *p, CURL *curl)
{
    pthread_mutex_lock(&p->lock);
    if (p->n < DANGO__CURL_POOL_MAX) {
        p->h[p->n++] = curl;
        curl         = NULL;
    }
    pthread_mutex_unlock(&p->lock);

    if (curl != NULL) {
        curl_easy_cleanup(curl);
    }
}
