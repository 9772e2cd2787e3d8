// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Agents: a name, a slot, a bucket. Creation and deletion run under the
 * pin-root lock with a journal bit in ag_config, in an order that makes
 * the AG_AGENT_LIVE flag of the ag_names record the commit record:
 *   create: record claimed -> counters zeroed -> bucket configured ->
 *           indexed -> record LIVE (commit)
 *   delete: record not LIVE -> bucket disabled -> rules dropped ->
 *           unindexed -> record freed
 *   update: record rewritten -> bucket reconfigured (the record is the truth)
 * A process killed in between leaves the journal bit set; the next locker
 * removes every record that is not LIVE (an unfinished create or delete),
 * builds the index again from the LIVE ones (names.c) and brings every
 * bucket's parameters in line with its record.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* The one check of an agent name, wherever one comes in (CLI, HTTP path and
 * bodies, ratings, ingest): 1 to AG_NAME_MAX of [A-Za-z0-9._:-], and not
 * "." or "..": a URL path cannot carry those as a segment (clients and
 * proxies remove dot segments), so such an agent could be made by a rating
 * and never reached by its URL. */
int ag_name_check(const char *name)
{
	size_t len = name ? strlen(name) : 0;
	size_t i;

	if (len == 0 || len > AG_NAME_MAX)
		return ag_err(EINVAL, "agent name must be 1 to %d characters, got %zu", AG_NAME_MAX,
			      len);
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return ag_err(EINVAL, "agent name '%s' is reserved (a URL path cannot carry it)",
			      name);
	for (i = 0; i < len; i++) {
		char c = name[i];

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '.' || c == '_' || c == ':' || c == '-')
			continue;
		return ag_err(EINVAL,
			      "agent name has invalid character 0x%02x at position %zu (allowed: "
			      "A-Z a-z 0-9 . _ : -)",
			      (unsigned char)c, i + 1);
	}
	return 0;
}

static void name_key(const char *name, struct ag_name_key *key)
{
	memset(key, 0, sizeof(*key));
	memcpy(key->name, name, strnlen(name, AG_NAME_MAX));
}

static void info_name(const struct ag_agent_info *info, char out[AG_NAME_MAX + 1])
{
	memcpy(out, info->name, AG_NAME_MAX);
	out[AG_NAME_MAX] = '\0';
}

static void info_to_agent(struct ag_ctx *ctx, const struct ag_agent_info *info,
			  struct ag_agent *a)
{
	memset(a, 0, sizeof(*a));
	info_name(info, a->name);
	a->slot = info->slot;
	a->rate = info->rate_mtps / 1000.0;
	a->burst = info->burst;
	a->unit = info->unit;
	a->pinned = info->flags & AG_AGENT_PINNED;
	a->is_parent = info->flags & AG_AGENT_PARENT;
	a->parent = info->parent;
	a->created_ns = info->created_ns;
	ag_quota_get(ctx, info->slot, &a->quota, &a->quota_window);
}

/* The agent in slot: its record, if LIVE. */
static int info_lookup(struct ag_ctx *ctx, __u32 slot, struct ag_agent_info *info)
{
	int err = ag_names_read(ctx, slot, info);

	if (!err && !(info->flags & AG_AGENT_LIVE))
		return ag_err(ENOENT, "no agent in slot %u", slot);
	return err;
}

static _Atomic __u32 *slot_gen(struct ag_ctx *ctx, __u32 slot)
{
	_Static_assert(sizeof(_Atomic __u32) == sizeof(__u32), "atomic u32 size");
	return (_Atomic __u32 *)&ctx->buckets[slot].gen;
}

/* Before a slot is claimed for an agent and before anything of a deleted
 * agent is removed: a name cached with the previous generation misses. */
static void slot_gen_bump(struct ag_ctx *ctx, __u32 slot)
{
	if (ctx->buckets && slot < ctx->max_agents)
		atomic_fetch_add(slot_gen(ctx, slot), 1);
}

