// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* One host's side of demand sharing (demand_host.h). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "demand_host.h"

#include <time.h>

static uint64_t agd_dem_clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#define LOC_BUCKETS 16384
#define STALE 3  /* intervals without news: a host, a total or an owner is gone */
#define FORGET 10 /* intervals: an owner forgets a host's agent */

struct loc { /* an agent this host sees */
	struct loc *next;
	char name[AG_NAME_MAX + 1];
	unsigned int group;
	uint64_t raw_last, offset, total, reported;
	uint64_t prev_total, prev_ms;
	double rate, reported_rate, share;
	bool rated;            /* rate holds a measured interval */
	double fleet;          /* the group's total for it (all hosts' demand) */
	unsigned int hosts;
	uint64_t fleet_ms;     /* when that total came; 0: never */
};

struct group {
	natsSubscription *out; /* its totals, while this host has traffic in it */
	natsSubscription *in;  /* its reports, while this host owns it */
	uint64_t lease_rev, totals_ms;
	bool owner;
	struct agd_dem_entry *report;
	size_t n_report, cap_report;
	bool local; /* this host has traffic in it (this round) */
};

struct agd_dem_host {
	natsConnection *nc;
	jsCtx *js;
	kvStore *kv;
	struct agd_dem_opts o;
	char node[AGD_DEM_NODE_MAX + 1];
	struct agd_dem_ops ops;
	uint64_t epoch, round, started_ms;
	uint64_t round_k, owner_k; /* the interval of the last round, of the last owner work */
	bool slow;                 /* reading the counters is dear: once an interval */
	struct loc **seen;         /* the agents of the last reading */
	size_t n_seen, cap_seen;
	struct loc *locs[LOC_BUCKETS];
	struct group g[AGD_DEM_GROUPS];
	struct agd_dem_agg *agg;
	struct agd_dem_stats st;
};

static struct loc *loc_get(struct agd_dem_host *h, const char *name, bool create)
{
	struct loc **pp = &h->locs[agd_dem_hash(name) % LOC_BUCKETS], *x;

	for (x = *pp; x; x = x->next)
		if (!strcmp(x->name, name))
			return x;
	if (!create)
		return NULL;
	x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	snprintf(x->name, sizeof(x->name), "%s", name);
	x->group = agd_dem_group(name);
	x->share = -1; /* the bucket's own, at the first reading */
	x->next = *pp;
	*pp = x;
	return x;
}

static void subject(char *buf, size_t len, const char *prefix, unsigned int g)
{
	snprintf(buf, len, "%s%u", prefix, g);
}

int agd_dem_host_new(natsConnection *nc, jsCtx *js, const struct agd_dem_opts *o,
		     const struct agd_dem_ops *ops, struct agd_dem_host **out)
{
	struct agd_dem_host *h = calloc(1, sizeof(*h));

	*out = NULL;
	if (!h)
		return -ENOMEM;
	h->agg = agd_dem_agg_new();
	if (!h->agg) {
		free(h);
		return -ENOMEM;
	}
	h->nc = nc;
	h->js = js;
	h->o = *o;
	h->ops = *ops;
	snprintf(h->node, sizeof(h->node), "%s", o->node);
	h->o.node = h->node;
	*out = h;
	return 0;
}

/* ---- the lease bucket ---------------------------------------------------------------- */

static kvStore *leases(struct agd_dem_host *h)
{
	kvConfig kc;

	if (h->kv || !h->js)
		return h->kv;
	if (js_KeyValue(&h->kv, h->js, AGD_DEM_LEASES) == NATS_OK)
		return h->kv;
	kvConfig_Init(&kc);
	kc.Bucket = AGD_DEM_LEASES;
	kc.History = 1;
	kc.TTL = (int64_t)(STALE * h->o.interval_ms) * 1000000LL;
	kc.Replicas = (int)(h->o.replicas ? h->o.replicas : 1);
	if (js_CreateKeyValue(&h->kv, h->js, &kc) != NATS_OK) {
		h->kv = NULL;
		/* Another host created it meanwhile. */
		if (js_KeyValue(&h->kv, h->js, AGD_DEM_LEASES) != NATS_OK)
			h->kv = NULL;
	}
	return h->kv;
}

