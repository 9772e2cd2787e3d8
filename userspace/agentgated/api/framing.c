// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "framing.h"
#include "reply.h"
#include "server.h"

/* ---- what the fields say ------------------------------------------------------------- */

/* Fields that must not appear twice: one parser may read the first, a
 * proxy the last (RFC 9110 5.3: these are not lists). */
static const char *const singletons[] = { "Host", "Content-Length", "Transfer-Encoding",
					  "Authorization", "Content-Type", NULL };

/* The value of header `name`, NULL when absent; *count how many there are. */
static const char *field(const struct agd_reqinfo *ri, const char *name, int *count)
{
	const char *v = NULL;
	int i;

	*count = 0;
	for (i = 0; i < ri->num_headers; i++) {
		if (strcasecmp(ri->http_headers[i].name, name))
			continue;
		if (!v)
			v = ri->http_headers[i].value;
		++*count;
	}
	return v;
}

/* Content-Length is 1*DIGIT and nothing else (RFC 9110 8.6): no sign, no
 * list ("5, 5"), no whitespace; 18 digits at most (no overflow). */
static bool content_length_valid(const char *v)
{
	size_t n = strspn(v, "0123456789");

	return n && n <= 18 && !v[n];
}

/* Host is uri-host [ ":" port ] (RFC 9112 3.2, RFC 3986 3.2.2): an
 * IP-literal in brackets, or a reg-name of unreserved characters,
 * sub-delims and %HH; empty is allowed. Anything else is an invalid Host
 * a proxy and this server could read as different authorities (userinfo
 * "u@h", a path "/x", spaces): 400. */
static bool host_valid(const char *v)
{
	size_t i = 0;

	if (v[0] == '[') {
		i = 1 + strspn(v + 1, "0123456789abcdefABCDEFvV:._~!$&'()*+,;=-");
		if (v[i] != ']' || i == 1)
			return false;
		i++;
	} else {
		for (; v[i] && v[i] != ':'; i++) {
			unsigned char c = (unsigned char)v[i];

			if (c == '%' && isxdigit((unsigned char)v[i + 1]) &&
			    isxdigit((unsigned char)v[i + 2])) {
				i += 2;
				continue;
			}
			if (!isalnum(c) && !strchr("-._~!$&'()*+,;=", c))
				return false;
		}
	}
	if (v[i] == ':')
		i += 1 + strspn(v + i + 1, "0123456789");
	return !v[i];
}

static const char *fields_problem(const struct agd_reqinfo *ri, char *buf, size_t len)
{
	const char *host;
	const char *te, *cl;
	const char *const *s;
	int n_te, n_cl, n;

	for (s = singletons; *s; s++) {
		if (field(ri, *s, &n) && n > 1) {
			snprintf(buf, len, "header '%s': appears %d times", *s, n);
			return buf;
		}
	}
	te = field(ri, "Transfer-Encoding", &n_te);
	cl = field(ri, "Content-Length", &n_cl);
	if (te && cl)
		return "headers 'Transfer-Encoding' and 'Content-Length' together: the body's "
		       "length would be ambiguous";
	if (te && strcmp(ri->http_version, "1.1"))
		return "header 'Transfer-Encoding': not allowed in an HTTP/1.0 request";
	if (te && strcasecmp(te, "chunked"))
		return "header 'Transfer-Encoding': only \"chunked\" is accepted";
	if (cl && !content_length_valid(cl))
		return "header 'Content-Length': expected digits only (no sign, list or whitespace)";
	host = field(ri, "Host", &n);
	if (!strcmp(ri->http_version, "1.1") && !host)
		return "header 'Host': required in an HTTP/1.1 request";
	if (host && !host_valid(host))
		return "header 'Host': not a host with an optional port (RFC 9112 3.2)";
	return NULL;
}

int agd_request_framing(struct agd_conn *conn)
{
	char buf[160];
	const char *why = fields_problem(agd_conn_info(conn), buf, sizeof(buf));

	if (why)
		return agd_reply_error(conn, 400, "Connection: close\r\n", "%s", why);
	return 0;
}

/* ---- the path ----------------------------------------------------------------------- */

/* RFC 3986 pchar without pct-encoded, and '/'. */
static bool path_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("-._~!$&'()*+,;=:@/", c));
}

static bool dot_segment(const char *seg, size_t n)
{
	return (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.');
}

static int path_fail(char *why, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int path_fail(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

int agd_path_decode(const char *raw, char *out, size_t len, char *why, size_t why_len)
{
	size_t i, k = 0, seg = 0;

	for (i = 0; raw[i]; i++) {
		unsigned char c = (unsigned char)raw[i];

		if (k + 1 >= len)
			return path_fail(why, why_len, "path: longer than %zu bytes", len - 1);
		if (c == '%') {
			int hi = agd_hexval((unsigned char)raw[i + 1]);
			int lo = hi < 0 ? -1 : agd_hexval((unsigned char)raw[i + 2]);

			if (lo < 0)
				return path_fail(why, why_len, "path: '%%' at byte %zu is not followed "
						 "by two hex digits", i + 1);
			c = (unsigned char)(hi << 4 | lo);
			if (!c)
				return path_fail(why, why_len, "path: %%00 (NUL) at byte %zu", i + 1);
			if (c == '/')
				return path_fail(why, why_len, "path: %%2F at byte %zu: an encoded '/' "
						 "inside a segment is not accepted", i + 1);
			i += 2;
		} else if (!path_char(c)) {
			return path_fail(why, why_len, "path: byte 0x%02x at byte %zu is not allowed "
					 "in a URL path (percent-encode it)", c, i + 1);
		}
		if (c == '/') {
			if (dot_segment(out + seg, k - seg))
				return path_fail(why, why_len, "path: '.' and '..' segments are not "
						 "accepted");
			seg = k + 1;
		}
		out[k++] = (char)c;
	}
	if (dot_segment(out + seg, k - seg))
		return path_fail(why, why_len, "path: '.' and '..' segments are not accepted");
	out[k] = 0;
	return 0;
}
