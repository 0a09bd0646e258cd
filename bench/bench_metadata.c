/*
 * Metadata backends side by side: the embedded HTTP metadata server, etcd
 * and Redis, each measured through the same client API (dango_md_*) in
 * one invocation, on 127.0.0.1. etcd and redis-server are started here
 * (fresh directories, free ports) and stopped at the end; a backend whose
 * server is missing is reported as skipped.
 *
 *   bench_metadata [--ops 2000] [--size 256]
 *
 * Per backend and operation (put, then get of the keys put), sequential
 * calls from one thread: one JSON line with ops/s and p50/p99 latency in
 * microseconds. The HTTP server runs in this process (as it does embedded
 * in the master); etcd and Redis are separate processes.
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <dango/error.h>
#include <dango/metadata.h>

extern char **environ;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t          l = sizeof(a);
    int                fd, port = -1;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd                = socket(AF_INET, SOCK_STREAM, 0);
    if ((fd >= 0) && (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0) &&
        (getsockname(fd, (struct sockaddr *)&a, &l) == 0)) {
        port = ntohs(a.sin_port);
    }

    if (fd >= 0) {
        close(fd);
    }
    return port;
}

static pid_t spawn(char **argv)
{
    posix_spawn_file_actions_t fa;
    pid_t                      pid;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", 1, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", 1, 0);
    if (posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ) != 0) {
        pid = -1;
    }
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

static void stop(pid_t pid)
{
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
}

/* Opens @conn and waits (20 s at most) until a get answers. */
static int open_ready(const char *conn, dango_md_t **md_p)
{
    uint64_t deadline = now_ns() + 20000000000ull;
    int      rc;

    rc = dango_md_open(conn, NULL, md_p);
    if (rc != 0) {
        return rc;
    }

    for (;;) {
        char *v = NULL;

        rc = dango_md_get(*md_p, "bench/ready", &v, NULL);
        dango_md_free(v);
        if ((rc == 0) || (rc == DANGO_ENOENT)) {
            return 0;
        }

        if (now_ns() > deadline) {
            dango_md_close(*md_p);
            return rc;
        }
        usleep(50000);
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

static void report(const char *backend, const char *op, uint64_t *lat, size_t n,
                   uint64_t total_ns, size_t size, size_t errors)
{
    qsort(lat, n, sizeof(*lat), cmp_u64);
    printf("{\"bench\": \"metadata\", \"backend\": \"%s\", \"op\": \"%s\", "
           "\"ops\": %zu, \"value_bytes\": %zu, \"errors\": %zu, "
           "\"ops_per_s\": %.0f, \"p50_us\": %.1f, \"p99_us\": %.1f}\n",
           backend, op, n, size, errors, (double)n * 1e9 / (double)total_ns,
           (double)lat[n / 2] / 1e3, (double)lat[(n * 99) / 100] / 1e3);
    fflush(stdout);
}

static void run(const char *backend, dango_md_t *md, size_t ops, size_t size)
{
    uint64_t *lat = calloc(ops, sizeof(*lat));
    char     *val = malloc(size);
    char      key[64];
    uint64_t  t0;
    size_t    errors = 0;

    if ((lat == NULL) || (val == NULL)) {
        free(lat);
        free(val);
        return;
    }

    memset(val, 'v', size);
    t0 = now_ns();
    for (size_t i = 0; i < ops; i++) {
        uint64_t t = now_ns();

        snprintf(key, sizeof(key), "bench/%s/%zu", backend, i);
        errors += dango_md_put(md, key, val, size, 0) != 0;
        lat[i] = now_ns() - t;
    }
    report(backend, "put", lat, ops, now_ns() - t0, size, errors);

    errors = 0;
    t0     = now_ns();
    for (size_t i = 0; i < ops; i++) {
        uint64_t t = now_ns();
        char    *v = NULL;
        size_t   l = 0;

        snprintf(key, sizeof(key), "bench/%s/%zu", backend, i);
        errors += (dango_md_get(md, key, &v, &l) != 0) || (l != size);
        dango_md_free(v);
        lat[i] = now_ns() - t;
    }
    report(backend, "get", lat, ops, now_ns() - t0, size, errors);
    free(lat);
    free(val);
}

int main(int argc, char **argv)
{
    size_t             ops = 2000, size = 256;
    dango_md_server_t *srv;
    dango_md_t        *md;
    char               conn[128], dir[64], port_s[16], cu[64], pu[64];
    pid_t              pid;
    int                port;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--ops") == 0) {
            ops = strtoul(argv[i + 1], NULL, 0);
        } else if (strcmp(argv[i], "--size") == 0) {
            size = strtoul(argv[i + 1], NULL, 0);
        }
    }
    if ((ops == 0) || (size == 0)) {
        fprintf(stderr, "usage: bench_metadata [--ops N] [--size BYTES]\n");
        return 2;
    }

    /* HTTP: the embedded server, in this process. */
    if (dango_md_server_start("127.0.0.1:0", &srv) == 0) {
        snprintf(conn, sizeof(conn), "http://127.0.0.1:%d/metadata",
                 dango_md_server_port(srv));
        if (open_ready(conn, &md) == 0) {
            run("http", md, ops, size);
            dango_md_close(md);
        }
        dango_md_server_stop(srv);
    }

    /* etcd, one member with its data in a fresh directory. */
    snprintf(dir, sizeof(dir), "/tmp/bench-md-etcd-%d", (int)getpid());
    port = free_port();
    snprintf(cu, sizeof(cu), "http://127.0.0.1:%d", port);
    snprintf(pu, sizeof(pu), "http://127.0.0.1:%d", free_port());
    {
        char *args[] = {"etcd", "--data-dir",
                        dir,    "--listen-client-urls",
                        cu,     "--advertise-client-urls",
                        cu,     "--listen-peer-urls",
                        pu,     NULL};

        pid = spawn(args);
    }
    snprintf(conn, sizeof(conn), "etcd://127.0.0.1:%d", port);
    if ((pid > 0) && (open_ready(conn, &md) == 0)) {
        run("etcd", md, ops, size);
        dango_md_close(md);
    } else {
        printf("{\"bench\": \"metadata\", \"backend\": \"etcd\", "
               "\"skipped\": \"etcd did not start\"}\n");
    }
    stop(pid);
    {
        char *args[] = {"rm", "-rf", dir, NULL};

        pid = spawn(args);
        if (pid > 0) {
            waitpid(pid, NULL, 0);
        }
    }

    /* Redis, no persistence. */
    port = free_port();
    snprintf(port_s, sizeof(port_s), "%d", port);
    {
        char *args[] = {"redis-server", "--port", port_s, "--bind",
                        "127.0.0.1",    "--save", "",     "--appendonly",
                        "no",           NULL};

        pid = spawn(args);
    }
    snprintf(conn, sizeof(conn), "redis://127.0.0.1:%d", port);
    if ((pid > 0) && (open_ready(conn, &md) == 0)) {
        run("redis", md, ops, size);
        dango_md_close(md);
    } else {
        printf("{\"bench\": \"metadata\", \"backend\": \"redis\", "
               "\"skipped\": \"redis-server did not start\"}\n");
    }
    stop(pid);
    return 0;
}
