// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The state store: its state and errors, closing, read transactions, agents,
 * defaults, the explain history, the read-only open (agentgate agent explain
 * links this file, with explain.c, store_check.c and policy.c, and no other
 * of the store's). Opening for the daemon, the guards and write transactions:
 * store_open.c; rules, deleted agents, meta, audit, walks: store_records.c;
 * rating ids: store_dedup.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "store.h"
#include "store_int.h"

/* The last LMDB result this thread converted: -ENOSPC stands for a full
 * map (--store-size) and for a full disk alike, and the message differs. */
static __thread int last_rc;

struct agd_store_global agd_store_g = { .fd = -1 };

/* LMDB reports a write the disk cut short as EIO: on a file system with
 * next to no space left, that is the full disk. */
static bool disk_full(void)
{
	struct statvfs v;

	return agd_store_g.dir[0] && !statvfs(agd_store_g.dir, &v) && (__u64)v.f_bavail * v.f_frsize < (256u << 10);
}

/* Async-signal-safe: the SIGBUS handler calls it. */
void agd_store_mark_damaged(enum damage kind, __u64 a, __u64 b)
{
	int none = 0;

	if (!atomic_compare_exchange_strong(&agd_store_g.claim, &none, 1))
		return;
	agd_store_g.a = a;
	agd_store_g.b = b;
	atomic_store(&agd_store_g.kind, (int)kind);
	if (agd_store_g.notify)
		agd_store_g.notify();
}

int agd_store_convert(int rc, bool count)
{
	if (rc == EIO && disk_full())
		rc = ENOSPC;
	last_rc = rc;
	switch (rc) {
	case MDB_SUCCESS:
		return 0;
	case MDB_NOTFOUND:
		return -ENOENT;
	case MDB_KEYEXIST:
		return -EEXIST;
	}
	if (count)
		atomic_fetch_add(&agd_store_g.errors, 1);
	switch (rc) {
	case MDB_MAP_FULL:
	case MDB_TXN_FULL:
		return -ENOSPC;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_PANIC:
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH:
		agd_store_mark_damaged(DMG_LMDB, (__u64)(__s64)rc, 0);
		return -EUCLEAN;
	case EIO:
		agd_store_mark_damaged(DMG_IO, 0, 0);
		return -EUCLEAN;
	default:
		return rc > 0 && rc < 4096 ? -rc : -EIO;
	}
}

int agd_store_errno(int rc)
{
	return agd_store_convert(rc, true);
}

bool agd_store_damaged(struct agd_err *why)
{
	int kind = atomic_load(&agd_store_g.kind);
	char what[200];

	switch (kind) {
	case DMG_NONE:
		return false;
	case DMG_LMDB:
		snprintf(what, sizeof(what), "LMDB: %s", mdb_strerror((int)(__s64)agd_store_g.a));
		break;
	case DMG_IO:
		snprintf(what, sizeof(what), "an I/O error on the file");
		break;
	case DMG_BUS:
		snprintf(what, sizeof(what), "a read at offset %llu faulted: the file was cut "
			 "short under the daemon", (unsigned long long)agd_store_g.a);
		break;
	case DMG_SHRUNK:
		snprintf(what, sizeof(what), "the file was cut short under the daemon, from %llu "
			 "to %llu bytes", (unsigned long long)agd_store_g.b, (unsigned long long)agd_store_g.a);
		break;
	case DMG_GONE:
		snprintf(what, sizeof(what), "the file was removed or replaced under the daemon");
		break;
	default:
		snprintf(what, sizeof(what), "LMDB failed one of its own checks");
		break;
	}
	agd_errf(why, -EUCLEAN, "the state store %s is damaged (%s)", agd_store_g.path, what);
	return true;
}

int agd_store_fail(struct agd_err *e, int err, const char *fmt, ...)
{
	char context[512];
	va_list ap;

	if (!e)
		return err;
	if (err == -EUCLEAN) {
		size_t n;

		if (!agd_store_damaged(e))
			agd_errf(e, err, "the state store %s is damaged", agd_store_g.path);
		n = strlen(e->msg);
		snprintf(e->msg + n, sizeof(e->msg) - n, ": changes are refused until it is restored");
	} else if (err == -ENOSPC && (last_rc == ENOSPC || last_rc == EDQUOT)) {
		agd_errf(e, err, "no space left on the state directory's file system (free some; "
			 "nothing was changed)");
	} else if (err == -ENOSPC) {
		agd_errf(e, err, "the state store is full (raise --store-size)");
	} else {
		agd_errf(e, err, "%s", strerror(-err));
	}
	e->code = err;
	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(context, sizeof(context), fmt, ap);
		va_end(ap);
		agd_err_prefix(e, "%s", context);
	}
	return err;
}

/* ---- closing ------------------------------------------------------------------- */

void agd_store_disarm(void)
{
	if (agd_store_g.bus_armed)
		sigaction(SIGBUS, &agd_store_g.old_bus, NULL);
	agd_store_g.bus_armed = false;
	agd_store_g.map = NULL;
	agd_store_g.meta_len = 0;
	agd_store_g.fd = -1;
}

void agd_store_close(struct agd_store *st)
{
	agd_store_disarm();
	if (st->env)
		mdb_env_close(st->env);
	st->env = NULL;
}

