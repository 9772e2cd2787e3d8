/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * NDJSON rating streams: standard input (--stdin) and a Unix stream socket
 * (--ingest-socket PATH), for pipes such as `kcat -C -t ratings |
 * agentgated --stdin` and for replaying rating logs.
 *
 * Each line is one rating. Valid lines are applied in order, in batches,
 * without waiting for each commit (the engine's queue bounds memory and
 * blocks the reader when full: backpressure reaches the writer). An invalid
 * line, or a line of a batch the engine refused, is appended to the
 * dead-letter file (<state dir>/dead-letter.ndjson) with its source, line
 * number and reason: nothing is dropped silently.
 *
 * A socket client that shuts down its writing side gets one JSON line back
 * once everything it sent is settled:
 *   {"applied":n,"duplicates":n,"invalid":n,"rejected":n}
 */
#ifndef AGENTGATED_INGEST_H
#define AGENTGATED_INGEST_H

#include "engine.h"

struct agd_ingest;

/* in_fd: standard input to read, or -1; socket_path: NULL or "" for none. */
int agd_ingest_start(struct ag_engine *e, int in_fd, const char *socket_path,
		     const char *dead_letter_path, struct agd_ingest **out, char *err, size_t len);
/* Stops reading, waits for submitted batches, removes the socket. */
void agd_ingest_stop(struct agd_ingest *in);

#endif
