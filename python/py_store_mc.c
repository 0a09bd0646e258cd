/*
 * `dango.store.MooncakeDistributedStore`: the store behind Mooncake's
 * Python method names, arguments and return conventions (spec store.md
 * §7.1), so integration code written for `mooncake.store` runs unchanged.
 *
 * Conventions, as Mooncake's binding:
 *   - integers are 0, a count or a byte count on success and Mooncake's
 *     negative ErrorCode on failure (store.md §9), translated by the table
 *     of the Mooncake C API (dpy_mc_code); a put of an existing key is 0;
 *   - get / get_batch give b"" on a miss or an error; get_buffer None;
 *   - is_exist gives 1, 0 or a negative code; health_check 0, 1 (not set
 *     up) or 2 (master unreachable);
 *   - batch calls give one entry per key;
 *   - before setup() or after close(): -1 (b"", None, [] as fits).
 * Arguments of the wrong type raise TypeError and impossible values
 * (negative sizes, a size larger than the buffer given) ValueError, before
 * any call.
 *
 * setup() takes Mooncake's seven positional arguments (and its keywords),
 * or one dict whose sizes may be strings ("16MB", "16 MB"), or nothing (the
 * JSON file named by MOONCAKE_CONFIG_PATH, then the environment). What is
 * left out comes from MOONCAKE_* variables, then DANGO_* variables, then
 * Mooncake's defaults: master 127.0.0.1:50051, metadata
 * http://127.0.0.1:8080/metadata, protocol tcp, 16 MiB segment and buffer.
 */
/* Python.h first: it sets macros the C library headers read. */
#include "py_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dango/xfer.h>

#define MC(_self)   ((dpy_store_t *)(_self))
#define MC_BAD      (-1)
#define MC_DEF_SIZE (16ull << 20)

/* The client for a call, or NULL (not set up or closed). */
static dango_store_client_t *mc_enter(PyObject *self)
{
    dango_store_client_t *c = MC(self)->client;

    return (dpy_guard_enter(&MC(self)->guard, c != NULL) == 0) ? c : NULL;
}

static void mc_leave(PyObject *self)
{
    dpy_guard_leave(&MC(self)->guard);
}

static PyObject *mc_int(int v)
{
    return PyLong_FromLong(v);
}

static PyObject *mc_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    dpy_store_t *s = (dpy_store_t *)type->tp_alloc(type, 0);

    if (s != NULL) {
        dpy_store_init_obj(s);
    }

    return (PyObject *)s;
}

/* ---------- setup ---------- */

static const char *const setup_names[] = {"local_hostname",
                                          "metadata_server",
                                          "global_segment_size",
                                          "local_buffer_size",
                                          "protocol",
                                          "rdma_devices",
                                          "master_server_addr",
                                          "engine",
                                          "enable_ssd_offload",
                                          "ssd_offload_path",
                                          "tenant_id",
                                          "enable_client_http_server",
                                          "client_http_port",
                                          NULL};

/* Other spellings seen in Mooncake's config files and callers. */
static const char *setup_alias(const char *name)
{
    if (!strcmp(name, "device_name")) {
        return "rdma_devices";
    }

    if (!strcmp(name, "master_server_address")) {
        return "master_server_addr";
    }

    return name;
}

static int setup_known(const char *name)
{
    for (int i = 0; setup_names[i] != NULL; i++) {
        if (!strcmp(setup_names[i], name)) {
            return 1;
        }
    }

    return 0;
}

/* Reads the JSON file named by MOONCAKE_CONFIG_PATH (NULL: none). */
static PyObject *setup_config_file(void)
{
    const char *path = getenv("MOONCAKE_CONFIG_PATH");
    PyObject   *json, *io, *f, *d;

    if ((path == NULL) || (path[0] == '\0')) {
        return PyDict_New();
    }

    io = PyImport_ImportModule("io");
    if (io == NULL) {
        return NULL;
    }

    f = PyObject_CallMethod(io, "open", "ss", path, "r");
    Py_DECREF(io);
    if (f == NULL) {
        return NULL;
    }

    json = PyImport_ImportModule("json");
    d    = (json != NULL) ? PyObject_CallMethod(json, "load", "O", f) : NULL;
    Py_XDECREF(json);
    Py_XDECREF(PyObject_CallMethod(f, "close", NULL));
    Py_DECREF(f);
    if ((d != NULL) && !PyDict_Check(d)) {
        PyErr_Format(PyExc_ValueError, "%s: not a JSON object", path);
        Py_CLEAR(d);
    }

    return d;
}

/* The setup arguments as one dict of canonical names. */
static PyObject *setup_dict(PyObject *args, PyObject *kw)
{
    Py_ssize_t na = PyTuple_GET_SIZE(args), pos = 0;
    PyObject  *d, *src, *k, *v;

    if ((na == 0) && ((kw == NULL) || (PyDict_GET_SIZE(kw) == 0))) {
        src = setup_config_file();
    } else if ((na == 1) && PyDict_Check(PyTuple_GET_ITEM(args, 0)) &&
               ((kw == NULL) || (PyDict_GET_SIZE(kw) == 0))) {
        src = Py_NewRef(PyTuple_GET_ITEM(args, 0));
    } else {
        src = NULL;
    }

    d = PyDict_New();
    if (d == NULL) {
        Py_XDECREF(src);
        return NULL;
    }

    if (src != NULL) {
        /* The dict form: unknown keys (Mooncake's other options) are
         * accepted and left alone. */
        while (PyDict_Next(src, &pos, &k, &v)) {
            if (!PyUnicode_Check(k)) {
                PyErr_SetString(PyExc_TypeError, "config keys must be str");
                goto err;
            }

            if (PyDict_SetItemString(d, setup_alias(PyUnicode_AsUTF8(k)), v) !=
                0) {
                goto err;
            }
        }

        Py_DECREF(src);
        return d;
    }

    if (PyErr_Occurred()) {
        goto err;
    }

    if (na > 13) {
        PyErr_SetString(PyExc_TypeError, "setup() takes at most 13 arguments");
        goto err;
    }

    for (Py_ssize_t i = 0; i < na; i++) {
        if (PyDict_SetItemString(d, setup_names[i],
                                 PyTuple_GET_ITEM(args, i)) != 0) {
            goto err;
        }
    }

    while ((kw != NULL) && PyDict_Next(kw, &pos, &k, &v)) {
        const char *name = setup_alias(PyUnicode_AsUTF8(k));

        if (!setup_known(name)) {
            PyErr_Format(PyExc_TypeError,
                         "setup() got an unexpected keyword argument '%U'", k);
            goto err;
        }

        if (PyDict_GetItemString(d, name) != NULL) {
            PyErr_Format(PyExc_TypeError, "setup() got two values for '%s'",
                         name);
            goto err;
        }

        if (PyDict_SetItemString(d, name, v) != 0) {
            goto err;
        }
    }

    return d;

err:
    Py_XDECREF(src);
    Py_DECREF(d);
    return NULL;
}

/*
 * One string setting: the dict's value, else the first variable of @envs
 * that is set, else NULL when @dango_env is set (the library reads it),
 * else @def. -1 with TypeError for a value that is not a str.
 */
static int setup_str(PyObject *d, const char *name, const char *const *envs,
                     const char *dango_env, const char *def, const char **out)
{
    PyObject *v = PyDict_GetItemString(d, name);

    if ((v != NULL) && (v != Py_None)) {
        if (!PyUnicode_Check(v)) {
            PyErr_Format(PyExc_TypeError, "%s must be a str, not %.100s", name,
                         Py_TYPE(v)->tp_name);
            return -1;
        }

        *out = PyUnicode_AsUTF8(v);
        return (*out != NULL) ? 0 : -1;
    }

    for (; (envs != NULL) && (*envs != NULL); envs++) {
        const char *e = getenv(*envs);

        if ((e != NULL) && (e[0] != '\0')) {
            *out = e;
            return 0;
        }
    }

    *out = ((dango_env != NULL) && (getenv(dango_env) != NULL)) ? NULL : def;
    return 0;
}

