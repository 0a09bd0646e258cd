/*
 * RPC client: many calling threads, a few lanes and one shared connection,
 * one private loop thread.
 *
 * DESIGN
 * - Lanes: up to lanes_max connections of their own, each borrowed by one
 *   caller for one call. The caller writes its request, waits in recv() for
 *   its reply and gives the lane back: the reply wakes the caller directly,
 *   where the shared connection needs the loop thread to wake it (one
 *   wake-up and one thread hop less per call, which is most of a call's
 *   latency when few calls are in flight). Under load the shared
 *   connection is cheaper: the server reads a burst of requests with one
 *   recv() and answers them with one sendmsg(), where lanes cost it a pair
 *   per call and a packet each way. So a call takes a lane only while at
 *   most lanes_max calls (the users count, itself included) are in
 *   progress. A lane's socket is blocking with a receive and
 *   send timeout of LANE_TICK_NS (less when the call's deadline is nearer),
 *   so the caller checks its deadline and the client's closing flag between
 *   slices. A lane connects (and does the handshake) on its first call;
 *   before each call a one-byte MSG_PEEK tells whether the server closed it
 *   meanwhile (then it reconnects, so a server restart costs an idle lane
 *   nothing). A lane whose call timed out or failed is closed: a late reply
 *   never meets the next call. A call that finds every lane busy, or whose
 *   lane cannot connect (then no lane connects for LANE_BACKOFF_NS: e.g.
 *   the server's connection limit), takes the shared connection below.
 *   lanes_free and each lane's fd change under the lock, so destroy can
 *   shut down the lanes' sockets to end their borrowers' waits.
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
#include <stddef.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/hash.h"
#include "common/time.h"
#include "dango_ctrl.pb-c.h"
#include "net/auth.h"
#include "net/rpc_chan.h"
#include "net/rpc_int.h"
#include "net/sock.h"

#define CLI_BUCKETS 1024 /* waiter table size (power of two) */

#define LANE_TICK_NS (100ull * 1000000ull) /* socket timeout slice */
#define LANE_BACKOFF_NS                                                        \
    (1000ull * 1000000ull) /* after a lane connect failed                      \
                            */
#define LANE_STACK_REQ                                                         \
    1024              /* requests up to this size are built on the stack */
#define LANE_SHARED 1 /* lane_call(): take the shared connection */
#define CHAN_BACKOFF_NS                                                        \
    (1000ull * 1000000ull) /* after a channel could not be opened */
#define CHAN_TICK_NS (100ull * 1000000ull) /* a channel wait's slice */

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

/* A connection of its own, borrowed by one caller for one call. */
typedef struct rpc_lane {
    struct rpc_lane *next;     /* free list (under lock) */
    struct rpc_lane *all_next; /* every lane; set once under lock */
    int              fd;       /* -1: not connected; changes under lock */
    uint64_t         next_id;
    uint64_t         tmo_ns; /* SO_RCVTIMEO and SO_SNDTIMEO now set */
    rpc_rx_t         rx;
} rpc_lane_t;

/* A lane of the local channel, as this client sees it. */
typedef struct rpc_cl_lane {
    uint64_t id;   /* call in the lane (under lock) */
    int      lost; /* timed out: never used again (under lock) */
    int      rc;   /* a reply read from the socket: its code, */
    void    *buf;  /* payload */
    size_t   len;
} rpc_cl_lane_t;

/* The local channel (see rpc_chan.h). */
typedef struct rpc_cchan {
    struct rpc_cchan        *next; /* in cli->chans (under lock) */
    struct dango_rpc_client *cli;
    rpc_chan_hdr_t          *hdr;
    uint64_t                 size;
    int           fd;  /* the Unix socket; read and closed by the loop */
    int           efd; /* kicks the server */
    uint32_t      lanes;
    uint32_t      req_cap;
    uint32_t      rep_cap;
    uint64_t      free;    /* lanes not borrowed (under lock) */
    unsigned      refs;    /* borrowed lanes + the loop's watch (lock) */
    unsigned      lost;    /* lanes lost to timeouts (under lock) */
    int           dead;    /* atomic; set under lock */
    int           watched; /* the loop watches fd (under lock) */
    rpc_rx_t      rx;      /* loop thread */
    rpc_cl_lane_t lane[RPC_CHAN_LANES];
} rpc_cchan_t;

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
    unsigned                lanes_max;
    int                     local_on; /* local channel wanted */
    /* atomic, written under lock: a channel is open or a HelloAck named
     * one (calls to a server elsewhere skip the channel without a lock) */
    int chan_hint;

    /* under lock */
    pthread_mutex_t   lock;
    rpc_waiter_t    **table;
    dango_list_link_t sendq;
    uint64_t          next_id;
    int               closing; /* also read atomically by lane callers */
    int               kick_pending;
    rpc_lane_t       *lanes_free;
    rpc_lane_t       *lanes_all;
    unsigned          lanes_n;
    uint64_t          lanes_retry_at; /* no lane connects before (ns) */
    char              local_name[40]; /* the server's Unix socket, learned */
    uint64_t          local_instance; /* ... from this instance's HelloAck */
    rpc_cchan_t      *chan;           /* the channel calls take, or NULL */
    rpc_cchan_t      *chans;          /* every channel not yet freed */
    int               chan_opening;
    uint64_t          chan_retry_at; /* no channel opens before (ns) */

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

/* Fills @hello with the client's Hello and a fresh @nonce. */
static void chan_learn(dango_rpc_client_t *cli, const char *name,
                       uint64_t instance);
static void chan_free(rpc_cchan_t *ch);

static void hello_init(const dango_rpc_client_t *cli, uint8_t *nonce,
                       Dango__Ctrl__Hello *hello)
{
    dango_random_bytes(nonce, DANGO_AUTH_NONCE_LEN);
    hello->version      = DANGO_FRAME_VERSION;
    hello->segment_name = (char *)cli->name;
    hello->nonce.data   = nonce;
    hello->nonce.len    = DANGO_AUTH_NONCE_LEN;
    hello->target_name  = "";
}

/*
 * Checks the server's answer (a frame of @type with @payload) to a Hello
 * sent with @nonce. On success sets *@send_auth_p, and when it is set the
 * @proof (DANGO_AUTH_PROOF_LEN bytes) the Auth frame must carry.
 */
