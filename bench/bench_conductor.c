/*
 * bench_conductor: how fast the conductor decides and replays.
 *
 *   bench_conductor [--trace FILE] [--prefill N] [--decode M] [--rounds R]
 *
 * Prints one JSON line per result:
 *   {"bench":"conductor_decide", ...}  latency of dango_conductor_decide()
 *       (p50, p99, max in microseconds) for N prefill and M decode
 *       instances (16 and 16 by default) over the trace's requests, each
 *       then committed in trace time so the index and the queues are those
 *       of a live cluster; "schedule" is decide + commit;
 *   {"bench":"conductor_replay_cache", ...}  cache-only replay throughput
 *       (requests/s), one global cache and 16 cache-aware local caches;
 *   {"bench":"conductor_replay_sim", ...}  timed simulation throughput
 *       (requests/s and events/s), 8P8D GLOBAL.
 * Without --trace it uses ../shared/data/traces/conversation_trace.jsonl
 * relative to the source tree.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dango/conductor.h>
#include <dango/error.h>

#include "bench_util.h"

#ifndef BENCH_TRACE
#define BENCH_TRACE "conversation_trace.jsonl"
#endif

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double pct(const double *v, size_t n, double q)
{
    size_t i = (size_t)ceil(q * (double)n);

    return v[(i == 0) ? 0 : i - 1];
}

static int bench_decide(const dango_conductor_trace_t *t, unsigned np,
                        unsigned nd, unsigned rounds)
{
    size_t                     n    = dango_conductor_trace_count(t);
    double                    *lat  = malloc(n * rounds * sizeof(double));
    double                    *slat = malloc(n * rounds * sizeof(double));
    dango_conductor_t         *c;
    dango_conductor_params_t   p;
    dango_conductor_decision_t dec;
    size_t                     k = 0;
    int                        id, rc;

    if ((lat == NULL) || (slat == NULL)) {
        fprintf(stderr, "bench_conductor: out of memory\n");
        return 1;
    }

    dango_conductor_params_init(&p);
    rc = dango_conductor_create(&p, &c);
    for (unsigned i = 0; (rc == 0) && (i < np + nd); i++) {
        char name[32];

        snprintf(name, sizeof(name), "%s%u", (i < np) ? "p" : "d", i);
        rc = dango_conductor_instance_add(c, name,
                                          (i < np) ? DANGO_CONDUCTOR_PREFILL
                                                   : DANGO_CONDUCTOR_DECODE,
                                          5859, 0, &id);
    }
    if (rc != 0) {
        fprintf(stderr, "bench_conductor: setup: %s\n", dango_strerror(rc));
        return 1;
    }

    for (unsigned r = 0; r < rounds; r++) {
        double base = (double)r * 4000.0; /* trace time, rounds apart */

        for (size_t i = 0; i < n; i++) {
            dango_conductor_trace_req_t tr;
            dango_conductor_request_t   q;
            double                      t0, t1, t2, at;

            dango_conductor_trace_get(t, i, &tr);
            q.keys          = tr.hash_ids;
            q.n_keys        = tr.n_blocks;
            q.input_tokens  = tr.input_length;
            q.output_tokens = tr.output_length;
            at              = base + tr.timestamp_ms / 1000.0;
            t0              = now_ns();
            rc              = dango_conductor_decide(c, &q, at, &dec);
            t1              = now_ns();
            if (rc != 0) {
                fprintf(stderr, "bench_conductor: decide: %s\n",
                        dango_strerror(rc));
                return 1;
            }
            if (dec.reject == DANGO_CONDUCTOR_ACCEPT) {
                dango_conductor_commit(c, &q, &dec, at);
            }
            t2       = now_ns();
            slat[k]  = (t2 - t0) / 1e3;
            lat[k++] = (t1 - t0) / 1e3;
        }
    }

    qsort(lat, k, sizeof(double), cmp_double);
    qsort(slat, k, sizeof(double), cmp_double);
    printf("{\"bench\":\"conductor_decide\",\"prefill\":%u,\"decode\":%u,"
           "\"decisions\":%zu,\"decide_p50_us\":%.3f,\"decide_p99_us\":%.3f,"
           "\"decide_max_us\":%.3f,\"schedule_p50_us\":%.3f,"
           "\"schedule_p99_us\":%.3f}\n",
           np, nd, k, pct(lat, k, 0.5), pct(lat, k, 0.99), lat[k - 1],
           pct(slat, k, 0.5), pct(slat, k, 0.99));
    free(lat);
    free(slat);
    dango_conductor_destroy(c);
    return 0;
}