/* Name -> slot -> record (names.c checks that they agree). With gen: the
 * slot's generation before its record was read again, and *stable whether
 * it stayed the same until then (the slot was the agent's all along). */
static int lookup_agent_gen(struct ag_ctx *ctx, const char *name, struct ag_agent_info *info,
			    __u32 *gen, bool *stable)
{
	char stored[AG_NAME_MAX + 1];
	__u32 slot;
	int err;

	err = ag_index_lookup(ctx, name, info);
	if (!err && gen) {
		slot = info->slot;
		*stable = ctx->buckets && slot < ctx->max_agents;
		if (*stable)
			*gen = atomic_load(slot_gen(ctx, slot));
		err = info_lookup(ctx, slot, info);
		if (!err) {
			info_name(info, stored);
			if (strcmp(stored, name) != 0)
				err = -ENOENT;
		}
		if (!err && *stable)
			*stable = atomic_load(slot_gen(ctx, slot)) == *gen;
	}
	if (err == -ENOENT)
		return ag_err(ENOENT, "unknown agent '%s'", name);
	return err;
}

static int lookup_agent(struct ag_ctx *ctx, const char *name, struct ag_agent_info *info)
{
	return lookup_agent_gen(ctx, name, info, NULL, NULL);
}

/* ---- name -> slot cache ------------------------------------------------------ */

#define SLOT_CACHE_ENTRIES 4096 /* direct-mapped, a power of two */
#define SLOT_CACHE_LOCKS 64

struct slot_cache_entry {
	char name[AG_NAME_MAX]; /* NUL-padded; all zero: empty */
	__u32 slot;
	__u32 gen;
};

struct ag_slot_cache {
	pthread_mutex_t lock[SLOT_CACHE_LOCKS];
	struct slot_cache_entry e[SLOT_CACHE_ENTRIES];
};

struct ag_slot_cache *ag_slot_cache_new(void)
{
	struct ag_slot_cache *c = calloc(1, sizeof(*c));
	int i;

	for (i = 0; c && i < SLOT_CACHE_LOCKS; i++)
		pthread_mutex_init(&c->lock[i], NULL);
	return c;
}

void ag_slot_cache_free(struct ag_slot_cache *c)
{
	int i;

	for (i = 0; c && i < SLOT_CACHE_LOCKS; i++)
		pthread_mutex_destroy(&c->lock[i]);
	free(c);
}

static __u32 name_hash(const char *name)
{
	__u32 h = 2166136261u; /* FNV-1a */

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 16777619u;
	return h;
}

int ag_agent_slot(struct ag_ctx *ctx, const char *name, __u32 *slot)
{
	struct ag_slot_cache *c = ctx->slot_cache;
	struct ag_name_key key;
	struct ag_agent_info info;
	struct slot_cache_entry *e;
	pthread_mutex_t *lock;
	bool stable = false;
	__u32 i, gen = 0;
	int err;

	err = ag_name_check(name);
	if (err)
		return err;
	if (!c || !ctx->buckets) {
		err = lookup_agent(ctx, name, &info);
		if (!err)
			*slot = info.slot;
		return err;
	}
	name_key(name, &key);
	i = name_hash(name) & (SLOT_CACHE_ENTRIES - 1);
	e = &c->e[i];
	lock = &c->lock[i % SLOT_CACHE_LOCKS];
	pthread_mutex_lock(lock);
	if (!memcmp(e->name, key.name, AG_NAME_MAX) && e->slot < ctx->max_agents &&
	    atomic_load(slot_gen(ctx, e->slot)) == e->gen) {
		*slot = e->slot;
		pthread_mutex_unlock(lock);
		return 0;
	}
	pthread_mutex_unlock(lock);
	err = lookup_agent_gen(ctx, name, &info, &gen, &stable);
	if (err)
		return err;
	*slot = info.slot;
	if (stable) {
		pthread_mutex_lock(lock);
		memcpy(e->name, key.name, AG_NAME_MAX);
		e->slot = info.slot;
		e->gen = gen;
		pthread_mutex_unlock(lock);
	}
	return 0;
}