/* One size setting, as setup_str(); *set = 0 leaves it to the library. */
static int setup_size(PyObject *d, const char *name, const char *env,
                      const char *dango_env, uint64_t *out, int *set)
{
    PyObject   *v = PyDict_GetItemString(d, name);
    const char *e = getenv(env);
    size_t      sz;

    *set = 1;
    if ((v != NULL) && (v != Py_None)) {
        return dpy_size(v, name, out);
    }

    if ((e != NULL) && (e[0] != '\0')) {
        if (dango_parse_size(e, &sz) != 0) {
            PyErr_Format(PyExc_ValueError, "%s=%s is not a size", env, e);
            return -1;
        }

        *out = sz;
        return 0;
    }

    if (getenv(dango_env) != NULL) {
        *set = 0;
        return 0;
    }

    *out = MC_DEF_SIZE;
    return 0;
}

static PyObject *mc_setup(PyObject *self, PyObject *args, PyObject *kw)
{
    static const char *const env_host[]   = {"MOONCAKE_LOCAL_HOSTNAME", NULL};
    static const char *const env_md[]     = {"MOONCAKE_TE_META_DATA_SERVER",
                                             "MC_METADATA_SERVER", NULL};
    static const char *const env_master[] = {"MOONCAKE_MASTER",
                                             "MC_MASTER_SERVER", NULL};
    static const char *const env_proto[]  = {"MOONCAKE_PROTOCOL", NULL};
    const char              *host, *md, *master, *proto;
    dango_store_params_t     p;
    PyObject                *d, *v;
    char                     listen[300], name_buf[256];
    int                      set, rc;

    d = setup_dict(args, kw);
    if (d == NULL) {
        return NULL;
    }

    memset(&p, 0, sizeof(p));
    if ((setup_str(d, "local_hostname", env_host, NULL, "localhost", &host) !=
         0) ||
        (setup_str(d, "metadata_server", env_md, "DANGO_XFER_METADATA",
                   "http://127.0.0.1:8080/metadata", &md) != 0) ||
        (setup_str(d, "master_server_addr", env_master, "DANGO_STORE_MASTER",
                   "127.0.0.1:50051", &master) != 0) ||
        (setup_str(d, "protocol", env_proto, "DANGO_XFER_TRANSPORTS", "tcp",
                   &proto) != 0)) {
        goto err;
    }

    if (setup_size(d, "global_segment_size", "MOONCAKE_GLOBAL_SEGMENT_SIZE",
                   "DANGO_STORE_SEGMENT_SIZE", &p.segment_size, &set) != 0) {
        goto err;
    }

    p.field_mask |= set ? DANGO_STORE_PARAM_SEGMENT_SIZE : 0;
    if (setup_size(d, "local_buffer_size", "MOONCAKE_LOCAL_BUFFER_SIZE",
                   "DANGO_STORE_LOCAL_BUFFER_SIZE", &p.local_buffer_size,
                   &set) != 0) {
        goto err;
    }

    p.field_mask |= set ? DANGO_STORE_PARAM_BUFFER_SIZE : 0;
    v = PyDict_GetItemString(d, "enable_ssd_offload");
    if ((v != NULL) && (PyObject_IsTrue(v) == 1)) {
        /* No disk tier in this store: say so instead of ignoring it. */
        Py_DECREF(d);
        return mc_int(MOONCAKE_ERR_NOT_SUPPORTED);
    }

    if ((MC(self)->client != NULL) || (host[0] == '\0') ||
        ((md != NULL) && (md[0] == '\0'))) {
        Py_DECREF(d);
        return mc_int(MC_BAD);
    }

    if (proto != NULL) {
        /* As mooncake_store_setup(): tcp between hosts, shared memory on
         * one; no other transport is built. */
        if ((proto[0] != '\0') && strcmp(proto, "tcp") &&
            strcmp(proto, "shm")) {
            Py_DECREF(d);
            return mc_int(MOONCAKE_ERR_UNAVAILABLE_IN_CURRENT_MODE);
        }

        p.field_mask |= DANGO_STORE_PARAM_TRANSPORTS;
        p.transports = "shm,tcp";
    }

    /* "host" listens on any port of host; "host:port" on that port and
     * names the segment (a P2P name is the listen address anyway). */
    snprintf(listen, sizeof(listen),
             (strchr(host, ':') != NULL) ? "%s" : "%s:0", host);
    p.field_mask |= DANGO_STORE_PARAM_LISTEN;
    p.listen_addr = listen;
    if (md != NULL) {
        p.field_mask |= DANGO_STORE_PARAM_METADATA;
        p.metadata = md;
        if ((strchr(host, ':') != NULL) &&
            (strcmp(md, DANGO_XFER_P2PHANDSHAKE) != 0)) {
            p.field_mask |= DANGO_STORE_PARAM_LOCAL_NAME;
            p.local_name = host;
        }
    }

    if (!(p.field_mask & DANGO_STORE_PARAM_LOCAL_NAME) &&
        (dpy_store_default_name(name_buf, sizeof(name_buf)) != NULL)) {
        p.field_mask |= DANGO_STORE_PARAM_LOCAL_NAME;
        p.local_name = name_buf;
    }

    if (master != NULL) {
        p.field_mask |= DANGO_STORE_PARAM_MASTER;
        p.master_addr = master;
    }

    rc = dpy_store_open(MC(self), &p, NULL);
    Py_DECREF(d);
    return mc_int(dpy_mc_code(NULL, rc));

err:
    Py_DECREF(d);
    return NULL;
}

static PyObject *mc_init_all(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"protocol", "device_name", "mount_segment_size",
                             NULL};
    const char  *proto = "tcp", *dev = "";
    PyObject    *so = NULL;
    dango_store_params_t p;
    char                 name_buf[256];

    if (!PyArg_ParseTupleAndKeywords(args, kw, "|ssO", kwlist, &proto, &dev,
                                     &so)) {
        return NULL;
    }

    memset(&p, 0, sizeof(p));
    p.field_mask   = DANGO_STORE_PARAM_SEGMENT_SIZE;
    p.segment_size = MC_DEF_SIZE;
    if (dpy_store_default_name(name_buf, sizeof(name_buf)) != NULL) {
        p.field_mask |= DANGO_STORE_PARAM_LOCAL_NAME;
        p.local_name = name_buf;
    }

    if ((so != NULL) &&
        (dpy_size(so, "mount_segment_size", &p.segment_size) != 0)) {
        return NULL;
    }

    if (MC(self)->client != NULL) {
        return mc_int(MC_BAD);
    }

    if ((proto[0] != '\0') && strcmp(proto, "tcp") && strcmp(proto, "shm")) {
        return mc_int(MOONCAKE_ERR_UNAVAILABLE_IN_CURRENT_MODE);
    }

    return mc_int(dpy_mc_code(NULL, dpy_store_open(MC(self), &p, NULL)));
}

static PyObject *mc_close(PyObject *self, PyObject *noargs)
{
    dpy_store_close(MC(self));
    return mc_int(0);
}

static PyObject *mc_health_check(PyObject *self, PyObject *noargs)
{
    dango_store_client_t *c = mc_enter(self);
    int                   rc;

    if (c == NULL) {
        return mc_int(1);
    }

    Py_BEGIN_ALLOW_THREADS rc = dango_store_health(c);
    Py_END_ALLOW_THREADS   mc_leave(self);
    return mc_int((rc == 0) ? 0 : 2);
}

static PyObject *mc_get_hostname(PyObject *self, PyObject *noargs)
{
    dango_store_client_t *c = mc_enter(self);
    PyObject             *r;

    if (c == NULL) {
        return PyUnicode_FromString("");
    }

    r = PyUnicode_FromString(dango_store_client_name(c));
    mc_leave(self);
    return r;
}

