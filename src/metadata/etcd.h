/*
 * A small etcd v3 client over etcd's JSON gateway (libcurl + jansson).
 *
 * This is the metadata module's internal etcd API: md_etcd.c builds the
 * etcd:// metadata backend on it, and higher modules (the store master's
 * leader election) may include "metadata/etcd.h" directly.
 *
 * Endpoints: "etcd://host:port[,host:port...]" (the scheme is optional).
 * Every request goes to the endpoint that answered last; when it cannot be
 * reached (connection refused, unknown host, "no leader"), the next one is
 * tried at once, so a dead endpoint costs one failed connect. A request
 * that may have reached the server (timeout, connection lost mid-answer)
 * is retried on the next endpoint only when it is read-only (range,
 * lease time-to-live); for writes the error is returned, and the next call
 * starts at the next endpoint. Every attempt is bounded by the connect and
 * request timeouts given at open.
 *
 * Keys and values are byte strings (base64 on the wire). Revisions, lease
 * ids and TTLs are int64 as etcd has them.
 *
 * Errors: 0, DANGO_ENOENT (no such key, lease not found or expired),
 * DANGO_EINVAL (etcd rejected the request as malformed), DANGO_EMSGSIZE
 * (request too large for the server), DANGO_ETIMEDOUT, DANGO_EMETADATA
 * (no endpoint reachable, or an unexpected answer), DANGO_ENOMEM.
 *
 * Threads: every function may be called from several threads at once on
 * the same handle; watch and keeper callbacks run on their own thread.
 */
#ifndef DANGO_METADATA_ETCD_H
#define DANGO_METADATA_ETCD_H

#include <stddef.h>
#include <stdint.h>

#include <dango/common.h>

/* etcd refuses longer leases (seconds). */
#define DANGO__ETCD_LEASE_TTL_MAX 9000000000LL

typedef struct dango__etcd        dango__etcd_t;
typedef struct dango__etcd_watch  dango__etcd_watch_t;
typedef struct dango__etcd_keeper dango__etcd_keeper_t;

/* A key/value as etcd returns it; key and value are NUL-terminated. */
typedef struct dango__etcd_kv {
    char   *key;
    size_t  key_len;
    char   *value; /* NULL in keys-only ranges and delete events */
    size_t  value_len;
    int64_t create_revision;
    int64_t mod_revision;
    int64_t version;
    int64_t lease;
} dango__etcd_kv_t;

/* ---------- connection ---------- */

/*
 * Parses @endpoints and prepares a handle; contacts no server.
 * @connect_timeout_ns / @timeout_ns bound each attempt (0: no limit).
 * Returns 0, DANGO_EINVAL (malformed endpoint list), DANGO_ENOMEM,
 * DANGO_EMETADATA (libcurl could not be initialised).
 */
int dango__etcd_open(const char *endpoints, uint64_t connect_timeout_ns,
                     uint64_t timeout_ns, dango__etcd_t **etcd_p);

/* Frees the handle; watches and keepers on it must be stopped first. */
void dango__etcd_close(dango__etcd_t *etcd);

/* Number of endpoints, and the "host:port" of endpoint @i. */
size_t      dango__etcd_num_endpoints(const dango__etcd_t *etcd);
const char *dango__etcd_endpoint(const dango__etcd_t *etcd, size_t i);

/*
 * Smallest key strictly greater than every key starting with @prefix
 * (etcd's range_end for a prefix): writes it to @end (room for @len bytes)
 * and returns its length; 0 means "no upper bound" (the prefix is empty or
 * all 0xff), which etcd spells as the single byte "\0".
 */
size_t dango__etcd_prefix_end(const char *prefix, size_t len, char *end);

/* ---------- key/value ---------- */

/*
 * Reads one key. *kv_p is allocated (free with dango__etcd_kvs_free(kv, 1));
 * @rev_p (may be NULL) receives the store revision. DANGO_ENOENT when absent.
 */