int ag_agent_get(struct ag_ctx *ctx, const char *name, struct ag_agent *out)
{
	struct ag_agent_info info;
	int err;

	err = ag_name_check(name);
	if (!err)
		err = lookup_agent(ctx, name, &info);
	if (!err)
		info_to_agent(ctx, &info, out);
	return err;
}

int ag_agent_get_slot(struct ag_ctx *ctx, __u32 slot, struct ag_agent *out)
{
	struct ag_agent_info info;
	int err = info_lookup(ctx, slot, &info);

	if (!err)
		info_to_agent(ctx, &info, out);
	return err;
}

/* Claim a free slot (under the lock) by writing its record, not yet LIVE. */
static int claim_slot(struct ag_ctx *ctx, struct ag_agent_info *info)
{
	__u32 n, slot;
	int err;

	for (n = 0; n < ctx->max_agents; n++) {
		slot = (ctx->free_hint + n) % ctx->max_agents;
		if (ctx->buckets[slot].in_use)
			continue;
		if (!ag_names_free(ctx, slot)) { /* stale hint byte: fix it and move on */
			ctx->buckets[slot].in_use = 1;
			continue;
		}
		info->slot = slot;
		err = ag_names_write(ctx, slot, info);
		if (err)
			return err;
		ctx->free_hint = slot + 1;
		slot_gen_bump(ctx, slot);
		return 0;
	}
	return ag_err(ENOSPC, "no free agent slot: all %u are in use (recreate the maps with "
			      "a larger max-agents)",
		      ctx->max_agents);
}

static void merge_update(struct ag_agent_info *info, const struct ag_agent_update *u)
{
	if (u->fields & AG_SET_RATE)
		info->rate_mtps = (__u64)(u->rate * 1000.0 + 0.5);
	if (u->fields & AG_SET_BURST)
		info->burst = u->burst;
	if (u->fields & AG_SET_UNIT)
		info->unit = u->unit;
	if (u->fields & AG_SET_PINNED)
		info->flags = u->pinned ? info->flags | AG_AGENT_PINNED :
					  info->flags & ~AG_AGENT_PINNED;
}

static __u64 default_burst(double rate, enum ag_unit unit)
{
	__u64 burst = (__u64)(rate + 0.999999);

	if (burst < 1)
		burst = 1;
	if (unit == AG_UNIT_BPS && burst < AG_BPS_MIN_BURST)
		burst = AG_BPS_MIN_BURST;
	return burst;
}

static int create_agent(struct ag_ctx *ctx, const char *name, const struct ag_agent_update *u,
			bool parent, struct ag_agent_info *info)
{
	struct ag_gcra_params p;
	struct timespec ts;
	__u32 up = 0;
	int err;

	memset(info, 0, sizeof(*info));
	memcpy(info->name, name, strnlen(name, AG_NAME_MAX));
	info->rate_mtps = (__u64)(AG_DEFAULT_RATE * 1000.0);
	info->unit = AG_UNIT_PPS;
	info->flags = parent ? AG_AGENT_PARENT : 0;
	merge_update(info, u);
	if (u->fields & AG_SET_PARENT) {
		err = ag_parent_resolve(ctx, u->parent, UINT32_MAX, parent, &up);
		if (err)
			return err;
		info->parent = up;
	}
	if (!(u->fields & AG_SET_BURST))
		info->burst = default_burst(info->rate_mtps / 1000.0, info->unit);
	clock_gettime(CLOCK_REALTIME, &ts);
	info->created_ns = (__u64)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
	err = ag_gcra_params_for(info->rate_mtps / 1000.0, info->burst, info->unit, &p);
	if (err)
		return err;

	err = ag_dirty_set(ctx, AG_DIRTY_AGENTS);
	if (err)
		return err;
	err = claim_slot(ctx, info);
	if (err)
		goto out;
	err = ag_tally_zero(ctx, info->slot);
	if (!err)
		err = ag_bucket_configure(ctx, info->slot, &p, info->unit);
	if (!err)
		err = ag_parent_link(ctx, info->slot, info->parent);
	if (!err)
		err = ag_quota_set(ctx, info->slot, u->fields & AG_SET_QUOTA ? u->quota : 0,
				   u->quota_window);
	if (!err)
		err = ag_index_add(ctx, info->slot, name);
	if (!err) { /* the commit */
		info->flags |= AG_AGENT_LIVE;
		err = ag_names_write(ctx, info->slot, info);
	}
	if (err) { /* roll back the claim, leave nothing half-made */
		if (ag_bucket_disable(ctx, info->slot) || ag_parent_link(ctx, info->slot, 0) ||
		    ag_quota_set(ctx, info->slot, 0, AG_QW_NONE) ||
		    ag_index_del(ctx, info->slot, name) || ag_names_write(ctx, info->slot, NULL))
			return err; /* journal stays set: the next locker repairs */
		goto out;
	}
	ctx->buckets[info->slot].in_use = 1;
out:
	if (!err)
		err = ag_dirty_clear(ctx, AG_DIRTY_AGENTS);
	else
		ag_dirty_clear(ctx, AG_DIRTY_AGENTS);
	return err;
}