static void lose(struct agd_dem_host *h, unsigned int g)
{
	if (h->g[g].in) {
		natsSubscription_Unsubscribe(h->g[g].in);
		natsSubscription_Destroy(h->g[g].in);
		h->g[g].in = NULL;
	}
	if (h->g[g].owner) {
		h->g[g].owner = false;
		h->st.lease_losses++;
		h->st.groups_owned--;
	}
}

/* Refreshes the leases held; takes at most one a group with traffic here
 * lacks, starting at a place of its own (hosts do not all race for the
 * same group), and a third only for a group nobody took for twice the
 * stale time: the merge spreads over the hosts. */
static void tend_leases(struct agd_dem_host *h, uint64_t now)
{
	uint64_t stale = STALE * h->o.interval_ms;
	kvStore *kv = leases(h);
	unsigned int g, i, first = (unsigned int)((agd_dem_hash(h->node) + h->round) % AGD_DEM_GROUPS);
	bool took = false;

	if (!kv)
		return;
	for (g = 0; g < AGD_DEM_GROUPS; g++) {
		struct group *x = &h->g[g];
		char key[16];
		uint64_t rev = 0;

		if (!x->owner)
			continue;
		snprintf(key, sizeof(key), "g%u", g);
		if (kvStore_Update(&rev, kv, key, h->node, (int)strlen(h->node), x->lease_rev) ==
		    NATS_OK)
			x->lease_rev = rev;
		else
			lose(h, g);
	}
	for (i = 0; i < AGD_DEM_GROUPS && !took && h->round >= 2; i++) {
		struct group *x = &h->g[g = (first + i) % AGD_DEM_GROUPS];
		uint64_t quiet = x->totals_ms ? now - x->totals_ms : now - h->started_ms;
		char key[16], subj[64];
		uint64_t rev = 0;

		/* Only where totals stopped (or never came). */
		if (x->owner || !x->local || quiet <= stale)
			continue;
		if (h->st.groups_owned >= 2 && quiet <= 2 * stale)
			continue;
		snprintf(key, sizeof(key), "g%u", g);
		took = true; /* one attempt a round, won or not */
		if (kvStore_Create(&rev, kv, key, h->node, (int)strlen(h->node)) != NATS_OK)
			continue;
		subject(subj, sizeof(subj), AGD_DEM_IN, g);
		if (natsConnection_SubscribeSync(&x->in, h->nc, subj) != NATS_OK) {
			x->in = NULL;
			continue; /* the lease expires: another takes it */
		}
		natsSubscription_SetPendingLimits(x->in, -1, -1);
		x->owner = true;
		x->lease_rev = rev;
		h->st.groups_owned++;
		h->st.lease_takes++;
		if (h->o.log)
			h->o.log(6, "fleet: this host now merges the demand of group %u", g);
	}
}

/* ---- messages -------------------------------------------------------------------------- */

static void publish(struct agd_dem_host *h, const char *prefix, unsigned int g,
		    const struct agd_dem_head *hd, const struct agd_dem_entry *e, size_t n)
{
	char subj[64];
	uint8_t *buf;
	size_t len;

	if (agd_dem_encode(hd, e, n, &buf, &len))
		return;
	subject(subj, sizeof(subj), prefix, g);
	if (natsConnection_Publish(h->nc, subj, buf, (int)len) == NATS_OK) {
		h->st.msgs_out++;
		h->st.bytes_out += len;
	}
	free(buf);
}

/* Every message waiting on sub, decoded, to fn. */
static void drain(struct agd_dem_host *h, natsSubscription *sub,
		  void (*fn)(struct agd_dem_host *h, const struct agd_dem_head *hd,
			     const struct agd_dem_entry *e, size_t n, uint64_t now),
		  uint64_t now)
{
	natsMsg *m = NULL;

	while (sub && natsSubscription_NextMsg(&m, sub, 0) == NATS_OK && m) {
		struct agd_dem_entry *e = NULL;
		struct agd_dem_head hd;
		size_t n = 0;

		h->st.msgs_in++;
		h->st.bytes_in += (uint64_t)natsMsg_GetDataLength(m);
		if (agd_dem_decode((const uint8_t *)natsMsg_GetData(m),
				   (size_t)natsMsg_GetDataLength(m), &hd, &e, &n))
			h->st.invalid++;
		else
			fn(h, &hd, e, n, now);
		free(e);
		natsMsg_Destroy(m);
		m = NULL;
	}
}

