/*
 * dango replay cache | sim: the trace replayer from the shell.
 *
 *   dango replay cache --trace FILE --capacity-blocks C|inf
 *                      [--instances N] [--routing rr|aware] [--reverse]
 *   dango replay sim --trace FILE [--prefill N] [--decode M] [--policy P]
 *                    [--cache-blocks C] [--bandwidth GBps] [--ttft-slo S]
 *                    [--tbt-slo MS] [--speed X] [--threshold T] ...
 *
 * One run prints one JSON object on stdout. --sweep runs the series of a
 * paper figure (cache: capacity, local-global; sim: policy, local-global,
 * pd-ratio, bandwidth, threshold) and prints one JSON object with a table
 * ("columns", "rows") and every run's full result ("runs"); --format table
 * prints the table as aligned text instead, and --plot FILE.svg|png draws
 * it with gnuplot. Malformed trace lines are reported on stderr with their
 * line number and skipped. A progress bar goes to stderr when it is a
 * terminal (or with --progress).
 *
 * All the work is in the library (dango/conductor.h); this file parses
 * flags, builds the tables and talks to gnuplot.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <dango/dango.h>
#include <dango/conductor.h>

#include "app_common.h"
#include "cli.h"

#define PROG         "dango replay"
#define TABLE_COLS   12
#define TABLE_ROWS   64
#define LIST_MAX     32
#define PLOT_WAIT_MS 60000

extern char **environ;

typedef struct replay_args {
    int         sim; /* 0: cache, 1: sim */
    const char *trace, *sweep, *plot, *format;
    /* cache */
    size_t      capacity;
    int         have_capacity;
    unsigned    instances;
    int         routing, reverse;
    uint32_t    block_size;
    const char *capacities, *instances_list, *bandwidths, *thresholds;
    /* sim */
    dango_conductor_sim_params_t sp;
    unsigned                     nodes;
    int set_prefill, set_cache, set_ttft_thr, set_output;
    int progress; /* -1: when stderr is a terminal */
    int quiet;
} replay_args_t;

/* A sweep's result: a label column and numeric columns. */
typedef struct table {
    const char *sweep, *title, *xlabel, *ylabel;
    const char *cols[TABLE_COLS];
    size_t      ncols;
    char        x[TABLE_ROWS][32];
    double      v[TABLE_ROWS][TABLE_COLS];
    size_t      nrows;
    int         numeric_x, logx;
    size_t      plot_cols; /* columns drawn (0: all) */
    json_t     *runs;
} table_t;

/* ---------- output helpers ---------- */

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int progress_on(const replay_args_t *a)
{
    return (a->progress < 0) ? isatty(STDERR_FILENO) : a->progress;
}

typedef struct progress {
    int         on;
    const char *label;
    int         last; /* last percentage drawn */
} progress_t;

static void progress_draw(progress_t *pg, uint64_t done, uint64_t total)
{
    char bar[41];
    int  pct, fill;

    if (!pg->on || (total == 0)) {
        return;
    }

    pct = (int)(done * 100 / total);
    if (pct == pg->last) {
        return;
    }
    pg->last = pct;
    fill     = pct * 40 / 100;
    for (int i = 0; i < 40; i++) {
        bar[i] = (i < fill) ? '#' : '.';
    }
    bar[40] = '\0';
    fprintf(stderr, "\r[%s] %3d%% %-40.40s", bar, pct, pg->label);
    fflush(stderr);
}

static void progress_cb(void *arg, uint64_t done, uint64_t total)
{
    progress_draw(arg, done, total);
}

static void progress_end(progress_t *pg)
{
    if (pg->on && (pg->last >= 0)) {
        fprintf(stderr, "\n");
    }
    pg->last = -1;
}

