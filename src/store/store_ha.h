/*
 * What the master's leader election (store_master_ha.c) and the clients
 * that follow the leader (store_client_ha.c) agree on.
 *
 * The leader holds the etcd key "dango/<cluster id>/master" under its
 * etcd lease. The value is the leader's advertised RPC address
 * "host:port"; the key's create revision is the leader's term. Terms are
 * etcd revisions, so every new leadership has a larger one than all
 * before it. A leader stamps its term on every RPC reply
 * (dango_rpc_server_set_epoch) and uses it as its view version; clients
 * refuse replies of an older term than one they have seen
 * (dango_rpc_client_fence, DANGO_ESTALE_TERM).
 */
#ifndef DANGO_STORE_HA_H
#define DANGO_STORE_HA_H

#include <stdio.h>
#include <string.h>

/* Scheme of a master address that names an etcd cluster to follow. */
#define DANGO_STORE_HA_SCHEME "etcd://"
/* Longest cluster id. */
#define DANGO_STORE_HA_CLUSTER_MAX 128
/* Longest advertised address. */
#define DANGO_STORE_HA_ADDR_MAX 256

/* 1 when @addr is "etcd://..." (a leader to follow), else 0. */
static inline int dango__store_ha_is_url(const char *addr)
{
    return (addr != NULL) && (strncmp(addr, DANGO_STORE_HA_SCHEME,
                                      sizeof(DANGO_STORE_HA_SCHEME) - 1) == 0);
}

/*
 * The election key of @cluster into @buf; its length, or 0 when @cluster
 * is empty, too long or holds a '/'.
 */
static inline size_t dango__store_ha_key(const char *cluster, char *buf,
                                         size_t len)
{
    size_t clen = (cluster != NULL) ? strlen(cluster) : 0;
    int    n;

    if ((clen == 0) || (clen > DANGO_STORE_HA_CLUSTER_MAX) ||
        (strchr(cluster, '/') != NULL)) {
        return 0;
    }

    n = snprintf(buf, len, "dango/%s/master", cluster);
    return ((n > 0) && ((size_t)n < len)) ? (size_t)n : 0;
}

#endif