void agd_rec_policy(const struct agd_agent_rec *r, struct agd_policy *own)
{
	*own = (struct agd_policy){
		.r0 = r->r0,
		.alpha = r->alpha,
		.r_min = r->r_min,
		.r_max = r->r_max,
		.burst = r->burst,
		.burst_kind = (enum agd_burst_kind)r->burst_kind,
		.unit = (enum ag_unit)r->unit,
		.pinned = r->pinned,
		.ttl = r->ttl,
	};
}

void agd_rec_set_policy(struct agd_agent_rec *r, const struct agd_policy *own, unsigned int set)
{
	r->set = set;
	r->r0 = own->r0;
	r->alpha = own->alpha;
	r->r_min = own->r_min;
	r->r_max = own->r_max;
	r->burst = own->burst;
	r->burst_kind = own->burst_kind;
	r->unit = own->unit;
	r->pinned = own->pinned;
	r->ttl = set & AGD_POL_TTL ? (__u32)own->ttl : 0;
}

void agd_rec_effective(const struct agd_agent_rec *r, const struct agd_policy *defaults,
		      struct agd_policy *out)
{
	struct agd_policy own;

	agd_rec_policy(r, &own);
	agd_policy_merge(defaults, &own, r->set, out);
	out->ttl = agd_policy_ttl(defaults, out, r->set, r->implicit);
}

int agd_store_agent_put(struct agd_store *st, MDB_txn *txn, const char *name,
		       const struct agd_agent_rec *rec)
{
	MDB_val k = str_val(name), v = { sizeof(*rec), (void *)rec };

	return agd_store_errno(mdb_put(txn, st->agents, &k, &v, 0));
}

int agd_store_agent_get(struct agd_store *st, MDB_txn *txn, const char *name,
		       struct agd_agent_rec *rec)
{
	MDB_val k = str_val(name), v;
	int rc = mdb_get(txn, st->agents, &k, &v);

	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc)
		return agd_store_errno(rc);
	if (v.mv_size != sizeof(*rec))
		return -EUCLEAN;
	memcpy(rec, v.mv_data, sizeof(*rec));
	return 0;
}

/* In store.c, not store_records.c: agent explain (the CLI) reads it. */
int agd_store_window_get(struct agd_store *st, MDB_txn *txn, const char *agent,
			struct agd_window_rec *rec)
{
	return rec_get(txn, st->windows, str_val(agent), rec, sizeof(*rec));
}

/* A record as stored: today's, or one from before user_cap (its set has
 * no AGD_INF_USER_CAP). 0 for any other size or version. */
static bool influence_of_val(const MDB_val *v, struct agd_influence_rec *rec)
{
	if (v->mv_size != sizeof(*rec) && v->mv_size != AGD_INFLUENCE_REC_V1_SIZE)
		return false;
	memset(rec, 0, sizeof(*rec));
	memcpy(rec, v->mv_data, v->mv_size);
	if (v->mv_size == AGD_INFLUENCE_REC_V1_SIZE)
		rec->set &= ~(__u32)AGD_INF_USER_CAP;
	return rec->version == AGD_STORE_VERSION;
}

int agd_store_influence_get(struct agd_store *st, MDB_txn *txn, const char *agent,
			   struct agd_influence_rec *rec)
{
	MDB_val k = str_val(agent), v;
	int rc = st->influence ? mdb_get(txn, st->influence, &k, &v) : MDB_NOTFOUND;

	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return agd_store_errno(rc);
	return influence_of_val(&v, rec);
}

int agd_store_influence_put(struct agd_store *st, MDB_txn *txn, const char *agent,
			   const struct agd_influence_rec *rec)
{
	MDB_val k = str_val(agent), v = { sizeof(*rec), (void *)rec };
	int rc = rec->set ? mdb_put(txn, st->influence, &k, &v, 0) :
			    mdb_del(txn, st->influence, &k, NULL);

	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

int agd_store_influence_foreach(struct agd_store *st, MDB_txn *txn,
			       int (*fn)(void *arg, const char *agent,
					 const struct agd_influence_rec *rec),
			       void *arg)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, st->influence, &cur), err = 0;

	if (rc)
		return agd_store_errno(rc);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct agd_influence_rec r;
		char name[AG_NAME_MAX + 1];

		if (!k.mv_size || k.mv_size > AG_NAME_MAX || !influence_of_val(&v, &r))
			continue;
		memcpy(name, k.mv_data, k.mv_size);
		name[k.mv_size] = 0;
		err = fn(arg, name, &r);
	}
	mdb_cursor_close(cur);
	if (err)
		return err;
	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

/* ---- the voice log (store.h) --------------------------------------------------- */

size_t agd_vlog_encode_voice(unsigned char *buf, const char *agent, const char *user, int score,
			     __s64 ts_ms)
{
	size_t a = strnlen(agent, AG_NAME_MAX), u = strnlen(user, 128), n = 0;
	__u64 ts = (__u64)ts_ms;
	int i;

	buf[n++] = AGD_VLOG_VOICE;
	buf[n++] = (unsigned char)a;
	buf[n++] = (unsigned char)u;
	memcpy(buf + n, agent, a);
	n += a;
	memcpy(buf + n, user, u);
	n += u;
	buf[n++] = (unsigned char)score;
	for (i = 0; i < 8; i++)
		buf[n++] = (unsigned char)(ts >> (8 * i));
	return n;
}

