/*
 * xfer_target: the peer process of the transfer engine integration tests.
 *
 * Target mode (default): creates an engine, allocates a remote-accessible
 * buffer with dango_xfer_mem_alloc() (memfd: shm can map it), registers a
 * second remote-accessible buffer from malloc (not mappable: always tcp)
 * and a private buffer (registered, not remote), then prints
 *
 *   READY <segment> <listen> <buf> <len> <rbuf> <rlen> <priv> <plen>
 *
 * (addresses in hex) and serves until stdin closes. Commands on stdin, one
 * per line, each answered with one line:
 *
 *   hash B OFF LEN        -> HASH <xxh3 hex> of buffer B (buf|rbuf|priv)
 *   fill B OFF LEN BYTE   -> OK
 *   errors                -> ERRORS <error-level log records so far>
 *
 * Notifications are polled all the time; each one is reported at once as
 *
 *   NOTIFY <from> <xxh3 hex> <message>
 *
 * where, for a message "check OFF LEN", the hash is taken over
 * buf[OFF, OFF+LEN) the moment the notification is seen (the test checks
 * that the batch's data had landed), and is 0 otherwise.
 *
 * Initiator mode (--initiate NAME): opens segment NAME, writes random data
 * of sizes from 1 byte to 16 MiB at unaligned offsets of its first buffer,
 * reads it back, compares checksums, prints "PASS <n>" or "FAIL <why>" and
 * exits 0 or 1. Used where the test cannot run the initiator itself (in
 * another network namespace).
 *
 * Logs are counted and dropped unless DANGO_TEST_LOG=1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dango/dango.h>
#include "common/hash.h"

static int target_log_errors;

static void log_count(const dango_log_record_t *rec, void *arg)
{
    (void)arg;
    if (rec->level <= DANGO_LOG_ERROR) {
        __atomic_add_fetch(&target_log_errors, 1, __ATOMIC_RELAXED);
    }
}

typedef struct opts {
    const char *metadata;
    const char *listen;
    const char *segment;
    const char *transports;
    const char *initiate;
    size_t      size;
    unsigned    workers;
} opts_t;

static int engine_create(const opts_t *o, dango_xfer_engine_t **eng_p)
{
    dango_xfer_engine_params_t p = {0};

    p.field_mask = DANGO_XFER_ENGINE_PARAM_METADATA |
                   DANGO_XFER_ENGINE_PARAM_LISTEN |
                   DANGO_XFER_ENGINE_PARAM_NUM_WORKERS |
                   DANGO_XFER_ENGINE_PARAM_TRANSPORTS;
    p.metadata    = o->metadata;
    p.listen_addr = o->listen;
    p.num_workers = o->workers;
    p.transports  = o->transports;
    if (o->segment != NULL) {
        p.field_mask |= DANGO_XFER_ENGINE_PARAM_SEGMENT_NAME;
        p.segment_name = o->segment;
    }

    return dango_xfer_engine_create(&p, NULL, eng_p);
}

/* ---------- target ---------- */

typedef struct buf_ref {
    char  *p;
    size_t len;
} buf_ref_t;

static void report_notifications(dango_xfer_engine_t *eng, char *buf,
                                 size_t len)
{
    static dango_xfer_notify_t n[8];
    size_t                     count = 0;

    if (dango_xfer_notify_recv(eng, n, 8, &count) != 0) {
        return;
    }

    for (size_t i = 0; i < count; i++) {
        unsigned long long off, l;
        uint64_t           h = 0;

        if ((sscanf(n[i].msg, "check %llu %llu", &off, &l) == 2) &&
            (off <= len) && (l <= len - off)) {
            h = dango_hash64(buf + off, l);
        }

        printf("NOTIFY %s %016" PRIx64 " %s\n", n[i].from, h, n[i].msg);
    }

    if (count > 0) {
        fflush(stdout);
    }
}

static void handle_command(char *line, buf_ref_t *bufs)
{
    char               which[16];
    unsigned long long off, len;
    unsigned           byte;
    buf_ref_t         *b = NULL;

    if (strcmp(line, "errors") == 0) {
        printf("ERRORS %d\n",
               __atomic_load_n(&target_log_errors, __ATOMIC_RELAXED));
        return;
    }

    if (sscanf(line, "%*s %15s %llu %llu", which, &off, &len) != 3) {
        printf("ERR malformed\n");
        return;
    }

    if (strcmp(which, "buf") == 0) {
        b = &bufs[0];
    } else if (strcmp(which, "rbuf") == 0) {
        b = &bufs[1];
    } else if (strcmp(which, "priv") == 0) {
        b = &bufs[2];
    }

    if ((b == NULL) || (off > b->len) || (len > b->len - off)) {
        printf("ERR range\n");
        return;
    }

    if (strncmp(line, "hash ", 5) == 0) {
        printf("HASH %016" PRIx64 "\n", dango_hash64(b->p + off, len));
    } else if ((strncmp(line, "fill ", 5) == 0) &&
               (sscanf(line, "%*s %*s %*u %*u %u", &byte) == 1)) {
        memset(b->p + off, (int)byte, len);
        printf("OK\n");
    } else {
        printf("ERR unknown\n");
    }
}

