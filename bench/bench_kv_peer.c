/*
 * The store benchmark's load generator for the peers: Redis through hiredis
 * and memcached through libmemcached, with the client shape of bench_store
 * (THREADS threads, one connection each, one call at a time per thread) and
 * the same JSON line (see bench_kv_util.h).
 *
 *   bench_kv_peer --system redis|memcached --host H --port P
 *                 [--op put|get] [--size 64k] [--threads 8]
 *                 [--duration 3] [--warmup 0.5] [--working-set 512m]
 *                 [--keys N] [--key-len 0] [--where local|netns]
 *
 * put is SET of an existing key (the store keeps the working set and
 * replaces values in place); get is GET of a key preloaded before the run,
 * copied into the thread's buffer, as a caller that wants the value in its
 * own memory must (both libraries hand back a value they allocated). The
 * keys are deleted at the end (FLUSHALL / flush_all), so each run starts
 * from an empty server.
 */
#define _GNU_SOURCE
#include <hiredis/hiredis.h>
#include <libmemcached/memcached.h>

#include "bench_kv_util.h"

typedef struct peer_ctx {
    redisContext *redis;
    memcached_st *mc;
    char         *buf; /* value to SET / destination of GET */
} peer_ctx_t;

static const char *peer_host = "127.0.0.1";
static int         peer_port;
static int         peer_redis; /* 1: Redis, 0: memcached */
static peer_ctx_t  peer_ctx[KV_MAX_THREADS];

