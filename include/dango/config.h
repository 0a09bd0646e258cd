/**
 * @file config.h
 * @brief Reading, overriding and printing configuration.
 *
 * Every tunable of the library lives in a declarative table owned by its
 * module (XFER_SLICE_SIZE, TCP_CONNS_PER_PEER, ...). A value is taken from,
 * in order of precedence:
 *   1. dango_config_set() on the object passed to a create function;
 *   2. the environment variable DANGO_<NAME> (e.g. DANGO_XFER_SLICE_SIZE);
 *   3. the file named at dango_config_read() or in DANGO_CONFIG_FILE
 *      (lines of `NAME = value`, `#` comments);
 *   4. the table default.
 * Values understand units: sizes "64kb", "1m", "4MiB"; times "10ms", "5s",
 * "250us"; booleans "y/n", "yes/no", "true/false", "on/off", "1/0".
 *
 * Lifecycle: dango_config_read() → dango_config_set() … → pass to a create
 * function (which copies what it needs) → dango_config_release().
 */
#ifndef DANGO_CONFIG_H
#define DANGO_CONFIG_H

#include <stdio.h>
#include <dango/common.h>

/** A set of configuration overrides. Opaque. */
typedef struct dango_config dango_config_t;

/** Flags for dango_config_print(). */
enum dango_config_print_flags {
    DANGO_CONFIG_PRINT_DOC = 1u << 0, /**< Include each option's doc string. */
    DANGO_CONFIG_PRINT_HEADER = 1u << 1 /**< Include a header per table. */
};

DANGO_BEGIN_DECLS

/**
 * @brief Creates a configuration object and loads a file into it.
 *
 * @param[in]  file   Path of a `NAME = value` file, or NULL to use the file
 *                    named by DANGO_CONFIG_FILE (if that is unset, no file).
 * @param[out] cfg_p  Set to the new object on success only.
 * @return 0, or:
 *         - DANGO_ENOENT  the file does not exist or cannot be read.
 *         - DANGO_ECONFIG a line is malformed, names an unknown option, or
 *                         holds a value its option cannot parse (the line
 *                         number is logged).
 *         - DANGO_ENOMEM
 * @note Thread safety: safe from any thread; the object itself is not
 *       thread-safe (one thread at a time).
 */
DANGO_API int dango_config_read(const char *file, dango_config_t **cfg_p);

/**
 * @brief Overrides one option.
 * @param[in] name   Option name, case-insensitive, e.g. "XFER_SLICE_SIZE"
 *                   (a leading "DANGO_" is accepted and ignored).
 * @param[in] value  New value as text; copied.
 * @return 0, or DANGO_ENOENT (unknown option), DANGO_ECONFIG (value does not
 *         parse; nothing changed), DANGO_EINVAL (NULL argument), DANGO_ENOMEM.
 */
DANGO_API int dango_config_set(dango_config_t *cfg, const char *name,
                               const char *value);

/**
 * @brief Effective value of an option as text, after all sources are applied.
 * @param[in]  cfg   Object, or NULL to see environment, file and defaults only.
 * @param[out] buf   Destination, NUL-terminated.
 * @return 0, DANGO_ENOENT (unknown option), DANGO_ERANGE (@p buf too small).
 */
DANGO_API int dango_config_get(const dango_config_t *cfg, const char *name,
                               char *buf, size_t len);

/**
 * @brief Prints every known option with its current value and default.
 * @param[in] cfg     Object, or NULL.
 * @param[in] stream  Destination stream.
 * @param[in] flags   DANGO_CONFIG_PRINT_* bits.
 * @return 0, or DANGO_EIO when writing fails.
 */
DANGO_API int dango_config_print(const dango_config_t *cfg, FILE *stream,
                                 unsigned flags);

/**
 * @brief Parses a size with an optional unit: "4096", "64k", "512MiB",
 *        "1.5g" (powers of 1024; b, k, kb, kib, m, ... t).
 * @return 0 with *out set, or DANGO_EINVAL (nothing changed).
 * @note The parsers below are the ones the option tables use, for programs
 *       that take values as flags. Thread safety: any thread.
 */
DANGO_API int dango_parse_size(const char *s, size_t *out);

/**
 * @brief Parses a time: "250us", "10ms", "5s", "30min", "24h" (a bare
 *        number is seconds).
 * @return 0 with *out in nanoseconds, DANGO_EINVAL (does not parse) or
 *         DANGO_ERANGE (too long).
 */
DANGO_API int dango_parse_time_ns(const char *s, uint64_t *out);

/**
 * @brief Parses a boolean: y/n, yes/no, true/false, on/off, 1/0.
 * @return 0 with *out 0 or 1, or DANGO_EINVAL.
 */
DANGO_API int dango_parse_bool(const char *s, int *out);

/** @brief Frees @p cfg. NULL is ignored. */
DANGO_API void dango_config_release(dango_config_t *cfg);

DANGO_END_DECLS

#endif /* DANGO_CONFIG_H */