size_t agd_vlog_encode(unsigned char *buf, const struct agd_vlog_rec *r)
{
	size_t a = strnlen(r->agent, AG_NAME_MAX);

	if (r->kind == AGD_VLOG_VOICE)
		return agd_vlog_encode_voice(buf, r->agent, r->user, r->score, r->ts_ms);
	buf[0] = (unsigned char)r->kind;
	buf[1] = (unsigned char)a;
	memcpy(buf + 2, r->agent, a);
	return 2 + a;
}

int agd_vlog_decode(const unsigned char **pp, const unsigned char *end, struct agd_vlog_rec *r)
{
	const unsigned char *p = *pp;
	size_t a, u = 0;
	__u64 ts = 0;
	int i;

	if (p >= end)
		return 0;
	if (end - p < 2 || (p[0] != AGD_VLOG_VOICE && p[0] != AGD_VLOG_DROP))
		return -EUCLEAN;
	r->kind = p[0];
	a = p[1];
	p += 2;
	if (r->kind == AGD_VLOG_VOICE) {
		if (p >= end)
			return -EUCLEAN;
		u = *p++;
	}
	if (!a || a > AG_NAME_MAX || u > 128 ||
	    (size_t)(end - p) < a + (r->kind == AGD_VLOG_VOICE ? u + 9 : 0))
		return -EUCLEAN;
	memcpy(r->agent, p, a);
	r->agent[a] = 0;
	p += a;
	r->user[0] = 0;
	r->score = 0;
	r->ts_ms = 0;
	if (r->kind == AGD_VLOG_VOICE) {
		memcpy(r->user, p, u);
		r->user[u] = 0;
		p += u;
		r->score = *p++;
		for (i = 0; i < 8; i++)
			ts |= (__u64)*p++ << (8 * i);
		r->ts_ms = (__s64)ts;
		if (r->score < 1 || r->score > 5 || memchr(r->agent, 0, a) ||
		    memchr(r->user, 0, u))
			return -EUCLEAN;
	} else if (memchr(r->agent, 0, a)) {
		return -EUCLEAN;
	}
	*pp = p;
	return 1;
}

int agd_store_vlog_foreach(struct agd_store *st, MDB_txn *txn, enum agd_vlog_db db,
			  int (*fn)(void *arg, const unsigned char *data, size_t len), void *arg)
{
	MDB_dbi dbi = db == AGD_VLOG_SNAP ? st->voice_snap : st->voice_log;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, err = 0;

	if (!dbi)
		return 0;
	rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc)
		return agd_store_errno(rc);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
		err = fn(arg, v.mv_data, v.mv_size);
	mdb_cursor_close(cur);
	if (err)
		return err;
	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

int agd_store_voices_foreach(struct agd_store *st, MDB_txn *txn,
			    int (*fn)(void *arg, const char *agent, const char *user,
				      const struct agd_voice_rec *rec),
			    void *arg)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, err = 0;

	if (!st->voices)
		return 0;
	rc = mdb_cursor_open(txn, st->voices, &cur);
	if (rc)
		return agd_store_errno(rc);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		const char *key = k.mv_data, *nul = memchr(key, 0, k.mv_size);
		char agent[AG_NAME_MAX + 1], user[128 + 1];
		struct agd_voice_rec rec;
		size_t a, u;

		a = nul ? (size_t)(nul - key) : 0;
		u = nul ? k.mv_size - a - 1 : 0;
		if (!nul || !a || a > AG_NAME_MAX || u > 128 || v.mv_size != sizeof(rec)) {
			err = -EUCLEAN; /* a voice of no layout this store writes */
			break;
		}
		memcpy(agent, key, a);
		agent[a] = 0;
		memcpy(user, nul + 1, u);
		user[u] = 0;
		memcpy(&rec, v.mv_data, sizeof(rec));
		err = fn(arg, agent, user, &rec);
	}
	mdb_cursor_close(cur);
	if (err)
		return err;
	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

/* voices_of: the agent's users met in the snapshot and the log (from its
 * last drop on), each kept once as it is met (a set of strings, open
 * addressing), and whether a drop emptied the voices database's. */
struct voices_of {
	const char *agent;
	char **users; /* the set: NULL or a user (malloc'd) */
	size_t n, mask;
	bool dropped;
};

static size_t user_hash(const char *u)
{
	size_t h = 1469598103934665603ULL; /* FNV-1a: offline, on the store's own data */

	while (*u)
		h = (h ^ (unsigned char)*u++) * 1099511628211ULL;
	return h;
}

static void users_clear(struct voices_of *vo)
{
	size_t i;

	for (i = 0; vo->users && i <= vo->mask; i++) {
		free(vo->users[i]);
		vo->users[i] = NULL;
	}
	vo->n = 0;
}

/* Adds u to the set unless it is there: 0, or -ENOMEM. */
static int users_add(struct voices_of *vo, const char *u)
{
	size_t i;

	if (!vo->users || 2 * (vo->n + 1) > vo->mask + 1) {
		size_t cap = vo->users ? 2 * (vo->mask + 1) : 64, j;
		char **m = calloc(cap, sizeof(*m));

		if (!m)
			return -ENOMEM;
		for (j = 0; vo->users && j <= vo->mask; j++) {
			if (!vo->users[j])
				continue;
			for (i = user_hash(vo->users[j]) & (cap - 1); m[i]; i = (i + 1) & (cap - 1))
				;
			m[i] = vo->users[j];
		}
		free(vo->users);
		vo->users = m;
		vo->mask = cap - 1;
	}
	for (i = user_hash(u) & vo->mask; vo->users[i]; i = (i + 1) & vo->mask)
		if (!strcmp(vo->users[i], u))
			return 0;
	vo->users[i] = strdup(u);
	if (!vo->users[i])
		return -ENOMEM;
	vo->n++;
	return 0;
}

