/*
 * RPC server: listener, connections and dispatch on the owner's loop.
 *
 * DESIGN
 * - Everything the server owns (listener, connections, calls, the dirty
 *   list) is touched only on the owner loop's thread, so nothing here takes
 *   a lock. The one exception is the reply inbox (below).
 * - A request is dispatched to the handler straight from the receive buffer
 *   (see rpc.c) with a call object from a pool: no allocation and no copy of
 *   a small request. Frames of one connection are dispatched in order.
 * - Replies: a call carries its reply frame (header plus payload, small
 *   payloads inline), so answering is one copy and no allocation. A reply
 *   made on the loop thread is queued on its connection at once; one made on
 *   another thread is pushed onto a lock-free LIFO inbox, and the first push
 *   after a drain posts the server's flush task, so a burst of deferred
 *   replies costs one wake-up. Connections that got replies are put on a
 *   dirty list and written once, with one sendmsg() for all their frames, at
 *   the end of the I/O callback or flush task: a pipelined burst of requests
 *   is read with one recv() and answered with one sendmsg().
 * - Lifetimes: a call holds its connection, and the server, alive. Closing
 *   a connection drops its queued replies; calls the handler still holds
 *   keep the connection's memory until they are answered, and their replies
 *   are then dropped. Destroying the server closes everything, and the
 *   server's memory goes with the last call and the last pending flush task
 *   (a posted task cannot be withdrawn from the loop). A thread answering
 *   from elsewhere still touches the server just after its call became
 *   visible to the loop (to post the flush task); it is counted in
 *   `submitting`, and the final free waits those few instructions out.
 * - Limits: at most max_pending calls per connection between dispatch and
 *   the end of their reply's write (and at most RPC_CONN_TX_MAX reply bytes
 *   queued); beyond that the connection is not read until replies drain, so
 *   TCP flow control holds the client back. Before authentication a frame
 *   may carry at most RPC_HANDSHAKE_MAX bytes, and the handshake must finish
 *   within handshake_timeout_ns. A connection stuck mid-frame, or whose
 *   replies the peer does not read, for io_timeout_ns is closed.
 * - Anything malformed closes the connection with one rate-limited error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/hash.h"
#include "common/mpool.h"
#include "common/mpsc.h"
#include "common/time.h"
#include "dango_ctrl.pb-c.h"
#include "net/auth.h"
#include "net/rpc_chan.h"
#include "net/rpc_int.h"
#include "net/sock.h"

#define RPC_CALL_INLINE 208         /* reply bytes stored in the call */
#define RPC_CONN_TX_MAX (64u << 20) /* queued reply bytes per connection */
#define RPC_ACCEPT_MAX  64          /* accepts per listener callback */
#define RPC_CHAN_ROUNDS 8 /* lane scans per channel callback, then yield */

typedef enum sconn_state {
    SCONN_HELLO, /* waiting for Hello */
    SCONN_AUTH,  /* waiting for the client's token proof */
    SCONN_READY
} sconn_state_t;

typedef struct rpc_sconn rpc_sconn_t;

/* A local channel (see rpc_chan.h), owned by its Unix connection. */
typedef struct rpc_chan {
    rpc_sconn_t    *conn;
    rpc_chan_hdr_t *hdr;
    uint64_t        size;
    int             efd; /* kicks from the client */
    uint32_t        lanes;
    uint32_t        req_cap;
    uint32_t        rep_cap;
} rpc_chan_t;

struct rpc_sconn {
    dango_rpc_server_t *srv;
    dango_list_link_t   link;       /* in srv->conns while open */
    dango_list_link_t   dirty_link; /* in srv->dirty */
    int                 in_dirty;
    int                 resume; /* paused, and replies drained: read again */
    int                 fd;
    sconn_state_t       state;
    int                 closed;
    int                 paused; /* at a limit: not reading */
    unsigned            events;
    unsigned            live_calls; /* dispatched, reply not yet written */
    uint64_t            tx_bytes;   /* reply bytes queued */
    uint64_t            state_since;
    uint64_t            tx_progress; /* last write, or queue became busy */
    rpc_rx_t            rx;
    dango_list_link_t   txq;
    uint8_t             nonce[DANGO_AUTH_NONCE_LEN];
    uint8_t             peer_nonce[DANGO_AUTH_NONCE_LEN];
    char                peer_addr[DANGO_ADDR_STR_MAX];
    int                 local; /* accepted on the Unix socket */
    rpc_chan_t         *chan;
    int                 chan_asked; /* ChanOpen seen: never twice */
    dango_list_link_t   chan_done;  /* lane calls answered, not yet written */
};

struct dango_rpc_call {
    rpc_tx_t          tx; /* the reply frame; first member */
    rpc_sconn_t      *conn;
    dango_mpsc_link_t link; /* in srv->inbox */
    void             *owned;
    int               lane; /* of conn->chan; -1: over the socket */
    char              inline_buf[RPC_CALL_INLINE];
};

/* A control frame the server sends (HelloAck): payload follows. */
typedef struct rpc_ctl_tx {
    rpc_tx_t tx;
    uint8_t  data[];
} rpc_ctl_tx_t;

struct dango_rpc_server {
    dango_loop_t        *loop;
    dango_rpc_handler_cb handler;
    void                *arg;
    char                *token;
    unsigned             max_conns;
    unsigned             max_pending;
    uint64_t             handshake_ns;
    uint64_t             io_ns;
    uint64_t             instance_id;
    int                  listen_fd;
    int                  local_fd; /* Unix socket of the local channel */
    char                 local_name[40];
    unsigned             chan_lanes;    /* 0: no local channel */
    char                *chan_buf;      /* a request copied out of a lane */
    int                  listen_paused; /* out of descriptors: see accept */
    int                  timer_id;
    char                 addr[DANGO_ADDR_STR_MAX];
    dango_list_link_t    conns;
    unsigned             num_conns;
    dango_list_link_t    dirty;
    int                  in_callback; /* a flush of the dirty list follows */
    unsigned             live_calls;
    int                  destroyed;
    dango_mpsc_t         inbox;         /* deferred replies, any thread */
    int                  flush_pending; /* atomic: flush_task is posted */
    unsigned             submitting;    /* atomic: threads in call_submit() */
    dango_loop_task_t    flush_task;
    dango_mpool_t        call_pool;
    uint64_t             epoch; /* atomic: stamped on every reply */
};

