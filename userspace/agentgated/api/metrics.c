// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet/fleet.h"
#include "ingest/ingest.h"
#include "metrics.h"
#include "core/store.h"
#include "stream.h"

struct out {
	char *buf;
	size_t len, cap;
	bool oom;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		if (o->oom)
			return;
		va_start(ap, fmt);
		n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < o->cap - o->len) {
			o->len += (size_t)n;
			return;
		}
		o->cap = o->cap * 2 + (size_t)n + 1;
		char *b = realloc(o->buf, o->cap);

		if (!b) {
			o->oom = true;
			return;
		}
		o->buf = b;
	}
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
	put(o, "# HELP agentgate_%s %s\n# TYPE agentgate_%s %s\n", name, help, name, type);
}

void agd_metrics_init(struct agd_metrics *m)
{
	memset(m, 0, sizeof(*m));
	pthread_mutex_init(&m->lock, NULL);
}

void agd_metrics_auth_refused(struct agd_metrics *m, enum agd_auth_reason r)
{
	if (r > AGD_AUTH_OK && r < AGD_AUTH__MAX)
		__atomic_fetch_add(&m->auth_refused[r], 1, __ATOMIC_RELAXED);
}

/* Damped and refused ratings by reason (AGD_TALLY_LIST): one family a group. */
static void tally_family(struct out *o, const struct agd_engine_stats *s, const char *group,
			 const char *help)
{
	char name[40];
	int t;

	snprintf(name, sizeof(name), "ratings_%s_total", group);
	family(o, name, "counter", help);
	for (t = 0; t < AGD_TALLY__N; t++)
		if (!strcmp(agd_tally_group[t], group))
			put(o, "agentgate_ratings_%s_total{reason=\"%s\"} %llu\n", group,
			    agd_tally_reason[t], (unsigned long long)s->tally[t]);
}

static void tally_series(struct out *o, const struct agd_engine_stats *s)
{
	tally_family(o, s, "damped",
		     "Applied ratings whose move an influence limit cut: reason window "
		     "(--rating-max-change) or user_cap (--rating-user-cap).");
	tally_family(o, s, "refused",
		     "Ratings refused by an influence limit: reason user_rate, token_rate (each "
		     "rating of a request answered 429, or a stream line) or anonymous "
		     "(--anonymous-ratings refuse).");
}

static void auth_series(struct out *o, struct agd_metrics *m, struct agd_engine *e)
{
	int r;

	if (m->intake) {
		uint64_t refused[3];

		agd_intake_stats(m->intake, refused);
		family(o, "rating_intake_refused_total", "counter",
		       "Rating requests refused with 429: a user or an API token over its "
		       "--rating-user-rate or --rating-token-rate.");
		put(o, "agentgate_rating_intake_refused_total{by=\"user\"} %llu\n",
		    (unsigned long long)refused[AGD_INTAKE_USER]);
		put(o, "agentgate_rating_intake_refused_total{by=\"token\"} %llu\n",
		    (unsigned long long)refused[AGD_INTAKE_TOKEN]);
	}
	family(o, "auth_revocations", "gauge",
	       "Revoked tokens and subjects kept (until their tokens expire).");
	put(o, "agentgate_auth_revocations %zu\n", agd_engine_revoked_count(e));
	family(o, "auth_refusals_total", "counter",
	       "Requests refused for their token: 401 by reason, 403 as scope.");
	for (r = AGD_AUTH_OK + 1; r < AGD_AUTH__MAX; r++)
		put(o, "agentgate_auth_refusals_total{reason=\"%s\"} %llu\n",
		    agd_auth_reason_name((enum agd_auth_reason)r),
		    (unsigned long long)__atomic_load_n(&m->auth_refused[r], __ATOMIC_RELAXED));
}

void agd_metrics_free(struct agd_metrics *m)
{
	free(m->labeled);
	pthread_mutex_destroy(&m->lock);
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(a, b);
}

