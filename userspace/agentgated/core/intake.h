/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Rating intake limits: ratings per second per user (the ratings' "user")
 * and per API token (its "sub"), each a token bucket (GCRA) of burst =
 * rate * 10 (at least 1), shared by every way ratings come in (the engine
 * holds one: agd_engine_intake). A request whose ratings would take any of
 * its users or its token over is refused whole and charges nothing: 429
 * and Retry-After over HTTP, the line dead-lettered on a stream. At most AGD_INTAKE_MAX users and tokens
 * are tracked: full buckets are forgotten first (a forgotten user starts
 * with a full bucket, as a new one does).
 */
#ifndef AGENTGATED_INTAKE_H
#define AGENTGATED_INTAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rating.h"

#define AGD_INTAKE_MAX 100000

struct agd_intake;

struct agd_intake *agd_intake_new(void);
void agd_intake_free(struct agd_intake *in);
/* New limits (ratings/s; 0: none), kept buckets included. */
void agd_intake_set(struct agd_intake *in, double per_user, double per_token);

enum agd_intake_by { AGD_INTAKE_OK = 0, AGD_INTAKE_USER, AGD_INTAKE_TOKEN };

/* Charges items' users and token (its subject; "" for every token without
 * one, which share a bucket; NULL: no token) at now_ns, all or
 * nothing: AGD_INTAKE_OK, or who is over with *retry_s (whole seconds, at
 * least 1) until the request would pass and *who naming them. */
enum agd_intake_by agd_intake_charge(struct agd_intake *in, const struct agd_rating *items,
				     size_t n, const char *token_subject, uint64_t now_ns,
				     unsigned int *retry_s, char *who, size_t who_len);
/* Requests refused, by enum agd_intake_by (index 0 unused). */
void agd_intake_stats(struct agd_intake *in, uint64_t refused[3]);

#endif
