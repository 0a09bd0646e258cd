/*
 * The value types of `dango.store`: ReplicateConfig, BufferHandle,
 * ReplicaDescriptor and the enums SoftPinAction and ReplicaStatus.
 *
 * ReplicateConfig keeps its fields as plain Python objects (so integration
 * code may set them freely, as with Mooncake's class) and checks them when a
 * call converts it (dpy_cfg_get): a wrong type is a TypeError there.
 *
 * BufferHandle owns memory the library allocated for a get
 * (dango_store_get_alloc) and exposes it through the buffer protocol
 * without a copy; it is freed when the handle is released or collected,
 * never while a memoryview of it is alive.
 */
/* Python.h first: it sets macros the C library headers read. */
#include "py_store.h"

#include <structmember.h>

#include <stddef.h>
#include <string.h>

PyObject *dpy_soft_pin_enum;
PyObject *dpy_replica_status_enum;

/* Mooncake's ReplicaStatus numbers. */
enum {
    RS_UNDEFINED   = 0,
    RS_INITIALIZED = 1,
    RS_PROCESSING  = 2,
    RS_COMPLETE    = 3,
    RS_REMOVED     = 4,
    RS_FAILED      = 5
};

/* ---------- ReplicateConfig ---------- */

typedef struct dpy_repl {
    PyObject_HEAD PyObject *replica_num;
    PyObject               *with_soft_pin;
    PyObject               *with_hard_pin;
    PyObject               *soft_pin_action;
    PyObject               *soft_pin_ttl_ms;
    PyObject               *preferred_segments;
    PyObject               *preferred_segment;
    PyObject               *prefer_alloc_in_same_node;
} dpy_repl_t;

static int repl_init(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"replica_num",
                             "with_soft_pin",
                             "with_hard_pin",
                             "soft_pin_ttl_ms",
                             "preferred_segments",
                             "preferred_segment",
                             "soft_pin_action",
                             "prefer_alloc_in_same_node",
                             NULL};
    dpy_repl_t  *r        = (dpy_repl_t *)self;
    PyObject    *v[8]     = {NULL};
    PyObject   **slot[8]  = {
           &r->replica_num,        &r->with_soft_pin,
           &r->with_hard_pin,      &r->soft_pin_ttl_ms,
           &r->preferred_segments, &r->preferred_segment,
           &r->soft_pin_action,    &r->prefer_alloc_in_same_node};

    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OOOOOOOO", kwlist, &v[0],
                                     &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                                     &v[7])) {
        return -1;
    }

    for (int i = 0; i < 8; i++) {
        if (v[i] != NULL) {
            Py_INCREF(v[i]);
            Py_XSETREF(*slot[i], v[i]);
        }
    }

    return 0;
}

static PyObject *repl_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    dpy_repl_t *r = (dpy_repl_t *)type->tp_alloc(type, 0);

    if (r == NULL) {
        return NULL;
    }

    r->replica_num               = PyLong_FromLong(1);
    r->with_soft_pin             = Py_NewRef(Py_False);
    r->with_hard_pin             = Py_NewRef(Py_False);
    r->soft_pin_action           = Py_NewRef(Py_None);
    r->soft_pin_ttl_ms           = Py_NewRef(Py_None);
    r->preferred_segments        = PyList_New(0);
    r->preferred_segment         = PyUnicode_FromString("");
    r->prefer_alloc_in_same_node = Py_NewRef(Py_False);
    if ((r->replica_num == NULL) || (r->preferred_segments == NULL) ||
        (r->preferred_segment == NULL)) {
        Py_DECREF(r);
        return NULL;
    }

    return (PyObject *)r;
}

static int repl_traverse(PyObject *self, visitproc visit, void *arg)
{
    dpy_repl_t *r = (dpy_repl_t *)self;

    Py_VISIT(r->replica_num);
    Py_VISIT(r->with_soft_pin);
    Py_VISIT(r->with_hard_pin);
    Py_VISIT(r->soft_pin_action);
    Py_VISIT(r->soft_pin_ttl_ms);
    Py_VISIT(r->preferred_segments);
    Py_VISIT(r->preferred_segment);
    Py_VISIT(r->prefer_alloc_in_same_node);
    return 0;
}

