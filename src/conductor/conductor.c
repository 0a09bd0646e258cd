/*
 * The scheduler: instances, the global KV index and Algorithm 1.
 *
 * DESIGN
 * Every prefill instance has an LRU model of the blocks it holds (its
 * capacity in blocks, or unbounded when KV events are the only truth). The
 * global index maps each block key to the set of prefill instances holding
 * it (a 256-bit set), kept in step with the models: a store or an access
 * adds the instance's bit, an eviction (the LRU's callback) or a removal
 * clears it. One walk of the request's keys through the index gives the
 * longest prefix match of every instance at once: the set of instances
 * still matching is intersected with each key's holders, and an instance's
 * match ends where it drops out. A decision for 16 instances is therefore
 * one hash lookup per matched block plus 16 cost evaluations, a few
 * microseconds.
 *
 * Algorithm 1 (spec conductor.md A.2) runs over the prefill instances in id
 * order: with GLOBAL an instance whose own prefix is shorter than the best
 * one by more than the balancing threshold plans to fetch the difference
 * from the holder (T_transfer), every instance adds its predicted queue and
 * prefill time, and the minimum TTFT wins (lowest id on ties). The decode
 * instance is the one with the smallest predicted iteration time
 * t0 + t_kv * (K + n) whose VRAM still fits the request. A prediction above
 * a set SLO rejects the request before any work is done.
 *
 * decide() only reads (plus counters and the RANDOM generator); commit()
 * applies: the prefill queue grows, the fetch is handed to the replicate
 * callback (hotspot replication: the fetched blocks are then held by both
 * instances), and with params.predict the request's blocks are recorded on
 * the prefill instance and its context reserved on the decode instance
 * until released or until its predicted end plus a grace period.
 */
#include "conductor/conductor_int.h"

#include <math.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"

DANGO_LOG_COMPONENT_DEFINE(dango__conductor_log, "conductor");

/* Layers of the model whose KV streams to the decode instance. */
#define CD_INDEX_POOL_CHUNK 1024

/* ---------- private functions ---------- */

static cd_index_entry_t *index_find(const dango_conductor_t *c, uint64_t key)
{
    dango_hmap_node_t *n;

    n = dango_hmap_find(&c->index, &key, sizeof(key),
                        dango_hmap_hash(&key, sizeof(key)));
    return (n == NULL) ? NULL : dango_container_of(n, cd_index_entry_t, node);
}

static int index_add(dango_conductor_t *c, uint64_t key, int id)
{
    cd_index_entry_t *e = index_find(c, key);

    if (e == NULL) {
        e = dango_mpool_get(&c->index_pool);
        if (e == NULL) {
            return DANGO_ENOMEM;
        }
        memset(e, 0, sizeof(*e));
        e->key          = key;
        e->node.key     = &e->key;
        e->node.key_len = sizeof(e->key);
        e->node.hash    = dango_hmap_hash(&e->key, sizeof(e->key));
        dango_hmap_insert(&c->index, &e->node);
        c->st.index_keys++;
    }

    if (!cd_set_has(&e->holders, id)) {
        cd_set_add(&e->holders, id);
        e->replicas++;
        c->st.index_replicas++;
    }
    return 0;
}

static void index_del(dango_conductor_t *c, uint64_t key, int id)
{
    cd_index_entry_t *e = index_find(c, key);

    if ((e == NULL) || !cd_set_has(&e->holders, id)) {
        return;
    }

    cd_set_del(&e->holders, id);
    e->replicas--;
    c->st.index_replicas--;
    if (e->replicas == 0) {
        dango_hmap_remove(&c->index, &e->node);
        dango_mpool_put(&c->index_pool, e);
        c->st.index_keys--;
    }
}

/* An LRU model evicted @key: the instance no longer holds it. */
static void cd_evicted(void *arg, uint64_t key)
{
    cd_evict_arg_t *a = arg;

    index_del(a->c, key, a->id);
    a->c->st.kv_removed++;
}

static cd_instance_t *inst_get(const dango_conductor_t *c, int id, int role)
{
    cd_instance_t *in;

    if ((c == NULL) || (id < 0) || (id >= c->n_inst)) {
        return NULL;
    }

    in = (cd_instance_t *)&c->inst[id];
    if (!in->used || ((role >= 0) && ((int)in->role != role))) {
        return NULL;
    }
    return in;
}

