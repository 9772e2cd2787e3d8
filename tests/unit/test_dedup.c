// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Rating ids in the state store (store_dedup.c): the index in memory against
 * a reference model under adds, lookups and prunes by time and by count
 * (growing through several sizes, removals from inside clusters), ids
 * sharing one time, a transaction that does not commit (the index made
 * again), a reopened store, and the ids an earlier version stored (dedup
 * and dedup_at) moved over in steps.
 */
#include <endian.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/store.h"

#define N_IDS 40000

struct model {
	__u64 at[N_IDS + 16]; /* when id i was added; 0: not held */
	size_t held;
};

static char tmpl[] = "/tmp/ag-dedup-XXXXXX";
static char *dir;

static void id_of(size_t i, char *buf, size_t len)
{
	/* ids in no order, of several lengths, as clients make them */
	snprintf(buf, len, "%08zx-%zu", (i * 2654435761u) & 0xffffffffu, i % 7);
}

/* As the engine opens it: earlier versions' ids moved (budget a step),
 * then the index made. Returns the steps taken. */
static int open_store_steps(struct agd_store *st, size_t budget)
{
	struct agd_err err = { 0 };
	bool more = true;
	MDB_txn *txn;
	int steps = 0;

	assert_int_equal(agd_store_open(dir, 256 << 20, st, &err), 0);
	while (more) {
		assert_int_equal(agd_store_txn_begin(st, &txn), 0);
		assert_int_equal(agd_store_dedup_migrate(st, txn, budget, &more), 0);
		assert_int_equal(agd_store_commit(st, txn), 0);
		steps++;
	}
	assert_int_equal(agd_store_read_begin(st, &txn), 0);
	assert_int_equal(agd_store_dedup_load(st, txn), 0);
	agd_store_txn_end(txn);
	return steps;
}

static void open_store(struct agd_store *st)
{
	open_store_steps(st, 100000);
}

static void close_store(struct agd_store *st)
{
	agd_store_dedup_unload(st);
	agd_store_close(st);
}

