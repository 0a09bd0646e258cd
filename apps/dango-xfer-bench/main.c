/*
 * dango-xfer-bench: transfer engine benchmark.
 *
 *   dango-xfer-bench                      # both roles, a bandwidth table
 *   dango-xfer-bench --mode target ...    # serve a buffer, print "ready NAME"
 *   dango-xfer-bench --mode initiator --target NAME ...
 *
 * In "both" mode the target is a second process (this program re-executed
 * with --mode target), so every figure crosses a process boundary as it
 * would in production. Each result is one JSON object on stdout; the table
 * mode also prints a human-readable table on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <dango/dango.h>

typedef struct bench_opts {
    const char *mode;
    const char *metadata;
    const char *listen;
    const char *segment;
    const char *target;
    const char *op;
    const char *transport;
    size_t      block;
    size_t      batch;
    unsigned    threads;
    unsigned    workers;
    double      duration;
    size_t      buffer;
    int         check;
    int         table;
} bench_opts_t;

typedef struct bench_thread {
    dango_xfer_engine_t *eng;
    const bench_opts_t  *o;
    dango_segment_id_t   seg;
    char                *local;
    uint64_t             remote;
    unsigned             tid;
    int                  op;
    double               deadline;
    uint64_t             bytes;
    uint64_t             ops;
    double              *lat;
    size_t               nlat;
    size_t               caplat;
    int                  rc;
} bench_thread_t;

static volatile sig_atomic_t bench_stop;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_signal(int sig)
{
    (void)sig;
    bench_stop = 1;
}

static int parse_size_arg(const char *s, size_t *out)
{
    char  *end;
    double v = strtod(s, &end);
    size_t m = 1;

    if ((end == s) || (v < 0)) {
        return -1;
    }

    switch (*end) {
    case 'k':
    case 'K':
        m = 1ul << 10;
        end++;
        break;
    case 'm':
    case 'M':
        m = 1ul << 20;
        end++;
        break;
    case 'g':
    case 'G':
        m = 1ul << 30;
        end++;
        break;
    default:
        break;
    }

    if ((*end == 'i') || (*end == 'I')) {
        end++;
    }

    if ((*end == 'b') || (*end == 'B')) {
        end++;
    }

    if (*end != '\0') {
        return -1;
    }

    *out = (size_t)(v * (double)m);
    return 0;
}

static int engine_create(const bench_opts_t *o, dango_xfer_engine_t **eng_p)
{
    dango_xfer_engine_params_t p = {0};

    p.field_mask = DANGO_XFER_ENGINE_PARAM_METADATA |
                   DANGO_XFER_ENGINE_PARAM_LISTEN |
                   DANGO_XFER_ENGINE_PARAM_NUM_WORKERS;
    p.metadata    = o->metadata;
    p.listen_addr = o->listen;
    p.num_workers = o->workers;
    if (o->segment != NULL) {
        p.field_mask |= DANGO_XFER_ENGINE_PARAM_SEGMENT_NAME;
        p.segment_name = o->segment;
    }

    if (strcmp(o->transport, "auto") != 0) {
        p.field_mask |= DANGO_XFER_ENGINE_PARAM_TRANSPORTS;
        p.transports = strcmp(o->transport, "shm") == 0 ? "shm,tcp" : "tcp";
    }

    return dango_xfer_engine_create(&p, NULL, eng_p);
}

/*
 * Benchmark memory. With shm in play it must come from
 * dango_xfer_mem_alloc() (memfd, mappable by peers); for tcp alone it is
 * anonymous memory on transparent huge pages, as an application's own
 * buffers would be (shmem huge pages are off by default).
 */
static int bench_alloc(dango_xfer_engine_t *eng, const bench_opts_t *o,
                       size_t len, unsigned flags, void **p_p)
{
    const size_t huge = 2u << 20;
    void        *p;
    int          rc;

    if (strcmp(o->transport, "tcp") != 0) {
        return dango_xfer_mem_alloc(eng, len, "*", flags, p_p);
    }

    len = (len + huge - 1) & ~(huge - 1);
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
             0);
    if (p == MAP_FAILED) {
        return DANGO_ENOMEM;
    }

    madvise(p, len, MADV_HUGEPAGE);
    memset(p, 0, len); /* fault everything in now, not on the data path */
    rc = dango_xfer_mem_register(eng, p, len, "*", flags);
    if (rc != 0) {
        munmap(p, len);
        return rc;
    }

    *p_p = p;
    return 0;
}

