/*
 * Store master internals, shared by
 *   store_master_seg.c    the master state: lifecycle, clients, segments,
 *                         placement, parked regions, timers' work;
 *   store_master_obj.c    the object operations (put, get, remove, list...)
 *                         and eviction;
 *   store_master.c        the embeddable master: loop, RPC glue, metrics;
 *   store_master_admin.c  the admin HTTP server;
 *   store_master_config.c the MASTER_* option table.
 *
 * The master state (ms_state_t) is plain single-threaded data: every
 * function takes an explicit `now` in milliseconds and never reads a clock,
 * so tests drive it deterministically; the embeddable master calls it on
 * its loop thread only. See docs/design/store.md, "Master".
 */
#ifndef DANGO_STORE_MASTER_INT_H
#define DANGO_STORE_MASTER_INT_H

#define DANGO_LOG_COMPONENT dango__log_master

#include <stddef.h>
#include <regex.h>
#include <stdint.h>
#include <dango/error.h>
#include <dango/log.h>
#include <dango/metadata.h>
#include <dango/store.h>
#include <dango/store_master.h>
#include "common/config_table.h"
#include "common/hmap.h"
#include "common/list.h"
#include "common/loop.h"
#include "net/rpc.h"
#include "store/store_alloc.h"
#include "store/store_proto.h"

extern dango_log_component_t dango__log_master;

/* Segment size limits (spec store.md §7.3). */
#define MS_SEG_MIN (1ull << 10)
#define MS_SEG_MAX (1ull << 40)
/* Longest segment name and host id. */
#define MS_NAME_MAX 255
/* Segments probed for one replica (spec §3.6, allocation_strategy.h). */
#define MS_PROBE_MAX 100
/* Keys of one List page, at most and by default. */
#define MS_LIST_MAX 1024
/* Pause after an eviction pass that found nothing to evict (ms). */
#define MS_EVICT_IDLE_MS 100
/* Buckets moved per timer tick while a hash map resizes. */
#define MS_REHASH_STEP 1024

/* ---------- options ---------- */

/* MASTER_* options as parsed from the table (times in ns). */
typedef struct ms_config {
    char    *listen;
    char    *admin_listen;
    char    *metadata_listen;
    uint64_t lease_ttl;
    uint64_t client_ttl;
    uint64_t monitor_interval;
    uint64_t put_discard_timeout;
    uint64_t put_release_timeout;
    uint64_t zombie_grace;
    uint64_t rebuild_window;
    uint64_t soft_pin_ttl;
    uint64_t max_soft_pin_ttl;
    double   evict_high_watermark;
    double   evict_ratio;
    uint64_t evict_interval;
    int      evict_soft_pinned;
    long     view_version;
    /* High availability (store_master_ha.c). */
    char    *ha;
    char    *cluster_id;
    uint64_t ha_lease_ttl;
    char    *advertise;
    int      disk_offload;
    long     disk_promote_hits;
    long     disk_queue;
    uint64_t location_cache_time;
    size_t   put_slots;
    long     local_lanes;
} ms_config_t;

extern dango_config_table_t dango__master_config_table;

/* Parses and range-checks the options. 0, DANGO_ECONFIG or DANGO_ENOMEM. */
int  dango__master_config_load(const dango_config_t *cfg, ms_config_t *c);
void dango__master_config_free(ms_config_t *c);

/* What the state needs of the options, in milliseconds. */
typedef struct ms_params {
    uint64_t lease_ttl_ms;
    uint64_t client_ttl_ms;
    uint64_t put_discard_ms;
    uint64_t put_release_ms;
    uint64_t zombie_grace_ms;
    uint64_t rebuild_window_ms;
    uint64_t soft_pin_ttl_ms;
    uint64_t max_soft_pin_ttl_ms;
    double   evict_high_watermark;
    double   evict_ratio;
    int      evict_soft_pinned;
    int64_t  view_version;
    uint64_t seed; /* placement randomness (0 = from the kernel) */
    /* Disk tier (store_master_disk.c); 0 takes the default. */
    int      disk_no_offload;   /* evict without offloading */
    unsigned disk_promote_hits; /* disk reads that promote (2) */
    unsigned disk_queue;        /* offloads queued per node (256) */
    /* Clients may reuse the locations GetReplicaList gives them this long
     * (0: they may not; see dango__store_ms_cache_grant()). */
    uint64_t location_cache_ms;
    /* Record bytes of unbound slots one client may hold (0: no slots; see
     * dango__store_ms_slot_grant()). */
    uint64_t put_slot_bytes;
} ms_params_t;

/* Defaults of the table, for tests. */
void dango__store_ms_params_default(ms_params_t *p);

/* ---------- data ---------- */

typedef struct ms_state  ms_state_t;
typedef struct ms_obj    ms_obj_t;
typedef struct ms_ver    ms_ver_t;
typedef struct ms_seg    ms_seg_t;
typedef struct ms_client ms_client_t;

/* A client id (UUID) as it travels. */
typedef struct ms_cid {
    uint64_t hi;
    uint64_t lo;
} ms_cid_t;

/* Segments of one name (one node): placement puts replicas on distinct
 * names. */
typedef struct ms_name {
    dango_hmap_node_t node; /* in st->names, key = name */
    dango_list_link_t segs; /* ms_seg_t.name_link */
    unsigned          nsegs;
    char              name[];
} ms_name_t;

