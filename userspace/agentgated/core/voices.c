// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Voices in memory, logged per transaction, folded into the store (voices.h). */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "agentgate/siphash.h"
#include "rating.h"
#include "voices.h"

#define USER_MAX AGD_RATING_USER_MAX
_Static_assert(USER_MAX <= 255 && USER_MAX == sizeof(((struct agd_vlog_rec *)0)->user) - 1,
	       "a user fits the voice log's length byte");

/* One voice; index 0 of the pool is no node. */
struct vnode {
	__u32 hash;       /* of (its agent's index, user) */
	__u32 next;       /* in its bucket, or in the free list */
	__u32 agent_next; /* the agent's next voice */
	__u32 agent;      /* index of its agent */
	__u32 user_off;   /* the user's bytes in the arena */
	__u8 user_len, score, flags, pad;
	__s64 ts_ms;
};
_Static_assert(sizeof(struct vnode) == 32, "a voice takes 32 bytes in memory");

#define VN_USED 1

/* An agent with voices; index 0 is no agent. */
struct vagent {
	char name[AG_NAME_MAX + 1];
	bool used;
	__u32 hash, next, head, count;
};

struct agd_voices {
	struct vnode *nodes;
	__u32 nodes_n, nodes_cap, free_nodes;
	__u32 *buckets, nbuckets;
	struct vagent *agents;
	__u32 agents_n, agents_cap, free_agents;
	__u32 *abuckets, nabuckets;
	char *arena;
	size_t arena_len, arena_cap, garbage;
	__u64 count;
	__u64 k0, k1; /* SipHash key: user ids come from clients */
	/* The log records of the open transaction. */
	unsigned char *pend;
	size_t pend_len, pend_cap, pend_records;
	__u64 logged; /* records in the store's log */
	__u64 fold_retry; /* after a fold that failed: not again before this many */
	bool legacy;  /* the store's voices database holds voices (read at open) */
	bool folding, stale;
};

static __u32 agent_hash(const struct agd_voices *v, const char *name)
{
	return (__u32)ag_siphash13(v->k0, v->k1, name, strlen(name));
}

static __u32 voice_hash(const struct agd_voices *v, __u32 agent, const char *user, size_t len)
{
	unsigned char buf[4 + USER_MAX];

	memcpy(buf, &agent, 4);
	memcpy(buf + 4, user, len);
	return (__u32)ag_siphash13(v->k0, v->k1, buf, 4 + len);
}

/* ---- the tables ---------------------------------------------------------------- */

static int grow(void **p, __u32 *cap, size_t size, __u32 want)
{
	__u32 n = *cap ? *cap : 64;
	void *m;

	if (want <= *cap)
		return 0;
	while (n < want)
		n *= 2;
	m = realloc(*p, (size_t)n * size);
	if (!m)
		return -ENOMEM;
	memset((char *)m + (size_t)*cap * size, 0, (size_t)(n - *cap) * size);
	*p = m;
	*cap = n;
	return 0;
}

/* Chains hashed items again into n buckets (a power of two). */
static int rebucket(__u32 **buckets, __u32 *nbuckets, __u32 n, void *items, size_t size,
		    __u32 items_n, size_t hash_off, size_t next_off, size_t used_off,
		    unsigned char used_bit)
{
	__u32 *b = calloc(n, sizeof(*b)), i;

	if (!b)
		return -ENOMEM;
	for (i = 1; i < items_n; i++) {
		char *it = (char *)items + (size_t)i * size;
		__u32 h, *next = (__u32 *)(it + next_off);

		if (!(*(unsigned char *)(it + used_off) & used_bit))
			continue;
		memcpy(&h, it + hash_off, 4);
		*next = b[h & (n - 1)];
		b[h & (n - 1)] = i;
	}
	free(*buckets);
	*buckets = b;
	*nbuckets = n;
	return 0;
}

