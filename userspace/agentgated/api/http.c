// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <arpa/inet.h>
#include <civetweb.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "deadline.h"
#include "framing.h"
#include "http.h"
#include "reply.h"
#include "core/jsonguard.h"
#include "core/lister.h"
#include "reqlimits.h"
#include "metrics.h"
#include "core/rating.h"
#include "core/store.h"
#include "stream.h"
#include "tls.h"

struct agd_http {
	struct mg_context *mg;
	struct ag_engine *e;
	pthread_rwlock_t live_lock;
	struct agd_http_live live;
	struct agd_metrics metrics;
	pthread_mutex_t ready_lock;
	bool ready;
	char not_ready[128];
	struct agd_stream *stream;
	struct agd_fleet *fleet;
	bool tls;
	char tls_cert[4096], tls_key[4096];
	char tls_err[512]; /* set by init_ssl when it fails */
	struct agd_deadlines *deadlines; /* of request bodies */
	struct agd_lister *lister;       /* GET /v1/agents pages */
};

/* One request as the handlers see it. */
struct req {
	struct agd_http *h;
	struct mg_connection *conn;
	const struct mg_request_info *ri;
	const char *param; /* the {agent} of the path */
	char *body;
	size_t body_len;
	struct ag_token tok; /* subject "" when auth is off */
};

/* ---- responses ------------------------------------------------------------------ */

#define send_error(conn, status, ...) agd_reply_error(conn, status, NULL, __VA_ARGS__)



/* ---- request bodies ------------------------------------------------------------ */

/*
 * Expect (RFC 9110, 10.1.1): a client that sent "Expect: 100-continue" waits
 * for "100 Continue" before its body (curl does for bodies over 1 KiB, and
 * waits a second without it). Sent here, once the request has been routed,
 * authorized and its declared size accepted, just before the body is read;
 * a request refused earlier gets its final status instead. HTTP/1.0 clients
 * never wait for it: ignored. Any other expectation: 417, closed.
 */
static int expect_continue(struct req *r)
{
	const char *v = mg_get_header(r->conn, "Expect");
	size_t n;

	if (!v)
		return 0;
	while (*v == ' ' || *v == '\t')
		v++;
	n = strlen(v);
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (n != 12 || strncasecmp(v, "100-continue", 12))
		return agd_reply_error(r->conn, 417, "Connection: close\r\n",
				      "header 'Expect': only 100-continue is understood");
	if (!strcmp(r->ri->http_version, "1.0"))
		return 0;
	mg_printf(r->conn, "HTTP/1.1 100 Continue\r\n\r\n");
	return 0;
}

/* Reads the whole body, refusing (413) before reading more than max_body.
 * CivetWeb decodes chunks and gives -1 for a chunk size line that is not
 * hex digits and CRLF (an extension, a sign, "0x", whitespace, a bare LF),
 * or chunk data not followed by CRLF: 400, closed. */
static int read_body(struct req *r)
{
	long long declared = r->ri->content_length;
	bool bad_chunks = false;
	__u64 max;
	size_t cap, len = 0;
	int deadline, refused;
	char *buf;

	pthread_rwlock_rdlock(&r->h->live_lock);
	max = r->h->live.max_body;
	pthread_rwlock_unlock(&r->h->live_lock);
	if (declared > 0 && (__u64)declared > max)
		return send_error(r->conn, 413, "request body of %lld bytes is over the limit of "
				  "%llu bytes (--max-body)", declared, (unsigned long long)max);
	refused = expect_continue(r);
	if (refused)
		return refused;
	cap = declared > 0 ? (size_t)declared + 1 : 4096;
	buf = malloc(cap);
	if (!buf)
		return send_error(r->conn, 500, "out of memory");
	deadline = agd_deadline_arm(r->h->deadlines, r->conn);
	for (;;) {
		int n;

		if (len + 1 >= cap) {
			char *b;

			if (len > max) {
				free(buf);
				return send_error(r->conn, 413, "request body is over the limit of %llu "
						  "bytes (--max-body)", (unsigned long long)max);
			}
			cap *= 2;
			b = realloc(buf, cap);
			if (!b) {
				free(buf);
				return send_error(r->conn, 500, "out of memory");
			}
			buf = b;
		}
		n = mg_read(r->conn, buf + len, cap - len - 1);
		if (n <= 0) {
			bad_chunks = n < 0 && agd_request_chunked(r->conn);
			break;
		}
		len += (size_t)n;
	}
	if (agd_deadline_disarm(r->h->deadlines, deadline)) {
		free(buf);
		return send_error(r->conn, 408, "request body not received within the request "
				  "timeout (--request-timeout); %zu bytes came", len);
	}
	if (bad_chunks) {
		free(buf);
		return agd_reply_error(r->conn, 400, "Connection: close\r\n",
				      "request body: malformed chunked encoding (a chunk size is "
				      "hex digits ending in CRLF, without extensions; chunk data "
				      "ends in CRLF)");
	}
	if (len > max) {
		free(buf);
		return send_error(r->conn, 413, "request body is over the limit of %llu bytes "
				  "(--max-body)", (unsigned long long)max);
	}
	if (declared >= 0 && (long long)len != declared) {
		free(buf);
		return agd_reply_error(r->conn, 400, "Connection: close\r\n",
				      "request body ended after %zu of %lld bytes", len, declared);
	}
	buf[len] = 0;
	r->body = buf;
	r->body_len = len;
	return 0;
}

/* The body as one JSON object whose keys are all in `allowed` (NULL-ended);
 * NULL after sending the 400 that names what is wrong. */
