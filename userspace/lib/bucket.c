// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Buckets from userspace: the same GCRA arithmetic as the datapath
 * (include/agentgate/gcra.h), applied to the mmap of ag_buckets with C11
 * atomics. Token operations (consume, drain, reset, fill) are lock-free CAS
 * loops on the tat word, like the XDP program's. Parameter changes are made
 * by one writer at a time (the caller holds ag_lock) with the two-set
 * protocol described in abi.h.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <bpf/bpf.h>

#include "agentgate/gcra.h"
#include "internal.h"

#define NS_PER_S 1000000000ULL
/* Smallest tick rate we accept: keeps the 32.32 multiplier's rounding error
 * below 1e-7 of the rate. */
#define AG_TICK_HZ_MIN 1000000ULL

int ag_rate_check(double rate)
{
	if (!(rate >= AG_RATE_MIN_MTPS / 1000.0 && rate <= AG_RATE_MAX_MTPS / 1000.0))
		return ag_err(EINVAL, "rate %g out of range (%g to %g tokens/s)", rate,
			      AG_RATE_MIN_MTPS / 1000.0, AG_RATE_MAX_MTPS / 1000.0);
	return 0;
}

int ag_burst_check(__u64 burst)
{
	if (burst < 1 || burst > AG_BURST_MAX)
		return ag_err(EINVAL, "burst %llu out of range (1 to %llu tokens)",
			      (unsigned long long)burst, (unsigned long long)AG_BURST_MAX);
	return 0;
}

static const char *const unit_names[AG_UNIT__COUNT] = {
	[AG_UNIT_PPS] = "pps",
	[AG_UNIT_BPS] = "bps",
	[AG_UNIT_CONN] = "conn",
};

int ag_unit_check(enum ag_unit unit)
{
	if ((unsigned int)unit >= AG_UNIT__COUNT)
		return ag_err(EINVAL, "unit must be pps, bps or conn");
	return 0;
}

const char *ag_unit_name(enum ag_unit unit)
{
	return (unsigned int)unit < AG_UNIT__COUNT ? unit_names[unit] : "unknown";
}

int ag_unit_parse(const char *text, enum ag_unit *unit)
{
	unsigned int i;

	for (i = 0; text && i < AG_UNIT__COUNT; i++)
		if (!strcmp(text, unit_names[i])) {
			*unit = (enum ag_unit)i;
			return 0;
		}
	return ag_err(EINVAL, "invalid unit '%s' (pps, bps or conn)", text ? text : "");
}

int ag_gcra_params_for(double rate, __u64 burst, enum ag_unit unit,
		       struct ag_gcra_params *out)
{
	__u64 interval, hz;
	int err;

	err = ag_rate_check(rate);
	if (!err)
		err = ag_burst_check(burst);
	if (!err)
		err = ag_unit_check(unit);
	if (err)
		return err;

	/* The largest exact integer interval: tick rate as high as the
	 * 10-year range allows, tau = burst * interval and one maximal frame's
	 * cost within AG_TAU_MAX. */
	interval = (__u64)((double)AG_TICK_HZ_MAX / rate);
	if (interval > AG_TAU_MAX / burst)
		interval = AG_TAU_MAX / burst;
	if (unit == AG_UNIT_BPS && interval > AG_TAU_MAX / AG_FRAME_MAX)
		interval = AG_TAU_MAX / AG_FRAME_MAX;
	/* Floors throughout: the bucket never refills faster than asked. */
	hz = interval ? (__u64)floorl((long double)rate * interval) : 0;
	if (hz < AG_TICK_HZ_MIN)
		return ag_err(EINVAL, "burst %llu is too large for rate %g (at most %.0f)",
			      (unsigned long long)burst, rate,
			      floor((double)AG_TAU_MAX * rate / AG_TICK_HZ_MIN));
	out->interval = interval;
	out->mult = (__u64)(((unsigned __int128)hz << 32) / NS_PER_S);
	out->tau = burst * interval;
	return 0;
}

int ag_limit_check(double rate, __u64 burst, enum ag_unit unit)
{
	struct ag_gcra_params p;

	return ag_gcra_params_for(rate, burst, unit, &p);
}

