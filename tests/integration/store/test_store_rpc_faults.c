/*
 * The store client against an embedded master reached through a proxy on
 * 127.0.0.1 that reads the RPC frames going by and can cut the connection
 * right after the master answered a chosen method, before the client sees
 * the answer: the master acted, the client cannot know it did.
 *
 *   put_end_reply_lost   the PutEnd of a put is served but its reply is
 *                        lost: the put still succeeds (the end is asked
 *                        again, the master says it is already done), its
 *                        commit word is written, and the object survives a
 *                        master restart (the node reports the record)
 *   put_end_lost_twice   the reply of the second PutEnd is lost as well:
 *                        the put fails with DANGO_ECONNRESET and nothing
 *                        else goes wrong (the key is readable or absent,
 *                        never wrong, and the client keeps working)
 *   get_reply_lost       the reply of a GetReplicaList, then of an Exist,
 *                        is lost: the calls are asked again and answer
 *   put_start_reply_lost the PutStart of a put (then of an upsert) is
 *                        served but its reply is lost: asked again as a
 *                        retry, the master answers with the put it placed,
 *                        the put succeeds and nothing else is placed
 *                        (without, the key read as taken by a put that
 *                        never ended, for PUT_DISCARD)
 *   bind_reply_lost      a put through a slot (one round trip, PutBind)
 *                        whose answer is lost: asked again, it succeeds,
 *                        and survives a master restart; the slots the
 *                        new master never granted are not used
 *   bind_lost_twice      lost twice: DANGO_ECONNRESET, the value readable
 *                        and right, the client working on
 *   bind_refused_backs_off a request for slots that got none is not made
 *                        again on every put: they go the two round trip
 *                        way for a while
 * The first four run with slots off (STORE_PUT_SLOTS 0): they are about
 * PutStart and PutEnd. The client calls through the proxy only
 * (STORE_MASTER_LOCAL no): the local channel would go around it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dango_test.h"

#include <dango/config.h>
#include <dango/store.h>
#include <dango/store_master.h>
#include "net/frame.h"
#include "store/store_proto.h"

#define SEG_SIZE  (16u << 20)
#define MAX_PAIRS 16
#define VAL_LEN   70000

/* ---------- the proxy ---------- */

/* Parse state of one direction of a connection. */
typedef struct dir {
    uint8_t  hdr[DANGO_FRAME_HDR_LEN];
    size_t   hlen; /* header bytes collected */
    uint64_t skip; /* payload bytes still to pass */
} dir_t;

typedef struct pair {
    int      cfd, mfd; /* client side, master side; -1 when closed */
    dir_t    up, down;
    uint64_t watch[64]; /* ids of requests of the watched method */
    unsigned nwatch;
} pair_t;

typedef struct proxy {
    int                     lfd;
    struct sockaddr_storage master;
    socklen_t               mlen;
    char                    addr[64];
    pair_t                  pairs[MAX_PAIRS];
    uint32_t                method; /* requests watched */
    int                     drops;  /* replies still to lose (atomic) */
    int                     dropped;
    int                     stop;
    pthread_t               thr;
} proxy_t;

static proxy_t P;

static void pair_close(pair_t *p)
{
    if (p->cfd >= 0) {
        close(p->cfd);
    }

    if (p->mfd >= 0) {
        close(p->mfd);
    }

    memset(p, 0, sizeof(*p));
    p->cfd = p->mfd = -1;
}

static int write_all(int fd, const uint8_t *b, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, b, n);

        if (w <= 0) {
            return -1;
        }

        b += w;
        n -= (size_t)w;
    }

    return 0;
}

/* A complete header going @up (client to master) or down; 1 to cut the
 * connection before it is passed on. */
