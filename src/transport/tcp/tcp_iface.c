/*
 * TCP transport: interface, listener and the server side of connections.
 *
 * DESIGN
 * - The listener runs on loop 0; accepted connections are spread over the
 *   engine's loops round-robin, so every worker serves some peers.
 * - Every connection reads through a small staging buffer: frame headers
 *   (and short control payloads) are parsed from it, while a data payload is
 *   received straight into its destination — registered memory on the
 *   target for a WRITE, the initiator's buffer for a READ reply. At most one
 *   staging buffer's worth of payload is copied; the rest lands in place.
 * - Frames on a connection are served strictly in order and every reply is
 *   queued in order, so the initiator matches replies to requests with a
 *   FIFO (no lookup table).
 * - Target-side safety: a WRITE or READ is served only after the engine
 *   pinned a registered, remote-accessible region covering the whole range
 *   (host->mem_acquire, overflow-checked). A refused WRITE's payload is read
 *   and discarded so the connection stays usable, and the refusal goes back
 *   in the ack. The pin is held until the payload is in place (WRITE) or
 *   sent (READ), which is what lets unregister wait for peers to finish.
 * - Anything malformed (magic, version, type, length, a frame not allowed
 *   in the connection's state) closes the connection with one error line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/config_table.h"
#include "common/hash.h"
#include "common/time.h"
#include "dango_ctrl.pb-c.h"
#include "net/sock.h"
#include "transport/tcp/tcp_int.h"
#include "common/log_limit.h" /* after tcp_int.h: log component */

DANGO_LOG_COMPONENT_DEFINE(dango__log_tcp, "tcp");

/* Errors caused by what a peer sent: at most 100 lines a second. */
static dango_log_limit_t tcp_peer_limit = DANGO_LOG_LIMIT_INIT(100);

#define tcp_peer_error(_fmt, ...)                                              \
    dango_error_limited(&tcp_peer_limit, _fmt, ##__VA_ARGS__)

#define TCP_TIMER_MS    100
#define TCP_READ_BUDGET (32ull << 20) /* bytes per callback, then yield */

/* ---------- tx items ---------- */

tcp_tx_t *dango__tcp_tx_get(tcp_iface_t *iface)
{
    tcp_tx_t *tx = dango_mpool_get(&iface->tx_pool);

    if (tx != NULL) {
        memset(tx, 0, sizeof(*tx));
    }

    return tx;
}

void dango__tcp_tx_put(tcp_iface_t *iface, tcp_tx_t *tx)
{
    if (tx->region != NULL) {
        iface->host->mem_release(iface->host->ctx, tx->region);
    }

    dango_free(tx->owned);
    dango_mpool_put(&iface->tx_pool, tx);
}

/* ---------- connection basics ---------- */

int dango__tcp_conn_init(tcp_conn_t *conn, tcp_iface_t *iface,
                         unsigned loop_idx)
{
    memset(conn, 0, sizeof(*conn));
    conn->rx_buf = dango_malloc(TCP_RX_STAGING, "tcp_rx_staging");
    if (conn->rx_buf == NULL) {
        return DANGO_ENOMEM;
    }

    conn->iface    = iface;
    conn->loop_idx = loop_idx;
    conn->loop     = iface->loops[loop_idx];
    conn->fd       = -1;
    conn->rx_phase = TCP_RX_HDR;
    dango_list_init(&conn->list);
    dango_list_init(&conn->txq);
    dango_list_init(&conn->pending);
    dango_list_init(&conn->inflight);
    return 0;
}

void dango__tcp_conn_set_events(tcp_conn_t *conn)
{
    unsigned ev;

    if (conn->fd < 0) {
        return;
    }

    if (conn->state == TCP_CONN_CONNECTING) {
        ev = DANGO_LOOP_WRITE;
    } else {
        ev = DANGO_LOOP_READ;
        if (!dango_list_is_empty(&conn->txq)) {
            ev |= DANGO_LOOP_WRITE;
        }
    }

    if (ev != conn->events) {
        dango_loop_fd_mod(conn->loop, conn->fd, ev);
        conn->events = ev;
    }
}

void dango__tcp_conn_drop_tx(tcp_conn_t *conn)
{
    while (!dango_list_is_empty(&conn->txq)) {
        tcp_tx_t *tx = dango_list_head_elem(&conn->txq, tcp_tx_t, link);

        dango_list_del(&tx->link);
        dango__tcp_tx_put(conn->iface, tx);
    }
}

void dango__tcp_conn_enqueue(tcp_conn_t *conn, tcp_tx_t *tx)
{
    dango_list_add_tail(&conn->txq, &tx->link);
}

/*
 * Sends as much of the queue as the socket takes, many frames per sendmsg.
 * Returns 0 or an error (the caller closes the connection).
 */
static int conn_send(tcp_conn_t *conn)
{
    while (!dango_list_is_empty(&conn->txq)) {
        struct iovec  iov[TCP_MAX_IOV];
        struct msghdr msg = {0};
        tcp_tx_t     *tx;
        int           n = 0;
        ssize_t       r;

        dango_list_for_each(tx, &conn->txq, link)
        {
            if (n + 2 > TCP_MAX_IOV) {
                break;
            }

            if (tx->sent < DANGO_FRAME_HDR_LEN) {
                iov[n].iov_base = (char *)&tx->hdr + tx->sent;
                iov[n].iov_len  = DANGO_FRAME_HDR_LEN - tx->sent;
                n++;
                if (tx->data_len > 0) {
                    iov[n].iov_base = (void *)tx->data;
                    iov[n].iov_len  = tx->data_len;
                    n++;
                }
            } else {
                uint64_t off = tx->sent - DANGO_FRAME_HDR_LEN;

                iov[n].iov_base = (char *)tx->data + off;
                iov[n].iov_len  = tx->data_len - off;
                n++;
            }
        }

        msg.msg_iov    = iov;
        msg.msg_iovlen = (size_t)n;
        r              = sendmsg(conn->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }

            if (errno == EAGAIN) {
                return 0;
            }

            return dango_err_from_errno(errno);
        }

        conn->last_progress = dango_time_ns();
        while ((r > 0) && !dango_list_is_empty(&conn->txq)) {
            uint64_t total, left;

            tx    = dango_list_head_elem(&conn->txq, tcp_tx_t, link);
            total = DANGO_FRAME_HDR_LEN + tx->data_len;
            left  = total - tx->sent;
            if ((uint64_t)r < left) {
                tx->sent += (uint64_t)r;
                break;
            }

            r -= (ssize_t)left;
            dango_list_del(&tx->link);
            dango__tcp_tx_put(conn->iface, tx);
        }
    }

    return 0;
}

