/*
 * dango-conductor: the KVCache-aware global scheduler as a service.
 *
 * A thin main around dango_conductor_server_create(): every flag is a
 * CONDUCTOR_* option ("--ttft-slo 10s" is CONDUCTOR_TTFT_SLO; see --help,
 * read from the option table itself), "--config FILE" loads a file of
 * NAME = value lines, "-o NAME=VALUE" sets any option. It prints one line
 *
 *   dango-conductor listening on http://HOST:PORT
 *
 * on stdout once the socket accepts connections (with port 0 the line
 * carries the port picked; scripts and tests wait for it) and runs until
 * SIGINT or SIGTERM, taken with sigwait() so shutdown runs in ordinary
 * code.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dango/dango.h>

#include "app_common.h"

#define PROG "dango-conductor"

static void usage(FILE *out)
{
    fprintf(out, "usage: " PROG " [--listen HOST:PORT] [--policy "
                 "random|load|local|global]\n"
                 "                       [--OPTION VALUE ...] [--config FILE] "
                 "[-o NAME=VALUE] [--log SPEC]\n");
}

static void help(void)
{
    usage(stdout);
    printf(
        "\n"
        "The conductor: registers prefill and decode instances, keeps a\n"
        "global index of the KV blocks each prefill instance holds (fed by\n"
        "KV events and by its own placements), and places each request\n"
        "with Algorithm 1 of the Mooncake paper, rejecting early (HTTP 429)\n"
        "what is predicted to miss its SLO. HTTP routes: POST /register,\n"
        "/deregister, /schedule, /complete, /kv_events; GET /instances,\n"
        "/metrics, /health (docs/design/conductor.md). Runs until SIGINT\n"
        "or SIGTERM.\n"
        "\n"
        "  --config FILE     read NAME = value lines (default "
        "$DANGO_CONFIG_FILE)\n"
        "  -o NAME=VALUE     set any option (dango info --doc lists them)\n"
        "  --log SPEC        log levels, e.g. info or conductor=debug "
        "($DANGO_LOG)\n"
        "  -h, --help        print this help and exit\n"
        "  --version         print the version and exit\n"
        "\n"
        "Options, as flags (a flag overrides $DANGO_<NAME>, which overrides "
        "the file):\n");
    app_print_option_flags(stdout, "CONDUCTOR", NULL);
}

/* Parses argv into @cfg. Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, dango_config_t *cfg)
{
    static const char *const prefixes[] = {"CONDUCTOR", NULL};

    for (int i = 1; i < argc; i++) {
        int rc =
            app_daemon_arg(PROG, cfg, prefixes, argc, argv, &i, help, usage);

        if (rc >= 0) {
            return rc;
        }
    }

    return -1;
}

int main(int argc, char **argv)
{
    dango_config_t           *cfg = NULL;
    dango_conductor_server_t *srv;
    sigset_t                  sigs;
    char                      listen[128] = "";
    int                       rc, sig;

    if (app_config_create(PROG, argc, argv, &cfg) != 0) {
        return 2;
    }

    rc = parse_args(argc, argv, cfg);
    if (rc >= 0) {
        dango_config_release(cfg);
        return rc;
    }

    app_signals_block(&sigs);
    rc = dango_conductor_server_create(cfg, NULL, NULL, &srv);
    if (rc != 0) {
        dango_config_get(cfg, "CONDUCTOR_LISTEN", listen, sizeof(listen));
        fprintf(stderr, PROG ": cannot start (listen %s): %s (%s)\n", listen,
                dango_strerror(rc), dango_err_name(rc));
        dango_config_release(cfg);
        return 1;
    }

    printf(PROG " listening on http://%s\n", dango_conductor_server_addr(srv));
    fflush(stdout);

    sig = app_signals_wait(&sigs);
    fprintf(stderr, PROG ": %s, stopping\n", strsignal(sig));
    dango_conductor_server_destroy(srv);
    dango_config_release(cfg);
    return 0;
}
