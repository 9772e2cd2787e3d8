// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The state store's rating ids (store.h). dedup_log holds each id applied
 * under a sequence number, with the time it was applied: new ids go at its
 * end (MDB_APPEND) and the oldest are removed from its front. The daemon
 * finds an id through an index in memory, made from dedup_log when the
 * engine opens (agd_store_dedup_load) and kept with it by every change here.
 *
 * Why not B-trees by id (what earlier versions kept: dedup, id -> time,
 * and dedup_at, time | id): ids arrive in no order, so each went to a
 * random leaf, and a group commit of 20 000 ids dirtied most leaves of a
 * large tree (copied, written, synced). With random UUIDs as ids that was
 * 0.21-0.28 million ratings/s over NDJSON. Their entries move to
 * dedup_log when the engine opens (agd_store_dedup_migrate).
 *
 * The index: open addressing with linear probing, 12 bytes a slot, at most
 * three quarters full; a slot holds 32 bits of the id's keyed SipHash (its
 * home slot and a filter) and the id's sequence number. A slot whose hash
 * matches is confirmed by reading dedup_log in the caller's transaction, so
 * the answer is exact and sees the transaction's own writes. A transaction
 * that changed the index and did not commit leaves it ahead of the store:
 * agd_store_dedup_sync makes it again from dedup_log before the next one.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

#include "agentgate/siphash.h"
#include "store.h"
#include "store_int.h"

#define ID_MAX 256 /* bytes of an id in dedup_log (ratings' are at most 128) */
#define INDEX_MIN 1024

struct dedup_slot {
	__u64 seq1; /* the id's sequence in dedup_log + 1; 0: free */
	__u32 h;
} __attribute__((packed));

struct agd_dedup_index {
	struct dedup_slot *slot;
	size_t cap, n; /* cap a power of 2 */
	__u64 k0, k1;
	__u64 next_seq; /* dedup_log's next key */
	bool dirty;     /* changed by a transaction not (yet) committed */
};

#define HUGE_PAGE (2u << 20)

/* The bytes a table of cap slots takes: a heap block below 2 MiB, else
 * whole huge pages. */
static size_t slots_bytes(size_t cap)
{
	size_t bytes = cap * sizeof(struct dedup_slot);

	return bytes < HUGE_PAGE ? bytes : (bytes + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
}

/* cap zeroed slots. Tables of 2 MiB and more are mapped for transparent
 * huge pages: a lookup is a random read of the table, and with 4 KiB pages
 * each was a TLB miss and each first touch a page fault. */
static struct dedup_slot *slots_alloc(size_t cap)
{
	size_t bytes = slots_bytes(cap);
	void *p;

	if (bytes < HUGE_PAGE)
		return calloc(cap, sizeof(struct dedup_slot));
	p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	madvise(p, bytes, MADV_HUGEPAGE); /* a hint: without it, 4 KiB pages */
	return p;
}

static void slots_free(struct dedup_slot *slot, size_t cap)
{
	size_t bytes = slots_bytes(cap);

	if (bytes < HUGE_PAGE)
		free(slot);
	else if (slot)
		munmap(slot, bytes);
}

static __u32 id_hash(const struct agd_dedup_index *x, const char *id, size_t len)
{
	return (__u32)ag_siphash13(x->k0, x->k1, id, len);
}

/* The slot for (h, seq1) in a table known to have room. */
static void index_put(struct dedup_slot *slot, size_t cap, __u32 h, __u64 seq1)
{
	size_t i = h & (cap - 1);

	while (slot[i].seq1)
		i = (i + 1) & (cap - 1);
	slot[i].seq1 = seq1;
	slot[i].h = h;
}

static int index_grow(struct agd_dedup_index *x)
{
	size_t cap = x->cap * 2, i;
	struct dedup_slot *slot;

	if (cap > (size_t)1 << 32) /* the home slot comes from 32 bits */
		return -ENOSPC;
	slot = slots_alloc(cap);
	if (!slot)
		return -ENOMEM;
	for (i = 0; i < x->cap; i++)
		if (x->slot[i].seq1)
			index_put(slot, cap, x->slot[i].h, x->slot[i].seq1);
	slots_free(x->slot, x->cap);
	x->slot = slot;
	x->cap = cap;
	return 0;
}

/* Removes slot i, moving later slots of the run back where their probe
 * allows (no tombstones, so lookups stay short). */
static void index_remove_at(struct agd_dedup_index *x, size_t i)
{
	size_t mask = x->cap - 1, j = i;

	for (;;) {
		size_t home;

		j = (j + 1) & mask;
		if (!x->slot[j].seq1)
			break;
		home = x->slot[j].h & mask;
		/* j's entry may move to i when its home is not in (i, j] */
		if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
			x->slot[i] = x->slot[j];
			i = j;
		}
	}
	x->slot[i].seq1 = 0;
	x->n--;
}

