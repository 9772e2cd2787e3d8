// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * One bucket, every CPU at once: a thread per CPU, each pinned, drives
 * BPF_PROG_TEST_RUN at one agent while another thread consumes from the same
 * bucket through the mmap. Demand far exceeds the rate, so the bucket is
 * always empty and the admitted total must sit right at burst + rate*t:
 *   admitted <= burst + rate*t + 1 per CPU (and per consumer), and
 *   admitted + left >= 99 % of burst + rate*t, and never above it,
 * where left is what the bucket still holds when read after the senders
 * stopped: refill during a final stretch in which the scheduler ran none of
 * them is not lost, and counting it makes the check exact. Tokens are lost
 * only to an overflowing burst or to a limiter refusing what it has.
 *
 * The path scenario does the same for parent buckets: agents under a team
 * under an org, each level flooded by what the levels below it admit, and
 * the same bounds at every level, counting what passes through it. A
 * packet a parent refused must cost the agent nothing: an agent's own
 * tokens are then spent only on what passed its whole path, which the
 * lower bound at the agent checks.
 *
 * The counters scenario floods two agents whose slots share every CPU's
 * counter cache entry (abi.h, "ag_tally"), alternately from every CPU, so
 * that counts move out to the tally all the time, while a reader reads
 * them: every frame must be counted exactly once, and no read may go back.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include "agentgate.h"
#include "harness.h"
#include "pkt.h"
#include "testenv.h"

#define RUN_NS 2000000000ULL /* each scenario lasts 2 s */

static struct ag_ctx *ctx;
static struct ag_prog *prog;

struct scenario {
	const char *name;
	double rate;
	__u64 burst;
	enum ag_unit unit;
	size_t frame_len;
	__u64 consume_tokens; /* per userspace request */
};

struct shared {
	atomic_bool stop;
	atomic_bool go;
	struct pkt frame;
	__u32 slot;
	__u64 consume_tokens;
	atomic_ullong consumed; /* tokens the mmap consumer got */
	atomic_ullong test_runs;
	atomic_ullong last_ns; /* latest moment any sender was still sending */
	atomic_ullong max_gap_ns; /* longest pause of any one sender between requests */
	atomic_int errors;
};

static void note_gap(struct shared *sh, __u64 *prev)
{
	__u64 now = ag_now_ns(), gap = now - *prev, seen = atomic_load(&sh->max_gap_ns);

	while (gap > seen && !atomic_compare_exchange_weak(&sh->max_gap_ns, &seen, gap))
		;
	*prev = now;
}

/* A sender's last request ended before this: the window's true end. */
static void mark_end(struct shared *sh)
{
	__u64 now = ag_now_ns(), seen = atomic_load(&sh->last_ns);

	while (now > seen && !atomic_compare_exchange_weak(&sh->last_ns, &seen, now))
		;
}

struct worker {
	pthread_t tid;
	int cpu;
	struct shared *sh;
};

static void pin_to(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *xdp_worker(void *arg)
{
	struct worker *w = arg;
	struct shared *sh = w->sh;
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = sh->frame.b,
		    .data_size_in = (__u32)sh->frame.len, .repeat = 2000);

	__u64 prev;

	pin_to(w->cpu);
	while (!atomic_load(&sh->go))
		;
	prev = ag_now_ns();
	while (!atomic_load(&sh->stop)) {
		note_gap(sh, &prev);
		if (bpf_prog_test_run_opts(ag_prog_fd(prog), &o)) {
			atomic_fetch_add(&sh->errors, 1);
			break;
		}
		atomic_fetch_add(&sh->test_runs, 1);
	}
	mark_end(sh);
	return NULL;
}

static void *mmap_consumer(void *arg)
{
	struct worker *w = arg;
	struct shared *sh = w->sh;
	struct ag_consume_result r;
	__u64 prev;

	pin_to(w->cpu);
	while (!atomic_load(&sh->go))
		;
	prev = ag_now_ns();
	while (!atomic_load(&sh->stop)) {
		note_gap(sh, &prev);
		if (ag_bucket_consume(ctx, sh->slot, sh->consume_tokens, &r)) {
			atomic_fetch_add(&sh->errors, 1);
			break;
		}
		if (r.allowed)
			atomic_fetch_add(&sh->consumed, sh->consume_tokens);
	}
	mark_end(sh);
	return NULL;
}

