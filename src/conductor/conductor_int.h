/*
 * Private declarations of the conductor module: the scheduler's state, the
 * global index and the option table. Unit tests may include this file.
 */
#ifndef DANGO_CONDUCTOR_INT_H
#define DANGO_CONDUCTOR_INT_H

#define DANGO_LOG_COMPONENT dango__conductor_log

#include <stdint.h>

#include <dango/conductor.h>
#include <dango/error.h>

#include "common/config_table.h"
#include "common/hmap.h"
#include "common/mpool.h"
#include <dango/log.h>

extern dango_log_component_t dango__conductor_log;

/* Words of an instance bitset. */
#define CD_SET_WORDS (DANGO_CONDUCTOR_MAX_INSTANCES / 64)

typedef struct cd_set {
    uint64_t w[CD_SET_WORDS];
} cd_set_t;

static inline void cd_set_add(cd_set_t *s, int i)
{
    s->w[i >> 6] |= 1ull << (i & 63);
}

static inline void cd_set_del(cd_set_t *s, int i)
{
    s->w[i >> 6] &= ~(1ull << (i & 63));
}

static inline int cd_set_has(const cd_set_t *s, int i)
{
    return (s->w[i >> 6] >> (i & 63)) & 1;
}

/* One key of the global index: which prefill instances hold it. */
typedef struct cd_index_entry {
    dango_hmap_node_t node;
    uint64_t          key;
    cd_set_t          holders;
    unsigned          replicas; /* popcount of holders */
} cd_index_entry_t;

/* A decode reservation made by a predicting commit. */
typedef struct cd_reservation {
    uint64_t tokens;
    double   expires_s;
} cd_reservation_t;

typedef struct cd_instance {
    int                    used;
    int                    id;
    dango_conductor_role_t role;
    char                   name[DANGO_CONDUCTOR_NAME_MAX];
    uint64_t               requests;
    /* prefill */
    dango_conductor_lru_t *lru;
    double                 busy_until_s;
    /* decode */
    uint64_t          vram_tokens;
    uint64_t          load_tokens;     /* reported */
    uint64_t          reserved_tokens; /* sum of resv[] */
    cd_reservation_t *resv;
    size_t            n_resv, cap_resv;
} cd_instance_t;

/* Evict callback argument: the instance the LRU belongs to. */
typedef struct cd_evict_arg {
    struct dango_conductor *c;
    int                     id;
} cd_evict_arg_t;

struct dango_conductor {
    dango_conductor_params_t p;
    cd_instance_t            inst[DANGO_CONDUCTOR_MAX_INSTANCES];
    cd_evict_arg_t           evict_arg[DANGO_CONDUCTOR_MAX_INSTANCES];
    int                      n_inst; /* highest used id + 1 */
    unsigned                 n_prefill, n_decode;
    cd_set_t                 prefill_set;
    dango_hmap_t             index;
    dango_mpool_t            index_pool;
    uint64_t                 rng;
    dango_conductor_stats_t  st;
};

/* The CONDUCTOR_* option table (conductor_config.c). */
typedef struct cd_config {
    char         *listen;
    char         *policy;
    double        threshold;
    uint64_t      ttft_slo;       /* ns; 0 = off */
    uint64_t      tbt_slo;        /* ns; 0 = off */
    double        bandwidth_gbps; /* GB/s */
    size_t        kv_bytes_per_token;
    double        prefill_alpha, prefill_beta;
    uint64_t      decode_t0; /* ns */
    double        decode_t_kv;
    unsigned long decode_vram_tokens;
    unsigned long block_size;
    unsigned long seed;
    int           predict;
    uint64_t      decode_lifetime; /* ns */
    unsigned long max_tokens;
    size_t        max_body;
    unsigned long max_instances;
    char         *store_master;
    char         *store_key_prefix;
    unsigned long replicate_queue;
} cd_config_t;

extern dango_config_table_t dango__conductor_config_table;

/* Loads and checks the options; frees nothing on error. */
int  dango__conductor_config_load(const dango_config_t *cfg, cd_config_t *c);
void dango__conductor_config_free(cd_config_t *c);
/* Fills scheduler params from a loaded config. */
int dango__conductor_params_from(const cd_config_t        *cc,
                                 dango_conductor_params_t *p);

/* The n-th most replicated key's replica count (rank 1 = top). */
void dango__conductor_replica_ranks(const dango_conductor_t *c,
                                    const size_t *ranks, unsigned *out,
                                    size_t n);

/* ---------- the service's replicator (conductor_replicator.c) ---------- */

typedef struct cd_repl cd_repl_t;

typedef struct cd_repl_stats {
    uint64_t jobs_queued;
    uint64_t jobs_dropped; /* queue full */
    uint64_t jobs_done;
    uint64_t blocks_copied;
    uint64_t blocks_present; /* the node already held them */
    uint64_t blocks_failed;  /* taken back out of the index */
    uint64_t queued;         /* jobs waiting now */
} cd_repl_stats_t;

/* A store client on @master and the thread that copies; 0 or an error of
 * dango_store_client_create() / pthread_create(). */
int dango__cd_repl_create(dango_conductor_server_t *srv,
                          const dango_config_t *cfg, const char *master,
                          const char *prefix, size_t queue_max,
                          cd_repl_t **r_p);
/* Queues a copy of @keys to @dst_node: 0, DANGO_EAGAIN (queue full: the
 * caller takes the blocks back), DANGO_EINVAL, DANGO_ENOMEM. Any thread. */
int  dango__cd_repl_enqueue(cd_repl_t *r, const char *dst_instance,
                            const char *dst_node, const uint64_t *keys,
                            size_t n);
void dango__cd_repl_stats(cd_repl_t *r, cd_repl_stats_t *out);
/* Stops the thread (the job running finishes) and frees queued jobs. */
void dango__cd_repl_destroy(cd_repl_t *r);

#endif /* DANGO_CONDUCTOR_INT_H */
