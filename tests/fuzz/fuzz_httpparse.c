// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The HTTP server's parsers without the server (userspace/agentgated/api/
 * httpparse.c): request heads, chunked bodies, query parameters.
 *
 * Input: one selector byte, one split byte, then the bytes.
 *  - selector bit 0 clear: a request head. Checked against the grammar
 *    written from RFC 9112 (not from the code): a head is accepted only
 *    when every line ends in CRLF, the request line is token SP visible
 *    ASCII SP "HTTP/1.0" or "HTTP/1.1", the target starts with '/', every
 *    header is token ':' OWS bytes without controls, at most 63 of them,
 *    the whole under 16384 bytes; its pieces lie inside the head; every
 *    prefix of an accepted head asks for more (never an error: the
 *    parser may be fed a byte at a time), and the same head with bytes
 *    after it parses to the same length.
 *  - selector bit 0 set: a chunked body, fed in pieces of the split byte's
 *    size into an output buffer of a size it also picks, against a
 *    reference decoder (hex digits CRLF, data CRLF, ..., "0" CRLF,
 *    trailer lines NAME ":" VALUE, CRLF): the same verdict, the same body, the same
 *    number of input bytes consumed when it ends. Then agd_query_var on
 *    the bytes as a query: its answer fits the buffer.
 */
#include <ctype.h>
#include <strings.h>

#include "api/httpparse.h"
#include "fuzz.h"

static bool tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* The reference for heads: the length of a valid head at b[0..n) (leading
 * spaces and line ends skipped), 0 when none is complete or it is invalid;
 * *invalid when the bytes can never become a valid head. */
static size_t ref_head(const unsigned char *b, size_t n, bool *invalid)
{
	size_t i = 0, start, line, nh = 0;
	int lineno = 0;

	*invalid = false;
	while (i < n && i < AGD_LEADING_MAX && (b[i] == ' ' || b[i] == '\r' || b[i] == '\n'))
		i++;
	start = i;
	for (line = i; i < n; i++) {
		size_t len;

		if (b[i] == '\r' && i + 1 < n && b[i + 1] != '\n')
			goto bad;
		if (b[i] != '\n')
			continue;
		if (i == start || b[i - 1] != '\r')
			goto bad;
		len = i - 1 - line;
		if (!len) { /* the empty line */
			if (i + 1 - start >= AGD_HEAD_MAX || lineno == 0)
				goto bad;
			return i + 1;
		}
		if (lineno == 0) {
			size_t k = line, m;

			while (k < line + len && tchar(b[k]))
				k++;
			if (k == line || k >= line + len || b[k] != ' ')
				goto bad;
			m = ++k;
			while (k < line + len && b[k] > 0x20 && b[k] < 0x7f)
				k++;
			if (k == m || b[m] != '/' || k >= line + len || b[k] != ' ')
				goto bad;
			k++;
			if (line + len - k != 8 ||
			    (memcmp(b + k, "HTTP/1.1", 8) && memcmp(b + k, "HTTP/1.0", 8)))
				goto bad;
		} else {
			size_t k = line;

			while (k < line + len && tchar(b[k]))
				k++;
			if (k == line || k >= line + len || b[k] != ':')
				goto bad;
			for (k++; k < line + len; k++)
				if ((b[k] < 0x20 && b[k] != '\t') || b[k] == 0x7f)
					goto bad;
			if (++nh > AGD_HEADERS_MAX)
				goto bad;
		}
		lineno++;
		line = i + 1;
	}
	if (n - start >= AGD_HEAD_MAX || start >= AGD_LEADING_MAX)
		goto bad;
	return 0;
bad:
	*invalid = true;
	return 0;
}

/* Content-Length with whitespace after its digits is refused by the parser
 * on purpose (framing): the reference accepts it, so such heads are left
 * out of the comparison of verdicts. */
