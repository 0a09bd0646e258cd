/*
 * Unit tests of the socket helpers, on loopback only (127.0.0.1 and ::1):
 * address parsing and formatting, listen/connect, frame round trips, and
 * the exact codes for a missed deadline, a peer that closes, a refused
 * connection, a bad header and an allocation failure. Every wait is bounded
 * by a deadline; nothing sleeps.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dango_test.h"

#include "common/alloc.h"
#include "common/time.h"
#include "net/sock.h"

#define TEST_TIMEOUT_NS (10 * DANGO_NSEC_PER_SEC)
#define TEST_SHORT_NS   (100 * DANGO_NSEC_PER_MSEC)

static int test_teardown(void **state)
{
    (void)state;
    dango__alloc_fail_after(-1);
    return 0;
}

static uint64_t test_deadline(uint64_t ns)
{
    return dango_time_ns() + ns;
}

static uint16_t test_port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    }

    return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* Accepts one connection on the non-blocking @lfd within the deadline. */
static int test_accept(int lfd)
{
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    int           fd;

    assert_int_equal(poll(&pfd, 1, (int)(TEST_TIMEOUT_NS / 1000000)), 1);
    fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    assert_true(fd >= 0);
    return fd;
}

/* A connected pair over 127.0.0.1: client (blocking) and server side. */
static void test_pair(int *cli, int *srv)
{
    char addr[DANGO_ADDR_STR_MAX];
    int  lfd = dango_sock_listen("127.0.0.1:0", 8);

    assert_true(lfd >= 0);
    assert_dango_ok(dango_sock_local_addr(lfd, addr, sizeof(addr)));
    *cli = dango_sock_connect(addr, TEST_TIMEOUT_NS, 0);
    assert_true(*cli >= 0);
    *srv = test_accept(lfd);
    close(lfd);
}

/* ---------- address parsing ---------- */

static void sock_parse_addr_valid(void **state)
{
    struct sockaddr_storage ss;
    socklen_t               len = 0;
    char                    buf[DANGO_ADDR_STR_MAX];

    (void)state;
    assert_dango_ok(dango_sock_parse_addr("127.0.0.1:80", 0, &ss, &len));
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(len, sizeof(struct sockaddr_in));
    assert_int_equal(test_port_of(&ss), 80);
    assert_int_equal(((struct sockaddr_in *)&ss)->sin_addr.s_addr,
                     htonl(INADDR_LOOPBACK));
    assert_string_equal(
        dango_sock_addr_str((struct sockaddr *)&ss, buf, sizeof(buf)),
        "127.0.0.1:80");

    assert_dango_ok(dango_sock_parse_addr("[::1]:9", 0, &ss, &len));
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(len, sizeof(struct sockaddr_in6));
    assert_int_equal(test_port_of(&ss), 9);
    assert_string_equal(
        dango_sock_addr_str((struct sockaddr *)&ss, buf, sizeof(buf)),
        "[::1]:9");

    /* No port: the default applies. */
    assert_dango_ok(dango_sock_parse_addr("localhost", 4242, &ss, &len));
    assert_true((ss.ss_family == AF_INET) || (ss.ss_family == AF_INET6));
    assert_int_equal(test_port_of(&ss), 4242);
    assert_dango_ok(dango_sock_parse_addr("127.0.0.1", 7, &ss, &len));
    assert_int_equal(test_port_of(&ss), 7);
    assert_dango_ok(dango_sock_parse_addr("[::1]", 8, &ss, &len));
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(test_port_of(&ss), 8);
    assert_dango_ok(dango_sock_parse_addr("::1", 11, &ss, &len));
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(test_port_of(&ss), 11);

    /* Port bounds; an explicit port beats the default. */
    assert_dango_ok(dango_sock_parse_addr("127.0.0.1:0", 99, &ss, &len));
    assert_int_equal(test_port_of(&ss), 0);
    assert_dango_ok(dango_sock_parse_addr("127.0.0.1:65535", 0, &ss, &len));
    assert_int_equal(test_port_of(&ss), 65535);
}

