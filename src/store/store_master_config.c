/* Options of the store master (MASTER_*), defaults from spec store.md §10. */
#include <stddef.h>

#include "common/time.h"
#include "store/store_ha.h"
#include "store/store_master_int.h"

/* Bounds of the time options. */
#define MS_TIME_MIN (1ull * DANGO_NSEC_PER_MSEC)
#define MS_TIME_MAX (30ull * 24 * 3600 * DANGO_NSEC_PER_SEC)

static const dango_config_field_t master_config_fields[] = {
    {"LISTEN", "0.0.0.0:50051", "RPC listen address host:port (port 0: any)",
     offsetof(ms_config_t, listen), DANGO_CFG_STRING},
    {"LOCAL_LANES", "16",
     "lanes of the local channel: a client on this host (in the same "
     "network namespace) calls through shared memory with this many calls "
     "in flight, instead of TCP (0: off, no Unix socket either; 0..32)",
     offsetof(ms_config_t, local_lanes), DANGO_CFG_INT},
    {"ADMIN_LISTEN", "0.0.0.0:9003",
     "admin HTTP address host:port (/health, /metrics, /segments, /keys, "
     "/key/<key>); empty: off",
     offsetof(ms_config_t, admin_listen), DANGO_CFG_STRING},
    {"METADATA_LISTEN", "",
     "embedded HTTP metadata server host:port (e.g. 0.0.0.0:8080); empty: "
     "off",
     offsetof(ms_config_t, metadata_listen), DANGO_CFG_STRING},
    {"LEASE_TTL", "10s",
     "read lease granted by GetReplicaList and Exist; leased objects are "
     "neither evicted nor removed without force",
     offsetof(ms_config_t, lease_ttl), DANGO_CFG_TIME},
    {"LOCATION_CACHE_TIME", "1s",
     "clients may reuse the replica locations of a get this long without "
     "asking again (at most half of LEASE_TTL; 0: they may not); an "
     "upsert or forced remove of an object read meanwhile waits until "
     "they are done with it",
     offsetof(ms_config_t, location_cache_time), DANGO_CFG_TIME},
    {"CLIENT_TTL", "10s",
     "a client silent (no ping) for this long is expired: its segments are "
     "unmounted and its puts revoked",
     offsetof(ms_config_t, client_ttl), DANGO_CFG_TIME},
    {"MONITOR_INTERVAL", "1s", "period of the client liveness check",
     offsetof(ms_config_t, monitor_interval), DANGO_CFG_TIME},
    {"PUT_DISCARD_TIMEOUT", "30s",
     "age after which an unfinished put may be preempted by a new put of "
     "the same key",
     offsetof(ms_config_t, put_discard_timeout), DANGO_CFG_TIME},
    {"PUT_SLOTS", "64MiB",
     "record bytes of slots one client may hold: regions reserved ahead so "
     "that a put of a record length it repeats costs one round trip "
     "(PutBind) instead of two (PutStart, PutEnd); 0: no slots",
     offsetof(ms_config_t, put_slots), DANGO_CFG_SIZE},
    {"PUT_RELEASE_TIMEOUT", "600s",
     "age after which the regions of an unfinished or preempted put are "
     "freed",
     offsetof(ms_config_t, put_release_timeout), DANGO_CFG_TIME},
    {"ZOMBIE_GRACE", "30s",
     "regions of puts revoked by client expiry are freed after this long "
     "(the writer may still be writing)",
     offsetof(ms_config_t, zombie_grace), DANGO_CFG_TIME},
    {"REBUILD_WINDOW", "60s",
     "after the first segment (re)mount, how long the objects nodes report "
     "on remount are taken back into the object table (a restarted master "
     "rebuilds from them)",
     offsetof(ms_config_t, rebuild_window), DANGO_CFG_TIME},
    {"SOFT_PIN_TTL", "30min", "soft pin length when a put asks for none",
     offsetof(ms_config_t, soft_pin_ttl), DANGO_CFG_TIME},
    {"MAX_SOFT_PIN_TTL", "24h", "longest soft pin a put may ask for",
     offsetof(ms_config_t, max_soft_pin_ttl), DANGO_CFG_TIME},
    {"EVICT_HIGH_WATERMARK", "0.90",
     "eviction starts when allocated/capacity exceeds this (0..1]",
     offsetof(ms_config_t, evict_high_watermark), DANGO_CFG_DOUBLE},
    {"EVICT_RATIO", "0.05",
     "share of the objects one eviction pass aims to evict [0..1]",
     offsetof(ms_config_t, evict_ratio), DANGO_CFG_DOUBLE},
    {"EVICT_INTERVAL", "10ms",
     "period of the eviction check (also frees parked regions)",
     offsetof(ms_config_t, evict_interval), DANGO_CFG_TIME},
    {"EVICT_SOFT_PINNED", "yes",
     "evict soft-pinned objects (in a second pass) when the first falls "
     "short",
     offsetof(ms_config_t, evict_soft_pinned), DANGO_CFG_BOOL},
    {"VIEW_VERSION", "0",
     "view version reported to clients (0: derived from the start time)",
     offsetof(ms_config_t, view_version), DANGO_CFG_INT},
    /* High availability (store_master_ha.c). */
    {"HA", "",
     "leader election through etcd: etcd://host:port[,host:port...]; only "
     "the leader serves (the others answer ENOT_LEADER); empty: off",
     offsetof(ms_config_t, ha), DANGO_CFG_STRING},
    {"CLUSTER_ID", "dango",
     "cluster id: masters and clients of one store use the same (election "
     "key dango/<id>/master)",
     offsetof(ms_config_t, cluster_id), DANGO_CFG_STRING},
    {"HA_LEASE_TTL", "5s",
     "etcd lease of the leader (whole seconds, 1s..60s): a dead leader is "
     "replaced within less than twice this (lease expiry, then a warm-up "
     "of 2/3 of it)",
     offsetof(ms_config_t, ha_lease_ttl), DANGO_CFG_TIME},
    {"ADVERTISE", "",
     "RPC address host:port published for clients when leader; empty: the "
     "RPC address (0.0.0.0 as 127.0.0.1)",
     offsetof(ms_config_t, advertise), DANGO_CFG_STRING},
    {"DISK_OFFLOAD", "yes",
     "evicted objects are first written to the disk tier of the node "
     "holding them, when it has one with room",
     offsetof(ms_config_t, disk_offload), DANGO_CFG_BOOL},
    {"DISK_PROMOTE_HITS", "2",
     "reads of a disk-only object that bring it back into memory (1..1e6)",
     offsetof(ms_config_t, disk_promote_hits), DANGO_CFG_INT},
    {"DISK_QUEUE", "256",
     "offloads queued or running per node (1..65536); beyond, eviction "
     "keeps the object in memory",
     offsetof(ms_config_t, disk_queue), DANGO_CFG_INT},
    {NULL, NULL, NULL, 0, DANGO_CFG_STRING}};