/* The mapped bucket, or NULL when out of range or not mapped (read-only). */
static struct ag_bucket *bucket_at(struct ag_ctx *ctx, __u32 slot)
{
	return slot < ctx->max_agents && ctx->buckets ? &ctx->buckets[slot] : NULL;
}

/* A consistent view: the tat word and the parameter set it selects. */
struct view {
	__u64 word;
	__u64 tat;
	__u64 now;
	struct ag_gcra_params p;
};

static int load_view(struct ag_ctx *ctx, __u32 slot, __u64 now_ns, struct view *v)
{
	struct ag_bucket *b = bucket_at(ctx, slot), copy;

	if (slot >= ctx->max_agents)
		return ag_err(ERANGE, "slot %u out of range (%u slots)", slot, ctx->max_agents);
	if (b) {
		v->word = atomic_load_explicit(ag_tat_word(b), memory_order_acquire);
		v->p = b->set[v->word >> 63];
	} else { /* read-only open without a mapping */
		if (bpf_map_lookup_elem(ctx->fds[AG_M_BUCKETS], &slot, &copy))
			return ag_err(errno, "cannot read bucket %u: %s", slot, strerror(errno));
		v->word = copy.tat;
		v->p = copy.set[v->word >> 63];
	}
	if (!v->p.interval)
		return ag_err(ENOENT, "slot %u has no bucket configured", slot);
	v->tat = v->word & AG_TAT_MASK;
	v->now = ag_ns_to_ticks(now_ns, v->p.mult);
	return 0;
}

int ag_bucket_words(struct ag_ctx *ctx, __u64 *out)
{
	__u32 i;

	if (!ctx->buckets)
		return ag_err(ENODEV, "the buckets are not mapped");
	for (i = 0; i < ctx->max_agents; i++)
		out[i] = atomic_load_explicit(ag_tat_word(&ctx->buckets[i]), memory_order_relaxed);
	return 0;
}

static bool store_tat(struct ag_ctx *ctx, __u32 slot, __u64 expected_word, __u64 new_tat)
{
	__u64 desired = (expected_word & AG_TAT_SEL) | new_tat;

	return atomic_compare_exchange_strong_explicit(ag_tat_word(&ctx->buckets[slot]),
						       &expected_word, desired,
						       memory_order_acq_rel,
						       memory_order_acquire);
}

/* Whole tokens exactly, then the fraction: ticks / interval in doubles
 * rounds once ticks pass 2^53, and a full bucket read above its burst. */
static double ticks_to_tokens(__u64 ticks, __u64 interval)
{
	return (double)(ticks / interval) + (double)(ticks % interval) / (double)interval;
}

static __u64 ticks_to_ns_ceil(__u64 ticks, __u64 mult)
{
	unsigned __int128 ns = (((unsigned __int128)ticks << 32) + mult - 1) / mult;

	return ns > UINT64_MAX ? UINT64_MAX : (__u64)ns; /* centuries: saturate */
}

int ag_bucket_tokens(struct ag_ctx *ctx, __u32 slot, double *tokens)
{
	struct view v;
	int err = load_view(ctx, slot, ag_now_ns(), &v);

	if (err)
		return err;
	*tokens = ticks_to_tokens(ag_gcra_headroom(v.tat, v.now, v.p.tau), v.p.interval);
	return 0;
}

/* Set the level to `tokens` (capped at burst). */
int ag_bucket_fill(struct ag_ctx *ctx, __u32 slot, double tokens)
{
	struct view v;
	int err;

	err = ag_require_writable(ctx);
	if (err)
		return err;
	if (!(tokens >= 0))
		return ag_err(EINVAL, "token level must be >= 0");
	do {
		__u64 headroom;

		err = load_view(ctx, slot, ag_now_ns(), &v);
		if (err)
			return err;
		headroom = tokens * v.p.interval >= (double)v.p.tau ?
				   v.p.tau :
				   (__u64)(tokens * (double)v.p.interval);
		if (store_tat(ctx, slot, v.word, v.now + v.p.tau - headroom))
			return 0;
	} while (1);
}

int ag_bucket_reset(struct ag_ctx *ctx, __u32 slot)
{
	return ag_bucket_fill(ctx, slot, INFINITY);
}

