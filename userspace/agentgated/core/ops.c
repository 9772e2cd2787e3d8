// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Operator changes applied here and now (agents, rules, the datapath's
 * global settings), bucket operations, and the replication hooks through
 * which the fleet's log applies them (agd_engine_apply_op). */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

/* ---- operator changes ------------------------------------------------------ */

/* Commits a prepared transaction with its audit line; on error aborts it. */
int finish_op(struct agd_engine *e, MDB_txn *txn, __u64 seq, int err, char *line,
		     struct agd_err *oe)
{
	if (!err)
		err = txn_commit(e, txn, seq);
	else
		agd_store_txn_end(txn);
	if (err) {
		free(line);
		return agd_store_fail(oe, err, "state not changed");
	}
	audit_file(e, line);
	return 0;
}

/* A new agent committed to LMDB that the maps then refused (no free slot):
 * take it out of LMDB again, so that what is stored has a bucket. */
static int unstore_new_agent(struct agd_engine *e, struct entry *en, struct agd_err *oe)
{
	char msg[200];
	MDB_txn *txn;
	int err;

	snprintf(msg, sizeof(msg), "%s", ag_errmsg());
	err = txn_begin(e, &txn);
	if (!err)
		err = store_agent_del(e, txn, en->name);
	if (!err)
		err = agd_store_hist_del(&e->st, txn, en->name);
	if (!err)
		err = txn_commit(e, txn, 0);
	else if (txn)
		agd_store_txn_end(txn);
	if (err)
		store_log(e, err, "agent '%s' is stored without a bucket", en->name);
	tab_remove(e, en);
	return agd_errf(oe, -ENOSPC, "cannot create the agent's bucket: %s", msg);
}

/* The audit's "after" with the agent's own influence limits when the
 * change set or unset any. */
static json_t *with_influence(json_t *after, const struct agd_agent_change *c,
			      const struct agd_influence_rec *r)
{
	json_t *o;

	if (!after || !(c->inf_set | c->inf_unset))
		return after;
	o = json_object();
	if (r->set & AGD_INF_MAX_CHANGE)
		json_object_set_new(o, "max_change", json_real(r->max_change));
	if (r->set & AGD_INF_WINDOW)
		json_object_set_new(o, "change_window_s", json_integer((json_int_t)(r->window_ms / 1000)));
	if (r->set & AGD_INF_WAVE_USERS)
		json_object_set_new(o, "wave_users", json_integer(r->wave_users));
	if (r->set & AGD_INF_WAVE_HOLD)
		json_object_set_new(o, "wave_hold", json_boolean(r->wave_hold));
	if (r->set & AGD_INF_USER_CAP)
		json_object_set_new(o, "user_cap", json_real(r->user_cap));
	json_object_set_new(after, "influence", o);
	return after;
}

/* A PUT's influence fields onto the agent's own (checked first). */
static int merge_influence(struct agd_influence_rec *r, const struct agd_agent_change *c,
			   struct agd_err *oe)
{
	const struct agd_influence *v = &c->inf;

	if (((c->inf_set | c->inf_unset) & ~AGD_INF__ALL) ||
	    ((c->inf_set & AGD_INF_MAX_CHANGE) && !(v->max_change >= 0 && v->max_change <= 100)) ||
	    ((c->inf_set & AGD_INF_WINDOW) &&
	     !(v->window_ms >= 1000 && v->window_ms <= 2592000000ULL)) ||
	    ((c->inf_set & AGD_INF_WAVE_USERS) && v->wave_users > 1000000) ||
	    ((c->inf_set & AGD_INF_USER_CAP) &&
	     !(v->user_cap > 0 && v->user_cap <= AGD_USER_CAP_MAX)))
		return agd_errf(oe, -EINVAL, "influence limits: max_change 0 to 100, "
				"change_window 1s to 30d, wave_users 0 to 1000000, user_cap "
				"above 0 to 2");
	r->version = AGD_STORE_VERSION;
	if (c->inf_set & AGD_INF_MAX_CHANGE)
		r->max_change = v->max_change;
	if (c->inf_set & AGD_INF_WINDOW)
		r->window_ms = v->window_ms;
	if (c->inf_set & AGD_INF_WAVE_USERS)
		r->wave_users = v->wave_users;
	if (c->inf_set & AGD_INF_WAVE_HOLD)
		r->wave_hold = v->wave_hold;
	if (c->inf_set & AGD_INF_USER_CAP)
		r->user_cap = v->user_cap;
	r->set = (r->set | c->inf_set) & ~c->inf_unset;
	return 0;
}

