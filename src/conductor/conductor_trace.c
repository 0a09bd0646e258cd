/*
 * Trace files: JSON Lines of {timestamp, input_length, output_length,
 * hash_ids}, the format of the FAST'25 Mooncake traces.
 *
 * DESIGN
 * A trace is loaded whole: the requests go into one array and all their
 * hash ids into another (a request points at its slice), so replays walk
 * memory linearly and a 12k-request trace loads in tens of milliseconds.
 * Each line is parsed on its own (jansson); a line that is not a JSON
 * object with the four fields in range is reported to the caller with its
 * 1-based number and skipped, so one bad line never costs the rest.
 */
#include "conductor/conductor_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/alloc.h"

/* A line longer than this is reported and skipped unparsed. */
#define TRACE_LINE_MAX (64u << 20)

typedef struct trace_req {
    double   timestamp_ms;
    uint64_t input_length;
    uint64_t output_length;
    size_t   off; /* first hash id in ids[] */
    size_t   n;
} trace_req_t;

struct dango_conductor_trace {
    trace_req_t *reqs;
    size_t       n, cap;
    uint64_t    *ids;
    size_t       n_ids, cap_ids;
    size_t       skipped;
};

/* ---------- private functions ---------- */

static int grow(void **buf, size_t *cap, size_t need, size_t elem,
                const char *name)
{
    size_t cap2;
    void  *p;

    if (need <= *cap) {
        return 0;
    }

    cap2 = (*cap == 0) ? 1024 : *cap;
    while (cap2 < need) {
        cap2 *= 2;
    }
    p = dango_realloc(*buf, cap2 * elem, name);
    if (p == NULL) {
        return DANGO_ENOMEM;
    }
    *buf = p;
    *cap = cap2;
    return 0;
}

/* Checks one parsed line and appends it. 0, a reason in @why (returns 1),
 * or DANGO_ENOMEM. */
static int trace_add(dango_conductor_trace_t *t, json_t *o, char *why,
                     size_t why_len)
{
    json_t     *ts, *in, *out, *ids;
    trace_req_t r;
    size_t      n;
    int         rc;

    if (!json_is_object(o)) {
        snprintf(why, why_len, "not a JSON object");
        return 1;
    }

    ts  = json_object_get(o, "timestamp");
    in  = json_object_get(o, "input_length");
    out = json_object_get(o, "output_length");
    ids = json_object_get(o, "hash_ids");
    if ((ts == NULL) || !json_is_number(ts) || !(json_number_value(ts) >= 0) ||
        !(json_number_value(ts) < 1e18)) {
        snprintf(why, why_len, "timestamp missing, not a number or negative");
        return 1;
    }
    if ((in == NULL) || !json_is_integer(in) || (json_integer_value(in) < 1)) {
        snprintf(why, why_len, "input_length missing or not an integer >= 1");
        return 1;
    }
    if ((out == NULL) || !json_is_integer(out) ||
        (json_integer_value(out) < 0)) {
        snprintf(why, why_len, "output_length missing or not an integer >= 0");
        return 1;
    }
    if ((ids == NULL) || !json_is_array(ids)) {
        snprintf(why, why_len, "hash_ids missing or not an array");
        return 1;
    }

    n = json_array_size(ids);
    if ((n == 0) || (n > DANGO_CONDUCTOR_MAX_BLOCKS)) {
        snprintf(why, why_len, "hash_ids has %zu entries (1..%d)", n,
                 DANGO_CONDUCTOR_MAX_BLOCKS);
        return 1;
    }

    rc = grow((void **)&t->ids, &t->cap_ids, t->n_ids + n, sizeof(uint64_t),
              "conductor_trace_ids");
    if (rc == 0) {
        rc = grow((void **)&t->reqs, &t->cap, t->n + 1, sizeof(trace_req_t),
                  "conductor_trace");
    }
    if (rc != 0) {
        return rc;
    }

    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(ids, i);

        if (!json_is_integer(v) || (json_integer_value(v) < 0)) {
            snprintf(why, why_len, "hash_ids[%zu] is not an integer >= 0", i);
            return 1;
        }
        t->ids[t->n_ids + i] = (uint64_t)json_integer_value(v);
    }

    r.timestamp_ms  = json_number_value(ts);
    r.input_length  = (uint64_t)json_integer_value(in);
    r.output_length = (uint64_t)json_integer_value(out);
    r.off           = t->n_ids;
    r.n             = n;
    t->reqs[t->n++] = r;
    t->n_ids += n;
    return 0;
}

