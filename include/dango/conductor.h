/**
 * @file conductor.h
 * @brief The conductor: KVCache-aware global scheduling, the global KV index,
 *        and the trace replayer.
 *
 * Four parts, each usable alone:
 *   - prefix block hashing of token ids (dango_conductor_hash_tokens()):
 *     one 64-bit key per complete block, each key chaining its parent's, so
 *     equal keys mean equal prefixes;
 *   - LRU cache models (dango_conductor_lru_t): a set of block keys with a
 *     capacity in blocks, a read-only longest-prefix match and an access
 *     that touches or inserts keys in order;
 *   - the scheduler (dango_conductor_t): prefill and decode instances, one
 *     LRU model per prefill instance, a global index of which instance
 *     holds which block, the cost model and Algorithm 1 of the FAST'25
 *     Mooncake paper (balancing threshold, decode selection by predicted
 *     TBT, SLO early rejection, hotspot replication) with the policies
 *     RANDOM, LOAD, LOCAL and GLOBAL;
 *   - the replayer over trace files (dango_conductor_trace_t): the
 *     cache-only hit-rate replay and the timed discrete-event simulation.
 *
 * Times are seconds as double throughout: the scheduler never reads a
 * clock, the caller passes "now" (a daemon its monotonic clock, the
 * simulator its virtual time).
 *
 * Thread safety: every object is single-threaded (one thread at a time per
 * object); distinct objects may be used from different threads. The pure
 * functions (hashing, params init) are safe from any thread.
 */
#ifndef DANGO_CONDUCTOR_H
#define DANGO_CONDUCTOR_H

#include <stddef.h>
#include <stdint.h>
#include <dango/common.h>
#include <dango/config.h>

/** Default number of tokens per block. */
#define DANGO_CONDUCTOR_BLOCK_SIZE 512
/** Most instances (prefill and decode together) one conductor holds. */
#define DANGO_CONDUCTOR_MAX_INSTANCES 256
/** Capacity of an LRU model that never evicts. */
#define DANGO_CONDUCTOR_CAPACITY_INF SIZE_MAX
/** Most blocks in one request (a 2M-token prompt at 512 tokens a block). */
#define DANGO_CONDUCTOR_MAX_BLOCKS 4096
/** Longest instance name, NUL included. */
#define DANGO_CONDUCTOR_NAME_MAX 64

DANGO_BEGIN_DECLS

/* ---------- prefix hashing ---------- */

/**
 * @brief Computes the chained block keys of a token sequence.
 *
 * Only complete blocks are hashed (a trailing partial block cannot be
 * reused). With XXH3-64 and @p seed:
 *   local[i] = XXH3(tokens of block i as little-endian u32)
 *   key[0]   = local[0]
 *   key[i]   = XXH3(key[i-1] as LE u64 || local[i] as LE u64)
 * so key[i] identifies the whole prefix up to and including block i.
 *
 * @param[in]  tokens      Token ids; may be NULL when @p n_tokens is 0.
 * @param[in]  n_tokens    Number of tokens.
 * @param[in]  block_size  Tokens per block, 1..1048576.
 * @param[in]  seed        Hash seed (equal seeds give equal keys).
 * @param[out] keys        Room for @p max_keys keys.
 * @param[in]  max_keys    Size of @p keys.
 * @param[out] n_keys_p    Number of keys written (n_tokens / block_size).
 * @return 0, or:
 *         - DANGO_EINVAL  a NULL pointer, or @p block_size out of range.
 *         - DANGO_ERANGE  more than @p max_keys complete blocks (nothing
 *                         useful is written).
 * @note Thread safety: any thread.
 */
DANGO_API int dango_conductor_hash_tokens(const uint32_t *tokens,
                                          size_t n_tokens, size_t block_size,
                                          uint64_t seed, uint64_t *keys,
                                          size_t max_keys, size_t *n_keys_p);

/* ---------- LRU cache model ---------- */

/** An LRU set of block keys. Opaque. */
typedef struct dango_conductor_lru dango_conductor_lru_t;

/**
 * Called for every key an LRU evicts to make room (not for explicit
 * removals). Runs inside the call that caused it; must not call back into
 * the same LRU.
 */
typedef void (*dango_conductor_evict_cb)(void *arg, uint64_t key);

/** Flags of dango_conductor_lru_access(). */
enum dango_conductor_lru_flags {
    /** Touch keys from the last to the first (ancestors end up most
     *  recent), instead of first to last. */
    DANGO_CONDUCTOR_LRU_REVERSE = 1u << 0
};

