/*
 * HMAC-SHA256 proofs for cluster token authentication (OpenSSL libcrypto).
 * See auth.h for the exchange.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <dango/error.h>
#include "net/auth.h"

int dango_auth_proof(const char *token, const char *role,
                     const uint8_t *client_nonce, const uint8_t *server_nonce,
                     uint8_t *out)
{
    uint8_t      msg[64 + 2 * DANGO_AUTH_NONCE_LEN];
    size_t       rlen = strlen(role);
    unsigned int olen = 0;

    if (rlen > 64) {
        return DANGO_EINVAL;
    }

    memcpy(msg, role, rlen);
    memcpy(msg + rlen, client_nonce, DANGO_AUTH_NONCE_LEN);
    memcpy(msg + rlen + DANGO_AUTH_NONCE_LEN, server_nonce,
           DANGO_AUTH_NONCE_LEN);
    if (HMAC(EVP_sha256(), token, (int)strlen(token), msg,
             rlen + 2 * DANGO_AUTH_NONCE_LEN, out, &olen) == NULL ||
        (olen != DANGO_AUTH_PROOF_LEN)) {
        return DANGO_EIO;
    }

    return 0;
}

int dango_auth_verify(const char *token, const char *role,
                      const uint8_t *client_nonce, const uint8_t *server_nonce,
                      const uint8_t *proof, size_t len)
{
    uint8_t expect[DANGO_AUTH_PROOF_LEN];

    if ((proof == NULL) || (len != DANGO_AUTH_PROOF_LEN)) {
        return DANGO_EAUTH;
    }

    if (dango_auth_proof(token, role, client_nonce, server_nonce, expect) !=
        0) {
        return DANGO_EAUTH;
    }

    return CRYPTO_memcmp(expect, proof, DANGO_AUTH_PROOF_LEN) == 0
               ? 0
               : DANGO_EAUTH;
}

int dango_auth_check_hello_ack(const char *token, const uint8_t *client_nonce,
                               const uint8_t *server_nonce,
                               size_t server_nonce_len, int32_t status,
                               const uint8_t *proof, size_t proof_len,
                               uint8_t *client_proof, int *send_auth_p)
{
    int rc;

    *send_auth_p = 0;
    if ((server_nonce == NULL) || (server_nonce_len != DANGO_AUTH_NONCE_LEN)) {
        return DANGO_EPROTO;
    }

    if (status != 0) {
        return (status > 0) ? DANGO_EPROTO : status;
    }

    if (token == NULL) {
        /* A proof from the target means it holds a token we lack. */
        return (proof_len != 0) ? DANGO_EAUTH : 0;
    }

    rc = dango_auth_verify(token, DANGO_AUTH_ROLE_SERVER, client_nonce,
                           server_nonce, proof, proof_len);
    if (rc != 0) {
        return rc;
    }

    rc = dango_auth_proof(token, DANGO_AUTH_ROLE_CLIENT, client_nonce,
                          server_nonce, client_proof);
    if (rc == 0) {
        *send_auth_p = 1;
    }

    return rc;
}

const char *dango_auth_env_token(void)
{
    const char *t = getenv("DANGO_CLUSTER_TOKEN");

    return ((t == NULL) || (*t == '\0')) ? NULL : t;
}
