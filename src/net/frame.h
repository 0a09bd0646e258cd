/*
 * Binary frames: every message on a Dango data connection starts with this
 * fixed 40-byte header (little-endian on the wire), followed by `length`
 * payload bytes for the frame types that carry data.
 *
 *   0  u32 magic     "DGXF" (0x46584744 read as little-endian)
 *   4  u8  version   DANGO_FRAME_VERSION
 *   5  u8  type      DANGO_FRAME_*
 *   6  u16 flags
 *   8  i32 status    0 or a DANGO_E* code (replies)
 *  12  u32 reserved  must be 0
 *  16  u64 id        slice or call id (matches replies to requests)
 *  24  u64 addr      remote address for data frames; method id for RPC_REQ
 *  32  u64 length    payload bytes that follow (or bytes requested by READ)
 *
 * A receiver checks magic, version, type, reserved and the length limit of
 * the type before it touches anything else; a violation closes the
 * connection with one logged error.
 */
#ifndef DANGO_NET_FRAME_H
#define DANGO_NET_FRAME_H

#include <stdint.h>
#include <string.h>
#include <dango/common.h>
#include <dango/error.h>

#define DANGO_FRAME_MAGIC   0x46584744u /* "DGXF" */
#define DANGO_FRAME_VERSION 1
#define DANGO_FRAME_HDR_LEN 40
/* Control payloads (protobuf) are small; data payloads are bounded per slice.
 */
#define DANGO_FRAME_CTRL_MAX (1u << 20)
#define DANGO_FRAME_DATA_MAX (1ull << 30)
/* RPC payloads (protobuf requests and replies) may hold whole batches. */
#define DANGO_FRAME_RPC_MAX (64ull << 20)

enum dango_frame_type {
    DANGO_FRAME_HELLO      = 1,  /* payload: Hello */
    DANGO_FRAME_HELLO_ACK  = 2,  /* payload: HelloAck */
    DANGO_FRAME_AUTH       = 3,  /* payload: Auth */
    DANGO_FRAME_WRITE      = 4,  /* payload: data to store at addr */
    DANGO_FRAME_WRITE_ACK  = 5,  /* no payload; status */
    DANGO_FRAME_READ       = 6,  /* no payload; length = bytes wanted */
    DANGO_FRAME_READ_RESP  = 7,  /* payload: data (length 0 when status != 0) */
    DANGO_FRAME_NOTIFY     = 8,  /* payload: Notify */
    DANGO_FRAME_NOTIFY_ACK = 9,  /* no payload; status */
    DANGO_FRAME_DESC_REQ   = 10, /* no payload */
    DANGO_FRAME_DESC_RESP  = 11, /* payload: DescReply */
    DANGO_FRAME_SHM_MAP    = 12, /* payload: ShmMapRequest */
    DANGO_FRAME_SHM_MAP_RESP = 13, /* payload: ShmMapReply (+ fd) */
    DANGO_FRAME_RPC_REQ      = 14, /* payload: request; addr = method id */
    DANGO_FRAME_RPC_RESP     = 15, /* payload: reply (none when status != 0) */
    DANGO_FRAME_CHAN_OPEN    = 16, /* payload: ChanOpen */
    DANGO_FRAME_CHAN_ACK     = 17, /* payload: ChanAck (+ memfd, eventfd) */
    DANGO_FRAME_TYPE_MAX     = 17
};

typedef struct dango_frame {
    uint32_t magic;
    uint8_t  version;
    uint8_t  type;
    uint16_t flags;
    int32_t  status;
    uint32_t reserved;
    uint64_t id;
    uint64_t addr;
    uint64_t length;
} __attribute__((packed)) dango_frame_t;

_Static_assert(sizeof(dango_frame_t) == DANGO_FRAME_HDR_LEN,
               "frame header must be 40 bytes");
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "frames are encoded as host structs: little-endian hosts only"
#endif

static inline void dango_frame_init(dango_frame_t *f, uint8_t type, uint64_t id,
                                    uint64_t addr, uint64_t length,
                                    int32_t status)
{
    f->magic    = DANGO_FRAME_MAGIC;
    f->version  = DANGO_FRAME_VERSION;
    f->type     = type;
    f->flags    = 0;
    f->status   = status;
    f->reserved = 0;
    f->id       = id;
    f->addr     = addr;
    f->length   = length;
}

/* Largest payload a frame of @type may announce. */
static inline uint64_t dango_frame_max_payload(uint8_t type)
{
    switch (type) {
    case DANGO_FRAME_WRITE:
    case DANGO_FRAME_READ_RESP:
        return DANGO_FRAME_DATA_MAX;
    case DANGO_FRAME_READ: /* length is what is asked for, no payload */
        return DANGO_FRAME_DATA_MAX;
    case DANGO_FRAME_RPC_REQ:
    case DANGO_FRAME_RPC_RESP:
        return DANGO_FRAME_RPC_MAX;
    case DANGO_FRAME_WRITE_ACK:
    case DANGO_FRAME_NOTIFY_ACK:
    case DANGO_FRAME_DESC_REQ:
        return 0;
    default:
        return DANGO_FRAME_CTRL_MAX;
    }
}

/*
 * Validates a received header. Returns 0, DANGO_EPROTO (bad magic, type,
 * reserved bits or length) or DANGO_EPROTO_VERSION.
 */
static inline int dango_frame_check(const dango_frame_t *f)
{
    if (f->magic != DANGO_FRAME_MAGIC) {
        return DANGO_EPROTO;
    }

    if (f->version != DANGO_FRAME_VERSION) {
        return DANGO_EPROTO_VERSION;
    }

    if ((f->type == 0) || (f->type > DANGO_FRAME_TYPE_MAX) ||
        (f->reserved != 0)) {
        return DANGO_EPROTO;
    }

    if (f->length > dango_frame_max_payload(f->type)) {
        return DANGO_EPROTO;
    }

    return 0;
}

/* Bytes of payload that follow the header on the wire. */
static inline uint64_t dango_frame_payload_len(const dango_frame_t *f)
{
    return (f->type == DANGO_FRAME_READ) ? 0 : f->length;
}

#endif
