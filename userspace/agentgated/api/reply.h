/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The API's responses: status line, headers and a JSON body written in one
 * go, and the error form every route, the framing checks and the WebSocket
 * handshake share: {"error": code, "message": text}. A leaf of the api part
 * (server.h and jansson only).
 */
#ifndef AGENTGATED_REPLY_H
#define AGENTGATED_REPLY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct agd_conn;

/* A body of type with status; extra: further header lines, each ending in
 * \r\n, or NULL. Returns status. */
int agd_reply_body(struct agd_conn *conn, int status, const char *type, const char *body,
		   size_t len, const char *extra);
/* The "error" code of a status: "bad_request", "not_found", ... "internal". */
const char *agd_reply_code(int status);
/* Sends and frees o (500 when it cannot be written out). */
int agd_reply_json(struct agd_conn *conn, int status, json_t *o, const char *extra);
/* The error response; 401 adds WWW-Authenticate, 408/413/431 close. */
int agd_reply_error(struct agd_conn *conn, int status, const char *extra, const char *fmt,
		    ...) __attribute__((format(printf, 4, 5)));

#endif
