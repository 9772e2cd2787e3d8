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
 * The dead-letter file is bounded: each line's input is cut to
 * AGD_DEAD_LETTER_INPUT_MAX bytes ("truncated": true, "input_bytes": its
 * length), and past dead_letter_max bytes the file becomes
 * dead-letter.ndjson.1 (replacing the previous one). What is written, cut,
 * not written or deleted by a rotation is counted (agd_dead_letter_stats,
 * agentgate_dead_letters_total and agentgate_dead_letters_dropped_total).
 *
 * A socket client that shuts down its writing side gets one JSON line back
 * once everything it sent is settled:
 *   {"applied":n,"duplicates":n,"invalid":n,"rejected":n,"limited":n}
 * (limited: lines over --rating-user-rate, dead-lettered like the
 * refused ones)
 */
#ifndef AGENTGATED_INGEST_H
#define AGENTGATED_INGEST_H

#include "core/engine.h"
#include "core/err.h"

#define AGD_DEAD_LETTER_INPUT_MAX 4096 /* bytes of a line kept in its dead letter */
#define AGD_DEAD_LETTER_FILE "dead-letter.ndjson" /* in the state dir */
#define AGD_DEAD_LETTER_MAX_DEFAULT (16ULL << 20) /* --dead-letter-max */
#define AGD_DEAD_LETTER_MAX_MIN (64ULL << 10)

struct agd_ingest;

struct agd_ingest_opts {
	int in_fd;               /* standard input to read, or -1 */
	const char *socket_path; /* NULL or "" for none */
	const char *dead_letter_path;
	__u64 dead_letter_max; /* bytes before it rotates; 0: the default (16 MiB) */
};

int agd_ingest_open(struct agd_engine *e, const struct agd_ingest_opts *o,
		    struct agd_ingest **out, struct agd_err *err);
/* The same with the default dead-letter cap. */
int agd_ingest_start(struct agd_engine *e, int in_fd, const char *socket_path,
		     const char *dead_letter_path, struct agd_ingest **out, struct agd_err *err);
/* Stops reading, waits for submitted batches, removes the socket. */
void agd_ingest_stop(struct agd_ingest *in);

/* Dead letters since start, for /metrics: written whole, written with
 * their input cut, not written (the write or the rotation failed); and
 * dropped: not written, or deleted with the oldest file by a rotation. */
struct agd_dead_letter_stats {
	__u64 written, truncated, failed, dropped;
};
void agd_dead_letter_stats(struct agd_dead_letter_stats *s);

#endif
