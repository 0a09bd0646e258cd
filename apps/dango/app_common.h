/*
 * Helpers shared by the programs under apps/ (dango, dango-master,
 * dango-node): command-line flags that map onto configuration options,
 * size parsing and printing, signal handling for daemons, and the default
 * size of a segment. They use only the public API of libdango.
 */
#ifndef DANGO_APP_COMMON_H
#define DANGO_APP_COMMON_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include <dango/config.h>

/* A segment sized by app_auto_segment_size(): a quarter of MemAvailable,
 * clamped to [APP_SEGMENT_MIN, APP_SEGMENT_MAX]. */
#define APP_SEGMENT_MIN (64ull << 20)
#define APP_SEGMENT_MAX (4ull << 30)

/*
 * Parses a size with an optional unit: b, k|kb|kib, m|mb|mib, g|gb|gib,
 * t|tb|tib (powers of 1024, case-insensitive; fractions allowed, "1.5g").
 * Returns 0 or -1.
 */
int app_parse_size(const char *s, uint64_t *out);

/* Formats @bytes as "1.5 GiB" into @buf. Returns @buf. */
const char *app_format_size(uint64_t bytes, char *buf, size_t len);

/*
 * The default segment: min(MemAvailable / 4, APP_SEGMENT_MAX), at least
 * APP_SEGMENT_MIN, rounded down to a MiB. Falls back to APP_SEGMENT_MIN
 * when /proc/meminfo cannot be read.
 */
uint64_t app_auto_segment_size(void);

/*
 * The size of the segment a node or dango serve contributes: @flag (the
 * --segment-size value) when not NULL, else STORE_SEGMENT_SIZE when it is
 * not 0, else app_auto_segment_size(). Returns 0, or -1 (error printed) for
 * a value that does not parse or is 0.
 */
int app_segment_size(const char *prog, const dango_config_t *cfg,
                     const char *flag, uint64_t *size_p);

/* Open files a master should be able to hold: the RPC server's connection
 * limit (16384; each client opens up to 1 + STORE_MASTER_LANES) and some. */
#define APP_MASTER_NOFILE 17408

/*
 * Raises the process's soft limit on open files to @want, or to the hard
 * limit when that is lower (then says so on stderr, naming @prog). A lower
 * soft limit, often 1024, would make a master refuse connections long
 * before its own limit. Never lowers it.
 */
void app_raise_nofile(const char *prog, unsigned long want);

/*
 * Where the effective value of option @name comes from: "set" (given to
 * @cfg), "env" (DANGO_<NAME>), "file" or "default". Returns "default" also
 * for an unknown option.
 */
const char *app_option_source(const dango_config_t *cfg, const char *name);

/*
 * Option flags. A flag "--foo-bar" names option <PREFIX>_FOO_BAR for the
 * first prefix of @prefixes (NULL-terminated) that has such an option; its
 * value is "--foo-bar=V", or the next argument, or "yes" when no argument
 * follows or the next one is another "--" flag (boolean options).
 *
 * app_flag_value() takes the value of the flag at argv[*i] (advancing *i past
 * a separate value) into *value_p; returns 0, or -1 when a required value is
 * missing (@required) and prints why.
 */
int app_flag_value(const char *prog, int argc, char **argv, int *i,
                   int required, const char **value_p);

/*
 * Applies the generic option flag at argv[*i] to @cfg (see above).
 * Returns 0, 1 when no prefix has the option (nothing consumed), or -1 when
 * the value does not parse (an error line is printed).
 */
int app_flag_option(const char *prog, dango_config_t *cfg,
                    const char *const *prefixes, int argc, char **argv, int *i);

/*
 * Applies "-o NAME=VALUE" (any option). Returns 0 or -1 (error printed).
 */
int app_set_option(const char *prog, dango_config_t *cfg, const char *assign);

/*
 * Creates the configuration from "--config FILE" if argv has one (else
 * from DANGO_CONFIG_FILE, if set). Returns 0, or -1 with an error printed.
 */
int app_config_create(const char *prog, int argc, char **argv,
                      dango_config_t **cfg_p);

/*
 * Prints the options of table @prefix as "--flag VALUE  doc (default: D)"
 * lines, leaving out those in @skip (NULL-terminated option names without
 * the prefix, or NULL).
 */
void app_print_option_flags(FILE *out, const char *prefix,
                            const char *const *skip);

/*
 * Daemons: blocks SIGINT, SIGTERM and SIGHUP in the calling thread (call
 * before any library thread starts, so every thread inherits the mask) and
 * ignores SIGPIPE. app_signals_wait() returns the first SIGINT or SIGTERM
 * (SIGHUP is ignored: there is nothing to reload).
 */
void app_signals_block(sigset_t *set);
int  app_signals_wait(const sigset_t *set);

/*
 * Error line for an argument no flag parser took: "unknown flag" or
 * "unexpected argument", and where the flags are listed (@help).
 */
void app_bad_arg(const char *prog, const char *arg, const char *help);

/*
 * Writes "listen A, admin B[, metadata C]" (the master's addresses as
 * configured in @cfg) into @buf, for the error of a master that cannot start.
 */
void app_master_addrs(const dango_config_t *cfg, char *buf, size_t len);

/* A flag that sets a string field of a program's argument struct. */
typedef struct app_param {
    const char *flag;   /* "--name" */
    size_t      offset; /* offsetof(struct, field), a const char * field */
} app_param_t;

/*
 * The field of @args that the flag @a ("--name" or "--name=V") sets, per
 * the @n entries of @params; NULL when @a is none of them.
 */
const char **app_param_find(const app_param_t *params, size_t n, void *args,
                            const char *a);

/*
 * The flags every daemon takes: "--config FILE" (skipped here: read by
 * app_config_create()), "-o NAME=VALUE" and "--log SPEC". Returns 0 when
 * argv[*i] was one of them (consumed, *i advanced past its value), 1 when it
 * is none of them, -1 on a usage error (printed).
 */
int app_common_flag(const char *prog, dango_config_t *cfg, int argc,
                    char **argv, int *i);

/*
 * One argument of a daemon's command line, argv[*i]: "-h"/"--help" (runs
 * @help), "--version", a flag of app_common_flag(), or an option flag of
 * the tables of @prefixes (app_flag_option()). Returns -1 when it was
 * taken (*i advanced past its value; go on), else the exit status: 0 after
 * help or version, 2 on a usage error (printed, @usage to stderr).
 */
int app_daemon_arg(const char *prog, dango_config_t *cfg,
                   const char *const *prefixes, int argc, char **argv, int *i,
                   void (*help)(void), void (*usage)(FILE *));

/* Error line "<prog>: <what>: <strerror> (<ERRNAME>)" on stderr. */
void app_error(const char *prog, const char *what, int rc);

#endif /* DANGO_APP_COMMON_H */