void dango__tcp_conn_flush(tcp_conn_t *conn)
{
    int rc;

    if ((conn->fd < 0) || (conn->state == TCP_CONN_CONNECTING)) {
        return;
    }

    rc = conn_send(conn);
    if (rc != 0) {
        if (conn->ep != NULL) {
            dango__tcp_client_fail(conn, DANGO_ELINK_DOWN);
        } else {
            conn->state = TCP_CONN_CLOSED;
        }

        return;
    }

    dango__tcp_conn_set_events(conn);
}

int dango__tcp_send_ctrl(tcp_conn_t *conn, uint8_t type, uint64_t id,
                         int32_t status, const ProtobufCMessage *msg)
{
    tcp_tx_t *tx = dango__tcp_tx_get(conn->iface);
    size_t    len;

    if (tx == NULL) {
        return DANGO_ENOMEM;
    }

    len = (msg != NULL) ? protobuf_c_message_get_packed_size(msg) : 0;
    if (len > 0) {
        tx->owned = dango_malloc(len, "tcp_ctrl_payload");
        if (tx->owned == NULL) {
            dango__tcp_tx_put(conn->iface, tx);
            return DANGO_ENOMEM;
        }

        protobuf_c_message_pack(msg, tx->owned);
        tx->data     = tx->owned;
        tx->data_len = len;
    }

    dango_frame_init(&tx->hdr, type, id, 0, len, status);
    dango__tcp_conn_enqueue(conn, tx);
    return 0;
}

int dango__tcp_rx_ctrl_start(tcp_conn_t *conn)
{
    conn->rx_ctrl = dango_malloc(conn->rx_hdr.length + 1, "tcp_rx_ctrl");
    if (conn->rx_ctrl == NULL) {
        return DANGO_ENOMEM;
    }

    conn->rx_ctrl_len = conn->rx_hdr.length;
    conn->rx_dst      = conn->rx_ctrl;
    conn->rx_left     = conn->rx_hdr.length;
    conn->rx_phase    = TCP_RX_CTRL;
    return 0;
}

/* ---------- server side ---------- */

