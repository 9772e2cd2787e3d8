// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Rule feeds in the engine (engine.h): binding a feed to an agent, replacing
 * its set in the maps and the store in one step, the feeds in memory for
 * explain and the metrics, and their part of the start (load, the sets back
 * into the maps, not adopting a feed's rule as a hand rule).
 *
 * A feed's rules are portless prefixes. The maps do not say who made a
 * rule: the store does (the rules database holds the hand rules, the feeds
 * database each feed's set). A prefix both in an agent's feed and among its
 * hand rules is one map entry that stays while either wants it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

const char *const agd_feed_reason_names[AGD_FEED_REASON__N] = {
#define X(id, name) [AGD_FEED_##id] = name,
	AGD_FEED_REASON_LIST(X)
#undef X
};

static struct feed_entry *feed_new(struct agd_engine *e, struct entry *en)
{
	struct feed_entry *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	snprintf(f->info.agent, sizeof(f->info.agent), "%s", en->name);
	f->info.reason = -1;
	f->next = e->feeds;
	if (e->feeds)
		e->feeds->prev = f;
	e->feeds = f;
	e->n_feeds++;
	en->feed = f;
	return f;
}

void feed_forget(struct agd_engine *e, struct entry *en)
{
	struct feed_entry *f = en->feed;

	if (!f)
		return;
	if (f->prev)
		f->prev->next = f->next;
	else
		e->feeds = f->next;
	if (f->next)
		f->next->prev = f->prev;
	e->n_feeds--;
	agd_feed_set_free(&f->set);
	free(f);
	en->feed = NULL;
}

void feeds_free(struct agd_engine *e)
{
	struct feed_entry *f = e->feeds, *next;

	for (; f; f = next) {
		next = f->next;
		agd_feed_set_free(&f->set);
		free(f);
	}
	e->feeds = NULL;
	e->n_feeds = 0;
}

/* The agent's hand rule for this prefix (port 0) is stored. */
static bool hand_rule(struct agd_engine *e, MDB_txn *txn, const struct ag_rule *r,
		      const char *agent)
{
	struct agd_rule_rec_key key;
	char owner[AG_NAME_MAX + 1];

	rule_key_of(r, &key);
	return !agd_store_rule_get(&e->st, txn, &key, owner, sizeof(owner)) && !strcmp(owner, agent);
}

/* The prefixes of set that leave the maps when the feed lets them go: the
 * agent's hand rules stay. */
static int without_hand_rules(struct agd_engine *e, MDB_txn *txn, const char *agent,
			      const struct agd_feed_set *set, struct agd_feed_set *out)
{
	size_t i;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < set->n; i++)
		if (!hand_rule(e, txn, &set->v[i], agent) && agd_feed_set_add(out, &set->v[i])) {
			agd_feed_set_free(out);
			return -ENOMEM;
		}
	return 0;
}

static json_t *feed_json(const struct agd_feed_meta *m, size_t prefixes)
{
	return json_pack("{s:s,s:I,s:I}", "source", m->source, "interval_ms",
			 (json_int_t)m->interval_ms, "prefixes", (json_int_t)prefixes);
}

static int store_feed(struct agd_engine *e, MDB_txn *txn, const char *agent,
		      const struct agd_feed_meta *m, const struct agd_feed_set *s)
{
	size_t len;
	void *val;
	int err = agd_feed_rec_encode(m, s, &val, &len);

	if (err)
		return err;
	err = agd_store_feed_put(&e->st, txn, agent, val, len);
	free(val);
	return err;
}

/* ---- binding and unbinding ---------------------------------------------------- */

int agd_engine_apply_feed_put(struct agd_engine *e, __u64 seq, const char *agent,
			     const struct agd_feed_meta *m, const char *subject, struct agd_err *oe)
{
	static const struct agd_feed_set empty;
	struct agd_feed_meta next;
	struct feed_entry *f;
	struct entry *en;
	char *line = NULL;
	json_t *before;
	MDB_txn *txn;
	int err;

	pthread_mutex_lock(&e->lock);
	en = tab_find(e, agent);
	if (!en) {
		pthread_mutex_unlock(&e->lock);
		return agd_errf(oe, -ENOENT, "unknown agent '%s'", agent);
	}
	f = en->feed;
	memset(&next, 0, sizeof(next));
	if (f) {
		next = f->info.meta;
		if (strcmp(next.source, m->source))
			next.etag[0] = next.last_modified[0] = 0; /* another source */
	}
	snprintf(next.source, sizeof(next.source), "%s", m->source);
	next.interval_ms = m->interval_ms;
	before = f ? feed_json(&f->info.meta, f->info.prefixes) : NULL;
	err = txn_begin(e, &txn);
	if (err) {
		json_decref(before);
		pthread_mutex_unlock(&e->lock);
		return agd_store_fail(oe, err, "state not changed");
	}
	if (!f)
		next.digest = agd_feed_digest(&empty);
	err = store_feed(e, txn, agent, &next, f ? &f->set : &empty);
	if (!err)
		err = audit(e, txn, subject, "feed.put", agent, before,
			    feed_json(&next, f ? f->info.prefixes : 0), &line);
	else
		json_decref(before);
	err = finish_op(e, txn, seq, err, line, oe);
	if (!err) {
		if (!f)
			f = feed_new(e, en);
		if (!f) /* stored: the next start has it */
			err = agd_errf(oe, -ENOMEM, "out of memory");
		else
			f->info.meta = next;
	}
	pthread_mutex_unlock(&e->lock);
	return err;
}

int agd_engine_apply_feed_delete(struct agd_engine *e, __u64 seq, const char *agent,
				const char *subject, struct agd_err *oe)
{
	struct ag_rules_swap_result res;
	struct agd_feed_set leave;
	struct feed_entry *f;
	struct entry *en;
	char *line = NULL;
	MDB_txn *txn;
	int err;

	pthread_mutex_lock(&e->lock);
	en = tab_find(e, agent);
	f = en ? en->feed : NULL;
	if (!f) {
		pthread_mutex_unlock(&e->lock);
		return agd_errf(oe, -ENOENT, en ? "agent '%s' has no rule feed" :
						  "unknown agent '%s'", agent);
	}
	err = txn_begin(e, &txn);
	if (err) {
		pthread_mutex_unlock(&e->lock);
		return agd_store_fail(oe, err, "state not changed");
	}
	err = without_hand_rules(e, txn, agent, &f->set, &leave);
	if (!err)
		err = agd_store_feed_del(&e->st, txn, agent);
	if (!err)
		err = audit(e, txn, subject, "feed.delete", agent,
			    feed_json(&f->info.meta, f->info.prefixes), NULL, &line);
	if (err) {
		agd_store_txn_end(txn);
		free(line);
		agd_feed_set_free(&leave);
		pthread_mutex_unlock(&e->lock);
		return agd_store_fail(oe, err, "state not changed");
	}
	/* Committed first: a crash after it leaves rules the next start
	 * adopts as hand rules, never a stored feed whose rules are gone. */
	err = finish_op(e, txn, seq, 0, line, oe);
	if (!err) {
		if (en->map_rate >= 0 &&
		    ag_rules_swap(e->ctx, agent, NULL, 0, leave.v, leave.n, NULL, &res))
			e->opts.log(AGD_LOG_WARN, "feed of '%s' deleted, its rules not all removed: %s",
				    agent, ag_errmsg());
		feed_forget(e, en);
	}
	agd_feed_set_free(&leave);
	pthread_mutex_unlock(&e->lock);
	return err;
}

/* ---- replacing the set ------------------------------------------------------------ */

static int check_set_source(const struct feed_entry *f, const char *agent,
			    const struct agd_feed_meta *m, struct agd_err *oe)
{
	if (m->source[0] && !f)
		return agd_errf(oe, -ESTALE, "agent '%s' has no rule feed (any more)", agent);
	if (m->source[0] && strcmp(f->info.meta.source, m->source))
		return agd_errf(oe, -ESTALE, "agent '%s' is fed from %s by now, not %s", agent,
				f->info.meta.source, m->source);
	if (!m->source[0] && f && f->info.meta.source[0])
		return agd_errf(oe, -EEXIST,
				"agent '%s' has its rules from the feed %s; delete the feed first",
				agent, f->info.meta.source);
	return 0;
}

/* Puts back what a swap did (the store refused the change). */
static void swap_back(struct agd_engine *e, const char *agent, const struct agd_feed_set *set,
		      const __u8 *state, const struct agd_feed_set *left)
{
	struct agd_feed_set added = { 0 };
	struct ag_rules_swap_result res;
	size_t i;

	for (i = 0; i < set->n; i++)
		if (state[i] == AG_SWAP_ADDED && agd_feed_set_add(&added, &set->v[i]))
			break;
	if (ag_rules_swap(e->ctx, agent, left->v, left->n, added.v, added.n, NULL, &res))
		e->opts.log(AGD_LOG_ERR, "feed of '%s': rules not put back as they were: %s",
			    agent, ag_errmsg());
	agd_feed_set_free(&added);
}

int agd_engine_apply_feed_set(struct agd_engine *e, __u64 seq, const char *agent,
			     const struct agd_feed_set *set, const struct agd_feed_meta *m,
			     const char *subject, struct agd_err *oe)
{
	struct agd_feed_set add = { 0 }, del = { 0 }, leave = { 0 }, empty = { 0 };
	struct ag_rules_swap_result res = { 0 };
	struct agd_feed_meta next;
	struct feed_entry *f;
	struct entry *en;
	char *line = NULL;
	__u8 *state = NULL;
	MDB_txn *txn = NULL;
	json_t *after;
	int err;

	pthread_mutex_lock(&e->lock);
	en = tab_find(e, agent);
	if (!en) {
		pthread_mutex_unlock(&e->lock);
		return agd_errf(oe, -ENOENT, "unknown agent '%s'", agent);
	}
	f = en->feed;
	err = check_set_source(f, agent, m, oe);
	if (err) {
		pthread_mutex_unlock(&e->lock);
		return err;
	}
	/* The set it has already (in a fleet every host that reads the source
	 * publishes what it read): nothing to do. */
	if (f && f->info.meta.applied_ms && agd_feed_digest(set) == f->info.meta.digest &&
	    set->n == f->set.n) {
		pthread_mutex_unlock(&e->lock);
		return 0;
	}
	state = calloc(set->n ? set->n : 1, 1);
	err = state ? agd_feed_diff(f ? &f->set : &empty, set, &add, &del) : -ENOMEM;
	if (!err)
		err = txn_begin(e, &txn);
	if (!err)
		err = without_hand_rules(e, txn, agent, &del, &leave);
	if (err)
		goto fail;
	/* The whole set goes in (what is there stays, what is missing comes
	 * back, another agent's prefix is a conflict), then what left. */
	if (en->map_rate >= 0) {
		err = ag_rules_swap(e->ctx, agent, set->v, set->n, leave.v, leave.n, state, &res);
		if (err) {
			err = agd_errf(oe, err, "%s", ag_errmsg());
			goto fail;
		}
	}
	memset(&next, 0, sizeof(next));
	if (f)
		next = f->info.meta;
	if (m->etag[0] || m->last_modified[0] || !m->source[0]) {
		snprintf(next.etag, sizeof(next.etag), "%s", m->etag);
		snprintf(next.last_modified, sizeof(next.last_modified), "%s", m->last_modified);
	}
	next.applied_ms = wall_ms();
	next.digest = agd_feed_digest(set);
	err = store_feed(e, txn, agent, &next, set);
	after = json_pack("{s:s,s:I,s:I,s:I,s:I}", "source", next.source, "prefixes",
			  (json_int_t)set->n, "added", (json_int_t)add.n, "removed",
			  (json_int_t)del.n, "conflicts", (json_int_t)res.conflicts);
	if (!err)
		err = audit(e, txn, subject, "feed.apply", agent, NULL, after, &line);
	else
		json_decref(after);
	err = finish_op(e, txn, seq, err, line, oe);
	txn = NULL;
	if (err) {
		if (en->map_rate >= 0)
			swap_back(e, agent, set, state, &leave);
		goto out;
	}
	if (!f)
		f = feed_new(e, en);
	if (f) {
		struct agd_feed_set copy = *set;

		copy.cap = set->n;
		copy.v = malloc((set->n ? set->n : 1) * sizeof(*copy.v));
		if (!copy.v) { /* stored: the next start has it */
			err = agd_errf(oe, -ENOMEM, "out of memory");
			goto out;
		}
		if (set->n)
			memcpy(copy.v, set->v, set->n * sizeof(*copy.v));
		agd_feed_set_free(&f->set);
		f->set = copy;
		f->info.meta = next;
		f->info.prefixes = set->n;
		f->info.conflicts = res.conflicts;
		snprintf(f->info.created, sizeof(f->info.created), "%s", set->created);
	}
	goto out;
fail:
	if (txn)
		agd_store_txn_end(txn);
	if (err == -ENOMEM && oe && !oe->msg[0])
		agd_errf(oe, err, "out of memory");
out:
	agd_feed_set_free(&add);
	agd_feed_set_free(&del);
	agd_feed_set_free(&leave);
	free(state);
	pthread_mutex_unlock(&e->lock);
	return err;
}

/* ---- dispatch: here, or through the fleet's log ------------------------------------ */

static int feed_op(struct agd_engine *e, struct agd_op *op, const char *agent, const char *subject,
		   struct agd_err *oe)
{
	const struct agd_replicator *r = agd_engine_replicator(e);
	bool created;

	snprintf(op->agent, sizeof(op->agent), "%s", agent);
	snprintf(op->subject, sizeof(op->subject), "%s", subject ? subject : "");
	if (r)
		return r->op(r->arg, op, &created, oe);
	return agd_engine_apply_op(e, op, 0, NULL, oe);
}

/* A source agentgated can read: an absolute path, file://PATH, http(s)://. */
static int check_source(const char *source, struct agd_err *oe)
{
	size_t len = strlen(source), i;

	if (!len || len > AGD_FEED_SOURCE_MAX)
		return agd_errf(oe, -EINVAL, "field 'source': a path or an http(s) URL of 1 to %d bytes",
				AGD_FEED_SOURCE_MAX);
	for (i = 0; i < len; i++)
		if ((unsigned char)source[i] <= ' ' || source[i] == 0x7f)
			return agd_errf(oe, -EINVAL, "field 'source': no spaces or control characters");
	if (source[0] == '/' || !strncmp(source, "file:///", 8) ||
	    !strncmp(source, "http://", 7) || !strncmp(source, "https://", 8))
		return 0;
	return agd_errf(oe, -EINVAL, "field 'source': an absolute path, file:///PATH, http:// or "
				     "https:// "
				     "URL, not '%.64s'", source);
}

int agd_engine_feed_put(struct agd_engine *e, const char *agent, const char *source,
		       __u64 interval_ms, const char *subject, struct agd_err *oe)
{
	struct agd_op op = { .kind = AGD_OP_FEED_PUT };
	int err = check_source(source, oe);

	if (err)
		return err;
	if (interval_ms && interval_ms < 1000)
		return agd_errf(oe, -EINVAL, "field 'interval': at least 1s");
	snprintf(op.feed.source, sizeof(op.feed.source), "%s", source);
	op.feed.interval_ms = interval_ms;
	return feed_op(e, &op, agent, subject, oe);
}

int agd_engine_feed_delete(struct agd_engine *e, const char *agent, const char *subject,
			  struct agd_err *oe)
{
	struct agd_op op = { .kind = AGD_OP_FEED_DELETE };

	return feed_op(e, &op, agent, subject, oe);
}

int agd_engine_feed_set(struct agd_engine *e, const char *agent, const struct agd_feed_set *set,
		       const struct agd_feed_meta *m, const char *subject, struct agd_err *oe)
{
	struct agd_op op = { .kind = AGD_OP_FEED_SET, .feed = *m, .feed_set = set };
	struct entry *en;
	int err = 0;

	/* Refused before the log what no host could apply. */
	pthread_mutex_lock(&e->lock);
	en = tab_find(e, agent);
	if (!en)
		err = agd_errf(oe, -ENOENT, "unknown agent '%s'", agent);
	else
		err = check_set_source(en->feed, agent, m, oe);
	pthread_mutex_unlock(&e->lock);
	return err ? err : feed_op(e, &op, agent, subject, oe);
}

/* ---- what the feeds look like ----------------------------------------------------- */

int agd_engine_feeds(struct agd_engine *e, struct agd_feed_info **out, size_t *n)
{
	struct feed_entry *f;
	size_t i = 0;

	pthread_mutex_lock(&e->lock);
	*out = calloc(e->n_feeds ? e->n_feeds : 1, sizeof(**out));
	if (!*out) {
		pthread_mutex_unlock(&e->lock);
		return -ENOMEM;
	}
	for (f = e->feeds; f && i < e->n_feeds; f = f->next)
		(*out)[i++] = f->info;
	*n = i;
	pthread_mutex_unlock(&e->lock);
	return 0;
}

int agd_engine_feed_info(struct agd_engine *e, const char *agent, struct agd_feed_info *out)
{
	struct entry *en;
	int err = -ENOENT;

	pthread_mutex_lock(&e->lock);
	en = tab_find(e, agent);
	if (en && en->feed) {
		*out = en->feed->info;
		err = 0;
	}
	pthread_mutex_unlock(&e->lock);
	return err;
}

void agd_engine_feed_checked(struct agd_engine *e, const char *agent, const char *source,
			    int reason, bool applied, const char *why, const char *etag,
			    const char *last_modified)
{
	struct feed_entry *f;
	struct entry *en;
	__u64 now = wall_ms();

	pthread_mutex_lock(&e->lock);
	en = tab_find(e, agent);
	f = en ? en->feed : NULL;
	if (!f || strcmp(f->info.meta.source, source)) {
		pthread_mutex_unlock(&e->lock);
		return; /* unbound or rebound meanwhile */
	}
	f->info.checked_ms = now;
	if (reason >= 0 && reason < AGD_FEED_REASON__N) {
		f->info.stale = true;
		f->info.reason = reason;
		f->info.failed[reason]++;
		snprintf(f->info.why, sizeof(f->info.why), "%s", why ? why : "");
	} else {
		f->info.stale = false;
		f->info.reason = -1;
		f->info.why[0] = 0;
		f->info.ok_ms = now;
		if (applied)
			f->info.applied++;
		else
			f->info.unchanged++;
		if (etag && etag[0])
			snprintf(f->info.meta.etag, sizeof(f->info.meta.etag), "%s", etag);
		if (last_modified && last_modified[0])
			snprintf(f->info.meta.last_modified, sizeof(f->info.meta.last_modified),
				 "%s", last_modified);
	}
	pthread_mutex_unlock(&e->lock);
}

/* ---- start -------------------------------------------------------------------------- */

struct load_walk {
	struct agd_engine *e;
	struct agd_err *errbuf;
};

static int load_one(void *arg, const char *agent, const void *val, size_t len)
{
	struct load_walk *w = arg;
	struct entry *en = tab_find(w->e, agent);
	struct agd_feed_meta m;
	struct agd_feed_set s = { 0 };
	struct feed_entry *f;
	struct agd_err why = { 0 };
	int err;

	if (!en) /* its agent is gone (deleting an agent deletes its feed) */
		return 0;
	err = agd_feed_rec_decode(val, len, &m, &s, &why);
	if (err)
		return agd_errf(w->errbuf, err == -ENOMEM ? err : -EUCLEAN,
				"the state store's feed of agent '%s' is damaged: %s", agent, why.msg);
	f = feed_new(w->e, en);
	if (!f) {
		agd_feed_set_free(&s);
		return agd_errf(w->errbuf, -ENOMEM, "out of memory");
	}
	f->set = s;
	f->info.meta = m;
	f->info.prefixes = s.n;
	snprintf(f->info.created, sizeof(f->info.created), "%s", s.created);
	return 0;
}

int feeds_load(struct agd_engine *e, MDB_txn *txn, struct agd_err *errbuf)
{
	struct load_walk w = { .e = e, .errbuf = errbuf };

	return agd_store_feeds_foreach(&e->st, txn, load_one, &w);
}

bool feeds_own_rule(struct agd_engine *e, const struct ag_rule *r, const char *agent)
{
	struct entry *en;

	if (r->port || !agent)
		return false;
	en = tab_find(e, agent);
	return en && en->feed && agd_feed_set_has(&en->feed->set, r);
}

void feeds_restore(struct agd_engine *e)
{
	struct feed_entry *f;

	for (f = e->feeds; f; f = f->next) {
		struct ag_rules_swap_result res;

		if (ag_rules_swap(e->ctx, f->info.agent, f->set.v, f->set.n, NULL, 0, NULL, &res)) {
			e->opts.log(AGD_LOG_WARN, "feed of '%s': its rules not all back in the maps: "
				    "%s", f->info.agent, ag_errmsg());
			continue;
		}
		f->info.conflicts = res.conflicts;
		if (res.added)
			e->opts.log(AGD_LOG_INFO, "feed of '%s': %zu rule(s) put back into the maps",
				    f->info.agent, res.added);
	}
}

/* ---- JSON ------------------------------------------------------------------------------ */

void *agd_feed_info_json(const struct agd_feed_info *fi)
{
	json_t *failed = json_object(), *o;
	int i;

	for (i = 0; i < AGD_FEED_REASON__N; i++)
		json_object_set_new(failed, agd_feed_reason_names[i],
				    json_integer((json_int_t)fi->failed[i]));
	o = json_pack("{s:s,s:s,s:I,s:I,s:I,s:s,s:s}", "agent", fi->agent, "source",
		      fi->meta.source, "interval_s", (json_int_t)(fi->meta.interval_ms / 1000),
		      "prefixes", (json_int_t)fi->prefixes, "conflicts", (json_int_t)fi->conflicts,
		      "status", fi->stale ? "stale" : fi->meta.applied_ms ? "ok" : "pending",
		      "created", fi->created);
	if (!o) {
		json_decref(failed);
		return NULL;
	}
	json_object_set_new(o, "applied_at_ms", fi->meta.applied_ms ?
					json_integer((json_int_t)fi->meta.applied_ms) : json_null());
	json_object_set_new(o, "checked_at_ms", fi->checked_ms ?
					json_integer((json_int_t)fi->checked_ms) : json_null());
	json_object_set_new(o, "ok_at_ms", fi->ok_ms ? json_integer((json_int_t)fi->ok_ms) :
						       json_null());
	json_object_set_new(o, "reason", fi->stale ? json_string(agd_feed_reason_names[fi->reason]) :
						     json_null());
	json_object_set_new(o, "error", fi->stale ? json_string(fi->why) : json_null());
	json_object_set_new(o, "etag", json_string(fi->meta.etag));
	json_object_set_new(o, "last_modified", json_string(fi->meta.last_modified));
	json_object_set_new(o, "refreshes",
			    json_pack("{s:I,s:I,s:o}", "applied", (json_int_t)fi->applied,
				      "unchanged", (json_int_t)fi->unchanged, "failed", failed));
	return o;
}
