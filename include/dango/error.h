/**
 * @file error.h
 * @brief The single error-code space of Dango.
 *
 * Every fallible function returns `int`: 0 on success, a negative DANGO_E* code
 * on failure. System errors are negated errno values; Dango's own codes live in
 * the band -10000 … -10999, grouped by blast radius:
 *   - -10000 … -10099 generic,
 *   - -10100 … -10199 link (retry on another path or connection),
 *   - -10200 … -10299 peer (the remote node is gone: re-resolve the segment),
 *   - -10300 … -10399 store.
 *
 * The list below is the only place a code is defined: it generates the enum,
 * dango_strerror() and dango_err_name(), so they cannot drift apart.
 */
#ifndef DANGO_ERROR_H
#define DANGO_ERROR_H

#include <errno.h>
#include <dango/common.h>

/** Turns a positive errno into a Dango code. */
#define DANGO__ERR(_x) (-(_x))

/**
 * X-macro list: XX(NAME, value, "message").
 * Append only; never renumber a code once released.
 */
#define DANGO_ERRNO_MAP(XX)                                                    \
    XX(EPERM, DANGO__ERR(EPERM), "operation not permitted")                    \
    XX(ENOENT, DANGO__ERR(ENOENT), "no such entry")                            \
    XX(EIO, DANGO__ERR(EIO), "i/o error")                                      \
    XX(EBADF, DANGO__ERR(EBADF), "bad file descriptor")                        \
    XX(EAGAIN, DANGO__ERR(EAGAIN), "resource temporarily unavailable")         \
    XX(ENOMEM, DANGO__ERR(ENOMEM), "not enough memory")                        \
    XX(EACCES, DANGO__ERR(EACCES), "permission denied")                        \
    XX(EFAULT, DANGO__ERR(EFAULT), "bad address")                              \
    XX(EBUSY, DANGO__ERR(EBUSY), "resource busy")                              \
    XX(EEXIST, DANGO__ERR(EEXIST), "already exists")                           \
    XX(EINVAL, DANGO__ERR(EINVAL), "invalid argument")                         \
    XX(EMFILE, DANGO__ERR(EMFILE), "too many open files")                      \
    XX(ENOSPC, DANGO__ERR(ENOSPC), "no space left")                            \
    XX(ERANGE, DANGO__ERR(ERANGE), "value out of range")                       \
    XX(ENAMETOOLONG, DANGO__ERR(ENAMETOOLONG), "name too long")                \
    XX(ENOSYS, DANGO__ERR(ENOSYS), "function not implemented")                 \
    XX(EMSGSIZE, DANGO__ERR(EMSGSIZE), "message too long")                     \
    XX(EPROTO, DANGO__ERR(EPROTO), "protocol error")                           \
    XX(ENOTSUP, DANGO__ERR(ENOTSUP), "operation not supported")                \
    XX(EADDRINUSE, DANGO__ERR(EADDRINUSE), "address already in use")           \
    XX(EADDRNOTAVAIL, DANGO__ERR(EADDRNOTAVAIL), "address not available")      \
    XX(ENETUNREACH, DANGO__ERR(ENETUNREACH), "network unreachable")            \
    XX(ECONNABORTED, DANGO__ERR(ECONNABORTED), "connection aborted")           \
    XX(ECONNRESET, DANGO__ERR(ECONNRESET), "connection reset by peer")         \
    XX(ETIMEDOUT, DANGO__ERR(ETIMEDOUT), "timed out")                          \
    XX(ECONNREFUSED, DANGO__ERR(ECONNREFUSED), "connection refused")           \
    XX(EHOSTUNREACH, DANGO__ERR(EHOSTUNREACH), "host unreachable")             \
    XX(ECANCELED, DANGO__ERR(ECANCELED), "operation canceled")                 \
    XX(EPROTO_VERSION, -10000, "unsupported protocol version")                 \
    XX(ECORRUPT, -10001, "data corrupted (checksum or format mismatch)")       \
    XX(ESTATE, -10002, "handle failed earlier and must be destroyed")          \
    XX(ENOTREG, -10003, "address range not inside registered memory")          \
    XX(EOVERLAP, -10004, "range overlaps already registered memory")           \
    XX(EREMOTE_ACCESS, -10005, "remote refused access to the address range")   \
    XX(EAUTH, -10006, "peer failed cluster token authentication")              \
    XX(EMETADATA, -10007, "metadata service error")                            \
    XX(ECONFIG, -10008, "invalid configuration value")                         \
    XX(ELINK_DOWN, -10100, "link down")                                        \
    XX(ELINK_TIMEOUT, -10101, "no progress on link within the timeout")        \
    XX(EPEER_GONE, -10200, "peer unreachable or gone")                         \
    XX(ESEGMENT_STALE, -10201, "segment descriptor is stale (peer restarted)") \
    XX(EREPLICA_UNAVAIL, -10300, "no replica available")                       \
    XX(ELEASE_HELD, -10301, "object lease is held")                            \
    XX(EEVICTED, -10302, "object was evicted")                                 \
    XX(EOBJ_EXISTS, -10303, "object already exists")                           \
    XX(ENO_OBJECT, -10304, "object not found")                                 \
    XX(ENOT_READY, -10305, "object has no complete replica yet")               \
    XX(ELEASE_EXPIRED, -10306, "read lease expired before the read finished")  \
    XX(EILLEGAL_CLIENT, -10307, "client does not own this put")                \
    XX(EINVALID_WRITE, -10308, "no put of this key in progress")               \
    XX(ENEED_REMOUNT, -10309, "master does not know this client: remount")     \
    XX(ENO_SEGMENT, -10310, "segment not found")                               \
    XX(ESEGMENT_EXISTS, -10311, "segment already mounted by another client")   \
    XX(ENOT_LEADER, -10380,                                                    \
       "master is not the leader (standby or stepped down)")                   \
    XX(ESTALE_TERM, -10381, "reply from a master of an older term")