typedef struct ms_client {
    dango_hmap_node_t node; /* in st->clients, key = id_key */
    ms_cid_t          id;
    uint8_t           id_key[16];
    int               ok;         /* registered its segments (mount/remount) */
    uint64_t          last_seen;  /* ms of the last ping, mount or put */
    dango_list_link_t segs;       /* ms_seg_t.client_link */
    dango_list_link_t puts;       /* ms_ver_t.client_link, in flight */
    uint64_t          slot_bytes; /* record bytes of its unbound slots */
    struct ms_tomb   *tombs;      /* removed records in its segments */
    size_t            ntombs, tombs_cap;
    struct ms_kv_q   *kv; /* KV events for it, once it asked */
} ms_client_t;

/* A removed object's record, for its node to clear (see PingResp). */
typedef struct ms_tomb {
    uint64_t addr;
    uint64_t put_id;
} ms_tomb_t;

/* Tombs kept per client between two pings; more are dropped (counted). */
#define MS_TOMB_MAX 65536

struct ms_seg {
    dango_hmap_node_t    node; /* in st->segs_by_id, key = id_key */
    uint8_t              id_key[16];
    uint64_t             id_hi;
    uint64_t             id_lo;
    ms_name_t           *name;
    char                *host_id;
    ms_client_t         *client;
    dango_list_link_t    name_link;
    dango_list_link_t    client_link;
    dango_list_link_t    replicas; /* ms_rep_t.seg_link: live regions */
    dango_store_alloc_t *alloc;
    uint64_t             base;
    uint64_t             size;
    uint64_t             capacity; /* allocator's usable bytes */
    uint64_t             granule;
    uint64_t             used; /* bytes allocated (granule-rounded) */
    size_t               idx;  /* in st->segs */
    int recovering; /* its node is still reporting records: no new objects */
};

/* One region of one version. seg == NULL once dropped (region gone). */
typedef struct ms_rep {
    dango_list_link_t seg_link;
    ms_seg_t         *seg;
    ms_ver_t         *ver;
    uint64_t          off; /* offset in the segment */
    uint32_t          status;
} ms_rep_t;

/*
 * One put of an object: its value's size and checksum and its replica
 * regions. A version is the object's current one (cur, COMPLETE), its
 * pending one (pend, PROCESSING, in flight), or parked: detached from any
 * object and holding its regions until free_at (a preempted or revoked
 * zombie put, or the old value of an upsert still under read lease).
 */
struct ms_ver {
    ms_obj_t         *obj;           /* NULL when parked */
    ms_client_t      *client;        /* writer while in flight, else NULL */
    dango_list_link_t inflight_link; /* st->inflight, oldest first */
    dango_list_link_t client_link;   /* client->puts */
    ms_cid_t          cid;           /* writer */
    uint64_t          put_id;
    uint64_t          size;     /* value bytes */
    uint64_t          checksum; /* xxh3-64 of the value */
    uint64_t          rec_len;  /* record bytes of each replica */
    uint64_t          start;    /* ms of PutStart */
    uint64_t          end;      /* ms of PutEnd (or CopyEnd), else 0 */
    uint64_t          free_at;  /* parked: ms when the regions are freed */
    uint64_t          soft_pin_ttl;
    size_t            heap_idx; /* parked: index in st->parked */
    uint32_t          soft_pin; /* dango_store_soft_pin_t for PutEnd */
    uint8_t           nrep;
    uint8_t           nlive;    /* replicas with a region */
    uint8_t           restored; /* rebuilt from node reports */
    uint64_t          copy_id;  /* parked copy in flight (CopyStart), or 0 */
    /* An unbound slot (obj NULL, in flight): in st->slots by put_id. */
    dango_hmap_node_t slot_node;
    uint8_t           slot;
    ms_rep_t          rep[];
};

struct ms_obj {
    dango_hmap_node_t node;             /* in st->objs, key = key */
    ms_ver_t         *cur;              /* complete version, or NULL */
    ms_ver_t         *pend;             /* put in flight, or NULL */
    uint64_t          lease_timeout;    /* ms; leased while > now */
    uint64_t          soft_pin_timeout; /* ms; 0 = no soft pin */
    uint64_t          cache_until;      /* ms; cached locations used before */
    uint64_t          nocache_until;    /* ms; no cache window granted before */
    uint8_t           hard_pin;
    uint8_t           disk_busy; /* MS_DISK_* (store_master_disk.c) */
    char              key[];     /* NUL-terminated */
};

/* Counters kept on the loop (see the metrics list in store_master.c). */
typedef struct ms_counters {
    uint64_t evict_attempts;
    uint64_t evict_successes;
    uint64_t evicted_keys;
    uint64_t evicted_bytes;
    uint64_t alloc_failures;
    uint64_t partial_allocs;
    uint64_t discards; /* stale puts preempted */
    uint64_t releases; /* parked or reclaimed versions freed */
    uint64_t reclaims; /* puts freed after PUT_RELEASE_TIMEOUT */
    uint64_t clients_expired;
    uint64_t zombie_puts;     /* puts revoked by client expiry */
    uint64_t bad_replicas;    /* replicas dropped by ReportBad */
    uint64_t tombs_dropped;   /* tombs beyond MS_TOMB_MAX */
    uint64_t ghosts_dropped;  /* ghosts forgotten beyond MS_GHOST_MAX */
    uint64_t ghosts_restored; /* lost objects a node gave back later */
    uint64_t fence_regions;   /* regions fenced when a segment went away */
    uint64_t fence_claimed;   /* fenced regions a node's record took back */
    uint64_t fence_released;  /* fenced regions freed when their time was up */
    uint64_t fence_dropped;   /* beyond MS_FENCE_MAX, or no memory */
    uint64_t leases_granted;
    uint64_t slots_granted;  /* slots reserved for one round trip puts */
    uint64_t slots_bound;    /* slots that became a key's value */
    uint64_t slots_released; /* given back, reclaimed, or their owner gone */
} ms_counters_t;

