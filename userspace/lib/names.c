// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Agents' records (ag_names, an array by slot) and the name index
 * (ag_index, an open-addressing table of slots), both read through their
 * mappings without system calls and written only under the pin-root lock
 * (abi.h has the layouts). A record is a seqlock: readers copy it and retry
 * while its seq is odd or moved. The index holds only slots; every hit is
 * checked against the record, so a reader never takes one agent for
 * another. The index is derived: a record is an agent once it carries
 * AG_AGENT_LIVE, and the index can always be built again from the live
 * records (the repair does, after a process died mid-change).
 */
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <bpf/bpf.h>

#include "agentgate/siphash.h"
#include "internal.h"

/* How long a reader waits for a record or the index that a writer holds
 * odd: a writer that died mid-change leaves it odd until the next locker
 * repairs, and a reader does not wait for that. */
#define SEQ_WAIT_NS (200 * 1000000ULL)

static __u64 mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* A waiter's step: spin a little, then yield; false once waited too long. */
static bool wait_step(__u64 *since, unsigned int *spins)
{
	if (++*spins < 64)
		return true;
	if (!*since)
		*since = mono_ns();
	else if (mono_ns() - *since > SEQ_WAIT_NS)
		return false;
	sched_yield();
	return true;
}

static _Atomic __u32 *atomic_u32(__u32 *p)
{
	_Static_assert(sizeof(_Atomic __u32) == sizeof(__u32), "atomic u32 size");
	return (_Atomic __u32 *)p;
}

/* ---- records ------------------------------------------------------------------ */

/* Without a mapping (a read-only open without write access): two copies
 * through the syscall that agree, seq even. */
/* The error of a write to a map this context did not map for writing. */
static int unmapped(const char *map)
{
	return ag_err(EPERM, "cannot write %s: not mapped for writing", map);
}

static int record_lookup(struct ag_ctx *ctx, __u32 slot, struct ag_agent_info *info)
{
	struct ag_agent_info again;
	unsigned int spins = 0;
	__u64 since = 0;

	for (;;) {
		if (bpf_map_lookup_elem(ctx->fds[AG_M_NAMES], &slot, info) ||
		    bpf_map_lookup_elem(ctx->fds[AG_M_NAMES], &slot, &again))
			return ag_err(errno, "cannot read %s: %s", AG_MAP_NAMES, strerror(errno));
		if (!(info->seq & 1) && !memcmp(info, &again, sizeof(again)))
			return 0;
		if (!wait_step(&since, &spins))
			return -EAGAIN;
	}
}

/* 0 and the record; -EAGAIN when it stayed odd (a writer died in it). */
static int record_copy(struct ag_ctx *ctx, __u32 slot, struct ag_agent_info *info)
{
	struct ag_agent_info *rec;
	unsigned int spins = 0;
	__u64 since = 0;
	__u32 s1, s2;

	if (!ctx->names)
		return record_lookup(ctx, slot, info);
	rec = &ctx->names[slot];
	for (;;) {
		s1 = atomic_load_explicit(atomic_u32(&rec->seq), memory_order_acquire);
		if (!(s1 & 1)) {
			memcpy(info, rec, sizeof(*info));
			atomic_thread_fence(memory_order_acquire);
			s2 = atomic_load_explicit(atomic_u32(&rec->seq), memory_order_relaxed);
			if (s1 == s2)
				return 0;
		}
		if (!wait_step(&since, &spins))
			return -EAGAIN;
	}
}

int ag_names_read(struct ag_ctx *ctx, __u32 slot, struct ag_agent_info *info)
{
	int err;

	if (slot >= ctx->max_agents)
		return ag_err(ENOENT, "no agent in slot %u", slot);
	err = record_copy(ctx, slot, info);
	if (err == -EAGAIN)
		return ag_err(EAGAIN, "the record in slot %u stays half-written (a process died "
				      "changing it; the next change repairs it)", slot);
	if (err)
		return err;
	if (!info->name[0] || info->slot != slot)
		return ag_err(ENOENT, "no agent in slot %u", slot);
	return 0;
}

