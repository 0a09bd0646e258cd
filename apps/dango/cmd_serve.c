/*
 * dango serve: a whole store in one process, for one machine or a first try.
 *
 * It starts the master (dango_store_master_create, with every MASTER_*
 * option as a flag, as on dango-master) and, next to it, a store client that
 * contributes one segment to it, like dango-node. Peers find the segment by
 * the P2P handshake (XFER_METADATA's default), so no metadata server is
 * needed; --metadata-listen also starts the master's embedded one and points
 * the segment at it. The segment takes --segment-size bytes, else
 * STORE_SEGMENT_SIZE when that is not 0, else a quarter of MemAvailable
 * clamped to [64 MiB, 4 GiB].
 *
 * Once the segment is mounted it prints one line
 *
 *   dango serve listening on HOST:PORT, admin http://HOST:PORT, segment
 *   NAME (SIZE)[, metadata URL]
 *
 * then a few commands to try, and runs until SIGINT or SIGTERM; it then
 * unmounts the segment, stops the master and exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dango/dango.h>
#include <dango/store.h>
#include <dango/store_master.h>

#include "app_common.h"
#include "cli.h"

#define PROG "dango serve"

/* How long to wait for the segment's mount before saying "ready" anyway. */
#define SERVE_MOUNT_WAIT_MS 10000

typedef struct serve_args {
    const char *segment_size, *node_listen, *name, *transports;
} serve_args_t;

static void serve_usage(FILE *out)
{
    fprintf(out, "usage: dango serve [--listen HOST:PORT] [--admin-listen "
                 "HOST:PORT]\n"
                 "                   [--metadata-listen HOST:PORT] "
                 "[--segment-size SIZE]\n"
                 "                   [--node-listen HOST:PORT] [--name NAME] "
                 "[--OPTION VALUE ...]\n"
                 "                   [--config FILE] [-o NAME=VALUE] [--log "
                 "SPEC]\n");
}

static void serve_help(void)
{
    serve_usage(stdout);
    printf(
        "\n"
        "A master and one segment of memory in one process: a complete "
        "store.\n"
        "Use it with dango put/get/ls/stat/rm; add memory with dango-node.\n"
        "\n"
        "  --listen HOST:PORT           master RPC ($DANGO_MASTER_LISTEN)\n"
        "  --admin-listen HOST:PORT     admin HTTP: /health /metrics "
        "/segments /keys\n"
        "                               ($DANGO_MASTER_ADMIN_LISTEN)\n"
        "  --metadata-listen HOST:PORT  also serve transfer metadata over "
        "HTTP\n"
        "                               ($DANGO_MASTER_METADATA_LISTEN; "
        "default: none, P2P)\n"
        "  --segment-size SIZE          memory contributed, e.g. 8g\n"
        "                               ($DANGO_STORE_SEGMENT_SIZE; default: "
        "1/4 of\n"
        "                               MemAvailable, 64 MiB..4 GiB)\n"
        "  --node-listen HOST:PORT      the segment's transfer engine, port 0 "
        "= any\n"
        "                               ($DANGO_XFER_LISTEN)\n"
        "  --name NAME                  segment name; default the node "
        "address\n"
        "                               ($DANGO_XFER_SEGMENT_NAME)\n"
        "  --transports LIST            e.g. shm,tcp ($DANGO_XFER_TRANSPORTS)\n"
        "  --config FILE                NAME = value lines "
        "($DANGO_CONFIG_FILE)\n"
        "  -o NAME=VALUE                set any option (dango info --doc)\n"
        "  --log SPEC                   log levels, e.g. info ($DANGO_LOG)\n"
        "\n"
        "Master options, as flags (STORE_* and XFER_* options are flags "
        "too):\n");
    app_print_option_flags(stdout, "MASTER", NULL);
}

/* The flags that are parameters of the local segment's client. */
static const app_param_t serve_params[] = {
    {"--segment-size", offsetof(serve_args_t, segment_size)},
    {"--node-listen", offsetof(serve_args_t, node_listen)},
    {"--name", offsetof(serve_args_t, name)},
    {"--transports", offsetof(serve_args_t, transports)},
};