static int voices_of_value(void *arg, const unsigned char *data, size_t len)
{
	struct voices_of *vo = arg;
	const unsigned char *p = data, *end = data + len;
	struct agd_vlog_rec r;
	int rc;

	while ((rc = agd_vlog_decode(&p, end, &r)) == 1) {
		if (strcmp(r.agent, vo->agent))
			continue;
		if (r.kind == AGD_VLOG_DROP) {
			vo->dropped = true;
			users_clear(vo);
		} else if (users_add(vo, r.user)) {
			return -ENOMEM;
		}
	}
	return rc;
}

int agd_store_voices_of(struct agd_store *st, MDB_txn *txn, const char *agent, __u64 *n)
{
	size_t len = strlen(agent) + 1, i;
	MDB_val k = { len, (void *)agent }, v;
	struct voices_of vo = { .agent = agent };
	MDB_cursor *cur;
	__u64 in_db = 0;
	int rc = st->voices ? mdb_cursor_open(txn, st->voices, &cur) : MDB_NOTFOUND;

	*n = 0;
	if (!rc) {
		for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		     !rc && k.mv_size >= len && !memcmp(k.mv_data, agent, len);
		     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
			in_db++;
		mdb_cursor_close(cur);
	}
	if (rc && rc != MDB_NOTFOUND)
		return agd_store_errno(rc);
	rc = agd_store_vlog_foreach(st, txn, AGD_VLOG_SNAP, voices_of_value, &vo);
	if (!rc)
		rc = agd_store_vlog_foreach(st, txn, AGD_VLOG_LOG, voices_of_value, &vo);
	/* Each user met once, counted unless the voices database has it. */
	for (i = 0; !rc && vo.users && i <= vo.mask; i++) {
		char key[AG_NAME_MAX + 1 + 128];
		size_t u;
		MDB_val kk, vv;

		if (!vo.users[i])
			continue;
		u = strlen(vo.users[i]);
		memcpy(key, agent, len);
		memcpy(key + len, vo.users[i], u);
		kk = (MDB_val){ len + u, key };
		if (vo.dropped || !st->voices || mdb_get(txn, st->voices, &kk, &vv))
			(*n)++;
	}
	users_clear(&vo);
	free(vo.users);
	if (rc) {
		*n = 0;
		return rc;
	}
	*n += vo.dropped ? 0 : in_db;
	return 0;
}

/* Every voice of the agent: the keys "name NUL ...", together in order. */
static int del_voices(struct agd_store *st, MDB_txn *txn, const char *name)
{
	size_t n = strlen(name) + 1;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, st->voices, &cur);

	if (rc)
		return rc;
	for (;;) { /* seek again after each delete: the cursor's place is gone */
		k = (MDB_val){ n, (void *)name };
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if (rc || k.mv_size < n || memcmp(k.mv_data, name, n))
			break;
		rc = mdb_cursor_del(cur, 0);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

int agd_store_agent_del(struct agd_store *st, MDB_txn *txn, const char *name)
{
	MDB_val k = str_val(name);
	int rc = mdb_del(txn, st->agents, &k, NULL);

	/* Its activity goes with it (none in a read-only open: never deleted). */
	if (!rc && st->activity) {
		rc = mdb_del(txn, st->activity, &k, NULL);
		if (rc == MDB_NOTFOUND)
			rc = 0;
	}
	if (!rc && st->windows) {
		rc = mdb_del(txn, st->windows, &k, NULL);
		if (rc == MDB_NOTFOUND)
			rc = 0;
	}
	if (!rc && st->influence) {
		rc = mdb_del(txn, st->influence, &k, NULL);
		if (rc == MDB_NOTFOUND)
			rc = 0;
	}
	if (!rc && st->voices)
		rc = del_voices(st, txn, name);
	return agd_store_errno(rc);
}

/* ---- read transactions ---------------------------------------------------------- */

int agd_store_read_begin(struct agd_store *st, MDB_txn **txn)
{
	int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, txn);

	if (rc == MDB_READERS_FULL)
		return -EBUSY;
	return rc ? agd_store_errno(rc) : 0;
}

void agd_store_txn_end(MDB_txn *txn)
{
	if (txn)
		mdb_txn_abort(txn);
}

/* ---- global defaults (meta "defaults") ------------------------------------------- */

int agd_store_defaults_get(struct agd_store *st, MDB_txn *txn, struct agd_policy *p)
{
	MDB_val k = { 8, "defaults" }, v;
	struct agd_policy_rec r;
	int rc = mdb_get(txn, st->meta, &k, &v);

	if (rc)
		return agd_store_errno(rc);
	if (v.mv_size != sizeof(r))
		return -EUCLEAN;
	memcpy(&r, v.mv_data, sizeof(r));
	if (r.version != AGD_STORE_VERSION)
		return -EUCLEAN;
	*p = (struct agd_policy){
		.r0 = r.r0,
		.alpha = r.alpha,
		.r_min = r.r_min,
		.r_max = r.r_max,
		.burst = r.burst,
		.burst_kind = (enum agd_burst_kind)r.burst_kind,
		.unit = (enum ag_unit)r.unit,
		.pinned = r.pinned,
	};
	return 0;
}