static void server_conn_free(tcp_conn_t *conn)
{
    tcp_iface_t *iface = conn->iface;

    if (conn->fd >= 0) {
        dango_loop_fd_del(conn->loop, conn->fd);
        close(conn->fd);
        conn->fd = -1;
    }

    if (conn->rx_region != NULL) {
        iface->host->mem_release(iface->host->ctx, conn->rx_region);
        conn->rx_region = NULL;
    }

    dango__tcp_conn_drop_tx(conn);
    if (conn->in_loop_list) {
        dango_list_del(&conn->list);
    }

    dango_free(conn->rx_ctrl);
    dango_free(conn->rx_buf);
    dango_free(conn);
}

static void server_send_hello_ack(tcp_conn_t *conn, const uint8_t *cnonce,
                                  int32_t status)
{
    tcp_iface_t          *iface = conn->iface;
    Dango__Ctrl__HelloAck ack   = DANGO__CTRL__HELLO_ACK__INIT;
    uint8_t               proof[DANGO_AUTH_PROOF_LEN];

    dango_random_bytes(conn->nonce, sizeof(conn->nonce));
    ack.version      = DANGO_FRAME_VERSION;
    ack.segment_name = iface->segment_name;
    ack.instance_id  = iface->instance_id;
    ack.nonce.data   = conn->nonce;
    ack.nonce.len    = sizeof(conn->nonce);
    ack.status       = status;
    if ((iface->token != NULL) && (cnonce != NULL) &&
        (dango_auth_proof(iface->token, DANGO_AUTH_ROLE_SERVER, cnonce,
                          conn->nonce, proof) == 0)) {
        ack.proof.data = proof;
        ack.proof.len  = sizeof(proof);
    }

    dango__tcp_send_ctrl(conn, DANGO_FRAME_HELLO_ACK, 0, 0, &ack.base);
}

/* A complete control payload arrived on a server connection. */
static int server_ctrl_done(tcp_conn_t *conn)
{
    tcp_iface_t   *iface = conn->iface;
    dango_frame_t *h     = &conn->rx_hdr;
    const uint8_t *p     = (const uint8_t *)conn->rx_ctrl;
    size_t         len   = conn->rx_ctrl_len;

    switch (h->type) {
    case DANGO_FRAME_HELLO: {
        Dango__Ctrl__Hello *hello  = dango__ctrl__hello__unpack(NULL, len, p);
        int32_t             status = 0;

        if ((hello == NULL) || (hello->nonce.len != DANGO_AUTH_NONCE_LEN)) {
            dango__ctrl__hello__free_unpacked(hello, NULL);
            tcp_peer_error("tcp conn %s: malformed hello", conn->peer_addr);
            return DANGO_EPROTO;
        }

        memcpy(conn->peer_nonce, hello->nonce.data, DANGO_AUTH_NONCE_LEN);
        if (hello->version != DANGO_FRAME_VERSION) {
            status = DANGO_EPROTO_VERSION;
        } else if ((hello->target_name[0] != '\0') &&
                   (strcmp(hello->target_name, iface->segment_name) != 0)) {
            /* Someone else now listens where the peer expected the target. */
            status = DANGO_ESEGMENT_STALE;
        }

        dango_debug("tcp conn %s: hello from segment %s", conn->peer_addr,
                    hello->segment_name);
        dango__ctrl__hello__free_unpacked(hello, NULL);
        server_send_hello_ack(conn, conn->peer_nonce, status);
        if (status == 0) {
            conn->state =
                (iface->token != NULL) ? TCP_CONN_AUTH_WAIT : TCP_CONN_READY;
        }

        return 0;
    }
    case DANGO_FRAME_AUTH: {
        Dango__Ctrl__Auth *auth = dango__ctrl__auth__unpack(NULL, len, p);
        int                rc   = DANGO_EAUTH;

        if (auth != NULL) {
            rc = dango_auth_verify(iface->token, DANGO_AUTH_ROLE_CLIENT,
                                   conn->peer_nonce, conn->nonce,
                                   auth->proof.data, auth->proof.len);
        }

        dango__ctrl__auth__free_unpacked(auth, NULL);
        if (rc != 0) {
            tcp_peer_error("tcp conn %s: peer failed cluster token "
                           "authentication",
                           conn->peer_addr);
            return DANGO_EAUTH;
        }

        conn->state = TCP_CONN_READY;
        return 0;
    }
    case DANGO_FRAME_NOTIFY: {
        Dango__Ctrl__Notify *n      = dango__ctrl__notify__unpack(NULL, len, p);
        int32_t              status = 0;

        if (n == NULL) {
            status = DANGO_EPROTO;
        } else {
            iface->host->notify_recv(iface->host->ctx, n->from, n->message.data,
                                     n->message.len);
        }

        dango__ctrl__notify__free_unpacked(n, NULL);
        return dango__tcp_send_ctrl(conn, DANGO_FRAME_NOTIFY_ACK, h->id, status,
                                    NULL);
    }
    default:
        return DANGO_EPROTO;
    }
}

