/*
 * redis:// metadata backend (hiredis, synchronous API).
 *
 * DESIGN
 *
 * Connection string: redis://[user:password@]host[:port][/db]. The port
 * defaults to 6379 and the database to 0; user and password may be
 * percent-encoded (a password containing '@' or ':' must be); an empty user
 * ("redis://:secret@host") authenticates with the password alone (Redis 5
 * and older, or the "default" user). IPv6 hosts are bracketed.
 *
 * Keys: metadata key K is the Redis string MD_REDIS_PREFIX + K (default
 * "dango/"). put is SET, with PX <ttl_ms> when there is a TTL, so Redis
 * expires the key itself; a put without TTL clears any previous one. get
 * is GET, delete is DEL (0 deleted: DANGO_ENOENT). list walks SCAN with
 * MATCH <escaped prefix>* to the end, then sorts (strcmp order) and drops
 * the duplicates SCAN may return.
 *
 * Watch: polling (md.c's default, MD_WATCH_INTERVAL), not keyspace
 * notifications: those need notify-keyspace-events set on the server,
 * carry no value, and are fire-and-forget: an event published while the
 * watcher reconnects is lost for good, whereas a polling watch catches up
 * on its next scan.
 *
 * Threads and failures: a handle keeps a small mutex-protected pool of
 * connections; each call takes one (connecting, authenticating and
 * selecting the database when the pool is empty) and gives it back unless
 * it failed. Every connect and command is bounded by MD_CONNECT_TIMEOUT and
 * MD_TIMEOUT. A pooled connection may have died since its last use (Redis
 * restarted): a call that fails on a reused connection is retried once on
 * a fresh one, so a restart costs no error. (A DEL whose reply was lost
 * with the old connection would then answer DANGO_ENOENT.) An unreachable
 * server is DANGO_EMETADATA, a timeout DANGO_ETIMEDOUT, refused or
 * missing credentials DANGO_EACCES, a database that does not exist
 * DANGO_EINVAL.
 */
#include "md_int.h"

#include <ctype.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "common/alloc.h"
#include "common/time.h"

#define MD_REDIS_POOL_MAX     8
#define MD_REDIS_DEFAULT_PORT 6379
/* Keys asked for per SCAN round, and the bound on rounds. */
#define MD_REDIS_SCAN_COUNT  "1000"
#define MD_REDIS_SCAN_ROUNDS (1u << 24)

typedef struct md_redis {
    dango_md_t      super;
    char           *host;
    int             port;
    char           *user;     /* NULL: none */
    char           *password; /* NULL: no AUTH */
    long            db;
    char           *prefix;
    size_t          prefix_len;
    char           *name; /* "host:port/db" for logs */
    pthread_mutex_t pool_lock;
    redisContext   *pool[MD_REDIS_POOL_MAX];
    size_t          pool_count;
} md_redis_t;

/* ---------- private functions ---------- */

static struct timeval ns_to_tv(uint64_t ns, uint64_t dflt_ns)
{
    struct timeval tv;

    if (ns == 0) {
        ns = dflt_ns; /* hiredis has no "no limit"; take a long one */
    }

    tv.tv_sec  = (time_t)(ns / DANGO_NSEC_PER_SEC);
    tv.tv_usec = (suseconds_t)((ns % DANGO_NSEC_PER_SEC) / 1000);
    return tv;
}

/* Maps a failed context to an error code (and logs it). */
static int ctx_err(const md_redis_t *h, const redisContext *c, const char *op)
{
    if ((c->err == REDIS_ERR_IO) &&
        ((strstr(c->errstr, "timed out") != NULL) ||
         (strstr(c->errstr, "temporarily unavailable") != NULL))) {
        dango_error("md redis %s: %s: timed out", h->name, op);
        return DANGO_ETIMEDOUT;
    }

    if (c->err == REDIS_ERR_OOM) {
        return DANGO_ENOMEM;
    }

    dango_error("md redis %s: %s: %s", h->name, op, c->errstr);
    return DANGO_EMETADATA;
}

