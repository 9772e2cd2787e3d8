// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The agents: GET /v1/agents (pages), GET, PUT, DELETE /v1/agents/{agent},
 * its explain, reset, drain and consume.
 */
#include "server.h"
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lister.h"
#include "core/store.h"
#include "handlers.h"

static json_t *rules_of(struct agd_http *h, __u32 slot)
{
	struct ag_rule *rules = NULL;
	json_t *a = json_array();
	size_t n = 0, i;

	if (ag_rule_list(agd_engine_ctx(h->e), &rules, &n))
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
	struct agd_agent_view v;
	json_t *o;

	if (agd_engine_agent_view(r->h->e, r->param, &v))
		return send_error(r->conn, 404, "unknown agent '%s'", r->param);
	o = agd_agent_view_json(&v);
	json_object_set_new(o, "rules", rules_of(r->h, v.slot));
	return agd_reply_json(r->conn, status, o, NULL);
}

int agent_get(struct req *r)
{
	return send_agent(r, 200);
}

/* GET /v1/agents/{agent}/explain: agd_engine_explain's object. */
int agent_explain(struct req *r)
{
	struct agd_err oe = { 0 };
	void *o = NULL;
	int err = agd_engine_explain(r->h->e, r->param, &o, &oe);

	if (err)
		return bad_agent(r, err, &oe);
	return agd_reply_json(r->conn, 200, o, NULL);
}

/* GET /v1/agents?limit=N&after=NAME: a page in name order, read from the
 * store by key (core/views.c) in the lister's thread (lister.h), so a deep page
 * costs what the first one does. */
int agents_list(struct req *r)
{
	char after[AG_NAME_MAX + 1] = "", lim[16] = "", next[AG_NAME_MAX + 1];
	const char *q = r->ri->query_string;
	struct agd_agent_view *views = NULL;
	size_t n = 0, i, limit = 100;
	json_t *arr;
	char *end;
	int err, got;

	got = q ? agd_query_var(q, "after", after, sizeof(after)) : -1;
	if (got == -2)
		return send_error(r->conn, 400, "query 'after': too long");
	if (got > 0 && strlen(after) != (size_t)got)
		return send_error(r->conn, 400, "query 'after': %%00 (NUL) is not accepted");
	if (after[0] && ag_name_check(after))
		return send_error(r->conn, 400, "query 'after': %s", ag_errmsg());
	if (q && agd_query_var(q, "limit", lim, sizeof(lim)) > 0) {
		unsigned long v = strtoul(lim, &end, 10);

		if (*end || !v || v > 1000)
			return send_error(r->conn, 400, "query 'limit': expected 1 to 1000");
		limit = v;
	}
	err = agd_lister_page(r->h->lister, after, limit, &views, &n, next);
	if (err == -EBUSY)
		return agd_reply_error(r->conn, 503, "Retry-After: 1\r\n", "the state store has "
				      "no reader slot free: retry");
	if (err) {
		struct agd_err why;

		agd_store_fail(&why, err, "cannot read the agents");
		return send_error(r->conn, agd_engine_status(err), "%s", why.msg);
	}
	arr = json_array();
	for (i = 0; i < n; i++)
		json_array_append_new(arr, agd_agent_view_json(&views[i]));
	free(views);
	return agd_reply_json(r->conn, 200, json_pack("{s:o,s:o}", "agents", arr, "next",
						 next[0] ? json_string(next) : json_null()),
			 NULL);
}

static int parse_burst(struct req *r, json_t *v, struct agd_policy *own, int *status)
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
		own->burst_kind = AGD_BURST_SECONDS;
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
	own->burst_kind = AGD_BURST_TOKENS;
	return 0;
}

