/*
 * The Python extension `dango`: module creation and the helpers every part
 * shares (errors, argument conversion, the call guard).
 *
 * One shared object defines three modules. PyInit_dango creates `dango`
 * and the submodules `dango.store` (py_store*.c) and `dango.engine`
 * (py_engine.c), sets them as attributes and enters them in sys.modules, so
 * `import dango.store` and `from dango.store import X` find them without a
 * package directory (the import system looks in sys.modules once the parent
 * is imported).
 *
 * Errors: Dango codes become dango.DangoError (code, name, message), with
 * ObjectNotFoundError (also a KeyError) for a missing object; wrong argument
 * types are TypeError and out-of-range values ValueError, raised before any
 * library call. The Mooncake-compatible class returns Mooncake's numbers
 * instead of raising for store errors (py_store.c).
 */
/* Python.h first: it sets macros the C library headers read. */
#include "py_int.h"

#include <limits.h>
#include <string.h>

#include <dango/config.h>

PyObject *dpy_error_type;
PyObject *dpy_not_found_type;

/* ---------- errors ---------- */

PyObject *dpy_error_new(int err, const char *what)
{
    PyObject   *type = dpy_error_type, *exc, *v;
    const char *name = dango_err_name(err);

    if ((err == DANGO_ENO_OBJECT) || (err == DANGO_EEVICTED)) {
        type = dpy_not_found_type;
    }

    exc = PyObject_CallFunction(type, "is", err, dango_strerror(err));
    if (exc == NULL) {
        return NULL;
    }

    v = PyUnicode_FromString(name);
    if ((v == NULL) || (PyObject_SetAttrString(exc, "name", v) != 0)) {
        goto err;
    }

    Py_DECREF(v);
    v = PyLong_FromLong(err);
    if ((v == NULL) || (PyObject_SetAttrString(exc, "code", v) != 0)) {
        goto err;
    }

    Py_DECREF(v);
    v = PyUnicode_FromString((what != NULL) ? what : "");
    if ((v == NULL) || (PyObject_SetAttrString(exc, "context", v) != 0)) {
        goto err;
    }

    Py_DECREF(v);
    return exc;

err:
    Py_XDECREF(v);
    Py_DECREF(exc);
    return NULL;
}

PyObject *dpy_raise(int err, const char *what)
{
    PyObject *exc = dpy_error_new(err, what);

    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }

    return NULL;
}

/* DangoError.__str__: "DANGO_ENO_OBJECT: object not found (get 'k')". */
static PyObject *error_str(PyObject *unused, PyObject *self)
{
    PyObject *name = PyObject_GetAttrString(self, "name");
    PyObject *ctx  = PyObject_GetAttrString(self, "context");
    PyObject *args = PyObject_GetAttrString(self, "args");
    PyObject *res  = NULL;

    PyErr_Clear();
    if ((name != NULL) && (args != NULL) && PyTuple_Check(args) &&
        (PyTuple_GET_SIZE(args) >= 2)) {
        if ((ctx != NULL) && PyUnicode_Check(ctx) &&
            (PyUnicode_GET_LENGTH(ctx) > 0)) {
            res = PyUnicode_FromFormat("%S: %S (%S)", name,
                                       PyTuple_GET_ITEM(args, 1), ctx);
        } else {
            res =
                PyUnicode_FromFormat("%S: %S", name, PyTuple_GET_ITEM(args, 1));
        }
    }

    if (res == NULL) {
        PyErr_Clear();
        res = PyObject_Str(args != NULL ? args : Py_None);
    }

    Py_XDECREF(name);
    Py_XDECREF(ctx);
    Py_XDECREF(args);
    return res;
}

static PyMethodDef error_str_def = {"__str__", error_str, METH_O, NULL};

