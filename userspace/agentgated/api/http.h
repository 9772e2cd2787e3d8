/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The HTTP API on the server of server.h: the v1 routes, the routes of the rating-API
 * tutorial, /metrics, /healthz and /readyz. One route table names each
 * route's method, path, scope and handler.
 */
#ifndef AGENTGATED_HTTP_H
#define AGENTGATED_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <linux/types.h>

#include "auth.h"
#include "core/engine.h"
#include "fleet/fleet.h"
#include "stream.h"
#include "core/err.h"

/* Settings SIGHUP may change while serving. */
struct agd_http_live {
	bool auth;                       /* tokens required */
	struct agd_keyset *keys;         /* the server owns them once given */
	struct agd_denylist *denylist;   /* --auth-revoked, likewise */
	struct agd_lifetimes life;
	__u64 max_body;
	__u64 metrics_max_agents;
};

struct agd_http_opts {
	const char *listen; /* ADDR:PORT, [V6]:PORT */
	unsigned int threads;
	__u64 request_timeout_ms;
	const char *tls_cert, *tls_key;
	struct agd_stream_opts stream;
	struct agd_fleet *fleet; /* NULL: standalone */
	struct agd_feeds *feeds; /* the rule feeds' refreshes */
};

struct agd_http;
struct agd_conn;

int agd_http_start(struct agd_engine *e, const struct agd_http_opts *opts,
		   const struct agd_http_live *live, struct agd_http **out, struct agd_err *err);
/* Takes live->keys over (also when starting fails). */
void agd_http_update(struct agd_http *h, const struct agd_http_live *live);
void agd_http_set_ready(struct agd_http *h, bool ready, const char *why);
void agd_http_stop(struct agd_http *h);


/* 0 when listen is exactly ADDR:PORT or [V6]:PORT, else -EINVAL and why. */
int agd_listen_check(const char *listen, struct agd_err *err);
/* Whether ADDR:PORT binds to loopback only (auth may then be off). */
bool agd_listen_is_loopback(const char *listen);

#endif
