// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "appendlog.h"
#include "engine.h"
#include "explain.h"
#include "store.h"

/* One agent in memory: its stored record and what was last written into
 * its bucket. Only the engine lock holder touches these. */
struct entry {
	struct entry *next; /* hash chain */
	char name[AG_NAME_MAX + 1];
	__u32 slot;
	struct agd_agent_rec rec;
	/* map state last written, to skip writes that change nothing */
	double map_rate; /* < 0: not in the maps */
	__u64 map_burst;
	__u32 map_unit;
	bool map_pinned;
	/* apply-batch bookkeeping */
	__u64 batch;             /* batch that saved `undo` */
	struct agd_agent_rec undo;
	bool new_in_batch;
	__u64 created_job; /* job that created it in this batch */
	__u64 job_mark;    /* last job that listed it in its answer */
	struct entry *touched_next;
	double share; /* of rec.rate this host's bucket refills at (fleet) */
	/* The ratings the policy applied to it in the current batch, for its
	 * history: a list through e->hist, valid while hist_batch is the batch. */
	__u64 hist_batch;
	__u32 hist_first, hist_last, hist_n;
};

/* A rating the policy applied in the current batch (not pinned, not a
 * duplicate), for its agent's history (hist_rated). */
struct hist_pend {
	const struct agd_rating *r;
	double before, after;
	__u32 next; /* the agent's next one in this batch */
};

struct agd_engine {
	struct agd_engine_opts opts;
	struct agd_policy defaults;
	struct agd_store st;
	struct ag_ctx *ctx;
	int audit_fd;
	int owner_fd; /* the pin root's exclusive owner lock (agentgate.h) */

	pthread_mutex_t lock; /* the table, the store's write side, the maps */
	struct entry **buckets;
	size_t nbuckets, count;

	/* apply queue */
	pthread_mutex_t qlock;
	pthread_cond_t qcv;    /* work queued or stopping */
	pthread_cond_t spacecv; /* room in the queue */
	size_t space_waiters;
	struct agd_job *qhead, *qtail;
	size_t queued;         /* ratings in the queue */
	bool stopping;
	pthread_t thread;
	bool thread_started;
	__u64 serial, batch_serial;

	/* rating observer; ev is the apply thread's alone */
	agd_rating_observer obs;
	bool (*obs_wanted)(void *arg);
	void *obs_arg;
	struct agd_rating_event *ev;
	size_t ev_n, ev_cap;
	bool ev_on;
	/* the batch's applied ratings, for the agents' histories (apply thread) */
	struct hist_pend *hist;
	size_t hist_n, hist_cap;

	pthread_mutex_t slock; /* stats */
	struct agd_engine_stats stats;

	/* the fleet's log: set once before the API starts */
	struct agd_replicator repl;
	bool replicated;
	__u64 log_seq; /* under lock: the sequence the stored state includes */
};

/* The log sequence an operator change applied by this thread (the fleet's
 * consumer) is stored with; 0 outside agd_engine_apply_op. */

const double agd_apply_bucket_le[AGD_APPLY_BUCKETS] = {
	0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
	0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1,
};

static void nolog(int level, const char *fmt, ...)
{
}

static __u64 wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (__u64)ts.tv_sec * 1000 + (__u64)ts.tv_nsec / 1000000;
}