static int run_target(const opts_t *o)
{
    dango_xfer_engine_t *eng;
    buf_ref_t            bufs[3];
    char                 listen[64] = "-";
    char                 line[256];
    size_t               used = 0;
    void                *p;
    int                  rc;

    rc = engine_create(o, &eng);
    if (rc != 0) {
        printf("FAIL engine %s\n", dango_err_name(rc));
        return 1;
    }

    rc = dango_xfer_mem_alloc(eng, o->size, "*", DANGO_XFER_MEM_REMOTE, &p);
    if (rc != 0) {
        printf("FAIL mem_alloc %s\n", dango_err_name(rc));
        dango_xfer_engine_destroy(eng);
        return 1;
    }

    bufs[0].p   = p;
    bufs[0].len = o->size;
    bufs[1].len = bufs[2].len = 1 << 20;
    bufs[1].p                 = aligned_alloc(4096, bufs[1].len);
    bufs[2].p                 = aligned_alloc(4096, bufs[2].len);
    if ((bufs[1].p == NULL) || (bufs[2].p == NULL) ||
        (dango_xfer_mem_register(eng, bufs[1].p, bufs[1].len, "*",
                                 DANGO_XFER_MEM_REMOTE) != 0) ||
        (dango_xfer_mem_register(eng, bufs[2].p, bufs[2].len, "*", 0) != 0)) {
        printf("FAIL buffers\n");
        dango_xfer_engine_destroy(eng);
        return 1;
    }

    memset(bufs[1].p, 0, bufs[1].len);
    memset(bufs[2].p, 0x5c, bufs[2].len);
    dango_xfer_engine_listen_addr(eng, listen, sizeof(listen));
    printf("READY %s %s %" PRIxPTR " %zx %" PRIxPTR " %zx %" PRIxPTR " %zx\n",
           dango_xfer_engine_segment_name(eng), listen, (uintptr_t)bufs[0].p,
           bufs[0].len, (uintptr_t)bufs[1].p, bufs[1].len, (uintptr_t)bufs[2].p,
           bufs[2].len);
    fflush(stdout);

    for (;;) {
        struct pollfd pfd = {STDIN_FILENO, POLLIN, 0};
        ssize_t       n;
        char         *nl;

        report_notifications(eng, bufs[0].p, bufs[0].len);
        if (poll(&pfd, 1, 1) <= 0) {
            continue;
        }

        n = read(STDIN_FILENO, line + used, sizeof(line) - 1 - used);
        if ((n < 0) && (errno == EINTR)) {
            continue;
        }

        if (n <= 0) {
            break; /* the test closed our stdin: stop */
        }

        used += (size_t)n;
        line[used] = '\0';
        while ((nl = strchr(line, '\n')) != NULL) {
            *nl = '\0';
            report_notifications(eng, bufs[0].p, bufs[0].len);
            handle_command(line, bufs);
            fflush(stdout);
            used -= (size_t)(nl + 1 - line);
            memmove(line, nl + 1, used + 1);
        }

        if (used == sizeof(line) - 1) {
            used = 0; /* an overlong line: drop it */
        }
    }

    dango_xfer_mem_unregister(eng, bufs[1].p);
    dango_xfer_mem_unregister(eng, bufs[2].p);
    dango_xfer_mem_free(eng, bufs[0].p);
    dango_xfer_engine_destroy(eng);
    free(bufs[1].p);
    free(bufs[2].p);
    return 0;
}

/* ---------- initiator ---------- */

static int xfer_one(dango_xfer_engine_t *eng, dango_xfer_op_t op, void *local,
                    dango_segment_id_t seg, uint64_t remote, uint64_t len)
{
    dango_xfer_batch_t *batch;
    dango_xfer_req_t    r = {op, local, seg, remote, len};
    int                 rc;

    rc = dango_xfer_batch_create(eng, 1, &batch);
    if (rc != 0) {
        return rc;
    }

    rc = dango_xfer_batch_submit(batch, &r, 1);
    if (rc == 0) {
        rc = dango_xfer_batch_wait(batch, 30000);
    }

    if (rc == DANGO_ETIMEDOUT) {
        dango_xfer_batch_wait(batch, -1); /* bounded by the transports */
    }

    dango_xfer_batch_destroy(batch);
    return rc;
}