dango_config_table_t dango__master_config_table = {"MASTER", "store master",
                                                   master_config_fields, NULL};

DANGO_CONFIG_REGISTER_TABLE(dango__master_config_table)

static int time_ok(const char *name, uint64_t v)
{
    if ((v < MS_TIME_MIN) || (v > MS_TIME_MAX)) {
        dango_error("master: MASTER_%s out of range (1ms..30d)", name);
        return 0;
    }
    return 1;
}

int dango__master_config_load(const dango_config_t *cfg, ms_config_t *c)
{
    int rc = dango__config_parse(cfg, &dango__master_config_table, c);

    if (rc != 0) {
        return rc;
    }

    if (!time_ok("LEASE_TTL", c->lease_ttl) ||
        !time_ok("CLIENT_TTL", c->client_ttl) ||
        !time_ok("MONITOR_INTERVAL", c->monitor_interval) ||
        !time_ok("PUT_DISCARD_TIMEOUT", c->put_discard_timeout) ||
        !time_ok("PUT_RELEASE_TIMEOUT", c->put_release_timeout) ||
        !time_ok("ZOMBIE_GRACE", c->zombie_grace) ||
        !time_ok("REBUILD_WINDOW", c->rebuild_window) ||
        !time_ok("SOFT_PIN_TTL", c->soft_pin_ttl) ||
        !time_ok("MAX_SOFT_PIN_TTL", c->max_soft_pin_ttl) ||
        !time_ok("EVICT_INTERVAL", c->evict_interval)) {
        goto err;
    }

    if (c->put_release_timeout < c->put_discard_timeout) {
        dango_error("master: MASTER_PUT_RELEASE_TIMEOUT is below "
                    "MASTER_PUT_DISCARD_TIMEOUT");
        goto err;
    }
    if (c->max_soft_pin_ttl < c->soft_pin_ttl) {
        dango_error("master: MASTER_MAX_SOFT_PIN_TTL is below "
                    "MASTER_SOFT_PIN_TTL");
        goto err;
    }
    if (!(c->evict_high_watermark > 0.0) || (c->evict_high_watermark > 1.0)) {
        dango_error("master: MASTER_EVICT_HIGH_WATERMARK out of range (0..1]");
        goto err;
    }
    if (!(c->evict_ratio >= 0.0) || (c->evict_ratio > 1.0)) {
        dango_error("master: MASTER_EVICT_RATIO out of range [0..1]");
        goto err;
    }
    if ((c->disk_promote_hits < 1) || (c->disk_promote_hits > 1000000) ||
        (c->disk_queue < 1) || (c->disk_queue > 65536)) {
        dango_error("master: MASTER_DISK_PROMOTE_HITS or MASTER_DISK_QUEUE "
                    "out of range");
        goto err;
    }
    if (c->view_version < 0) {
        dango_error("master: MASTER_VIEW_VERSION is negative");
        goto err;
    }
    if ((c->local_lanes < 0) || (c->local_lanes > 32)) {
        dango_error("master: MASTER_LOCAL_LANES out of range (0..32)");
        goto err;
    }
    if ((c->ha_lease_ttl < DANGO_NSEC_PER_SEC) ||
        (c->ha_lease_ttl > 60 * DANGO_NSEC_PER_SEC)) {
        dango_error("master: MASTER_HA_LEASE_TTL out of range (1s..60s)");
        goto err;
    }
    if ((c->ha != NULL) && (c->ha[0] != '\0') &&
        !dango__store_ha_is_url(c->ha)) {
        dango_error("master: MASTER_HA must be etcd://host:port[,...]");
        goto err;
    }
    if ((c->ha != NULL) && (c->ha[0] != '\0')) {
        char key[DANGO_STORE_HA_CLUSTER_MAX + 32];

        if (dango__store_ha_key(c->cluster_id, key, sizeof(key)) == 0) {
            dango_error("master: MASTER_CLUSTER_ID must be 1..%d bytes "
                        "without '/'",
                        DANGO_STORE_HA_CLUSTER_MAX);
            goto err;
        }
    }
    if ((c->listen == NULL) || (c->listen[0] == '\0')) {
        dango_error("master: MASTER_LISTEN is empty");
        goto err;
    }
    return 0;

err:
    dango__config_free(&dango__master_config_table, c);
    return DANGO_ECONFIG;
}

void dango__master_config_free(ms_config_t *c)
{
    dango__config_free(&dango__master_config_table, c);
}