int agd_store_defaults_put(struct agd_store *st, MDB_txn *txn, const struct agd_policy *p)
{
	struct agd_policy_rec r = {
		.version = AGD_STORE_VERSION,
		.burst_kind = p->burst_kind,
		.unit = p->unit,
		.pinned = p->pinned,
		.r0 = p->r0,
		.alpha = p->alpha,
		.r_min = p->r_min,
		.r_max = p->r_max,
		.burst = p->burst,
	};
	MDB_val k = { 8, "defaults" }, v = { sizeof(r), &r };

	return agd_store_errno(mdb_put(txn, st->meta, &k, &v, 0));
}

/* ---- explain history ----------------------------------------------------------- */

/* Entry i of a value starts at off[i]; off[n] is the value's end. */
struct hist_walk {
	size_t head;                     /* bytes of the head */
	__u64 total;
	size_t n;
	size_t off[AGD_HIST_CHANGES > AGD_HIST_RATINGS ? AGD_HIST_CHANGES + 1 : AGD_HIST_RATINGS + 1];
};

/* The bytes of entry at p that follow its struct; 0 when it does not fit. */
static size_t rating_extra(const __u8 *p, size_t left)
{
	struct agd_hist_rating_rec r;

	if (left < sizeof(r))
		return 0;
	memcpy(&r, p, sizeof(r));
	if ((size_t)r.id_len + r.user_len > left - sizeof(r))
		return 0;
	return sizeof(r) + r.id_len + r.user_len;
}

static size_t change_extra(const __u8 *p, size_t left)
{
	struct agd_hist_change_rec c;

	if (left < sizeof(c))
		return 0;
	memcpy(&c, p, sizeof(c));
	if (c.detail_len > AGD_HIST_DETAIL_MAX ||
	    (size_t)c.subject_len + c.action_len + c.detail_len > left - sizeof(c))
		return 0;
	return sizeof(c) + c.subject_len + c.action_len + c.detail_len;
}

/* Checks a value whole: its head, each entry within it, nothing after. */
static int hist_walk(const void *buf, size_t len, size_t head, size_t cap,
		     size_t (*entry)(const __u8 *p, size_t left), struct hist_walk *w)
{
	const __u8 *b = buf;
	struct agd_hist_head h;
	size_t i, at;

	w->head = head;
	w->total = 0;
	w->n = 0;
	w->off[0] = head;
	if (!buf || !len)
		return 0;
	if (len < head)
		return -EUCLEAN;
	memcpy(&h, b, sizeof(h));
	if (h.version != AGD_HIST_VERSION || h.n > cap || h.total < h.n)
		return -EUCLEAN;
	for (i = 0, at = head; i < h.n; i++) {
		size_t n = entry(b + at, len - at);

		if (!n)
			return -EUCLEAN;
		w->off[i] = at;
		at += n;
	}
	if (at != len)
		return -EUCLEAN;
	w->off[h.n] = at;
	w->n = h.n;
	w->total = h.total;
	return 0;
}

static size_t clip(const char *s, size_t max)
{
	size_t n = s ? strlen(s) : 0;

	return n < max ? n : max;
}

int agd_hist_ratings_encode(const void *old, size_t old_len, const struct agd_hist_rating_in *in,
			   size_t n, __u64 skipped, void **buf, size_t *len)
{
	size_t take = n < AGD_HIST_RATINGS ? n : AGD_HIST_RATINGS, keep, from, size, i;
	struct agd_hist_head h;
	struct hist_walk w;
	__u8 *b, *p;
	int err;

	err = hist_walk(old, old_len, sizeof(h), AGD_HIST_RATINGS, rating_extra, &w);
	if (err)
		return err;
	keep = w.n < AGD_HIST_RATINGS - take ? w.n : AGD_HIST_RATINGS - take;
	from = w.off[w.n - keep];
	size = sizeof(h) + (w.off[w.n] - from);
	for (i = n - take; i < n; i++)
		size += sizeof(struct agd_hist_rating_rec) + clip(in[i].id, AGD_HIST_STR_MAX) +
			clip(in[i].user, AGD_HIST_STR_MAX);
	b = malloc(size);
	if (!b)
		return -ENOMEM;
	h = (struct agd_hist_head){ AGD_HIST_VERSION, (__u32)(keep + take), w.total + skipped + n };
	memcpy(b, &h, sizeof(h));
	p = b + sizeof(h);
	if (keep) {
		memcpy(p, (const __u8 *)old + from, w.off[w.n] - from);
		p += w.off[w.n] - from;
	}
	for (i = n - take; i < n; i++) {
		struct agd_hist_rating_rec r = {
			.ts_ms = in[i].ts_ms,
			.applied_ms = in[i].applied_ms,
			.rate_before = in[i].rate_before,
			.rate_after = in[i].rate_after,
			.score = (__u8)in[i].score,
			.id_len = (__u8)clip(in[i].id, AGD_HIST_STR_MAX),
			.user_len = (__u8)clip(in[i].user, AGD_HIST_STR_MAX),
		};

		memcpy(p, &r, sizeof(r));
		p += sizeof(r);
		memcpy(p, in[i].id ? in[i].id : "", r.id_len);
		p += r.id_len;
		memcpy(p, in[i].user ? in[i].user : "", r.user_len);
		p += r.user_len;
	}
	*buf = b;
	*len = size;
	return 0;
}