/**
 * @brief Creates an empty LRU of @p capacity blocks.
 * @param[in]  capacity  Blocks it may hold; 0 holds nothing,
 *                       DANGO_CONDUCTOR_CAPACITY_INF never evicts.
 * @param[in]  cb        Eviction callback, or NULL.
 * @param[in]  arg       Passed to @p cb.
 * @param[out] lru_p     Set on success only.
 * @return 0, DANGO_EINVAL (@p lru_p NULL) or DANGO_ENOMEM.
 */
DANGO_API int dango_conductor_lru_create(size_t                   capacity,
                                         dango_conductor_evict_cb cb, void *arg,
                                         dango_conductor_lru_t **lru_p);

/** @brief Frees @p lru (the callback is not called). NULL is a no-op. */
DANGO_API void dango_conductor_lru_destroy(dango_conductor_lru_t *lru);

/**
 * @brief Longest prefix of @p keys present: the number k of leading keys
 *        keys[0..k-1] all in the LRU (stops at the first miss). Does not
 *        change recency.
 */
DANGO_API size_t dango_conductor_lru_match(const dango_conductor_lru_t *lru,
                                           const uint64_t *keys, size_t n);

/** @brief 1 if @p key is present, else 0. Does not change recency. */
DANGO_API int dango_conductor_lru_contains(const dango_conductor_lru_t *lru,
                                           uint64_t                     key);

/**
 * @brief Accesses @p n keys in order: a present key becomes most recent; a
 *        missing one is inserted as most recent and, when the LRU is then
 *        over capacity, the least recent unpinned key is evicted at once
 *        (so a request longer than the capacity evicts its own earlier
 *        blocks). When every key is pinned the new key is not inserted.
 * @param[in] flags  DANGO_CONDUCTOR_LRU_* bits.
 * @return 0, or DANGO_ENOMEM (the keys before the failing one were
 *         accessed).
 */
DANGO_API int dango_conductor_lru_access(dango_conductor_lru_t *lru,
                                         const uint64_t *keys, size_t n,
                                         unsigned flags);

/**
 * @brief Removes @p key without calling the eviction callback, pinned or
 *        not (a removal reported by the holder is a fact).
 * @return 0, or DANGO_ENOENT (not present).
 */
DANGO_API int dango_conductor_lru_remove(dango_conductor_lru_t *lru,
                                         uint64_t               key);

/**
 * @brief Adds @p delta (+1 or -1) to the pin count of each present key of
 *        @p keys; a pinned key is never evicted (blocks an ongoing request
 *        is reading). Missing keys and unpinning a key with no pin are
 *        ignored.
 * @return The number of keys whose pin count changed.
 */
DANGO_API size_t dango_conductor_lru_pin(dango_conductor_lru_t *lru,
                                         const uint64_t *keys, size_t n,
                                         int delta);

/**
 * @brief Removes every key; calls the eviction callback for each when
 *        @p notify is non-zero.
 */
DANGO_API void dango_conductor_lru_clear(dango_conductor_lru_t *lru,
                                         int                    notify);

/** @brief Number of keys held. */
DANGO_API size_t dango_conductor_lru_count(const dango_conductor_lru_t *lru);

/** @brief Capacity given at creation. */
DANGO_API size_t dango_conductor_lru_capacity(const dango_conductor_lru_t *lru);

/** @brief Number of keys evicted to make room since creation. */
DANGO_API uint64_t
dango_conductor_lru_evictions(const dango_conductor_lru_t *lru);

/* ---------- the scheduler ---------- */

/** A scheduler. Opaque. */
typedef struct dango_conductor dango_conductor_t;

/** Prefill instance choice. */
typedef enum dango_conductor_policy {
    /** A uniformly random prefill instance (its local cache is reused). */
    DANGO_CONDUCTOR_POLICY_RANDOM = 0,
    /** The instance with the least queue time (local cache reused). */
    DANGO_CONDUCTOR_POLICY_LOAD = 1,
    /** Algorithm 1 without transfers: min queue + prefill time using the
     *  instance's own prefix. */
    DANGO_CONDUCTOR_POLICY_LOCAL = 2,
    /** Algorithm 1: may fetch a longer prefix from another instance. */
    DANGO_CONDUCTOR_POLICY_GLOBAL = 3
} dango_conductor_policy_t;

/** Role of an instance. */
typedef enum dango_conductor_role {
    DANGO_CONDUCTOR_PREFILL = 0, /**< Computes prompts; holds a prefix cache. */
    DANGO_CONDUCTOR_DECODE  = 1  /**< Generates tokens in continuous batches. */
} dango_conductor_role_t;

