/*
 * TCP transport internals, shared by tcp_iface.c (listener, server side,
 * config) and tcp_ep.c (client side: endpoints, connection pools).
 *
 * One tcp_conn_t is one TCP connection in either role. A connection is
 * owned by exactly one engine loop: only that thread reads, writes or frees
 * it. Other threads hand slices to a client connection through its inbox
 * (a lock-free LIFO) and one posted "kick" task.
 */
#ifndef DANGO_TCP_INT_H
#define DANGO_TCP_INT_H

#define DANGO_LOG_COMPONENT dango__log_tcp

#include <stdint.h>
#include <dango/error.h>
#include <dango/log.h>
#include <dango/transport.h>
#include <protobuf-c/protobuf-c.h>
#include "common/list.h"
#include "common/loop.h"
#include "common/mpool.h"
#include "net/auth.h"
#include "net/frame.h"

extern dango_log_component_t dango__log_tcp;

#define TCP_RX_STAGING 16384 /* small frames are parsed from here */
#define TCP_MAX_IOV    32
#define TCP_OP_NOTIFY  2 /* internal slice op: a notification */

typedef struct tcp_config {
    size_t        slice_size;
    unsigned long conns_per_peer;
    size_t        window;
    uint64_t      io_timeout;
    uint64_t      connect_timeout;
    unsigned long retries;
    size_t        sndbuf;
    size_t        rcvbuf;
    unsigned long backlog;
} tcp_config_t;

typedef enum tcp_conn_state {
    TCP_CONN_IDLE,       /* client: not connected yet (or after a failure) */
    TCP_CONN_CONNECTING, /* client: non-blocking connect in progress */
    TCP_CONN_HANDSHAKE,  /* waiting for Hello (server) / HelloAck (client) */
    TCP_CONN_AUTH_WAIT,  /* server: waiting for Auth */
    TCP_CONN_READY,
    TCP_CONN_CLOSED /* server: closed, to be freed */
} tcp_conn_state_t;

typedef enum tcp_rx_phase {
    TCP_RX_HDR,  /* reading a frame header */
    TCP_RX_MEM,  /* payload straight into registered memory */
    TCP_RX_CTRL, /* protobuf payload into an allocated buffer */
    TCP_RX_DRAIN /* payload to discard (refused WRITE) */
} tcp_rx_phase_t;

/* One outgoing frame: header plus optional payload. */
typedef struct tcp_tx {
    dango_list_link_t link;
    dango_frame_t     hdr;
    const char       *data; /* payload, not owned unless @owned */
    uint64_t          data_len;
    uint64_t          sent;   /* bytes of header + payload sent */
    void             *region; /* server READ: pinned region, released */
    void             *owned;  /* freed after sending */
} tcp_tx_t;

typedef struct tcp_iface tcp_iface_t;
typedef struct tcp_ep    tcp_ep_t;

typedef struct tcp_conn {
    tcp_iface_t      *iface;
    tcp_ep_t         *ep; /* client role; NULL for server */
    unsigned          loop_idx;
    dango_loop_t     *loop;
    dango_list_link_t list; /* in iface->loop_conns[loop_idx] */
    int               fd;
    int               in_loop_list;
    tcp_conn_state_t  state;
    unsigned          events;
    char              peer_addr[64];

    /* receive side */
    tcp_rx_phase_t rx_phase;
    dango_frame_t  rx_hdr;
    char          *rx_dst;
    uint64_t       rx_left;
    char          *rx_ctrl;
    uint64_t       rx_ctrl_len;
    void          *rx_region;
    int            rx_status;
    char          *rx_buf; /* TCP_RX_STAGING bytes */
    size_t         rx_off;
    size_t         rx_len;

    /* send side */
    dango_list_link_t txq;

    /* client role */
    dango_mpsc_t      inbox; /* from any thread, via tp_priv[3] */
    dango_loop_task_t kick;
    int               kick_pending;
    dango_list_link_t pending;  /* slices not yet sent (window/handshake) */
    dango_list_link_t inflight; /* sent, awaiting response, FIFO */
    uint64_t          inflight_bytes;
    uint64_t          load;       /* atomic: bytes queued, for choosing */
    uint64_t          fail_until; /* atomic: monotonic ns of backoff end */
    int               last_error; /* error to fail slices with on close */
    uint8_t           nonce[DANGO_AUTH_NONCE_LEN];
    uint8_t           peer_nonce[DANGO_AUTH_NONCE_LEN];
    uint64_t          last_progress;
    uint64_t          state_since;
} tcp_conn_t;

