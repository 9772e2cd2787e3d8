/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The HTTP/1.1 server under the API: a few event-loop threads (epoll,
 * edge-triggered) hold every connection, read and parse requests
 * (httpparse.h), enforce the time limits, speak TLS (OpenSSL) and
 * WebSocket frames, and write the answers; handlers that may wait (a group
 * commit, a fleet acknowledgement, a page of agents) run on a pool of
 * worker threads and hand the connection back when they have answered.
 * A connection costs a thread only while one of its requests is being
 * handled, never while it is idle, trickling, or a stream subscriber.
 * What a request means (routes, authorization, the error bodies) is the
 * caller's (http.c), through the hooks; docs/ARCHITECTURE.md has the map.
 */
#ifndef AGENTGATED_SERVER_H
#define AGENTGATED_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "httpparse.h"

struct agd_srv;
struct agd_conn;

enum agd_head_verdict {
	AGD_HEAD_DONE,    /* answered in the hook: nothing more to read */
	AGD_HEAD_BODY,    /* read the body (at most *body_max bytes), then run */
	AGD_HEAD_RUN,     /* no body: run */
	AGD_HEAD_UPGRADE, /* the WebSocket handshake is accepted: 101, then ws_ready */
};

struct agd_srv_hooks {
	/* A request head, parsed: decide (in the loop; must not wait). Set
	 * *inline_run when the route never waits: it then runs in the loop. */
	enum agd_head_verdict (*head)(struct agd_conn *c, void *arg, unsigned long long *body_max,
				      bool *inline_run);
	/* The request with its body: answer it (agd_conn_write). */
	void (*run)(struct agd_conn *c, void *arg);
	/* The server's own refusals (malformed, too large, too slow): status,
	 * further header lines or NULL, the message; the connection closes. */
	void (*error)(struct agd_conn *c, int status, const char *extra, const char *msg,
		      void *arg);
	/* WebSocket: connected (in the loop), a message or close frame
	 * (bits: FIN 0x80 | opcode; return 0 to close), gone (once). */
	void (*ws_ready)(struct agd_conn *c, void *arg);
	int (*ws_data)(struct agd_conn *c, int bits, char *data, size_t len, void *arg);
	void (*ws_close)(struct agd_conn *c, void *arg);
};

struct agd_srv_opts {
	const char *listen; /* ADDR:PORT or [V6]:PORT */
	unsigned int loops; /* event-loop threads */
	unsigned int workers;
	unsigned long long request_timeout_ms; /* head, body, a stalled answer */
	unsigned long long keepalive_ms;       /* idle between requests */
	unsigned long long ws_ping_ms;         /* an idle WebSocket is pinged */
	void *tls;                             /* SSL_CTX *, NULL: plain TCP */
	size_t req_size;                       /* agd_conn_req()'s area */
	const struct agd_srv_hooks *hooks;
	void *arg;
};

/* Binds and starts: 0, or a negative errno with why. */
int agd_srv_start(const struct agd_srv_opts *o, struct agd_srv **out, char *why, size_t why_len);
/* Closes the listener and every connection; returns once all are gone. */
void agd_srv_stop(struct agd_srv *s);
/* Connections open now. */
unsigned int agd_srv_connections(struct agd_srv *s);

/* ---- a connection, for the hooks and the handlers ------------------------------- */

const struct agd_reqinfo *agd_conn_info(const struct agd_conn *c);
const char *agd_conn_header(const struct agd_conn *c, const char *name);
/* The request body (NUL-terminated; the connection owns it), its length. */
char *agd_conn_body(struct agd_conn *c, size_t *len);
bool agd_conn_chunked(const struct agd_conn *c);
/* Appends to the answer: 0 or -ENOMEM. Only the thread handling the request. */
int agd_conn_write(struct agd_conn *c, const void *buf, size_t len);
/* Closes the connection once the answer is out. */
void agd_conn_close_after(struct agd_conn *c);
/* Whether it will close after this answer (asked for by either side). */
bool agd_conn_closing(const struct agd_conn *c);
/* The caller's area of o->req_size bytes for the request (zeroed before
 * each head), and a pointer of the connection's. */
void *agd_conn_req(struct agd_conn *c);
void agd_conn_set_data(struct agd_conn *c, void *p);
void *agd_conn_data(const struct agd_conn *c);
/*
 * Requests answered later, without a worker waiting. From run in the loop:
 * agd_conn_defer() keeps the connection busy after run returns; once
 * agd_conn_resume() is called (from any thread, once), the loop runs
 * finish(c, arg), which writes the answer. agd_conn_to_worker() instead
 * runs the request again on a worker (the answer written so far is
 * dropped). Defer before handing the work to another thread (its resume
 * may come at once); finish NULL takes a defer back. agd_conn_may_wait():
 * whether run is on a worker.
 */
void agd_conn_defer(struct agd_conn *c, void (*finish)(struct agd_conn *c, void *arg), void *arg);
void agd_conn_resume(struct agd_conn *c);
void agd_conn_to_worker(struct agd_conn *c);
bool agd_conn_may_wait(const struct agd_conn *c);
/* Shuts the socket down (from any thread, while the connection lives):
 * the loop then closes it. */
void agd_conn_cut(struct agd_conn *c);

/* ---- WebSocket, from any thread between ws_ready and ws_close -------------------- */

/* Writes whole frames (already framed) and returns once they are out:
 * true, or false when the connection is gone. */
bool agd_ws_write(struct agd_conn *c, const void *frames, size_t len);
/* Queues one control frame (close 0x8, ping 0x9) without waiting; after a
 * close frame nothing more is written. */
void agd_ws_control(struct agd_conn *c, int opcode, const void *payload, size_t len);

#endif