static __u64 seen(const struct agd_agent_view *v)
{
	return v->counters.passed_packets + v->counters.dropped_packets +
	       v->counters.would_drop_packets;
}

static int cmp_busiest(const void *pa, const void *pb)
{
	const struct agd_agent_view *a = pa, *b = pb;
	__u64 x = seen(a), y = seen(b);

	return x == y ? strcmp(a->name, b->name) : (x < y ? 1 : -1);
}

/* Keeps the labeled set: agents still present stay; free places go to the
 * busiest of the rest. Returns, parallel to v (sorted busiest first), which
 * agents get their own series. */
static bool *choose_labeled(struct agd_metrics *m, struct agd_agent_view *v, size_t n,
			    __u64 max)
{
	bool *own = calloc(n + 1, sizeof(*own));
	char (*keep)[AG_NAME_MAX + 1];
	size_t i, k = 0;

	keep = calloc(n + 1, sizeof(*keep));
	if (!own || !keep) {
		free(own);
		free(keep);
		return NULL;
	}
	qsort(v, n, sizeof(*v), cmp_busiest);
	for (i = 0; i < n && k < max; i++)
		if (m->n_labeled &&
		    bsearch(v[i].name, m->labeled, m->n_labeled, sizeof(*m->labeled), cmp_name)) {
			own[i] = true;
			k++;
		}
	for (i = 0; i < n && k < max; i++)
		if (!own[i]) {
			own[i] = true;
			k++;
		}
	for (i = 0, k = 0; i < n; i++)
		if (own[i])
			memcpy(keep[k++], v[i].name, sizeof(keep[0]));
	qsort(keep, k, sizeof(*keep), cmp_name);
	free(m->labeled);
	m->labeled = keep;
	m->n_labeled = k;
	return own;
}

/* Label values are agent names (letters, digits, . _ - : per ag_name_check)
 * but escape anyway: the exposition format requires it. */
static const char *label(const char *s, char *buf, size_t len)
{
	size_t j = 0;

	for (; *s && j + 3 < len; s++) {
		if (*s == '\\' || *s == '"') {
			buf[j++] = '\\';
			buf[j++] = *s;
		} else if (*s == '\n') {
			buf[j++] = '\\';
			buf[j++] = 'n';
		} else {
			buf[j++] = *s;
		}
	}
	buf[j] = 0;
	return buf;
}

/* The three verdicts of one counter family, as offsets into struct ag_counters. */
static const char *const verdicts[] = { "pass", "drop", "would_drop" };
static const size_t packet_fields[] = { offsetof(struct ag_counters, passed_packets),
					offsetof(struct ag_counters, dropped_packets),
					offsetof(struct ag_counters, would_drop_packets) };
static const size_t byte_fields[] = { offsetof(struct ag_counters, passed_bytes),
				      offsetof(struct ag_counters, dropped_bytes),
				      offsetof(struct ag_counters, would_drop_bytes) };

static __u64 field(const struct ag_counters *c, size_t off)
{
	return *(const __u64 *)((const char *)c + off);
}

static void counter_series(struct out *o, const char *fam, const char *help,
			   const struct agd_agent_view *v, size_t n, const bool *own,
			   const struct ag_counters *other, const size_t fields[3])
{
	char name[2 * AG_NAME_MAX + 2];
	bool any_other = false;
	size_t i, vd;

	for (i = 0; i < n; i++)
		any_other |= !own[i];
	family(o, fam, "counter", help);
	for (vd = 0; vd < 3; vd++) {
		for (i = 0; i < n; i++)
			if (own[i])
				put(o, "agentgate_%s{agent=\"%s\",verdict=\"%s\"} %llu\n", fam,
				    label(v[i].name, name, sizeof(name)), verdicts[vd],
				    (unsigned long long)field(&v[i].counters, fields[vd]));
		if (any_other)
			put(o, "agentgate_%s{agent=\"" AGD_METRICS_OTHER "\",verdict=\"%s\"} %llu\n",
			    fam, verdicts[vd], (unsigned long long)field(other, fields[vd]));
	}
}