static int fail(struct agd_op_err *oe, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(struct agd_op_err *oe, int err, const char *fmt, ...)
{
	va_list ap;

	if (oe) {
		va_start(ap, fmt);
		vsnprintf(oe->msg, sizeof(oe->msg), fmt, ap);
		va_end(ap);
	}
	return err;
}

/* ---- the agent table ------------------------------------------------------ */

static size_t hash_name(const char *s)
{
	size_t h = 1469598103934665603ULL;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

static struct entry *tab_find(struct agd_engine *e, const char *name)
{
	struct entry *en = e->buckets[hash_name(name) & (e->nbuckets - 1)];

	while (en && strcmp(en->name, name))
		en = en->next;
	return en;
}

static int tab_grow(struct agd_engine *e)
{
	size_t n = e->nbuckets * 2, i;
	struct entry **b = calloc(n, sizeof(*b));

	if (!b)
		return -ENOMEM;
	for (i = 0; i < e->nbuckets; i++) {
		struct entry *en = e->buckets[i], *next;

		for (; en; en = next) {
			size_t h = hash_name(en->name) & (n - 1);

			next = en->next;
			en->next = b[h];
			b[h] = en;
		}
	}
	free(e->buckets);
	e->buckets = b;
	e->nbuckets = n;
	return 0;
}

static struct entry *tab_add(struct agd_engine *e, const char *name)
{
	struct entry *en;
	size_t h;

	if (e->count >= e->nbuckets && tab_grow(e))
		return NULL;
	en = calloc(1, sizeof(*en));
	if (!en)
		return NULL;
	snprintf(en->name, sizeof(en->name), "%s", name);
	en->map_rate = -1;
	en->share = 1;
	h = hash_name(name) & (e->nbuckets - 1);
	en->next = e->buckets[h];
	e->buckets[h] = en;
	e->count++;
	return en;
}

static void tab_remove(struct agd_engine *e, struct entry *victim)
{
	struct entry **pp = &e->buckets[hash_name(victim->name) & (e->nbuckets - 1)];

	for (; *pp; pp = &(*pp)->next) {
		if (*pp == victim) {
			*pp = victim->next;
			e->count--;
			free(victim);
			return;
		}
	}
}

#define TAB_FOREACH(e, i, en)                                                              \
	for (i = 0; i < (e)->nbuckets; i++)                                                \
		for (en = (e)->buckets[i]; en; en = en->next)

/* ---- records, maps and the audit log ---------------------------------------- */

static void rec_init(struct agd_agent_rec *r, const struct agd_policy *defaults, __u64 now)
{
	memset(r, 0, sizeof(*r));
	r->version = AGD_STORE_VERSION;
	agd_rec_set_policy(r, defaults, 0);
	r->rate = defaults->r0;
	r->last_ms = -1;
	r->created_ms = r->updated_ms = now;
}

static void effective(struct agd_engine *e, const struct entry *en, struct agd_policy *p)
{
	agd_rec_effective(&en->rec, &e->defaults, p);
}

/*
 * A failed map write, counted: a new agent refused for want of a free slot
 * (the policy when the map is full: existing agents go on as they are) is
 * not an error of the maps. Its log lines thin out as refusals repeat.
 */
static void map_error(struct agd_engine *e, const char *name, int err)
{
	__u64 n = 0;

	pthread_mutex_lock(&e->slock);
	if (err == -ENOSPC)
		n = ++e->stats.agents_refused;
	else
		e->stats.map_errors++;
	pthread_mutex_unlock(&e->slock);
	if (err != -ENOSPC)
		e->opts.log(AGD_LOG_ERR, "cannot write agent '%s' into the maps: %s", name,
			    ag_errmsg());
	else if (!(n & (n - 1))) /* 1, 2, 4, 8, ... */
		e->opts.log(AGD_LOG_WARN, "agent '%s' refused: %s (%llu refused so far)", name,
			    ag_errmsg(), (unsigned long long)n);
}

/* Writes the entry's rate and burst into its bucket (created when missing).
 * The live bucket level is kept: the library switches parameters in place. */
static int push_to_map(struct agd_engine *e, struct entry *en, bool force)
{
	struct ag_agent_update u = { .fields = AG_SET_RATE | AG_SET_BURST | AG_SET_UNIT |
					       AG_SET_PINNED };
	struct agd_policy p;
	bool created;
	int err;

	effective(e, en, &p);
	u.rate = en->rec.rate * en->share;
	u.burst = agd_policy_burst_tokens(&p, u.rate);
	u.unit = p.unit;
	u.pinned = p.pinned;
	if (!force && en->map_rate == u.rate && en->map_burst == u.burst &&
	    en->map_unit == u.unit && en->map_pinned == u.pinned)
		return 0;
	err = ag_agent_set(e->ctx, en->name, &u, &en->slot, &created);
	if (err) {
		map_error(e, en->name, err);
		return err;
	}
	en->map_rate = u.rate;
	en->map_burst = u.burst;
	en->map_unit = u.unit;
	en->map_pinned = u.pinned;
	return 0;
}

static json_t *policy_json(const struct agd_engine *e, const struct agd_agent_rec *r)
{
	struct agd_policy p;

	agd_rec_effective(r, &e->defaults, &p);
	return json_pack("{s:f,s:I,s:s,s:f,s:f,s:f,s:b}", "rate", r->rate, "burst",
			 (json_int_t)agd_policy_burst_tokens(&p, r->rate), "unit",
			 p.unit == AG_UNIT_BPS ? "bps" : "pps", "r_min", p.r_min, "r_max", p.r_max,
			 "alpha", p.alpha, "pinned", p.pinned);
}

static json_t *rule_json(const struct ag_rule *rule, const char *agent)
{
	char prefix[AG_PREFIX_STRLEN];

	ag_prefix_format(rule, prefix, sizeof(prefix));
	return json_pack("{s:s,s:i,s:s}", "prefix", prefix, "port", rule->port, "agent", agent);
}

/* Records one operator change in the transaction, and in the agent's
 * history (explain); steals before/after. The line is returned for the
 * audit file, written once the change commits. */
static int audit(struct agd_engine *e, MDB_txn *txn, const char *subject, const char *action,
		 const char *agent, json_t *before, json_t *after, char **line)
{
	__u64 now = wall_ms();
	json_t *o = json_pack("{s:I,s:s,s:s,s:s,s:o,s:o}", "time_ms", (json_int_t)now,
			      "subject", subject ? subject : "", "action", action, "agent",
			      agent ? agent : "", "before", before ? before : json_null(),
			      "after", after ? after : json_null());
	int err;

	if (!o)
		return -ENOMEM;
	*line = json_dumps(o, JSON_COMPACT);
	if (!*line) {
		json_decref(o);
		return -ENOMEM;
	}
	err = agd_store_audit(&e->st, txn, *line);
	if (!err)
		err = agd_explain_record_change(&e->st, txn, agent, now, subject, action,
						json_object_get(o, "before"),
						json_object_get(o, "after"));
	json_decref(o);
	if (err) {
		free(*line);
		*line = NULL;
	}
	return err;
}

static void audit_file(struct agd_engine *e, char *line)
{
	if (!line)
		return;
	if (e->audit_fd >= 0) {
		int err = agd_append_line(e->audit_fd, line, strlen(line));

		if (err) /* the record is in the store; audit.log misses this line */
			e->opts.log(AGD_LOG_WARN, "audit.log: line not written: %s", strerror(-err));
	}
	free(line);
}

static int txn_begin(struct agd_engine *e, MDB_txn **txn)
{
	return agd_store_txn_begin(&e->st, txn);
}

/* Commits; seq: the fleet log sequence the transaction applies (stored
 * with it, so the state and its position in the log never part), 0 for a
 * local change. */
static int txn_commit(struct agd_engine *e, MDB_txn *txn, __u64 seq)
{
	int err = 0;

	if (seq > e->log_seq)
		err = agd_store_meta_put_u64(&e->st, txn, "log_seq", seq);
	if (err)
		agd_store_txn_end(txn);
	else
		err = agd_store_commit(&e->st, txn);
	if (!err && seq > e->log_seq)
		e->log_seq = seq;

	pthread_mutex_lock(&e->slock);
	if (err)
		e->stats.commit_errors++;
	else
		e->stats.commits++;
	pthread_mutex_unlock(&e->slock);
	return err;
}

static const char *store_error(int err)
{
	return agd_store_strerror(err);
}

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

static int load_agents(struct agd_engine *e, char *errbuf, size_t len)
{
	MDB_txn *txn = NULL;
	size_t skipped = 0;
	int err = agd_store_read_begin(&e->st, &txn);

	if (!err)
		err = agd_store_meta_get_u64(&e->st, txn, "log_seq", &e->log_seq);
	if (!err)
		err = agd_store_agents_foreach(&e->st, txn, load_one, e, &skipped);
	agd_store_txn_end(txn);
	if (skipped)
		e->opts.log(AGD_LOG_WARN, "state store: skipped %zu malformed agent records", skipped);
	if (err)
		snprintf(errbuf, len, "cannot read the agents from the state store: %s",
			 store_error(err));
	return err;
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

static void rule_key_of(const struct ag_rule *r, struct agd_rule_rec_key *k)
{
	memset(k, 0, sizeof(*k));
	k->family = (__u8)r->family;
	k->plen = r->plen;
	k->port = r->port;
	memcpy(k->addr, r->addr, 16);
}

static void rule_of_key(const struct agd_rule_rec_key *k, struct ag_rule *r)
{
	memset(r, 0, sizeof(*r));
	r->family = k->family;
	r->plen = k->plen;
	r->port = k->port;
	memcpy(r->addr, k->addr, 16);
}

static bool same_rule(const struct ag_rule *a, const struct ag_rule *b)
{
	return a->family == b->family && a->plen == b->plen && a->port == b->port &&
	       !memcmp(a->addr, b->addr, 16);
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

/* slot -> agent name for every agent in the maps; free() the result. */
static const char **slot_names(struct agd_engine *e)
{
	__u32 max = ag_max_agents(e->ctx);
	const char **names = calloc(max, sizeof(*names));
	struct entry *en;
	size_t i;

	if (!names)
		return NULL;
	TAB_FOREACH(e, i, en)
		if (en->map_rate >= 0 && en->slot < max)
			names[en->slot] = en->name;
	return names;
}

static const char *slot_name(const char **names, struct ag_ctx *ctx, __u32 slot)
{
	return slot < ag_max_agents(ctx) ? names[slot] : NULL;
}

/* ---- what the CLI changed while no daemon ran (the owner's journal) ------------------ */

#define JOURNAL_SUBJECT "agentgate (while agentgated was stopped)"

struct journal {
	struct ag_journal_entry *list;
	size_t n;
	bool all; /* the journal overflowed: the maps are the truth for all */
};

static bool journaled_agent(const struct journal *j, const char *name)
{
	size_t i;

	if (j->all)
		return true;
	for (i = 0; i < j->n; i++)
		if (j->list[i].kind == AG_JOURNAL_AGENT && !strcmp(j->list[i].name, name))
			return true;
	return false;
}

static bool journaled_rule(const struct journal *j, const struct ag_rule *r)
{
	size_t i;

	if (j->all)
		return true;
	for (i = 0; i < j->n; i++)
		if (j->list[i].kind == AG_JOURNAL_RULE && j->list[i].rule.family == r->family &&
		    j->list[i].rule.plen == r->plen && j->list[i].rule.port == r->port &&
		    !memcmp(j->list[i].rule.addr, r->addr, 16))
			return true;
	return false;
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

		if (!agent)
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

/* Stored agents the CLI changed while no daemon ran: those still in the
 * maps take the maps' policy (kept as to store), those gone from the maps
 * leave the table and, in the transaction, LMDB. */
static int apply_journal(struct agd_engine *e, const struct journal *j, MDB_txn *txn,
			 struct journal_audit *ja, size_t *changed)
{
	struct entry *en, **gone = NULL;
	size_t i, n_gone = 0;
	int err = 0;

	if (!j->n)
		return 0;
	TAB_FOREACH(e, i, en) {
		struct ag_agent live;
		json_t *before;

		if (!journaled_agent(j, en->name))
			continue;
		before = policy_json(e, &en->rec);
		if (ag_agent_get(e->ctx, en->name, &live)) {
			struct entry **grown = realloc(gone, (n_gone + 1) * sizeof(*gone));

			if (!grown) {
				json_decref(before);
				err = -ENOMEM;
				break;
			}
			gone = grown;
			gone[n_gone++] = en;
			err = agd_store_agent_del(&e->st, txn, en->name);
			if (!err)
				err = agd_store_deleted_put(&e->st, txn, en->name, wall_ms(),
							   JOURNAL_SUBJECT);
			if (!err)
				err = journal_audit(e, txn, ja, "agent.delete", en->name, before, NULL);
		} else {
			rec_take_map(e, &en->rec, &live);
			en->new_in_batch = true; /* to store */
			err = journal_audit(e, txn, ja, "agent.adopt", en->name, before,
					    policy_json(e, &en->rec));
		}
		if (err)
			break;
		(*changed)++;
	}
	for (i = 0; !err && i < n_gone; i++)
		tab_remove(e, gone[i]);
	free(gone);
	return err;
}

static int reconcile(struct agd_engine *e, char *errbuf, size_t len)
{
	struct journal j = { 0 };
	struct journal_audit ja = { 0 };
	MDB_txn *txn = NULL;
	struct entry *en;
	size_t i, adopted = 0, restored = 0, journaled = 0, rules_dropped = 0;
	int err;

	err = ag_owner_journal_read(ag_pin_root(e->ctx), &j.list, &j.n);
	if (err) {
		snprintf(errbuf, len, "cannot read what the CLI changed while agentgated was "
			 "stopped: %s", ag_errmsg());
		return err;
	}
	for (i = 0; i < j.n; i++)
		j.all |= j.list[i].kind == AG_JOURNAL_ALL;
	err = txn_begin(e, &txn);
	if (!err)
		err = apply_journal(e, &j, txn, &ja, &journaled);
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
		free(j.list);
		snprintf(errbuf, len, "cannot read the agents in the maps: %s", ag_errmsg());
		return err;
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
		err = reconcile_rules(e, txn, &j, &rules_dropped);
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
	free(j.list);
	/* Committed: a crash before this line only takes the maps' word again. */
	if (j.n && ag_owner_journal_clear(ag_pin_root(e->ctx)))
		e->opts.log(AGD_LOG_WARN, "%s", ag_errmsg());
	e->opts.log(AGD_LOG_INFO, "state: %zu agents (%zu restored into the maps, %zu adopted from them)",
		    e->count, restored, adopted);
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
	free(j.list);
	snprintf(errbuf, len, "cannot reconcile the state store with the maps: %s",
		 store_error(err));
	return err;
}

/* ---- applying ratings ------------------------------------------------------ */

static void *apply_thread(void *arg);

static void save_undo(struct agd_engine *e, struct entry *en, struct entry **touched)
{
	if (en->batch == e->batch_serial)
		return;
	en->batch = e->batch_serial;
	en->undo = en->rec;
	en->touched_next = *touched;
	*touched = en;
}

/* Phase 1, per job: every agent it names exists, or is created now (in
 * the maps first: a slot is what can run out). On refusal, agents this job
 * created are removed again and the job fails whole. */
/* "deleted by S at T" for an agent an operator deleted; 0 when it was not. */
static int deleted_by(struct agd_engine *e, MDB_txn *txn, const char *name, char *buf,
		      size_t len)
{
	struct agd_deleted_rec rec;
	int rc = agd_store_deleted_get(&e->st, txn, name, &rec);
	time_t t;
	struct tm tm;
	char when[32] = "";

	if (rc <= 0)
		return rc;
	t = (time_t)(rec.time_ms / 1000);
	if (gmtime_r(&t, &tm))
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(buf, len, "deleted by %s at %s", rec.subject[0] ? rec.subject : "an operator",
		 when);
	return 1;
}

static int admit_job(struct agd_engine *e, MDB_txn *txn, struct agd_job *job,
		     struct entry **touched)
{
	size_t i;
	int err = 0;

	for (i = 0; i < job->n; i++) {
		const struct agd_rating *r = &job->items[i];
		struct entry *en = tab_find(e, r->agent);

		if (en)
			continue;
		/* A retried rating already applied creates nothing (the agent
		 * may have been deleted since). */
		if (r->id[0] && agd_store_dedup_seen(&e->st, txn, r->id) == 1)
			continue;
		/* An agent an operator deleted is not created again by a
		 * rating: only an operator brings it back. */
		if (e->opts.auto_create) {
			char why[200];
			int d = deleted_by(e, txn, r->agent, why, sizeof(why));

			if (d < 0) {
				err = d;
				snprintf(job->msg, sizeof(job->msg), "item %zu: %s", i,
					 store_error(d));
				break;
			}
			if (d && job->item_err) {
				job->item_err[i] = -EIDRM;
				continue;
			}
			if (d) {
				snprintf(job->msg, sizeof(job->msg),
					 "item %zu: agent '%s' was %.100s; only an operator "
					 "creates it again", i, r->agent, why);
				err = -ENOENT;
				break;
			}
		}
		if (!e->opts.auto_create) {
			if (job->item_err) { /* a stream: refuse this line only */
				job->item_err[i] = -ENOENT;
				continue;
			}
			snprintf(job->msg, sizeof(job->msg),
				 "item %zu: unknown agent '%s' (create it with PUT /v1/agents/%s)",
				 i, r->agent, r->agent);
			err = -ENOENT;
			break;
		}
		en = tab_add(e, r->agent);
		if (!en) {
			err = -ENOMEM;
			break;
		}
		rec_init(&en->rec, &e->defaults, wall_ms());
		en->new_in_batch = true;
		en->batch = e->batch_serial;
		en->undo = en->rec;
		en->touched_next = *touched;
		*touched = en;
		en->created_job = job->serial;
		err = push_to_map(e, en, true);
		if (err && job->item_err) {
			job->item_err[i] = -ENOSPC;
			*touched = en->touched_next;
			tab_remove(e, en);
			err = 0;
			continue;
		}
		if (err) {
			snprintf(job->msg, sizeof(job->msg), "item %zu: cannot create agent '%s': %s",
				 i, r->agent, ag_errmsg());
			break;
		}
	}
	if (!err)
		return 0;
	/* Undo this job's creations (they head the touched list). */
	while (*touched && (*touched)->new_in_batch && (*touched)->created_job == job->serial) {
		struct entry *en = *touched;

		*touched = en->touched_next;
		if (en->map_rate >= 0)
			ag_agent_delete(e->ctx, en->name);
		tab_remove(e, en);
	}
	return err;
}

static int collect_agent(struct agd_job *job, struct entry *en, size_t *cap)
{
	if (job->n_agents == *cap) {
		size_t n = *cap ? *cap * 2 : 8;
		struct agd_job_agent *a = realloc(job->agents, n * sizeof(*a));

		if (!a)
			return -ENOMEM;
		job->agents = a;
		*cap = n;
	}
	snprintf(job->agents[job->n_agents++].name, AG_NAME_MAX + 1, "%s", en->name);
	return 0;
}

/* Records an applied rating for the observer; without memory the event is
 * left out (the rating itself is applied either way). */
static void record_event(struct agd_engine *e, const struct agd_rating *r, const struct entry *en,
			 __u64 now)
{
	struct agd_rating_stats st = { en->rec.count, en->rec.score_sum, en->rec.last_ms };
	struct agd_rating_event *ev;

	if (e->ev_n == e->ev_cap) {
		size_t n = e->ev_cap ? e->ev_cap * 2 : 64;

		ev = realloc(e->ev, n * sizeof(*ev));
		if (!ev)
			return;
		e->ev = ev;
		e->ev_cap = n;
	}
	ev = &e->ev[e->ev_n++];
	snprintf(ev->agent, sizeof(ev->agent), "%s", en->name);
	snprintf(ev->id, sizeof(ev->id), "%s", r->id);
	snprintf(ev->user, sizeof(ev->user), "%s", r->user);
	ev->score = r->score;
	ev->ts_ms = r->ts_ms >= 0 ? r->ts_ms : (__s64)now;
	ev->rate = en->rec.rate;
	ev->mean_score = agd_stats_mean(&st);
	ev->ratings = en->rec.count;
}

/* Notes a rating the policy applied to en, for its history (hist_write). */
static int hist_note(struct agd_engine *e, struct entry *en, const struct agd_rating *r,
		     double before)
{
	struct hist_pend *h;
	__u32 i;

	if (e->hist_n == e->hist_cap) {
		size_t n = e->hist_cap ? e->hist_cap * 2 : 256;

		if (n > UINT32_MAX)
			return -ENOMEM;
		h = realloc(e->hist, n * sizeof(*h));
		if (!h)
			return -ENOMEM;
		e->hist = h;
		e->hist_cap = n;
	}
	i = (__u32)e->hist_n++;
	e->hist[i] = (struct hist_pend){ r, before, en->rec.rate, UINT32_MAX };
	if (en->hist_batch != e->batch_serial) {
		en->hist_batch = e->batch_serial;
		en->hist_first = i;
		en->hist_n = 0;
	} else {
		e->hist[en->hist_last].next = i;
	}
	en->hist_last = i;
	en->hist_n++;
	return 0;
}

/* One write per agent per batch: its newest ratings join its history. */
static int hist_write(struct agd_engine *e, MDB_txn *txn, struct entry *en, __u64 now)
{
	struct agd_hist_rating_in in[AGD_HIST_RATINGS];
	__u32 skip = en->hist_n > AGD_HIST_RATINGS ? en->hist_n - AGD_HIST_RATINGS : 0, i, k = 0;

	for (i = en->hist_first; i != UINT32_MAX; i = e->hist[i].next) {
		const struct hist_pend *h = &e->hist[i];

		if (skip) {
			skip--;
			continue;
		}
		in[k++] = (struct agd_hist_rating_in){
			.id = h->r->id,
			.user = h->r->user,
			.score = h->r->score,
			.ts_ms = h->r->ts_ms >= 0 ? h->r->ts_ms : (__s64)now,
			.applied_ms = now,
			.rate_before = h->before,
			.rate_after = h->after,
		};
	}
	return agd_store_hist_add_ratings(&e->st, txn, en->name, en->new_in_batch, in, k,
					 en->hist_n - k);
}

/* Phase 2, per job, inside the batch transaction. */
static int apply_job(struct agd_engine *e, MDB_txn *txn, struct agd_job *job, __u64 now,
		     struct entry **touched)
{
	size_t i, cap = 0;
	int err;

	for (i = 0; i < job->n; i++) {
		const struct agd_rating *r = &job->items[i];
		struct entry *en;
		struct agd_policy p;
		double before;

		if (job->item_err && job->item_err[i])
			continue;
		if (r->id[0]) {
			err = agd_store_dedup_add(&e->st, txn, r->id, now);
			if (err < 0)
				return err;
			if (err) {
				job->duplicates++;
				if (job->item_err)
					job->item_err[i] = AGD_ITEM_DUPLICATE;
				continue;
			}
		}
		en = tab_find(e, r->agent);
		if (!en)
			return -EIO; /* admitted jobs name only known agents */
		save_undo(e, en, touched);
		effective(e, en, &p);
		before = en->rec.rate;
		en->rec.rate = agd_policy_rate_after(&p, en->rec.rate, r->score);
		if (!p.pinned && (err = hist_note(e, en, r, before)))
			return err;
		en->rec.count++;
		en->rec.score_sum += r->score;
		if ((r->ts_ms >= 0 ? r->ts_ms : (__s64)now) > en->rec.last_ms)
			en->rec.last_ms = r->ts_ms >= 0 ? r->ts_ms : (__s64)now;
		en->rec.updated_ms = now;
		job->applied++;
		if (e->ev_on)
			record_event(e, r, en, now);
		if (en->job_mark != job->serial) {
			en->job_mark = job->serial;
			if (collect_agent(job, en, &cap))
				return -ENOMEM;
		}
	}
	return 0;
}

/* Reads the final values of the agents a job rated (after the batch). */
static void fill_job_agents(struct agd_engine *e, struct agd_job *job)
{
	size_t i;

	for (i = 0; i < job->n_agents; i++) {
		struct agd_job_agent *a = &job->agents[i];
		struct entry *en = tab_find(e, a->name);
		struct agd_rating_stats s;

		if (!en)
			continue;
		s = (struct agd_rating_stats){ en->rec.count, en->rec.score_sum, en->rec.last_ms };
		a->rate = en->rec.rate;
		a->ratings = en->rec.count;
		a->mean_score = agd_stats_mean(&s);
	}
}

static void rollback(struct agd_engine *e, struct entry *touched)
{
	while (touched) {
		struct entry *en = touched;

		touched = en->touched_next;
		if (en->new_in_batch) {
			if (en->map_rate >= 0)
				ag_agent_delete(e->ctx, en->name);
			tab_remove(e, en);
		} else {
			en->rec = en->undo;
		}
	}
}

static void observe(struct agd_engine *e, struct agd_job *job, __u64 now_ns)
{
	double s = (double)(now_ns - job->received_ns) / 1e9;
	size_t b = 0;

	while (b < AGD_APPLY_BUCKETS && s > agd_apply_bucket_le[b])
		b++;
	e->stats.apply_hist[b]++;
	e->stats.apply_sum += s;
	e->stats.apply_count++;
	if (job->err) {
		e->stats.ratings_rejected += job->n;
	} else if (job->item_err) {
		size_t i;

		for (i = 0; i < job->n; i++)
			e->stats.ratings_rejected += job->item_err[i] < 0;
	}
	e->stats.ratings_applied += job->applied;
	e->stats.ratings_duplicate += job->duplicates;
}

static void run_batch(struct agd_engine *e, struct agd_job *jobs)
{
	struct entry *touched = NULL, *en;
	struct agd_job *job;
	__u64 now = wall_ms(), with_ids = 0, done_ns, seq = 0, log_ms = 0;
	MDB_txn *txn = NULL;
	size_t i;
	int err;

	for (job = jobs; job; job = job->next) {
		if (job->log_seq > seq)
			seq = job->log_seq;
		if (job->log_ms > log_ms)
			log_ms = job->log_ms;
	}
	if (log_ms)
		now = log_ms;
	pthread_mutex_lock(&e->lock);
	e->batch_serial++;
	e->ev_n = 0;
	e->hist_n = 0;
	e->ev_on = e->obs && e->obs_wanted(e->obs_arg);
	err = txn_begin(e, &txn);
	for (job = jobs; job && !err; job = job->next) {
		job->serial = ++e->serial;
		job->err = admit_job(e, txn, job, &touched);
		for (i = 0; i < job->n; i++)
			with_ids += job->items[i].id[0] != 0;
	}
	for (job = jobs; job && !err; job = job->next)
		if (!job->err)
			err = apply_job(e, txn, job, now, &touched);
	if (!err && with_ids)
		err = agd_store_dedup_prune(&e->st, txn, now, e->opts.dedup_window_ms,
					   e->opts.dedup_max, 2 * with_ids + 64);
	for (en = touched; en && !err; en = en->touched_next)
		err = agd_store_agent_put(&e->st, txn, en->name, &en->rec);
	for (en = touched; en && !err; en = en->touched_next)
		if (en->hist_batch == e->batch_serial && en->hist_n)
			err = hist_write(e, txn, en, now);
	if (!err) {
		err = txn_commit(e, txn, seq);
		txn = NULL;
	}
	if (err) {
		if (txn)
			agd_store_txn_end(txn);
		rollback(e, touched);
		e->opts.log(AGD_LOG_ERR, "ratings not applied: %s", store_error(err));
		for (job = jobs; job; job = job->next) {
			if (job->err)
				continue;
			job->err = err == -ENOSPC ? -ENOSPC : -EIO;
			job->applied = job->duplicates = 0;
			snprintf(job->msg, sizeof(job->msg), "ratings not applied: %s",
				 store_error(err));
		}
	} else {
		for (en = touched; en; en = en->touched_next) {
			en->new_in_batch = false;
			push_to_map(e, en, false);
		}
		for (job = jobs; job; job = job->next)
			fill_job_agents(e, job);
	}
	pthread_mutex_unlock(&e->lock);
	if (!err && e->ev_n)
		e->obs(e->obs_arg, e->ev, e->ev_n);

	done_ns = ag_now_ns();
	pthread_mutex_lock(&e->slock);
	for (job = jobs; job; job = job->next)
		observe(e, job, done_ns);
	pthread_mutex_unlock(&e->slock);
}

static void *apply_thread(void *arg)
{
	struct agd_engine *e = arg;

	for (;;) {
		struct agd_job *jobs, *job, *next, *callbacks;

		pthread_mutex_lock(&e->qlock);
		while (!e->qhead && !e->stopping)
			pthread_cond_wait(&e->qcv, &e->qlock);
		if (!e->qhead) {
			pthread_mutex_unlock(&e->qlock);
			return NULL;
		}
		/* Everything queued goes into one group commit. */
		jobs = e->qhead;
		e->qhead = e->qtail = NULL;
		pthread_mutex_unlock(&e->qlock);

		run_batch(e, jobs);

		/* A waited-for job may be gone as soon as it is marked finished:
		 * read its links first. Jobs with a callback live until it runs. */
		callbacks = NULL;
		pthread_mutex_lock(&e->qlock);
		for (job = jobs; job; job = next) {
			next = job->next;
			e->queued -= job->n;
			if (job->done) {
				job->next = callbacks;
				callbacks = job;
			} else {
				agd_job_complete(job); /* wakes exactly its own submitter */
			}
		}
		if (e->space_waiters)
			pthread_cond_broadcast(&e->spacecv);
		pthread_mutex_unlock(&e->qlock);
		for (job = callbacks; job; job = next) {
			next = job->next;
			job->done(job); /* may free the job */
		}
	}
}

void agd_engine_observe(struct agd_engine *e, agd_rating_observer fn, bool (*wanted)(void *arg),
		       void *arg)
{
	pthread_mutex_lock(&e->lock);
	e->obs = fn;
	e->obs_wanted = wanted;
	e->obs_arg = arg;
	pthread_mutex_unlock(&e->lock);
}

void agd_job_reset(struct agd_job *job)
{
	job->next = NULL;
	job->err = 0;
	job->msg[0] = 0;
	job->applied = job->duplicates = 0;
	memset(&job->routed, 0, sizeof(job->routed));
	job->agents = NULL;
	job->n_agents = 0;
}

/* Into the apply thread's queue, with the job's log position as set. */
static int enqueue(struct agd_engine *e, struct agd_job *job)
{
	agd_job_reset(job);
	pthread_mutex_lock(&e->qlock);
	/* Backpressure: wait for room, but never refuse a job to an empty queue. */
	while (!e->stopping && e->queued && e->queued + job->n > e->opts.queue_max) {
		e->space_waiters++;
		pthread_cond_wait(&e->spacecv, &e->qlock);
		e->space_waiters--;
	}
	if (e->stopping) {
		pthread_mutex_unlock(&e->qlock);
		return -ESHUTDOWN;
	}
	if (e->qtail)
		e->qtail->next = job;
	else
		e->qhead = job;
	e->qtail = job;
	e->queued += job->n;
	pthread_cond_signal(&e->qcv);
	pthread_mutex_unlock(&e->qlock);
	return 0;
}

int agd_job_wait(struct agd_engine *e, struct agd_job *job,
		int (*submit)(struct agd_engine *e, struct agd_job *job))
{
	sem_t done;
	int err;

	sem_init(&done, 0, 0);
	job->done = NULL;
	job->waiter = &done;
	err = submit(e, job);
	if (!err) {
		while (sem_wait(&done) && errno == EINTR)
			;
		err = job->err;
	}
	sem_destroy(&done);
	return err;
}

int agd_engine_queue(struct agd_engine *e, struct agd_job *job)
{
	job->log_seq = job->log_ms = 0; /* a local job */
	return enqueue(e, job);
}

int agd_engine_apply_ratings(struct agd_engine *e, struct agd_job *job, __u64 seq, __u64 log_ms)
{
	job->log_seq = seq;
	job->log_ms = log_ms;
	return agd_job_wait(e, job, enqueue);
}

void agd_job_complete(struct agd_job *job)
{
	if (job->done)
		job->done(job);
	else
		sem_post(job->waiter);
}

void agd_job_release(struct agd_job *job)
{
	free(job->agents);
	job->agents = NULL;
	job->n_agents = 0;
}

/* ---- open / close ----------------------------------------------------------- */

#define OWNER_WAIT_MS 10000 /* CLI writes under way finish in milliseconds */

static int take_ownership(struct agd_engine *e, char *errbuf, size_t len)
{
	const char *root = e->opts.pin_root ? e->opts.pin_root : AG_PIN_ROOT_DEFAULT;
	struct ag_owner holder;
	int err = ag_owner_acquire(root, OWNER_WAIT_MS, &e->owner_fd, &holder);

	if (!err)
		return 0;
	if (err == -EBUSY && holder.pid)
		snprintf(errbuf, len, "%s is owned by another agentgated (pid %u, control socket "
			 "%s): stop it, or give this one another --pin-path", root, holder.pid,
			 holder.control);
	else if (err == -EBUSY)
		snprintf(errbuf, len, "%s/%s is locked by another process for over %d s: another "
			 "agentgated starting, or a tool holding the lock", root, AG_PIN_OWNER_DIR,
			 OWNER_WAIT_MS / 1000);
	else
		snprintf(errbuf, len, "%s", ag_errmsg());
	return err;
}

int agd_engine_open(const struct agd_engine_opts *opts, struct agd_engine **out, char *errbuf,
		   size_t len)
{
	struct ag_open_opts oo = { .pin_root = opts->pin_root, .create = true,
				   .max_agents = opts->max_agents };
	char path[4096];
	struct agd_engine *e;
	int err;

	snprintf(errbuf, len, "out of memory");
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->opts = *opts;
	if (!e->opts.log)
		e->opts.log = nolog;
	e->defaults = opts->defaults;
	e->audit_fd = -1;
	e->owner_fd = -1;
	pthread_mutex_init(&e->lock, NULL);
	pthread_mutex_init(&e->qlock, NULL);
	pthread_mutex_init(&e->slock, NULL);
	pthread_cond_init(&e->qcv, NULL);
	pthread_cond_init(&e->spacecv, NULL);
	e->nbuckets = 1024;
	e->buckets = calloc(e->nbuckets, sizeof(*e->buckets));
	if (!e->buckets) {
		err = -ENOMEM;
		goto cleanup;
	}
	err = agd_store_open(opts->state_dir, opts->store_size, &e->st, errbuf, len);
	if (err)
		goto cleanup;
	snprintf(path, sizeof(path), "%s/audit.log", opts->state_dir);
	e->audit_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (e->audit_fd < 0) {
		err = -errno;
		snprintf(errbuf, len, "cannot open %s: %s", path, strerror(-err));
		goto cleanup;
	}
	/* After the store is accepted (a refused one leaves no pin root) and
	 * before the maps are read: a CLI write under way ends first. */
	err = take_ownership(e, errbuf, len);
	if (err)
		goto cleanup;
	err = ag_open(&oo, &e->ctx);
	if (err) {
		snprintf(errbuf, len, "%s", ag_errmsg());
		goto cleanup;
	}
	err = load_agents(e, errbuf, len);
	if (!err)
		err = reconcile(e, errbuf, len);
	if (err)
		goto cleanup;
	err = -pthread_create(&e->thread, NULL, apply_thread, e);
	if (err) {
		snprintf(errbuf, len, "cannot start the apply thread: %s", strerror(-err));
		goto cleanup;
	}
	e->thread_started = true;
	*out = e;
	return 0;
cleanup:
	agd_engine_close(e);
	return err;
}

void agd_engine_close(struct agd_engine *e)
{
	struct entry *en, *next;
	size_t i;

	if (!e)
		return;
	if (e->thread_started) {
		pthread_mutex_lock(&e->qlock);
		e->stopping = true;
		pthread_cond_broadcast(&e->qcv);
		pthread_cond_broadcast(&e->spacecv);
		pthread_mutex_unlock(&e->qlock);
		pthread_join(e->thread, NULL);
	}
	for (i = 0; e->buckets && i < e->nbuckets; i++)
		for (en = e->buckets[i]; en; en = next) {
			next = en->next;
			free(en);
		}
	free(e->buckets);
	free(e->ev);
	free(e->hist);
	ag_close(e->ctx);
	agd_store_close(&e->st);
	if (e->audit_fd >= 0)
		close(e->audit_fd);
	/* Last: until all it took is applied, no CLI writes behind its back. */
	ag_owner_release(e->opts.pin_root ? e->opts.pin_root : AG_PIN_ROOT_DEFAULT, e->owner_fd);
	pthread_mutex_destroy(&e->lock);
	pthread_mutex_destroy(&e->qlock);
	pthread_mutex_destroy(&e->slock);
	pthread_cond_destroy(&e->qcv);
	pthread_cond_destroy(&e->spacecv);
	free(e);
}

struct ag_ctx *agd_engine_ctx(struct agd_engine *e)
{
	return e->ctx;
}

void agd_engine_reconfigure(struct agd_engine *e, const struct agd_policy *defaults,
			   __u64 dedup_window_ms, __u64 dedup_max, bool auto_create)
{
	struct entry *en;
	MDB_txn *txn = NULL;
	size_t i;
	int err;

	pthread_mutex_lock(&e->lock);
	e->defaults = *defaults;
	e->opts.dedup_window_ms = dedup_window_ms;
	e->opts.dedup_max = dedup_max;
	e->opts.auto_create = auto_create;
	/* Bounds and bursts inherited from the defaults may have moved: rates
	 * pulled inside are stored first, then written into the buckets. */
	err = txn_begin(e, &txn);
	TAB_FOREACH(e, i, en) {
		struct agd_policy p;
		char why[200];
		double rate = en->rec.rate;

		effective(e, en, &p);
		if (agd_policy_check(&p, why, sizeof(why)) && p.r_min > p.r_max)
			e->opts.log(AGD_LOG_WARN, "agent '%s': its own bounds conflict with the new "
				    "defaults (%s); its rate follows r_max", en->name, why);
		if (!p.pinned && rate < p.r_min)
			rate = p.r_min;
		if (!p.pinned && rate > p.r_max)
			rate = p.r_max;
		if (rate != en->rec.rate && !err) {
			en->rec.rate = rate;
			err = agd_store_agent_put(&e->st, txn, en->name, &en->rec);
		}
	}
	if (!err)
		err = agd_store_defaults_put(&e->st, txn, defaults);
	if (!err)
		err = txn_commit(e, txn, 0);
	else if (txn)
		agd_store_txn_end(txn);
	if (err)
		e->opts.log(AGD_LOG_ERR, "reload: clamped rates not stored: %s", store_error(err));
	TAB_FOREACH(e, i, en)
		push_to_map(e, en, false);
	pthread_mutex_unlock(&e->lock);
}

/* ---- operator changes ------------------------------------------------------ */

/* Commits a prepared transaction with its audit line; on error aborts it. */
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
		       struct agd_op_err *oe)
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
	}
	return fail(oe, -EINVAL, "unknown operation %d", (int)op->kind);
}

__u64 agd_engine_log_seq(struct agd_engine *e)
{
	__u64 seq;

	pthread_mutex_lock(&e->lock);
	seq = e->log_seq;
	pthread_mutex_unlock(&e->lock);
	return seq;
}

int agd_engine_check_agents(struct agd_engine *e, const struct agd_job *job, char *msg,
			   size_t len)
{
	size_t i;
	int err = 0;

	MDB_txn *txn = NULL;

	pthread_mutex_lock(&e->lock);
	for (i = 0; i < job->n && !err; i++) {
		char why[200];

		if (tab_find(e, job->items[i].agent))
			continue;
		if (!e->opts.auto_create) {
			snprintf(msg, len, "item %zu: unknown agent '%s' (create it with PUT "
				 "/v1/agents/%s)", i, job->items[i].agent, job->items[i].agent);
			err = -ENOENT;
			break;
		}
		if (!txn && agd_store_read_begin(&e->st, &txn))
			break; /* the apply refuses it then */
		if (deleted_by(e, txn, job->items[i].agent, why, sizeof(why)) == 1) {
			snprintf(msg, len, "item %zu: agent '%s' was %.100s; only an operator "
				 "creates it again", i, job->items[i].agent, why);
			err = -ENOENT;
		}
	}
	if (txn)
		agd_store_txn_end(txn);
	pthread_mutex_unlock(&e->lock);
	return err;
}

int agd_engine_job_agents(struct agd_engine *e, struct agd_job *job)
{
	size_t i, cap = 0;
	int err = 0;

	pthread_mutex_lock(&e->lock);
	e->serial++;
	for (i = 0; i < job->n && !err; i++) {
		struct entry *en = tab_find(e, job->items[i].agent);

		if (!en || en->job_mark == e->serial)
			continue;
		en->job_mark = e->serial;
		err = collect_agent(job, en, &cap);
	}
	if (!err)
		fill_job_agents(e, job);
	pthread_mutex_unlock(&e->lock);
	return err;
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

static int finish_op(struct agd_engine *e, MDB_txn *txn, __u64 seq, int err, char *line,
		     struct agd_op_err *oe)
{
	if (!err)
		err = txn_commit(e, txn, seq);
	else
		agd_store_txn_end(txn);
	if (err) {
		free(line);
		return fail(oe, err, "state not changed: %s", store_error(err));
	}
	audit_file(e, line);
	return 0;
}

/* A new agent committed to LMDB that the maps then refused (no free slot):
 * take it out of LMDB again, so that what is stored has a bucket. */
static int unstore_new_agent(struct agd_engine *e, struct entry *en, struct agd_op_err *oe)
{
	char msg[200];
	MDB_txn *txn;
	int err;

	snprintf(msg, sizeof(msg), "%s", ag_errmsg());
	err = txn_begin(e, &txn);
	if (!err)
		err = agd_store_agent_del(&e->st, txn, en->name);
	if (!err)
		err = agd_store_hist_del(&e->st, txn, en->name);
	if (!err)
		err = txn_commit(e, txn, 0);
	else if (txn)
		agd_store_txn_end(txn);
	if (err)
		e->opts.log(AGD_LOG_ERR, "agent '%s' is stored without a bucket: %s", en->name,
			    store_error(err));
	tab_remove(e, en);
	return fail(oe, -ENOSPC, "cannot create the agent's bucket: %s", msg);
}

int agd_engine_apply_agent_put(struct agd_engine *e, __u64 seq, const char *name,
			      const struct agd_agent_change *c, const char *subject, bool *created,
			      struct agd_op_err *oe)
{
	struct agd_agent_rec rec;
	struct agd_policy own, eff;
	struct entry *en;
	json_t *before = NULL;
	char *line = NULL, why[200];
	MDB_txn *txn;
	bool made = false;
	int err;

	if (ag_name_check(name))
		return fail(oe, -EINVAL, "%s", ag_errmsg());
	if (!strcmp(name, AGD_METRICS_OTHER))
		return fail(oe, -EINVAL, "agent name '%s' is reserved (the metrics aggregate)", name);
	pthread_mutex_lock(&e->lock);
	en = tab_find(e, name);
	if (en) {
		rec = en->rec;
		before = policy_json(e, &rec);
	} else {
		rec_init(&rec, &e->defaults, wall_ms());
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
	err = agd_policy_check(&eff, why, sizeof(why));
	if (!err && ag_limit_check(rec.rate, agd_policy_burst_tokens(&eff, rec.rate), eff.unit)) {
		snprintf(why, sizeof(why), "%s", ag_errmsg());
		err = -EINVAL;
	}
	if (err) {
		json_decref(before);
		pthread_mutex_unlock(&e->lock);
		return fail(oe, -EINVAL, "%s", why);
	}
	rec.updated_ms = wall_ms();
	err = txn_begin(e, &txn);
	if (err) {
		json_decref(before);
		pthread_mutex_unlock(&e->lock);
		return fail(oe, err, "state not changed: %s", store_error(err));
	}
	err = agd_store_agent_put(&e->st, txn, name, &rec);
	if (!err && made) /* an operator brings a deleted agent back */
		err = agd_store_deleted_del(&e->st, txn, name);
	if (!err)
		err = audit(e, txn, subject, made ? "agent.create" : "agent.update", name, before,
			    policy_json(e, &rec), &line);
	else
		json_decref(before);
	err = finish_op(e, txn, seq, err, line, oe);
	if (!err) {
		if (!en)
			en = tab_add(e, name);
		if (!en) {
			err = fail(oe, -ENOMEM, "out of memory");
		} else {
			en->rec = rec;
			err = push_to_map(e, en, made);
			if (err && made)
				err = unstore_new_agent(e, en, oe);
			else if (err)
				fail(oe, err, "stored, but the maps refused it: %s", ag_errmsg());
			else if (c->fill_tokens >= 0 &&
				 ag_bucket_fill(e->ctx, en->slot, c->fill_tokens))
				err = fail(oe, -EIO, "cannot fill the bucket: %s", ag_errmsg());
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
				 const char *subject, struct agd_op_err *oe)
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
		pthread_mutex_unlock(&e->lock);
		return fail(oe, -ENOENT, "unknown agent '%s'", name);
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
		return fail(oe, err, "cannot remove '%s' from the maps: %s", name, ag_errmsg());
	}
	err = txn_begin(e, &txn);
	if (err)
		goto out;
	err = agd_store_agent_del(&e->st, txn, name);
	if (!err)
		err = agd_store_deleted_put(&e->st, txn, name, wall_ms(), subject);
	if (!err)
		err = agd_store_rules_foreach(&e->st, txn, rule_of_agent, (void *)name);
	if (!err)
		err = audit(e, txn, subject, "agent.delete", name, policy_json(e, &en->rec), NULL,
			    &line);
	err = finish_op(e, txn, seq, err, line, oe);
	if (!err)
		tab_remove(e, en);
out:
	if (err) {
		/* The agent stays: give it its bucket (full) and rules back. */
		en->map_rate = -1;
		if (!push_to_map(e, en, true))
			for (i = 0; i < n_rules; i++)
				ag_rule_add(e->ctx, &rules[i], name);
		if (oe && !oe->msg[0])
			fail(oe, err, "state not changed: %s", store_error(err));
	}
	pthread_mutex_unlock(&e->lock);
	free(rules);
	return err;
}

/* The slot of the agent's bucket now, by name: the CLI may have deleted or
 * recreated it since. A daemon agent without a bucket gets one again.
 * Called under e->lock. */
static int bucket_slot(struct agd_engine *e, struct entry *en, __u32 *slot, struct agd_op_err *oe)
{
	struct ag_agent live;

	if (en->map_rate >= 0 && !ag_agent_get(e->ctx, en->name, &live)) {
		en->slot = live.slot;
		*slot = live.slot;
		return 0;
	}
	en->map_rate = -1;
	if (push_to_map(e, en, true))
		return fail(oe, -ENOSPC, "agent '%s' has no bucket in the maps: %s", en->name,
			    ag_errmsg());
	*slot = en->slot;
	return 0;
}

/* Reset and drain change only the live bucket; they are audited. */
static int bucket_op(struct agd_engine *e, const char *name, const char *action, __u64 tokens,
		     const char *subject, double *remaining, struct agd_op_err *oe)
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
		return fail(oe, -ENOENT, "unknown agent '%s'", name);
	}
	err = bucket_slot(e, en, &slot, oe);
	if (err) {
		pthread_mutex_unlock(&e->lock);
		return err;
	}
	ag_bucket_tokens(e->ctx, slot, &before);
	err = strcmp(action, "agent.reset") ? ag_bucket_drain(e->ctx, slot, tokens, remaining)
					     : ag_bucket_reset(e->ctx, slot);
	if (err) {
		pthread_mutex_unlock(&e->lock);
		return fail(oe, err, "%s", ag_errmsg());
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
			  struct agd_op_err *oe)
{
	return bucket_op(e, name, "agent.reset", 0, subject, NULL, oe);
}

int agd_engine_agent_drain(struct agd_engine *e, const char *name, __u64 tokens,
			  const char *subject, double *remaining, struct agd_op_err *oe)
{
	return bucket_op(e, name, "agent.drain", tokens, subject, remaining, oe);
}

int agd_engine_consume(struct agd_engine *e, const char *name, __u64 tokens,
		      struct ag_consume_result *res, struct agd_op_err *oe)
{
	__u32 slot;
	int err;

	/* By name from the maps, not through e->lock: a consume must not wait
	 * for a group commit's fsync. Known names come from the library's
	 * cache, checked against the bucket's generation: no system call. */
	err = ag_agent_slot(e->ctx, name, &slot);
	if (err)
		return fail(oe, err == -ENOENT ? -ENOENT : err, err == -ENOENT ?
			    "unknown agent '%s'" : "%s", err == -ENOENT ? name : ag_errmsg());
	err = ag_bucket_consume(e->ctx, slot, tokens, res);
	return err ? fail(oe, err, "%s", ag_errmsg()) : 0;
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
		e->opts.log(AGD_LOG_ERR, "a refused rule stays stored (restart retries it): %s",
			    store_error(err));
}

int agd_engine_apply_rule_add(struct agd_engine *e, __u64 seq, const struct ag_rule *rule,
			     const char *agent, const char *subject, struct agd_op_err *oe)
{
	struct agd_rule_rec_key key;
	char *line = NULL, owner[AG_NAME_MAX + 1], prefix[AG_PREFIX_STRLEN];
	bool known = false;
	MDB_txn *txn;
	int err;

	pthread_mutex_lock(&e->lock);
	if (!tab_find(e, agent)) {
		pthread_mutex_unlock(&e->lock);
		return fail(oe, -ENOENT, "unknown agent '%s'", agent);
	}
	rule_key_of(rule, &key);
	ag_prefix_format(rule, prefix, sizeof(prefix));
	err = txn_begin(e, &txn);
	if (err) {
		pthread_mutex_unlock(&e->lock);
		return fail(oe, err, "state not changed: %s", store_error(err));
	}
	err = stored_rule_agent(e, txn, &key, owner, sizeof(owner));
	if (!err && strcmp(owner, agent)) {
		agd_store_txn_end(txn);
		pthread_mutex_unlock(&e->lock);
		return fail(oe, -EEXIST, "rule %s port %u already maps to agent '%s'; delete it first",
			    prefix, rule->port, owner);
	}
	known = !err;
	/* Stored first: a crash after the commit restores it into the maps. */
	err = err == -ENOENT || !err ? agd_store_rule_put(&e->st, txn, &key, agent) : err;
	if (!err)
		err = audit(e, txn, subject, "rule.add", agent, NULL, rule_json(rule, agent),
			    &line);
	err = finish_op(e, txn, seq, err, line, oe);
	if (!err) {
		int map_err = ag_rule_add(e->ctx, rule, agent);

		if (map_err) { /* e.g. the CLI mapped it to another agent */
			err = fail(oe, map_err, "%s", ag_errmsg());
			if (!known)
				unstore_rule(e, &key);
		}
	}
	pthread_mutex_unlock(&e->lock);
	return err;
}

int agd_engine_apply_rule_del(struct agd_engine *e, __u64 seq, const struct ag_rule *rule,
			     const char *subject, struct agd_op_err *oe)
{
	struct agd_rule_rec_key key;
	struct ag_rule *all = NULL;
	size_t n = 0, i;
	const char *agent = NULL;
	char *line = NULL, agent_buf[AG_NAME_MAX + 1];
	const char **names = NULL;
	MDB_txn *txn;
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
			return fail(oe, err, "%s", ag_errmsg());
		return fail(oe, -ENOENT, "no such rule");
	}
	err = ag_rule_del(e->ctx, rule);
	if (err) {
		pthread_mutex_unlock(&e->lock);
		return fail(oe, err, "%s", ag_errmsg());
	}
	rule_key_of(rule, &key);
	err = txn_begin(e, &txn);
	if (!err) {
		err = agd_store_rule_del(&e->st, txn, &key);
		if (err == -ENOENT)
			err = 0;
		if (!err)
			err = audit(e, txn, subject, "rule.delete", agent, rule_json(rule, agent),
				    NULL, &line);
		err = finish_op(e, txn, seq, err, line, oe);
	} else {
		fail(oe, err, "state not changed: %s", store_error(err));
	}
	if (err)
		ag_rule_add(e->ctx, rule, agent); /* put it back as it was */
	pthread_mutex_unlock(&e->lock);
	return err;
}

/* ---- views ------------------------------------------------------------------ */

static void view_of(struct agd_engine *e, const struct entry *en, struct agd_agent_view *v)
{
	memset(v, 0, sizeof(*v));
	snprintf(v->name, sizeof(v->name), "%s", en->name);
	v->slot = en->slot;
	agd_rec_effective(&en->rec, &e->defaults, &v->policy);
	v->set = en->rec.set;
	v->rate = en->rec.rate;
	v->share = en->share;
	v->fleet = e->replicated;
	v->burst = agd_policy_burst_tokens(&v->policy, en->rec.rate * en->share);
	v->stats = (struct agd_rating_stats){ en->rec.count, en->rec.score_sum, en->rec.last_ms };
	v->created_ms = en->rec.created_ms;
	v->updated_ms = en->rec.updated_ms;
}

int agd_engine_agent_view(struct agd_engine *e, const char *name, struct agd_agent_view *v)
{
	struct entry *en;
	bool in_maps = false;

	pthread_mutex_lock(&e->lock);
	en = tab_find(e, name);
	if (en) {
		view_of(e, en, v);
		in_maps = en->map_rate >= 0;
	}
	pthread_mutex_unlock(&e->lock);
	if (!en)
		return -ENOENT;
	if (in_maps) {
		ag_bucket_tokens(e->ctx, v->slot, &v->tokens);
		ag_counters_get(e->ctx, v->slot, &v->counters);
	}
	return 0;
}

int agd_engine_explain(struct agd_engine *e, const char *name, void **json_out,
		      struct agd_op_err *oe)
{
	struct agd_explain_opts o = { .ctx = e->ctx, .answered_by = "agentgated", .share = 1 };
	struct agd_policy defaults;
	struct entry *en;
	char msg[sizeof(oe->msg)];
	json_t *j = NULL;
	MDB_txn *txn;
	int err;

	*json_out = NULL;
	if (ag_name_check(name))
		return fail(oe, -EINVAL, "%s", ag_errmsg());
	pthread_mutex_lock(&e->lock);
	defaults = e->defaults;
	en = tab_find(e, name);
	if (en)
		o.share = en->share;
	o.fleet = e->replicated;
	pthread_mutex_unlock(&e->lock);
	o.defaults = &defaults;
	/* A snapshot: never waits for the apply thread's commit. */
	err = agd_store_read_begin(&e->st, &txn);
	if (err)
		return fail(oe, err, "cannot read the state store: %s", store_error(err));
	err = agd_explain_build(&e->st, txn, name, &o, &j, msg, sizeof(msg));
	agd_store_txn_end(txn);
	if (err)
		return fail(oe, err, "%s", msg);
	*json_out = j;
	return 0;
}

/* The names after `after` in the store's key order (bytes, as strcmp orders
 * names), at most limit + 1, from a read transaction and a cursor placed
 * with MDB_SET_RANGE: O(log n + limit) at any depth, and an LMDB reader
 * never waits for the writer (the apply thread) nor holds it up. */
static int store_names_after(struct agd_engine *e, const char *after, size_t limit,
			     char (*names)[AG_NAME_MAX + 1], size_t *n)
{
	MDB_txn *txn;
	int err = agd_store_read_begin(&e->st, &txn);

	*n = 0;
	if (err)
		return err;
	err = agd_store_agent_names_after(&e->st, txn, after, limit + 1, names, n);
	agd_store_txn_end(txn);
	return err;
}

int agd_engine_agent_page(struct agd_engine *e, const char *after, size_t limit,
			 struct agd_agent_view **out, size_t *n, char next[AG_NAME_MAX + 1])
{
	char (*names)[AG_NAME_MAX + 1] = NULL;
	struct agd_agent_view *v = NULL;
	bool *in_maps = NULL;
	size_t got, i, k = 0;
	int err;

	if (!limit)
		return -EINVAL;
	names = malloc((limit + 1) * sizeof(*names));
	v = calloc(limit, sizeof(*v));
	in_maps = calloc(limit, sizeof(*in_maps));
	err = names && v && in_maps ? 0 : -ENOMEM;
	if (!err)
		err = store_names_after(e, after, limit, names, &got);
	if (err)
		goto cleanup;
	next[0] = 0;
	if (got > limit) {
		got = limit;
		memcpy(next, names[limit - 1], AG_NAME_MAX + 1);
	}
	/* One short hold of the lock for the page: table lookups only. */
	pthread_mutex_lock(&e->lock);
	for (i = 0; i < got; i++) {
		struct entry *en = tab_find(e, names[i]);

		if (!en)
			continue; /* deleted since the store was read */
		view_of(e, en, &v[k]);
		in_maps[k++] = en->map_rate >= 0;
	}
	pthread_mutex_unlock(&e->lock);
	for (i = 0; i < k; i++) {
		if (!in_maps[i])
			continue;
		ag_bucket_tokens(e->ctx, v[i].slot, &v[i].tokens);
		ag_counters_get(e->ctx, v[i].slot, &v[i].counters);
	}
	*out = v;
	*n = k;
	v = NULL;
cleanup:
	free(names);
	free(in_maps);
	free(v);
	return err;
}

size_t agd_engine_agent_count(struct agd_engine *e)
{
	size_t n;

	pthread_mutex_lock(&e->lock);
	n = e->count;
	pthread_mutex_unlock(&e->lock);
	return n;
}

int agd_engine_agent_views(struct agd_engine *e, struct agd_agent_view **out, size_t *n)
{
	struct ag_counters *counters;
	struct agd_agent_view *v;
	struct entry *en;
	size_t i, k = 0;
	__u32 max = ag_max_agents(e->ctx);
	int err;

	counters = calloc(max, sizeof(*counters));
	if (!counters)
		return -ENOMEM;
	err = ag_counters_get_all(e->ctx, counters);
	if (err) {
		free(counters);
		return err;
	}
	pthread_mutex_lock(&e->lock);
	v = calloc(e->count + 1, sizeof(*v));
	if (!v) {
		pthread_mutex_unlock(&e->lock);
		free(counters);
		return -ENOMEM;
	}
	TAB_FOREACH(e, i, en) {
		view_of(e, en, &v[k]);
		if (en->map_rate < 0)
			v[k].slot = UINT32_MAX; /* no bucket: no tokens, no counters */
		else if (en->slot < max)
			v[k].counters = counters[en->slot];
		k++;
	}
	pthread_mutex_unlock(&e->lock);
	for (i = 0; i < k; i++)
		if (v[i].slot != UINT32_MAX)
			ag_bucket_tokens(e->ctx, v[i].slot, &v[i].tokens);
	free(counters);
	*out = v;
	*n = k;
	return 0;
}

void agd_engine_stats(struct agd_engine *e, struct agd_engine_stats *s)
{
	MDB_txn *txn;

	pthread_mutex_lock(&e->slock);
	*s = e->stats;
	pthread_mutex_unlock(&e->slock);
	pthread_mutex_lock(&e->qlock);
	s->queue_depth = e->queued;
	pthread_mutex_unlock(&e->qlock);
	if (!agd_store_read_begin(&e->st, &txn)) {
		s->dedup_ids = agd_store_dedup_count(&e->st, txn);
		agd_store_txn_end(txn);
	}
}

void agd_engine_count_invalid(struct agd_engine *e, __u64 n)
{
	pthread_mutex_lock(&e->slock);
	e->stats.ratings_invalid += n;
	pthread_mutex_unlock(&e->slock);
}

void *agd_agent_view_json(const struct agd_agent_view *v)
{
	const struct agd_policy *p = &v->policy;
	json_t *o = json_object();
	json_t *burst_policy;

	if (!o)
		return NULL;
	burst_policy = agd_burst_policy_json(p);
	json_object_set_new(o, "agent", json_string(v->name));
	json_object_set_new(o, "slot", json_integer(v->slot));
	json_object_set_new(o, "rate", json_real(v->rate));
	json_object_set_new(o, "burst", json_integer((json_int_t)v->burst));
	json_object_set_new(o, "burst_policy", burst_policy);
	if (v->fleet)
		json_object_set_new(o, "fleet", json_pack("{s:f,s:f}", "share", v->share,
							  "local_rate", v->rate * v->share));
	json_object_set_new(o, "unit", json_string(p->unit == AG_UNIT_BPS ? "bps" : "pps"));
	json_object_set_new(o, "r0", json_real(p->r0));
	json_object_set_new(o, "r_min", json_real(p->r_min));
	json_object_set_new(o, "r_max", json_real(p->r_max));
	json_object_set_new(o, "alpha", json_real(p->alpha));
	json_object_set_new(o, "pinned", json_boolean(p->pinned));
	json_object_set_new(o, "tokens", json_real(v->tokens));
	json_object_set_new(o, "ratings", json_integer((json_int_t)v->stats.count));
	json_object_set_new(o, "mean_score", json_real(agd_stats_mean(&v->stats)));
	json_object_set_new(o, "last_rating_ms", v->stats.last_ms >= 0 ?
							 json_integer(v->stats.last_ms) :
							 json_null());
	json_object_set_new(o, "passed_packets", json_integer((json_int_t)v->counters.passed_packets));
	json_object_set_new(o, "passed_bytes", json_integer((json_int_t)v->counters.passed_bytes));
	json_object_set_new(o, "dropped_packets",
			    json_integer((json_int_t)v->counters.dropped_packets));
	json_object_set_new(o, "dropped_bytes", json_integer((json_int_t)v->counters.dropped_bytes));
	json_object_set_new(o, "created_ms", json_integer((json_int_t)v->created_ms));
	json_object_set_new(o, "updated_ms", json_integer((json_int_t)v->updated_ms));
	return o;
}

/* ---- global settings ------------------------------------------------------------ */

static json_t *config_json(const struct ag_config *cfg)
{
	return json_pack("{s:s,s:b}", "default_action",
			 cfg->default_action == AG_ACTION_DROP ? "drop" : "pass", "dry_run",
			 (int)cfg->dry_run);
}

int agd_engine_apply_config_set(struct agd_engine *e, __u64 seq, const struct agd_config_change *c,
			       const char *subject, struct agd_op_err *oe)
{
	struct ag_config before, after;
	char *line = NULL;
	MDB_txn *txn;
	int err;

	if ((c->default_action != -1 && c->default_action != AG_ACTION_PASS &&
	     c->default_action != AG_ACTION_DROP) ||
	    (c->dry_run != -1 && c->dry_run != 0 && c->dry_run != 1))
		return fail(oe, -EINVAL, "default_action must be pass or drop, dry_run on or off");
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
		return fail(oe, err, "%s", ag_errmsg());
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

int agd_engine_status(int err)
{
	switch (err) {
	case -EINVAL: return 400;
	case -ENOENT: return 404;
	case -EEXIST: return 409;
	case -ENOSPC: return 507;
	case -ESHUTDOWN:
	case -ENOTCONN: /* the fleet's log is unreachable */
	case -ETIMEDOUT: return 503;
	default: return 500;
	}
}