/** Why a request was rejected (dango_conductor_decision_t.reject). */
typedef enum dango_conductor_reject {
    DANGO_CONDUCTOR_ACCEPT      = 0, /**< Not rejected. */
    DANGO_CONDUCTOR_REJECT_TTFT = 1, /**< Predicted TTFT above the SLO. */
    DANGO_CONDUCTOR_REJECT_TBT  = 2, /**< Predicted TBT above the SLO. */
    /** No decode instance has VRAM left for the request's context. */
    DANGO_CONDUCTOR_REJECT_VRAM = 3
} dango_conductor_reject_t;

/** Bits of dango_conductor_params_t.field_mask (append only). */
enum dango_conductor_params_field {
    DANGO_CONDUCTOR_PARAM_POLICY          = 1ull << 0,
    DANGO_CONDUCTOR_PARAM_THRESHOLD       = 1ull << 1,
    DANGO_CONDUCTOR_PARAM_TTFT_SLO        = 1ull << 2,
    DANGO_CONDUCTOR_PARAM_TBT_SLO         = 1ull << 3,
    DANGO_CONDUCTOR_PARAM_BANDWIDTH       = 1ull << 4,
    DANGO_CONDUCTOR_PARAM_KV_BYTES        = 1ull << 5,
    DANGO_CONDUCTOR_PARAM_PREFILL_MODEL   = 1ull << 6,
    DANGO_CONDUCTOR_PARAM_DECODE_MODEL    = 1ull << 7,
    DANGO_CONDUCTOR_PARAM_BLOCK_SIZE      = 1ull << 8,
    DANGO_CONDUCTOR_PARAM_SEED            = 1ull << 9,
    DANGO_CONDUCTOR_PARAM_PREDICT         = 1ull << 10,
    DANGO_CONDUCTOR_PARAM_REPLICATE_CB    = 1ull << 11,
    DANGO_CONDUCTOR_PARAM_DECODE_LIFETIME = 1ull << 12
};

/**
 * "Copy these blocks from instance @p src to instance @p dst": called by
 * dango_conductor_commit() when Algorithm 1 chose to fetch a prefix (this
 * is how hot blocks are replicated). @p keys are valid during the call
 * only. With params.predict the commit then records the blocks on @p dst
 * in its model (otherwise the caller reports them stored when the copy
 * lands); a failed copy should be reported back with
 * dango_conductor_kv_removed().
 */
typedef void (*dango_conductor_replicate_cb)(void *arg, int src, int dst,
                                             const uint64_t *keys, size_t n);

/**
 * Scheduler parameters. Fields whose bit is not in @p field_mask take the
 * defaults of dango_conductor_params_init() (spec conductor.md A.3, A.6).
 */
typedef struct dango_conductor_params {
    uint64_t                 field_mask; /**< DANGO_CONDUCTOR_PARAM_* bits. */
    dango_conductor_policy_t policy;     /**< Default GLOBAL. */
    /** Fetch a remote prefix only if best > threshold * local (blocks).
     *  Default 1.0; must be >= 1. */
    double threshold;
    double ttft_slo_s;    /**< Reject above this predicted TTFT; 0 = never. */
    double tbt_slo_s;     /**< Reject above this predicted TBT; 0 = never. */
    double bandwidth_Bps; /**< KV transfer bandwidth, bytes/s (100e9). */
    double kv_bytes_per_token; /**< KV size of one token (327680). */
    /** Prefill time alpha*(n-p) + beta*(n^2-p^2) s (1.162e-4, 7.14e-10). */
    double   prefill_alpha;
    double   prefill_beta;  /**< See prefill_alpha. */
    double   decode_t0_s;   /**< Decode iteration t0 + t_kv*K s (0.026). */
    double   decode_t_kv_s; /**< Per context token in the batch (3.3e-8). */
    uint64_t decode_vram_tokens; /**< Context tokens a decode instance
                                      holds (1300000). */
    uint32_t block_size;         /**< Tokens per block (512). */
    uint64_t seed;               /**< Seed of the RANDOM policy (1). */
    /** Non-zero (default): a commit records the request's blocks on the
     *  chosen prefill instance at once and reserves its context on the
     *  decode instance, as a service without KV events must. The
     *  simulator sets 0 and reports both itself. */
    int predict;
    /** With predict: a decode reservation lapses this long after the
     *  predicted end of its decoding unless released (default 60 s). */
    double                       decode_lifetime_s;
    dango_conductor_replicate_cb replicate_cb;  /**< NULL: none. */
    void                        *replicate_arg; /**< Passed to replicate_cb. */
} dango_conductor_params_t;

/** A request to place. */
typedef struct dango_conductor_request {
    /** Block keys (chained), borrowed; may be NULL when n_keys is 0. */
    const uint64_t *keys;
    /** 0..DANGO_CONDUCTOR_MAX_BLOCKS (0: shorter than a block). */
    size_t   n_keys;
    uint64_t input_tokens;  /**< Prompt length, >= 1. */
    uint64_t output_tokens; /**< Tokens to generate (0 taken as 1). */
} dango_conductor_request_t;

