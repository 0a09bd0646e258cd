/*
 * RPC round-trip rate: an in-process server on its own loop thread on
 * 127.0.0.1 answers every call from its handler, and THREADS application
 * threads share CLIENTS clients (one connection each), calling back to back
 * for DURATION seconds. The figure to compare is the store target: metadata
 * operations at the rate Redis serves GET on the same machine.
 *
 *   bench_rpc [--threads 8] [--clients 1] [--duration 3] [--size 0]
 *             [--deferred] [--lanes N] [--no-local]
 * --size is the request and reply payload; --deferred answers from a
 * second thread instead of inside the handler (the worker-pool path);
 * --lanes is the client's dango_rpc_client_params_t::lanes (0: default,
 * -1: every call over the shared connection); --no-local keeps the client
 * off the server's local channel (dango_rpc_client_params_t::local).
 * Prints one JSON object: calls/s and p50/p99 latency in microseconds.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/loop.h"
#include "common/time.h"
#include "net/rpc.h"

#define BENCH_MAX_THREADS 256
#define BENCH_HIST_US     20000 /* 1 us buckets up to 20 ms, then overflow */

typedef struct bench_thread {
    dango_rpc_client_t *cli;
    size_t              size;
    uint64_t            calls;
    uint64_t            errors;
    uint32_t           *hist; /* BENCH_HIST_US + 1 buckets */
    pthread_t           tid;
} bench_thread_t;

static int bench_stop;         /* atomic: callers stop */
static int bench_replier_stop; /* under bench_lock: every call answered */

/* Deferred mode: a hand-off queue to one replying thread. */
static pthread_mutex_t    bench_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t     bench_cond = PTHREAD_COND_INITIALIZER;
static dango_rpc_call_t **bench_queue;
static unsigned           bench_head, bench_tail, bench_qsize;
static int                bench_deferred;
static size_t             bench_size;
static char              *bench_reply;

static void bench_handler(void *arg, dango_rpc_call_t *call, uint32_t method,
                          const void *req, size_t len)
{
    if (!bench_deferred) {
        dango_rpc_reply(call, 0, bench_reply, bench_size);
        return;
    }

    pthread_mutex_lock(&bench_lock);
    bench_queue[bench_tail++ % bench_qsize] = call;
    pthread_cond_signal(&bench_cond);
    pthread_mutex_unlock(&bench_lock);
}

static void *bench_replier(void *arg)
{
    pthread_mutex_lock(&bench_lock);
    for (;;) {
        dango_rpc_call_t *call;

        while ((bench_head == bench_tail) && !bench_replier_stop) {
            pthread_cond_wait(&bench_cond, &bench_lock);
        }

        if (bench_head == bench_tail) {
            break;
        }

        call = bench_queue[bench_head++ % bench_qsize];
        pthread_mutex_unlock(&bench_lock);
        dango_rpc_reply(call, 0, bench_reply, bench_size);
        pthread_mutex_lock(&bench_lock);
    }

    pthread_mutex_unlock(&bench_lock);
    return NULL;
}

static void *bench_caller(void *arg)
{
    bench_thread_t *t   = arg;
    char           *req = calloc(1, t->size ? t->size : 1);

    while (!__atomic_load_n(&bench_stop, __ATOMIC_RELAXED)) {
        uint64_t start = dango_time_ns(), us;
        void    *rep   = NULL;
        size_t   rlen  = 0;
        int      rc;

        rc = dango_rpc_call(t->cli, 1, req, t->size, &rep, &rlen,
                            5 * DANGO_NSEC_PER_SEC);
        us = (dango_time_ns() - start) / DANGO_NSEC_PER_USEC;
        dango_free(rep);
        if (rc != 0) {
            t->errors++;
            continue;
        }

        t->calls++;
        t->hist[us < BENCH_HIST_US ? us : BENCH_HIST_US]++;
    }

    free(req);
    return NULL;
}

static double bench_percentile(const uint64_t *hist, uint64_t total, double q)
{
    uint64_t want = (uint64_t)(q * (double)total), seen = 0;

    for (unsigned i = 0; i <= BENCH_HIST_US; i++) {
        seen += hist[i];
        if (seen > want) {
            return (double)i + 0.5;
        }
    }

    return BENCH_HIST_US;
}

static void bench_usage(void)
{
    fprintf(stderr,
            "usage: bench_rpc [--threads 1..%d] [--clients N] "
            "[--duration S] [--size BYTES] [--deferred] [--lanes N] "
            "[--no-local]\n",
            BENCH_MAX_THREADS);
    exit(2);
}

