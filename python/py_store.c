/*
 * `dango.store`: the state both store classes share and the native class,
 * DistributedStore.
 *
 * Both classes wrap one dango_store_client_t. Every library call runs with
 * the GIL released, between dpy_guard_enter() and dpy_guard_leave(), so
 * many Python threads may call into one store at once and close() (or the
 * object's collection) waits for the calls in flight before it destroys the
 * client. Arguments are converted and checked with the GIL held, before the
 * call: keys are copied out of the caller's lists (which may change while
 * the GIL is released) and buffers are held through their Py_buffer views
 * for the duration of the call.
 *
 * Memory: an object with the buffer protocol may be any memory (the library
 * stages it or registers it for the call); a raw address (an int) must lie
 * inside memory registered with register_buffer(), which the library checks
 * (DANGO_ENOTREG), so a bad address is an error code and never a read of
 * unmapped memory. Objects registered through register_buffer() are held
 * (a memoryview of each) until unregistered or the store closes.
 *
 * DistributedStore raises DangoError for library failures; the Mooncake
 * class (py_store_mc.c) returns Mooncake's numbers instead.
 */
/* Python.h first: it sets macros the C library headers read. */
#include "py_store.h"

#include <string.h>
#include <unistd.h>

/* ---------- shared state ---------- */

int dpy_mc_code(dango_store_client_t *c, int err)
{
    if (err >= 0) {
        return err;
    }

    /* As mooncake_store_*(): a node that vanished mid-transfer and an
     * unreachable master both read DANGO_EPEER_GONE; the ping tells. */
    if ((err == DANGO_EPEER_GONE) && (c != NULL) &&
        (dango_store_health(c) == 0)) {
        return MOONCAKE_ERR_TRANSFER_FAIL;
    }

    return mooncake_store_errno(err);
}

const char *dpy_store_default_name(char *buf, size_t len)
{
    static unsigned made; /* clients created here; the GIL guards it */
    char            host[200];

    if ((getenv("DANGO_XFER_SEGMENT_NAME") != NULL) || (made++ == 0)) {
        return NULL;
    }

    if (gethostname(host, sizeof(host)) != 0) {
        snprintf(host, sizeof(host), "localhost");
    }

    host[sizeof(host) - 1] = '\0';
    snprintf(buf, len, "%s:%d.%u", host, (int)getpid(), made - 1);
    return buf;
}

void dpy_store_init_obj(dpy_store_t *s)
{
    s->client = NULL;
    dpy_guard_init(&s->guard);
}

int dpy_store_open(dpy_store_t *s, const dango_store_params_t *p,
                   const dango_config_t *cfg)
{
    dango_store_client_t *c = NULL;
    int                   rc;

    if (s->regs == NULL) {
        s->regs = PyDict_New();
        if (s->regs == NULL) {
            return DANGO_ENOMEM;
        }
    }

    Py_BEGIN_ALLOW_THREADS rc = dango_store_client_create(p, cfg, &c);
    Py_END_ALLOW_THREADS if (rc != 0)
    {
        return rc;
    }

    s->client = c;
    dpy_guard_reopen(&s->guard);
    return 0;
}

void dpy_store_close(dpy_store_t *s)
{
    dango_store_client_t *c = s->client;

    if (c == NULL) {
        return;
    }

    /* No new call sees the client from here; wait for those in flight. */
    s->client = NULL;
    dpy_guard_drain(&s->guard);
    Py_BEGIN_ALLOW_THREADS dango_store_client_destroy(c);
    Py_END_ALLOW_THREADS if (s->regs != NULL)
    {
        PyDict_Clear(s->regs);
    }
}

void dpy_store_dealloc(PyObject *self)
{
    dpy_store_t *s = (dpy_store_t *)self;

    if (s->weakrefs != NULL) {
        PyObject_ClearWeakRefs(self);
    }

    dpy_store_close(s);
    dpy_guard_cleanup(&s->guard);
    Py_CLEAR(s->regs);
    Py_TYPE(self)->tp_free(self);
}

int dpy_store_register(dpy_store_t *s, PyObject *obj, PyObject *size,
                       int *pyerr)
{
    dango_store_client_t *c  = s->client;
    PyObject             *mv = NULL, *key = NULL;
    dpy_mem_t             m;
    int                   rc;

    *pyerr = 0;
    if (dpy_mem_get(obj, size, 0, &m) != 0) {
        *pyerr = 1;
        return -1;
    }

    if (dpy_guard_enter(&s->guard, c != NULL) != 0) {
        dpy_mem_release(&m);
        return DANGO_ESTATE;
    }

    if (!m.raw) {
        /* Keep the exporter alive (and its size fixed) while registered. */
        mv  = PyMemoryView_FromObject(obj);
        key = PyLong_FromVoidPtr(m.ptr);
        if ((mv == NULL) || (key == NULL)) {
            rc     = -1;
            *pyerr = 1;
            goto out;
        }
    }

    Py_BEGIN_ALLOW_THREADS rc = dango_store_register_buffer(c, m.ptr, m.len);
    Py_END_ALLOW_THREADS if ((rc == 0) && (mv != NULL) &&
                             (PyDict_SetItem(s->regs, key, mv) != 0))
    {
        /* Keep the registration consistent with what we hold. */
        Py_BEGIN_ALLOW_THREADS dango_store_unregister_buffer(c, m.ptr);
        Py_END_ALLOW_THREADS   rc = -1;
        *pyerr                    = 1;
    }

out:
    dpy_guard_leave(&s->guard);
    Py_XDECREF(mv);
    Py_XDECREF(key);
    dpy_mem_release(&m);
    return rc;
}

int dpy_store_unregister(dpy_store_t *s, PyObject *obj, int *pyerr)
{
    dango_store_client_t *c = s->client;
    PyObject             *key;
    void                 *ptr;
    dpy_mem_t             m;
    int                   rc;

    *pyerr = 0;
    if (PyLong_Check(obj)) {
        uint64_t addr;

        if (dpy_u64(obj, "address", &addr) != 0) {
            *pyerr = 1;
            return -1;
        }

        ptr = (void *)(uintptr_t)addr;
    } else {
        if (dpy_mem_get(obj, NULL, 0, &m) != 0) {
            *pyerr = 1;
            return -1;
        }

        ptr = m.ptr;
        dpy_mem_release(&m);
    }

    if (dpy_guard_enter(&s->guard, c != NULL) != 0) {
        return DANGO_ESTATE;
    }

    Py_BEGIN_ALLOW_THREADS rc = dango_store_unregister_buffer(c, ptr);
    Py_END_ALLOW_THREADS   dpy_guard_leave(&s->guard);
    if (rc == 0) {
        key = PyLong_FromVoidPtr(ptr);
        if ((key == NULL) || (PyDict_DelItem(s->regs, key) != 0)) {
            /* Registered as a raw address: nothing held. */
            PyErr_Clear();
        }
        Py_XDECREF(key);
    }

    return rc;
}

