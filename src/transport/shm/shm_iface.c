/*
 * shm transport: same-host transfers as one memcpy into the peer's memory.
 *
 * DESIGN
 *
 * Memory that the engine allocates for remote access is backed by a memfd.
 * A peer on the same host maps those memfds into its own address space once,
 * when it creates its endpoint, and from then on a slice is a plain memcpy
 * between local memory and the mapping: no syscall, no socket, no page
 * fault on the data path (mappings are made with MAP_POPULATE, because
 * faulting shared pages in on first touch halves the copy rate).
 *
 * Target side (the "server"): iface_open() listens on an abstract-namespace
 * Unix stream socket "@dango-shm-<instance hex>-<pid>", published as
 * {"uds": ...} in the segment descriptor. The listener and its connections
 * live on loops[0]. A connection goes through:
 *   1. SO_PEERCRED: the peer must run under our uid (or we are root);
 *   2. HELLO -> HELLO_ACK (nonces; with a token, the server's proof);
 *   3. with a token, AUTH carrying the client's proof, checked here;
 *   4. any number of SHM_MAP{addr} -> SHM_MAP_RESP{status, addr, length},
 *      with the memfd (host->mem_fd()) attached by SCM_RIGHTS on success.
 * The server reads one whole frame per readable event with a blocking
 * exchange bounded by SHM_TIMEOUT; these are tiny control messages from a
 * process of the same user, so a stall costs at most SHM_TIMEOUT on
 * loops[0] and cannot hang it. Anything malformed closes the connection
 * with one logged error. The connection then stays open and idle: its
 * closing is how the client learns that the target went away.
 *
 * Initiator side (the "client"): ep_create() parses the peer descriptor,
 * connects, authenticates the server (a client with a token refuses a
 * server without a valid proof; a client without a token refuses a server
 * that demands one, rather than be cut off later), and maps every buffer
 * marked "shm" and "remote". The mappings are sorted by remote address so
 * a lookup is a binary search; they stay until ep_destroy().
 *
 * post() checks that the slice lies inside one mapping (never touching
 * anything else), then hands the memcpy to one of the engine loops,
 * round-robin, using the slice's tp_priv as the loop task: copies of
 * different slices run on different cores in parallel and post() returns
 * at once. A slice of at most SHM_INLINE_MAX bytes is instead copied and
 * completed inside post(), on the submitting thread: for small transfers
 * the two thread hand-offs (to the loop and back to the waiter) cost more
 * than the copy. The copy task completes the slice and only then drops the
 * endpoint's in-flight count, so ep_destroy() (which waits, bounded, for
 * the count to reach zero before unmapping) also guarantees that no
 * completion for the endpoint runs after it returns.
 *
 * Threads: listener and server connections are owned by loops[0]; since
 * dango_loop_fd_add/del are not thread-safe, iface_open() and iface_close()
 * reach the loop through posted tasks. iface_close() waits for its task
 * (bounded); if loops[0] does not run it in time, ownership of the iface
 * passes to the queued task, which frees it whenever it runs, so there is
 * no use after free whatever the engine's shutdown order. post() and
 * ep_can_serve() are safe from any thread. ep_create() blocks for up to
 * SHM_TIMEOUT and must not run on loops[0] of the engine it targets.
 *
 * Liveness: a mapping outlives the target process (the pages stay while
 * mapped), so writes to a dead peer would "succeed". The idle control
 * connection is watched on loops[0]: the hang-up the kernel reports when
 * the target dies marks the endpoint gone at once, and post() fails slices
 * with DANGO_EPEER_GONE from then on (an atomic load: no syscall on the
 * data path).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define DANGO_LOG_COMPONENT dango__log_shm

#include <dango/error.h>
#include <dango/log.h>
#include <dango/transport.h>
#include "common/alloc.h"
#include "common/config_table.h"
#include "common/copy.h"
#include "common/list.h"
#include "common/loop.h"
#include "common/time.h"
#include "net/auth.h"
#include "net/frame.h"
#include "net/sock.h"
#include "dango_ctrl.pb-c.h"

DANGO_LOG_COMPONENT_DEFINE(dango__log_shm, "shm");

#define SHM_UDS_PREFIX     "@dango-shm-"
#define SHM_UDS_MAX        64
#define SHM_LISTEN_BACKLOG 128
#define SHM_ACCEPT_BURST   32   /* accepts per readable event */
#define SHM_MSG_MAX        4096 /* largest control payload accepted */
#define SHM_MSG_STACK      256  /* packed messages built on the stack */

typedef struct shm_config {
    size_t   max_slice;
    size_t   inline_max;
    uint64_t timeout_ns;
} shm_config_t;

/* Server connection state. */
typedef enum shm_conn_state {
    SHM_CONN_HELLO, /* waiting for HELLO */
    SHM_CONN_AUTH,  /* token set: waiting for AUTH */
    SHM_CONN_READY  /* serving SHM_MAP requests */
} shm_conn_state_t;

/* One accepted connection; owned by loops[0]. */
typedef struct shm_conn {
    dango_list_link_t link; /* in iface->conns */
    dango_tp_iface_t *iface;
    int               fd;
    shm_conn_state_t  state;
    uint8_t           client_nonce[DANGO_AUTH_NONCE_LEN];
    uint8_t           server_nonce[DANGO_AUTH_NONCE_LEN];
} shm_conn_t;

/* iface_close() handshake with the teardown task on loops[0]. */
typedef struct shm_sync {
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    int             done;      /* the task has run */
    int             abandoned; /* the closer gave up: the task frees */
} shm_sync_t;

struct dango_tp_iface {
    const dango_tp_host_t *host;
    dango_loop_t         **loops; /* copy of params->loops */
    unsigned               num_loops;
    unsigned               next_loop; /* atomic round-robin cursor */
    char                  *segment_name;
    uint64_t               instance_id;
    char                  *token; /* NULL: no authentication */
    shm_config_t           cfg;
    uid_t                  uid;
    int                    listen_fd;
    int                    listening; /* loops[0] only */
    dango_list_link_t      conns;     /* loops[0] only */
    char                   uds[SHM_UDS_MAX];
    char                   desc_json[SHM_UDS_MAX + 16];
    dango_loop_task_t      reg_task;
    dango_loop_task_t      close_task;
    shm_sync_t             close_sync;
};

/* One peer buffer mapped into this process. */
typedef struct shm_map {
    uint64_t remote; /* the buffer's address in the peer */
    uint64_t length;
    uint8_t *base; /* our mapping of it */
} shm_map_t;

