// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Human tables (agent list, rule list, top): every column as wide as its
 * widest cell, its title at least, so that a 36-character UUID or a name of
 * AG_NAME_MAX characters keeps the columns in line. Cells are formatted once
 * into one growing buffer, NUL after each (no allocation per cell: agent
 * list prints 10^6 rows), and printed once the widths are known. A left
 * aligned last column is not padded (no trailing blanks).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

struct table {
	const struct table_col *cols;
	size_t ncols;
	size_t *width;
	char *buf; /* the cells, row after row, each ended by a NUL */
	size_t len, cap;
	size_t ncells;
	bool lost; /* a cell could not be stored: out of memory */
};

struct table *table_new(const struct table_col *cols, size_t ncols)
{
	struct table *t = ncols ? calloc(1, sizeof(*t)) : NULL;
	size_t i;

	if (!t)
		return NULL;
	t->width = calloc(ncols, sizeof(*t->width));
	if (!t->width) {
		free(t);
		return NULL;
	}
	t->cols = cols;
	t->ncols = ncols;
	for (i = 0; i < ncols; i++)
		t->width[i] = strlen(cols[i].title);
	return t;
}

static bool reserve(struct table *t, size_t more)
{
	size_t cap = t->cap ? t->cap : 4096;
	char *p;

	if (t->len + more <= t->cap)
		return true;
	while (cap < t->len + more)
		cap *= 2;
	p = realloc(t->buf, cap);
	if (!p)
		return false;
	t->buf = p;
	t->cap = cap;
	return true;
}

/* The cell's text is in place at buf + len, n bytes: end it and count it. */
static void cell_done(struct table *t, size_t n)
{
	size_t col = t->ncells % t->ncols;

	t->buf[t->len + n] = '\0';
	if (n > t->width[col])
		t->width[col] = n;
	t->len += n + 1;
	t->ncells++;
}

void table_cell(struct table *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->lost || !reserve(t, 128)) {
		t->lost = true;
		return;
	}
	va_start(ap, fmt);
	n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
	va_end(ap);
	if (n < 0) {
		n = 0;
		t->buf[t->len] = '\0';
	} else if ((size_t)n >= t->cap - t->len) {
		if (!reserve(t, (size_t)n + 1)) {
			t->lost = true;
			return;
		}
		va_start(ap, fmt);
		vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
	}
	cell_done(t, (size_t)n);
}

void table_text(struct table *t, const char *s)
{
	size_t n = strlen(s);

	if (t->lost || !reserve(t, n + 1)) {
		t->lost = true;
		return;
	}
	memcpy(t->buf + t->len, s, n);
	cell_done(t, n);
}

void table_uint(struct table *t, unsigned long long v)
{
	char digits[24];
	size_t n = 0, i;

	if (t->lost || !reserve(t, sizeof(digits))) {
		t->lost = true;
		return;
	}
	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		t->buf[t->len + i] = digits[n - 1 - i];
	cell_done(t, n);
}

/* One cell into line at *at: the gap before it, padding on its side. */
static void put_cell(const struct table *t, char *line, size_t *at, size_t col, const char *s,
		     size_t len)
{
	const struct table_col *c = &t->cols[col];
	size_t fill = t->width[col] - len;

	if (col) {
		memset(line + *at, ' ', c->gap ? c->gap : 1);
		*at += c->gap ? c->gap : 1;
	}
	if (c->align == TABLE_RIGHT) {
		memset(line + *at, ' ', fill);
		*at += fill;
	}
	memcpy(line + *at, s, len);
	*at += len;
	if (c->align == TABLE_LEFT && col + 1 < t->ncols) {
		memset(line + *at, ' ', fill);
		*at += fill;
	}
}

/* Each line is put together, then written with one call. */
int table_print(struct table *t, FILE *out)
{
	size_t i, at = 0, off = 0, max = 1;
	char *line;

	if (t->lost)
		return -ENOMEM;
	for (i = 0; i < t->ncols; i++)
		max += t->width[i] + (t->cols[i].gap ? t->cols[i].gap : 1);
	line = malloc(max);
	if (!line)
		return -ENOMEM;
	for (i = 0; i < t->ncols; i++)
		put_cell(t, line, &at, i, t->cols[i].title, strlen(t->cols[i].title));
	line[at++] = '\n';
	fwrite(line, 1, at, out);
	for (i = 0, at = 0; i < t->ncells; i++) {
		size_t len = strlen(t->buf + off);

		put_cell(t, line, &at, i % t->ncols, t->buf + off, len);
		off += len + 1;
		/* A row left unfinished still ends its line. */
		if ((i + 1) % t->ncols == 0 || i + 1 == t->ncells) {
			line[at++] = '\n';
			fwrite(line, 1, at, out);
			at = 0;
		}
	}
	free(line);
	return 0;
}

void table_free(struct table *t)
{
	if (!t)
		return;
	free(t->buf);
	free(t->width);
	free(t);
}