/* Runs one command on @c during setup; 0 or an error (logged). */
static int setup_cmd(md_redis_t *h, redisContext *c, const char *what, int argc,
                     const char **argv, int fail_rc)
{
    redisReply *reply = redisCommandArgv(c, argc, argv, NULL);
    int         rc    = 0;

    if (reply == NULL) {
        return ctx_err(h, c, what);
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        dango_error("md redis %s: %s refused: %s", h->name, what, reply->str);
        rc = fail_rc;
    }

    freeReplyObject(reply);
    return rc;
}

/* A new connection, authenticated and on the right database. */
static int conn_new(md_redis_t *h, redisContext **c_p)
{
    const uint64_t dflt = 60 * DANGO_NSEC_PER_SEC;
    redisContext  *c;
    int            rc;

    c = redisConnectWithTimeout(
        h->host, h->port, ns_to_tv(h->super.config.connect_timeout_ns, dflt));
    if (c == NULL) {
        return DANGO_ENOMEM;
    }

    if (c->err != 0) {
        rc = ctx_err(h, c, "connect");
        goto err_free;
    }

    if (redisSetTimeout(c, ns_to_tv(h->super.config.timeout_ns, dflt)) !=
        REDIS_OK) {
        rc = ctx_err(h, c, "set timeout");
        goto err_free;
    }

    if (h->password != NULL) {
        const char *argv[3] = {"AUTH", h->user, h->password};

        if (h->user == NULL) {
            argv[1] = h->password;
        }
        rc = setup_cmd(h, c, "AUTH", (h->user != NULL) ? 3 : 2, argv,
                       DANGO_EACCES);
        if (rc != 0) {
            goto err_free;
        }
    }

    if (h->db != 0) {
        char        db[24];
        const char *argv[2] = {"SELECT", db};

        snprintf(db, sizeof(db), "%ld", h->db);
        rc = setup_cmd(h, c, "SELECT", 2, argv, DANGO_EINVAL);
        if (rc != 0) {
            goto err_free;
        }
    }

    *c_p = c;
    return 0;

err_free:
    redisFree(c);
    return rc;
}

/*
 * Runs a command with a pooled connection, retrying once on a fresh one
 * when a reused connection turns out dead. *reply_p is set on success; an
 * error reply is logged and returned as DANGO_EMETADATA.
 */
static int redis_cmd(md_redis_t *h, int argc, const char **argv,
                     const size_t *argvlen, redisReply **reply_p)
{
    int rc = DANGO_EMETADATA;

    for (int attempt = 0; attempt < 2; attempt++) {
        redisContext *c      = NULL;
        int           reused = 0;
        redisReply   *reply;

        pthread_mutex_lock(&h->pool_lock);
        if (h->pool_count > 0) {
            c      = h->pool[--h->pool_count];
            reused = 1;
        }
        pthread_mutex_unlock(&h->pool_lock);

        if (c == NULL) {
            rc = conn_new(h, &c);
            if (rc != 0) {
                return rc;
            }
        }

        reply = redisCommandArgv(c, argc, argv, argvlen);
        if (reply == NULL) {
            if (reused && (attempt == 0)) {
                dango_debug("md redis %s: pooled connection failed (%s); "
                            "reconnecting",
                            h->name, c->errstr);
                redisFree(c);
                continue;
            }
            rc = ctx_err(h, c, argv[0]);
            redisFree(c);
            return rc;
        }

        pthread_mutex_lock(&h->pool_lock);
        if (h->pool_count < MD_REDIS_POOL_MAX) {
            h->pool[h->pool_count++] = c;
            c                        = NULL;
        }
        pthread_mutex_unlock(&h->pool_lock);
        redisFree(c);

        if (reply->type == REDIS_REPLY_ERROR) {
            /* A server that wants a password we were not given. */
            rc = ((strncmp(reply->str, "NOAUTH", 6) == 0) ||
                  (strncmp(reply->str, "NOPERM", 6) == 0))
                     ? DANGO_EACCES
                     : DANGO_EMETADATA;
            dango_error("md redis %s: %s: %s", h->name, argv[0], reply->str);
            freeReplyObject(reply);
            return rc;
        }

        *reply_p = reply;
        return 0;
    }

    return rc;
}

