/*
 * Socket helpers. Everything here is either setup (listen, connect) or a
 * blocking exchange bounded by a deadline: poll(2) guards every wait, so no
 * call can hang past its deadline whatever the peer does.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dango/error.h>
#include <dango/log.h>
#include "common/alloc.h"
#include "common/time.h"
#include "net/sock.h"

int dango_sock_parse_addr(const char *str, uint16_t default_port,
                          struct sockaddr_storage *ss, socklen_t *len_p)
{
    char            host[256];
    const char     *port_str = NULL;
    char            port_buf[8];
    struct addrinfo hints = {0}, *res = NULL;
    size_t          hlen;

    if ((str == NULL) || (*str == '\0')) {
        return DANGO_EINVAL;
    }

    if (str[0] == '[') {
        const char *close = strchr(str, ']');

        if ((close == NULL) || ((size_t)(close - str - 1) >= sizeof(host))) {
            return DANGO_EINVAL;
        }

        hlen = (size_t)(close - str - 1);
        memcpy(host, str + 1, hlen);
        host[hlen] = '\0';
        if (close[1] == ':') {
            port_str = close + 2;
        } else if (close[1] != '\0') {
            return DANGO_EINVAL;
        }
    } else {
        const char *colon = strrchr(str, ':');

        if ((colon != NULL) && (strchr(str, ':') != colon)) {
            colon = NULL; /* bare IPv6 without brackets: no port */
        }

        hlen = colon ? (size_t)(colon - str) : strlen(str);
        if ((hlen == 0) || (hlen >= sizeof(host))) {
            return DANGO_EINVAL;
        }

        memcpy(host, str, hlen);
        host[hlen] = '\0';
        if (colon != NULL) {
            port_str = colon + 1;
        }
    }

    if (port_str != NULL) {
        char *end;
        long  p = strtol(port_str, &end, 10);

        if ((*port_str == '\0') || (*end != '\0') || (p < 0) || (p > 65535)) {
            return DANGO_EINVAL;
        }

        default_port = (uint16_t)p;
    }

    snprintf(port_buf, sizeof(port_buf), "%u", default_port);
    hints.ai_family   = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags    = AI_NUMERICSERV;
    if (getaddrinfo(host, port_buf, &hints, &res) != 0) {
        return DANGO_EINVAL;
    }

    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len_p = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

const char *dango_sock_addr_str(const struct sockaddr *sa, char *buf,
                                size_t len)
{
    char host[INET6_ADDRSTRLEN];

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(buf, len, "%s:%u", host, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(buf, len, "<af %d>", sa->sa_family);
    }

    return buf;
}

int dango_sock_set_nonblock(int fd, int on)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags < 0) {
        return dango_err_from_errno(errno);
    }

    flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    return fcntl(fd, F_SETFL, flags) == 0 ? 0 : dango_err_from_errno(errno);
}

void dango_sock_tune(int fd)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int dango_sock_listen(const char *addr, int backlog)
{
    struct sockaddr_storage ss;
    socklen_t               len;
    int                     fd, one = 1, rc;

    rc = dango_sock_parse_addr(addr, 0, &ss, &len);
    if (rc != 0) {
        return rc;
    }

    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return dango_err_from_errno(errno);
    }

    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if ((bind(fd, (struct sockaddr *)&ss, len) != 0) ||
        (listen(fd, backlog) != 0)) {
        rc = dango_err_from_errno(errno);
        close(fd);
        return rc;
    }

    return fd;
}

int dango_sock_local_addr(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t               sl = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        return dango_err_from_errno(errno);
    }

    dango_sock_addr_str((struct sockaddr *)&ss, buf, len);
    return 0;
}

static int sock_poll(int fd, short events, uint64_t deadline_ns)
{
    for (;;) {
        uint64_t      now = dango_time_ns();
        struct pollfd pfd = {.fd = fd, .events = events};
        int           ms, n;

        if (now >= deadline_ns) {
            return DANGO_ETIMEDOUT;
        }

        ms = (int)((deadline_ns - now + 999999) / 1000000);
        n  = poll(&pfd, 1, ms);
        if (n > 0) {
            return 0;
        }

        if ((n < 0) && (errno != EINTR)) {
            return dango_err_from_errno(errno);
        }
    }
}

