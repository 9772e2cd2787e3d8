// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Dispatch (engine.h): where a rating or an operator change goes. Standalone
 * it is applied here (the engine's apply functions, sequence 0); in a fleet
 * it goes to the replicator, and comes back through the log's consumer,
 * which calls agd_engine_apply_op with the log sequence. What cannot be
 * valid anywhere is refused before it reaches the log.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine.h"

static int refuse(struct agd_err *oe, const char *msg)
{
	if (oe)
		snprintf(oe->msg, sizeof(oe->msg), "%s", msg);
	return -EINVAL;
}

/* Into the fleet's log: every host applies it from there. */
static int to_log(const struct agd_replicator *r, struct agd_op *op, const char *agent,
		  const char *subject, bool *created, struct agd_err *oe)
{
	bool made = false;
	int err;

	snprintf(op->agent, sizeof(op->agent), "%s", agent);
	snprintf(op->subject, sizeof(op->subject), "%s", subject ? subject : "");
	err = r->op(r->arg, op, &made, oe);
	if (created)
		*created = made;
	return err;
}

int agd_engine_submit(struct agd_engine *e, struct agd_job *job)
{
	const struct agd_replicator *r = agd_engine_replicator(e);

	if (!r)
		return agd_engine_queue(e, job);
	agd_job_reset(job);
	return r->submit(r->arg, job);
}

int agd_engine_rate(struct agd_engine *e, struct agd_job *job)
{
	return agd_job_wait(e, job, agd_engine_submit);
}

int agd_engine_agent_put(struct agd_engine *e, const char *name, const struct agd_agent_change *c,
			const char *subject, bool *created, struct agd_err *oe)
{
	const struct agd_replicator *r = agd_engine_replicator(e);
	struct agd_op op = { .kind = AGD_OP_AGENT_PUT };

	if (ag_name_check(name))
		return refuse(oe, ag_errmsg());
	if (!strcmp(name, AGD_METRICS_OTHER))
		return refuse(oe, "agent name '" AGD_METRICS_OTHER
				  "' is reserved (the metrics aggregate)");
	if (!r)
		return agd_engine_apply_agent_put(e, 0, name, c, subject, created, oe);
	op.change = *c;
	return to_log(r, &op, name, subject, created, oe);
}

int agd_engine_agent_delete(struct agd_engine *e, const char *name, const char *subject,
			   struct agd_err *oe)
{
	const struct agd_replicator *r = agd_engine_replicator(e);
	struct agd_op op = { .kind = AGD_OP_AGENT_DELETE };

	if (!r)
		return agd_engine_apply_agent_delete(e, 0, name, subject, oe);
	return to_log(r, &op, name, subject, NULL, oe);
}

int agd_engine_parent_put(struct agd_engine *e, const char *name,
			  const struct agd_budget_change *c, const char *subject, bool *created,
			  struct agd_err *oe)
{
	const struct agd_replicator *r = agd_engine_replicator(e);
	struct agd_op op = { .kind = AGD_OP_PARENT_PUT, .budget = *c };

	if (ag_name_check(name))
		return refuse(oe, ag_errmsg());
	if (!strcmp(name, AGD_METRICS_OTHER))
		return refuse(oe, "name '" AGD_METRICS_OTHER "' is reserved (the metrics aggregate)");
	if (!r)
		return agd_engine_apply_parent_put(e, 0, name, c, subject, created, oe);
	return to_log(r, &op, name, subject, created, oe);
}

int agd_engine_parent_delete(struct agd_engine *e, const char *name, const char *subject,
			     struct agd_err *oe)
{
	const struct agd_replicator *r = agd_engine_replicator(e);
	struct agd_op op = { .kind = AGD_OP_PARENT_DELETE };

	if (!r)
		return agd_engine_apply_parent_delete(e, 0, name, subject, oe);
	return to_log(r, &op, name, subject, NULL, oe);
}

int agd_engine_rule_add(struct agd_engine *e, const struct ag_rule *rule, const char *agent,
		       const char *subject, struct agd_err *oe)
{
	const struct agd_replicator *r = agd_engine_replicator(e);
	struct agd_op op = { .kind = AGD_OP_RULE_ADD, .rule = *rule };

	if (!r)
		return agd_engine_apply_rule_add(e, 0, rule, agent, subject, oe);
	return to_log(r, &op, agent, subject, NULL, oe);
}

int agd_engine_rule_del(struct agd_engine *e, const struct ag_rule *rule, const char *subject,
		       struct agd_err *oe)
{
	const struct agd_replicator *r = agd_engine_replicator(e);
	struct agd_op op = { .kind = AGD_OP_RULE_DEL, .rule = *rule };

	if (!r)
		return agd_engine_apply_rule_del(e, 0, rule, subject, oe);
	return to_log(r, &op, "", subject, NULL, oe);
}

int agd_engine_config_set(struct agd_engine *e, const struct agd_config_change *c,
			 const char *subject, struct agd_err *oe)
{
	const struct agd_replicator *r = agd_engine_replicator(e);
	struct agd_op op = { .kind = AGD_OP_CONFIG_SET, .config = *c };

	if ((c->default_action != -1 && c->default_action != AG_ACTION_PASS &&
	     c->default_action != AG_ACTION_DROP) ||
	    (c->dry_run != -1 && c->dry_run != 0 && c->dry_run != 1))
		return refuse(oe, "default_action must be pass or drop, dry_run on or off");
	if (!r)
		return agd_engine_apply_config_set(e, 0, c, subject, oe);
	return to_log(r, &op, "", subject, NULL, oe);
}

int agd_engine_revoke(struct agd_engine *e, const struct agd_revocation *r, const char *subject,
		     struct agd_err *oe)
{
	const struct agd_replicator *rp = agd_engine_replicator(e);
	struct agd_op op = { .kind = AGD_OP_AUTH_REVOKE, .revoke = *r };

	if (!rp)
		return agd_engine_apply_revoke(e, 0, r, subject, oe);
	return to_log(rp, &op, "", subject, NULL, oe);
}