static int peer_connect(peer_ctx_t *p)
{
    if (peer_redis) {
        struct timeval tv = {10, 0};

        p->redis = redisConnectWithTimeout(peer_host, peer_port, tv);
        if ((p->redis == NULL) || p->redis->err) {
            fprintf(stderr, "redis %s:%d: %s\n", peer_host, peer_port,
                    (p->redis != NULL) ? p->redis->errstr : "no memory");
            return -1;
        }
        return 0;
    }

    p->mc = memcached_create(NULL);
    if (p->mc == NULL) {
        return -1;
    }
    memcached_behavior_set(p->mc, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    memcached_behavior_set(p->mc, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, 10000);
    if (memcached_server_add(p->mc, peer_host, (in_port_t)peer_port) !=
        MEMCACHED_SUCCESS) {
        fprintf(stderr, "memcached %s:%d: cannot add server\n", peer_host,
                peer_port);
        return -1;
    }
    return 0;
}

static void peer_disconnect(peer_ctx_t *p)
{
    if (p->redis != NULL) {
        redisFree(p->redis);
    }
    if (p->mc != NULL) {
        memcached_free(p->mc);
    }
}

static int peer_set(peer_ctx_t *p, const char *key, size_t klen,
                    const void *val, size_t len)
{
    if (peer_redis) {
        redisReply *r =
            redisCommand(p->redis, "SET %b %b", key, klen, val, len);
        int ok = (r != NULL) && (r->type == REDIS_REPLY_STATUS);

        if (!ok) {
            kv_err("redis SET: %s\n", (r != NULL)
                                          ? (r->str != NULL ? r->str : "?")
                                          : p->redis->errstr);
        }
        if (r != NULL) {
            freeReplyObject(r);
        }
        return ok ? 0 : -1;
    } else {
        memcached_return_t rc = memcached_set(p->mc, key, klen, val, len, 0, 0);

        if (rc != MEMCACHED_SUCCESS) {
            kv_err("memcached set: %s\n", memcached_strerror(p->mc, rc));
            return -1;
        }
        return 0;
    }
}

/* GET into p->buf; returns the value length or -1. */
static int64_t peer_get(peer_ctx_t *p, const char *key, size_t klen)
{
    if (peer_redis) {
        redisReply *r = redisCommand(p->redis, "GET %b", key, klen);
        int64_t     n = -1;

        if ((r != NULL) && (r->type == REDIS_REPLY_STRING) &&
            ((size_t)r->len <= kv_o.size)) {
            memcpy(p->buf, r->str, (size_t)r->len);
            n = r->len;
        } else {
            kv_err("redis GET %s: %s\n", key,
                   (r == NULL)                    ? p->redis->errstr
                   : (r->type == REDIS_REPLY_NIL) ? "no such key"
                                                  : "unexpected reply");
        }
        if (r != NULL) {
            freeReplyObject(r);
        }
        return n;
    } else {
        memcached_return_t rc;
        size_t             len = 0;
        uint32_t           flags;
        char   *v = memcached_get(p->mc, key, klen, &len, &flags, &rc);
        int64_t n = -1;

        if ((v != NULL) && (len <= kv_o.size)) {
            memcpy(p->buf, v, len);
            n = (int64_t)len;
        } else {
            kv_err("memcached get %s: %s\n", key,
                   memcached_strerror(p->mc, rc));
        }
        free(v);
        return n;
    }
}

static int peer_op_put(kv_thread_t *t, uint64_t *bytes, uint64_t *keys)
{
    peer_ctx_t *p = t->ctx;
    char        key[KV_KEY_MAX];
    uint64_t    idx  = kv_pick(t, t->seq, kv_o.keys);
    size_t      klen = kv_key(key, "v", idx);

    kv_stamp(p->buf, kv_o.size, idx);
    if (peer_set(p, key, klen, p->buf, kv_o.size) != 0) {
        return -1;
    }
    *bytes = kv_o.size;
    *keys  = 1;
    return 0;
}

static int peer_op_get(kv_thread_t *t, uint64_t *bytes, uint64_t *keys)
{
    peer_ctx_t *p = t->ctx;
    char        key[KV_KEY_MAX];
    uint64_t    idx  = kv_pick(t, t->seq, kv_o.keys);
    size_t      klen = kv_key(key, "v", idx);
    int64_t     n    = peer_get(p, key, klen);

    if (n != (int64_t)kv_o.size) {
        if (n >= 0) {
            kv_err("GET %s: %" PRId64 " bytes, expected %zu\n", key, n,
                   kv_o.size);
        }
        return -1;
    }
    if (!kv_stamp_ok(p->buf, kv_o.size, idx)) {
        kv_err("GET %s: the value of another key\n", key);
        return -1;
    }
    *bytes = kv_o.size;
    *keys  = 1;
    return 0;
}

/* Preload: thread k sets keys k, k + THREADS, ... (in parallel). */
static void *peer_preload(void *arg)
{
    kv_thread_t *t = arg;
    peer_ctx_t  *p = t->ctx;
    uint64_t     idx;
    char         key[KV_KEY_MAX];

    for (idx = t->idx; idx < kv_o.keys; idx += kv_o.threads) {
        size_t klen = kv_key(key, "v", idx);

        kv_stamp(p->buf, kv_o.size, idx);
        if (peer_set(p, key, klen, p->buf, kv_o.size) != 0) {
            t->errors++;
            break;
        }
    }
    return NULL;
}

static void peer_flush(peer_ctx_t *p)
{
    if (peer_redis) {
        redisReply *r = redisCommand(p->redis, "FLUSHALL");

        if (r != NULL) {
            freeReplyObject(r);
        }
    } else {
        memcached_flush(p->mc, 0);
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_kv_peer --system redis|memcached --port P "
            "[--host 127.0.0.1]\n"
            "       [--op put|get] [--size 64k] [--threads 8] [--duration 3]\n"
            "       [--warmup 0.5] [--working-set 512m] [--keys N] "
            "[--key-len 0]\n"
            "       [--where local|netns]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *system = NULL;
    kv_op_fn    op;
    char       *mem;
    unsigned    k;
    int         i = 1, rc;

    kv_defaults("?");
    while (i < argc) {
        int next = kv_parse_common(argc, argv, i);

        if (next != i) {
            i = next;
            continue;
        }
        if (i + 1 >= argc) {
            usage();
        }
        if (strcmp(argv[i], "--system") == 0) {
            system = argv[i + 1];
        } else if (strcmp(argv[i], "--host") == 0) {
            peer_host = argv[i + 1];
        } else if (strcmp(argv[i], "--port") == 0) {
            peer_port = atoi(argv[i + 1]);
        } else {
            usage();
        }
        i += 2;
    }
    if ((system == NULL) || (peer_port <= 0)) {
        usage();
    }
    if (strcmp(system, "redis") == 0) {
        peer_redis = 1;
    } else if (strcmp(system, "memcached") != 0) {
        usage();
    }
    kv_o.system = system;
    kv_check();
    if (strcmp(kv_o.op, "put") == 0) {
        op = peer_op_put;
    } else if (strcmp(kv_o.op, "get") == 0) {
        op = peer_op_get;
    } else {
        fprintf(stderr, "--op: put or get\n");
        return 2;
    }

    mem = kv_alloc(kv_o.size * kv_o.threads);
    if (mem == NULL) {
        fprintf(stderr, "cannot allocate the value buffers\n");
        return 2;
    }
    for (k = 0; k < kv_o.threads; k++) {
        peer_ctx[k].buf = mem + (size_t)k * kv_o.size;
        if (peer_connect(&peer_ctx[k]) != 0) {
            return 1;
        }
        kv_t[k].ctx = &peer_ctx[k];
        kv_t[k].idx = k;
    }

    /* Both ops start from a full key space: GET needs it, and SET then
     * replaces values as a cache that keeps its working set does. */
    for (k = 0; k < kv_o.threads; k++) {
        pthread_create(&kv_t[k].tid, NULL, peer_preload, &kv_t[k]);
    }
    for (k = 0; k < kv_o.threads; k++) {
        pthread_join(kv_t[k].tid, NULL);
        if (kv_t[k].errors != 0) {
            fprintf(stderr, "preload failed\n");
            return 1;
        }
    }

    rc = kv_run(op, NULL);

    peer_flush(&peer_ctx[0]);
    for (k = 0; k < kv_o.threads; k++) {
        peer_disconnect(&peer_ctx[k]);
    }
    return rc;
}
