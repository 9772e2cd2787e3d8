// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The buckets: libagentgate's GCRA operations (userspace/lib/bucket.c:
 * configure, consume, drain, fill, reset, tokens) and the datapath's charge
 * (bpf/agentgate.bpf.c, replayed here with include/agentgate/gcra.h) on one
 * bucket in plain memory, on a simulated clock (ag_now_ns is wrapped at
 * link time), driven by a fuzzed sequence of steps and compared with a
 * reference model written from the contract in DESIGN.md, not from the code:
 *
 *   a bucket of rate R and burst B holds tokens in [0, B]; time adds R per
 *   second up to B; a request of n tokens passes iff n are there and takes
 *   them; drain takes up to what is there; fill sets the level (capped at
 *   B); reset fills to exactly B; a new limit keeps the level (capped at the
 *   new B) and a first limit starts full.
 *
 * Checked after every step (tolerance: a tick of the bucket's time base, the
 * 10^-6 rate error the contract allows, double rounding):
 *   - the level is in [0, B], and never falls while only time passes;
 *   - the level and every decision follow the model;
 *   - over any window since tokens were last added by an operator (fill,
 *     reset, new limit), admitted <= level at the start + R * elapsed: no
 *     more than B + R*t over any t, exactly, with the asked rate R;
 *   - a refused request is admitted after its retry_after_ns, and the wait
 *     is no longer than the missing tokens take to refill;
 *   - no overflow: tat stays below the selector bit and within now + tau,
 *     for up to 10 years of uptime; the parameter sets respect their bounds.
 *
 * Input: 8 bytes of start time, then steps of one opcode byte and its
 * arguments (see the OP_ list).
 */
#include <math.h>
#include <stdatomic.h>

#include "agentgate.h"
#include "agentgate/gcra.h"
#include "fuzz.h"
#include "internal.h"

#define NS_PER_S 1000000000ULL
#define UPTIME_MAX_NS (AG_UPTIME_MAX_S * NS_PER_S)
#define STEPS_MAX 512

/* ---- the simulated clock (ag_now_ns, wrapped with -Wl,--wrap) ----------- */

static __u64 clock_ns;

__u64 __wrap_ag_now_ns(void);
__u64 __wrap_ag_now_ns(void)
{
	return clock_ns;
}

/* ---- the bucket under test ------------------------------------------- */

static struct ag_ctx *ctx;
static struct ag_bucket *bucket;

/* ---- the reference model ------------------------------------------- */

struct model {
	bool limited;
	double rate, burst; /* asked */
	enum ag_unit unit;
	__u64 interval;     /* ticks per token of the live set: the tolerance unit */
	__u64 mult;
	/* the admission window: since tokens were last added by an operator */
	double w_level;
	__u64 w_start_ns;
	double w_admitted;
};

static struct model m;

/* What the level may be off by after `dt_ns` of model time. */
static double tolerance(__u64 dt_ns)
{
	double tick = m.interval ? 1.0 / (double)m.interval : 0;

	return 3 * tick + m.rate * ((double)dt_ns / 1e9) * 1.3e-6 + m.burst * 1e-12 + 1e-9;
}

static double level(void)
{
	double t = -1;
	int err = ag_bucket_tokens(ctx, 0, &t);

	if (!m.limited) {
		FUZZ_CHECK(err == -ENOENT, "tokens of an unconfigured bucket: %d", err);
		return 0;
	}
	FUZZ_CHECK(err == 0, "tokens: %d %s", err, ag_errmsg());
	FUZZ_CHECK(t >= 0 && t <= m.burst * (1 + 1e-12), "level %.17g outside [0, %.17g]", t,
		   m.burst);
	return t;
}

/* The contract's bound over the window, exact but for double rounding. */
static void check_window(void)
{
	double elapsed = (double)(clock_ns - m.w_start_ns) / 1e9;
	double bound = m.w_level + m.rate * elapsed;

	FUZZ_CHECK(m.w_admitted <= bound * (1 + 1e-12) + 1e-9,
		   "admitted %.17g tokens in %.9f s from a level of %.17g at rate %.17g: bound %.17g",
		   m.w_admitted, elapsed, m.w_level, m.rate, bound);
}

static void window_restart(void)
{
	m.w_level = m.limited ? level() : 0;
	m.w_start_ns = clock_ns;
	m.w_admitted = 0;
}

