/**
 * @file xfer.h
 * @brief The transfer engine: registered memory, segments and batches.
 *
 * An engine owns one local segment: the memory it registers, published under
 * the engine's segment name through the metadata service. Peers open the
 * segment by name and READ from or WRITE to its remote-accessible buffers,
 * addressed by the owner's virtual addresses; the owner checks every access
 * against what it registered. File segments are opened as `file://<path>`
 * and addressed by file offset.
 *
 * Requests are grouped in batches; each request is cut into slices that the
 * engine's worker threads move over the transport chosen for the peer:
 * `shm` (same host: one copy into the peer's mapped memory), `tcp` (a pool
 * of persistent connections per peer) or `file` (io_uring). Nothing is
 * reported complete before the bytes are in the destination memory.
 *
 * Thread safety: engine functions are safe from any thread. A batch is used
 * by one thread at a time; different batches may be used concurrently.
 */
#ifndef DANGO_XFER_H
#define DANGO_XFER_H

#include <dango/common.h>
#include <dango/config.h>

/** A transfer engine. Opaque. */
typedef struct dango_xfer_engine dango_xfer_engine_t;
/** A batch of transfer requests. Opaque. */
typedef struct dango_xfer_batch dango_xfer_batch_t;
/** A segment handle, local to one engine. */
typedef int32_t dango_segment_id_t;

/** The engine's own segment (loopback transfers). */
#define DANGO_XFER_LOCAL_SEGMENT ((dango_segment_id_t)0)
/** Metadata string that selects peer-to-peer handshake (no server). */
#define DANGO_XFER_P2PHANDSHAKE "P2PHANDSHAKE"
/** Longest notification message, in bytes. */
#define DANGO_XFER_NOTIFY_MAX 4096
/** Longest segment name, in bytes (without the NUL). */
#define DANGO_XFER_NAME_MAX 255

/** Bits of dango_xfer_engine_params_t::field_mask. Append only. */
enum dango_xfer_engine_params_field {
    DANGO_XFER_ENGINE_PARAM_SEGMENT_NAME = 1u << 0, /**< segment_name */
    DANGO_XFER_ENGINE_PARAM_METADATA     = 1u << 1, /**< metadata */
    DANGO_XFER_ENGINE_PARAM_LISTEN       = 1u << 2, /**< listen_addr */
    DANGO_XFER_ENGINE_PARAM_NUM_WORKERS  = 1u << 3, /**< num_workers */
    DANGO_XFER_ENGINE_PARAM_TRANSPORTS   = 1u << 4  /**< transports */
};

/**
 * Engine parameters. Fields whose bit is not in field_mask take the default
 * named in their comment (itself an XFER_* option, see `dango info -c`).
 */
typedef struct dango_xfer_engine_params {
    uint64_t field_mask; /**< DANGO_XFER_ENGINE_PARAM_* bits. */
    /**
     * Local segment name, unique in the cluster. Default: XFER_SEGMENT_NAME,
     * else "<hostname>:<pid>". In P2P handshake mode the name is rewritten
     * to the listen address "host:port" (see
     * dango_xfer_engine_segment_name()).
     */
    const char *segment_name;
    /**
     * Metadata connection string: "http://host:port/metadata",
     * "mem://<name>" or DANGO_XFER_P2PHANDSHAKE. Default: XFER_METADATA
     * ("P2PHANDSHAKE").
     */
    const char *metadata;
    /** TCP listen address "host:port" (port 0 = any). Default: XFER_LISTEN. */
    const char *listen_addr;
    /** Worker threads (1..64). Default: XFER_WORKERS. */
    unsigned num_workers;
    /**
     * Transports in order of preference, comma separated, e.g. "shm,tcp" or
     * "tcp" to disable same-host shared memory. Default: XFER_TRANSPORTS.
     */
    const char *transports;
} dango_xfer_engine_params_t;

/** Flags of dango_xfer_mem_register() and dango_xfer_mem_alloc(). */
enum dango_xfer_mem_flags {
    /** Peers may read and write the region (otherwise: local use only). */
    DANGO_XFER_MEM_REMOTE = 1u << 0
};

/** Request operations. */
typedef enum dango_xfer_op {
    DANGO_XFER_OP_READ  = 0, /**< remote segment → local memory */
    DANGO_XFER_OP_WRITE = 1  /**< local memory → remote segment */
} dango_xfer_op_t;

/** One transfer request. */
typedef struct dango_xfer_req {
    dango_xfer_op_t    op;         /**< READ or WRITE. */
    void              *local_addr; /**< Inside locally registered memory. */
    dango_segment_id_t segment;    /**< From dango_xfer_segment_open(). */
    uint64_t remote_addr;          /**< Peer virtual address, or file offset. */
    uint64_t length;               /**< Bytes; 0 completes at once. */
} dango_xfer_req_t;