static int server_send_desc(tcp_conn_t *conn)
{
    tcp_iface_t           *iface = conn->iface;
    Dango__Ctrl__DescReply reply = DANGO__CTRL__DESC_REPLY__INIT;
    char                  *json  = NULL;
    int                    rc;

    rc           = iface->host->desc_get(iface->host->ctx, &json);
    reply.status = rc;
    reply.json   = (json != NULL) ? json : "";
    rc = dango__tcp_send_ctrl(conn, DANGO_FRAME_DESC_RESP, conn->rx_hdr.id, 0,
                              &reply.base);
    dango_free(json);
    return rc;
}

/* A header arrived on a server connection; decide where its payload goes. */
static int server_frame(tcp_conn_t *conn)
{
    tcp_iface_t   *iface = conn->iface;
    dango_frame_t *h     = &conn->rx_hdr;
    int            rc;

    switch (conn->state) {
    case TCP_CONN_HANDSHAKE:
        if (h->type != DANGO_FRAME_HELLO) {
            tcp_peer_error("tcp conn %s: frame type %u before hello: closing",
                           conn->peer_addr, h->type);
            return DANGO_EPROTO;
        }
        break;
    case TCP_CONN_AUTH_WAIT:
        if (h->type != DANGO_FRAME_AUTH) {
            tcp_peer_error("tcp conn %s: frame type %u before the token proof: "
                           "closing",
                           conn->peer_addr, h->type);
            return DANGO_EAUTH;
        }
        break;
    default:
        break;
    }

    switch (h->type) {
    case DANGO_FRAME_HELLO:
    case DANGO_FRAME_AUTH:
    case DANGO_FRAME_NOTIFY:
        if ((h->type != DANGO_FRAME_NOTIFY) ==
            (conn->state == TCP_CONN_READY)) {
            tcp_peer_error("tcp conn %s: repeated handshake frame type %u: "
                           "closing",
                           conn->peer_addr, h->type);
            return DANGO_EPROTO;
        }

        return dango__tcp_rx_ctrl_start(conn);
    case DANGO_FRAME_WRITE:
        rc = iface->host->mem_acquire(iface->host->ctx, h->addr, h->length,
                                      DANGO_TP_ACCESS_WRITE, &conn->rx_region);
        conn->rx_left = h->length;
        if (rc != 0) {
            dango_debug("tcp conn %s: refused write addr 0x%lx length %lu",
                        conn->peer_addr, (unsigned long)h->addr,
                        (unsigned long)h->length);
            conn->rx_status = rc;
            conn->rx_region = NULL;
            conn->rx_phase  = TCP_RX_DRAIN;
        } else {
            conn->rx_status = 0;
            conn->rx_dst    = (char *)(uintptr_t)h->addr;
            conn->rx_phase  = TCP_RX_MEM;
        }
        return 0;
    case DANGO_FRAME_READ: {
        tcp_tx_t *tx     = dango__tcp_tx_get(iface);
        void     *region = NULL;

        if (tx == NULL) {
            return DANGO_ENOMEM;
        }

        rc = iface->host->mem_acquire(iface->host->ctx, h->addr, h->length,
                                      DANGO_TP_ACCESS_READ, &region);
        if (rc == 0) {
            tx->region   = region;
            tx->data     = (const char *)(uintptr_t)h->addr;
            tx->data_len = h->length;
        }

        dango_frame_init(&tx->hdr, DANGO_FRAME_READ_RESP, h->id, h->addr,
                         rc == 0 ? h->length : 0, rc);
        dango__tcp_conn_enqueue(conn, tx);
        return 0;
    }
    case DANGO_FRAME_DESC_REQ:
        return server_send_desc(conn);
    default:
        tcp_peer_error("tcp conn %s: unexpected frame type %u from initiator",
                       conn->peer_addr, h->type);
        return DANGO_EPROTO;
    }
}

/* The payload of the current frame is complete (server side). */
static int server_payload_done(tcp_conn_t *conn)
{
    tcp_iface_t *iface = conn->iface;
    int          rc    = 0;

    switch (conn->rx_phase) {
    case TCP_RX_MEM:
        iface->host->mem_release(iface->host->ctx, conn->rx_region);
        conn->rx_region = NULL;
        __attribute__((fallthrough)); /* ack with the status */
    case TCP_RX_DRAIN:
        rc = dango__tcp_send_ctrl(conn, DANGO_FRAME_WRITE_ACK, conn->rx_hdr.id,
                                  conn->rx_status, NULL);
        break;
    case TCP_RX_CTRL:
        rc = server_ctrl_done(conn);
        dango_free(conn->rx_ctrl);
        conn->rx_ctrl = NULL;
        break;
    default:
        break;
    }

    conn->rx_phase = TCP_RX_HDR;
    return rc;
}

