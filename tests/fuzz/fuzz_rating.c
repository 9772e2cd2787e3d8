// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Ratings as the daemon receives them (userspace/agentgated/core/rating.c) and the
 * policy they drive (policy.c).
 *
 * Input: one selector byte, then
 *   'J' (or any byte below 0x80 not listed): a request body parsed as JSON
 *   'N': a body parsed as NDJSON
 *   'L': one NDJSON line as the ingest streams parse it
 *   'T': an idle TTL as people write it (agd_ttl_parse: API strings, the CLI)
 *   >= 0x80: a policy (five doubles as raw bits, kind, unit, pinned) and a
 *            run of scores applied to it
 * Checks: the plain-shape parser and the full one (jansson) agree on
 * every input, byte for byte on what they accept and word for word on
 * what they refuse; an accepted batch holds only valid ratings, a refused one holds
 * none and names at least one error; NDJSON of one line and a lone line
 * agree; an object and the same object in an array agree; a policy that
 * passes agd_policy_check keeps every rate in [r_min, r_max], moves
 * monotonically with the score, and yields a burst and a limit the buckets
 * accept; an accepted TTL is whole seconds within AGD_TTL_MAX, a refused
 * one names ttl.
 */
#include <math.h>

#include "agentgate.h"
#include "fuzz.h"
#include "core/policy.h"
#include "core/rating.h"

static bool printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

static bool terminated(const char *s, size_t size)
{
	return memchr(s, 0, size) != NULL;
}

static void check_item(const struct agd_rating *r)
{
	FUZZ_CHECK(terminated(r->agent, sizeof(r->agent)) && ag_name_check(r->agent) == 0,
		   "accepted agent name");
	FUZZ_CHECK(strcmp(r->agent, "_other") != 0, "reserved name accepted");
	FUZZ_CHECK(r->score >= AGD_SCORE_MIN && r->score <= AGD_SCORE_MAX, "score %d", r->score);
	FUZZ_CHECK(r->ts_ms == -1 || (r->ts_ms >= 0 && r->ts_ms <= AGD_RATING_TS_MAX), "ts %lld",
		   (long long)r->ts_ms);
	FUZZ_CHECK(terminated(r->id, sizeof(r->id)) && printable(r->id), "id");
	FUZZ_CHECK(terminated(r->user, sizeof(r->user)) && printable(r->user), "user");
}

static void check_batch(int err, const struct agd_rating_batch *b)
{
	size_t i;

	FUZZ_CHECK(err == 0 || err == -EINVAL || err == -ENOMEM, "error %d", err);
	if (err == -ENOMEM)
		return;
	if (!err) {
		FUZZ_CHECK(b->n >= 1 && b->n_errors == 0, "n %zu errors %zu", b->n, b->n_errors);
		for (i = 0; i < b->n; i++)
			check_item(&b->items[i]);
		return;
	}
	FUZZ_CHECK(b->n == 0 && b->n_errors >= 1, "refused batch: n %zu errors %zu", b->n,
		   b->n_errors);
	for (i = 0; i < b->n_errors && i < AGD_RATING_ERRORS_MAX; i++) {
		const struct agd_rating_error *e = &b->errors[i];

		FUZZ_CHECK(terminated(e->field, sizeof(e->field)), "field unterminated");
		FUZZ_CHECK(terminated(e->reason, sizeof(e->reason)) && e->reason[0], "reason");
	}
}

static bool same_rating(const struct agd_rating *a, const struct agd_rating *b)
{
	return !strcmp(a->id, b->id) && !strcmp(a->agent, b->agent) && !strcmp(a->user, b->user) &&
	       a->score == b->score && a->ts_ms == b->ts_ms;
}

/* One line without a newline: NDJSON of it and the stream parser agree. */
static void line_agrees(const char *body, size_t len, int err, const struct agd_rating_batch *b)
{
	struct agd_rating one;
	struct agd_rating_error e;
	int rc;

	if (memchr(body, '\n', len) || b->n > 1)
		return;
	rc = agd_rating_parse_line(body, len, &one, &e);
	if (!err) {
		FUZZ_CHECK(rc == 0, "NDJSON accepted a line the stream parser refuses: %s",
			   e.reason);
		FUZZ_CHECK(same_rating(&one, &b->items[0]), "line parsed differently");
	} else {
		FUZZ_CHECK(rc != 0, "stream parser accepted a line NDJSON refuses");
	}
}

