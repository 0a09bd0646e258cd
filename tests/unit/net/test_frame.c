/*
 * Unit tests of the 40-byte frame header: wire layout, and every rejection
 * of dango_frame_check() with its exact code (bad magic, version, type,
 * reserved bits, per-type payload limits).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dango_test.h"

#include "net/frame.h"

static void frame_layout_is_wire_format(void **state)
{
    dango_frame_t f;
    uint8_t       raw[DANGO_FRAME_HDR_LEN];
    uint64_t      v;

    (void)state;
    assert_int_equal(sizeof(f), 40);
    assert_int_equal(offsetof(dango_frame_t, magic), 0);
    assert_int_equal(offsetof(dango_frame_t, version), 4);
    assert_int_equal(offsetof(dango_frame_t, type), 5);
    assert_int_equal(offsetof(dango_frame_t, flags), 6);
    assert_int_equal(offsetof(dango_frame_t, status), 8);
    assert_int_equal(offsetof(dango_frame_t, reserved), 12);
    assert_int_equal(offsetof(dango_frame_t, id), 16);
    assert_int_equal(offsetof(dango_frame_t, addr), 24);
    assert_int_equal(offsetof(dango_frame_t, length), 32);

    dango_frame_init(&f, DANGO_FRAME_WRITE, 0x1122334455667788ull, 0xabcdull,
                     4096, DANGO_ETIMEDOUT);
    memcpy(raw, &f, sizeof(raw));
    assert_memory_equal(raw, "DGXF", 4); /* magic reads "DGXF" on the wire */
    assert_int_equal(raw[4], DANGO_FRAME_VERSION);
    assert_int_equal(raw[5], DANGO_FRAME_WRITE);
    assert_int_equal(raw[6], 0);
    assert_int_equal(raw[7], 0);
    assert_int_equal(raw[16], 0x88); /* little-endian id */
    assert_int_equal(raw[23], 0x11);
    memcpy(&v, raw + 32, sizeof(v));
    assert_int_equal(v, 4096);
    assert_int_equal(f.status, DANGO_ETIMEDOUT);
    assert_int_equal(f.reserved, 0);
    assert_int_equal(f.addr, 0xabcdull);
    assert_dango_ok(dango_frame_check(&f));
}

static void frame_every_type_accepted(void **state)
{
    dango_frame_t f;

    (void)state;
    for (int t = 1; t <= DANGO_FRAME_TYPE_MAX; t++) {
        dango_frame_init(&f, (uint8_t)t, (uint64_t)t, 0, 0, 0);
        assert_dango_ok(dango_frame_check(&f));
        f.length = dango_frame_max_payload((uint8_t)t);
        assert_dango_ok(dango_frame_check(&f));
        f.flags  = 0xffff; /* flags and status are not validated */
        f.status = DANGO_EIO;
        assert_dango_ok(dango_frame_check(&f));
    }
}

static void frame_bad_magic(void **state)
{
    static const uint32_t bad[] = {0, 0x44475846u /* byte-swapped */,
                                   DANGO_FRAME_MAGIC ^ 1u, 0xffffffffu};
    dango_frame_t         f;

    (void)state;
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad); i++) {
        dango_frame_init(&f, DANGO_FRAME_HELLO, 1, 0, 0, 0);
        f.magic = bad[i];
        assert_dango_err(DANGO_EPROTO, dango_frame_check(&f));
    }

    /* Magic is checked first: a wrong version does not change the code. */
    dango_frame_init(&f, DANGO_FRAME_HELLO, 1, 0, 0, 0);
    f.magic   = 0;
    f.version = 99;
    assert_dango_err(DANGO_EPROTO, dango_frame_check(&f));
}

static void frame_bad_version(void **state)
{
    static const uint8_t bad[] = {0, DANGO_FRAME_VERSION + 1, 255};
    dango_frame_t        f;

    (void)state;
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad); i++) {
        dango_frame_init(&f, DANGO_FRAME_HELLO, 1, 0, 0, 0);
        f.version = bad[i];
        assert_dango_err(DANGO_EPROTO_VERSION, dango_frame_check(&f));
    }

    /* Version is checked before type: a future peer gets the version code. */
    dango_frame_init(&f, DANGO_FRAME_HELLO, 1, 0, 0, 0);
    f.version = 2;
    f.type    = 200;
    assert_dango_err(DANGO_EPROTO_VERSION, dango_frame_check(&f));
}

