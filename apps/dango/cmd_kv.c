/*
 * dango put | get | ls | stat | rm: the store from the shell.
 *
 * Each command is one short-lived pure client (no segment) of the master
 * named by --master (else STORE_MASTER): it connects, does one operation and
 * exits. Values travel whole: put reads the file or stdin into memory first,
 * get receives into memory the library allocates and then writes stdout, or
 * a temporary file next to FILE renamed over it, so FILE is never seen half
 * written.
 *
 * Errors are one line, "dango: WHAT: reason", with "(master ADDR)" added when
 * the master could not be reached; exit status 0 ok, 1 error, 2 usage. The
 * library logs only fatal records unless DANGO_LOG or --log asks for more:
 * its warnings are for daemons, the command's own line says what failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dango/dango.h>
#include <dango/store.h>

#include "app_common.h"
#include "cli.h"

#define PROG    "dango"
#define POS_MAX 4096

/* ---------- arguments ---------- */

enum cli_cmd {
    CMD_PUT  = 1u << 0,
    CMD_GET  = 1u << 1,
    CMD_LS   = 1u << 2,
    CMD_STAT = 1u << 3,
    CMD_RM   = 1u << 4,
    CMD_ALL  = 0x1f
};

typedef struct kv_args {
    unsigned    cmd;
    const char *pos[POS_MAX];
    int         npos;
    const char *master;
    unsigned    replicas;
    int         upsert, hard_pin, force, all;
    const char *regex;
    const char *prefer[DANGO_STORE_PREFERRED_MAX];
    unsigned    nprefer;
    char        master_buf[256]; /* effective master address, for messages */
} kv_args_t;

static const char *const kv_usage_lines[] = {
    "dango put KEY FILE|- [--replicas N] [--upsert] [--hard-pin] "
    "[--prefer SEGMENT]...",
    "dango get KEY [FILE|-]",
    "dango ls [PREFIX]",
    "dango stat [KEY]",
    "dango rm KEY... [--force] | --regex REGEX [--force] | --all [--force]",
};

static int kv_usage(const kv_args_t *a, FILE *out)
{
    for (unsigned i = 0; i < 5; i++) {
        if (a->cmd & (1u << i)) {
            fprintf(out, "usage: %s\n", kv_usage_lines[i]);
        }
    }

    fprintf(out, "common flags: --master HOST:PORT ($DANGO_STORE_MASTER, "
                 "default 127.0.0.1:50051;\n"
                 "              etcd://HOST:PORT[,...] follows elected "
                 "masters),\n"
                 "              --config FILE, -o NAME=VALUE, --log SPEC; "
                 "-- ends flags\n");
    return (out == stdout) ? 0 : 2;
}

/* Flags that take no value; the others take one. */
static int kv_flag_bool(const char *f)
{
    return !strcmp(f, "--upsert") || !strcmp(f, "--hard-pin") ||
           !strcmp(f, "--force") || !strcmp(f, "--all");
}

/*
 * Parses argv (argv[0] is the command). Returns -1 to go on, else the exit
 * status.
 */
