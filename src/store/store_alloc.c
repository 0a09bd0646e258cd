/*
 * DESIGN: the per-segment offset allocator (store.md §3.7), after Sebastian
 * Aaltonen's OffsetAllocator.
 *
 * Units. Internally every offset and size is a count of granules (the
 * min_align of create, or a power-of-two multiple of it for huge segments),
 * held in 64 bits. Bytes appear only at the API boundary (shift by
 * granule_shift). The 256 size classes below reach 15 * 2^30 granules, so a
 * segment of more granules than that gets a larger granule: the spec's
 * "multiplier bits", generalised from its 32-bit sizes to 64-bit ones, which
 * only happens above 960 GiB at 64 B alignment.
 *
 * Ranges. The segment is tiled by nodes, each a used or a free range, linked
 * in offset order (nb_prev/nb_next). Two free ranges never touch: free()
 * merges a range with both neighbours, so free ranges are maximal and
 * free_ranges counts holes exactly. Nodes live in one array addressed by
 * 32-bit index (indices survive the array's growth, pointers do not); unused
 * nodes form a LIFO list through bin_next. The node at index 0 is created
 * first at offset 0 and always survives merges (a merge keeps the lower
 * node), so it is a valid place to start a walk.
 *
 * Size classes. A size maps to a "small float": 5 exponent bits and a 3-bit
 * mantissa, so bin b covers [bin_size(b), bin_size(b + 1)) and adjacent bin
 * sizes differ by at most 1/8. bin_heads[] holds a doubly-linked list of
 * free nodes per bin; leaf_bitmaps[top] marks the non-empty bins of the 8
 * under one exponent and top_bitmap the non-empty exponents. A free range is
 * filed under the bin of its size rounded down; a request looks from the bin
 * of its size rounded up, where every range is at least as large as the
 * request, and the two bitmaps give the lowest non-empty such bin with two
 * ctz. No scan over objects or ranges is ever needed.
 *
 * Fragmentation. alloc() takes exactly the request rounded up to the granule
 * from the front of the range it found and files the tail as a new free
 * range, so internal fragmentation is under one granule per object (never
 * the up-to-12.5 % of rounding to bin sizes). What rounding up the bin costs
 * is external: ranges in the bin just below the request's that are in fact
 * large enough (sizes in [request, bin_size(round_up))) are invisible to the
 * bitmap search. Before answering ENOSPC alloc() probes at most
 * ALLOC_PROBE_MAX ranges of that one bin, which catches the common case of
 * one last range of exactly the requested size; beyond that a request may
 * fail while a range of less than 9/8 of it is free.
 *
 * Free checks. A hash from the start offset of each used range to its node
 * (open addressing, linear probing, backward-shift deletion, load <= 1/2
 * because it has twice as many slots as there are nodes) lets free() refuse
 * double frees, interior and wild offsets in O(1) without touching state.
 *
 * Memory. Node storage and the hash grow together by doubling before
 * anything is modified, so a failed growth leaves the allocator exactly as
 * it was and returns DANGO_ENOMEM. alloc() needs at most one new node,
 * reserve() two and free() none (free never allocates).
 *
 * Reserve. reserve() needs the range that contains an arbitrary offset, and
 * no offset index is kept (it would cost alloc and free their O(1)). A
 * directory of at most DIR_SLOTS hints, one per equal slice of the segment,
 * remembers the lowest range reserved in each slice; a walk along the
 * neighbour links starts from the nearest valid hint at or below the offset.
 * Hints are validated when read (a node may have been merged away since),
 * so a stale hint costs time, never correctness. Replaying a report sorted
 * by offset is O(1) per range.
 */
#define DANGO_LOG_COMPONENT store_alloc_log

#include <string.h>

#include <dango/error.h>
#include <dango/log.h>
#include "common/alloc.h"
#include "store/store_alloc.h"

static DANGO_LOG_COMPONENT_DEFINE(store_alloc_log, "store");

#define BIN_MANTISSA_BITS  3
#define BIN_MANTISSA_VALUE (1u << BIN_MANTISSA_BITS)
#define BIN_MANTISSA_MASK  (BIN_MANTISSA_VALUE - 1)
#define BIN_NUM_TOP        32
#define BIN_NUM_LEAF       (BIN_NUM_TOP * BIN_MANTISSA_VALUE)

/* bin_size(BIN_NUM_LEAF - 1): the largest range any bin can describe. */
#define ALLOC_MAX_UNITS ((uint64_t)15 << 30)

