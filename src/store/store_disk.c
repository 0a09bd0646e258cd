/*
 * Store node disk tier: records on a local file through io_uring.
 *
 * DESIGN
 *
 * Layout. The file is an array of 4 KiB blocks. A record is written as it
 * sits in a memory segment ([64 B header | key | value], commit word set)
 * at a block boundary and padded to whole blocks, so the file is
 * self-describing: a full scan reads the file (its data: holes are skipped
 * with SEEK_DATA) in 1 MiB chunks and takes back every block that starts a
 * committed record (magic, version, header checksum over header and key,
 * commit word equal to put_id ^ DANGO_STORE_REC_COMMIT_XOR, value xxh3
 * equal to the header's checksum). A torn write (node killed mid-offload)
 * fails the value checksum and is not taken back. A dropped record has its
 * first block zeroed before its space is reused, so it cannot come back
 * either.
 *
 * Index. A full scan reads the whole file, which at open takes as long as
 * reading the tier back. So an append-only log beside the data file
 * ("<data file>.index", ordinary buffered write() through its own fd; the
 * data file's flock makes the tier its single owner) says what is where:
 * a header {magic "DGOIDX1", version, capacity, checksum}, then entries
 * ADD {off, allocated bytes, put_id, value size, value checksum, key} and
 * DROP {off}, each with its length and an xxh3 of its bytes. Ordering:
 * an ADD is appended only after its record's write completed (records
 * whose write did not complete are never in the index, so a torn record
 * cannot come back through it); a DROP is appended before the record's
 * block is zeroed and its space freed (before the space can be reused).
 * Open replays the log (later entries win) up to its first bad entry (a
 * torn tail: process killed mid-append), rejects entries past the capacity
 * (or misaligned, or of a size no record has), and ADDs that would leave the
 * live entries naming more bytes than the capacity (those of a true log are
 * records allocated side by side, so they never do), as it reads them,
 * before any memory is taken for them: whatever a log holds, the replay
 * keeps at most one entry per block and fewer key bytes than the capacity.
 * It then reads only the first block (header and key) of every live entry,
 * many in flight and in offset order, and keeps those whose header is
 * intact and names the entry's key, put id, size and checksum and that
 * overlap no other kept entry; values are not read (every read verifies
 * them). A log replayed to its end with every entry kept is synced and appended
 * to as it is; one with anything to repair (a torn tail, an entry refused) is
 * rewritten compacted, and so is a log (at open or later) holding more than
 * max(4096, 2 x records) entries: live entries to "<index>.tmp", fdatasync,
 * rename, fsync of the directory. No fsync per entry: a dead node process
 * leaves its appends in the page cache; after a machine crash an entry may name
 * a record that did not reach the disk, or lack one that did: the former fails
 * the check at open or the value checksum at read (the record is dropped, never
 * returned), the latter only loses a record from the tier. A failed index
 * write (ENOSPC, EIO) never fails the data path: a failed append removes
 * the index (so the next open scans, which finds everything) and it is
 * rewritten whole later (after the same number of changes as a
 * compaction, or at close); a failed compaction leaves the log it would
 * have replaced in use (it is complete, only long). Without
 * a valid index (none, another capacity, bad header) open scans, then
 * writes a fresh index.
 *
 * Space. A dango_store_alloc_t with a 4 KiB granule over the capacity.
 * Records are indexed by offset (hash map) and kept on an LRU list (writes
 * and reads move a record to the front); dango__sd_make_room() drops from
 * the back past the high watermark.
 *
 * I/O. One io_uring and one bounce buffer registered with it
 * (io_uring_register_buffers), so every transfer is a READ_FIXED or
 * WRITE_FIXED with O_DIRECT: 4 KiB-aligned memory, offset and length,
 * extents of up to 4 MiB, up to `depth` in flight. Records are copied into
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
#include <stdlib.h>
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
#include "common/time.h"
#include "store/store_alloc.h"
#include "store/store_disk.h"
#include "store/store_proto.h"
#include "store/store_records.h"

extern dango_log_component_t dango__log_store_client;

#define SD_EXTENT    (4u << 20) /* largest single transfer */
#define SD_SCAN_STEP (1u << 20)
#define SD_FILE_NAME "dango-disk.data"

#define SD_IDX_SUFFIX   ".index"
#define SD_IDX_MAGIC    "DGOIDX1" /* 8 bytes with the NUL */
#define SD_IDX_VERSION  1u
#define SD_IDX_ADD      1u
#define SD_IDX_DROP     2u
#define SD_IDX_BUF      (128u << 10) /* append and replay buffer */
#define SD_IDX_MIN_LOG  4096u        /* entries a log may hold uncompacted */
#define SD_VERIFY_MAX   256u         /* index entries checked per round */
#define SD_LOCK_WAIT_MS 3000u        /* for a killed predecessor's lock */

#define SD_ALIGN_UP(_v) (((_v) + SD_BLOCK - 1) & ~(uint64_t)(SD_BLOCK - 1))