/* ---------- puts ---------- */

/* Mooncake's Client::Put: OBJECT_ALREADY_EXISTS is success. */
static int mc_put_code(dango_store_client_t *c, int rc)
{
    return (rc == DANGO_EOBJ_EXISTS) ? 0 : dpy_mc_code(c, rc);
}

enum { MC_PUT = 0, MC_UPSERT = 1 };

/* put(key, value, config=None) and upsert(): value is any buffer. */
static PyObject *mc_put_value(PyObject *self, PyObject *args, PyObject *kw,
                              int mode)
{
    static char          *kwlist[] = {"key", "value", "config", NULL};
    PyObject             *ko, *vo, *co = NULL, *kref;
    const char           *key;
    dango_store_client_t *c;
    dpy_cfg_t             cfg;
    dpy_mem_t             m;
    int                   rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O", kwlist, &ko, &vo, &co)) {
        return NULL;
    }

    if (dpy_key(ko, &key, &kref) != 0) {
        return NULL;
    }

    if (PyLong_Check(vo)) {
        Py_DECREF(kref);
        PyErr_SetString(PyExc_TypeError,
                        "value must be bytes-like (use put_from for an "
                        "address)");
        return NULL;
    }

    if (dpy_cfg_get(co, &cfg) != 0) {
        Py_DECREF(kref);
        return NULL;
    }

    if (dpy_mem_get(vo, NULL, 0, &m) != 0) {
        dpy_cfg_release(&cfg);
        Py_DECREF(kref);
        return NULL;
    }

    c = mc_enter(self);
    if (c == NULL) {
        rc = MC_BAD;
    } else {
        Py_BEGIN_ALLOW_THREADS rc =
            (mode == MC_UPSERT)
                ? dango_store_upsert(c, key, m.ptr, m.len, cfg.p)
                : dango_store_put(c, key, m.ptr, m.len, cfg.p);
        rc = mc_put_code(c, rc);
        Py_END_ALLOW_THREADS mc_leave(self);
    }

    dpy_mem_release(&m);
    dpy_cfg_release(&cfg);
    Py_DECREF(kref);
    return mc_int(rc);
}

static PyObject *mc_put(PyObject *self, PyObject *args, PyObject *kw)
{
    return mc_put_value(self, args, kw, MC_PUT);
}

static PyObject *mc_upsert(PyObject *self, PyObject *args, PyObject *kw)
{
    return mc_put_value(self, args, kw, MC_UPSERT);
}

/*
 * The scatter-gather core of the _parts and _multi_buffers calls: key i
 * gathers (or scatters) iov[off[i] .. off[i+1]). Runs with the GIL
 * released; results are Mooncake numbers.
 */
typedef struct mc_sg {
    dpy_keys_t          keys;
    dpy_mem_t          *mem; /* one per part */
    size_t              nmem;
    dango_store_iov_t  *iov;  /* parts of all keys */
    dango_store_iov_t **per;  /* per key: first part */
    size_t             *nper; /* per key: parts */
    int                 any_raw;
} mc_sg_t;

static void mc_sg_release(mc_sg_t *sg)
{
    for (size_t i = 0; i < sg->nmem; i++) {
        dpy_mem_release(&sg->mem[i]);
    }

    PyMem_Free(sg->mem);
    PyMem_Free(sg->iov);
    PyMem_Free(sg->per);
    PyMem_Free(sg->nper);
    dpy_keys_release(&sg->keys);
    memset(sg, 0, sizeof(*sg));
}

/*
 * Fills @sg from keys and, per key, a list of parts (@parts[i]) and their
 * sizes (@sizes[i], or NULL: each part's own length).
 */
static int mc_sg_get(PyObject *keys, PyObject *parts, PyObject *sizes,
                     int writable, mc_sg_t *sg)
{
    PyObject *pl = NULL, *sl = NULL;
    size_t    total = 0;

    memset(sg, 0, sizeof(*sg));
    if (dpy_keys_get(keys, DANGO_STORE_BATCH_MAX, &sg->keys) != 0) {
        return -1;
    }

    pl = dpy_seq_list(parts, "buffers");
    if ((pl == NULL) ||
        ((sizes != NULL) && ((sl = dpy_seq_list(sizes, "sizes")) == NULL))) {
        goto err;
    }

    if (((size_t)PyList_GET_SIZE(pl) != sg->keys.n) ||
        ((sl != NULL) && ((size_t)PyList_GET_SIZE(sl) != sg->keys.n))) {
        PyErr_SetString(PyExc_ValueError,
                        "buffers and sizes need one entry per key");
        goto err;
    }

    /* Each entry a list itself: replace it by a list copy. */
    for (size_t i = 0; i < sg->keys.n; i++) {
        PyObject *x = dpy_seq_list(PyList_GET_ITEM(pl, i), "buffers[i]");
        size_t    n;

        if (x == NULL) {
            goto err;
        }

        PyList_SetItem(pl, (Py_ssize_t)i, x);
        n = (size_t)PyList_GET_SIZE(x);
        if ((n == 0) || (n > DANGO_STORE_PARTS_MAX)) {
            PyErr_Format(PyExc_ValueError, "a key takes 1..%d parts",
                         DANGO_STORE_PARTS_MAX);
            goto err;
        }

        if (sl != NULL) {
            PyObject *y = dpy_seq_list(PyList_GET_ITEM(sl, i), "sizes[i]");

            if (y == NULL) {
                goto err;
            }

            PyList_SetItem(sl, (Py_ssize_t)i, y);
            if ((size_t)PyList_GET_SIZE(y) != n) {
                PyErr_SetString(PyExc_ValueError,
                                "sizes[i] needs one entry per buffer");
                goto err;
            }
        }

        total += n;
    }

    sg->mem  = PyMem_Calloc(total + 1, sizeof(*sg->mem));
    sg->iov  = PyMem_Calloc(total + 1, sizeof(*sg->iov));
    sg->per  = PyMem_Calloc(sg->keys.n + 1, sizeof(*sg->per));
    sg->nper = PyMem_Calloc(sg->keys.n + 1, sizeof(*sg->nper));
    if ((sg->mem == NULL) || (sg->iov == NULL) || (sg->per == NULL) ||
        (sg->nper == NULL)) {
        PyErr_NoMemory();
        goto err;
    }

    for (size_t i = 0, j = 0; i < sg->keys.n; i++) {
        PyObject *x = PyList_GET_ITEM(pl, i);
        PyObject *y = (sl != NULL) ? PyList_GET_ITEM(sl, i) : NULL;

        sg->per[i]  = &sg->iov[j];
        sg->nper[i] = (size_t)PyList_GET_SIZE(x);
        for (Py_ssize_t q = 0; q < PyList_GET_SIZE(x); q++, j++) {
            if (dpy_mem_get(PyList_GET_ITEM(x, q),
                            (y != NULL) ? PyList_GET_ITEM(y, q) : NULL,
                            writable, &sg->mem[j]) != 0) {
                goto err;
            }

            sg->nmem++;
            sg->iov[j].base = sg->mem[j].ptr;
            sg->iov[j].len  = sg->mem[j].len;
            sg->any_raw |= sg->mem[j].raw;
        }
    }

    Py_DECREF(pl);
    Py_XDECREF(sl);
    return 0;

err:
    Py_XDECREF(pl);
    Py_XDECREF(sl);
    mc_sg_release(sg);
    return -1;
}