/* An accepted single object is also accepted as a one-element array. */
static void array_agrees(const char *body, size_t len, const struct agd_rating_batch *b)
{
	struct agd_rating_batch wrapped;
	char *arr;
	int err;

	if (b->n != 1)
		return;
	arr = malloc(len + 3);
	if (!arr)
		return;
	arr[0] = '[';
	memcpy(arr + 1, body, len);
	arr[len + 1] = ']';
	arr[len + 2] = 0;
	err = agd_ratings_parse(arr, len + 2, AGD_RATING_JSON, &wrapped);
	if (err != -ENOMEM && body[strspn(body, " \t\r\n")] == '{') {
		FUZZ_CHECK(err == 0 && wrapped.n == 1, "object accepted, [object] refused (%d)",
			   err);
		FUZZ_CHECK(same_rating(&wrapped.items[0], &b->items[0]), "[object] differs");
	}
	agd_rating_batch_free(&wrapped);
	free(arr);
}

static void same_errors(const struct agd_rating_batch *a, const struct agd_rating_batch *b)
{
	size_t i;

	FUZZ_CHECK(a->n_errors == b->n_errors, "errors %zu, full parser %zu", a->n_errors,
		   b->n_errors);
	for (i = 0; i < a->n_errors && i < AGD_RATING_ERRORS_MAX; i++)
		FUZZ_CHECK(a->errors[i].index == b->errors[i].index &&
				   !strcmp(a->errors[i].field, b->errors[i].field) &&
				   !strcmp(a->errors[i].reason, b->errors[i].reason),
			   "error %zu: '%s: %s', full parser '%s: %s'", i, a->errors[i].field,
			   a->errors[i].reason, b->errors[i].field, b->errors[i].reason);
}

/* The plain-shape parser may take a body only as the full parser would. */
static void fast_agrees(const char *body, size_t len, enum agd_rating_format f, int err,
			const struct agd_rating_batch *b)
{
	struct agd_rating_batch full;
	int rc = agd_ratings_parse_full(body, len, f, &full);

	if (rc == -ENOMEM || err == -ENOMEM) {
		if (rc != -ENOMEM)
			agd_rating_batch_free(&full);
		return;
	}
	FUZZ_CHECK(rc == err, "parse %d, full parser %d", err, rc);
	FUZZ_CHECK(b->n == full.n, "%zu items, full parser %zu", b->n, full.n);
	FUZZ_CHECK(!b->n || !memcmp(b->items, full.items, b->n * sizeof(*b->items)),
		   "items differ from the full parser's");
	same_errors(b, &full);
	agd_rating_batch_free(&full);
}

static void fast_line_agrees(const char *body, size_t len, int err, const struct agd_rating *r,
			     const struct agd_rating_error *e)
{
	struct agd_rating fast, full;
	struct agd_rating_error fe;
	int took = agd_rating_parse_fast(body, len, &fast);
	int rc = agd_rating_parse_line_full(body, len, &full, &fe);

	FUZZ_CHECK(rc == err, "line %d, full parser %d", err, rc);
	if (took)
		FUZZ_CHECK(rc == 0 && !memcmp(&fast, &full, sizeof(fast)),
			   "plain shape taken where the full parser says %d (%s) or differs", rc,
			   fe.reason);
	if (!rc && !err)
		FUZZ_CHECK(!memcmp(r, &full, sizeof(full)), "line differs from the full parser's");
	if (rc && err)
		FUZZ_CHECK(!strcmp(e->field, fe.field) && !strcmp(e->reason, fe.reason),
			   "line error '%s', full parser '%s'", e->reason, fe.reason);
}

static void fuzz_parser(uint8_t sel, struct fuzz_in *in)
{
	enum agd_rating_format f = sel == 'N' ? AGD_RATING_NDJSON : AGD_RATING_JSON;
	struct agd_rating_batch b;
	size_t len;
	char *body = fuzz_rest_str(in, &len);
	int err;

	if (sel == 'L') {
		struct agd_rating r;
		struct agd_rating_error e;

		err = agd_rating_parse_line(body, len, &r, &e);
		FUZZ_CHECK(err == 0 || err == -EINVAL, "line error %d", err);
		fast_line_agrees(body, len, err, &r, &e);
		if (!err)
			check_item(&r);
		else
			FUZZ_CHECK(terminated(e.reason, sizeof(e.reason)) && e.reason[0], "reason");
		free(body);
		return;
	}
	err = agd_ratings_parse(body, len, f, &b);
	check_batch(err, &b);
	fast_agrees(body, len, f, err, &b);
	if (f == AGD_RATING_NDJSON && err != -ENOMEM)
		line_agrees(body, len, err, &b);
	if (f == AGD_RATING_JSON && !err)
		array_agrees(body, len, &b);
	if (err != -ENOMEM)
		agd_rating_batch_free(&b);
	free(body);
}

