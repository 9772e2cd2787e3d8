/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Appending one line to a log file (audit.log, dead-letter.ndjson) whole or
 * not at all: on a full disk a write may store part of a line, which would
 * tear it and the next one; the part is cut off again.
 *
 * A capped log (the dead-letter file) also bounds its size: a line that
 * would take the file past max bytes first turns it into FILE.1, replacing
 * the previous FILE.1, and starts FILE afresh. Both together stay under
 * 2 * max bytes; the lines of the FILE.1 replaced are counted as discarded.
 */
#ifndef AGENTGATED_APPENDLOG_H
#define AGENTGATED_APPENDLOG_H

#include <pthread.h>
#include <stddef.h>
#include <linux/types.h>
#include "err.h"

/* text (without its newline) and a newline, to fd opened O_APPEND by one
 * writer at a time. 0, or -errno (-ENOSPC on a full disk). */
int agd_append_line(int fd, const char *text, size_t len);

struct agd_caplog {
	pthread_mutex_t lock;
	int fd;
	__u64 max;  /* bytes of FILE before it rotates */
	__u64 size; /* bytes in FILE now */
	char path[4200], old[4210];
};

/* Opens (creates, 0600) path for appending. 0, or -errno with err. */
int agd_caplog_open(struct agd_caplog *l, const char *path, __u64 max, struct agd_err *err);
/* One line, rotating first when it would not fit. 0, or -errno: the line
 * was not written (the disk is full, the rotation failed). *discarded: the
 * lines deleted with the FILE.1 a rotation replaced (0 without one). */
int agd_caplog_append(struct agd_caplog *l, const char *text, size_t len, __u64 *discarded);
void agd_caplog_close(struct agd_caplog *l);

#endif
