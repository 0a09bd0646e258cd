/*
 * Intrusive chained hash map with incremental resizing (hmap.h).
 *
 * DESIGN
 * - Two bucket arrays, as in Redis dict: tab[0] is the table; while a
 *   resize runs, tab[1] is the new one and buckets of tab[0] below `rehash`
 *   have been moved into it. New entries always go to tab[1] during a
 *   resize, so tab[0] only drains. Whole buckets move at once, so bucket i
 *   of tab[0] is empty once i < rehash; a lookup or a remove looks in
 *   tab[0] only when the node's bucket there has not moved yet, and then
 *   in tab[1].
 * - Each insert or remove moves one bucket (and visits at most
 *   HMAP_EMPTY_VISITS empty ones), so a resize of N buckets finishes within
 *   N operations and no call does more than a constant amount of extra
 *   work. An idle owner can finish a resize early with rehash_step().
 * - Growth doubles at load 1; shrinking halves (or more) when the load
 *   falls under 1/8, never below the initial size. A failed allocation
 *   just postpones the resize: correctness never depends on the load.
 * - Iteration pins the arrays (no resize starts and no bucket moves), so an
 *   iterator sees every node exactly once; removing the node just returned
 *   is safe because the iterator already holds its successor.
 */
#include "common/hmap.h"

#include <string.h>

#include <dango/error.h>

#include "common/alloc.h"
#include "common/hash.h"

#define HMAP_MIN_BUCKETS  16
#define HMAP_EMPTY_VISITS 16 /* empty buckets skipped per moved bucket */

/* ---------- private functions ---------- */

static size_t pow2_at_least(size_t n)
{
    size_t p = HMAP_MIN_BUCKETS;

    while (p < n) {
        p <<= 1;
    }

    return p;
}

static int key_eq(const dango_hmap_node_t *n, const void *key, size_t len,
                  uint64_t hash)
{
    return (n->hash == hash) && (n->key_len == len) &&
           (memcmp(n->key, key, len) == 0);
}

/* Starts moving everything into an array of @size buckets. */
static void resize_start(dango_hmap_t *m, size_t size)
{
    dango_hmap_node_t **tab;

    tab = dango_calloc(size, sizeof(*tab), "hmap_buckets");
    if (tab == NULL) {
        /* Try again once the map has grown by half as much again. */
        m->grow_at = m->count + m->count / 2 + 1;
        return;
    }

    m->tab[1]  = tab;
    m->mask[1] = size - 1;
    m->rehash  = 0;
}

static void resize_finish(dango_hmap_t *m)
{
    dango_free(m->tab[0]);
    m->tab[0]  = m->tab[1];
    m->mask[0] = m->mask[1];
    m->tab[1]  = NULL;
    m->mask[1] = 0;
    m->rehash  = 0;
    m->grow_at = m->mask[0] + 1;
}

/* Moves up to @n non-empty buckets; returns 1 while a resize remains. */
static int rehash_buckets(dango_hmap_t *m, size_t n)
{
    size_t empty_left = n * HMAP_EMPTY_VISITS;

    if ((m->tab[1] == NULL) || (m->iterating > 0)) {
        return m->tab[1] != NULL;
    }

    while ((n > 0) && (m->rehash <= m->mask[0])) {
        dango_hmap_node_t *node = m->tab[0][m->rehash];

        if (node == NULL) {
            m->rehash++;
            if (--empty_left == 0) {
                break;
            }
            continue;
        }

        while (node != NULL) {
            dango_hmap_node_t *next = node->next;
            size_t             idx  = node->hash & m->mask[1];

            node->next     = m->tab[1][idx];
            m->tab[1][idx] = node;
            node           = next;
        }

        m->tab[0][m->rehash++] = NULL;
        n--;
    }

    if (m->rehash > m->mask[0]) {
        resize_finish(m);
        return 0;
    }

    return 1;
}

/* Starts shrinking when the load fell under 1/8 (never below min_size). */
static void maybe_shrink(dango_hmap_t *m)
{
    size_t size = m->mask[0] + 1;

    if ((m->tab[1] == NULL) && (m->iterating == 0) && (size > m->min_size) &&
        (m->count < size / 8)) {
        size_t want = pow2_at_least(m->count * 2);

        resize_start(m, (want < m->min_size) ? m->min_size : want);
    }
}

