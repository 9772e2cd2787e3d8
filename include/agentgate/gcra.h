/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * GCRA (generic cell rate algorithm, virtual-scheduling form) arithmetic
 * shared by the XDP program and userspace. Pure functions on integers: the
 * callers own the atomics (BPF cmpxchg in the datapath, C11 atomics on the
 * mmap in userspace).
 *
 * With burst B and emission interval T (ticks per token), tau = B*T. A request
 * of n tokens costs c = n*T and is admitted iff max(tat, now) + c <= now + tau;
 * then tat := max(tat, now) + c. After idle exactly B tokens are available,
 * and over any interval t at most B + t/T tokens are admitted.
 */
#ifndef AGENTGATE_GCRA_H
#define AGENTGATE_GCRA_H

#include "abi.h"

#ifndef AG_INLINE
#define AG_INLINE static inline __attribute__((always_inline))
#endif

/* floor(now_ns * mult / 2^32) without a 128-bit type (BPF has none). */
AG_INLINE __u64 ag_ns_to_ticks(__u64 now_ns, __u64 mult)
{
	__u64 hi = now_ns >> 32, lo = now_ns & 0xffffffffULL;
	__u64 mult_hi = mult >> 32, mult_lo = mult & 0xffffffffULL;

	return hi * mult + lo * mult_hi + ((lo * mult_lo) >> 32);
}

/* Cost in ticks of one packet of frame_len bytes; `opening`: whether it
 * opens a connection (read only for AG_UNIT_CONN, which charges nothing
 * for the other packets). */
AG_INLINE __u64 ag_packet_cost(__u32 unit, __u64 interval, __u64 frame_len, int opening)
{
	if (unit == AG_UNIT_BPS)
		return frame_len * interval;
	if (unit == AG_UNIT_CONN)
		return opening ? interval : 0;
	return interval;
}

/* Returns 1 and the new tat when admitted, 0 (tat unchanged) when not. */
AG_INLINE int ag_gcra_admit(__u64 tat, __u64 now, __u64 cost, __u64 tau, __u64 *new_tat)
{
	__u64 base = tat > now ? tat : now;

	if (base + cost > now + tau)
		return 0;
	*new_tat = base + cost;
	return 1;
}

/* Ticks until a request of `cost` would be admitted (0 if it is now). */
AG_INLINE __u64 ag_gcra_wait(__u64 tat, __u64 now, __u64 cost, __u64 tau)
{
	__u64 base = tat > now ? tat : now;

	return base + cost > now + tau ? base + cost - now - tau : 0;
}

/* Unused capacity in ticks (tokens available = headroom / interval). */
AG_INLINE __u64 ag_gcra_headroom(__u64 tat, __u64 now, __u64 tau)
{
	__u64 debt = tat > now ? tat - now : 0;

	return debt >= tau ? 0 : tau - debt;
}

/* ---- long-window quotas (abi.h, struct ag_budget) ---------------------- */

/* A window's length in ns, 0 for none. */
AG_INLINE __u64 ag_quota_window_ns(__u32 window)
{
	return window == AG_QW_HOUR ? 3600ULL * 1000000000ULL :
	       window == AG_QW_DAY  ? 86400ULL * 1000000000ULL :
	       window == AG_QW_30D  ? 30ULL * 86400ULL * 1000000000ULL :
				      0;
}

/* The index (mod 2^20) of the window holding tai_ns. The lengths are
 * constants here, so that each division is a multiplication (a division by
 * a variable costs the datapath ~10 ns). */
AG_INLINE __u64 ag_quota_index(__u64 tai_ns, __u64 window_ns)
{
	__u64 k = window_ns == 3600ULL * 1000000000ULL	    ? tai_ns / (3600ULL * 1000000000ULL) :
		  window_ns == 86400ULL * 1000000000ULL	    ? tai_ns / (86400ULL * 1000000000ULL) :
		  window_ns == 30ULL * 86400ULL * 1000000000ULL ?
							      tai_ns / (30ULL * 86400ULL * 1000000000ULL) :
							      tai_ns / window_ns;

	return k & AG_QUOTA_IDX_MASK;
}

/* Tokens used in window idx, as the word tells (another window's: none). */
AG_INLINE __u64 ag_quota_used(__u64 word, __u64 idx)
{
	return (word >> AG_QUOTA_USED_BITS) == idx ? word & AG_QUOTA_USED_MASK : 0;
}

/* Returns 1 and the new word when `tokens` more fit in window idx under
 * limit, 0 when not. */
AG_INLINE int ag_quota_admit(__u64 word, __u64 idx, __u64 tokens, __u64 limit, __u64 *new_word)
{
	__u64 used = ag_quota_used(word, idx);

	if (tokens > limit || used > limit - tokens)
		return 0;
	*new_word = (idx << AG_QUOTA_USED_BITS) | (used + tokens);
	return 1;
}

/* ns from tai_ns until the window holding it ends (the quota's reset). */
AG_INLINE __u64 ag_quota_reset_in(__u64 tai_ns, __u64 window_ns)
{
	return window_ns - tai_ns % window_ns;
}

#endif /* AGENTGATE_GCRA_H */
