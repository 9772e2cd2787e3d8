// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The state store's walks (agents in name order, rules), its rules, the
 * agents an operator deleted, meta's counters and the audit records
 * (store.c: the store itself).
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "store.h"
#include "store_int.h"

int agd_store_meta_get_u64(struct agd_store *st, MDB_txn *txn, const char *key, __u64 *v)
{
	MDB_val k = { strlen(key), (void *)key }, d;
	int rc = mdb_get(txn, st->meta, &k, &d);

	*v = 0;
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return agd_store_errno(rc);
	if (d.mv_size != sizeof(*v))
		return -EPROTO;
	memcpy(v, d.mv_data, sizeof(*v));
	return 0;
}

int agd_store_meta_put_u64(struct agd_store *st, MDB_txn *txn, const char *key, __u64 v)
{
	MDB_val k = { strlen(key), (void *)key }, d = { sizeof(v), &v };

	return agd_store_errno(mdb_put(txn, st->meta, &k, &d, 0));
}

/* ---- walks --------------------------------------------------------------------- */

int agd_store_agents_foreach(struct agd_store *st, MDB_txn *txn,
			    int (*fn)(void *arg, const char *name, const struct agd_agent_rec *rec),
			    void *arg, size_t *skipped)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, st->agents, &cur), err = 0;

	if (rc)
		return agd_store_errno(rc);
	while (!err && !(rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))) {
		char name[AG_NAME_MAX + 1];
		struct agd_agent_rec rec;

		if (!k.mv_size || k.mv_size > AG_NAME_MAX || v.mv_size != sizeof(rec)) {
			if (skipped)
				(*skipped)++;
			continue;
		}
		memcpy(name, k.mv_data, k.mv_size);
		name[k.mv_size] = 0;
		memcpy(&rec, v.mv_data, sizeof(rec));
		err = fn(arg, name, &rec);
	}
	mdb_cursor_close(cur);
	if (err)
		return err;
	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

int agd_store_agent_names_after(struct agd_store *st, MDB_txn *txn, const char *after, size_t max,
			       char (*names)[AG_NAME_MAX + 1], size_t *n)
{
	size_t after_len = strlen(after);
	MDB_val k = { after_len, (void *)after }, v;
	MDB_cursor *cur = NULL;
	int rc;

	*n = 0;
	rc = mdb_cursor_open(txn, st->agents, &cur);
	if (!rc)
		rc = mdb_cursor_get(cur, &k, &v, after_len ? MDB_SET_RANGE : MDB_FIRST);
	for (; !rc && *n < max; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (!k.mv_size || k.mv_size > AG_NAME_MAX)
			continue; /* not a name: the agents walk skips it too */
		if (k.mv_size == after_len && !memcmp(k.mv_data, after, after_len))
			continue;
		memcpy(names[*n], k.mv_data, k.mv_size);
		names[(*n)++][k.mv_size] = 0;
	}
	if (cur)
		mdb_cursor_close(cur);
	return rc && rc != MDB_NOTFOUND ? agd_store_errno(rc) : 0;
}

int agd_store_rules_foreach(struct agd_store *st, MDB_txn *txn,
			   int (*fn)(void *arg, const struct agd_rule_rec_key *key,
				     const char *agent),
			   void *arg)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, st->rules, &cur), r = 0;

	if (rc)
		return agd_store_errno(rc);
	while (!(rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))) {
		struct agd_rule_rec_key key;
		char agent[AG_NAME_MAX + 1];

		if (k.mv_size != sizeof(key) || v.mv_size > AG_NAME_MAX)
			continue;
		memcpy(&key, k.mv_data, sizeof(key));
		memcpy(agent, v.mv_data, v.mv_size);
		agent[v.mv_size] = 0;
		r = fn(arg, &key, agent);
		if (r < 0)
			break;
		if (r == 1 && (rc = mdb_cursor_del(cur, 0)))
			break;
	}
	mdb_cursor_close(cur);
	if (r < 0)
		return r;
	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