static void agent_series(struct out *o, struct agd_agent_view *v, size_t n, const bool *own)
{
	struct ag_counters other = { 0 };
	double o_tokens = 0, o_rate = 0, o_cap = 0;
	char name[2 * AG_NAME_MAX + 2];
	size_t i, n_other = 0;

	for (i = 0; i < n; i++) {
		if (own[i])
			continue;
		n_other++;
		other.passed_packets += v[i].counters.passed_packets;
		other.passed_bytes += v[i].counters.passed_bytes;
		other.dropped_packets += v[i].counters.dropped_packets;
		other.dropped_bytes += v[i].counters.dropped_bytes;
		other.would_drop_packets += v[i].counters.would_drop_packets;
		other.would_drop_bytes += v[i].counters.would_drop_bytes;
		o_tokens += v[i].tokens;
		o_rate += v[i].rate * v[i].share;
		o_cap += (double)v[i].burst;
	}
	counter_series(o, "packets_total", "Packets classified to an agent, by verdict.", v, n,
		       own, &other, packet_fields);
	counter_series(o, "bytes_total", "Bytes (L2 frames) classified to an agent, by verdict.",
		       v, n, own, &other, byte_fields);
	family(o, "bucket_tokens", "gauge", "Tokens in the agent's bucket now.");
	for (i = 0; i < n; i++)
		if (own[i])
			put(o, "agentgate_bucket_tokens{agent=\"%s\"} %.17g\n",
			    label(v[i].name, name, sizeof(name)), v[i].tokens);
	if (n_other)
		put(o, "agentgate_bucket_tokens{agent=\"" AGD_METRICS_OTHER "\"} %.17g\n", o_tokens);
	family(o, "refill_rate", "gauge", "Refill rate of the agent's bucket, tokens per second.");
	for (i = 0; i < n; i++)
		if (own[i])
			put(o, "agentgate_refill_rate{agent=\"%s\"} %.17g\n",
			    label(v[i].name, name, sizeof(name)), v[i].rate * v[i].share);
	if (n_other)
		put(o, "agentgate_refill_rate{agent=\"" AGD_METRICS_OTHER "\"} %.17g\n", o_rate);
	family(o, "bucket_capacity", "gauge", "Burst size of the agent's bucket, tokens.");
	for (i = 0; i < n; i++)
		if (own[i])
			put(o, "agentgate_bucket_capacity{agent=\"%s\"} %llu\n",
			    label(v[i].name, name, sizeof(name)), (unsigned long long)v[i].burst);
	if (n_other)
		put(o, "agentgate_bucket_capacity{agent=\"" AGD_METRICS_OTHER "\"} %.17g\n", o_cap);
	if (n && v[0].fleet) {
		family(o, "fleet_demand_share", "gauge",
		       "Share of the agent's fleet-wide rate this host's bucket gets (its demand "
		       "over the fleet's, floored).");
		for (i = 0; i < n; i++)
			if (own[i])
				put(o, "agentgate_fleet_demand_share{agent=\"%s\"} %.17g\n",
				    label(v[i].name, name, sizeof(name)), v[i].share);
	}
	family(o, "metrics_other_agents", "gauge",
	       "Agents summed under agent=\"" AGD_METRICS_OTHER "\" (beyond --metrics-max-agents).");
	put(o, "agentgate_metrics_other_agents %zu\n", n_other);
}

