/*
 * Store client (node side): the disk tier's thread.
 *
 * DESIGN
 *
 * A node with STORE_DISK_PATH owns a disk tier (store_disk.c) next to its
 * memory segment. One thread owns the tier and talks to the master with
 * DiskPoll (see store_master_disk.c): each call reports the tasks finished
 * since the last one and the records the tier dropped by itself, and
 * returns new tasks; with nothing to do the master holds the call for up
 * to 100 ms, so tasks reach the node at once without a busy poll.
 *
 *   - OFFLOAD: the record at `addr` of our own segment is copied into the
 *     tier's registered bounce buffer, verified there (header, commit word,
 *     value checksum: the region could have been freed and reused since
 *     the task was queued), and written with O_DIRECT; all offloads of one
 *     reply are in flight together. Before writing, the tier drops least
 *     recently used records past STORE_DISK_HIGH_WATERMARK (reported to
 *     the master in the next poll).
 *   - LOAD: the record at `off` is read, verified, and copied into the
 *     region the master allocated in our segment.
 *   - drops: records the master no longer wants (removed or overwritten)
 *     are cleared on disk and freed.
 *
 * After a start (or when the master answers DANGO_ENEED_REMOUNT: a new
 * master) the thread reports every record the tier holds, in chunks, the
 * first with `reset`. A master that does not answer is retried every
 * 100 ms; finished tasks are reported again until one poll gets through.
 */
#include <inttypes.h>
#include <string.h>

#include "common/alloc.h"
#include "common/time.h"
#include "store/store_client_int.h"
#include "store/store_disk.h"
#include "store/store_proto.h"

/* Records reported per poll after a (re)start. */
#define SC_DISK_REPORT_CHUNK 4096
/* Pause after a failed poll. */
#define SC_DISK_RETRY_NS (100ull * DANGO_NSEC_PER_MSEC)
/* Bound on one poll (the master holds it 100 ms at most; destroy waits for
 * a poll in flight). */
#define SC_DISK_POLL_NS (2ull * DANGO_NSEC_PER_SEC)
/* Smallest tier. */
#define SC_DISK_MIN (1ull << 20)
/* How long a record staged for a reader stays (the master's
 * MS_DISK_STAGE_MS; the reader's lease is half of it). */
#define SC_DISK_STAGE_NS (1000ull * DANGO_NSEC_PER_MSEC)

/* A staged record: freed at free_at (monotonic ns). */
typedef struct sc_stage_slot {
    uint64_t off;
    uint64_t free_at;
} sc_stage_slot_t;

typedef struct sc_disk {
    dango_store_client_t *c;
    sd_disk_t            *d;
    pthread_t             thread;
    pthread_mutex_t       lock;
    pthread_cond_t        cond;
    int                   stop;
    /* Finished tasks and self-dropped records not yet reported. */
    Dango__Store__DiskDone   *done;
    size_t                    ndone, done_cap;
    Dango__Store__DiskRecord *dropped;
    size_t                    ndropped, dropped_cap;
    /* Report after a (re)start: a snapshot, sent in chunks. */
    int                       reset;
    Dango__Store__DiskRecord *report;
    size_t                    nreport, report_pos;
    /* Staging for readers: registered memory, slots freed after a TTL. */
    char                *stage;
    size_t               stage_size;
    dango_store_alloc_t *stage_alloc;
    sc_stage_slot_t     *slots; /* ring, oldest first */
    size_t               slots_cap, slots_head, nslots;
} sc_disk_t;

/* ---------- private functions ---------- */

static void done_add(sc_disk_t *sd, uint64_t id, int status, uint64_t off)
{
    if (sd->ndone == sd->done_cap) {
        size_t cap = (sd->done_cap == 0) ? 256 : sd->done_cap * 2;
        void *p = dango_realloc(sd->done, cap * sizeof(*sd->done), "disk_done");

        if (p == NULL) {
            return; /* the master times the task out */
        }
        sd->done     = p;
        sd->done_cap = cap;
    }

    dango__store__disk_done__init(&sd->done[sd->ndone]);
    sd->done[sd->ndone].task_id = id;
    sd->done[sd->ndone].status  = status;
    sd->done[sd->ndone].off     = off;
    sd->ndone++;
}

