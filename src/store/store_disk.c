/*
 * Store node disk tier: records on a local file through io_uring.
 *
 * DESIGN
 *
 * Layout. The file is an array of 4 KiB blocks. A record is written as it
 * sits in a memory segment ([64 B header | key | value], commit word set)
 * at a block boundary and padded to whole blocks, so the file is
 * self-describing: opening the tier reads the file (its data: holes are
 * skipped with SEEK_DATA) in 1 MiB chunks and takes back every block that
 * starts a committed record (magic, version, header checksum over header
 * and key, commit word equal to
 * put_id ^ DANGO_STORE_REC_COMMIT_XOR, value xxh3 equal to the header's
 * checksum). A torn write (node killed mid-offload) fails the value
 * checksum and is not taken back. A dropped record has its first block
 * zeroed before its space is reused, so it cannot come back either.
 *
 * Space. A dango_store_alloc_t with a 4 KiB granule over the capacity.
 * Records are indexed by offset (hash map) and kept on an LRU list (writes
 * and reads move a record to the front); dango__sd_make_room() drops from
 * the back past the high watermark.
 *
 * I/O. One io_uring and one bounce buffer registered with it
 * (io_uring_register_buffers), so every transfer is a READ_FIXED or
 * WRITE_FIXED with O_DIRECT: 4 KiB-aligned memory, offset and length,
 * extents of up to 1 MiB, up to `depth` in flight. Records are copied into
 * the bounce buffer (a cold copy runs at about three times the disk's
 * bandwidth here) because segment regions are only 64-byte aligned. When
 * the file system refuses O_DIRECT the file is opened buffered and the
 * same code runs through the page cache.
 *
 * Not thread-safe: the node's disk thread owns a tier.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <liburing.h>

#define DANGO_LOG_COMPONENT dango__log_store_client

#include <dango/error.h>
#include <dango/log.h>
#include "common/alloc.h"
#include "common/hash.h"
#include "common/hmap.h"
#include "common/list.h"
#include "common/log_limit.h"
#include "store/store_alloc.h"
#include "store/store_disk.h"
#include "store/store_proto.h"

extern dango_log_component_t dango__log_store_client;

#define SD_EXTENT    (4u << 20) /* largest single transfer */
#define SD_SCAN_STEP (1u << 20)
#define SD_FILE_NAME "dango-disk.data"

#define SD_ALIGN_UP(_v) (((_v) + SD_BLOCK - 1) & ~(uint64_t)(SD_BLOCK - 1))

typedef struct sd_ent {
    dango_hmap_node_t node; /* key = &rec.off (8 bytes) */
    dango_list_link_t lru;  /* head = most recent */
    sd_rec_t          rec;
    uint64_t          asz; /* allocated bytes */
    char              key[];
} sd_ent_t;

struct sd_disk {
    sd_params_t          p;
    int                  fd;
    int                  direct;
    struct io_uring      ring;
    int                  ring_ok;
    char                *buf;
    dango_store_alloc_t *alloc;
    dango_hmap_t         idx;
    dango_list_link_t    lru;
    sd_stats_t           s;
    dango_log_limit_t    lim; /* I/O warnings: a failing disk fails often */
    char                 path[4096];
};

