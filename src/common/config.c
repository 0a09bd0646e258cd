/*
 * Configuration tables and their sources.
 *
 * Modules register tables of options at load time (a constructor per table).
 * A dango_config_t holds only overrides: the values set with
 * dango_config_set() and the lines of a config file. Effective values are
 * computed on demand by dango__config_parse(): set > environment
 * (DANGO_<PREFIX>_<NAME>) > file > default. When no object is given, the
 * file named by DANGO_CONFIG_FILE (read once per process) still applies.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <dango/error.h>
#include <dango/log.h>
#include "common/alloc.h"
#include "common/config_table.h"

#define CONFIG_NAME_MAX 128

typedef struct config_entry {
    char *name; /* full option name, upper case, without "DANGO_" */
    char *value;
} config_entry_t;

struct dango_config {
    config_entry_t *file_entries;
    size_t          num_file;
    config_entry_t *set_entries;
    size_t          num_set;
};

static dango_config_table_t *config_tables;
static pthread_mutex_t       config_lock     = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t        config_env_once = PTHREAD_ONCE_INIT;
static dango_config_t       *config_env_file; /* from DANGO_CONFIG_FILE */

/* ---------- value parsers ---------- */

int dango_parse_size(const char *s, size_t *out)
{
    char    *end;
    double   v;
    uint64_t mult = 1;
    char     unit[8];
    size_t   n = 0;

    if ((s == NULL) || (*s == '\0')) {
        return DANGO_EINVAL;
    }

    errno = 0;
    v     = strtod(s, &end);
    if ((errno != 0) || (end == s) || (v < 0) || isnan(v)) {
        return DANGO_EINVAL;
    }

    while (*end == ' ') {
        end++;
    }

    while ((*end != '\0') && (n < sizeof(unit) - 1)) {
        unit[n++] = (char)tolower((unsigned char)*end++);
    }

    unit[n] = '\0';
    if (*end != '\0') {
        return DANGO_EINVAL;
    }

    if ((n == 0) || !strcmp(unit, "b")) {
        mult = 1;
    } else if (!strcmp(unit, "k") || !strcmp(unit, "kb") ||
               !strcmp(unit, "kib")) {
        mult = 1ull << 10;
    } else if (!strcmp(unit, "m") || !strcmp(unit, "mb") ||
               !strcmp(unit, "mib")) {
        mult = 1ull << 20;
    } else if (!strcmp(unit, "g") || !strcmp(unit, "gb") ||
               !strcmp(unit, "gib")) {
        mult = 1ull << 30;
    } else if (!strcmp(unit, "t") || !strcmp(unit, "tb") ||
               !strcmp(unit, "tib")) {
        mult = 1ull << 40;
    } else {
        return DANGO_EINVAL;
    }

    if (v * (double)mult >= 18446744073709551615.0) {
        return DANGO_ERANGE;
    }

    *out = (size_t)(v * (double)mult);
    return 0;
}

int dango_parse_time_ns(const char *s, uint64_t *out)
{
    char  *end;
    double v;
    double mult;

    if ((s == NULL) || (*s == '\0')) {
        return DANGO_EINVAL;
    }

    errno = 0;
    v     = strtod(s, &end);
    if ((errno != 0) || (end == s) || (v < 0) || isnan(v)) {
        return DANGO_EINVAL;
    }

    while (*end == ' ') {
        end++;
    }

    if ((*end == '\0') || !strcasecmp(end, "s") || !strcasecmp(end, "sec")) {
        mult = 1e9;
    } else if (!strcasecmp(end, "ms")) {
        mult = 1e6;
    } else if (!strcasecmp(end, "us")) {
        mult = 1e3;
    } else if (!strcasecmp(end, "ns")) {
        mult = 1;
    } else if (!strcasecmp(end, "m") || !strcasecmp(end, "min")) {
        mult = 60e9;
    } else if (!strcasecmp(end, "h")) {
        mult = 3600e9;
    } else {
        return DANGO_EINVAL;
    }

    if (v * mult >= 18446744073709551615.0) {
        return DANGO_ERANGE;
    }

    *out = (uint64_t)(v * mult);
    return 0;
}

int dango_parse_bool(const char *s, int *out)
{
    static const char *yes[] = {"y", "yes", "true", "on", "1"};
    static const char *no[]  = {"n", "no", "false", "off", "0"};

    if (s == NULL) {
        return DANGO_EINVAL;
    }

    for (size_t i = 0; i < DANGO_ARRAY_SIZE(yes); i++) {
        if (!strcasecmp(s, yes[i])) {
            *out = 1;
            return 0;
        }

        if (!strcasecmp(s, no[i])) {
            *out = 0;
            return 0;
        }
    }

    return DANGO_EINVAL;
}

