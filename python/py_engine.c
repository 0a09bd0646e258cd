/*
 * `dango.engine.TransferEngine`: Mooncake's Python transfer engine API
 * (spec transfer-engine.md §5.1) on the Dango transfer engine
 * (include/dango/xfer.h).
 *
 * Design:
 *   - One dango_xfer_engine_t per object, created by initialize(). Every
 *     transfer and wait runs with the GIL released, between the call
 *     guard's enter and leave, so close() (or collection) waits for them.
 *   - Peers are named as in Mooncake: the target's segment name ("host:port"
 *     with P2PHANDSHAKE). dango_xfer_segment_open() caches descriptors, so
 *     it is called for each transfer; a stale segment (the peer restarted)
 *     is opened again once.
 *   - Synchronous transfers wait at most MC_TRANSFER_TIMEOUT seconds
 *     (default 30, at least 5) plus 1 ns per byte, as Mooncake does. A batch
 *     that is still in flight when the time is up cannot be freed; it is
 *     kept on a list and freed once finished, or after the engine is
 *     destroyed (which fails what is left with DANGO_ECANCELED).
 *   - Asynchronous batches get small integer ids (never raw pointers), so a
 *     wrong id is -1 and not a crash. A thread that waits on a batch takes
 *     it out of the table first, so no other thread frees it meanwhile.
 *   - write_bytes_to_buffer / read_bytes_from_buffer copy only within memory
 *     this object registered or allocated; any other address is -1 (or
 *     ValueError for reads), never a fault.
 * All tables are changed with the GIL held, which serialises them.
 *
 * Return values follow Mooncake: 0 or a negative number (its ERR_* codes
 * where one fits: -1 invalid argument, -3 address not registered, -7
 * overlap, -200 metadata), batch ids > 0 (0 = failure for the async batch
 * calls, -1 for transfer_submit_write), status 1 done / 0 running / -1
 * failed / -2 timed out.
 */
/* Python.h first: it sets macros the C library headers read. */
#include "py_int.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dango/xfer.h>

#define TE_ERR_INVALID  (-1)
#define TE_ERR_NOT_REG  (-3)
#define TE_ERR_OVERLAP  (-7)
#define TE_ERR_METADATA (-200)
#define TE_NOTIFY_BATCH 64

/* An async batch and when it counts as timed out. */
typedef struct te_batch {
    uint64_t            id;
    dango_xfer_batch_t *batch;
    uint64_t            deadline_ns;
} te_batch_t;

/* Memory this object registered (or allocated, managed = 1). */
typedef struct te_region {
    uintptr_t addr;
    size_t    len;
    int       managed;
} te_region_t;

typedef struct dpy_engine {
    PyObject_HEAD dango_xfer_engine_t *eng;
    dpy_guard_t                        guard;
    int                                opening;
    te_batch_t                        *batches; /* async batches by id */
    size_t                             nbatches, capbatches;
    uint64_t                           next_id;
    dango_xfer_batch_t               **zombies; /* timed out, still in flight */
    size_t                             nzombies, capzombies;
    te_region_t                       *regions;
    size_t                             nregions, capregions;
    PyObject                          *held; /* dict: address -> memoryview */
    PyObject                          *weakrefs;
} dpy_engine_t;

static PyObject *te_notify_type; /* TransferNotify(name, msg) */

#define TE(_self) ((dpy_engine_t *)(_self))

/* ---------- helpers ---------- */

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Mooncake's synchronous transfer bound for @bytes, in ms. */
static int te_timeout_ms(uint64_t bytes)
{
    const char *e   = getenv("MC_TRANSFER_TIMEOUT");
    long        sec = (e != NULL) ? strtol(e, NULL, 10) : 30;
    uint64_t    ms;

    if (sec < 5) {
        sec = 5;
    }

    ms = (uint64_t)sec * 1000 + bytes / 1000000;
    return (ms > (uint64_t)INT32_MAX) ? INT32_MAX : (int)ms;
}

static int te_code(int err)
{
    switch (err) {
    case 0:
        return 0;
    case DANGO_ENOTREG:
    case DANGO_ENOENT:
        return TE_ERR_NOT_REG;
    case DANGO_EOVERLAP:
        return TE_ERR_OVERLAP;
    case DANGO_EMETADATA:
        return TE_ERR_METADATA;
    default:
        return TE_ERR_INVALID;
    }
}

static dango_xfer_engine_t *te_enter(PyObject *self)
{
    dango_xfer_engine_t *e = TE(self)->eng;

    return (dpy_guard_enter(&TE(self)->guard, e != NULL) == 0) ? e : NULL;
}

static void te_leave(PyObject *self)
{
    dpy_guard_leave(&TE(self)->guard);
}

/* Grows @arr (elements of @size) to hold one more; -1 without memory. */
static int te_grow(void **arr, size_t *cap, size_t n, size_t size)
{
    void  *p;
    size_t c;

    if (n < *cap) {
        return 0;
    }

    c = (*cap == 0) ? 16 : *cap * 2;
    p = PyMem_Realloc(*arr, c * size);
    if (p == NULL) {
        return -1;
    }

    *arr = p;
    *cap = c;
    return 0;
}

/* Frees what is finished among the timed-out batches (GIL held). */
static void te_reap(dpy_engine_t *t)
{
    size_t i = 0;

    while (i < t->nzombies) {
        if (dango_xfer_batch_destroy(t->zombies[i]) == 0) {
            t->zombies[i] = t->zombies[--t->nzombies];
        } else {
            i++;
        }
    }
}

/* Keeps a batch that cannot be freed yet. */
static void te_zombie(dpy_engine_t *t, dango_xfer_batch_t *b)
{
    if (dango_xfer_batch_destroy(b) == 0) {
        return;
    }

    if (te_grow((void **)&t->zombies, &t->capzombies, t->nzombies,
                sizeof(*t->zombies)) != 0) {
        /* Without memory to track it the batch is leaked, not freed under
         * the transfer that still uses it. */
        return;
    }

    t->zombies[t->nzombies++] = b;
}

