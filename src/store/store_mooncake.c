/*
 * Mooncake Store's C API (include/dango/mooncake_store_c.h) over the native
 * client: argument checks that Mooncake answers with -1, the translation of
 * Dango codes into Mooncake ErrorCode numbers, and Mooncake's put semantics
 * (an existing key is success). Nothing here is on a hot path beyond one
 * switch per call.
 */
#include <stdio.h>
#include <string.h>

#include <dango/mooncake_store_c.h>
#include "common/alloc.h"
#include "store/store_client_int.h"

/* The handle: a client, or none before setup. */
typedef struct mc_store {
    dango_store_client_t *client;
} mc_store_t;

#define MC_BAD_ARG (-1)

int mooncake_store_errno(int err)
{
    if (err > 0) {
        return err; /* a count or a size */
    }

    switch (err) {
    case 0:
        return MOONCAKE_OK;
    case DANGO_EOBJ_EXISTS:
        return MOONCAKE_ERR_OBJECT_ALREADY_EXISTS;
    case DANGO_ENO_OBJECT:
    case DANGO_EEVICTED:
        return MOONCAKE_ERR_OBJECT_NOT_FOUND;
    case DANGO_ENOT_READY:
        return MOONCAKE_ERR_REPLICA_IS_NOT_READY;
    case DANGO_ELEASE_HELD:
        return MOONCAKE_ERR_OBJECT_HAS_LEASE;
    case DANGO_ELEASE_EXPIRED:
        return MOONCAKE_ERR_LEASE_EXPIRED;
    case DANGO_ENOSPC:
    case DANGO_ENOMEM:
        return MOONCAKE_ERR_NO_AVAILABLE_HANDLE;
    case DANGO_ECORRUPT:
        return MOONCAKE_ERR_CHECKSUM_MISMATCH;
    case DANGO_ETIMEDOUT:
        return MOONCAKE_ERR_RPC_TIMEOUT;
    case DANGO_ECONNREFUSED:
    case DANGO_ECONNRESET:
    case DANGO_ECONNABORTED:
    case DANGO_EHOSTUNREACH:
    case DANGO_ENETUNREACH:
    case DANGO_EPEER_GONE:
    case DANGO_EAUTH:
    case DANGO_EPROTO:
    case DANGO_EPROTO_VERSION:
    case DANGO_EMETADATA:
    case DANGO_ECANCELED:
        return MOONCAKE_ERR_RPC_FAIL;
    case DANGO_EINVAL:
    case DANGO_ENOTREG:
    case DANGO_EOVERLAP:
    case DANGO_ECONFIG:
        return MOONCAKE_ERR_INVALID_PARAMS;
    case DANGO_ENAMETOOLONG:
        return MOONCAKE_ERR_INVALID_KEY;
    case DANGO_EILLEGAL_CLIENT:
        return MOONCAKE_ERR_ILLEGAL_CLIENT;
    case DANGO_EINVALID_WRITE:
        return MOONCAKE_ERR_INVALID_WRITE;
    case DANGO_ERANGE:
        return MOONCAKE_ERR_BUFFER_OVERFLOW;
    case DANGO_ENO_SEGMENT:
        return MOONCAKE_ERR_SEGMENT_NOT_FOUND;
    case DANGO_ESEGMENT_EXISTS:
        return MOONCAKE_ERR_SEGMENT_ALREADY_EXISTS;
    case DANGO_ENOTSUP:
    case DANGO_ENOSYS:
        return MOONCAKE_ERR_NOT_SUPPORTED;
    case DANGO_EREPLICA_UNAVAIL:
    case DANGO_ESEGMENT_STALE:
    case DANGO_EREMOTE_ACCESS:
        return MOONCAKE_ERR_TRANSFER_FAIL;
    default:
        if (dango_err_is_link(err)) {
            return MOONCAKE_ERR_TRANSFER_FAIL;
        }

        return MOONCAKE_ERR_INTERNAL;
    }
}

/* A node that vanished during a transfer and a master that cannot be
 * reached both read DANGO_EPEER_GONE: the ping tells them apart. */
static int mc_err(dango_store_client_t *c, int err)
{
    if ((err == DANGO_EPEER_GONE) && (dango_store_health(c) == 0)) {
        return MOONCAKE_ERR_TRANSFER_FAIL;
    }

    return mooncake_store_errno(err);
}