static int repl_clear(PyObject *self)
{
    dpy_repl_t *r = (dpy_repl_t *)self;

    Py_CLEAR(r->replica_num);
    Py_CLEAR(r->with_soft_pin);
    Py_CLEAR(r->with_hard_pin);
    Py_CLEAR(r->soft_pin_action);
    Py_CLEAR(r->soft_pin_ttl_ms);
    Py_CLEAR(r->preferred_segments);
    Py_CLEAR(r->preferred_segment);
    Py_CLEAR(r->prefer_alloc_in_same_node);
    return 0;
}

static void repl_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    repl_clear(self);
    Py_TYPE(self)->tp_free(self);
}

static PyObject *repl_repr(PyObject *self)
{
    dpy_repl_t *r = (dpy_repl_t *)self;

    return PyUnicode_FromFormat(
        "ReplicateConfig(replica_num=%R, with_soft_pin=%R, with_hard_pin=%R, "
        "soft_pin_ttl_ms=%R, preferred_segments=%R, preferred_segment=%R)",
        r->replica_num, r->with_soft_pin, r->with_hard_pin, r->soft_pin_ttl_ms,
        r->preferred_segments, r->preferred_segment);
}

#define REPL_MEMBER(_name, _doc)                                               \
    {                                                                          \
#_name, T_OBJECT_EX, offsetof(dpy_repl_t, _name), 0, _doc              \
    }

static PyMemberDef repl_members[] = {
    REPL_MEMBER(replica_num, "memory replicas on distinct segments (1..8)"),
    REPL_MEMBER(with_soft_pin, "soft pin the object (SoftPinAction.ENABLE)"),
    REPL_MEMBER(with_hard_pin, "never evict; removable only by force"),
    REPL_MEMBER(soft_pin_action,
                "SoftPinAction, or None to follow with_soft_pin"),
    REPL_MEMBER(soft_pin_ttl_ms, "soft pin TTL in ms, or None for the "
                                 "master's MASTER_SOFT_PIN_TTL"),
    REPL_MEMBER(preferred_segments, "segment names tried first, in order"),
    REPL_MEMBER(preferred_segment, "one segment name tried first (\"\": none)"),
    REPL_MEMBER(prefer_alloc_in_same_node,
                "accepted for compatibility; placement follows "
                "preferred_segments"),
    {NULL, 0, 0, 0, NULL}};

PyTypeObject dpy_replicate_config_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dango.store.ReplicateConfig",
    .tp_basicsize                          = sizeof(dpy_repl_t),
    .tp_flags   = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc     = "ReplicateConfig(replica_num=1, with_soft_pin=False, "
                  "with_hard_pin=False, soft_pin_ttl_ms=None, "
                  "preferred_segments=[], preferred_segment='')\n\n"
                  "How a put places and protects an object.",
    .tp_new     = repl_new,
    .tp_init    = repl_init,
    .tp_dealloc = repl_dealloc,
    .tp_traverse = repl_traverse,
    .tp_clear    = repl_clear,
    .tp_members  = repl_members,
    .tp_repr     = repl_repr,
};

static int cfg_bool(PyObject *o, const char *what, int *out)
{
    int v;

    if ((o == NULL) || (o == Py_None)) {
        *out = 0;
        return 0;
    }

    if (!PyBool_Check(o) && !PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "ReplicateConfig.%s must be a bool",
                     what);
        return -1;
    }

    v = PyObject_IsTrue(o);
    if (v < 0) {
        return -1;
    }

    *out = v;
    return 0;
}

