/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Bearer tokens: HS256 JWTs verified with libjwt. The algorithm is pinned
 * to HS256 (a token naming any other, "none" included, is refused), "exp"
 * is required and checked, and the scopes come from the "scope" claim (a
 * space-separated string, as OAuth 2.0 writes it) or a "scopes" array.
 */
#ifndef AGENTGATED_AUTH_H
#define AGENTGATED_AUTH_H

#include <stddef.h>
#include <time.h>
#include "core/err.h"

enum agd_scope {
	AGD_SCOPE_RATINGS_WRITE = 1u << 0, /* ratings:write */
	AGD_SCOPE_AGENTS_ADMIN = 1u << 1,  /* agents:admin */
	AGD_SCOPE_STREAM_READ = 1u << 2,   /* stream:read */
	AGD_SCOPE_METRICS_READ = 1u << 3,  /* metrics:read */
};

#define AGD_AUTH_KEY_MAX 4096
#define AGD_SUBJECT_MAX 128

struct agd_token {
	unsigned int scopes; /* enum agd_scope */
	char subject[AGD_SUBJECT_MAX + 1];
};

/* Verifies `token` (the text after "Bearer ") with key at time now.
 * 0 and *out filled, or -EACCES with the reason in why. */
int agd_token_verify(const char *token, const unsigned char *key, size_t key_len, time_t now,
		    struct agd_token *out, char *why, size_t why_len);

/* "ratings:write" -> AGD_SCOPE_RATINGS_WRITE; 0 when unknown. */
unsigned int agd_scope_parse(const char *name, size_t len);
const char *agd_scope_name(unsigned int scope);

/* Reads an HS256 secret file: its bytes with one trailing newline removed;
 * at least 32 bytes. 0, or negative errno with the reason in why. */
int agd_auth_key_load(const char *path, unsigned char *key, size_t *len, struct agd_err *why);

#endif
