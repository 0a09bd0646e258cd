/*
 * Helpers shared by the programs under apps/ (see app_common.h).
 *
 * Option flags are generic: "--lease-ttl 5s" on dango-master is the option
 * MASTER_LEASE_TTL, so a new option in a module's table is a new flag with
 * no change here, and --help lists the table as it is. The only view the
 * public API gives of the tables is dango_config_print(), so the listing and
 * app_option_source() read its documented output ("# doc", "# default: D[;
 * from SOURCE]", "DANGO_NAME=VALUE" per option) from a memory stream.
 */
#define _GNU_SOURCE
#include "app_common.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <dango/error.h>
#include <dango/log.h>

#define APP_NAME_MAX 128

/* ---------- sizes ---------- */

int app_parse_size(const char *s, uint64_t *out)
{
    size_t v;

    if (dango_parse_size(s, &v) != 0) {
        return -1;
    }

    *out = v;
    return 0;
}

const char *app_format_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double                   v       = (double)bytes;
    unsigned                 u       = 0;

    while ((v >= 1024.0) && (u + 1 < sizeof(units) / sizeof(units[0]))) {
        v /= 1024.0;
        u++;
    }

    if (u == 0) {
        snprintf(buf, len, "%llu B", (unsigned long long)bytes);
    } else if (v == floor(v)) {
        snprintf(buf, len, "%.0f %s", v, units[u]);
    } else {
        snprintf(buf, len, "%.1f %s", v, units[u]);
    }

    return buf;
}

uint64_t app_auto_segment_size(void)
{
    unsigned long long kb = 0;
    char               line[256];
    FILE              *f = fopen("/proc/meminfo", "r");
    uint64_t           size;

    if (f == NULL) {
        return APP_SEGMENT_MIN;
    }

    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
            break;
        }
    }

    fclose(f);
    size = (uint64_t)kb * 1024 / 4;
    if (size > APP_SEGMENT_MAX) {
        size = APP_SEGMENT_MAX;
    }

    size &= ~((1ull << 20) - 1);
    return (size < APP_SEGMENT_MIN) ? APP_SEGMENT_MIN : size;
}

void app_raise_nofile(const char *prog, unsigned long want)
{
    struct rlimit rl;

    if ((getrlimit(RLIMIT_NOFILE, &rl) != 0) || (rl.rlim_cur >= want)) {
        return;
    }

    rl.rlim_cur = (rl.rlim_max < want) ? rl.rlim_max : want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        fprintf(stderr, "%s: cannot raise the open-file limit: %s\n", prog,
                strerror(errno));
    } else if (rl.rlim_cur < want) {
        fprintf(stderr,
                "%s: open files limited to %lu (hard limit): fewer client "
                "connections than %lu can be served\n",
                prog, (unsigned long)rl.rlim_cur, want);
    }
}

int app_segment_size(const char *prog, const dango_config_t *cfg,
                     const char *flag, uint64_t *size_p)
{
    const char *what = "--segment-size";
    char        v[64];

    if (flag == NULL) {
        what = "STORE_SEGMENT_SIZE";
        if ((dango_config_get(cfg, what, v, sizeof(v)) != 0) ||
            ((app_parse_size(v, size_p) == 0) && (*size_p == 0))) {
            *size_p = app_auto_segment_size();
            return 0;
        }
        flag = v;
    }

    if ((app_parse_size(flag, size_p) != 0) || (*size_p == 0)) {
        fprintf(stderr, "%s: %s: bad size '%s' (e.g. 512m, 4g)\n", prog, what,
                flag);
        return -1;
    }

    return 0;
}

/* ---------- the option tables, as dango_config_print() shows them ----------
 */

/* One option of the printed listing. Pointers are into the line buffers. */
typedef struct app_option_row {
    const char *name;   /* without DANGO_, e.g. MASTER_LEASE_TTL */
    const char *value;  /* effective value */
    const char *doc;    /* one line */
    const char *dflt;   /* default */
    const char *source; /* set, env, file or default */
} app_option_row_t;

