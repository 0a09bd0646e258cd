/*
 * Timed replay: a discrete-event simulation of a prefill/decode cluster
 * driven by a trace (spec conductor.md A.9).
 *
 * DESIGN
 * Virtual time in seconds. Arrivals are taken in timestamp order (stable,
 * so equal timestamps keep file order); before each arrival every event
 * due by then runs, so the conductor sees the cluster as it is at that
 * instant. Events, in a binary heap ordered by (time, sequence):
 *   PREFILL_DONE  the prefill instance finished the request: its pinned
 *                 prefix blocks are released and all its blocks stored in
 *                 that instance's cache (fetched blocks included: that is
 *                 the replication of hot blocks); TTFT = now - arrival;
 *   DECODE_READY  the KV reached the decode instance: it streamed layer
 *                 by layer during the prefill, so only the part not
 *                 overlapped remains, max(T_kv / 80 layers, T_kv - T_prefill);
 *   ITER_END      a decode iteration of t0 + t_kv * K (K = context tokens
 *                 of the batch) ended: each request of the batch got one
 *                 token; finished ones leave, waiting ones join, and the
 *                 next iteration starts at once if the batch is not empty.
 * A prefill instance is FIFO and runs one request at a time, so the
 * conductor's predicted queue (busy_until) is exact here; service time is
 * T_transfer + T_prefill(n, prefix). The conductor's decode load is the
 * context of every request assigned to the instance and not finished.
 *
 * TBT of a request = mean of the longest ceil(10 %) of its intervals
 * between decode tokens (the first token comes from the prefill; the gap
 * before the first decode token is part of neither TTFT nor TBT). A
 * per-request min-heap of that size keeps the longest intervals, so memory
 * does not grow with output length.
 */
#define _GNU_SOURCE
#include "conductor/conductor_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

#define SIM_LAYERS 80 /* layers whose KV streams one after another */

enum { EV_PREFILL_DONE = 0, EV_DECODE_READY = 1, EV_ITER_END = 2 };

typedef struct sim_event {
    double   t;
    uint64_t seq;
    int      type;
    int      inst;
    size_t   req;
} sim_event_t;

typedef struct sim_req {
    double   arrival, ttft, tbt, prefill_s;
    int      prefill, decode;
    size_t   local_blocks;
    uint64_t in, out, generated;
    double  *top; /* min-heap of the longest intervals */
    size_t   top_n, top_cap;
    int      accepted, has_tbt;
} sim_req_t;

typedef struct sim_decode {
    int      id;
    size_t  *active, n_active, cap_active;
    size_t  *wait, n_wait, cap_wait, wait_head;
    uint64_t k_active; /* context tokens of the batch */
    uint64_t assigned; /* context of assigned, unfinished requests */
    int      iterating;
    double   iter_start;
} sim_decode_t;

typedef struct sim {
    const dango_conductor_trace_t      *t;
    const dango_conductor_sim_params_t *p;
    dango_conductor_t                  *c;
    sim_req_t                          *reqs;
    sim_decode_t                       *dec;
    int                                *prefill_ids;
    sim_event_t                        *heap;
    size_t                              n_heap, cap_heap;
    uint64_t                            seq;
    double                              now;
    uint64_t                            events;
} sim_t;

/* ---------- private functions ---------- */

static int ev_less(const sim_event_t *a, const sim_event_t *b)
{
    return (a->t < b->t) || ((a->t == b->t) && (a->seq < b->seq));
}

