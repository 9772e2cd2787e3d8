// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Budgets as agentgated keeps them (docs/BUDGETS.md): parent buckets, and
 * each agent's parent and quota. The store's `budgets` database is their
 * truth for the daemon: they go into the maps on start (reconcile), when an
 * agent gets a bucket again (after a reboot, an expiry, an eviction), and
 * with each operator change; the quotas' counts are saved at every sweep
 * and on close, so that a reboot within a window keeps what was used.
 * What the CLI changed while no daemon ran (the owner's journal) is taken
 * from the maps, and what only the maps have is adopted.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentgate/gcra.h"
#include "engine_int.h"

#define BUDGET_BUCKETS 65536u
#define SLOT_UNKNOWN 0xffffffffu

struct budget {
	struct budget *next;
	char name[AG_NAME_MAX + 1];
	__u32 slot; /* a parent's slot, as last written or read */
	double share; /* a parent's: of its rate this host's bucket gets (fleet) */
	__u64 others_idx, others; /* a quota: what other hosts used of window idx */
	struct agd_budget_rec rec;
};

static size_t bhash(const char *s)
{
	return hash_name(s) & (BUDGET_BUCKETS - 1);
}

static struct budget *budget_find(struct agd_engine *e, const char *name)
{
	struct budget *b;

	if (!e->budgets)
		return NULL;
	for (b = e->budgets[bhash(name)]; b; b = b->next)
		if (!strcmp(b->name, name))
			return b;
	return NULL;
}

static struct budget *budget_add(struct agd_engine *e, const char *name)
{
	struct budget *b = budget_find(e, name);
	size_t h = bhash(name);

	if (b)
		return b;
	if (!e->budgets && !(e->budgets = calloc(BUDGET_BUCKETS, sizeof(*e->budgets))))
		return NULL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	snprintf(b->name, sizeof(b->name), "%s", name);
	b->slot = SLOT_UNKNOWN;
	b->share = 1;
	b->next = e->budgets[h];
	e->budgets[h] = b;
	e->n_budgets++;
	return b;
}

static void budget_remove(struct agd_engine *e, const char *name)
{
	struct budget **pp, *b;

	if (!e->budgets)
		return;
	for (pp = &e->budgets[bhash(name)]; (b = *pp); pp = &b->next)
		if (!strcmp(b->name, name)) {
			*pp = b->next;
			free(b);
			e->n_budgets--;
			return;
		}
}

/* What a quota word counts of this host's own use: in a fleet the other
 * hosts' use of the same window is in it too (agd_engine_set_quota_others). */
static __u64 own_used(const struct budget *b, __u64 idx, __u64 used)
{
	__u64 others = b->others_idx == idx ? b->others : 0;

	return used > others ? used - others : 0;
}

static __u64 own_word(const struct budget *b, __u64 word)
{
	__u64 idx = word >> AG_QUOTA_USED_BITS;

	return (idx << AG_QUOTA_USED_BITS) | own_used(b, idx, word & AG_QUOTA_USED_MASK);
}

/* The slot of b's bucket now, or SLOT_UNKNOWN. Under e->lock. */
static __u32 budget_slot(struct agd_engine *e, struct budget *b)
{
	struct entry *en;
	struct ag_agent a;

	if (b->rec.kind == AGD_BUDGET_AGENT) {
		en = tab_find(e, b->name);
		return en && en->map_rate >= 0 ? en->slot : SLOT_UNKNOWN;
	}
	if (b->slot == SLOT_UNKNOWN || ag_agent_get_slot(e->ctx, b->slot, &a) ||
	    strcmp(a.name, b->name)) {
		if (ag_agent_get(e->ctx, b->name, &a) || !a.is_parent)
			return SLOT_UNKNOWN;
		b->slot = a.slot;
	}
	return b->slot;
}

#define BUDGETS_FOREACH(e, i, b)                                                 \
	for (i = 0; (e)->budgets && i < BUDGET_BUCKETS; i++)                     \
		for (b = (e)->budgets[i]; b; b = b->next)

void budgets_free(struct agd_engine *e)
{
	struct budget *b, *next;
	size_t i;

	for (i = 0; e->budgets && i < BUDGET_BUCKETS; i++)
		for (b = e->budgets[i]; b; b = next) {
			next = b->next;
			free(b);
		}
	free(e->budgets);
	e->budgets = NULL;
	e->n_budgets = 0;
}

/* An agent's record says something: a parent or a quota. */
static bool rec_matters(const struct agd_budget_rec *r)
{
	return r->kind == AGD_BUDGET_PARENT || r->parent[0] || r->quota_limit;
}

static void rec_fresh(struct agd_budget_rec *r, enum agd_budget_kind kind)
{
	memset(r, 0, sizeof(*r));
	r->version = AGD_STORE_VERSION;
	r->kind = kind;
}

json_t *budget_json(const struct agd_budget_rec *r)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	if (r->kind == AGD_BUDGET_PARENT) {
		json_object_set_new(o, "rate", json_real(r->rate));
		json_object_set_new(o, "burst", json_integer((json_int_t)r->burst));
		json_object_set_new(o, "unit", json_string(ag_unit_name(r->unit)));
	}
	json_object_set_new(o, "parent", r->parent[0] ? json_string(r->parent) : json_null());
	json_object_set_new(o, "quota",
			    r->quota_limit ?
				    json_pack("{s:I,s:s}", "limit", (json_int_t)r->quota_limit,
					      "window", ag_quota_window_name(r->quota_window)) :
				    json_null());
	return o;
}

