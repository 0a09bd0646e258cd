/*
 * LRU cache models of block keys, and the chained prefix hashing of token
 * ids.
 *
 * DESIGN
 * An LRU is a hash map (common/hmap, intrusive, no allocation per lookup)
 * of entries that are also on a doubly linked recency list, head = most
 * recent. Entries come from a fixed-size pool, so a replay that inserts and
 * evicts millions of keys allocates only when the set grows. The lookups
 * used for matching never touch the list (spec conductor.md §B: a lookup
 * does not change recency). Pinned entries (blocks an ongoing request
 * reads) are skipped by eviction: the victim is the least recent unpinned
 * entry, found by walking from the tail (bounded by the number of pinned
 * entries, which is at most the blocks of the requests in flight).
 */
#include "conductor/conductor_int.h"

#include <endian.h>
#include <string.h>

#include "common/alloc.h"
#include "common/hash.h"

#define LRU_POOL_CHUNK 1024

typedef struct lru_entry {
    dango_hmap_node_t node;
    uint64_t          key;
    struct lru_entry *prev; /* towards the head (more recent) */
    struct lru_entry *next; /* towards the tail (less recent) */
    uint32_t          pins;
} lru_entry_t;

struct dango_conductor_lru {
    dango_hmap_t             map;
    dango_mpool_t            pool;
    lru_entry_t             *head, *tail;
    size_t                   capacity;
    dango_conductor_evict_cb cb;
    void                    *arg;
    uint64_t                 evictions;
};

/* ---------- private functions ---------- */

static lru_entry_t *lru_find(const dango_conductor_lru_t *lru, uint64_t key)
{
    dango_hmap_node_t *n;

    n = dango_hmap_find(&lru->map, &key, sizeof(key),
                        dango_hmap_hash(&key, sizeof(key)));
    return (n == NULL) ? NULL : dango_container_of(n, lru_entry_t, node);
}

static void lru_unlink(dango_conductor_lru_t *lru, lru_entry_t *e)
{
    if (e->prev != NULL) {
        e->prev->next = e->next;
    } else {
        lru->head = e->next;
    }

    if (e->next != NULL) {
        e->next->prev = e->prev;
    } else {
        lru->tail = e->prev;
    }
}

static void lru_push_head(dango_conductor_lru_t *lru, lru_entry_t *e)
{
    e->prev = NULL;
    e->next = lru->head;
    if (lru->head != NULL) {
        lru->head->prev = e;
    } else {
        lru->tail = e;
    }
    lru->head = e;
}

static void lru_drop(dango_conductor_lru_t *lru, lru_entry_t *e)
{
    lru_unlink(lru, e);
    dango_hmap_remove(&lru->map, &e->node);
    dango_mpool_put(&lru->pool, e);
}

/* Evicts the least recent unpinned entry other than @keep. 0 if none. */
static int lru_evict_one(dango_conductor_lru_t *lru, const lru_entry_t *keep)
{
    lru_entry_t *e = lru->tail;
    uint64_t     key;

    while ((e != NULL) && ((e->pins > 0) || (e == keep))) {
        e = e->prev;
    }

    if (e == NULL) {
        return 0;
    }

    key = e->key;
    lru_drop(lru, e);
    lru->evictions++;
    if (lru->cb != NULL) {
        lru->cb(lru->arg, key);
    }
    return 1;
}

static int lru_access_one(dango_conductor_lru_t *lru, uint64_t key)
{
    lru_entry_t *e = lru_find(lru, key);

    if (e != NULL) {
        if (e != lru->head) {
            lru_unlink(lru, e);
            lru_push_head(lru, e);
        }
        return 0;
    }

    if (lru->capacity == 0) {
        return 0;
    }

    e = dango_mpool_get(&lru->pool);
    if (e == NULL) {
        return DANGO_ENOMEM;
    }

    e->key          = key;
    e->pins         = 0;
    e->node.key     = &e->key;
    e->node.key_len = sizeof(e->key);
    e->node.hash    = dango_hmap_hash(&e->key, sizeof(e->key));
    dango_hmap_insert(&lru->map, &e->node);
    lru_push_head(lru, e);
    /* Insert at MRU, then evict while over capacity; when everything else
     * is pinned the new key itself goes (it is not cached). */
    if (dango_hmap_count(&lru->map) > lru->capacity) {
        if (!lru_evict_one(lru, e)) {
            lru_drop(lru, e);
        }
    }
    return 0;
}

/* ---------- public API ---------- */