/* Header of the index file. */
typedef struct sd_ihdr {
    char     magic[8]; /* SD_IDX_MAGIC */
    uint32_t version;  /* SD_IDX_VERSION */
    uint32_t reserved; /* 0 */
    uint64_t capacity; /* the tier's: another capacity voids the index */
    uint64_t checksum; /* xxh3-64 of the fields above */
} sd_ihdr_t;

/*
 * An index entry: a DROP is the first SD_IENT_DROP_LEN bytes, an ADD the
 * whole struct followed by the key.
 */
typedef struct sd_ient {
    uint64_t sum;  /* xxh3-64 of the entry's bytes after this field */
    uint32_t len;  /* bytes of the entry */
    uint16_t type; /* SD_IDX_ADD or SD_IDX_DROP */
    uint16_t klen; /* ADD: key bytes after the struct */
    uint64_t off;  /* the record's file offset */
    uint64_t asz;  /* ADD from here: allocated bytes */
    uint64_t put_id;
    uint64_t size;     /* value bytes */
    uint64_t checksum; /* xxh3-64 of the value */
} sd_ient_t;

#define SD_IENT_DROP_LEN offsetof(sd_ient_t, asz)
#define SD_IENT_MAX      (sizeof(sd_ient_t) + UINT16_MAX)

/* Replay needs a whole entry in the buffer. */
_Static_assert(SD_IDX_BUF >= SD_IENT_MAX, "index buffer too small");

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
    /* Index (see DESIGN). ifd is -1 while no valid index exists (never
     * written, or removed after a failed write): appends are skipped then,
     * and the next rewrite (compaction or close) brings it back. */
    int      iuse; /* keep an index (the data file is a regular file) */
    int      ifd;
    uint64_t ilog; /* entries in the log since its last rewrite */
    size_t   ilen; /* bytes of entries waiting in ibuf */
    char     ipath[4096 + 32];
    char     ibuf[SD_IDX_BUF];
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

/* Header-only check (the value may not be read yet): 0 or record length. */
static uint64_t hdr_valid(const char *rec, uint64_t avail, uint64_t cap)
{
    dango_store_rec_hdr_t h;
    uint64_t              rlen;

    memcpy(&h, rec, sizeof(h));
    if ((sizeof(h) + (uint64_t)h.key_len > avail) ||
        (h.magic != DANGO_STORE_REC_MAGIC) ||
        (h.version != DANGO_STORE_REC_VERSION) || (h.key_len == 0) ||
        (h.value_len == 0) || (h.value_len > cap) ||
        (h.commit != (h.put_id ^ DANGO_STORE_REC_COMMIT_XOR)) ||
        (h.hdr_checksum != dango_store_rec_hdr_sum(&h, rec + sizeof(h)))) {
        return 0;
    }

    rlen = dango_store_rec_size(h.key_len, h.value_len);
    return (rlen <= cap) ? rlen : 0;
}

/* 1 when the header of @rec carries its commit word. */
static int rec_committed(const char *rec)
{
    dango_store_rec_hdr_t h;

    memcpy(&h, rec, sizeof(h));
    return h.commit == (h.put_id ^ DANGO_STORE_REC_COMMIT_XOR);
}

/* What the header of @rec (at file offset @off) says; @r->key points into
 * @rec. */
static void rec_info(const char *rec, uint64_t off, sd_rec_t *r)
{
    dango_store_rec_hdr_t h;

    memcpy(&h, rec, sizeof(h));
    r->key      = rec + sizeof(h);
    r->klen     = h.key_len;
    r->size     = h.value_len;
    r->checksum = h.checksum;
    r->put_id   = h.put_id;
    r->off      = off;
    r->rec_len  = dango_store_rec_size(h.key_len, h.value_len);
}

/* A new entry for @r (key copied) of @asz allocated bytes, not linked. */
static int ent_new(const sd_rec_t *r, uint64_t asz, sd_ent_t **e_p)
{
    sd_ent_t *e = dango_malloc(sizeof(*e) + r->klen + 1, "store_disk_ent");

    if (e == NULL) {
        return DANGO_ENOMEM;
    }

    memcpy(e->key, r->key, r->klen);
    e->key[r->klen] = '\0';
    e->rec          = *r;
    e->rec.key      = e->key;
    e->asz          = asz;
    e->node.key     = &e->rec.off;
    e->node.key_len = sizeof(e->rec.off);
    e->node.hash    = dango_hmap_hash(&e->rec.off, sizeof(e->rec.off));
    *e_p            = e;
    return 0;
}

/* Makes @e a record of the tier (the most recent one). */
static void ent_link(sd_disk_t *d, sd_ent_t *e)
{
    dango_hmap_insert(&d->idx, &e->node);
    dango_list_add_head(&d->lru, &e->lru);
    d->s.records++;
    d->s.used += e->asz;
}

