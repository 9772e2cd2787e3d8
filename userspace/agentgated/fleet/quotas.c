// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Quotas across a fleet (docs/FLEET.md, "Quotas"): every interval each host
 * publishes the whole state of its quotas' counts (the window running and
 * the tokens used in it, each quota this host used) to
 * agentgate.quota.<node>, and takes every other host's. A quota's limit in
 * this host's maps is then what the others left of it: the configured
 * limit less their use of the same window (agd_engine_set_quota_others).
 * Between two rounds the hosts may each use what was left at the last
 * one: the fleet admits at most N + what every host used in one interval
 * after the last round (the bound in docs/FLEET.md).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "demand_wire.h"
#include "quotas.h"

#define STALE_ROUNDS 4 /* a host not heard for this many intervals counts no more */
#define PART_MAX 20000 /* entries a message: well under NATS's 1 MiB payload */

struct peer {
	char node[AGD_DEM_NODE_MAX + 1];
	uint64_t epoch, ms, recv_ms;
	struct agd_dem_entry *e;
	size_t n;
};

struct agd_fleet_quotas {
	struct agd_fleet *f;
	natsSubscription *sub;
	uint64_t epoch, last_round;
	struct peer *peers;
	size_t n_peers;
	/* the names this host set others for at the last round */
	char (*applied)[AG_NAME_MAX + 1];
	size_t n_applied;
};

struct agd_fleet_quotas *agd_fleet_quotas_new(struct agd_fleet *f)
{
	struct agd_fleet_quotas *q = calloc(1, sizeof(*q));
	char subj[64];

	if (!q)
		return NULL;
	q->f = f;
	snprintf(subj, sizeof(subj), "%s*", AGD_DEM_QUOTA);
	if (natsConnection_SubscribeSync(&q->sub, f->nc, subj) != NATS_OK) {
		free(q);
		return NULL;
	}
	natsSubscription_SetPendingLimits(q->sub, -1, -1);
	return q;
}

void agd_fleet_quotas_free(struct agd_fleet_quotas *q)
{
	size_t i;

	if (!q)
		return;
	natsSubscription_Unsubscribe(q->sub);
	natsSubscription_Destroy(q->sub);
	for (i = 0; i < q->n_peers; i++)
		free(q->peers[i].e);
	free(q->peers);
	free(q->applied);
	free(q);
}

/* A host's message: a newer one replaces its state, a part of the same
 * round adds to it, an older one changes nothing. */
static void take(struct agd_fleet_quotas *q, const struct agd_dem_head *h,
		 struct agd_dem_entry *e, size_t n, uint64_t now)
{
	struct agd_dem_entry *grown;
	struct peer *p = NULL;
	size_t i;

	if (h->kind != AGD_DEM_QUOTAS || !strcmp(h->node, q->f->opts.node))
		return;
	for (i = 0; i < q->n_peers && !p; i++)
		if (!strcmp(q->peers[i].node, h->node))
			p = &q->peers[i];
	if (!p) {
		struct peer *g = realloc(q->peers, (q->n_peers + 1) * sizeof(*g));

		if (!g)
			return;
		q->peers = g;
		p = &g[q->n_peers++];
		memset(p, 0, sizeof(*p));
		snprintf(p->node, sizeof(p->node), "%s", h->node);
	}
	if (h->epoch < p->epoch || (h->epoch == p->epoch && h->ms < p->ms))
		return; /* late */
	if (h->epoch != p->epoch || h->ms != p->ms)
		p->n = 0; /* a new round: its state replaces the last */
	grown = n ? realloc(p->e, (p->n + n) * sizeof(*grown)) : p->e;
	if (n && !grown)
		return;
	p->e = grown;
	if (n)
		memcpy(p->e + p->n, e, n * sizeof(*e));
	p->n += n;
	p->epoch = h->epoch;
	p->ms = h->ms;
	p->recv_ms = now;
}

static void drain(struct agd_fleet_quotas *q, uint64_t now)
{
	natsMsg *m = NULL;

	while (natsSubscription_NextMsg(&m, q->sub, 0) == NATS_OK && m) {
		struct agd_dem_entry *e = NULL;
		struct agd_dem_head h;
		size_t n = 0;

		if (!agd_dem_decode((const uint8_t *)natsMsg_GetData(m),
				    (size_t)natsMsg_GetDataLength(m), &h, &e, &n))
			take(q, &h, e, n, now);
		free(e);
		natsMsg_Destroy(m);
		m = NULL;
	}
}

