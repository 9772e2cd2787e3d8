/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * GET /v1/stream: rating and bucket updates pushed over WebSocket (server.h).
 *
 * Topics: rating.global (every applied rating), rating.agent.{agent} (its
 * ratings with the new rate), bucket.agent.{agent} (tokens, rate, passed and
 * dropped per second, at most once a second). Subscribe with ?topics=a,b on
 * the URL or {"action":"subscribe","topic":"..."} messages. docs/STREAM.md
 * documents every message.
 *
 * Each client has a bounded queue written by its own sender thread, so a
 * slow reader delays nobody else. A full queue coalesces: a new update
 * replaces the pending one of its topic. A client is disconnected (close
 * code 1008) when an update would not fit even so, or when its oldest
 * pending update has waited longer than max_lag_ms.
 */
#ifndef AGENTGATED_STREAM_H
#define AGENTGATED_STREAM_H

#include <linux/types.h>

#include "auth.h"
#include "core/engine.h"

struct agd_conn;

struct agd_stream_opts {
	unsigned int max_clients; /* WebSocket clients at once */
	unsigned int max_per_ip;  /* from one source address */
	unsigned int queue;       /* pending updates per client */
	__u64 max_lag_ms;         /* oldest pending update older: disconnect */
	__u64 ping_ms;            /* the server pings idle clients this often */
};

/* Checks a stream request's credentials before the handshake. token is the
 * ?token= of the URL (NULL without one); the Authorization header is the
 * callback's to read. Returns 0 to go on; otherwise the callback has sent
 * the HTTP error (401, 403) and the connection is refused. */
typedef int (*agd_stream_auth_fn)(void *arg, struct agd_conn *conn, const char *token,
				  struct agd_token *tok);
/* Every second, for each connected client's token (tok.exp 0: no token
 * needed): 0 while it is good, else the close code the client gets:
 * AGD_WS_CLOSE_REVOKED or AGD_WS_CLOSE_EXPIRED. */
typedef int (*agd_stream_recheck_fn)(void *arg, const struct agd_token *tok);
#define AGD_WS_CLOSE_REVOKED 4001 /* the token was revoked */
#define AGD_WS_CLOSE_EXPIRED 4002 /* the token expired */

struct agd_stream_stats {
	__u64 clients;    /* connected now */
	__u64 accepted;   /* handshakes completed */
	__u64 refused[4]; /* by enum agd_stream_refusal */
	__u64 sent;       /* updates and replies written */
	__u64 coalesced;  /* updates replaced by a newer one of their topic */
	__u64 lost;       /* rating events the hub had no room for */
	__u64 cut_slow;   /* clients disconnected for being too far behind */
};

enum agd_stream_refusal {
	AGD_STREAM_REFUSED_AUTH,
	AGD_STREAM_REFUSED_TOPIC,
	AGD_STREAM_REFUSED_PER_IP,
	AGD_STREAM_REFUSED_FULL,
};
extern const char *const agd_stream_refusal_names[4];

struct agd_stream;

/* Starts the hub thread. */
int agd_stream_start(struct agd_engine *e, const struct agd_stream_opts *o,
		     agd_stream_auth_fn auth, agd_stream_recheck_fn recheck, void *auth_arg,
		     struct agd_stream **out);
/* The server's WebSocket hooks for /v1/stream (http.c forwards them). A
 * handshake: 0 to accept it, else the HTTP error sent (401, 403, 400 for
 * a topic, 429 per address, 503 full). Then ready, each message (0: close
 * the connection), and closed, once. */
int agd_stream_connect(struct agd_stream *s, struct agd_conn *conn);
void agd_stream_ready(struct agd_stream *s, struct agd_conn *conn);
int agd_stream_data(struct agd_stream *s, struct agd_conn *conn, int bits, char *data, size_t len);
void agd_stream_closed(struct agd_stream *s, struct agd_conn *conn);
/* Before the server stops: no more events; every client gets close code
 * 1001, those that do not answer are cut after a short grace. */
void agd_stream_shutdown(struct agd_stream *s);
/* After the server stopped (every client closed): frees what is left. */
void agd_stream_free(struct agd_stream *s);
void agd_stream_get_stats(struct agd_stream *s, struct agd_stream_stats *st);

/* Whether t is a topic a client may subscribe to. */
bool agd_stream_topic_valid(const char *t);

#endif