static int ent_add(sd_disk_t *d, const sd_rec_t *r, uint64_t asz)
{
    sd_ent_t *e;
    int       rc = ent_new(r, asz, &e);

    if (rc == 0) {
        ent_link(d, e);
    }
    return rc;
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

/* Takes back the intact record @rec found at @off: 1, or 0 (no memory). */
static int scan_take(sd_disk_t *d, const char *rec, uint64_t off, uint64_t asz)
{
    sd_rec_t r;

    if (dango__store_alloc_reserve(d->alloc, off, asz) != 0) {
        return 0;
    }

    rec_info(rec, off, &r);
    if (ent_add(d, &r, asz) != 0) {
        dango__store_alloc_free(d->alloc, off);
        return 0;
    }

    d->s.scanned++;
    return 1;
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
            uint64_t              rlen, asz;
            int                   ok = 0;
            dango_store_rec_hdr_t h;

            /* A header whose key runs past the chunk: read again from it
             * (the header checksum covers the key). */
            memcpy(&h, d->buf + b, sizeof(h));
            if ((b > 0) && (h.magic == DANGO_STORE_REC_MAGIC) &&
                (sizeof(h) + (uint64_t)h.key_len > len - b)) {
                off += b;
                goto next_chunk;
            }

            rlen = hdr_valid(d->buf + b, len - b, cap - off - b);
            adv  = SD_BLOCK;
            if (rlen == 0) {
                continue;
            }

            asz = SD_ALIGN_UP(rlen);
            if (b + rlen <= len) {
                ok = dango__store_rec_valid(d->buf + b, rlen) != 0;
            } else if (asz <= d->p.buf_size) {
                sd_io_t r = {0, off + b, asz, 0, 0, 0, 0, NULL};

                io_run(d, &r, 1, 0);
                ok =
                    (r.res == 0) && (dango__store_rec_valid(d->buf, rlen) != 0);
                if (ok) {
                    scan_take(d, d->buf, off + b, asz);
                }
                /* The chunk in the buffer is gone: continue after it. */
                off = ok ? off + b + asz : off + b + SD_BLOCK;
                goto next_chunk;
            }

            if (ok && scan_take(d, d->buf + b, off + b, asz)) {
                adv = asz;
            }
        }

        off += len;
    next_chunk:;
    }
}

/* ---------- index (see DESIGN) ---------- */

/* Writes all @len bytes at @buf to @fd: 0 or a DANGO_E* code. */
static int idx_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);

        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return DANGO__ERR(errno);
        }
        if (w == 0) {
            return DANGO_ENOSPC;
        }
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Reads up to @len bytes (fewer only at the end of the file): the count
 * read, or a DANGO_E* code. */
static ssize_t idx_read_full(int fd, char *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);

        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return DANGO__ERR(errno);
        }
        if (r == 0) {
            break;
        }
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static void idx_hdr_fill(const sd_disk_t *d, sd_ihdr_t *h)
{
    memset(h, 0, sizeof(*h));
    memcpy(h->magic, SD_IDX_MAGIC, sizeof(h->magic));
    h->version  = SD_IDX_VERSION;
    h->capacity = d->p.capacity;
    h->checksum = dango_hash64(h, offsetof(sd_ihdr_t, checksum));
}

/* Bytes of the entry of @r: an ADD, or (@r NULL) a DROP. */
static size_t ient_len(const sd_rec_t *r)
{
    return (r == NULL) ? SD_IENT_DROP_LEN : sizeof(sd_ient_t) + r->klen;
}

/* Encodes an ADD of @r (@asz allocated bytes) or, @r NULL, a DROP of @off
 * at @dst (ient_len() bytes). */
static size_t ient_encode(char *dst, const sd_rec_t *r, uint64_t asz,
                          uint64_t off)
{
    sd_ient_t ie;
    size_t    len = ient_len(r);

    memset(&ie, 0, sizeof(ie));
    ie.len  = (uint32_t)len;
    ie.type = (r == NULL) ? SD_IDX_DROP : SD_IDX_ADD;
    ie.off  = off;
    if (r != NULL) {
        ie.klen     = (uint16_t)r->klen;
        ie.asz      = asz;
        ie.put_id   = r->put_id;
        ie.size     = r->size;
        ie.checksum = r->checksum;
        memcpy(dst + sizeof(ie), r->key, r->klen);
    }
    memcpy(dst, &ie, (r == NULL) ? SD_IENT_DROP_LEN : sizeof(ie));
    ie.sum = dango_hash64(dst + sizeof(ie.sum), len - sizeof(ie.sum));
    memcpy(dst, &ie.sum, sizeof(ie.sum));
    return len;
}

/*
 * Decodes the entry at @p (@avail bytes there) into @ie: 1 when it is
 * whole and intact, 0 for a torn or corrupt one (replay stops there).
 */
static int ient_decode(const char *p, size_t avail, sd_ient_t *ie)
{
    memset(ie, 0, sizeof(*ie));
    if (avail < SD_IENT_DROP_LEN) {
        return 0;
    }

    memcpy(ie, p, (avail < sizeof(*ie)) ? avail : sizeof(*ie));
    if ((ie->len < SD_IENT_DROP_LEN) || (ie->len > avail)) {
        return 0;
    }
    if (ie->type == SD_IDX_DROP) {
        if ((ie->len != SD_IENT_DROP_LEN) || (ie->klen != 0)) {
            return 0;
        }
        memset((char *)ie + SD_IENT_DROP_LEN, 0,
               sizeof(*ie) - SD_IENT_DROP_LEN);
    } else if ((ie->type != SD_IDX_ADD) || (ie->klen == 0) ||
               (ie->len != sizeof(*ie) + ie->klen)) {
        return 0;
    }

    return dango_hash64(p + sizeof(ie->sum), ie->len - sizeof(ie->sum)) ==
           ie->sum;
}