int agd_engine_apply_agent_put(struct agd_engine *e, __u64 seq, const char *name,
			      const struct agd_agent_change *c, const char *subject, bool *created,
			      struct agd_err *oe)
{
	bool budget = c->budget.fields & (AG_SET_PARENT | AG_SET_QUOTA);
	struct agd_influence_rec inf;
	struct agd_budget_rec brec;
	struct agd_agent_rec rec;
	struct agd_policy own, eff;
	struct entry *en;
	json_t *before = NULL, *after;
	char *line = NULL;
	MDB_txn *txn;
	bool made = false;
	int err;

	if (ag_name_check(name))
		return agd_errf(oe, -EINVAL, "%s", ag_errmsg());
	if (!strcmp(name, AGD_METRICS_OTHER))
		return agd_errf(oe, -EINVAL,
			"agent name '%s' is reserved (the metrics aggregate)", name);
	pthread_mutex_lock(&e->lock);
	en = tab_find(e, name);
	if (en) {
		rec = en->rec;
		before = policy_json(e, &rec);
	} else {
		rec_init(&rec, &e->defaults, wall_ms());
		rec.implicit = c->implicit;
		made = true;
	}
	agd_rec_policy(&rec, &own);
	agd_policy_merge(&own, &c->own, c->set, &own);
	agd_rec_set_policy(&rec, &own, (rec.set | c->set) & ~c->unset);
	agd_rec_effective(&rec, &e->defaults, &eff);
	if (c->set & AGD_POL_R0) {
		rec.rate = c->own.r0; /* an explicit rate must lie within the bounds */
	} else {
		/* The rate it has (or starts with) moves inside new bounds. */
		if (made)
			rec.rate = eff.r0;
		if (rec.rate < eff.r_min)
			rec.rate = eff.r_min;
		if (rec.rate > eff.r_max)
			rec.rate = eff.r_max;
	}
	eff.r0 = rec.rate;
	err = agd_policy_check(&eff, oe);
	if (!err && ag_limit_check(rec.rate, agd_policy_burst_tokens(&eff, rec.rate), eff.unit))
		err = agd_errf(oe, -EINVAL, "%s", ag_errmsg());
	if (err) {
		json_decref(before);
		pthread_mutex_unlock(&e->lock);
		return -EINVAL;
	}
	inf = en ? en->inf : (struct agd_influence_rec){ .version = AGD_STORE_VERSION };
	if (c->inf_set || c->inf_unset) {
		err = merge_influence(&inf, c, oe);
		if (err) {
			json_decref(before);
			pthread_mutex_unlock(&e->lock);
			return err;
		}
	}
	if (budget) {
		err = budget_agent_prepare(e, name, &c->budget, &brec, oe);
		if (err) {
			json_decref(before);
			pthread_mutex_unlock(&e->lock);
			return err;
		}
	}
	rec.updated_ms = wall_ms();
	err = txn_begin(e, &txn);
	if (err) {
		json_decref(before);
		pthread_mutex_unlock(&e->lock);
		return agd_store_fail(oe, err, "state not changed");
	}
	err = agd_store_agent_put(&e->st, txn, name, &rec);
	if (!err && (c->inf_set || c->inf_unset))
		err = agd_store_influence_put(&e->st, txn, name, &inf);
	if (!err && budget)
		err = budget_agent_store(e, txn, name, &brec);
	if (!err && made) /* an operator brings a deleted agent back */
		err = agd_store_deleted_del(&e->st, txn, name);
	if (!err)
		err = mark_logged(e, txn, name, en, seq);
	if (!err) {
		after = with_influence(policy_json(e, &rec), c, &inf);
		if (after && budget) {
			json_t *bj = budget_json(&brec);

			json_object_set(after, "parent", json_object_get(bj, "parent"));
			json_object_set(after, "quota", json_object_get(bj, "quota"));
			json_decref(bj);
		}
		err = audit(e, txn, subject, made ? "agent.create" : "agent.update", name, before,
			    after, &line);
	} else {
		json_decref(before);
	}
	err = finish_op(e, txn, seq, err, line, oe);
	if (!err && budget) /* kept before the bucket: a new one gets it */
		err = budget_agent_commit(e, name, &brec, false);
	if (!err) {
		if (!en) {
			make_room(e, 1);
			en = tab_add(e, name);
		}
		if (!en) {
			err = agd_errf(oe, -ENOMEM, "out of memory");
		} else {
			en->rec = rec;
			en->inf = inf;
			if (seq)
				en->log_mark = seq;
			touch(en);
			err = push_to_map(e, en, made);
			if (err && made)
				err = unstore_new_agent(e, en, oe);
			else if (err)
				agd_errf(oe, err,
					"stored, but the maps refused it: %s", ag_errmsg());
			else if (c->fill_tokens >= 0 &&
				 ag_bucket_fill(e->ctx, en->slot, c->fill_tokens))
				err = agd_errf(oe, -EIO, "cannot fill the bucket: %s", ag_errmsg());
			else if (budget && !made && budget_agent_commit(e, name, &brec, true))
				err = agd_errf(oe, -EIO,
					       "stored, but the maps refused its parent or quota: %s",
					       ag_errmsg());
		}
	}
	pthread_mutex_unlock(&e->lock);
	if (created)
		*created = made;
	return err;
}