static void bench_free(dango_xfer_engine_t *eng, const bench_opts_t *o, void *p,
                       size_t len)
{
    const size_t huge = 2u << 20;

    if (strcmp(o->transport, "tcp") != 0) {
        dango_xfer_mem_free(eng, p);
        return;
    }

    dango_xfer_mem_unregister(eng, p);
    munmap(p, (len + huge - 1) & ~(huge - 1));
}

/* ---------- target ---------- */

static int run_target(const bench_opts_t *o)
{
    dango_xfer_engine_t *eng;
    void                *buf;
    int                  rc;

    rc = engine_create(o, &eng);
    if (rc != 0) {
        fprintf(stderr, "dango-xfer-bench: engine: %s\n", dango_strerror(rc));
        return 1;
    }

    rc = bench_alloc(eng, o, o->buffer, DANGO_XFER_MEM_REMOTE, &buf);
    if (rc != 0) {
        fprintf(stderr, "dango-xfer-bench: cannot allocate %zu bytes: %s\n",
                o->buffer, dango_strerror(rc));
        dango_xfer_engine_destroy(eng);
        return 1;
    }

    printf("ready %s\n", dango_xfer_engine_segment_name(eng));
    fflush(stdout);
    /* Serve until told to stop (signal) or until stdin closes. */
    while (!bench_stop) {
        char    c;
        ssize_t n = read(STDIN_FILENO, &c, 1);

        if ((n == 0) || ((n < 0) && (errno != EINTR))) {
            break;
        }
    }

    bench_free(eng, o, buf, o->buffer);
    dango_xfer_engine_destroy(eng);
    return 0;
}

/* ---------- initiator ---------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static void *bench_thread_main(void *arg)
{
    bench_thread_t     *t = arg;
    const bench_opts_t *o = t->o;
    dango_xfer_batch_t *batch;
    dango_xfer_req_t   *reqs;
    int                 rc;

    reqs = calloc(o->batch, sizeof(*reqs));
    rc   = dango_xfer_batch_create(t->eng, o->batch, &batch);
    if ((reqs == NULL) || (rc != 0)) {
        t->rc = rc ? rc : DANGO_ENOMEM;
        free(reqs);
        return NULL;
    }

    for (size_t i = 0; i < o->batch; i++) {
        size_t off = o->block * (i * o->threads + t->tid);

        reqs[i].op          = t->op;
        reqs[i].local_addr  = t->local + off;
        reqs[i].segment     = t->seg;
        reqs[i].remote_addr = t->remote + off;
        reqs[i].length      = o->block;
    }

    while ((now_s() < t->deadline) && !bench_stop) {
        double start = now_s();

        rc = dango_xfer_batch_submit(batch, reqs, o->batch);
        if (rc == 0) {
            rc = dango_xfer_batch_wait(batch, 30000);
        }

        if (rc != 0) {
            t->rc = rc;
            break;
        }

        if (t->nlat == t->caplat) {
            size_t  cap = t->caplat ? t->caplat * 2 : 4096;
            double *nl  = realloc(t->lat, cap * sizeof(*nl));

            if (nl == NULL) {
                t->rc = DANGO_ENOMEM;
                break;
            }

            t->lat    = nl;
            t->caplat = cap;
        }

        t->lat[t->nlat++] = (now_s() - start) * 1e6;
        t->bytes += o->block * o->batch;
        t->ops += o->batch;
        dango_xfer_batch_reset(batch);
    }

    dango_xfer_batch_destroy(batch);
    free(reqs);
    return NULL;
}

/* Fills the local buffer with a pattern, writes it, reads it back, compares. */
static int verify_roundtrip(dango_xfer_engine_t *eng, dango_segment_id_t seg,
                            char *local, uint64_t remote, size_t len)
{
    dango_xfer_batch_t *batch;
    dango_xfer_req_t    req = {DANGO_XFER_OP_WRITE, local, seg, remote, len};
    int                 rc;

    for (size_t i = 0; i < len; i++) {
        local[i] = (char)(i * 131 + 7);
    }

    rc = dango_xfer_batch_create(eng, 1, &batch);
    if (rc != 0) {
        return rc;
    }

    rc = dango_xfer_batch_submit(batch, &req, 1);
    rc = rc ? rc : dango_xfer_batch_wait(batch, 30000);
    dango_xfer_batch_reset(batch);
    memset(local + len, 0, len);
    req.op         = DANGO_XFER_OP_READ;
    req.local_addr = local + len;
    if (rc == 0) {
        rc = dango_xfer_batch_submit(batch, &req, 1);
        rc = rc ? rc : dango_xfer_batch_wait(batch, 30000);
    }

    dango_xfer_batch_destroy(batch);
    if ((rc == 0) && (memcmp(local, local + len, len) != 0)) {
        rc = DANGO_ECORRUPT;
    }

    return rc;
}

