/*
 * Child processes and emulated hosts for the integration tests (it_proc.h).
 *
 * Everything a child needs is prepared before fork(): between fork and exec
 * it only makes async-signal-safe calls. PR_SET_PDEATHSIG makes a child die
 * with the test even when the test itself is killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dango_test.h"

#include <dango/error.h>
#include "common/time.h"
#include "it_proc.h"

#define MAX_CHILDREN 32

extern char **environ;

static pid_t g_pids[MAX_CHILDREN];
static char  g_ip[64];
static char  g_ns[2][48];

/* ---------- registry ---------- */

static void track(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (g_pids[i] == 0) {
            g_pids[i] = pid;
            return;
        }
    }

    kill(pid, SIGKILL); /* untracked children would outlive the test */
    fail_msg("more than %d children", MAX_CHILDREN);
}

static void untrack(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (g_pids[i] == pid) {
            g_pids[i] = 0;
        }
    }
}

int it_reap(pid_t pid, int timeout_ms)
{
    uint64_t deadline =
        dango_time_ns() + (uint64_t)timeout_ms * DANGO_NSEC_PER_MSEC;
    int status = 0;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if ((r == pid) || ((r < 0) && (errno != EINTR))) {
            break;
        }

        if (dango_time_ns() >= deadline) {
            kill(pid, SIGKILL);
            while ((waitpid(pid, &status, 0) < 0) && (errno == EINTR)) {
            }
            break;
        }

        {
            struct timespec ts = {0, 2 * 1000 * 1000};

            nanosleep(&ts, NULL);
        }
    }

    untrack(pid);
    return status;
}

void it_proc_kill_all(void)
{
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (g_pids[i] != 0) {
            kill(g_pids[i], SIGKILL);
            it_reap(g_pids[i], 10000);
        }
    }
}

/* ---------- children ---------- */

static int env_named(const char *entry, const char *const *env_add)
{
    for (size_t i = 0; (env_add != NULL) && (env_add[i] != NULL); i++) {
        const char *eq = strchr(env_add[i], '=');
        size_t      n  = eq ? (size_t)(eq - env_add[i]) : strlen(env_add[i]);

        if ((strncmp(entry, env_add[i], n) == 0) && (entry[n] == '=')) {
            return 1;
        }
    }

    return strncmp(entry, "DANGO_CLUSTER_TOKEN=", 20) == 0;
}

void it_proc_spawn(it_proc_t *p, char *const argv[], const char *const *env_add)
{
    size_t n = 0, k = 0, extra = 0;
    char **env;
    int    in[2], out[2];
    pid_t  pid;

    memset(p, 0, sizeof(*p));
    p->in_fd = p->out_fd = -1;
    while (environ[n] != NULL) {
        n++;
    }

    while ((env_add != NULL) && (env_add[extra] != NULL)) {
        extra++;
    }

    env = calloc(n + extra + 1, sizeof(*env));
    assert_non_null(env);
    for (size_t i = 0; i < n; i++) {
        if (!env_named(environ[i], env_add)) {
            env[k++] = environ[i];
        }
    }

    for (size_t i = 0; i < extra; i++) {
        env[k++] = (char *)env_add[i];
    }

    assert_int_equal(0, pipe2(in, O_CLOEXEC));
    assert_int_equal(0, pipe2(out, O_CLOEXEC));
    pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(in[0], STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        execve(argv[0], argv, env);
        _exit(127);
    }

    assert_true(pid > 0);
    free(env);
    close(in[0]);
    close(out[1]);
    track(pid);
    p->pid    = pid;
    p->in_fd  = in[1];
    p->out_fd = out[0];
}

int it_proc_read_line(it_proc_t *p, char *line, size_t len, int timeout_ms)
{
    uint64_t deadline =
        dango_time_ns() + (uint64_t)timeout_ms * DANGO_NSEC_PER_MSEC;

    for (;;) {
        char         *nl  = memchr(p->rx, '\n', p->rx_len);
        struct pollfd pfd = {p->out_fd, POLLIN, 0};
        uint64_t      now;
        ssize_t       n;

        if (nl != NULL) {
            size_t l = (size_t)(nl - p->rx);

            snprintf(line, len, "%.*s", (int)l, p->rx);
            p->rx_len -= l + 1;
            memmove(p->rx, nl + 1, p->rx_len);
            return 0;
        }

        if (p->rx_len >= sizeof(p->rx) - 1) { /* an overlong line: drop it */
            p->rx_len = 0;
        }

        now = dango_time_ns();
        if (now >= deadline) {
            return DANGO_ETIMEDOUT;
        }

        if (poll(&pfd, 1, (int)((deadline - now) / DANGO_NSEC_PER_MSEC) + 1) <
            0) {
            continue;
        }

        if (!(pfd.revents & (POLLIN | POLLHUP | POLLERR))) {
            continue;
        }

        n = read(p->out_fd, p->rx + p->rx_len, sizeof(p->rx) - 1 - p->rx_len);
        if (n == 0) {
            return DANGO_ECONNRESET;
        }

        if (n > 0) {
            p->rx_len += (size_t)n;
        }
    }
}

int it_proc_expect(it_proc_t *p, const char *prefix, char *line, size_t len,
                   int timeout_ms)
{
    for (;;) {
        int rc = it_proc_read_line(p, line, len, timeout_ms);

        if (rc != 0) {
            return rc;
        }

        if (strncmp(line, prefix, strlen(prefix)) == 0) {
            return 0;
        }
    }
}

