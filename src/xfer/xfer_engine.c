/*
 * Transfer engine: lifecycle, transports, descriptor and notifications.
 *
 * DESIGN
 * - An engine owns XFER_WORKERS event loops (threads). Every transport gets
 *   all of them and spreads its connections or rings over them; the engine
 *   itself never blocks a loop.
 * - The local segment is described by one JSON descriptor (name, instance,
 *   host id, each transport's section, remote-accessible buffers, NUMA/NIC
 *   topology). With a metadata service it is published under
 *   dango/<cluster>/xfer/segments/<name> on every change of remote memory;
 *   in P2P handshake mode there is no service: peers fetch it over TCP and
 *   the segment name is the listen address "host:port".
 * - The instance id is random per engine start. Peers compare it on every
 *   connection, which is how a restart is detected and the segment
 *   re-resolved instead of writing into the wrong process's memory.
 * - Shutdown order: stop accepting work, withdraw the descriptor, destroy
 *   endpoints and transports while the loops still run (each does its own
 *   synchronisation with them), then stop the loops.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#include <linux/futex.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <numa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/config_table.h"
#include "common/hash.h"
#include "common/time.h"
#include "net/auth.h"
#include "net/sock.h"
#include "xfer/xfer_int.h"

DANGO_LOG_COMPONENT_DEFINE(dango__log_xfer, "xfer");

/* ---------- identity ---------- */

static size_t read_small_file(const char *path, char *buf, size_t len)
{
    int     fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0) {
        return 0;
    }

    n = read(fd, buf, len - 1);
    close(fd);
    if (n <= 0) {
        return 0;
    }

    buf[n] = '\0';
    return (size_t)n;
}

/*
 * Host identity: machine id + boot id + network namespace. Two processes
 * with the same id can map each other's memory; network namespaces that
 * emulate separate hosts on one machine get different ids.
 */
static void engine_host_id(dango_xfer_engine_t *eng)
{
    char    buf[512] = {0};
    size_t  n        = 0;
    ssize_t l;

    if (eng->cfg.host_id[0] != '\0') {
        snprintf(eng->host_id, sizeof(eng->host_id), "%s", eng->cfg.host_id);
        return;
    }

    n += read_small_file("/etc/machine-id", buf + n, sizeof(buf) - n);
    if (n == 0) {
        gethostname(buf, sizeof(buf) - 1);
        n = strlen(buf);
    }

    n += read_small_file("/proc/sys/kernel/random/boot_id", buf + n,
                         sizeof(buf) - n);
    l = readlink("/proc/self/ns/net", buf + n, sizeof(buf) - n - 1);
    if (l > 0) {
        n += (size_t)l;
    }

    snprintf(eng->host_id, sizeof(eng->host_id), "%016llx",
             (unsigned long long)dango_hash64(buf, n));
}

/* ---------- descriptor ---------- */

static json_t *engine_topology(dango_xfer_engine_t *eng)
{
    json_t         *topo = json_object();
    json_t         *nics = json_array();
    struct ifaddrs *ifa  = NULL;

    json_object_set_new(topo, "numa_nodes",
                        json_integer(eng->numa_ok ? numa_max_node() + 1 : 1));
    json_object_set_new(topo, "cpus",
                        json_integer(sysconf(_SC_NPROCESSORS_ONLN)));
    if (getifaddrs(&ifa) == 0) {
        for (struct ifaddrs *i = ifa; i != NULL; i = i->ifa_next) {
            char    addr[INET6_ADDRSTRLEN], path[256], node[16] = "-1";
            json_t *nic;

            if ((i->ifa_addr == NULL) || (i->ifa_addr->sa_family != AF_INET) ||
                !(i->ifa_flags & IFF_UP)) {
                continue;
            }

            inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr,
                      addr, sizeof(addr));
            snprintf(path, sizeof(path), "/sys/class/net/%s/device/numa_node",
                     i->ifa_name);
            read_small_file(path, node, sizeof(node));
            nic = json_object();
            json_object_set_new(nic, "name", json_string(i->ifa_name));
            json_object_set_new(nic, "addr", json_string(addr));
            json_object_set_new(nic, "numa", json_integer(atoi(node)));
            json_object_set_new(nic, "loopback",
                                json_boolean(i->ifa_flags & IFF_LOOPBACK));
            json_array_append_new(nics, nic);
        }

        freeifaddrs(ifa);
    }

    json_object_set_new(topo, "nics", nics);
    return topo;
}

