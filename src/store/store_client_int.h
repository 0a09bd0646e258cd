/*
 * Store client internals shared by store_client.c (lifecycle, liveness,
 * segments, staging, committer, thin RPC wrappers), store_client_put.c
 * (the write path), store_client_get.c (the read path) and
 * store_mooncake.c (the Mooncake C API on top of the native one).
 */
#ifndef DANGO_STORE_CLIENT_INT_H
#define DANGO_STORE_CLIENT_INT_H

#define DANGO_LOG_COMPONENT dango__log_store_client

#include <pthread.h>
#include <stdint.h>
#include <dango/error.h>
#include <dango/log.h>
#include <dango/store.h>
#include <dango/xfer.h>
#include "common/config_table.h"
#include "common/hmap.h"
#include "common/list.h"
#include "net/rpc.h"
#include "store/store_alloc.h"
#include "dango_store.pb-c.h"

extern dango_log_component_t dango__log_store_client;

/* Options of the client (STORE_*), see store_client_config.c. */
typedef struct store_client_config {
    char         *master;
    size_t        segment_size;
    size_t        local_buffer_size;
    unsigned long replica_num;
    uint64_t      ping_interval;
    unsigned long ping_failures;
    uint64_t      rpc_timeout;
    uint64_t      connect_timeout;
    unsigned long master_lanes;
    int           master_local;
    uint64_t      transfer_timeout;
    uint64_t      wait_poll;
    int           verify_checksum;
    size_t        register_threshold;
    unsigned long commit_queue;
    char         *disk_path;
    size_t        disk_size;
    size_t        disk_buffer;
    size_t        disk_staging;
    double        disk_high_watermark;
    char         *kv_events_url;
    char         *kv_events_prefix;
    uint64_t      kv_events_interval;
    char         *cluster_id;
    uint64_t      ha_timeout;
    int           sync_commit;
    uint64_t      location_cache_time;
    unsigned long location_cache_entries;
    size_t        put_slots;
} store_client_config_t;

extern dango_config_table_t dango__store_client_config_table;

/* Bytes of staging kept beyond local_buffer_size for record headers and
 * commit words, so that registered-buffer calls work without a buffer. */
#define SC_STAGING_RESERVE (1u << 20)
/* Bound on STORE_MASTER_LANES. */
#define SC_MASTER_LANES_MAX 256
/* Commit words written by one committer batch. */
#define SC_COMMIT_BATCH 256
/* Transfer batches kept for reuse, and the capacity of each. */
#define SC_POOL_MAX 64
#define SC_POOL_CAP 64
/* Records of one remount report chunk, and the key bytes that end one. */
#define SC_REPORT_CHUNK       2048
#define SC_REPORT_CHUNK_BYTES (1u << 20)
/* Smallest and largest contributed segment (spec store.md §7.3). */
#define SC_SEGMENT_MIN (1ull << 10)
#define SC_SEGMENT_MAX (1ull << 40)

/*
 * A segment this client has talked to. Entries are created on first use
 * and live until the client is destroyed, so pointers to them stay valid
 * without reference counts; a stale transfer-engine handle is replaced in
 * place (under the cache's lock) when a transfer says the peer restarted.
 */
typedef struct sc_seg {
    struct sc_seg     *next;       /* hash chain */
    char              *name;       /* segment name */
    uint64_t           hash;       /* of name */
    dango_segment_id_t id;         /* transfer-engine handle (if !own) */
    int                open;       /* id is valid */
    int                same_host;  /* transport shm, or own */
    int                own;        /* this client's contributed segment */
    uint32_t           inflight;   /* atomic: requests in flight on it */
    uint64_t           fail_until; /* no new open before (monotonic ns) */
    int                fail_rc;    /* what the last open failed with */
} sc_seg_t;

/* Location cache (store_client_loc.c): shards, each under its own lock. */
#define SC_LOC_SHARDS 16
/* Bound on STORE_LOCATION_CACHE_ENTRIES. */
#define SC_LOC_ENTRIES_MAX (1u << 24)

/* One cached GetItem: immutable once added, freed with its last reference
 * (the shard's map holds one, each get using it another). */