int ag_bucket_drain(struct ag_ctx *ctx, __u32 slot, __u64 tokens, double *remaining)
{
	struct view v;
	int err;

	err = ag_require_writable(ctx);
	if (err)
		return err;
	do {
		__u64 burst, base, new_tat;

		err = load_view(ctx, slot, ag_now_ns(), &v);
		if (err)
			return err;
		/* Down to empty, never below: a penalty costs at most a full refill. */
		burst = v.p.tau / v.p.interval;
		base = v.tat > v.now ? v.tat : v.now;
		new_tat = base + (tokens < burst ? tokens : burst) * v.p.interval;
		if (new_tat > v.now + v.p.tau)
			new_tat = v.now + v.p.tau;
		if (store_tat(ctx, slot, v.word, new_tat)) {
			if (remaining)
				*remaining = ticks_to_tokens(
					ag_gcra_headroom(new_tat, v.now, v.p.tau), v.p.interval);
			return 0;
		}
	} while (1);
}

/* One bucket: the flat case, and what paths extend. */
static int consume_one(struct ag_ctx *ctx, __u32 slot, __u64 tokens,
		       struct ag_consume_result *res)
{
	struct view v;
	int err;

	do {
		__u64 cost, new_tat;

		err = load_view(ctx, slot, ag_now_ns(), &v);
		if (err)
			return err;
		if (tokens > v.p.tau / v.p.interval)
			return ag_err(EINVAL, "request of %llu tokens exceeds the burst of %llu",
				      (unsigned long long)tokens,
				      (unsigned long long)(v.p.tau / v.p.interval));
		cost = tokens * v.p.interval;
		if (!ag_gcra_admit(v.tat, v.now, cost, v.p.tau, &new_tat)) {
			/* Decided on a view that moved on (parameters switched while we
			 * read them): decide again rather than refuse on torn values. */
			if ((atomic_load_explicit(ag_tat_word(&ctx->buckets[slot]),
						  memory_order_acquire) ^ v.word) & AG_TAT_SEL)
				continue;
			res->allowed = false;
			res->remaining = ticks_to_tokens(ag_gcra_headroom(v.tat, v.now, v.p.tau),
							 v.p.interval);
			res->retry_after_ns = ticks_to_ns_ceil(
				ag_gcra_wait(v.tat, v.now, cost, v.p.tau), v.p.mult);
			return 0;
		}
		if (store_tat(ctx, slot, v.word, new_tat)) {
			res->allowed = true;
			res->remaining = ticks_to_tokens(ag_gcra_headroom(new_tat, v.now, v.p.tau),
							 v.p.interval);
			return 0;
		}
	} while (1);
}


/*
 * Consume along a path (abi.h, "Parent buckets", "Long-window quotas"), as
 * the datapath judges a packet: every rate and quota on the path is looked
 * at first, on one reading of each clock, so that a refusal anywhere writes
 * nothing; then each admits by compare-and-swap, the agent's first, and one
 * that refuses then (another consumer or CPU took what the first look saw)
 * has the admissions before it taken back: a quota's exactly, a rate's
 * unless its word has moved since (then the admission stays: never more
 * than the bound).
 */
struct step {
	struct view v;
	__u64 cost;
	__u64 prev, word; /* the swap: what it replaced, what it wrote; word 0: none */
	bool none;        /* a parent without a limit (being deleted): passes */
	struct ag_quota_step q;
};

static void take_back(struct ag_ctx *ctx, const __u32 *slots, struct step *st, int n)
{
	int i;

	for (i = n - 1; i >= 0; i--) {
		__u64 expect = st[i].word;

		ag_quota_give_back(ctx, slots[i], &st[i].q);
		if (expect)
			atomic_compare_exchange_strong_explicit(
				ag_tat_word(&ctx->buckets[slots[i]]), &expect, st[i].prev,
				memory_order_acq_rel, memory_order_acquire);
		st[i].word = 0;
	}
}

static void path_result(const struct step *st, int n, bool allowed, __u64 tokens,
			struct ag_consume_result *res)
{
	int i;

