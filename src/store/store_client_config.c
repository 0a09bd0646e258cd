/* Options of the store client (STORE_*). */
#include <stddef.h>

#include "store/store_client_int.h"

static const dango_config_field_t store_client_config_fields[] = {
    {"MASTER", "127.0.0.1:50051",
     "store master RPC address host:port, or etcd://host:port[,...] to "
     "follow the leader of masters elected through etcd",
     offsetof(store_client_config_t, master), DANGO_CFG_STRING},
    {"SEGMENT_SIZE", "0",
     "bytes of DRAM a client contributes to the pool (0: a pure client; "
     "otherwise 1 KiB .. 1 TiB)",
     offsetof(store_client_config_t, segment_size), DANGO_CFG_SIZE},
    {"LOCAL_BUFFER_SIZE", "64MiB",
     "registered staging memory for values of unregistered caller buffers",
     offsetof(store_client_config_t, local_buffer_size), DANGO_CFG_SIZE},
    {"REPLICA_NUM", "1",
     "memory replicas of an object when the caller does not say (1..8)",
     offsetof(store_client_config_t, replica_num), DANGO_CFG_UINT},
    {"PING_INTERVAL", "1s", "period of the client's ping to the master",
     offsetof(store_client_config_t, ping_interval), DANGO_CFG_TIME},
    {"PING_FAILURES", "3",
     "consecutive failed pings after which the master counts as lost (the "
     "segment is mounted again as soon as it answers)",
     offsetof(store_client_config_t, ping_failures), DANGO_CFG_UINT},
    {"RPC_TIMEOUT", "30s", "bound on one call to the master",
     offsetof(store_client_config_t, rpc_timeout), DANGO_CFG_TIME},
    {"CONNECT_TIMEOUT", "5s",
     "bound on connecting to the master (within RPC_TIMEOUT)",
     offsetof(store_client_config_t, connect_timeout), DANGO_CFG_TIME},
    {"MASTER_LANES", "4",
     "connections to the master that calling threads borrow one call at a "
     "time, each caller reading its own reply, while at most this many "
     "calls are in progress (more share one pipelined connection; 0: all "
     "do; 0..256)",
     offsetof(store_client_config_t, master_lanes), DANGO_CFG_UINT},
    {"MASTER_LOCAL", "yes",
     "call a master on this host (same network namespace) through the "
     "shared-memory channel it offers, instead of TCP",
     offsetof(store_client_config_t, master_local), DANGO_CFG_BOOL},
    {"TRANSFER_TIMEOUT", "30s", "bound on the data transfers of one put or get",
     offsetof(store_client_config_t, transfer_timeout), DANGO_CFG_TIME},
    {"WAIT_POLL", "50us",
     "a put or get polls its transfers this long, yielding the CPU between "
     "polls, before it waits for them in the engine",
     offsetof(store_client_config_t, wait_poll), DANGO_CFG_TIME},
    {"VERIFY_CHECKSUM", "yes",
     "check the xxh3-64 of every value a get fetches (record headers are "
     "always checked)",
     offsetof(store_client_config_t, verify_checksum), DANGO_CFG_BOOL},
    {"REGISTER_THRESHOLD", "256KiB",
     "values at least this large in unregistered caller memory are "
     "registered for the call and moved directly; smaller ones are copied "
     "through the staging buffer",
     offsetof(store_client_config_t, register_threshold), DANGO_CFG_SIZE},
    {"COMMIT_QUEUE", "4096",
     "commit words queued for the committer thread before puts write them "
     "themselves",
     offsetof(store_client_config_t, commit_queue), DANGO_CFG_UINT},
    {"DISK_PATH", "",
     "disk tier of a node: a file, or a directory in which dango-disk.data "
     "is used (needs SEGMENT_SIZE and DISK_SIZE; empty: no disk tier)",
     offsetof(store_client_config_t, disk_path), DANGO_CFG_STRING},
    {"DISK_SIZE", "0", "bytes of the disk tier (at least 1 MiB)",
     offsetof(store_client_config_t, disk_size), DANGO_CFG_SIZE},
    {"DISK_BUFFER", "16MiB",
     "registered io_uring bounce buffer of the disk tier; records larger "
     "than this are not offloaded",
     offsetof(store_client_config_t, disk_buffer), DANGO_CFG_SIZE},
    {"DISK_STAGING", "64MiB",
     "registered memory in which a node with a disk tier puts records read "
     "for other clients (each kept 1 s for the reader)",
     offsetof(store_client_config_t, disk_staging), DANGO_CFG_SIZE},
    {"DISK_HIGH_WATERMARK", "0.95",
     "the disk tier drops least recently used records to stay under this "
     "share of DISK_SIZE (0..1]",
     offsetof(store_client_config_t, disk_high_watermark), DANGO_CFG_DOUBLE},
    {"KV_EVENTS_URL", "",
     "http:// address of a conductor: publish which KV blocks this node's "
     "segment gains and loses to its /kv_events (empty: off)",
     offsetof(store_client_config_t, kv_events_url), DANGO_CFG_STRING},
    {"KV_EVENTS_PREFIX", "",
     "keys made of this prefix and exactly 16 lowercase hex digits (the "
     "form the conductor names blocks in) are KV blocks (the hex is the "
     "block hash); other keys are not published",
     offsetof(store_client_config_t, kv_events_prefix), DANGO_CFG_STRING},
    {"KV_EVENTS_INTERVAL", "200ms",
     "period of the KV event publisher (poll the master, post the batch)",
     offsetof(store_client_config_t, kv_events_interval), DANGO_CFG_TIME},
    /* Following an elected master (store_client_ha.c). */
    {"CLUSTER_ID", "dango",
     "with an etcd:// master: the masters' MASTER_CLUSTER_ID",
     offsetof(store_client_config_t, cluster_id), DANGO_CFG_STRING},
    {"HA_TIMEOUT", "30s",
     "with an etcd:// master: bound on one master call across leader "
     "changes (retries with backoff; each attempt is bounded by "
     "RPC_TIMEOUT)",
     offsetof(store_client_config_t, ha_timeout), DANGO_CFG_TIME},
    {"SYNC_COMMIT", "no",
     "a put returns only once its commit words are acknowledged by the "
     "nodes (acknowledged puts survive a master and writer crash); always "
     "on with an etcd:// master",
     offsetof(store_client_config_t, sync_commit), DANGO_CFG_BOOL},
    /* Location cache (store_client_loc.c). */
    {"LOCATION_CACHE_TIME", "1s",
     "a get reuses the replica locations the master gave this client for "
     "a key, within their read lease, for this long without asking the "
     "master again (bounded by half the lease; another client's upsert or "
     "forced remove may be seen this much later; 0: off)",
     offsetof(store_client_config_t, location_cache_time), DANGO_CFG_TIME},
    {"LOCATION_CACHE_ENTRIES", "16384",
     "keys the location cache holds at most (about 300 bytes plus the key "
     "each; 0: off)",
     offsetof(store_client_config_t, location_cache_entries), DANGO_CFG_UINT},
    /* Slots (store_client_slot.c). */
    {"PUT_SLOTS", "8MiB",
     "record bytes of slots this client keeps: regions the master reserves "
     "ahead for puts of a record length it repeats, so that such a put "
     "costs one master round trip instead of two (0: off; the master "
     "grants at most MASTER_PUT_SLOTS)",
     offsetof(store_client_config_t, put_slots), DANGO_CFG_SIZE},
    {NULL, NULL, NULL, 0, DANGO_CFG_STRING}};

dango_config_table_t dango__store_client_config_table = {
    "STORE", "store client", store_client_config_fields, NULL};

DANGO_CONFIG_REGISTER_TABLE(dango__store_client_config_table)
