/*
 * Embedded metadata HTTP server (libmicrohttpd), the far end of md_http.c.
 *
 * DESIGN
 *
 * Routes:
 *   GET|HEAD /health                 200 "ok"
 *   GET|HEAD /metadata?key=K         200 + value, 404 when missing
 *   PUT      /metadata?key=K[&ttl_ms=N]  body = value (<= DANGO_MD_VALUE_MAX,
 *                                    else 413)
 *   DELETE   /metadata?key=K         200, 404 when missing
 *   GET|HEAD /metadata?prefix=P      200 + JSON array of keys, sorted
 * A missing or invalid key is 400, another path 404, another method 405.
 * Keys must be valid UTF-8 (they travel back inside JSON listings), at most
 * DANGO_MD_KEY_MAX bytes and without NUL.
 *
 * Storage is the same sorted, TTL-aware table as mem:// (md_mem.c), with
 * its own lock, so request threads never wait on anything but that lock.
 *
 * Sockets: the listen socket is created here, not by MHD, so bind errors
 * keep their errno (EADDRINUSE is what callers want to tell apart), host
 * names and IPv6 work the same way, and port 0 is resolved with
 * getsockname() before the server starts. MHD runs its own polling threads
 * (a small pool), each connection is bounded in memory by MHD and in idle
 * time by MD_SRV_IDLE_TIMEOUT_S, and the number of connections is capped.
 *
 * Bodies: a PUT announcing a Content-Length above the limit is refused with
 * 413 before any body is read. A chunked body is accumulated up to the
 * limit, then discarded until it ends and refused with 413; a client that
 * keeps sending far past the limit is disconnected. Nothing a client sends
 * can make the server allocate more than about one value per connection.
 */
#include "md_int.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <jansson.h>
#include <microhttpd.h>

#include "common/alloc.h"

#define MD_SRV_DEFAULT_LISTEN "0.0.0.0:8080"
#define MD_SRV_THREADS        2
#define MD_SRV_CONN_LIMIT     1024
#define MD_SRV_IDLE_TIMEOUT_S 30
#define MD_SRV_BACKLOG        128
/* Chunked bytes past the limit read (and dropped) before disconnecting. */
#define MD_SRV_DISCARD_MAX (4u * DANGO_MD_VALUE_MAX)

#ifndef MHD_HTTP_CONTENT_TOO_LARGE
#define MHD_HTTP_CONTENT_TOO_LARGE 413
#endif

struct dango_md_server {
    struct MHD_Daemon *daemon;
    dango__md_table_t *table;
    int                port;
};

/* State of one PUT request while its body arrives. */
typedef struct md_srv_req {
    char  *body;
    size_t len;
    size_t cap;
    size_t discarded; /* bytes dropped after the body grew too large */
    int    too_large;
} md_srv_req_t;

/* Marks a non-PUT request as past its first handler call. */
static int md_srv_seen;

/* ---------- private functions ---------- */

/* True if @s (@len bytes) is well-formed UTF-8 (no overlongs/surrogates). */
static int utf8_valid(const char *s, size_t len)
{
    const unsigned char *p   = (const unsigned char *)s;
    const unsigned char *end = p + len;

    while (p < end) {
        unsigned c = *p++;
        unsigned n;
        unsigned cp;

        if (c < 0x80) {
            continue;
        } else if ((c >= 0xc2) && (c <= 0xdf)) {
            n  = 1;
            cp = c & 0x1f;
        } else if ((c >= 0xe0) && (c <= 0xef)) {
            n  = 2;
            cp = c & 0x0f;
        } else if ((c >= 0xf0) && (c <= 0xf4)) {
            n  = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }

        if ((size_t)(end - p) < n) {
            return 0;
        }

        for (unsigned i = 0; i < n; i++, p++) {
            if ((*p & 0xc0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (*p & 0x3f);
        }

        if (((n == 2) && (cp < 0x800)) || ((n == 3) && (cp < 0x10000)) ||
            (cp > 0x10ffff) || ((cp >= 0xd800) && (cp <= 0xdfff))) {
            return 0;
        }
    }

    return 1;
}

static enum MHD_Result srv_reply(struct MHD_Connection *conn, unsigned status,
                                 struct MHD_Response *resp,
                                 const char          *content_type)
{
    enum MHD_Result ret;

    if (resp == NULL) {
        return MHD_NO; /* out of memory: MHD drops the connection */
    }

    if (content_type != NULL) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                content_type);
    }

    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
                                "GET, HEAD, PUT, DELETE");
    }

    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Replies with a constant text body. */