/** The outcome of Algorithm 1 for one request. */
typedef struct dango_conductor_decision {
    dango_conductor_reject_t reject;  /**< ACCEPT or the reason. */
    int                      prefill; /**< Chosen prefill instance id. */
    int                      decode;  /**< Chosen decode instance id, or -1. */
    size_t   local_blocks;    /**< Prefix held by the prefill instance. */
    size_t   prefix_blocks;   /**< Prefix reused (local + transferred). */
    size_t   best_blocks;     /**< Longest prefix on any prefill instance. */
    int      best_instance;   /**< Instance holding it, or -1. */
    int      transfer_from;   /**< Source of a fetch, or -1 for none. */
    size_t   transfer_blocks; /**< Blocks fetched (prefix - local). */
    uint64_t prefix_tokens;   /**< Reused tokens (< input_tokens). */
    double   queue_s;         /**< Predicted wait on the prefill instance. */
    double   transfer_s;      /**< Predicted fetch time. */
    double   prefill_s;       /**< Predicted prefill execution time. */
    double   ttft_s;          /**< queue + transfer + prefill. */
    double   tbt_s;           /**< Predicted decode iteration time. */
} dango_conductor_decision_t;

/** Read-only view of an instance (dango_conductor_instance_info()). */
typedef struct dango_conductor_instance_info {
    const char            *name; /**< Valid until the instance is removed. */
    dango_conductor_role_t role;
    size_t   cache_capacity; /**< Prefill: blocks the model holds. */
    size_t   cached_blocks;  /**< Prefill: blocks held now. */
    double   busy_until_s;   /**< Prefill: predicted end of its queue. */
    uint64_t decode_tokens;  /**< Decode: context tokens in the batch. */
    uint64_t requests;       /**< Requests placed on it since added. */
} dango_conductor_instance_info_t;

/** Counters of a scheduler (dango_conductor_stats()). */
typedef struct dango_conductor_stats {
    uint64_t decisions;       /**< dango_conductor_decide() calls. */
    uint64_t accepted;        /**< Commits. */
    uint64_t rejected[4];     /**< By dango_conductor_reject_t. */
    uint64_t transfers;       /**< Commits that fetched a prefix. */
    uint64_t transfer_blocks; /**< Blocks fetched. */
    uint64_t matched_blocks;  /**< Sum of prefix_blocks of commits. */
    uint64_t request_blocks;  /**< Sum of n_keys of commits. */
    uint64_t index_keys;      /**< Distinct keys held by any instance. */
    uint64_t index_replicas;  /**< (key, instance) pairs held. */
    uint64_t kv_stored;       /**< Keys reported stored. */
    uint64_t kv_removed;      /**< Keys reported removed or evicted. */
} dango_conductor_stats_t;

/**
 * @brief Fills @p p with the defaults and field_mask 0.
 * @note Thread safety: any thread.
 */
DANGO_API void dango_conductor_params_init(dango_conductor_params_t *p);

/**
 * @brief Fills @p p from the CONDUCTOR_* options (policy, threshold, SLOs,
 *        cost model, block size, seed) of @p cfg, the environment, the
 *        configuration file and the defaults; sets the matching mask bits.
 * @param[in] cfg  Overrides, or NULL.
 * @return 0, or DANGO_ECONFIG (a value does not parse or is out of range;
 *         logged) or DANGO_ENOMEM.
 */
DANGO_API int dango_conductor_params_from_config(const dango_config_t     *cfg,
                                                 dango_conductor_params_t *p);

/** @brief Name of a policy ("random", "load", "local", "global"). */
DANGO_API const char *dango_conductor_policy_name(dango_conductor_policy_t p);

/**
 * @brief Parses a policy name (case-insensitive).
 * @return 0, or DANGO_EINVAL.
 */
DANGO_API int dango_conductor_policy_parse(const char               *name,
                                           dango_conductor_policy_t *p);

/** @brief Short name of a rejection reason ("ttft_slo", "tbt_slo",
 *         "decode_vram", "" for ACCEPT). */
DANGO_API const char *dango_conductor_reject_name(dango_conductor_reject_t r);

/**
 * @brief Creates a scheduler with no instances.
 * @param[in]  params  Parameters, or NULL for the defaults.
 * @param[out] c_p     Set on success only.
 * @return 0, or DANGO_EINVAL (a parameter out of range: threshold < 1,
 *         negative time, zero bandwidth or block size) or DANGO_ENOMEM.
 */
DANGO_API int dango_conductor_create(const dango_conductor_params_t *params,
                                     dango_conductor_t             **c_p);

