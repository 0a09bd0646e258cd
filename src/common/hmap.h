/*
 * An intrusive hash map keyed by byte strings (the shape of Redis dict).
 *
 * The caller embeds a dango_hmap_node_t in its own object, points the node
 * at the key bytes (which the object keeps alive as long as the node is in
 * the map) and fills in the hash once with dango_hmap_hash(); the map never
 * allocates per entry and never copies keys. Keys are any bytes, embedded
 * NUL included; two keys are equal when their lengths and bytes are.
 *
 * Buckets are chained, the load factor stays between 1/8 and 1, and the
 * table grows (and shrinks) incrementally: a resize allocates the new
 * bucket array and then moves a few buckets per insert or remove, or per
 * dango_hmap_rehash_step() that an idle timer may call, so no single call
 * pays for rehashing millions of entries. Lookups during a resize look in
 * both arrays.
 *
 * Iteration: between dango_hmap_iter_begin() and dango_hmap_iter_end() the
 * map does not rehash, and the only change allowed is removing the node the
 * iterator returned last (insertions would be missed or seen twice).
 *
 * Thread safety: none; one thread at a time.
 */
#ifndef DANGO_COMMON_HMAP_H
#define DANGO_COMMON_HMAP_H

#include <stddef.h>
#include <stdint.h>
#include <dango/common.h>

/** Links an object into a map. */
typedef struct dango_hmap_node {
    struct dango_hmap_node *next;    /* bucket chain, owned by the map */
    uint64_t                hash;    /* dango_hmap_hash(key, key_len) */
    const void             *key;     /* key bytes, owned by the caller */
    size_t                  key_len; /* bytes at key */
} dango_hmap_node_t;

typedef struct dango_hmap {
    dango_hmap_node_t **tab[2];   /* [1] is non-NULL only while resizing */
    size_t              mask[2];  /* bucket count - 1 (a power of two) */
    size_t              count;    /* entries in both arrays */
    size_t              rehash;   /* next bucket of tab[0] to move */
    size_t              grow_at;  /* count that starts the next growth */
    size_t              min_size; /* never shrink below this many buckets */
    unsigned            iterating;
} dango_hmap_t;

typedef struct dango_hmap_iter {
    dango_hmap_t      *map;
    int                table;
    size_t             bucket;
    dango_hmap_node_t *next;
} dango_hmap_iter_t;

DANGO_BEGIN_DECLS

/*
 * Initialises @m for about @hint entries (0 = a small default).
 * Returns 0 or DANGO_ENOMEM.
 */
DANGO_API int dango_hmap_init(dango_hmap_t *m, size_t hint);

/* Frees the bucket arrays; the nodes still linked are the caller's. */
DANGO_API void dango_hmap_cleanup(dango_hmap_t *m);

/* The hash every node's `hash` must hold (64-bit xxh3 of the key). */
DANGO_API uint64_t dango_hmap_hash(const void *key, size_t len);

static inline size_t dango_hmap_count(const dango_hmap_t *m)
{
    return m->count;
}

/* The node whose key is @key (@len bytes, hash @hash), or NULL. */
DANGO_API dango_hmap_node_t *dango_hmap_find(const dango_hmap_t *m,
                                             const void *key, size_t len,
                                             uint64_t hash);

/*
 * Links @node (key, key_len and hash filled in). The key must not be in the
 * map already (find it first). Never fails: when a larger bucket array
 * cannot be allocated the chains just get longer until a later try works.
 */
DANGO_API void dango_hmap_insert(dango_hmap_t *m, dango_hmap_node_t *node);

/* Unlinks @node, which must be in @m. */
DANGO_API void dango_hmap_remove(dango_hmap_t *m, dango_hmap_node_t *node);

/* Moves up to @n buckets of a resize in progress. Returns 1 while one is. */
DANGO_API int dango_hmap_rehash_step(dango_hmap_t *m, size_t n);

DANGO_API void dango_hmap_iter_begin(dango_hmap_t *m, dango_hmap_iter_t *it);
/* The next node, or NULL at the end. */
DANGO_API dango_hmap_node_t *dango_hmap_iter_next(dango_hmap_iter_t *it);
DANGO_API void               dango_hmap_iter_end(dango_hmap_iter_t *it);

DANGO_END_DECLS

#endif
