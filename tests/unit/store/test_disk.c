/*
 * Disk tier of a store node (store_disk.c): records written and read back
 * through io_uring, taken back after a reopen, torn and corrupted records
 * detected, a full tier and a full file system reported, LRU room-making.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "dango_test.h"
#include "common/alloc.h"
#include "common/hash.h"
#include "store/store_disk.h"
#include "store/store_proto.h"

static char dir[] = "/tmp/dango-test-disk-XXXXXX";

/* A committed record of @key with @vlen bytes of value seeded by @seed. */
static char *mkrec(const char *key, uint64_t vlen, unsigned seed,
                   uint64_t put_id, uint64_t *len_p)
{
    uint64_t klen = strlen(key);
    uint64_t len  = dango_store_rec_size(klen, vlen);
    char    *r    = malloc(len);
    char    *v    = r + dango_store_rec_value_off(klen);
    uint64_t commit;

    for (uint64_t i = 0; i < vlen; i++) {
        v[i] = (char)(i * 31 + seed);
    }
    dango_store_rec_format(r, key, (uint16_t)klen, vlen, dango_hash64(v, vlen),
                           put_id);
    commit = put_id ^ DANGO_STORE_REC_COMMIT_XOR;
    memcpy(r + offsetof(dango_store_rec_hdr_t, commit), &commit, 8);
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
    assert_dango_ok(dango__sd_open(path, &p, &d));
    dango__sd_stats(d, &s);
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
    uint64_t    len, off[2], lens[2];
    int         st[2], fd;
    char       *r0      = mkrec("c0", 50000, 1, 3, &lens[0]);
    char       *r1      = mkrec("c1", 70000, 2, 4, &lens[1]);
    const void *recs[2] = {r0, r1};
    char       *out = malloc(1u << 20), path[256], ipath[300], b = 0x5a;
    char       *saved;
    size_t      saved_len;
    sd_stats_t  s;

    (void)len;
    path_of(path, sizeof(path), "c.data");
    index_of(ipath, sizeof(ipath), path);
    assert_dango_ok(dango__sd_open(path, &p, &d));
    dango__sd_write(d, 2, recs, lens, st, off);
    assert_dango_ok(st[0]);
    assert_dango_ok(st[1]);
    dango__sd_close(d);

    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    /* r0: corrupt a value byte; r1: cut (torn) by zeroing its tail block. */
    assert_int_equal(pwrite(fd, &b, 1, (off_t)(off[0] + 30000)), 1);
    {
        static char z[SD_BLOCK];

        assert_int_equal(
            pwrite(fd, z, sizeof(z),
                   (off_t)(off[1] + (lens[1] / SD_BLOCK - 1) * SD_BLOCK)),
            (ssize_t)sizeof(z));
    }
    close(fd);

    /* The scan (no index) verifies values: neither comes back. */
    saved = slurp(ipath, &saved_len);
    unlink(ipath);
    assert_dango_ok(dango__sd_open(path, &p, &d));
    dango__sd_stats(d, &s);
    assert_int_equal(s.scanned, 0);
    assert_int_equal(s.indexed, 0);
    dango__sd_close(d);

    /* The index checks first blocks only: both come back, and each read
     * verifies the value, fails and drops the record. */
    spill(ipath, saved, saved_len);
    free(saved);
    assert_dango_ok(dango__sd_open(path, &p, &d));
    dango__sd_stats(d, &s);
    assert_int_equal(s.indexed, 2);
    assert_dango_err(DANGO_ECORRUPT,
                     dango__sd_read(d, off[0], "c0", 2, 3, out, 1u << 20));
    assert_dango_err(DANGO_ECORRUPT,
                     dango__sd_read(d, off[1], "c1", 2, 4, out, 1u << 20));
    dango__sd_stats(d, &s);
    assert_int_equal(s.corrupt, 2);
    assert_int_equal(s.records, 0);
    dango__sd_close(d);
    assert_dango_ok(dango__sd_open(path, &p, &d));
    dango__sd_stats(d, &s);
    assert_int_equal(s.indexed + s.scanned, 0);
    dango__sd_close(d);

    /* Corrupted after indexing: the read detects it and drops the record. */
    rm_tier(path);
    assert_dango_ok(dango__sd_open(path, &p, &d));
    dango__sd_write(d, 1, recs, lens, st, off);
    assert_dango_ok(st[0]);
    fd = open(path, O_RDWR);
    assert_int_equal(pwrite(fd, &b, 1, (off_t)(off[0] + 1000)), 1);
    close(fd);
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

static void lru_full_and_bad_input(void **state)
{
    sd_params_t p = {.capacity = 64 * SD_BLOCK, .high_wm = 0.5};
    sd_disk_t  *d;
    uint64_t    lens[1], off[1], first = 0;
    int         st[1];
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
        char       *r;
        const void *recs[1];

        snprintf(key, sizeof(key), "l%d", i);
        r       = mkrec(key, 7 * SD_BLOCK + 100, (unsigned)i, 10u + (unsigned)i,
                        &lens[0]);
        recs[0] = r;
        dango__sd_write(d, 1, recs, lens, st, off);
        if (i < 8) {
            assert_dango_ok(st[0]);
            if (i == 0) {
                first = off[0];
            }
        } else {
            assert_dango_err(DANGO_ENOSPC, st[0]);
        }
        free(r);
    }

    /* Not a committed record. */
    {
        char        junk[4096] = {0};
        const void *recs[1]    = {junk};

        lens[0] = sizeof(junk);
        dango__sd_write(d, 1, recs, lens, st, off);
        assert_dango_err(DANGO_EINVAL, st[0]);
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
    char        mnt[256], cmd[512], path[300];
    sd_params_t p = {.capacity = 64u << 20};
    sd_disk_t  *d;
    uint64_t    lens[1], off[1];
    int         st[1], rc, fails = 0;

    snprintf(mnt, sizeof(mnt), "%s/tmpfs", dir);
    mkdir(mnt, 0755);
    snprintf(cmd, sizeof(cmd), "mount -t tmpfs -o size=2m tmpfs %s 2>/dev/null",
             mnt);
    if (system(cmd) != 0) {
        rmdir(mnt);
        skip();
    }

    snprintf(path, sizeof(path), "%s/f.data", mnt);
    rc = dango__sd_open(path, &p, &d);
    assert_dango_ok(rc);
    for (int i = 0; i < 8; i++) {
        char *r =
            mkrec("f", 512u << 10, (unsigned)i, 1u + (unsigned)i, &lens[0]);
        const void *recs[1] = {r};

        dango__sd_write(d, 1, recs, lens, st, off);
        if (st[0] != 0) {
            assert_dango_err(DANGO_ENOSPC, st[0]);
            fails++;
        }
        free(r);
    }
    assert_true(fails > 0);
    dango__sd_close(d);
    snprintf(cmd, sizeof(cmd), "umount %s", mnt);
    assert_int_equal(system(cmd), 0);
    rmdir(mnt);
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
    int         st, fd;
    const void *recs[1];
    char        b = 0x11;

    path_of(path, sizeof(path), "x.data");
    assert_dango_ok(dango__sd_open(path, &p, &d));
    r       = mkrec("x", 300000, 3, 9, &len);
    recs[0] = r;
    dango__sd_write(d, 1, recs, &len, &st, &off);
    assert_dango_ok(st);

    /* Direct: aligned, whole blocks of room. */
    memset(extra, 0, xlen);
    assert_dango_ok(dango__sd_read(d, off, "x", 1, 9, extra + SD_BLOCK,
                                   (len + SD_BLOCK - 1) / SD_BLOCK * SD_BLOCK));
    assert_memory_equal(extra + SD_BLOCK, r, len);
    /* Bounce: misaligned inside the extra memory. */
    assert_dango_ok(dango__sd_read(d, off, "x", 1, 9, extra + 64, len));
    assert_memory_equal(extra + 64, r, len);

    /* Corrupt on disk: the direct read detects it too. */
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, &b, 1, (off_t)(off + 200000)), 1);
    close(fd);
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

