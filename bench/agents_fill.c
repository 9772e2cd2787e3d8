// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * agents_fill: N agents with one host rule each, for the benchmarks that
 * need many per-source limits (bench/peers.sh). Agent PREFIX<i> gets rule
 * FIRST + i (/32 or /128: the last 32 bits count up) and the given rate and
 * burst. Through libagentgate in one process: about 10 us an agent, where
 * two CLI calls per agent cost milliseconds. Creates the maps under the pin
 * root when missing (sized for N), so `agentgate attach` then reuses them.
 *
 * Usage: agents_fill --pin-path DIR --first ADDR --count N --rate R --burst B
 *                    [--prefix NAME]
 * Exit: 0 done, 1 failure, 2 usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentgate.h"

struct opts {
	const char *pin, *first, *prefix;
	unsigned long count;
	double rate;
	unsigned long long burst;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: agents_fill --pin-path DIR --first ADDR --count N --rate R --burst B "
		   "[--prefix NAME]\n");
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "pin-path", required_argument, NULL, 'p' }, { "first", required_argument, NULL, 'f' },
		{ "count", required_argument, NULL, 'n' },    { "rate", required_argument, NULL, 'r' },
		{ "burst", required_argument, NULL, 'b' },    { "prefix", required_argument, NULL, 'x' },
		{ "help", no_argument, NULL, 'h' },           {}
	};
	char *end = NULL;
	int c;

	o->prefix = "bn-src-";
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		errno = 0;
		switch (c) {
		case 'p': o->pin = optarg; break;
		case 'f': o->first = optarg; break;
		case 'x': o->prefix = optarg; break;
		case 'n': o->count = strtoul(optarg, &end, 10); break;
		case 'r': o->rate = strtod(optarg, &end); break;
		case 'b': o->burst = strtoull(optarg, &end, 10); break;
		case 'h': usage(stdout); exit(0);
		default: return -EINVAL;
		}
		if (errno || (end && *end))
			return -EINVAL;
		end = NULL;
	}
	if (optind != argc || !o->pin || !o->first || !o->count || o->count > AG_MAX_AGENTS_LIMIT)
		return -EINVAL;
	return 0;
}

static __u32 roundup_pow2(unsigned long n)
{
	__u32 p = 16;

	while (p < n)
		p <<= 1;
	return p;
}

/* The rule of agent i: FIRST with i added to its last 32 bits. */
static void rule_of(const struct ag_rule *first, unsigned long i, struct ag_rule *out)
{
	size_t at = first->family == AF_INET ? 0 : 12;
	__u32 v;

	*out = *first;
	memcpy(&v, out->addr + at, 4);
	v = htonl(ntohl(v) + (__u32)i);
	memcpy(out->addr + at, &v, 4);
}

static int fill(struct ag_ctx *ctx, const struct opts *o, const struct ag_rule *first)
{
	struct ag_agent_update u = { .fields = AG_SET_RATE | AG_SET_BURST, .rate = o->rate,
				     .burst = o->burst };
	struct ag_rule rule;
	char name[AG_NAME_MAX + 1];
	unsigned long i;
	int err;

	for (i = 0; i < o->count; i++) {
		snprintf(name, sizeof(name), "%s%lu", o->prefix, i);
		err = ag_agent_set(ctx, name, &u, NULL, NULL);
		if (!err) {
			rule_of(first, i, &rule);
			err = ag_rule_add(ctx, &rule, name);
		}
		if (err) {
			fprintf(stderr, "agents_fill: %s: %s\n", name, ag_errmsg());
			return err;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct ag_open_opts oo = { .create = true };
	struct ag_ctx *ctx = NULL;
	struct ag_rule first;
	struct opts o = {};
	int err;

	if (parse_args(argc, argv, &o)) {
		usage(stderr);
		return 2;
	}
	err = ag_prefix_parse(o.first, &first);
	if (err || first.plen != (first.family == AF_INET ? 32 : 128)) {
		fprintf(stderr, "agents_fill: --first '%s': not a host address\n", o.first);
		return 2;
	}
	oo.pin_root = o.pin;
	oo.max_agents = roundup_pow2(o.count);
	oo.max_rules = oo.max_agents;
	err = ag_open(&oo, &ctx);
	if (err) {
		fprintf(stderr, "agents_fill: %s\n", ag_errmsg());
		return 1;
	}
	err = fill(ctx, &o, &first);
	ag_close(ctx);
	return err ? 1 : 0;
}