/* A record copied out (key included), for a report or a drop. */
static int rec_copy(Dango__Store__DiskRecord *o, const sd_rec_t *r)
{
    uint8_t *k = dango_malloc(r->klen + 1, "disk_rec_key");

    if (k == NULL) {
        return DANGO_ENOMEM;
    }
    memcpy(k, r->key, r->klen);
    dango__store__disk_record__init(o);
    o->key.data = k;
    o->key.len  = r->klen;
    o->size     = r->size;
    o->checksum = r->checksum;
    o->put_id   = r->put_id;
    o->off      = r->off;
    return 0;
}

static void dropped_add(void *arg, const sd_rec_t *r)
{
    sc_disk_t *sd = arg;

    if (sd->ndropped == sd->dropped_cap) {
        size_t cap = (sd->dropped_cap == 0) ? 256 : sd->dropped_cap * 2;
        void  *p   = dango_realloc(sd->dropped, cap * sizeof(*sd->dropped),
                                   "disk_dropped");

        if (p == NULL) {
            return; /* the master finds out on its next load of it */
        }
        sd->dropped     = p;
        sd->dropped_cap = cap;
    }

    if (rec_copy(&sd->dropped[sd->ndropped], r) == 0) {
        sd->ndropped++;
    }
}

static void recs_free(Dango__Store__DiskRecord *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dango_free(v[i].key.data);
    }
}

static void report_add(void *arg, const sd_rec_t *r)
{
    sc_disk_t *sd = arg;

    if (rec_copy(&sd->report[sd->nreport], r) == 0) {
        sd->nreport++;
    }
}

/* Snapshot of every record, to report from the start. */
static void report_begin(sc_disk_t *sd)
{
    sd_stats_t s;

    recs_free(sd->report, sd->nreport);
    dango_free(sd->report);
    sd->report     = NULL;
    sd->nreport    = 0;
    sd->report_pos = 0;
    sd->reset      = 1;
    dango__sd_stats(sd->d, &s);
    if (s.records == 0) {
        return;
    }

    sd->report = dango_calloc(s.records, sizeof(*sd->report), "disk_report");
    if (sd->report != NULL) {
        dango__sd_foreach(sd->d, report_add, sd);
    }
}

/* Frees the staged records whose time is up. */
static void stage_reclaim(sc_disk_t *sd, uint64_t now)
{
    while ((sd->nslots > 0) &&
           ((sd->slots[sd->slots_head].free_at <= now) ||
            (sd->slots[sd->slots_head].off == UINT64_MAX))) {
        if (sd->slots[sd->slots_head].off != UINT64_MAX) {
            dango__store_alloc_free(sd->stage_alloc,
                                    sd->slots[sd->slots_head].off);
        }
        sd->slots_head = (sd->slots_head + 1) % sd->slots_cap;
        sd->nslots--;
    }
}

/* A reader is done with the staged record at @addr: free it now. */
static void stage_release(sc_disk_t *sd, uint64_t addr)
{
    uint64_t base = (uint64_t)(uintptr_t)sd->stage;

    if ((addr < base) || (addr - base >= sd->stage_size)) {
        return;
    }

    for (size_t k = 0; k < sd->nslots; k++) {
        sc_stage_slot_t *s = &sd->slots[(sd->slots_head + k) % sd->slots_cap];

        if (s->off == addr - base) {
            dango__store_alloc_free(sd->stage_alloc, s->off);
            s->off = UINT64_MAX; /* the ring skips it */
            return;
        }
    }
}

