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

#include "err.h"

#define AGD_SCORE_MIN 1
#define AGD_SCORE_MAX 5
#define AGD_SCORE_NEUTRAL 3

enum agd_burst_kind {
	AGD_BURST_TOKENS = 0,  /* burst is a number of tokens */
	AGD_BURST_SECONDS = 1, /* burst is seconds of the current rate */
};

/* Which policy fields an agent sets itself (the rest come from defaults). */
enum agd_policy_fields {
	AGD_POL_R0 = 1u << 0,
	AGD_POL_ALPHA = 1u << 1,
	AGD_POL_R_MIN = 1u << 2,
	AGD_POL_R_MAX = 1u << 3,
	AGD_POL_BURST = 1u << 4,
	AGD_POL_UNIT = 1u << 5,
	AGD_POL_PINNED = 1u << 6,
	AGD_POL_TTL = 1u << 7,
	AGD_POL__ALL = (1u << 8) - 1,
};

/* The longest idle TTL, in seconds (a stored TTL is a __u32). */
#define AGD_TTL_MAX 315360000.0 /* 3650 days */

struct agd_policy {
	double r0;    /* rate of a new agent, tokens/s */
	double alpha; /* tokens/s per point of reward */
	double r_min, r_max;
	double burst; /* tokens, or seconds of rate (burst_kind) */
	enum agd_burst_kind burst_kind;
	enum ag_unit unit;
	bool pinned;
	/* Idle TTL, seconds, whole; 0: never expires. In the global defaults:
	 * --agent-ttl, which only agents created implicitly (a rating that
	 * creates its agent, /bucket) inherit; see agd_policy_ttl. */
	double ttl;
};

/* What the daemon remembers of an agent besides its policy. */
struct agd_rating_stats {
	uint64_t count;
	double score_sum;
	int64_t last_ms; /* time of the last rating, ms since the epoch; -1: none */
};

/* Built-in global defaults (documented in etc/agentgated.conf). */
void agd_policy_defaults(struct agd_policy *p);

/* 0, or -EINVAL with the offending field and why in buf. */
int agd_policy_check(const struct agd_policy *p, struct agd_err *err);

/* The effective policy: fields in `set` from `own`, the rest from `defaults`. */
void agd_policy_merge(const struct agd_policy *defaults, const struct agd_policy *own,
		     unsigned int set, struct agd_policy *out);

/* The idle TTL an agent has (seconds, 0: never): its own when it sets one;
 * else none when pinned or created by an operator (PUT, the CLI); else the
 * global default (defaults->ttl). eff: its effective policy. */
double agd_policy_ttl(const struct agd_policy *defaults, const struct agd_policy *eff,
		      unsigned int set, bool implicit);

/* An idle TTL as written by people: "0" or "never", whole seconds, or a
 * whole number with s, m, h or d ("90s", "30m", "24h", "7d"). 0 and
 * *ttl in seconds, or -EINVAL with why in err. */
int agd_ttl_parse(const char *text, double *ttl, struct agd_err *err);
/* A TTL given as a number of seconds: whole, 0 to AGD_TTL_MAX. */
int agd_ttl_seconds(double seconds, double *ttl, struct agd_err *err);

/* An agent's own influence limits, fields of struct agd_influence_rec
 * (store.h); the rest follow the daemon's options. */
enum agd_influence_fields {
	AGD_INF_MAX_CHANGE = 1u << 0,
	AGD_INF_WINDOW = 1u << 1,
	AGD_INF_WAVE_USERS = 1u << 2,
	AGD_INF_WAVE_HOLD = 1u << 3,
	AGD_INF_USER_CAP = 1u << 4,
	AGD_INF__ALL = (1u << 5) - 1,
};

/* How far one voice can move an agent, in score points from neutral
 * (--rating-user-cap): 0 to AGD_USER_CAP_MAX, the whole scale. */
#define AGD_USER_CAP_MAX 2.0

/* The rate after one rating; a pinned policy leaves it unchanged. */
double agd_policy_rate_after(const struct agd_policy *p, double rate, int score);
/* A voice's rating replacing its earlier one (from: that score, or
 * AGD_SCORE_NEUTRAL for a first rating):
 *   clamp(rate + alpha * (to - from), r_min, r_max)
 * so that however often one voice rates, it moves the rate as far as its
 * latest score says. Pinned: unchanged. */
double agd_policy_rate_moved(const struct agd_policy *p, double rate, int from, int to);
/* The same with each voice's weight capped at cap score points from
 * neutral (0 to AGD_USER_CAP_MAX):
 *   clamp(rate + alpha * (w(to) - w(from)), r_min, r_max),
 *   w(s) = clamp(s - 3, -cap, cap)
 * so one user moves the rate at most alpha * cap from where the other
 * voices hold it. cap = 2 is agd_policy_rate_moved. */
double agd_policy_rate_voiced(const struct agd_policy *p, double rate, int from, int to,
			      double cap);

/* The burst in tokens for a rate: at least one token, and for bps at least
 * one full-size frame. */
uint64_t agd_policy_burst_tokens(const struct agd_policy *p, double rate);

/* Fold one rating into the statistics. */
void agd_stats_add(struct agd_rating_stats *s, int score, int64_t ts_ms);
double agd_stats_mean(const struct agd_rating_stats *s); /* 0 when none */

#endif