static void json_out(json_t *j)
{
    json_dumpf(j, stdout, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    printf("\n");
    fflush(stdout);
}

static void trace_error(void *arg, size_t line, const char *msg)
{
    const replay_args_t *a = arg;

    if (!a->quiet) {
        fprintf(stderr, "dango: %s:%zu: %s (line skipped)\n", a->trace, line,
                msg);
    }
}

/* ---------- flags ---------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dango replay cache --trace FILE --capacity-blocks C|inf "
            "[--instances N]\n"
            "                          [--routing rr|aware] [--reverse] "
            "[--block-size B]\n"
            "       dango replay cache --trace FILE --sweep "
            "capacity|local-global [...]\n"
            "       dango replay sim --trace FILE [--prefill N] [--decode M] "
            "[--policy P]\n"
            "                        [--cache-blocks C] [--bandwidth GBps] "
            "[--ttft-slo S]\n"
            "                        [--tbt-slo MS] [--speed X] "
            "[--threshold T] [...]\n"
            "       dango replay sim --trace FILE --sweep "
            "policy|local-global|pd-ratio|\n"
            "                        bandwidth|threshold [...]\n"
            "dango replay cache|sim --help: every flag.\n");
}

static void help(int sim)
{
    usage(stdout);
    printf("\nCommon flags:\n"
           "  --trace FILE         JSONL trace (timestamp, input_length, "
           "output_length, hash_ids)\n"
           "  --sweep NAME         run a paper-style series (see below)\n"
           "  --format json|table  sweep output (default json)\n"
           "  --plot FILE.svg|png  draw the sweep with gnuplot\n"
           "  --progress, --no-progress   progress bar on stderr (default: "
           "when a terminal)\n"
           "  --quiet              do not list malformed lines (still "
           "counted)\n");
    if (!sim) {
        printf("\ncache (hit rates of LRU caches, spec conductor.md §B):\n"
               "  --capacity-blocks C|inf  total blocks (N local caches get "
               "floor(C/N) each)\n"
               "  --instances N        caches (1: one global cache; default "
               "1)\n"
               "  --routing rr|aware   request j to cache j mod N, or "
               "longest prefix (default aware)\n"
               "  --reverse            touch blocks last to first (REV "
               "variant)\n"
               "  --block-size B       tokens per trace block (default "
               "512)\n"
               "Sweeps: capacity (Fig. 9: --capacities LIST, default "
               "1000,5000,10000,50000,100000,inf;\n"
               "        --instances-list LIST, default 1,8,16; global, rr "
               "and aware),\n"
               "        local-global (Fig. 10: --instances N (10) caches of "
               "--capacity-blocks\n"
               "        per cache (5859) vs one global cache of N times "
               "that).\n");
        return;
    }
    printf("\nsim (discrete-event P/D cluster, spec conductor.md A.9):\n"
           "  --prefill N, --decode M   instances (default 8 and 8)\n"
           "  --policy random|load|local|global   prefill choice (default "
           "global)\n"
           "  --cache-blocks C|inf   prefix cache per prefill instance "
           "(default 5859 = 3M tokens)\n"
           "  --bandwidth GBps       KV transfer bandwidth (default 100)\n"
           "  --threshold T          kvcache_balancing_threshold (default "
           "1.0)\n"
           "  --ttft-slo S           reject above this predicted TTFT, s "
           "(default: never)\n"
           "  --tbt-slo MS           reject above this predicted TBT, ms "
           "(default: never)\n"
           "  --ttft-threshold S     TTFT of an effective request (default "
           "30; pd-ratio 10)\n"
           "  --speed X              replay X times faster (default 1)\n"
           "  --output-length L      replace every output length by L "
           "(local-global: 1)\n"
           "  --seed N               seed of the random policy\n"
           "Sweeps: policy (Fig. 5), local-global (Fig. 10: 10 prefill x "
           "5859 blocks, outputs 1),\n"
           "        pd-ratio (Fig. 15: --nodes T, default 16, P from 5/16 "
           "to 11/16 of T,\n"
           "        TTFT 10 s, TBT 100 ms), bandwidth (Fig. 13: "
           "--bandwidths LIST GB/s),\n"
           "        threshold (--thresholds LIST).\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char              *end;
    unsigned long long v;

    if ((s == NULL) || (*s == '\0') || (*s == '-')) {
        return -1;
    }
    errno = 0;
    v     = strtoull(s, &end, 10);
    if ((errno != 0) || (*end != '\0')) {
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_blocks(const char *s, size_t *out)
{
    uint64_t v;

    if ((s != NULL) && (!strcmp(s, "inf") || !strcmp(s, "infinite"))) {
        *out = DANGO_CONDUCTOR_CAPACITY_INF;
        return 0;
    }
    if ((parse_u64(s, &v) != 0) || (v >= (uint64_t)1 << 40)) {
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

static int parse_dbl(const char *s, double lo, double hi, double *out)
{
    char  *end;
    double v;

    if ((s == NULL) || (*s == '\0')) {
        return -1;
    }
    errno = 0;
    v     = strtod(s, &end);
    if ((errno != 0) || (*end != '\0') || !(v >= lo) || !(v <= hi)) {
        return -1;
    }
    *out = v;
    return 0;
}

static int bad_value(const char *flag, const char *v, const char *want)
{
    fprintf(stderr, "dango: %s: bad value '%s' (%s)\n", flag,
            (v != NULL) ? v : "", want);
    return 2;
}

/* Parses argv (argv[0] = "cache" or "sim"). -1: go on; else exit status. */
static int parse_args(int argc, char **argv, replay_args_t *a)
{
    memset(a, 0, sizeof(*a));
    a->sim        = !strcmp(argv[0], "sim");
    a->instances  = 1;
    a->routing    = DANGO_CONDUCTOR_ROUTE_AWARE;
    a->block_size = DANGO_CONDUCTOR_BLOCK_SIZE;
    a->format     = "json";
    a->progress   = -1;
    a->nodes      = 16;
    dango_conductor_sim_params_init(&a->sp);

    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = (i + 1 < argc) ? argv[i + 1] : NULL;
        uint64_t    u;
        double      d;

        if (!strcmp(f, "-h") || !strcmp(f, "--help")) {
            help(a->sim);
            return 0;
        }
        if (!strcmp(f, "--reverse")) {
            a->reverse = 1;
            continue;
        }
        if (!strcmp(f, "--progress") || !strcmp(f, "--no-progress")) {
            a->progress = !strcmp(f, "--progress");
            continue;
        }
        if (!strcmp(f, "--quiet")) {
            a->quiet = 1;
            continue;
        }
        if ((strncmp(f, "--", 2) != 0) || (v == NULL)) {
            if (strncmp(f, "--", 2) == 0) {
                fprintf(stderr, "dango: %s needs a value\n", f);
            } else {
                app_bad_arg("dango", f, "dango replay --help");
            }
            return 2;
        }
        i++;
        if (!strcmp(f, "--trace")) {
            a->trace = v;
        } else if (!strcmp(f, "--sweep")) {
            a->sweep = v;
        } else if (!strcmp(f, "--plot")) {
            a->plot = v;
        } else if (!strcmp(f, "--format")) {
            if (strcmp(v, "json") && strcmp(v, "table")) {
                return bad_value(f, v, "json or table");
            }
            a->format = v;
        } else if (!a->sim && !strcmp(f, "--capacity-blocks")) {
            if (parse_blocks(v, &a->capacity) != 0) {
                return bad_value(f, v, "a number of blocks or inf");
            }
            a->have_capacity = 1;
        } else if (!a->sim && !strcmp(f, "--instances")) {
            if ((parse_u64(v, &u) != 0) || (u == 0) ||
                (u > DANGO_CONDUCTOR_MAX_INSTANCES)) {
                return bad_value(f, v, "1..256");
            }
            a->instances = (unsigned)u;
        } else if (!a->sim && !strcmp(f, "--routing")) {
            if (!strcmp(v, "rr")) {
                a->routing = DANGO_CONDUCTOR_ROUTE_RR;
            } else if (!strcmp(v, "aware")) {
                a->routing = DANGO_CONDUCTOR_ROUTE_AWARE;
            } else {
                return bad_value(f, v, "rr or aware");
            }
        } else if (!a->sim && !strcmp(f, "--block-size")) {
            if ((parse_u64(v, &u) != 0) || (u == 0) || (u > (1u << 20))) {
                return bad_value(f, v, "1..1048576 tokens");
            }
            a->block_size = (uint32_t)u;
        } else if (!a->sim && !strcmp(f, "--capacities")) {
            a->capacities = v;
        } else if (!a->sim && !strcmp(f, "--instances-list")) {
            a->instances_list = v;
        } else if (a->sim && !strcmp(f, "--prefill")) {
            if ((parse_u64(v, &u) != 0) || (u == 0) || (u > 128)) {
                return bad_value(f, v, "1..128");
            }
            a->sp.prefill  = (unsigned)u;
            a->set_prefill = 1;
        } else if (a->sim && !strcmp(f, "--decode")) {
            if ((parse_u64(v, &u) != 0) || (u == 0) || (u > 128)) {
                return bad_value(f, v, "1..128");
            }
            a->sp.decode = (unsigned)u;
        } else if (a->sim && !strcmp(f, "--nodes")) {
            if ((parse_u64(v, &u) != 0) || (u < 2) || (u > 256)) {
                return bad_value(f, v, "2..256");
            }
            a->nodes = (unsigned)u;
        } else if (a->sim && !strcmp(f, "--policy")) {
            if (dango_conductor_policy_parse(v, &a->sp.sched.policy) != 0) {
                return bad_value(f, v, "random, load, local or global");
            }
        } else if (a->sim && !strcmp(f, "--cache-blocks")) {
            if (parse_blocks(v, &a->sp.cache_blocks) != 0) {
                return bad_value(f, v, "a number of blocks or inf");
            }
            a->set_cache = 1;
        } else if (a->sim && !strcmp(f, "--bandwidth")) {
            if (parse_dbl(v, 1e-3, 1e6, &d) != 0) {
                return bad_value(f, v, "GB/s, 0.001..1e6");
            }
            a->sp.sched.bandwidth_Bps = d * 1e9;
        } else if (a->sim && !strcmp(f, "--threshold")) {
            if (parse_dbl(v, 1.0, 1e9, &d) != 0) {
                return bad_value(f, v, ">= 1");
            }
            a->sp.sched.threshold = d;
        } else if (a->sim && !strcmp(f, "--ttft-slo")) {
            if (parse_dbl(v, 0, 1e6, &d) != 0) {
                return bad_value(f, v, "seconds >= 0, 0 = never");
            }
            a->sp.sched.ttft_slo_s = d;
        } else if (a->sim && !strcmp(f, "--tbt-slo")) {
            if (parse_dbl(v, 0, 1e9, &d) != 0) {
                return bad_value(f, v, "milliseconds >= 0, 0 = never");
            }
            a->sp.sched.tbt_slo_s = d / 1000.0;
        } else if (a->sim && !strcmp(f, "--ttft-threshold")) {
            if ((parse_dbl(v, 0, 1e6, &d) != 0) || (d == 0)) {
                return bad_value(f, v, "seconds > 0");
            }
            a->sp.ttft_threshold_s = d;
            a->set_ttft_thr        = 1;
        } else if (a->sim && !strcmp(f, "--speed")) {
            if ((parse_dbl(v, 1e-6, 1e6, &d) != 0)) {
                return bad_value(f, v, "factor > 0");
            }
            a->sp.speed = d;
        } else if (a->sim && !strcmp(f, "--output-length")) {
            if ((parse_u64(v, &u) != 0) || (u == 0) || (u > 1000000)) {
                return bad_value(f, v, "1..1000000 tokens");
            }
            a->sp.output_length = u;
            a->set_output       = 1;
        } else if (a->sim && !strcmp(f, "--seed")) {
            if (parse_u64(v, &u) != 0) {
                return bad_value(f, v, "an integer >= 0");
            }
            a->sp.sched.seed = u;
        } else if (a->sim && !strcmp(f, "--bandwidths")) {
            a->bandwidths = v;
        } else if (a->sim && !strcmp(f, "--thresholds")) {
            a->thresholds = v;
        } else {
            app_bad_arg("dango", f,
                        a->sim ? "dango replay sim --help"
                               : "dango replay cache --help");
            return 2;
        }
    }

    if (a->trace == NULL) {
        fprintf(stderr, "dango: replay %s: --trace FILE is required\n",
                argv[0]);
        return 2;
    }
    if (!a->sim && (a->sweep == NULL) && !a->have_capacity) {
        fprintf(stderr, "dango: replay cache: --capacity-blocks C|inf is "
                        "required\n");
        return 2;
    }
    if ((a->plot != NULL) && (a->sweep == NULL)) {
        fprintf(stderr, "dango: --plot draws a --sweep\n");
        return 2;
    }
    if (a->plot != NULL) {
        const char *dot = strrchr(a->plot, '.');

        if ((dot == NULL) || (strcmp(dot, ".svg") && strcmp(dot, ".png"))) {
            return bad_value("--plot", a->plot,
                             "a file name ending in .svg "
                             "or .png");
        }
    }
    return -1;
}

