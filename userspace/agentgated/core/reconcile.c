// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Start: the agents and rules LMDB knows, brought together with what the
 * maps hold and what the CLI changed while no daemon ran (agd_engine_open). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

/* ---- start: load and reconcile ------------------------------------------- */

static int load_one(void *arg, const char *name, const struct agd_agent_rec *rec)
{
	struct agd_engine *e = arg;
	struct entry *en = tab_add(e, name);

	if (!en)
		return -ENOMEM;
	en->rec = *rec;
	return 0;
}

/* An agent's own influence limits, onto its entry. */
static int load_influence(void *arg, const char *name, const struct agd_influence_rec *rec)
{
	struct entry *en = tab_find(arg, name);

	if (en)
		en->inf = *rec;
	return 0;
}

int load_agents(struct agd_engine *e, struct agd_err *errbuf)
{
	MDB_txn *txn = NULL;
	size_t skipped = 0;
	int err = agd_store_read_begin(&e->st, &txn);

	if (!err)
		err = agd_store_meta_get_u64(&e->st, txn, "log_seq", &e->log_seq);
	if (!err)
		err = agd_store_agents_foreach(&e->st, txn, load_one, e, &skipped);
	if (!err)
		err = agd_store_influence_foreach(&e->st, txn, load_influence, e);
	if (!err)
		err = budgets_load(e, txn);
	agd_store_txn_end(txn);
	if (skipped)
		e->opts.log(AGD_LOG_WARN, "state store: skipped %zu malformed agent records", skipped);
	if (err)
		return agd_store_fail(errbuf, err, "cannot read the agents from the state store");
	return 0;
}

/* An agent made with the CLI becomes one of ours, pinned where it was. */
static int adopt_agent(void *arg, const struct ag_agent *a)
{
	struct agd_engine *e = arg;
	struct agd_policy own = e->defaults;
	struct entry *en;

	if (tab_find(e, a->name))
		return 0;
	en = tab_add(e, a->name);
	if (!en)
		return -ENOMEM;
	rec_init(&en->rec, &e->defaults, wall_ms());
	en->slot = a->slot;
	en->map_rate = a->rate;
	en->map_burst = a->burst;
	en->map_unit = a->unit;
	en->map_pinned = a->pinned;
	en->new_in_batch = true; /* marks "to store" for reconcile */
	/* What a rating creates before its commit looks like this: a crash in
	 * between leaves it in the maps only. It keeps following the defaults. */
	if (a->rate == e->defaults.r0 && !a->pinned && a->unit == e->defaults.unit &&
	    a->burst == agd_policy_burst_tokens(&e->defaults, a->rate))
		return 0;
	own.r0 = a->rate;
	own.burst = (double)a->burst;
	own.burst_kind = AGD_BURST_TOKENS;
	own.unit = a->unit;
	own.pinned = a->pinned;
	if (own.r_min > a->rate)
		own.r_min = a->rate;
	if (own.r_max < a->rate)
		own.r_max = a->rate;
	agd_rec_set_policy(&en->rec, &own,
			  AGD_POL_R0 | AGD_POL_BURST | AGD_POL_UNIT | AGD_POL_PINNED | AGD_POL_R_MIN |
				  AGD_POL_R_MAX);
	en->rec.rate = a->rate;
	return 0;
}

static void rule_of_key(const struct agd_rule_rec_key *k, struct ag_rule *r)
{
	memset(r, 0, sizeof(*r));
	r->family = k->family;
	r->plen = k->plen;
	r->port = k->port;
	memcpy(r->addr, k->addr, 16);
}

static int cmp_rule(const void *pa, const void *pb)
{
	const struct ag_rule *a = pa, *b = pb;

	if (a->family != b->family)
		return a->family < b->family ? -1 : 1;
	if (a->plen != b->plen)
		return a->plen < b->plen ? -1 : 1;
	if (a->port != b->port)
		return a->port < b->port ? -1 : 1;
	return memcmp(a->addr, b->addr, 16);
}

/* ---- what the CLI changed while no daemon ran (the owner's journal) ------------------ */

#define JOURNAL_SUBJECT "agentgate (while agentgated was stopped)"

struct journal {
	struct ag_journal_entry *list;
	size_t n;
	struct ag_rule *rules; /* the journaled rules, sorted by cmp_rule */
	size_t n_rules;
	bool all; /* the journal overflowed: the maps are the truth for all */
};

