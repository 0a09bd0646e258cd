/*
 * RPC client: many calling threads, one connection, one private loop thread.
 *
 * DESIGN
 * - The connection (socket, receive buffer, handshake state) belongs to the
 *   client's loop thread, except for writing: a call copies its request
 *   into a frame and registers a waiter under the client lock; then, when
 *   the connection is ready and nothing is waiting to be written, it writes
 *   its frame to the socket itself (one sendmsg() on the calling thread,
 *   under tx_lock, taken with trylock so a caller never waits for another
 *   one's write) and sleeps. Otherwise it queues the frame and posts the
 *   loop's kick task unless one is already pending (one wake-up for a burst
 *   of calls); the loop moves every queued frame to the socket with one
 *   sendmsg(). A direct write that fills the socket or fails leaves its
 *   frame in the write queue and kicks the loop, which finishes it or
 *   fails the connection. tx_lock guards the write queue, the fd while it
 *   is written and closed, and direct_ok; lock order: lock, then tx_lock.
 * - The lock guards only the waiter table (call id -> waiter, chained
 *   buckets; ids are sequential so chains stay short), the send queue and
 *   the flags; critical sections are a few pointer operations and never
 *   include a system call.
 * - Waiters live on the caller's stack and sleep on a futex word of their
 *   own. The loop, on a reply, removes the waiter from the table under the
 *   lock, fills in the result outside it, then publishes it with a release
 *   store of the word and wakes it. A waiter that times out takes the lock:
 *   if it is still in the table it removes itself (with its frame, if not
 *   yet taken by the loop) and returns DANGO_ETIMEDOUT, and the late reply
 *   finds no waiter and is dropped; if not, the loop already owns it and
 *   the waiter waits the few instructions until the result is published.
 *   The loop's last access to a waiter is that store: the futex wake after
 *   it names only the address, which is harmless when the stack frame is
 *   already gone (as in glibc's own mutex unlock).
 * - Connecting is lazy: the kick task of a call that finds the connection
 *   idle opens it (non-blocking connect, Hello, HelloAck with the server's
 *   proof checked, Auth) and queued frames go out once it is ready. Any
 *   failure fails every call registered at that moment, with an error that
 *   tells what happened: before the handshake finished DANGO_ECONNREFUSED,
 *   DANGO_EPEER_GONE, DANGO_EAUTH or DANGO_EPROTO_VERSION; after it
 *   DANGO_ECONNRESET (or DANGO_EPROTO for a malformed frame). The next call
 *   reconnects.
 * - Destroy fails the registered calls with DANGO_ECANCELED, then waits
 *   until no caller is inside the client any more (the users count, whose
 *   decrement is a caller's last access) before it stops the loop and frees.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/hash.h"
#include "common/time.h"
#include "dango_ctrl.pb-c.h"
#include "net/auth.h"
#include "net/rpc_int.h"
#include "net/sock.h"

#define CLI_BUCKETS 1024 /* waiter table size (power of two) */

enum { WAITER_PENDING = 0, WAITER_DONE = 1 };

typedef enum cli_state {
    CLI_IDLE,       /* no connection: the next call opens one */
    CLI_CONNECTING, /* non-blocking connect in progress */
    CLI_HANDSHAKE,  /* Hello sent, waiting for HelloAck */
    CLI_READY
} cli_state_t;

typedef struct rpc_req rpc_req_t;

typedef struct rpc_waiter {
    struct rpc_waiter *hnext;
    rpc_req_t         *req; /* frame while still in the send queue */
    uint64_t           id;
    uint32_t           state; /* futex word: WAITER_* */
    int                in_table;
    int                rc;
    void              *reply;
    size_t             reply_len;
} rpc_waiter_t;

/* An outgoing frame with its payload right behind it. */
struct rpc_req {
    rpc_tx_t      tx; /* first member */
    rpc_waiter_t *w;  /* NULL for handshake frames */
    uint8_t       data[];
};

