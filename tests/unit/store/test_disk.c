/*
 * Disk tier of a store node (store_disk.c): records written and read back
 * through io_uring, taken back after a reopen, torn and corrupted records
 * detected, a full tier and a full file system reported, LRU room-making;
 * the index: reopen through it (a clean one kept as it is), torn tails,
 * fallback to the scan, stale, forged and out-of-range entries (refused
 * before anything is allocated for them), forged overlapping entries naming
 * more than the capacity (refused as well), compaction, failed index writes.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "dango_test.h"
#include "common/alloc.h"
#include "common/hash.h"
#include "common/time.h"
#include <dango/store.h>
#include "store/store_disk.h"
#include "store/store_proto.h"

static char dir[] = "/tmp/dango-test-disk-XXXXXX";

#define SD_ALIGN_UP(_v) (((_v) + SD_BLOCK - 1) / SD_BLOCK * SD_BLOCK)

/* A committed record of @key with @vlen bytes of value seeded by @seed. */
static char *mkrec(const char *key, uint64_t vlen, unsigned seed,
                   uint64_t put_id, uint64_t *len_p)
{
    uint64_t klen = strlen(key);
    uint64_t len  = dango_store_rec_size(klen, vlen);
    char    *r    = malloc(len);
    char    *v    = r + dango_store_rec_value_off(klen);

    for (uint64_t i = 0; i < vlen; i++) {
        v[i] = (char)(i * 31 + seed);
    }
    dango_store_rec_seal(r, key, (uint16_t)klen, vlen, put_id);
    *len_p = len;
    return r;
}

static void path_of(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
}

/* The index file of the tier at @path. */
static void index_of(char *buf, size_t len, const char *path)
{
    snprintf(buf, len, "%s.index", path);
}

/* The whole file at @path (malloc'ed, *@len_p bytes). */
static char *slurp(const char *path, size_t *len_p)
{
    FILE *f = fopen(path, "rb");
    char *b;
    long  n;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len_p = (size_t)n;
    return b;
}

/* Removes the tier's data and index files. */
static void rm_tier(const char *path)
{
    char ipath[300];

    index_of(ipath, sizeof(ipath), path);
    unlink(path);
    unlink(ipath);
}

static void spill(const char *path, const char *b, size_t len)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, len, f), len);
    fclose(f);
}

/* Writes @len bytes at @off of the file at @path, behind the tier's back. */
static void file_write_at(const char *path, uint64_t off, const void *b,
                          size_t len)
{
    int fd = open(path, O_RDWR);

    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, b, len, (off_t)off), (ssize_t)len);
    close(fd);
}

/* Appends @len bytes to the file at @path. */
static void file_append(const char *path, const void *b, size_t len)
{
    int fd = open(path, O_WRONLY | O_APPEND);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, b, len), (ssize_t)len);
    close(fd);
}

static off_t size_of(const char *path)
{
    struct stat st;

    return (stat(path, &st) == 0) ? st.st_size : -1;
}

/* Mounts a tmpfs of @size ("2m") at "<dir>/@name", its path put in @mnt:
 * 0, or -1 when this process may not mount one (the caller skips). */
static int tmpfs_mount(char *mnt, size_t len, const char *name,
                       const char *size)
{
    char cmd[512];

    snprintf(mnt, len, "%s/%s", dir, name);
    mkdir(mnt, 0755);
    snprintf(cmd, sizeof(cmd), "mount -t tmpfs -o size=%s tmpfs %s 2>/dev/null",
             size, mnt);
    if (system(cmd) != 0) {
        rmdir(mnt);
        return -1;
    }
    return 0;
}

static void tmpfs_umount(const char *mnt)
{
    char cmd[512];

    snprintf(cmd, sizeof(cmd), "umount %s", mnt);
    assert_int_equal(system(cmd), 0);
    rmdir(mnt);
}

/* Opens the tier at @path (which must succeed) and reads its counters. */
static void tier_open(const char *path, const sd_params_t *p, sd_disk_t **d_p,
                      sd_stats_t *s)
{
    assert_dango_ok(dango__sd_open(path, p, d_p));
    dango__sd_stats(*d_p, s);
}

/* Opens the tier at @path, checks the records the open took back through
 * the index and by a scan (with no index entry refused), and closes it. */
static void expect_open(const char *path, const sd_params_t *p,
                        uint64_t indexed, uint64_t scanned)
{
    sd_disk_t *d;
    sd_stats_t s;

    tier_open(path, p, &d, &s);
    assert_int_equal(s.indexed, indexed);
    assert_int_equal(s.scanned, scanned);
    assert_int_equal(s.rejected, 0);
    dango__sd_close(d);
}

/*
 * Opens the tier at @path with its n-th allocation failing, n = 1, 2, ...
 * until it opens (in *@d_p): every open before fails with DANGO_ENOMEM,
 * leaves *@d_p NULL and leaves @live allocations live. Returns the number
 * of failed opens: the allocations an open makes.
 */
static long open_oom(const char *path, const sd_params_t *p, long live,
                     sd_disk_t **d_p)
{
    for (long n = 1;; n++) {
        int rc;

        *d_p = NULL;
        dango__alloc_fail_after(n);
        rc = dango__sd_open(path, p, d_p);
        dango__alloc_fail_after(-1);
        if (rc == 0) {
            return n - 1;
        }
        assert_dango_err(DANGO_ENOMEM, rc);
        assert_null(*d_p);
        assert_int_equal(dango__alloc_live(), live);
    }
}

/* dango__sd_write() of the one record @rec (@len bytes): its status, and
 * its offset in *@off_p. */
static int write_one(sd_disk_t *d, const char *rec, uint64_t len,
                     uint64_t *off_p)
{
    const void *recs[1] = {rec};
    int         st;

    dango__sd_write(d, 1, recs, &len, &st, off_p);
    return st;
}

/* Writes @n records "<pfx><i>" (value of @vlen + 97 * i bytes, seed i,
 * put id 1000 + i) one write call each; keeps them in @r / @lens / @offs. */
static void write_n(sd_disk_t *d, const char *pfx, int n, uint64_t vlen,
                    char **r, uint64_t *lens, uint64_t *offs)
{
    for (int i = 0; i < n; i++) {
        char key[32];

        snprintf(key, sizeof(key), "%s%d", pfx, i);
        r[i] = mkrec(key, vlen + 97u * (unsigned)i, (unsigned)i,
                     1000u + (unsigned)i, &lens[i]);
        assert_dango_ok(write_one(d, r[i], lens[i], &offs[i]));
    }
}