/** States of a request or a batch. */
typedef enum dango_xfer_state {
    DANGO_XFER_PENDING   = 0, /**< In flight (or not yet submitted). */
    DANGO_XFER_COMPLETED = 1, /**< All bytes are in the destination. */
    DANGO_XFER_FAILED    = 2  /**< Failed; see error. */
} dango_xfer_state_t;

/** Status of a request or a batch. */
typedef struct dango_xfer_status {
    dango_xfer_state_t state; /**< PENDING, COMPLETED or FAILED. */
    int                error; /**< 0, or the first DANGO_E* code seen. */
    uint64_t           bytes; /**< Bytes known to have arrived (lower bound). */
} dango_xfer_status_t;

/** Information about an open segment. */
typedef struct dango_xfer_segment_info {
    char     name[DANGO_XFER_NAME_MAX + 1]; /**< Segment name. */
    char     transport[16]; /**< Transport chosen for it ("tcp", ...). */
    uint64_t instance_id;   /**< Peer instance (changes on restart). */
    unsigned num_buffers;   /**< Remote-accessible buffers it publishes. */
} dango_xfer_segment_info_t;

/** A received notification. */
typedef struct dango_xfer_notify {
    char   from[DANGO_XFER_NAME_MAX + 1];  /**< Sender's segment name. */
    size_t length;                         /**< Bytes in msg. */
    char   msg[DANGO_XFER_NOTIFY_MAX + 1]; /**< Message, NUL-terminated. */
} dango_xfer_notify_t;

DANGO_BEGIN_DECLS

/**
 * @brief Creates an engine, starts its workers and publishes its segment.
 *
 * @param[in]  params  Parameters (NULL = all defaults).
 * @param[in]  config  Options (XFER_*, TCP_*, SHM_*, FILE_*, MD_*), or NULL
 *                     for environment and defaults. Copied; may be released
 *                     after the call.
 * @param[out] eng_p   Set on success only.
 * @return 0, or:
 *         - DANGO_EINVAL      a parameter is malformed (empty or too long
 *                             name, bad listen address, num_workers 0 or
 *                             > 64, unknown transport name).
 *         - DANGO_ECONFIG     an option does not parse.
 *         - DANGO_EADDRINUSE  the listen address is taken.
 *         - DANGO_EMETADATA   the metadata service cannot be reached.
 *         - DANGO_EEXIST      another live engine publishes the same name
 *                             (a leftover descriptor whose endpoint no longer
 *                             answers with that name is replaced).
 *         - DANGO_ENOMEM
 * @note Thread safety: safe from any thread.
 */
DANGO_API int dango_xfer_engine_create(const dango_xfer_engine_params_t *params,
                                       const dango_config_t             *config,
                                       dango_xfer_engine_t             **eng_p);

/**
 * @brief Stops the workers, withdraws the segment and frees the engine.
 *
 * Destroy batches first. Requests still in flight fail with
 * DANGO_ECANCELED before this returns; their batches may then only be
 * queried and destroyed. NULL is ignored.
 */
DANGO_API void dango_xfer_engine_destroy(dango_xfer_engine_t *eng);

/**
 * @brief The engine's segment name (rewritten to "host:port" in P2P mode).
 * @return A string valid until dango_xfer_engine_destroy().
 */
DANGO_API const char *
dango_xfer_engine_segment_name(const dango_xfer_engine_t *eng);

/**
 * @brief The identity of the host the engine runs on (XFER_HOST_ID, else
 *        derived from the machine id, boot id and network namespace): two
 *        engines with the same one can use same-host transports.
 * @return A string valid until dango_xfer_engine_destroy().
 */
DANGO_API const char *dango_xfer_engine_host_id(const dango_xfer_engine_t *eng);

/**
 * @brief The address the engine listens on, "host:port".
 * @return 0, or DANGO_ERANGE when @p len is too small.
 */
DANGO_API int dango_xfer_engine_listen_addr(const dango_xfer_engine_t *eng,
                                            char *buf, size_t len);

/**
 * @brief Registers a memory region.
 *
 * @param[in] addr      Start of the region.
 * @param[in] len       Length in bytes, > 0.
 * @param[in] location  "cpu:<numa node>", or "*" (or NULL) to detect the
 *                      node of the region's first page.
 * @param[in] flags     DANGO_XFER_MEM_REMOTE to let peers access it.
 * @return 0, or:
 *         - DANGO_EINVAL    NULL addr, len 0, address overflow, malformed
 *                           location.
 *         - DANGO_EOVERLAP  the region overlaps a registered one.
 *         - DANGO_EMETADATA publishing the new descriptor failed (the
 *                           region is not registered).
 *         - DANGO_ENOMEM
 * @note The memory must stay valid until dango_xfer_mem_unregister().
 */
