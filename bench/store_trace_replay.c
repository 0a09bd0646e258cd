/*
 * Replays a conversation trace (JSONL with hash_ids, read through the
 * conductor's trace parser) against a running pool, one object per block
 * (hash id): for each request, the leading blocks that exist are read (and
 * checked), the missing ones are put. The block hit rate is the share of
 * blocks found in the leading run.
 *
 * Two pools in one invocation, each with a fresh embedded master and one
 * node:
 *   memory+disk  a memory segment of MEM_FRAC of the trace's distinct
 *                blocks and a disk tier of DISK_FRAC (default: the rest);
 *   memory       the same memory segment alone;
 * next to the same replay on a single LRU cache (simulated, same prefix
 * rule) of the combined capacity and of the memory capacity.
 *
 * usage: store_trace_replay --dir DIR [--trace FILE] [--requests N]
 *        [--payload 64k] [--mem-frac 0.1] [--disk-frac 0.9]
 *        [--pools both|tiered|memory]
 * Output: one JSON object per pool, then a summary line.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dango/conductor.h>
#include <dango/dango.h>
#include <dango/store.h>
#include <dango/store_master.h>

#include "bench_util.h"

#define KEY_MAX 32
#define BATCH   64

typedef struct args {
    const char *dir, *trace, *pools;
    size_t      requests, payload;
    double      mem_frac, disk_frac;
} args_t;

typedef struct result {
    uint64_t blocks, hits, puts, put_failures, get_failures, wrong;
    double   seconds;
    dango_store_pool_info_t info;
} result_t;

/* ---------- the LRU reference ---------- */

/* An LRU of block ids: open-addressing map id -> slot, slots on a list. */
typedef struct lru {
    uint64_t *keys; /* map: id + 1 (0 = empty) */
    uint32_t *vals; /* map: slot */
    size_t    mask;
    uint64_t *ids; /* slot -> id */
    uint32_t *prev, *next;
    uint32_t  head, tail, n, cap; /* head = most recent */
} lru_t;

#define NIL UINT32_MAX

static size_t lru_find(const lru_t *l, uint64_t id)
{
    size_t i = (id * 0x9e3779b97f4a7c15ull) & l->mask;

    while ((l->keys[i] != 0) && (l->keys[i] != id + 1)) {
        i = (i + 1) & l->mask;
    }
    return i;
}

static void lru_unlink(lru_t *l, uint32_t s)
{
    if (l->prev[s] != NIL) {
        l->next[l->prev[s]] = l->next[s];
    } else {
        l->head = l->next[s];
    }
    if (l->next[s] != NIL) {
        l->prev[l->next[s]] = l->prev[s];
    } else {
        l->tail = l->prev[s];
    }
}

static void lru_front(lru_t *l, uint32_t s)
{
    l->prev[s] = NIL;
    l->next[s] = l->head;
    if (l->head != NIL) {
        l->prev[l->head] = s;
    }
    l->head = s;
    if (l->tail == NIL) {
        l->tail = s;
    }
}

/* Removes map entry at @i (backward-shift deletion). */
static void lru_map_del(lru_t *l, size_t i)
{
    size_t j = i;

    for (;;) {
        size_t k;

        j = (j + 1) & l->mask;
        if (l->keys[j] == 0) {
            break;
        }
        k = ((l->keys[j] - 1) * 0x9e3779b97f4a7c15ull) & l->mask;
        if ((i <= j) ? ((i < k) && (k <= j)) : ((i < k) || (k <= j))) {
            continue;
        }
        l->keys[i] = l->keys[j];
        l->vals[i] = l->vals[j];
        i          = j;
    }
    l->keys[i] = 0;
}

static int lru_has(lru_t *l, uint64_t id)
{
    return l->keys[lru_find(l, id)] != 0;
}

static void lru_touch(lru_t *l, uint64_t id)
{
    size_t i = lru_find(l, id);

    if (l->keys[i] != 0) {
        lru_unlink(l, l->vals[i]);
        lru_front(l, l->vals[i]);
    }
}

