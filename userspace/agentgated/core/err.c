// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <stdio.h>
#include <string.h>

#include "err.h"

int agd_verrf(struct agd_err *e, int code, const char *fmt, va_list ap)
{
	if (e) {
		e->code = code;
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	}
	return code;
}

int agd_errf(struct agd_err *e, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	agd_verrf(e, code, fmt, ap);
	va_end(ap);
	return code;
}

int agd_err_prefix(struct agd_err *e, const char *fmt, ...)
{
	char head[512];
	size_t h, t;
	va_list ap;

	if (!e)
		return 0;
	va_start(ap, fmt);
	vsnprintf(head, sizeof(head), fmt, ap);
	va_end(ap);
	h = strlen(head) + 2; /* "head: " */
	t = strnlen(e->msg, sizeof(e->msg) - 1);
	if (h + t >= sizeof(e->msg))
		t = sizeof(e->msg) - h - 1;
	memmove(e->msg + h, e->msg, t);
	memcpy(e->msg, head, h - 2);
	memcpy(e->msg + h - 2, ": ", 2);
	e->msg[h + t] = 0;
	return e->code;
}

const char *agd_err_msg(const struct agd_err *e, const char *fallback)
{
	return e && e->msg[0] ? e->msg : fallback;
}

void agd_err_clear(struct agd_err *e)
{
	if (e) {
		e->code = 0;
		e->msg[0] = 0;
	}
}