struct dango_rpc_client {
    /* immutable */
    char                   *addr;
    struct sockaddr_storage ss;
    socklen_t               ss_len;
    char                   *token;
    char                    name[32];
    uint64_t                connect_ns;
    uint64_t                call_ns;
    dango_loop_t           *loop;
    dango_loop_task_t       kick;
    unsigned                users; /* atomic: threads inside the client */
    uint64_t                epoch; /* atomic: highest reply epoch seen */

    /* under lock */
    pthread_mutex_t   lock;
    rpc_waiter_t    **table;
    dango_list_link_t sendq;
    uint64_t          next_id;
    int               closing;
    int               kick_pending;

    /* under tx_lock: the write queue, and whether callers may write */
    pthread_mutex_t   tx_lock;
    dango_list_link_t txq;
    int               direct_ok; /* ready, fd open: callers may write */

    /* loop thread only (state is read under the lock by the kick task) */
    cli_state_t state;
    int         fd; /* written by callers under tx_lock */
    unsigned    events;
    rpc_rx_t    rx;
    uint64_t    state_since;
    int         timer_id;
    uint8_t     nonce[DANGO_AUTH_NONCE_LEN];
};

/* ---------- waiters ---------- */

static void futex_wait(uint32_t *word, uint32_t val, uint64_t deadline_ns)
{
    struct timespec ts, *tsp = NULL;

    if (deadline_ns != 0) {
        ts.tv_sec  = (time_t)(deadline_ns / DANGO_NSEC_PER_SEC);
        ts.tv_nsec = (long)(deadline_ns % DANGO_NSEC_PER_SEC);
        tsp        = &ts;
    }

    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline. */
    syscall(SYS_futex, word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, val, tsp,
            NULL, FUTEX_BITSET_MATCH_ANY);
}

static void futex_wake(uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0);
}

/* Publishes the result of a waiter already removed from the table. */
static void waiter_done(rpc_waiter_t *w, int rc, void *reply, size_t len)
{
    w->rc        = rc;
    w->reply     = reply;
    w->reply_len = len;
    __atomic_store_n(&w->state, WAITER_DONE, __ATOMIC_RELEASE);
    futex_wake(&w->state); /* address only: see DESIGN */
}

static void table_insert(dango_rpc_client_t *cli, rpc_waiter_t *w)
{
    rpc_waiter_t **b = &cli->table[w->id & (CLI_BUCKETS - 1)];

    w->hnext    = *b;
    *b          = w;
    w->in_table = 1;
}

static rpc_waiter_t *table_remove(dango_rpc_client_t *cli, uint64_t id)
{
    rpc_waiter_t **pp = &cli->table[id & (CLI_BUCKETS - 1)];

    for (; *pp != NULL; pp = &(*pp)->hnext) {
        rpc_waiter_t *w = *pp;

        if (w->id == id) {
            *pp         = w->hnext;
            w->in_table = 0;
            return w;
        }
    }

    return NULL;
}

/*
 * Under the lock: empties the table and the send queue; returns the waiters
 * as a list through hnext, to be completed once the lock is released.
 */
static rpc_waiter_t *table_take_all(dango_rpc_client_t *cli)
{
    rpc_waiter_t *all = NULL;

    for (unsigned i = 0; i < CLI_BUCKETS; i++) {
        while (cli->table[i] != NULL) {
            rpc_waiter_t *w = cli->table[i];

            cli->table[i] = w->hnext;
            w->in_table   = 0;
            w->hnext      = all;
            all           = w;
        }
    }

    while (!dango_list_is_empty(&cli->sendq)) {
        rpc_req_t *req = dango_list_head_elem(&cli->sendq, rpc_req_t, tx.link);

        dango_list_del(&req->tx.link);
        req->w->req = NULL;
        dango_free(req);
    }

    return all;
}

static void waiters_fail(rpc_waiter_t *all, int rc)
{
    while (all != NULL) {
        rpc_waiter_t *next = all->hnext;

        waiter_done(all, rc, NULL, 0);
        all = next;
    }
}

/* ---------- connection (loop thread) ---------- */

static void req_done(void *arg, rpc_tx_t *tx)
{
    dango_free(tx); /* the request's waiter no longer refers to it */
}

