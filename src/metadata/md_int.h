/*
 * Module-private declarations of the metadata module.
 *
 * A dango_md_t is the first member of a backend's own handle struct; md.c
 * validates arguments and dispatches every call through the backend's ops
 * table, so a new backend (etcd, Redis) is one more file and one more row in
 * md.c's scheme table (mem, http, etcd, redis). The key/value table behind
 * mem:// is also used by the embedded HTTP server, so its API lives here too.
 */
#ifndef DANGO_MD_INT_H
#define DANGO_MD_INT_H

/* Every file of the module logs as component "md" (DANGO_LOG=md=debug). */
#define DANGO_LOG_COMPONENT dango__md_log

#include <stddef.h>
#include <stdint.h>

#include <dango/config.h>
#include <dango/error.h>
#include <dango/log.h>
#include <dango/metadata.h>

#include "common/config_table.h"

extern dango_log_component_t dango__md_log;

/* Effective MD_* options of one handle (filled from dango__md_config_table). */
typedef struct dango__md_config {
    uint64_t connect_timeout_ns; /* MD_CONNECT_TIMEOUT */
    uint64_t timeout_ns;         /* MD_TIMEOUT: whole request */
    uint64_t watch_interval_ns;  /* MD_WATCH_INTERVAL: polling watch period */
    /*
     * Backend options. Strings belong to the parsed table and are freed
     * right after open: a backend that keeps one copies it.
     */
    char    *etcd_prefix;         /* MD_ETCD_PREFIX */
    uint64_t etcd_session_ttl_ns; /* MD_ETCD_SESSION_TTL */
    char    *redis_prefix;        /* MD_REDIS_PREFIX */
} dango__md_config_t;

extern dango_config_table_t dango__md_config_table;

/*
 * Backend operations. md.c has already validated every argument (key
 * length, value size, non-NULL outputs) before calling one, and sets the
 * output parameters only from what the backend returns on success. All
 * functions must be safe to call from several threads at once.
 *
 * watch_start/watch_stop are optional (both or neither): a backend with a
 * native change feed fills them; otherwise md.c polls with list + get.
 */
typedef struct dango__md_ops {
    const char *name;
    int (*get)(dango_md_t *md, const char *key, char **value_p, size_t *len_p);
    int (*put)(dango_md_t *md, const char *key, const void *value, size_t len,
               uint64_t ttl_ms);
    int (*del)(dango_md_t *md, const char *key);
    /* Keys sorted by strcmp(); array and keys from dango_malloc(). */
    int (*list)(dango_md_t *md, const char *prefix, char ***keys_p,
                size_t *count_p);
    void (*close)(dango_md_t *md);
    int (*watch_start)(dango_md_t *md, const char *prefix, dango_md_watch_cb cb,
                       void *arg, dango_md_watch_t **watch_p);
    void (*watch_stop)(dango_md_watch_t *watch);
} dango__md_ops_t;

/* The common head of every backend handle. */
struct dango_md {
    const dango__md_ops_t *ops;
    dango__md_config_t     config;
    int                    num_watches; /* live watches; atomic */
};

/* The common head of every watch (native ones embed it too). */
struct dango_md_watch {
    dango_md_t *md;
};

/*
 * Opens a backend; @rest is the connection string after "<scheme>://".
 * The backend fills md->ops and md->config.
 */
typedef int (*dango__md_open_fn)(const char               *rest,
                                 const dango__md_config_t *config,
                                 dango_md_t              **md_p);

int dango__md_mem_open(const char *rest, const dango__md_config_t *config,
                       dango_md_t **md_p);
int dango__md_http_open(const char *rest, const dango__md_config_t *config,
                        dango_md_t **md_p);
int dango__md_etcd_open(const char *rest, const dango__md_config_t *config,
                        dango_md_t **md_p);
int dango__md_redis_open(const char *rest, const dango__md_config_t *config,
                         dango_md_t **md_p);

/* 0 when @key is a valid key (non-empty, at most DANGO_MD_KEY_MAX bytes). */
int dango__md_key_check(const char *key);

/* ---------- in-memory table (md_mem.c) ---------- */

/*
 * A sorted, mutex-protected key/value table with per-key expiry. Expired
 * keys are invisible at once and freed lazily (when touched, listed, or by
 * a bounded sweep on each put). Keys must already be valid.
 */
typedef struct dango__md_table dango__md_table_t;

int  dango__md_table_create(dango__md_table_t **table_p);
void dango__md_table_destroy(dango__md_table_t *table);
/* *value_p is a NUL-terminated copy from dango_malloc(). */
int dango__md_table_get(dango__md_table_t *table, const char *key,
                        char **value_p, size_t *len_p);
int dango__md_table_put(dango__md_table_t *table, const char *key,
                        const void *value, size_t len, uint64_t ttl_ms);
int dango__md_table_del(dango__md_table_t *table, const char *key);
int dango__md_table_list(dango__md_table_t *table, const char *prefix,
                         char ***keys_p, size_t *count_p);

#endif