/* tat within bounds: below the selector bit, at most now + tau ahead. */
static void check_word(void)
{
	__u64 w = atomic_load(ag_tat_word(bucket)), tat = w & AG_TAT_MASK;
	const struct ag_gcra_params *p = &bucket->set[w >> 63];

	if (!p->interval)
		return;
	FUZZ_CHECK(tat < (1ULL << 62) + AG_TAU_MAX, "tat %llu near overflow",
		   (unsigned long long)tat);
	FUZZ_CHECK(tat <= ag_ns_to_ticks(clock_ns, p->mult) + p->tau,
		   "tat %llu beyond now + tau", (unsigned long long)tat);
}

/* ---- steps ------------------------------------------------------------------- */

/* A value spread over many orders of magnitude: mantissa * 10^exp. */
static double spread(struct fuzz_in *in, int exp_lo, int exp_span)
{
	uint8_t e = fuzz_u8(in);
	uint32_t mant = (uint32_t)fuzz_uint(in, 2);

	return (1.0 + mant / 65536.0) * pow(10, exp_lo + e % exp_span);
}

static void check_params(double rate, __u64 burst, enum ag_unit unit,
			 const struct ag_gcra_params *p)
{
	long double hz = (long double)p->mult * NS_PER_S / 4294967296.0L;
	long double eff = hz / p->interval;

	FUZZ_CHECK(p->interval >= 1 && p->mult >= 1, "empty set");
	FUZZ_CHECK(p->tau == burst * p->interval && p->tau <= AG_TAU_MAX, "tau %llu",
		   (unsigned long long)p->tau);
	FUZZ_CHECK(unit != AG_UNIT_BPS || p->interval <= AG_TAU_MAX / AG_FRAME_MAX,
		   "a full frame's cost overflows");
	FUZZ_CHECK(hz <= AG_TICK_HZ_MAX, "tick rate %Lg: ticks overflow in 10 years", hz);
	/* Never above the asked rate; below it by the floor of the tick rate
	 * (1/hz, hz >= 10^6) and the 32.32 multiplier's rounding (2.3e-7):
	 * at most 1.3e-6, far inside the contract's 0.1 %. */
	FUZZ_CHECK(eff <= rate * (1 + 1e-12) && eff >= rate * (1 - 1.3e-6),
		   "effective rate %.17Lg for %.17g", eff, rate);
}

static void op_limit(struct fuzz_in *in)
{
	uint8_t how = fuzz_u8(in);
	double rate, before = m.limited ? level() : 0, after;
	bool was_limited;
	__u64 burst;
	enum ag_unit unit = how & 1 ? AG_UNIT_BPS : AG_UNIT_PPS;
	struct ag_gcra_params p;
	int err;

	if (how & 2) { /* raw: also what the API refuses */
		__u64 bits = fuzz_uint(in, 8);

		memcpy(&rate, &bits, sizeof(rate));
		burst = fuzz_uint(in, 6);
	} else {
		rate = fmin(fmax(spread(in, -3, 14), 0.001), 1e10);
		burst = 1 + (__u64)fmin(spread(in, 0, 13), (double)AG_BURST_MAX - 1);
	}
	err = ag_gcra_params_for(rate, burst, unit, &p);
	if (err) {
		FUZZ_CHECK(err == -EINVAL && ag_errmsg()[0], "refusal %d", err);
		/* Refusable only out of range, or a burst beyond 10^12 s of rate. */
		FUZZ_CHECK(!(rate >= 0.001 && rate <= 1e10 && burst >= 1 && burst <= AG_BURST_MAX &&
			     (double)burst <= rate * 1e12),
			   "rate %.17g burst %llu refused: %s", rate, (unsigned long long)burst,
			   ag_errmsg());
		return;
	}
	check_params(rate, burst, unit, &p);
	err = ag_bucket_configure(ctx, 0, &p, unit);
	FUZZ_CHECK(err == 0, "configure: %d", err);
	was_limited = m.limited;
	m.limited = true;
	m.interval = p.interval;
	m.mult = p.mult;
	m.rate = rate;
	m.burst = (double)burst;
	m.unit = unit;
	after = level();
	if (!was_limited)
		FUZZ_CHECK(after == m.burst, "a first limit starts at %.17g of %.17g", after, m.burst);
	else
		FUZZ_CHECK(fabs(after - fmin(before, m.burst)) <= tolerance(0) + before * 1e-12,
			   "a new limit moved the level from %.17g to %.17g (burst %.17g)", before,
			   after, m.burst);
	window_restart();
}

