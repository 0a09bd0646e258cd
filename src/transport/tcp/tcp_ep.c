/*
 * TCP transport: endpoints and the initiator side of connections.
 *
 * DESIGN
 * - An endpoint is a pool of TCP_CONNS_PER_PEER persistent connections to
 *   one peer segment, each owned by one engine loop. post() picks the
 *   connection with the fewest bytes queued (round-robin among equals, and
 *   skipping connections that just failed), pushes the slice onto that
 *   connection's lock-free inbox and posts one kick to its loop: the
 *   submitter never blocks on the network and never takes a lock.
 * - On its loop a connection connects lazily, says Hello (proving the
 *   cluster token when one is set, and checking that the peer is the
 *   instance the descriptor named), then keeps up to TCP_WINDOW bytes of
 *   slices in flight. WRITE payloads are sent straight from the caller's
 *   registered buffer; READ replies are received straight into it.
 * - Replies come back in request order, so they are matched against the
 *   head of the in-flight FIFO; a reply that does not match is a protocol
 *   error and closes the connection.
 * - Request connections are closed abortively (SO_LINGER 0, also when the
 *   process dies): what the kernel still holds of failed requests is
 *   discarded, so a WRITE reported failed never lands later, e.g. in a
 *   region the store has given to another put after a partition healed.
 * - A failed connection (reset, EOF, protocol error, no progress within
 *   TCP_IO_TIMEOUT) hands every slice it held back to the endpoint, which
 *   re-posts it on another connection, at most TCP_RETRIES times; then the
 *   slice fails with the last error (DANGO_ELINK_DOWN, DANGO_ELINK_TIMEOUT,
 *   or DANGO_EPEER_GONE when the peer cannot even be connected to).
 *   Re-sending a slice is safe: a WRITE rewrites the same bytes, a READ
 *   re-reads them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/config_table.h"
#include "common/hash.h"
#include "common/time.h"
#include "dango_ctrl.pb-c.h"
#include "net/sock.h"
#include "transport/tcp/tcp_int.h"

#define TCP_FAIL_BACKOFF_NS (200 * DANGO_NSEC_PER_MSEC)

#define SLICE_LINK(_s)  ((dango_list_link_t *)&(_s)->tp_priv[0])
#define LINK_SLICE(_l)  ((dango_tp_slice_t *)(void *)(_l))
#define SLICE_INBOX(_s) ((dango_mpsc_link_t *)&(_s)->tp_priv[3])
#define INBOX_SLICE(_l)                                                        \
    dango_container_of((void *)(_l), dango_tp_slice_t, tp_priv[3])
#define SLICE_NOTIFY_BUF(_s) ((_s)->tp_priv[2])

_Static_assert(offsetof(dango_tp_slice_t, tp_priv) == 0,
               "slice list link must be first");

/* ---------- helpers ---------- */

static void slice_finish(tcp_conn_t *conn, dango_tp_slice_t *s, int status)
{
    if (status > 0) {
        status = DANGO_EPROTO; /* a peer sent a nonsensical status */
    }

    __atomic_sub_fetch(&conn->load, s->length, __ATOMIC_RELAXED);
    if (s->op == TCP_OP_NOTIFY) {
        dango_free(SLICE_NOTIFY_BUF(s));
        SLICE_NOTIFY_BUF(s) = NULL;
    }

    s->complete(s, status);
}

/* Completes the head of the in-flight FIFO. */
static void inflight_done(tcp_conn_t *conn, dango_tp_slice_t *s, int status)
{
    dango_list_del(SLICE_LINK(s));
    conn->inflight_bytes -= s->length;
    slice_finish(conn, s, status);
}