static void build_frame(struct pkt *p, size_t len)
{
	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "10.9.1.1", NULL, IPPROTO_UDP, NULL);
	pkt_udp(p, 7);
	pkt_pad_to(p, len);
	pkt_finish(p);
}

static void sleep_ns(__u64 ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL) };

	while (nanosleep(&ts, &ts))
		;
}

/* A sender per CPU and the mmap consumer, all on sh, waiting for go; on a
 * failure the started ones are stopped and joined. */
static bool start_workers(struct worker *w, struct shared *sh, int ncpus)
{
	int i, j;

	for (i = 0; i <= ncpus; i++) {
		w[i].cpu = i % ncpus;
		w[i].sh = sh;
		if (pthread_create(&w[i].tid, NULL, i < ncpus ? xdp_worker : mmap_consumer, &w[i]))
			break;
	}
	if (i > ncpus)
		return true;
	atomic_store(&sh->stop, true);
	atomic_store(&sh->go, true);
	for (j = 0; j < i; j++)
		pthread_join(w[j].tid, NULL);
	return ASSERT_TRUE(false, "start the workers");
}

static bool run_scenario(const struct scenario *sc, int ncpus)
{
	struct ag_agent_update u = { .fields = AG_SET_RATE | AG_SET_BURST | AG_SET_UNIT,
				     .rate = sc->rate, .burst = sc->burst, .unit = sc->unit };
	struct shared *sh = calloc(1, sizeof(*sh));
	struct worker *w = calloc(ncpus + 1, sizeof(*w));
	struct ag_counters before, after;
	__u64 stats0[AG_STAT__MAX], stats1[AG_STAT__MAX];
	__u64 t_start, t_end, t_left, xdp_tokens, admitted, slack;
	double ideal, ideal_left, left = 0;
	bool ok = false;
	int i;

	if (!sh || !w)
		goto out;
	build_frame(&sh->frame, sc->frame_len);
	sh->consume_tokens = sc->consume_tokens;
	if (!ASSERT_OK(ag_agent_set(ctx, "conc", &u, &sh->slot, NULL), "agent") ||
	    !ASSERT_OK(ag_counters_get(ctx, sh->slot, &before), "counters") ||
	    !ASSERT_OK(ag_stats_get(ctx, stats0), "stats"))
		goto out;
	if (!start_workers(w, sh, ncpus))
		goto out;
	usleep(50000); /* let every thread reach its CPU */
	t_start = ag_now_ns();
	if (!ASSERT_OK(ag_bucket_reset(ctx, sh->slot), "reset"))
		atomic_store(&sh->stop, true);
	atomic_store(&sh->go, true);
	sleep_ns(RUN_NS);
	atomic_store(&sh->stop, true);
	for (i = 0; i <= ncpus; i++)
		pthread_join(w[i].tid, NULL);
	/* Not the join time: the main thread may wake late on a busy machine. */
	t_end = atomic_load(&sh->last_ns);
	if (!ASSERT_OK(ag_bucket_tokens(ctx, sh->slot, &left), "tokens left"))
		goto out;
	t_left = ag_now_ns();
	if (!ASSERT_OK(ag_counters_get(ctx, sh->slot, &after), "counters") ||
	    !ASSERT_OK(ag_stats_get(ctx, stats1), "stats") ||
	    !ASSERT_EQ(atomic_load(&sh->errors), 0, "worker errors"))
		goto out;

	xdp_tokens = sc->unit == AG_UNIT_BPS ? after.passed_bytes - before.passed_bytes :
					       after.passed_packets - before.passed_packets;
	admitted = xdp_tokens + atomic_load(&sh->consumed);
	ideal = (double)sc->burst + sc->rate * (double)(t_end - t_start) / 1e9;
	ideal_left = (double)sc->burst + sc->rate * (double)(t_left - t_start) / 1e9;
	/* One request per CPU and one of the consumer may straddle the edges. */
	slack = (__u64)(ncpus + 1) * (sc->unit == AG_UNIT_BPS ? sc->frame_len : 1) +
		sc->consume_tokens;
	printf("# %s: %d CPUs + mmap consumer, %.3f s, %llu test runs: xdp %llu + mmap %llu = "
	       "%llu tokens admitted, burst + rate*t = %.0f (%.4f); with %.0f left: %.4f; dropped %llu "
	       "packets, CAS exhausted %llu, longest sender pause %.2f ms\n",
	       sc->name, ncpus, (t_end - t_start) / 1e9,
	       (unsigned long long)atomic_load(&sh->test_runs), (unsigned long long)xdp_tokens,
	       (unsigned long long)atomic_load(&sh->consumed), (unsigned long long)admitted, ideal,
	       admitted / ideal, left, (admitted + left) / ideal_left,
	       (unsigned long long)(after.dropped_packets - before.dropped_packets),
	       (unsigned long long)(stats1[AG_STAT_CAS_EXHAUSTED] - stats0[AG_STAT_CAS_EXHAUSTED]),
	       atomic_load(&sh->max_gap_ns) / 1e6);
	ok = ASSERT_TRUE(after.dropped_packets > before.dropped_packets, "demand exceeded rate") &&
	     ASSERT_TRUE(xdp_tokens > 0 && atomic_load(&sh->consumed) > 0, "both sides admitted") &&
	     ASSERT_LE(admitted, (__u64)ideal + slack, "upper bound burst + rate*t") &&
	     ASSERT_GE(admitted + (__u64)left, (__u64)(0.99 * ideal_left),
		       "admitted + left >= 99 % of burst + rate*t") &&
	     ASSERT_LE(admitted + (__u64)left, (__u64)ideal_left + slack,
		       "admitted + left <= burst + rate*t (tokens never appear early)");
out:
	free(sh);
	free(w);
	return ok;
}

