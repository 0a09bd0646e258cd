/*
 * Transfer engine internals shared by xfer_engine.c, xfer_mem.c,
 * xfer_segment.c and xfer_batch.c.
 */
#ifndef DANGO_XFER_INT_H
#define DANGO_XFER_INT_H

#define DANGO_LOG_COMPONENT dango__log_xfer

#include <pthread.h>
#include <stdint.h>
#include <dango/error.h>
#include <dango/log.h>
#include <dango/metadata.h>
#include <dango/transport.h>
#include <dango/xfer.h>
#include "common/list.h"
#include "common/loop.h"
#include "common/config_table.h"
#include "common/mpool.h"

extern dango_log_component_t dango__log_xfer;

#define XFER_MAX_WORKERS    64
#define XFER_MAX_TRANSPORTS 8
#define XFER_NOTIFY_QUEUE   1024

typedef struct xfer_config {
    char         *segment_name;
    char         *metadata;
    char         *listen;
    char         *p2p_ports;
    unsigned long workers;
    char         *transports;
    unsigned long max_batch;
    char         *host_id;
    char         *cluster_id;
    uint64_t      unregister_timeout;
    uint64_t      open_timeout;
    uint64_t      wait_spin;
} xfer_config_t;

extern dango_config_table_t dango__xfer_config_table;

/* A registered memory region. */
typedef struct xfer_region {
    uint64_t addr;
    uint64_t len;
    unsigned flags; /* DANGO_XFER_MEM_* */
    int      numa_node;
    char     location[32];
    int      memfd; /* >= 0 when allocated by dango_xfer_mem_alloc() */
    int      refs;  /* atomic: peer accesses in progress */
    int      dead;  /* atomic: being unregistered */
    uint64_t seq;   /* registration order (buffers are listed in it) */
} xfer_region_t;

/* A transport inside the engine. */
typedef struct xfer_tp {
    const dango_transport_ops_t *ops;
    dango_tp_iface_t            *iface;
    dango_tp_iface_attr_t        attr;
} xfer_tp_t;

/* A published remote buffer, from a peer's descriptor. */
typedef struct xfer_rbuf {
    uint64_t addr;
    uint64_t len;
    int      shm;
} xfer_rbuf_t;

typedef enum xfer_seg_kind {
    XFER_SEG_LOCAL,
    XFER_SEG_MEMORY,
    XFER_SEG_FILE
} xfer_seg_kind_t;

/* An open segment. Freed only at engine destroy (ids are never reused). */
typedef struct xfer_segment {
    dango_segment_id_t id;
    xfer_seg_kind_t    kind;
    char              *name;
    char              *peer_name; /* name in the descriptor (P2P aliases) */
    char              *desc_json;
    uint64_t           instance_id;
    char              *host_id;
    xfer_rbuf_t       *bufs;         /* in the peer's registration order */
    xfer_rbuf_t       *bufs_by_addr; /* the same, sorted by address */
    unsigned           num_bufs;
    int                open;  /* closed segments keep their endpoints */
    int                stale; /* atomic: peer restarted or vanished */
    /* Endpoints, per transport index of the engine; NULL where unusable. */
    dango_tp_ep_t *eps[XFER_MAX_TRANSPORTS];
    int            notify_tp; /* transport index that carries notify */
} xfer_segment_t;

typedef struct xfer_notify_node {
    dango_list_link_t   link;
    dango_xfer_notify_t n;
} xfer_notify_node_t;

struct dango_xfer_engine {
    xfer_config_t cfg;
    char         *name;
    char          listen_addr[64];
    char          host_id[64];
    char         *topology_json; /* NUMA/NIC topology, found at create */
    uint64_t      instance_id;
    int           p2p;
    char         *token;
    dango_md_t   *md;
    char         *md_key;

    dango_loop_t   *loops[XFER_MAX_WORKERS];
    unsigned        num_loops;
    dango_tp_host_t host;
    xfer_tp_t       tps[XFER_MAX_TRANSPORTS];
    unsigned        num_tps;
    int             tcp_idx, shm_idx, file_idx; /* -1 when absent */
    int             order[XFER_MAX_TRANSPORTS]; /* preference for peers */
    unsigned        num_order;

    /* Registered memory: sorted by address, copy-free reads under rdlock. */
    pthread_rwlock_t mem_lock;
    xfer_region_t  **regions;
    size_t           num_regions;
    size_t           cap_regions;
    uint64_t         region_seq; /* next xfer_region_t::seq (mem_lock) */
    pthread_mutex_t  publish_lock;

    /* Segments: id → segment (array), guarded by seg_lock. */
    pthread_mutex_t  seg_lock;
    xfer_segment_t **segs;
    size_t           num_segs;
    size_t           cap_segs;

    /* Notifications received. */
    pthread_mutex_t   notify_lock;
    dango_list_link_t notify_queue;
    size_t            notify_count;

    dango_mpool_t slice_pool;
    uint64_t      next_slice_id; /* atomic */
    int           shutting_down;
    int           ready; /* atomic: create finished, state immutable */
    int           numa_ok;
};

/* xfer_mem.c */
int dango__xfer_mem_init(dango_xfer_engine_t *eng);
/* Remote-accessible regions in registration order (rdlock held by caller);
 * returns their number, stores up to @max of them. */
size_t dango__xfer_remote_regions(dango_xfer_engine_t *eng, xfer_region_t **out,
                                  size_t max);
void   dango__xfer_mem_cleanup(dango_xfer_engine_t *eng);
/* Region that covers [addr, addr+len) (rdlock held by caller), or NULL. */
xfer_region_t *dango__xfer_region_find(dango_xfer_engine_t *eng, uint64_t addr,
                                       uint64_t len);
int  dango__xfer_local_check(dango_xfer_engine_t *eng, const void *addr,
                             uint64_t len);
int  dango__xfer_host_mem_acquire(void *ctx, uint64_t addr, uint64_t len,
                                  unsigned access, void **region_p);
void dango__xfer_host_mem_release(void *ctx, void *region);
int  dango__xfer_host_mem_fd(void *ctx, uint64_t addr, int *fd_p,
                             uint64_t *len_p);

/* xfer_engine.c */
int dango__xfer_publish(dango_xfer_engine_t *eng);
int dango__xfer_desc_build(dango_xfer_engine_t *eng, char **json_p);

/* xfer_segment.c */
xfer_segment_t *dango__xfer_segment_get(dango_xfer_engine_t *eng,
                                        dango_segment_id_t   id);
void            dango__xfer_segment_mark_stale(xfer_segment_t *seg);
/*
 * Checks [addr, addr+len) against the buffers of @seg's descriptor: 0 when
 * it lies inside one, DANGO_EREMOTE_ACCESS when it meets one without lying
 * inside it, 1 when it meets none (the target may have registered it since:
 * it decides). @len > 0, no overflow.
 */
int  dango__xfer_segment_check_range(const xfer_segment_t *seg, uint64_t addr,
                                     uint64_t len);
int  dango__xfer_segments_init(dango_xfer_engine_t *eng);
void dango__xfer_segments_cleanup(dango_xfer_engine_t *eng);

#endif
