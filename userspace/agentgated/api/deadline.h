/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * A deadline for reading a request body. CivetWeb bounds the time a client
 * takes to send the request line and headers (request_timeout_ms counts
 * from the first byte), but mg_read() waits for as long as each byte comes
 * within the timeout of the one before: a client trickling a body a byte at
 * a time would hold a worker for ever. So while a handler reads a body, a
 * watchdog thread knows the connection's socket and its deadline, and past
 * the deadline shuts the socket's receiving side: mg_read() returns at once
 * with what has come, and the handler answers 408.
 */
#ifndef AGENTGATED_DEADLINE_H
#define AGENTGATED_DEADLINE_H

#include <stdbool.h>
#include <linux/types.h>

struct mg_connection;
struct agd_deadlines;

/* The watchdog; 0 or -errno. */
int agd_deadlines_start(__u64 timeout_ms, struct agd_deadlines **out);
void agd_deadlines_stop(struct agd_deadlines *d);

/* Arms the deadline for the request conn is reading: a handle, or -1 when
 * the connection's socket could not be found (the read is then unbounded,
 * as before). Disarming returns true when the deadline fired. */
int agd_deadline_arm(struct agd_deadlines *d, struct mg_connection *conn);
bool agd_deadline_disarm(struct agd_deadlines *d, int handle);

#endif