/* Parses @value as @field's type into the struct at @dst (NULL: check only). */
static int config_parse_value(const dango_config_field_t *field,
                              const char *value, void *dst)
{
    char         *end;
    void         *p = (dst == NULL) ? NULL : (char *)dst + field->offset;
    long          l;
    unsigned long ul;
    size_t        sz;
    uint64_t      t;
    int           b;
    double        d;
    int           rc;

    switch (field->type) {
    case DANGO_CFG_STRING:
        if (p != NULL) {
            char *copy = dango_strdup(value, "config_string");

            if (copy == NULL) {
                return DANGO_ENOMEM;
            }

            *(char **)p = copy;
        }
        return 0;
    case DANGO_CFG_INT:
        errno = 0;
        l     = strtol(value, &end, 0);
        if ((errno != 0) || (end == value) || (*end != '\0')) {
            return DANGO_ECONFIG;
        }
        if (p != NULL) {
            *(long *)p = l;
        }
        return 0;
    case DANGO_CFG_UINT:
        errno = 0;
        ul    = strtoul(value, &end, 0);
        if ((errno != 0) || (end == value) || (*end != '\0') ||
            (strchr(value, '-') != NULL)) {
            return DANGO_ECONFIG;
        }
        if (p != NULL) {
            *(unsigned long *)p = ul;
        }
        return 0;
    case DANGO_CFG_SIZE:
        rc = dango_parse_size(value, &sz);
        if (rc != 0) {
            return DANGO_ECONFIG;
        }
        if (p != NULL) {
            *(size_t *)p = sz;
        }
        return 0;
    case DANGO_CFG_TIME:
        rc = dango_parse_time_ns(value, &t);
        if (rc != 0) {
            return DANGO_ECONFIG;
        }
        if (p != NULL) {
            *(uint64_t *)p = t;
        }
        return 0;
    case DANGO_CFG_BOOL:
        rc = dango_parse_bool(value, &b);
        if (rc != 0) {
            return DANGO_ECONFIG;
        }
        if (p != NULL) {
            *(int *)p = b;
        }
        return 0;
    case DANGO_CFG_DOUBLE:
        errno = 0;
        d     = strtod(value, &end);
        if ((errno != 0) || (end == value) || (*end != '\0')) {
            return DANGO_ECONFIG;
        }
        if (p != NULL) {
            *(double *)p = d;
        }
        return 0;
    }

    return DANGO_ECONFIG;
}

/* ---------- registry and lookup ---------- */

void dango__config_table_register(dango_config_table_t *table)
{
    dango_config_table_t **pp;

    pthread_mutex_lock(&config_lock);
    /* Keep registration order stable (sorted by prefix) for printing. */
    for (pp = &config_tables; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == table) {
            pthread_mutex_unlock(&config_lock);
            return;
        }

        if (strcmp((*pp)->prefix, table->prefix) > 0) {
            break;
        }
    }

    table->next = *pp;
    *pp         = table;
    pthread_mutex_unlock(&config_lock);
}

/* Normalises @name into @out: upper case, without a "DANGO_" prefix. */
static int config_normalize(const char *name, char *out, size_t len)
{
    size_t n;

    if (strncasecmp(name, "DANGO_", 6) == 0) {
        name += 6;
    }

    n = strlen(name);
    if ((n == 0) || (n >= len)) {
        return DANGO_ENOENT;
    }

    for (size_t i = 0; i <= n; i++) {
        out[i] = (char)toupper((unsigned char)name[i]);
    }

    return 0;
}

/* Finds the field named @full ("XFER_SLICE_SIZE"). */
static const dango_config_field_t *
config_find(const char *full, const dango_config_table_t **table_p)
{
    for (dango_config_table_t *t = config_tables; t != NULL; t = t->next) {
        size_t plen = strlen(t->prefix);

        if ((strncmp(full, t->prefix, plen) != 0) || (full[plen] != '_')) {
            continue;
        }

        for (const dango_config_field_t *f = t->fields; f->name != NULL; f++) {
            if (strcmp(full + plen + 1, f->name) == 0) {
                if (table_p != NULL) {
                    *table_p = t;
                }

                return f;
            }
        }
    }

    return NULL;
}

static const char *config_entries_get(const config_entry_t *e, size_t n,
                                      const char *full)
{
    /* Later entries win: the last line of a file, the last set(). */
    for (size_t i = n; i > 0; i--) {
        if (strcmp(e[i - 1].name, full) == 0) {
            return e[i - 1].value;
        }
    }

    return NULL;
}