static dango_store_client_t *mc_client(mooncake_store_t store)
{
    return (store != NULL) ? ((mc_store_t *)store)->client : NULL;
}

/* Translates a Mooncake config; 0 or -1. */
static int mc_config(const mooncake_replicate_config_t *mc,
                     dango_store_replicate_config_t   **cfg_p,
                     dango_store_replicate_config_t    *cfg)
{
    *cfg_p = NULL;
    if (mc == NULL) {
        return 0;
    }

    if ((mc->replica_num > DANGO_STORE_REPLICA_MAX) ||
        (mc->preferred_segments_count > DANGO_STORE_PREFERRED_MAX) ||
        ((mc->preferred_segments_count > 0) &&
         (mc->preferred_segments == NULL))) {
        return MC_BAD_ARG;
    }

    memset(cfg, 0, sizeof(*cfg));
    cfg->replica_num        = (unsigned)mc->replica_num;
    cfg->with_hard_pin      = mc->with_hard_pin != 0;
    cfg->soft_pin           = mc->with_soft_pin ? DANGO_STORE_SOFT_PIN_ENABLE
                                                : DANGO_STORE_SOFT_PIN_PRESERVE;
    cfg->preferred_segments = mc->preferred_segments;
    cfg->preferred_count    = (unsigned)mc->preferred_segments_count;
    *cfg_p                  = cfg;
    return 0;
}

/* ---------- lifecycle ---------- */

mooncake_store_t mooncake_store_create(void)
{
    return dango_calloc(1, sizeof(mc_store_t), "mooncake_store");
}

void mooncake_store_destroy(mooncake_store_t store)
{
    if (store == NULL) {
        return;
    }

    dango_store_client_destroy(mc_client(store));
    dango_free(store);
}

static int mc_setup(mc_store_t *s, dango_store_params_t *p,
                    const char *protocol)
{
    int rc;

    if ((protocol != NULL) && (protocol[0] != '\0')) {
        if (strcmp(protocol, "tcp") == 0) {
            p->transports = "shm,tcp";
        } else if (strcmp(protocol, "shm") == 0) {
            p->transports = "shm,tcp";
        } else {
            return MOONCAKE_ERR_UNAVAILABLE_IN_CURRENT_MODE;
        }

        p->field_mask |= DANGO_STORE_PARAM_TRANSPORTS;
    }

    rc = dango_store_client_create(p, NULL, &s->client);
    if (rc != 0) {
        s->client = NULL;
        return mooncake_store_errno(rc);
    }

    return 0;
}

int mooncake_store_setup(mooncake_store_t store, const char *local_hostname,
                         const char *metadata_server,
                         uint64_t    global_segment_size,
                         uint64_t local_buffer_size, const char *protocol,
                         const char *device_name,
                         const char *master_server_addr)
{
    mc_store_t          *s = store;
    dango_store_params_t p;
    char                 listen[300];

    if ((s == NULL) || (s->client != NULL) || (local_hostname == NULL) ||
        (local_hostname[0] == '\0') || (metadata_server == NULL) ||
        (metadata_server[0] == '\0')) {
        return MC_BAD_ARG;
    }

    /* "host" listens on any port of host; "host:port" on that port. */
    if (strchr(local_hostname, ':') != NULL) {
        snprintf(listen, sizeof(listen), "%s", local_hostname);
    } else {
        snprintf(listen, sizeof(listen), "%s:0", local_hostname);
    }

    memset(&p, 0, sizeof(p));
    p.field_mask = DANGO_STORE_PARAM_METADATA | DANGO_STORE_PARAM_SEGMENT_SIZE |
                   DANGO_STORE_PARAM_BUFFER_SIZE | DANGO_STORE_PARAM_LISTEN;
    p.metadata          = metadata_server;
    p.segment_size      = global_segment_size;
    p.local_buffer_size = local_buffer_size;
    p.listen_addr       = listen;
    if ((strchr(local_hostname, ':') != NULL) &&
        (strcmp(metadata_server, DANGO_XFER_P2PHANDSHAKE) != 0)) {
        /* "ip:port" names the segment, as in Mooncake (P2P mode names it
         * after the listen address anyway). */
        p.field_mask |= DANGO_STORE_PARAM_LOCAL_NAME;
        p.local_name = local_hostname;
    }
    if (master_server_addr != NULL) {
        p.field_mask |= DANGO_STORE_PARAM_MASTER;
        p.master_addr = master_server_addr;
    }

    (void)device_name;
    return mc_setup(s, &p, protocol);
}