/* prefix + key in a new allocation. */
static char *full_key(const md_redis_t *h, const char *key, size_t *len_p)
{
    size_t klen = strlen(key);
    char  *full = dango_malloc(h->prefix_len + klen + 1, "md_redis_key");

    if (full != NULL) {
        memcpy(full, h->prefix, h->prefix_len);
        memcpy(full + h->prefix_len, key, klen + 1);
        *len_p = h->prefix_len + klen;
    }

    return full;
}

/*
 * Runs "@cmd <prefixed key> [@value [PX @ttl_ms]]" (@value NULL: no value;
 * @ttl_ms 0 or beyond 2^52 ms, 142,000 years: no expiry, and no overflow).
 * As redis_cmd(), or DANGO_ENOMEM.
 */
static int redis_key_cmd(md_redis_t *h, const char *cmd, const char *key,
                         const void *value, size_t len, uint64_t ttl_ms,
                         redisReply **reply_p)
{
    const char *argv[5];
    size_t      argvlen[5];
    char        px[24];
    int         argc = 2;
    char       *full;
    int         rc;

    full = full_key(h, key, &argvlen[1]);
    if (full == NULL) {
        return DANGO_ENOMEM;
    }

    argv[0]    = cmd;
    argvlen[0] = strlen(cmd);
    argv[1]    = full;
    if (value != NULL) {
        argv[argc]      = value;
        argvlen[argc++] = len;
        if ((ttl_ms > 0) && (ttl_ms < (1ull << 52))) {
            snprintf(px, sizeof(px), "%llu", (unsigned long long)ttl_ms);
            argv[argc]      = "PX";
            argvlen[argc++] = 2;
            argv[argc]      = px;
            argvlen[argc++] = strlen(px);
        }
    }

    rc = redis_cmd(h, argc, argv, argvlen, reply_p);
    dango_free(full);
    return rc;
}

static int md_redis_get(dango_md_t *md, const char *key, char **value_p,
                        size_t *len_p)
{
    md_redis_t *h = dango_container_of(md, md_redis_t, super);
    redisReply *reply;
    char       *value;
    int         rc;

    rc = redis_key_cmd(h, "GET", key, NULL, 0, 0, &reply);
    if (rc != 0) {
        return rc;
    }

    if (reply->type == REDIS_REPLY_NIL) {
        rc = DANGO_ENOENT;
    } else if (reply->type != REDIS_REPLY_STRING) {
        dango_error("md redis %s: GET '%s': not a string (type %d)", h->name,
                    key, reply->type);
        rc = DANGO_EMETADATA;
    } else if ((value = dango_malloc(reply->len + 1, "md_value")) == NULL) {
        rc = DANGO_ENOMEM;
    } else {
        memcpy(value, reply->str, reply->len);
        value[reply->len] = '\0';
        *value_p          = value;
        *len_p            = reply->len;
    }

    freeReplyObject(reply);
    return rc;
}

static int md_redis_put(dango_md_t *md, const char *key, const void *value,
                        size_t len, uint64_t ttl_ms)
{
    md_redis_t *h = dango_container_of(md, md_redis_t, super);
    redisReply *reply;
    int         rc;

    /* SET of an empty value still needs an argument. */
    rc = redis_key_cmd(h, "SET", key, (value != NULL) ? value : "", len, ttl_ms,
                       &reply);
    if (rc == 0) {
        freeReplyObject(reply);
    }

    return rc;
}