/* For a walk of the stored rules: 1 (delete) for those of agent arg. */
static int rule_of_agent(void *arg, const struct agd_rule_rec_key *key, const char *agent)
{
	(void)key;
	return !strcmp(agent, arg);
}

int agd_engine_apply_agent_delete(struct agd_engine *e, __u64 seq, const char *name,
				 const char *subject, struct agd_err *oe)
{
	struct ag_rule *rules = NULL;
	size_t n_rules = 0, i;
	struct entry *en;
	char *line = NULL;
	MDB_txn *txn;
	int err;

	pthread_mutex_lock(&e->lock);
	en = tab_find(e, name);
	if (!en) {
		/* Expired, with its parent and quota kept: those go. */
		err = budget_delete_kept(e, seq, name, subject, oe);
		pthread_mutex_unlock(&e->lock);
		if (err == -ENOENT)
			return agd_errf(oe, -ENOENT, "unknown agent '%s'", name);
		return err;
	}
	/* Its rules, to put back should the commit fail. */
	if (en->map_rate >= 0 && !ag_rule_list(e->ctx, &rules, &n_rules)) {
		size_t kept = 0;

		for (i = 0; i < n_rules; i++)
			if (rules[i].slot == en->slot)
				rules[kept++] = rules[i];
		n_rules = kept;
	}
	/* Maps first: a crash before the commit brings the agent back, never
	 * leaves a stored agent without its bucket. */
	err = ag_agent_delete(e->ctx, name);
	if (err && err != -ENOENT) {
		pthread_mutex_unlock(&e->lock);
		free(rules);
		return agd_errf(oe, err, "cannot remove '%s' from the maps: %s", name, ag_errmsg());
	}
	err = txn_begin(e, &txn);
	if (err)
		goto out;
	err = store_agent_del(e, txn, name);
	if (!err)
		err = agd_store_deleted_put(&e->st, txn, name, wall_ms(), subject);
	if (!err)
		err = agd_store_rules_foreach(&e->st, txn, rule_of_agent, (void *)name);
	if (!err)
		err = budget_forget(e, txn, name);
	if (!err)
		err = audit(e, txn, subject, "agent.delete", name, policy_json(e, &en->rec), NULL,
			    &line);
	err = finish_op(e, txn, seq, err, line, oe);
	if (!err) {
		tab_remove(e, en);
		budget_forgotten(e, name);
	}
out:
	if (err) {
		/* The agent stays: give it its bucket (full) and rules back. */
		en->map_rate = -1;
		if (!push_to_map(e, en, true))
			for (i = 0; i < n_rules; i++)
				ag_rule_add(e->ctx, &rules[i], name);
		if (oe && !oe->msg[0])
			agd_store_fail(oe, err, "state not changed");
	}
	pthread_mutex_unlock(&e->lock);
	free(rules);
	return err;
}