static enum MHD_Result srv_reply_text(struct MHD_Connection *conn,
                                      unsigned status, const char *text)
{
    struct MHD_Response *resp;

    resp = MHD_create_response_from_buffer(strlen(text), (void *)text,
                                           MHD_RESPMEM_PERSISTENT);
    return srv_reply(conn, status, resp, "text/plain");
}

/* Replies with @len bytes at @buf (from dango_malloc), taking ownership. */
static enum MHD_Result srv_reply_owned(struct MHD_Connection *conn,
                                       unsigned status, char *buf, size_t len,
                                       const char *content_type)
{
    struct MHD_Response *resp;

    resp = MHD_create_response_from_buffer_with_free_callback(len, buf,
                                                              dango_free);
    if (resp == NULL) {
        dango_free(buf);
    }

    return srv_reply(conn, status, resp, content_type);
}

/*
 * Looks up query parameter @name. Returns 1 and sets @value_p / @len_p if
 * present ("?name" without '=' gives ""), 0 if absent.
 */
static int srv_arg(struct MHD_Connection *conn, const char *name,
                   const char **value_p, size_t *len_p)
{
    const char *value = NULL;
    size_t      len   = 0;

    if (MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, name,
                                      strlen(name), &value, &len) != MHD_YES) {
        return 0;
    }

    *value_p = (value != NULL) ? value : "";
    *len_p   = (value != NULL) ? len : 0;
    return 1;
}

/* Valid key: 1..KEY_MAX bytes, no NUL inside, UTF-8. */
static int srv_key_ok(const char *key, size_t len)
{
    return (len > 0) && (len <= DANGO_MD_KEY_MAX) &&
           (memchr(key, '\0', len) == NULL) && utf8_valid(key, len);
}

/* Parses a decimal TTL; returns 0 or -1. */
static int srv_parse_ttl(const char *s, uint64_t *ttl_p)
{
    unsigned long long v;
    char              *end;

    if ((s[0] < '0') || (s[0] > '9')) {
        return -1;
    }

    errno = 0;
    v     = strtoull(s, &end, 10);
    if ((errno != 0) || (*end != '\0')) {
        return -1;
    }

    *ttl_p = v;
    return 0;
}

static enum MHD_Result srv_list(dango_md_server_t     *srv,
                                struct MHD_Connection *conn, const char *prefix,
                                size_t prefix_len)
{
    json_t *arr;
    char  **keys;
    size_t  count;
    size_t  size;
    char   *buf;
    int     rc;

    if ((prefix_len > DANGO_MD_KEY_MAX) ||
        (memchr(prefix, '\0', prefix_len) != NULL)) {
        return srv_reply_text(conn, MHD_HTTP_BAD_REQUEST, "bad prefix\n");
    }

    rc = dango__md_table_list(srv->table, prefix, &keys, &count);
    if (rc != 0) {
        return MHD_NO;
    }

    arr = json_array();
    if (arr == NULL) {
        goto err_free_keys;
    }

    for (size_t i = 0; i < count; i++) {
        /* Keys were checked to be UTF-8 when stored; NULL means ENOMEM. */
        if (json_array_append_new(arr, json_string(keys[i])) != 0) {
            goto err_decref;
        }
    }

    dango_md_list_free(keys, count);
    size = json_dumpb(arr, NULL, 0, JSON_COMPACT);
    buf  = (size > 0) ? dango_malloc(size, "md_srv_list") : NULL;
    if ((buf == NULL) || (json_dumpb(arr, buf, size, JSON_COMPACT) != size)) {
        dango_free(buf);
        json_decref(arr);
        return MHD_NO;
    }

    json_decref(arr);
    return srv_reply_owned(conn, MHD_HTTP_OK, buf, size, "application/json");

err_decref:
    json_decref(arr);
err_free_keys:
    dango_md_list_free(keys, count);
    return MHD_NO;
}

/* First handler call of a PUT: checks what can be checked before the body. */
static enum MHD_Result srv_put_begin(struct MHD_Connection *conn,
                                     void                 **req_cls)
{
    unsigned long long announced = 0;
    const char        *clen;
    md_srv_req_t      *req;
    char              *end;

    clen = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                       MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (clen != NULL) {
        errno     = 0;
        announced = strtoull(clen, &end, 10);
        if ((errno == 0) && (*end == '\0') &&
            (announced > DANGO_MD_VALUE_MAX)) {
            /* Refuse before reading; MHD closes the connection after. */
            return srv_reply_text(conn, MHD_HTTP_CONTENT_TOO_LARGE,
                                  "value too large\n");
        }
    }

    req = dango_calloc(1, sizeof(*req), "md_srv_req");
    if (req == NULL) {
        return MHD_NO;
    }

    if ((announced > 0) && (announced <= DANGO_MD_VALUE_MAX)) {
        req->body = dango_malloc(announced + 1, "md_srv_body");
        if (req->body == NULL) {
            dango_free(req);
            return MHD_NO;
        }
        req->cap = announced + 1;
    }

    *req_cls = req;
    return MHD_YES;
}