static void sock_parse_addr_invalid(void **state)
{
    static const char *bad[] = {
        "",                /* empty */
        ":",               /* no host, no port */
        ":80",             /* no host */
        "x:99999",         /* port out of range */
        "127.0.0.1:65536", /* port out of range */
        "127.0.0.1:-1",    /* negative port */
        "127.0.0.1:",      /* empty port */
        "127.0.0.1:8x",    /* trailing junk */
        "127.0.0.1:http",  /* not numeric */
        "[::1",            /* unclosed bracket */
        "[::1]9",          /* junk after bracket */
        "[::1]:",          /* empty port */
        "[::1]:70000",     /* port out of range */
    };
    struct sockaddr_storage ss;
    socklen_t               len = 0;
    char                    longhost[400];

    (void)state;
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad); i++) {
        int rc = dango_sock_parse_addr(bad[i], 80, &ss, &len);

        if (rc != DANGO_EINVAL) {
            fail_msg("'%s' returned %d (%s), expected DANGO_EINVAL", bad[i], rc,
                     dango_err_name(rc));
        }
    }

    assert_dango_err(DANGO_EINVAL, dango_sock_parse_addr(NULL, 80, &ss, &len));
    memset(longhost, 'a', sizeof(longhost) - 1);
    longhost[sizeof(longhost) - 1] = '\0';
    assert_dango_err(DANGO_EINVAL,
                     dango_sock_parse_addr(longhost, 80, &ss, &len));
}