static int md_redis_del(dango_md_t *md, const char *key)
{
    md_redis_t *h = dango_container_of(md, md_redis_t, super);
    redisReply *reply;
    int         rc;

    rc = redis_key_cmd(h, "DEL", key, NULL, 0, 0, &reply);
    if (rc != 0) {
        return rc;
    }

    if ((reply->type == REDIS_REPLY_INTEGER) && (reply->integer == 0)) {
        rc = DANGO_ENOENT;
    }

    freeReplyObject(reply);
    return rc;
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends the keys of one SCAN page that really start with @full. */
static int scan_collect(const redisReply *page, const char *full,
                        size_t full_len, size_t strip, char ***keys_p,
                        size_t *count_p, size_t *cap_p)
{
    for (size_t i = 0; i < page->elements; i++) {
        const redisReply *k = page->element[i];

        if ((k->type != REDIS_REPLY_STRING) || (k->len < full_len) ||
            (memcmp(k->str, full, full_len) != 0) ||
            (memchr(k->str, '\0', k->len) != NULL) || (k->len == strip)) {
            continue;
        }

        if (*count_p + 1 >= *cap_p) {
            size_t cap = (*cap_p == 0) ? 64 : 2 * *cap_p;
            char **grown =
                dango_realloc(*keys_p, cap * sizeof(*grown), "md_list");

            if (grown == NULL) {
                return DANGO_ENOMEM;
            }
            *keys_p = grown;
            *cap_p  = cap;
        }

        (*keys_p)[*count_p] =
            dango_strndup(k->str + strip, k->len - strip, "md_list_key");
        if ((*keys_p)[*count_p] == NULL) {
            return DANGO_ENOMEM;
        }
        (*count_p)++;
    }

    return 0;
}

static int md_redis_list(dango_md_t *md, const char *prefix, char ***keys_p,
                         size_t *count_p)
{
    md_redis_t *h          = dango_container_of(md, md_redis_t, super);
    char        cursor[32] = "0";
    char      **keys       = NULL;
    size_t      count      = 0;
    size_t      cap        = 0;
    size_t      full_len;
    char       *full;
    char       *pattern;
    size_t      plen   = 0;
    unsigned    rounds = 0;
    int         rc     = 0;

    full = full_key(h, prefix, &full_len);
    if (full == NULL) {
        return DANGO_ENOMEM;
    }

    /* Glob-escape the prefix, then match anything after it. */
    pattern = dango_malloc(2 * full_len + 2, "md_redis_pattern");
    if (pattern == NULL) {
        dango_free(full);
        return DANGO_ENOMEM;
    }
    for (size_t i = 0; i < full_len; i++) {
        if (strchr("*?[]\\", full[i]) != NULL) {
            pattern[plen++] = '\\';
        }
        pattern[plen++] = full[i];
    }
    pattern[plen++] = '*';

    do {
        const char *argv[6]    = {"SCAN",  cursor,  "MATCH",
                                  pattern, "COUNT", MD_REDIS_SCAN_COUNT};
        size_t      argvlen[6] = {
                 4, strlen(cursor), 5, plen, 5, strlen(MD_REDIS_SCAN_COUNT)};
        redisReply *reply;

        rc = redis_cmd(h, 6, argv, argvlen, &reply);
        if (rc != 0) {
            break;
        }

        if ((reply->type != REDIS_REPLY_ARRAY) || (reply->elements != 2) ||
            (reply->element[0]->type != REDIS_REPLY_STRING) ||
            (reply->element[0]->len >= sizeof(cursor)) ||
            (reply->element[1]->type != REDIS_REPLY_ARRAY)) {
            dango_error("md redis %s: SCAN: malformed reply", h->name);
            freeReplyObject(reply);
            rc = DANGO_EMETADATA;
            break;
        }

        memcpy(cursor, reply->element[0]->str, reply->element[0]->len);
        cursor[reply->element[0]->len] = '\0';
        rc = scan_collect(reply->element[1], full, full_len, h->prefix_len,
                          &keys, &count, &cap);
        freeReplyObject(reply);
    } while ((rc == 0) && (strcmp(cursor, "0") != 0) &&
             (++rounds < MD_REDIS_SCAN_ROUNDS));

    dango_free(pattern);
    dango_free(full);
    if ((rc == 0) && (strcmp(cursor, "0") != 0)) {
        dango_error("md redis %s: SCAN did not finish in %u rounds", h->name,
                    MD_REDIS_SCAN_ROUNDS);
        rc = DANGO_EMETADATA;
    }

    if ((rc == 0) && (keys == NULL)) {
        keys = dango_calloc(1, sizeof(*keys), "md_list");
        if (keys == NULL) {
            rc = DANGO_ENOMEM;
        }
    }

    if (rc != 0) {
        dango_md_list_free(keys, count);
        return rc;
    }

    /* SCAN may return a key twice (rehashing): sort, then squeeze. */
    qsort(keys, count, sizeof(*keys), key_cmp);
    if (count > 1) {
        size_t out = 1;

        for (size_t i = 1; i < count; i++) {
            if (strcmp(keys[i], keys[out - 1]) == 0) {
                dango_free(keys[i]);
            } else {
                keys[out++] = keys[i];
            }
        }
        count = out;
    }

    keys[count] = NULL;
    *keys_p     = keys;
    *count_p    = count;
    return 0;
}

static void md_redis_close(dango_md_t *md)
{
    md_redis_t *h = dango_container_of(md, md_redis_t, super);

    for (size_t i = 0; i < h->pool_count; i++) {
        redisFree(h->pool[i]);
    }

    pthread_mutex_destroy(&h->pool_lock);
    dango_free(h->host);
    dango_free(h->user);
    dango_free(h->password);
    dango_free(h->prefix);
    dango_free(h->name);
    dango_free(h);
}

static const dango__md_ops_t md_redis_ops = {.name        = "redis",
                                             .get         = md_redis_get,
                                             .put         = md_redis_put,
                                             .del         = md_redis_del,
                                             .list        = md_redis_list,
                                             .close       = md_redis_close,
                                             .watch_start = NULL,
                                             .watch_stop  = NULL};

/* ---------- connection string ---------- */

static int hexval(char c)
{
    if (isdigit((unsigned char)c)) {
        return c - '0';
    }
    c = (char)tolower((unsigned char)c);
    return ((c >= 'a') && (c <= 'f')) ? c - 'a' + 10 : -1;
}

/* Percent-decodes @len bytes into a new string; NULL with *rc_p set. */
static char *pct_decode(const char *s, size_t len, int *rc_p)
{
    char  *out = dango_malloc(len + 1, "md_redis_cred");
    size_t n   = 0;

    if (out == NULL) {
        *rc_p = DANGO_ENOMEM;
        return NULL;
    }

    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            int hi = (i + 2 < len) ? hexval(s[i + 1]) : -1;
            int lo = (i + 2 < len) ? hexval(s[i + 2]) : -1;

            /* Malformed escapes and "%00" (keys are C strings) are errors. */
            if ((hi < 0) || (lo < 0) || ((hi == 0) && (lo == 0))) {
                dango_free(out);
                *rc_p = DANGO_EINVAL;
                return NULL;
            }
            out[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[n++] = s[i];
        }
    }

    out[n] = '\0';
    return out;
}