int dango__etcd_get(dango__etcd_t *etcd, const void *key, size_t key_len,
                    dango__etcd_kv_t **kv_p, int64_t *rev_p);

/*
 * Reads every key starting with @prefix (all keys when @prefix_len is 0),
 * sorted by key bytes, as of @revision (0: the latest). @keys_only skips
 * the values. *kvs_p is never NULL on success (free with
 * dango__etcd_kvs_free). @rev_p (may be NULL) receives the revision read.
 */
int dango__etcd_range_prefix(dango__etcd_t *etcd, const void *prefix,
                             size_t prefix_len, int keys_only, int64_t revision,
                             dango__etcd_kv_t **kvs_p, size_t *count_p,
                             int64_t *rev_p);

void dango__etcd_kvs_free(dango__etcd_kv_t *kvs, size_t count);

/* Writes a key, attached to @lease (0: none). @rev_p may be NULL. */
int dango__etcd_put(dango__etcd_t *etcd, const void *key, size_t key_len,
                    const void *value, size_t value_len, int64_t lease,
                    int64_t *rev_p);

/*
 * Deletes @key, or every key starting with it when @prefix is set.
 * @deleted_p (may be NULL) receives the number of keys deleted (0 is not an
 * error here); @rev_p may be NULL.
 */
int dango__etcd_delete(dango__etcd_t *etcd, const void *key, size_t key_len,
                       int prefix, int64_t *deleted_p, int64_t *rev_p);

/* ---------- transactions ---------- */

typedef enum dango__etcd_cmp_target {
    DANGO__ETCD_CMP_CREATE,  /* create_revision == rev (0: key absent) */
    DANGO__ETCD_CMP_MOD,     /* mod_revision == rev */
    DANGO__ETCD_CMP_VERSION, /* version == rev (0: key absent) */
    DANGO__ETCD_CMP_VALUE    /* value == value[0..value_len) */
} dango__etcd_cmp_target_t;

/* One "key's <target> equals <x>" condition of a transaction. */
typedef struct dango__etcd_cmp {
    const void              *key;
    size_t                   key_len;
    dango__etcd_cmp_target_t target;
    int64_t                  rev;
    const void              *value;
    size_t                   value_len;
} dango__etcd_cmp_t;

typedef enum dango__etcd_op_type {
    DANGO__ETCD_OP_PUT,
    DANGO__ETCD_OP_DELETE
} dango__etcd_op_type_t;

typedef struct dango__etcd_op {
    dango__etcd_op_type_t type;
    const void           *key;
    size_t                key_len;
    const void           *value; /* PUT only */
    size_t                value_len;
    int64_t               lease; /* PUT only; 0: none */
} dango__etcd_op_t;

/*
 * If every comparison holds, applies @success; otherwise @failure (either
 * list may be empty). *succeeded_p says which branch ran; @rev_p (may be
 * NULL) receives the revision after the transaction. Never retried on
 * another endpoint once it may have been sent.
 */
int dango__etcd_txn(dango__etcd_t *etcd, const dango__etcd_cmp_t *cmps,
                    size_t num_cmps, const dango__etcd_op_t *success,
                    size_t num_success, const dango__etcd_op_t *failure,
                    size_t num_failure, int *succeeded_p, int64_t *rev_p);

/* ---------- leases ---------- */

/*
 * Grants a lease of @ttl_s seconds (etcd may raise it to its minimum,
 * about 1.5 x the election timeout). *granted_ttl_p (may be NULL) is the
 * TTL etcd granted.
 */
int dango__etcd_lease_grant(dango__etcd_t *etcd, int64_t ttl_s, int64_t *id_p,
                            int64_t *granted_ttl_p);

/* Renews a lease once; *ttl_p (may be NULL) the remaining TTL. ENOENT: gone. */
int dango__etcd_lease_keepalive(dango__etcd_t *etcd, int64_t id,
                                int64_t *ttl_p);

/* Revokes a lease, deleting its keys. DANGO_ENOENT when it is gone already. */
int dango__etcd_lease_revoke(dango__etcd_t *etcd, int64_t id);