static void take_totals(struct agd_dem_host *h, const struct agd_dem_head *hd,
			const struct agd_dem_entry *e, size_t n, uint64_t now)
{
	size_t i;

	if (hd->kind != AGD_DEM_TOTALS)
		return;
	h->g[hd->group].totals_ms = now;
	for (i = 0; i < n; i++) {
		struct loc *x = loc_get(h, e[i].agent, false);

		if (!x)
			continue;
		x->fleet = e[i].rate;
		x->hosts = e[i].hosts;
		x->fleet_ms = now;
	}
}

static void take_report(struct agd_dem_host *h, const struct agd_dem_head *hd,
			const struct agd_dem_entry *e, size_t n, uint64_t now)
{
	if (hd->kind == AGD_DEM_REPORT && h->g[hd->group].owner)
		agd_dem_agg_take(h->agg, hd, e, n, now);
}

/* ---- one round --------------------------------------------------------------------------- */

static int add_report(struct group *x, const struct loc *l)
{
	if (x->n_report == x->cap_report) {
		size_t cap = x->cap_report ? x->cap_report * 2 : 64;
		struct agd_dem_entry *g = realloc(x->report, cap * sizeof(*g));

		if (!g)
			return -ENOMEM;
		x->report = g;
		x->cap_report = cap;
	}
	memset(&x->report[x->n_report], 0, sizeof(x->report[0]));
	memcpy(x->report[x->n_report].agent, l->name, sizeof(l->name));
	x->report[x->n_report].counter = l->total;
	x->report[x->n_report].rate = l->rate;
	x->n_report++;
	return 0;
}

/* The agent's counter and rate from what the host offered it. */
static void observe(struct agd_dem_host *h, struct loc *x, uint64_t raw, uint64_t now)
{
	if (raw < x->raw_last) /* the map counters were reset: keep growing */
		x->offset += x->raw_last;
	x->raw_last = raw;
	x->total = x->offset + raw;
	if (x->prev_ms && now > x->prev_ms) {
		x->rate = (double)(x->total - x->prev_total) * 1000.0 / (double)(now - x->prev_ms);
		x->rated = true;
	}
	x->prev_total = x->total;
	x->prev_ms = now;
}

static void set_share(struct agd_dem_host *h, struct loc *x, uint64_t now)
{
	uint64_t stale = STALE * h->o.interval_ms;
	double share;

	if (!x->rated || !h->g[x->group].totals_ms || now - h->g[x->group].totals_ms > stale)
		return; /* no rate yet, or no totals of its group: the last share stays */
	if (!x->fleet_ms || now - x->fleet_ms > stale)
		share = 1; /* in no total: nobody's demand but perhaps ours */
	else
		share = agd_dem_share(x->rate, fmax(0, x->fleet - x->reported_rate), h->o.floor);
	if (fabs(share - x->share) < 0.01 * x->share && !(share == 1 && x->share != 1))
		return;
	x->share = share;
	h->ops.set_share(h->ops.arg, x->name, share);
}

/* The counters now: each agent's rate since the last reading. */
static void observe_all(struct agd_dem_host *h, uint64_t now)
{
	struct agd_dem_local *v = NULL;
	size_t n = 0, i;

	if (h->ops.agents(h->ops.arg, &v, &n))
		return;
	if (n > h->cap_seen) {
		struct loc **g = realloc(h->seen, n * sizeof(*g));

		if (!g) {
			free(v);
			return;
		}
		h->seen = g;
		h->cap_seen = n;
	}
	h->n_seen = 0;
	for (i = 0; i < n; i++) {
		struct loc *x = loc_get(h, v[i].agent, true);

		if (!x)
			continue;
		if (x->share < 0)
			x->share = v[i].share;
		observe(h, x, v[i].offered, now);
		h->seen[h->n_seen++] = x;
	}
	free(v);
}