static void client_set_events(dango_rpc_client_t *cli, unsigned ev)
{
    if ((cli->fd >= 0) && (ev != cli->events)) {
        dango_loop_fd_mod(cli->loop, cli->fd, ev);
        cli->events = ev;
    }
}

/* Moves the callers' frames to the socket's queue (connection ready). */
static void client_take_sendq(dango_rpc_client_t *cli)
{
    rpc_req_t *req;

    dango_list_for_each(req, &cli->sendq, tx.link)
    {
        req->w->req = NULL; /* the loop owns the frame now */
    }

    pthread_mutex_lock(&cli->tx_lock);
    dango_list_splice_tail(&cli->txq, &cli->sendq);
    pthread_mutex_unlock(&cli->tx_lock);
}

/* Closes the connection and fails every registered call. */
static void client_fail(dango_rpc_client_t *cli, int err)
{
    rpc_waiter_t *all;

    if (cli->state == CLI_READY) {
        /* The server may or may not have served what was outstanding. */
        if ((err != DANGO_EPROTO) && (err != DANGO_ENOMEM) &&
            (err != DANGO_ECANCELED)) {
            err = DANGO_ECONNRESET;
        }
    } else if ((err != DANGO_ECONNREFUSED) && (err != DANGO_EAUTH) &&
               (err != DANGO_EPROTO_VERSION) && (err != DANGO_EPROTO) &&
               (err != DANGO_ENOMEM) && (err != DANGO_ECANCELED) &&
               (err != DANGO_EMFILE)) {
        err = DANGO_EPEER_GONE; /* reset, EOF, timeout, unreachable */
    }

    if (err != DANGO_ECANCELED) {
        dango_debug("rpc client %s: connection failed: %s", cli->addr,
                    dango_strerror(err));
    }

    /* No caller writes from here on; one writing now finishes first. */
    pthread_mutex_lock(&cli->tx_lock);
    cli->direct_ok = 0;
    if (cli->fd >= 0) {
        dango_loop_fd_del(cli->loop, cli->fd);
        close(cli->fd);
        cli->fd = -1;
    }

    dango__rpc_tx_drop(&cli->txq, req_done, cli);
    pthread_mutex_unlock(&cli->tx_lock);
    cli->events = 0;
    cli->state  = CLI_IDLE;
    dango__rpc_rx_reset(&cli->rx);
    pthread_mutex_lock(&cli->lock);
    all = table_take_all(cli);
    pthread_mutex_unlock(&cli->lock);
    waiters_fail(all, err);
}

/* Writes what is queued; fails the connection on error. */
static int client_flush(dango_rpc_client_t *cli)
{
    int rc = 0, wrote;

    pthread_mutex_lock(&cli->tx_lock);
    if (!dango_list_is_empty(&cli->txq)) {
        rc = dango__rpc_tx_flush(cli->fd, &cli->txq, req_done, cli, &wrote);
    }

    pthread_mutex_unlock(&cli->tx_lock);
    if (rc < 0) {
        client_fail(cli, rc);
        return rc;
    }

    client_set_events(cli, DANGO_LOOP_READ | (rc == 1 ? DANGO_LOOP_WRITE : 0));
    return 0;
}

static int client_queue_ctl(dango_rpc_client_t *cli, uint8_t type,
                            const ProtobufCMessage *msg)
{
    size_t     len = protobuf_c_message_get_packed_size(msg);
    rpc_req_t *req = dango_malloc(sizeof(*req) + len, "rpc_ctl_req");

    if (req == NULL) {
        return DANGO_ENOMEM;
    }

    memset(req, 0, sizeof(*req));
    protobuf_c_message_pack(msg, req->data);
    dango_frame_init(&req->tx.hdr, type, 0, 0, len, 0);
    req->tx.data     = (const char *)req->data;
    req->tx.data_len = len;
    pthread_mutex_lock(&cli->tx_lock);
    dango_list_add_tail(&cli->txq, &req->tx.link);
    pthread_mutex_unlock(&cli->tx_lock);
    return 0;
}