static int bench_cache(const dango_conductor_trace_t *t, size_t cap, unsigned n,
                       int routing, unsigned rounds)
{
    dango_conductor_cache_params_t p = {cap, n, routing, 0, 512};
    dango_conductor_cache_result_t r;
    double                         t0 = now_ns(), dt;

    for (unsigned i = 0; i < rounds; i++) {
        int rc = dango_conductor_replay_cache(t, &p, &r);

        if (rc != 0) {
            fprintf(stderr, "bench_conductor: replay: %s\n",
                    dango_strerror(rc));
            return 1;
        }
    }
    dt = (now_ns() - t0) / 1e9 / rounds;
    printf("{\"bench\":\"conductor_replay_cache\",\"capacity_blocks\":%s,"
           "\"instances\":%u,\"routing\":\"%s\",\"requests\":%llu,"
           "\"seconds\":%.4f,\"requests_per_s\":%.0f,\"block_hit_rate\":%.4f}"
           "\n",
           (cap == DANGO_CONDUCTOR_CAPACITY_INF) ? "\"inf\"" : "10000", n,
           (routing == DANGO_CONDUCTOR_ROUTE_RR) ? "rr" : "aware",
           (unsigned long long)r.requests, dt, (double)r.requests / dt,
           (double)r.hit_blocks / (double)r.total_blocks);
    return 0;
}

static int bench_sim(const dango_conductor_trace_t *t)
{
    dango_conductor_sim_params_t p;
    dango_conductor_sim_result_t r;
    double                       t0 = now_ns(), dt;
    int                          rc;

    dango_conductor_sim_params_init(&p);
    rc = dango_conductor_sim_run(t, &p, &r);
    if (rc != 0) {
        fprintf(stderr, "bench_conductor: sim: %s\n", dango_strerror(rc));
        return 1;
    }
    dt = (now_ns() - t0) / 1e9;
    printf("{\"bench\":\"conductor_replay_sim\",\"prefill\":8,\"decode\":8,"
           "\"policy\":\"global\",\"requests\":%llu,\"events\":%llu,"
           "\"seconds\":%.4f,\"requests_per_s\":%.0f,\"events_per_s\":%.0f,"
           "\"ttft_mean_s\":%.4f}\n",
           (unsigned long long)r.requests, (unsigned long long)r.events, dt,
           (double)r.requests / dt, (double)r.events / dt, r.ttft_mean_s);
    return 0;
}

int main(int argc, char **argv)
{
    const char              *trace = BENCH_TRACE;
    unsigned                 np = 16, nd = 16, rounds = 3;
    dango_conductor_trace_t *t;
    int                      rc;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--trace")) {
            trace = argv[i + 1];
        } else if (!strcmp(argv[i], "--prefill")) {
            np = (unsigned)strtoul(argv[i + 1], NULL, 10);
        } else if (!strcmp(argv[i], "--decode")) {
            nd = (unsigned)strtoul(argv[i + 1], NULL, 10);
        } else if (!strcmp(argv[i], "--rounds")) {
            rounds = (unsigned)strtoul(argv[i + 1], NULL, 10);
        } else {
            fprintf(stderr, "usage: bench_conductor [--trace FILE] "
                            "[--prefill N] [--decode M] [--rounds R]\n");
            return 2;
        }
    }
    if ((np == 0) || (nd == 0) || (np + nd > DANGO_CONDUCTOR_MAX_INSTANCES) ||
        (rounds == 0) || (rounds > 100)) {
        fprintf(stderr, "bench_conductor: 1..256 instances in all, 1..100 "
                        "rounds\n");
        return 2;
    }

    rc = dango_conductor_trace_load(trace, NULL, NULL, &t);
    if (rc != 0) {
        fprintf(stderr, "bench_conductor: %s: %s\n", trace, dango_strerror(rc));
        return 1;
    }

    rc = bench_decide(t, np, nd, rounds) ||
         bench_cache(t, DANGO_CONDUCTOR_CAPACITY_INF, 1,
                     DANGO_CONDUCTOR_ROUTE_RR, rounds) ||
         bench_cache(t, 10000, 16, DANGO_CONDUCTOR_ROUTE_AWARE, rounds) ||
         bench_sim(t);
    dango_conductor_trace_destroy(t);
    return rc;
}