static int ev_push(sim_t *s, double t, int type, int inst, size_t req)
{
    sim_event_t e = {t, s->seq++, type, inst, req};
    size_t      i;

    if (s->n_heap == s->cap_heap) {
        size_t       cap = (s->cap_heap == 0) ? 1024 : s->cap_heap * 2;
        sim_event_t *h   = dango_realloc(s->heap, cap * sizeof(*h), "sim_heap");

        if (h == NULL) {
            return DANGO_ENOMEM;
        }
        s->heap     = h;
        s->cap_heap = cap;
    }

    i = s->n_heap++;
    while ((i > 0) && ev_less(&e, &s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i          = (i - 1) / 2;
    }
    s->heap[i] = e;
    return 0;
}

static sim_event_t ev_pop(sim_t *s)
{
    sim_event_t top = s->heap[0], last = s->heap[--s->n_heap];
    size_t      i = 0;

    for (;;) {
        size_t l = 2 * i + 1, m = i;

        if ((l < s->n_heap) && ev_less(&s->heap[l], &last)) {
            m = l;
        }
        if ((l + 1 < s->n_heap) &&
            ev_less(&s->heap[l + 1], (m == i) ? &last : &s->heap[m])) {
            m = l + 1;
        }
        if (m == i) {
            break;
        }
        s->heap[i] = s->heap[m];
        i          = m;
    }
    if (s->n_heap > 0) {
        s->heap[i] = last;
    }
    return top;
}

static int push_idx(size_t **arr, size_t *n, size_t *cap, size_t v)
{
    if (*n == *cap) {
        size_t  c2 = (*cap == 0) ? 16 : *cap * 2;
        size_t *a  = dango_realloc(*arr, c2 * sizeof(*a), "sim_list");

        if (a == NULL) {
            return DANGO_ENOMEM;
        }
        *arr = a;
        *cap = c2;
    }
    (*arr)[(*n)++] = v;
    return 0;
}

/* Keeps the longest top_cap intervals of a request. */
static void top_push(sim_req_t *r, double v)
{
    size_t i;

    if (r->top_cap == 0) {
        return;
    }
    if (r->top_n < r->top_cap) {
        i = r->top_n++;
        while ((i > 0) && (v < r->top[(i - 1) / 2])) {
            r->top[i] = r->top[(i - 1) / 2];
            i         = (i - 1) / 2;
        }
        r->top[i] = v;
        return;
    }
    if (v <= r->top[0]) {
        return;
    }
    /* Replace the smallest and sift down. */
    i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        double mv = v;

        if ((l < r->top_n) && (r->top[l] < mv)) {
            m  = l;
            mv = r->top[l];
        }
        if ((l + 1 < r->top_n) && (r->top[l + 1] < mv)) {
            m = l + 1;
        }
        if (m == i) {
            break;
        }
        r->top[i] = r->top[m];
        i         = m;
    }
    r->top[i] = v;
}

static double iter_time(const sim_t *s, uint64_t k)
{
    const dango_conductor_params_t *cp = dango_conductor_params(s->c);

    return cp->decode_t0_s + cp->decode_t_kv_s * (double)k;
}

static void decode_finish(sim_t *s, sim_decode_t *d, sim_req_t *r)
{
    if (r->top_n > 0) {
        double sum = 0;

        for (size_t i = 0; i < r->top_n; i++) {
            sum += r->top[i];
        }
        r->tbt     = sum / (double)r->top_n;
        r->has_tbt = 1;
    }
    dango_free(r->top);
    r->top = NULL;
    d->assigned -= r->in + r->out;
    dango_conductor_decode_load_set(s->c, d->id, d->assigned);
}

/* Admits every waiting request and starts an iteration if there is work. */
static int decode_start(sim_t *s, sim_decode_t *d)
{
    int rc;

    while (d->wait_head < d->n_wait) {
        size_t     ri = d->wait[d->wait_head++];
        sim_req_t *r  = &s->reqs[ri];

        rc = push_idx(&d->active, &d->n_active, &d->cap_active, ri);
        if (rc != 0) {
            return rc;
        }
        d->k_active += r->in + r->generated;
    }
    if (d->wait_head == d->n_wait) {
        d->wait_head = d->n_wait = 0;
    }

    if (d->n_active == 0) {
        d->iterating = 0;
        return 0;
    }

    d->iterating  = 1;
    d->iter_start = s->now;
    return ev_push(s, s->now + iter_time(s, d->k_active), EV_ITER_END,
                   (int)(d - s->dec), 0);
}

static int on_iter_end(sim_t *s, sim_decode_t *d)
{
    double dur = s->now - d->iter_start;
    size_t i   = 0;

    while (i < d->n_active) {
        sim_req_t *r = &s->reqs[d->active[i]];

        /* Intervals between decode tokens: not before the first one. */
        if (r->generated > 1) {
            top_push(r, dur);
        }
        r->generated++;
        d->k_active++;
        if (r->generated >= r->out) {
            d->k_active -= r->in + r->generated;
            decode_finish(s, d, r);
            d->active[i] = d->active[--d->n_active];
        } else {
            i++;
        }
    }
    return decode_start(s, d);
}