/* A tier at @path holding write_n(@pfx, @n, @vlen)'s records, closed. */
static void tier_fill(const char *path, const sd_params_t *p, const char *pfx,
                      int n, uint64_t vlen, char **r, uint64_t *lens,
                      uint64_t *offs)
{
    sd_disk_t *d;

    assert_dango_ok(dango__sd_open(path, p, &d));
    write_n(d, pfx, n, vlen, r, lens, offs);
    dango__sd_close(d);
}

/* Record @i of write_n(@pfx) reads back byte for byte (or is gone). */
static void expect_rec(sd_disk_t *d, const char *pfx, int i, const char *r,
                       uint64_t len, uint64_t off, int present)
{
    char  key[32];
    char *out = malloc(1u << 20);

    snprintf(key, sizeof(key), "%s%d", pfx, i);
    if (present) {
        assert_non_null(dango__sd_find(d, off));
        assert_dango_ok(dango__sd_read(d, off, key, strlen(key),
                                       1000u + (unsigned)i, out, 1u << 20));
        assert_memory_equal(out, r, len);
    } else {
        assert_dango_err(DANGO_ENOENT,
                         dango__sd_read(d, off, key, strlen(key),
                                        1000u + (unsigned)i, out, 1u << 20));
    }
    free(out);
}

static void free_n(char **r, int n)
{
    for (int i = 0; i < n; i++) {
        free(r[i]);
    }
}

/* An index entry as the tier writes it (see store_disk.c), for forging. */
static size_t ient_make(char *dst, uint64_t off, uint64_t asz, uint64_t put_id,
                        uint64_t size, uint64_t checksum, const char *key)
{
    uint16_t klen = (uint16_t)strlen(key), type = 1;
    uint32_t len = 56u + klen;
    uint64_t sum;

    memcpy(dst + 8, &len, 4);
    memcpy(dst + 12, &type, 2);
    memcpy(dst + 14, &klen, 2);
    memcpy(dst + 16, &off, 8);
    memcpy(dst + 24, &asz, 8);
    memcpy(dst + 32, &put_id, 8);
    memcpy(dst + 40, &size, 8);
    memcpy(dst + 48, &checksum, 8);
    memcpy(dst + 56, key, klen);
    sum = dango_hash64(dst + 8, len - 8);
    memcpy(dst, &sum, 8);
    return len;
}

/* Appends an entry of ient_make() to the index at @ipath. */
static void ient_append(const char *ipath, uint64_t off, uint64_t asz,
                        uint64_t put_id, uint64_t size, uint64_t checksum,
                        const char *key)
{
    char   e[256];
    size_t n = ient_make(e, off, asz, put_id, size, checksum, key);

    file_append(ipath, e, n);
}

static void write_read_reopen(void **state)
{
    sd_params_t p = {.capacity = 16u << 20, .buf_size = 4u << 20};
    sd_disk_t  *d;
    const void *recs[3];
    uint64_t    lens[3], offs[3];
    int         st[3];
    char       *r[3], path[256], key[16];
    char       *out = malloc(2u << 20);
    sd_stats_t  s;

    path_of(path, sizeof(path), "a.data");
    assert_dango_ok(dango__sd_open(path, &p, &d));
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        r[i]    = mkrec(key, (i == 2) ? (1u << 20) + 5 : 100u + (unsigned)i,
                        (unsigned)i, 7u + (unsigned)i, &lens[i]);
        recs[i] = r[i];
    }
    dango__sd_write(d, 3, recs, lens, st, offs);
    for (int i = 0; i < 3; i++) {
        assert_dango_ok(st[i]);
        assert_int_equal(offs[i] % SD_BLOCK, 0);
    }

    assert_dango_ok(dango__sd_read(d, offs[2], "k2", 2, 9, out, 2u << 20));
    assert_memory_equal(out, r[2], lens[2]);
    assert_dango_err(DANGO_ENOENT,
                     dango__sd_read(d, offs[2], "k2", 2, 8, out, 2u << 20));
    assert_dango_err(DANGO_ENOENT,
                     dango__sd_read(d, offs[2], "k1", 2, 9, out, 2u << 20));
    assert_dango_err(DANGO_ERANGE,
                     dango__sd_read(d, offs[2], "k2", 2, 9, out, 100));
    assert_dango_ok(dango__sd_drop(d, offs[1]));
    assert_dango_err(DANGO_ENOENT, dango__sd_drop(d, offs[1]));
    dango__sd_close(d);

    /* Reopen: the two live records come back (through the index), the
     * dropped one does not. */
    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 2);
    assert_int_equal(s.scanned, 0);
    assert_non_null(dango__sd_find(d, offs[0]));
    assert_null(dango__sd_find(d, offs[1]));
    assert_dango_ok(dango__sd_read(d, offs[0], "k0", 2, 7, out, 2u << 20));
    assert_memory_equal(out, r[0], lens[0]);
    assert_dango_ok(dango__sd_read(d, offs[2], "k2", 2, 9, out, 2u << 20));
    assert_memory_equal(out, r[2], lens[2]);
    dango__sd_close(d);
    for (int i = 0; i < 3; i++) {
        free(r[i]);
    }
    free(out);
    rm_tier(path);
}

/* A flipped byte in the value: not served, dropped; a torn one not rescanned.
 */
static void corrupt_and_torn(void **state)
{
    sd_params_t p = {.capacity = 8u << 20};
    sd_disk_t  *d;
    uint64_t    off[2], lens[2];
    int         st[2];
    char       *r0      = mkrec("c0", 50000, 1, 3, &lens[0]);
    char       *r1      = mkrec("c1", 70000, 2, 4, &lens[1]);
    const void *recs[2] = {r0, r1};
    char       *out = malloc(1u << 20), path[256], ipath[300], b = 0x5a;
    char       *saved;
    size_t      saved_len;
    sd_stats_t  s;
    static char z[SD_BLOCK];

    path_of(path, sizeof(path), "c.data");
    index_of(ipath, sizeof(ipath), path);
    assert_dango_ok(dango__sd_open(path, &p, &d));
    dango__sd_write(d, 2, recs, lens, st, off);
    assert_dango_ok(st[0]);
    assert_dango_ok(st[1]);
    dango__sd_close(d);

    /* r0: corrupt a value byte; r1: cut (torn) by zeroing its tail block. */
    file_write_at(path, off[0] + 30000, &b, 1);
    file_write_at(path, off[1] + (lens[1] / SD_BLOCK - 1) * SD_BLOCK, z,
                  sizeof(z));

    /* The scan (no index) verifies values: neither comes back. */
    saved = slurp(ipath, &saved_len);
    unlink(ipath);
    expect_open(path, &p, 0, 0);

    /* The index checks first blocks only: both come back, and each read
     * verifies the value, fails and drops the record. */
    spill(ipath, saved, saved_len);
    free(saved);
    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 2);
    assert_dango_err(DANGO_ECORRUPT,
                     dango__sd_read(d, off[0], "c0", 2, 3, out, 1u << 20));
    assert_dango_err(DANGO_ECORRUPT,
                     dango__sd_read(d, off[1], "c1", 2, 4, out, 1u << 20));
    dango__sd_stats(d, &s);
    assert_int_equal(s.corrupt, 2);
    assert_int_equal(s.records, 0);
    dango__sd_close(d);
    expect_open(path, &p, 0, 0);

    /* Corrupted after indexing: the read detects it and drops the record. */
    rm_tier(path);
    assert_dango_ok(dango__sd_open(path, &p, &d));
    assert_dango_ok(write_one(d, r0, lens[0], &off[0]));
    file_write_at(path, off[0] + 1000, &b, 1);
    assert_dango_err(DANGO_ECORRUPT,
                     dango__sd_read(d, off[0], "c0", 2, 3, out, 1u << 20));
    assert_null(dango__sd_find(d, off[0]));
    dango__sd_stats(d, &s);
    assert_int_equal(s.corrupt, 1);
    dango__sd_close(d);
    free(r0);
    free(r1);
    free(out);
    rm_tier(path);
}