int main(int argc, char **argv)
{
    unsigned                  threads = 8, clients = 1;
    double                    duration = 3.0;
    dango_rpc_client_params_t cp       = {0};
    dango_rpc_server_params_t sp       = {0};
    dango_rpc_server_t       *srv;
    dango_rpc_client_t      **cli;
    dango_loop_t             *loop;
    bench_thread_t           *t;
    pthread_t                 replier;
    uint64_t                 *hist, calls = 0, errors = 0, start, elapsed;
    int                       rc;

    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "--threads") == 0) && (i + 1 < argc)) {
            threads = (unsigned)atoi(argv[++i]);
        } else if ((strcmp(argv[i], "--clients") == 0) && (i + 1 < argc)) {
            clients = (unsigned)atoi(argv[++i]);
        } else if ((strcmp(argv[i], "--duration") == 0) && (i + 1 < argc)) {
            duration = atof(argv[++i]);
        } else if ((strcmp(argv[i], "--size") == 0) && (i + 1 < argc)) {
            bench_size = (size_t)atol(argv[++i]);
        } else if ((strcmp(argv[i], "--lanes") == 0) && (i + 1 < argc)) {
            cp.lanes = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--no-local") == 0) {
            cp.local = -1;
        } else if (strcmp(argv[i], "--deferred") == 0) {
            bench_deferred = 1;
        } else {
            bench_usage();
        }
    }

    if ((threads == 0) || (threads > BENCH_MAX_THREADS) || (clients == 0) ||
        (clients > threads) || (duration <= 0) ||
        (bench_size > DANGO_FRAME_RPC_MAX)) {
        bench_usage();
    }

    bench_reply = calloc(1, bench_size ? bench_size : 1);
    bench_qsize = 4 * threads + 16;
    bench_queue = calloc(bench_qsize, sizeof(*bench_queue));
    t           = calloc(threads, sizeof(*t));
    cli         = calloc(clients, sizeof(*cli));
    hist        = calloc(BENCH_HIST_US + 1, sizeof(*hist));
    if ((bench_reply == NULL) || (bench_queue == NULL) || (t == NULL) ||
        (cli == NULL) || (hist == NULL)) {
        fprintf(stderr, "bench_rpc: out of memory\n");
        return 1;
    }

    if ((dango_loop_create("rpc-bench-srv", &loop) != 0) ||
        (dango_loop_start(loop) != 0)) {
        fprintf(stderr, "bench_rpc: cannot start the server loop\n");
        return 1;
    }

    sp.loop    = loop;
    sp.listen  = "127.0.0.1:0";
    sp.handler = bench_handler;
    rc         = dango_rpc_server_create(&sp, &srv);
    if (rc != 0) {
        fprintf(stderr, "bench_rpc: server: %s\n", dango_strerror(rc));
        return 1;
    }

    if (bench_deferred) {
        pthread_create(&replier, NULL, bench_replier, NULL);
    }

    for (unsigned c = 0; c < clients; c++) {
        rc = dango_rpc_client_create(dango_rpc_server_addr(srv), NULL, &cp,
                                     &cli[c]);
        if ((rc == 0) &&
            ((rc = dango_rpc_call(cli[c], 1, NULL, 0, NULL, NULL, 0)) != 0)) {
            fprintf(stderr, "bench_rpc: warm-up call: %s\n",
                    dango_strerror(rc));
            return 1;
        }
    }

    start = dango_time_ns();
    for (unsigned i = 0; i < threads; i++) {
        t[i].cli  = cli[i % clients];
        t[i].size = bench_size;
        t[i].hist = calloc(BENCH_HIST_US + 1, sizeof(*t[i].hist));
        if ((t[i].hist == NULL) ||
            (pthread_create(&t[i].tid, NULL, bench_caller, &t[i]) != 0)) {
            fprintf(stderr, "bench_rpc: cannot start thread %u\n", i);
            return 1;
        }
    }

    {
        struct timespec ts = {
            .tv_sec  = (time_t)duration,
            .tv_nsec = (long)((duration - (double)(time_t)duration) * 1e9)};

        while (nanosleep(&ts, &ts) != 0) {
        }
    }

    __atomic_store_n(&bench_stop, 1, __ATOMIC_RELAXED);
    for (unsigned i = 0; i < threads; i++) {
        pthread_join(t[i].tid, NULL);
    }

    elapsed = dango_time_ns() - start;
    if (bench_deferred) {
        pthread_mutex_lock(&bench_lock);
        bench_replier_stop = 1; /* the callers are done: nothing is owed */
        pthread_cond_broadcast(&bench_cond);
        pthread_mutex_unlock(&bench_lock);
        pthread_join(replier, NULL);
    }

    for (unsigned i = 0; i < threads; i++) {
        calls += t[i].calls;
        errors += t[i].errors;
        for (unsigned b = 0; b <= BENCH_HIST_US; b++) {
            hist[b] += t[i].hist[b];
        }

        free(t[i].hist);
    }

    printf("{\"bench\":\"rpc\",\"threads\":%u,\"clients\":%u,\"lanes\":%d,"
           "\"local\":%d,"
           "\"size\":%zu,\"deferred\":%s,\"duration_s\":%.2f,\"calls\":%llu,"
           "\"errors\":%llu,\"calls_per_s\":%.0f,\"p50_us\":%.1f,"
           "\"p99_us\":%.1f}\n",
           threads, clients, cp.lanes, cp.local >= 0, bench_size,
           bench_deferred ? "true" : "false", (double)elapsed / 1e9,
           (unsigned long long)calls, (unsigned long long)errors,
           (double)calls * 1e9 / (double)elapsed,
           bench_percentile(hist, calls, 0.50),
           bench_percentile(hist, calls, 0.99));

    for (unsigned c = 0; c < clients; c++) {
        dango_rpc_client_destroy(cli[c]);
    }

    dango_rpc_server_destroy(srv);
    dango_loop_destroy(loop);
    free(hist);
    free(cli);
    free(t);
    free(bench_queue);
    free(bench_reply);
    return (errors == 0) ? 0 : 1;
}
