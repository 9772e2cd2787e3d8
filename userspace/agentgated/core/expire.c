// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Idle agents leave (engine.h, "expiry"): what activity each agent showed,
 * the sweep thread, expiring and evicting.
 *
 * Knowing activity costs the datapath nothing. Every sweep reads each
 * slot's tat word through the mmap (it moves when a packet is admitted or
 * the bucket is consumed from or changed) and the per-CPU counters in
 * batches (refused packets move those), and compares both with its last
 * read; ratings, consumes and operator changes touch the agent where they
 * are applied. An agent's idle time grows by the time between two sweeps
 * on CLOCK_MONOTONIC, and by at most twice the interval per sweep, so no
 * clock step (wall or monotonic) ages an agent by more than that.
 *
 * Across restarts: the first sweep that finds an agent idle stores when
 * its idle spell began and what its bucket and counters read (the
 * activity database). On start the agent is idle since then only if both
 * still read the same: a daemon that was down while the datapath kept
 * counting sees the traffic. Otherwise it starts afresh, idle 0.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_int.h"

#define SWEEP_MIN_MS 250
#define SWEEP_MAX_MS 60000
#define EXPIRE_BATCH 4096 /* agents per transaction */

__u64 mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000 + (__u64)ts.tv_nsec / 1000000;
}

static __u64 cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (__u64)ts.tv_sec * 1000000000ULL + (__u64)ts.tv_nsec;
}

static __u64 packets_of(const struct ag_counters *c)
{
	return c->passed_packets + c->dropped_packets + c->would_drop_packets;
}

void touch(struct entry *en)
{
	en->idle_ms = 0;
	en->idle_stored = false;
	en->active_at = mono_ms();
}

__u64 idle_now(const struct entry *en)
{
	__u64 now = mono_ms();

	return now > en->active_at ? now - en->active_at : 0;
}

/* The agent's idle TTL in ms; 0: it never expires. */
static __u64 ttl_ms(struct agd_engine *e, const struct entry *en)
{
	struct agd_policy p;

	effective(e, en, &p);
	return (__u64)p.ttl * 1000;
}

/* ---- reading the buckets and counters ------------------------------------------ */

static int read_all(struct agd_engine *e)
{
	__u32 n = ag_max_agents(e->ctx);
	int err;

	if (!e->sw_words) {
		e->sw_words = calloc(n, sizeof(*e->sw_words));
		e->sw_counters = calloc(n, sizeof(*e->sw_counters));
		e->consumed = calloc(n, sizeof(*e->consumed));
		if (!e->sw_words || !e->sw_counters || !e->consumed)
			return -ENOMEM;
	}
	err = ag_bucket_words(e->ctx, e->sw_words);
	if (!err)
		err = ag_counters_get_all(e->ctx, e->sw_counters);
	return err;
}

int activity_read(struct agd_engine *e)
{
	int err = read_all(e);

	if (err)
		e->opts.log(AGD_LOG_WARN, "idle agents: cannot read the buckets and counters (%s); "
			    "every agent starts idle 0", ag_errmsg());
	return err;
}

void activity_restore(struct agd_engine *e)
{
	__u32 n = ag_max_agents(e->ctx);
	__u64 now = wall_ms(), mono = mono_ms();
	struct entry *en;
	MDB_txn *txn = NULL;
	size_t i;

	TAB_FOREACH(e, i, en)
		en->active_at = mono;
	if (!e->sw_words || agd_store_read_begin(&e->st, &txn))
		return;
	TAB_FOREACH(e, i, en) {
		struct agd_activity_rec a;
		__u64 since;

		if (en->map_rate < 0 || en->slot >= n)
			continue;
		en->snap_word = e->sw_words[en->slot];
		en->snap_packets = packets_of(&e->sw_counters[en->slot]);
		en->snap_ok = true;
		if (agd_store_activity_get(&e->st, txn, en->name, &a) != 1)
			continue; /* never stored idle */
		en->log_mark = a.log_seq;
		if (a.word != en->snap_word || a.packets != en->snap_packets)
			continue; /* active while no daemon ran */
		since = a.since_ms > en->rec.updated_ms ? a.since_ms : en->rec.updated_ms;
		en->idle_ms = now > since ? now - since : 0;
		en->idle_stored = true;
		en->active_at = mono - (en->idle_ms < mono ? en->idle_ms : mono);
	}
	agd_store_txn_end(txn);
	e->last_sweep_ms = mono_ms();
}