#define NODE_NIL UINT32_MAX
/* Keeps 2 * node count (the hash size) within 32 bits. */
#define NODE_MAX         ((uint32_t)1 << 30)
#define NODE_MIN_INITIAL 1024u
#define NODE_MAX_INITIAL 65536u

#define ALLOC_PROBE_MAX 16
#define DIR_SLOTS       4096u

typedef enum store_alloc_state {
    NODE_UNUSED = 0,
    NODE_FREE,
    NODE_USED
} store_alloc_state_t;

typedef struct store_alloc_node {
    uint64_t offset;   /* granules */
    uint64_t size;     /* granules; > 0 for every live node */
    uint32_t bin_prev; /* FREE: bin list */
    uint32_t bin_next; /* FREE: bin list; UNUSED: unused-node list */
    uint32_t nb_prev;  /* live: range just below, NODE_NIL at offset 0 */
    uint32_t nb_next;  /* live: range just above, NODE_NIL at the end */
    uint32_t state;    /* store_alloc_state_t */
} store_alloc_node_t;

struct dango_store_alloc {
    uint64_t            capacity; /* granules */
    unsigned            granule_shift;
    uint64_t            allocated; /* granules in used ranges */
    uint64_t            allocated_count;
    uint64_t            free_ranges;
    store_alloc_node_t *nodes;
    uint32_t            node_capacity; /* entries in nodes[] */
    uint32_t            node_live;     /* FREE + USED nodes */
    uint32_t            node_max;      /* never more live ranges than this */
    uint32_t            unused_head;
    uint32_t           *hash; /* node index of used ranges, or NODE_NIL */
    unsigned            hash_bits;
    uint32_t            top_bitmap;
    uint8_t             leaf_bitmaps[BIN_NUM_TOP];
    uint32_t            bin_heads[BIN_NUM_LEAF];
    uint32_t           *dir; /* reserve hints, see the DESIGN block */
    uint32_t            dir_len;
    unsigned            dir_shift;
};

/* ---------- size classes ---------- */

/* Bin whose size is the largest one <= @size (where a free range goes). */
static uint32_t bin_round_down(uint64_t size)
{
    unsigned start;

    if (size < BIN_MANTISSA_VALUE) {
        return (uint32_t)size;
    }

    start = 63 - (unsigned)__builtin_clzll(size) - BIN_MANTISSA_BITS;
    return ((start + 1) << BIN_MANTISSA_BITS) |
           (uint32_t)((size >> start) & BIN_MANTISSA_MASK);
}

/*
 * Bin whose size is the smallest one >= @size (where a request looks). The
 * mantissa may carry into the exponent, which is the next bin as wanted.
 */
static uint32_t bin_round_up(uint64_t size)
{
    unsigned start;
    uint32_t bin;

    if (size < BIN_MANTISSA_VALUE) {
        return (uint32_t)size;
    }

    start = 63 - (unsigned)__builtin_clzll(size) - BIN_MANTISSA_BITS;
    bin   = ((start + 1) << BIN_MANTISSA_BITS) +
          (uint32_t)((size >> start) & BIN_MANTISSA_MASK);
    if ((size & (((uint64_t)1 << start) - 1)) != 0) {
        bin++;
    }

    return bin;
}

static uint64_t bin_size(uint32_t bin)
{
    uint32_t exp      = bin >> BIN_MANTISSA_BITS;
    uint64_t mantissa = bin & BIN_MANTISSA_MASK;

    if (exp == 0) {
        return mantissa;
    }

    return (mantissa | BIN_MANTISSA_VALUE) << (exp - 1);
}

/* Lowest non-empty bin >= @min_bin, or NODE_NIL. */
static uint32_t bin_find(const dango_store_alloc_t *a, uint32_t min_bin)
{
    uint32_t top  = min_bin >> BIN_MANTISSA_BITS;
    uint32_t leaf = min_bin & BIN_MANTISSA_MASK;
    uint32_t mask;

    if (min_bin >= BIN_NUM_LEAF) {
        return NODE_NIL;
    }

    mask = a->leaf_bitmaps[top] & (0xffu << leaf);
    if (mask != 0) {
        return (top << BIN_MANTISSA_BITS) | (uint32_t)__builtin_ctz(mask);
    }

    if (top == BIN_NUM_TOP - 1) {
        return NODE_NIL;
    }

    mask = a->top_bitmap & (UINT32_MAX << (top + 1));
    if (mask == 0) {
        return NODE_NIL;
    }

    top = (uint32_t)__builtin_ctz(mask);
    return (top << BIN_MANTISSA_BITS) |
           (uint32_t)__builtin_ctz(a->leaf_bitmaps[top]);
}