struct ms_state {
    ms_params_t p;
    /* ms; before it, every object counts as cached by clients (locations
     * a previous master granted); set by the master at start. */
    uint64_t cache_floor;
    /* ms; the longest wait of the keys the last PutEnd, Remove or
     * RemoveMatch answered DANGO_EAGAIN (0: none). */
    uint64_t          again_ms;
    size_t            again_n; /* RemoveMatch: objects it left for that */
    dango_hmap_t      objs;
    dango_hmap_t      clients;
    dango_hmap_t      segs_by_id;
    dango_hmap_t      names;
    ms_seg_t        **segs; /* mounted segments, dense */
    size_t            nsegs;
    size_t            segs_cap;
    dango_list_link_t inflight; /* ms_ver_t.inflight_link, by start */
    size_t            ninflight;
    dango_hmap_t      slots;      /* unbound slots by put_id (slot_node) */
    uint64_t          slot_bytes; /* record bytes of those */
    ms_ver_t        **parked;     /* min-heap on free_at */
    size_t            nparked;
    size_t            parked_cap;
    uint64_t          parked_bytes;
    uint64_t          next_put_id;
    uint64_t          rebuild_until; /* ms: node reports accepted before */
    uint64_t          first_seen;    /* ms of the first client contact */
    dango_hmap_t      ghosts;        /* lost objects (store_master_ghost.c) */
    dango_hmap_t      copies; /* copies in flight by id (store_master_copy.c) */
    dango_hmap_t      fences; /* by segment id (store_master_fence.c) */
    uint64_t          fence_next;   /* ms of the next fence expiry */
    uint64_t          fenced_bytes; /* reserved by applied fences */
    dango_list_link_t ghost_fifo;   /* the same, oldest first */
    uint64_t          restored;     /* objects rebuilt from reports */
    uint64_t          rng;
    uint64_t          capacity;
    uint64_t          used;
    uint64_t          max_seg_capacity;
    size_t            soft_pinned; /* objects with a soft pin deadline */
    int               need_evict;  /* an allocation failed since the pass */
    uint64_t          evict_idle_until; /* after a fruitless pass */
    ms_counters_t     c;
    /* Per-call scratch, reused (loop thread only). */
    uint32_t *dup_tab;
    size_t    dup_cap;
    void     *scratch;
    size_t    scratch_cap;
    /* Disk tiers of the nodes (store_master_disk.c); NULL until one polls. */
    struct ms_disk *disk;
};

/* ---------- state: lifecycle and helpers (store_master_seg.c) ---------- */

int  dango__store_ms_create(const ms_params_t *p, ms_state_t **st_p);
void dango__store_ms_destroy(ms_state_t *st);

/* Grow-only scratch of at least @size bytes (NULL on ENOMEM). */
void *dango__store_ms_scratch(ms_state_t *st, size_t size);

/* The client record of @id, or NULL. */
ms_client_t *dango__store_ms_client_find(ms_state_t *st, ms_cid_t id);
/* Finds or creates (not ok) the record of @id, marked seen at @now. */
ms_client_t *dango__store_ms_client_touch(ms_state_t *st, ms_cid_t id,
                                          uint64_t now);

/* Segment as described by a Mount or Remount. */
typedef struct ms_seg_desc {
    uint64_t    id_hi;
    uint64_t    id_lo;
    const char *name;
    uint64_t    base;
    uint64_t    size;
    const char *host_id;
} ms_seg_desc_t;

/*
 * Mount: 0; DANGO_EINVAL (size or base 0, size outside 1 KiB..1 TiB, empty
 * or too long name, same id with another geometry); DANGO_ESEGMENT_EXISTS
 * (the id is another client's); DANGO_ENOMEM.
 */
int dango__store_ms_mount(ms_state_t *st, ms_cid_t cid, const ms_seg_desc_t *d,
                          uint64_t now);
/* Remount: mounts what is missing, marks the client ok. Errors of mount. */
int dango__store_ms_remount(ms_state_t *st, ms_cid_t cid,
                            const ms_seg_desc_t *d, size_t n, uint64_t now);
/* Marks the client's segments among @d as still reporting records (no new
 * objects on them) or done. */
void dango__store_ms_seg_recovering(ms_state_t *st, ms_cid_t cid,
                                    const ms_seg_desc_t *d, size_t n, int on);

/* Unmount: 0 (also when unknown); DANGO_EINVAL when another client's. */
int dango__store_ms_unmount(ms_state_t *st, ms_cid_t cid, uint64_t id_hi,
                            uint64_t id_lo, uint64_t now);
/* Notes that the record of removed @v in @seg's node is to be cleared. */
void dango__store_ms_tomb_add(ms_state_t *st, ms_seg_t *seg, uint64_t addr,
                              uint64_t put_id);
/* Hands over the client's tombs (*@tombs_p from dango_malloc(), to free). */
size_t dango__store_ms_tombs_take(ms_state_t *st, ms_cid_t cid,
                                  ms_tomb_t **tombs_p);

/* Ping: 0 when the client is ok, DANGO_ENEED_REMOUNT otherwise. */
int dango__store_ms_ping(ms_state_t *st, ms_cid_t cid, uint64_t now);