static void sconn_close(rpc_sconn_t *conn);
static int  chan_fits(const dango_rpc_call_t *call);
static void chan_flush(rpc_sconn_t *conn);
static int  chan_serve(rpc_sconn_t *conn);
static void chan_close(rpc_sconn_t *conn);

/* ---------- calls ---------- */

static void server_free(dango_rpc_server_t *srv)
{
    dango_free(srv->chan_buf);
    dango_mpool_cleanup(&srv->call_pool);
    dango_free(srv->token);
    dango_free(srv);
}

/*
 * Frees a destroyed server once nothing can reach it any more: no call
 * left, no thread still inside call_submit() (it touches the server after
 * its call became visible to us), no flush task posted.
 */
static void server_maybe_free(dango_rpc_server_t *srv)
{
    if (!srv->destroyed || (srv->live_calls != 0)) {
        return;
    }

    /* A submitter is a few instructions from done: wait it out. */
    while (__atomic_load_n(&srv->submitting, __ATOMIC_ACQUIRE) != 0) {
        sched_yield();
    }

    if (!__atomic_load_n(&srv->flush_pending, __ATOMIC_ACQUIRE)) {
        server_free(srv);
    }
}

static void sconn_dirty(rpc_sconn_t *conn)
{
    if (!conn->in_dirty) {
        dango_list_add_tail(&conn->srv->dirty, &conn->dirty_link);
        conn->in_dirty = 1;
    }
}

static void sconn_free(rpc_sconn_t *conn)
{
    dango__rpc_rx_cleanup(&conn->rx);
    dango_free(conn);
}

static void call_free(dango_rpc_call_t *call)
{
    rpc_sconn_t        *conn = call->conn;
    dango_rpc_server_t *srv  = conn->srv;

    dango_free(call->owned);
    dango_mpool_put(&srv->call_pool, call);
    srv->live_calls--;
    conn->live_calls--;
    if (conn->closed) {
        if (conn->live_calls == 0) {
            sconn_free(conn);
        }
    } else if (conn->paused && !conn->resume &&
               (conn->live_calls < srv->max_pending) &&
               (conn->tx_bytes < RPC_CONN_TX_MAX)) {
        conn->resume = 1; /* read again after this flush */
        sconn_dirty(conn);
    }
}

static void sconn_tx_done(void *arg, rpc_tx_t *tx)
{
    rpc_sconn_t *conn = arg;

    if (tx->hdr.type == DANGO_FRAME_RPC_RESP) {
        conn->tx_bytes -= tx->data_len;
        call_free((dango_rpc_call_t *)tx);
    } else {
        dango_free(tx);
    }
}

/* Queues the reply of @call on its connection (loop thread). */
static void call_commit(dango_rpc_call_t *call)
{
    rpc_sconn_t *conn = call->conn;

    if (conn->closed) {
        call_free(call); /* the client is gone: drop the reply */
        return;
    }

    if ((call->lane >= 0) && chan_fits(call)) {
        /* Written into the lane with the socket's replies, once the
         * callback is over (not while the handler still runs). */
        dango_list_add_tail(&conn->chan_done, &call->tx.link);
        sconn_dirty(conn);
        return;
    }

    if (dango_list_is_empty(&conn->txq)) {
        conn->tx_progress = dango_time_ns();
    }

    conn->tx_bytes += call->tx.data_len;
    dango_list_add_tail(&conn->txq, &call->tx.link);
    sconn_dirty(conn);
}

/* ---------- connections ---------- */

static void sconn_set_events(rpc_sconn_t *conn)
{
    unsigned ev = conn->paused ? 0 : DANGO_LOOP_READ;

    if (!dango_list_is_empty(&conn->txq)) {
        ev |= DANGO_LOOP_WRITE;
    }

    if (ev != conn->events) {
        dango_loop_fd_mod(conn->srv->loop, conn->fd, ev);
        conn->events = ev;
    }
}

static void sconn_close(rpc_sconn_t *conn)
{
    dango_rpc_server_t *srv = conn->srv;

    if (conn->closed) {
        return;
    }

    conn->closed = 1;
    dango_list_del(&conn->link);
    srv->num_conns--;
    if (conn->in_dirty) {
        dango_list_del(&conn->dirty_link);
        conn->in_dirty = 0;
    }

    dango_loop_fd_del(srv->loop, conn->fd);
    close(conn->fd);
    conn->fd = -1;
    dango__rpc_rx_reset(&conn->rx);
    conn->live_calls++; /* keeps @conn while its replies are dropped */
    chan_close(conn);
    dango__rpc_tx_drop(&conn->txq, sconn_tx_done, conn);
    if (--conn->live_calls == 0) {
        sconn_free(conn);
    }
}

/* Writes what is queued. Returns 0 or an error (the caller closes). */
static int sconn_flush(rpc_sconn_t *conn)
{
    int rc, wrote;

    if (dango_list_is_empty(&conn->txq)) {
        return 0;
    }

    rc = dango__rpc_tx_flush(conn->fd, &conn->txq, sconn_tx_done, conn, &wrote);
    if (rc < 0) {
        if ((rc != DANGO_ECONNRESET) && (rc != DANGO__ERR(EPIPE))) {
            dango_debug("rpc conn %s: write failed: %s", conn->peer_addr,
                        dango_strerror(rc));
        }

        return rc;
    }

    if (wrote) {
        conn->tx_progress = dango_time_ns();
    }

    sconn_set_events(conn);
    return 0;
}

static int sconn_send_ctl(rpc_sconn_t *conn, uint8_t type,
                          const ProtobufCMessage *msg)
{
    size_t        len = protobuf_c_message_get_packed_size(msg);
    rpc_ctl_tx_t *ctl = dango_malloc(sizeof(*ctl) + len, "rpc_ctl_tx");

    if (ctl == NULL) {
        return DANGO_ENOMEM;
    }

    memset(&ctl->tx, 0, sizeof(ctl->tx));
    protobuf_c_message_pack(msg, ctl->data);
    dango_frame_init(&ctl->tx.hdr, type, 0, 0, len, 0);
    ctl->tx.data     = (const char *)ctl->data;
    ctl->tx.data_len = len;
    if (dango_list_is_empty(&conn->txq)) {
        conn->tx_progress = dango_time_ns();
    }

    dango_list_add_tail(&conn->txq, &ctl->tx.link);
    sconn_dirty(conn);
    return 0;
}