int agd_hist_ratings_decode(const void *buf, size_t len, struct agd_hist_ratings *out)
{
	struct hist_walk w;
	size_t i;
	int err = hist_walk(buf, len, sizeof(struct agd_hist_head), AGD_HIST_RATINGS, rating_extra,
			    &w);

	out->total = 0;
	out->n = 0;
	if (err)
		return err;
	for (i = 0; i < w.n; i++) {
		const __u8 *p = (const __u8 *)buf + w.off[i];
		struct agd_hist_rating_rec r;
		struct agd_hist_rating *o = &out->r[i];

		memcpy(&r, p, sizeof(r));
		p += sizeof(r);
		o->ts_ms = r.ts_ms;
		o->applied_ms = r.applied_ms;
		o->rate_before = r.rate_before;
		o->rate_after = r.rate_after;
		o->score = r.score;
		memcpy(o->id, p, r.id_len);
		o->id[r.id_len] = 0;
		memcpy(o->user, p + r.id_len, r.user_len);
		o->user[r.user_len] = 0;
	}
	out->total = w.total;
	out->n = w.n;
	return 0;
}

static const char detail_cut[] = "{\"before\":null,\"after\":null,\"truncated\":true}";

int agd_hist_changes_encode(const void *old, size_t old_len, __u64 time_ms, const char *subject,
			   const char *action, const char *detail, int pin, void **buf,
			   size_t *len)
{
	struct agd_hist_changes_head h = { .pin_ms = -1 };
	size_t keep, from, size, dl = detail ? strlen(detail) : 0;
	struct agd_hist_change_rec c = { .time_ms = time_ms };
	struct hist_walk w;
	__u8 *b, *p;
	int err;

	err = hist_walk(old, old_len, sizeof(h), AGD_HIST_CHANGES, change_extra, &w);
	if (err)
		return err;
	if (old && old_len)
		memcpy(&h, old, sizeof(h));
	if (dl > AGD_HIST_DETAIL_MAX) {
		detail = detail_cut;
		dl = sizeof(detail_cut) - 1;
	}
	c.subject_len = (__u8)clip(subject, AGD_HIST_STR_MAX);
	c.action_len = (__u8)clip(action, AGD_HIST_STR_MAX);
	c.detail_len = (__u16)dl;
	keep = w.n < AGD_HIST_CHANGES - 1 ? w.n : AGD_HIST_CHANGES - 1;
	from = w.off[w.n - keep];
	size = sizeof(h) + (w.off[w.n] - from) + sizeof(c) + c.subject_len + c.action_len + dl;
	b = malloc(size);
	if (!b)
		return -ENOMEM;
	h.h = (struct agd_hist_head){ AGD_HIST_VERSION, (__u32)(keep + 1), w.total + 1 };
	if (pin == 1) {
		h.pin_ms = (__s64)time_ms;
		h.pin_subject_len = c.subject_len;
		memset(h.pin_subject, 0, sizeof(h.pin_subject));
		memcpy(h.pin_subject, subject ? subject : "", c.subject_len);
	} else if (pin == 0) {
		h.pin_ms = -1;
		h.pin_subject_len = 0;
		memset(h.pin_subject, 0, sizeof(h.pin_subject));
	}
	memcpy(b, &h, sizeof(h));
	p = b + sizeof(h);
	if (keep) {
		memcpy(p, (const __u8 *)old + from, w.off[w.n] - from);
		p += w.off[w.n] - from;
	}
	memcpy(p, &c, sizeof(c));
	p += sizeof(c);
	memcpy(p, subject ? subject : "", c.subject_len);
	p += c.subject_len;
	memcpy(p, action ? action : "", c.action_len);
	p += c.action_len;
	memcpy(p, detail ? detail : "", dl);
	*buf = b;
	*len = size;
	return 0;
}

int agd_hist_changes_decode(const void *buf, size_t len, struct agd_hist_changes *out)
{
	struct agd_hist_changes_head h;
	struct hist_walk w;
	size_t i;
	int err = hist_walk(buf, len, sizeof(h), AGD_HIST_CHANGES, change_extra, &w);

	out->total = 0;
	out->n = 0;
	out->pin_ms = -1;
	out->pin_subject[0] = 0;
	if (err)
		return err;
	if (!buf || !len)
		return 0;
	memcpy(&h, buf, sizeof(h)); /* pin_subject_len fits pin_subject: a __u8 */
	for (i = 0; i < w.n; i++) {
		const __u8 *p = (const __u8 *)buf + w.off[i];
		struct agd_hist_change_rec c;
		struct agd_hist_change *o = &out->c[i];

		memcpy(&c, p, sizeof(c));
		p += sizeof(c);
		o->time_ms = c.time_ms;
		memcpy(o->subject, p, c.subject_len);
		o->subject[c.subject_len] = 0;
		p += c.subject_len;
		memcpy(o->action, p, c.action_len);
		o->action[c.action_len] = 0;
		p += c.action_len;
		memcpy(o->detail, p, c.detail_len);
		o->detail[c.detail_len] = 0;
	}
	out->total = w.total;
	out->n = w.n;
	out->pin_ms = h.pin_ms;
	memcpy(out->pin_subject, h.pin_subject, h.pin_subject_len);
	out->pin_subject[h.pin_subject_len] = 0;
	return 0;
}