/* ---- expiring ---------------------------------------------------------------------- */

static void count(struct agd_engine *e, __u64 *what, __u64 n)
{
	pthread_mutex_lock(&e->slock);
	*what += n;
	pthread_mutex_unlock(&e->slock);
}

static int rule_of_expiring(void *arg, const struct agd_rule_rec_key *key, const char *agent)
{
	struct entry *en = tab_find(arg, agent);

	return en && en->expiring;
}

static json_t *expiry_json(struct agd_engine *e, const struct entry *en, const char *reason)
{
	json_t *o = policy_json(e, &en->rec);

	if (o) {
		json_object_set_new(o, "idle_s", json_real((double)en->idle_ms / 1000));
		json_object_set_new(o, "ttl", json_integer((json_int_t)(ttl_ms(e, en) / 1000)));
		json_object_set_new(o, "reason", json_string(reason));
	}
	return o;
}

/* Puts a victim back as it was: its bucket (full) and rules. */
static void restore(struct agd_engine *e, struct entry *en, const struct ag_rule *rules,
		    size_t n_rules, __u32 old_slot)
{
	size_t i;

	en->map_rate = -1;
	en->expiring = false;
	if (push_to_map(e, en, true))
		return;
	for (i = 0; i < n_rules; i++)
		if (rules[i].slot == old_slot)
			ag_rule_add(e->ctx, &rules[i], en->name);
}

/*
 * Removes v[0..n) (under e->lock): the maps first (a crash before the
 * commit brings them back), then one transaction: records, activity,
 * rules, histories, one audit line each. On a failed commit they are put
 * back. The removed are reported in ev (n of them room); returns how many.
 */
static size_t expire_locked(struct agd_engine *e, struct entry **v, size_t n, bool evicted,
			    __u64 seq, struct agd_removal_event *ev)
{
	const char *reason = evicted ? "evicted" : "ttl";
	const char *action = evicted ? "agent.evict" : "agent.expire";
	struct ag_rule *rules = NULL;
	__u32 *slots = calloc(n ? n : 1, sizeof(*slots));
	char **lines = calloc(n ? n : 1, sizeof(*lines));
	size_t n_rules = 0, i, k = 0;
	MDB_txn *txn = NULL;
	__u64 now = wall_ms();
	int err = 0;

	if (!slots || !lines) {
		free(slots);
		free(lines);
		return 0;
	}
	if (ag_rule_list(e->ctx, &rules, &n_rules))
		n_rules = 0;
	for (i = 0; i < n; i++) {
		struct entry *en = v[i];

		slots[i] = en->slot;
		if (en->map_rate >= 0) {
			budget_read_count(e, en->name, en->slot);
			err = ag_agent_delete(e->ctx, en->name);
			if (err && err != -ENOENT) {
				e->opts.log(AGD_LOG_WARN, "agent '%s' not expired: %s", en->name,
					    ag_errmsg());
				count(e, &e->stats.expire_errors, 1);
				v[i] = NULL;
				continue;
			}
		}
		en->map_rate = -1;
		en->expiring = true;
	}
	err = txn_begin(e, &txn);
	for (i = 0; i < n && !err; i++) {
		if (!v[i])
			continue;
		err = store_agent_del(e, txn, v[i]->name);
		if (err == -ENOENT)
			err = 0;
		if (!err)
			err = audit(e, txn, "agentgated", action, v[i]->name,
				    expiry_json(e, v[i], reason), NULL, &lines[i]);
		if (!err)
			err = agd_store_hist_del(&e->st, txn, v[i]->name);
		if (!err) /* its parent and quota stay, with the count */
			err = budget_store_kept(e, txn, v[i]->name);
	}
	if (!err)
		err = agd_store_rules_foreach(&e->st, txn, rule_of_expiring, e);
	if (!err) {
		err = txn_commit(e, txn, seq);
		txn = NULL;
	}
	if (txn)
		agd_store_txn_end(txn);
	if (err) {
		store_log(e, err, "idle agents not %s", evicted ? "evicted" : "expired");
		for (i = 0; i < n; i++)
			if (v[i]) {
				restore(e, v[i], rules, n_rules, slots[i]);
				free(lines[i]);
				count(e, &e->stats.expire_errors, 1);
			}
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (!v[i])
			continue;
		audit_file(e, lines[i]);
		snprintf(ev[k].agent, sizeof(ev[k].agent), "%s", v[i]->name);
		ev[k].reason = reason;
		ev[k].idle_ms = v[i]->idle_ms;
		ev[k].ts_ms = now;
		k++;
		tab_remove(e, v[i]);
	}
	count(e, evicted ? &e->stats.agents_evicted : &e->stats.agents_expired, k);
out:
	free(rules);
	free(slots);
	free(lines);
	return k;
}