/*
 * A predecessor that still holds the tier's lock for a moment (a killed node
 * whose file the kernel has not released yet) is waited for; one that keeps
 * it is reported busy after the bounded wait.
 */
static void lock_waits_for_predecessor(void **state)
{
    sd_params_t p = {.capacity = 64 * SD_BLOCK};
    sd_disk_t  *d = NULL;
    char        path[256], c;
    int         fds[2];
    pid_t       pid;
    int         status;
    uint64_t    t0;

    (void)state;
    path_of(path, sizeof(path), "k.data");
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(path, O_RDWR | O_CREAT, 0644);

        if ((fd < 0) || (flock(fd, LOCK_EX) != 0) ||
            (write(fds[1], "l", 1) != 1)) {
            _exit(1);
        }
        usleep(300 * 1000);
        _exit(0);
    }
    close(fds[1]);
    assert_int_equal(read(fds[0], &c, 1), 1);
    close(fds[0]);

    /* Held when the open starts, released 300 ms later by the exit. */
    t0 = dango_time_ns();
    assert_dango_ok(dango__sd_open(path, &p, &d));
    assert_true(dango_time_ns() - t0 >= 100ull * 1000 * 1000);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && (WEXITSTATUS(status) == 0));

    /* Kept: busy after the wait, and the holder's tier is untouched. */
    {
        sd_disk_t *d2 = NULL;

        t0 = dango_time_ns();
        assert_dango_err(DANGO_EBUSY, dango__sd_open(path, &p, &d2));
        assert_null(d2);
        assert_true(dango_time_ns() - t0 >= 2ull * DANGO_NSEC_PER_SEC);
    }
    dango__sd_close(d);
    rm_tier(path);
}

static void lru_full_and_bad_input(void **state)
{
    sd_params_t p = {.capacity = 64 * SD_BLOCK, .high_wm = 0.5};
    sd_disk_t  *d;
    uint64_t    len, off, first = 0;
    char        path[256], key[16];
    size_t      dropped = 0;
    sd_stats_t  s;

    path_of(path, sizeof(path), "l.data");
    assert_dango_err(DANGO_EINVAL,
                     dango__sd_open(path, &(sd_params_t){.capacity = 100}, &d));
    assert_dango_err(DANGO_EINVAL, dango__sd_open("", &p, &d));
    assert_dango_ok(dango__sd_open(path, &p, &d));
    {
        sd_disk_t *d2 = NULL;

        /* One tier per file: a second one is refused. */
        assert_dango_err(DANGO_EBUSY, dango__sd_open(path, &p, &d2));
        assert_null(d2);
    }

    /* 8 blocks each: the 9th does not fit into 64 blocks. */
    for (int i = 0; i < 9; i++) {
        char *r;
        int   st;

        snprintf(key, sizeof(key), "l%d", i);
        r  = mkrec(key, 7 * SD_BLOCK + 100, (unsigned)i, 10u + (unsigned)i,
                   &len);
        st = write_one(d, r, len, &off);
        if (i < 8) {
            assert_dango_ok(st);
            if (i == 0) {
                first = off;
            }
        } else {
            assert_dango_err(DANGO_ENOSPC, st);
        }
        free(r);
    }

    /* Not a committed record. */
    {
        char junk[4096] = {0};

        assert_dango_err(DANGO_EINVAL, write_one(d, junk, sizeof(junk), &off));
    }

    /* Room for 8 more blocks under 50 %: the oldest records go first. */
    dropped = dango__sd_make_room(d, 8 * SD_BLOCK, NULL, NULL);
    dango__sd_stats(d, &s);
    assert_int_equal(dropped, 5);
    assert_true(s.used + 8 * SD_BLOCK <= 32 * SD_BLOCK);
    assert_null(dango__sd_find(d, first));
    dango__sd_close(d);
    rm_tier(path);
}

/* A file system too small for the tier: writes fail with ENOSPC. */
static void fs_full(void **state)
{
    char        mnt[256], path[300];
    sd_params_t p = {.capacity = 64u << 20};
    sd_disk_t  *d;
    uint64_t    len, off;
    int         fails = 0;

    if (tmpfs_mount(mnt, sizeof(mnt), "tmpfs", "2m") != 0) {
        skip();
    }

    snprintf(path, sizeof(path), "%s/f.data", mnt);
    assert_dango_ok(dango__sd_open(path, &p, &d));
    for (int i = 0; i < 8; i++) {
        char *r  = mkrec("f", 512u << 10, (unsigned)i, 1u + (unsigned)i, &len);
        int   st = write_one(d, r, len, &off);

        if (st != 0) {
            assert_dango_err(DANGO_ENOSPC, st);
            fails++;
        }
        free(r);
    }
    assert_true(fails > 0);
    dango__sd_close(d);
    tmpfs_umount(mnt);
}

/* Reads into the extra registered memory go there directly (and are
 * verified there); misaligned or too short destinations take the bounce
 * buffer; a corrupt record is caught either way. */