typedef struct sc_loc {
    dango_hmap_node_t     node;        /* key: the copy behind the replicas */
    dango_list_link_t     link;        /* shard FIFO, oldest first */
    uint32_t              refs;        /* atomic */
    uint64_t              epoch;       /* c->loc_epoch when looked up */
    uint64_t              t0;          /* the request was sent (ns) */
    uint64_t              valid_until; /* used only before (ns) */
    Dango__Store__GetItem it;          /* replicas point into the entry */
} sc_loc_t;

typedef struct sc_loc_shard {
    pthread_mutex_t   lock;
    dango_hmap_t      map;
    dango_list_link_t fifo;
    size_t            count;
    uint64_t          gen; /* forgets in this shard */
} sc_loc_shard_t;

/* What a lookup saw, so that a later add can tell a forget ran since. */
typedef struct sc_loc_tag {
    uint64_t hash, gen, epoch;
} sc_loc_tag_t;

/* Slots (store_client_slot.c): record lengths pooled at once, and slots
 * kept per length. */
#define SC_SLOT_CLASSES 4
#define SC_SLOT_MAX     64

/* A region the master reserved for one coming put of this client. */
typedef struct sc_slot {
    uint64_t  put_id;
    uint64_t  use_until; /* no write into it starts after (monotonic ns) */
    unsigned  nrep;
    sc_seg_t *segs[DANGO_STORE_REPLICA_MAX];
    uint64_t  addrs[DANGO_STORE_REPLICA_MAX];
} sc_slot_t;

/* The slots of one record length and replica count. */
typedef struct sc_slot_class {
    uint64_t  rec_len; /* 0: unused class */
    unsigned  replica_num;
    unsigned  asked;       /* requests for more in flight */
    uint64_t  last_use;    /* ns, for replacing the least used class */
    uint64_t  quiet_until; /* ns: no request for more before */
    size_t    n;
    sc_slot_t s[SC_SLOT_MAX];
} sc_slot_class_t;

/* A piece of registered memory borrowed for one call. */
typedef enum sc_buf_kind {
    SC_BUF_NONE = 0, /* nothing to release */
    SC_BUF_STAGING,  /* from the staging allocator */
    SC_BUF_BOUNCE,   /* malloc'd and registered for this call */
    SC_BUF_USERREG   /* the caller's memory, registered for this call */
} sc_buf_kind_t;

typedef struct sc_buf {
    void         *ptr;
    size_t        len;
    sc_buf_kind_t kind;
} sc_buf_t;

/* One queued commit word. */
typedef struct sc_commit {
    sc_seg_t *seg;
    uint64_t  addr; /* address of the commit field in the replica */
    uint64_t  value;
} sc_commit_t;

/* A buffer the application registered. */
typedef struct sc_ureg {
    uintptr_t addr;
    size_t    len;
} sc_ureg_t;

struct dango_store_client {
    store_client_config_t cfg;
    char                 *master_addr;
    uint64_t              id_hi, id_lo;   /* client id */
    uint64_t              seg_hi, seg_lo; /* contributed segment id */
    char                  host_id[64];
    dango_xfer_engine_t  *eng;
    const char           *name; /* engine segment name */

    /* Contributed segment. */
    void     *seg_base;
    uint64_t  seg_size;
    sc_seg_t *own_seg;

    /* Master connection (reconnects by itself on the next call). */
    dango_rpc_client_t *rpc;
    int                 mounted; /* atomic: the master has our segment */
    int                 health;  /* atomic: 0 or DANGO_EPEER_GONE */

    /* Staging: registered memory for headers, small values and bounces. */
    void                *staging;
    size_t               staging_size;
    pthread_mutex_t      staging_lock;
    dango_store_alloc_t *staging_alloc;

    /* Segment cache: chained hash, rwlock (reads on every transfer). */
    pthread_rwlock_t seg_lock;
    pthread_mutex_t  seg_open_lock; /* one open or reopen at a time */
    sc_seg_t       **seg_tab;
    size_t           seg_tab_size;
    size_t           seg_count;

    /* Application-registered buffers, sorted by address. */
    pthread_rwlock_t ureg_lock;
    sc_ureg_t       *ureg;
    size_t           ureg_count, ureg_cap;