/* The record the maps hold for a (an agent or a parent). */
static void rec_of_maps(struct agd_engine *e, const struct ag_agent *a, struct agd_budget_rec *r)
{
	struct ag_agent up;

	rec_fresh(r, a->is_parent ? AGD_BUDGET_PARENT : AGD_BUDGET_AGENT);
	if (a->is_parent) {
		r->rate = a->rate;
		r->burst = a->burst;
		r->unit = a->unit;
	}
	if (a->parent && !ag_agent_get_slot(e->ctx, a->parent - 1, &up))
		snprintf(r->parent, sizeof(r->parent), "%s", up.name);
	if (a->quota) {
		r->quota_limit = a->quota;
		r->quota_window = a->quota_window;
		ag_quota_word(e->ctx, a->slot, &r->quota_word);
	}
	r->updated_ms = wall_ms();
}

/* Whether the maps already say what r says (counts aside). */
static bool maps_agree(struct agd_engine *e, const struct ag_agent *a,
		       const struct agd_budget_rec *r)
{
	struct agd_budget_rec m;

	rec_of_maps(e, a, &m);
	return m.kind == r->kind && !strcmp(m.parent, r->parent) &&
	       m.quota_limit == r->quota_limit &&
	       (!r->quota_limit || m.quota_window == r->quota_window) &&
	       (r->kind != AGD_BUDGET_PARENT ||
		(m.rate == r->rate && m.burst == r->burst && m.unit == r->unit));
}

/* The rate a parent's bucket gets here: its share of the operator's (a
 * fleet), never below the least rate a bucket takes. */
static double local_rate(double rate, double share)
{
	double r = rate * share;

	return r < 0.001 ? 0.001 : r;
}

/* r into the maps: a parent made or changed (with its link and quota
 * unless bare), an agent's link and quota (the agent must have a bucket);
 * a saved count of the running window put back. */
static int budget_push(struct agd_engine *e, const char *name, const struct agd_budget_rec *r,
		       bool bare, __u32 *slot_out)
{
	struct ag_agent_update u = { .fields = AG_SET_PARENT | AG_SET_QUOTA };
	struct ag_agent a;
	__u32 slot = SLOT_UNKNOWN;
	int err;

	u.parent = r->parent[0] ? r->parent : NULL;
	u.quota = r->quota_limit;
	u.quota_window = (enum ag_quota_window)r->quota_window;
	if (r->kind == AGD_BUDGET_PARENT) {
		struct budget *b = budget_find(e, name);

		u.fields = AG_SET_RATE | AG_SET_BURST | AG_SET_UNIT | (bare ? 0 : u.fields);
		u.rate = local_rate(r->rate, b ? b->share : 1);
		u.burst = r->burst;
		u.unit = (enum ag_unit)r->unit;
		err = ag_parent_set(e->ctx, name, &u, &slot, NULL);
	} else {
		err = ag_agent_get(e->ctx, name, &a);
		if (!err)
			err = ag_agent_set(e->ctx, name, &u, &slot, NULL);
	}
	if (!err && !bare && r->quota_limit && r->quota_word)
		err = ag_quota_restore(e->ctx, slot, r->quota_word);
	if (!err && slot_out)
		*slot_out = slot;
	return err;
}

/* An agent got a bucket (push_to_map made it): its parent and quota. */
void budget_on_bucket(struct agd_engine *e, const char *name)
{
	struct budget *b = budget_find(e, name);
	int err;

	if (!b || b->rec.kind != AGD_BUDGET_AGENT)
		return;
	err = budget_push(e, name, &b->rec, false, NULL);
	if (err)
		e->opts.log(AGD_LOG_WARN, "agent '%s' has its bucket but not its parent or quota: %s",
			    name, ag_errmsg());
}

