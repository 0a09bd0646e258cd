/* Intrusive circular doubly-linked list (the shape of UCX's ucs_list). */
#ifndef DANGO_COMMON_LIST_H
#define DANGO_COMMON_LIST_H

#include <stddef.h>
#include <dango/common.h>

typedef struct dango_list_link {
    struct dango_list_link *prev;
    struct dango_list_link *next;
} dango_list_link_t;

#define DANGO_LIST_HEAD(_name) dango_list_link_t _name = {&(_name), &(_name)}

static inline void dango_list_init(dango_list_link_t *head)
{
    head->prev = head->next = head;
}

static inline int dango_list_is_empty(const dango_list_link_t *head)
{
    return head->next == head;
}

static inline void dango_list_insert_after(dango_list_link_t *pos,
                                           dango_list_link_t *elem)
{
    elem->prev      = pos;
    elem->next      = pos->next;
    pos->next->prev = elem;
    pos->next       = elem;
}

static inline void dango_list_add_tail(dango_list_link_t *head,
                                       dango_list_link_t *elem)
{
    dango_list_insert_after(head->prev, elem);
}

static inline void dango_list_add_head(dango_list_link_t *head,
                                       dango_list_link_t *elem)
{
    dango_list_insert_after(head, elem);
}

static inline void dango_list_del(dango_list_link_t *elem)
{
    elem->prev->next = elem->next;
    elem->next->prev = elem->prev;
    elem->prev = elem->next = elem;
}

/* Moves every element of @src to the tail of @dst; @src becomes empty. */
static inline void dango_list_splice_tail(dango_list_link_t *dst,
                                          dango_list_link_t *src)
{
    if (dango_list_is_empty(src)) {
        return;
    }

    src->next->prev = dst->prev;
    dst->prev->next = src->next;
    src->prev->next = dst;
    dst->prev       = src->prev;
    dango_list_init(src);
}

#define dango_list_elem(_link, _type, _member)                                 \
    dango_container_of(_link, _type, _member)

#define dango_list_head_elem(_head, _type, _member)                            \
    dango_list_elem((_head)->next, _type, _member)

#define dango_list_for_each(_elem, _head, _member)                             \
    for (_elem =                                                               \
             dango_container_of((_head)->next, __typeof__(*_elem), _member);   \
         &(_elem)->_member != (_head);                                         \
         _elem = dango_container_of((_elem)->_member.next, __typeof__(*_elem), \
                                    _member))

#define dango_list_for_each_safe(_elem, _tmp, _head, _member)                  \
    for (_elem =                                                               \
             dango_container_of((_head)->next, __typeof__(*_elem), _member),   \
        _tmp = dango_container_of((_elem)->_member.next, __typeof__(*_elem),   \
                                  _member);                                    \
         &(_elem)->_member != (_head);                                         \
         _elem = _tmp, _tmp = dango_container_of((_tmp)->_member.next,         \
                                                 __typeof__(*_elem), _member))

#endif
