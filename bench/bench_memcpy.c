/*
 * Peer figure for the shm transport: single-thread memcpy of cold 4 MiB
 * blocks. A 1 GiB source and destination pool (pre-faulted) are walked
 * block by block so no block is in cache when it is copied, as with KV
 * blocks arriving from many requests. Prints one JSON object.
 *
 *   bench_memcpy [--block 4m] [--pool 1g] [--duration 3]
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "bench_util.h"

int main(int argc, char **argv)
{
    size_t             block = 4u << 20, pool = 1u << 30, nblocks, i = 0;
    double             duration = 3, start, elapsed;
    unsigned long long bytes    = 0;
    char              *src, *dst;

    for (int a = 1; a + 1 < argc; a += 2) {
        if (!strcmp(argv[a], "--block")) {
            block = bench_parse_size(argv[a + 1]);
        } else if (!strcmp(argv[a], "--pool")) {
            pool = bench_parse_size(argv[a + 1]);
        } else if (!strcmp(argv[a], "--duration")) {
            duration = strtod(argv[a + 1], NULL);
        }
    }

    nblocks = pool / block;
    src     = mmap(NULL, pool, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    dst     = mmap(NULL, pool, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if ((src == MAP_FAILED) || (dst == MAP_FAILED) || (nblocks == 0)) {
        fprintf(stderr, "bench_memcpy: cannot map 2 x %zu bytes\n", pool);
        return 1;
    }

    memset(src, 0x5a, pool);
    start = bench_now_s();
    do {
        for (int k = 0; k < 16; k++, i++) {
            size_t b = i % nblocks;

            memcpy(dst + b * block, src + b * block, block);
            bytes += block;
        }

        elapsed = bench_now_s() - start;
    } while (elapsed < duration);

    printf("{\"bench\":\"memcpy\",\"block_size\":%zu,\"pool\":%zu,"
           "\"threads\":1,\"duration_s\":%.3f,\"bytes\":%llu,\"gbps\":%.3f,"
           "\"check\":%d}\n",
           block, pool, elapsed, bytes, (double)bytes / elapsed / 1e9,
           dst[(i * 7919) % pool] == 0x5a);
    return 0;
}