/* Returns -1 to go on, else the exit status. */
static int serve_parse(int argc, char **argv, dango_config_t *cfg,
                       serve_args_t *sa)
{
    static const char *const prefixes[] = {"MASTER", "STORE", "XFER", NULL};
    const char             **param;

    for (int i = 1; i < argc; i++) {
        int rc;

        if ((param =
                 app_param_find(serve_params, DANGO_ARRAY_SIZE(serve_params),
                                sa, argv[i])) != NULL) {
            if (app_flag_value(PROG, argc, argv, &i, 1, param) != 0) {
                return 2;
            }
            continue;
        }

        rc = app_daemon_arg(PROG, cfg, prefixes, argc, argv, &i, serve_help,
                            serve_usage);
        if (rc >= 0) {
            return rc;
        }
    }

    return -1;
}

/*
 * The address a local client dials for a listen address: a wildcard host
 * (0.0.0.0, ::, empty) becomes loopback.
 */
static void dial_addr(const char *listen, char *buf, size_t len)
{
    const char *colon = strrchr(listen, ':');
    size_t      host  = (colon != NULL) ? (size_t)(colon - listen) : 0;

    if ((colon != NULL) &&
        ((host == 0) || !strncmp(listen, "0.0.0.0:", 8) ||
         !strncmp(listen, "[::]:", 5) || !strncmp(listen, "*:", 2))) {
        snprintf(buf, len, "%s%s",
                 !strncmp(listen, "[::]:", 5) ? "[::1]" : "127.0.0.1", colon);
    } else {
        snprintf(buf, len, "%s", listen);
    }
}

/* Waits until the master counts at least one segment; 0 or -1. */
static int serve_wait_mounted(dango_store_client_t *c)
{
    struct timespec ts = {0, 20 * 1000 * 1000};

    for (int waited = 0; waited < SERVE_MOUNT_WAIT_MS; waited += 20) {
        dango_store_pool_info_t info;

        memset(&info, 0, sizeof(info));
        if ((dango_store_pool_stat(c, &info) == 0) && (info.segments > 0)) {
            return 0;
        }
        nanosleep(&ts, NULL);
    }

    return -1;
}

/*
 * One suggested command, "  CMD   # COMMENT" with the comments in one
 * column; "%s" in @fmt is the dango program as it was started.
 */
static void serve_hint(const char *fmt, const char *comment)
{
    const char *prog = program_invocation_name;
    char        cmd[1024];
    int         width = 30 + (int)strlen(prog);

    snprintf(cmd, sizeof(cmd), fmt, prog);
    printf("  %-*s # %s\n", width, cmd, comment);
}

static void serve_print(const dango_config_t *cfg, dango_store_master_t *m,
                        dango_store_client_t *c, const char *dial,
                        uint64_t size)
{
    const char *admin     = dango_store_master_admin_addr(m);
    const char *md        = dango_store_master_metadata_url(m);
    char        dflt[256] = "", sz[32], ttl[64] = "", note[128];

    printf("dango serve listening on %s", dango_store_master_addr(m));
    if (admin != NULL) {
        printf(", admin http://%s", admin);
    }
    printf(", segment %s (%s)", dango_store_client_name(c),
           app_format_size(size, sz, sizeof(sz)));
    if (md != NULL) {
        printf(", metadata %s", md);
    }
    printf("\n\nTry, from another shell:\n");

    /* The commands find the master by STORE_MASTER (default or not). */
    if ((dango_config_get(NULL, "STORE_MASTER", dflt, sizeof(dflt)) != 0) ||
        (strcmp(dflt, dial) != 0)) {
        printf("  export DANGO_STORE_MASTER=%s\n", dial);
    }

    serve_hint("echo hello | %s put greeting -", "or: put KEY FILE");
    serve_hint("%s get greeting", "or: get KEY FILE");
    serve_hint("%s ls", "keys and sizes");
    serve_hint("%s stat greeting", "stat alone: the whole pool");
    dango_config_get(cfg, "MASTER_LEASE_TTL", ttl, sizeof(ttl));
    snprintf(note, sizeof(note), "once the get's read lease (%s) ends",
             (ttl[0] != '\0') ? ttl : "MASTER_LEASE_TTL");
    serve_hint("%s rm greeting", note);
    if (admin != NULL) {
        char a[256], cmd[300];

        dial_addr(admin, a, sizeof(a));
        snprintf(cmd, sizeof(cmd), "curl http://%s/metrics", a);
        printf("  %-*s # %s\n", 30 + (int)strlen(program_invocation_name), cmd,
               "also /health /segments /keys");
    }
    printf("More memory: dango-node --master %s. Stop with Ctrl-C.\n", dial);
    fflush(stdout);
}