typedef int (*app_option_row_cb)(void *arg, const app_option_row_t *row);

/*
 * Calls @cb for each option of the listing. The strings live only during the
 * call. Stops at the first non-zero return of @cb and returns it.
 */
static int app_options_walk(const dango_config_t *cfg, app_option_row_cb cb,
                            void *arg)
{
    char  *text = NULL, *line, *save = NULL;
    size_t size      = 0;
    char   doc[512]  = "";
    char   dflt[512] = "";
    char   src[32]   = "default";
    FILE  *f         = open_memstream(&text, &size);
    int    rc        = 0;

    if (f == NULL) {
        return 0;
    }

    dango_config_print(cfg, f, DANGO_CONFIG_PRINT_DOC);
    fclose(f);
    for (line = strtok_r(text, "\n", &save); (line != NULL) && (rc == 0);
         line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "# default: ", 11)) {
            char *from = strstr(line + 11, "; from ");

            snprintf(src, sizeof(src), "%s",
                     (from != NULL) ? from + 7 : "default");
            if (from != NULL) {
                *from = '\0';
            }
            snprintf(dflt, sizeof(dflt), "%s", line + 11);
        } else if (!strncmp(line, "# ", 2)) {
            snprintf(doc, sizeof(doc), "%s", line + 2);
        } else if (!strncmp(line, "DANGO_", 6)) {
            char            *eq  = strchr(line, '=');
            app_option_row_t row = {line + 6, "", doc, dflt, src};

            if (eq != NULL) {
                *eq       = '\0';
                row.value = eq + 1;
            }

            rc     = cb(arg, &row);
            doc[0] = dflt[0] = '\0';
            snprintf(src, sizeof(src), "default");
        }
    }

    free(text);
    return rc;
}

typedef struct app_source_arg {
    const char *name;
    char        source[32];
} app_source_arg_t;

static int app_source_cb(void *arg, const app_option_row_t *row)
{
    app_source_arg_t *a = arg;

    if (strcasecmp(row->name, a->name) != 0) {
        return 0;
    }

    snprintf(a->source, sizeof(a->source), "%s", row->source);
    return 1;
}

const char *app_option_source(const dango_config_t *cfg, const char *name)
{
    static const char *const sources[] = {"set", "env", "file"};
    app_source_arg_t         a         = {name, "default"};

    app_options_walk(cfg, app_source_cb, &a);
    for (size_t i = 0; i < sizeof(sources) / sizeof(sources[0]); i++) {
        if (!strcmp(a.source, sources[i])) {
            return sources[i];
        }
    }

    return "default";
}

typedef struct app_print_arg {
    FILE              *out;
    const char        *prefix;
    const char *const *skip;
} app_print_arg_t;

static int app_print_cb(void *arg, const app_option_row_t *row)
{
    app_print_arg_t *a   = arg;
    size_t           len = strlen(a->prefix);
    char             flag[APP_NAME_MAX];
    size_t           n = 0;

    if (strncmp(row->name, a->prefix, len) || (row->name[len] != '_')) {
        return 0;
    }

    for (const char *const *s = a->skip; (s != NULL) && (*s != NULL); s++) {
        if (!strcmp(row->name + len + 1, *s)) {
            return 0;
        }
    }

    for (const char *p = row->name + len + 1;
         (*p != '\0') && (n < sizeof(flag) - 1); p++) {
        flag[n++] = (*p == '_') ? '-' : (char)tolower((unsigned char)*p);
    }

    flag[n] = '\0';
    fprintf(a->out, "  --%s VALUE\n        %s (default: %s; $DANGO_%s)\n", flag,
            row->doc, (row->dflt[0] != '\0') ? row->dflt : "empty", row->name);
    return 0;
}

void app_print_option_flags(FILE *out, const char *prefix,
                            const char *const *skip)
{
    app_print_arg_t a = {out, prefix, skip};

    app_options_walk(NULL, app_print_cb, &a);
}

/* ---------- flags ---------- */