/*
 * The link that points at @node. A node whose bucket of tab[0] was already
 * moved is in tab[1]; one whose bucket was not may still be in tab[1] if it
 * was inserted during the resize.
 */
static dango_hmap_node_t **link_of(const dango_hmap_t      *m,
                                   const dango_hmap_node_t *node)
{
    size_t              idx0 = node->hash & m->mask[0];
    dango_hmap_node_t **pp;

    if ((m->tab[1] == NULL) || (idx0 >= m->rehash)) {
        for (pp = &m->tab[0][idx0]; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == node) {
                return pp;
            }
        }
    }

    for (pp = &m->tab[1][node->hash & m->mask[1]]; *pp != node;
         pp = &(*pp)->next) {
    }
    return pp;
}

/* ---------- public API ---------- */

int dango_hmap_init(dango_hmap_t *m, size_t hint)
{
    size_t size = pow2_at_least(hint);

    memset(m, 0, sizeof(*m));
    m->tab[0] = dango_calloc(size, sizeof(*m->tab[0]), "hmap_buckets");
    if (m->tab[0] == NULL) {
        return DANGO_ENOMEM;
    }

    m->mask[0]  = size - 1;
    m->grow_at  = size;
    m->min_size = size;
    return 0;
}

void dango_hmap_cleanup(dango_hmap_t *m)
{
    dango_free(m->tab[0]);
    dango_free(m->tab[1]);
    memset(m, 0, sizeof(*m));
}

uint64_t dango_hmap_hash(const void *key, size_t len)
{
    return dango_hash64(key, len);
}

dango_hmap_node_t *dango_hmap_find(const dango_hmap_t *m, const void *key,
                                   size_t len, uint64_t hash)
{
    size_t             idx0 = hash & m->mask[0];
    dango_hmap_node_t *n;

    if ((m->tab[1] == NULL) || (idx0 >= m->rehash)) {
        for (n = m->tab[0][idx0]; n != NULL; n = n->next) {
            if (key_eq(n, key, len, hash)) {
                return n;
            }
        }
    }

    if (m->tab[1] != NULL) {
        for (n = m->tab[1][hash & m->mask[1]]; n != NULL; n = n->next) {
            if (key_eq(n, key, len, hash)) {
                return n;
            }
        }
    }

    return NULL;
}

void dango_hmap_insert(dango_hmap_t *m, dango_hmap_node_t *node)
{
    dango_hmap_node_t **head;

    if (m->tab[1] != NULL) {
        rehash_buckets(m, 1);
    }

    /* During a resize every new node goes to the new array. */
    head       = (m->tab[1] != NULL) ? &m->tab[1][node->hash & m->mask[1]]
                                     : &m->tab[0][node->hash & m->mask[0]];
    node->next = *head;
    *head      = node;
    m->count++;

    if ((m->tab[1] == NULL) && (m->iterating == 0) &&
        (m->count >= m->grow_at)) {
        resize_start(m, (m->mask[0] + 1) * 2);
    }
}

void dango_hmap_remove(dango_hmap_t *m, dango_hmap_node_t *node)
{
    dango_hmap_node_t **pp = link_of(m, node);

    *pp        = node->next;
    node->next = NULL;
    m->count--;

    if (m->tab[1] != NULL) {
        rehash_buckets(m, 1);
    } else {
        maybe_shrink(m);
    }
}

int dango_hmap_rehash_step(dango_hmap_t *m, size_t n)
{
    if (!rehash_buckets(m, n)) {
        maybe_shrink(m);
    }
    return m->tab[1] != NULL;
}

void dango_hmap_iter_begin(dango_hmap_t *m, dango_hmap_iter_t *it)
{
    m->iterating++;
    it->map    = m;
    it->table  = 0;
    it->bucket = 0;
    it->next   = NULL;
}

dango_hmap_node_t *dango_hmap_iter_next(dango_hmap_iter_t *it)
{
    dango_hmap_t      *m = it->map;
    dango_hmap_node_t *n = it->next;

    if (n != NULL) {
        it->next = n->next;
        return n;
    }

    for (; (it->table < 2) && (m->tab[it->table] != NULL); it->table++) {
        while (it->bucket <= m->mask[it->table]) {
            n = m->tab[it->table][it->bucket++];
            if (n != NULL) {
                it->next = n->next;
                return n;
            }
        }

        it->bucket = 0;
    }

    return NULL;
}

void dango_hmap_iter_end(dango_hmap_iter_t *it)
{
    it->map->iterating--;
}