static int frame_seen(pair_t *p, int up, const dango_frame_t *f)
{
    if (up) {
        if ((f->type == DANGO_FRAME_RPC_REQ) &&
            (f->addr == __atomic_load_n(&P.method, __ATOMIC_ACQUIRE)) &&
            (p->nwatch < sizeof(p->watch) / sizeof(p->watch[0]))) {
            p->watch[p->nwatch++] = f->id;
        }

        return 0;
    }

    if (f->type != DANGO_FRAME_RPC_RESP) {
        return 0;
    }

    for (unsigned i = 0; i < p->nwatch; i++) {
        if ((p->watch[i] == f->id) &&
            (__atomic_load_n(&P.drops, __ATOMIC_ACQUIRE) > 0)) {
            __atomic_sub_fetch(&P.drops, 1, __ATOMIC_ACQ_REL);
            __atomic_add_fetch(&P.dropped, 1, __ATOMIC_ACQ_REL);
            return 1;
        }
    }

    return 0;
}

/* Passes what @from has to @to, watching frames; -1 closes the pair. */
static int pass(pair_t *p, int up)
{
    dir_t  *d    = up ? &p->up : &p->down;
    int     from = up ? p->cfd : p->mfd;
    int     to   = up ? p->mfd : p->cfd;
    uint8_t buf[65536];
    ssize_t n   = read(from, buf, sizeof(buf));
    size_t  pos = 0;

    if (n <= 0) {
        return -1;
    }

    while (pos < (size_t)n) {
        if (d->skip > 0) {
            uint64_t take = (uint64_t)n - pos;

            take = (take < d->skip) ? take : d->skip;
            pos += (size_t)take;
            d->skip -= take;
            continue;
        }

        d->hdr[d->hlen++] = buf[pos++];
        if (d->hlen == DANGO_FRAME_HDR_LEN) {
            dango_frame_t f;

            memcpy(&f, d->hdr, sizeof(f));
            d->hlen = 0;
            d->skip = (f.type == DANGO_FRAME_READ) ? 0 : f.length;
            if (frame_seen(p, up, &f)) {
                /* Everything before this header goes; it does not. */
                size_t keep = pos - DANGO_FRAME_HDR_LEN;

                if (pos >= DANGO_FRAME_HDR_LEN) {
                    (void)write_all(to, buf, keep);
                }

                return -1;
            }
        }
    }

    return write_all(to, buf, (size_t)n);
}

static void proxy_accept(void)
{
    int fd = accept4(P.lfd, NULL, NULL, SOCK_CLOEXEC);
    int mfd;

    if (fd < 0) {
        return;
    }

    mfd = socket(P.master.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if ((mfd < 0) ||
        (connect(mfd, (struct sockaddr *)&P.master, P.mlen) != 0)) {
        close(fd);
        if (mfd >= 0) {
            close(mfd);
        }

        return;
    }

    for (int i = 0; i < MAX_PAIRS; i++) {
        if (P.pairs[i].cfd < 0) {
            P.pairs[i].cfd = fd;
            P.pairs[i].mfd = mfd;
            return;
        }
    }

    close(fd);
    close(mfd);
}

static void *proxy_main(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&P.stop, __ATOMIC_ACQUIRE)) {
        struct pollfd pfd[1 + 2 * MAX_PAIRS];
        int           map[1 + 2 * MAX_PAIRS];
        nfds_t        n = 0;

        pfd[n].fd       = P.lfd;
        pfd[n++].events = POLLIN;
        for (int i = 0; i < MAX_PAIRS; i++) {
            if (P.pairs[i].cfd >= 0) {
                map[n]          = 2 * i;
                pfd[n].fd       = P.pairs[i].cfd;
                pfd[n++].events = POLLIN;
                map[n]          = 2 * i + 1;
                pfd[n].fd       = P.pairs[i].mfd;
                pfd[n++].events = POLLIN;
            }
        }

        if (poll(pfd, n, 50) <= 0) {
            continue;
        }

        if (pfd[0].revents & POLLIN) {
            proxy_accept();
        }

        for (nfds_t j = 1; j < n; j++) {
            pair_t *p = &P.pairs[map[j] / 2];

            if ((pfd[j].revents == 0) || (p->cfd < 0)) {
                continue;
            }

            if (pass(p, (map[j] % 2) == 0) != 0) {
                pair_close(p);
            }
        }
    }

    return NULL;
}