static int update_agent(struct ag_ctx *ctx, struct ag_agent_info *info,
			const struct ag_agent_update *u)
{
	struct ag_agent_info next = *info;
	struct ag_gcra_params p;
	bool limit_changes, link_changes;
	__u32 up;
	int err;

	merge_update(&next, u);
	if (u->fields & AG_SET_PARENT) {
		err = ag_parent_resolve(ctx, u->parent, info->slot,
					info->flags & AG_AGENT_PARENT, &up);
		if (err)
			return err;
		next.parent = up;
	}
	link_changes = next.parent != info->parent;
	/* A new unit makes the old burst meaningless (packets vs bytes). */
	if (next.unit != info->unit && !(u->fields & AG_SET_BURST))
		next.burst = default_burst(next.rate_mtps / 1000.0, next.unit);
	limit_changes = next.rate_mtps != info->rate_mtps || next.burst != info->burst ||
			next.unit != info->unit;
	if (limit_changes) {
		err = ag_gcra_params_for(next.rate_mtps / 1000.0, next.burst, next.unit, &p);
		if (err)
			return err;
	}
	if (limit_changes || link_changes) {
		err = ag_dirty_set(ctx, AG_DIRTY_AGENTS);
		if (err)
			return err;
	}
	err = ag_names_write(ctx, info->slot, &next);
	if (err)
		goto out;
	err = limit_changes ? ag_bucket_configure(ctx, info->slot, &p, next.unit) : 0;
	if (!err && link_changes)
		err = ag_parent_link(ctx, info->slot, next.parent);
	if (!err && (u->fields & AG_SET_QUOTA))
		err = ag_quota_set(ctx, info->slot, u->quota, u->quota_window);
	if (err) { /* put the record back; if that fails too, the journal stays */
		if (ag_names_write(ctx, info->slot, info))
			return err;
		goto out;
	}
	*info = next;
out:
	if (limit_changes || link_changes) {
		int clear = ag_dirty_clear(ctx, AG_DIRTY_AGENTS);

		err = err ? err : clear;
	}
	return err;
}

static int check_update(const struct ag_agent_update *u, bool parent)
{
	int err = 0;

	if (u->fields & ~(AG_SET_RATE | AG_SET_BURST | AG_SET_UNIT | AG_SET_PINNED | AG_SET_PARENT |
			  AG_SET_QUOTA))
		return ag_err(EINVAL, "unknown update fields 0x%x", u->fields);
	if ((u->fields & AG_SET_QUOTA) && (err = ag_quota_check(u->quota, u->quota_window)))
		return err;
	if (parent && (u->fields & AG_SET_PINNED))
		return ag_err(EINVAL, "a parent's rate is the operator's: it has no 'pinned'");
	if (u->fields & AG_SET_UNIT)
		err = ag_unit_check(u->unit);
	if (!err && (u->fields & AG_SET_RATE))
		err = ag_rate_check(u->rate);
	if (!err && (u->fields & AG_SET_BURST))
		err = ag_burst_check(u->burst);
	return err;
}