static json_t *body_object(struct req *r, const char *const *allowed, int *status)
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
static int get_number(struct req *r, json_t *o, const char *field, double lo, double hi,
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

/* ---- agents -------------------------------------------------------------------- */

static int bad_agent(struct req *r, int err, const struct ag_op_err *oe)
{
	return send_error(r->conn, ag_engine_status(err), "%s", oe->msg);
}

static json_t *rules_of(struct agd_http *h, __u32 slot)
{
	struct ag_rule *rules = NULL;
	json_t *a = json_array();
	size_t n = 0, i;

	if (ag_rule_list(ag_engine_ctx(h->e), &rules, &n))
		return a;
	for (i = 0; i < n; i++) {
		char prefix[AG_PREFIX_STRLEN];

		if (rules[i].slot != slot)
			continue;
		ag_prefix_format(&rules[i], prefix, sizeof(prefix));
		json_array_append_new(a, json_pack("{s:s,s:i}", "prefix", prefix, "port",
						   rules[i].port));
	}
	free(rules);
	return a;
}

static int send_agent(struct req *r, int status)
{
	struct ag_agent_view v;
	json_t *o;

	if (ag_engine_agent_view(r->h->e, r->param, &v))
		return send_error(r->conn, 404, "unknown agent '%s'", r->param);
	o = ag_agent_view_json(&v);
	json_object_set_new(o, "rules", rules_of(r->h, v.slot));
	return agd_reply_json(r->conn, status, o, NULL);
}

static int agent_get(struct req *r)
{
	return send_agent(r, 200);
}

/* GET /v1/agents/{agent}/explain: ag_engine_explain's object. */
static int agent_explain(struct req *r)
{
	struct ag_op_err oe = { "" };
	void *o = NULL;
	int err = ag_engine_explain(r->h->e, r->param, &o, &oe);

	if (err)
		return bad_agent(r, err, &oe);
	return agd_reply_json(r->conn, 200, o, NULL);
}

/* GET /v1/agents?limit=N&after=NAME: a page in name order, read from the
 * store by key (engine.c) in the lister's thread (lister.h), so a deep page
 * costs what the first one does. */
static int agents_list(struct req *r)
{
	char after[AG_NAME_MAX + 1] = "", lim[16] = "", next[AG_NAME_MAX + 1];
	const char *q = r->ri->query_string;
	struct ag_agent_view *views = NULL;
	size_t n = 0, i, limit = 100;
	json_t *arr;
	char *end;
	int err, got;

	got = q ? mg_get_var(q, strlen(q), "after", after, sizeof(after)) : -1;
	if (got == -2)
		return send_error(r->conn, 400, "query 'after': too long");
	if (got > 0 && strlen(after) != (size_t)got)
		return send_error(r->conn, 400, "query 'after': %%00 (NUL) is not accepted");
	if (after[0] && ag_name_check(after))
		return send_error(r->conn, 400, "query 'after': %s", ag_errmsg());
	if (q && mg_get_var(q, strlen(q), "limit", lim, sizeof(lim)) > 0) {
		unsigned long v = strtoul(lim, &end, 10);

		if (*end || !v || v > 1000)
			return send_error(r->conn, 400, "query 'limit': expected 1 to 1000");
		limit = v;
	}
	err = agd_lister_page(r->h->lister, after, limit, &views, &n, next);
	if (err == -EBUSY)
		return agd_reply_error(r->conn, 503, "Retry-After: 1\r\n", "the state store has "
				      "no reader slot free: retry");
	if (err)
		return send_error(r->conn, ag_engine_status(err), "cannot read the agents: %s",
				  ag_store_strerror(err));
	arr = json_array();
	for (i = 0; i < n; i++)
		json_array_append_new(arr, ag_agent_view_json(&views[i]));
	free(views);
	return agd_reply_json(r->conn, 200, json_pack("{s:o,s:o}", "agents", arr, "next",
						 next[0] ? json_string(next) : json_null()),
			 NULL);
}

static int parse_burst(struct req *r, json_t *v, struct ag_policy *own, int *status)
{
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end;
		double x = strtod(s, &end);

		if (end == s || strcmp(end, "s") || !isfinite(x) || x <= 0 || x > 3600) {
			*status = send_error(r->conn, 400, "field 'burst': expected tokens (a whole "
					     "number) or seconds of rate such as \"1.5s\" (up to 3600s)");
			return -1;
		}
		own->burst = x;
		own->burst_kind = AG_BURST_SECONDS;
		return 0;
	}
	if (!json_is_number(v) || json_number_value(v) < 1 ||
	    json_number_value(v) != floor(json_number_value(v)) ||
	    json_number_value(v) > (double)AG_BURST_MAX) {
		*status = send_error(r->conn, 400, "field 'burst': expected tokens (a whole number "
				     "from 1 to 2^40) or seconds of rate such as \"1.5s\"");
		return -1;
	}
	own->burst = json_number_value(v);
	own->burst_kind = AG_BURST_TOKENS;
	return 0;
}

/* PUT body -> change; null values return a field to the global default. */
static int parse_change(struct req *r, json_t *o, struct ag_agent_change *c, int *status)
{
	static const struct {
		const char *name;
		unsigned int bit;
		size_t off;
	} nums[] = {
		{ "rate", AG_POL_R0, offsetof(struct ag_policy, r0) },
		{ "r_min", AG_POL_R_MIN, offsetof(struct ag_policy, r_min) },
		{ "r_max", AG_POL_R_MAX, offsetof(struct ag_policy, r_max) },
		{ "alpha", AG_POL_ALPHA, offsetof(struct ag_policy, alpha) },
	};
	json_t *v;
	size_t i;

	memset(c, 0, sizeof(*c));
	c->fill_tokens = -1;
	for (i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		double x;

		v = json_object_get(o, nums[i].name);
		if (json_is_null(v)) {
			c->unset |= nums[i].bit;
			continue;
		}
		switch (get_number(r, o, nums[i].name, 0, 1e10, false, &x, status)) {
		case -1:
			return -1;
		case 1:
			*(double *)((char *)&c->own + nums[i].off) = x;
			c->set |= nums[i].bit;
		}
	}
	v = json_object_get(o, "burst");
	if (json_is_null(v))
		c->unset |= AG_POL_BURST;
	else if (v && !parse_burst(r, v, &c->own, status))
		c->set |= AG_POL_BURST;
	else if (v)
		return -1;
	v = json_object_get(o, "unit");
	if (json_is_null(v)) {
		c->unset |= AG_POL_UNIT;
	} else if (v) {
		const char *u = json_string_value(v);

		if (!u || (strcmp(u, "pps") && strcmp(u, "bps"))) {
			*status = send_error(r->conn, 400, "field 'unit': expected \"pps\" or \"bps\"");
			return -1;
		}
		c->own.unit = strcmp(u, "bps") ? AG_UNIT_PPS : AG_UNIT_BPS;
		c->set |= AG_POL_UNIT;
	}
	v = json_object_get(o, "pinned");
	if (json_is_null(v)) {
		c->unset |= AG_POL_PINNED;
	} else if (v) {
		if (!json_is_boolean(v)) {
			*status = send_error(r->conn, 400, "field 'pinned': expected true or false");
			return -1;
		}
		c->own.pinned = json_is_true(v);
		c->set |= AG_POL_PINNED;
	}
	return 0;
}

static int agent_put(struct req *r)
{
	static const char *const allowed[] = { "rate", "burst", "unit", "r_min", "r_max",
					       "alpha", "pinned", NULL };
	struct ag_agent_change c;
	struct ag_op_err oe = { "" };
	int status = 0, err;
	bool created;
	json_t *o;

	o = body_object(r, allowed, &status);
	if (!o)
		return status;
	if (parse_change(r, o, &c, &status)) {
		json_decref(o);
		return status;
	}
	json_decref(o);
	err = ag_engine_agent_put(r->h->e, r->param, &c, r->tok.subject, &created, &oe);
	if (err)
		return bad_agent(r, err, &oe);
	return send_agent(r, created ? 201 : 200);
}