static void direct_read_into_extra(void **state)
{
    size_t      xlen  = 4u << 20;
    char       *extra = aligned_alloc(SD_BLOCK, xlen);
    sd_params_t p = {.capacity = 8u << 20, .extra = extra, .extra_len = xlen};
    sd_disk_t  *d;
    char        path[256], *r;
    uint64_t    len, off;
    char        b = 0x11;

    path_of(path, sizeof(path), "x.data");
    assert_dango_ok(dango__sd_open(path, &p, &d));
    r = mkrec("x", 300000, 3, 9, &len);
    assert_dango_ok(write_one(d, r, len, &off));

    /* Direct: aligned, whole blocks of room. */
    memset(extra, 0, xlen);
    assert_dango_ok(dango__sd_read(d, off, "x", 1, 9, extra + SD_BLOCK,
                                   (len + SD_BLOCK - 1) / SD_BLOCK * SD_BLOCK));
    assert_memory_equal(extra + SD_BLOCK, r, len);
    /* Bounce: misaligned inside the extra memory. */
    assert_dango_ok(dango__sd_read(d, off, "x", 1, 9, extra + 64, len));
    assert_memory_equal(extra + 64, r, len);

    /* Corrupt on disk: the direct read detects it too. */
    file_write_at(path, off + 200000, &b, 1);
    assert_dango_err(
        DANGO_ECORRUPT,
        dango__sd_read(d, off, "x", 1, 9, extra + SD_BLOCK,
                       (len + SD_BLOCK - 1) / SD_BLOCK * SD_BLOCK));
    assert_null(dango__sd_find(d, off));
    dango__sd_close(d);

    /* Misaligned extra memory is refused. */
    p.extra = extra + 64;
    assert_dango_err(DANGO_EINVAL, dango__sd_open(path, &p, &d));
    free(r);
    free(extra);
    rm_tier(path);
}

/* Extra memory the kernel will not register (over 1 GiB): the tier still
 * opens, and reads into that memory go through the bounce buffer. */
static void extra_too_big_bounces(void **state)
{
    size_t      xlen  = (2ul << 30) + SD_BLOCK;
    char       *extra = mmap(NULL, xlen, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    sd_params_t p     = {.capacity = 8u << 20};
    sd_disk_t  *d;
    char        path[256], *r;
    uint64_t    len, off;

    (void)state;
    assert_true(extra != MAP_FAILED);
    p.extra     = extra;
    p.extra_len = xlen;
    path_of(path, sizeof(path), "big.data");
    assert_dango_ok(dango__sd_open(path, &p, &d));
    r = mkrec("x", 300000, 3, 9, &len);
    assert_dango_ok(write_one(d, r, len, &off));
    assert_dango_ok(dango__sd_read(d, off, "x", 1, 9, extra + SD_BLOCK,
                                   (len + SD_BLOCK - 1) / SD_BLOCK * SD_BLOCK));
    assert_memory_equal(extra + SD_BLOCK, r, len);
    dango__sd_close(d);
    free(r);
    munmap(extra, xlen);
    rm_tier(path);
}

/* Every allocation of open, and of indexing a write, may fail: ENOMEM,
 * nothing leaked, the tier usable afterwards. */
static void oom_open_write(void **state)
{
    sd_params_t p    = {.capacity = 4u << 20};
    sd_disk_t  *d    = NULL;
    long        live = dango__alloc_live();
    char        path[256], *r;
    uint64_t    len, off;
    int         st;
    sd_stats_t  s;

    path_of(path, sizeof(path), "o.data");
    assert_true(open_oom(path, &p, live, &d) >= 2);

    r = mkrec("o", 10000, 1, 5, &len);
    dango__alloc_fail_after(1);
    st = write_one(d, r, len, &off);
    dango__alloc_fail_after(-1);
    assert_dango_err(DANGO_ENOMEM, st);
    assert_dango_ok(write_one(d, r, len, &off));
    dango__sd_close(d);

    /* Through the index: the same, and the record is back at the end. */
    assert_true(open_oom(path, &p, live, &d) >= 4);
    dango__sd_stats(d, &s);
    assert_int_equal(s.indexed, 1);
    free(r);
    dango__sd_close(d);
    assert_int_equal(dango__alloc_live(), live);
    rm_tier(path);
}

/* ---------- index ---------- */

/* Writes and drops come back through the index at reopen, byte for byte;
 * dropped records do not. */
static void index_reopen(void **state)
{
    sd_params_t p = {.capacity = 32u << 20, .buf_size = 1u << 20};
    sd_disk_t  *d;
    char       *r[40], path[256], ipath[300];
    uint64_t    lens[40], offs[40];
    sd_stats_t  s;

    path_of(path, sizeof(path), "i.data");
    index_of(ipath, sizeof(ipath), path);
    assert_dango_ok(dango__sd_open(path, &p, &d));
    write_n(d, "i", 40, 5000, r, lens, offs);
    for (int i = 0; i < 40; i += 3) {
        assert_dango_ok(dango__sd_drop(d, offs[i]));
    }
    dango__sd_close(d);

    for (int round = 0; round < 2; round++) {
        tier_open(path, &p, &d, &s);
        assert_int_equal(s.indexed, 40 - 14);
        assert_int_equal(s.scanned, 0);
        assert_int_equal(s.rejected, 0);
        assert_int_equal(s.index_bytes, size_of(ipath));
        for (int i = 0; i < 40; i++) {
            expect_rec(d, "i", i, r[i], lens[i], offs[i], i % 3 != 0);
        }
        dango__sd_close(d);
    }

    /* make_room() drops are logged too: 10 records of 2 blocks, room for
     * 8 blocks under 16 (a quarter of 64). */
    rm_tier(path);
    p.capacity = 64 * SD_BLOCK;
    p.high_wm  = 0.25;
    assert_dango_ok(dango__sd_open(path, &p, &d));
    free_n(r, 40);
    write_n(d, "m", 10, 5000, r, lens, offs);
    assert_int_equal(dango__sd_make_room(d, 8 * SD_BLOCK, NULL, NULL), 6);
    dango__sd_close(d);
    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 4);
    for (int i = 0; i < 10; i++) {
        expect_rec(d, "m", i, r[i], lens[i], offs[i], i >= 6);
    }
    dango__sd_close(d);
    free_n(r, 10);
    rm_tier(path);
}

/* 1 when @a and @b are the same file, unchanged: a rewrite of the index
 * (a new file renamed over it) or an append would show. */
static int same_file(const struct stat *a, const struct stat *b)
{
    return (a->st_dev == b->st_dev) && (a->st_ino == b->st_ino) &&
           (a->st_size == b->st_size) &&
           (a->st_mtim.tv_sec == b->st_mtim.tv_sec) &&
           (a->st_mtim.tv_nsec == b->st_mtim.tv_nsec);
}

/* A clean, compact index is kept at open (the same file, untouched) and
 * appended to at its end; one with a torn tail is written anew, never
 * appended after. */
