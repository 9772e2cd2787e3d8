// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Budgets: parent links and long-window quotas (docs/BUDGETS.md).
 *
 * Parent links: which bucket is whose parent. The record is each bucket's
 * ag_agent_info.parent (agents.c writes it, under the lock); ag_budgets' up,
 * which the datapath and consumers read, follows it. Here: the link
 * writes, the checks a new link passes (a parent, no cycle, paths of at
 * most AG_PATH_MAX buckets) and the path walk.
 *
 * Quotas: the configuration word (limit and window), written whole, which
 * is its own record; the count in the current window, by compare-and-swap
 * as the datapath keeps it, on the TAI clock as the datapath reads it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bpf/bpf.h>

#include "agentgate/gcra.h"
#include "internal.h"

__u64 ag_parent_up(struct ag_ctx *ctx, __u32 slot)
{
	struct ag_budget b = {};

	if (slot >= ctx->max_agents)
		return 0;
	if (ctx->budgets)
		return atomic_load_explicit(ag_atomic_word(&ctx->budgets[slot].up),
					    memory_order_acquire);
	if (ctx->fds[AG_M_BUDGETS] >= 0 &&
	    bpf_map_lookup_elem(ctx->fds[AG_M_BUDGETS], &slot, &b))
		return 0;
	return b.up;
}

__u32 ag_bucket_parent(struct ag_ctx *ctx, __u32 slot)
{
	__u64 up = ag_parent_up(ctx, slot);

	return up <= ctx->max_agents ? (__u32)up : 0;
}

int ag_budgets_missing(struct ag_ctx *ctx)
{
	return ag_err(ENOENT,
		      "map %s is not pinned at %s (pins of an older version): start agentgated "
		      "or run 'agentgate attach DEV' to add it",
		      AG_MAP_BUDGETS, ctx->pin_root);
}

