/*
 * Reference figure for the TCP transport: the simplest possible sender and
 * receiver (blocking send()/recv() of 1 MiB, like iperf3 -l 1M) run as
 * PAIRS process pairs on loopback, but walking a buffer POOL of the given
 * size on each side. With --pool 1m the buffers stay in cache (this is
 * iperf3's shape); with --pool 128m they are cold, as the KV blocks of a
 * 4 MiB x batch 32 transfer are. The gap between the two is what cold
 * memory costs any TCP sender on this machine, not just Dango.
 *
 *   bench_tcp_pair [--pairs 2] [--pool 128m] [--duration 3]
 * Prints one JSON object (total GB/s received).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#include "bench_util.h"
#include <unistd.h>

#define CHUNK (1u << 20)

static char *pool_map(size_t pool)
{
    char *p = mmap(NULL, pool, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

    if (p != MAP_FAILED) {
        memset(p, 0x5a, pool);
    }

    return p == MAP_FAILED ? NULL : p;
}

/* Receiver: counts bytes until the sender closes; writes the count to @out. */
static void run_receiver(int lfd, size_t pool, int out)
{
    char              *buf   = pool_map(pool);
    unsigned long long total = 0;
    size_t             off   = 0;
    int                fd    = accept(lfd, NULL, NULL);

    if ((buf == NULL) || (fd < 0)) {
        _exit(1);
    }

    for (;;) {
        ssize_t n = recv(fd, buf + off, CHUNK, 0);

        if (n <= 0) {
            break;
        }

        total += (unsigned long long)n;
        off = (off + CHUNK) % pool;
    }

    if (write(out, &total, sizeof(total)) != sizeof(total)) {
        _exit(1);
    }

    _exit(0);
}

static void run_sender(const struct sockaddr_in *addr, size_t pool,
                       double duration)
{
    char  *buf = pool_map(pool);
    int    fd  = socket(AF_INET, SOCK_STREAM, 0);
    size_t off = 0;
    double end;

    if ((buf == NULL) || (fd < 0) ||
        (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) != 0)) {
        _exit(1);
    }

    end = bench_now_s() + duration;
    while (bench_now_s() < end) {
        if (send(fd, buf + off, CHUNK, 0) <= 0) {
            _exit(1);
        }

        off = (off + CHUNK) % pool;
    }

    close(fd);
    _exit(0);
}

int main(int argc, char **argv)
{
    unsigned long long total    = 0;
    size_t             pool     = 128u << 20;
    double             duration = 3;
    int                pairs    = 2, pipefd[2];
    pid_t              pids[64];
    int                npids = 0, status;

    for (int a = 1; a + 1 < argc; a += 2) {
        if (!strcmp(argv[a], "--pairs")) {
            pairs = atoi(argv[a + 1]);
        } else if (!strcmp(argv[a], "--pool")) {
            pool = bench_parse_size(argv[a + 1]);
        } else if (!strcmp(argv[a], "--duration")) {
            duration = strtod(argv[a + 1], NULL);
        }
    }

    if ((pairs < 1) || (pairs > 32) || (pool < CHUNK) || (pool % CHUNK) ||
        (pipe(pipefd) != 0)) {
        fprintf(stderr, "usage: bench_tcp_pair [--pairs 1..32] [--pool "
                        "N*1m] [--duration S]\n");
        return 2;
    }

    /* Rates are over the senders' own clock (they start after their setup). */
    for (int i = 0; i < pairs; i++) {
        struct sockaddr_in addr = {.sin_family = AF_INET};
        socklen_t          len  = sizeof(addr);
        int                lfd  = socket(AF_INET, SOCK_STREAM, 0);

        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if ((lfd < 0) || (bind(lfd, (struct sockaddr *)&addr, len) != 0) ||
            (listen(lfd, 1) != 0) ||
            (getsockname(lfd, (struct sockaddr *)&addr, &len) != 0)) {
            perror("listen");
            return 1;
        }

        if ((pids[npids++] = fork()) == 0) {
            run_receiver(lfd, pool, pipefd[1]);
        }

        if ((pids[npids++] = fork()) == 0) {
            run_sender(&addr, pool, duration);
        }

        close(lfd);
    }

    close(pipefd[1]);
    for (int i = 0; i < npids; i++) {
        waitpid(pids[i], &status, 0);
    }

    for (int i = 0; i < pairs; i++) {
        unsigned long long n = 0;

        if (read(pipefd[0], &n, sizeof(n)) == sizeof(n)) {
            total += n;
        }
    }

    printf("{\"bench\":\"tcp_pair\",\"pairs\":%d,\"pool\":%zu,"
           "\"duration_s\":%.3f,\"bytes\":%llu,\"gbps\":%.3f}\n",
           pairs, pool, duration, total, (double)total / duration / 1e9);
    return 0;
}
