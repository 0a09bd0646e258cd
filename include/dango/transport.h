/**
 * @file transport.h
 * @brief The transport plugin interface (tcp, shm, file; later rdma, cuda).
 *
 * The transfer engine cuts requests into slices and hands each slice to the
 * endpoint of the transport chosen for its peer. A transport implements the
 * ops table below and registers it with DANGO_TRANSPORT_DEFINE; the engine
 * reaches it only through dango_tp_*() dispatch helpers.
 *
 * Threads: the engine owns a set of event loops (worker threads) and passes
 * them to iface_open(); a transport registers its fds on those loops and
 * completes slices from them. post() may be called from any thread.
 *
 * Completion: every posted slice is completed exactly once through
 * slice->complete(slice, status), with status 0 or a DANGO_E* code, from any
 * transport thread (or from inside post() only when post() returns 0 and the
 * transport completes synchronously, e.g. a local copy). A slice whose post()
 * returned an error is not completed.
 */
#ifndef DANGO_TRANSPORT_H
#define DANGO_TRANSPORT_H

#include <dango/common.h>
#include <dango/config.h>

/** An event loop owned by the engine (declared in the common library). */
typedef struct dango_loop dango_loop_t;
/** A transport instance inside one engine. Opaque to the engine. */
typedef struct dango_tp_iface dango_tp_iface_t;
/** A connection or mapping to one peer segment. Opaque to the engine. */
typedef struct dango_tp_ep dango_tp_ep_t;

/** Slice operation codes (same values as DANGO_XFER_OP_*). */
enum {
    DANGO_TP_OP_READ  = 0, /**< Remote → local. */
    DANGO_TP_OP_WRITE = 1  /**< Local → remote. */
};

/** Access rights checked by the target (bit mask). */
enum {
    DANGO_TP_ACCESS_READ  = 1u << 0, /**< Peer reads the range. */
    DANGO_TP_ACCESS_WRITE = 1u << 1  /**< Peer writes the range. */
};

/** Transport capability bits reported by iface_query(). */
enum {
    DANGO_TP_CAP_NOTIFY    = 1u << 0, /**< Can deliver notifications. */
    DANGO_TP_CAP_DESC      = 1u << 1, /**< Can fetch a peer descriptor (P2P). */
    DANGO_TP_CAP_SAME_HOST = 1u
                             << 2, /**< Only usable between same-host peers. */
    DANGO_TP_CAP_FILE = 1u << 3    /**< Serves file:// segments. */
};

/**
 * One unit of transfer. Owned by the engine; borrowed by the transport from
 * post() until complete() is called.
 */
typedef struct dango_tp_slice {
    void    *tp_priv[4]; /**< Scratch for the transport (queue links, state). */
    uint64_t id;         /**< Unique within the engine. */
    uint8_t  op;         /**< DANGO_TP_OP_READ or DANGO_TP_OP_WRITE. */
    uint8_t  retries;    /**< Times the transport has re-posted it. */
    uint16_t reserved;
    int32_t  status;  /**< Scratch for the transport's final status. */
    void    *local;   /**< Local address (registered memory). */
    uint64_t remote;  /**< Remote address, or offset for file segments. */
    uint64_t length;  /**< Bytes; never 0. */
    uint64_t post_ns; /**< Monotonic time of the first post. */
    /** Completion, called exactly once; @p status is 0 or a DANGO_E* code. */
    void (*complete)(struct dango_tp_slice *slice, int status);
} dango_tp_slice_t;

/** Services the engine provides to its transports. */
typedef struct dango_tp_host {
    void *ctx; /**< Passed back to every function below. */
    /**
     * Target side: pins the registered, remote-accessible region that holds
     * [addr, addr+len) for @p access. Returns 0 and a handle to release, or
     * DANGO_EREMOTE_ACCESS. Never blocks.
     */
    int (*mem_acquire)(void *ctx, uint64_t addr, uint64_t len, unsigned access,
                       void **region_p);
    /** Releases a handle from mem_acquire(). */
    void (*mem_release)(void *ctx, void *region);
    /**
     * Target side: the memfd behind the registered region that starts at
     * @p addr (for same-host mapping). Returns a dup'ed fd the caller closes,
     * or DANGO_ENOENT / DANGO_EREMOTE_ACCESS.
     */
    int (*mem_fd)(void *ctx, uint64_t addr, int *fd_p, uint64_t *len_p);
    /** A notification from segment @p from arrived. */
    void (*notify_recv)(void *ctx, const char *from, const void *msg,
                        size_t len);
    /**
     * The local segment descriptor as JSON (for peers that ask in P2P
     * mode). Returns an allocated string the caller frees with dango_free().
     */
    int (*desc_get)(void *ctx, char **json_p);
} dango_tp_host_t;