/* The current value under name in dbi (NULL when absent or fresh). */
static int hist_old(MDB_txn *txn, MDB_dbi dbi, const char *name, bool fresh, MDB_val *v)
{
	MDB_val k = str_val(name);
	int rc;

	*v = (MDB_val){ 0, NULL };
	if (fresh)
		return 0;
	rc = mdb_get(txn, dbi, &k, v);
	if (rc == MDB_NOTFOUND) {
		*v = (MDB_val){ 0, NULL };
		return 0;
	}
	return agd_store_errno(rc);
}

static int hist_put(MDB_txn *txn, MDB_dbi dbi, const char *name, void *buf, size_t len)
{
	MDB_val k = str_val(name), v = { len, buf };
	int rc = mdb_put(txn, dbi, &k, &v, 0);

	free(buf);
	return agd_store_errno(rc);
}

int agd_store_hist_add_ratings(struct agd_store *st, MDB_txn *txn, const char *name, bool fresh,
			      const struct agd_hist_rating_in *in, size_t n, __u64 skipped)
{
	MDB_val old;
	void *buf;
	size_t len;
	int err;

	if (!st->hist || !n)
		return 0;
	if (fresh) { /* an earlier agent's changes, left by an older agentgated */
		MDB_val k = str_val(name);
		int rc = mdb_del(txn, st->hist_changes, &k, NULL);

		if (rc && rc != MDB_NOTFOUND)
			return agd_store_errno(rc);
	}
	err = hist_old(txn, st->hist_rated, name, fresh, &old);
	if (!err)
		err = agd_hist_ratings_encode(old.mv_data, old.mv_size, in, n, skipped, &buf, &len);
	if (err == -EUCLEAN) /* a value we cannot read is replaced, not kept */
		err = agd_hist_ratings_encode(NULL, 0, in, n, skipped, &buf, &len);
	return err ? err : hist_put(txn, st->hist_rated, name, buf, len);
}

int agd_store_hist_add_change(struct agd_store *st, MDB_txn *txn, const char *name, bool fresh,
			     __u64 time_ms, const char *subject, const char *action,
			     const char *detail, int pin)
{
	MDB_val old;
	void *buf;
	size_t len;
	int err;

	if (!st->hist)
		return 0;
	err = hist_old(txn, st->hist_changes, name, fresh, &old);
	if (!err)
		err = agd_hist_changes_encode(old.mv_data, old.mv_size, time_ms, subject, action,
					     detail, pin, &buf, &len);
	if (err == -EUCLEAN)
		err = agd_hist_changes_encode(NULL, 0, time_ms, subject, action, detail, pin, &buf,
					     &len);
	return err ? err : hist_put(txn, st->hist_changes, name, buf, len);
}