static int te_region_add(dpy_engine_t *t, uintptr_t addr, size_t len,
                         int managed)
{
    if (te_grow((void **)&t->regions, &t->capregions, t->nregions,
                sizeof(*t->regions)) != 0) {
        return -1;
    }

    t->regions[t->nregions++] = (te_region_t){addr, len, managed};
    return 0;
}

static te_region_t *te_region_find(dpy_engine_t *t, uintptr_t addr)
{
    for (size_t i = 0; i < t->nregions; i++) {
        if (t->regions[i].addr == addr) {
            return &t->regions[i];
        }
    }

    return NULL;
}

static void te_region_del(dpy_engine_t *t, te_region_t *r)
{
    *r = t->regions[--t->nregions];
}

/* 1 when [addr, addr + len) lies inside one region. */
static int te_region_covers(dpy_engine_t *t, uintptr_t addr, size_t len)
{
    for (size_t i = 0; i < t->nregions; i++) {
        te_region_t *r = &t->regions[i];

        if ((addr >= r->addr) && (len <= r->len) &&
            (addr - r->addr <= r->len - len)) {
            return 1;
        }
    }

    return 0;
}

/* A local address argument: int, or a buffer object (its address). */
static int te_local(PyObject *o, uint64_t len, uintptr_t *out)
{
    dpy_mem_t m;
    PyObject *lo = PyLong_FromUnsignedLongLong(len);
    int       rc;

    if (lo == NULL) {
        return -1;
    }

    rc = dpy_mem_get(o, lo, 0, &m);
    Py_DECREF(lo);
    if (rc != 0) {
        return -1;
    }

    *out = (uintptr_t)m.ptr;
    dpy_mem_release(&m);
    return 0;
}

static int te_target(PyObject *o, const char **out)
{
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError,
                     "target_hostname must be a str, not %.100s",
                     Py_TYPE(o)->tp_name);
        return -1;
    }

    *out = PyUnicode_AsUTF8(o);
    return (*out != NULL) ? 0 : -1;
}

/* Requests of one call, converted with the GIL held. */
typedef struct te_reqs {
    size_t            n;
    dango_xfer_req_t *r;
    uint64_t          bytes;
} te_reqs_t;

static int te_reqs_get(PyObject *bufs, PyObject *peers, PyObject *lens,
                       dango_xfer_op_t op, te_reqs_t *q)
{
    PyObject *bl, *pl = NULL, *ll = NULL;
    size_t    n;

    memset(q, 0, sizeof(*q));
    bl = dpy_seq_list(bufs, "buffers");
    if ((bl == NULL) ||
        ((pl = dpy_seq_list(peers, "peer_buffer_addresses")) == NULL) ||
        ((ll = dpy_seq_list(lens, "lengths")) == NULL)) {
        goto err;
    }

    n = (size_t)PyList_GET_SIZE(bl);
    if (((size_t)PyList_GET_SIZE(pl) != n) ||
        ((size_t)PyList_GET_SIZE(ll) != n) || (n == 0)) {
        PyErr_SetString(PyExc_ValueError,
                        "buffers, peer addresses and lengths must be "
                        "non-empty and of one length");
        goto err;
    }

    q->r = PyMem_Calloc(n, sizeof(*q->r));
    if (q->r == NULL) {
        PyErr_NoMemory();
        goto err;
    }

    for (size_t i = 0; i < n; i++) {
        uint64_t  len, peer;
        uintptr_t local;

        if ((dpy_u64(PyList_GET_ITEM(ll, i), "length", &len) != 0) ||
            (dpy_u64(PyList_GET_ITEM(pl, i), "peer_buffer_address", &peer) !=
             0) ||
            (te_local(PyList_GET_ITEM(bl, i), len, &local) != 0)) {
            goto err;
        }

        q->r[i] = (dango_xfer_req_t){.op          = op,
                                     .local_addr  = (void *)local,
                                     .remote_addr = peer,
                                     .length      = len};
        q->bytes += len;
    }

    q->n = n;
    Py_DECREF(bl);
    Py_DECREF(pl);
    Py_DECREF(ll);
    return 0;

err:
    Py_XDECREF(bl);
    Py_XDECREF(pl);
    Py_XDECREF(ll);
    PyMem_Free(q->r);
    memset(q, 0, sizeof(*q));
    return -1;
}

/*
 * Opens @target, creates a batch and submits @q into it (GIL released).
 * A stale segment is opened again once. 0 with *batch_p, or a Dango code.
 */
static int te_submit(dango_xfer_engine_t *e, const char *target, te_reqs_t *q,
                     dango_xfer_batch_t **batch_p)
{
    dango_xfer_batch_t *b;
    dango_segment_id_t  seg;
    int                 rc;

    rc = dango_xfer_batch_create(e, q->n, &b);
    if (rc != 0) {
        return rc;
    }

    for (int attempt = 0; attempt < 2; attempt++) {
        rc = dango_xfer_segment_open(e, target, &seg);
        if (rc != 0) {
            break;
        }

        for (size_t i = 0; i < q->n; i++) {
            q->r[i].segment = seg;
        }

        rc = dango_xfer_batch_submit(b, q->r, q->n);
        if (rc != DANGO_ESEGMENT_STALE) {
            break;
        }
    }

    if (rc != 0) {
        dango_xfer_batch_destroy(b);
        return rc;
    }

    *batch_p = b;
    return 0;
}

/* A synchronous transfer: 0 or -1. */
static int te_sync(PyObject *self, const char *target, te_reqs_t *q)
{
    dango_xfer_engine_t *e = te_enter(self);
    dango_xfer_batch_t  *b = NULL;
    int                  rc, timeout = te_timeout_ms(q->bytes);

    if (e == NULL) {
        return TE_ERR_INVALID;
    }

    Py_BEGIN_ALLOW_THREADS rc = te_submit(e, target, q, &b);
    if (rc == 0) {
        rc = dango_xfer_batch_wait(b, timeout);
    }
    Py_END_ALLOW_THREADS if (b != NULL)
    {
        te_zombie(TE(self), b);
    }

    te_reap(TE(self));
    te_leave(self);
    return (rc == 0) ? 0 : TE_ERR_INVALID;
}

