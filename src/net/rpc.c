/*
 * RPC: the parts both roles share — reading frames through a staging
 * buffer, writing queued frames, and rate-limited logging of what peers do
 * wrong. The server lives in rpc_server.c, the client in rpc_client.c.
 *
 * DESIGN
 * - Reading: one recv() fills a 16 KiB staging buffer with as many frames as
 *   the socket holds; every frame that fits is handed out in place (no copy,
 *   no allocation), so a burst of small pipelined requests costs one system
 *   call. A frame too large for staging gets a buffer of exactly its payload
 *   size; what already sits in staging is copied there and the rest is
 *   received straight into it. A frame that would fit but is incomplete is
 *   moved to the front of the buffer and completed by the next recv().
 * - A short recv() means the socket is drained: the reader then stops
 *   without the extra recv() that would only return EAGAIN; the loop's
 *   level-triggered epoll reports the next bytes.
 * - Every header is checked (magic, version, type, reserved, the type's
 *   length limit and the caller's limit for the connection's state) before
 *   any allocation, so a peer cannot make us allocate more than the state
 *   allows (4 KiB before authentication).
 * - Writing: queued frames go out with one sendmsg() over up to
 *   RPC_MAX_IOV iovecs; a short write means the socket is full and the
 *   caller waits for writability.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "common/alloc.h"
#include "common/time.h"
#include "net/rpc_int.h"

DANGO_LOG_COMPONENT_DEFINE(dango__log_rpc, "rpc");

#define RPC_MAX_IOV 64

/* ---------- peer errors ---------- */

dango_log_limit_t dango__rpc_peer_limit = DANGO_LOG_LIMIT_INIT(100);

/* ---------- frame reader ---------- */

int dango__rpc_rx_init(rpc_rx_t *rx)
{
    memset(rx, 0, sizeof(*rx));
    rx->buf = dango_malloc(RPC_RX_STAGING, "rpc_rx_staging");
    return (rx->buf != NULL) ? 0 : DANGO_ENOMEM;
}

void dango__rpc_rx_reset(rpc_rx_t *rx)
{
    dango_free(rx->big);
    rx->big      = NULL;
    rx->big_have = 0;
    rx->in_big   = 0;
    rx->off      = 0;
    rx->len      = 0;
}

void dango__rpc_rx_cleanup(rpc_rx_t *rx)
{
    dango__rpc_rx_reset(rx);
    dango_free(rx->buf);
    rx->buf = NULL;
}

void *dango__rpc_rx_take(rpc_rx_t *rx)
{
    void *p = rx->in_big ? NULL : rx->big;

    if (p != NULL) {
        rx->big = NULL;
    }

    return p;
}

int dango__rpc_rx_partial(const rpc_rx_t *rx)
{
    return rx->in_big || (rx->len > rx->off);
}

/* One recv() into @dst; 1 = got bytes, 0 = nothing now, or an error. */
static int rx_recv(rpc_rx_t *rx, int fd, char *dst, size_t want, size_t *got_p)
{
    ssize_t n;

    if (rx->recvs == 0) {
        return 0;
    }

    rx->recvs--;
    do {
        n = recv(fd, dst, want, rx->block ? 0 : MSG_DONTWAIT);
    } while ((n < 0) && (errno == EINTR));

    if (n == 0) {
        return DANGO_ECONNRESET;
    }

    if (n < 0) {
        if (errno == EAGAIN) { /* also a blocking recv() timing out */
            rx->recvs = 0;
            return 0;
        }

        return dango_err_from_errno(errno);
    }

    if ((size_t)n < want) {
        rx->recvs = 0; /* drained: the next bytes come with the next event */
    }

    rx->last_progress = dango_time_ns();
    *got_p            = (size_t)n;
    return 1;
}

