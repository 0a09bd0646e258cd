/*
 * Store processes and checks shared by the multi-process store tests
 * (cluster, HA, disk tier, conductor with a store): starting a store_peer
 * master or node and reading its address, a pure client of a master, and a
 * get that checks every byte against test_values.h. Failures fail the
 * running cmocka test.
 */
#ifndef DANGO_IT_STORE_H
#define DANGO_IT_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <dango/store.h>
#include "it_proc.h"

/* Bound on a peer process coming up (ASan builds are slow), ms. */
#define IT_PEER_START_MS 30000

/*
 * Spawns @argv (a store_peer "master" or "node" with its arguments) with
 * @env_add as it_proc_spawn(), and waits for its "READY <what>" line; the
 * <what> (a master's address, a node's segment name) is copied to @out
 * (@len bytes, may be 0). Fails the test if it does not come up.
 */
void it_peer_start(it_proc_t *p, char *const argv[], const char *const *env_add,
                   char *out, size_t len);

/* A pure client (no segment) of @master with @buf bytes of staging. */
void it_store_client(const char *master, size_t buf,
                     dango_store_client_t **c_p);

/*
 * Gets @key through @c into a buffer of @len bytes; when the get succeeds
 * its size must be @len and its bytes those test_fill() makes for the key.
 * Returns the get's result.
 */
int64_t it_store_get_check(dango_store_client_t *c, const char *key,
                           size_t len);

#endif
