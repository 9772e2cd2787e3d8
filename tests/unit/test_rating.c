// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Rating bodies: single object, array, NDJSON; whole-batch validation. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/rating.h"

static int parse(const char *body, enum agd_rating_format f, struct agd_rating_batch *b)
{
	return agd_ratings_parse(body, strlen(body), f, b);
}

static void single_object_all_fields(void **state)
{
	struct agd_rating_batch b;

	assert_int_equal(parse("{\"id\":\"r-1\",\"agent\":\"planner-7\",\"user\":\"u42\","
			       "\"score\":4,\"ts\":1763700000000,\"comment\":\"gut \\u00e9\"}",
			       AGD_RATING_JSON, &b),
			 0);
	assert_int_equal(b.n, 1);
	assert_string_equal(b.items[0].id, "r-1");
	assert_string_equal(b.items[0].agent, "planner-7");
	assert_string_equal(b.items[0].user, "u42");
	assert_int_equal(b.items[0].score, 4);
	assert_int_equal(b.items[0].ts_ms, 1763700000000LL);
	agd_rating_batch_free(&b);
}

static void only_agent_and_score_required(void **state)
{
	struct agd_rating_batch b;

	assert_int_equal(parse("{\"agent\":\"a\",\"score\":1}", AGD_RATING_JSON, &b), 0);
	assert_int_equal(b.n, 1);
	assert_string_equal(b.items[0].id, "");
	assert_string_equal(b.items[0].user, "");
	assert_int_equal(b.items[0].ts_ms, -1);
	agd_rating_batch_free(&b);
}

static void array_and_ndjson(void **state)
{
	struct agd_rating_batch b;

	assert_int_equal(parse("[{\"agent\":\"a\",\"score\":5},{\"agent\":\"b\",\"score\":3}]",
			       AGD_RATING_JSON, &b),
			 0);
	assert_int_equal(b.n, 2);
	assert_string_equal(b.items[1].agent, "b");
	agd_rating_batch_free(&b);
	/* NDJSON: blank lines and CRLF endings are fine; no trailing newline too. */
	assert_int_equal(parse("{\"agent\":\"a\",\"score\":5}\r\n\n  \n{\"agent\":\"c\",\"score\":2}",
			       AGD_RATING_NDJSON, &b),
			 0);
	assert_int_equal(b.n, 2);
	assert_string_equal(b.items[1].agent, "c");
	assert_int_equal(b.items[1].score, 2);
	agd_rating_batch_free(&b);
}

/* The batch is refused whole, and every bad item is named. */
static void batch_all_or_nothing(void **state)
{
	struct agd_rating_batch b;

	assert_int_equal(parse("[{\"agent\":\"ok\",\"score\":5},"
			       "{\"agent\":\"x\",\"score\":9},"
			       "{\"agent\":\"ok2\",\"score\":4},"
			       "{\"score\":2},"
			       "{\"agent\":\"bad name\",\"score\":2}]",
			       AGD_RATING_JSON, &b),
			 -EINVAL);
	assert_int_equal(b.n, 0);
	assert_int_equal(b.n_errors, 3);
	assert_int_equal(b.errors[0].index, 1);
	assert_string_equal(b.errors[0].field, "score");
	assert_int_equal(b.errors[1].index, 3);
	assert_string_equal(b.errors[1].field, "agent");
	assert_non_null(strstr(b.errors[1].reason, "required"));
	assert_int_equal(b.errors[2].index, 4);
	assert_string_equal(b.errors[2].field, "agent");
	agd_rating_batch_free(&b);
}

static void expect_field_error(const char *body, const char *field, const char *mentions)
{
	struct agd_rating_batch b;

	assert_int_equal(parse(body, AGD_RATING_JSON, &b), -EINVAL);
	assert_int_equal(b.n_errors, 1);
	assert_string_equal(b.errors[0].field, field);
	if (!strstr(b.errors[0].reason, mentions))
		fail_msg("%s: reason '%s' does not mention '%s'", body, b.errors[0].reason,
			 mentions);
	agd_rating_batch_free(&b);
}