static tcp_conn_t *ep_choose(tcp_ep_t *ep)
{
    uint64_t    now   = dango_time_ns();
    unsigned    start = __atomic_fetch_add(&ep->rr, 1, __ATOMIC_RELAXED);
    tcp_conn_t *best = NULL, *fallback = NULL;
    uint64_t    best_load = 0, fallback_until = 0;
    unsigned    n = __atomic_load_n(&ep->num_conns, __ATOMIC_ACQUIRE);

    /* n == 0: the endpoint is being destroyed (see dango__tcp_ep_destroy). */
    for (unsigned i = 0; i < n; i++) {
        tcp_conn_t *c     = ep->conns[(start + i) % n];
        uint64_t    until = __atomic_load_n(&c->fail_until, __ATOMIC_RELAXED);
        uint64_t    load  = __atomic_load_n(&c->load, __ATOMIC_RELAXED);

        if (until > now) {
            if ((fallback == NULL) || (until < fallback_until)) {
                fallback       = c;
                fallback_until = until;
            }

            continue;
        }

        if ((best == NULL) || (load < best_load)) {
            best      = c;
            best_load = load;
        }
    }

    return best != NULL ? best : fallback;
}

/* Hands @s to @conn from any thread. */
static void conn_push(tcp_conn_t *conn, dango_tp_slice_t *s)
{
    __atomic_add_fetch(&conn->load, s->length, __ATOMIC_RELAXED);
    dango_mpsc_push(&conn->inbox, SLICE_INBOX(s));
    if (__atomic_exchange_n(&conn->kick_pending, 1, __ATOMIC_ACQ_REL) == 0) {
        dango_loop_post(conn->loop, &conn->kick);
    }
}

/* Moves the inbox to the tail of the pending list, oldest first. */
static void conn_take_inbox(tcp_conn_t *conn)
{
    dango_mpsc_link_t *l = dango_mpsc_take(&conn->inbox);

    while (l != NULL) {
        dango_tp_slice_t *s = INBOX_SLICE(l);

        l = l->next;
        dango_list_add_tail(&conn->pending, SLICE_LINK(s));
    }
}

/* Moves pending slices into the send queue while the window allows. */
static void conn_pump(tcp_conn_t *conn)
{
    tcp_iface_t *iface = conn->iface;

    while (!dango_list_is_empty(&conn->pending) &&
           ((conn->inflight_bytes < iface->cfg.window) ||
            dango_list_is_empty(&conn->inflight))) {
        dango_tp_slice_t *s  = LINK_SLICE(conn->pending.next);
        tcp_tx_t         *tx = dango__tcp_tx_get(iface);

        dango_list_del(SLICE_LINK(s));
        if (tx == NULL) {
            slice_finish(conn, s, DANGO_ENOMEM);
            continue;
        }

        if (dango_list_is_empty(&conn->inflight)) {
            conn->last_progress = dango_time_ns();
        }

        if (s->op == DANGO_TP_OP_WRITE) {
            dango_frame_init(&tx->hdr, DANGO_FRAME_WRITE, s->id, s->remote,
                             s->length, 0);
            tx->data     = s->local;
            tx->data_len = s->length;
        } else if (s->op == DANGO_TP_OP_READ) {
            dango_frame_init(&tx->hdr, DANGO_FRAME_READ, s->id, s->remote,
                             s->length, 0);
        } else {
            dango_frame_init(&tx->hdr, DANGO_FRAME_NOTIFY, s->id, 0, s->remote,
                             0);
            tx->data     = SLICE_NOTIFY_BUF(s);
            tx->data_len = s->remote;
        }

        conn->inflight_bytes += s->length;
        dango_list_add_tail(&conn->inflight, SLICE_LINK(s));
        dango__tcp_conn_enqueue(conn, tx);
    }
}

static int conn_send_hello(tcp_conn_t *conn)
{
    Dango__Ctrl__Hello hello = DANGO__CTRL__HELLO__INIT;

    dango_random_bytes(conn->nonce, sizeof(conn->nonce));
    hello.version      = DANGO_FRAME_VERSION;
    hello.segment_name = conn->iface->segment_name;
    hello.instance_id  = conn->iface->instance_id;
    hello.nonce.data   = conn->nonce;
    hello.nonce.len    = sizeof(conn->nonce);
    hello.target_name  = conn->ep->name;
    return dango__tcp_send_ctrl(conn, DANGO_FRAME_HELLO, 0, 0, &hello.base);
}