static void send_reports(struct agd_dem_host *h, uint64_t now)
{
	struct agd_dem_head hd = { .kind = AGD_DEM_REPORT, .epoch = h->epoch, .ms = now };
	unsigned int g;
	size_t i;

	for (g = 0; g < AGD_DEM_GROUPS; g++) {
		h->g[g].local = false;
		h->g[g].n_report = 0;
	}
	for (i = 0; i < h->n_seen; i++) {
		struct loc *x = h->seen[i];

		h->g[x->group].local = true;
		if (x->total != x->reported && !add_report(&h->g[x->group], x)) {
			x->reported = x->total;
			x->reported_rate = x->rate;
		}
	}
	snprintf(hd.node, sizeof(hd.node), "%s", h->node);
	for (g = 0; g < AGD_DEM_GROUPS; g++) {
		struct group *x = &h->g[g];

		hd.group = g;
		if (x->n_report) {
			publish(h, AGD_DEM_IN, g, &hd, x->report, x->n_report);
			if (x->owner) /* ours, without the round trip */
				agd_dem_agg_take(h->agg, &hd, x->report, x->n_report, now);
		}
		if (x->local && !x->out) {
			char subj[64];

			subject(subj, sizeof(subj), AGD_DEM_OUT, g);
			if (natsConnection_SubscribeSync(&x->out, h->nc, subj) != NATS_OK)
				x->out = NULL;
			else
				natsSubscription_SetPendingLimits(x->out, -1, -1);
		}
	}
}

/* The groups owned: their reports merged, their totals sent. */
static void owner_work(struct agd_dem_host *h, uint64_t now)
{
	unsigned int g;

	for (g = 0; g < AGD_DEM_GROUPS; g++) {
		struct agd_dem_entry *t = NULL;
		struct agd_dem_head th = { .kind = AGD_DEM_TOTALS, .epoch = h->epoch, .ms = now,
					   .group = g };
		size_t nt = 0;

		if (!h->g[g].owner)
			continue;
		drain(h, h->g[g].in, take_report, now);
		snprintf(th.node, sizeof(th.node), "%s", h->node);
		if (!agd_dem_agg_totals(h->agg, g, now, STALE * h->o.interval_ms, &t, &nt))
			publish(h, AGD_DEM_OUT, g, &th, t, nt);
		free(t);
	}
}

/*
 * The beat, on the wall clock (hosts' clocks agree to well within a
 * quarter interval): every interval at its start the reports; at its
 * middle the owners merge them and send the totals; at every tick the
 * totals that came are applied. With the counters read every tick, a
 * host's reported rate is that of the last quarter interval: a change of
 * demand reaches every host's share within two intervals.
 */
void agd_dem_host_tick(struct agd_dem_host *h, uint64_t now)
{
	uint64_t iv = h->o.interval_ms ? h->o.interval_ms : 1000, k = now / iv;
	bool round = k != h->round_k;
	unsigned int g;
	size_t i;

	if (!h->epoch)
		h->epoch = h->started_ms = now;
	if (round || !h->slow) {
		uint64_t t0 = agd_dem_clock_ms();

		observe_all(h, now);
		/* Reading the counters costs more than 5 % of a tick: once an
		 * interval is enough (shares then settle in about three). */
		h->slow = agd_dem_clock_ms() - t0 > iv / 80;
	}
	for (g = 0; g < AGD_DEM_GROUPS; g++)
		drain(h, h->g[g].out, take_totals, now);
	for (i = 0; i < h->n_seen; i++)
		set_share(h, h->seen[i], now);
	if (round) {
		h->round_k = k;
		h->round++;
		send_reports(h, now);
		tend_leases(h, now);
		agd_dem_agg_expire(h->agg, now, FORGET * iv);
	}
	if (h->st.groups_owned && now % iv >= iv / 2 && h->owner_k != k) {
		h->owner_k = k;
		owner_work(h, now);
	}
}

void agd_dem_host_stats(const struct agd_dem_host *h, struct agd_dem_stats *st)
{
	*st = h->st;
}

void agd_dem_host_free(struct agd_dem_host *h)
{
	unsigned int g;
	size_t i;

	if (!h)
		return;
	for (g = 0; g < AGD_DEM_GROUPS; g++) {
		if (h->g[g].owner && h->kv) { /* another host may take it at once */
			char key[16];

			snprintf(key, sizeof(key), "g%u", g);
			kvStore_Delete(h->kv, key);
		}
		lose(h, g);
		if (h->g[g].out) {
			natsSubscription_Unsubscribe(h->g[g].out);
			natsSubscription_Destroy(h->g[g].out);
		}
		free(h->g[g].report);
	}
	for (i = 0; i < LOC_BUCKETS; i++)
		while (h->locs[i]) {
			struct loc *x = h->locs[i];

			h->locs[i] = x->next;
			free(x);
		}
	kvStore_Destroy(h->kv);
	agd_dem_agg_free(h->agg);
	free(h->seen);
	free(h);
}