static int run_one(dango_xfer_engine_t *eng, dango_segment_id_t seg,
                   char *local, uint64_t remote, const bench_opts_t *o, int op,
                   const char *transport, FILE *table)
{
    bench_thread_t *ts = calloc(o->threads, sizeof(*ts));
    pthread_t      *th = calloc(o->threads, sizeof(*th));
    double          start, elapsed, *all = NULL;
    uint64_t        bytes = 0, ops = 0;
    size_t          nlat = 0, k = 0;
    int             rc = 0;

    if ((ts == NULL) || (th == NULL)) {
        free(ts);
        free(th);
        return DANGO_ENOMEM;
    }

    start = now_s();
    for (unsigned i = 0; i < o->threads; i++) {
        ts[i] = (bench_thread_t){.eng      = eng,
                                 .o        = o,
                                 .seg      = seg,
                                 .local    = local,
                                 .remote   = remote,
                                 .tid      = i,
                                 .op       = op,
                                 .deadline = start + o->duration};
        pthread_create(&th[i], NULL, bench_thread_main, &ts[i]);
    }

    for (unsigned i = 0; i < o->threads; i++) {
        pthread_join(th[i], NULL);
        bytes += ts[i].bytes;
        ops += ts[i].ops;
        nlat += ts[i].nlat;
        if ((rc == 0) && (ts[i].rc != 0)) {
            rc = ts[i].rc;
        }
    }

    elapsed = now_s() - start;
    all     = malloc((nlat ? nlat : 1) * sizeof(*all));
    for (unsigned i = 0; i < o->threads; i++) {
        if (all != NULL) {
            memcpy(all + k, ts[i].lat, ts[i].nlat * sizeof(*all));
        }

        k += ts[i].nlat;
        free(ts[i].lat);
    }

    if ((rc == 0) && (all != NULL) && (nlat > 0)) {
        double gbps = (double)bytes / elapsed / 1e9;

        qsort(all, nlat, sizeof(*all), cmp_double);
        printf("{\"bench\":\"xfer\",\"transport\":\"%s\",\"op\":\"%s\","
               "\"block_size\":%zu,\"batch\":%zu,\"threads\":%u,"
               "\"duration_s\":%.3f,\"bytes\":%llu,\"gbps\":%.3f,"
               "\"ops_per_s\":%.1f,\"lat_p50_us\":%.1f,\"lat_p99_us\":%.1f}\n",
               transport, op == DANGO_XFER_OP_WRITE ? "write" : "read",
               o->block, o->batch, o->threads, elapsed,
               (unsigned long long)bytes, gbps, (double)ops / elapsed,
               all[nlat / 2], all[(size_t)((double)nlat * 0.99)]);
        fflush(stdout);
        if (table != NULL) {
            fprintf(table, "%-5s %-5s %9zu %6zu %8.2f %12.0f %10.1f %10.1f\n",
                    transport, op == DANGO_XFER_OP_WRITE ? "write" : "read",
                    o->block, o->batch, gbps, (double)ops / elapsed,
                    all[nlat / 2], all[(size_t)((double)nlat * 0.99)]);
        }
    } else if (rc != 0) {
        fprintf(stderr, "dango-xfer-bench: %s failed: %s (%s)\n",
                op == DANGO_XFER_OP_WRITE ? "write" : "read",
                dango_strerror(rc), dango_err_name(rc));
    }

    free(all);
    free(ts);
    free(th);
    return rc;
}

