// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The state store's rating ids (dedup) and their expiry order (dedup_at):
 * store.h says what each holds.
 */
#include <endian.h>
#include <string.h>

#include "store.h"
#include "store_int.h"

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

int agd_store_dedup_seen(struct agd_store *st, MDB_txn *txn, const char *id)
{
	MDB_val k = str_val(id), v;
	int rc = mdb_get(txn, st->dedup, &k, &v);

	if (rc == MDB_NOTFOUND)
		return 0;
	return rc ? agd_store_errno(rc) : 1;
}

int agd_store_dedup_add(struct agd_store *st, MDB_txn *txn, const char *id, __u64 now_ms)
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
	return agd_store_errno(rc);
}

__u64 agd_store_dedup_count(struct agd_store *st, MDB_txn *txn)
{
	MDB_stat s;

	return mdb_stat(txn, st->dedup, &s) ? 0 : s.ms_entries;
}

int agd_store_dedup_prune(struct agd_store *st, MDB_txn *txn, __u64 now_ms, __u64 window_ms,
			 __u64 max_ids, size_t budget)
{
	__u64 count = agd_store_dedup_count(st, txn);
	__u64 cutoff = now_ms > window_ms ? now_ms - window_ms : 0;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;

	rc = mdb_cursor_open(txn, st->dedup_at, &cur);
	if (rc)
		return agd_store_errno(rc);
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
	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}