static int config_entries_add(config_entry_t **e, size_t *n, const char *full,
                              const char *value)
{
    config_entry_t *ne;
    char           *name, *val;

    name = dango_strdup(full, "config_name");
    val  = dango_strdup(value, "config_value");
    ne   = dango_realloc(*e, sizeof(**e) * (*n + 1), "config_entries");
    if ((name == NULL) || (val == NULL) || (ne == NULL)) {
        dango_free(name);
        dango_free(val);
        if (ne != NULL) {
            *e = ne;
        }

        return DANGO_ENOMEM;
    }

    *e           = ne;
    ne[*n].name  = name;
    ne[*n].value = val;
    (*n)++;
    return 0;
}

/*
 * Effective value of one field and where it came from. @buf receives the
 * environment variable name when needed.
 */
static const char *config_effective(const dango_config_t *cfg, const char *full,
                                    const char *dflt, const char **source_p)
{
    char                  env[CONFIG_NAME_MAX + 8];
    const char           *v;
    const dango_config_t *file_cfg = (cfg != NULL) ? cfg : config_env_file;

    if ((cfg != NULL) &&
        ((v = config_entries_get(cfg->set_entries, cfg->num_set, full)) !=
         NULL)) {
        *source_p = "set";
        return v;
    }

    snprintf(env, sizeof(env), "DANGO_%s", full);
    v = getenv(env);
    if (v != NULL) {
        *source_p = "env";
        return v;
    }

    if ((file_cfg != NULL) &&
        ((v = config_entries_get(file_cfg->file_entries, file_cfg->num_file,
                                 full)) != NULL)) {
        *source_p = "file";
        return v;
    }

    *source_p = "default";
    return dflt;
}

/* ---------- file reading ---------- */

static char *config_trim(char *s)
{
    char *e;

    while (isspace((unsigned char)*s)) {
        s++;
    }

    e = s + strlen(s);
    while ((e > s) && isspace((unsigned char)e[-1])) {
        *--e = '\0';
    }

    return s;
}

static int config_load_file(dango_config_t *cfg, const char *path)
{
    FILE *f = fopen(path, "r");
    char  line[1024];
    int   lineno = 0;
    int   rc     = 0;

    if (f == NULL) {
        dango_error("config file %s: %m", path);
        return DANGO_ENOENT;
    }

    while (fgets(line, sizeof(line), f) != NULL) {
        char                       *s, *eq, *key, *val, full[CONFIG_NAME_MAX];
        const dango_config_field_t *field;

        lineno++;
        if ((strchr(line, '\n') == NULL) && !feof(f)) {
            dango_error("config file %s line %d: longer than %zu bytes", path,
                        lineno, sizeof(line) - 2);
            rc = DANGO_ECONFIG;
            break;
        }

        s = config_trim(line);
        if ((*s == '\0') || (*s == '#') || (*s == ';')) {
            continue;
        }

        eq = strchr(s, '=');
        if (eq == NULL) {
            dango_error("config file %s line %d: expected NAME = value", path,
                        lineno);
            rc = DANGO_ECONFIG;
            break;
        }

        *eq = '\0';
        key = config_trim(s);
        val = config_trim(eq + 1);
        if ((config_normalize(key, full, sizeof(full)) != 0) ||
            ((field = config_find(full, NULL)) == NULL)) {
            dango_error("config file %s line %d: unknown option '%s'", path,
                        lineno, key);
            rc = DANGO_ECONFIG;
            break;
        }

        if (config_parse_value(field, val, NULL) != 0) {
            dango_error("config file %s line %d: invalid value '%s' for %s",
                        path, lineno, val, full);
            rc = DANGO_ECONFIG;
            break;
        }

        rc = config_entries_add(&cfg->file_entries, &cfg->num_file, full, val);
        if (rc != 0) {
            break;
        }
    }

    if ((rc == 0) && ferror(f)) {
        dango_error("config file %s: read error", path);
        rc = DANGO_ENOENT; /* e.g. a directory: opens, but cannot be read */
    }

    fclose(f);
    return rc;
}

static void config_env_file_once(void)
{
    const char     *path = getenv("DANGO_CONFIG_FILE");
    dango_config_t *cfg;

    if ((path == NULL) || (*path == '\0')) {
        return;
    }

    if (dango_config_read(path, &cfg) == 0) {
        config_env_file = cfg;
    } else {
        dango_warn("ignoring DANGO_CONFIG_FILE %s", path);
    }
}

/* ---------- public API ---------- */

int dango_config_read(const char *file, dango_config_t **cfg_p)
{
    dango_config_t *cfg;
    int             rc;

    if (cfg_p == NULL) {
        return DANGO_EINVAL;
    }

    if (file == NULL) {
        file = getenv("DANGO_CONFIG_FILE");
        if ((file != NULL) && (*file == '\0')) {
            file = NULL;
        }
    }

    cfg = dango_calloc(1, sizeof(*cfg), "config");
    if (cfg == NULL) {
        return DANGO_ENOMEM;
    }

    if (file != NULL) {
        rc = config_load_file(cfg, file);
        if (rc != 0) {
            dango_config_release(cfg);
            return rc;
        }
    }

    *cfg_p = cfg;
    return 0;
}