/*
 * Bursts hold 500 ms of rate: the lower bound assumes the senders keep the
 * bucket empty, and a burst that refills faster than the scheduler's gaps
 * between our threads would lose tokens to the senders, not to the limiter
 * (the output reports the longest pause of each run to tell which). The
 * upper bound stays exact to a few tokens whatever the burst.
 * Contention comes from the admitted rate (every admission is a CAS).
 * At a low rate nearly every frame is refused, most of them against the
 * coarse clock's upper bound without reading the exact clock.
 */
static const struct scenario scenarios[] = {
	{ "pps, 200k/s, burst 100000", 200000, 100000, AG_UNIT_PPS, 64, 1 },
	{ "pps, 2M/s, burst 1000000 (heavy CAS contention)", 2e6, 1000000, AG_UNIT_PPS, 64, 1 },
	{ "bps, 50 MB/s, burst 25 MB, 1000-byte frames", 5e7, 25000000, AG_UNIT_BPS, 1000, 700 },
	/* A token every 50 ms, several ticks: most drops are decided on the
	 * coarse clock, every admission on the exact one. */
	{ "pps, 20/s, burst 10 (drops decided on the coarse clock)", 20, 10, AG_UNIT_PPS, 64, 1 },
};

/* ---- parent paths -------------------------------------------------------- */

struct level_def {
	const char *name;
	const char *above;
	double rate;
	const char *prefix; /* agents: their rule; parents: NULL */
	const char *src;    /* agents: a source in it */
	bool flooded;       /* always empty: the lower bound holds */
};

/* A and B under team; team and C under org. The org is the bottleneck
 * (C alone asks for more than it has) and always empty. A, with a third of
 * the senders and the consumer, asks the org for more than its own rate:
 * it stays empty too, and only if a parent's refusal costs it nothing
 * (else its tokens go to packets that never pass, and the lower bound
 * fails). The others get the upper bound. */
enum { L_ORG, L_TEAM, L_A, L_B, L_C, L__COUNT };
static const struct level_def levels[L__COUNT] = {
	[L_ORG] = { "p-org", NULL, 150000, NULL, NULL, true },
	[L_TEAM] = { "p-team", "p-org", 100000, NULL, NULL, false },
	[L_A] = { "p-a", "p-team", 40000, "10.21.0.0/16", "10.21.0.1", true },
	[L_B] = { "p-b", "p-team", 1e6, "10.22.0.0/16", "10.22.0.1", false },
	[L_C] = { "p-c", "p-org", 1e6, "10.23.0.0/16", "10.23.0.1", false },
};