    /* Transfer batches for reuse, oldest first (see dango__sc_batch_get). */
    pthread_mutex_t     pool_lock;
    dango_xfer_batch_t *pool[SC_POOL_MAX];
    size_t              pool_head, pool_count;

    /* Ping thread. */
    pthread_t       ping_thread;
    pthread_mutex_t ping_lock;
    pthread_cond_t  ping_cond;
    int             ping_stop;
    int             ping_started;

    /* Committer thread: a bounded ring of commit words. */
    pthread_t           commit_thread;
    pthread_mutex_t     commit_lock;
    pthread_cond_t      commit_cond;
    sc_commit_t        *commit_ring;
    size_t              commit_cap, commit_head, commit_count;
    int                 commit_stop;
    int                 commit_started;
    uint64_t           *commit_words; /* registered, SC_COMMIT_BATCH entries */
    dango_xfer_batch_t *commit_batch;

    /* Disk tier and its thread (store_client_disk.c); NULL without one. */
    struct sc_disk *disk;
    /* KV event publisher (store_client_events.c), or NULL. */
    struct sc_events *events;
    /* Leader following (store_client_ha.c); NULL with a plain address. */
    struct sc_ha *ha;

    /* Location cache (store_client_loc.c); NULL when off. */
    sc_loc_shard_t *loc;
    size_t          loc_shard_cap;
    uint64_t        loc_epoch; /* atomic: forget-all count */
    uint64_t        loc_hits, loc_misses, loc_stale; /* atomic */
    /* Slots (store_client_slot.c); classes NULL when off. */
    pthread_mutex_t  slot_lock;
    int              slot_ready; /* the lock is initialised */
    sc_slot_class_t *slot_cls;
    uint64_t         slot_epoch; /* forget-all count, under slot_lock */
    uint64_t        *slot_free;  /* put ids to give back */
    size_t           slot_nfree;
    uint64_t         slot_puts, slot_fallbacks; /* atomic */
};

/* ---------- store_client.c ---------- */

/* Sleeps @retry_ms (at least 1 ms) for a call the master answered
 * DANGO_EAGAIN, unless that would pass @deadline (DANGO_ETIMEDOUT). */
int dango__sc_again_wait(uint32_t retry_ms, uint64_t deadline);

/* Validates a key; its length in *len_p. */
int dango__sc_key_check(const char *key, size_t *len_p);

/* One call to the master with STORE_RPC_TIMEOUT; @reply_desc NULL for
 * methods without a reply. A call that may be repeated (GetReplicaList,
 * Exist, List, PoolStat, PutEnd) is sent once more when its connection is
 * lost after it went (DANGO_ECONNRESET). */
int dango__sc_call(dango_store_client_t *c, uint32_t method,
                   const ProtobufCMessage           *req,
                   const ProtobufCMessageDescriptor *reply_desc,
                   ProtobufCMessage **reply_p, uint64_t timeout_ns);

/* dango__sc_call() on one given RPC client (one attempt). */
int dango__sc_call_rpc(dango_store_client_t *c, dango_rpc_client_t *rpc,
                       uint32_t method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *reply_desc,
                       ProtobufCMessage **reply_p, uint64_t timeout_ns);

/* Segment cache: the entry of @name, opened if needed. */
int dango__sc_seg_get(dango_store_client_t *c, const char *name,
                      sc_seg_t **seg_p);
/* The cached entry of @name (open or not), or NULL; never opens. */
sc_seg_t *dango__sc_seg_peek(dango_store_client_t *c, const char *name);
/* Consistent snapshot of the mutable fields of @seg. */
void dango__sc_seg_state(dango_store_client_t *c, const sc_seg_t *seg,
                         int *open_p, int *same_host_p, uint64_t *fail_until_p);
/* Replaces the handle of @seg if it still is @old_id (peer restarted). */
int dango__sc_seg_reopen(dango_store_client_t *c, sc_seg_t *seg,
                         dango_segment_id_t old_id);
/* The current handle of @seg (after a reopen by another thread). */
dango_segment_id_t dango__sc_seg_id(dango_store_client_t *c, sc_seg_t *seg);

