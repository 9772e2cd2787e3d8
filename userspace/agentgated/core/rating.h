/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Ratings as clients send them: one JSON object, a JSON array of them, or
 * NDJSON (one object per line). A batch is validated whole: every invalid
 * item is reported with its index, the field and the reason, and a batch
 * with any error is applied not at all.
 *
 * {"id": "...", "agent": "...", "user": "...", "score": 1..5, "ts": ms,
 *  "comment": "..."}: agent and score required; unknown fields refused.
 */
#ifndef AGENTGATED_RATING_H
#define AGENTGATED_RATING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agentgate/abi.h"

#define AG_RATING_ID_MAX 128
#define AG_RATING_USER_MAX 128
#define AG_RATING_COMMENT_MAX 1024
#define AG_RATING_BATCH_MAX 100000 /* items in one request */
#define AG_RATING_TS_MAX 253402300799999LL /* 9999-12-31T23:59:59.999Z */

struct ag_rating {
	char id[AG_RATING_ID_MAX + 1]; /* "" when the client gave none */
	char agent[AG_NAME_MAX + 1];
	char user[AG_RATING_USER_MAX + 1];
	int score;
	int64_t ts_ms; /* -1 when the client gave none */
};

struct ag_rating_error {
	size_t index;   /* item (array element or NDJSON line, from 0) */
	char field[16]; /* "" when the item as a whole is wrong */
	char reason[112];
};

#define AG_RATING_ERRORS_MAX 100 /* errors detailed per batch */

struct ag_rating_batch {
	struct ag_rating *items;
	size_t n;
	/* The first min(n_errors, AG_RATING_ERRORS_MAX) errors; n_errors counts
	 * them all. */
	struct ag_rating_error *errors;
	size_t n_errors;
};

enum ag_rating_format {
	AG_RATING_JSON,   /* an object or an array of objects */
	AG_RATING_NDJSON, /* one object per line; blank lines ignored */
};

/* Parse and validate a request body. Returns 0 when every item is valid,
 * -EINVAL when batch->errors lists what is not (batch->items is then empty),
 * -ENOMEM on allocation failure. Free with ag_rating_batch_free(). */
int ag_ratings_parse(const char *body, size_t len, enum ag_rating_format format,
		     struct ag_rating_batch *batch);
void ag_rating_batch_free(struct ag_rating_batch *batch);

/* One NDJSON line (without its newline): 0, or -EINVAL with err's field and
 * reason set (err->index is left 0 for the caller). */
int ag_rating_parse_line(const char *line, size_t len, struct ag_rating *out,
			 struct ag_rating_error *err);

#endif