/* Client monitor: expires clients silent for CLIENT_TTL. Returns count. */
size_t dango__store_ms_monitor(ms_state_t *st, uint64_t now);
/* Periodic work: eviction, parked frees, reclaims, rehash. */
void dango__store_ms_tick(ms_state_t *st, uint64_t now);

/* Drops one replica: frees its region and unlinks it from its segment. */
void dango__store_ms_rep_drop(ms_state_t *st, ms_rep_t *r);
/* Frees every region of @v and @v itself (v must be detached). */
void dango__store_ms_ver_free(ms_state_t *st, ms_ver_t *v);
/* Parks detached @v until @free_at (frees it now if that has passed). */
void dango__store_ms_ver_park(ms_state_t *st, ms_ver_t *v, uint64_t free_at,
                              uint64_t now);
/* Takes in-flight @v off the in-flight and client lists. */
void dango__store_ms_ver_unlink(ms_state_t *st, ms_ver_t *v);
/* Erases @o from the map and frees it (its versions already gone). */
void dango__store_ms_obj_erase(ms_state_t *st, ms_obj_t *o);
/* A replica of @v has lost its region: the version may have to go. */
void dango__store_ms_ver_lost(ms_state_t *st, ms_ver_t *v);

/* Places up to @want regions of @len bytes on distinct segment names. */
unsigned dango__store_ms_place(ms_state_t *st, uint64_t len, unsigned want,
                               const char *const *preferred, size_t npref,
                               ms_seg_t **segs, uint64_t *offs);
/* Frees a region placed by dango__store_ms_place(). */
void dango__store_ms_region_free(ms_state_t *st, ms_seg_t *seg, uint64_t off,
                                 uint64_t len);

/* ---------- objects (store_master_obj.c) ---------- */

/* Replicate config of a PutStart, decoded. */
typedef struct ms_put_cfg {
    unsigned           replica_num; /* 0 = 1 */
    int                hard_pin;
    unsigned           soft_pin; /* dango_store_soft_pin_t */
    uint64_t           soft_pin_ttl_ms;
    const char *const *preferred;
    size_t             npreferred;
    /* PutStart only: the call repeats one whose reply was lost, so a put
     * of the same client, size and checksum in flight for a key is that
     * key's answer (its put id and replicas) instead of EOBJ_EXISTS. */
    int retry;
} ms_put_cfg_t;

/* One key of a batch: bytes and length (keys may be unterminated). */
typedef struct ms_key {
    const char *s;
    size_t      len;
} ms_key_t;

/* A committed record a node reported on remount. */
typedef struct ms_record {
    ms_key_t key;
    uint64_t size;
    uint64_t checksum;
    uint64_t put_id;
    uint64_t addr;
} ms_record_t;

/*
 * Rebuilds an object from a record reported by client @cid (whose segments
 * were just remounted): the record becomes a COMPLETE replica of the
 * object's version with the same put id, or a new object; a record older
 * than what the master holds for its key is ignored (its region stays
 * free). Only while rebuilding (until rebuild_until, MASTER_REBUILD_WINDOW
 * after the start). Returns 0 (used), 1 (ignored: stale, outside the
 * window, overlapping), or DANGO_EINVAL / DANGO_ENOMEM.
 */
int dango__store_ms_restore(ms_state_t *st, ms_cid_t cid, const ms_record_t *r,
                            uint64_t now);

/*
 * PutStart of @n keys. Per key i: status[i] and, on 0, vers[i] (the new
 * pending version: put_id and replicas; valid until the next call). Returns
 * a call-level error (DANGO_EINVAL: n > DANGO_STORE_BATCH_MAX, bad config)
 * or 0.
 */
int dango__store_ms_put_start(ms_state_t *st, ms_cid_t cid, size_t n,
                              const ms_key_t *keys, const uint64_t *sizes,
                              const uint64_t     *checksums,
                              const ms_put_cfg_t *cfg, int upsert, uint64_t now,
                              int *status, ms_ver_t **vers);
/*
 * Location cache. A GetReplicaList that leased @o may let its client reuse
 * the locations for the returned ms (0: caching is off, an upsert of @o is
 * in flight, or a forced remove of it waits); the master then counts them
 * as in use until now + that. What would end the value those locations
 * hold waits until no client uses them any more: an upsert's PutEnd, a
 * forced Remove and a forced RemoveMatch answer DANGO_EAGAIN for such an
 * object (st->again_ms says how long to wait), and the object grants no
 * new window meanwhile. So a get through a cached location never returns
 * a value that a finished upsert or remove replaced.
 */
uint64_t dango__store_ms_cache_grant(ms_state_t *st, ms_obj_t *o, uint64_t now);

/* Puts new version @v in flight for writer @c: its @n regions (PROCESSING)
 * and its place on the in-flight and the client's lists. */
void dango__store_ms_ver_start(ms_state_t *st, ms_ver_t *v, ms_client_t *c,
                               ms_seg_t *const *segs, const uint64_t *offs,
                               unsigned n);

/* ----- slots: one round trip puts (store_master_slot.c) ----- */

/* Slots granted by one request, at most. */
#define MS_SLOT_BATCH 64

/*
 * Reserves up to @count slots of @rec_len record bytes, each placed as
 * @cfg says (replica_num, preferred), for client @c, and writes them to
 * @vers (valid until the next call). Fewer when the client would hold more
 * than put_slot_bytes or 1/16 of the capacity, all clients more than 1/8
 * of it, when the pool would pass the eviction watermark or placement
 * finds no room (a slot never evicts), while nodes still report their
 * records, or for a length no record has.
 * Returns the number granted.
 */