static void lru_insert(lru_t *l, uint64_t id)
{
    size_t   i = lru_find(l, id);
    uint32_t s;

    if ((l->keys[i] != 0) || (l->cap == 0)) {
        return;
    }
    if (l->n == l->cap) {
        s = l->tail;
        lru_unlink(l, s);
        lru_map_del(l, lru_find(l, l->ids[s]));
        i = lru_find(l, id);
    } else {
        s = l->n++;
    }
    l->ids[s]  = id;
    l->keys[i] = id + 1;
    l->vals[i] = s;
    lru_front(l, s);
}

static double lru_replay(const dango_conductor_trace_t *t, size_t nreq,
                         uint32_t cap)
{
    lru_t    l;
    size_t   sz     = 1;
    uint64_t blocks = 0, hits = 0;

    while (sz < 2 * (size_t)cap + 2) {
        sz <<= 1;
    }
    memset(&l, 0, sizeof(l));
    l.keys = calloc(sz, sizeof(*l.keys));
    l.vals = calloc(sz, sizeof(*l.vals));
    l.ids  = calloc(cap + 1, sizeof(*l.ids));
    l.prev = calloc(cap + 1, sizeof(*l.prev));
    l.next = calloc(cap + 1, sizeof(*l.next));
    l.mask = sz - 1;
    l.head = l.tail = NIL;
    l.cap           = cap;

    for (size_t r = 0; r < nreq; r++) {
        dango_conductor_trace_req_t q;
        size_t                      p = 0;

        dango_conductor_trace_get(t, r, &q);
        while ((p < q.n_blocks) && lru_has(&l, q.hash_ids[p])) {
            p++;
        }
        for (size_t b = 0; b < p; b++) {
            lru_touch(&l, q.hash_ids[b]);
        }
        for (size_t b = p; b < q.n_blocks; b++) {
            lru_insert(&l, q.hash_ids[b]);
        }
        blocks += q.n_blocks;
        hits += p;
    }

    free(l.keys);
    free(l.vals);
    free(l.ids);
    free(l.prev);
    free(l.next);
    return blocks ? (double)hits / (double)blocks : 0;
}

/* ---------- the store replay ---------- */

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static void fill(uint8_t *v, size_t len, uint64_t id)
{
    memset(v, (int)(id & 0xff), len);
    memcpy(v, &id, (len < 8) ? len : 8);
}