/* Starts the proxy in front of the master at @maddr ("127.0.0.1:port"). */
static void proxy_start(const char *maddr)
{
    struct sockaddr_in *sa = (struct sockaddr_in *)&P.master;
    struct sockaddr_in  la = {0};
    socklen_t           ll = sizeof(la);
    char                host[32];
    unsigned            port;

    memset(&P, 0, sizeof(P));
    for (int i = 0; i < MAX_PAIRS; i++) {
        P.pairs[i].cfd = P.pairs[i].mfd = -1;
    }

    assert_int_equal(2, sscanf(maddr, "%31[^:]:%u", host, &port));
    sa->sin_family = AF_INET;
    sa->sin_port   = htons((uint16_t)port);
    assert_int_equal(1, inet_pton(AF_INET, host, &sa->sin_addr));
    P.mlen = sizeof(*sa);

    P.lfd              = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    la.sin_family      = AF_INET;
    la.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(P.lfd >= 0);
    assert_int_equal(0, bind(P.lfd, (struct sockaddr *)&la, sizeof(la)));
    assert_int_equal(0, listen(P.lfd, 16));
    assert_int_equal(0, getsockname(P.lfd, (struct sockaddr *)&la, &ll));
    snprintf(P.addr, sizeof(P.addr), "127.0.0.1:%u", ntohs(la.sin_port));
    assert_int_equal(0, pthread_create(&P.thr, NULL, proxy_main, NULL));
}

static void proxy_stop(void)
{
    __atomic_store_n(&P.stop, 1, __ATOMIC_RELEASE);
    pthread_join(P.thr, NULL);
    for (int i = 0; i < MAX_PAIRS; i++) {
        pair_close(&P.pairs[i]);
    }

    close(P.lfd);
}

/* Loses the next @n replies to @method. */
static void proxy_drop(uint32_t method, int n)
{
    __atomic_store_n(&P.method, method, __ATOMIC_RELEASE);
    __atomic_store_n(&P.drops, n, __ATOMIC_RELEASE);
}

/* ---------- cluster: a master and one client through the proxy ---------- */

static dango_store_master_t *g_m;
static dango_store_client_t *g_c;
static char                  g_maddr[64];

static void master_start(const char *listen)
{
    dango_config_t *cfg;

    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "MASTER_LISTEN", listen));
    assert_dango_ok(dango_config_set(cfg, "MASTER_ADMIN_LISTEN", ""));
    assert_dango_ok(dango_store_master_create(cfg, &g_m));
    dango_config_release(cfg);
    snprintf(g_maddr, sizeof(g_maddr), "%s", dango_store_master_addr(g_m));
}

/* The client; @slots is its STORE_PUT_SLOTS ("0": two round trip puts). */
static int client_setup(const char *slots)
{
    dango_store_params_t p = {0};
    dango_config_t      *cfg;

    dango_test_quiet_logs();
    master_start("127.0.0.1:0");
    proxy_start(g_maddr);
    assert_dango_ok(dango_config_read(NULL, &cfg));
    assert_dango_ok(dango_config_set(cfg, "STORE_LOCAL_BUFFER_SIZE", "1MiB"));
    assert_dango_ok(dango_config_set(cfg, "STORE_PING_INTERVAL", "100ms"));
    assert_dango_ok(dango_config_set(cfg, "STORE_RPC_TIMEOUT", "5s"));
    assert_dango_ok(dango_config_set(cfg, "XFER_LISTEN", "127.0.0.1:0"));
    assert_dango_ok(dango_config_set(cfg, "STORE_PUT_SLOTS", slots));
    /* Every call through the proxy: none through the local channel. */
    assert_dango_ok(dango_config_set(cfg, "STORE_MASTER_LOCAL", "no"));
    p.field_mask   = DANGO_STORE_PARAM_MASTER | DANGO_STORE_PARAM_SEGMENT_SIZE;
    p.master_addr  = P.addr;
    p.segment_size = SEG_SIZE;
    assert_dango_ok(dango_store_client_create(&p, cfg, &g_c));
    dango_config_release(cfg);
    assert_dango_ok(dango_store_health(g_c));
    return 0;
}

static int setup(void **state)
{
    (void)state;
    return client_setup("0");
}