/* dango_warn() through the tier's limiter (5 lines a second). */
#define SD_WARN(_d, _fmt, ...)                                                 \
    do {                                                                       \
        unsigned _sd_dropped;                                                  \
                                                                               \
        if (dango__log_limit_allow(&(_d)->lim, &_sd_dropped)) {                \
            if (_sd_dropped > 0) {                                             \
                dango_warn("store_disk %s: %u similar warnings not logged",    \
                           (_d)->path, _sd_dropped);                           \
            }                                                                  \
            dango_warn(_fmt, ##__VA_ARGS__);                                   \
        }                                                                      \
    } while (0)

/* ---------- private functions ---------- */

static sd_ent_t *ent_find(sd_disk_t *d, uint64_t off)
{
    dango_hmap_node_t *n =
        dango_hmap_find(&d->idx, &off, sizeof(off), dango_hmap_hash(&off, 8));

    return (n == NULL) ? NULL : dango_container_of(n, sd_ent_t, node);
}

/*
 * Checks that @rec (@len bytes available) is a committed, intact record.
 * Returns its record length, or 0.
 */
static uint64_t rec_valid(const char *rec, uint64_t len)
{
    dango_store_rec_hdr_t h;
    uint64_t              rlen, voff;

    if (len < DANGO_STORE_REC_HDR_SIZE) {
        return 0;
    }

    memcpy(&h, rec, sizeof(h));
    if ((h.magic != DANGO_STORE_REC_MAGIC) ||
        (h.version != DANGO_STORE_REC_VERSION) || (h.key_len == 0) ||
        (h.commit != (h.put_id ^ DANGO_STORE_REC_COMMIT_XOR)) ||
        (h.value_len == 0)) {
        return 0;
    }

    voff = dango_store_rec_value_off(h.key_len);
    rlen = voff + h.value_len;
    if ((rlen < h.value_len) || (rlen > len) ||
        (h.hdr_checksum != dango_store_rec_hdr_sum(&h, rec + sizeof(h))) ||
        (dango_hash64(rec + voff, h.value_len) != h.checksum)) {
        return 0;
    }

    return rlen;
}

/* Header-only check (the value may not be read yet): 0 or record length. */
static uint64_t hdr_valid(const char *rec, uint64_t cap)
{
    dango_store_rec_hdr_t h;
    uint64_t              rlen;

    memcpy(&h, rec, sizeof(h));
    if ((h.magic != DANGO_STORE_REC_MAGIC) ||
        (h.version != DANGO_STORE_REC_VERSION) || (h.key_len == 0) ||
        (h.value_len == 0) || (h.value_len > cap) ||
        (h.commit != (h.put_id ^ DANGO_STORE_REC_COMMIT_XOR)) ||
        (h.hdr_checksum != dango_store_rec_hdr_sum(&h, rec + sizeof(h)))) {
        return 0;
    }

    rlen = dango_store_rec_size(h.key_len, h.value_len);
    return (rlen <= cap) ? rlen : 0;
}

static int ent_add(sd_disk_t *d, const char *rec, uint64_t off, uint64_t asz)
{
    dango_store_rec_hdr_t h;
    sd_ent_t             *e;

    memcpy(&h, rec, sizeof(h));
    e = dango_malloc(sizeof(*e) + h.key_len + 1, "store_disk_ent");
    if (e == NULL) {
        return DANGO_ENOMEM;
    }

    memcpy(e->key, rec + sizeof(h), h.key_len);
    e->key[h.key_len] = '\0';
    e->rec.key        = e->key;
    e->rec.klen       = h.key_len;
    e->rec.size       = h.value_len;
    e->rec.checksum   = h.checksum;
    e->rec.put_id     = h.put_id;
    e->rec.off        = off;
    e->rec.rec_len    = dango_store_rec_size(h.key_len, h.value_len);
    e->asz            = asz;
    e->node.key       = &e->rec.off;
    e->node.key_len   = sizeof(e->rec.off);
    e->node.hash      = dango_hmap_hash(&e->rec.off, sizeof(e->rec.off));
    dango_hmap_insert(&d->idx, &e->node);
    dango_list_add_head(&d->lru, &e->lru);
    d->s.records++;
    d->s.used += asz;
    return 0;
}

static void ent_free(sd_disk_t *d, sd_ent_t *e)
{
    dango_hmap_remove(&d->idx, &e->node);
    dango_list_del(&e->lru);
    dango__store_alloc_free(d->alloc, e->rec.off);
    d->s.records--;
    d->s.used -= e->asz;
    dango_free(e);
}

/* One transfer: bounce offset, file offset, length (block multiples). */
typedef struct sd_io {
    uint64_t boff, foff, len;
    uint64_t done;
    int      res;
    unsigned pending; /* extents in the kernel */
    uint64_t queued;  /* bytes handed to the kernel */
    char    *mem;     /* NULL: the bounce buffer at boff; else this memory
                         inside the extra registered buffer (index 1) */
} sd_io_t;

/*
 * A queue of transfers in flight: ioq_add() submits every extent of one
 * transfer at once (at most SD_EXTENT each, at most `depth` in flight,
 * reaping completions when full); @on_done runs for a transfer as soon as
 * its last extent completed, while others are still in flight (so copying
 * or verifying one record overlaps the I/O of the next).
 */
typedef struct sd_ioq {
    sd_io_t *io;
    unsigned inflight;
    int      write;
    void (*on_done)(sd_disk_t *d, struct sd_ioq *q, size_t i);
    void *arg;
} sd_ioq_t;

/* Reaps completions: at least one if @wait, else what is there. */
static void ioq_reap(sd_disk_t *d, sd_ioq_t *q, int wait)
{
    struct io_uring_cqe *cqe;

    while (q->inflight > 0) {
        uint64_t ud;
        size_t   i;
        uint64_t len;
        int      rc = wait ? io_uring_wait_cqe(&d->ring, &cqe)
                           : io_uring_peek_cqe(&d->ring, &cqe);

        if (rc != 0) {
            if (wait && (rc == -EINTR)) {
                continue;
            }
            return;
        }

        ud  = io_uring_cqe_get_data64(cqe);
        i   = (size_t)(ud >> 32);
        len = (ud & 0xffffffffu) << 12;
        if (cqe->res < 0) {
            if (q->io[i].res == 0) {
                q->io[i].res = DANGO__ERR(-cqe->res);
            }
        } else if ((uint64_t)cqe->res != len) {
            /* Short transfer: end of file or a full device. */
            if (q->io[i].res == 0) {
                q->io[i].res = q->write ? DANGO_ENOSPC : DANGO_ERANGE;
            }
        } else {
            q->io[i].done += len;
        }
        io_uring_cqe_seen(&d->ring, cqe);
        q->inflight--;
        if ((--q->io[i].pending == 0) && (q->io[i].queued == q->io[i].len) &&
            (q->on_done != NULL)) {
            q->on_done(d, q, i);
        }
        wait = 0;
    }
}

/* Submits every extent of transfer @i. */
static void ioq_add(sd_disk_t *d, sd_ioq_t *q, size_t i)
{
    sd_io_t *io = &q->io[i];

    io->done    = 0;
    io->res     = 0;
    io->pending = 0;
    io->queued  = 0;
    while (io->queued < io->len) {
        struct io_uring_sqe *sqe;
        uint64_t             l = io->len - io->queued;

        if (q->inflight >= d->p.depth) {
            io_uring_submit(&d->ring);
            ioq_reap(d, q, 1);
            continue;
        }
        sqe = io_uring_get_sqe(&d->ring);
        if (sqe == NULL) {
            io_uring_submit(&d->ring);
            continue;
        }

        l = (l > SD_EXTENT) ? SD_EXTENT : l;
        if (io->mem != NULL) {
            io_uring_prep_read_fixed(sqe, d->fd, io->mem + io->queued,
                                     (unsigned)l, io->foff + io->queued, 1);
        } else if (q->write) {
            io_uring_prep_write_fixed(sqe, d->fd,
                                      d->buf + io->boff + io->queued,
                                      (unsigned)l, io->foff + io->queued, 0);
        } else {
            io_uring_prep_read_fixed(sqe, d->fd, d->buf + io->boff + io->queued,
                                     (unsigned)l, io->foff + io->queued, 0);
        }
        /* (index, length in blocks) */
        io_uring_sqe_set_data64(sqe, ((uint64_t)i << 32) | (l >> 12));
        q->inflight++;
        io->pending++;
        io->queued += l;
    }
    io_uring_submit(&d->ring);
    ioq_reap(d, q, 0);
}

static void ioq_drain(sd_disk_t *d, sd_ioq_t *q)
{
    while (q->inflight > 0) {
        ioq_reap(d, q, 1);
    }
}

/* Runs @n transfers and waits for them (io[i].res, io[i].done). */
static void io_run(sd_disk_t *d, sd_io_t *io, size_t n, int write)
{
    sd_ioq_t q = {io, 0, write, NULL, NULL};

    for (size_t i = 0; i < n; i++) {
        ioq_add(d, &q, i);
    }
    ioq_drain(d, &q);
}

/* Zeroes the first block at @off (drop): best effort. */
static void block_kill(sd_disk_t *d, uint64_t off)
{
    sd_io_t io = {0, off, SD_BLOCK, 0, 0, 0, 0, NULL};

    memset(d->buf, 0, SD_BLOCK);
    io_run(d, &io, 1, 1);
    if (io.res != 0) {
        SD_WARN(d, "store_disk %s: clearing record at %" PRIu64 ": %s", d->path,
                off, dango_strerror(io.res));
    }
}

/* Takes back the committed records of the file (see DESIGN). */
static void scan(sd_disk_t *d)
{
    uint64_t off = 0, cap = d->p.capacity;
    uint64_t chunk =
        (d->p.buf_size < SD_SCAN_STEP) ? d->p.buf_size : SD_SCAN_STEP;

    while (off < cap) {
        uint64_t len = (cap - off < chunk) ? cap - off : chunk;
        sd_io_t  io  = {0, off, len, 0, 0, 0, 0, NULL};
        uint64_t adv = SD_BLOCK;
        off_t    data;

        /* Holes of a sparse file hold no record: skip them. */
        data = lseek(d->fd, (off_t)off, SEEK_DATA);
        if ((data < 0) && (errno == ENXIO)) {
            break; /* nothing was ever written past here */
        }
        if ((data > 0) && ((uint64_t)data > off)) {
            off = (uint64_t)data & ~(uint64_t)(SD_BLOCK - 1);
            continue;
        }

        io_run(d, &io, 1, 0);
        if (io.done < SD_BLOCK) {
            break; /* end of the written part of the file */
        }

        len = io.done;
        for (uint64_t b = 0; b < len; b += adv) {
            uint64_t rlen = hdr_valid(d->buf + b, cap - off - b);
            uint64_t asz;
            int      ok = 0;

            adv = SD_BLOCK;
            if (rlen == 0) {
                continue;
            }

            asz = SD_ALIGN_UP(rlen);
            if (b + rlen <= len) {
                ok = rec_valid(d->buf + b, rlen) != 0;
            } else if (asz <= d->p.buf_size) {
                sd_io_t r = {0, off + b, asz, 0, 0, 0, 0, NULL};

                io_run(d, &r, 1, 0);
                ok = (r.res == 0) && (rec_valid(d->buf, rlen) != 0);
                if (ok &&
                    (dango__store_alloc_reserve(d->alloc, off + b, asz) == 0)) {
                    if (ent_add(d, d->buf, off + b, asz) == 0) {
                        d->s.scanned++;
                    }
                }
                /* The chunk in the buffer is gone: continue after it. */
                off = ok ? off + b + asz : off + b + SD_BLOCK;
                goto next_chunk;
            }

            if (ok &&
                (dango__store_alloc_reserve(d->alloc, off + b, asz) == 0) &&
                (ent_add(d, d->buf + b, off + b, asz) == 0)) {
                d->s.scanned++;
                adv = asz;
            }
        }

        off += len;
    next_chunk:;
    }
}

/* ---------- internal API ---------- */

int dango__sd_open(const char *path, const sd_params_t *p, sd_disk_t **d_p)
{
    sd_disk_t   *d;
    struct stat  st;
    struct iovec iov[2];
    int          rc;

    if ((path == NULL) || (path[0] == '\0') || (p == NULL) ||
        (p->capacity < SD_BLOCK) || (d_p == NULL)) {
        return DANGO_EINVAL;
    }

    d = dango_calloc(1, sizeof(*d), "store_disk");
    if (d == NULL) {
        return DANGO_ENOMEM;
    }

    d->p          = *p;
    d->p.capacity = p->capacity & ~(uint64_t)(SD_BLOCK - 1);
    if (d->p.buf_size == 0) {
        d->p.buf_size = 16u << 20;
    }
    d->p.buf_size = SD_ALIGN_UP(d->p.buf_size);
    if (d->p.depth == 0) {
        d->p.depth = 32;
    }
    if ((d->p.high_wm <= 0) || (d->p.high_wm > 1)) {
        d->p.high_wm = 0.95;
    }
    d->fd  = -1;
    d->lim = (dango_log_limit_t)DANGO_LOG_LIMIT_INIT(5);
    dango_list_init(&d->lru);

    if ((stat(path, &st) == 0) && S_ISDIR(st.st_mode)) {
        snprintf(d->path, sizeof(d->path), "%s/%s", path, SD_FILE_NAME);
    } else {
        snprintf(d->path, sizeof(d->path), "%s", path);
    }

    d->fd     = open(d->path, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
    d->direct = d->fd >= 0;
    if (d->fd < 0) {
        d->fd = open(d->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    }
    if (d->fd < 0) {
        rc = DANGO__ERR(errno);
        dango_error("store_disk %s: open: %m", d->path);
        goto err_free;
    }

    /* One tier per file: a second node on it would overwrite records. */
    if (flock(d->fd, LOCK_EX | LOCK_NB) != 0) {
        rc = (errno == EWOULDBLOCK) ? DANGO_EBUSY : DANGO__ERR(errno);
        dango_error("store_disk %s: in use by another tier: %m", d->path);
        goto err_close;
    }

    if ((fstat(d->fd, &st) == 0) && S_ISREG(st.st_mode) &&
        ((uint64_t)st.st_size < d->p.capacity) &&
        (ftruncate(d->fd, (off_t)d->p.capacity) != 0)) {
        /* A size-limited file system: keep what exists, writes will fail. */
        dango_warn("store_disk %s: cannot extend to %" PRIu64 " bytes: %m",
                   d->path, d->p.capacity);
    }

    d->buf = mmap(NULL, d->p.buf_size, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (d->buf == MAP_FAILED) {
        d->buf = NULL;
        rc     = DANGO_ENOMEM;
        goto err_close;
    }

    rc = io_uring_queue_init(d->p.depth * 2, &d->ring, 0);
    if (rc < 0) {
        dango_error("store_disk %s: io_uring_queue_init: %s", d->path,
                    strerror(-rc));
        rc = DANGO__ERR(-rc);
        goto err_unmap;
    }
    d->ring_ok = 1;

    iov[0].iov_base = d->buf;
    iov[0].iov_len  = d->p.buf_size;
    iov[1].iov_base = d->p.extra;
    iov[1].iov_len  = d->p.extra_len;
    if ((d->p.extra != NULL) &&
        (((uintptr_t)d->p.extra % SD_BLOCK != 0) || (d->p.extra_len == 0))) {
        rc = DANGO_EINVAL;
        goto err_ring;
    }
    rc = io_uring_register_buffers(&d->ring, iov, (d->p.extra != NULL) ? 2 : 1);
    if (rc < 0) {
        dango_error("store_disk %s: io_uring_register_buffers: %s", d->path,
                    strerror(-rc));
        rc = DANGO__ERR(-rc);
        goto err_ring;
    }

    rc = dango__store_alloc_create(d->p.capacity, SD_BLOCK, &d->alloc);
    if (rc != 0) {
        goto err_ring;
    }

    rc = dango_hmap_init(&d->idx, 0);
    if (rc != 0) {
        goto err_alloc;
    }

    d->s.capacity = d->p.capacity;
    scan(d);
    dango_info(
        "store_disk %s: %" PRIu64 " bytes%s, %" PRIu64 " records taken back",
        d->path, d->p.capacity, d->direct ? " (O_DIRECT)" : "", d->s.scanned);
    *d_p = d;
    return 0;

err_alloc:
    dango__store_alloc_destroy(d->alloc);
err_ring:
    io_uring_queue_exit(&d->ring);
err_unmap:
    munmap(d->buf, d->p.buf_size);
err_close:
    close(d->fd);
err_free:
    dango_free(d);
    return rc;
}

void dango__sd_close(sd_disk_t *d)
{
    sd_ent_t *e, *t;

    if (d == NULL) {
        return;
    }

    dango_list_for_each_safe(e, t, &d->lru, lru)
    {
        dango_hmap_remove(&d->idx, &e->node);
        dango_free(e);
    }
    dango_hmap_cleanup(&d->idx);
    dango__store_alloc_destroy(d->alloc);
    io_uring_queue_exit(&d->ring);
    munmap(d->buf, d->p.buf_size);
    close(d->fd);
    dango_free(d);
}

void dango__sd_write(sd_disk_t *d, size_t n, const void *const *recs,
                     const uint64_t *lens, int *status, uint64_t *offs)
{
    size_t i = 0;

    while (i < n) {
        sd_io_t  io[64];
        size_t   idx[64];
        size_t   m    = 0;
        uint64_t boff = 0;
        sd_ioq_t q    = {io, 0, 1, NULL, NULL};

        /* One round: as many records as fit in the bounce buffer, each
         * submitted as soon as it is copied (its write overlaps the copy
         * of the next). */
        for (; (i < n) && (m < 64); i++) {
            uint64_t len = lens[i];
            uint64_t asz = SD_ALIGN_UP(len);
            uint64_t off;

            status[i] = 0;
            if ((len < DANGO_STORE_REC_HDR_SIZE) ||
                (hdr_valid(recs[i], len) != len)) {
                status[i] = DANGO_EINVAL;
                continue;
            }
            if (asz > d->p.buf_size) {
                status[i] = DANGO_EMSGSIZE;
                continue;
            }
            if (boff + asz > d->p.buf_size) {
                break;
            }
            if (dango__store_alloc_alloc(d->alloc, asz, &off, NULL) != 0) {
                status[i] = DANGO_ENOSPC;
                continue;
            }

            /* Verified in the copy that is written: the source region may
             * have been freed and reused since the task was queued. */
            memcpy(d->buf + boff, recs[i], len);
            if (rec_valid(d->buf + boff, len) != len) {
                dango__store_alloc_free(d->alloc, off);
                status[i] = DANGO_EINVAL;
                continue;
            }
            memset(d->buf + boff + len, 0, asz - len);
            io[m]   = (sd_io_t){boff, off, asz, 0, 0, 0, 0, NULL};
            idx[m]  = i;
            offs[i] = off;
            ioq_add(d, &q, m);
            boff += asz;
            m++;
        }

        ioq_drain(d, &q);
        for (size_t k = 0; k < m; k++) {
            size_t j = idx[k];

            if ((io[k].res == 0) &&
                (ent_add(d, d->buf + io[k].boff, io[k].foff, io[k].len) == 0)) {
                d->s.writes++;
                d->s.write_bytes += io[k].len;
                continue;
            }

            status[j] = (io[k].res != 0) ? io[k].res : DANGO_ENOMEM;
            d->s.write_errors++;
            SD_WARN(d,
                    "store_disk %s: writing %" PRIu64 " bytes at %" PRIu64
                    ": %s",
                    d->path, io[k].len, io[k].foff, dango_strerror(status[j]));
            dango__store_alloc_free(d->alloc, io[k].foff);
        }
    }
}

/* Per round of dango__sd_read_many(): request of each transfer. */
typedef struct sd_rround {
    sd_read_req_t *reqs;
    size_t         idx[64];
    sd_ent_t      *ents[64];
} sd_rround_t;

/* A read finished: verify in the bounce buffer, copy out. */
static void read_done(sd_disk_t *d, sd_ioq_t *q, size_t k)
{
    sd_rround_t   *rr  = q->arg;
    sd_read_req_t *r   = &rr->reqs[rr->idx[k]];
    sd_ent_t      *e   = rr->ents[k];
    sd_io_t       *io  = &q->io[k];
    const char    *rec = (io->mem != NULL) ? io->mem : d->buf + io->boff;

    if (io->res != 0) {
        d->s.read_errors++;
        SD_WARN(d,
                "store_disk %s: reading %" PRIu64 " bytes at %" PRIu64 ": %s",
                d->path, io->len, io->foff, dango_strerror(io->res));
        r->status = io->res;
        return;
    }

    if ((rec_valid(rec, e->rec.rec_len) != e->rec.rec_len) ||
        (dango_store_rec_check(rec, r->key, (uint16_t)r->klen, e->rec.size,
                               e->rec.checksum, r->put_id) != 0)) {
        r->status = DANGO_ECORRUPT;
        return; /* dropped after the round (the buffer is in use) */
    }

    if (io->mem == NULL) {
        memcpy(r->dst, rec, e->rec.rec_len);
    }
    d->s.reads++;
    d->s.read_bytes += e->asz;
    dango_list_del(&e->lru);
    dango_list_add_head(&d->lru, &e->lru);
    r->status = 0;
}

void dango__sd_read_many(sd_disk_t *d, size_t n, sd_read_req_t *reqs)
{
    size_t i = 0;

    while (i < n) {
        sd_io_t     io[64];
        sd_rround_t rr;
        size_t      m    = 0;
        uint64_t    boff = 0;
        sd_ioq_t    q    = {io, 0, 0, read_done, &rr};

        rr.reqs = reqs;
        for (; (i < n) && (m < 64); i++) {
            sd_read_req_t *r = &reqs[i];
            sd_ent_t      *e = ent_find(d, r->off);

            r->status = DANGO_ENOENT;
            if ((e == NULL) || (e->rec.put_id != r->put_id) ||
                (e->rec.klen != r->klen) ||
                (memcmp(e->key, r->key, r->klen) != 0)) {
                continue;
            }
            if (r->cap < e->rec.rec_len) {
                r->status = DANGO_ERANGE;
                continue;
            }
            if ((d->p.extra != NULL) && (r->cap >= e->asz) &&
                ((uintptr_t)r->dst % SD_BLOCK == 0) &&
                ((char *)r->dst >= (char *)d->p.extra) &&
                ((char *)r->dst + e->asz <=
                 (char *)d->p.extra + d->p.extra_len)) {
                /* Straight into registered memory: no bounce, no copy. */
                io[m]      = (sd_io_t){0, r->off, e->asz, 0, 0, 0, 0, r->dst};
                rr.idx[m]  = i;
                rr.ents[m] = e;
                ioq_add(d, &q, m);
                m++;
                continue;
            }
            if (e->asz > d->p.buf_size) {
                r->status = DANGO_EMSGSIZE;
                continue;
            }
            if (boff + e->asz > d->p.buf_size) {
                break;
            }

            io[m]      = (sd_io_t){boff, r->off, e->asz, 0, 0, 0, 0, NULL};
            rr.idx[m]  = i;
            rr.ents[m] = e;
            ioq_add(d, &q, m);
            boff += e->asz;
            m++;
        }

        ioq_drain(d, &q);
        for (size_t k = 0; k < m; k++) {
            sd_read_req_t *r = &reqs[rr.idx[k]];

            if (r->status == DANGO_ECORRUPT) {
                SD_WARN(d,
                        "store_disk %s: record of '%s' at %" PRIu64
                        " is corrupt: dropped",
                        d->path, rr.ents[k]->key, r->off);
                d->s.corrupt++;
                dango__sd_drop(d, r->off);
            }
        }
    }
}

int dango__sd_read(sd_disk_t *d, uint64_t off, const char *key, size_t klen,
                   uint64_t put_id, void *dst, uint64_t cap)
{
    sd_read_req_t r = {off, key, klen, put_id, dst, cap, 0};

    dango__sd_read_many(d, 1, &r);
    return r.status;
}

const sd_rec_t *dango__sd_find(sd_disk_t *d, uint64_t off)
{
    sd_ent_t *e = ent_find(d, off);

    return (e == NULL) ? NULL : &e->rec;
}

int dango__sd_drop(sd_disk_t *d, uint64_t off)
{
    sd_ent_t *e = ent_find(d, off);

    if (e == NULL) {
        return DANGO_ENOENT;
    }

    block_kill(d, off);
    ent_free(d, e);
    return 0;
}

size_t dango__sd_make_room(sd_disk_t *d, uint64_t                          need,
                           void (*cb)(void *arg, const sd_rec_t *r), void *arg)
{
    uint64_t limit = (uint64_t)((double)d->p.capacity * d->p.high_wm);
    size_t   n     = 0;

    need = SD_ALIGN_UP(need);
    while ((d->s.used + need > limit) && !dango_list_is_empty(&d->lru)) {
        sd_ent_t *e = dango_container_of(d->lru.prev, sd_ent_t, lru);

        if (cb != NULL) {
            cb(arg, &e->rec);
        }
        block_kill(d, e->rec.off);
        ent_free(d, e);
        d->s.evicted++;
        n++;
    }

    return n;
}

void dango__sd_foreach(sd_disk_t *d, void (*cb)(void *arg, const sd_rec_t *r),
                       void      *arg)
{
    sd_ent_t *e;

    dango_list_for_each(e, &d->lru, lru)
    {
        cb(arg, &e->rec);
    }
}

void dango__sd_stats(const sd_disk_t *d, sd_stats_t *s)
{
    *s = d->s;
}