	memset(res, 0, sizeof(*res));
	res->allowed = allowed;
	res->remaining = INFINITY;
	for (i = 0; i < n; i++) {
		const struct view *v = &st[i].v;
		__u64 tat = allowed && st[i].word ? st[i].word & AG_TAT_MASK : v->tat;
		double left;
		__u64 wait;

		if (st[i].none)
			continue;
		left = ticks_to_tokens(ag_gcra_headroom(tat, v->now, v->p.tau), v->p.interval);
		if (left < res->remaining)
			res->remaining = left;
		if (st[i].q.on) {
			ag_quota_state(&st[i].q, &left, &wait);
			if (left < res->remaining)
				res->remaining = left;
			if (!allowed && left < (double)tokens && wait > res->retry_after_ns)
				res->retry_after_ns = wait; /* the window's end */
		}
		if (allowed)
			continue;
		wait = ticks_to_ns_ceil(ag_gcra_wait(v->tat, v->now, tokens * v->p.interval,
						     v->p.tau),
					v->p.mult);
		if (wait > res->retry_after_ns)
			res->retry_after_ns = wait;
	}
}

/* Look at bucket i of the path: 1 admits, 0 refuses, negative: error. */
static int path_look(struct ag_ctx *ctx, __u32 slot, int i, __u64 tokens, __u64 now_ns,
		     __u64 tai_ns, struct step *st)
{
	__u64 new_tat;
	int err = load_view(ctx, slot, now_ns, &st->v);

	st->word = 0;
	st->none = false;
	memset(&st->q, 0, sizeof(st->q));
	if (err == -ENOENT && i > 0) { /* a parent mid-delete limits nothing */
		st->none = true;
		return 1;
	}
	if (err)
		return err;
	if (tokens > st->v.p.tau / st->v.p.interval)
		return ag_err(EINVAL, "request of %llu tokens exceeds the burst of %llu%s",
			      (unsigned long long)tokens,
			      (unsigned long long)(st->v.p.tau / st->v.p.interval),
			      i ? " of a parent above" : "");
	st->cost = tokens * st->v.p.interval;
	return ag_gcra_admit(st->v.tat, st->v.now, st->cost, st->v.p.tau, &new_tat) &&
	       ag_quota_look(ctx, slot, tokens, tai_ns, &st->q);
}

/* Round two for bucket i: its rate, then its quota. 1 taken, 0 refused. */
static int path_take(struct ag_ctx *ctx, __u32 slot, __u64 tokens, __u64 now_ns,
		     struct step *st)
{
	__u64 new_tat;

	while (!st->none) {
		if (!ag_gcra_admit(st->v.tat, st->v.now, st->cost, st->v.p.tau, &new_tat))
			return 0;
		if (store_tat(ctx, slot, st->v.word, new_tat)) {
			st->prev = st->v.word;
			st->word = (st->v.word & AG_TAT_SEL) | new_tat;
			return ag_quota_take(ctx, slot, &st->q);
		}
		/* Moved meanwhile: the same clock, the word afresh. */
		if (load_view(ctx, slot, now_ns, &st->v) ||
		    tokens > st->v.p.tau / st->v.p.interval)
			return 0;
		st->cost = tokens * st->v.p.interval;
	}
	return 1;
}

static int consume_path(struct ag_ctx *ctx, const __u32 *slots, int n, __u64 tokens,
			struct ag_consume_result *res)
{
	struct step st[AG_PATH_MAX];
	int i, ok;

again:
	{
		__u64 now_ns = ag_now_ns(), tai_ns = ag_tai_ns();

		for (i = 0; i < n; i++) {
			ok = path_look(ctx, slots[i], i, tokens, now_ns, tai_ns, &st[i]);
			if (ok < 0)
				return ok;
			if (ok)
				continue;
			/* Judged on parameters being replaced? Judge again. */
			if ((atomic_load_explicit(ag_tat_word(&ctx->buckets[slots[i]]),
						  memory_order_acquire) ^ st[i].v.word) & AG_TAT_SEL)
				goto again;
			path_result(st, i + 1, false, tokens, res); /* those looked at */
			return 0;
		}
		for (i = 0; i < n; i++) {
			if (path_take(ctx, slots[i], tokens, now_ns, &st[i]))
				continue;
			take_back(ctx, slots, st, i + 1);
			path_result(st, n, false, tokens, res);
			return 0;
		}
	}
	path_result(st, n, true, tokens, res);
	return 0;
}