/* Reads the journal; its rules sorted for lookups by bsearch. */
static int journal_read(struct agd_engine *e, struct journal *j)
{
	size_t i;
	int err = ag_owner_journal_read(ag_pin_root(e->ctx), &j->list, &j->n);

	if (err)
		return err;
	j->rules = j->n ? calloc(j->n, sizeof(*j->rules)) : NULL;
	if (j->n && !j->rules)
		return -ENOMEM;
	for (i = 0; i < j->n; i++) {
		j->all |= j->list[i].kind == AG_JOURNAL_ALL;
		if (j->list[i].kind == AG_JOURNAL_RULE)
			j->rules[j->n_rules++] = j->list[i].rule;
	}
	if (j->n_rules)
		qsort(j->rules, j->n_rules, sizeof(*j->rules), cmp_rule);
	return 0;
}

static void journal_free(struct journal *j)
{
	free(j->list);
	free(j->rules);
}

static bool journaled_rule(const struct journal *j, const struct ag_rule *r)
{
	return j->all ||
	       (j->n_rules && bsearch(r, j->rules, j->n_rules, sizeof(*j->rules), cmp_rule));
}

/* The map's word on a stored agent the CLI changed: each field that differs
 * from what the stored policy gives becomes the agent's own. */
static void rec_take_map(struct agd_engine *e, struct agd_agent_rec *rec, const struct ag_agent *a)
{
	struct agd_policy own, eff;
	unsigned int set = rec->set;

	agd_rec_policy(rec, &own);
	agd_rec_effective(rec, &e->defaults, &eff);
	if (a->rate != rec->rate) {
		own.r0 = a->rate;
		set |= AGD_POL_R0;
		if (eff.r_min > a->rate) {
			own.r_min = a->rate;
			set |= AGD_POL_R_MIN;
		}
		if (eff.r_max < a->rate) {
			own.r_max = a->rate;
			set |= AGD_POL_R_MAX;
		}
		rec->rate = a->rate;
	}
	if (a->burst != agd_policy_burst_tokens(&eff, a->rate)) {
		own.burst = (double)a->burst;
		own.burst_kind = AGD_BURST_TOKENS;
		set |= AGD_POL_BURST;
	}
	if (a->unit != eff.unit) {
		own.unit = a->unit;
		set |= AGD_POL_UNIT;
	}
	if (a->pinned != eff.pinned) {
		own.pinned = a->pinned;
		set |= AGD_POL_PINNED;
	}
	agd_rec_set_policy(rec, &own, set);
	rec->updated_ms = wall_ms();
}

/* Rules LMDB has and the maps lack go in, unless the CLI deleted them while
 * no daemon ran (journaled) or their agent is gone: then they leave LMDB.
 * Rules only the maps have are adopted. A prefix both know for different
 * agents keeps the maps' agent. */
struct rules_walk {
	struct agd_engine *e;
	const struct journal *j;
	const struct ag_rule *live;
	size_t n_live, dropped;
};

/* A stored rule the maps lack: back into them, or out of the store. */
static int restore_rule(void *arg, const struct agd_rule_rec_key *key, const char *agent)
{
	struct rules_walk *w = arg;
	struct ag_rule rule;

	rule_of_key(key, &rule);
	if (bsearch(&rule, w->live, w->n_live, sizeof(*w->live), cmp_rule))
		return 0;
	if (!tab_find(w->e, agent) || journaled_rule(w->j, &rule)) {
		w->dropped++;
		return 1;
	}
	if (ag_rule_add(w->e->ctx, &rule, agent))
		w->e->opts.log(AGD_LOG_WARN, "cannot restore a rule of '%s': %s", agent,
			       ag_errmsg());
	return 0;
}

