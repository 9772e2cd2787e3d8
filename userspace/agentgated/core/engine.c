// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The engine (engine.h): open and close, the in-memory agent table, the
 * helpers its files share (records, the maps, the audit log, transactions),
 * reload and stats. Ratings are applied in apply.c, operator changes in
 * ops.c, the start-up reconciliation is reconcile.c's, the views views.c's;
 * engine_int.h joins them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "appendlog.h"
#include "engine_int.h"
#include "explain.h"
#include "intake.h"
#include "voices.h"

static void nolog(int level, const char *fmt, ...)
{
}

__u64 wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (__u64)ts.tv_sec * 1000 + (__u64)ts.tv_nsec / 1000000;
}

/* ---- the agent table ------------------------------------------------------ */

size_t hash_name(const char *s)
{
	size_t h = 1469598103934665603ULL;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

struct entry *tab_find(struct agd_engine *e, const char *name)
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

struct entry *tab_add(struct agd_engine *e, const char *name)
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

void tab_remove(struct agd_engine *e, struct entry *victim)
{
	struct entry **pp = &e->buckets[hash_name(victim->name) & (e->nbuckets - 1)];

	for (; *pp; pp = &(*pp)->next) {
		if (*pp == victim) {
			*pp = victim->next;
			e->count--;
			feed_forget(e, victim);
			free(victim);
			return;
		}
	}
}

/* ---- records, maps and the audit log ---------------------------------------- */

void rec_init(struct agd_agent_rec *r, const struct agd_policy *defaults, __u64 now)
{
	memset(r, 0, sizeof(*r));
	r->version = AGD_STORE_VERSION;
	agd_rec_set_policy(r, defaults, 0);
	r->rate = defaults->r0;
	r->last_ms = -1;
	r->created_ms = r->updated_ms = now;
}

void influence_of(const struct agd_engine *e, const struct entry *en, struct agd_influence *out)
{
	const struct agd_influence_rec *r = &en->inf;

	out->max_change = r->set & AGD_INF_MAX_CHANGE ? r->max_change : e->opts.max_change;
	out->window_ms = r->set & AGD_INF_WINDOW ? r->window_ms : e->opts.change_window_ms;
	out->wave_users = r->set & AGD_INF_WAVE_USERS ? r->wave_users : e->opts.wave_users;
	out->wave_hold = r->set & AGD_INF_WAVE_HOLD ? r->wave_hold : e->opts.wave_hold;
	out->user_cap = r->set & AGD_INF_USER_CAP ? r->user_cap : e->opts.user_cap;
	if (!(out->user_cap > 0 && out->user_cap <= AGD_USER_CAP_MAX))
		out->user_cap = AGD_USER_CAP_MAX; /* options made without one */
}

void effective(struct agd_engine *e, const struct entry *en, struct agd_policy *p)
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
int push_to_map(struct agd_engine *e, struct entry *en, bool force)
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
	if (created) /* a bucket again: its parent and quota with it */
		budget_on_bucket(e, en->name);
	en->map_rate = u.rate;
	en->map_burst = u.burst;
	en->map_unit = u.unit;
	en->map_pinned = u.pinned;
	return 0;
}

json_t *policy_json(const struct agd_engine *e, const struct agd_agent_rec *r)
{
	struct agd_policy p;

	agd_rec_effective(r, &e->defaults, &p);
	return json_pack("{s:f,s:I,s:s,s:f,s:f,s:f,s:b,s:I}", "rate", r->rate, "burst",
			 (json_int_t)agd_policy_burst_tokens(&p, r->rate), "unit",
			 ag_unit_name(p.unit), "r_min", p.r_min, "r_max", p.r_max,
			 "alpha", p.alpha, "pinned", p.pinned, "ttl", (json_int_t)p.ttl);
}

/* Records one operator change in the transaction, and in the agent's
 * history (explain); steals before/after. The line is returned for the
 * audit file, written once the change commits. */