/* A slot of @len bytes in the staging buffer: 0 or DANGO_ENOSPC. */
static int stage_alloc(sc_disk_t *sd, uint64_t len, uint64_t *off_p)
{
    stage_reclaim(sd, dango_time_ns());
    if ((sd->nslots == sd->slots_cap) ||
        (dango__store_alloc_alloc(sd->stage_alloc, len, off_p, NULL) != 0)) {
        return DANGO_ENOSPC; /* too many reads in flight for the buffer */
    }
    return 0;
}

/* Keeps staged slot @off until a reader releases it or its time is up. */
static void stage_keep(sc_disk_t *sd, uint64_t off)
{
    sd->slots[(sd->slots_head + sd->nslots) % sd->slots_cap] =
        (sc_stage_slot_t){off, dango_time_ns() + SC_DISK_STAGE_NS};
    sd->nslots++;
}

/* 1 if [addr, addr + len) lies in our segment. */
static int in_segment(dango_store_client_t *c, uint64_t addr, uint64_t len)
{
    uint64_t base = (uint64_t)(uintptr_t)c->seg_base;

    return (addr >= base) && (len <= c->seg_size) &&
           (addr - base <= c->seg_size - len);
}

static void run_tasks(sc_disk_t *sd, const Dango__Store__DiskPollResp *resp)
{
    dango_store_client_t *c = sd->c;
    size_t                n = resp->n_tasks, m = 0;
    const void          **recs;
    uint64_t             *lens, *offs, need = 0;
    int                  *status;
    size_t               *idx;

    for (size_t i = 0; i < resp->n_released; i++) {
        stage_release(sd, resp->released[i]);
    }

    for (size_t i = 0; i < resp->n_drops; i++) {
        const Dango__Store__DiskRecord *r = resp->drops[i];
        const sd_rec_t                 *h = dango__sd_find(sd->d, r->off);

        if ((h != NULL) && (h->put_id == r->put_id)) {
            dango__sd_drop(sd->d, r->off);
        }
    }

    if (n == 0) {
        return;
    }

    recs   = dango_calloc(n, sizeof(*recs), "disk_task_recs");
    lens   = dango_calloc(n, sizeof(*lens), "disk_task_lens");
    offs   = dango_calloc(n, sizeof(*offs), "disk_task_offs");
    status = dango_calloc(n, sizeof(*status), "disk_task_status");
    idx    = dango_calloc(n, sizeof(*idx), "disk_task_idx");
    if ((recs == NULL) || (lens == NULL) || (offs == NULL) ||
        (status == NULL) || (idx == NULL)) {
        for (size_t i = 0; i < n; i++) {
            done_add(sd, resp->tasks[i]->id, DANGO_ENOMEM, 0);
        }
        goto out;
    }

    /* Loads first (a reader waits for each), all in flight together: into the
     * region the master gave us (promotion), or into our staging buffer for a
     * reader (addr 0). */
    {
        sd_read_req_t *rq =
            (sd_read_req_t *)dango_calloc(n, sizeof(*rq), "disk_task_reads");
        size_t    nr   = 0;
        uint64_t *soff = offs; /* reused: staging slot per read */

        if (rq == NULL) {
            for (size_t i = 0; i < n; i++) {
                if (resp->tasks[i]->kind == DANGO_STORE_DISK_LOAD) {
                    done_add(sd, resp->tasks[i]->id, DANGO_ENOMEM, 0);
                }
            }
        }

        for (size_t i = 0; (rq != NULL) && (i < n); i++) {
            const Dango__Store__DiskTask *t = resp->tasks[i];
            void                         *dst;
            int                           rc;

            if (t->kind != DANGO_STORE_DISK_LOAD) {
                if (t->kind != DANGO_STORE_DISK_OFFLOAD) {
                    done_add(sd, t->id, DANGO_ENOTSUP, 0);
                }
                continue;
            }

            if (t->addr == 0) {
                rc  = stage_alloc(sd, DANGO_ALIGN_UP(t->length, SD_BLOCK),
                                  &soff[nr]);
                dst = (rc == 0) ? sd->stage + soff[nr] : NULL;
            } else {
                rc       = in_segment(c, t->addr, t->length) ? 0 : DANGO_EINVAL;
                soff[nr] = UINT64_MAX;
                dst      = (void *)(uintptr_t)t->addr;
            }
            if (rc != 0) {
                done_add(sd, t->id, rc, 0);
                continue;
            }

            /* A staging slot is whole blocks: the read lands there. */
            rq[nr] = (sd_read_req_t){
                t->off,
                (const char *)t->key.data,
                t->key.len,
                t->put_id,
                dst,
                (t->addr == 0) ? DANGO_ALIGN_UP(t->length, SD_BLOCK) : t->length,
                0};
            idx[nr] = i;
            nr++;
        }

        dango__sd_read_many(sd->d, nr, rq);
        for (size_t k = 0; k < nr; k++) {
            uint64_t addr = 0;

            if (soff[k] != UINT64_MAX) {
                if (rq[k].status == 0) {
                    stage_keep(sd, soff[k]);
                    addr = (uint64_t)(uintptr_t)(sd->stage + soff[k]);
                } else {
                    dango__store_alloc_free(sd->stage_alloc, soff[k]);
                }
            }
            done_add(sd, resp->tasks[idx[k]]->id, rq[k].status, addr);
        }
        dango_free(rq);
    }

    /* Offloads: all of them in flight together. */
    m = 0;
    for (size_t i = 0; i < n; i++) {
        const Dango__Store__DiskTask *t = resp->tasks[i];

        if (t->kind != DANGO_STORE_DISK_OFFLOAD) {
            continue;
        }
        if (!in_segment(c, t->addr, t->length)) {
            done_add(sd, t->id, DANGO_EINVAL, 0);
            continue;
        }
        recs[m] = (const void *)(uintptr_t)t->addr;
        lens[m] = t->length;
        idx[m]  = i;
        need += (t->length + SD_BLOCK - 1) & ~(uint64_t)(SD_BLOCK - 1);
        m++;
    }

    if (m > 0) {
        dango__sd_make_room(sd->d, need, dropped_add, sd);
        dango__sd_write(sd->d, m, recs, lens, status, offs);
        for (size_t k = 0; k < m; k++) {
            done_add(sd, resp->tasks[idx[k]]->id, status[k],
                     (status[k] == 0) ? offs[k] : 0);
        }
    }

out:
    dango_free(recs);
    dango_free(lens);
    dango_free(offs);
    dango_free(status);
    dango_free(idx);
}

