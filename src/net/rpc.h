/*
 * Request/reply RPC over binary frames (frame.h), for the control plane:
 * the store master serves its operations through a dango_rpc_server_t on its
 * event loop, and clients call them through a dango_rpc_client_t from any
 * number of application threads.
 *
 * Wire protocol, on each TCP connection of a client (a shared one, and up to
 * a few lanes: see dango_rpc_client_params_t):
 *   1. the token handshake of the transfer engine (dango_ctrl.proto): the
 *      client sends Hello, the server answers HelloAck (with its HMAC proof
 *      when it has a token), the client sends Auth (its proof) when it has a
 *      token. A side with a token refuses a peer that cannot prove it holds
 *      the same token; a side without one refuses a peer that has one.
 *   2. any number of DANGO_FRAME_RPC_REQ frames (id = call id, addr = method
 *      id, payload = request), pipelined without waiting;
 *   3. one DANGO_FRAME_RPC_RESP per request (same id, status = 0 or a
 *      DANGO_E* code, addr = the server's epoch, payload = reply when
 *      status is 0), in any order.
 * Payloads are opaque bytes here (normally packed protobuf-c messages; the
 * _pb helpers pack and unpack them) of at most DANGO_FRAME_RPC_MAX bytes.
 *
 * General rules (see also dango/common.h): strings and buffers passed in are
 * borrowed for the duration of the call and copied if kept.
 */
#ifndef DANGO_NET_RPC_H
#define DANGO_NET_RPC_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>
#include <dango/common.h>
#include "common/loop.h"
#include "net/frame.h"

/** Server defaults (used for parameters left 0). */
#define DANGO_RPC_DEFAULT_MAX_CONNS    16384
#define DANGO_RPC_DEFAULT_MAX_PENDING  1024
#define DANGO_RPC_DEFAULT_HANDSHAKE_NS (10ull * 1000000000ull)
#define DANGO_RPC_DEFAULT_IO_NS        (60ull * 1000000000ull)
/** Client defaults (used for parameters left 0). */
#define DANGO_RPC_DEFAULT_CONNECT_NS (5ull * 1000000000ull)
#define DANGO_RPC_DEFAULT_CALL_NS    (30ull * 1000000000ull)
#define DANGO_RPC_DEFAULT_LANES      4

typedef struct dango_rpc_server dango_rpc_server_t;
typedef struct dango_rpc_client dango_rpc_client_t;
/** One request being served; answered exactly once with dango_rpc_reply(). */
typedef struct dango_rpc_call dango_rpc_call_t;

/**
 * @brief Serves one request. Runs on the server's loop thread.
 *
 * @param[in] arg     dango_rpc_server_params_t::arg.
 * @param[in] call    The call; the handler owns it until it passes it to
 *                    dango_rpc_reply() or dango_rpc_reply_pb(), which it must
 *                    do exactly once, now or later, from any thread.
 * @param[in] method  Method id chosen by the client.
 * @param[in] req     Request payload; valid only until the handler returns
 *                    (decode or copy what a deferred reply needs).
 * @param[in] len     Bytes at @p req (0..DANGO_FRAME_RPC_MAX).
 *
 * The handler must not block: slow work goes to a worker pool whose result is
 * replied from that worker (or posted back to the loop). Requests of one
 * connection reach the handler in the order they were sent. The handler may
 * not call dango_rpc_server_destroy().
 */
typedef void (*dango_rpc_handler_cb)(void *arg, dango_rpc_call_t *call,
                                     uint32_t method, const void *req,
                                     size_t len);

