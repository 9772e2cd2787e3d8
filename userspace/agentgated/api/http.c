// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The HTTP API over the server (server.h): start, update and stop, the one
 * route table, routing, authorization and what comes before a body (its
 * declared size, Expect: 100-continue), readiness. The handlers live one
 * file per resource (handlers.h names them); the WebSocket stream in
 * stream.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "framing.h"
#include "handlers.h"
#include "http.h"
#include "reply.h"
#include "core/lister.h"
#include "reqlimits.h"
#include "server.h"
#include "metrics.h"
#include "stream.h"
#include "tls.h"

/* ---- request bodies ------------------------------------------------------------ */

/*
 * Expect (RFC 9110, 10.1.1): a client that sent "Expect: 100-continue" waits
 * for "100 Continue" before its body (curl does for bodies over 1 KiB, and
 * waits a second without it). Sent here, once the request has been routed,
 * authorized and its declared size accepted, just before the body is read;
 * a request refused earlier gets its final status instead. HTTP/1.0 clients
 * never wait for it: ignored. Any other expectation: 417, closed.
 */
static int expect_continue(struct agd_conn *conn)
{
	const char *v = agd_conn_header(conn, "Expect");
	size_t n;

	if (!v)
		return 0;
	n = strlen(v);
	/* A second Expect line adds to the list (RFC 9110 5.3): another
	 * expectation, or the same one twice; neither is understood. */
	if (n != 12 || strncasecmp(v, "100-continue", 12) ||
	    agd_reqinfo_header_count(agd_conn_info(conn), "Expect") > 1)
		return agd_reply_error(conn, 417, "Connection: close\r\n",
				      "header 'Expect': only 100-continue is understood");
	if (!strcmp(agd_conn_info(conn)->http_version, "1.0"))
		return 0;
	agd_conn_write(conn, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	return 0;
}

/* Before the body is read: its declared size against --max-body (the
 * server refuses a chunked body that grows over it, and one that does not
 * come within --request-timeout, 408). 0 and *max, or the status sent. */
static int body_check(struct agd_http *h, struct agd_conn *conn, unsigned long long *max)
{
	const char *cl = agd_conn_header(conn, "Content-Length");
	long long declared = cl ? strtoll(cl, NULL, 10) : -1;

	pthread_rwlock_rdlock(&h->live_lock);
	*max = h->live.max_body;
	pthread_rwlock_unlock(&h->live_lock);
	if (declared > 0 && (unsigned long long)declared > *max)
		return send_error(conn, 413, "request body of %lld bytes is over the limit of "
				  "%llu bytes (--max-body)", declared, *max);
	return expect_continue(conn);
}

/* ---- /v1/stream ------------------------------------------------------------------ */

/* GET /v1/stream without the upgrade headers (stream.c answers the
 * WebSocket handshake). */
static int stream_plain(struct req *r)
{
	return agd_reply_error(r->conn, 426, "Upgrade: websocket\r\nConnection: Upgrade\r\n",
			      "/v1/stream is a WebSocket: connect with a WebSocket client "
			      "(Upgrade: websocket); see docs/STREAM.md");
}

/* ---- routing --------------------------------------------------------------------- */

#define READ_SCOPES (AGD_SCOPE_AGENTS_ADMIN | AGD_SCOPE_METRICS_READ)

struct route {
	const char *method;
	const char *path; /* '*' stands for one segment: the agent */
	unsigned int scopes; /* any of them; 0: open */
	bool body;
	int (*fn)(struct req *r);
	const char *const *queries; /* the query parameters it takes; NULL: none */
	bool quick; /* never waits (no lock held by a commit, no I/O): runs in the event loop */
	/* With a small body (QUICK_BODY_MAX) and no fleet, runs in the loop
	 * too: its handler defers the answer instead of waiting. */
	bool quick_small;
};

#define QUICK_BODY_MAX 8192

static const char *const list_queries[] = { "limit", "after", NULL };
static const char *const rule_queries[] = { "prefix", "port", NULL };
static const char *const stream_queries[] = { "topics", "token", NULL };

static const struct route routes[] = {
	{ "POST", "/v1/ratings", AGD_SCOPE_RATINGS_WRITE, true, ratings_post, NULL, false, true },
	{ "GET", "/v1/agents", READ_SCOPES, false, agents_list, list_queries },
	{ "GET", "/v1/agents/*/explain", READ_SCOPES, false, agent_explain },
	{ "GET", "/v1/agents/*/feed", READ_SCOPES, false, feed_get },
	{ "PUT", "/v1/agents/*/feed", AGD_SCOPE_AGENTS_ADMIN, true, feed_put },
	{ "DELETE", "/v1/agents/*/feed", AGD_SCOPE_AGENTS_ADMIN, false, feed_delete },
	{ "GET", "/v1/agents/*", READ_SCOPES, false, agent_get },
	{ "PUT", "/v1/agents/*", AGD_SCOPE_AGENTS_ADMIN, true, agent_put },
	{ "DELETE", "/v1/agents/*", AGD_SCOPE_AGENTS_ADMIN, false, agent_delete },
	{ "POST", "/v1/agents/*/reset", AGD_SCOPE_AGENTS_ADMIN, false, agent_reset },
	{ "POST", "/v1/agents/*/drain", AGD_SCOPE_AGENTS_ADMIN, true, agent_drain },
	{ "POST", "/v1/agents/*/consume", AGD_SCOPE_RATINGS_WRITE, true, agent_consume, NULL,
	  true },
	{ "POST", "/v1/agents/*/charge", AGD_SCOPE_RATINGS_WRITE, true, agent_charge },
	{ "GET", "/v1/parents", READ_SCOPES, false, parents_list },
	{ "GET", "/v1/parents/*", READ_SCOPES, false, parent_get },
	{ "PUT", "/v1/parents/*", AGD_SCOPE_AGENTS_ADMIN, true, parent_put },
	{ "DELETE", "/v1/parents/*", AGD_SCOPE_AGENTS_ADMIN, false, parent_delete },
	{ "GET", "/v1/rules", READ_SCOPES, false, rules_get },
	{ "POST", "/v1/rules", AGD_SCOPE_AGENTS_ADMIN, true, rules_post },
	{ "DELETE", "/v1/rules", AGD_SCOPE_AGENTS_ADMIN, true, rules_delete, rule_queries },
	{ "POST", "/v1/auth/revoke", AGD_SCOPE_AGENTS_ADMIN, true, auth_revoke },
	{ "GET", "/metrics", AGD_SCOPE_METRICS_READ, false, metrics_get },
	{ "GET", "/v1/stream", AGD_SCOPE_STREAM_READ, false, stream_plain, stream_queries },
	{ "GET", "/healthz", 0, false, healthz, NULL, true },
	{ "GET", "/readyz", 0, false, readyz, NULL, true },
	{ "POST", "/bucket/*", AGD_SCOPE_AGENTS_ADMIN, true, bucket_post },
	{ "GET", "/bucket/*", READ_SCOPES, false, bucket_get },
	{ "POST", "/rate", AGD_SCOPE_RATINGS_WRITE, true, rate_post },
	{ "POST", "/rating", AGD_SCOPE_RATINGS_WRITE, true, ratings_post, NULL, false, true },
};

#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

/* Matches a decoded path against a pattern; the '*' segment is copied into
 * param (len: the path's size, so any segment fits). */
static bool match(const char *pattern, const char *uri, char *param, size_t len)
{
	while (*pattern && *uri) {
		if (*pattern == '*') {
			size_t n = strcspn(uri, "/");

			if (!n || n >= len)
				return false;
			memcpy(param, uri, n);
			param[n] = 0;
			uri += n;
			pattern++;
			continue;
		}
		if (*pattern++ != *uri++)
			return false;
	}
	return !*pattern && (!*uri || !strcmp(uri, "/"));
}

/* The bearer token of the Authorization header, NULL without one. */
static const char *bearer(struct agd_conn *conn)
{
	const char *hdr = agd_conn_header(conn, "Authorization");

	return hdr && !strncasecmp(hdr, "Bearer ", 7) ? hdr + 7 : NULL;
}

/* Revoked through the API or the fleet's log (the engine), or listed in
 * --auth-revoked (live settings; the caller may hold live_lock). */
static bool token_revoked(struct agd_http *h, const struct agd_token *tok, time_t now)
{
	bool listed;

	if (agd_engine_revoked(h->e, tok->jti, tok->subject, tok->iat, (int64_t)now))
		return true;
	pthread_rwlock_rdlock(&h->live_lock);
	listed = agd_denylist_has(h->live.denylist, tok->jti, tok->subject);
	pthread_rwlock_unlock(&h->live_lock);
	return listed;
}

/* 1 when auth is off; 0 with *tok filled when the token verifies; else the
 * 401 is sent and its status returned. */
static int verify(struct agd_http *h, struct agd_conn *conn, const char *token,
		  const char *missing, struct agd_token *tok)
{
	enum agd_auth_reason reason = AGD_AUTH_OK;
	char why[160];
	int err;

	memset(tok, 0, sizeof(*tok));
	pthread_rwlock_rdlock(&h->live_lock);
	if (!h->live.auth) {
		pthread_rwlock_unlock(&h->live_lock);
		return 1;
	}
	if (!token) {
		pthread_rwlock_unlock(&h->live_lock);
		agd_metrics_auth_refused(&h->metrics, AGD_AUTH_MISSING);
		return send_error(conn, 401, "%s", missing);
	}
	{
		struct agd_auth a = { .keys = h->live.keys, .life = h->live.life };

		err = agd_token_verify(token, &a, time(NULL), tok, &reason, why, sizeof(why));
	}
	pthread_rwlock_unlock(&h->live_lock);
	if (!err && token_revoked(h, tok, time(NULL))) {
		reason = AGD_AUTH_REVOKED;
		snprintf(why, sizeof(why), "token revoked");
		err = -EACCES;
	}
	if (err) {
		agd_metrics_auth_refused(&h->metrics, reason);
		return send_error(conn, 401, "%s", why);
	}
	return 0;
}

/* /v1/stream: the token of ?token= or of the Authorization header. */
static int stream_auth(void *arg, struct agd_conn *conn, const char *query_token,
		       struct agd_token *out)
{
	struct agd_token tok;
	int rc;

	/* The head's framing was checked before routing (on_head). */
	memset(out, 0, sizeof(*out));
	rc = verify(arg, conn, query_token ? query_token : bearer(conn),
		    "missing token (?token=<JWT> or Authorization: Bearer <JWT>)", &tok);
	if (rc == 1)
		return 0;
	if (rc)
		return rc;
	*out = tok;
	if (!(tok.scopes & AGD_SCOPE_STREAM_READ)) {
		agd_metrics_auth_refused(&((struct agd_http *)arg)->metrics, AGD_AUTH_SCOPE);
		return send_error(conn, 403, "token lacks scope stream:read");
	}
	return 0;
}

/* A connected stream client's token, every second. */
static int stream_recheck(void *arg, const struct agd_token *tok)
{
	struct agd_http *h = arg;
	time_t now = time(NULL);

	if (now >= tok->exp)
		return AGD_WS_CLOSE_EXPIRED;
	return token_revoked(h, tok, now) ? AGD_WS_CLOSE_REVOKED : 0;
}

static int authorize(struct req *r, const struct route *rt)
{
	int rc;

	memset(&r->tok, 0, sizeof(r->tok));
	if (!rt->scopes)
		return 0;
	rc = verify(r->h, r->conn, bearer(r->conn),
		    "missing bearer token (Authorization: Bearer <JWT>)", &r->tok);
	if (rc == 1)
		return 0;
	if (rc)
		return rc;
	if (!(r->tok.scopes & rt->scopes)) {
		agd_metrics_auth_refused(&r->h->metrics, AGD_AUTH_SCOPE);
		if (rt->scopes == READ_SCOPES)
			return send_error(r->conn, 403, "token lacks scope agents:admin or "
					  "metrics:read");
		return send_error(r->conn, 403, "token lacks scope %s", agd_scope_name(rt->scopes));
	}
	return 0;
}

/* The request's path percent-decoded into path (agd_path_decode), the route
 * it names into *rt and its agent into param: 0, or the status of the error
 * sent (400 for the path or the agent name, 404, 405 with Allow). */
static int route(struct agd_conn *conn, const struct route **rt, char *path, char *param)
{
	const struct agd_reqinfo *ri = agd_conn_info(conn);
	char allow[64] = "", why[160];
	size_t i;

	*rt = NULL;
	if (agd_path_decode(ri->request_uri, path, AGD_PATH_MAX, why, sizeof(why)))
		return agd_reply_error(conn, 400, NULL, "%s", why);
	for (i = 0; i < N_ROUTES; i++) {
		if (!match(routes[i].path, path, param, AGD_PATH_MAX))
			continue;
		if (!strcmp(routes[i].method, ri->request_method)) {
			*rt = &routes[i];
			break;
		}
		if (strlen(allow) + strlen(routes[i].method) + 3 < sizeof(allow))
			snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s",
				 allow[0] ? ", " : "", routes[i].method);
	}
	if (!*rt && allow[0]) {
		char hdr[96];

		snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow);
		return agd_reply_json(conn, 405, json_pack("{s:s,s:s}", "error", "method_not_allowed",
						      "message", "method not allowed here"), hdr);
	}
	if (!*rt)
		return send_error(conn, 404, "no such endpoint: %s %.200s", ri->request_method,
				  ri->request_uri);
	/* The one name check (ag_name_check): %00, bytes outside the
	 * alphabet and the names "." and ".." never reach the engine. */
	if (strchr((*rt)->path, '*') && ag_name_check(param))
		return send_error(conn, 400, "path: %s", ag_errmsg());
	return 0;
}