static bool path_world(__u32 slot[L__COUNT])
{
	int i;

	for (i = 0; i < L__COUNT; i++) {
		const struct level_def *d = &levels[i];
		struct ag_agent_update u = {
			.fields = AG_SET_RATE | AG_SET_BURST | AG_SET_UNIT |
				  (d->above ? AG_SET_PARENT : 0),
			.rate = d->rate, .burst = (__u64)(d->rate / 2), .unit = AG_UNIT_PPS,
			.parent = d->above
		};
		struct ag_rule r;
		int err = d->prefix ? ag_agent_set(ctx, d->name, &u, &slot[i], NULL) :
				      ag_parent_set(ctx, d->name, &u, &slot[i], NULL);

		if (!ASSERT_OK(err, d->name))
			return false;
		if (d->prefix && (!ASSERT_OK(ag_prefix_parse(d->prefix, &r), d->prefix) ||
				  !ASSERT_OK(ag_rule_add(ctx, &r, d->name), "rule")))
			return false;
	}
	return true;
}

static bool test_paths(int ncpus)
{
	static const int senders[] = { L_A, L_B, L_C };
	enum { NS = 3 };
	struct shared *sh = calloc(NS, sizeof(*sh));
	struct worker *w = calloc(NS + 1, sizeof(*w));
	struct ag_counters before[L__COUNT], after[L__COUNT];
	__u64 stats0[AG_STAT__MAX], stats1[AG_STAT__MAX], through[L__COUNT];
	__u64 t_start, t_end, t_left, passed[L__COUNT] = {}, consumed;
	double left[L__COUNT];
	__u32 slot[L__COUNT];
	bool ok = path_world(slot);
	int i;

	if (!ok || !sh || !w)
		goto out;
	for (i = 0; i < L__COUNT && ok; i++)
		ok = ASSERT_OK(ag_counters_get(ctx, slot[i], &before[i]), "counters");
	if (!ok || !ASSERT_OK(ag_stats_get(ctx, stats0), "stats"))
		goto out;
	for (i = 0; i < NS; i++) {
		const struct level_def *d = &levels[senders[i]];

		pkt_eth(&sh[i].frame, ETH_P_IP);
		pkt_ipv4(&sh[i].frame, d->src, NULL, IPPROTO_UDP, NULL);
		pkt_udp(&sh[i].frame, 7);
		pkt_pad_to(&sh[i].frame, 64);
		pkt_finish(&sh[i].frame);
		sh[i].slot = slot[senders[i]];
		sh[i].consume_tokens = 1;
	}
	for (i = 0; i <= NS; i++) {
		w[i].cpu = i % ncpus;
		w[i].sh = &sh[i < NS ? i : 0]; /* the consumer takes from A */
		if (pthread_create(&w[i].tid, NULL, i < NS ? xdp_worker : mmap_consumer, &w[i])) {
			ok = false;
			goto out;
		}
	}
	usleep(50000);
	t_start = ag_now_ns();
	for (i = 0; i < L__COUNT; i++)
		ag_bucket_reset(ctx, slot[i]);
	for (i = 0; i < NS; i++)
		atomic_store(&sh[i].go, true);
	sleep_ns(RUN_NS);
	for (i = 0; i < NS; i++)
		atomic_store(&sh[i].stop, true);
	for (i = 0; i <= NS; i++)
		pthread_join(w[i].tid, NULL);
	t_end = 0;
	for (i = 0; i < NS; i++)
		if (atomic_load(&sh[i].last_ns) > t_end)
			t_end = atomic_load(&sh[i].last_ns);
	for (i = 0; i < L__COUNT && ok; i++)
		ok = ASSERT_OK(ag_bucket_tokens(ctx, slot[i], &left[i]), "tokens left");
	t_left = ag_now_ns();
	for (i = 0; i < L__COUNT && ok; i++)
		ok = ASSERT_OK(ag_counters_get(ctx, slot[i], &after[i]), "counters");
	if (!ok || !ASSERT_OK(ag_stats_get(ctx, stats1), "stats"))
		goto out;
	for (i = 0; i < NS; i++)
		ok = ok && ASSERT_EQ(atomic_load(&sh[i].errors), 0, "worker errors");
	for (i = 0; i < L__COUNT; i++)
		passed[i] = after[i].passed_packets - before[i].passed_packets;
	consumed = atomic_load(&sh[0].consumed);
	through[L_A] = passed[L_A] + consumed;
	through[L_B] = passed[L_B];
	through[L_C] = passed[L_C];
	through[L_TEAM] = through[L_A] + through[L_B];
	through[L_ORG] = through[L_TEAM] + through[L_C];
	ok = ok && ASSERT_EQ(passed[L_TEAM], passed[L_A] + passed[L_B], "team counts its children") &&
	     ASSERT_EQ(passed[L_ORG], passed[L_TEAM] + passed[L_C], "org counts its children");
	printf("# paths: %d CPUs, %.3f s, refund_raced %llu, CAS exhausted %llu, parent drops %llu\n",
	       ncpus, (t_end - t_start) / 1e9,
	       (unsigned long long)(stats1[AG_STAT_REFUND_RACED] - stats0[AG_STAT_REFUND_RACED]),
	       (unsigned long long)(stats1[AG_STAT_CAS_EXHAUSTED] - stats0[AG_STAT_CAS_EXHAUSTED]),
	       (unsigned long long)(stats1[AG_STAT_PARENT_DROPPED] - stats0[AG_STAT_PARENT_DROPPED]));
	for (i = 0; i < L__COUNT; i++) {
		const struct level_def *d = &levels[i];
		double burst = (double)(__u64)(d->rate / 2);
		double ideal = burst + d->rate * (double)(t_end - t_start) / 1e9;
		double ideal_left = burst + d->rate * (double)(t_left - t_start) / 1e9;
		__u64 slack = NS + 2;

		printf("#   %-6s %8.0f/s: %llu admitted through it, burst + rate*t = %.0f (%.4f); "
		       "with %.0f left: %.4f\n",
		       d->name, d->rate, (unsigned long long)through[i], ideal, through[i] / ideal,
		       left[i], (through[i] + left[i]) / ideal_left);
		ok = ASSERT_LE(through[i], (__u64)ideal + slack, d->name) &&
		     ASSERT_LE(through[i] + (__u64)left[i], (__u64)ideal_left + slack, d->name) &&
		     (!d->flooded || ASSERT_GE(through[i] + (__u64)left[i],
					       (__u64)(0.99 * ideal_left), d->name)) &&
		     ok;
	}
out:
	free(sh);
	free(w);
	return ok;
}

