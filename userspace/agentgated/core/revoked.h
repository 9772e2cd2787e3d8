/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Revoked bearer tokens: one token by its jti, or every token of a subject
 * (sub) issued up to the revocation (iat at or before it; a token without
 * iat while the revocation lasts). Each is kept until the tokens it names
 * have expired anyway (until_s), in LMDB and in a hash the API asks on
 * every request; at most AGD_REVOKED_MAX at once.
 */
#ifndef AGENTGATED_REVOKED_H
#define AGENTGATED_REVOKED_H

#include <stdbool.h>
#include <stdint.h>

#define AGD_REVOKED_MAX 100000
#define AGD_REVOKED_VALUE_MAX 128

enum agd_revoke_kind {
	AGD_REVOKE_JTI = 'j',
	AGD_REVOKE_SUB = 's',
};

struct agd_revocation {
	enum agd_revoke_kind kind;
	char value[AGD_REVOKED_VALUE_MAX + 1];
	int64_t at_s;    /* when it was made (iat at or before: revoked, for sub) */
	int64_t until_s; /* kept until then */
};

#endif
