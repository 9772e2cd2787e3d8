/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The fleet: many agentgated hosts as one replicated state machine over a
 * NATS JetStream stream (docs/FLEET.md).
 *
 *  - Ratings and operator changes accepted at any host are published to the
 *    stream AGENTGATE (agentgate.ratings.<agent>, agentgate.policy.<op>),
 *    each with Nats-Msg-Id, and answered once JetStream acknowledged them and
 *    this host applied them. Every host applies the whole stream in order
 *    through its own durable consumer (agentgate-<node>); the engine stores
 *    the stream sequence in the transaction that applied it.
 *  - While NATS is unreachable ratings go to a durable local outbox
 *    (<state dir>/outbox) and are published when it returns; operator
 *    changes are refused (503).
 *  - Demand: each host reports its per-agent offered load (grow-only
 *    counters, merged by per-host maximum) per group of agents to the
 *    group's owner, which sends back the fleet's totals; each host gives its
 *    bucket the demand-weighted share of the fleet rate (demand_host.h).
 *  - Messages in the stream that are not valid go to agentgate.ratings.dlq
 *    with the reason.
 */
#ifndef AGENTGATED_FLEET_H
#define AGENTGATED_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <linux/types.h>

#include "core/engine.h"
#include "names.h"
#include "core/err.h"

struct agd_fleet;

int agd_fleet_node_check(const char *node, struct agd_err *why);
/* The host name made a node name (invalid characters become '-'). */
void agd_fleet_default_node(char *node, size_t len);

/* Connects (in the background when NATS is not reachable yet), opens the
 * outbox, starts the consumer, outbox and demand threads and makes the
 * engine replicate through the fleet. */
int agd_fleet_start(struct agd_engine *e, const struct agd_fleet_opts *o, struct agd_fleet **out,
		    struct agd_err *err);
void agd_fleet_stop(struct agd_fleet *f);
void agd_fleet_stats(struct agd_fleet *f, struct agd_fleet_stats *s);

#endif