/* Splits a comma list of blocks ("inf" allowed) or of numbers. */
static int split_list(const char *flag, const char *s, double *out, size_t *n,
                      int blocks)
{
    char  *copy = strdup(s), *tok, *save = NULL;
    size_t k = 0;

    if (copy == NULL) {
        return -1;
    }
    for (tok = strtok_r(copy, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        size_t b;
        double d;

        if (k == LIST_MAX) {
            fprintf(stderr, "dango: %s: at most %d entries\n", flag, LIST_MAX);
            free(copy);
            return -1;
        }
        if (blocks) {
            if (parse_blocks(tok, &b) != 0) {
                bad_value(flag, tok, "blocks or inf");
                free(copy);
                return -1;
            }
            d = (b == DANGO_CONDUCTOR_CAPACITY_INF) ? INFINITY : (double)b;
        } else if (parse_dbl(tok, 1e-6, 1e9, &d) != 0) {
            bad_value(flag, tok, "a positive number");
            free(copy);
            return -1;
        }
        out[k++] = d;
    }
    free(copy);
    if (k == 0) {
        bad_value(flag, s, "a comma-separated list");
        return -1;
    }
    *n = k;
    return 0;
}

/* ---------- JSON of one run ---------- */

static json_t *cache_json(const replay_args_t                  *a,
                          const dango_conductor_trace_t        *t,
                          const dango_conductor_cache_params_t *cp,
                          const dango_conductor_cache_result_t *r,
                          double                                elapsed)
{
    int      inf = (cp->capacity_blocks == DANGO_CONDUCTOR_CAPACITY_INF);
    uint64_t max = 0;
    json_t  *j;

    for (unsigned i = 0;
         i < DANGO_MIN(cp->instances, (unsigned)DANGO_CONDUCTOR_MAX_INSTANCES);
         i++) {
        max = DANGO_MAX(max, r->per_instance[i]);
    }

    j = json_object();
    json_object_set_new(j, "trace", json_string(a->trace));
    json_object_set_new(j, "mode", json_string("cache"));
    json_object_set_new(j, "capacity_blocks",
                        inf ? json_string("inf")
                            : json_integer((json_int_t)cp->capacity_blocks));
    json_object_set_new(j, "instances", json_integer(cp->instances));
    json_object_set_new(
        j, "blocks_per_instance",
        inf ? json_string("inf")
            : json_integer((json_int_t)(cp->capacity_blocks / cp->instances)));
    json_object_set_new(j, "routing",
                        json_string((cp->instances == 1) ? "global"
                                    : (cp->routing == DANGO_CONDUCTOR_ROUTE_RR)
                                        ? "rr"
                                        : "aware"));
    json_object_set_new(j, "order", json_string(cp->reverse ? "rev" : "fwd"));
    json_object_set_new(j, "requests", json_integer((json_int_t)r->requests));
    json_object_set_new(
        j, "skipped_lines",
        json_integer((json_int_t)dango_conductor_trace_skipped(t)));
    json_object_set_new(j, "total_blocks",
                        json_integer((json_int_t)r->total_blocks));
    json_object_set_new(j, "hit_blocks",
                        json_integer((json_int_t)r->hit_blocks));
    json_object_set_new(j, "block_hit_rate",
                        json_real(r->total_blocks ? (double)r->hit_blocks /
                                                        (double)r->total_blocks
                                                  : 0));
    json_object_set_new(j, "total_tokens",
                        json_integer((json_int_t)r->total_tokens));
    json_object_set_new(j, "hit_tokens",
                        json_integer((json_int_t)r->hit_tokens));
    json_object_set_new(j, "token_hit_rate",
                        json_real(r->total_tokens ? (double)r->hit_tokens /
                                                        (double)r->total_tokens
                                                  : 0));
    json_object_set_new(j, "evictions", json_integer((json_int_t)r->evictions));
    json_object_set_new(j, "instances_used", json_integer(r->instances_used));
    json_object_set_new(
        j, "max_instance_share",
        json_real(r->requests ? (double)max / (double)r->requests : 0));
    json_object_set_new(j, "elapsed_s", json_real(elapsed));
    json_object_set_new(
        j, "requests_per_s",
        json_real((elapsed > 0) ? (double)r->requests / elapsed : 0));
    return j;
}

static json_t *sim_json(const replay_args_t                *a,
                        const dango_conductor_sim_params_t *p,
                        const dango_conductor_sim_result_t *r, double elapsed)
{
    json_t *j = json_object(), *o;

    json_object_set_new(j, "trace", json_string(a->trace));
    json_object_set_new(j, "mode", json_string("sim"));
    json_object_set_new(
        j, "policy", json_string(dango_conductor_policy_name(p->sched.policy)));
    json_object_set_new(j, "prefill", json_integer(p->prefill));
    json_object_set_new(j, "decode", json_integer(p->decode));
    json_object_set_new(j, "cache_blocks",
                        (p->cache_blocks == DANGO_CONDUCTOR_CAPACITY_INF)
                            ? json_string("inf")
                            : json_integer((json_int_t)p->cache_blocks));
    json_object_set_new(j, "threshold", json_real(p->sched.threshold));
    json_object_set_new(j, "bandwidth_gbps",
                        json_real(p->sched.bandwidth_Bps / 1e9));
    json_object_set_new(j, "speed", json_real(p->speed));
    json_object_set_new(j, "ttft_slo_s", json_real(p->sched.ttft_slo_s));
    json_object_set_new(j, "tbt_slo_ms", json_real(p->sched.tbt_slo_s * 1e3));
    json_object_set_new(j, "ttft_threshold_s", json_real(p->ttft_threshold_s));
    if (p->output_length > 0) {
        json_object_set_new(j, "output_length",
                            json_integer((json_int_t)p->output_length));
    }
    json_object_set_new(j, "requests", json_integer((json_int_t)r->requests));
    json_object_set_new(j, "completed", json_integer((json_int_t)r->completed));
    json_object_set_new(j, "rejected", json_integer((json_int_t)r->rejected));
    o = json_object();
    for (int k = 1; k < 4; k++) {
        json_object_set_new(o, dango_conductor_reject_name(k),
                            json_integer((json_int_t)r->rejected_by[k]));
    }
    json_object_set_new(j, "rejected_by", o);
    json_object_set_new(j, "transfers", json_integer((json_int_t)r->transfers));
    json_object_set_new(j, "transfer_blocks",
                        json_integer((json_int_t)r->transfer_blocks));
    o = json_object();
    json_object_set_new(o, "mean", json_real(r->ttft_mean_s));
    json_object_set_new(o, "p50", json_real(r->ttft_p50_s));
    json_object_set_new(o, "p90", json_real(r->ttft_p90_s));
    json_object_set_new(o, "p99", json_real(r->ttft_p99_s));
    json_object_set_new(j, "ttft_s", o);
    o = json_object();
    json_object_set_new(o, "mean", json_real(r->tbt_mean_s * 1e3));
    json_object_set_new(o, "p50", json_real(r->tbt_p50_s * 1e3));
    json_object_set_new(o, "p90", json_real(r->tbt_p90_s * 1e3));
    json_object_set_new(o, "p99", json_real(r->tbt_p99_s * 1e3));
    json_object_set_new(j, "tbt_ms", o);
    o = json_object();
    json_object_set_new(o, "tbt_100ms", json_real(r->effective[0]));
    json_object_set_new(o, "tbt_200ms", json_real(r->effective[1]));
    json_object_set_new(o, "tbt_300ms", json_real(r->effective[2]));
    json_object_set_new(j, "effective_capacity", o);
    json_object_set_new(j, "block_hit_rate", json_real(r->block_hit_rate));
    json_object_set_new(j, "token_hit_rate", json_real(r->token_hit_rate));
    json_object_set_new(j, "local_block_hit_rate",
                        json_real(r->local_block_hit_rate));
    json_object_set_new(j, "prefill_mean_s", json_real(r->prefill_mean_s));
    json_object_set_new(j, "queue_mean_s", json_real(r->queue_mean_s));
    o = json_object();
    json_object_set_new(o, "top1", json_integer(r->replicas_top[0]));
    json_object_set_new(o, "top10", json_integer(r->replicas_top[1]));
    json_object_set_new(o, "top100", json_integer(r->replicas_top[2]));
    json_object_set_new(j, "replicas", o);
    json_object_set_new(j, "makespan_s", json_real(r->makespan_s));
    json_object_set_new(j, "events", json_integer((json_int_t)r->events));
    json_object_set_new(j, "elapsed_s", json_real(elapsed));
    json_object_set_new(
        j, "requests_per_s",
        json_real((elapsed > 0) ? (double)r->requests / elapsed : 0));
    return j;
}

/* ---------- runs ---------- */

static int run_cache(const replay_args_t *a, const dango_conductor_trace_t *t,
                     size_t cap, unsigned n, int routing,
                     dango_conductor_cache_result_t *r, json_t **j_p)
{
    dango_conductor_cache_params_t cp = {cap, n, routing, a->reverse,
                                         a->block_size};
    double                         t0 = now_s();
    int                            rc = dango_conductor_replay_cache(t, &cp, r);

    if (rc != 0) {
        app_error("dango", "replay cache", rc);
        return rc;
    }
    *j_p = cache_json(a, t, &cp, r, now_s() - t0);
    return 0;
}

static int run_sim(const replay_args_t *a, const dango_conductor_trace_t *t,
                   dango_conductor_sim_params_t *p, const char *label,
                   dango_conductor_sim_result_t *r, json_t **j_p)
{
    progress_t pg = {progress_on(a), label, -1};
    double     t0 = now_s();
    int        rc;

    p->progress     = progress_cb;
    p->progress_arg = &pg;
    rc              = dango_conductor_sim_run(t, p, r);
    progress_end(&pg);
    if (rc != 0) {
        app_error("dango", "replay sim", rc);
        return rc;
    }
    *j_p = sim_json(a, p, r, now_s() - t0);
    return 0;
}

/* ---------- tables and plots ---------- */

static void table_print(const table_t *tb)
{
    printf("%s\n", tb->title);
    printf("%-14s", tb->cols[0]);
    for (size_t c = 1; c < tb->ncols; c++) {
        printf(" %14s", tb->cols[c]);
    }
    printf("\n");
    for (size_t r = 0; r < tb->nrows; r++) {
        printf("%-14s", tb->x[r]);
        for (size_t c = 1; c < tb->ncols; c++) {
            printf(" %14.4g", tb->v[r][c]);
        }
        printf("\n");
    }
}

static json_t *table_json(const table_t *tb)
{
    json_t *j = json_object(), *cols = json_array(), *rows = json_array();

    for (size_t c = 0; c < tb->ncols; c++) {
        json_array_append_new(cols, json_string(tb->cols[c]));
    }
    for (size_t r = 0; r < tb->nrows; r++) {
        json_t *row = json_object();

        json_object_set_new(row, tb->cols[0], json_string(tb->x[r]));
        for (size_t c = 1; c < tb->ncols; c++) {
            json_object_set_new(row, tb->cols[c],
                                isfinite(tb->v[r][c]) ? json_real(tb->v[r][c])
                                                      : json_null());
        }
        json_array_append_new(rows, row);
    }
    json_object_set_new(j, "sweep", json_string(tb->sweep));
    json_object_set_new(j, "title", json_string(tb->title));
    json_object_set_new(j, "columns", cols);
    json_object_set_new(j, "rows", rows);
    json_object_set_new(j, "runs", json_incref(tb->runs));
    return j;
}

/* Writes the script to gnuplot's stdin; waits at most PLOT_WAIT_MS. */
static int gnuplot_run(const char *script)
{
    posix_spawn_file_actions_t fa;
    char                      *argv[] = {"gnuplot", NULL};
    int                        fds[2], status = 0;
    pid_t                      pid, w;
    size_t                     len = strlen(script), off = 0;

    if (pipe2(fds, O_CLOEXEC) != 0) {
        return -1;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[0], STDIN_FILENO);
    if (posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        close(fds[0]);
        close(fds[1]);
        fprintf(stderr, "dango: --plot: cannot run gnuplot (is it "
                        "installed?)\n");
        return -1;
    }
    posix_spawn_file_actions_destroy(&fa);
    close(fds[0]);
    signal(SIGPIPE, SIG_IGN);
    while (off < len) {
        ssize_t n = write(fds[1], script + off, len - off);

        if (n <= 0) {
            break;
        }
        off += (size_t)n;
    }
    close(fds[1]);

    for (int waited = 0;; waited += 10) {
        w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            break;
        }
        if ((w < 0) || (waited >= PLOT_WAIT_MS)) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fprintf(stderr, "dango: --plot: gnuplot did not finish\n");
            return -1;
        }
        usleep(10000);
    }
    if (!WIFEXITED(status) || (WEXITSTATUS(status) != 0)) {
        fprintf(stderr, "dango: --plot: gnuplot failed (status %d)\n",
                WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return -1;
    }
    return 0;
}