/* "'x' is a parent" / "'x' is an agent": a name is one or the other. */
static int kind_mismatch(const char *name, bool is_parent)
{
	return is_parent ? ag_err(EEXIST, "'%s' is a parent, not an agent (agentgate parent ...)",
				  name) :
			   ag_err(EEXIST, "'%s' is an agent, not a parent (agentgate agent ...)",
				  name);
}

static int set_bucket(struct ag_ctx *ctx, const char *name, const struct ag_agent_update *u,
		      bool parent, __u32 *slot, bool *created)
{
	struct ag_agent_info info;
	bool made = false;
	int err;

	err = ag_name_check(name);
	if (!err)
		err = check_update(u, parent);
	if (!err)
		err = ag_lock(ctx);
	if (err)
		return err;
	err = lookup_agent(ctx, name, &info);
	if (err == -ENOENT) {
		err = create_agent(ctx, name, u, parent, &info);
		made = !err;
	} else if (!err && !!(info.flags & AG_AGENT_PARENT) != parent) {
		err = kind_mismatch(name, !parent);
	} else if (!err) {
		err = update_agent(ctx, &info, u);
	}
	ag_unlock(ctx);
	if (!err && slot)
		*slot = info.slot;
	if (!err && created)
		*created = made;
	return err;
}

int ag_agent_set(struct ag_ctx *ctx, const char *name, const struct ag_agent_update *u,
		 __u32 *slot, bool *created)
{
	return set_bucket(ctx, name, u, false, slot, created);
}

int ag_parent_set(struct ag_ctx *ctx, const char *name, const struct ag_agent_update *u,
		  __u32 *slot, bool *created)
{
	return set_bucket(ctx, name, u, true, slot, created);
}

/* Remove everything of the agent whose record is info; the record is no
 * longer LIVE first (a repair after a crash finishes the job) and freed
 * last. */
static int remove_slot(struct ag_ctx *ctx, __u32 slot, const struct ag_agent_info *info)
{
	char name[AG_NAME_MAX + 1];
	struct ag_agent_info dead = *info;
	int err;

	info_name(info, name);
	if (dead.flags & AG_AGENT_LIVE) {
		dead.flags &= ~AG_AGENT_LIVE;
		err = ag_names_write(ctx, slot, &dead);
		if (err)
			return err;
	}
	/* Before anything else goes, the generation: cached names of this
	 * slot miss. */
	slot_gen_bump(ctx, slot);
	err = ag_bucket_disable(ctx, slot);
	if (!err)
		err = ag_parent_link(ctx, slot, 0);
	if (!err)
		err = ag_quota_set(ctx, slot, 0, AG_QW_NONE);
	if (!err)
		err = ag_rules_drop_slot(ctx, slot);
	if (!err)
		err = ag_index_del(ctx, slot, name);
	if (!err)
		err = ag_names_write(ctx, slot, NULL);
	if (err)
		return err;
	ctx->buckets[slot].in_use = 0;
	return 0;
}

static int delete_bucket(struct ag_ctx *ctx, const char *name, bool parent)
{
	struct ag_agent_info info;
	size_t children = 0;
	int err;

	err = ag_name_check(name);
	if (!err)
		err = ag_lock(ctx);
	if (err)
		return err;
	err = lookup_agent(ctx, name, &info);
	if (!err && !!(info.flags & AG_AGENT_PARENT) != parent)
		err = kind_mismatch(name, !parent);
	if (!err && parent)
		err = ag_parent_children(ctx, info.slot, &children);
	if (!err && children)
		err = ag_err(EBUSY, "parent '%s' has %zu %s: give %s another parent or delete "
				    "%s first",
			     name, children, children == 1 ? "child" : "children",
			     children == 1 ? "it" : "them", children == 1 ? "it" : "them");
	if (!err)
		err = ag_dirty_set(ctx, AG_DIRTY_AGENTS);
	if (!err) {
		err = remove_slot(ctx, info.slot, &info);
		if (!err)
			err = ag_dirty_clear(ctx, AG_DIRTY_AGENTS);
	}
	ag_unlock(ctx);
	return err;
}