static void frame_bad_type(void **state)
{
    static const uint8_t bad[] = {0, DANGO_FRAME_TYPE_MAX + 1, 100, 255};
    dango_frame_t        f;

    (void)state;
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad); i++) {
        dango_frame_init(&f, bad[i], 1, 0, 0, 0);
        assert_dango_err(DANGO_EPROTO, dango_frame_check(&f));
    }
}

static void frame_reserved_must_be_zero(void **state)
{
    static const uint32_t bad[] = {1, 0x80000000u, 0xffffffffu};
    dango_frame_t         f;

    (void)state;
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(bad); i++) {
        dango_frame_init(&f, DANGO_FRAME_WRITE, 1, 0, 16, 0);
        f.reserved = bad[i];
        assert_dango_err(DANGO_EPROTO, dango_frame_check(&f));
    }
}

static void frame_payload_limits_per_type(void **state)
{
    static const struct {
        uint8_t  type;
        uint64_t max;
    } limits[] = {
        {DANGO_FRAME_HELLO, DANGO_FRAME_CTRL_MAX},
        {DANGO_FRAME_HELLO_ACK, DANGO_FRAME_CTRL_MAX},
        {DANGO_FRAME_AUTH, DANGO_FRAME_CTRL_MAX},
        {DANGO_FRAME_WRITE, DANGO_FRAME_DATA_MAX},
        {DANGO_FRAME_WRITE_ACK, 0},
        {DANGO_FRAME_READ, DANGO_FRAME_DATA_MAX},
        {DANGO_FRAME_READ_RESP, DANGO_FRAME_DATA_MAX},
        {DANGO_FRAME_NOTIFY, DANGO_FRAME_CTRL_MAX},
        {DANGO_FRAME_NOTIFY_ACK, 0},
        {DANGO_FRAME_DESC_REQ, 0},
        {DANGO_FRAME_DESC_RESP, DANGO_FRAME_CTRL_MAX},
        {DANGO_FRAME_SHM_MAP, DANGO_FRAME_CTRL_MAX},
        {DANGO_FRAME_SHM_MAP_RESP, DANGO_FRAME_CTRL_MAX},
        {DANGO_FRAME_RPC_REQ, DANGO_FRAME_RPC_MAX},
        {DANGO_FRAME_RPC_RESP, DANGO_FRAME_RPC_MAX},
        {DANGO_FRAME_CHAN_OPEN, DANGO_FRAME_CTRL_MAX},
        {DANGO_FRAME_CHAN_ACK, DANGO_FRAME_CTRL_MAX},
    };
    dango_frame_t f;

    (void)state;
    assert_int_equal(DANGO_ARRAY_SIZE(limits), DANGO_FRAME_TYPE_MAX);
    for (size_t i = 0; i < DANGO_ARRAY_SIZE(limits); i++) {
        assert_int_equal(dango_frame_max_payload(limits[i].type),
                         limits[i].max);
        dango_frame_init(&f, limits[i].type, 1, 0, limits[i].max, 0);
        assert_dango_ok(dango_frame_check(&f));
        f.length = limits[i].max + 1;
        assert_dango_err(DANGO_EPROTO, dango_frame_check(&f));
        f.length = UINT64_MAX;
        assert_dango_err(DANGO_EPROTO, dango_frame_check(&f));
    }
}

static void frame_payload_len(void **state)
{
    dango_frame_t f;

    (void)state;
    /* READ carries the wanted length but no payload. */
    dango_frame_init(&f, DANGO_FRAME_READ, 1, 0x1000, 65536, 0);
    assert_int_equal(dango_frame_payload_len(&f), 0);
    dango_frame_init(&f, DANGO_FRAME_WRITE, 1, 0x1000, 65536, 0);
    assert_int_equal(dango_frame_payload_len(&f), 65536);
    dango_frame_init(&f, DANGO_FRAME_READ_RESP, 1, 0, 100, 0);
    assert_int_equal(dango_frame_payload_len(&f), 100);
    dango_frame_init(&f, DANGO_FRAME_HELLO, 1, 0, 12, 0);
    assert_int_equal(dango_frame_payload_len(&f), 12);
    dango_frame_init(&f, DANGO_FRAME_WRITE_ACK, 1, 0, 0, DANGO_ENOSPC);
    assert_int_equal(dango_frame_payload_len(&f), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(frame_layout_is_wire_format),
        cmocka_unit_test(frame_every_type_accepted),
        cmocka_unit_test(frame_bad_magic),
        cmocka_unit_test(frame_bad_version),
        cmocka_unit_test(frame_bad_type),
        cmocka_unit_test(frame_reserved_must_be_zero),
        cmocka_unit_test(frame_payload_limits_per_type),
        cmocka_unit_test(frame_payload_len),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
