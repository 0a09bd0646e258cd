/*
 * Registered memory of the local segment.
 *
 * DESIGN
 * - Regions live in an array sorted by start address; lookups are a binary
 *   search under a read lock (uncontended rwlock reads are a few atomics),
 *   registration and unregistration take the write lock. Overlaps are
 *   refused at registration, so at most one region can cover an address.
 * - Peer accesses pin a region (refs) for as long as a transport reads or
 *   writes it. Unregistering first marks the region dead (no new access
 *   pins it; it still holds its range against overlapping registrations),
 *   then waits up to XFER_UNREGISTER_TIMEOUT for the pins to drop and only
 *   then removes it: once it returns 0, no transport touches the memory.
 * - dango_xfer_mem_alloc() backs memory with a memfd so that peers on the
 *   same host can map it (transport shm). Pages are populated at allocation:
 *   a first touch on the data path costs more than the copy itself.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <numa.h>
#include <numaif.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/time.h"
#include "xfer/xfer_int.h"

/* ---------- table ---------- */

/* Index of the first region whose start is > @addr. */
static size_t region_upper(dango_xfer_engine_t *eng, uint64_t addr)
{
    size_t lo = 0, hi = eng->num_regions;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (eng->regions[mid]->addr <= addr) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }

    return lo;
}

xfer_region_t *dango__xfer_region_find(dango_xfer_engine_t *eng, uint64_t addr,
                                       uint64_t len)
{
    size_t         i = region_upper(eng, addr);
    xfer_region_t *r;

    if (i == 0) {
        return NULL;
    }

    r = eng->regions[i - 1];
    /* addr >= r->addr here; compare lengths to avoid overflow. */
    if ((addr - r->addr >= r->len) || (len > r->len - (addr - r->addr))) {
        return NULL;
    }

    return r;
}

int dango__xfer_local_check(dango_xfer_engine_t *eng, const void *addr,
                            uint64_t len)
{
    xfer_region_t *r;
    int            ok;

    pthread_rwlock_rdlock(&eng->mem_lock);
    r  = dango__xfer_region_find(eng, (uintptr_t)addr, len);
    ok = (r != NULL) && !__atomic_load_n(&r->dead, __ATOMIC_ACQUIRE);
    pthread_rwlock_unlock(&eng->mem_lock);
    return ok ? 0 : DANGO_ENOTREG;
}

static int region_seq_cmp(const void *a, const void *b)
{
    const xfer_region_t *x = *(xfer_region_t *const *)a;
    const xfer_region_t *y = *(xfer_region_t *const *)b;

    return (x->seq > y->seq) - (x->seq < y->seq);
}

/*
 * The table is sorted by address, but buffers are published and
 * enumerated in registration order (the documented order of
 * dango_xfer_segment_buffer()), so callers get them sorted by seq here.
 */
size_t dango__xfer_remote_regions(dango_xfer_engine_t *eng, xfer_region_t **out,
                                  size_t max)
{
    size_t n = 0;

    for (size_t i = 0; i < eng->num_regions; i++) {
        if (eng->regions[i]->flags & DANGO_XFER_MEM_REMOTE) {
            if (n < max) {
                out[n] = eng->regions[i];
            }

            n++;
        }
    }

    qsort(out, DANGO_MIN(n, max), sizeof(*out), region_seq_cmp);
    return n;
}

static int region_insert(dango_xfer_engine_t *eng, xfer_region_t *r)
{
    size_t i = region_upper(eng, r->addr);

    /* The previous region must end before us, the next start after us. */
    if ((i > 0) &&
        (eng->regions[i - 1]->addr + eng->regions[i - 1]->len > r->addr)) {
        return DANGO_EOVERLAP;
    }

    if ((i < eng->num_regions) && (r->addr + r->len > eng->regions[i]->addr)) {
        return DANGO_EOVERLAP;
    }

    if (eng->num_regions == eng->cap_regions) {
        size_t          cap = eng->cap_regions ? eng->cap_regions * 2 : 16;
        xfer_region_t **nr =
            dango_realloc(eng->regions, cap * sizeof(*nr), "xfer_regions");

        if (nr == NULL) {
            return DANGO_ENOMEM;
        }

        eng->regions     = nr;
        eng->cap_regions = cap;
    }

    memmove(&eng->regions[i + 1], &eng->regions[i],
            (eng->num_regions - i) * sizeof(*eng->regions));
    eng->regions[i] = r;
    eng->num_regions++;
    return 0;
}

