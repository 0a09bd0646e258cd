/*
 * Options of the conductor (CONDUCTOR_*): the service's listen address and
 * limits, the policy, the SLOs and the cost model (defaults from spec
 * conductor.md A.3 and A.6). Every option is a DANGO_CONDUCTOR_* variable
 * and a dango-conductor flag.
 */
#include <stddef.h>

#include "conductor/conductor_int.h"
#include "common/time.h"

static const dango_config_field_t conductor_config_fields[] = {
    {"LISTEN", "127.0.0.1:13333",
     "HTTP address host:port of dango-conductor (port 0: any)",
     offsetof(cd_config_t, listen), DANGO_CFG_STRING},
    {"POLICY", "global",
     "prefill choice: random, load (least queue), local (Algorithm 1 "
     "without transfers) or global (Algorithm 1)",
     offsetof(cd_config_t, policy), DANGO_CFG_STRING},
    {"THRESHOLD", "1.0",
     "kvcache_balancing_threshold: fetch a remote prefix only when it is "
     "longer than this times the local one (>= 1)",
     offsetof(cd_config_t, threshold), DANGO_CFG_DOUBLE},
    {"TTFT_SLO", "30s",
     "reject (HTTP 429) a request whose predicted TTFT is above this; 0: "
     "never",
     offsetof(cd_config_t, ttft_slo), DANGO_CFG_TIME},
    {"TBT_SLO", "100ms",
     "reject a request whose predicted time between tokens is above this; "
     "0: never",
     offsetof(cd_config_t, tbt_slo), DANGO_CFG_TIME},
    {"BANDWIDTH", "100",
     "KV transfer bandwidth between instances in GB/s (800 Gbps = 100)",
     offsetof(cd_config_t, bandwidth_gbps), DANGO_CFG_DOUBLE},
    {"KV_BYTES_PER_TOKEN", "327680",
     "KV cache bytes of one token (LLaMA3-70B BF16: 320 KiB)",
     offsetof(cd_config_t, kv_bytes_per_token), DANGO_CFG_SIZE},
    {"PREFILL_ALPHA", "1.162e-4",
     "prefill time alpha*(n-p) + beta*(n^2-p^2) s: alpha (s/token)",
     offsetof(cd_config_t, prefill_alpha), DANGO_CFG_DOUBLE},
    {"PREFILL_BETA", "7.14e-10", "prefill time: beta (s/token^2)",
     offsetof(cd_config_t, prefill_beta), DANGO_CFG_DOUBLE},
    {"DECODE_T0", "26ms",
     "decode iteration time t0 + t_kv*K (K context tokens in the batch): t0",
     offsetof(cd_config_t, decode_t0), DANGO_CFG_TIME},
    {"DECODE_T_KV", "3.3e-8", "decode iteration time: t_kv (s/token)",
     offsetof(cd_config_t, decode_t_kv), DANGO_CFG_DOUBLE},
    {"DECODE_VRAM_TOKENS", "1300000",
     "context tokens a decode instance holds unless it registers its own",
     offsetof(cd_config_t, decode_vram_tokens), DANGO_CFG_UINT},
    {"BLOCK_SIZE", "512", "tokens per KV block (hashing and matching)",
     offsetof(cd_config_t, block_size), DANGO_CFG_UINT},
    {"SEED", "0", "seed of the block hashes (XXH3) and of the random policy",
     offsetof(cd_config_t, seed), DANGO_CFG_UINT},
    {"PREDICT", "yes",
     "record a scheduled request's blocks on its prefill instance and "
     "reserve its context on the decode instance without waiting for "
     "events",
     offsetof(cd_config_t, predict), DANGO_CFG_BOOL},
    {"DECODE_LIFETIME", "60s",
     "a decode reservation not released by /complete lapses this long "
     "after its predicted end",
     offsetof(cd_config_t, decode_lifetime), DANGO_CFG_TIME},
    {"MAX_TOKENS", "2097152",
     "longest request in tokens; longer ones get HTTP 413",
     offsetof(cd_config_t, max_tokens), DANGO_CFG_UINT},
    {"MAX_BODY", "32m", "largest HTTP request body; larger ones get 413",
     offsetof(cd_config_t, max_body), DANGO_CFG_SIZE},
    {"MAX_INSTANCES", "256", "most registered instances (1..256)",
     offsetof(cd_config_t, max_instances), DANGO_CFG_UINT},
    {"STORE_MASTER", "",
     "store master host:port: hot blocks the scheduler moves are copied "
     "there to the destination instance's node (empty: only counted)",
     offsetof(cd_config_t, store_master), DANGO_CFG_STRING},
    {"STORE_KEY_PREFIX", "",
     "store key of block h: this prefix and h as 16 lowercase hex digits "
     "(as store nodes publish KV events with STORE_KV_EVENTS_PREFIX)",
     offsetof(cd_config_t, store_key_prefix), DANGO_CFG_STRING},
    {"REPLICATE_QUEUE", "1024",
     "replication jobs waiting at most; more are dropped and their blocks "
     "taken back out of the index",
     offsetof(cd_config_t, replicate_queue), DANGO_CFG_UINT},
    {NULL, NULL, NULL, 0, DANGO_CFG_STRING}};

dango_config_table_t dango__conductor_config_table = {
    "CONDUCTOR", "conductor (KVCache-aware scheduler)", conductor_config_fields,
    NULL};

DANGO_CONFIG_REGISTER_TABLE(dango__conductor_config_table)