/* The agent's own influence limits (null: back to the daemon's option). */
static int parse_influence(struct req *r, json_t *o, struct agd_agent_change *c, int *status)
{
	struct agd_err why = { 0 };
	double x = 0, secs = 0;
	json_t *v;

	if (json_is_null(json_object_get(o, "max_change")))
		c->inf_unset |= AGD_INF_MAX_CHANGE;
	else if (get_number(r, o, "max_change", 0, 100, false, &x, status) < 0)
		return -1;
	else if (json_object_get(o, "max_change")) {
		c->inf.max_change = x;
		c->inf_set |= AGD_INF_MAX_CHANGE;
	}
	v = json_object_get(o, "change_window");
	if (json_is_null(v)) {
		c->inf_unset |= AGD_INF_WINDOW;
	} else if (v) {
		if (json_is_string(v) ? agd_ttl_parse(json_string_value(v), &secs, &why) :
		    json_is_number(v) ? agd_ttl_seconds(json_number_value(v), &secs, &why) : -1) {
			*status = send_error(r->conn, 400, "field 'change_window': whole seconds or a "
					     "duration such as \"1h\", 1s to 30d");
			return -1;
		}
		if (secs < 1 || secs > 2592000) {
			*status = send_error(r->conn, 400, "field 'change_window': 1s to 30d");
			return -1;
		}
		c->inf.window_ms = (__u64)secs * 1000;
		c->inf_set |= AGD_INF_WINDOW;
	}
	if (json_is_null(json_object_get(o, "wave_users")))
		c->inf_unset |= AGD_INF_WAVE_USERS;
	else if (get_number(r, o, "wave_users", 0, 1000000, true, &x, status) < 0)
		return -1;
	else if (json_object_get(o, "wave_users")) {
		c->inf.wave_users = (__u32)x;
		c->inf_set |= AGD_INF_WAVE_USERS;
	}
	v = json_object_get(o, "wave_hold");
	if (json_is_null(v)) {
		c->inf_unset |= AGD_INF_WAVE_HOLD;
	} else if (v) {
		if (!json_is_boolean(v)) {
			*status = send_error(r->conn, 400, "field 'wave_hold': expected true or false");
			return -1;
		}
		c->inf.wave_hold = json_is_true(v);
		c->inf_set |= AGD_INF_WAVE_HOLD;
	}
	if (json_is_null(json_object_get(o, "user_cap"))) {
		c->inf_unset |= AGD_INF_USER_CAP;
	} else if (get_number(r, o, "user_cap", 0, AGD_USER_CAP_MAX, false, &x, status) < 0) {
		return -1;
	} else if (json_object_get(o, "user_cap")) {
		if (!(x > 0)) {
			*status = send_error(r->conn, 400, "field 'user_cap': score points above 0, "
					     "at most 2 (a pinned agent is one no rating moves)");
			return -1;
		}
		c->inf.user_cap = x;
		c->inf_set |= AGD_INF_USER_CAP;
	}
	return 0;
}