static int run_initiator(const opts_t *o)
{
    static const uint64_t sizes[] = {
        1, 7, 4095, 4096, 65537, (1 << 20) + 13, 16 << 20};
    dango_xfer_engine_t      *eng;
    dango_xfer_segment_info_t info;
    dango_segment_id_t        seg;
    uint64_t                  raddr, rlen;
    char                     *src, *dst;
    size_t                    max = (16 << 20) + 64;
    int                       rc;

    rc = engine_create(o, &eng);
    if (rc != 0) {
        printf("FAIL engine %s\n", dango_err_name(rc));
        return 1;
    }

    src = malloc(max);
    dst = malloc(max);
    rc  = ((src != NULL) && (dst != NULL)) ? 0 : DANGO_ENOMEM;
    if (rc == 0) {
        rc = dango_xfer_mem_register(eng, src, max, NULL, 0);
    }

    if (rc == 0) {
        rc = dango_xfer_mem_register(eng, dst, max, NULL, 0);
    }

    if (rc == 0) {
        rc = dango_xfer_segment_open(eng, o->initiate, &seg);
    }

    if (rc == 0) {
        rc = dango_xfer_segment_buffer(eng, seg, 0, &raddr, &rlen);
    }

    if (rc == 0) {
        rc = dango_xfer_segment_query(eng, seg, &info);
    }

    if (rc != 0) {
        printf("FAIL setup %s\n", dango_err_name(rc));
        dango_xfer_engine_destroy(eng);
        return 1;
    }

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint64_t off = 1 + (i * 8191) % 4093;

        if (off + sizes[i] > rlen) {
            printf("FAIL target buffer too small\n");
            rc = DANGO_ERANGE;
            break;
        }

        dango_random_bytes(src + 3, sizes[i]);
        memset(dst + 5, 0, sizes[i]);
        rc = xfer_one(eng, DANGO_XFER_OP_WRITE, src + 3, seg, raddr + off,
                      sizes[i]);
        if (rc == 0) {
            rc = xfer_one(eng, DANGO_XFER_OP_READ, dst + 5, seg, raddr + off,
                          sizes[i]);
        }

        if (rc != 0) {
            printf("FAIL size %llu: %s\n", (unsigned long long)sizes[i],
                   dango_err_name(rc));
            break;
        }

        if (dango_hash64(src + 3, sizes[i]) !=
            dango_hash64(dst + 5, sizes[i])) {
            printf("FAIL size %llu: data differs\n",
                   (unsigned long long)sizes[i]);
            rc = DANGO_ECORRUPT;
            break;
        }
    }

    if (rc == 0) {
        printf("PASS %zu %s\n", sizeof(sizes) / sizeof(sizes[0]),
               info.transport);
    }

    fflush(stdout);
    dango_xfer_engine_destroy(eng);
    free(src);
    free(dst);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        {"metadata", required_argument, NULL, 'm'},
        {"listen", required_argument, NULL, 'l'},
        {"segment", required_argument, NULL, 's'},
        {"transports", required_argument, NULL, 't'},
        {"size", required_argument, NULL, 'z'},
        {"workers", required_argument, NULL, 'w'},
        {"initiate", required_argument, NULL, 'i'},
        {NULL, 0, NULL, 0}};
    opts_t o = {
        DANGO_XFER_P2PHANDSHAKE, "127.0.0.1:0", NULL, "tcp", NULL, 64 << 20, 2};
    const char *v = getenv("DANGO_TEST_LOG");
    int         c;

    if ((v == NULL) || (v[0] != '1')) {
        dango_log_set_handler(log_count, NULL);
    }

    while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            o.metadata = optarg;
            break;
        case 'l':
            o.listen = optarg;
            break;
        case 's':
            o.segment = optarg;
            break;
        case 't':
            o.transports = optarg;
            break;
        case 'z':
            o.size = strtoull(optarg, NULL, 0);
            break;
        case 'w':
            o.workers = (unsigned)strtoul(optarg, NULL, 0);
            break;
        case 'i':
            o.initiate = optarg;
            break;
        default:
            fprintf(stderr, "xfer_target: bad option\n");
            return 2;
        }
    }

    return (o.initiate != NULL) ? run_initiator(&o) : run_target(&o);
}