int agd_store_rule_get(struct agd_store *st, MDB_txn *txn, const struct agd_rule_rec_key *key,
		      char *buf, size_t len)
{
	MDB_val k = { sizeof(*key), (void *)key }, v;
	int rc = mdb_get(txn, st->rules, &k, &v);

	if (rc)
		return agd_store_errno(rc);
	snprintf(buf, len, "%.*s", (int)v.mv_size, (const char *)v.mv_data);
	return 0;
}

/* ---- agents an operator deleted --------------------------------------------- */

int agd_store_deleted_put(struct agd_store *st, MDB_txn *txn, const char *name, __u64 time_ms,
			 const char *subject)
{
	struct agd_deleted_rec rec = { .time_ms = time_ms };
	MDB_val k = str_val(name), v = { sizeof(rec), &rec };

	snprintf(rec.subject, sizeof(rec.subject), "%s", subject ? subject : "");
	return agd_store_errno(mdb_put(txn, st->deleted, &k, &v, 0));
}

int agd_store_deleted_get(struct agd_store *st, MDB_txn *txn, const char *name,
			 struct agd_deleted_rec *rec)
{
	MDB_val k = str_val(name), v;
	int rc = mdb_get(txn, st->deleted, &k, &v);

	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return agd_store_errno(rc);
	if (v.mv_size != sizeof(*rec))
		return 0; /* a record of another layout: not ours to judge */
	memcpy(rec, v.mv_data, sizeof(*rec));
	rec->subject[sizeof(rec->subject) - 1] = '\0';
	return 1;
}

int agd_store_deleted_del(struct agd_store *st, MDB_txn *txn, const char *name)
{
	MDB_val k = str_val(name);
	int rc = mdb_del(txn, st->deleted, &k, NULL);

	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

/* ---- activity ----------------------------------------------------------- */

int agd_store_activity_get(struct agd_store *st, MDB_txn *txn, const char *name,
			  struct agd_activity_rec *rec)
{
	int rc = rec_get(txn, st->activity, str_val(name), rec, sizeof(*rec));

	return rc == 1 ? rec->version == AGD_STORE_VERSION : rc;
}

int agd_store_activity_put(struct agd_store *st, MDB_txn *txn, const char *name,
			  const struct agd_activity_rec *rec)
{
	return rec_put(txn, st->activity, str_val(name), rec, sizeof(*rec));
}

/* ---- voices ------------------------------------------------------------------ */

static MDB_dbi vlog_dbi(struct agd_store *st, enum agd_vlog_db db)
{
	return db == AGD_VLOG_SNAP ? st->voice_snap : st->voice_log;
}

int agd_store_vlog_append(struct agd_store *st, MDB_txn *txn, enum agd_vlog_db db,
			 const void *data, size_t len)
{
	unsigned char key[8];
	MDB_cursor *cur;
	MDB_val k, v;
	__u64 next = 1;
	int rc = mdb_cursor_open(txn, vlog_dbi(st, db), &cur), i;

	if (rc)
		return agd_store_errno(rc);
	rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	mdb_cursor_close(cur);
	if (!rc && k.mv_size == 8) {
		next = 0;
		for (i = 0; i < 8; i++)
			next = next << 8 | ((const unsigned char *)k.mv_data)[i];
		next++;
	} else if (!rc) {
		return -EUCLEAN; /* a key of no layout this store writes */
	} else if (rc != MDB_NOTFOUND) {
		return agd_store_errno(rc);
	}
	for (i = 0; i < 8; i++)
		key[i] = (unsigned char)(next >> (8 * (7 - i))); /* big-endian: key order */
	k = (MDB_val){ sizeof(key), key };
	v = (MDB_val){ len, (void *)data };
	return agd_store_errno(mdb_put(txn, vlog_dbi(st, db), &k, &v, MDB_APPEND));
}

int agd_store_vlog_clear(struct agd_store *st, MDB_txn *txn, enum agd_vlog_db db)
{
	return agd_store_errno(mdb_drop(txn, vlog_dbi(st, db), 0));
}

int agd_store_voices_clear(struct agd_store *st, MDB_txn *txn)
{
	return agd_store_errno(mdb_drop(txn, st->voices, 0));
}

__u64 agd_store_voice_count(struct agd_store *st, MDB_txn *txn, __u64 *bytes)
{
	MDB_stat s;

	MDB_stat l;

	if (!st->voices || mdb_stat(txn, st->voices, &s))
		return 0;
	if (bytes)
		*bytes = (__u64)s.ms_psize *
			 (s.ms_branch_pages + s.ms_leaf_pages + s.ms_overflow_pages);
	if (bytes && st->voice_log && !mdb_stat(txn, st->voice_log, &l))
		*bytes += (__u64)l.ms_psize *
			  (l.ms_branch_pages + l.ms_leaf_pages + l.ms_overflow_pages);
	if (bytes && st->voice_snap && !mdb_stat(txn, st->voice_snap, &l))
		*bytes += (__u64)l.ms_psize *
			  (l.ms_branch_pages + l.ms_leaf_pages + l.ms_overflow_pages);
	return s.ms_entries;
}

/* ---- change windows ------------------------------------------------------------ */

int agd_store_window_put(struct agd_store *st, MDB_txn *txn, const char *agent,
			const struct agd_window_rec *rec)
{
	return rec_put(txn, st->windows, str_val(agent), rec, sizeof(*rec));
}

/* ---- revocations ---------------------------------------------------------- */

int agd_store_revoked_put(struct agd_store *st, MDB_txn *txn, const char *key,
			 const struct agd_revoked_rec *rec)
{
	return rec_put(txn, st->revoked, str_val(key), rec, sizeof(*rec));
}

int agd_store_revoked_del(struct agd_store *st, MDB_txn *txn, const char *key)
{
	MDB_val k = str_val(key);
	int rc = mdb_del(txn, st->revoked, &k, NULL);

	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

int agd_store_revoked_foreach(struct agd_store *st, MDB_txn *txn,
			     int (*fn)(void *arg, const char *key, const struct agd_revoked_rec *rec),
			     void *arg)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, st->revoked, &cur), err = 0;

	if (rc)
		return agd_store_errno(rc);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct agd_revoked_rec r;
		char key[2 + 128 + 1];

		if (v.mv_size != sizeof(r) || k.mv_size < 2 || k.mv_size >= sizeof(key))
			continue;
		memcpy(&r, v.mv_data, sizeof(r));
		memcpy(key, k.mv_data, k.mv_size);
		key[k.mv_size] = 0;
		if (strlen(key) != k.mv_size)
			continue;
		err = fn(arg, key, &r);
	}
	mdb_cursor_close(cur);
	if (err)
		return err;
	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