/* ---- start -------------------------------------------------------------------- */

static int load_one(void *arg, const char *name, const struct agd_budget_rec *rec)
{
	struct budget *b = budget_add(arg, name);

	if (!b)
		return -ENOMEM;
	b->rec = *rec;
	return 0;
}

int budgets_load(struct agd_engine *e, MDB_txn *txn)
{
	size_t skipped = 0;
	int err = agd_store_budgets_foreach(&e->st, txn, load_one, e, &skipped);

	if (skipped)
		e->opts.log(AGD_LOG_WARN, "state store: skipped %zu malformed budget records",
			    skipped);
	return err;
}

static bool journaled(const struct ag_journal_entry *list, size_t n, bool all, const char *name)
{
	size_t i;

	if (all)
		return true;
	for (i = 0; i < n; i++)
		if (list[i].kind == AG_JOURNAL_AGENT && !strcmp(list[i].name, name))
			return true;
	return false;
}

/* The maps' word for name, stored (or its record dropped). */
static int take_maps(struct agd_engine *e, MDB_txn *txn, const char *name, size_t *changed)
{
	struct agd_budget_rec r;
	struct budget *b = budget_find(e, name);
	struct ag_agent a;

	if (ag_agent_get(e->ctx, name, &a)) {
		/* Gone from the maps. An agent of ours that expired keeps its
		 * record: the journal names only what the CLI changed. */
		if (!b || (b->rec.kind == AGD_BUDGET_AGENT && tab_find(e, name)))
			return 0;
		budget_remove(e, name);
		(*changed)++;
		return agd_store_budget_del(&e->st, txn, name);
	}
	rec_of_maps(e, &a, &r);
	if (b && b->rec.kind == r.kind && maps_agree(e, &a, &b->rec))
		return 0;
	(*changed)++;
	if (!rec_matters(&r)) {
		budget_remove(e, name);
		return agd_store_budget_del(&e->st, txn, name);
	}
	b = budget_add(e, name);
	if (!b)
		return -ENOMEM;
	b->rec = r;
	b->slot = a.slot;
	return agd_store_budget_put(&e->st, txn, name, &r);
}

/* Before the agents get their buckets: the journal's names taken from the
 * maps, then the stored parents made (bare: links and quotas follow in
 * budgets_finish, once every parent exists). */
int budgets_prepare(struct agd_engine *e, MDB_txn *txn, const struct ag_journal_entry *list,
		    size_t n, bool all, size_t *taken)
{
	struct budget *b, **recs = NULL;
	size_t i, k = 0;
	int err = 0;

	for (i = 0; i < n && !all && !err; i++)
		if (list[i].kind == AG_JOURNAL_AGENT)
			err = take_maps(e, txn, list[i].name, taken);
	if (all && !err) { /* every stored name: the maps are the truth */
		recs = calloc(e->n_budgets ? e->n_budgets : 1, sizeof(*recs));
		if (!recs)
			return -ENOMEM;
		BUDGETS_FOREACH(e, i, b)
			recs[k++] = b;
		for (i = 0; i < k && !err; i++) {
			char name[AG_NAME_MAX + 1];

			snprintf(name, sizeof(name), "%s", recs[i]->name);
			err = take_maps(e, txn, name, taken);
		}
		free(recs);
	}
	if (err || all)
		return err;
	BUDGETS_FOREACH(e, i, b) {
		struct ag_agent a;

		if (b->rec.kind != AGD_BUDGET_PARENT || journaled(list, n, all, b->name))
			continue;
		if (!ag_agent_get(e->ctx, b->name, &a) && a.is_parent)
			continue;
		if (budget_push(e, b->name, &b->rec, true, &b->slot))
			e->opts.log(AGD_LOG_WARN, "cannot restore parent '%s': %s", b->name,
				    ag_errmsg());
	}
	return 0;
}

static int adopt(void *arg, const struct ag_agent *a)
{
	void **w = arg;
	struct agd_engine *e = w[0];
	MDB_txn *txn = w[1];
	size_t *adopted = w[2];
	struct agd_budget_rec r;
	struct budget *b;

	if (budget_find(e, a->name))
		return 0;
	rec_of_maps(e, a, &r);
	if (!rec_matters(&r))
		return 0;
	b = budget_add(e, a->name);
	if (!b)
		return -ENOMEM;
	b->rec = r;
	b->slot = a->slot;
	(*adopted)++;
	return agd_store_budget_put(&e->st, txn, a->name, &r);
}