/* Puts @sg; per-key Mooncake numbers as a list (or one int if @one). */
static PyObject *mc_sg_put(PyObject *self, mc_sg_t *sg, PyObject *co,
                           unsigned flags, int one)
{
    dango_store_client_t *c;
    dpy_cfg_t             cfg;
    int                  *res;
    PyObject             *r;
    int                   rc;

    if (dpy_cfg_get(co, &cfg) != 0) {
        return NULL;
    }

    res = PyMem_Calloc(sg->keys.n + 1, sizeof(*res));
    if (res == NULL) {
        dpy_cfg_release(&cfg);
        return PyErr_NoMemory();
    }

    if (sg->any_raw) {
        flags |= DANGO_STORE_REGISTERED;
    }

    c = mc_enter(self);
    if (c == NULL) {
        for (size_t i = 0; i < sg->keys.n; i++) {
            res[i] = MC_BAD;
        }
    } else {
        Py_BEGIN_ALLOW_THREADS rc = dango_store_batch_put_parts(
            c, sg->keys.n, sg->keys.keys,
            (const dango_store_iov_t *const *)sg->per, sg->nper, flags, cfg.p,
            res);
        for (size_t i = 0; i < sg->keys.n; i++) {
            res[i] = mc_put_code(c, (rc != 0) ? rc : res[i]);
        }
        Py_END_ALLOW_THREADS mc_leave(self);
    }

    r = one ? mc_int(res[0]) : dpy_list_int(res, sg->keys.n);
    PyMem_Free(res);
    dpy_cfg_release(&cfg);
    return r;
}

/* put_parts(key, *parts, config=None) and upsert_parts(). */
static PyObject *mc_parts(PyObject *self, PyObject *args, PyObject *kw,
                          unsigned flags)
{
    PyObject *key, *parts, *keys, *all, *co = NULL, *r;
    mc_sg_t   sg;

    if (PyTuple_GET_SIZE(args) < 2) {
        PyErr_SetString(PyExc_TypeError, "needs a key and at least one part");
        return NULL;
    }

    if (kw != NULL) {
        Py_ssize_t pos = 0;
        PyObject  *k, *v;

        while (PyDict_Next(kw, &pos, &k, &v)) {
            if (PyUnicode_CompareWithASCIIString(k, "config") != 0) {
                PyErr_Format(PyExc_TypeError,
                             "unexpected keyword argument '%U'", k);
                return NULL;
            }

            co = v;
        }
    }

    key = PyTuple_GET_ITEM(args, 0);
    for (Py_ssize_t i = 1; i < PyTuple_GET_SIZE(args); i++) {
        if (PyLong_Check(PyTuple_GET_ITEM(args, i))) {
            PyErr_SetString(PyExc_TypeError, "parts must be bytes-like");
            return NULL;
        }
    }

    parts = PyTuple_GetSlice(args, 1, PyTuple_GET_SIZE(args));
    keys  = Py_BuildValue("[O]", key);
    all   = Py_BuildValue("[N]", parts);
    if ((parts == NULL) || (keys == NULL) || (all == NULL)) {
        Py_XDECREF(keys);
        Py_XDECREF(all);
        return NULL;
    }

    r = NULL;
    if (mc_sg_get(keys, all, NULL, 0, &sg) == 0) {
        r = mc_sg_put(self, &sg, co, flags, 1);
        mc_sg_release(&sg);
    }

    Py_DECREF(keys);
    Py_DECREF(all);
    return r;
}

static PyObject *mc_put_parts(PyObject *self, PyObject *args, PyObject *kw)
{
    return mc_parts(self, args, kw, 0);
}

static PyObject *mc_upsert_parts(PyObject *self, PyObject *args, PyObject *kw)
{
    return mc_parts(self, args, kw, DANGO_STORE_UPSERT);
}

/* batch_put_from_multi_buffers(keys, all_ptrs, all_sizes, config=None). */
static PyObject *mc_put_multi(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"keys", "all_buffer_ptrs", "all_sizes", "config",
                             NULL};
    PyObject    *ko, *po, *so, *co = NULL, *r;
    mc_sg_t      sg;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|O", kwlist, &ko, &po, &so,
                                     &co)) {
        return NULL;
    }

    if (mc_sg_get(ko, po, so, 0, &sg) != 0) {
        return NULL;
    }

    r = (sg.keys.n == 0) ? PyList_New(0) : mc_sg_put(self, &sg, co, 0, 0);
    mc_sg_release(&sg);
    return r;
}

/* batch_get_into_multi_buffers(keys, all_ptrs, all_sizes, prefer=False). */
static PyObject *mc_get_multi(PyObject *self, PyObject *args, PyObject *kw)
{
    static char          *kwlist[] = {"keys", "all_buffer_ptrs", "all_sizes",
                                      "prefer_alloc_in_same_node", NULL};
    PyObject             *ko, *po, *so, *prefer = NULL, *r;
    dango_store_client_t *c;
    int64_t              *res;
    mc_sg_t               sg;
    int                   rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|O", kwlist, &ko, &po, &so,
                                     &prefer)) {
        return NULL;
    }

    if (mc_sg_get(ko, po, so, 1, &sg) != 0) {
        return NULL;
    }

    res = PyMem_Calloc(sg.keys.n + 1, sizeof(*res));
    if (res == NULL) {
        mc_sg_release(&sg);
        return PyErr_NoMemory();
    }

    c = (sg.keys.n > 0) ? mc_enter(self) : NULL;
    if (c == NULL) {
        for (size_t i = 0; i < sg.keys.n; i++) {
            res[i] = MC_BAD;
        }
    } else {
        Py_BEGIN_ALLOW_THREADS rc = dango_store_batch_get_parts(
            c, sg.keys.n, sg.keys.keys,
            (const dango_store_iov_t *const *)sg.per, sg.nper,
            sg.any_raw ? DANGO_STORE_REGISTERED : 0, res);
        for (size_t i = 0; i < sg.keys.n; i++) {
            int64_t v = (rc != 0) ? rc : res[i];

            res[i] = (v >= 0) ? v : dpy_mc_code(c, (int)v);
        }
        Py_END_ALLOW_THREADS mc_leave(self);
    }

    r = dpy_list_i64(res, sg.keys.n);
    PyMem_Free(res);
    mc_sg_release(&sg);
    return r;
}

/* put_from(key, ptr, size, config=None) and upsert_from(). */
static PyObject *mc_from(PyObject *self, PyObject *args, PyObject *kw, int mode)
{
    static char *kwlist[] = {"key", "buffer_ptr", "size", "config", NULL};
    PyObject    *ko, *po, *so = NULL, *co = NULL, *kref;
    const char  *key;
    dango_store_client_t *c;
    dpy_cfg_t             cfg;
    dpy_mem_t             m;
    int                   rc, res = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|OO", kwlist, &ko, &po, &so,
                                     &co)) {
        return NULL;
    }

    if (dpy_key(ko, &key, &kref) != 0) {
        return NULL;
    }

    if (dpy_cfg_get(co, &cfg) != 0) {
        Py_DECREF(kref);
        return NULL;
    }

    if (dpy_mem_get(po, so, 0, &m) != 0) {
        dpy_cfg_release(&cfg);
        Py_DECREF(kref);
        return NULL;
    }

    c = mc_enter(self);
    if (c == NULL) {
        rc = MC_BAD;
    } else {
        Py_BEGIN_ALLOW_THREADS if ((mode == MC_UPSERT) && m.raw)
        {
            dango_store_iov_t        iov = {m.ptr, m.len};
            const dango_store_iov_t *pp  = &iov;
            size_t                   np  = 1;

            rc = dango_store_batch_put_parts(
                c, 1, &key, &pp, &np,
                DANGO_STORE_REGISTERED | DANGO_STORE_UPSERT, cfg.p, &res);
            rc = (rc != 0) ? rc : res;
        }
        else if (mode == MC_UPSERT)
        {
            rc = dango_store_upsert(c, key, m.ptr, m.len, cfg.p);
        }
        else if (m.raw)
        {
            rc = dango_store_put_from(c, key, m.ptr, m.len, cfg.p);
        }
        else
        {
            rc = dango_store_put(c, key, m.ptr, m.len, cfg.p);
        }
        rc = mc_put_code(c, rc);
        Py_END_ALLOW_THREADS mc_leave(self);
    }

    dpy_mem_release(&m);
    dpy_cfg_release(&cfg);
    Py_DECREF(kref);
    return mc_int(rc);
}

