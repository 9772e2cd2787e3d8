/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The HTTP API's limits on what clients send, beyond the body size
 * (--max-body) and the time to send a request (--request-timeout,
 * deadline.h):
 *   - request line and headers: at most 16 KiB less 64 bytes (CivetWeb's
 *     buffer, and room framing.c reads in) and 63 header fields (CivetWeb
 *     keeps 64 and drops the rest unseen): 431;
 *   - request framing and targets: framing.h;
 *   - JSON nested at most AGD_JSON_DEPTH_MAX deep: 400 before it is parsed
 *     (core/jsonguard.h);
 *   - query parameters: only those the route takes: 400 naming the other;
 *   - CivetWeb's own refusals (malformed request line, oversized headers)
 *     answered in the API's JSON error form.
 */
#ifndef AGENTGATED_REQLIMITS_H
#define AGENTGATED_REQLIMITS_H

#include <stddef.h>

#define AGD_HEADERS_MAX 63
#define AGD_HEAD_MAX 16384  /* CivetWeb's max_request_size: its buffer */
#define AGD_HEAD_MARGIN 64  /* heads within this of it are refused (framing.c) */

struct mg_connection;

/* The request's query parameters against names, those its route takes
 * (NULL: none): 0, or the status of the error response sent. */
int agd_request_limits(struct mg_connection *conn, const char *const *names);

/* CivetWeb's http_error callback: its refusals as {"error", "message"}. */
int agd_civetweb_error(struct mg_connection *conn, int status, const char *msg);

#endif