static void conn_close_fd(tcp_conn_t *conn)
{
    if (conn->fd >= 0) {
        dango_loop_fd_del(conn->loop, conn->fd);
        close(conn->fd);
        conn->fd = -1;
    }

    conn->events   = 0;
    conn->rx_phase = TCP_RX_HDR;
    conn->rx_off = conn->rx_len = 0;
    dango_free(conn->rx_ctrl);
    conn->rx_ctrl = NULL;
    dango__tcp_conn_drop_tx(conn);
}

static void conn_connect(tcp_conn_t *conn)
{
    tcp_ep_t               *ep = conn->ep;
    const char             *addr;
    struct sockaddr_storage ss;
    socklen_t               sl;
    int                     fd, rc;

    addr = ep->addrs[(conn->loop_idx + (unsigned)conn->last_error) %
                     ep->num_addrs];
    snprintf(conn->peer_addr, sizeof(conn->peer_addr), "%s", addr);
    rc = dango_sock_parse_addr(addr, 0, &ss, &sl);
    if (rc != 0) {
        dango__tcp_client_fail(conn, DANGO_EPEER_GONE);
        return;
    }

    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        dango__tcp_client_fail(conn, dango_err_from_errno(errno));
        return;
    }

    dango_sock_tune(fd);

    /* Every close of a request connection is abortive (RST), by us or by
     * the kernel when the process dies: the bytes of requests still in
     * the send queue are discarded, never delivered late. A WRITE that
     * failed here (and whose put was revoked, its region given to another
     * put) must not land in that region once a partition heals. */
    {
        struct linger lg = {1, 0};

        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }

    if (conn->iface->cfg.sndbuf > 0) {
        int v = (int)conn->iface->cfg.sndbuf;

        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
    }

    if (conn->iface->cfg.rcvbuf > 0) {
        int v = (int)conn->iface->cfg.rcvbuf;

        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
    }

    conn->fd          = fd;
    conn->state       = TCP_CONN_CONNECTING;
    conn->state_since = dango_time_ns();
    rc                = dango_loop_fd_add(conn->loop, fd, DANGO_LOOP_WRITE,
                                          dango__tcp_conn_io_cb, conn);
    if (rc != 0) {
        close(fd);
        conn->fd = -1;
        dango__tcp_client_fail(conn, rc);
        return;
    }

    conn->events = DANGO_LOOP_WRITE;
    if ((connect(fd, (struct sockaddr *)&ss, sl) != 0) &&
        (errno != EINPROGRESS)) {
        dango_debug("tcp ep %s: connect %s: %m", ep->name, addr);
        dango__tcp_client_fail(conn, DANGO_EPEER_GONE);
    }
}

void dango__tcp_client_connected(tcp_conn_t *conn)
{
    int       err = 0;
    socklen_t len = sizeof(err);

    if ((getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) ||
        (err != 0)) {
        dango_debug("tcp ep %s: connect %s: %s", conn->ep->name,
                    conn->peer_addr, strerror(err ? err : errno));
        dango__tcp_client_fail(conn, DANGO_EPEER_GONE);
        return;
    }

    conn->state         = TCP_CONN_HANDSHAKE;
    conn->state_since   = dango_time_ns();
    conn->last_progress = conn->state_since;
    if (conn_send_hello(conn) != 0) {
        dango__tcp_client_fail(conn, DANGO_ENOMEM);
        return;
    }

    dango__tcp_conn_flush(conn);
}

