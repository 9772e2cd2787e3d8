// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <civetweb.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "http.h"
#include "reqlimits.h"

/* ---- JSON nesting ---------------------------------------------------------------- */

/* The offset where text first nests deeper than max, or len when it does not. */
static size_t too_deep_at(const char *text, size_t len, int max)
{
	bool in_string = false, escaped = false;
	int depth = 0;
	size_t i;

	for (i = 0; i < len; i++) {
		char c = text[i];

		if (in_string) {
			if (escaped)
				escaped = false;
			else if (c == '\\')
				escaped = true;
			else if (c == '"')
				in_string = false;
		} else if (c == '"') {
			in_string = true;
		} else if (c == '[' || c == '{') {
			if (++depth > max)
				return i;
		} else if ((c == ']' || c == '}') && depth > 0) {
			depth--;
		}
	}
	return len;
}

json_t *agd_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *err)
{
	size_t at = too_deep_at(buf, len, AGD_JSON_DEPTH_MAX);

	if (at == len)
		return json_loadb(buf, len, flags, err);
	memset(err, 0, sizeof(*err));
	err->line = 1;
	err->column = (int)at + 1;
	err->position = (int)at;
	snprintf(err->text, sizeof(err->text), "nested deeper than %d levels",
		 AGD_JSON_DEPTH_MAX);
	return NULL;
}

/* ---- headers and query parameters ---------------------------------------------------- */

/* The query parameters each route takes; routes not listed take none. */
static const struct {
	const char *method, *route;
	const char *names[3];
} route_queries[] = {
	{ "GET", "/v1/agents", { "limit", "after", NULL } },
	{ "DELETE", "/v1/rules", { "prefix", "port", NULL } },
	{ "GET", "/v1/stream", { "topics", "token", NULL } },
};

static const char *const *query_names(const char *method, const char *route)
{
	static const char *const none[] = { NULL };
	size_t i;

	for (i = 0; i < sizeof(route_queries) / sizeof(route_queries[0]); i++)
		if (!strcmp(route_queries[i].method, method) &&
		    !strcmp(route_queries[i].route, route))
			return route_queries[i].names;
	return none;
}

static bool known(const char *const *names, const char *name, size_t len)
{
	for (; *names; names++)
		if (strlen(*names) == len && !memcmp(*names, name, len))
			return true;
	return false;
}

static int query_check(struct mg_connection *conn, const char *query, const char *const *names)
{
	const char *p = query;

	while (p && *p) {
		size_t seg = strcspn(p, "&"), name = strcspn(p, "=&");

		if (seg && !known(names, p, name))
			return agd_http_error(conn, 400, NULL,
					      "query '%.*s': unknown parameter (this route takes %s%s%s)",
					      (int)(name > 64 ? 64 : name), p,
					      names[0] ? names[0] : "none",
					      names[0] && names[1] ? " and " : "",
					      names[0] && names[1] ? names[1] : "");
		p += seg + (p[seg] == '&');
	}
	return 0;
}

int agd_request_limits(struct mg_connection *conn, const char *method, const char *route)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);

	/* The header count: agd_request_framing(), before anything is read. */
	return query_check(conn, ri->query_string, query_names(method, route));
}

/* ---- CivetWeb's own errors ----------------------------------------------------------- */

int agd_civetweb_error(struct mg_connection *conn, int status, const char *msg)
{
	/* "Message too large": the request line and headers overflow its
	 * buffer (max_request_size); said with the status meant for that. */
	if (status == 413 && msg && strstr(msg, "too large"))
		agd_http_error(conn, 431, "Connection: close\r\n",
			       "request line and headers over the limit of 16384 bytes");
	else if (status == 500 && msg && !strcmp(msg, "Websocket handshake failed"))
		/* its one cause: a Sec-WebSocket-Key too long for its buffer */
		agd_http_error(conn, 400, "Connection: close\r\n",
			       "WebSocket handshake refused: invalid Sec-WebSocket-Key");
	else if (status == 411)
		/* its one cause: a Content-Length that is no number or a
		 * negative one (framing.c refuses the rest of the malformed) */
		agd_http_error(conn, 400, "Connection: close\r\n",
			       "header 'Content-Length': expected digits only");
	else if (status == 400 && msg && !strcmp(msg, "Bad request"))
		agd_http_error(conn, 400, "Connection: close\r\n",
			       "request line malformed (method, target, HTTP/1.x; one space "
			       "between them; CRLF), a header line malformed, or a "
			       "Transfer-Encoding other than chunked");
	else if (status == 400 && msg && !strcmp(msg, "Malformed message"))
		agd_http_error(conn, 400, "Connection: close\r\n",
			       "request line and headers malformed, over 16384 bytes, or not "
			       "complete within the request timeout (--request-timeout)");
	else
		agd_http_error(conn, status, "Connection: close\r\n", "%s",
			       msg && *msg ? msg : "request refused");
	return 0;
}