static void report(struct agd_engine *e, const struct agd_removal_event *ev, size_t n)
{
	size_t i;

	for (i = 0; i < n && i < 3; i++)
		e->opts.log(AGD_LOG_INFO, "agent '%s' %s after %.1f s idle", ev[i].agent,
			    !strcmp(ev[i].reason, "ttl") ? "expired" : "evicted",
			    (double)ev[i].idle_ms / 1000);
	if (n > 3)
		e->opts.log(AGD_LOG_INFO, "and %zu more agents %s", n - 3,
			    !strcmp(ev[0].reason, "ttl") ? "expired" : "evicted");
}

/* ---- evicting ---------------------------------------------------------------------- */

void make_room(struct agd_engine *e, size_t need)
{
	__u32 max = ag_max_agents(e->ctx);
	struct agd_removal_event *ev;
	struct entry **v, *en;
	size_t free_slots = e->count < max ? max - e->count : 0, want, got = 0, i, j, k;

	/* In a fleet every host must remove the same agents at the same point
	 * of the log: not here. */
	if (!e->opts.evict_when_full || need <= free_slots || e->replicated)
		return;
	want = need - free_slots;
	if (want > EXPIRE_BATCH)
		want = EXPIRE_BATCH;
	v = calloc(want, sizeof(*v));
	ev = calloc(want, sizeof(*ev));
	if (!v || !ev)
		goto out;
	/* The `want` with a TTL whose last activity is oldest, kept sorted,
	 * oldest first: a rating or operator change is known to the
	 * millisecond, traffic to the sweep that saw it. */
	TAB_FOREACH(e, i, en) {
		if (en->new_in_batch || en->map_rate < 0 || !ttl_ms(e, en))
			continue;
		if (got == want && en->active_at >= v[got - 1]->active_at)
			continue;
		j = got < want ? got++ : got - 1;
		while (j > 0 && v[j - 1]->active_at > en->active_at) {
			v[j] = v[j - 1];
			j--;
		}
		v[j] = en;
	}
	k = expire_locked(e, v, got, true, 0, ev);
	if (k) {
		report(e, ev, k);
		/* Under the lock, like the rest of this batch's changes; the
		 * observer only copies. */
		if (e->robs)
			e->robs(e->robs_arg, ev, k);
	}
out:
	free(v);
	free(ev);
}

/* ---- the sweep --------------------------------------------------------------------- */

