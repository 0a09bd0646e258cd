/*
 * The store benchmark's load generator for Dango, written against the
 * public API (include/dango/store.h) as an application would use it: one
 * store client shared by THREADS threads (or --clients of them, threads
 * spread round-robin), each thread with its own slice of one buffer
 * registered with dango_store_register_buffer(), so values move with
 * put_from / get_into and no intermediate copy. The JSON line is the one of
 * bench_kv_peer (see bench_kv_util.h).
 *
 *   bench_store --master HOST:PORT [--op put|get|exist|batch_exist]
 *               [--size 64k] [--threads 8] [--clients 1] [--batch 64]
 *               [--duration 3] [--warmup 0.5] [--working-set 512m]
 *               [--keys N] [--key-len 0] [--where local|netns]
 *               [--put-mode unique|upsert|remove] [--listen HOST:0]
 *               [--keep]
 *
 * Operations:
 *   get          get_into of a key preloaded before the run;
 *   put          a store that keeps its working set: objects are immutable,
 *                so each put_from writes a new key and the keys written a
 *                working set ago are removed in batches of up to 64 (one
 *                batch_remove per batch of puts, timed as part of the put
 *                that triggers it); --put-mode upsert instead replaces values
 * in a fixed key space with dango_store_upsert(), and remove does remove +
 * put_from of the same key; exist        dango_store_exist() of a preloaded
 * key; batch_exist  dango_store_batch_exist() of --batch preloaded keys;
 * batch_get / batch_put  dango_store_batch_get / batch_put of --batch keys
 * (preloaded, or fresh with the put ring above) per call
 *                (keys_per_s is the figure).
 * Every key the run created is removed before it exits, except the
 * preloaded key space with --keep: a later run of the same size and key
 * space then finds it in place. (A forced remove of an object that still
 * holds read leases, as every key a get run has read does, frees its space
 * only when the leases end, MASTER_LEASE_TTL later; runs back to back
 * would otherwise fill the pool with the previous run's values.)
 */
#define _GNU_SOURCE
#include <dango/dango.h>
#include <dango/store.h>

#include "bench_kv_util.h"

#define BS_MAX_CLIENTS   64
#define BS_REMOVE_BATCH  64
#define BS_CLEANUP_BATCH 1024

typedef struct bs_ctx {
    dango_store_client_t *c;
    char                 *buf;     /* this thread's registered slice */
    uint64_t              removed; /* put: keys below this seq are gone */
    uint64_t              live;    /* put: keys kept per thread */
    uint64_t              rb;      /* put: keys removed per batch */
} bs_ctx_t;

static dango_store_client_t *bs_clients[BS_MAX_CLIENTS];
static unsigned              bs_nclients = 1;
static bs_ctx_t              bs_ctx[KV_MAX_THREADS];
static const char           *bs_put_mode = "unique";
static int                   bs_keep;

/* Keys of one put-ring batch; prefix "p<thread>". */
static void bs_put_key(char *key, unsigned thread, uint64_t seq)
{
    char prefix[32];

    snprintf(prefix, sizeof(prefix), "p%u", thread);
    kv_key(key, prefix, seq);
}

/* Removes the put keys of thread @t with seq in [from, to). */
static int bs_remove_range(kv_thread_t *t, uint64_t from, uint64_t to)
{
    bs_ctx_t   *x = t->ctx;
    static char keys[KV_MAX_THREADS][BS_REMOVE_BATCH][KV_KEY_MAX];
    const char *kp[BS_REMOVE_BATCH];
    int         res[BS_REMOVE_BATCH];

    while (from < to) {
        size_t n = 0, i;
        int    rc;

        while ((from < to) && (n < BS_REMOVE_BATCH)) {
            bs_put_key(keys[t->idx][n], t->idx, from++);
            kp[n] = keys[t->idx][n];
            n++;
        }
        rc = dango_store_batch_remove(x->c, n, kp, 1, res);
        if (rc != 0) {
            kv_err("batch_remove: %s\n", dango_strerror(rc));
            return -1;
        }
        for (i = 0; i < n; i++) {
            if ((res[i] != 0) && (res[i] != DANGO_ENO_OBJECT)) {
                kv_err("batch_remove %s: %s\n", kp[i], dango_strerror(res[i]));
                return -1;
            }
        }
    }
    return 0;
}

