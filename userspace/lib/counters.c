// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Per-agent and global per-CPU counters, summed over every possible CPU. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "internal.h"

#define AG_STAT_NAME_ENTRY(id, name, kind) [AG_STAT_##id] = name,
#define AG_STAT_KIND_ENTRY(id, name, kind) [AG_STAT_##id] = kind,
static const char *const stat_names[AG_STAT__MAX] = { AG_STAT_LIST(AG_STAT_NAME_ENTRY) };
static const char stat_kinds[AG_STAT__MAX] = { AG_STAT_LIST(AG_STAT_KIND_ENTRY) };

const char *ag_stat_name(unsigned int stat)
{
	return stat < AG_STAT__MAX ? stat_names[stat] : "unknown";
}

bool ag_stat_is_parse_error(unsigned int stat)
{
	return stat < AG_STAT__MAX && stat_kinds[stat] == 'p';
}

static void add_counters(struct ag_counters *sum, const struct ag_counters *c)
{
	sum->passed_packets += c->passed_packets;
	sum->passed_bytes += c->passed_bytes;
	sum->dropped_packets += c->dropped_packets;
	sum->dropped_bytes += c->dropped_bytes;
	sum->would_drop_packets += c->would_drop_packets;
	sum->would_drop_bytes += c->would_drop_bytes;
}

static void add_refusals(struct ag_refusals *sum, const struct ag_refusals *r)
{
	sum->parent_packets += r->parent_packets;
	sum->parent_bytes += r->parent_bytes;
	sum->quota_packets += r->quota_packets;
	sum->quota_bytes += r->quota_bytes;
}

/* The older layout's per-CPU counts of slot, where still pinned. */
static int legacy_get(struct ag_ctx *ctx, __u32 slot, struct ag_tally *sum)
{
	size_t size = sizeof(struct ag_counters) > sizeof(struct ag_refusals) ?
			      sizeof(struct ag_counters) :
			      sizeof(struct ag_refusals);
	char *percpu;
	int cpu;

	if (ctx->legacy_counters_fd < 0 && ctx->legacy_refusals_fd < 0)
		return 0;
	percpu = calloc(ctx->ncpus, size);
	if (!percpu)
		return ag_err(ENOMEM, "out of memory");
	if (ctx->legacy_counters_fd >= 0 &&
	    !bpf_map_lookup_elem(ctx->legacy_counters_fd, &slot, percpu))
		for (cpu = 0; cpu < ctx->ncpus; cpu++)
			add_counters(&sum->c, (struct ag_counters *)percpu + cpu);
	if (ctx->legacy_refusals_fd >= 0 &&
	    !bpf_map_lookup_elem(ctx->legacy_refusals_fd, &slot, percpu))
		for (cpu = 0; cpu < ctx->ncpus; cpu++)
			add_refusals(&sum->r, (struct ag_refusals *)percpu + cpu);
	free(percpu);
	return 0;
}

static __u32 slot_gen_now(struct ag_ctx *ctx, __u32 slot)
{
	struct ag_bucket copy = {};

	if (ctx->buckets)
		return atomic_load_explicit((_Atomic __u32 *)&ctx->buckets[slot].gen,
					    memory_order_acquire);
	bpf_map_lookup_elem(ctx->fds[AG_M_BUCKETS], &slot, &copy);
	return copy.gen;
}

/* slot's ag_tally: through the mapping (each word an atomic load), else a
 * lookup. */
static int tally_read(struct ag_ctx *ctx, __u32 slot, struct ag_tally *t)
{
	const __u64 *src;
	__u64 *dst = (__u64 *)t;
	size_t i;

	if (!ctx->tally) {
		if (bpf_map_lookup_elem(ctx->fds[AG_M_TALLY], &slot, t))
			return ag_err(errno, "cannot read counters of slot %u: %s", slot,
				      strerror(errno));
		return 0;
	}
	src = (const __u64 *)&ctx->tally[slot];
	for (i = 0; i < sizeof(*t) / sizeof(__u64); i++)
		dst[i] = atomic_load_explicit((_Atomic __u64 *)&src[i], memory_order_relaxed);
	return 0;
}

