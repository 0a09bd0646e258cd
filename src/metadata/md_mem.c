/*
 * In-memory metadata: the key/value table and the mem://<name> backend.
 *
 * DESIGN
 *
 * The table is an array of entry pointers kept sorted by strcmp() on the
 * key, behind one mutex. Lookups are a binary search; a prefix listing is a
 * binary search for the prefix followed by a scan while keys still match, so
 * dango_md_list() needs no sort. Inserting moves pointers, which is cheap at
 * the sizes a metadata service holds (one descriptor per segment), and keeps
 * the code small enough to trust.
 *
 * Expiry: an entry with a TTL stores its deadline on the monotonic clock.
 * Every lookup treats an expired entry as absent and frees it on the spot;
 * listings free the expired entries they walk over; and each put sweeps a
 * few entries from a rotating cursor (bounded work per call, like Redis'
 * active expiry) so keys that are never read again do not pile up.
 *
 * mem:// handles with the same name share one table through a process-wide
 * registry of named, refcounted tables. This is the one piece of global
 * mutable state in the module, and it is what mem:// means: handles opened
 * by different parts of one process see each other's keys. The table is
 * freed when the last handle is closed.
 *
 * The same table code backs the embedded HTTP server (md_server.c).
 */
#include "md_int.h"

#include <pthread.h>
#include <string.h>

#include "common/alloc.h"
#include "common/list.h"
#include "common/time.h"

/* Entries examined by the expiry sweep on each put. */
#define MD_TABLE_SWEEP_STEPS 8
/* Longest table name after "mem://". */
#define MD_MEM_NAME_MAX 256

typedef struct md_entry {
    uint64_t expire_ns; /* monotonic deadline, 0 = never */
    char    *value;     /* len bytes plus a NUL */
    size_t   len;
    char     key[];
} md_entry_t;

struct dango__md_table {
    pthread_mutex_t lock;
    md_entry_t    **entries; /* sorted by key */
    size_t          count;
    size_t          cap;
    size_t          sweep_pos; /* next index the put-time sweep examines */
};

/* A named table shared by mem:// handles; guarded by md_mem_registry_lock. */
typedef struct md_mem_shared {
    dango_list_link_t  link;
    unsigned           refcount;
    dango__md_table_t *table;
    char               name[];
} md_mem_shared_t;

typedef struct md_mem {
    dango_md_t       super;
    md_mem_shared_t *shared;
} md_mem_t;

static pthread_mutex_t md_mem_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static DANGO_LIST_HEAD(md_mem_registry);

/* ---------- private functions: table ---------- */

static int entry_expired(const md_entry_t *entry, uint64_t now)
{
    return (entry->expire_ns != 0) && (entry->expire_ns <= now);
}

static void entry_free(md_entry_t *entry)
{
    dango_free(entry->value);
    dango_free(entry);
}

/* Index of the first entry whose key is >= @key. Called with the lock held. */
static size_t table_lower_bound(const dango__md_table_t *table, const char *key)
{
    size_t lo = 0;
    size_t hi = table->count;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (strcmp(table->entries[mid]->key, key) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }

    return lo;
}

/* Removes and frees entry @idx. Called with the lock held. */
static void table_remove_at(dango__md_table_t *table, size_t idx)
{
    entry_free(table->entries[idx]);
    memmove(&table->entries[idx], &table->entries[idx + 1],
            (table->count - idx - 1) * sizeof(*table->entries));
    table->count--;
    if (table->sweep_pos > idx) {
        table->sweep_pos--;
    }
}

/*
 * Finds the live entry for @key; frees it and reports absence if expired.
 * Returns its index, or -1. Called with the lock held.
 */
static long table_find(dango__md_table_t *table, const char *key, uint64_t now)
{
    size_t idx = table_lower_bound(table, key);

    if ((idx == table->count) || (strcmp(table->entries[idx]->key, key) != 0)) {
        return -1;
    }

    if (entry_expired(table->entries[idx], now)) {
        table_remove_at(table, idx);
        return -1;
    }

    return (long)idx;
}

/* Frees up to MD_TABLE_SWEEP_STEPS expired entries. Lock held. */
static void table_sweep(dango__md_table_t *table, uint64_t now)
{
    for (int step = 0; (step < MD_TABLE_SWEEP_STEPS) && (table->count > 0);
         step++) {
        if (table->sweep_pos >= table->count) {
            table->sweep_pos = 0;
        }

        if (entry_expired(table->entries[table->sweep_pos], now)) {
            table_remove_at(table, table->sweep_pos);
        } else {
            table->sweep_pos++;
        }
    }
}

static uint64_t ttl_deadline(uint64_t now, uint64_t ttl_ms)
{
    if (ttl_ms == 0) {
        return 0;
    }

    /* A TTL too large to represent means "never", not an early expiry. */
    if (ttl_ms > (UINT64_MAX - now) / DANGO_NSEC_PER_MSEC) {
        return 0;
    }

    return now + ttl_ms * DANGO_NSEC_PER_MSEC;
}

/* ---------- table API ---------- */