static int sconn_hello(rpc_sconn_t *conn, const rpc_frame_t *f)
{
    dango_rpc_server_t   *srv = conn->srv;
    Dango__Ctrl__Hello   *hello;
    Dango__Ctrl__HelloAck ack = DANGO__CTRL__HELLO_ACK__INIT;
    uint8_t               proof[DANGO_AUTH_PROOF_LEN];
    int32_t               status = 0;
    int                   rc;

    hello =
        dango__ctrl__hello__unpack(NULL, f->len, (const uint8_t *)f->payload);
    if ((hello == NULL) || (hello->nonce.len != DANGO_AUTH_NONCE_LEN)) {
        dango__ctrl__hello__free_unpacked(hello, NULL);
        rpc_peer_error("rpc conn %s: malformed hello: closing",
                       conn->peer_addr);
        return DANGO_EPROTO;
    }

    memcpy(conn->peer_nonce, hello->nonce.data, DANGO_AUTH_NONCE_LEN);
    if (hello->version != DANGO_FRAME_VERSION) {
        status = DANGO_EPROTO_VERSION;
    }

    dango_debug("rpc conn %s: hello from %s", conn->peer_addr,
                hello->segment_name);
    dango__ctrl__hello__free_unpacked(hello, NULL);

    dango_random_bytes(conn->nonce, sizeof(conn->nonce));
    ack.version      = DANGO_FRAME_VERSION;
    ack.segment_name = "";
    ack.instance_id  = srv->instance_id;
    ack.nonce.data   = conn->nonce;
    ack.nonce.len    = sizeof(conn->nonce);
    ack.status       = status;
    ack.local_addr   = srv->local_name; /* "" without a local channel */
    if ((srv->token != NULL) &&
        (dango_auth_proof(srv->token, DANGO_AUTH_ROLE_SERVER, conn->peer_nonce,
                          conn->nonce, proof) == 0)) {
        ack.proof.data = proof;
        ack.proof.len  = sizeof(proof);
    }

    rc = sconn_send_ctl(conn, DANGO_FRAME_HELLO_ACK, &ack.base);
    if ((rc == 0) && (status == 0)) {
        /* A refused client closes; the handshake timer covers one that
         * does not. */
        conn->state       = (srv->token != NULL) ? SCONN_AUTH : SCONN_READY;
        conn->state_since = dango_time_ns();
    }

    return rc;
}

static int sconn_auth(rpc_sconn_t *conn, const rpc_frame_t *f)
{
    Dango__Ctrl__Auth *auth;
    int                rc = DANGO_EAUTH;

    auth = dango__ctrl__auth__unpack(NULL, f->len, (const uint8_t *)f->payload);
    if (auth != NULL) {
        rc = dango_auth_verify(conn->srv->token, DANGO_AUTH_ROLE_CLIENT,
                               conn->peer_nonce, conn->nonce, auth->proof.data,
                               auth->proof.len);
    }

    dango__ctrl__auth__free_unpacked(auth, NULL);
    if (rc != 0) {
        rpc_peer_error("rpc conn %s: peer failed cluster token "
                       "authentication: closing",
                       conn->peer_addr);
        return DANGO_EAUTH;
    }

    conn->state = SCONN_READY;
    return 0;
}

/* Dispatches request @id of @method, from lane @lane (-1: the socket). */
static int sconn_request(rpc_sconn_t *conn, uint64_t id, uint64_t method,
                         const char *payload, uint64_t len, int lane)
{
    dango_rpc_server_t *srv = conn->srv;
    dango_rpc_call_t   *call;

    if (method > UINT32_MAX) {
        rpc_peer_error("rpc conn %s: method id %lu out of range: closing",
                       conn->peer_addr, (unsigned long)method);
        return DANGO_EPROTO;
    }

    call = dango_mpool_get(&srv->call_pool);
    if (call == NULL) {
        dango_error("rpc conn %s: out of memory for a call: closing",
                    conn->peer_addr);
        return DANGO_ENOMEM;
    }

    memset(&call->tx, 0, sizeof(call->tx));
    dango_frame_init(&call->tx.hdr, DANGO_FRAME_RPC_RESP, id,
                     __atomic_load_n(&srv->epoch, __ATOMIC_ACQUIRE), 0, 0);
    call->conn  = conn;
    call->owned = NULL;
    call->lane  = lane;
    conn->live_calls++;
    srv->live_calls++;
    srv->handler(srv->arg, call, (uint32_t)method, payload, (size_t)len);
    if ((conn->live_calls >= srv->max_pending) ||
        (conn->tx_bytes >= RPC_CONN_TX_MAX)) {
        conn->paused = 1; /* resumed by call_free() */
        sconn_set_events(conn);
    }

    return 0;
}

/* ---------- local channel ---------- */

static void server_flush_dirty(dango_rpc_server_t *srv);

static void chan_close(rpc_sconn_t *conn)
{
    rpc_chan_t *ch = conn->chan;

    if (ch == NULL) {
        return;
    }

    /* Replies not yet written are dropped; calls still out are answered
     * into nothing (call_commit() checks that the connection closed). */
    while (!dango_list_is_empty(&conn->chan_done)) {
        dango_rpc_call_t *call =
            dango_list_head_elem(&conn->chan_done, dango_rpc_call_t, tx.link);

        dango_list_del(&call->tx.link);
        call_free(call);
    }

    dango_loop_fd_del(conn->srv->loop, ch->efd);
    close(ch->efd);
    munmap(ch->hdr, ch->size);
    dango_free(ch);
    conn->chan = NULL;
}

/* Whether the reply of lane @call fits its lane (else it goes over the
 * socket like any reply, the client's thread reads it there, and the lane
 * stays BUSY). */
static int chan_fits(const dango_rpc_call_t *call)
{
    const rpc_chan_t *ch = call->conn->chan;

    return (ch != NULL) &&
           (sizeof(call->tx.hdr) + call->tx.data_len <= ch->rep_cap);
}

