/*
 * Peer processes of the store cluster tests (test_store_cluster.c).
 *
 *   store_peer master
 *       Runs a master configured from the environment (DANGO_MASTER_*).
 *       Prints "READY <rpc address>", serves until stdin closes.
 *   store_peer node <master> <segment bytes> [listen]
 *       A store node: contributes a segment, stages nothing. Prints
 *       "READY <segment name> <segment base hex>". Commands on stdin:
 *         flip <hex address>   xor 0xff into the byte at that address of
 *                              its own segment; answers "OK" or "ERR ..."
 *       Serves until stdin closes, then unmounts and exits 0.
 *   store_peer writer <master> <value bytes>
 *       A pure client that puts fresh keys "w/<pid>/<n>" of random bytes in
 *       a loop, forever; prints "READY" before its first put. The test kills
 *       it with SIGKILL in the middle of a put.
 *   store_peer client <master> <key> <value bytes> [listen]
 *       A pure client that puts <key> with a deterministic value
 *       (seeded by the key), gets it back and checks it; prints
 *       "PUT <rc>" and "GET <rc>" and exits 0.
 *   store_peer copier <master> <target> <key>
 *       A pure client that copies <key> to the node whose segment is
 *       <target> (dango_store_batch_replicate). When the copy succeeded it
 *       kills itself with SIGKILL as soon as the call returns: its client
 *       is never destroyed, so whatever the call left for later is never
 *       done. Otherwise it prints "COPY <rc> <result>" and exits 1.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dango/config.h>
#include <dango/error.h>
#include <dango/store.h>
#include <dango/store_master.h>
#include "test_values.h"

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static int run_master(void)
{
    dango_store_master_t *m;
    char                  line[256];
    int                   rc = dango_store_master_create(NULL, &m);

    if (rc != 0) {
        say("ERR %s", dango_err_name(rc));
        return 1;
    }

    say("READY %s", dango_store_master_addr(m));
    while (fgets(line, sizeof(line), stdin) != NULL) {
    }

    dango_store_master_destroy(m);
    return 0;
}

static int client_new(const char *master, uint64_t seg, uint64_t buf,
                      const char *listen, dango_store_client_t **c_p)
{
    dango_store_params_t p;

    memset(&p, 0, sizeof(p));
    p.field_mask = DANGO_STORE_PARAM_MASTER | DANGO_STORE_PARAM_SEGMENT_SIZE |
                   DANGO_STORE_PARAM_BUFFER_SIZE;
    p.master_addr       = master;
    p.segment_size      = seg;
    p.local_buffer_size = buf;
    if (listen != NULL) {
        p.field_mask |= DANGO_STORE_PARAM_LISTEN;
        p.listen_addr = listen;
    }

    return dango_store_client_create(&p, NULL, c_p);
}

static int run_node(int argc, char **argv)
{
    dango_store_client_t *c;
    char                  line[256];
    int                   rc;

    if (argc < 4) {
        return 2;
    }

    rc = client_new(argv[2], strtoull(argv[3], NULL, 0), 0,
                    argc > 4 ? argv[4] : NULL, &c);
    if (rc != 0) {
        say("ERR %s", dango_err_name(rc));
        return 1;
    }

    say("READY %s", dango_store_client_name(c));
    while (fgets(line, sizeof(line), stdin) != NULL) {
        uint64_t addr;

        if (sscanf(line, "flip %" SCNx64, &addr) == 1) {
            /* The address is inside this process's own segment: the master
             * handed it out as base + offset of our mapping. */
            volatile uint8_t *b = (volatile uint8_t *)(uintptr_t)addr;

            *b ^= 0xff;
            say("OK");
        } else {
            say("ERR unknown command");
        }
    }

    dango_store_client_destroy(c);
    return 0;
}

static int run_writer(int argc, char **argv)
{
    dango_store_client_t *c;
    size_t                len;
    void                 *val;
    int                   rc;

    if (argc < 4) {
        return 2;
    }

    len = strtoull(argv[3], NULL, 0);
    val = malloc(len);
    if (val == NULL) {
        return 1;
    }

    rc = client_new(argv[2], 0, len + (1u << 20), NULL, &c);
    if (rc != 0) {
        say("ERR %s", dango_err_name(rc));
        return 1;
    }

    say("READY");
    for (uint64_t n = 0;; n++) {
        char key[64];

        snprintf(key, sizeof(key), "w/%d/%" PRIu64, (int)getpid(), n);
        test_fill(val, len, test_key_seed(key));
        dango_store_put(c, key, val, len, NULL);
    }

    return 0;
}

static int run_client(int argc, char **argv)
{
    dango_store_client_t *c;
    size_t                len;
    uint8_t              *val, *back;
    int64_t               got;
    int                   rc;

    if (argc < 5) {
        return 2;
    }

    len  = strtoull(argv[4], NULL, 0);
    val  = malloc(len);
    back = malloc(len);
    if ((val == NULL) || (back == NULL)) {
        return 1;
    }

    rc =
        client_new(argv[2], 0, len + (1u << 20), argc > 5 ? argv[5] : NULL, &c);
    if (rc != 0) {
        say("ERR %s", dango_err_name(rc));
        return 1;
    }

    test_fill(val, len, test_key_seed(argv[3]));
    rc = dango_store_put(c, argv[3], val, len, NULL);
    say("PUT %d", rc);
    got = dango_store_get(c, argv[3], back, len, NULL);
    if ((got == (int64_t)len) && (memcmp(val, back, len) != 0)) {
        got = DANGO_ECORRUPT; /* wrong bytes: the one thing never allowed */
    }

    say("GET %" PRId64, got == (int64_t)len ? (int64_t)0 : got);
    dango_store_client_destroy(c);
    free(val);
    free(back);
    return 0;
}

static int run_copier(int argc, char **argv)
{
    dango_store_client_t *c;
    const char           *keys[1];
    int                   rc, res = -1;

    if (argc < 5) {
        return 2;
    }

    rc = client_new(argv[2], 0, 1u << 20, NULL, &c);
    if (rc != 0) {
        say("ERR %s", dango_err_name(rc));
        return 1;
    }

    keys[0] = argv[4];
    rc      = dango_store_batch_replicate(c, 1, keys, argv[3], &res);
    if ((rc == 0) && (res == 0)) {
        kill(getpid(), SIGKILL);
    }

    say("COPY %s %s", dango_err_name(rc), dango_err_name(res));
    return 1;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        fprintf(stderr,
                "usage: store_peer master|node|writer|client|copier ...\n");
        return 2;
    }

    if (strcmp(argv[1], "master") == 0) {
        return run_master();
    }

    if (strcmp(argv[1], "node") == 0) {
        return run_node(argc, argv);
    }

    if (strcmp(argv[1], "writer") == 0) {
        return run_writer(argc, argv);
    }

    if (strcmp(argv[1], "client") == 0) {
        return run_client(argc, argv);
    }

    if (strcmp(argv[1], "copier") == 0) {
        return run_copier(argc, argv);
    }

    return 2;
}