static void index_kept_when_clean(void **state)
{
    sd_params_t p = {.capacity = 16u << 20};
    sd_disk_t  *d;
    char       *r[6], *q[4], *t[1], path[256], ipath[300];
    uint64_t    lens[6], offs[6], qlens[4], qoffs[4], tlens[1], toffs[1];
    struct stat st0, st1;
    sd_stats_t  s;

    (void)state;
    path_of(path, sizeof(path), "keep.data");
    index_of(ipath, sizeof(ipath), path);
    assert_dango_ok(dango__sd_open(path, &p, &d));
    write_n(d, "a", 6, 4000, r, lens, offs);
    assert_dango_ok(dango__sd_drop(d, offs[1]));
    dango__sd_close(d);
    assert_int_equal(stat(ipath, &st0), 0);

    /* Replayed to its end, nothing refused: not rewritten. */
    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 5);
    assert_int_equal(s.scanned, 0);
    assert_int_equal(s.index_bytes, st0.st_size);
    assert_int_equal(stat(ipath, &st1), 0);
    assert_true(same_file(&st0, &st1));
    for (int i = 0; i < 6; i++) {
        expect_rec(d, "a", i, r[i], lens[i], offs[i], i != 1);
    }

    /* Appended to the same file, right after its last entry (4 ADDs of
     * 56 bytes and a 2-byte key). */
    write_n(d, "b", 4, 4000, q, qlens, qoffs);
    dango__sd_close(d);
    assert_int_equal(stat(ipath, &st1), 0);
    assert_int_equal(st1.st_ino, st0.st_ino);
    assert_int_equal(st1.st_size, st0.st_size + 4 * (56 + 2));
    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 9);
    assert_int_equal(s.scanned, 0);
    assert_int_equal(s.rejected, 0);
    for (int i = 0; i < 6; i++) {
        expect_rec(d, "a", i, r[i], lens[i], offs[i], i != 1);
    }
    for (int i = 0; i < 4; i++) {
        expect_rec(d, "b", i, q[i], qlens[i], qoffs[i], 1);
    }
    dango__sd_close(d);

    /* Cut inside the last ADD: the index is written anew (b3 is not in
     * it), so an entry appended now follows whole entries only. */
    assert_int_equal(stat(ipath, &st0), 0);
    assert_int_equal(truncate(ipath, st0.st_size - 3), 0);
    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 8);
    assert_int_equal(stat(ipath, &st1), 0);
    assert_true(st1.st_ino != st0.st_ino);
    assert_int_equal(st1.st_size, s.index_bytes);
    write_n(d, "c", 1, 4000, t, tlens, toffs);
    dango__sd_close(d);
    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 9);
    assert_int_equal(s.scanned, 0);
    assert_int_equal(s.rejected, 0);
    expect_rec(d, "b", 2, q[2], qlens[2], qoffs[2], 1);
    expect_rec(d, "b", 3, q[3], qlens[3], qoffs[3], 0);
    expect_rec(d, "c", 0, t[0], tlens[0], toffs[0], 1);
    dango__sd_close(d);
    free_n(r, 6);
    free_n(q, 4);
    free_n(t, 1);
    rm_tier(path);
}

/* A torn last entry ends the replay (the good prefix is kept), garbage
 * after the last entry changes nothing, a corrupt entry before the end
 * voids the index (the scan takes over). */
static void index_torn_tail(void **state)
{
    sd_params_t p = {.capacity = 16u << 20};
    sd_disk_t  *d;
    char       *r[10], path[256], ipath[300], *saved, junk[100];
    uint64_t    lens[10], offs[10];
    size_t      len;
    sd_stats_t  s;

    path_of(path, sizeof(path), "t.data");
    index_of(ipath, sizeof(ipath), path);
    tier_fill(path, &p, "t", 10, 3000, r, lens, offs);
    saved = slurp(ipath, &len);

    /* Cut inside the last ADD (killed mid-append). */
    assert_int_equal(truncate(ipath, (off_t)len - 3), 0);
    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 9);
    assert_int_equal(s.scanned, 0);
    for (int i = 0; i < 10; i++) {
        expect_rec(d, "t", i, r[i], lens[i], offs[i], i < 9);
    }
    dango__sd_close(d);

    /* Garbage appended (no entry's shape): not taken for a cut append,
     * the scan finds all 10. */
    spill(ipath, saved, len);
    memset(junk, 0xa5, sizeof(junk));
    file_append(ipath, junk, sizeof(junk));
    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 0);
    assert_int_equal(s.scanned, 10);
    /* The rewrite at open left the garbage out. */
    assert_int_equal(s.index_bytes, len);
    assert_int_equal(size_of(ipath), (off_t)len);
    dango__sd_close(d);

    /* A flipped byte in the 6th entry (header 32 B, entries 56 B + key):
     * not a torn append, so the index is not trusted and the scan finds
     * all 10 records (a replay up to it would lose the 4 after it). */
    assert_int_equal(len, 32 + 10 * (56 + 2));
    saved[32 + 5 * (56 + 2) + 20] ^= 1;
    spill(ipath, saved, len);
    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 0);
    assert_int_equal(s.scanned, 10);
    for (int i = 0; i < 10; i++) {
        expect_rec(d, "t", i, r[i], lens[i], offs[i], 1);
    }
    dango__sd_close(d);

    /* The 9th entry's length field garbled (larger than the rest of the
     * file): not a cut append either (its type and key length say 58
     * bytes), so the scan finds all 10; taken for a tail, the 9th and
     * 10th records were lost. */
    saved[32 + 5 * (56 + 2) + 20] ^= 1;
    memset(saved + 32 + 8 * (56 + 2) + 8, 0x7f, 4);
    spill(ipath, saved, len);
    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 0);
    assert_int_equal(s.scanned, 10);
    for (int i = 0; i < 10; i++) {
        expect_rec(d, "t", i, r[i], lens[i], offs[i], 1);
    }
    dango__sd_close(d);

    /* A header only, or not even that: nothing, or a scan. */
    assert_int_equal(truncate(ipath, 32), 0);
    expect_open(path, &p, 0, 0);
    free(saved);
    free_n(r, 10);
    rm_tier(path);
}

/* No index: the scan finds the records and a new index is written, which
 * the next open uses. */
static void index_missing_scans(void **state)
{
    sd_params_t p = {.capacity = 16u << 20};
    sd_disk_t  *d;
    char       *r[12], path[256], ipath[300];
    uint64_t    lens[12], offs[12];
    sd_stats_t  s;

    path_of(path, sizeof(path), "m.data");
    index_of(ipath, sizeof(ipath), path);
    assert_dango_ok(dango__sd_open(path, &p, &d));
    write_n(d, "s", 12, 20000, r, lens, offs);
    assert_dango_ok(dango__sd_drop(d, offs[3]));
    dango__sd_close(d);

    assert_int_equal(unlink(ipath), 0);
    tier_open(path, &p, &d, &s);
    assert_int_equal(s.scanned, 11);
    assert_int_equal(s.indexed, 0);
    assert_true(s.index_bytes > 0);
    assert_int_equal(size_of(ipath), (off_t)s.index_bytes);
    dango__sd_close(d);

    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 11);
    assert_int_equal(s.scanned, 0);
    for (int i = 0; i < 12; i++) {
        expect_rec(d, "s", i, r[i], lens[i], offs[i], i != 3);
    }
    dango__sd_close(d);
    free_n(r, 12);
    rm_tier(path);
}