/* Parses "[user:password@]host[:port][/db]" into @h. */
static int redis_parse(md_redis_t *h, const char *rest)
{
    const char *at = strrchr(rest, '@');
    const char *hp = (at != NULL) ? at + 1 : rest;
    const char *slash;
    const char *host_end;
    const char *port_str = NULL;
    size_t      hp_len;
    int         rc = DANGO_EINVAL;

    if (at != NULL) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));

        if (colon == NULL) {
            return DANGO_EINVAL; /* want user:password */
        }
        if (colon > rest) {
            h->user = pct_decode(rest, (size_t)(colon - rest), &rc);
            if (h->user == NULL) {
                return rc;
            }
        }
        h->password = pct_decode(colon + 1, (size_t)(at - colon - 1), &rc);
        if (h->password == NULL) {
            return rc;
        }
    }

    slash  = strchr(hp, '/');
    hp_len = (slash != NULL) ? (size_t)(slash - hp) : strlen(hp);
    if (hp_len == 0) {
        return DANGO_EINVAL;
    }

    if (hp[0] == '[') {
        const char *close = memchr(hp, ']', hp_len);

        if ((close == NULL) || (close == hp + 1)) {
            return DANGO_EINVAL;
        }
        for (const char *p = hp + 1; p < close; p++) {
            if (!isxdigit((unsigned char)*p) && (*p != ':') && (*p != '.')) {
                return DANGO_EINVAL;
            }
        }
        h->host  = dango_strndup(hp + 1, (size_t)(close - hp - 1), "md_redis");
        host_end = close + 1;
        if (host_end < hp + hp_len) {
            if (*host_end != ':') {
                goto err_host;
            }
            port_str = host_end + 1;
        }
    } else {
        const char *colon = memchr(hp, ':', hp_len);

        host_end = (colon != NULL) ? colon : hp + hp_len;
        if (host_end == hp) {
            return DANGO_EINVAL;
        }
        for (const char *p = hp; p < host_end; p++) {
            if (!isalnum((unsigned char)*p) && (*p != '.') && (*p != '-') &&
                (*p != '_')) {
                return DANGO_EINVAL;
            }
        }
        h->host  = dango_strndup(hp, (size_t)(host_end - hp), "md_redis");
        port_str = (colon != NULL) ? colon + 1 : NULL;
    }

    if (h->host == NULL) {
        return DANGO_ENOMEM;
    }

    h->port = MD_REDIS_DEFAULT_PORT;
    if (port_str != NULL) {
        const char *end  = hp + hp_len;
        long        port = 0;

        if ((port_str == end) || (end - port_str > 5)) {
            goto err_host;
        }
        for (const char *p = port_str; p < end; p++) {
            if (!isdigit((unsigned char)*p)) {
                goto err_host;
            }
            port = port * 10 + (*p - '0');
        }
        if ((port == 0) || (port > 65535)) {
            goto err_host;
        }
        h->port = (int)port;
    }

    if (slash != NULL) {
        const char *p = slash + 1;

        if ((*p == '\0') || (strlen(p) > 9)) {
            goto err_host;
        }
        for (; *p != '\0'; p++) {
            if (!isdigit((unsigned char)*p)) {
                goto err_host;
            }
            h->db = h->db * 10 + (*p - '0');
        }
    }

    return 0;

