/* Store processes and checks of the multi-process tests (see it_store.h). */
#include "it_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dango_test.h"

#include "test_values.h"

void it_peer_start(it_proc_t *p, char *const argv[], const char *const *env_add,
                   char *out, size_t len)
{
    char line[512];

    it_proc_spawn(p, argv, env_add);
    if (it_proc_expect(p, "READY ", line, sizeof(line), IT_PEER_START_MS) !=
        0) {
        fail_msg("%s %s did not start", argv[0], argv[1]);
    }

    if (len > 0) {
        snprintf(out, len, "%s", line + 6);
    }
}

void it_store_client(const char *master, size_t buf, dango_store_client_t **c_p)
{
    dango_store_params_t p;

    memset(&p, 0, sizeof(p));
    p.field_mask = DANGO_STORE_PARAM_MASTER | DANGO_STORE_PARAM_SEGMENT_SIZE |
                   DANGO_STORE_PARAM_BUFFER_SIZE;
    p.master_addr       = master;
    p.segment_size      = 0;
    p.local_buffer_size = buf;
    assert_dango_ok(dango_store_client_create(&p, NULL, c_p));
}

int64_t it_store_get_check(dango_store_client_t *c, const char *key, size_t len)
{
    uint8_t *val  = malloc(len);
    uint8_t *want = malloc(len);
    int64_t  got;

    assert_non_null(val);
    assert_non_null(want);
    got = dango_store_get(c, key, val, len, NULL);
    if (got >= 0) {
        test_fill(want, len, test_key_seed(key));
        assert_int_equal((int64_t)len, got);
        assert_memory_equal(want, val, len);
    }

    free(val);
    free(want);
    return got;
}
