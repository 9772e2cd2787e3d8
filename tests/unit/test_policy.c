// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The rating policy: reward = score - 3, r = clamp(r + alpha * reward). */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "agentgate.h"
#include "core/policy.h"

static struct agd_policy pol(double r0, double alpha, double r_min, double r_max)
{
	struct agd_policy p;

	agd_policy_defaults(&p);
	p.r0 = r0, p.alpha = alpha, p.r_min = r_min, p.r_max = r_max;
	return p;
}

static void reward_is_score_minus_three(void **state)
{
	struct agd_policy p = pol(100, 10, 1, 1000);
	int score;

	for (score = 1; score <= 5; score++)
		assert_true(agd_policy_rate_after(&p, 100, score) == 100 + 10.0 * (score - 3));
	/* Fractional alpha moves in fractional steps. */
	p.alpha = 0.25;
	assert_true(agd_policy_rate_after(&p, 100, 5) == 100.5);
	assert_true(agd_policy_rate_after(&p, 100, 1) == 99.5);
}

static void clamped_at_both_ends(void **state)
{
	struct agd_policy p = pol(50, 30, 20, 100);
	double r = 50;
	int i;

	for (i = 0; i < 10; i++)
		r = agd_policy_rate_after(&p, r, 1); /* -60 per rating */
	assert_true(r == 20);
	for (i = 0; i < 10; i++)
		r = agd_policy_rate_after(&p, r, 5);
	assert_true(r == 100);
	/* A neutral rating changes nothing, also at the bounds. */
	assert_true(agd_policy_rate_after(&p, 100, 3) == 100);
	assert_true(agd_policy_rate_after(&p, 20, 3) == 20);
}

static void a_sequence_is_deterministic(void **state)
{
	/* Same ratings, same order: same rate (hosts of a fleet must agree). */
	static const int scores[] = { 5, 1, 4, 4, 2, 5, 5, 3, 1, 1, 5, 2 };
	struct agd_policy p = pol(100, 7.5, 10, 200);
	double a = p.r0, b = p.r0, want = p.r0;
	size_t i;

	for (i = 0; i < sizeof(scores) / sizeof(scores[0]); i++) {
		a = agd_policy_rate_after(&p, a, scores[i]);
		b = agd_policy_rate_after(&p, b, scores[i]);
		want = fmin(200, fmax(10, want + 7.5 * (scores[i] - 3)));
	}
	assert_true(a == b);
	assert_true(a == want);
}

static void pinned_keeps_the_operator_rate(void **state)
{
	struct agd_policy p = pol(100, 10, 1, 1000);

	p.pinned = true;
	assert_true(agd_policy_rate_after(&p, 333, 5) == 333);
	assert_true(agd_policy_rate_after(&p, 333, 1) == 333);
}

static void burst_in_tokens_or_seconds(void **state)
{
	struct agd_policy p = pol(100, 10, 1, 1000);

	p.burst_kind = AGD_BURST_SECONDS, p.burst = 2;
	assert_int_equal(agd_policy_burst_tokens(&p, 150), 300);
	assert_int_equal(agd_policy_burst_tokens(&p, 0.2), 1); /* at least one token */
	p.burst = 0.5;
	assert_int_equal(agd_policy_burst_tokens(&p, 3), 2); /* rounded up */
	p.burst_kind = AGD_BURST_TOKENS, p.burst = 40;
	assert_int_equal(agd_policy_burst_tokens(&p, 150), 40);
	assert_int_equal(agd_policy_burst_tokens(&p, 5), 40);
	/* bps: never less than one full-size frame. */
	p.unit = AG_UNIT_BPS, p.burst = 64;
	assert_int_equal(agd_policy_burst_tokens(&p, 1000), AG_BPS_MIN_BURST);
	p.burst_kind = AGD_BURST_SECONDS, p.burst = 1;
	assert_int_equal(agd_policy_burst_tokens(&p, 1e6), 1000000);
}

