// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Parent links: which bucket is whose parent. The record is each bucket's
 * ag_agent_info.parent (agents.c writes it, under the lock); ag_parents,
 * which the datapath and consumers read, follows it. Here: the link
 * writes, the checks a new link passes (a parent, no cycle, paths of at
 * most AG_PATH_MAX buckets) and the path walk.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "internal.h"

__u64 ag_parent_up(struct ag_ctx *ctx, __u32 slot)
{
	__u64 up = 0;

	if (slot >= ctx->max_agents)
		return 0;
	if (ctx->parents)
		return atomic_load_explicit(&ctx->parents[slot], memory_order_acquire);
	if (ctx->fds[AG_M_PARENTS] >= 0 &&
	    bpf_map_lookup_elem(ctx->fds[AG_M_PARENTS], &slot, &up))
		return 0;
	return up;
}

int ag_parent_link(struct ag_ctx *ctx, __u32 slot, __u64 up)
{
	if (slot >= ctx->max_agents)
		return ag_err(ERANGE, "slot %u out of range (%u slots)", slot, ctx->max_agents);
	if (!ctx->parents) {
		if (!up)
			return 0; /* no map, so no link to clear */
		return ag_err(ENOENT,
			      "map %s is not pinned at %s (pins of an older version): start "
			      "agentgated or run 'agentgate attach DEV' to add it",
			      AG_MAP_PARENTS, ctx->pin_root);
	}
	atomic_store_explicit(&ctx->parents[slot], up, memory_order_release);
	return 0;
}

int ag_bucket_path(struct ag_ctx *ctx, __u32 slot, __u32 slots[AG_PATH_MAX], int *n)
{
	__u64 up;

	if (slot >= ctx->max_agents)
		return ag_err(ERANGE, "slot %u out of range (%u slots)", slot, ctx->max_agents);
	slots[0] = slot;
	for (*n = 1; *n < AG_PATH_MAX; (*n)++) {
		up = ag_parent_up(ctx, slots[*n - 1]);
		if (!up || up > ctx->max_agents)
			break;
		slots[*n] = (__u32)up - 1;
	}
	return 0;
}

/* Every bucket's parent record, slot -> parent + 1, from ag_names. */
struct links {
	__u32 *up;
	__u32 max;
};

static int note_link(void *arg, __u32 slot, const struct ag_agent_info *info)
{
	struct links *l = arg;

	if (slot < l->max && info->slot == slot && info->parent <= l->max)
		l->up[slot] = info->parent;
	return 0;
}

static int read_links(struct ag_ctx *ctx, struct links *l)
{
	int err;

	l->max = ctx->max_agents;
	l->up = calloc(l->max ? l->max : 1, sizeof(*l->up));
	if (!l->up)
		return ag_err(ENOMEM, "out of memory");
	err = ag_walk_names(ctx, note_link, l);
	if (err) {
		free(l->up);
		l->up = NULL;
	}
	return err;
}

/* Buckets on the longest path down from slot to an agent, slot included. */
static int subtree_height(struct ag_ctx *ctx, __u32 slot, int *height)
{
	struct links l;
	__u32 s, at;
	int d, err = read_links(ctx, &l);

	if (err)
		return err;
	*height = 1;
	for (s = 0; s < l.max; s++) {
		/* How far above s is slot, if it is above s at all? */
		for (at = s, d = 0; d < AG_PATH_MAX && l.up[at]; d++) {
			at = l.up[at] - 1;
			if (at == slot) {
				if (d + 2 > *height)
					*height = d + 2;
				break;
			}
		}
	}
	free(l.up);
	return 0;
}

int ag_parent_children(struct ag_ctx *ctx, __u32 slot, size_t *n)
{
	struct links l;
	__u32 s;
	int err = read_links(ctx, &l);

	if (err)
		return err;
	*n = 0;
	for (s = 0; s < l.max; s++)
		*n += l.up[s] == slot + 1;
	free(l.up);
	return 0;
}

static int read_info(struct ag_ctx *ctx, __u32 slot, struct ag_agent_info *info)
{
	if (bpf_map_lookup_elem(ctx->fds[AG_M_NAMES], &slot, info) || info->slot != slot)
		return ag_err(EUCLEAN, "slot %u is named as a parent but holds no bucket (run "
				       "any locked change to repair)",
			      slot);
	return 0;
}

int ag_parent_resolve(struct ag_ctx *ctx, const char *parent, __u32 self, bool self_parent,
		      __u32 *up)
{
	struct ag_agent p;
	__u32 at;
	int depth = 1, height = 1, err;

	*up = 0;
	if (!parent || !*parent)
		return 0;
	err = ag_agent_get(ctx, parent, &p);
	if (err == -ENOENT)
		return ag_err(ENOENT, "unknown parent '%s' (create it with 'agentgate parent set')",
			      parent);
	if (err)
		return err;
	if (!p.is_parent)
		return ag_err(EINVAL, "'%s' is an agent: only a parent can be a parent", parent);
	if (!ctx->parents)
		return ag_parent_link(ctx, p.slot, 1); /* the missing-map error */
	if (p.slot == self)
		return ag_err(ELOOP, "'%s' cannot be its own parent", parent);
	/* Up from the parent: no cycle through self, and how deep it is. */
	for (at = p.slot; ag_parent_up(ctx, at); depth++) {
		struct ag_agent_info info;

		at = (__u32)ag_parent_up(ctx, at) - 1;
		if (at == self)
			return ag_err(ELOOP, "'%s' is below this bucket: the link would make a cycle",
				      parent);
		if (depth >= AG_PATH_MAX)
			return ag_err(EUCLEAN, "the parents above '%s' form a path longer than %d",
				      parent, AG_PATH_MAX);
		err = read_info(ctx, at, &info);
		if (err)
			return err;
	}
	if (self_parent && self != UINT32_MAX) {
		err = subtree_height(ctx, self, &height);
		if (err)
			return err;
	}
	if (depth + height > AG_PATH_MAX)
		return ag_err(EINVAL,
			      "under '%s' a path would hold %d buckets; at most %d (an agent and "
			      "%d parents above it)",
			      parent, depth + height, AG_PATH_MAX, AG_PATH_MAX - 1);
	*up = p.slot + 1;
	return 0;
}

int ag_refusals_zero(struct ag_ctx *ctx, __u32 slot)
{
	void *zeros;
	int err = 0;

	if (ctx->fds[AG_M_REFUSALS] < 0)
		return 0;
	zeros = calloc(ctx->ncpus, sizeof(struct ag_refusals));
	if (!zeros)
		return ag_err(ENOMEM, "out of memory");
	if (bpf_map_update_elem(ctx->fds[AG_M_REFUSALS], &slot, zeros, BPF_ANY))
		err = ag_err(errno, "cannot reset refusals of slot %u: %s", slot, strerror(errno));
	free(zeros);
	return err;
}