/* ---------- lifecycle ---------- */

static PyObject *te_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    dpy_engine_t *t = (dpy_engine_t *)type->tp_alloc(type, 0);

    if (t == NULL) {
        return NULL;
    }

    dpy_guard_init(&t->guard);
    t->next_id = 1;
    t->held    = PyDict_New();
    if (t->held == NULL) {
        Py_DECREF(t);
        return NULL;
    }

    return (PyObject *)t;
}

static void te_close_engine(dpy_engine_t *t)
{
    dango_xfer_engine_t *e = t->eng;

    if (e == NULL) {
        return;
    }

    t->eng = NULL;
    dpy_guard_drain(&t->guard);
    /* Destroy what finished first: the engine wants its batches gone. */
    for (size_t i = 0; i < t->nbatches; i++) {
        te_zombie(t, t->batches[i].batch);
    }

    t->nbatches = 0;
    te_reap(t);
    for (size_t i = 0; i < t->nregions; i++) {
        if (t->regions[i].managed) {
            dango_xfer_mem_free(e, (void *)t->regions[i].addr);
        }
    }

    t->nregions = 0;
    Py_BEGIN_ALLOW_THREADS dango_xfer_engine_destroy(e);
    Py_END_ALLOW_THREADS
        /* In-flight requests failed with DANGO_ECANCELED: free their batches.
         */
        for (size_t i = 0; i < t->nzombies; i++)
    {
        dango_xfer_batch_destroy(t->zombies[i]);
    }

    t->nzombies = 0;
    PyDict_Clear(t->held);
}

static void te_dealloc(PyObject *self)
{
    dpy_engine_t *t = TE(self);

    if (t->weakrefs != NULL) {
        PyObject_ClearWeakRefs(self);
    }

    te_close_engine(t);
    dpy_guard_cleanup(&t->guard);
    PyMem_Free(t->batches);
    PyMem_Free(t->zombies);
    PyMem_Free(t->regions);
    Py_CLEAR(t->held);
    Py_TYPE(self)->tp_free(self);
}

static PyObject *te_initialize(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"local_hostname", "metadata_server", "protocol",
                             "device_name", NULL};
    const char  *host, *md, *proto = "tcp", *dev = "";
    const char  *force_tcp = getenv("MC_FORCE_TCP");
    dango_xfer_engine_params_t p;
    dango_xfer_engine_t       *e = NULL;
    char                       listen[300];
    int                        rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "ss|ss", kwlist, &host, &md,
                                     &proto, &dev)) {
        return NULL;
    }

    if ((TE(self)->eng != NULL) || TE(self)->opening || (host[0] == '\0')) {
        return PyLong_FromLong(TE_ERR_INVALID);
    }

    /* No scheme means etcd in Mooncake, which Dango does not speak. */
    if (strcmp(md, DANGO_XFER_P2PHANDSHAKE) && strncmp(md, "http://", 7) &&
        strncmp(md, "https://", 8) && strncmp(md, "mem://", 6)) {
        return PyLong_FromLong(TE_ERR_INVALID);
    }

    snprintf(listen, sizeof(listen),
             (strchr(host, ':') != NULL) ? "%s" : "%s:0", host);
    memset(&p, 0, sizeof(p));
    p.field_mask = DANGO_XFER_ENGINE_PARAM_METADATA |
                   DANGO_XFER_ENGINE_PARAM_LISTEN |
                   DANGO_XFER_ENGINE_PARAM_TRANSPORTS;
    p.metadata    = md;
    p.listen_addr = listen;
    /* Mooncake installs what the host has whatever protocol says (rdma
     * without an HCA is tcp): here shared memory on one host, else tcp. */
    p.transports =
        ((force_tcp != NULL) && !strcmp(force_tcp, "1")) ? "tcp" : "shm,tcp";
    (void)proto;
    (void)dev;
    if (strcmp(md, DANGO_XFER_P2PHANDSHAKE) != 0) {
        p.field_mask |= DANGO_XFER_ENGINE_PARAM_SEGMENT_NAME;
        p.segment_name = host;
    }

    TE(self)->opening         = 1;
    Py_BEGIN_ALLOW_THREADS rc = dango_xfer_engine_create(&p, NULL, &e);
    Py_END_ALLOW_THREADS   TE(self)->opening = 0;
    if (rc != 0) {
        return PyLong_FromLong(TE_ERR_INVALID);
    }

    TE(self)->eng = e;
    dpy_guard_reopen(&TE(self)->guard);
    return PyLong_FromLong(0);
}

static PyObject *te_close(PyObject *self, PyObject *noargs)
{
    te_close_engine(TE(self));
    Py_RETURN_NONE;
}

static PyObject *te_ctx_enter(PyObject *self, PyObject *noargs)
{
    return Py_NewRef(self);
}

static PyObject *te_ctx_exit(PyObject *self, PyObject *args)
{
    te_close_engine(TE(self));
    Py_RETURN_FALSE;
}

static PyObject *te_get_rpc_port(PyObject *self, PyObject *noargs)
{
    dango_xfer_engine_t *e = te_enter(self);
    char                 addr[300], *colon;
    int                  rc;

    if (e == NULL) {
        return PyLong_FromLong(TE_ERR_INVALID);
    }

    rc = dango_xfer_engine_listen_addr(e, addr, sizeof(addr));
    te_leave(self);
    colon = strrchr(addr, ':');
    if ((rc != 0) || (colon == NULL)) {
        return PyLong_FromLong(TE_ERR_INVALID);
    }

    return PyLong_FromLong(strtol(colon + 1, NULL, 10));
}

static PyObject *te_get_session_id(PyObject *self, PyObject *noargs)
{
    dango_xfer_engine_t *e = te_enter(self);
    PyObject            *r;

    if (e == NULL) {
        return PyUnicode_FromString("");
    }

    r = PyUnicode_FromString(dango_xfer_engine_segment_name(e));
    te_leave(self);
    return r;
}