/* The slot of the agent's bucket now, by name: the CLI may have deleted or
 * recreated it since. A daemon agent without a bucket gets one again.
 * Called under e->lock. */
static int bucket_slot(struct agd_engine *e, struct entry *en, __u32 *slot, struct agd_err *oe)
{
	struct ag_agent live;

	if (en->map_rate >= 0 && !ag_agent_get(e->ctx, en->name, &live)) {
		en->slot = live.slot;
		*slot = live.slot;
		return 0;
	}
	en->map_rate = -1;
	if (push_to_map(e, en, true))
		return agd_errf(oe, -ENOSPC, "agent '%s' has no bucket in the maps: %s", en->name,
			    ag_errmsg());
	*slot = en->slot;
	return 0;
}

/* Reset and drain change only the live bucket; they are audited. */
static int bucket_op(struct agd_engine *e, const char *name, const char *action, __u64 tokens,
		     const char *subject, double *remaining, struct agd_err *oe)
{
	struct entry *en;
	char *line = NULL;
	double before = 0;
	MDB_txn *txn;
	__u32 slot = 0;
	int err;

	pthread_mutex_lock(&e->lock);
	en = tab_find(e, name);
	if (!en) {
		pthread_mutex_unlock(&e->lock);
		return agd_errf(oe, -ENOENT, "unknown agent '%s'", name);
	}
	err = bucket_slot(e, en, &slot, oe);
	if (err) {
		pthread_mutex_unlock(&e->lock);
		return err;
	}
	ag_bucket_tokens(e->ctx, slot, &before);
	touch(en);
	err = strcmp(action, "agent.reset") ? ag_bucket_drain(e->ctx, slot, tokens, remaining)
					     : ag_bucket_reset(e->ctx, slot);
	if (err) {
		pthread_mutex_unlock(&e->lock);
		return agd_errf(oe, err, "%s", ag_errmsg());
	}
	if (!strcmp(action, "agent.reset") && remaining)
		ag_bucket_tokens(e->ctx, slot, remaining);
	err = txn_begin(e, &txn);
	if (!err) {
		double after = 0;

		ag_bucket_tokens(e->ctx, slot, &after);
		err = audit(e, txn, subject, action, name, json_pack("{s:f}", "tokens", before),
			    json_pack("{s:f,s:I}", "tokens", after, "drained", (json_int_t)tokens),
			    &line);
		err = finish_op(e, txn, 0, err, line, oe);
	}
	pthread_mutex_unlock(&e->lock);
	if (err) /* the bucket changed; say so rather than hide it */
		e->opts.log(AGD_LOG_ERR, "%s of '%s' done but not audited: %s", action, name,
			    oe ? oe->msg : "");
	return 0;
}

int agd_engine_agent_reset(struct agd_engine *e, const char *name, const char *subject,
			  struct agd_err *oe)
{
	return bucket_op(e, name, "agent.reset", 0, subject, NULL, oe);
}

int agd_engine_agent_drain(struct agd_engine *e, const char *name, __u64 tokens,
			  const char *subject, double *remaining, struct agd_err *oe)
{
	return bucket_op(e, name, "agent.drain", tokens, subject, remaining, oe);
}

/* A bucket operation by name from the maps, not through e->lock: a
 * consume must not wait for a group commit's fsync. Known names come from
 * the library's cache, checked against the bucket's generation: no system
 * call. charge: into debt of at most --charge-max-debt; else consume. */
static int by_slot(struct agd_engine *e, const char *name, __u64 tokens, bool charge,
		   struct ag_consume_result *res, struct agd_err *oe)
{
	__u64 max_debt_ns = __atomic_load_n(&e->opts.charge_max_debt_ms, __ATOMIC_RELAXED) *
			    1000000ULL;
	__u32 slot;
	int err;

	err = ag_agent_slot(e->ctx, name, &slot);
	if (err)
		return agd_errf(oe, err == -ENOENT ? -ENOENT : err, err == -ENOENT ?
			    "unknown agent '%s'" : "%s", err == -ENOENT ? name : ag_errmsg());
	err = charge ? ag_bucket_charge(e->ctx, slot, tokens, max_debt_ns, res) :
		       ag_bucket_consume(e->ctx, slot, tokens, res);
	/* Activity the sweep cannot see in the bucket when it was refused. */
	if (!err && e->consumed && slot < ag_max_agents(e->ctx))
		atomic_store_explicit(&e->consumed[slot], 1, memory_order_relaxed);
	return err ? agd_errf(oe, err, "%s", ag_errmsg()) : 0;
}