/** @brief Frees @p c and every instance. NULL is a no-op. */
DANGO_API void dango_conductor_destroy(dango_conductor_t *c);

/** @brief The effective parameters (defaults filled in). */
DANGO_API const dango_conductor_params_t *
dango_conductor_params(const dango_conductor_t *c);

/**
 * @brief Adds an instance.
 * @param[in]  name            Unique, 1..DANGO_CONDUCTOR_NAME_MAX-1 bytes;
 *                             copied.
 * @param[in]  role            Prefill or decode.
 * @param[in]  cache_blocks    Prefill: capacity of its cache model in
 *                             blocks (DANGO_CONDUCTOR_CAPACITY_INF: only
 *                             KV events remove blocks). Ignored for decode.
 * @param[in]  vram_tokens     Decode: context tokens it holds, 0 for the
 *                             default. Ignored for prefill.
 * @param[out] id_p            Its id, 0..DANGO_CONDUCTOR_MAX_INSTANCES-1;
 *                             ids of removed instances are reused.
 * @return 0, or DANGO_EINVAL (bad name or role), DANGO_EEXIST (name taken),
 *         DANGO_ENOSPC (DANGO_CONDUCTOR_MAX_INSTANCES already), DANGO_ENOMEM.
 */
DANGO_API int dango_conductor_instance_add(dango_conductor_t     *c,
                                           const char            *name,
                                           dango_conductor_role_t role,
                                           size_t                 cache_blocks,
                                           uint64_t vram_tokens, int *id_p);

/**
 * @brief Removes an instance and everything the index held for it.
 * @return 0, or DANGO_ENOENT (no such id).
 */
DANGO_API int dango_conductor_instance_remove(dango_conductor_t *c, int id);

/** @brief Id of the instance named @p name, or DANGO_ENOENT. */
DANGO_API int dango_conductor_instance_find(const dango_conductor_t *c,
                                            const char              *name);

/**
 * @brief Describes instance @p id.
 * @return 0, or DANGO_ENOENT.
 */
DANGO_API int
dango_conductor_instance_info(const dango_conductor_t *c, int id,
                              dango_conductor_instance_info_t *info);

/**
 * @brief Sets the load a decode instance reports (or a simulator knows):
 *        the context tokens of its batch and waiting requests. Replaces
 *        the reported part; reservations made by commits come on top.
 * @return 0, or DANGO_ENOENT (no such decode instance).
 */
DANGO_API int dango_conductor_decode_load_set(dango_conductor_t *c, int id,
                                              uint64_t tokens);

/**
 * @brief Releases a decode reservation made by a commit (the request
 *        finished or was cancelled).
 * @return 0, or DANGO_ENOENT (no such decode instance or nothing reserved).
 */
DANGO_API int dango_conductor_decode_release(dango_conductor_t *c, int id,
                                             uint64_t tokens);

/**
 * @brief KV events: @p n keys were stored on (or, for _removed, dropped
 *        from) prefill instance @p id. Stored keys are accessed in order in
 *        its LRU model (which may evict others) and added to the index.
 * @return 0, or DANGO_ENOENT (no such prefill instance), DANGO_EINVAL
 *         (NULL keys with n > 0), DANGO_ENOMEM.
 */
DANGO_API int dango_conductor_kv_stored(dango_conductor_t *c, int id,
                                        const uint64_t *keys, size_t n);
/** @brief See dango_conductor_kv_stored(). Missing keys are ignored.
 *  @return 0, or DANGO_ENOENT, DANGO_EINVAL. */
DANGO_API int dango_conductor_kv_removed(dango_conductor_t *c, int id,
                                         const uint64_t *keys, size_t n);
/** @brief Drops every key of prefill instance @p id. 0 or DANGO_ENOENT. */
DANGO_API int dango_conductor_kv_cleared(dango_conductor_t *c, int id);

/**
 * @brief Pins (@p delta +1) or unpins (-1) keys of prefill instance @p id
 *        so its model does not evict them while a request reads them.
 * @return 0, or DANGO_ENOENT, DANGO_EINVAL.
 */
DANGO_API int dango_conductor_kv_pin(dango_conductor_t *c, int id,
                                     const uint64_t *keys, size_t n, int delta);

/**
 * @brief Longest prefix of @p keys held by prefill instance @p id.
 * @return The number of leading keys held, or DANGO_ENOENT.
 */
DANGO_API long dango_conductor_match(const dango_conductor_t *c, int id,
                                     const uint64_t *keys, size_t n);

/**
 * @brief Number of prefill instances holding @p key (its replica count).
 */
DANGO_API unsigned dango_conductor_replicas(const dango_conductor_t *c,
                                            uint64_t                 key);

