/*
 * What the store's master and clients agree on: RPC method ids (payloads in
 * proto/dango_store.proto), replica states, and the layout of an object
 * record inside a segment.
 *
 * A segment is self-describing (docs/design/store.md): every replica region
 * holds one record,
 *
 *   [ header, 64 bytes | key, padded to 64 | value ]
 *
 * so that a node can enumerate the objects it holds without the master (for
 * a master rebuild) and a reader can check that the bytes it fetched are the
 * object it asked for. The writer writes header, key and value in one
 * transfer batch with commit = 0; after PutEnd succeeded it writes the
 * commit word (put_id ^ DANGO_STORE_REC_COMMIT_XOR). A record counts as
 * committed only with a valid header, a matching commit word and a value
 * whose xxh3-64 equals the header's checksum.
 *
 * All integers are little-endian (every supported host is).
 */
#ifndef DANGO_STORE_PROTO_H
#define DANGO_STORE_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <dango/common.h>
#include <dango/error.h>
#include "common/hash.h"

/* ---------- RPC methods (append only) ---------- */
enum dango_store_method {
    DANGO_STORE_M_SERVICE_READY = 1,  /* -           -> ServiceReadyResp */
    DANGO_STORE_M_PING          = 2,  /* PingReq     -> PingResp */
    DANGO_STORE_M_MOUNT         = 3,  /* MountReq    -> - */
    DANGO_STORE_M_REMOUNT       = 4,  /* RemountReq  -> - */
    DANGO_STORE_M_UNMOUNT       = 5,  /* UnmountReq  -> - */
    DANGO_STORE_M_PUT_START     = 6,  /* PutStartReq -> PutStartResp */
    DANGO_STORE_M_PUT_END       = 7,  /* PutEndReq   -> StatusList */
    DANGO_STORE_M_GET_REPLICAS  = 8,  /* KeysReq     -> GetResp */
    DANGO_STORE_M_EXIST         = 9,  /* KeysReq     -> StatusList (1/0/err) */
    DANGO_STORE_M_REMOVE        = 10, /* KeysReq     -> StatusList */
    DANGO_STORE_M_REMOVE_MATCH  = 11, /* RemoveMatchReq -> CountResp */
    DANGO_STORE_M_REPORT_BAD    = 12, /* ReportBadReq -> - */
    DANGO_STORE_M_LIST          = 13, /* ListReq     -> ListResp */
    DANGO_STORE_M_POOL_STAT     = 14, /* -           -> PoolStatResp */
    DANGO_STORE_M_PUT_BIND      = 15, /* PutBindReq  -> PutBindResp */
    /* 15..29: reserved (high availability, disk tier). */
    DANGO_STORE_M_COPY_START = 30, /* CopyStartReq -> CopyStartResp */
    DANGO_STORE_M_COPY_END   = 31, /* CopyEndReq   -> StatusList */
    DANGO_STORE_M_KV_EVENTS  = 32, /* KvEventsReq  -> KvEventsResp */
    DANGO_STORE_M_MAX
};

/* Disk tier methods: the reserved band 20..29, outside the range above. */
enum dango_store_disk_method {
    DANGO_STORE_M_DISK_FIRST   = 20,
    DANGO_STORE_M_DISK_POLL    = 20, /* DiskPollReq -> DiskPollResp */
    DANGO_STORE_M_DISK_LOAD    = 21, /* KeysReq     -> GetResp (waits) */
    DANGO_STORE_M_DISK_RELEASE = 22, /* DiskReleaseReq -> - */
    DANGO_STORE_M_DISK_LAST    = 29
};

/* DiskTask.kind */
enum dango_store_disk_task {
    DANGO_STORE_DISK_OFFLOAD = 1,
    DANGO_STORE_DISK_LOAD    = 2
};

/* Replica states (spec store.md §1 ReplicaStatus). */
enum dango_store_replica_status {
    DANGO_STORE_REPLICA_UNDEFINED  = 0,
    DANGO_STORE_REPLICA_INIT       = 1,
    DANGO_STORE_REPLICA_PROCESSING = 2,
    DANGO_STORE_REPLICA_COMPLETE   = 3,
    DANGO_STORE_REPLICA_REMOVED    = 4,
    DANGO_STORE_REPLICA_FAILED     = 5
};

/* ---------- object record ---------- */
#define DANGO_STORE_REC_MAGIC      0x424f4744u /* "DGOB" */
#define DANGO_STORE_REC_VERSION    1u
#define DANGO_STORE_REC_HDR_SIZE   64u
#define DANGO_STORE_REC_ALIGN      64u
#define DANGO_STORE_REC_COMMIT_XOR 0xc0331e7dc0331e7dull