static int reconcile_rules(struct agd_engine *e, MDB_txn *txn, const struct journal *j,
			   size_t *dropped)
{
	struct rules_walk w = { .e = e, .j = j };
	struct ag_rule *live = NULL;
	size_t n_live = 0, i;
	const char **names;
	int err;

	err = ag_rule_list(e->ctx, &live, &n_live);
	if (err)
		return err;
	qsort(live, n_live, sizeof(*live), cmp_rule);
	names = slot_names(e);
	w.live = live;
	w.n_live = n_live;
	err = names ? agd_store_rules_foreach(&e->st, txn, restore_rule, &w) : -ENOMEM;
	*dropped += w.dropped;
	for (i = 0; !err && i < n_live; i++) {
		struct agd_rule_rec_key key;
		const char *agent = slot_name(names, e->ctx, live[i].slot);

		if (!agent || feeds_own_rule(e, &live[i], agent))
			continue;
		rule_key_of(&live[i], &key);
		err = agd_store_rule_put(&e->st, txn, &key, agent);
	}
	free(live);
	free(names);
	return err;
}

/* Defaults may have changed while the daemon was down. */
static void clamp_rate(struct agd_engine *e, struct entry *en)
{
	struct agd_policy p;

	effective(e, en, &p);
	if (p.pinned)
		return;
	if (en->rec.rate > p.r_max)
		en->rec.rate = p.r_max;
	if (en->rec.rate < p.r_min)
		en->rec.rate = p.r_min;
}

/* One audit record per agent the journal changed: lines to write once the
 * reconciliation commits. */
struct journal_audit {
	char **lines;
	size_t n;
};

static int journal_audit(struct agd_engine *e, MDB_txn *txn, struct journal_audit *ja,
			 const char *action, const char *name, json_t *before, json_t *after)
{
	char *line = NULL, **grown = realloc(ja->lines, (ja->n + 1) * sizeof(*ja->lines));
	int err;

	if (!grown) {
		json_decref(before);
		json_decref(after);
		return -ENOMEM;
	}
	ja->lines = grown;
	err = audit(e, txn, JOURNAL_SUBJECT, action, name, before, after, &line);
	if (!err)
		ja->lines[ja->n++] = line;
	return err;
}

/* One stored agent the journal names: still in the maps, it takes their
 * policy (audited when that changed it); gone from them, it leaves LMDB
 * in the transaction (and the table, through *gone, afterwards). */
static int journal_agent(struct agd_engine *e, struct entry *en, MDB_txn *txn,
			 struct journal_audit *ja, struct entry ***gone, size_t *n_gone,
			 size_t *changed)
{
	struct ag_agent live;
	json_t *before = policy_json(e, &en->rec), *after;
	int err;

	if (ag_agent_get(e->ctx, en->name, &live)) {
		struct entry **grown = realloc(*gone, (*n_gone + 1) * sizeof(**gone));

		if (!grown) {
			json_decref(before);
			return -ENOMEM;
		}
		*gone = grown;
		(*gone)[(*n_gone)++] = en;
		err = store_agent_del(e, txn, en->name);
		if (!err)
			err = agd_store_deleted_put(&e->st, txn, en->name, wall_ms(),
						   JOURNAL_SUBJECT);
		if (!err)
			err = journal_audit(e, txn, ja, "agent.delete", en->name, before, NULL);
		else
			json_decref(before);
		*changed += !err;
		return err;
	}
	rec_take_map(e, &en->rec, &live);
	after = policy_json(e, &en->rec);
	if (json_equal(before, after)) { /* the maps say what the store does */
		json_decref(before);
		json_decref(after);
		return 0;
	}
	en->new_in_batch = true; /* to store */
	(*changed)++;
	return journal_audit(e, txn, ja, "agent.adopt", en->name, before, after);
}

/* Stored agents the CLI changed while no daemon ran: each journaled name
 * found by its hash, every stored agent when the journal overflowed. */
static int apply_journal(struct agd_engine *e, const struct journal *j, MDB_txn *txn,
			 struct journal_audit *ja, size_t *changed)
{
	struct entry *en, **gone = NULL;
	size_t i, n_gone = 0;
	int err = 0;

	if (j->all) {
		TAB_FOREACH(e, i, en) {
			err = journal_agent(e, en, txn, ja, &gone, &n_gone, changed);
			if (err)
				break;
		}
	} else {
		for (i = 0; i < j->n && !err; i++)
			if (j->list[i].kind == AG_JOURNAL_AGENT &&
			    (en = tab_find(e, j->list[i].name)))
				err = journal_agent(e, en, txn, ja, &gone, &n_gone, changed);
	}
	for (i = 0; !err && i < n_gone; i++)
		tab_remove(e, gone[i]);
	free(gone);
	return err;
}