static PyObject *te_get_engine(PyObject *self, PyObject *noargs)
{
    return PyLong_FromVoidPtr(TE(self)->eng);
}

/* ---------- memory ---------- */

static PyObject *te_alloc(PyObject *self, PyObject *arg)
{
    dango_xfer_engine_t *e;
    uint64_t             len;
    void                *addr = NULL;
    int                  rc;

    if (dpy_u64(arg, "length", &len) != 0) {
        return NULL;
    }

    e = te_enter(self);
    if ((e == NULL) || (len == 0) || (len > (uint64_t)PY_SSIZE_T_MAX)) {
        if (e != NULL) {
            te_leave(self);
        }

        return PyLong_FromLong(0);
    }

    Py_BEGIN_ALLOW_THREADS rc =
        dango_xfer_mem_alloc(e, (size_t)len, "*", DANGO_XFER_MEM_REMOTE, &addr);
    Py_END_ALLOW_THREADS if ((rc == 0) &&
                             (te_region_add(TE(self), (uintptr_t)addr,
                                            (size_t)len, 1) != 0))
    {
        dango_xfer_mem_free(e, addr);
        rc = DANGO_ENOMEM;
    }

    te_leave(self);
    return (rc == 0) ? PyLong_FromVoidPtr(addr) : PyLong_FromLong(0);
}

static PyObject *te_free(PyObject *self, PyObject *args, PyObject *kw)
{
    static char         *kwlist[] = {"buffer_addr", "length", NULL};
    PyObject            *ao, *lo = NULL;
    dango_xfer_engine_t *e;
    te_region_t         *r;
    uint64_t             addr, len;
    int                  rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O", kwlist, &ao, &lo) ||
        (dpy_u64(ao, "buffer_addr", &addr) != 0) ||
        ((lo != NULL) && (dpy_u64(lo, "length", &len) != 0))) {
        return NULL;
    }

    e = te_enter(self);
    if (e == NULL) {
        return PyLong_FromLong(TE_ERR_INVALID);
    }

    r = te_region_find(TE(self), (uintptr_t)addr);
    if ((r == NULL) || !r->managed) {
        te_leave(self);
        return PyLong_FromLong(TE_ERR_NOT_REG);
    }

    /* The region is dropped from the table (GIL held) before the memory
     * goes, so no write_bytes can copy into it meanwhile. */
    te_region_del(TE(self), r);
    Py_BEGIN_ALLOW_THREADS rc = dango_xfer_mem_free(e, (void *)(uintptr_t)addr);
    Py_END_ALLOW_THREADS   te_leave(self);
    return PyLong_FromLong(te_code(rc));
}

/* Registers one region; a Mooncake code, or -1 with an exception set when
 * *pyerr. */
static int te_register_one(PyObject *self, PyObject *ao, PyObject *lo,
                           const char *location, int *pyerr)
{
    dango_xfer_engine_t *e;
    PyObject            *mv = NULL, *key = NULL;
    dpy_mem_t            m;
    int                  rc;

    *pyerr = 0;
    if (dpy_mem_get(ao, lo, 0, &m) != 0) {
        *pyerr = 1;
        return -1;
    }

    e = te_enter(self);
    if (e == NULL) {
        dpy_mem_release(&m);
        return TE_ERR_INVALID;
    }

    if (!m.raw) {
        mv  = PyMemoryView_FromObject(ao);
        key = PyLong_FromVoidPtr(m.ptr);
        if ((mv == NULL) || (key == NULL)) {
            *pyerr = 1;
            rc     = -1;
            goto out;
        }
    }

    Py_BEGIN_ALLOW_THREADS rc = dango_xfer_mem_register(
        e, m.ptr, m.len, location, DANGO_XFER_MEM_REMOTE);
    Py_END_ALLOW_THREADS if (rc == 0)
    {
        if ((te_region_add(TE(self), (uintptr_t)m.ptr, m.len, 0) != 0) ||
            ((mv != NULL) && (PyDict_SetItem(TE(self)->held, key, mv) != 0))) {
            te_region_t *r = te_region_find(TE(self), (uintptr_t)m.ptr);

            if (r != NULL) {
                te_region_del(TE(self), r);
            }

            dango_xfer_mem_unregister(e, m.ptr);
            PyErr_NoMemory();
            *pyerr = 1;
            rc     = -1;
            goto out;
        }
    }

    rc = te_code(rc);
out:
    te_leave(self);
    Py_XDECREF(mv);
    Py_XDECREF(key);
    dpy_mem_release(&m);
    return rc;
}

static int te_unregister_one(PyObject *self, PyObject *ao, int *pyerr)
{
    dango_xfer_engine_t *e;
    te_region_t         *r;
    uint64_t             addr;
    dpy_mem_t            m;
    PyObject            *key;
    int                  rc;

    *pyerr = 0;
    if (PyLong_Check(ao)) {
        if (dpy_u64(ao, "buffer_addr", &addr) != 0) {
            *pyerr = 1;
            return -1;
        }
    } else {
        if (dpy_mem_get(ao, NULL, 0, &m) != 0) {
            *pyerr = 1;
            return -1;
        }

        addr = (uintptr_t)m.ptr;
        dpy_mem_release(&m);
    }

    e = te_enter(self);
    if (e == NULL) {
        return TE_ERR_INVALID;
    }

    r = te_region_find(TE(self), (uintptr_t)addr);
    if ((r != NULL) && r->managed) {
        te_leave(self);
        return TE_ERR_INVALID; /* free_managed_buffer() frees those */
    }

    if (r != NULL) {
        te_region_del(TE(self), r);
    }

    Py_BEGIN_ALLOW_THREADS rc =
        dango_xfer_mem_unregister(e, (void *)(uintptr_t)addr);
    Py_END_ALLOW_THREADS te_leave(self);
    key = PyLong_FromUnsignedLongLong(addr);
    if ((key == NULL) || (PyDict_DelItem(TE(self)->held, key) != 0)) {
        PyErr_Clear();
    }

    Py_XDECREF(key);
    return te_code(rc);
}