/** Parameters of iface_open(). */
typedef struct dango_tp_iface_params {
    const dango_tp_host_t *host;         /**< Engine services. */
    dango_loop_t *const   *loops;        /**< Worker loops. */
    unsigned               num_loops;    /**< At least 1. */
    const char            *segment_name; /**< Local segment name. */
    uint64_t               instance_id;  /**< Changes on every engine start. */
    const char            *listen; /**< "host:port" for listening transports. */
    const char            *token;  /**< Cluster token, or NULL. */
    const dango_config_t  *config; /**< Options, or NULL. */
} dango_tp_iface_params_t;

/** What a transport reports about itself. Strings are owned by the iface. */
typedef struct dango_tp_iface_attr {
    unsigned    caps;      /**< DANGO_TP_CAP_* bits. */
    size_t      max_slice; /**< Preferred slice size in bytes. */
    const char *desc_json; /**< This transport's descriptor section (JSON
                                object text), or NULL when it publishes none. */
} dango_tp_iface_attr_t;

/** The peer an endpoint reaches. */
typedef struct dango_tp_peer {
    const char *name;        /**< Segment name (e.g. "node1", "file:///x"). */
    const char *desc_json;   /**< The peer's full descriptor, or NULL (file). */
    uint64_t    instance_id; /**< The peer's instance, 0 if unknown. */
} dango_tp_peer_t;

/** The ops table a transport implements. */
typedef struct dango_transport_ops {
    const char *name; /**< "tcp", "shm", "file", ... */
    /** Creates the transport inside an engine. */
    int (*iface_open)(const dango_tp_iface_params_t *params,
                      dango_tp_iface_t             **iface_p);
    /** Destroys it; every endpoint has been destroyed before. */
    void (*iface_close)(dango_tp_iface_t *iface);
    /** Fills @p attr; valid until iface_close(). */
    int (*iface_query)(dango_tp_iface_t *iface, dango_tp_iface_attr_t *attr);
    /** Local memory was registered / is being unregistered (may be NULL). */
    int (*mem_reg)(dango_tp_iface_t *iface, void *addr, size_t len);
    void (*mem_dereg)(dango_tp_iface_t *iface, void *addr, size_t len);
    /**
     * Creates an endpoint to @p peer. Returns DANGO_ENOTSUP when this
     * transport cannot reach the peer (the engine tries the next one).
     */
    int (*ep_create)(dango_tp_iface_t *iface, const dango_tp_peer_t *peer,
                     dango_tp_ep_t **ep_p);
    /** Fails whatever is still in flight on @p ep, then frees it. */
    void (*ep_destroy)(dango_tp_ep_t *ep);
    /**
     * True when @p ep can serve [remote, remote+len) (e.g. the range lies in
     * a mapped buffer). NULL means always.
     */
    int (*ep_can_serve)(dango_tp_ep_t *ep, uint64_t remote, uint64_t len);
    /** Posts a slice; 0 or an immediate error (slice not completed then). */
    int (*post)(dango_tp_ep_t *ep, dango_tp_slice_t *slice);
    /**
     * Sends a notification; @p done->complete() fires when the peer has
     * acknowledged it (only the completion fields of @p done are used).
     * NULL when the transport lacks DANGO_TP_CAP_NOTIFY.
     */
    int (*notify)(dango_tp_ep_t *ep, const void *msg, size_t len,
                  dango_tp_slice_t *done);
    /**
     * Fetches the descriptor of the peer listening at @p addr ("host:port")
     * for P2P handshake mode; allocated JSON, freed with dango_free().
     * NULL when the transport lacks DANGO_TP_CAP_DESC.
     */
    int (*desc_fetch)(dango_tp_iface_t *iface, const char *addr,
                      uint64_t timeout_ns, char **json_p);
} dango_transport_ops_t;

/** @internal Registry entry (one per built transport). */
typedef struct dango_transport_entry {
    const dango_transport_ops_t  *ops;
    struct dango_transport_entry *next;
} dango_transport_entry_t;

DANGO_BEGIN_DECLS

/** @brief Registers a transport (done by DANGO_TRANSPORT_DEFINE). */
DANGO_API void dango_transport_register(dango_transport_entry_t *entry);

/** @brief Looks a transport up by name; NULL when not built. */
DANGO_API const dango_transport_ops_t *dango_transport_find(const char *name);

/**
 * @brief Lists the built transports, in registration order.
 * @return The number of transports; up to @p max names stored in @p names.
 */
DANGO_API size_t dango_transport_list(const char **names, size_t max);

DANGO_END_DECLS

/**
 * Registers @p _ops at load time (for transports built outside libdango;
 * the built-in ones are listed statically so static linking keeps them).
 */
#define DANGO_TRANSPORT_DEFINE(_ops)                                           \
    static dango_transport_entry_t dango__tp_entry_##_ops = {&(_ops), NULL};   \
    __attribute__((constructor)) static void dango__tp_register_##_ops(void)   \
    {                                                                          \
        dango_transport_register(&dango__tp_entry_##_ops);                     \
    }

/** Dispatch: posts a slice on an endpoint of transport @p _ops. */
#define dango_tp_post(_ops, _ep, _slice) ((_ops)->post((_ep), (_slice)))

#endif /* DANGO_TRANSPORT_H */