/* Stores the start of each idle spell not stored yet (one transaction). */
static void store_idle(struct agd_engine *e, __u64 now)
{
	struct entry *en;
	MDB_txn *txn = NULL;
	size_t i, n = 0;
	int err = 0;

	TAB_FOREACH(e, i, en) {
		struct agd_activity_rec a = { .version = AGD_STORE_VERSION };

		if (en->idle_stored || !en->idle_ms || !en->snap_ok || en->map_rate < 0)
			continue;
		if (!txn && (err = txn_begin(e, &txn)))
			break;
		a.since_ms = now - en->idle_ms;
		a.word = en->snap_word;
		a.packets = en->snap_packets;
		a.log_seq = en->log_mark;
		err = agd_store_activity_put(&e->st, txn, en->name, &a);
		if (err)
			break;
		en->idle_stored = true;
		n++;
	}
	if (txn && !err) {
		err = txn_commit(e, txn, 0);
		txn = NULL;
	}
	if (txn)
		agd_store_txn_end(txn);
	if (err) {
		TAB_FOREACH(e, i, en)
			en->idle_stored = false;
		store_log(e, err, "idle agents: %zu idle spells not stored", n);
	}
}

/* ---- in a fleet -----------------------------------------------------------------------
 *
 * Every host applies the same log, so expiry goes through it: a host that
 * sees traffic (or a consume, a reset) of an agent tells the log
 * (agent.touch) at most once per G = TTL/8 (at least 1 s); every host
 * applies a touch as activity. A host where the agent has been idle for
 * TTL + G proposes agent.expire with the sequence of the agent's last log
 * entry; every host expires it only if that is still its last one, so a
 * touch or a rating that reached the log first keeps it everywhere. An
 * agent another host last saw active G before its last touch has been idle
 * at least TTL when the proposal is made. */

struct fleet_ops {
	char (*touch)[AG_NAME_MAX + 1];
	size_t n_touch;
	struct {
		char name[AG_NAME_MAX + 1];
		__u64 mark;
	} *expire;
	size_t n_expire;
};

static __u64 fleet_g(__u64 ttl)
{
	return ttl / 8 > 1000 ? ttl / 8 : 1000;
}

static void fleet_note(struct agd_engine *e, struct entry *en, __u64 ttl, __u64 now,
		       struct fleet_ops *fl)
{
	if (!ttl)
		return;
	if (en->local_active && now - en->touch_sent >= fleet_g(ttl) && fl->n_touch < EXPIRE_BATCH) {
		if (!fl->touch)
			fl->touch = calloc(EXPIRE_BATCH, sizeof(*fl->touch));
		if (fl->touch) {
			snprintf(fl->touch[fl->n_touch++], AG_NAME_MAX + 1, "%s", en->name);
			en->touch_sent = now;
			en->local_active = false;
		}
	}
	if (en->idle_ms >= ttl + fleet_g(ttl) && fl->n_expire < EXPIRE_BATCH) {
		if (!fl->expire)
			fl->expire = calloc(EXPIRE_BATCH, sizeof(*fl->expire));
		if (fl->expire) {
			snprintf(fl->expire[fl->n_expire].name, AG_NAME_MAX + 1, "%s", en->name);
			fl->expire[fl->n_expire++].mark = en->log_mark;
		}
	}
}

/* Outside the engine's lock: each op waits until this host applied it. */
static void fleet_send(struct agd_engine *e, struct fleet_ops *fl)
{
	struct agd_op *op = calloc(1, sizeof(*op));
	size_t i;

	for (i = 0; op && i < fl->n_touch + fl->n_expire; i++) {
		struct agd_err oe = { 0 };
		bool created;
		int err;

		memset(op, 0, sizeof(*op));
		op->kind = i < fl->n_touch ? AGD_OP_AGENT_TOUCH : AGD_OP_AGENT_EXPIRE;
		snprintf(op->agent, sizeof(op->agent), "%s", i < fl->n_touch ? fl->touch[i] :
			 fl->expire[i - fl->n_touch].name);
		if (op->kind == AGD_OP_AGENT_EXPIRE)
			op->mark = fl->expire[i - fl->n_touch].mark;
		snprintf(op->subject, sizeof(op->subject), "agentgated");
		err = e->repl.op(e->repl.arg, op, &created, &oe);
		if (err) {
			e->opts.log(AGD_LOG_WARN, "idle agents: %s of '%s' not in the fleet's log "
				    "(%s); the next sweep tries again",
				    op->kind == AGD_OP_AGENT_TOUCH ? "activity" : "expiry", op->agent,
				    oe.msg);
			break; /* the log is unreachable: the rest waits too */
		}
	}
	free(op);
	free(fl->touch);
	free(fl->expire);
}

