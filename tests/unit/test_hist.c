// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The explain history in the state store (store.h, hist_rated and
 * hist_changes): the on-disk layout byte by byte, the rings (newest kept,
 * oldest first), malformed values refused, the change diff and pin, and a
 * store an older agentgated wrote (without the two databases) opening both
 * read-only and for writing.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/explain.h"
#include "core/store.h"

static struct agd_hist_rating_in rating(int i, int score)
{
	static char ids[64][32], users[64][32];

	snprintf(ids[i % 64], sizeof(ids[0]), "r%d", i);
	snprintf(users[i % 64], sizeof(users[0]), "u%d", i);
	return (struct agd_hist_rating_in){
		.id = ids[i % 64], .user = users[i % 64], .score = score, .ts_ms = 1000 + i,
		.applied_ms = 2000 + i, .rate_before = 100 + i, .rate_after = 101 + i,
	};
}

static __u64 u64_at(const __u8 *b, size_t off)
{
	__u64 v;

	memcpy(&v, b + off, 8);
	return v;
}

static double dbl_at(const __u8 *b, size_t off)
{
	double v;

	memcpy(&v, b + off, 8);
	return v;
}

/* The on-disk bytes: a layout change must be a new AGD_HIST_VERSION. */
static void rating_layout_bytes(void **state)
{
	struct agd_hist_rating_in in = { .id = "ab", .user = "u", .score = 4, .ts_ms = 77,
					.applied_ms = 88, .rate_before = 1.5, .rate_after = 2.5 };
	size_t len;
	void *buf;
	__u8 *b;
	__u32 v32;

	assert_int_equal(agd_hist_ratings_encode(NULL, 0, &in, 1, 0, &buf, &len), 0);
	b = buf;
	assert_int_equal(len, 16 + 40 + 3);
	memcpy(&v32, b, 4);
	assert_int_equal(v32, AGD_HIST_VERSION);
	memcpy(&v32, b + 4, 4);
	assert_int_equal(v32, 1);
	assert_int_equal(u64_at(b, 8), 1);
	assert_int_equal(u64_at(b, 16), 77);
	assert_int_equal(u64_at(b, 24), 88);
	assert_true(dbl_at(b, 32) == 1.5 && dbl_at(b, 40) == 2.5);
	assert_int_equal(b[48], 4);
	assert_int_equal(b[49], 2);
	assert_int_equal(b[50], 1);
	assert_memory_equal(b + 56, "abu", 3);
	free(buf);
}

static void change_layout_bytes(void **state)
{
	size_t len;
	void *buf;
	__u8 *b;
	__s64 pin;

	assert_int_equal(agd_hist_changes_encode(NULL, 0, 99, "bob", "agent.update", "{}", 1, &buf,
						&len),
			 0);
	b = buf;
	assert_int_equal(len, 288 + 16 + 3 + 12 + 2);
	assert_int_equal(u64_at(b, 8), 1); /* total */
	memcpy(&pin, b + 16, 8);
	assert_int_equal(pin, 99);
	assert_int_equal(b[24], 3);
	assert_memory_equal(b + 32, "bob", 3);
	assert_int_equal(u64_at(b, 288), 99);
	assert_int_equal(b[296], 3);
	assert_int_equal(b[297], 12);
	assert_int_equal(b[298] | b[299] << 8, 2);
	assert_memory_equal(b + 304, "bobagent.update{}", 17);
	free(buf);
}

