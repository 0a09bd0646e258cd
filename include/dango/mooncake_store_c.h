/**
 * @file mooncake_store_c.h
 * @brief Mooncake Store's C API (store_c.h) on top of the Dango store.
 *
 * Same names, signatures and return conventions as Mooncake's
 * `mooncake-store/include/store_c.h`, so programs written against it build
 * and run unchanged:
 *   - -1 means a bad argument (NULL handle, NULL key, ...);
 *   - other failures are Mooncake's negative ErrorCode numbers (see
 *     MOONCAKE_ERR_*), translated from the Dango codes;
 *   - a put of an existing key succeeds (returns 0), as Mooncake's
 *     Client::Put treats OBJECT_ALREADY_EXISTS as success;
 *   - batch calls return 0 and fill results_out per key;
 *   - strings are not retained after a call returns.
 *
 * The handle type is `void *`, as in Mooncake (the native API,
 * <dango/store.h>, uses a typed handle instead).
 *
 * Thread safety: as the native client: every call but create, setup,
 * init_all and destroy may run from many threads at once.
 */
#ifndef DANGO_MOONCAKE_STORE_C_H
#define DANGO_MOONCAKE_STORE_C_H

#include <stddef.h>
#include <stdint.h>
#include <dango/common.h>

/** Mooncake ErrorCode numbers returned by this API (spec store.md §9). */
enum mooncake_error_code {
    MOONCAKE_OK                              = 0,
    MOONCAKE_ERR_INTERNAL                    = -1,
    MOONCAKE_ERR_BUFFER_OVERFLOW             = -10,
    MOONCAKE_ERR_SEGMENT_NOT_FOUND           = -101,
    MOONCAKE_ERR_SEGMENT_ALREADY_EXISTS      = -102,
    MOONCAKE_ERR_NO_AVAILABLE_HANDLE         = -200,
    MOONCAKE_ERR_INVALID_KEY                 = -400,
    MOONCAKE_ERR_INVALID_PARAMS              = -600,
    MOONCAKE_ERR_ILLEGAL_CLIENT              = -601,
    MOONCAKE_ERR_INVALID_WRITE               = -700,
    MOONCAKE_ERR_INVALID_READ                = -701,
    MOONCAKE_ERR_INVALID_REPLICA             = -702,
    MOONCAKE_ERR_REPLICA_IS_NOT_READY        = -703,
    MOONCAKE_ERR_OBJECT_NOT_FOUND            = -704,
    MOONCAKE_ERR_OBJECT_ALREADY_EXISTS       = -705,
    MOONCAKE_ERR_OBJECT_HAS_LEASE            = -706,
    MOONCAKE_ERR_LEASE_EXPIRED               = -707,
    MOONCAKE_ERR_TRANSFER_FAIL               = -800,
    MOONCAKE_ERR_CHECKSUM_MISMATCH           = -801,
    MOONCAKE_ERR_RPC_FAIL                    = -900,
    MOONCAKE_ERR_RPC_TIMEOUT                 = -901,
    MOONCAKE_ERR_UNAVAILABLE_IN_CURRENT_MODE = -1011,
    MOONCAKE_ERR_NOT_SUPPORTED               = -1012
};

/** A store client (Mooncake's opaque handle). */
typedef void *mooncake_store_t;

/** Replication of a put; NULL means the defaults. */
typedef struct mooncake_replicate_config {
    size_t       replica_num;   /**< Memory replicas (0 = the default). */
    int          with_soft_pin; /**< != 0: soft pin ENABLE, else PRESERVE. */
    int          with_hard_pin; /**< != 0: never evicted. */
    const char **preferred_segments;       /**< Segment names tried first. */
    size_t       preferred_segments_count; /**< Entries in it. */
} mooncake_replicate_config_t;

DANGO_BEGIN_DECLS

/**
 * @brief Mooncake's error number (MOONCAKE_ERR_*) for a Dango error code:
 *        what every mooncake_store_*() call returns for that failure, for
 *        bindings and wrappers that call the native API and must answer
 *        in Mooncake's terms. 0 and positive values (counts, sizes) pass
 *        through unchanged; codes without a closer match map to
 *        MOONCAKE_ERR_INTERNAL.
 * @note Thread safety: pure function.
 */
DANGO_API int mooncake_store_errno(int dango_err);

/**
 * @brief A handle not yet connected to a store; NULL when out of memory.
 *        Call mooncake_store_setup() or mooncake_store_init_all() next.
 */
DANGO_API mooncake_store_t mooncake_store_create(void);

/** @brief Closes the client (its segment is unmounted). NULL is a no-op. */
DANGO_API void mooncake_store_destroy(mooncake_store_t store);

