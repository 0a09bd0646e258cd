/**
 * @file store.h
 * @brief The distributed KVCache store: client library.
 *
 * A store is a pool of memory segments contributed by many processes (store
 * nodes) and described by one master, which keeps only metadata: which
 * objects exist, where their replicas live, leases and pins. Object bytes
 * move directly between the client and the nodes through the transfer
 * engine (shared memory on one host, TCP between hosts).
 *
 * A client may contribute a segment (params.segment_size > 0), use the store
 * (params.local_buffer_size > 0, or registered buffers), or both. Objects are
 * immutable between put and remove: a put of an existing key leaves the
 * stored object as it is and returns DANGO_EOBJ_EXISTS; upsert replaces it
 * atomically for readers. A get returns only fully written objects whose
 * checksum (xxh3-64 over the value, computed by the writer) matches the
 * bytes that arrived; a replica that fails the check is reported to the
 * master, dropped, and the next one is tried.
 *
 * Keys are 1..DANGO_STORE_KEY_MAX bytes of any value except NUL; values are
 * 1 byte or more, at most what one segment can hold.
 *
 * Thread safety: every function is safe from any number of threads on the
 * same client, except dango_store_client_destroy(). Ownership: strings and
 * buffers passed in are borrowed for the duration of the call.
 */
#ifndef DANGO_STORE_H
#define DANGO_STORE_H

#include <dango/common.h>
#include <dango/config.h>

/** A store client. Opaque. */
typedef struct dango_store_client dango_store_client_t;

/** Longest key, in bytes. */
#define DANGO_STORE_KEY_MAX 4096
/** Most replicas of one object. */
#define DANGO_STORE_REPLICA_MAX 8
/** Most preferred segments in a replicate config. */
#define DANGO_STORE_PREFERRED_MAX 8
/** Most keys in one batch call. */
#define DANGO_STORE_BATCH_MAX 4096
/** Most parts or ranges of one key in the _parts / _ranges calls. */
#define DANGO_STORE_PARTS_MAX 1024

/** Flags of the _parts / _ranges calls. */
enum dango_store_flag {
    /** Every part lies in memory registered with
     *  dango_store_register_buffer() (no intermediate copy). */
    DANGO_STORE_REGISTERED = 1u << 0,
    /** Replace an existing object (as dango_store_upsert()). */
    DANGO_STORE_UPSERT = 1u << 1
};

/** One piece of a gathered (put) or scattered (get) value. */
typedef struct dango_store_iov {
    void  *base; /**< First byte. */
    size_t len;  /**< Bytes; 0 is allowed and skipped. */
} dango_store_iov_t;

/** One piece of an object copied out by dango_store_batch_get_ranges(). */
typedef struct dango_store_range {
    uint64_t src_offset; /**< Offset in the object's value. */
    void    *dst;        /**< Destination of @c len bytes. */
    size_t   len;        /**< Bytes; 0 is allowed and skipped. */
} dango_store_range_t;

/** Bits of dango_store_params_t::field_mask. Append only. */
enum dango_store_params_field {
    DANGO_STORE_PARAM_LOCAL_NAME   = 1u << 0, /**< local_name */
    DANGO_STORE_PARAM_METADATA     = 1u << 1, /**< metadata */
    DANGO_STORE_PARAM_MASTER       = 1u << 2, /**< master_addr */
    DANGO_STORE_PARAM_SEGMENT_SIZE = 1u << 3, /**< segment_size */
    DANGO_STORE_PARAM_BUFFER_SIZE  = 1u << 4, /**< local_buffer_size */
    DANGO_STORE_PARAM_TRANSPORTS   = 1u << 5, /**< transports */
    DANGO_STORE_PARAM_LISTEN       = 1u << 6  /**< listen_addr */
};

/**
 * Client parameters. Fields whose bit is not in field_mask take the default
 * named in their comment (a STORE_* option, see `dango info -c`).
 */