int ag_agent_delete(struct ag_ctx *ctx, const char *name)
{
	return delete_bucket(ctx, name, false);
}

int ag_parent_delete(struct ag_ctx *ctx, const char *name)
{
	return delete_bucket(ctx, name, true);
}

static int cmp_slot(const void *a, const void *b)
{
	const struct ag_agent *x = a, *y = b;

	return x->slot < y->slot ? -1 : x->slot > y->slot;
}

struct names_copy {
	__u32 *slots;
	struct ag_agent_info *infos;
	size_t n, cap;
};

static int copy_name(void *arg, __u32 slot, const struct ag_agent_info *info)
{
	struct names_copy *c = arg;

	if (c->n == c->cap) /* the map holds at most max_agents */
		return ag_err(EOVERFLOW, "%s returned more entries than it can hold",
			      AG_MAP_NAMES);
	c->slots[c->n] = slot;
	c->infos[c->n++] = *info;
	return 0;
}

/* All of ag_names at once, for the repair (which changes it afterwards). */
static int read_names(struct ag_ctx *ctx, __u32 **slots_out, struct ag_agent_info **infos_out,
		      size_t *n_out)
{
	struct names_copy c = { calloc(ctx->max_agents ?: 1, sizeof(__u32)),
				calloc(ctx->max_agents ?: 1, sizeof(struct ag_agent_info)), 0,
				ctx->max_agents };
	int err = c.slots && c.infos ? ag_walk_names(ctx, copy_name, &c) :
				       ag_err(ENOMEM, "out of memory");

	if (err) {
		free(c.slots);
		free(c.infos);
		return err;
	}
	*slots_out = c.slots;
	*infos_out = c.infos;
	*n_out = c.n;
	return 0;
}

struct foreach_arg {
	struct ag_ctx *ctx;
	int (*fn)(void *arg, const struct ag_agent *a);
	void *arg;
	bool parents; /* visit the parents (else the agents) */
};

static int visit_agent(void *arg, __u32 slot, const struct ag_agent_info *info)
{
	struct foreach_arg *f = arg;
	struct ag_agent a;

	if (slot >= f->ctx->max_agents || info->slot != slot || !(info->flags & AG_AGENT_LIVE))
		return 0; /* half-made, half-removed or corrupt: not an agent */
	if (!!(info->flags & AG_AGENT_PARENT) != f->parents)
		return 0;
	info_to_agent(f->ctx, info, &a);
	return f->fn(f->arg, &a);
}

int ag_agent_foreach(struct ag_ctx *ctx, int (*fn)(void *arg, const struct ag_agent *a),
		     void *arg)
{
	struct foreach_arg f = { ctx, fn, arg, false };

	return ag_walk_names(ctx, visit_agent, &f);
}

int ag_parent_foreach(struct ag_ctx *ctx, int (*fn)(void *arg, const struct ag_agent *a),
		      void *arg)
{
	struct foreach_arg f = { ctx, fn, arg, true };

	return ag_walk_names(ctx, visit_agent, &f);
}

struct agent_vec {
	struct ag_agent *v;
	size_t n, cap;
};

static int append_agent(void *arg, const struct ag_agent *a)
{
	struct agent_vec *vec = arg;

	if (vec->n == vec->cap) {
		size_t cap = vec->cap ? vec->cap * 2 : 256;
		struct ag_agent *grown = realloc(vec->v, cap * sizeof(*grown));

		if (!grown)
			return ag_err(ENOMEM, "out of memory");
		vec->v = grown;
		vec->cap = cap;
	}
	vec->v[vec->n++] = *a;
	return 0;
}