/* Every CPU's entry a and b saw alike, and none moving its counts. */
static bool entries_stable(const struct ag_tally_ent *a, const struct ag_tally_ent *b, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (a[i].seq != b[i].seq || (a[i].seq & 1))
			return false;
	return true;
}

static void add_entry(struct ag_tally *sum, const struct ag_tally_ent *e)
{
	add_counters(&sum->c, &e->c);
	add_refusals(&sum->r, &e->r);
}

#define TALLY_TRIES 16

/*
 * A slot's counts (abi.h, "ag_tally"): the CPUs' cache entries that hold
 * it, then its ag_tally, then the entries again; when an entry moved its
 * counts out in between (its seq changed), again. Each part only grows
 * until it moves, and what moved is in the tally read after: the sum is
 * never more than the counts at the second read nor less than at the
 * first, so successive reads never go back.
 */
static int tally_get(struct ag_ctx *ctx, __u32 slot, struct ag_tally *sum)
{
	__u32 k = slot & (AG_TALLY_CACHE - 1), gen;
	struct ag_tally_ent *a, *b;
	struct ag_tally t;
	int err = 0, try, cpu;

	memset(sum, 0, sizeof(*sum));
	if (slot >= ctx->max_agents)
		return ag_err(ERANGE, "slot %u out of range (%u slots)", slot, ctx->max_agents);
	err = legacy_get(ctx, slot, sum);
	if (err || ctx->fds[AG_M_TALLY] < 0) /* pins of an older layout */
		return err;
	a = calloc(2 * (size_t)ctx->ncpus, sizeof(*a));
	if (!a)
		return ag_err(ENOMEM, "out of memory");
	b = a + ctx->ncpus;
	gen = slot_gen_now(ctx, slot);
	for (try = 0; !err && try < TALLY_TRIES; try++) {
		if (ctx->fds[AG_M_TALLY_CACHE] >= 0 &&
		    bpf_map_lookup_elem(ctx->fds[AG_M_TALLY_CACHE], &k, a))
			err = ag_err(errno, "cannot read the counters' cache: %s", strerror(errno));
		if (!err)
			err = tally_read(ctx, slot, &t);
		if (!err && ctx->fds[AG_M_TALLY_CACHE] >= 0 &&
		    bpf_map_lookup_elem(ctx->fds[AG_M_TALLY_CACHE], &k, b))
			err = ag_err(errno, "cannot read the counters' cache: %s", strerror(errno));
		if (ctx->fds[AG_M_TALLY_CACHE] < 0 || entries_stable(a, b, ctx->ncpus))
			break;
	}
	if (!err) {
		add_counters(&sum->c, &t.c);
		add_refusals(&sum->r, &t.r);
		for (cpu = 0; ctx->fds[AG_M_TALLY_CACHE] >= 0 && cpu < ctx->ncpus; cpu++)
			if (a[cpu].slot1 == slot + 1 && a[cpu].gen == gen)
				add_entry(sum, &a[cpu]);
	}
	free(a);
	return err;
}

int ag_counters_get(struct ag_ctx *ctx, __u32 slot, struct ag_counters *sum)
{
	struct ag_tally t;
	int err = tally_get(ctx, slot, &t);

	*sum = t.c;
	return err;
}

int ag_refusals_get(struct ag_ctx *ctx, __u32 slot, struct ag_refusals *sum)
{
	struct ag_tally t;
	int err = tally_get(ctx, slot, &t);

	*sum = t.r;
	return err;
}

