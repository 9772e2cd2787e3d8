/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Private to the api part: what the HTTP server (http.c) and the handlers of
 * each resource (agents.c, ratings.c, rules.c, tutorial.c, health.c) share.
 * The server routes, authorizes and reads the body, then calls the route's
 * handler with one struct req; request.c holds the helpers the handlers of
 * more than one resource use. Handler files include this header, never each
 * other; http.c includes it for its route table.
 */
#ifndef AGENTGATED_HANDLERS_H
#define AGENTGATED_HANDLERS_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <linux/types.h>

#include "auth.h"
#include "core/intake.h"
#include "core/engine.h"
#include "http.h"
#include "metrics.h"
#include "reply.h"

struct agd_conn;
struct agd_reqinfo;
struct agd_srv;
struct agd_lister;

struct agd_http {
	struct agd_srv *srv;
	struct agd_engine *e;
	pthread_rwlock_t live_lock;
	struct agd_http_live live;
	struct agd_metrics metrics;
	pthread_mutex_t ready_lock;
	bool ready;
	char not_ready[128];
	struct agd_stream *stream;
	struct agd_fleet *fleet;
	struct agd_feeds *feeds; /* the rule feeds' refreshes, kicked by a PUT */
	void *tls; /* SSL_CTX *, NULL: plain */
	struct agd_lister *lister;       /* GET /v1/agents pages */
	struct agd_intake *intake;       /* rating intake limits */
};

/* One request as the handlers see it. */
struct req {
	struct agd_http *h;
	struct agd_conn *conn;
	const struct agd_reqinfo *ri;
	const char *param; /* the {agent} of the path */
	char *body;
	size_t body_len;
	struct agd_token tok; /* subject "" when auth is off */
};

#define send_error(conn, status, ...) agd_reply_error(conn, status, NULL, __VA_ARGS__)

/* ---- request.c: helpers of more than one resource ------------------------------- */

/* The body as one JSON object whose keys are all in `allowed` (NULL-ended);
 * NULL after sending the 400 that names what is wrong. */
json_t *body_object(struct req *r, const char *const *allowed, int *status);
/* A non-negative number field: 1 found, 0 absent, -1 after sending 400. */
int get_number(struct req *r, json_t *o, const char *field, double lo, double hi,
	       bool integer, double *out, int *status);
/* The engine's refusal of an operation, with its status. */
int bad_agent(struct req *r, int err, const struct agd_err *oe);
/* 200 allowed, or 429 with Retry-After (whole seconds, at least 1); extra:
 * an object to add the fields to, or NULL. */
int send_consume(struct req *r, const struct ag_consume_result *res, json_t *extra);

/* ---- the handlers, one file per resource ---------------------------------------- */

/* agents.c: /v1/agents, /v1/agents/{agent} and its reset, drain, consume, explain */
int agents_list(struct req *r);
int agent_get(struct req *r);
int agent_explain(struct req *r);
int agent_put(struct req *r);
int agent_delete(struct req *r);
int agent_reset(struct req *r);
int agent_drain(struct req *r);
int agent_consume(struct req *r);
int agent_charge(struct req *r);

/* parents.c: /v1/parents and /v1/parents/{parent} (docs/BUDGETS.md) */
int parents_list(struct req *r);
int parent_get(struct req *r);
int parent_put(struct req *r);
int parent_delete(struct req *r);

/* feeds.c: /v1/agents/{agent}/feed */
int feed_get(struct req *r);
int feed_put(struct req *r);
int feed_delete(struct req *r);

/* ratings.c: POST /v1/ratings */
int ratings_post(struct req *r);

/* rules.c: /v1/rules */
int rules_get(struct req *r);
int rules_post(struct req *r);
int rules_delete(struct req *r);

/* tutorial.c: the rating-API tutorial's POST/GET /bucket/{agent_id}, POST /rate */
int bucket_post(struct req *r);
int bucket_get(struct req *r);
int rate_post(struct req *r);

/* revoke.c: POST /v1/auth/revoke */
int auth_revoke(struct req *r);

/* health.c: /metrics, /healthz, /readyz */
int metrics_get(struct req *r);
int healthz(struct req *r);
int readyz(struct req *r);

#endif
