/*
 * Private declarations of the Python extension `dango` (the C files of
 * python/).
 *
 * The extension is one shared object that creates the modules `dango`,
 * `dango.store` and `dango.engine`. Everything here is used with the GIL
 * held unless a comment says otherwise; the library calls themselves run
 * with the GIL released (Py_BEGIN_ALLOW_THREADS), never touching a Python
 * object while it is released.
 */
#ifndef DANGO_PY_INT_H
#define DANGO_PY_INT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdint.h>

#include <dango/error.h>

/* ---------- errors ---------- */

/* dango.DangoError and dango.ObjectNotFoundError (created at import). */
extern PyObject *dpy_error_type;
extern PyObject *dpy_not_found_type;

/* Raises DangoError (ObjectNotFoundError for a missing object) for @err,
 * with @what as the context; returns NULL. */
PyObject *dpy_raise(int err, const char *what);

/* An exception instance for @err, not raised (batch results). */
PyObject *dpy_error_new(int err, const char *what);

/* ---------- call guard ----------
 *
 * Lets close() wait for the calls in flight on other threads instead of
 * freeing the client under them. enter() and leave() run with the GIL held
 * and take the mutex only for a counter update; close waits on the
 * condition variable with the GIL released. */
typedef struct dpy_guard {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    unsigned        active;  /* calls between enter and leave */
    int             closing; /* close() started: new calls refused */
} dpy_guard_t;

void dpy_guard_init(dpy_guard_t *g);
void dpy_guard_cleanup(dpy_guard_t *g);
/* 0 when the call may go on (@open says the handle exists), -1 if not. */
int  dpy_guard_enter(dpy_guard_t *g, int open);
void dpy_guard_leave(dpy_guard_t *g);
/* Refuses new calls and waits for those in flight (GIL released inside). */
void dpy_guard_drain(dpy_guard_t *g);
/* Accepts calls again once the handle was reopened. */
void dpy_guard_reopen(dpy_guard_t *g);

/* ---------- arguments ---------- */

/* A non-negative integer argument; TypeError / ValueError otherwise. */
int dpy_u64(PyObject *o, const char *what, uint64_t *out);

/* A size: a non-negative int or a string with a unit ("16MB", "16 MB",
 * "1.5g"); TypeError / ValueError otherwise. */
int dpy_size(PyObject *o, const char *what, uint64_t *out);

/* A key: str (UTF-8) or bytes, 1 byte or more, no NUL. On success *key_p
 * points into *ref_p, a new reference the caller releases. */
int dpy_key(PyObject *o, const char **key_p, PyObject **ref_p);

/* Keys of a sequence (list, tuple, ...), each checked as dpy_key(). The
 * references are owned by the struct, so the caller's list may change while
 * the GIL is released. */
typedef struct dpy_keys {
    size_t       n;
    const char **keys;
    PyObject   **refs;
} dpy_keys_t;

int  dpy_keys_get(PyObject *seq, size_t max, dpy_keys_t *k);
void dpy_keys_release(dpy_keys_t *k);

/* Caller memory: a raw address (an int, with an explicit size) or an object
 * exposing the buffer protocol (its view is held until release). */
typedef struct dpy_mem {
    char     *ptr;
    size_t    len;
    int       raw; /* 1: a raw address, 0: a buffer view */
    int       has_view;
    Py_buffer view;
} dpy_mem_t;

/*
 * Fills @m from @obj. @size_obj (may be NULL or None) is the length for a
 * raw address and an upper bound for a buffer (ValueError when larger than
 * the buffer). @writable asks for a writable buffer. Raw addresses of 0 are
 * a ValueError; whether a raw range is registered is for the library to
 * check.
 */
int  dpy_mem_get(PyObject *obj, PyObject *size_obj, int writable, dpy_mem_t *m);
void dpy_mem_release(dpy_mem_t *m);

/* A list of @n Python ints from C values. */
PyObject *dpy_list_int(const int *v, size_t n);
PyObject *dpy_list_i64(const int64_t *v, size_t n);

/* A sequence as a new list (TypeError naming @what if it is not one). */
PyObject *dpy_seq_list(PyObject *o, const char *what);

/* ---------- enums ---------- */

/* An enum.IntEnum named @name in module @module, with @n members. */
PyObject *dpy_int_enum(const char *module, const char *name,
                       const char *const *names, const int *values, size_t n);

/* ---------- submodules ---------- */

int dpy_store_init(PyObject *store_mod);
int dpy_engine_init(PyObject *engine_mod);

#endif /* DANGO_PY_INT_H */
