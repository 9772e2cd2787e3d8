// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The explain object (explain.h): built from a store read transaction. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "explain.h"

/* ---- recording a change --------------------------------------------------------- */

char *agd_explain_change_detail(json_t *before, json_t *after)
{
	json_t *b = NULL, *a = NULL, *d, *v;
	const char *key;
	char *text;

	if (json_is_object(before) && json_is_object(after)) {
		b = json_object();
		a = json_object();
		json_object_foreach(before, key, v) {
			json_t *w = json_object_get(after, key);

			if (!w || !json_equal(v, w))
				json_object_set(b, key, v);
		}
		json_object_foreach(after, key, v) {
			json_t *w = json_object_get(before, key);

			if (!w || !json_equal(v, w))
				json_object_set(a, key, v);
		}
	} else {
		b = json_is_object(before) ? json_incref(before) : NULL;
		a = json_is_object(after) ? json_incref(after) : NULL;
	}
	d = json_pack("{s:o,s:o}", "before", b ? b : json_null(), "after", a ? a : json_null());
	if (!d)
		return NULL;
	text = json_dumps(d, JSON_COMPACT | JSON_REAL_PRECISION(15));
	json_decref(d);
	return text;
}

int agd_explain_record_change(struct agd_store *st, MDB_txn *txn, const char *agent,
			      __u64 time_ms, const char *subject, const char *action,
			      json_t *before, json_t *after)
{
	json_t *pb = json_is_object(before) ? json_object_get(before, "pinned") : NULL;
	json_t *pa = json_is_object(after) ? json_object_get(after, "pinned") : NULL;
	char *detail;
	int pin = -1, err;

	if (!agent || !agent[0] || !action)
		return 0;
	/* A new agent of a name starts afresh (an older agentgated may have
	 * deleted one of that name and left its history). */
	if (!strcmp(action, "agent.delete") || !strcmp(action, "agent.create")) {
		err = agd_store_hist_del(st, txn, agent);
		if (err || !strcmp(action, "agent.delete"))
			return err;
	}
	if (json_is_true(pa) && !json_is_true(pb))
		pin = 1;
	else if (json_is_false(pa))
		pin = 0;
	detail = agd_explain_change_detail(before, after);
	if (!detail)
		return -ENOMEM;
	err = agd_store_hist_add_change(st, txn, agent, !strcmp(action, "agent.create"), time_ms,
				       subject, action, detail, pin);
	free(detail);
	return err;
}

/* ---- building the object -------------------------------------------------------- */

/* A string that may not be UTF-8 (cut ids, subjects): '?' for each byte
 * beyond ASCII then. NULL for "" when empty_null. */
static json_t *str(const char *s, bool empty_null)
{
	json_t *j;
	char *c;
	size_t i;

	if (!s || (empty_null && !s[0]))
		return json_null();
	j = json_string(s);
	if (j)
		return j;
	c = strdup(s);
	if (!c)
		return json_null();
	for (i = 0; c[i]; i++)
		if ((unsigned char)c[i] >= 0x80)
			c[i] = '?';
	j = json_string(c);
	free(c);
	return j ? j : json_null();
}

static void iso_ms(__s64 ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char s[40];

	if (ms < 0 || !gmtime_r(&t, &tm)) {
		snprintf(buf, len, "an unknown time");
		return;
	}
	strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%03dZ", s, (int)(ms % 1000));
}

static const char *unit_str(enum ag_unit u)
{
	return ag_unit_name(u);
}

static json_t *own_fields(unsigned int set)
{
	static const struct {
		unsigned int bit;
		const char *name;
	} f[] = {
		{ AGD_POL_R0, "r0" },	   { AGD_POL_ALPHA, "alpha" }, { AGD_POL_R_MIN, "r_min" },
		{ AGD_POL_R_MAX, "r_max" }, { AGD_POL_BURST, "burst" }, { AGD_POL_UNIT, "unit" },
		{ AGD_POL_PINNED, "pinned" },
	};
	json_t *a = json_array();
	size_t i;

	for (i = 0; a && i < sizeof(f) / sizeof(f[0]); i++)
		if (set & f[i].bit)
			json_array_append_new(a, json_string(f[i].name));
	return a;
}