/* Files free node @idx under the bin of its size. */
static void bin_insert(dango_store_alloc_t *a, uint32_t idx)
{
    store_alloc_node_t *n    = &a->nodes[idx];
    uint32_t            bin  = bin_round_down(n->size);
    uint32_t            head = a->bin_heads[bin];

    n->state    = NODE_FREE;
    n->bin_prev = NODE_NIL;
    n->bin_next = head;
    if (head != NODE_NIL) {
        a->nodes[head].bin_prev = idx;
    }

    a->bin_heads[bin] = idx;
    a->leaf_bitmaps[bin >> BIN_MANTISSA_BITS] |= 1u << (bin & 7);
    a->top_bitmap |= 1u << (bin >> BIN_MANTISSA_BITS);
    a->free_ranges++;
}

/* Takes free node @idx out of its bin (its state is left to the caller). */
static void bin_remove(dango_store_alloc_t *a, uint32_t idx)
{
    store_alloc_node_t *n   = &a->nodes[idx];
    uint32_t            bin = bin_round_down(n->size);
    uint32_t            top = bin >> BIN_MANTISSA_BITS;

    if (n->bin_prev != NODE_NIL) {
        a->nodes[n->bin_prev].bin_next = n->bin_next;
    } else {
        a->bin_heads[bin] = n->bin_next;
    }

    if (n->bin_next != NODE_NIL) {
        a->nodes[n->bin_next].bin_prev = n->bin_prev;
    }

    if (a->bin_heads[bin] == NODE_NIL) {
        a->leaf_bitmaps[top] &= (uint8_t) ~(1u << (bin & 7));
        if (a->leaf_bitmaps[top] == 0) {
            a->top_bitmap &= ~(1u << top);
        }
    }

    a->free_ranges--;
}

/* ---------- offset hash of used ranges ---------- */

static uint64_t hash_home(const dango_store_alloc_t *a, uint64_t offset)
{
    /* Fibonacci hashing: allocation offsets share low zero bits. */
    return (offset * UINT64_C(0x9e3779b97f4a7c15)) >> (64 - a->hash_bits);
}

static uint32_t hash_find(const dango_store_alloc_t *a, uint64_t offset)
{
    uint64_t mask = ((uint64_t)1 << a->hash_bits) - 1;
    uint64_t i    = hash_home(a, offset);

    while (a->hash[i] != NODE_NIL) {
        if (a->nodes[a->hash[i]].offset == offset) {
            return a->hash[i];
        }

        i = (i + 1) & mask;
    }

    return NODE_NIL;
}

/* Never fails: the table has twice as many slots as there are nodes. */
static void hash_insert(uint32_t *table, unsigned bits, uint64_t offset,
                        uint32_t idx)
{
    uint64_t mask = ((uint64_t)1 << bits) - 1;
    uint64_t i    = (offset * UINT64_C(0x9e3779b97f4a7c15)) >> (64 - bits);

    while (table[i] != NODE_NIL) {
        i = (i + 1) & mask;
    }

    table[i] = idx;
}

/* Removes @idx (which must be present), shifting later entries back. */
static void hash_remove(dango_store_alloc_t *a, uint32_t idx)
{
    uint64_t mask = ((uint64_t)1 << a->hash_bits) - 1;
    uint64_t i    = hash_home(a, a->nodes[idx].offset);
    uint64_t j, home;

    while (a->hash[i] != idx) {
        i = (i + 1) & mask;
    }

    for (j = (i + 1) & mask; a->hash[j] != NODE_NIL; j = (j + 1) & mask) {
        home = hash_home(a, a->nodes[a->hash[j]].offset);
        /* The entry at j may move to the hole at i unless its home lies
         * cyclically in (i, j]. */
        if (((i < j) && ((home <= i) || (home > j))) ||
            ((i > j) && (home <= i) && (home > j))) {
            a->hash[i] = a->hash[j];
            i          = j;
        }
    }

    a->hash[i] = NODE_NIL;
}

/* ---------- node storage ---------- */

static unsigned hash_bits_for(uint32_t node_capacity)
{
    unsigned bits = 1;

    while (((uint64_t)1 << bits) < (uint64_t)node_capacity * 2) {
        bits++;
    }

    return bits;
}