static xfer_region_t *region_remove_at(dango_xfer_engine_t *eng, size_t i)
{
    xfer_region_t *r = eng->regions[i];

    memmove(&eng->regions[i], &eng->regions[i + 1],
            (eng->num_regions - i - 1) * sizeof(*eng->regions));
    eng->num_regions--;
    return r;
}

static ssize_t region_index_of(dango_xfer_engine_t *eng, uint64_t addr)
{
    size_t i = region_upper(eng, addr);

    if ((i > 0) && (eng->regions[i - 1]->addr == addr)) {
        return (ssize_t)(i - 1);
    }

    return -1;
}

/* ---------- locations ---------- */

static int mem_detect_node(dango_xfer_engine_t *eng, void *addr)
{
    void *page   = (void *)DANGO_ALIGN_DOWN((uintptr_t)addr,
                                            (uintptr_t)sysconf(_SC_PAGESIZE));
    int   status = -1;

    if (!eng->numa_ok) {
        return 0;
    }

    if ((numa_move_pages(0, 1, &page, NULL, &status, 0) == 0) &&
        (status >= 0)) {
        return status;
    }

    return 0; /* not faulted in yet: the default node */
}

/* Parses @location into a node number; -1 means "detect". */
static int mem_parse_location(dango_xfer_engine_t *eng, const char *location,
                              int *node_p)
{
    char *end;
    long  n;

    if ((location == NULL) || (strcmp(location, "*") == 0)) {
        *node_p = -1;
        return 0;
    }

    if (strncmp(location, "cpu:", 4) != 0) {
        if ((strncmp(location, "cuda:", 5) == 0) ||
            (strncmp(location, "gpu:", 4) == 0)) {
            return DANGO_ENOTSUP; /* built without CUDA */
        }

        return DANGO_EINVAL;
    }

    n = strtol(location + 4, &end, 10);
    if ((location[4] == '\0') || (*end != '\0') || (n < 0) ||
        (n > (eng->numa_ok ? numa_max_node() : 0))) {
        return DANGO_EINVAL;
    }

    *node_p = (int)n;
    return 0;
}

/* ---------- registration ---------- */

static void mem_tp_dereg(dango_xfer_engine_t *eng, xfer_region_t *r)
{
    for (unsigned t = 0; t < eng->num_tps; t++) {
        if (eng->tps[t].ops->mem_dereg != NULL) {
            eng->tps[t].ops->mem_dereg(eng->tps[t].iface,
                                       (void *)(uintptr_t)r->addr, r->len);
        }
    }
}

static int mem_register(dango_xfer_engine_t *eng, void *addr, size_t len,
                        const char *location, unsigned flags, int memfd,
                        int node)
{
    xfer_region_t *r;
    int            rc;

    if ((eng == NULL) || (addr == NULL) || (len == 0) ||
        ((uintptr_t)addr + len < (uintptr_t)addr) ||
        (flags & ~(unsigned)DANGO_XFER_MEM_REMOTE)) {
        return DANGO_EINVAL;
    }

    if (node == -2) {
        rc = mem_parse_location(eng, location, &node);
        if (rc != 0) {
            return rc;
        }
    }

    r = dango_calloc(1, sizeof(*r), "xfer_region");
    if (r == NULL) {
        return DANGO_ENOMEM;
    }

    r->addr      = (uintptr_t)addr;
    r->len       = len;
    r->flags     = flags;
    r->memfd     = memfd;
    r->numa_node = (node >= 0) ? node : mem_detect_node(eng, addr);
    snprintf(r->location, sizeof(r->location), "cpu:%d", r->numa_node);

    pthread_rwlock_wrlock(&eng->mem_lock);
    r->seq = eng->region_seq++;
    rc     = region_insert(eng, r);
    pthread_rwlock_unlock(&eng->mem_lock);
    if (rc != 0) {
        dango_free(r);
        return rc;
    }

    for (unsigned t = 0; t < eng->num_tps; t++) {
        if (eng->tps[t].ops->mem_reg == NULL) {
            continue;
        }

        rc = eng->tps[t].ops->mem_reg(eng->tps[t].iface, addr, len);
        if (rc != 0) {
            for (unsigned u = 0; u < t; u++) {
                if (eng->tps[u].ops->mem_dereg != NULL) {
                    eng->tps[u].ops->mem_dereg(eng->tps[u].iface, addr, len);
                }
            }

            goto err_remove;
        }
    }

    if (flags & DANGO_XFER_MEM_REMOTE) {
        rc = dango__xfer_publish(eng);
        if (rc != 0) {
            mem_tp_dereg(eng, r);
            goto err_remove;
        }
    }

    dango_debug("engine %s: registered 0x%lx length %zu %s%s", eng->name,
                (unsigned long)r->addr, len, r->location,
                (flags & DANGO_XFER_MEM_REMOTE) ? " remote" : "");
    return 0;

err_remove:
    pthread_rwlock_wrlock(&eng->mem_lock);
    {
        ssize_t i = region_index_of(eng, r->addr);

        if (i >= 0) {
            region_remove_at(eng, (size_t)i);
        }
    }
    pthread_rwlock_unlock(&eng->mem_lock);
    dango_free(r);
    return rc;
}

