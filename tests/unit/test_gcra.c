// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Rate math: the parameter sets ag_gcra_params_for() builds and the shared
 * GCRA arithmetic (include/agentgate/gcra.h) that the datapath runs.
 * Simulated time, no kernel: a saturating sender takes every token as soon
 * as it exists, and over t it must receive burst + rate*t tokens to within
 * 0.1 %, never more, for 1 to 1e10 tokens/s, also after 10 years of uptime.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "agentgate.h"
#include "agentgate/gcra.h"

#define NS_PER_S 1000000000ULL
#define TEN_YEARS_NS (10ULL * 365 * 86400 * NS_PER_S)

static const double rates[] = { 1,	   2,	  3,	 7,	 10,	 33.3,	 100,	999.5,
				1e3,	   4321,  1e4,	 12345.678, 1e5, 333333, 1e6, 3.3e6,
				1e7,	   2.5e7, 1e8,	 1.5e8,	 1e9, 3e9,	 7e9, 9.99e9,
				1e10 };
static const __u64 bursts[] = { 1, 10, 1000, 1000000 };
#define N_RATES (sizeof(rates) / sizeof(rates[0]))
#define N_BURSTS (sizeof(bursts) / sizeof(bursts[0]))

/* Most samples one saturating run may take (keeps the suite fast). */
#define MAX_STEPS 200000

static int combos_checked, combos_unreachable;

static __u64 ticks_to_ns_ceil(__u64 ticks, __u64 mult)
{
	return (__u64)((((unsigned __int128)ticks << 32) + mult - 1) / mult);
}

struct run {
	__u64 tokens;  /* collected */
	__u64 last_ns; /* time of the last sample, from t0 */
};

/*
 * A saturating sender from a full bucket at t0 until t0 + duration_ns: at
 * each sample it takes every whole token (checking that n passes and n + 1
 * does not), then samples again when the next token completes, but no
 * sooner than min_step_ns.
 */
static struct run saturate(const struct ag_gcra_params *p, __u64 t0, __u64 duration_ns,
			   __u64 min_step_ns)
{
	__u64 tat = ag_ns_to_ticks(t0, p->mult), t = t0;
	struct run r = {};

	while (t <= t0 + duration_ns) {
		__u64 now = ag_ns_to_ticks(t, p->mult);
		__u64 n = ag_gcra_headroom(tat, now, p->tau) / p->interval;
		__u64 new_tat, wait_ns;

		assert_int_equal(ag_gcra_admit(tat, now, (n + 1) * p->interval, p->tau, &new_tat), 0);
		if (n) {
			assert_int_equal(ag_gcra_admit(tat, now, n * p->interval, p->tau, &new_tat), 1);
			assert_true(new_tat < AG_TAT_SEL); /* never reaches the selector bit */
			tat = new_tat;
			r.tokens += n;
		}
		r.last_ns = t - t0;
		wait_ns = ticks_to_ns_ceil(ag_gcra_wait(tat, now, p->interval, p->tau), p->mult);
		t += wait_ns > min_step_ns ? wait_ns : min_step_ns;
	}
	return r;
}

/*
 * Over the sampled span the sender must get burst + rate*span tokens: never
 * more, less by under 0.1 % plus the one token an exact boundary instant may
 * still be waiting for. The minimum step keeps the bucket from overflowing
 * between samples ((burst - 1) tokens of refill at most). When the burst
 * cannot absorb even 1 ns of refill, a sender can only take each token at the
 * next whole nanosecond after it completes, losing up to 1 ns per token; at
 * rates where that exceeds 0.01 % of a token interval no sender on the
 * datapath's nanosecond clock can saturate the bucket: counted, not checked.
 */