/* Writes the answered lane calls into their lanes and frees them. */
static void chan_flush(rpc_sconn_t *conn)
{
    rpc_chan_t *ch = conn->chan;

    while (!dango_list_is_empty(&conn->chan_done)) {
        dango_rpc_call_t *call =
            dango_list_head_elem(&conn->chan_done, dango_rpc_call_t, tx.link);
        uint64_t         len = sizeof(call->tx.hdr) + call->tx.data_len;
        rpc_chan_lane_t *ln  = &ch->hdr->lane[call->lane];
        char *dst = rpc_chan_rep(ch->hdr, (uint32_t)call->lane, ch->req_cap,
                                 ch->rep_cap);

        dango_list_del(&call->tx.link);
        memcpy(dst, &call->tx.hdr, sizeof(call->tx.hdr));
        if (call->tx.data_len > 0) {
            memcpy(dst + sizeof(call->tx.hdr), call->tx.data,
                   call->tx.data_len);
        }

        __atomic_store_n(&ln->rep_len, (uint32_t)len, __ATOMIC_RELAXED);
        __atomic_store_n(&ln->state, RPC_LANE_DONE, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&ln->cli_wait, __ATOMIC_SEQ_CST)) {
            rpc_chan_futex_wake(&ln->state);
        }

        call_free(call);
    }
}

/* Takes the request waiting in lane @i and dispatches it. */
static int chan_take(rpc_sconn_t *conn, uint32_t i)
{
    rpc_chan_t      *ch  = conn->chan;
    rpc_chan_lane_t *ln  = &ch->hdr->lane[i];
    char            *buf = conn->srv->chan_buf;
    uint32_t         len = __atomic_load_n(&ln->req_len, __ATOMIC_RELAXED);
    dango_frame_t    hdr;

    if ((len < sizeof(hdr)) || (len > ch->req_cap)) {
        rpc_peer_error("rpc conn %s: lane %u: request of %u bytes: closing",
                       conn->peer_addr, i, len);
        return DANGO_EPROTO;
    }

    /* Read once: the client may write the area again at any time. */
    memcpy(buf, rpc_chan_req(ch->hdr, i, ch->req_cap, ch->rep_cap), len);
    if (!__atomic_compare_exchange_n(&ln->state, &(uint32_t){RPC_LANE_REQ},
                                     RPC_LANE_BUSY, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_RELAXED)) {
        return 0; /* the client's side marked it meanwhile (a dead channel) */
    }

    memcpy(&hdr, buf, sizeof(hdr));
    if ((dango_frame_check(&hdr) != 0) || (hdr.type != DANGO_FRAME_RPC_REQ) ||
        (hdr.length != len - sizeof(hdr))) {
        rpc_peer_error("rpc conn %s: lane %u: bad request frame (type %u "
                       "length %lu in %u bytes): closing",
                       conn->peer_addr, i, hdr.type, (unsigned long)hdr.length,
                       len);
        return DANGO_EPROTO;
    }

    return sconn_request(conn, hdr.id, hdr.addr, buf + sizeof(hdr), hdr.length,
                         (int)i);
}

/* Dispatches every waiting request; returns how many, or an error. */
static int chan_scan(rpc_sconn_t *conn)
{
    rpc_chan_t *ch = conn->chan;
    int         n  = 0;

    for (uint32_t i = 0; (i < ch->lanes) && !conn->paused; i++) {
        int rc;

        if (__atomic_load_n(&ch->hdr->lane[i].state, __ATOMIC_ACQUIRE) !=
            RPC_LANE_REQ) {
            continue;
        }

        rc = chan_take(conn, i);
        if (rc != 0) {
            return rc;
        }

        n++;
    }

    return n;
}

static int chan_pending(const rpc_chan_t *ch)
{
    for (uint32_t i = 0; i < ch->lanes; i++) {
        if (__atomic_load_n(&ch->hdr->lane[i].state, __ATOMIC_SEQ_CST) ==
            RPC_LANE_REQ) {
            return 1;
        }
    }

    return 0;
}

/*
 * Serves the channel until no request waits, then says the server sleeps
 * (and looks once more, see rpc_chan.h). A paused connection (max_pending)
 * is served again when it resumes; a busy channel yields to the rest of
 * the loop after RPC_CHAN_ROUNDS scans and kicks itself. Returns 0, or an
 * error when it closed the connection (which may be gone then).
 */
static int chan_serve(rpc_sconn_t *conn)
{
    rpc_chan_t *ch  = conn->chan;
    uint64_t    one = 1;

    for (int round = 0; round < RPC_CHAN_ROUNDS; round++) {
        int n;

        __atomic_store_n(&ch->hdr->srv_sleep, 0, __ATOMIC_RELAXED);
        n = chan_scan(conn);
        if (n < 0) {
            sconn_close(conn);
            return n;
        }

        if (conn->paused) {
            return 0;
        }

        if (n == 0) {
            __atomic_store_n(&ch->hdr->srv_sleep, 1, __ATOMIC_SEQ_CST);
            if (!chan_pending(ch)) {
                return 0;
            }
        }
    }

    if (write(ch->efd, &one, sizeof(one)) < 0) {
        /* The counter is full of kicks already: it stays readable. */
    }

    return 0;
}

static void chan_io_cb(dango_loop_t *loop, int fd, unsigned events, void *arg)
{
    rpc_sconn_t        *conn = arg;
    dango_rpc_server_t *srv  = conn->srv; /* @conn may go in chan_serve() */
    uint64_t            v;

    (void)loop;
    (void)events;
    srv->in_callback = 1;
    if (read(fd, &v, sizeof(v)) < 0) {
        /* EAGAIN: a kick already taken by an earlier read */
    }

    if (!conn->paused) {
        chan_serve(conn);
    }

    server_flush_dirty(srv);
}