static __u32 agent_find(struct agd_voices *v, const char *name, bool add)
{
	__u32 h, i;
	struct vagent *a;

	if (!v->abuckets)
		return 0; /* a table that could not be read: agd_voices_sync */
	h = agent_hash(v, name);
	for (i = v->abuckets[h & (v->nabuckets - 1)]; i; i = v->agents[i].next)
		if (v->agents[i].hash == h && !strcmp(v->agents[i].name, name))
			return i;
	if (!add || strlen(name) > AG_NAME_MAX)
		return 0;
	if (v->free_agents) {
		i = v->free_agents;
		v->free_agents = v->agents[i].next;
	} else {
		if (grow((void **)&v->agents, &v->agents_cap, sizeof(*v->agents), v->agents_n + 1))
			return 0;
		i = v->agents_n++;
	}
	if (v->agents_n > v->nabuckets &&
	    rebucket(&v->abuckets, &v->nabuckets, v->nabuckets * 2, v->agents, sizeof(*a),
		     v->agents_n, offsetof(struct vagent, hash), offsetof(struct vagent, next),
		     offsetof(struct vagent, used), 1)) {
		v->agents[i].next = v->free_agents;
		v->free_agents = i;
		return 0;
	}
	a = &v->agents[i];
	memset(a, 0, sizeof(*a));
	strcpy(a->name, name);
	a->used = true;
	a->hash = h;
	a->next = v->abuckets[h & (v->nabuckets - 1)];
	v->abuckets[h & (v->nabuckets - 1)] = i;
	return i;
}

static __u32 voice_find(const struct agd_voices *v, __u32 agent, const char *user, size_t len,
			__u32 h)
{
	__u32 i;

	for (i = v->buckets[h & (v->nbuckets - 1)]; i; i = v->nodes[i].next) {
		const struct vnode *n = &v->nodes[i];

		if (n->hash == h && n->agent == agent && n->user_len == len &&
		    (!len || !memcmp(v->arena + n->user_off, user, len)))
			return i;
	}
	return 0;
}

static int arena_add(struct agd_voices *v, const char *user, size_t len, __u32 *off)
{
	*off = (__u32)v->arena_len;
	if (!len)
		return 0; /* the shared anonymous voice: no bytes */
	if (v->arena_len + len > UINT32_MAX)
		return -ENOMEM;
	if (v->arena_len + len > v->arena_cap) {
		size_t cap = v->arena_cap ? v->arena_cap * 2 : 65536;
		char *m;

		while (cap < v->arena_len + len)
			cap *= 2;
		m = realloc(v->arena, cap);
		if (!m)
			return -ENOMEM;
		v->arena = m;
		v->arena_cap = cap;
	}
	memcpy(v->arena + v->arena_len, user, len);
	*off = (__u32)v->arena_len;
	v->arena_len += len;
	return 0;
}

/* Sets a voice in memory; *old: its score before, 0 for a new voice. */
static int put_voice(struct agd_voices *v, const char *agent, const char *user, int score,
		     __s64 ts_ms, int *old)
{
	size_t len = strlen(user);
	__u32 a, h, i;
	struct vnode *n;

	*old = 0;
	if (len > USER_MAX) /* "": the shared anonymous voice */
		return -EINVAL;
	if (!v->buckets)
		return -EIO; /* not read: agd_voices_sync */
	a = agent_find(v, agent, true);
	if (!a)
		return -ENOMEM;
	h = voice_hash(v, a, user, len);
	i = voice_find(v, a, user, len, h);
	if (!i) {
		__u32 off;

		if (v->count + 1 > v->nbuckets &&
		    rebucket(&v->buckets, &v->nbuckets, v->nbuckets * 2, v->nodes, sizeof(*n),
			     v->nodes_n, offsetof(struct vnode, hash), offsetof(struct vnode, next),
			     offsetof(struct vnode, flags), VN_USED))
			return -ENOMEM;
		if (arena_add(v, user, len, &off))
			return -ENOMEM;
		if (v->free_nodes) {
			i = v->free_nodes;
			v->free_nodes = v->nodes[i].next;
		} else {
			if (grow((void **)&v->nodes, &v->nodes_cap, sizeof(*n), v->nodes_n + 1))
				return -ENOMEM;
			i = v->nodes_n++;
		}
		n = &v->nodes[i];
		*n = (struct vnode){ .hash = h, .agent = a, .user_off = off,
				     .user_len = (__u8)len, .flags = VN_USED };
		n->next = v->buckets[h & (v->nbuckets - 1)];
		v->buckets[h & (v->nbuckets - 1)] = i;
		n->agent_next = v->agents[a].head;
		v->agents[a].head = i;
		v->agents[a].count++;
		v->count++;
	}
	n = &v->nodes[i];
	*old = n->score;
	n->score = (__u8)score;
	n->ts_ms = ts_ms;
	return 0;
}

