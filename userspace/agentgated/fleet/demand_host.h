/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * One host's side of demand sharing (demand_wire.h has the messages): each
 * round it reports its changed counters per group, owns the groups whose
 * lease it holds (merging their reports, sending their totals), takes the
 * totals of the groups it has traffic in and sets its shares. The daemon's
 * demand thread (demand.c) and bench/fleet_sim run it alike; what it reads
 * and writes locally goes through agd_dem_ops.
 *
 * Owners: a lease per group in the KV bucket agentgate-demand-owners (key
 * g<group>, the owner's node name), created with kvStore_Create (only where
 * there is none) and refreshed every round with kvStore_Update (only while
 * it is still the owner's revision); the bucket's age limit, three
 * intervals, lets a lease whose owner stopped expire. A host tries to take
 * the lease of a group it has traffic in when no totals of it came for
 * three intervals.
 */
#ifndef AGENTGATED_FLEET_DEMAND_HOST_H
#define AGENTGATED_FLEET_DEMAND_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nats/nats.h>

#include "demand_wire.h"

#define AGD_DEM_LEASES "agentgate-demand-owners"

struct agd_dem_local {
	char agent[AG_NAME_MAX + 1];
	uint64_t offered; /* tokens offered here so far (may restart from 0) */
	double share;     /* the share the bucket has now */
};

struct agd_dem_ops {
	/* The agents this host sees now; *out malloc'ed. */
	int (*agents)(void *arg, struct agd_dem_local **out, size_t *n);
	void (*set_share)(void *arg, const char *agent, double share);
	void *arg;
};

struct agd_dem_opts {
	const char *node;
	uint64_t interval_ms;
	double floor;
	unsigned int replicas; /* of the lease bucket when this host creates it */
	void (*log)(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
};

struct agd_dem_stats {
	uint64_t msgs_out, bytes_out, msgs_in, bytes_in;
	uint64_t groups_owned, lease_takes, lease_losses;
	uint64_t invalid; /* messages that did not decode */
};

struct agd_dem_host;

int agd_dem_host_new(natsConnection *nc, jsCtx *js, const struct agd_dem_opts *o,
		     const struct agd_dem_ops *ops, struct agd_dem_host **out);
/* Called at least four times an interval, on the quarters of the wall
 * clock (now_ms): reads the counters, applies the totals that came, sends
 * the reports at an interval's start and, as an owner, the totals at its
 * middle. */
void agd_dem_host_tick(struct agd_dem_host *h, uint64_t now_ms);
void agd_dem_host_stats(const struct agd_dem_host *h, struct agd_dem_stats *st);
void agd_dem_host_free(struct agd_dem_host *h);

#endif