static void engine_series(struct out *o, struct agd_engine *e)
{
	struct agd_engine_stats s;
	__u64 cum = 0;
	size_t b;

	agd_engine_stats(e, &s);
	family(o, "ratings_total", "counter", "Ratings received, by result.");
	put(o, "agentgate_ratings_total{result=\"applied\"} %llu\n",
	    (unsigned long long)s.ratings_applied);
	put(o, "agentgate_ratings_total{result=\"duplicate\"} %llu\n",
	    (unsigned long long)s.ratings_duplicate);
	put(o, "agentgate_ratings_total{result=\"invalid\"} %llu\n",
	    (unsigned long long)s.ratings_invalid);
	put(o, "agentgate_ratings_total{result=\"rejected\"} %llu\n",
	    (unsigned long long)s.ratings_rejected);
	family(o, "rating_apply_seconds", "histogram",
	       "Time from receiving a batch of ratings to its rates being in the buckets.");
	for (b = 0; b < AGD_APPLY_BUCKETS; b++) {
		cum += s.apply_hist[b];
		put(o, "agentgate_rating_apply_seconds_bucket{le=\"%g\"} %llu\n",
		    agd_apply_bucket_le[b], (unsigned long long)cum);
	}
	cum += s.apply_hist[AGD_APPLY_BUCKETS];
	put(o, "agentgate_rating_apply_seconds_bucket{le=\"+Inf\"} %llu\n",
	    (unsigned long long)cum);
	put(o, "agentgate_rating_apply_seconds_sum %.9f\n", s.apply_sum);
	put(o, "agentgate_rating_apply_seconds_count %llu\n", (unsigned long long)s.apply_count);
	family(o, "rating_queue", "gauge", "Ratings waiting to be applied.");
	put(o, "agentgate_rating_queue %llu\n", (unsigned long long)s.queue_depth);
	family(o, "dedup_ids", "gauge", "Rating ids remembered for deduplication.");
	put(o, "agentgate_dedup_ids %llu\n", (unsigned long long)s.dedup_ids);
	family(o, "store_commits_total", "counter", "LMDB transactions committed.");
	put(o, "agentgate_store_commits_total %llu\n", (unsigned long long)s.commits);
	family(o, "store_errors_total", "counter",
	       "LMDB transactions that failed (a commit, or a read or write within one), and "
	       "changes refused because the state store is damaged.");
	put(o, "agentgate_store_errors_total %llu\n",
	    (unsigned long long)(s.commit_errors + agd_store_errors()));
	family(o, "store_damaged", "gauge",
	       "1 once the state store was found damaged: changes are refused, /readyz is 503.");
	put(o, "agentgate_store_damaged %d\n", agd_store_damaged(NULL) ? 1 : 0);
	family(o, "map_write_errors_total", "counter",
	       "Writes of a rate into the BPF maps that failed.");
	put(o, "agentgate_map_write_errors_total %llu\n", (unsigned long long)s.map_errors);
	family(o, "ratings_replaced_total", "counter",
	       "Applied ratings that replaced the same user's earlier rating of the agent (one "
	       "voice per user: the rate moved by alpha * (new - old)).");
	put(o, "agentgate_ratings_replaced_total %llu\n", (unsigned long long)s.ratings_replaced);
	tally_series(o, &s);
	family(o, "rating_waves_total", "counter",
	       "Rating waves flagged: --rating-wave users rating an agent for the first time "
	       "within its change window, one way.");
	put(o, "agentgate_rating_waves_total{direction=\"down\"} %llu\n",
	    (unsigned long long)s.waves_down);
	put(o, "agentgate_rating_waves_total{direction=\"up\"} %llu\n",
	    (unsigned long long)s.waves_up);
	family(o, "rating_voices", "gauge", "Latest ratings kept, one per (user, agent).");
	put(o, "agentgate_rating_voices %llu\n", (unsigned long long)s.voices);
	family(o, "rating_voices_memory_bytes", "gauge",
	       "Bytes of the table that keeps the voices in memory.");
	put(o, "agentgate_rating_voices_memory_bytes %llu\n", (unsigned long long)s.voices_memory);
	family(o, "rating_voice_log_records", "gauge",
	       "Voice changes in the store's voice log, not yet folded into its voices database.");
	put(o, "agentgate_rating_voice_log_records %llu\n", (unsigned long long)s.voices_logged);
	family(o, "agents_refused_total", "counter",
	       "New agents refused because every agent slot is in use (507).");
	put(o, "agentgate_agents_refused_total %llu\n", (unsigned long long)s.agents_refused);
	family(o, "agents_removed_total", "counter",
	       "Agents removed by agentgated itself: reason ttl (idle past their TTL) or "
	       "evicted (the longest idle, for a new agent when every slot is in use).");
	put(o, "agentgate_agents_removed_total{reason=\"ttl\"} %llu\n",
	    (unsigned long long)s.agents_expired);
	put(o, "agentgate_agents_removed_total{reason=\"evicted\"} %llu\n",
	    (unsigned long long)s.agents_evicted);
	family(o, "agent_expiry_errors_total", "counter",
	       "Expiries or evictions the maps or the state store refused (the agent stays).");
	put(o, "agentgate_agent_expiry_errors_total %llu\n", (unsigned long long)s.expire_errors);
	family(o, "agent_expiry_stale_total", "counter",
	       "Fleet: expiries proposed through the log that found the agent active since "
	       "(a touch, rating or change came first); the agent stays on every host.");
	put(o, "agentgate_agent_expiry_stale_total %llu\n", (unsigned long long)s.expire_stale);
	family(o, "agent_sweeps_total", "counter",
	       "Sweeps for idle agents (each reads every bucket and counter once).");
	put(o, "agentgate_agent_sweeps_total %llu\n", (unsigned long long)s.sweeps);
	family(o, "agent_sweep_cpu_seconds_total", "counter",
	       "CPU time the sweeps for idle agents took.");
	put(o, "agentgate_agent_sweep_cpu_seconds_total %.6f\n", (double)s.sweep_cpu_ns / 1e9);
}

