// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <civetweb.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "reply.h"
#include "reqlimits.h"

/* ---- headers and query parameters ---------------------------------------------------- */

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
			return agd_reply_error(conn, 400, NULL,
					      "query '%.*s': unknown parameter (this route takes %s%s%s)",
					      (int)(name > 64 ? 64 : name), p,
					      names[0] ? names[0] : "none",
					      names[0] && names[1] ? " and " : "",
					      names[0] && names[1] ? names[1] : "");
		p += seg + (p[seg] == '&');
	}
	return 0;
}

int agd_request_limits(struct mg_connection *conn, const char *const *names)
{
	static const char *const none[] = { NULL };
	const struct mg_request_info *ri = mg_get_request_info(conn);

	/* The header count: agd_request_framing(), before anything is read. */
	return query_check(conn, ri->query_string, names ? names : none);
}

/* ---- CivetWeb's own errors ----------------------------------------------------------- */

int agd_civetweb_error(struct mg_connection *conn, int status, const char *msg)
{
	/* "Message too large": the request line and headers overflow its
	 * buffer (max_request_size); said with the status meant for that. */
	if (status == 413 && msg && strstr(msg, "too large"))
		agd_reply_error(conn, 431, "Connection: close\r\n",
			       "request line and headers over the limit of 16384 bytes");
	else if (status == 500 && msg && !strcmp(msg, "Websocket handshake failed"))
		/* its one cause: a Sec-WebSocket-Key too long for its buffer */
		agd_reply_error(conn, 400, "Connection: close\r\n",
			       "WebSocket handshake refused: invalid Sec-WebSocket-Key");
	else if (status == 411)
		/* its one cause: a Content-Length that is no number or a
		 * negative one (framing.c refuses the rest of the malformed) */
		agd_reply_error(conn, 400, "Connection: close\r\n",
			       "header 'Content-Length': expected digits only");
	else if (status == 400 && msg && !strcmp(msg, "Bad request"))
		agd_reply_error(conn, 400, "Connection: close\r\n",
			       "request line malformed (method, target, HTTP/1.x; one space "
			       "between them; CRLF), a header line malformed, or a "
			       "Transfer-Encoding other than chunked");
	else if (status == 400 && msg && !strcmp(msg, "Malformed message"))
		agd_reply_error(conn, 400, "Connection: close\r\n",
			       "request line and headers malformed, over 16384 bytes, or not "
			       "complete within the request timeout (--request-timeout)");
	else
		agd_reply_error(conn, status, "Connection: close\r\n", "%s",
			       msg && *msg ? msg : "request refused");
	return 0;
}