static double fuzz_double(struct fuzz_in *in)
{
	uint64_t bits = fuzz_uint(in, 8);
	double d;

	memcpy(&d, &bits, sizeof(d));
	return d;
}

/* The limit the engine would write for a rate: the buckets must take it. */
static void check_limit(const struct agd_policy *p, double rate)
{
	uint64_t burst = agd_policy_burst_tokens(p, rate);
	struct ag_gcra_params g;
	int err;

	FUZZ_CHECK(burst >= (p->unit == AG_UNIT_BPS ? AG_BPS_MIN_BURST : 1) &&
			   burst <= AG_BURST_MAX,
		   "burst %llu", (unsigned long long)burst);
	if (p->burst_kind == AGD_BURST_TOKENS)
		FUZZ_CHECK(burst == (uint64_t)fmax(p->burst, p->unit == AG_UNIT_BPS ?
								     AG_BPS_MIN_BURST : 1),
			   "token burst %g became %llu", p->burst, (unsigned long long)burst);
	err = ag_gcra_params_for(rate, burst, p->unit, &g);
	FUZZ_CHECK(err == 0, "policy passed its check but rate %.17g burst %llu %s is refused: %s",
		   rate, (unsigned long long)burst, p->unit == AG_UNIT_BPS ? "bps" : "pps",
		   ag_errmsg());
}

static void fuzz_policy(uint8_t sel, struct fuzz_in *in)
{
	struct agd_rating_stats st = { .last_ms = -1 };
	struct agd_policy p;
	struct agd_err why = { 0 };
	double rate;
	uint8_t flags;

	p.r0 = fuzz_double(in);
	p.alpha = fuzz_double(in);
	p.r_min = fuzz_double(in);
	p.r_max = fuzz_double(in);
	p.burst = fuzz_double(in);
	flags = fuzz_u8(in);
	p.burst_kind = flags & 1 ? AGD_BURST_SECONDS : AGD_BURST_TOKENS;
	p.unit = flags & 2 ? AG_UNIT_BPS : AG_UNIT_PPS;
	p.pinned = flags & 4;
	if (flags & 8) /* out-of-range enums: the check must refuse them */
		p.unit = (enum ag_unit)(flags >> 4);
	if (agd_policy_check(&p, &why)) {
		FUZZ_CHECK(why.msg[0], "refusal without a reason");
		return;
	}
	FUZZ_CHECK(p.unit == AG_UNIT_PPS || p.unit == AG_UNIT_BPS || p.unit == AG_UNIT_CONN,
		   "unit %d accepted", p.unit);
	rate = p.r0;
	check_limit(&p, rate);
	while (in->n) {
		uint8_t b = fuzz_u8(in);
		int score = AGD_SCORE_MIN + b % 5;
		double next = agd_policy_rate_after(&p, rate, score);

		FUZZ_CHECK(next >= p.r_min && next <= p.r_max, "rate %.17g outside [%g, %g]", next,
			   p.r_min, p.r_max);
		if (p.pinned || score == AGD_SCORE_NEUTRAL)
			FUZZ_CHECK(next == rate, "rate moved from %.17g to %.17g", rate, next);
		if (score < AGD_SCORE_MAX)
			FUZZ_CHECK(agd_policy_rate_after(&p, rate, score + 1) >= next,
				   "a better score lowered the rate");
		check_limit(&p, next);
		agd_stats_add(&st, score, (int64_t)(b * 1000));
		rate = next;
	}
	if (st.count)
		FUZZ_CHECK(agd_stats_mean(&st) >= AGD_SCORE_MIN && agd_stats_mean(&st) <= AGD_SCORE_MAX,
			   "mean %g", agd_stats_mean(&st));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_keep_stderr();
	return 0;
}

static void fuzz_ttl(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	struct agd_err why = { 0 };
	double ttl = -1;

	if (!text)
		return;
	memcpy(text, data, size);
	text[size] = 0;
	if (agd_ttl_parse(text, &ttl, &why))
		FUZZ_CHECK(strstr(why.msg, "ttl"), "TTL refused without naming ttl: %s", why.msg);
	else
		FUZZ_CHECK(ttl >= 0 && ttl <= AGD_TTL_MAX && ttl == floor(ttl),
			   "TTL accepted as %g", ttl);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint8_t sel = fuzz_u8(&in);

	if (sel == 'T')
		fuzz_ttl(data + 1, size - 1);
	else if (sel >= 0x80)
		fuzz_policy(sel, &in);
	else
		fuzz_parser(sel, &in);
	return 0;
}