static int store_replay(const args_t *a, const dango_conductor_trace_t *t,
                        size_t nreq, uint64_t mem_bytes, uint64_t disk_bytes,
                        result_t *res)
{
    dango_config_t       *mcfg, *ncfg;
    dango_store_master_t *m;
    dango_store_client_t *node, *app;
    dango_store_params_t  p;
    char                  v[64];
    char                 *keys[BATCH];
    char                  keybuf[BATCH][KEY_MAX];
    void                 *bufs[BATCH];
    size_t                lens[BATCH];
    int64_t               gres[BATCH];
    int                   st[BATCH], rc;
    uint8_t              *data;
    double                t0;

    memset(res, 0, sizeof(*res));
    dango_config_read(NULL, &mcfg);
    dango_config_set(mcfg, "MASTER_LISTEN", "127.0.0.1:0");
    dango_config_set(mcfg, "MASTER_ADMIN_LISTEN", "");
    /* Reads lease for 200 ms: the eviction order is the last read. */
    dango_config_set(mcfg, "MASTER_LEASE_TTL", "200ms");
    rc = dango_store_master_create(mcfg, &m);
    if (rc != 0) {
        return rc;
    }

    dango_config_read(NULL, &ncfg);
    dango_config_set(ncfg, "XFER_LISTEN", "127.0.0.1:0");
    if (disk_bytes > 0) {
        dango_config_set(ncfg, "STORE_DISK_PATH", a->dir);
        snprintf(v, sizeof(v), "%" PRIu64, disk_bytes);
        dango_config_set(ncfg, "STORE_DISK_SIZE", v);
        dango_config_set(ncfg, "STORE_DISK_HIGH_WATERMARK", "1.0");
    }
    memset(&p, 0, sizeof(p));
    p.field_mask   = DANGO_STORE_PARAM_MASTER | DANGO_STORE_PARAM_SEGMENT_SIZE;
    p.master_addr  = dango_store_master_addr(m);
    p.segment_size = mem_bytes;
    rc             = dango_store_client_create(&p, ncfg, &node);
    if (rc != 0) {
        dango_store_master_destroy(m);
        return rc;
    }
    dango_config_set(ncfg, "STORE_DISK_PATH", "");
    p.segment_size = 0;
    rc             = dango_store_client_create(&p, ncfg, &app);
    if (rc != 0) {
        dango_store_client_destroy(node);
        dango_store_master_destroy(m);
        return rc;
    }

    data = malloc(BATCH * a->payload);
    for (size_t i = 0; i < BATCH; i++) {
        keys[i] = keybuf[i];
        bufs[i] = data + i * a->payload;
        lens[i] = a->payload;
    }

    t0 = bench_now_s();
    for (size_t r = 0; r < nreq; r++) {
        dango_conductor_trace_req_t q;
        size_t                      pfx = 0;

        dango_conductor_trace_get(t, r, &q);
        /* Leading blocks that exist (batches of BATCH). */
        for (size_t b0 = 0; b0 < q.n_blocks; b0 += BATCH) {
            size_t n = (q.n_blocks - b0 < BATCH) ? q.n_blocks - b0 : BATCH;
            size_t k = 0;

            for (size_t i = 0; i < n; i++) {
                snprintf(keybuf[i], KEY_MAX, "t/%" PRIu64, q.hash_ids[b0 + i]);
            }
            dango_store_batch_exist(app, n, (const char *const *)keys, st);
            while ((k < n) && (st[k] == 1)) {
                k++;
            }
            if (k > 0) {
                dango_store_batch_get(app, k, (const char *const *)keys, bufs,
                                      lens, 0, gres);
                for (size_t i = 0; i < k; i++) {
                    uint64_t id;

                    if (gres[i] != (int64_t)a->payload) {
                        res->get_failures++;
                        k = i; /* the prefix ends here */
                        break;
                    }
                    memcpy(&id, bufs[i], 8);
                    if (id != q.hash_ids[b0 + i]) {
                        res->wrong++;
                    }
                }
            }
            pfx += k;
            if (k < n) {
                break;
            }
        }

        /* Put the missing blocks (existing ones answer EOBJ_EXISTS). */
        for (size_t b0 = pfx; b0 < q.n_blocks; b0 += BATCH) {
            size_t n = (q.n_blocks - b0 < BATCH) ? q.n_blocks - b0 : BATCH;
            double deadline;
            int    retry;

            for (size_t i = 0; i < n; i++) {
                snprintf(keybuf[i], KEY_MAX, "t/%" PRIu64, q.hash_ids[b0 + i]);
                fill(bufs[i], a->payload, q.hash_ids[b0 + i]);
            }
            deadline = bench_now_s() + 5;
            do {
                retry = 0;
                dango_store_batch_put(app, n, (const char *const *)keys,
                                      (const void *const *)bufs, lens, 0, NULL,
                                      st);
                for (size_t i = 0; i < n; i++) {
                    retry |= st[i] == DANGO_ENOSPC;
                }
                if (retry && (bench_now_s() < deadline)) {
                    sleep_ms(1); /* offloads are making room */
                }
            } while (retry && (bench_now_s() < deadline));
            for (size_t i = 0; i < n; i++) {
                res->puts += st[i] == 0;
                res->put_failures +=
                    (st[i] != 0) && (st[i] != DANGO_EOBJ_EXISTS);
            }
        }

        res->blocks += q.n_blocks;
        res->hits += pfx;
        if ((r + 1) % 2000 == 0) {
            fprintf(stderr, "  %zu/%zu requests, hit %.4f\n", r + 1, nreq,
                    (double)res->hits / (double)res->blocks);
        }
    }
    res->seconds = bench_now_s() - t0;
    dango_store_pool_stat(app, &res->info);

    free(data);
    dango_store_client_destroy(app);
    dango_store_client_destroy(node);
    dango_store_master_destroy(m);
    dango_config_release(mcfg);
    dango_config_release(ncfg);
    return 0;
}

