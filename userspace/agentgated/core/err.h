/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The daemon's one error carrier: what went wrong (a negative errno) and the
 * sentence for the person who reads it (an API client, the log, stderr).
 * Every part reports through it: a function that can fail returns the
 * negative errno and, given a struct agd_err, says why there. A leaf: it
 * includes nothing of the daemon. */
#ifndef AGD_ERR_H
#define AGD_ERR_H

#include <stdarg.h>
#include <stddef.h>

/* Long enough for a path (PATH_MAX) and what is wrong with it. */
#define AGD_ERR_MAX 4400

struct agd_err {
	int code; /* 0, or a negative errno */
	char msg[AGD_ERR_MAX];
};

/* Sets e (when not NULL) to code and the formatted message; returns code. */
int agd_errf(struct agd_err *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int agd_verrf(struct agd_err *e, int code, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
/* Puts "context: " before e's message (code unchanged); returns e->code. */
int agd_err_prefix(struct agd_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* e's message, or fallback when none was set. */
const char *agd_err_msg(const struct agd_err *e, const char *fallback);
void agd_err_clear(struct agd_err *e);

#endif
