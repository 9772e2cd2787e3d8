// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Demand sharing: an agent seen at N hosts gets its fleet rate once, not N
 * times. Every --fleet-interval each host publishes, per agent, the tokens
 * offered to it (passed + dropped, packets or bytes by the agent's unit) as
 * a grow-only counter in the KV bucket agentgate-demand under
 * "<node>.<agent>" (':' written '='), with the host's time. Every host merges
 * what the others publish (per host the maximum: a late or repeated value
 * never moves a counter back), turns each host's counter into a rate, and
 * sets its own bucket to
 *
 *     local rate = fleet rate * max(floor, own demand / fleet demand)
 *
 * A host whose counter has not grown for three intervals counts as
 * demanding nothing. docs/FLEET.md derives the overshoot bound.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define TABLE_BUCKETS 4096
#define EWMA 0.5 /* weight of the newest rate sample */

struct dem { /* an agent, as this host sees it */
	struct dem *next;
	char name[AG_NAME_MAX + 1];
	__u64 raw_last, offset, total, published, kv_total;
	__u64 prev_total, prev_ms;
	double rate, remote, share;
	bool remote_fresh;
};

struct rem { /* an agent at another host */
	struct rem *next;
	char node[AGD_NODE_MAX + 1];
	char agent[AG_NAME_MAX + 1];
	__u64 total, ms, recv_ms;
	double rate;
};

struct demand {
	struct agd_fleet *f;
	kvStore *kv;
	kvWatcher *w;
	struct dem *dems[TABLE_BUCKETS];
	struct rem *rems[TABLE_BUCKETS];
};

static size_t hash2(const char *a, const char *b)
{
	size_t h = 1469598103934665603ULL;

	while (*a)
		h = (h ^ (unsigned char)*a++) * 1099511628211ULL;
	h = (h ^ '.') * 1099511628211ULL;
	while (b && *b)
		h = (h ^ (unsigned char)*b++) * 1099511628211ULL;
	return h % TABLE_BUCKETS;
}

static struct dem *dem_get(struct demand *d, const char *name)
{
	size_t h = hash2(name, NULL);
	struct dem *x;

	for (x = d->dems[h]; x; x = x->next)
		if (!strcmp(x->name, name))
			return x;
	x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	snprintf(x->name, sizeof(x->name), "%s", name);
	x->share = 1;
	x->next = d->dems[h];
	d->dems[h] = x;
	return x;
}

static struct rem *rem_get(struct demand *d, const char *node, const char *agent)
{
	size_t h = hash2(node, agent);
	struct rem *x;

	for (x = d->rems[h]; x; x = x->next)
		if (!strcmp(x->node, node) && !strcmp(x->agent, agent))
			return x;
	x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	snprintf(x->node, sizeof(x->node), "%s", node);
	snprintf(x->agent, sizeof(x->agent), "%s", agent);
	x->next = d->rems[h];
	d->rems[h] = x;
	return x;
}

static void tables_free(struct demand *d)
{
	size_t i;

	for (i = 0; i < TABLE_BUCKETS; i++) {
		while (d->dems[i]) {
			struct dem *x = d->dems[i];

			d->dems[i] = x->next;
			free(x);
		}
		while (d->rems[i]) {
			struct rem *x = d->rems[i];

			d->rems[i] = x->next;
			free(x);
		}
	}
}

static double ewma(double old, double sample, bool first)
{
	return first ? sample : EWMA * sample + (1 - EWMA) * old;
}

/* ---- the KV bucket ------------------------------------------------------------------ */

static void kv_close(struct demand *d)
{
	if (d->w) {
		kvWatcher_Stop(d->w);
		kvWatcher_Destroy(d->w);
	}
	kvStore_Destroy(d->kv);
	d->w = NULL;
	d->kv = NULL;
}

static int kv_open(struct demand *d)
{
	struct agd_fleet *f = d->f;
	kvConfig kc;
	natsStatus s;

	if (js_KeyValue(&d->kv, f->js, AGD_FLEET_KV) != NATS_OK) {
		kvConfig_Init(&kc);
		kc.Bucket = AGD_FLEET_KV;
		kc.History = 1;
		kc.TTL = 3600LL * 1000000000LL; /* ns: a host gone for an hour is forgotten */
		kc.Replicas = (int)f->opts.replicas;
		s = js_CreateKeyValue(&d->kv, f->js, &kc);
		if (s != NATS_OK) {
			d->kv = NULL;
			return -EIO;
		}
	}
	if (kvStore_WatchAll(&d->w, d->kv, NULL) != NATS_OK) {
		kv_close(d);
		return -EIO;
	}
	return 0;
}

/* "<node>.<agent>" with ':' in the agent written '=' (KV keys have no ':'). */
static void kv_key(const char *node, const char *agent, char *key, size_t len)
{
	size_t off = (size_t)snprintf(key, len, "%s.", node), i;

	for (i = 0; agent[i] && off + 1 < len; i++)
		key[off++] = agent[i] == ':' ? '=' : agent[i];
	key[off] = 0;
}

static void take_entry(struct demand *d, kvEntry *en, __u64 now)
{
	const char *key = kvEntry_Key(en), *dot = strchr(key, '.');
	char node[AGD_NODE_MAX + 1], agent[AG_NAME_MAX + 1], val[64];
	unsigned long long total, ms;
	size_t i, vlen;
	struct rem *r;

	if (kvEntry_Operation(en) != kvOp_Put || !dot || dot - key > AGD_NODE_MAX ||
	    strlen(dot + 1) > AG_NAME_MAX)
		return;
	memcpy(node, key, (size_t)(dot - key));
	node[dot - key] = 0;
	for (i = 0; dot[1 + i]; i++)
		agent[i] = dot[1 + i] == '=' ? ':' : dot[1 + i];
	agent[i] = 0;
	vlen = (size_t)kvEntry_ValueLen(en);
	if (vlen >= sizeof(val))
		return;
	memcpy(val, kvEntry_Value(en), vlen);
	val[vlen] = 0;
	if (sscanf(val, "%llu %llu", &total, &ms) != 2)
		return;
	if (!strcmp(node, d->f->opts.node)) {
		/* Our own, from before a restart: never publish less. */
		struct dem *x = dem_get(d, agent);

		if (x && total > x->kv_total)
			x->kv_total = total;
		return;
	}
	r = rem_get(d, node, agent);
	if (!r || total <= r->total) /* grow-only: per host the maximum wins */
		return;
	if (r->ms && ms > r->ms)
		r->rate = ewma(r->rate, (double)(total - r->total) * 1000.0 / (double)(ms - r->ms),
			       r->rate == 0);
	r->total = total;
	r->ms = ms;
	r->recv_ms = now;
}

/* Reads updates until deadline_ms (wall clock); -EIO when the watcher broke. */
static int drain_watcher(struct demand *d, __u64 deadline_ms)
{
	for (;;) {
		__u64 now = agd_fleet_wall_ms();
		kvEntry *en = NULL;
		natsStatus s;

		if (now >= deadline_ms)
			return 0;
		s = kvWatcher_Next(&en, d->w, (int64_t)(deadline_ms - now < 200 ? deadline_ms - now :
										   200));
		if (s == NATS_OK && en) {
			take_entry(d, en, now);
			kvEntry_Destroy(en);
		} else if (s != NATS_OK && s != NATS_TIMEOUT) {
			return -EIO;
		}
		pthread_mutex_lock(&d->f->lock);
		s = d->f->stopping ? NATS_ILLEGAL_STATE : NATS_OK;
		pthread_mutex_unlock(&d->f->lock);
		if (s != NATS_OK)
			return 0;
	}
}

/* ---- one round: publish ours, merge theirs, set shares --------------------------------- */

static __u64 offered(const struct agd_agent_view *v)
{
	const struct ag_counters *c = &v->counters;

	return v->policy.unit == AG_UNIT_BPS ? c->passed_bytes + c->dropped_bytes :
					       c->passed_packets + c->dropped_packets;
}

static void observe_local(struct demand *d, const struct agd_agent_view *v, __u64 now)
{
	struct dem *x = dem_get(d, v->name);
	__u64 raw = offered(v);
	char key[AGD_NODE_MAX + AG_NAME_MAX + 2], val[64];

	if (!x)
		return;
	if (raw < x->raw_last) /* the counters were reset: keep growing */
		x->offset += x->raw_last;
	x->raw_last = raw;
	x->total = x->offset + raw;
	if (x->total < x->kv_total) {
		x->offset += x->kv_total - x->total;
		x->total = x->kv_total;
	}
	if (x->prev_ms && now > x->prev_ms)
		x->rate = ewma(x->rate, (double)(x->total - x->prev_total) * 1000.0 /
					    (double)(now - x->prev_ms), false);
	x->prev_total = x->total;
	x->prev_ms = now;
	if (x->total == x->published || !d->kv)
		return;
	kv_key(d->f->opts.node, v->name, key, sizeof(key));
	snprintf(val, sizeof(val), "%llu %llu", (unsigned long long)x->total,
		 (unsigned long long)now);
	if (kvStore_Put(NULL, d->kv, key, val, (int)strlen(val)) == NATS_OK)
		x->published = x->total;
}

static void merge_remote(struct demand *d, __u64 now)
{
	__u64 stale = 3 * d->f->opts.interval_ms + 1000;
	size_t i;

	for (i = 0; i < TABLE_BUCKETS; i++) {
		struct dem *x;

		for (x = d->dems[i]; x; x = x->next) {
			x->remote = 0;
			x->remote_fresh = false;
		}
	}
	for (i = 0; i < TABLE_BUCKETS; i++) {
		struct rem *r;

		for (r = d->rems[i]; r; r = r->next) {
			struct dem *x;

			if (now - r->recv_ms > stale || r->rate <= 0)
				continue;
			x = dem_get(d, r->agent);
			if (!x)
				continue;
			x->remote += r->rate;
			x->remote_fresh = true;
		}
	}
}

static void set_share(struct demand *d, const struct agd_agent_view *v)
{
	struct dem *x = dem_get(d, v->name);
	double share = 1;

	if (!x)
		return;
	if (x->remote_fresh) {
		share = x->rate + x->remote > 0 ? x->rate / (x->rate + x->remote) : 0;
		share = fmax(d->f->opts.floor, fmin(1, share));
	}
	/* Map writes only for changes that matter (1 % of the share). */
	if (fabs(share - v->share) < 0.01 * v->share && !(share == 1 && v->share != 1))
		return;
	x->share = share;
	agd_engine_set_share(d->f->e, v->name, share);
}

static void round_once(struct demand *d)
{
	struct agd_agent_view *v = NULL;
	size_t n = 0, i;
	__u64 now = agd_fleet_wall_ms();

	if (agd_engine_agent_views(d->f->e, &v, &n))
		return;
	for (i = 0; i < n; i++)
		observe_local(d, &v[i], now);
	merge_remote(d, now);
	for (i = 0; i < n; i++)
		set_share(d, &v[i]);
	free(v);
}

void *agd_fleet_demand(void *arg)
{
	struct demand *d = calloc(1, sizeof(*d));
	struct agd_fleet *f = arg;
	__u64 next;

	if (!d)
		return NULL;
	d->f = f;
	next = agd_fleet_wall_ms() + f->opts.interval_ms;
	for (;;) {
		bool stop;

		pthread_mutex_lock(&f->lock);
		stop = f->stopping;
		pthread_mutex_unlock(&f->lock);
		if (stop)
			break;
		if (!d->kv && agd_fleet_connected(f) && kv_open(d))
			f->opts.log(AGD_LOG_WARN, "fleet: KV bucket %s not available yet: %s",
				    AGD_FLEET_KV, nats_GetLastError(NULL) ? nats_GetLastError(NULL) :
									     "unknown error");
		if (d->w) {
			if (drain_watcher(d, next))
				kv_close(d); /* opened again next round */
		} else if (!agd_fleet_pause(f, f->opts.interval_ms)) {
			break;
		}
		if (agd_fleet_wall_ms() >= next) {
			round_once(d);
			next = agd_fleet_wall_ms() + f->opts.interval_ms;
		}
	}
	kv_close(d);
	tables_free(d);
	free(d);
	return NULL;
}
