/*
 * Cluster token authentication. Peers prove they hold DANGO_CLUSTER_TOKEN
 * without sending it: each side sends a random nonce and answers with
 * HMAC-SHA256(token, role | client nonce | server nonce). The role label
 * differs per direction, so a proof cannot be reflected back.
 */
#ifndef DANGO_NET_AUTH_H
#define DANGO_NET_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <dango/common.h>

#define DANGO_AUTH_NONCE_LEN 16
#define DANGO_AUTH_PROOF_LEN 32

/* Role labels mixed into the proofs (one per direction). */
#define DANGO_AUTH_ROLE_SERVER "dango-srv"
#define DANGO_AUTH_ROLE_CLIENT "dango-cli"

DANGO_BEGIN_DECLS

/* Computes a proof into @out (DANGO_AUTH_PROOF_LEN bytes). Returns 0 or EIO. */
DANGO_API int dango_auth_proof(const char *token, const char *role,
                               const uint8_t *client_nonce,
                               const uint8_t *server_nonce, uint8_t *out);

/* Constant-time check of @proof (@len bytes). Returns 0 or DANGO_EAUTH. */
DANGO_API int dango_auth_verify(const char *token, const char *role,
                                const uint8_t *client_nonce,
                                const uint8_t *server_nonce,
                                const uint8_t *proof, size_t len);

/*
 * Initiator side of the Hello/HelloAck/Auth exchange (used by tcp, shm and
 * rpc alike): checks the target's HelloAck against our nonce and token.
 * On 0, *send_auth_p says whether an Auth frame carrying @client_proof
 * (DANGO_AUTH_PROOF_LEN bytes) must follow. Returns:
 *   - DANGO_EPROTO  malformed reply (no nonce of the right size);
 *   - the target's refusal (a negative status; a positive one is EPROTO);
 *   - DANGO_EAUTH   we have no token but the target demands one, or its
 *                   proof is missing or wrong.
 */
DANGO_API int dango_auth_check_hello_ack(
    const char *token, const uint8_t *client_nonce, const uint8_t *server_nonce,
    size_t server_nonce_len, int32_t status, const uint8_t *proof,
    size_t proof_len, uint8_t *client_proof, int *send_auth_p);

/* Token from DANGO_CLUSTER_TOKEN, or NULL when unset or empty. */
DANGO_API const char *dango_auth_env_token(void);

DANGO_END_DECLS

#endif