typedef struct dango_store_params {
    uint64_t field_mask; /**< DANGO_STORE_PARAM_* bits. */
    /** Segment name of this client, unique in the cluster. Default:
     *  XFER_SEGMENT_NAME (P2P mode: the transfer listen address). */
    const char *local_name;
    /** Metadata connection string (see xfer.h). Default: XFER_METADATA. */
    const char *metadata;
    /** Master RPC address "host:port". Default: STORE_MASTER. */
    const char *master_addr;
    /** Bytes of DRAM this client contributes to the pool (0 = a pure
     *  client). Default: STORE_SEGMENT_SIZE. */
    uint64_t segment_size;
    /** Bytes of registered staging memory for gets and puts of caller
     *  buffers that are not registered (0 = only registered buffers and
     *  library-allocated results). Default: STORE_LOCAL_BUFFER_SIZE. */
    uint64_t local_buffer_size;
    /** Transports in order of preference, e.g. "shm,tcp" or "tcp".
     *  Default: XFER_TRANSPORTS. */
    const char *transports;
    /** Transfer engine listen address "host:port". Default: XFER_LISTEN. */
    const char *listen_addr;
} dango_store_params_t;

/** Soft pin actions (spec store.md §3.2). */
typedef enum dango_store_soft_pin {
    DANGO_STORE_SOFT_PIN_PRESERVE = 0, /**< Keep what the object has. */
    DANGO_STORE_SOFT_PIN_ENABLE   = 1, /**< Pin for soft_pin_ttl_ms. */
    DANGO_STORE_SOFT_PIN_DISABLE  = 2  /**< Clear the pin. */
} dango_store_soft_pin_t;

/** How an object is placed and protected. Zero-initialised = defaults. */
typedef struct dango_store_replicate_config {
    /** Memory replicas on distinct segments, best effort (0 =
     *  STORE_REPLICA_NUM, 1 by default). */
    unsigned replica_num;
    /** Never evicted; removable only by a forced remove. */
    int with_hard_pin;
    /** Soft pin action; the pin is evicted only in a second pass. */
    dango_store_soft_pin_t soft_pin;
    /** Soft pin TTL in ms with ENABLE (0 = MASTER_SOFT_PIN_TTL). */
    uint64_t soft_pin_ttl_ms;
    /** Segment names tried first, in order. */
    const char *const *preferred_segments;
    unsigned           preferred_count; /**< Entries in preferred_segments. */
} dango_store_replicate_config_t;

/** Where one replica of an object lives. */
typedef struct dango_store_replica_info {
    char     segment[256]; /**< Segment (node) name. */
    uint64_t addr;         /**< Address of the record in that segment. */
    int      complete;     /**< 1 when readable. */
} dango_store_replica_info_t;

/** What dango_store_stat() reports about one object. */
typedef struct dango_store_object_info {
    uint64_t size;             /**< Value bytes. */
    uint64_t checksum;         /**< xxh3-64 of the value. */
    uint64_t lease_ms_left;    /**< Remaining read lease, ms (0 = none). */
    int      hard_pinned;      /**< 1 if hard pinned. */
    uint64_t soft_pin_ms_left; /**< Remaining soft pin, ms (0 = none). */
    unsigned num_replicas;     /**< Entries in replicas[]. */
    dango_store_replica_info_t replicas[DANGO_STORE_REPLICA_MAX];
    /** 1 when held on a node's disk tier only (num_replicas is then 0: a
     *  get loads it from disk). */
    int on_disk;
} dango_store_object_info_t;

/** Pool-wide figures reported by the master. */
typedef struct dango_store_pool_info {
    uint64_t capacity;     /**< Bytes of all mounted segments. */
    uint64_t used;         /**< Bytes allocated to records. */
    uint64_t keys;         /**< Objects (any state). */
    uint64_t segments;     /**< Mounted segments. */
    uint64_t clients;      /**< Clients alive. */
    uint64_t evicted_keys; /**< Objects evicted since the master started. */
    /* Disk tiers of the nodes (0 when none is mounted). */
    uint64_t disk_capacity;   /**< Bytes of all nodes' disk tiers. */
    uint64_t disk_used;       /**< Bytes used on them. */
    uint64_t disk_keys;       /**< Objects held on a disk tier. */
    uint64_t disk_offloads;   /**< Objects moved to disk on eviction. */
    uint64_t disk_loads;      /**< Reads served from disk. */
    uint64_t disk_promotions; /**< Disk objects brought back to memory. */
} dango_store_pool_info_t;

/**
 * Called once per key by dango_store_list(). Return 0 to go on, anything
 * else to stop.
 */
typedef int (*dango_store_list_cb)(void *arg, const char *key, uint64_t size);

DANGO_BEGIN_DECLS