static void conn_kick_task(dango_loop_task_t *task)
{
    tcp_conn_t *conn = dango_container_of(task, tcp_conn_t, kick);

    __atomic_store_n(&conn->kick_pending, 0, __ATOMIC_RELEASE);
    if (!conn->in_loop_list) {
        dango_list_add_tail(&conn->iface->loop_conns[conn->loop_idx],
                            &conn->list);
        conn->in_loop_list = 1;
    }

    conn_take_inbox(conn);
    if (conn->state == TCP_CONN_IDLE) {
        if (!dango_list_is_empty(&conn->pending)) {
            conn_connect(conn);
        }

        return;
    }

    if (conn->state == TCP_CONN_READY) {
        conn_pump(conn);
        dango__tcp_conn_flush(conn);
    }
}

/* ---------- failure and retry ---------- */

static int err_retryable(int err)
{
    return dango_err_is_link(err) || (err == DANGO_EPEER_GONE);
}

void dango__tcp_client_fail(tcp_conn_t *conn, int error)
{
    tcp_ep_t         *ep = conn->ep;
    dango_list_link_t all;
    int               was_up =
        (conn->state == TCP_CONN_READY) || (conn->state == TCP_CONN_HANDSHAKE);
    int closing = __atomic_load_n(&ep->num_conns, __ATOMIC_ACQUIRE) == 0;

    /* Classify socket-level failures by what they mean for the request. */
    switch (error) {
    case DANGO_ECONNRESET:
    case DANGO_ECONNABORTED:
    case DANGO_EIO:
        error = was_up ? DANGO_ELINK_DOWN : DANGO_EPEER_GONE;
        break;
    case DANGO_ECONNREFUSED:
    case DANGO_EHOSTUNREACH:
    case DANGO_ENETUNREACH:
    case DANGO_ETIMEDOUT:
        error = DANGO_EPEER_GONE;
        break;
    default:
        break;
    }

    if (error != DANGO_ECANCELED) {
        dango_debug("tcp ep %s: connection %s failed: %s", ep->name,
                    conn->peer_addr, dango_strerror(error));
    }

    conn_close_fd(conn);
    conn->state = TCP_CONN_IDLE;
    conn->last_error++;
    __atomic_store_n(&conn->fail_until, dango_time_ns() + TCP_FAIL_BACKOFF_NS,
                     __ATOMIC_RELAXED);

    conn_take_inbox(conn);
    dango_list_init(&all);
    dango_list_splice_tail(&all, &conn->inflight);
    dango_list_splice_tail(&all, &conn->pending);
    conn->inflight_bytes = 0;

    while (!dango_list_is_empty(&all)) {
        dango_tp_slice_t *s = LINK_SLICE(all.next);
        tcp_conn_t       *next;

        dango_list_del(SLICE_LINK(s));
        if (!closing && err_retryable(error) &&
            (s->retries < conn->iface->cfg.retries) &&
            ((next = ep_choose(ep)) != NULL)) {
            s->retries++;
            __atomic_sub_fetch(&conn->load, s->length, __ATOMIC_RELAXED);
            conn_push(next, s);
            continue;
        }

        slice_finish(conn, s, error);
    }
}

void dango__tcp_client_timer(tcp_conn_t *conn, uint64_t now)
{
    tcp_config_t *cfg = &conn->iface->cfg;

    if (((conn->state == TCP_CONN_CONNECTING) ||
         (conn->state == TCP_CONN_HANDSHAKE)) &&
        (now - conn->state_since > cfg->connect_timeout)) {
        dango__tcp_client_fail(conn, DANGO_EPEER_GONE);
    } else if ((conn->state == TCP_CONN_READY) &&
               !dango_list_is_empty(&conn->inflight) &&
               (now - conn->last_progress > cfg->io_timeout)) {
        dango__tcp_client_fail(conn, DANGO_ELINK_TIMEOUT);
    }
}

/* ---------- replies ---------- */