int dango__md_table_create(dango__md_table_t **table_p)
{
    dango__md_table_t *table;

    table = dango_calloc(1, sizeof(*table), "md_table");
    if (table == NULL) {
        return DANGO_ENOMEM;
    }

    pthread_mutex_init(&table->lock, NULL);
    *table_p = table;
    return 0;
}

void dango__md_table_destroy(dango__md_table_t *table)
{
    if (table == NULL) {
        return;
    }

    for (size_t i = 0; i < table->count; i++) {
        entry_free(table->entries[i]);
    }

    dango_free(table->entries);
    pthread_mutex_destroy(&table->lock);
    dango_free(table);
}

int dango__md_table_get(dango__md_table_t *table, const char *key,
                        char **value_p, size_t *len_p)
{
    md_entry_t *entry;
    char       *copy;
    long        idx;
    int         rc;

    pthread_mutex_lock(&table->lock);
    idx = table_find(table, key, dango_time_ns());
    if (idx < 0) {
        rc = DANGO_ENOENT;
        goto out_unlock;
    }

    entry = table->entries[idx];
    copy  = dango_malloc(entry->len + 1, "md_value");
    if (copy == NULL) {
        rc = DANGO_ENOMEM;
        goto out_unlock;
    }

    memcpy(copy, entry->value, entry->len + 1);
    *value_p = copy;
    *len_p   = entry->len;
    rc       = 0;

out_unlock:
    pthread_mutex_unlock(&table->lock);
    return rc;
}

int dango__md_table_put(dango__md_table_t *table, const char *key,
                        const void *value, size_t len, uint64_t ttl_ms)
{
    size_t      key_len = strlen(key);
    md_entry_t *entry;
    md_entry_t *old;
    char       *copy;
    uint64_t    now;
    size_t      idx;
    int         rc;

    /* Allocate outside the lock: values may be a megabyte. */
    copy = dango_malloc(len + 1, "md_value");
    if (copy == NULL) {
        return DANGO_ENOMEM;
    }

    if (len > 0) {
        memcpy(copy, value, len);
    }
    copy[len] = '\0';

    pthread_mutex_lock(&table->lock);
    now = dango_time_ns();
    table_sweep(table, now);

    idx = table_lower_bound(table, key);
    if ((idx < table->count) && (strcmp(table->entries[idx]->key, key) == 0)) {
        /* Replace in place: the key (and its position) stays. */
        old = table->entries[idx];
        dango_free(old->value);
        old->value     = copy;
        old->len       = len;
        old->expire_ns = ttl_deadline(now, ttl_ms);
        rc             = 0;
        goto out_unlock;
    }

    if (table->count == table->cap) {
        size_t       new_cap = (table->cap == 0) ? 16 : table->cap * 2;
        md_entry_t **entries;

        entries = dango_realloc(table->entries, new_cap * sizeof(*entries),
                                "md_table_entries");
        if (entries == NULL) {
            rc = DANGO_ENOMEM;
            goto err_free_copy;
        }

        table->entries = entries;
        table->cap     = new_cap;
    }

    entry = dango_malloc(sizeof(*entry) + key_len + 1, "md_entry");
    if (entry == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free_copy;
    }

    memcpy(entry->key, key, key_len + 1);
    entry->value     = copy;
    entry->len       = len;
    entry->expire_ns = ttl_deadline(now, ttl_ms);

    memmove(&table->entries[idx + 1], &table->entries[idx],
            (table->count - idx) * sizeof(*table->entries));
    table->entries[idx] = entry;
    table->count++;
    if (table->sweep_pos > idx) {
        table->sweep_pos++;
    }

    rc = 0;
    goto out_unlock;

err_free_copy:
    dango_free(copy);
out_unlock:
    pthread_mutex_unlock(&table->lock);
    return rc;
}

int dango__md_table_del(dango__md_table_t *table, const char *key)
{
    long idx;
    int  rc = 0;

    pthread_mutex_lock(&table->lock);
    idx = table_find(table, key, dango_time_ns());
    if (idx < 0) {
        rc = DANGO_ENOENT;
    } else {
        table_remove_at(table, (size_t)idx);
    }
    pthread_mutex_unlock(&table->lock);

    return rc;
}

int dango__md_table_list(dango__md_table_t *table, const char *prefix,
                         char ***keys_p, size_t *count_p)
{
    size_t   prefix_len = strlen(prefix);
    char   **keys       = NULL;
    size_t   count      = 0;
    size_t   cap        = 0;
    uint64_t now;
    size_t   idx;
    int      rc;

    pthread_mutex_lock(&table->lock);
    now = dango_time_ns();
    idx = table_lower_bound(table, prefix);
    while ((idx < table->count) &&
           (strncmp(table->entries[idx]->key, prefix, prefix_len) == 0)) {
        md_entry_t *entry = table->entries[idx];

        if (entry_expired(entry, now)) {
            table_remove_at(table, idx);
            continue;
        }

        /* One slot more than needed keeps the array NULL-terminated. */
        if (count + 1 >= cap) {
            size_t new_cap = (cap == 0) ? 16 : cap * 2;
            char **grown;

            grown = dango_realloc(keys, new_cap * sizeof(*keys), "md_list");
            if (grown == NULL) {
                rc = DANGO_ENOMEM;
                goto err_free_keys;
            }

            keys = grown;
            cap  = new_cap;
        }

        keys[count] = dango_strdup(entry->key, "md_list_key");
        if (keys[count] == NULL) {
            rc = DANGO_ENOMEM;
            goto err_free_keys;
        }

        count++;
        idx++;
    }
    pthread_mutex_unlock(&table->lock);

    if (keys == NULL) {
        keys = dango_calloc(1, sizeof(*keys), "md_list");
        if (keys == NULL) {
            return DANGO_ENOMEM;
        }
    }

    keys[count] = NULL;
    *keys_p     = keys;
    *count_p    = count;
    return 0;

err_free_keys:
    pthread_mutex_unlock(&table->lock);
    dango_md_list_free(keys, count);
    return rc;
}

