// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Request heads, chunked bodies and query strings (httpparse.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "httpparse.h"

/* RFC 9110 token characters: what methods and header names are made of. */
static bool is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A field value's byte: VCHAR, obs-text, SP or HTAB (RFC 9110 5.5). */
static bool is_vbyte(unsigned char c)
{
	return c == ' ' || c == '\t' || (c > 0x20 && c != 0x7f);
}

static long fail(char *why, size_t len, long status, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static long fail(char *why, size_t len, long status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return -status;
}

/*
 * Where the head ends: the index after the empty line's LF, 0 when it has
 * not come yet, or an error. Line ends are checked as they come, so a bare
 * CR or LF is refused before the rest of a head arrives.
 */
static long head_end(const char *buf, size_t len, size_t start, char *why, size_t wl)
{
	size_t i, line = start;

	for (i = start; i < len; i++) {
		if (buf[i] == '\r') {
			if (i + 1 < len && buf[i + 1] != '\n')
				return fail(why, wl, 400, "a bare CR at byte %zu of the request head "
					    "(lines end in CRLF)", i - start + 1);
			continue;
		}
		if (buf[i] != '\n')
			continue;
		if (i == start || buf[i - 1] != '\r')
			return fail(why, wl, 400, "a bare LF at byte %zu of the request head "
				    "(lines end in CRLF)", i - start + 1);
		if (i - line == 1)
			return (long)(i + 1); /* the empty line */
		line = i + 1;
	}
	return 0;
}

/* "METHOD SP TARGET SP HTTP/1.x": NULs written over the separators. */
static long request_line(char *p, char *end, struct agd_reqinfo *ri, char *why, size_t wl)
{
	char *m = p, *t, *v, *q;

	while (p < end && is_tchar((unsigned char)*p))
		p++;
	if (p == m || p >= end || *p != ' ')
		return fail(why, wl, 400, "request line malformed: expected METHOD SP TARGET SP "
			    "HTTP/1.x (one space between them, CRLF)");
	*p++ = 0;
	if (*p == ' ')
		return fail(why, wl, 400, "request line: method and target must be separated by "
			    "one space");
	t = p;
	while (p < end && (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f)
		p++;
	if (p == t || p >= end || *p != ' ')
		return fail(why, wl, 400, "request line malformed: the target must be visible "
			    "ASCII, followed by one space and HTTP/1.x");
	*p++ = 0;
	if (*p == ' ')
		return fail(why, wl, 400, "request line: target and version must be separated by "
			    "one space");
	v = p;
	if (end - v != 8 || strncmp(v, "HTTP/", 5) || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
	    v[7] < '0' || v[7] > '9')
		return fail(why, wl, 400, "request line: must end in HTTP/x.y and CRLF (no "
			    "trailing whitespace)");
	if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
		return fail(why, wl, 505, "HTTP/%c.%c is not supported: HTTP/1.1 or HTTP/1.0",
			    v[5], v[7]);
	*end = 0;
	if (t[0] != '/')
		return fail(why, wl, 400, "request line: the target must be a path starting with "
			    "'/' (origin-form), not an absolute URL or '*'");
	q = strchr(t, '?');
	if (q)
		*q++ = 0;
	ri->request_method = m;
	ri->request_uri = t;
	ri->query_string = q;
	ri->http_version = v + 5;
	return 0;
}

/* One "NAME: OWS VALUE OWS" line [p, end). */
static long header_line(char *p, char *end, const char *prev, struct agd_reqinfo *ri, char *why,
			size_t wl)
{
	char *name = p, *v;

	if (*p == ' ' || *p == '\t')
		return fail(why, wl, 400, "header line after '%.64s': a continuation line "
			    "(obs-fold), a bare LF or an invalid name", prev ? prev : "the request line");
	while (p < end && is_tchar((unsigned char)*p))
		p++;
	if (p < end && (*p == ' ' || *p == '\t')) {
		*p = 0;
		return fail(why, wl, 400, "header '%.64s': whitespace between the name and the colon",
			    name);
	}
	if (p == name || p >= end || *p != ':') {
		unsigned char c = p < end ? (unsigned char)*p : 0;

		*p = 0;
		return fail(why, wl, 400, "header '%.64s': invalid character 0x%02x in its name",
			    name, c);
	}
	*p++ = 0;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	v = p;
	for (; p < end; p++)
		if (!is_vbyte((unsigned char)*p))
			return fail(why, wl, 400, "header '%.64s': invalid character 0x%02x in its "
				    "value", name, (unsigned char)*p);
	while (p > v && (p[-1] == ' ' || p[-1] == '\t'))
		p--;
	/* The length that frames the body: exactly digits, nothing around
	 * them that a proxy could read otherwise. */
	if (p != end && !strcasecmp(name, "Content-Length"))
		return fail(why, wl, 400, "header 'Content-Length': expected digits only (no sign, "
			    "list or whitespace)");
	*p = 0;
	if (ri->num_headers >= AGD_HEADERS_MAX)
		return fail(why, wl, 431, "more than %d header fields", AGD_HEADERS_MAX);
	ri->http_headers[ri->num_headers].name = name;
	ri->http_headers[ri->num_headers].value = v;
	ri->num_headers++;
	return 0;
}

long agd_head_parse(char *buf, size_t len, struct agd_reqinfo *ri, char *why, size_t why_len)
{
	size_t start = 0;
	char *p, *eol, *end;
	long e, rc;

	while (start < len && start < AGD_LEADING_MAX &&
	       (buf[start] == ' ' || buf[start] == '\r' || buf[start] == '\n'))
		start++;
	if (start >= AGD_LEADING_MAX)
		return fail(why, why_len, 400, "more than %d bytes of spaces or empty lines before "
			    "the request line", AGD_LEADING_MAX);
	if (start == len)
		return 0;
	e = head_end(buf, len, start, why, why_len);
	if (e < 0)
		return e;
	if ((e == 0 && len - start >= AGD_HEAD_MAX) || (e > 0 && (size_t)e - start >= AGD_HEAD_MAX))
		return fail(why, why_len, 431, "request line and headers of %d bytes or more (the "
			    "limit: %d bytes, the empty line after them included)", AGD_HEAD_MAX,
			    AGD_HEAD_MAX - 1);
	if (!e)
		return 0;
	ri->num_headers = 0;
	p = buf + start;
	end = buf + e - 2; /* the empty line's CR */
	eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
	rc = request_line(p, eol, ri, why, why_len);
	if (rc)
		return rc;
	for (p = eol + 2; p < end; p = eol + 2) {
		eol = p;
		while (*eol != '\r')
			eol++;
		rc = header_line(p, eol, ri->num_headers ?
				 ri->http_headers[ri->num_headers - 1].name : NULL, ri, why, why_len);
		if (rc)
			return rc;
	}
	return e;
}

const char *agd_reqinfo_header(const struct agd_reqinfo *ri, const char *name)
{
	int i;

	for (i = 0; i < ri->num_headers; i++)
		if (!strcasecmp(ri->http_headers[i].name, name))
			return ri->http_headers[i].value;
	return NULL;
}

int agd_reqinfo_header_count(const struct agd_reqinfo *ri, const char *name)
{
	int i, n = 0;

	for (i = 0; i < ri->num_headers; i++)
		n += !strcasecmp(ri->http_headers[i].name, name);
	return n;
}

bool agd_reqinfo_has_token(const struct agd_reqinfo *ri, const char *name, const char *token)
{
	int i;

	for (i = 0; i < ri->num_headers; i++)
		if (!strcasecmp(ri->http_headers[i].name, name) &&
		    agd_header_has_token(ri->http_headers[i].value, token))
			return true;
	return false;
}

/* ---- chunked bodies ------------------------------------------------------------------- */

enum { CH_SIZE, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_TRAILER_START, CH_TRAILER,
       CH_TRAILER_LF, CH_END_LF, CH_DONE };

#define CHUNK_DIGITS_MAX 15 /* 2^60: far over any --max-body */
#define TRAILER_MAX 16384

void agd_chunks_init(struct agd_chunks *ch)
{
	memset(ch, 0, sizeof(*ch));
	ch->state = CH_SIZE;
}

int agd_hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int chunk_fail(char *why, size_t wl, const char *msg)
{
	snprintf(why, wl, "request body: malformed chunked encoding: %s", msg);
	return -1;
}

int agd_chunks_feed(struct agd_chunks *ch, const char *in, size_t len, char *out, size_t out_room,
		    size_t *used, size_t *made, char *why, size_t wl)
{
	size_t i = 0, k = 0;

	while (i < len && ch->state != CH_DONE) {
		unsigned char c = (unsigned char)in[i];

		switch (ch->state) {
		case CH_SIZE:
			if (c == '\r' && ch->digits) {
				ch->state = CH_SIZE_LF;
			} else if (agd_hexval(c) >= 0 && ch->digits < CHUNK_DIGITS_MAX) {
				ch->left = ch->left << 4 | (unsigned long long)agd_hexval(c);
				ch->digits++;
			} else {
				*used = i;
				*made = k;
				return chunk_fail(why, wl, ch->digits >= CHUNK_DIGITS_MAX ?
						  "a chunk size of more than 15 hex digits" :
						  "a chunk size is hex digits ending in CRLF, without "
						  "extensions, signs or whitespace");
			}
			i++;
			break;
		case CH_SIZE_LF:
			if (c != '\n')
				goto bad_size;
			ch->state = ch->left ? CH_DATA : CH_TRAILER_START;
			i++;
			break;
		case CH_DATA: {
			size_t n = len - i;

			if (n > ch->left)
				n = (size_t)ch->left;
			if (n > out_room - k)
				n = out_room - k;
			if (!n)
				goto out; /* no room: the caller grows out */
			memcpy(out + k, in + i, n);
			k += n;
			i += n;
			ch->left -= n;
			if (!ch->left)
				ch->state = CH_DATA_CR;
			break;
		}
		case CH_DATA_CR:
		case CH_DATA_LF:
			if (c != (ch->state == CH_DATA_CR ? '\r' : '\n')) {
				*used = i;
				*made = k;
				return chunk_fail(why, wl, "chunk data must end in CRLF (a chunk longer "
						  "than its size?)");
			}
			ch->state = ch->state == CH_DATA_CR ? CH_DATA_LF : CH_SIZE;
			ch->digits = 0;
			i++;
			break;
		case CH_TRAILER_START:
			if (c == '\r') {
				ch->state = CH_END_LF;
				i++;
				break;
			}
			if (!is_tchar(c)) {
				*used = i;
				*made = k;
				return chunk_fail(why, wl, "a trailer line is not NAME: VALUE");
			}
			ch->state = CH_TRAILER;
			ch->line = 0;
			/* fall through */
		case CH_TRAILER:
			if (++ch->trailer > TRAILER_MAX) {
				*used = i;
				*made = k;
				return chunk_fail(why, wl, "a trailer section over 16384 bytes");
			}
			/* line 0: the name (tchars up to the colon, as in a head);
			 * 1: the value. */
			if (!ch->line && c == ':') {
				ch->line = 1;
			} else if (!ch->line && !is_tchar(c)) {
				*used = i;
				*made = k;
				return chunk_fail(why, wl, "a trailer line is not NAME: VALUE");
			} else if (c == '\r') {
				ch->state = CH_TRAILER_LF;
			} else if (c != '\t' && (c < 0x20 || c == 0x7f)) {
				goto bad_trailer;
			}
			i++;
			break;
		case CH_TRAILER_LF:
		case CH_END_LF:
			if (c != '\n')
				goto bad_trailer;
			ch->state = ch->state == CH_END_LF ? CH_DONE : CH_TRAILER_START;
			i++;
			break;
		}
	}
out:
	*used = i;
	*made = k;
	return ch->state == CH_DONE;
bad_size:
	*used = i;
	*made = k;
	return chunk_fail(why, wl, "a chunk size is hex digits ending in CRLF, without extensions, "
			  "signs or whitespace");
bad_trailer:
	*used = i;
	*made = k;
	return chunk_fail(why, wl, "a trailer line or the body's end is not CRLF-terminated");
}

/* ---- query strings and header lists ------------------------------------------------- */

int agd_query_var(const char *q, const char *name, char *buf, size_t len)
{
	size_t nl = strlen(name);

	while (q && *q) {
		size_t seg = strcspn(q, "&");

		if (seg >= nl && !strncmp(q, name, nl) && (seg == nl || q[nl] == '=')) {
			const char *v = q + nl + (seg > nl), *e = q + seg;
			size_t k = 0;

			if (!buf || !len)
				return -2;
			while (v < e) {
				int hi, lo;
				char c = *v++;

				if (c == '+') {
					c = ' ';
				} else if (c == '%' && v + 1 < e &&
					   (hi = agd_hexval((unsigned char)v[0])) >= 0 &&
					   (lo = agd_hexval((unsigned char)v[1])) >= 0) {
					c = (char)(hi << 4 | lo);
					v += 2;
				}
				if (k + 1 >= len)
					return -2;
				buf[k++] = c;
			}
			buf[k] = 0;
			return (int)k;
		}
		q += seg + (q[seg] == '&');
	}
	if (buf && len)
		buf[0] = 0;
	return -1;
}

bool agd_header_has_token(const char *value, const char *token)
{
	size_t tl = strlen(token);

	while (value && *value) {
		size_t n;

		while (*value == ' ' || *value == '\t' || *value == ',')
			value++;
		n = strcspn(value, ",");
		while (n && (value[n - 1] == ' ' || value[n - 1] == '\t'))
			n--;
		if (n == tl && !strncasecmp(value, token, tl))
			return true;
		value += strcspn(value, ",");
	}
	return false;
}
