/*
 * Store node disk tier (internal): one file (or a file in a directory) on
 * local storage holding self-describing object records, written and read
 * through io_uring with O_DIRECT from one registered bounce buffer, and a
 * small append-only index file beside it ("<data file>.index") that finds
 * the records again after a restart without reading the data file.
 *
 * Ownership: dango__sd_open() returns a tier that dango__sd_close() frees.
 * Thread safety: none; one thread at a time (the node's disk thread, or a
 * test) uses a tier.
 */
#ifndef DANGO_STORE_DISK_H
#define DANGO_STORE_DISK_H

#include <stddef.h>
#include <stdint.h>

/* Disk block: every record starts at a multiple and is padded to one. */
#define SD_BLOCK 4096u

typedef struct sd_disk sd_disk_t;

/* What a tier holds of one record. */
typedef struct sd_rec {
    const char *key; /* valid until the record is dropped */
    size_t      klen;
    uint64_t    size;     /* value bytes */
    uint64_t    checksum; /* xxh3-64 of the value */
    uint64_t    put_id;
    uint64_t    off;     /* file offset of the record */
    uint64_t    rec_len; /* record bytes (header, key, value) */
} sd_rec_t;

/* Options of dango__sd_open(); 0 takes the default. */
typedef struct sd_params {
    uint64_t capacity; /* bytes of the file used (required) */
    uint64_t buf_size; /* registered bounce buffer (16 MiB) */
    unsigned depth;    /* io_uring entries in flight (32) */
    double   high_wm;  /* dango__sd_make_room() target (0.95) */
    /* Optional memory registered with the ring too (4 KiB-aligned, borrowed
     * until close): reads whose destination is 4 KiB-aligned inside it
     * (and at least the record's blocks long) go there directly. */
    void  *extra;
    size_t extra_len;
} sd_params_t;

/* Counters of a tier. */
typedef struct sd_stats {
    uint64_t capacity;
    uint64_t used; /* bytes allocated (block-rounded) */
    uint64_t records;
    uint64_t writes, write_bytes, write_errors;
    uint64_t reads, read_bytes, read_errors;
    uint64_t corrupt;  /* records dropped for a failed check */
    uint64_t evicted;  /* records dropped by dango__sd_make_room() */
    uint64_t scanned;  /* records found by the last open's full scan */
    uint64_t indexed;  /* records taken back from the index by the last open */
    uint64_t rejected; /* index entries refused by the last open (record
                          block not the entry's, out of range, overlap,
                          live entries past the capacity in all) */
    uint64_t index_bytes;  /* size of the index file (0: none) */
    uint64_t index_errors; /* failed index writes (each removes the index) */
} sd_stats_t;

/*
 * Opens (creating if missing) the tier at @path: a regular file, or a
 * directory in which the file "dango-disk.data" is used. The file is
 * locked (flock) for this tier, which also owns the index file beside it
 * ("<file>.index"). The records held are found again:
 *  - from the index when it is valid (its header matches the capacity):
 *    the log is replayed up to its first torn entry and every live entry
 *    is checked against the first block of its record (header, key, put
 *    id, size, checksum; the value is verified by every read): entries
 *    that fail, overlap or pass the capacity are dropped, and so is an ADD
 *    that would leave the live entries naming more bytes than the capacity
 *    (a true log never does), so that the replay holds less than the
 *    capacity in keys whatever the index says;
 *  - otherwise (no index, a bad header, another capacity, or one removed
 *    after a failed index write) by a scan of the whole file for
 *    committed, intact records.
 * An index replayed to its end with every entry kept, and of at most
 * max(4096, 2 x records) entries (past that the log is compacted), is
 * synced and appended to as it is; otherwise (a scan, a torn tail, an
 * entry dropped, a log due for compaction) a fresh compacted index is
 * written in its place. A record whose write
 * completed but whose index entry was never appended (the process died in
 * between) is not taken back: its space is free again.
 * When @path is not a regular file (a block device) no index is kept and
 * every open scans.
 * 0, or DANGO_EINVAL (capacity below one block or path empty), DANGO_EBUSY
 * (another tier still holds the file's lock after 3 s), DANGO_ENOMEM, or the
 * errno of open/io_uring setup as a DANGO_E* code.
 */
int  dango__sd_open(const char *path, const sd_params_t *p, sd_disk_t **d_p);
void dango__sd_close(sd_disk_t *d);

/*
 * Writes @n committed records (@recs[i], @lens[i] bytes each: a record as
 * it sits in a segment) with all writes in flight together. status[i] is 0
 * (and offs[i] the record's offset), DANGO_ENOSPC (no room), DANGO_EINVAL
 * (not a committed record of its length), DANGO_EMSGSIZE (larger than the
 * bounce buffer) or the write's error (the space is given back). The
 * index entries of the records written are appended once their writes
 * completed (one write() per round); a failed append does not fail the
 * record (see dango__sd_open()).
 */
void dango__sd_write(sd_disk_t *d, size_t n, const void *const *recs,
                     const uint64_t *lens, int *status, uint64_t *offs);

/*
 * Reads the record at @off, which must be the one of (@key, @put_id), into
 * @dst (@cap >= its rec_len bytes) and verifies header, commit and value
 * checksum. 0; DANGO_ENOENT (no such record); DANGO_ERANGE (@cap too
 * small); DANGO_ECORRUPT (failed a check: the record is dropped); or the
 * read's error.
 */
int dango__sd_read(sd_disk_t *d, uint64_t off, const char *key, size_t klen,
                   uint64_t put_id, void *dst, uint64_t cap);

/* One read of dango__sd_read_many(). */
typedef struct sd_read_req {
    uint64_t    off;
    const char *key;
    size_t      klen;
    uint64_t    put_id;
    void       *dst;
    uint64_t    cap;
    int         status; /* out: as dango__sd_read() */
} sd_read_req_t;

/*
 * dango__sd_read() of @n records with the reads in flight together (each
 * verified and copied out as soon as it completes).
 */
void dango__sd_read_many(sd_disk_t *d, size_t n, sd_read_req_t *reqs);

/* The record at @off, or NULL. */
const sd_rec_t *dango__sd_find(sd_disk_t *d, uint64_t off);

/*
 * Drops the record at @off: a DROP is appended to the index and its first
 * block is overwritten (so a restart does not bring it back), then its
 * space is freed. 0 or DANGO_ENOENT.
 */
int dango__sd_drop(sd_disk_t *d, uint64_t off);

/*
 * Drops least recently used records until @need more bytes fit under the
 * high watermark (or nothing is left). Each dropped record is passed to @cb
 * before it goes. Returns the number dropped.
 */
size_t dango__sd_make_room(sd_disk_t *d, uint64_t                          need,
                           void (*cb)(void *arg, const sd_rec_t *r), void *arg);

/* Calls @cb for every record (order unspecified). */
void dango__sd_foreach(sd_disk_t *d, void (*cb)(void *arg, const sd_rec_t *r),
                       void      *arg);

void dango__sd_stats(const sd_disk_t *d, sd_stats_t *s);

#endif
