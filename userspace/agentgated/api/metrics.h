/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * /metrics in the Prometheus text format (version 0.0.4). Per-agent series
 * are capped: at most max_agents agents get their own label sets, chosen
 * busiest first (packets seen) and then kept while they exist, so a
 * series does not flap between its own labels and the aggregate; every
 * other agent is summed under agent="_other". Every series agentgated
 * exposes is rendered here: the agents', the engine's, the dead letters',
 * the datapath's, the WebSocket stream's and the fleet's.
 */
#ifndef AGENTGATED_METRICS_H
#define AGENTGATED_METRICS_H

#include <pthread.h>
#include <stddef.h>
#include <linux/types.h>

#include "auth.h"
#include "core/intake.h"
#include "core/engine.h"

struct agd_metrics {
	pthread_mutex_t lock;
	__u64 auth_refused[AGD_AUTH__MAX]; /* by reason, atomic */
	struct agd_intake *intake;         /* its refusals; NULL: none */
	char (*labeled)[AG_NAME_MAX + 1]; /* agents with their own series, sorted */
	size_t n_labeled;
};

void agd_metrics_init(struct agd_metrics *m);
/* A token refused (401) or short of the route's scope (403). */
void agd_metrics_auth_refused(struct agd_metrics *m, enum agd_auth_reason r);
void agd_metrics_free(struct agd_metrics *m);

struct agd_stream;
struct agd_fleet;

/* The exposition text; free(). NULL on allocation failure. stream, fleet:
 * their series too, or NULL (no stream; standalone). */
char *agd_metrics_render(struct agd_metrics *m, struct agd_engine *e, struct agd_stream *stream,
			 struct agd_fleet *fleet, __u64 max_agents, size_t *len);

#endif
