// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The cost of finding idle agents: agentgated's engine with N agents
 * (default 10^6, made by ratings as a busy tutorial host makes them, each
 * with the default 24 h TTL), then sweeps run one after another, each
 * timed in CPU time. Baselines timed in the same run: reading the per-CPU
 * counters of every slot in batches (what any design that compares counter
 * snapshots must do at least) and reading every bucket's tat word through
 * the mmap. At 10^6 agents the sweep runs every 60 s (a quarter of the
 * shortest TTL, at most 60 s), so its CPU time per sweep is its CPU time
 * per minute.
 *
 * Usage: sweep_cost --bpffs DIR --state DIR [--agents N] [--sweeps K]
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/engine.h"
#include "engine_bench.h"

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* N agents through rating jobs of up to 10^4 items (group commits). */
static int make_agents(struct agd_engine *e, unsigned long n)
{
	const size_t chunk = 10000;
	struct agd_rating *items = calloc(chunk, sizeof(*items));
	unsigned long done = 0;
	int err = 0;

	if (!items)
		return -ENOMEM;
	while (done < n && !err) {
		struct agd_job job = { 0 };
		size_t k = n - done < chunk ? n - done : chunk, i;

		for (i = 0; i < k; i++) {
			memset(&items[i], 0, sizeof(items[i]));
			snprintf(items[i].agent, sizeof(items[i].agent), "a%07lu", done + i);
			items[i].score = 3;
			items[i].ts_ms = -1;
		}
		job.items = items;
		job.n = k;
		job.received_ns = ag_now_ns();
		err = agd_engine_rate(e, &job);
		if (!err && job.err.code)
			err = job.err.code;
		if (err)
			fprintf(stderr, "sweep_cost: creating agents: %s\n", job.err.msg);
		agd_job_release(&job);
		done += k;
	}
	free(items);
	return err;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = { { "bpffs", 1, 0, 'b' }, { "state", 1, 0, 's' },
					    { "agents", 1, 0, 'n' }, { "sweeps", 1, 0, 'k' },
					    { 0 } };
	const char *bpffs = NULL, *state = NULL;
	unsigned long agents = 1000000;
	int sweeps = 5, c, i, err;
	struct agd_engine_stats st;
	struct agd_err why = { 0 };
	struct agd_engine *e = NULL;
	double *sweep, *counters, *words, t0, made;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (c == 'b')
			bpffs = optarg;
		else if (c == 's')
			state = optarg;
		else if (c == 'n')
			agents = strtoul(optarg, NULL, 10);
		else if (c == 'k')
			sweeps = atoi(optarg);
		else
			return 2;
	}
	if (!bpffs || !state || !agents || sweeps < 1) {
		fprintf(stderr, "usage: sweep_cost --bpffs DIR --state DIR [--agents N] "
			"[--sweeps K]\n");
		return 2;
	}
	err = bench_engine_open(bpffs, state, (__u32)(agents + 1024), &e, &why);
	if (err) {
		fprintf(stderr, "sweep_cost: %s\n", why.msg);
		return 1;
	}
	t0 = wall_s();
	err = make_agents(e, agents);
	made = wall_s() - t0;
	sweep = calloc((size_t)sweeps, sizeof(double));
	counters = calloc((size_t)sweeps, sizeof(double));
	words = calloc((size_t)sweeps, sizeof(double));
	if (!err && (!sweep || !counters || !words))
		err = -ENOMEM;
	for (i = 0; !err && i < sweeps; i++) {
		struct ag_ctx *ctx = agd_engine_ctx(e);
		struct ag_counters *cv = calloc(ag_max_agents(ctx), sizeof(*cv));
		__u64 *wv = calloc(ag_max_agents(ctx), sizeof(*wv));

		if (!cv || !wv) {
			err = -ENOMEM;
		} else {
			t0 = cpu_s();
			err = ag_counters_get_all(ctx, cv);
			counters[i] = cpu_s() - t0;
			t0 = cpu_s();
			err = err ?: ag_bucket_words(ctx, wv);
			words[i] = cpu_s() - t0;
			t0 = cpu_s();
			agd_engine_sweep(e);
			sweep[i] = cpu_s() - t0;
		}
		free(cv);
		free(wv);
	}
	agd_engine_stats(e, &st);
	agd_engine_close(e);
	if (err) {
		fprintf(stderr, "sweep_cost: %s\n", strerror(-err));
		return 1;
	}
	printf("agents %lu (made in %.1f s), sweeps %d\n", agents, made, sweeps);
	printf("  sweep (CPU, median)               %8.1f ms  = CPU per minute at the 60 s "
	       "interval\n", median(sweep, sweeps) * 1e3);
	printf("  baseline: counters, batch read    %8.1f ms  (sweep / baseline %.2fx)\n",
	       median(counters, sweeps) * 1e3, median(sweep, sweeps) / median(counters, sweeps));
	printf("  baseline: tat words, mmap         %8.1f ms\n", median(words, sweeps) * 1e3);
	printf("  engine's own count: %llu sweeps, %.1f ms CPU each\n",
	       (unsigned long long)st.sweeps,
	       st.sweeps ? (double)st.sweep_cpu_ns / 1e6 / (double)st.sweeps : 0);
	return 0;
}