static void unlink_node(struct agd_voices *v, __u32 i)
{
	__u32 *pp = &v->buckets[v->nodes[i].hash & (v->nbuckets - 1)];

	while (*pp && *pp != i)
		pp = &v->nodes[*pp].next;
	if (*pp)
		*pp = v->nodes[i].next;
	v->garbage += v->nodes[i].user_len;
	v->nodes[i].flags = 0;
	v->nodes[i].next = v->free_nodes;
	v->free_nodes = i;
	v->count--;
}

/* Forgets the agent's voices; whether it had any. */
static bool drop_agent(struct agd_voices *v, const char *name)
{
	__u32 a = agent_find(v, name, false), i, next, *pp;

	if (!a)
		return false;
	for (i = v->agents[a].head; i; i = next) {
		next = v->nodes[i].agent_next;
		unlink_node(v, i);
	}
	pp = &v->abuckets[v->agents[a].hash & (v->nabuckets - 1)];
	while (*pp && *pp != a)
		pp = &v->agents[*pp].next;
	if (*pp)
		*pp = v->agents[a].next;
	v->agents[a].used = false;
	v->agents[a].next = v->free_agents;
	v->free_agents = a;
	return true;
}

/* ---- reading the store ----------------------------------------------------------- */

static void clear(struct agd_voices *v)
{
	free(v->nodes);
	free(v->buckets);
	free(v->agents);
	free(v->abuckets);
	free(v->arena);
	free(v->pend);
	memset(v, 0, offsetof(struct agd_voices, k0));
	v->pend = NULL;
	v->pend_len = v->pend_cap = v->pend_records = 0;
	v->logged = v->fold_retry = 0;
	v->legacy = v->folding = v->stale = false;
}

static int from_db(void *arg, const char *agent, const char *user, const struct agd_voice_rec *r)
{
	int old;

	if (r->score < 1 || r->score > 5)
		return -EUCLEAN;
	return put_voice(arg, agent, user, r->score, r->ts_ms, &old);
}

/* A value of the snapshot or the log: its records on top of the table. */
static int from_records(struct agd_voices *v, const unsigned char *data, size_t len, bool log)
{
	const unsigned char *p = data;
	struct agd_vlog_rec r;
	int rc, old;

	while ((rc = agd_vlog_decode(&p, data + len, &r)) == 1) {
		v->logged += log;
		if (r.kind == AGD_VLOG_DROP)
			drop_agent(v, r.agent);
		else if ((rc = put_voice(v, r.agent, r.user, r.score, r.ts_ms, &old)))
			return rc;
	}
	return rc;
}

static int from_snap(void *arg, const unsigned char *data, size_t len)
{
	return from_records(arg, data, len, false);
}

static int from_log(void *arg, const unsigned char *data, size_t len)
{
	return from_records(arg, data, len, true);
}

static int load(struct agd_voices *v, struct agd_store *st, MDB_txn *txn, struct agd_err *err)
{
	int rc;

	v->nbuckets = 1024;
	v->nabuckets = 256;
	v->nodes_n = v->agents_n = 1; /* index 0: none */
	v->buckets = calloc(v->nbuckets, sizeof(*v->buckets));
	v->abuckets = calloc(v->nabuckets, sizeof(*v->abuckets));
	if (!v->buckets || !v->abuckets ||
	    grow((void **)&v->nodes, &v->nodes_cap, sizeof(*v->nodes), 1) ||
	    grow((void **)&v->agents, &v->agents_cap, sizeof(*v->agents), 1))
		return agd_errf(err, -ENOMEM, "voices: out of memory");
	/* A store from before the snapshot keeps them in the voices database. */
	rc = agd_store_voices_foreach(st, txn, from_db, v);
	if (rc == -EUCLEAN)
		return agd_errf(err, rc, "state store: the voices database holds a damaged voice");
	if (!rc)
		rc = agd_store_vlog_foreach(st, txn, AGD_VLOG_SNAP, from_snap, v);
	if (rc == -EUCLEAN)
		return agd_errf(err, rc, "state store: the voice snapshot holds a damaged record");
	if (!rc)
		rc = agd_store_vlog_foreach(st, txn, AGD_VLOG_LOG, from_log, v);
	if (rc == -EUCLEAN)
		return agd_errf(err, rc, "state store: the voice log holds a damaged record");
	if (rc)
		return agd_store_fail(err, rc, "cannot read the voices");
	v->legacy = agd_store_voice_count(st, txn, NULL) > 0;
	return 0;
}

