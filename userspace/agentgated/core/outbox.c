// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <endian.h>
#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "outbox.h"

struct agd_outbox {
	MDB_env *env;
	MDB_dbi dbi;
	pthread_mutex_t lock; /* the write side */
	__u64 next;           /* the next key, under lock */
};

/* Key: be64 counter. Value: subject \n msg id \n data. */
static __u64 key_of(const MDB_val *k)
{
	__u64 be;

	memcpy(&be, k->mv_data, sizeof(be)); /* LMDB keys are not aligned */
	return be64toh(be);
}

/* The key after the last one, and how many there are. */
static int scan(struct agd_outbox *o, __u64 *depth)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	MDB_stat st;
	int rc;

	rc = mdb_txn_begin(o->env, NULL, 0, &txn);
	if (rc)
		return rc;
	rc = mdb_dbi_open(txn, NULL, 0, &o->dbi);
	if (!rc)
		rc = mdb_stat(txn, o->dbi, &st);
	if (!rc)
		rc = mdb_cursor_open(txn, o->dbi, &cur);
	if (rc) {
		mdb_txn_abort(txn);
		return rc;
	}
	if (!mdb_cursor_get(cur, &k, &v, MDB_LAST) && k.mv_size == 8)
		o->next = key_of(&k) + 1;
	mdb_cursor_close(cur);
	*depth = st.ms_entries;
	return mdb_txn_commit(txn);
}

int agd_outbox_open(const char *state_dir, struct agd_outbox **out, __u64 *depth,
		    struct agd_err *err)
{
	struct agd_outbox *o;
	char dir[4200];
	int rc;

	*out = NULL;
	snprintf(dir, sizeof(dir), "%s/outbox", state_dir);
	if (mkdir(dir, 0700) && errno != EEXIST)
		return agd_errf(err, -errno, "cannot create %s: %s", dir, strerror(errno));
	o = calloc(1, sizeof(*o));
	if (!o)
		return agd_errf(err, -ENOMEM, "out of memory");
	pthread_mutex_init(&o->lock, NULL);
	o->next = 1;
	rc = mdb_env_create(&o->env);
	if (!rc)
		rc = mdb_env_set_mapsize(o->env, 1ULL << 30);
	if (!rc)
		rc = mdb_env_open(o->env, dir, 0, 0600);
	if (!rc)
		rc = scan(o, depth);
	if (rc) {
		agd_errf(err, -EIO, "cannot open the outbox in %s: %s", dir, mdb_strerror(rc));
		agd_outbox_close(o);
		return -EIO;
	}
	*out = o;
	return 0;
}

static int put_all(struct agd_outbox *o, MDB_txn *txn, const struct agd_outbox_msg *m, size_t n)
{
	size_t i;
	int rc = 0;

	for (i = 0; i < n && !rc; i++) {
		__u64 key = htobe64(o->next + i);
		MDB_val k = { sizeof(key), &key }, v;
		char *val = NULL;
		int l = asprintf(&val, "%s\n%s\n%.*s", m[i].subject, m[i].id, (int)m[i].len,
				 m[i].data);

		if (l < 0)
			return ENOMEM;
		v = (MDB_val){ (size_t)l, val };
		rc = mdb_put(txn, o->dbi, &k, &v, MDB_APPEND);
		free(val);
	}
	return rc;
}

int agd_outbox_put(struct agd_outbox *o, const struct agd_outbox_msg *m, size_t n,
		   struct agd_err *err)
{
	MDB_txn *txn;
	int rc;

	pthread_mutex_lock(&o->lock);
	rc = mdb_txn_begin(o->env, NULL, 0, &txn);
	if (!rc) {
		rc = put_all(o, txn, m, n);
		if (!rc)
			rc = mdb_txn_commit(txn);
		else
			mdb_txn_abort(txn);
	}
	if (!rc)
		o->next += n;
	pthread_mutex_unlock(&o->lock);
	if (rc)
		return agd_errf(err, -EIO,
			"cannot keep ratings in the outbox: %s", mdb_strerror(rc));
	return 0;
}

/* Splits a value into subject, id and data; false for what put never wrote. */
static bool parse(const MDB_val *k, const MDB_val *v, struct agd_outbox_msg *m)
{
	const char *s = v->mv_data, *end = s + v->mv_size;
	const char *nl1 = memchr(s, '\n', v->mv_size), *nl2;

	nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(end - nl1 - 1)) : NULL;
	if (k->mv_size != 8 || !nl2 || nl1 - s > AGD_OUTBOX_SUBJECT_MAX ||
	    nl2 - nl1 - 1 > AGD_OUTBOX_ID_MAX)
		return false;
	memcpy(m->subject, s, (size_t)(nl1 - s));
	m->subject[nl1 - s] = 0;
	memcpy(m->id, nl1 + 1, (size_t)(nl2 - nl1 - 1));
	m->id[nl2 - nl1 - 1] = 0;
	m->key = key_of(k);
	m->data = nl2 + 1;
	m->len = (size_t)(end - nl2 - 1);
	return true;
}

int agd_outbox_read(struct agd_outbox *o, size_t max,
		    void (*fn)(void *arg, const struct agd_outbox_msg *m), void *arg)
{
	MDB_txn *txn;
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	size_t n = 0;
	int rc, op = MDB_FIRST;

	rc = mdb_txn_begin(o->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return -EIO;
	rc = mdb_cursor_open(txn, o->dbi, &cur);
	while (!rc && n < max && !(rc = mdb_cursor_get(cur, &k, &v, op))) {
		struct agd_outbox_msg m;

		op = MDB_NEXT;
		if (!parse(&k, &v, &m))
			continue;
		fn(arg, &m);
		n++;
	}
	if (cur)
		mdb_cursor_close(cur); /* a read-only transaction does not free it */
	mdb_txn_abort(txn);
	return rc && rc != MDB_NOTFOUND ? -EIO : 0;
}

int agd_outbox_delete(struct agd_outbox *o, const __u64 *keys, size_t n, size_t *gone,
		      struct agd_err *err)
{
	MDB_txn *txn = NULL;
	size_t i, g = 0;
	int rc;

	pthread_mutex_lock(&o->lock);
	rc = mdb_txn_begin(o->env, NULL, 0, &txn);
	for (i = 0; i < n && !rc; i++) {
		__u64 key = htobe64(keys[i]);
		MDB_val k = { sizeof(key), &key };

		rc = mdb_del(txn, o->dbi, &k, NULL);
		if (rc == MDB_NOTFOUND)
			rc = 0;
		else if (!rc)
			g++;
	}
	if (!rc)
		rc = mdb_txn_commit(txn);
	else if (txn)
		mdb_txn_abort(txn);
	pthread_mutex_unlock(&o->lock);
	*gone = rc ? 0 : g;
	if (rc)
		return agd_errf(err, -EIO, "outbox: %s", mdb_strerror(rc));
	return 0;
}

void agd_outbox_close(struct agd_outbox *o)
{
	if (!o)
		return;
	if (o->env)
		mdb_env_close(o->env);
	pthread_mutex_destroy(&o->lock);
	free(o);
}