json_t *agd_burst_policy_json(const struct agd_policy *p)
{
	char buf[48];

	if (p->burst_kind != AGD_BURST_SECONDS)
		return json_integer((json_int_t)p->burst);
	snprintf(buf, sizeof(buf), "%gs", p->burst);
	return json_string(buf);
}

static json_t *policy_obj(const struct agd_agent_rec *rec, const struct agd_policy *p,
			  const struct agd_hist_changes *hc, const char *defaults_from)
{
	json_t *o = json_object(), *burst_policy, *pinned_by = json_null();

	if (!o)
		return NULL;
	burst_policy = agd_burst_policy_json(p);
	if (p->pinned && hc->pin_ms >= 0)
		pinned_by = json_pack("{s:o,s:I}", "subject", str(hc->pin_subject, false),
				      "time_ms", (json_int_t)hc->pin_ms);
	json_object_set_new(o, "r0", json_real(p->r0));
	json_object_set_new(o, "alpha", json_real(p->alpha));
	json_object_set_new(o, "r_min", json_real(p->r_min));
	json_object_set_new(o, "r_max", json_real(p->r_max));
	json_object_set_new(o, "burst",
			    json_integer((json_int_t)agd_policy_burst_tokens(p, rec->rate)));
	json_object_set_new(o, "burst_policy", burst_policy);
	json_object_set_new(o, "unit", json_string(unit_str(p->unit)));
	json_object_set_new(o, "pinned", json_boolean(p->pinned));
	json_object_set_new(o, "pinned_by", pinned_by ? pinned_by : json_null());
	json_object_set_new(o, "own", own_fields(rec->set));
	json_object_set_new(o, "defaults_from", json_string(defaults_from));
	return o;
}

static json_t *ratings_arr(const struct agd_hist_ratings *hr)
{
	json_t *a = json_array();
	size_t i;

	for (i = 0; a && i < hr->n; i++) {
		const struct agd_hist_rating *r = &hr->r[i];

		json_array_append_new(a, json_pack("{s:I,s:I,s:o,s:o,s:i,s:f,s:f}", "time_ms",
						   (json_int_t)r->ts_ms, "applied_ms",
						   (json_int_t)r->applied_ms, "id", str(r->id, true),
						   "user", str(r->user, true), "score", r->score,
						   "rate_before", r->rate_before, "rate_after",
						   r->rate_after));
	}
	return a;
}

static json_t *changes_arr(const struct agd_hist_changes *hc)
{
	json_t *a = json_array();
	size_t i;

	for (i = 0; a && i < hc->n; i++) {
		const struct agd_hist_change *c = &hc->c[i];
		json_t *d = json_loads(c->detail, JSON_DECODE_ANY, NULL);
		json_t *b = json_is_object(d) ? json_object_get(d, "before") : NULL;
		json_t *f = json_is_object(d) ? json_object_get(d, "after") : NULL;

		json_array_append_new(a, json_pack("{s:I,s:o,s:o,s:O,s:O}", "time_ms",
						   (json_int_t)c->time_ms, "subject",
						   str(c->subject, false), "action",
						   str(c->action, false), "before",
						   b ? b : json_null(), "after", f ? f : json_null()));
		json_decref(d);
	}
	return a;
}

struct live {
	bool found;
	struct ag_agent a;
	double tokens;
	struct ag_counters c;
};

static void read_live(struct ag_ctx *ctx, const char *name, struct live *l)
{
	memset(l, 0, sizeof(*l));
	if (!ctx || ag_agent_get(ctx, name, &l->a))
		return;
	l->found = true;
	ag_bucket_tokens(ctx, l->a.slot, &l->tokens);
	ag_counters_get(ctx, l->a.slot, &l->c);
}

static json_t *live_obj(const struct live *l)
{
	if (!l->found)
		return json_null();
	return json_pack("{s:i,s:f,s:I,s:s,s:b,s:f,s:I,s:I,s:I,s:I}", "slot", (int)l->a.slot,
			 "rate", l->a.rate, "burst", (json_int_t)l->a.burst, "unit",
			 unit_str(l->a.unit), "pinned", (int)l->a.pinned, "tokens", l->tokens,
			 "passed_packets", (json_int_t)l->c.passed_packets, "passed_bytes",
			 (json_int_t)l->c.passed_bytes, "dropped_packets",
			 (json_int_t)l->c.dropped_packets, "dropped_bytes",
			 (json_int_t)l->c.dropped_bytes);
}

