/*
 * Store offset allocator: cost of one alloc or free at 10 thousand and at
 * 1 million live objects, to show it does not grow with the object count
 * (src/store/store_alloc.c keeps both O(1)). Each case fills a segment with
 * objects of log-uniform size, then runs a steady mix: free a random live
 * object, allocate a new one (on ENOSPC, free one more and retry). Random
 * numbers are drawn before the clock starts. Ops are timed in batches of
 * 64; ns_per_op_p50/p99 are percentiles of the batch means.
 *
 * Cases: 10k live objects of 64 KiB..4 MiB on a 16 GiB segment; 100k and
 * 1M live objects of the same sizes on segments scaled to the same fill
 * (160 and 1600 GiB: no memory is touched, the allocator only hands out
 * offsets); and 1M live objects of 512 B..32 KiB on the 16 GiB segment.
 * Prints one JSON line; ratio_1m_vs_10k is the p50 of the 1M case of
 * 64 KiB..4 MiB objects over the 10k one. The operation count per call is
 * constant; what grows from 10k to 1M is the working set (about 100 MB of
 * nodes, hash and the benchmark's own table at 1M), i.e. cache misses.
 *
 *   bench_store_alloc [--ops N]    (N alloc+free pairs per case, default 2M)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dango/error.h>
#include "store/store_alloc.h"

#define KiB   ((uint64_t)1 << 10)
#define MiB   ((uint64_t)1 << 20)
#define GiB   ((uint64_t)1 << 30)
#define BATCH 64

typedef struct bench_case {
    const char *name;
    uint64_t    segment;
    uint64_t    min_obj;
    uint64_t    max_obj;
    size_t      live;
} bench_case_t;

typedef struct bench_result {
    double   ops_per_s;
    double   ns_p50;
    double   ns_p99;
    uint64_t retries;
    double   fill;
} bench_result_t;

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));

    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Log-uniform in [lo, hi]. */
static uint64_t rng_size(uint64_t *s, uint64_t lo, uint64_t hi)
{
    double u = (double)(rng_next(s) >> 11) / (double)(UINT64_C(1) << 53);
    double v = (double)lo * pow((double)hi / (double)lo, u);

    return (uint64_t)v;
}

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;

    return (a > b) - (a < b);
}