/**
 * @brief Creates a client: starts a transfer engine, contributes a segment
 *        of params->segment_size bytes (mounted on the master), allocates
 *        the staging buffer and starts pinging the master every
 *        STORE_PING_INTERVAL.
 *
 * The master need not be up: the segment is mounted as soon as it answers
 * (and mounted again whenever a restarted master asks for it).
 *
 * @param[in]  params   Parameters, or NULL for defaults.
 * @param[in]  config   Options (STORE_*, XFER_*, TCP_*, ...), or NULL.
 * @param[out] client_p Set on success only.
 * @return 0, or:
 *         - DANGO_EINVAL      a parameter is malformed (segment_size below
 *                             1 KiB or above 1 TiB, bad address).
 *         - DANGO_ECONFIG     an option does not parse.
 *         - DANGO_ENOMEM      the segment or buffer cannot be allocated.
 *         - any error of dango_xfer_engine_create().
 */
DANGO_API int dango_store_client_create(const dango_store_params_t *params,
                                        const dango_config_t       *config,
                                        dango_store_client_t      **client_p);

/**
 * @brief Unmounts the client's segment (its objects are dropped by the
 *        master), stops the engine and frees the client. Calls in progress
 *        on other threads must have returned. NULL is a no-op.
 */
DANGO_API void dango_store_client_destroy(dango_store_client_t *c);

/** @brief The client's segment name (stable for its lifetime). */
DANGO_API const char *dango_store_client_name(const dango_store_client_t *c);

/**
 * @brief Health: 0 when the master answered the last ping, DANGO_EPEER_GONE
 *        when it did not, DANGO_EINVAL for NULL.
 */
DANGO_API int dango_store_health(dango_store_client_t *c);

/**
 * @brief Stores @p len bytes at @p value under @p key.
 *
 * Two-phase: the master allocates the replicas, the bytes are written into
 * all of them at once, then the object is committed. On any failure the
 * allocation is revoked and nothing is visible. When the client puts
 * values of one record length repeatedly (STORE_PUT_SLOTS), the regions
 * are allocated ahead (slots) and the put costs one master round trip:
 * the bytes are written into a slot, then the key is bound to it. Slots
 * count as used space until they are bound or given back.
 *
 * @param[in] cfg  Replication, or NULL for defaults (STORE_REPLICA_NUM).
 * @return 0, or:
 *         - DANGO_EOBJ_EXISTS   the key exists (the stored object is kept).
 *         - DANGO_EINVAL        empty key, zero length, NULL value, bad cfg.
 *         - DANGO_ENAMETOOLONG  key longer than DANGO_STORE_KEY_MAX.
 *         - DANGO_ENOSPC        no segment can hold the value, even after
 *                               eviction.
 *         - DANGO_ENOMEM        the staging buffer cannot take the value
 *                               (and it could not be registered directly).
 *         - DANGO_ETIMEDOUT, DANGO_ECONNREFUSED, DANGO_EPEER_GONE: the
 *           master or a node cannot be reached.
 *         - DANGO_ECONNRESET    the connection to the master was lost after
 *                               the put's end was asked for, twice (it is
 *                               asked again once): the value may or may not
 *                               have become visible.
 *         - a transfer error (link or peer band) when every replica failed.
 */
DANGO_API int dango_store_put(dango_store_client_t *c, const char *key,
                              const void *value, size_t len,
                              const dango_store_replicate_config_t *cfg);

/**
 * @brief Like dango_store_put() but replaces an existing object: readers see
 *        the old value or the new one, never a mix.
 *
 * The new value gets new replicas; the old ones stay readable until the new
 * value is committed and are freed once their read leases have ended, so
 * the pool needs room for both while the upsert runs. Hard pin is kept.
 * If a client read the object in the last MASTER_LOCATION_CACHE_TIME
 * (1 s), the new value is committed only once that client's location
 * cache can no longer serve the old one, so the call may take that long;
 * once it returns, no get anywhere returns the old value.
 * @return As dango_store_put(), but never DANGO_EOBJ_EXISTS; also
 *         DANGO_ETIMEDOUT when cached readers outlasted STORE_RPC_TIMEOUT
 *         (the upsert is revoked: the old value stays).
 */
DANGO_API int dango_store_upsert(dango_store_client_t *c, const char *key,
                                 const void *value, size_t len,
                                 const dango_store_replicate_config_t *cfg);