/* Puts nodes [from, to) on the unused list, lowest index first out. */
static void nodes_thread_unused(dango_store_alloc_t *a, uint32_t from,
                                uint32_t to)
{
    for (uint32_t i = to; i > from; i--) {
        a->nodes[i - 1].state    = NODE_UNUSED;
        a->nodes[i - 1].bin_next = a->unused_head;
        a->unused_head           = i - 1;
    }
}

/*
 * Makes sure @need nodes can be taken without allocating. Grows node storage
 * and the hash together; on failure nothing has changed.
 */
static int nodes_reserve(dango_store_alloc_t *a, uint32_t need)
{
    uint32_t            old_cap = a->node_capacity;
    uint64_t            want    = (uint64_t)a->node_live + need;
    uint64_t            new_cap;
    unsigned            new_bits;
    uint32_t           *new_hash;
    store_alloc_node_t *new_nodes;

    if (want <= old_cap) {
        return 0;
    }

    new_cap = DANGO_MIN(DANGO_MAX((uint64_t)old_cap * 2, want),
                        (uint64_t)a->node_max);
    if (new_cap < want) {
        /* Only past 2^30 ranges: a segment can never need more nodes than
         * it has granules, and node_max is that or NODE_MAX. */
        dango_error("store_alloc %p: node limit %u reached", (void *)a,
                    a->node_max);
        return DANGO_ENOMEM;
    }

    new_bits = hash_bits_for((uint32_t)new_cap);
    new_hash = dango_malloc(sizeof(*new_hash) << new_bits, "store_alloc_hash");
    if (new_hash == NULL) {
        goto err_nomem;
    }

    new_nodes = dango_realloc(a->nodes, sizeof(*new_nodes) * new_cap,
                              "store_alloc_nodes");
    if (new_nodes == NULL) {
        goto err_free_hash;
    }

    a->nodes         = new_nodes;
    a->node_capacity = (uint32_t)new_cap;
    nodes_thread_unused(a, old_cap, (uint32_t)new_cap);

    memset(new_hash, 0xff, sizeof(*new_hash) << new_bits);
    for (uint64_t i = 0; i < ((uint64_t)1 << a->hash_bits); i++) {
        if (a->hash[i] != NODE_NIL) {
            hash_insert(new_hash, new_bits, a->nodes[a->hash[i]].offset,
                        a->hash[i]);
        }
    }

    dango_free(a->hash);
    a->hash      = new_hash;
    a->hash_bits = new_bits;
    dango_debug("store_alloc %p: node storage grown to %u nodes", (void *)a,
                a->node_capacity);
    return 0;

err_free_hash:
    dango_free(new_hash);
err_nomem:
    dango_error("store_alloc %p: cannot grow node storage to %llu nodes",
                (void *)a, (unsigned long long)new_cap);
    return DANGO_ENOMEM;
}

/* Takes an unused node; nodes_reserve() must have made one available. */
static uint32_t node_get(dango_store_alloc_t *a)
{
    uint32_t idx = a->unused_head;

    a->unused_head = a->nodes[idx].bin_next;
    a->node_live++;
    return idx;
}

static void node_put(dango_store_alloc_t *a, uint32_t idx)
{
    a->nodes[idx].state    = NODE_UNUSED;
    a->nodes[idx].bin_next = a->unused_head;
    a->unused_head         = idx;
    a->node_live--;
}

/* Links live node @idx into the neighbour list right after @pos. */
static void node_link_after(dango_store_alloc_t *a, uint32_t pos, uint32_t idx)
{
    uint32_t next = a->nodes[pos].nb_next;

    a->nodes[idx].nb_prev = pos;
    a->nodes[idx].nb_next = next;
    if (next != NODE_NIL) {
        a->nodes[next].nb_prev = idx;
    }

    a->nodes[pos].nb_next = idx;
}

static void node_unlink(dango_store_alloc_t *a, uint32_t idx)
{
    store_alloc_node_t *n = &a->nodes[idx];

    if (n->nb_prev != NODE_NIL) {
        a->nodes[n->nb_prev].nb_next = n->nb_next;
    }

    if (n->nb_next != NODE_NIL) {
        a->nodes[n->nb_next].nb_prev = n->nb_prev;
    }
}

/* Turns node @idx into a live allocation. */
static void node_mark_used(dango_store_alloc_t *a, uint32_t idx)
{
    a->nodes[idx].state = NODE_USED;
    hash_insert(a->hash, a->hash_bits, a->nodes[idx].offset, idx);
    a->allocated += a->nodes[idx].size;
    a->allocated_count++;
}

