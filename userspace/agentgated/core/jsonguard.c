// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The JSON guard (jsonguard.h): nesting measured before jansson parses. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "jsonguard.h"

/* The offset where text first nests deeper than max, or len when it does not. */
static size_t too_deep_at(const char *text, size_t len, int max)
{
	bool in_string = false, escaped = false;
	int depth = 0;
	size_t i;

	for (i = 0; i < len; i++) {
		char c = text[i];

		if (in_string) {
			if (escaped)
				escaped = false;
			else if (c == '\\')
				escaped = true;
			else if (c == '"')
				in_string = false;
		} else if (c == '"') {
			in_string = true;
		} else if (c == '[' || c == '{') {
			if (++depth > max)
				return i;
		} else if ((c == ']' || c == '}') && depth > 0) {
			depth--;
		}
	}
	return len;
}

json_t *agd_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *err)
{
	size_t at = too_deep_at(buf, len, AGD_JSON_DEPTH_MAX);

	if (at == len)
		return json_loadb(buf, len, flags, err);
	memset(err, 0, sizeof(*err));
	err->line = 1;
	err->column = (int)at + 1;
	err->position = (int)at;
	snprintf(err->text, sizeof(err->text), "nested deeper than %d levels",
		 AGD_JSON_DEPTH_MAX);
	return NULL;
}

