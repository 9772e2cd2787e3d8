// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The request helpers the handlers of more than one resource use
 * (handlers.h): the body as a JSON object of known fields, a number field,
 * the engine's refusals, the answer of a token taken from a bucket.
 */
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/jsonguard.h"
#include "handlers.h"

/* The body as one JSON object whose keys are all in `allowed` (NULL-ended);
 * NULL after sending the 400 that names what is wrong. */
json_t *body_object(struct req *r, const char *const *allowed, int *status)
{
	json_error_t jerr;
	json_t *o, *v;
	const char *key;

	if (!r->body_len) {
		*status = send_error(r->conn, 400, "request body: expected a JSON object");
		return NULL;
	}
	o = agd_json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!o) {
		*status = send_error(r->conn, 400, "request body: invalid JSON at line %d column %d: "
				     "%s", jerr.line, jerr.column, jerr.text);
		return NULL;
	}
	if (!json_is_object(o)) {
		json_decref(o);
		*status = send_error(r->conn, 400, "request body: expected a JSON object");
		return NULL;
	}
	json_object_foreach(o, key, v) {
		const char *const *a = allowed;

		while (*a && strcmp(*a, key))
			a++;
		if (!*a) {
			*status = send_error(r->conn, 400, "field '%s': unknown field", key);
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

/* A non-negative number field: 1 found, 0 absent, -1 after sending 400. */
int get_number(struct req *r, json_t *o, const char *field, double lo, double hi,
	       bool integer, double *out, int *status)
{
	json_t *v = json_object_get(o, field);
	double x;

	if (!v)
		return 0;
	if (!json_is_number(v)) {
		*status = send_error(r->conn, 400, "field '%s': expected a number", field);
		return -1;
	}
	x = json_number_value(v);
	if (!isfinite(x) || x < lo || x > hi || (integer && x != floor(x))) {
		*status = send_error(r->conn, 400, "field '%s': %g is not %s from %g to %g", field, x,
				     integer ? "a whole number" : "a number", lo, hi);
		return -1;
	}
	*out = x;
	return 1;
}

int bad_agent(struct req *r, int err, const struct agd_err *oe)
{
	return send_error(r->conn, agd_engine_status(err), "%s", oe->msg);
}

/* 200 allowed, or 429 with Retry-After (whole seconds, at least 1). */
int send_consume(struct req *r, const struct ag_consume_result *res, json_t *extra)
{
	char hdr[64];
	json_t *o = extra ? extra : json_object();

	json_object_set_new(o, "allowed", json_boolean(res->allowed));
	json_object_set_new(o, "remaining", json_real(res->remaining));
	if (res->allowed)
		return agd_reply_json(r->conn, 200, o, NULL);
	json_object_set_new(o, "error", json_string("too_many_requests"));
	json_object_set_new(o, "message", json_string("bucket empty: retry later"));
	json_object_set_new(o, "retry_after_ms",
			    json_integer((json_int_t)((res->retry_after_ns + 999999) / 1000000)));
	snprintf(hdr, sizeof(hdr), "Retry-After: %llu\r\n",
		 (unsigned long long)((res->retry_after_ns + 999999999ULL) / 1000000000ULL) ?: 1);
	return agd_reply_json(r->conn, 429, o, hdr);
}
