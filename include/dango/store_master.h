/**
 * @file store_master.h
 * @brief The store master: the metadata service of a store, embeddable.
 *
 * The master owns the metadata of a store (segments and their allocators,
 * objects, replicas, leases, pins, client liveness) and never object bytes.
 * It serves the store RPCs (proto/dango_store.proto) on MASTER_LISTEN from
 * one event-loop thread that owns all metadata, runs the client monitor
 * (MASTER_CLIENT_TTL) and the eviction pass (MASTER_EVICT_*) on timers of
 * that loop, and optionally serves:
 *   - the admin HTTP port MASTER_ADMIN_LISTEN (/health, /metrics in
 *     Prometheus text format, /segments, /keys?prefix=, /key/<key>);
 *   - the embedded HTTP metadata server MASTER_METADATA_LISTEN
 *     (http://host:port/metadata for the transfer engines).
 *
 * `dango-master` is a thin main around this; `dango serve` embeds it next to
 * a store client that contributes a segment.
 *
 * Thread safety: create and destroy from one thread; the getters from any.
 */
#ifndef DANGO_STORE_MASTER_H
#define DANGO_STORE_MASTER_H

#include <dango/common.h>
#include <dango/config.h>

/** A running master. Opaque. */
typedef struct dango_store_master dango_store_master_t;

DANGO_BEGIN_DECLS

/**
 * @brief Starts a master with the MASTER_* options of @p config (or the
 *        environment and defaults when NULL).
 *
 * The cluster token, when DANGO_CLUSTER_TOKEN is set, is required from every
 * RPC client.
 *
 * @return 0, or:
 *         - DANGO_ECONFIG     an option does not parse or is out of range.
 *         - DANGO_EINVAL      a listen address does not parse.
 *         - DANGO_EADDRINUSE  a listen address is taken.
 *         - DANGO_ENOMEM
 */
DANGO_API int dango_store_master_create(const dango_config_t  *config,
                                        dango_store_master_t **master_p);

/** @brief Stops serving and frees everything. NULL is a no-op. */
DANGO_API void dango_store_master_destroy(dango_store_master_t *m);

/** @brief RPC address "host:port" with the real port. */
DANGO_API const char *dango_store_master_addr(const dango_store_master_t *m);

/** @brief Admin HTTP address "host:port", or NULL when disabled. */
DANGO_API const char *
dango_store_master_admin_addr(const dango_store_master_t *m);

/**
 * @brief Embedded metadata server URL "http://host:port/metadata", or NULL
 *        when disabled.
 */
DANGO_API const char *
dango_store_master_metadata_url(const dango_store_master_t *m);

DANGO_END_DECLS

#endif /* DANGO_STORE_MASTER_H */