/* ---------- the receive state machine (both roles) ---------- */

static int conn_payload_done(tcp_conn_t *conn)
{
    if (conn->ep != NULL) {
        int rc = 0;

        if (conn->rx_phase == TCP_RX_MEM) {
            dango__tcp_rx_done_mem(conn);
        } else if (conn->rx_phase == TCP_RX_CTRL) {
            rc = dango__tcp_client_frame(conn); /* second call: payload in */
        }

        conn->rx_phase = TCP_RX_HDR;
        return rc;
    }

    return server_payload_done(conn);
}

/*
 * Reads and dispatches frames until the socket is drained or the budget is
 * spent. Returns 0, or an error after which the connection must be closed.
 */
static int conn_read(tcp_conn_t *conn)
{
    uint64_t budget = TCP_READ_BUDGET;
    int      rc;

    while (budget > 0) {
        size_t  avail = conn->rx_len - conn->rx_off;
        ssize_t n     = 0;

        if (conn->rx_phase == TCP_RX_HDR) {
            if (avail < DANGO_FRAME_HDR_LEN) {
                if (conn->rx_off > 0) {
                    memmove(conn->rx_buf, conn->rx_buf + conn->rx_off, avail);
                    conn->rx_off = 0;
                    conn->rx_len = avail;
                }

                n = recv(conn->fd, conn->rx_buf + conn->rx_len,
                         TCP_RX_STAGING - conn->rx_len, MSG_DONTWAIT);
                if (n == 0) {
                    return DANGO_ECONNRESET;
                }

                if (n < 0) {
                    if ((errno == EAGAIN) || (errno == EINTR)) {
                        return 0;
                    }

                    return dango_err_from_errno(errno);
                }

                conn->rx_len += (size_t)n;
                conn->last_progress = dango_time_ns();
                budget -= DANGO_MIN((uint64_t)n, budget);
                continue;
            }

            memcpy(&conn->rx_hdr, conn->rx_buf + conn->rx_off,
                   DANGO_FRAME_HDR_LEN);
            conn->rx_off += DANGO_FRAME_HDR_LEN;
            rc = dango_frame_check(&conn->rx_hdr);
            if (rc != 0) {
                tcp_peer_error("tcp conn %s: bad frame header (magic 0x%x "
                               "version %u type %u length %lu): closing",
                               conn->peer_addr, conn->rx_hdr.magic,
                               conn->rx_hdr.version, conn->rx_hdr.type,
                               (unsigned long)conn->rx_hdr.length);
                return rc;
            }

            rc = (conn->ep != NULL) ? dango__tcp_client_frame(conn)
                                    : server_frame(conn);
            if (rc != 0) {
                return rc;
            }

            if ((conn->rx_phase != TCP_RX_HDR) && (conn->rx_left == 0)) {
                rc = conn_payload_done(conn);
                if (rc != 0) {
                    return rc;
                }
            }

            continue;
        }

        /* Payload: first whatever sits in the staging buffer. */
        if (avail > 0) {
            size_t take = (size_t)DANGO_MIN((uint64_t)avail, conn->rx_left);

            if (conn->rx_phase != TCP_RX_DRAIN) {
                memcpy(conn->rx_dst, conn->rx_buf + conn->rx_off, take);
                conn->rx_dst += take;
            }

            conn->rx_off += take;
            conn->rx_left -= take;
        } else if (conn->rx_phase == TCP_RX_DRAIN) {
            n            = recv(conn->fd, conn->rx_buf,
                                (size_t)DANGO_MIN(conn->rx_left, (uint64_t)TCP_RX_STAGING),
                                MSG_DONTWAIT);
            conn->rx_off = conn->rx_len = 0;
            if (n > 0) {
                conn->rx_left -= (uint64_t)n;
            }
        } else {
            n = recv(conn->fd, conn->rx_dst, conn->rx_left, MSG_DONTWAIT);
            if (n > 0) {
                conn->rx_dst += n;
                conn->rx_left -= (uint64_t)n;
            }
        }

        if ((avail == 0) && (n <= 0)) {
            if (n == 0) {
                return DANGO_ECONNRESET;
            }

            if ((errno == EAGAIN) || (errno == EINTR)) {
                return 0;
            }

            return dango_err_from_errno(errno);
        }

        if (avail == 0) {
            conn->last_progress = dango_time_ns();
            budget -= DANGO_MIN((uint64_t)n, budget);
        }

        if (conn->rx_left == 0) {
            rc = conn_payload_done(conn);
            if (rc != 0) {
                return rc;
            }
        }
    }

    return 0;
}