static void dead_letter_series(struct out *o)
{
	struct agd_dead_letter_stats d;

	agd_dead_letter_stats(&d);
	family(o, "dead_letters_total", "counter",
	       "Stream lines dead-lettered, by outcome: written whole, written with the input cut, "
	       "or not written (failed).");
	put(o, "agentgate_dead_letters_total{outcome=\"written\"} %llu\n",
	    (unsigned long long)d.written);
	put(o, "agentgate_dead_letters_total{outcome=\"truncated\"} %llu\n",
	    (unsigned long long)d.truncated);
	put(o, "agentgate_dead_letters_total{outcome=\"failed\"} %llu\n",
	    (unsigned long long)d.failed);
	family(o, "dead_letters_dropped_total", "counter",
	       "Dead letters lost: not written, or deleted with the oldest file when the "
	       "dead-letter file rotated.");
	put(o, "agentgate_dead_letters_dropped_total %llu\n", (unsigned long long)d.dropped);
}

/* Rule feeds: few (one an agent at most), each with its own labels. */
static void feed_series(struct out *o, struct agd_engine *e)
{
	struct agd_feed_info *f = NULL;
	size_t n = 0, i;
	int r;

	if (agd_engine_feeds(e, &f, &n))
		return;
	family(o, "rule_feed_prefixes", "gauge",
	       "Prefixes in the agent's last good feed set (in the maps but for conflicts).");
	for (i = 0; i < n; i++)
		put(o, "agentgate_rule_feed_prefixes{agent=\"%s\"} %zu\n", f[i].agent, f[i].prefixes);
	family(o, "rule_feed_conflicts", "gauge",
	       "Prefixes of the agent's feed set already another agent's rule (left to it).");
	for (i = 0; i < n; i++)
		put(o, "agentgate_rule_feed_conflicts{agent=\"%s\"} %zu\n", f[i].agent,
		    f[i].conflicts);
	family(o, "rule_feed_stale", "gauge",
	       "1 while the agent's last feed refresh failed and its last good set stays.");
	for (i = 0; i < n; i++)
		put(o, "agentgate_rule_feed_stale{agent=\"%s\"} %d\n", f[i].agent, f[i].stale);
	family(o, "rule_feed_refreshes_total", "counter",
	       "Feed refreshes that succeeded since start: a new set applied, or unchanged.");
	for (i = 0; i < n; i++) {
		put(o, "agentgate_rule_feed_refreshes_total{agent=\"%s\",result=\"applied\"} %llu\n",
		    f[i].agent, (unsigned long long)f[i].applied);
		put(o, "agentgate_rule_feed_refreshes_total{agent=\"%s\",result=\"unchanged\"} "
		    "%llu\n", f[i].agent, (unsigned long long)f[i].unchanged);
	}
	family(o, "rule_feed_failures_total", "counter",
	       "Feed refreshes that kept the last good set since start, by reason.");
	for (i = 0; i < n; i++)
		for (r = 0; r < AGD_FEED_REASON__N; r++)
			put(o, "agentgate_rule_feed_failures_total{agent=\"%s\",reason=\"%s\"} %llu\n",
			    f[i].agent, agd_feed_reason_names[r], (unsigned long long)f[i].failed[r]);
	family(o, "rule_feed_last_success_timestamp_seconds", "gauge",
	       "When the agent's feed was last read successfully (0: not since start).");
	for (i = 0; i < n; i++)
		put(o, "agentgate_rule_feed_last_success_timestamp_seconds{agent=\"%s\"} %.3f\n",
		    f[i].agent, (double)f[i].ok_ms / 1000);
	free(f);
}