static int table_plot(const table_t *tb, const char *file)
{
    char  *script = NULL;
    size_t size   = 0;
    FILE  *f      = open_memstream(&script, &size);
    int    png    = (strcmp(strrchr(file, '.'), ".png") == 0), rc;
    size_t ncols  = (tb->plot_cols > 0) ? tb->plot_cols : tb->ncols;

    if (f == NULL) {
        return -1;
    }
    fprintf(f, "set terminal %s size 960,560\n", png ? "pngcairo" : "svg");
    fprintf(f, "set output '");
    for (const char *p = file; *p != '\0'; p++) {
        fputs((*p == '\'') ? "''" : (char[]){*p, '\0'}, f);
    }
    fprintf(f, "'\nset title \"%s\" noenhanced\n", tb->title);
    fprintf(f, "set xlabel \"%s\"\nset ylabel \"%s\"\n", tb->xlabel,
            tb->ylabel);
    fprintf(f, "set key outside right noenhanced\nset grid ytics\n");
    if (tb->numeric_x) {
        if (tb->logx) {
            fprintf(f, "set logscale x\n");
        }
        fprintf(f, "plot ");
        for (size_t c = 1; c < ncols; c++) {
            fprintf(f, "%s'-' using 1:2 with linespoints lw 2 title \"%s\"",
                    (c > 1) ? ", " : "", tb->cols[c]);
        }
        fprintf(f, "\n");
        for (size_t c = 1; c < ncols; c++) {
            for (size_t r = 0; r < tb->nrows; r++) {
                double x = strtod(tb->x[r], NULL);

                if (isfinite(x) && isfinite(tb->v[r][c])) {
                    fprintf(f, "%.10g %.10g\n", x, tb->v[r][c]);
                }
            }
            fprintf(f, "e\n");
        }
    } else {
        fprintf(f, "set style data histograms\nset style histogram "
                   "clustered gap 1\nset style fill solid 0.8 border -1\n"
                   "set yrange [0:*]\n");
        fprintf(f, "plot ");
        for (size_t c = 1; c < ncols; c++) {
            fprintf(f, "%s'-' using 2:xtic(1) title \"%s\"",
                    (c > 1) ? ", " : "", tb->cols[c]);
        }
        fprintf(f, "\n");
        for (size_t c = 1; c < ncols; c++) {
            for (size_t r = 0; r < tb->nrows; r++) {
                fprintf(f, "\"%s\" %.10g\n", tb->x[r],
                        isfinite(tb->v[r][c]) ? tb->v[r][c] : 0.0);
            }
            fprintf(f, "e\n");
        }
    }
    fclose(f);
    rc = gnuplot_run(script);
    free(script);
    return rc;
}

