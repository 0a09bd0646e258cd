/*
 * Store client, location cache: the replica lists (and read leases) the
 * master gave this client for keys it read, reused by later gets of the
 * same keys for STORE_LOCATION_CACHE_TIME without asking the master.
 *
 * DESIGN
 * Why it is safe: a GetReplicaList grants a read lease (STORE master
 * LEASE_TTL, 10 s), and while it runs the master neither frees, evicts
 * nor reuses the object's regions: a plain remove is refused, and an
 * upsert or a forced remove parks the old regions until the lease ends.
 * An entry is used only within min(LOCATION_CACHE_TIME, half the lease)
 * of the moment its request was sent, so the bytes it points to are the
 * object's value as committed. A read through an entry is still checked
 * like any other (the xxh3 of the value, and the record header when it
 * is fetched); any failure (a node gone, a restarted master that no longer
 * honours the lease, a mismatch) drops the entry and the key is asked of
 * the master as if nothing had been cached: no report, no error.
 *
 * What it changes: a get may return the value a key had when this client
 * last asked the master, up to LOCATION_CACHE_TIME earlier, if another
 * client upserted or force-removed it since. This client's own puts,
 * upserts and removes drop their keys at once, and a remove by pattern or
 * of everything, a remount and a leader change drop every entry.
 *
 * Races: an entry is added only if no forget touched its shard since the
 * key was looked up (the shard's generation, and the client-wide epoch
 * for forget-all), so a reply that was in flight during a put or remove
 * of this client is not cached.
 *
 * Structure: SC_LOC_SHARDS shards, each a mutex, a hash map and a FIFO
 * (oldest first, dropped beyond the shard's share of
 * LOCATION_CACHE_ENTRIES). An entry is one allocation (the GetItem, its
 * replicas, their strings and the key) and is immutable; readers hold a
 * reference while they use it.
 */
#include <inttypes.h>
#include <string.h>

#include "common/alloc.h"
#include "common/time.h"
#include "store/store_client_int.h"

static inline sc_loc_shard_t *loc_shard(dango_store_client_t *c, uint64_t hash)
{
    return &c->loc[(hash >> 58) & (SC_LOC_SHARDS - 1)];
}

static void loc_unref(sc_loc_t *e)
{
    if (__atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        dango_free(e);
    }
}

/* Unlinks @e from @sh (lock held) and drops the map's reference. */
static void loc_drop(sc_loc_shard_t *sh, sc_loc_t *e)
{
    dango_hmap_remove(&sh->map, &e->node);
    dango_list_del(&e->link);
    sh->count--;
    loc_unref(e);
}

int dango__sc_loc_init(dango_store_client_t *c)
{
    if ((c->cfg.location_cache_time == 0) ||
        (c->cfg.location_cache_entries == 0)) {
        return 0; /* off */
    }

    c->loc = dango_calloc(SC_LOC_SHARDS, sizeof(*c->loc), "store_loc");
    if (c->loc == NULL) {
        return DANGO_ENOMEM;
    }

    c->loc_shard_cap = DANGO_MAX(
        (size_t)1, (size_t)c->cfg.location_cache_entries / SC_LOC_SHARDS);
    for (size_t i = 0; i < SC_LOC_SHARDS; i++) {
        sc_loc_shard_t *sh = &c->loc[i];

        pthread_mutex_init(&sh->lock, NULL);
        dango_list_init(&sh->fifo);
        if (dango_hmap_init(&sh->map, 0) != 0) {
            for (size_t k = 0; k <= i; k++) {
                dango_hmap_cleanup(&c->loc[k].map);
                pthread_mutex_destroy(&c->loc[k].lock);
            }

            dango_free(c->loc);
            c->loc = NULL;
            return DANGO_ENOMEM;
        }
    }

    return 0;
}