struct tcp_ep {
    tcp_iface_t *iface;
    char        *name;  /* peer segment name */
    char       **addrs; /* peer endpoints, "host:port" */
    unsigned     num_addrs;
    uint64_t     instance_id; /* expected peer instance, 0 = any */
    unsigned     num_conns;
    tcp_conn_t **conns;
    unsigned     rr; /* atomic round-robin cursor */
};

struct tcp_iface {
    const dango_tp_host_t *host;
    dango_loop_t         **loops;
    unsigned               num_loops;
    dango_list_link_t     *loop_conns; /* per loop, owned by that loop */
    int                   *timer_ids;
    char                  *segment_name;
    uint64_t               instance_id;
    char                  *token;
    tcp_config_t           cfg;
    int                    listen_fd;
    char                   listen_addr[64];
    char                  *desc_json;
    unsigned               accept_rr;
    dango_mpool_t          tx_pool;
};

extern dango_config_table_t dango__tcp_config_table_rw;

/* tcp_iface.c */
tcp_tx_t *dango__tcp_tx_get(tcp_iface_t *iface);
void      dango__tcp_tx_put(tcp_iface_t *iface, tcp_tx_t *tx);
int       dango__tcp_conn_init(tcp_conn_t *conn, tcp_iface_t *iface,
                               unsigned loop_idx);
void      dango__tcp_conn_enqueue(tcp_conn_t *conn, tcp_tx_t *tx);
void      dango__tcp_conn_flush(tcp_conn_t *conn);
void      dango__tcp_conn_set_events(tcp_conn_t *conn);
void      dango__tcp_conn_io_cb(dango_loop_t *loop, int fd, unsigned events,
                                void *arg);
/* Queues a control frame; @msg (a protobuf-c message) may be NULL. */
int  dango__tcp_send_ctrl(tcp_conn_t *conn, uint8_t type, uint64_t id,
                          int32_t status, const ProtobufCMessage *msg);
void dango__tcp_conn_drop_tx(tcp_conn_t *conn);
/* The current frame's protobuf payload goes to a fresh rx_ctrl buffer. */
int dango__tcp_rx_ctrl_start(tcp_conn_t *conn);

/* tcp_ep.c: client-side frame handling and failure. */
int  dango__tcp_client_frame(tcp_conn_t *conn);
int  dango__tcp_client_payload_start(tcp_conn_t *conn);
void dango__tcp_client_fail(tcp_conn_t *conn, int error);
void dango__tcp_client_connected(tcp_conn_t *conn);
void dango__tcp_client_timer(tcp_conn_t *conn, uint64_t now);
void dango__tcp_rx_done_mem(tcp_conn_t *conn);

int  dango__tcp_ep_create(dango_tp_iface_t *iface, const dango_tp_peer_t *peer,
                          dango_tp_ep_t **ep_p);
void dango__tcp_ep_destroy(dango_tp_ep_t *ep);
int  dango__tcp_post(dango_tp_ep_t *ep, dango_tp_slice_t *slice);
int  dango__tcp_notify(dango_tp_ep_t *ep, const void *msg, size_t len,
                       dango_tp_slice_t *done);
int  dango__tcp_desc_fetch(dango_tp_iface_t *iface, const char *addr,
                           uint64_t timeout_ns, char **json_p);

#endif