int it_proc_cmd(it_proc_t *p, const char *cmd, char *reply, size_t len,
                int timeout_ms)
{
    size_t  n = strlen(cmd);
    char    buf[1024];
    ssize_t w;

    snprintf(buf, sizeof(buf), "%s\n", cmd);
    w = write(p->in_fd, buf, n + 1);
    if (w != (ssize_t)(n + 1)) {
        return DANGO_ECONNRESET;
    }

    return it_proc_read_line(p, reply, len, timeout_ms);
}

static void forget(it_proc_t *p)
{
    if (p->in_fd >= 0) {
        close(p->in_fd);
    }

    if (p->out_fd >= 0) {
        close(p->out_fd);
    }

    p->in_fd = p->out_fd = -1;
    p->pid               = 0;
}

int it_proc_stop(it_proc_t *p, int timeout_ms)
{
    int status;

    if (p->in_fd >= 0) {
        close(p->in_fd);
        p->in_fd = -1;
    }

    status = it_reap(p->pid, timeout_ms);
    forget(p);
    return status;
}

void it_proc_kill(it_proc_t *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        it_reap(p->pid, 10000);
    }

    forget(p);
}

/* ---------- emulated hosts ---------- */

const char *it_ip_path(void)
{
    static const char *paths[] = {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip",
                                  "/bin/ip"};

    if (g_ip[0] != '\0') {
        return g_ip;
    }

    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        if (access(paths[i], X_OK) == 0) {
            snprintf(g_ip, sizeof(g_ip), "%s", paths[i]);
            return g_ip;
        }
    }

    return NULL;
}

/* Runs @argv silently (output drained); returns its exit code. */
static int run_quiet(char *const argv[])
{
    it_proc_t p;
    char      buf[512];
    int       status;

    it_proc_spawn(&p, argv, NULL);
    close(p.in_fd);
    p.in_fd = -1;
    for (;;) {
        struct pollfd pfd = {p.out_fd, POLLIN, 0};

        if ((poll(&pfd, 1, 30000) <= 0) ||
            (read(p.out_fd, buf, sizeof(buf)) <= 0)) {
            break;
        }
    }

    status = it_proc_stop(&p, 30000);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

int it_ip(const char *fmt, ...)
{
    char    line[256];
    char   *argv[24], *save = NULL, *tok;
    int     a = 0;
    va_list ap;

    if (it_ip_path() == NULL) {
        return 127;
    }

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    argv[a++] = g_ip;
    for (tok = strtok_r(line, " ", &save); (tok != NULL) && (a < 23);
         tok = strtok_r(NULL, " ", &save)) {
        argv[a++] = tok;
    }

    argv[a] = NULL;
    return run_quiet(argv);
}

void it_netns_cleanup(void)
{
    for (int i = 0; i < 2; i++) {
        if (g_ns[i][0] != '\0') {
            it_ip("netns del %s", g_ns[i]); /* takes its veth end along */
            g_ns[i][0] = '\0';
        }
    }
}

int it_netns_pair(const char *tag, const char *addr_a, const char *addr_b,
                  char ns[2][64])
{
    char veth[2][16];

    if (geteuid() != 0) {
        printf("netns: skipped: needs root to create network namespaces\n");
        return 1;
    }

    if (it_ip_path() == NULL) {
        printf("netns: skipped: no ip(8) command\n");
        return 1;
    }

    for (int i = 0; i < 2; i++) {
        snprintf(veth[i], sizeof(veth[i]), "dgv%d%c", (int)getpid() % 100000,
                 'a' + i);
        snprintf(g_ns[i], sizeof(g_ns[i]), "%.24s-%d-%c", tag, (int)getpid(),
                 'a' + i);
        if (it_ip("netns add %s", g_ns[i]) != 0) {
            g_ns[i][0] = '\0';
            it_netns_cleanup();
            if (i > 0) { /* the first one could be made */
                printf("netns: ip netns add failed for the second "
                       "namespace\n");
                return DANGO_EIO;
            }

            printf("netns: skipped: the kernel refused to create a network "
                   "namespace\n");
            return 1;
        }
    }

    if (it_ip("link add %s netns %s type veth peer name %s netns %s", veth[0],
              g_ns[0], veth[1], g_ns[1]) != 0) {
        it_netns_cleanup();
        printf("netns: skipped: cannot create a veth pair\n");
        return 1;
    }

    if ((it_ip("-n %s addr add %s dev %s", g_ns[0], addr_a, veth[0]) != 0) ||
        (it_ip("-n %s addr add %s dev %s", g_ns[1], addr_b, veth[1]) != 0)) {
        it_netns_cleanup();
        printf("netns: cannot set the veth addresses\n");
        return DANGO_EIO;
    }

    for (int i = 0; i < 2; i++) {
        if ((it_ip("-n %s link set %s up", g_ns[i], veth[i]) != 0) ||
            (it_ip("-n %s link set lo up", g_ns[i]) != 0)) {
            it_netns_cleanup();
            printf("netns: cannot bring the links up\n");
            return DANGO_EIO;
        }

        memcpy(ns[i], g_ns[i], sizeof(g_ns[i])); /* 48 <= 64, NUL included */
    }

    return 0;
}