/* 1 when the @avail bytes at @p, the end of the index file, are a torn
 * entry: too short for one, or a well-formed start (type, key length and
 * the length they imply) of an entry longer than what is left: an append
 * cut short. Anything else is corrupt: taking it for a tail would drop
 * the entries after it for good, where a scan finds their records. */
static int ient_torn(const char *p, size_t avail)
{
    sd_ient_t ie;

    if (avail < SD_IENT_DROP_LEN) {
        return 1;
    }

    memcpy(&ie, p, SD_IENT_DROP_LEN); /* sum, len, type, klen, off */
    if (ie.type == SD_IDX_DROP) {
        return 0; /* a DROP fits in what is left: it is whole */
    }

    return (ie.type == SD_IDX_ADD) && (ie.klen > 0) &&
           (ie.len == sizeof(ie) + ie.klen) && (ie.len > avail);
}

/*
 * An index write failed: the index is removed (truncated when it cannot
 * be), so the next open scans instead of trusting a log that misses
 * entries. The data path goes on; the next rewrite brings the index back.
 */
static void idx_fail(sd_disk_t *d, const char *what, int err)
{
    SD_WARN(d, "store_disk %s: index %s: %s: index removed", d->ipath, what,
            dango_strerror(err));
    d->s.index_errors++;
    d->s.index_bytes = 0;
    d->ilen          = 0;
    d->ilog          = 0;
    if (d->ifd >= 0) {
        close(d->ifd);
        d->ifd = -1;
    }
    if ((unlink(d->ipath) != 0) && (errno != ENOENT) &&
        (truncate(d->ipath, 0) != 0)) {
        dango_error("store_disk %s: cannot remove the index: %m", d->ipath);
    }
}

/* fsync of the directory holding @path (a rename's durability). */
static int dir_sync(const char *path)
{
    char  dir[sizeof(((sd_disk_t *)NULL)->ipath)];
    char *slash;
    int   fd, rc = 0;

    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    if (slash == NULL) {
        snprintf(dir, sizeof(dir), ".");
    } else if (slash == dir) {
        slash[1] = '\0';
    } else {
        slash[0] = '\0';
    }

    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return DANGO__ERR(errno);
    }
    if (fsync(fd) != 0) {
        rc = DANGO__ERR(errno);
    }
    close(fd);
    return rc;
}

/*
 * Writes the index anew from the tier's records (oldest first, so a replay
 * rebuilds the same LRU order): "<index>.tmp", fdatasync, rename over the
 * index, fsync of the directory. The new file takes the appends from then
 * on. 0 or the DANGO_E* code of the failing call (the old index is left
 * as it was).
 */
static int idx_rewrite(sd_disk_t *d)
{
    char               tmp[sizeof(d->ipath) + 8];
    sd_ihdr_t          h;
    uint64_t           bytes = 0;
    dango_list_link_t *l;
    int                fd, rc;

    snprintf(tmp, sizeof(tmp), "%s.tmp", d->ipath);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return DANGO__ERR(errno);
    }

    /* Appends still waiting are part of the state written here. */
    idx_hdr_fill(d, &h);
    memcpy(d->ibuf, &h, sizeof(h));
    d->ilen = sizeof(h);
    for (l = d->lru.prev; l != &d->lru; l = l->prev) {
        sd_ent_t *e = dango_container_of(l, sd_ent_t, lru);

        if (d->ilen + ient_len(&e->rec) > sizeof(d->ibuf)) {
            rc = idx_write_all(fd, d->ibuf, d->ilen);
            if (rc != 0) {
                goto err;
            }
            bytes += d->ilen;
            d->ilen = 0;
        }
        d->ilen += ient_encode(d->ibuf + d->ilen, &e->rec, e->asz, e->rec.off);
    }

    rc = idx_write_all(fd, d->ibuf, d->ilen);
    if (rc != 0) {
        goto err;
    }
    bytes += d->ilen;
    d->ilen = 0;
    if (fdatasync(fd) != 0) {
        rc = DANGO__ERR(errno);
        goto err;
    }
    if (rename(tmp, d->ipath) != 0) {
        rc = DANGO__ERR(errno);
        goto err;
    }
    rc = dir_sync(d->ipath);
    if (rc != 0) {
        /* The rename is done: the new index is the one in place. */
        SD_WARN(d, "store_disk %s: fsync of its directory: %s", d->ipath,
                dango_strerror(rc));
    }

    if (d->ifd >= 0) {
        close(d->ifd);
    }
    d->ifd           = fd;
    d->ilog          = d->s.records;
    d->s.index_bytes = bytes;
    return 0;

err:
    close(fd);
    unlink(tmp);
    d->ilen = 0;
    return rc;
}