typedef struct dango_store_rec_hdr {
    uint32_t magic;        /* DANGO_STORE_REC_MAGIC */
    uint16_t version;      /* DANGO_STORE_REC_VERSION */
    uint16_t key_len;      /* bytes of key after the header */
    uint64_t value_len;    /* bytes of value */
    uint64_t checksum;     /* xxh3-64 of the value */
    uint64_t put_id;       /* master's identity of the put */
    uint64_t hdr_checksum; /* xxh3-64 of this header (with hdr_checksum and
                              commit read as 0) followed by the key */
    uint64_t commit;       /* 0, or put_id ^ DANGO_STORE_REC_COMMIT_XOR */
    uint8_t  reserved[16]; /* 0 */
} dango_store_rec_hdr_t;

_Static_assert(sizeof(dango_store_rec_hdr_t) == DANGO_STORE_REC_HDR_SIZE,
               "record header is 64 bytes");

/* Offset of the value inside a record. */
static inline uint64_t dango_store_rec_value_off(uint64_t key_len)
{
    return DANGO_STORE_REC_HDR_SIZE + ((key_len + DANGO_STORE_REC_ALIGN - 1) &
                                       ~(uint64_t)(DANGO_STORE_REC_ALIGN - 1));
}

/* Bytes of the record of a key and value. */
static inline uint64_t dango_store_rec_size(uint64_t key_len,
                                            uint64_t value_len)
{
    return dango_store_rec_value_off(key_len) + value_len;
}

/* The header checksum over @h (hdr_checksum and commit taken as 0) and key. */
static inline uint64_t dango_store_rec_hdr_sum(const dango_store_rec_hdr_t *h,
                                               const void                  *key)
{
    dango_store_rec_hdr_t tmp = *h;
    tmp.hdr_checksum          = 0;
    tmp.commit                = 0;
    return dango_hash64_seed(key, h->key_len, dango_hash64(&tmp, sizeof(tmp)));
}

/*
 * Fills a header for @key / @value_len / @checksum / @put_id (commit 0).
 * Writes the header and the key (with zero padding to the value offset)
 * into @dst, which must hold dango_store_rec_value_off(key_len) bytes.
 */
static inline void dango_store_rec_format(void *dst, const char *key,
                                          uint16_t key_len, uint64_t value_len,
                                          uint64_t checksum, uint64_t put_id)
{
    dango_store_rec_hdr_t h;
    uint64_t              off = dango_store_rec_value_off(key_len);

    memset(&h, 0, sizeof(h));
    h.magic        = DANGO_STORE_REC_MAGIC;
    h.version      = DANGO_STORE_REC_VERSION;
    h.key_len      = key_len;
    h.value_len    = value_len;
    h.checksum     = checksum;
    h.put_id       = put_id;
    h.hdr_checksum = dango_store_rec_hdr_sum(&h, key);
    memcpy(dst, &h, sizeof(h));
    memcpy((char *)dst + sizeof(h), key, key_len);
    memset((char *)dst + sizeof(h) + key_len, 0, off - sizeof(h) - key_len);
}

/*
 * Makes the record at @rec, whose value (@value_len bytes) is already in
 * place at dango_store_rec_value_off(@key_len), a committed one: header,
 * key, value checksum and commit word (tests, benchmarks, copies).
 */
static inline void dango_store_rec_seal(void *rec, const char *key,
                                        uint16_t key_len, uint64_t value_len,
                                        uint64_t put_id)
{
    char    *v      = (char *)rec + dango_store_rec_value_off(key_len);
    uint64_t commit = put_id ^ DANGO_STORE_REC_COMMIT_XOR;

    dango_store_rec_format(rec, key, key_len, value_len,
                           dango_hash64(v, value_len), put_id);
    memcpy((char *)rec + offsetof(dango_store_rec_hdr_t, commit), &commit,
           sizeof(commit));
}

/*
 * Checks a fetched header and key against what the master said: 0 when it
 * is the record of @key with @value_len, @checksum and @put_id, otherwise
 * DANGO_ECORRUPT. @rec holds dango_store_rec_value_off(key_len) bytes.
 */
static inline int dango_store_rec_check(const void *rec, const char *key,
                                        uint16_t key_len, uint64_t value_len,
                                        uint64_t checksum, uint64_t put_id)
{
    dango_store_rec_hdr_t h;

    memcpy(&h, rec, sizeof(h));
    if (h.magic != DANGO_STORE_REC_MAGIC ||
        h.version != DANGO_STORE_REC_VERSION || h.key_len != key_len ||
        h.value_len != value_len || h.checksum != checksum ||
        h.put_id != put_id ||
        memcmp((const char *)rec + sizeof(h), key, key_len) != 0 ||
        h.hdr_checksum != dango_store_rec_hdr_sum(&h, key)) {
        return DANGO_ECORRUPT;
    }
    return 0;
}

#endif
