/* Options of the TCP transport (TCP_*). */
#include <stddef.h>

#include "common/config_table.h"
#include "transport/tcp/tcp_int.h"

static const dango_config_field_t tcp_config_fields[] = {
    {"SLICE_SIZE", "1m",
     "requests are cut into slices of this size, spread over the connections "
     "to a peer",
     offsetof(tcp_config_t, slice_size), DANGO_CFG_SIZE},
    {"CONNS_PER_PEER", "2",
     "persistent connections per peer (each served by one worker; 1..16)",
     offsetof(tcp_config_t, conns_per_peer), DANGO_CFG_UINT},
    {"WINDOW", "8m",
     "bytes in flight per connection before the sender waits for replies",
     offsetof(tcp_config_t, window), DANGO_CFG_SIZE},
    {"IO_TIMEOUT", "10s",
     "a connection with work outstanding and no progress for this long is "
     "closed and its slices retried",
     offsetof(tcp_config_t, io_timeout), DANGO_CFG_TIME},
    {"CONNECT_TIMEOUT", "3s", "connect and handshake timeout",
     offsetof(tcp_config_t, connect_timeout), DANGO_CFG_TIME},
    {"RETRIES", "2",
     "times a slice is retried on another connection after a link failure",
     offsetof(tcp_config_t, retries), DANGO_CFG_UINT},
    {"SNDBUF", "0", "socket send buffer size (0 = kernel autotuning)",
     offsetof(tcp_config_t, sndbuf), DANGO_CFG_SIZE},
    {"RCVBUF", "0", "socket receive buffer size (0 = kernel autotuning)",
     offsetof(tcp_config_t, rcvbuf), DANGO_CFG_SIZE},
    {"BACKLOG", "512", "listen backlog", offsetof(tcp_config_t, backlog),
     DANGO_CFG_UINT},
    {NULL, NULL, NULL, 0, DANGO_CFG_STRING}};

dango_config_table_t dango__tcp_config_table_rw = {"TCP", "TCP transport",
                                                   tcp_config_fields, NULL};

DANGO_CONFIG_REGISTER_TABLE(dango__tcp_config_table_rw)
