// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The rating-API tutorial's routes: POST and GET /bucket/{agent_id}, POST
 * /rate, on the same agents as /v1/agents.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "handlers.h"

/* POST /bucket/{agent_id} {"capacity","refill_rate","initial_tokens"}: a
 * bucket of that size and rate, filled to initial_tokens (default: full).
 * Bounds widen to include the rate so the tutorial's numbers are taken
 * as given. */
int bucket_post(struct req *r)
{
	static const char *const allowed[] = { "capacity", "refill_rate", "initial_tokens", NULL };
	struct agd_agent_change c = { .fill_tokens = -1 };
	struct agd_err oe = { 0 };
	struct agd_agent_view v;
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
	c.set = AGD_POL_R0 | AGD_POL_BURST | AGD_POL_R_MIN | AGD_POL_R_MAX;
	c.own.r0 = rate;
	c.own.burst = cap;
	c.own.burst_kind = AGD_BURST_TOKENS;
	c.own.r_min = 0.001;
	c.own.r_max = 1e10;
	c.fill_tokens = init >= 0 ? init : cap;
	c.implicit = true; /* a tutorial's bucket: it expires after --agent-ttl idle */
	err = agd_engine_agent_put(r->h->e, r->param, &c, r->tok.subject, &created, &oe);
	if (err)
		return bad_agent(r, err, &oe);
	if (agd_engine_agent_view(r->h->e, r->param, &v))
		return send_error(r->conn, 404, "unknown agent '%s'", r->param);
	return agd_reply_json(r->conn, created ? 201 : 200,
			 json_pack("{s:s,s:I,s:f,s:f}", "agent_id", r->param, "capacity",
				   (json_int_t)v.burst, "refill_rate", v.rate, "tokens", v.tokens),
			 NULL);
}

int bucket_get(struct req *r)
{
	struct agd_agent_view v;

	if (agd_engine_agent_view(r->h->e, r->param, &v))
		return send_error(r->conn, 404, "unknown agent '%s'", r->param);
	return agd_reply_json(r->conn, 200,
			 json_pack("{s:s,s:f,s:I,s:f}", "agent_id", r->param, "tokens", v.tokens,
				   "capacity", (json_int_t)v.burst, "refill_rate", v.rate),
			 NULL);
}

/* POST /rate {"agent_id","event_type","metadata"}: one token from the
 * agent's bucket; "score" is the agent's mean rating (0 before any). */
int rate_post(struct req *r)
{
	static const char *const allowed[] = { "agent_id", "event_type", "metadata", NULL };
	struct ag_consume_result res;
	struct agd_err oe = { 0 };
	struct agd_agent_view v;
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
	err = agd_engine_consume(r->h->e, agent, 1, &res, &oe);
	if (err || agd_engine_agent_view(r->h->e, agent, &v)) {
		json_decref(o);
		return err ? bad_agent(r, err, &oe) : send_error(r->conn, 404, "unknown agent");
	}
	reply = json_pack("{s:s,s:s,s:f,s:f}", "agent_id", agent, "event_type", event ? event : "",
			  "score", agd_stats_mean(&v.stats), "rate", v.rate);
	json_decref(o);
	return send_consume(r, &res, reply);
}