/* One bucket of the path: its limit and tokens now, its quota, and what it
 * refused itself (its rate, its quota) and what a parent above refused of
 * the packets that reached it. *limits: the reason it would refuse a
 * packet now ("rate": less than one token; "quota": used up), or NULL. */
static json_t *level_obj(struct ag_ctx *ctx, __u32 slot, const char **limits)
{
	struct ag_counters c = { 0 };
	struct ag_refusals rf = { 0 };
	struct ag_quota_status q;
	struct ag_agent a;
	double tokens = 0;
	__u64 refused, own_rate;
	json_t *quota = json_null();

	*limits = NULL;
	if (ag_agent_get_slot(ctx, slot, &a))
		return NULL;
	ag_bucket_tokens(ctx, slot, &tokens);
	ag_counters_get(ctx, slot, &c);
	ag_refusals_get(ctx, slot, &rf);
	if (!ag_quota_status(ctx, slot, &q) && q.limit) {
		quota = json_pack("{s:I,s:s,s:I,s:f,s:I}", "limit", (json_int_t)q.limit, "window",
				  ag_quota_window_name(q.window), "used", (json_int_t)q.used,
				  "remaining", (double)q.limit - (double)q.used, "resets_in_s",
				  (json_int_t)((q.reset_in_ns + 999999999ULL) / 1000000000ULL));
		if (q.used >= q.limit)
			*limits = "quota";
	}
	if (!*limits && tokens < 1)
		*limits = "rate";
	refused = c.dropped_packets + c.would_drop_packets;
	own_rate = refused - rf.parent_packets - rf.quota_packets;
	return json_pack("{s:s,s:s,s:f,s:I,s:s,s:f,s:o,s:{s:I,s:I,s:I}}", "name", a.name, "kind",
			 a.is_parent ? "parent" : "agent", "rate", a.rate, "burst",
			 (json_int_t)a.burst, "unit", unit_str(a.unit), "tokens",
			 floor(tokens * 1000) / 1000, "quota", quota, "refused", "rate",
			 (json_int_t)own_rate, "quota", (json_int_t)rf.quota_packets, "above",
			 (json_int_t)rf.parent_packets);
}

/* The agent's path up its parents (docs/BUDGETS.md): each level, and the
 * first that would refuse a packet now (limited_by), or null. */
static json_t *path_obj(const struct live *l, struct ag_ctx *ctx)
{
	__u32 slots[AG_PATH_MAX];
	json_t *levels, *limited = json_null();
	int n = 0, i;

	if (!l->found || ag_bucket_path(ctx, l->a.slot, slots, &n))
		return json_null();
	levels = json_array();
	for (i = 0; i < n; i++) {
		const char *why;
		json_t *lv = level_obj(ctx, slots[i], &why);

		if (!lv)
			continue;
		if (why && json_is_null(limited))
			limited = json_pack("{s:O,s:s}", "name", json_object_get(lv, "name"),
					    "reason", why);
		json_array_append_new(levels, lv);
	}
	return json_pack("{s:o,s:o}", "levels", levels, "limited_by", limited);
}

/* The newest recorded change that set the rate (or unpinned it, leaving the
 * pinned rate for ratings to move): its index, or -1. */
static long last_rate_change(const struct agd_hist_changes *hc)
{
	long i;

	for (i = (long)hc->n - 1; i >= 0; i--) {
		const char *d = hc->c[i].detail;

		if (strncmp(hc->c[i].action, "agent.", 6))
			continue;
		if (strstr(d, "\"after\":{") && (strstr(d, "\"rate\":") || strstr(d, "\"pinned\":")))
			return i;
	}
	return -1;
}