int dango__xfer_desc_build(dango_xfer_engine_t *eng, char **json_p)
{
    json_t         *root = json_object();
    json_t         *tps  = json_object();
    json_t         *bufs = json_array();
    char            inst[32];
    char           *s;
    xfer_region_t **regs;
    size_t          nregs;

    snprintf(inst, sizeof(inst), "%016llx",
             (unsigned long long)eng->instance_id);
    json_object_set_new(root, "name", json_string(eng->name));
    json_object_set_new(root, "instance", json_string(inst));
    json_object_set_new(root, "host_id", json_string(eng->host_id));
    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "timestamp_us",
                        json_integer((json_int_t)dango_time_wall_us()));
    for (unsigned t = 0; t < eng->num_tps; t++) {
        json_t *sec;

        if (eng->tps[t].attr.desc_json == NULL) {
            continue;
        }

        sec = json_loads(eng->tps[t].attr.desc_json, 0, NULL);
        if (sec != NULL) {
            json_object_set_new(tps, eng->tps[t].ops->name, sec);
        }
    }

    json_object_set_new(root, "transports", tps);
    pthread_rwlock_rdlock(&eng->mem_lock);
    /* Buffers in registration order (see dango_xfer_segment_buffer()). */
    regs = dango_malloc((eng->num_regions + 1) * sizeof(*regs),
                        "xfer_desc_regions");
    if (regs == NULL) {
        pthread_rwlock_unlock(&eng->mem_lock);
        json_decref(bufs);
        json_decref(root);
        return DANGO_ENOMEM;
    }

    nregs = dango__xfer_remote_regions(eng, regs, eng->num_regions);
    for (size_t i = 0; i < nregs; i++) {
        xfer_region_t *r = regs[i];
        json_t        *b;

        b = json_object();
        json_object_set_new(b, "addr", json_integer((json_int_t)r->addr));
        json_object_set_new(b, "length", json_integer((json_int_t)r->len));
        json_object_set_new(b, "location", json_string(r->location));
        json_object_set_new(b, "remote", json_true());
        json_object_set_new(b, "shm", json_boolean(r->memfd >= 0));
        json_array_append_new(bufs, b);
    }

    pthread_rwlock_unlock(&eng->mem_lock);
    dango_free(regs);
    json_object_set_new(root, "buffers", bufs);
    /* Discovered once at create: the descriptor is rebuilt on every
     * (un)registration and every peer's request, the hardware is not. */
    json_object_set_new(root, "topology",
                        json_loads(eng->topology_json, 0, NULL));
    s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (s == NULL) {
        return DANGO_ENOMEM;
    }

    *json_p = dango_strdup(s, "xfer_desc");
    free(s);
    return (*json_p != NULL) ? 0 : DANGO_ENOMEM;
}

int dango__xfer_publish(dango_xfer_engine_t *eng)
{
    char *json;
    int   rc;

    if (eng->md == NULL) {
        return 0; /* P2P: peers ask for the descriptor when they connect */
    }

    pthread_mutex_lock(&eng->publish_lock);
    rc = dango__xfer_desc_build(eng, &json);
    if (rc == 0) {
        rc = dango_md_put(eng->md, eng->md_key, json, strlen(json), 0);
        dango_free(json);
        if (rc != 0) {
            dango_error("engine %s: publishing the segment descriptor "
                        "failed: %s",
                        eng->name, dango_strerror(rc));
            /* Out of memory is ours, not the service's (OOM contract). */
            rc = (rc == DANGO_ENOMEM) ? rc : DANGO_EMETADATA;
        }
    }

    pthread_mutex_unlock(&eng->publish_lock);
    return rc;
}

/* ---------- host services ---------- */