static void merge_takes_only_what_is_set(void **state)
{
	struct agd_policy defaults = pol(100, 10, 1, 1000), own = pol(5, 2, 3, 7), out;

	own.pinned = true, own.unit = AG_UNIT_BPS;
	own.burst_kind = AGD_BURST_TOKENS, own.burst = 9000;
	agd_policy_merge(&defaults, &own, AGD_POL_ALPHA | AGD_POL_R_MAX, &out);
	assert_true(out.alpha == 2 && out.r_max == 7);
	assert_true(out.r0 == 100 && out.r_min == 1 && !out.pinned && out.unit == AG_UNIT_PPS);
	assert_true(out.burst_kind == defaults.burst_kind && out.burst == defaults.burst);
	agd_policy_merge(&defaults, &own, AGD_POL__ALL, &out);
	assert_memory_equal(&out, &own, sizeof(out));
	agd_policy_merge(&defaults, &own, 0, &out);
	assert_memory_equal(&out, &defaults, sizeof(out));
}

static void expect_invalid(const struct agd_policy *p, const char *mentions)
{
	struct agd_err why = { 0 };

	assert_int_equal(agd_policy_check(p, &why), -EINVAL);
	if (!strstr(why.msg, mentions))
		fail_msg("reason '%s' does not mention '%s'", why.msg, mentions);
}

static void invalid_policies_named(void **state)
{
	struct agd_policy p;
	struct agd_err why;

	agd_policy_defaults(&p);
	assert_int_equal(agd_policy_check(&p, &why), 0);
	p = pol(100, 10, 200, 100);
	expect_invalid(&p, "r_min");
	p = pol(5, 10, 10, 100);
	expect_invalid(&p, "outside [r_min, r_max]");
	p = pol(100, -1, 1, 1000);
	expect_invalid(&p, "alpha");
	p = pol(100, NAN, 1, 1000);
	expect_invalid(&p, "alpha");
	p = pol(100, 10, 0, 1000);
	expect_invalid(&p, "r_min");
	p = pol(100, 10, 1, 2e10);
	expect_invalid(&p, "r_max");
	p = pol(100, 10, 1, 1000);
	p.burst_kind = AGD_BURST_TOKENS, p.burst = 1.5;
	expect_invalid(&p, "whole number");
	p.burst = 0;
	expect_invalid(&p, "burst");
	p.burst_kind = AGD_BURST_SECONDS, p.burst = 0;
	expect_invalid(&p, "burst");
	p.burst = 4000;
	expect_invalid(&p, "3600");
	/* A token burst that no rate down to r_min can express. */
	p = pol(100, 10, 0.001, 1000);
	p.burst_kind = AGD_BURST_TOKENS, p.burst = 1ULL << 40;
	expect_invalid(&p, "too large");
	p = pol(100, 10, 1, 1000);
	p.unit = 9;
	expect_invalid(&p, "unit");
}

/* One voice per user: a replacement moves by alpha * (new - old), clamped;
 * from neutral it is the rating's own step; pinned moves nothing. */
static void voice_replacement(void **state)
{
	struct agd_policy p = pol(100, 10, 1, 130);

	assert_true(agd_policy_rate_moved(&p, 100, 3, 1) == agd_policy_rate_after(&p, 100, 1));
	assert_true(agd_policy_rate_moved(&p, 80, 1, 5) == 120);
	assert_true(agd_policy_rate_moved(&p, 120, 5, 5) == 120);
	assert_true(agd_policy_rate_moved(&p, 120, 1, 5) == 130); /* r_max */
	assert_true(agd_policy_rate_moved(&p, 5, 5, 1) == 1);     /* r_min */
	p.pinned = true;
	assert_true(agd_policy_rate_moved(&p, 50, 1, 5) == 50);
}

/* --rating-user-cap: each voice counts at most cap points from neutral;
 * cap 2 is the uncapped move. */
static void voice_capped(void **state)
{
	struct agd_policy p = pol(100, 10, 1, 130);
	int from, to;

	for (from = 1; from <= 5; from++)
		for (to = 1; to <= 5; to++)
			assert_true(agd_policy_rate_voiced(&p, 100, from, to, 2) ==
				    agd_policy_rate_moved(&p, 100, from, to));
	assert_true(agd_policy_rate_voiced(&p, 100, 3, 1, 1) == 90);
	assert_true(agd_policy_rate_voiced(&p, 90, 1, 5, 1) == 110);
	assert_true(agd_policy_rate_voiced(&p, 110, 5, 4, 1) == 110);
	assert_true(agd_policy_rate_voiced(&p, 100, 3, 2, 0.5) == 95);
	assert_true(agd_policy_rate_voiced(&p, 125, 1, 5, 1) == 130); /* r_max */
	p.pinned = true;
	assert_true(agd_policy_rate_voiced(&p, 50, 1, 5, 1) == 50);
	(void)state;
}