/* Appended one batch at a time: the newest AGD_HIST_RATINGS, oldest first. */
static void ratings_ring_keeps_the_newest(void **state)
{
	struct agd_hist_ratings *out = malloc(sizeof(*out));
	void *buf = NULL, *next;
	size_t len = 0, nlen, i;
	int k;

	for (k = 1; k <= 20; k++) {
		struct agd_hist_rating_in in = rating(k, 1 + k % 5);

		assert_int_equal(agd_hist_ratings_encode(buf, len, &in, 1, 0, &next, &nlen), 0);
		free(buf);
		buf = next;
		len = nlen;
	}
	assert_int_equal(agd_hist_ratings_decode(buf, len, out), 0);
	assert_int_equal(out->total, 20);
	assert_int_equal(out->n, AGD_HIST_RATINGS);
	for (i = 0; i < out->n; i++) {
		char id[32];

		k = (int)i + 20 - AGD_HIST_RATINGS + 1;
		snprintf(id, sizeof(id), "r%d", k);
		assert_string_equal(out->r[i].id, id);
		assert_int_equal(out->r[i].score, 1 + k % 5);
		assert_int_equal(out->r[i].ts_ms, 1000 + k);
		assert_int_equal(out->r[i].applied_ms, 2000 + k);
		assert_true(out->r[i].rate_after == 101 + k);
	}
	/* A batch larger than the ring: its newest, with what it skipped counted. */
	{
		struct agd_hist_rating_in in[20];

		for (k = 0; k < 20; k++)
			in[k] = rating(30 + k, 5);
		assert_int_equal(agd_hist_ratings_encode(buf, len, in + 2, 18, 2, &next, &nlen), 0);
		assert_int_equal(agd_hist_ratings_decode(next, nlen, out), 0);
		assert_int_equal(out->total, 40);
		assert_int_equal(out->n, AGD_HIST_RATINGS);
		assert_string_equal(out->r[0].id, "r34");
		assert_string_equal(out->r[AGD_HIST_RATINGS - 1].id, "r49");
		free(next);
	}
	/* Three more: 13 old kept, then the 3. */
	{
		struct agd_hist_rating_in in[3] = { rating(60, 1), rating(61, 2), rating(62, 3) };

		assert_int_equal(agd_hist_ratings_encode(buf, len, in, 3, 0, &next, &nlen), 0);
		assert_int_equal(agd_hist_ratings_decode(next, nlen, out), 0);
		assert_string_equal(out->r[0].id, "r8");
		assert_string_equal(out->r[12].id, "r20");
		assert_string_equal(out->r[13].id, "r60");
		assert_string_equal(out->r[15].id, "r62");
		free(next);
	}
	free(buf);
	free(out);
}