static int bs_op_put_unique(kv_thread_t *t, uint64_t *bytes, uint64_t *keys)
{
    bs_ctx_t *x   = t->ctx;
    uint64_t  seq = t->seq;
    char      key[KV_KEY_MAX];
    int       rc;

    bs_put_key(key, t->idx, seq);
    kv_stamp(x->buf, kv_o.size, seq);
    rc = dango_store_put_from(x->c, key, x->buf, kv_o.size, NULL);
    if (rc != 0) {
        kv_err("put_from %s: %s\n", key, dango_strerror(rc));
        return -1;
    }
    /* Keep x->live to x->live + x->rb keys of this thread: once a whole
     * batch is older than that, drop it. */
    if ((seq + 1 >= x->live + x->rb) &&
        (x->removed + x->rb <= seq + 1 - x->live)) {
        if (bs_remove_range(t, x->removed, x->removed + x->rb) != 0) {
            return -1;
        }
        x->removed += x->rb;
    }
    *bytes = kv_o.size;
    *keys  = 1;
    return 0;
}

static int bs_op_put_fixed(kv_thread_t *t, uint64_t *bytes, uint64_t *keys)
{
    bs_ctx_t *x   = t->ctx;
    uint64_t  idx = kv_pick(t, t->seq, kv_o.keys);
    char      key[KV_KEY_MAX];
    int       rc;

    kv_key(key, "v", idx);
    kv_stamp(x->buf, kv_o.size, idx);
    if (strcmp(bs_put_mode, "upsert") == 0) {
        rc = dango_store_upsert(x->c, key, x->buf, kv_o.size, NULL);
    } else {
        rc = dango_store_remove(x->c, key, 1);
        if ((rc != 0) && (rc != DANGO_ENO_OBJECT)) {
            kv_err("remove %s: %s\n", key, dango_strerror(rc));
            return -1;
        }
        rc = dango_store_put_from(x->c, key, x->buf, kv_o.size, NULL);
    }
    if (rc != 0) {
        kv_err("%s %s: %s\n", bs_put_mode, key, dango_strerror(rc));
        return -1;
    }
    *bytes = kv_o.size;
    *keys  = 1;
    return 0;
}

static int bs_op_get(kv_thread_t *t, uint64_t *bytes, uint64_t *keys)
{
    bs_ctx_t *x   = t->ctx;
    uint64_t  idx = kv_pick(t, t->seq, kv_o.keys);
    char      key[KV_KEY_MAX];
    int64_t   n;

    kv_key(key, "v", idx);
    n = dango_store_get_into(x->c, key, x->buf, kv_o.size);
    if (n != (int64_t)kv_o.size) {
        kv_err("get_into %s: %s\n", key,
               (n < 0) ? dango_strerror((int)n) : "short value");
        return -1;
    }
    if (!kv_stamp_ok(x->buf, kv_o.size, idx)) {
        kv_err("get_into %s: the value of another key\n", key);
        return -1;
    }
    *bytes = kv_o.size;
    *keys  = 1;
    return 0;
}

static int bs_op_exist(kv_thread_t *t, uint64_t *bytes, uint64_t *keys)
{
    bs_ctx_t *x = t->ctx;
    char      key[KV_KEY_MAX];
    int       rc;

    kv_key(key, "v", kv_pick(t, t->seq, kv_o.keys));
    rc = dango_store_exist(x->c, key);
    if (rc != 1) {
        kv_err("exist %s: %s\n", key,
               (rc == 0) ? "not found" : dango_strerror(rc));
        return -1;
    }
    *bytes = 0;
    *keys  = 1;
    return 0;
}