size_t dango__store_ms_slot_grant(ms_state_t *st, ms_client_t *c,
                                  const ms_put_cfg_t *cfg, size_t count,
                                  uint64_t rec_len, uint64_t now,
                                  ms_ver_t **vers);
/* The unbound slot of put id @put_id (any client's), or NULL. */
ms_ver_t *dango__store_ms_slot_find(ms_state_t *st, uint64_t put_id);
/* Takes slot @v off the slot map, its client's bytes and the in-flight
 * lists (it is being bound, or dropped). */
void dango__store_ms_slot_unlink(ms_state_t *st, ms_ver_t *v);
/* Ends slot @v unbound: its regions are freed at @free_at (parked until
 * then; at once when it has passed). */
void dango__store_ms_slot_drop(ms_state_t *st, ms_ver_t *v, uint64_t free_at,
                               uint64_t now);
/* Frees the slots of client @cid among @put_ids (others' and unknown ones
 * are left alone). Returns how many. */
size_t dango__store_ms_slot_release(ms_state_t *st, ms_cid_t cid, size_t n,
                                    const uint64_t *put_ids, uint64_t now);

/*
 * PutBind of @n keys: key i's record was written into the slot put_ids[i]
 * of client @cid, with value @sizes[i] bytes and checksum @checksums[i];
 * the slot becomes the key's complete value at once (as PutStart and
 * PutEnd would make it) with @cfg's pins. status[i]: 0 (also for a bind
 * repeated after it took); DANGO_EOBJ_EXISTS (the key has a value or a
 * put in flight: the slot stays the client's, for another key);
 * DANGO_EINVALID_WRITE (no such slot: released, reclaimed, lost with its
 * segments, or granted by another master); DANGO_EILLEGAL_CLIENT (another
 * client's); DANGO_EINVAL (bad key, value size 0, or a record length that
 * is not the slot's); DANGO_ENOMEM. Returns DANGO_EINVAL (n too large, bad
 * config) or 0.
 */
int dango__store_ms_put_bind(ms_state_t *st, ms_cid_t cid, size_t n,
                             const ms_key_t *keys, const uint64_t *put_ids,
                             const uint64_t *sizes, const uint64_t *checksums,
                             const ms_put_cfg_t *cfg, uint64_t now,
                             int *status);
/* Nodes are still reporting their records on some segment. */
int dango__store_ms_rebuilding(const ms_state_t *st);

/* PutEnd (or PutRevoke with @revoke) of @n (key, put_id). An upsert's end
 * may answer DANGO_EAGAIN (see dango__store_ms_cache_grant()). */
int dango__store_ms_put_end(ms_state_t *st, ms_cid_t cid, size_t n,
                            const ms_key_t *keys, const uint64_t *put_ids,
                            int revoke, uint64_t now, int *status);
/* GetReplicaList: status[i] and objs[i] (valid until the next call). */
int dango__store_ms_get(ms_state_t *st, size_t n, const ms_key_t *keys,
                        int no_lease, uint64_t now, int *status,
                        ms_obj_t **objs);
/* Exist: status[i] = 1, 0 or an error. */
int dango__store_ms_exist(ms_state_t *st, size_t n, const ms_key_t *keys,
                          uint64_t now, int *status);
int dango__store_ms_remove(ms_state_t *st, size_t n, const ms_key_t *keys,
                           int force, uint64_t now, int *status);
/* RemoveMatch: the count removed, or DANGO_EINVAL (bad regex). With
 * @force, objects whose locations clients may still use from a cache are
 * left (st->again_n of them, for st->again_ms at most). */
int64_t dango__store_ms_remove_match(ms_state_t *st, const char *regex, int all,
                                     int force, uint64_t now);
/* ReportBad: 0 (dropped or already gone), DANGO_ENO_OBJECT, DANGO_EINVAL. */
int dango__store_ms_report_bad(ms_state_t *st, ms_cid_t cid,
                               const ms_key_t *key, uint64_t put_id,
                               const char *segment, uint64_t addr,
                               uint64_t now);
/*
 * List: up to @limit (0 = MS_LIST_MAX) complete objects whose
 * key starts with @prefix and sorts after @after, in byte order, into
 * @out (room for the limit). Returns the count; *more_p says whether more
 * follow.
 */
size_t dango__store_ms_list(ms_state_t *st, const ms_key_t *prefix,
                            const ms_key_t *after, size_t limit, ms_obj_t **out,
                            int *more_p);
/* One eviction pass (spec §3.4). Returns the number of objects evicted. */
size_t dango__store_ms_evict(ms_state_t *st, uint64_t now);

/* ---------- copies and KV events (store_master_copy.c, _kv.c) ---------- */

/*
 * CopyStart of one key: a new region for the object's committed value on
 * a segment of node @target (segment name), parked as a copy in flight
 * (readers do not see it) until CopyEnd or PUT_RELEASE_TIMEOUT. Grants the
 * object a read lease. On 0, *cv_p is the copy (copy_id, put_id, its one
 * replica) and *obj_p the object (valid until the next call). Errors:
 * DANGO_EINVAL / DANGO_ENAMETOOLONG (key), DANGO_ENO_OBJECT (no committed
 * value), DANGO_ENO_SEGMENT (no such node), DANGO_EOBJ_EXISTS (a replica
 * is already there), DANGO_ERANGE (DANGO_STORE_REPLICA_MAX live replicas),
 * DANGO_ENOSPC (no room on the node), DANGO_ENOMEM.
 */
