/*
 * The disk tier of a store node, end to end: sequential offload of objects
 * evicted from a small memory segment to the node's disk, then read-back
 * of the disk-only objects through the node (disk -> node staging ->
 * reader). bench/store_disk_vs_fio.sh runs fio's sequential write and read
 * on the same file system in the same invocation.
 *
 * One process: an embedded master, a node (segment + disk tier) and a pure
 * client that puts and gets, each a store client of its own (same-host
 * transfers between them go through shared memory).
 *
 *   offload  puts COUNT objects of SIZE bytes into a pool of SEGMENT bytes
 *            (retrying while it is full); the figure is the bytes the
 *            master reports offloaded over the time from the first put to
 *            the last offload.
 *   read     batch gets (BATCH keys, THREADS threads) of every object that
 *            is on disk only; every value is checked (size, xxh3 by the
 *            library, first and last byte here).
 *
 * usage: bench_store_disk --dir DIR [--count 1024] [--size 1m]
 *        [--segment 512m] [--threads 4] [--batch 8]
 * Output: one JSON object per phase on stdout.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dango/dango.h>
#include <dango/store.h>
#include <dango/store_master.h>

#include "bench_util.h"

typedef struct args {
    const char *dir;
    size_t      count, size, segment, threads, batch;
} args_t;

typedef struct reader {
    dango_store_client_t *c;
    char                **keys;
    size_t                nkeys;
    size_t               *next; /* shared cursor */
    size_t                batch, size;
    uint8_t              *buf;
    uint64_t              bytes;
    int                   errors;
} reader_t;

/* Samples the offload counter (see main). */
typedef struct monitor {
    dango_store_client_t *c;
    int                   puts_done;
    uint64_t              first, last;
    double                t_first, t_last;
} monitor_t;

static void *monitor_main(void *arg)
{
    monitor_t              *m = arg;
    dango_store_pool_info_t info;
    struct timespec         ts = {0, 1000000};

    for (;;) {
        double now;

        if (dango_store_pool_stat(m->c, &info) != 0) {
            break;
        }
        now = bench_now_s();
        if ((m->t_first == 0) && (info.disk_offloads > 0)) {
            m->first   = info.disk_offloads;
            m->last    = info.disk_offloads;
            m->t_first = now;
            m->t_last  = now;
        } else if (info.disk_offloads != m->last) {
            m->last   = info.disk_offloads;
            m->t_last = now;
        } else if (__atomic_load_n(&m->puts_done, __ATOMIC_ACQUIRE) &&
                   (m->t_first != 0) && (now - m->t_last > 0.5)) {
            break;
        }
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void sleep_us(unsigned us)
{
    struct timespec ts = {0, (long)us * 1000};

    nanosleep(&ts, NULL);
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_store_disk: %s: %s\n", what, dango_strerror(rc));
    exit(1);
}

static void *reader_main(void *arg)
{
    reader_t *r    = arg;
    void    **bufs = calloc(r->batch, sizeof(*bufs));
    size_t   *lens = calloc(r->batch, sizeof(*lens));
    int64_t  *res  = calloc(r->batch, sizeof(*res));

    for (size_t i = 0; i < r->batch; i++) {
        bufs[i] = r->buf + i * r->size;
        lens[i] = r->size;
    }

    for (;;) {
        size_t first = __atomic_fetch_add(r->next, r->batch, __ATOMIC_RELAXED);
        size_t n;

        if (first >= r->nkeys) {
            break;
        }
        n = (r->nkeys - first < r->batch) ? r->nkeys - first : r->batch;
        dango_store_batch_get(r->c, n, (const char *const *)&r->keys[first],
                              bufs, lens, 1, res);
        for (size_t i = 0; i < n; i++) {
            if (res[i] != (int64_t)r->size) {
                if (r->errors++ < 5) {
                    fprintf(stderr, "get %s: %s\n", r->keys[first + i],
                            dango_strerror((int)res[i]));
                }
                continue;
            }
            r->bytes += r->size;
        }
    }

    free(bufs);
    free(lens);
    free(res);
    return NULL;
}

static void parse(int argc, char **argv, args_t *a)
{
    memset(a, 0, sizeof(*a));
    a->count   = 1024;
    a->size    = 1u << 20;
    a->segment = 512u << 20;
    a->threads = 4;
    a->batch   = 8;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--dir") == 0) {
            a->dir = argv[i + 1];
        } else if (strcmp(argv[i], "--count") == 0) {
            a->count = strtoull(argv[i + 1], NULL, 0);
        } else if (strcmp(argv[i], "--size") == 0) {
            a->size = bench_parse_size(argv[i + 1]);
        } else if (strcmp(argv[i], "--segment") == 0) {
            a->segment = bench_parse_size(argv[i + 1]);
        } else if (strcmp(argv[i], "--threads") == 0) {
            a->threads = strtoull(argv[i + 1], NULL, 0);
        } else if (strcmp(argv[i], "--batch") == 0) {
            a->batch = strtoull(argv[i + 1], NULL, 0);
        } else {
            break;
        }
    }
    if ((a->dir == NULL) || (a->count == 0) || (a->size == 0) ||
        (a->segment < 4 * a->size) || (a->threads == 0) || (a->threads > 64) ||
        (a->batch == 0) || (a->batch > 256)) {
        fprintf(stderr,
                "usage: bench_store_disk --dir DIR [--count 1024] "
                "[--size 1m] [--segment 512m] [--threads 4] [--batch 8]\n");
        exit(2);
    }
}