static int on_prefill_done(sim_t *s, size_t ri)
{
    sim_req_t                      *r  = &s->reqs[ri];
    sim_decode_t                   *d  = &s->dec[r->decode];
    const dango_conductor_params_t *cp = dango_conductor_params(s->c);
    dango_conductor_trace_req_t     tr;
    double                          t_kv, rest;
    int                             rc;

    dango_conductor_trace_get(s->t, ri, &tr);
    dango_conductor_kv_pin(s->c, s->prefill_ids[r->prefill], tr.hash_ids,
                           r->local_blocks, -1);
    rc = dango_conductor_kv_stored(s->c, s->prefill_ids[r->prefill],
                                   tr.hash_ids, tr.n_blocks);
    if (rc != 0) {
        return rc;
    }

    r->ttft      = s->now - r->arrival;
    r->generated = 1; /* the first token comes from the prefill */
    if (r->out <= 1) {
        decode_finish(s, d, r);
        return 0;
    }

    if (r->out > 2) {
        r->top_cap = (size_t)((r->out - 2 + 9) / 10);
        r->top     = dango_malloc(r->top_cap * sizeof(double), "sim_top");
        if (r->top == NULL) {
            return DANGO_ENOMEM;
        }
    }

    t_kv = (double)r->in * cp->kv_bytes_per_token / cp->bandwidth_Bps;
    rest = DANGO_MAX(t_kv / SIM_LAYERS, t_kv - r->prefill_s);
    return ev_push(s, s->now + rest, EV_DECODE_READY, r->decode, ri);
}

static int run_event(sim_t *s, const sim_event_t *e)
{
    sim_decode_t *d;
    int           rc;

    s->now = e->t;
    s->events++;
    switch (e->type) {
    case EV_PREFILL_DONE:
        return on_prefill_done(s, e->req);
    case EV_DECODE_READY:
        d  = &s->dec[e->inst];
        rc = push_idx(&d->wait, &d->n_wait, &d->cap_wait, e->req);
        if ((rc != 0) || d->iterating) {
            return rc;
        }
        return decode_start(s, d);
    default:
        return on_iter_end(s, &s->dec[e->inst]);
    }
}