int dango__store_ms_copy_start(ms_state_t *st, ms_cid_t cid, const ms_key_t *k,
                               const char *target, uint64_t now,
                               ms_ver_t **cv_p, ms_obj_t **obj_p);
/*
 * CopyEnd (or revoke) of copy @copy_id of @k started by @cid: the region
 * becomes a COMPLETE replica of the object's value if that value is still
 * the one copied. 0, or DANGO_ENO_OBJECT (no such copy in flight, or the
 * object or its value changed: the region is freed), DANGO_EOBJ_EXISTS
 * (the node got a replica meanwhile; freed), DANGO_ENOMEM.
 */
int dango__store_ms_copy_end(ms_state_t *st, ms_cid_t cid, const ms_key_t *k,
                             uint64_t copy_id, int revoke, uint64_t now);

/* Drops the id index entry of copy @v (copy_id != 0) being freed. */
void dango__store_ms_copy_forget(ms_state_t *st, const ms_ver_t *v);

/* KV events queued for one client (store_master_kv.c). */
typedef struct ms_kv_ev {
    uint32_t off; /* of the key in ms_kv_q.keys */
    uint16_t len;
    uint8_t  stored;
} ms_kv_ev_t;

typedef struct ms_kv_q {
    ms_kv_ev_t *ev;
    size_t      n, cap;
    char       *keys;
    size_t      keys_len, keys_cap;
    uint64_t    dropped;
} ms_kv_q_t;

/* Events, and bytes of their keys, queued per client between two polls;
 * more are dropped (counted). The bytes bound keeps a reply well inside
 * one RPC frame. */
#define MS_KV_EVENTS_MAX       65536
#define MS_KV_EVENTS_BYTES_MAX (16u << 20)

/* Notes that value @v of object @o was stored on (or removed from) each
 * segment holding a live replica of it, for clients that poll events. */
void dango__store_ms_kv_ver(ms_state_t *st, const ms_obj_t *o,
                            const ms_ver_t *v, int stored);
/* The same for the one replica @r. */
void dango__store_ms_kv_rep(ms_state_t *st, const ms_obj_t *o,
                            const ms_rep_t *r, int stored);
/* Takes client @cid's queue (NULL if none; enables queueing from now on).
 * The caller frees it with dango__store_ms_kv_free(). DANGO_ENOMEM, or 0. */
int  dango__store_ms_kv_take(ms_state_t *st, ms_cid_t cid, ms_kv_q_t **q_p);
void dango__store_ms_kv_free(ms_kv_q_t *q);
/* Puts a queue taken by dango__store_ms_kv_take() back in its place when
 * its reply could not be built, freeing the empty one the take left there.
 * Only right after the take, with nothing run on the state in between (so
 * no event can have been queued since); NULL does nothing. */
void dango__store_ms_kv_untake(ms_state_t *st, ms_cid_t cid, ms_kv_q_t *q);

/* Ghosts of objects lost with their nodes (store_master_ghost.c), at most
 * this many. */
#define MS_GHOST_MAX (1u << 20)

/* Remembers @o's committed value @v, lost with the nodes that held it. */
void dango__store_ms_ghost_add(ms_state_t *st, const ms_obj_t *o,
                               const ms_ver_t *v);
/* 1 if a node's record of (@k, @put_id, @size, @checksum) is a ghost's. */
int dango__store_ms_ghost_match(ms_state_t *st, const ms_key_t *k,
                                uint64_t put_id, uint64_t size,
                                uint64_t checksum);
/* Forgets the ghost of @k (a put started, a remove, a restore). */
void dango__store_ms_ghost_forget(ms_state_t *st, const ms_key_t *k);
/* Forgets the ghosts whose key matches @re (NULL: all); their count. */
size_t dango__store_ms_ghost_forget_match(ms_state_t *st, const regex_t *re);

/*
 * Fences against late writes into a segment that went away and came back
 * (store_master_fence.c), at most this many regions per segment.
 */
#define MS_FENCE_MAX 65536

/* Remembers the region of @r (on @seg, being destroyed at @now) for as long
 * as a write into it may still come. */
void dango__store_ms_fence_add(ms_state_t *st, ms_seg_t *seg, const ms_rep_t *r,
                               uint64_t now);
/* @seg is being freed: its fence (if applied) waits for its next return. */
void dango__store_ms_fence_detach(ms_state_t *st, ms_seg_t *seg);
/* A segment was created: reserves the regions still fenced under its id. */
void dango__store_ms_fence_apply(ms_state_t *st, ms_seg_t *seg, uint64_t now);
/* A node reports a record of put @put_id in a fenced region of exactly
 * (@off, @asz) that held that put: the region is the record's (kept
 * reserved). 0, or DANGO_ENOENT. O(log regions). */
int dango__store_ms_fence_claim(ms_state_t *st, ms_seg_t *seg, uint64_t off,
                                uint64_t asz, uint64_t put_id);
/* Frees the fenced regions whose time is up. */
void dango__store_ms_fence_tick(ms_state_t *st, uint64_t now);
void dango__store_ms_fence_destroy(ms_state_t *st);

/* Version helpers shared with the copy and disk code. */
/*
 * A new version of put @put_id by client @cid, started at @now, of a value
 * of @size bytes with xxh3 @checksum in records of @rec_len bytes; room for
 * @nrep replicas, none attached, on no list and not parked. NULL without
 * memory. What every version is born with is an argument, so that no
 * caller can leave a field unset.
 */