static void each_field_checked(void **state)
{
	expect_field_error("{\"agent\":\"a\",\"score\":0}", "score", "1 to 5");
	expect_field_error("{\"agent\":\"a\",\"score\":6}", "score", "1 to 5");
	expect_field_error("{\"agent\":\"a\",\"score\":4.0}", "score", "integer");
	expect_field_error("{\"agent\":\"a\",\"score\":\"4\"}", "score", "integer");
	expect_field_error("{\"agent\":\"a\",\"score\":true}", "score", "integer");
	expect_field_error("{\"agent\":\"a\"}", "score", "required");
	expect_field_error("{\"agent\":5,\"score\":3}", "agent", "characters");
	expect_field_error("{\"agent\":\"\",\"score\":3}", "agent", "characters");
	expect_field_error("{\"agent\":\"a/b\",\"score\":3}", "agent", "invalid character 0x2f");
	expect_field_error("{\"agent\":\"..\",\"score\":3}", "agent", "reserved");
	expect_field_error("{\"agent\":\"a\",\"score\":3,\"ts\":-1}", "ts", "milliseconds");
	expect_field_error("{\"agent\":\"a\",\"score\":3,\"ts\":1.5}", "ts", "milliseconds");
	expect_field_error("{\"agent\":\"a\",\"score\":3,\"ts\":\"now\"}", "ts", "milliseconds");
	expect_field_error("{\"agent\":\"a\",\"score\":3,\"id\":\"\"}", "id", "empty");
	expect_field_error("{\"agent\":\"a\",\"score\":3,\"id\":7}", "id", "string");
	expect_field_error("{\"agent\":\"a\",\"score\":3,\"id\":\"a\\nb\"}", "id", "printable");
	expect_field_error("{\"agent\":\"a\",\"score\":3,\"user\":\"\\u00e9\"}", "user",
			   "printable");
	/* A NUL inside a string is refused by the JSON parser itself. */
	expect_field_error("{\"agent\":\"a\",\"score\":3,\"comment\":\"x\\u0000y\"}", "",
			   "invalid JSON");
	expect_field_error("{\"agent\":\"a\",\"score\":3,\"sc0re\":3}", "", "unknown field 'sc0re'");
	expect_field_error("[1]", "", "object");
	expect_field_error("[]", "", "no ratings");
	expect_field_error("{\"agent\":\"a\",\"score\":3,\"score\":4}", "", "invalid JSON");
	expect_field_error("{\"agent\":\"a\",", "", "invalid JSON");
}

static void length_limits(void **state)
{
	char body[4096], id[AGD_RATING_ID_MAX + 2];
	struct agd_rating_batch b;

	memset(id, 'i', sizeof(id) - 1);
	id[AGD_RATING_ID_MAX] = '\0'; /* exactly the limit */
	snprintf(body, sizeof(body), "{\"agent\":\"a\",\"score\":3,\"id\":\"%s\"}", id);
	assert_int_equal(parse(body, AGD_RATING_JSON, &b), 0);
	assert_int_equal(strlen(b.items[0].id), AGD_RATING_ID_MAX);
	agd_rating_batch_free(&b);
	id[AGD_RATING_ID_MAX] = 'i', id[AGD_RATING_ID_MAX + 1] = '\0'; /* one over */
	snprintf(body, sizeof(body), "{\"agent\":\"a\",\"score\":3,\"id\":\"%s\"}", id);
	expect_field_error(body, "id", "longer than 128");
}

static void ndjson_lines_numbered(void **state)
{
	struct agd_rating_batch b;

	/* Index counts non-blank lines: what a client's log line number is. */
	assert_int_equal(parse("{\"agent\":\"a\",\"score\":5}\n\nnot json\n{\"agent\":\"b\"}\n",
			       AGD_RATING_NDJSON, &b),
			 -EINVAL);
	assert_int_equal(b.n, 0);
	assert_int_equal(b.n_errors, 2);
	assert_int_equal(b.errors[0].index, 1);
	assert_non_null(strstr(b.errors[0].reason, "invalid JSON"));
	assert_int_equal(b.errors[1].index, 2);
	assert_string_equal(b.errors[1].field, "score");
	agd_rating_batch_free(&b);
	assert_int_equal(parse("\n \n", AGD_RATING_NDJSON, &b), -EINVAL);
	assert_non_null(strstr(b.errors[0].reason, "no ratings"));
	agd_rating_batch_free(&b);
}