struct dango_tp_ep {
    dango_tp_iface_t *iface;
    shm_map_t        *maps; /* sorted by remote, non-overlapping */
    unsigned          num_maps;
    int               fd;       /* idle control connection (liveness) */
    unsigned          inflight; /* atomic: copies queued or running */
    int               gone;     /* atomic: the target closed */
    int               watched;  /* fd watched on loops[0] (loop-owned) */
};

/* A queued copy, stored in slice->tp_priv. */
typedef struct shm_op {
    dango_loop_task_t task; /* first: the loop hands this pointer back */
    dango_tp_ep_t    *ep;
    uint8_t          *mapped; /* remote side of the copy, in our mapping */
} shm_op_t;

_Static_assert(sizeof(shm_op_t) <= sizeof(((dango_tp_slice_t *)0)->tp_priv),
               "shm_op_t must fit in dango_tp_slice_t.tp_priv");
_Static_assert(offsetof(shm_op_t, task) == 0,
               "the loop task must be the first member of shm_op_t");

/* A buffer of the peer descriptor that should be mapped. */
typedef struct shm_buf_desc {
    uint64_t addr;
    uint64_t length;
} shm_buf_desc_t;

static const dango_config_field_t shm_config_fields[] = {
    {"MAX_SLICE", "4m",
     "Preferred slice size for same-host copies; each slice is one memcpy "
     "on one engine loop.",
     offsetof(shm_config_t, max_slice), DANGO_CFG_SIZE},
    {"INLINE_MAX", "64k",
     "Slices up to this size are copied by the thread that submits them, "
     "at once, instead of on an engine loop: no thread hand-off for small "
     "transfers. 0 sends every slice to the loops.",
     offsetof(shm_config_t, inline_max), DANGO_CFG_SIZE},
    {"TIMEOUT", "5s",
     "Time allowed for connecting to a same-host peer and for each control "
     "exchange (handshake, buffer mapping).",
     offsetof(shm_config_t, timeout_ns), DANGO_CFG_TIME},
    {NULL, NULL, NULL, 0, DANGO_CFG_STRING}};

static dango_config_table_t shm_config_table = {
    .prefix = "SHM",
    .doc    = "Same-host shared-memory transport",
    .fields = shm_config_fields,
    .next   = NULL};

DANGO_CONFIG_REGISTER_TABLE(shm_config_table)

/* ---------- private functions: socket helpers ---------- */

/* Fills @sa with the abstract address named "@name". */
static int shm_uds_addr(const char *name, struct sockaddr_un *sa,
                        socklen_t *len_p)
{
    size_t n;

    if ((name == NULL) || (name[0] != '@')) {
        return DANGO_EINVAL;
    }

    n = strlen(name + 1);
    if ((n == 0) || (n >= sizeof(sa->sun_path))) {
        return DANGO_EINVAL;
    }

    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path + 1, name + 1, n); /* sun_path[0] = 0: abstract */
    *len_p = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
    return 0;
}

/* Peer uid of a connected Unix socket. */
static int shm_peer_uid(int fd, uid_t *uid_p)
{
    struct ucred cred;
    socklen_t    len = sizeof(cred);

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        return dango_err_from_errno(errno);
    }

    *uid_p = cred.uid;
    return 0;
}

/*
 * Sends one frame whose payload is the packed @msg. With @pass_fd >= 0 the
 * descriptor travels as SCM_RIGHTS with the first byte of the header.
 */
static int shm_send_msg(int fd, uint8_t type, int32_t status, uint64_t addr,
                        const ProtobufCMessage *msg, int pass_fd,
                        uint64_t deadline_ns)
{
    uint8_t       stack[SHM_MSG_STACK];
    uint8_t      *buf = stack;
    size_t        len = protobuf_c_message_get_packed_size(msg);
    dango_frame_t hdr;
    int           rc;

    if (len > SHM_MSG_MAX) {
        return DANGO_EMSGSIZE;
    }

    if (len > sizeof(stack)) {
        buf = dango_malloc(len, "shm_msg");
        if (buf == NULL) {
            return DANGO_ENOMEM;
        }
    }

    protobuf_c_message_pack(msg, buf);
    dango_frame_init(&hdr, type, 0, addr, len, status);
    rc = dango_sock_send_frame_fds(fd, &hdr, buf, len, &pass_fd,
                                   (pass_fd >= 0) ? 1 : 0, deadline_ns);
    if (buf != stack) {
        dango_free(buf);
    }

    return rc;
}

/*
 * Receives a frame header, collecting at most one descriptor passed with
 * it (extra ones are closed). Returns 0 with *fd_p >= 0 or -1.
 */
static int shm_recv_hdr_fd(int fd, dango_frame_t *hdr, int *fd_p,
                           uint64_t deadline_ns)
{
    unsigned n;
    int      rc = dango_sock_recv_hdr_fds(fd, hdr, fd_p, 1, &n, deadline_ns);

    if ((rc == 0) && (n == 0)) {
        *fd_p = -1;
    }

    return rc;
}

/* Fills a nonce from the kernel's random pool. */
static int shm_nonce(uint8_t *nonce)
{
    ssize_t n = getrandom(nonce, DANGO_AUTH_NONCE_LEN, 0);

    if (n != DANGO_AUTH_NONCE_LEN) {
        return DANGO_EIO;
    }

    return 0;
}

/* ---------- private functions: server side (loops[0]) ---------- */

static void shm_conn_close(shm_conn_t *conn)
{
    dango_tp_iface_t *iface = conn->iface;

    dango_loop_fd_del(iface->loops[0], conn->fd);
    close(conn->fd);
    dango_list_del(&conn->link);
    dango_free(conn);
}