/* What a request carries from its head to its handler: the server's
 * per-request area (agd_conn_req). */
struct req_state {
	const struct route *rt;
	char param[AG_NAME_MAX + 1];
	struct agd_token tok;
};

/* A WebSocket handshake (RFC 6455 4.2.1): Upgrade and Connection asking
 * for it. */
static bool wants_websocket(struct agd_conn *conn)
{
	const struct agd_reqinfo *ri = agd_conn_info(conn);

	/* Each header's lines are one list (RFC 9110 5.3). */
	return agd_reqinfo_has_token(ri, "Upgrade", "websocket") &&
	       agd_reqinfo_has_token(ri, "Connection", "upgrade");
}

/* The key is 16 bytes in base64: 22 characters and "==". */
static bool ws_key_valid(const char *k)
{
	size_t n = k ? strspn(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") : 0;

	return n == 22 && !strcmp(k + 22, "==");
}

static enum agd_head_verdict stream_upgrade(struct agd_http *h, struct agd_conn *conn)
{
	const char *ver = agd_conn_header(conn, "Sec-WebSocket-Version");

	if (!ver || strcmp(ver, "13")) {
		agd_reply_error(conn, 426, "Sec-WebSocket-Version: 13\r\nConnection: close\r\n",
				"WebSocket handshake refused: Sec-WebSocket-Version 13 only");
		return AGD_HEAD_DONE;
	}
	if (!ws_key_valid(agd_conn_header(conn, "Sec-WebSocket-Key"))) {
		agd_reply_error(conn, 400, "Connection: close\r\n",
				"WebSocket handshake refused: invalid Sec-WebSocket-Key");
		return AGD_HEAD_DONE;
	}
	return agd_stream_connect(h->stream, conn) ? AGD_HEAD_DONE : AGD_HEAD_UPGRADE;
}

/* A request head: checked, routed and authorized here, in the event loop
 * (none of it waits); the body is then read by the server. */
static enum agd_head_verdict on_head(struct agd_conn *conn, void *arg,
				     unsigned long long *body_max, bool *quick)
{
	struct agd_http *h = arg;
	struct req_state *st = agd_conn_req(conn);
	struct req r = { .h = h, .conn = conn, .ri = agd_conn_info(conn) };
	char path[AGD_PATH_MAX], param[AGD_PATH_MAX] = "";
	const struct route *rt;

	if (agd_request_framing(conn) || route(conn, &rt, path, param) ||
	    agd_request_limits(conn, rt->queries))
		return AGD_HEAD_DONE;
	if (rt->fn == stream_plain && wants_websocket(conn))
		return stream_upgrade(h, conn);
	r.param = param;
	if (authorize(&r, rt))
		return AGD_HEAD_DONE;
	st->rt = rt;
	snprintf(st->param, sizeof(st->param), "%s", param);
	st->tok = r.tok;
	*quick = rt->quick;
	if (rt->quick_small && !h->fleet) {
		const char *cl = agd_conn_header(conn, "Content-Length");

		*quick = cl && strtoll(cl, NULL, 10) <= QUICK_BODY_MAX;
	}
	if (!rt->body)
		return AGD_HEAD_RUN;
	/* A chunked body's end is the server's decoder's to find: where it may
	 * disagree with a proxy (a trailer section, which it discards), closing
	 * after the answer leaves no byte to be read as a request of its own. */
	if (agd_conn_chunked(conn))
		agd_conn_close_after(conn);
	return body_check(h, conn, body_max) ? AGD_HEAD_DONE : AGD_HEAD_BODY;
}

static void on_run(struct agd_conn *conn, void *arg)
{
	struct req_state *st = agd_conn_req(conn);
	struct req r = { .h = arg, .conn = conn, .ri = agd_conn_info(conn), .param = st->param,
			 .tok = st->tok };

	r.body = agd_conn_body(conn, &r.body_len);
	st->rt->fn(&r);
}

static void on_error(struct agd_conn *conn, int status, const char *extra, const char *msg,
		     void *arg)
{
	agd_reply_error(conn, status, extra, "%s", msg);
}

static void on_ws_ready(struct agd_conn *conn, void *arg)
{
	agd_stream_ready(((struct agd_http *)arg)->stream, conn);
}

static int on_ws_data(struct agd_conn *conn, int bits, char *data, size_t len, void *arg)
{
	return agd_stream_data(((struct agd_http *)arg)->stream, conn, bits, data, len);
}

static void on_ws_close(struct agd_conn *conn, void *arg)
{
	agd_stream_closed(((struct agd_http *)arg)->stream, conn);
}

static const struct agd_srv_hooks hooks = {
	.head = on_head,
	.run = on_run,
	.error = on_error,
	.ws_ready = on_ws_ready,
	.ws_data = on_ws_data,
	.ws_close = on_ws_close,
};

/* ---- lifecycle ------------------------------------------------------------------ */

/* Exactly HOST:PORT or [V6]:PORT: no lists ("a:1,2"), suffixes ("9470s")
 * or bare ports. */
static bool listen_well_formed(const char *listen)
{
	const char *colon = strrchr(listen, ':');
	size_t digits;

	if (!colon || strchr(listen, ',') || strchr(listen, '+') || strchr(listen, ' '))
		return false;
	digits = strspn(colon + 1, "0123456789");
	if (!digits || digits > 5 || colon[1 + digits] || atoi(colon + 1) > 65535)
		return false;
	if (listen[0] == '[')
		return colon > listen && colon[-1] == ']';
	return colon > listen && !memchr(listen, ':', (size_t)(colon - listen));
}

int agd_listen_check(const char *listen, struct agd_err *err)
{
	if (!listen_well_formed(listen)) {
		return agd_errf(err, -EINVAL,
			"--listen %s: expected ADDR:PORT or [IPV6]:PORT", listen);
	}
	return 0;
}

bool agd_listen_is_loopback(const char *listen)
{
	char host[256];
	const char *colon;
	struct in6_addr a6;
	struct in_addr a4;

	if (listen[0] == '[') {
		const char *end = strchr(listen, ']');

		if (!end || (size_t)(end - listen - 1) >= sizeof(host))
			return false;
		memcpy(host, listen + 1, (size_t)(end - listen - 1));
		host[end - listen - 1] = 0;
		return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
	}
	colon = strrchr(listen, ':');
	if (!colon || (size_t)(colon - listen) >= sizeof(host))
		return false; /* a bare port listens on every address */
	memcpy(host, listen, (size_t)(colon - listen));
	host[colon - listen] = 0;
	if (!strcmp(host, "localhost"))
		return true;
	return inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

/* A kept-alive connection waits this long for its next request. */
#define AGD_KEEPALIVE_MS 30000

/* Event loops: one a CPU, at most 4 (each serves thousands of connections;
 * more would only contend with the workers and the engine). */
static unsigned int loop_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > 4 ? 4 : (unsigned int)n;
}

int agd_http_start(struct agd_engine *e, const struct agd_http_opts *opts,
		   const struct agd_http_live *live, struct agd_http **out, struct agd_err *err)
{
	struct agd_srv_opts so = { 0 };
	struct agd_http *h;
	char why[256] = "";
	int rc;

	if (agd_listen_check(opts->listen, err) || agd_tls_check(opts->tls_cert, opts->tls_key, err)) {
		agd_keyset_free(live->keys);
		agd_denylist_free(live->denylist);
		return -EINVAL;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		agd_keyset_free(live->keys);
		agd_denylist_free(live->denylist);
		return -ENOMEM;
	}
	h->e = e;
	h->live = *live;
	h->intake = agd_engine_intake(e);
	h->fleet = opts->fleet;
	h->feeds = opts->feeds;
	pthread_rwlock_init(&h->live_lock, NULL);
	pthread_mutex_init(&h->ready_lock, NULL);
	agd_metrics_init(&h->metrics);
	h->metrics.intake = h->intake;
	snprintf(h->not_ready, sizeof(h->not_ready), "starting");
	if (opts->tls_cert[0]) {
		rc = agd_tls_context(opts->tls_cert, opts->tls_key, &h->tls, err);
		if (rc) {
			agd_http_stop(h);
			return rc;
		}
	}
	rc = agd_lister_start(e, &h->lister);
	if (rc) {
		snprintf(err->msg, sizeof(err->msg),
			"cannot start the agent lister: %s", strerror(-rc));
		agd_http_stop(h);
		return rc;
	}
	rc = agd_stream_start(e, &opts->stream, stream_auth, stream_recheck, h, &h->stream);
	if (rc) {
		snprintf(err->msg, sizeof(err->msg), "cannot start the stream: %s", strerror(-rc));
		agd_http_stop(h);
		return rc;
	}
	so.listen = opts->listen;
	so.loops = loop_count();
	so.workers = opts->threads;
	so.request_timeout_ms = opts->request_timeout_ms;
	so.keepalive_ms = AGD_KEEPALIVE_MS;
	so.ws_ping_ms = opts->stream.ping_ms;
	so.tls = h->tls;
	so.req_size = sizeof(struct req_state);
	so.hooks = &hooks;
	so.arg = h;
	rc = agd_srv_start(&so, &h->srv, why, sizeof(why));
	if (rc) {
		agd_errf(err, rc, "%s%s", why, h->tls ? " (with TLS)" : "");
		agd_http_stop(h);
		return rc;
	}
	*out = h;
	return 0;
}

void agd_http_update(struct agd_http *h, const struct agd_http_live *live)
{
	struct agd_keyset *old;
	struct agd_denylist *old_deny;

	pthread_rwlock_wrlock(&h->live_lock);
	old = h->live.keys;
	old_deny = h->live.denylist;
	h->live = *live;
	pthread_rwlock_unlock(&h->live_lock);
	/* No verification holds the old keys once the write lock was had. */
	if (old != live->keys)
		agd_keyset_free(old);
	if (old_deny != live->denylist)
		agd_denylist_free(old_deny);
}

void agd_http_set_ready(struct agd_http *h, bool ready, const char *why)
{
	pthread_mutex_lock(&h->ready_lock);
	h->ready = ready;
	snprintf(h->not_ready, sizeof(h->not_ready), "%s", why ? why : "");
	pthread_mutex_unlock(&h->ready_lock);
}

void agd_http_stop(struct agd_http *h)
{
	if (!h)
		return;
	agd_stream_shutdown(h->stream); /* close frames out, the stream's clients let go */
	agd_srv_stop(h->srv);           /* every connection closed, the workers joined */
	agd_stream_free(h->stream);
	agd_lister_stop(h->lister); /* after the workers that ask it */
	agd_tls_free(h->tls);
	agd_metrics_free(&h->metrics);
	pthread_rwlock_destroy(&h->live_lock);
	pthread_mutex_destroy(&h->ready_lock);
	agd_keyset_free(h->live.keys);
	agd_denylist_free(h->live.denylist);
	free(h);
}
