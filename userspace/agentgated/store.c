// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "store.h"

/* The last LMDB result this thread converted: -ENOSPC stands for a full
 * map (--store-size) and for a full disk alike, and the message differs. */
static __thread int last_rc;
/* The state dir (one store per process), for telling a full disk. */
static char store_dir[4096];

/* LMDB reports a write the disk cut short as EIO: on a file system with
 * next to no space left, that is the full disk. */
static bool disk_full(void)
{
	struct statvfs v;

	return store_dir[0] && !statvfs(store_dir, &v) &&
	       (__u64)v.f_bavail * v.f_frsize < (256u << 10);
}

int ag_store_errno(int rc)
{
	if (rc == EIO && disk_full())
		rc = ENOSPC;
	last_rc = rc;
	switch (rc) {
	case MDB_SUCCESS:
		return 0;
	case MDB_NOTFOUND:
		return -ENOENT;
	case MDB_MAP_FULL:
	case MDB_TXN_FULL:
		return -ENOSPC;
	case MDB_KEYEXIST:
		return -EEXIST;
	default:
		return rc > 0 && rc < 4096 ? -rc : -EIO;
	}
}

const char *ag_store_strerror(int err)
{
	if (err != -ENOSPC)
		return strerror(-err);
	if (last_rc == ENOSPC || last_rc == EDQUOT)
		return "no space left on the state directory's file system (free some; nothing "
		       "was changed)";
	return "the state store is full (raise --store-size)";
}

static int open_dbi(MDB_txn *txn, const char *name, MDB_dbi *dbi)
{
	return mdb_dbi_open(txn, name, MDB_CREATE, dbi);
}

static int check_version(struct ag_store *st, MDB_txn *txn, char *err, size_t len)
{
	MDB_val k = { 7, "version" }, v;
	__u32 ver = AG_STORE_VERSION;
	int rc = mdb_get(txn, st->meta, &k, &v);

	if (rc == MDB_NOTFOUND) {
		v = (MDB_val){ sizeof(ver), &ver };
		return mdb_put(txn, st->meta, &k, &v, 0);
	}
	if (rc)
		return rc;
	if (v.mv_size != sizeof(ver) || memcmp(v.mv_data, &ver, sizeof(ver))) {
		snprintf(err, len, "state was written by an incompatible agentgated "
			 "(store version differs from %u)", AG_STORE_VERSION);
		return EPROTO;
	}
	return 0;
}

int ag_store_open(const char *dir, size_t map_size, struct ag_store *st, char *err, size_t len)
{
	MDB_txn *txn = NULL;
	int rc;

	memset(st, 0, sizeof(*st));
	err[0] = 0;
	snprintf(store_dir, sizeof(store_dir), "%s", dir);
	if (mkdir(dir, 0700) && errno != EEXIST) {
		rc = errno;
		snprintf(err, len, "cannot create state directory %s: %s", dir, strerror(rc));
		return -rc;
	}
	rc = mdb_env_create(&st->env);
	if (!rc)
		rc = mdb_env_set_maxdbs(st->env, 8);
	if (!rc)
		rc = mdb_env_set_mapsize(st->env, map_size);
	if (!rc)
		rc = mdb_env_open(st->env, dir, 0, 0600);
	if (rc) {
		snprintf(err, len, "cannot open the state store in %s: %s", dir, mdb_strerror(rc));
		goto cleanup;
	}
	rc = mdb_txn_begin(st->env, NULL, 0, &txn);
	if (!rc)
		rc = open_dbi(txn, "agents", &st->agents);
	if (!rc)
		rc = open_dbi(txn, "rules", &st->rules);
	if (!rc)
		rc = open_dbi(txn, "dedup", &st->dedup);
	if (!rc)
		rc = open_dbi(txn, "dedup_at", &st->dedup_at);
	if (!rc)
		rc = open_dbi(txn, "audit", &st->audit);
	if (!rc)
		rc = open_dbi(txn, "meta", &st->meta);
	if (!rc) {
		err[0] = 0;
		rc = check_version(st, txn, err, len);
	}
	if (!rc) {
		rc = mdb_txn_commit(txn);
		txn = NULL;
	}
	if (rc && !err[0])
		snprintf(err, len, "cannot initialise the state store in %s: %s", dir,
			 mdb_strerror(rc));
cleanup:
	if (txn)
		mdb_txn_abort(txn);
	if (rc) {
		if (st->env)
			mdb_env_close(st->env);
		st->env = NULL;
		return ag_store_errno(rc);
	}
	return 0;
}