static void host_notify_recv(void *ctx, const char *from, const void *msg,
                             size_t len)
{
    dango_xfer_engine_t *eng = ctx;
    xfer_notify_node_t  *node;

    if (len > DANGO_XFER_NOTIFY_MAX) {
        dango_warn("engine %s: dropping a %zu-byte notification from %s",
                   eng->name, len, from);
        return;
    }

    node = dango_malloc(sizeof(*node), "xfer_notify");
    if (node == NULL) {
        dango_error("engine %s: out of memory for a notification from %s",
                    eng->name, from);
        return;
    }

    snprintf(node->n.from, sizeof(node->n.from), "%s", from);
    memcpy(node->n.msg, msg, len);
    node->n.msg[len] = '\0';
    node->n.length   = len;
    pthread_mutex_lock(&eng->notify_lock);
    if (eng->notify_count >= XFER_NOTIFY_QUEUE) {
        xfer_notify_node_t *old =
            dango_list_head_elem(&eng->notify_queue, xfer_notify_node_t, link);

        dango_list_del(&old->link);
        dango_free(old);
        eng->notify_count--;
        dango_warn("engine %s: notification queue full, oldest dropped",
                   eng->name);
    }

    dango_list_add_tail(&eng->notify_queue, &node->link);
    eng->notify_count++;
    pthread_mutex_unlock(&eng->notify_lock);
}

static int host_desc_get(void *ctx, char **json_p)
{
    dango_xfer_engine_t *eng = ctx;

    /* The listener runs before create has opened every transport. */
    if (!__atomic_load_n(&eng->ready, __ATOMIC_ACQUIRE)) {
        return DANGO_EAGAIN;
    }

    return dango__xfer_desc_build(eng, json_p);
}

/* ---------- transports ---------- */

static int engine_open_tp(dango_xfer_engine_t *eng, const char *name,
                          const char *listen, const dango_config_t *config)
{
    const dango_transport_ops_t *ops = dango_transport_find(name);
    dango_tp_iface_params_t      p   = {0};
    xfer_tp_t                   *tp;
    int                          rc;

    if (ops == NULL) {
        dango_error("engine: unknown transport '%s'", name);
        return DANGO_EINVAL;
    }

    for (unsigned t = 0; t < eng->num_tps; t++) {
        if (eng->tps[t].ops == ops) {
            return (int)t;
        }
    }

    if (eng->num_tps == XFER_MAX_TRANSPORTS) {
        return DANGO_EINVAL;
    }

    p.host         = &eng->host;
    p.loops        = eng->loops;
    p.num_loops    = eng->num_loops;
    p.segment_name = eng->name;
    p.instance_id  = eng->instance_id;
    p.listen       = listen;
    p.token        = eng->token;
    p.config       = config;
    tp             = &eng->tps[eng->num_tps];
    rc             = ops->iface_open(&p, &tp->iface);
    if (rc != 0) {
        return rc;
    }

    tp->ops = ops;
    ops->iface_query(tp->iface, &tp->attr);
    if (tp->attr.max_slice == 0) {
        tp->attr.max_slice = 1u << 20;
    }

    return (int)eng->num_tps++;
}

static int engine_set_name(dango_xfer_engine_t *eng, const char *name)
{
    char buf[DANGO_XFER_NAME_MAX + 1];

    if ((name == NULL) || (name[0] == '\0')) {
        char host[128] = "localhost";

        gethostname(host, sizeof(host) - 1);
        snprintf(buf, sizeof(buf), "%s:%d", host, (int)getpid());
        name = buf;
    }

    if ((strlen(name) > DANGO_XFER_NAME_MAX) ||
        (strncmp(name, "file://", 7) == 0)) {
        return DANGO_EINVAL;
    }

    dango_free(eng->name);
    eng->name = dango_strdup(name, "xfer_name");
    return eng->name != NULL ? 0 : DANGO_ENOMEM;
}

/* Parses "lo-hi" into a port range. */
static int parse_port_range(const char *s, unsigned *lo, unsigned *hi)
{
    if ((sscanf(s, "%u-%u", lo, hi) != 2) || (*lo == 0) || (*hi > 65535) ||
        (*lo > *hi)) {
        return DANGO_ECONFIG;
    }

    return 0;
}

/*
 * Opens the TCP transport. In P2P mode with port 0 the port is probed in
 * XFER_P2P_PORTS and the segment name becomes "host:port".
 */