/* Appends the queued entries (one write). */
static void idx_flush(sd_disk_t *d)
{
    int rc;

    if ((d->ifd < 0) || (d->ilen == 0)) {
        return;
    }

    rc = idx_write_all(d->ifd, d->ibuf, d->ilen);
    if (rc != 0) {
        idx_fail(d, "append", rc);
        return;
    }
    d->s.index_bytes += d->ilen;
    d->ilen = 0;
}

/* Queues an ADD of @r (@asz bytes) or, @r NULL, a DROP of @off. */
static void idx_log(sd_disk_t *d, const sd_rec_t *r, uint64_t asz, uint64_t off)
{
    d->ilog++;
    if (d->ilen + ient_len(r) > sizeof(d->ibuf)) {
        idx_flush(d);
    }
    if (d->ifd < 0) {
        return;
    }
    d->ilen += ient_encode(d->ibuf + d->ilen, r, asz, off);
}

/* 1 when the log holds more than max(SD_IDX_MIN_LOG, 2 x records) entries
 * (or a removed index has missed as many changes): time to rewrite it. */
static int idx_compact_due(const sd_disk_t *d)
{
    uint64_t limit = 2 * d->s.records;

    limit = (limit < SD_IDX_MIN_LOG) ? SD_IDX_MIN_LOG : limit;
    return d->ilog > limit;
}

/* Rewrites the log when idx_compact_due() (or brings back a removed index
 * after as many changes). A failed rewrite of a log still in place leaves
 * that log in use: it is complete, only longer than it needs to be. */
static void idx_maybe_compact(sd_disk_t *d)
{
    int rc, in_place;

    if (!d->iuse || !idx_compact_due(d)) {
        return;
    }

    idx_flush(d);
    in_place = d->ifd >= 0;
    rc       = idx_rewrite(d);
    if ((rc != 0) && !in_place) {
        idx_fail(d, "rewrite", rc);
    } else if (rc != 0) {
        /* The index in place is whole (everything appended, the rewrite
         * touched only "<index>.tmp"): keep appending to it, and try
         * again after as many entries. */
        SD_WARN(d, "store_disk %s: index rewrite: %s: the log goes on",
                d->ipath, dango_strerror(rc));
        d->s.index_errors++;
        d->ilog = d->s.records;
    }
}

/* Replayed entries of the index, before they are checked (idx_take). */
typedef struct sd_replay {
    dango_hmap_t      map;   /* off -> entry */
    dango_list_link_t list;  /* log order of the live entries' last ADD */
    uint64_t          bytes; /* allocated bytes of the live entries */
} sd_replay_t;

static void replay_free(sd_replay_t *rp, sd_ent_t *e)
{
    rp->bytes -= e->asz;
    dango_hmap_remove(&rp->map, &e->node);
    dango_list_del(&e->lru);
    dango_free(e);
}

static void replay_cleanup(sd_replay_t *rp)
{
    sd_ent_t *e, *t;

    dango_list_for_each_safe(e, t, &rp->list, lru)
    {
        replay_free(rp, e);
    }
    dango_hmap_cleanup(&rp->map);
}

/*
 * 1 when the ADD @ie can name a record of the tier: a block-aligned offset
 * inside the capacity, a value no larger than the capacity, the allocated
 * bytes of such a record, ending inside the capacity. Checked before
 * anything is allocated for the entry, so that even a checksummed index
 * cannot make the replay hold more entries than the capacity has blocks.
 */
static int ient_fits(const sd_disk_t *d, const sd_ient_t *ie)
{
    uint64_t cap = d->p.capacity;

    /* size <= cap: the record's length cannot wrap around. */
    return (ie->off % SD_BLOCK == 0) && (ie->off < cap) && (ie->size > 0) &&
           (ie->size <= cap) &&
           (ie->asz == SD_ALIGN_UP(dango_store_rec_size(ie->klen, ie->size))) &&
           (ie->asz <= cap - ie->off);
}

/*
 * Applies one intact entry: later entries win. An ADD that does not fit the
 * tier (ient_fits()) is refused and counted; it still replaces an earlier
 * entry at its offset. So is an ADD that would leave the live entries
 * naming more allocated bytes than the capacity. The live entries of a true
 * log are records allocated side by side, so they never do; a forged log
 * could name a record with a 64 KiB key at every block, all overlapping,
 * and the replay would hold 16 times the capacity in keys. Each entry's key
 * is part of the record it names, so with this bound the entries hold less
 * than the capacity in keys whatever the log says (and one overhead per
 * block at most). Overlaps left inside the bound are refused by idx_take().
 */