static void datapath_series(struct out *o, struct ag_ctx *ctx, size_t n_agents)
{
	__u64 st[AG_STAT__MAX] = { 0 };
	unsigned int i;

	ag_stats_get(ctx, st);
	family(o, "unclassified_packets_total", "counter",
	       "Packets no rule matched, by the default action applied.");
	put(o, "agentgate_unclassified_packets_total{verdict=\"pass\"} %llu\n",
	    (unsigned long long)st[AG_STAT_UNCLASSIFIED_PASSED]);
	put(o, "agentgate_unclassified_packets_total{verdict=\"drop\"} %llu\n",
	    (unsigned long long)st[AG_STAT_UNCLASSIFIED_DROPPED]);
	family(o, "parse_errors_total", "counter",
	       "Malformed packets, by reason: passed, charged to the source's agent, or "
	       "dropped (vlan_too_deep; docs/DATAPATH.md).");
	for (i = 0; i < AG_STAT__MAX; i++)
		if (ag_stat_is_parse_error(i))
			put(o, "agentgate_parse_errors_total{reason=\"%s\"} %llu\n", ag_stat_name(i),
			    (unsigned long long)st[i]);
	family(o, "datapath_events_total", "counter",
	       "Other datapath events (non-IP, fragments, no port, dry-run...), by reason.");
	for (i = 0; i < AG_STAT__MAX; i++)
		if (!ag_stat_is_parse_error(i) && i != AG_STAT_UNCLASSIFIED_PASSED &&
		    i != AG_STAT_UNCLASSIFIED_DROPPED)
			put(o, "agentgate_datapath_events_total{reason=\"%s\"} %llu\n",
			    ag_stat_name(i), (unsigned long long)st[i]);
	family(o, "agents", "gauge", "Agents known.");
	put(o, "agentgate_agents %zu\n", n_agents);
	family(o, "agent_slots", "gauge", "Agent slots in the maps (the most agents there can be).");
	put(o, "agentgate_agent_slots %u\n", ag_max_agents(ctx));
}

/* Parent buckets and quotas (docs/BUDGETS.md): every parent, and every
 * bucket with a quota, by name; an operator makes these, so they are few. */
struct budget_rows {
	struct ag_ctx *ctx;
	struct out *o;
	int pass; /* which family is being written */
};

enum { B_TOKENS, B_PACKETS, B_REFUSALS, B_QUOTA_LIMIT, B_QUOTA_USED, B__PASSES };