/*
 * A day quota from every CPU and the consumer at once: the window admits
 * exactly its quota, no more (the count is one word) and no less (what
 * another CPU took back is free again), and the rate beside it pays only
 * for what the quota admitted: its tokens then add up to burst + rate*t.
 */
#define QUOTA_N 300000ULL

static bool test_quota_all_cpus(int ncpus)
{
	struct ag_agent_update u = { .fields = AG_SET_RATE | AG_SET_BURST | AG_SET_UNIT |
					       AG_SET_QUOTA,
				     .rate = 100000, .burst = 1000000, .unit = AG_UNIT_PPS,
				     .quota = QUOTA_N, .quota_window = AG_QW_DAY };
	struct shared *sh = calloc(1, sizeof(*sh));
	struct worker *w = calloc(ncpus + 1, sizeof(*w));
	struct ag_counters before, after;
	struct ag_quota_status q;
	__u64 t_start, t_left, admitted;
	double left = 0, ideal_left;
	struct ag_rule r;
	bool ok = false;
	int i;

	if (!sh || !w)
		goto out;
	pkt_eth(&sh->frame, ETH_P_IP);
	pkt_ipv4(&sh->frame, "10.24.0.1", NULL, IPPROTO_UDP, NULL);
	pkt_udp(&sh->frame, 7);
	pkt_pad_to(&sh->frame, 64);
	pkt_finish(&sh->frame);
	sh->consume_tokens = 1;
	if (!ASSERT_OK(ag_agent_set(ctx, "q-conc", &u, &sh->slot, NULL), "agent") ||
	    !ASSERT_OK(ag_prefix_parse("10.24.0.0/16", &r), "prefix") ||
	    !ASSERT_OK(ag_rule_add(ctx, &r, "q-conc"), "rule") ||
	    !ASSERT_OK(ag_counters_get(ctx, sh->slot, &before), "counters"))
		goto out;
	if (!start_workers(w, sh, ncpus))
		goto out;
	usleep(50000);
	t_start = ag_now_ns();
	ag_bucket_reset(ctx, sh->slot);
	atomic_store(&sh->go, true);
	sleep_ns(RUN_NS);
	atomic_store(&sh->stop, true);
	for (i = 0; i <= ncpus; i++)
		pthread_join(w[i].tid, NULL);
	if (!ASSERT_OK(ag_bucket_tokens(ctx, sh->slot, &left), "tokens") ||
	    !ASSERT_OK(ag_counters_get(ctx, sh->slot, &after), "counters") ||
	    !ASSERT_OK(ag_quota_status(ctx, sh->slot, &q), "quota") ||
	    !ASSERT_EQ(atomic_load(&sh->errors), 0, "worker errors"))
		goto out;
	t_left = ag_now_ns();
	admitted = after.passed_packets - before.passed_packets + atomic_load(&sh->consumed);
	ideal_left = 1000000.0 + 100000.0 * (double)(t_left - t_start) / 1e9;
	if (ideal_left > 1000000.0 + QUOTA_N) /* the burst caps what is left */
		ideal_left = 1000000.0 + QUOTA_N;
	printf("# quota %llu/day: %d CPUs + mmap consumer, %.3f s: %llu admitted (%llu by XDP), "
	       "%llu counted, %.0f rate tokens left (burst + rate*t - admitted, capped at the "
	       "burst: %.0f)\n",
	       QUOTA_N, ncpus, (t_left - t_start) / 1e9, (unsigned long long)admitted,
	       (unsigned long long)(after.passed_packets - before.passed_packets),
	       (unsigned long long)q.used, left,
	       ideal_left - (double)admitted > 1e6 ? 1e6 : ideal_left - (double)admitted);
	/* A day boundary in the run would split the count: then only the
	 * bound is checked. */
	ok = ASSERT_TRUE(q.reset_in_ns > 1000000000ULL ? admitted == QUOTA_N :
							  admitted <= 2 * QUOTA_N,
			 "the window admitted exactly its quota") &&
	     ASSERT_EQ(q.used, QUOTA_N, "the count") &&
	     ASSERT_TRUE(left + 1 >= (ideal_left - (double)admitted > 1e6 ?
					      1e6 : 0.99 * (ideal_left - (double)admitted)),
			 "the rate paid only for what the quota admitted");
out:
	free(sh);
	free(w);
	return ok;
}

