// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Ratings: the apply thread and its group commits, the queue in front of
 * it, the agents' histories of ratings, the observers of committed batches. */
#include <errno.h>
#include <math.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_int.h"
#include "voices.h"

/* A rating the policy applied in the current batch (not pinned, not a
 * duplicate), for its agent's history (hist_rated). */
struct hist_pend {
	const struct agd_rating *r;
	double before, after;
	__u32 next; /* the agent's next one in this batch */
};

const double agd_apply_bucket_le[AGD_APPLY_BUCKETS] = {
	0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
	0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1,
};

/* ---- applying ratings ------------------------------------------------------ */

static void save_undo(struct agd_engine *e, struct entry *en, struct entry **touched)
{
	if (en->batch == e->batch_serial)
		return;
	en->batch = e->batch_serial;
	en->undo = en->rec;
	memcpy(en->tally_undo, en->tally, sizeof(en->tally));
	en->touched_next = *touched;
	*touched = en;
}

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

static void tally_anonymous(struct agd_job *job, struct entry *en)
{
	job->anonymous++;
	if (en)
		en->tally[AGD_TALLY_REFUSED_ANONYMOUS]++;
}

/* Phase 1, per job: every agent it names exists, or is created now (in
 * the maps first: a slot is what can run out). On refusal, agents this job
 * created are removed again and the job fails whole. */
static int admit_job(struct agd_engine *e, MDB_txn *txn, struct agd_job *job,
		     struct entry **touched)
{
	size_t i;
	int err = 0;

