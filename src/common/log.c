/*
 * Logging. Each component (xfer, tcp, shm, md, ...) has its own level,
 * resolved on first use from DANGO_LOG ("xfer=debug,tcp=trace,*=warn", or a
 * bare level for every component). Resolved components are remembered so
 * dango_log_configure() can change them later. The default sink writes one
 * line to stderr; the library never writes to stdout.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <dango/error.h>
#include <dango/log.h>
#include "common/log_limit.h"
#include "common/time.h"

#define LOG_MAX_OVERRIDES  32
#define LOG_MAX_COMPONENTS 64
#define LOG_NAME_MAX       32

DANGO_LOG_COMPONENT_DEFINE(dango__log_default, "dango");

typedef struct log_override {
    char name[LOG_NAME_MAX];
    int  level;
} log_override_t;

static pthread_mutex_t        log_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t         log_once = PTHREAD_ONCE_INIT;
static log_override_t         log_overrides[LOG_MAX_OVERRIDES];
static int                    log_num_overrides;
static int                    log_default_level = DANGO_LOG_WARN;
static dango_log_component_t *log_components[LOG_MAX_COMPONENTS];
static int                    log_num_components;
static dango_log_handler_cb   log_handler;
static void                  *log_handler_arg;
static int                    log_default_disabled;

static const char *log_level_names[] = {"fatal", "error", "warn", "info",
                                        "debug", "trace", "data"};

const char *dango_log_level_name(int level)
{
    if ((level < 0) || (level >= (int)DANGO_ARRAY_SIZE(log_level_names))) {
        return "unknown";
    }

    return log_level_names[level];
}

int dango_log_level_parse(const char *name)
{
    for (int i = 0; i < (int)DANGO_ARRAY_SIZE(log_level_names); i++) {
        if (strcasecmp(name, log_level_names[i]) == 0) {
            return i;
        }
    }

    if (strcasecmp(name, "warning") == 0) {
        return DANGO_LOG_WARN;
    }

    return DANGO_EINVAL;
}

/* Level for a component name under the current overrides; lock held. */
static int log_lookup_level(const char *name)
{
    for (int i = 0; i < log_num_overrides; i++) {
        if (strcmp(log_overrides[i].name, name) == 0) {
            return log_overrides[i].level;
        }
    }

    return log_default_level;
}

/*
 * Parses @spec into fresh overrides. Nothing is changed unless the whole spec
 * is valid. Lock held.
 */
