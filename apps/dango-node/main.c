/*
 * dango-node: a store node, i.e. a store client that contributes memory and
 * uses none (local_buffer_size 0).
 *
 * It creates a dango_store_client with a segment of --segment-size bytes
 * (else STORE_SEGMENT_SIZE when that is not 0, else a quarter of
 * MemAvailable clamped to [64 MiB, 4 GiB]), prints one line
 *
 *   dango-node serving segment NAME (SIZE), master HOST:PORT
 *
 * and serves transfer-engine reads and writes into the segment until SIGINT
 * or SIGTERM; then it unmounts (the master drops the objects it held) and
 * exits 0. The master need not be up first: the client mounts as soon as it
 * answers, and again after a master restart. Any STORE_* or XFER_* option is
 * also a flag ("--ping-interval 1s" is STORE_PING_INTERVAL).
 */
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dango/dango.h>
#include <dango/store.h>

#include "app_common.h"

#define PROG "dango-node"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: " PROG " [--master HOST:PORT] [--segment-size SIZE] "
            "[--listen HOST:PORT]\n"
            "                  [--metadata CONN] [--name NAME] [--transports "
            "LIST]\n"
            "                  [--OPTION VALUE ...] [--config FILE] [-o "
            "NAME=VALUE] [--log SPEC]\n");
}

static void help(void)
{
    static const char *const skip_store[] = {"MASTER", "SEGMENT_SIZE",
                                             "LOCAL_BUFFER_SIZE", NULL};

    usage(stdout);
    printf(
        "\n"
        "A store node: contributes a segment of memory to the store and\n"
        "serves reads and writes into it until SIGINT or SIGTERM.\n"
        "\n"
        "  --master HOST:PORT   master RPC address ($DANGO_STORE_MASTER); or\n"
        "                       etcd://HOST:PORT[,...] to follow elected "
        "masters\n"
        "  --segment-size SIZE  bytes contributed, e.g. 8g "
        "($DANGO_STORE_SEGMENT_SIZE;\n"
        "                       default: 1/4 of MemAvailable, 64 MiB..4 GiB)\n"
        "  --listen HOST:PORT   transfer engine address, port 0 = any "
        "($DANGO_XFER_LISTEN)\n"
        "  --metadata CONN      P2PHANDSHAKE or http://HOST:PORT/metadata "
        "($DANGO_XFER_METADATA)\n"
        "  --name NAME          segment name; default the listen address in "
        "P2P mode\n"
        "                       ($DANGO_XFER_SEGMENT_NAME)\n"
        "  --transports LIST    e.g. shm,tcp ($DANGO_XFER_TRANSPORTS)\n"
        "  --disk-path PATH     disk tier: a file or directory on local SSD\n"
        "                       ($DANGO_STORE_DISK_PATH)\n"
        "  --disk-size SIZE     bytes of the disk tier, e.g. 100g "
        "($DANGO_STORE_DISK_SIZE)\n"
        "  --config FILE        read NAME = value lines (default "
        "$DANGO_CONFIG_FILE)\n"
        "  -o NAME=VALUE        set any option (dango info --doc lists them)\n"
        "  --log SPEC           log levels, e.g. info ($DANGO_LOG)\n"
        "  -h, --help           print this help and exit\n"
        "  --version            print the version and exit\n"
        "\n"
        "Other options, as flags:\n");
    app_print_option_flags(stdout, "STORE", skip_store);
}

typedef struct node_args {
    const char *master, *listen, *metadata, *name, *transports;
    const char *segment_size;
} node_args_t;

/* The flags that are client parameters. */
static const app_param_t node_params[] = {
    {"--master", offsetof(node_args_t, master)},
    {"--listen", offsetof(node_args_t, listen)},
    {"--metadata", offsetof(node_args_t, metadata)},
    {"--name", offsetof(node_args_t, name)},
    {"--transports", offsetof(node_args_t, transports)},
    {"--segment-size", offsetof(node_args_t, segment_size)},
};

/* Parses argv. Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, dango_config_t *cfg,
                      node_args_t *na)
{
    static const char *const prefixes[] = {"STORE", "XFER", NULL};
    const char             **param;

    for (int i = 1; i < argc; i++) {
        int rc;

        param = app_param_find(node_params, DANGO_ARRAY_SIZE(node_params), na,
                               argv[i]);
        if (param != NULL) {
            if (app_flag_value(PROG, argc, argv, &i, 1, param) != 0) {
                return 2;
            }
            continue;
        }

        rc = app_daemon_arg(PROG, cfg, prefixes, argc, argv, &i, help, usage);
        if (rc >= 0) {
            return rc;
        }
    }

    return -1;
}

int main(int argc, char **argv)
{
    dango_store_params_t  p   = {0};
    node_args_t           na  = {0};
    dango_config_t       *cfg = NULL;
    dango_store_client_t *c;
    sigset_t              sigs;
    char                  master[256] = "", sz[32];
    int                   rc, sig;

    if (app_config_create(PROG, argc, argv, &cfg) != 0) {
        return 2;
    }

    rc = parse_args(argc, argv, cfg, &na);
    if ((rc < 0) &&
        (app_segment_size(PROG, cfg, na.segment_size, &p.segment_size) != 0)) {
        rc = 2;
    }

    if (rc >= 0) {
        dango_config_release(cfg);
        return rc;
    }

    p.field_mask =
        DANGO_STORE_PARAM_SEGMENT_SIZE | DANGO_STORE_PARAM_BUFFER_SIZE;
    p.local_buffer_size = 0;
    if (na.master != NULL) {
        p.field_mask |= DANGO_STORE_PARAM_MASTER;
        p.master_addr = na.master;
        snprintf(master, sizeof(master), "%s", na.master);
    } else {
        dango_config_get(cfg, "STORE_MASTER", master, sizeof(master));
    }
    if (na.listen != NULL) {
        p.field_mask |= DANGO_STORE_PARAM_LISTEN;
        p.listen_addr = na.listen;
    }
    if (na.metadata != NULL) {
        p.field_mask |= DANGO_STORE_PARAM_METADATA;
        p.metadata = na.metadata;
    }
    if (na.name != NULL) {
        p.field_mask |= DANGO_STORE_PARAM_LOCAL_NAME;
        p.local_name = na.name;
    }
    if (na.transports != NULL) {
        p.field_mask |= DANGO_STORE_PARAM_TRANSPORTS;
        p.transports = na.transports;
    }

    app_signals_block(&sigs);
    rc = dango_store_client_create(&p, cfg, &c);
    if (rc != 0) {
        fprintf(stderr, PROG ": cannot start a %s segment: %s (%s)\n",
                app_format_size(p.segment_size, sz, sizeof(sz)),
                dango_strerror(rc), dango_err_name(rc));
        dango_config_release(cfg);
        return 1;
    }

    printf(PROG " serving segment %s (%s), master %s\n",
           dango_store_client_name(c),
           app_format_size(p.segment_size, sz, sizeof(sz)), master);
    fflush(stdout);

    sig = app_signals_wait(&sigs);
    fprintf(stderr, PROG ": %s, unmounting %s\n", strsignal(sig),
            dango_store_client_name(c));
    dango_store_client_destroy(c);
    dango_config_release(cfg);
    return 0;
}
