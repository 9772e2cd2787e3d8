// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The API's responses (reply.h): the one place that writes them. */
#include "server.h"
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reply.h"

static const char *reason_phrase(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Payload Too Large";
	case 415: return "Unsupported Media Type";
	case 417: return "Expectation Failed";
	case 426: return "Upgrade Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	case 507: return "Insufficient Storage";
	default: return "Unknown";
	}
}

const char *agd_reply_code(int status)
{
	switch (status) {
	case 400: return "bad_request";
	case 401: return "unauthorized";
	case 403: return "forbidden";
	case 404: return "not_found";
	case 405: return "method_not_allowed";
	case 408: return "request_timeout";
	case 409: return "conflict";
	case 411: return "length_required";
	case 413: return "payload_too_large";
	case 415: return "unsupported_media_type";
	case 417: return "expectation_failed";
	case 426: return "upgrade_required";
	case 429: return "too_many_requests";
	case 431: return "header_fields_too_large";
	case 503: return "unavailable";
	case 505: return "http_version_not_supported";
	case 507: return "insufficient_storage";
	default: return "internal";
	}
}

/* extra: further header lines, each ending in \r\n, or NULL (short: the
 * header stays far below the buffer). Header and a small body go out in one
 * write: two would be two system calls and, with TCP_NODELAY, two segments. */
int agd_reply_body(struct agd_conn *conn, int status, const char *type, const char *body,
		     size_t len, const char *extra)
{
	bool closing = agd_conn_closing(conn) || (extra && strstr(extra, "Connection: close"));
	char msg[2048];
	int n = snprintf(msg, sizeof(msg),
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			 "Cache-Control: no-store\r\n%s%s\r\n",
			 status, reason_phrase(status), type, len, extra ? extra : "",
			 closing && !(extra && strstr(extra, "Connection: close")) ?
				 "Connection: close\r\n" : "");
	size_t head = n < 0 ? 0 : (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1;

	if (head + len <= sizeof(msg)) {
		memcpy(msg + head, body, len);
		agd_conn_write(conn, msg, head + len);
	} else {
		agd_conn_write(conn, msg, head);
		agd_conn_write(conn, body, len);
	}
	if (closing)
		agd_conn_close_after(conn); /* say it and do it */
	return status;
}

/* Sends and frees o. */
int agd_reply_json(struct agd_conn *conn, int status, json_t *o, const char *extra)
{
	char *text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
	int rc;

	json_decref(o);
	if (!text)
		return agd_reply_body(conn, 500, "application/json",
				 "{\"error\":\"internal\",\"message\":\"out of memory\"}", 46, NULL);
	rc = agd_reply_body(conn, status, "application/json", text, strlen(text), extra);
	free(text);
	return rc;
}

static json_t *error_json(int status, const char *fmt, va_list ap)
{
	char msg[512];
	json_t *o;
	size_t i;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	o = json_pack("{s:s,s:s}", "error", agd_reply_code(status), "message", msg);
	/* A quoted path or name that is not UTF-8 (or cut mid-character) makes
	 * json_pack fail: quote it with '?' for each non-ASCII byte instead. */
	for (i = 0; !o && msg[i]; i++)
		if ((unsigned char)msg[i] >= 0x80)
			msg[i] = '?';
	return o ? o : json_pack("{s:s,s:s}", "error", agd_reply_code(status), "message", msg);
}

/* The API's error response, the one place that writes it. */
static int send_error_v(struct agd_conn *conn, int status, const char *extra,
			const char *fmt, va_list ap)
{
	json_t *o = error_json(status, fmt, ap);

	if (!extra && status == 401)
		extra = "WWW-Authenticate: Bearer realm=\"agentgate\"\r\n";
	else if (!extra && (status == 408 || status == 413 || status == 431))
		extra = "Connection: close\r\n"; /* what is left of the request is not read */
	return agd_reply_json(conn, status, o, extra);
}

int agd_reply_error(struct agd_conn *conn, int status, const char *extra, const char *fmt,
		   ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = send_error_v(conn, status, extra, fmt, ap);
	va_end(ap);
	return rc;
}
