/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Demand sharing's messages and its aggregation, without NATS (docs/FLEET.md,
 * "Demand sharing"): what the daemon's demand thread and bench/fleet_sim
 * both speak.
 *
 * Agents fall into AGD_DEM_GROUPS groups by a hash of their name. Every
 * interval a host sends, per group it has traffic in, one report of its
 * changed counters to agentgate.demand.in.<group>: per agent the grow-only
 * counter of tokens offered to it there and the host's demand rate. The
 * group's owner (one host, by a lease) merges the reports per host by
 * maximum of (epoch, counter), so a late, repeated or reordered report never
 * moves a host back, and sends the group's totals, per agent the sum of the
 * fresh hosts' rates, to agentgate.demand.out.<group>, which the hosts with
 * traffic in the group take. So a host's messages per interval grow with the
 * groups it has traffic in, and the work at a host with the agents it sees;
 * only the owners see every host's reports of their groups.
 *
 * A message: "AGD" and a kind byte, then the sender's node name (a length
 * byte and the bytes), epoch (u64: the sender's start, ms), time (u64, ms),
 * group (u16), count (u32), then the entries: a length byte and the agent's
 * name, then for a report the counter (LEB128) and the rate (f32), for
 * totals the total rate (f32) and the hosts it sums (u16). Little endian.
 *
 * Quotas (docs/BUDGETS.md) go beside: each host publishes the whole state
 * of its quotas' counts to agentgate.quota.<node> (kind QUOTAS, group 0,
 * every group's names in one message), per name the window index and the
 * tokens used in it (two LEB128), and every host adds up the others'.
 */
#ifndef AGENTGATED_FLEET_DEMAND_WIRE_H
#define AGENTGATED_FLEET_DEMAND_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agentgate.h"

#define AGD_DEM_GROUPS 16
#define AGD_DEM_NODE_MAX 32
#define AGD_DEM_IN "agentgate.demand.in."   /* + group */
#define AGD_DEM_OUT "agentgate.demand.out." /* + group */

enum agd_dem_kind { AGD_DEM_REPORT = 1, AGD_DEM_TOTALS = 2, AGD_DEM_QUOTAS = 3 };
#define AGD_DEM_QUOTA "agentgate.quota." /* + node */

struct agd_dem_head {
	enum agd_dem_kind kind;
	char node[AGD_DEM_NODE_MAX + 1];
	uint64_t epoch; /* the sender's start (ms): a later one supersedes */
	uint64_t ms;    /* when it was sent, the sender's clock */
	unsigned int group;
};

struct agd_dem_entry {
	char agent[AG_NAME_MAX + 1];
	uint64_t counter; /* report: tokens offered at the host, grow-only */
	double rate;      /* report: the host's demand, tokens/s; totals: the sum */
	unsigned int hosts; /* totals: hosts summed */
	uint64_t q_idx, q_used; /* quotas: the window and the tokens used in it */
};

unsigned int agd_dem_group(const char *agent);
/* FNV-1a of a string: the group's hash, and the hosts' own tables'. */
uint64_t agd_dem_hash(const char *s);

/* *out malloc'ed. */
int agd_dem_encode(const struct agd_dem_head *h, const struct agd_dem_entry *e, size_t n,
		   uint8_t **out, size_t *len);
/* *e malloc'ed (n entries); -EINVAL for a damaged message. */
int agd_dem_decode(const uint8_t *buf, size_t len, struct agd_dem_head *h,
		   struct agd_dem_entry **e, size_t *n);

/* ---- the owner's merge ---------------------------------------------------------- */

struct agd_dem_agg;

struct agd_dem_agg *agd_dem_agg_new(void);
void agd_dem_agg_free(struct agd_dem_agg *a);
/* Merges one report: per (host, agent) the newest (epoch, counter) wins;
 * the entries of an older epoch or a smaller counter change nothing. */
int agd_dem_agg_take(struct agd_dem_agg *a, const struct agd_dem_head *h,
		     const struct agd_dem_entry *e, size_t n, uint64_t now_ms);
/* The group's totals: per agent the sum of the rates of hosts heard from
 * within stale_ms (local clock) with a rate above 0. *out malloc'ed. */
int agd_dem_agg_totals(struct agd_dem_agg *a, unsigned int group, uint64_t now_ms,
		       uint64_t stale_ms, struct agd_dem_entry **out, size_t *n);
/* Forgets what no host reported within forget_ms. */
void agd_dem_agg_expire(struct agd_dem_agg *a, uint64_t now_ms, uint64_t forget_ms);
size_t agd_dem_agg_size(const struct agd_dem_agg *a);

/* A host's share of the fleet rate from its own demand and the others'
 * (a group's total less what the host itself last reported): 1 while
 * nobody else demands, else max(floor, own / (own + others)). */
double agd_dem_share(double own, double others, double floor);

#endif