int dpy_store_get_bytes(dpy_store_t *s, const char *key, PyObject **out)
{
    dango_store_client_t *c = s->client;
    void                 *val;
    size_t                len;
    int                   rc;

    if (dpy_guard_enter(&s->guard, c != NULL) != 0) {
        return DANGO_ESTATE;
    }

    Py_BEGIN_ALLOW_THREADS rc = dango_store_get_alloc(c, key, &val, &len);
    Py_END_ALLOW_THREADS   dpy_guard_leave(&s->guard);
    if (rc != 0) {
        return rc;
    }

    *out = PyBytes_FromStringAndSize(val, (Py_ssize_t)len);
    dango_store_free(val);
    return (*out != NULL) ? 0 : DANGO_ENOMEM;
}

/* ---------- DistributedStore ---------- */

#define NS(_self) ((dpy_store_t *)(_self))

/* The client for a call, or NULL with ValueError (closed). */
static dango_store_client_t *ns_enter(PyObject *self)
{
    dango_store_client_t *c = NS(self)->client;

    if (dpy_guard_enter(&NS(self)->guard, c != NULL) != 0) {
        PyErr_SetString(PyExc_ValueError, "the store is closed");
        return NULL;
    }

    return c;
}

static void ns_leave(PyObject *self)
{
    dpy_guard_leave(&NS(self)->guard);
}

static PyObject *ns_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    dpy_store_t *s = (dpy_store_t *)type->tp_alloc(type, 0);

    if (s != NULL) {
        dpy_store_init_obj(s);
    }

    return (PyObject *)s;
}

/* Applies an options dict {"STORE_RPC_TIMEOUT": "5s", ...} to @cfg. */
static int ns_options(PyObject *opts, dango_config_t **cfg_p)
{
    Py_ssize_t pos = 0;
    PyObject  *k, *v;
    int        rc;

    *cfg_p = NULL;
    if ((opts == NULL) || (opts == Py_None)) {
        return 0;
    }

    if (!PyDict_Check(opts)) {
        PyErr_SetString(PyExc_TypeError, "options must be a dict");
        return -1;
    }

    rc = dango_config_read(NULL, cfg_p);
    if (rc != 0) {
        dpy_raise(rc, "reading DANGO_CONFIG_FILE");
        return -1;
    }

    while (PyDict_Next(opts, &pos, &k, &v)) {
        PyObject   *vs;
        const char *name, *val;

        if (!PyUnicode_Check(k)) {
            PyErr_SetString(PyExc_TypeError, "option names must be str");
            goto err;
        }

        vs = PyObject_Str(v);
        if (vs == NULL) {
            goto err;
        }

        name = PyUnicode_AsUTF8(k);
        val  = PyUnicode_AsUTF8(vs);
        rc   = ((name != NULL) && (val != NULL))
                   ? dango_config_set(*cfg_p, name, val)
                   : DANGO_EINVAL;
        Py_DECREF(vs);
        if (PyErr_Occurred()) {
            goto err;
        }

        if (rc != 0) {
            PyErr_Format(PyExc_ValueError, "option %s=%S: %s", name, v,
                         dango_strerror(rc));
            goto err;
        }
    }

    return 0;

err:
    dango_config_release(*cfg_p);
    *cfg_p = NULL;
    return -1;
}

static int ns_str_param(PyObject *o, const char *what, const char **out,
                        uint64_t *mask, uint64_t bit)
{
    if ((o == NULL) || (o == Py_None)) {
        return 0;
    }

    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str", what);
        return -1;
    }

    *out = PyUnicode_AsUTF8(o);
    if (*out == NULL) {
        return -1;
    }

    *mask |= bit;
    return 0;
}

static int ns_init(PyObject *self, PyObject *args, PyObject *kw)
{
    static char         *kwlist[] = {"master",     "metadata",     "local_name",
                                     "listen",     "segment_size", "local_buffer_size",
                                     "transports", "options",      NULL};
    PyObject            *master = NULL, *md = NULL, *name = NULL;
    PyObject            *listen = NULL, *seg = NULL, *lbuf = NULL;
    PyObject            *tps = NULL, *opts = NULL;
    dango_store_params_t p;
    dango_config_t      *cfg = NULL;
    char                 name_buf[256];
    int                  rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OO$OOOOOO", kwlist, &master,
                                     &md, &name, &listen, &seg, &lbuf, &tps,
                                     &opts)) {
        return -1;
    }

    if (NS(self)->client != NULL) {
        PyErr_SetString(PyExc_ValueError, "the store is already open");
        return -1;
    }

    memset(&p, 0, sizeof(p));
    if ((ns_str_param(master, "master", &p.master_addr, &p.field_mask,
                      DANGO_STORE_PARAM_MASTER) != 0) ||
        (ns_str_param(md, "metadata", &p.metadata, &p.field_mask,
                      DANGO_STORE_PARAM_METADATA) != 0) ||
        (ns_str_param(name, "local_name", &p.local_name, &p.field_mask,
                      DANGO_STORE_PARAM_LOCAL_NAME) != 0) ||
        (ns_str_param(listen, "listen", &p.listen_addr, &p.field_mask,
                      DANGO_STORE_PARAM_LISTEN) != 0) ||
        (ns_str_param(tps, "transports", &p.transports, &p.field_mask,
                      DANGO_STORE_PARAM_TRANSPORTS) != 0)) {
        return -1;
    }

    if ((seg != NULL) && (seg != Py_None)) {
        if (dpy_size(seg, "segment_size", &p.segment_size) != 0) {
            return -1;
        }

        p.field_mask |= DANGO_STORE_PARAM_SEGMENT_SIZE;
    }

    if ((lbuf != NULL) && (lbuf != Py_None)) {
        if (dpy_size(lbuf, "local_buffer_size", &p.local_buffer_size) != 0) {
            return -1;
        }

        p.field_mask |= DANGO_STORE_PARAM_BUFFER_SIZE;
    }

    if (!(p.field_mask & DANGO_STORE_PARAM_LOCAL_NAME) &&
        (dpy_store_default_name(name_buf, sizeof(name_buf)) != NULL)) {
        p.field_mask |= DANGO_STORE_PARAM_LOCAL_NAME;
        p.local_name = name_buf;
    }

    if (ns_options(opts, &cfg) != 0) {
        return -1;
    }

    rc = dpy_store_open(NS(self), &p, cfg);
    dango_config_release(cfg);
    if (rc != 0) {
        dpy_raise(rc, "creating the store client");
        return -1;
    }

    return 0;
}

