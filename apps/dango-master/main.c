/*
 * dango-master: the metadata service of a store.
 *
 * A thin main around dango_store_master_create(): every flag is a MASTER_*
 * option ("--lease-ttl 5s" is MASTER_LEASE_TTL; see --help for the list,
 * which is read from the option table itself), "--config FILE" loads a file
 * of NAME = value lines, "-o NAME=VALUE" sets any option. It prints one line
 *
 *   dango-master listening on HOST:PORT, admin http://HOST:PORT[, metadata
 *   URL]
 *
 * on stdout once every socket accepts connections (with port 0 the line
 * carries the port picked; scripts wait for it) and runs until SIGINT or
 * SIGTERM. Signals are blocked before the master's threads start and taken
 * with sigwait(), so shutdown runs in ordinary code.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dango/dango.h>
#include <dango/store_master.h>

#include "app_common.h"

#define PROG "dango-master"

static void usage(FILE *out)
{
    fprintf(out, "usage: " PROG " [--listen HOST:PORT] [--admin-listen "
                 "HOST:PORT]\n"
                 "                    [--metadata-listen HOST:PORT] [--OPTION "
                 "VALUE ...]\n"
                 "                    [--config FILE] [-o NAME=VALUE] [--log "
                 "SPEC]\n");
}

static void help(void)
{
    static const char *const prefixes[] = {"MASTER", NULL};

    usage(stdout);
    printf("\n"
           "The store master: object metadata, segments, leases, eviction.\n"
           "Serves the store RPCs, an admin HTTP port (/health, /metrics,\n"
           "/segments, /keys?prefix=, /key/<key>) and, when --metadata-listen\n"
           "is given, the HTTP metadata server of the transfer engines. Runs\n"
           "until SIGINT or SIGTERM.\n"
           "\n"
           "  --config FILE     read NAME = value lines (default "
           "$DANGO_CONFIG_FILE)\n"
           "  -o NAME=VALUE     set any option (dango info --doc lists them)\n"
           "  --log SPEC        log levels, e.g. info or master=debug,*=warn "
           "($DANGO_LOG)\n"
           "  -h, --help        print this help and exit\n"
           "  --version         print the version and exit\n"
           "\n"
           "Options, as flags (a flag overrides $DANGO_<NAME>, which overrides "
           "the file):\n");
    app_print_option_flags(stdout, prefixes[0], NULL);
}

/* Parses argv into @cfg. Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, dango_config_t *cfg)
{
    static const char *const prefixes[] = {"MASTER", NULL};

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
    dango_config_t       *cfg = NULL;
    dango_store_master_t *m;
    sigset_t              sigs;
    const char           *admin, *md;
    char                  addrs[512];
    int                   rc, sig;

    if (app_config_create(PROG, argc, argv, &cfg) != 0) {
        return 2;
    }

    rc = parse_args(argc, argv, cfg);
    if (rc >= 0) {
        dango_config_release(cfg);
        return rc;
    }

    app_signals_block(&sigs);
    app_raise_nofile(PROG, APP_MASTER_NOFILE);
    rc = dango_store_master_create(cfg, &m);
    if (rc != 0) {
        app_master_addrs(cfg, addrs, sizeof(addrs));
        fprintf(stderr, PROG ": cannot start (%s): %s (%s)\n", addrs,
                dango_strerror(rc), dango_err_name(rc));
        dango_config_release(cfg);
        return 1;
    }

    admin = dango_store_master_admin_addr(m);
    md    = dango_store_master_metadata_url(m);
    printf(PROG " listening on %s", dango_store_master_addr(m));
    if (admin != NULL) {
        printf(", admin http://%s", admin);
    }
    if (md != NULL) {
        printf(", metadata %s", md);
    }
    printf("\n");
    fflush(stdout);

    sig = app_signals_wait(&sigs);
    fprintf(stderr, PROG ": %s, stopping\n", strsignal(sig));
    dango_store_master_destroy(m);
    dango_config_release(cfg);
    return 0;
}