static int kv_parse(kv_args_t *a, dango_config_t *cfg, int argc, char **argv)
{
    static const struct {
        const char *flag;
        unsigned    cmds;
    } flags[] = {
        {"--master", CMD_ALL},   {"--config", CMD_ALL}, {"--log", CMD_ALL},
        {"--replicas", CMD_PUT}, {"--upsert", CMD_PUT}, {"--hard-pin", CMD_PUT},
        {"--prefer", CMD_PUT},   {"--force", CMD_RM},   {"--regex", CMD_RM},
        {"--all", CMD_RM},
    };
    int flags_done = 0;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *v = NULL;
        char        name[32];
        size_t      len;
        unsigned    f;

        if (flags_done || (arg[0] != '-') || !strcmp(arg, "-")) {
            if (a->npos >= POS_MAX) {
                fprintf(stderr, PROG ": too many arguments\n");
                return 2;
            }
            a->pos[a->npos++] = arg;
            continue;
        }

        if (!strcmp(arg, "--")) {
            flags_done = 1;
            continue;
        }

        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            return kv_usage(a, stdout);
        }

        if (!strcmp(arg, "-o")) {
            if (i + 1 >= argc) {
                fprintf(stderr, PROG ": -o needs NAME=VALUE\n");
                return 2;
            }
            if (app_set_option(PROG, cfg, argv[++i]) != 0) {
                return 2;
            }
            continue;
        }

        len = strcspn(arg, "=");
        snprintf(name, sizeof(name), "%.*s", (int)len, arg);
        for (f = 0; f < sizeof(flags) / sizeof(flags[0]); f++) {
            if (!strcmp(name, flags[f].flag)) {
                break;
            }
        }

        if ((f == sizeof(flags) / sizeof(flags[0])) ||
            !(flags[f].cmds & a->cmd)) {
            fprintf(stderr, PROG " %s: unknown flag '%s'\n", argv[0], arg);
            return kv_usage(a, stderr);
        }

        if (kv_flag_bool(name)) {
            if (arg[len] == '=') {
                fprintf(stderr, PROG ": %s takes no value\n", name);
                return 2;
            }
        } else if (app_flag_value(PROG, argc, argv, &i, 1, &v) != 0) {
            return 2;
        }

        if (!strcmp(name, "--master")) {
            a->master = v;
        } else if (!strcmp(name, "--log")) {
            if (dango_log_configure(v) != 0) {
                fprintf(stderr, PROG ": bad log spec '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(name, "--replicas")) {
            char *end;
            long  n = strtol(v, &end, 10);

            if ((*end != '\0') || (n < 1) || (n > DANGO_STORE_REPLICA_MAX)) {
                fprintf(stderr, PROG ": --replicas takes 1..%d, not '%s'\n",
                        DANGO_STORE_REPLICA_MAX, v);
                return 2;
            }
            a->replicas = (unsigned)n;
        } else if (!strcmp(name, "--upsert")) {
            a->upsert = 1;
        } else if (!strcmp(name, "--hard-pin")) {
            a->hard_pin = 1;
        } else if (!strcmp(name, "--prefer")) {
            if (a->nprefer >= DANGO_STORE_PREFERRED_MAX) {
                fprintf(stderr, PROG ": at most %d --prefer\n",
                        DANGO_STORE_PREFERRED_MAX);
                return 2;
            }
            a->prefer[a->nprefer++] = v;
        } else if (!strcmp(name, "--force")) {
            a->force = 1;
        } else if (!strcmp(name, "--regex")) {
            a->regex = v;
        } else if (!strcmp(name, "--all")) {
            a->all = 1;
        }
        /* --config was read by app_config_create() */
    }

    return -1;
}

/* ---------- client ---------- */

/* Connection-type failures: the message names the master. */
static int kv_err_is_link(int rc)
{
    return (rc == DANGO_ECONNREFUSED) || (rc == DANGO_ETIMEDOUT) ||
           (rc == DANGO_EPEER_GONE) || (rc == DANGO_EHOSTUNREACH) ||
           (rc == DANGO_ENETUNREACH) || (rc == DANGO_ECONNRESET) ||
           (rc == DANGO_EAUTH);
}

static int kv_fail(const kv_args_t *a, const char *what, int rc)
{
    if (kv_err_is_link(rc)) {
        fprintf(stderr, PROG ": %s: %s (master %s)\n", what, dango_strerror(rc),
                a->master_buf);
    } else {
        app_error(PROG, what, rc);
    }

    return 1;
}

/*
 * A pure client: no segment and no staging buffer of its own (the library
 * registers large values for the call and bounces small ones).
 */