int mark_logged(struct agd_engine *e, MDB_txn *txn, const char *name, struct entry *en,
		__u64 seq)
{
	struct agd_activity_rec a = { .version = AGD_STORE_VERSION, .since_ms = wall_ms(),
				      .log_seq = seq };

	if (!seq)
		return 0;
	if (en) {
		en->log_mark = seq;
		a.word = en->snap_word;
		a.packets = en->snap_packets;
	}
	return agd_store_activity_put(&e->st, txn, name, &a);
}

int apply_touch(struct agd_engine *e, __u64 seq, const char *name, struct agd_err *oe)
{
	struct entry *en;
	MDB_txn *txn;
	int err;

	pthread_mutex_lock(&e->lock);
	en = tab_find(e, name);
	if (!en) { /* expired or deleted before the touch reached the log */
		pthread_mutex_unlock(&e->lock);
		return 0;
	}
	touch(en);
	err = txn_begin(e, &txn);
	if (!err) {
		err = mark_logged(e, txn, name, en, seq);
		if (!err)
			err = txn_commit(e, txn, seq);
		else
			agd_store_txn_end(txn);
	}
	pthread_mutex_unlock(&e->lock);
	return err ? agd_store_fail(oe, err, "activity of '%s' not stored", name) : 0;
}

int apply_expire(struct agd_engine *e, __u64 seq, const char *name, __u64 mark,
		 struct agd_err *oe)
{
	struct agd_removal_event ev;
	struct entry *en;
	bool due = false;
	size_t done = 0;

	pthread_mutex_lock(&e->lock);
	en = tab_find(e, name);
	if (en && en->log_mark == mark) {
		due = true;
		done = expire_locked(e, &en, 1, false, seq, &ev);
	} else if (en) { /* active since the proposal: the log says so first */
		count(e, &e->stats.expire_stale, 1);
	}
	pthread_mutex_unlock(&e->lock);
	if (done) {
		report(e, &ev, 1);
		if (e->robs)
			e->robs(e->robs_arg, &ev, 1);
	}
	return due && !done ? agd_errf(oe, -EIO, "agent '%s' not expired (see the log)", name) : 0;
}

