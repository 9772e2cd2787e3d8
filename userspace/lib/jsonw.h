/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * A small streaming JSON writer: objects, arrays, strings, numbers, bools and
 * null, with commas and escaping handled, compact or pretty. Every JSON
 * document agentgate prints goes through it.
 */
#ifndef AGENTGATE_JSONW_H
#define AGENTGATE_JSONW_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define JSONW_MAX_DEPTH 16

struct jsonw {
	FILE *out;
	bool pretty;
	int depth;
	bool first[JSONW_MAX_DEPTH]; /* no member written yet at this depth */
	bool after_name;             /* a member name was written, value pending */
};

void jsonw_init(struct jsonw *w, FILE *out, bool pretty);
void jsonw_start_object(struct jsonw *w);
void jsonw_end_object(struct jsonw *w);
void jsonw_start_array(struct jsonw *w);
void jsonw_end_array(struct jsonw *w);
void jsonw_name(struct jsonw *w, const char *name);
void jsonw_string(struct jsonw *w, const char *s);
void jsonw_uint(struct jsonw *w, uint64_t v);
void jsonw_int(struct jsonw *w, int64_t v);
void jsonw_double(struct jsonw *w, double v); /* non-finite values as null */
void jsonw_bool(struct jsonw *w, bool v);
void jsonw_null(struct jsonw *w);
/* Ends a top-level document with a newline. */
void jsonw_end_document(struct jsonw *w);

/* name + value shorthands */
void jsonw_string_field(struct jsonw *w, const char *name, const char *s);
void jsonw_uint_field(struct jsonw *w, const char *name, uint64_t v);
void jsonw_double_field(struct jsonw *w, const char *name, double v);
void jsonw_bool_field(struct jsonw *w, const char *name, bool v);

#endif