static PyObject *ns_close(PyObject *self, PyObject *noargs)
{
    dpy_store_close(NS(self));
    Py_RETURN_NONE;
}

static PyObject *ns_enter_ctx(PyObject *self, PyObject *noargs)
{
    if (NS(self)->client == NULL) {
        PyErr_SetString(PyExc_ValueError, "the store is closed");
        return NULL;
    }

    return Py_NewRef(self);
}

static PyObject *ns_exit_ctx(PyObject *self, PyObject *args)
{
    dpy_store_close(NS(self));
    Py_RETURN_FALSE;
}

static PyObject *ns_get_closed(PyObject *self, void *unused)
{
    return PyBool_FromLong(NS(self)->client == NULL);
}

static PyObject *ns_get_name(PyObject *self, void *unused)
{
    dango_store_client_t *c = ns_enter(self);
    PyObject             *r;

    if (c == NULL) {
        return NULL;
    }

    r = PyUnicode_FromString(dango_store_client_name(c));
    ns_leave(self);
    return r;
}

static PyObject *ns_health(PyObject *self, PyObject *noargs)
{
    dango_store_client_t *c = ns_enter(self);
    int                   rc;

    if (c == NULL) {
        return NULL;
    }

    Py_BEGIN_ALLOW_THREADS rc = dango_store_health(c);
    Py_END_ALLOW_THREADS   ns_leave(self);
    return PyBool_FromLong(rc == 0);
}

/* config=ReplicateConfig or ReplicateConfig keyword arguments. */
static int ns_cfg(PyObject *config, PyObject *kw, dpy_cfg_t *c)
{
    PyObject *made, *empty;
    int       rc;

    if ((kw == NULL) || (PyDict_GET_SIZE(kw) == 0)) {
        return dpy_cfg_get(config, c);
    }

    if ((config != NULL) && (config != Py_None)) {
        PyErr_SetString(PyExc_TypeError,
                        "give config= or its fields as keywords, not both");
        return -1;
    }

    empty = PyTuple_New(0);
    if (empty == NULL) {
        return -1;
    }

    made = PyObject_Call((PyObject *)&dpy_replicate_config_type, empty, kw);
    Py_DECREF(empty);
    if (made == NULL) {
        return -1;
    }

    rc = dpy_cfg_get(made, c);
    Py_DECREF(made);
    return rc;
}

/* Splits (args, kw) into @n leading arguments and the rest of kw. */
static int ns_split(PyObject *args, PyObject *kw, const char *const *names,
                    int n_req, int n_max, PyObject **out, PyObject **rest)
{
    Py_ssize_t na = PyTuple_GET_SIZE(args);

    *rest = NULL;
    if (na > n_max) {
        PyErr_Format(PyExc_TypeError, "takes at most %d positional arguments",
                     n_max);
        return -1;
    }

    for (int i = 0; i < n_max; i++) {
        out[i] = (i < na) ? PyTuple_GET_ITEM(args, i) : NULL;
    }

    if (kw != NULL) {
        *rest = PyDict_Copy(kw);
        if (*rest == NULL) {
            return -1;
        }

        for (int i = 0; i < n_max; i++) {
            PyObject *v = PyDict_GetItemString(*rest, names[i]);

            if (v == NULL) {
                continue;
            }

            if (out[i] != NULL) {
                PyErr_Format(PyExc_TypeError, "%s given twice", names[i]);
                Py_CLEAR(*rest);
                return -1;
            }

            out[i] = v;
            Py_INCREF(v); /* kept alive by args' owner after the delete */
            PyDict_DelItemString(*rest, names[i]);
            Py_DECREF(v);
        }
    }

    for (int i = 0; i < n_req; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "missing argument '%s'", names[i]);
            Py_XDECREF(*rest);
            *rest = NULL;
            return -1;
        }
    }

    return 0;
}

/* put / upsert / put_from share one body. */
enum { NS_PUT, NS_UPSERT, NS_PUT_FROM };

static PyObject *ns_put_common(PyObject *self, PyObject *args, PyObject *kw,
                               int mode)
{
    static const char *const names_from[] = {"key", "value", "size", "config"};
    static const char *const names_put[]  = {"key", "value", "config"};
    PyObject                *a[4]         = {NULL}, *rest;
    const char              *key;
    PyObject                *kref = NULL;
    dango_store_client_t    *c;
    dpy_cfg_t                cfg;
    dpy_mem_t                m;
    int                      rc, res = 0;

    if (mode == NS_PUT_FROM) {
        if (ns_split(args, kw, names_from, 2, 4, a, &rest) != 0) {
            return NULL;
        }
    } else {
        if (ns_split(args, kw, names_put, 2, 3, a, &rest) != 0) {
            return NULL;
        }

        a[3] = a[2];
        a[2] = NULL;
    }

    if (dpy_key(a[0], &key, &kref) != 0) {
        Py_XDECREF(rest);
        return NULL;
    }

    if (ns_cfg(a[3], rest, &cfg) != 0) {
        Py_XDECREF(rest);
        Py_DECREF(kref);
        return NULL;
    }

    Py_XDECREF(rest);
    if (dpy_mem_get(a[1], a[2], 0, &m) != 0) {
        goto err_cfg;
    }

    c = ns_enter(self);
    if (c == NULL) {
        goto err_mem;
    }

    Py_BEGIN_ALLOW_THREADS if (mode == NS_UPSERT)
    {
        if (m.raw) {
            const dango_store_iov_t  iov = {m.ptr, m.len};
            const dango_store_iov_t *pp  = &iov;
            size_t                   np  = 1;

            rc = dango_store_batch_put_parts(
                c, 1, &key, &pp, &np,
                DANGO_STORE_REGISTERED | DANGO_STORE_UPSERT, cfg.p, &res);
            rc = (rc != 0) ? rc : res;
        } else {
            rc = dango_store_upsert(c, key, m.ptr, m.len, cfg.p);
        }
    }
    else if (m.raw)
    {
        rc = dango_store_put_from(c, key, m.ptr, m.len, cfg.p);
    }
    else
    {
        rc = dango_store_put(c, key, m.ptr, m.len, cfg.p);
    }
    Py_END_ALLOW_THREADS ns_leave(self);
    dpy_mem_release(&m);
    dpy_cfg_release(&cfg);
    if (rc != 0) {
        PyObject *r = dpy_raise(rc, key);

        Py_DECREF(kref);
        return r;
    }

    Py_DECREF(kref);
    Py_RETURN_NONE;

err_mem:
    dpy_mem_release(&m);
err_cfg:
    dpy_cfg_release(&cfg);
    Py_DECREF(kref);
    return NULL;
}

