/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Bearer tokens: JWS compact JWTs verified with the keys of keys.h (HS256,
 * RS256, ES256, EdDSA; the key fixes the algorithm, "none" and anything
 * else are refused). "exp" is required; "nbf" and "iat" may not lie in the
 * future beyond AGD_AUTH_SKEW; the token's lifetime (exp - iat, or exp -
 * now without iat) may not exceed the maximum its scopes allow; the scopes
 * come from the "scope" claim (a space-separated string, as OAuth 2.0
 * writes it) or a "scopes" array. Revocation (by jti or sub) is the
 * caller's: core/revoked.h.
 */
#ifndef AGENTGATED_AUTH_H
#define AGENTGATED_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/err.h"
#include "keys.h"

enum agd_scope {
	AGD_SCOPE_RATINGS_WRITE = 1u << 0, /* ratings:write */
	AGD_SCOPE_AGENTS_ADMIN = 1u << 1,  /* agents:admin */
	AGD_SCOPE_STREAM_READ = 1u << 2,   /* stream:read */
	AGD_SCOPE_METRICS_READ = 1u << 3,  /* metrics:read */
};
#define AGD_SCOPES 4

#define AGD_SUBJECT_MAX 128
#define AGD_JTI_MAX 128
#define AGD_TOKEN_MAX 8192 /* bytes of a token */
#define AGD_AUTH_SKEW 30   /* seconds a clock may be ahead: iat, nbf */

/* Why a token was refused: the metric's reason label (auth_refusals_total). */
#define AGD_AUTH_REASONS(X)                                                                \
	X(MISSING, "missing")             /* no token */                                   \
	X(MALFORMED, "malformed")         /* not three base64url parts of JSON */          \
	X(ALG, "alg")                     /* an algorithm no key of that kid has */       \
	X(UNKNOWN_KID, "unknown_kid")     /* a kid no key has */                           \
	X(SIGNATURE, "signature")         /* no key's signature */                         \
	X(EXPIRED, "expired")             /* exp passed, or missing */                     \
	X(NOT_YET_VALID, "not_yet_valid") /* nbf or iat in the future */                   \
	X(LIFETIME, "lifetime")           /* longer-lived than its scopes allow */         \
	X(RETIRED_KEY, "retired_key")     /* issued after its key was retired */           \
	X(REVOKED, "revoked")             /* its jti or sub is revoked */                  \
	X(SCOPE, "scope")                 /* valid, without the route's scope (403) */

#define AGD_AUTH_REASON_ENUM(id, name) AGD_AUTH_##id,
enum agd_auth_reason { AGD_AUTH_OK = 0, AGD_AUTH_REASONS(AGD_AUTH_REASON_ENUM) AGD_AUTH__MAX };
#undef AGD_AUTH_REASON_ENUM

const char *agd_auth_reason_name(enum agd_auth_reason r);

/* The longest lifetime a token may have, per scope and for any token (0:
 * no limit): a token's limit is the smallest of its scopes' and the
 * default. */
struct agd_lifetimes {
	int64_t scope[AGD_SCOPES]; /* seconds, by bit index of enum agd_scope */
	int64_t any;
};

/* "stream:read=15m,*=24h" (durations as agd_ttl_parse reads them, 0:
 * none). 0, or -EINVAL with err naming the part. */
int agd_lifetimes_parse(const char *spec, struct agd_lifetimes *out, struct agd_err *err);

struct agd_token {
	unsigned int scopes; /* enum agd_scope */
	char subject[AGD_SUBJECT_MAX + 1];
	char jti[AGD_JTI_MAX + 1]; /* "" when none */
	char kid[AGD_KID_MAX + 1];
	int64_t iat; /* -1 when none */
	int64_t exp;
};

struct agd_auth {
	const struct agd_keyset *keys;
	struct agd_lifetimes life;
};

/* Verifies `token` (the text after "Bearer ") at time now: 0 and *out, or
 * -EACCES with the reason and the sentence for the client in why. */
int agd_token_verify(const char *token, const struct agd_auth *a, time_t now,
		    struct agd_token *out, enum agd_auth_reason *reason, char *why, size_t why_len);

/* --auth-revoked FILE: an operator's denylist, one "jti ID" or "sub
 * SUBJECT" per line ('#' comments, blank lines), at most AGD_DENYLIST_MAX
 * entries; a listed sub refuses every token of that subject. */
#define AGD_DENYLIST_MAX 100000
struct agd_denylist;
/* 0 and *out (NULL for no path), or negative errno with err naming
 * file:line. */
int agd_denylist_load(const char *path, struct agd_denylist **out, struct agd_err *err);
bool agd_denylist_has(const struct agd_denylist *d, const char *jti, const char *sub);
void agd_denylist_free(struct agd_denylist *d);

/* "ratings:write" -> AGD_SCOPE_RATINGS_WRITE; 0 when unknown. */
unsigned int agd_scope_parse(const char *name, size_t len);
const char *agd_scope_name(unsigned int scope);

#endif