static int engine_open_tcp(dango_xfer_engine_t  *eng,
                           const dango_config_t *config)
{
    struct sockaddr_storage ss;
    socklen_t               sl;
    char                    host[64], listen[96];
    unsigned                lo, hi, port;
    int                     rc, tries;

    rc = dango_sock_parse_addr(eng->cfg.listen, 0, &ss, &sl);
    if (rc != 0) {
        dango_error("engine: malformed listen address '%s'", eng->cfg.listen);
        return DANGO_EINVAL;
    }

    dango_sock_addr_str((struct sockaddr *)&ss, listen, sizeof(listen));
    port = ntohs(ss.ss_family == AF_INET
                     ? ((struct sockaddr_in *)&ss)->sin_port
                     : ((struct sockaddr_in6 *)&ss)->sin6_port);
    if (!eng->p2p) {
        rc = engine_open_tp(eng, "tcp", eng->cfg.listen, config);
        return rc < 0 ? rc : 0;
    }

    /* P2P: the segment name is the address peers dial, so it must be one. */
    if ((strncmp(listen, "0.0.0.0:", 8) == 0) ||
        (strncmp(listen, "[::]:", 5) == 0)) {
        dango_error("engine: P2P handshake mode needs a concrete listen host, "
                    "not %s",
                    eng->cfg.listen);
        return DANGO_EINVAL;
    }

    if (port != 0) {
        rc = engine_set_name(eng, listen);
        if (rc == 0) {
            rc = engine_open_tp(eng, "tcp", listen, config);
        }

        return rc < 0 ? rc : 0;
    }

    rc = parse_port_range(eng->cfg.p2p_ports, &lo, &hi);
    if (rc != 0) {
        dango_error("engine: malformed XFER_P2P_PORTS '%s'",
                    eng->cfg.p2p_ports);
        return rc;
    }

    snprintf(host, sizeof(host), "%.*s", (int)(strrchr(listen, ':') - listen),
             listen);
    for (tries = 0; tries < 64; tries++) {
        uint32_t r;

        dango_random_bytes(&r, sizeof(r));
        port = lo + r % (hi - lo + 1);
        snprintf(listen, sizeof(listen), "%s:%u", host, port);
        rc = engine_set_name(eng, listen);
        if (rc != 0) {
            return rc;
        }

        rc = engine_open_tp(eng, "tcp", listen, config);
        if (rc != DANGO_EADDRINUSE) {
            return rc < 0 ? rc : 0;
        }
    }

    return DANGO_EADDRINUSE;
}

/* ---------- create / destroy ---------- */

/*
 * DANGO_EEXIST: is the name already published by another live engine?
 * A descriptor under our key may also be the leftover of an engine that
 * crashed (descriptors have no TTL), so it only counts when one of its TCP
 * endpoints answers a descriptor request with a descriptor of the same
 * name. No answer (refused, timed out, another cluster's token) means the
 * entry is stale and is overwritten by our publish.
 */
static int engine_check_name_free(dango_xfer_engine_t *eng)
{
    xfer_tp_t *tcp = &eng->tps[eng->tcp_idx];
    json_t    *root, *eps;
    char      *val = NULL;
    int        rc;

    rc = dango_md_get(eng->md, eng->md_key, &val, NULL);
    if (rc == DANGO_ENOENT) {
        return 0;
    }

    if (rc != 0) {
        return ((rc == DANGO_ENOMEM) || (rc == DANGO_ETIMEDOUT))
                   ? rc
                   : DANGO_EMETADATA;
    }

    root = json_loads(val, 0, NULL);
    dango_md_free(val);
    eps = json_object_get(
        json_object_get(json_object_get(root, "transports"), "tcp"),
        "endpoints");
    for (size_t i = 0; (rc == 0) && (i < json_array_size(eps)); i++) {
        const char *addr = json_string_value(json_array_get(eps, i));
        char       *peer = NULL;
        json_t     *desc;
        int         frc;

        if ((addr == NULL) || (strcmp(addr, eng->listen_addr) == 0)) {
            continue;
        }

        frc = tcp->ops->desc_fetch(tcp->iface, addr, eng->cfg.open_timeout,
                                   &peer);
        if (frc == DANGO_ENOMEM) {
            rc = frc;
            break;
        }

        if (frc != 0) {
            continue;
        }

        desc = json_loads(peer, 0, NULL);
        dango_free(peer);
        if (json_is_string(json_object_get(desc, "name")) &&
            (strcmp(json_string_value(json_object_get(desc, "name")),
                    eng->name) == 0)) {
            dango_error("engine %s: the name is published by a live engine "
                        "at %s",
                        eng->name, addr);
            rc = DANGO_EEXIST;
        }

        json_decref(desc);
    }

    if (rc == 0) {
        dango_info("engine %s: replacing a stale descriptor of the same name",
                   eng->name);
    }

    json_decref(root);
    return rc;
}