static int shm_srv_hello(shm_conn_t *conn, const dango_frame_t *hdr,
                         const void *payload)
{
    dango_tp_iface_t     *iface = conn->iface;
    Dango__Ctrl__HelloAck ack   = DANGO__CTRL__HELLO_ACK__INIT;
    Dango__Ctrl__Hello   *hello;
    uint8_t               proof[DANGO_AUTH_PROOF_LEN];
    uint64_t              deadline;
    int                   rc;

    hello = dango__ctrl__hello__unpack(NULL, hdr->length, payload);
    if (hello == NULL) {
        dango_error("shm_iface %p: fd %d: malformed hello", (void *)iface,
                    conn->fd);
        return DANGO_EPROTO;
    }

    if (hello->nonce.len != DANGO_AUTH_NONCE_LEN) {
        dango_error("shm_iface %p: fd %d: hello nonce has %zu bytes",
                    (void *)iface, conn->fd, hello->nonce.len);
        rc = DANGO_EPROTO;
        goto out;
    }

    memcpy(conn->client_nonce, hello->nonce.data, DANGO_AUTH_NONCE_LEN);
    rc = shm_nonce(conn->server_nonce);
    if (rc != 0) {
        dango_error("shm_iface %p: getrandom failed: %m", (void *)iface);
        goto out;
    }

    ack.version      = DANGO_FRAME_VERSION;
    ack.segment_name = iface->segment_name;
    ack.instance_id  = iface->instance_id;
    ack.nonce.data   = conn->server_nonce;
    ack.nonce.len    = DANGO_AUTH_NONCE_LEN;
    if ((hello->target_name != NULL) && (hello->target_name[0] != '\0') &&
        (strcmp(hello->target_name, iface->segment_name) != 0)) {
        /* The client reached the wrong segment: tell it, then close. */
        dango_debug("shm_iface %p: fd %d: hello for segment '%s', we are "
                    "'%s'",
                    (void *)iface, conn->fd, hello->target_name,
                    iface->segment_name);
        ack.status = DANGO_ENOENT;
    }

    if ((iface->token != NULL) && (ack.status == 0)) {
        rc = dango_auth_proof(iface->token, DANGO_AUTH_ROLE_SERVER,
                              conn->client_nonce, conn->server_nonce, proof);
        if (rc != 0) {
            dango_error("shm_iface %p: cannot compute auth proof: %s",
                        (void *)iface, dango_strerror(rc));
            goto out;
        }

        ack.proof.data = proof;
        ack.proof.len  = sizeof(proof);
    }

    deadline = dango_time_ns() + iface->cfg.timeout_ns;
    rc = shm_send_msg(conn->fd, DANGO_FRAME_HELLO_ACK, ack.status, 0, &ack.base,
                      -1, deadline);
    if (rc != 0) {
        dango_error("shm_iface %p: fd %d: cannot send hello ack: %s",
                    (void *)iface, conn->fd, dango_strerror(rc));
        goto out;
    }

    if (ack.status != 0) {
        rc = ack.status;
        goto out;
    }

    conn->state = (iface->token != NULL) ? SHM_CONN_AUTH : SHM_CONN_READY;

out:
    dango__ctrl__hello__free_unpacked(hello, NULL);
    return rc;
}

static int shm_srv_auth(shm_conn_t *conn, const dango_frame_t *hdr,
                        const void *payload)
{
    dango_tp_iface_t  *iface = conn->iface;
    Dango__Ctrl__Auth *auth;
    int                rc;

    auth = dango__ctrl__auth__unpack(NULL, hdr->length, payload);
    if (auth == NULL) {
        dango_error("shm_iface %p: fd %d: malformed auth", (void *)iface,
                    conn->fd);
        return DANGO_EPROTO;
    }

    rc = dango_auth_verify(iface->token, DANGO_AUTH_ROLE_CLIENT,
                           conn->client_nonce, conn->server_nonce,
                           auth->proof.data, auth->proof.len);
    dango__ctrl__auth__free_unpacked(auth, NULL);
    if (rc != 0) {
        dango_error("shm_iface %p: fd %d: client failed token "
                    "authentication",
                    (void *)iface, conn->fd);
        return DANGO_EAUTH;
    }

    conn->state = SHM_CONN_READY;
    return 0;
}

static int shm_srv_map(shm_conn_t *conn, const dango_frame_t *hdr,
                       const void *payload)
{
    dango_tp_iface_t           *iface = conn->iface;
    Dango__Ctrl__ShmMapReply    reply = DANGO__CTRL__SHM_MAP_REPLY__INIT;
    Dango__Ctrl__ShmMapRequest *req;
    uint64_t                    len = 0;
    int                         mfd = -1;
    int                         rc;

    req = dango__ctrl__shm_map_request__unpack(NULL, hdr->length, payload);
    if (req == NULL) {
        dango_error("shm_iface %p: fd %d: malformed map request", (void *)iface,
                    conn->fd);
        return DANGO_EPROTO;
    }

    reply.addr = req->addr;
    dango__ctrl__shm_map_request__free_unpacked(req, NULL);

    if (iface->host->mem_fd == NULL) {
        reply.status = DANGO_ENOTSUP;
    } else {
        reply.status =
            iface->host->mem_fd(iface->host->ctx, reply.addr, &mfd, &len);
    }

    if (reply.status == 0) {
        reply.length = len;
    } else {
        dango_debug("shm_iface %p: fd %d: no memfd for 0x%" PRIx64 ": %s",
                    (void *)iface, conn->fd, reply.addr,
                    dango_err_name(reply.status));
        mfd = -1;
    }

    rc = shm_send_msg(conn->fd, DANGO_FRAME_SHM_MAP_RESP, reply.status,
                      reply.addr, &reply.base, mfd,
                      dango_time_ns() + iface->cfg.timeout_ns);
    if (mfd >= 0) {
        close(mfd); /* the peer holds its own reference now */
    }

    if (rc != 0) {
        dango_error("shm_iface %p: fd %d: cannot send map reply: %s",
                    (void *)iface, conn->fd, dango_strerror(rc));
    }

    return rc;
}

/* One frame from a client; closes the connection on any failure. */
static void shm_conn_cb(dango_loop_t *loop, int fd, unsigned events, void *arg)
{
    shm_conn_t       *conn  = arg;
    dango_tp_iface_t *iface = conn->iface;
    void             *payload;
    dango_frame_t     hdr;
    uint8_t           want;
    int               rc;

    rc = dango_sock_recv_frame(fd, &hdr, &payload,
                               dango_time_ns() + iface->cfg.timeout_ns);
    if (rc == DANGO_ECONNRESET) {
        dango_debug("shm_iface %p: fd %d: peer closed", (void *)iface, fd);
        shm_conn_close(conn);
        return;
    }

    if (rc != 0) {
        dango_error("shm_iface %p: fd %d: bad frame: %s", (void *)iface, fd,
                    dango_strerror(rc));
        shm_conn_close(conn);
        return;
    }

    switch (conn->state) {
    case SHM_CONN_HELLO:
        want = DANGO_FRAME_HELLO;
        break;
    case SHM_CONN_AUTH:
        want = DANGO_FRAME_AUTH;
        break;
    default:
        want = DANGO_FRAME_SHM_MAP;
        break;
    }

    if ((hdr.type != want) || (hdr.length > SHM_MSG_MAX)) {
        dango_error("shm_iface %p: fd %d: unexpected frame type %u length "
                    "%" PRIu64 " (expected type %u)",
                    (void *)iface, fd, hdr.type, hdr.length, want);
        rc = DANGO_EPROTO;
    } else if (want == DANGO_FRAME_HELLO) {
        rc = shm_srv_hello(conn, &hdr, payload);
    } else if (want == DANGO_FRAME_AUTH) {
        rc = shm_srv_auth(conn, &hdr, payload);
    } else {
        rc = shm_srv_map(conn, &hdr, payload);
    }

    dango_free(payload);
    if (rc != 0) {
        shm_conn_close(conn);
    }
}