static int run_initiator(const bench_opts_t *o, const char *target,
                         int table_mode)
{
    static const size_t       blocks[] = {64u << 10, 1u << 20, 4u << 20};
    dango_xfer_engine_t      *eng;
    dango_xfer_segment_info_t info;
    dango_segment_id_t        seg;
    uint64_t                  raddr, rlen;
    size_t                    need = o->block * o->batch * o->threads;
    void                     *local;
    int                       rc;

    if (table_mode) {
        need = (4u << 20) * o->batch * o->threads;
    }

    rc = engine_create(o, &eng);
    if (rc != 0) {
        fprintf(stderr, "dango-xfer-bench: engine: %s\n", dango_strerror(rc));
        return 1;
    }

    rc = dango_xfer_segment_open(eng, target, &seg);
    if (rc == 0) {
        rc = dango_xfer_segment_buffer(eng, seg, 0, &raddr, &rlen);
    }

    if (rc != 0) {
        fprintf(stderr, "dango-xfer-bench: segment %s: %s\n", target,
                dango_strerror(rc));
        dango_xfer_engine_destroy(eng);
        return 1;
    }

    dango_xfer_segment_query(eng, seg, &info);
    if ((strcmp(o->transport, "auto") != 0) &&
        (strcmp(info.transport, o->transport) != 0)) {
        fprintf(stderr,
                "dango-xfer-bench: transport %s requested but %s "
                "chosen\n",
                o->transport, info.transport);
    }

    if (need > rlen) {
        fprintf(stderr,
                "dango-xfer-bench: block x batch x threads = %zu "
                "exceeds the target buffer (%llu)\n",
                need, (unsigned long long)rlen);
        dango_xfer_engine_destroy(eng);
        return 1;
    }

    if (need < 2 * o->block) {
        need = 2 * o->block;
    }

    rc = bench_alloc(eng, o, need, 0, &local);
    if (rc != 0) {
        fprintf(stderr, "dango-xfer-bench: local buffer: %s\n",
                dango_strerror(rc));
        dango_xfer_engine_destroy(eng);
        return 1;
    }

    if (o->check) {
        rc = verify_roundtrip(eng, seg, local, raddr,
                              DANGO_MIN(o->block, need / 2));
        fprintf(stderr, "dango-xfer-bench: data check %s\n",
                rc == 0 ? "passed" : dango_strerror(rc));
        if (rc != 0) {
            goto out;
        }
    }

    if (table_mode) {
        FILE        *tbl = stderr;
        bench_opts_t oo  = *o;

        fprintf(tbl, "%-5s %-5s %9s %6s %8s %12s %10s %10s\n", "tp", "op",
                "block", "batch", "GB/s", "ops/s", "p50 us", "p99 us");
        for (size_t b = 0; (b < DANGO_ARRAY_SIZE(blocks)) && (rc == 0); b++) {
            oo.block = blocks[b];
            rc       = run_one(eng, seg, local, raddr, &oo, DANGO_XFER_OP_WRITE,
                               info.transport, tbl);
            if (rc == 0) {
                rc = run_one(eng, seg, local, raddr, &oo, DANGO_XFER_OP_READ,
                             info.transport, tbl);
            }
        }
    } else {
        if (strcmp(o->op, "read") != 0) {
            rc = run_one(eng, seg, local, raddr, o, DANGO_XFER_OP_WRITE,
                         info.transport, NULL);
        }

        if ((rc == 0) && (strcmp(o->op, "write") != 0)) {
            rc = run_one(eng, seg, local, raddr, o, DANGO_XFER_OP_READ,
                         info.transport, NULL);
        }
    }

out:
    bench_free(eng, o, local, need);
    dango_xfer_engine_destroy(eng);
    return rc == 0 ? 0 : 1;
}

/* ---------- both roles ---------- */