/* After the agents have their buckets: every stored parent's and present
 * agent's link and quota into the maps (where they differ), then what
 * only the maps have adopted. */
int budgets_finish(struct agd_engine *e, MDB_txn *txn, const struct ag_journal_entry *list,
		   size_t n, bool all, size_t *restored, size_t *adopted)
{
	void *w[3] = { e, txn, adopted };
	struct budget *b;
	size_t i;
	int err;

	BUDGETS_FOREACH(e, i, b) {
		struct ag_agent a;

		if (journaled(list, n, all, b->name) || ag_agent_get(e->ctx, b->name, &a))
			continue;
		if (a.is_parent != (b->rec.kind == AGD_BUDGET_PARENT)) {
			e->opts.log(AGD_LOG_WARN, "'%s' is stored as %s but the maps hold %s",
				    b->name,
				    b->rec.kind == AGD_BUDGET_PARENT ? "a parent" : "an agent",
				    a.is_parent ? "a parent" : "an agent");
			continue;
		}
		b->slot = a.slot;
		if (maps_agree(e, &a, &b->rec)) {
			if (b->rec.quota_limit && b->rec.quota_word)
				ag_quota_restore(e->ctx, a.slot, b->rec.quota_word);
			continue;
		}
		if (budget_push(e, b->name, &b->rec, false, &b->slot))
			e->opts.log(AGD_LOG_WARN, "cannot restore the budget of '%s': %s", b->name,
				    ag_errmsg());
		else
			(*restored)++;
	}
	err = ag_parent_foreach(e->ctx, adopt, w);
	if (!err)
		err = ag_agent_foreach(e->ctx, adopt, w);
	return err;
}

/* ---- the quotas' counts ------------------------------------------------------- */

/* Saves every quota's count that moved since it was last saved: at each
 * sweep and on close. Called without e->lock. */
void budgets_save_counts(struct agd_engine *e)
{
	MDB_txn *txn = NULL;
	struct budget *b;
	size_t i, saved = 0;
	int err = 0;

	pthread_mutex_lock(&e->lock);
	BUDGETS_FOREACH(e, i, b) {
		__u32 slot;
		__u64 word;

		if (!b->rec.quota_limit)
			continue;
		slot = budget_slot(e, b);
		if (slot == SLOT_UNKNOWN || ag_quota_word(e->ctx, slot, &word) ||
		    (word = own_word(b, word)) == b->rec.quota_word)
			continue;
		if (!txn && (err = txn_begin(e, &txn)))
			break;
		b->rec.quota_word = word;
		err = agd_store_budget_put(&e->st, txn, b->name, &b->rec);
		if (err)
			break;
		saved++;
	}
	if (txn)
		err = err ? (agd_store_txn_end(txn), err) : txn_commit(e, txn, 0);
	pthread_mutex_unlock(&e->lock);
	if (err)
		store_log(e, err, "cannot save %zu quota counts", saved);
}

/* ---- operator changes ----------------------------------------------------------- */

/* A change's fields onto r. */
static void rec_merge(struct agd_budget_rec *r, const struct agd_budget_change *c)
{
	if (c->fields & AG_SET_RATE)
		r->rate = c->rate;
	if (c->fields & AG_SET_BURST)
		r->burst = c->burst;
	if (c->fields & AG_SET_UNIT)
		r->unit = c->unit;
	if (c->fields & AG_SET_PARENT)
		snprintf(r->parent, sizeof(r->parent), "%s", c->parent);
	if (c->fields & AG_SET_QUOTA) {
		/* As in the maps: another window starts the count afresh. */
		if (!c->quota || r->quota_window != (__u32)c->quota_window)
			r->quota_word = 0;
		r->quota_limit = c->quota;
		r->quota_window = c->quota ? c->quota_window : AG_QW_NONE;
	}
	r->updated_ms = wall_ms();
}

/* Whether a parent's name may be linked to: it is one, in the maps, and a
 * child below it stays within AG_PATH_MAX buckets. */
static int check_parent(struct agd_engine *e, const char *parent, struct agd_err *oe)
{
	__u32 slots[AG_PATH_MAX];
	struct ag_agent p;
	int n = 0;

	if (!parent[0])
		return 0;
	if (ag_agent_get(e->ctx, parent, &p) || !p.is_parent)
		return agd_errf(oe, -EINVAL, "field 'parent': '%s' is not a parent", parent);
	if (ag_bucket_path(e->ctx, p.slot, slots, &n) || n >= AG_PATH_MAX)
		return agd_errf(oe, -EINVAL,
				"field 'parent': '%s' is %d levels deep; a path has at most %d "
				"buckets",
				parent, n, AG_PATH_MAX);
	return 0;
}

