/*
 * Declarative configuration tables. Each module defines one table of rows
 * {name, default-as-string, doc, offsetof(struct, field), type} and registers
 * it at load time with DANGO_CONFIG_REGISTER_TABLE; dango__config_parse()
 * fills the module's struct from a dango_config_t, the environment, the file
 * and the defaults, in that order of precedence.
 */
#ifndef DANGO_COMMON_CONFIG_TABLE_H
#define DANGO_COMMON_CONFIG_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <dango/config.h>

typedef enum dango_config_type {
    DANGO_CFG_STRING, /* char *, allocated; freed by dango__config_free() */
    DANGO_CFG_INT,    /* long */
    DANGO_CFG_UINT,   /* unsigned long */
    DANGO_CFG_SIZE,   /* size_t, with units: 64kb, 1m, 4MiB */
    DANGO_CFG_TIME,   /* uint64_t nanoseconds, with units: 10ms, 5s, 250us */
    DANGO_CFG_BOOL,   /* int 0/1 */
    DANGO_CFG_DOUBLE  /* double */
} dango_config_type_t;

typedef struct dango_config_field {
    const char         *name;   /* within the table, e.g. "SLICE_SIZE" */
    const char         *dflt;   /* default value as text */
    const char         *doc;    /* one-line description */
    size_t              offset; /* offsetof(struct, field) */
    dango_config_type_t type;
} dango_config_field_t;

typedef struct dango_config_table {
    const char                 *prefix; /* e.g. "XFER": options XFER_<NAME> */
    const char                 *doc;
    const dango_config_field_t *fields; /* terminated by a row with name NULL */
    struct dango_config_table  *next;   /* registry link, set at registration */
} dango_config_table_t;

#define DANGO_CONFIG_REGISTER_TABLE(_table)                                    \
    __attribute__((constructor)) static void dango__config_register_##_table(  \
        void)                                                                  \
    {                                                                          \
        dango__config_table_register(&(_table));                               \
    }

DANGO_BEGIN_DECLS

DANGO_API void dango__config_table_register(dango_config_table_t *table);

/*
 * Fills @dst (the struct the table describes) with effective values.
 * Returns 0, DANGO_ECONFIG (a value does not parse: logged with its source)
 * or DANGO_ENOMEM; on error @dst holds nothing that needs freeing.
 */
DANGO_API int dango__config_parse(const dango_config_t       *cfg,
                                  const dango_config_table_t *table, void *dst);

/* Frees the strings dango__config_parse() allocated in @dst. */
DANGO_API void dango__config_free(const dango_config_table_t *table, void *dst);

DANGO_END_DECLS

#endif