/* Registered memory for one call: staging, else a registered bounce. */
int dango__sc_buf_get(dango_store_client_t *c, size_t len, sc_buf_t *b);
/* The caller's memory registered for this call (or found registered). */
int  dango__sc_buf_user(dango_store_client_t *c, void *ptr, size_t len,
                        sc_buf_t *b);
void dango__sc_buf_put(dango_store_client_t *c, sc_buf_t *b);
/* 1 if [ptr, ptr+len) lies in a buffer the application registered. */
int dango__sc_ureg_covers(dango_store_client_t *c, const void *ptr, size_t len);

/* The WRITE request of commit word @w to another client's segment, its
 * value kept in @word (registered memory). */
void dango__sc_commit_req(dango_store_client_t *c, const sc_commit_t *w,
                          uint64_t *word, dango_xfer_req_t *req);
/* Writes commit words from the calling thread, SC_COMMIT_BATCH per
 * transfer batch, and waits; with @ok, ok[i] says whether word i is in
 * place (stored, or acknowledged by its node). */
void dango__sc_commit_sync(dango_store_client_t *c, const sc_commit_t *w,
                           size_t n, int *ok);
/* Queues commit words for the committer thread; writes them now when they
 * all go to this host (plain copies) or when the queue is full. */
void dango__sc_commit_queue(dango_store_client_t *c, const sc_commit_t *w,
                            size_t n);

/* A transfer batch for @n requests (pooled when small) and its return. */
int  dango__sc_batch_get(dango_store_client_t *c, size_t n,
                         dango_xfer_batch_t **batch_p);
void dango__sc_batch_put(dango_store_client_t *c, dango_xfer_batch_t *batch);

/* Waits for a transfer batch with STORE_TRANSFER_TIMEOUT; on a timeout it
 * still waits for the requests to end (bounded by the transports' own
 * timeouts) so that no memory of the call is touched after it returns. */
int dango__sc_batch_wait(dango_store_client_t *c, dango_xfer_batch_t *batch);

/* Reports a bad replica to the master (best effort): 0, or the error of
 * the call (logged). */
int dango__sc_report_bad(dango_store_client_t *c, const char *key,
                         uint64_t put_id, const char *segment, uint64_t addr,
                         int reason);

/* Fills a wire replicate config from @cfg (NULL = defaults). */
int dango__sc_fill_config(dango_store_client_t                 *c,
                          const dango_store_replicate_config_t *cfg,
                          Dango__Store__ReplicateConfig        *wire);

/* 1 when [@addr, @addr + @len) lies inside this client's own segment (an
 * address from the master is checked before it is used as a pointer). */
int dango__sc_own_range_ok(const dango_store_client_t *c, uint64_t addr,
                           uint64_t len);

/* ---------- store_client_events.c ---------- */

/* Starts the KV event publisher when STORE_KV_EVENTS_URL is set (after the
 * ping thread). 0, DANGO_ECONFIG (bad URL), DANGO_ENOMEM or a thread
 * error. Stop is a no-op when it never started. */
int  dango__sc_events_start(dango_store_client_t *c);
void dango__sc_events_stop(dango_store_client_t *c);
/* 1 when @key (@len bytes) names a KV block: @prefix (@plen bytes) and
 * exactly 16 lowercase hex digits, copied to @hex[0..16] with a NUL;
 * else 0 (such keys are not published). */
int dango__sc_ev_block_hex(const char *prefix, size_t plen, const uint8_t *key,
                           size_t len, char *hex);

/* ---------- store_client_put.c ---------- */

#define SC_PUT_REGISTERED (1u << 0) /* bufs are registered memory */
#define SC_PUT_UPSERT     (1u << 1)

/* The values of a put: one buffer per key (bufs/lens), or several parts
 * per key (parts/n_parts, when parts is not NULL). */
typedef struct sc_vals {
    const void *const              *bufs;
    const size_t                   *lens;
    const dango_store_iov_t *const *parts;
    const size_t                   *n_parts;
} sc_vals_t;

int dango__sc_put_many(dango_store_client_t *c, size_t n,
                       const char *const *keys, const sc_vals_t *vals,
                       unsigned                              flags,
                       const dango_store_replicate_config_t *cfg, int *results);