int agd_engine_charge(struct agd_engine *e, const char *name, __u64 tokens,
		      struct ag_consume_result *res, struct agd_err *oe)
{
	return by_slot(e, name, tokens, true, res, oe);
}

int agd_engine_consume(struct agd_engine *e, const char *name, __u64 tokens,
		      struct ag_consume_result *res, struct agd_err *oe)
{
	return by_slot(e, name, tokens, false, res, oe);
}

static json_t *rule_json(const struct ag_rule *rule, const char *agent)
{
	char prefix[AG_PREFIX_STRLEN];

	ag_prefix_format(rule, prefix, sizeof(prefix));
	return json_pack("{s:s,s:i,s:s}", "prefix", prefix, "port", rule->port, "agent", agent);
}

static bool same_rule(const struct ag_rule *a, const struct ag_rule *b)
{
	return a->family == b->family && a->plen == b->plen && a->port == b->port &&
	       !memcmp(a->addr, b->addr, 16);
}

/* The agent a stored rule maps to, into buf; 0, -ENOENT or an error. */
static int stored_rule_agent(struct agd_engine *e, MDB_txn *txn, const struct agd_rule_rec_key *key,
			     char *buf, size_t len)
{
	return agd_store_rule_get(&e->st, txn, key, buf, len);
}

static void unstore_rule(struct agd_engine *e, const struct agd_rule_rec_key *key)
{
	MDB_txn *txn;
	int err = txn_begin(e, &txn);

	if (!err) {
		err = agd_store_rule_del(&e->st, txn, key);
		if (!err)
			err = txn_commit(e, txn, 0);
		else
			agd_store_txn_end(txn);
	}
	if (err)
		store_log(e, err, "a refused rule stays stored (restart retries it)");
}

int agd_engine_apply_rule_add(struct agd_engine *e, __u64 seq, const struct ag_rule *rule,
			     const char *agent, const char *subject, struct agd_err *oe)
{
	struct agd_rule_rec_key key;
	char *line = NULL, owner[AG_NAME_MAX + 1], prefix[AG_PREFIX_STRLEN];
	struct entry *en;
	bool known = false;
	MDB_txn *txn;
	int err;

	pthread_mutex_lock(&e->lock);
	en = tab_find(e, agent);
	if (!en) {
		pthread_mutex_unlock(&e->lock);
		return agd_errf(oe, -ENOENT, "unknown agent '%s'", agent);
	}
	touch(en);
	rule_key_of(rule, &key);
	ag_prefix_format(rule, prefix, sizeof(prefix));
	err = txn_begin(e, &txn);
	if (err) {
		pthread_mutex_unlock(&e->lock);
		return agd_store_fail(oe, err, "state not changed");
	}
	err = stored_rule_agent(e, txn, &key, owner, sizeof(owner));
	if (!err && strcmp(owner, agent)) {
		agd_store_txn_end(txn);
		pthread_mutex_unlock(&e->lock);
		return agd_errf(oe, -EEXIST,
			"rule %s port %u already maps to agent '%s'; delete it first",
			    prefix, rule->port, owner);
	}
	known = !err;
	/* Stored first: a crash after the commit restores it into the maps. */
	err = err == -ENOENT || !err ? agd_store_rule_put(&e->st, txn, &key, agent) : err;
	if (!err)
		err = mark_logged(e, txn, agent, en, seq);
	if (!err)
		err = audit(e, txn, subject, "rule.add", agent, NULL, rule_json(rule, agent),
			    &line);
	err = finish_op(e, txn, seq, err, line, oe);
	if (!err) {
		int map_err = ag_rule_add(e->ctx, rule, agent);

		if (map_err) { /* e.g. the CLI mapped it to another agent */
			err = agd_errf(oe, map_err, "%s", ag_errmsg());
			if (!known)
				unstore_rule(e, &key);
		}
	}
	pthread_mutex_unlock(&e->lock);
	return err;
}