/** Dango error codes (all negative). */
typedef enum dango_errno {
#define DANGO__ERR_ENUM(_name, _val, _msg) DANGO_##_name = (_val),
    DANGO_ERRNO_MAP(DANGO__ERR_ENUM)
#undef DANGO__ERR_ENUM
        DANGO_OK = 0 /**< Success. */
} dango_errno_t;

DANGO_BEGIN_DECLS

/**
 * @brief Human-readable message for an error code.
 * @param[in] err  A DANGO_E* code (negative), or 0.
 * @return A constant string; never NULL. Unknown codes give "unknown error".
 * @note Thread safety: safe from any thread; uses no static scratch buffer.
 */
DANGO_API const char *dango_strerror(int err);

/**
 * @brief Message for @p err with its number, e.g. "timed out (-110)".
 * @param[in]  err  Error code.
 * @param[out] buf  Destination, always NUL-terminated when @p len > 0.
 * @param[in]  len  Size of @p buf.
 * @return @p buf.
 * @note Thread safety: safe from any thread.
 */
DANGO_API char *dango_strerror_r(int err, char *buf, size_t len);

/**
 * @brief Symbolic name of an error code, e.g. "DANGO_ETIMEDOUT".
 * @return A constant string; "DANGO_OK" for 0, "DANGO_UNKNOWN" for unknown
 * codes.
 * @note Thread safety: safe from any thread.
 */
DANGO_API const char *dango_err_name(int err);

/**
 * @brief Converts a positive or negative errno into a Dango code.
 * @return A negative code; errno values unknown to the table are passed
 *         through negated, and 0 becomes DANGO_EIO (a failure without a cause).
 */
DANGO_API int dango_err_from_errno(int errnum);

/** @brief True for link-level codes (-10100 … -10199): retry on another path.
 */
DANGO_API int dango_err_is_link(int err);

/** @brief True for peer-level codes (-10200 … -10299): re-resolve the segment.
 */
DANGO_API int dango_err_is_peer(int err);

DANGO_END_DECLS

#endif /* DANGO_ERROR_H */
