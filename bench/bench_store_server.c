/*
 * The Dango side of the store benchmark's server: one process that runs a
 * store master and a store client contributing one segment to the pool,
 * through the public API only (the shape of `dango serve`, without
 * depending on the apps). bench_store then connects to the master as a
 * pure client: on the same host its transfers reach the segment through
 * shared memory, from another network namespace through TCP.
 *
 *   bench_store_server [--segment 2g] [--master-listen 127.0.0.1:0]
 *                      [--xfer-listen HOST:0] [--set NAME=VALUE]...
 *
 * Options not given here come from the environment (DANGO_<NAME>) and the
 * defaults, as for any Dango program. When both are up it prints one line,
 *   {"ready":true,"master":"host:port","segment":"name"}
 * and serves until SIGINT or SIGTERM.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dango/dango.h>
#include <dango/store.h>
#include <dango/store_master.h>

#include "bench_util.h"

static void usage(void)
{
    fprintf(stderr, "usage: bench_store_server [--segment 2g] "
                    "[--master-listen 127.0.0.1:0]\n"
                    "       [--xfer-listen HOST:0] [--set NAME=VALUE]...\n");
    exit(2);
}

static int set_option(dango_config_t *cfg, const char *name, const char *val)
{
    int rc = dango_config_set(cfg, name, val);

    if (rc != 0) {
        fprintf(stderr, "bench_store_server: %s=%s: %s\n", name, val,
                dango_strerror(rc));
    }
    return rc;
}

int main(int argc, char **argv)
{
    dango_store_params_t  params        = {0};
    dango_store_master_t *master        = NULL;
    dango_store_client_t *client        = NULL;
    dango_config_t       *cfg           = NULL;
    const char           *master_listen = "127.0.0.1:0";
    const char           *xfer_listen   = NULL;
    uint64_t              segment       = 2ull << 30;
    sigset_t              sigs;
    int                   sig, rc, i;

    rc = dango_config_read(NULL, &cfg);
    if (rc != 0) {
        fprintf(stderr, "bench_store_server: config: %s\n", dango_strerror(rc));
        return 1;
    }

    /* No admin HTTP port unless asked (--set MASTER_ADMIN_LISTEN=...): its
     * fixed default port may be taken by another master on the host. */
    if (set_option(cfg, "MASTER_ADMIN_LISTEN", "") != 0) {
        return 1;
    }
    for (i = 1; i < argc; i += 2) {
        const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;

        if (v == NULL) {
            usage();
        } else if (strcmp(argv[i], "--segment") == 0) {
            segment = bench_parse_size(v);
        } else if (strcmp(argv[i], "--master-listen") == 0) {
            master_listen = v;
        } else if (strcmp(argv[i], "--xfer-listen") == 0) {
            xfer_listen = v;
        } else if (strcmp(argv[i], "--set") == 0) {
            char        name[128];
            const char *eq = strchr(v, '=');

            if ((eq == NULL) || ((size_t)(eq - v) >= sizeof(name))) {
                usage();
            }
            memcpy(name, v, (size_t)(eq - v));
            name[eq - v] = '\0';
            if (set_option(cfg, name, eq + 1) != 0) {
                return 1;
            }
        } else {
            usage();
        }
    }
    if (segment == 0) {
        usage();
    }
    if (set_option(cfg, "MASTER_LISTEN", master_listen) != 0) {
        return 1;
    }

    /* Signals are taken by sigwait() below, not by whichever library
     * thread happens to run. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    rc = dango_store_master_create(cfg, &master);
    if (rc != 0) {
        fprintf(stderr, "bench_store_server: master: %s\n", dango_strerror(rc));
        goto out;
    }

    params.field_mask = DANGO_STORE_PARAM_MASTER |
                        DANGO_STORE_PARAM_SEGMENT_SIZE |
                        DANGO_STORE_PARAM_BUFFER_SIZE;
    params.master_addr       = dango_store_master_addr(master);
    params.segment_size      = segment;
    params.local_buffer_size = 0;
    if (xfer_listen != NULL) {
        params.field_mask |= DANGO_STORE_PARAM_LISTEN;
        params.listen_addr = xfer_listen;
    }
    rc = dango_store_client_create(&params, cfg, &client);
    if (rc != 0) {
        fprintf(stderr, "bench_store_server: segment client: %s\n",
                dango_strerror(rc));
        goto out;
    }

    printf("{\"ready\":true,\"master\":\"%s\",\"segment\":\"%s\"}\n",
           dango_store_master_addr(master), dango_store_client_name(client));
    fflush(stdout);

    while (sigwait(&sigs, &sig) != 0) {
    }

out:
    dango_store_client_destroy(client);
    dango_store_master_destroy(master);
    dango_config_release(cfg);
    return (rc != 0) ? 1 : 0;
}