DANGO_API int dango_xfer_mem_register(dango_xfer_engine_t *eng, void *addr,
                                      size_t len, const char *location,
                                      unsigned flags);

/**
 * @brief Unregisters the region that starts at @p addr.
 *
 * Returns after any peer access in progress has finished; no transport
 * touches the region after this returns 0.
 * @return 0, or DANGO_ENOENT (no region starts at @p addr), DANGO_EBUSY
 *         (a peer access did not finish within XFER_UNREGISTER_TIMEOUT; the
 *         region stays registered), DANGO_EINVAL (the region came from
 *         dango_xfer_mem_alloc(): use dango_xfer_mem_free()).
 */
DANGO_API int dango_xfer_mem_unregister(dango_xfer_engine_t *eng, void *addr);

/**
 * @brief Allocates and registers memory backed by a memfd, so peers on the
 *        same host can map it (transport shm). The pages are populated up
 *        front.
 * @param[out] addr_p  Set to the start of the region on success only.
 * @return 0, or DANGO_EINVAL (len 0, bad location), DANGO_ENOMEM (memfd or
 *         mmap failed), DANGO_EMETADATA.
 */
DANGO_API int dango_xfer_mem_alloc(dango_xfer_engine_t *eng, size_t len,
                                   const char *location, unsigned flags,
                                   void **addr_p);

/**
 * @brief Unregisters and frees memory from dango_xfer_mem_alloc().
 * @return 0, DANGO_ENOENT (not from mem_alloc), DANGO_EBUSY (as unregister).
 */
DANGO_API int dango_xfer_mem_free(dango_xfer_engine_t *eng, void *addr);

/**
 * @brief Opens a segment by name and returns its handle.
 *
 * The descriptor is fetched from the metadata service (or from the peer in
 * P2P mode, where the name is "host:port") and cached: opening an open name
 * again returns the same id, unless the peer restarted or a transfer found
 * the segment stale, in which case the descriptor is re-resolved and a new
 * id returned. "file://<path>" opens a file segment (created if missing).
 * The engine's own name gives DANGO_XFER_LOCAL_SEGMENT.
 *
 * @return 0, or:
 *         - DANGO_EINVAL    empty or too long name.
 *         - DANGO_ENOENT    no such segment is published (or no such file
 *                           and it cannot be created).
 *         - DANGO_EPEER_GONE the peer does not answer (P2P mode).
 *         - DANGO_ETIMEDOUT, DANGO_EMETADATA, DANGO_ECORRUPT (descriptor
 *           does not parse), DANGO_EAUTH, DANGO_ENOMEM.
 */
DANGO_API int dango_xfer_segment_open(dango_xfer_engine_t *eng,
                                      const char          *name,
                                      dango_segment_id_t  *id_p);

/**
 * @brief Closes a segment handle. Requests still in flight on it complete.
 * @return 0, or DANGO_ENOENT (not open), DANGO_EINVAL (the local segment).
 */
DANGO_API int dango_xfer_segment_close(dango_xfer_engine_t *eng,
                                       dango_segment_id_t   id);

/**
 * @brief Describes an open segment.
 * @return 0, or DANGO_ENOENT.
 */
DANGO_API int dango_xfer_segment_query(dango_xfer_engine_t       *eng,
                                       dango_segment_id_t         id,
                                       dango_xfer_segment_info_t *info);

/**
 * @brief The @p index-th remote-accessible buffer of a segment (in
 *        registration order), e.g. to address a peer's pool.
 * @return 0, or DANGO_ENOENT (no such segment or index).
 */
DANGO_API int dango_xfer_segment_buffer(dango_xfer_engine_t *eng,
                                        dango_segment_id_t id, unsigned index,
                                        uint64_t *addr_p, uint64_t *len_p);

/**
 * @brief Creates a batch for at most @p capacity requests in total.
 * @return 0, or DANGO_EINVAL (capacity 0 or > XFER_MAX_BATCH), DANGO_ENOMEM.
 */
DANGO_API int dango_xfer_batch_create(dango_xfer_engine_t *eng, size_t capacity,
                                      dango_xfer_batch_t **batch_p);