static int table_emit(const replay_args_t *a, const table_t *tb)
{
    if (!strcmp(a->format, "table")) {
        table_print(tb);
    } else {
        json_t *j = table_json(tb);

        json_out(j);
        json_decref(j);
    }

    if ((a->plot != NULL) && (table_plot(tb, a->plot) != 0)) {
        return 1;
    }
    return 0;
}

/* ---------- sweeps ---------- */

static void fmt_blocks(char *buf, size_t len, double b)
{
    if (isinf(b)) {
        snprintf(buf, len, "inf");
    } else {
        snprintf(buf, len, "%.0f", b);
    }
}

static int sweep_cache(const replay_args_t *a, const dango_conductor_trace_t *t)
{
    static char names[TABLE_COLS][32];
    table_t     tb = {0};
    double      caps[LIST_MAX], ns[LIST_MAX];
    size_t      ncap = 0, nn = 0, total;
    progress_t  pg = {progress_on(a), "cache sweep", -1};
    int         rc = 0;

    tb.runs             = json_array();
    tb.cols[tb.ncols++] = "capacity_blocks";
    if (!strcmp(a->sweep, "capacity")) {
        if ((split_list("--capacities",
                        a->capacities ? a->capacities
                                      : "1000,5000,10000,50000,100000,inf",
                        caps, &ncap, 1) != 0) ||
            (split_list("--instances-list",
                        a->instances_list ? a->instances_list : "1,8,16", ns,
                        &nn, 0) != 0)) {
            rc = 2;
            goto out;
        }
        tb.sweep     = "capacity";
        tb.title     = "Block hit rate vs cache capacity (cf. Fig. 9)";
        tb.xlabel    = "capacity (blocks of 512 tokens)";
        tb.ylabel    = "block hit rate";
        tb.numeric_x = tb.logx = 1;
    } else if (!strcmp(a->sweep, "local-global")) {
        size_t   per = a->have_capacity ? a->capacity : 5859;
        unsigned n   = (a->instances > 1) ? a->instances : 10;

        if (per == DANGO_CONDUCTOR_CAPACITY_INF) {
            fprintf(stderr, "dango: local-global needs a finite "
                            "--capacity-blocks per cache\n");
            rc = 2;
            goto out;
        }
        caps[0]   = (double)per * n;
        ncap      = 1;
        ns[0]     = n;
        nn        = 1;
        tb.sweep  = "local-global";
        tb.title  = "Local vs global cache, cache-only (cf. Fig. 10)";
        tb.xlabel = "";
        tb.ylabel = "block hit rate";
    } else {
        fprintf(stderr,
                "dango: replay cache: unknown sweep '%s' (capacity, "
                "local-global)\n",
                a->sweep);
        rc = 2;
        goto out;
    }

    /* Columns: global, then N rr and N aware for each N > 1. */
    for (size_t k = 0; k < nn; k++) {
        unsigned n = (unsigned)ns[k];

        if ((n == 0) || (n > DANGO_CONDUCTOR_MAX_INSTANCES) ||
            (tb.ncols + 2 > TABLE_COLS)) {
            fprintf(stderr, "dango: --instances-list: 1..256, at most 5 "
                            "entries\n");
            rc = 2;
            goto out;
        }
        if (n == 1) {
            snprintf(names[tb.ncols], sizeof(names[0]), "global");
            tb.cols[tb.ncols] = names[tb.ncols];
            tb.ncols++;
        } else {
            snprintf(names[tb.ncols], sizeof(names[0]), "local%u_rr", n);
            tb.cols[tb.ncols] = names[tb.ncols];
            tb.ncols++;
            snprintf(names[tb.ncols], sizeof(names[0]), "local%u_aware", n);
            tb.cols[tb.ncols] = names[tb.ncols];
            tb.ncols++;
        }
    }
    if (!strcmp(a->sweep, "local-global")) {
        /* One global cache of N x per blocks against the N local ones. */
        snprintf(names[tb.ncols], sizeof(names[0]), "global");
        tb.cols[tb.ncols] = names[tb.ncols];
        tb.ncols++;
    }

    total = ncap * (tb.ncols - 1);
    for (size_t ci = 0; ci < ncap; ci++) {
        size_t cap =
            isinf(caps[ci]) ? DANGO_CONDUCTOR_CAPACITY_INF : (size_t)caps[ci];

        fmt_blocks(tb.x[tb.nrows], sizeof(tb.x[0]), caps[ci]);
        for (size_t c = 1; c < tb.ncols; c++) {
            dango_conductor_cache_result_t r;
            unsigned                       n = 1;
            int     routing                  = DANGO_CONDUCTOR_ROUTE_AWARE;
            json_t *j;

            if (strncmp(tb.cols[c], "local", 5) == 0) {
                n       = (unsigned)strtoul(tb.cols[c] + 5, NULL, 10);
                routing = strstr(tb.cols[c], "_rr")
                              ? DANGO_CONDUCTOR_ROUTE_RR
                              : DANGO_CONDUCTOR_ROUTE_AWARE;
            }
            rc = run_cache(a, t, cap, n, routing, &r, &j);
            if (rc != 0) {
                rc = 1;
                goto out;
            }
            tb.v[tb.nrows][c] =
                r.total_blocks ? (double)r.hit_blocks / (double)r.total_blocks
                               : 0;
            json_array_append_new(tb.runs, j);
            progress_draw(&pg, ci * (tb.ncols - 1) + c, total);
        }
        tb.nrows++;
    }
    progress_end(&pg);
    rc = table_emit(a, &tb);

out:
    json_decref(tb.runs);
    return rc;
}