int budget_agent_prepare(struct agd_engine *e, const char *name, const struct agd_budget_change *c,
			 struct agd_budget_rec *out, struct agd_err *oe)
{
	struct budget *b = budget_find(e, name);

	if (b && b->rec.kind == AGD_BUDGET_PARENT)
		return agd_errf(oe, -EEXIST, "'%s' is a parent, not an agent", name);
	if (b)
		*out = b->rec;
	else
		rec_fresh(out, AGD_BUDGET_AGENT);
	if ((c->fields & AG_SET_PARENT) && check_parent(e, c->parent, oe))
		return -EINVAL;
	if ((c->fields & AG_SET_QUOTA) && c->quota && ag_quota_check(c->quota, c->quota_window))
		return agd_errf(oe, -EINVAL, "field 'quota': %s", ag_errmsg());
	rec_merge(out, c);
	return 0;
}

int budget_agent_store(struct agd_engine *e, MDB_txn *txn, const char *name,
		       const struct agd_budget_rec *r)
{
	if (rec_matters(r))
		return agd_store_budget_put(&e->st, txn, name, r);
	return agd_store_budget_del(&e->st, txn, name);
}

int budget_agent_commit(struct agd_engine *e, const char *name, const struct agd_budget_rec *r,
			bool in_maps)
{
	struct budget *b;

	if (!rec_matters(r)) {
		budget_remove(e, name);
	} else {
		b = budget_add(e, name);
		if (!b)
			return -ENOMEM;
		b->rec = *r;
	}
	return in_maps ? budget_push(e, name, r, false, NULL) : 0;
}

int budget_forget(struct agd_engine *e, MDB_txn *txn, const char *name)
{
	return agd_store_budget_del(&e->st, txn, name);
}

void budget_forgotten(struct agd_engine *e, const char *name)
{
	budget_remove(e, name);
}

json_t *budget_of_json(struct agd_engine *e, const char *name)
{
	struct budget *b = budget_find(e, name);

	return b ? budget_json(&b->rec) : NULL;
}

int agd_engine_apply_parent_put(struct agd_engine *e, __u64 seq, const char *name,
				const struct agd_budget_change *c, const char *subject,
				bool *created, struct agd_err *oe)
{
	struct ag_agent_update u = { .fields = c->fields };
	struct agd_budget_rec before, after;
	struct budget *b;
	struct ag_agent a;
	char *line = NULL;
	MDB_txn *txn;
	bool made = false, had;
	__u32 slot;
	int err;

	if (created)
		*created = false;
	if (ag_name_check(name))
		return agd_errf(oe, -EINVAL, "%s", ag_errmsg());
	pthread_mutex_lock(&e->lock);
	b = budget_find(e, name);
	if (tab_find(e, name) || (b && b->rec.kind == AGD_BUDGET_AGENT)) {
		pthread_mutex_unlock(&e->lock);
		return agd_errf(oe, -EEXIST, "'%s' is an agent, not a parent", name);
	}
	had = b != NULL;
	if (had)
		before = b->rec;
	u.rate = c->rate;
	u.burst = c->burst;
	u.unit = c->unit;
	u.parent = c->parent[0] ? c->parent : NULL;
	u.quota = c->quota;
	u.quota_window = c->quota_window;
	/* Maps first: the library checks kinds, cycles, depth and limits. */
	err = ag_parent_set(e->ctx, name, &u, &slot, &made);
	if (!err)
		err = ag_agent_get(e->ctx, name, &a);
	if (err) {
		pthread_mutex_unlock(&e->lock);
		/* The parent's own name is made when missing: an unknown name
		 * can only be the one in the body. */
		return agd_errf(oe, err == -ENOENT ? -EINVAL : err, "%s", ag_errmsg());
	}
	rec_of_maps(e, &a, &after);
	/* The maps hold this host's share of the rate (a fleet): the stored
	 * rate is the operator's. */
	after.rate = (c->fields & AG_SET_RATE) ? c->rate : had ? before.rate : a.rate;
	if (b) /* the count saved is this host's own (a fleet's others are in the word) */
		after.quota_word = own_word(b, after.quota_word);
	if (b && b->share != 1) { /* the share stays until the fleet moves it */
		struct ag_agent_update shared = { .fields = AG_SET_RATE,
						  .rate = local_rate(after.rate, b->share) };

		if (ag_parent_set(e->ctx, name, &shared, NULL, NULL))
			e->opts.log(AGD_LOG_WARN, "parent '%s': this host's share not set: %s",
				    name, ag_errmsg());
	}
	err = txn_begin(e, &txn);
	if (!err) {
		err = agd_store_budget_put(&e->st, txn, name, &after);
		if (!err)
			err = audit(e, txn, subject, made ? "parent.create" : "parent.update", name,
				    had ? budget_json(&before) : NULL, budget_json(&after), &line);
		err = finish_op(e, txn, seq, err, line, oe);
	} else {
		agd_store_fail(oe, err, "state not changed");
	}
	if (err) { /* the maps as they were */
		if (made)
			ag_parent_delete(e->ctx, name);
		else if (had)
			budget_push(e, name, &before, false, NULL);
	} else {
		b = budget_add(e, name);
		if (b) {
			b->rec = after;
			b->slot = slot;
		}
	}
	pthread_mutex_unlock(&e->lock);
	if (created)
		*created = made && !err;
	return err;
}