static int run_case(const bench_case_t *c, size_t pairs, bench_result_t *res)
{
    dango_store_alloc_t      *a;
    dango_store_alloc_stats_t st;
    uint64_t                 *live, *sizes, *picks, seed   = 12345, off;
    double                   *batch_ns, t0, t_start, total = 0;
    size_t                    n = 0, nbatches = 0, ops = 0, in_batch = 0;
    int                       rc;

    rc = dango__store_alloc_create(c->segment, 64, &a);
    if (rc != 0) {
        fprintf(stderr, "%s: create: %s\n", c->name, dango_strerror(rc));
        return rc;
    }

    live     = malloc(sizeof(*live) * (c->live + 1));
    sizes    = malloc(sizeof(*sizes) * pairs);
    picks    = malloc(sizeof(*picks) * pairs * 2);
    batch_ns = malloc(sizeof(*batch_ns) * (pairs * 4 / BATCH + 2));
    if ((live == NULL) || (sizes == NULL) || (picks == NULL) ||
        (batch_ns == NULL)) {
        fprintf(stderr, "%s: out of memory\n", c->name);
        return DANGO_ENOMEM;
    }

    for (size_t i = 0; i < c->live; i++) {
        rc = dango__store_alloc_alloc(
            a, rng_size(&seed, c->min_obj, c->max_obj), &live[n++], NULL);
        if (rc != 0) {
            fprintf(stderr, "%s: fill at %zu: %s\n", c->name, i,
                    dango_strerror(rc));
            return rc;
        }
    }

    dango__store_alloc_stats(a, &st);
    res->fill = (double)st.allocated_bytes / (double)st.capacity;
    for (size_t i = 0; i < pairs; i++) {
        sizes[i] = rng_size(&seed, c->min_obj, c->max_obj);
    }

    for (size_t i = 0; i < pairs * 2; i++) {
        picks[i] = rng_next(&seed);
    }

    res->retries = 0;
    t_start      = now_ns();
    t0           = t_start;
    for (size_t i = 0, p = 0; i < pairs; i++) {
        size_t j = (size_t)(picks[p++ % (pairs * 2)] % n);

        /* free one random object... */
        rc      = dango__store_alloc_free(a, live[j]);
        live[j] = live[--n];
        ops++;
        /* ...and allocate one, making room if the segment is too full. */
        while ((rc == 0) && ((rc = dango__store_alloc_alloc(
                                  a, sizes[i], &off, NULL)) == DANGO_ENOSPC)) {
            j       = (size_t)(picks[p++ % (pairs * 2)] % n);
            rc      = dango__store_alloc_free(a, live[j]);
            live[j] = live[--n];
            ops += 2;
            res->retries++;
        }

        if (rc != 0) {
            fprintf(stderr, "%s: op %zu: %s\n", c->name, i, dango_strerror(rc));
            return rc;
        }

        live[n++] = off;
        ops++;
        in_batch += 2;
        if (in_batch >= BATCH) {
            double t1 = now_ns();

            batch_ns[nbatches++] = (t1 - t0) / (double)in_batch;
            t0                   = t1;
            in_batch             = 0;
        }
    }

    total = now_ns() - t_start;
    qsort(batch_ns, nbatches, sizeof(*batch_ns), cmp_double);
    res->ops_per_s = (double)ops / (total / 1e9);
    res->ns_p50    = batch_ns[nbatches / 2];
    res->ns_p99    = batch_ns[nbatches * 99 / 100];
    if (dango__store_alloc_check(a) != 0) {
        fprintf(stderr, "%s: allocator inconsistent\n", c->name);
        return DANGO_ECORRUPT;
    }

    free(batch_ns);
    free(picks);
    free(sizes);
    free(live);
    dango__store_alloc_destroy(a);
    return 0;
}

int main(int argc, char **argv)
{
    static const bench_case_t cases[] = {
        {"live_10k", 16 * GiB, 64 * KiB, 4 * MiB, 10000},
        {"live_100k", 160 * GiB, 64 * KiB, 4 * MiB, 100000},
        {"live_1m", 1600 * GiB, 64 * KiB, 4 * MiB, 1000000},
        {"live_1m_small_16g", 16 * GiB, 512, 32 * KiB, 1000000},
    };
    bench_result_t res[DANGO_ARRAY_SIZE(cases)];
    size_t         pairs = 2000000;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--ops") == 0) {
            pairs = (size_t)strtoull(argv[i + 1], NULL, 0);
        }
    }

    if (pairs < BATCH) {
        pairs = BATCH;
    }

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(cases); i++) {
        if (run_case(&cases[i], pairs, &res[i]) != 0) {
            return 1;
        }
    }

    printf("{\"bench\":\"store_alloc\",\"pairs\":%zu", pairs);
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(cases); i++) {
        printf(",\"%s\":{\"segment_gib\":%llu,\"obj_min\":%llu,"
               "\"obj_max\":%llu,\"live\":%zu,\"fill\":%.2f,"
               "\"ops_per_s\":%.0f,\"ns_per_op_p50\":%.1f,"
               "\"ns_per_op_p99\":%.1f,\"enospc_retries\":%llu}",
               cases[i].name, (unsigned long long)(cases[i].segment / GiB),
               (unsigned long long)cases[i].min_obj,
               (unsigned long long)cases[i].max_obj, cases[i].live, res[i].fill,
               res[i].ops_per_s, res[i].ns_p50, res[i].ns_p99,
               (unsigned long long)res[i].retries);
    }

    printf(",\"ratio_1m_vs_10k\":%.2f}\n", res[2].ns_p50 / res[0].ns_p50);
    return 0;
}