/**
 * @brief Copies the object into @p buf.
 *
 * A key this client read in the last STORE_LOCATION_CACHE_TIME (1 s,
 * bounded by the master's MASTER_LOCATION_CACHE_TIME and half the lease)
 * is read through the replica locations the master gave then, without a
 * master round trip; the bytes are checked the same way, and any failure
 * asks the master afresh.
 *
 * An object held only on a node's disk tier is read from there (the node
 * loads it, its checksum is checked on the node and again here) and, once
 * read often enough, promoted back into memory; the call does this by
 * itself (one more master round trip).
 *
 * @param[out] buf    Destination of @p len bytes (need not be registered).
 * @param[out] size_p The object's size; set also on DANGO_ERANGE. May be NULL.
 * @return The number of bytes copied (>= 0 as int64), or:
 *         - DANGO_ENO_OBJECT     unknown key.
 *         - DANGO_ENOT_READY     the object is being written.
 *         - DANGO_ERANGE         @p len is smaller than the object.
 *         - DANGO_ECORRUPT       every replica failed its checksum (each is
 *                                reported and dropped), or the record on
 *                                disk did (it is dropped: the next get
 *                                answers DANGO_ENO_OBJECT).
 *         - DANGO_ELEASE_EXPIRED the read finished after the lease ended;
 *                                the bytes may have been overwritten.
 *         - DANGO_EREPLICA_UNAVAIL every replica's node is unreachable (for
 *                                a disk-only object: its node is not
 *                                serving its disk tier).
 *         - DANGO_ENOSPC         disk-only object: the node's staging
 *                                buffer is full of reads in flight.
 *         - DANGO_ETIMEDOUT      disk-only object: its node did not load it
 *                                in 10 s.
 *         - DANGO_EINVAL, DANGO_ENAMETOOLONG: bad key or arguments.
 */
DANGO_API int64_t dango_store_get(dango_store_client_t *c, const char *key,
                                  void *buf, size_t len, uint64_t *size_p);

/**
 * @brief Gets an object into memory the library allocates.
 * @param[out] value_p  The value; free it with dango_store_free().
 * @param[out] len_p    Its length.
 * @return 0, or the errors of dango_store_get() (but not DANGO_ERANGE).
 */
DANGO_API int dango_store_get_alloc(dango_store_client_t *c, const char *key,
                                    void **value_p, size_t *len_p);

/** @brief Frees a value returned by dango_store_get_alloc(). NULL is a no-op.
 */
DANGO_API void dango_store_free(void *value);

/**
 * @brief Registers @p buf for zero-copy put_from / get_into.
 * @return 0, or DANGO_EOVERLAP, DANGO_EINVAL, DANGO_ENOMEM.
 */
DANGO_API int dango_store_register_buffer(dango_store_client_t *c, void *buf,
                                          size_t len);

/** @brief Undoes dango_store_register_buffer(); DANGO_ENOTREG if unknown. */
DANGO_API int dango_store_unregister_buffer(dango_store_client_t *c, void *buf);

/**
 * @brief Put from a registered buffer: the bytes go to the replicas without
 *        an intermediate copy.
 * @return As dango_store_put(), plus DANGO_ENOTREG when [buf, buf+len) is
 *         not inside one registered buffer.
 */
DANGO_API int dango_store_put_from(dango_store_client_t *c, const char *key,
                                   const void *buf, size_t len,
                                   const dango_store_replicate_config_t *cfg);

/**
 * @brief Get into a registered buffer (no intermediate copy).
 * @return As dango_store_get(), plus DANGO_ENOTREG.
 */
DANGO_API int64_t dango_store_get_into(dango_store_client_t *c, const char *key,
                                       void *buf, size_t len);

/**
 * @brief Puts @p n objects with one master round trip per phase and one
 *        transfer batch. Keys must be distinct.
 *
 * @param[in]  bufs       Values; registered memory if @p registered, any
 *                        memory otherwise (copied through staging).
 * @param[out] results    Per key: 0 or an error of dango_store_put().
 * @return 0 when every key was attempted (see @p results), or an error that
 *         concerns the whole call (DANGO_EINVAL for n = 0 or n >
 *         DANGO_STORE_BATCH_MAX or NULL arrays; master unreachable).
 */
DANGO_API int dango_store_batch_put(dango_store_client_t *c, size_t n,
                                    const char *const *keys,
                                    const void *const *bufs, const size_t *lens,
                                    int registered,
                                    const dango_store_replicate_config_t *cfg,
                                    int *results);

