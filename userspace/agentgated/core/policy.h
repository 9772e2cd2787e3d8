/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The rating policy: how ratings move an agent's refill rate.
 *   reward = score - 3
 *   r_t    = clamp(r_{t-1} + alpha * reward, r_min, r_max)
 * Each parameter is set per agent or inherited from the global defaults.
 * A pinned agent keeps its operator rate; its ratings still count in its
 * statistics. Pure functions: the daemon owns persistence and the maps.
 */
#ifndef AGENTGATED_POLICY_H
#define AGENTGATED_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agentgate/abi.h"

#define AG_SCORE_MIN 1
#define AG_SCORE_MAX 5
#define AG_SCORE_NEUTRAL 3

enum ag_burst_kind {
	AG_BURST_TOKENS = 0,  /* burst is a number of tokens */
	AG_BURST_SECONDS = 1, /* burst is seconds of the current rate */
};

/* Which policy fields an agent sets itself (the rest come from defaults). */
enum ag_policy_fields {
	AG_POL_R0 = 1u << 0,
	AG_POL_ALPHA = 1u << 1,
	AG_POL_R_MIN = 1u << 2,
	AG_POL_R_MAX = 1u << 3,
	AG_POL_BURST = 1u << 4,
	AG_POL_UNIT = 1u << 5,
	AG_POL_PINNED = 1u << 6,
	AG_POL__ALL = (1u << 7) - 1,
};

struct ag_policy {
	double r0;    /* rate of a new agent, tokens/s */
	double alpha; /* tokens/s per point of reward */
	double r_min, r_max;
	double burst; /* tokens, or seconds of rate (burst_kind) */
	enum ag_burst_kind burst_kind;
	enum ag_unit unit;
	bool pinned;
};

/* What the daemon remembers of an agent besides its policy. */
struct ag_rating_stats {
	uint64_t count;
	double score_sum;
	int64_t last_ms; /* time of the last rating, ms since the epoch; -1: none */
};

/* Built-in global defaults (documented in etc/agentgated.conf). */
void ag_policy_defaults(struct ag_policy *p);

/* 0, or -EINVAL with the offending field and why in buf. */
int ag_policy_check(const struct ag_policy *p, char *buf, size_t len);

/* The effective policy: fields in `set` from `own`, the rest from `defaults`. */
void ag_policy_merge(const struct ag_policy *defaults, const struct ag_policy *own,
		     unsigned int set, struct ag_policy *out);

/* The rate after one rating; a pinned policy leaves it unchanged. */
double ag_policy_rate_after(const struct ag_policy *p, double rate, int score);

/* The burst in tokens for a rate: at least one token, and for bps at least
 * one full-size frame. */
uint64_t ag_policy_burst_tokens(const struct ag_policy *p, double rate);

/* Fold one rating into the statistics. */
void ag_stats_add(struct ag_rating_stats *s, int score, int64_t ts_ms);
double ag_stats_mean(const struct ag_rating_stats *s); /* 0 when none */

#endif