static PyObject *mc_put_from(PyObject *self, PyObject *args, PyObject *kw)
{
    return mc_from(self, args, kw, MC_PUT);
}

static PyObject *mc_upsert_from(PyObject *self, PyObject *args, PyObject *kw)
{
    return mc_from(self, args, kw, MC_UPSERT);
}

/*
 * batch_put_from(keys, ptrs, sizes, config=None), put_batch(keys, values,
 * config=None), the upsert forms: one list of per-key numbers (put_batch
 * and upsert_batch: one number, the first failure).
 */
static PyObject *mc_batch_put(PyObject *self, PyObject *args, PyObject *kw,
                              int from, int mode)
{
    static char *kw_from[] = {"keys", "buffer_ptrs", "sizes", "config", NULL};
    static char *kw_vals[] = {"keys", "values", "config", NULL};
    PyObject    *ko, *bo, *so = NULL, *co = NULL, *r;
    dango_store_client_t *c;
    dpy_keys_t            k;
    dpy_mems_t            ms;
    dpy_cfg_t             cfg;
    int                  *res;
    int                   rc, first = 0;

    if (from ? !PyArg_ParseTupleAndKeywords(args, kw, "OOO|O", kw_from, &ko,
                                            &bo, &so, &co)
             : !PyArg_ParseTupleAndKeywords(args, kw, "OO|O", kw_vals, &ko, &bo,
                                            &co)) {
        return NULL;
    }

    if (dpy_keys_get(ko, DANGO_STORE_BATCH_MAX, &k) != 0) {
        return NULL;
    }

    if (dpy_cfg_get(co, &cfg) != 0) {
        dpy_keys_release(&k);
        return NULL;
    }

    if (dpy_mems_get(bo, so, k.n, 0, &ms) != 0) {
        dpy_cfg_release(&cfg);
        dpy_keys_release(&k);
        return NULL;
    }

    res = PyMem_Calloc(k.n + 1, sizeof(*res));
    if (res == NULL) {
        r = PyErr_NoMemory();
        goto out;
    }

    c = (k.n > 0) ? mc_enter(self) : NULL;
    if (c == NULL) {
        for (size_t i = 0; i < k.n; i++) {
            res[i] = MC_BAD;
        }
        first = MC_BAD;
    } else {
        Py_BEGIN_ALLOW_THREADS if (mode == MC_UPSERT)
        {
            dango_store_iov_t  *iov = calloc(k.n, sizeof(*iov));
            dango_store_iov_t **per = calloc(k.n, sizeof(*per));
            size_t             *np  = calloc(k.n, sizeof(*np));

            if ((iov == NULL) || (per == NULL) || (np == NULL)) {
                rc = DANGO_ENOMEM;
            } else {
                for (size_t i = 0; i < k.n; i++) {
                    iov[i].base = ms.ptrs[i];
                    iov[i].len  = ms.lens[i];
                    per[i]      = &iov[i];
                    np[i]       = 1;
                }

                rc = dango_store_batch_put_parts(
                    c, k.n, k.keys, (const dango_store_iov_t *const *)per, np,
                    DANGO_STORE_UPSERT |
                        (ms.any_raw ? DANGO_STORE_REGISTERED : 0),
                    cfg.p, res);
            }

            free(iov);
            free(per);
            free(np);
        }
        else
        {
            rc = dango_store_batch_put(c, k.n, k.keys,
                                       (const void *const *)ms.ptrs, ms.lens,
                                       ms.any_raw, cfg.p, res);
        }
        for (size_t i = 0; i < k.n; i++) {
            res[i] = mc_put_code(c, (rc != 0) ? rc : res[i]);
            if ((first == 0) && (res[i] != 0)) {
                first = res[i];
            }
        }
        Py_END_ALLOW_THREADS mc_leave(self);
    }

    r = from ? dpy_list_int(res, k.n) : mc_int(first);
    PyMem_Free(res);
out:
    dpy_mems_release(&ms);
    dpy_cfg_release(&cfg);
    dpy_keys_release(&k);
    return r;
}

static PyObject *mc_batch_put_from(PyObject *self, PyObject *args, PyObject *kw)
{
    return mc_batch_put(self, args, kw, 1, MC_PUT);
}

static PyObject *mc_batch_upsert_from(PyObject *self, PyObject *args,
                                      PyObject *kw)
{
    return mc_batch_put(self, args, kw, 1, MC_UPSERT);
}

static PyObject *mc_put_batch(PyObject *self, PyObject *args, PyObject *kw)
{
    return mc_batch_put(self, args, kw, 0, MC_PUT);
}

static PyObject *mc_upsert_batch(PyObject *self, PyObject *args, PyObject *kw)
{
    return mc_batch_put(self, args, kw, 0, MC_UPSERT);
}

/* ---------- gets ---------- */

static PyObject *mc_get(PyObject *self, PyObject *arg)
{
    const char *key;
    PyObject   *kref, *out = NULL;
    int         rc;

    if (dpy_key(arg, &key, &kref) != 0) {
        return NULL;
    }

    rc = dpy_store_get_bytes(MC(self), key, &out);
    Py_DECREF(kref);
    if (rc != 0) {
        if (PyErr_Occurred()) {
            return NULL;
        }

        return PyBytes_FromStringAndSize("", 0);
    }

    return out;
}