static void op_advance(struct fuzz_in *in)
{
	uint8_t e = fuzz_u8(in);
	__u64 dt = (__u64)fuzz_uint(in, 4);
	double before, after, expect;

	for (e %= 12; e; e--)
		dt = dt > UINT64_MAX / 10 ? UINT64_MAX : dt * 10;
	if (dt > UPTIME_MAX_NS - clock_ns)
		dt = UPTIME_MAX_NS - clock_ns;
	before = level();
	clock_ns += dt;
	after = level();
	if (!m.limited)
		return;
	expect = fmin(m.burst, before + m.rate * ((double)dt / 1e9));
	FUZZ_CHECK(after >= before, "level fell from %.17g to %.17g as time passed", before,
		   after);
	FUZZ_CHECK(fabs(after - expect) <= tolerance(dt),
		   "after %llu ns at rate %.17g: level %.17g, model %.17g",
		   (unsigned long long)dt, m.rate, after, expect);
}

/* Would the model admit n tokens from level? 1 yes, 0 no, -1 too close. */
static int model_admits(double lvl, double n)
{
	if (lvl >= n + tolerance(0))
		return 1;
	if (lvl < n - tolerance(0))
		return 0;
	return -1;
}

static void probe_retry(__u64 n, __u64 retry_ns, double lvl)
{
	struct ag_bucket saved = *bucket;
	__u64 saved_clock = clock_ns;
	struct ag_consume_result res;
	double need_s = ((double)n - lvl) / (m.rate * (1 - 1.3e-6));
	double tick_ns = 1e9 / ((double)m.mult * 1e9 / 4294967296.0);

	FUZZ_CHECK(retry_ns >= 1, "refused with no wait");
	FUZZ_CHECK((double)retry_ns <= (need_s + tolerance(0) / m.rate) * 1e9 + 2 * tick_ns + 2,
		   "wait %llu ns for %.17g missing tokens at rate %.17g", (unsigned long long)retry_ns,
		   (double)n - lvl, m.rate);
	if (retry_ns > UPTIME_MAX_NS - clock_ns)
		return;
	clock_ns += retry_ns;
	FUZZ_CHECK(ag_bucket_consume(ctx, 0, n, &res) == 0 && res.allowed,
		   "still refused after the %llu ns it said to wait", (unsigned long long)retry_ns);
	*bucket = saved;
	clock_ns = saved_clock;
}

static void op_consume(struct fuzz_in *in)
{
	__u64 n = fuzz_u8(in) & 0x80 ? (__u64)spread(in, 0, 13) : 1 + fuzz_u8(in) % 8;
	struct ag_consume_result res;
	__u64 word = atomic_load(ag_tat_word(bucket));
	double before = level();
	int err = ag_bucket_consume(ctx, 0, n, &res), want;

	if (!m.limited) {
		FUZZ_CHECK(err == -ENOENT, "consume without a limit: %d", err);
		return;
	}
	if ((double)n > m.burst) {
		FUZZ_CHECK(err == -EINVAL, "request of %llu over burst %.17g: %d",
			   (unsigned long long)n, m.burst, err);
		return;
	}
	FUZZ_CHECK(err == 0, "consume: %d %s", err, ag_errmsg());
	want = model_admits(before, (double)n);
	FUZZ_CHECK(want < 0 || want == res.allowed, "%llu tokens from %.17g: allowed %d",
		   (unsigned long long)n, before, res.allowed);
	if (res.allowed) {
		m.w_admitted += (double)n;
		FUZZ_CHECK(fabs(res.remaining - (before - (double)n)) <= tolerance(0),
			   "remaining %.17g after %llu from %.17g", res.remaining,
			   (unsigned long long)n, before);
		FUZZ_CHECK(fabs(level() - res.remaining) <= tolerance(0), "remaining is not the level");
	} else {
		FUZZ_CHECK(atomic_load(ag_tat_word(bucket)) == word, "a refusal changed the bucket");
		FUZZ_CHECK(fabs(res.remaining - before) <= tolerance(0), "remaining after refusal");
		probe_retry(n, res.retry_after_ns, before);
	}
	check_window();
}

