/*
 * The load-generator frame shared by bench_store (Dango) and bench_kv_peer
 * (Redis, memcached), so both sides are driven and measured alike:
 *
 *   - THREADS threads, each with its own connection or buffer slice, call
 *     one operation back to back: first for WARMUP seconds (not counted),
 *     then for DURATION seconds;
 *   - every counted call is timed on its own (CLOCK_MONOTONIC around the
 *     call) and the samples of all threads give p50/p99/p999;
 *   - throughput is the bytes (or keys) completed in the counted window
 *     divided by that window, measured from the common start to the last
 *     thread's stop.
 *
 * Keys are "<prefix>:<size>:<index>", padded with '.' to --key-len bytes
 * when asked (the metadata figures use 100-byte keys). Values start with
 * their key index as 8 bytes, so a GET that returns another key's value is
 * caught (a cheap check that costs no pass over the value).
 */
#ifndef DANGO_BENCH_KV_UTIL_H
#define DANGO_BENCH_KV_UTIL_H

#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench_util.h"

#define KV_MAX_THREADS 256
#define KV_KEY_MAX     512

typedef struct kv_opts {
    const char *system; /* "dango", "redis", "memcached" */
    const char *op;     /* "put", "get", "exist", "batch_exist" */
    const char *where;  /* label: "local" or "netns" */
    unsigned    threads;
    size_t      size;        /* value bytes */
    size_t      key_len;     /* 0 = natural length */
    size_t      working_set; /* bytes of values kept in the store */
    uint64_t    keys;        /* key space (0: working_set / size) */
    unsigned    batch;       /* keys per call (batch ops) */
    double      duration;
    double      warmup;
} kv_opts_t;

typedef struct kv_thread {
    unsigned  idx;
    void     *ctx; /* the system's per-thread state */
    uint64_t  ops;
    uint64_t  bytes;
    uint64_t  keys;
    uint64_t  errors;
    uint64_t  seq; /* calls made so far, counted or not */
    uint32_t *lat; /* ns per counted call */
    size_t    nlat, cap;
    double    end;
    pthread_t tid;
} kv_thread_t;

/*
 * One call of the operation under test. Returns 0 and adds to *bytes and
 * *keys what it moved, or a negative value on failure (it prints why, at
 * most a few times).
 */
typedef int (*kv_op_fn)(kv_thread_t *t, uint64_t *bytes, uint64_t *keys);

static kv_opts_t    kv_o;
static kv_op_fn     kv_op;
static kv_thread_t  kv_t[KV_MAX_THREADS];
static volatile int kv_go;
static double       kv_start, kv_count_from, kv_stop_at;
static int          kv_err_budget = 5;

/* Prints an error message at most a handful of times per process. */
#define kv_err(...)                                                            \
    do {                                                                       \
        if (__atomic_fetch_sub(&kv_err_budget, 1, __ATOMIC_RELAXED) > 0) {     \
            fprintf(stderr, __VA_ARGS__);                                      \
        }                                                                      \
    } while (0)

/* Writes the key of index @idx under @prefix into @buf; returns its length. */
static inline size_t kv_key(char *buf, const char *prefix, uint64_t idx)
{
    int n =
        snprintf(buf, KV_KEY_MAX, "%s:%zu:%" PRIu64, prefix, kv_o.size, idx);
    size_t len = (size_t)n;

    if ((kv_o.key_len > len) && (kv_o.key_len < KV_KEY_MAX)) {
        memset(buf + len, '.', kv_o.key_len - len);
        len = kv_o.key_len;
    }
    buf[len] = '\0';
    return len;
}

/* Stamps a value buffer with its key index. */
static inline void kv_stamp(void *buf, size_t len, uint64_t idx)
{
    if (len >= sizeof(idx)) {
        memcpy(buf, &idx, sizeof(idx));
    }
}

/* 1 when the value in @buf carries the stamp of @idx. */
static inline int kv_stamp_ok(const void *buf, size_t len, uint64_t idx)
{
    uint64_t got;

    if (len < sizeof(got)) {
        return 1;
    }
    memcpy(&got, buf, sizeof(got));
    return got == idx;
}