static PyObject *mc_get_batch(PyObject *self, PyObject *arg)
{
    dpy_keys_t k;
    PyObject  *l;

    if (dpy_keys_get(arg, 0, &k) != 0) {
        return NULL;
    }

    l = PyList_New((Py_ssize_t)k.n);
    for (size_t i = 0; (l != NULL) && (i < k.n); i++) {
        PyObject *x = NULL;

        if ((dpy_store_get_bytes(MC(self), k.keys[i], &x) != 0) &&
            !PyErr_Occurred()) {
            x = PyBytes_FromStringAndSize("", 0);
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

/* get_buffer(key) -> BufferHandle or None. */
static PyObject *mc_get_buffer_one(PyObject *self, const char *key)
{
    dango_store_client_t *c = mc_enter(self);
    void                 *val;
    size_t                len;
    int                   rc;

    if (c == NULL) {
        Py_RETURN_NONE;
    }

    Py_BEGIN_ALLOW_THREADS rc = dango_store_get_alloc(c, key, &val, &len);
    Py_END_ALLOW_THREADS   mc_leave(self);
    if (rc != 0) {
        Py_RETURN_NONE;
    }

    return dpy_buffer_handle_new(val, len);
}

static PyObject *mc_get_buffer(PyObject *self, PyObject *arg)
{
    const char *key;
    PyObject   *kref, *r;

    if (dpy_key(arg, &key, &kref) != 0) {
        return NULL;
    }

    r = mc_get_buffer_one(self, key);
    Py_DECREF(kref);
    return r;
}

static PyObject *mc_batch_get_buffer(PyObject *self, PyObject *arg)
{
    dpy_keys_t k;
    PyObject  *l;

    if (dpy_keys_get(arg, 0, &k) != 0) {
        return NULL;
    }

    l = PyList_New((Py_ssize_t)k.n);
    for (size_t i = 0; (l != NULL) && (i < k.n); i++) {
        PyObject *x = mc_get_buffer_one(self, k.keys[i]);

        if (x == NULL) {
            Py_CLEAR(l);
            break;
        }

        PyList_SET_ITEM(l, (Py_ssize_t)i, x);
    }

    dpy_keys_release(&k);
    return l;
}

static PyObject *mc_get_into(PyObject *self, PyObject *args, PyObject *kw)
{
    static char          *kwlist[] = {"key", "buffer_ptr", "size", NULL};
    PyObject             *ko, *po, *so = NULL, *kref;
    const char           *key;
    dango_store_client_t *c;
    dpy_mem_t             m;
    int64_t               n;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O", kwlist, &ko, &po, &so)) {
        return NULL;
    }

    if (dpy_key(ko, &key, &kref) != 0) {
        return NULL;
    }

    if (dpy_mem_get(po, so, 1, &m) != 0) {
        Py_DECREF(kref);
        return NULL;
    }

    c = mc_enter(self);
    if (c == NULL) {
        n = MC_BAD;
    } else {
        Py_BEGIN_ALLOW_THREADS n =
            m.raw ? dango_store_get_into(c, key, m.ptr, m.len)
                  : dango_store_get(c, key, m.ptr, m.len, NULL);
        if (n < 0) {
            n = dpy_mc_code(c, (int)n);
        }
        Py_END_ALLOW_THREADS mc_leave(self);
    }

    dpy_mem_release(&m);
    Py_DECREF(kref);
    return PyLong_FromLongLong(n);
}

static PyObject *mc_batch_get_into(PyObject *self, PyObject *args, PyObject *kw)
{
    static char          *kwlist[] = {"keys", "buffer_ptrs", "sizes", NULL};
    PyObject             *ko, *bo, *so, *r;
    dango_store_client_t *c;
    dpy_keys_t            k;
    dpy_mems_t            ms;
    int64_t              *res;
    int                   rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO", kwlist, &ko, &bo, &so)) {
        return NULL;
    }

    if (dpy_keys_get(ko, DANGO_STORE_BATCH_MAX, &k) != 0) {
        return NULL;
    }

    if (dpy_mems_get(bo, so, k.n, 1, &ms) != 0) {
        dpy_keys_release(&k);
        return NULL;
    }

    res = PyMem_Calloc(k.n + 1, sizeof(*res));
    if (res == NULL) {
        r = PyErr_NoMemory();
        goto out;
    }

    c = (k.n > 0) ? mc_enter(self) : NULL;
    if (c == NULL) {
        for (size_t i = 0; i < k.n; i++) {
            res[i] = MC_BAD;
        }
    } else {
        Py_BEGIN_ALLOW_THREADS rc = dango_store_batch_get(
            c, k.n, k.keys, ms.ptrs, ms.lens, ms.any_raw, res);
        for (size_t i = 0; i < k.n; i++) {
            int64_t v = (rc != 0) ? rc : res[i];

            res[i] = (v >= 0) ? v : dpy_mc_code(c, (int)v);
        }
        Py_END_ALLOW_THREADS mc_leave(self);
    }

    r = dpy_list_i64(res, k.n);
    PyMem_Free(res);
out:
    dpy_mems_release(&ms);
    dpy_keys_release(&k);
    return r;
}

/*
 * get_into_ranges(buffer_ptrs, keys, dst_offsets, src_offsets, sizes):
 * group g copies, for each of its keys keys[g][k], the ranges
 * (src_offsets[g][k][r], sizes[g][k][r]) of the object to buffer_ptrs[g] +
 * dst_offsets[g][k][r]. Returns [[bytes or code per key] per group].
 */
static PyObject *mc_get_into_ranges(PyObject *self, PyObject *args,
                                    PyObject *kw)
{
    static char          *kwlist[] = {"buffer_ptrs", "keys",  "dst_offsets",
                                      "src_offsets", "sizes", NULL};
    PyObject             *a[5], *l[5] = {NULL}, *flat_keys = NULL, *r = NULL;
    dango_store_range_t  *rg = NULL, **per = NULL;
    size_t               *nper = NULL, ngroups, nkeys = 0, nranges = 0;
    size_t               *gsize = NULL;
    int64_t              *res   = NULL;
    dango_store_client_t *c;
    dpy_keys_t            k = {0};
    int                   rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOO", kwlist, &a[0], &a[1],
                                     &a[2], &a[3], &a[4])) {
        return NULL;
    }

    for (int i = 0; i < 5; i++) {
        l[i] = dpy_seq_list(a[i], kwlist[i]);
        if (l[i] == NULL) {
            goto out;
        }
    }

    ngroups = (size_t)PyList_GET_SIZE(l[0]);
    for (int i = 1; i < 5; i++) {
        if ((size_t)PyList_GET_SIZE(l[i]) != ngroups) {
            PyErr_Format(PyExc_ValueError, "%s needs one entry per buffer",
                         kwlist[i]);
            goto out;
        }
    }

    /* First pass: shapes, and the keys flattened. */
    flat_keys = PyList_New(0);
    gsize     = PyMem_Calloc(ngroups + 1, sizeof(*gsize));
    if ((flat_keys == NULL) || (gsize == NULL)) {
        PyErr_NoMemory();
        goto out;
    }

    for (size_t g = 0; g < ngroups; g++) {
        PyObject *gl[4];
        size_t    n;

        for (int i = 0; i < 4; i++) {
            gl[i] = dpy_seq_list(PyList_GET_ITEM(l[i + 1], g), kwlist[i + 1]);
            if (gl[i] == NULL) {
                goto out; /* the earlier ones belong to l[] already */
            }

            PyList_SetItem(l[i + 1], (Py_ssize_t)g, gl[i]);
        }

        n = (size_t)PyList_GET_SIZE(gl[0]);
        for (int i = 1; i < 4; i++) {
            if ((size_t)PyList_GET_SIZE(gl[i]) != n) {
                PyErr_Format(PyExc_ValueError,
                             "%s[%zu] needs one entry per key", kwlist[i + 1],
                             g);
                goto out;
            }
        }

        for (size_t q = 0; q < n; q++) {
            PyObject *rl[3];
            size_t    nr;

            if (PyList_Append(flat_keys, PyList_GET_ITEM(gl[0], q)) != 0) {
                goto out;
            }

            for (int i = 0; i < 3; i++) {
                rl[i] =
                    dpy_seq_list(PyList_GET_ITEM(gl[i + 1], q), kwlist[i + 2]);
                if (rl[i] == NULL) {
                    goto out;
                }

                PyList_SetItem(gl[i + 1], (Py_ssize_t)q, rl[i]);
            }

            nr = (size_t)PyList_GET_SIZE(rl[0]);
            if (((size_t)PyList_GET_SIZE(rl[1]) != nr) ||
                ((size_t)PyList_GET_SIZE(rl[2]) != nr) || (nr == 0) ||
                (nr > DANGO_STORE_PARTS_MAX)) {
                PyErr_Format(PyExc_ValueError,
                             "each key takes 1..%d ranges, with one offset "
                             "pair and size each",
                             DANGO_STORE_PARTS_MAX);
                goto out;
            }

            nranges += nr;
        }

        gsize[g] = n;
        nkeys += n;
    }

    if (dpy_keys_get(flat_keys, DANGO_STORE_BATCH_MAX, &k) != 0) {
        goto out;
    }

    rg   = PyMem_Calloc(nranges + 1, sizeof(*rg));
    per  = PyMem_Calloc(nkeys + 1, sizeof(*per));
    nper = PyMem_Calloc(nkeys + 1, sizeof(*nper));
    res  = PyMem_Calloc(nkeys + 1, sizeof(*res));
    if ((rg == NULL) || (per == NULL) || (nper == NULL) || (res == NULL)) {
        PyErr_NoMemory();
        goto out;
    }

    /* Second pass: the ranges, with addresses checked for overflow. */
    for (size_t g = 0, key = 0, j = 0; g < ngroups; g++) {
        uint64_t base;

        if (dpy_u64(PyList_GET_ITEM(l[0], g), "buffer_ptrs[i]", &base) != 0) {
            goto out;
        }

        for (size_t q = 0; q < gsize[g]; q++, key++) {
            PyObject *dl = PyList_GET_ITEM(PyList_GET_ITEM(l[2], g), q);
            PyObject *sl = PyList_GET_ITEM(PyList_GET_ITEM(l[3], g), q);
            PyObject *zl = PyList_GET_ITEM(PyList_GET_ITEM(l[4], g), q);

            per[key]  = &rg[j];
            nper[key] = (size_t)PyList_GET_SIZE(dl);
            for (Py_ssize_t x = 0; x < PyList_GET_SIZE(dl); x++, j++) {
                uint64_t d, s, z;

                if ((dpy_u64(PyList_GET_ITEM(dl, x), "dst_offset", &d) != 0) ||
                    (dpy_u64(PyList_GET_ITEM(sl, x), "src_offset", &s) != 0) ||
                    (dpy_u64(PyList_GET_ITEM(zl, x), "size", &z) != 0)) {
                    goto out;
                }

                if ((base == 0) || (base + d < base) ||
                    (base + d + z < base + d)) {
                    PyErr_SetString(PyExc_ValueError,
                                    "a destination range overflows");
                    goto out;
                }

                rg[j].src_offset = s;
                rg[j].dst        = (void *)(uintptr_t)(base + d);
                rg[j].len        = (size_t)z;
            }
        }
    }

    c = (nkeys > 0) ? mc_enter(self) : NULL;
    if (c == NULL) {
        for (size_t i = 0; i < nkeys; i++) {
            res[i] = MC_BAD;
        }
    } else {
        /* Raw addresses: the library checks each lies in registered
         * memory (DANGO_ENOTREG) before it writes a byte. */
        Py_BEGIN_ALLOW_THREADS rc = dango_store_batch_get_ranges(
            c, nkeys, k.keys, (const dango_store_range_t *const *)per, nper,
            DANGO_STORE_REGISTERED, res);
        for (size_t i = 0; i < nkeys; i++) {
            int64_t v = (rc != 0) ? rc : res[i];

            res[i] = (v >= 0) ? v : dpy_mc_code(c, (int)v);
        }
        Py_END_ALLOW_THREADS mc_leave(self);
    }

    r = PyList_New((Py_ssize_t)ngroups);
    for (size_t g = 0, key = 0; (r != NULL) && (g < ngroups); g++) {
        PyObject *x = dpy_list_i64(&res[key], gsize[g]);

        if (x == NULL) {
            Py_CLEAR(r);
            break;
        }

        PyList_SET_ITEM(r, (Py_ssize_t)g, x);
        key += gsize[g];
    }