static PyObject *te_register_memory(PyObject *self, PyObject *args,
                                    PyObject *kw)
{
    static char *kwlist[] = {"buffer_addr", "capacity", "location", NULL};
    PyObject    *ao, *lo = NULL;
    const char  *loc = "*";
    int          pyerr, rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Os", kwlist, &ao, &lo,
                                     &loc)) {
        return NULL;
    }

    rc = te_register_one(self, ao, lo, loc, &pyerr);
    return pyerr ? NULL : PyLong_FromLong(rc);
}

static PyObject *te_unregister_memory(PyObject *self, PyObject *arg)
{
    int pyerr, rc = te_unregister_one(self, arg, &pyerr);

    return pyerr ? NULL : PyLong_FromLong(rc);
}

static PyObject *te_batch_register(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"buffer_addresses", "capacities", NULL};
    PyObject    *ao, *lo, *al = NULL, *ll = NULL;
    int          first = 0, pyerr;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO", kwlist, &ao, &lo) ||
        ((al = dpy_seq_list(ao, "buffer_addresses")) == NULL) ||
        ((ll = dpy_seq_list(lo, "capacities")) == NULL)) {
        Py_XDECREF(al);
        return NULL;
    }

    if (PyList_GET_SIZE(al) != PyList_GET_SIZE(ll)) {
        PyErr_SetString(PyExc_ValueError,
                        "addresses and capacities differ in length");
        goto err;
    }

    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(al); i++) {
        int rc = te_register_one(self, PyList_GET_ITEM(al, i),
                                 PyList_GET_ITEM(ll, i), "*", &pyerr);

        if (pyerr) {
            goto err;
        }

        if ((first == 0) && (rc != 0)) {
            first = rc;
        }
    }

    Py_DECREF(al);
    Py_DECREF(ll);
    return PyLong_FromLong(first);

err:
    Py_DECREF(al);
    Py_DECREF(ll);
    return NULL;
}

static PyObject *te_batch_unregister(PyObject *self, PyObject *arg)
{
    PyObject *al    = dpy_seq_list(arg, "buffer_addresses");
    int       first = 0, pyerr;

    if (al == NULL) {
        return NULL;
    }

    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(al); i++) {
        int rc = te_unregister_one(self, PyList_GET_ITEM(al, i), &pyerr);

        if (pyerr) {
            Py_DECREF(al);
            return NULL;
        }

        if ((first == 0) && (rc != 0)) {
            first = rc;
        }
    }

    Py_DECREF(al);
    return PyLong_FromLong(first);
}

static PyObject *te_write_bytes(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"dest_address", "src", "length", NULL};
    PyObject    *ao, *so, *lo = NULL;
    uint64_t     addr;
    dpy_mem_t    m;
    int          rc = TE_ERR_NOT_REG;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O", kwlist, &ao, &so, &lo) ||
        (dpy_u64(ao, "dest_address", &addr) != 0)) {
        return NULL;
    }

    if (PyLong_Check(so)) {
        PyErr_SetString(PyExc_TypeError, "src must be bytes-like");
        return NULL;
    }

    if (dpy_mem_get(so, lo, 0, &m) != 0) {
        return NULL;
    }

    /* Copied with the GIL held: the region table cannot change under it. */
    if ((TE(self)->eng != NULL) &&
        te_region_covers(TE(self), (uintptr_t)addr, m.len)) {
        memcpy((void *)(uintptr_t)addr, m.ptr, m.len);
        rc = 0;
    }

    dpy_mem_release(&m);
    return PyLong_FromLong(rc);
}

static PyObject *te_read_bytes(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"source_address", "length", NULL};
    PyObject    *ao, *lo;
    uint64_t     addr, len;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO", kwlist, &ao, &lo) ||
        (dpy_u64(ao, "source_address", &addr) != 0) ||
        (dpy_u64(lo, "length", &len) != 0)) {
        return NULL;
    }

    if ((TE(self)->eng == NULL) ||
        !te_region_covers(TE(self), (uintptr_t)addr, (size_t)len)) {
        PyErr_SetString(PyExc_ValueError,
                        "the range is not inside memory registered or "
                        "allocated by this engine");
        return NULL;
    }

    return PyBytes_FromStringAndSize((const char *)(uintptr_t)addr,
                                     (Py_ssize_t)len);
}

static PyObject *te_first_buffer(PyObject *self, PyObject *arg)
{
    dango_xfer_engine_t *e;
    dango_segment_id_t   seg;
    const char          *name;
    uint64_t             addr = 0, len;
    int                  rc;

    if (te_target(arg, &name) != 0) {
        return NULL;
    }

    e = te_enter(self);
    if (e == NULL) {
        return PyLong_FromLong(0);
    }

    Py_BEGIN_ALLOW_THREADS rc = dango_xfer_segment_open(e, name, &seg);
    if (rc == 0) {
        rc = dango_xfer_segment_buffer(e, seg, 0, &addr, &len);
    }
    Py_END_ALLOW_THREADS te_leave(self);
    return PyLong_FromUnsignedLongLong((rc == 0) ? addr : 0);
}

/* ---------- transfers ---------- */

