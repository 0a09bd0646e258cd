/*
 * Transport registry. The built-in transports are listed statically (so a
 * static link keeps them); transports built outside the library register
 * themselves with DANGO_TRANSPORT_DEFINE. Lookups walk a short list.
 */
#include <pthread.h>
#include <string.h>

#include <dango/transport.h>

extern const dango_transport_ops_t dango__tcp_ops;
extern const dango_transport_ops_t dango__shm_ops;
extern const dango_transport_ops_t dango__file_ops;

static dango_transport_entry_t tp_builtin[] = {
    {&dango__shm_ops, NULL},
    {&dango__tcp_ops, NULL},
    {&dango__file_ops, NULL},
};

static dango_transport_entry_t *tp_extra;
static pthread_mutex_t          tp_lock = PTHREAD_MUTEX_INITIALIZER;

void dango_transport_register(dango_transport_entry_t *entry)
{
    pthread_mutex_lock(&tp_lock);
    entry->next = tp_extra;
    tp_extra    = entry;
    pthread_mutex_unlock(&tp_lock);
}

const dango_transport_ops_t *dango_transport_find(const char *name)
{
    const dango_transport_ops_t *ops = NULL;

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(tp_builtin); i++) {
        if (strcmp(tp_builtin[i].ops->name, name) == 0) {
            return tp_builtin[i].ops;
        }
    }

    pthread_mutex_lock(&tp_lock);
    for (dango_transport_entry_t *e = tp_extra; e != NULL; e = e->next) {
        if (strcmp(e->ops->name, name) == 0) {
            ops = e->ops;
            break;
        }
    }

    pthread_mutex_unlock(&tp_lock);
    return ops;
}

size_t dango_transport_list(const char **names, size_t max)
{
    size_t n = 0;

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(tp_builtin); i++, n++) {
        if (n < max) {
            names[n] = tp_builtin[i].ops->name;
        }
    }

    pthread_mutex_lock(&tp_lock);
    for (dango_transport_entry_t *e = tp_extra; e != NULL; e = e->next, n++) {
        if (n < max) {
            names[n] = e->ops->name;
        }
    }

    pthread_mutex_unlock(&tp_lock);
    return n;
}