static int agent_delete(struct req *r)
{
	struct ag_op_err oe = { "" };
	int err = ag_engine_agent_delete(r->h->e, r->param, r->tok.subject, &oe);

	if (err)
		return bad_agent(r, err, &oe);
	return agd_reply_json(r->conn, 200, json_pack("{s:s}", "deleted", r->param), NULL);
}

static int agent_reset(struct req *r)
{
	struct ag_op_err oe = { "" };
	struct ag_agent_view v;
	int err = ag_engine_agent_reset(r->h->e, r->param, r->tok.subject, &oe);

	if (err)
		return bad_agent(r, err, &oe);
	if (ag_engine_agent_view(r->h->e, r->param, &v))
		return send_error(r->conn, 404, "unknown agent '%s'", r->param);
	return agd_reply_json(r->conn, 200, json_pack("{s:s,s:f}", "agent", r->param, "tokens",
						 v.tokens), NULL);
}

/* {"tokens": n}: a whole number from 1 to 2^40; `required` or default 1. */
static int tokens_field(struct req *r, bool required, __u64 *tokens, int *status)
{
	static const char *const allowed[] = { "tokens", NULL };
	json_t *o;
	double x = 1;
	int found;

	if (!r->body_len && !required) {
		*tokens = 1;
		return 0;
	}
	o = body_object(r, allowed, status);
	if (!o)
		return -1;
	found = get_number(r, o, "tokens", 1, (double)AG_BURST_MAX, true, &x, status);
	json_decref(o);
	if (found < 0)
		return -1;
	if (!found && required) {
		*status = send_error(r->conn, 400, "field 'tokens': required");
		return -1;
	}
	*tokens = (__u64)x;
	return 0;
}

static int agent_drain(struct req *r)
{
	struct ag_op_err oe = { "" };
	double remaining = 0;
	__u64 tokens;
	int status, err;

	if (tokens_field(r, true, &tokens, &status))
		return status;
	err = ag_engine_agent_drain(r->h->e, r->param, tokens, r->tok.subject, &remaining, &oe);
	if (err)
		return bad_agent(r, err, &oe);
	return agd_reply_json(r->conn, 200, json_pack("{s:s,s:f}", "agent", r->param, "tokens",
						 remaining), NULL);
}

/* 200 allowed, or 429 with Retry-After (whole seconds, at least 1). */
static int send_consume(struct req *r, const struct ag_consume_result *res, json_t *extra)
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

static int agent_consume(struct req *r)
{
	struct ag_consume_result res;
	struct ag_op_err oe = { "" };
	__u64 tokens;
	int status, err;

	if (tokens_field(r, false, &tokens, &status))
		return status;
	err = ag_engine_consume(r->h->e, r->param, tokens, &res, &oe);
	if (err)
		return bad_agent(r, err, &oe);
	return send_consume(r, &res, NULL);
}

/* ---- ratings ------------------------------------------------------------------- */

static bool is_ndjson(const struct mg_connection *conn)
{
	const char *ct = mg_get_header(conn, "Content-Type");

	return ct && (!strncasecmp(ct, "application/x-ndjson", 20) ||
		      !strncasecmp(ct, "application/ndjson", 18) ||
		      !strncasecmp(ct, "application/jsonl", 17));
}

static int invalid_ratings(struct req *r, const struct ag_rating_batch *b)
{
	json_t *errs = json_array(), *o;
	char msg[256];
	size_t i;

	ag_engine_count_invalid(r->h->e, b->n_errors);
	for (i = 0; i < b->n_errors && i < AG_RATING_ERRORS_MAX; i++) {
		const struct ag_rating_error *x = &b->errors[i];

		json_array_append_new(errs, json_pack("{s:I,s:s,s:s}", "index", (json_int_t)x->index,
						      "field", x->field, "reason", x->reason));
	}
	if (b->n_errors)
		snprintf(msg, sizeof(msg), "%zu invalid rating%s, none applied; first: item %zu%s%s%s: %s",
			 b->n_errors, b->n_errors == 1 ? "" : "s", b->errors[0].index,
			 b->errors[0].field[0] ? " field '" : "", b->errors[0].field,
			 b->errors[0].field[0] ? "'" : "", b->errors[0].reason);
	else
		snprintf(msg, sizeof(msg), "invalid ratings, none applied");
	o = json_pack("{s:s,s:s,s:o}", "error", "bad_request", "message", msg, "errors", errs);
	return agd_reply_json(r->conn, 400, o, NULL);
}

static int ratings_post(struct req *r)
{
	struct ag_rating_batch b;
	struct ag_job job = { 0 };
	json_t *agents, *o;
	size_t i, b_n;
	int err;

	job.received_ns = ag_now_ns();
	err = ag_ratings_parse(r->body, r->body_len, is_ndjson(r->conn) ? AG_RATING_NDJSON :
									  AG_RATING_JSON, &b);
	if (err == -EINVAL) {
		err = invalid_ratings(r, &b);
		ag_rating_batch_free(&b);
		return err;
	}
	if (err)
		return send_error(r->conn, 500, "out of memory");
	if (!b.n) {
		ag_rating_batch_free(&b);
		return send_error(r->conn, 400, "request body: no ratings");
	}
	job.items = b.items;
	job.n = b_n = b.n;
	err = ag_engine_rate(r->h->e, &job);
	ag_rating_batch_free(&b);
	if (err) {
		ag_job_release(&job);
		return send_error(r->conn, ag_engine_status(err), "%s", job.msg[0] ? job.msg :
				  strerror(-err));
	}
	agents = json_array();
	for (i = 0; i < job.n_agents; i++) {
		const struct ag_job_agent *a = &job.agents[i];

		json_array_append_new(agents, json_pack("{s:s,s:f,s:f,s:I}", "agent", a->name,
							"rate", a->rate, "mean_score",
							a->mean_score, "ratings",
							(json_int_t)a->ratings));
	}
	o = json_pack("{s:I,s:I,s:o}", "applied", (json_int_t)job.applied, "duplicates",
		      (json_int_t)job.duplicates, "agents", agents);
	/* Fleet: the log's sequence; refusals by the log; or kept in the
	 * outbox while the log is unreachable (202: accepted, not applied). */
	if (job.routed.sequence)
		json_object_set_new(o, "sequence", json_integer((json_int_t)job.routed.sequence));
	if (job.routed.refused)
		json_object_set_new(o, "refused", json_integer((json_int_t)job.routed.refused));
	if (job.routed.queued)
		json_object_set_new(o, "queued", json_integer((json_int_t)b_n));
	ag_job_release(&job);
	return agd_reply_json(r->conn, job.routed.queued ? 202 : 200, o, NULL);
}

/* ---- rules -------------------------------------------------------------------- */