int dango_sock_connect_fd(int fd, const struct sockaddr *sa, socklen_t len,
                          uint64_t deadline_ns)
{
    int       rc, err = 0;
    socklen_t elen = sizeof(err);

    if (connect(fd, sa, len) == 0) {
        return 0;
    }

    if (errno != EINPROGRESS) {
        return dango_err_from_errno(errno);
    }

    rc = sock_poll(fd, POLLOUT, deadline_ns);
    if (rc != 0) {
        return rc;
    }

    if ((getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) ||
        (err != 0)) {
        return dango_err_from_errno(err ? err : errno);
    }

    return 0;
}

int dango_sock_connect(const char *addr, uint64_t timeout_ns, int nonblock)
{
    struct sockaddr_storage ss;
    socklen_t               len;
    int                     fd, rc;

    rc = dango_sock_parse_addr(addr, 0, &ss, &len);
    if (rc != 0) {
        return rc;
    }

    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return dango_err_from_errno(errno);
    }

    rc = dango_sock_connect_fd(fd, (struct sockaddr *)&ss, len,
                               dango_time_ns() + timeout_ns);
    if (rc != 0) {
        close(fd);
        return rc;
    }

    dango_sock_tune(fd);
    if (!nonblock) {
        dango_sock_set_nonblock(fd, 0);
    }

    return fd;
}

int dango_sock_send_all(int fd, const void *buf, size_t len,
                        uint64_t deadline_ns)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }

        if ((n < 0) && (errno == EINTR)) {
            continue;
        }

        if ((n < 0) && (errno == EAGAIN)) {
            int rc = sock_poll(fd, POLLOUT, deadline_ns);

            if (rc != 0) {
                return rc;
            }

            continue;
        }

        return dango_err_from_errno(errno);
    }

    return 0;
}

int dango_sock_recv_all(int fd, void *buf, size_t len, uint64_t deadline_ns)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n = recv(fd, p, len, MSG_DONTWAIT);

        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }

        if (n == 0) {
            return DANGO_ECONNRESET;
        }

        if (errno == EINTR) {
            continue;
        }

        if (errno == EAGAIN) {
            int rc = sock_poll(fd, POLLIN, deadline_ns);

            if (rc != 0) {
                return rc;
            }

            continue;
        }

        return dango_err_from_errno(errno);
    }

    return 0;
}

int dango_sock_send_frame(int fd, const dango_frame_t *hdr, const void *payload,
                          size_t payload_len, uint64_t deadline_ns)
{
    int rc = dango_sock_send_all(fd, hdr, sizeof(*hdr), deadline_ns);

    if ((rc == 0) && (payload_len > 0)) {
        rc = dango_sock_send_all(fd, payload, payload_len, deadline_ns);
    }

    return rc;
}

int dango_sock_recv_frame(int fd, dango_frame_t *hdr, void **payload_p,
                          uint64_t deadline_ns)
{
    uint64_t plen;
    char    *payload;
    int      rc;

    *payload_p = NULL;
    rc         = dango_sock_recv_all(fd, hdr, sizeof(*hdr), deadline_ns);
    if (rc != 0) {
        return rc;
    }

    rc = dango_frame_check(hdr);
    if (rc != 0) {
        return rc;
    }

    plen = dango_frame_payload_len(hdr);
    if (plen == 0) {
        return 0;
    }

    if (plen > DANGO_FRAME_CTRL_MAX) {
        return DANGO_EPROTO; /* control exchanges never carry bulk data */
    }

    payload = dango_malloc(plen + 1, "ctrl_payload");
    if (payload == NULL) {
        return DANGO_ENOMEM;
    }

    rc = dango_sock_recv_all(fd, payload, plen, deadline_ns);
    if (rc != 0) {
        dango_free(payload);
        return rc;
    }

    payload[plen] = '\0';
    *payload_p    = payload;
    return 0;
}