int agd_store_hist_del(struct agd_store *st, MDB_txn *txn, const char *name)
{
	MDB_val k = str_val(name);
	int rc;

	if (!st->hist)
		return 0;
	rc = mdb_del(txn, st->hist_rated, &k, NULL);
	if (!rc || rc == MDB_NOTFOUND)
		rc = mdb_del(txn, st->hist_changes, &k, NULL);
	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

int agd_store_hist_get(struct agd_store *st, MDB_txn *txn, const char *name,
		      struct agd_hist_ratings *r, struct agd_hist_changes *c)
{
	MDB_val v;
	int err = 0;

	r->n = c->n = 0;
	r->total = c->total = 0;
	c->pin_ms = -1;
	c->pin_subject[0] = 0;
	if (!st->hist)
		return 0;
	err = hist_old(txn, st->hist_rated, name, false, &v);
	if (!err)
		err = agd_hist_ratings_decode(v.mv_data, v.mv_size, r);
	if (!err)
		err = hist_old(txn, st->hist_changes, name, false, &v);
	if (!err)
		err = agd_hist_changes_decode(v.mv_data, v.mv_size, c);
	return err;
}

/* ---- read-only (agentgate agent explain) ------------------------------------------ */

bool agd_store_exists(const char *dir, const char *name)
{
	char path[4200];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return !lstat(path, &st);
}

static int ro_dbi(MDB_txn *txn, const char *name, MDB_dbi *dbi)
{
	return mdb_dbi_open(txn, name, 0, dbi);
}

int agd_store_open_ro(const char *dir, struct agd_store *st, MDB_txn **txn, struct agd_err *err)
{
	MDB_val k = { 7, "version" }, v;
	struct stat ds, fs;
	struct agd_err why = { 0 };
	unsigned int flags = MDB_RDONLY | MDB_NOTLS;
	__u32 ver = 0;
	int fd, rc;

	memset(st, 0, sizeof(*st));
	*txn = NULL;
	snprintf(agd_store_g.dir, sizeof(agd_store_g.dir), "%s", dir);
	snprintf(agd_store_g.path, sizeof(agd_store_g.path), "%s/" AGD_STORE_FILE, dir);
	if (stat(dir, &ds)) {
		rc = -errno;
		if (rc == -ENOENT)
			return agd_errf(err, rc, "no agentgated state directory at %s: it does not "
					"exist", dir);
		return agd_errf(err, rc, "cannot read the state directory %s: %s", dir,
				strerror(-rc));
	}
	if (!S_ISDIR(ds.st_mode)) {
		return agd_errf(err, -ENOTDIR,
			"%s is not an agentgated state directory: not a directory", dir);
	}
	if (stat(agd_store_g.path, &fs)) {
		rc = -errno;
		if (rc != -ENOENT) {
			return agd_errf(err, rc,
				"cannot read %s: %s", agd_store_g.path, strerror(-rc));
		}
		if (agd_store_exists(dir, AGD_STORE_MARKER)) {
			return agd_errf(err, -EUCLEAN,
				"the state store %s is missing, yet %s held one (%s is "
				 "there): restore a copy (see agentgated(8), STATE STORE)", agd_store_g.path,
				 dir, AGD_STORE_MARKER);
		}
		return agd_errf(err, -ENOENT, "%s is not an agentgated state directory: it has no "
			 AGD_STORE_FILE " (nor " AGD_STORE_MARKER ")", dir);
	}
	if (!S_ISREG(fs.st_mode) || !fs.st_size) {
		return agd_errf(err, -EUCLEAN, "the state store %s is %s", agd_store_g.path,
			 !S_ISREG(fs.st_mode) ? "not a regular file" : "empty (0 bytes)");
	}
	fd = open(agd_store_g.path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		return agd_errf(err, rc,
			"cannot open the state store %s: %s", agd_store_g.path, strerror(-rc));
	}
	rc = agd_store_check(fd, true, &why);
	close(fd);
	if (rc) {
		return agd_errf(err, rc, rc == -EUCLEAN ? "the state store %s is damaged: %s" :
			 "cannot read the state store %s: %s", agd_store_g.path, why.msg);
	}
	/* LMDB's reader table when a daemon ever used the store (one may start
	 * meanwhile); none otherwise: no file is created here. */
	if (!agd_store_exists(dir, "lock.mdb"))
		flags |= MDB_NOLOCK;
	rc = mdb_env_create(&st->env);
	if (!rc)
		rc = mdb_env_set_maxdbs(st->env, AG_STORE_MAX_DBS);
	if (!rc)
		rc = mdb_env_set_maxreaders(st->env, AGD_STORE_MAX_READERS);
	if (!rc)
		rc = mdb_env_open(st->env, dir, flags, 0600);
	if (!rc)
		rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, txn);
	if (rc) {
		snprintf(err->msg, sizeof(err->msg),
			"cannot open the state store %s: %s", agd_store_g.path, mdb_strerror(rc));
		goto fail;
	}
	rc = ro_dbi(*txn, "agents", &st->agents);
	if (!rc)
		rc = ro_dbi(*txn, "meta", &st->meta);
	if (!rc)
		rc = ro_dbi(*txn, "audit", &st->audit);
	if (!rc)
		rc = mdb_get(*txn, st->meta, &k, &v);
	if (rc == MDB_NOTFOUND) {
		snprintf(err->msg, sizeof(err->msg),
			"%s is not agentgated's state store: no agents, audit or "
			 "version record in it", agd_store_g.path);
		rc = EPROTO;
		goto fail;
	}
	if (rc) {
		snprintf(err->msg, sizeof(err->msg),
			"cannot read the state store %s: %s", agd_store_g.path, mdb_strerror(rc));
		goto fail;
	}
	if (v.mv_size == sizeof(ver))
		memcpy(&ver, v.mv_data, sizeof(ver));
	if (v.mv_size != sizeof(ver) || ver != AGD_STORE_VERSION) {
		snprintf(err->msg, sizeof(err->msg),
			"the state store %s was written by an incompatible agentgated "
			 "(store version %u; this one reads version %u)", agd_store_g.path, ver,
			 AGD_STORE_VERSION);
		rc = EPROTO;
		goto fail;
	}
	rc = ro_dbi(*txn, "hist_rated", &st->hist_rated);
	if (!rc)
		rc = ro_dbi(*txn, "hist_changes", &st->hist_changes);
	st->hist = !rc;
	if (rc && rc != MDB_NOTFOUND) {
		snprintf(err->msg, sizeof(err->msg),
			"cannot read the state store %s: %s", agd_store_g.path, mdb_strerror(rc));
		goto fail;
	}
	/* Voices and change windows: absent in an older store (0: none). */
	if (ro_dbi(*txn, "voices", &st->voices))
		st->voices = 0;
	if (ro_dbi(*txn, "voice_log", &st->voice_log))
		st->voice_log = 0;
	if (ro_dbi(*txn, "voice_snap", &st->voice_snap))
		st->voice_snap = 0;
	if (ro_dbi(*txn, "windows", &st->windows))
		st->windows = 0;
	if (ro_dbi(*txn, "influence", &st->influence))
		st->influence = 0;
	if (ro_dbi(*txn, "budgets", &st->budgets))
		st->budgets = 0;
	return 0;
fail:
	if (*txn)
		mdb_txn_abort(*txn);
	*txn = NULL;
	if (st->env)
		mdb_env_close(st->env);
	st->env = NULL;
	if (rc == EPROTO || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_INVALID ||
	    rc == MDB_VERSION_MISMATCH || rc == MDB_INCOMPATIBLE)
		return -EUCLEAN;
	return rc > 0 && rc < 4096 ? -rc : -EIO;
}