int dango__conductor_config_load(const dango_config_t *cfg, cd_config_t *c)
{
    dango_conductor_policy_t pol;
    int rc = dango__config_parse(cfg, &dango__conductor_config_table, c);

    if (rc != 0) {
        return rc;
    }

    if (dango_conductor_policy_parse(c->policy, &pol) != 0) {
        dango_error("conductor: CONDUCTOR_POLICY '%s' is none of random, "
                    "load, local, global",
                    c->policy);
        goto err;
    }
    if (!(c->threshold >= 1.0) || (c->threshold > 1e9)) {
        dango_error("conductor: CONDUCTOR_THRESHOLD must be >= 1");
        goto err;
    }
    if (!(c->bandwidth_gbps > 0) || (c->bandwidth_gbps > 1e6)) {
        dango_error("conductor: CONDUCTOR_BANDWIDTH must be in (0, 1e6] GB/s");
        goto err;
    }
    if ((c->kv_bytes_per_token == 0) || !(c->prefill_alpha >= 0) ||
        !(c->prefill_beta >= 0) || !(c->decode_t_kv >= 0)) {
        dango_error("conductor: cost model values must be >= 0 (KV bytes "
                    "> 0)");
        goto err;
    }
    if (c->decode_vram_tokens == 0) {
        dango_error("conductor: CONDUCTOR_DECODE_VRAM_TOKENS is 0");
        goto err;
    }
    if ((c->block_size == 0) || (c->block_size > (1u << 20))) {
        dango_error("conductor: CONDUCTOR_BLOCK_SIZE out of range "
                    "(1..1048576)");
        goto err;
    }
    if (c->decode_lifetime == 0) {
        dango_error("conductor: CONDUCTOR_DECODE_LIFETIME is 0");
        goto err;
    }
    if ((c->max_tokens == 0) ||
        (c->max_tokens / c->block_size > DANGO_CONDUCTOR_MAX_BLOCKS)) {
        dango_error("conductor: CONDUCTOR_MAX_TOKENS must be in 1..%lu "
                    "(%d blocks)",
                    (unsigned long)DANGO_CONDUCTOR_MAX_BLOCKS * c->block_size,
                    DANGO_CONDUCTOR_MAX_BLOCKS);
        goto err;
    }
    if (c->max_body < 1024) {
        dango_error("conductor: CONDUCTOR_MAX_BODY below 1 KiB");
        goto err;
    }
    if ((c->max_instances == 0) ||
        (c->max_instances > DANGO_CONDUCTOR_MAX_INSTANCES)) {
        dango_error("conductor: CONDUCTOR_MAX_INSTANCES out of range "
                    "(1..%d)",
                    DANGO_CONDUCTOR_MAX_INSTANCES);
        goto err;
    }
    if ((c->listen == NULL) || (c->listen[0] == '\0')) {
        dango_error("conductor: CONDUCTOR_LISTEN is empty");
        goto err;
    }
    return 0;

err:
    dango__config_free(&dango__conductor_config_table, c);
    return DANGO_ECONFIG;
}

void dango__conductor_config_free(cd_config_t *c)
{
    dango__config_free(&dango__conductor_config_table, c);
}

int dango__conductor_params_from(const cd_config_t        *cc,
                                 dango_conductor_params_t *p)
{
    dango_conductor_params_init(p);
    if (dango_conductor_policy_parse(cc->policy, &p->policy) != 0) {
        return DANGO_ECONFIG;
    }

    p->threshold          = cc->threshold;
    p->ttft_slo_s         = (double)cc->ttft_slo / 1e9;
    p->tbt_slo_s          = (double)cc->tbt_slo / 1e9;
    p->bandwidth_Bps      = cc->bandwidth_gbps * 1e9;
    p->kv_bytes_per_token = (double)cc->kv_bytes_per_token;
    p->prefill_alpha      = cc->prefill_alpha;
    p->prefill_beta       = cc->prefill_beta;
    p->decode_t0_s        = (double)cc->decode_t0 / 1e9;
    p->decode_t_kv_s      = cc->decode_t_kv;
    p->decode_vram_tokens = cc->decode_vram_tokens;
    p->block_size         = (uint32_t)cc->block_size;
    p->seed               = cc->seed;
    p->predict            = cc->predict;
    p->decode_lifetime_s  = (double)cc->decode_lifetime / 1e9;
    p->field_mask =
        DANGO_CONDUCTOR_PARAM_POLICY | DANGO_CONDUCTOR_PARAM_THRESHOLD |
        DANGO_CONDUCTOR_PARAM_TTFT_SLO | DANGO_CONDUCTOR_PARAM_TBT_SLO |
        DANGO_CONDUCTOR_PARAM_BANDWIDTH | DANGO_CONDUCTOR_PARAM_KV_BYTES |
        DANGO_CONDUCTOR_PARAM_PREFILL_MODEL |
        DANGO_CONDUCTOR_PARAM_DECODE_MODEL | DANGO_CONDUCTOR_PARAM_BLOCK_SIZE |
        DANGO_CONDUCTOR_PARAM_SEED | DANGO_CONDUCTOR_PARAM_PREDICT |
        DANGO_CONDUCTOR_PARAM_DECODE_LIFETIME;
    return 0;
}

int dango_conductor_params_from_config(const dango_config_t     *cfg,
                                       dango_conductor_params_t *p)
{
    cd_config_t cc = {0};
    int         rc;

    if (p == NULL) {
        return DANGO_EINVAL;
    }

    rc = dango__conductor_config_load(cfg, &cc);
    if (rc != 0) {
        return rc;
    }

    rc = dango__conductor_params_from(&cc, p);
    dango__conductor_config_free(&cc);
    return rc;
}