/**
 * @brief Runs the policy (Algorithm 1 for LOCAL and GLOBAL) for @p req at
 *        time @p now_s without changing any state except the RANDOM
 *        generator and the decision counters.
 * @param[out] dec  The choice; dec->reject says whether it is rejected.
 * @return 0 (a decision was made, accepted or rejected), or:
 *         - DANGO_EINVAL  NULL pointer, n_keys above
 *                         DANGO_CONDUCTOR_MAX_BLOCKS, input_tokens 0, or
 *                         more keys than the input has blocks.
 *         - DANGO_ENOENT  no prefill or no decode instance.
 */
DANGO_API int dango_conductor_decide(dango_conductor_t               *c,
                                     const dango_conductor_request_t *req,
                                     double                           now_s,
                                     dango_conductor_decision_t      *dec);

/**
 * @brief Applies an accepted decision: the prefill instance's predicted
 *        queue grows by transfer + prefill; with params.predict the
 *        request's blocks are recorded on it and its context reserved on
 *        the decode instance; a fetch calls the replicate callback.
 * @return 0, or DANGO_EINVAL (rejected decision, or instances that no
 *         longer exist), DANGO_ENOMEM (the blocks could not all be
 *         recorded; the rest of the commit is done).
 */
DANGO_API int dango_conductor_commit(dango_conductor_t                *c,
                                     const dango_conductor_request_t  *req,
                                     const dango_conductor_decision_t *dec,
                                     double                            now_s);

/**
 * @brief dango_conductor_decide(), then dango_conductor_commit() when
 *        accepted. Same return codes.
 */
DANGO_API int dango_conductor_schedule(dango_conductor_t               *c,
                                       const dango_conductor_request_t *req,
                                       double                           now_s,
                                       dango_conductor_decision_t      *dec);

/** @brief Copies the counters into @p st. */
DANGO_API void dango_conductor_stats(const dango_conductor_t *c,
                                     dango_conductor_stats_t *st);

/**
 * @brief Predicted prefill execution time of @p n tokens with a reused
 *        prefix of @p p tokens, per the parameters of @p c.
 */
DANGO_API double dango_conductor_prefill_time(const dango_conductor_t *c,
                                              uint64_t n, uint64_t p);

/* ---------- traces ---------- */

/** A loaded trace. Opaque. */
typedef struct dango_conductor_trace dango_conductor_trace_t;

/** One request of a trace; pointers valid until the trace is destroyed. */
typedef struct dango_conductor_trace_req {
    double          timestamp_ms;  /**< Arrival, ms from the trace start. */
    uint64_t        input_length;  /**< Prompt tokens. */
    uint64_t        output_length; /**< Generated tokens. */
    const uint64_t *hash_ids;      /**< One id per block. */
    size_t          n_blocks;      /**< Entries of hash_ids. */
} dango_conductor_trace_req_t;

/** Called for each malformed line: 1-based @p line and the reason. */
typedef void (*dango_conductor_trace_error_cb)(void *arg, size_t line,
                                               const char *msg);

/**
 * @brief Loads a JSONL trace: one object per line with `timestamp` (ms,
 *        number >= 0), `input_length` (integer >= 1), `output_length`
 *        (integer >= 0) and `hash_ids` (1..DANGO_CONDUCTOR_MAX_BLOCKS
 *        integers >= 0); other fields are ignored, blank lines skipped.
 *        A malformed line is reported to @p cb and skipped.
 * @param[in] path  File name, "-" for stdin.
 * @param[in] cb    Error callback, or NULL.
 * @return 0, or DANGO_ENOENT (cannot open), DANGO_EIO (read error),
 *         DANGO_EINVAL (no valid request at all), DANGO_ENOMEM.
 */
DANGO_API int dango_conductor_trace_load(const char                    *path,
                                         dango_conductor_trace_error_cb cb,
                                         void                          *arg,
                                         dango_conductor_trace_t **trace_p);

/** @brief Frees a trace. NULL is a no-op. */
DANGO_API void dango_conductor_trace_destroy(dango_conductor_trace_t *t);

/** @brief Number of valid requests. */
DANGO_API size_t dango_conductor_trace_count(const dango_conductor_trace_t *t);

/** @brief Number of malformed lines skipped. */
DANGO_API size_t
dango_conductor_trace_skipped(const dango_conductor_trace_t *t);

/**
 * @brief Request @p i (file order).
 * @return 0, or DANGO_ERANGE (i out of range).
 */
DANGO_API int dango_conductor_trace_get(const dango_conductor_trace_t *t,
                                        size_t                         i,
                                        dango_conductor_trace_req_t   *r);