static int rules_get(struct req *r)
{
	struct ag_ctx *ctx = ag_engine_ctx(r->h->e);
	struct ag_rule *rules = NULL;
	size_t n = 0, i;
	json_t *a;

	if (ag_rule_list(ctx, &rules, &n))
		return send_error(r->conn, 500, "cannot read the rules: %s", ag_errmsg());
	a = json_array();
	for (i = 0; i < n; i++) {
		char prefix[AG_PREFIX_STRLEN];
		struct ag_agent owner;

		if (ag_agent_get_slot(ctx, rules[i].slot, &owner))
			owner.name[0] = 0;
		ag_prefix_format(&rules[i], prefix, sizeof(prefix));
		json_array_append_new(a, json_pack("{s:s,s:i,s:s}", "prefix", prefix, "port",
						   rules[i].port, "agent", owner.name));
	}
	free(rules);
	return agd_reply_json(r->conn, 200, a, NULL);
}

/* prefix and port from a body object or, for DELETE, the query string. */
static int rule_target(struct req *r, json_t *o, struct ag_rule *rule, int *status)
{
	char prefix[AG_PREFIX_STRLEN] = "", port[16] = "";
	const char *q = r->ri->query_string;
	double p = 0;

	if (o) {
		json_t *v = json_object_get(o, "prefix");

		if (!json_is_string(v)) {
			*status = send_error(r->conn, 400, "field 'prefix': required, a string such "
					     "as \"10.0.0.0/24\"");
			return -1;
		}
		snprintf(prefix, sizeof(prefix), "%s", json_string_value(v));
		if (get_number(r, o, "port", 0, 65535, true, &p, status) < 0)
			return -1;
	} else if (q) {
		mg_get_var(q, strlen(q), "prefix", prefix, sizeof(prefix));
		if (mg_get_var(q, strlen(q), "port", port, sizeof(port)) > 0) {
			__u16 pv;

			if (ag_port_parse(port, &pv)) {
				*status = send_error(r->conn, 400, "query 'port': %s", ag_errmsg());
				return -1;
			}
			p = pv;
		}
	}
	if (!prefix[0]) {
		*status = send_error(r->conn, 400, "field 'prefix': required");
		return -1;
	}
	if (ag_prefix_parse(prefix, rule)) {
		*status = send_error(r->conn, 400, "field 'prefix': %s", ag_errmsg());
		return -1;
	}
	rule->port = (__u16)p;
	return 0;
}

static int rules_post(struct req *r)
{
	static const char *const allowed[] = { "prefix", "port", "agent", NULL };
	struct ag_op_err oe = { "" };
	struct ag_rule rule;
	const char *agent;
	int status = 0, err;
	json_t *o = body_object(r, allowed, &status), *reply;

	if (!o)
		return status;
	if (rule_target(r, o, &rule, &status)) {
		json_decref(o);
		return status;
	}
	agent = json_string_value(json_object_get(o, "agent"));
	if (!agent) {
		json_decref(o);
		return send_error(r->conn, 400, "field 'agent': required, a string");
	}
	if (ag_name_check(agent)) {
		json_decref(o);
		return send_error(r->conn, 400, "field 'agent': %s", ag_errmsg());
	}
	err = ag_engine_rule_add(r->h->e, &rule, agent, r->tok.subject, &oe);
	if (err) {
		json_decref(o);
		return bad_agent(r, err, &oe);
	}
	reply = json_pack("{s:O,s:i,s:s}", "prefix", json_object_get(o, "prefix"), "port",
			  rule.port, "agent", agent);
	json_decref(o);
	return agd_reply_json(r->conn, 201, reply, NULL);
}

static int rules_delete(struct req *r)
{
	static const char *const allowed[] = { "prefix", "port", "agent", NULL };
	struct ag_op_err oe = { "" };
	char prefix[AG_PREFIX_STRLEN];
	struct ag_rule rule;
	int status = 0, err;
	json_t *o = NULL;

	if (r->body_len && !(o = body_object(r, allowed, &status)))
		return status;
	err = rule_target(r, o, &rule, &status);
	json_decref(o);
	if (err)
		return status;
	err = ag_engine_rule_del(r->h->e, &rule, r->tok.subject, &oe);
	if (err)
		return bad_agent(r, err, &oe);
	ag_prefix_format(&rule, prefix, sizeof(prefix));
	return agd_reply_json(r->conn, 200, json_pack("{s:s,s:i}", "deleted", prefix, "port", rule.port),
			 NULL);
}

/* ---- the rating-API tutorial's routes ------------------------------------------ */

/* POST /bucket/{agent_id} {"capacity","refill_rate","initial_tokens"}: a
 * bucket of that size and rate, filled to initial_tokens (default: full).
 * Bounds widen to include the rate so the tutorial's numbers are taken
 * as given. */
static int bucket_post(struct req *r)
{
	static const char *const allowed[] = { "capacity", "refill_rate", "initial_tokens", NULL };
	struct ag_agent_change c = { .fill_tokens = -1 };
	struct ag_op_err oe = { "" };
	struct ag_agent_view v;
	double cap = 0, rate = 0, init = -1;
	int status = 0, err;
	bool created;
	json_t *o = body_object(r, allowed, &status);

	if (!o)
		return status;
	if (get_number(r, o, "capacity", 1, (double)AG_BURST_MAX, true, &cap, &status) <= 0 ||
	    get_number(r, o, "refill_rate", 0.001, 1e10, false, &rate, &status) <= 0 ||
	    get_number(r, o, "initial_tokens", 0, (double)AG_BURST_MAX, false, &init, &status) < 0) {
		json_decref(o);
		if (status)
			return status;
		return send_error(r->conn, 400, "fields 'capacity' and 'refill_rate': required");
	}
	json_decref(o);
	if (init > cap)
		return send_error(r->conn, 400, "field 'initial_tokens': %g is above capacity %g",
				  init, cap);
	c.set = AG_POL_R0 | AG_POL_BURST | AG_POL_R_MIN | AG_POL_R_MAX;
	c.own.r0 = rate;
	c.own.burst = cap;
	c.own.burst_kind = AG_BURST_TOKENS;
	c.own.r_min = 0.001;
	c.own.r_max = 1e10;
	c.fill_tokens = init >= 0 ? init : cap;
	err = ag_engine_agent_put(r->h->e, r->param, &c, r->tok.subject, &created, &oe);
	if (err)
		return bad_agent(r, err, &oe);
	if (ag_engine_agent_view(r->h->e, r->param, &v))
		return send_error(r->conn, 404, "unknown agent '%s'", r->param);
	return agd_reply_json(r->conn, created ? 201 : 200,
			 json_pack("{s:s,s:I,s:f,s:f}", "agent_id", r->param, "capacity",
				   (json_int_t)v.burst, "refill_rate", v.rate, "tokens", v.tokens),
			 NULL);
}