static int errors_init(PyObject *mod)
{
    PyObject *dict = PyDict_New(), *fn, *bases, *str_method = NULL;

    if (dict == NULL) {
        return -1;
    }

    if ((PyDict_SetItemString(dict, "code", Py_None) != 0) ||
        (PyDict_SetItemString(dict, "name", Py_None) != 0) ||
        (PyDict_SetItemString(dict, "context", Py_None) != 0)) {
        Py_DECREF(dict);
        return -1;
    }

    dpy_error_type = PyErr_NewExceptionWithDoc(
        "dango.DangoError",
        "A Dango library call failed. Attributes: code (the negative Dango "
        "code), name (e.g. 'DANGO_ENO_OBJECT'), context (the call).",
        PyExc_Exception, dict);
    Py_DECREF(dict);
    if (dpy_error_type == NULL) {
        return -1;
    }

    /* __str__ as a plain function in the class dict, so a method: the
     * instance arrives as the one argument (METH_O, no bound self). */
    fn = PyCFunction_New(&error_str_def, NULL);
    if (fn == NULL) {
        return -1;
    }

    str_method = PyInstanceMethod_New(fn);
    Py_DECREF(fn);
    if ((str_method == NULL) ||
        (PyObject_SetAttrString(dpy_error_type, "__str__", str_method) != 0)) {
        goto err;
    }

    bases = PyTuple_Pack(2, dpy_error_type, PyExc_KeyError);
    if (bases == NULL) {
        goto err;
    }

    dpy_not_found_type = PyErr_NewExceptionWithDoc(
        "dango.ObjectNotFoundError",
        "The object does not exist (DANGO_ENO_OBJECT); also a KeyError.", bases,
        NULL);
    Py_DECREF(bases);
    /* KeyError.__str__ would quote the args tuple: keep DangoError's. */
    if ((dpy_not_found_type == NULL) ||
        (PyObject_SetAttrString(dpy_not_found_type, "__str__", str_method) !=
         0)) {
        goto err;
    }

    Py_DECREF(str_method);
    Py_INCREF(dpy_error_type);
    Py_INCREF(dpy_not_found_type);
    if ((PyModule_AddObject(mod, "DangoError", dpy_error_type) != 0) ||
        (PyModule_AddObject(mod, "ObjectNotFoundError", dpy_not_found_type) !=
         0)) {
        return -1;
    }

    return 0;

err:
    Py_XDECREF(str_method);
    return -1;
}

/* ---------- call guard ---------- */

void dpy_guard_init(dpy_guard_t *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->active  = 0;
    g->closing = 0;
}