out:
    for (int i = 0; i < 5; i++) {
        Py_XDECREF(l[i]);
    }

    Py_XDECREF(flat_keys);
    dpy_keys_release(&k);
    PyMem_Free(gsize);
    PyMem_Free(rg);
    PyMem_Free(per);
    PyMem_Free(nper);
    PyMem_Free(res);
    return r;
}

/* ---------- queries and removal ---------- */

static PyObject *mc_get_size(PyObject *self, PyObject *arg)
{
    dango_store_client_t *c;
    const char           *key;
    PyObject             *kref;
    int64_t               n = MC_BAD;

    if (dpy_key(arg, &key, &kref) != 0) {
        return NULL;
    }

    c = mc_enter(self);
    if (c != NULL) {
        Py_BEGIN_ALLOW_THREADS n = dango_store_size(c, key);
        if (n < 0) {
            n = dpy_mc_code(c, (int)n);
        }
        Py_END_ALLOW_THREADS mc_leave(self);
    }

    Py_DECREF(kref);
    return PyLong_FromLongLong(n);
}

static PyObject *mc_is_exist(PyObject *self, PyObject *arg)
{
    dango_store_client_t *c;
    const char           *key;
    PyObject             *kref;
    int                   rc = MC_BAD;

    if (dpy_key(arg, &key, &kref) != 0) {
        return NULL;
    }

    c = mc_enter(self);
    if (c != NULL) {
        Py_BEGIN_ALLOW_THREADS rc = dpy_mc_code(c, dango_store_exist(c, key));
        Py_END_ALLOW_THREADS   mc_leave(self);
    }

    Py_DECREF(kref);
    return mc_int(rc);
}

/* batch_is_exist(keys) and batch_remove(keys, force=False). */
static PyObject *mc_batch_keys(PyObject *self, PyObject *ko, int force,
                               int remove)
{
    dango_store_client_t *c;
    dpy_keys_t            k;
    PyObject             *r;
    int                  *res;
    int                   rc;

    if (dpy_keys_get(ko, DANGO_STORE_BATCH_MAX, &k) != 0) {
        return NULL;
    }

    res = PyMem_Calloc(k.n + 1, sizeof(*res));
    if (res == NULL) {
        dpy_keys_release(&k);
        return PyErr_NoMemory();
    }

    c = (k.n > 0) ? mc_enter(self) : NULL;
    if (c == NULL) {
        for (size_t i = 0; i < k.n; i++) {
            res[i] = MC_BAD;
        }
    } else {
        Py_BEGIN_ALLOW_THREADS rc =
            remove ? dango_store_batch_remove(c, k.n, k.keys, force, res)
                   : dango_store_batch_exist(c, k.n, k.keys, res);
        for (size_t i = 0; i < k.n; i++) {
            res[i] = dpy_mc_code(c, (rc != 0) ? rc : res[i]);
        }
        Py_END_ALLOW_THREADS mc_leave(self);
    }

    r = dpy_list_int(res, k.n);
    PyMem_Free(res);
    dpy_keys_release(&k);
    return r;
}

static PyObject *mc_batch_is_exist(PyObject *self, PyObject *arg)
{
    return mc_batch_keys(self, arg, 0, 0);
}

static PyObject *mc_batch_remove(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"keys", "force", NULL};
    PyObject    *ko;
    int          force = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|p", kwlist, &ko, &force)) {
        return NULL;
    }

    return mc_batch_keys(self, ko, force, 1);
}

static PyObject *mc_remove(PyObject *self, PyObject *args, PyObject *kw)
{
    static char          *kwlist[] = {"key", "force", NULL};
    PyObject             *ko, *kref;
    const char           *key;
    dango_store_client_t *c;
    int                   force = 0, rc = MC_BAD;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|p", kwlist, &ko, &force) ||
        (dpy_key(ko, &key, &kref) != 0)) {
        return NULL;
    }

    c = mc_enter(self);
    if (c != NULL) {
        Py_BEGIN_ALLOW_THREADS rc =
            dpy_mc_code(c, dango_store_remove(c, key, force));
        Py_END_ALLOW_THREADS mc_leave(self);
    }

    Py_DECREF(kref);
    return mc_int(rc);
}

static PyObject *mc_remove_match(PyObject *self, PyObject *args, PyObject *kw,
                                 int all)
{
    static char          *kw_re[]  = {"regex", "force", NULL};
    static char          *kw_all[] = {"force", NULL};
    const char           *re       = NULL;
    dango_store_client_t *c;
    int                   force = 0;
    int64_t               n     = MC_BAD;

    if (all ? !PyArg_ParseTupleAndKeywords(args, kw, "|p", kw_all, &force)
            : !PyArg_ParseTupleAndKeywords(args, kw, "s|p", kw_re, &re,
                                           &force)) {
        return NULL;
    }

    c = mc_enter(self);
    if (c != NULL) {
        Py_BEGIN_ALLOW_THREADS n =
            all ? dango_store_remove_all(c, force)
                : dango_store_remove_by_regex(c, re, force);
        if (n < 0) {
            n = dpy_mc_code(c, (int)n);
        }
        Py_END_ALLOW_THREADS mc_leave(self);
    }

    return PyLong_FromLongLong(n);
}

static PyObject *mc_remove_by_regex(PyObject *self, PyObject *args,
                                    PyObject *kw)
{
    return mc_remove_match(self, args, kw, 0);
}

static PyObject *mc_remove_all(PyObject *self, PyObject *args, PyObject *kw)
{
    return mc_remove_match(self, args, kw, 1);
}