int ag_tally_zero(struct ag_ctx *ctx, __u32 slot)
{
	struct ag_tally zero = {};
	void *zeros;
	int err = 0;

	if (ctx->fds[AG_M_TALLY] >= 0 &&
	    bpf_map_update_elem(ctx->fds[AG_M_TALLY], &slot, &zero, BPF_ANY))
		return ag_err(errno, "cannot reset counters of slot %u: %s", slot, strerror(errno));
	if (ctx->legacy_counters_fd < 0 && ctx->legacy_refusals_fd < 0)
		return 0;
	zeros = calloc(ctx->ncpus, sizeof(struct ag_counters));
	if (!zeros)
		return ag_err(ENOMEM, "out of memory");
	if (ctx->legacy_counters_fd >= 0)
		bpf_map_update_elem(ctx->legacy_counters_fd, &slot, zeros, BPF_ANY);
	if (ctx->legacy_refusals_fd >= 0)
		bpf_map_update_elem(ctx->legacy_refusals_fd, &slot, zeros, BPF_ANY);
	free(zeros);
	return err;
}

/* Batched lookup of keys [0, n) of a per-CPU array whose values are
 * value_size bytes per CPU; calls fold(key, percpu_values) for each. */
static int read_percpu_array(struct ag_ctx *ctx, int fd, __u32 n, size_t value_size,
			     void (*fold)(void *arg, __u32 key, const void *vals), void *arg)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	const __u32 chunk_max = 1024;
	size_t stride = value_size * ctx->ncpus;
	__u32 *keys = calloc(chunk_max, sizeof(*keys));
	char *vals = calloc(chunk_max, stride);
	__u32 done = 0, batch = 0, count, i;
	void *in = NULL;
	int err = 0;

	if (!keys || !vals) {
		err = ag_err(ENOMEM, "out of memory");
		goto out;
	}
	while (done < n) {
		count = n - done < chunk_max ? n - done : chunk_max;
		if (bpf_map_lookup_batch(fd, in, &batch, keys, vals, &count, &opts) &&
		    errno != ENOENT) {
			err = ag_err(errno, "batch lookup failed: %s", strerror(errno));
			goto out;
		}
		for (i = 0; i < count; i++)
			fold(arg, keys[i], vals + i * stride);
		done += count;
		if (count == 0)
			break;
		in = &batch;
	}
out:
	free(keys);
	free(vals);
	return err;
}

struct counters_fold {
	struct ag_counters *out;
	__u32 n;
	int ncpus;
};

static void fold_counters(void *arg, __u32 key, const void *vals)
{
	struct counters_fold *f = arg;
	const struct ag_counters *c = vals;
	int cpu;

	if (key >= f->n)
		return;
	for (cpu = 0; cpu < f->ncpus; cpu++)
		add_counters(&f->out[key], &c[cpu]);
}

/* Every CPU's cache entries, key by key: ncpus entries each. */
struct cache_fold {
	struct ag_tally_ent *out;
	int ncpus;
};

static void copy_entries(void *arg, __u32 key, const void *vals)
{
	struct cache_fold *f = arg;

	if (key < AG_TALLY_CACHE)
		memcpy(&f->out[(size_t)key * f->ncpus], vals,
		       sizeof(struct ag_tally_ent) * (size_t)f->ncpus);
}

/* The keys slots can use: fewer than AG_TALLY_CACHE with fewer slots. */
static __u32 cache_keys(const struct ag_ctx *ctx)
{
	return ctx->max_agents < AG_TALLY_CACHE ? ctx->max_agents : AG_TALLY_CACHE;
}

static int read_cache(struct ag_ctx *ctx, struct ag_tally_ent *out)
{
	struct cache_fold f = { out, ctx->ncpus };

	return read_percpu_array(ctx, ctx->fds[AG_M_TALLY_CACHE], cache_keys(ctx),
				 sizeof(struct ag_tally_ent), copy_entries, &f);
}

/* Every slot's ag_tally counters added to out, in batches: the kernel
 * copies them faster than a first read faults the mapping's pages in. */