static int bs_op_batch_exist(kv_thread_t *t, uint64_t *bytes, uint64_t *keys)
{
    bs_ctx_t   *x = t->ctx;
    static char kbuf[KV_MAX_THREADS][DANGO_STORE_BATCH_MAX / 16][KV_KEY_MAX];
    const char *kp[DANGO_STORE_BATCH_MAX / 16] = {NULL};
    int         res[DANGO_STORE_BATCH_MAX / 16];
    unsigned    i, b = kv_o.batch;
    int         rc;

    for (i = 0; i < b; i++) {
        uint64_t idx = (t->seq * b + i) * kv_o.threads + t->idx;

        kv_key(kbuf[t->idx][i], "v", idx % kv_o.keys);
        kp[i] = kbuf[t->idx][i];
    }
    rc = dango_store_batch_exist(x->c, b, kp, res);
    if (rc != 0) {
        kv_err("batch_exist: %s\n", dango_strerror(rc));
        return -1;
    }
    for (i = 0; i < b; i++) {
        if (res[i] != 1) {
            kv_err("batch_exist %s: %s\n", kp[i],
                   (res[i] == 0) ? "not found" : dango_strerror(res[i]));
            return -1;
        }
    }
    *bytes = 0;
    *keys  = b;
    return 0;
}

/* Keys per put of a batch op (1 for the single-key ops). */
static unsigned bs_keys_per_op = 1;

/* batch_put: --batch fresh keys in one dango_store_batch_put from the
 * thread's registered slice, old keys removed as put does. */
static int bs_op_batch_put(kv_thread_t *t, uint64_t *bytes, uint64_t *keys)
{
    bs_ctx_t   *x = t->ctx;
    static char kbuf[KV_MAX_THREADS][DANGO_STORE_BATCH_MAX / 16][KV_KEY_MAX];
    const char *kp[DANGO_STORE_BATCH_MAX / 16]   = {0};
    const void *bufs[DANGO_STORE_BATCH_MAX / 16] = {0};
    size_t      lens[DANGO_STORE_BATCH_MAX / 16] = {0};
    int         res[DANGO_STORE_BATCH_MAX / 16];
    unsigned    i, b = kv_o.batch;
    uint64_t    end = (t->seq + 1) * b;
    int         rc;

    for (i = 0; i < b; i++) {
        bs_put_key(kbuf[t->idx][i], t->idx, t->seq * b + i);
        kp[i]   = kbuf[t->idx][i];
        bufs[i] = x->buf + (size_t)i * kv_o.size;
        lens[i] = kv_o.size;
        kv_stamp(x->buf + (size_t)i * kv_o.size, kv_o.size, t->seq * b + i);
    }
    rc = dango_store_batch_put(x->c, b, kp, bufs, lens, 1, NULL, res);
    if (rc != 0) {
        kv_err("batch_put: %s\n", dango_strerror(rc));
        return -1;
    }
    for (i = 0; i < b; i++) {
        if (res[i] != 0) {
            kv_err("batch_put %s: %s\n", kp[i], dango_strerror(res[i]));
            return -1;
        }
    }
    while ((end >= x->live + x->rb) && (x->removed + x->rb <= end - x->live)) {
        if (bs_remove_range(t, x->removed, x->removed + x->rb) != 0) {
            return -1;
        }
        x->removed += x->rb;
    }
    *bytes = (uint64_t)kv_o.size * b;
    *keys  = b;
    return 0;
}

/* batch_get: --batch distinct preloaded keys in one dango_store_batch_get
 * into the thread's registered slice. */
static int bs_op_batch_get(kv_thread_t *t, uint64_t *bytes, uint64_t *keys)
{
    bs_ctx_t   *x = t->ctx;
    static char kbuf[KV_MAX_THREADS][DANGO_STORE_BATCH_MAX / 16][KV_KEY_MAX];
    const char *kp[DANGO_STORE_BATCH_MAX / 16]   = {0};
    void       *bufs[DANGO_STORE_BATCH_MAX / 16] = {0};
    size_t      lens[DANGO_STORE_BATCH_MAX / 16] = {0};
    int64_t     res[DANGO_STORE_BATCH_MAX / 16];
    uint64_t    idx[DANGO_STORE_BATCH_MAX / 16];
    unsigned    i, b = kv_o.batch;
    int         rc;

    for (i = 0; i < b; i++) {
        idx[i] = ((t->seq * b + i) * kv_o.threads + t->idx) % kv_o.keys;
        kv_key(kbuf[t->idx][i], "v", idx[i]);
        kp[i]   = kbuf[t->idx][i];
        bufs[i] = x->buf + (size_t)i * kv_o.size;
        lens[i] = kv_o.size;
    }
    rc = dango_store_batch_get(x->c, b, kp, bufs, lens, 1, res);
    if (rc != 0) {
        kv_err("batch_get: %s\n", dango_strerror(rc));
        return -1;
    }
    for (i = 0; i < b; i++) {
        if (res[i] != (int64_t)kv_o.size) {
            kv_err("batch_get %s: %s\n", kp[i],
                   (res[i] < 0) ? dango_strerror((int)res[i]) : "short value");
            return -1;
        }
        if (!kv_stamp_ok(bufs[i], kv_o.size, idx[i])) {
            kv_err("batch_get %s: the value of another key\n", kp[i]);
            return -1;
        }
    }
    *bytes = (uint64_t)kv_o.size * b;
    *keys  = b;
    return 0;
}

