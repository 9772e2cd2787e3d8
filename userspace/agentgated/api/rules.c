// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The rules: GET, POST and DELETE /v1/rules (DELETE takes its target from
 * a body or the query string).
 */
#include "server.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"

int rules_get(struct req *r)
{
	struct ag_ctx *ctx = agd_engine_ctx(r->h->e);
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
		agd_query_var(q, "prefix", prefix, sizeof(prefix));
		if (agd_query_var(q, "port", port, sizeof(port)) > 0) {
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

int rules_post(struct req *r)
{
	static const char *const allowed[] = { "prefix", "port", "agent", NULL };
	struct agd_err oe = { 0 };
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
	err = agd_engine_rule_add(r->h->e, &rule, agent, r->tok.subject, &oe);
	if (err) {
		json_decref(o);
		return bad_agent(r, err, &oe);
	}
	reply = json_pack("{s:O,s:i,s:s}", "prefix", json_object_get(o, "prefix"), "port",
			  rule.port, "agent", agent);
	json_decref(o);
	return agd_reply_json(r->conn, 201, reply, NULL);
}

int rules_delete(struct req *r)
{
	static const char *const allowed[] = { "prefix", "port", "agent", NULL };
	struct agd_err oe = { 0 };
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
	err = agd_engine_rule_del(r->h->e, &rule, r->tok.subject, &oe);
	if (err)
		return bad_agent(r, err, &oe);
	ag_prefix_format(&rule, prefix, sizeof(prefix));
	return agd_reply_json(r->conn, 200, json_pack("{s:s,s:i}", "deleted", prefix, "port", rule.port),
			 NULL);
}