static int client_hello_ack(tcp_conn_t *conn)
{
    tcp_iface_t           *iface = conn->iface;
    tcp_ep_t              *ep    = conn->ep;
    Dango__Ctrl__HelloAck *ack;
    Dango__Ctrl__Auth      auth = DANGO__CTRL__AUTH__INIT;
    uint8_t                proof[DANGO_AUTH_PROOF_LEN];
    int                    send_auth = 0;
    int                    rc        = DANGO_EPROTO;

    ack = dango__ctrl__hello_ack__unpack(NULL, conn->rx_ctrl_len,
                                         (uint8_t *)conn->rx_ctrl);
    if (ack != NULL) {
        rc = dango_auth_check_hello_ack(
            iface->token, conn->nonce, ack->nonce.data, ack->nonce.len,
            ack->status, ack->proof.data, ack->proof.len, proof, &send_auth);
    }

    if ((rc == 0) && (ep->instance_id != 0) &&
        (ack->instance_id != ep->instance_id)) {
        dango_debug("tcp ep %s: peer instance changed (restarted)", ep->name);
        rc = DANGO_ESEGMENT_STALE;
    } else if ((rc == DANGO_EAUTH) || (rc == DANGO_EPROTO)) {
        dango_error("tcp ep %s: hello reply from %s: %s", ep->name,
                    conn->peer_addr,
                    (rc == DANGO_EAUTH) ? "cluster token authentication failed"
                                        : "malformed");
    } else if (rc != 0) {
        dango_debug("tcp ep %s: peer %s refused hello: %s", ep->name,
                    conn->peer_addr, dango_strerror(rc));
    }

    if ((rc == 0) && send_auth) {
        auth.proof.data = proof;
        auth.proof.len  = sizeof(proof);
        rc = dango__tcp_send_ctrl(conn, DANGO_FRAME_AUTH, 0, 0, &auth.base);
    }

    dango__ctrl__hello_ack__free_unpacked(ack, NULL);
    dango_free(conn->rx_ctrl);
    conn->rx_ctrl = NULL;
    if (rc == 0) {
        conn->state = TCP_CONN_READY;
        conn_pump(conn);
    }

    return rc;
}

void dango__tcp_rx_done_mem(tcp_conn_t *conn)
{
    dango_tp_slice_t *s = LINK_SLICE(conn->inflight.next);

    inflight_done(conn, s, 0);
    conn_pump(conn);
}

int dango__tcp_client_frame(tcp_conn_t *conn)
{
    dango_frame_t    *h = &conn->rx_hdr;
    dango_tp_slice_t *s;

    if (conn->rx_phase == TCP_RX_CTRL) {
        return client_hello_ack(conn); /* the only control reply we await */
    }

    if (h->type == DANGO_FRAME_HELLO_ACK) {
        if (conn->state != TCP_CONN_HANDSHAKE) {
            return DANGO_EPROTO;
        }

        return dango__tcp_rx_ctrl_start(conn);
    }

    if ((conn->state != TCP_CONN_READY) ||
        dango_list_is_empty(&conn->inflight)) {
        dango_error("tcp ep %s: unexpected frame type %u from %s",
                    conn->ep->name, h->type, conn->peer_addr);
        return DANGO_EPROTO;
    }

    s = LINK_SLICE(conn->inflight.next);
    if (s->id != h->id) {
        dango_error("tcp ep %s: reply for slice %lu while %lu is next",
                    conn->ep->name, (unsigned long)h->id, (unsigned long)s->id);
        return DANGO_EPROTO;
    }

    switch (h->type) {
    case DANGO_FRAME_WRITE_ACK:
        if (s->op != DANGO_TP_OP_WRITE) {
            return DANGO_EPROTO;
        }

        inflight_done(conn, s, h->status);
        conn_pump(conn);
        return 0;
    case DANGO_FRAME_NOTIFY_ACK:
        if (s->op != TCP_OP_NOTIFY) {
            return DANGO_EPROTO;
        }

        inflight_done(conn, s, h->status);
        conn_pump(conn);
        return 0;
    case DANGO_FRAME_READ_RESP:
        if (s->op != DANGO_TP_OP_READ) {
            return DANGO_EPROTO;
        }

        if (h->status != 0) {
            if (h->length != 0) {
                return DANGO_EPROTO;
            }

            inflight_done(conn, s, h->status);
            conn_pump(conn);
            return 0;
        }

        if (h->length != s->length) {
            dango_error("tcp ep %s: read reply of %lu bytes for %lu",
                        conn->ep->name, (unsigned long)h->length,
                        (unsigned long)s->length);
            return DANGO_EPROTO;
        }

        conn->rx_dst   = s->local;
        conn->rx_left  = s->length;
        conn->rx_phase = TCP_RX_MEM;
        return 0;
    default:
        dango_error("tcp ep %s: unexpected frame type %u from %s",
                    conn->ep->name, h->type, conn->peer_addr);
        return DANGO_EPROTO;
    }
}