static PyObject *ns_put(PyObject *self, PyObject *args, PyObject *kw)
{
    return ns_put_common(self, args, kw, NS_PUT);
}

static PyObject *ns_upsert(PyObject *self, PyObject *args, PyObject *kw)
{
    return ns_put_common(self, args, kw, NS_UPSERT);
}

static PyObject *ns_put_from(PyObject *self, PyObject *args, PyObject *kw)
{
    return ns_put_common(self, args, kw, NS_PUT_FROM);
}

static PyObject *ns_get(PyObject *self, PyObject *arg)
{
    const char *key;
    PyObject   *kref, *out = NULL;
    int         rc;

    if (dpy_key(arg, &key, &kref) != 0) {
        return NULL;
    }

    rc = dpy_store_get_bytes(NS(self), key, &out);
    if (rc == DANGO_ESTATE) {
        PyErr_SetString(PyExc_ValueError, "the store is closed");
    } else if (rc != 0) {
        dpy_raise(rc, key);
    }

    Py_DECREF(kref);
    return (rc == 0) ? out : NULL;
}

static PyObject *ns_get_buffer(PyObject *self, PyObject *arg)
{
    dango_store_client_t *c;
    const char           *key;
    PyObject             *kref, *r;
    void                 *val;
    size_t                len;
    int                   rc;

    if (dpy_key(arg, &key, &kref) != 0) {
        return NULL;
    }

    c = ns_enter(self);
    if (c == NULL) {
        Py_DECREF(kref);
        return NULL;
    }

    Py_BEGIN_ALLOW_THREADS rc = dango_store_get_alloc(c, key, &val, &len);
    Py_END_ALLOW_THREADS   ns_leave(self);
    r = (rc == 0) ? dpy_buffer_handle_new(val, len) : dpy_raise(rc, key);
    Py_DECREF(kref);
    return r;
}

static PyObject *ns_get_into(PyObject *self, PyObject *args, PyObject *kw)
{
    static char          *kwlist[] = {"key", "buffer", "size", NULL};
    PyObject             *ko, *bo, *so = NULL, *kref;
    const char           *key;
    dango_store_client_t *c;
    dpy_mem_t             m;
    int64_t               n;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O", kwlist, &ko, &bo, &so)) {
        return NULL;
    }

    if (dpy_key(ko, &key, &kref) != 0) {
        return NULL;
    }

    if (dpy_mem_get(bo, so, 1, &m) != 0) {
        Py_DECREF(kref);
        return NULL;
    }

    c = ns_enter(self);
    if (c == NULL) {
        dpy_mem_release(&m);
        Py_DECREF(kref);
        return NULL;
    }

    Py_BEGIN_ALLOW_THREADS n =
        m.raw ? dango_store_get_into(c, key, m.ptr, m.len)
              : dango_store_get(c, key, m.ptr, m.len, NULL);
    Py_END_ALLOW_THREADS ns_leave(self);
    dpy_mem_release(&m);
    if (n < 0) {
        dpy_raise((int)n, key);
        Py_DECREF(kref);
        return NULL;
    }

    Py_DECREF(kref);
    return PyLong_FromLongLong(n);
}

/* ---------- batches ---------- */

int dpy_mems_get(PyObject *bufs, PyObject *sizes, size_t n, int writable,
                 dpy_mems_t *ms)
{
    PyObject *bl = NULL, *sl = NULL;

    memset(ms, 0, sizeof(*ms));
    bl = dpy_seq_list(bufs, "buffers");
    if (bl == NULL) {
        return -1;
    }

    if ((sizes != NULL) && (sizes != Py_None)) {
        sl = dpy_seq_list(sizes, "sizes");
        if (sl == NULL) {
            goto err;
        }

        if ((size_t)PyList_GET_SIZE(sl) != n) {
            PyErr_SetString(PyExc_ValueError,
                            "sizes must have one entry per key");
            goto err;
        }
    }

    if ((size_t)PyList_GET_SIZE(bl) != n) {
        PyErr_SetString(PyExc_ValueError,
                        "buffers must have one entry per key");
        goto err;
    }

    ms->m    = PyMem_Calloc(n + 1, sizeof(*ms->m));
    ms->ptrs = PyMem_Calloc(n + 1, sizeof(*ms->ptrs));
    ms->lens = PyMem_Calloc(n + 1, sizeof(*ms->lens));
    if ((ms->m == NULL) || (ms->ptrs == NULL) || (ms->lens == NULL)) {
        PyErr_NoMemory();
        goto err;
    }

    for (size_t i = 0; i < n; i++) {
        if (dpy_mem_get(PyList_GET_ITEM(bl, i),
                        (sl != NULL) ? PyList_GET_ITEM(sl, i) : NULL, writable,
                        &ms->m[i]) != 0) {
            goto err;
        }

        ms->n++;
        ms->ptrs[i] = ms->m[i].ptr;
        ms->lens[i] = ms->m[i].len;
        ms->any_raw |= ms->m[i].raw;
    }

    Py_DECREF(bl);
    Py_XDECREF(sl);
    return 0;

err:
    Py_DECREF(bl);
    Py_XDECREF(sl);
    dpy_mems_release(ms);
    return -1;
}

void dpy_mems_release(dpy_mems_t *ms)
{
    for (size_t i = 0; i < ms->n; i++) {
        dpy_mem_release(&ms->m[i]);
    }

    PyMem_Free(ms->m);
    PyMem_Free(ms->ptrs);
    PyMem_Free(ms->lens);
    memset(ms, 0, sizeof(*ms));
}