static int bucket_get(struct req *r)
{
	struct ag_agent_view v;

	if (ag_engine_agent_view(r->h->e, r->param, &v))
		return send_error(r->conn, 404, "unknown agent '%s'", r->param);
	return agd_reply_json(r->conn, 200,
			 json_pack("{s:s,s:f,s:I,s:f}", "agent_id", r->param, "tokens", v.tokens,
				   "capacity", (json_int_t)v.burst, "refill_rate", v.rate),
			 NULL);
}

/* POST /rate {"agent_id","event_type","metadata"}: one token from the
 * agent's bucket; "score" is the agent's mean rating (0 before any). */
static int rate_post(struct req *r)
{
	static const char *const allowed[] = { "agent_id", "event_type", "metadata", NULL };
	struct ag_consume_result res;
	struct ag_op_err oe = { "" };
	struct ag_agent_view v;
	const char *agent, *event;
	int status = 0, err;
	json_t *o = body_object(r, allowed, &status), *reply;

	if (!o)
		return status;
	agent = json_string_value(json_object_get(o, "agent_id"));
	event = json_string_value(json_object_get(o, "event_type"));
	if (!agent || (json_object_get(o, "event_type") && !event)) {
		json_decref(o);
		return send_error(r->conn, 400, agent ? "field 'event_type': expected a string" :
							"field 'agent_id': required, a string");
	}
	if (ag_name_check(agent)) {
		json_decref(o);
		return send_error(r->conn, 400, "field 'agent_id': %s", ag_errmsg());
	}
	err = ag_engine_consume(r->h->e, agent, 1, &res, &oe);
	if (err || ag_engine_agent_view(r->h->e, agent, &v)) {
		json_decref(o);
		return err ? bad_agent(r, err, &oe) : send_error(r->conn, 404, "unknown agent");
	}
	reply = json_pack("{s:s,s:s,s:f,s:f}", "agent_id", agent, "event_type", event ? event : "",
			  "score", ag_stats_mean(&v.stats), "rate", v.rate);
	json_decref(o);
	return send_consume(r, &res, reply);
}

/* ---- metrics and health ------------------------------------------------------ */

/* The stream's series appended to the exposition text (freed on failure). */
/* Appends text to the exposition; NULL (text freed) without memory. */
static char *append(char *text, size_t *len, const char *add, size_t n)
{
	char *b = realloc(text, *len + n + 1);

	if (!b) {
		free(text);
		return NULL;
	}
	memcpy(b + *len, add, n + 1);
	*len += n;
	return b;
}

static char *stream_series(struct agd_stream *s, char *text, size_t *len)
{
	struct agd_stream_stats st;
	char add[2048];
	size_t i;
	int n, k;

	agd_stream_get_stats(s, &st);
	n = snprintf(add, sizeof(add),
		     "# HELP agentgate_stream_clients WebSocket /v1/stream clients connected.\n"
		     "# TYPE agentgate_stream_clients gauge\n"
		     "agentgate_stream_clients %llu\n"
		     "# HELP agentgate_stream_connections_total WebSocket handshakes, by result.\n"
		     "# TYPE agentgate_stream_connections_total counter\n"
		     "agentgate_stream_connections_total{result=\"accepted\"} %llu\n",
		     (unsigned long long)st.clients, (unsigned long long)st.accepted);
	for (i = 0; i < 4; i++) {
		k = snprintf(add + n, sizeof(add) - (size_t)n,
			     "agentgate_stream_connections_total{result=\"refused_%s\"} %llu\n",
			     agd_stream_refusal_names[i], (unsigned long long)st.refused[i]);
		n += k;
	}
	n += snprintf(add + n, sizeof(add) - (size_t)n,
		      "# HELP agentgate_stream_messages_total Stream messages, by outcome.\n"
		      "# TYPE agentgate_stream_messages_total counter\n"
		      "agentgate_stream_messages_total{outcome=\"sent\"} %llu\n"
		      "agentgate_stream_messages_total{outcome=\"coalesced\"} %llu\n"
		      "agentgate_stream_messages_total{outcome=\"lost\"} %llu\n"
		      "# HELP agentgate_stream_slow_disconnects_total Stream clients cut off for "
		      "staying behind.\n"
		      "# TYPE agentgate_stream_slow_disconnects_total counter\n"
		      "agentgate_stream_slow_disconnects_total %llu\n",
		      (unsigned long long)st.sent, (unsigned long long)st.coalesced,
		      (unsigned long long)st.lost, (unsigned long long)st.cut_slow);
	return append(text, len, add, (size_t)n);
}

static char *fleet_series(struct agd_fleet *f, char *text, size_t *len)
{
	struct agd_fleet_stats st;
	char add[2048];
	int n;

	agd_fleet_stats(f, &st);
	n = snprintf(add, sizeof(add),
		     "# HELP agentgate_fleet_connected Whether the fleet's NATS servers are reachable.\n"
		     "# TYPE agentgate_fleet_connected gauge\n"
		     "agentgate_fleet_connected %d\n"
		     "# HELP agentgate_fleet_applied_sequence Last stream sequence this host applied.\n"
		     "# TYPE agentgate_fleet_applied_sequence gauge\n"
		     "agentgate_fleet_applied_sequence %llu\n"
		     "# HELP agentgate_fleet_stream_lag Stream messages not yet applied here.\n"
		     "# TYPE agentgate_fleet_stream_lag gauge\n"
		     "agentgate_fleet_stream_lag %llu\n"
		     "# HELP agentgate_fleet_outbox_depth Ratings kept locally until NATS takes them.\n"
		     "# TYPE agentgate_fleet_outbox_depth gauge\n"
		     "agentgate_fleet_outbox_depth %llu\n"
		     "# HELP agentgate_fleet_dead_letters_total Invalid stream messages sent to "
		     AGD_FLEET_DLQ ".\n"
		     "# TYPE agentgate_fleet_dead_letters_total counter\n"
		     "agentgate_fleet_dead_letters_total %llu\n"
		     "# HELP agentgate_fleet_published_total Ratings accepted here, by what became "
		     "of them.\n"
		     "# TYPE agentgate_fleet_published_total counter\n"
		     "agentgate_fleet_published_total{result=\"acked\"} %llu\n"
		     "agentgate_fleet_published_total{result=\"duplicate\"} %llu\n"
		     "agentgate_fleet_published_total{result=\"outbox\"} %llu\n",
		     st.connected, (unsigned long long)st.applied_seq, (unsigned long long)st.lag,
		     (unsigned long long)st.outbox_depth, (unsigned long long)st.dead_letters,
		     (unsigned long long)(st.published - st.duplicates),
		     (unsigned long long)st.duplicates, (unsigned long long)st.queued);
	return append(text, len, add, (size_t)n);
}