/* ---- rules and audit --------------------------------------------------- */

int agd_store_rule_put(struct agd_store *st, MDB_txn *txn, const struct agd_rule_rec_key *key,
		      const char *agent)
{
	MDB_val k = { sizeof(*key), (void *)key }, v = str_val(agent);

	return agd_store_errno(mdb_put(txn, st->rules, &k, &v, 0));
}

int agd_store_rule_del(struct agd_store *st, MDB_txn *txn, const struct agd_rule_rec_key *key)
{
	MDB_val k = { sizeof(*key), (void *)key };

	return agd_store_errno(mdb_del(txn, st->rules, &k, NULL));
}

/* The newest AGD_STORE_AUDIT_MAX records stay (audit.log keeps them all):
 * each append removes up to two of the oldest beyond that. */
static int prune_audit(struct agd_store *st, MDB_txn *txn)
{
	MDB_cursor *cur;
	MDB_stat stat;
	MDB_val k, v;
	int rc, n;

	rc = mdb_stat(txn, st->audit, &stat);
	if (rc || stat.ms_entries <= AGD_STORE_AUDIT_MAX)
		return rc;
	rc = mdb_cursor_open(txn, st->audit, &cur);
	for (n = 0; !rc && n < 2 && stat.ms_entries - (size_t)n > AGD_STORE_AUDIT_MAX; n++) {
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
		if (!rc)
			rc = mdb_cursor_del(cur, 0);
	}
	if (!rc || rc == MDB_NOTFOUND)
		rc = 0;
	mdb_cursor_close(cur);
	return rc;
}