static void ttl_parsed_whole(void **state)
{
	static const struct {
		const char *text;
		double want; /* < 0: refused */
	} cases[] = {
		{ "0", 0 }, { "never", 0 }, { "90", 90 }, { "90s", 90 }, { "30m", 1800 },
		{ "24h", 86400 }, { "7d", 604800 }, { "3650d", 315360000 },
		{ "3651d", -1 }, { "315360001", -1 }, { "", -1 }, { "-1", -1 }, { "1.5", -1 },
		{ "1.5s", -1 }, { "10y", -1 }, { "s", -1 }, { "1ss", -1 }, { " 1", -1 },
		{ "1 ", -1 }, { "+1", -1 }, { "Never", -1 },
		{ "99999999999999999999999", -1 }, { "18446744073709551615d", -1 },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct agd_err why = { 0 };
		double ttl = -2;
		int err = agd_ttl_parse(cases[i].text, &ttl, &why);

		if (cases[i].want < 0) {
			if (err != -EINVAL || !strstr(why.msg, "ttl"))
				fail_msg("'%s': %d, '%s'", cases[i].text, err, why.msg);
		} else if (err || ttl != cases[i].want) {
			fail_msg("'%s': %d, %g", cases[i].text, err, ttl);
		}
	}
}

/* Own TTL first; else implicit agents inherit the default, operator-made
 * and pinned agents get none. */
static void ttl_by_kind(void **state)
{
	struct agd_policy d, own, eff;

	agd_policy_defaults(&d);
	d.ttl = 600;
	own = d;
	own.ttl = 60;
	agd_policy_merge(&d, &own, 0, &eff);
	assert_true(agd_policy_ttl(&d, &eff, 0, true) == 600);
	assert_true(agd_policy_ttl(&d, &eff, 0, false) == 0);
	agd_policy_merge(&d, &own, AGD_POL_TTL, &eff);
	assert_true(agd_policy_ttl(&d, &eff, AGD_POL_TTL, false) == 60);
	own.pinned = true;
	agd_policy_merge(&d, &own, AGD_POL_PINNED, &eff);
	assert_true(agd_policy_ttl(&d, &eff, AGD_POL_PINNED, true) == 0);
	agd_policy_merge(&d, &own, AGD_POL_PINNED | AGD_POL_TTL, &eff);
	assert_true(agd_policy_ttl(&d, &eff, AGD_POL_PINNED | AGD_POL_TTL, true) == 60);
	own = d;
	own.ttl = 1.5;
	expect_invalid(&own, "ttl");
	own.ttl = 315360001;
	expect_invalid(&own, "ttl");
}

static void statistics(void **state)
{
	struct agd_rating_stats s = { .last_ms = -1 };

	assert_true(agd_stats_mean(&s) == 0);
	agd_stats_add(&s, 5, 1000);
	agd_stats_add(&s, 2, 3000);
	agd_stats_add(&s, 4, 2000); /* late arrival: last stays the latest */
	assert_int_equal(s.count, 3);
	assert_true(fabs(agd_stats_mean(&s) - 11.0 / 3) < 1e-12);
	assert_int_equal(s.last_ms, 3000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(reward_is_score_minus_three),
		cmocka_unit_test(clamped_at_both_ends),
		cmocka_unit_test(a_sequence_is_deterministic),
		cmocka_unit_test(pinned_keeps_the_operator_rate),
		cmocka_unit_test(burst_in_tokens_or_seconds),
		cmocka_unit_test(merge_takes_only_what_is_set),
		cmocka_unit_test(invalid_policies_named),
		cmocka_unit_test(statistics),
		cmocka_unit_test(ttl_parsed_whole),
		cmocka_unit_test(voice_replacement),
		cmocka_unit_test(voice_capped),
		cmocka_unit_test(ttl_by_kind),
	};

	return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
