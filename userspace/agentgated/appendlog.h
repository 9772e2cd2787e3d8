/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Appending one line to a log file (audit.log, dead-letter.ndjson) whole or
 * not at all: on a full disk a write may store part of a line, which would
 * tear it and the next one; the part is cut off again.
 */
#ifndef AGENTGATED_APPENDLOG_H
#define AGENTGATED_APPENDLOG_H

#include <stddef.h>

/* text (without its newline) and a newline, to fd opened O_APPEND by one
 * writer at a time. 0, or -errno (-ENOSPC on a full disk). */
int agd_append_line(int fd, const char *text, size_t len);

#endif
