/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * HTTP/1.1 request heads and chunked bodies (RFC 9112), parsed strictly and
 * without any I/O: the server (server.c) feeds them what it has read. Every
 * shape on which two parsers (a proxy in front and this one) could disagree
 * about where a request ends is an error here, never a guess: a bare CR or
 * LF, whitespace before a colon, obs-fold, more than one space between the
 * request line's words, a byte that is no token in a header name, controls
 * in a value, a chunk size that is not hex digits and CRLF, chunk data not
 * followed by CRLF. docs/OPERATIONS.md ("Request framing and names") lists
 * them with the reasons; framing.c judges what the fields say (duplicates,
 * Content-Length with Transfer-Encoding, ...).
 */
#ifndef AGENTGATED_HTTPPARSE_H
#define AGENTGATED_HTTPPARSE_H

#include <stdbool.h>
#include <stddef.h>

#define AGD_HEADERS_MAX 63
#define AGD_HEAD_MAX 16384 /* request line and headers, the empty line included: less */
#define AGD_LEADING_MAX 1024 /* empty lines or spaces before a request line, skipped */

struct agd_header {
	const char *name;
	const char *value; /* optional whitespace around it removed */
};

/* A parsed head: every string points into the buffer given to the parser,
 * NUL-terminated in place. */
struct agd_reqinfo {
	const char *request_method;
	const char *request_uri;  /* the path as sent, without the query */
	const char *query_string; /* after '?', NULL without one */
	const char *http_version; /* "1.0" or "1.1" */
	char remote_addr[48];
	int remote_port;
	int num_headers;
	struct agd_header http_headers[AGD_HEADERS_MAX];
};

/*
 * Parses the head at buf[0..len). Returns the head's length (from buf[0],
 * leading empty lines included, through the empty line) when it is complete
 * and well formed, 0 when more bytes are needed, or the status of an error
 * (400, 431; negative) with why filled. On success the head's bytes are
 * rewritten in place (NULs) and ri points into them. Bytes after the head
 * are not looked at.
 */
long agd_head_parse(char *buf, size_t len, struct agd_reqinfo *ri, char *why, size_t why_len);

/* The value of the first header called name (case-insensitive), or NULL. */
const char *agd_reqinfo_header(const struct agd_reqinfo *ri, const char *name);

/* How many lines the header called name has. */
int agd_reqinfo_header_count(const struct agd_reqinfo *ri, const char *name);

/* Whether token is an element of the list the header's lines make
 * together (RFC 9110 5.3: repeated lines are one comma-separated list). */
bool agd_reqinfo_has_token(const struct agd_reqinfo *ri, const char *name, const char *token);

/*
 * The chunked decoder: one per body. agd_chunks_feed() takes the bytes at
 * in[0..len), moves the data they carry to out (at most out_room bytes) and
 * says how many input bytes it consumed (*used) and output bytes it wrote
 * (*made). Returns 1 when the body has ended (the last chunk and any
 * trailer section read: nothing after it is consumed), 0 when it wants
 * more, -1 when the encoding is malformed (why filled).
 */
struct agd_chunks {
	int state;
	unsigned long long left; /* of the current chunk's data */
	unsigned int digits;     /* of the current size */
	size_t line;             /* the current trailer line: 0 in its name, 1 after the colon */
	size_t trailer;          /* bytes of the trailer section */
};

void agd_chunks_init(struct agd_chunks *ch);
int agd_chunks_feed(struct agd_chunks *ch, const char *in, size_t len, char *out, size_t out_room,
		    size_t *used, size_t *made, char *why, size_t why_len);

/* The value of query parameter name in the query q (NULL: none),
 * percent-decoded ('+' as a space) into buf: its length, -1 when absent,
 * -2 when it does not fit (or buf is NULL). */
int agd_query_var(const char *q, const char *name, char *buf, size_t len);

/* A hex digit's value, -1 for any other byte. */
int agd_hexval(unsigned char c);

/* Whether a comma-separated header value lists token (case-insensitive). */
bool agd_header_has_token(const char *value, const char *token);

#endif