static PyObject *te_sync_one(PyObject *self, PyObject *args, PyObject *kw,
                             int op)
{
    static char *kwlist[] = {"target_hostname", "buffer", "peer_buffer_address",
                             "length",          "opcode", NULL};
    PyObject    *to, *bo, *po, *lo, *oo = NULL, *bl, *pl, *ll;
    const char  *target;
    te_reqs_t    q;
    int          rc;
    uint64_t     opv = (uint64_t)op;

    if (!PyArg_ParseTupleAndKeywords(args, kw, (op < 0) ? "OOOOO" : "OOOO|O",
                                     kwlist, &to, &bo, &po, &lo, &oo) ||
        (te_target(to, &target) != 0)) {
        return NULL;
    }

    if ((op < 0) && ((dpy_u64(oo, "opcode", &opv) != 0) || (opv > 1))) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError,
                            "opcode must be a TransferOpcode");
        }
        return NULL;
    }

    bl = Py_BuildValue("[O]", bo);
    pl = Py_BuildValue("[O]", po);
    ll = Py_BuildValue("[O]", lo);
    rc = ((bl != NULL) && (pl != NULL) && (ll != NULL))
             ? te_reqs_get(bl, pl, ll, (dango_xfer_op_t)opv, &q)
             : -1;
    Py_XDECREF(bl);
    Py_XDECREF(pl);
    Py_XDECREF(ll);
    if (rc != 0) {
        return NULL;
    }

    Py_INCREF(to); /* keeps target alive while the GIL is released */
    rc = te_sync(self, target, &q);
    Py_DECREF(to);
    PyMem_Free(q.r);
    return PyLong_FromLong(rc);
}

static PyObject *te_sync_write(PyObject *self, PyObject *args, PyObject *kw)
{
    return te_sync_one(self, args, kw, DANGO_XFER_OP_WRITE);
}

static PyObject *te_sync_read(PyObject *self, PyObject *args, PyObject *kw)
{
    return te_sync_one(self, args, kw, DANGO_XFER_OP_READ);
}

static PyObject *te_sync_op(PyObject *self, PyObject *args, PyObject *kw)
{
    return te_sync_one(self, args, kw, -1);
}

enum { TE_SYNC, TE_ASYNC };

static PyObject *te_batch(PyObject *self, PyObject *args, PyObject *kw, int op,
                          int mode)
{
    static char *kwlist[] = {
        "target_hostname", "buffers", "peer_buffer_addresses",
        "lengths",         "opcode",  NULL};
    PyObject            *to, *bo, *po, *lo, *oo = NULL;
    const char          *target;
    dango_xfer_engine_t *e;
    dango_xfer_batch_t  *b = NULL;
    te_reqs_t            q;
    uint64_t             opv = (uint64_t)op;
    int                  rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, (op < 0) ? "OOOOO" : "OOOO|O",
                                     kwlist, &to, &bo, &po, &lo, &oo) ||
        (te_target(to, &target) != 0)) {
        return NULL;
    }

    if ((op < 0) && ((dpy_u64(oo, "opcode", &opv) != 0) || (opv > 1))) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError,
                            "opcode must be a TransferOpcode");
        }
        return NULL;
    }

    if (te_reqs_get(bo, po, lo, (dango_xfer_op_t)opv, &q) != 0) {
        return NULL;
    }

    Py_INCREF(to);
    if (mode == TE_SYNC) {
        rc = te_sync(self, target, &q);
        Py_DECREF(to);
        PyMem_Free(q.r);
        return PyLong_FromLong(rc);
    }

    e = te_enter(self);
    if (e == NULL) {
        rc = TE_ERR_INVALID;
    } else {
        Py_BEGIN_ALLOW_THREADS rc = te_submit(e, target, &q, &b);
        Py_END_ALLOW_THREADS if ((rc == 0) &&
                                 (te_grow((void **)&TE(self)->batches,
                                          &TE(self)->capbatches,
                                          TE(self)->nbatches,
                                          sizeof(te_batch_t)) != 0))
        {
            te_zombie(TE(self), b);
            rc = DANGO_ENOMEM;
        }

        if (rc == 0) {
            te_batch_t *ent = &TE(self)->batches[TE(self)->nbatches++];

            ent->id    = TE(self)->next_id++;
            ent->batch = b;
            ent->deadline_ns =
                now_ns() + (uint64_t)te_timeout_ms(q.bytes) * 1000000ull;
            rc  = 0;
            opv = ent->id;
        }

        te_leave(self);
    }

    Py_DECREF(to);
    PyMem_Free(q.r);
    /* Async ids: 0 is failure (transfer_submit_write reports -1). */
    return PyLong_FromUnsignedLongLong((rc == 0) ? opv : 0);
}

static PyObject *te_bsync_write(PyObject *self, PyObject *args, PyObject *kw)
{
    return te_batch(self, args, kw, DANGO_XFER_OP_WRITE, TE_SYNC);
}

static PyObject *te_bsync_read(PyObject *self, PyObject *args, PyObject *kw)
{
    return te_batch(self, args, kw, DANGO_XFER_OP_READ, TE_SYNC);
}

static PyObject *te_bsync(PyObject *self, PyObject *args, PyObject *kw)
{
    return te_batch(self, args, kw, -1, TE_SYNC);
}

static PyObject *te_basync_write(PyObject *self, PyObject *args, PyObject *kw)
{
    return te_batch(self, args, kw, DANGO_XFER_OP_WRITE, TE_ASYNC);
}

static PyObject *te_basync_read(PyObject *self, PyObject *args, PyObject *kw)
{
    return te_batch(self, args, kw, DANGO_XFER_OP_READ, TE_ASYNC);
}

static PyObject *te_basync(PyObject *self, PyObject *args, PyObject *kw)
{
    return te_batch(self, args, kw, -1, TE_ASYNC);
}

/* transfer_submit_write(target, buffer, peer_address, length) -> id | -1. */
static PyObject *te_submit_write(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"target_hostname", "buffer", "peer_buffer_address",
                             "length", NULL};
    PyObject    *to, *bo, *po, *lo, *a, *r;
    uint64_t     id;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO", kwlist, &to, &bo, &po,
                                     &lo)) {
        return NULL;
    }

    a = Py_BuildValue("(O[O][O][O])", to, bo, po, lo);
    if (a == NULL) {
        return NULL;
    }

    r = te_batch(self, a, NULL, DANGO_XFER_OP_WRITE, TE_ASYNC);
    Py_DECREF(a);
    if (r == NULL) {
        return NULL;
    }

    id = PyLong_AsUnsignedLongLong(r);
    if (id == 0) {
        Py_DECREF(r);
        return PyLong_FromLong(-1);
    }

    return r;
}