static int sweep_sim(const replay_args_t *a, const dango_conductor_trace_t *t)
{
    table_t                      tb = {0};
    dango_conductor_sim_params_t p  = a->sp;
    dango_conductor_sim_result_t r;
    double                       list[LIST_MAX];
    size_t                       nl = 0;
    int                          rc = 0;
    json_t                      *j;
    char                         label[64];

    tb.runs = json_array();
    if (!strcmp(a->sweep, "policy")) {
        tb.sweep            = "policy";
        tb.title            = "TTFT by prefill scheduling policy (cf. Fig. 5)";
        tb.xlabel           = "policy";
        tb.ylabel           = "TTFT (s)";
        tb.cols[tb.ncols++] = "policy";
        tb.cols[tb.ncols++] = "ttft_mean_s";
        tb.cols[tb.ncols++] = "ttft_p50_s";
        tb.cols[tb.ncols++] = "ttft_p90_s";
        tb.cols[tb.ncols++] = "ratio_to_global";
        tb.cols[tb.ncols++] = "block_hit_rate";
        tb.cols[tb.ncols++] = "prefill_mean_s";
        for (int pol = DANGO_CONDUCTOR_POLICY_GLOBAL; pol >= 0; pol--) {
            p.sched.policy = (dango_conductor_policy_t)pol;
            snprintf(label, sizeof(label), "policy %s",
                     dango_conductor_policy_name(pol));
            if (run_sim(a, t, &p, label, &r, &j) != 0) {
                rc = 1;
                goto out;
            }
            json_array_append_new(tb.runs, j);
            snprintf(tb.x[tb.nrows], sizeof(tb.x[0]), "%s",
                     dango_conductor_policy_name(pol));
            tb.v[tb.nrows][1] = r.ttft_mean_s;
            tb.v[tb.nrows][2] = r.ttft_p50_s;
            tb.v[tb.nrows][3] = r.ttft_p90_s;
            tb.v[tb.nrows][4] =
                (tb.v[0][1] > 0) ? r.ttft_mean_s / tb.v[0][1] : NAN;
            tb.v[tb.nrows][5] = r.block_hit_rate;
            tb.v[tb.nrows][6] = r.prefill_mean_s;
            tb.nrows++;
        }
        tb.plot_cols = 4; /* the plot shows the TTFTs only */
    } else if (!strcmp(a->sweep, "local-global")) {
        tb.sweep  = "local-global";
        tb.title  = "Local vs global cache-aware scheduling (cf. Fig. 10)";
        tb.xlabel = "policy";
        tb.ylabel = "";
        tb.cols[tb.ncols++] = "policy";
        tb.cols[tb.ncols++] = "block_hit_rate";
        tb.cols[tb.ncols++] = "prefill_mean_s";
        tb.cols[tb.ncols++] = "ttft_mean_s";
        if (!a->set_prefill) {
            p.prefill = 10;
        }
        if (!a->set_cache) {
            p.cache_blocks = 5859;
        }
        if (!a->set_output) {
            p.output_length = 1;
        }
        for (int pol = DANGO_CONDUCTOR_POLICY_LOCAL;
             pol <= DANGO_CONDUCTOR_POLICY_GLOBAL; pol++) {
            p.sched.policy = (dango_conductor_policy_t)pol;
            snprintf(label, sizeof(label), "policy %s",
                     dango_conductor_policy_name(pol));
            if (run_sim(a, t, &p, label, &r, &j) != 0) {
                rc = 1;
                goto out;
            }
            json_array_append_new(tb.runs, j);
            snprintf(tb.x[tb.nrows], sizeof(tb.x[0]), "%s",
                     dango_conductor_policy_name(pol));
            tb.v[tb.nrows][1] = r.block_hit_rate;
            tb.v[tb.nrows][2] = r.prefill_mean_s;
            tb.v[tb.nrows][3] = r.ttft_mean_s;
            tb.nrows++;
        }
    } else if (!strcmp(a->sweep, "pd-ratio")) {
        unsigned lo = DANGO_MAX(1u, (a->nodes * 5 + 8) / 16);
        unsigned hi = DANGO_MIN(a->nodes - 1, (a->nodes * 11 + 8) / 16);

        tb.sweep            = "pd-ratio";
        tb.title            = "Prefill:decode ratio (cf. Fig. 15)";
        tb.xlabel           = "prefill instances (the rest decode)";
        tb.ylabel           = "";
        tb.numeric_x        = 1;
        tb.cols[tb.ncols++] = "prefill";
        tb.cols[tb.ncols++] = "effective_pct";
        tb.cols[tb.ncols++] = "ttft_mean_s";
        tb.cols[tb.ncols++] = "tbt_mean_ms";
        tb.plot_cols        = 2;
        if (!a->set_ttft_thr) {
            p.ttft_threshold_s = 10.0;
        }
        for (unsigned np = lo; (np <= hi) && (tb.nrows < TABLE_ROWS); np++) {
            p.prefill = np;
            p.decode  = a->nodes - np;
            snprintf(label, sizeof(label), "%uP%uD", np, p.decode);
            if (run_sim(a, t, &p, label, &r, &j) != 0) {
                rc = 1;
                goto out;
            }
            json_array_append_new(tb.runs, j);
            snprintf(tb.x[tb.nrows], sizeof(tb.x[0]), "%u", np);
            tb.v[tb.nrows][1] = 100.0 * r.effective[0];
            tb.v[tb.nrows][2] = r.ttft_mean_s;
            tb.v[tb.nrows][3] = r.tbt_mean_s * 1e3;
            tb.nrows++;
        }
    } else if (!strcmp(a->sweep, "bandwidth") ||
               !strcmp(a->sweep, "threshold")) {
        int bw = !strcmp(a->sweep, "bandwidth");

        if (split_list(
                bw ? "--bandwidths" : "--thresholds",
                bw ? (a->bandwidths ? a->bandwidths : "3,5,10,12.5,20,40,50")
                   : (a->thresholds ? a->thresholds : "1,1.25,1.5,2"),
                list, &nl, 0) != 0) {
            rc = 2;
            goto out;
        }
        tb.sweep            = bw ? "bandwidth" : "threshold";
        tb.title            = bw ? "TTFT vs KV transfer bandwidth (cf. Fig. 13)"
                                 : "TTFT vs kvcache_balancing_threshold";
        tb.xlabel           = bw ? "bandwidth (GB/s)" : "threshold";
        tb.ylabel           = "TTFT (s)";
        tb.numeric_x        = 1;
        tb.cols[tb.ncols++] = bw ? "bandwidth_gbps" : "threshold";
        tb.cols[tb.ncols++] = "ttft_mean_s";
        tb.cols[tb.ncols++] = "ttft_p90_s";
        tb.cols[tb.ncols++] = "transfers";
        tb.plot_cols        = 3;
        for (size_t k = 0; k < nl; k++) {
            if (bw) {
                p.sched.bandwidth_Bps = list[k] * 1e9;
            } else if (list[k] < 1.0) {
                bad_value("--thresholds", "", ">= 1");
                rc = 2;
                goto out;
            } else {
                p.sched.threshold = list[k];
            }
            snprintf(label, sizeof(label), "%s %g", tb.sweep, list[k]);
            if (run_sim(a, t, &p, label, &r, &j) != 0) {
                rc = 1;
                goto out;
            }
            json_array_append_new(tb.runs, j);
            snprintf(tb.x[tb.nrows], sizeof(tb.x[0]), "%g", list[k]);
            tb.v[tb.nrows][1] = r.ttft_mean_s;
            tb.v[tb.nrows][2] = r.ttft_p90_s;
            tb.v[tb.nrows][3] = (double)r.transfers;
            tb.nrows++;
        }
    } else {
        fprintf(stderr,
                "dango: replay sim: unknown sweep '%s' (policy, "
                "local-global, pd-ratio, bandwidth, threshold)\n",
                a->sweep);
        rc = 2;
        goto out;
    }

    rc = table_emit(a, &tb);

out:
    json_decref(tb.runs);
    return rc;
}