/* This host's counts, in parts of at most PART_MAX entries. */
static void publish(struct agd_fleet_quotas *q, uint64_t now)
{
	struct agd_dem_head h = { .kind = AGD_DEM_QUOTAS, .epoch = q->epoch, .ms = now };
	struct agd_quota_view *v = NULL;
	struct agd_dem_entry *e;
	size_t n = 0, i, k;
	char subj[AGD_DEM_NODE_MAX + 32];

	snprintf(h.node, sizeof(h.node), "%s", q->f->opts.node);
	snprintf(subj, sizeof(subj), "%s%s", AGD_DEM_QUOTA, q->f->opts.node);
	if (agd_engine_quota_views(q->f->e, &v, &n))
		return;
	e = calloc(n ? n : 1, sizeof(*e));
	for (i = 0; e && i < n; i++) {
		snprintf(e[i].agent, sizeof(e[i].agent), "%s", v[i].name);
		e[i].q_idx = v[i].idx;
		e[i].q_used = v[i].used;
	}
	for (k = 0; e && (k < n || (!n && !k)); k += PART_MAX) {
		uint8_t *buf;
		size_t len, part = n - k < PART_MAX ? n - k : PART_MAX;

		if (agd_dem_encode(&h, e + k, part, &buf, &len))
			break;
		natsConnection_Publish(q->f->nc, subj, buf, (int)len);
		free(buf);
		if (!n)
			break; /* an empty state is a message too: it clears ours */
	}
	free(e);
	free(v);
}

static int by_name_idx(const void *pa, const void *pb)
{
	const struct agd_dem_entry *a = pa, *b = pb;
	int c = strcmp(a->agent, b->agent);

	if (c)
		return c;
	return a->q_idx < b->q_idx ? 1 : a->q_idx > b->q_idx ? -1 : 0; /* newest first */
}

/* The others' use of each quota, of its newest window, to the engine;
 * quotas no other host reports any more go back to their whole limit. */
static void apply(struct agd_fleet_quotas *q, uint64_t now)
{
	uint64_t stale = STALE_ROUNDS * q->f->opts.interval_ms;
	char(*applied)[AG_NAME_MAX + 1];
	struct agd_dem_entry *all;
	size_t total = 0, i, j, n = 0;

	for (i = 0; i < q->n_peers; i++)
		if (now - q->peers[i].recv_ms <= stale)
			total += q->peers[i].n;
	all = calloc(total ? total : 1, sizeof(*all));
	applied = calloc(total ? total : 1, sizeof(*applied));
	if (!all || !applied) {
		free(all);
		free(applied);
		return;
	}
	for (i = 0; i < q->n_peers; i++)
		if (now - q->peers[i].recv_ms <= stale && q->peers[i].n) {
			memcpy(all + n, q->peers[i].e, q->peers[i].n * sizeof(*all));
			n += q->peers[i].n;
		}
	qsort(all, n, sizeof(*all), by_name_idx);
	for (i = 0, total = 0; i < n; i = j) {
		uint64_t sum = 0;

		for (j = i; j < n && !strcmp(all[j].agent, all[i].agent); j++)
			if (all[j].q_idx == all[i].q_idx)
				sum += all[j].q_used;
		if (agd_engine_set_quota_others(q->f->e, all[i].agent, all[i].q_idx, sum) != -ENOENT)
			memcpy(applied[total++], all[i].agent, sizeof(applied[0]));
	}
	for (i = 0; i < q->n_applied; i++) {
		bool still = false;

		for (j = 0; j < total && !still; j++)
			still = !strcmp(q->applied[i], applied[j]);
		if (!still)
			agd_engine_set_quota_others(q->f->e, q->applied[i], 0, 0);
	}
	free(all);
	free(q->applied);
	q->applied = applied;
	q->n_applied = total;
}

void agd_fleet_quotas_tick(struct agd_fleet_quotas *q, uint64_t now_ms)
{
	uint64_t round = now_ms / (q->f->opts.interval_ms ? q->f->opts.interval_ms : 1);

	if (!q->epoch)
		q->epoch = now_ms;
	drain(q, now_ms);
	if (round == q->last_round)
		return;
	q->last_round = round;
	publish(q, now_ms);
	apply(q, now_ms);
}