/**
 * @brief Connects the handle: starts the transfer engine, contributes
 *        @p global_segment_size bytes and allocates @p local_buffer_size
 *        bytes of staging.
 *
 * @param local_hostname      "host" or "host:port" of this client's
 *                            transfer engine (port 0 or none: any port).
 * @param metadata_server     "P2PHANDSHAKE", "http://host:port/metadata".
 * @param protocol            "tcp" (same-host peers use shared memory),
 *                            "shm", or NULL / "" for the default.
 * @param device_name         Ignored (no RDMA); may be NULL.
 * @param master_server_addr  "host:port"; NULL = "127.0.0.1:50051".
 * @return 0, -1 (bad argument or already set up), or a negative ErrorCode.
 */
DANGO_API int
mooncake_store_setup(mooncake_store_t store, const char *local_hostname,
                     const char *metadata_server, uint64_t global_segment_size,
                     uint64_t local_buffer_size, const char *protocol,
                     const char *device_name, const char *master_server_addr);

/**
 * @brief Sets up with every default (STORE_*, XFER_* options and their
 *        environment) and contributes @p mount_segment_size bytes.
 * @return As mooncake_store_setup().
 */
DANGO_API int mooncake_store_init_all(mooncake_store_t store,
                                      const char      *protocol,
                                      const char      *device_name,
                                      uint64_t         mount_segment_size);

/**
 * @brief 0 healthy, 1 not set up, 2 master unreachable, -1 NULL handle.
 */
DANGO_API int mooncake_store_health_check(mooncake_store_t store);

/** @brief Stores a copy of @p value; 0 also when the key exists. */
DANGO_API int mooncake_store_put(mooncake_store_t store, const char *key,
                                 const void *value, size_t size,
                                 const mooncake_replicate_config_t *config);

/** @brief Put from a registered buffer (no intermediate copy). */
DANGO_API int
mooncake_store_put_from(mooncake_store_t store, const char *key, void *buffer,
                        size_t size, const mooncake_replicate_config_t *config);

/** @brief put_from for @p count keys; results_out[i] per key. */
DANGO_API int
mooncake_store_batch_put_from(mooncake_store_t store, const char **keys,
                              void **buffers, const size_t *sizes, size_t count,
                              const mooncake_replicate_config_t *config,
                              int                               *results_out);

/**
 * @brief Reads an object into a registered @p buffer of @p size bytes.
 * @return Bytes read, or a negative ErrorCode (-10 when @p size is too
 *         small, -704 unknown key, -801 checksum mismatch, ...).
 */
DANGO_API int64_t mooncake_store_get_into(mooncake_store_t store,
                                          const char *key, void *buffer,
                                          size_t size);

/** @brief get_into for @p count keys; results_out[i]: bytes or an error. */
DANGO_API int mooncake_store_batch_get_into(mooncake_store_t store,
                                            const char **keys, void **buffers,
                                            const size_t *sizes, size_t count,
                                            int64_t *results_out);

/** @brief 1 exists, 0 not, or a negative ErrorCode. */
DANGO_API int mooncake_store_is_exist(mooncake_store_t store, const char *key);

/** @brief is_exist for @p count keys; results_out[i]: 1, 0 or an error. */
DANGO_API int mooncake_store_batch_is_exist(mooncake_store_t store,
                                            const char **keys, size_t count,
                                            int *results_out);

/** @brief Object size in bytes, or a negative ErrorCode. */
DANGO_API int64_t mooncake_store_get_size(mooncake_store_t store,
                                          const char      *key);

/**
 * @brief Copies this client's segment name ("host:port") into @p buffer.
 * @return 0, or -1 (bad argument, not set up, or @p buffer_size too small).
 */
DANGO_API int mooncake_store_get_hostname(mooncake_store_t store, char *buffer,
                                          size_t buffer_size);

/** @brief Removes an object (@p force: even while leased). */
DANGO_API int mooncake_store_remove(mooncake_store_t store, const char *key,
                                    int force);

/** @brief Removes objects matching a POSIX extended regex; the count. */
DANGO_API int64_t mooncake_store_remove_by_regex(mooncake_store_t store,
                                                 const char      *pattern,
                                                 int              force);

/** @brief Removes every object; the count. */
DANGO_API int64_t mooncake_store_remove_all(mooncake_store_t store, int force);

/** @brief Registers @p buffer for put_from / get_into. */
DANGO_API int mooncake_store_register_buffer(mooncake_store_t store,
                                             void *buffer, size_t size);

/** @brief Undoes mooncake_store_register_buffer(). */
DANGO_API int mooncake_store_unregister_buffer(mooncake_store_t store,
                                               void            *buffer);

DANGO_END_DECLS

#endif /* DANGO_MOONCAKE_STORE_C_H */