static void index_free(struct agd_dedup_index *x)
{
	if (x) {
		slots_free(x->slot, x->cap);
		free(x);
	}
}

/* 1 when dedup_log holds id under seq1 - 1, 0 when not, negative errno. */
static int confirm(struct agd_store *st, MDB_txn *txn, const char *id, __u64 seq1)
{
	__u64 be = htobe64(seq1 - 1);
	MDB_val k = { 8, &be }, v;
	size_t len = strlen(id);
	int rc = mdb_get(txn, st->dedup_log, &k, &v);

	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return agd_store_errno(rc);
	return v.mv_size == 8 + len && !memcmp((char *)v.mv_data + 8, id, len);
}

/* The slot holding id (its index), or -1 when none; negative errno below that. */
static long long find(struct agd_store *st, MDB_txn *txn, const char *id, __u32 h)
{
	struct agd_dedup_index *x = st->ids;
	size_t i = h & (x->cap - 1);

	for (; x->slot[i].seq1; i = (i + 1) & (x->cap - 1)) {
		int rc;

		if (x->slot[i].h != h)
			continue;
		rc = confirm(st, txn, id, x->slot[i].seq1);
		if (rc < 0)
			return rc - 1;
		if (rc)
			return (long long)i;
	}
	return -1;
}

int agd_store_dedup_load(struct agd_store *st, MDB_txn *txn)
{
	struct agd_dedup_index *x = calloc(1, sizeof(*x));
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	MDB_stat s;
	__u64 key[2];
	bool first = true;
	int rc;

	if (!x)
		return -ENOMEM;
	if (st->ids) { /* made again: its hash key kept (any would do) */
		x->k0 = st->ids->k0;
		x->k1 = st->ids->k1;
	} else if (getrandom(key, sizeof(key), 0) != sizeof(key)) {
		free(x);
		return -errno;
	} else {
		x->k0 = key[0];
		x->k1 = key[1];
	}
	rc = mdb_stat(txn, st->dedup_log, &s);
	for (x->cap = INDEX_MIN; !rc && x->cap / 4 * 3 < s.ms_entries; x->cap *= 2)
		;
	x->slot = rc ? NULL : slots_alloc(x->cap);
	if (!rc && !x->slot)
		rc = ENOMEM;
	if (!rc)
		rc = mdb_cursor_open(txn, st->dedup_log, &cur);
	while (!rc && !(rc = mdb_cursor_get(cur, &k, &v, first ? MDB_FIRST : MDB_NEXT))) {
		__u64 seq;

		first = false;
		if (k.mv_size != 8 || v.mv_size < 8 || x->n == x->cap / 4 * 3)
			continue; /* not ours (prune removes it); or more than counted */
		memcpy(&seq, k.mv_data, 8);
		seq = be64toh(seq);
		index_put(x->slot, x->cap, id_hash(x, (char *)v.mv_data + 8, v.mv_size - 8),
			  seq + 1);
		x->n++;
		x->next_seq = seq + 1;
	}
	if (cur)
		mdb_cursor_close(cur);
	if (rc && rc != MDB_NOTFOUND) {
		index_free(x);
		return rc == ENOMEM ? -ENOMEM : agd_store_errno(rc);
	}
	index_free(st->ids);
	st->ids = x;
	return 0;
}

int agd_store_dedup_sync(struct agd_store *st, MDB_txn *txn)
{
	return st->ids && st->ids->dirty ? agd_store_dedup_load(st, txn) : 0;
}

void agd_store_dedup_settled(struct agd_store *st, bool committed)
{
	if (st->ids && committed)
		st->ids->dirty = false;
}

void agd_store_dedup_unload(struct agd_store *st)
{
	index_free(st->ids);
	st->ids = NULL;
}

void agd_store_dedup_prefetch(const struct agd_store *st, const char *id)
{
	const struct agd_dedup_index *x = st->ids;

	if (x)
		__builtin_prefetch(&x->slot[id_hash(x, id, strlen(id)) & (x->cap - 1)]);
}

int agd_store_dedup_seen(struct agd_store *st, MDB_txn *txn, const char *id)
{
	long long i;

	if (!st->ids)
		return -ENOTCONN;
	i = find(st, txn, id, id_hash(st->ids, id, strlen(id)));
	return i >= 0 ? 1 : i == -1 ? 0 : (int)(i + 1);
}

