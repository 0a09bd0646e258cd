/*
 * Unit tests of cluster token authentication: the proof is
 * HMAC-SHA256(token, role | client nonce | server nonce), verifies for the
 * same inputs only, and every mismatch (token, role, nonce, altered or
 * truncated proof) is DANGO_EAUTH. Also DANGO_CLUSTER_TOKEN handling.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "dango_test.h"

#include "net/auth.h"

static uint8_t test_cn[DANGO_AUTH_NONCE_LEN];
static uint8_t test_sn[DANGO_AUTH_NONCE_LEN];

static int test_group_setup(void **state)
{
    (void)state;
    for (int i = 0; i < DANGO_AUTH_NONCE_LEN; i++) {
        test_cn[i] = (uint8_t)(0x10 + i);
        test_sn[i] = (uint8_t)(0xa0 + i);
    }

    return 0;
}

static void auth_proof_is_hmac_of_role_and_nonces(void **state)
{
    uint8_t      msg[64 + 2 * DANGO_AUTH_NONCE_LEN];
    uint8_t      expect[DANGO_AUTH_PROOF_LEN], proof[DANGO_AUTH_PROOF_LEN];
    unsigned int olen  = 0;
    const char  *token = "s3cret-token";
    const char  *role  = "client";
    size_t       rlen  = strlen(role);

    (void)state;
    memcpy(msg, role, rlen);
    memcpy(msg + rlen, test_cn, sizeof(test_cn));
    memcpy(msg + rlen + sizeof(test_cn), test_sn, sizeof(test_sn));
    assert_non_null(HMAC(EVP_sha256(), token, (int)strlen(token), msg,
                         rlen + sizeof(test_cn) + sizeof(test_sn), expect,
                         &olen));
    assert_int_equal(olen, DANGO_AUTH_PROOF_LEN);

    assert_dango_ok(dango_auth_proof(token, role, test_cn, test_sn, proof));
    assert_memory_equal(proof, expect, sizeof(proof));
}

static void auth_verify_ok(void **state)
{
    uint8_t proof[DANGO_AUTH_PROOF_LEN], again[DANGO_AUTH_PROOF_LEN];

    (void)state;
    assert_dango_ok(dango_auth_proof("tok", "server", test_cn, test_sn, proof));
    assert_dango_ok(dango_auth_verify("tok", "server", test_cn, test_sn, proof,
                                      sizeof(proof)));
    /* Deterministic. */
    assert_dango_ok(dango_auth_proof("tok", "server", test_cn, test_sn, again));
    assert_memory_equal(proof, again, sizeof(proof));

    /* The longest role accepted. */
    {
        char role[65];

        memset(role, 'r', 64);
        role[64] = '\0';
        assert_dango_ok(dango_auth_proof("tok", role, test_cn, test_sn, proof));
        assert_dango_ok(dango_auth_verify("tok", role, test_cn, test_sn, proof,
                                          sizeof(proof)));
    }
}

static void auth_verify_rejects_mismatch(void **state)
{
    uint8_t proof[DANGO_AUTH_PROOF_LEN], bad[DANGO_AUTH_PROOF_LEN + 1];
    uint8_t other[DANGO_AUTH_NONCE_LEN];

    (void)state;
    assert_dango_ok(dango_auth_proof("tok", "client", test_cn, test_sn, proof));

    /* Wrong token, including a prefix and an extension of the right one. */
    assert_dango_err(DANGO_EAUTH,
                     dango_auth_verify("tok2", "client", test_cn, test_sn,
                                       proof, sizeof(proof)));
    assert_dango_err(DANGO_EAUTH,
                     dango_auth_verify("to", "client", test_cn, test_sn, proof,
                                       sizeof(proof)));
    assert_dango_err(DANGO_EAUTH,
                     dango_auth_verify("", "client", test_cn, test_sn, proof,
                                       sizeof(proof)));

    /* Wrong role: a client proof cannot be reflected as a server's. */
    assert_dango_err(DANGO_EAUTH,
                     dango_auth_verify("tok", "server", test_cn, test_sn, proof,
                                       sizeof(proof)));

    /* Swapped or changed nonces. */
    assert_dango_err(DANGO_EAUTH,
                     dango_auth_verify("tok", "client", test_sn, test_cn, proof,
                                       sizeof(proof)));
    memcpy(other, test_sn, sizeof(other));
    other[DANGO_AUTH_NONCE_LEN - 1] ^= 1;
    assert_dango_err(DANGO_EAUTH,
                     dango_auth_verify("tok", "client", test_cn, other, proof,
                                       sizeof(proof)));

    /* Any single flipped bit of the proof. */
    for (size_t i = 0; i < sizeof(proof); i++) {
        memcpy(bad, proof, sizeof(proof));
        bad[i] ^= (uint8_t)(1u << (i % 8));
        assert_dango_err(DANGO_EAUTH,
                         dango_auth_verify("tok", "client", test_cn, test_sn,
                                           bad, sizeof(proof)));
    }

    /* Truncated, extended or missing proofs, even with a correct prefix. */
    assert_dango_err(DANGO_EAUTH,
                     dango_auth_verify("tok", "client", test_cn, test_sn, proof,
                                       sizeof(proof) - 1));
    assert_dango_err(DANGO_EAUTH, dango_auth_verify("tok", "client", test_cn,
                                                    test_sn, proof, 0));
    memcpy(bad, proof, sizeof(proof));
    bad[sizeof(proof)] = 0;
    assert_dango_err(DANGO_EAUTH, dango_auth_verify("tok", "client", test_cn,
                                                    test_sn, bad, sizeof(bad)));
    assert_dango_err(DANGO_EAUTH,
                     dango_auth_verify("tok", "client", test_cn, test_sn, NULL,
                                       sizeof(proof)));

    /* The proof was right all along. */
    assert_dango_ok(dango_auth_verify("tok", "client", test_cn, test_sn, proof,
                                      sizeof(proof)));
}

static void auth_role_too_long(void **state)
{
    uint8_t proof[DANGO_AUTH_PROOF_LEN];
    char    role[66];

    (void)state;
    memset(role, 'r', 65);
    role[65] = '\0';
    assert_dango_err(DANGO_EINVAL,
                     dango_auth_proof("tok", role, test_cn, test_sn, proof));
    memset(proof, 0, sizeof(proof));
    assert_dango_err(
        DANGO_EAUTH,
        dango_auth_verify("tok", role, test_cn, test_sn, proof, sizeof(proof)));
}

static void auth_env_token(void **state)
{
    (void)state;
    assert_int_equal(unsetenv("DANGO_CLUSTER_TOKEN"), 0);
    assert_null(dango_auth_env_token());
    assert_int_equal(setenv("DANGO_CLUSTER_TOKEN", "", 1), 0);
    assert_null(dango_auth_env_token());
    assert_int_equal(setenv("DANGO_CLUSTER_TOKEN", "abc123", 1), 0);
    assert_non_null(dango_auth_env_token());
    assert_string_equal(dango_auth_env_token(), "abc123");
    assert_int_equal(unsetenv("DANGO_CLUSTER_TOKEN"), 0);
    assert_null(dango_auth_env_token());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(auth_proof_is_hmac_of_role_and_nonces),
        cmocka_unit_test(auth_verify_ok),
        cmocka_unit_test(auth_verify_rejects_mismatch),
        cmocka_unit_test(auth_role_too_long),
        cmocka_unit_test(auth_env_token),
    };

    return cmocka_run_group_tests(tests, test_group_setup, NULL);
}