/* Every allocation of open, and of indexing a write, may fail: ENOMEM,
 * nothing leaked, the tier usable afterwards. */
static void oom_open_write(void **state)
{
    sd_params_t p        = {.capacity = 4u << 20};
    sd_disk_t  *d        = NULL;
    long        live     = dango__alloc_live();
    int         failures = 0, rc, st[1];
    char        path[256], *r;
    uint64_t    len, off[1];
    const void *recs[1];

    path_of(path, sizeof(path), "o.data");
    for (long n = 1;; n++) {
        dango__alloc_fail_after(n);
        rc = dango__sd_open(path, &p, &d);
        dango__alloc_fail_after(-1);
        if (rc == 0) {
            break;
        }
        assert_dango_err(DANGO_ENOMEM, rc);
        assert_null(d);
        assert_int_equal(dango__alloc_live(), live);
        failures++;
    }
    assert_true(failures >= 2);

    r       = mkrec("o", 10000, 1, 5, &len);
    recs[0] = r;
    dango__alloc_fail_after(1);
    dango__sd_write(d, 1, recs, &len, st, off);
    dango__alloc_fail_after(-1);
    assert_dango_err(DANGO_ENOMEM, st[0]);
    dango__sd_write(d, 1, recs, &len, st, off);
    assert_dango_ok(st[0]);
    free(r);
    dango__sd_close(d);
    assert_int_equal(dango__alloc_live(), live);
    rm_tier(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(write_read_reopen),
        cmocka_unit_test(corrupt_and_torn),
        cmocka_unit_test(lru_full_and_bad_input),
        cmocka_unit_test(fs_full),
        cmocka_unit_test(oom_open_write),
        cmocka_unit_test(direct_read_into_extra),
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