/* Takes batch @id out of the table (NULL: unknown id). */
static te_batch_t *te_take(dpy_engine_t *t, uint64_t id, te_batch_t *out)
{
    for (size_t i = 0; i < t->nbatches; i++) {
        if (t->batches[i].id == id) {
            *out          = t->batches[i];
            t->batches[i] = t->batches[--t->nbatches];
            return out;
        }
    }

    return NULL;
}

static PyObject *te_check_status(PyObject *self, PyObject *arg)
{
    dango_xfer_status_t st;
    te_batch_t          ent;
    uint64_t            id;

    if (dpy_u64(arg, "batch_id", &id) != 0) {
        return NULL;
    }

    if ((TE(self)->eng == NULL) || (te_take(TE(self), id, &ent) == NULL)) {
        return PyLong_FromLong(-1);
    }

    dango_xfer_batch_query(ent.batch, &st);
    if (st.state == DANGO_XFER_PENDING) {
        if (now_ns() < ent.deadline_ns) {
            /* Back in the table: still running. */
            TE(self)->batches[TE(self)->nbatches++] = ent;
            return PyLong_FromLong(0);
        }

        te_zombie(TE(self), ent.batch);
        return PyLong_FromLong(-2);
    }

    te_zombie(TE(self), ent.batch);
    return PyLong_FromLong((st.state == DANGO_XFER_COMPLETED) ? 1 : -1);
}

static PyObject *te_batch_status(PyObject *self, PyObject *arg)
{
    PyObject   *ids = dpy_seq_list(arg, "batch_ids");
    te_batch_t *ents;
    size_t      n, got = 0;
    int         failed = 0;

    if (ids == NULL) {
        return NULL;
    }

    n    = (size_t)PyList_GET_SIZE(ids);
    ents = PyMem_Calloc(n + 1, sizeof(*ents));
    if (ents == NULL) {
        Py_DECREF(ids);
        return PyErr_NoMemory();
    }

    for (size_t i = 0; i < n; i++) {
        uint64_t id;

        if (dpy_u64(PyList_GET_ITEM(ids, i), "batch_id", &id) != 0) {
            /* Put back what was taken. */
            for (size_t j = 0; j < got; j++) {
                TE(self)->batches[TE(self)->nbatches++] = ents[j];
            }

            PyMem_Free(ents);
            Py_DECREF(ids);
            return NULL;
        }

        if (te_take(TE(self), id, &ents[got]) != NULL) {
            got++;
        } else {
            failed = 1;
        }
    }

    Py_DECREF(ids);
    if ((got > 0) && (te_enter(self) != NULL)) {
        Py_BEGIN_ALLOW_THREADS for (size_t i = 0; i < got; i++)
        {
            uint64_t now = now_ns();
            int      ms  = (ents[i].deadline_ns > now)
                               ? (int)((ents[i].deadline_ns - now) / 1000000)
                               : 0;

            if (dango_xfer_batch_wait(ents[i].batch, ms) != 0) {
                failed = 1;
            }
        }
        Py_END_ALLOW_THREADS te_leave(self);
    } else if (got > 0) {
        failed = 1;
    }

    for (size_t i = 0; i < got; i++) {
        te_zombie(TE(self), ents[i].batch);
    }

    PyMem_Free(ents);
    return PyLong_FromLong(failed ? -1 : 0);
}

static PyObject *te_get_notifies(PyObject *self, PyObject *noargs)
{
    dango_xfer_engine_t *e = te_enter(self);
    dango_xfer_notify_t *buf;
    PyObject            *l = PyList_New(0);
    size_t               got;
    int                  rc;

    if ((e == NULL) || (l == NULL)) {
        if (e != NULL) {
            te_leave(self);
        }

        return l;
    }

    buf = PyMem_Malloc(TE_NOTIFY_BATCH * sizeof(*buf));
    if (buf == NULL) {
        te_leave(self);
        Py_DECREF(l);
        return PyErr_NoMemory();
    }

    /* Bounded: each round takes what is queued now; stop when empty. */
    for (int round = 0; round < 1024; round++) {
        Py_BEGIN_ALLOW_THREADS rc =
            dango_xfer_notify_recv(e, buf, TE_NOTIFY_BATCH, &got);
        Py_END_ALLOW_THREADS if ((rc != 0) || (got == 0))
        {
            break;
        }

        for (size_t i = 0; i < got; i++) {
            PyObject *n =
                PyObject_CallFunction(te_notify_type, "sy#", buf[i].from,
                                      buf[i].msg, (Py_ssize_t)buf[i].length);

            if ((n == NULL) || (PyList_Append(l, n) != 0)) {
                Py_XDECREF(n);
                Py_CLEAR(l);
                goto out;
            }

            Py_DECREF(n);
        }

        if (got < TE_NOTIFY_BATCH) {
            break;
        }
    }

out:
    PyMem_Free(buf);
    te_leave(self);
    return l;
}

#define TE_KW(_name, _fn, _doc)                                                \
    {                                                                          \
        _name, (PyCFunction)(void (*)(void))(_fn),                             \
            METH_VARARGS | METH_KEYWORDS, _doc                                 \
    }