/* Sleeps @ns unless stopped; returns 1 when stopped. */
static int disk_sleep(sc_disk_t *sd, uint64_t ns)
{
    struct timespec ts;
    uint64_t        until;
    int             stop;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    until =
        (uint64_t)ts.tv_sec * DANGO_NSEC_PER_SEC + (uint64_t)ts.tv_nsec + ns;
    ts.tv_sec  = (time_t)(until / DANGO_NSEC_PER_SEC);
    ts.tv_nsec = (long)(until % DANGO_NSEC_PER_SEC);
    pthread_mutex_lock(&sd->lock);
    if (!sd->stop) {
        pthread_cond_timedwait(&sd->cond, &sd->lock, &ts);
    }
    stop = sd->stop;
    pthread_mutex_unlock(&sd->lock);
    return stop;
}

static void *disk_thread(void *arg)
{
    sc_disk_t            *sd = arg;
    dango_store_client_t *c  = sd->c;

    report_begin(sd);
    while (!__atomic_load_n(&sd->stop, __ATOMIC_ACQUIRE)) {
        Dango__Store__DiskPollReq   req  = DANGO__STORE__DISK_POLL_REQ__INIT;
        Dango__Store__DiskPollResp *resp = NULL;
        Dango__Store__ClientId      id   = DANGO__STORE__CLIENT_ID__INIT;
        Dango__Store__DiskRecord  **recp = NULL, **dropp = NULL;
        Dango__Store__DiskDone    **donep = NULL;
        size_t                      nrep  = 0;
        sd_stats_t                  s;
        int                         rc;

        dango__sd_stats(sd->d, &s);
        id.hi        = c->id_hi;
        id.lo        = c->id_lo;
        req.client   = &id;
        req.capacity = s.capacity;
        req.used     = s.used;
        req.reads    = s.reads;
        req.writes   = s.writes;
        req.corrupt  = s.corrupt;
        req.reset    = sd->reset && (sd->report_pos == 0);
        nrep         = sd->nreport - sd->report_pos;
        nrep = (nrep > SC_DISK_REPORT_CHUNK) ? SC_DISK_REPORT_CHUNK : nrep;
        /* Hold only when there is nothing left to report. */
        req.wait = !sd->reset || (sd->report_pos + nrep == sd->nreport);

        recp = dango_calloc(nrep + 1, sizeof(*recp), "disk_poll_recs");
        dropp =
            dango_calloc(sd->ndropped + 1, sizeof(*dropp), "disk_poll_drop");
        donep = dango_calloc(sd->ndone + 1, sizeof(*donep), "disk_poll_done");
        if ((recp == NULL) || (dropp == NULL) || (donep == NULL)) {
            rc = DANGO_ENOMEM;
            goto next;
        }
        for (size_t i = 0; i < nrep; i++) {
            recp[i] = &sd->report[sd->report_pos + i];
        }
        for (size_t i = 0; i < sd->ndropped; i++) {
            dropp[i] = &sd->dropped[i];
        }
        for (size_t i = 0; i < sd->ndone; i++) {
            donep[i] = &sd->done[i];
        }
        req.n_records = nrep;
        req.records   = recp;
        req.n_dropped = sd->ndropped;
        req.dropped   = dropp;
        req.n_done    = sd->ndone;
        req.done      = donep;

        rc = dango__sc_call(c, DANGO_STORE_M_DISK_POLL, &req.base,
                            &dango__store__disk_poll_resp__descriptor,
                            (ProtobufCMessage **)&resp, SC_DISK_POLL_NS);
        if (rc != 0) {
            goto next;
        }

        /* Delivered. */
        recs_free(sd->dropped, sd->ndropped);
        sd->ndropped = 0;
        sd->ndone    = 0;
        if (resp->status == DANGO_ENEED_REMOUNT) {
            dango_info("store client %s: master asks for the disk tier's "
                       "records",
                       c->name);
            report_begin(sd);
        } else {
            if (sd->reset) {
                sd->report_pos += nrep;
                if (sd->report_pos == sd->nreport) {
                    sd->reset = 0;
                    recs_free(sd->report, sd->nreport);
                    dango_free(sd->report);
                    sd->report  = NULL;
                    sd->nreport = sd->report_pos = 0;
                }
            }
            run_tasks(sd, resp);
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);

    next:
        dango_free(recp);
        dango_free(dropp);
        dango_free(donep);
        if ((rc != 0) && disk_sleep(sd, SC_DISK_RETRY_NS)) {
            break;
        }
    }

    return NULL;
}