static void shm_accept_cb(dango_loop_t *loop, int fd, unsigned events,
                          void *arg)
{
    dango_tp_iface_t *iface = arg;

    for (int i = 0; i < SHM_ACCEPT_BURST; i++) {
        shm_conn_t *conn;
        uid_t       uid = (uid_t)-1;
        int         cfd, rc;

        cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if ((errno == EINTR) || (errno == ECONNABORTED)) {
                continue;
            }

            if (errno != EAGAIN) {
                dango_warn("shm_iface %p: accept on %s failed: %m",
                           (void *)iface, iface->uds);
            }

            return;
        }

        rc = shm_peer_uid(cfd, &uid);
        if ((rc != 0) || ((uid != iface->uid) && (iface->uid != 0))) {
            dango_warn("shm_iface %p: refused a connection from uid %d "
                       "(we run as %d)",
                       (void *)iface, (int)uid, (int)iface->uid);
            close(cfd);
            continue;
        }

        conn = dango_calloc(1, sizeof(*conn), "shm_conn");
        if (conn == NULL) {
            dango_error("shm_iface %p: no memory for a connection",
                        (void *)iface);
            close(cfd);
            continue;
        }

        conn->iface = iface;
        conn->fd    = cfd;
        conn->state = SHM_CONN_HELLO;
        rc = dango_loop_fd_add(loop, cfd, DANGO_LOOP_READ, shm_conn_cb, conn);
        if (rc != 0) {
            dango_error("shm_iface %p: cannot watch connection fd %d: %s",
                        (void *)iface, cfd, dango_strerror(rc));
            close(cfd);
            dango_free(conn);
            continue;
        }

        dango_list_add_tail(&iface->conns, &conn->link);
    }
}

/* Task on loops[0]: starts serving the listening socket. */
static void shm_reg_task(dango_loop_task_t *task)
{
    dango_tp_iface_t *iface =
        dango_container_of(task, dango_tp_iface_t, reg_task);
    int rc;

    rc = dango_loop_fd_add(iface->loops[0], iface->listen_fd, DANGO_LOOP_READ,
                           shm_accept_cb, iface);
    if (rc != 0) {
        dango_error("shm_iface %p: cannot watch listener %s: %s; same-host "
                    "peers will fall back to another transport",
                    (void *)iface, iface->uds, dango_strerror(rc));
        return;
    }

    iface->listening = 1;
}

static void shm_iface_free(dango_tp_iface_t *iface)
{
    pthread_cond_destroy(&iface->close_sync.cond);
    pthread_mutex_destroy(&iface->close_sync.lock);
    dango_free(iface->token);
    dango_free(iface->segment_name);
    dango_free(iface->loops);
    dango_free(iface);
}

/* Task on loops[0]: stops serving, closes every socket. */
static void shm_close_task(dango_loop_task_t *task)
{
    dango_tp_iface_t *iface =
        dango_container_of(task, dango_tp_iface_t, close_task);
    int abandoned;

    while (!dango_list_is_empty(&iface->conns)) {
        shm_conn_close(dango_container_of(iface->conns.next, shm_conn_t, link));
    }

    if (iface->listening) {
        dango_loop_fd_del(iface->loops[0], iface->listen_fd);
        iface->listening = 0;
    }

    close(iface->listen_fd);
    iface->listen_fd = -1;

    pthread_mutex_lock(&iface->close_sync.lock);
    abandoned              = iface->close_sync.abandoned;
    iface->close_sync.done = 1;
    pthread_cond_signal(&iface->close_sync.cond);
    pthread_mutex_unlock(&iface->close_sync.lock);
    if (abandoned) {
        shm_iface_free(iface); /* iface_close() has returned long ago */
    }
}

static int shm_listen(dango_tp_iface_t *iface)
{
    struct sockaddr_un sa;
    socklen_t          len;
    int                fd, rc;

    rc = shm_uds_addr(iface->uds, &sa, &len);
    if (rc != 0) {
        return rc;
    }

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = dango_err_from_errno(errno);
        dango_error("shm_iface %p: socket(AF_UNIX) failed: %m", (void *)iface);
        return rc;
    }

    if ((bind(fd, (struct sockaddr *)&sa, len) != 0) ||
        (listen(fd, SHM_LISTEN_BACKLOG) != 0)) {
        rc = dango_err_from_errno(errno);
        dango_error("shm_iface %p: cannot listen on %s: %m", (void *)iface,
                    iface->uds);
        close(fd);
        return rc;
    }

    iface->listen_fd = fd;
    return 0;
}

/* ---------- private functions: client side ---------- */

/* Connects to @uds within @deadline_ns. Returns fd or a negative code. */
static int shm_connect(const char *uds, uint64_t deadline_ns)
{
    struct sockaddr_un sa;
    socklen_t          len;
    int                fd, rc;

    rc = shm_uds_addr(uds, &sa, &len);
    if (rc != 0) {
        return rc;
    }

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return dango_err_from_errno(errno);
    }

    /* A non-blocking AF_UNIX connect completes at once or says EAGAIN
     * (backlog full): retry until the deadline. */
    while (connect(fd, (struct sockaddr *)&sa, len) != 0) {
        struct timespec ts = {0, 1000000};

        if (errno == EINTR) {
            continue;
        }

        if ((errno != EAGAIN) || (dango_time_ns() >= deadline_ns)) {
            rc = dango_err_from_errno((errno == EAGAIN) ? ETIMEDOUT : errno);
            close(fd);
            return rc;
        }

        nanosleep(&ts, NULL);
    }

    return fd;
}

/*
 * Client half of the handshake: HELLO, HELLO_ACK (checked), AUTH.
 * Returns 0, DANGO_EAUTH (token mismatch either way), DANGO_ENOTSUP (the
 * server refused us for another reason) or a socket error.
 */
