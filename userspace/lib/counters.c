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

int ag_counters_get(struct ag_ctx *ctx, __u32 slot, struct ag_counters *sum)
{
	struct ag_counters *percpu = calloc(ctx->ncpus, sizeof(*percpu));
	int cpu, err = 0;

	if (!percpu)
		return ag_err(ENOMEM, "out of memory");
	memset(sum, 0, sizeof(*sum));
	if (bpf_map_lookup_elem(ctx->fds[AG_M_COUNTERS], &slot, percpu))
		err = ag_err(errno, "cannot read counters of slot %u: %s", slot, strerror(errno));
	for (cpu = 0; !err && cpu < ctx->ncpus; cpu++)
		add_counters(sum, &percpu[cpu]);
	free(percpu);
	return err;
}

int ag_refusals_get(struct ag_ctx *ctx, __u32 slot, struct ag_refusals *sum)
{
	struct ag_refusals *percpu;
	int cpu, err = 0;

	memset(sum, 0, sizeof(*sum));
	if (ctx->fds[AG_M_REFUSALS] < 0) /* pins that predate it: none counted */
		return 0;
	percpu = calloc(ctx->ncpus, sizeof(*percpu));
	if (!percpu)
		return ag_err(ENOMEM, "out of memory");
	if (bpf_map_lookup_elem(ctx->fds[AG_M_REFUSALS], &slot, percpu))
		err = ag_err(errno, "cannot read refusals of slot %u: %s", slot, strerror(errno));
	for (cpu = 0; !err && cpu < ctx->ncpus; cpu++) {
		sum->parent_packets += percpu[cpu].parent_packets;
		sum->parent_bytes += percpu[cpu].parent_bytes;
		sum->quota_packets += percpu[cpu].quota_packets;
		sum->quota_bytes += percpu[cpu].quota_bytes;
	}
	free(percpu);
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

int ag_counters_get_all(struct ag_ctx *ctx, struct ag_counters *out)
{
	struct counters_fold f = { out, ctx->max_agents, ctx->ncpus };

	memset(out, 0, sizeof(*out) * ctx->max_agents);
	return read_percpu_array(ctx, ctx->fds[AG_M_COUNTERS], ctx->max_agents,
				 sizeof(struct ag_counters), fold_counters, &f);
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