int dango_xfer_mem_register(dango_xfer_engine_t *eng, void *addr, size_t len,
                            const char *location, unsigned flags)
{
    return mem_register(eng, addr, len, location, flags, -1, -2);
}

/*
 * Removes the region at @addr and waits for peer accesses to finish.
 * @want_memfd: 1 for mem_free (region must be ours), 0 for unregister.
 * On success the region is returned (not freed).
 */
static int mem_unregister(dango_xfer_engine_t *eng, void *addr, int want_memfd,
                          xfer_region_t **r_p)
{
    xfer_region_t *r;
    ssize_t        i;
    uint64_t       deadline;
    int            rc;

    if ((eng == NULL) || (addr == NULL)) {
        return DANGO_EINVAL;
    }

    pthread_rwlock_wrlock(&eng->mem_lock);
    i = region_index_of(eng, (uintptr_t)addr);
    if (i < 0) {
        pthread_rwlock_unlock(&eng->mem_lock);
        return DANGO_ENOENT;
    }

    r = eng->regions[i];
    if (__atomic_load_n(&r->dead, __ATOMIC_ACQUIRE)) {
        pthread_rwlock_unlock(&eng->mem_lock);
        return DANGO_ENOENT; /* another thread is unregistering it */
    }

    if ((r->memfd >= 0) != want_memfd) {
        pthread_rwlock_unlock(&eng->mem_lock);
        return want_memfd ? DANGO_ENOENT : DANGO_EINVAL;
    }

    /*
     * The region stays in the table, marked dead, while peers finish: new
     * accesses are refused (mem_acquire skips dead regions), and a
     * registration overlapping it still gets DANGO_EOVERLAP. (Removing it
     * first let such a registration succeed during the wait, and the EBUSY
     * path then lost the region it claimed to keep.)
     */
    __atomic_store_n(&r->dead, 1, __ATOMIC_RELEASE);
    pthread_rwlock_unlock(&eng->mem_lock);

    /* Peer accesses pinned before this finish within one slice. */
    deadline = dango_time_ns() + eng->cfg.unregister_timeout;
    while (__atomic_load_n(&r->refs, __ATOMIC_ACQUIRE) != 0) {
        struct timespec ts = {0, 50000};

        if (dango_time_ns() > deadline) {
            dango_warn("engine %s: region 0x%lx still in use by a peer "
                       "after %lu ms: not unregistered",
                       eng->name, (unsigned long)r->addr,
                       (unsigned long)(eng->cfg.unregister_timeout /
                                       DANGO_NSEC_PER_MSEC));
            __atomic_store_n(&r->dead, 0, __ATOMIC_RELEASE);
            return DANGO_EBUSY;
        }

        nanosleep(&ts, NULL);
    }

    pthread_rwlock_wrlock(&eng->mem_lock);
    i = region_index_of(eng, r->addr); /* r is still there: it was ours */
    region_remove_at(eng, (size_t)i);
    pthread_rwlock_unlock(&eng->mem_lock);
    mem_tp_dereg(eng, r);
    if (r->flags & DANGO_XFER_MEM_REMOTE) {
        rc = dango__xfer_publish(eng);
        if (rc != 0) {
            dango_warn("engine %s: republishing after unregister failed: %s",
                       eng->name, dango_strerror(rc));
        }
    }

    *r_p = r;
    return 0;
}

int dango_xfer_mem_unregister(dango_xfer_engine_t *eng, void *addr)
{
    xfer_region_t *r;
    int            rc = mem_unregister(eng, addr, 0, &r);

    if (rc == 0) {
        dango_free(r);
    }

    return rc;
}