/* The key index thread @t uses for its @seq-th call over @nkeys keys:
 * threads interleave so they touch different keys at any moment. */
static inline uint64_t kv_pick(const kv_thread_t *t, uint64_t seq,
                               uint64_t nkeys)
{
    return (seq * kv_o.threads + t->idx) % nkeys;
}

/* Anonymous memory, pre-faulted (first touch on the hot path would halve
 * any copy rate), filled with a pattern. NULL on failure. */
static inline void *kv_alloc(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

    if (p == MAP_FAILED) {
        return NULL;
    }
    memset(p, 0x5a, len);
    return p;
}

static void kv_lat_add(kv_thread_t *t, double dt)
{
    double ns = dt * 1e9;

    if (t->nlat == t->cap) {
        size_t    cap = (t->cap != 0) ? t->cap * 2 : 65536;
        uint32_t *lat = realloc(t->lat, cap * sizeof(*lat));

        if (lat == NULL) {
            return; /* keep counting, lose the sample */
        }
        t->lat = lat;
        t->cap = cap;
    }
    t->lat[t->nlat++] = (ns >= 4e9) ? UINT32_MAX : (uint32_t)ns;
}

static void *kv_thread_main(void *arg)
{
    kv_thread_t *t = arg;

    while (!__atomic_load_n(&kv_go, __ATOMIC_ACQUIRE)) {
        /* all threads start together */
    }

    for (;;) {
        uint64_t bytes = 0, keys = 0;
        double   t0 = bench_now_s(), t1;
        int      rc;

        if (t0 >= kv_stop_at) {
            break;
        }
        rc = kv_op(t, &bytes, &keys);
        t1 = bench_now_s();
        t->seq++;
        if (t0 < kv_count_from) {
            if (rc < 0) {
                t->errors++;
            }
            continue;
        }
        if (rc < 0) {
            t->errors++;
            if (t->errors > 1000) {
                break; /* something is broken: don't spin on it */
            }
            continue;
        }
        t->ops++;
        t->bytes += bytes;
        t->keys += keys;
        kv_lat_add(t, t1 - t0);
    }
    t->end = bench_now_s();
    return NULL;
}

static int kv_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return (x > y) - (x < y);
}

/*
 * Runs the threads (their ctx already set up) and prints the JSON line.
 * @extra is appended inside the object (starting with ',') or NULL.
 * Returns 0, or 1 when any counted call failed or nothing completed.
 */