/* Creates the channel's memory and eventfd; 0 or an error. */
static int chan_create(rpc_sconn_t *conn, uint32_t lanes, int *mfd_p)
{
    dango_rpc_server_t *srv = conn->srv;
    rpc_chan_t         *ch;
    int                 rc;

    ch = dango_calloc(1, sizeof(*ch), "rpc_chan");
    if (ch == NULL) {
        return DANGO_ENOMEM;
    }

    ch->conn    = conn;
    ch->lanes   = lanes;
    ch->req_cap = RPC_CHAN_REQ_CAP;
    ch->rep_cap = RPC_CHAN_REP_CAP;
    ch->size    = rpc_chan_size(lanes, ch->req_cap, ch->rep_cap);
    ch->efd     = -1;
    /* Sealed at its size: a client that could shrink it would fault the
     * server's next touch of the mapping (SIGBUS). */
    *mfd_p = memfd_create("dango-rpc-chan", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if ((*mfd_p < 0) || (ftruncate(*mfd_p, (off_t)ch->size) != 0) ||
        (fcntl(*mfd_p, F_ADD_SEALS,
               F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)) {
        rc = dango_err_from_errno(errno);
        goto err;
    }

    ch->hdr =
        mmap(NULL, ch->size, PROT_READ | PROT_WRITE, MAP_SHARED, *mfd_p, 0);
    if (ch->hdr == MAP_FAILED) {
        ch->hdr = NULL;
        rc      = dango_err_from_errno(errno);
        goto err;
    }

    ch->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ch->efd < 0) {
        rc = dango_err_from_errno(errno);
        goto err;
    }

    ch->hdr->magic     = RPC_CHAN_MAGIC;
    ch->hdr->version   = RPC_CHAN_VERSION;
    ch->hdr->lanes     = lanes;
    ch->hdr->req_cap   = ch->req_cap;
    ch->hdr->rep_cap   = ch->rep_cap;
    ch->hdr->srv_sleep = 1;
    rc = dango_loop_fd_add(srv->loop, ch->efd, DANGO_LOOP_READ, chan_io_cb,
                           conn);
    if (rc != 0) {
        goto err;
    }

    conn->chan = ch;
    return 0;

err:
    if (ch->efd >= 0) {
        close(ch->efd);
    }

    if (ch->hdr != NULL) {
        munmap(ch->hdr, ch->size);
    }

    if (*mfd_p >= 0) {
        close(*mfd_p);
        *mfd_p = -1;
    }

    dango_free(ch);
    return rc;
}

/*
 * ChanOpen on a Unix connection: creates the channel and answers ChanAck
 * with its memfd and eventfd, or with an error status (the client then
 * keeps to its sockets). Asking twice, or over the network, is a protocol
 * error.
 */
static int sconn_chan_open(rpc_sconn_t *conn, const rpc_frame_t *f)
{
    dango_rpc_server_t    *srv = conn->srv;
    Dango__Ctrl__ChanOpen *req;
    Dango__Ctrl__ChanAck   ack = DANGO__CTRL__CHAN_ACK__INIT;
    uint8_t                buf[64];
    dango_frame_t          hdr;
    uint32_t               lanes;
    int                    fds[2] = {-1, -1};
    int                    rc;

    if (!conn->local || conn->chan_asked || (srv->chan_lanes == 0)) {
        rpc_peer_error("rpc conn %s: channel asked for %s: closing",
                       conn->peer_addr,
                       !conn->local ? "over the network" : "twice");
        return DANGO_EPROTO;
    }

    req = dango__ctrl__chan_open__unpack(NULL, f->len,
                                         (const uint8_t *)f->payload);
    if (req == NULL) {
        rpc_peer_error("rpc conn %s: malformed channel request: closing",
                       conn->peer_addr);
        return DANGO_EPROTO;
    }

    conn->chan_asked = 1;
    lanes            = DANGO_MIN(DANGO_MAX(req->lanes, 1u), srv->chan_lanes);
    dango__ctrl__chan_open__free_unpacked(req, NULL);
    if (!dango_list_is_empty(&conn->txq)) {
        rpc_peer_error("rpc conn %s: channel asked for before the handshake "
                       "was read: closing",
                       conn->peer_addr);
        return DANGO_EPROTO;
    }

    rc = chan_create(conn, lanes, &fds[0]);
    if (rc == 0) {
        fds[1]      = conn->chan->efd;
        ack.lanes   = lanes;
        ack.req_cap = conn->chan->req_cap;
        ack.rep_cap = conn->chan->rep_cap;
        ack.size    = conn->chan->size;
    } else {
        dango_warn("rpc server %s: no local channel for %s: %s", srv->addr,
                   conn->peer_addr, dango_strerror(rc));
        ack.status = rc;
    }

    dango_frame_init(&hdr, DANGO_FRAME_CHAN_ACK, 0, 0,
                     protobuf_c_message_pack(&ack.base, buf), 0);
    /* Never waits: a client that does not read its socket loses it. */
    rc = dango_sock_send_frame_fds(conn->fd, &hdr, buf, (size_t)hdr.length, fds,
                                   (rc == 0) ? 2 : 0, dango_time_ns());
    if (fds[0] >= 0) {
        close(fds[0]); /* the mapping stays */
    }

    if (rc != 0) {
        dango_debug("rpc conn %s: channel answer not sent: %s", conn->peer_addr,
                    dango_strerror(rc));
    }

    return rc;
}

static int sconn_frame(rpc_sconn_t *conn, const rpc_frame_t *f)
{
    switch (conn->state) {
    case SCONN_HELLO:
        if (f->hdr.type != DANGO_FRAME_HELLO) {
            rpc_peer_error("rpc conn %s: frame type %u before hello: closing",
                           conn->peer_addr, f->hdr.type);
            return DANGO_EPROTO;
        }

        return sconn_hello(conn, f);
    case SCONN_AUTH:
        if (f->hdr.type != DANGO_FRAME_AUTH) {
            rpc_peer_error("rpc conn %s: frame type %u before the token "
                           "proof: closing",
                           conn->peer_addr, f->hdr.type);
            return DANGO_EAUTH;
        }

        return sconn_auth(conn, f);
    default:
        if (f->hdr.type == DANGO_FRAME_CHAN_OPEN) {
            return sconn_chan_open(conn, f);
        }

        if (f->hdr.type != DANGO_FRAME_RPC_REQ) {
            rpc_peer_error("rpc conn %s: unexpected frame type %u: closing",
                           conn->peer_addr, f->hdr.type);
            return DANGO_EPROTO;
        }

        return sconn_request(conn, f->hdr.id, f->hdr.addr, f->payload, f->len,
                             -1);
    }
}

/*
 * Reads and dispatches frames until the socket is drained, @recvs reads are
 * spent or the connection pauses. Returns 0 or an error (the caller closes).
 */
static int sconn_read(rpc_sconn_t *conn, unsigned recvs)
{
    conn->rx.recvs = recvs;
    while (!conn->paused) {
        rpc_frame_t f     = {0};
        uint64_t    limit = (conn->state == SCONN_READY) ? DANGO_FRAME_RPC_MAX
                                                         : RPC_HANDSHAKE_MAX;
        int         rc    = dango__rpc_rx_next(&conn->rx, conn->fd, limit, &f);

        if (rc == 0) {
            return 0;
        }

        if (rc < 0) {
            if ((rc == DANGO_EPROTO) || (rc == DANGO_EPROTO_VERSION) ||
                (rc == DANGO_EMSGSIZE)) {
                rpc_peer_error("rpc conn %s: bad frame header (magic 0x%x "
                               "version %u type %u length %lu): closing",
                               conn->peer_addr, f.hdr.magic, f.hdr.version,
                               f.hdr.type, (unsigned long)f.hdr.length);
            } else if (rc != DANGO_ECONNRESET) {
                dango_debug("rpc conn %s: read failed: %s", conn->peer_addr,
                            dango_strerror(rc));
            }

            return rc;
        }

        rc = sconn_frame(conn, &f);
        if (rc != 0) {
            return rc;
        }
    }

    return 0;
}

/*
 * Writes every connection that got replies, and reads again those that were
 * paused and have drained. Runs at the end of every server callback.
 */
static void server_flush_dirty(dango_rpc_server_t *srv)
{
    srv->in_callback = 1;
    while (!dango_list_is_empty(&srv->dirty)) {
        rpc_sconn_t *conn =
            dango_list_head_elem(&srv->dirty, rpc_sconn_t, dirty_link);

        dango_list_del(&conn->dirty_link);
        conn->in_dirty = 0;
        if (conn->resume) {
            conn->resume = 0;
            if (conn->paused && (conn->live_calls < srv->max_pending) &&
                (conn->tx_bytes < RPC_CONN_TX_MAX)) {
                conn->paused = 0;
                sconn_set_events(conn);
                /* Frames already staged raise no epoll event: parse them
                 * now, without reading the socket. */
                if (sconn_read(conn, 0) != 0) {
                    sconn_close(conn);
                    continue;
                }

                if ((conn->chan != NULL) && (chan_serve(conn) != 0)) {
                    continue; /* closed */
                }
            }
        }

        if (conn->chan != NULL) {
            chan_flush(conn);
        }

        if (sconn_flush(conn) != 0) {
            sconn_close(conn);
        }
    }

    srv->in_callback = 0;
}

static void sconn_io_cb(dango_loop_t *loop, int fd, unsigned events, void *arg)
{
    rpc_sconn_t        *conn = arg;
    dango_rpc_server_t *srv  = conn->srv;

    srv->in_callback = 1;
    if ((events & DANGO_LOOP_ERROR) && conn->paused) {
        sconn_close(conn); /* hang-up or error: nothing can be delivered */
        goto out;
    }

    if ((events & DANGO_LOOP_READ) && !conn->paused &&
        (sconn_read(conn, RPC_RX_RECVS) != 0)) {
        sconn_close(conn);
        goto out;
    }

    if (events & DANGO_LOOP_WRITE) {
        sconn_dirty(conn);
    }

out:
    server_flush_dirty(srv);
}

/* ---------- deferred replies ---------- */

static void server_take_inbox(dango_rpc_server_t *srv)
{
    dango_mpsc_link_t *l = dango_mpsc_take(&srv->inbox);

    while (l != NULL) {
        dango_rpc_call_t *call = dango_container_of(l, dango_rpc_call_t, link);

        l = l->next; /* read before: committing may free the call */
        call_commit(call);
    }
}

static void server_flush_task(dango_loop_task_t *task)
{
    dango_rpc_server_t *srv =
        dango_container_of(task, dango_rpc_server_t, flush_task);

    /* Cleared before the inbox is taken: a push after the take posts again. */
    __atomic_store_n(&srv->flush_pending, 0, __ATOMIC_SEQ_CST);
    server_take_inbox(srv);
    server_flush_dirty(srv);
    server_maybe_free(srv);
}

static void server_post_flush(dango_rpc_server_t *srv)
{
    if (__atomic_exchange_n(&srv->flush_pending, 1, __ATOMIC_SEQ_CST) == 0) {
        dango_loop_post(srv->loop, &srv->flush_task);
    }
}

/* Hands an answered call to the loop, from whichever thread answers. */
static void call_submit(dango_rpc_call_t *call)
{
    dango_rpc_server_t *srv = call->conn->srv;

    if (dango_loop_is_current(srv->loop)) {
        call_commit(call);
        if (!srv->in_callback) {
            server_post_flush(srv); /* batches the writes of this burst */
        }

        server_maybe_free(srv);
        return;
    }

    /*
     * Once pushed, the call may be served and freed, and with it the last
     * reason to keep a destroyed server: the count (taken while our call
     * still holds the server) makes server_maybe_free() wait for us.
     */
    __atomic_add_fetch(&srv->submitting, 1, __ATOMIC_SEQ_CST);
    dango_mpsc_push(&srv->inbox, &call->link);
    server_post_flush(srv);
    __atomic_sub_fetch(&srv->submitting, 1, __ATOMIC_RELEASE); /* last use */
}

/*
 * Sets the reply header of @call and returns where @len payload bytes go
 * (NULL when none are to be written); @rc_p gets the caller's return code.
 */
static char *call_prepare(dango_rpc_call_t *call, int status, int has_payload,
                          size_t len, int *rc_p)
{
    char *dst = NULL;

    *rc_p = 0;
    if ((status > 0) || ((status == 0) && !has_payload && (len > 0))) {
        *rc_p  = DANGO_EINVAL;
        status = DANGO_EPROTO;
    } else if ((status == 0) && (len > DANGO_FRAME_RPC_MAX)) {
        *rc_p = status = DANGO_EMSGSIZE;
    }

    if (status != 0) {
        len = 0;
    } else if (len > RPC_CALL_INLINE) {
        call->owned = dango_malloc(len, "rpc_reply");
        if (call->owned == NULL) {
            *rc_p = status = DANGO_ENOMEM;
            len            = 0;
        }

        dst = call->owned;
    } else if (len > 0) {
        dst = call->inline_buf;
    }

    call->tx.hdr.status = status;
    call->tx.hdr.length = len;
    call->tx.data       = dst;
    call->tx.data_len   = len;
    return dst;
}

int dango_rpc_reply(dango_rpc_call_t *call, int status, const void *payload,
                    size_t len)
{
    char *dst;
    int   rc;

    if (call == NULL) {
        return DANGO_EINVAL;
    }

    dst = call_prepare(call, status, payload != NULL, len, &rc);
    if (dst != NULL) {
        memcpy(dst, payload, len);
    }

    call_submit(call);
    return rc;
}

int dango_rpc_reply_pb(dango_rpc_call_t *call, int status,
                       const ProtobufCMessage *msg)
{
    size_t len = 0;
    char  *dst;
    int    rc;

    if (call == NULL) {
        return DANGO_EINVAL;
    }

    if ((status == 0) && (msg != NULL)) {
        len = protobuf_c_message_get_packed_size(msg);
    }

    dst = call_prepare(call, status, 1, len, &rc);
    if (dst != NULL) {
        protobuf_c_message_pack(msg, (uint8_t *)dst);
    }

    call_submit(call);
    return rc;
}

const char *dango_rpc_call_peer(const dango_rpc_call_t *call)
{
    return call->conn->peer_addr;
}

/* ---------- listener and timer ---------- */

static void server_accept_one(dango_rpc_server_t *srv, int cfd,
                              const struct sockaddr_storage *ss, int local)
{
    rpc_sconn_t *conn;
    int          rc;

    if (srv->num_conns >= srv->max_conns) {
        rpc_peer_error("rpc server %s: %u connections: refusing another",
                       srv->addr, srv->num_conns);
        close(cfd);
        return;
    }

    conn = dango_calloc(1, sizeof(*conn), "rpc_sconn");
    if ((conn == NULL) || (dango__rpc_rx_init(&conn->rx) != 0)) {
        dango_error("rpc server %s: out of memory for a connection", srv->addr);
        dango_free(conn);
        close(cfd);
        return;
    }

    conn->srv   = srv;
    conn->fd    = cfd;
    conn->local = local;
    dango_list_init(&conn->txq);
    dango_list_init(&conn->chan_done);
    if (local) {
        struct ucred cred;
        socklen_t    cl = sizeof(cred);

        if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0) {
            cred.pid = 0;
        }

        snprintf(conn->peer_addr, sizeof(conn->peer_addr), "local pid %ld",
                 (long)cred.pid);
    } else {
        dango_sock_addr_str((const struct sockaddr *)ss, conn->peer_addr,
                            sizeof(conn->peer_addr));
    }
    rc = dango_loop_fd_add(srv->loop, cfd, DANGO_LOOP_READ, sconn_io_cb, conn);
    if (rc != 0) {
        dango_error("rpc server %s: cannot watch connection from %s: %s",
                    srv->addr, conn->peer_addr, dango_strerror(rc));
        sconn_free(conn);
        close(cfd);
        return;
    }

    if (!local) {
        dango_sock_tune(cfd);
    }

    conn->events      = DANGO_LOOP_READ;
    conn->state       = SCONN_HELLO;
    conn->state_since = dango_time_ns();
    dango_list_add_tail(&srv->conns, &conn->link);
    srv->num_conns++;
}