int reconcile(struct agd_engine *e, struct agd_err *errbuf)
{
	struct journal j = { 0 };
	struct journal_audit ja = { 0 };
	MDB_txn *txn = NULL;
	struct entry *en;
	size_t i, adopted = 0, restored = 0, journaled = 0, rules_dropped = 0;
	size_t b_taken = 0, b_restored = 0, b_adopted = 0;
	int err;

	err = journal_read(e, &j);
	if (err) {
		snprintf(errbuf->msg, sizeof(errbuf->msg),
			"cannot read what the CLI changed while agentgated was "
			 "stopped: %s", err == -ENOMEM ? "out of memory" : ag_errmsg());
		journal_free(&j);
		return err;
	}
	err = txn_begin(e, &txn);
	if (!err)
		err = apply_journal(e, &j, txn, &ja, &journaled);
	/* Parents before the agents: a bucket made for an agent gets its link. */
	if (!err)
		err = budgets_prepare(e, txn, j.list, j.n, j.all, &b_taken);
	if (err)
		goto store_err;
	/* Ours first: their maps entries get our rates (buckets kept). */
	TAB_FOREACH(e, i, en) {
		struct ag_agent live;

		if (!ag_agent_get(e->ctx, en->name, &live)) {
			en->slot = live.slot;
			en->map_rate = live.rate;
			en->map_burst = live.burst;
			en->map_unit = live.unit;
			en->map_pinned = live.pinned;
		}
		clamp_rate(e, en);
		if (push_to_map(e, en, false) == 0)
			restored++;
	}
	err = ag_agent_foreach(e->ctx, adopt_agent, e);
	if (err) {
		agd_store_txn_end(txn);
		journal_free(&j);
		return agd_errf(errbuf, err, "cannot read the agents in the maps: %s", ag_errmsg());
	}
	TAB_FOREACH(e, i, en) {
		if (!en->new_in_batch)
			continue;
		en->new_in_batch = false;
		err = agd_store_agent_put(&e->st, txn, en->name, &en->rec);
		if (err)
			break;
		adopted++;
	}
	if (!err)
		err = budgets_finish(e, txn, j.list, j.n, j.all, &b_restored, &b_adopted);
	if (!err) {
		/* The feeds' sets before the rules: a feed's rule in the maps is
		 * not adopted as a hand rule. */
		err = feeds_load(e, txn, errbuf);
		if (err) {
			agd_store_txn_end(txn);
			journal_free(&j);
			return err;
		}
		err = reconcile_rules(e, txn, &j, &rules_dropped);
	}
	if (!err) /* for readers without our configuration (agentgate agent explain) */
		err = agd_store_defaults_put(&e->st, txn, &e->defaults);
	if (err)
		goto store_err;
	err = txn_commit(e, txn, 0);
	txn = NULL;
	if (err)
		goto store_err;
	for (i = 0; i < ja.n; i++)
		audit_file(e, ja.lines[i]);
	free(ja.lines);
	journal_free(&j);
	feeds_restore(e);
	/* Committed: a crash before this line only takes the maps' word again. */
	if (j.n && ag_owner_journal_clear(ag_pin_root(e->ctx)))
		e->opts.log(AGD_LOG_WARN, "%s", ag_errmsg());
	e->opts.log(AGD_LOG_INFO, "state: %zu agents (%zu restored into the maps, %zu adopted from them)",
		    e->count, restored, adopted);
	if (e->n_budgets || b_taken || b_adopted)
		e->opts.log(AGD_LOG_INFO, "budgets: %zu parents and agents' parents or quotas "
			    "(%zu restored into the maps, %zu adopted from them, %zu taken from "
			    "the maps as the CLI left them)", e->n_budgets, b_restored, b_adopted,
			    b_taken);
	if (j.n)
		e->opts.log(AGD_LOG_INFO, "changes made with agentgate while agentgated was stopped: "
			    "%zu agents taken from the maps, %zu stored rules dropped", journaled,
			    rules_dropped);
	return 0;
store_err:
	if (txn)
		agd_store_txn_end(txn);
	for (i = 0; i < ja.n; i++)
		free(ja.lines[i]);
	free(ja.lines);
	journal_free(&j);
	return agd_store_fail(errbuf, err, "cannot reconcile the state store with the maps");
}