static void errors_counted_beyond_the_detailed_ones(void **state)
{
	size_t n = 250, i, len = 0;
	char *body = malloc(n * 32);
	struct agd_rating_batch b;

	assert_non_null(body);
	for (i = 0; i < n; i++)
		len += (size_t)sprintf(body + len, "{\"agent\":\"a\",\"score\":7}\n");
	assert_int_equal(agd_ratings_parse(body, len, AGD_RATING_NDJSON, &b), -EINVAL);
	assert_int_equal(b.n_errors, n);
	assert_int_equal(b.errors[99].index, 99);
	agd_rating_batch_free(&b);
	free(body);
}

/* The plain-shape parser takes exactly the lines it is meant for, and what it
 * takes is what the full parser gives; the rest falls through with the full
 * parser's result. */
static void plain_shape_and_full_parser_agree(void **state)
{
	static const struct {
		const char *line;
		bool fast; /* the plain-shape parser takes it */
		int rc;    /* agd_rating_parse_line */
		size_t nul; /* 1: a NUL byte follows, part of the line */
	} cases[] = {
		{ "{\"agent\":\"a1\",\"score\":5}", true, 0 },
		{ " {\"id\":\"r-1\", \"agent\":\"a1\",\"score\":3}\r", true, 0 },
		{ "{\"agentId\":\"a\",\"rating\":1,\"userId\":\"u\",\"timestamp\":0}", true, 0 },
		{ "{\"agent\":\"a\",\"score\":2,\"ts\":\"2026-12-06T20:00:00.5+01:00\"}", true, 0 },
		{ "{\"agent\":\"a\",\"score\":2,\"ts\":253402300799999,\"comment\":\"\"}", true, 0 },
		{ "{\"agent\":\"a\",\"score\":2,\"user\":\"\"}", true, 0 },
		/* valid, but not the plain shape: the full parser takes them */
		{ "{\"agent\":\"a\",\"score\":2,\"comment\":\"caf\\u00e9\"}", false, 0 },
		{ "{\"agent\":\"a\",\"score\":2,\"comment\":\"caf\xc3\xa9\"}", false, 0 },
		{ "{\"agent\":\"a\",\"score\":2,\"comment\":\"\x7f\"}", false, 0 },
		{ "{\"agent\":\"\\u0061\",\"score\":2}", false, 0 },
		/* refused, by the full parser's words */
		{ "{\"agent\":\"a\",\"score\":05}", false, -EINVAL },
		{ "{\"agent\":\"a\",\"score\":-1}", false, -EINVAL },
		{ "{\"agent\":\"a\",\"score\":4.0}", false, -EINVAL },
		{ "{\"agent\":\"a\",\"score\":4e0}", false, -EINVAL },
		{ "{\"agent\":\"a\",\"score\":4,\"score\":4}", false, -EINVAL },
		{ "{\"agent\":\"a\",\"agentId\":\"a\",\"score\":4}", false, -EINVAL },
		{ "{\"agent\":\"a\",\"score\":4,\"ts\":253402300800000}", false, -EINVAL },
		{ "{\"agent\":\"a\",\"score\":4,\"ts\":12345678901234567}", false, -EINVAL },
		{ "{\"agent\":\"a\",\"score\":4,\"id\":\"\"}", false, -EINVAL },
		{ "{\"agent\":\"_other\",\"score\":4}", false, -EINVAL },
		{ "{\"agent\":\"..\",\"score\":4}", false, -EINVAL },
		{ "{\"agent\":\"a b\",\"score\":4}", false, -EINVAL },
		{ "{\"agent\":\"a\",\"score\":4,\"extra\":1}", false, -EINVAL },
		{ "{\"agent\":\"a\",\"score\":4}}", false, -EINVAL },
		{ "{\"agent\":\"a\",\"score\":4,}", false, -EINVAL },
		{ "{\"agent\":\"a\",\"score\":4", false, -EINVAL },
		{ "{\"agent\":\"a\",\"score\":4}", false, -EINVAL, 1 },
		{ "{\"agent\":\"a\",\"score\":null}", false, -EINVAL },
		{ "{}", false, -EINVAL },
		{ "{\"agent\":\"a\"}", false, -EINVAL },
		{ "{\"score\":3}", false, -EINVAL },
		{ "{\"agent\":5,\"score\":3}", false, -EINVAL },
		{ "{\"agent\":\"a\",\"score\":\"3\"}", false, -EINVAL },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = strlen(cases[i].line) + cases[i].nul;
		struct agd_rating fast, line, full;
		struct agd_rating_error e1, e2;
		int took, rc, rc_full;

		memset(&line, 0xa5, sizeof(line));
		took = agd_rating_parse_fast(cases[i].line, len, &fast);
		rc = agd_rating_parse_line(cases[i].line, len, &line, &e1);
		rc_full = agd_rating_parse_line_full(cases[i].line, len, &full, &e2);
		if (took != cases[i].fast || rc != cases[i].rc || rc_full != rc)
			fail_msg("case %zu %s: plain %d (want %d), line %d, full %d (want %d)", i,
				 cases[i].line, took, cases[i].fast, rc, rc_full, cases[i].rc);
		if (took)
			assert_memory_equal(&fast, &full, sizeof(fast));
		if (!rc)
			assert_memory_equal(&line, &full, sizeof(line));
		else
			assert_string_equal(e1.reason, e2.reason);
	}
}