/* ---------- reserve hints ---------- */

static int hint_usable(const dango_store_alloc_t *a, uint32_t idx,
                       uint64_t offset)
{
    return (idx < a->node_capacity) && (a->nodes[idx].state != NODE_UNUSED) &&
           (a->nodes[idx].offset <= offset);
}

/* A live node at or below @offset, as close to it as the hints allow. */
static uint32_t hint_find(const dango_store_alloc_t *a, uint64_t offset)
{
    for (uint32_t slot = (uint32_t)(offset >> a->dir_shift) + 1; slot > 0;
         slot--) {
        if (hint_usable(a, a->dir[slot - 1], offset)) {
            return a->dir[slot - 1];
        }
    }

    return 0; /* the node at offset 0 is always live */
}

static void hint_update(dango_store_alloc_t *a, uint32_t idx)
{
    uint64_t offset = a->nodes[idx].offset;
    uint32_t slot   = (uint32_t)(offset >> a->dir_shift);
    uint32_t cur    = a->dir[slot];

    /* Keep the lowest live range of the slot: walks go upwards from it. */
    if (!hint_usable(a, cur, offset) ||
        (a->nodes[cur].offset < ((uint64_t)slot << a->dir_shift))) {
        a->dir[slot] = idx;
    }
}

/* ---------- public functions ---------- */

int dango__store_alloc_create(uint64_t size, uint64_t min_align,
                              dango_store_alloc_t **a_p)
{
    dango_store_alloc_t *a;
    unsigned             shift;
    uint64_t             units, initial;
    uint32_t             root;

    if ((a_p == NULL) || (size == 0) || (min_align < 64) ||
        ((min_align & (min_align - 1)) != 0)) {
        dango_debug("store_alloc: invalid size %llu or min_align %llu",
                    (unsigned long long)size, (unsigned long long)min_align);
        return DANGO_EINVAL;
    }

    shift = (unsigned)__builtin_ctzll(min_align);
    units = size >> shift;
    while (units > ALLOC_MAX_UNITS) {
        shift++;
        units = size >> shift;
    }

    if (units == 0) {
        dango_debug("store_alloc: size %llu is below min_align %llu",
                    (unsigned long long)size, (unsigned long long)min_align);
        return DANGO_EINVAL;
    }

    a = dango_calloc(1, sizeof(*a), "store_alloc");
    if (a == NULL) {
        goto err_nomem;
    }

    a->capacity      = units;
    a->granule_shift = shift;
    a->node_max      = (uint32_t)DANGO_MIN(units, (uint64_t)NODE_MAX);
    initial = DANGO_MIN(DANGO_MAX(units / 4096, (uint64_t)NODE_MIN_INITIAL),
                        NODE_MAX_INITIAL);
    a->node_capacity = (uint32_t)DANGO_MIN(initial, (uint64_t)a->node_max);
    a->nodes =
        dango_malloc(sizeof(*a->nodes) * a->node_capacity, "store_alloc_nodes");
    if (a->nodes == NULL) {
        goto err_free_alloc;
    }

    a->hash_bits = hash_bits_for(a->node_capacity);
    a->hash =
        dango_malloc(sizeof(*a->hash) << a->hash_bits, "store_alloc_hash");
    if (a->hash == NULL) {
        goto err_free_nodes;
    }

    a->dir_shift = 0;
    while (((units - 1) >> a->dir_shift) >= DIR_SLOTS) {
        a->dir_shift++;
    }

    a->dir_len = (uint32_t)((units - 1) >> a->dir_shift) + 1;
    a->dir     = dango_malloc(sizeof(*a->dir) * a->dir_len, "store_alloc_dir");
    if (a->dir == NULL) {
        goto err_free_hash;
    }

    memset(a->hash, 0xff, sizeof(*a->hash) << a->hash_bits);
    memset(a->dir, 0xff, sizeof(*a->dir) * a->dir_len);
    memset(a->bin_heads, 0xff, sizeof(a->bin_heads));
    a->unused_head = NODE_NIL;
    nodes_thread_unused(a, 0, a->node_capacity);

    root                   = node_get(a);
    a->nodes[root].offset  = 0;
    a->nodes[root].size    = units;
    a->nodes[root].nb_prev = NODE_NIL;
    a->nodes[root].nb_next = NODE_NIL;
    bin_insert(a, root);

    dango_debug("store_alloc %p: %llu granules of %llu bytes, %u nodes",
                (void *)a, (unsigned long long)units,
                (unsigned long long)1 << shift, a->node_capacity);
    *a_p = a;
    return 0;

err_free_hash:
    dango_free(a->hash);
err_free_nodes:
    dango_free(a->nodes);
err_free_alloc:
    dango_free(a);
err_nomem:
    dango_error("store_alloc: out of memory creating an allocator of %llu "
                "bytes",
                (unsigned long long)size);
    return DANGO_ENOMEM;
}

