/**
 * @file metadata.h
 * @brief Metadata service: where peers publish and find segment descriptors.
 *
 * A metadata handle talks to one backend, chosen by the connection string
 * (the scheme is case-insensitive):
 *   - `http://host:port/metadata` — the embedded HTTP server (this file's
 *     dango_md_server_*), `dango-metadata`, or any server speaking the same
 *     protocol: `GET|PUT|DELETE <uri>?key=<urlencoded>`, and
 *     `GET <uri>?prefix=<urlencoded>` for a JSON array of keys. The port
 *     defaults to 80 and the path to `/metadata`; the host may be a name,
 *     an IPv4 address or a bracketed IPv6 address. Proxy environment
 *     variables are ignored.
 *   - `mem://<name>` — an in-process table shared by every handle opened with
 *     the same name (tests, single-process deployments). The table lives
 *     while at least one handle with that name is open.
 *   - `etcd://host:port[,host:port...]` — an etcd v3 cluster (3.4 or later; the
 * /v3beta gateway of 3.3 is detected) through its JSON gateway on the client
 * port. Requests go to the endpoint that answered last and fail over to the
 * next one when it cannot be reached. Keys live under MD_ETCD_PREFIX (default
 * "/dango/"). A TTL becomes an etcd lease (whole seconds): the key lives at
 * least
 *     @c ttl_ms and vanishes at most about 2 s later. A key put without TTL
 *     is tied to the handle's session lease when MD_ETCD_SESSION_TTL > 0
 *     (default 10 s): it is deleted when the handle is closed, and within
 *     that TTL when the process dies; if etcd loses the session while the
 *     process lives (an outage longer than the TTL) the handle grants a new
 *     one and writes its keys again. Watches are native (etcd watch).
 *   - `redis://[user:password@]host[:port][/db]` — a Redis server (port 6379
 *     and database 0 by default; user and password percent-encoded; an
 *     empty user authenticates with the password alone). Keys live under
 *     MD_REDIS_PREFIX (default "dango/"); a TTL is Redis' own expiry (SET
 *     PX). Watches poll (MD_WATCH_INTERVAL); keyspace notifications are not
 *     used (they need server configuration and are lost while reconnecting).
 * (`P2PHANDSHAKE` is not a backend: the transfer engine handles it by
 * exchanging descriptors with peers directly.) docs/design/metadata.md
 * describes the backends in detail.
 *
 * Values are opaque byte strings (descriptors are JSON). Keys are non-empty
 * strings of at most DANGO_MD_KEY_MAX bytes; values at most DANGO_MD_VALUE_MAX.
 * The HTTP server also requires keys to be valid UTF-8 (they travel back in
 * JSON listings) and answers 400 otherwise (DANGO_EINVAL at the client).
 *
 * Unless stated otherwise, every function may be called from any thread,
 * and a handle may be used by several threads at once.
 */
#ifndef DANGO_METADATA_H
#define DANGO_METADATA_H

#include <dango/common.h>
#include <dango/config.h>

/** Longest key accepted, in bytes. */
#define DANGO_MD_KEY_MAX 1024
/** Largest value accepted, in bytes (1 MiB). */
#define DANGO_MD_VALUE_MAX (1u << 20)

/** A handle to a metadata backend. Opaque. */
typedef struct dango_md dango_md_t;
/** An embedded HTTP metadata server. Opaque. */
typedef struct dango_md_server dango_md_server_t;
/** A running watch. Opaque. */
typedef struct dango_md_watch dango_md_watch_t;

/**
 * Change callback for dango_md_watch_start(): @p value is NULL when the key
 * was deleted (or expired). Both pointers are valid only during the call.
 * Runs on the watch's own thread.
 */
typedef void (*dango_md_watch_cb)(const char *key, const void *value,
                                  size_t len, void *arg);

DANGO_BEGIN_DECLS

/**
 * @brief Opens a backend.
 * @param[in]  conn  Connection string (see the file comment).
 * @param[in]  cfg   Configuration (MD_* options: timeouts), or NULL.
 * @param[out] md_p  Set on success only.
 * @return 0, or DANGO_EINVAL (unknown scheme, malformed string),
 *         DANGO_ENOMEM, DANGO_ECONFIG (an MD_* value does not parse, or a
 *         key prefix is longer than DANGO_MD_KEY_MAX),
 *         DANGO_EMETADATA (libcurl could not be initialised).
 *         Opening does not contact the server: an unreachable server shows
 *         up as DANGO_EMETADATA / DANGO_ETIMEDOUT on the first call, refused
 *         Redis credentials as DANGO_EACCES and a Redis database index the
 *         server does not have as DANGO_EINVAL.
 * @note Thread safety: a handle may be used from several threads at once.
 */
DANGO_API int dango_md_open(const char *conn, const dango_config_t *cfg,
                            dango_md_t **md_p);

/**
 * @brief Closes @p md. NULL is ignored.
 *
 * Watches on @p md must be stopped first: closing a handle with running
 * watches is a programming error; it is logged and the handle is leaked
 * rather than freed under the watch threads. No other call on @p md may be
 * in progress or follow.
 */
DANGO_API void dango_md_close(dango_md_t *md);