/* Per-key results: None, or a DangoError instance (not raised). */
static PyObject *ns_results(const int64_t *res, size_t n, int value,
                            const dpy_keys_t *k)
{
    PyObject *l = PyList_New((Py_ssize_t)n);

    for (size_t i = 0; (l != NULL) && (i < n); i++) {
        PyObject *x;

        if (res[i] < 0) {
            x = dpy_error_new((int)res[i], k->keys[i]);
        } else if (value) {
            x = PyLong_FromLongLong(res[i]);
        } else {
            x = Py_NewRef(Py_None);
        }

        if (x == NULL) {
            Py_CLEAR(l);
            break;
        }

        PyList_SET_ITEM(l, (Py_ssize_t)i, x);
    }

    return l;
}

static PyObject *ns_batch_put(PyObject *self, PyObject *args, PyObject *kw,
                              int from)
{
    static const char *const names[] = {"keys", "values", "sizes", "config"};
    static const char *const names_put[] = {"keys", "values", "config"};
    PyObject                *a[4] = {NULL}, *rest, *r = NULL;
    dango_store_client_t    *c;
    dpy_keys_t               k;
    dpy_mems_t               ms;
    dpy_cfg_t                cfg;
    int                     *res;
    int64_t                 *res64;
    int                      rc;

    if (from) {
        if (ns_split(args, kw, names, 2, 4, a, &rest) != 0) {
            return NULL;
        }
    } else {
        if (ns_split(args, kw, names_put, 2, 3, a, &rest) != 0) {
            return NULL;
        }

        a[3] = a[2];
        a[2] = NULL;
    }

    if (dpy_keys_get(a[0], DANGO_STORE_BATCH_MAX, &k) != 0) {
        Py_XDECREF(rest);
        return NULL;
    }

    if (ns_cfg(a[3], rest, &cfg) != 0) {
        Py_XDECREF(rest);
        dpy_keys_release(&k);
        return NULL;
    }

    Py_XDECREF(rest);
    if (dpy_mems_get(a[1], a[2], k.n, 0, &ms) != 0) {
        goto out_cfg;
    }

    if (k.n == 0) {
        r = PyList_New(0);
        goto out_mems;
    }

    res   = PyMem_Calloc(k.n, sizeof(*res));
    res64 = PyMem_Calloc(k.n, sizeof(*res64));
    if ((res == NULL) || (res64 == NULL)) {
        PyMem_Free(res);
        PyMem_Free(res64);
        PyErr_NoMemory();
        goto out_mems;
    }

    c = ns_enter(self);
    if (c != NULL) {
        Py_BEGIN_ALLOW_THREADS rc =
            dango_store_batch_put(c, k.n, k.keys, (const void *const *)ms.ptrs,
                                  ms.lens, ms.any_raw, cfg.p, res);
        Py_END_ALLOW_THREADS ns_leave(self);
        if (rc != 0) {
            dpy_raise(rc, "batch put");
        } else {
            for (size_t i = 0; i < k.n; i++) {
                res64[i] = res[i];
            }

            r = ns_results(res64, k.n, 0, &k);
        }
    }

    PyMem_Free(res);
    PyMem_Free(res64);
out_mems:
    dpy_mems_release(&ms);
out_cfg:
    dpy_cfg_release(&cfg);
    dpy_keys_release(&k);
    return r;
}

static PyObject *ns_batch_put_values(PyObject *self, PyObject *args,
                                     PyObject *kw)
{
    return ns_batch_put(self, args, kw, 0);
}

static PyObject *ns_batch_put_from(PyObject *self, PyObject *args, PyObject *kw)
{
    return ns_batch_put(self, args, kw, 1);
}

static PyObject *ns_batch_get_into(PyObject *self, PyObject *args, PyObject *kw)
{
    static char          *kwlist[] = {"keys", "buffers", "sizes", NULL};
    PyObject             *ko, *bo, *so = NULL, *r = NULL;
    dango_store_client_t *c;
    dpy_keys_t            k;
    dpy_mems_t            ms;
    int64_t              *res;
    int                   rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O", kwlist, &ko, &bo, &so)) {
        return NULL;
    }

    if (dpy_keys_get(ko, DANGO_STORE_BATCH_MAX, &k) != 0) {
        return NULL;
    }

    if (dpy_mems_get(bo, so, k.n, 1, &ms) != 0) {
        dpy_keys_release(&k);
        return NULL;
    }

    if (k.n == 0) {
        r = PyList_New(0);
        goto out;
    }

    res = PyMem_Calloc(k.n, sizeof(*res));
    if (res == NULL) {
        PyErr_NoMemory();
        goto out;
    }

    c = ns_enter(self);
    if (c != NULL) {
        Py_BEGIN_ALLOW_THREADS rc = dango_store_batch_get(
            c, k.n, k.keys, ms.ptrs, ms.lens, ms.any_raw, res);
        Py_END_ALLOW_THREADS ns_leave(self);
        r = (rc != 0) ? dpy_raise(rc, "batch get")
                      : ns_results(res, k.n, 1, &k);
    }

    PyMem_Free(res);
out:
    dpy_mems_release(&ms);
    dpy_keys_release(&k);
    return r;
}

static PyObject *ns_batch_get(PyObject *self, PyObject *arg)
{
    dpy_keys_t k;
    PyObject  *l;

    if (dpy_keys_get(arg, 0, &k) != 0) {
        return NULL;
    }

    l = PyList_New((Py_ssize_t)k.n);
    for (size_t i = 0; (l != NULL) && (i < k.n); i++) {
        PyObject *x  = NULL;
        int       rc = dpy_store_get_bytes(NS(self), k.keys[i], &x);

        if (rc == DANGO_ESTATE) {
            PyErr_SetString(PyExc_ValueError, "the store is closed");
            Py_CLEAR(l);
            break;
        }

        if (rc != 0) {
            x = dpy_error_new(rc, k.keys[i]);
        }

        if (x == NULL) {
            Py_CLEAR(l);
            break;
        }

        PyList_SET_ITEM(l, (Py_ssize_t)i, x);
    }

    dpy_keys_release(&k);
    return l;
}

/* ---------- queries and removal ---------- */

static PyObject *ns_exists(PyObject *self, PyObject *arg)
{
    dango_store_client_t *c;
    const char           *key;
    PyObject             *kref;
    int                   rc;

    if (dpy_key(arg, &key, &kref) != 0) {
        return NULL;
    }

    c = ns_enter(self);
    if (c == NULL) {
        Py_DECREF(kref);
        return NULL;
    }

    Py_BEGIN_ALLOW_THREADS rc = dango_store_exist(c, key);
    Py_END_ALLOW_THREADS   ns_leave(self);
    Py_DECREF(kref);
    if (rc < 0) {
        return dpy_raise(rc, "exists");
    }

    return PyBool_FromLong(rc == 1);
}

