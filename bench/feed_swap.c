// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Rule feed swaps at scale (docs/BENCHMARKS.md, "Rule feeds"): N prefixes
 * (60 % IPv4 /24, 20 % IPv4 hosts, 20 % IPv6 /48) as a JSON feed of the
 * published shape, then
 *   parse     agd_feed_parse of the whole text
 *   apply     agentgated's engine replacing an agent's empty feed set by the
 *             N prefixes: the maps (ag_rules_swap) and the store's record and
 *             audit line in one transaction (what a refresh or rule sync does)
 *   change    the same with 10 % of the prefixes replaced
 *   swap      ag_rules_swap alone, N prefixes into an empty agent
 *   baseline  ag_rule_add of the same N prefixes one at a time (what N
 *             `agentgate rule add` calls write into the maps), same run
 * Each timed R times on fresh state; the median and the range are printed.
 *
 * Usage: feed_swap --bpffs DIR --state DIR [--prefixes N] [--runs R]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agentgate.h"
#include "core/engine.h"
#include "core/feed.h"
#include "engine_bench.h"

struct opts {
	const char *bpffs, *state;
	size_t prefixes, runs;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void report(const char *what, double *t, size_t runs, size_t n)
{
	qsort(t, runs, sizeof(*t), cmp_double);
	printf("%-9s %8.1f ms median (%.1f-%.1f ms over %zu runs), %.2f us a prefix\n", what,
	       t[runs / 2] * 1e3, t[0] * 1e3, t[runs - 1] * 1e3, runs, t[runs / 2] * 1e6 / (double)n);
}

/* The i-th prefix of generation gen: 1 replaces every tenth of 0's, 2
 * shares none with either. */
static void prefix_text(size_t i, unsigned int gen, char *buf, size_t len)
{
	size_t k = i + (gen == 1 && i % 10 == 0 ? 10000000 : gen == 2 ? 20000000 : 0);

	switch (i % 5) {
	case 0: case 1: case 2:
		snprintf(buf, len, "{\"ipv4Prefix\": \"%zu.%zu.%zu.0/24\"}", 10 + k / 65536 % 100,
			 k / 256 % 256, k % 256);
		break;
	case 3:
		snprintf(buf, len, "{\"ipv4Prefix\": \"%zu.%zu.%zu.%zu/32\"}", 120 + k / 16777216 % 50,
			 k / 65536 % 256, k / 256 % 256, k % 256);
		break;
	default:
		snprintf(buf, len, "{\"ipv6Prefix\": \"2001:%zx:%zx::/48\"}",
			 0xdb8 + k / 65536 % 4096, k % 65536);
	}
}

static char *feed_text(size_t n, unsigned int gen, size_t *len)
{
	size_t cap = n * 48 + 128, pos = 0, i;
	char *buf = malloc(cap), one[64];

	if (!buf)
		return NULL;
	pos += (size_t)snprintf(buf, cap, "{\"creationTime\": \"2026-12-07T00:00:00\", "
				"\"prefixes\": [");
	for (i = 0; i < n; i++) {
		prefix_text(i, gen, one, sizeof(one));
		pos += (size_t)snprintf(buf + pos, cap - pos, "%s%s", i ? ", " : "", one);
	}
	pos += (size_t)snprintf(buf + pos, cap - pos, "]}\n");
	*len = pos;
	return buf;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = { { "bpffs", 1, 0, 'b' }, { "state", 1, 0, 's' },
					    { "prefixes", 1, 0, 'n' }, { "runs", 1, 0, 'r' },
					    { 0 } };
	int c;

	o->prefixes = 100000;
	o->runs = 5;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'b': o->bpffs = optarg; break;
		case 's': o->state = optarg; break;
		case 'n': o->prefixes = strtoul(optarg, NULL, 10); break;
		case 'r': o->runs = strtoul(optarg, NULL, 10); break;
		default: return -1;
		}
	}
	return o->bpffs && o->state && o->prefixes && o->runs ? 0 : -1;
}

/* Fresh maps (rule maps sized for the test) and state. */
static int fresh(const struct opts *o, size_t run)
{
	struct ag_open_opts oo = { .create = true, .max_agents = 1024 };
	struct ag_ctx *ctx = NULL;
	char pin[4096], cmd[8300];
	int err;

	snprintf(pin, sizeof(pin), "%s/agentgate", o->bpffs);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'/* && mkdir -p '%s'", pin, o->state, o->state);
	if (system(cmd))
		return -EIO;
	oo.pin_root = pin;
	oo.max_rules = 1;
	while (oo.max_rules < o->prefixes * 2)
		oo.max_rules *= 2;
	err = ag_open(&oo, &ctx);
	if (err) {
		fprintf(stderr, "feed_swap: run %zu: %s\n", run, ag_errmsg());
		return err;
	}
	ag_close(ctx);
	return 0;
}