static int shm_client_handshake(dango_tp_iface_t *iface, int fd,
                                const char *peer_name, uint64_t deadline_ns)
{
    Dango__Ctrl__Hello     hello = DANGO__CTRL__HELLO__INIT;
    Dango__Ctrl__Auth      auth  = DANGO__CTRL__AUTH__INIT;
    Dango__Ctrl__HelloAck *ack   = NULL;
    uint8_t                cnonce[DANGO_AUTH_NONCE_LEN];
    uint8_t                proof[DANGO_AUTH_PROOF_LEN];
    void                  *payload;
    dango_frame_t          hdr;
    int                    send_auth = 0;
    int                    rc;

    rc = shm_nonce(cnonce);
    if (rc != 0) {
        return rc;
    }

    hello.version      = DANGO_FRAME_VERSION;
    hello.segment_name = iface->segment_name;
    hello.instance_id  = iface->instance_id;
    hello.nonce.data   = cnonce;
    hello.nonce.len    = sizeof(cnonce);
    hello.target_name  = (char *)((peer_name != NULL) ? peer_name : "");
    rc =
        shm_send_msg(fd, DANGO_FRAME_HELLO, 0, 0, &hello.base, -1, deadline_ns);
    if (rc != 0) {
        return rc;
    }

    rc = dango_sock_recv_frame(fd, &hdr, &payload, deadline_ns);
    if (rc != 0) {
        return rc;
    }

    if ((hdr.type != DANGO_FRAME_HELLO_ACK) || (hdr.length > SHM_MSG_MAX)) {
        rc = DANGO_EPROTO;
        goto out;
    }

    ack = dango__ctrl__hello_ack__unpack(NULL, hdr.length, payload);
    rc  = (ack == NULL)
              ? DANGO_EPROTO
              : dango_auth_check_hello_ack(iface->token, cnonce, ack->nonce.data,
                                           ack->nonce.len, ack->status,
                                           ack->proof.data, ack->proof.len,
                                           proof, &send_auth);
    if ((ack != NULL) && (ack->status < 0) && (rc == ack->status)) {
        dango_debug("shm_iface %p: peer '%s' refused the hello: %s",
                    (void *)iface, peer_name, dango_err_name(ack->status));
        rc = DANGO_ENOTSUP;
        goto out;
    }

    if (rc == DANGO_EAUTH) {
        dango_error("shm_iface %p: peer '%s': cluster token authentication "
                    "failed",
                    (void *)iface, peer_name);
    }

    if ((rc != 0) || !send_auth) {
        goto out;
    }

    auth.proof.data = proof;
    auth.proof.len  = sizeof(proof);
    rc = shm_send_msg(fd, DANGO_FRAME_AUTH, 0, 0, &auth.base, -1, deadline_ns);

out:
    if (ack != NULL) {
        dango__ctrl__hello_ack__free_unpacked(ack, NULL);
    }

    dango_free(payload);
    return rc;
}

/*
 * Asks for the memfd of @buf and maps it. Returns 0 (mapped), a positive 1
 * when the buffer is skipped (already logged), or a negative connection
 * error after which the connection is unusable.
 */
static int shm_client_map(dango_tp_ep_t *ep, const char *peer_name,
                          const shm_buf_desc_t *buf, uint64_t deadline_ns)
{
    Dango__Ctrl__ShmMapRequest req   = DANGO__CTRL__SHM_MAP_REQUEST__INIT;
    Dango__Ctrl__ShmMapReply  *reply = NULL;
    shm_map_t                 *map   = &ep->maps[ep->num_maps];
    uint8_t                    pbuf[SHM_MSG_STACK];
    dango_frame_t              hdr;
    struct stat                st;
    void                      *base;
    int                        mfd = -1;
    int                        rc;

    req.addr = buf->addr;
    rc = shm_send_msg(ep->fd, DANGO_FRAME_SHM_MAP, 0, buf->addr, &req.base, -1,
                      deadline_ns);
    if (rc != 0) {
        return rc;
    }

    rc = shm_recv_hdr_fd(ep->fd, &hdr, &mfd, deadline_ns);
    if (rc != 0) {
        return rc;
    }

    rc = dango_frame_check(&hdr);
    if ((rc == 0) && ((hdr.type != DANGO_FRAME_SHM_MAP_RESP) ||
                      (hdr.length > sizeof(pbuf)))) {
        rc = DANGO_EPROTO;
    }

    if (rc == 0) {
        rc = dango_sock_recv_all(ep->fd, pbuf, hdr.length, deadline_ns);
    }

    if (rc != 0) {
        goto out;
    }

    reply = dango__ctrl__shm_map_reply__unpack(NULL, hdr.length, pbuf);
    if (reply == NULL) {
        rc = DANGO_EPROTO;
        goto out;
    }

    rc = 1;
    if (reply->status != 0) {
        dango_warn("shm_ep %p: peer '%s' cannot share buffer 0x%" PRIx64 ": %s",
                   (void *)ep, peer_name, buf->addr,
                   dango_strerror(reply->status));
        goto out;
    }

    if (mfd < 0) {
        dango_warn("shm_ep %p: peer '%s' sent no fd for buffer 0x%" PRIx64,
                   (void *)ep, peer_name, buf->addr);
        goto out;
    }

    if ((reply->addr != buf->addr) || (reply->length != buf->length)) {
        dango_warn("shm_ep %p: peer '%s' buffer 0x%" PRIx64 ": descriptor "
                   "says %" PRIu64 " bytes, peer says %" PRIu64 " bytes at "
                   "0x%" PRIx64 "; not mapped",
                   (void *)ep, peer_name, buf->addr, buf->length, reply->length,
                   reply->addr);
        goto out;
    }

    /* Mapping past the end of the file would SIGBUS on access. */
    if ((fstat(mfd, &st) != 0) || (st.st_size < 0) ||
        ((uint64_t)st.st_size < buf->length)) {
        dango_warn("shm_ep %p: peer '%s' buffer 0x%" PRIx64 ": fd holds "
                   "fewer than %" PRIu64 " bytes; not mapped",
                   (void *)ep, peer_name, buf->addr, buf->length);
        goto out;
    }

    base = mmap(NULL, buf->length, PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_POPULATE, mfd, 0);
    if (base == MAP_FAILED) {
        dango_warn("shm_ep %p: peer '%s' buffer 0x%" PRIx64 ": mmap of %" PRIu64
                   " bytes failed: %m",
                   (void *)ep, peer_name, buf->addr, buf->length);
        goto out;
    }

    map->remote = buf->addr;
    map->length = buf->length;
    map->base   = base;
    ep->num_maps++;
    rc = 0;

out:
    if (reply != NULL) {
        dango__ctrl__shm_map_reply__free_unpacked(reply, NULL);
    }

    if (mfd >= 0) {
        close(mfd); /* the mapping keeps the memory */
    }

    return rc;
}