static void sock_addr_str_unknown_family(void **state)
{
    struct sockaddr    sa = {.sa_family = AF_UNIX};
    struct sockaddr_in in = {.sin_family      = AF_INET,
                             .sin_port        = htons(1234),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char               buf[DANGO_ADDR_STR_MAX];
    char               tiny[6];

    (void)state;
    dango_sock_addr_str(&sa, buf, sizeof(buf));
    assert_int_equal(strncmp(buf, "<af ", 4), 0);

    /* A short buffer is truncated, still terminated. */
    dango_sock_addr_str((struct sockaddr *)&in, tiny, sizeof(tiny));
    assert_string_equal(tiny, "127.0");
}

/* ---------- listen / connect ---------- */

static void sock_listen_connect_local_addr(void **state)
{
    char addr[DANGO_ADDR_STR_MAX], other[DANGO_ADDR_STR_MAX];
    int  lfd, cli, srv, fl;

    (void)state;
    lfd = dango_sock_listen("127.0.0.1:0", 8);
    assert_true(lfd >= 0);
    assert_dango_ok(dango_sock_local_addr(lfd, addr, sizeof(addr)));
    assert_int_equal(strncmp(addr, "127.0.0.1:", 10), 0);
    assert_true(atoi(addr + 10) > 0); /* port 0 became a real port */
    assert_true(fcntl(lfd, F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(lfd, F_GETFD) & FD_CLOEXEC);

    /* The same address again is in use. */
    assert_dango_err(DANGO_EADDRINUSE, dango_sock_listen(addr, 8));

    /* Blocking unless asked otherwise. */
    cli = dango_sock_connect(addr, TEST_TIMEOUT_NS, 0);
    assert_true(cli >= 0);
    assert_false(fcntl(cli, F_GETFL) & O_NONBLOCK);
    srv = test_accept(lfd);
    assert_dango_ok(dango_sock_local_addr(cli, other, sizeof(other)));
    assert_int_equal(strncmp(other, "127.0.0.1:", 10), 0);
    close(cli);
    close(srv);

    cli = dango_sock_connect(addr, TEST_TIMEOUT_NS, 1);
    assert_true(cli >= 0);
    assert_true(fcntl(cli, F_GETFL) & O_NONBLOCK);
    srv = test_accept(lfd);

    /* Toggle non-blocking mode. */
    assert_dango_ok(dango_sock_set_nonblock(cli, 0));
    fl = fcntl(cli, F_GETFL);
    assert_false(fl & O_NONBLOCK);
    assert_dango_ok(dango_sock_set_nonblock(cli, 1));
    assert_true(fcntl(cli, F_GETFL) & O_NONBLOCK);
    close(cli);
    close(srv);
    close(lfd);

    assert_dango_err(DANGO_EINVAL, dango_sock_listen("", 8));
    assert_dango_err(DANGO_EINVAL, dango_sock_listen("127.0.0.1:99999", 8));
    assert_dango_err(DANGO_EINVAL,
                     dango_sock_connect("127.0.0.1:", TEST_TIMEOUT_NS, 0));
    assert_dango_err(DANGO_EBADF, dango_sock_set_nonblock(-1, 1));
    assert_dango_err(DANGO_EBADF,
                     dango_sock_local_addr(-1, addr, sizeof(addr)));
}

static void sock_listen_connect_ipv6(void **state)
{
    char addr[DANGO_ADDR_STR_MAX];
    int  lfd, cli, srv;

    (void)state;
    lfd = dango_sock_listen("[::1]:0", 8);
    if ((lfd == DANGO_EADDRNOTAVAIL) || (lfd == -EAFNOSUPPORT)) {
        skip(); /* no IPv6 loopback in this environment */
    }

    assert_true(lfd >= 0);
    assert_dango_ok(dango_sock_local_addr(lfd, addr, sizeof(addr)));
    assert_int_equal(strncmp(addr, "[::1]:", 6), 0);
    cli = dango_sock_connect(addr, TEST_TIMEOUT_NS, 0);
    assert_true(cli >= 0);
    srv = test_accept(lfd);
    close(cli);
    close(srv);
    close(lfd);
}

static void sock_connect_refused(void **state)
{
    char addr[DANGO_ADDR_STR_MAX];
    int  lfd;

    (void)state;
    /* A port that was just free on 127.0.0.1 and has no listener now. */
    lfd = dango_sock_listen("127.0.0.1:0", 1);
    assert_true(lfd >= 0);
    assert_dango_ok(dango_sock_local_addr(lfd, addr, sizeof(addr)));
    close(lfd);

    assert_dango_err(DANGO_ECONNREFUSED,
                     dango_sock_connect(addr, TEST_TIMEOUT_NS, 0));
    assert_dango_err(DANGO_ECONNREFUSED,
                     dango_sock_connect(addr, TEST_TIMEOUT_NS, 1));
}

static void sock_connect_deadline(void **state)
{
    char addr[DANGO_ADDR_STR_MAX];
    int  fds[8];
    int  n = 0, rc = 0, lfd;

    (void)state;
    /* A listener nobody accepts from: once its queue is full the kernel
     * drops further SYNs, so the next connect can only time out. */
    lfd = dango_sock_listen("127.0.0.1:0", 0);
    assert_true(lfd >= 0);
    assert_dango_ok(dango_sock_local_addr(lfd, addr, sizeof(addr)));
    while (n < (int)DANGO_ARRAY_SIZE(fds)) {
        uint64_t start = dango_time_ns();

        rc = dango_sock_connect(addr, TEST_SHORT_NS, 0);
        if (rc < 0) {
            assert_true(dango_time_ns() - start >= TEST_SHORT_NS);
            break;
        }

        fds[n++] = rc;
    }

    assert_dango_err(DANGO_ETIMEDOUT, rc);
    for (int i = 0; i < n; i++) {
        close(fds[i]);
    }

    close(lfd);
}

/* ---------- frames ---------- */

static void sock_frame_round_trip(void **state)
{
    static const char msg[] = "hello, dango control plane";
    dango_frame_t     hdr, got;
    void             *payload = (void *)&payload;
    long              live    = dango__alloc_live();
    int               cli, srv;

    (void)state;
    test_pair(&cli, &srv);

    /* With a payload: header checked, payload NUL-terminated. */
    dango_frame_init(&hdr, DANGO_FRAME_HELLO, 77, 0, sizeof(msg) - 1, 0);
    assert_dango_ok(dango_sock_send_frame(cli, &hdr, msg, sizeof(msg) - 1,
                                          test_deadline(TEST_TIMEOUT_NS)));
    assert_dango_ok(dango_sock_recv_frame(srv, &got, &payload,
                                          test_deadline(TEST_TIMEOUT_NS)));
    assert_memory_equal(&got, &hdr, sizeof(hdr));
    assert_non_null(payload);
    assert_string_equal(payload, msg);
    dango_free(payload);

    /* Without a payload (READ announces a length but carries none), in the
     * other direction, followed by a frame with a payload. */
    dango_frame_init(&hdr, DANGO_FRAME_READ, 78, 0x1000, 1 << 20, 0);
    assert_dango_ok(dango_sock_send_frame(srv, &hdr, NULL, 0,
                                          test_deadline(TEST_TIMEOUT_NS)));
    dango_frame_init(&hdr, DANGO_FRAME_WRITE_ACK, 79, 0, 0, DANGO_ENOSPC);
    assert_dango_ok(dango_sock_send_frame(srv, &hdr, NULL, 0,
                                          test_deadline(TEST_TIMEOUT_NS)));
    dango_frame_init(&hdr, DANGO_FRAME_DESC_RESP, 80, 0, 3, 0);
    assert_dango_ok(dango_sock_send_frame(srv, &hdr, "abc", 3,
                                          test_deadline(TEST_TIMEOUT_NS)));

    assert_dango_ok(dango_sock_recv_frame(cli, &got, &payload,
                                          test_deadline(TEST_TIMEOUT_NS)));
    assert_int_equal(got.type, DANGO_FRAME_READ);
    assert_int_equal(got.id, 78);
    assert_int_equal(got.length, 1 << 20);
    assert_null(payload);
    assert_dango_ok(dango_sock_recv_frame(cli, &got, &payload,
                                          test_deadline(TEST_TIMEOUT_NS)));
    assert_int_equal(got.type, DANGO_FRAME_WRITE_ACK);
    assert_int_equal(got.status, DANGO_ENOSPC);
    assert_null(payload);
    assert_dango_ok(dango_sock_recv_frame(cli, &got, &payload,
                                          test_deadline(TEST_TIMEOUT_NS)));
    assert_int_equal(got.id, 80);
    assert_string_equal(payload, "abc");
    dango_free(payload);

    assert_int_equal(dango__alloc_live(), live);
    close(cli);
    close(srv);
}

typedef struct test_sender {
    pthread_t            thread;
    int                  fd;
    const dango_frame_t *hdr;
    const void          *buf;
    size_t               len;
    int                  rc;
} test_sender_t;

static void *test_send_thread(void *arg)
{
    test_sender_t *s = arg;

    s->rc = dango_sock_send_frame(s->fd, s->hdr, s->buf, s->len,
                                  test_deadline(TEST_TIMEOUT_NS));
    return NULL;
}

static void sock_frame_large_payload(void **state)
{
    size_t         len = DANGO_FRAME_CTRL_MAX; /* the largest control frame */
    unsigned char *buf = malloc(len);
    dango_frame_t  hdr, got;
    void          *payload;
    test_sender_t  snd;
    int            cli, srv;

    (void)state;
    assert_non_null(buf);
    for (size_t i = 0; i < len; i++) {
        buf[i] = (unsigned char)(i * 31 + 7);
    }

    test_pair(&cli, &srv);
    assert_dango_ok(dango_sock_set_nonblock(cli, 1)); /* both socket modes */
    dango_frame_init(&hdr, DANGO_FRAME_DESC_RESP, 1, 0, len, 0);
    snd = (test_sender_t){
        .fd = cli, .hdr = &hdr, .buf = buf, .len = len, .rc = 1};
    assert_int_equal(pthread_create(&snd.thread, NULL, test_send_thread, &snd),
                     0);
    assert_dango_ok(dango_sock_recv_frame(srv, &got, &payload,
                                          test_deadline(TEST_TIMEOUT_NS)));
    pthread_join(snd.thread, NULL);
    assert_dango_ok(snd.rc);
    assert_int_equal(got.length, len);
    assert_memory_equal(payload, buf, len);
    assert_int_equal(((char *)payload)[len], '\0');
    dango_free(payload);
    free(buf);
    close(cli);
    close(srv);
}

static void sock_recv_frame_deadline(void **state)
{
    dango_frame_t hdr;
    void         *payload = (void *)&payload;
    uint64_t      start;
    int           cli, srv;

    (void)state;
    test_pair(&cli, &srv);

    start = dango_time_ns();
    assert_dango_err(
        DANGO_ETIMEDOUT,
        dango_sock_recv_frame(srv, &hdr, &payload, start + TEST_SHORT_NS));
    assert_true(dango_time_ns() - start >= TEST_SHORT_NS);
    assert_null(payload);

    /* A deadline already past fails at once. */
    assert_dango_err(DANGO_ETIMEDOUT,
                     dango_sock_recv_frame(srv, &hdr, &payload, 0));

    /* Half a header, then silence: still the deadline. */
    assert_int_equal(send(cli, "DGXF", 4, 0), 4);
    assert_dango_err(DANGO_ETIMEDOUT,
                     dango_sock_recv_frame(srv, &hdr, &payload,
                                           test_deadline(TEST_SHORT_NS)));
    close(cli);
    close(srv);
}

static void sock_send_deadline(void **state)
{
    size_t len = 64u << 20; /* more than loopback socket buffers hold */
    char  *buf = calloc(1, len);
    int    cli, srv;

    (void)state;
    assert_non_null(buf);
    test_pair(&cli, &srv);
    /* The peer never reads: the send cannot finish. */
    assert_dango_err(
        DANGO_ETIMEDOUT,
        dango_sock_send_all(cli, buf, len, test_deadline(TEST_SHORT_NS)));
    free(buf);
    close(cli);
    close(srv);
}

static void sock_peer_close(void **state)
{
    dango_frame_t hdr;
    void         *payload;
    int           cli, srv;

    (void)state;
    /* Closed before anything was sent. */
    test_pair(&cli, &srv);
    close(srv);
    assert_dango_err(DANGO_ECONNRESET,
                     dango_sock_recv_frame(cli, &hdr, &payload,
                                           test_deadline(TEST_TIMEOUT_NS)));
    assert_null(payload);
    close(cli);

    /* Closed mid-header. */
    test_pair(&cli, &srv);
    assert_int_equal(send(srv, "DGXF\x01", 5, 0), 5);
    close(srv);
    assert_dango_err(DANGO_ECONNRESET,
                     dango_sock_recv_frame(cli, &hdr, &payload,
                                           test_deadline(TEST_TIMEOUT_NS)));
    close(cli);

    /* Closed mid-payload: nothing is leaked. */
    test_pair(&cli, &srv);
    {
        long live = dango__alloc_live();

        dango_frame_init(&hdr, DANGO_FRAME_HELLO, 1, 0, 100, 0);
        assert_dango_ok(dango_sock_send_all(srv, &hdr, sizeof(hdr),
                                            test_deadline(TEST_TIMEOUT_NS)));
        assert_dango_ok(dango_sock_send_all(srv, "0123456789", 10,
                                            test_deadline(TEST_TIMEOUT_NS)));
        close(srv);
        assert_dango_err(DANGO_ECONNRESET,
                         dango_sock_recv_frame(cli, &hdr, &payload,
                                               test_deadline(TEST_TIMEOUT_NS)));
        assert_null(payload);
        assert_int_equal(dango__alloc_live(), live);
    }
    close(cli);
}

static void sock_recv_frame_rejects_bad_header(void **state)
{
    dango_frame_t hdr, got;
    void         *payload;
    int           cli, srv;

    (void)state;
    test_pair(&cli, &srv);

    dango_frame_init(&hdr, DANGO_FRAME_HELLO, 1, 0, 0, 0);
    hdr.magic = 0x12345678;
    assert_dango_ok(dango_sock_send_frame(cli, &hdr, NULL, 0,
                                          test_deadline(TEST_TIMEOUT_NS)));
    assert_dango_err(DANGO_EPROTO,
                     dango_sock_recv_frame(srv, &got, &payload,
                                           test_deadline(TEST_TIMEOUT_NS)));
    assert_null(payload);

    dango_frame_init(&hdr, DANGO_FRAME_HELLO, 1, 0, 0, 0);
    hdr.version = DANGO_FRAME_VERSION + 1;
    assert_dango_ok(dango_sock_send_frame(cli, &hdr, NULL, 0,
                                          test_deadline(TEST_TIMEOUT_NS)));
    assert_dango_err(DANGO_EPROTO_VERSION,
                     dango_sock_recv_frame(srv, &got, &payload,
                                           test_deadline(TEST_TIMEOUT_NS)));

    dango_frame_init(&hdr, DANGO_FRAME_TYPE_MAX + 1, 1, 0, 0, 0);
    assert_dango_ok(dango_sock_send_frame(cli, &hdr, NULL, 0,
                                          test_deadline(TEST_TIMEOUT_NS)));
    assert_dango_err(DANGO_EPROTO,
                     dango_sock_recv_frame(srv, &got, &payload,
                                           test_deadline(TEST_TIMEOUT_NS)));

    /* A valid data frame, but bulk data has no place in a control exchange:
     * rejected from the header, before any payload is read or allocated. */
    dango_frame_init(&hdr, DANGO_FRAME_WRITE, 1, 0, DANGO_FRAME_CTRL_MAX + 1,
                     0);
    assert_dango_ok(dango_sock_send_frame(cli, &hdr, NULL, 0,
                                          test_deadline(TEST_TIMEOUT_NS)));
    assert_dango_err(DANGO_EPROTO,
                     dango_sock_recv_frame(srv, &got, &payload,
                                           test_deadline(TEST_TIMEOUT_NS)));
    assert_null(payload);
    close(cli);
    close(srv);
}

static void sock_recv_frame_oom(void **state)
{
    dango_frame_t hdr, got;
    void         *payload = (void *)&payload;
    long          live    = dango__alloc_live();
    int           cli, srv;

    (void)state;
    test_pair(&cli, &srv);
    dango_frame_init(&hdr, DANGO_FRAME_NOTIFY, 5, 0, 4, 0);
    assert_dango_ok(dango_sock_send_frame(cli, &hdr, "ping", 4,
                                          test_deadline(TEST_TIMEOUT_NS)));
    dango__alloc_fail_after(1);
    assert_dango_err(DANGO_ENOMEM,
                     dango_sock_recv_frame(srv, &got, &payload,
                                           test_deadline(TEST_TIMEOUT_NS)));
    dango__alloc_fail_after(-1);
    assert_null(payload);
    assert_int_equal(dango__alloc_live(), live);
    close(cli);
    close(srv);
}

int main(void)
{
#define T(_fn) cmocka_unit_test_teardown(_fn, test_teardown)
    const struct CMUnitTest tests[] = {
        T(sock_parse_addr_valid),
        T(sock_parse_addr_invalid),
        T(sock_addr_str_unknown_family),
        T(sock_listen_connect_local_addr),
        T(sock_listen_connect_ipv6),
        T(sock_connect_refused),
        T(sock_connect_deadline),
        T(sock_frame_round_trip),
        T(sock_frame_large_payload),
        T(sock_recv_frame_deadline),
        T(sock_send_deadline),
        T(sock_peer_close),
        T(sock_recv_frame_rejects_bad_header),
        T(sock_recv_frame_oom),
    };
#undef T

    dango_test_quiet_logs();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