int cli_serve(int argc, char **argv)
{
    dango_store_params_t  p   = {0};
    serve_args_t          sa  = {0};
    dango_config_t       *cfg = NULL;
    dango_store_master_t *m   = NULL;
    dango_store_client_t *c   = NULL;
    sigset_t              sigs;
    const char           *md;
    char                  dial[256], sz[32];
    int                   rc, sig;

    if (app_config_create(PROG, argc, argv, &cfg) != 0) {
        return 2;
    }

    rc = serve_parse(argc, argv, cfg, &sa);
    if ((rc < 0) &&
        (app_segment_size(PROG, cfg, sa.segment_size, &p.segment_size) != 0)) {
        rc = 2;
    }

    if (rc >= 0) {
        dango_config_release(cfg);
        return rc;
    }

    app_signals_block(&sigs);
    app_raise_nofile(PROG, APP_MASTER_NOFILE);
    rc = dango_store_master_create(cfg, &m);
    if (rc != 0) {
        char addrs[512];

        app_master_addrs(cfg, addrs, sizeof(addrs));
        fprintf(stderr, PROG ": cannot start the master (%s): %s (%s)\n", addrs,
                dango_strerror(rc), dango_err_name(rc));
        goto out;
    }

    dial_addr(dango_store_master_addr(m), dial, sizeof(dial));
    p.field_mask = DANGO_STORE_PARAM_SEGMENT_SIZE |
                   DANGO_STORE_PARAM_BUFFER_SIZE | DANGO_STORE_PARAM_MASTER;
    p.local_buffer_size = 0;
    p.master_addr       = dial;
    md                  = dango_store_master_metadata_url(m);
    if ((md != NULL) &&
        !strcmp(app_option_source(cfg, "XFER_METADATA"), "default")) {
        p.field_mask |= DANGO_STORE_PARAM_METADATA;
        p.metadata = md;
    }
    if (sa.node_listen != NULL) {
        p.field_mask |= DANGO_STORE_PARAM_LISTEN;
        p.listen_addr = sa.node_listen;
    }
    if (sa.name != NULL) {
        p.field_mask |= DANGO_STORE_PARAM_LOCAL_NAME;
        p.local_name = sa.name;
    }
    if (sa.transports != NULL) {
        p.field_mask |= DANGO_STORE_PARAM_TRANSPORTS;
        p.transports = sa.transports;
    }

    /* A large segment takes seconds to populate: say what is going on. */
    fprintf(stderr, PROG ": master on %s; allocating a %s segment\n",
            dango_store_master_addr(m),
            app_format_size(p.segment_size, sz, sizeof(sz)));
    rc = dango_store_client_create(&p, cfg, &c);
    if (rc != 0) {
        fprintf(stderr, PROG ": cannot start a %s segment: %s (%s)\n",
                app_format_size(p.segment_size, sz, sizeof(sz)),
                dango_strerror(rc), dango_err_name(rc));
        goto out;
    }

    if (serve_wait_mounted(c) != 0) {
        fprintf(stderr, PROG ": segment %s not mounted after %d s; going on\n",
                dango_store_client_name(c), SERVE_MOUNT_WAIT_MS / 1000);
    }

    serve_print(cfg, m, c, dial, p.segment_size);
    sig = app_signals_wait(&sigs);
    fprintf(stderr, PROG ": %s, stopping\n", strsignal(sig));

out:
    dango_store_client_destroy(c);
    dango_store_master_destroy(m);
    dango_config_release(cfg);
    return (rc == 0) ? 0 : 1;
}
