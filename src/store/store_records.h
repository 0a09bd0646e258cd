/*
 * Enumerating the committed records of a segment (see store_proto.h for the
 * layout). A node does this when a master that is rebuilding its object
 * table asks it to remount: what it reports is what the new master serves.
 */
#ifndef DANGO_STORE_RECORDS_H
#define DANGO_STORE_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#include "store/store_proto.h"

/*
 * Called once per committed record, in address order: @h is a copy of its
 * header, @key its key (inside the segment, h->key_len bytes), @off the
 * record's offset from the segment base. Return 0 to go on, anything else
 * to stop the scan.
 */
typedef int (*dango_store_rec_scan_cb)(void                        *arg,
                                       const dango_store_rec_hdr_t *h,
                                       const char *key, uint64_t off);

/*
 * Scans [@base, @base + @size) at every DANGO_STORE_REC_ALIGN boundary for
 * records that are committed: magic and version right, header checksum
 * (header and key) right, commit word equal to put_id ^
 * DANGO_STORE_REC_COMMIT_XOR, the whole record inside the range, and the
 * xxh3-64 of the value equal to the header's checksum. A record whose
 * value was partly overwritten after it was freed fails the last check, so
 * stale regions are never reported as objects. After a record the scan
 * goes on at its end: an intact record cannot hide another one (any write
 * inside it would have broken its checksum).
 *
 * Returns the number of records reported. Reads only; other threads may
 * write the range meanwhile (a record changing under the scan is reported
 * only if it was whole and committed when checked).
 */
size_t dango__store_rec_scan(const void *base, uint64_t size,
                             dango_store_rec_scan_cb cb, void *arg);

/*
 * The same checks for the one record at @rec (@avail bytes readable
 * there): its total length when it is committed and intact, else 0.
 */
uint64_t dango__store_rec_valid(const void *rec, uint64_t avail);

#endif