void dango__sc_loc_cleanup(dango_store_client_t *c)
{
    if (c->loc == NULL) {
        return;
    }

    dango_debug("store client %s: location cache: %" PRIu64 " hits, %" PRIu64
                " misses, %" PRIu64 " stale",
                c->name, c->loc_hits, c->loc_misses, c->loc_stale);
    for (size_t i = 0; i < SC_LOC_SHARDS; i++) {
        sc_loc_shard_t *sh = &c->loc[i];

        while (!dango_list_is_empty(&sh->fifo)) {
            loc_drop(sh, dango_container_of(sh->fifo.next, sc_loc_t, link));
        }

        dango_hmap_cleanup(&sh->map);
        pthread_mutex_destroy(&sh->lock);
    }

    dango_free(c->loc);
    c->loc = NULL;
}

sc_loc_t *dango__sc_loc_find(dango_store_client_t *c, const char *key,
                             size_t klen, sc_loc_tag_t *tag)
{
    uint64_t           now = dango_time_ns();
    sc_loc_shard_t    *sh;
    dango_hmap_node_t *node;
    sc_loc_t          *e = NULL;

    tag->hash  = dango_hmap_hash(key, klen);
    tag->epoch = __atomic_load_n(&c->loc_epoch, __ATOMIC_ACQUIRE);
    sh         = loc_shard(c, tag->hash);
    pthread_mutex_lock(&sh->lock);
    tag->gen = sh->gen;
    node     = dango_hmap_find(&sh->map, key, klen, tag->hash);
    if (node != NULL) {
        e = dango_container_of(node, sc_loc_t, node);
        if ((e->epoch != tag->epoch) || (now >= e->valid_until)) {
            loc_drop(sh, e);
            e = NULL;
        } else {
            __atomic_add_fetch(&e->refs, 1, __ATOMIC_RELAXED);
        }
    }

    pthread_mutex_unlock(&sh->lock);
    __atomic_add_fetch((e != NULL) ? &c->loc_hits : &c->loc_misses, 1,
                       __ATOMIC_RELAXED);
    return e;
}

void dango__sc_loc_release(sc_loc_t *e)
{
    if (e != NULL) {
        loc_unref(e);
    }
}

/* Bytes of the entry for @it and a key of @klen bytes. */
static size_t loc_size(const Dango__Store__GetItem *it, size_t n, size_t klen)
{
    size_t len = DANGO_ALIGN_UP(sizeof(sc_loc_t), 8) +
                 DANGO_ALIGN_UP(n * sizeof(Dango__Store__Replica *), 8) +
                 n * DANGO_ALIGN_UP(sizeof(Dango__Store__Replica), 8) + klen +
                 1;

    for (size_t j = 0; j < n; j++) {
        len += strlen(it->replicas[j]->segment) + 1 +
               strlen(it->replicas[j]->host_id) + 1;
    }

    return len;
}

static char *loc_strdup(char **at, const char *s)
{
    size_t l = strlen(s) + 1;
    char  *d = *at;

    memcpy(d, s, l);
    *at += l;
    return d;
}

/* A copy of @it (its first @n replicas) and @key in one allocation. */
static sc_loc_t *loc_new(const char *key, size_t klen,
                         const Dango__Store__GetItem *it, size_t n)
{
    sc_loc_t *e = dango_malloc(loc_size(it, n, klen), "store_loc");
    Dango__Store__Replica **rp;
    Dango__Store__Replica  *r;
    char                   *s;

    if (e == NULL) {
        return NULL;
    }

    rp = (Dango__Store__Replica **)((char *)e + DANGO_ALIGN_UP(sizeof(*e), 8));
    r  = (Dango__Store__Replica *)((char *)rp +
                                  DANGO_ALIGN_UP(n * sizeof(*rp), 8));
    s  = (char *)r + n * DANGO_ALIGN_UP(sizeof(*r), 8);
    memset(e, 0, sizeof(*e));
    e->it                       = *it;
    e->it.base.n_unknown_fields = 0;
    e->it.base.unknown_fields   = NULL;
    e->it.n_replicas            = n;
    e->it.replicas              = rp;
    for (size_t j = 0; j < n; j++) {
        rp[j]                      = &r[j];
        r[j]                       = *it->replicas[j];
        r[j].base.n_unknown_fields = 0;
        r[j].base.unknown_fields   = NULL;
        r[j].segment               = loc_strdup(&s, it->replicas[j]->segment);
        r[j].host_id               = loc_strdup(&s, it->replicas[j]->host_id);
    }

    memcpy(s, key, klen);
    s[klen]         = '\0';
    e->node.key     = s;
    e->node.key_len = klen;
    e->refs         = 1;
    return e;
}