/** Server parameters; fields left 0 (NULL) take the documented default. */
typedef struct dango_rpc_server_params {
    /** Owner loop (required): accepts, reads, dispatches and writes run on
     *  it. It may already run on its thread or be started later. */
    dango_loop_t *loop;
    /** "host:port" to listen on (required); port 0 picks a free port. */
    const char *listen;
    /** Cluster token; NULL = none (then clients with a token are refused). */
    const char *token;
    /** Request handler (required) and its argument. */
    dango_rpc_handler_cb handler;
    void                *arg;
    /** Connections served at once; more are closed on accept (16384; the
     *  process's open-file limit may bind first). */
    unsigned max_conns;
    /** Calls of one connection awaiting or sending their reply before the
     *  server stops reading that connection (1024). */
    unsigned max_pending;
    /** A connection that has not finished the handshake in this time is
     *  closed (10 s). */
    uint64_t handshake_timeout_ns;
    /** A connection stuck mid-frame, or whose replies the peer does not
     *  read, for this long is closed (60 s). */
    uint64_t io_timeout_ns;
    /** Local channel: the server also listens on an abstract Unix socket
     *  (named in its HelloAck, so only clients that reached it over the
     *  network first, in the same network namespace, find it), over which
     *  a client on this host asks for a channel of shared memory with this
     *  many lanes: its calls then go through memory and a futex, with no
     *  socket and no thread hand-off on either side. 0 = 16; negative =
     *  none (no Unix socket either). At most 32. */
    int local_lanes;
} dango_rpc_server_params_t;

/** Client parameters; fields left 0 (NULL) take the documented default. */
typedef struct dango_rpc_client_params {
    /** Bound on connect plus handshake (5 s). A call also never waits past
     *  its own deadline for a connection. */
    uint64_t connect_timeout_ns;
    /** Timeout of calls that pass timeout_ns = 0 (30 s). */
    uint64_t call_timeout_ns;
    /** Name sent in Hello and given to the client's thread ("rpc-client"). */
    const char *name;
    /** Lanes: connections of their own that calling threads borrow, one
     *  call at a time, and on which the caller reads its own reply (no
     *  hand-off through the client's thread: one wake-up less per call).
     *  A call takes a lane while at most this many calls (itself included)
     *  are in progress on the client; beyond that, and when its lane
     *  cannot connect, it is pipelined on the shared connection, which
     *  the server reads and answers in bursts. 0 = DANGO_RPC_DEFAULT_LANES;
     *  negative = none. */
    int lanes;
    /** Local channel: when the server runs on this host (it names its
     *  Unix socket in HelloAck and answers there as the same instance),
     *  calls go through a channel of shared memory it grants, one lane
     *  per call in progress, before lanes and the shared connection
     *  (which take the calls too large for a lane, and all calls while
     *  every lane is taken or the channel is down). 0 = on, negative =
     *  off. */
    int local;
} dango_rpc_client_params_t;

DANGO_BEGIN_DECLS

/* ---------- server ---------- */

/**
 * @brief Listens on @p p->listen and serves requests on @p p->loop.
 *
 * @param[in]  p      Parameters; copied (the token too).
 * @param[out] srv_p  The server, set only on success.
 *
 * @return 0, or:
 *         - DANGO_EINVAL      a required parameter is missing or @p
 *                             p->listen does not parse.
 *         - DANGO_EADDRINUSE  the address is taken (other bind/listen errors
 *                             are passed through as their DANGO_E* codes).
 *         - DANGO_ENOMEM      out of memory.
 *
 * @note Threading: call from the loop thread, or from any thread while the
 *       loop runs on its own thread (dango_loop_start) or is not run at all;
 *       the listener is registered through dango_loop_run_sync().
 */
DANGO_API int dango_rpc_server_create(const dango_rpc_server_params_t *p,
                                      dango_rpc_server_t             **srv_p);

/**
 * @brief The address the server listens on, "host:port" with the real port.
 * @return A string owned by the server, valid until it is destroyed.
 * @note Threading: any thread.
 */
DANGO_API const char *dango_rpc_server_addr(const dango_rpc_server_t *srv);

/**
 * @brief Closes the listener and every connection.
 *
 * Calls the handler still owns stay valid: each must still be answered with
 * dango_rpc_reply(), which then only frees it; the server's memory goes with
 * the last of them. The loop must therefore outlive the server's calls.
 * NULL is a no-op.
 *
 * @note Threading: same as dango_rpc_server_create(); never from inside the
 *       handler (post a task to the loop instead).
 */
DANGO_API void dango_rpc_server_destroy(dango_rpc_server_t *srv);