int agd_engine_apply_rule_del(struct agd_engine *e, __u64 seq, const struct ag_rule *rule,
			     const char *subject, struct agd_err *oe)
{
	struct agd_rule_rec_key key;
	struct ag_rule *all = NULL;
	size_t n = 0, i;
	const char *agent = NULL;
	char *line = NULL, agent_buf[AG_NAME_MAX + 1];
	const char **names = NULL;
	MDB_txn *txn;
	bool fed;
	int err;

	pthread_mutex_lock(&e->lock);
	err = ag_rule_list(e->ctx, &all, &n);
	if (!err && !(names = slot_names(e)))
		err = -ENOMEM;
	for (i = 0; !err && i < n && !agent; i++)
		if (same_rule(rule, &all[i]))
			agent = slot_name(names, e->ctx, all[i].slot);
	if (agent)
		snprintf(agent_buf, sizeof(agent_buf), "%s", agent);
	agent = agent ? agent_buf : NULL;
	free(names);
	free(all);
	if (err || !agent) {
		pthread_mutex_unlock(&e->lock);
		if (err)
			return agd_errf(oe, err, "%s", ag_errmsg());
		return agd_errf(oe, -ENOENT, "no such rule");
	}
	rule_key_of(rule, &key);
	/* A prefix the agent's feed has stays in the maps: only a hand rule
	 * also made for it is deleted (from the store). */
	fed = feeds_own_rule(e, rule, agent);
	err = fed ? 0 : ag_rule_del(e->ctx, rule);
	if (err) {
		pthread_mutex_unlock(&e->lock);
		return agd_errf(oe, err, "%s", ag_errmsg());
	}
	err = txn_begin(e, &txn);
	if (!err) {
		err = agd_store_rule_del(&e->st, txn, &key);
		if (err == -ENOENT && fed) {
			agd_store_txn_end(txn);
			pthread_mutex_unlock(&e->lock);
			return agd_errf(oe, -EEXIST, "this rule comes from the rule feed of agent "
					"'%s': it goes when the feed's source drops it, or with "
					"the feed (DELETE /v1/agents/%s/feed)", agent, agent);
		}
		if (err == -ENOENT)
			err = 0;
		if (!err)
			err = audit(e, txn, subject, "rule.delete", agent, rule_json(rule, agent),
				    NULL, &line);
		err = finish_op(e, txn, seq, err, line, oe);
	} else {
		agd_store_fail(oe, err, "state not changed");
	}
	if (err && !fed)
		ag_rule_add(e->ctx, rule, agent); /* put it back as it was */
	pthread_mutex_unlock(&e->lock);
	return err;
}

/* ---- global settings ------------------------------------------------------------ */

static json_t *config_json(const struct ag_config *cfg)
{
	return json_pack("{s:s,s:b}", "default_action",
			 cfg->default_action == AG_ACTION_DROP ? "drop" : "pass", "dry_run",
			 (int)cfg->dry_run);
}

int agd_engine_apply_config_set(struct agd_engine *e, __u64 seq, const struct agd_config_change *c,
			       const char *subject, struct agd_err *oe)
{
	struct ag_config before, after;
	char *line = NULL;
	MDB_txn *txn;
	int err;

	if ((c->default_action != -1 && c->default_action != AG_ACTION_PASS &&
	     c->default_action != AG_ACTION_DROP) ||
	    (c->dry_run != -1 && c->dry_run != 0 && c->dry_run != 1))
		return agd_errf(oe, -EINVAL,
			"default_action must be pass or drop, dry_run on or off");
	pthread_mutex_lock(&e->lock);
	err = ag_config_get(e->ctx, &before);
	if (!err && c->default_action != -1)
		err = ag_config_set_default_action(e->ctx, (enum ag_action)c->default_action);
	if (!err && c->dry_run != -1)
		err = ag_config_set_dry_run(e->ctx, c->dry_run == 1);
	if (!err)
		err = ag_config_get(e->ctx, &after);
	if (err) {
		pthread_mutex_unlock(&e->lock);
		return agd_errf(oe, err, "%s", ag_errmsg());
	}
	err = txn_begin(e, &txn);
	if (!err) {
		err = audit(e, txn, subject, "config.set", NULL, config_json(&before),
			    config_json(&after), &line);
		err = finish_op(e, txn, seq, err, line, oe);
	}
	pthread_mutex_unlock(&e->lock);
	if (err) /* the datapath changed; say so rather than hide it */
		e->opts.log(AGD_LOG_ERR, "config.set done but not audited: %s", oe ? oe->msg : "");
	return 0;
}