static int blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if ((s[i] != ' ') && (s[i] != '\t') && (s[i] != '\r') &&
            (s[i] != '\n')) {
            return 0;
        }
    }
    return 1;
}

/* ---------- public API ---------- */

int dango_conductor_trace_load(const char                    *path,
                               dango_conductor_trace_error_cb cb, void *arg,
                               dango_conductor_trace_t **trace_p)
{
    dango_conductor_trace_t *t;
    FILE                    *f;
    char                    *line = NULL;
    size_t                   cap = 0, lineno = 0;
    ssize_t                  len;
    int                      rc = 0;

    if ((path == NULL) || (trace_p == NULL)) {
        return DANGO_EINVAL;
    }

    f = (strcmp(path, "-") == 0) ? stdin : fopen(path, "r");
    if (f == NULL) {
        return (errno == ENOMEM) ? DANGO_ENOMEM : DANGO_ENOENT;
    }

    t = dango_calloc(1, sizeof(*t), "conductor_trace");
    if (t == NULL) {
        rc = DANGO_ENOMEM;
        goto out_close;
    }

    while ((len = getline(&line, &cap, f)) >= 0) {
        char         why[160];
        json_error_t jerr;
        json_t      *o;

        lineno++;
        if (blank(line, (size_t)len)) {
            continue;
        }
        if ((size_t)len > TRACE_LINE_MAX) {
            snprintf(why, sizeof(why), "line longer than %u bytes",
                     TRACE_LINE_MAX);
            o = NULL;
        } else {
            o = json_loadb(line, (size_t)len, 0, &jerr);
            if (o == NULL) {
                snprintf(why, sizeof(why), "invalid JSON: %.120s", jerr.text);
            }
        }

        if (o != NULL) {
            rc = trace_add(t, o, why, sizeof(why));
            json_decref(o);
            if (rc < 0) {
                goto out_free;
            }
            if (rc == 0) {
                continue;
            }
            rc = 0;
        }

        t->skipped++;
        if (cb != NULL) {
            cb(arg, lineno, why);
        }
    }

    if (ferror(f)) {
        rc = DANGO_EIO;
        goto out_free;
    }
    if (t->n == 0) {
        rc = DANGO_EINVAL;
        goto out_free;
    }

    free(line);
    if (f != stdin) {
        fclose(f);
    }
    *trace_p = t;
    return 0;

out_free:
    dango_conductor_trace_destroy(t);
out_close:
    free(line);
    if (f != stdin) {
        fclose(f);
    }
    return rc;
}

void dango_conductor_trace_destroy(dango_conductor_trace_t *t)
{
    if (t == NULL) {
        return;
    }

    dango_free(t->reqs);
    dango_free(t->ids);
    dango_free(t);
}

size_t dango_conductor_trace_count(const dango_conductor_trace_t *t)
{
    return (t == NULL) ? 0 : t->n;
}

size_t dango_conductor_trace_skipped(const dango_conductor_trace_t *t)
{
    return (t == NULL) ? 0 : t->skipped;
}

int dango_conductor_trace_get(const dango_conductor_trace_t *t, size_t i,
                              dango_conductor_trace_req_t *r)
{
    if ((t == NULL) || (r == NULL) || (i >= t->n)) {
        return DANGO_ERANGE;
    }

    r->timestamp_ms  = t->reqs[i].timestamp_ms;
    r->input_length  = t->reqs[i].input_length;
    r->output_length = t->reqs[i].output_length;
    r->hash_ids      = t->ids + t->reqs[i].off;
    r->n_blocks      = t->reqs[i].n;
    return 0;
}