/*
 * The scan reads the file a chunk at a time: a record whose key runs past
 * the end of a chunk is read again from its first block and taken back; a
 * forged header claiming a longer key than the file holds is not, and
 * nothing is read outside the buffer.
 */
static void scan_key_across_chunks(void **state)
{
    sd_params_t p = {.capacity = 1u << 20, .buf_size = 64u << 10};
    sd_disk_t  *d;
    char        path[256], key[DANGO_STORE_KEY_MAX + 1], *file, *r, *got;
    uint64_t    len, at = (64u << 10) - SD_BLOCK;
    uint64_t    forged = (128u << 10) - SD_BLOCK;
    dango_store_rec_hdr_t h;
    sd_stats_t            s;

    (void)state;
    memset(key, 'k', DANGO_STORE_KEY_MAX);
    key[DANGO_STORE_KEY_MAX] = '\0';
    r                        = mkrec(key, 1000, 7, 42, &len);
    file                     = calloc(1, 128u << 10);
    assert_non_null(file);
    memcpy(file + at, r, len);
    memcpy(&h, r, sizeof(h));
    h.key_len = UINT16_MAX;
    memcpy(file + forged, &h, sizeof(h));
    path_of(path, sizeof(path), "chunks.data");
    spill(path, file, 128u << 10);

    tier_open(path, &p, &d, &s);
    assert_int_equal(s.scanned, 1);
    assert_non_null(dango__sd_find(d, at));
    assert_null(dango__sd_find(d, forged));
    got = malloc(SD_ALIGN_UP(len));
    assert_dango_ok(dango__sd_read(d, at, key, DANGO_STORE_KEY_MAX, 42, got,
                                   SD_ALIGN_UP(len)));
    assert_memory_equal(got, r, len);
    dango__sd_close(d);
    free(got);
    free(file);
    free(r);
    rm_tier(path);
}

/* Record blocks changed behind the tier's back: zeroed, or holding another
 * record: their entries are refused at open, never returned. */
static void index_stale_entry(void **state)
{
    sd_params_t p = {.capacity = 16u << 20};
    sd_disk_t  *d;
    char       *r[4], path[256];
    uint64_t    lens[4], offs[4];
    sd_stats_t  s;
    static char z[SD_BLOCK];

    path_of(path, sizeof(path), "z.data");
    tier_fill(path, &p, "z", 4, 9000, r, lens, offs);

    file_write_at(path, offs[1], z, sizeof(z));
    /* Record 0's first block over record 2's: intact, but not its key. */
    file_write_at(path, offs[2], r[0], SD_BLOCK);

    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 2);
    assert_int_equal(s.rejected, 2);
    assert_null(dango__sd_find(d, offs[1]));
    assert_null(dango__sd_find(d, offs[2]));
    for (int i = 0; i < 4; i++) {
        expect_rec(d, "z", i, r[i], lens[i], offs[i], (i == 0) || (i == 3));
    }
    /* Their space is free again. */
    assert_int_equal(s.used, SD_ALIGN_UP(lens[0]) + SD_ALIGN_UP(lens[3]));
    dango__sd_close(d);

    /* The open wrote the index anew without them. */
    expect_open(path, &p, 2, 0);
    free_n(r, 4);
    rm_tier(path);
}

/* An index of another capacity is ignored: the scan runs. */
static void index_other_capacity(void **state)
{
    sd_params_t p = {.capacity = 16u << 20};
    sd_disk_t  *d;
    char       *r[5], path[256];
    uint64_t    lens[5], offs[5];
    sd_stats_t  s;

    path_of(path, sizeof(path), "k.data");
    tier_fill(path, &p, "k", 5, 7000, r, lens, offs);

    p.capacity = 32u << 20;
    expect_open(path, &p, 0, 5);
    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 5);
    for (int i = 0; i < 5; i++) {
        expect_rec(d, "k", i, r[i], lens[i], offs[i], 1);
    }
    dango__sd_close(d);
    free_n(r, 5);
    rm_tier(path);
}

/* Many write/drop cycles: the log is compacted, so the index stays small,
 * and a reopen still finds exactly the live records. */
static void index_compaction(void **state)
{
    sd_params_t p = {.capacity = 16u << 20};
    sd_disk_t  *d;
    char       *r[100], path[256], ipath[300], pfx[16];
    uint64_t    lens[100], offs[100], max_bytes = 0;
    sd_stats_t  s;

    path_of(path, sizeof(path), "y.data");
    index_of(ipath, sizeof(ipath), path);
    assert_dango_ok(dango__sd_open(path, &p, &d));
    for (int c = 0; c < 60; c++) {
        snprintf(pfx, sizeof(pfx), "y%d.", c);
        write_n(d, pfx, 100, 100, r, lens, offs);
        for (int i = 0; i < 100; i++) {
            if ((c < 59) || (i % 2 == 0)) {
                assert_dango_ok(dango__sd_drop(d, offs[i]));
            }
        }
        dango__sd_stats(d, &s);
        max_bytes = (s.index_bytes > max_bytes) ? s.index_bytes : max_bytes;
        if (c < 59) {
            free_n(r, 100);
        }
    }
    /* 12000 entries logged; never more than 4096 + one round's kept. */
    dango__sd_stats(d, &s);
    assert_int_equal(s.records, 50);
    assert_int_equal(s.index_errors, 0);
    assert_true(max_bytes < (4096 + 200) * 80);
    assert_int_equal(size_of(ipath), (off_t)s.index_bytes);
    dango__sd_close(d);

    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 50);
    assert_int_equal(s.rejected, 0);
    for (int i = 0; i < 100; i++) {
        expect_rec(d, "y59.", i, r[i], lens[i], offs[i], i % 2 != 0);
    }
    dango__sd_close(d);
    free_n(r, 100);
    rm_tier(path);
}

/* Forged entries past the capacity, misaligned or over another record are
 * refused; the true records stay. */