/**
 * @brief Gets @p n objects with one master round trip and one transfer
 *        batch.
 * @param[out] results  Per key: bytes copied, or an error of
 *                      dango_store_get().
 * @return As dango_store_batch_put().
 */
DANGO_API int dango_store_batch_get(dango_store_client_t *c, size_t n,
                                    const char *const *keys, void *const *bufs,
                                    const size_t *lens, int registered,
                                    int64_t *results);

/**
 * @brief Puts @p n objects whose values are each gathered from several
 *        parts (the value is the parts' concatenation, in order).
 *
 * The scatter-gather form of dango_store_batch_put(): one master round trip
 * per phase and one transfer batch; with DANGO_STORE_REGISTERED the parts
 * go to the replicas without an intermediate copy.
 *
 * @param[in] parts    parts[i] lists n_parts[i] pieces of key i's value
 *                     (1 <= n_parts[i] <= DANGO_STORE_PARTS_MAX; the total
 *                     must be > 0).
 * @param[in] flags    DANGO_STORE_REGISTERED, DANGO_STORE_UPSERT.
 * @param[out] results Per key: 0 or an error of dango_store_put()
 *                     (DANGO_ENOTREG for a part outside registered memory
 *                     when DANGO_STORE_REGISTERED is given).
 * @return As dango_store_batch_put().
 */
DANGO_API int dango_store_batch_put_parts(
    dango_store_client_t *c, size_t n, const char *const *keys,
    const dango_store_iov_t *const *parts, const size_t *n_parts,
    unsigned flags, const dango_store_replicate_config_t *cfg, int *results);

/**
 * @brief Gets @p n objects, each scattered over several destination parts
 *        (filled in order; a part left over keeps its bytes).
 *
 * @param[in] flags    DANGO_STORE_REGISTERED (the parts are registered).
 * @param[out] results Per key: the object's size, or an error of
 *                     dango_store_get() (DANGO_ERANGE when the parts hold
 *                     fewer bytes than the object).
 * @return As dango_store_batch_put().
 */
DANGO_API int dango_store_batch_get_parts(dango_store_client_t *c, size_t n,
                                          const char *const              *keys,
                                          const dango_store_iov_t *const *parts,
                                          const size_t *n_parts, unsigned flags,
                                          int64_t *results);

/**
 * @brief Copies chosen byte ranges of @p n objects.
 *
 * With STORE_VERIFY_CHECKSUM on (the default) the whole value is read and
 * verified before any range is copied out, so no byte of a corrupt replica
 * is ever returned; with it off only the ranges travel.
 *
 * @param[in] ranges   ranges[i] lists n_ranges[i] pieces of key i
 *                     (1 <= n_ranges[i] <= DANGO_STORE_PARTS_MAX).
 * @param[in] flags    DANGO_STORE_REGISTERED (every dst is registered).
 * @param[out] results Per key: the bytes copied (the sum of the lengths),
 *                     or an error of dango_store_get() (DANGO_ERANGE when a
 *                     range ends past the object).
 * @return As dango_store_batch_put().
 */
DANGO_API int dango_store_batch_get_ranges(
    dango_store_client_t *c, size_t n, const char *const *keys,
    const dango_store_range_t *const *ranges, const size_t *n_ranges,
    unsigned flags, int64_t *results);

/**
 * @brief 1 if the object exists and is readable, 0 if not, or an error
 *        (bad key, master unreachable). A hit grants the read lease (an
 *        object held only on a disk tier exists too; it is not loaded).
 */
DANGO_API int dango_store_exist(dango_store_client_t *c, const char *key);

/**
 * @brief dango_store_exist() for @p n keys in one round trip.
 * @param[out] results  Per key: 1, 0 or an error.
 * @return 0, or an error that concerns the whole call.
 */
DANGO_API int dango_store_batch_exist(dango_store_client_t *c, size_t n,
                                      const char *const *keys, int *results);

/**
 * @brief The object's size in bytes, or DANGO_ENO_OBJECT, DANGO_ENOT_READY
 *        and the errors of dango_store_exist().
 */
DANGO_API int64_t dango_store_size(dango_store_client_t *c, const char *key);