/* ---------- endpoint ops ---------- */

static void ep_free(tcp_ep_t *ep)
{
    for (unsigned i = 0; i < ep->num_addrs; i++) {
        dango_free(ep->addrs[i]);
    }

    dango_free(ep->addrs);
    dango_free(ep->conns);
    dango_free(ep->name);
    dango_free(ep);
}

int dango__tcp_ep_create(dango_tp_iface_t      *tp_iface,
                         const dango_tp_peer_t *peer, dango_tp_ep_t **ep_p)
{
    tcp_iface_t *iface = (tcp_iface_t *)tp_iface;
    json_t      *root  = NULL, *eps;
    json_error_t jerr;
    tcp_ep_t    *ep;
    unsigned     base;
    int          rc = DANGO_ENOTSUP;

    if ((peer->desc_json == NULL) || (peer->name == NULL)) {
        return DANGO_ENOTSUP;
    }

    root = json_loads(peer->desc_json, 0, &jerr);
    eps  = json_object_get(
         json_object_get(json_object_get(root, "transports"), "tcp"),
         "endpoints");
    if (!json_is_array(eps) || (json_array_size(eps) == 0)) {
        json_decref(root);
        return DANGO_ENOTSUP;
    }

    ep = dango_calloc(1, sizeof(*ep), "tcp_ep");
    if (ep == NULL) {
        json_decref(root);
        return DANGO_ENOMEM;
    }

    ep->iface       = iface;
    ep->instance_id = peer->instance_id;
    ep->name        = dango_strdup(peer->name, "tcp_ep_name");
    ep->addrs =
        dango_calloc(json_array_size(eps), sizeof(char *), "tcp_ep_addrs");
    ep->conns = dango_calloc(iface->cfg.conns_per_peer, sizeof(tcp_conn_t *),
                             "tcp_ep_conns");
    if ((ep->name == NULL) || (ep->addrs == NULL) || (ep->conns == NULL)) {
        rc = DANGO_ENOMEM;
        goto err;
    }

    for (size_t i = 0; i < json_array_size(eps); i++) {
        const char *a = json_string_value(json_array_get(eps, i));

        if ((a == NULL) || (strlen(a) >= 64)) {
            continue;
        }

        ep->addrs[ep->num_addrs] = dango_strdup(a, "tcp_ep_addr");
        if (ep->addrs[ep->num_addrs] == NULL) {
            rc = DANGO_ENOMEM;
            goto err;
        }

        ep->num_addrs++;
    }

    if (ep->num_addrs == 0) {
        rc = DANGO_ENOTSUP;
        goto err;
    }

    base = (unsigned)(dango_hash64(peer->name, strlen(peer->name)) %
                      iface->num_loops);
    for (unsigned i = 0; i < iface->cfg.conns_per_peer; i++) {
        tcp_conn_t *c = dango_malloc(sizeof(*c), "tcp_conn");

        if ((c == NULL) ||
            (dango__tcp_conn_init(c, iface, (base + i) % iface->num_loops) !=
             0)) {
            dango_free(c);
            rc = DANGO_ENOMEM;
            goto err;
        }

        c->ep                      = ep;
        c->state                   = TCP_CONN_IDLE;
        c->kick.cb                 = conn_kick_task;
        ep->conns[ep->num_conns++] = c;
    }

    json_decref(root);
    *ep_p = (dango_tp_ep_t *)ep;
    return 0;

err:
    for (unsigned i = 0; i < ep->num_conns; i++) {
        dango_free(ep->conns[i]->rx_buf);
        dango_free(ep->conns[i]);
    }

    json_decref(root);
    ep_free(ep);
    return rc;
}

