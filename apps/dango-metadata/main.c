/*
 * dango-metadata: a standalone metadata HTTP server.
 *
 * A thin main around dango_md_server_start(): it parses the listen address
 * (--listen, else DANGO_METADATA_LISTEN, else 0.0.0.0:8080), starts the
 * server, prints exactly one line "dango-metadata listening on HOST:PORT"
 * on stdout once the socket accepts connections (scripts wait for it, and
 * with port 0 it carries the port picked), and runs until SIGINT or SIGTERM.
 *
 * Signals are blocked in every thread before the server starts (its threads
 * inherit the mask) and taken synchronously with sigwait(), so shutdown runs
 * in ordinary code instead of a signal handler.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dango/error.h>
#include <dango/metadata.h>

#define DEFAULT_LISTEN "0.0.0.0:8080"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: dango-metadata [--listen HOST:PORT] [--help]\n"
            "\n"
            "Serves the Dango metadata HTTP protocol:\n"
            "  GET|PUT|DELETE /metadata?key=K, GET /metadata?prefix=P, "
            "GET /health\n"
            "\n"
            "  -l, --listen HOST:PORT  address to listen on (port 0: any "
            "free port);\n"
            "                          default $DANGO_METADATA_LISTEN, "
            "else %s\n"
            "  -h, --help              print this help and exit\n",
            DEFAULT_LISTEN);
}

/* Prints @addr with its port replaced by the one actually bound. */
static void print_ready(const char *addr, int port)
{
    const char *colon = strrchr(addr, ':');
    int         host_len;

    host_len = (colon != NULL) ? (int)(colon - addr) : (int)strlen(addr);
    printf("dango-metadata listening on %.*s:%d\n", host_len, addr, port);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char        *addr = getenv("DANGO_METADATA_LISTEN");
    dango_md_server_t *srv;
    sigset_t           sigs;
    int                sig;
    int                opt;
    int                rc;

    while ((opt = getopt_long(argc, argv, "l:h", long_opts, NULL)) != -1) {
        switch (opt) {
        case 'l':
            addr = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }

    if (optind < argc) {
        fprintf(stderr, "dango-metadata: unexpected argument '%s'\n",
                argv[optind]);
        usage(stderr);
        return 2;
    }

    if ((addr == NULL) || (addr[0] == '\0')) {
        addr = DEFAULT_LISTEN;
    }

    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    rc = dango_md_server_start(addr, &srv);
    if (rc != 0) {
        fprintf(stderr, "dango-metadata: cannot listen on %s: %s (%s)\n", addr,
                dango_strerror(rc), dango_err_name(rc));
        return 1;
    }

    print_ready(addr, dango_md_server_port(srv));

    do {
        if (sigwait(&sigs, &sig) != 0) {
            sig = SIGTERM;
        }
    } while (sig == SIGHUP); /* no config to reload; keep serving */

    dango_md_server_stop(srv);
    return 0;
}