static int kv_run(kv_op_fn op, const char *extra)
{
    uint64_t  ops = 0, bytes = 0, keys = 0, errors = 0;
    size_t    n = 0, i;
    uint32_t *all;
    double    end = 0, secs, p50 = 0, p99 = 0, p999 = 0;
    unsigned  k;

    kv_op = op;
    for (k = 0; k < kv_o.threads; k++) {
        kv_t[k].idx = k;
        if (pthread_create(&kv_t[k].tid, NULL, kv_thread_main, &kv_t[k]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            exit(2);
        }
    }
    kv_start      = bench_now_s();
    kv_count_from = kv_start + kv_o.warmup;
    kv_stop_at    = kv_count_from + kv_o.duration;
    __atomic_store_n(&kv_go, 1, __ATOMIC_RELEASE);

    for (k = 0; k < kv_o.threads; k++) {
        pthread_join(kv_t[k].tid, NULL);
        ops += kv_t[k].ops;
        bytes += kv_t[k].bytes;
        keys += kv_t[k].keys;
        errors += kv_t[k].errors;
        n += kv_t[k].nlat;
        if (kv_t[k].end > end) {
            end = kv_t[k].end;
        }
    }
    secs = end - kv_count_from;

    all = malloc((n + 1) * sizeof(*all));
    if (all != NULL) {
        size_t at = 0;

        for (k = 0; k < kv_o.threads; k++) {
            memcpy(all + at, kv_t[k].lat, kv_t[k].nlat * sizeof(*all));
            at += kv_t[k].nlat;
        }
        qsort(all, n, sizeof(*all), kv_cmp_u32);
        if (n > 0) {
            p50  = all[(n - 1) / 2] / 1e3;
            p99  = all[(size_t)((double)(n - 1) * 0.99)] / 1e3;
            p999 = all[(size_t)((double)(n - 1) * 0.999)] / 1e3;
        }
        free(all);
    }
    for (i = 0; i < kv_o.threads; i++) {
        free(kv_t[i].lat);
        kv_t[i].lat = NULL;
    }

    printf("{\"bench\":\"store\",\"system\":\"%s\",\"op\":\"%s\","
           "\"size\":%zu,\"where\":\"%s\",\"threads\":%u,\"batch\":%u,"
           "\"key_len\":%zu,\"keys\":%" PRIu64 ",\"secs\":%.3f,"
           "\"gbps\":%.3f,\"ops\":%.0f,\"keys_per_s\":%.0f,"
           "\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
           "\"errors\":%" PRIu64 "%s}\n",
           kv_o.system, kv_o.op, kv_o.size, kv_o.where, kv_o.threads,
           kv_o.batch, kv_o.key_len, kv_o.keys, secs,
           (secs > 0) ? (double)bytes / secs / 1e9 : 0,
           (secs > 0) ? (double)ops / secs : 0,
           (secs > 0) ? (double)keys / secs : 0, p50, p99, p999, errors,
           (extra != NULL) ? extra : "");
    fflush(stdout);
    return ((errors != 0) || (ops == 0)) ? 1 : 0;
}

/* The default key space: enough keys for the working set, at least one
 * per thread. */
static inline uint64_t kv_default_keys(void)
{
    uint64_t n = (kv_o.size != 0) ? kv_o.working_set / kv_o.size : 0;

    if (n < kv_o.threads) {
        n = kv_o.threads;
    }
    return n;
}

/* Parses the options common to both generators; returns the index of the
 * first argument it does not know, or -1 (and prints why) on a bad value. */
static inline int kv_parse_common(int argc, char **argv, int i)
{
    const char *a = argv[i];
    const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;

    if (v == NULL) {
        return i;
    }
    if (strcmp(a, "--op") == 0) {
        kv_o.op = v;
    } else if (strcmp(a, "--where") == 0) {
        kv_o.where = v;
    } else if (strcmp(a, "--threads") == 0) {
        kv_o.threads = (unsigned)atoi(v);
    } else if (strcmp(a, "--size") == 0) {
        kv_o.size = bench_parse_size(v);
    } else if (strcmp(a, "--key-len") == 0) {
        kv_o.key_len = (size_t)atoi(v);
    } else if (strcmp(a, "--working-set") == 0) {
        kv_o.working_set = bench_parse_size(v);
    } else if (strcmp(a, "--keys") == 0) {
        kv_o.keys = strtoull(v, NULL, 10);
    } else if (strcmp(a, "--batch") == 0) {
        kv_o.batch = (unsigned)atoi(v);
    } else if (strcmp(a, "--duration") == 0) {
        kv_o.duration = atof(v);
    } else if (strcmp(a, "--warmup") == 0) {
        kv_o.warmup = atof(v);
    } else {
        return i;
    }
    return i + 2;
}

static inline void kv_defaults(const char *system)
{
    kv_o.system      = system;
    kv_o.op          = "get";
    kv_o.where       = "local";
    kv_o.threads     = 8;
    kv_o.size        = 65536;
    kv_o.working_set = 512u << 20;
    kv_o.batch       = 1;
    kv_o.duration    = 3;
    kv_o.warmup      = 0.5;
}

/* Checks the common options after parsing; exits with a message on error. */
static inline void kv_check(void)
{
    if ((kv_o.threads == 0) || (kv_o.threads > KV_MAX_THREADS) ||
        (kv_o.size == 0) || (kv_o.duration <= 0) || (kv_o.batch == 0) ||
        (kv_o.key_len >= KV_KEY_MAX - 64)) {
        fprintf(stderr, "bad --threads, --size, --duration, --batch or "
                        "--key-len\n");
        exit(2);
    }
    if (kv_o.keys == 0) {
        kv_o.keys = kv_default_keys();
    }
}

#endif