static int kv_connect(kv_args_t *a, dango_config_t *cfg,
                      dango_store_client_t **c_p)
{
    dango_store_params_t p = {0};
    int                  rc;

    p.field_mask =
        DANGO_STORE_PARAM_SEGMENT_SIZE | DANGO_STORE_PARAM_BUFFER_SIZE;
    p.segment_size      = 0;
    p.local_buffer_size = 0;
    if (a->master != NULL) {
        p.field_mask |= DANGO_STORE_PARAM_MASTER;
        p.master_addr = a->master;
        snprintf(a->master_buf, sizeof(a->master_buf), "%s", a->master);
    } else if (dango_config_get(cfg, "STORE_MASTER", a->master_buf,
                                sizeof(a->master_buf)) != 0) {
        snprintf(a->master_buf, sizeof(a->master_buf), "?");
    }

    rc = dango_store_client_create(&p, cfg, c_p);
    if (rc != 0) {
        return kv_fail(a, "cannot start a client", rc);
    }

    return 0;
}

/*
 * Common start of every command: log level, configuration, arguments.
 * Returns -1 to go on (then *cfg_p is set), else the exit status.
 */
static int kv_begin(kv_args_t *a, unsigned cmd, int argc, char **argv,
                    dango_config_t **cfg_p)
{
    int rc;

    memset(a, 0, sizeof(*a));
    a->cmd = cmd;
    if (getenv("DANGO_LOG") == NULL) {
        dango_log_configure("fatal");
    }

    if (app_config_create(PROG, argc, argv, cfg_p) != 0) {
        return 2;
    }

    rc = kv_parse(a, *cfg_p, argc, argv);
    if (rc >= 0) {
        dango_config_release(*cfg_p);
    }

    return rc;
}

/* ---------- put ---------- */

/* Reads all of @fd into a new buffer. Returns 0 or -errno. */
static int read_all(int fd, char **buf_p, size_t *len_p)
{
    struct stat st;
    size_t      cap = 1 << 20, len = 0;
    char       *buf, *nbuf;
    ssize_t     n;

    if ((fstat(fd, &st) == 0) && S_ISREG(st.st_mode) && (st.st_size > 0)) {
        cap = (size_t)st.st_size + 1; /* +1: see EOF without a regrow */
    }

    buf = malloc(cap);
    if (buf == NULL) {
        return -ENOMEM;
    }

    for (;;) {
        if (len == cap) {
            nbuf = realloc(buf, cap * 2);
            if (nbuf == NULL) {
                free(buf);
                return -ENOMEM;
            }
            buf = nbuf;
            cap *= 2;
        }

        n = read(fd, buf + len, cap - len);
        if (n == 0) {
            break;
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            n = -errno;
            free(buf);
            return (int)n;
        }
        len += (size_t)n;
    }

    *buf_p = buf;
    *len_p = len;
    return 0;
}

int cli_put(int argc, char **argv)
{
    dango_store_replicate_config_t rc_cfg = {0};
    dango_store_client_t          *c;
    dango_config_t                *cfg;
    kv_args_t                      a;
    const char                    *key, *file;
    char                          *buf = NULL;
    size_t                         len = 0;
    int                            fd, rc;

    rc = kv_begin(&a, CMD_PUT, argc, argv, &cfg);
    if (rc >= 0) {
        return rc;
    }

    if (a.npos != 2) {
        dango_config_release(cfg);
        fprintf(stderr, PROG " put: takes KEY and FILE (- for stdin)\n");
        return kv_usage(&a, stderr);
    }

    key  = a.pos[0];
    file = a.pos[1];
    fd   = !strcmp(file, "-") ? STDIN_FILENO : open(file, O_RDONLY | O_CLOEXEC);
    rc   = (fd < 0) ? -errno : read_all(fd, &buf, &len);
    if ((fd >= 0) && (fd != STDIN_FILENO)) {
        close(fd);
    }

    if (rc != 0) {
        fprintf(stderr, PROG ": %s: %s\n", !strcmp(file, "-") ? "stdin" : file,
                strerror(-rc));
        dango_config_release(cfg);
        return 1;
    }

    if (len == 0) {
        fprintf(stderr,
                PROG ": %s: empty value (the store keeps 1 byte or "
                     "more)\n",
                key);
        free(buf);
        dango_config_release(cfg);
        return 1;
    }

    if (kv_connect(&a, cfg, &c) != 0) {
        free(buf);
        dango_config_release(cfg);
        return 1;
    }

    rc_cfg.replica_num        = a.replicas;
    rc_cfg.with_hard_pin      = a.hard_pin;
    rc_cfg.preferred_segments = a.prefer;
    rc_cfg.preferred_count    = a.nprefer;
    rc = a.upsert ? dango_store_upsert(c, key, buf, len, &rc_cfg)
                  : dango_store_put(c, key, buf, len, &rc_cfg);
    if (rc == DANGO_EOBJ_EXISTS) {
        fprintf(stderr, PROG ": %s: %s (--upsert replaces it)\n", key,
                dango_strerror(rc));
    } else if (rc != 0) {
        kv_fail(&a, key, rc);
    }

    dango_store_client_destroy(c);
    free(buf);
    dango_config_release(cfg);
    return (rc == 0) ? 0 : 1;
}