/**
 * @brief Reads a key.
 * @param[out] value_p  Set to a NUL-terminated copy (allocated; free it with
 *                      dango_md_free()). Values are binary-safe: the NUL is
 *                      a convenience, use @p len_p for the length.
 * @param[out] len_p    Set to the value length (without the NUL); may be NULL.
 * @return 0, DANGO_ENOENT (no such key), DANGO_EINVAL (bad key),
 *         DANGO_ETIMEDOUT, DANGO_EMETADATA (server error or unreachable),
 *         DANGO_EACCES (redis: credentials refused), DANGO_ENOMEM.
 */
DANGO_API int dango_md_get(dango_md_t *md, const char *key, char **value_p,
                           size_t *len_p);

/**
 * @brief Writes a key, replacing any previous value (and its TTL).
 * @param[in] value   @p len bytes, copied; may be NULL when @p len is 0.
 * @param[in] ttl_ms  Time to live in milliseconds; 0 = until deleted (on
 *                    etcd with sessions on: until deleted or until this
 *                    handle's session ends, see the file comment). An
 *                    expired key is invisible to every call at once and
 *                    freed lazily. etcd rounds TTLs up to whole seconds.
 * @return 0, DANGO_EINVAL (bad key), DANGO_EMSGSIZE (value too large),
 *         DANGO_ETIMEDOUT, DANGO_EMETADATA, DANGO_ENOMEM.
 */
DANGO_API int dango_md_put(dango_md_t *md, const char *key, const void *value,
                           size_t len, uint64_t ttl_ms);

/**
 * @brief Deletes a key.
 * @return 0, DANGO_ENOENT (no such key), DANGO_EINVAL, DANGO_ETIMEDOUT,
 *         DANGO_EMETADATA.
 */
DANGO_API int dango_md_delete(dango_md_t *md, const char *key);

/**
 * @brief Lists the keys that start with @p prefix ("" for all).
 * @param[out] keys_p   Set to an array of NUL-terminated keys, sorted by
 *                      strcmp() and followed by a NULL entry; never NULL on
 *                      success, even when empty. Free with
 *                      dango_md_list_free().
 * @param[out] count_p  Number of keys.
 * @return 0, DANGO_EINVAL, DANGO_ETIMEDOUT, DANGO_EMETADATA, DANGO_ENOMEM.
 */
DANGO_API int dango_md_list(dango_md_t *md, const char *prefix, char ***keys_p,
                            size_t *count_p);

/** @brief Frees a list from dango_md_list(). NULL is ignored. */
DANGO_API void dango_md_list_free(char **keys, size_t count);

/** @brief Frees a value from dango_md_get(). NULL is ignored. */
DANGO_API void dango_md_free(void *value);

/**
 * @brief Watches keys under @p prefix, calling @p cb on every change.
 *
 * etcd:// watches natively: the keys that exist are reported first, then
 * every change in order (each write, not coalesced), across etcd restarts
 * and endpoint failover. Only a compaction of etcd's history while the
 * watch was disconnected can hide deletions (existing keys are then
 * reported again). Other backends without native watch poll (MD_WATCH_INTERVAL,
 * default 1 s): each scan lists the prefix, reads every key and compares it
 * with the previous scan, so changes between two scans are coalesced (a key
 * written twice is reported once, with its last value) and a key written and
 * deleted within one interval may go unreported. The first scan reports every
 * existing key. Callbacks for one watch run one at a time on the watch's
 * thread; a failed scan (server down) reports nothing and is retried, it never
 * reports keys as deleted.
 * @return 0, DANGO_EINVAL, DANGO_ENOMEM, DANGO_EAGAIN (no thread).
 */
DANGO_API int dango_md_watch_start(dango_md_t *md, const char *prefix,
                                   dango_md_watch_cb cb, void *arg,
                                   dango_md_watch_t **watch_p);

/**
 * @brief Stops a watch; no callback runs after it returns. NULL ignored.
 *
 * May be called from the watch's own callback (the watch is then freed
 * when the callback returns).
 */
DANGO_API void dango_md_watch_stop(dango_md_watch_t *watch);

/**
 * @brief Starts an HTTP metadata server (libmicrohttpd) in this process.
 *
 * Serves `GET|PUT|DELETE /metadata?key=K` (404 when missing; PUT takes an
 * optional `ttl_ms=N` query parameter) and `GET /metadata?prefix=P` (a JSON
 * array of keys), plus `GET /health`.
 *
 * @param[in]  listen  "host:port" or "[ipv6]:port"; port 0 picks a free
 *                     port; an empty host means every address. NULL means
 *                     "0.0.0.0:8080".
 * @param[out] srv_p   Set on success only.
 * @return 0, DANGO_EINVAL (malformed address, unknown host, or not an
 *         address of this machine), DANGO_EADDRINUSE, DANGO_ENOMEM,
 *         DANGO_EIO (the server could not start).
 * @note The server runs on its own threads.
 */
DANGO_API int dango_md_server_start(const char         *listen,
                                    dango_md_server_t **srv_p);

/**
 * @brief Port the server listens on (useful after port 0).
 * @return The port, or DANGO_EINVAL when @p srv is NULL.
 */
DANGO_API int dango_md_server_port(const dango_md_server_t *srv);

/** @brief Stops the server and frees its table. NULL is ignored. */
DANGO_API void dango_md_server_stop(dango_md_server_t *srv);

DANGO_END_DECLS

#endif /* DANGO_METADATA_H */