int mooncake_store_init_all(mooncake_store_t store, const char *protocol,
                            const char *device_name,
                            uint64_t    mount_segment_size)
{
    mc_store_t          *s = store;
    dango_store_params_t p;

    if ((s == NULL) || (s->client != NULL)) {
        return MC_BAD_ARG;
    }

    memset(&p, 0, sizeof(p));
    p.field_mask   = DANGO_STORE_PARAM_SEGMENT_SIZE;
    p.segment_size = mount_segment_size;
    (void)device_name;
    return mc_setup(s, &p, protocol);
}

int mooncake_store_health_check(mooncake_store_t store)
{
    dango_store_client_t *c = mc_client(store);

    if (store == NULL) {
        return MC_BAD_ARG;
    }

    if (c == NULL) {
        return 1;
    }

    return (dango_store_health(c) == 0) ? 0 : 2;
}

int mooncake_store_get_hostname(mooncake_store_t store, char *buffer,
                                size_t buffer_size)
{
    dango_store_client_t *c = mc_client(store);
    const char           *name;

    if ((c == NULL) || (buffer == NULL) || (buffer_size == 0)) {
        return MC_BAD_ARG;
    }

    name = dango_store_client_name(c);
    if (strlen(name) >= buffer_size) {
        return MC_BAD_ARG;
    }

    memcpy(buffer, name, strlen(name) + 1);
    return 0;
}

/* ---------- data ---------- */

static int mc_put_rc(dango_store_client_t *c, int rc)
{
    /* Mooncake's Client::Put: OBJECT_ALREADY_EXISTS is success. */
    return (rc == DANGO_EOBJ_EXISTS) ? 0 : mc_err(c, rc);
}

int mooncake_store_put(mooncake_store_t store, const char *key,
                       const void *value, size_t size,
                       const mooncake_replicate_config_t *config)
{
    dango_store_client_t          *c = mc_client(store);
    dango_store_replicate_config_t cfg, *cp;

    if ((c == NULL) || (key == NULL) || (value == NULL) ||
        (mc_config(config, &cp, &cfg) != 0)) {
        return MC_BAD_ARG;
    }

    return mc_put_rc(c, dango_store_put(c, key, value, size, cp));
}

int mooncake_store_put_from(mooncake_store_t store, const char *key,
                            void *buffer, size_t size,
                            const mooncake_replicate_config_t *config)
{
    dango_store_client_t          *c = mc_client(store);
    dango_store_replicate_config_t cfg, *cp;

    if ((c == NULL) || (key == NULL) || (buffer == NULL) ||
        (mc_config(config, &cp, &cfg) != 0)) {
        return MC_BAD_ARG;
    }

    return mc_put_rc(c, dango_store_put_from(c, key, buffer, size, cp));
}

int mooncake_store_batch_put_from(mooncake_store_t store, const char **keys,
                                  void **buffers, const size_t *sizes,
                                  size_t                             count,
                                  const mooncake_replicate_config_t *config,
                                  int *results_out)
{
    dango_store_client_t          *c = mc_client(store);
    dango_store_replicate_config_t cfg, *cp;
    int                            rc;

    if ((c == NULL) || (keys == NULL) || (buffers == NULL) || (sizes == NULL) ||
        (results_out == NULL) || (count == 0) ||
        (count > DANGO_STORE_BATCH_MAX) ||
        (mc_config(config, &cp, &cfg) != 0)) {
        return MC_BAD_ARG;
    }

    rc = dango_store_batch_put(c, count, keys, (const void *const *)buffers,
                               sizes, 1, cp, results_out);
    for (size_t i = 0; i < count; i++) {
        results_out[i] = mc_put_rc(c, results_out[i]);
    }

    return (rc == 0) ? 0 : mc_err(c, rc);
}

