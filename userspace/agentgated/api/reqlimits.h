/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The HTTP API's limits on what clients send, beyond the body size
 * (--max-body) and the time to send a request (--request-timeout, kept by
 * the server's loops, server.h):
 *   - request line and headers: less than 16 KiB, 63 header fields at most
 *     (httpparse.h): 431;
 *   - request framing and targets: framing.h;
 *   - JSON nested at most AGD_JSON_DEPTH_MAX deep: 400 before it is parsed
 *     (core/jsonguard.h);
 *   - query parameters: only those the route takes: 400 naming the other.
 */
#ifndef AGENTGATED_REQLIMITS_H
#define AGENTGATED_REQLIMITS_H

#include <stddef.h>

struct agd_conn;

/* The request's query parameters against names, those its route takes
 * (NULL: none): 0, or the status of the error response sent. */
int agd_request_limits(struct agd_conn *conn, const char *const *names);

#endif