static void server_listen_cb(dango_loop_t *loop, int fd, unsigned events,
                             void *arg)
{
    dango_rpc_server_t *srv = arg;

    for (int i = 0; i < RPC_ACCEPT_MAX; i++) {
        struct sockaddr_storage ss;
        socklen_t               sl = sizeof(ss);
        int                     cfd;

        cfd = accept4(fd, (struct sockaddr *)&ss, &sl,
                      SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if ((errno == EMFILE) || (errno == ENFILE) || (errno == ENOBUFS) ||
                (errno == ENOMEM)) {
                /* The pending connection stays queued and the listener
                 * readable: stop watching it until the next tick rather
                 * than spin. */
                rpc_peer_error("rpc server %s: accept: %m (connections "
                               "wait; %u served)",
                               srv->addr, srv->num_conns);
                dango_loop_fd_mod(srv->loop, fd, 0);
                srv->listen_paused = 1;
            } else if ((errno != EAGAIN) && (errno != EINTR) &&
                       (errno != ECONNABORTED)) {
                dango_warn("rpc server %s: accept: %m", srv->addr);
            }

            return;
        }

        server_accept_one(srv, cfd, &ss, fd == srv->local_fd);
    }
}

static void server_timer_cb(dango_loop_t *loop, void *arg)
{
    dango_rpc_server_t *srv = arg;
    uint64_t            now = dango_time_ns();
    rpc_sconn_t        *conn, *tmp;

    if (srv->listen_paused && (srv->listen_fd >= 0)) {
        srv->listen_paused = 0;
        dango_loop_fd_mod(srv->loop, srv->listen_fd, DANGO_LOOP_READ);
        if (srv->local_fd >= 0) {
            dango_loop_fd_mod(srv->loop, srv->local_fd, DANGO_LOOP_READ);
        }
    }

    dango_list_for_each_safe(conn, tmp, &srv->conns, link)
    {
        if (conn->state != SCONN_READY) {
            if (now - conn->state_since > srv->handshake_ns) {
                rpc_peer_error(
                    "rpc conn %s: no handshake within %lu ms: "
                    "closing",
                    conn->peer_addr,
                    (unsigned long)(srv->handshake_ns / DANGO_NSEC_PER_MSEC));
                sconn_close(conn);
            }
        } else if (!conn->paused && dango__rpc_rx_partial(&conn->rx) &&
                   (now - conn->rx.last_progress > srv->io_ns)) {
            rpc_peer_error("rpc conn %s: frame incomplete for %lu ms: closing",
                           conn->peer_addr,
                           (unsigned long)((now - conn->rx.last_progress) /
                                           DANGO_NSEC_PER_MSEC));
            sconn_close(conn);
        } else if (!dango_list_is_empty(&conn->txq) &&
                   (now - conn->tx_progress > srv->io_ns)) {
            rpc_peer_error("rpc conn %s: replies not read for %lu ms: closing",
                           conn->peer_addr,
                           (unsigned long)((now - conn->tx_progress) /
                                           DANGO_NSEC_PER_MSEC));
            sconn_close(conn);
        }
    }
}

