// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Agents as the API shows them: one view, pages, all of them, the count,
 * explain, and the JSON form of a view. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "voices.h"
#include "explain.h"

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
	v->idle_ms = idle_now(en);
	v->implicit = en->rec.implicit;
	influence_of(e, en, &v->influence);
	v->influence_set = en->inf.set;
}

/* The agent's parent and quota, which live in the maps, not the store:
 * the CLI and /v1/parents set them (docs/BUDGETS.md). */
static void budget_of(struct agd_engine *e, struct agd_agent_view *v)
{
	__u32 up = ag_bucket_parent(e->ctx, v->slot);
	struct ag_agent p;

	v->parent[0] = '\0';
	if (up && !ag_agent_get_slot(e->ctx, up - 1, &p))
		memcpy(v->parent, p.name, sizeof(v->parent));
	ag_quota_status(e->ctx, v->slot, &v->quota); /* through the mmap */
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
		budget_of(e, v);
	}
	return 0;
}

/* The influence limits in effect, as an agent's JSON and explain show them. */
static json_t *influence_json(const struct agd_influence *inf)
{
	return json_pack("{s:f,s:I,s:I,s:b,s:f}", "max_change", inf->max_change,
			 "change_window_s", (json_int_t)(inf->window_ms / 1000), "wave_users",
			 (json_int_t)inf->wave_users, "wave_hold", inf->wave_hold, "user_cap",
			 inf->user_cap);
}

/* Explain's influence: the limits in effect, and what the agent's ratings
 * met since agentgated started ("damped" and "refused" by reason). */
static void tally_into(json_t *o, const __u64 tally[AGD_TALLY__N],
		       const struct agd_influence *inf)
{
	int t;

	if (!json_is_object(o))
		return;
	json_object_set_new(o, "limits", influence_json(inf));
	for (t = 0; t < AGD_TALLY__N; t++) {
		json_t *g = json_object_get(o, agd_tally_group[t]);

		if (!g) {
			g = json_object();
			json_object_set_new(o, agd_tally_group[t], g);
		}
		json_object_set_new(g, agd_tally_reason[t], json_integer((json_int_t)tally[t]));
	}
}

int agd_engine_explain(struct agd_engine *e, const char *name, void **json_out,
		      struct agd_err *oe)
{
	struct agd_explain_opts o = { .ctx = e->ctx, .answered_by = "agentgated", .share = 1,
				      .voices = -1 };
	__u64 tally[AGD_TALLY__N] = { 0 };
	struct agd_influence inf = { 0 };
	struct agd_feed_info feed;
	bool fed = false;
	struct agd_policy defaults;
	struct entry *en;
	json_t *j = NULL;
	MDB_txn *txn;
	int err;

	*json_out = NULL;
	if (ag_name_check(name))
		return agd_errf(oe, -EINVAL, "%s", ag_errmsg());
	pthread_mutex_lock(&e->lock);
	defaults = e->defaults;
	en = tab_find(e, name);
	if (en) {
		o.share = en->share;
		memcpy(tally, en->tally, sizeof(tally));
		influence_of(e, en, &inf);
		o.voices = (__s64)agd_voices_of(e->voices, name);
		if (en->feed) {
			feed = en->feed->info;
			fed = true;
		}
	}
	o.fleet = e->replicated;
	pthread_mutex_unlock(&e->lock);
	o.defaults = &defaults;
	/* A snapshot: never waits for the apply thread's commit. */
	err = agd_store_read_begin(&e->st, &txn);
	if (err)
		return agd_store_fail(oe, err, "cannot read the state store");
	err = agd_explain_build(&e->st, txn, name, &o, &j, oe);
	agd_store_txn_end(txn);
	if (err)
		return err;
	if (en)
		tally_into(json_object_get(j, "influence"), tally, &inf);
	/* Its rule feed, when it has one: where its feed rules come from and
	 * whether the last refresh worked. */
	if (fed)
		json_object_set_new(j, "feed", agd_feed_info_json(&feed));
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
		budget_of(e, &v[i]);
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

void agd_engine_activity(struct agd_engine *e, __u64 *idle_ms, __u32 *ttl_s, size_t n)
{
	struct entry *en;
	size_t i;

	for (i = 0; i < n; i++) {
		idle_ms[i] = UINT64_MAX;
		ttl_s[i] = 0;
	}
	pthread_mutex_lock(&e->lock);
	TAB_FOREACH(e, i, en) {
		struct agd_policy p;

		if (en->map_rate < 0 || en->slot >= n)
			continue;
		effective(e, en, &p);
		idle_ms[en->slot] = idle_now(en);
		ttl_s[en->slot] = (__u32)p.ttl;
	}
	pthread_mutex_unlock(&e->lock);
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
	json_object_set_new(o, "unit", json_string(ag_unit_name(p->unit)));
	json_object_set_new(o, "r0", json_real(p->r0));
	json_object_set_new(o, "r_min", json_real(p->r_min));
	json_object_set_new(o, "r_max", json_real(p->r_max));
	json_object_set_new(o, "alpha", json_real(p->alpha));
	json_object_set_new(o, "pinned", json_boolean(p->pinned));
	json_object_set_new(o, "ttl", json_integer((json_int_t)p->ttl));
	json_object_set_new(o, "idle_s", json_real((double)v->idle_ms / 1000));
	json_object_set_new(o, "influence", influence_json(&v->influence));
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
	json_object_set_new(o, "parent", v->parent[0] ? json_string(v->parent) : json_null());
	json_object_set_new(o, "quota",
			    v->quota.limit ?
				    json_pack("{s:I,s:s,s:I,s:f,s:I}", "limit",
					      (json_int_t)v->quota.limit, "window",
					      ag_quota_window_name(v->quota.window), "used",
					      (json_int_t)v->quota.used, "remaining",
					      (double)v->quota.limit - (double)v->quota.used,
					      "resets_in_s",
					      (json_int_t)((v->quota.reset_in_ns + 999999999ULL) /
							   1000000000ULL)) :
				    json_null());
	return o;
}

void agd_engine_policy_of(struct agd_engine *e, const char *name, struct agd_policy *p)
{
	struct entry *en;

	pthread_mutex_lock(&e->lock);
	en = tab_find(e, name);
	if (en)
		effective(e, en, p);
	else
		*p = e->defaults;
	pthread_mutex_unlock(&e->lock);
}