int ag_parent_link(struct ag_ctx *ctx, __u32 slot, __u64 up)
{
	if (slot >= ctx->max_agents)
		return ag_err(ERANGE, "slot %u out of range (%u slots)", slot, ctx->max_agents);
	if (!ctx->budgets) {
		if (!up)
			return 0; /* no map, so no link to clear */
		return ag_budgets_missing(ctx);
	}
	atomic_store_explicit(ag_atomic_word(&ctx->budgets[slot].up), up, memory_order_release);
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
	if (ag_names_read(ctx, slot, info))
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
	if (!ctx->budgets)
		return ag_budgets_missing(ctx);
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

/* ---- quotas ---------------------------------------------------------------- */

static struct ag_budget *budget_at(struct ag_ctx *ctx, __u32 slot)
{
	return ctx->budgets && slot < ctx->max_agents ? &ctx->budgets[slot] : NULL;
}

int ag_quota_look(struct ag_ctx *ctx, __u32 slot, __u64 tokens, __u64 tai_ns,
		  struct ag_quota_step *q)
{
	struct ag_budget *b = budget_at(ctx, slot);
	__u64 conf, nw;

	memset(q, 0, sizeof(*q));
	if (!b)
		return 1;
	conf = atomic_load_explicit(ag_atomic_word(&b->quota_conf), memory_order_acquire);
	q->limit = AG_QUOTA_LIMIT(conf);
	q->window_ns = ag_quota_window_ns(AG_QUOTA_WINDOW(conf));
	if (!q->limit || !q->window_ns)
		return 1;
	q->on = true;
	q->tokens = tokens;
	q->tai_ns = tai_ns;
	q->idx = ag_quota_index(tai_ns, q->window_ns);
	q->seen = atomic_load_explicit(ag_atomic_word(&b->quota_used), memory_order_acquire);
	return ag_quota_admit(q->seen, q->idx, tokens, q->limit, &nw);
}

int ag_quota_take(struct ag_ctx *ctx, __u32 slot, struct ag_quota_step *q)
{
	struct ag_budget *b = budget_at(ctx, slot);
	__u64 nw;

	if (!q->on || !q->tokens)
		return 1;
	for (;;) {
		if (!ag_quota_admit(q->seen, q->idx, q->tokens, q->limit, &nw))
			return 0;
		if (atomic_compare_exchange_strong_explicit(ag_atomic_word(&b->quota_used),
							    &q->seen, nw, memory_order_acq_rel,
							    memory_order_acquire)) {
			q->taken = nw;
			q->seen = nw;
			return 1;
		}
	}
}

void ag_quota_give_back(struct ag_ctx *ctx, __u32 slot, struct ag_quota_step *q)
{
	struct ag_budget *b = budget_at(ctx, slot);
	__u64 w;

	if (!q->taken)
		return;
	w = atomic_load_explicit(ag_atomic_word(&b->quota_used), memory_order_acquire);
	/* A new window began meanwhile: the count went with the old one. */
	while ((w >> AG_QUOTA_USED_BITS) == (q->taken >> AG_QUOTA_USED_BITS) &&
	       (w & AG_QUOTA_USED_MASK) >= q->tokens &&
	       !atomic_compare_exchange_weak_explicit(ag_atomic_word(&b->quota_used), &w,
						      w - q->tokens, memory_order_acq_rel,
						      memory_order_acquire))
		;
	q->taken = 0;
}

void ag_quota_add(struct ag_ctx *ctx, __u32 slot, __u64 tokens, __u64 tai_ns,
		  struct ag_quota_step *q)
{
	struct ag_budget *b;
	__u64 w, used, nw;

	ag_quota_look(ctx, slot, 0, tai_ns, q);
	if (!q->on)
		return;
	b = &ctx->budgets[slot];
	w = q->seen;
	do {
		used = ag_quota_used(w, q->idx);
		/* Past the limit is fine (the rest of the window is refused), past
		 * the word's field is not. */
		used = tokens > AG_QUOTA_USED_MASK - used ? AG_QUOTA_USED_MASK : used + tokens;
		nw = (q->idx << AG_QUOTA_USED_BITS) | used;
	} while (!atomic_compare_exchange_weak_explicit(ag_atomic_word(&b->quota_used), &w, nw,
							 memory_order_acq_rel, memory_order_acquire));
	q->seen = nw;
}

void ag_quota_state(const struct ag_quota_step *q, double *remaining, __u64 *reset_in_ns)
{
	__u64 used = ag_quota_used(q->taken ? q->taken : q->seen, q->idx);

	*remaining = used >= q->limit ? (double)q->limit - (double)used :
					(double)(q->limit - used);
	*reset_in_ns = ag_quota_reset_in(q->tai_ns, q->window_ns);
}

int ag_quota_set(struct ag_ctx *ctx, __u32 slot, __u64 limit, enum ag_quota_window window)
{
	struct ag_budget *b = budget_at(ctx, slot);
	__u64 conf = limit ? AG_QUOTA_CONF(limit, window) : 0, old;

	if (!b)
		return conf ? ag_budgets_missing(ctx) : 0;
	old = atomic_load_explicit(ag_atomic_word(&b->quota_conf), memory_order_acquire);
	if (old == conf)
		return 0;
	/* Another window length: its count starts afresh. */
	if (!conf || AG_QUOTA_WINDOW(old) != window)
		atomic_store_explicit(ag_atomic_word(&b->quota_used), 0, memory_order_release);
	atomic_store_explicit(ag_atomic_word(&b->quota_conf), conf, memory_order_release);
	return 0;
}

void ag_quota_get(struct ag_ctx *ctx, __u32 slot, __u64 *limit, enum ag_quota_window *window)
{
	struct ag_budget *b = budget_at(ctx, slot), copy = {};
	__u64 conf;

	if (b) {
		conf = atomic_load_explicit(ag_atomic_word(&b->quota_conf), memory_order_acquire);
	} else {
		if (ctx->fds[AG_M_BUDGETS] >= 0)
			bpf_map_lookup_elem(ctx->fds[AG_M_BUDGETS], &slot, &copy);
		conf = copy.quota_conf;
	}
	*limit = AG_QUOTA_LIMIT(conf);
	*window = (enum ag_quota_window)AG_QUOTA_WINDOW(conf);
}

int ag_quota_status(struct ag_ctx *ctx, __u32 slot, struct ag_quota_status *out)
{
	struct ag_budget *b = budget_at(ctx, slot), copy = {};
	__u64 tai = ag_tai_ns(), wns;

	memset(out, 0, sizeof(*out));
	if (slot >= ctx->max_agents)
		return ag_err(ERANGE, "slot %u out of range (%u slots)", slot, ctx->max_agents);
	if (!b && ctx->fds[AG_M_BUDGETS] >= 0 &&
	    bpf_map_lookup_elem(ctx->fds[AG_M_BUDGETS], &slot, &copy))
		return ag_err(errno, "cannot read %s: %s", AG_MAP_BUDGETS, strerror(errno));
	if (b) {
		copy.quota_conf = atomic_load(ag_atomic_word(&b->quota_conf));
		copy.quota_used = atomic_load(ag_atomic_word(&b->quota_used));
	}
	out->limit = AG_QUOTA_LIMIT(copy.quota_conf);
	out->window = (enum ag_quota_window)AG_QUOTA_WINDOW(copy.quota_conf);
	wns = ag_quota_window_ns(out->window);
	if (!out->limit || !wns)
		return 0;
	out->used = ag_quota_used(copy.quota_used, ag_quota_index(tai, wns));
	out->reset_in_ns = ag_quota_reset_in(tai, wns);
	return 0;
}

int ag_quota_word(struct ag_ctx *ctx, __u32 slot, __u64 *word)
{
	struct ag_budget *b = budget_at(ctx, slot), copy = {};

	*word = 0;
	if (slot >= ctx->max_agents)
		return ag_err(ERANGE, "slot %u out of range (%u slots)", slot, ctx->max_agents);
	if (b) {
		*word = atomic_load_explicit(ag_atomic_word(&b->quota_used), memory_order_acquire);
		return 0;
	}
	if (ctx->fds[AG_M_BUDGETS] < 0)
		return 0;
	if (bpf_map_lookup_elem(ctx->fds[AG_M_BUDGETS], &slot, &copy))
		return ag_err(errno, "cannot read %s: %s", AG_MAP_BUDGETS, strerror(errno));
	*word = copy.quota_used;
	return 0;
}

int ag_quota_shift(struct ag_ctx *ctx, __u32 slot, __u64 idx, __s64 delta)
{
	struct ag_budget *b = budget_at(ctx, slot);
	__u64 w, used, nw;

	if (slot >= ctx->max_agents)
		return ag_err(ERANGE, "slot %u out of range (%u slots)", slot, ctx->max_agents);
	if (!b)
		return ag_budgets_missing(ctx);
	w = atomic_load_explicit(ag_atomic_word(&b->quota_used), memory_order_acquire);
	do {
		if ((w >> AG_QUOTA_USED_BITS) > idx)
			return 0; /* a later window runs already */
		used = ag_quota_used(w, idx);
		if (delta < 0)
			used = (__u64)-delta > used ? 0 : used - (__u64)-delta;
		else
			used = (__u64)delta > AG_QUOTA_USED_MASK - used ? AG_QUOTA_USED_MASK :
									 used + (__u64)delta;
		nw = (idx << AG_QUOTA_USED_BITS) | used;
	} while (!atomic_compare_exchange_weak_explicit(ag_atomic_word(&b->quota_used), &w, nw,
							 memory_order_acq_rel, memory_order_acquire));
	return 0;
}

int ag_quota_restore(struct ag_ctx *ctx, __u32 slot, __u64 word)
{
	struct ag_budget *b = budget_at(ctx, slot);
	__u64 conf, w, wns, idx = word >> AG_QUOTA_USED_BITS;

	if (slot >= ctx->max_agents)
		return ag_err(ERANGE, "slot %u out of range (%u slots)", slot, ctx->max_agents);
	if (!b)
		return ag_budgets_missing(ctx);
	conf = atomic_load_explicit(ag_atomic_word(&b->quota_conf), memory_order_acquire);
	wns = ag_quota_window_ns(AG_QUOTA_WINDOW(conf));
	/* Only a count of the window now running: an older one has ended. */
	if (!AG_QUOTA_LIMIT(conf) || !wns || idx != ag_quota_index(ag_tai_ns(), wns))
		return 0;
	w = atomic_load_explicit(ag_atomic_word(&b->quota_used), memory_order_acquire);
	while (ag_quota_used(w, idx) < (word & AG_QUOTA_USED_MASK) &&
	       !atomic_compare_exchange_weak_explicit(ag_atomic_word(&b->quota_used), &w, word,
						      memory_order_acq_rel, memory_order_acquire))
		;
	return 0;
}

int ag_quota_check(__u64 limit, enum ag_quota_window window)
{
	if (!limit)
		return 0;
	if (limit > AG_QUOTA_MAX)
		return ag_err(EINVAL, "quota %llu out of range (1 to %llu tokens a window)",
			      (unsigned long long)limit, (unsigned long long)AG_QUOTA_MAX);
	if (window <= AG_QW_NONE || window >= AG_QW__COUNT)
		return ag_err(EINVAL, "quota window must be hour, day or 30d");
	return 0;
}

static const char *const window_names[AG_QW__COUNT] = {
	[AG_QW_NONE] = "none", [AG_QW_HOUR] = "hour", [AG_QW_DAY] = "day", [AG_QW_30D] = "30d",
};

const char *ag_quota_window_name(enum ag_quota_window w)
{
	return (unsigned int)w < AG_QW__COUNT ? window_names[w] : "unknown";
}

int ag_quota_window_parse(const char *text, enum ag_quota_window *w)
{
	unsigned int i;

	for (i = AG_QW_HOUR; text && i < AG_QW__COUNT; i++)
		if (!strcmp(text, window_names[i])) {
			*w = (enum ag_quota_window)i;
			return 0;
		}
	return ag_err(EINVAL, "invalid quota window '%s' (hour, day or 30d)", text ? text : "");
}