int ag_store_meta_get_u64(struct ag_store *st, MDB_txn *txn, const char *key, __u64 *v)
{
	MDB_val k = { strlen(key), (void *)key }, d;
	int rc = mdb_get(txn, st->meta, &k, &d);

	*v = 0;
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return ag_store_errno(rc);
	if (d.mv_size != sizeof(*v))
		return -EPROTO;
	memcpy(v, d.mv_data, sizeof(*v));
	return 0;
}

int ag_store_meta_put_u64(struct ag_store *st, MDB_txn *txn, const char *key, __u64 v)
{
	MDB_val k = { strlen(key), (void *)key }, d = { sizeof(v), &v };

	return ag_store_errno(mdb_put(txn, st->meta, &k, &d, 0));
}

void ag_store_close(struct ag_store *st)
{
	if (st->env)
		mdb_env_close(st->env);
	st->env = NULL;
}

void ag_rec_policy(const struct ag_agent_rec *r, struct ag_policy *own)
{
	*own = (struct ag_policy){
		.r0 = r->r0,
		.alpha = r->alpha,
		.r_min = r->r_min,
		.r_max = r->r_max,
		.burst = r->burst,
		.burst_kind = (enum ag_burst_kind)r->burst_kind,
		.unit = (enum ag_unit)r->unit,
		.pinned = r->pinned,
	};
}

void ag_rec_set_policy(struct ag_agent_rec *r, const struct ag_policy *own, unsigned int set)
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
}

void ag_rec_effective(const struct ag_agent_rec *r, const struct ag_policy *defaults,
		      struct ag_policy *out)
{
	struct ag_policy own;

	ag_rec_policy(r, &own);
	ag_policy_merge(defaults, &own, r->set, out);
}

static MDB_val str_val(const char *s)
{
	return (MDB_val){ strlen(s), (void *)s };
}

int ag_store_agent_put(struct ag_store *st, MDB_txn *txn, const char *name,
		       const struct ag_agent_rec *rec)
{
	MDB_val k = str_val(name), v = { sizeof(*rec), (void *)rec };

	return ag_store_errno(mdb_put(txn, st->agents, &k, &v, 0));
}

int ag_store_agent_del(struct ag_store *st, MDB_txn *txn, const char *name)
{
	MDB_val k = str_val(name);

	return ag_store_errno(mdb_del(txn, st->agents, &k, NULL));
}

/* ---- dedup ids --------------------------------------------------------- */

#define AT_KEY_MAX (8 + 256)

static size_t at_key(__u64 ms, const char *id, __u8 *buf)
{
	__u64 be = htobe64(ms);
	size_t n = strlen(id);

	if (n > AT_KEY_MAX - 8)
		n = AT_KEY_MAX - 8;
	memcpy(buf, &be, 8);
	memcpy(buf + 8, id, n);
	return 8 + n;
}

int ag_store_dedup_seen(struct ag_store *st, MDB_txn *txn, const char *id)
{
	MDB_val k = str_val(id), v;
	int rc = mdb_get(txn, st->dedup, &k, &v);

	if (rc == MDB_NOTFOUND)
		return 0;
	return rc ? ag_store_errno(rc) : 1;
}

int ag_store_dedup_add(struct ag_store *st, MDB_txn *txn, const char *id, __u64 now_ms)
{
	__u8 buf[AT_KEY_MAX];
	MDB_val k = str_val(id), v = { sizeof(now_ms), &now_ms };
	int rc = mdb_put(txn, st->dedup, &k, &v, MDB_NOOVERWRITE);

	if (rc == MDB_KEYEXIST)
		return 1; /* seen: one lookup answers and records */
	if (!rc) {
		k = (MDB_val){ at_key(now_ms, id, buf), buf };
		v = (MDB_val){ 0, "" };
		rc = mdb_put(txn, st->dedup_at, &k, &v, 0);
	}
	return ag_store_errno(rc);
}

