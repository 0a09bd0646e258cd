/*
 * Cache-only replay: the hit rate a cache size and a routing give on a
 * trace, with no timing at all (spec conductor.md §B, followed exactly).
 *
 * Requests are taken in file order. N = 1 is one global LRU of C blocks;
 * N > 1 are N independent LRUs of floor(C / N) blocks. Request j goes to
 * cache j mod N (RR) or to the cache with the longest leading run of its
 * blocks present (AWARE), ties broken by scanning the caches cyclically
 * from j mod N and keeping the first maximum, so all-zero is round robin.
 * The lookups never change recency; then only the serving cache is
 * accessed, blocks in forward order (or reverse with the REV variant).
 */
#include "conductor/conductor_int.h"

#include <string.h>

#include "common/alloc.h"

int dango_conductor_replay_cache(const dango_conductor_trace_t        *t,
                                 const dango_conductor_cache_params_t *p,
                                 dango_conductor_cache_result_t       *res)
{
    dango_conductor_lru_t **lru;
    size_t                  per, count;
    unsigned                n;
    int                     rc = 0;

    if ((t == NULL) || (p == NULL) || (res == NULL) || (p->instances == 0) ||
        (p->instances > DANGO_CONDUCTOR_MAX_INSTANCES) ||
        (p->block_size == 0) ||
        ((p->routing != DANGO_CONDUCTOR_ROUTE_RR) &&
         (p->routing != DANGO_CONDUCTOR_ROUTE_AWARE))) {
        return DANGO_EINVAL;
    }

    n   = p->instances;
    per = (p->capacity_blocks == DANGO_CONDUCTOR_CAPACITY_INF)
              ? DANGO_CONDUCTOR_CAPACITY_INF
              : p->capacity_blocks / n;
    lru = dango_calloc(n, sizeof(*lru), "conductor_replay");
    if (lru == NULL) {
        return DANGO_ENOMEM;
    }

    for (unsigned i = 0; i < n; i++) {
        rc = dango_conductor_lru_create(per, NULL, NULL, &lru[i]);
        if (rc != 0) {
            goto out;
        }
    }

    memset(res, 0, sizeof(*res));
    count = dango_conductor_trace_count(t);
    for (size_t j = 0; j < count; j++) {
        dango_conductor_trace_req_t r;
        unsigned                    pick = (unsigned)(j % n);
        size_t                      hit;

        dango_conductor_trace_get(t, j, &r);
        hit = dango_conductor_lru_match(lru[pick], r.hash_ids, r.n_blocks);
        if ((p->routing == DANGO_CONDUCTOR_ROUTE_AWARE) && (n > 1)) {
            /* First maximum in cyclic order from j mod N; a full match
             * cannot be beaten, so the scan stops there. */
            for (unsigned s = 1; (s < n) && (hit < r.n_blocks); s++) {
                unsigned i = (unsigned)((j + s) % n);
                size_t   h =
                    dango_conductor_lru_match(lru[i], r.hash_ids, r.n_blocks);

                if (h > hit) {
                    hit  = h;
                    pick = i;
                }
            }
        }

        rc = dango_conductor_lru_access(lru[pick], r.hash_ids, r.n_blocks,
                                        p->reverse ? DANGO_CONDUCTOR_LRU_REVERSE
                                                   : 0);
        if (rc != 0) {
            goto out;
        }

        res->requests++;
        res->total_blocks += r.n_blocks;
        res->hit_blocks += hit;
        res->total_tokens += r.input_length;
        res->hit_tokens +=
            DANGO_MIN((uint64_t)hit * p->block_size, r.input_length);
        if (res->per_instance[pick]++ == 0) {
            res->instances_used++;
        }
    }

    for (unsigned i = 0; i < n; i++) {
        res->evictions += dango_conductor_lru_evictions(lru[i]);
    }

out:
    for (unsigned i = 0; i < n; i++) {
        dango_conductor_lru_destroy(lru[i]);
    }
    dango_free(lru);
    return rc;
}
