/*
 * Private declarations shared by the files of `dango.store`
 * (py_store.c, py_store_mc.c, py_store_types.c).
 */
#ifndef DANGO_PY_STORE_H
#define DANGO_PY_STORE_H

#include <dango/mooncake_store_c.h>
#include <dango/store.h>

#include "py_int.h"

/*
 * The state of both store classes (DistributedStore and
 * MooncakeDistributedStore): one client, the guard that keeps close() from
 * freeing it under a call in flight, and the buffer objects registered
 * through register_buffer() (kept alive, and their exports locked, until
 * unregistered or closed).
 */
typedef struct dpy_store {
    PyObject_HEAD dango_store_client_t *client;
    dpy_guard_t                         guard;
    PyObject                           *regs; /* dict: address -> memoryview */
    PyObject                           *weakrefs;
} dpy_store_t;

/* A replicate config converted for one call (owns its strings). */
typedef struct dpy_cfg {
    dango_store_replicate_config_t  cfg;
    dango_store_replicate_config_t *p; /* &cfg, or NULL for defaults */
    dpy_keys_t                      segs;
} dpy_cfg_t;

/* Types defined in py_store_types.c. */
extern PyTypeObject dpy_replicate_config_type;
extern PyTypeObject dpy_buffer_handle_type;
extern PyTypeObject dpy_replica_desc_type;
extern PyObject    *dpy_soft_pin_enum;
extern PyObject    *dpy_replica_status_enum;

int dpy_store_types_init(PyObject *mod);

/* ReplicateConfig (or None) -> library config; -1 with an exception. */
int  dpy_cfg_get(PyObject *obj, dpy_cfg_t *c);
void dpy_cfg_release(dpy_cfg_t *c);

/* A BufferHandle that owns @ptr (from dango_store_get_alloc()). */
PyObject *dpy_buffer_handle_new(void *ptr, size_t len);

/* The replica descriptors of a dango_store_stat() result. */
PyObject *dpy_replica_descs(const dango_store_object_info_t *info);

/* Caller memory of a batch: one dpy_mem_t per key, and the arrays the
 * library takes. any_raw: some entry is a raw (registered) address. */
typedef struct dpy_mems {
    size_t     n;
    dpy_mem_t *m;
    void     **ptrs;
    size_t    *lens;
    int        any_raw;
} dpy_mems_t;

int  dpy_mems_get(PyObject *bufs, PyObject *sizes, size_t n, int writable,
                  dpy_mems_t *ms);
void dpy_mems_release(dpy_mems_t *ms);

/* Common parts of the two store classes (py_store.c). */
extern PyTypeObject dpy_mc_store_type;
extern PyTypeObject dpy_native_store_type;

/*
 * A segment name for the second and later clients of this process when
 * nothing names them (NULL: leave it to the library, whose default
 * "<host>:<pid>" the first one takes; a name is published only once).
 */
const char *dpy_store_default_name(char *buf, size_t len);

void dpy_store_init_obj(dpy_store_t *s);
void dpy_store_close(dpy_store_t *s);
void dpy_store_dealloc(PyObject *self);
/* Creates the client with the GIL released; a Dango code. */
int dpy_store_open(dpy_store_t *s, const dango_store_params_t *p,
                   const dango_config_t *cfg);
/* Registers @obj/@size (address or buffer); a Dango code, or -1 - the
 * Python exception is set when the arguments are wrong (*pyerr = 1). */
int dpy_store_register(dpy_store_t *s, PyObject *obj, PyObject *size,
                       int *pyerr);
int dpy_store_unregister(dpy_store_t *s, PyObject *obj, int *pyerr);

/* Gets @key as bytes (any size; retried if it changes); a Dango code or
 * 0 with *out set. Runs with the GIL released around the library calls. */
int dpy_store_get_bytes(dpy_store_t *s, const char *key, PyObject **out);

/* Mooncake's number for a Dango code through mooncake_store_errno(), so
 * the binding returns exactly what mooncake_store_*() would. */
int dpy_mc_code(dango_store_client_t *c, int err);

#endif /* DANGO_PY_STORE_H */