static int run_both(const bench_opts_t *o, char **argv, int table_mode)
{
    int   to_child[2], from_child[2];
    pid_t pid;
    char  line[512], size[32], workers[16];
    FILE *in;
    int   rc, status;

    if ((pipe(to_child) != 0) || (pipe(from_child) != 0)) {
        perror("pipe");
        return 1;
    }

    snprintf(size, sizeof(size), "%zu", o->buffer);
    snprintf(workers, sizeof(workers), "%u", o->workers);
    pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }

    if (pid == 0) {
        dup2(to_child[0], STDIN_FILENO);
        dup2(from_child[1], STDOUT_FILENO);
        close(to_child[1]);
        close(from_child[0]);
        execl("/proc/self/exe", argv[0], "--mode", "target", "--metadata",
              o->metadata, "--listen", o->listen, "--buffer-size", size,
              "--workers", workers, "--transport", o->transport, (char *)NULL);
        perror("exec");
        _exit(127);
    }

    close(to_child[0]);
    close(from_child[1]);
    in = fdopen(from_child[0], "r");
    if ((in == NULL) || (fgets(line, sizeof(line), in) == NULL) ||
        (strncmp(line, "ready ", 6) != 0)) {
        fprintf(stderr, "dango-xfer-bench: target did not start\n");
        kill(pid, SIGTERM);
        waitpid(pid, &status, 0);
        return 1;
    }

    line[strcspn(line, "\n")] = '\0';
    rc                        = run_initiator(o, line + 6, table_mode);
    close(to_child[1]); /* the target exits when its stdin closes */
    waitpid(pid, &status, 0);
    fclose(in);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: dango-xfer-bench [options]\n"
        "  --mode both|target|initiator  (default both: a table of results)\n"
        "  --target NAME        segment to open (initiator)\n"
        "  --metadata STR       P2PHANDSHAKE (default) or "
        "http://host:port/metadata\n"
        "  --listen HOST:PORT   listen address (default 127.0.0.1:0)\n"
        "  --segment NAME       own segment name (metadata mode)\n"
        "  --op write|read|both (default both)\n"
        "  --transport auto|tcp|shm (default auto)\n"
        "  --block-size SIZE    (default 4m)    --batch N (default 32)\n"
        "  --threads N          (default 1)     --workers N (default 2)\n"
        "  --duration SECONDS   (default 3)     --buffer-size SIZE (default "
        "1g)\n"
        "  --check              verify a write/read round trip first\n"
        "  --table              run the 64k/1m/4m table (default in both mode\n"
        "                       without --block-size)\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"mode", required_argument, NULL, 'm'},
        {"target", required_argument, NULL, 't'},
        {"metadata", required_argument, NULL, 'M'},
        {"listen", required_argument, NULL, 'l'},
        {"segment", required_argument, NULL, 's'},
        {"op", required_argument, NULL, 'o'},
        {"transport", required_argument, NULL, 'T'},
        {"block-size", required_argument, NULL, 'b'},
        {"batch", required_argument, NULL, 'B'},
        {"threads", required_argument, NULL, 'n'},
        {"workers", required_argument, NULL, 'w'},
        {"duration", required_argument, NULL, 'd'},
        {"buffer-size", required_argument, NULL, 'S'},
        {"check", no_argument, NULL, 'c'},
        {"table", no_argument, NULL, 'x'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    bench_opts_t o = {"both",
                      "P2PHANDSHAKE",
                      "127.0.0.1:0",
                      NULL,
                      NULL,
                      "both",
                      "auto",
                      4u << 20,
                      32,
                      1,
                      2,
                      3.0,
                      1ul << 30,
                      0,
                      0};
    int          c, block_set = 0;

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            o.mode = optarg;
            break;
        case 't':
            o.target = optarg;
            break;
        case 'M':
            o.metadata = optarg;
            break;
        case 'l':
            o.listen = optarg;
            break;
        case 's':
            o.segment = optarg;
            break;
        case 'o':
            o.op = optarg;
            break;
        case 'T':
            o.transport = optarg;
            break;
        case 'b':
            if ((parse_size_arg(optarg, &o.block) != 0) || (o.block == 0)) {
                fprintf(stderr, "bad --block-size %s\n", optarg);
                return 2;
            }
            block_set = 1;
            break;
        case 'B':
            o.batch = strtoul(optarg, NULL, 0);
            break;
        case 'n':
            o.threads = (unsigned)strtoul(optarg, NULL, 0);
            break;
        case 'w':
            o.workers = (unsigned)strtoul(optarg, NULL, 0);
            break;
        case 'd':
            o.duration = strtod(optarg, NULL);
            break;
        case 'S':
            if (parse_size_arg(optarg, &o.buffer) != 0) {
                fprintf(stderr, "bad --buffer-size %s\n", optarg);
                return 2;
            }
            break;
        case 'c':
            o.check = 1;
            break;
        case 'x':
            o.table = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }

    if ((o.batch == 0) || (o.threads == 0) || (o.duration <= 0) ||
        (strcmp(o.transport, "auto") && strcmp(o.transport, "tcp") &&
         strcmp(o.transport, "shm")) ||
        (strcmp(o.op, "read") && strcmp(o.op, "write") &&
         strcmp(o.op, "both"))) {
        usage(stderr);
        return 2;
    }

    {
        /* No SA_RESTART: a signal must interrupt the target's read(). */
        struct sigaction sa = {0};

        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
    }
    if (strcmp(o.mode, "target") == 0) {
        return run_target(&o);
    }

    if (strcmp(o.mode, "initiator") == 0) {
        if (o.target == NULL) {
            fprintf(stderr, "--target is required in initiator mode\n");
            return 2;
        }

        return run_initiator(&o, o.target, o.table);
    }

    if (strcmp(o.mode, "both") == 0) {
        return run_both(&o, argv, o.table || !block_set);
    }

    usage(stderr);
    return 2;
}