static int hello_ack_check(dango_rpc_client_t *cli, const uint8_t *nonce,
                           uint8_t type, const void *payload, size_t len,
                           uint8_t *proof, int *send_auth_p,
                           uint64_t *instance_p)
{
    Dango__Ctrl__HelloAck *ack;
    int                    rc;

    if (type != DANGO_FRAME_HELLO_ACK) {
        rpc_peer_error("rpc client %s: frame type %u during the handshake",
                       cli->addr, type);
        return DANGO_EPROTO;
    }

    ack = dango__ctrl__hello_ack__unpack(NULL, len, payload);
    rc  = (ack == NULL)
              ? DANGO_EPROTO
              : dango_auth_check_hello_ack(cli->token, nonce, ack->nonce.data,
                                           ack->nonce.len, ack->status,
                                           ack->proof.data, ack->proof.len,
                                           proof, send_auth_p);
    if (rc != 0) {
        rpc_peer_error("rpc client %s: hello reply: %s", cli->addr,
                       (rc == DANGO_EAUTH) ? "cluster token authentication "
                                             "failed"
                                           : dango_strerror(rc));
    } else {
        if (instance_p != NULL) {
            *instance_p = ack->instance_id;
        }

        chan_learn(cli, ack->local_addr, ack->instance_id);
    }

    dango__ctrl__hello_ack__free_unpacked(ack, NULL);
    return rc;
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
    hello_init(cli, cli->nonce, &hello);
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
    Dango__Ctrl__Auth auth = DANGO__CTRL__AUTH__INIT;
    uint8_t           proof[DANGO_AUTH_PROOF_LEN];
    int               send_auth = 0;
    int               rc;

    rc = hello_ack_check(cli, cli->nonce, f->hdr.type, f->payload,
                         (size_t)f->len, proof, &send_auth, NULL);
    if ((rc == 0) && send_auth) {
        auth.proof.data = proof;
        auth.proof.len  = sizeof(proof);
        rc              = client_queue_ctl(cli, DANGO_FRAME_AUTH, &auth.base);
    }

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

/* The call's code from its reply frame @f: the server's status, or
 * DANGO_ESTALE_TERM when the reply comes from a superseded server. */
static int reply_status(dango_rpc_client_t *cli, const rpc_frame_t *f)
{
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
        return DANGO_ESTALE_TERM;
    }

    return (f->hdr.status > 0) ? DANGO_EPROTO /* not a code of ours */
                               : f->hdr.status;
}

/* The payload of @f, read through @rx: taken from @rx when it has a buffer
 * of its own, else copied (NULL when empty). */
static int reply_payload(rpc_rx_t *rx, const rpc_frame_t *f, void **buf_p,
                         size_t *len_p)
{
    void *buf = NULL;

    if (f->len > 0) {
        buf = f->in_big ? dango__rpc_rx_take(rx) : NULL;
        if (buf == NULL) {
            buf = dango_malloc((size_t)f->len, "rpc_reply");
            if (buf == NULL) {
                return DANGO_ENOMEM;
            }

            memcpy(buf, f->payload, (size_t)f->len);
        }
    }

    *buf_p = buf;
    *len_p = (size_t)f->len;
    return 0;
}

static void client_reply(dango_rpc_client_t *cli, const rpc_frame_t *f)
{
    rpc_waiter_t *w;
    void         *buf = NULL;
    size_t        len = 0;
    int           rc;

    pthread_mutex_lock(&cli->lock);
    w = table_remove(cli, f->hdr.id);
    pthread_mutex_unlock(&cli->lock);
    if (w == NULL) {
        dango_trace("rpc client %s: late reply %lu dropped", cli->addr,
                    (unsigned long)f->hdr.id);
        return;
    }

    rc = reply_status(cli, f);
    if (rc == 0) {
        rc = reply_payload(&cli->rx, f, &buf, &len);
    }

    waiter_done(w, rc, buf, len);
}

/* Logs a frame header that dango__rpc_rx_next() refused with @rc and
 * returns the call's code: DANGO_EPROTO for a bad header, else @rc. */
static int rx_header_error(const dango_rpc_client_t *cli, int rc,
                           const rpc_frame_t *f)
{
    if ((rc != DANGO_EPROTO) && (rc != DANGO_EPROTO_VERSION) &&
        (rc != DANGO_EMSGSIZE)) {
        return rc;
    }

    rpc_peer_error("rpc client %s: bad frame header (magic 0x%x version %u "
                   "type %u length %lu)",
                   cli->addr, f->hdr.magic, f->hdr.version, f->hdr.type,
                   (unsigned long)f->hdr.length);
    return DANGO_EPROTO;
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
            return rx_header_error(cli, rc, &f);
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
    /* No caller is left: what remains of a channel is the loop's watch. */
    while (cli->chans != NULL) {
        rpc_cchan_t *ch = cli->chans;

        cli->chans = ch->next;
        if (ch->watched) {
            dango_loop_fd_del(cli->loop, ch->fd);
        }

        if (ch->fd >= 0) {
            close(ch->fd);
        }

        chan_free(ch);
    }
}

/* ---------- calls over the shared connection ---------- */

typedef void (*req_fill_cb)(const void *src, size_t len, uint8_t *dst);

/* Where a call's reply goes. */
typedef struct rpc_out {
    /* in: unpack the reply as this message (NULL: keep the bytes) */
    const ProtobufCMessageDescriptor *desc;
    void                             *buf; /* bytes, allocated; NULL if none */
    size_t                            len;
    ProtobufCMessage                 *msg; /* unpacked, with desc */
} rpc_out_t;

/* Unpacks @len bytes at @buf into @out->msg. */
static int out_unpack(rpc_out_t *out, const void *buf, size_t len)
{
    out->msg = protobuf_c_message_unpack(out->desc, NULL, len,
                                         buf ? buf : (const uint8_t *)"");
    return (out->msg != NULL) ? 0 : DANGO_EPROTO;
}

/* Hands a reply read into its own buffer (@rc its code) to @out: unpacked
 * (and the buffer freed) with out->desc, else the buffer itself. */
static int out_take(rpc_out_t *out, int rc, void *buf, size_t len)
{
    if ((rc == 0) && (out->desc != NULL)) {
        rc = out_unpack(out, buf, len);
        dango_free(buf);
    } else if (rc == 0) {
        out->buf = buf;
        out->len = len;
    }

    return rc;
}

/* Hands the reply frame @f (read through @rx, or NULL) to @out. A message
 * is unpacked where the reply lies: no copy, and nothing to allocate once
 * the server has answered. */
static int out_frame(dango_rpc_client_t *cli, rpc_rx_t *rx,
                     const rpc_frame_t *f, rpc_out_t *out)
{
    int rc = reply_status(cli, f);

    if ((rc == 0) && (out->desc != NULL)) {
        rc = out_unpack(out, f->payload, (size_t)f->len);
    } else if (rc == 0) {
        rc = reply_payload(rx, f, &out->buf, &out->len);
    }

    return rc;
}

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

