// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <civetweb.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "framing.h"
#include "reply.h"
#include "reqlimits.h"

/* ---- the request head as CivetWeb left it ------------------------------------------ */

/* RFC 9110 token characters: what a header name is made of. */
static bool is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* The end of the request target: its query when there is one (CivetWeb
 * wrote a NUL over the '?'). */
static const char *target_end(const struct mg_request_info *ri)
{
	if (ri->query_string)
		return ri->query_string + strlen(ri->query_string);
	return ri->request_uri + strlen(ri->request_uri);
}

/* The request line: "METHOD SP TARGET SP HTTP/x.y CRLF". CivetWeb turns
 * every run of whitespace between the words into NULs, so one separator is
 * one NUL and the first header name starts two bytes (CR, LF) after the
 * version. Without any header field the end cannot be told apart from
 * what follows in the buffer; such a request (HTTP/1.0: 1.1 needs Host)
 * frames no body and closes its connection. */
static const char *request_line_problem(const struct mg_request_info *ri)
{
	const char *method_end = ri->request_method + strlen(ri->request_method);
	const char *version = ri->http_version - 5; /* CivetWeb skipped "HTTP/" */
	const char *version_end = ri->http_version + strlen(ri->http_version);

	if (ri->request_uri != method_end + 1)
		return "request line: method and target must be separated by one space";
	if (version != target_end(ri) + 1)
		return "request line: target and version must be separated by one space";
	if (ri->num_headers && ri->http_headers[0].name != version_end + 2)
		return "request line: must end in CRLF (no bare CR or LF, no trailing whitespace)";
	return NULL;
}

/* The byte at p, which may lie just past CivetWeb's request buffer: when a
 * head fills the buffer to its last byte and ends in "\n\n" (possible only
 * after more than 60 bytes of spaces or empty lines before the request
 * line, since agd_request_framing() refuses heads within AGD_HEAD_MARGIN
 * of the limit). No public API tells where the buffer ends. CivetWeb
 * allocates it with malloc(max_request_size), and glibc's malloc(16384)
 * is usable for 16392 bytes, so the read stays inside the allocation;
 * AddressSanitizer, which poisons exactly the size asked for, is told so.
 * Such a head is refused whatever the byte says, unless it reads CR and
 * the next one NUL. */
__attribute__((no_sanitize("address"))) static unsigned char head_byte(const char *p)
{
	return *(const volatile unsigned char *)p;
}

/* One header line "NAME: OWS VALUE CRLF": the name is a token right
 * before the colon (one NUL), only spaces follow up to the value (CivetWeb
 * skipped them), CR and LF are the two NULs after the value and the next
 * name follows them; after the last field the empty line's CR and its LF
 * (a NUL) come. Anything else there is a bare LF, whitespace before the
 * colon, or a line CivetWeb stopped at (obs-fold, a name starting with a
 * byte over 0x7e): it reads no header after such a line, a proxy may. */
static const char *header_problem(const struct mg_request_info *ri, int i, char *buf, size_t len)
{
	const struct mg_header *h = &ri->http_headers[i];
	const char *name_end = h->name + strlen(h->name);
	const char *value_end = h->value + strlen(h->value);
	const char *p;

	for (p = h->name; p < name_end; p++) {
		if (!is_tchar((unsigned char)*p)) {
			snprintf(buf, len, "header '%.64s': invalid character 0x%02x in its name",
				 h->name, (unsigned char)*p);
			return buf;
		}
	}
	if (h->value <= name_end) {
		snprintf(buf, len, "header '%.64s': unparsable", h->name);
		return buf;
	}
	for (p = name_end + 1; p < h->value; p++) {
		if (*p != ' ') {
			snprintf(buf, len, "header '%.64s': whitespace between the name and the colon",
				 h->name);
			return buf;
		}
	}
	if (value_end[1] ||
	    (i + 1 < ri->num_headers && ri->http_headers[i + 1].name != value_end + 2)) {
		snprintf(buf, len, "header '%.64s': the line must end in CRLF (no bare LF)",
			 h->name);
		return buf;
	}
	/* [2] before [3]: a head ending in a bare LF ends at [1]. */
	if (i + 1 == ri->num_headers &&
	    (head_byte(value_end + 2) != '\r' || head_byte(value_end + 3))) {
		snprintf(buf, len, "header line after '%.64s': a continuation line (obs-fold), a "
			 "bare LF or an invalid name", h->name);
		return buf;
	}
	return NULL;
}

/* ---- what the fields say ------------------------------------------------------------- */

/* Fields that must not appear twice: CivetWeb reads the first one, a proxy
 * may read the last (RFC 9110 5.3: these are not lists). */
static const char *const singletons[] = { "Host", "Content-Length", "Transfer-Encoding",
					  "Authorization", "Content-Type", NULL };

/* The value of header `name`, NULL when absent; *count how many there are. */
static const char *field(const struct mg_request_info *ri, const char *name, int *count)
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

static const char *fields_problem(const struct mg_request_info *ri, char *buf, size_t len)
{
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
	if (!strcmp(ri->http_version, "1.1") && !field(ri, "Host", &n))
		return "header 'Host': required in an HTTP/1.1 request";
	return NULL;
}

/* Where the last header's line ends, as far as header_problem() reads. */
static const char *head_end(const struct mg_request_info *ri)
{
	const struct mg_header *h;

	if (!ri->num_headers)
		return ri->request_method;
	h = &ri->http_headers[ri->num_headers - 1];
	return h->value + strlen(h->value) + 4;
}

int agd_request_framing(struct mg_connection *conn)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	const char *why;
	char buf[160];
	int i;

	/* CivetWeb stops at MG_MAX_HEADERS: the rest of the head is unseen. */
	if (ri->num_headers > AGD_HEADERS_MAX)
		return agd_reply_error(conn, 431, NULL, "more than %d header fields",
				      AGD_HEADERS_MAX);
	/* header_problem() reads up to 4 bytes past the last header's value:
	 * inside CivetWeb's buffer of AGD_HEAD_MAX bytes unless the head
	 * fills it, so a head that comes within the margin of it is refused
	 * first. (Only over 60 bytes of empty lines before the request line,
	 * which CivetWeb skips, could still bring it to the end; the bytes
	 * read then are the allocation's slack on glibc.) */
	if (head_end(ri) - ri->request_method > AGD_HEAD_MAX - AGD_HEAD_MARGIN)
		return agd_reply_error(conn, 431, NULL, "request line and headers over the limit of "
				      "%d bytes", AGD_HEAD_MAX - AGD_HEAD_MARGIN);
	if (ri->request_uri[0] != '/')
		return agd_reply_error(conn, 400, "Connection: close\r\n",
				      "request line: the target must be a path starting with '/' "
				      "(origin-form), not an absolute URL or '*'");
	why = request_line_problem(ri);
	for (i = 0; !why && i < ri->num_headers; i++)
		why = header_problem(ri, i, buf, sizeof(buf));
	if (!why)
		why = fields_problem(ri, buf, sizeof(buf));
	if (why)
		return agd_reply_error(conn, 400, "Connection: close\r\n", "%s", why);
	return 0;
}

bool agd_request_chunked(struct mg_connection *conn)
{
	return mg_get_header(conn, "Transfer-Encoding") != NULL;
}

/* ---- the path ----------------------------------------------------------------------- */

/* RFC 3986 pchar without pct-encoded, and '/'. */
static bool path_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("-._~!$&'()*+,;=:@/", c));
}

static int hex(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
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
			int hi = hex((unsigned char)raw[i + 1]);
			int lo = hi < 0 ? -1 : hex((unsigned char)raw[i + 2]);

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