static void strings_empty_and_clipped(void **state)
{
	struct agd_hist_ratings *out = malloc(sizeof(*out));
	char longid[400];
	struct agd_hist_rating_in in[2] = {
		{ .id = NULL, .user = "", .score = 3, .ts_ms = 1 },
		{ .id = longid, .user = "x", .score = 5, .ts_ms = 2 },
	};
	size_t len;
	void *buf;

	memset(longid, 'a', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = 0;
	assert_int_equal(agd_hist_ratings_encode(NULL, 0, in, 2, 0, &buf, &len), 0);
	assert_int_equal(agd_hist_ratings_decode(buf, len, out), 0);
	assert_string_equal(out->r[0].id, "");
	assert_string_equal(out->r[0].user, "");
	assert_int_equal(strlen(out->r[1].id), AGD_HIST_STR_MAX);
	assert_string_equal(out->r[1].user, "x");
	free(buf);
	free(out);
}

/* Cut short, longer, another version, more entries than the ring: refused
 * as damaged, never read past its end. */
static void malformed_values_refused(void **state)
{
	struct agd_hist_ratings *out = malloc(sizeof(*out));
	struct agd_hist_changes *c = malloc(sizeof(*c));
	struct agd_hist_rating_in in[2] = { rating(1, 5), rating(2, 4) };
	size_t len, nlen, i;
	void *buf, *next;
	__u8 *b, *copy;
	__u32 v;

	assert_int_equal(agd_hist_ratings_encode(NULL, 0, in, 2, 0, &buf, &len), 0);
	assert_int_equal(len, 16 + 2 * (40 + 4));
	b = buf;
	for (i = 1; i < len; i++) { /* every shorter prefix */
		copy = malloc(i);
		memcpy(copy, b, i);
		assert_int_equal(agd_hist_ratings_decode(copy, i, out), -EUCLEAN);
		assert_int_equal(agd_hist_ratings_encode(copy, i, in, 1, 0, &next, &nlen), -EUCLEAN);
		free(copy);
	}
	copy = malloc(len + 1);
	memcpy(copy, b, len);
	copy[len] = 0;
	assert_int_equal(agd_hist_ratings_decode(copy, len + 1, out), -EUCLEAN);
	memcpy(copy, b, len);
	v = AGD_HIST_VERSION + 1;
	memcpy(copy, &v, 4);
	assert_int_equal(agd_hist_ratings_decode(copy, len, out), -EUCLEAN);
	memcpy(copy, b, len);
	v = AGD_HIST_RATINGS + 1;
	memcpy(copy + 4, &v, 4);
	assert_int_equal(agd_hist_ratings_decode(copy, len, out), -EUCLEAN);
	memcpy(copy, b, len);
	copy[16 + 33] = 200; /* an id longer than the value */
	assert_int_equal(agd_hist_ratings_decode(copy, len, out), -EUCLEAN);
	memcpy(copy, b, len);
	memset(copy + 8, 0, 8); /* total below n */
	assert_int_equal(agd_hist_ratings_decode(copy, len, out), -EUCLEAN);
	assert_int_equal(agd_hist_changes_decode(copy, 10, c), -EUCLEAN);
	free(copy);
	free(buf);
	free(out);
	free(c);
}

static void changes_ring_and_pin(void **state)
{
	struct agd_hist_changes *c = malloc(sizeof(*c));
	void *buf = NULL, *next;
	size_t len = 0, nlen;
	char subj[32], big[AGD_HIST_DETAIL_MAX + 10];
	int k;

	for (k = 1; k <= 20; k++) {
		int pin = k == 3 ? 1 : k == 15 ? 0 : k == 17 ? 1 : -1;

		snprintf(subj, sizeof(subj), "s%d", k);
		assert_int_equal(agd_hist_changes_encode(buf, len, (__u64)k, subj, "agent.update",
							"{\"before\":null,\"after\":null}", pin,
							&next, &nlen),
				 0);
		free(buf);
		buf = next;
		len = nlen;
		assert_int_equal(agd_hist_changes_decode(buf, len, c), 0);
		if (k == 3 || k == 14) /* pinned by s3, kept by changes that leave it */
			assert_true(c->pin_ms == 3 && !strcmp(c->pin_subject, "s3"));
		if (k == 15 || k == 16) /* unpinned */
			assert_true(c->pin_ms == -1 && !c->pin_subject[0]);
	}
	assert_int_equal(c->total, 20);
	assert_int_equal(c->n, AGD_HIST_CHANGES);
	assert_string_equal(c->c[0].subject, "s5");
	assert_string_equal(c->c[AGD_HIST_CHANGES - 1].subject, "s20");
	assert_string_equal(c->c[0].action, "agent.update");
	assert_int_equal(c->pin_ms, 17);
	assert_string_equal(c->pin_subject, "s17");
	/* A detail too large: a marker instead, still JSON. */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	assert_int_equal(agd_hist_changes_encode(buf, len, 21, "s21", "agent.update", big, -1,
						&next, &nlen),
			 0);
	assert_int_equal(agd_hist_changes_decode(next, nlen, c), 0);
	assert_non_null(strstr(c->c[AGD_HIST_CHANGES - 1].detail, "\"truncated\":true"));
	assert_int_equal(c->pin_ms, 17);
	free(next);
	free(buf);
	free(c);
}

static void change_detail_is_the_diff(void **state)
{
	json_t *b = json_pack("{s:f,s:i,s:b}", "rate", 100.0, "burst", 100, "pinned", 0);
	json_t *a = json_pack("{s:f,s:i,s:b}", "rate", 40.0, "burst", 100, "pinned", 1);
	json_t *t = json_pack("{s:f,s:I}", "tokens", 10.0, "drained", (json_int_t)5);
	json_t *t0 = json_pack("{s:f}", "tokens", 50.0);
	char *d = agd_explain_change_detail(b, a);

	assert_string_equal(d, "{\"before\":{\"rate\":100.0,\"pinned\":false},"
			       "\"after\":{\"rate\":40.0,\"pinned\":true}}");
	free(d);
	d = agd_explain_change_detail(NULL, a);
	assert_non_null(strstr(d, "\"before\":null"));
	assert_non_null(strstr(d, "\"burst\":100"));
	free(d);
	d = agd_explain_change_detail(t0, t);
	assert_string_equal(d, "{\"before\":{\"tokens\":50.0},"
			       "\"after\":{\"tokens\":10.0,\"drained\":5}}");
	free(d);
	json_decref(a);
	json_decref(b);
	json_decref(t);
	json_decref(t0);
}

/* ---- stores ------------------------------------------------------------------------ */

static char tmpdir[64];

static int rm_tree(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd);
}

/* An older agentgated's store: its six databases and version 1, nothing else. */
static void write_old_store(const char *dir)
{
	static const char *const dbs[] = { "agents", "rules", "dedup", "dedup_at", "audit", "meta" };
	__u32 ver = AGD_STORE_VERSION;
	MDB_val k = { 7, "version" }, v = { 4, &ver };
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	size_t i;

	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
	assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	for (i = 0; i < 6; i++)
		assert_int_equal(mdb_dbi_open(txn, dbs[i], MDB_CREATE, &dbi), 0);
	assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0); /* meta, the last */
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