int dango_xfer_mem_alloc(dango_xfer_engine_t *eng, size_t len,
                         const char *location, unsigned flags, void **addr_p)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t alen;
    int    node, fd, rc;
    void  *p;

    if ((eng == NULL) || (addr_p == NULL) || (len == 0) ||
        (len > SIZE_MAX - page)) {
        return DANGO_EINVAL;
    }

    rc = mem_parse_location(eng, location, &node);
    if (rc != 0) {
        return rc;
    }

    alen = DANGO_ALIGN_UP(len, page);
    fd   = memfd_create("dango-segment", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        return DANGO_ENOMEM;
    }

    /* Sealed against shrinking: a peer's mapping can never hit SIGBUS. */
    if ((ftruncate(fd, (off_t)alen) != 0) ||
        (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0)) {
        close(fd);
        return DANGO_ENOMEM;
    }

    p = mmap(NULL, alen, PROT_READ | PROT_WRITE,
             MAP_SHARED | ((node < 0) ? MAP_POPULATE : 0), fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return DANGO_ENOMEM;
    }

    if (node >= 0) {
        /* Bind first, then populate: pages land on the asked node. */
        if (eng->numa_ok) {
            unsigned long mask[16] = {0};

            mask[node / (8 * sizeof(long))] |= 1ul
                                               << (node % (8 * sizeof(long)));
            mbind(p, alen, MPOL_PREFERRED, mask, sizeof(mask) * 8, 0);
        }

        if (madvise(p, alen, MADV_POPULATE_WRITE) != 0) {
            for (size_t off = 0; off < alen; off += page) {
                ((volatile char *)p)[off] = 0;
            }
        }
    }

    rc = mem_register(eng, p, alen, location, flags, fd, node < 0 ? -1 : node);
    if (rc != 0) {
        munmap(p, alen);
        close(fd);
        return rc;
    }

    *addr_p = p;
    return 0;
}

int dango_xfer_mem_free(dango_xfer_engine_t *eng, void *addr)
{
    xfer_region_t *r;
    int            rc = mem_unregister(eng, addr, 1, &r);

    if (rc != 0) {
        return rc;
    }

    munmap((void *)(uintptr_t)r->addr, r->len);
    close(r->memfd);
    dango_free(r);
    return 0;
}

/* ---------- host services for transports ---------- */

int dango__xfer_host_mem_acquire(void *ctx, uint64_t addr, uint64_t len,
                                 unsigned access, void **region_p)
{
    dango_xfer_engine_t *eng = ctx;
    xfer_region_t       *r;
    int                  rc = DANGO_EREMOTE_ACCESS;

    pthread_rwlock_rdlock(&eng->mem_lock);
    r = dango__xfer_region_find(eng, addr, len);
    if ((r != NULL) && (len > 0) && (r->flags & DANGO_XFER_MEM_REMOTE) &&
        !__atomic_load_n(&r->dead, __ATOMIC_ACQUIRE)) {
        __atomic_add_fetch(&r->refs, 1, __ATOMIC_ACQ_REL);
        *region_p = r;
        rc        = 0;
    }

    pthread_rwlock_unlock(&eng->mem_lock);
    return rc;
}

void dango__xfer_host_mem_release(void *ctx, void *region)
{
    xfer_region_t *r = region;

    (void)ctx;
    __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL);
}

int dango__xfer_host_mem_fd(void *ctx, uint64_t addr, int *fd_p,
                            uint64_t *len_p)
{
    dango_xfer_engine_t *eng = ctx;
    ssize_t              i;
    int                  rc = DANGO_ENOENT;

    pthread_rwlock_rdlock(&eng->mem_lock);
    i = region_index_of(eng, addr);
    if (i >= 0) {
        xfer_region_t *r = eng->regions[i];

        if (!(r->flags & DANGO_XFER_MEM_REMOTE) || (r->memfd < 0) ||
            __atomic_load_n(&r->dead, __ATOMIC_ACQUIRE)) {
            rc = DANGO_EREMOTE_ACCESS;
        } else {
            *fd_p  = fcntl(r->memfd, F_DUPFD_CLOEXEC, 0);
            *len_p = r->len;
            rc     = (*fd_p >= 0) ? 0 : dango_err_from_errno(errno);
        }
    }

    pthread_rwlock_unlock(&eng->mem_lock);
    return rc;
}

/* ---------- lifecycle ---------- */

int dango__xfer_mem_init(dango_xfer_engine_t *eng)
{
    eng->numa_ok = (numa_available() >= 0);
    if (pthread_rwlock_init(&eng->mem_lock, NULL) != 0) {
        return DANGO_ENOMEM;
    }

    return 0;
}

void dango__xfer_mem_cleanup(dango_xfer_engine_t *eng)
{
    for (size_t i = 0; i < eng->num_regions; i++) {
        xfer_region_t *r = eng->regions[i];

        if (r->memfd >= 0) {
            munmap((void *)(uintptr_t)r->addr, r->len);
            close(r->memfd);
        }

        dango_free(r);
    }

    dango_free(eng->regions);
    eng->regions     = NULL;
    eng->num_regions = 0;
    pthread_rwlock_destroy(&eng->mem_lock);
}