/*
 * Extracts the socket name and the buffers to map from a peer descriptor.
 * Returns 0, DANGO_ENOTSUP (no shm section or nothing to map),
 * DANGO_EINVAL (not JSON) or DANGO_ENOMEM.
 */
static int shm_parse_desc(const char *json, char *uds, size_t uds_len,
                          shm_buf_desc_t **bufs_p, unsigned *num_p)
{
    json_error_t    jerr;
    json_t         *root, *jbufs, *b;
    const char     *name;
    shm_buf_desc_t *bufs = NULL;
    unsigned        n    = 0;
    size_t          i;
    int             rc;

    root = json_loads(json, 0, &jerr);
    if (root == NULL) {
        dango_debug("peer descriptor is not JSON: %s (line %d)", jerr.text,
                    jerr.line);
        return DANGO_EINVAL;
    }

    name = json_string_value(json_object_get(
        json_object_get(json_object_get(root, "transports"), "shm"), "uds"));
    if ((name == NULL) || (name[0] != '@') || (strlen(name) >= uds_len)) {
        rc = DANGO_ENOTSUP;
        goto out;
    }

    snprintf(uds, uds_len, "%s", name);
    jbufs = json_object_get(root, "buffers");
    if (json_array_size(jbufs) > 0) {
        bufs =
            dango_calloc(json_array_size(jbufs), sizeof(*bufs), "shm_buf_desc");
        if (bufs == NULL) {
            rc = DANGO_ENOMEM;
            goto out;
        }
    }

    json_array_foreach(jbufs, i, b)
    {
        json_t *addr = json_object_get(b, "addr");
        json_t *len  = json_object_get(b, "length");

        if (!json_is_true(json_object_get(b, "shm")) ||
            !json_is_true(json_object_get(b, "remote"))) {
            continue;
        }

        if (!json_is_integer(addr) || !json_is_integer(len) ||
            (json_integer_value(len) <= 0)) {
            dango_warn("peer descriptor: buffer %zu has no valid addr and "
                       "length; skipped",
                       i);
            continue;
        }

        bufs[n].addr   = (uint64_t)json_integer_value(addr);
        bufs[n].length = (uint64_t)json_integer_value(len);
        n++;
    }

    if (n == 0) {
        dango_free(bufs);
        rc = DANGO_ENOTSUP;
        goto out;
    }

    *bufs_p = bufs;
    *num_p  = n;
    rc      = 0;

out:
    json_decref(root);
    return rc;
}

static int shm_map_cmp(const void *a, const void *b)
{
    const shm_map_t *x = a, *y = b;

    return (x->remote > y->remote) - (x->remote < y->remote);
}

/* The mapping that holds all of [remote, remote + len), or NULL. */
static const shm_map_t *shm_ep_find(const dango_tp_ep_t *ep, uint64_t remote,
                                    uint64_t len)
{
    const shm_map_t *m;
    unsigned         lo = 0, hi = ep->num_maps;

    if (len == 0) {
        return NULL;
    }

    /* Last mapping that starts at or below @remote. */
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;

        if (ep->maps[mid].remote <= remote) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }

    if (lo == 0) {
        return NULL;
    }

    m = &ep->maps[lo - 1];
    /* Overflow-safe: remote - m->remote <= m->length is known first. */
    if ((remote - m->remote > m->length) ||
        (len > m->length - (remote - m->remote))) {
        return NULL;
    }

    return m;
}

static void shm_ep_unmap(dango_tp_ep_t *ep)
{
    for (unsigned i = 0; i < ep->num_maps; i++) {
        if (munmap(ep->maps[i].base, ep->maps[i].length) != 0) {
            dango_warn("shm_ep %p: munmap of %p failed: %m", (void *)ep,
                       (void *)ep->maps[i].base);
        }
    }

    ep->num_maps = 0;
}

/* True once loops[0] saw the target close the control connection. */
static int shm_ep_gone(dango_tp_ep_t *ep)
{
    return __atomic_load_n(&ep->gone, __ATOMIC_ACQUIRE);
}

/* loops[0]: the control connection became readable or hung up. */
static void shm_ep_watch_cb(dango_loop_t *loop, int fd, unsigned events,
                            void *arg)
{
    dango_tp_ep_t *ep = arg;
    char           buf[64];
    ssize_t        n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

    /* The target never sends on this connection: drop stray bytes. */
    if ((n > 0) || ((n < 0) && ((errno == EAGAIN) || (errno == EINTR)))) {
        return;
    }

    dango_debug("shm_ep %p: target closed its connection", (void *)ep);
    __atomic_store_n(&ep->gone, 1, __ATOMIC_RELEASE);
    dango_loop_fd_del(loop, fd);
    ep->watched = 0;
}

static void shm_ep_watch(void *arg)
{
    dango_tp_ep_t *ep = arg;

    ep->watched =
        (dango_loop_fd_add(ep->iface->loops[0], ep->fd, DANGO_LOOP_READ,
                           shm_ep_watch_cb, ep) == 0);
}

static void shm_ep_unwatch(void *arg)
{
    dango_tp_ep_t *ep = arg;

    if (ep->watched) {
        dango_loop_fd_del(ep->iface->loops[0], ep->fd);
        ep->watched = 0;
    }
}

/* Runs on an engine loop: the copy itself. */
static void shm_copy_task(dango_loop_task_t *task)
{
    shm_op_t         *op = (shm_op_t *)task;
    dango_tp_slice_t *slice =
        dango_container_of((void *)op, dango_tp_slice_t, tp_priv);
    dango_tp_ep_t *ep = op->ep;

    if (slice->op == DANGO_TP_OP_READ) {
        memcpy(slice->local, op->mapped, slice->length);
    } else {
        /* Into the peer's segment, read much later (if at all) by someone
         * else: streaming stores, about twice as fast into cold memory. */
        dango_copy_stream(op->mapped, slice->local, slice->length);
    }

    slice->complete(slice, 0);
    /* Last touch of @ep: after this, ep_destroy() may unmap and free. */
    __atomic_sub_fetch(&ep->inflight, 1, __ATOMIC_RELEASE);
}

/* ---------- ops ---------- */

