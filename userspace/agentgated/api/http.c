// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The HTTP server: CivetWeb's setup, start, update and stop, the one route
 * table, routing, authorization and the reading of request bodies
 * (Expect: 100-continue included), readiness. The handlers live one file
 * per resource (handlers.h names them); the WebSocket stream in stream.c.
 */
#include <arpa/inet.h>
#include <civetweb.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "deadline.h"
#include "framing.h"
#include "handlers.h"
#include "http.h"
#include "reply.h"
#include "core/lister.h"
#include "reqlimits.h"
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
static int expect_continue(struct req *r)
{
	const char *v = mg_get_header(r->conn, "Expect");
	size_t n;

	if (!v)
		return 0;
	while (*v == ' ' || *v == '\t')
		v++;
	n = strlen(v);
	while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (n != 12 || strncasecmp(v, "100-continue", 12))
		return agd_reply_error(r->conn, 417, "Connection: close\r\n",
				      "header 'Expect': only 100-continue is understood");
	if (!strcmp(r->ri->http_version, "1.0"))
		return 0;
	mg_printf(r->conn, "HTTP/1.1 100 Continue\r\n\r\n");
	return 0;
}

/* Reads the whole body, refusing (413) before reading more than max_body.
 * CivetWeb decodes chunks and gives -1 for a chunk size line that is not
 * hex digits and CRLF (an extension, a sign, "0x", whitespace, a bare LF),
 * or chunk data not followed by CRLF: 400, closed. */
static int read_body(struct req *r)
{
	long long declared = r->ri->content_length;
	bool bad_chunks = false;
	__u64 max;
	size_t cap, len = 0;
	int deadline, refused;
	char *buf;

	pthread_rwlock_rdlock(&r->h->live_lock);
	max = r->h->live.max_body;
	pthread_rwlock_unlock(&r->h->live_lock);
	if (declared > 0 && (__u64)declared > max)
		return send_error(r->conn, 413, "request body of %lld bytes is over the limit of "
				  "%llu bytes (--max-body)", declared, (unsigned long long)max);
	refused = expect_continue(r);
	if (refused)
		return refused;
	cap = declared > 0 ? (size_t)declared + 1 : 4096;
	buf = malloc(cap);
	if (!buf)
		return send_error(r->conn, 500, "out of memory");
	deadline = agd_deadline_arm(r->h->deadlines, r->conn);
	for (;;) {
		int n;

		if (len + 1 >= cap) {
			char *b;

			if (len > max) {
				free(buf);
				return send_error(r->conn, 413, "request body is over the limit of %llu "
						  "bytes (--max-body)", (unsigned long long)max);
			}
			cap *= 2;
			b = realloc(buf, cap);
			if (!b) {
				free(buf);
				return send_error(r->conn, 500, "out of memory");
			}
			buf = b;
		}
		n = mg_read(r->conn, buf + len, cap - len - 1);
		if (n <= 0) {
			bad_chunks = n < 0 && agd_request_chunked(r->conn);
			break;
		}
		len += (size_t)n;
	}
	if (agd_deadline_disarm(r->h->deadlines, deadline)) {
		free(buf);
		return send_error(r->conn, 408, "request body not received within the request "
				  "timeout (--request-timeout); %zu bytes came", len);
	}
	if (bad_chunks) {
		free(buf);
		return agd_reply_error(r->conn, 400, "Connection: close\r\n",
				      "request body: malformed chunked encoding (a chunk size is "
				      "hex digits ending in CRLF, without extensions; chunk data "
				      "ends in CRLF)");
	}
	if (len > max) {
		free(buf);
		return send_error(r->conn, 413, "request body is over the limit of %llu bytes "
				  "(--max-body)", (unsigned long long)max);
	}
	if (declared >= 0 && (long long)len != declared) {
		free(buf);
		return agd_reply_error(r->conn, 400, "Connection: close\r\n",
				      "request body ended after %zu of %lld bytes", len, declared);
	}
	buf[len] = 0;
	r->body = buf;
	r->body_len = len;
	return 0;
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
};

static const char *const list_queries[] = { "limit", "after", NULL };
static const char *const rule_queries[] = { "prefix", "port", NULL };
static const char *const stream_queries[] = { "topics", "token", NULL };