void dango__store_alloc_destroy(dango_store_alloc_t *a)
{
    if (a == NULL) {
        return;
    }

    dango_free(a->dir);
    dango_free(a->hash);
    dango_free(a->nodes);
    dango_free(a);
}

int dango__store_alloc_alloc(dango_store_alloc_t *a, uint64_t size,
                             uint64_t *offset_p, uint64_t *alloc_size_p)
{
    uint64_t            gmask, units;
    uint32_t            bin, idx, rest;
    store_alloc_node_t *n;
    int                 rc;

    if ((a == NULL) || (offset_p == NULL) || (size == 0) ||
        (size > (a->capacity << a->granule_shift))) {
        dango_debug("store_alloc %p: invalid allocation size %llu", (void *)a,
                    (unsigned long long)size);
        return DANGO_EINVAL;
    }

    gmask = ((uint64_t)1 << a->granule_shift) - 1;
    units = (size >> a->granule_shift) + ((size & gmask) != 0);

    bin = bin_find(a, bin_round_up(units));
    if (bin != NODE_NIL) {
        idx = a->bin_heads[bin];
    } else {
        /* Bounded probe of the bin below, see the DESIGN block. */
        idx = a->bin_heads[bin_round_down(units)];
        for (int i = 1; (idx != NODE_NIL) && (a->nodes[idx].size < units);
             i++) {
            idx = (i < ALLOC_PROBE_MAX) ? a->nodes[idx].bin_next : NODE_NIL;
        }

        if (idx == NODE_NIL) {
            dango_trace("store_alloc %p: no free range for %llu bytes",
                        (void *)a, (unsigned long long)size);
            return DANGO_ENOSPC;
        }
    }

    if (a->nodes[idx].size > units) {
        rc = nodes_reserve(a, 1);
        if (rc != 0) {
            return rc;
        }
    }

    /* No allocation from here on: node pointers stay valid. */
    n = &a->nodes[idx];
    bin_remove(a, idx);
    if (n->size > units) {
        rest                  = node_get(a);
        a->nodes[rest].offset = n->offset + units;
        a->nodes[rest].size   = n->size - units;
        n->size               = units;
        node_link_after(a, idx, rest);
        bin_insert(a, rest);
    }

    node_mark_used(a, idx);
    *offset_p = n->offset << a->granule_shift;
    if (alloc_size_p != NULL) {
        *alloc_size_p = units << a->granule_shift;
    }

    return 0;
}

int dango__store_alloc_free(dango_store_alloc_t *a, uint64_t offset)
{
    uint64_t gmask;
    uint32_t idx, prev, next;

    if (a == NULL) {
        return DANGO_EINVAL;
    }

    gmask = ((uint64_t)1 << a->granule_shift) - 1;
    idx   = NODE_NIL;
    if (((offset & gmask) == 0) &&
        ((offset >> a->granule_shift) < a->capacity)) {
        idx = hash_find(a, offset >> a->granule_shift);
    }

    if (idx == NODE_NIL) {
        dango_debug("store_alloc %p: offset %llu is not a live allocation",
                    (void *)a, (unsigned long long)offset);
        return DANGO_ENOENT;
    }

    hash_remove(a, idx);
    a->allocated -= a->nodes[idx].size;
    a->allocated_count--;

    /* Merge into the lower neighbour first: the lower node survives. */
    prev = a->nodes[idx].nb_prev;
    if ((prev != NODE_NIL) && (a->nodes[prev].state == NODE_FREE)) {
        bin_remove(a, prev);
        a->nodes[prev].size += a->nodes[idx].size;
        node_unlink(a, idx);
        node_put(a, idx);
        idx = prev;
    }

    next = a->nodes[idx].nb_next;
    if ((next != NODE_NIL) && (a->nodes[next].state == NODE_FREE)) {
        bin_remove(a, next);
        a->nodes[idx].size += a->nodes[next].size;
        node_unlink(a, next);
        node_put(a, next);
    }

    bin_insert(a, idx);
    return 0;
}