/* The datapath's charge for one frame, as bpf/agentgate.bpf.c does it. */
static void op_packet(struct fuzz_in *in)
{
	__u64 len = 1 + fuzz_uint(in, 2) % AG_FRAME_MAX;
	__u64 w = atomic_load(ag_tat_word(bucket)), new_tat;
	unsigned int sel = w >> 63;
	const struct ag_gcra_params *p = &bucket->set[sel];
	double before = level(), tokens;
	__u64 cost;
	int pass;

	if (!p->interval) {
		FUZZ_CHECK(!m.limited, "limited bucket without interval");
		return;
	}
	cost = ag_packet_cost(bucket->unit[sel], p->interval, len, 1);
	tokens = bucket->unit[sel] == AG_UNIT_BPS ? (double)len : 1;
	pass = ag_gcra_admit(w & AG_TAT_MASK, ag_ns_to_ticks(clock_ns, p->mult), cost, p->tau,
			     &new_tat);
	if (pass) {
		FUZZ_CHECK(new_tat < AG_TAT_SEL, "tat overflows into the selector");
		atomic_store(ag_tat_word(bucket), (w & AG_TAT_SEL) | new_tat);
		m.w_admitted += tokens;
	}
	FUZZ_CHECK(model_admits(before, tokens) < 0 || model_admits(before, tokens) == pass,
		   "frame of %.0f tokens from %.17g: pass %d", tokens, before, pass);
	check_window();
}

static void op_drain(struct fuzz_in *in)
{
	__u64 n = (__u64)spread(in, 0, 13);
	double before = level(), remaining = -1;
	int err = ag_bucket_drain(ctx, 0, n, &remaining);

	if (!m.limited) {
		FUZZ_CHECK(err == -ENOENT, "drain without a limit: %d", err);
		return;
	}
	FUZZ_CHECK(err == 0, "drain: %d", err);
	FUZZ_CHECK(fabs(remaining - fmax(0, before - (double)n)) <= tolerance(0),
		   "drain %llu from %.17g left %.17g", (unsigned long long)n, before, remaining);
	FUZZ_CHECK(fabs(level() - remaining) <= tolerance(0), "remaining is not the level");
}

static void op_fill(struct fuzz_in *in)
{
	uint8_t how = fuzz_u8(in);
	double x;
	int err;

	if (how & 1) {
		__u64 bits = fuzz_uint(in, 8);

		memcpy(&x, &bits, sizeof(x));
	} else {
		x = spread(in, -3, 16) - 1e-3;
	}
	err = ag_bucket_fill(ctx, 0, x);
	if (!(x >= 0)) {
		FUZZ_CHECK(err == -EINVAL, "fill %g: %d", x, err);
		return;
	}
	if (!m.limited) {
		FUZZ_CHECK(err == -ENOENT, "fill without a limit: %d", err);
		return;
	}
	FUZZ_CHECK(err == 0, "fill: %d", err);
	FUZZ_CHECK(fabs(level() - fmin(x, m.burst)) <= tolerance(0), "fill %.17g: level %.17g",
		   x, level());
	window_restart();
}

static void op_reset(void)
{
	int err = ag_bucket_reset(ctx, 0);

	if (!m.limited) {
		FUZZ_CHECK(err == -ENOENT, "reset without a limit: %d", err);
		return;
	}
	FUZZ_CHECK(err == 0 && level() == m.burst, "reset: %d, level %.17g of %.17g", err,
		   level(), m.burst);
	window_restart();
}

static void op_disable(void)
{
	FUZZ_CHECK(ag_bucket_disable(ctx, 0) == 0, "disable");
	m.limited = false;
	m.interval = 0;
	level();
}

enum {
	OP_LIMIT,   /* how, then log-spread rate and burst, or raw bits */
	OP_ADVANCE, /* exponent, 4 bytes: up to 4e9 * 10^11 ns */
	OP_CONSUME, /* small or spread n */
	OP_PACKET,  /* 2 bytes: frame length */
	OP_DRAIN,
	OP_FILL,
	OP_RESET,
	OP_DISABLE,
	OP__COUNT
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_keep_stderr();
	ctx = calloc(1, sizeof(*ctx));
	bucket = aligned_alloc(64, sizeof(*bucket));
	if (!ctx || !bucket)
		abort();
	ctx->max_agents = 1;
	ctx->buckets = bucket;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	int steps = 0;

	memset(bucket, 0, sizeof(*bucket));
	memset(&m, 0, sizeof(m));
	clock_ns = fuzz_uint(&in, 8) % (UPTIME_MAX_NS / 2);
	window_restart();
	while (in.n && steps++ < STEPS_MAX) {
		switch (fuzz_u8(&in) % OP__COUNT) {
		case OP_LIMIT: op_limit(&in); break;
		case OP_ADVANCE: op_advance(&in); break;
		case OP_CONSUME: op_consume(&in); break;
		case OP_PACKET: op_packet(&in); break;
		case OP_DRAIN: op_drain(&in); break;
		case OP_FILL: op_fill(&in); break;
		case OP_RESET: op_reset(); break;
		case OP_DISABLE: op_disable(); break;
		}
		check_word();
	}
	return 0;
}