int dpy_cfg_get(PyObject *obj, dpy_cfg_t *c)
{
    dpy_repl_t *r;
    uint64_t    v;
    int         b;
    PyObject   *segs = NULL;

    memset(c, 0, sizeof(*c));
    if ((obj == NULL) || (obj == Py_None)) {
        return 0;
    }

    if (!PyObject_TypeCheck(obj, &dpy_replicate_config_type)) {
        PyErr_Format(PyExc_TypeError,
                     "config must be a ReplicateConfig or None, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }

    r = (dpy_repl_t *)obj;
    if (dpy_u64(r->replica_num, "ReplicateConfig.replica_num", &v) != 0) {
        return -1;
    }

    if (v > DANGO_STORE_REPLICA_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "ReplicateConfig.replica_num must be 0..%d",
                     DANGO_STORE_REPLICA_MAX);
        return -1;
    }

    c->cfg.replica_num = (unsigned)v;
    if (cfg_bool(r->with_hard_pin, "with_hard_pin", &b) != 0) {
        return -1;
    }

    c->cfg.with_hard_pin = b;
    if (cfg_bool(r->with_soft_pin, "with_soft_pin", &b) != 0) {
        return -1;
    }

    c->cfg.soft_pin =
        b ? DANGO_STORE_SOFT_PIN_ENABLE : DANGO_STORE_SOFT_PIN_PRESERVE;
    if ((r->soft_pin_action != NULL) && (r->soft_pin_action != Py_None)) {
        if ((dpy_u64(r->soft_pin_action, "ReplicateConfig.soft_pin_action",
                     &v) != 0)) {
            return -1;
        }

        if (v > DANGO_STORE_SOFT_PIN_DISABLE) {
            PyErr_SetString(PyExc_ValueError,
                            "ReplicateConfig.soft_pin_action must be a "
                            "SoftPinAction");
            return -1;
        }

        c->cfg.soft_pin = (dango_store_soft_pin_t)v;
    }

    if ((r->soft_pin_ttl_ms != NULL) && (r->soft_pin_ttl_ms != Py_None)) {
        if (dpy_u64(r->soft_pin_ttl_ms, "ReplicateConfig.soft_pin_ttl_ms",
                    &c->cfg.soft_pin_ttl_ms) != 0) {
            return -1;
        }
    }

    /* preferred_segment first, then preferred_segments. */
    segs = PyList_New(0);
    if (segs == NULL) {
        return -1;
    }

    if ((r->preferred_segment != NULL) && (r->preferred_segment != Py_None)) {
        if (!PyUnicode_Check(r->preferred_segment)) {
            PyErr_SetString(PyExc_TypeError,
                            "ReplicateConfig.preferred_segment must be a str");
            goto err;
        }

        if ((PyUnicode_GET_LENGTH(r->preferred_segment) > 0) &&
            (PyList_Append(segs, r->preferred_segment) != 0)) {
            goto err;
        }
    }

    if ((r->preferred_segments != NULL) && (r->preferred_segments != Py_None)) {
        PyObject *more = dpy_seq_list(r->preferred_segments,
                                      "ReplicateConfig.preferred_segments");

        if (more == NULL) {
            goto err;
        }

        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(more); i++) {
            if (PyList_Append(segs, PyList_GET_ITEM(more, i)) != 0) {
                Py_DECREF(more);
                goto err;
            }
        }

        Py_DECREF(more);
    }

    if (PyList_GET_SIZE(segs) > DANGO_STORE_PREFERRED_MAX) {
        PyErr_Format(PyExc_ValueError, "at most %d preferred segments",
                     DANGO_STORE_PREFERRED_MAX);
        goto err;
    }

    if (dpy_keys_get(segs, 0, &c->segs) != 0) {
        goto err;
    }

    Py_DECREF(segs);
    c->cfg.preferred_segments = c->segs.keys;
    c->cfg.preferred_count    = (unsigned)c->segs.n;
    c->p                      = &c->cfg;
    return 0;

err:
    Py_DECREF(segs);
    return -1;
}

void dpy_cfg_release(dpy_cfg_t *c)
{
    dpy_keys_release(&c->segs);
    c->p = NULL;
}

/* ---------- BufferHandle ---------- */

typedef struct dpy_bufh {
    PyObject_HEAD void *ptr;
    size_t              len;
    Py_ssize_t          exports;
} dpy_bufh_t;

PyObject *dpy_buffer_handle_new(void *ptr, size_t len)
{
    dpy_bufh_t *h = PyObject_New(dpy_bufh_t, &dpy_buffer_handle_type);

    if (h == NULL) {
        dango_store_free(ptr);
        return NULL;
    }

    h->ptr     = ptr;
    h->len     = len;
    h->exports = 0;
    return (PyObject *)h;
}

static void bufh_dealloc(PyObject *self)
{
    dpy_bufh_t *h = (dpy_bufh_t *)self;

    dango_store_free(h->ptr);
    PyObject_Free(self);
}

static int bufh_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
    dpy_bufh_t *h = (dpy_bufh_t *)self;

    if (h->ptr == NULL) {
        PyErr_SetString(PyExc_ValueError, "the BufferHandle was released");
        view->obj = NULL;
        return -1;
    }

    if (PyBuffer_FillInfo(view, self, h->ptr, (Py_ssize_t)h->len, 0, flags) !=
        0) {
        return -1;
    }

    h->exports++;
    return 0;
}

static void bufh_releasebuffer(PyObject *self, Py_buffer *view)
{
    ((dpy_bufh_t *)self)->exports--;
}

