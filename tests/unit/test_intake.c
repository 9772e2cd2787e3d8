// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Rating intake limits (core/intake.h) on a simulated clock: a user's burst
 * of ten seconds of its rate, then refusals with the wait until it would
 * pass; a request is charged whole or not at all; and with the table of
 * tracked users full of limited ones, new users are refused (never let
 * through uncharged) until full buckets can be forgotten.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/intake.h"

#define S 1000000000ULL /* ns */

static struct agd_rating rating(const char *user)
{
	struct agd_rating r;

	memset(&r, 0, sizeof(r));
	snprintf(r.agent, sizeof(r.agent), "a");
	snprintf(r.user, sizeof(r.user), "%s", user);
	r.score = 3;
	return r;
}

static enum agd_intake_by charge(struct agd_intake *in, const struct agd_rating *r, size_t n,
				 const char *token, uint64_t now, unsigned int *retry)
{
	char who[200];

	return agd_intake_charge(in, r, n, token, now, retry, who, sizeof(who));
}

static void burst_then_refused(void **state)
{
	struct agd_intake *in = agd_intake_new();
	struct agd_rating r = rating("u"), many[12];
	unsigned int retry;
	int i;

	(void)state;
	agd_intake_set(in, 1, 0);
	for (i = 0; i < 10; i++)
		assert_int_equal(charge(in, &r, 1, NULL, 100 * S, &retry), AGD_INTAKE_OK);
	assert_int_equal(charge(in, &r, 1, NULL, 100 * S, &retry), AGD_INTAKE_USER);
	assert_int_equal(retry, 1);
	assert_int_equal(charge(in, &r, 1, NULL, 101 * S, &retry), AGD_INTAKE_OK);
	/* Whole or nothing: 12 of one user (over its burst of 10) never pass,
	 * and charge nothing: 10 of them pass at the same moment. */
	for (i = 0; i < 12; i++)
		many[i] = rating("x");
	assert_int_equal(charge(in, many, 12, NULL, 200 * S, &retry), AGD_INTAKE_USER);
	assert_int_equal(charge(in, many, 10, NULL, 200 * S, &retry), AGD_INTAKE_OK);
	agd_intake_free(in);
}

static void token_limit(void **state)
{
	struct agd_intake *in = agd_intake_new();
	struct agd_rating r[20];
	unsigned int retry;
	int i;

	(void)state;
	agd_intake_set(in, 0, 2);
	for (i = 0; i < 20; i++)
		r[i] = rating("");
	assert_int_equal(charge(in, r, 20, "pipeline", 5 * S, &retry), AGD_INTAKE_OK);
	assert_int_equal(charge(in, r, 1, "pipeline", 5 * S, &retry), AGD_INTAKE_TOKEN);
	assert_int_equal(charge(in, r, 1, "other", 5 * S, &retry), AGD_INTAKE_OK);
	agd_intake_free(in);
}

/* AGD_INTAKE_MAX - 1 users, each limited (its bucket not full again yet):
 * a request of two new users is refused (only one could be tracked), one
 * new user passes and fills the table, then new users are refused; once the
 * buckets are full again (and a second passed since the last scan) they
 * pass. */
static void a_full_table_refuses_new_users(void **state)
{
	struct agd_intake *in = agd_intake_new();
	struct agd_rating r, two[2];
	unsigned int retry;
	char name[32];
	uint64_t refused[3];
	int i;

	(void)state;
	agd_intake_set(in, 0.01, 0); /* burst 1: one rating leaves a bucket 100 s from full */
	for (i = 0; i < AGD_INTAKE_MAX - 1; i++) {
		snprintf(name, sizeof(name), "user-%d", i);
		r = rating(name);
		assert_int_equal(charge(in, &r, 1, NULL, 10 * S, &retry), AGD_INTAKE_OK);
	}
	two[0] = rating("late-1");
	two[1] = rating("late-2");
	assert_int_equal(charge(in, two, 2, NULL, 20 * S, &retry), AGD_INTAKE_USER);
	/* Retry-After: until the first kept bucket is full again (110 s). */
	assert_int_equal(retry, 90);
	r = rating("last");
	assert_int_equal(charge(in, &r, 1, NULL, 20 * S, &retry), AGD_INTAKE_OK);
	r = rating("late");
	assert_int_equal(charge(in, &r, 1, NULL, 21 * S, &retry), AGD_INTAKE_USER);
	assert_int_equal(retry, 89);
	/* A tracked user still passes once its own bucket allows. */
	r = rating("user-7");
	assert_int_equal(charge(in, &r, 1, NULL, 111 * S, &retry), AGD_INTAKE_OK);
	r = rating("late");
	assert_int_equal(charge(in, &r, 1, NULL, 200 * S, &retry), AGD_INTAKE_OK);
	assert_int_equal(charge(in, two, 2, NULL, 200 * S, &retry), AGD_INTAKE_OK);
	agd_intake_stats(in, refused);
	assert_int_equal(refused[AGD_INTAKE_USER], 2);
	agd_intake_free(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(burst_then_refused),
		cmocka_unit_test(token_limit),
		cmocka_unit_test(a_full_table_refuses_new_users),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