/* ---------- store_client_get.c ---------- */

#define SC_GET_REGISTERED (1u << 0) /* bufs are registered memory */

/* Where the values of a get go: one buffer per key (bufs/lens), parts
 * filled in order (parts/n_parts) or ranges (ranges/n_ranges); the first
 * non-NULL of parts and ranges wins over bufs. */
typedef struct sc_dsts {
    void *const                      *bufs;
    const size_t                     *lens;
    const dango_store_iov_t *const   *parts;
    const size_t                     *n_parts;
    const dango_store_range_t *const *ranges;
    const size_t                     *n_ranges;
} sc_dsts_t;

/*
 * Gets @n objects into @dsts. With @allocs (and @dsts NULL) the values go
 * to memory allocated here (allocs[i], freed with dango_free(); NULL on
 * failure). @sizes (may be NULL) receives each object's size when known.
 * Returns 0 or an error of the whole call.
 */
int dango__sc_get_many(dango_store_client_t *c, size_t n,
                       const char *const *keys, const sc_dsts_t *dsts,
                       unsigned flags, int64_t *results, uint64_t *sizes,
                       void **allocs);

/* ---------- store_client_slot.c: slots for one round trip puts ---------- */

/* Sets up the pool (nothing when STORE_PUT_SLOTS is 0). 0 or DANGO_ENOMEM.
 * Cleanup frees it (slots still held are the master's to reclaim: call
 * dango__sc_slot_release_all() first). */
int  dango__sc_slot_init(dango_store_client_t *c);
void dango__sc_slot_cleanup(dango_store_client_t *c);
/* Slots of @rec_len record bytes are worth pooling (the pool is on and
 * holds at least two). */
int dango__sc_slot_fits(const dango_store_client_t *c, uint64_t rec_len);
/*
 * Takes a slot of @rec_len bytes and @replica_num replicas into *@s: 1, or
 * 0 when there is none. Either way *@want_p is how many to ask for now in
 * the caller's PutBind (0: enough are pooled or asked for already), and
 * *@epoch_p the pool's epoch to hand back to dango__sc_slot_add(). A
 * nonzero *@want_p counts as a request in flight until that call.
 */
int dango__sc_slot_take(dango_store_client_t *c, uint64_t rec_len,
                        unsigned replica_num, sc_slot_t *s, uint32_t *want_p,
                        uint64_t *epoch_p);
/*
 * Ends a request for slots of dango__sc_slot_take(): pools the @n granted
 * @items (NULL on a failed call), asked for at @t0 (monotonic ns) under
 * @epoch, usable for @slot_ms. Slots of another epoch, or without room,
 * are given back.
 */
void dango__sc_slot_add(dango_store_client_t *c, uint64_t rec_len,
                        unsigned replica_num, uint64_t epoch,
                        Dango__Store__PutStartItem *const *items, size_t n,
                        uint64_t t0, uint32_t slot_ms);
/* Puts slot @s back: in the pool when still usable and @reuse, else on
 * the list to give back. */
void dango__sc_slot_return(dango_store_client_t *c, uint64_t rec_len,
                           unsigned replica_num, const sc_slot_t *s, int reuse);
/* Moves up to @max put ids of slots to give back into @ids. */
size_t dango__sc_slot_take_free(dango_store_client_t *c, uint64_t *ids,
                                size_t max);
/* Takes every pooled slot out of use, to be given back (their master is
 * gone or restarted, or it does not know one of them). */
void dango__sc_slot_forget_all(dango_store_client_t *c);
/* Gives back slots whose time to be written is over (ping thread), or
 * every slot (@all, at destroy), in PutBinds of no keys. */
void dango__sc_slot_flush(dango_store_client_t *c, int all);
/* Checks the replicas the master gave for a record of @rec bytes and
 * resolves their segments into @segs / @addrs (*@nrep_p of them). 0 or
 * DANGO_EPROTO / a segment error. @what (a key, or "a slot") names them
 * in errors. */
int dango__sc_replicas_in(dango_store_client_t *c, const char *what,
                          Dango__Store__Replica *const *reps, size_t n,
                          uint64_t rec, sc_seg_t **segs, uint64_t *addrs,
                          unsigned *nrep_p);

