// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentgate.h"
#include "policy.h"

void agd_policy_defaults(struct agd_policy *p)
{
	*p = (struct agd_policy){
		.r0 = 100,
		.alpha = 10,
		.r_min = 1,
		.r_max = 10000,
		.burst = 1,
		.burst_kind = AGD_BURST_SECONDS,
		.unit = AG_UNIT_PPS,
		.pinned = false,
		.ttl = 86400,
	};
}

int agd_policy_check(const struct agd_policy *p, struct agd_err *err)
{
	const double lo = AG_RATE_MIN_MTPS / 1000.0, hi = AG_RATE_MAX_MTPS / 1000.0;

	if (!(p->r_min >= lo && p->r_min <= hi))
		return agd_errf(err, -EINVAL,
			"r_min %g out of range (0.001 to 1e10 tokens/s)", p->r_min);
	if (!(p->r_max >= lo && p->r_max <= hi))
		return agd_errf(err, -EINVAL,
			"r_max %g out of range (0.001 to 1e10 tokens/s)", p->r_max);
	if (p->r_min > p->r_max)
		return agd_errf(err, -EINVAL, "r_min %g is above r_max", p->r_min);
	if (!(p->r0 >= p->r_min && p->r0 <= p->r_max))
		return agd_errf(err, -EINVAL, "rate %g is outside [r_min, r_max]", p->r0);
	if (!(p->alpha >= 0 && p->alpha <= hi))
		return agd_errf(err, -EINVAL, "alpha %g out of range (0 to 1e10)", p->alpha);
	if (p->burst_kind != AGD_BURST_TOKENS && p->burst_kind != AGD_BURST_SECONDS)
		return agd_errf(err, -EINVAL, "burst kind %u unknown", p->burst_kind);
	if (p->burst_kind == AGD_BURST_TOKENS && !(p->burst >= 1 && p->burst <= AG_BURST_MAX &&
						  p->burst == floor(p->burst)))
		return agd_errf(err, -EINVAL,
			"burst %g must be a whole number of tokens, 1 to 2^40",
			   p->burst);
	if (p->burst_kind == AGD_BURST_SECONDS && !(p->burst > 0 && p->burst <= 3600))
		return agd_errf(err, -EINVAL,
			"burst %g s out of range (above 0, up to 3600 s)", p->burst);
	if (!(p->ttl >= 0 && p->ttl <= AGD_TTL_MAX && p->ttl == floor(p->ttl)))
		return agd_errf(err, -EINVAL,
			"ttl %g out of range (whole seconds, 0 for never, up to 3650 days)", p->ttl);
	if (ag_unit_check(p->unit))
		return agd_errf(err, -EINVAL, "unit %u unknown (pps, bps or conn)", p->unit);
	/* Ratings may take the rate down to r_min: the burst must fit there too. */
	if (p->burst_kind == AGD_BURST_TOKENS &&
	    ag_limit_check(p->r_min, (uint64_t)p->burst, p->unit))
		return agd_errf(err, -EINVAL,
			"burst %g tokens is too large for a rate as low as r_min",
			   p->burst);
	return 0;
}

void agd_policy_merge(const struct agd_policy *defaults, const struct agd_policy *own,
		     unsigned int set, struct agd_policy *out)
{
	*out = *defaults;
	if (set & AGD_POL_R0)
		out->r0 = own->r0;
	if (set & AGD_POL_ALPHA)
		out->alpha = own->alpha;
	if (set & AGD_POL_R_MIN)
		out->r_min = own->r_min;
	if (set & AGD_POL_R_MAX)
		out->r_max = own->r_max;
	if (set & AGD_POL_BURST) {
		out->burst = own->burst;
		out->burst_kind = own->burst_kind;
	}
	if (set & AGD_POL_UNIT)
		out->unit = own->unit;
	if (set & AGD_POL_PINNED)
		out->pinned = own->pinned;
	if (set & AGD_POL_TTL)
		out->ttl = own->ttl;
}

double agd_policy_ttl(const struct agd_policy *defaults, const struct agd_policy *eff,
		      unsigned int set, bool implicit)
{
	if (set & AGD_POL_TTL)
		return eff->ttl;
	return implicit && !eff->pinned ? defaults->ttl : 0;
}

double agd_policy_rate_after(const struct agd_policy *p, double rate, int score)
{
	return agd_policy_rate_moved(p, rate, AGD_SCORE_NEUTRAL, score);
}

double agd_policy_rate_moved(const struct agd_policy *p, double rate, int from, int to)
{
	return agd_policy_rate_voiced(p, rate, from, to, AGD_USER_CAP_MAX);
}

static double weight(int score, double cap)
{
	double w = (double)(score - AGD_SCORE_NEUTRAL);

	return w < -cap ? -cap : w > cap ? cap : w;
}

double agd_policy_rate_voiced(const struct agd_policy *p, double rate, int from, int to,
			      double cap)
{
	double next;

	if (p->pinned)
		return rate;
	next = rate + p->alpha * (weight(to, cap) - weight(from, cap));
	if (next < p->r_min)
		next = p->r_min;
	if (next > p->r_max)
		next = p->r_max;
	return next;
}

uint64_t agd_policy_burst_tokens(const struct agd_policy *p, double rate)
{
	double tokens = p->burst_kind == AGD_BURST_SECONDS ? ceil(rate * p->burst) : p->burst;
	uint64_t floor_tokens = p->unit == AG_UNIT_BPS ? AG_BPS_MIN_BURST : 1;

	if (!(tokens >= (double)floor_tokens))
		return floor_tokens;
	return tokens > (double)AG_BURST_MAX ? AG_BURST_MAX : (uint64_t)tokens;
}

void agd_stats_add(struct agd_rating_stats *s, int score, int64_t ts_ms)
{
	s->count++;
	s->score_sum += score;
	if (ts_ms > s->last_ms)
		s->last_ms = ts_ms;
}

double agd_stats_mean(const struct agd_rating_stats *s)
{
	return s->count ? s->score_sum / (double)s->count : 0;
}

int agd_ttl_parse(const char *text, double *ttl, struct agd_err *err)
{
	unsigned long long n;
	double mult = 1;
	char *end;

	if (!strcmp(text, "never")) {
		*ttl = 0;
		return 0;
	}
	errno = 0;
	n = text[0] >= '0' && text[0] <= '9' ? strtoull(text, &end, 10) : 0;
	if (text[0] < '0' || text[0] > '9' || errno)
		goto bad;
	if (*end == 's' || *end == 'm' || *end == 'h' || *end == 'd') {
		mult = *end == 's' ? 1 : *end == 'm' ? 60 : *end == 'h' ? 3600 : 86400;
		end++;
	}
	if (*end || (double)n * mult > AGD_TTL_MAX)
		goto bad;
	*ttl = (double)n * mult;
	return 0;
bad:
	return agd_errf(err, -EINVAL,
		"ttl '%.40s': expected whole seconds, or a whole number of s, m, h or d "
		"(0 or never: no expiry; at most 3650d)", text);
}

int agd_ttl_seconds(double seconds, double *ttl, struct agd_err *err)
{
	if (!(seconds >= 0 && seconds <= AGD_TTL_MAX && seconds == floor(seconds)))
		return agd_errf(err, -EINVAL,
			"ttl %g: expected whole seconds from 0 (no expiry) to 315360000 (3650 days)",
			seconds);
	*ttl = seconds;
	return 0;
}