void dpy_guard_cleanup(dpy_guard_t *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

int dpy_guard_enter(dpy_guard_t *g, int open)
{
    int rc = -1;

    pthread_mutex_lock(&g->mu);
    if (open && !g->closing) {
        g->active++;
        rc = 0;
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

void dpy_guard_leave(dpy_guard_t *g)
{
    pthread_mutex_lock(&g->mu);
    if (--g->active == 0) {
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
}

void dpy_guard_drain(dpy_guard_t *g)
{
    Py_BEGIN_ALLOW_THREADS pthread_mutex_lock(&g->mu);
    g->closing = 1;
    /* Bounded by the calls in flight, each bounded by the library's own
     * timeouts (STORE_RPC_TIMEOUT, STORE_TRANSFER_TIMEOUT, ...). */
    while (g->active > 0) {
        pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    Py_END_ALLOW_THREADS
}

void dpy_guard_reopen(dpy_guard_t *g)
{
    pthread_mutex_lock(&g->mu);
    g->closing = 0;
    pthread_mutex_unlock(&g->mu);
}

/* ---------- arguments ---------- */

int dpy_u64(PyObject *o, const char *what, uint64_t *out)
{
    unsigned long long v;
    int                overflow = 0;
    long long          s;

    if ((o == NULL) || !PyLong_Check(o) || PyBool_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what,
                     (o != NULL) ? Py_TYPE(o)->tp_name : "nothing");
        return -1;
    }

    s = PyLong_AsLongLongAndOverflow(o, &overflow);
    if ((overflow < 0) || ((overflow == 0) && (s < 0))) {
        PyErr_Format(PyExc_ValueError, "%s must not be negative", what);
        return -1;
    }

    if (overflow == 0) {
        *out = (uint64_t)s;
        return 0;
    }

    v = PyLong_AsUnsignedLongLong(o);
    if ((v == (unsigned long long)-1) && PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "%s is too large", what);
        return -1;
    }

    *out = v;
    return 0;
}

int dpy_size(PyObject *o, const char *what, uint64_t *out)
{
    const char *s;
    size_t      v;

    if ((o != NULL) && PyUnicode_Check(o)) {
        s = PyUnicode_AsUTF8(o);
        if (s == NULL) {
            return -1;
        }

        if (dango_parse_size(s, &v) != 0) {
            PyErr_Format(PyExc_ValueError,
                         "%s: cannot read '%s' as a size (e.g. 16MB)", what, s);
            return -1;
        }

        *out = v;
        return 0;
    }

    return dpy_u64(o, what, out);
}

int dpy_key(PyObject *o, const char **key_p, PyObject **ref_p)
{
    const char *s;
    Py_ssize_t  len;

    if (PyUnicode_Check(o)) {
        s = PyUnicode_AsUTF8AndSize(o, &len);
        if (s == NULL) {
            return -1;
        }
    } else if (PyBytes_Check(o)) {
        s   = PyBytes_AS_STRING(o);
        len = PyBytes_GET_SIZE(o);
    } else {
        PyErr_Format(PyExc_TypeError, "a key must be str or bytes, not %.100s",
                     Py_TYPE(o)->tp_name);
        return -1;
    }

    if ((len == 0) || ((Py_ssize_t)strlen(s) != len)) {
        PyErr_SetString(PyExc_ValueError, (len == 0)
                                              ? "a key must not be empty"
                                              : "a key must not contain NUL");
        return -1;
    }

    if (len > 4096) {
        PyErr_SetString(PyExc_ValueError, "a key is at most 4096 bytes");
        return -1;
    }

    Py_INCREF(o);
    *key_p = s;
    *ref_p = o;
    return 0;
}

void dpy_keys_release(dpy_keys_t *k)
{
    if (k->refs != NULL) {
        for (size_t i = 0; i < k->n; i++) {
            Py_XDECREF(k->refs[i]);
        }
    }

    PyMem_Free(k->refs);
    PyMem_Free((void *)k->keys);
    memset(k, 0, sizeof(*k));
}

PyObject *dpy_seq_list(PyObject *o, const char *what)
{
    if ((o == NULL) || PyUnicode_Check(o) || PyBytes_Check(o) ||
        !PySequence_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list, not %.100s", what,
                     (o != NULL) ? Py_TYPE(o)->tp_name : "nothing");
        return NULL;
    }

    return PySequence_List(o);
}

int dpy_keys_get(PyObject *seq, size_t max, dpy_keys_t *k)
{
    PyObject *list = dpy_seq_list(seq, "keys");
    size_t    n;

    memset(k, 0, sizeof(*k));
    if (list == NULL) {
        return -1;
    }

    n = (size_t)PyList_GET_SIZE(list);
    if ((max > 0) && (n > max)) {
        PyErr_Format(PyExc_ValueError, "at most %zu keys per call", max);
        Py_DECREF(list);
        return -1;
    }

    k->keys = PyMem_Calloc(n + 1, sizeof(*k->keys));
    k->refs = PyMem_Calloc(n + 1, sizeof(*k->refs));
    if ((k->keys == NULL) || (k->refs == NULL)) {
        Py_DECREF(list);
        dpy_keys_release(k);
        PyErr_NoMemory();
        return -1;
    }

    for (size_t i = 0; i < n; i++) {
        if (dpy_key(PyList_GET_ITEM(list, i), &k->keys[i], &k->refs[i]) != 0) {
            k->n = i;
            Py_DECREF(list);
            dpy_keys_release(k);
            return -1;
        }
    }

    k->n = n;
    Py_DECREF(list);
    return 0;
}

int dpy_mem_get(PyObject *obj, PyObject *size_obj, int writable, dpy_mem_t *m)
{
    uint64_t addr, size = 0;
    int      has_size = (size_obj != NULL) && (size_obj != Py_None);

    memset(m, 0, sizeof(*m));
    if (has_size && (dpy_u64(size_obj, "size", &size) != 0)) {
        return -1;
    }

    if (PyLong_Check(obj) && !PyBool_Check(obj)) {
        if (dpy_u64(obj, "address", &addr) != 0) {
            return -1;
        }

        if (addr == 0) {
            PyErr_SetString(PyExc_ValueError, "address 0 is not valid");
            return -1;
        }

        if (!has_size) {
            PyErr_SetString(PyExc_TypeError,
                            "a raw address needs an explicit size");
            return -1;
        }

        if ((addr + size < addr) || (size > (uint64_t)PY_SSIZE_T_MAX) ||
            (addr > UINTPTR_MAX)) {
            PyErr_SetString(PyExc_ValueError, "address range overflows");
            return -1;
        }

        m->ptr = (char *)(uintptr_t)addr;
        m->len = (size_t)size;
        m->raw = 1;
        return 0;
    }

    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "expected an address (int) or an object with the buffer "
                     "protocol, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }

    if (PyObject_GetBuffer(obj, &m->view,
                           writable ? (PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
                                    : PyBUF_C_CONTIGUOUS) != 0) {
        /* BufferError for read-only or non-contiguous memory: a caller
         * mistake, reported as TypeError / ValueError like the rest. */
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Clear();
            PyErr_SetString(writable ? PyExc_TypeError : PyExc_ValueError,
                            writable ? "the buffer must be writable and "
                                       "C-contiguous"
                                     : "the buffer must be C-contiguous");
        }
        return -1;
    }

    m->has_view = 1;
    m->ptr      = m->view.buf;
    m->len      = (size_t)m->view.len;
    if (has_size) {
        if (size > m->len) {
            PyErr_Format(PyExc_ValueError,
                         "size %llu is larger than the buffer (%zd bytes)",
                         (unsigned long long)size, m->view.len);
            dpy_mem_release(m);
            return -1;
        }

        m->len = (size_t)size;
    }

    return 0;
}

void dpy_mem_release(dpy_mem_t *m)
{
    if (m->has_view) {
        PyBuffer_Release(&m->view);
        m->has_view = 0;
    }
}

PyObject *dpy_list_int(const int *v, size_t n)
{
    PyObject *l = PyList_New((Py_ssize_t)n);

    for (size_t i = 0; (l != NULL) && (i < n); i++) {
        PyObject *x = PyLong_FromLong(v[i]);

        if (x == NULL) {
            Py_CLEAR(l);
            break;
        }

        PyList_SET_ITEM(l, (Py_ssize_t)i, x);
    }

    return l;
}

PyObject *dpy_list_i64(const int64_t *v, size_t n)
{
    PyObject *l = PyList_New((Py_ssize_t)n);

    for (size_t i = 0; (l != NULL) && (i < n); i++) {
        PyObject *x = PyLong_FromLongLong(v[i]);

        if (x == NULL) {
            Py_CLEAR(l);
            break;
        }

        PyList_SET_ITEM(l, (Py_ssize_t)i, x);
    }

    return l;
}

/* ---------- enums ---------- */

PyObject *dpy_int_enum(const char *module, const char *name,
                       const char *const *names, const int *values, size_t n)
{
    PyObject *enum_mod, *int_enum, *members, *kw = NULL, *res = NULL;

    enum_mod = PyImport_ImportModule("enum");
    if (enum_mod == NULL) {
        return NULL;
    }

    int_enum = PyObject_GetAttrString(enum_mod, "IntEnum");
    Py_DECREF(enum_mod);
    members = PyList_New(0);
    if ((int_enum == NULL) || (members == NULL)) {
        goto out;
    }

    for (size_t i = 0; i < n; i++) {
        PyObject *item = Py_BuildValue("(si)", names[i], values[i]);

        if ((item == NULL) || (PyList_Append(members, item) != 0)) {
            Py_XDECREF(item);
            goto out;
        }

        Py_DECREF(item);
    }

    kw = Py_BuildValue("{s:s,s:s}", "module", module, "qualname", name);
    if (kw != NULL) {
        PyObject *args = Py_BuildValue("(sO)", name, members);

        if (args != NULL) {
            res = PyObject_Call(int_enum, args, kw);
            Py_DECREF(args);
        }
    }

out:
    Py_XDECREF(kw);
    Py_XDECREF(members);
    Py_XDECREF(int_enum);
    return res;
}

/* ---------- module ---------- */

static PyObject *py_version(PyObject *self, PyObject *noargs)
{
    return PyUnicode_FromString(dango_version_string());
}

static PyObject *py_err_name(PyObject *self, PyObject *arg)
{
    long v = PyLong_AsLong(arg);

    if ((v == -1) && PyErr_Occurred()) {
        return NULL;
    }

    if ((v < INT_MIN) || (v > INT_MAX)) {
        PyErr_SetString(PyExc_ValueError, "not an error code");
        return NULL;
    }

    return PyUnicode_FromString(dango_err_name((int)v));
}

static PyObject *py_strerror(PyObject *self, PyObject *arg)
{
    long v = PyLong_AsLong(arg);

    if ((v == -1) && PyErr_Occurred()) {
        return NULL;
    }

    if ((v < INT_MIN) || (v > INT_MAX)) {
        PyErr_SetString(PyExc_ValueError, "not an error code");
        return NULL;
    }

    return PyUnicode_FromString(dango_strerror((int)v));
}

static PyMethodDef dango_methods[] = {
    {"version", py_version, METH_NOARGS,
     "version() -> str: the version of the linked library."},
    {"err_name", py_err_name, METH_O,
     "err_name(code) -> str: the name of a Dango error code."},
    {"strerror", py_strerror, METH_O,
     "strerror(code) -> str: the message of a Dango error code."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef dango_def = {
    PyModuleDef_HEAD_INIT, .m_name = "dango",
    .m_doc  = "Dango: a KVCache-centric store and transfer engine.\n\n"
              "Submodules: dango.store (DistributedStore, "
              "MooncakeDistributedStore)\nand dango.engine (TransferEngine).",
    .m_size = -1, .m_methods = dango_methods};

static struct PyModuleDef store_def = {
    PyModuleDef_HEAD_INIT, .m_name = "dango.store",
    .m_doc  = "The distributed KVCache store: DistributedStore (native) and "
              "MooncakeDistributedStore (Mooncake's API and return "
              "conventions).",
    .m_size = -1};

static struct PyModuleDef engine_def = {
    PyModuleDef_HEAD_INIT, .m_name = "dango.engine",
    .m_doc  = "The transfer engine with Mooncake's TransferEngine API.",
    .m_size = -1};

/* Creates submodule @def, runs @init on it, and publishes it as
 * dango.<short> and sys.modules[def->m_name]. */
static int add_submodule(PyObject *pkg, struct PyModuleDef *def,
                         const char *short_name, int (*init)(PyObject *))
{
    PyObject *sub = PyModule_Create(def), *modules;

    if (sub == NULL) {
        return -1;
    }

    if ((init(sub) != 0) ||
        (PyModule_AddStringConstant(sub, "__package__", "dango") != 0)) {
        Py_DECREF(sub);
        return -1;
    }

    modules = PyImport_GetModuleDict();
    if (PyDict_SetItemString(modules, def->m_name, sub) != 0) {
        Py_DECREF(sub);
        return -1;
    }

    /* PyModule_AddObject steals the reference on success. */
    if (PyModule_AddObject(pkg, short_name, sub) != 0) {
        Py_DECREF(sub);
        return -1;
    }

    return 0;
}

PyMODINIT_FUNC PyInit_dango(void)
{
    PyObject *mod = PyModule_Create(&dango_def);

    if (mod == NULL) {
        return NULL;
    }

    if ((errors_init(mod) != 0) ||
        (PyModule_AddStringConstant(mod, "__version__",
                                    dango_version_string()) != 0) ||
        (add_submodule(mod, &store_def, "store", dpy_store_init) != 0) ||
        (add_submodule(mod, &engine_def, "engine", dpy_engine_init) != 0)) {
        Py_DECREF(mod);
        return NULL;
    }

    return mod;
}