static int shm_iface_open(const dango_tp_iface_params_t *params,
                          dango_tp_iface_t             **iface_p)
{
    dango_tp_iface_t  *iface;
    pthread_condattr_t cattr;
    int                rc;

    if ((params == NULL) || (params->host == NULL) || (params->loops == NULL) ||
        (params->num_loops == 0) || (iface_p == NULL)) {
        dango_debug("shm: iface_open: invalid parameters");
        return DANGO_EINVAL;
    }

    iface = dango_calloc(1, sizeof(*iface), "shm_iface");
    if (iface == NULL) {
        return DANGO_ENOMEM;
    }

    iface->host        = params->host;
    iface->num_loops   = params->num_loops;
    iface->instance_id = params->instance_id;
    iface->uid         = geteuid();
    iface->listen_fd   = -1;
    dango_list_init(&iface->conns);
    rc = dango__config_parse(params->config, &shm_config_table, &iface->cfg);
    if (rc != 0) {
        goto err_free;
    }

    if ((iface->cfg.max_slice == 0) || (iface->cfg.timeout_ns == 0)) {
        dango_error("shm: SHM_MAX_SLICE and SHM_TIMEOUT must be > 0");
        rc = DANGO_ECONFIG;
        goto err_free;
    }

    iface->loops =
        dango_calloc(params->num_loops, sizeof(*iface->loops), "shm_loops");
    if (iface->loops == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free;
    }

    memcpy(iface->loops, params->loops,
           params->num_loops * sizeof(*iface->loops));
    iface->segment_name =
        dango_strdup((params->segment_name != NULL) ? params->segment_name : "",
                     "shm_segment_name");
    if (iface->segment_name == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free_loops;
    }

    if ((params->token != NULL) && (params->token[0] != '\0')) {
        iface->token = dango_strdup(params->token, "shm_token");
        if (iface->token == NULL) {
            rc = DANGO_ENOMEM;
            goto err_free_name;
        }
    }

    if (pthread_condattr_init(&cattr) != 0) {
        rc = DANGO_ENOMEM;
        goto err_free_token;
    }

    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&iface->close_sync.cond, &cattr);
    pthread_condattr_destroy(&cattr);
    if (rc != 0) {
        rc = dango_err_from_errno(rc);
        goto err_free_token;
    }

    pthread_mutex_init(&iface->close_sync.lock, NULL);

    snprintf(iface->uds, sizeof(iface->uds), SHM_UDS_PREFIX "%016" PRIx64 "-%d",
             iface->instance_id, (int)getpid());
    snprintf(iface->desc_json, sizeof(iface->desc_json), "{\"uds\":\"%s\"}",
             iface->uds);
    rc = shm_listen(iface);
    if (rc != 0) {
        goto err_destroy_sync;
    }

    /* The socket already queues connections; loops[0] starts accepting
     * them whenever it runs this task (fd_add is not thread-safe). */
    iface->reg_task.cb   = shm_reg_task;
    iface->close_task.cb = shm_close_task;
    dango_loop_post(iface->loops[0], &iface->reg_task);
    dango_debug("shm_iface %p: listening on %s", (void *)iface, iface->uds);
    *iface_p = iface;
    return 0;

err_destroy_sync:
    pthread_mutex_destroy(&iface->close_sync.lock);
    pthread_cond_destroy(&iface->close_sync.cond);
err_free_token:
    dango_free(iface->token);
err_free_name:
    dango_free(iface->segment_name);
err_free_loops:
    dango_free(iface->loops);
err_free:
    dango_free(iface);
    return rc;
}

static void shm_iface_close(dango_tp_iface_t *iface)
{
    shm_sync_t     *sync;
    struct timespec ts;
    uint64_t        deadline;
    int             done;

    if (iface == NULL) {
        return;
    }

    sync = &iface->close_sync;
    dango_loop_post(iface->loops[0], &iface->close_task);
    /* On loops[0] itself the task cannot run while we wait: hand it over.
     * Elsewhere, allow for one stalled control exchange on the loop. */
    deadline = dango_time_ns() + 2 * iface->cfg.timeout_ns + DANGO_NSEC_PER_SEC;
    ts.tv_sec  = (time_t)(deadline / DANGO_NSEC_PER_SEC);
    ts.tv_nsec = (long)(deadline % DANGO_NSEC_PER_SEC);
    pthread_mutex_lock(&sync->lock);
    if (!dango_loop_is_current(iface->loops[0])) {
        while (!sync->done && (pthread_cond_timedwait(&sync->cond, &sync->lock,
                                                      &ts) != ETIMEDOUT)) {
        }
    }

    done = sync->done;
    if (!done) {
        sync->abandoned = 1;
    }

    pthread_mutex_unlock(&sync->lock);
    if (!done) {
        if (!dango_loop_is_current(iface->loops[0])) {
            dango_error("shm_iface %p: loop %s did not run the close task; "
                        "it will free the interface if it ever runs",
                        (void *)iface, dango_loop_name(iface->loops[0]));
        }

        return;
    }

    shm_iface_free(iface);
}

static int shm_iface_query(dango_tp_iface_t *iface, dango_tp_iface_attr_t *attr)
{
    attr->caps      = DANGO_TP_CAP_SAME_HOST;
    attr->max_slice = iface->cfg.max_slice;
    attr->desc_json = iface->desc_json;
    return 0;
}