int agd_voices_open(struct agd_store *st, MDB_txn *txn, struct agd_voices **out,
		    struct agd_err *err)
{
	struct agd_voices *v = calloc(1, sizeof(*v));
	__u64 key[2];
	int rc;

	*out = NULL;
	if (!v)
		return agd_errf(err, -ENOMEM, "voices: out of memory");
	if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key)) {
		free(v);
		return agd_errf(err, -errno, "voices: no random key: %s", strerror(errno));
	}
	v->k0 = key[0];
	v->k1 = key[1];
	rc = load(v, st, txn, err);
	if (rc) {
		agd_voices_free(v);
		return rc;
	}
	*out = v;
	return 0;
}

void agd_voices_free(struct agd_voices *v)
{
	if (!v)
		return;
	clear(v);
	free(v);
}

int agd_voices_sync(struct agd_voices *v, struct agd_store *st, MDB_txn *txn,
		    struct agd_err *err)
{
	int rc;

	if (!v->stale && !v->pend_len)
		return 0;
	clear(v);
	rc = load(v, st, txn, err);
	if (rc) { /* empty and stale: refused until a reading succeeds */
		clear(v);
		v->stale = true;
	}
	return rc;
}

/* ---- changes ---------------------------------------------------------------------- */

/* Log records a fold waits for: twice the voices, at least FOLD_MIN. */
static __u64 fold_at(const struct agd_voices *v)
{
	return 2 * v->count > AGD_VOICES_FOLD_MIN ? 2 * v->count : AGD_VOICES_FOLD_MIN;
}

/* Room for one more record in the transaction's log value. */
static int pend_room(struct agd_voices *v)
{
	if (v->pend_len + AGD_VLOG_VOICE_MAX > v->pend_cap) {
		size_t cap = v->pend_cap ? v->pend_cap * 2 : 65536;
		unsigned char *m = realloc(v->pend, cap);

		if (!m)
			return -ENOMEM;
		v->pend = m;
		v->pend_cap = cap;
	}
	return 0;
}

static int pend_add(struct agd_voices *v, const struct agd_vlog_rec *r)
{
	if (pend_room(v))
		return -ENOMEM;
	v->pend_len += agd_vlog_encode(v->pend + v->pend_len, r);
	v->pend_records++;
	return 0;
}

int agd_voices_get(struct agd_voices *v, const char *agent, const char *user, int *score)
{
	size_t len = strlen(user);
	__u32 a = agent_find(v, agent, false), i;

	if (!a || len > USER_MAX)
		return 0;
	i = voice_find(v, a, user, len, voice_hash(v, a, user, len));
	if (!i)
		return 0;
	*score = v->nodes[i].score;
	return 1;
}

int agd_voices_set(struct agd_voices *v, const char *agent, const char *user, int score,
		   __s64 ts_ms, int *old)
{
	int rc = put_voice(v, agent, user, score, ts_ms, old);

	if (!rc)
		rc = pend_room(v);
	if (rc) {
		v->stale = true;
		return rc;
	}
	v->pend_len += agd_vlog_encode_voice(v->pend + v->pend_len, agent, user, score, ts_ms);
	v->pend_records++;
	return 0;
}

int agd_voices_drop(struct agd_voices *v, const char *agent)
{
	struct agd_vlog_rec r = { .kind = AGD_VLOG_DROP };
	int rc;

	if (!drop_agent(v, agent))
		return 0;
	snprintf(r.agent, sizeof(r.agent), "%s", agent);
	rc = pend_add(v, &r);
	if (rc)
		v->stale = true;
	return rc;
}

int agd_voices_flush(struct agd_voices *v, struct agd_store *st, MDB_txn *txn)
{
	if (!v->pend_len)
		return 0;
	return agd_store_vlog_append(st, txn, AGD_VLOG_LOG, v->pend, v->pend_len);
}