/* source and explanation */
static void origin(const char *name, const struct agd_agent_rec *rec, const struct agd_policy *p,
		   const struct agd_hist_ratings *hr, const struct agd_hist_changes *hc,
		   const char **source, char *text, size_t len)
{
	const char *unit = unit_str(p->unit);
	long ci = last_rate_change(hc);
	const struct agd_hist_rating *lr = hr->n ? &hr->r[hr->n - 1] : NULL;
	char when[64], rule[160];

	snprintf(rule, sizeof(rule), "r = clamp(r + %g * (score - 3), %g, %g)", p->alpha, p->r_min,
		 p->r_max);
	if (p->pinned) {
		*source = "pinned";
		if (hc->pin_ms >= 0) {
			iso_ms(hc->pin_ms, when, sizeof(when));
			snprintf(text, len, "rate %.6g %s is pinned: an operator (%s) pinned it at %s, "
				 "and ratings do not move it", rec->rate, unit,
				 hc->pin_subject[0] ? hc->pin_subject : "no subject: auth off",
				 when);
		} else {
			snprintf(text, len, "rate %.6g %s is pinned and ratings do not move it; who "
				 "pinned it is not recorded (in the maps with agentgate agent set, "
				 "in the global defaults, or before agentgated kept this history)",
				 rec->rate, unit);
		}
	} else if (lr && (ci < 0 || lr->applied_ms >= hc->c[ci].time_ms)) {
		*source = "ratings";
		iso_ms(lr->applied_ms, when, sizeof(when));
		snprintf(text, len, "rate %.6g %s comes from the ratings, %s: the last one, %d "
			 "stars%s%s at %s, took it from %.6g to %.6g", rec->rate, unit, rule,
			 lr->score, lr->user[0] ? " from " : "", lr->user, when, lr->rate_before,
			 lr->rate_after);
	} else if (ci >= 0) {
		*source = "operator";
		iso_ms((__s64)hc->c[ci].time_ms, when, sizeof(when));
		snprintf(text, len, "rate %.6g %s was last set by an operator (%s, %s at %s); it "
			 "is not pinned, so ratings move it from there: %s", rec->rate, unit,
			 hc->c[ci].subject[0] ? hc->c[ci].subject : "no subject: auth off",
			 hc->c[ci].action, when, rule);
	} else if (rec->count && hr->total == 0) {
		*source = "ratings";
		snprintf(text, len, "rate %.6g %s comes from %llu ratings, %s (they predate the "
			 "history agentgated keeps)", rec->rate, unit,
			 (unsigned long long)rec->count, rule);
	} else {
		*source = "initial";
		snprintf(text, len, "rate %.6g %s is the rate agent %s started with (r0 %.6g); no "
			 "rating has moved it yet: %s", rec->rate, unit, name, p->r0, rule);
	}
}

static json_t *maps_only(const char *name, const struct live *l, const char *answered_by)
{
	char text[400];

	snprintf(text, sizeof(text), "agent %s is in the maps but not in agentgated's state "
		 "store: its rate %.6g %s was set in the maps directly (agentgate agent set)%s; "
		 "agentgated adopts it when it starts", name, l->a.rate, unit_str(l->a.unit),
		 l->a.pinned ? " and is pinned" : "");
	return json_pack("{s:s,s:s,s:s,s:s,s:f,s:n,s:n,s:[],s:I,s:[],s:I,s:o}", "agent", name,
			 "answered_by", answered_by, "source", "maps", "explanation", text, "rate",
			 l->a.rate, "policy", "stats", "ratings", "ratings_recorded", (json_int_t)0,
			 "changes", "changes_recorded", (json_int_t)0, "live", live_obj(l));
}

/* Who moves the rate: the users with a voice, and the change window
 * (damping, waves) when there is one. Absent in a store that predates them. */
static json_t *influence_obj(struct agd_store *st, MDB_txn *txn, const char *name,
			     __s64 counted)
{
	struct agd_window_rec w;
	__u64 voices = 0;
	json_t *o = json_object();

	if (counted >= 0)
		json_object_set_new(o, "voices", json_integer((json_int_t)counted));
	else if (!agd_store_voices_of(st, txn, name, &voices))
		json_object_set_new(o, "voices", json_integer((json_int_t)voices));
	if (st->windows && agd_store_window_get(st, txn, name, &w) == 1)
		json_object_set_new(o, "window",
				    json_pack("{s:I,s:f,s:I,s:I,s:b,s:I}", "start_ms",
					      (json_int_t)w.start_ms, "base", w.base, "new_down",
					      (json_int_t)w.new_down, "new_up", (json_int_t)w.new_up,
					      "wave", w.wave, "damped", (json_int_t)w.damped));
	else
		json_object_set_new(o, "window", json_null());
	return o;
}

