// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Voices in memory over a real state store (core/voices.h): set, replace
 * and drop, each logged with its transaction and read back on open; the
 * fold into the snapshot (and out of the voices database older stores
 * kept them in); a transaction that did not
 * commit read again from the store; a damaged log refused; the offline
 * count (agd_store_voices_of) agreeing with memory before and after a fold.
 */
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
#include "core/voices.h"

static int old; /* agd_voices_set's earlier score, where a case does not look */

struct fx {
	char dir[64];
	struct agd_store st;
	struct agd_voices *v;
};

static void fx_open(struct fx *f)
{
	struct agd_err err = { 0 };
	MDB_txn *txn;

	assert_int_equal(agd_store_open(f->dir, 256 << 20, &f->st, &err), 0);
	assert_int_equal(agd_store_read_begin(&f->st, &txn), 0);
	assert_int_equal(agd_voices_open(&f->st, txn, &f->v, &err), 0);
	agd_store_txn_end(txn);
}

static void fx_close(struct fx *f)
{
	agd_voices_free(f->v);
	f->v = NULL;
	agd_store_close(&f->st);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/test_voices.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	fx_open(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	fx_close(f);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

/* A write transaction the way the engine runs one (txn_begin, txn_commit). */
static MDB_txn *begin(struct fx *f)
{
	struct agd_err err = { 0 };
	MDB_txn *txn;

	assert_int_equal(agd_store_txn_begin(&f->st, &txn), 0);
	assert_int_equal(agd_voices_sync(f->v, &f->st, txn, &err), 0);
	return txn;
}

static void commit(struct fx *f, MDB_txn *txn)
{
	assert_int_equal(agd_voices_flush(f->v, &f->st, txn), 0);
	assert_int_equal(agd_store_commit(&f->st, txn), 0);
	agd_voices_settled(f->v, true);
}

static int score_of(struct fx *f, const char *agent, const char *user)
{
	int s = 0;

	return agd_voices_get(f->v, agent, user, &s) ? s : 0;
}

static __u64 offline_of(struct fx *f, const char *agent)
{
	MDB_txn *txn;
	__u64 n = 99;

	assert_int_equal(agd_store_read_begin(&f->st, &txn), 0);
	assert_int_equal(agd_store_voices_of(&f->st, txn, agent, &n), 0);
	agd_store_txn_end(txn);
	return n;
}

static void reopen(struct fx *f)
{
	fx_close(f);
	fx_open(f);
}

static void set_replace_drop_survive_reopen(void **state)
{
	struct fx *f = *state;
	MDB_txn *txn = begin(f);

	assert_int_equal(agd_voices_set(f->v, "a", "u1", 1, 10, &old), 0);
	assert_int_equal(agd_voices_set(f->v, "a", "u2", 4, 11, &old), 0);
	assert_int_equal(agd_voices_set(f->v, "b", "u1", 5, 12, &old), 0);
	assert_int_equal(agd_voices_set(f->v, "b", "", 2, 13, &old), 0); /* shared anonymous */
	assert_int_equal(agd_voices_set(f->v, "a", "u1", 3, 14, &old), 0); /* replaced */
	assert_int_equal(old, 1);
	commit(f, txn);
	assert_int_equal(agd_voices_count(f->v), 4);
	assert_int_equal(agd_voices_of(f->v, "a"), 2);
	assert_int_equal(agd_voices_logged(f->v), 5);
	assert_int_equal(offline_of(f, "a"), 2);
	reopen(f); /* from the log */
	assert_int_equal(score_of(f, "a", "u1"), 3);
	assert_int_equal(score_of(f, "a", "u2"), 4);
	assert_int_equal(score_of(f, "b", ""), 2);
	assert_int_equal(score_of(f, "b", "u2"), 0);
	assert_int_equal(agd_voices_logged(f->v), 5);
	/* A drop is logged: the voices stay gone after a reopen. */
	txn = begin(f);
	assert_int_equal(agd_voices_drop(f->v, "a"), 0);
	assert_int_equal(agd_voices_drop(f->v, "nobody"), 0);
	commit(f, txn);
	assert_int_equal(agd_voices_of(f->v, "a"), 0);
	assert_int_equal(offline_of(f, "a"), 0);
	reopen(f);
	assert_int_equal(agd_voices_count(f->v), 2);
	assert_int_equal(score_of(f, "a", "u1"), 0);
	/* Again after the drop: a first voice. */
	txn = begin(f);
	assert_int_equal(agd_voices_set(f->v, "a", "u1", 2, 20, &old), 0);
	commit(f, txn);
	assert_int_equal(offline_of(f, "a"), 1);
	reopen(f);
	assert_int_equal(score_of(f, "a", "u1"), 2);
}

static void fold_writes_the_database_and_empties_the_log(void **state)
{
	struct fx *f = *state;
	MDB_txn *txn = begin(f);
	char user[32];
	int i;

	for (i = 0; i < 3000; i++) {
		snprintf(user, sizeof(user), "user-%d", (i * 7919) % 3000);
		assert_int_equal(agd_voices_set(f->v, i % 3 ? "x" : "y", user, 1 + i % 5, i, &old), 0);
	}
	commit(f, txn);
	assert_int_equal(offline_of(f, "x"), 2000);
	txn = begin(f);
	assert_int_equal(agd_voices_fold(f->v, &f->st, txn), 0);
	commit(f, txn);
	assert_int_equal(agd_voices_logged(f->v), 0);
	assert_int_equal(offline_of(f, "x"), 2000);
	assert_int_equal(offline_of(f, "y"), 1000);
	txn = begin(f);
	assert_int_equal(agd_store_voice_count(&f->st, txn, NULL), 0); /* all in the snapshot */
	agd_store_txn_end(txn);
	reopen(f); /* from the snapshot alone */
	assert_int_equal(agd_voices_count(f->v), 3000);
	assert_int_equal(agd_voices_logged(f->v), 0);
	assert_int_equal(score_of(f, "x", "user-1"), 5); /* i = 1679 */
	/* After the fold, changes on top: the database and the log agree
	 * (user-1 rated x before, user-0 did not). */
	txn = begin(f);
	assert_int_equal(agd_voices_set(f->v, "x", "user-1", 5, 1, &old), 0);
	assert_int_equal(agd_voices_set(f->v, "x", "user-0", 5, 1, &old), 0);
	assert_int_equal(agd_voices_drop(f->v, "y"), 0);
	commit(f, txn);
	assert_int_equal(offline_of(f, "x"), 2001);
	assert_int_equal(offline_of(f, "y"), 0);
	reopen(f);
	assert_int_equal(agd_voices_count(f->v), 2001);
	assert_int_equal(score_of(f, "x", "user-1"), 5);
	assert_int_equal(agd_voices_logged(f->v), 3);
	assert_false(agd_voices_fold_due(f->v));
}

/* A transaction that does not commit: the table is read again before the
 * next one, so memory never runs ahead of the store. */
static void uncommitted_changes_are_read_again(void **state)
{
	struct fx *f = *state;
	MDB_txn *txn = begin(f);

	assert_int_equal(agd_voices_set(f->v, "a", "kept", 4, 1, &old), 0);
	commit(f, txn);
	txn = begin(f);
	assert_int_equal(agd_voices_set(f->v, "a", "lost", 1, 2, &old), 0);
	assert_int_equal(agd_voices_set(f->v, "a", "kept", 1, 2, &old), 0);
	assert_int_equal(score_of(f, "a", "lost"), 1);
	agd_store_txn_end(txn); /* aborted without settling */
	txn = begin(f);
	assert_int_equal(score_of(f, "a", "lost"), 0);
	assert_int_equal(score_of(f, "a", "kept"), 4);
	assert_int_equal(agd_voices_drop(f->v, "a"), 0);
	agd_store_txn_end(txn);
	agd_voices_settled(f->v, false);
	txn = begin(f);
	assert_int_equal(score_of(f, "a", "kept"), 4);
	agd_store_txn_end(txn);
}

/* A reading that fails leaves the table empty and refusing until one
 * succeeds: never a partial table taken for the whole, nor folded. */
static void a_failed_reading_keeps_refusing(void **state)
{
	struct fx *f = *state;
	static const unsigned char bad[] = { AGD_VLOG_DROP, 0 };
	struct agd_err err = { 0 };
	MDB_txn *txn = begin(f);

	assert_int_equal(agd_voices_set(f->v, "a", "u", 2, 1, &old), 0);
	commit(f, txn);
	txn = begin(f);
	assert_int_equal(agd_store_vlog_append(&f->st, txn, AGD_VLOG_SNAP, bad, sizeof(bad)), 0);
	assert_int_equal(agd_store_commit(&f->st, txn), 0);
	txn = begin(f);
	assert_int_equal(agd_voices_set(f->v, "a", "lost", 1, 2, &old), 0);
	agd_store_txn_end(txn); /* not committed: read again next time */
	assert_int_equal(agd_store_txn_begin(&f->st, &txn), 0);
	assert_int_equal(agd_voices_sync(f->v, &f->st, txn, &err), -EUCLEAN);
	assert_int_equal(agd_voices_sync(f->v, &f->st, txn, &err), -EUCLEAN);
	assert_int_equal(agd_voices_get(f->v, "a", "u", &old), 0);
	assert_int_equal(agd_voices_of(f->v, "a"), 0);
	assert_true(agd_voices_set(f->v, "a", "u", 1, 3, &old) < 0);
	assert_false(agd_voices_fold_due(f->v));
	assert_true(agd_voices_fold(f->v, &f->st, txn) < 0);
	agd_store_txn_end(txn);
}

static void a_damaged_log_is_refused(void **state)
{
	struct fx *f = *state;
	static const unsigned char bad[] = { AGD_VLOG_VOICE, 1, 1, 'a', 'u', 9, 0, 0, 0, 0, 0, 0,
					     0, 0 };
	struct agd_voices *v = NULL;
	struct agd_err err = { 0 };
	MDB_txn *txn = begin(f);

	assert_int_equal(agd_store_vlog_append(&f->st, txn, AGD_VLOG_LOG, bad, sizeof(bad)), 0);
	assert_int_equal(agd_store_commit(&f->st, txn), 0);
	assert_int_equal(agd_store_read_begin(&f->st, &txn), 0);
	assert_int_equal(agd_voices_open(&f->st, txn, &v, &err), -EUCLEAN);
	assert_null(v);
	assert_non_null(strstr(err.msg, "voice log"));
	agd_store_txn_end(txn);
}

/* Records round-trip; cut or out-of-range ones are damaged. */
static void log_records_round_trip(void **state)
{
	struct agd_vlog_rec in = { .kind = AGD_VLOG_VOICE, .score = 5, .ts_ms = -1 }, out;
	unsigned char buf[AGD_VLOG_VOICE_MAX];
	const unsigned char *p;
	size_t n, cut;

	(void)state;
	memset(in.agent, 'a', AG_NAME_MAX);
	memset(in.user, 'u', sizeof(in.user) - 1);
	n = agd_vlog_encode(buf, &in);
	assert_int_equal(n, AGD_VLOG_VOICE_MAX);
	p = buf;
	assert_int_equal(agd_vlog_decode(&p, buf + n, &out), 1);
	assert_ptr_equal(p, buf + n);
	assert_string_equal(out.agent, in.agent);
	assert_string_equal(out.user, in.user);
	assert_true(out.score == 5 && out.ts_ms == -1);
	for (cut = 1; cut < n; cut++) {
		p = buf;
		assert_int_equal(agd_vlog_decode(&p, buf + cut, &out), -EUCLEAN);
	}
	buf[0] = 7;
	p = buf;
	assert_int_equal(agd_vlog_decode(&p, buf + n, &out), -EUCLEAN);
}

/* Many voices and agents: the tables grow, drops free and reuse slots, and
 * the arena is compacted at a fold; nothing is lost on the way. */
static void many_voices_grow_and_compact(void **state)
{
	struct fx *f = *state;
	MDB_txn *txn = begin(f);
	char agent[16], user[48];
	int i;

	for (i = 0; i < 200000; i++) {
		snprintf(agent, sizeof(agent), "ag%d", i % 500);
		snprintf(user, sizeof(user), "a-rather-long-user-id-%d", i);
		assert_int_equal(agd_voices_set(f->v, agent, user, 1 + i % 5, i, &old), 0);
	}
	commit(f, txn);
	txn = begin(f);
	for (i = 0; i < 400; i++) {
		snprintf(agent, sizeof(agent), "ag%d", i);
		assert_int_equal(agd_voices_drop(f->v, agent), 0);
	}
	commit(f, txn);
	assert_int_equal(agd_voices_count(f->v), 40000);
	txn = begin(f);
	assert_int_equal(agd_voices_fold(f->v, &f->st, txn), 0);
	commit(f, txn);
	txn = begin(f);
	for (i = 0; i < 1000; i++) { /* slots freed by the drops */
		snprintf(user, sizeof(user), "new-%d", i);
		assert_int_equal(agd_voices_set(f->v, "ag1", user, 3, i, &old), 0);
	}
	commit(f, txn);
	for (i = 0; i < 200000; i += 997) { /* the kept ones kept, the dropped gone */
		snprintf(agent, sizeof(agent), "ag%d", i % 500);
		snprintf(user, sizeof(user), "a-rather-long-user-id-%d", i);
		assert_int_equal(score_of(f, agent, user), i % 500 >= 400 ? 1 + i % 5 : 0);
	}
	reopen(f);
	assert_int_equal(agd_voices_count(f->v), 41000);
	assert_int_equal(agd_voices_of(f->v, "ag1"), 1000);
	assert_int_equal(agd_voices_of(f->v, "ag499"), 400);
	assert_int_equal(offline_of(f, "ag499"), 400);
	assert_int_equal(score_of(f, "ag499", "a-rather-long-user-id-199999"), 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(set_replace_drop_survive_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(fold_writes_the_database_and_empties_the_log, setup,
						teardown),
		cmocka_unit_test_setup_teardown(uncommitted_changes_are_read_again, setup, teardown),
		cmocka_unit_test_setup_teardown(a_damaged_log_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(a_failed_reading_keeps_refusing, setup, teardown),
		cmocka_unit_test(log_records_round_trip),
		cmocka_unit_test_setup_teardown(many_voices_grow_and_compact, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