int dango_config_set(dango_config_t *cfg, const char *name, const char *value)
{
    char                        full[CONFIG_NAME_MAX];
    const dango_config_field_t *field;

    if ((cfg == NULL) || (name == NULL) || (value == NULL)) {
        return DANGO_EINVAL;
    }

    if ((config_normalize(name, full, sizeof(full)) != 0) ||
        ((field = config_find(full, NULL)) == NULL)) {
        return DANGO_ENOENT;
    }

    if (config_parse_value(field, value, NULL) != 0) {
        return DANGO_ECONFIG;
    }

    return config_entries_add(&cfg->set_entries, &cfg->num_set, full, value);
}

int dango_config_get(const dango_config_t *cfg, const char *name, char *buf,
                     size_t len)
{
    char                        full[CONFIG_NAME_MAX];
    const dango_config_field_t *field;
    const char                 *v, *src;

    if ((name == NULL) || (buf == NULL)) {
        return DANGO_EINVAL;
    }

    pthread_once(&config_env_once, config_env_file_once);
    if ((config_normalize(name, full, sizeof(full)) != 0) ||
        ((field = config_find(full, NULL)) == NULL)) {
        return DANGO_ENOENT;
    }

    v = config_effective(cfg, full, field->dflt, &src);
    if (strlen(v) >= len) {
        return DANGO_ERANGE;
    }

    strcpy(buf, v);
    return 0;
}

int dango__config_parse(const dango_config_t       *cfg,
                        const dango_config_table_t *table, void *dst)
{
    char full[CONFIG_NAME_MAX];
    int  rc;

    pthread_once(&config_env_once, config_env_file_once);
    for (const dango_config_field_t *f = table->fields; f->name != NULL; f++) {
        const char *src, *v;

        snprintf(full, sizeof(full), "%s_%s", table->prefix, f->name);
        v  = config_effective(cfg, full, f->dflt, &src);
        rc = config_parse_value(f, v, dst);
        if (rc == DANGO_ECONFIG) {
            dango_error("option %s: invalid value '%s' (from %s)", full, v,
                        src);
        }

        if (rc != 0) {
            /* Free the strings parsed so far: leave nothing to free. */
            for (const dango_config_field_t *g = table->fields; g != f; g++) {
                if (g->type == DANGO_CFG_STRING) {
                    char **sp = (char **)((char *)dst + g->offset);

                    dango_free(*sp);
                    *sp = NULL;
                }
            }

            return rc;
        }
    }

    return 0;
}

void dango__config_free(const dango_config_table_t *table, void *dst)
{
    for (const dango_config_field_t *f = table->fields; f->name != NULL; f++) {
        if (f->type == DANGO_CFG_STRING) {
            char **sp = (char **)((char *)dst + f->offset);

            dango_free(*sp);
            *sp = NULL;
        }
    }
}

int dango_config_print(const dango_config_t *cfg, FILE *stream, unsigned flags)
{
    char full[CONFIG_NAME_MAX];

    pthread_once(&config_env_once, config_env_file_once);
    for (dango_config_table_t *t = config_tables; t != NULL; t = t->next) {
        if (flags & DANGO_CONFIG_PRINT_HEADER) {
            fprintf(stream, "#\n# %s: %s\n#\n", t->prefix, t->doc);
        }

        for (const dango_config_field_t *f = t->fields; f->name != NULL; f++) {
            const char *src, *v;

            snprintf(full, sizeof(full), "%s_%s", t->prefix, f->name);
            v = config_effective(cfg, full, f->dflt, &src);
            if (flags & DANGO_CONFIG_PRINT_DOC) {
                fprintf(stream, "# %s\n# default: %s%s%s\n", f->doc, f->dflt,
                        strcmp(src, "default") ? "; from " : "",
                        strcmp(src, "default") ? src : "");
            }

            fprintf(stream, "DANGO_%s=%s\n", full, v);
            if (flags & DANGO_CONFIG_PRINT_DOC) {
                fprintf(stream, "\n");
            }
        }
    }

    return ferror(stream) ? DANGO_EIO : 0;
}

void dango_config_release(dango_config_t *cfg)
{
    if (cfg == NULL) {
        return;
    }

    for (size_t i = 0; i < cfg->num_file; i++) {
        dango_free(cfg->file_entries[i].name);
        dango_free(cfg->file_entries[i].value);
    }

    for (size_t i = 0; i < cfg->num_set; i++) {
        dango_free(cfg->set_entries[i].name);
        dango_free(cfg->set_entries[i].value);
    }

    dango_free(cfg->file_entries);
    dango_free(cfg->set_entries);
    dango_free(cfg);
}