/* id applied at ms at dedup_log's end. */
static int log_append(struct agd_store *st, MDB_txn *txn, __u64 seq, const char *id, __u64 ms)
{
	__u8 buf[8 + ID_MAX];
	size_t len = strlen(id);
	__u64 be = htobe64(seq), at = htobe64(ms);
	MDB_val k = { 8, &be }, v = { 8 + len, buf };

	if (len > ID_MAX)
		return -EINVAL;
	memcpy(buf, &at, 8);
	memcpy(buf + 8, id, len);
	return agd_store_errno(mdb_put(txn, st->dedup_log, &k, &v, MDB_APPEND));
}

int agd_store_dedup_add(struct agd_store *st, MDB_txn *txn, const char *id, __u64 now_ms)
{
	struct agd_dedup_index *x = st->ids;
	long long i;
	__u32 h;
	int rc;

	if (!x)
		return -ENOTCONN;
	h = id_hash(x, id, strlen(id));
	i = find(st, txn, id, h);
	if (i >= 0)
		return 1; /* seen: one lookup answers and records */
	if (i != -1)
		return (int)(i + 1);
	if (x->n + 1 > x->cap / 4 * 3) {
		rc = index_grow(x);
		if (rc)
			return rc;
	}
	x->dirty = true;
	rc = log_append(st, txn, x->next_seq, id, now_ms);
	if (rc)
		return rc;
	index_put(x->slot, x->cap, h, ++x->next_seq);
	x->n++;
	return 0;
}

__u64 agd_store_dedup_count(struct agd_store *st, MDB_txn *txn)
{
	MDB_stat s;

	if (st->ids)
		return st->ids->n;
	return mdb_stat(txn, st->dedup_log, &s) ? 0 : s.ms_entries;
}

int agd_store_dedup_prune(struct agd_store *st, MDB_txn *txn, __u64 now_ms, __u64 window_ms,
			 __u64 max_ids, size_t budget)
{
	struct agd_dedup_index *x = st->ids;
	__u64 cutoff = now_ms > window_ms ? now_ms - window_ms : 0;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;

	if (!x)
		return -ENOTCONN;
	rc = mdb_cursor_open(txn, st->dedup_log, &cur);
	if (rc)
		return agd_store_errno(rc);
	x->dirty = true;
	/* In the order applied: an entry inside the window stops the pruning
	 * (after a step back of the clock, older ones behind it wait for it). */
	while (budget-- && !(rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST))) {
		__u64 at, seq;
		size_t i;
		__u32 h;

		if (k.mv_size != 8 || v.mv_size < 8)
			goto drop; /* not ours: remove rather than stop pruning */
		memcpy(&at, v.mv_data, 8);
		at = be64toh(at);
		if (at >= cutoff && x->n <= max_ids)
			break;
		memcpy(&seq, k.mv_data, 8);
		seq = be64toh(seq);
		h = id_hash(x, (char *)v.mv_data + 8, v.mv_size - 8);
		for (i = h & (x->cap - 1); x->slot[i].seq1; i = (i + 1) & (x->cap - 1))
			if (x->slot[i].seq1 == seq + 1) {
				index_remove_at(x, i);
				break;
			}
drop:
		rc = mdb_cursor_del(cur, 0);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

int agd_store_dedup_migrate(struct agd_store *st, MDB_txn *txn, size_t budget, bool *more)
{
	MDB_cursor *cur = NULL, *last = NULL;
	__u64 seq = 0;
	MDB_val k, v;
	MDB_stat s;
	int err = 0, rc = mdb_stat(txn, st->dedup, &s);

	*more = false;
	if (!rc && s.ms_entries)
		rc = mdb_drop(txn, st->dedup, 0); /* dedup_at holds the same ids */
	if (!rc)
		rc = mdb_cursor_open(txn, st->dedup_log, &last);
	if (!rc && !(rc = mdb_cursor_get(last, &k, &v, MDB_LAST)) && k.mv_size == 8) {
		memcpy(&seq, k.mv_data, 8);
		seq = be64toh(seq) + 1;
	}
	if (rc == MDB_NOTFOUND)
		rc = 0;
	if (!rc)
		rc = mdb_cursor_open(txn, st->dedup_at, &cur);
	/* In dedup_at's order (time, then id): the order they expire in. */
	while (!rc && !(rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST))) {
		char id[ID_MAX + 1];
		__u64 at;

		if (!budget--) {
			*more = true;
			break;
		}
		if (k.mv_size > 8 && k.mv_size - 8 <= ID_MAX) {
			memcpy(&at, k.mv_data, 8);
			memcpy(id, (char *)k.mv_data + 8, k.mv_size - 8);
			id[k.mv_size - 8] = 0;
			err = log_append(st, txn, seq++, id, be64toh(at));
			if (err)
				break;
		}
		rc = mdb_cursor_del(cur, 0);
	}
	if (cur)
		mdb_cursor_close(cur);
	if (last)
		mdb_cursor_close(last);
	if (err)
		return err;
	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}