/* ---------- create / destroy ---------- */

typedef struct server_sync_arg {
    dango_rpc_server_t *srv;
    int                 rc;
} server_sync_arg_t;

static void server_open(void *arg)
{
    server_sync_arg_t  *a   = arg;
    dango_rpc_server_t *srv = a->srv;
    int                 id;

    id = dango_loop_timer_add(srv->loop, RPC_TIMER_MS, server_timer_cb, srv);
    if (id < 0) {
        a->rc = id;
        return;
    }

    a->rc = dango_loop_fd_add(srv->loop, srv->listen_fd, DANGO_LOOP_READ,
                              server_listen_cb, srv);
    if ((a->rc == 0) && (srv->local_fd >= 0)) {
        a->rc = dango_loop_fd_add(srv->loop, srv->local_fd, DANGO_LOOP_READ,
                                  server_listen_cb, srv);
        if (a->rc != 0) {
            dango_loop_fd_del(srv->loop, srv->listen_fd);
        }
    }

    if (a->rc != 0) {
        dango_loop_timer_del(srv->loop, id);
        return;
    }

    srv->timer_id = id;
}

static void server_shutdown(void *arg)
{
    dango_rpc_server_t *srv = arg;

    srv->in_callback = 1; /* nothing is flushed from here on */
    dango_loop_timer_del(srv->loop, srv->timer_id);
    dango_loop_fd_del(srv->loop, srv->listen_fd);
    close(srv->listen_fd);
    srv->listen_fd = -1;
    if (srv->local_fd >= 0) {
        dango_loop_fd_del(srv->loop, srv->local_fd);
        close(srv->local_fd);
        srv->local_fd = -1;
    }
    while (!dango_list_is_empty(&srv->conns)) {
        sconn_close(dango_list_head_elem(&srv->conns, rpc_sconn_t, link));
    }

    server_take_inbox(srv); /* deferred replies: connections are gone */
    srv->destroyed = 1;
    server_maybe_free(srv);
}

