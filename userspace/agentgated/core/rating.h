/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Ratings as clients send them: one JSON object, a JSON array of them, or
 * NDJSON (one object per line). A batch is validated whole: every invalid
 * item is reported with its index, the field and the reason, and a batch
 * with any error is applied not at all.
 *
 * {"id": "...", "agent": "...", "user": "...", "score": 1..5, "ts": ms,
 *  "comment": "..."}: agent and score required; unknown fields refused.
 * Other pipelines' names are the same fields: agentId, productId and
 * item_id (agent), userId and user_id (user), rating (score), timestamp
 * (ts); ts is milliseconds or an ISO 8601 time; agd_rating_fields_set adds
 * an operator's names. A field given under two names is refused.
 */
#ifndef AGENTGATED_RATING_H
#define AGENTGATED_RATING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agentgate/abi.h"
#include "err.h"

#define AGD_RATING_ID_MAX 128
#define AGD_RATING_USER_MAX 128
#define AGD_RATING_COMMENT_MAX 1024
#define AGD_RATING_BATCH_MAX 100000 /* items in one request */
#define AGD_RATING_TS_MAX 253402300799999LL /* 9999-12-31T23:59:59.999Z */
#define AGD_RATING_FIELD_MAX 32   /* characters of a field name of an operator's */
#define AGD_RATING_ALIASES_MAX 16

struct agd_rating {
	char id[AGD_RATING_ID_MAX + 1]; /* "" when the client gave none */
	char agent[AG_NAME_MAX + 1];
	char user[AGD_RATING_USER_MAX + 1];
	int score;
	int64_t ts_ms; /* -1 when the client gave none */
};

struct agd_rating_error {
	size_t index;   /* item (array element or NDJSON line, from 0) */
	char field[16]; /* "" when the item as a whole is wrong */
	char reason[112];
};

#define AGD_RATING_ERRORS_MAX 100 /* errors detailed per batch */

struct agd_rating_batch {
	struct agd_rating *items;
	size_t n;
	/* The first min(n_errors, AGD_RATING_ERRORS_MAX) errors; n_errors counts
	 * them all. */
	struct agd_rating_error *errors;
	size_t n_errors;
};

enum agd_rating_format {
	AGD_RATING_JSON,   /* an object or an array of objects */
	AGD_RATING_NDJSON, /* one object per line; blank lines ignored */
};

/* Parse and validate a request body. Returns 0 when every item is valid,
 * -EINVAL when batch->errors lists what is not (batch->items is then empty),
 * -ENOMEM on allocation failure. Free with agd_rating_batch_free(). */
int agd_ratings_parse(const char *body, size_t len, enum agd_rating_format format,
		     struct agd_rating_batch *batch);
void agd_rating_batch_free(struct agd_rating_batch *batch);

/* --rating-fields "agent=productId,user=customer,...": more names for the
 * fields, taken before the built-in ones; set before any parsing starts
 * (not thread-safe). 0, or -EINVAL with err naming the part. */
int agd_rating_fields_set(const char *spec, struct agd_err *err);
/* The same check, nothing set. */
int agd_rating_fields_check(const char *spec, struct agd_err *err);

/* One NDJSON line (without its newline): 0, or -EINVAL with err's field and
 * reason set (err->index is left 0 for the caller). */
int agd_rating_parse_line(const char *line, size_t len, struct agd_rating *out,
			 struct agd_rating_error *err);

/* The parsers behind the two above, for the tests and the fuzzer that hold
 * them to each other. agd_rating_parse_fast reads only the plain shape (one
 * flat object of escape-free printable ASCII strings and unsigned integers,
 * every field valid): 1 with *out set, 0 for anything else, valid or not.
 * The _full forms always use the full JSON parser (jansson). */
int agd_rating_parse_fast(const char *line, size_t len, struct agd_rating *out);
int agd_rating_parse_line_full(const char *line, size_t len, struct agd_rating *out,
			       struct agd_rating_error *err);
int agd_ratings_parse_full(const char *body, size_t len, enum agd_rating_format format,
			   struct agd_rating_batch *batch);

#endif