static void check_rate(double rate, __u64 burst, enum ag_unit unit, __u64 t0)
{
	const double durations_s[] = { 1, 10, 3600 };
	struct ag_gcra_params p;
	size_t d;

	assert_int_equal(ag_gcra_params_for(rate, burst, unit, &p), 0);
	for (d = 0; d < sizeof(durations_s) / sizeof(durations_s[0]); d++) {
		double min_step = floor((double)(burst - 1) / rate * 1e9);
		double per_sample = fmax(min_step, 1e9 / rate);
		double duration = durations_s[d] * 1e9, ideal;
		struct run r;

		if (min_step < 1 && rate * 1e-9 > 1e-4) {
			combos_unreachable++;
			continue;
		}
		if (min_step < 1)
			min_step = 1;
		if (duration / per_sample > MAX_STEPS)
			duration = per_sample * MAX_STEPS; /* shorter run, same sampling */
		r = saturate(&p, t0, (__u64)duration, (__u64)min_step);
		ideal = (double)burst + rate * (double)r.last_ns / NS_PER_S;
		combos_checked++;
		if ((double)r.tokens > ideal * (1 + 1e-12) ||
		    (double)r.tokens < ideal * (1 - 1e-3) - 1)
			fail_msg("rate %g burst %llu unit %d over %.9fs at t0=%llus: admitted %llu, "
				 "ideal %.3f, error %.6f%%",
				 rate, (unsigned long long)burst, unit, r.last_ns / 1e9,
				 (unsigned long long)(t0 / NS_PER_S), (unsigned long long)r.tokens,
				 ideal, fabs((double)r.tokens - ideal) / ideal * 100);
	}
}

static void all_rates(__u64 t0, enum ag_unit unit)
{
	size_t r, b;

	for (r = 0; r < N_RATES; r++)
		for (b = 0; b < N_BURSTS; b++)
			check_rate(rates[r], bursts[b], unit, t0);
}

static void rates_pps_at_boot(void **state)
{
	all_rates(5 * NS_PER_S, AG_UNIT_PPS);
}

static void rates_bps_at_boot(void **state)
{
	all_rates(5 * NS_PER_S, AG_UNIT_BPS);
}

static void rates_after_ten_years(void **state)
{
	all_rates(TEN_YEARS_NS, AG_UNIT_PPS);
	all_rates(TEN_YEARS_NS, AG_UNIT_BPS);
	/* Every rate had reachable combinations; report the coverage. */
	print_message("# rate combinations checked: %d, unreachable at 1 ns sampling: %d\n",
		      combos_checked, combos_unreachable);
	assert_true(combos_checked > 3 * (int)N_RATES * 2);
}

/* The effective refill rate of a parameter set, analytically: never above
 * the asked rate, and within 1e-6 of it. */
static void effective_rate_exact(void **state)
{
	size_t r, b;

	for (r = 0; r < N_RATES; r++)
		for (b = 0; b < N_BURSTS; b++) {
			struct ag_gcra_params p;
			long double hz, eff;

			assert_int_equal(ag_gcra_params_for(rates[r], bursts[b], AG_UNIT_PPS, &p), 0);
			hz = (long double)p.mult * NS_PER_S / 4294967296.0L;
			eff = hz / p.interval;
			assert_true(eff <= rates[r] * (1 + 1e-12));
			assert_true(fabsl(eff - rates[r]) / rates[r] < 1e-6);
			assert_int_equal(p.tau, bursts[b] * p.interval);
		}
}

/* No sum in the datapath can overflow within 10 years: ticks stay below
 * 2^62 and tau and the largest frame's cost below 2^61. */
static void no_overflow_ten_years(void **state)
{
	const __u64 t_end = (__u64)AG_UPTIME_MAX_S * NS_PER_S;
	size_t r;

	for (r = 0; r < N_RATES; r++) {
		const __u64 max_bursts[] = { 1, AG_BURST_MAX / 1024, AG_BURST_MAX };
		size_t b;

		for (b = 0; b < 3; b++) {
			struct ag_gcra_params p;
			__u64 now;

			if (ag_gcra_params_for(rates[r], max_bursts[b], AG_UNIT_BPS, &p))
				continue; /* refused combinations are checked elsewhere */
			now = ag_ns_to_ticks(t_end, p.mult);
			assert_true(now < (1ULL << 62));
			assert_true(p.tau <= AG_TAU_MAX);
			assert_true(ag_packet_cost(AG_UNIT_BPS, p.interval, AG_FRAME_MAX, 0) <= AG_TAU_MAX);
			assert_true(now + p.tau + AG_FRAME_MAX * p.interval < AG_TAT_SEL);
		}
	}
}