/* Later PUT calls with body bytes: accumulate, or drop once too large. */
static enum MHD_Result srv_put_data(md_srv_req_t *req, const char *data,
                                    size_t size)
{
    if (!req->too_large && (size > DANGO_MD_VALUE_MAX - req->len)) {
        req->too_large = 1;
        dango_free(req->body);
        req->body = NULL;
        req->len  = 0;
        req->cap  = 0;
    }

    if (req->too_large) {
        req->discarded += size;
        return (req->discarded > MD_SRV_DISCARD_MAX) ? MHD_NO : MHD_YES;
    }

    if (req->len + size + 1 > req->cap) {
        size_t new_cap = (req->cap == 0) ? 4096 : req->cap;
        char  *grown;

        while (new_cap < req->len + size + 1) {
            new_cap *= 2;
        }

        grown = dango_realloc(req->body, new_cap, "md_srv_body");
        if (grown == NULL) {
            return MHD_NO;
        }

        req->body = grown;
        req->cap  = new_cap;
    }

    memcpy(req->body + req->len, data, size);
    req->len += size;
    return MHD_YES;
}

static enum MHD_Result srv_put_end(dango_md_server_t     *srv,
                                   struct MHD_Connection *conn,
                                   md_srv_req_t *req, const char *key)
{
    const char *ttl_arg;
    size_t      ttl_len;
    uint64_t    ttl_ms = 0;
    int         rc;

    if (req->too_large) {
        return srv_reply_text(conn, MHD_HTTP_CONTENT_TOO_LARGE,
                              "value too large\n");
    }

    if (srv_arg(conn, "ttl_ms", &ttl_arg, &ttl_len) &&
        (srv_parse_ttl(ttl_arg, &ttl_ms) != 0)) {
        return srv_reply_text(conn, MHD_HTTP_BAD_REQUEST, "bad ttl_ms\n");
    }

    rc = dango__md_table_put(srv->table, key,
                             (req->body != NULL) ? req->body : "", req->len,
                             ttl_ms);
    if (rc != 0) {
        return MHD_NO;
    }

    return srv_reply_text(conn, MHD_HTTP_OK, "ok\n");
}

static enum MHD_Result srv_key_op(dango_md_server_t     *srv,
                                  struct MHD_Connection *conn,
                                  const char *method, const char *key)
{
    char  *value;
    size_t len;
    int    rc;

    if ((strcmp(method, MHD_HTTP_METHOD_GET) == 0) ||
        (strcmp(method, MHD_HTTP_METHOD_HEAD) == 0)) {
        rc = dango__md_table_get(srv->table, key, &value, &len);
        if (rc == DANGO_ENOENT) {
            return srv_reply_text(conn, MHD_HTTP_NOT_FOUND, "no such key\n");
        } else if (rc != 0) {
            return MHD_NO;
        }

        return srv_reply_owned(conn, MHD_HTTP_OK, value, len,
                               "application/octet-stream");
    }

    if (strcmp(method, MHD_HTTP_METHOD_DELETE) == 0) {
        rc = dango__md_table_del(srv->table, key);
        if (rc == DANGO_ENOENT) {
            return srv_reply_text(conn, MHD_HTTP_NOT_FOUND, "no such key\n");
        }

        return srv_reply_text(conn, MHD_HTTP_OK, "ok\n");
    }

    return srv_reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                          "method not allowed\n");
}

/*
 * For requests other than PUT: true once the whole request is in, so the
 * reply goes out on the final call (MHD refuses a response queued while a
 * body is still arriving). Any body is dropped.
 */
static int srv_body_done(void **req_cls, size_t *upload_data_size)
{
    if (*req_cls == NULL) {
        *req_cls = &md_srv_seen;
        return 0;
    }

    if (*upload_data_size > 0) {
        *upload_data_size = 0;
        return 0;
    }

    return 1;
}