/* After a fold: the arena without the users of forgotten voices. */
static void compact_arena(struct agd_voices *v)
{
	char *m;
	size_t len = 0;
	__u32 i;

	if (v->garbage < 65536 || v->garbage * 2 < v->arena_len)
		return;
	m = malloc(v->arena_len - v->garbage + 1);
	if (!m)
		return; /* kept as it is */
	for (i = 1; i < v->nodes_n; i++) {
		struct vnode *n = &v->nodes[i];

		if (!(n->flags & VN_USED))
			continue;
		if (n->user_len)
			memcpy(m + len, v->arena + n->user_off, n->user_len);
		n->user_off = (__u32)len;
		len += n->user_len;
	}
	free(v->arena);
	v->arena = m;
	v->arena_cap = v->arena_len - v->garbage + 1;
	v->arena_len = len;
	v->garbage = 0;
}

void agd_voices_settled(struct agd_voices *v, bool committed)
{
	if (!committed) {
		if (v->pend_len)
			v->stale = true; /* memory is ahead: read again (agd_voices_sync) */
		if (v->folding) /* memory is as it was: fold again once the log grew */
			v->fold_retry = v->logged + fold_at(v);
		v->folding = false;
		return;
	}
	v->logged += v->pend_records;
	v->pend_len = v->pend_records = 0;
	if (!v->folding)
		return;
	v->folding = false;
	v->logged = v->fold_retry = 0;
	v->legacy = false;
	compact_arena(v);
}

/* ---- folding ----------------------------------------------------------------------- */

bool agd_voices_fold_due(const struct agd_voices *v)
{
	return !v->stale && v->logged >= fold_at(v) && v->logged >= v->fold_retry;
}

/* One value of the snapshot: the voices from node *next on, up to
 * AGD_VSNAP_VALUE_MAX bytes; *next past the last one taken. */
static int snap_value(struct agd_voices *v, struct agd_store *st, MDB_txn *txn, __u32 *next,
		      unsigned char *buf)
{
	size_t len = 0;
	__u32 i;

	for (i = *next; i < v->nodes_n && len + AGD_VLOG_VOICE_MAX <= AGD_VSNAP_VALUE_MAX; i++) {
		const struct vnode *x = &v->nodes[i];
		char user[USER_MAX + 1];

		if (!(x->flags & VN_USED))
			continue;
		if (x->user_len)
			memcpy(user, v->arena + x->user_off, x->user_len);
		user[x->user_len] = 0;
		len += agd_vlog_encode_voice(buf + len, v->agents[x->agent].name, user, x->score,
					     x->ts_ms);
	}
	*next = i;
	return len ? agd_store_vlog_append(st, txn, AGD_VLOG_SNAP, buf, len) : 0;
}

int agd_voices_fold(struct agd_voices *v, struct agd_store *st, MDB_txn *txn)
{
	unsigned char *buf = malloc(AGD_VSNAP_VALUE_MAX);
	__u32 next = 1;
	int rc;

	if (v->stale || !v->buckets) {
		free(buf);
		return -EIO; /* never a snapshot of a table that was not read */
	}
	if (!buf)
		return -ENOMEM;
	/* The whole table, written in sequence: a fold costs the same pages
	 * however the voices changed, once per as many records logged. */
	rc = agd_store_vlog_clear(st, txn, AGD_VLOG_SNAP);
	while (!rc && next < v->nodes_n)
		rc = snap_value(v, st, txn, &next, buf);
	free(buf);
	if (!rc)
		rc = agd_store_vlog_clear(st, txn, AGD_VLOG_LOG);
	if (!rc && v->legacy)
		rc = agd_store_voices_clear(st, txn);
	v->folding = !rc;
	return rc;
}

/* ---- figures ------------------------------------------------------------------------ */

__u64 agd_voices_logged(const struct agd_voices *v)
{
	return v->logged;
}

__u64 agd_voices_count(const struct agd_voices *v)
{
	return v->count;
}

__u64 agd_voices_of(struct agd_voices *v, const char *agent)
{
	__u32 a = agent_find(v, agent, false);

	return a ? v->agents[a].count : 0;
}

size_t agd_voices_bytes(const struct agd_voices *v)
{
	return (size_t)v->nodes_cap * sizeof(*v->nodes) + (size_t)v->nbuckets * 4 +
	       (size_t)v->agents_cap * sizeof(*v->agents) + (size_t)v->nabuckets * 4 +
	       v->arena_cap + v->pend_cap;
}
