/*
 * Child processes and emulated hosts for the integration tests.
 *
 * A child is started with fork + exec, its stdin and stdout on pipes: the
 * tests speak a line protocol with it (see each helper program). Every child
 * is registered so the teardown can kill and reap whatever a failed test
 * left behind; every wait is bounded. Used from cmocka tests only: broken
 * machinery (no pipe, no fork, too many children) fails the running test.
 *
 * Emulated hosts are network namespaces joined by a veth pair, created by
 * the test itself (root only; skipped elsewhere) and deleted afterwards.
 */
#ifndef DANGO_IT_PROC_H
#define DANGO_IT_PROC_H

#include <stddef.h>
#include <sys/types.h>

typedef struct it_proc {
    pid_t  pid;    /* 0 when not running */
    int    in_fd;  /* its stdin, -1 once closed */
    int    out_fd; /* its stdout */
    char   rx[8192];
    size_t rx_len;
} it_proc_t;

/*
 * Starts @argv[0] with @argv. The environment is ours, minus
 * DANGO_CLUSTER_TOKEN, plus the "NAME=value" strings of @env_add (NULL
 * terminated; may be NULL), which replace variables of the same name.
 * Fails the running test (cmocka) when the pipes or the fork cannot be
 * made; a program that cannot be executed exits 127.
 */
void it_proc_spawn(it_proc_t *p, char *const argv[],
                   const char *const *env_add);

/* Reads one line (without the newline). 0, DANGO_ETIMEDOUT, DANGO_ECONNRESET
 * (the child closed its stdout). */
int it_proc_read_line(it_proc_t *p, char *line, size_t len, int timeout_ms);

/* Reads lines until one starts with @prefix. 0 or the read_line error. */
int it_proc_expect(it_proc_t *p, const char *prefix, char *line, size_t len,
                   int timeout_ms);

/* Writes "@cmd\n" and reads the reply line. 0 or an error. */
int it_proc_cmd(it_proc_t *p, const char *cmd, char *reply, size_t len,
                int timeout_ms);

/* Closes its stdin and waits up to @timeout_ms for it to exit (then kills
 * it). Returns the wait status. */
int it_proc_stop(it_proc_t *p, int timeout_ms);

/* SIGKILL and reap. */
void it_proc_kill(it_proc_t *p);

/* Kills and reaps every child still registered (test teardown). */
void it_proc_kill_all(void);

/* Waits up to @timeout_ms for @pid to exit, then kills it. Wait status. */
int it_reap(pid_t pid, int timeout_ms);

/* ---------- emulated hosts ---------- */

/* Path of ip(8), or NULL. */
const char *it_ip_path(void);

/* Runs ip(8) with the space-separated arguments; returns its exit code. */
int it_ip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Creates namespaces "<tag>-<pid>-a" and "-b" joined by a veth pair with
 * @addr_a / @addr_b (e.g. "192.0.2.1/24"), links and lo up. Names go to
 * @ns. Returns 0; 1 when this machine cannot do it (no root, no ip(8), the
 * kernel refuses a namespace or a veth pair: the reason is printed, the
 * caller skips); or DANGO_EIO when a step failed after namespaces could be
 * made (printed; the namespaces are deleted; a caller may skip or fail).
 */
int it_netns_pair(const char *tag, const char *addr_a, const char *addr_b,
                  char ns[2][64]);

/* Deletes the namespaces made by it_netns_pair (idempotent). */
void it_netns_cleanup(void);

#endif