static PyBufferProcs bufh_as_buffer = {bufh_getbuffer, bufh_releasebuffer};

static PyObject *bufh_ptr(PyObject *self, PyObject *noargs)
{
    return PyLong_FromVoidPtr(((dpy_bufh_t *)self)->ptr);
}

static PyObject *bufh_size(PyObject *self, PyObject *noargs)
{
    dpy_bufh_t *h = (dpy_bufh_t *)self;

    return PyLong_FromSize_t((h->ptr != NULL) ? h->len : 0);
}

static PyObject *bufh_release(PyObject *self, PyObject *noargs)
{
    dpy_bufh_t *h = (dpy_bufh_t *)self;

    if (h->exports > 0) {
        PyErr_SetString(PyExc_BufferError,
                        "a memoryview of this BufferHandle is still alive");
        return NULL;
    }

    dango_store_free(h->ptr);
    h->ptr = NULL;
    h->len = 0;
    Py_RETURN_NONE;
}

static PyObject *bufh_enter(PyObject *self, PyObject *noargs)
{
    return Py_NewRef(self);
}

static PyObject *bufh_exit(PyObject *self, PyObject *args)
{
    return bufh_release(self, NULL);
}

static Py_ssize_t bufh_len(PyObject *self)
{
    dpy_bufh_t *h = (dpy_bufh_t *)self;

    return (h->ptr != NULL) ? (Py_ssize_t)h->len : 0;
}

static PySequenceMethods bufh_as_seq = {.sq_length = bufh_len};

static PyMethodDef bufh_methods[] = {
    {"ptr", bufh_ptr, METH_NOARGS, "ptr() -> int: address of the first byte"},
    {"size", bufh_size, METH_NOARGS, "size() -> int: bytes"},
    {"release", bufh_release, METH_NOARGS,
     "release(): frees the memory now (BufferError while a memoryview of it "
     "is alive)"},
    {"__enter__", bufh_enter, METH_NOARGS, NULL},
    {"__exit__", bufh_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}};

PyTypeObject dpy_buffer_handle_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dango.store.BufferHandle",
    .tp_basicsize                          = sizeof(dpy_bufh_t),
    .tp_flags                              = Py_TPFLAGS_DEFAULT,
    .tp_doc         = "A value in memory owned by Dango, exposed through the "
                      "buffer protocol (memoryview(h), numpy.frombuffer(h)) "
                      "without a copy. Freed by release() or when collected.",
    .tp_dealloc     = bufh_dealloc,
    .tp_as_buffer   = &bufh_as_buffer,
    .tp_as_sequence = &bufh_as_seq,
    .tp_methods     = bufh_methods,
};

/* ---------- ReplicaDescriptor ---------- */

typedef struct dpy_rdesc {
    PyObject_HEAD PyObject *status;
    PyObject               *segment_name;
    PyObject               *address;
    PyObject               *size;
} dpy_rdesc_t;

static void rdesc_dealloc(PyObject *self)
{
    dpy_rdesc_t *d = (dpy_rdesc_t *)self;

    Py_XDECREF(d->status);
    Py_XDECREF(d->segment_name);
    Py_XDECREF(d->address);
    Py_XDECREF(d->size);
    PyObject_Free(self);
}

static PyObject *rdesc_true(PyObject *self, PyObject *noargs)
{
    Py_RETURN_TRUE;
}

static PyObject *rdesc_false(PyObject *self, PyObject *noargs)
{
    Py_RETURN_FALSE;
}

static PyObject *rdesc_repr(PyObject *self)
{
    dpy_rdesc_t *d = (dpy_rdesc_t *)self;

    return PyUnicode_FromFormat(
        "ReplicaDescriptor(memory, segment_name=%R, status=%R, size=%R)",
        d->segment_name, d->status, d->size);
}

static PyMethodDef rdesc_methods[] = {
    {"is_memory_replica", rdesc_true, METH_NOARGS,
     "True: the replica is in a memory segment"},
    {"is_disk_replica", rdesc_false, METH_NOARGS,
     "False: Dango keeps replicas in memory"},
    {"is_local_disk_replica", rdesc_false, METH_NOARGS,
     "False: Dango keeps replicas in memory"},
    {NULL, NULL, 0, NULL}};