/* ---------- entry point ---------- */

int cli_replay(int argc, char **argv)
{
    replay_args_t            a;
    dango_conductor_trace_t *t = NULL;
    json_t                  *j = NULL;
    int                      rc;

    if ((argc < 2) || (strcmp(argv[1], "cache") && strcmp(argv[1], "sim"))) {
        if ((argc >= 2) &&
            (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
            usage(stdout);
            return 0;
        }
        usage(stderr);
        return 2;
    }

    rc = parse_args(argc - 1, argv + 1, &a);
    if (rc >= 0) {
        return rc;
    }

    dango_log_configure("fatal");
    if (getenv("DANGO_LOG") != NULL) {
        dango_log_configure(getenv("DANGO_LOG"));
    }

    rc = dango_conductor_trace_load(a.trace, trace_error, &a, &t);
    if (rc != 0) {
        fprintf(stderr, "dango: %s: %s\n", a.trace,
                (rc == DANGO_EINVAL) ? "no valid request in the trace"
                                     : dango_strerror(rc));
        return 1;
    }
    if (!a.quiet && (dango_conductor_trace_skipped(t) > 0)) {
        fprintf(stderr,
                "dango: %s: %zu malformed line(s) skipped, %zu "
                "requests\n",
                a.trace, dango_conductor_trace_skipped(t),
                dango_conductor_trace_count(t));
    }

    if (a.sweep != NULL) {
        rc = a.sim ? sweep_sim(&a, t) : sweep_cache(&a, t);
    } else if (!a.sim) {
        dango_conductor_cache_result_t r;

        rc = (run_cache(&a, t, a.capacity, a.instances, a.routing, &r, &j) == 0)
                 ? 0
                 : 1;
    } else {
        dango_conductor_sim_result_t r;
        char                         label[64];

        snprintf(label, sizeof(label), "%uP%uD %s", a.sp.prefill, a.sp.decode,
                 dango_conductor_policy_name(a.sp.sched.policy));
        rc = (run_sim(&a, t, &a.sp, label, &r, &j) == 0) ? 0 : 1;
    }

    if (j != NULL) {
        json_out(j);
        json_decref(j);
    }
    dango_conductor_trace_destroy(t);
    return rc;
}
