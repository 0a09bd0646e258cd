/*
 * Socket helpers shared by the TCP and SHM transports and the tools:
 * "host:port" parsing, listening, connecting with a deadline, and blocking
 * frame I/O with a deadline for control exchanges (handshakes, descriptor
 * fetches). Data paths use their own non-blocking state machines.
 */
#ifndef DANGO_NET_SOCK_H
#define DANGO_NET_SOCK_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>
#include <dango/common.h>
#include "net/frame.h"

#define DANGO_ADDR_STR_MAX 64

DANGO_BEGIN_DECLS

/*
 * Parses "host:port", "[v6]:port" or "host" (then @default_port) into @ss.
 * Host names are resolved (numeric first). Returns 0 or DANGO_EINVAL.
 */
DANGO_API int dango_sock_parse_addr(const char *str, uint16_t default_port,
                                    struct sockaddr_storage *ss,
                                    socklen_t               *len_p);

/* Formats @sa as "host:port" into @buf (at least DANGO_ADDR_STR_MAX). */
DANGO_API const char *dango_sock_addr_str(const struct sockaddr *sa, char *buf,
                                          size_t len);

/*
 * Creates a listening TCP socket (non-blocking, CLOEXEC, SO_REUSEADDR) on
 * @addr ("host:port"; port 0 = any free port). Returns fd or a negative code.
 */
DANGO_API int dango_sock_listen(const char *addr, int backlog);

/* Local address of a socket as "host:port". */
DANGO_API int dango_sock_local_addr(int fd, char *buf, size_t len);

/*
 * Connects a TCP socket to @addr within @timeout_ns. The socket is returned
 * blocking unless @nonblock. Returns fd or DANGO_ECONNREFUSED, DANGO_ETIMEDOUT,
 * DANGO_EHOSTUNREACH, DANGO_EINVAL, ...
 */
DANGO_API int dango_sock_connect(const char *addr, uint64_t timeout_ns,
                                 int nonblock);

/*
 * Connects the non-blocking socket @fd to @sa, waiting until @deadline_ns
 * (monotonic ns). Returns 0 or DANGO_ECONNREFUSED, DANGO_ETIMEDOUT, ...
 * (the caller closes @fd on error). A shutdown() of @fd from another thread
 * ends the wait.
 */
DANGO_API int dango_sock_connect_fd(int fd, const struct sockaddr *sa,
                                    socklen_t len, uint64_t deadline_ns);

DANGO_API int  dango_sock_set_nonblock(int fd, int on);
DANGO_API void dango_sock_tune(int fd); /* TCP_NODELAY, buffer sizes */

/*
 * Blocking I/O with an absolute deadline (monotonic ns), on blocking or
 * non-blocking sockets. Return 0, DANGO_ETIMEDOUT, DANGO_ECONNRESET (peer
 * closed) or a system error.
 */
DANGO_API int dango_sock_send_all(int fd, const void *buf, size_t len,
                                  uint64_t deadline_ns);
DANGO_API int dango_sock_recv_all(int fd, void *buf, size_t len,
                                  uint64_t deadline_ns);

/*
 * Sends a frame header plus @payload_len bytes. Receives one frame: checks
 * the header, then reads its payload into an allocated buffer (NUL-terminated
 * for convenience; freed with dango_free()) when it has one.
 */
DANGO_API int dango_sock_send_frame(int fd, const dango_frame_t *hdr,
                                    const void *payload, size_t payload_len,
                                    uint64_t deadline_ns);
DANGO_API int dango_sock_recv_frame(int fd, dango_frame_t *hdr,
                                    void **payload_p, uint64_t deadline_ns);

/*
 * Unix sockets: dango_sock_send_frame() with @nfds descriptors (at most
 * DANGO_SOCK_FDS_MAX) passed as SCM_RIGHTS with the header's first byte.
 * dango_sock_recv_hdr_fds() receives a frame header (not checked: see
 * dango_frame_check()) with at most @max descriptors, set in @fds (*@nfds_p
 * of them, close-on-exec); more than @max, or descriptors the kernel had to
 * drop, is DANGO_EPROTO (and none is kept).
 */
#define DANGO_SOCK_FDS_MAX 4
DANGO_API int dango_sock_send_frame_fds(int fd, const dango_frame_t *hdr,
                                        const void *payload, size_t payload_len,
                                        const int *fds, unsigned nfds,
                                        uint64_t deadline_ns);
DANGO_API int dango_sock_recv_hdr_fds(int fd, dango_frame_t *hdr, int *fds,
                                      unsigned max, unsigned *nfds_p,
                                      uint64_t deadline_ns);

DANGO_END_DECLS

#endif
