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

/* Token from DANGO_CLUSTER_TOKEN, or NULL when unset or empty. */
DANGO_API const char *dango_auth_env_token(void);

DANGO_END_DECLS

#endif