static enum MHD_Result srv_handle(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    dango_md_server_t *srv    = cls;
    int                is_put = (strcmp(method, MHD_HTTP_METHOD_PUT) == 0);
    int                is_get = (strcmp(method, MHD_HTTP_METHOD_GET) == 0) ||
                 (strcmp(method, MHD_HTTP_METHOD_HEAD) == 0);
    const char *key;
    const char *prefix;
    size_t      key_len;
    size_t      prefix_len;
    int         has_key;

    if (strcmp(url, "/health") == 0) {
        if (!srv_body_done(req_cls, upload_data_size)) {
            return MHD_YES;
        }

        return is_get ? srv_reply_text(conn, MHD_HTTP_OK, "ok\n")
                      : srv_reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                                       "method not allowed\n");
    }

    if (strcmp(url, "/metadata") != 0) {
        return srv_reply_text(conn, MHD_HTTP_NOT_FOUND, "no such path\n");
    }

    has_key = srv_arg(conn, "key", &key, &key_len);
    if (has_key && !srv_key_ok(key, key_len)) {
        return srv_reply_text(conn, MHD_HTTP_BAD_REQUEST, "bad key\n");
    }

    if (is_put) {
        if (!has_key) {
            return srv_reply_text(conn, MHD_HTTP_BAD_REQUEST, "missing key\n");
        }

        if (*req_cls == NULL) {
            return srv_put_begin(conn, req_cls);
        }

        if (*upload_data_size > 0) {
            size_t size = *upload_data_size;

            *upload_data_size = 0;
            return srv_put_data(*req_cls, upload_data, size);
        }

        return srv_put_end(srv, conn, *req_cls, key);
    }

    if (!srv_body_done(req_cls, upload_data_size)) {
        return MHD_YES;
    }

    if (has_key) {
        return srv_key_op(srv, conn, method, key);
    }

    if (srv_arg(conn, "prefix", &prefix, &prefix_len)) {
        if (!is_get) {
            return srv_reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                                  "method not allowed\n");
        }

        return srv_list(srv, conn, prefix, prefix_len);
    }

    return srv_reply_text(conn, MHD_HTTP_BAD_REQUEST, "missing key\n");
}

static void srv_completed(void *cls, struct MHD_Connection *conn,
                          void **req_cls, enum MHD_RequestTerminationCode toe)
{
    md_srv_req_t *req = *req_cls;

    if ((req != NULL) && ((void *)req != (void *)&md_srv_seen)) {
        dango_free(req->body);
        dango_free(req);
    }

    *req_cls = NULL;
}

/* MHD's own messages are about misbehaving clients: debug level. */
static void srv_log(void *cls, const char *fmt, va_list ap)
{
    char   msg[256];
    size_t len;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    len = strlen(msg);
    while ((len > 0) && (msg[len - 1] == '\n')) {
        msg[--len] = '\0';
    }

    dango_debug("md server %p: mhd: %s", cls, msg);
}

/*
 * Splits "host:port" / "[v6]:port" into @host (empty = any) and @port.
 * Returns 0 or DANGO_EINVAL.
 */
static int srv_parse_listen(const char *addr, char *host, size_t host_size,
                            char *port, size_t port_size)
{
    const char *colon;
    const char *h_start = addr;
    size_t      h_len;

    if (addr[0] == '[') {
        const char *rbracket = strchr(addr, ']');

        if ((rbracket == NULL) || (rbracket[1] != ':')) {
            return DANGO_EINVAL;
        }

        h_start = addr + 1;
        h_len   = (size_t)(rbracket - h_start);
        colon   = rbracket + 1;
        if (h_len == 0) {
            return DANGO_EINVAL;
        }
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL) {
            return DANGO_EINVAL;
        }

        h_len = (size_t)(colon - addr);
        if (memchr(addr, ':', h_len) != NULL) {
            return DANGO_EINVAL; /* a bare IPv6 address needs brackets */
        }
    }

    if ((h_len >= host_size) || (strlen(colon + 1) == 0) ||
        (strlen(colon + 1) >= port_size) ||
        (strspn(colon + 1, "0123456789") != strlen(colon + 1)) ||
        (strtoul(colon + 1, NULL, 10) > 65535)) {
        return DANGO_EINVAL;
    }

    memcpy(host, h_start, h_len);
    host[h_len] = '\0';
    strcpy(port, colon + 1);
    return 0;
}

static int sockaddr_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6) {
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    }

    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/* Creates a bound, listening, non-blocking socket for @addr. */
