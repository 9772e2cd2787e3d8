// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Budgets (docs/BUDGETS.md): libagentgate's consume and charge along a path
 * of one to three buckets (an agent and its parents, userspace/lib/bucket.c
 * and budgets.c), each with a rate and maybe a long-window quota, in plain
 * memory on simulated clocks (ag_now_ns and ag_tai_ns are wrapped at link
 * time), driven by a fuzzed sequence of steps and compared with a reference
 * model written from the contract, not from the code:
 *
 *   every bucket of the path holds a level in (-debt, B]; time adds R per
 *   second up to B; a consume of n passes iff every bucket has n and every
 *   quota has n left in the calendar window running now, and then takes n
 *   from each, or else takes nothing anywhere; a charge of n takes n from
 *   each bucket whatever is left, down to at most R * max_debt below empty
 *   (never raising a level), and counts n in each quota past its limit; a
 *   quota's count starts at 0 in each new window; a new limit keeps the
 *   count, a new window length starts afresh.
 *
 * Checked after every step, at every level (tolerance: a tick of the
 * bucket's time base, the rate error the contract allows, double rounding):
 *   - each decision and each level follow the model; a refusal writes
 *     nothing anywhere (tat words and quota words unchanged);
 *   - over any window since an operator last added tokens, what consumes
 *     admitted at each level is <= its level then + R * elapsed, and within
 *     a quota window consumes never pass the limit;
 *   - remaining is the least of every level and quota left; a refusal by a
 *     quota waits at least until its window ends.
 *
 * Input: 8 bytes of start time, a byte for the depth, then steps of one
 * opcode byte and its arguments (the OP_ list).
 */
#include <math.h>
#include <stdatomic.h>

#include "agentgate.h"
#include "agentgate/gcra.h"
#include "fuzz.h"
#include "internal.h"

#define NS_PER_S 1000000000ULL
#define LEVELS 3
#define STEPS_MAX 512
#define CLOCK_MAX_NS (AG_UPTIME_MAX_S * NS_PER_S / 2)

/* ---- the simulated clocks (wrapped with -Wl,--wrap) ---------------------- */

static __u64 clock_ns, tai_ns;

__u64 __wrap_ag_now_ns(void);
__u64 __wrap_ag_now_ns(void)
{
	return clock_ns;
}

__u64 __wrap_ag_tai_ns(void);
__u64 __wrap_ag_tai_ns(void)
{
	return tai_ns;
}

/* ---- the path under test --------------------------------------------------- */

static struct ag_ctx *ctx;
static struct ag_bucket *buckets;
static struct ag_budget *budgets;

/* ---- the reference model ------------------------------------------------------ */

struct level {
	double rate, burst, tokens; /* tokens < 0: in debt */
	__u64 sync_ns; /* when tokens was last set from the library's level */
	double slack;  /* ticks a debt carried through new limits may be off by */
	__u64 interval, mult;
	__u64 q_limit, q_window_ns;
	enum ag_quota_window q_window;
	__u64 q_idx, q_used;        /* the count and the window it is of */
	/* the admission window: since an operator last added tokens */
	double w_level, w_admitted;
	__u64 w_start_ns;
};

static struct level lv[LEVELS];
static int depth;

static double tolerance(const struct level *l, __u64 dt_ns)
{
	double tick = l->interval ? 1.0 / (double)l->interval : 0;

	return 3 * tick + l->rate * ((double)dt_ns / 1e9) * 1.3e-6 + l->burst * 1e-12 + 1e-9;
}

static __u64 q_now_idx(const struct level *l)
{
	return l->q_window_ns ? ag_quota_index(tai_ns, l->q_window_ns) : 0;
}

static __u64 q_used(const struct level *l)
{
	return l->q_limit && l->q_idx == q_now_idx(l) ? l->q_used : 0;
}

/* The level as the library reads it: tokens, never below 0. */
static double level_of(int i)
{
	double t = -1;
	int err = ag_bucket_tokens(ctx, (__u32)i, &t);

	FUZZ_CHECK(err == 0, "tokens of level %d: %d %s", i, err, ag_errmsg());
	FUZZ_CHECK(t >= 0 && t <= lv[i].burst * (1 + 1e-12), "level %d: %.17g outside [0, %.17g]",
		   i, t, lv[i].burst);
	return t;
}

static void check_levels(void)
{
	int i;

	for (i = 0; i < depth; i++) {
		const struct level *l = &lv[i];
		struct ag_quota_status q;
		double t = level_of(i);

		FUZZ_CHECK(fabs(t - fmax(0, l->tokens)) <= tolerance(l, clock_ns - l->sync_ns) +
								    fabs(l->tokens) * 1e-12 + l->slack,
			   "level %d: %.17g, model %.17g", i, t, l->tokens);
		/* Rounding is the library's to keep: follow it where it shows
		 * the level (a debt it shows as 0: the model's alone). */
		if (t > 0 || l->tokens >= 0) {
			lv[i].tokens = t;
			lv[i].sync_ns = clock_ns;
			lv[i].slack = 0;
		}
		FUZZ_CHECK(ag_quota_status(ctx, (__u32)i, &q) == 0, "quota status %d", i);
		FUZZ_CHECK(q.limit == l->q_limit, "level %d: quota limit %llu, model %llu", i,
			   (unsigned long long)q.limit, (unsigned long long)l->q_limit);
		FUZZ_CHECK(!l->q_limit || q.used == q_used(l),
			   "level %d: quota used %llu, model %llu", i, (unsigned long long)q.used,
			   (unsigned long long)q_used(l));
		/* The contract's bounds on what consumes admitted. */
		FUZZ_CHECK(l->w_admitted <= (l->w_level + l->rate * (double)(clock_ns - l->w_start_ns) /
							       1e9) * (1 + 1e-12) + 1e-9,
			   "level %d admitted %.17g from %.17g at rate %.17g in %llu ns", i,
			   l->w_admitted, l->w_level, l->rate,
			   (unsigned long long)(clock_ns - l->w_start_ns));
	}
}

static void window_restart(struct level *l)
{
	l->w_level = fmax(0, l->tokens);
	l->w_start_ns = clock_ns;
	l->w_admitted = 0;
}

/* ---- steps ---------------------------------------------------------------------- */

static double spread(struct fuzz_in *in, int exp_lo, int exp_span)
{
	uint8_t e = fuzz_u8(in);
	uint32_t mant = (uint32_t)fuzz_uint(in, 2);

	return (1.0 + mant / 65536.0) * pow(10, exp_lo + e % exp_span);
}

/* A level's limit, as an operator sets it: the level carried (capped). */
static void op_limit(struct fuzz_in *in, int i, bool first)
{
	struct level *l = &lv[i];
	double rate = fmin(fmax(spread(in, -3, 10), 0.001), 1e6);
	__u64 burst = 1 + (__u64)fmin(spread(in, 0, 7), 1e6);
	struct ag_gcra_params p;
	int err = ag_gcra_params_for(rate, burst, AG_UNIT_PPS, &p);

	if (err) { /* a burst beyond 10^12 s of rate */
		FUZZ_CHECK((double)burst > rate * 1e12, "rate %.17g burst %llu refused", rate,
			   (unsigned long long)burst);
		return;
	}
	FUZZ_CHECK(ag_bucket_configure(ctx, (__u32)i, &p, AG_UNIT_PPS) == 0, "configure %d", i);
	/* A debt is carried in whole ticks of each set (rounded up). */
	if (!first && l->tokens < 0)
		l->slack += 1.0 / (double)l->interval + 1.0 / (double)p.interval;
	l->rate = rate;
	l->burst = (double)burst;
	l->interval = p.interval;
	l->mult = p.mult;
	/* A first limit starts full; a new one keeps the level, capped, and a
	 * debt as it was (a new rate does not forgive it). */
	l->tokens = first ? l->burst : fmin(l->tokens, l->burst);
	/* A debt beyond AG_TAU_MAX ticks of the new set (decades at a tiny
	 * rate) is cut there. */
	l->tokens = fmax(l->tokens, -(double)AG_TAU_MAX / (double)p.interval);
	window_restart(l);
}

static void op_quota(struct fuzz_in *in)
{
	int i = fuzz_u8(in) % depth;
	uint8_t how = fuzz_u8(in);
	struct level *l = &lv[i];
	enum ag_quota_window w = (enum ag_quota_window)(1 + how % 3);
	__u64 limit = how & 0x80 ? 0 : 1 + (__u64)fmin(spread(in, 0, 7), 1e7);

	FUZZ_CHECK(ag_quota_set(ctx, (__u32)i, limit, w) == 0, "quota set");
	if (!limit || (l->q_limit && l->q_window != w) || !l->q_limit) {
		/* Another window length, or none: the count starts afresh. */
		if (!limit || l->q_window != w || !l->q_limit)
			l->q_used = 0;
	}
	l->q_limit = limit;
	l->q_window = limit ? w : AG_QW_NONE;
	l->q_window_ns = limit ? ag_quota_window_ns(w) : 0;
	if (!limit)
		l->q_idx = 0;
}

static void op_advance(struct fuzz_in *in)
{
	uint8_t e = fuzz_u8(in);
	__u64 dt = (__u64)fuzz_uint(in, 3);
	int i;

	for (e %= 9; e; e--)
		dt *= 10;
	if (dt > CLOCK_MAX_NS - clock_ns)
		dt = CLOCK_MAX_NS - clock_ns;
	clock_ns += dt;
	tai_ns += dt;
	for (i = 0; i < depth; i++)
		lv[i].tokens = fmin(lv[i].burst, lv[i].tokens + lv[i].rate * ((double)dt / 1e9));
}

/* The wall clock stepped (NTP, an operator): TAI alone moves, either way. */
static void op_step_tai(struct fuzz_in *in)
{
	__u64 d = (__u64)fuzz_uint(in, 3) * NS_PER_S;

	if (fuzz_u8(in) & 1)
		tai_ns = tai_ns > d ? tai_ns - d : 0;
	else
		tai_ns += d;
}

/* 1 admits, 0 refuses, -1 too close to tell. */
static int model_admits(const struct level *l, double n)
{
	if (l->tokens >= n + tolerance(l, 0))
		return 1;
	if (l->tokens < n - tolerance(l, 0))
		return 0;
	return -1;
}

static void op_consume(struct fuzz_in *in)
{
	__u64 n = fuzz_u8(in) & 0x80 ? (__u64)spread(in, 0, 6) : 1 + fuzz_u8(in) % 8;
	__u64 words[LEVELS], qwords[LEVELS];
	struct ag_consume_result res;
	int i, want = 1, err;

	for (i = 0; i < depth; i++) {
		words[i] = atomic_load(ag_tat_word(&buckets[i]));
		qwords[i] = atomic_load(ag_atomic_word(&budgets[i].quota_used));
	}
	/* The model: the first level that cannot take n decides. */
	for (i = 0; i < depth && want; i++) {
		int a;

		if ((double)n > lv[i].burst) {
			want = -2; /* EINVAL */
			break;
		}
		a = model_admits(&lv[i], (double)n);
		if (a == 0 || (lv[i].q_limit && q_used(&lv[i]) + n > lv[i].q_limit))
			want = 0;
		else if (a < 0)
			want = -1;
	}
	err = ag_bucket_consume(ctx, 0, n, &res);
	if (want == -2) {
		FUZZ_CHECK(err == -EINVAL, "%llu tokens over a burst on the path: %d",
			   (unsigned long long)n, err);
		return;
	}
	FUZZ_CHECK(err == 0, "consume: %d %s", err, ag_errmsg());
	if (want >= 0)
		FUZZ_CHECK(res.allowed == want, "consume %llu: allowed %d, model %d",
			   (unsigned long long)n, res.allowed, want);
	if (!res.allowed) {
		for (i = 0; i < depth; i++) {
			FUZZ_CHECK(atomic_load(ag_tat_word(&buckets[i])) == words[i],
				   "a refusal changed level %d's bucket", i);
			FUZZ_CHECK(atomic_load(ag_atomic_word(&budgets[i].quota_used)) == qwords[i],
				   "a refusal changed level %d's quota", i);
		}
		FUZZ_CHECK(res.retry_after_ns >= 1, "refused with no wait");
		for (i = 0; i < depth; i++)
			if (lv[i].q_limit && q_used(&lv[i]) + n > lv[i].q_limit &&
			    model_admits(&lv[i], (double)n) == 1) {
				/* Refused by this quota alone, if by nothing before it. */
				int k, before = 0;

				for (k = 0; k < i; k++)
					before |= model_admits(&lv[k], (double)n) != 1 ||
						  (lv[k].q_limit &&
						   q_used(&lv[k]) + n > lv[k].q_limit);
				if (!before)
					FUZZ_CHECK(res.retry_after_ns >=
							   ag_quota_reset_in(tai_ns, lv[i].q_window_ns),
						   "quota refusal waits %llu ns, window ends in %llu",
						   (unsigned long long)res.retry_after_ns,
						   (unsigned long long)ag_quota_reset_in(
							   tai_ns, lv[i].q_window_ns));
				break;
			}
		return;
	}
	{
		double least = INFINITY;

		for (i = 0; i < depth; i++) {
			struct level *l = &lv[i];

			l->tokens -= (double)n;
			l->w_admitted += (double)n;
			least = fmin(least, l->tokens);
			if (l->q_limit) {
				__u64 idx = q_now_idx(l);

				struct ag_quota_status q;

				l->q_used = q_used(l) + n;
				l->q_idx = idx;
				least = fmin(least, (double)l->q_limit - (double)l->q_used);
				/* A consume never takes a quota past its limit. */
				FUZZ_CHECK(ag_quota_status(ctx, (__u32)i, &q) == 0 &&
						   q.used <= q.limit,
					   "level %d: a consume left %llu used of %llu", i,
					   (unsigned long long)q.used, (unsigned long long)q.limit);
			}
		}
		FUZZ_CHECK(fabs(res.remaining - least) <= tolerance(&lv[0], 0) + 1e-6 * fabs(least) +
								  3.0 / (double)lv[depth - 1].interval,
			   "remaining %.17g, model %.17g", res.remaining, least);
	}
}

static void op_charge(struct fuzz_in *in)
{
	__u64 n = (__u64)spread(in, 0, 7);
	__u64 debt_ns = (__u64)fuzz_uint(in, 2) * 1000000ULL; /* up to 65 s */
	struct ag_consume_result res;
	int i, err = ag_bucket_charge(ctx, 0, n, debt_ns, &res);

	FUZZ_CHECK(err == 0 && res.allowed, "charge: %d %s", err, ag_errmsg());
	for (i = 0; i < depth; i++) {
		struct level *l = &lv[i];
		double floor_ = -l->rate * ((double)debt_ns / 1e9);

		/* Down by n, to at most the debt allowed, never up. */
		l->tokens = fmax(l->tokens - (double)n, fmin(l->tokens, floor_));
		if (l->q_limit) {
			__u64 used = q_used(l);

			l->q_used = n > AG_QUOTA_USED_MASK - used ? AG_QUOTA_USED_MASK : used + n;
			l->q_idx = q_now_idx(l);
		}
	}
}

static void op_reset(struct fuzz_in *in)
{
	int i = fuzz_u8(in) % depth;

	FUZZ_CHECK(ag_bucket_reset(ctx, (__u32)i) == 0, "reset %d", i);
	lv[i].tokens = lv[i].burst;
	window_restart(&lv[i]);
}

enum {
	OP_ADVANCE,
	OP_CONSUME,
	OP_CHARGE,
	OP_QUOTA,
	OP_LIMIT,
	OP_STEP_TAI,
	OP_RESET,
	OP__COUNT
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_keep_stderr();
	ctx = calloc(1, sizeof(*ctx));
	buckets = aligned_alloc(64, LEVELS * sizeof(*buckets));
	budgets = calloc(LEVELS, sizeof(*budgets));
	if (!ctx || !buckets || !budgets)
		abort();
	ctx->max_agents = LEVELS;
	ctx->buckets = buckets;
	ctx->budgets = budgets;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	int steps = 0, i;

	memset(buckets, 0, LEVELS * sizeof(*buckets));
	memset(budgets, 0, LEVELS * sizeof(*budgets));
	memset(lv, 0, sizeof(lv));
	clock_ns = fuzz_uint(&in, 8) % CLOCK_MAX_NS;
	tai_ns = clock_ns + 1700000000ULL * NS_PER_S;
	depth = 1 + fuzz_u8(&in) % LEVELS;
	for (i = 0; i < depth; i++) {
		op_limit(&in, i, true);
		if (!lv[i].interval)
			return 0; /* the input's limit was refused: nothing to judge */
		if (i)
			budgets[i - 1].up = (__u64)i + 1; /* slot i is the parent of i - 1 */
	}
	while (in.n && steps++ < STEPS_MAX) {
		int op = fuzz_u8(&in) % OP__COUNT;

		if (getenv("FUZZ_TRACE")) { /* to follow a failing input step by step */
			fprintf(stderr, "op %d t=%llu:", op, (unsigned long long)clock_ns);
			for (i = 0; i < depth; i++)
				fprintf(stderr, " [r %.6g b %.0f l %.9g q %llu/%llu]", lv[i].rate,
					lv[i].burst, lv[i].tokens, (unsigned long long)q_used(&lv[i]),
					(unsigned long long)lv[i].q_limit);
			fprintf(stderr, "\n");
		}
		switch (op) {
		case OP_ADVANCE: op_advance(&in); break;
		case OP_CONSUME: op_consume(&in); break;
		case OP_CHARGE: op_charge(&in); break;
		case OP_QUOTA: op_quota(&in); break;
		case OP_LIMIT: op_limit(&in, fuzz_u8(&in) % depth, false); break;
		case OP_STEP_TAI: op_step_tai(&in); break;
		case OP_RESET: op_reset(&in); break;
		}
		check_levels();
	}
	return 0;
}