int dango_conductor_hash_tokens(const uint32_t *tokens, size_t n_tokens,
                                size_t block_size, uint64_t seed,
                                uint64_t *keys, size_t max_keys,
                                size_t *n_keys_p)
{
    size_t   n;
    uint32_t le[1024];
    uint64_t prev = 0;

    if ((n_keys_p == NULL) || ((tokens == NULL) && (n_tokens > 0)) ||
        (block_size == 0) || (block_size > (1u << 20))) {
        return DANGO_EINVAL;
    }

    n = n_tokens / block_size;
    if (n > max_keys) {
        return DANGO_ERANGE;
    }
    if ((n > 0) && (keys == NULL)) {
        return DANGO_EINVAL;
    }

    for (size_t b = 0; b < n; b++) {
        const uint32_t    *blk = tokens + b * block_size;
        dango_hash_state_t st;
        uint64_t           local, pair[2];

        /* Tokens as little-endian u32 (a plain copy on little-endian
         * hosts); a block of up to 1024 tokens is hashed in one call,
         * longer ones through the streaming state. */
        if (block_size <= DANGO_ARRAY_SIZE(le)) {
            for (size_t i = 0; i < block_size; i++) {
                le[i] = htole32(blk[i]);
            }
            local = dango_hash64_seed(le, block_size * sizeof(le[0]), seed);
        } else {
            if (dango_hash_init(&st, seed) != 0) {
                return DANGO_ENOMEM;
            }
            for (size_t off = 0; off < block_size;
                 off += DANGO_ARRAY_SIZE(le)) {
                size_t m = DANGO_MIN(block_size - off, DANGO_ARRAY_SIZE(le));

                for (size_t i = 0; i < m; i++) {
                    le[i] = htole32(blk[off + i]);
                }
                dango_hash_update(&st, le, m * sizeof(le[0]));
            }
            local = dango_hash_final(&st);
            dango_hash_cleanup(&st);
        }
        if (b == 0) {
            prev = local;
        } else {
            pair[0] = htole64(prev);
            pair[1] = htole64(local);
            prev    = dango_hash64_seed(pair, sizeof(pair), seed);
        }
        keys[b] = prev;
    }

    *n_keys_p = n;
    return 0;
}

int dango_conductor_lru_create(size_t capacity, dango_conductor_evict_cb cb,
                               void *arg, dango_conductor_lru_t **lru_p)
{
    dango_conductor_lru_t *lru;
    size_t                 hint;
    int                    rc;

    if (lru_p == NULL) {
        return DANGO_EINVAL;
    }

    lru = dango_calloc(1, sizeof(*lru), "conductor_lru");
    if (lru == NULL) {
        return DANGO_ENOMEM;
    }

    hint = (capacity == DANGO_CONDUCTOR_CAPACITY_INF)
               ? 0
               : DANGO_MIN(capacity, (size_t)1 << 20);
    rc   = dango_hmap_init(&lru->map, hint);
    if (rc != 0) {
        dango_free(lru);
        return rc;
    }

    dango_mpool_init(&lru->pool, sizeof(lru_entry_t), LRU_POOL_CHUNK, 0,
                     "conductor_lru_entry");
    lru->capacity = capacity;
    lru->cb       = cb;
    lru->arg      = arg;
    *lru_p        = lru;
    return 0;
}

void dango_conductor_lru_destroy(dango_conductor_lru_t *lru)
{
    if (lru == NULL) {
        return;
    }

    /* Entries live in the pool's chunks: cleaning the pool frees them. */
    dango_hmap_cleanup(&lru->map);
    dango_mpool_cleanup(&lru->pool);
    dango_free(lru);
}

size_t dango_conductor_lru_match(const dango_conductor_lru_t *lru,
                                 const uint64_t *keys, size_t n)
{
    size_t k = 0;

    if ((lru == NULL) || (keys == NULL)) {
        return 0;
    }

    while ((k < n) && (lru_find(lru, keys[k]) != NULL)) {
        k++;
    }
    return k;
}

int dango_conductor_lru_contains(const dango_conductor_lru_t *lru, uint64_t key)
{
    return (lru != NULL) && (lru_find(lru, key) != NULL);
}

int dango_conductor_lru_access(dango_conductor_lru_t *lru, const uint64_t *keys,
                               size_t n, unsigned flags)
{
    int rc;

    if ((lru == NULL) || ((keys == NULL) && (n > 0))) {
        return DANGO_EINVAL;
    }

    for (size_t i = 0; i < n; i++) {
        size_t j = (flags & DANGO_CONDUCTOR_LRU_REVERSE) ? n - 1 - i : i;

        rc = lru_access_one(lru, keys[j]);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

int dango_conductor_lru_remove(dango_conductor_lru_t *lru, uint64_t key)
{
    lru_entry_t *e = (lru == NULL) ? NULL : lru_find(lru, key);

    if (e == NULL) {
        return DANGO_ENOENT;
    }

    /* A removal is a fact reported by the holder: it wins over pins. */
    lru_drop(lru, e);
    return 0;
}

size_t dango_conductor_lru_pin(dango_conductor_lru_t *lru, const uint64_t *keys,
                               size_t n, int delta)
{
    size_t changed = 0;

    if ((lru == NULL) || (keys == NULL)) {
        return 0;
    }

    for (size_t i = 0; i < n; i++) {
        lru_entry_t *e = lru_find(lru, keys[i]);

        if (e == NULL) {
            continue;
        }
        if (delta > 0) {
            e->pins++;
            changed++;
        } else if (e->pins > 0) {
            e->pins--;
            changed++;
        }
    }
    return changed;
}

void dango_conductor_lru_clear(dango_conductor_lru_t *lru, int notify)
{
    if (lru == NULL) {
        return;
    }

    while (lru->tail != NULL) {
        lru_entry_t *e   = lru->tail;
        uint64_t     key = e->key;

        lru_drop(lru, e);
        if (notify && (lru->cb != NULL)) {
            lru->cb(lru->arg, key);
        }
    }
}

size_t dango_conductor_lru_count(const dango_conductor_lru_t *lru)
{
    return (lru == NULL) ? 0 : dango_hmap_count(&lru->map);
}

size_t dango_conductor_lru_capacity(const dango_conductor_lru_t *lru)
{
    return (lru == NULL) ? 0 : lru->capacity;
}

uint64_t dango_conductor_lru_evictions(const dango_conductor_lru_t *lru)
{
    return (lru == NULL) ? 0 : lru->evictions;
}