static int setup_slots(void **state)
{
    (void)state;
    return client_setup("8MiB");
}

static int teardown(void **state)
{
    (void)state;
    dango_store_client_destroy(g_c);
    g_c = NULL;
    proxy_stop();
    dango_store_master_destroy(g_m);
    g_m = NULL;
    return 0;
}

/* ---------- helpers ---------- */

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static void fill(uint8_t *v, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        v[i] = (uint8_t)(i * 131 + seed);
    }
}

/* The get of @key: its value is fill(@seed) whenever it succeeds. */
static int64_t get_check(const char *key, unsigned seed)
{
    static uint8_t want[VAL_LEN], got[VAL_LEN];
    uint64_t       size = 0;
    int64_t        rc   = dango_store_get(g_c, key, got, sizeof(got), &size);

    if (rc >= 0) {
        fill(want, sizeof(want), seed);
        assert_int_equal(rc, VAL_LEN);
        assert_memory_equal(want, got, VAL_LEN);
    }

    return rc;
}

/* Puts (or upserts) @key with the value fill(@seed). */
static int put_seeded(const char *key, unsigned seed, int upsert)
{
    static uint8_t v[VAL_LEN];

    fill(v, sizeof(v), seed);
    return upsert ? dango_store_upsert(g_c, key, v, sizeof(v), NULL)
                  : dango_store_put(g_c, key, v, sizeof(v), NULL);
}

/* Replies the proxy has lost so far. */
static int dropped(void)
{
    return __atomic_load_n(&P.dropped, __ATOMIC_ACQUIRE);
}

/* Waits (bounded) until the master sees @n objects. */
static void wait_keys(uint64_t n)
{
    for (int i = 0; i < 200; i++) {
        dango_store_pool_info_t pi;

        if ((dango_store_pool_stat(g_c, &pi) == 0) && (pi.keys == n)) {
            return;
        }

        sleep_ms(50);
    }

    fail_msg("the master never saw %lu objects", (unsigned long)n);
}

/* ---------- tests ---------- */

static void put_end_reply_lost(void **state)
{
    char listen[64];

    (void)state;
    proxy_drop(DANGO_STORE_M_PUT_END, 1);
    assert_dango_ok(put_seeded("lost/end", 7, 0));
    assert_int_equal(1, dropped());
    assert_int_equal(VAL_LEN, get_check("lost/end", 7));

    /* The commit word is in place: a new master learns of the object from
     * the node's report. */
    snprintf(listen, sizeof(listen), "%s", g_maddr);
    dango_store_master_destroy(g_m);
    g_m = NULL;
    master_start(listen);
    wait_keys(1);
    assert_int_equal(VAL_LEN, get_check("lost/end", 7));
}

static void put_end_lost_twice(void **state)
{
    (void)state;
    proxy_drop(DANGO_STORE_M_PUT_END, 2);
    assert_dango_err(DANGO_ECONNRESET, put_seeded("lost/twice", 9, 0));
    assert_int_equal(2, dropped());

    /* The master did end it: readable, with the right bytes. */
    assert_int_equal(VAL_LEN, get_check("lost/twice", 9));

    /* The client works on. */
    assert_dango_ok(put_seeded("lost/after", 11, 0));
    assert_int_equal(VAL_LEN, get_check("lost/after", 11));
}

static void get_reply_lost(void **state)
{
    (void)state;
    assert_dango_ok(put_seeded("lost/get", 5, 0));
    proxy_drop(DANGO_STORE_M_GET_REPLICAS, 1);
    assert_int_equal(VAL_LEN, get_check("lost/get", 5));
    assert_int_equal(1, dropped());
    proxy_drop(DANGO_STORE_M_EXIST, 1);
    assert_int_equal(1, dango_store_exist(g_c, "lost/get"));
    assert_int_equal(2, dropped());
}

