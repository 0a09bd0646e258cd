/*
 * RPC local channel: the shared memory a client and a server on one host
 * exchange calls through, with no socket on the way.
 *
 * The server creates the memory (a memfd) and an eventfd, and hands both to
 * the client over a Unix socket (ChanAck, SCM_RIGHTS). The memory is a
 * header page (the header, then one control block per lane) followed, per
 * lane, by a request area of req_cap bytes and a reply area of rep_cap
 * bytes; each area holds one frame: the 40-byte header, then the payload.
 *
 * A lane's state word is the futex both sides sleep on and hand the lane
 * over with:
 *   FREE -> REQ   client: request written (release), then the server is
 *                 kicked through the eventfd if it sleeps (srv_sleep).
 *   REQ  -> BUSY  server: request copied out; the client's bytes are read
 *                 once, never in place (the client may change them).
 *   BUSY -> DONE  server: reply written (release), the client woken when
 *                 it sleeps (cli_wait). A reply larger than rep_cap goes
 *                 over the Unix socket instead, and the state stays BUSY
 *                 (the client's own thread reads it and marks the lane).
 *   DONE -> FREE  client: reply consumed.
 * The client never gives a lane back while the server may still write it,
 * and the server only ever acts on REQ, so a lane has one writer at a time.
 * Both sleep flags pair a store, a full fence and a load of the other
 * side's word (Dekker): a request is never left unseen by a sleeping
 * server, nor a reply by a sleeping client.
 *
 * Everything the server reads here comes from the client and is checked
 * like a frame off the wire; a client that breaks the protocol loses its
 * connection (and the channel with it), never more.
 */
#ifndef DANGO_NET_RPC_CHAN_H
#define DANGO_NET_RPC_CHAN_H

#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/time.h"

#define RPC_CHAN_MAGIC         0x4e484344u /* "DCHN" */
#define RPC_CHAN_VERSION       1
#define RPC_CHAN_HDR           4096u        /* header page */
#define RPC_CHAN_LANES         32u          /* most lanes a channel has */
#define RPC_CHAN_REQ_CAP       (64u << 10)  /* request area (frame included) */
#define RPC_CHAN_REP_CAP       (256u << 10) /* reply area (frame included) */
#define RPC_CHAN_DEFAULT_LANES 16u

enum {
    RPC_LANE_FREE = 0,
    RPC_LANE_REQ  = 1,
    RPC_LANE_BUSY = 2,
    RPC_LANE_DONE = 3,
    /* set by the client's own threads only (never by the server): */
    RPC_LANE_SOCK = 4, /* the reply came over the socket */
    RPC_LANE_DEAD = 5  /* the channel failed */
};

typedef struct rpc_chan_lane {
    uint32_t state;    /* RPC_LANE_*; the futex word */
    uint32_t cli_wait; /* the client sleeps (or is about to) on state */
    uint32_t req_len;  /* bytes of the request frame */
    uint32_t rep_len;  /* bytes of the reply frame */
    uint8_t  pad[48];
} rpc_chan_lane_t;

typedef struct rpc_chan_hdr {
    uint32_t        magic;
    uint32_t        version;
    uint32_t        lanes;
    uint32_t        req_cap;
    uint32_t        rep_cap;
    uint32_t        srv_sleep; /* the server waits for the eventfd */
    uint8_t         pad[40];
    rpc_chan_lane_t lane[RPC_CHAN_LANES];
} rpc_chan_hdr_t;

_Static_assert(sizeof(rpc_chan_lane_t) == 64, "one cache line per lane");
_Static_assert(sizeof(rpc_chan_hdr_t) <= RPC_CHAN_HDR, "header page");

/* Bytes of a channel of @lanes lanes. */
static inline uint64_t rpc_chan_size(uint32_t lanes, uint32_t req_cap,
                                     uint32_t rep_cap)
{
    return RPC_CHAN_HDR + (uint64_t)lanes * ((uint64_t)req_cap + rep_cap);
}

static inline char *rpc_chan_req(void *base, uint32_t i, uint32_t req_cap,
                                 uint32_t rep_cap)
{
    return (char *)base + RPC_CHAN_HDR + (uint64_t)i * (req_cap + rep_cap);
}

static inline char *rpc_chan_rep(void *base, uint32_t i, uint32_t req_cap,
                                 uint32_t rep_cap)
{
    return rpc_chan_req(base, i, req_cap, rep_cap) + req_cap;
}

/* Sleeps while *@word is @val, until @deadline_ns (monotonic). The word is
 * shared between processes: no FUTEX_PRIVATE_FLAG. */
static inline void rpc_chan_futex_wait(uint32_t *word, uint32_t val,
                                       uint64_t deadline_ns)
{
    struct timespec ts;

    ts.tv_sec  = (time_t)(deadline_ns / DANGO_NSEC_PER_SEC);
    ts.tv_nsec = (long)(deadline_ns % DANGO_NSEC_PER_SEC);
    syscall(SYS_futex, word, FUTEX_WAIT_BITSET, val, &ts, NULL,
            FUTEX_BITSET_MATCH_ANY);
}

static inline void rpc_chan_futex_wake(uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

#endif