/* ---- replication ---------------------------------------------------------------- */

void agd_engine_replicate(struct agd_engine *e, const struct agd_replicator *r)
{
	e->repl = *r;
	e->replicated = true;
}

const struct agd_replicator *agd_engine_replicator(struct agd_engine *e)
{
	return e->replicated ? &e->repl : NULL;
}

int agd_engine_apply_op(struct agd_engine *e, const struct agd_op *op, __u64 seq, bool *created,
		       struct agd_err *oe)
{
	if (created)
		*created = false;
	switch (op->kind) {
	case AGD_OP_AGENT_PUT:
		return agd_engine_apply_agent_put(e, seq, op->agent, &op->change, op->subject,
						 created, oe);
	case AGD_OP_AGENT_DELETE:
		return agd_engine_apply_agent_delete(e, seq, op->agent, op->subject, oe);
	case AGD_OP_RULE_ADD:
		return agd_engine_apply_rule_add(e, seq, &op->rule, op->agent, op->subject, oe);
	case AGD_OP_RULE_DEL:
		return agd_engine_apply_rule_del(e, seq, &op->rule, op->subject, oe);
	case AGD_OP_CONFIG_SET:
		return agd_engine_apply_config_set(e, seq, &op->config, op->subject, oe);
	case AGD_OP_AGENT_TOUCH:
		return apply_touch(e, seq, op->agent, oe);
	case AGD_OP_AGENT_EXPIRE:
		return apply_expire(e, seq, op->agent, op->mark, oe);
	case AGD_OP_AUTH_REVOKE:
		return agd_engine_apply_revoke(e, seq, &op->revoke, op->subject, oe);
	case AGD_OP_FEED_PUT:
		return agd_engine_apply_feed_put(e, seq, op->agent, &op->feed, op->subject, oe);
	case AGD_OP_FEED_DELETE:
		return agd_engine_apply_feed_delete(e, seq, op->agent, op->subject, oe);
	case AGD_OP_FEED_SET:
		if (!op->feed_set)
			return agd_errf(oe, -EINVAL, "a feed set without its prefixes");
		return agd_engine_apply_feed_set(e, seq, op->agent, op->feed_set, &op->feed,
						 op->subject, oe);
	case AGD_OP_PARENT_PUT:
		return agd_engine_apply_parent_put(e, seq, op->agent, &op->budget, op->subject,
						   created, oe);
	case AGD_OP_PARENT_DELETE:
		return agd_engine_apply_parent_delete(e, seq, op->agent, op->subject, oe);
	}
	return agd_errf(oe, -EINVAL, "unknown operation %d", (int)op->kind);
}

__u64 agd_engine_log_seq(struct agd_engine *e)
{
	__u64 seq;

	pthread_mutex_lock(&e->lock);
	seq = e->log_seq;
	pthread_mutex_unlock(&e->lock);
	return seq;
}

int agd_engine_set_share(struct agd_engine *e, const char *name, double share)
{
	struct entry *en;
	int err = -ENOENT;

	if (!(share > 0 && share <= 1))
		return -EINVAL;
	pthread_mutex_lock(&e->lock);
	en = tab_find(e, name);
	if (en) {
		en->share = share;
		err = en->map_rate >= 0 ? push_to_map(e, en, false) : 0;
	}
	pthread_mutex_unlock(&e->lock);
	return err;
}

int agd_engine_status(int err)
{
	switch (err) {
	case -EINVAL: return 400;
	case -ENOENT: return 404;
	case -ELOOP: return 400; /* a parent below itself */
	case -EEXIST:
	case -EBUSY: return 409; /* a parent with children */
	case -ENOSPC: return 507;
	case -ESHUTDOWN:
	case -ENOTCONN: /* the fleet's log is unreachable */
	case -ETIMEDOUT: return 503;
	default: return 500;
	}
}