static int log_apply_spec(const char *spec)
{
    log_override_t ovr[LOG_MAX_OVERRIDES];
    int            n    = 0;
    int            dflt = log_default_level;
    char           buf[512];
    char          *save = NULL, *tok;

    if (strlen(spec) >= sizeof(buf)) {
        return DANGO_EINVAL;
    }

    strcpy(buf, spec);
    for (tok = strtok_r(buf, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        int   level;

        while (*tok == ' ') {
            tok++;
        }

        if (eq == NULL) {
            level = dango_log_level_parse(tok);
            if (level < 0) {
                return DANGO_EINVAL;
            }

            dflt = level;
            continue;
        }

        *eq   = '\0';
        level = dango_log_level_parse(eq + 1);
        if ((level < 0) || (strlen(tok) >= LOG_NAME_MAX) || (tok[0] == '\0')) {
            return DANGO_EINVAL;
        }

        if (strcmp(tok, "*") == 0) {
            dflt = level;
        } else if (n < LOG_MAX_OVERRIDES) {
            strcpy(ovr[n].name, tok);
            ovr[n].level = level;
            n++;
        }
    }

    memcpy(log_overrides, ovr, sizeof(ovr[0]) * (size_t)n);
    log_num_overrides = n;
    log_default_level = dflt;
    for (int i = 0; i < log_num_components; i++) {
        __atomic_store_n(&log_components[i]->level,
                         log_lookup_level(log_components[i]->name),
                         __ATOMIC_RELAXED);
    }

    return 0;
}

static void log_init_once(void)
{
    const char *spec = getenv("DANGO_LOG");

    if ((spec != NULL) && (log_apply_spec(spec) != 0)) {
        fprintf(stderr, "dango: ignoring malformed DANGO_LOG '%s'\n", spec);
    }
}

int dango__log_component_level(dango_log_component_t *comp)
{
    int level;

    pthread_once(&log_once, log_init_once);
    pthread_mutex_lock(&log_lock);
    level = comp->level;
    if (level < 0) {
        level = log_lookup_level(comp->name);
        if (log_num_components < LOG_MAX_COMPONENTS) {
            log_components[log_num_components++] = comp;
        }

        __atomic_store_n(&comp->level, level, __ATOMIC_RELAXED);
    }

    pthread_mutex_unlock(&log_lock);
    return level;
}

int dango_log_configure(const char *spec)
{
    int rc;

    if (spec == NULL) {
        return DANGO_EINVAL;
    }

    pthread_once(&log_once, log_init_once);
    pthread_mutex_lock(&log_lock);
    rc = log_apply_spec(spec);
    pthread_mutex_unlock(&log_lock);
    return rc;
}

void dango_log_set_handler(dango_log_handler_cb cb, void *arg)
{
    pthread_mutex_lock(&log_lock);
    log_handler     = cb;
    log_handler_arg = arg;
    pthread_mutex_unlock(&log_lock);
}

void dango_log_disable_default(int disabled)
{
    __atomic_store_n(&log_default_disabled, disabled, __ATOMIC_RELAXED);
}

static void log_default_sink(const dango_log_record_t *rec)
{
    struct timespec ts;
    struct tm       tm;
    const char     *file = strrchr(rec->file, '/');

    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    /* One fprintf per record: stdio locks the stream, lines do not mix. */
    fprintf(stderr,
            "[%02d:%02d:%02d.%06ld] %5s %-5s %s:%d %s(): %s [pid %d tid %ld]\n",
            tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000, rec->component,
            dango_log_level_name(rec->level), file ? file + 1 : rec->file,
            rec->line, rec->func, rec->message, (int)getpid(),
            (long)syscall(SYS_gettid));
}

void dango__log_emit(dango_log_component_t *comp, dango_log_level_t level,
                     const char *file, int line, const char *func,
                     const char *fmt, ...)
{
    char                 msg[1024];
    va_list              ap;
    dango_log_record_t   rec;
    dango_log_handler_cb cb;
    void                *arg;
    int                  saved_errno = errno; /* keep %m and callers intact */

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    rec.level     = level;
    rec.component = comp->name;
    rec.file      = file;
    rec.line      = line;
    rec.func      = func;
    rec.message   = msg;

    pthread_mutex_lock(&log_lock);
    cb  = log_handler;
    arg = log_handler_arg;
    pthread_mutex_unlock(&log_lock);

    if (cb != NULL) {
        cb(&rec, arg);
    } else if (!__atomic_load_n(&log_default_disabled, __ATOMIC_RELAXED)) {
        log_default_sink(&rec);
    }

    errno = saved_errno;
}

int dango__log_limit_allow(dango_log_limit_t *lim, unsigned *dropped_p)
{
    uint64_t sec = dango_time_ns() / DANGO_NSEC_PER_SEC;
    uint64_t cur = __atomic_load_n(&lim->window, __ATOMIC_RELAXED);

    if ((cur != sec) &&
        __atomic_compare_exchange_n(&lim->window, &cur, sec, 0,
                                    __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        __atomic_store_n(&lim->count, 0, __ATOMIC_RELAXED);
    }

    if (__atomic_add_fetch(&lim->count, 1, __ATOMIC_RELAXED) > lim->per_sec) {
        __atomic_add_fetch(&lim->dropped, 1, __ATOMIC_RELAXED);
        return 0;
    }

    *dropped_p = __atomic_exchange_n(&lim->dropped, 0, __ATOMIC_RELAXED);
    return 1;
}