/* Preload: thread k puts keys k, k + THREADS, ... of the fixed key space
 * (keys left by an earlier run of the same size are kept). */
static void *bs_preload(void *arg)
{
    kv_thread_t *t = arg;
    bs_ctx_t    *x = t->ctx;
    char         key[KV_KEY_MAX];
    uint64_t     idx;

    for (idx = t->idx; idx < kv_o.keys; idx += kv_o.threads) {
        int rc;

        kv_key(key, "v", idx);
        kv_stamp(x->buf, kv_o.size, idx);
        rc = dango_store_put_from(x->c, key, x->buf, kv_o.size, NULL);
        if ((rc != 0) && (rc != DANGO_EOBJ_EXISTS)) {
            kv_err("preload put_from %s: %s\n", key, dango_strerror(rc));
            t->errors++;
            break;
        }
    }
    return NULL;
}

/* Removes the fixed key space, and what each put thread left. */
static void bs_cleanup(int fixed)
{
    static char keys[BS_CLEANUP_BATCH][KV_KEY_MAX];
    const char *kp[BS_CLEANUP_BATCH];
    int         res[BS_CLEANUP_BATCH];
    uint64_t    idx = 0;
    unsigned    k;

    while (fixed && (idx < kv_o.keys)) {
        size_t n = 0;

        while ((idx < kv_o.keys) && (n < BS_CLEANUP_BATCH)) {
            kv_key(keys[n], "v", idx++);
            kp[n] = keys[n];
            n++;
        }
        dango_store_batch_remove(bs_clients[0], n, kp, 1, res);
    }
    if (!fixed) {
        for (k = 0; k < kv_o.threads; k++) {
            bs_remove_range(&kv_t[k], bs_ctx[k].removed,
                            kv_t[k].seq * bs_keys_per_op);
        }
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_store --master HOST:PORT "
            "[--op put|get|batch_put|batch_get|exist|batch_exist]\n"
            "       [--size 64k] [--threads 8] [--clients 1] [--batch 64]\n"
            "       [--duration 3] [--warmup 0.5] [--working-set 512m] "
            "[--keys N]\n"
            "       [--key-len 0] [--where local|netns]\n"
            "       [--put-mode unique|upsert|remove] [--listen HOST:0] "
            "[--keep]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    dango_store_params_t params = {0};
    const char          *master = NULL, *listen = NULL;
    kv_op_fn             op;
    char                 extra[128];
    char                *mem;
    size_t               mem_len;
    unsigned             k;
    int                  i = 1, rc, fixed = 1;

    kv_defaults("dango");
    while (i < argc) {
        int next = kv_parse_common(argc, argv, i);

        if (next != i) {
            i = next;
            continue;
        }
        if (strcmp(argv[i], "--keep") == 0) {
            bs_keep = 1;
            i++;
            continue;
        }
        if (i + 1 >= argc) {
            usage();
        }
        if (strcmp(argv[i], "--master") == 0) {
            master = argv[i + 1];
        } else if (strcmp(argv[i], "--clients") == 0) {
            bs_nclients = (unsigned)atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--put-mode") == 0) {
            bs_put_mode = argv[i + 1];
        } else if (strcmp(argv[i], "--listen") == 0) {
            listen = argv[i + 1];
        } else {
            usage();
        }
        i += 2;
    }
    kv_check();
    if ((master == NULL) || (bs_nclients == 0) ||
        (bs_nclients > BS_MAX_CLIENTS) || (bs_nclients > kv_o.threads) ||
        (kv_o.batch > DANGO_STORE_BATCH_MAX / 16)) {
        usage();
    }

    if (strcmp(kv_o.op, "get") == 0) {
        op = bs_op_get;
    } else if (strcmp(kv_o.op, "exist") == 0) {
        op = bs_op_exist;
    } else if (strcmp(kv_o.op, "batch_exist") == 0) {
        op = bs_op_batch_exist;
    } else if (strcmp(kv_o.op, "batch_get") == 0) {
        op             = bs_op_batch_get;
        bs_keys_per_op = kv_o.batch;
    } else if (strcmp(kv_o.op, "batch_put") == 0) {
        op             = bs_op_batch_put;
        bs_keys_per_op = kv_o.batch;
        fixed          = 0;
    } else if (strcmp(kv_o.op, "put") == 0) {
        if (strcmp(bs_put_mode, "unique") == 0) {
            op    = bs_op_put_unique;
            fixed = 0;
        } else if ((strcmp(bs_put_mode, "upsert") == 0) ||
                   (strcmp(bs_put_mode, "remove") == 0)) {
            op = bs_op_put_fixed;
        } else {
            usage();
        }
    } else {
        usage();
    }

    params.field_mask = DANGO_STORE_PARAM_MASTER |
                        DANGO_STORE_PARAM_SEGMENT_SIZE |
                        DANGO_STORE_PARAM_BUFFER_SIZE;
    params.master_addr       = master;
    params.segment_size      = 0;
    params.local_buffer_size = 0; /* registered buffers only */
    if (listen != NULL) {
        params.field_mask |= DANGO_STORE_PARAM_LISTEN;
        params.listen_addr = listen;
    }

    mem_len = kv_o.size * kv_o.threads * bs_keys_per_op;
    mem     = kv_alloc(mem_len);
    if (mem == NULL) {
        fprintf(stderr, "cannot allocate the value buffers\n");
        return 2;
    }
    for (k = 0; k < bs_nclients; k++) {
        rc = dango_store_client_create(&params, NULL, &bs_clients[k]);
        if (rc != 0) {
            fprintf(stderr, "bench_store: client: %s\n", dango_strerror(rc));
            return 1;
        }
        rc = dango_store_register_buffer(bs_clients[k], mem, mem_len);
        if (rc != 0) {
            fprintf(stderr, "bench_store: register_buffer: %s\n",
                    dango_strerror(rc));
            return 1;
        }
    }
    for (k = 0; k < kv_o.threads; k++) {
        bs_ctx[k].c   = bs_clients[k % bs_nclients];
        bs_ctx[k].buf = mem + (size_t)k * kv_o.size * bs_keys_per_op;
        /* put: keep the working set (at most twice it at any time) */
        bs_ctx[k].live = kv_o.keys / kv_o.threads;
        if (bs_ctx[k].live == 0) {
            bs_ctx[k].live = 1;
        }
        bs_ctx[k].rb = (bs_ctx[k].live < BS_REMOVE_BATCH) ? bs_ctx[k].live
                                                          : BS_REMOVE_BATCH;
        kv_t[k].ctx  = &bs_ctx[k];
        kv_t[k].idx  = k;
    }

    if (fixed) {
        for (k = 0; k < kv_o.threads; k++) {
            pthread_create(&kv_t[k].tid, NULL, bs_preload, &kv_t[k]);
        }
        for (k = 0; k < kv_o.threads; k++) {
            pthread_join(kv_t[k].tid, NULL);
            if (kv_t[k].errors != 0) {
                fprintf(stderr, "bench_store: preload failed\n");
                return 1;
            }
        }
    }

    snprintf(extra, sizeof(extra), ",\"clients\":%u,\"put_mode\":\"%s\"",
             bs_nclients, (strcmp(kv_o.op, "put") == 0) ? bs_put_mode : "-");
    rc = kv_run(op, extra);

    if (!(fixed && bs_keep)) {
        bs_cleanup(fixed);
    }
    for (k = 0; k < bs_nclients; k++) {
        dango_store_unregister_buffer(bs_clients[k], mem);
        dango_store_client_destroy(bs_clients[k]);
    }
    munmap(mem, mem_len);
    return rc;
}
