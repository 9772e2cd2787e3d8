// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * What operators and Prometheus probe: GET /metrics (the text metrics.c
 * renders), /healthz, /readyz.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "fleet/fleet.h"
#include "handlers.h"

int metrics_get(struct req *r)
{
	__u64 max;
	size_t len;
	char *text;
	int rc;

	pthread_rwlock_rdlock(&r->h->live_lock);
	max = r->h->live.metrics_max_agents;
	pthread_rwlock_unlock(&r->h->live_lock);
	text = agd_metrics_render(&r->h->metrics, r->h->e, r->h->stream, r->h->fleet, max, &len);
	if (!text)
		return send_error(r->conn, 500, "cannot render metrics");
	rc = agd_reply_body(r->conn, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL);
	free(text);
	return rc;
}

int healthz(struct req *r)
{
	return agd_reply_json(r->conn, 200, json_pack("{s:s}", "status", "ok"), NULL);
}

int readyz(struct req *r)
{
	struct ag_config cfg;
	char why[128];
	bool ready;

	pthread_mutex_lock(&r->h->ready_lock);
	ready = r->h->ready;
	snprintf(why, sizeof(why), "%s", r->h->not_ready);
	pthread_mutex_unlock(&r->h->ready_lock);
	if (ready && ag_config_get(agd_engine_ctx(r->h->e), &cfg)) {
		ready = false;
		snprintf(why, sizeof(why), "maps unreadable: %s", ag_errmsg());
	}
	if (!ready)
		return agd_reply_json(r->conn, 503, json_pack("{s:s,s:s}", "status", "not ready",
							 "reason", why), NULL);
	if (r->h->fleet) {
		struct agd_fleet_stats st;

		/* Degraded, still serving: enforcement goes on and ratings are
		 * kept in the outbox. */
		agd_fleet_stats(r->h->fleet, &st);
		if (!st.connected)
			return agd_reply_json(r->conn, 200, json_pack("{s:s,s:s}", "status", "degraded",
								 "reason", "NATS unreachable: "
								 "ratings kept in the outbox, "
								 "operator changes refused"),
					 NULL);
	}
	return agd_reply_json(r->conn, 200, json_pack("{s:s}", "status", "ready"), NULL);
}