int audit(struct agd_engine *e, MDB_txn *txn, const char *subject, const char *action,
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

void audit_file(struct agd_engine *e, char *line)
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

int txn_begin(struct agd_engine *e, MDB_txn **txn)
{
	return txn_begin_flags(e, txn, 0);
}

int txn_begin_flags(struct agd_engine *e, MDB_txn **txn, unsigned int flags)
{
	struct agd_err why;
	int err;

	*txn = NULL; /* also when beginning fails: callers test it */
	err = agd_store_txn_begin_flags(&e->st, txn, flags);

	/* A transaction that changed voices and did not commit left memory
	 * ahead of the store: read them again first. */
	if (!err && e->voices && (err = agd_voices_sync(e->voices, &e->st, *txn, &why))) {
		e->opts.log(AGD_LOG_ERR, "%s", why.msg);
		agd_store_txn_end(*txn);
		*txn = NULL;
	}
	/* The same for the rating ids. */
	if (!err && (err = agd_store_dedup_sync(&e->st, *txn))) {
		store_log(e, err, "cannot read the rating ids again");
		agd_store_txn_end(*txn);
		*txn = NULL;
	}
	return err;
}

int store_agent_del(struct agd_engine *e, MDB_txn *txn, const char *name)
{
	int err = agd_store_agent_del(&e->st, txn, name), drop;

	if (!err || err == -ENOENT) {
		int ferr = agd_store_feed_del(&e->st, txn, name);

		if (ferr)
			return ferr;
	}

	if ((!err || err == -ENOENT) && e->voices && (drop = agd_voices_drop(e->voices, name)))
		return drop;
	return err;
}

/* Folds the voice log into the voices database once it is long enough
 * (voices.h), or whenever it holds anything (force: on close). */
void voices_fold(struct agd_engine *e, bool force)
{
	MDB_txn *txn;
	int err;

	if (!e->voices || !(force ? agd_voices_logged(e->voices) : agd_voices_fold_due(e->voices)))
		return;
	err = txn_begin(e, &txn);
	if (!err) {
		err = agd_voices_fold(e->voices, &e->st, txn);
		if (err)
			agd_store_txn_end(txn);
		else
			err = txn_commit(e, txn, 0);
	}
	if (err) {
		agd_voices_settled(e->voices, false); /* tried again once the log grew */
		store_log(e, err, "voices not folded into the store (the voice log keeps them)");
	}
}

void voices_resync(struct agd_engine *e)
{
	struct agd_err why;
	MDB_txn *txn;

	if (e->voices && !agd_store_read_begin(&e->st, &txn)) {
		if (agd_voices_sync(e->voices, &e->st, txn, &why))
			e->opts.log(AGD_LOG_ERR, "%s", why.msg);
		agd_store_txn_end(txn);
	}
}

/* The index of rating ids (store_dedup.c), after the ids an earlier
 * version stored are moved to dedup_log: 100 000 a transaction (LMDB
 * bounds the pages one may dirty), each a whole step a crash keeps. */
static int dedup_load(struct agd_engine *e, struct agd_err *errbuf)
{
	bool more = true;
	MDB_txn *txn;
	int err = 0;

	while (more && !err) {
		err = txn_begin(e, &txn);
		if (!err)
			err = agd_store_dedup_migrate(&e->st, txn, 100000, &more);
		if (!err)
			err = txn_commit(e, txn, 0);
		else if (txn)
			agd_store_txn_end(txn);
	}
	if (!err)
		err = agd_store_read_begin(&e->st, &txn);
	if (err)
		return agd_store_fail(errbuf, err, "cannot move the rating ids to this version's "
				      "layout");
	err = agd_store_dedup_load(&e->st, txn);
	agd_store_txn_end(txn);
	return err ? agd_store_fail(errbuf, err, "cannot read the rating ids") : 0;
}

static int voices_load(struct agd_engine *e, struct agd_err *errbuf)
{
	MDB_txn *txn;
	int err = agd_store_read_begin(&e->st, &txn);

	if (err)
		return agd_store_fail(errbuf, err, "cannot read the voices");
	err = agd_voices_open(&e->st, txn, &e->voices, errbuf);
	agd_store_txn_end(txn);
	return err;
}

/* Commits; seq: the fleet log sequence the transaction applies (stored
 * with it, so the state and its position in the log never part), 0 for a
 * local change. */
int txn_commit(struct agd_engine *e, MDB_txn *txn, __u64 seq)
{
	int err = 0;

	if (seq > e->log_seq)
		err = agd_store_meta_put_u64(&e->st, txn, "log_seq", seq);
	if (!err && e->voices)
		err = agd_voices_flush(e->voices, &e->st, txn);
	if (err)
		agd_store_txn_end(txn);
	else
		err = agd_store_commit(&e->st, txn);
	if (e->voices)
		agd_voices_settled(e->voices, !err);
	agd_store_dedup_settled(&e->st, !err);
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

void store_log(struct agd_engine *e, int err, const char *fmt, ...)
{
	struct agd_err why;
	char context[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(context, sizeof(context), fmt, ap);
	va_end(ap);
	agd_store_fail(&why, err, "%s", context);
	e->opts.log(AGD_LOG_ERR, "%s", why.msg);
}

/* ---- rules and slots ------------------------------------------------------- */

void rule_key_of(const struct ag_rule *r, struct agd_rule_rec_key *k)
{
	memset(k, 0, sizeof(*k));
	k->family = (__u8)r->family;
	k->plen = r->plen;
	k->port = r->port;
	memcpy(k->addr, r->addr, 16);
}

/* slot -> agent name for every agent in the maps; free() the result. */
const char **slot_names(struct agd_engine *e)
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

const char *slot_name(const char **names, struct ag_ctx *ctx, __u32 slot)
{
	return slot < ag_max_agents(ctx) ? names[slot] : NULL;
}

/* ---- open / close ----------------------------------------------------------- */

#define OWNER_WAIT_MS 10000 /* CLI writes under way finish in milliseconds */

static int take_ownership(struct agd_engine *e, struct agd_err *errbuf)
{
	const char *root = e->opts.pin_root ? e->opts.pin_root : AG_PIN_ROOT_DEFAULT;
	struct ag_owner holder;
	int err = ag_owner_acquire(root, OWNER_WAIT_MS, &e->owner_fd, &holder);

	if (!err)
		return 0;
	if (err == -EBUSY && holder.pid)
		return agd_errf(errbuf, err, "%s is owned by another agentgated (pid %u, control "
				"socket %s): stop it, or give this one another --pin-path", root,
				holder.pid, holder.control);
	if (err == -EBUSY)
		return agd_errf(errbuf, err, "%s/%s is locked by another process for over %d s: "
				"another agentgated starting, or a tool holding the lock", root,
				AG_PIN_OWNER_DIR, OWNER_WAIT_MS / 1000);
	return agd_errf(errbuf, err, "%s", ag_errmsg());
}

int agd_engine_open(const struct agd_engine_opts *opts, struct agd_engine **out,
		   struct agd_err *errbuf)
{
	struct ag_open_opts oo = { .pin_root = opts->pin_root, .create = true,
				   .max_agents = opts->max_agents };
	char path[4096];
	struct agd_engine *e;
	int err;

	snprintf(errbuf->msg, sizeof(errbuf->msg), "out of memory");
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
	e->intake = agd_intake_new();
	if (!e->buckets || !e->intake) {
		err = -ENOMEM;
		goto cleanup;
	}
	agd_intake_set(e->intake, opts->user_rate, opts->token_rate);
	err = agd_store_open(opts->state_dir, opts->store_size, &e->st, errbuf);
	if (err)
		goto cleanup;
	snprintf(path, sizeof(path), "%s/audit.log", opts->state_dir);
	e->audit_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (e->audit_fd < 0) {
		err = -errno;
		snprintf(errbuf->msg, sizeof(errbuf->msg),
			"cannot open %s: %s", path, strerror(-err));
		goto cleanup;
	}
	/* After the store is accepted (a refused one leaves no pin root) and
	 * before the maps are read: a CLI write under way ends first. */
	err = take_ownership(e, errbuf);
	if (err)
		goto cleanup;
	err = ag_open(&oo, &e->ctx);
	if (err) {
		snprintf(errbuf->msg, sizeof(errbuf->msg), "%s", ag_errmsg());
		goto cleanup;
	}
	err = revoked_load(e, errbuf);
	if (err)
		goto cleanup;
	/* What the buckets and counters read before reconcile writes any. */
	activity_read(e);
	err = voices_load(e, errbuf);
	if (!err)
		err = dedup_load(e, errbuf);
	if (!err)
		err = load_agents(e, errbuf);
	if (!err)
		err = reconcile(e, errbuf);
	if (err)
		goto cleanup;
	activity_restore(e);
	err = -pthread_create(&e->thread, NULL, apply_thread, e);
	if (err) {
		snprintf(errbuf->msg, sizeof(errbuf->msg),
			"cannot start the apply thread: %s", strerror(-err));
		goto cleanup;
	}
	e->thread_started = true;
	err = sweeper_start(e, errbuf);
	if (err)
		goto cleanup;
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
	sweeper_stop(e);
	if (e->thread_started) {
		pthread_mutex_lock(&e->qlock);
		e->stopping = true;
		pthread_cond_broadcast(&e->qcv);
		pthread_cond_broadcast(&e->spacecv);
		pthread_mutex_unlock(&e->qlock);
		pthread_join(e->thread, NULL);
	}
	if (e->voices && e->thread_started) { /* not after a failed start */
		pthread_mutex_lock(&e->lock);
		voices_fold(e, true); /* a short log for the next start */
		pthread_mutex_unlock(&e->lock);
	}
	if (e->thread_started)
		budgets_save_counts(e); /* the quotas' counts, for a reboot */
	budgets_free(e);
	agd_voices_free(e->voices);
	feeds_free(e);
	for (i = 0; e->buckets && i < e->nbuckets; i++)
		for (en = e->buckets[i]; en; en = next) {
			next = en->next;
			free(en);
		}
	free(e->buckets);
	agd_intake_free(e->intake);
	free(e->ev);
	free(e->hist);
	revoked_free(e);
	free(e->sw_words);
	free(e->sw_counters);
	free((void *)e->consumed);
	ag_close(e->ctx);
	agd_store_dedup_unload(&e->st);
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

void agd_engine_reconfigure(struct agd_engine *e, const struct agd_engine_opts *next)
{
	const struct agd_policy *defaults = &next->defaults;
	struct entry *en;
	MDB_txn *txn = NULL;
	size_t i;
	int err;

	pthread_mutex_lock(&e->lock);
	e->defaults = *defaults;
	e->opts.dedup_window_ms = next->dedup_window_ms;
	e->opts.dedup_max = next->dedup_max;
	e->opts.auto_create = next->auto_create;
	e->opts.evict_when_full = next->evict_when_full;
	e->opts.anonymous = next->anonymous;
	e->opts.max_change = next->max_change;
	e->opts.change_window_ms = next->change_window_ms;
	e->opts.wave_users = next->wave_users;
	e->opts.wave_hold = next->wave_hold;
	e->opts.user_cap = next->user_cap;
	e->opts.charge_max_debt_ms = next->charge_max_debt_ms;
	e->opts.user_rate = next->user_rate;
	e->opts.token_rate = next->token_rate;
	agd_intake_set(e->intake, next->user_rate, next->token_rate);
	/* Bounds and bursts inherited from the defaults may have moved: rates
	 * pulled inside are stored first, then written into the buckets. */
	err = txn_begin(e, &txn);
	TAB_FOREACH(e, i, en) {
		struct agd_policy p;
		struct agd_err why;
		double rate = en->rec.rate;

		effective(e, en, &p);
		if (agd_policy_check(&p, &why) && p.r_min > p.r_max)
			e->opts.log(AGD_LOG_WARN, "agent '%s': its own bounds conflict with the new "
				    "defaults (%s); its rate follows r_max", en->name, why.msg);
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
		store_log(e, err, "reload: clamped rates not stored");
	TAB_FOREACH(e, i, en)
		push_to_map(e, en, false);
	pthread_mutex_unlock(&e->lock);
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
		agd_store_voice_count(&e->st, txn, &s->voices_bytes);
		/* the index of ids changes (and is made again) under the lock */
		pthread_mutex_lock(&e->lock);
		s->dedup_ids = agd_store_dedup_count(&e->st, txn);
		pthread_mutex_unlock(&e->lock);
		agd_store_txn_end(txn);
	}
	pthread_mutex_lock(&e->lock);
	if (e->voices) {
		s->voices = agd_voices_count(e->voices);
		s->voices_memory = agd_voices_bytes(e->voices);
		s->voices_logged = agd_voices_logged(e->voices);
	}
	pthread_mutex_unlock(&e->lock);
}

const char *const agd_tally_group[AGD_TALLY__N] = {
#define X(e, g, r) g,
	AGD_TALLY_LIST(X)
#undef X
};
const char *const agd_tally_reason[AGD_TALLY__N] = {
#define X(e, g, r) r,
	AGD_TALLY_LIST(X)
#undef X
};

struct agd_intake *agd_engine_intake(struct agd_engine *e)
{
	return e->intake;
}

void agd_engine_tally_refused(struct agd_engine *e, const struct agd_rating *items, size_t n,
			      enum agd_tally why)
{
	size_t i;

	if (why >= AGD_TALLY__N)
		return;
	pthread_mutex_lock(&e->lock);
	for (i = 0; i < n; i++) {
		struct entry *en = tab_find(e, items[i].agent);

		if (en)
			en->tally[why]++;
	}
	pthread_mutex_unlock(&e->lock);
	pthread_mutex_lock(&e->slock);
	e->stats.tally[why] += n;
	pthread_mutex_unlock(&e->slock);
}

void agd_engine_count_invalid(struct agd_engine *e, __u64 n)
{
	pthread_mutex_lock(&e->slock);
	e->stats.ratings_invalid += n;
	pthread_mutex_unlock(&e->slock);
}