#define TALLY_NAME "counters: two agents sharing the counter cache, flooded from every CPU in turns: each frame counted once, reads never go back"

struct tally_shared {
	struct ag_prog *prog;
	struct ag_ctx *ctx;
	struct pkt frame[2];
	__u32 slot[2];
	_Atomic bool go, stop;
	_Atomic __u64 sent[2], errors, reads, backwards;
};

struct tally_worker {
	pthread_t tid;
	int cpu;
	struct tally_shared *sh;
};

static void *tally_sender(void *arg)
{
	struct tally_worker *w = arg;
	struct tally_shared *sh = w->sh;
	int turn = w->cpu & 1;

	pin_to(w->cpu);
	while (!atomic_load(&sh->go))
		;
	while (!atomic_load(&sh->stop)) {
		LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = sh->frame[turn].b,
			    .data_size_in = (__u32)sh->frame[turn].len, .repeat = 50);

		if (bpf_prog_test_run_opts(ag_prog_fd(sh->prog), &o)) {
			atomic_fetch_add(&sh->errors, 1);
			break;
		}
		atomic_fetch_add(&sh->sent[turn], 50);
		turn ^= 1;
	}
	return NULL;
}

/* Reads both agents' counters while the senders run: never fewer than the
 * read before. */
static void *tally_reader(void *arg)
{
	struct tally_worker *w = arg;
	struct tally_shared *sh = w->sh;
	__u64 last[2] = { 0, 0 };
	int i;

	while (!atomic_load(&sh->go))
		;
	while (!atomic_load(&sh->stop)) {
		for (i = 0; i < 2; i++) {
			struct ag_counters c;
			__u64 n;

			if (ag_counters_get(sh->ctx, sh->slot[i], &c)) {
				atomic_fetch_add(&sh->errors, 1);
				return NULL;
			}
			n = c.passed_packets + c.dropped_packets;
			if (n < last[i])
				atomic_fetch_add(&sh->backwards, 1);
			last[i] = n;
		}
		atomic_fetch_add(&sh->reads, 1);
	}
	return NULL;
}