/* ---------- get ---------- */

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        buf += n;
        len -= (size_t)n;
    }

    return 0;
}

/* Writes @path as a whole: a temporary file in its directory, renamed. */
static int write_file_atomic(const char *path, const char *buf, size_t len)
{
    char  *dup1 = strdup(path), *dup2 = strdup(path), *tmp = NULL;
    mode_t mask;
    int    fd = -1, rc;

    if ((dup1 == NULL) || (dup2 == NULL) ||
        (asprintf(&tmp, "%s/.%s.XXXXXX", dirname(dup1), basename(dup2)) < 0)) {
        tmp = NULL;
        rc  = -ENOMEM;
        goto out;
    }

    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }

    /* mkstemp makes 0600; give the file the mode open() would have. */
    mask = umask(0);
    umask(mask);
    rc = write_all(fd, buf, len);
    if ((rc == 0) && (fchmod(fd, 0666 & ~mask) != 0)) {
        rc = -errno;
    }
    if ((rc == 0) && (fsync(fd) != 0)) {
        rc = -errno;
    }
    if ((close(fd) != 0) && (rc == 0)) {
        rc = -errno;
    }
    if ((rc == 0) && (rename(tmp, path) != 0)) {
        rc = -errno;
    }
    if (rc != 0) {
        unlink(tmp);
    }

out:
    free(tmp);
    free(dup2);
    free(dup1);
    return rc;
}

int cli_get(int argc, char **argv)
{
    dango_store_client_t *c;
    dango_config_t       *cfg;
    kv_args_t             a;
    const char           *key, *file;
    void                 *value = NULL;
    size_t                len   = 0;
    int                   rc;

    rc = kv_begin(&a, CMD_GET, argc, argv, &cfg);
    if (rc >= 0) {
        return rc;
    }

    if ((a.npos < 1) || (a.npos > 2)) {
        dango_config_release(cfg);
        fprintf(stderr, PROG " get: takes KEY and an optional FILE\n");
        return kv_usage(&a, stderr);
    }

    key  = a.pos[0];
    file = (a.npos == 2) ? a.pos[1] : "-";
    if (kv_connect(&a, cfg, &c) != 0) {
        dango_config_release(cfg);
        return 1;
    }

    rc = dango_store_get_alloc(c, key, &value, &len);
    if (rc != 0) {
        kv_fail(&a, key, rc);
    } else if (!strcmp(file, "-")) {
        rc = write_all(STDOUT_FILENO, value, len);
        if (rc != 0) {
            fprintf(stderr, PROG ": stdout: %s\n", strerror(-rc));
        }
    } else {
        rc = write_file_atomic(file, value, len);
        if (rc != 0) {
            fprintf(stderr, PROG ": %s: %s\n", file, strerror(-rc));
        }
    }

    dango_store_free(value);
    dango_store_client_destroy(c);
    dango_config_release(cfg);
    return (rc == 0) ? 0 : 1;
}

/* ---------- ls ---------- */

static int ls_cb(void *arg, const char *key, uint64_t size)
{
    (void)arg;
    /* Stop at a closed pipe ("dango ls | head"). */
    return (printf("%s\t%llu\n", key, (unsigned long long)size) < 0) ? 1 : 0;
}