__u64 ag_store_dedup_count(struct ag_store *st, MDB_txn *txn)
{
	MDB_stat s;

	return mdb_stat(txn, st->dedup, &s) ? 0 : s.ms_entries;
}

int ag_store_dedup_prune(struct ag_store *st, MDB_txn *txn, __u64 now_ms, __u64 window_ms,
			 __u64 max_ids, size_t budget)
{
	__u64 count = ag_store_dedup_count(st, txn);
	__u64 cutoff = now_ms > window_ms ? now_ms - window_ms : 0;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;

	rc = mdb_cursor_open(txn, st->dedup_at, &cur);
	if (rc)
		return ag_store_errno(rc);
	while (budget-- && !(rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST))) {
		char id[AT_KEY_MAX];
		MDB_val idk;
		__u64 at;

		if (k.mv_size < 8)
			goto drop; /* not ours: remove rather than stop pruning */
		memcpy(&at, k.mv_data, 8);
		at = be64toh(at);
		if (at >= cutoff && count <= max_ids)
			break;
		memcpy(id, (char *)k.mv_data + 8, k.mv_size - 8);
		idk = (MDB_val){ k.mv_size - 8, id };
		rc = mdb_del(txn, st->dedup, &idk, NULL);
		if (rc && rc != MDB_NOTFOUND)
			break;
		if (!rc && count)
			count--;
drop:
		rc = mdb_cursor_del(cur, 0);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : ag_store_errno(rc);
}

/* ---- rules and audit --------------------------------------------------- */

int ag_store_rule_put(struct ag_store *st, MDB_txn *txn, const struct ag_rule_rec_key *key,
		      const char *agent)
{
	MDB_val k = { sizeof(*key), (void *)key }, v = str_val(agent);

	return ag_store_errno(mdb_put(txn, st->rules, &k, &v, 0));
}

int ag_store_rule_del(struct ag_store *st, MDB_txn *txn, const struct ag_rule_rec_key *key)
{
	MDB_val k = { sizeof(*key), (void *)key };

	return ag_store_errno(mdb_del(txn, st->rules, &k, NULL));
}

/* The newest AG_STORE_AUDIT_MAX records stay (audit.log keeps them all):
 * each append removes up to two of the oldest beyond that. */
static int prune_audit(struct ag_store *st, MDB_txn *txn)
{
	MDB_cursor *cur;
	MDB_stat stat;
	MDB_val k, v;
	int rc, n;

	rc = mdb_stat(txn, st->audit, &stat);
	if (rc || stat.ms_entries <= AG_STORE_AUDIT_MAX)
		return rc;
	rc = mdb_cursor_open(txn, st->audit, &cur);
	for (n = 0; !rc && n < 2 && stat.ms_entries - (size_t)n > AG_STORE_AUDIT_MAX; n++) {
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
		if (!rc)
			rc = mdb_cursor_del(cur, 0);
	}
	if (!rc || rc == MDB_NOTFOUND)
		rc = 0;
	mdb_cursor_close(cur);
	return rc;
}

int ag_store_audit(struct ag_store *st, MDB_txn *txn, const char *line)
{
	MDB_cursor *cur;
	MDB_val k, v;
	__u64 seq = 1, be;
	int rc = mdb_cursor_open(txn, st->audit, &cur);

	if (rc)
		return ag_store_errno(rc);
	rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	if (!rc && k.mv_size == 8) {
		memcpy(&be, k.mv_data, 8);
		seq = be64toh(be) + 1;
	}
	mdb_cursor_close(cur);
	if (rc && rc != MDB_NOTFOUND)
		return ag_store_errno(rc);
	be = htobe64(seq);
	k = (MDB_val){ 8, &be };
	v = str_val(line);
	rc = mdb_put(txn, st->audit, &k, &v, MDB_APPEND);
	if (!rc)
		rc = prune_audit(st, txn);
	return ag_store_errno(rc);
}