/* A call over the shared connection. */
static int shared_call(dango_rpc_client_t *cli, uint32_t method,
                       req_fill_cb fill, const void *src, size_t len,
                       rpc_out_t *out, uint64_t deadline)
{
    rpc_waiter_t w = {0};
    rpc_req_t   *req;
    int          kick, direct, rc;

    req = dango_malloc(sizeof(*req) + len, "rpc_req");
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

    pthread_mutex_lock(&cli->lock);
    if (cli->closing) {
        pthread_mutex_unlock(&cli->lock);
        dango_free(req);
        return DANGO_ECANCELED;
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
    return out_take(out, rc, w.reply, w.reply_len);
}

/* ---------- lanes ---------- */

/* Borrows a free lane, or a new one while there are fewer than lanes_max;
 * NULL when none can be had (the call takes the shared connection). */
static rpc_lane_t *lane_get(dango_rpc_client_t *cli)
{
    rpc_lane_t *l    = NULL;
    int         grow = 0;

    pthread_mutex_lock(&cli->lock);
    if (!cli->closing) {
        uint64_t now = dango_time_ns();

        l = cli->lanes_free;
        if ((l != NULL) && (l->fd < 0) && (now < cli->lanes_retry_at)) {
            l = NULL; /* its connect failed lately: the shared one */
        } else if (l != NULL) {
            cli->lanes_free = l->next;
        } else if ((cli->lanes_n < cli->lanes_max) &&
                   (now >= cli->lanes_retry_at)) {
            cli->lanes_n++;
            grow = 1;
        }
    }

    pthread_mutex_unlock(&cli->lock);
    if (!grow) {
        return l;
    }

    l = dango_calloc(1, sizeof(*l), "rpc_lane");
    if ((l != NULL) && (dango__rpc_rx_init(&l->rx) != 0)) {
        dango_free(l);
        l = NULL;
    }

    pthread_mutex_lock(&cli->lock);
    if (l == NULL) {
        cli->lanes_n--;
    } else {
        l->fd          = -1;
        l->next_id     = 1;
        l->rx.block    = 1;
        l->all_next    = cli->lanes_all;
        cli->lanes_all = l;
    }

    pthread_mutex_unlock(&cli->lock);
    return l;
}

static void lane_put(dango_rpc_client_t *cli, rpc_lane_t *l)
{
    pthread_mutex_lock(&cli->lock);
    l->next         = cli->lanes_free;
    cli->lanes_free = l;
    pthread_mutex_unlock(&cli->lock);
}

/* Closes the lane's connection (the lane stays borrowed). */
static void lane_close(dango_rpc_client_t *cli, rpc_lane_t *l)
{
    pthread_mutex_lock(&cli->lock);
    if (l->fd >= 0) {
        close(l->fd);
        l->fd = -1;
    }

    pthread_mutex_unlock(&cli->lock);
    dango__rpc_rx_reset(&l->rx);
    l->tmo_ns = 0;
}

static int lane_closing(dango_rpc_client_t *cli)
{
    return __atomic_load_n(&cli->closing, __ATOMIC_ACQUIRE);
}

/* Sets the socket's timeouts to a slice that ends by @deadline. */
static int lane_set_timeout(rpc_lane_t *l, uint64_t deadline)
{
    uint64_t       now = dango_time_ns();
    uint64_t       want;
    struct timeval tv;

    if (now >= deadline) {
        return DANGO_ETIMEDOUT;
    }

    want = DANGO_MIN(deadline - now, LANE_TICK_NS);
    want = (want + 999999) / 1000000 * 1000000; /* whole milliseconds */
    if (want == l->tmo_ns) {
        return 0;
    }

    tv.tv_sec  = (time_t)(want / DANGO_NSEC_PER_SEC);
    tv.tv_usec = (suseconds_t)((want % DANGO_NSEC_PER_SEC) / 1000);
    if ((setsockopt(l->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0) ||
        (setsockopt(l->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)) {
        return dango_err_from_errno(errno);
    }

    l->tmo_ns = want;
    return 0;
}

/* Writes a whole frame; a send timeout only ends a slice. */
static int lane_send(dango_rpc_client_t *cli, rpc_lane_t *l,
                     const dango_frame_t *hdr, const void *data, size_t len,
                     uint64_t deadline)
{
    struct iovec  iov[2] = {{(void *)hdr, DANGO_FRAME_HDR_LEN},
                            {(void *)data, len}};
    struct msghdr msg    = {.msg_iov = iov, .msg_iovlen = (len > 0) ? 2 : 1};

    int rc;

    for (;;) {
        ssize_t n = sendmsg(l->fd, &msg, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }

            if (errno != EAGAIN) {
                return dango_err_from_errno(errno);
            }

            rc = lane_closing(cli) ? DANGO_ECANCELED
                                   : lane_set_timeout(l, deadline);
            if (rc != 0) {
                return rc;
            }

            continue;
        }

        while ((msg.msg_iovlen > 0) && ((size_t)n >= msg.msg_iov->iov_len)) {
            n -= (ssize_t)msg.msg_iov->iov_len;
            msg.msg_iov++;
            msg.msg_iovlen--;
        }

        if (msg.msg_iovlen == 0) {
            return 0;
        }

        msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + n;
        msg.msg_iov->iov_len -= (size_t)n;
        /* A peer that reads a trickle gets no more than the deadline. */
        rc =
            lane_closing(cli) ? DANGO_ECANCELED : lane_set_timeout(l, deadline);
        if (rc != 0) {
            return rc;
        }
    }
}

/*
 * Hello, HelloAck (checked; *@instance_p gets the server's instance) and
 * Auth on the blocking-or-not socket @fd, by @deadline.
 */
static int sock_handshake(dango_rpc_client_t *cli, int fd, uint64_t deadline,
                          uint64_t *instance_p)
{
    Dango__Ctrl__Hello hello = DANGO__CTRL__HELLO__INIT;
    Dango__Ctrl__Auth  auth  = DANGO__CTRL__AUTH__INIT;
    uint8_t            nonce[DANGO_AUTH_NONCE_LEN];
    uint8_t            proof[DANGO_AUTH_PROOF_LEN];
    uint8_t            buf[RPC_HANDSHAKE_MAX];
    dango_frame_t      hdr;
    void              *payload = NULL;
    size_t             len;
    int                send_auth = 0, rc;

    hello_init(cli, nonce, &hello);
    len = protobuf_c_message_get_packed_size(&hello.base);
    if (len > sizeof(buf)) {
        return DANGO_EINVAL;
    }

    protobuf_c_message_pack(&hello.base, buf);
    dango_frame_init(&hdr, DANGO_FRAME_HELLO, 0, 0, len, 0);
    rc = dango_sock_send_frame(fd, &hdr, buf, len, deadline);
    if (rc == 0) {
        rc = dango_sock_recv_frame(fd, &hdr, &payload, deadline);
    }

    if (rc == 0) {
        rc = hello_ack_check(cli, nonce, hdr.type, payload,
                             (size_t)dango_frame_payload_len(&hdr), proof,
                             &send_auth, instance_p);
        dango_free(payload);
    }

    if ((rc == 0) && send_auth) {
        auth.proof.data = proof;
        auth.proof.len  = sizeof(proof);
        len             = protobuf_c_message_pack(&auth.base, buf);
        dango_frame_init(&hdr, DANGO_FRAME_AUTH, 0, 0, len, 0);
        rc = dango_sock_send_frame(fd, &hdr, buf, len, deadline);
    }

    return rc;
}

/*
 * Connects the lane and does the handshake, by @deadline (the call's) and
 * within the connect timeout. The socket is published in l->fd as soon as
 * it exists, so destroy can shut it down.
 */
static int lane_connect(dango_rpc_client_t *cli, rpc_lane_t *l,
                        uint64_t deadline)
{
    int      fd, rc;
    uint64_t now = dango_time_ns();

    /* At most half of what the call has left: a lane that cannot connect
     * leaves the other half to the shared connection. */
    if (deadline > now) {
        deadline = now + DANGO_MIN(cli->connect_ns, (deadline - now) / 2);
    }
    fd = socket(cli->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0) {
        return dango_err_from_errno(errno);
    }

    pthread_mutex_lock(&cli->lock);
    rc = cli->closing ? DANGO_ECANCELED : 0;
    if (rc == 0) {
        l->fd = fd;
    }

    pthread_mutex_unlock(&cli->lock);
    if (rc != 0) {
        close(fd);
        return rc;
    }

    rc = dango_sock_connect_fd(fd, (struct sockaddr *)&cli->ss, cli->ss_len,
                               deadline);
    if (rc != 0) {
        return rc;
    }

    dango_sock_tune(fd);
    rc = sock_handshake(cli, fd, deadline, NULL);
    if (rc == 0) {
        rc = dango_sock_set_nonblock(fd, 0);
    }

    return rc;
}

/* Whether the lane's connection is still open at the server's end. */
static int lane_alive(rpc_lane_t *l)
{
    char    b;
    ssize_t n = recv(l->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

    return (n < 0) && (errno == EAGAIN);
}

/* Reads frames until the reply to call @id. */
static int lane_recv(dango_rpc_client_t *cli, rpc_lane_t *l, uint64_t id,
                     rpc_frame_t *f, uint64_t deadline)
{
    for (;;) {
        int rc;

        l->rx.recvs = RPC_RX_RECVS;
        rc          = dango__rpc_rx_next(&l->rx, l->fd, DANGO_FRAME_RPC_MAX, f);
        if (rc == 1) {
            if ((f->hdr.type != DANGO_FRAME_RPC_RESP) || (f->hdr.id != id)) {
                rpc_peer_error("rpc client %s: unexpected frame type %u id "
                               "%lu on a lane",
                               cli->addr, f->hdr.type,
                               (unsigned long)f->hdr.id);
                return DANGO_EPROTO;
            }

            return 0;
        }

        if (lane_closing(cli)) {
            return DANGO_ECANCELED;
        }

        if (rc < 0) {
            rc = rx_header_error(cli, rc, f);
            return ((rc == DANGO_EPROTO) || (rc == DANGO_ENOMEM))
                       ? rc
                       : DANGO_ECONNRESET;
        }

        rc = lane_set_timeout(l, deadline); /* a slice ended, or a part */
        if (rc != 0) {
            return rc;
        }
    }
}

/*
 * A call on the borrowed lane @l, which it gives back. Returns LANE_SHARED
 * when the lane could not connect: nothing was sent, and the call goes
 * over the shared connection.
 */
static int lane_call(dango_rpc_client_t *cli, rpc_lane_t *l, uint32_t method,
                     req_fill_cb fill, const void *src, size_t len,
                     rpc_out_t *out, uint64_t deadline)
{
    uint8_t       stack[LANE_STACK_REQ];
    uint8_t      *data = stack;
    dango_frame_t hdr;
    rpc_frame_t   f = {0};
    uint64_t      id;
    int           rc;

    if ((l->fd >= 0) && !lane_alive(l)) {
        lane_close(cli, l); /* closed by the server meanwhile */
    }

    if (l->fd < 0) {
        rc = lane_connect(cli, l, deadline);
        if (rc != 0) {
            dango_debug("rpc client %s: lane: %s", cli->addr,
                        dango_strerror(rc));
            lane_close(cli, l);
            pthread_mutex_lock(&cli->lock);
            cli->lanes_retry_at = dango_time_ns() + LANE_BACKOFF_NS;
            pthread_mutex_unlock(&cli->lock);
            lane_put(cli, l);
            return (rc == DANGO_ECANCELED) ? rc : LANE_SHARED;
        }
    }

    if (len > sizeof(stack)) {
        data = dango_malloc(len, "rpc_req");
        if (data == NULL) {
            lane_put(cli, l);
            return DANGO_ENOMEM;
        }
    }

    if (len > 0) {
        fill(src, len, data);
    }

    id = l->next_id++;
    dango_frame_init(&hdr, DANGO_FRAME_RPC_REQ, id, method, len, 0);
    rc = lane_set_timeout(l, deadline);
    if (rc == 0) {
        rc = lane_send(cli, l, &hdr, data, len, deadline);
    }

    if (data != stack) {
        dango_free(data);
    }

    if (rc == 0) {
        rc = lane_recv(cli, l, id, &f, deadline);
    }

    if (rc != 0) {
        /* The call may or may not have been served; a late reply must not
         * meet the next call. */
        lane_close(cli, l);
        lane_put(cli, l);
        if (lane_closing(cli)) {
            return DANGO_ECANCELED;
        }

        return ((rc == DANGO_ETIMEDOUT) || (rc == DANGO_EPROTO) ||
                (rc == DANGO_ENOMEM))
                   ? rc
                   : DANGO_ECONNRESET;
    }

    rc = out_frame(cli, &l->rx, &f, out);

    if (f.in_big) {
        /* Unpacked (copied) or taken: an idle lane keeps no large reply. */
        dango_free(dango__rpc_rx_take(&l->rx));
    }

    lane_put(cli, l);
    return rc;
}

/* ---------- local channel ---------- */

/* Remembers the Unix socket a HelloAck named (loop or calling thread). */
static void chan_learn(dango_rpc_client_t *cli, const char *name,
                       uint64_t instance)
{
    if (!cli->local_on || (name == NULL) || (name[0] == '\0') ||
        (strlen(name) >= sizeof(cli->local_name))) {
        return;
    }

    pthread_mutex_lock(&cli->lock);
    snprintf(cli->local_name, sizeof(cli->local_name), "%s", name);
    cli->local_instance = instance;
    __atomic_store_n(&cli->chan_hint, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&cli->lock);
}

static void chan_free(rpc_cchan_t *ch)
{
    for (uint32_t i = 0; i < RPC_CHAN_LANES; i++) {
        dango_free(ch->lane[i].buf);
    }

    if (ch->hdr != NULL) {
        munmap(ch->hdr, ch->size);
    }

    if (ch->efd >= 0) {
        close(ch->efd);
    }

    dango__rpc_rx_cleanup(&ch->rx);
    dango_free(ch);
}

/* Drops a reference (under lock); true when @ch is to be freed now. */
static int chan_unref(dango_rpc_client_t *cli, rpc_cchan_t *ch)
{
    rpc_cchan_t **pp;

    if (--ch->refs > 0) {
        return 0;
    }

    for (pp = &cli->chans; *pp != ch; pp = &(*pp)->next) {
    }

    *pp = ch->next;
    return 1;
}

/*
 * Fails the channel (under lock): no call takes it any more, the calls in
 * it end with DANGO_ECONNRESET, and the loop closes its socket (which also
 * tells the server).
 */
static void chan_kill(dango_rpc_client_t *cli, rpc_cchan_t *ch)
{
    if (ch->dead) {
        return;
    }

    __atomic_store_n(&ch->dead, 1, __ATOMIC_SEQ_CST);
    if (cli->chan == ch) {
        cli->chan = NULL;
    }

    for (uint32_t i = 0; i < ch->lanes; i++) {
        if (!(ch->free & (1ull << i))) {
            __atomic_store_n(&ch->hdr->lane[i].state, RPC_LANE_DEAD,
                             __ATOMIC_SEQ_CST);
            rpc_chan_futex_wake(&ch->hdr->lane[i].state);
        }
    }

    if (ch->fd >= 0) {
        shutdown(ch->fd, SHUT_RDWR);
    }
}

/* Hands a socket reply to the lane whose call it answers (loop thread). */
static void chan_sock_reply(dango_rpc_client_t *cli, rpc_cchan_t *ch,
                            const rpc_frame_t *f)
{
    rpc_cl_lane_t *cl = NULL;
    uint32_t       i;
    void          *buf = NULL;
    size_t         len = 0;
    int            rc;

    pthread_mutex_lock(&cli->lock);
    for (i = 0; i < ch->lanes; i++) {
        if (!(ch->free & (1ull << i)) && !ch->lane[i].lost &&
            (ch->lane[i].id == f->hdr.id)) {
            cl = &ch->lane[i];
            break;
        }
    }

    pthread_mutex_unlock(&cli->lock);
    if (cl == NULL) {
        dango_trace("rpc client %s: late channel reply %lu dropped", cli->addr,
                    (unsigned long)f->hdr.id);
        return;
    }

    rc = reply_status(cli, f);
    if (rc == 0) {
        rc = reply_payload(&ch->rx, f, &buf, &len);
    }

    cl->rc  = rc;
    cl->buf = buf;
    cl->len = len;
    __atomic_store_n(&ch->hdr->lane[i].state, RPC_LANE_SOCK, __ATOMIC_SEQ_CST);
    rpc_chan_futex_wake(&ch->hdr->lane[i].state);
}

/* The channel's socket: replies too large for a lane, and its end. */
static void chan_io_cb(dango_loop_t *loop, int fd, unsigned events, void *arg)
{
    rpc_cchan_t        *ch  = arg;
    dango_rpc_client_t *cli = ch->cli;
    rpc_frame_t         f   = {0};
    int                 rc  = 0, last;

    ch->rx.recvs = RPC_RX_RECVS;
    for (;;) {
        memset(&f, 0, sizeof(f));
        rc = dango__rpc_rx_next(&ch->rx, fd, DANGO_FRAME_RPC_MAX, &f);
        if (rc <= 0) {
            break;
        }

        if (f.hdr.type != DANGO_FRAME_RPC_RESP) {
            rpc_peer_error("rpc client %s: frame type %u on the channel",
                           cli->addr, f.hdr.type);
            rc = DANGO_EPROTO;
            break;
        }

        chan_sock_reply(cli, ch, &f);
        if (f.in_big) {
            dango_free(dango__rpc_rx_take(&ch->rx));
        }
    }

    if ((rc == 0) && !(events & DANGO_LOOP_ERROR)) {
        return;
    }

    if ((rc != 0) && (rc != DANGO_ECONNRESET)) {
        rx_header_error(cli, rc, &f);
    }

    dango_loop_fd_del(loop, fd);
    pthread_mutex_lock(&cli->lock);
    ch->watched = 0;
    ch->fd      = -1; /* no shutdown() may reach the number once closed */
    chan_kill(cli, ch);
    last = chan_unref(cli, ch);
    pthread_mutex_unlock(&cli->lock);
    close(fd);
    if (last) {
        chan_free(ch);
    }
}

typedef struct chan_watch_arg {
    dango_rpc_client_t *cli;
    rpc_cchan_t        *ch;
    int                 rc;
} chan_watch_arg_t;

static void chan_watch(void *arg)
{
    chan_watch_arg_t *a = arg;

    a->rc = dango_loop_fd_add(a->cli->loop, a->ch->fd, DANGO_LOOP_READ,
                              chan_io_cb, a->ch);
    pthread_mutex_lock(&a->cli->lock);
    if (a->rc == 0) {
        a->ch->watched = 1;
    } else {
        a->ch->refs--; /* the watch's reference: the opener holds one */
    }

    pthread_mutex_unlock(&a->cli->lock);
}

/* Maps the channel a ChanAck on @fd grants, with its descriptors. */
static int chan_map(dango_rpc_client_t *cli, int fd, uint64_t deadline,
                    rpc_cchan_t *ch)
{
    Dango__Ctrl__ChanAck *ack = NULL;
    dango_frame_t         hdr;
    uint8_t               buf[128];
    int                   fds[2] = {-1, -1};
    unsigned              n      = 0;
    struct stat           st;
    int                   rc;

    rc = dango_sock_recv_hdr_fds(fd, &hdr, fds, 2, &n, deadline);
    if ((rc == 0) &&
        ((dango_frame_check(&hdr) != 0) || (hdr.type != DANGO_FRAME_CHAN_ACK) ||
         (hdr.length > sizeof(buf)))) {
        rc = DANGO_EPROTO;
    }

    if (rc == 0) {
        rc = dango_sock_recv_all(fd, buf, hdr.length, deadline);
    }

    if (rc == 0) {
        ack = dango__ctrl__chan_ack__unpack(NULL, hdr.length, buf);
        rc  = (ack == NULL) ? DANGO_EPROTO : ack->status;
    }

    if ((rc == 0) &&
        ((n != 2) || (ack->lanes == 0) || (ack->lanes > RPC_CHAN_LANES) ||
         (ack->req_cap < 4096) || (ack->req_cap > RPC_CHAN_REQ_CAP) ||
         (ack->rep_cap < 4096) || (ack->rep_cap > (64u << 20)) ||
         (ack->size != rpc_chan_size(ack->lanes, ack->req_cap, ack->rep_cap)) ||
         (fstat(fds[0], &st) != 0) || ((uint64_t)st.st_size < ack->size))) {
        rpc_peer_error("rpc client %s: channel offer not usable", cli->addr);
        rc = DANGO_EPROTO;
    }

    if (rc == 0) {
        ch->hdr = mmap(NULL, ack->size, PROT_READ | PROT_WRITE, MAP_SHARED,
                       fds[0], 0);
        if (ch->hdr == MAP_FAILED) {
            ch->hdr = NULL;
            rc      = dango_err_from_errno(errno);
        }
    }

    if (rc == 0) {
        ch->size    = ack->size;
        ch->lanes   = ack->lanes;
        ch->req_cap = ack->req_cap;
        ch->rep_cap = ack->rep_cap;
        ch->efd     = fds[1];
        fds[1]      = -1;
        if ((ch->hdr->magic != RPC_CHAN_MAGIC) ||
            (ch->hdr->version != RPC_CHAN_VERSION) ||
            (ch->hdr->lanes != ch->lanes)) {
            rc = DANGO_EPROTO;
        }
    }

    dango__ctrl__chan_ack__free_unpacked(ack, NULL);
    for (int i = 0; i < 2; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }

    return rc;
}

/*
 * Opens the local channel on a calling thread, by @deadline (at most half
 * of what is left of it). On failure no channel is tried again for
 * CHAN_BACKOFF_NS, nor before a HelloAck names the socket again.
 */
static void chan_open(dango_rpc_client_t *cli, uint64_t deadline)
{
    Dango__Ctrl__ChanOpen req = DANGO__CTRL__CHAN_OPEN__INIT;
    struct sockaddr_un    un  = {.sun_family = AF_UNIX};
    chan_watch_arg_t      wa  = {.cli = cli, .rc = 0};
    rpc_cchan_t          *ch;
    dango_frame_t         hdr;
    uint8_t               buf[16];
    uint64_t              want, inst = 0, now = dango_time_ns();
    size_t                n;
    int                   fd = -1, last, rc;

    if (deadline > now) {
        deadline = now + DANGO_MIN(cli->connect_ns, (deadline - now) / 2);
    }

    ch = dango_calloc(1, sizeof(*ch), "rpc_chan");
    if (ch == NULL) {
        rc = DANGO_ENOMEM;
        goto fail;
    }

    ch->cli = cli;
    ch->efd = -1;
    ch->fd  = -1;
    rc      = dango__rpc_rx_init(&ch->rx);
    if (rc == 0) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        rc = (fd < 0) ? dango_err_from_errno(errno) : 0;
    }

    if (rc != 0) {
        chan_free(ch);
        goto fail;
    }

    /* Listed (and its socket published) from now on, so that destroy can
     * end the handshake's waits with chan_kill(). */
    pthread_mutex_lock(&cli->lock);
    ch->fd     = fd;
    ch->refs   = 1; /* ours */
    ch->next   = cli->chans;
    cli->chans = ch;
    n          = strlen(cli->local_name);
    want       = cli->local_instance;
    memcpy(un.sun_path + 1, cli->local_name, n); /* abstract */
    rc = cli->closing ? DANGO_ECANCELED : 0;
    pthread_mutex_unlock(&cli->lock);
    if (rc == 0) {
        rc = dango_sock_connect_fd(
            fd, (struct sockaddr *)&un,
            (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n),
            deadline);
    }

    if (rc == 0) {
        rc = sock_handshake(cli, fd, deadline, &inst);
    }

    if ((rc == 0) && (inst != want)) {
        rc = DANGO_EPEER_GONE; /* another server took the name */
    }

    if (rc == 0) {
        req.lanes = RPC_CHAN_DEFAULT_LANES;
        dango_frame_init(&hdr, DANGO_FRAME_CHAN_OPEN, 0, 0,
                         protobuf_c_message_pack(&req.base, buf), 0);
        rc = dango_sock_send_frame(fd, &hdr, buf, (size_t)hdr.length, deadline);
    }

    if (rc == 0) {
        rc = chan_map(cli, fd, deadline, ch);
    }

    if (rc == 0) {
        pthread_mutex_lock(&cli->lock);
        ch->free = (ch->lanes == 64) ? ~0ull : ((1ull << ch->lanes) - 1);
        ch->refs++; /* the loop's watch, from the moment it may run */
        pthread_mutex_unlock(&cli->lock);
        wa.ch = ch;
        dango_loop_run_sync(cli->loop, chan_watch, &wa);
        rc = wa.rc;
    }

    pthread_mutex_lock(&cli->lock);
    if ((rc == 0) && (ch->dead || cli->closing)) {
        rc = DANGO_ECONNRESET;
    }

    if (rc == 0) {
        cli->chan = ch;
    } else {
        chan_kill(cli, ch);
        if (ch->watched || (ch->fd < 0)) {
            fd = -1; /* the loop closes it, or already did */
        } else {
            ch->fd = -1; /* never watched: closed below */
        }
    }

    cli->chan_opening = 0;
    if (rc != 0) {
        cli->chan_retry_at = dango_time_ns() + CHAN_BACKOFF_NS;
        if ((rc == DANGO_ECONNREFUSED) || (rc == DANGO_EPEER_GONE)) {
            /* Not on this host (or not that instance): TCP until a
             * HelloAck names a socket again. */
            cli->local_name[0] = '\0';
            __atomic_store_n(&cli->chan_hint, 0, __ATOMIC_RELAXED);
        }
    }

    last = chan_unref(cli, ch);
    pthread_mutex_unlock(&cli->lock);
    if (rc == 0) {
        dango_debug("rpc client %s: local channel of %u lanes", cli->addr,
                    ch->lanes);
        return;
    }

    dango_debug("rpc client %s: no local channel: %s", cli->addr,
                dango_strerror(rc));
    if (fd >= 0) {
        close(fd);
    }

    if (last) {
        chan_free(ch);
    }

    return;

fail:
    dango_debug("rpc client %s: no local channel: %s", cli->addr,
                dango_strerror(rc));
    pthread_mutex_lock(&cli->lock);
    cli->chan_opening  = 0;
    cli->chan_retry_at = dango_time_ns() + CHAN_BACKOFF_NS;
    pthread_mutex_unlock(&cli->lock);
}

/*
 * Borrows a lane of the channel (opening the channel first when the server
 * named one and none is open): returns its index with a reference on
 * *@ch_p, or -1 (the call takes the sockets).
 */
static int chan_get(dango_rpc_client_t *cli, size_t len, uint64_t deadline,
                    rpc_cchan_t **ch_p, uint64_t *id_p)
{
    rpc_cchan_t *ch;
    int          open, i = -1;

    if (!__atomic_load_n(&cli->chan_hint, __ATOMIC_RELAXED)) {
        return -1;
    }

    pthread_mutex_lock(&cli->lock);
    if ((cli->chan == NULL) && !cli->chan_opening && !cli->closing &&
        (cli->local_name[0] != '\0') &&
        (dango_time_ns() >= cli->chan_retry_at)) {
        cli->chan_opening = 1;
        pthread_mutex_unlock(&cli->lock);
        chan_open(cli, deadline);
        pthread_mutex_lock(&cli->lock);
    }

    ch   = cli->chan;
    open = (ch != NULL) && (ch->free != 0) &&
           (sizeof(dango_frame_t) + len <= ch->req_cap);
    if (open) {
        i = __builtin_ctzll(ch->free);
        ch->free &= ~(1ull << i);
        ch->refs++;
        ch->lane[i].id = cli->next_id++;
        *id_p          = ch->lane[i].id;
        *ch_p          = ch;
    }

    pthread_mutex_unlock(&cli->lock);
    return i;
}

/* Gives lane @i back (or loses it: a reply may still come), under lock. */
static void chan_put(dango_rpc_client_t *cli, rpc_cchan_t *ch, uint32_t i,
                     int lost)
{
    int last;

    pthread_mutex_lock(&cli->lock);
    if (lost) {
        ch->lane[i].lost = 1;
        if (++ch->lost > ch->lanes / 2) {
            chan_kill(cli, ch); /* the next call opens a fresh one */
        }
    } else {
        __atomic_store_n(&ch->hdr->lane[i].state, RPC_LANE_FREE,
                         __ATOMIC_RELAXED);
        ch->free |= 1ull << i;
    }

    last = chan_unref(cli, ch);
    pthread_mutex_unlock(&cli->lock);
    if (last) {
        chan_free(ch);
    }
}

/* Waits for lane @i's reply; returns the lane's state or DANGO_ETIMEDOUT. */
static int chan_wait(dango_rpc_client_t *cli, rpc_cchan_t *ch, uint32_t i,
                     uint64_t deadline)
{
    rpc_chan_lane_t *ln = &ch->hdr->lane[i];

    for (;;) {
        uint32_t s = __atomic_load_n(&ln->state, __ATOMIC_ACQUIRE);
        uint64_t now;

        if ((s == RPC_LANE_DONE) || (s == RPC_LANE_SOCK) ||
            (s == RPC_LANE_DEAD)) {
            return (int)s;
        }

        if ((s != RPC_LANE_REQ) && (s != RPC_LANE_BUSY)) {
            return RPC_LANE_DEAD; /* not a state the server may set */
        }

        now = dango_time_ns();
        if (now >= deadline) {
            return DANGO_ETIMEDOUT;
        }

        if (__atomic_load_n(&cli->closing, __ATOMIC_ACQUIRE) ||
            __atomic_load_n(&ch->dead, __ATOMIC_SEQ_CST)) {
            return RPC_LANE_DEAD; /* whatever the lane says now */
        }

        __atomic_store_n(&ln->cli_wait, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&ln->state, __ATOMIC_SEQ_CST) == s) {
            rpc_chan_futex_wait(&ln->state, s,
                                DANGO_MIN(deadline, now + CHAN_TICK_NS));
        }

        __atomic_store_n(&ln->cli_wait, 0, __ATOMIC_RELAXED);
    }
}

/* The reply the server wrote into lane @i for call @id, into @out. */
static int chan_take_reply(dango_rpc_client_t *cli, rpc_cchan_t *ch, uint32_t i,
                           uint64_t id, rpc_out_t *out)
{
    uint32_t len = __atomic_load_n(&ch->hdr->lane[i].rep_len, __ATOMIC_RELAXED);
    const char *rep = rpc_chan_rep(ch->hdr, i, ch->req_cap, ch->rep_cap);
    rpc_frame_t f   = {0};

    if ((len < sizeof(f.hdr)) || (len > ch->rep_cap)) {
        return DANGO_EPROTO;
    }

    memcpy(&f.hdr, rep, sizeof(f.hdr));
    if ((dango_frame_check(&f.hdr) != 0) ||
        (f.hdr.type != DANGO_FRAME_RPC_RESP) || (f.hdr.id != id) ||
        (f.hdr.length != len - sizeof(f.hdr))) {
        rpc_peer_error("rpc client %s: bad reply in channel lane %u", cli->addr,
                       i);
        return DANGO_EPROTO;
    }

    f.payload = rep + sizeof(f.hdr);
    f.len     = f.hdr.length;
    return out_frame(cli, NULL, &f, out);
}

/*
 * A call through the local channel. Returns LANE_SHARED when it cannot
 * take one (none open, every lane taken, request too large): nothing was
 * sent.
 */
static int chan_call(dango_rpc_client_t *cli, uint32_t method, req_fill_cb fill,
                     const void *src, size_t len, rpc_out_t *out,
                     uint64_t deadline)
{
    rpc_cchan_t     *ch = NULL;
    rpc_chan_lane_t *ln;
    dango_frame_t    hdr;
    uint64_t         id = 0, one = 1;
    char            *req;
    int              i, st, rc;

    i = chan_get(cli, len, deadline, &ch, &id);
    if (i < 0) {
        return LANE_SHARED;
    }

    ln  = &ch->hdr->lane[i];
    req = rpc_chan_req(ch->hdr, (uint32_t)i, ch->req_cap, ch->rep_cap);
    dango_frame_init(&hdr, DANGO_FRAME_RPC_REQ, id, method, len, 0);
    memcpy(req, &hdr, sizeof(hdr));
    if (len > 0) {
        fill(src, len, (uint8_t *)req + sizeof(hdr));
    }

    __atomic_store_n(&ln->req_len, (uint32_t)(sizeof(hdr) + len),
                     __ATOMIC_RELAXED);
    __atomic_store_n(&ln->state, RPC_LANE_REQ, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&ch->hdr->srv_sleep, __ATOMIC_SEQ_CST) &&
        __atomic_exchange_n(&ch->hdr->srv_sleep, 0, __ATOMIC_SEQ_CST) &&
        (write(ch->efd, &one, sizeof(one)) < 0)) {
        /* Only a full counter fails: the server has kicks to read. */
    }

    st = chan_wait(cli, ch, (uint32_t)i, deadline);
    switch (st) {
    case RPC_LANE_DONE:
        rc = chan_take_reply(cli, ch, (uint32_t)i, id, out);
        break;
    case RPC_LANE_SOCK:
        rc = out_take(out, ch->lane[i].rc, ch->lane[i].buf, ch->lane[i].len);
        ch->lane[i].buf = NULL;
        break;
    case DANGO_ETIMEDOUT:
        chan_put(cli, ch, (uint32_t)i, 1);
        return DANGO_ETIMEDOUT;
    default:
        rc = __atomic_load_n(&cli->closing, __ATOMIC_ACQUIRE)
                 ? DANGO_ECANCELED
                 : DANGO_ECONNRESET;
        pthread_mutex_lock(&cli->lock);
        chan_kill(cli, ch);
        pthread_mutex_unlock(&cli->lock);
        chan_put(cli, ch, (uint32_t)i, 1);
        return rc;
    }

    if (rc == DANGO_EPROTO) {
        pthread_mutex_lock(&cli->lock);
        chan_kill(cli, ch); /* a server that breaks the protocol */
        pthread_mutex_unlock(&cli->lock);
    }

    chan_put(cli, ch, (uint32_t)i, 0);
    return rc;
}