static int engine_params(dango_xfer_engine_t              *eng,
                         const dango_xfer_engine_params_t *params)
{
    uint64_t mask = (params != NULL) ? params->field_mask : 0;

#define XFER_PARAM_STR(_bit, _field, _cfg)                                     \
    if ((mask & (_bit)) && (params->_field != NULL)) {                         \
        char *copy = dango_strdup(params->_field, "xfer_param");               \
                                                                               \
        if (copy == NULL) {                                                    \
            return DANGO_ENOMEM;                                               \
        }                                                                      \
                                                                               \
        dango_free(eng->cfg._cfg);                                             \
        eng->cfg._cfg = copy;                                                  \
    }

    XFER_PARAM_STR(DANGO_XFER_ENGINE_PARAM_SEGMENT_NAME, segment_name,
                   segment_name)
    XFER_PARAM_STR(DANGO_XFER_ENGINE_PARAM_METADATA, metadata, metadata)
    XFER_PARAM_STR(DANGO_XFER_ENGINE_PARAM_LISTEN, listen_addr, listen)
    XFER_PARAM_STR(DANGO_XFER_ENGINE_PARAM_TRANSPORTS, transports, transports)
#undef XFER_PARAM_STR
    /*
     * An explicit empty name is malformed (documented DANGO_EINVAL); only
     * an absent one (bit unset, NULL, or XFER_SEGMENT_NAME "") takes the
     * default "<hostname>:<pid>".
     */
    if ((mask & DANGO_XFER_ENGINE_PARAM_SEGMENT_NAME) &&
        (params->segment_name != NULL) && (params->segment_name[0] == '\0')) {
        return DANGO_EINVAL;
    }

    if (mask & DANGO_XFER_ENGINE_PARAM_NUM_WORKERS) {
        eng->cfg.workers = params->num_workers;
    }

    if ((eng->cfg.workers == 0) || (eng->cfg.workers > XFER_MAX_WORKERS)) {
        dango_error("engine: worker count %lu is outside 1..%d",
                    eng->cfg.workers, XFER_MAX_WORKERS);
        return DANGO_EINVAL;
    }

    if ((eng->cfg.metadata[0] == '\0') || (eng->cfg.max_batch == 0)) {
        return DANGO_EINVAL;
    }

    return 0;
}

static int engine_open_transports(dango_xfer_engine_t  *eng,
                                  const dango_config_t *config)
{
    char *list, *save = NULL, *tok;
    int   rc, idx, have_tcp = 0;

    eng->tcp_idx = eng->shm_idx = eng->file_idx = -1;
    rc                                          = engine_open_tcp(eng, config);
    if (rc != 0) {
        return rc;
    }

    eng->tcp_idx = 0;
    dango_xfer_engine_listen_addr(eng, eng->listen_addr,
                                  sizeof(eng->listen_addr));
    list = dango_strdup(eng->cfg.transports, "xfer_tp_list");
    if (list == NULL) {
        return DANGO_ENOMEM;
    }

    for (tok = strtok_r(list, ", ", &save); tok != NULL;
         tok = strtok_r(NULL, ", ", &save)) {
        if (strcmp(tok, "file") == 0) {
            continue; /* file segments always use the file transport */
        }

        idx = engine_open_tp(eng, tok, NULL, config);
        if (idx < 0) {
            dango_free(list);
            return idx;
        }

        if (strcmp(tok, "shm") == 0) {
            eng->shm_idx = idx;
        }

        have_tcp |= (idx == eng->tcp_idx);
        eng->order[eng->num_order++] = idx;
    }

    dango_free(list);
    if (!have_tcp) {
        eng->order[eng->num_order++] = eng->tcp_idx;
    }

    idx = engine_open_tp(eng, "file", NULL, config);
    if (idx < 0) {
        return idx;
    }

    eng->file_idx = idx;
    return 0;
}

