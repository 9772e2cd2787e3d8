/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Quotas across a fleet (quotas.c): each host's counts published every
 * interval on agentgate.quota.<node>, the others' use of each quota taken
 * off the limit this host's maps get. Run by the demand thread (demand.c).
 */
#ifndef AGENTGATED_FLEET_QUOTAS_H
#define AGENTGATED_FLEET_QUOTAS_H

#include <stdint.h>

struct agd_fleet;
struct agd_fleet_quotas;

/* NULL without memory or a subscription. */
struct agd_fleet_quotas *agd_fleet_quotas_new(struct agd_fleet *f);
/* Called on every tick of the demand thread: takes what came, and once an
 * interval publishes this host's counts and applies the others'. */
void agd_fleet_quotas_tick(struct agd_fleet_quotas *q, uint64_t now_ms);
void agd_fleet_quotas_free(struct agd_fleet_quotas *q);

#endif