	for (i = 0; i < job->n; i++) {
		const struct agd_rating *r = &job->items[i];
		struct entry *en = tab_find(e, r->agent);

		if (!r->user[0] && e->opts.anonymous == AGD_ANON_REFUSE) {
			if (job->item_err) {
				tally_anonymous(job, en);
				job->item_err[i] = -EINVAL;
				continue;
			}
			for (size_t j = i; j < job->n; j++) /* the request is refused whole */
				if (!job->items[j].user[0])
					tally_anonymous(job, tab_find(e, job->items[j].agent));
			snprintf(job->err.msg, sizeof(job->err.msg),
				 "item %zu: field 'user': required (ratings without a user are "
				 "refused: --anonymous-ratings refuse)", i);
			err = -EINVAL;
			break;
		}
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
				err = agd_store_fail(&job->err, d, "item %zu", i);
				break;
			}
			if (d && job->item_err) {
				job->item_err[i] = -EIDRM;
				continue;
			}
			if (d) {
				snprintf(job->err.msg, sizeof(job->err.msg),
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
			snprintf(job->err.msg, sizeof(job->err.msg),
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
		en->rec.implicit = 1; /* made by a rating: it inherits --agent-ttl */
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
			snprintf(job->err.msg, sizeof(job->err.msg), "item %zu: cannot create agent '%s': %s",
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

/*
 * The change window (--rating-change-window): from an agent's first rating
 * in it, on the rating's time (its log time in a fleet, so every host
 * agrees), stored with the agent. It bounds the rate to base * (1 +- F)
 * (--rating-max-change: a move past the bound stops there; the rating
 * still counts and its voice is kept) and counts the users rating the agent
 * for the first time, down and up (--rating-wave).
 */
static int window_at(struct entry *en, struct agd_store *st, MDB_txn *txn, double before,
		     __u64 t, __u64 window_ms)
{
	if (!en->win_known) {
		int rc = agd_store_window_get(st, txn, en->name, &en->win);

		if (rc < 0)
			return rc;
		if (!rc)
			en->win = (struct agd_window_rec){ .start_ms = -1 };
		en->win_known = true;
	}
	if (en->win.start_ms < 0 || (__s64)t - en->win.start_ms >= (__s64)window_ms ||
	    (__s64)t < en->win.start_ms) {
		en->win = (struct agd_window_rec){ .start_ms = (__s64)t, .base = before };
		en->win_dirty = true;
	}
	return 0;
}

static void damp(struct entry *en, double before, double max_change, struct agd_job *job)
{
	double lo = en->win.base * (1 - max_change);
	double hi = en->win.base * (1 + max_change), rate = en->rec.rate;

	/* Never past the bound, never further out than it already was. */
	if (rate < before && rate < lo)
		rate = before < lo ? before : lo;
	if (rate > before && rate > hi)
		rate = before > hi ? before : hi;
	if (rate != en->rec.rate) {
		en->rec.rate = rate;
		en->win.damped++;
		en->win_dirty = true;
		en->tally[AGD_TALLY_DAMPED_WINDOW]++;
		job->damped++;
	}
}

/* A user's first rating of the agent in its window: a wave once
 * wave_users of them went one way. Flagged once per window; with
 * wave_hold the agent is pinned where it is (audited agent.hold), until an
 * operator unpins it. */
static int wave_count(struct agd_engine *e, MDB_txn *txn, struct entry *en, int score, __u64 t,
		      const struct agd_influence *inf)
{
	__u32 *n = score < AGD_SCORE_NEUTRAL ? &en->win.new_down : &en->win.new_up;
	struct agd_wave_event *w;
	char *line = NULL;
	int err;

	if (score == AGD_SCORE_NEUTRAL)
		return 0;
	(*n)++;
	en->win_dirty = true;
	if (en->win.wave || *n < inf->wave_users)
		return 0;
	en->win.wave = 1;
	if (e->waves_n < WAVES_MAX) {
		w = &e->waves[e->waves_n++];
		snprintf(w->agent, sizeof(w->agent), "%s", en->name);
		w->direction = score < AGD_SCORE_NEUTRAL ? "down" : "up";
		w->new_users = *n;
		w->window_start_ms = (__u64)en->win.start_ms;
		w->ts_ms = t;
		w->held = inf->wave_hold && !(en->rec.set & AGD_POL_PINNED && en->rec.pinned);
	}
	if (!inf->wave_hold || ((en->rec.set & AGD_POL_PINNED) && en->rec.pinned))
		return 0;
	en->rec.set |= AGD_POL_PINNED;
	en->rec.pinned = 1;
	err = audit(e, txn, "agentgated (rating wave)", "agent.hold", en->name,
		    json_pack("{s:b}", "pinned", 0),
		    json_pack("{s:b,s:s,s:I}", "pinned", 1, "wave",
			      score < AGD_SCORE_NEUTRAL ? "down" : "up", "new_users",
			      (json_int_t)*n), &line);
	if (!err && line && e->hold_n < WAVES_MAX)
		e->hold_lines[e->hold_n++] = line;
	else
		free(line);
	return err;
}

/* Whether --rating-user-cap cut a voice's move from `from` to `to`. */
static bool capped(int from, int to, double cap)
{
	return from != to && (fabs((double)(to - AGD_SCORE_NEUTRAL)) > cap ||
			      fabs((double)(from - AGD_SCORE_NEUTRAL)) > cap);
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
		struct agd_influence inf;
		double before;
		int from;

		/* the index slot of an id a few items on, read while this one is
		 * applied (each lookup of the index is a cache miss) */
		if (i + 8 < job->n && job->items[i + 8].id[0])
			agd_store_dedup_prefetch(&e->st, job->items[i + 8].id);
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
		from = AGD_SCORE_NEUTRAL; /* no voice yet: as a neutral one */
		if (r->user[0] || e->opts.anonymous == AGD_ANON_SHARED) {
			/* One voice per user: a new rating replaces the user's last. */
			int old;

			err = agd_voices_set(e->voices, r->agent, r->user, r->score,
					     r->ts_ms >= 0 ? r->ts_ms : (__s64)now, &old);
			if (err)
				return err;
			if (old) {
				from = old;
				job->replaced++;
			}
		}
		influence_of(e, en, &inf);
		en->rec.rate = agd_policy_rate_voiced(&p, en->rec.rate, from, r->score,
						      inf.user_cap);
		if (!p.pinned && capped(from, r->score, inf.user_cap)) {
			en->tally[AGD_TALLY_DAMPED_USER_CAP]++;
			job->capped++;
		}
		if (inf.max_change > 0 || inf.wave_users) {
			/* The rating's own log time in a fleet: batches differ
			 * between hosts, the log does not. */
			__u64 t = job->item_ms ? job->item_ms[i] : now;

			err = window_at(en, &e->st, txn, before, t, inf.window_ms);
			if (!err && inf.max_change > 0 && !p.pinned && en->rec.rate != before)
				damp(en, before, inf.max_change, job);
			/* A user's first voice, or the first that leaves a
			 * neutral one (which moved and counted nothing: else users
			 * would pass the count by rating 3 first). */
			if (!err && inf.wave_users && from == AGD_SCORE_NEUTRAL)
				err = wave_count(e, txn, en, r->score, t, &inf);
			if (err)
				return err;
		}
		if (!p.pinned && (err = hist_note(e, en, r, before)))
			return err;
		en->rec.count++;
		en->rec.score_sum += r->score;
		/* A client's ts counts up to the time it is applied (the rating's
		 * log time in a fleet, the same on every host): one from the
		 * future would stay the last for good. */
		{
			__s64 at = (__s64)(job->item_ms ? job->item_ms[i] : now);
			__s64 ts = r->ts_ms >= 0 && r->ts_ms < at ? r->ts_ms : at;

			if (ts > en->rec.last_ms)
				en->rec.last_ms = ts;
		}
		en->rec.updated_ms = now;
		touch(en);
		if (job->item_seq)
			en->log_mark = job->item_seq[i];
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
			memcpy(en->tally, en->tally_undo, sizeof(en->tally));
			en->win_known = en->win_dirty = false; /* read again from the store */
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
	if (job->err.code) {
		e->stats.ratings_rejected += job->n;
	} else if (job->item_err) {
		size_t i;

		for (i = 0; i < job->n; i++)
			e->stats.ratings_rejected += job->item_err[i] < 0;
	}
	e->stats.ratings_applied += job->applied;
	e->stats.ratings_replaced += job->replaced;
	e->stats.tally[AGD_TALLY_DAMPED_WINDOW] += job->damped;
	e->stats.tally[AGD_TALLY_DAMPED_USER_CAP] += job->capped;
	e->stats.tally[AGD_TALLY_REFUSED_ANONYMOUS] += job->anonymous;
	e->stats.ratings_duplicate += job->duplicates;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* How many agents the batch would create (distinct unknown names): with
 * eviction on, room is made for them before the batch's transaction. */
static size_t new_agents(struct agd_engine *e, struct agd_job *jobs)
{
	size_t n = 0, cap = 0, i, distinct = 0;
	const char **names = NULL, **more;
	struct agd_job *job;

	for (job = jobs; job; job = job->next)
		for (i = 0; i < job->n; i++) {
			if (tab_find(e, job->items[i].agent))
				continue;
			if (n == cap) {
				cap = cap ? 2 * cap : 16;
				more = realloc(names, cap * sizeof(*names));
				if (!more) {
					free(names);
					return n;
				}
				names = more;
			}
			names[n++] = job->items[i].agent;
		}
	if (n > 1)
		qsort(names, n, sizeof(*names), by_name);
	for (i = 0; i < n; i++)
		distinct += !i || strcmp(names[i], names[i - 1]);
	free(names);
	return distinct;
}

/* The batch's waves: counted and logged (the observer gets them after). */
static void note_waves(struct agd_engine *e)
{
	size_t i;

	for (i = 0; i < e->waves_n; i++) {
		const struct agd_wave_event *w = &e->waves[i];

		e->opts.log(AGD_LOG_WARN, "agent '%s': a rating wave, %u users rating it %s for "
			    "the first time in its window%s", w->agent, w->new_users,
			    w->direction, w->held ? "; its rate is held (pinned) until an "
			    "operator unpins it" : "");
		pthread_mutex_lock(&e->slock);
		if (!strcmp(w->direction, "down"))
			e->stats.waves_down++;
		else
			e->stats.waves_up++;
		pthread_mutex_unlock(&e->slock);
	}
}

void agd_engine_observe_waves(struct agd_engine *e, agd_wave_observer fn, void *arg)
{
	pthread_mutex_lock(&e->lock);
	e->wobs = fn;
	e->wobs_arg = arg;
	pthread_mutex_unlock(&e->lock);
}

static void run_batch(struct agd_engine *e, struct agd_job *jobs)
{
	struct entry *touched = NULL, *en;
	struct agd_job *job;
	__u64 now = wall_ms(), with_ids = 0, done_ns, seq = 0, log_ms = 0;
	MDB_txn *txn = NULL;
	bool all_logged = true;
	size_t i;
	int err;

	for (job = jobs; job; job = job->next) {
		if (job->log_seq > seq)
			seq = job->log_seq;
		if (job->log_ms > log_ms)
			log_ms = job->log_ms;
		all_logged &= job->log_seq != 0;
	}
	if (log_ms)
		now = log_ms;
	pthread_mutex_lock(&e->lock);
	e->batch_serial++;
	e->ev_n = 0;
	e->hist_n = 0;
	e->waves_n = e->hold_n = 0;
	e->ev_on = e->obs && e->obs_wanted(e->obs_arg);
	if (e->opts.evict_when_full && e->opts.auto_create)
		make_room(e, new_agents(e, jobs));
	/* Entries of the fleet's log only: one sync a commit, not two. A power
	 * loss may then undo the last commit, never tear the store; the host
	 * applies those entries again from the log, after the sequence the
	 * store kept. */
	err = txn_begin_flags(e, &txn, all_logged ? MDB_NOMETASYNC : 0);
	for (job = jobs; job && !err; job = job->next) {
		job->serial = ++e->serial;
		job->err.code = admit_job(e, txn, job, &touched);
		for (i = 0; i < job->n; i++)
			with_ids += job->items[i].id[0] != 0;
	}
	for (job = jobs; job && !err; job = job->next)
		if (!job->err.code)
			err = apply_job(e, txn, job, now, &touched);
	if (!err && with_ids)
		err = agd_store_dedup_prune(&e->st, txn, now, e->opts.dedup_window_ms,
					   e->opts.dedup_max, 2 * with_ids + 64);
	for (en = touched; en && !err; en = en->touched_next) {
		err = agd_store_agent_put(&e->st, txn, en->name, &en->rec);
		if (!err && en->win_dirty)
			err = agd_store_window_put(&e->st, txn, en->name, &en->win);
		if (!err && seq) /* the log entries that touched it (fleet) */
			err = mark_logged(e, txn, en->name, en, en->log_mark);
	}
	for (en = touched; en && !err; en = en->touched_next)
		if (en->hist_batch == e->batch_serial && en->hist_n)
			err = hist_write(e, txn, en, now);
	if (!err) {
		err = txn_commit(e, txn, seq);
		txn = NULL;
	}
	if (err) {
		struct agd_err why;

		if (txn)
			agd_store_txn_end(txn);
		rollback(e, touched);
		voices_resync(e); /* the batch's voices out of memory again */
		for (i = 0; i < e->hold_n; i++)
			free(e->hold_lines[i]);
		e->waves_n = e->hold_n = 0;
		agd_store_fail(&why, err, "ratings not applied");
		e->opts.log(AGD_LOG_ERR, "%s", why.msg);
		for (job = jobs; job; job = job->next) {
			if (job->err.code)
				continue;
			job->err = why;
			job->err.code = err == -ENOSPC ? -ENOSPC : -EIO;
			job->applied = job->duplicates = job->replaced = job->damped = job->capped = 0;
		}
	} else {
		for (en = touched; en; en = en->touched_next) {
			en->new_in_batch = false;
			en->win_dirty = false;
			push_to_map(e, en, false);
		}
		for (job = jobs; job; job = job->next)
			fill_job_agents(e, job);
		for (i = 0; i < e->hold_n; i++)
			audit_file(e, e->hold_lines[i]);
		e->hold_n = 0;
		note_waves(e);
	}
	pthread_mutex_unlock(&e->lock);
	if (!err && e->ev_n)
		e->obs(e->obs_arg, e->ev, e->ev_n);
	if (!err && e->waves_n && e->wobs)
		e->wobs(e->wobs_arg, e->waves, e->waves_n);

	done_ns = ag_now_ns();
	pthread_mutex_lock(&e->slock);
	for (job = jobs; job; job = job->next)
		observe(e, job, done_ns);
	pthread_mutex_unlock(&e->slock);
}

void *apply_thread(void *arg)
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
		/* Once the batch is answered: the voice log folded when due. */
		pthread_mutex_lock(&e->lock);
		voices_fold(e, false);
		pthread_mutex_unlock(&e->lock);
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
	agd_err_clear(&job->err);
	job->applied = job->duplicates = job->replaced = job->damped = job->capped = 0;
	job->anonymous = 0;
	memset(&job->routed, 0, sizeof(job->routed));
	job->agents = NULL;
	job->n_agents = 0;
}

/* Into the apply thread's queue, with the job's log position as set. */
/* wait: for room in a full queue; else -EAGAIN then. */
static int enqueue_job(struct agd_engine *e, struct agd_job *job, bool wait)
{
	agd_job_reset(job);
	pthread_mutex_lock(&e->qlock);
	/* Backpressure: wait for room, but never refuse a job to an empty queue. */
	while (!e->stopping && e->queued && e->queued + job->n > e->opts.queue_max) {
		if (!wait) {
			pthread_mutex_unlock(&e->qlock);
			return -EAGAIN;
		}
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

static int enqueue(struct agd_engine *e, struct agd_job *job)
{
	return enqueue_job(e, job, true);
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
		err = job->err.code;
	}
	sem_destroy(&done);
	return err;
}

int agd_engine_queue(struct agd_engine *e, struct agd_job *job)
{
	job->log_seq = job->log_ms = 0; /* a local job */
	return enqueue(e, job);
}

int agd_engine_try_queue(struct agd_engine *e, struct agd_job *job)
{
	job->log_seq = job->log_ms = 0;
	return enqueue_job(e, job, false);
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

/* ---- rating jobs before the log (the fleet) ---------------------------------- */

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
