// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <math.h>
#include <string.h>

#include "jsonw.h"

/* Output is the hot path of listing 10^6 agents: unlocked stdio, digits
 * formatted here, escape-free runs written in one piece. */
static void put(struct jsonw *w, const char *s, size_t n)
{
	fwrite_unlocked(s, 1, n, w->out);
}

static void putch(struct jsonw *w, char c)
{
	fputc_unlocked(c, w->out);
}

static void put_u64(struct jsonw *w, uint64_t v)
{
	char buf[24], *p = buf + sizeof(buf);

	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	put(w, p, (size_t)(buf + sizeof(buf) - p));
}

void jsonw_init(struct jsonw *w, FILE *out, bool pretty)
{
	w->out = out;
	w->pretty = pretty;
	w->depth = 0;
	w->first[0] = true;
	w->after_name = false;
}

static void indent(struct jsonw *w)
{
	int i;

	if (!w->pretty)
		return;
	putch(w, '\n');
	for (i = 0; i < w->depth; i++)
		put(w, "  ", 2);
}

/* Separator before a value or member name at the current depth. */
static void begin_item(struct jsonw *w)
{
	if (w->after_name) {
		w->after_name = false;
		return;
	}
	if (!w->first[w->depth])
		putch(w, ',');
	if (w->depth > 0)
		indent(w);
	w->first[w->depth] = false;
}

static void open_level(struct jsonw *w, char c)
{
	begin_item(w);
	putch(w, c);
	if (w->depth + 1 < JSONW_MAX_DEPTH)
		w->depth++;
	w->first[w->depth] = true;
}

static void close_level(struct jsonw *w, char c)
{
	bool empty = w->first[w->depth];

	if (w->depth > 0)
		w->depth--;
	if (!empty)
		indent(w);
	putch(w, c);
}

void jsonw_start_object(struct jsonw *w)
{
	open_level(w, '{');
}

void jsonw_end_object(struct jsonw *w)
{
	close_level(w, '}');
}

void jsonw_start_array(struct jsonw *w)
{
	open_level(w, '[');
}

void jsonw_end_array(struct jsonw *w)
{
	close_level(w, ']');
}

static bool needs_escape(unsigned char c)
{
	return c < 0x20 || c == '"' || c == '\\';
}

static void put_string(struct jsonw *w, const char *s)
{
	const unsigned char *p = (const unsigned char *)(s ? s : ""), *run = p;
	char esc[8];

	putch(w, '"');
	for (; *p; p++) {
		if (!needs_escape(*p))
			continue;
		put(w, (const char *)run, (size_t)(p - run));
		switch (*p) {
		case '"': put(w, "\\\"", 2); break;
		case '\\': put(w, "\\\\", 2); break;
		case '\n': put(w, "\\n", 2); break;
		case '\r': put(w, "\\r", 2); break;
		case '\t': put(w, "\\t", 2); break;
		case '\b': put(w, "\\b", 2); break;
		case '\f': put(w, "\\f", 2); break;
		default:
			snprintf(esc, sizeof(esc), "\\u%04x", *p);
			put(w, esc, 6);
		}
		run = p + 1;
	}
	put(w, (const char *)run, (size_t)(p - run));
	putch(w, '"');
}

void jsonw_name(struct jsonw *w, const char *name)
{
	begin_item(w);
	put_string(w, name);
	put(w, ":", 1);
	if (w->pretty)
		putch(w, ' ');
	w->after_name = true;
}

void jsonw_string(struct jsonw *w, const char *s)
{
	begin_item(w);
	put_string(w, s);
}

void jsonw_uint(struct jsonw *w, uint64_t v)
{
	begin_item(w);
	put_u64(w, v);
}

void jsonw_int(struct jsonw *w, int64_t v)
{
	begin_item(w);
	if (v < 0) {
		putch(w, '-');
		put_u64(w, (uint64_t)0 - (uint64_t)v);
	} else {
		put_u64(w, (uint64_t)v);
	}
}

void jsonw_double(struct jsonw *w, double v)
{
	begin_item(w);
	if (!isfinite(v)) {
		put(w, "null", 4);
	} else if (v == floor(v) && fabs(v) < 1e15) {
		if (v < 0)
			putch(w, '-');
		put_u64(w, (uint64_t)fabs(v));
	} else {
		char buf[32];
		int n = snprintf(buf, sizeof(buf), "%.15g", v);

		put(w, buf, (size_t)n);
	}
}

void jsonw_bool(struct jsonw *w, bool v)
{
	begin_item(w);
	if (v)
		put(w, "true", 4);
	else
		put(w, "false", 5);
}

void jsonw_null(struct jsonw *w)
{
	begin_item(w);
	put(w, "null", 4);
}

void jsonw_end_document(struct jsonw *w)
{
	putch(w, '\n');
	w->depth = 0;
	w->first[0] = true;
	w->after_name = false;
}

void jsonw_string_field(struct jsonw *w, const char *name, const char *s)
{
	jsonw_name(w, name);
	jsonw_string(w, s);
}

void jsonw_uint_field(struct jsonw *w, const char *name, uint64_t v)
{
	jsonw_name(w, name);
	jsonw_uint(w, v);
}

void jsonw_double_field(struct jsonw *w, const char *name, double v)
{
	jsonw_name(w, name);
	jsonw_double(w, v);
}

void jsonw_bool_field(struct jsonw *w, const char *name, bool v)
{
	jsonw_name(w, name);
	jsonw_bool(w, v);
}