static int replay_apply(sd_disk_t *d, sd_replay_t *rp, const sd_ient_t *ie,
                        const char *key)
{
    dango_hmap_node_t *n;
    sd_ent_t          *e;
    sd_rec_t           r;
    int                rc;

    n = dango_hmap_find(&rp->map, &ie->off, sizeof(ie->off),
                        dango_hmap_hash(&ie->off, sizeof(ie->off)));
    if (n != NULL) {
        replay_free(rp, dango_container_of(n, sd_ent_t, node));
    }
    if (ie->type == SD_IDX_DROP) {
        return 0;
    }
    if (!ient_fits(d, ie) || (ie->asz > d->p.capacity - rp->bytes)) {
        dango_debug("store_disk %s: index entry of '%.*s' at %" PRIu64
                    " refused",
                    d->path, (int)ie->klen, key, ie->off);
        d->s.rejected++;
        return 0;
    }

    r.key      = key;
    r.klen     = ie->klen;
    r.size     = ie->size;
    r.checksum = ie->checksum;
    r.put_id   = ie->put_id;
    r.off      = ie->off;
    r.rec_len  = dango_store_rec_size(ie->klen, ie->size);
    rc         = ent_new(&r, ie->asz, &e);
    if (rc != 0) {
        return rc;
    }
    dango_hmap_insert(&rp->map, &e->node);
    dango_list_add_tail(&rp->list, &e->lru);
    rp->bytes += e->asz;
    return 0;
}

/* One replayed entry during idx_take(). */
typedef struct sd_cand {
    sd_ent_t *e;
    int       ok;
} sd_cand_t;

static int cand_cmp(const void *a, const void *b)
{
    uint64_t x = ((const sd_cand_t *)a)->e->rec.off;
    uint64_t y = ((const sd_cand_t *)b)->e->rec.off;

    return (x > y) - (x < y);
}

/* Checks candidates by the first block(s) of their records: header and
 * key, as far as the value (SD_VERIFY_MAX and the bounce buffer a round). */
static void idx_verify(sd_disk_t *d, sd_cand_t *c, size_t n)
{
    size_t i = 0;

    while (i < n) {
        sd_io_t  io[SD_VERIFY_MAX];
        size_t   idx[SD_VERIFY_MAX];
        size_t   m    = 0;
        uint64_t boff = 0;
        sd_ioq_t q    = {io, 0, 0, NULL, NULL};

        for (; (i < n) && (m < SD_VERIFY_MAX); i++) {
            sd_ent_t *e   = c[i].e;
            uint64_t  len = SD_ALIGN_UP(dango_store_rec_value_off(e->rec.klen));

            if (!c[i].ok) {
                continue;
            }
            if (len > d->p.buf_size) {
                c[i].ok = 0;
                continue;
            }
            if (boff + len > d->p.buf_size) {
                break;
            }
            io[m]  = (sd_io_t){boff, e->rec.off, len, 0, 0, 0, 0, NULL};
            idx[m] = i;
            ioq_add(d, &q, m);
            boff += len;
            m++;
        }

        ioq_drain(d, &q);
        for (size_t k = 0; k < m; k++) {
            sd_ent_t   *e   = c[idx[k]].e;
            const char *rec = d->buf + io[k].boff;

            /* The header names the entry's key, put and value; it must
             * also be committed. */
            if ((io[k].res != 0) ||
                (dango_store_rec_check(rec, e->key, (uint16_t)e->rec.klen,
                                       e->rec.size, e->rec.checksum,
                                       e->rec.put_id) != 0) ||
                !rec_committed(rec)) {
                c[idx[k]].ok = 0;
            }
        }
    }
}

/*
 * Makes the replayed entries (each inside the capacity: ient_fits()) records
 * of the tier: those matching their record's first block and overlapping no
 * other are reserved in the allocator and linked (in log order, so the last
 * logged is the most recent); the others are dropped and counted. 0 or
 * DANGO_ENOMEM (the remaining entries are left in @rp).
 */
static int idx_take(sd_disk_t *d, sd_replay_t *rp)
{
    size_t     n = dango_hmap_count(&rp->map), k = 0, top = 0;
    sd_cand_t *c;
    sd_ent_t  *e, *t;
    uint64_t   end = 0;

    if (n == 0) {
        return 0;
    }

    c = dango_malloc(n * sizeof(*c), "store_disk_idx_cand");
    if (c == NULL) {
        return DANGO_ENOMEM;
    }

    dango_list_for_each(e, &rp->list, lru)
    {
        c[k].e  = e;
        c[k].ok = 1;
        k++;
    }
    /* By offset: the checks read the file in order, and each reservation
     * below finds its range at once. */
    qsort(c, n, sizeof(*c), cand_cmp);
    idx_verify(d, c, n);

    /* Two checked entries overlapping: one's value holds the other's
     * header, so the index contradicts itself there and neither is
     * trusted. (A stale entry over a live record fails the check above,
     * and the live one stays.) */
    for (size_t i = 0; i < n; i++) {
        if (!c[i].ok) {
            continue;
        }
        if ((end > 0) && (c[i].e->rec.off < end)) {
            c[i].ok   = 0;
            c[top].ok = 0;
        }
        if (c[i].e->rec.off + c[i].e->asz > end) {
            end = c[i].e->rec.off + c[i].e->asz;
            top = i;
        }
    }

    for (size_t i = 0; i < n; i++) {
        int rc = 0;

        e = c[i].e;
        if (c[i].ok) {
            rc = dango__store_alloc_reserve(d->alloc, e->rec.off, e->asz);
            if (rc == DANGO_ENOMEM) {
                dango_free(c);
                return rc;
            }
        }
        if (!c[i].ok || (rc != 0)) {
            dango_debug("store_disk %s: index entry of '%s' at %" PRIu64
                        " refused",
                        d->path, e->key, e->rec.off);
            d->s.rejected++;
            replay_free(rp, e);
        }
    }
    dango_free(c);

    dango_list_for_each_safe(e, t, &rp->list, lru)
    {
        dango_hmap_remove(&rp->map, &e->node);
        dango_list_del(&e->lru);
        ent_link(d, e);
        d->s.indexed++;
    }
    return 0;
}