/**
 * @brief Removes an object.
 * @param[in] force  Also while it is leased or hard pinned. A forced remove
 *                   of a leased object makes it invisible at once but keeps
 *                   its space allocated until the lease ends (a reader may
 *                   still be copying it). If a client read the object in
 *                   the last MASTER_LOCATION_CACHE_TIME (1 s), the call
 *                   first waits until that client's location cache can no
 *                   longer serve it.
 * @return 0, or DANGO_ENO_OBJECT, DANGO_ELEASE_HELD (leased and not
 *         @p force), DANGO_ENOT_READY (a put is in progress),
 *         DANGO_ETIMEDOUT (readers' cached locations outlasted
 *         STORE_RPC_TIMEOUT), bad key, master unreachable.
 */
DANGO_API int dango_store_remove(dango_store_client_t *c, const char *key,
                                 int force);

/**
 * @brief Removes @p n objects in one round trip.
 * @param[out] results  Per key: an error of dango_store_remove() or 0.
 */
DANGO_API int dango_store_batch_remove(dango_store_client_t *c, size_t n,
                                       const char *const *keys, int force,
                                       int *results);

/**
 * @brief Removes every object whose key matches the POSIX extended regular
 *        expression @p regex (objects leased or being written are skipped
 *        unless @p force; objects being written are always skipped).
 * @return The number removed, or DANGO_EINVAL (bad regex) / master errors.
 */
DANGO_API int64_t dango_store_remove_by_regex(dango_store_client_t *c,
                                              const char *regex, int force);

/** @brief Removes every object; as dango_store_remove_by_regex(). */
DANGO_API int64_t dango_store_remove_all(dango_store_client_t *c, int force);

/**
 * @brief Describes one object without taking a lease.
 * @return 0 (also for an object held only on a disk tier: @p info->on_disk
 *         is 1, with no replica), DANGO_ENO_OBJECT, bad key, master errors.
 */
DANGO_API int dango_store_stat(dango_store_client_t *c, const char *key,
                               dango_store_object_info_t *info);

/** @brief Pool-wide figures. @return 0 or master errors. */
DANGO_API int dango_store_pool_stat(dango_store_client_t    *c,
                                    dango_store_pool_info_t *info);

/**
 * @brief Calls @p cb for every complete object whose key starts with
 *        @p prefix ("" or NULL = all), in pages of up to 1024 keys.
 * @return 0, the first non-zero return of @p cb, or master errors.
 */
DANGO_API int dango_store_list(dango_store_client_t *c, const char *prefix,
                               dango_store_list_cb cb, void *arg);

/**
 * @brief Adds a replica of each of @p n committed objects on the node
 *        whose segment name is @p target (what a node registered with the
 *        transfer engine; `dango stat KEY` shows replicas' segment names).
 *
 * The value is read from an existing replica, checked (record header and
 * xxh3 of the value; a corrupt replica is reported and another tried, a
 * wrong byte is never copied), written into a region the master allocated
 * on @p target, and made visible to readers as one more COMPLETE replica
 * only once it is all there. The copy is of the value current at the
 * start: if the object is replaced or removed meanwhile the copy is
 * dropped. The conductor uses this to move hot KV blocks next to the
 * prefill instance that will read them.
 *
 * @param[in]  c        Client.
 * @param[in]  n        Keys, 0..DANGO_STORE_BATCH_MAX.
 * @param[in]  keys     Keys (borrowed).
 * @param[in]  target   Segment name of the node to copy to.
 * @param[out] results  Per key: 0 (copied), DANGO_EOBJ_EXISTS (@p target
 *                      already holds a replica), DANGO_ENO_OBJECT (no
 *                      committed object, or it changed during the copy),
 *                      DANGO_ENO_SEGMENT (no node named @p target),
 *                      DANGO_ENOSPC (no room there), DANGO_ERANGE (the
 *                      object has DANGO_STORE_REPLICA_MAX replicas),
 *                      DANGO_ECORRUPT / DANGO_EREPLICA_UNAVAIL (no source
 *                      replica could be read intact), DANGO_EREPLICA_UNAVAIL
 *                      also when commit words are durable (HA master or
 *                      STORE_SYNC_COMMIT) and the new replica's could not
 *                      be written (the replica is dropped), transfer
 *                      errors, or a bad key's error.
 * @return 0 (see @p results), or DANGO_EINVAL (bad arguments), DANGO_ENOMEM,
 *         master errors (unreachable, DANGO_EPROTO).
 * @note Thread safety: as every call on @p c.
 */
DANGO_API int dango_store_batch_replicate(dango_store_client_t *c, size_t n,
                                          const char *const *keys,
                                          const char *target, int *results);

DANGO_END_DECLS

#endif /* DANGO_STORE_H */
