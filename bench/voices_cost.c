// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The cost of one voice per user: agentgated's engine applies N ratings
 * (default 10^6) over A agents (default 10^3) three times, timed, in the
 * same run: without users (the baseline: no voice is looked up or stored),
 * from N distinct users (each stores a voice), and the same users again
 * with new scores (each replaces its voice). Reports ratings/s of each and
 * the bytes per (user, agent) voice in memory (the voice table) and in the
 * store once the engine closed (LMDB pages of the voices database and the
 * voice log / voices), and how long the engine takes to open again with
 * them (reading every voice into memory).
 *
 * Usage: voices_cost --bpffs DIR --state DIR [--ratings N] [--agents A]
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/engine.h"
#include "core/store.h"
#include "engine_bench.h"

static double wall_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* n ratings in jobs of 10^4: rating i for agent i % agents, user i (or
 * none), score from `round`. Wall seconds, or < 0 on an error. */
static double rate_all(struct agd_engine *e, unsigned long n, unsigned long agents, bool users,
		       int round)
{
	const size_t chunk = 10000;
	struct agd_rating *items = calloc(chunk, sizeof(*items));
	unsigned long done = 0;
	double t0 = wall_s();

	if (!items)
		return -1;
	while (done < n) {
		struct agd_job job = { 0 };
		size_t k = n - done < chunk ? n - done : chunk, i;
		int err;

		for (i = 0; i < k; i++) {
			unsigned long x = done + i;

			memset(&items[i], 0, sizeof(items[i]));
			snprintf(items[i].agent, sizeof(items[i].agent), "agent-%04lu", x % agents);
			if (users)
				snprintf(items[i].user, sizeof(items[i].user), "user-%07lu", x);
			items[i].score = 1 + (int)((x + (unsigned long)round) % 5);
			items[i].ts_ms = -1;
		}
		job.items = items;
		job.n = k;
		job.received_ns = ag_now_ns();
		err = agd_engine_rate(e, &job);
		if (err || job.err.code) {
			fprintf(stderr, "voices_cost: %s\n", job.err.msg);
			agd_job_release(&job);
			free(items);
			return -1;
		}
		agd_job_release(&job);
		done += k;
	}
	free(items);
	return wall_s() - t0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = { { "bpffs", 1, 0, 'b' }, { "state", 1, 0, 's' },
					    { "ratings", 1, 0, 'n' }, { "agents", 1, 0, 'a' },
					    { 0 } };
	const char *bpffs = NULL, *state = NULL;
	unsigned long n = 1000000, agents = 1000;
	struct agd_engine_stats st, st2;
	struct agd_err why = { 0 };
	struct agd_engine *e = NULL;
	double anon, first, again, open_s;
	__u64 store_bytes = 0;
	struct agd_store sto;
	MDB_txn *txn;
	int c;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (c == 'b')
			bpffs = optarg;
		else if (c == 's')
			state = optarg;
		else if (c == 'n')
			n = strtoul(optarg, NULL, 10);
		else if (c == 'a')
			agents = strtoul(optarg, NULL, 10);
		else
			return 2;
	}
	if (!bpffs || !state || !n || !agents) {
		fprintf(stderr, "usage: voices_cost --bpffs DIR --state DIR [--ratings N] "
			"[--agents A]\n");
		return 2;
	}
	if (bench_engine_open(bpffs, state, (__u32)(agents + 64), &e, &why)) {
		fprintf(stderr, "voices_cost: %s\n", why.msg);
		return 1;
	}
	anon = rate_all(e, n, agents, false, 0);
	first = anon >= 0 ? rate_all(e, n, agents, true, 1) : -1;
	again = first >= 0 ? rate_all(e, n, agents, true, 2) : -1;
	agd_engine_stats(e, &st);
	agd_engine_close(e); /* folds the voice log */
	if (anon < 0 || first < 0 || again < 0)
		return 1;
	if (agd_store_open_ro(state, &sto, &txn, &why)) {
		fprintf(stderr, "voices_cost: %s\n", why.msg);
		return 1;
	}
	agd_store_voice_count(&sto, txn, &store_bytes);
	agd_store_txn_end(txn);
	agd_store_close(&sto);
	open_s = wall_s();
	if (bench_engine_open(bpffs, state, (__u32)(agents + 64), &e, &why)) {
		fprintf(stderr, "voices_cost: %s\n", why.msg);
		return 1;
	}
	open_s = wall_s() - open_s;
	agd_engine_stats(e, &st2);
	agd_engine_close(e);
	if (st2.voices != st.voices) {
		fprintf(stderr, "voices_cost: %llu voices before the restart, %llu after\n",
			(unsigned long long)st.voices, (unsigned long long)st2.voices);
		return 1;
	}
	printf("ratings %lu over %lu agents, group commits of 10^4\n", n, agents);
	printf("  without users (baseline)     %9.0f ratings/s\n", (double)n / anon);
	printf("  new voices (distinct users)  %9.0f ratings/s  (%.2fx the baseline)\n",
	       (double)n / first, anon / first > 0 ? anon / first : 0);
	printf("  replacing voices             %9.0f ratings/s  (%.2fx the baseline)\n",
	       (double)n / again, anon / again);
	printf("  voices %llu: %.1f bytes each in memory (%.1f MiB), %.1f in the store "
	       "(%.1f MiB)\n", (unsigned long long)st.voices,
	       st.voices ? (double)st.voices_memory / (double)st.voices : 0,
	       (double)st.voices_memory / 1048576.0,
	       st.voices ? (double)store_bytes / (double)st.voices : 0,
	       (double)store_bytes / 1048576.0);
	printf("  engine open with them (every voice read)  %.2f s\n", open_s);
	return 0;
}