int main(int argc, char **argv)
{
	struct agd_feed_set set = { 0 }, set2 = { 0 }, other = { 0 };
	struct agd_agent_change none = { .fill_tokens = -1 };
	struct agd_feed_meta m = { 0 };
	struct agd_err why = { 0 };
	double *t[5];
	size_t len, len2, run, i;
	char *text, *text2, *text3;
	size_t len3;
	struct opts o = { 0 };
	int err = 0;

	if (parse_args(argc, argv, &o)) {
		fprintf(stderr, "usage: feed_swap --bpffs DIR --state DIR [--prefixes N] [--runs R]\n");
		return 2;
	}
	text = feed_text(o.prefixes, 0, &len);
	text2 = feed_text(o.prefixes, 1, &len2);
	text3 = feed_text(o.prefixes, 2, &len3);
	for (i = 0; i < 5; i++)
		t[i] = calloc(o.runs, sizeof(double));
	if (!text || !text2 || !text3 || !t[4])
		return 1;
	printf("feed of %zu prefixes, %zu bytes of JSON\n", o.prefixes, len);
	for (run = 0; run < o.runs && !err; run++) {
		struct ag_rules_swap_result res;
		struct agd_engine *e = NULL;
		struct ag_ctx *ctx = NULL;
		double t0;

		t0 = now_s();
		err = agd_feed_parse(text, len, 0, &set, &why);
		t[0][run] = now_s() - t0;
		if (!err)
			err = agd_feed_parse(text2, len2, 0, &set2, &why);
		if (!err)
			err = agd_feed_parse(text3, len3, 0, &other, &why);
		if (err || set.n != o.prefixes || set2.n != o.prefixes || other.n != o.prefixes) {
			fprintf(stderr, "feed_swap: parse: %s (%zu prefixes)\n", why.msg, set.n);
			return 1;
		}
		/* The engine: apply, then a 10 % change. */
		err = fresh(&o, run);
		if (!err)
			err = bench_engine_open(o.bpffs, o.state, 1024, &e, &why);
		if (!err)
			err = agd_engine_agent_put(e, "feed", &none, "bench", NULL, &why);
		if (!err) {
			t0 = now_s();
			err = agd_engine_feed_set(e, "feed", &set, &m, "bench", &why);
			t[1][run] = now_s() - t0;
		}
		if (!err) {
			t0 = now_s();
			err = agd_engine_feed_set(e, "feed", &set2, &m, "bench", &why);
			t[2][run] = now_s() - t0;
		}
		if (e)
			agd_engine_close(e);
		if (err) {
			fprintf(stderr, "feed_swap: engine: %s\n", why.msg);
			return 1;
		}
		/* The library alone, then the baseline: one rule at a time. */
		err = fresh(&o, run);
		if (!err) {
			struct ag_open_opts oo = { 0 };
			struct ag_agent_update u = { 0 };
			char pin[4096];

			snprintf(pin, sizeof(pin), "%s/agentgate", o.bpffs);
			oo.pin_root = pin;
			err = ag_open(&oo, &ctx);
			if (!err)
				err = ag_agent_set(ctx, "feed", &u, NULL, NULL);
			if (!err)
				err = ag_agent_set(ctx, "one", &u, NULL, NULL);
		}
		if (!err) {
			t0 = now_s();
			err = ag_rules_swap(ctx, "feed", set.v, set.n, NULL, 0, NULL, &res);
			t[3][run] = now_s() - t0;
			if (!err && res.added != set.n)
				err = -EIO;
		}
		for (i = 0, t0 = now_s(); !err && i < other.n; i++)
			err = ag_rule_add(ctx, &other.v[i], "one");
		t[4][run] = now_s() - t0;
		if (err)
			fprintf(stderr, "feed_swap: maps: %s\n", ag_errmsg());
		if (ctx)
			ag_close(ctx);
	}
	if (err)
		return 1;
	report("parse", t[0], o.runs, o.prefixes);
	report("apply", t[1], o.runs, o.prefixes);
	report("change", t[2], o.runs, o.prefixes);
	report("swap", t[3], o.runs, o.prefixes);
	report("baseline", t[4], o.runs, o.prefixes);
	printf("swap / baseline: %.3f (ag_rules_swap of %zu prefixes against as many ag_rule_add "
	       "calls, medians)\n", t[3][o.runs / 2] / t[4][o.runs / 2], o.prefixes);
	agd_feed_set_free(&set);
	agd_feed_set_free(&set2);
	agd_feed_set_free(&other);
	free(text);
	free(text2);
	free(text3);
	for (i = 0; i < 5; i++)
		free(t[i]);
	return 0;
}