/* ag_ns_to_ticks is floor(ns * mult / 2^32) exactly, and monotonic. */
static void ticks_conversion_exact(void **state)
{
	__u64 seed = 88172645463325252ULL;
	int i;

	for (i = 0; i < 200000; i++) {
		__u64 ns, mult;
		unsigned __int128 ref;

		seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
		ns = seed % ((__u64)AG_UPTIME_MAX_S * NS_PER_S);
		mult = (seed >> 20) % ((AG_TICK_HZ_MAX << 32) / NS_PER_S + 1);
		ref = ((unsigned __int128)ns * mult) >> 32;
		assert_true(ag_ns_to_ticks(ns, mult) == (__u64)ref);
		assert_true(ag_ns_to_ticks(ns + 1, mult) >= ag_ns_to_ticks(ns, mult));
	}
}

/* After idle exactly `burst` one-token requests pass at the same instant. */
static void idle_bucket_holds_exactly_burst(void **state)
{
	size_t r, b;

	for (r = 0; r < N_RATES; r++)
		for (b = 0; b < N_BURSTS - 1; b++) {
			struct ag_gcra_params p;
			__u64 now, tat, n;

			assert_int_equal(ag_gcra_params_for(rates[r], bursts[b], AG_UNIT_PPS, &p), 0);
			now = ag_ns_to_ticks(TEN_YEARS_NS, p.mult);
			tat = now - 12345; /* idle: any tat in the past */
			for (n = 0; ag_gcra_admit(tat, now, p.interval, p.tau, &tat); n++)
				;
			assert_int_equal(n, bursts[b]);
		}
}

static void wait_time_matches_rate(void **state)
{
	struct ag_gcra_params p;
	__u64 now, tat, wait;

	/* 1000 tokens/s, burst 1: after one token, the next is 1 ms away. */
	assert_int_equal(ag_gcra_params_for(1000, 1, AG_UNIT_PPS, &p), 0);
	now = ag_ns_to_ticks(NS_PER_S, p.mult);
	assert_int_equal(ag_gcra_admit(now, now, p.interval, p.tau, &tat), 1);
	wait = ag_gcra_wait(tat, now, p.interval, p.tau);
	assert_true(fabs((double)wait * 4294967296.0 / p.mult - 1e6) < 2.0);
}

static void expect_einval(double rate, __u64 burst, enum ag_unit unit)
{
	struct ag_gcra_params p;

	assert_int_equal(ag_gcra_params_for(rate, burst, unit, &p), -EINVAL);
	assert_true(ag_errmsg()[0] != '\0');
}

static void invalid_limits_refused(void **state)
{
	expect_einval(0, 10, AG_UNIT_PPS);
	expect_einval(-1, 10, AG_UNIT_PPS);
	expect_einval(NAN, 10, AG_UNIT_PPS);
	expect_einval(INFINITY, 10, AG_UNIT_PPS);
	expect_einval(1.0001e10, 10, AG_UNIT_PPS);
	expect_einval(0.0001, 10, AG_UNIT_PPS);
	expect_einval(100, 0, AG_UNIT_PPS);
	expect_einval(100, AG_BURST_MAX + 1, AG_UNIT_PPS);
	expect_einval(100, 10, 7);
	/* A burst the tick range cannot express at this rate. */
	expect_einval(0.001, AG_BURST_MAX, AG_UNIT_PPS);
	assert_non_null(strstr(ag_errmsg(), "too large"));
	/* The extremes that are allowed. */
	assert_int_equal(ag_limit_check(0.001, 1, AG_UNIT_PPS), 0);
	assert_int_equal(ag_limit_check(1e10, AG_BURST_MAX, AG_UNIT_BPS), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(effective_rate_exact),
		cmocka_unit_test(rates_pps_at_boot),
		cmocka_unit_test(rates_bps_at_boot),
		cmocka_unit_test(rates_after_ten_years),
		cmocka_unit_test(no_overflow_ten_years),
		cmocka_unit_test(ticks_conversion_exact),
		cmocka_unit_test(idle_bucket_holds_exactly_burst),
		cmocka_unit_test(wait_time_matches_rate),
		cmocka_unit_test(invalid_limits_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