static int shm_ep_create(dango_tp_iface_t *iface, const dango_tp_peer_t *peer,
                         dango_tp_ep_t **ep_p)
{
    char            uds[SHM_UDS_MAX];
    shm_buf_desc_t *bufs     = NULL;
    unsigned        num_bufs = 0;
    dango_tp_ep_t  *ep;
    uint64_t        deadline;
    uid_t           uid = (uid_t)-1;
    int             rc;

    if ((peer == NULL) || (peer->desc_json == NULL)) {
        return DANGO_ENOTSUP;
    }

    rc = shm_parse_desc(peer->desc_json, uds, sizeof(uds), &bufs, &num_bufs);
    if (rc != 0) {
        dango_debug("shm_iface %p: peer '%s' has no shm buffers: %s",
                    (void *)iface, peer->name, dango_err_name(rc));
        return rc;
    }

    ep = dango_calloc(1, sizeof(*ep), "shm_ep");
    if (ep == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free_bufs;
    }

    ep->iface = iface;
    ep->maps  = dango_calloc(num_bufs, sizeof(*ep->maps), "shm_maps");
    if (ep->maps == NULL) {
        rc = DANGO_ENOMEM;
        goto err_free_ep;
    }

    deadline = dango_time_ns() + iface->cfg.timeout_ns;
    ep->fd   = shm_connect(uds, deadline);
    if (ep->fd < 0) {
        dango_debug("shm_iface %p: cannot reach peer '%s' at %s: %s",
                    (void *)iface, peer->name, uds, dango_strerror(ep->fd));
        rc = DANGO_ENOTSUP;
        goto err_free_maps;
    }

    /* Abstract names carry no permissions: check who answers. */
    rc = shm_peer_uid(ep->fd, &uid);
    if ((rc != 0) || ((uid != iface->uid) && (uid != 0))) {
        dango_warn("shm_iface %p: %s is served by uid %d, not by us (%d); "
                   "not using it",
                   (void *)iface, uds, (int)uid, (int)iface->uid);
        rc = DANGO_ENOTSUP;
        goto err_close;
    }

    rc = shm_client_handshake(iface, ep->fd, peer->name, deadline);
    if ((rc == DANGO_EAUTH) || (rc == DANGO_ENOMEM)) {
        goto err_close;
    }

    if (rc != 0) {
        dango_warn("shm_iface %p: handshake with peer '%s' at %s failed: %s",
                   (void *)iface, peer->name, uds, dango_strerror(rc));
        rc = DANGO_ENOTSUP;
        goto err_close;
    }

    for (unsigned i = 0; i < num_bufs; i++) {
        rc = shm_client_map(ep, peer->name, &bufs[i],
                            dango_time_ns() + iface->cfg.timeout_ns);
        if (rc < 0) {
            dango_warn("shm_iface %p: mapping buffers of peer '%s' failed: "
                       "%s",
                       (void *)iface, peer->name, dango_strerror(rc));
            rc = (rc == DANGO_ENOMEM) ? rc : DANGO_ENOTSUP;
            goto err_unmap;
        }
    }

    if (ep->num_maps == 0) {
        dango_warn("shm_iface %p: none of the %u buffers of peer '%s' could "
                   "be mapped",
                   (void *)iface, num_bufs, peer->name);
        rc = DANGO_ENOTSUP;
        goto err_close;
    }

    qsort(ep->maps, ep->num_maps, sizeof(*ep->maps), shm_map_cmp);
    for (unsigned i = 1; i < ep->num_maps; i++) {
        if (ep->maps[i].remote - ep->maps[i - 1].remote <
            ep->maps[i - 1].length) {
            dango_warn("shm_iface %p: peer '%s' buffers at 0x%" PRIx64
                       " and 0x%" PRIx64 " overlap",
                       (void *)iface, peer->name, ep->maps[i - 1].remote,
                       ep->maps[i].remote);
            rc = DANGO_ENOTSUP;
            goto err_unmap;
        }
    }

    dango_loop_run_sync(iface->loops[0], shm_ep_watch, ep);
    dango_debug("shm_iface %p: ep %p to '%s' maps %u of %u buffers",
                (void *)iface, (void *)ep, peer->name, ep->num_maps, num_bufs);
    dango_free(bufs);
    *ep_p = ep;
    return 0;

err_unmap:
    shm_ep_unmap(ep);
err_close:
    close(ep->fd);
err_free_maps:
    dango_free(ep->maps);
err_free_ep:
    dango_free(ep);
err_free_bufs:
    dango_free(bufs);
    return rc;
}

static void shm_ep_destroy(dango_tp_ep_t *ep)
{
    uint64_t deadline;

    if (ep == NULL) {
        return;
    }

    /* Copies still queued use the mappings: let them finish (they are
     * memcpy's of at most a slice each, so this is short). */
    deadline = dango_time_ns() + ep->iface->cfg.timeout_ns;
    while (__atomic_load_n(&ep->inflight, __ATOMIC_ACQUIRE) != 0) {
        struct timespec ts = {0, 100000};

        if (dango_time_ns() >= deadline) {
            dango_error("shm_ep %p: %u copies still in flight; leaking its "
                        "mappings",
                        (void *)ep,
                        __atomic_load_n(&ep->inflight, __ATOMIC_RELAXED));
            return;
        }

        nanosleep(&ts, NULL);
    }

    dango_loop_run_sync(ep->iface->loops[0], shm_ep_unwatch, ep);
    shm_ep_unmap(ep);
    close(ep->fd);
    dango_free(ep->maps);
    dango_free(ep);
}

static int shm_ep_can_serve(dango_tp_ep_t *ep, uint64_t remote, uint64_t len)
{
    return shm_ep_find(ep, remote, len) != NULL;
}

static int shm_post(dango_tp_ep_t *ep, dango_tp_slice_t *slice)
{
    dango_tp_iface_t *iface = ep->iface;
    shm_op_t         *op    = (shm_op_t *)slice->tp_priv;
    const shm_map_t  *map;
    unsigned          idx;

    if (((slice->op != DANGO_TP_OP_READ) && (slice->op != DANGO_TP_OP_WRITE)) ||
        (slice->local == NULL)) {
        dango_debug("shm_ep %p: slice %" PRIu64 ": bad op %u or no local "
                    "address",
                    (void *)ep, slice->id, slice->op);
        return DANGO_EINVAL;
    }

    map = shm_ep_find(ep, slice->remote, slice->length);
    if (map == NULL) {
        dango_debug("shm_ep %p: slice %" PRIu64 ": [0x%" PRIx64 ", +%" PRIu64
                    ") is outside the mapped buffers",
                    (void *)ep, slice->id, slice->remote, slice->length);
        return DANGO_EREMOTE_ACCESS;
    }

    if (shm_ep_gone(ep)) {
        return DANGO_EPEER_GONE;
    }

    op->task.cb = shm_copy_task;
    op->ep      = ep;
    op->mapped  = map->base + (slice->remote - map->remote);
    __atomic_add_fetch(&ep->inflight, 1, __ATOMIC_RELAXED);
    if (slice->length <= iface->cfg.inline_max) {
        shm_copy_task(&op->task);
        return 0;
    }

    idx = __atomic_fetch_add(&iface->next_loop, 1, __ATOMIC_RELAXED) %
          iface->num_loops;
    dango_loop_post(iface->loops[idx], &op->task);
    return 0;
}

const dango_transport_ops_t dango__shm_ops = {
    .name         = "shm",
    .iface_open   = shm_iface_open,
    .iface_close  = shm_iface_close,
    .iface_query  = shm_iface_query,
    .mem_reg      = NULL,
    .mem_dereg    = NULL,
    .ep_create    = shm_ep_create,
    .ep_destroy   = shm_ep_destroy,
    .ep_can_serve = shm_ep_can_serve,
    .post         = shm_post,
    .notify       = NULL,
    .desc_fetch   = NULL,
};