static int metrics_get(struct req *r)
{
	__u64 max;
	size_t len;
	char *text;
	int rc;

	pthread_rwlock_rdlock(&r->h->live_lock);
	max = r->h->live.metrics_max_agents;
	pthread_rwlock_unlock(&r->h->live_lock);
	text = agd_metrics_render(&r->h->metrics, r->h->e, max, &len);
	if (text && r->h->stream)
		text = stream_series(r->h->stream, text, &len);
	if (text && r->h->fleet)
		text = fleet_series(r->h->fleet, text, &len);
	if (!text)
		return send_error(r->conn, 500, "cannot render metrics");
	rc = agd_reply_body(r->conn, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL);
	free(text);
	return rc;
}

/* GET /v1/stream without the upgrade headers. */
static int stream_plain(struct req *r)
{
	return agd_reply_error(r->conn, 426, "Upgrade: websocket\r\nConnection: Upgrade\r\n",
			      "/v1/stream is a WebSocket: connect with a WebSocket client "
			      "(Upgrade: websocket); see docs/STREAM.md");
}

static int healthz(struct req *r)
{
	return agd_reply_json(r->conn, 200, json_pack("{s:s}", "status", "ok"), NULL);
}

static int readyz(struct req *r)
{
	struct ag_config cfg;
	char why[128];
	bool ready;

	pthread_mutex_lock(&r->h->ready_lock);
	ready = r->h->ready;
	snprintf(why, sizeof(why), "%s", r->h->not_ready);
	pthread_mutex_unlock(&r->h->ready_lock);
	if (ready && ag_config_get(ag_engine_ctx(r->h->e), &cfg)) {
		ready = false;
		snprintf(why, sizeof(why), "maps unreadable: %s", ag_errmsg());
	}
	if (!ready)
		return agd_reply_json(r->conn, 503, json_pack("{s:s,s:s}", "status", "not ready",
							 "reason", why), NULL);
	if (r->h->fleet) {
		struct agd_fleet_stats st;

		/* Degraded, still serving: enforcement goes on and ratings are
		 * kept in the outbox. */
		agd_fleet_stats(r->h->fleet, &st);
		if (!st.connected)
			return agd_reply_json(r->conn, 200, json_pack("{s:s,s:s}", "status", "degraded",
								 "reason", "NATS unreachable: "
								 "ratings kept in the outbox, "
								 "operator changes refused"),
					 NULL);
	}
	return agd_reply_json(r->conn, 200, json_pack("{s:s}", "status", "ready"), NULL);
}

/* ---- routing --------------------------------------------------------------------- */

#define READ_SCOPES (AG_SCOPE_AGENTS_ADMIN | AG_SCOPE_METRICS_READ)

struct route {
	const char *method;
	const char *path; /* '*' stands for one segment: the agent */
	unsigned int scopes; /* any of them; 0: open */
	bool body;
	int (*fn)(struct req *r);
	const char *const *queries; /* the query parameters it takes; NULL: none */
};

static const char *const list_queries[] = { "limit", "after", NULL };
static const char *const rule_queries[] = { "prefix", "port", NULL };
static const char *const stream_queries[] = { "topics", "token", NULL };

static const struct route routes[] = {
	{ "POST", "/v1/ratings", AG_SCOPE_RATINGS_WRITE, true, ratings_post },
	{ "GET", "/v1/agents", READ_SCOPES, false, agents_list, list_queries },
	{ "GET", "/v1/agents/*/explain", READ_SCOPES, false, agent_explain },
	{ "GET", "/v1/agents/*", READ_SCOPES, false, agent_get },
	{ "PUT", "/v1/agents/*", AG_SCOPE_AGENTS_ADMIN, true, agent_put },
	{ "DELETE", "/v1/agents/*", AG_SCOPE_AGENTS_ADMIN, false, agent_delete },
	{ "POST", "/v1/agents/*/reset", AG_SCOPE_AGENTS_ADMIN, false, agent_reset },
	{ "POST", "/v1/agents/*/drain", AG_SCOPE_AGENTS_ADMIN, true, agent_drain },
	{ "POST", "/v1/agents/*/consume", AG_SCOPE_RATINGS_WRITE, true, agent_consume },
	{ "GET", "/v1/rules", READ_SCOPES, false, rules_get },
	{ "POST", "/v1/rules", AG_SCOPE_AGENTS_ADMIN, true, rules_post },
	{ "DELETE", "/v1/rules", AG_SCOPE_AGENTS_ADMIN, true, rules_delete, rule_queries },
	{ "GET", "/metrics", AG_SCOPE_METRICS_READ, false, metrics_get },
	{ "GET", "/v1/stream", AG_SCOPE_STREAM_READ, false, stream_plain, stream_queries },
	{ "GET", "/healthz", 0, false, healthz },
	{ "GET", "/readyz", 0, false, readyz },
	{ "POST", "/bucket/*", AG_SCOPE_AGENTS_ADMIN, true, bucket_post },
	{ "GET", "/bucket/*", READ_SCOPES, false, bucket_get },
	{ "POST", "/rate", AG_SCOPE_RATINGS_WRITE, true, rate_post },
};

#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

/* Matches a decoded path against a pattern; the '*' segment is copied into
 * param (len: the path's size, so any segment fits). */
static bool match(const char *pattern, const char *uri, char *param, size_t len)
{
	while (*pattern && *uri) {
		if (*pattern == '*') {
			size_t n = strcspn(uri, "/");

			if (!n || n >= len)
				return false;
			memcpy(param, uri, n);
			param[n] = 0;
			uri += n;
			pattern++;
			continue;
		}
		if (*pattern++ != *uri++)
			return false;
	}
	return !*pattern && (!*uri || !strcmp(uri, "/"));
}

/* The bearer token of the Authorization header, NULL without one. */
static const char *bearer(struct mg_connection *conn)
{
	const char *hdr = mg_get_header(conn, "Authorization");

	return hdr && !strncasecmp(hdr, "Bearer ", 7) ? hdr + 7 : NULL;
}

/* 1 when auth is off; 0 with *tok filled when the token verifies; else the
 * 401 is sent and its status returned. */
static int verify(struct agd_http *h, struct mg_connection *conn, const char *token,
		  const char *missing, struct ag_token *tok)
{
	char why[128];
	int err;

	memset(tok, 0, sizeof(*tok));
	pthread_rwlock_rdlock(&h->live_lock);
	if (!h->live.auth) {
		pthread_rwlock_unlock(&h->live_lock);
		return 1;
	}
	if (!token) {
		pthread_rwlock_unlock(&h->live_lock);
		return send_error(conn, 401, "%s", missing);
	}
	err = ag_token_verify(token, h->live.key, h->live.key_len, time(NULL), tok, why,
			      sizeof(why));
	pthread_rwlock_unlock(&h->live_lock);
	if (err)
		return send_error(conn, 401, "%s", why);
	return 0;
}

