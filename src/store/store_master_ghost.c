/*
 * Ghosts: the identity of committed objects the master lost because every
 * node holding them went silent (expired or unmounted), so that a node
 * coming back (from a partition, a pause) can give them back at any time,
 * not only within the rebuild window after a master start.
 *
 * A ghost is (key, put id, size, checksum). A node's remount record of
 * exactly that put brings the object back (dango__store_ms_restore); a new
 * put of the key, a remove or a regex remove matching it forgets it, so
 * nothing removed or replaced since ever comes back. Ghosts are kept in
 * loss order, at most MS_GHOST_MAX; the oldest are forgotten first.
 */
#include "store/store_master_int.h"

#include <string.h>

#include "common/alloc.h"

typedef struct ms_ghost {
    dango_hmap_node_t node; /* in st->ghosts, key = key */
    dango_list_link_t link; /* st->ghost_fifo, oldest first */
    uint64_t          put_id;
    uint64_t          size;
    uint64_t          checksum;
    char              key[];
} ms_ghost_t;

static ms_ghost_t *ghost_find(ms_state_t *st, const char *key, size_t len)
{
    dango_hmap_node_t *n =
        dango_hmap_find(&st->ghosts, key, len, dango_hmap_hash(key, len));

    return (n != NULL) ? dango_container_of(n, ms_ghost_t, node) : NULL;
}

static void ghost_free(ms_state_t *st, ms_ghost_t *g)
{
    dango_hmap_remove(&st->ghosts, &g->node);
    dango_list_del(&g->link);
    dango_free(g);
}

void dango__store_ms_ghost_add(ms_state_t *st, const ms_obj_t *o,
                               const ms_ver_t *v)
{
    size_t      len = o->node.key_len;
    ms_ghost_t *g   = ghost_find(st, o->key, len);

    if (g != NULL) {
        ghost_free(st, g);
    }
    if (dango_hmap_count(&st->ghosts) >= MS_GHOST_MAX) {
        ghost_free(st,
                   dango_container_of(st->ghost_fifo.next, ms_ghost_t, link));
        st->c.ghosts_dropped++;
    }

    g = dango_calloc(1, sizeof(*g) + len + 1, "master_ghost");
    if (g == NULL) {
        st->c.ghosts_dropped++;
        return;
    }
    memcpy(g->key, o->key, len);
    g->node.key     = g->key;
    g->node.key_len = len;
    g->node.hash    = dango_hmap_hash(g->key, len);
    g->put_id       = v->put_id;
    g->size         = v->size;
    g->checksum     = v->checksum;
    dango_hmap_insert(&st->ghosts, &g->node);
    dango_list_add_tail(&st->ghost_fifo, &g->link);
}

int dango__store_ms_ghost_match(ms_state_t *st, const ms_key_t *k,
                                uint64_t put_id, uint64_t size,
                                uint64_t checksum)
{
    ms_ghost_t *g = ghost_find(st, k->s, k->len);

    return (g != NULL) && (g->put_id == put_id) && (g->size == size) &&
           (g->checksum == checksum);
}

void dango__store_ms_ghost_forget(ms_state_t *st, const ms_key_t *k)
{
    ms_ghost_t *g;

    if (dango_hmap_count(&st->ghosts) == 0) {
        return;
    }
    g = ghost_find(st, k->s, k->len);
    if (g != NULL) {
        ghost_free(st, g);
    }
}

size_t dango__store_ms_ghost_forget_match(ms_state_t *st, const regex_t *re)
{
    dango_list_link_t *l, *next;
    size_t             n = 0;

    for (l = st->ghost_fifo.next; l != &st->ghost_fifo; l = next) {
        ms_ghost_t *g = dango_container_of(l, ms_ghost_t, link);

        next = l->next;
        if ((re == NULL) || (regexec(re, g->key, 0, NULL, 0) == 0)) {
            ghost_free(st, g);
            n++;
        }
    }
    return n;
}