int agd_store_audit(struct agd_store *st, MDB_txn *txn, const char *line)
{
	MDB_cursor *cur;
	MDB_val k, v;
	__u64 seq = 1, be;
	int rc = mdb_cursor_open(txn, st->audit, &cur);

	if (rc)
		return agd_store_errno(rc);
	rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	if (!rc && k.mv_size == 8) {
		memcpy(&be, k.mv_data, 8);
		seq = be64toh(be) + 1;
	}
	mdb_cursor_close(cur);
	if (rc && rc != MDB_NOTFOUND)
		return agd_store_errno(rc);
	be = htobe64(seq);
	k = (MDB_val){ 8, &be };
	v = str_val(line);
	rc = mdb_put(txn, st->audit, &k, &v, MDB_APPEND);
	if (!rc)
		rc = prune_audit(st, txn);
	return agd_store_errno(rc);
}

/* ---- rule feeds ------------------------------------------------------------------- */

int agd_store_feed_get(struct agd_store *st, MDB_txn *txn, const char *agent, const void **val,
		      size_t *len)
{
	MDB_val k = str_val(agent), v;
	int rc = st->feeds ? mdb_get(txn, st->feeds, &k, &v) : MDB_NOTFOUND;

	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return agd_store_errno(rc);
	*val = v.mv_data;
	*len = v.mv_size;
	return 1;
}

int agd_store_feed_put(struct agd_store *st, MDB_txn *txn, const char *agent, const void *val,
		      size_t len)
{
	MDB_val k = str_val(agent), v = { len, (void *)val };

	return agd_store_errno(mdb_put(txn, st->feeds, &k, &v, 0));
}

int agd_store_feed_del(struct agd_store *st, MDB_txn *txn, const char *agent)
{
	MDB_val k = str_val(agent);
	int rc = st->feeds ? mdb_del(txn, st->feeds, &k, NULL) : MDB_NOTFOUND;

	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

int agd_store_feeds_foreach(struct agd_store *st, MDB_txn *txn,
			   int (*fn)(void *arg, const char *agent, const void *val, size_t len),
			   void *arg)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, err = 0;

	if (!st->feeds)
		return 0;
	rc = mdb_cursor_open(txn, st->feeds, &cur);
	if (rc)
		return agd_store_errno(rc);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		char name[AG_NAME_MAX + 1];

		if (!k.mv_size || k.mv_size > AG_NAME_MAX)
			continue;
		memcpy(name, k.mv_data, k.mv_size);
		name[k.mv_size] = 0;
		err = fn(arg, name, v.mv_data, v.mv_size);
	}
	mdb_cursor_close(cur);
	if (err < 0)
		return err;
	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

/* ---- budgets --------------------------------------------------------------------- */

int agd_store_budget_put(struct agd_store *st, MDB_txn *txn, const char *name,
			 const struct agd_budget_rec *rec)
{
	MDB_val k = str_val(name), v = { sizeof(*rec), (void *)rec };

	return agd_store_errno(mdb_put(txn, st->budgets, &k, &v, 0));
}

int agd_store_budget_del(struct agd_store *st, MDB_txn *txn, const char *name)
{
	MDB_val k = str_val(name);
	int rc = mdb_del(txn, st->budgets, &k, NULL);

	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

int agd_store_budgets_foreach(struct agd_store *st, MDB_txn *txn,
			      int (*fn)(void *arg, const char *name,
					const struct agd_budget_rec *rec),
			      void *arg, size_t *skipped)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, err = 0;

	if (!st->budgets)
		return 0; /* a read-only open of a store from before budgets */
	rc = mdb_cursor_open(txn, st->budgets, &cur);
	if (rc)
		return agd_store_errno(rc);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct agd_budget_rec r;
		char name[AG_NAME_MAX + 1];

		if (!k.mv_size || k.mv_size > AG_NAME_MAX || v.mv_size != sizeof(r)) {
			(*skipped)++;
			continue;
		}
		memcpy(&r, v.mv_data, sizeof(r));
		if (r.version != AGD_STORE_VERSION ||
		    (r.kind != AGD_BUDGET_AGENT && r.kind != AGD_BUDGET_PARENT) ||
		    memchr(r.parent, 0, sizeof(r.parent)) == NULL) {
			(*skipped)++;
			continue;
		}
		memcpy(name, k.mv_data, k.mv_size);
		name[k.mv_size] = 0;
		err = fn(arg, name, &r);
	}
	mdb_cursor_close(cur);
	if (err)
		return err;
	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}