static int list_kind(struct ag_ctx *ctx, bool parents, struct ag_agent **out, size_t *n_out)
{
	struct agent_vec vec = {};
	int err = parents ? ag_parent_foreach(ctx, append_agent, &vec) :
			    ag_agent_foreach(ctx, append_agent, &vec);

	if (!err && !vec.v && !(vec.v = calloc(1, sizeof(*vec.v))))
		err = ag_err(ENOMEM, "out of memory");
	if (err) {
		free(vec.v);
		return err;
	}
	qsort(vec.v, vec.n, sizeof(*vec.v), cmp_slot);
	*out = vec.v;
	*n_out = vec.n;
	return 0;
}

int ag_agent_list(struct ag_ctx *ctx, struct ag_agent **out, size_t *n_out)
{
	return list_kind(ctx, false, out, n_out);
}

int ag_parent_list(struct ag_ctx *ctx, struct ag_agent **out, size_t *n_out)
{
	return list_kind(ctx, true, out, n_out);
}

/* An update killed between its names entry and its bucket: the names
 * entry is what was asked for, so the bucket follows it. */
static int reconcile_limit(struct ag_ctx *ctx, const struct ag_agent_info *info)
{
	struct ag_bucket *b = &ctx->buckets[info->slot];
	unsigned int sel = b->tat >> 63;
	struct ag_gcra_params p;

	if (ag_gcra_params_for(info->rate_mtps / 1000.0, info->burst, info->unit, &p))
		return 0; /* a record no limit can express: leave the bucket alone */
	if (!memcmp(&p, &b->set[sel], sizeof(p)) && b->unit[sel] == info->unit)
		return 0;
	ag_warn("agent in slot %u: applying its recorded limit, which an interrupted change "
		"left unapplied",
		info->slot);
	return ag_bucket_configure(ctx, info->slot, &p, info->unit);
}

/* Under the lock, after a process died mid-change: make records, index,
 * buckets and the in-use hints agree again. */
int ag_repair_agents(struct ag_ctx *ctx)
{
	struct ag_agent_info *infos = NULL;
	__u32 *slots = NULL, slot;
	bool *named;
	size_t n = 0, i;
	int err = 0;

	ag_names_unstick(ctx);
	err = read_names(ctx, &slots, &infos, &n);
	if (err)
		return err;
	named = calloc(ctx->max_agents, sizeof(*named));
	if (!named) {
		err = ag_err(ENOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < n && !err; i++) {
		char name[AG_NAME_MAX + 1];
		struct ag_bucket *b;
		bool limited;

		if (slots[i] >= ctx->max_agents)
			continue;
		if (infos[i].slot != slots[i]) {
			ag_warn("removing a corrupt %s record (slot %u)", AG_MAP_NAMES, slots[i]);
			err = ag_names_write(ctx, slots[i], NULL);
			continue;
		}
		b = &ctx->buckets[slots[i]];
		limited = b->set[b->tat >> 63].interval != 0;
		info_name(&infos[i], name);
		if ((infos[i].flags & AG_AGENT_LIVE) && limited) {
			named[slots[i]] = true;
			b->in_use = 1;
			err = reconcile_limit(ctx, &infos[i]);
			if (!err && ag_parent_up(ctx, slots[i]) != infos[i].parent)
				err = ag_parent_link(ctx, slots[i], infos[i].parent);
			continue;
		}
		ag_warn("repairing agent '%s' in slot %u, left unfinished by an interrupted %s",
			name, slots[i], infos[i].flags & AG_AGENT_LIVE ? "change" :
			"creation or deletion");
		err = remove_slot(ctx, slots[i], &infos[i]);
	}
	/* The index again, from the LIVE records: whatever a crash left in it. */
	if (!err)
		err = ag_index_rebuild(ctx);
	for (slot = 0; slot < ctx->max_agents; slot++) {
		if (named[slot])
			continue;
		ctx->buckets[slot].in_use = 0;
		if (!err && ag_parent_up(ctx, slot))
			err = ag_parent_link(ctx, slot, 0);
	}
out:
	free(named);
	free(slots);
	free(infos);
	return err;
}