static PyObject *ns_batch_exists(PyObject *self, PyObject *arg)
{
    dango_store_client_t *c;
    dpy_keys_t            k;
    PyObject             *l = NULL;
    int                  *res;
    int                   rc;

    if (dpy_keys_get(arg, DANGO_STORE_BATCH_MAX, &k) != 0) {
        return NULL;
    }

    if (k.n == 0) {
        dpy_keys_release(&k);
        return PyList_New(0);
    }

    res = PyMem_Calloc(k.n, sizeof(*res));
    c   = (res != NULL) ? ns_enter(self) : NULL;
    if (res == NULL) {
        PyErr_NoMemory();
    }

    if (c != NULL) {
        Py_BEGIN_ALLOW_THREADS rc =
            dango_store_batch_exist(c, k.n, k.keys, res);
        Py_END_ALLOW_THREADS ns_leave(self);
        if (rc != 0) {
            dpy_raise(rc, "batch exists");
        } else {
            l = PyList_New((Py_ssize_t)k.n);
            for (size_t i = 0; (l != NULL) && (i < k.n); i++) {
                PyObject *x = (res[i] < 0) ? dpy_error_new(res[i], k.keys[i])
                                           : PyBool_FromLong(res[i] == 1);

                if (x == NULL) {
                    Py_CLEAR(l);
                    break;
                }

                PyList_SET_ITEM(l, (Py_ssize_t)i, x);
            }
        }
    }

    PyMem_Free(res);
    dpy_keys_release(&k);
    return l;
}

static PyObject *ns_size(PyObject *self, PyObject *arg)
{
    dango_store_client_t *c;
    const char           *key;
    PyObject             *kref;
    int64_t               n;

    if (dpy_key(arg, &key, &kref) != 0) {
        return NULL;
    }

    c = ns_enter(self);
    if (c == NULL) {
        Py_DECREF(kref);
        return NULL;
    }

    Py_BEGIN_ALLOW_THREADS n = dango_store_size(c, key);
    Py_END_ALLOW_THREADS   ns_leave(self);
    if (n < 0) {
        dpy_raise((int)n, key);
        Py_DECREF(kref);
        return NULL;
    }

    Py_DECREF(kref);
    return PyLong_FromLongLong(n);
}

static PyObject *ns_remove(PyObject *self, PyObject *args, PyObject *kw)
{
    static char          *kwlist[] = {"key", "force", NULL};
    PyObject             *ko, *kref;
    const char           *key;
    dango_store_client_t *c;
    int                   force = 0, rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|p", kwlist, &ko, &force)) {
        return NULL;
    }

    if (dpy_key(ko, &key, &kref) != 0) {
        return NULL;
    }

    c = ns_enter(self);
    if (c == NULL) {
        Py_DECREF(kref);
        return NULL;
    }

    Py_BEGIN_ALLOW_THREADS rc = dango_store_remove(c, key, force);
    Py_END_ALLOW_THREADS   ns_leave(self);
    if (rc != 0) {
        dpy_raise(rc, key);
        Py_DECREF(kref);
        return NULL;
    }

    Py_DECREF(kref);
    Py_RETURN_NONE;
}

static PyObject *ns_batch_remove(PyObject *self, PyObject *args, PyObject *kw)
{
    static char          *kwlist[] = {"keys", "force", NULL};
    PyObject             *ko, *r = NULL;
    dango_store_client_t *c;
    dpy_keys_t            k;
    int                  *res;
    int64_t              *res64;
    int                   force = 0, rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|p", kwlist, &ko, &force) ||
        (dpy_keys_get(ko, DANGO_STORE_BATCH_MAX, &k) != 0)) {
        return NULL;
    }

    if (k.n == 0) {
        dpy_keys_release(&k);
        return PyList_New(0);
    }

    res   = PyMem_Calloc(k.n, sizeof(*res));
    res64 = PyMem_Calloc(k.n, sizeof(*res64));
    c     = ((res != NULL) && (res64 != NULL)) ? ns_enter(self) : NULL;
    if ((res == NULL) || (res64 == NULL)) {
        PyErr_NoMemory();
    }

    if (c != NULL) {
        Py_BEGIN_ALLOW_THREADS rc =
            dango_store_batch_remove(c, k.n, k.keys, force, res);
        Py_END_ALLOW_THREADS ns_leave(self);
        if (rc != 0) {
            dpy_raise(rc, "batch remove");
        } else {
            for (size_t i = 0; i < k.n; i++) {
                res64[i] = res[i];
            }

            r = ns_results(res64, k.n, 0, &k);
        }
    }

    PyMem_Free(res);
    PyMem_Free(res64);
    dpy_keys_release(&k);
    return r;
}

static PyObject *ns_remove_match(PyObject *self, PyObject *args, PyObject *kw,
                                 int all)
{
    static char          *kw_re[]  = {"regex", "force", NULL};
    static char          *kw_all[] = {"force", NULL};
    const char           *re       = NULL;
    dango_store_client_t *c;
    int                   force = 0;
    int64_t               n;

    if (all ? !PyArg_ParseTupleAndKeywords(args, kw, "|p", kw_all, &force)
            : !PyArg_ParseTupleAndKeywords(args, kw, "s|p", kw_re, &re,
                                           &force)) {
        return NULL;
    }

    c = ns_enter(self);
    if (c == NULL) {
        return NULL;
    }

    Py_BEGIN_ALLOW_THREADS n = all ? dango_store_remove_all(c, force)
                                   : dango_store_remove_by_regex(c, re, force);
    Py_END_ALLOW_THREADS   ns_leave(self);
    if (n < 0) {
        return dpy_raise((int)n, all ? "remove_all" : re);
    }

    return PyLong_FromLongLong(n);
}

static PyObject *ns_remove_by_regex(PyObject *self, PyObject *args,
                                    PyObject *kw)
{
    return ns_remove_match(self, args, kw, 0);
}

static PyObject *ns_remove_all(PyObject *self, PyObject *args, PyObject *kw)
{
    return ns_remove_match(self, args, kw, 1);
}

