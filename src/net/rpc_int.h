/*
 * RPC internals shared by rpc.c (frame reader and writer, rate-limited peer
 * errors), rpc_server.c and rpc_client.c. Everything here runs on the loop
 * thread that owns the connection.
 */
#ifndef DANGO_NET_RPC_INT_H
#define DANGO_NET_RPC_INT_H

#define DANGO_LOG_COMPONENT dango__log_rpc

#include <stdint.h>
#include <dango/error.h>
#include <dango/log.h>
#include "common/list.h"
#include "common/log_limit.h"
#include "net/frame.h"
#include "net/rpc.h"

extern dango_log_component_t dango__log_rpc;

#define RPC_RX_STAGING    16384 /* frames that fit are parsed in place */
#define RPC_RX_RECVS      16    /* recv() calls per read callback */
#define RPC_HANDSHAKE_MAX 4096  /* payload bound before authentication */
#define RPC_TIMER_MS      100

/* Receive side of a connection: a staging buffer and, for a payload larger
 * than it, a buffer of exactly the payload's size received into directly. */
typedef struct rpc_rx {
    char         *buf; /* RPC_RX_STAGING bytes */
    size_t        off; /* first unparsed byte */
    size_t        len; /* bytes in buf */
    dango_frame_t hdr; /* header of the payload going into big */
    char         *big;
    uint64_t      big_have;
    int           in_big;        /* hdr parsed, payload arriving in big */
    unsigned      recvs;         /* recv() calls left in this callback */
    int           block;         /* recv() waits (SO_RCVTIMEO bounds it) */
    uint64_t      last_progress; /* monotonic ns of the last byte in */
} rpc_rx_t;

/* One complete frame returned by dango__rpc_rx_next(). */
typedef struct rpc_frame {
    dango_frame_t hdr;
    const char   *payload; /* in staging or big; valid until the next call */
    uint64_t      len;
    int           in_big; /* dango__rpc_rx_take() can keep the payload */
} rpc_frame_t;

/* One outgoing frame: header plus optional payload. */
typedef struct rpc_tx {
    dango_list_link_t link;
    dango_frame_t     hdr;
    const char       *data;
    uint64_t          data_len;
    uint64_t          sent; /* bytes of header + payload written */
} rpc_tx_t;

/* Called for each frame fully written (or dropped) by the writer. */
typedef void (*rpc_tx_done_cb)(void *arg, rpc_tx_t *tx);

/* ---------- peer errors ---------- */

/*
 * Errors caused by what a peer sent are logged at most a hundred times a
 * second per process, so a hostile client cannot flood the log.
 */
extern dango_log_limit_t dango__rpc_peer_limit;

#define rpc_peer_error(_fmt, ...)                                              \
    dango_error_limited(&dango__rpc_peer_limit, _fmt, ##__VA_ARGS__)

/* ---------- frame reader ---------- */

int  dango__rpc_rx_init(rpc_rx_t *rx);
void dango__rpc_rx_reset(rpc_rx_t *rx);
void dango__rpc_rx_cleanup(rpc_rx_t *rx);

/*
 * Returns 1 with the next complete frame in @f, 0 when none is complete and
 * the socket is drained (or rx->recvs is spent; with rx->block, when the
 * socket's receive timeout expired), or an error: DANGO_ECONNRESET
 * (EOF), DANGO_EPROTO / DANGO_EPROTO_VERSION (bad header), DANGO_EMSGSIZE
 * (payload above @limit), DANGO_ENOMEM or a socket error. With rx->recvs 0
 * only frames already in the staging buffer are returned.
 */
int dango__rpc_rx_next(rpc_rx_t *rx, int fd, uint64_t limit, rpc_frame_t *f);

/* Takes the big payload of the frame just returned (NULL if in staging). */
void *dango__rpc_rx_take(rpc_rx_t *rx);

/* True while a frame is partly received. */
int dango__rpc_rx_partial(const rpc_rx_t *rx);

/* ---------- frame writer ---------- */

/*
 * Writes queued frames, many per sendmsg(), calling @done for each one fully
 * written; sets *@wrote_p when any byte went out. Returns 0 when @txq is
 * empty, 1 when the socket is full, or an error (the caller closes the
 * connection).
 */
int dango__rpc_tx_flush(int fd, dango_list_link_t *txq, rpc_tx_done_cb done,
                        void *arg, int *wrote_p);

/* Drops every queued frame through @done. */
void dango__rpc_tx_drop(dango_list_link_t *txq, rpc_tx_done_cb done, void *arg);

#endif
