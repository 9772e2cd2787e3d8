/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* libagentgate internals shared between its translation units. */
#ifndef AGENTGATE_LIB_INTERNAL_H
#define AGENTGATE_LIB_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "agentgate.h"

/* The pinned maps, from AG_MAP_LIST (abi.h): AG_M_BUCKETS, AG_M_TALLY, ... */
#define AG_MAP_ID_ENTRY(id, name, sizing, desc) AG_M_##id,
enum ag_map_id {
	AG_MAP_LIST(AG_MAP_ID_ENTRY)
	AG_M__COUNT
};
#undef AG_MAP_ID_ENTRY

/* The sizing column of AG_MAP_LIST: AG_SIZE_<sizing>. */
enum ag_map_sizing {
	AG_SIZE_FIXED,  /* max_entries as the BPF object declares it */
	AG_SIZE_AGENTS, /* max_agents */
	AG_SIZE_RULES,  /* max_rules */
	AG_SIZE_INDEX,  /* AG_INDEX_BLKS(max_agents) */
};

struct ag_map_desc {
	const char *name;
	enum ag_map_sizing sizing;
};

extern const struct ag_map_desc ag_map_descs[AG_M__COUNT];

struct ag_ctx {
	char pin_root[PATH_MAX];
	int dir_fd;     /* pin root, flock(2)ed by mutations */
	/* Threads sharing this ctx: flock cannot tell them apart (one open
	 * file), so a recursive mutex orders them first. lock_depth is only
	 * touched with the mutex held. */
	pthread_mutex_t lock;
	bool lock_ready;
	int lock_depth;
	bool read_only;
	int fds[AG_M__COUNT];
	struct ag_bucket *buckets; /* mmap of ag_buckets */
	size_t mmap_len;
	struct ag_budget *budgets; /* mmap of ag_budgets; NULL: not pinned (older pins)
				    * or read-only without write access */
	size_t budgets_len;
	struct ag_tally *tally;    /* mmap of ag_tally; NULL: not pinned (older pins) or
				    * read-only without write access */
	size_t tally_len;
	/* ag_counters and ag_refusals of an older layout, still pinned: their
	 * counts are added to the tally's (the datapath no longer writes them);
	 * -1 when not pinned. */
	int legacy_counters_fd, legacy_refusals_fd;
	struct ag_agent_info *names; /* mmap of ag_names; NULL: read-only without
				      * write access (lookups instead) */
	size_t names_len;
	struct ag_index_blk *index; /* mmap of ag_index, likewise */
	size_t index_len;
	bool index_made, index_fill; /* ag_open(): a new index to set up, to fill */
	bool names_torn; /* ag_open(): upgraded records that were never committed */
	struct ag_probes *probes;  /* mmap of ag_probes; NULL when read-only */
	size_t probes_len;
	enum ag_prefix_index prefix_index;
	struct ag_slot_cache *slot_cache; /* ag_agent_slot(); NULL: no caching */
	__u32 max_agents;
	__u32 max_rules;
	int ncpus;
	__u32 free_hint; /* next slot to try when claiming */
};

