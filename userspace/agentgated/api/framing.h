/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Request framing and request targets (RFC 9112, RFC 3986), checked before
 * a request is routed: anything on which two HTTP parsers (a proxy in front
 * and this daemon) could disagree about where a request ends, or what it
 * names, is refused with 400 and the connection closed, so that no bytes
 * after it are ever read as a request of their own. docs/OPERATIONS.md
 * ("Request framing and names") lists the shapes and the reasons. The
 * syntax of the head (line ends, spaces, names, obs-fold) is httpparse.c's;
 * here: what the fields say.
 */
#ifndef AGENTGATED_FRAMING_H
#define AGENTGATED_FRAMING_H

#include <stdbool.h>
#include <stddef.h>

#define AGD_PATH_MAX 2048 /* decoded path, NUL included */

struct agd_conn;

/* 0, or the status of the 400 sent (connection closed after it). */
int agd_request_framing(struct agd_conn *conn);

/* raw: the request's path as sent, without the query. Percent-decodes it
 * into out (len bytes). 0, or -EINVAL with why: a byte RFC 3986 does not
 * allow in a path, '%' without two hex digits, %00, %2F (a '/' inside a
 * segment), a dot segment ("." or "..", encoded or not), or longer than
 * len - 1. */
int agd_path_decode(const char *raw, char *out, size_t len, char *why, size_t why_len);

#endif