/* ---------- private functions: mem:// backend ---------- */

static int md_mem_get(dango_md_t *md, const char *key, char **value_p,
                      size_t *len_p)
{
    md_mem_t *mem = dango_container_of(md, md_mem_t, super);

    return dango__md_table_get(mem->shared->table, key, value_p, len_p);
}

static int md_mem_put(dango_md_t *md, const char *key, const void *value,
                      size_t len, uint64_t ttl_ms)
{
    md_mem_t *mem = dango_container_of(md, md_mem_t, super);

    return dango__md_table_put(mem->shared->table, key, value, len, ttl_ms);
}

static int md_mem_del(dango_md_t *md, const char *key)
{
    md_mem_t *mem = dango_container_of(md, md_mem_t, super);

    return dango__md_table_del(mem->shared->table, key);
}

static int md_mem_list(dango_md_t *md, const char *prefix, char ***keys_p,
                       size_t *count_p)
{
    md_mem_t *mem = dango_container_of(md, md_mem_t, super);

    return dango__md_table_list(mem->shared->table, prefix, keys_p, count_p);
}

static void md_mem_close(dango_md_t *md)
{
    md_mem_t        *mem    = dango_container_of(md, md_mem_t, super);
    md_mem_shared_t *shared = mem->shared;
    int              last;

    pthread_mutex_lock(&md_mem_registry_lock);
    last = (--shared->refcount == 0);
    if (last) {
        dango_list_del(&shared->link);
    }
    pthread_mutex_unlock(&md_mem_registry_lock);

    if (last) {
        dango_debug("mem table '%s': last handle closed, freeing",
                    shared->name);
        dango__md_table_destroy(shared->table);
        dango_free(shared);
    }

    dango_free(mem);
}

static const dango__md_ops_t md_mem_ops = {.name        = "mem",
                                           .get         = md_mem_get,
                                           .put         = md_mem_put,
                                           .del         = md_mem_del,
                                           .list        = md_mem_list,
                                           .close       = md_mem_close,
                                           .watch_start = NULL,
                                           .watch_stop  = NULL};

/* Finds or creates the table @name. Called with the registry lock held. */
static int md_mem_shared_get(const char *name, md_mem_shared_t **shared_p)
{
    size_t           name_len = strlen(name);
    md_mem_shared_t *shared;
    int              rc;

    dango_list_for_each(shared, &md_mem_registry, link)
    {
        if (strcmp(shared->name, name) == 0) {
            shared->refcount++;
            *shared_p = shared;
            return 0;
        }
    }

    shared = dango_calloc(1, sizeof(*shared) + name_len + 1, "md_mem_shared");
    if (shared == NULL) {
        return DANGO_ENOMEM;
    }

    rc = dango__md_table_create(&shared->table);
    if (rc != 0) {
        dango_free(shared);
        return rc;
    }

    memcpy(shared->name, name, name_len + 1);
    shared->refcount = 1;
    dango_list_add_tail(&md_mem_registry, &shared->link);
    dango_debug("mem table '%s' created", name);
    *shared_p = shared;
    return 0;
}

/* ---------- backend entry point ---------- */

int dango__md_mem_open(const char *rest, const dango__md_config_t *config,
                       dango_md_t **md_p)
{
    size_t    name_len = strnlen(rest, MD_MEM_NAME_MAX + 1);
    md_mem_t *mem;
    int       rc;

    if ((name_len == 0) || (name_len > MD_MEM_NAME_MAX)) {
        dango_debug("mem://%.32s: name must be 1 to %d bytes", rest,
                    MD_MEM_NAME_MAX);
        return DANGO_EINVAL;
    }

    mem = dango_calloc(1, sizeof(*mem), "md_mem");
    if (mem == NULL) {
        return DANGO_ENOMEM;
    }

    pthread_mutex_lock(&md_mem_registry_lock);
    rc = md_mem_shared_get(rest, &mem->shared);
    pthread_mutex_unlock(&md_mem_registry_lock);
    if (rc != 0) {
        goto err_free_mem;
    }

    mem->super.ops    = &md_mem_ops;
    mem->super.config = *config;
    *md_p             = &mem->super;
    return 0;

err_free_mem:
    dango_free(mem);
    return rc;
}
