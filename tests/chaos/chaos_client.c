/*
 * A client process of the chaos suite (test_chaos.c).
 *
 *   chaos_client <master> <tag> <seed> <puts>
 *
 * Puts up to <puts> fresh keys "<tag>/<n>" (values 256 B .. 4 KiB derived
 * from the key, so anyone can check them; the budget keeps the pool from
 * filling up, which would evict acknowledged objects) and reads back
 * random keys it put before, one operation every 2 ms, until its stdin
 * closes or it is killed. One line per operation
 * on stdout:
 *   READY
 *   ACK <key> <len> <start ns> <end ns> <segment>[,<segment>...]
 *       the put returned 0 (acknowledged); times are CLOCK_MONOTONIC,
 *       segments are where the master placed its replicas ("?" when the
 *       stat did not answer within 5 s)
 *   FAIL <key> <error name>          the put failed
 *   READ <key> OK | WRONG | <error name>
 *       WRONG: the get returned success with other bytes (must never be)
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dango/error.h>
#include <dango/store.h>
#include "test_values.h"

#define VAL_MIN  256
#define VAL_MAX  4096
#define KEEP_MAX 4096

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int stdin_closed(void)
{
    struct pollfd pfd = {0, POLLIN, 0};
    char          buf[64];

    if (poll(&pfd, 1, 0) <= 0) {
        return 0;
    }

    return read(0, buf, sizeof(buf)) <= 0;
}

/* Where the replicas of @key are, as "a,b" (retried up to 5 s). */
static void replicas_of(dango_store_client_t *c, const char *key, char *out,
                        size_t len)
{
    dango_store_object_info_t info;
    uint64_t                  deadline = mono_ns() + 5000000000ull;

    snprintf(out, len, "?");
    while (mono_ns() < deadline) {
        if (dango_store_stat(c, key, &info) == 0) {
            size_t off = 0;

            out[0] = '\0';
            for (unsigned i = 0; (i < info.num_replicas) && (off < len); i++) {
                off += (size_t)snprintf(out + off, len - off, "%s%s",
                                        (i > 0) ? "," : "",
                                        info.replicas[i].segment);
            }

            if (info.num_replicas == 0) {
                snprintf(out, len, "?");
            }
            return;
        }

        usleep(50000);
    }
}

int main(int argc, char **argv)
{
    static char           keys[KEEP_MAX][48];
    static size_t         lens[KEEP_MAX];
    dango_store_params_t  p;
    dango_store_client_t *c;
    uint8_t              *val, *got;
    uint64_t              s;
    size_t                nkeys = 0;
    uint64_t              budget, puts = 0;
    int                   rc;

    if (argc < 5) {
        fprintf(stderr, "usage: chaos_client MASTER TAG SEED PUTS\n");
        return 2;
    }

    budget = strtoull(argv[4], NULL, 0);
    s      = strtoull(argv[3], NULL, 0) | 1;
    val    = malloc(VAL_MAX);
    got    = malloc(VAL_MAX);
    if ((val == NULL) || (got == NULL)) {
        return 1;
    }

    memset(&p, 0, sizeof(p));
    p.field_mask  = DANGO_STORE_PARAM_MASTER | DANGO_STORE_PARAM_BUFFER_SIZE;
    p.master_addr = argv[1];
    p.local_buffer_size = 8u << 20;
    rc                  = dango_store_client_create(&p, NULL, &c);
    if (rc != 0) {
        printf("ERR %s\n", dango_err_name(rc));
        return 1;
    }

    printf("READY\n");
    fflush(stdout);
    for (uint64_t n = 0; !stdin_closed(); n++) {
        usleep(2000);
        if ((puts < budget) && ((nkeys == 0) || (rnd(&s) % 3 != 0))) {
            char     key[48], reps[1200];
            size_t   len = VAL_MIN + rnd(&s) % (VAL_MAX - VAL_MIN);
            uint64_t t0, t1;

            puts++;
            snprintf(key, sizeof(key), "%s/%" PRIu64, argv[2], n);
            test_fill(val, len, test_key_seed(key));
            t0 = mono_ns();
            rc = dango_store_put(c, key, val, len, NULL);
            t1 = mono_ns();
            if (rc != 0) {
                printf("FAIL %s %s\n", key, dango_err_name(rc));
            } else {
                replicas_of(c, key, reps, sizeof(reps));
                printf("ACK %s %zu %" PRIu64 " %" PRIu64 " %s\n", key, len, t0,
                       t1, reps);
                snprintf(keys[nkeys % KEEP_MAX], sizeof(keys[0]), "%s", key);
                lens[nkeys % KEEP_MAX] = len;
                nkeys++;
            }
        } else if (nkeys > 0) {
            size_t  i = rnd(&s) % (nkeys < KEEP_MAX ? nkeys : KEEP_MAX);
            int64_t r = dango_store_get(c, keys[i], got, lens[i], NULL);

            if (r < 0) {
                printf("READ %s %s\n", keys[i], dango_err_name((int)r));
            } else {
                test_fill(val, lens[i], test_key_seed(keys[i]));
                printf("READ %s %s\n", keys[i],
                       ((size_t)r == lens[i]) && !memcmp(val, got, lens[i])
                           ? "OK"
                           : "WRONG");
            }
        }

        fflush(stdout);
    }

    dango_store_client_destroy(c);
    free(val);
    free(got);
    return 0;
}