/* ---------- calls ---------- */

static int client_call(dango_rpc_client_t *cli, uint32_t method,
                       req_fill_cb fill, const void *src, size_t len,
                       rpc_out_t *out, uint64_t timeout_ns)
{
    uint64_t    deadline;
    rpc_lane_t *l;
    unsigned    inflight;
    int         rc = LANE_SHARED;

    if (len > DANGO_FRAME_RPC_MAX) {
        return DANGO_EMSGSIZE;
    }

    deadline = dango_time_ns() + (timeout_ns ? timeout_ns : cli->call_ns);
    inflight = __atomic_add_fetch(&cli->users, 1, __ATOMIC_ACQUIRE);
    if (cli->local_on) {
        rc = chan_call(cli, method, fill, src, len, out, deadline);
    }

    l = ((rc == LANE_SHARED) && (inflight <= cli->lanes_max)) ? lane_get(cli)
                                                              : NULL;
    if (l != NULL) {
        rc = lane_call(cli, l, method, fill, src, len, out, deadline);
    }

    if (rc == LANE_SHARED) {
        rc = shared_call(cli, method, fill, src, len, out, deadline);
    }

    /* The last access to @cli: destroy may free it right after. */
    __atomic_sub_fetch(&cli->users, 1, __ATOMIC_RELEASE);
    return rc;
}