static int srv_listen_socket(const char *addr, int *fd_p, int *port_p)
{
    struct addrinfo         hints = {0};
    struct addrinfo        *ai;
    struct sockaddr_storage ss;
    socklen_t               ss_len = sizeof(ss);
    char                    host[256];
    char                    port[8];
    int                     one = 1;
    int                     fd;
    int                     rc;

    if (srv_parse_listen(addr, host, sizeof(host), port, sizeof(port)) != 0) {
        dango_debug("md server: malformed listen address '%s'", addr);
        return DANGO_EINVAL;
    }

    hints.ai_family   = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags    = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo((host[0] != '\0') ? host : NULL, port, &hints, &ai);
    if (rc != 0) {
        dango_debug("md server: listen address '%s': %s", addr,
                    gai_strerror(rc));
        if (rc == EAI_MEMORY) {
            return DANGO_ENOMEM;
        }
        return ((rc == EAI_NONAME) || (rc == EAI_SERVICE) || (rc == EAI_FAMILY))
                   ? DANGO_EINVAL
                   : DANGO_EIO;
    }

    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        dango_error("md server: socket for '%s': %m", addr);
        rc = DANGO_EIO;
        goto out_free_ai;
    }

    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        rc = errno;
        dango_error("md server: bind to '%s': %m", addr);
        rc = (rc == EADDRINUSE)      ? DANGO_EADDRINUSE
             : (rc == EADDRNOTAVAIL) ? DANGO_EINVAL
                                     : DANGO_EIO;
        goto err_close;
    }

    if ((listen(fd, MD_SRV_BACKLOG) != 0) ||
        (getsockname(fd, (struct sockaddr *)&ss, &ss_len) != 0)) {
        rc = (errno == EADDRINUSE) ? DANGO_EADDRINUSE : DANGO_EIO;
        dango_error("md server: listen on '%s': %m", addr);
        goto err_close;
    }

    *port_p = sockaddr_port(&ss);
    *fd_p   = fd;
    rc      = 0;
    goto out_free_ai;

err_close:
    close(fd);
out_free_ai:
    freeaddrinfo(ai);
    return rc;
}

/* True if @fd is open and is a socket bound to @port. */
static int srv_fd_is_ours(int fd, int port)
{
    struct sockaddr_storage ss;
    socklen_t               len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        return 0;
    }

    return sockaddr_port(&ss) == port;
}

/* ---------- public API ---------- */

int dango_md_server_start(const char *addr, dango_md_server_t **srv_p)
{
    dango_md_server_t *srv;
    int                fd;
    int                rc;

    if (srv_p == NULL) {
        return DANGO_EINVAL;
    }

    if (addr == NULL) {
        addr = MD_SRV_DEFAULT_LISTEN;
    }

    srv = dango_calloc(1, sizeof(*srv), "md_server");
    if (srv == NULL) {
        return DANGO_ENOMEM;
    }

    rc = dango__md_table_create(&srv->table);
    if (rc != 0) {
        goto err_free_srv;
    }

    rc = srv_listen_socket(addr, &fd, &srv->port);
    if (rc != 0) {
        goto err_destroy_table;
    }

    srv->daemon = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        srv_handle, srv, MHD_OPTION_EXTERNAL_LOGGER, srv_log, srv,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)MD_SRV_THREADS, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)MD_SRV_CONN_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)MD_SRV_IDLE_TIMEOUT_S, MHD_OPTION_NOTIFY_COMPLETED,
        srv_completed, srv, MHD_OPTION_END);
    if (srv->daemon == NULL) {
        dango_error("md server: could not start on '%s'", addr);
        rc = DANGO_EIO;
        goto err_close_fd;
    }

    dango_info("md server %p: listening on %s (port %d)", srv, addr, srv->port);
    *srv_p = srv;
    return 0;

err_close_fd:
    /*
     * MHD closes a socket it was given on some failure paths and not on
     * others (option errors leave it open). Close it only if the fd still
     * is our listening socket, never a number someone else got since.
     */
    if (srv_fd_is_ours(fd, srv->port)) {
        close(fd);
    }
err_destroy_table:
    dango__md_table_destroy(srv->table);
err_free_srv:
    dango_free(srv);
    return rc;
}

int dango_md_server_port(const dango_md_server_t *srv)
{
    if (srv == NULL) {
        return DANGO_EINVAL;
    }

    return srv->port;
}

void dango_md_server_stop(dango_md_server_t *srv)
{
    if (srv == NULL) {
        return;
    }

    /* Joins MHD's threads and closes the listen socket. */
    MHD_stop_daemon(srv->daemon);
    dango__md_table_destroy(srv->table);
    dango_info("md server %p: stopped", srv);
    dango_free(srv);
}