static PyMethodDef te_methods[] = {
    TE_KW("initialize", te_initialize,
          "initialize(local_hostname, metadata_server, protocol='tcp', "
          "device_name='') -> 0 or -1"),
    {"close", te_close, METH_NOARGS,
     "close(): stops the engine (waits for transfers in flight)"},
    {"__enter__", te_ctx_enter, METH_NOARGS, NULL},
    {"__exit__", te_ctx_exit, METH_VARARGS, NULL},
    {"get_rpc_port", te_get_rpc_port, METH_NOARGS,
     "get_rpc_port() -> int: the port peers reach this engine on"},
    {"get_session_id", te_get_session_id, METH_NOARGS,
     "get_session_id() -> str: this engine's segment name"},
    {"get_engine", te_get_engine, METH_NOARGS,
     "get_engine() -> int: the engine handle (informational)"},
    {"allocate_managed_buffer", te_alloc, METH_O,
     "allocate_managed_buffer(length) -> address (0 on failure)"},
    TE_KW("free_managed_buffer", te_free,
          "free_managed_buffer(buffer_addr, length) -> 0 or < 0"),
    TE_KW("write_bytes_to_buffer", te_write_bytes,
          "write_bytes_to_buffer(dest_address, src, length) -> 0 or < 0"),
    TE_KW("read_bytes_from_buffer", te_read_bytes,
          "read_bytes_from_buffer(source_address, length) -> bytes"),
    TE_KW("register_memory", te_register_memory,
          "register_memory(buffer_addr, capacity, location='*') -> 0 or < 0"),
    {"unregister_memory", te_unregister_memory, METH_O,
     "unregister_memory(buffer_addr) -> 0 or < 0"},
    TE_KW("batch_register_memory", te_batch_register,
          "batch_register_memory(buffer_addresses, capacities) -> 0 or < 0"),
    {"batch_unregister_memory", te_batch_unregister, METH_O,
     "batch_unregister_memory(buffer_addresses) -> 0 or < 0"},
    {"get_first_buffer_address", te_first_buffer, METH_O,
     "get_first_buffer_address(segment_name) -> address (0 if none)"},
    TE_KW("transfer_sync_write", te_sync_write,
          "transfer_sync_write(target_hostname, buffer, peer_buffer_address, "
          "length) -> 0 or -1"),
    TE_KW("transfer_sync_read", te_sync_read,
          "transfer_sync_read(target_hostname, buffer, peer_buffer_address, "
          "length) -> 0 or -1"),
    TE_KW("transfer_sync", te_sync_op,
          "transfer_sync(target_hostname, buffer, peer_buffer_address, "
          "length, opcode) -> 0 or -1"),
    TE_KW("batch_transfer_sync_write", te_bsync_write,
          "batch_transfer_sync_write(target_hostname, buffers, "
          "peer_buffer_addresses, lengths) -> 0 or -1"),
    TE_KW("batch_transfer_sync_read", te_bsync_read,
          "batch_transfer_sync_read(target_hostname, buffers, "
          "peer_buffer_addresses, lengths) -> 0 or -1"),
    TE_KW("batch_transfer_sync", te_bsync,
          "batch_transfer_sync(target_hostname, buffers, "
          "peer_buffer_addresses, lengths, opcode) -> 0 or -1"),
    TE_KW("batch_transfer_async_write", te_basync_write,
          "batch_transfer_async_write(target_hostname, buffers, "
          "peer_buffer_addresses, lengths) -> batch id (0 on failure)"),
    TE_KW("batch_transfer_async_read", te_basync_read,
          "batch_transfer_async_read(target_hostname, buffers, "
          "peer_buffer_addresses, lengths) -> batch id (0 on failure)"),
    TE_KW("batch_transfer_async", te_basync,
          "batch_transfer_async(target_hostname, buffers, "
          "peer_buffer_addresses, lengths, opcode) -> batch id"),
    {"get_batch_transfer_status", te_batch_status, METH_O,
     "get_batch_transfer_status(batch_ids) -> 0 when all completed, else "
     "-1; waits, then frees the batches"},
    TE_KW("transfer_submit_write", te_submit_write,
          "transfer_submit_write(target_hostname, buffer, "
          "peer_buffer_address, length) -> batch id or -1"),
    {"transfer_check_status", te_check_status, METH_O,
     "transfer_check_status(batch_id) -> 1 done, 0 running, -1 failed, -2 "
     "timed out (the batch is freed once not 0)"},
    {"get_notifies", te_get_notifies, METH_NOARGS,
     "get_notifies() -> [TransferNotify(name, msg)]"},
    {NULL, NULL, 0, NULL}};

static PyTypeObject te_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dango.engine.TransferEngine",
    .tp_basicsize                          = sizeof(dpy_engine_t),
    .tp_flags   = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc     = "TransferEngine(): Mooncake's transfer engine API on Dango. "
                  "Call initialize() first.",
    .tp_new     = te_new,
    .tp_dealloc = te_dealloc,
    .tp_methods = te_methods,
    .tp_weaklistoffset = offsetof(dpy_engine_t, weakrefs),
};

int dpy_engine_init(PyObject *mod)
{
    static const char *const names[] = {"READ", "WRITE", "Read", "Write"};
    static const int         vals[]  = {DANGO_XFER_OP_READ, DANGO_XFER_OP_WRITE,
                                        DANGO_XFER_OP_READ, DANGO_XFER_OP_WRITE};
    PyObject                *op, *coll;

    if (PyType_Ready(&te_type) != 0) {
        return -1;
    }

    Py_INCREF(&te_type);
    if (PyModule_AddObject(mod, "TransferEngine", (PyObject *)&te_type) != 0) {
        Py_DECREF(&te_type);
        return -1;
    }

    /* READ/WRITE as in the spec, Read/Write (aliases) as pybind spells. */
    op = dpy_int_enum("dango.engine", "TransferOpcode", names, vals, 4);
    if ((op == NULL) || (PyModule_AddObject(mod, "TransferOpcode", op) != 0)) {
        Py_XDECREF(op);
        return -1;
    }

    coll           = PyImport_ImportModule("collections");
    te_notify_type = (coll != NULL)
                         ? PyObject_CallMethod(coll, "namedtuple", "ss",
                                               "TransferNotify", "name msg")
                         : NULL;
    Py_XDECREF(coll);
    if (te_notify_type == NULL) {
        return -1;
    }

    if (PyObject_SetAttrString(te_notify_type, "__module__",
                               PyUnicode_FromString("dango.engine")) != 0) {
        return -1;
    }

    Py_INCREF(te_notify_type);
    if ((PyModule_AddObject(mod, "TransferNotify", te_notify_type) != 0) ||
        (PyModule_AddStringConstant(mod, "P2PHANDSHAKE",
                                    DANGO_XFER_P2PHANDSHAKE) != 0)) {
        return -1;
    }

    return 0;
}