static bool cl_trailing_ws(const unsigned char *b, size_t n)
{
	for (size_t i = 0; i + 16 < n; i++) {
		if ((i == 0 || b[i - 1] == '\n') && !strncasecmp((const char *)b + i, "content-length:", 15)) {
			size_t k = i + 15;

			while (k < n && b[k] != '\r')
				k++;
			if (k > i + 15 && k < n && (b[k - 1] == ' ' || b[k - 1] == '\t'))
				return true;
		}
	}
	return false;
}

static bool inside(const char *p, const char *buf, size_t len)
{
	return p >= buf && p < buf + len;
}

static void check_head(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 64), *copy = malloc(size + 64), why[256];
	struct agd_reqinfo *ri = calloc(1, sizeof(*ri));
	bool invalid;
	size_t ref = ref_head(data, size, &invalid);
	long rc;

	memcpy(buf, data, size);
	rc = agd_head_parse(buf, size, ri, why, sizeof(why));
	if (!cl_trailing_ws(data, size) && !(rc == -505)) {
		FUZZ_CHECK((rc > 0) == (ref > 0), "parser %ld, reference %zu (why: %s)", rc, ref,
			   rc < 0 ? why : "");
		FUZZ_CHECK(rc <= 0 || (size_t)rc == ref, "length %ld, reference %zu", rc, ref);
		FUZZ_CHECK(rc >= 0 || invalid, "refused (%ld: %s) what may still become valid", rc,
			   why);
	}
	if (rc > 0) {
		FUZZ_CHECK(ri->num_headers <= AGD_HEADERS_MAX, "%d headers", ri->num_headers);
		FUZZ_CHECK(inside(ri->request_method, buf, (size_t)rc) &&
			   inside(ri->request_uri, buf, (size_t)rc) && ri->request_uri[0] == '/',
			   "request line pieces outside the head");
		FUZZ_CHECK(!strcmp(ri->http_version, "1.0") || !strcmp(ri->http_version, "1.1"),
			   "version %s", ri->http_version);
		for (int i = 0; i < ri->num_headers; i++) {
			const char *v = ri->http_headers[i].value;

			FUZZ_CHECK(inside(ri->http_headers[i].name, buf, (size_t)rc) &&
				   inside(v, buf, (size_t)rc + 1), "header %d outside the head", i);
			for (; *v; v++)
				FUZZ_CHECK(*v != '\r' && *v != '\n', "line end in header %d's value", i);
		}
		/* Fed in two parts: never an error before the end. */
		for (size_t k = 1; k < (size_t)rc; k += 1 + (size_t)rc / 7) {
			memcpy(copy, data, k);
			FUZZ_CHECK(agd_head_parse(copy, k, ri, why, sizeof(why)) == 0,
				   "a prefix of %zu of %ld bytes: not 0 (%s)", k, rc, why);
		}
		/* Bytes after the head change nothing. */
		memcpy(copy, data, (size_t)rc);
		memcpy(copy + rc, "GET /x HTTP/1.1\r\n", 17);
		FUZZ_CHECK(agd_head_parse(copy, (size_t)rc + 17, ri, why, sizeof(why)) == rc,
			   "bytes after the head changed its length");
	}
	free(buf);
	free(copy);
	free(ri);
}

/* The reference chunked decoder: 1 done (*used, body in out), 0 more
 * needed, -1 malformed. */