int agd_engine_apply_parent_delete(struct agd_engine *e, __u64 seq, const char *name,
				   const char *subject, struct agd_err *oe)
{
	struct budget *b, *x, **orphans = NULL;
	struct agd_budget_rec before;
	size_t i, n_orphans = 0;
	char *line = NULL;
	MDB_txn *txn;
	int err;

	pthread_mutex_lock(&e->lock);
	b = budget_find(e, name);
	if (tab_find(e, name) || (b && b->rec.kind == AGD_BUDGET_AGENT)) {
		pthread_mutex_unlock(&e->lock);
		return agd_errf(oe, -EEXIST, "'%s' is an agent, not a parent", name);
	}
	/* Maps first (refused while a bucket there names it). */
	err = ag_parent_delete(e->ctx, name);
	if (err && !(err == -ENOENT && b)) {
		pthread_mutex_unlock(&e->lock);
		if (err == -ENOENT)
			return agd_errf(oe, -ENOENT, "unknown parent '%s'", name);
		return agd_errf(oe, err, "%s", ag_errmsg());
	}
	if (b)
		before = b->rec;
	else
		rec_fresh(&before, AGD_BUDGET_PARENT);
	/* Agents that named it and have no bucket now (expired) lose the link. */
	BUDGETS_FOREACH(e, i, x) {
		struct budget **grown;

		if (strcmp(x->rec.parent, name))
			continue;
		grown = realloc(orphans, (n_orphans + 1) * sizeof(*orphans));
		if (!grown) {
			err = -ENOMEM;
			break;
		}
		orphans = grown;
		orphans[n_orphans++] = x;
	}
	if (!err)
		err = txn_begin(e, &txn);
	if (!err) {
		err = agd_store_budget_del(&e->st, txn, name);
		for (i = 0; i < n_orphans && !err; i++) {
			struct agd_budget_rec r = orphans[i]->rec;

			r.parent[0] = 0;
			err = r.kind == AGD_BUDGET_PARENT || rec_matters(&r) ?
				      agd_store_budget_put(&e->st, txn, orphans[i]->name, &r) :
				      agd_store_budget_del(&e->st, txn, orphans[i]->name);
		}
		if (!err)
			err = audit(e, txn, subject, "parent.delete", name, budget_json(&before),
				    NULL, &line);
		err = finish_op(e, txn, seq, err, line, oe);
	} else {
		agd_store_fail(oe, err, "state not changed");
	}
	if (err) {
		if (b)
			budget_push(e, name, &b->rec, false, NULL);
	} else {
		for (i = 0; i < n_orphans; i++) {
			orphans[i]->rec.parent[0] = 0;
			if (!rec_matters(&orphans[i]->rec))
				budget_remove(e, orphans[i]->name);
		}
		budget_remove(e, name);
	}
	free(orphans);
	pthread_mutex_unlock(&e->lock);
	return err;
}

/* ---- the API's fields ----------------------------------------------------------- */