/* /v1/stream: the token of ?token= or of the Authorization header. */
static int stream_auth(void *arg, struct mg_connection *conn, const char *query_token)
{
	struct ag_token tok;
	int rc = agd_request_framing(conn);

	if (rc)
		return rc;
	rc = verify(arg, conn, query_token ? query_token : bearer(conn),
		    "missing token (?token=<JWT> or Authorization: Bearer <JWT>)", &tok);
	if (rc == 1)
		return 0;
	if (rc)
		return rc;
	if (!(tok.scopes & AG_SCOPE_STREAM_READ))
		return send_error(conn, 403, "token lacks scope stream:read");
	return 0;
}

static int authorize(struct req *r, const struct route *rt)
{
	int rc;

	memset(&r->tok, 0, sizeof(r->tok));
	if (!rt->scopes)
		return 0;
	rc = verify(r->h, r->conn, bearer(r->conn),
		    "missing bearer token (Authorization: Bearer <JWT>)", &r->tok);
	if (rc == 1)
		return 0;
	if (rc)
		return rc;
	if (!(r->tok.scopes & rt->scopes)) {
		if (rt->scopes == READ_SCOPES)
			return send_error(r->conn, 403, "token lacks scope agents:admin or "
					  "metrics:read");
		return send_error(r->conn, 403, "token lacks scope %s", ag_scope_name(rt->scopes));
	}
	return 0;
}

/* The request's path percent-decoded into path (agd_path_decode), the route
 * it names into *rt and its agent into param: 0, or the status of the error
 * sent (400 for the path or the agent name, 404, 405 with Allow). */
static int route(struct mg_connection *conn, const struct route **rt, char *path, char *param)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	char allow[64] = "", why[160];
	size_t i;

	*rt = NULL;
	if (agd_path_decode(ri->request_uri, path, AGD_PATH_MAX, why, sizeof(why)))
		return agd_reply_error(conn, 400, NULL, "%s", why);
	for (i = 0; i < N_ROUTES; i++) {
		if (!match(routes[i].path, path, param, AGD_PATH_MAX))
			continue;
		if (!strcmp(routes[i].method, ri->request_method)) {
			*rt = &routes[i];
			break;
		}
		if (strlen(allow) + strlen(routes[i].method) + 3 < sizeof(allow))
			snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s",
				 allow[0] ? ", " : "", routes[i].method);
	}
	if (!*rt && allow[0]) {
		char hdr[96];

		snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow);
		return agd_reply_json(conn, 405, json_pack("{s:s,s:s}", "error", "method_not_allowed",
						      "message", "method not allowed here"), hdr);
	}
	if (!*rt)
		return send_error(conn, 404, "no such endpoint: %s %.200s", ri->request_method,
				  ri->request_uri);
	/* The one name check (ag_name_check): %00, bytes outside the
	 * alphabet and the names "." and ".." never reach the engine. */
	if (strchr((*rt)->path, '*') && ag_name_check(param))
		return send_error(conn, 400, "path: %s", ag_errmsg());
	return 0;
}

static int handle_request(struct mg_connection *conn, struct agd_http *h)
{
	struct req r = { .h = h, .conn = conn, .ri = mg_get_request_info(conn) };
	char path[AGD_PATH_MAX], param[AGD_PATH_MAX] = "";
	const struct route *rt;
	int rc;

	rc = agd_request_framing(conn);
	if (!rc)
		rc = route(conn, &rt, path, param);
	if (rc)
		return rc;
	r.param = param;
	rc = agd_request_limits(conn, rt->queries);
	if (!rc)
		rc = authorize(&r, rt);
	if (rc)
		return rc;
	if (rt->body && (rc = read_body(&r)))
		return rc;
	rc = rt->fn(&r);
	free(r.body);
	return rc;
}

static int handle(struct mg_connection *conn, void *cbdata)
{
	int rc;

	/* A chunked body's end is CivetWeb's to find: where it may disagree
	 * with a proxy (a trailer section it leaves unread, a bare CR in a size
	 * line), closing after the answer leaves no byte to be read as a
	 * request of its own. */
	agd_reply_close_after(agd_request_chunked(conn));
	rc = handle_request(conn, cbdata);
	agd_reply_close_after(false);
	return rc;
}

/* Authorization is the routes' own (bearer JWTs). Without a handler of its
 * own, CivetWeb looks for a .htpasswd file beside every request's path: a
 * stat(2) per request, and digest auth for all if one ever appeared. */
static int civetweb_auth(struct mg_connection *conn, void *cbdata)
{
	(void)conn;
	(void)cbdata;
	return 1;
}

static int upgrade_as_http(const struct mg_connection *conn, void *cbdata)
{
	handle((struct mg_connection *)conn, cbdata);
	return 1; /* no handshake */
}

/* CivetWeb's hook for the TLS context: agentgated fills it (tls.c). */
static int init_ssl(void *ssl_ctx, void *user_data)
{
	struct agd_http *h = user_data;

	if (agd_tls_configure(ssl_ctx, h->tls_cert, h->tls_key, h->tls_err, sizeof(h->tls_err)))
		return -1;
	return 1; /* configured: CivetWeb loads no certificate of its own */
}

static int log_message(const struct mg_connection *conn, const char *message)
{
	fprintf(stderr, "agentgated: http: %s\n", message);
	return 1;
}

/* ---- lifecycle ------------------------------------------------------------------ */

/* Exactly HOST:PORT or [V6]:PORT: CivetWeb also takes lists ("a:1,2")
 * and suffixes ("9470s"), which would open listeners this check never saw. */
static bool listen_well_formed(const char *listen)
{
	const char *colon = strrchr(listen, ':');
	size_t digits;

	if (!colon || strchr(listen, ',') || strchr(listen, '+') || strchr(listen, ' '))
		return false;
	digits = strspn(colon + 1, "0123456789");
	if (!digits || digits > 5 || colon[1 + digits] || atoi(colon + 1) > 65535)
		return false;
	if (listen[0] == '[')
		return colon > listen && colon[-1] == ']';
	return colon > listen && !memchr(listen, ':', (size_t)(colon - listen));
}

/* CivetWeb's feature bit for IPv6 listeners (mg_check_feature). */
#define MG_FEATURE_IPV6 8

int agd_listen_check(const char *listen, char *err, size_t len)
{
	if (!listen_well_formed(listen)) {
		snprintf(err, len, "--listen %s: expected ADDR:PORT or [IPV6]:PORT", listen);
		return -EINVAL;
	}
	/* Debian's libcivetweb is built without IPv6: say so rather than fail
	 * later with CivetWeb's "invalid port spec". */
	if (listen[0] == '[' && !mg_check_feature(MG_FEATURE_IPV6)) {
		snprintf(err, len, "--listen %s: the CivetWeb library this agentgated uses has no "
			 "IPv6 support; listen on an IPv4 address", listen);
		return -EINVAL;
	}
	return 0;
}