static int setup(void **state)
{
	dir = mkdtemp(strcpy(tmpl, "/tmp/ag-dedup-XXXXXX"));
	return dir ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

/* Every id the model holds is seen, every other one not. */
static void agrees(struct agd_store *st, MDB_txn *txn, const struct model *m, size_t upto)
{
	char id[32];
	size_t i;

	assert_int_equal(agd_store_dedup_count(st, txn), m->held);
	for (i = 0; i < upto; i++) {
		id_of(i, id, sizeof(id));
		if (agd_store_dedup_seen(st, txn, id) != (m->at[i] != 0))
			fail_msg("id %zu (%s): seen %d, model %d", i, id,
				 agd_store_dedup_seen(st, txn, id), m->at[i] != 0);
	}
}

/* What agd_store_dedup_prune does, on the model: in the order applied. */
static void model_prune(struct model *m, size_t upto, __u64 now, __u64 window, size_t max_ids,
			size_t budget)
{
	size_t i;

	for (i = 0; i < upto && budget; i++) {
		if (!m->at[i])
			continue;
		if (m->at[i] >= (now > window ? now - window : 0) && m->held <= max_ids)
			break;
		m->at[i] = 0;
		m->held--;
		budget--;
	}
}

static void against_a_model(void **state)
{
	static struct model m;
	struct agd_store st;
	MDB_txn *txn;
	char id[32];
	size_t i, next = 0, capped = 0;
	__u64 now = 1000;

	open_store(&st);
	while (next < N_IDS) {
		size_t batch = 1 + (size_t)rand() % 3000, max_ids = 12000;

		assert_int_equal(agd_store_txn_begin(&st, &txn), 0);
		for (i = 0; i < batch && next < N_IDS; i++, next++) {
			id_of(next, id, sizeof(id));
			assert_int_equal(agd_store_dedup_add(&st, txn, id, now), 0);
			assert_int_equal(agd_store_dedup_add(&st, txn, id, now), 1); /* in one txn */
			m.at[next] = now;
			m.held++;
			now += (__u64)(rand() % 3); /* often the same time */
		}
		/* a window of 20 s (about 20 000 ids) and at most max_ids: both
		 * bounds bite; 4000 removals a call */
		assert_int_equal(agd_store_dedup_prune(&st, txn, now, 20000, max_ids, 4000), 0);
		model_prune(&m, next, now, 20000, max_ids, 4000);
		capped += m.held == max_ids;
		agrees(&st, txn, &m, next + 10);
		assert_int_equal(agd_store_commit(&st, txn), 0);
		agd_store_dedup_settled(&st, true);
	}
	assert_true(capped > 0); /* the count bound was reached, not only the window */
	close_store(&st);
	/* Reopened: made from dedup_log, the same answers. */
	open_store(&st);
	assert_int_equal(agd_store_read_begin(&st, &txn), 0);
	agrees(&st, txn, &m, N_IDS);
	agd_store_txn_end(txn);
	close_store(&st);
}

static void uncommitted_changes_undone(void **state)
{
	struct agd_store st;
	MDB_txn *txn;
	char id[32];
	int i;

	open_store(&st);
	assert_int_equal(agd_store_txn_begin(&st, &txn), 0);
	for (i = 0; i < 3000; i++) { /* several sizes of the table */
		snprintf(id, sizeof(id), "kept-%d", i);
		assert_int_equal(agd_store_dedup_add(&st, txn, id, 10 + (__u64)i), 0);
	}
	assert_int_equal(agd_store_commit(&st, txn), 0);
	agd_store_dedup_settled(&st, true);
	/* Adds and a prune, then no commit. */
	assert_int_equal(agd_store_txn_begin(&st, &txn), 0);
	assert_int_equal(agd_store_dedup_sync(&st, txn), 0);
	for (i = 0; i < 3000; i++) {
		snprintf(id, sizeof(id), "lost-%d", i);
		assert_int_equal(agd_store_dedup_add(&st, txn, id, 5000), 0);
	}
	assert_int_equal(agd_store_dedup_prune(&st, txn, 5000, 10, 1000000, 100000), 0);
	assert_int_equal(agd_store_dedup_seen(&st, txn, "kept-0"), 0);
	agd_store_txn_end(txn);
	agd_store_dedup_settled(&st, false);
	/* The next transaction starts from what the store holds. */
	assert_int_equal(agd_store_txn_begin(&st, &txn), 0);
	assert_int_equal(agd_store_dedup_sync(&st, txn), 0);
	assert_int_equal(agd_store_dedup_count(&st, txn), 3000);
	for (i = 0; i < 3000; i++) {
		snprintf(id, sizeof(id), "kept-%d", i);
		assert_int_equal(agd_store_dedup_seen(&st, txn, id), 1);
		snprintf(id, sizeof(id), "lost-%d", i);
		assert_int_equal(agd_store_dedup_seen(&st, txn, id), 0);
	}
	agd_store_txn_end(txn);
	close_store(&st);
}

/* A store an earlier version wrote: dedup (id -> ms) and dedup_at
 * (be64 ms | id -> ""). Its ids move to dedup_log in the order they
 * expire, in steps; dedup is emptied; every id is still a duplicate and
 * the oldest are pruned first. */
static void earlier_layout_moved(void **state)
{
	struct agd_err err = { 0 };
	struct agd_store st;
	MDB_stat s;
	MDB_txn *txn;
	char id[32];
	int i;

	assert_int_equal(agd_store_open(dir, 256 << 20, &st, &err), 0);
	assert_int_equal(agd_store_txn_begin(&st, &txn), 0);
	for (i = 0; i < 2500; i++) {
		__u64 ms = 1000 + (__u64)i / 2, be = htobe64(ms);
		__u8 key[40];
		MDB_val k, v = { sizeof(ms), &ms };

		snprintf(id, sizeof(id), "old-%d", i);
		k = (MDB_val){ strlen(id), id };
		assert_int_equal(mdb_put(txn, st.dedup, &k, &v, 0), 0);
		memcpy(key, &be, 8);
		memcpy(key + 8, id, strlen(id));
		k = (MDB_val){ 8 + strlen(id), key };
		v = (MDB_val){ 0, "" };
		assert_int_equal(mdb_put(txn, st.dedup_at, &k, &v, 0), 0);
	}
	assert_int_equal(agd_store_commit(&st, txn), 0);
	agd_store_close(&st);
	assert_int_equal(open_store_steps(&st, 1000), 3);
	assert_int_equal(agd_store_txn_begin(&st, &txn), 0);
	assert_int_equal(mdb_stat(txn, st.dedup, &s), 0);
	assert_int_equal(s.ms_entries, 0);
	assert_int_equal(mdb_stat(txn, st.dedup_at, &s), 0);
	assert_int_equal(s.ms_entries, 0);
	assert_int_equal(agd_store_dedup_count(&st, txn), 2500);
	for (i = 0; i < 2500; i++) {
		snprintf(id, sizeof(id), "old-%d", i);
		assert_int_equal(agd_store_dedup_add(&st, txn, id, 5000), 1);
	}
	assert_int_equal(agd_store_dedup_add(&st, txn, "new", 5000), 0);
	/* ms 1000..1249 in the old store: a window ending at 1100 keeps ms >= 1100 */
	assert_int_equal(agd_store_dedup_prune(&st, txn, 2100, 1000, 100000, 100000), 0);
	for (i = 0; i < 2500; i++) {
		snprintf(id, sizeof(id), "old-%d", i);
		assert_int_equal(agd_store_dedup_seen(&st, txn, id), 1000 + i / 2 >= 1100);
	}
	assert_int_equal(agd_store_dedup_seen(&st, txn, "new"), 1);
	assert_int_equal(agd_store_commit(&st, txn), 0);
	agd_store_dedup_settled(&st, true);
	close_store(&st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(against_a_model, setup, teardown),
		cmocka_unit_test_setup_teardown(uncommitted_changes_undone, setup, teardown),
		cmocka_unit_test_setup_teardown(earlier_layout_moved, setup, teardown),
	};

	srand(7);
	return cmocka_run_group_tests_name("dedup", tests, NULL, NULL);
}