static void ep_barrier(void *arg)
{
    (void)arg;
}

static void conn_destroy(void *arg)
{
    tcp_conn_t *conn = arg;

    dango__tcp_client_fail(conn, DANGO_ECANCELED);
    if (conn->in_loop_list) {
        dango_list_del(&conn->list);
    }

    dango_free(conn->rx_buf);
    dango_free(conn);
}

void dango__tcp_ep_destroy(dango_tp_ep_t *tp_ep)
{
    tcp_ep_t    *ep = (tcp_ep_t *)tp_ep;
    tcp_iface_t *iface;
    unsigned     n;

    if (ep == NULL) {
        return;
    }

    /*
     * Two phases: first make failing connections stop re-posting to their
     * siblings (num_conns == 0 means closing) and let every loop finish what
     * it is doing, then free each connection on its own loop.
     */
    iface = ep->iface;
    n     = ep->num_conns;
    __atomic_store_n(&ep->num_conns, 0, __ATOMIC_RELEASE);
    for (unsigned i = 0; i < iface->num_loops; i++) {
        dango_loop_run_sync(iface->loops[i], ep_barrier, NULL);
    }

    for (unsigned i = 0; i < n; i++) {
        dango_loop_run_sync(ep->conns[i]->loop, conn_destroy, ep->conns[i]);
    }

    ep_free(ep);
}

int dango__tcp_post(dango_tp_ep_t *tp_ep, dango_tp_slice_t *slice)
{
    tcp_ep_t   *ep = (tcp_ep_t *)tp_ep;
    tcp_conn_t *conn;

    if ((slice->length == 0) || (slice->length > DANGO_FRAME_DATA_MAX)) {
        return DANGO_EINVAL;
    }

    conn = ep_choose(ep);
    if (conn == NULL) {
        return DANGO_ECANCELED;
    }

    conn_push(conn, slice);
    return 0;
}

int dango__tcp_notify(dango_tp_ep_t *tp_ep, const void *msg, size_t len,
                      dango_tp_slice_t *done)
{
    tcp_ep_t           *ep = (tcp_ep_t *)tp_ep;
    Dango__Ctrl__Notify n  = DANGO__CTRL__NOTIFY__INIT;
    tcp_conn_t         *conn;
    size_t              plen;
    uint8_t            *buf;

    n.from         = ep->iface->segment_name;
    n.message.data = (uint8_t *)msg;
    n.message.len  = len;
    plen           = dango__ctrl__notify__get_packed_size(&n);
    if (plen > DANGO_FRAME_CTRL_MAX) {
        return DANGO_EMSGSIZE;
    }

    buf = dango_malloc(plen, "tcp_notify");
    if (buf == NULL) {
        return DANGO_ENOMEM;
    }

    dango__ctrl__notify__pack(&n, buf);
    conn = ep_choose(ep);
    if (conn == NULL) {
        dango_free(buf);
        return DANGO_ECANCELED;
    }

    done->op               = TCP_OP_NOTIFY;
    done->length           = 0;
    done->remote           = plen;
    SLICE_NOTIFY_BUF(done) = buf;
    conn_push(conn, done);
    return 0;
}

/* ---------- descriptor fetch (P2P handshake mode) ---------- */