static uint64_t rng_next(dango_conductor_t *c)
{
    /* xorshift64*: enough for picking instances, reproducible by seed. */
    uint64_t x = c->rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    c->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Tokens reused for a prefix of @k blocks: at least one token is always
 * computed (it produces the first output token). */
static uint64_t prefix_tokens(const dango_conductor_t *c, size_t k, uint64_t n)
{
    uint64_t t = (uint64_t)k * c->p.block_size;

    return (n == 0) ? 0 : DANGO_MIN(t, n - 1);
}

static double transfer_time(const dango_conductor_t *c, uint64_t tokens)
{
    return (double)tokens * c->p.kv_bytes_per_token / c->p.bandwidth_Bps;
}

static uint64_t decode_tokens(const cd_instance_t *in, double now_s)
{
    uint64_t k = in->load_tokens;

    for (size_t i = 0; i < in->n_resv; i++) {
        if (in->resv[i].expires_s >= now_s) {
            k += in->resv[i].tokens;
        }
    }
    return k;
}

static void resv_prune(cd_instance_t *in, double now_s)
{
    size_t i = 0;

    while (i < in->n_resv) {
        if (in->resv[i].expires_s < now_s) {
            in->reserved_tokens -= in->resv[i].tokens;
            in->resv[i] = in->resv[--in->n_resv];
        } else {
            i++;
        }
    }
}

static int params_check(const dango_conductor_params_t *p)
{
    if (!(p->threshold >= 1.0) || !(p->ttft_slo_s >= 0) ||
        !(p->tbt_slo_s >= 0) || !(p->bandwidth_Bps > 0) ||
        !(p->kv_bytes_per_token > 0) || !(p->prefill_alpha >= 0) ||
        !(p->prefill_beta >= 0) || !(p->decode_t0_s >= 0) ||
        !(p->decode_t_kv_s >= 0) || (p->decode_vram_tokens == 0) ||
        (p->block_size == 0) || (p->block_size > (1u << 20)) ||
        !(p->decode_lifetime_s > 0) ||
        ((unsigned)p->policy > DANGO_CONDUCTOR_POLICY_GLOBAL)) {
        return DANGO_EINVAL;
    }
    return 0;
}

/* ---------- public API: parameters ---------- */

void dango_conductor_params_init(dango_conductor_params_t *p)
{
    memset(p, 0, sizeof(*p));
    p->policy             = DANGO_CONDUCTOR_POLICY_GLOBAL;
    p->threshold          = 1.0;
    p->bandwidth_Bps      = 100e9;
    p->kv_bytes_per_token = 327680.0;
    p->prefill_alpha      = 1.162e-4;
    p->prefill_beta       = 7.14e-10;
    p->decode_t0_s        = 0.026;
    p->decode_t_kv_s      = 3.3e-8;
    p->decode_vram_tokens = 1300000;
    p->block_size         = DANGO_CONDUCTOR_BLOCK_SIZE;
    p->seed               = 1;
    p->predict            = 1;
    p->decode_lifetime_s  = 60.0;
}

const char *dango_conductor_policy_name(dango_conductor_policy_t p)
{
    static const char *const names[] = {"random", "load", "local", "global"};

    return ((unsigned)p < DANGO_ARRAY_SIZE(names)) ? names[p] : "unknown";
}

int dango_conductor_policy_parse(const char *name, dango_conductor_policy_t *p)
{
    if ((name == NULL) || (p == NULL)) {
        return DANGO_EINVAL;
    }

    for (unsigned i = 0; i <= DANGO_CONDUCTOR_POLICY_GLOBAL; i++) {
        if (strcasecmp(name, dango_conductor_policy_name(i)) == 0) {
            *p = (dango_conductor_policy_t)i;
            return 0;
        }
    }
    return DANGO_EINVAL;
}

const char *dango_conductor_reject_name(dango_conductor_reject_t r)
{
    static const char *const names[] = {"", "ttft_slo", "tbt_slo",
                                        "decode_vram"};

    return ((unsigned)r < DANGO_ARRAY_SIZE(names)) ? names[r] : "unknown";
}

/* ---------- public API: lifecycle and instances ---------- */

int dango_conductor_create(const dango_conductor_params_t *params,
                           dango_conductor_t             **c_p)
{
    dango_conductor_params_t p;
    dango_conductor_t       *c;
    uint64_t                 m;
    int                      rc;

    if (c_p == NULL) {
        return DANGO_EINVAL;
    }

    dango_conductor_params_init(&p);
    if (params != NULL) {
        m = params->field_mask;
#define CD_TAKE(_bit, _field)                                                  \
    if (m & DANGO_CONDUCTOR_PARAM_##_bit) {                                    \
        p._field = params->_field;                                             \
    }
        CD_TAKE(POLICY, policy)
        CD_TAKE(THRESHOLD, threshold)
        CD_TAKE(TTFT_SLO, ttft_slo_s)
        CD_TAKE(TBT_SLO, tbt_slo_s)
        CD_TAKE(BANDWIDTH, bandwidth_Bps)
        CD_TAKE(KV_BYTES, kv_bytes_per_token)
        CD_TAKE(PREFILL_MODEL, prefill_alpha)
        CD_TAKE(PREFILL_MODEL, prefill_beta)
        CD_TAKE(DECODE_MODEL, decode_t0_s)
        CD_TAKE(DECODE_MODEL, decode_t_kv_s)
        CD_TAKE(DECODE_MODEL, decode_vram_tokens)
        CD_TAKE(BLOCK_SIZE, block_size)
        CD_TAKE(SEED, seed)
        CD_TAKE(PREDICT, predict)
        CD_TAKE(DECODE_LIFETIME, decode_lifetime_s)
        CD_TAKE(REPLICATE_CB, replicate_cb)
        CD_TAKE(REPLICATE_CB, replicate_arg)
#undef CD_TAKE
        p.field_mask = m;
    }

    rc = params_check(&p);
    if (rc != 0) {
        dango_error("conductor: parameter out of range (threshold >= 1, "
                    "times >= 0, bandwidth, kv size, vram and block size "
                    "> 0, known policy)");
        return rc;
    }

    c = dango_calloc(1, sizeof(*c), "conductor");
    if (c == NULL) {
        return DANGO_ENOMEM;
    }

    rc = dango_hmap_init(&c->index, 0);
    if (rc != 0) {
        dango_free(c);
        return rc;
    }

    dango_mpool_init(&c->index_pool, sizeof(cd_index_entry_t),
                     CD_INDEX_POOL_CHUNK, 0, "conductor_index");
    c->p   = p;
    c->rng = (p.seed == 0) ? 0x9E3779B97F4A7C15ull : p.seed;
    *c_p   = c;
    return 0;
}

void dango_conductor_destroy(dango_conductor_t *c)
{
    if (c == NULL) {
        return;
    }

    for (int i = 0; i < c->n_inst; i++) {
        if (c->inst[i].used) {
            dango_conductor_lru_destroy(c->inst[i].lru);
            dango_free(c->inst[i].resv);
        }
    }

    dango_hmap_cleanup(&c->index);
    dango_mpool_cleanup(&c->index_pool);
    dango_free(c);
}

const dango_conductor_params_t *
dango_conductor_params(const dango_conductor_t *c)
{
    return &c->p;
}

int dango_conductor_instance_add(dango_conductor_t *c, const char *name,
                                 dango_conductor_role_t role,
                                 size_t cache_blocks, uint64_t vram_tokens,
                                 int *id_p)
{
    cd_instance_t *in = NULL;
    size_t         len;
    int            id = -1, rc;

    if ((c == NULL) || (name == NULL) || (id_p == NULL) ||
        ((role != DANGO_CONDUCTOR_PREFILL) &&
         (role != DANGO_CONDUCTOR_DECODE))) {
        return DANGO_EINVAL;
    }

    len = strlen(name);
    if ((len == 0) || (len >= DANGO_CONDUCTOR_NAME_MAX)) {
        return DANGO_EINVAL;
    }
    if (dango_conductor_instance_find(c, name) >= 0) {
        return DANGO_EEXIST;
    }

    for (int i = 0; i < DANGO_CONDUCTOR_MAX_INSTANCES; i++) {
        if (!c->inst[i].used) {
            id = i;
            break;
        }
    }
    if (id < 0) {
        return DANGO_ENOSPC;
    }

    in = &c->inst[id];
    memset(in, 0, sizeof(*in));
    in->id   = id;
    in->role = role;
    memcpy(in->name, name, len + 1);
    if (role == DANGO_CONDUCTOR_PREFILL) {
        c->evict_arg[id].c  = c;
        c->evict_arg[id].id = id;
        rc = dango_conductor_lru_create(cache_blocks, cd_evicted,
                                        &c->evict_arg[id], &in->lru);
        if (rc != 0) {
            return rc;
        }
        cd_set_add(&c->prefill_set, id);
        c->n_prefill++;
    } else {
        in->vram_tokens =
            (vram_tokens == 0) ? c->p.decode_vram_tokens : vram_tokens;
        c->n_decode++;
    }

    in->used = 1;
    if (id >= c->n_inst) {
        c->n_inst = id + 1;
    }

    dango_debug("conductor: %s instance %s added as %d",
                (role == DANGO_CONDUCTOR_PREFILL) ? "prefill" : "decode", name,
                id);
    *id_p = id;
    return 0;
}

int dango_conductor_instance_remove(dango_conductor_t *c, int id)
{
    cd_instance_t *in = inst_get(c, id, -1);

    if (in == NULL) {
        return DANGO_ENOENT;
    }

    if (in->role == DANGO_CONDUCTOR_PREFILL) {
        dango_conductor_lru_clear(in->lru, 1);
        dango_conductor_lru_destroy(in->lru);
        cd_set_del(&c->prefill_set, id);
        c->n_prefill--;
    } else {
        dango_free(in->resv);
        c->n_decode--;
    }

    memset(in, 0, sizeof(*in));
    while ((c->n_inst > 0) && !c->inst[c->n_inst - 1].used) {
        c->n_inst--;
    }
    return 0;
}

int dango_conductor_instance_find(const dango_conductor_t *c, const char *name)
{
    if ((c == NULL) || (name == NULL)) {
        return DANGO_ENOENT;
    }

    for (int i = 0; i < c->n_inst; i++) {
        if (c->inst[i].used && (strcmp(c->inst[i].name, name) == 0)) {
            return i;
        }
    }
    return DANGO_ENOENT;
}

int dango_conductor_instance_info(const dango_conductor_t *c, int id,
                                  dango_conductor_instance_info_t *info)
{
    const cd_instance_t *in = inst_get(c, id, -1);

    if ((in == NULL) || (info == NULL)) {
        return DANGO_ENOENT;
    }

    memset(info, 0, sizeof(*info));
    info->name     = in->name;
    info->role     = in->role;
    info->requests = in->requests;
    if (in->role == DANGO_CONDUCTOR_PREFILL) {
        info->cache_capacity = dango_conductor_lru_capacity(in->lru);
        info->cached_blocks  = dango_conductor_lru_count(in->lru);
        info->busy_until_s   = in->busy_until_s;
    } else {
        info->decode_tokens = in->load_tokens + in->reserved_tokens;
    }
    return 0;
}

int dango_conductor_decode_load_set(dango_conductor_t *c, int id,
                                    uint64_t tokens)
{
    cd_instance_t *in = inst_get(c, id, DANGO_CONDUCTOR_DECODE);

    if (in == NULL) {
        return DANGO_ENOENT;
    }

    in->load_tokens = tokens;
    return 0;
}

int dango_conductor_decode_release(dango_conductor_t *c, int id,
                                   uint64_t tokens)
{
    cd_instance_t *in = inst_get(c, id, DANGO_CONDUCTOR_DECODE);

    if (in == NULL) {
        return DANGO_ENOENT;
    }

    for (size_t i = 0; i < in->n_resv; i++) {
        if (in->resv[i].tokens == tokens) {
            in->reserved_tokens -= tokens;
            in->resv[i] = in->resv[--in->n_resv];
            return 0;
        }
    }
    return DANGO_ENOENT;
}

/* ---------- public API: KV events ---------- */

int dango_conductor_kv_stored(dango_conductor_t *c, int id,
                              const uint64_t *keys, size_t n)
{
    cd_instance_t *in = inst_get(c, id, DANGO_CONDUCTOR_PREFILL);
    int            rc;

    if (in == NULL) {
        return DANGO_ENOENT;
    }
    if ((keys == NULL) && (n > 0)) {
        return DANGO_EINVAL;
    }

    rc = dango_conductor_lru_access(in->lru, keys, n, 0);
    /* The model may have evicted some of these keys again (capacity below
     * n): index only what it holds. */
    for (size_t i = 0; i < n; i++) {
        if (dango_conductor_lru_contains(in->lru, keys[i])) {
            int rc2 = index_add(c, keys[i], id);

            rc = (rc == 0) ? rc2 : rc;
        }
    }

    c->st.kv_stored += n;
    return rc;
}

int dango_conductor_kv_removed(dango_conductor_t *c, int id,
                               const uint64_t *keys, size_t n)
{
    cd_instance_t *in = inst_get(c, id, DANGO_CONDUCTOR_PREFILL);

    if (in == NULL) {
        return DANGO_ENOENT;
    }
    if ((keys == NULL) && (n > 0)) {
        return DANGO_EINVAL;
    }

    for (size_t i = 0; i < n; i++) {
        if (dango_conductor_lru_remove(in->lru, keys[i]) == 0) {
            index_del(c, keys[i], id);
            c->st.kv_removed++;
        }
    }
    return 0;
}

int dango_conductor_kv_cleared(dango_conductor_t *c, int id)
{
    cd_instance_t *in = inst_get(c, id, DANGO_CONDUCTOR_PREFILL);

    if (in == NULL) {
        return DANGO_ENOENT;
    }

    dango_conductor_lru_clear(in->lru, 1);
    return 0;
}

int dango_conductor_kv_pin(dango_conductor_t *c, int id, const uint64_t *keys,
                           size_t n, int delta)
{
    cd_instance_t *in = inst_get(c, id, DANGO_CONDUCTOR_PREFILL);

    if (in == NULL) {
        return DANGO_ENOENT;
    }
    if ((keys == NULL) && (n > 0)) {
        return DANGO_EINVAL;
    }

    dango_conductor_lru_pin(in->lru, keys, n, delta);
    return 0;
}

long dango_conductor_match(const dango_conductor_t *c, int id,
                           const uint64_t *keys, size_t n)
{
    const cd_instance_t *in = inst_get(c, id, DANGO_CONDUCTOR_PREFILL);

    if (in == NULL) {
        return DANGO_ENOENT;
    }
    return (long)dango_conductor_lru_match(in->lru, keys, n);
}

unsigned dango_conductor_replicas(const dango_conductor_t *c, uint64_t key)
{
    const cd_index_entry_t *e = (c == NULL) ? NULL : index_find(c, key);

    return (e == NULL) ? 0 : e->replicas;
}

void dango__conductor_replica_ranks(const dango_conductor_t *c,
                                    const size_t *ranks, unsigned *out,
                                    size_t n)
{
    uint64_t           hist[DANGO_CONDUCTOR_MAX_INSTANCES + 1] = {0};
    dango_hmap_iter_t  it;
    dango_hmap_node_t *node;

    dango_hmap_iter_begin((dango_hmap_t *)&c->index, &it);
    while ((node = dango_hmap_iter_next(&it)) != NULL) {
        const cd_index_entry_t *e =
            dango_container_of(node, cd_index_entry_t, node);

        hist[DANGO_MIN(e->replicas, (unsigned)DANGO_CONDUCTOR_MAX_INSTANCES)]++;
    }
    dango_hmap_iter_end(&it);

    /* The rank-th largest count: walk the histogram from the top. */
    for (size_t i = 0; i < n; i++) {
        uint64_t seen = 0;

        out[i] = 0;
        for (int r = DANGO_CONDUCTOR_MAX_INSTANCES; r > 0; r--) {
            seen += hist[r];
            if (seen >= ranks[i]) {
                out[i] = (unsigned)r;
                break;
            }
        }
    }
}

/* ---------- public API: scheduling ---------- */

double dango_conductor_prefill_time(const dango_conductor_t *c, uint64_t n,
                                    uint64_t p)
{
    double dn = (double)n, dp = (double)DANGO_MIN(p, n);

    return c->p.prefill_alpha * (dn - dp) +
           c->p.prefill_beta * (dn * dn - dp * dp);
}

int dango_conductor_decide(dango_conductor_t               *c,
                           const dango_conductor_request_t *req, double now_s,
                           dango_conductor_decision_t *dec)
{
    size_t   match[DANGO_CONDUCTOR_MAX_INSTANCES];
    cd_set_t alive;
    size_t   i, best = 0, n_keys;
    uint64_t n, out, max_blocks;
    int      best_inst = -1, any;
    double   best_ttft = INFINITY, best_tbt = INFINITY;
    int      pick = -1, dpick = -1, dmin = -1;
    uint64_t dmin_k = UINT64_MAX;

    if ((c == NULL) || (req == NULL) || (dec == NULL) ||
        ((req->keys == NULL) && (req->n_keys > 0)) ||
        (req->n_keys > DANGO_CONDUCTOR_MAX_BLOCKS) ||
        (req->input_tokens == 0)) {
        return DANGO_EINVAL;
    }

    n          = req->input_tokens;
    out        = (req->output_tokens == 0) ? 1 : req->output_tokens;
    n_keys     = req->n_keys;
    max_blocks = (n + c->p.block_size - 1) / c->p.block_size;
    if (n_keys > max_blocks) {
        return DANGO_EINVAL;
    }
    if ((c->n_prefill == 0) || (c->n_decode == 0)) {
        return DANGO_ENOENT;
    }

    memset(dec, 0, sizeof(*dec));
    dec->decode        = -1;
    dec->best_instance = -1;
    dec->transfer_from = -1;
    c->st.decisions++;

    /* Longest prefix of every prefill instance in one walk of the index. */
    alive = c->prefill_set;
    for (i = 0; i < n_keys; i++) {
        const cd_index_entry_t *e = index_find(c, req->keys[i]);
        cd_set_t                next;

        any = 0;
        for (int w = 0; w < CD_SET_WORDS; w++) {
            uint64_t dropped;

            next.w[w] = (e == NULL) ? 0 : (alive.w[w] & e->holders.w[w]);
            dropped   = alive.w[w] & ~next.w[w];
            while (dropped != 0) {
                match[w * 64 + __builtin_ctzll(dropped)] = i;
                dropped &= dropped - 1;
            }
            any |= (next.w[w] != 0);
        }
        alive = next;
        if (!any) {
            i++;
            break;
        }
    }
    for (int w = 0; w < CD_SET_WORDS; w++) {
        uint64_t rest = alive.w[w];

        while (rest != 0) {
            match[w * 64 + __builtin_ctzll(rest)] = i;
            rest &= rest - 1;
        }
    }

    for (int id = 0; id < c->n_inst; id++) {
        if (cd_set_has(&c->prefill_set, id) && (match[id] > best)) {
            best      = match[id];
            best_inst = id;
        }
    }
    dec->best_blocks   = best;
    dec->best_instance = best_inst;

    if (c->p.policy == DANGO_CONDUCTOR_POLICY_RANDOM) {
        uint64_t r = rng_next(c) % c->n_prefill;

        for (int id = 0; id < c->n_inst; id++) {
            if (cd_set_has(&c->prefill_set, id) && (r-- == 0)) {
                pick = id;
                break;
            }
        }
    }

    for (int id = 0; id < c->n_inst; id++) {
        const cd_instance_t *in = &c->inst[id];
        size_t               local, prefix;
        double               queue, xfer = 0, pre, ttft;

        if (!cd_set_has(&c->prefill_set, id) ||
            ((pick >= 0) && (c->p.policy == DANGO_CONDUCTOR_POLICY_RANDOM) &&
             (id != pick))) {
            continue;
        }

        local  = match[id];
        prefix = local;
        queue  = DANGO_MAX(0.0, in->busy_until_s - now_s);
        if ((c->p.policy == DANGO_CONDUCTOR_POLICY_GLOBAL) &&
            ((double)best > c->p.threshold * (double)local)) {
            prefix = best;
            xfer   = transfer_time(c, prefix_tokens(c, best, n) -
                                          prefix_tokens(c, local, n));
        }
        pre  = dango_conductor_prefill_time(c, n, prefix_tokens(c, prefix, n));
        ttft = (c->p.policy == DANGO_CONDUCTOR_POLICY_LOAD)
                   ? queue
                   : xfer + queue + pre;
        if (ttft < best_ttft) {
            best_ttft            = ttft;
            dec->prefill         = id;
            dec->local_blocks    = local;
            dec->prefix_blocks   = prefix;
            dec->queue_s         = queue;
            dec->transfer_s      = xfer;
            dec->prefill_s       = pre;
            dec->transfer_blocks = prefix - local;
            dec->transfer_from   = (prefix > local) ? best_inst : -1;
        }
    }
    dec->prefix_tokens = prefix_tokens(c, dec->prefix_blocks, n);
    dec->ttft_s        = dec->queue_s + dec->transfer_s + dec->prefill_s;

    /* Decode: smallest predicted iteration time that fits in VRAM. */
    for (int id = 0; id < c->n_inst; id++) {
        const cd_instance_t *in = &c->inst[id];
        uint64_t             k;
        double               tbt;

        if (!in->used || (in->role != DANGO_CONDUCTOR_DECODE)) {
            continue;
        }

        k = decode_tokens(in, now_s);
        if (k < dmin_k) {
            dmin_k = k;
            dmin   = id;
        }
        if (k + n + out > in->vram_tokens) {
            continue;
        }
        tbt = c->p.decode_t0_s + c->p.decode_t_kv_s * (double)(k + n);
        if (tbt < best_tbt) {
            best_tbt = tbt;
            dpick    = id;
        }
    }

    if (dpick < 0) {
        dec->decode = dmin;
        dec->tbt_s =
            c->p.decode_t0_s + c->p.decode_t_kv_s * (double)(dmin_k + n);
        dec->reject = DANGO_CONDUCTOR_REJECT_VRAM;
    } else {
        dec->decode = dpick;
        dec->tbt_s  = best_tbt;
        if ((c->p.ttft_slo_s > 0) && (dec->ttft_s > c->p.ttft_slo_s)) {
            dec->reject = DANGO_CONDUCTOR_REJECT_TTFT;
        } else if ((c->p.tbt_slo_s > 0) && (dec->tbt_s > c->p.tbt_slo_s)) {
            dec->reject = DANGO_CONDUCTOR_REJECT_TBT;
        }
    }

    if (dec->reject != DANGO_CONDUCTOR_ACCEPT) {
        c->st.rejected[dec->reject]++;
    }
    return 0;
}

int dango_conductor_commit(dango_conductor_t                *c,
                           const dango_conductor_request_t  *req,
                           const dango_conductor_decision_t *dec, double now_s)
{
    cd_instance_t *p, *d;
    int            rc = 0;

    if ((c == NULL) || (req == NULL) || (dec == NULL) ||
        (dec->reject != DANGO_CONDUCTOR_ACCEPT) ||
        ((req->keys == NULL) && (req->n_keys > 0)) ||
        (dec->prefix_blocks > req->n_keys)) {
        return DANGO_EINVAL;
    }

    p = inst_get(c, dec->prefill, DANGO_CONDUCTOR_PREFILL);
    d = inst_get(c, dec->decode, DANGO_CONDUCTOR_DECODE);
    if ((p == NULL) || (d == NULL)) {
        return DANGO_EINVAL;
    }

    p->busy_until_s =
        DANGO_MAX(now_s, p->busy_until_s) + dec->transfer_s + dec->prefill_s;
    p->requests++;
    d->requests++;
    c->st.accepted++;
    c->st.matched_blocks += dec->prefix_blocks;
    c->st.request_blocks += req->n_keys;

    if (dec->transfer_blocks > 0) {
        c->st.transfers++;
        c->st.transfer_blocks += dec->transfer_blocks;
        if (c->p.replicate_cb != NULL) {
            c->p.replicate_cb(c->p.replicate_arg, dec->transfer_from,
                              dec->prefill, req->keys + dec->local_blocks,
                              dec->transfer_blocks);
        }
    }

    if (c->p.predict) {
        uint64_t out = (req->output_tokens == 0) ? 1 : req->output_tokens;

        resv_prune(d, now_s);
        if (d->n_resv == d->cap_resv) {
            size_t            cap = (d->cap_resv == 0) ? 16 : d->cap_resv * 2;
            cd_reservation_t *r;

            r = dango_realloc(d->resv, cap * sizeof(*r), "conductor_resv");
            if (r == NULL) {
                return DANGO_ENOMEM;
            }
            d->resv     = r;
            d->cap_resv = cap;
        }
        d->resv[d->n_resv].tokens    = req->input_tokens + out;
        d->resv[d->n_resv].expires_s = now_s + dec->ttft_s +
                                       (double)out * dec->tbt_s +
                                       c->p.decode_lifetime_s;
        d->n_resv++;
        d->reserved_tokens += req->input_tokens + out;
        rc = dango_conductor_kv_stored(c, dec->prefill, req->keys, req->n_keys);
    }
    return rc;
}

int dango_conductor_schedule(dango_conductor_t               *c,
                             const dango_conductor_request_t *req, double now_s,
                             dango_conductor_decision_t *dec)
{
    int rc = dango_conductor_decide(c, req, now_s, dec);

    if ((rc != 0) || (dec->reject != DANGO_CONDUCTOR_ACCEPT)) {
        return rc;
    }
    return dango_conductor_commit(c, req, dec, now_s);
}

void dango_conductor_stats(const dango_conductor_t *c,
                           dango_conductor_stats_t *st)
{
    *st = c->st;
}
