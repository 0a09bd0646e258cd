/* Options of the transfer engine (XFER_*). */
#include <stddef.h>

#include "common/config_table.h"
#include "xfer/xfer_int.h"

static const dango_config_field_t xfer_config_fields[] = {
    {"SEGMENT_NAME", "",
     "local segment name, unique in the cluster (empty: <hostname>:<pid>; "
     "P2P mode: the listen address)",
     offsetof(xfer_config_t, segment_name), DANGO_CFG_STRING},
    {"METADATA", "P2PHANDSHAKE",
     "metadata service: http://host:port/metadata, mem://<name>, or "
     "P2PHANDSHAKE (no server: peers exchange descriptors directly)",
     offsetof(xfer_config_t, metadata), DANGO_CFG_STRING},
    {"LISTEN", "127.0.0.1:0",
     "TCP listen address host:port (port 0: any; P2P mode picks one in "
     "XFER_P2P_PORTS); set the host's cluster address for several hosts",
     offsetof(xfer_config_t, listen), DANGO_CFG_STRING},
    {"P2P_PORTS", "15000-17000",
     "port range probed for the listen port in P2P mode when XFER_LISTEN "
     "has port 0",
     offsetof(xfer_config_t, p2p_ports), DANGO_CFG_STRING},
    {"WORKERS", "2", "worker threads that move data (1..64)",
     offsetof(xfer_config_t, workers), DANGO_CFG_UINT},
    {"TRANSPORTS", "shm,tcp",
     "transports for memory segments, in order of preference (tcp is "
     "always available as the last resort)",
     offsetof(xfer_config_t, transports), DANGO_CFG_STRING},
    {"MAX_BATCH", "65536", "largest batch capacity accepted",
     offsetof(xfer_config_t, max_batch), DANGO_CFG_UINT},
    {"HOST_ID", "",
     "identity of this host for choosing same-host transports (empty: "
     "derived from machine id, boot id and network namespace)",
     offsetof(xfer_config_t, host_id), DANGO_CFG_STRING},
    {"CLUSTER_ID", "default",
     "namespace of this cluster's keys in the metadata service",
     offsetof(xfer_config_t, cluster_id), DANGO_CFG_STRING},
    {"UNREGISTER_TIMEOUT", "5s",
     "longest wait for peer accesses to finish when unregistering memory",
     offsetof(xfer_config_t, unregister_timeout), DANGO_CFG_TIME},
    {"OPEN_TIMEOUT", "5s", "timeout of segment_open's descriptor fetch",
     offsetof(xfer_config_t, open_timeout), DANGO_CFG_TIME},
    {"WAIT_SPIN", "50us",
     "batch_wait spins this long before sleeping (lower latency, more CPU)",
     offsetof(xfer_config_t, wait_spin), DANGO_CFG_TIME},
    {NULL, NULL, NULL, 0, DANGO_CFG_STRING}};

dango_config_table_t dango__xfer_config_table = {"XFER", "transfer engine",
                                                 xfer_config_fields, NULL};

DANGO_CONFIG_REGISTER_TABLE(dango__xfer_config_table)