int app_flag_value(const char *prog, int argc, char **argv, int *i,
                   int required, const char **value_p)
{
    const char *eq = strchr(argv[*i], '=');

    if (eq != NULL) {
        *value_p = eq + 1;
        return 0;
    }

    /* An optional value is not taken from a following "--flag". */
    if ((*i + 1 < argc) && (required || strncmp(argv[*i + 1], "--", 2))) {
        *value_p = argv[++*i];
        return 0;
    }

    if (required) {
        fprintf(stderr, "%s: %s needs a value\n", prog, argv[*i]);
        return -1;
    }

    *value_p = "yes";
    return 0;
}

/* "--foo-bar[=V]" -> "FOO_BAR"; -1 if it is not of that shape. */
static int app_flag_name(const char *flag, char *name, size_t len)
{
    size_t n = 0;

    if (strncmp(flag, "--", 2) || (flag[2] == '\0') || (flag[2] == '=')) {
        return -1;
    }

    for (const char *p = flag + 2; (*p != '\0') && (*p != '='); p++) {
        if (!isalnum((unsigned char)*p) && (*p != '-') && (*p != '_')) {
            return -1;
        }

        if (n + 1 >= len) {
            return -1;
        }

        name[n++] = (*p == '-') ? '_' : (char)toupper((unsigned char)*p);
    }

    name[n] = '\0';
    return 0;
}

int app_flag_option(const char *prog, dango_config_t *cfg,
                    const char *const *prefixes, int argc, char **argv, int *i)
{
    char        name[APP_NAME_MAX], full[APP_NAME_MAX + 32], probe[8];
    const char *value;
    int         j = *i;
    int         rc;

    if (app_flag_name(argv[*i], name, sizeof(name)) != 0) {
        return 1;
    }

    for (const char *const *p = prefixes; *p != NULL; p++) {
        snprintf(full, sizeof(full), "%s_%s", *p, name);
        rc = dango_config_get(NULL, full, probe, sizeof(probe));
        if (rc == DANGO_ENOENT) {
            continue;
        }

        if (app_flag_value(prog, argc, argv, &j, 0, &value) != 0) {
            return -1;
        }

        rc = dango_config_set(cfg, full, value);
        if ((rc != 0) && (j == *i) && (strchr(argv[*i], '=') == NULL)) {
            /* No value given, and the option is not a boolean. */
            fprintf(stderr, "%s: %s needs a value (%s)\n", prog, argv[*i],
                    full);
            return -1;
        }

        if (rc != 0) {
            fprintf(stderr, "%s: %s: bad value '%s' for %s: %s\n", prog,
                    argv[*i], value, full, dango_strerror(rc));
            return -1;
        }

        *i = j;
        return 0;
    }

    return 1;
}

int app_set_option(const char *prog, dango_config_t *cfg, const char *assign)
{
    char        name[APP_NAME_MAX];
    const char *eq = strchr(assign, '=');
    int         rc;

    if ((eq == NULL) || (eq == assign) ||
        ((size_t)(eq - assign) >= sizeof(name))) {
        fprintf(stderr, "%s: -o takes NAME=VALUE, not '%s'\n", prog, assign);
        return -1;
    }

    memcpy(name, assign, (size_t)(eq - assign));
    name[eq - assign] = '\0';
    rc                = dango_config_set(cfg, name, eq + 1);
    if (rc == DANGO_ENOENT) {
        fprintf(stderr, "%s: unknown option %s (see dango info --doc)\n", prog,
                name);
        return -1;
    }

    if (rc != 0) {
        fprintf(stderr, "%s: bad value '%s' for %s: %s\n", prog, eq + 1, name,
                dango_strerror(rc));
        return -1;
    }

    return 0;
}

int app_config_create(const char *prog, int argc, char **argv,
                      dango_config_t **cfg_p)
{
    const char *file = NULL;
    int         rc;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            break;
        }

        if (!strcmp(argv[i], "--config") || !strncmp(argv[i], "--config=", 9)) {
            if (app_flag_value(prog, argc, argv, &i, 1, &file) != 0) {
                return -1;
            }
        }
    }

    rc = dango_config_read(file, cfg_p);
    if (rc != 0) {
        if (file == NULL) {
            file = getenv("DANGO_CONFIG_FILE");
        }

        fprintf(stderr, "%s: config file %s: %s\n", prog,
                (file != NULL) ? file : "(none)", dango_strerror(rc));
        return -1;
    }

    return 0;
}