ms_ver_t *dango__store_ms_ver_new(unsigned nrep, ms_cid_t cid, uint64_t put_id,
                                  uint64_t size, uint64_t checksum,
                                  uint64_t rec_len, uint64_t now);
/* Attaches the next replica of @v (room for it allocated): region @off of
 * @seg, in @status, counted live. */
void      dango__store_ms_rep_add(ms_ver_t *v, ms_seg_t *seg, uint64_t off,
                                  uint32_t status);
ms_ver_t *dango__store_ms_ver_grow(ms_ver_t *v);
void      dango__store_ms_ver_unpark(ms_state_t *st, ms_ver_t *v);
void      dango__store_ms_obj_lease(ms_state_t *st, ms_obj_t *o, uint64_t now);
ms_obj_t *dango__store_ms_obj_lookup(ms_state_t *st, const ms_key_t *k);
int       dango__store_ms_key_check(const ms_key_t *k);

/* ---------- the embeddable master (store_master.c) ---------- */

/* Operations counted in the metrics (a PutEnd with revoke is PUT_REVOKE). */
typedef enum ms_op {
    MS_OP_SERVICE_READY,
    MS_OP_PING,
    MS_OP_MOUNT,
    MS_OP_REMOUNT,
    MS_OP_UNMOUNT,
    MS_OP_PUT_START,
    MS_OP_UPSERT_START,
    MS_OP_PUT_END,
    MS_OP_PUT_REVOKE,
    MS_OP_PUT_BIND,
    MS_OP_GET,
    MS_OP_EXIST,
    MS_OP_REMOVE,
    MS_OP_REMOVE_MATCH,
    MS_OP_REPORT_BAD,
    MS_OP_LIST,
    MS_OP_POOL_STAT,
    MS_OP_COPY_START,
    MS_OP_COPY_END,
    MS_OP_COPY_REVOKE,
    MS_OP_KV_EVENTS,
    MS_OP_UNKNOWN,
    MS_OP_MAX
} ms_op_t;

typedef struct ms_op_stats {
    uint64_t requests;
    uint64_t failures; /* call-level errors (malformed included) */
    uint64_t items;    /* keys of batch calls */
    uint64_t failed_items;
} ms_op_stats_t;

/* Metric name stem of each operation ("put_start", ...). */
extern const char *const dango__store_master_op_names[MS_OP_MAX];

struct MHD_Daemon;

struct dango_store_master {
    ms_config_t         cfg;
    ms_state_t         *st; /* loop thread only */
    dango_loop_t       *loop;
    dango_rpc_server_t *rpc;
    int                 tick_timer;
    int                 monitor_timer;
    int64_t             view_version;
    ms_op_stats_t       ops[MS_OP_MAX]; /* loop thread only */
    uint64_t            malformed;      /* requests that did not unpack */
    struct MHD_Daemon  *admin;
    char                admin_addr[64];
    dango_md_server_t  *md;
    char                md_url[96];
    struct ms_ha       *ha; /* leader election; NULL without MASTER_HA */
    int disk_put_final;     /* a PutStart retried at its deadline: answer it */
};

/* Starts the admin HTTP server on cfg.admin_listen. 0 or an error. */
int  dango__store_master_admin_start(dango_store_master_t *m);
void dango__store_master_admin_stop(dango_store_master_t *m);

/*
 * The Prometheus text of the master's metrics into an allocated buffer
 * (dango_free). Loop thread only. 0 or DANGO_ENOMEM.
 */
int dango__store_master_metrics(dango_store_master_t *m, char **buf_p,
                                size_t *len_p);

/* ---------- store_master_ha.c: leader election ---------- */

/*
 * Sets the election up when MASTER_HA is set (else does nothing), before
 * the RPC server is created: from its first call on, the master answers
 * DANGO_ENOT_LEADER until it has won and warmed up. 0, DANGO_EINVAL (bad
 * endpoints), DANGO_ECONFIG (bad cluster id) or DANGO_ENOMEM.
 */
int dango__store_master_ha_init(dango_store_master_t *m);
/*
 * Starts the election thread set up by _ha_init() (none: does nothing),
 * once the RPC server's address is known (it is the one advertised unless
 * MASTER_ADVERTISE says otherwise). 0, DANGO_EINVAL (advertised address
 * too long) or a thread error; _ha_free() still frees the election.
 */
int dango__store_master_ha_start(dango_store_master_t *m);
/*
 * Stops the election; a leader gives its lease back (revoked). The master
 * answers DANGO_ENOT_LEADER from then on; _ha_free() frees the election
 * (stopping it first if need be) once the loop no longer runs.
 */
void dango__store_master_ha_stop(dango_store_master_t *m);
void dango__store_master_ha_free(dango_store_master_t *m);
/* 1 while this master may serve requests (always without HA). */
int dango__store_master_ha_serving(dango_store_master_t *m);

/*
 * From any thread but the loop's (runs there): replaces the state by an empty
 * one whose view version is @view (a new leader's term) and stamps @view on
 * every reply. 0 or DANGO_ENOMEM (the old state is kept).
 */
int dango__store_master_reset(dango_store_master_t *m, int64_t view);

/* Lease and pin figures of @o at @now. */
static inline uint64_t ms_ms_left(uint64_t deadline, uint64_t now)
{
    return (deadline > now) ? deadline - now : 0;
}

/* @len rounded up to the granule of @seg (the room a region takes). */
/*
 * A window (lease, location cache) as told to a client. The master holds
 * it for @ms from its whole-ms clock, rounded down, so up to 1 ms less
 * than @ms after the grant really ran; the client counts from before its
 * request went. Told 1 ms less, the client's window always ends first (a
 * 1 ms lease stays 1 ms: 0 would mean none).
 */