/**
 * @brief Sets the epoch stamped on every reply from now on (the frame's
 *        addr field of DANGO_FRAME_RPC_RESP; 0 at creation).
 *
 * A store master leader sets its term here so that clients can refuse the
 * answers of a deposed leader (see dango_rpc_client_fence()). NULL is a
 * no-op.
 *
 * @note Threading: any thread.
 */
DANGO_API void dango_rpc_server_set_epoch(dango_rpc_server_t *srv,
                                          uint64_t            epoch);

/**
 * @brief Answers @p call and gives it back to the server.
 *
 * @param[in] call     A call received by the handler, not yet answered.
 * @param[in] status   0, or a negative DANGO_E* code that the client's
 *                     dango_rpc_call() returns.
 * @param[in] payload  Reply bytes (copied before return); ignored unless
 *                     @p status is 0.
 * @param[in] len      Bytes at @p payload.
 *
 * @return 0 when the reply was queued; otherwise the call is still consumed,
 *         the client receives an error status instead, and this returns it:
 *         - DANGO_EMSGSIZE  @p len exceeds DANGO_FRAME_RPC_MAX.
 *         - DANGO_ENOMEM    the copy of @p payload could not be allocated.
 *         - DANGO_EINVAL    @p status is positive, or @p payload is NULL
 *                           with @p len > 0 (the client sees DANGO_EPROTO);
 *                           or @p call is NULL (nothing is sent).
 *         A reply to a connection that has closed meanwhile is dropped
 *         silently (the return value is still 0).
 *
 * @note Ownership: @p call must not be used after this returns.
 * @note Threading: any thread. On the loop thread inside the handler the reply
 *       goes out with the other replies of the same read; elsewhere it is
 *       handed to the loop (one wake-up and one write for a burst of them).
 */
DANGO_API int dango_rpc_reply(dango_rpc_call_t *call, int status,
                              const void *payload, size_t len);

/**
 * @brief dango_rpc_reply() with a protobuf-c message packed straight into the
 *        reply (no intermediate buffer). @p msg may be NULL for an empty
 *        reply; it is ignored when @p status is not 0.
 * @return As dango_rpc_reply().
 */
DANGO_API int dango_rpc_reply_pb(dango_rpc_call_t *call, int status,
                                 const ProtobufCMessage *msg);

/**
 * @brief The client's address ("host:port") for logs.
 * @return A string valid until @p call is answered.
 * @note Threading: any thread that owns the call.
 */
DANGO_API const char *dango_rpc_call_peer(const dango_rpc_call_t *call);

/* ---------- client ---------- */

/**
 * @brief Creates a client for the server at @p addr.
 *
 * Starts the client's own loop thread; the connection is opened by the first
 * call (and re-opened by the first call after it failed).
 *
 * @param[in]  addr   "host:port" of the server.
 * @param[in]  token  Cluster token, or NULL for none. Copied.
 * @param[in]  p      Timeouts and name, or NULL for the defaults.
 * @param[out] cli_p  The client, set only on success.
 *
 * @return 0, or:
 *         - DANGO_EINVAL  @p addr is NULL or does not parse.
 *         - DANGO_ENOMEM  out of memory.
 *         - a system error when the thread or its event loop cannot be
 *           created (DANGO_EMFILE, DANGO_EAGAIN, ...).
 *
 * @note Threading: any thread.
 */
DANGO_API int dango_rpc_client_create(const char *addr, const char *token,
                                      const dango_rpc_client_params_t *p,
                                      dango_rpc_client_t             **cli_p);

/**
 * @brief Fails every call in progress with DANGO_ECANCELED, waits until the
 *        calling threads have left the client, closes the connection, joins
 *        the client's thread and frees it. NULL is a no-op.
 *
 * @note Threading: any thread but the client's own. No call may be started
 *       once this has been entered (calls already waiting are fine).
 */
DANGO_API void dango_rpc_client_destroy(dango_rpc_client_t *cli);

