/*
 * Configuration table of the metadata module (options MD_*).
 *
 * The table is registered at load time; dango_md_open() fills a
 * dango__md_config_t from it, so every handle copies its options once and
 * the caller may release the dango_config_t right after opening.
 */
#include "md_int.h"

static const dango_config_field_t md_config_fields[] = {
    {"CONNECT_TIMEOUT", "1500ms",
     "Time allowed to connect to a remote metadata server (0: no limit).",
     offsetof(dango__md_config_t, connect_timeout_ns), DANGO_CFG_TIME},
    {"TIMEOUT", "3s",
     "Time allowed for one metadata request, connecting included "
     "(0: no limit).",
     offsetof(dango__md_config_t, timeout_ns), DANGO_CFG_TIME},
    {"WATCH_INTERVAL", "1s",
     "Polling period of watches on backends without a change feed.",
     offsetof(dango__md_config_t, watch_interval_ns), DANGO_CFG_TIME},
    {"ETCD_PREFIX", "/dango/",
     "etcd:// backend: prefix of every key in etcd, so clusters and tenants "
     "can share one etcd (may be empty).",
     offsetof(dango__md_config_t, etcd_prefix), DANGO_CFG_STRING},
    {"ETCD_SESSION_TTL", "10s",
     "etcd:// backend: keys put without a TTL are tied to a lease the handle "
     "keeps alive, so they vanish this long after the process dies "
     "(0: keys without a TTL live until deleted).",
     offsetof(dango__md_config_t, etcd_session_ttl_ns), DANGO_CFG_TIME},
    {"REDIS_PREFIX", "dango/",
     "redis:// backend: prefix of every key in Redis (may be empty).",
     offsetof(dango__md_config_t, redis_prefix), DANGO_CFG_STRING},
    {NULL, NULL, NULL, 0, DANGO_CFG_STRING}};

dango_config_table_t dango__md_config_table = {.prefix = "MD",
                                               .doc = "Metadata service client",
                                               .fields = md_config_fields,
                                               .next   = NULL};

DANGO_CONFIG_REGISTER_TABLE(dango__md_config_table)