static int add_tallies(struct ag_ctx *ctx, struct ag_counters *out)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	const __u32 chunk = 4096;
	__u32 *keys, done = 0, batch = 0, count, i;
	struct ag_tally *vals;
	void *in = NULL;
	int err = 0;

	keys = calloc(chunk, sizeof(*keys));
	vals = calloc(chunk, sizeof(*vals));
	while (keys && vals && done < ctx->max_agents) {
		count = ctx->max_agents - done < chunk ? ctx->max_agents - done : chunk;
		if (bpf_map_lookup_batch(ctx->fds[AG_M_TALLY], in, &batch, keys, vals, &count,
					 &opts) &&
		    errno != ENOENT) {
			err = ag_err(errno, "batch lookup failed: %s", strerror(errno));
			break;
		}
		for (i = 0; i < count; i++)
			if (keys[i] < ctx->max_agents)
				add_counters(&out[keys[i]], &vals[i].c);
		done += count;
		if (!count)
			break;
		in = &batch;
	}
	if (!keys || !vals)
		err = ag_err(ENOMEM, "out of memory");
	free(keys);
	free(vals);
	return err;
}

int ag_counters_get_all(struct ag_ctx *ctx, struct ag_counters *out)
{
	struct counters_fold f = { out, ctx->max_agents, ctx->ncpus };
	size_t n = (size_t)cache_keys(ctx) * ctx->ncpus, i;
	struct ag_tally_ent *a = NULL, *b;
	struct ag_tally t;
	__u32 slot;
	int err = 0;

	memset(out, 0, sizeof(*out) * ctx->max_agents);
	if (ctx->legacy_counters_fd >= 0) /* an older layout's counts, frozen */
		err = read_percpu_array(ctx, ctx->legacy_counters_fd, ctx->max_agents,
					sizeof(struct ag_counters), fold_counters, &f);
	if (err || ctx->fds[AG_M_TALLY] < 0)
		return err;
	if (ctx->fds[AG_M_TALLY_CACHE] >= 0) {
		a = calloc(2 * n, sizeof(*a));
		if (!a)
			return ag_err(ENOMEM, "out of memory");
		err = read_cache(ctx, a);
	}
	if (!err)
		err = add_tallies(ctx, out);
	if (err || !a)
		goto out;
	b = a + n;
	err = read_cache(ctx, b);
	for (i = 0; !err && i < n; i++) {
		const struct ag_tally_ent *e = &a[i];

		slot = e->slot1 - 1;
		if (entries_stable(e, &b[i], 1)) {
			if (e->slot1 && slot < ctx->max_agents && e->gen == slot_gen_now(ctx, slot))
				add_counters(&out[slot], &e->c);
			continue;
		}
		/* Moving while it was read: its slots, each read alone. */
		if (e->slot1 && slot < ctx->max_agents && !ag_counters_get(ctx, slot, &t.c))
			out[slot] = t.c;
		slot = b[i].slot1 - 1;
		if (b[i].slot1 && slot < ctx->max_agents && !ag_counters_get(ctx, slot, &t.c))
			out[slot] = t.c;
	}
out:
	free(a);
	return err;
}

struct stats_fold {
	__u64 *out;
	int ncpus;
};

static void fold_stats(void *arg, __u32 key, const void *vals)
{
	struct stats_fold *f = arg;
	const __u64 *v = vals;
	int cpu;

	if (key >= AG_STAT__MAX)
		return;
	for (cpu = 0; cpu < f->ncpus; cpu++)
		f->out[key] += v[cpu];
}

int ag_stats_get(struct ag_ctx *ctx, __u64 out[AG_STAT__MAX])
{
	struct stats_fold f = { out, ctx->ncpus };

	memset(out, 0, sizeof(__u64) * AG_STAT__MAX);
	return read_percpu_array(ctx, ctx->fds[AG_M_STATS], AG_STAT__MAX, sizeof(__u64),
				 fold_stats, &f);
}