err_host:
    return DANGO_EINVAL;
}

/* ---------- backend entry point ---------- */

int dango__md_redis_open(const char *rest, const dango__md_config_t *config,
                         dango_md_t **md_p)
{
    const char *prefix =
        (config->redis_prefix != NULL) ? config->redis_prefix : "";
    size_t      name_len;
    md_redis_t *h;
    int         rc;

    if (strlen(prefix) > DANGO_MD_KEY_MAX) {
        dango_error("md redis: MD_REDIS_PREFIX is longer than %d bytes",
                    DANGO_MD_KEY_MAX);
        return DANGO_ECONFIG;
    }

    h = dango_calloc(1, sizeof(*h), "md_redis");
    if (h == NULL) {
        return DANGO_ENOMEM;
    }

    rc = redis_parse(h, rest);
    if (rc != 0) {
        if (rc == DANGO_EINVAL) {
            dango_debug("md redis://%s: malformed (want "
                        "redis://[user:password@]host[:port][/db])",
                        rest);
        }
        goto err_free;
    }

    h->prefix = dango_strdup(prefix, "md_redis_prefix");
    name_len  = strlen(h->host) + 32;
    h->name   = dango_malloc(name_len, "md_redis_name");
    if ((h->prefix == NULL) || (h->name == NULL)) {
        rc = DANGO_ENOMEM;
        goto err_free;
    }

    snprintf(h->name, name_len, "%s:%d/%ld", h->host, h->port, h->db);
    h->prefix_len = strlen(prefix);
    pthread_mutex_init(&h->pool_lock, NULL);
    h->super.ops                 = &md_redis_ops;
    h->super.config              = *config;
    h->super.config.etcd_prefix  = NULL;
    h->super.config.redis_prefix = NULL;
    *md_p                        = &h->super;
    return 0;

err_free:
    dango_free(h->host);
    dango_free(h->user);
    dango_free(h->password);
    dango_free(h->prefix);
    dango_free(h->name);
    dango_free(h);
    return rc;
}