void dango__tcp_conn_io_cb(dango_loop_t *loop, int fd, unsigned events,
                           void *arg)
{
    tcp_conn_t *conn = arg;
    int         rc;

    if ((conn->ep != NULL) && (conn->state == TCP_CONN_CONNECTING)) {
        dango__tcp_client_connected(conn);
        return;
    }

    if (events & DANGO_LOOP_READ) {
        rc = conn_read(conn);
        if (rc != 0) {
            if (conn->ep != NULL) {
                dango__tcp_client_fail(conn, rc);
            } else {
                if ((rc != DANGO_ECONNRESET) && (rc != DANGO_EPROTO) &&
                    (rc != DANGO_EPROTO_VERSION) && (rc != DANGO_EAUTH)) {
                    dango_debug("tcp conn %s: closing: %s", conn->peer_addr,
                                dango_strerror(rc));
                }

                server_conn_free(conn);
            }

            return;
        }
    }

    dango__tcp_conn_flush(conn);
    if ((conn->ep == NULL) && (conn->state == TCP_CONN_CLOSED)) {
        server_conn_free(conn);
    }
}

/* ---------- listener ---------- */

static void server_attach_task(dango_loop_task_t *task)
{
    tcp_conn_t *conn = dango_container_of(task, tcp_conn_t, kick);
    int         rc;

    rc = dango_loop_fd_add(conn->loop, conn->fd, DANGO_LOOP_READ,
                           dango__tcp_conn_io_cb, conn);
    if (rc != 0) {
        dango_error("tcp conn %s: cannot watch: %s", conn->peer_addr,
                    dango_strerror(rc));
        close(conn->fd);
        conn->fd = -1;
        server_conn_free(conn);
        return;
    }

    conn->events       = DANGO_LOOP_READ;
    conn->in_loop_list = 1;
    dango_list_add_tail(&conn->iface->loop_conns[conn->loop_idx], &conn->list);
}

