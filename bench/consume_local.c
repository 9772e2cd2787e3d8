// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * consume_local: application-level rate-limit checks the way a process on
 * the same host makes them with libagentgate (ag_consume: the agent's slot
 * from a cache checked through the mmap, then one compare-and-swap on the
 * bucket word; no system call once an agent is known), beside bench/consume
 * which makes them over HTTP or against Redis (bench/consume.sh).
 *
 * T threads, each checking agents PREFIX0..PREFIX(K-1) in turn, one token a
 * check, for S seconds after a warm-up. Every 64th check is timed for the
 * latency percentiles (clock reads would otherwise be most of the cost).
 * CPU time per check is the process's own (getrusage): the check runs in
 * the caller, there is no server.
 *
 * Usage: consume_local --pin-root DIR [--threads T] [--seconds S]
 *                      [--warmup S] [--agents K] [--prefix NAME]
 * Prints one JSON object. Exit: 0 measured, 1 failure, 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include "agentgate.h"

#define HIST_NS 1000000 /* latency histogram: 1 ns buckets up to 1 ms */
#define SAMPLE 64
#define MAX_THREADS 256

static struct {
	const char *pin_root, *prefix;
	int threads;
	double seconds, warmup;
	unsigned int agents;
} opt = { .prefix = "allow-", .threads = 1, .seconds = 4, .warmup = 1, .agents = 100 };

static struct ag_ctx *ctx;
static atomic_int phase; /* 0 warm-up, 1 measuring, 2 done */

struct worker {
	pthread_t t;
	int id, err;
	uint64_t allowed, denied, over;
	uint32_t *hist;
	char (*names)[AG_NAME_MAX + 1];
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	unsigned int a = (unsigned int)w->id % opt.agents;
	uint64_t n = 0;

	while (atomic_load_explicit(&phase, memory_order_relaxed) < 2) {
		struct ag_consume_result res;
		bool counting = atomic_load_explicit(&phase, memory_order_relaxed) == 1;
		bool timed = counting && !(n++ % SAMPLE);
		uint64_t t0 = timed ? mono_ns() : 0;
		int err = ag_consume(ctx, w->names[a], 1, &res);

		if (err) {
			w->err = err;
			return NULL;
		}
		if (timed) {
			uint64_t d = mono_ns() - t0;

			if (d < HIST_NS)
				w->hist[d]++;
			else
				w->over++;
		}
		if (counting) {
			w->allowed += res.allowed;
			w->denied += !res.allowed;
		}
		a = a + 1 == opt.agents ? 0 : a + 1;
	}
	return NULL;
}

static double percentile(struct worker *ws, double p)
{
	uint64_t total = 0, seen = 0, want;
	uint32_t ns;
	int i;

	for (i = 0; i < opt.threads; i++) {
		for (ns = 0; ns < HIST_NS; ns++)
			total += ws[i].hist[ns];
		total += ws[i].over;
	}
	want = (uint64_t)(p * (double)total);
	for (ns = 0; ns < HIST_NS; ns++) {
		for (i = 0; i < opt.threads; i++)
			seen += ws[i].hist[ns];
		if (seen > want)
			return ns;
	}
	return HIST_NS;
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "pin-root", required_argument, NULL, 'r' }, { "threads", required_argument, NULL, 't' },
		{ "seconds", required_argument, NULL, 's' },  { "warmup", required_argument, NULL, 'w' },
		{ "agents", required_argument, NULL, 'a' },   { "prefix", required_argument, NULL, 'x' },
		{}
	};
	int c;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'r': opt.pin_root = optarg; break;
		case 't': opt.threads = atoi(optarg); break;
		case 's': opt.seconds = atof(optarg); break;
		case 'w': opt.warmup = atof(optarg); break;
		case 'a': opt.agents = (unsigned int)atoi(optarg); break;
		case 'x': opt.prefix = optarg; break;
		default: return -EINVAL;
		}
	}
	if (optind != argc || !opt.pin_root || opt.threads < 1 || opt.threads > MAX_THREADS ||
	    opt.seconds <= 0 || opt.warmup < 0 || opt.agents < 1 || opt.agents > 100000)
		return -EINVAL;
	return 0;
}

int main(int argc, char **argv)
{
	struct ag_open_opts oo = { 0 };
	struct worker *ws = NULL;
	uint64_t allowed = 0, denied = 0;
	double cpu0 = 0, cpu1 = 0, t0 = 0, t1 = 1;
	int i, err = 0, started = 0;
	unsigned int a;

	if (parse_args(argc, argv)) {
		fprintf(stderr, "usage: consume_local --pin-root DIR [--threads T] [--seconds S] "
				"[--warmup S] [--agents K] [--prefix NAME]\n");
		return 2;
	}
	oo.pin_root = opt.pin_root;
	if (ag_open(&oo, &ctx)) {
		fprintf(stderr, "consume_local: %s\n", ag_errmsg());
		return 1;
	}
	ws = calloc((size_t)opt.threads, sizeof(*ws));
	for (i = 0; ws && i < opt.threads; i++) {
		ws[i].id = i;
		ws[i].hist = calloc(HIST_NS, sizeof(*ws[i].hist));
		ws[i].names = calloc(opt.agents, sizeof(*ws[i].names));
		if (!ws[i].hist || !ws[i].names) {
			err = -ENOMEM;
			break;
		}
		for (a = 0; a < opt.agents; a++)
			snprintf(ws[i].names[a], sizeof(ws[i].names[a]), "%s%u", opt.prefix, a);
	}
	if (!ws)
		err = -ENOMEM;
	for (i = 0; !err && i < opt.threads; i++) {
		err = -pthread_create(&ws[i].t, NULL, run, &ws[i]);
		started += !err;
	}
	if (!err) {
		sleep_s(opt.warmup);
		cpu0 = cpu_s();
		t0 = (double)mono_ns() / 1e9;
		atomic_store(&phase, 1);
		sleep_s(opt.seconds);
		atomic_store(&phase, 2);
		t1 = (double)mono_ns() / 1e9;
		cpu1 = cpu_s();
	}
	atomic_store(&phase, 2);
	for (i = 0; i < started; i++) {
		pthread_join(ws[i].t, NULL);
		if (ws[i].err && !err) {
			err = ws[i].err;
			fprintf(stderr, "consume_local: thread %d: %s\n", i, ag_errmsg());
		}
		allowed += ws[i].allowed;
		denied += ws[i].denied;
	}
	if (!err)
		printf("{\"proto\":\"local\",\"threads\":%d,\"agents\":%u,\"seconds\":%.3f,"
		       "\"checks\":%llu,\"allowed\":%llu,\"denied\":%llu,\"checks_per_s\":%.1f,"
		       "\"p50_ns\":%.0f,\"p99_ns\":%.0f,\"cpu_ns_per_check\":%.1f}\n",
		       opt.threads, opt.agents, t1 - t0, (unsigned long long)(allowed + denied),
		       (unsigned long long)allowed, (unsigned long long)denied,
		       (double)(allowed + denied) / (t1 - t0), percentile(ws, 0.5),
		       percentile(ws, 0.99),
		       allowed + denied ? (cpu1 - cpu0) * 1e9 / (double)(allowed + denied) : 0);
	else if (err == -ENOMEM || err == -EAGAIN)
		fprintf(stderr, "consume_local: %s\n", strerror(-err));
	for (i = 0; ws && i < opt.threads; i++) {
		free(ws[i].hist);
		free(ws[i].names);
	}
	free(ws);
	ag_close(ctx);
	return err ? 1 : 0;
}