int dango_sock_send_frame_fds(int fd, const dango_frame_t *hdr,
                              const void *payload, size_t payload_len,
                              const int *fds, unsigned nfds,
                              uint64_t deadline_ns)
{
    union {
        struct cmsghdr align;
        char           space[CMSG_SPACE(DANGO_SOCK_FDS_MAX * sizeof(int))];
    } cbuf;
    struct iovec    iov[2] = {{(void *)hdr, sizeof(*hdr)},
                              {(void *)payload, payload_len}};
    struct msghdr   mh     = {0};
    struct cmsghdr *cm;
    size_t          sent;
    ssize_t         n;
    int             rc;

    if (nfds == 0) {
        return dango_sock_send_frame(fd, hdr, payload, payload_len,
                                     deadline_ns);
    }

    if (nfds > DANGO_SOCK_FDS_MAX) {
        return DANGO_EINVAL;
    }

    memset(&cbuf, 0, sizeof(cbuf));
    mh.msg_iov        = iov;
    mh.msg_iovlen     = (payload_len > 0) ? 2 : 1;
    mh.msg_control    = cbuf.space;
    mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    cm                = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level    = SOL_SOCKET;
    cm->cmsg_type     = SCM_RIGHTS;
    cm->cmsg_len      = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
    for (;;) {
        n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) {
            break;
        }

        if (errno == EINTR) {
            continue;
        }

        if (errno != EAGAIN) {
            return dango_err_from_errno(errno);
        }

        rc = sock_poll(fd, POLLOUT, deadline_ns);
        if (rc != 0) {
            return rc;
        }
    }

    /* The descriptors went with the first byte; the rest goes without. */
    sent = (size_t)n;
    rc   = 0;
    if (sent < sizeof(*hdr)) {
        rc   = dango_sock_send_all(fd, (const char *)hdr + sent,
                                   sizeof(*hdr) - sent, deadline_ns);
        sent = sizeof(*hdr);
    }

    if ((rc == 0) && (sent - sizeof(*hdr) < payload_len)) {
        rc = dango_sock_send_all(
            fd, (const char *)payload + (sent - sizeof(*hdr)),
            payload_len - (sent - sizeof(*hdr)), deadline_ns);
    }

    return rc;
}

int dango_sock_recv_hdr_fds(int fd, dango_frame_t *hdr, int *fds, unsigned max,
                            unsigned *nfds_p, uint64_t deadline_ns)
{
    char    *p     = (char *)hdr;
    size_t   left  = sizeof(*hdr);
    unsigned got   = 0;
    int      trunc = 0;
    int      rc    = 0;

    while (left > 0) {
        union {
            struct cmsghdr align;
            char           space[CMSG_SPACE(DANGO_SOCK_FDS_MAX * sizeof(int))];
        } cbuf;
        struct iovec    iov = {p, left};
        struct msghdr   mh  = {0};
        struct cmsghdr *cm;
        ssize_t         n;

        mh.msg_iov        = &iov;
        mh.msg_iovlen     = 1;
        mh.msg_control    = cbuf.space;
        mh.msg_controllen = sizeof(cbuf.space);
        n                 = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n == 0) {
            rc = DANGO_ECONNRESET;
            break;
        }

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }

            rc = (errno == EAGAIN) ? sock_poll(fd, POLLIN, deadline_ns)
                                   : dango_err_from_errno(errno);
            if (rc != 0) {
                break;
            }

            continue;
        }

        if ((mh.msg_flags & MSG_CTRUNC) != 0) {
            trunc = 1;
        }

        for (cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm)) {
            size_t k;

            if ((cm->cmsg_level != SOL_SOCKET) ||
                (cm->cmsg_type != SCM_RIGHTS)) {
                continue;
            }

            k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int one;

                memcpy(&one, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                if (got < max) {
                    fds[got++] = one;
                } else {
                    close(one);
                    trunc = 1;
                }
            }
        }

        p += n;
        left -= (size_t)n;
    }

    if ((rc == 0) && trunc) {
        rc = DANGO_EPROTO; /* more descriptors than asked for, or dropped */
    }

    if (rc != 0) {
        while (got > 0) {
            close(fds[--got]);
            fds[got] = -1;
        }
    }

    *nfds_p = got;
    return rc;
}