/** Progress reports: @p done of @p total units. */
typedef void (*dango_conductor_progress_cb)(void *arg, uint64_t done,
                                            uint64_t total);

/* ---------- cache-only replay ---------- */

/** Routing of a cache-only replay over several local caches. */
typedef enum dango_conductor_routing {
    DANGO_CONDUCTOR_ROUTE_RR    = 0, /**< Request j to cache j mod N. */
    DANGO_CONDUCTOR_ROUTE_AWARE = 1  /**< Longest prefix match, ties from
                                          j mod N cyclically. */
} dango_conductor_routing_t;

/** Parameters of dango_conductor_replay_cache(). */
typedef struct dango_conductor_cache_params {
    size_t   capacity_blocks; /**< Total blocks (INF: unbounded). */
    unsigned instances;       /**< N caches of floor(C/N) blocks; 1 = global. */
    dango_conductor_routing_t routing; /**< RR or AWARE (N > 1). */
    int      reverse;    /**< Access blocks last to first (REV variant). */
    uint32_t block_size; /**< Tokens per trace block (512). */
} dango_conductor_cache_params_t;

/** Result of a cache-only replay (spec conductor.md §B). */
typedef struct dango_conductor_cache_result {
    uint64_t requests;       /**< Requests replayed. */
    uint64_t total_blocks;   /**< Sum of blocks. */
    uint64_t hit_blocks;     /**< Sum of leading blocks present. */
    uint64_t total_tokens;   /**< Sum of input lengths. */
    uint64_t hit_tokens;     /**< Sum of min(block_size*hit, input). */
    uint64_t evictions;      /**< Keys evicted in all caches. */
    unsigned instances_used; /**< Caches that served a request. */
    /** Requests served by each cache (first min(N, 256) caches). */
    uint64_t per_instance[DANGO_CONDUCTOR_MAX_INSTANCES];
} dango_conductor_cache_result_t;

/**
 * @brief Replays @p t in file order through N LRU caches (spec §B: a hit
 *        is the run of leading blocks present; lookups don't touch
 *        recency; only the serving cache is then accessed).
 * @return 0, or DANGO_EINVAL (instances 0 or above
 *         DANGO_CONDUCTOR_MAX_INSTANCES, block_size 0), DANGO_ENOMEM.
 */
DANGO_API int
dango_conductor_replay_cache(const dango_conductor_trace_t        *t,
                             const dango_conductor_cache_params_t *p,
                             dango_conductor_cache_result_t       *res);

/* ---------- timed simulation ---------- */

/** Parameters of dango_conductor_sim_run(). */
typedef struct dango_conductor_sim_params {
    unsigned prefill;      /**< Prefill instances, 1..128. */
    unsigned decode;       /**< Decode instances, 1..128. */
    size_t   cache_blocks; /**< Per prefill instance (INF: unbounded). */
    double   speed;        /**< Replay speed factor (> 0; 1 = real time). */
    /** If > 0, every output length is replaced by this (Fig. 10: 1). */
    uint64_t output_length;
    /** Effective-request TTFT threshold, s (30; 10 for Fig. 15). */
    double ttft_threshold_s;
    /** Scheduler parameters; predict is forced to 0. */
    dango_conductor_params_t    sched;
    dango_conductor_progress_cb progress;     /**< NULL: none. */
    void                       *progress_arg; /**< Passed to progress. */
} dango_conductor_sim_params_t;

/** Result of a timed simulation. */
typedef struct dango_conductor_sim_result {
    uint64_t requests;        /**< Requests in the trace. */
    uint64_t completed;       /**< Accepted and finished. */
    uint64_t rejected;        /**< Rejected early (any reason). */
    uint64_t rejected_by[4];  /**< By dango_conductor_reject_t. */
    uint64_t transfers;       /**< Requests that fetched a prefix. */
    uint64_t transfer_blocks; /**< Blocks fetched. */
    double   ttft_mean_s, ttft_p50_s, ttft_p90_s, ttft_p99_s; /**< Accepted. */
    double   tbt_mean_s, tbt_p50_s, tbt_p90_s, tbt_p99_s;     /**< Per-request
              TBT (mean of the longest 10 % intervals), requests with >= 1. */
    /** Effective requests / all requests at TBT 100, 200, 300 ms. */
    double effective[3];
    double block_hit_rate;       /**< Reused (local + fetched) / all blocks. */
    double token_hit_rate;       /**< Reused tokens / input tokens. */
    double local_block_hit_rate; /**< Reused from the instance's own cache. */
    double prefill_mean_s;       /**< Mean predicted prefill execution time. */
    double queue_mean_s;         /**< Mean wait before prefill. */
    double makespan_s;           /**< Virtual time of the last event. */
    /** Replica counts at the end: the most replicated key, the 10th, the
     *  100th (Fig. 11). */
    unsigned replicas_top[3];
    uint64_t events; /**< Simulation events processed. */
} dango_conductor_sim_result_t;