int cli_ls(int argc, char **argv)
{
    dango_store_client_t *c;
    dango_config_t       *cfg;
    kv_args_t             a;
    int                   rc;

    rc = kv_begin(&a, CMD_LS, argc, argv, &cfg);
    if (rc >= 0) {
        return rc;
    }

    if (a.npos > 1) {
        dango_config_release(cfg);
        fprintf(stderr, PROG " ls: takes at most one PREFIX\n");
        return kv_usage(&a, stderr);
    }

    if (kv_connect(&a, cfg, &c) != 0) {
        dango_config_release(cfg);
        return 1;
    }

    rc = dango_store_list(c, (a.npos == 1) ? a.pos[0] : "", ls_cb, NULL);
    if (rc < 0) {
        kv_fail(&a, "ls", rc);
    }

    if ((fflush(stdout) != 0) && (rc == 0)) {
        rc = 1;
    }

    dango_store_client_destroy(c);
    dango_config_release(cfg);
    return (rc == 0) ? 0 : 1;
}

/* ---------- stat ---------- */

static void print_ms(const char *label, uint64_t ms)
{
    if (ms == 0) {
        printf("%-10s none\n", label);
    } else {
        printf("%-10s %llu.%03llu s left\n", label,
               (unsigned long long)(ms / 1000),
               (unsigned long long)(ms % 1000));
    }
}

static int stat_key(kv_args_t *a, dango_store_client_t *c, const char *key)
{
    dango_store_object_info_t info;
    char                      sz[32];
    int                       rc;

    memset(&info, 0, sizeof(info));
    rc = dango_store_stat(c, key, &info);
    if (rc != 0) {
        return kv_fail(a, key, rc);
    }

    printf("%-10s %s\n", "key", key);
    printf("%-10s %llu (%s)\n", "size", (unsigned long long)info.size,
           app_format_size(info.size, sz, sizeof(sz)));
    printf("%-10s xxh3-64:%016llx\n", "checksum",
           (unsigned long long)info.checksum);
    print_ms("lease", info.lease_ms_left);
    printf("%-10s %s\n", "hard pin", info.hard_pinned ? "yes" : "no");
    print_ms("soft pin", info.soft_pin_ms_left);
    printf("%-10s %u\n", "replicas", info.num_replicas);
    if (info.on_disk) {
        printf("%-10s %s\n", "disk", "yes (a node's disk tier only)");
    }
    for (unsigned i = 0;
         (i < info.num_replicas) && (i < DANGO_STORE_REPLICA_MAX); i++) {
        printf("  %s 0x%llx %s\n", info.replicas[i].segment,
               (unsigned long long)info.replicas[i].addr,
               info.replicas[i].complete ? "complete" : "incomplete");
    }

    return 0;
}

static int stat_pool(kv_args_t *a, dango_store_client_t *c)
{
    dango_store_pool_info_t info;
    char                    sz[32];
    int                     rc;

    memset(&info, 0, sizeof(info));
    rc = dango_store_pool_stat(c, &info);
    if (rc != 0) {
        return kv_fail(a, "stat", rc);
    }

    printf("%-10s %s\n", "master", a->master_buf);
    printf("%-10s %llu (%s)\n", "capacity", (unsigned long long)info.capacity,
           app_format_size(info.capacity, sz, sizeof(sz)));
    printf("%-10s %llu (%s, %.1f%%)\n", "used", (unsigned long long)info.used,
           app_format_size(info.used, sz, sizeof(sz)),
           (info.capacity > 0)
               ? 100.0 * (double)info.used / (double)info.capacity
               : 0.0);
    printf("%-10s %llu\n", "keys", (unsigned long long)info.keys);
    printf("%-10s %llu\n", "segments", (unsigned long long)info.segments);
    printf("%-10s %llu\n", "clients", (unsigned long long)info.clients);
    printf("%-10s %llu\n", "evicted", (unsigned long long)info.evicted_keys);
    if ((info.disk_capacity > 0) || (info.disk_keys > 0)) {
        printf("%-10s %llu (%s)\n", "disk",
               (unsigned long long)info.disk_capacity,
               app_format_size(info.disk_capacity, sz, sizeof(sz)));
        printf("%-10s %llu (%s, %.1f%%)\n", "disk used",
               (unsigned long long)info.disk_used,
               app_format_size(info.disk_used, sz, sizeof(sz)),
               (info.disk_capacity > 0)
                   ? 100.0 * (double)info.disk_used / (double)info.disk_capacity
                   : 0.0);
        printf("%-10s %llu\n", "disk keys", (unsigned long long)info.disk_keys);
        printf("%-10s %llu\n", "offloads",
               (unsigned long long)info.disk_offloads);
        printf("%-10s %llu\n", "disk hits",
               (unsigned long long)info.disk_loads);
        printf("%-10s %llu\n", "promoted",
               (unsigned long long)info.disk_promotions);
    }
    return 0;
}