static bool test_tally(int ncpus)
{
	struct ag_open_opts o = { .create = true, .max_agents = AG_TALLY_CACHE + 1, .max_rules = 4 };
	struct ag_agent_update u = { .fields = AG_SET_RATE | AG_SET_BURST, .rate = 5000,
				     .burst = 100 };
	struct tally_shared *sh = calloc(1, sizeof(*sh));
	struct tally_worker *w = calloc(ncpus + 1, sizeof(*w));
	static const char *const src[2] = { "10.20.0.1", "10.20.0.2" };
	struct ag_counters c[2], all0[2], *all = NULL;
	bool ok = false;
	char name[32];
	__u32 i, slot;
	int k, started = 0;

	if (!sh || !w)
		goto out;
	o.pin_root = testenv_pin_root("tally");
	if (!ASSERT_OK(ag_open(&o, &sh->ctx), "open"))
		goto out;
	/* Slots 0 and AG_TALLY_CACHE: one cache entry on each CPU. */
	for (i = 0; i <= AG_TALLY_CACHE; i++) {
		snprintf(name, sizeof(name), "t%u", i);
		if (!ASSERT_OK(ag_agent_set(sh->ctx, name, &u, &slot, NULL), "agent"))
			goto out;
		if (i == 0 || i == AG_TALLY_CACHE)
			sh->slot[i ? 1 : 0] = slot;
	}
	if (!ASSERT_EQ(sh->slot[0] & (AG_TALLY_CACHE - 1), sh->slot[1] & (AG_TALLY_CACHE - 1),
		       "one cache entry"))
		goto out;
	for (k = 0; k < 2; k++) {
		struct ag_rule r;

		snprintf(name, sizeof(name), "t%u", k ? AG_TALLY_CACHE : 0);
		if (!ASSERT_OK(ag_prefix_parse(src[k], &r), "prefix") ||
		    !ASSERT_OK(ag_rule_add(sh->ctx, &r, name), "rule"))
			goto out;
		pkt_eth(&sh->frame[k], ETH_P_IP);
		pkt_ipv4(&sh->frame[k], src[k], NULL, IPPROTO_UDP, NULL);
		pkt_udp(&sh->frame[k], 7);
		pkt_pad_to(&sh->frame[k], 64);
		pkt_finish(&sh->frame[k]);
		if (!ASSERT_OK(ag_counters_get(sh->ctx, sh->slot[k], &c[k]), "counters"))
			goto out;
	}
	if (!ASSERT_OK(ag_prog_load(sh->ctx, &sh->prog), "load"))
		goto out;
	for (k = 0; k <= ncpus; k++, started++) {
		w[k].cpu = k % ncpus;
		w[k].sh = sh;
		if (pthread_create(&w[k].tid, NULL, k < ncpus ? tally_sender : tally_reader, &w[k]))
			break;
	}
	if (started > ncpus) {
		atomic_store(&sh->go, true);
		sleep_ns(RUN_NS);
	}
	atomic_store(&sh->go, true);
	atomic_store(&sh->stop, true);
	for (k = 0; k < started; k++)
		pthread_join(w[k].tid, NULL);
	all = calloc(AG_TALLY_CACHE + 1, sizeof(*all));
	if (!ASSERT_TRUE(started > ncpus, "start the threads") || !all ||
	    !ASSERT_OK(ag_counters_get_all(sh->ctx, all), "counters, all"))
		goto out;
	for (k = 0; k < 2; k++) {
		struct ag_counters now;

		all0[k] = all[sh->slot[k]];
		if (!ASSERT_OK(ag_counters_get(sh->ctx, sh->slot[k], &now), "counters"))
			goto out;
		printf("# agent in slot %u: %llu frames sent, %llu passed + %llu dropped counted "
		       "(all at once: %llu + %llu)\n", sh->slot[k],
		       (unsigned long long)atomic_load(&sh->sent[k]),
		       (unsigned long long)(now.passed_packets - c[k].passed_packets),
		       (unsigned long long)(now.dropped_packets - c[k].dropped_packets),
		       (unsigned long long)all0[k].passed_packets,
		       (unsigned long long)all0[k].dropped_packets);
		c[k].passed_packets = now.passed_packets - c[k].passed_packets;
		c[k].dropped_packets = now.dropped_packets - c[k].dropped_packets;
	}
	printf("# %llu reads while they ran, %llu went back\n",
	       (unsigned long long)atomic_load(&sh->reads),
	       (unsigned long long)atomic_load(&sh->backwards));
	ok = ASSERT_EQ(atomic_load(&sh->errors), 0, "errors") &&
	     ASSERT_TRUE(atomic_load(&sh->sent[0]) > 0 && atomic_load(&sh->sent[1]) > 0,
			 "frames sent to both") &&
	     ASSERT_EQ(c[0].passed_packets + c[0].dropped_packets, atomic_load(&sh->sent[0]),
		       "slot 0: every frame counted once") &&
	     ASSERT_EQ(c[1].passed_packets + c[1].dropped_packets, atomic_load(&sh->sent[1]),
		       "the other slot: every frame counted once") &&
	     ASSERT_EQ(all0[0].passed_packets + all0[0].dropped_packets,
		       atomic_load(&sh->sent[0]), "slot 0, read with all the others") &&
	     ASSERT_EQ(all0[1].passed_packets + all0[1].dropped_packets,
		       atomic_load(&sh->sent[1]), "the other slot, read with all the others") &&
	     ASSERT_TRUE(atomic_load(&sh->reads) > 0, "read while they ran") &&
	     ASSERT_EQ(atomic_load(&sh->backwards), 0, "no read went back");
out:
	free(all);
	if (sh) {
		ag_prog_free(sh->prog);
		ag_close(sh->ctx);
	}
	free(sh);
	free(w);
	return ok;
}