static PyObject *ns_register(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"buffer", "size", NULL};
    PyObject    *bo, *so = NULL;
    int          pyerr, rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O", kwlist, &bo, &so)) {
        return NULL;
    }

    rc = dpy_store_register(NS(self), bo, so, &pyerr);
    if (pyerr) {
        return NULL;
    }

    if (rc == DANGO_ESTATE) {
        PyErr_SetString(PyExc_ValueError, "the store is closed");
        return NULL;
    }

    if (rc != 0) {
        return dpy_raise(rc, "register_buffer");
    }

    Py_RETURN_NONE;
}

static PyObject *ns_unregister(PyObject *self, PyObject *arg)
{
    int pyerr, rc = dpy_store_unregister(NS(self), arg, &pyerr);

    if (pyerr) {
        return NULL;
    }

    if (rc == DANGO_ESTATE) {
        PyErr_SetString(PyExc_ValueError, "the store is closed");
        return NULL;
    }

    if (rc != 0) {
        return dpy_raise(rc, "unregister_buffer");
    }

    Py_RETURN_NONE;
}

static PyObject *ns_stat(PyObject *self, PyObject *arg)
{
    dango_store_object_info_t info;
    dango_store_client_t     *c;
    const char               *key;
    PyObject                 *kref, *reps, *r;
    int                       rc;

    if (dpy_key(arg, &key, &kref) != 0) {
        return NULL;
    }

    c = ns_enter(self);
    if (c == NULL) {
        Py_DECREF(kref);
        return NULL;
    }

    Py_BEGIN_ALLOW_THREADS rc = dango_store_stat(c, key, &info);
    Py_END_ALLOW_THREADS   ns_leave(self);
    if (rc != 0) {
        dpy_raise(rc, key);
        Py_DECREF(kref);
        return NULL;
    }

    Py_DECREF(kref);
    reps = dpy_replica_descs(&info);
    if (reps == NULL) {
        return NULL;
    }

    r = Py_BuildValue("{s:K,s:K,s:K,s:O,s:K,s:N,s:O}", "size",
                      (unsigned long long)info.size, "checksum",
                      (unsigned long long)info.checksum, "lease_ms_left",
                      (unsigned long long)info.lease_ms_left, "hard_pinned",
                      info.hard_pinned ? Py_True : Py_False, "soft_pin_ms_left",
                      (unsigned long long)info.soft_pin_ms_left, "replicas",
                      reps, "on_disk", info.on_disk ? Py_True : Py_False);
    return r;
}

static PyObject *ns_pool_stat(PyObject *self, PyObject *noargs)
{
    dango_store_pool_info_t info;
    dango_store_client_t   *c = ns_enter(self);
    int                     rc;

    if (c == NULL) {
        return NULL;
    }

    Py_BEGIN_ALLOW_THREADS rc = dango_store_pool_stat(c, &info);
    Py_END_ALLOW_THREADS   ns_leave(self);
    if (rc != 0) {
        return dpy_raise(rc, "pool_stat");
    }

    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K}",
                         "capacity", (unsigned long long)info.capacity, "used",
                         (unsigned long long)info.used, "keys",
                         (unsigned long long)info.keys, "segments",
                         (unsigned long long)info.segments, "clients",
                         (unsigned long long)info.clients, "evicted_keys",
                         (unsigned long long)info.evicted_keys, "disk_capacity",
                         (unsigned long long)info.disk_capacity, "disk_used",
                         (unsigned long long)info.disk_used, "disk_keys",
                         (unsigned long long)info.disk_keys, "disk_offloads",
                         (unsigned long long)info.disk_offloads, "disk_loads",
                         (unsigned long long)info.disk_loads, "disk_promotions",
                         (unsigned long long)info.disk_promotions);
}

/* Keys collected by dango_store_list() with the GIL released. */
typedef struct ns_list {
    char    **keys;
    uint64_t *sizes;
    size_t    n, cap;
    int       oom;
} ns_list_t;

static int ns_list_cb(void *arg, const char *key, uint64_t size)
{
    ns_list_t *l = arg;

    if (l->n == l->cap) {
        size_t    cap = (l->cap == 0) ? 256 : l->cap * 2;
        char    **k   = realloc(l->keys, cap * sizeof(*k));
        uint64_t *s;

        if (k == NULL) {
            l->oom = 1;
            return 1;
        }

        l->keys = k;
        s       = realloc(l->sizes, cap * sizeof(*s));
        if (s == NULL) {
            l->oom = 1;
            return 1;
        }

        l->sizes = s;
        l->cap   = cap;
    }

    l->keys[l->n] = strdup(key);
    if (l->keys[l->n] == NULL) {
        l->oom = 1;
        return 1;
    }

    l->sizes[l->n++] = size;
    return 0;
}

static PyObject *ns_list_keys(PyObject *self, PyObject *args, PyObject *kw)
{
    static char          *kwlist[] = {"prefix", NULL};
    const char           *prefix   = "";
    ns_list_t             l        = {0};
    dango_store_client_t *c;
    PyObject             *r = NULL;
    int                   rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "|s", kwlist, &prefix)) {
        return NULL;
    }

    c = ns_enter(self);
    if (c == NULL) {
        return NULL;
    }

    Py_BEGIN_ALLOW_THREADS rc = dango_store_list(c, prefix, ns_list_cb, &l);
    Py_END_ALLOW_THREADS   ns_leave(self);
    if (l.oom) {
        PyErr_NoMemory();
    } else if (rc != 0) {
        dpy_raise(rc, "list_keys");
    } else {
        r = PyList_New((Py_ssize_t)l.n);
        for (size_t i = 0; (r != NULL) && (i < l.n); i++) {
            PyObject *t = Py_BuildValue("(sK)", l.keys[i],
                                        (unsigned long long)l.sizes[i]);

            if (t == NULL) {
                Py_CLEAR(r);
                break;
            }

            PyList_SET_ITEM(r, (Py_ssize_t)i, t);
        }
    }

    for (size_t i = 0; i < l.n; i++) {
        free(l.keys[i]);
    }

    free(l.keys);
    free(l.sizes);
    return r;
}