int dango__store_alloc_reserve(dango_store_alloc_t *a, uint64_t offset,
                               uint64_t size)
{
    uint64_t gmask, start, end, free_end;
    uint32_t idx, used, tail;
    uint32_t need;
    int      rc;

    if (a == NULL) {
        return DANGO_EINVAL;
    }

    gmask = ((uint64_t)1 << a->granule_shift) - 1;
    if ((size == 0) || ((offset & gmask) != 0) || ((size & gmask) != 0) ||
        ((offset >> a->granule_shift) >= a->capacity) ||
        ((size >> a->granule_shift) >
         a->capacity - (offset >> a->granule_shift))) {
        dango_debug("store_alloc %p: invalid reserve offset %llu size %llu",
                    (void *)a, (unsigned long long)offset,
                    (unsigned long long)size);
        return DANGO_EINVAL;
    }

    start = offset >> a->granule_shift;
    end   = start + (size >> a->granule_shift);

    idx = hint_find(a, start);
    while (a->nodes[idx].offset + a->nodes[idx].size <= start) {
        idx = a->nodes[idx].nb_next;
    }

    /* A free range is maximal, so the range after it is used. */
    free_end = a->nodes[idx].offset + a->nodes[idx].size;
    if ((a->nodes[idx].state == NODE_USED) || (end > free_end)) {
        dango_debug("store_alloc %p: reserve offset %llu size %llu overlaps "
                    "an allocation",
                    (void *)a, (unsigned long long)offset,
                    (unsigned long long)size);
        return DANGO_EEXIST;
    }

    need = (start > a->nodes[idx].offset) + (end < free_end);
    rc   = nodes_reserve(a, need);
    if (rc != 0) {
        return rc;
    }

    bin_remove(a, idx);
    used = idx;
    if (start > a->nodes[idx].offset) {
        used                  = node_get(a);
        a->nodes[used].offset = start;
        a->nodes[idx].size    = start - a->nodes[idx].offset;
        node_link_after(a, idx, used);
        bin_insert(a, idx);
    }

    a->nodes[used].size = end - start;
    if (end < free_end) {
        tail                  = node_get(a);
        a->nodes[tail].offset = end;
        a->nodes[tail].size   = free_end - end;
        node_link_after(a, used, tail);
        bin_insert(a, tail);
    }

    node_mark_used(a, used);
    hint_update(a, used);
    return 0;
}

void dango__store_alloc_stats(const dango_store_alloc_t *a,
                              dango_store_alloc_stats_t *st)
{
    uint64_t largest = 0;
    uint32_t top, bin;

    if (a->top_bitmap != 0) {
        top = 31 - (uint32_t)__builtin_clz(a->top_bitmap);
        bin = (top << BIN_MANTISSA_BITS) |
              (31 - (uint32_t)__builtin_clz(a->leaf_bitmaps[top]));
        for (uint32_t i = a->bin_heads[bin]; i != NODE_NIL;
             i          = a->nodes[i].bin_next) {
            largest = DANGO_MAX(largest, a->nodes[i].size);
        }
    }

    st->capacity        = a->capacity << a->granule_shift;
    st->granule         = (uint64_t)1 << a->granule_shift;
    st->allocated_bytes = a->allocated << a->granule_shift;
    st->allocated_count = a->allocated_count;
    st->free_bytes      = (a->capacity - a->allocated) << a->granule_shift;
    st->largest_free    = largest << a->granule_shift;
    st->free_ranges     = a->free_ranges;
}

/* ---------- consistency check ---------- */