#define QUOTA_NAME "quota: a day's quota from every CPU at once admits exactly it; the rate pays only for those"
#define PATHS_NAME "paths: org -> team -> agents, every level at burst + rate*t, refusals free"

int main(void)
{
	struct ag_open_opts o = { .create = true, .max_agents = 16, .max_rules = 16 };
	/* max_agents holds conc and the path scenario's five buckets */
	size_t n = sizeof(scenarios) / sizeof(scenarios[0]), i;
	int ncpus = libbpf_num_possible_cpus();
	struct ag_agent_update u = { .fields = AG_SET_RATE, .rate = 1000 };
	struct ag_rule r;

	h_require_root();
	h_plan((int)n + 3);
	if (ncpus < 2 || sysconf(_SC_NPROCESSORS_ONLN) < 2) {
		for (i = 0; i < n; i++)
			h_skip(scenarios[i].name, "needs two or more CPUs");
		h_skip(PATHS_NAME, "needs two or more CPUs");
		h_skip(QUOTA_NAME, "needs two or more CPUs");
		h_skip(TALLY_NAME, "needs two or more CPUs");
		return 0;
	}
	o.pin_root = testenv_pin_root("conc");
	if (!ASSERT_OK(ag_open(&o, &ctx), "open") ||
	    !ASSERT_OK(ag_agent_set(ctx, "conc", &u, NULL, NULL), "agent") ||
	    !ASSERT_OK(ag_prefix_parse("10.9.0.0/16", &r), "prefix") ||
	    !ASSERT_OK(ag_rule_add(ctx, &r, "conc"), "rule") ||
	    !ASSERT_OK(ag_prog_load(ctx, &prog), "load"))
		return 1;
	ncpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
	for (i = 0; i < n; i++)
		h_result(scenarios[i].name, run_scenario(&scenarios[i], ncpus));
	h_result(PATHS_NAME, test_paths(ncpus));
	h_result(QUOTA_NAME, test_quota_all_cpus(ncpus));
	h_result(TALLY_NAME, test_tally(ncpus));
	ag_prog_free(prog);
	ag_close(ctx);
	return h_exit();
}