int dango__tcp_desc_fetch(dango_tp_iface_t *tp_iface, const char *addr,
                          uint64_t timeout_ns, char **json_p)
{
    tcp_iface_t            *iface    = (tcp_iface_t *)tp_iface;
    uint64_t                deadline = dango_time_ns() + timeout_ns;
    Dango__Ctrl__Hello      hello    = DANGO__CTRL__HELLO__INIT;
    Dango__Ctrl__Auth       auth     = DANGO__CTRL__AUTH__INIT;
    Dango__Ctrl__HelloAck  *ack      = NULL;
    Dango__Ctrl__DescReply *reply    = NULL;
    uint8_t                 nonce[DANGO_AUTH_NONCE_LEN];
    uint8_t                 proof[DANGO_AUTH_PROOF_LEN];
    uint8_t                 buf[512];
    dango_frame_t           hdr;
    void                   *payload = NULL;
    size_t                  len;
    int                     fd, rc;

    fd = dango_sock_connect(addr, timeout_ns, 1);
    if (fd < 0) {
        return (fd == DANGO_EINVAL) ? DANGO_EINVAL : DANGO_EPEER_GONE;
    }

    dango_random_bytes(nonce, sizeof(nonce));
    hello.version      = DANGO_FRAME_VERSION;
    hello.segment_name = iface->segment_name;
    hello.instance_id  = iface->instance_id;
    hello.nonce.data   = nonce;
    hello.nonce.len    = sizeof(nonce);
    hello.target_name  = "";
    len                = dango__ctrl__hello__pack(&hello, buf);
    dango_frame_init(&hdr, DANGO_FRAME_HELLO, 0, 0, len, 0);
    rc = dango_sock_send_frame(fd, &hdr, buf, len, deadline);
    if (rc == 0) {
        rc = dango_sock_recv_frame(fd, &hdr, &payload, deadline);
    }

    if ((rc == 0) && (hdr.type != DANGO_FRAME_HELLO_ACK)) {
        rc = DANGO_EPROTO;
    }

    if (rc == 0) {
        int send_auth = 0;

        ack = dango__ctrl__hello_ack__unpack(NULL, hdr.length, payload);
        rc  = (ack == NULL) ? DANGO_EPROTO
                            : dango_auth_check_hello_ack(
                                  iface->token, nonce, ack->nonce.data,
                                  ack->nonce.len, ack->status, ack->proof.data,
                                  ack->proof.len, proof, &send_auth);
        if ((rc == 0) && send_auth) {
            auth.proof.data = proof;
            auth.proof.len  = sizeof(proof);
            len             = dango__ctrl__auth__pack(&auth, buf);
            dango_frame_init(&hdr, DANGO_FRAME_AUTH, 0, 0, len, 0);
            rc = dango_sock_send_frame(fd, &hdr, buf, len, deadline);
        }
    }

    dango_free(payload);
    payload = NULL;
    if (rc == 0) {
        dango_frame_init(&hdr, DANGO_FRAME_DESC_REQ, 1, 0, 0, 0);
        rc = dango_sock_send_frame(fd, &hdr, NULL, 0, deadline);
    }

    if (rc == 0) {
        rc = dango_sock_recv_frame(fd, &hdr, &payload, deadline);
    }

    if ((rc == 0) && (hdr.type != DANGO_FRAME_DESC_RESP)) {
        rc = DANGO_EPROTO;
    }

    if (rc == 0) {
        reply = dango__ctrl__desc_reply__unpack(NULL, hdr.length, payload);
        if (reply == NULL) {
            rc = DANGO_EPROTO;
        } else if (reply->status != 0) {
            rc = reply->status > 0 ? DANGO_EPROTO : reply->status;
        } else {
            *json_p = dango_strdup(reply->json, "tcp_desc_json");
            rc      = (*json_p != NULL) ? 0 : DANGO_ENOMEM;
        }
    }

    dango__ctrl__desc_reply__free_unpacked(reply, NULL);
    dango__ctrl__hello_ack__free_unpacked(ack, NULL);
    dango_free(payload);
    close(fd);
    if ((rc == DANGO_ECONNRESET) || (rc == DANGO_ETIMEDOUT)) {
        rc = DANGO_EPEER_GONE;
    }

    return rc;
}
