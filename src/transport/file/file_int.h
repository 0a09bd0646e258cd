/*
 * Private declarations of the file transport (file:// segments served by
 * io_uring), shared by file_iface.c and its unit test.
 */
#ifndef DANGO_TRANSPORT_FILE_INT_H
#define DANGO_TRANSPORT_FILE_INT_H

#include <stdint.h>

#include <dango/log.h>
#include <dango/transport.h>

/* Prefix of the segment names this transport serves. */
#define DANGO__FILE_PREFIX "file://"

/* Log component "file" (DANGO_LOG=file=debug). */
extern dango_log_component_t dango__log_file;

/* The ops table, listed by src/transport/transport.c. */
extern const dango_transport_ops_t dango__file_ops;

/* Counters of one endpoint, for tests and debugging. */
typedef struct dango__file_ep_stats {
    uint64_t direct;     /* reads/writes submitted on the O_DIRECT fd */
    uint64_t buffered;   /* reads/writes submitted on the buffered fd */
    uint64_t resubmits;  /* short transfers continued with the remainder */
    int      has_direct; /* non-zero when the O_DIRECT fd could be opened */
} dango__file_ep_stats_t;

/*
 * Copies the counters of @ep into @stats. The counters are updated on the
 * loop thread; read them after the completions they should reflect.
 */
void dango__file_ep_stats_get(dango_tp_ep_t *ep, dango__file_ep_stats_t *stats);

#endif /* DANGO_TRANSPORT_FILE_INT_H */