int dango_xfer_engine_listen_addr(const dango_xfer_engine_t *eng, char *buf,
                                  size_t len)
{
    json_t     *root;
    const char *a;
    int         rc = DANGO_ENOENT;

    if ((eng == NULL) || (buf == NULL) || (eng->tcp_idx < 0)) {
        return DANGO_EINVAL;
    }

    root = json_loads(eng->tps[eng->tcp_idx].attr.desc_json, 0, NULL);
    a    = json_string_value(
           json_array_get(json_object_get(root, "endpoints"), 0));
    if (a != NULL) {
        rc = (strlen(a) < len) ? 0 : DANGO_ERANGE;
        if (rc == 0) {
            strcpy(buf, a);
        }
    }

    json_decref(root);
    return rc;
}

const char *dango_xfer_engine_segment_name(const dango_xfer_engine_t *eng)
{
    return eng->name;
}

const char *dango_xfer_engine_host_id(const dango_xfer_engine_t *eng)
{
    return eng->host_id;
}

static void engine_free(dango_xfer_engine_t *eng)
{
    dango__xfer_segments_cleanup(eng);
    for (unsigned t = eng->num_tps; t > 0; t--) {
        eng->tps[t - 1].ops->iface_close(eng->tps[t - 1].iface);
    }

    for (unsigned i = 0; i < eng->num_loops; i++) {
        dango_loop_destroy(eng->loops[i]);
    }

    while (!dango_list_is_empty(&eng->notify_queue)) {
        xfer_notify_node_t *n =
            dango_list_head_elem(&eng->notify_queue, xfer_notify_node_t, link);

        dango_list_del(&n->link);
        dango_free(n);
    }

    dango__xfer_mem_cleanup(eng);
    dango_mpool_cleanup(&eng->slice_pool);
    dango_md_close(eng->md);
    dango_free(eng->md_key);
    dango_free(eng->topology_json);
    dango_free(eng->token);
    dango_free(eng->name);
    dango__config_free(&dango__xfer_config_table, &eng->cfg);
    pthread_mutex_destroy(&eng->seg_lock);
    pthread_mutex_destroy(&eng->notify_lock);
    pthread_mutex_destroy(&eng->publish_lock);
    dango_free(eng);
}