int64_t mooncake_store_get_into(mooncake_store_t store, const char *key,
                                void *buffer, size_t size)
{
    dango_store_client_t *c = mc_client(store);
    int64_t               rc;

    if ((c == NULL) || (key == NULL) || (buffer == NULL)) {
        return MC_BAD_ARG;
    }

    rc = dango_store_get_into(c, key, buffer, size);
    return (rc >= 0) ? rc : mc_err(c, (int)rc);
}

int mooncake_store_batch_get_into(mooncake_store_t store, const char **keys,
                                  void **buffers, const size_t *sizes,
                                  size_t count, int64_t *results_out)
{
    dango_store_client_t *c = mc_client(store);
    int                   rc;

    if ((c == NULL) || (keys == NULL) || (buffers == NULL) || (sizes == NULL) ||
        (results_out == NULL) || (count == 0) ||
        (count > DANGO_STORE_BATCH_MAX)) {
        return MC_BAD_ARG;
    }

    rc = dango_store_batch_get(c, count, keys, buffers, sizes, 1, results_out);
    for (size_t i = 0; i < count; i++) {
        if (results_out[i] < 0) {
            results_out[i] = mc_err(c, (int)results_out[i]);
        }
    }

    return (rc == 0) ? 0 : mc_err(c, rc);
}

int mooncake_store_is_exist(mooncake_store_t store, const char *key)
{
    dango_store_client_t *c = mc_client(store);
    int                   rc;

    if ((c == NULL) || (key == NULL)) {
        return MC_BAD_ARG;
    }

    rc = dango_store_exist(c, key);
    return (rc >= 0) ? rc : mc_err(c, rc);
}

int mooncake_store_batch_is_exist(mooncake_store_t store, const char **keys,
                                  size_t count, int *results_out)
{
    dango_store_client_t *c = mc_client(store);
    int                   rc;

    if ((c == NULL) || (keys == NULL) || (results_out == NULL) ||
        (count == 0) || (count > DANGO_STORE_BATCH_MAX)) {
        return MC_BAD_ARG;
    }

    rc = dango_store_batch_exist(c, count, keys, results_out);
    for (size_t i = 0; i < count; i++) {
        if (results_out[i] < 0) {
            results_out[i] = mc_err(c, results_out[i]);
        }
    }

    return (rc == 0) ? 0 : mc_err(c, rc);
}

int64_t mooncake_store_get_size(mooncake_store_t store, const char *key)
{
    dango_store_client_t *c = mc_client(store);
    int64_t               rc;

    if ((c == NULL) || (key == NULL)) {
        return MC_BAD_ARG;
    }

    rc = dango_store_size(c, key);
    return (rc >= 0) ? rc : mc_err(c, (int)rc);
}

int mooncake_store_remove(mooncake_store_t store, const char *key, int force)
{
    dango_store_client_t *c = mc_client(store);

    if ((c == NULL) || (key == NULL)) {
        return MC_BAD_ARG;
    }

    return mc_err(c, dango_store_remove(c, key, force));
}

int64_t mooncake_store_remove_by_regex(mooncake_store_t store,
                                       const char *pattern, int force)
{
    dango_store_client_t *c = mc_client(store);
    int64_t               rc;

    if ((c == NULL) || (pattern == NULL)) {
        return MC_BAD_ARG;
    }

    rc = dango_store_remove_by_regex(c, pattern, force);
    return (rc >= 0) ? rc : mc_err(c, (int)rc);
}

int64_t mooncake_store_remove_all(mooncake_store_t store, int force)
{
    dango_store_client_t *c = mc_client(store);
    int64_t               rc;

    if (c == NULL) {
        return MC_BAD_ARG;
    }

    rc = dango_store_remove_all(c, force);
    return (rc >= 0) ? rc : mc_err(c, (int)rc);
}

int mooncake_store_register_buffer(mooncake_store_t store, void *buffer,
                                   size_t size)
{
    dango_store_client_t *c = mc_client(store);

    if ((c == NULL) || (buffer == NULL) || (size == 0)) {
        return MC_BAD_ARG;
    }

    return mc_err(c, dango_store_register_buffer(c, buffer, size));
}

int mooncake_store_unregister_buffer(mooncake_store_t store, void *buffer)
{
    dango_store_client_t *c = mc_client(store);

    if ((c == NULL) || (buffer == NULL)) {
        return MC_BAD_ARG;
    }

    return mc_err(c, dango_store_unregister_buffer(c, buffer));
}