static PyMemberDef rdesc_members[] = {
    {"status", T_OBJECT, offsetof(dpy_rdesc_t, status), READONLY,
     "ReplicaStatus"},
    {"segment_name", T_OBJECT, offsetof(dpy_rdesc_t, segment_name), READONLY,
     "name of the segment (node) holding the replica"},
    {"transport_endpoint", T_OBJECT, offsetof(dpy_rdesc_t, segment_name),
     READONLY, "alias of segment_name"},
    {"buffer_address", T_OBJECT, offsetof(dpy_rdesc_t, address), READONLY,
     "address of the record in that segment"},
    {"size", T_OBJECT, offsetof(dpy_rdesc_t, size), READONLY, "value bytes"},
    {NULL, 0, 0, 0, NULL}};

PyTypeObject dpy_replica_desc_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dango.store.ReplicaDescriptor",
    .tp_basicsize                          = sizeof(dpy_rdesc_t),
    .tp_flags                              = Py_TPFLAGS_DEFAULT,
    .tp_doc     = "Where one replica of an object lives "
                  "(get_replica_desc).",
    .tp_dealloc = rdesc_dealloc,
    .tp_methods = rdesc_methods,
    .tp_members = rdesc_members,
    .tp_repr    = rdesc_repr,
};

PyObject *dpy_replica_descs(const dango_store_object_info_t *info)
{
    PyObject *list = PyList_New(0);

    for (unsigned i = 0; (list != NULL) && (i < info->num_replicas); i++) {
        const dango_store_replica_info_t *ri = &info->replicas[i];
        dpy_rdesc_t *d = PyObject_New(dpy_rdesc_t, &dpy_replica_desc_type);

        if (d == NULL) {
            Py_CLEAR(list);
            break;
        }

        d->status =
            PyObject_CallFunction(dpy_replica_status_enum, "i",
                                  ri->complete ? RS_COMPLETE : RS_PROCESSING);
        d->segment_name = PyUnicode_DecodeUTF8(
            ri->segment, (Py_ssize_t)strnlen(ri->segment, sizeof(ri->segment)),
            "replace");
        d->address = PyLong_FromUnsignedLongLong(ri->addr);
        d->size    = PyLong_FromUnsignedLongLong(info->size);
        if ((d->status == NULL) || (d->segment_name == NULL) ||
            (d->address == NULL) || (d->size == NULL) ||
            (PyList_Append(list, (PyObject *)d) != 0)) {
            Py_DECREF(d);
            Py_CLEAR(list);
            break;
        }

        Py_DECREF(d);
    }

    return list;
}

/* ---------- module ---------- */

int dpy_store_types_init(PyObject *mod)
{
    static const char *const sp_names[] = {"PRESERVE", "ENABLE", "DISABLE"};
    static const int         sp_vals[]  = {DANGO_STORE_SOFT_PIN_PRESERVE,
                                           DANGO_STORE_SOFT_PIN_ENABLE,
                                           DANGO_STORE_SOFT_PIN_DISABLE};
    static const char *const rs_names[] = {"UNDEFINED",  "INITIALIZED",
                                           "PROCESSING", "COMPLETE",
                                           "REMOVED",    "FAILED"};
    static const int rs_vals[] = {RS_UNDEFINED, RS_INITIALIZED, RS_PROCESSING,
                                  RS_COMPLETE,  RS_REMOVED,     RS_FAILED};
    PyTypeObject    *types[]   = {&dpy_replicate_config_type,
                                  &dpy_buffer_handle_type, &dpy_replica_desc_type};
    const char      *names[]   = {"ReplicateConfig", "BufferHandle",
                                  "ReplicaDescriptor"};

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

    dpy_soft_pin_enum = dpy_int_enum("dango.store", "SoftPinAction", sp_names,
                                     sp_vals, DANGO_ARRAY_SIZE(sp_vals));
    dpy_replica_status_enum =
        dpy_int_enum("dango.store", "ReplicaStatus", rs_names, rs_vals,
                     DANGO_ARRAY_SIZE(rs_vals));
    if ((dpy_soft_pin_enum == NULL) || (dpy_replica_status_enum == NULL)) {
        return -1;
    }

    Py_INCREF(dpy_soft_pin_enum);
    Py_INCREF(dpy_replica_status_enum);
    if ((PyModule_AddObject(mod, "SoftPinAction", dpy_soft_pin_enum) != 0) ||
        (PyModule_AddObject(mod, "ReplicaStatus", dpy_replica_status_enum) !=
         0)) {
        return -1;
    }

    return 0;
}