bool ag_names_free(struct ag_ctx *ctx, __u32 slot)
{
	return ctx->names && slot < ctx->max_agents && !ctx->names[slot].name[0];
}

int ag_names_write(struct ag_ctx *ctx, __u32 slot, const struct ag_agent_info *info)
{
	const size_t seq_at = offsetof(struct ag_agent_info, seq);
	const size_t after = seq_at + sizeof(info->seq);
	struct ag_agent_info *rec;
	__u32 seq;

	if (!ctx->names || slot >= ctx->max_agents)
		return unmapped(AG_MAP_NAMES);
	rec = &ctx->names[slot];
	seq = atomic_load_explicit(atomic_u32(&rec->seq), memory_order_relaxed) | 1;
	atomic_store_explicit(atomic_u32(&rec->seq), seq, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	if (info) {
		memcpy(rec, info, seq_at);
		memcpy((char *)rec + after, (const char *)info + after, sizeof(*rec) - after);
	} else {
		memset(rec, 0, seq_at);
		memset((char *)rec + after, 0, sizeof(*rec) - after);
	}
	atomic_store_explicit(atomic_u32(&rec->seq), seq + 1, memory_order_release);
	return 0;
}

static bool record_is(const struct ag_agent_info *info, __u32 slot, const char *key)
{
	return info->slot == slot && (info->flags & AG_AGENT_LIVE) &&
	       !memcmp(info->name, key, AG_NAME_MAX);
}

/* ---- the index ---------------------------------------------------------------- */

struct index_view {
	__u64 k0, k1;
	__u32 cells, seq;
};

static struct ag_index_hdr *index_hdr(struct ag_ctx *ctx)
{
	return (struct ag_index_hdr *)ctx->index;
}

static __u32 *index_cells(struct ag_ctx *ctx)
{
	return ctx->index[1].cell;
}

static int index_view(struct ag_ctx *ctx, struct index_view *v)
{
	struct ag_index_blk blk;
	struct ag_index_hdr h;
	__u32 zero = 0;

	if (ctx->index) {
		struct ag_index_hdr *p = index_hdr(ctx);

		v->seq = atomic_load_explicit(atomic_u32(&p->seq), memory_order_acquire);
		v->k0 = p->key[0];
		v->k1 = p->key[1];
		v->cells = p->cells;
	} else {
		if (bpf_map_lookup_elem(ctx->fds[AG_M_INDEX], &zero, &blk))
			return ag_err(errno, "cannot read %s: %s", AG_MAP_INDEX, strerror(errno));
		memcpy(&h, &blk, sizeof(h));
		v->seq = h.seq;
		v->k0 = h.key[0];
		v->k1 = h.key[1];
		v->cells = h.cells;
	}
	/* A damaged header: readers scan the records, the next writer
	 * builds the index again. */
	if (v->cells != AG_INDEX_CELLS(ctx->max_agents))
		return -EUCLEAN;
	return 0;
}

static int cell_get(struct ag_ctx *ctx, __u32 i, __u32 *cell)
{
	struct ag_index_blk blk;
	__u32 key = 1 + i / AG_INDEX_PER_BLK;

	if (ctx->index) {
		*cell = atomic_load_explicit(atomic_u32(&index_cells(ctx)[i]),
					     memory_order_relaxed);
		return 0;
	}
	if (bpf_map_lookup_elem(ctx->fds[AG_M_INDEX], &key, &blk))
		return ag_err(errno, "cannot read %s: %s", AG_MAP_INDEX, strerror(errno));
	*cell = blk.cell[i % AG_INDEX_PER_BLK];
	return 0;
}

static void cell_set(struct ag_ctx *ctx, __u32 i, __u32 cell)
{
	atomic_store_explicit(atomic_u32(&index_cells(ctx)[i]), cell, memory_order_release);
}

static __u64 name_hash(const struct index_view *v, const char *key)
{
	return ag_siphash13(v->k0, v->k1, key, strnlen(key, AG_NAME_MAX));
}

/* What a cell holds for slot under hash h. */
static __u32 cell_of(__u64 h, __u32 slot)
{
	return (__u32)(h >> 57) << AG_INDEX_SLOT_BITS | (slot + 1);
}

static bool cell_tag_is(__u32 cell, __u64 h)
{
	return cell >> AG_INDEX_SLOT_BITS == (__u32)(h >> 57);
}

/* Probe for key (NUL-padded to AG_NAME_MAX); 0 with the record, -ENOENT,
 * or another error. */
static int index_probe(struct ag_ctx *ctx, const struct index_view *v, const char *key,
		       struct ag_agent_info *info)
{
	__u64 h = name_hash(v, key);
	__u32 i = (__u32)h & (v->cells - 1), n, cell = 0, slot;
	int err;

	for (n = 0; n < v->cells; n++, i = (i + 1) & (v->cells - 1)) {
		err = cell_get(ctx, i, &cell);
		if (err)
			return err;
		if (!cell)
			return -ENOENT;
		if (cell == AG_INDEX_TOMB || !cell_tag_is(cell, h))
			continue;
		slot = (cell & AG_INDEX_SLOT_MASK) - 1;
		if (slot >= ctx->max_agents)
			continue;
		err = record_copy(ctx, slot, info);
		if (err == -EAGAIN)
			continue; /* a record a writer died in: not this name's */
		if (err)
			return err;
		if (record_is(info, slot, key))
			return 0;
	}
	return -ENOENT;
}

/* Every slot, for a name the index could not answer for (a writer that
 * died rebuilding it). */
static int scan_names(struct ag_ctx *ctx, const char *key, struct ag_agent_info *info)
{
	__u32 slot;

	for (slot = 0; slot < ctx->max_agents; slot++) {
		if (ctx->names && ctx->names[slot].name[0] != key[0])
			continue;
		if (!record_copy(ctx, slot, info) && record_is(info, slot, key))
			return 0;
	}
	return -ENOENT;
}

int ag_index_lookup(struct ag_ctx *ctx, const char *name, struct ag_agent_info *info)
{
	char key[AG_NAME_MAX] = {};
	struct index_view v, again;
	unsigned int spins = 0;
	__u64 since = 0;
	int err;

	memcpy(key, name, strnlen(name, AG_NAME_MAX));
	for (;;) {
		err = index_view(ctx, &v);
		if (err == -EUCLEAN)
			return scan_names(ctx, key, info);
		if (err)
			return err;
		if (v.seq & 1) {
			if (!wait_step(&since, &spins))
				return scan_names(ctx, key, info);
			continue;
		}
		err = index_probe(ctx, &v, key, info);
		if (err != -ENOENT)
			return err;
		/* A miss counts only if no writer moved entries meanwhile. */
		err = index_view(ctx, &again);
		if (err == -EUCLEAN)
			return scan_names(ctx, key, info);
		if (err)
			return err;
		if (again.seq == v.seq)
			return -ENOENT;
	}
}

static int index_writable(struct ag_ctx *ctx, struct index_view *v)
{
	int err;

	if (!ctx->index)
		return unmapped(AG_MAP_INDEX);
	err = index_view(ctx, v);
	if (err == -EUCLEAN) { /* a damaged header: the index again */
		ag_warn("%s/%s: a damaged header; building the index again", ctx->pin_root,
			AG_MAP_INDEX);
		err = ag_index_rebuild(ctx);
		if (!err)
			err = index_view(ctx, v);
	}
	return err;
}

/* The free cell for a new entry of h: the first empty or removed one. */
static __u32 free_cell(struct ag_ctx *ctx, const struct index_view *v, __u64 h, __u32 *was)
{
	__u32 i = (__u32)h & (v->cells - 1);

	for (;;) {
		*was = index_cells(ctx)[i];
		if (!*was || *was == AG_INDEX_TOMB)
			return i;
		i = (i + 1) & (v->cells - 1);
	}
}

int ag_index_add(struct ag_ctx *ctx, __u32 slot, const char *name)
{
	char key[AG_NAME_MAX] = {};
	struct index_view v;
	__u32 i, was;
	__u64 h;
	int err = index_writable(ctx, &v);

	if (err)
		return err;
	/* At most half the cells hold agents; removed ones are cleared away
	 * before they fill the rest. */
	if (index_hdr(ctx)->used + index_hdr(ctx)->tombs + 1 > v.cells / 4 * 3) {
		err = ag_index_rebuild(ctx);
		if (err)
			return err;
	}
	memcpy(key, name, strnlen(name, AG_NAME_MAX));
	h = name_hash(&v, key);
	i = free_cell(ctx, &v, h, &was);
	cell_set(ctx, i, cell_of(h, slot));
	index_hdr(ctx)->used++;
	if (was == AG_INDEX_TOMB)
		index_hdr(ctx)->tombs--;
	return 0;
}

int ag_index_del(struct ag_ctx *ctx, __u32 slot, const char *name)
{
	char key[AG_NAME_MAX] = {};
	struct index_view v;
	__u32 i, n, cell;
	__u64 h;
	int err = index_writable(ctx, &v);

	if (err)
		return err;
	memcpy(key, name, strnlen(name, AG_NAME_MAX));
	h = name_hash(&v, key);
	i = (__u32)h & (v.cells - 1);
	for (n = 0; n < v.cells; n++, i = (i + 1) & (v.cells - 1)) {
		cell = index_cells(ctx)[i];
		if (!cell)
			return 0; /* not indexed */
		if (cell != cell_of(h, slot))
			continue;
		cell_set(ctx, i, AG_INDEX_TOMB);
		index_hdr(ctx)->used--;
		index_hdr(ctx)->tombs++;
		break;
	}
	if (index_hdr(ctx)->tombs > v.cells / 4)
		return ag_index_rebuild(ctx);
	return 0;
}

/*
 * The index again from the live records, seq odd meanwhile (readers wait,
 * or scan the records once they waited too long). A name that two live
 * records carry (only damage makes that) is indexed for the first slot.
 * Callers hold the lock and the agents' journal bit: a process that dies
 * in here leaves the repair to do it again.
 */
int ag_index_rebuild(struct ag_ctx *ctx)
{
	struct ag_index_hdr *hdr;
	struct ag_agent_info info;
	struct index_view v;
	__u32 slot, seq, used = 0;
	int err;

	if (!ctx->index)
		return unmapped(AG_MAP_INDEX);
	err = index_view(ctx, &v);
	if (err == -EUCLEAN) { /* a damaged header: its size made right */
		index_hdr(ctx)->cells = AG_INDEX_CELLS(ctx->max_agents);
		err = index_view(ctx, &v);
	}
	if (err)
		return err;
	hdr = index_hdr(ctx);
	seq = atomic_load_explicit(atomic_u32(&hdr->seq), memory_order_relaxed) | 1;
	atomic_store_explicit(atomic_u32(&hdr->seq), seq, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	memset(index_cells(ctx), 0, (size_t)v.cells * sizeof(__u32));
	for (slot = 0; slot < ctx->max_agents; slot++) {
		struct ag_agent_info other;
		__u64 h;
		__u32 i, was;

		if (!ctx->names[slot].name[0] || record_copy(ctx, slot, &info) ||
		    !record_is(&info, slot, info.name))
			continue;
		h = name_hash(&v, info.name);
		if (!index_probe(ctx, &v, info.name, &other)) {
			ag_warn("agents in slots %u and %u are both named '%.*s': only the first "
				"is reachable by name",
				other.slot, slot, AG_NAME_MAX, info.name);
			continue;
		}
		i = free_cell(ctx, &v, h, &was);
		cell_set(ctx, i, cell_of(h, slot));
		used++;
	}
	hdr->used = used;
	hdr->tombs = 0;
	atomic_store_explicit(atomic_u32(&hdr->seq), seq + 1, memory_order_release);
	return 0;
}

/* A new index: its key, its size, no entries (the map was just made). */
int ag_index_init(struct ag_ctx *ctx)
{
	struct ag_index_hdr *hdr;
	__u64 key[2];

	if (!ctx->index)
		return unmapped(AG_MAP_INDEX);
	if (getrandom(key, sizeof(key), 0) != sizeof(key))
		return ag_err(errno, "cannot draw the index key: %s", strerror(errno));
	hdr = index_hdr(ctx);
	hdr->key[0] = key[0];
	hdr->key[1] = key[1];
	hdr->cells = AG_INDEX_CELLS(ctx->max_agents);
	hdr->used = hdr->tombs = 0;
	return 0;
}

/* ---- walking every record ----------------------------------------------------- */

#define NAMES_CHUNK 4096

/* Without a mapping: chunks of the array through batch lookups. */
static int walk_lookup(struct ag_ctx *ctx,
		       int (*fn)(void *arg, __u32 slot, const struct ag_agent_info *info),
		       void *arg)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	__u32 *slots = calloc(NAMES_CHUNK, sizeof(*slots));
	struct ag_agent_info *infos = calloc(NAMES_CHUNK, sizeof(*infos));
	__u32 batch_key = 0, chunk, i;
	void *in = NULL;
	bool done = false;
	int err = 0;

	if (!slots || !infos) {
		err = ag_err(ENOMEM, "out of memory");
		goto out;
	}
	while (!done && !err) {
		chunk = NAMES_CHUNK;
		if (bpf_map_lookup_batch(ctx->fds[AG_M_NAMES], in, &batch_key, slots, infos,
					 &chunk, &opts)) {
			if (errno != ENOENT) {
				err = ag_err(errno, "cannot list %s: %s", AG_MAP_NAMES,
					     strerror(errno));
				break;
			}
			done = true;
		}
		in = &batch_key;
		for (i = 0; i < chunk && !err; i++) {
			if (!infos[i].name[0])
				continue;
			/* A record copied while it was written: read it again. */
			if ((infos[i].seq & 1) && record_lookup(ctx, slots[i], &infos[i]))
				continue;
			if (infos[i].name[0])
				err = fn(arg, slots[i], &infos[i]);
		}
	}
out:
	free(slots);
	free(infos);
	return err;
}

int ag_walk_names(struct ag_ctx *ctx,
		  int (*fn)(void *arg, __u32 slot, const struct ag_agent_info *info), void *arg)
{
	struct ag_agent_info info;
	__u32 slot;
	int err = 0;

	if (!ctx->names)
		return walk_lookup(ctx, fn, arg);
	for (slot = 0; slot < ctx->max_agents && !err; slot++) {
		if (!ctx->names[slot].name[0] || record_copy(ctx, slot, &info) || !info.name[0])
			continue;
		err = fn(arg, slot, &info);
	}
	return err;
}

/* Under the lock, at the repair: records a writer died in made whole (seq
 * even again; the repair then treats them by their contents). */
void ag_names_unstick(struct ag_ctx *ctx)
{
	__u32 slot, seq;

	if (!ctx->names)
		return;
	for (slot = 0; slot < ctx->max_agents; slot++) {
		seq = atomic_load_explicit(atomic_u32(&ctx->names[slot].seq), memory_order_relaxed);
		if (seq & 1)
			atomic_store_explicit(atomic_u32(&ctx->names[slot].seq), seq + 1,
					      memory_order_release);
	}
}