bool agd_listen_is_loopback(const char *listen)
{
	char host[256];
	const char *colon;
	struct in6_addr a6;
	struct in_addr a4;

	if (listen[0] == '[') {
		const char *end = strchr(listen, ']');

		if (!end || (size_t)(end - listen - 1) >= sizeof(host))
			return false;
		memcpy(host, listen + 1, (size_t)(end - listen - 1));
		host[end - listen - 1] = 0;
		return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
	}
	colon = strrchr(listen, ':');
	if (!colon || (size_t)(colon - listen) >= sizeof(host))
		return false; /* a bare port listens on every address */
	memcpy(host, listen, (size_t)(colon - listen));
	host[colon - listen] = 0;
	if (!strcmp(host, "localhost"))
		return true;
	return inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

int agd_http_start(struct ag_engine *e, const struct agd_http_opts *opts,
		   const struct agd_http_live *live, struct agd_http **out, char *err, size_t len)
{
	char threads[16], timeout[24], ports[300], ping[24], headmax[16];
	struct mg_callbacks cb = { .log_message = log_message, .http_error = agd_civetweb_error };
	const char *mgopts[24];
	struct agd_http *h;
	size_t k = 0;
	int rc;

	if (agd_listen_check(opts->listen, err, len))
		return -EINVAL;
	if (agd_tls_check(opts->tls_cert, opts->tls_key, err, len))
		return -EINVAL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->e = e;
	h->live = *live;
	pthread_rwlock_init(&h->live_lock, NULL);
	pthread_mutex_init(&h->ready_lock, NULL);
	agd_metrics_init(&h->metrics);
	snprintf(h->not_ready, sizeof(h->not_ready), "starting");
	/* Each WebSocket client holds a CivetWeb worker for as long as it is
	 * connected: the stream's workers come on top of the HTTP ones. */
	snprintf(threads, sizeof(threads), "%u", opts->threads + opts->stream.max_clients);
	snprintf(ping, sizeof(ping), "%llu", (unsigned long long)opts->stream.ping_ms);
	snprintf(timeout, sizeof(timeout), "%llu", (unsigned long long)opts->request_timeout_ms);
	snprintf(headmax, sizeof(headmax), "%d", AGD_HEAD_MAX);
	h->tls = opts->tls_cert[0] != '\0';
	if (h->tls) {
		snprintf(h->tls_cert, sizeof(h->tls_cert), "%s", opts->tls_cert);
		snprintf(h->tls_key, sizeof(h->tls_key), "%s", opts->tls_key);
		cb.init_ssl = init_ssl;
	}
	/* A trailing 's' makes CivetWeb speak TLS only on the port. */
	snprintf(ports, sizeof(ports), "%s%s", opts->listen, h->tls ? "s" : "");
	mgopts[k++] = "listening_ports";
	mgopts[k++] = ports;
	mgopts[k++] = "num_threads";
	mgopts[k++] = threads;
	mgopts[k++] = "request_timeout_ms";
	mgopts[k++] = timeout;
	/* The target as sent: routing decodes it (agd_path_decode), refusing
	 * %00 and %2F instead of cutting or splitting a name, and
	 * agd_request_framing reads CivetWeb's parse in place. */
	mgopts[k++] = "decode_url";
	mgopts[k++] = "no";
	mgopts[k++] = "max_request_size";
	mgopts[k++] = headmax;
	mgopts[k++] = "enable_keep_alive";
	mgopts[k++] = "yes";
	mgopts[k++] = "keep_alive_timeout_ms";
	mgopts[k++] = "30000";
	mgopts[k++] = "tcp_nodelay";
	mgopts[k++] = "1";
	mgopts[k++] = "enable_websocket_ping_pong";
	mgopts[k++] = "yes";
	mgopts[k++] = "websocket_timeout_ms";
	mgopts[k++] = ping;
	mgopts[k++] = NULL;
	if (h->tls && agd_tls_load_compat(err, len)) {
		agd_http_stop(h);
		return -ENOTSUP;
	}
	rc = agd_deadlines_start(opts->request_timeout_ms, &h->deadlines);
	if (rc) {
		snprintf(err, len, "cannot start the request watchdog: %s", strerror(-rc));
		agd_http_stop(h);
		return rc;
	}
	rc = agd_lister_start(e, &h->lister);
	if (rc) {
		snprintf(err, len, "cannot start the agent lister: %s", strerror(-rc));
		agd_http_stop(h);
		return rc;
	}
	mg_init_library(h->tls ? MG_FEATURES_SSL : 0);
	h->mg = mg_start(&cb, h, mgopts);
	if (!h->mg) {
		if (h->tls_err[0])
			snprintf(err, len, "%s", h->tls_err);
		else
			snprintf(err, len, "cannot listen on %s%s (address in use, or not an "
				 "ADDR:PORT?%s)", opts->listen, h->tls ? " with TLS" : "",
				 h->tls ? " Or no OpenSSL: see the http: lines above" : "");
		agd_http_stop(h);
		return -EADDRINUSE;
	}
	mg_set_request_handler(h->mg, "/", handle, h);
	h->fleet = opts->fleet;
	mg_set_auth_handler(h->mg, "/", civetweb_auth, h);
	rc = agd_stream_start(e, h->mg, &opts->stream, stream_auth, h, &h->stream);
	if (rc) {
		snprintf(err, len, "cannot start the stream: %s", strerror(-rc));
		agd_http_stop(h);
		return rc;
	}
	/* No route speaks WebSocket yet: a request carrying upgrade headers is
	 * answered as the plain HTTP request it also is (CivetWeb would
	 * otherwise answer it with a bare-text 404). */
	mg_set_websocket_handler(h->mg, "/", upgrade_as_http, NULL, NULL, NULL, h);
	*out = h;
	return 0;
}

void agd_http_update(struct agd_http *h, const struct agd_http_live *live)
{
	pthread_rwlock_wrlock(&h->live_lock);
	h->live = *live;
	pthread_rwlock_unlock(&h->live_lock);
}

void agd_http_set_ready(struct agd_http *h, bool ready, const char *why)
{
	pthread_mutex_lock(&h->ready_lock);
	h->ready = ready;
	snprintf(h->not_ready, sizeof(h->not_ready), "%s", why ? why : "");
	pthread_mutex_unlock(&h->ready_lock);
}

void agd_http_stop(struct agd_http *h)
{
	if (!h)
		return;
	agd_stream_shutdown(h->stream); /* lets CivetWeb's WebSocket workers go */
	if (h->mg)
		mg_stop(h->mg);
	agd_stream_free(h->stream);
	agd_lister_stop(h->lister); /* after the workers that ask it */
	agd_deadlines_stop(h->deadlines);
	mg_exit_library();
	agd_metrics_free(&h->metrics);
	pthread_rwlock_destroy(&h->live_lock);
	pthread_mutex_destroy(&h->ready_lock);
	memset(h->live.key, 0, sizeof(h->live.key));
	free(h);
}