static void old_store_opens(void **state)
{
	struct agd_hist_ratings *r = malloc(sizeof(*r));
	struct agd_hist_changes *c = malloc(sizeof(*c));
	struct agd_hist_rating_in in = rating(1, 5);
	struct agd_agent_rec rec = { .version = AGD_STORE_VERSION, .rate = 7, .last_ms = -1 };
	struct agd_explain_opts o = { .answered_by = "state store", .voices = -1 };
	struct agd_store st;
	struct agd_policy def;
	MDB_txn *txn;
	json_t *j;
	struct agd_err err;
	char dir[128];

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_hist.XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	/* Not a state directory: no data.mdb; a missing one. */
	assert_int_equal(agd_store_open_ro(tmpdir, &st, &txn, &err), -ENOENT);
	assert_non_null(strstr(err.msg, tmpdir));
	assert_non_null(strstr(err.msg, "data.mdb"));
	snprintf(dir, sizeof(dir), "%s/none", tmpdir);
	assert_int_equal(agd_store_open_ro(dir, &st, &txn, &err), -ENOENT);
	assert_non_null(strstr(err.msg, dir));
	/* An older store: read-only, no history, nothing created there. */
	snprintf(dir, sizeof(dir), "%s/old", tmpdir);
	assert_int_equal(mkdir(dir, 0700), 0);
	write_old_store(dir);
	assert_int_equal(agd_store_open_ro(dir, &st, &txn, &err), 0);
	assert_false(st.hist);
	assert_int_equal(agd_store_hist_get(&st, txn, "a", r, c), 0);
	assert_int_equal(r->n + c->n, 0);
	mdb_txn_abort(txn);
	agd_store_close(&st);
	/* Opened for writing: the databases are created, the version stays. */
	assert_int_equal(agd_store_open(dir, 1 << 20, &st, &err), 0);
	assert_true(st.hist);
	assert_int_equal(agd_store_txn_begin(&st, &txn), 0);
	assert_int_equal(agd_store_agent_put(&st, txn, "a", &rec), 0);
	agd_policy_defaults(&def);
	def.r0 = 33;
	assert_int_equal(agd_store_defaults_put(&st, txn, &def), 0);
	assert_int_equal(agd_store_hist_add_ratings(&st, txn, "a", false, &in, 1, 0), 0);
	assert_int_equal(agd_store_hist_add_change(&st, txn, "a", false, 5, "alice", "agent.update",
						  "{\"before\":{\"pinned\":false},\"after\":{"
						  "\"pinned\":true}}", 1),
			 0);
	assert_int_equal(agd_store_commit(&st, txn), 0);
	agd_store_close(&st);
	/* And read back read-only: the same object the daemon builds. */
	assert_int_equal(agd_store_open_ro(dir, &st, &txn, &err), 0);
	assert_true(st.hist);
	assert_int_equal(agd_explain_build(&st, txn, "a", &o, &j, &err), 0);
	assert_int_equal(json_array_size(json_object_get(j, "ratings")), 1);
	assert_string_equal(json_string_value(json_object_get(
				    json_array_get(json_object_get(j, "ratings"), 0), "id")),
			    "r1");
	assert_true(json_real_value(json_object_get(json_object_get(j, "policy"), "r0")) == 33);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "policy"),
							      "defaults_from")),
			    "state store");
	json_decref(j);
	assert_int_equal(agd_explain_build(&st, txn, "b", &o, &j, &err), -ENOENT);
	assert_string_equal(err.msg, "unknown agent 'b'");
	/* Deleted with its agent. */
	mdb_txn_abort(txn);
	agd_store_close(&st);
	assert_int_equal(agd_store_open(dir, 1 << 20, &st, &err), 0);
	assert_int_equal(agd_store_txn_begin(&st, &txn), 0);
	assert_int_equal(agd_store_hist_del(&st, txn, "a"), 0);
	assert_int_equal(agd_store_hist_get(&st, txn, "a", r, c), 0);
	assert_int_equal(r->n + c->n, 0);
	assert_int_equal(c->pin_ms, -1);
	mdb_txn_abort(txn);
	agd_store_close(&st);
	/* The marker without data.mdb: a missing store, not a fresh directory. */
	snprintf(dir, sizeof(dir), "%s/old/" AGD_STORE_FILE, tmpdir);
	assert_int_equal(unlink(dir), 0);
	snprintf(dir, sizeof(dir), "%s/old", tmpdir);
	assert_int_equal(agd_store_open_ro(dir, &st, &txn, &err), -EUCLEAN);
	assert_non_null(strstr(err.msg, "missing"));
	rm_tree();
	free(r);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(rating_layout_bytes),
		cmocka_unit_test(change_layout_bytes),
		cmocka_unit_test(ratings_ring_keeps_the_newest),
		cmocka_unit_test(strings_empty_and_clipped),
		cmocka_unit_test(malformed_values_refused),
		cmocka_unit_test(changes_ring_and_pin),
		cmocka_unit_test(change_detail_is_the_diff),
		cmocka_unit_test(old_store_opens),
	};

	return cmocka_run_group_tests_name("hist", tests, NULL, NULL);
}