void dango__sc_loc_add(dango_store_client_t *c, const char *key, size_t klen,
                       const sc_loc_tag_t *tag, const Dango__Store__GetItem *it,
                       uint64_t t0)
{
    uint64_t life = c->cfg.location_cache_time;
    uint64_t until;
    size_t   n = DANGO_MIN(it->n_replicas, (size_t)DANGO_STORE_REPLICA_MAX);
    sc_loc_shard_t    *sh;
    dango_hmap_node_t *node;
    sc_loc_t          *e;

    /* No lease, no promise that the regions stay; a disk-staged replica
     * is freed by its node once read. */
    if ((it->status != 0) || (it->cache_ms == 0) || (it->lease_ms == 0) ||
        it->disk_staged || (n == 0)) {
        return;
    }

    life  = DANGO_MIN(life, it->cache_ms * DANGO_NSEC_PER_MSEC);
    life  = DANGO_MIN(life, it->lease_ms * DANGO_NSEC_PER_MSEC / 2);
    until = t0 + life;
    if (dango_time_ns() >= until) {
        return;
    }

    e = loc_new(key, klen, it, n);
    if (e == NULL) {
        return; /* a cache: nothing lost */
    }

    e->node.hash   = tag->hash;
    e->epoch       = tag->epoch;
    e->t0          = t0;
    e->valid_until = until;
    sh             = loc_shard(c, tag->hash);
    pthread_mutex_lock(&sh->lock);
    if ((sh->gen != tag->gen) ||
        (__atomic_load_n(&c->loc_epoch, __ATOMIC_ACQUIRE) != tag->epoch)) {
        /* A forget ran since the lookup: this reply may predate it. */
        pthread_mutex_unlock(&sh->lock);
        dango_free(e);
        return;
    }

    node = dango_hmap_find(&sh->map, key, klen, tag->hash);
    if (node != NULL) {
        loc_drop(sh, dango_container_of(node, sc_loc_t, node));
    }

    dango_hmap_insert(&sh->map, &e->node);
    dango_list_add_tail(&sh->fifo, &e->link);
    sh->count++;
    while (sh->count > c->loc_shard_cap) {
        loc_drop(sh, dango_container_of(sh->fifo.next, sc_loc_t, link));
    }

    pthread_mutex_unlock(&sh->lock);
}

void dango__sc_loc_forget(dango_store_client_t *c, const char *key, size_t klen,
                          sc_loc_tag_t *tag)
{
    sc_loc_tag_t       local;
    sc_loc_shard_t    *sh;
    dango_hmap_node_t *node;

    if (c->loc == NULL) {
        return;
    }

    if (tag == NULL) {
        tag       = &local;
        tag->hash = dango_hmap_hash(key, klen);
    }

    sh = loc_shard(c, tag->hash);
    pthread_mutex_lock(&sh->lock);
    sh->gen++;
    node = dango_hmap_find(&sh->map, key, klen, tag->hash);
    if (node != NULL) {
        loc_drop(sh, dango_container_of(node, sc_loc_t, node));
    }

    tag->gen   = sh->gen;
    tag->epoch = __atomic_load_n(&c->loc_epoch, __ATOMIC_ACQUIRE);
    pthread_mutex_unlock(&sh->lock);
}

void dango__sc_loc_forget_keys(dango_store_client_t *c, size_t n,
                               const char *const *keys)
{
    for (size_t i = 0; (c->loc != NULL) && (i < n); i++) {
        if (keys[i] != NULL) {
            dango__sc_loc_forget(c, keys[i], strlen(keys[i]), NULL);
        }
    }
}

void dango__sc_loc_forget_all(dango_store_client_t *c)
{
    if (c->loc != NULL) {
        __atomic_add_fetch(&c->loc_epoch, 1, __ATOMIC_ACQ_REL);
    }
}