/*
 * Listens on the abstract Unix socket of the local channel, named after
 * the instance (so a client that learned the name from a HelloAck reaches
 * this server or nothing). Without it the server serves the network only.
 */
static void server_listen_local(dango_rpc_server_t *srv, unsigned lanes)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    int                n, fd;

    n = snprintf(srv->local_name, sizeof(srv->local_name),
                 "dango-rpc-%016" PRIx64, srv->instance_id);
    memcpy(un.sun_path + 1, srv->local_name, (size_t)n); /* abstract */
    srv->chan_buf = dango_malloc(RPC_CHAN_REQ_CAP, "rpc_chan_buf");
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if ((srv->chan_buf == NULL) || (fd < 0) ||
        (bind(fd, (struct sockaddr *)&un,
              (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
                          (size_t)n)) != 0) ||
        (listen(fd, 1024) != 0)) {
        dango_warn("rpc server %s: no local channel: %m", srv->addr);
        if (fd >= 0) {
            close(fd);
        }

        srv->local_name[0] = '\0';
        return;
    }

    srv->local_fd   = fd;
    srv->chan_lanes = DANGO_MIN(lanes, RPC_CHAN_LANES);
}

int dango_rpc_server_create(const dango_rpc_server_params_t *p,
                            dango_rpc_server_t             **srv_p)
{
    dango_rpc_server_t *srv;
    server_sync_arg_t   a;
    int                 rc;

    if ((p == NULL) || (p->loop == NULL) || (p->listen == NULL) ||
        (p->handler == NULL) || (srv_p == NULL)) {
        return DANGO_EINVAL;
    }

    srv = dango_calloc(1, sizeof(*srv), "rpc_server");
    if (srv == NULL) {
        return DANGO_ENOMEM;
    }

    srv->loop      = p->loop;
    srv->handler   = p->handler;
    srv->arg       = p->arg;
    srv->max_conns = p->max_conns ? p->max_conns : DANGO_RPC_DEFAULT_MAX_CONNS;
    srv->max_pending =
        p->max_pending ? p->max_pending : DANGO_RPC_DEFAULT_MAX_PENDING;
    srv->handshake_ns = p->handshake_timeout_ns
                            ? p->handshake_timeout_ns
                            : DANGO_RPC_DEFAULT_HANDSHAKE_NS;
    srv->io_ns = p->io_timeout_ns ? p->io_timeout_ns : DANGO_RPC_DEFAULT_IO_NS;
    srv->flush_task.cb = server_flush_task;
    srv->local_fd      = -1;
    dango_list_init(&srv->conns);
    dango_list_init(&srv->dirty);
    dango_mpool_init(&srv->call_pool, sizeof(dango_rpc_call_t), 64, 0,
                     "rpc_call");
    dango_random_bytes(&srv->instance_id, sizeof(srv->instance_id));
    if ((p->token != NULL) && (p->token[0] != '\0')) {
        srv->token = dango_strdup(p->token, "rpc_server_token");
        if (srv->token == NULL) {
            rc = DANGO_ENOMEM;
            goto err_free;
        }
    }

    rc = dango_sock_listen(p->listen, 1024);
    if (rc < 0) {
        if (rc == DANGO_EINVAL) {
            dango_debug("rpc server: bad listen address %s", p->listen);
        } else {
            dango_error("rpc server: cannot listen on %s: %s", p->listen,
                        dango_strerror(rc));
        }

        goto err_free;
    }

    srv->listen_fd = rc;
    dango_sock_local_addr(srv->listen_fd, srv->addr, sizeof(srv->addr));
    if (p->local_lanes >= 0) {
        server_listen_local(srv, p->local_lanes ? (unsigned)p->local_lanes
                                                : RPC_CHAN_DEFAULT_LANES);
    }
    a.srv = srv;
    a.rc  = 0;
    dango_loop_run_sync(srv->loop, server_open, &a);
    if (a.rc != 0) {
        rc = a.rc;
        goto err_close;
    }

    dango_debug("rpc server %s: listening", srv->addr);
    *srv_p = srv;
    return 0;

err_close:
    close(srv->listen_fd);
    if (srv->local_fd >= 0) {
        close(srv->local_fd);
    }
err_free:
    server_free(srv);
    return rc;
}

const char *dango_rpc_server_addr(const dango_rpc_server_t *srv)
{
    return srv->addr;
}

void dango_rpc_server_destroy(dango_rpc_server_t *srv)
{
    if (srv == NULL) {
        return;
    }

    dango_loop_run_sync(srv->loop, server_shutdown, srv);
}

void dango_rpc_server_set_epoch(dango_rpc_server_t *srv, uint64_t epoch)
{
    if (srv != NULL) {
        __atomic_store_n(&srv->epoch, epoch, __ATOMIC_RELEASE);
    }
}