/* A JSON body: an array of plain objects is read without jansson, and a
 * body that is not plain throughout gives the full parser's answer. */
static void plain_bodies_and_full_parser_agree(void **state)
{
	static const char *const bodies[] = {
		"[{\"agent\":\"a\",\"score\":5}, {\"agent\":\"{b\",\"score\":1}]",
		" [ {\"agent\":\"a\",\"score\":5} ] ",
		"{\"agent\":\"a\",\"score\":5}",
		"[{\"agent\":\"a\",\"score\":5},{\"agent\":\"b\",\"score\":9}]",
		"[{\"agent\":\"a\",\"score\":5},]",
		"[{\"agent\":\"a\",\"score\":5}] x",
		"[]",
		"[{\"agent\":\"a\",\"score\":5},{\"agent\":\"\\u0062\",\"score\":1}]",
	};
	size_t i, j;

	for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		struct agd_rating_batch a, b;
		int ra = agd_ratings_parse(bodies[i], strlen(bodies[i]), AGD_RATING_JSON, &a);
		int rb = agd_ratings_parse_full(bodies[i], strlen(bodies[i]), AGD_RATING_JSON, &b);

		assert_int_equal(ra, rb);
		assert_int_equal(a.n, b.n);
		assert_int_equal(a.n_errors, b.n_errors);
		if (a.n)
			assert_memory_equal(a.items, b.items, a.n * sizeof(*a.items));
		for (j = 0; j < a.n_errors; j++) {
			assert_int_equal(a.errors[j].index, b.errors[j].index);
			assert_string_equal(a.errors[j].reason, b.errors[j].reason);
		}
		agd_rating_batch_free(&a);
		agd_rating_batch_free(&b);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(single_object_all_fields),
		cmocka_unit_test(only_agent_and_score_required),
		cmocka_unit_test(array_and_ndjson),
		cmocka_unit_test(batch_all_or_nothing),
		cmocka_unit_test(each_field_checked),
		cmocka_unit_test(length_limits),
		cmocka_unit_test(ndjson_lines_numbered),
		cmocka_unit_test(errors_counted_beyond_the_detailed_ones),
		cmocka_unit_test(plain_shape_and_full_parser_agree),
		cmocka_unit_test(plain_bodies_and_full_parser_agree),
	};

	return cmocka_run_group_tests_name("rating", tests, NULL, NULL);
}