/* ---------- internal API ---------- */

int dango__sc_disk_start(dango_store_client_t *c)
{
    sd_params_t        p;
    sc_disk_t         *sd;
    pthread_condattr_t ca;
    int                rc;

    if ((c->cfg.disk_path == NULL) || (c->cfg.disk_path[0] == '\0')) {
        return 0;
    }

    if ((c->seg_base == NULL) || (c->cfg.disk_size < SC_DISK_MIN) ||
        !(c->cfg.disk_high_watermark > 0) || (c->cfg.disk_high_watermark > 1)) {
        dango_error("store client %s: STORE_DISK_PATH needs a segment "
                    "(STORE_SEGMENT_SIZE), STORE_DISK_SIZE of at least 1 MiB "
                    "and STORE_DISK_HIGH_WATERMARK in (0, 1]",
                    c->name);
        return DANGO_EINVAL;
    }

    sd = dango_calloc(1, sizeof(*sd), "store_client_disk");
    if (sd == NULL) {
        return DANGO_ENOMEM;
    }

    /* Staging first: the tier's ring reads straight into it (4 KiB slots,
     * registered with the ring too). */
    sd->c          = c;
    sd->stage_size = DANGO_ALIGN_UP(c->cfg.disk_staging, (size_t)SD_BLOCK);
    sd->slots_cap  = 65536;
    sd->slots = dango_calloc(sd->slots_cap, sizeof(*sd->slots), "disk_slots");
    rc        = (sd->slots == NULL)
                    ? DANGO_ENOMEM
                    : dango_xfer_mem_alloc(c->eng, sd->stage_size, NULL,
                                           DANGO_XFER_MEM_REMOTE, (void **)&sd->stage);
    if (rc == 0) {
        rc = dango__store_alloc_create(sd->stage_size, SD_BLOCK,
                                       &sd->stage_alloc);
    }
    if (rc != 0) {
        dango_error("store client %s: disk staging of %zu bytes: %s", c->name,
                    sd->stage_size, dango_strerror(rc));
        goto err_stage;
    }

    memset(&p, 0, sizeof(p));
    p.capacity  = c->cfg.disk_size;
    p.buf_size  = c->cfg.disk_buffer;
    p.high_wm   = c->cfg.disk_high_watermark;
    p.extra     = sd->stage;
    p.extra_len = sd->stage_size;
    rc          = dango__sd_open(c->cfg.disk_path, &p, &sd->d);
    if (rc != 0) {
        dango_error("store client %s: disk tier %s: %s", c->name,
                    c->cfg.disk_path, dango_strerror(rc));
        goto err_stage;
    }

    pthread_mutex_init(&sd->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sd->cond, &ca);
    pthread_condattr_destroy(&ca);
    rc = pthread_create(&sd->thread, NULL, disk_thread, sd);
    if (rc != 0) {
        rc = dango_err_from_errno(rc);
        pthread_mutex_destroy(&sd->lock);
        pthread_cond_destroy(&sd->cond);
        goto err_stage;
    }

    __atomic_store_n(&c->disk, sd, __ATOMIC_RELEASE); /* the ping thread */
    return 0;

err_stage:
    dango__sd_close(sd->d);
    dango__store_alloc_destroy(sd->stage_alloc);
    if (sd->stage != NULL) {
        dango_xfer_mem_free(c->eng, sd->stage);
    }
    dango_free(sd->slots);
    dango_free(sd);
    return rc;
}

void dango__sc_disk_stop(dango_store_client_t *c)
{
    sc_disk_t *sd = c->disk;

    if (sd == NULL) {
        return;
    }
    __atomic_store_n(&c->disk, NULL, __ATOMIC_RELEASE);

    pthread_mutex_lock(&sd->lock);
    __atomic_store_n(&sd->stop, 1, __ATOMIC_RELEASE);
    pthread_cond_signal(&sd->cond);
    pthread_mutex_unlock(&sd->lock);
    pthread_join(sd->thread, NULL);
    pthread_mutex_destroy(&sd->lock);
    pthread_cond_destroy(&sd->cond);
    dango__sd_close(sd->d);
    dango__store_alloc_destroy(sd->stage_alloc);
    dango_xfer_mem_free(c->eng, sd->stage);
    dango_free(sd->slots);
    recs_free(sd->dropped, sd->ndropped);
    recs_free(sd->report, sd->nreport);
    dango_free(sd->dropped);
    dango_free(sd->report);
    dango_free(sd->done);
    dango_free(sd);
    c->disk = NULL;
}