/* ---------- store_client_loc.c: the location cache ---------- */

/* Sets up the cache (nothing when STORE_LOCATION_CACHE_TIME or _ENTRIES
 * is 0). 0 or DANGO_ENOMEM. Cleanup frees every entry (none in use). */
int  dango__sc_loc_init(dango_store_client_t *c);
void dango__sc_loc_cleanup(dango_store_client_t *c);

/* The valid entry of @key, referenced (release it), or NULL; *@tag is
 * filled either way for a later dango__sc_loc_add(). The cache must be
 * on. Thread-safe, as are all of these. */
sc_loc_t *dango__sc_loc_find(dango_store_client_t *c, const char *key,
                             size_t klen, sc_loc_tag_t *tag);
void      dango__sc_loc_release(sc_loc_t *e);

/* Caches a copy of @it (a GetReplicaList answer for @key whose request
 * was sent at @t0) unless it holds no lease, is disk-staged, is already
 * too old, or a forget of its shard ran since @tag was taken. Best
 * effort: out of memory caches nothing. */
void dango__sc_loc_add(dango_store_client_t *c, const char *key, size_t klen,
                       const sc_loc_tag_t *tag, const Dango__Store__GetItem *it,
                       uint64_t t0);

/* Drops @key's entry (no-op when off); with @tag (from a lookup of the
 * same key) the tag is renewed so that the caller may still add. */
void dango__sc_loc_forget(dango_store_client_t *c, const char *key, size_t klen,
                          sc_loc_tag_t *tag);
/* Drops the entries of @n keys (NULL ones skipped). */
void dango__sc_loc_forget_keys(dango_store_client_t *c, size_t n,
                               const char *const *keys);
/* Drops every entry (entries added before are never used again). */
void dango__sc_loc_forget_all(dango_store_client_t *c);

/* ---------- store_client_ha.c: following an elected master ---------- */

/*
 * With an etcd:// master address: reads the leader from etcd, watches it
 * and connects to each new leader (c->ha set; c->rpc stays NULL). 0,
 * DANGO_EINVAL (bad endpoints or cluster id), DANGO_ENOMEM, a thread
 * error. No leader need exist yet.
 */
int  dango__sc_ha_create(dango_store_client_t *c);
void dango__sc_ha_destroy(dango_store_client_t *c);

/*
 * dango__sc_call() through the current leader: retried with backoff on
 * another leader (or the same one once it serves) after DANGO_ENOT_LEADER,
 * DANGO_ESTALE_TERM, a refused or lost connection, and a timeout when the
 * leader changed meanwhile; bounded by @timeout_ns in all (0:
 * STORE_HA_TIMEOUT), each attempt by STORE_RPC_TIMEOUT. Then the last
 * error, or DANGO_ENOT_LEADER when no leader was known at all.
 */
int dango__sc_ha_call(dango_store_client_t *c, uint32_t method,
                      const ProtobufCMessage           *req,
                      const ProtobufCMessageDescriptor *reply_desc,
                      ProtobufCMessage **reply_p, uint64_t timeout_ns);

/* 1 when puts and copies write their commit words before they return (HA
 * mode or STORE_SYNC_COMMIT). */
int dango__sc_commit_durable_mode(const dango_store_client_t *c);
/* Writes commit words now and waits; ok[i]: word i is in place. A word
 * that is not is reported to the master as a bad replica of keys[i], which
 * drops it (no rebuild would find it); after a report fails the rest are
 * not tried (counted in one warning). Used by puts and copies. */
void dango__sc_commit_durable(dango_store_client_t *c, const sc_commit_t *w,
                              const char *const *keys, size_t n, int *ok);

/* ---------- store_client_disk.c ---------- */

/*
 * Opens the disk tier (STORE_DISK_PATH, STORE_DISK_SIZE) and starts its
 * thread; 0 when none is configured. DANGO_EINVAL without a segment or
 * size, or the errors of dango__sd_open().
 */
int dango__sc_disk_start(dango_store_client_t *c);
/* Stops the thread and closes the tier (no-op without one). */
void dango__sc_disk_stop(dango_store_client_t *c);

#endif