static void listener_cb(dango_loop_t *loop, int fd, unsigned events, void *arg)
{
    tcp_iface_t *iface = arg;

    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t               sl = sizeof(ss);
        tcp_conn_t             *conn;
        int                     cfd;

        cfd = accept4(fd, (struct sockaddr *)&ss, &sl,
                      SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if ((errno != EAGAIN) && (errno != EINTR)) {
                dango_warn("tcp listener %s: accept: %m", iface->listen_addr);
            }

            return;
        }

        dango_sock_tune(cfd);
        if (iface->cfg.sndbuf > 0) {
            int v = (int)iface->cfg.sndbuf;

            setsockopt(cfd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
        }

        if (iface->cfg.rcvbuf > 0) {
            int v = (int)iface->cfg.rcvbuf;

            setsockopt(cfd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
        }

        conn = dango_malloc(sizeof(*conn), "tcp_conn");
        if ((conn == NULL) ||
            (dango__tcp_conn_init(
                 conn, iface, iface->accept_rr++ % iface->num_loops) != 0)) {
            dango_error("tcp listener %s: out of memory for a connection",
                        iface->listen_addr);
            dango_free(conn);
            close(cfd);
            continue;
        }

        conn->fd            = cfd;
        conn->state         = TCP_CONN_HANDSHAKE;
        conn->last_progress = conn->state_since = dango_time_ns();
        dango_sock_addr_str((struct sockaddr *)&ss, conn->peer_addr,
                            sizeof(conn->peer_addr));
        conn->kick.cb = server_attach_task;
        if (conn->loop == loop) {
            server_attach_task(&conn->kick);
        } else {
            dango_loop_post(conn->loop, &conn->kick);
        }
    }
}

/* ---------- timers ---------- */

static void tcp_timer_cb(dango_loop_t *loop, void *arg)
{
    tcp_iface_t *iface = arg;
    uint64_t     now   = dango_time_ns();
    unsigned     idx;
    tcp_conn_t  *conn, *tmp;

    for (idx = 0; idx < iface->num_loops; idx++) {
        if (iface->loops[idx] == loop) {
            break;
        }
    }

    if (idx == iface->num_loops) {
        return;
    }

    dango_list_for_each_safe(conn, tmp, &iface->loop_conns[idx], list)
    {
        if (conn->ep != NULL) {
            dango__tcp_client_timer(conn, now);
            continue;
        }

        /* A server connection stuck in a handshake or mid-payload. */
        if (((conn->state != TCP_CONN_READY) ||
             (conn->rx_phase != TCP_RX_HDR) ||
             !dango_list_is_empty(&conn->txq)) &&
            (now - conn->last_progress > iface->cfg.io_timeout)) {
            dango_warn("tcp conn %s: no progress for %lu ms: closing",
                       conn->peer_addr,
                       (unsigned long)((now - conn->last_progress) /
                                       DANGO_NSEC_PER_MSEC));
            server_conn_free(conn);
        }
    }
}

/* ---------- iface ops ---------- */

static int tcp_build_desc(tcp_iface_t *iface)
{
    json_t *obj = json_object();
    json_t *eps = json_array();
    char   *s;

    if ((obj == NULL) || (eps == NULL)) {
        json_decref(obj);
        json_decref(eps);
        return DANGO_ENOMEM;
    }

    json_array_append_new(eps, json_string(iface->listen_addr));
    json_object_set_new(obj, "endpoints", eps);
    json_object_set_new(obj, "version", json_integer(DANGO_FRAME_VERSION));
    s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (s == NULL) {
        return DANGO_ENOMEM;
    }

    iface->desc_json = dango_strdup(s, "tcp_desc");
    free(s);
    return iface->desc_json ? 0 : DANGO_ENOMEM;
}

typedef struct tcp_loop_arg {
    tcp_iface_t *iface;
    unsigned     idx;
    int          rc;
} tcp_loop_arg_t;

static void tcp_close_loop(void *arg)
{
    tcp_loop_arg_t *a     = arg;
    tcp_iface_t    *iface = a->iface;
    tcp_conn_t     *conn, *tmp;

    if (iface->timer_ids[a->idx] > 0) {
        dango_loop_timer_del(iface->loops[a->idx], iface->timer_ids[a->idx]);
        iface->timer_ids[a->idx] = 0;
    }

    if ((a->idx == 0) && (iface->listen_fd >= 0)) {
        dango_loop_fd_del(iface->loops[0], iface->listen_fd);
        close(iface->listen_fd);
        iface->listen_fd = -1;
    }

    dango_list_for_each_safe(conn, tmp, &iface->loop_conns[a->idx], list)
    {
        if (conn->ep == NULL) {
            server_conn_free(conn);
        }
    }
}

/* Runs on each loop: its timer, and on loop 0 the listener. */
static void tcp_open_loop(void *arg)
{
    tcp_loop_arg_t *a     = arg;
    tcp_iface_t    *iface = a->iface;
    int             id;

    id = dango_loop_timer_add(iface->loops[a->idx], TCP_TIMER_MS, tcp_timer_cb,
                              iface);
    iface->timer_ids[a->idx] = id > 0 ? id : 0;
    if ((a->idx == 0) && (iface->listen_fd >= 0)) {
        a->rc = dango_loop_fd_add(iface->loops[0], iface->listen_fd,
                                  DANGO_LOOP_READ, listener_cb, iface);
    }
}

static void tcp_iface_close(dango_tp_iface_t *tp_iface)
{
    tcp_iface_t *iface = (tcp_iface_t *)tp_iface;

    if (iface == NULL) {
        return;
    }

    for (unsigned i = 0; i < iface->num_loops; i++) {
        tcp_loop_arg_t a = {iface, i, 0};

        dango_loop_run_sync(iface->loops[i], tcp_close_loop, &a);
    }

    dango_mpool_cleanup(&iface->tx_pool);
    dango__config_free(&dango__tcp_config_table_rw, &iface->cfg);
    dango_free(iface->desc_json);
    dango_free(iface->segment_name);
    dango_free(iface->token);
    dango_free(iface->timer_ids);
    dango_free(iface->loop_conns);
    dango_free(iface->loops);
    dango_free(iface);
}

static int tcp_iface_open(const dango_tp_iface_params_t *params,
                          dango_tp_iface_t             **iface_p)
{
    tcp_iface_t *iface;
    int          rc;

    if ((params->num_loops == 0) || (params->host == NULL)) {
        return DANGO_EINVAL;
    }

    iface = dango_calloc(1, sizeof(*iface), "tcp_iface");
    if (iface == NULL) {
        return DANGO_ENOMEM;
    }

    iface->listen_fd   = -1;
    iface->host        = params->host;
    iface->num_loops   = params->num_loops;
    iface->instance_id = params->instance_id;
    dango_mpool_init(&iface->tx_pool, sizeof(tcp_tx_t), 256, 0, "tcp_tx");
    iface->loops =
        dango_calloc(params->num_loops, sizeof(*iface->loops), "tcp_loops");
    iface->loop_conns = dango_calloc(
        params->num_loops, sizeof(*iface->loop_conns), "tcp_loop_conns");
    iface->timer_ids    = dango_calloc(params->num_loops,
                                       sizeof(*iface->timer_ids), "tcp_timers");
    iface->segment_name = dango_strdup(
        params->segment_name ? params->segment_name : "", "tcp_segment_name");
    if ((iface->loops == NULL) || (iface->loop_conns == NULL) ||
        (iface->timer_ids == NULL) || (iface->segment_name == NULL)) {
        rc = DANGO_ENOMEM;
        goto err_free;
    }

    if (params->token != NULL) {
        iface->token = dango_strdup(params->token, "tcp_token");
        if (iface->token == NULL) {
            rc = DANGO_ENOMEM;
            goto err_free;
        }
    }

    rc = dango__config_parse(params->config, &dango__tcp_config_table_rw,
                             &iface->cfg);
    if (rc != 0) {
        goto err_free;
    }

    if ((iface->cfg.conns_per_peer == 0) || (iface->cfg.conns_per_peer > 16) ||
        (iface->cfg.slice_size < 4096) ||
        (iface->cfg.slice_size > DANGO_FRAME_DATA_MAX)) {
        dango_error("tcp: TCP_CONNS_PER_PEER must be 1..16 and TCP_SLICE_SIZE "
                    "4k..1g");
        rc = DANGO_ECONFIG;
        goto err_cfg;
    }

    for (unsigned i = 0; i < params->num_loops; i++) {
        iface->loops[i] = params->loops[i];
        dango_list_init(&iface->loop_conns[i]);
    }

    if (params->listen != NULL) {
        rc = dango_sock_listen(params->listen, (int)iface->cfg.backlog);
        if (rc < 0) {
            dango_error("tcp: cannot listen on %s: %s", params->listen,
                        dango_strerror(rc));
            goto err_cfg;
        }

        iface->listen_fd = rc;
        dango_sock_local_addr(iface->listen_fd, iface->listen_addr,
                              sizeof(iface->listen_addr));
        rc = tcp_build_desc(iface);
        if (rc != 0) {
            goto err_close;
        }
    }

    for (unsigned i = 0; i < params->num_loops; i++) {
        tcp_loop_arg_t a = {iface, i, 0};

        dango_loop_run_sync(iface->loops[i], tcp_open_loop, &a);
        if (a.rc != 0) {
            close(iface->listen_fd);
            iface->listen_fd = -1;
            tcp_iface_close((dango_tp_iface_t *)iface);
            return a.rc;
        }
    }

    dango_debug("tcp: listening on %s", iface->listen_addr);
    *iface_p = (dango_tp_iface_t *)iface;
    return 0;

err_close:
    close(iface->listen_fd);
err_cfg:
    dango__config_free(&dango__tcp_config_table_rw, &iface->cfg);
err_free:
    dango_mpool_cleanup(&iface->tx_pool);
    dango_free(iface->token);
    dango_free(iface->segment_name);
    dango_free(iface->timer_ids);
    dango_free(iface->loop_conns);
    dango_free(iface->loops);
    dango_free(iface);
    return rc;
}

static int tcp_iface_query(dango_tp_iface_t      *tp_iface,
                           dango_tp_iface_attr_t *attr)
{
    tcp_iface_t *iface = (tcp_iface_t *)tp_iface;

    attr->caps      = DANGO_TP_CAP_NOTIFY | DANGO_TP_CAP_DESC;
    attr->max_slice = iface->cfg.slice_size;
    attr->desc_json = iface->desc_json;
    return 0;
}

const dango_transport_ops_t dango__tcp_ops = {
    .name         = "tcp",
    .iface_open   = tcp_iface_open,
    .iface_close  = tcp_iface_close,
    .iface_query  = tcp_iface_query,
    .mem_reg      = NULL,
    .mem_dereg    = NULL,
    .ep_create    = dango__tcp_ep_create,
    .ep_destroy   = dango__tcp_ep_destroy,
    .ep_can_serve = NULL,
    .post         = dango__tcp_post,
    .notify       = dango__tcp_notify,
    .desc_fetch   = dango__tcp_desc_fetch,
};