static PyMethodDef ns_methods[] = {
    {"close", ns_close, METH_NOARGS,
     "close(): unmounts the segment and frees the client (waits for calls "
     "in flight)."},
    {"__enter__", ns_enter_ctx, METH_NOARGS, NULL},
    {"__exit__", ns_exit_ctx, METH_VARARGS, NULL},
    {"health", ns_health, METH_NOARGS,
     "health() -> bool: the master answered the last ping."},
    {"put", (PyCFunction)(void (*)(void))ns_put, METH_VARARGS | METH_KEYWORDS,
     "put(key, value, config=None, **replicate) -> None\n\n"
     "Stores a copy of value (any buffer). DangoError DANGO_EOBJ_EXISTS "
     "when the key exists; replicate keywords are those of "
     "ReplicateConfig."},
    {"upsert", (PyCFunction)(void (*)(void))ns_upsert,
     METH_VARARGS | METH_KEYWORDS,
     "upsert(key, value, config=None, **replicate) -> None: put that "
     "replaces an existing object atomically for readers."},
    {"put_from", (PyCFunction)(void (*)(void))ns_put_from,
     METH_VARARGS | METH_KEYWORDS,
     "put_from(key, buffer, size=None, config=None) -> None: put from a "
     "buffer or a registered address (no intermediate copy)."},
    {"get", ns_get, METH_O,
     "get(key) -> bytes. ObjectNotFoundError (a KeyError) on a miss."},
    {"get_buffer", ns_get_buffer, METH_O,
     "get_buffer(key) -> BufferHandle: the value in Dango-owned memory."},
    {"get_into", (PyCFunction)(void (*)(void))ns_get_into,
     METH_VARARGS | METH_KEYWORDS,
     "get_into(key, buffer, size=None) -> int: copies the value into a "
     "writable buffer or registered address; the bytes copied."},
    {"batch_put", (PyCFunction)(void (*)(void))ns_batch_put_values,
     METH_VARARGS | METH_KEYWORDS,
     "batch_put(keys, values, config=None) -> list: None or a DangoError "
     "per key."},
    {"batch_put_from", (PyCFunction)(void (*)(void))ns_batch_put_from,
     METH_VARARGS | METH_KEYWORDS,
     "batch_put_from(keys, buffers, sizes=None, config=None) -> list: "
     "None or a DangoError per key."},
    {"batch_get", ns_batch_get, METH_O,
     "batch_get(keys) -> list: bytes or a DangoError per key."},
    {"batch_get_into", (PyCFunction)(void (*)(void))ns_batch_get_into,
     METH_VARARGS | METH_KEYWORDS,
     "batch_get_into(keys, buffers, sizes=None) -> list: bytes copied or a "
     "DangoError per key."},
    {"exists", ns_exists, METH_O, "exists(key) -> bool"},
    {"batch_exists", ns_batch_exists, METH_O,
     "batch_exists(keys) -> list of bool (or DangoError)"},
    {"size", ns_size, METH_O, "size(key) -> int: value bytes"},
    {"remove", (PyCFunction)(void (*)(void))ns_remove,
     METH_VARARGS | METH_KEYWORDS, "remove(key, force=False) -> None"},
    {"batch_remove", (PyCFunction)(void (*)(void))ns_batch_remove,
     METH_VARARGS | METH_KEYWORDS,
     "batch_remove(keys, force=False) -> list: None or a DangoError per "
     "key."},
    {"remove_by_regex", (PyCFunction)(void (*)(void))ns_remove_by_regex,
     METH_VARARGS | METH_KEYWORDS,
     "remove_by_regex(regex, force=False) -> int: objects removed (POSIX "
     "extended regex)."},
    {"remove_all", (PyCFunction)(void (*)(void))ns_remove_all,
     METH_VARARGS | METH_KEYWORDS,
     "remove_all(force=False) -> int: objects removed."},
    {"register_buffer", (PyCFunction)(void (*)(void))ns_register,
     METH_VARARGS | METH_KEYWORDS,
     "register_buffer(buffer, size=None) -> None: registers a buffer "
     "object (held until unregistered) or an address with size."},
    {"unregister_buffer", ns_unregister, METH_O,
     "unregister_buffer(buffer_or_address) -> None"},
    {"stat", ns_stat, METH_O,
     "stat(key) -> dict: size, checksum, leases, pins and replicas."},
    {"pool_stat", ns_pool_stat, METH_NOARGS,
     "pool_stat() -> dict: capacity, used, keys, segments, clients, "
     "evicted_keys, and the nodes' disk tiers: disk_capacity, disk_used, "
     "disk_keys, disk_offloads, disk_loads, disk_promotions."},
    {"list_keys", (PyCFunction)(void (*)(void))ns_list_keys,
     METH_VARARGS | METH_KEYWORDS,
     "list_keys(prefix='') -> list of (key, size)"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef ns_getset[] = {
    {"closed", ns_get_closed, NULL, "True once closed", NULL},
    {"name", ns_get_name, NULL, "this client's segment name", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

PyTypeObject dpy_native_store_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dango.store.DistributedStore",
    .tp_basicsize                          = sizeof(dpy_store_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc =
        "DistributedStore(master=None, metadata=None, *, local_name=None, "
        "listen=None, segment_size=None, local_buffer_size=None, "
        "transports=None, options=None)\n\n"
        "A client of the Dango store. Arguments left out take the library "
        "defaults and DANGO_* variables (DANGO_STORE_MASTER, "
        "DANGO_XFER_METADATA, ...); sizes may be strings such as '64MB'; "
        "options is a dict of any Dango option ({'STORE_RPC_TIMEOUT': "
        "'5s'}). Failures raise DangoError; use it as a context manager.",
    .tp_new            = ns_new,
    .tp_init           = ns_init,
    .tp_dealloc        = dpy_store_dealloc,
    .tp_methods        = ns_methods,
    .tp_getset         = ns_getset,
    .tp_weaklistoffset = offsetof(dpy_store_t, weakrefs),
};

/* ---------- module ---------- */

int dpy_store_init(PyObject *mod)
{
    PyTypeObject *types[] = {&dpy_native_store_type, &dpy_mc_store_type};
    const char   *names[] = {"DistributedStore", "MooncakeDistributedStore"};

    if (dpy_store_types_init(mod) != 0) {
        return -1;
    }

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(types); i++) {
        if (PyType_Ready(types[i]) != 0) {
            return -1;
        }

        Py_INCREF(types[i]);
        if (PyModule_AddObject(mod, names[i], (PyObject *)types[i]) != 0) {
            Py_DECREF(types[i]);
            return -1;
        }
    }

    Py_INCREF(dpy_error_type);
    Py_INCREF(dpy_not_found_type);
    if ((PyModule_AddObject(mod, "DangoError", dpy_error_type) != 0) ||
        (PyModule_AddObject(mod, "ObjectNotFoundError", dpy_not_found_type) !=
         0)) {
        return -1;
    }

    return 0;
}