static int on_arrival(sim_t *s, size_t ri, dango_conductor_sim_result_t *res,
                      int *id_to_prefill, int *id_to_decode)
{
    sim_req_t                      *r = &s->reqs[ri];
    dango_conductor_trace_req_t     tr;
    dango_conductor_request_t       q;
    dango_conductor_decision_t      dec;
    dango_conductor_instance_info_t info;
    sim_decode_t                   *d;
    int                             rc;

    dango_conductor_trace_get(s->t, ri, &tr);
    r->in           = tr.input_length;
    r->out          = (s->p->output_length > 0)
                          ? s->p->output_length
                          : DANGO_MAX(tr.output_length, (uint64_t)1);
    q.keys          = tr.hash_ids;
    q.n_keys        = tr.n_blocks;
    q.input_tokens  = tr.input_length;
    q.output_tokens = r->out;

    rc = dango_conductor_decide(s->c, &q, s->now, &dec);
    if (rc != 0) {
        return rc;
    }
    if (dec.reject != DANGO_CONDUCTOR_ACCEPT) {
        res->rejected++;
        res->rejected_by[dec.reject]++;
        return 0;
    }

    rc = dango_conductor_commit(s->c, &q, &dec, s->now);
    if (rc != 0) {
        return rc;
    }

    r->accepted     = 1;
    r->prefill      = id_to_prefill[dec.prefill];
    r->decode       = id_to_decode[dec.decode];
    r->local_blocks = dec.local_blocks;
    r->prefill_s    = dec.prefill_s;
    dango_conductor_kv_pin(s->c, dec.prefill, tr.hash_ids, dec.local_blocks, 1);

    res->transfers += (dec.transfer_blocks > 0);
    res->transfer_blocks += dec.transfer_blocks;
    res->block_hit_rate += (double)dec.prefix_blocks;
    res->local_block_hit_rate += (double)dec.local_blocks;
    res->token_hit_rate += (double)DANGO_MIN(
        (uint64_t)dec.prefix_blocks * dango_conductor_params(s->c)->block_size,
        tr.input_length);
    res->prefill_mean_s += dec.prefill_s;
    res->queue_mean_s += dec.queue_s;

    d = &s->dec[r->decode];
    d->assigned += r->in + r->out;
    dango_conductor_decode_load_set(s->c, dec.decode, d->assigned);
    dango_conductor_instance_info(s->c, dec.prefill, &info);
    return ev_push(s, info.busy_until_s, EV_PREFILL_DONE, r->prefill, ri);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted @v. */
static double pct(const double *v, size_t n, double q)
{
    size_t i;

    if (n == 0) {
        return 0;
    }
    i = (size_t)ceil(q * (double)n);
    return v[(i == 0) ? 0 : i - 1];
}

static int cmp_arrival(const void *a, const void *b, void *arg)
{
    const dango_conductor_trace_t *t = arg;
    dango_conductor_trace_req_t    x, y;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;

    dango_conductor_trace_get(t, i, &x);
    dango_conductor_trace_get(t, j, &y);
    if (x.timestamp_ms != y.timestamp_ms) {
        return (x.timestamp_ms > y.timestamp_ms) ? 1 : -1;
    }
    return (i > j) - (i < j);
}

static void summarize(sim_t *s, size_t n, double *ttft, double *tbt,
                      dango_conductor_sim_result_t *res)
{
    static const double thr[3] = {0.1, 0.2, 0.3};
    size_t              n_ttft = 0, n_tbt = 0, acc;
    uint64_t            blocks = 0, tokens = 0, eff[3] = {0};
    size_t              ranks[3] = {1, 10, 100};

    for (size_t i = 0; i < n; i++) {
        const sim_req_t            *r = &s->reqs[i];
        dango_conductor_trace_req_t tr;

        if (!r->accepted) {
            continue;
        }
        dango_conductor_trace_get(s->t, i, &tr);
        blocks += tr.n_blocks;
        tokens += tr.input_length;
        ttft[n_ttft++] = r->ttft;
        if (r->has_tbt) {
            tbt[n_tbt++] = r->tbt;
        }
        for (int k = 0; k < 3; k++) {
            eff[k] += (r->ttft <= s->p->ttft_threshold_s) &&
                      (!r->has_tbt || (r->tbt <= thr[k]));
        }
    }

    acc            = n_ttft;
    res->completed = acc;
    if (acc > 0) {
        res->block_hit_rate /= (double)blocks;
        res->local_block_hit_rate /= (double)blocks;
        res->token_hit_rate /= (double)tokens;
        res->prefill_mean_s /= (double)acc;
        res->queue_mean_s /= (double)acc;
    }
    for (int k = 0; k < 3; k++) {
        res->effective[k] = (double)eff[k] / (double)n;
    }

    qsort(ttft, n_ttft, sizeof(double), cmp_double);
    qsort(tbt, n_tbt, sizeof(double), cmp_double);
    for (size_t i = 0; i < n_ttft; i++) {
        res->ttft_mean_s += ttft[i] / (double)n_ttft;
    }
    for (size_t i = 0; i < n_tbt; i++) {
        res->tbt_mean_s += tbt[i] / (double)n_tbt;
    }
    res->ttft_p50_s = pct(ttft, n_ttft, 0.5);
    res->ttft_p90_s = pct(ttft, n_ttft, 0.9);
    res->ttft_p99_s = pct(ttft, n_ttft, 0.99);
    res->tbt_p50_s  = pct(tbt, n_tbt, 0.5);
    res->tbt_p90_s  = pct(tbt, n_tbt, 0.9);
    res->tbt_p99_s  = pct(tbt, n_tbt, 0.99);
    res->makespan_s = s->now;
    res->events     = s->events;
    dango__conductor_replica_ranks(s->c, ranks, res->replicas_top, 3);
}

/* ---------- public API ---------- */

void dango_conductor_sim_params_init(dango_conductor_sim_params_t *p)
{
    memset(p, 0, sizeof(*p));
    p->prefill          = 8;
    p->decode           = 8;
    p->cache_blocks     = 5859; /* 3M tokens of DRAM per node */
    p->speed            = 1.0;
    p->ttft_threshold_s = 30.0;
    dango_conductor_params_init(&p->sched);
    p->sched.field_mask = ~0ull & ~(uint64_t)DANGO_CONDUCTOR_PARAM_REPLICATE_CB;
}

int dango_conductor_sim_run(const dango_conductor_trace_t      *t,
                            const dango_conductor_sim_params_t *p,
                            dango_conductor_sim_result_t       *res)
{
    dango_conductor_params_t sp;
    sim_t                    s;
    size_t                   n, *order = NULL, next = 0;
    int                      id_to_prefill[DANGO_CONDUCTOR_MAX_INSTANCES];
    int                      id_to_decode[DANGO_CONDUCTOR_MAX_INSTANCES];
    double                  *ttft = NULL, *tbt = NULL;
    uint64_t                 step;
    int                      rc;

    if ((t == NULL) || (p == NULL) || (res == NULL) || (p->prefill == 0) ||
        (p->prefill > 128) || (p->decode == 0) || (p->decode > 128) ||
        !(p->speed > 0) || !(p->ttft_threshold_s > 0)) {
        return DANGO_EINVAL;
    }

    memset(&s, 0, sizeof(s));
    memset(res, 0, sizeof(*res));
    s.t        = t;
    s.p        = p;
    n          = dango_conductor_trace_count(t);
    sp         = p->sched;
    sp.predict = 0;
    sp.field_mask |= DANGO_CONDUCTOR_PARAM_PREDICT;
    sp.field_mask &= ~(uint64_t)DANGO_CONDUCTOR_PARAM_REPLICATE_CB;
    rc = dango_conductor_create(&sp, &s.c);
    if (rc != 0) {
        return rc;
    }

    s.reqs        = dango_calloc(n, sizeof(*s.reqs), "sim_reqs");
    s.dec         = dango_calloc(p->decode, sizeof(*s.dec), "sim_decode");
    s.prefill_ids = dango_calloc(p->prefill, sizeof(int), "sim_prefill");
    order         = dango_malloc(n * sizeof(*order), "sim_order");
    ttft          = dango_malloc(n * sizeof(double), "sim_ttft");
    tbt           = dango_malloc(n * sizeof(double), "sim_tbt");
    if ((s.reqs == NULL) || (s.dec == NULL) || (s.prefill_ids == NULL) ||
        (order == NULL) || (ttft == NULL) || (tbt == NULL)) {
        rc = DANGO_ENOMEM;
        goto out;
    }

    for (unsigned i = 0; i < p->prefill; i++) {
        char name[32];

        snprintf(name, sizeof(name), "prefill-%u", i);
        rc =
            dango_conductor_instance_add(s.c, name, DANGO_CONDUCTOR_PREFILL,
                                         p->cache_blocks, 0, &s.prefill_ids[i]);
        if (rc != 0) {
            goto out;
        }
        id_to_prefill[s.prefill_ids[i]] = (int)i;
    }
    for (unsigned i = 0; i < p->decode; i++) {
        char name[32];

        snprintf(name, sizeof(name), "decode-%u", i);
        rc = dango_conductor_instance_add(s.c, name, DANGO_CONDUCTOR_DECODE, 0,
                                          0, &s.dec[i].id);
        if (rc != 0) {
            goto out;
        }
        id_to_decode[s.dec[i].id] = (int)i;
    }

    for (size_t i = 0; i < n; i++) {
        order[i] = i;
    }
    qsort_r(order, n, sizeof(*order), cmp_arrival, (void *)t);

    res->requests = n;
    step          = DANGO_MAX((uint64_t)n / 100, (uint64_t)1);
    for (next = 0; next < n; next++) {
        dango_conductor_trace_req_t tr;
        size_t                      ri = order[next];
        double                      at;

        dango_conductor_trace_get(t, ri, &tr);
        at = tr.timestamp_ms / 1000.0 / p->speed;
        while ((s.n_heap > 0) && (s.heap[0].t <= at)) {
            sim_event_t e = ev_pop(&s);

            rc = run_event(&s, &e);
            if (rc != 0) {
                goto out;
            }
        }

        s.now              = DANGO_MAX(s.now, at);
        s.reqs[ri].arrival = at;
        rc = on_arrival(&s, ri, res, id_to_prefill, id_to_decode);
        if (rc != 0) {
            goto out;
        }
        if ((p->progress != NULL) && ((next + 1) % step == 0)) {
            p->progress(p->progress_arg, next + 1, n);
        }
    }

    /* Drain: every accepted request finishes (bounded: each event either
     * ends a request's phase or emits a token of a finite output). */
    while (s.n_heap > 0) {
        sim_event_t e = ev_pop(&s);

        rc = run_event(&s, &e);
        if (rc != 0) {
            goto out;
        }
    }

    summarize(&s, n, ttft, tbt, res);

out:
    if (s.reqs != NULL) {
        for (size_t i = 0; i < n; i++) {
            dango_free(s.reqs[i].top);
        }
    }
    if (s.dec != NULL) {
        for (unsigned i = 0; i < p->decode; i++) {
            dango_free(s.dec[i].active);
            dango_free(s.dec[i].wait);
        }
    }
    dango_free(s.reqs);
    dango_free(s.dec);
    dango_free(s.prefill_ids);
    dango_free(s.heap);
    dango_free(order);
    dango_free(ttft);
    dango_free(tbt);
    dango_conductor_destroy(s.c);
    return rc;
}
