/*
 * dango: the command-line tool. Subcommands:
 *   dango serve [flags]                   master + one segment (cmd_serve.c)
 *   dango put KEY FILE|-, get KEY [FILE], ls [PREFIX], stat [KEY],
 *         rm KEY... | --regex RE | --all  the store from the shell (cmd_kv.c)
 *   dango replay cache|sim --trace FILE   trace replay (cmd_replay.c)
 *   dango info [-c|--config] [-d|--doc]   build, transports and options
 *   dango version
 * docs/cli.md describes every command and flag.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dango/dango.h>

#include "cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dango serve [--segment-size SIZE] [--listen HOST:PORT] "
            "...  (a whole store)\n"
            "       dango put KEY FILE|- [--replicas N] [--upsert] "
            "[--hard-pin]\n"
            "       dango get KEY [FILE]\n"
            "       dango ls [PREFIX]\n"
            "       dango stat [KEY]\n"
            "       dango rm KEY... [--force] | --regex REGEX | --all\n"
            "       dango replay cache|sim --trace FILE ...  (trace "
            "replay)\n"
            "       dango info [-c|--config] [-d|--doc]\n"
            "       dango version\n"
            "Store commands take --master HOST:PORT (default "
            "$DANGO_STORE_MASTER or\n"
            "127.0.0.1:50051). dango COMMAND --help: the command's flags.\n");
}

static int cmd_info(int argc, char **argv)
{
    const char *names[16];
    size_t      n;
    int         config = 0, doc = 0;

    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) {
            config = 1;
        } else if (!strcmp(argv[i], "-d") || !strcmp(argv[i], "--doc")) {
            config = doc = 1;
        } else {
            usage(stderr);
            return 2;
        }
    }

    if (config) {
        const char *log  = getenv("DANGO_LOG");
        const char *file = getenv("DANGO_CONFIG_FILE");

        /* Variables outside the option tables. */
        printf("#\n# general\n#\n");
        if (doc) {
            printf(
                "# per-component log levels, e.g. xfer=debug,tcp=trace,*=warn"
                "\n# default: warn\n");
        }

        printf("DANGO_LOG=%s\n", log ? log : "");
        if (doc) {
            printf("# file of NAME = value lines read at start-up\n");
        }

        printf("DANGO_CONFIG_FILE=%s\n", file ? file : "");
        if (doc) {
            printf("# shared secret peers must prove (HMAC-SHA256) before any "
                   "transfer\n");
        }

        printf("DANGO_CLUSTER_TOKEN=%s\n",
               getenv("DANGO_CLUSTER_TOKEN") ? "<set>" : "");
        /* Effective values: set > DANGO_* environment > file > default. */
        return dango_config_print(NULL, stdout,
                                  DANGO_CONFIG_PRINT_HEADER |
                                      (doc ? DANGO_CONFIG_PRINT_DOC : 0)) == 0
                   ? 0
                   : 1;
    }

    n = dango_transport_list(names, DANGO_ARRAY_SIZE(names));
    printf("dango %s\n", dango_version_string());
    printf("transports:");
    for (size_t i = 0; (i < n) && (i < DANGO_ARRAY_SIZE(names)); i++) {
        printf(" %s", names[i]);
    }

    printf("\nmetadata backends: http mem p2phandshake\n");
    printf("options: dango info --config (values), dango info --doc "
           "(with descriptions)\n");
    return 0;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int argc, char **argv);
    } cmds[] = {
        {"serve", cli_serve},   {"put", cli_put},   {"get", cli_get},
        {"ls", cli_ls},         {"stat", cli_stat}, {"rm", cli_rm},
        {"replay", cli_replay},
    };

    if (argc < 2) {
        usage(stderr);
        return 2;
    }

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(cmds); i++) {
        if (!strcmp(argv[1], cmds[i].name)) {
            return cmds[i].fn(argc - 1, argv + 1);
        }
    }

    if (!strcmp(argv[1], "info")) {
        return cmd_info(argc, argv);
    }

    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        printf("dango %s\n", dango_version_string());
        return 0;
    }

    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(stdout);
        return 0;
    }

    fprintf(stderr, "dango: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