static bool has_quota(struct ag_ctx *ctx, __u32 slot)
{
	return ctx->budgets && slot < ctx->max_agents &&
	       atomic_load_explicit(ag_atomic_word(&ctx->budgets[slot].quota_conf),
				    memory_order_acquire);
}

int ag_bucket_consume(struct ag_ctx *ctx, __u32 slot, __u64 tokens,
		      struct ag_consume_result *res)
{
	__u32 slots[AG_PATH_MAX];
	int n, err;

	err = ag_require_writable(ctx);
	if (!err)
		err = ag_bucket_path(ctx, slot, slots, &n);
	if (err)
		return err;
	memset(res, 0, sizeof(*res));
	return n == 1 && !has_quota(ctx, slot) ? consume_one(ctx, slot, tokens, res) :
						 consume_path(ctx, slots, n, tokens, res);
}

/*
 * Charge a cost known afterwards: `tokens` taken from every bucket on the
 * path whatever is left, so that a bucket may go into debt, at most
 * max_debt_ns of its refill below empty (the rest of the cost is
 * forgiven). While in debt its packets and consumers are refused until
 * refill has paid it back: the datapath needs no new rule for it.
 */
static int charge_one(struct ag_ctx *ctx, __u32 slot, __u64 tokens, __u64 max_debt_ns,
		      struct step *st, bool parent)
{
	int err;

	for (;;) {
		unsigned __int128 want;
		__u64 base, limit, new_tat;

		memset(&st->q, 0, sizeof(st->q));
		err = load_view(ctx, slot, ag_now_ns(), &st->v);
		st->none = err == -ENOENT && parent;
		st->word = 0;
		if (st->none)
			return 0;
		if (err)
			return err;
		base = st->v.tat > st->v.now ? st->v.tat : st->v.now;
		limit = st->v.now + st->v.p.tau + ag_ns_to_ticks(max_debt_ns, st->v.p.mult);
		if (limit > AG_TAT_MASK)
			limit = AG_TAT_MASK;
		want = (unsigned __int128)base + (unsigned __int128)tokens * st->v.p.interval;
		new_tat = want > limit ? limit : (__u64)want;
		if (new_tat <= st->v.tat) /* in as much debt as allowed already */
			break;
		if (store_tat(ctx, slot, st->v.word, new_tat)) {
			st->word = (st->v.word & AG_TAT_SEL) | new_tat;
			break;
		}
	}
	ag_quota_add(ctx, slot, tokens, ag_tai_ns(), &st->q); /* counted, whatever the limit */
	return 0;
}

int ag_bucket_charge(struct ag_ctx *ctx, __u32 slot, __u64 tokens, __u64 max_debt_ns,
		     struct ag_consume_result *res)
{
	__u32 slots[AG_PATH_MAX];
	struct step st[AG_PATH_MAX];
	int i, n, err;

	err = ag_require_writable(ctx);
	if (!err)
		err = ag_bucket_path(ctx, slot, slots, &n);
	for (i = 0; !err && i < n; i++)
		err = charge_one(ctx, slots[i], tokens, max_debt_ns, &st[i], i > 0);
	if (err)
		return err;
	memset(res, 0, sizeof(*res));
	res->allowed = true;
	res->remaining = INFINITY;
	for (i = 0; i < n; i++) {
		const struct view *v = &st[i].v;
		__u64 tat = st[i].word ? st[i].word & AG_TAT_MASK : v->tat, wait;
		double left;

		if (st[i].none)
			continue;
		if (st[i].q.on) {
			__u64 reset;

			ag_quota_state(&st[i].q, &left, &reset);
			if (left < res->remaining)
				res->remaining = left;
			if (left < 1 && reset > res->retry_after_ns)
				res->retry_after_ns = reset;
		}
		/* Below empty: a negative level, the debt. */
		left = tat > v->now + v->p.tau ?
			       -ticks_to_tokens(tat - v->now - v->p.tau, v->p.interval) :
			       ticks_to_tokens(v->now + v->p.tau - tat, v->p.interval);
		if (left < res->remaining)
			res->remaining = left;
		wait = ticks_to_ns_ceil(ag_gcra_wait(tat, v->now, v->p.interval, v->p.tau),
					v->p.mult);
		if (wait > res->retry_after_ns)
			res->retry_after_ns = wait;
	}
	return 0;
}