/* Record a message for ag_errmsg() and return -err. */
int ag_err(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ag_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* mkdir -p; 0 or -errno. */
int ag_mkdir_p(const char *path, mode_t mode);

/* Serialize mutations between processes; repairs a journal left dirty by a
 * process that died mid-change. Nestable. */
int ag_lock(struct ag_ctx *ctx);
void ag_unlock(struct ag_ctx *ctx);
int ag_require_writable(const struct ag_ctx *ctx);

int ag_config_read(struct ag_ctx *ctx, struct ag_config *cfg);
int ag_config_write(struct ag_ctx *ctx, const struct ag_config *cfg);
int ag_dirty_set(struct ag_ctx *ctx, __u32 bits);
int ag_dirty_clear(struct ag_ctx *ctx, __u32 bits);

/* ag_stats made larger (entries) when it was pinned smaller by an older
 * version, its counts kept; called before a program is bound to it. */
int ag_grow_stats(struct ag_ctx *ctx, __u32 entries);

/* Repair passes, run under the lock when the journal says so. */
int ag_repair_agents(struct ag_ctx *ctx);
int ag_repair_rules(struct ag_ctx *ctx);

struct ag_slot_cache *ag_slot_cache_new(void);
void ag_slot_cache_free(struct ag_slot_cache *c);

/* Rebuild the per-length index of trie rules (hashes, counts, plans). */
int ag_rebuild_prefix_index(struct ag_ctx *ctx);

/* Rules pointing at slot, removed (agent deletion). */
int ag_rules_drop_slot(struct ag_ctx *ctx, __u32 slot);

/* Bucket parameter change (writers hold the lock). */
int ag_bucket_configure(struct ag_ctx *ctx, __u32 slot, const struct ag_gcra_params *p,
			enum ag_unit unit);
int ag_bucket_disable(struct ag_ctx *ctx, __u32 slot);

/* Agents' records and the name index (names.c). */
/* The record in slot: 0, -ENOENT (free), -EAGAIN (a writer died in it). */
int ag_names_read(struct ag_ctx *ctx, __u32 slot, struct ag_agent_info *info);
/* Whether slot's record is free (writers: through the mapping). */
bool ag_names_free(struct ag_ctx *ctx, __u32 slot);
/* The record in slot written whole (NULL: freed); writers hold the lock. */
int ag_names_write(struct ag_ctx *ctx, __u32 slot, const struct ag_agent_info *info);
/* Records left odd by a writer that died, made readable (the repair). */
void ag_names_unstick(struct ag_ctx *ctx);
/* The live record named name: 0, -ENOENT, or an error. */
int ag_index_lookup(struct ag_ctx *ctx, const char *name, struct ag_agent_info *info);
/* Index entries (writers hold the lock and the agents' journal bit). */
int ag_index_add(struct ag_ctx *ctx, __u32 slot, const char *name);
int ag_index_del(struct ag_ctx *ctx, __u32 slot, const char *name);
int ag_index_rebuild(struct ag_ctx *ctx);
int ag_index_init(struct ag_ctx *ctx);
/* Every (slot, record) in use, live or not; fn's non-zero return stops
 * the walk and is returned. */
int ag_walk_names(struct ag_ctx *ctx,
		  int (*fn)(void *arg, __u32 slot, const struct ag_agent_info *info), void *arg);

/* Parents (budgets.c). ag_parent_up(): slot's parent slot + 1, 0: none. */
__u64 ag_parent_up(struct ag_ctx *ctx, __u32 slot);
/* -ENOENT: pins that predate ag_budgets (parents and quotas need it). */
int ag_budgets_missing(struct ag_ctx *ctx);
/* The datapath's link of slot set to up (writers hold the lock). */
int ag_parent_link(struct ag_ctx *ctx, __u32 slot, __u64 up);
/* The slot + 1 of the parent named for the bucket in slot (self: its slot,
 * or UINT32_MAX when it is being created, self_parent: whether it is a
 * parent itself), checked: a parent, no cycle, paths within AG_PATH_MAX.
 * NULL or "" names none (0). */
int ag_parent_resolve(struct ag_ctx *ctx, const char *parent, __u32 self, bool self_parent,
		      __u32 *up);
/* How many buckets name slot as their parent. */
int ag_parent_children(struct ag_ctx *ctx, __u32 slot, size_t *n);
/* Quotas (budgets.c): one bucket's quota as a path step sees it. */
struct ag_quota_step {
	bool on;          /* the bucket has a quota */
	__u64 limit, window_ns, idx, tokens, tai_ns;
	__u64 seen;       /* the count word last read */
	__u64 taken;      /* the word our swap wrote; 0: nothing taken */
};
/* 1: tokens fit in the window (or no quota), 0: they do not. */
int ag_quota_look(struct ag_ctx *ctx, __u32 slot, __u64 tokens, __u64 tai_ns,
		  struct ag_quota_step *q);
/* Count them by swap: 1 done (or nothing to do), 0 no longer fit. */
int ag_quota_take(struct ag_ctx *ctx, __u32 slot, struct ag_quota_step *q);
void ag_quota_give_back(struct ag_ctx *ctx, __u32 slot, struct ag_quota_step *q);
/* Count them whatever the limit (a charge). */
void ag_quota_add(struct ag_ctx *ctx, __u32 slot, __u64 tokens, __u64 tai_ns,
		  struct ag_quota_step *q);
/* What is left in the window (negative: over it) and when it ends. */
void ag_quota_state(const struct ag_quota_step *q, double *remaining, __u64 *reset_in_ns);
/* The quota word set (writers hold the lock); 0: none. */
int ag_quota_set(struct ag_ctx *ctx, __u32 slot, __u64 limit, enum ag_quota_window window);
/* slot's counters and refusals zeroed (a new bucket's): its ag_tally and,
 * where pinned, the older layout's. */
int ag_tally_zero(struct ag_ctx *ctx, __u32 slot);
void ag_quota_get(struct ag_ctx *ctx, __u32 slot, __u64 *limit, enum ag_quota_window *window);

/* A word the datapath and other processes change through the mmap. */
static inline _Atomic __u64 *ag_atomic_word(__u64 *w)
{
	return (_Atomic __u64 *)w;
}

static inline _Atomic __u64 *ag_tat_word(struct ag_bucket *b)
{
	_Static_assert(sizeof(_Atomic __u64) == sizeof(__u64), "atomic u64 size");
	return (_Atomic __u64 *)&b->tat;
}

#endif