static int budget_parent(void *arg, const struct ag_agent *a)
{
	struct budget_rows *b = arg;
	struct ag_counters c;
	struct ag_refusals r;
	double tokens = 0;
	__u64 refused;
	size_t i;

	if (b->pass == B_TOKENS) {
		if (!ag_bucket_tokens(b->ctx, a->slot, &tokens))
			put(b->o, "agentgate_parent_tokens{parent=\"%s\"} %.17g\n", a->name, tokens);
		return 0;
	}
	if (ag_counters_get(b->ctx, a->slot, &c) || ag_refusals_get(b->ctx, a->slot, &r))
		return 0;
	if (b->pass == B_PACKETS) {
		for (i = 0; i < 3; i++)
			put(b->o, "agentgate_parent_packets_total{parent=\"%s\",verdict=\"%s\"} %llu\n",
			    a->name, verdicts[i], (unsigned long long)field(&c, packet_fields[i]));
		return 0;
	}
	refused = c.dropped_packets + c.would_drop_packets;
	put(b->o, "agentgate_parent_refusals_total{parent=\"%s\",reason=\"rate\"} %llu\n", a->name,
	    (unsigned long long)(refused - r.parent_packets - r.quota_packets));
	put(b->o, "agentgate_parent_refusals_total{parent=\"%s\",reason=\"quota\"} %llu\n",
	    a->name, (unsigned long long)r.quota_packets);
	put(b->o, "agentgate_parent_refusals_total{parent=\"%s\",reason=\"parent\"} %llu\n",
	    a->name, (unsigned long long)r.parent_packets);
	return 0;
}

static int budget_quota(void *arg, const struct ag_agent *a)
{
	struct budget_rows *b = arg;
	struct ag_quota_status q;

	if (!a->quota || ag_quota_status(b->ctx, a->slot, &q) || !q.limit)
		return 0;
	if (b->pass == B_QUOTA_LIMIT)
		put(b->o, "agentgate_quota_limit{bucket=\"%s\",window=\"%s\"} %llu\n", a->name,
		    ag_quota_window_name(q.window), (unsigned long long)q.limit);
	else
		put(b->o, "agentgate_quota_used{bucket=\"%s\",window=\"%s\"} %llu\n", a->name,
		    ag_quota_window_name(q.window), (unsigned long long)q.used);
	return 0;
}

static void budget_series(struct out *o, struct ag_ctx *ctx)
{
	static const char *const fams[B__PASSES][3] = {
		{ "parent_tokens", "gauge", "Tokens in the parent bucket now." },
		{ "parent_packets_total", "counter",
		  "Packets of the parent's agents that reached it, by verdict." },
		{ "parent_refusals_total", "counter",
		  "Packets the parent refused, by reason: its rate, its quota, or a parent above "
		  "it." },
		{ "quota_limit", "gauge",
		  "Tokens a bucket's quota allows a window (agents and parents)." },
		{ "quota_used", "gauge", "Tokens used in the quota's current window." },
	};
	struct budget_rows b = { ctx, o, 0 };

	for (b.pass = 0; b.pass < B__PASSES; b.pass++) {
		family(o, fams[b.pass][0], fams[b.pass][1], fams[b.pass][2]);
		if (b.pass < B_QUOTA_LIMIT) {
			ag_parent_foreach(ctx, budget_parent, &b);
		} else {
			ag_parent_foreach(ctx, budget_quota, &b);
			ag_agent_foreach(ctx, budget_quota, &b);
		}
	}
}