static const struct route routes[] = {
	{ "POST", "/v1/ratings", AGD_SCOPE_RATINGS_WRITE, true, ratings_post },
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
	{ "POST", "/v1/agents/*/consume", AGD_SCOPE_RATINGS_WRITE, true, agent_consume },
	{ "GET", "/v1/rules", READ_SCOPES, false, rules_get },
	{ "POST", "/v1/rules", AGD_SCOPE_AGENTS_ADMIN, true, rules_post },
	{ "DELETE", "/v1/rules", AGD_SCOPE_AGENTS_ADMIN, true, rules_delete, rule_queries },
	{ "POST", "/v1/auth/revoke", AGD_SCOPE_AGENTS_ADMIN, true, auth_revoke },
	{ "GET", "/metrics", AGD_SCOPE_METRICS_READ, false, metrics_get },
	{ "GET", "/v1/stream", AGD_SCOPE_STREAM_READ, false, stream_plain, stream_queries },
	{ "GET", "/healthz", 0, false, healthz },
	{ "GET", "/readyz", 0, false, readyz },
	{ "POST", "/bucket/*", AGD_SCOPE_AGENTS_ADMIN, true, bucket_post },
	{ "GET", "/bucket/*", READ_SCOPES, false, bucket_get },
	{ "POST", "/rate", AGD_SCOPE_RATINGS_WRITE, true, rate_post },
	{ "POST", "/rating", AGD_SCOPE_RATINGS_WRITE, true, ratings_post },
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
static const char *bearer(struct mg_connection *conn)
{
	const char *hdr = mg_get_header(conn, "Authorization");

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
static int verify(struct agd_http *h, struct mg_connection *conn, const char *token,
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
static int stream_auth(void *arg, struct mg_connection *conn, const char *query_token,
		       struct agd_token *out)
{
	struct agd_token tok;
	int rc = agd_request_framing(conn);

	memset(out, 0, sizeof(*out));
	if (rc)
		return rc;
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
static int route(struct mg_connection *conn, const struct route **rt, char *path, char *param)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
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

static int handle_request(struct mg_connection *conn, struct agd_http *h)
{
	struct req r = { .h = h, .conn = conn, .ri = mg_get_request_info(conn) };
	char path[AGD_PATH_MAX], param[AGD_PATH_MAX] = "";
	const struct route *rt;
	int rc;

	rc = agd_request_framing(conn);
	if (!rc)
		rc = route(conn, &rt, path, param);
	if (rc)
		return rc;
	r.param = param;
	rc = agd_request_limits(conn, rt->queries);
	if (!rc)
		rc = authorize(&r, rt);
	if (rc)
		return rc;
	if (rt->body && (rc = read_body(&r)))
		return rc;
	rc = rt->fn(&r);
	free(r.body);
	return rc;
}

static int handle(struct mg_connection *conn, void *cbdata)
{
	int rc;

	/* A chunked body's end is CivetWeb's to find: where it may disagree
	 * with a proxy (a trailer section it leaves unread, a bare CR in a size
	 * line), closing after the answer leaves no byte to be read as a
	 * request of its own. */
	agd_reply_close_after(agd_request_chunked(conn));
	rc = handle_request(conn, cbdata);
	agd_reply_close_after(false);
	return rc;
}

/* Authorization is the routes' own (bearer JWTs). Without a handler of its
 * own, CivetWeb looks for a .htpasswd file beside every request's path: a
 * stat(2) per request, and digest auth for all if one ever appeared. */
static int civetweb_auth(struct mg_connection *conn, void *cbdata)
{
	(void)conn;
	(void)cbdata;
	return 1;
}

static int upgrade_as_http(const struct mg_connection *conn, void *cbdata)
{
	handle((struct mg_connection *)conn, cbdata);
	return 1; /* no handshake */
}

/* CivetWeb's hook for the TLS context: agentgated fills it (tls.c). */
static int init_ssl(void *ssl_ctx, void *user_data)
{
	struct agd_http *h = user_data;

	if (agd_tls_configure(ssl_ctx, h->tls_cert, h->tls_key, &h->tls_err))
		return -1;
	return 1; /* configured: CivetWeb loads no certificate of its own */
}

static int log_message(const struct mg_connection *conn, const char *message)
{
	fprintf(stderr, "agentgated: http: %s\n", message);
	return 1;
}

/* ---- lifecycle ------------------------------------------------------------------ */

/* Exactly HOST:PORT or [V6]:PORT: CivetWeb also takes lists ("a:1,2")
 * and suffixes ("9470s"), which would open listeners this check never saw. */
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

/* CivetWeb's feature bit for IPv6 listeners (mg_check_feature). */
#define MG_FEATURE_IPV6 8

int agd_listen_check(const char *listen, struct agd_err *err)
{
	if (!listen_well_formed(listen)) {
		return agd_errf(err, -EINVAL,
			"--listen %s: expected ADDR:PORT or [IPV6]:PORT", listen);
	}
	/* Debian's libcivetweb is built without IPv6: say so rather than fail
	 * later with CivetWeb's "invalid port spec". */
	if (listen[0] == '[' && !mg_check_feature(MG_FEATURE_IPV6)) {
		return agd_errf(err, -EINVAL,
			"--listen %s: the CivetWeb library this agentgated uses has no "
			 "IPv6 support; listen on an IPv4 address", listen);
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

int agd_http_start(struct agd_engine *e, const struct agd_http_opts *opts,
		   const struct agd_http_live *live, struct agd_http **out, struct agd_err *err)
{
	char threads[16], timeout[24], ports[300], ping[24], headmax[16];
	struct mg_callbacks cb = { .log_message = log_message, .http_error = agd_civetweb_error };
	const char *mgopts[24];
	struct agd_http *h;
	size_t k = 0;
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
	pthread_rwlock_init(&h->live_lock, NULL);
	pthread_mutex_init(&h->ready_lock, NULL);
	agd_metrics_init(&h->metrics);
	h->metrics.intake = h->intake;
	snprintf(h->not_ready, sizeof(h->not_ready), "starting");
	/* Each WebSocket client holds a CivetWeb worker for as long as it is
	 * connected: the stream's workers come on top of the HTTP ones. */
	snprintf(threads, sizeof(threads), "%u", opts->threads + opts->stream.max_clients);
	snprintf(ping, sizeof(ping), "%llu", (unsigned long long)opts->stream.ping_ms);
	snprintf(timeout, sizeof(timeout), "%llu", (unsigned long long)opts->request_timeout_ms);
	snprintf(headmax, sizeof(headmax), "%d", AGD_HEAD_MAX);
	h->tls = opts->tls_cert[0] != '\0';
	if (h->tls) {
		snprintf(h->tls_cert, sizeof(h->tls_cert), "%s", opts->tls_cert);
		snprintf(h->tls_key, sizeof(h->tls_key), "%s", opts->tls_key);
		cb.init_ssl = init_ssl;
	}
	/* A trailing 's' makes CivetWeb speak TLS only on the port. */
	snprintf(ports, sizeof(ports), "%s%s", opts->listen, h->tls ? "s" : "");
	mgopts[k++] = "listening_ports";
	mgopts[k++] = ports;
	mgopts[k++] = "num_threads";
	mgopts[k++] = threads;
	mgopts[k++] = "request_timeout_ms";
	mgopts[k++] = timeout;
	/* The target as sent: routing decodes it (agd_path_decode), refusing
	 * %00 and %2F instead of cutting or splitting a name, and
	 * agd_request_framing reads CivetWeb's parse in place. */
	mgopts[k++] = "decode_url";
	mgopts[k++] = "no";
	mgopts[k++] = "max_request_size";
	mgopts[k++] = headmax;
	mgopts[k++] = "enable_keep_alive";
	mgopts[k++] = "yes";
	mgopts[k++] = "keep_alive_timeout_ms";
	mgopts[k++] = "30000";
	mgopts[k++] = "tcp_nodelay";
	mgopts[k++] = "1";
	mgopts[k++] = "enable_websocket_ping_pong";
	mgopts[k++] = "yes";
	mgopts[k++] = "websocket_timeout_ms";
	mgopts[k++] = ping;
	mgopts[k++] = NULL;
	if (h->tls && agd_tls_load_compat(err)) {
		agd_http_stop(h);
		return -ENOTSUP;
	}
	rc = agd_deadlines_start(opts->request_timeout_ms, &h->deadlines);
	if (rc) {
		snprintf(err->msg, sizeof(err->msg),
			"cannot start the request watchdog: %s", strerror(-rc));
		agd_http_stop(h);
		return rc;
	}
	rc = agd_lister_start(e, &h->lister);
	if (rc) {
		snprintf(err->msg, sizeof(err->msg),
			"cannot start the agent lister: %s", strerror(-rc));
		agd_http_stop(h);
		return rc;
	}
	mg_init_library(h->tls ? MG_FEATURES_SSL : 0);
	h->mg = mg_start(&cb, h, mgopts);
	if (!h->mg) {
		if (h->tls_err.msg[0])
			agd_errf(err, -EADDRINUSE, "%s", h->tls_err.msg);
		else
			agd_errf(err, -EADDRINUSE,
				"cannot listen on %s%s (address in use, or not an "
				 "ADDR:PORT?%s)", opts->listen, h->tls ? " with TLS" : "",
				 h->tls ? " Or no OpenSSL: see the http: lines above" : "");
		agd_http_stop(h);
		return -EADDRINUSE;
	}
	mg_set_request_handler(h->mg, "/", handle, h);
	h->fleet = opts->fleet;
	h->feeds = opts->feeds;
	mg_set_auth_handler(h->mg, "/", civetweb_auth, h);
	rc = agd_stream_start(e, h->mg, &opts->stream, stream_auth, stream_recheck, h,
			      &h->stream);
	if (rc) {
		snprintf(err->msg, sizeof(err->msg), "cannot start the stream: %s", strerror(-rc));
		agd_http_stop(h);
		return rc;
	}
	/* No route speaks WebSocket yet: a request carrying upgrade headers is
	 * answered as the plain HTTP request it also is (CivetWeb would
	 * otherwise answer it with a bare-text 404). */
	mg_set_websocket_handler(h->mg, "/", upgrade_as_http, NULL, NULL, NULL, h);
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
	agd_stream_shutdown(h->stream); /* lets CivetWeb's WebSocket workers go */
	if (h->mg)
		mg_stop(h->mg);
	agd_stream_free(h->stream);
	agd_lister_stop(h->lister); /* after the workers that ask it */
	agd_deadlines_stop(h->deadlines);
	mg_exit_library();
	agd_metrics_free(&h->metrics);
	pthread_rwlock_destroy(&h->live_lock);
	pthread_mutex_destroy(&h->ready_lock);
	agd_keyset_free(h->live.keys);
	agd_denylist_free(h->live.denylist);
	free(h);
}