/*
 * Takes the records back from the index: *@used_p is 1 when it was valid
 * (replayed up to a torn last entry), 0 when there is none or it is void:
 * another capacity, a corrupt entry before the end, a read error (the
 * caller scans). A valid index that needs no repair (replayed to its end,
 * no entry refused, no compaction due) is kept: d->ifd is left on it,
 * synced and positioned at its end, for the appends. Otherwise d->ifd
 * stays -1 and the caller writes the index anew. 0 or DANGO_ENOMEM.
 */
static int idx_load(sd_disk_t *d, int *used_p)
{
    sd_ihdr_t   h, want;
    sd_replay_t rp;
    size_t      pos = 0, end = 0;
    uint64_t    foff = sizeof(h), bad = UINT64_MAX;
    int         fd, eof = 0, keep = 1, rc;
    ssize_t     r;

    *used_p = 0;
    fd      = open(d->ipath, O_RDWR | O_CLOEXEC);
    if ((fd < 0) && ((errno == EACCES) || (errno == EROFS))) {
        /* Replayed all the same; the rewrite replaces the file. */
        fd   = open(d->ipath, O_RDONLY | O_CLOEXEC);
        keep = 0;
    }
    if (fd < 0) {
        if (errno != ENOENT) {
            dango_warn("store_disk %s: open: %m", d->ipath);
        }
        return 0;
    }

    idx_hdr_fill(d, &want);
    r = idx_read_full(fd, (char *)&h, sizeof(h));
    if ((r != (ssize_t)sizeof(h)) || (memcmp(&h, &want, sizeof(h)) != 0)) {
        dango_info("store_disk %s: index ignored (%s)", d->ipath,
                   ((r == (ssize_t)sizeof(h)) &&
                    (memcmp(h.magic, want.magic, sizeof(h.magic)) == 0) &&
                    (h.version == want.version) &&
                    (h.capacity != want.capacity))
                       ? "another capacity"
                       : "no valid header");
        close(fd);
        return 0;
    }

    rc = dango_hmap_init(&rp.map, 0);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    dango_list_init(&rp.list);
    rp.bytes = 0;

    for (;;) {
        sd_ient_t ie;

        if (!eof && (end - pos < SD_IENT_MAX)) {
            memmove(d->ibuf, d->ibuf + pos, end - pos);
            end -= pos;
            pos = 0;
            r   = idx_read_full(fd, d->ibuf + end, sizeof(d->ibuf) - end);
            if (r < 0) {
                dango_warn("store_disk %s: read: %s; scanning instead",
                           d->ipath, dango_strerror((int)r));
                goto void_index;
            }
            eof = (size_t)r < sizeof(d->ibuf) - end;
            end += (size_t)r;
        }
        if (pos == end) {
            break;
        }
        if (!ient_decode(d->ibuf + pos, end - pos, &ie)) {
            if (!eof || !ient_torn(d->ibuf + pos, end - pos)) {
                /* Not an append cut short: entries after it may be good,
                 * and records they name would be lost. */
                dango_warn("store_disk %s: corrupt entry at byte %" PRIu64
                           ": index ignored, scanning instead",
                           d->ipath, foff);
                goto void_index;
            }
            bad = foff;
            break;
        }

        rc = replay_apply(d, &rp, &ie, d->ibuf + pos + sizeof(ie));
        if (rc != 0) {
            close(fd);
            replay_cleanup(&rp);
            return rc;
        }
        pos += ie.len;
        foff += ie.len;
        d->ilog++;
    }

    if (bad != UINT64_MAX) {
        /* The rewrite after open leaves out the rest of the file: never
         * append after a torn entry. */
        dango_warn("store_disk %s: torn entry at byte %" PRIu64
                   ": replay stops there",
                   d->ipath, bad);
        keep = 0;
    }

    rc = idx_take(d, &rp);
    replay_cleanup(&rp);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    *used_p = 1;

    /* A rewrite would only drop dead entries, and the log names exactly
     * the records taken back: keep it. The replay read it to its end
     * (foff); it is synced as a rewrite would be, so what this open found
     * is durable either way. */
    keep = keep && (d->s.rejected == 0) && !idx_compact_due(d);
    if (keep && (lseek(fd, (off_t)foff, SEEK_SET) == (off_t)foff) &&
        (fdatasync(fd) == 0)) {
        d->ifd           = fd;
        d->s.index_bytes = foff;
    } else {
        close(fd);
    }
    return 0;

void_index:
    close(fd);
    replay_cleanup(&rp);
    return 0;
}

/* Frees every record entry (close, failed open). */
static void ents_free(sd_disk_t *d)
{
    sd_ent_t *e, *t;

    dango_list_for_each_safe(e, t, &d->lru, lru)
    {
        dango_hmap_remove(&d->idx, &e->node);
        dango_free(e);
    }
}

