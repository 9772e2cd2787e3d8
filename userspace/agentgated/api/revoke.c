// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Revoking bearer tokens: POST /v1/auth/revoke {"jti": ID, "exp": N} or
 * {"sub": SUBJECT, "until": N}. A jti is kept until the token's exp, or,
 * without one, for the longest lifetime a token may have
 * (--auth-max-lifetime's *); a sub revokes every token of that subject
 * issued (iat) up to now and is kept as long. With no lifetime limit the
 * client says how long (exp, until). The engine stores it (and in a fleet
 * sends it through the log); every host refuses the token on its next
 * request and closes its streams within a second.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "handlers.h"

int auth_revoke(struct req *r)
{
	static const char *const allowed[] = { "jti", "exp", "sub", "until", NULL };
	struct agd_revocation rv = { 0 };
	struct agd_err oe = { 0 };
	const char *jti, *sub, *field;
	int64_t now = (int64_t)time(NULL), longest;
	double until = 0;
	int status = 0, err, got;
	json_t *o = body_object(r, allowed, &status);

	if (!o)
		return status;
	jti = json_string_value(json_object_get(o, "jti"));
	sub = json_string_value(json_object_get(o, "sub"));
	if ((json_object_get(o, "jti") && !jti) || (json_object_get(o, "sub") && !sub) ||
	    !jti == !sub) {
		json_decref(o);
		return send_error(r->conn, 400, "fields 'jti' or 'sub': exactly one, a string");
	}
	if ((jti && json_object_get(o, "until")) || (sub && json_object_get(o, "exp"))) {
		json_decref(o);
		return send_error(r->conn, 400, "field '%s': 'exp' goes with jti, 'until' with sub",
				  jti ? "until" : "exp");
	}
	field = jti ? "exp" : "until";
	got = get_number(r, o, field, 1, 253402300799.0, true, &until, &status);
	rv.kind = jti ? AGD_REVOKE_JTI : AGD_REVOKE_SUB;
	snprintf(rv.value, sizeof(rv.value), "%s", jti ? jti : sub);
	if (got >= 0 && strlen(jti ? jti : sub) > AGD_REVOKED_VALUE_MAX)
		status = send_error(r->conn, 400, "field '%s': 1 to %d bytes", jti ? "jti" : "sub",
				    AGD_REVOKED_VALUE_MAX);
	json_decref(o);
	if (got < 0 || status)
		return status;
	pthread_rwlock_rdlock(&r->h->live_lock);
	longest = r->h->live.life.any;
	pthread_rwlock_unlock(&r->h->live_lock);
	rv.at_s = now;
	if (got)
		rv.until_s = (int64_t)until > now ? (int64_t)until : now;
	else if (longest)
		rv.until_s = now + longest + AGD_AUTH_SKEW;
	else
		return send_error(r->conn, 400, "field '%s': required while tokens have no "
				  "lifetime limit (--auth-max-lifetime *=0)", field);
	err = agd_engine_revoke(r->h->e, &rv, r->tok.subject, &oe);
	if (err)
		return bad_agent(r, err, &oe);
	return agd_reply_json(r->conn, 200,
			      json_pack("{s:{s:s},s:I,s:I}", "revoked", jti ? "jti" : "sub",
					rv.value, "at", (json_int_t)rv.at_s, "until",
					(json_int_t)rv.until_s),
			      NULL);
}