static size_t sweep_once(struct agd_engine *e)
{
	__u32 max = ag_max_agents(e->ctx);
	__u64 t0 = cpu_ns(), now, step, every, shortest = 0, wall;
	struct fleet_ops fl = { 0 };
	struct agd_removal_event *ev = NULL;
	struct entry **v = NULL, *en;
	size_t i, n = 0, done = 0;

	if (read_all(e)) {
		e->opts.log(AGD_LOG_WARN, "idle agents: sweep skipped: %s", ag_errmsg());
		return 0;
	}
	pthread_mutex_lock(&e->lock);
	now = mono_ms();
	wall = wall_ms();
	every = e->sweep_every_ms ? e->sweep_every_ms : SWEEP_MAX_MS;
	step = now > e->last_sweep_ms ? now - e->last_sweep_ms : 0;
	if (step > 2 * every)
		step = 2 * every;
	e->last_sweep_ms = now;
	v = calloc(EXPIRE_BATCH, sizeof(*v));
	TAB_FOREACH(e, i, en) {
		__u64 word, packets, ttl;

		if (en->map_rate < 0 || en->slot >= max)
			continue;
		word = e->sw_words[en->slot];
		packets = packets_of(&e->sw_counters[en->slot]);
		if (atomic_exchange_explicit(&e->consumed[en->slot], 0, memory_order_relaxed)) {
			touch(en);
			en->local_active = true;
		}
		if (!en->snap_ok || word != en->snap_word || packets != en->snap_packets) {
			if (en->snap_ok) {
				touch(en);
				en->local_active = true;
			}
			en->snap_word = word;
			en->snap_packets = packets;
			en->snap_ok = true;
		} else {
			en->idle_ms += step;
		}
		ttl = ttl_ms(e, en);
		if (ttl && (!shortest || ttl < shortest))
			shortest = ttl;
		if (e->replicated) {
			fleet_note(e, en, ttl, now, &fl);
			continue;
		}
		if (ttl && en->idle_ms >= ttl && v && n < EXPIRE_BATCH)
			v[n++] = en;
	}
	if (e->opts.auto_create && e->defaults.ttl > 0 &&
	    (!shortest || e->defaults.ttl * 1000 < shortest))
		shortest = (__u64)e->defaults.ttl * 1000;
	every = shortest ? shortest / 4 : SWEEP_MAX_MS;
	e->sweep_every_ms = every < SWEEP_MIN_MS ? SWEEP_MIN_MS :
			    every > SWEEP_MAX_MS ? SWEEP_MAX_MS : every;
	/* Expiry through the fleet's log is the fleet's: not here. */
	if (n && !e->replicated && (ev = calloc(n, sizeof(*ev))))
		done = expire_locked(e, v, n, false, 0, ev);
	store_idle(e, wall);
	pthread_mutex_unlock(&e->lock);
	fleet_send(e, &fl);
	revoked_prune(e, (int64_t)time(NULL));
	if (done) {
		report(e, ev, done);
		if (e->robs)
			e->robs(e->robs_arg, ev, done);
	}
	free(ev);
	free(v);
	pthread_mutex_lock(&e->slock);
	e->stats.sweeps++;
	e->stats.sweep_cpu_ns += cpu_ns() - t0;
	pthread_mutex_unlock(&e->slock);
	return done;
}

static void *sweeper(void *arg)
{
	struct agd_engine *e = arg;

	pthread_mutex_lock(&e->swlock);
	while (!e->sw_stop) {
		struct timespec until;
		__u64 every = e->sweep_every_ms ? e->sweep_every_ms : SWEEP_MIN_MS;

		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += every / 1000;
		until.tv_nsec += (long)(every % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		if (pthread_cond_timedwait(&e->swcv, &e->swlock, &until) != ETIMEDOUT)
			continue;
		sweep_once(e); /* under swlock: one sweep at a time */
		budgets_save_counts(e);
	}
	pthread_mutex_unlock(&e->swlock);
	return NULL;
}

size_t agd_engine_sweep(struct agd_engine *e)
{
	size_t n;

	pthread_mutex_lock(&e->swlock);
	n = sweep_once(e);
	pthread_mutex_unlock(&e->swlock);
	return n;
}

int sweeper_start(struct agd_engine *e, struct agd_err *errbuf)
{
	pthread_condattr_t ca;
	int err;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e->swcv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&e->swlock, NULL);
	err = -pthread_create(&e->sweeper, NULL, sweeper, e);
	if (err)
		return agd_errf(errbuf, err, "cannot start the idle agents' sweep: %s",
				strerror(-err));
	e->sweeper_started = true;
	return 0;
}

void sweeper_stop(struct agd_engine *e)
{
	if (!e->sweeper_started)
		return;
	pthread_mutex_lock(&e->swlock);
	e->sw_stop = true;
	pthread_cond_signal(&e->swcv);
	pthread_mutex_unlock(&e->swlock);
	pthread_join(e->sweeper, NULL);
	e->sweeper_started = false;
	pthread_mutex_destroy(&e->swlock);
	pthread_cond_destroy(&e->swcv);
}

void agd_engine_observe_removals(struct agd_engine *e, agd_removal_observer fn, void *arg)
{
	pthread_mutex_lock(&e->lock);
	e->robs = fn;
	e->robs_arg = arg;
	pthread_mutex_unlock(&e->lock);
}