/* ---------- signals and errors ---------- */

void app_signals_block(sigset_t *set)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, set, NULL);
}

int app_signals_wait(const sigset_t *set)
{
    int sig;

    do {
        if (sigwait(set, &sig) != 0) {
            return SIGTERM;
        }
    } while (sig == SIGHUP);

    return sig;
}

void app_bad_arg(const char *prog, const char *arg, const char *help)
{
    fprintf(stderr, "%s: %s '%s' (%s lists the flags)\n", prog,
            (arg[0] == '-') ? "unknown flag" : "unexpected argument", arg,
            help);
}

void app_master_addrs(const dango_config_t *cfg, char *buf, size_t len)
{
    char listen[128] = "", admin[128] = "", md[128] = "";

    dango_config_get(cfg, "MASTER_LISTEN", listen, sizeof(listen));
    dango_config_get(cfg, "MASTER_ADMIN_LISTEN", admin, sizeof(admin));
    dango_config_get(cfg, "MASTER_METADATA_LISTEN", md, sizeof(md));
    snprintf(buf, len, "listen %s, admin %s%s%s", listen,
             (admin[0] != '\0') ? admin : "off",
             (md[0] != '\0') ? ", metadata " : "", md);
}

void app_error(const char *prog, const char *what, int rc)
{
    fprintf(stderr, "%s: %s: %s\n", prog, what, dango_strerror(rc));
}

const char **app_param_find(const app_param_t *params, size_t n, void *args,
                            const char *a)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(params[i].flag);

        if (!strncmp(a, params[i].flag, len) &&
            ((a[len] == '\0') || (a[len] == '='))) {
            return (const char **)((char *)args + params[i].offset);
        }
    }

    return NULL;
}

int app_common_flag(const char *prog, dango_config_t *cfg, int argc,
                    char **argv, int *i)
{
    const char *a = argv[*i];
    const char *v;

    if (!strcmp(a, "--config") || !strncmp(a, "--config=", 9)) {
        /* the file itself is read by app_config_create() */
        return (app_flag_value(prog, argc, argv, i, 1, &v) != 0) ? -1 : 0;
    }

    if (!strcmp(a, "-o")) {
        if (*i + 1 >= argc) {
            fprintf(stderr, "%s: -o needs NAME=VALUE\n", prog);
            return -1;
        }

        *i += 1;
        return (app_set_option(prog, cfg, argv[*i]) != 0) ? -1 : 0;
    }

    if (!strcmp(a, "--log") || !strncmp(a, "--log=", 6)) {
        if (app_flag_value(prog, argc, argv, i, 1, &v) != 0) {
            return -1;
        }

        if (dango_log_configure(v) != 0) {
            fprintf(stderr, "%s: bad log spec '%s'\n", prog, v);
            return -1;
        }

        return 0;
    }

    return 1;
}

int app_daemon_arg(const char *prog, dango_config_t *cfg,
                   const char *const *prefixes, int argc, char **argv, int *i,
                   void (*help)(void), void (*usage)(FILE *))
{
    const char *a = argv[*i];
    char        hint[96];
    int         rc;

    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
        help();
        return 0;
    }

    if (!strcmp(a, "--version")) {
        printf("%s %s\n", prog, dango_version_string());
        return 0;
    }

    rc = app_common_flag(prog, cfg, argc, argv, i);
    if (rc <= 0) {
        return (rc < 0) ? 2 : -1;
    }

    rc = app_flag_option(prog, cfg, prefixes, argc, argv, i);
    if (rc < 0) {
        return 2;
    }

    if (rc > 0) {
        snprintf(hint, sizeof(hint), "%s --help", prog);
        app_bad_arg(prog, a, hint);
        usage(stderr);
        return 2;
    }

    return -1;
}
