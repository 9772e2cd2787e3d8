/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The keys that verify bearer tokens (auth.h): HS256 secrets and RS256,
 * ES256 (P-256) and EdDSA (Ed25519) public keys. Each key fixes its
 * algorithm: a token naming another is refused, so a public key can never
 * be used as an HMAC secret. Several keys are active at once, told apart
 * by the token's "kid".
 *
 * Where they come from:
 *   --auth-key-file FILE  one key without a kid: an HS256 secret (the file's
 *                         bytes, one trailing newline removed, at least 32)
 *                         or a PEM public key;
 *   --auth-keys DIR       KID.pem (a PEM public key) and KID.hs256 (a
 *                         secret) files, the kid their name; KID.retired
 *                         beside one (a Unix time or an RFC 3339 UTC time,
 *                         empty: the file's mtime) makes that key verify
 *                         only: its tokens issued after that time are
 *                         refused, the older ones age out.
 * A private key, an RSA key under 2048 bits, an EC key not on P-256 or a
 * secret that looks like PEM is refused with the file named.
 */
#ifndef AGENTGATED_KEYS_H
#define AGENTGATED_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define AGD_AUTH_KEY_MAX 4096 /* bytes of a secret or PEM file */
#define AGD_KID_MAX 64
#define AGD_KEYS_MAX 64 /* keys in a directory */

enum agd_alg {
	AGD_ALG_NONE = 0,
	AGD_ALG_HS256,
	AGD_ALG_RS256,
	AGD_ALG_ES256,
	AGD_ALG_EDDSA,
};

struct agd_key {
	char kid[AGD_KID_MAX + 1]; /* "": the --auth-key-file key */
	enum agd_alg alg;
	unsigned char secret[AGD_AUTH_KEY_MAX]; /* HS256 */
	size_t secret_len;
	void *pkey;      /* EVP_PKEY * of the others */
	int64_t retired; /* > 0: tokens issued after this (Unix s) are refused */
	char file[256];
};

struct agd_keyset {
	struct agd_key *keys;
	size_t n;
};

/* Loads the keys of file (may be NULL or "") and dir (likewise) into a new
 * set (*out, NULL when neither is given). 0, or negative errno with err
 * naming the file and what is wrong with it. */
int agd_keyset_load(const char *file, const char *dir, struct agd_keyset **out,
		   struct agd_err *err);
void agd_keyset_free(struct agd_keyset *ks);

/* "HS256", "RS256", "ES256", "EdDSA"; NONE for any other name. */
enum agd_alg agd_alg_parse(const char *name);
const char *agd_alg_name(enum agd_alg alg);

/* Whether sig is k's signature of msg (JWS: ES256 as r || s, 64 bytes). */
bool agd_key_verify(const struct agd_key *k, const unsigned char *msg, size_t len,
		    const unsigned char *sig, size_t sig_len);

#endif
