// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Demand sharing in agentgated: an agent seen at N hosts gets its fleet rate
 * once, not N times. The protocol (per-group reports, an owner per group
 * that sends the totals) is demand_host.c's; this thread runs its rounds
 * every --fleet-interval against the engine: the agents' offered tokens
 * (passed + dropped, packets or bytes by the agent's unit) in, each
 * host's share out:
 *
 *     local rate = fleet rate * max(floor, own demand / fleet demand)
 *
 * Parents (docs/BUDGETS.md) go the same way: the packets or bytes of their
 * agents that reached them in, their share of the parent's rate out.
 *
 * docs/FLEET.md derives the overshoot bound and has the messages' cost.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "demand_host.h"
#include "quotas.h"

static __u64 offered(const struct agd_agent_view *v)
{
	const struct ag_counters *c = &v->counters;

	return v->policy.unit == AG_UNIT_BPS ? c->passed_bytes + c->dropped_bytes :
					       c->passed_packets + c->dropped_packets;
}

/* Parents share the agents' name space, so the protocol carries them as
 * it carries agents: what reached each parent here, its share back. */
static int add_parents(struct agd_fleet *f, struct agd_dem_local **out, size_t *n)
{
	struct agd_parent_view *p = NULL;
	struct agd_dem_local *grown;
	size_t np = 0, i;

	if (agd_engine_parent_views(f->e, &p, &np))
		return -ENOMEM;
	grown = np ? realloc(*out, (*n + np) * sizeof(**out)) : *out;
	if (!grown) {
		free(p);
		return -ENOMEM;
	}
	*out = grown;
	for (i = 0; i < np; i++) {
		const struct ag_counters *c = &p[i].counters;
		__u64 o = p[i].unit == AG_UNIT_BPS ? c->passed_bytes + c->dropped_bytes :
						     c->passed_packets + c->dropped_packets;

		if (!o)
			continue;
		memcpy(grown[*n].agent, p[i].name, sizeof(p[i].name));
		grown[*n].offered = o;
		grown[*n].share = p[i].share;
		(*n)++;
	}
	free(p);
	return 0;
}

static int agents(void *arg, struct agd_dem_local **out, size_t *n)
{
	struct agd_fleet *f = arg;
	struct agd_agent_view *v = NULL;
	size_t i, k = 0;

	*out = NULL;
	*n = 0;
	if (agd_engine_agent_views(f->e, &v, n))
		return -ENOMEM;
	*out = calloc(*n ? *n : 1, sizeof(**out));
	if (!*out) {
		free(v);
		return -ENOMEM;
	}
	for (i = 0; i < *n; i++) {
		if (!offered(&v[i]))
			continue; /* no traffic here: nothing to share */
		memcpy((*out)[k].agent, v[i].name, sizeof(v[i].name));
		(*out)[k].offered = offered(&v[i]);
		(*out)[k].share = v[i].share;
		k++;
	}
	*n = k;
	free(v);
	return add_parents(f, out, n);
}

static void set_share(void *arg, const char *agent, double share)
{
	struct agd_fleet *f = arg;

	if (agd_engine_set_share(f->e, agent, share) == -ENOENT)
		agd_engine_set_parent_share(f->e, agent, share);
}

void *agd_fleet_demand(void *arg)
{
	struct agd_fleet *f = arg;
	struct agd_dem_opts o = { .node = f->opts.node, .interval_ms = f->opts.interval_ms,
				  .floor = f->opts.floor, .replicas = f->opts.replicas,
				  .log = f->opts.log };
	struct agd_dem_ops ops = { .agents = agents, .set_share = set_share, .arg = f };
	struct agd_dem_host *h = NULL;
	struct agd_fleet_quotas *fq;

	if (agd_dem_host_new(f->nc, f->js, &o, &ops, &h)) {
		f->opts.log(AGD_LOG_ERR, "fleet: demand sharing cannot start: out of memory");
		return NULL;
	}
	fq = agd_fleet_quotas_new(f);
	if (!fq)
		f->opts.log(AGD_LOG_ERR, "fleet: quotas are counted per host: cannot subscribe "
			    "to " AGD_DEM_QUOTA "*");
	/* Ticks on the quarters of the interval, on the wall clock: every host
	 * reports at the same moment and the owners merge half an interval
	 * later (demand_host.h). */
	for (;;) {
		__u64 q = f->opts.interval_ms / 4 ? f->opts.interval_ms / 4 : 1;
		__u64 now = agd_fleet_wall_ms(), next = (now / q + 1) * q;

		if (!agd_fleet_pause(f, next - now))
			break;
		if (agd_fleet_connected(f)) {
			agd_dem_host_tick(h, agd_fleet_wall_ms());
			if (fq)
				agd_fleet_quotas_tick(fq, agd_fleet_wall_ms());
		}
	}
	agd_fleet_quotas_free(fq);
	agd_dem_host_free(h);
	return NULL;
}
