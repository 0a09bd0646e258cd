/**
 * @file log.h
 * @brief Logging with per-component levels and a pluggable sink.
 *
 * Levels are set per component from the environment, for example
 * `DANGO_LOG=xfer=debug,tcp=trace,*=warn` (the `*` entry, or a bare level such
 * as `DANGO_LOG=info`, sets every component without its own entry; the default
 * is `warn`). The level check happens before any argument is evaluated, and a
 * compile-time ceiling DANGO_MAX_LOG_LEVEL removes finer levels entirely.
 *
 * The library never writes to stdout: the default sink writes one line per
 * record to stderr, and dango_log_set_handler() replaces or silences it.
 */
#ifndef DANGO_LOG_H
#define DANGO_LOG_H

#include <stdarg.h>
#include <dango/common.h>

/** Log levels, from most to least severe. */
typedef enum dango_log_level {
    DANGO_LOG_FATAL = 0, /**< The process cannot continue. */
    DANGO_LOG_ERROR =
        1, /**< The operation failed and the caller will see it. */
    DANGO_LOG_WARN  = 2, /**< Unexpected, but execution continues. */
    DANGO_LOG_INFO  = 3, /**< Lifecycle events only. */
    DANGO_LOG_DEBUG = 4, /**< Proportional to the number of objects. */
    DANGO_LOG_TRACE = 5, /**< Per operation. */
    DANGO_LOG_DATA  = 6  /**< Per packet. */
} dango_log_level_t;

#ifndef DANGO_MAX_LOG_LEVEL
/** Compile-time ceiling: records finer than this are compiled out. */
#define DANGO_MAX_LOG_LEVEL DANGO_LOG_TRACE
#endif

/**
 * A named log component. Define one per module with
 * DANGO_LOG_COMPONENT_DEFINE; its level is resolved from DANGO_LOG on first
 * use.
 */
typedef struct dango_log_component {
    const char *name;  /**< Component name as used in DANGO_LOG. */
    int         level; /**< Resolved level, or -1 before first use. */
} dango_log_component_t;

/** Defines a component variable @p _var named @p _name. */
#define DANGO_LOG_COMPONENT_DEFINE(_var, _name)                                \
    dango_log_component_t _var = {(_name), -1}

/** One log record as passed to a handler. Valid only during the call. */
typedef struct dango_log_record {
    dango_log_level_t level;     /**< Severity. */
    const char       *component; /**< Component name. */
    const char       *file;      /**< Source file (__FILE__). */
    int               line;      /**< Source line. */
    const char       *func;      /**< Function name. */
    const char       *message;   /**< Formatted message, no trailing newline. */
} dango_log_record_t;

/** Log sink. Called from whatever thread logged; must be thread-safe. */
typedef void (*dango_log_handler_cb)(const dango_log_record_t *rec, void *arg);

DANGO_BEGIN_DECLS

/**
 * @brief Replaces the log sink.
 * @param[in] cb   New handler, or NULL to restore the default stderr sink.
 * @param[in] arg  Passed to every call of @p cb.
 * @note Thread safety: safe to call at any time; records in progress may
 *       still reach the previous handler.
 */
DANGO_API void dango_log_set_handler(dango_log_handler_cb cb, void *arg);

/**
 * @brief Silences (or re-enables) the default stderr sink.
 * @param[in] disabled  Non-zero to drop records when no handler is set.
 */
DANGO_API void dango_log_disable_default(int disabled);

/**
 * @brief Overrides levels as DANGO_LOG would, e.g. "xfer=debug,*=warn".
 * @return 0, or DANGO_EINVAL for an unknown level name (nothing changed).
 * @note Thread safety: safe from any thread.
 */
DANGO_API int dango_log_configure(const char *spec);

/**
 * @brief Parses a level name ("error", "warn", "info", "debug", "trace",
 * "data").
 * @return The level, or DANGO_EINVAL.
 */
DANGO_API int dango_log_level_parse(const char *name);

/** @brief Name of a level ("error", ...). Never NULL. */
DANGO_API const char *dango_log_level_name(int level);

/** @internal Resolves the level of @p comp; returns it. */
DANGO_API int dango__log_component_level(dango_log_component_t *comp);

/** @internal Formats and dispatches one record. */
DANGO_API void dango__log_emit(dango_log_component_t *comp,
                               dango_log_level_t level, const char *file,
                               int line, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

DANGO_END_DECLS

/** @internal True when @p _lvl is enabled for @p _comp (one atomic load). */
#define dango__log_enabled(_comp, _lvl)                                        \
    (((_lvl) <= DANGO_MAX_LOG_LEVEL) && ({                                     \
         int _dango_l = __atomic_load_n(&(_comp)->level, __ATOMIC_RELAXED);    \
         if (_dango_l < 0) {                                                   \
             _dango_l = dango__log_component_level(_comp);                     \
         }                                                                     \
         (int)(_lvl) <= _dango_l;                                              \
     }))

/** Logs at @p _lvl for component @p _comp; arguments are evaluated only if
 * enabled. */
#define dango_log_at(_comp, _lvl, _fmt, ...)                                   \
    do {                                                                       \
        if (dango__log_enabled((_comp), (_lvl))) {                             \
            dango__log_emit((_comp), (_lvl), __FILE__, __LINE__, __func__,     \
                            _fmt, ##__VA_ARGS__);                              \
        }                                                                      \
    } while (0)

#ifndef DANGO_LOG_COMPONENT
/** Component used by the level macros; a module defines it before including. */
#define DANGO_LOG_COMPONENT dango__log_default
#endif
/** The default component, "dango". */
extern DANGO_API dango_log_component_t dango__log_default;

/** Level macros for the current DANGO_LOG_COMPONENT. */
#define dango_fatal(_fmt, ...)                                                 \
    dango_log_at(&DANGO_LOG_COMPONENT, DANGO_LOG_FATAL, _fmt, ##__VA_ARGS__)
#define dango_error(_fmt, ...)                                                 \
    dango_log_at(&DANGO_LOG_COMPONENT, DANGO_LOG_ERROR, _fmt, ##__VA_ARGS__)
#define dango_warn(_fmt, ...)                                                  \
    dango_log_at(&DANGO_LOG_COMPONENT, DANGO_LOG_WARN, _fmt, ##__VA_ARGS__)
#define dango_info(_fmt, ...)                                                  \
    dango_log_at(&DANGO_LOG_COMPONENT, DANGO_LOG_INFO, _fmt, ##__VA_ARGS__)
#define dango_debug(_fmt, ...)                                                 \
    dango_log_at(&DANGO_LOG_COMPONENT, DANGO_LOG_DEBUG, _fmt, ##__VA_ARGS__)
#define dango_trace(_fmt, ...)                                                 \
    dango_log_at(&DANGO_LOG_COMPONENT, DANGO_LOG_TRACE, _fmt, ##__VA_ARGS__)

#endif /* DANGO_LOG_H */