#define CHECK(_cond, _fmt, ...)                                                \
    do {                                                                       \
        if (!(_cond)) {                                                        \
            dango_error("store_alloc %p: inconsistent: " _fmt, (void *)a,      \
                        ##__VA_ARGS__);                                        \
            return DANGO_ECORRUPT;                                             \
        }                                                                      \
    } while (0)

int dango__store_alloc_check(const dango_store_alloc_t *a)
{
    uint64_t pos = 0, allocated = 0, used_count = 0, free_count = 0;
    uint64_t hashed = 0, binned = 0, unused = 0;
    uint32_t idx, prev = NODE_NIL, live = 0;

    CHECK(a->nodes[0].state != NODE_UNUSED, "node 0 is not live");
    CHECK(a->nodes[0].offset == 0, "node 0 is at offset %llu",
          (unsigned long long)a->nodes[0].offset);

    /* The ranges tile [0, capacity) in order. */
    for (idx = 0; idx != NODE_NIL; idx = a->nodes[idx].nb_next) {
        const store_alloc_node_t *n = &a->nodes[idx];

        CHECK(idx < a->node_capacity, "node index %u out of range", idx);
        CHECK(++live <= a->node_live, "neighbour list longer than %u",
              a->node_live);
        CHECK(n->state != NODE_UNUSED, "unused node %u in the range list", idx);
        CHECK(n->nb_prev == prev, "node %u: bad back link", idx);
        CHECK(n->offset == pos, "node %u at %llu, expected %llu", idx,
              (unsigned long long)n->offset, (unsigned long long)pos);
        CHECK(n->size > 0, "node %u is empty", idx);
        CHECK(n->size <= a->capacity - pos, "node %u runs past the end", idx);
        if (n->state == NODE_USED) {
            allocated += n->size;
            used_count++;
            CHECK(hash_find(a, n->offset) == idx, "node %u not in the hash",
                  idx);
        } else {
            free_count++;
            CHECK((prev == NODE_NIL) || (a->nodes[prev].state != NODE_FREE),
                  "free nodes %u and %u touch", prev, idx);
        }

        pos += n->size;
        prev = idx;
    }

    CHECK(pos == a->capacity, "ranges end at %llu, capacity %llu",
          (unsigned long long)pos, (unsigned long long)a->capacity);
    CHECK(live == a->node_live, "%u ranges, %u live nodes", live, a->node_live);
    CHECK(allocated == a->allocated, "allocated %llu, counter %llu",
          (unsigned long long)allocated, (unsigned long long)a->allocated);
    CHECK(used_count == a->allocated_count, "%llu used, counter %llu",
          (unsigned long long)used_count,
          (unsigned long long)a->allocated_count);
    CHECK(free_count == a->free_ranges, "%llu free, counter %llu",
          (unsigned long long)free_count, (unsigned long long)a->free_ranges);

    /* Bins hold exactly the free ranges, each under its class. */
    for (uint32_t bin = 0; bin < BIN_NUM_LEAF; bin++) {
        uint32_t top      = bin >> BIN_MANTISSA_BITS;
        int      leaf_set = (a->leaf_bitmaps[top] >> (bin & 7)) & 1;

        CHECK(leaf_set == (a->bin_heads[bin] != NODE_NIL),
              "bin %u bitmap disagrees", bin);
        CHECK(((a->top_bitmap >> top) & 1) == (a->leaf_bitmaps[top] != 0),
              "top bin %u bitmap disagrees", top);
        prev = NODE_NIL;
        for (idx = a->bin_heads[bin]; idx != NODE_NIL;
             idx = a->nodes[idx].bin_next) {
            CHECK(++binned <= free_count, "bin lists too long");
            CHECK(a->nodes[idx].state == NODE_FREE,
                  "node %u in bin %u is "
                  "not free",
                  idx, bin);
            CHECK(a->nodes[idx].bin_prev == prev, "bin %u: bad back link", bin);
            CHECK(bin_round_down(a->nodes[idx].size) == bin,
                  "node %u in bin %u has size %llu", idx, bin,
                  (unsigned long long)a->nodes[idx].size);
            CHECK(bin_size(bin) <= a->nodes[idx].size, "bin %u too large", bin);
            prev = idx;
        }
    }

    CHECK(binned == free_count, "%llu binned, %llu free",
          (unsigned long long)binned, (unsigned long long)free_count);

    /* The hash holds exactly the used ranges. */
    for (uint64_t i = 0; i < ((uint64_t)1 << a->hash_bits); i++) {
        if (a->hash[i] != NODE_NIL) {
            CHECK(a->hash[i] < a->node_capacity, "hash slot %llu corrupt",
                  (unsigned long long)i);
            CHECK(a->nodes[a->hash[i]].state == NODE_USED,
                  "hash holds non-used node %u", a->hash[i]);
            hashed++;
        }
    }

    CHECK(hashed == used_count, "%llu hashed, %llu used",
          (unsigned long long)hashed, (unsigned long long)used_count);

    for (idx = a->unused_head; idx != NODE_NIL; idx = a->nodes[idx].bin_next) {
        CHECK(a->nodes[idx].state == NODE_UNUSED,
              "live node %u on the unused "
              "list",
              idx);
        CHECK(++unused <= a->node_capacity, "unused list loops");
    }

    CHECK(unused + a->node_live == a->node_capacity,
          "%llu unused + %u live != %u nodes", (unsigned long long)unused,
          a->node_live, a->node_capacity);
    return 0;
}