static inline uint64_t ms_client_window(uint64_t ms)
{
    return (ms > 1) ? ms - 1 : ms;
}

static inline uint64_t ms_seg_round(const ms_seg_t *seg, uint64_t len)
{
    return (len + seg->granule - 1) / seg->granule * seg->granule;
}

/* Address of replica @r (of a live segment). */
static inline uint64_t ms_rep_addr(const ms_rep_t *r)
{
    return r->seg->base + r->off;
}

/* ---------- disk tiers (store_master_disk.c) ---------- */

/* ms_obj_t.disk_busy */
#define MS_DISK_IDLE   0
#define MS_DISK_BUSY   1 /* an offload is queued or running: not a candidate */
#define MS_DISK_FAILED 2 /* the offload failed: evict without one */

/*
 * Eviction of @o is about to drop its memory replicas. Returns 1 when the
 * object stays (an offload to its node's disk tier was queued, or that
 * node's queue is full), 0 when it may go (no tier, or it is on disk).
 */
int dango__store_ms_disk_on_evict(ms_state_t *st, ms_obj_t *o, uint64_t now);
/*
 * Client @cid says (Remount) it has a disk tier whose records follow in
 * DiskPoll: until they do (at most MS_DISK_PENDING_MS), eviction keeps its
 * objects instead of dropping them.
 */
void dango__store_ms_disk_expect(ms_state_t *st, ms_cid_t cid, uint64_t now);
/* Tasks of regions in @seg lose them (the segment is going away). */
void dango__store_ms_disk_seg_gone(ms_state_t *st, ms_seg_t *seg);
/* Periodic work: held polls answered, tasks timed out, silent nodes gone. */
void dango__store_ms_disk_tick(ms_state_t *st, uint64_t now);
/* Answers every waiting call (DANGO_ECANCELED) and frees the disk state. */
void dango__store_ms_disk_destroy(ms_state_t *st);
/* 1 when @key is held on a disk tier (whether or not it is also in
 * memory). */
int dango__store_ms_disk_has(ms_state_t *st, const char *key, size_t len);
/* As dango__store_ms_disk_has(), with the record's figures when it is. */
int dango__store_ms_disk_info(ms_state_t *st, const char *key, size_t len,
                              uint64_t *size, uint64_t *checksum,
                              uint64_t *put_id);
/*
 * RemoveMatch on the disk records (regex as dango__store_ms_remove_match):
 * @after 0 drops the records of keys not in memory and returns their
 * count; @after 1 drops those whose memory object is gone now. Returns the
 * count or DANGO_EINVAL.
 */
int64_t dango__store_ms_disk_remove_match(ms_state_t *st, const char *regex,
                                          int all, int after);
/* Forgets the disk record of @key (removed or overwritten); 1 if it had one. */
int dango__store_ms_disk_forget(ms_state_t *st, const char *key, size_t len);

/* Disk figures for PoolStat and /metrics. */
typedef struct ms_disk_stats {
    uint64_t capacity, used, keys, nodes;
    uint64_t offloads, offload_bytes, offload_failures, offload_skipped;
    uint64_t loads, load_bytes, load_failures, promotions, corrupt;
    uint64_t node_evicted, timeouts, node_reads, node_writes;
    uint64_t put_waits, put_wait_bytes; /* PutStarts held for room */
} ms_disk_stats_t;
void dango__store_ms_disk_stats(ms_state_t *st, ms_disk_stats_t *s);

/*
 * How long a PutStart with no room waits for offloads, how many wait, and
 * how many bytes their kept requests (with their headers) may pin
 * together. The count alone does not bound that memory: a request may
 * carry DANGO_STORE_BATCH_MAX keys of up to DANGO_STORE_KEY_MAX bytes
 * (16 MiB) and fill an RPC frame (64 MiB), so 4096 of them could pin tens
 * of GiB. 64 MiB holds 4096 batches of 16 KiB, or 3 of the largest batches
 * of keys. Beyond either cap a PutStart is answered at once (its keys
 * ENOSPC).
 */
#define MS_DISK_PUT_WAIT_MS    2000
#define MS_DISK_PUT_WAIT_MAX   4096
#define MS_DISK_PUT_WAIT_BYTES (64ull << 20)

/*
 * A PutStart whose every key found no space while offloads are running may
 * wait for them (at most MS_DISK_PUT_WAIT_MS, within the caps above): the
 * request is kept and @retry runs it again (loop thread) after offloads
 * freed memory, with @final set at the deadline (then it must answer).
 * Returns 1 when @call was taken (answered later), 0 when it must be
 * answered now.
 */
typedef void (*ms_disk_put_retry_cb)(void *arg, dango_rpc_call_t *call,
                                     const void *req, size_t len, uint64_t now,
                                     int final);
void dango__store_ms_disk_set_put_retry(ms_state_t *st, ms_disk_put_retry_cb cb,
                                        void *arg);
int  dango__store_ms_disk_put_wait(ms_state_t *st, dango_rpc_call_t *call,
                                   const void *req, size_t len, uint64_t now);

/* RPC methods DANGO_STORE_M_DISK_FIRST..LAST (the call is always answered). */
void dango__store_master_disk_rpc(dango_store_master_t *m,
                                  dango_rpc_call_t *call, uint32_t method,
                                  const void *req, size_t len, uint64_t now);
#endif
