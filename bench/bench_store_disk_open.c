/*
 * Opening a store node's disk tier after a restart: through its index
 * (first block of every record read, values not) against the full scan of
 * the data file (the index removed), on the same tier in the same
 * invocation. The tier's data file is read with O_DIRECT where the file
 * system allows it, so the scan's figure is the disk's, not the page
 * cache's.
 *
 *   write    COUNT records of SIZE value bytes into a tier of CAPACITY
 *            bytes in DIR (64 per call, as the node's disk thread does)
 *   index    open with the index written by the close before
 *   scan     open without an index (it is removed first)
 *
 * usage: bench_store_disk_open --dir DIR [--count 2000] [--size 64k]
 *        [--capacity 256m] [--repeat 3]
 * Output: one JSON object per open (the best of REPEAT) on stdout.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dango/error.h>
#include "common/hash.h"
#include "store/store_disk.h"
#include "store/store_proto.h"

#include "bench_util.h"

typedef struct args {
    const char *dir;
    size_t      count, size, capacity, repeat;
} args_t;

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_store_disk_open: %s: %s\n", what,
            dango_strerror(rc));
    exit(1);
}

static void parse(int argc, char **argv, args_t *a)
{
    *a = (args_t){NULL, 2000, 64u << 10, 256u << 20, 3};
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--dir") == 0) {
            a->dir = argv[i + 1];
        } else if (strcmp(argv[i], "--count") == 0) {
            a->count = strtoull(argv[i + 1], NULL, 0);
        } else if (strcmp(argv[i], "--size") == 0) {
            a->size = bench_parse_size(argv[i + 1]);
        } else if (strcmp(argv[i], "--capacity") == 0) {
            a->capacity = bench_parse_size(argv[i + 1]);
        } else if (strcmp(argv[i], "--repeat") == 0) {
            a->repeat = strtoull(argv[i + 1], NULL, 0);
        }
    }
    if ((a->dir == NULL) || (a->count == 0) || (a->size == 0) ||
        (a->capacity == 0) || (a->repeat == 0)) {
        fprintf(stderr, "usage: bench_store_disk_open --dir DIR "
                        "[--count 2000] [--size 64k] [--capacity 256m] "
                        "[--repeat 3]\n");
        exit(2);
    }
}

/* One committed record of @key with @vlen value bytes. */
static char *mkrec(const char *key, size_t vlen, uint64_t put_id,
                   uint64_t *len_p)
{
    size_t   klen = strlen(key);
    uint64_t len  = dango_store_rec_size(klen, vlen);
    char    *r    = malloc(len);
    char    *v    = r + dango_store_rec_value_off(klen);

    for (size_t i = 0; i < vlen; i++) {
        v[i] = (char)(i * 7 + put_id);
    }
    dango_store_rec_seal(r, key, (uint16_t)klen, vlen, put_id);
    *len_p = len;
    return r;
}

/* Opens the tier, returns the open's seconds and its stats. */
static double timed_open(const char *path, const sd_params_t *p, sd_stats_t *s)
{
    sd_disk_t *d;
    double     t0 = bench_now_s(), t;
    int        rc = dango__sd_open(path, p, &d);

    t = bench_now_s() - t0;
    if (rc != 0) {
        die("open", rc);
    }
    dango__sd_stats(d, s);
    dango__sd_close(d);
    return t;
}

static void report(const char *op, const args_t *a, double best,
                   const sd_stats_t *s)
{
    printf("{\"bench\":\"store_disk_open\",\"op\":\"%s\",\"records\":%" PRIu64
           ",\"value_size\":%zu,\"capacity\":%zu,\"used\":%" PRIu64
           ",\"index_bytes\":%" PRIu64 ",\"ms\":%.2f}\n",
           op, s->records, a->size, a->capacity, s->used, s->index_bytes,
           best * 1e3);
}

int main(int argc, char **argv)
{
    args_t      a;
    sd_params_t p;
    sd_disk_t  *d;
    sd_stats_t  si, ss;
    char        path[4096], ipath[4200];
    double      best_index = 1e9, best_scan = 1e9;
    int         rc;

    parse(argc, argv, &a);
    p = (sd_params_t){.capacity = a.capacity};
    snprintf(path, sizeof(path), "%s/bench-open.data", a.dir);
    snprintf(ipath, sizeof(ipath), "%s.index", path);
    unlink(path);
    unlink(ipath);

    rc = dango__sd_open(path, &p, &d);
    if (rc != 0) {
        die("open", rc);
    }
    for (size_t i = 0; i < a.count; i += 64) {
        size_t      n = (a.count - i < 64) ? a.count - i : 64;
        const void *recs[64];
        char       *r[64];
        uint64_t    lens[64], offs[64];
        int         st[64];

        for (size_t k = 0; k < n; k++) {
            char key[64];

            snprintf(key, sizeof(key), "bench/open/%zu", i + k);
            r[k]    = mkrec(key, a.size, i + k + 1, &lens[k]);
            recs[k] = r[k];
        }
        dango__sd_write(d, n, recs, lens, st, offs);
        for (size_t k = 0; k < n; k++) {
            if (st[k] != 0) {
                die("write", st[k]);
            }
            free(r[k]);
        }
    }
    dango__sd_close(d);

    for (size_t i = 0; i < a.repeat; i++) {
        double t = timed_open(path, &p, &si);

        best_index = (t < best_index) ? t : best_index;
        unlink(ipath);
        t         = timed_open(path, &p, &ss);
        best_scan = (t < best_scan) ? t : best_scan;
        if ((si.indexed != a.count) || (ss.scanned != a.count)) {
            fprintf(stderr,
                    "bench_store_disk_open: %" PRIu64 " indexed, %" PRIu64
                    " scanned, %zu written\n",
                    si.indexed, ss.scanned, a.count);
            return 1;
        }
    }
    report("index", &a, best_index, &si);
    report("scan", &a, best_scan, &ss);

    unlink(path);
    unlink(ipath);
    return 0;
}