/**
 * @brief Submits requests into a batch.
 *
 * Requests are copied and queued; the workers move them. Completion is never
 * reported from inside this call.
 *
 * @param[in] reqs   Array of @p count requests.
 * @param[in] count  1 .. remaining capacity.
 * @return 0 if every request was queued. On error nothing is queued and:
 *         - DANGO_EINVAL   @p count is 0 or exceeds the remaining capacity,
 *                          an op is unknown, or a range overflows.
 *         - DANGO_ENOENT   a request names a segment that is not open.
 *         - DANGO_ENOTREG  a local range is not inside registered memory.
 *         - DANGO_ESEGMENT_STALE  the segment was found stale: re-open it.
 *         - DANGO_EBUSY    a notification is armed (see
 *                          dango_xfer_batch_notify()); reset the batch.
 *         - DANGO_ESTATE   the engine is shutting down.
 *         - DANGO_ENOMEM
 * @note Ownership: each local range is borrowed until its request completes.
 */
DANGO_API int dango_xfer_batch_submit(dango_xfer_batch_t     *batch,
                                      const dango_xfer_req_t *reqs,
                                      size_t                  count);

/**
 * @brief Asks for a notification to be delivered to segment @p target once
 *        every request submitted into the batch so far has completed
 *        successfully. The batch completes only after the target
 *        acknowledged the notification.
 *
 * Call after submitting the requests it covers (it may be called when they
 * have already completed: it is then sent at once). Until the batch is
 * reset, further submits are refused with DANGO_EBUSY. If a covered request
 * fails, the notification is not sent. The message is copied.
 * @return 0, or DANGO_EINVAL (@p len 0 or > DANGO_XFER_NOTIFY_MAX),
 *         DANGO_ENOENT (segment not open), DANGO_ENOTSUP (local or file
 *         segment), DANGO_EBUSY (already set), DANGO_ENOMEM.
 */
DANGO_API int dango_xfer_batch_notify(dango_xfer_batch_t *batch,
                                      dango_segment_id_t  target,
                                      const void *msg, size_t len);

/**
 * @brief Status of request @p index (0-based, in submission order).
 * @return 0, or DANGO_EINVAL (@p index not submitted).
 */
DANGO_API int dango_xfer_batch_status(const dango_xfer_batch_t *batch,
                                      size_t                    index,
                                      dango_xfer_status_t      *status);

/**
 * @brief Status of the whole batch: FAILED as soon as any request failed
 *        (error = the first failure), COMPLETED when all completed.
 */
DANGO_API int dango_xfer_batch_query(const dango_xfer_batch_t *batch,
                                     dango_xfer_status_t      *status);

/**
 * @brief Waits until every submitted request has finished.
 * @param[in] timeout_ms  Longest wait; 0 polls once; negative waits without a
 *                        limit (a tcp transfer that makes no progress fails
 *                        after TCP_IO_TIMEOUT per try, TCP_RETRIES retries).
 * @return 0 when everything completed, DANGO_ETIMEDOUT when the time ran
 *         out first (the batch stays in flight), otherwise the first error
 *         of a failed request once all have finished.
 */
DANGO_API int dango_xfer_batch_wait(dango_xfer_batch_t *batch, int timeout_ms);

/**
 * @brief Makes a finished batch empty again for reuse (capacity kept).
 * @return 0, or DANGO_EBUSY (something is still in flight).
 */
DANGO_API int dango_xfer_batch_reset(dango_xfer_batch_t *batch);

/** @brief Capacity given at creation. */
DANGO_API size_t dango_xfer_batch_capacity(const dango_xfer_batch_t *batch);

/**
 * @brief Destroys a batch.
 * @return 0, or DANGO_EBUSY while anything is in flight (nothing freed).
 */
DANGO_API int dango_xfer_batch_destroy(dango_xfer_batch_t *batch);

/**
 * @brief Takes up to @p max received notifications (oldest first).
 * @param[out] count_p  Number stored.
 * @return 0 (also when none is pending), or DANGO_EINVAL.
 */
DANGO_API int dango_xfer_notify_recv(dango_xfer_engine_t *eng,
                                     dango_xfer_notify_t *out, size_t max,
                                     size_t *count_p);

/**
 * @brief Sends a notification without data and waits for its
 *        acknowledgement (at most @p timeout_ms).
 * @return 0, DANGO_EINVAL, DANGO_ENOENT, DANGO_ENOTSUP, DANGO_ETIMEDOUT, or a
 *         link or peer error.
 */
DANGO_API int dango_xfer_notify_send(dango_xfer_engine_t *eng,
                                     dango_segment_id_t target, const void *msg,
                                     size_t len, int timeout_ms);

DANGO_END_DECLS

#endif /* DANGO_XFER_H */