/** @brief Fills @p p with defaults (8P8D, 5859 blocks, speed 1, GLOBAL). */
DANGO_API void dango_conductor_sim_params_init(dango_conductor_sim_params_t *p);

/**
 * @brief Discrete-event simulation of the trace on a P/D cluster (spec
 *        conductor.md A.9): Algorithm 1 at each arrival, FIFO prefill
 *        instances with LRU prefix caches (matched blocks pinned until the
 *        prefill ends, then all the request's blocks stored), KV streamed
 *        to the decode instance overlapped with the prefill, continuous
 *        batching with iterations of t0 + t_kv*K.
 * @return 0, or DANGO_EINVAL (a parameter out of range), DANGO_ENOMEM.
 */
DANGO_API int dango_conductor_sim_run(const dango_conductor_trace_t      *t,
                                      const dango_conductor_sim_params_t *p,
                                      dango_conductor_sim_result_t       *res);

/* ---------- the HTTP service (dango-conductor) ---------- */

/** A running conductor service. Opaque. */
typedef struct dango_conductor_server dango_conductor_server_t;

/**
 * "Replicate these blocks from @p src_node to @p dst_node": the service's
 * form of dango_conductor_replicate_cb, with the instances' names and the
 * store nodes they registered ("node", NULL when none). Called on the
 * service's HTTP thread under its lock; must not block for long (queue the
 * copy) and must not call back into the service.
 */
typedef void (*dango_conductor_server_replicate_cb)(
    void *arg, const char *src_instance, const char *src_node,
    const char *dst_instance, const char *dst_node, const uint64_t *keys,
    size_t n);

/**
 * @brief Starts the HTTP service on CONDUCTOR_LISTEN with the CONDUCTOR_*
 *        options of @p cfg (or the environment and defaults when NULL).
 *
 * Routes (JSON bodies; errors are {"error": "..."} with a 4xx status):
 *   - POST /register    {"instance_id", "role": "prefill"|"decode",
 *                        "cache_blocks"?, "vram_tokens"?, "node"?}
 *   - POST /deregister  {"instance_id"}
 *   - POST /schedule    {"token_ids": [...]} or {"block_hashes": [...],
 *                        "input_length"}, "output_length"? → the choice,
 *                        or 429 {"error": "rejected", "reason"}
 *   - POST /complete    {"decode", "tokens"}: releases a reservation
 *   - POST /kv_events   {"instance_id" or "node", "events": [{"type":
 *                        "stored"|"removed"|"cleared", "block_hashes"}]}
 *                        ("node": a store node's events, applied to every
 *                        prefill instance registered with that node)
 *   - GET /instances, GET /metrics (Prometheus text), GET /health
 * docs/design/conductor.md describes every field.
 *
 * @param[in]  cfg    Options, or NULL.
 * @param[in]  cb     Replication hook, or NULL (replications are then only
 *                    counted in /metrics).
 * @param[in]  arg    Passed to @p cb.
 * @param[out] srv_p  Set on success only.
 * @return 0, or DANGO_ECONFIG (an option is out of range), DANGO_EINVAL
 *         (the listen address does not parse), DANGO_EADDRINUSE,
 *         DANGO_EIO (the HTTP server did not start), DANGO_ENOMEM.
 * @note Thread safety: create and destroy from one thread; requests are
 *       served on the service's own thread.
 */
DANGO_API int
dango_conductor_server_create(const dango_config_t               *cfg,
                              dango_conductor_server_replicate_cb cb, void *arg,
                              dango_conductor_server_t **srv_p);

/** @brief Stops serving and frees everything. NULL is a no-op. */
DANGO_API void dango_conductor_server_destroy(dango_conductor_server_t *srv);

/**
 * @brief Tells the service that @p n blocks are not (or no longer) held by
 *        prefill instance @p instance: how a replication that failed is
 *        taken back out of the global index.
 * @return 0, DANGO_ENOENT (no such instance; decode instances are
 *         ignored), DANGO_EINVAL (NULL arguments).
 * @note Thread safety: any thread, but not from inside the replicate
 *       callback (it runs under the service's lock: queue the work).
 */
DANGO_API int dango_conductor_server_kv_removed(dango_conductor_server_t *srv,
                                                const char     *instance,
                                                const uint64_t *keys, size_t n);

/** @brief The address served, "host:port" with the real port. */
DANGO_API const char *
dango_conductor_server_addr(const dango_conductor_server_t *srv);

DANGO_END_DECLS

#endif /* DANGO_CONDUCTOR_H */