static PyObject *mc_register(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"buffer_ptr", "size", NULL};
    PyObject    *bo, *so = NULL;
    int          pyerr, rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O", kwlist, &bo, &so)) {
        return NULL;
    }

    rc = dpy_store_register(MC(self), bo, so, &pyerr);
    if (pyerr) {
        return NULL;
    }

    return mc_int((rc == DANGO_ESTATE) ? MC_BAD
                                       : dpy_mc_code(MC(self)->client, rc));
}

static PyObject *mc_unregister(PyObject *self, PyObject *arg)
{
    int pyerr, rc = dpy_store_unregister(MC(self), arg, &pyerr);

    if (pyerr) {
        return NULL;
    }

    return mc_int((rc == DANGO_ESTATE) ? MC_BAD
                                       : dpy_mc_code(MC(self)->client, rc));
}

/* The descriptors of one key: [] on a miss or before setup. */
static PyObject *mc_desc_one(PyObject *self, const char *key)
{
    dango_store_object_info_t info;
    dango_store_client_t     *c = mc_enter(self);
    int                       rc;

    if (c == NULL) {
        return PyList_New(0);
    }

    Py_BEGIN_ALLOW_THREADS rc = dango_store_stat(c, key, &info);
    Py_END_ALLOW_THREADS   mc_leave(self);
    if (rc != 0) {
        return PyList_New(0);
    }

    return dpy_replica_descs(&info);
}

static PyObject *mc_get_replica_desc(PyObject *self, PyObject *arg)
{
    const char *key;
    PyObject   *kref, *r;

    if (dpy_key(arg, &key, &kref) != 0) {
        return NULL;
    }

    r = mc_desc_one(self, key);
    Py_DECREF(kref);
    return r;
}

static PyObject *mc_batch_get_replica_desc(PyObject *self, PyObject *arg)
{
    dpy_keys_t k;
    PyObject  *d;

    if (dpy_keys_get(arg, 0, &k) != 0) {
        return NULL;
    }

    d = PyDict_New();
    for (size_t i = 0; (d != NULL) && (i < k.n); i++) {
        PyObject *x = mc_desc_one(self, k.keys[i]);

        if ((x == NULL) || (PyDict_SetItem(d, k.refs[i], x) != 0)) {
            Py_XDECREF(x);
            Py_CLEAR(d);
            break;
        }

        Py_DECREF(x);
    }

    dpy_keys_release(&k);
    return d;
}

#define MC_KW(_name, _fn, _doc)                                                \
    {                                                                          \
        _name, (PyCFunction)(void (*)(void))(_fn),                             \
            METH_VARARGS | METH_KEYWORDS, _doc                                 \
    }

static PyMethodDef mc_methods[] = {
    MC_KW("setup", mc_setup,
          "setup(local_hostname, metadata_server, global_segment_size=16MB, "
          "local_buffer_size=16MB, protocol='tcp', rdma_devices='', "
          "master_server_addr='127.0.0.1:50051', ...) or setup(config: "
          "dict) -> int"),
    MC_KW("init_all", mc_init_all,
          "init_all(protocol='tcp', device_name='', "
          "mount_segment_size=16MB) -> int: setup from DANGO_* defaults"),
    {"close", mc_close, METH_NOARGS, "close() -> 0"},
    {"health_check", mc_health_check, METH_NOARGS,
     "health_check() -> 0 healthy, 1 not set up, 2 master unreachable"},
    {"get_hostname", mc_get_hostname, METH_NOARGS,
     "get_hostname() -> str: this client's segment name"},
    MC_KW("put", mc_put, "put(key, value, config=None) -> int"),
    MC_KW("put_parts", mc_put_parts,
          "put_parts(key, *parts, config=None) -> int"),
    MC_KW("put_batch", mc_put_batch,
          "put_batch(keys, values, config=None) -> int (first failure)"),
    MC_KW("upsert", mc_upsert, "upsert(key, value, config=None) -> int"),
    MC_KW("upsert_parts", mc_upsert_parts,
          "upsert_parts(key, *parts, config=None) -> int"),
    MC_KW("upsert_batch", mc_upsert_batch,
          "upsert_batch(keys, values, config=None) -> int"),
    MC_KW("upsert_from", mc_upsert_from,
          "upsert_from(key, buffer_ptr, size, config=None) -> int"),
    MC_KW("batch_upsert_from", mc_batch_upsert_from,
          "batch_upsert_from(keys, buffer_ptrs, sizes, config=None) -> "
          "[int]"),
    {"get", mc_get, METH_O, "get(key) -> bytes (b'' on a miss)"},
    {"get_batch", mc_get_batch, METH_O, "get_batch(keys) -> [bytes]"},
    {"get_buffer", mc_get_buffer, METH_O,
     "get_buffer(key) -> BufferHandle or None"},
    {"batch_get_buffer", mc_batch_get_buffer, METH_O,
     "batch_get_buffer(keys) -> [BufferHandle or None]"},
    {"get_size", mc_get_size, METH_O, "get_size(key) -> int"},
    {"is_exist", mc_is_exist, METH_O, "is_exist(key) -> 1, 0 or < 0"},
    {"batch_is_exist", mc_batch_is_exist, METH_O,
     "batch_is_exist(keys) -> [int]"},
    MC_KW("remove", mc_remove, "remove(key, force=False) -> int"),
    MC_KW("remove_by_regex", mc_remove_by_regex,
          "remove_by_regex(regex, force=False) -> count"),
    MC_KW("remove_all", mc_remove_all, "remove_all(force=False) -> count"),
    MC_KW("batch_remove", mc_batch_remove,
          "batch_remove(keys, force=False) -> [int]"),
    MC_KW("register_buffer", mc_register,
          "register_buffer(buffer_ptr, size) -> int"),
    {"unregister_buffer", mc_unregister, METH_O,
     "unregister_buffer(buffer_ptr) -> int"},
    MC_KW("put_from", mc_put_from,
          "put_from(key, buffer_ptr, size, config=None) -> int"),
    MC_KW("get_into", mc_get_into,
          "get_into(key, buffer_ptr, size) -> bytes read or < 0"),
    MC_KW("batch_put_from", mc_batch_put_from,
          "batch_put_from(keys, buffer_ptrs, sizes, config=None) -> [int]"),
    MC_KW("batch_get_into", mc_batch_get_into,
          "batch_get_into(keys, buffer_ptrs, sizes) -> [int]"),
    MC_KW("batch_put_from_multi_buffers", mc_put_multi,
          "batch_put_from_multi_buffers(keys, all_buffer_ptrs, all_sizes, "
          "config=None) -> [int]"),
    MC_KW("batch_get_into_multi_buffers", mc_get_multi,
          "batch_get_into_multi_buffers(keys, all_buffer_ptrs, all_sizes, "
          "prefer_alloc_in_same_node=False) -> [int]"),
    MC_KW("get_into_ranges", mc_get_into_ranges,
          "get_into_ranges(buffer_ptrs, keys, dst_offsets, src_offsets, "
          "sizes) -> [[int]]"),
    {"get_replica_desc", mc_get_replica_desc, METH_O,
     "get_replica_desc(key) -> [ReplicaDescriptor]"},
    {"batch_get_replica_desc", mc_batch_get_replica_desc, METH_O,
     "batch_get_replica_desc(keys) -> {key: [ReplicaDescriptor]}"},
    {NULL, NULL, 0, NULL}};

PyTypeObject dpy_mc_store_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name =
        "dango.store.MooncakeDistributedStore",
    .tp_basicsize = sizeof(dpy_store_t),
    .tp_flags     = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc     = "MooncakeDistributedStore(): Mooncake's store API on Dango. "
                  "Call setup() first; methods return Mooncake's codes.",
    .tp_new     = mc_new,
    .tp_dealloc = dpy_store_dealloc,
    .tp_methods = mc_methods,
    .tp_weaklistoffset = offsetof(dpy_store_t, weakrefs),
};