/*
 * Takes the tier file's lock. A node that was just killed may still hold it
 * for a moment after it is reaped (its io_uring instance is torn down by the
 * kernel after the exit), so a restart waits up to SD_LOCK_WAIT_MS for it
 * before deciding that another tier uses the file.
 */
static int sd_lock(int fd)
{
    uint64_t deadline = dango_time_ns() + SD_LOCK_WAIT_MS * 1000000ull;

    for (;;) {
        struct timespec ts = {0, 10 * 1000 * 1000};

        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            return 0;
        }
        if (errno != EWOULDBLOCK) {
            return DANGO__ERR(errno);
        }
        if (dango_time_ns() >= deadline) {
            return DANGO_EBUSY;
        }
        nanosleep(&ts, NULL);
    }
}

/* ---------- internal API ---------- */

int dango__sd_open(const char *path, const sd_params_t *p, sd_disk_t **d_p)
{
    sd_disk_t   *d;
    struct stat  st;
    struct iovec iov[2];
    uint64_t     t0 = dango_time_ns();
    int          rc, reg, indexed = 0;

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
    d->ifd = -1;
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
    rc = sd_lock(d->fd);
    if (rc != 0) {
        dango_error("store_disk %s: in use by another tier: %s", d->path,
                    dango_strerror(rc));
        goto err_close;
    }

    reg = (fstat(d->fd, &st) == 0) && S_ISREG(st.st_mode);
    /* The index lives beside a regular file only (not in /dev). */
    d->iuse =
        reg && ((size_t)snprintf(d->ipath, sizeof(d->ipath), "%s%s", d->path,
                                 SD_IDX_SUFFIX) < sizeof(d->ipath));
    if (reg && ((uint64_t)st.st_size < d->p.capacity) &&
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
    if ((rc < 0) && (d->p.extra != NULL)) {
        /* The kernel refuses buffers over 1 GiB (and RLIMIT_MEMLOCK may be
         * low): reads then go through the bounce buffer instead. */
        dango_warn("store_disk %s: extra buffer of %zu bytes not registered "
                   "(%s): reads go through the bounce buffer",
                   d->path, d->p.extra_len, strerror(-rc));
        d->p.extra     = NULL;
        d->p.extra_len = 0;
        rc             = io_uring_register_buffers(&d->ring, iov, 1);
    }
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
    if (d->iuse) {
        rc = idx_load(d, &indexed);
        if (rc != 0) {
            goto err_ents;
        }
    }
    if (!indexed) {
        scan(d);
    }
    if (d->iuse && (d->ifd < 0)) {
        /* Scanned, or the index needed repair or compaction. */
        rc = idx_rewrite(d);
        if (rc != 0) {
            idx_fail(d, "rewrite", rc);
        }
    }
    dango_info("store_disk %s: %" PRIu64 " bytes%s, %" PRIu64
               " records taken back %s (%" PRIu64 " refused) in %.1f ms",
               d->path, d->p.capacity, d->direct ? " (O_DIRECT)" : "",
               indexed ? d->s.indexed : d->s.scanned,
               indexed ? "from the index" : "by a full scan", d->s.rejected,
               (double)(dango_time_ns() - t0) / 1e6);
    *d_p = d;
    return 0;

err_ents:
    ents_free(d);
    dango_hmap_cleanup(&d->idx);
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
    int rc;

    if (d == NULL) {
        return;
    }

    /* Durable at a clean close; a removed index is written again. */
    idx_flush(d);
    if (d->iuse && (d->ifd < 0)) {
        rc = idx_rewrite(d);
        if (rc != 0) {
            idx_fail(d, "rewrite", rc);
        }
    } else if ((d->ifd >= 0) && (fdatasync(d->ifd) != 0)) {
        SD_WARN(d, "store_disk %s: fdatasync: %m", d->ipath);
    }
    if (d->ifd >= 0) {
        close(d->ifd);
    }

    ents_free(d);
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
                (hdr_valid(recs[i], len, len) != len)) {
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
            if (dango__store_rec_valid(d->buf + boff, len) != len) {
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
            size_t   j = idx[k];
            sd_rec_t r;

            rec_info(d->buf + io[k].boff, io[k].foff, &r);
            if ((io[k].res == 0) && (ent_add(d, &r, io[k].len) == 0)) {
                /* Written: only now may the index name it. */
                idx_log(d, &r, io[k].len, io[k].foff);
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
        idx_flush(d);
        idx_maybe_compact(d);
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

    if ((dango__store_rec_valid(rec, e->rec.rec_len) != e->rec.rec_len) ||
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

    /* The DROP is in the index before the space can be reused. */
    idx_log(d, NULL, 0, off);
    idx_flush(d);
    block_kill(d, off);
    ent_free(d, e);
    idx_maybe_compact(d);
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
        idx_log(d, NULL, 0, e->rec.off);
        block_kill(d, e->rec.off);
        ent_free(d, e);
        d->s.evicted++;
        n++;
    }

    /* Before the caller can reuse the space: one write for all DROPs. */
    idx_flush(d);
    idx_maybe_compact(d);
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