int ag_charge(struct ag_ctx *ctx, const char *agent, __u64 tokens, __u64 max_debt_ns,
	      struct ag_consume_result *res)
{
	__u32 slot;
	int err = ag_agent_slot(ctx, agent, &slot);

	return err ? err : ag_bucket_charge(ctx, slot, tokens, max_debt_ns, res);
}

int ag_consume(struct ag_ctx *ctx, const char *agent, __u64 tokens,
	       struct ag_consume_result *res)
{
	__u32 slot;
	int err = ag_agent_slot(ctx, agent, &slot);

	return err ? err : ag_bucket_consume(ctx, slot, tokens, res);
}

/* Headroom to carry into a new parameter set: the same number of tokens,
 * capped at the new burst; a bucket that had no limit starts full. */
static __u64 carried_headroom(const struct ag_gcra_params *old, __u64 tat, __u64 now_ns,
			      const struct ag_gcra_params *p)
{
	unsigned __int128 h;

	if (!old->interval)
		return p->tau;
	h = ag_gcra_headroom(tat, ag_ns_to_ticks(now_ns, old->mult), old->tau);
	h = h * p->interval / old->interval;
	return h > p->tau ? p->tau : (__u64)h;
}

/* Debt to carry (a charge took the bucket below empty: tat past now + tau),
 * in the new set's ticks: the same number of tokens owed, so that a new
 * rate (a rating moves it) never forgives what a charge left unpaid. */
static __u64 carried_debt(const struct ag_gcra_params *old, __u64 tat, __u64 now_ns,
			  const struct ag_gcra_params *p)
{
	__u64 edge;
	unsigned __int128 d;

	if (!old->interval)
		return 0;
	edge = ag_ns_to_ticks(now_ns, old->mult) + old->tau;
	if (tat <= edge)
		return 0;
	/* Rounded up: a change of rate never forgives part of a tick. */
	d = ((unsigned __int128)(tat - edge) * p->interval + old->interval - 1) / old->interval;
	return d > AG_TAU_MAX ? AG_TAU_MAX : (__u64)d;
}

/* Writer side of the two-set protocol; the caller holds ag_lock. */
int ag_bucket_configure(struct ag_ctx *ctx, __u32 slot, const struct ag_gcra_params *p,
			enum ag_unit unit)
{
	struct ag_bucket *b = bucket_at(ctx, slot);
	__u64 word;
	unsigned int next;

	if (!b)
		return ag_err(ERANGE, "slot %u out of range (%u slots)", slot, ctx->max_agents);
restart:
	word = atomic_load_explicit(ag_tat_word(b), memory_order_acquire);
	next = !(word >> 63);
	b->set[next] = *p;
	b->unit[next] = unit;
	atomic_thread_fence(memory_order_release);
	for (;;) {
		/* Only one writer may switch at a time (ag_lock); should another
		 * have flipped the selector, the set just written is live now. */
		if ((word >> 63) == next)
			goto restart;
		const struct ag_gcra_params *old = &b->set[word >> 63];
		__u64 now_ns = ag_now_ns(), new_tat = 0;

		if (p->interval) {
			__u64 now = ag_ns_to_ticks(now_ns, p->mult);

			new_tat = now + p->tau - carried_headroom(old, word & AG_TAT_MASK, now_ns, p) +
				  carried_debt(old, word & AG_TAT_MASK, now_ns, p);
		}
		if (atomic_compare_exchange_strong_explicit(
			    ag_tat_word(b), &word, ((__u64)next << 63) | new_tat,
			    memory_order_acq_rel, memory_order_acquire))
			return 0;
		/* The datapath moved tat meanwhile (it never flips the selector). */
	}
}

int ag_bucket_disable(struct ag_ctx *ctx, __u32 slot)
{
	struct ag_gcra_params none = {};

	return ag_bucket_configure(ctx, slot, &none, AG_UNIT_PPS);
}