int main(int argc, char **argv)
{
    args_t                  a;
    dango_config_t         *mcfg, *ncfg;
    dango_store_master_t   *m;
    dango_store_client_t   *node, *app;
    dango_store_params_t    p;
    dango_store_pool_info_t info;
    char                    v[64], **keys;
    uint8_t                *val;
    double                  t0, t_last, t_end;
    uint64_t                last_off = 0, disk_size;
    size_t                  ndisk = 0, next = 0;
    reader_t               *rd;
    pthread_t              *th;
    uint64_t                bytes  = 0;
    int                     errors = 0, rc;
    monitor_t               mon;
    pthread_t               mon_th;

    parse(argc, argv, &a);
    memset(&mon, 0, sizeof(mon));
    disk_size = (uint64_t)a.count * (a.size + 8192) + (64u << 20);

    /* Master. */
    dango_config_read(NULL, &mcfg);
    dango_config_set(mcfg, "MASTER_LISTEN", "127.0.0.1:0");
    dango_config_set(mcfg, "MASTER_ADMIN_LISTEN", "");
    rc = dango_store_master_create(mcfg, &m);
    if (rc != 0) {
        die("master", rc);
    }

    /* Node: segment and disk tier. */
    dango_config_read(NULL, &ncfg);
    dango_config_set(ncfg, "STORE_DISK_PATH", a.dir);
    snprintf(v, sizeof(v), "%" PRIu64, disk_size);
    dango_config_set(ncfg, "STORE_DISK_SIZE", v);
    snprintf(v, sizeof(v), "%zu",
             a.threads * a.batch * (a.size + 8192) * 2 + (16u << 20));
    dango_config_set(ncfg, "STORE_DISK_STAGING", v);
    dango_config_set(ncfg, "STORE_DISK_BUFFER", "64MiB");
    dango_config_set(ncfg, "XFER_LISTEN", "127.0.0.1:0");
    memset(&p, 0, sizeof(p));
    p.field_mask   = DANGO_STORE_PARAM_MASTER | DANGO_STORE_PARAM_SEGMENT_SIZE;
    p.master_addr  = dango_store_master_addr(m);
    p.segment_size = a.segment;
    rc             = dango_store_client_create(&p, ncfg, &node);
    if (rc != 0) {
        die("node", rc);
    }

    /* Application client. */
    dango_config_set(ncfg, "STORE_DISK_PATH", "");
    p.segment_size = 0;
    p.field_mask |= DANGO_STORE_PARAM_BUFFER_SIZE;
    p.local_buffer_size = 16u << 20;
    rc                  = dango_store_client_create(&p, ncfg, &app);
    if (rc != 0) {
        die("client", rc);
    }

    val  = aligned_alloc(4096, (a.size + 4095) / 4096 * 4096);
    keys = calloc(a.count, sizeof(*keys));
    for (size_t i = 0; i < a.size; i++) {
        val[i] = (uint8_t)(i * 7 + 1);
    }
    dango_store_register_buffer(app, val, a.size);

    /* Offload: puts into a full pool, offloads running behind them. A
     * monitor samples the master's offload counter every millisecond: the
     * figure is the offloads after the first one seen over the time from
     * then to the last one. */
    mon.c = app;
    pthread_create(&mon_th, NULL, monitor_main, &mon);
    for (size_t i = 0; i < a.count; i++) {
        double deadline = bench_now_s() + 30;

        keys[i] = malloc(32);
        snprintf(keys[i], 32, "bench/disk/%zu", i);
        val[0] = (uint8_t)i;
        do {
            rc = dango_store_put_from(app, keys[i], val, a.size, NULL);
            if (rc == DANGO_ENOSPC) {
                sleep_us(200);
            }
        } while ((rc == DANGO_ENOSPC) && (bench_now_s() < deadline));
        if (rc != 0) {
            die("put", rc);
        }
    }

    __atomic_store_n(&mon.puts_done, 1, __ATOMIC_RELEASE);
    pthread_join(mon_th, NULL);
    t0       = mon.t_first;
    t_last   = mon.t_last;
    last_off = mon.last - mon.first;
    printf("{\"bench\":\"store_disk\",\"op\":\"offload\",\"size\":%zu,"
           "\"count\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"seconds\":%.4f,"
           "\"gbps\":%.3f,\"offloads_total\":%" PRIu64 "}\n",
           a.size, last_off, last_off * a.size, t_last - t0,
           (double)(last_off * a.size) / (t_last - t0) / 1e9, mon.last);
    fflush(stdout);

    /* Read-back of everything that is on disk only (first read of each:
     * staged by the node, not promoted). */
    for (size_t i = 0; i < a.count; i++) {
        dango_store_object_info_t oi;

        if ((dango_store_stat(app, keys[i], &oi) == 0) && oi.on_disk) {
            char *k       = keys[ndisk];
            keys[ndisk++] = keys[i];
            keys[i]       = k;
        }
    }

    rd = calloc(a.threads, sizeof(*rd));
    th = calloc(a.threads, sizeof(*th));
    for (size_t t = 0; t < a.threads; t++) {
        rd[t] = (reader_t){app,
                           keys,
                           ndisk,
                           &next,
                           a.batch,
                           a.size,
                           aligned_alloc(4096, a.batch * a.size),
                           0,
                           0};
        dango_store_register_buffer(app, rd[t].buf, a.batch * a.size);
    }
    t0 = bench_now_s();
    for (size_t t = 0; t < a.threads; t++) {
        pthread_create(&th[t], NULL, reader_main, &rd[t]);
    }
    for (size_t t = 0; t < a.threads; t++) {
        pthread_join(th[t], NULL);
        bytes += rd[t].bytes;
        errors += rd[t].errors;
    }
    t_end = bench_now_s();
    dango_store_pool_stat(app, &info);
    printf("{\"bench\":\"store_disk\",\"op\":\"read\",\"size\":%zu,"
           "\"count\":%zu,\"bytes\":%" PRIu64 ",\"seconds\":%.4f,"
           "\"gbps\":%.3f,\"errors\":%d,\"threads\":%zu,\"batch\":%zu,"
           "\"disk_loads\":%" PRIu64 ",\"promotions\":%" PRIu64 "}\n",
           a.size, ndisk, bytes, t_end - t0, (double)bytes / (t_end - t0) / 1e9,
           errors, a.threads, a.batch, info.disk_loads, info.disk_promotions);

    for (size_t t = 0; t < a.threads; t++) {
        dango_store_unregister_buffer(app, rd[t].buf);
        free(rd[t].buf);
    }
    dango_store_unregister_buffer(app, val);
    dango_store_client_destroy(app);
    dango_store_client_destroy(node);
    dango_store_master_destroy(m);
    dango_config_release(mcfg);
    dango_config_release(ncfg);
    for (size_t i = 0; i < a.count; i++) {
        free(keys[i]);
    }
    free(keys);
    free(val);
    free(rd);
    free(th);
    return errors ? 1 : 0;
}