/**
 * @brief Calls @p method with @p req and waits for the reply.
 *
 * While few calls are in progress (dango_rpc_client_params_t::lanes), a
 * caller borrows a lane: it writes its request, reads its own reply and
 * gives the lane back. Otherwise calls from many threads share one
 * connection and are pipelined on it; each caller sleeps until its own
 * reply or its deadline. Both paths give the same results.
 *
 * @param[in]  cli          Client.
 * @param[in]  method       Method id, passed to the server's handler.
 * @param[in]  req          Request bytes, copied before the call waits; may
 *                          be NULL when @p len is 0.
 * @param[in]  len          Bytes at @p req, at most DANGO_FRAME_RPC_MAX.
 * @param[out] reply_p      On success the reply, allocated (free it with
 *                          dango_free(); NULL when the reply is empty). May
 *                          be NULL to discard the reply.
 * @param[out] reply_len_p  On success the reply's length. May be NULL.
 * @param[in]  timeout_ns   Bound on the whole call, connecting included;
 *                          0 = the client's call timeout.
 *
 * @return 0 with the reply, or:
 *         - the server's status (a negative DANGO_E* code from the handler,
 *           or DANGO_ENOMEM / DANGO_EMSGSIZE when the server could not build
 *           the reply);
 *         - DANGO_ETIMEDOUT     no reply in time. The request may still be
 *           served; its late reply is discarded.
 *         - DANGO_ECONNREFUSED  nothing listens at the address.
 *         - DANGO_EPEER_GONE    the server could not be reached or dropped the
 *           connection during the handshake (also when it is at its
 *           connection limit).
 *         - DANGO_ECONNRESET    the connection was lost with this call
 *           outstanding: it may or may not have been served; the caller
 *           decides whether to retry. The next call reconnects.
 *         - DANGO_EAUTH         token mismatch (either side has a token the
 *           other cannot prove).
 *         - DANGO_EPROTO_VERSION  the server speaks another frame version.
 *         - DANGO_EPROTO        the server sent a malformed frame (the
 *           connection is closed).
 *         - DANGO_EMSGSIZE      @p len exceeds DANGO_FRAME_RPC_MAX (nothing
 *           is sent).
 *         - DANGO_EINVAL        @p cli is NULL, or @p req is NULL with
 *           @p len > 0.
 *         - DANGO_ENOMEM        out of memory for the request or the reply.
 *         - DANGO_ECANCELED     the client is being destroyed.
 *         - DANGO_ESTALE_TERM   the reply carries an epoch below the
 *           client's (dango_rpc_client_fence()); it was discarded.
 *
 * @note Threading: any number of threads at once, except the client's own.
 */
DANGO_API int dango_rpc_call(dango_rpc_client_t *cli, uint32_t method,
                             const void *req, size_t len, void **reply_p,
                             size_t *reply_len_p, uint64_t timeout_ns);

/**
 * @brief dango_rpc_call() with protobuf-c messages: @p req is packed straight
 *        into the request, and the reply is unpacked with @p reply_desc.
 *
 * @param[out] reply_p  On success the unpacked reply; free it with
 *                      protobuf_c_message_free_unpacked(*reply_p, NULL).
 *
 * @return As dango_rpc_call(), plus DANGO_EPROTO when the reply does not
 *         unpack as @p reply_desc; DANGO_EINVAL when @p req, @p reply_desc or
 *         @p reply_p is NULL.
 */
DANGO_API int dango_rpc_call_pb(dango_rpc_client_t *cli, uint32_t method,
                                const ProtobufCMessage           *req,
                                const ProtobufCMessageDescriptor *reply_desc,
                                ProtobufCMessage                **reply_p,
                                uint64_t                          timeout_ns);

/**
 * @brief The highest reply epoch this client has seen or been fenced at.
 * @note Threading: any thread.
 */
DANGO_API uint64_t dango_rpc_client_epoch(dango_rpc_client_t *cli);

/**
 * @brief Raises the client's epoch to at least @p epoch: from now on a
 *        reply stamped with a lower epoch fails its call with
 *        DANGO_ESTALE_TERM (the reply is discarded). Replies with a higher
 *        epoch raise it further. Epochs never go down. NULL is a no-op.
 * @note Threading: any thread.
 */
DANGO_API void dango_rpc_client_fence(dango_rpc_client_t *cli, uint64_t epoch);

DANGO_END_DECLS

#endif
