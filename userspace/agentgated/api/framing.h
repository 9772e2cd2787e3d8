/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Request framing and request targets (RFC 9112, RFC 3986), checked before
 * a request is routed: anything on which two HTTP parsers (a proxy in front
 * and CivetWeb here) could disagree about where a request ends, or what it
 * names, is refused with 400 and the connection closed, so that no bytes
 * after it are ever read as a request of their own. docs/OPERATIONS.md
 * ("Request framing and names") lists the shapes and the reasons.
 *
 * CivetWeb 1.15 parses the request head in place, writing a NUL over each
 * separator it consumes, and keeps only the pieces: what it forgave (bare
 * LF, a bare CR after the request line, several spaces, whitespace before
 * a colon, obs-fold lines, where it silently stops reading headers) shows
 * only as the NULs between the pieces. agd_request_framing() reads those;
 * it needs decode_url "no" (the target is then left as sent).
 */
#ifndef AGENTGATED_FRAMING_H
#define AGENTGATED_FRAMING_H

#include <stdbool.h>
#include <stddef.h>

#define AGD_PATH_MAX 2048 /* decoded path, NUL included */

struct mg_connection;

/* 0, or the status of the 400 sent (connection closed after it). */
int agd_request_framing(struct mg_connection *conn);

/* Whether the request's body comes in chunks (after agd_request_framing:
 * its one Transfer-Encoding is "chunked"). */
bool agd_request_chunked(struct mg_connection *conn);

/* raw: the request's path as sent, without the query. Percent-decodes it
 * into out (len bytes). 0, or -EINVAL with why: a byte RFC 3986 does not
 * allow in a path, '%' without two hex digits, %00, %2F (a '/' inside a
 * segment), a dot segment ("." or "..", encoded or not), or longer than
 * len - 1. */
int agd_path_decode(const char *raw, char *out, size_t len, char *why, size_t why_len);

#endif