static int ref_chunks(const unsigned char *b, size_t n, char *out, size_t *out_len, size_t *used)
{
	size_t i = 0, k = 0;

	for (;;) {
		unsigned long long sz = 0;
		size_t digits = 0;

		while (i < n && isxdigit(b[i])) {
			if (++digits > 15)
				return -1;
			sz = sz * 16 + (unsigned long long)(isdigit(b[i]) ? b[i] - '0' :
							  (tolower(b[i]) - 'a' + 10));
			i++;
		}
		if (i >= n)
			return 0;
		if (!digits || b[i] != '\r')
			return -1;
		if (++i >= n)
			return 0;
		if (b[i++] != '\n')
			return -1;
		if (!sz)
			break;
		if (n - i < sz)
			return 0;
		memcpy(out + k, b + i, sz);
		k += sz;
		i += sz;
		if (i >= n)
			return 0;
		if (b[i++] != '\r')
			return -1;
		if (i >= n)
			return 0;
		if (b[i++] != '\n')
			return -1;
	}
	/* trailer lines, then CRLF */
	for (size_t trailer = 0;;) {
		if (i >= n)
			return 0;
		if (b[i] == '\r') {
			if (++i >= n)
				return 0;
			if (b[i++] != '\n')
				return -1;
			*out_len = k;
			*used = i;
			return 1;
		}
		if (!tchar(b[i]))
			return -1;
		/* field-name ":" then the value (RFC 9112 5: no space before
		 * the colon) */
		while (i < n && tchar(b[i])) {
			if (++trailer > 16384)
				return -1;
			i++;
		}
		if (i >= n)
			return 0;
		if (b[i] != ':')
			return -1;
		while (i < n && b[i] != '\r') {
			if ((b[i] < 0x20 && b[i] != '\t') || b[i] == 0x7f)
				return -1;
			if (++trailer > 16384)
				return -1;
			i++;
		}
		if (i >= n)
			return 0;
		if (++trailer > 16384)
			return -1;
		if (i + 1 >= n)
			return 0;
		if (b[i + 1] != '\n')
			return -1;
		i += 2;
	}
}

static void check_chunks(const uint8_t *data, size_t size, unsigned int split)
{
	char *out = malloc(size + 1), *ref = malloc(size + 1), why[256];
	size_t piece = 1 + split % 17, room = 1 + (split >> 4) * 97, off = 0, len = 0;
	size_t ref_len = 0, ref_used = 0;
	struct agd_chunks ch;
	int rc = 0, rr = ref_chunks(data, size, ref, &ref_len, &ref_used);

	agd_chunks_init(&ch);
	while (off < size && rc == 0) {
		size_t n = size - off < piece ? size - off : piece, used = 0, made = 0;
		size_t r = size + 1 - len < room ? size + 1 - len : room;

		rc = agd_chunks_feed(&ch, (const char *)data + off, n, out + len, r, &used, &made,
				     why, sizeof(why));
		FUZZ_CHECK(used <= n && made <= r, "consumed %zu of %zu, made %zu in %zu", used, n,
			   made, r);
		off += used;
		len += made;
		if (rc == 0 && !used && !made)
			FUZZ_CHECK(r == 0 || n == 0, "no progress with input and room");
	}
	FUZZ_CHECK(rc == rr, "decoder %d, reference %d (%s)", rc, rr, rc < 0 ? why : "");
	if (rc == 1) {
		FUZZ_CHECK(len == ref_len && !memcmp(out, ref, len), "bodies differ (%zu, %zu bytes)",
			   len, ref_len);
		FUZZ_CHECK(off == ref_used, "ended after %zu bytes, reference %zu", off, ref_used);
	}
	free(out);
	free(ref);
}

static void check_query(const uint8_t *data, size_t size, unsigned int split)
{
	char *q = malloc(size + 1), buf[64];
	size_t len = 1 + split % sizeof(buf);
	int n;

	memcpy(q, data, size);
	q[size] = 0;
	n = agd_query_var(q, split & 1 ? "token" : "topics", buf, len);
	FUZZ_CHECK(n >= -2 && n < (int)len, "returned %d for a buffer of %zu", n, len);
	if (n >= 0)
		FUZZ_CHECK(strlen(buf) <= (size_t)n, "value longer than its length");
	free(q);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned int sel, split;

	if (size < 2)
		return 0;
	sel = data[0];
	split = data[1];
	data += 2;
	size -= 2;
	if (!(sel & 1)) {
		check_head(data, size);
	} else {
		check_chunks(data, size, split);
		check_query(data, size, split);
	}
	return 0;
}