static void stream_series(struct out *o, struct agd_stream *s)
{
	struct agd_stream_stats st;
	size_t i;

	agd_stream_get_stats(s, &st);
	family(o, "stream_clients", "gauge", "WebSocket /v1/stream clients connected.");
	put(o, "agentgate_stream_clients %llu\n", (unsigned long long)st.clients);
	family(o, "stream_connections_total", "counter", "WebSocket handshakes, by result.");
	put(o, "agentgate_stream_connections_total{result=\"accepted\"} %llu\n",
	    (unsigned long long)st.accepted);
	for (i = 0; i < 4; i++)
		put(o, "agentgate_stream_connections_total{result=\"refused_%s\"} %llu\n",
		    agd_stream_refusal_names[i], (unsigned long long)st.refused[i]);
	family(o, "stream_messages_total", "counter", "Stream messages, by outcome.");
	put(o, "agentgate_stream_messages_total{outcome=\"sent\"} %llu\n",
	    (unsigned long long)st.sent);
	put(o, "agentgate_stream_messages_total{outcome=\"coalesced\"} %llu\n",
	    (unsigned long long)st.coalesced);
	put(o, "agentgate_stream_messages_total{outcome=\"lost\"} %llu\n",
	    (unsigned long long)st.lost);
	family(o, "stream_slow_disconnects_total", "counter",
	       "Stream clients cut off for staying behind.");
	put(o, "agentgate_stream_slow_disconnects_total %llu\n", (unsigned long long)st.cut_slow);
}

static void fleet_series(struct out *o, struct agd_fleet *f)
{
	struct agd_fleet_stats st;

	agd_fleet_stats(f, &st);
	family(o, "fleet_connected", "gauge", "Whether the fleet's NATS servers are reachable.");
	put(o, "agentgate_fleet_connected %d\n", st.connected);
	family(o, "fleet_applied_sequence", "gauge", "Last stream sequence this host applied.");
	put(o, "agentgate_fleet_applied_sequence %llu\n", (unsigned long long)st.applied_seq);
	family(o, "fleet_stream_lag", "gauge", "Stream messages not yet applied here.");
	put(o, "agentgate_fleet_stream_lag %llu\n", (unsigned long long)st.lag);
	family(o, "fleet_outbox_depth", "gauge", "Ratings kept locally until NATS takes them.");
	put(o, "agentgate_fleet_outbox_depth %llu\n", (unsigned long long)st.outbox_depth);
	family(o, "fleet_rating_batches", "gauge",
	       "Whether ratings go out several to a stream message (every host reads them).");
	put(o, "agentgate_fleet_rating_batches %d\n", st.batches);
	family(o, "fleet_dead_letters_total", "counter",
	       "Invalid stream messages sent to " AGD_FLEET_DLQ ".");
	put(o, "agentgate_fleet_dead_letters_total %llu\n", (unsigned long long)st.dead_letters);
	family(o, "fleet_published_total", "counter",
	       "Ratings accepted here, by what became of them.");
	put(o, "agentgate_fleet_published_total{result=\"acked\"} %llu\n",
	    (unsigned long long)(st.published - st.duplicates));
	put(o, "agentgate_fleet_published_total{result=\"duplicate\"} %llu\n",
	    (unsigned long long)st.duplicates);
	put(o, "agentgate_fleet_published_total{result=\"outbox\"} %llu\n",
	    (unsigned long long)st.queued);
}

char *agd_metrics_render(struct agd_metrics *m, struct agd_engine *e, struct agd_stream *stream,
			 struct agd_fleet *fleet, __u64 max_agents, size_t *len)
{
	struct out o = { .cap = 16384 };
	struct agd_agent_view *v = NULL;
	size_t n = 0;
	bool *own;

	o.buf = malloc(o.cap);
	if (!o.buf || agd_engine_agent_views(e, &v, &n)) {
		free(o.buf);
		return NULL;
	}
	pthread_mutex_lock(&m->lock);
	own = choose_labeled(m, v, n, max_agents);
	pthread_mutex_unlock(&m->lock);
	if (!own) {
		free(v);
		free(o.buf);
		return NULL;
	}
	agent_series(&o, v, n, own);
	engine_series(&o, e);
	auth_series(&o, m, e);
	dead_letter_series(&o);
	feed_series(&o, e);
	datapath_series(&o, agd_engine_ctx(e), n);
	budget_series(&o, agd_engine_ctx(e));
	if (stream)
		stream_series(&o, stream);
	if (fleet)
		fleet_series(&o, fleet);
	free(own);
	free(v);
	if (o.oom) {
		free(o.buf);
		return NULL;
	}
	*len = o.len;
	return o.buf;
}