static void index_bad_entries(void **state)
{
    sd_params_t           p = {.capacity = 1u << 20};
    sd_disk_t            *d;
    char                 *r[2], path[256], ipath[300];
    uint64_t              lens[2], offs[2];
    dango_store_rec_hdr_t h;
    sd_stats_t            s;

    path_of(path, sizeof(path), "b.data");
    index_of(ipath, sizeof(ipath), path);
    tier_fill(path, &p, "b", 2, 30000, r, lens, offs);
    memcpy(&h, r[0], sizeof(h));

    /* Past the capacity; ending past it; misaligned; a copy of b0's entry
     * one block into b0 (overlap, and its header is not there). */
    ient_append(ipath, 1u << 20, SD_ALIGN_UP(lens[0]), 1000, h.value_len,
                h.checksum, "b0");
    ient_append(ipath, (1u << 20) - SD_BLOCK, SD_ALIGN_UP(lens[0]), 1000,
                h.value_len, h.checksum, "b0");
    ient_append(ipath, offs[0] + 512, SD_ALIGN_UP(lens[0]), 1000, h.value_len,
                h.checksum, "b0");
    ient_append(ipath, offs[0] + SD_BLOCK, SD_ALIGN_UP(lens[0]), 1000,
                h.value_len, h.checksum, "b0");
    /* Wrong allocated size for its record. */
    ient_append(ipath, 512u << 10, SD_BLOCK, 1000, h.value_len, h.checksum,
                "b0");

    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 2);
    assert_int_equal(s.rejected, 5);
    assert_int_equal(s.records, 2);
    expect_rec(d, "b", 0, r[0], lens[0], offs[0], 1);
    expect_rec(d, "b", 1, r[1], lens[1], offs[1], 1);
    dango__sd_close(d);

    /* The open wrote the index anew without them. */
    expect_open(path, &p, 2, 0);

    free_n(r, 2);
    rm_tier(path);
}

/*
 * ADDs that cannot name a record of the tier (past the capacity, misaligned,
 * a value larger than the tier) are refused as they are replayed, before
 * anything is allocated for them: an index holding 900 of them, checksums
 * right, opens within the allocations of a clean open of the same two
 * records (one per entry would exceed them), and leaks nothing.
 */
static void index_entries_checked_before_alloc(void **state)
{
    sd_params_t           p = {.capacity = 1u << 20, .buf_size = 64u << 10};
    sd_disk_t            *d;
    char                 *r[2], path[256], ipath[300];
    uint64_t              lens[2], offs[2];
    long                  live = dango__alloc_live(), need;
    dango_store_rec_hdr_t h;
    sd_stats_t            s;
    int                   rc;

    (void)state;
    path_of(path, sizeof(path), "cap.data");
    index_of(ipath, sizeof(ipath), path);
    tier_fill(path, &p, "b", 2, 30000, r, lens, offs);
    memcpy(&h, r[0], sizeof(h));

    /* One more than the allocations of a clean open. */
    need = open_oom(path, &p, live, &d) + 1;
    dango__sd_close(d);

    for (uint64_t i = 0; i < 400; i++) {
        /* Past the capacity, each at its own offset. */
        ient_append(ipath, p.capacity + i * SD_BLOCK, SD_ALIGN_UP(lens[0]),
                    1000, h.value_len, h.checksum, "b0");
        /* Misaligned. */
        ient_append(ipath, i * SD_BLOCK + 512, SD_ALIGN_UP(lens[0]), 1000,
                    h.value_len, h.checksum, "b0");
    }
    for (uint64_t i = 0; i < 100; i++) {
        /* In the free part, but a value larger than the tier, whose record
         * length wraps around to one block. */
        ient_append(ipath, (512u << 10) + i * SD_BLOCK, SD_BLOCK, 1000,
                    UINT64_MAX - i, h.checksum, "b0");
    }

    dango__alloc_fail_after(need);
    rc = dango__sd_open(path, &p, &d);
    dango__alloc_fail_after(-1);
    assert_dango_ok(rc);
    dango__sd_stats(d, &s);
    assert_int_equal(s.indexed, 2);
    assert_int_equal(s.rejected, 900);
    assert_int_equal(s.records, 2);
    expect_rec(d, "b", 0, r[0], lens[0], offs[0], 1);
    expect_rec(d, "b", 1, r[1], lens[1], offs[1], 1);
    dango__sd_close(d);
    assert_int_equal(dango__alloc_live(), live);

    free_n(r, 2);
    rm_tier(path);
}

/*
 * A checksummed index naming a record with a 65000-byte key at every free
 * block, all overlapping: each ADD fits the tier on its own, but together
 * they name 14 times the capacity, in about as many bytes of keys. ADDs
 * that would leave the live entries naming more than the capacity are
 * refused as they are replayed, before anything is allocated for them: the
 * open stays within the allocations of a clean open plus two per entry the
 * capacity has room for (the entry and a share of the replay map's growth),
 * refuses every forged entry, keeps the true records and leaks nothing.
 */
static void index_overlaps_bounded(void **state)
{
    enum { KLEN = 65000 };
    sd_params_t p = {.capacity = 1u << 20, .buf_size = 64u << 10};
    sd_disk_t  *d;
    char       *r[2], path[256], ipath[300], *key, *e;
    uint64_t    lens[2], offs[2], asz, off, n = 0;
    long        live = dango__alloc_live(), need;
    sd_stats_t  s;
    int         rc;

    (void)state;
    path_of(path, sizeof(path), "ov.data");
    index_of(ipath, sizeof(ipath), path);
    tier_fill(path, &p, "b", 2, 30000, r, lens, offs);
    assert_true(offs[0] < offs[1]);

    /* One more than the allocations of a clean open. */
    need = open_oom(path, &p, live, &d) + 1;
    dango__sd_close(d);

    key = malloc(KLEN + 1);
    e   = malloc(64 + KLEN);
    memset(key, 'o', KLEN);
    key[KLEN] = '\0';
    asz       = SD_ALIGN_UP(dango_store_rec_size(KLEN, 1));
    for (off = offs[1] + SD_ALIGN_UP(lens[1]); off + asz <= p.capacity;
         off += SD_BLOCK) {
        file_append(ipath, e, ient_make(e, off, asz, 7, 1, 0, key));
        n++;
    }
    assert_true(n * asz > 14 * p.capacity);

    dango__alloc_fail_after(need + 2 * (long)(p.capacity / asz));
    rc = dango__sd_open(path, &p, &d);
    dango__alloc_fail_after(-1);
    assert_dango_ok(rc);
    dango__sd_stats(d, &s);
    assert_int_equal(s.indexed, 2);
    assert_int_equal(s.rejected, n);
    assert_int_equal(s.records, 2);
    expect_rec(d, "b", 0, r[0], lens[0], offs[0], 1);
    expect_rec(d, "b", 1, r[1], lens[1], offs[1], 1);
    dango__sd_close(d);
    assert_int_equal(dango__alloc_live(), live);

    /* The open wrote the index anew without them. */
    expect_open(path, &p, 2, 0);

    free(e);
    free(key);
    free_n(r, 2);
    rm_tier(path);
}

/* A compaction cannot write "<index>.tmp" (a directory sits there): the
 * index in place is complete, so it stays and takes the appends, and the
 * next open replays it instead of scanning. */