static void client_connected(dango_rpc_client_t *cli)
{
    Dango__Ctrl__Hello hello = DANGO__CTRL__HELLO__INIT;
    int                err   = 0;
    socklen_t          len   = sizeof(err);

    if ((getsockopt(cli->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) ||
        (err != 0)) {
        client_fail(cli, dango_err_from_errno(err ? err : errno));
        return;
    }

    dango_sock_tune(cli->fd);
    dango_random_bytes(cli->nonce, sizeof(cli->nonce));
    hello.version      = DANGO_FRAME_VERSION;
    hello.segment_name = cli->name;
    hello.nonce.data   = cli->nonce;
    hello.nonce.len    = sizeof(cli->nonce);
    hello.target_name  = "";
    if (client_queue_ctl(cli, DANGO_FRAME_HELLO, &hello.base) != 0) {
        client_fail(cli, DANGO_ENOMEM);
        return;
    }

    cli->state       = CLI_HANDSHAKE;
    cli->state_since = dango_time_ns();
    client_flush(cli);
}

static void client_io_cb(dango_loop_t *loop, int fd, unsigned events,
                         void *arg);

static void client_connect(dango_rpc_client_t *cli)
{
    int fd, rc;

    fd = socket(cli->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0) {
        client_fail(cli, dango_err_from_errno(errno));
        return;
    }

    rc = dango_loop_fd_add(cli->loop, fd, DANGO_LOOP_WRITE, client_io_cb, cli);
    if (rc != 0) {
        close(fd);
        client_fail(cli, rc);
        return;
    }

    cli->fd          = fd;
    cli->events      = DANGO_LOOP_WRITE;
    cli->state       = CLI_CONNECTING;
    cli->state_since = dango_time_ns();
    if (connect(fd, (struct sockaddr *)&cli->ss, cli->ss_len) == 0) {
        client_connected(cli);
    } else if (errno != EINPROGRESS) {
        client_fail(cli, dango_err_from_errno(errno));
    }
}

static int client_hello_ack(dango_rpc_client_t *cli, const rpc_frame_t *f)
{
    Dango__Ctrl__HelloAck *ack;
    Dango__Ctrl__Auth      auth = DANGO__CTRL__AUTH__INIT;
    uint8_t                proof[DANGO_AUTH_PROOF_LEN];
    int                    send_auth = 0;
    int                    rc        = 0;

    if (f->hdr.type != DANGO_FRAME_HELLO_ACK) {
        rpc_peer_error("rpc client %s: frame type %u during the handshake",
                       cli->addr, f->hdr.type);
        return DANGO_EPROTO;
    }

    ack = dango__ctrl__hello_ack__unpack(NULL, f->len,
                                         (const uint8_t *)f->payload);
    rc  = (ack == NULL)
              ? DANGO_EPROTO
              : dango_auth_check_hello_ack(cli->token, cli->nonce,
                                           ack->nonce.data, ack->nonce.len,
                                           ack->status, ack->proof.data,
                                           ack->proof.len, proof, &send_auth);
    if (rc != 0) {
        rpc_peer_error("rpc client %s: hello reply: %s", cli->addr,
                       (rc == DANGO_EAUTH) ? "cluster token authentication "
                                             "failed"
                                           : dango_strerror(rc));
        goto out;
    }

    if (send_auth) {
        auth.proof.data = proof;
        auth.proof.len  = sizeof(proof);
        rc              = client_queue_ctl(cli, DANGO_FRAME_AUTH, &auth.base);
    }

out:
    dango__ctrl__hello_ack__free_unpacked(ack, NULL);
    if (rc == 0) {
        cli->state = CLI_READY;
        pthread_mutex_lock(&cli->lock);
        client_take_sendq(cli);
        pthread_mutex_unlock(&cli->lock);
        pthread_mutex_lock(&cli->tx_lock);
        cli->direct_ok = 1;
        pthread_mutex_unlock(&cli->tx_lock);
    }

    return rc;
}

/* Raises the client's epoch to @epoch; 0 when @epoch is below it. */
static int client_epoch_accept(dango_rpc_client_t *cli, uint64_t epoch)
{
    uint64_t cur = __atomic_load_n(&cli->epoch, __ATOMIC_ACQUIRE);

    while (epoch > cur) {
        if (__atomic_compare_exchange_n(&cli->epoch, &cur, epoch, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            return 1;
        }
    }

    return epoch >= cur;
}

static void client_reply(dango_rpc_client_t *cli, const rpc_frame_t *f)
{
    rpc_waiter_t *w;
    void         *buf = NULL;
    size_t        len = 0;
    int           rc  = f->hdr.status;

    pthread_mutex_lock(&cli->lock);
    w = table_remove(cli, f->hdr.id);
    pthread_mutex_unlock(&cli->lock);
    if (w == NULL) {
        dango_trace("rpc client %s: late reply %lu dropped", cli->addr,
                    (unsigned long)f->hdr.id);
        return;
    }

    if (rc > 0) {
        rc = DANGO_EPROTO; /* not a code of ours */
    }

    /*
     * Epoch fencing: a reply stamped with an epoch older than one already
     * seen (or fenced) comes from a server that has been superseded (a
     * deposed master leader); its answer must not be acted upon.
     */
    if (!client_epoch_accept(cli, f->hdr.addr)) {
        dango_debug(
            "rpc client %s: reply %lu of epoch %lu below %lu: "
            "rejected",
            cli->addr, (unsigned long)f->hdr.id, (unsigned long)f->hdr.addr,
            (unsigned long)__atomic_load_n(&cli->epoch, __ATOMIC_ACQUIRE));
        waiter_done(w, DANGO_ESTALE_TERM, NULL, 0);
        return;
    }

    if ((rc == 0) && (f->len > 0)) {
        len = (size_t)f->len;
        buf = f->in_big ? dango__rpc_rx_take(&cli->rx) : NULL;
        if (buf == NULL) {
            buf = dango_malloc(len, "rpc_reply");
            if (buf == NULL) {
                rc  = DANGO_ENOMEM;
                len = 0;
            } else {
                memcpy(buf, f->payload, len);
            }
        }
    }

    waiter_done(w, rc, buf, len);
}

static int client_read(dango_rpc_client_t *cli)
{
    cli->rx.recvs = RPC_RX_RECVS;
    for (;;) {
        rpc_frame_t f = {0};
        uint64_t    limit =
            (cli->state == CLI_READY) ? DANGO_FRAME_RPC_MAX : RPC_HANDSHAKE_MAX;
        int rc = dango__rpc_rx_next(&cli->rx, cli->fd, limit, &f);

        if (rc == 0) {
            return 0;
        }

        if (rc < 0) {
            if ((rc == DANGO_EPROTO) || (rc == DANGO_EPROTO_VERSION) ||
                (rc == DANGO_EMSGSIZE)) {
                rpc_peer_error("rpc client %s: bad frame header (magic 0x%x "
                               "version %u type %u length %lu)",
                               cli->addr, f.hdr.magic, f.hdr.version,
                               f.hdr.type, (unsigned long)f.hdr.length);
                rc = DANGO_EPROTO;
            }

            return rc;
        }

        if (cli->state == CLI_HANDSHAKE) {
            rc = client_hello_ack(cli, &f);
            if (rc != 0) {
                return rc;
            }

            continue;
        }

        if (f.hdr.type != DANGO_FRAME_RPC_RESP) {
            rpc_peer_error("rpc client %s: unexpected frame type %u", cli->addr,
                           f.hdr.type);
            return DANGO_EPROTO;
        }

        client_reply(cli, &f);
    }
}

static void client_io_cb(dango_loop_t *loop, int fd, unsigned events, void *arg)
{
    dango_rpc_client_t *cli = arg;
    int                 rc;

    if (cli->state == CLI_CONNECTING) {
        client_connected(cli);
        return;
    }

    if (events & DANGO_LOOP_READ) {
        rc = client_read(cli);
        if (rc != 0) {
            client_fail(cli, rc);
            return;
        }
    }

    client_flush(cli);
}

static void client_kick_task(dango_loop_task_t *task)
{
    dango_rpc_client_t *cli =
        dango_container_of(task, dango_rpc_client_t, kick);
    int connect = 0;

    pthread_mutex_lock(&cli->lock);
    cli->kick_pending = 0;
    if (!cli->closing) {
        if (cli->state == CLI_READY) {
            client_take_sendq(cli);
        } else if ((cli->state == CLI_IDLE) &&
                   !dango_list_is_empty(&cli->sendq)) {
            connect = 1;
        }
    }

    pthread_mutex_unlock(&cli->lock);
    if (connect) {
        client_connect(cli);
    } else if (cli->state == CLI_READY) {
        client_flush(cli);
    }
}

static void client_timer_cb(dango_loop_t *loop, void *arg)
{
    dango_rpc_client_t *cli = arg;

    if (((cli->state == CLI_CONNECTING) || (cli->state == CLI_HANDSHAKE)) &&
        (dango_time_ns() - cli->state_since > cli->connect_ns)) {
        client_fail(cli, DANGO_ETIMEDOUT);
    }
}

static void client_shutdown(void *arg)
{
    dango_rpc_client_t *cli = arg;

    client_fail(cli, DANGO_ECANCELED); /* no call is registered any more */
    dango_loop_timer_del(cli->loop, cli->timer_id);
}

/* ---------- calls ---------- */

typedef void (*req_fill_cb)(const void *src, size_t len, uint8_t *dst);

static void fill_copy(const void *src, size_t len, uint8_t *dst)
{
    memcpy(dst, src, len);
}

static void fill_pb(const void *src, size_t len, uint8_t *dst)
{
    protobuf_c_message_pack(src, dst);
}

/* Waits for @w until @deadline; returns its result code. */
static int client_wait(dango_rpc_client_t *cli, rpc_waiter_t *w,
                       uint64_t deadline)
{
    for (;;) {
        if (__atomic_load_n(&w->state, __ATOMIC_ACQUIRE) == WAITER_DONE) {
            return w->rc;
        }

        if (dango_time_ns() >= deadline) {
            break;
        }

        futex_wait(&w->state, WAITER_PENDING, deadline);
    }

    pthread_mutex_lock(&cli->lock);
    if (w->in_table) {
        table_remove(cli, w->id);
        if (w->req != NULL) {
            dango_list_del(&w->req->tx.link); /* never sent */
            dango_free(w->req);
        }

        pthread_mutex_unlock(&cli->lock);
        return DANGO_ETIMEDOUT;
    }

    /* The loop or destroy took the waiter: its result is moments away. */
    pthread_mutex_unlock(&cli->lock);
    while (__atomic_load_n(&w->state, __ATOMIC_ACQUIRE) != WAITER_DONE) {
        futex_wait(&w->state, WAITER_PENDING, 0);
    }

    return w->rc;
}

static int client_call(dango_rpc_client_t *cli, uint32_t method,
                       req_fill_cb fill, const void *src, size_t len,
                       void **reply_p, size_t *reply_len_p, uint64_t timeout_ns)
{
    rpc_waiter_t w = {0};
    rpc_req_t   *req;
    uint64_t     deadline;
    int          kick, direct, rc;

    if (len > DANGO_FRAME_RPC_MAX) {
        return DANGO_EMSGSIZE;
    }

    deadline = dango_time_ns() + (timeout_ns ? timeout_ns : cli->call_ns);
    req      = dango_malloc(sizeof(*req) + len, "rpc_req");
    if (req == NULL) {
        return DANGO_ENOMEM;
    }

    if (len > 0) {
        fill(src, len, req->data);
    }

    req->tx.data     = (const char *)req->data;
    req->tx.data_len = len;
    req->tx.sent     = 0;
    req->w           = &w;
    w.state          = WAITER_PENDING;

    __atomic_add_fetch(&cli->users, 1, __ATOMIC_ACQUIRE);
    pthread_mutex_lock(&cli->lock);
    if (cli->closing) {
        pthread_mutex_unlock(&cli->lock);
        dango_free(req);
        rc = DANGO_ECANCELED;
        goto out;
    }

    w.id = cli->next_id++;
    dango_frame_init(&req->tx.hdr, DANGO_FRAME_RPC_REQ, w.id, method, len, 0);
    table_insert(cli, &w);
    direct = pthread_mutex_trylock(&cli->tx_lock) == 0;
    if (direct && !(cli->direct_ok && dango_list_is_empty(&cli->txq))) {
        pthread_mutex_unlock(&cli->tx_lock);
        direct = 0;
    }

    kick = 0;
    if (!direct) {
        w.req = req;
        dango_list_add_tail(&cli->sendq, &req->tx.link);
        kick              = !cli->kick_pending;
        cli->kick_pending = 1;
    }

    pthread_mutex_unlock(&cli->lock);
    if (direct) {
        int wrote;

        /* The frame belongs to the write queue from here on (w.req stays
         * NULL): sent and freed now, or left for the loop. */
        dango_list_add_tail(&cli->txq, &req->tx.link);
        kick =
            dango__rpc_tx_flush(cli->fd, &cli->txq, req_done, cli, &wrote) != 0;
        pthread_mutex_unlock(&cli->tx_lock);
        if (kick) {
            pthread_mutex_lock(&cli->lock);
            kick              = !cli->kick_pending;
            cli->kick_pending = 1;
            pthread_mutex_unlock(&cli->lock);
        }
    }

    if (kick) {
        dango_loop_post(cli->loop, &cli->kick);
    }

    rc = client_wait(cli, &w, deadline);
    if (rc == 0) {
        if (reply_p != NULL) {
            *reply_p = w.reply;
        } else {
            dango_free(w.reply);
        }

        if (reply_len_p != NULL) {
            *reply_len_p = w.reply_len;
        }
    }

out:
    /* The last access to @cli: destroy may free it right after. */
    __atomic_sub_fetch(&cli->users, 1, __ATOMIC_RELEASE);
    return rc;
}

int dango_rpc_call(dango_rpc_client_t *cli, uint32_t method, const void *req,
                   size_t len, void **reply_p, size_t *reply_len_p,
                   uint64_t timeout_ns)
{
    if ((cli == NULL) || ((req == NULL) && (len > 0))) {
        return DANGO_EINVAL;
    }

    return client_call(cli, method, fill_copy, req, len, reply_p, reply_len_p,
                       timeout_ns);
}

int dango_rpc_call_pb(dango_rpc_client_t *cli, uint32_t method,
                      const ProtobufCMessage           *req,
                      const ProtobufCMessageDescriptor *reply_desc,
                      ProtobufCMessage **reply_p, uint64_t timeout_ns)
{
    ProtobufCMessage *msg;
    void             *buf = NULL;
    size_t            len = 0;
    int               rc;

    if ((cli == NULL) || (req == NULL) || (reply_desc == NULL) ||
        (reply_p == NULL)) {
        return DANGO_EINVAL;
    }

    rc = client_call(cli, method, fill_pb, req,
                     protobuf_c_message_get_packed_size(req), &buf, &len,
                     timeout_ns);
    if (rc != 0) {
        return rc;
    }

    msg = protobuf_c_message_unpack(reply_desc, NULL, len,
                                    buf ? buf : (const uint8_t *)"");
    dango_free(buf);
    if (msg == NULL) {
        return DANGO_EPROTO;
    }

    *reply_p = msg;
    return 0;
}

/* ---------- create / destroy ---------- */

int dango_rpc_client_create(const char *addr, const char *token,
                            const dango_rpc_client_params_t *p,
                            dango_rpc_client_t             **cli_p)
{
    dango_rpc_client_t *cli;
    const char         *name;
    int                 rc;

    if ((addr == NULL) || (cli_p == NULL)) {
        return DANGO_EINVAL;
    }

    cli = dango_calloc(1, sizeof(*cli), "rpc_client");
    if (cli == NULL) {
        return DANGO_ENOMEM;
    }

    cli->fd         = -1;
    cli->next_id    = 1;
    cli->kick.cb    = client_kick_task;
    cli->connect_ns = (p && p->connect_timeout_ns)
                          ? p->connect_timeout_ns
                          : DANGO_RPC_DEFAULT_CONNECT_NS;
    cli->call_ns    = (p && p->call_timeout_ns) ? p->call_timeout_ns
                                                : DANGO_RPC_DEFAULT_CALL_NS;
    name            = (p && p->name) ? p->name : "rpc-client";
    snprintf(cli->name, sizeof(cli->name), "%s", name);
    dango_list_init(&cli->sendq);
    dango_list_init(&cli->txq);
    rc = dango_sock_parse_addr(addr, 0, &cli->ss, &cli->ss_len);
    if (rc != 0) {
        dango_debug("rpc client: bad server address %s", addr);
        goto err_free;
    }

    cli->addr  = dango_strdup(addr, "rpc_client_addr");
    cli->table = dango_calloc(CLI_BUCKETS, sizeof(*cli->table), "rpc_table");
    if ((cli->addr == NULL) || (cli->table == NULL)) {
        rc = DANGO_ENOMEM;
        goto err_free;
    }

    if ((token != NULL) && (token[0] != '\0')) {
        cli->token = dango_strdup(token, "rpc_client_token");
        if (cli->token == NULL) {
            rc = DANGO_ENOMEM;
            goto err_free;
        }
    }

    rc = dango__rpc_rx_init(&cli->rx);
    if (rc != 0) {
        goto err_free;
    }

    rc = dango_loop_create(cli->name, &cli->loop);
    if (rc != 0) {
        goto err_rx;
    }

    cli->timer_id =
        dango_loop_timer_add(cli->loop, RPC_TIMER_MS, client_timer_cb, cli);
    if (cli->timer_id < 0) {
        rc = cli->timer_id;
        goto err_loop;
    }

    pthread_mutex_init(&cli->lock, NULL);
    pthread_mutex_init(&cli->tx_lock, NULL);
    rc = dango_loop_start(cli->loop);
    if (rc != 0) {
        dango_error("rpc client %s: cannot start its thread: %s", addr,
                    dango_strerror(rc));
        goto err_lock;
    }

    *cli_p = cli;
    return 0;

err_lock:
    pthread_mutex_destroy(&cli->lock);
    pthread_mutex_destroy(&cli->tx_lock);
err_loop:
    dango_loop_destroy(cli->loop);
err_rx:
    dango__rpc_rx_cleanup(&cli->rx);
err_free:
    dango_free(cli->token);
    dango_free(cli->table);
    dango_free(cli->addr);
    dango_free(cli);
    return rc;
}

void dango_rpc_client_destroy(dango_rpc_client_t *cli)
{
    rpc_waiter_t *all;

    if (cli == NULL) {
        return;
    }

    pthread_mutex_lock(&cli->lock);
    cli->closing = 1;
    all          = table_take_all(cli);
    pthread_mutex_unlock(&cli->lock);
    waiters_fail(all, DANGO_ECANCELED);

    /* Callers leave within moments once failed; none may enter now. */
    while (__atomic_load_n(&cli->users, __ATOMIC_ACQUIRE) != 0) {
        sched_yield();
    }

    dango_loop_run_sync(cli->loop, client_shutdown, cli);
    dango_loop_destroy(cli->loop);
    pthread_mutex_destroy(&cli->lock);
    pthread_mutex_destroy(&cli->tx_lock);
    dango__rpc_rx_cleanup(&cli->rx);
    dango_free(cli->token);
    dango_free(cli->table);
    dango_free(cli->addr);
    dango_free(cli);
}

uint64_t dango_rpc_client_epoch(dango_rpc_client_t *cli)
{
    return (cli != NULL) ? __atomic_load_n(&cli->epoch, __ATOMIC_ACQUIRE) : 0;
}

void dango_rpc_client_fence(dango_rpc_client_t *cli, uint64_t epoch)
{
    if (cli != NULL) {
        (void)client_epoch_accept(cli, epoch);
    }
}