int dango__rpc_rx_next(rpc_rx_t *rx, int fd, uint64_t limit, rpc_frame_t *f)
{
    size_t got;
    int    rc;

    if (!rx->in_big && (rx->big != NULL)) {
        dango_free(rx->big); /* payload of the previous frame, not taken */
        rx->big = NULL;
    }

    for (;;) {
        size_t        avail;
        dango_frame_t hdr;
        uint64_t      plen;

        if (rx->in_big) {
            plen = dango_frame_payload_len(&rx->hdr);
            if (rx->big_have == plen) {
                rx->in_big = 0;
                f->hdr     = rx->hdr;
                f->payload = rx->big;
                f->len     = plen;
                f->in_big  = 1;
                return 1;
            }

            rc = rx_recv(rx, fd, rx->big + rx->big_have,
                         (size_t)(plen - rx->big_have), &got);
            if (rc <= 0) {
                return rc;
            }

            rx->big_have += got;
            continue;
        }

        avail = rx->len - rx->off;
        if (avail >= DANGO_FRAME_HDR_LEN) {
            memcpy(&hdr, rx->buf + rx->off, DANGO_FRAME_HDR_LEN);
            rc = dango_frame_check(&hdr);
            if (rc != 0) {
                f->hdr = hdr; /* for the caller's error message */
                return rc;
            }

            plen = dango_frame_payload_len(&hdr);
            if (plen > limit) {
                f->hdr = hdr;
                return DANGO_EMSGSIZE;
            }

            if (avail - DANGO_FRAME_HDR_LEN >= plen) {
                f->hdr     = hdr;
                f->payload = rx->buf + rx->off + DANGO_FRAME_HDR_LEN;
                f->len     = plen;
                f->in_big  = 0;
                rx->off += DANGO_FRAME_HDR_LEN + (size_t)plen;
                if (rx->off == rx->len) {
                    rx->off = rx->len = 0;
                }

                return 1;
            }

            if (DANGO_FRAME_HDR_LEN + plen > RPC_RX_STAGING) {
                size_t have = avail - DANGO_FRAME_HDR_LEN;

                rx->big = dango_malloc((size_t)plen, "rpc_payload");
                if (rx->big == NULL) {
                    return DANGO_ENOMEM;
                }

                /* Everything after the header belongs to this payload. */
                memcpy(rx->big, rx->buf + rx->off + DANGO_FRAME_HDR_LEN, have);
                rx->hdr      = hdr;
                rx->big_have = have;
                rx->in_big   = 1;
                rx->off = rx->len = 0;
                continue;
            }
        }

        /* The next frame is incomplete and fits: make room and read. */
        if (rx->off > 0) {
            memmove(rx->buf, rx->buf + rx->off, avail);
            rx->off = 0;
            rx->len = avail;
        }

        rc = rx_recv(rx, fd, rx->buf + rx->len, RPC_RX_STAGING - rx->len, &got);
        if (rc <= 0) {
            return rc;
        }

        rx->len += got;
    }
}

/* ---------- frame writer ---------- */

int dango__rpc_tx_flush(int fd, dango_list_link_t *txq, rpc_tx_done_cb done,
                        void *arg, int *wrote_p)
{
    *wrote_p = 0;
    while (!dango_list_is_empty(txq)) {
        struct iovec  iov[RPC_MAX_IOV];
        struct msghdr msg   = {0};
        uint64_t      total = 0;
        rpc_tx_t     *tx;
        int           n = 0, full;
        ssize_t       r;

        dango_list_for_each(tx, txq, link)
        {
            if (n + 2 > RPC_MAX_IOV) {
                break;
            }

            if (tx->sent < DANGO_FRAME_HDR_LEN) {
                iov[n].iov_base = (char *)&tx->hdr + tx->sent;
                iov[n].iov_len  = DANGO_FRAME_HDR_LEN - tx->sent;
                total += iov[n++].iov_len;
                if (tx->data_len > 0) {
                    iov[n].iov_base = (void *)tx->data;
                    iov[n].iov_len  = tx->data_len;
                    total += iov[n++].iov_len;
                }
            } else {
                uint64_t off = tx->sent - DANGO_FRAME_HDR_LEN;

                iov[n].iov_base = (char *)tx->data + off;
                iov[n].iov_len  = tx->data_len - off;
                total += iov[n++].iov_len;
            }
        }

        msg.msg_iov    = iov;
        msg.msg_iovlen = (size_t)n;
        r              = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }

            return (errno == EAGAIN) ? 1 : dango_err_from_errno(errno);
        }

        *wrote_p = *wrote_p || (r > 0);
        full     = ((uint64_t)r < total);
        while ((r > 0) && !dango_list_is_empty(txq)) {
            uint64_t left;

            tx   = dango_list_head_elem(txq, rpc_tx_t, link);
            left = DANGO_FRAME_HDR_LEN + tx->data_len - tx->sent;
            if ((uint64_t)r < left) {
                tx->sent += (uint64_t)r;
                break;
            }

            r -= (ssize_t)left;
            dango_list_del(&tx->link);
            done(arg, tx);
        }

        if (full) {
            return 1; /* a short write: the socket buffer is full */
        }
    }

    return 0;
}

void dango__rpc_tx_drop(dango_list_link_t *txq, rpc_tx_done_cb done, void *arg)
{
    while (!dango_list_is_empty(txq)) {
        rpc_tx_t *tx = dango_list_head_elem(txq, rpc_tx_t, link);

        dango_list_del(&tx->link);
        done(arg, tx);
    }
}