int cli_stat(int argc, char **argv)
{
    dango_store_client_t *c;
    dango_config_t       *cfg;
    kv_args_t             a;
    int                   rc;

    rc = kv_begin(&a, CMD_STAT, argc, argv, &cfg);
    if (rc >= 0) {
        return rc;
    }

    if (a.npos > 1) {
        dango_config_release(cfg);
        fprintf(stderr, PROG " stat: takes at most one KEY\n");
        return kv_usage(&a, stderr);
    }

    if (kv_connect(&a, cfg, &c) != 0) {
        dango_config_release(cfg);
        return 1;
    }

    rc = (a.npos == 1) ? stat_key(&a, c, a.pos[0]) : stat_pool(&a, c);
    dango_store_client_destroy(c);
    dango_config_release(cfg);
    return rc;
}

/* ---------- rm ---------- */

/* A leased object: say how long and how to remove it anyway. */
static int rm_fail(const kv_args_t *a, const char *key, int rc)
{
    if (rc != DANGO_ELEASE_HELD) {
        return kv_fail(a, key, rc);
    }

    fprintf(stderr,
            PROG ": %s: %s (a get leases it for MASTER_LEASE_TTL; --force "
                 "removes it now)\n",
            key, dango_strerror(rc));
    return 1;
}

static int rm_keys(kv_args_t *a, dango_store_client_t *c)
{
    static int results[POS_MAX];
    int        rc, failed = 0;

    if (a->npos == 1) {
        rc = dango_store_remove(c, a->pos[0], a->force);
        return (rc == 0) ? 0 : rm_fail(a, a->pos[0], rc);
    }

    rc =
        dango_store_batch_remove(c, (size_t)a->npos, a->pos, a->force, results);
    if (rc != 0) {
        return kv_fail(a, "rm", rc);
    }

    for (int i = 0; i < a->npos; i++) {
        if (results[i] != 0) {
            rm_fail(a, a->pos[i], results[i]);
            failed = 1;
        }
    }

    return failed;
}

int cli_rm(int argc, char **argv)
{
    dango_store_client_t *c;
    dango_config_t       *cfg;
    kv_args_t             a;
    int64_t               n;
    int                   rc, modes;

    rc = kv_begin(&a, CMD_RM, argc, argv, &cfg);
    if (rc >= 0) {
        return rc;
    }

    modes = (a.npos > 0) + (a.regex != NULL) + a.all;
    if (modes != 1) {
        dango_config_release(cfg);
        fprintf(stderr, PROG " rm: takes KEY..., --regex REGEX or --all\n");
        return kv_usage(&a, stderr);
    }

    if (kv_connect(&a, cfg, &c) != 0) {
        dango_config_release(cfg);
        return 1;
    }

    if (a.npos > 0) {
        rc = rm_keys(&a, c);
    } else {
        n = (a.regex != NULL) ? dango_store_remove_by_regex(c, a.regex, a.force)
                              : dango_store_remove_all(c, a.force);
        if (n < 0) {
            rc = kv_fail(&a, (a.regex != NULL) ? a.regex : "rm --all", (int)n);
        } else {
            printf("removed %lld\n", (long long)n);
            rc = 0;
        }
    }

    dango_store_client_destroy(c);
    dango_config_release(cfg);
    return rc;
}