/* PUT body -> change; null values return a field to the global default. */
static int parse_change(struct req *r, json_t *o, struct agd_agent_change *c, int *status)
{
	static const struct {
		const char *name;
		unsigned int bit;
		size_t off;
	} nums[] = {
		{ "rate", AGD_POL_R0, offsetof(struct agd_policy, r0) },
		{ "r_min", AGD_POL_R_MIN, offsetof(struct agd_policy, r_min) },
		{ "r_max", AGD_POL_R_MAX, offsetof(struct agd_policy, r_max) },
		{ "alpha", AGD_POL_ALPHA, offsetof(struct agd_policy, alpha) },
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
		c->unset |= AGD_POL_BURST;
	else if (v && !parse_burst(r, v, &c->own, status))
		c->set |= AGD_POL_BURST;
	else if (v)
		return -1;
	v = json_object_get(o, "unit");
	if (json_is_null(v)) {
		c->unset |= AGD_POL_UNIT;
	} else if (v) {
		const char *u = json_string_value(v);

		if (!u || ag_unit_parse(u, &c->own.unit)) {
			*status = send_error(r->conn, 400,
					     "field 'unit': expected \"pps\", \"bps\" or \"conn\"");
			return -1;
		}
		c->set |= AGD_POL_UNIT;
	}
	v = json_object_get(o, "pinned");
	if (json_is_null(v)) {
		c->unset |= AGD_POL_PINNED;
	} else if (v) {
		if (!json_is_boolean(v)) {
			*status = send_error(r->conn, 400, "field 'pinned': expected true or false");
			return -1;
		}
		c->own.pinned = json_is_true(v);
		c->set |= AGD_POL_PINNED;
	}
	if (parse_influence(r, o, c, status))
		return -1;
	v = json_object_get(o, "ttl");
	if (json_is_null(v)) {
		c->unset |= AGD_POL_TTL;
	} else if (v) {
		struct agd_err why = { 0 };

		if (json_is_string(v) ? agd_ttl_parse(json_string_value(v), &c->own.ttl, &why) :
		    json_is_number(v) ? agd_ttl_seconds(json_number_value(v), &c->own.ttl, &why) :
					agd_errf(&why, -EINVAL, "expected seconds or a duration "
						 "such as \"24h\"")) {
			*status = send_error(r->conn, 400, "field 'ttl': %s", why.msg);
			return -1;
		}
		c->set |= AGD_POL_TTL;
	}
	return 0;
}

int agent_put(struct req *r)
{
	static const char *const allowed[] = { "rate", "burst", "unit", "r_min", "r_max",
					       "alpha", "pinned", "ttl", "max_change",
					       "change_window", "wave_users", "wave_hold",
					       "user_cap", "parent", "quota", NULL };
	struct agd_agent_change c;
	struct agd_err oe = { 0 };
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
	err = agd_budget_parse(o, false, &c.budget, &oe);
	json_decref(o);
	if (err)
		return send_error(r->conn, 400, "%s", oe.msg);
	err = agd_engine_agent_put(r->h->e, r->param, &c, r->tok.subject, &created, &oe);
	if (err)
		return bad_agent(r, err, &oe);
	return send_agent(r, created ? 201 : 200);
}

int agent_delete(struct req *r)
{
	struct agd_err oe = { 0 };
	int err = agd_engine_agent_delete(r->h->e, r->param, r->tok.subject, &oe);

	if (err)
		return bad_agent(r, err, &oe);
	return agd_reply_json(r->conn, 200, json_pack("{s:s}", "deleted", r->param), NULL);
}

int agent_reset(struct req *r)
{
	struct agd_err oe = { 0 };
	struct agd_agent_view v;
	int err = agd_engine_agent_reset(r->h->e, r->param, r->tok.subject, &oe);

	if (err)
		return bad_agent(r, err, &oe);
	if (agd_engine_agent_view(r->h->e, r->param, &v))
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

int agent_drain(struct req *r)
{
	struct agd_err oe = { 0 };
	double remaining = 0;
	__u64 tokens;
	int status, err;

	if (tokens_field(r, true, &tokens, &status))
		return status;
	err = agd_engine_agent_drain(r->h->e, r->param, tokens, r->tok.subject, &remaining, &oe);
	if (err)
		return bad_agent(r, err, &oe);
	return agd_reply_json(r->conn, 200, json_pack("{s:s,s:f}", "agent", r->param, "tokens",
						 remaining), NULL);
}

int agent_consume(struct req *r)
{
	struct ag_consume_result res;
	struct agd_err oe = { 0 };
	__u64 tokens;
	int status, err;

	if (tokens_field(r, false, &tokens, &status))
		return status;
	err = agd_engine_consume(r->h->e, r->param, tokens, &res, &oe);
	if (err)
		return bad_agent(r, err, &oe);
	return send_consume(r, &res, NULL);
}

/* A cost known afterwards: 200 {"agent", "charged", "remaining",
 * "retry_after_ms"}; remaining is negative while the path is in debt. */
int agent_charge(struct req *r)
{
	struct ag_consume_result res;
	struct agd_err oe = { 0 };
	__u64 tokens;
	int status, err;

	if (tokens_field(r, true, &tokens, &status))
		return status;
	err = agd_engine_charge(r->h->e, r->param, tokens, &res, &oe);
	if (err)
		return bad_agent(r, err, &oe);
	return agd_reply_json(r->conn, 200,
			      json_pack("{s:s,s:I,s:f,s:I}", "agent", r->param, "charged",
					(json_int_t)tokens, "remaining", res.remaining,
					"retry_after_ms",
					(json_int_t)((res.retry_after_ns + 999999) / 1000000)),
			      NULL);
}