int dango_rpc_call(dango_rpc_client_t *cli, uint32_t method, const void *req,
                   size_t len, void **reply_p, size_t *reply_len_p,
                   uint64_t timeout_ns)
{
    rpc_out_t out = {0};
    int       rc;

    if ((cli == NULL) || ((req == NULL) && (len > 0))) {
        return DANGO_EINVAL;
    }

    rc = client_call(cli, method, fill_copy, req, len, &out, timeout_ns);
    if (rc != 0) {
        return rc;
    }

    if (reply_p != NULL) {
        *reply_p = out.buf;
    } else {
        dango_free(out.buf);
    }

    if (reply_len_p != NULL) {
        *reply_len_p = out.len;
    }

    return 0;
}

int dango_rpc_call_pb(dango_rpc_client_t *cli, uint32_t method,
                      const ProtobufCMessage           *req,
                      const ProtobufCMessageDescriptor *reply_desc,
                      ProtobufCMessage **reply_p, uint64_t timeout_ns)
{
    rpc_out_t out = {.desc = reply_desc};
    int       rc;

    if ((cli == NULL) || (req == NULL) || (reply_desc == NULL) ||
        (reply_p == NULL)) {
        return DANGO_EINVAL;
    }

    rc = client_call(cli, method, fill_pb, req,
                     protobuf_c_message_get_packed_size(req), &out, timeout_ns);
    if (rc == 0) {
        *reply_p = out.msg;
    }

    return rc;
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
    cli->lanes_max  = (p == NULL || p->lanes == 0) ? DANGO_RPC_DEFAULT_LANES
                      : (p->lanes < 0)             ? 0
                                                   : (unsigned)p->lanes;
    cli->local_on   = (p == NULL) || (p->local >= 0);
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
    rpc_lane_t   *l;

    if (cli == NULL) {
        return;
    }

    pthread_mutex_lock(&cli->lock);
    __atomic_store_n(&cli->closing, 1, __ATOMIC_RELEASE);
    for (rpc_cchan_t *ch = cli->chans; ch != NULL; ch = ch->next) {
        chan_kill(cli, ch); /* ends the waits of its calls */
    }

    for (l = cli->lanes_all; l != NULL; l = l->all_next) {
        if (l->fd >= 0) {
            shutdown(l->fd, SHUT_RDWR); /* ends a borrower's wait */
        }
    }

    all = table_take_all(cli);
    pthread_mutex_unlock(&cli->lock);
    waiters_fail(all, DANGO_ECANCELED);

    /* Callers leave within moments once failed; none may enter now. */
    while (__atomic_load_n(&cli->users, __ATOMIC_ACQUIRE) != 0) {
        sched_yield();
    }

    while (cli->lanes_all != NULL) {
        l              = cli->lanes_all;
        cli->lanes_all = l->all_next;
        if (l->fd >= 0) {
            close(l->fd);
        }

        dango__rpc_rx_cleanup(&l->rx);
        dango_free(l);
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