int agd_explain_build(struct agd_store *st, MDB_txn *txn, const char *name,
		      const struct agd_explain_opts *o, json_t **out, struct agd_err *err)
{
	const char *answered_by = o->answered_by ? o->answered_by : "agentgated";
	const char *defaults_from = answered_by, *source;
	struct agd_hist_ratings *hr = NULL;
	struct agd_hist_changes *hc = NULL;
	struct agd_rating_stats stats;
	struct agd_policy defaults, p;
	struct agd_agent_rec rec;
	struct live l;
	char text[700];
	json_t *j = NULL;
	int rc, e;

	*out = NULL;
	read_live(o->ctx, name, &l);
	rc = agd_store_agent_get(st, txn, name, &rec);
	if (rc == -ENOENT) {
		if (!l.found) {
			return agd_errf(err, -ENOENT, "unknown agent '%s'", name);
		}
		*out = maps_only(name, &l, answered_by);
		return *out ? 0 : -ENOMEM;
	}
	if (rc == -EUCLEAN) {
		return agd_errf(err, rc,
			"the state store's record of agent '%s' is malformed", name);
	}
	if (rc) {
		return agd_errf(err, rc, "cannot read agent '%s' from the state store: %s", name,
			 strerror(-rc));
	}
	if (o->defaults) {
		defaults = *o->defaults;
	} else {
		e = agd_store_defaults_get(st, txn, &defaults);
		if (e == -ENOENT) {
			agd_policy_defaults(&defaults);
			defaults_from = "built-in";
		} else if (e) {
			return agd_errf(err, e,
				"the state store's global defaults are unreadable: %s",
				 e == -EUCLEAN ? "malformed" : strerror(-e));
		}
	}
	agd_rec_effective(&rec, &defaults, &p);
	hr = malloc(sizeof(*hr));
	hc = malloc(sizeof(*hc));
	if (!hr || !hc) {
		e = -ENOMEM;
		snprintf(err->msg, sizeof(err->msg), "out of memory");
		goto out;
	}
	e = agd_store_hist_get(st, txn, name, hr, hc);
	if (e) {
		snprintf(err->msg, sizeof(err->msg),
			"the state store's history of agent '%s' is %s", name,
			 e == -EUCLEAN ? "malformed" : strerror(-e));
		goto out;
	}
	origin(name, &rec, &p, hr, hc, &source, text, sizeof(text));
	stats = (struct agd_rating_stats){ rec.count, rec.score_sum, rec.last_ms };
	j = json_object();
	if (!j) {
		e = -ENOMEM;
		goto out;
	}
	json_object_set_new(j, "agent", json_string(name));
	json_object_set_new(j, "answered_by", json_string(answered_by));
	json_object_set_new(j, "source", json_string(source));
	json_object_set_new(j, "explanation", str(text, false));
	json_object_set_new(j, "rate", json_real(rec.rate));
	json_object_set_new(j, "policy", policy_obj(&rec, &p, hc, defaults_from));
	json_object_set_new(j, "stats",
			    json_pack("{s:I,s:f,s:o}", "ratings", (json_int_t)rec.count,
				      "mean_score", agd_stats_mean(&stats), "last_rating_ms",
				      rec.last_ms >= 0 ? json_integer(rec.last_ms) : json_null()));
	json_object_set_new(j, "ratings", ratings_arr(hr));
	json_object_set_new(j, "ratings_recorded", json_integer((json_int_t)hr->total));
	json_object_set_new(j, "changes", changes_arr(hc));
	json_object_set_new(j, "changes_recorded", json_integer((json_int_t)hc->total));
	json_object_set_new(j, "live", live_obj(&l));
	json_object_set_new(j, "path", path_obj(&l, o->ctx));
	json_object_set_new(j, "influence", influence_obj(st, txn, name, o->voices));
	if (o->fleet)
		json_object_set_new(j, "fleet", json_pack("{s:f,s:f}", "share", o->share,
							  "local_rate", rec.rate * o->share));
	json_object_set_new(j, "created_ms", json_integer((json_int_t)rec.created_ms));
	json_object_set_new(j, "updated_ms", json_integer((json_int_t)rec.updated_ms));
	*out = j;
	e = 0;
out:
	if (e == -ENOMEM)
		snprintf(err->msg, sizeof(err->msg), "out of memory");
	free(hr);
	free(hc);
	return e;
}