static void put_start_reply_lost(void **state)
{
    dango_store_pool_info_t pi;
    uint64_t                one;

    (void)state;
    proxy_drop(DANGO_STORE_M_PUT_START, 1);
    assert_dango_ok(put_seeded("lost/start", 3, 0));
    assert_int_equal(1, dropped());
    assert_int_equal(VAL_LEN, get_check("lost/start", 3));

    /* One placement, not two: another value of that size takes as much. */
    assert_dango_ok(dango_store_pool_stat(g_c, &pi));
    one = pi.used;
    assert_true(one > 0);
    assert_dango_ok(put_seeded("lost/other", 3, 0));
    assert_dango_ok(dango_store_pool_stat(g_c, &pi));
    assert_int_equal(2 * one, pi.used);

    /* An upsert whose start answer is lost replaces the value. */
    proxy_drop(DANGO_STORE_M_PUT_START, 1);
    assert_dango_ok(put_seeded("lost/start", 4, 1));
    assert_int_equal(2, dropped());
    assert_int_equal(VAL_LEN, get_check("lost/start", 4));
}

/* A put through a slot (PutBind of the key) whose answer is lost: asked
 * again without the request for more slots, it is answered 0 (already
 * bound); its commit word is written, so a new master learns of it. */
static void bind_reply_lost(void **state)
{
    char listen[64];

    (void)state;
    assert_dango_ok(put_seeded("bind/warm", 1, 0)); /* slots pooled */
    proxy_drop(DANGO_STORE_M_PUT_BIND, 1);
    assert_dango_ok(put_seeded("bind/lost", 7, 0));
    assert_int_equal(1, dropped());
    assert_int_equal(VAL_LEN, get_check("bind/lost", 7));

    snprintf(listen, sizeof(listen), "%s", g_maddr);
    dango_store_master_destroy(g_m);
    g_m = NULL;
    master_start(listen);
    wait_keys(2);
    assert_int_equal(VAL_LEN, get_check("bind/lost", 7));
    assert_int_equal(VAL_LEN, get_check("bind/warm", 1));

    /* The new master never granted the pooled slots: puts go on (the
     * first may find its slot unknown and go the two round trip way). */
    for (unsigned i = 0; i < 20; i++) {
        char key[32];

        snprintf(key, sizeof(key), "bind/after-%u", i);
        assert_dango_ok(put_seeded(key, 20 + i, 0));
        assert_int_equal(VAL_LEN, get_check(key, 20 + i));
    }
}

/* Its answer lost twice: DANGO_ECONNRESET, the value readable (it was
 * bound) and right, and the client works on. */
static void bind_lost_twice(void **state)
{
    (void)state;
    assert_dango_ok(put_seeded("bind/warm", 1, 0));
    proxy_drop(DANGO_STORE_M_PUT_BIND, 2);
    assert_dango_err(DANGO_ECONNRESET, put_seeded("bind/twice", 9, 0));
    assert_int_equal(2, dropped());
    assert_int_equal(VAL_LEN, get_check("bind/twice", 9));
    assert_dango_ok(put_seeded("bind/after", 11, 0));
    assert_int_equal(VAL_LEN, get_check("bind/after", 11));
}

/* A request for slots that gets none (here: its answer lost, twice) keeps
 * the client from asking again on every put for a while: the puts go the
 * two round trip way meanwhile, with no PutBind at all. */
static void bind_refused_backs_off(void **state)
{
    (void)state;
    proxy_drop(DANGO_STORE_M_PUT_BIND, 1000);
    for (unsigned i = 0; i < 10; i++) {
        char key[32];

        snprintf(key, sizeof(key), "quiet/%u", i);
        assert_dango_ok(put_seeded(key, 40 + i, 0));
        assert_int_equal(VAL_LEN, get_check(key, 40 + i));
    }
    assert_int_equal(2, dropped());
    proxy_drop(DANGO_STORE_M_PUT_BIND, 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(put_end_reply_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(put_end_lost_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(get_reply_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(put_start_reply_lost, setup, teardown),
        cmocka_unit_test_setup_teardown(bind_reply_lost, setup_slots, teardown),
        cmocka_unit_test_setup_teardown(bind_lost_twice, setup_slots, teardown),
        cmocka_unit_test_setup_teardown(bind_refused_backs_off, setup_slots,
                                        teardown),
    };

    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }

    return cmocka_run_group_tests(tests, NULL, NULL);
}
