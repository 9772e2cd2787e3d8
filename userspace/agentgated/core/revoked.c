// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Revoked bearer tokens (revoked.h, engine.h): the hash the API asks, the
 * store behind it, applying a revocation, forgetting expired ones. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_int.h"

#define RV_BUCKETS 65536 /* a power of two */

struct revoked_entry {
	struct revoked_entry *next;
	char key[2 + AGD_REVOKED_VALUE_MAX + 1]; /* kind byte, value */
	struct agd_revoked_rec rec;
};

static size_t rv_hash(const char *s)
{
	size_t h = 1469598103934665603ULL;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h & (RV_BUCKETS - 1);
}

static void key_of(enum agd_revoke_kind kind, const char *value, char *key, size_t len)
{
	snprintf(key, len, "%c%s", (char)kind, value);
}

/* Under rvlock (write). */
static struct revoked_entry *rv_find(struct agd_engine *e, const char *key)
{
	struct revoked_entry *r = e->rv ? e->rv[rv_hash(key)] : NULL;

	while (r && strcmp(r->key, key))
		r = r->next;
	return r;
}

static int rv_put(struct agd_engine *e, const char *key, const struct agd_revoked_rec *rec)
{
	struct revoked_entry *r = rv_find(e, key);
	size_t h;

	if (r) { /* again: the later until and at win */
		if (rec->until_s > r->rec.until_s)
			r->rec.until_s = rec->until_s;
		if (rec->at_s > r->rec.at_s)
			r->rec.at_s = rec->at_s;
		return 0;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	snprintf(r->key, sizeof(r->key), "%s", key);
	r->rec = *rec;
	h = rv_hash(key);
	r->next = e->rv[h];
	e->rv[h] = r;
	e->rv_count++;
	return 0;
}

static int load_one(void *arg, const char *key, const struct agd_revoked_rec *rec)
{
	struct agd_engine *e = arg;

	if ((key[0] != AGD_REVOKE_JTI && key[0] != AGD_REVOKE_SUB) || !key[1])
		return 0;
	return rv_put(e, key, rec);
}

int revoked_load(struct agd_engine *e, struct agd_err *errbuf)
{
	MDB_txn *txn;
	int err;

	pthread_rwlock_init(&e->rvlock, NULL);
	e->rv = calloc(RV_BUCKETS, sizeof(*e->rv));
	if (!e->rv)
		return agd_errf(errbuf, -ENOMEM, "out of memory");
	err = agd_store_read_begin(&e->st, &txn);
	if (err)
		return agd_store_fail(errbuf, err, "reading the revoked tokens");
	err = agd_store_revoked_foreach(&e->st, txn, load_one, e);
	agd_store_txn_end(txn);
	if (err)
		return agd_store_fail(errbuf, err, "reading the revoked tokens");
	revoked_prune(e, (int64_t)time(NULL));
	return 0;
}

void revoked_free(struct agd_engine *e)
{
	size_t i;

	if (!e->rv)
		return;
	for (i = 0; i < RV_BUCKETS; i++)
		while (e->rv[i]) {
			struct revoked_entry *r = e->rv[i];

			e->rv[i] = r->next;
			free(r);
		}
	free(e->rv);
	e->rv = NULL;
	pthread_rwlock_destroy(&e->rvlock);
}

void revoked_prune(struct agd_engine *e, int64_t now_s)
{
	MDB_txn *txn = NULL;
	size_t i, n = 0;
	int err = 0;

	if (!e->rv)
		return;
	/* Under the engine's lock: no commit of a revocation in between. */
	pthread_mutex_lock(&e->lock);
	pthread_rwlock_wrlock(&e->rvlock);
	for (i = 0; i < RV_BUCKETS && !err; i++) {
		struct revoked_entry **pp = &e->rv[i];

		while (*pp && !err) {
			struct revoked_entry *r = *pp;

			if (r->rec.until_s > now_s) {
				pp = &r->next;
				continue;
			}
			if (!txn && (err = txn_begin(e, &txn)))
				break;
			err = agd_store_revoked_del(&e->st, txn, r->key);
			if (err)
				break;
			*pp = r->next;
			free(r);
			e->rv_count--;
			n++;
		}
	}
	pthread_rwlock_unlock(&e->rvlock);
	if (txn && !err)
		err = txn_commit(e, txn, 0);
	else if (txn)
		agd_store_txn_end(txn);
	pthread_mutex_unlock(&e->lock);
	/* Gone from memory but still stored: read again, and pruned, at start. */
	if (err)
		store_log(e, err, "expired revocations not removed from the store (%zu)", n);
}

int agd_engine_apply_revoke(struct agd_engine *e, __u64 seq, const struct agd_revocation *r,
			   const char *subject, struct agd_err *oe)
{
	struct agd_revoked_rec rec = { r->at_s, r->until_s };
	char key[2 + AGD_REVOKED_VALUE_MAX + 1], *line = NULL;
	size_t have;
	MDB_txn *txn;
	int err;

	if ((r->kind != AGD_REVOKE_JTI && r->kind != AGD_REVOKE_SUB) || !r->value[0] ||
	    strlen(r->value) > AGD_REVOKED_VALUE_MAX || r->until_s < r->at_s)
		return agd_errf(oe, -EINVAL, "a revocation names a jti or a sub of 1 to %d bytes, "
				"kept until after it was made", AGD_REVOKED_VALUE_MAX);
	key_of(r->kind, r->value, key, sizeof(key));
	pthread_rwlock_rdlock(&e->rvlock);
	have = e->rv_count + !rv_find(e, key);
	pthread_rwlock_unlock(&e->rvlock);
	if (have > AGD_REVOKED_MAX) {
		revoked_prune(e, (int64_t)time(NULL));
		pthread_rwlock_rdlock(&e->rvlock);
		have = e->rv_count + !rv_find(e, key);
		pthread_rwlock_unlock(&e->rvlock);
		if (have > AGD_REVOKED_MAX)
			return agd_errf(oe, -ENOSPC, "%d revocations are kept, the most there may "
					"be; they are forgotten as their tokens expire",
					AGD_REVOKED_MAX);
	}
	pthread_mutex_lock(&e->lock);
	err = txn_begin(e, &txn);
	if (!err) {
		err = agd_store_revoked_put(&e->st, txn, key, &rec);
		if (!err)
			err = audit(e, txn, subject, "auth.revoke", "", NULL,
				    json_pack("{s:s,s:I,s:I}", r->kind == AGD_REVOKE_JTI ?
					      "jti" : "sub", r->value, "at", (json_int_t)r->at_s,
					      "until", (json_int_t)r->until_s), &line);
		if (!err)
			err = txn_commit(e, txn, seq);
		else
			agd_store_txn_end(txn);
	}
	if (!err) {
		pthread_rwlock_wrlock(&e->rvlock);
		err = rv_put(e, key, &rec);
		pthread_rwlock_unlock(&e->rvlock);
		audit_file(e, line);
	} else {
		free(line);
	}
	pthread_mutex_unlock(&e->lock);
	return err ? agd_store_fail(oe, err, "not revoked") : 0;
}

bool agd_engine_revoked(struct agd_engine *e, const char *jti, const char *sub, int64_t iat,
		       int64_t now_s)
{
	char key[2 + AGD_REVOKED_VALUE_MAX + 1];
	struct revoked_entry *r;
	bool hit = false;

	if (!e->rv)
		return false;
	pthread_rwlock_rdlock(&e->rvlock);
	if (e->rv_count && jti && jti[0] && strlen(jti) <= AGD_REVOKED_VALUE_MAX) {
		key_of(AGD_REVOKE_JTI, jti, key, sizeof(key));
		r = rv_find(e, key);
		hit = r && r->rec.until_s > now_s;
	}
	if (!hit && e->rv_count && sub && sub[0] && strlen(sub) <= AGD_REVOKED_VALUE_MAX) {
		key_of(AGD_REVOKE_SUB, sub, key, sizeof(key));
		r = rv_find(e, key);
		hit = r && r->rec.until_s > now_s && (iat < 0 || iat <= r->rec.at_s);
	}
	pthread_rwlock_unlock(&e->rvlock);
	return hit;
}

size_t agd_engine_revoked_count(struct agd_engine *e)
{
	size_t n;

	pthread_rwlock_rdlock(&e->rvlock);
	n = e->rv_count;
	pthread_rwlock_unlock(&e->rvlock);
	return n;
}