static void index_rewrite_fails_keeps_log(void **state)
{
    sd_params_t p = {.capacity = 16u << 20};
    sd_disk_t  *d;
    char       *r[100], path[256], ipath[300], tmp[320], pfx[16];
    uint64_t    lens[100], offs[100];
    sd_stats_t  s;

    path_of(path, sizeof(path), "k.data");
    index_of(ipath, sizeof(ipath), path);
    snprintf(tmp, sizeof(tmp), "%s.tmp", ipath);
    assert_dango_ok(dango__sd_open(path, &p, &d));
    assert_int_equal(mkdir(tmp, 0755), 0);
    /* 50 rounds of 100 writes and drops: 10000 entries, past the
     * uncompacted limit of 4096 twice. */
    for (int c = 0; c < 50; c++) {
        snprintf(pfx, sizeof(pfx), "k%d.", c);
        write_n(d, pfx, 100, 100, r, lens, offs);
        for (int i = 0; i < 100; i++) {
            if ((c < 49) || (i % 2 == 0)) {
                assert_dango_ok(dango__sd_drop(d, offs[i]));
            }
        }
        if (c < 49) {
            free_n(r, 100);
        }
    }

    dango__sd_stats(d, &s);
    assert_int_equal(s.records, 50);
    assert_int_equal(s.index_errors, 2); /* at 4097 and 8194 entries */
    assert_true(s.index_bytes > 0);
    assert_int_equal(size_of(ipath), (off_t)s.index_bytes);
    dango__sd_close(d);

    assert_int_equal(rmdir(tmp), 0);
    tier_open(path, &p, &d, &s);
    assert_int_equal(s.indexed, 50);
    assert_int_equal(s.scanned, 0);
    assert_int_equal(s.rejected, 0);
    /* The log held far more dead entries than a compaction waits for: the
     * open compacted it (50 ADDs, keys of 5 or 6 bytes). */
    assert_true(s.index_bytes <= 32 + 50 * (56 + 6));
    assert_int_equal(size_of(ipath), (off_t)s.index_bytes);
    for (int i = 0; i < 100; i++) {
        expect_rec(d, "k49.", i, r[i], lens[i], offs[i], i % 2 != 0);
    }
    dango__sd_close(d);
    free_n(r, 100);
    rm_tier(path);
}

/* The index cannot be written (a directory sits at its path): the data
 * path goes on, errors are counted, the next open scans. */
static void index_write_fails(void **state)
{
    sd_params_t p = {.capacity = 16u << 20};
    sd_disk_t  *d;
    char       *r[6], path[256], ipath[300];
    uint64_t    lens[6], offs[6];
    sd_stats_t  s;

    path_of(path, sizeof(path), "w.data");
    index_of(ipath, sizeof(ipath), path);
    assert_int_equal(mkdir(ipath, 0755), 0);
    assert_dango_ok(dango__sd_open(path, &p, &d));
    write_n(d, "w", 6, 6000, r, lens, offs);
    assert_dango_ok(dango__sd_drop(d, offs[2]));
    dango__sd_stats(d, &s);
    assert_int_equal(s.index_errors, 1);
    assert_int_equal(s.index_bytes, 0);
    assert_int_equal(s.records, 5);
    for (int i = 0; i < 6; i++) {
        expect_rec(d, "w", i, r[i], lens[i], offs[i], i != 2);
    }
    dango__sd_close(d);

    assert_int_equal(rmdir(ipath), 0);
    tier_open(path, &p, &d, &s);
    assert_int_equal(s.scanned, 5);
    assert_int_equal(s.index_errors, 0);
    dango__sd_close(d);
    expect_open(path, &p, 5, 0);
    free_n(r, 6);
    rm_tier(path);
}

/* The index's file system fills up (the data file is preallocated): appends
 * fail with ENOSPC, the index is removed, every record stays readable, and
 * the next open scans and writes the index again. */
static void index_fs_full(void **state)
{
    char        mnt[256], path[300], ipath[320], fill[320];
    sd_params_t p = {.capacity = 2u << 20};
    sd_disk_t  *d;
    char       *r[150], *chunk = calloc(1, 64u << 10);
    uint64_t    lens[150], offs[150];
    sd_stats_t  s;
    int         fd;

    if (tmpfs_mount(mnt, sizeof(mnt), "tmpfs2", "4m") != 0) {
        free(chunk);
        skip();
    }

    snprintf(path, sizeof(path), "%s/e.data", mnt);
    snprintf(fill, sizeof(fill), "%s/filler", mnt);
    index_of(ipath, sizeof(ipath), path);
    fd = open(path, O_RDWR | O_CREAT, 0644);
    assert_int_equal(posix_fallocate(fd, 0, (off_t)p.capacity), 0);
    close(fd);
    assert_dango_ok(dango__sd_open(path, &p, &d));
    fd = open(fill, O_WRONLY | O_CREAT, 0644);
    while (write(fd, chunk, 64u << 10) > 0) {
    }
    while (write(fd, chunk, 1) > 0) {
    }
    close(fd);

    write_n(d, "e", 150, 3000, r, lens, offs);
    dango__sd_stats(d, &s);
    assert_true(s.index_errors >= 1);
    assert_int_equal(s.records, 150);
    assert_int_equal(s.write_errors, 0);
    assert_int_equal(size_of(ipath), -1);
    for (int i = 0; i < 150; i++) {
        expect_rec(d, "e", i, r[i], lens[i], offs[i], 1);
    }
    dango__sd_close(d);

    unlink(fill);
    expect_open(path, &p, 0, 150);
    expect_open(path, &p, 150, 0);

    free_n(r, 150);
    free(chunk);
    tmpfs_umount(mnt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(write_read_reopen),
        cmocka_unit_test(corrupt_and_torn),
        cmocka_unit_test(lru_full_and_bad_input),
        cmocka_unit_test(lock_waits_for_predecessor),
        cmocka_unit_test(fs_full),
        cmocka_unit_test(oom_open_write),
        cmocka_unit_test(direct_read_into_extra),
        cmocka_unit_test(extra_too_big_bounces),
        cmocka_unit_test(index_reopen),
        cmocka_unit_test(index_torn_tail),
        cmocka_unit_test(index_kept_when_clean),
        cmocka_unit_test(index_missing_scans),
        cmocka_unit_test(index_stale_entry),
        cmocka_unit_test(index_other_capacity),
        cmocka_unit_test(index_compaction),
        cmocka_unit_test(index_bad_entries),
        cmocka_unit_test(index_entries_checked_before_alloc),
        cmocka_unit_test(index_overlaps_bounded),
        cmocka_unit_test(index_write_fails),
        cmocka_unit_test(index_rewrite_fails_keeps_log),
        cmocka_unit_test(index_fs_full),
        cmocka_unit_test(scan_key_across_chunks),
    };
    int rc;

    dango_test_quiet_logs();
    if (mkdtemp(dir) == NULL) {
        return 1;
    }
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(dir);
    return rc;
}