static void print_pool(const char *pool, const args_t *a, uint64_t mem_blocks,
                       uint64_t disk_blocks, const result_t *r)
{
    printf("{\"bench\":\"store_trace_replay\",\"pool\":\"%s\",\"payload\":%zu,"
           "\"mem_blocks\":%" PRIu64 ",\"disk_blocks\":%" PRIu64
           ",\"blocks\":%" PRIu64 ",\"hits\":%" PRIu64 ",\"hit_rate\":%.4f,"
           "\"puts\":%" PRIu64 ",\"put_failures\":%" PRIu64
           ",\"get_failures\":%" PRIu64 ",\"wrong\":%" PRIu64
           ",\"seconds\":%.2f,\"offloads\":%" PRIu64 ",\"disk_hits\":%" PRIu64
           ",\"promotions\":%" PRIu64 ",\"evicted\":%" PRIu64 "}\n",
           pool, a->payload, mem_blocks, disk_blocks, r->blocks, r->hits,
           r->blocks ? (double)r->hits / (double)r->blocks : 0, r->puts,
           r->put_failures, r->get_failures, r->wrong, r->seconds,
           r->info.disk_offloads, r->info.disk_loads, r->info.disk_promotions,
           r->info.evicted_keys);
    fflush(stdout);
}

static void parse(int argc, char **argv, args_t *a)
{
    memset(a, 0, sizeof(*a));
    a->trace     = BENCH_TRACE;
    a->payload   = 64u << 10;
    a->mem_frac  = 0.10;
    a->disk_frac = -1;
    a->pools     = "both";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--dir") == 0) {
            a->dir = argv[i + 1];
        } else if (strcmp(argv[i], "--trace") == 0) {
            a->trace = argv[i + 1];
        } else if (strcmp(argv[i], "--requests") == 0) {
            a->requests = strtoull(argv[i + 1], NULL, 0);
        } else if (strcmp(argv[i], "--payload") == 0) {
            a->payload = bench_parse_size(argv[i + 1]);
        } else if (strcmp(argv[i], "--mem-frac") == 0) {
            a->mem_frac = strtod(argv[i + 1], NULL);
        } else if (strcmp(argv[i], "--disk-frac") == 0) {
            a->disk_frac = strtod(argv[i + 1], NULL);
        } else if (strcmp(argv[i], "--pools") == 0) {
            a->pools = argv[i + 1];
        } else {
            break;
        }
    }
    if (a->disk_frac < 0) {
        a->disk_frac = 1.0 - a->mem_frac;
    }
    if ((a->dir == NULL) || (a->payload < 8) || !(a->mem_frac > 0) ||
        (a->mem_frac > 1) || (a->disk_frac < 0) || (a->disk_frac > 10)) {
        fprintf(stderr, "usage: store_trace_replay --dir DIR [--trace FILE] "
                        "[--requests N] [--payload 64k] [--mem-frac 0.1] "
                        "[--disk-frac 0.9] [--pools both|tiered|memory]\n");
        exit(2);
    }
}