/* Remaining and granted TTL of a lease; DANGO_ENOENT when it is gone. */
int dango__etcd_lease_ttl(dango__etcd_t *etcd, int64_t id, int64_t *ttl_p,
                          int64_t *granted_ttl_p);

/*
 * Keeps a lease alive on a thread: renews it every @ttl_s / 6 seconds (so a
 * holder that acts on less than the whole TTL, as the master leader does
 * with 2/3 of it, still survives a slow or a lost renewal).
 * When etcd says the lease is gone, or no renewal succeeded before the
 * lease's deadline (the send time of the last successful renewal + @ttl_s),
 * @lost_cb runs once on the keeper's thread and renewals stop; the keeper
 * must still be stopped. The callback may use @etcd but not stop its own
 * keeper.
 */
typedef void (*dango__etcd_lease_lost_cb)(int64_t lease_id, void *arg);

int dango__etcd_keeper_start(dango__etcd_t *etcd, int64_t lease_id,
                             int64_t ttl_s, dango__etcd_lease_lost_cb lost_cb,
                             void *arg, dango__etcd_keeper_t **keeper_p);

/*
 * Monotonic time (dango_time_ns) until which the lease is known to be held:
 * a leader must stop acting as one at that instant. 0 once lost.
 */
uint64_t dango__etcd_keeper_valid_until(dango__etcd_keeper_t *keeper);

/* Stops renewing (does not revoke) and frees the keeper. NULL ignored. */
void dango__etcd_keeper_stop(dango__etcd_keeper_t *keeper);

/* ---------- watch ---------- */

typedef enum dango__etcd_event_type {
    DANGO__ETCD_EV_PUT,
    DANGO__ETCD_EV_DELETE,
    /*
     * The revisions the watch wanted were compacted away: events between
     * the last one delivered and kv.mod_revision are lost. The watch goes
     * on from there; callers re-read the range if they keep state.
     */
    DANGO__ETCD_EV_COMPACTED
} dango__etcd_event_type_t;

typedef struct dango__etcd_event {
    dango__etcd_event_type_t type;
    dango__etcd_kv_t         kv; /* DELETE: key and mod_revision only */
} dango__etcd_event_t;

/*
 * Called with the events of one watch response, in revision order. The
 * events are valid only during the call. Runs on the watch's thread.
 */
typedef void (*dango__etcd_watch_cb)(const dango__etcd_event_t *events,
                                     size_t count, void *arg);

/* Flags of dango__etcd_watch_start(). */
#define DANGO__ETCD_WATCH_PREFIX 1u /* every key starting with @key */
/*
 * First deliver the keys that exist (one callback, PUT events in key
 * order; none when the range is empty), then the changes after that read.
 * @start_revision is ignored. After a compaction the range is read and
 * delivered again (after the COMPACTED event).
 */
#define DANGO__ETCD_WATCH_SNAPSHOT 2u

/*
 * Watches @key (or a prefix, see the flags) from @start_revision (0:
 * changes after the stream is set up) on a streaming request on its own
 * thread. When the stream breaks (etcd restarted, endpoint died) the watch
 * reconnects, to the next endpoint after a failure, with a backoff growing
 * from 50 ms to 2 s, and resumes from the revision after the last event it
 * delivered, so no event is lost or repeated unless compacted away.
 */
int dango__etcd_watch_start(dango__etcd_t *etcd, const void *key,
                            size_t key_len, unsigned flags,
                            int64_t start_revision, dango__etcd_watch_cb cb,
                            void *arg, dango__etcd_watch_t **watch_p);

/*
 * Stops a watch; no callback runs after it returns. NULL ignored. May be
 * called from the watch's own callback: it then returns 1 and the watch's
 * thread frees the watch once the callback returns (the callback must not
 * touch the watch afterwards); otherwise it returns 0 after joining.
 */
int dango__etcd_watch_stop(dango__etcd_watch_t *watch);

#endif