int dango_xfer_engine_create(const dango_xfer_engine_params_t *params,
                             const dango_config_t             *config,
                             dango_xfer_engine_t             **eng_p)
{
    dango_xfer_engine_t *eng;
    const char          *token;
    int                  rc;

    if (eng_p == NULL) {
        return DANGO_EINVAL;
    }

    eng = dango_calloc(1, sizeof(*eng), "xfer_engine");
    if (eng == NULL) {
        return DANGO_ENOMEM;
    }

    pthread_mutex_init(&eng->seg_lock, NULL);
    pthread_mutex_init(&eng->notify_lock, NULL);
    pthread_mutex_init(&eng->publish_lock, NULL);
    dango_list_init(&eng->notify_queue);
    dango_mpool_init(&eng->slice_pool, 160, 256, 0, "xfer_slice");
    eng->tcp_idx = eng->shm_idx = eng->file_idx = -1;
    rc                                          = dango__xfer_mem_init(eng);
    if (rc != 0) {
        goto err_early;
    }

    rc = dango__config_parse(config, &dango__xfer_config_table, &eng->cfg);
    if (rc != 0) {
        dango__xfer_mem_cleanup(eng);
        goto err_early;
    }

    rc = engine_params(eng, params);
    if (rc != 0) {
        goto err;
    }

    eng->p2p = (strcmp(eng->cfg.metadata, DANGO_XFER_P2PHANDSHAKE) == 0);
    rc       = dango_random_bytes(&eng->instance_id, sizeof(eng->instance_id));
    if (rc != 0) {
        goto err;
    }

    eng->instance_id |= 1; /* never 0: 0 means "unknown" */
    engine_host_id(eng);
    {
        json_t *topo = engine_topology(eng);
        char   *t    = json_dumps(topo, JSON_COMPACT);

        json_decref(topo);
        eng->topology_json =
            (t != NULL) ? dango_strdup(t, "xfer_topology") : NULL;
        free(t);
        if (eng->topology_json == NULL) {
            rc = DANGO_ENOMEM;
            goto err;
        }
    }
    token = dango_auth_env_token();
    if (token != NULL) {
        eng->token = dango_strdup(token, "xfer_token");
        if (eng->token == NULL) {
            rc = DANGO_ENOMEM;
            goto err;
        }
    }

    rc = engine_set_name(eng, eng->cfg.segment_name);
    if (rc != 0) {
        goto err;
    }

    eng->host.ctx         = eng;
    eng->host.mem_acquire = dango__xfer_host_mem_acquire;
    eng->host.mem_release = dango__xfer_host_mem_release;
    eng->host.mem_fd      = dango__xfer_host_mem_fd;
    eng->host.notify_recv = host_notify_recv;
    eng->host.desc_get    = host_desc_get;

    for (unsigned i = 0; i < eng->cfg.workers; i++) {
        char name[16];

        snprintf(name, sizeof(name), "dango-xfer-%u", i);
        rc = dango_loop_create(name, &eng->loops[i]);
        if (rc != 0) {
            goto err;
        }

        eng->num_loops++;
        rc = dango_loop_start(eng->loops[i]);
        if (rc != 0) {
            goto err;
        }
    }

    rc = engine_open_transports(eng, config);
    if (rc != 0) {
        goto err;
    }

    if (!eng->p2p) {
        char key[DANGO_XFER_NAME_MAX + 128];

        rc = dango_md_open(eng->cfg.metadata, config, &eng->md);
        if (rc != 0) {
            dango_error("engine %s: metadata '%s': %s", eng->name,
                        eng->cfg.metadata, dango_strerror(rc));
            goto err;
        }

        snprintf(key, sizeof(key), "dango/%s/xfer/segments/%s",
                 eng->cfg.cluster_id, eng->name);
        eng->md_key = dango_strdup(key, "xfer_md_key");
        if (eng->md_key == NULL) {
            rc = DANGO_ENOMEM;
            goto err;
        }

        rc = engine_check_name_free(eng);
        if (rc != 0) {
            goto err;
        }

        rc = dango__xfer_publish(eng);
        if (rc != 0) {
            goto err;
        }
    }

    rc = dango__xfer_segments_init(eng);
    if (rc != 0) {
        goto err_unpublish;
    }

    __atomic_store_n(&eng->ready, 1, __ATOMIC_RELEASE);
    dango_info("engine %s: started (listen %s, %u workers, metadata %s)",
               eng->name, eng->listen_addr, eng->num_loops, eng->cfg.metadata);
    *eng_p = eng;
    return 0;

err_unpublish:
    if (eng->md != NULL) {
        dango_md_delete(eng->md, eng->md_key);
    }
err:
    engine_free(eng);
    return rc;

err_early:
    dango_mpool_cleanup(&eng->slice_pool);
    pthread_mutex_destroy(&eng->seg_lock);
    pthread_mutex_destroy(&eng->notify_lock);
    pthread_mutex_destroy(&eng->publish_lock);
    dango_free(eng);
    return rc;
}

void dango_xfer_engine_destroy(dango_xfer_engine_t *eng)
{
    if (eng == NULL) {
        return;
    }

    __atomic_store_n(&eng->shutting_down, 1, __ATOMIC_RELEASE);
    if (eng->md != NULL) {
        int rc = dango_md_delete(eng->md, eng->md_key);

        if ((rc != 0) && (rc != DANGO_ENOENT)) {
            dango_warn("engine %s: withdrawing the descriptor failed: %s",
                       eng->name, dango_strerror(rc));
        }
    }

    dango_info("engine %s: stopping", eng->name);
    engine_free(eng);
}

/* ---------- notifications ---------- */

int dango_xfer_notify_recv(dango_xfer_engine_t *eng, dango_xfer_notify_t *out,
                           size_t max, size_t *count_p)
{
    size_t n = 0;

    if ((eng == NULL) || (count_p == NULL) || ((out == NULL) && (max > 0))) {
        return DANGO_EINVAL;
    }

    pthread_mutex_lock(&eng->notify_lock);
    while ((n < max) && !dango_list_is_empty(&eng->notify_queue)) {
        xfer_notify_node_t *node =
            dango_list_head_elem(&eng->notify_queue, xfer_notify_node_t, link);

        dango_list_del(&node->link);
        eng->notify_count--;
        out[n++] = node->n;
        dango_free(node);
    }

    pthread_mutex_unlock(&eng->notify_lock);
    *count_p = n;
    return 0;
}