int main(int argc, char **argv)
{
    args_t                   a;
    dango_conductor_trace_t *t;
    lru_t                    seen;
    size_t                   nreq, sz = 1, distinct = 0;
    uint64_t mem_blocks, disk_blocks, rec, mem_bytes, disk_bytes;
    double   lru_comb, lru_mem;
    result_t tiered, mem;
    int      rc, do_t, do_m;

    parse(argc, argv, &a);
    rc = dango_conductor_trace_load(a.trace, NULL, NULL, &t);
    if (rc != 0) {
        fprintf(stderr, "store_trace_replay: %s: %s\n", a.trace,
                dango_strerror(rc));
        return 1;
    }
    nreq = dango_conductor_trace_count(t);
    if ((a.requests > 0) && (a.requests < nreq)) {
        nreq = a.requests;
    }

    /* Distinct blocks of the requests replayed. */
    for (size_t r = 0, total = 0; r < nreq; r++) {
        dango_conductor_trace_req_t q;

        dango_conductor_trace_get(t, r, &q);
        total += q.n_blocks;
        while (sz < 2 * total + 2) {
            sz <<= 1;
        }
    }
    memset(&seen, 0, sizeof(seen));
    seen.keys = calloc(sz, sizeof(*seen.keys));
    seen.mask = sz - 1;
    for (size_t r = 0; r < nreq; r++) {
        dango_conductor_trace_req_t q;

        dango_conductor_trace_get(t, r, &q);
        for (size_t b = 0; b < q.n_blocks; b++) {
            size_t i = lru_find(&seen, q.hash_ids[b]);

            if (seen.keys[i] == 0) {
                seen.keys[i] = q.hash_ids[b] + 1;
                distinct++;
            }
        }
    }
    free(seen.keys);

    mem_blocks  = (uint64_t)ceil(a.mem_frac * (double)distinct);
    disk_blocks = (uint64_t)ceil(a.disk_frac * (double)distinct);
    /* Record of the longest key, in the master's 64-byte granules. */
    rec        = (64 + 64 + a.payload + 63) / 64 * 64;
    mem_bytes  = mem_blocks * rec;
    mem_bytes  = (mem_bytes < (1u << 20)) ? (1u << 20) : mem_bytes;
    disk_bytes = disk_blocks * ((64 + 64 + a.payload + 4095) / 4096 * 4096);
    disk_bytes = (disk_bytes < (1u << 20)) ? (1u << 20) : disk_bytes;

    lru_comb = lru_replay(t, nreq, (uint32_t)(mem_blocks + disk_blocks));
    lru_mem  = lru_replay(t, nreq, (uint32_t)mem_blocks);
    printf(
        "{\"bench\":\"store_trace_replay\",\"pool\":\"lru_combined\","
        "\"requests\":%zu,\"distinct_blocks\":%zu,\"capacity_blocks\":%" PRIu64
        ",\"hit_rate\":%.4f}\n",
        nreq, distinct, mem_blocks + disk_blocks, lru_comb);
    printf("{\"bench\":\"store_trace_replay\",\"pool\":\"lru_memory\","
           "\"capacity_blocks\":%" PRIu64 ",\"hit_rate\":%.4f}\n",
           mem_blocks, lru_mem);
    fflush(stdout);

    do_t = strcmp(a.pools, "memory") != 0;
    do_m = strcmp(a.pools, "tiered") != 0;
    memset(&tiered, 0, sizeof(tiered));
    memset(&mem, 0, sizeof(mem));
    if (do_t) {
        rc = store_replay(&a, t, nreq, mem_bytes, disk_bytes, &tiered);
        if (rc != 0) {
            fprintf(stderr, "tiered pool: %s\n", dango_strerror(rc));
            return 1;
        }
        print_pool("memory+disk", &a, mem_blocks, disk_blocks, &tiered);
    }
    if (do_m) {
        rc = store_replay(&a, t, nreq, mem_bytes, 0, &mem);
        if (rc != 0) {
            fprintf(stderr, "memory pool: %s\n", dango_strerror(rc));
            return 1;
        }
        print_pool("memory", &a, mem_blocks, 0, &mem);
    }
    if (do_t) {
        double h =
            tiered.blocks ? (double)tiered.hits / (double)tiered.blocks : 0;

        printf("{\"bench\":\"store_trace_replay\",\"summary\":true,"
               "\"tiered_hit_rate\":%.4f,\"lru_combined_hit_rate\":%.4f,"
               "\"gap_pp\":%.2f,\"memory_hit_rate\":%.4f,"
               "\"lru_memory_hit_rate\":%.4f,\"wrong\":%" PRIu64 "}\n",
               h, lru_comb, 100.0 * (lru_comb - h),
               mem.blocks ? (double)mem.hits / (double)mem.blocks : 0, lru_mem,
               tiered.wrong + mem.wrong);
    }
    dango_conductor_trace_destroy(t);
    return (tiered.wrong + mem.wrong) ? 1 : 0;
}