static int parse_quota(json_t *v, struct agd_budget_change *b, struct agd_err *oe)
{
	const char *key, *win;
	json_t *x;
	double limit;

	b->fields |= AG_SET_QUOTA;
	b->quota = 0;
	b->quota_window = AG_QW_NONE;
	if (json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return agd_errf(oe, -EINVAL,
				"field 'quota': expected {\"limit\": N, \"window\": W} or null");
	json_object_foreach(v, key, x)
		if (strcmp(key, "limit") && strcmp(key, "window"))
			return agd_errf(oe, -EINVAL, "field 'quota.%s': unknown", key);
	x = json_object_get(v, "limit");
	limit = json_is_number(x) ? json_number_value(x) : 0;
	if (!(limit >= 1 && limit <= (double)AG_QUOTA_MAX && limit == (double)(__u64)limit))
		return agd_errf(oe, -EINVAL,
				"field 'quota.limit': expected a whole number from 1 to %llu",
				(unsigned long long)AG_QUOTA_MAX);
	win = json_string_value(json_object_get(v, "window"));
	if (!win || ag_quota_window_parse(win, &b->quota_window))
		return agd_errf(oe, -EINVAL,
				"field 'quota.window': expected \"hour\", \"day\" or \"30d\"");
	b->quota = (__u64)limit;
	return 0;
}

int agd_budget_parse(json_t *o, bool parent, struct agd_budget_change *b, struct agd_err *oe)
{
	json_t *v;
	double x;

	memset(b, 0, sizeof(*b));
	if (parent && (v = json_object_get(o, "rate"))) {
		x = json_is_number(v) ? json_number_value(v) : -1;
		if (!(x >= 0.001 && x <= 1e10))
			return agd_errf(oe, -EINVAL,
					"field 'rate': expected a number from 0.001 to 1e10");
		b->fields |= AG_SET_RATE;
		b->rate = x;
	}
	if (parent && (v = json_object_get(o, "burst"))) {
		x = json_is_number(v) ? json_number_value(v) : -1;
		if (!(x >= 1 && x <= (double)AG_BURST_MAX && x == (double)(__u64)x))
			return agd_errf(oe, -EINVAL,
					"field 'burst': expected a whole number from 1 to %llu",
					(unsigned long long)AG_BURST_MAX);
		b->fields |= AG_SET_BURST;
		b->burst = (__u64)x;
	}
	if (parent && (v = json_object_get(o, "unit"))) {
		if (!json_is_string(v) || ag_unit_parse(json_string_value(v), &b->unit))
			return agd_errf(oe, -EINVAL,
					"field 'unit': expected \"pps\", \"bps\" or \"conn\"");
		b->fields |= AG_SET_UNIT;
	}
	if ((v = json_object_get(o, "parent"))) {
		if (!json_is_null(v) &&
		    (!json_is_string(v) || ag_name_check(json_string_value(v))))
			return agd_errf(oe, -EINVAL, "field 'parent': expected a parent's name or null");
		b->fields |= AG_SET_PARENT;
		snprintf(b->parent, sizeof(b->parent), "%s",
			 json_is_null(v) ? "" : json_string_value(v));
	}
	if ((v = json_object_get(o, "quota")))
		return parse_quota(v, b, oe);
	return 0;
}

/* DELETE of an agent that expired but kept its parent and quota: the
 * record goes (audited). -ENOENT when there is none. Under e->lock. */
int budget_delete_kept(struct agd_engine *e, __u64 seq, const char *name, const char *subject,
		       struct agd_err *oe)
{
	struct budget *b = budget_find(e, name);
	char *line = NULL;
	MDB_txn *txn;
	int err;

	if (!b || b->rec.kind != AGD_BUDGET_AGENT)
		return -ENOENT;
	err = txn_begin(e, &txn);
	if (err)
		return agd_store_fail(oe, err, "state not changed");
	err = agd_store_budget_del(&e->st, txn, name);
	if (!err)
		err = audit(e, txn, subject, "agent.delete", name, budget_json(&b->rec), NULL,
			    &line);
	err = finish_op(e, txn, seq, err, line, oe);
	if (!err)
		budget_remove(e, name);
	return err;
}

/* An agent about to lose its bucket (expiry, eviction): its quota's count
 * read first, then stored with the removal (the record is kept). */
void budget_read_count(struct agd_engine *e, const char *name, __u32 slot)
{
	struct budget *b = budget_find(e, name);

	if (b && b->rec.quota_limit && !ag_quota_word(e->ctx, slot, &b->rec.quota_word))
		b->rec.quota_word = own_word(b, b->rec.quota_word);
}

int budget_store_kept(struct agd_engine *e, MDB_txn *txn, const char *name)
{
	struct budget *b = budget_find(e, name);

	return b && b->rec.quota_limit ? agd_store_budget_put(&e->st, txn, name, &b->rec) : 0;
}

/* ---- the fleet's demand sharing ----------------------------------------------------- */

/* Room for a view of every budget, e->lock taken (NULL: none, not taken). */
static void *views_begin(struct agd_engine *e, size_t size)
{
	void *v;

	pthread_mutex_lock(&e->lock);
	v = calloc(e->n_budgets ? e->n_budgets : 1, size);
	if (!v)
		pthread_mutex_unlock(&e->lock);
	return v;
}

int agd_engine_parent_views(struct agd_engine *e, struct agd_parent_view **out, size_t *n)
{
	struct agd_parent_view *v;
	struct budget *b;
	size_t i, k = 0;

	*out = NULL;
	*n = 0;
	v = views_begin(e, sizeof(*v));
	if (!v)
		return -ENOMEM;
	BUDGETS_FOREACH(e, i, b) {
		if (b->rec.kind != AGD_BUDGET_PARENT || budget_slot(e, b) == SLOT_UNKNOWN)
			continue;
		snprintf(v[k].name, sizeof(v[k].name), "%s", b->name);
		v[k].unit = (enum ag_unit)b->rec.unit;
		v[k].rate = b->rec.rate;
		v[k].share = b->share;
		ag_counters_get(e->ctx, b->slot, &v[k].counters);
		k++;
	}
	pthread_mutex_unlock(&e->lock);
	*out = v;
	*n = k;
	return 0;
}

int agd_engine_set_parent_share(struct agd_engine *e, const char *name, double share)
{
	struct ag_agent_update u = { .fields = AG_SET_RATE };
	struct budget *b;
	int err = -ENOENT;

	if (!(share > 0 && share <= 1))
		return -EINVAL;
	pthread_mutex_lock(&e->lock);
	b = budget_find(e, name);
	if (b && b->rec.kind == AGD_BUDGET_PARENT) {
		err = 0;
		if (b->share != share) {
			b->share = share;
			u.rate = local_rate(b->rec.rate, share);
			err = ag_parent_set(e->ctx, name, &u, NULL, NULL);
		}
	}
	pthread_mutex_unlock(&e->lock);
	return err;
}

int agd_engine_parent_rate(struct agd_engine *e, const char *name, double *rate, double *share)
{
	struct budget *b;
	int err = -ENOENT;

	pthread_mutex_lock(&e->lock);
	b = budget_find(e, name);
	if (b && b->rec.kind == AGD_BUDGET_PARENT) {
		*rate = b->rec.rate;
		*share = b->share;
		err = 0;
	}
	pthread_mutex_unlock(&e->lock);
	return err;
}

/* ---- quotas in a fleet ----------------------------------------------------------------- */

static __u64 window_now(const struct budget *b)
{
	__u64 wns = ag_quota_window_ns((enum ag_quota_window)b->rec.quota_window);

	return wns ? ag_quota_index(ag_tai_ns(), wns) : 0;
}

int agd_engine_quota_views(struct agd_engine *e, struct agd_quota_view **out, size_t *n)
{
	struct agd_quota_view *v;
	struct budget *b;
	size_t i, k = 0;

	*out = NULL;
	*n = 0;
	v = views_begin(e, sizeof(*v));
	if (!v)
		return -ENOMEM;
	BUDGETS_FOREACH(e, i, b) {
		struct ag_quota_status q;
		__u32 slot;

		if (!b->rec.quota_limit || (slot = budget_slot(e, b)) == SLOT_UNKNOWN ||
		    ag_quota_status(e->ctx, slot, &q) || !q.used)
			continue;
		snprintf(v[k].name, sizeof(v[k].name), "%s", b->name);
		v[k].idx = window_now(b);
		v[k].used = own_used(b, v[k].idx, q.used);
		if (v[k].used)
			k++;
	}
	pthread_mutex_unlock(&e->lock);
	*out = v;
	*n = k;
	return 0;
}

int agd_engine_set_quota_others(struct agd_engine *e, const char *name, __u64 idx, __u64 others)
{
	struct budget *b;
	__u64 now_idx, added;
	__u32 slot;
	int err = 0;

	pthread_mutex_lock(&e->lock);
	b = budget_find(e, name);
	if (!b || !b->rec.quota_limit) {
		pthread_mutex_unlock(&e->lock);
		return -ENOENT;
	}
	now_idx = window_now(b);
	if (idx != now_idx)
		others = 0; /* of a window that ended (or not begun here) */
	/* The others' use is counted in this host's quota word, so that the
	 * datapath refuses once the fleet used the limit; what was added for
	 * an ended window went with its count. */
	added = b->others_idx == now_idx ? b->others : 0;
	slot = budget_slot(e, b);
	if (slot != SLOT_UNKNOWN && others != added)
		err = ag_quota_shift(e->ctx, slot, now_idx, (__s64)others - (__s64)added);
	if (slot != SLOT_UNKNOWN && !err) {
		b->others = others;
		b->others_idx = now_idx;
	}
	pthread_mutex_unlock(&e->lock);
	return err;
}
