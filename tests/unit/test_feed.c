// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Rule feeds (core/feed.h): both formats parsed whole (a bad entry refuses
 * the feed, naming its line or index), the limit on distinct prefixes, the
 * set and its difference, the digest, the compact form the fleet's log
 * carries and the record the store keeps, damaged copies of which are
 * refused without reading past them.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "core/feed.h"

/* The stored record's head as feed.c lays it out (on-disk ABI, host order). */
struct rec_head {
	uint32_t version;
	uint32_t n;
	uint64_t interval_ms, applied_ms, digest;
	uint16_t source_len, etag_len, lastmod_len, created_len;
};
_Static_assert(sizeof(struct rec_head) == 40, "the feed record head is 40 bytes");

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static int parse(const char *text, size_t max, struct agd_feed_set *s, struct agd_err *e)
{
	return agd_feed_parse(text, strlen(text), max, s, e);
}

static struct ag_rule rule(const char *text)
{
	struct ag_rule r;

	if (ag_prefix_parse(text, &r))
		fail_msg("test prefix '%s': %s", text, ag_errmsg());
	return r;
}

/* s holds exactly want, in this order (formatted as ag_prefix_format does). */
static void expect_set(const struct agd_feed_set *s, const char *const *want, size_t n)
{
	char text[AG_PREFIX_STRLEN];
	size_t i;

	for (i = 0; i < s->n && i < n; i++) {
		ag_prefix_format(&s->v[i], text, sizeof(text));
		if (strcmp(text, want[i]))
			fail_msg("prefix %zu is %s, expected %s", i, text, want[i]);
		if (s->v[i].port || s->v[i].slot)
			fail_msg("prefix %zu (%s) has port %u slot %u", i, text, s->v[i].port,
				 s->v[i].slot);
	}
	if (s->n != n)
		fail_msg("%zu prefixes, expected %zu", s->n, n);
}

static bool same_set(const struct agd_feed_set *a, const struct agd_feed_set *b)
{
	size_t i;

	if (a->n != b->n)
		return false;
	for (i = 0; i < a->n; i++)
		if (agd_feed_rule_cmp(&a->v[i], &b->v[i]))
			return false;
	return true;
}

/* The refusal: code, the message naming the place, and nothing kept. */
static void expect_refused(const char *text, size_t len, size_t max, int code, const char *msg)
{
	struct agd_feed_set s = { 0 };
	struct agd_err e = { 0 };

	/* Something in the set first: a refused feed empties it. */
	assert_int_equal(agd_feed_parse("192.0.2.0/24", 12, 0, &s, NULL), 0);
	assert_int_equal(s.n, 1);
	assert_int_equal(agd_feed_parse(text, len, max, &s, &e), code);
	assert_int_equal(e.code, code);
	if (strcmp(e.msg, msg))
		fail_msg("message \"%s\", expected \"%s\"", e.msg, msg);
	assert_int_equal(s.n, 0);
	assert_null(s.v);
	agd_feed_set_free(&s);
}

static void refused(const char *text, size_t max, int code, const char *msg)
{
	expect_refused(text, strlen(text), max, code, msg);
}

/* ---- parsing ------------------------------------------------------------ */

/* The shape of Google's lists (goog.json, googlebot.json). */
static void json_google_style(void **state)
{
	static const char *const want[] = { "8.8.4.0/24", "34.100.182.96/28", "66.249.64.0/27",
					    "2001:4860:4801:10::/64", "2001:4860:4801:12::/64" };
	struct agd_feed_set s = { 0 };
	struct agd_err e = { 0 };

	(void)state;
	assert_int_equal(parse("{\n"
			       "  \"creationTime\": \"2025-11-20T15:46:12.000000\",\n"
			       "  \"prefixes\": [\n"
			       "    {\n      \"ipv6Prefix\": \"2001:4860:4801:12::/64\"\n    },\n"
			       "    {\n      \"ipv4Prefix\": \"66.249.64.0/27\"\n    },\n"
			       "    {\n      \"ipv6Prefix\": \"2001:4860:4801:10::/64\"\n    },\n"
			       "    {\n      \"ipv4Prefix\": \"8.8.4.0/24\"\n    },\n"
			       "    {\n      \"ipv4Prefix\": \"34.100.182.96/28\"\n    }\n"
			       "  ]\n}\n",
			       0, &s, &e),
			 0);
	/* Sorted: IPv4 before IPv6, then by address. */
	expect_set(&s, want, ARRAY_LEN(want));
	assert_string_equal(s.created, "2025-11-20T15:46:12.000000");
	agd_feed_set_free(&s);
}

/* OpenAI's lists (gptbot.json): a BOM, CRLF, other keys beside the prefix,
 * a duplicate entry. */
static void json_openai_style(void **state)
{
	static const char *const want[] = { "20.171.206.0/24", "52.230.152.0/24",
					    "2603:1030:7::/48" };
	static const char text[] =
		"\xef\xbb\xbf{\"creationTime\":\"2025-06-05T00:00:00Z\",\r\n"
		"\"prefixes\":[{\"ipv4Prefix\":\"52.230.152.0/24\",\"service\":\"gptbot\"},\r\n"
		"{\"ipv4Prefix\":\"20.171.206.0/24\"},{\"ipv6Prefix\":\"2603:1030:7::/48\"},\r\n"
		"{\"ipv4Prefix\":\"52.230.152.0/24\"}]}\r\n";
	struct agd_feed_set s = { 0 };

	(void)state;
	assert_int_equal(parse(text, 0, &s, NULL), 0);
	expect_set(&s, want, ARRAY_LEN(want));
	assert_string_equal(s.created, "2025-06-05T00:00:00Z");
	agd_feed_set_free(&s);

	/* creationTime is optional, and kept only as a string, cut to fit. */
	assert_int_equal(parse("  \n{\"prefixes\":[{\"ipv6Prefix\":\"::/0\"}]}", 0, &s, NULL), 0);
	expect_set(&s, (const char *const[]){ "::/0" }, 1);
	assert_string_equal(s.created, "");
	assert_int_equal(parse("{\"creationTime\":5,\"prefixes\":[]}", 0, &s, NULL), 0);
	assert_string_equal(s.created, "");
	assert_int_equal(parse("{\"creationTime\":\"0123456789012345678901234567890123456789"
			       "0123456789012345678901234567890123456789\",\"prefixes\":[]}",
			       0, &s, NULL),
			 0);
	assert_int_equal(strlen(s.created), AGD_FEED_TIME_MAX);
	agd_feed_set_free(&s);
}

/* The plain list: one prefix or bare address a line, '#' comments, blank
 * lines, CRLF, a BOM, blanks around; bare addresses are host prefixes and
 * duplicates collapse. */
static void text_list(void **state)
{
	static const char *const want[] = { "10.0.0.0/8", "192.0.2.7/32", "198.51.100.0/24",
					    "::/0", "2001:db8::/32", "2001:db8::1/128" };
	static const char text[] = "\xef\xbb\xbf# agents of example.net\r\n"
				   "\r\n"
				   "198.51.100.0/24\r\n"
				   "  10.0.0.0/8  # the lab\r\n"
				   "\t192.0.2.7\t\r\n"
				   "#192.0.2.8\r\n"
				   "2001:db8::/32\r\n"
				   "2001:db8::1\r\n"
				   "   \r\n"
				   "10.0.0.0/8\r\n"
				   "::/0\r\n"
				   "2001:db8::1/128"; /* no line end at the end */
	struct agd_feed_set s = { 0 };
	struct agd_err e = { 0 };

	(void)state;
	assert_int_equal(parse(text, 0, &s, &e), 0);
	expect_set(&s, want, ARRAY_LEN(want));
	assert_string_equal(s.created, "");
	agd_feed_set_free(&s);

	/* The same with LF only and no BOM. */
	assert_int_equal(parse("198.51.100.0/24\n10.0.0.0/8\n192.0.2.7/32\n2001:db8::/32\n"
			       "2001:db8:0::1\n::/0\n",
			       0, &s, &e),
			 0);
	expect_set(&s, want, ARRAY_LEN(want));
	agd_feed_set_free(&s);
}

static void empty_feeds(void **state)
{
	static const char *const empty[] = { "",
					     "\n\n\n",
					     "\xef\xbb\xbf",
					     "  \t\r\n\r\n",
					     "# nothing yet\n\n   # still nothing\n",
					     "{\"prefixes\": []}",
					     "\xef\xbb\xbf\r\n{\"creationTime\": \"x\", "
					     "\"prefixes\": []}" };
	struct agd_feed_set s = { 0 };
	struct agd_err e = { 0 };
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(empty); i++) {
		assert_int_equal(parse(empty[i], 0, &s, &e), 0);
		assert_int_equal(s.n, 0);
		agd_feed_set_free(&s);
	}
	assert_int_equal(parse(empty[0], 1, &s, &e), 0); /* limit 1: nothing to count */
	assert_int_equal(s.n, 0);
	agd_feed_set_free(&s);
}

static void text_refused_naming_the_line(void **state)
{
	(void)state;
	refused("# head\n\n10.0.0.0/8\n10.0.0.1/8\n", 0, -EINVAL,
		"line 4: invalid prefix '10.0.0.1/8': host bits set (did you mean 10.0.0.0/8?)");
	refused("10.0.0.0/8\r\n2001:db8::1/32\r\n", 0, -EINVAL,
		"line 2: invalid prefix '2001:db8::1/32': host bits set (did you mean "
		"2001:db8::/32?)");
	refused("10.0.0.0/8\n10.0.0.0/8 10.1.0.0/16\n", 0, -EINVAL, "line 2: not one prefix");
	refused("10.0.0.0/8\n\n\n10.0.0.0\t/8\n", 0, -EINVAL, "line 4: not one prefix");
	refused("a.example.com\n", 0, -EINVAL,
		"line 1: invalid prefix 'a.example.com': 'a.example.com' is not an IPv4 or IPv6 "
		"address");
	refused("10.0.0.0/33\n", 0, -EINVAL, "line 1: invalid prefix '10.0.0.0/33': length must "
					     "be 0 to 32");
	refused("::/129\n", 0, -EINVAL, "line 1: invalid prefix '::/129': length must be 0 to 128");
	refused("10.0.0.0/-8\n", 0, -EINVAL,
		"line 1: invalid prefix '10.0.0.0/-8': length must be 0 to 32");
	/* Longer than any prefix: refused before the parser sees it. */
	refused("10.0.0.0/8\n0000000000000000000000000000000000000000000000000000000000000000\n",
		0, -EINVAL, "line 2: not one prefix");
	/* A JSON list is not the JSON format: read as text. */
	refused("[\"10.0.0.0/8\"]\n", 0, -EINVAL,
		"line 1: invalid prefix '[\"10.0.0.0/8\"]': '[\"10.0.0.0' is not an IPv4 or IPv6 "
		"address");
}

static void json_refused_naming_the_index(void **state)
{
	(void)state;
	refused("{\"prefixes\":[{\"ipv4Prefix\":\"10.0.0.0/8\"},{\"ipv6Prefix\":\"2001:db8::/32\"},"
		"{\"ipv4Prefix\":\"10.0.0.1/8\"}]}",
		0, -EINVAL,
		"prefixes[2].ipv4Prefix: invalid prefix '10.0.0.1/8': host bits set (did you mean "
		"10.0.0.0/8?): 10.0.0.1/8");
	refused("{\"prefixes\":[{\"ipv6Prefix\":\"2001:db8::/32\"},"
		"{\"ipv4Prefix\":\"2001:db8::/32\"}]}",
		0, -EINVAL, "prefixes[1].ipv4Prefix: the other address family: 2001:db8::/32");
	refused("{\"prefixes\":[{\"ipv6Prefix\":\"10.0.0.0/8\"}]}", 0, -EINVAL,
		"prefixes[0].ipv6Prefix: the other address family: 10.0.0.0/8");
	refused("{\"prefixes\":[{\"ipv4Prefix\":\"10.0.0.0/8\"},{\"ipv6Prefix\":32}]}", 0, -EINVAL,
		"prefixes[1].ipv6Prefix: not a string");
	refused("{\"prefixes\":[{\"ipv4Prefix\":null}]}", 0, -EINVAL,
		"prefixes[0].ipv4Prefix: not a string");
	refused("{\"prefixes\":[\"10.0.0.0/8\"]}", 0, -EINVAL,
		"prefixes[0]: an object with ipv4Prefix or ipv6Prefix");
	refused("{\"prefixes\":[{\"ipv4Prefix\":\"10.0.0.0/8\"},{}]}", 0, -EINVAL,
		"prefixes[1]: an object with ipv4Prefix or ipv6Prefix");
	refused("{\"prefixes\":[{\"ipv4Prefix\":\"10.0.0.0/8\",\"ipv6Prefix\":\"::/0\"}]}", 0,
		-EINVAL, "prefixes[0]: an object with ipv4Prefix or ipv6Prefix");
	refused("{\"prefixes\":[{\"ipv4Prefix\":\"10.0.0.0/8 \"}]}", 0, -EINVAL,
		"prefixes[0].ipv4Prefix: invalid prefix '10.0.0.0/8 ': length must be 0 to 32: "
		"10.0.0.0/8 ");
	refused("{\"creationTime\":\"2025\"}", 0, -EINVAL, "\"prefixes\" is missing");
	refused("{\"prefixes\":{\"ipv4Prefix\":\"10.0.0.0/8\"}}", 0, -EINVAL,
		"\"prefixes\" is not an array");
	refused("{\"prefixes\":null}", 0, -EINVAL, "\"prefixes\" is not an array");
	refused("{\"prefixes\":[]} {}", 0, -EINVAL,
		"not JSON: end of file expected near '{' (line 1)");
	refused("{\"prefixes\":[], \"prefixes\":[]}", 0, -EINVAL,
		"not JSON: duplicate object key near '\"prefixes\"' (line 1)");
	refused("{\"prefixes\":[\n{\"ipv4Prefix\":\"10.0.0.0/8\"},\n]}", 0, -EINVAL,
		"not JSON: unexpected token near ']' (line 3)");
}

static void nul_byte_refused(void **state)
{
	static const char text[] = "10.0.0.0/8\n\0" "11.0.0.0/8\n";
	static const char json[] = "{\"prefixes\":[{\"ipv4Prefix\":\"10.0.0.0/8\0\"}]}";

	(void)state;
	expect_refused(text, sizeof(text) - 1, 0, -EINVAL, "the feed holds a NUL byte: not text");
	expect_refused(json, sizeof(json) - 1, 0, -EINVAL, "the feed holds a NUL byte: not text");
	expect_refused("\0", 1, 0, -EINVAL, "the feed holds a NUL byte: not text");
}

static void max_prefixes(void **state)
{
	static const char three[] = "10.0.0.0/8\n11.0.0.0/8\n2001:db8::/32\n";
	struct agd_feed_set s = { 0 };

	(void)state;
	assert_int_equal(parse(three, 3, &s, NULL), 0);
	assert_int_equal(s.n, 3);
	refused(three, 2, -E2BIG, "the feed has more than 2 prefixes");
	refused(three, 1, -E2BIG, "the feed has more than 1 prefixes");
	refused("{\"prefixes\":[{\"ipv4Prefix\":\"10.0.0.0/8\"},{\"ipv4Prefix\":\"11.0.0.0/8\"},"
		"{\"ipv6Prefix\":\"2001:db8::/32\"}]}",
		2, -E2BIG, "the feed has more than 2 prefixes");

	/* Duplicates count once, in either format. */
	assert_int_equal(parse("10.0.0.0/8\n10.0.0.0/8\n10.0.0.0/8\n10.0.0.0/8\n11.0.0.0/8\n",
			       2, &s, NULL),
			 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(parse("{\"prefixes\":[{\"ipv4Prefix\":\"10.0.0.0/8\"},"
			       "{\"ipv4Prefix\":\"10.0.0.0/8\"},{\"ipv4Prefix\":\"10.0.0.0/8\"},"
			       "{\"ipv6Prefix\":\"::/0\"}]}",
			       2, &s, NULL),
			 0);
	assert_int_equal(s.n, 2);
	/* A bare address and its /32 are one prefix. */
	assert_int_equal(parse("192.0.2.1\n192.0.2.1/32\n192.0.2.1\n10.0.0.0/8\n", 2, &s, NULL), 0);
	assert_int_equal(s.n, 2);
	refused("10.0.0.0/8\n10.0.0.0/8\n11.0.0.0/8\n11.0.0.0/8\n12.0.0.0/8\n", 2, -E2BIG,
		"the feed has more than 2 prefixes");
	agd_feed_set_free(&s);
}

/* Once max_prefixes distinct prefixes are in, one more copy of any of them
 * is no new prefix: not refused (it once was, with -E2BIG). */
static void max_prefixes_duplicate_after_the_limit(void **state)
{
	struct agd_feed_set s = { 0 };
	struct agd_err e = { 0 };

	(void)state;
	assert_int_equal(parse("10.0.0.0/8\n11.0.0.0/8\n10.0.0.0/8\n", 2, &s, &e), 0);
	assert_int_equal(s.n, 2);
	agd_feed_set_free(&s);
}

/* Blank lines before the first entry count: an error names its line from
 * the feed's first byte, in both formats (it once named line 1 here). */
static void line_numbers_count_leading_blank_lines(void **state)
{
	(void)state;
	refused("\n\n10.0.0.1/8\n", 0, -EINVAL,
		"line 3: invalid prefix '10.0.0.1/8': host bits set (did you mean 10.0.0.0/8?)");
	refused("\r\n\r\n{\"prefixes\":[,]}", 0, -EINVAL,
		"not JSON: unexpected token near ',' (line 3)");
}

/* ---- the set ------------------------------------------------------------- */

static void set_by_hand(void **state)
{
	static const char *const want[] = { "0.0.0.0/0", "10.0.0.0/8", "10.0.0.0/16",
					    "10.1.0.0/16", "::/0", "::/1" };
	struct agd_feed_set s = { 0 };
	struct ag_rule r;
	size_t i;

	(void)state;
	for (i = ARRAY_LEN(want); i-- > 0;) {
		r = rule(want[i]);
		r.port = 443; /* a set's prefixes have no port nor slot */
		r.slot = 7;
		assert_int_equal(agd_feed_set_add(&s, &r), 0);
		assert_int_equal(agd_feed_set_add(&s, &r), 0);
	}
	assert_int_equal(s.n, 2 * ARRAY_LEN(want));
	agd_feed_set_normalize(&s);
	expect_set(&s, want, ARRAY_LEN(want));
	for (i = 0; i < ARRAY_LEN(want); i++) {
		r = rule(want[i]);
		assert_true(agd_feed_set_has(&s, &r));
	}
	r = rule("10.0.0.0/9");
	assert_false(agd_feed_set_has(&s, &r));
	r = rule("::/2");
	assert_false(agd_feed_set_has(&s, &r));
	r = rule("255.255.255.255");
	assert_false(agd_feed_set_has(&s, &r));
	agd_feed_set_free(&s);
	assert_null(s.v);
	assert_int_equal(s.n, 0);
	r = rule("::/0");
	assert_false(agd_feed_set_has(&s, &r)); /* the empty set */
}

static void set_diff(void **state)
{
	static const char *const add_want[] = { "10.3.0.0/16", "2001:db8:1::/48" };
	static const char *const del_want[] = { "10.0.0.0/16", "192.0.2.1/32", "2001:db8::/32" };
	struct agd_feed_set old = { 0 }, new = { 0 }, add, del;

	(void)state;
	assert_int_equal(parse("10.0.0.0/16\n10.1.0.0/16\n10.2.0.0/16\n192.0.2.1\n2001:db8::/32\n"
			       "2001:db8::/48\n",
			       0, &old, NULL),
			 0);
	assert_int_equal(parse("10.1.0.0/16\n10.2.0.0/16\n10.3.0.0/16\n2001:db8::/48\n"
			       "2001:db8:1::/48\n",
			       0, &new, NULL),
			 0);
	assert_int_equal(agd_feed_diff(&old, &new, &add, &del), 0);
	expect_set(&add, add_want, ARRAY_LEN(add_want));
	expect_set(&del, del_want, ARRAY_LEN(del_want));
	agd_feed_set_free(&add);
	agd_feed_set_free(&del);

	/* Backwards: the same two, swapped. */
	assert_int_equal(agd_feed_diff(&new, &old, &add, &del), 0);
	expect_set(&add, del_want, ARRAY_LEN(del_want));
	expect_set(&del, add_want, ARRAY_LEN(add_want));
	agd_feed_set_free(&add);
	agd_feed_set_free(&del);

	/* Equal sets: nothing; from nothing: everything added. */
	assert_int_equal(agd_feed_diff(&old, &old, &add, &del), 0);
	assert_int_equal(add.n, 0);
	assert_int_equal(del.n, 0);
	agd_feed_set_free(&add);
	agd_feed_set_free(&del);
	agd_feed_set_free(&new);
	assert_int_equal(agd_feed_diff(&new, &old, &add, &del), 0);
	assert_true(same_set(&add, &old));
	assert_int_equal(del.n, 0);
	agd_feed_set_free(&add);
	agd_feed_set_free(&del);
	assert_int_equal(agd_feed_diff(&old, &new, &add, &del), 0);
	assert_int_equal(add.n, 0);
	assert_true(same_set(&del, &old));
	agd_feed_set_free(&add);
	agd_feed_set_free(&del);
	agd_feed_set_free(&old);
}

static void digest(void **state)
{
	struct agd_feed_set a = { 0 }, b = { 0 }, c = { 0 }, empty = { 0 };

	(void)state;
	/* One set in two formats and orders: one digest. */
	assert_int_equal(parse("2001:db8::/32\n10.0.0.0/8\n192.0.2.1\n10.0.0.0/8\n", 0, &a, NULL),
			 0);
	assert_int_equal(parse("{\"creationTime\":\"t\",\"prefixes\":["
			       "{\"ipv4Prefix\":\"192.0.2.1/32\"},{\"ipv4Prefix\":\"10.0.0.0/8\"},"
			       "{\"ipv6Prefix\":\"2001:db8::/32\"}]}",
			       0, &b, NULL),
			 0);
	assert_true(same_set(&a, &b));
	assert_true(agd_feed_digest(&a) == agd_feed_digest(&b));
	assert_true(agd_feed_digest(&a) == agd_feed_digest(&a)); /* stable */
	/* One length, one address bit, one prefix less or more: another digest. */
	assert_int_equal(parse("2001:db8::/33\n10.0.0.0/8\n192.0.2.1\n", 0, &c, NULL), 0);
	assert_true(agd_feed_digest(&a) != agd_feed_digest(&c));
	assert_int_equal(parse("2001:db8::/32\n11.0.0.0/8\n192.0.2.1\n", 0, &c, NULL), 0);
	assert_true(agd_feed_digest(&a) != agd_feed_digest(&c));
	assert_int_equal(parse("2001:db8::/32\n10.0.0.0/8\n", 0, &c, NULL), 0);
	assert_true(agd_feed_digest(&a) != agd_feed_digest(&c));
	assert_int_equal(parse("2001:db8::/32\n10.0.0.0/8\n192.0.2.1\n::/0\n", 0, &c, NULL), 0);
	assert_true(agd_feed_digest(&a) != agd_feed_digest(&c));
	/* The families apart: 10.0.0.0/8 is not ::/8 nor 0a00::/8. */
	assert_int_equal(parse("10.0.0.0/8\n", 0, &b, NULL), 0);
	assert_int_equal(parse("a00::/8\n", 0, &c, NULL), 0);
	assert_true(agd_feed_digest(&b) != agd_feed_digest(&c));
	/* The empty set: FNV-1a's offset basis, on every host. */
	assert_true(agd_feed_digest(&empty) == 1469598103934665603ULL);
	assert_true(agd_feed_digest(&a) != agd_feed_digest(&empty));
	agd_feed_set_free(&a);
	agd_feed_set_free(&b);
	agd_feed_set_free(&c);
}

/* ---- the compact form ---------------------------------------------------- */

static void encode_decode_round_trip(void **state)
{
	static const char *const all[] = { "0.0.0.0/0",       "10.0.0.0/7",      "10.0.0.0/8",
					   "10.128.0.0/9",    "128.0.0.0/1",     "192.0.2.6/31",
					   "192.0.2.7/32",    "::/0",            "2001:db8::/64",
					   "2001:db8::2/127", "2001:db8::3/128", "8000::/1" };
	/* Bytes per prefix: family, length, then (length + 7) / 8 address bytes. */
	static const size_t bytes[] = { 2, 3, 3, 4, 3, 6, 6, 2, 10, 18, 18, 3 };
	struct agd_feed_set s = { 0 }, back = { 0 };
	struct agd_err e = { 0 };
	size_t i, len, total = 0;
	uint8_t *buf;

	(void)state;
	for (i = 0; i < ARRAY_LEN(all); i++) {
		struct ag_rule r = rule(all[i]);

		assert_int_equal(agd_feed_set_add(&s, &r), 0);
		total += bytes[i];
	}
	agd_feed_set_normalize(&s);
	expect_set(&s, all, ARRAY_LEN(all)); /* listed in the set's order */

	assert_int_equal(agd_feed_encode(&s, 0, s.n, &buf, &len), 0);
	assert_int_equal(len, total);
	assert_int_equal(buf[0], 4);
	assert_int_equal(buf[1], 0);
	assert_int_equal(buf[len - 3], 6);
	assert_int_equal(buf[len - 2], 1);
	assert_int_equal(buf[len - 1], 0x80);
	assert_int_equal(agd_feed_decode(buf, len, &back, &e), 0);
	assert_true(same_set(&s, &back));
	expect_set(&back, all, ARRAY_LEN(all));
	free(buf);
	agd_feed_set_free(&back);

	/* In parts, as the fleet's log carries a large set: appended in turn. */
	for (i = 0; i < s.n; i += 5) {
		assert_int_equal(agd_feed_encode(&s, i, 5, &buf, &len), 0);
		assert_int_equal(agd_feed_decode(buf, len, &back, &e), 0);
		free(buf);
	}
	assert_true(same_set(&s, &back));
	agd_feed_set_free(&back);

	/* Ranges past the end: what there is, or nothing. */
	assert_int_equal(agd_feed_encode(&s, s.n - 1, 100, &buf, &len), 0);
	assert_int_equal(len, 3);
	free(buf);
	assert_int_equal(agd_feed_encode(&s, s.n, 1, &buf, &len), 0);
	assert_int_equal(len, 0);
	free(buf);
	assert_int_equal(agd_feed_encode(&s, s.n + 3, 1, &buf, &len), 0);
	assert_int_equal(len, 0);
	free(buf);
	assert_int_equal(agd_feed_decode(NULL, 0, &back, &e), 0);
	assert_int_equal(back.n, 0);
	agd_feed_set_free(&s);
}

static void decode_refuses_damaged_runs(void **state)
{
	static const struct {
		const char *bytes;
		size_t len;
		const char *msg;
	} bad[] = {
		{ "\x05\x08\x0a", 3, "damaged prefix record at byte 0" },
		{ "\x04", 1, "damaged prefix record at byte 0" },
		{ "\x04\x08\x0a\x06", 4, "damaged prefix record at byte 3" },
		{ "\x04\x21\x0a\x00\x00\x00\x00", 7, "prefix length 33 at byte 0" },
		{ "\x06\x81", 2, "prefix length 129 at byte 0" },
		{ "\x04\x18\x0a\x00", 4, "damaged prefix record at byte 0" },
		{ "\x06\x80\x20\x01\x0d\xb8", 6, "damaged prefix record at byte 0" },
		{ "\x04\x00\x04\x07\x0b", 5, "prefix with host bits set at byte 2" },
		{ "\x04\x07\x0b", 3, "prefix with host bits set at byte 0" },
		{ "\x06\x7f\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01", 18,
		  "prefix with host bits set at byte 0" },
	};
	struct agd_feed_set s = { 0 };
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(bad); i++) {
		struct agd_err e = { 0 };

		if (agd_feed_decode((const uint8_t *)bad[i].bytes, bad[i].len, &s, &e) != -EINVAL)
			fail_msg("run %zu not refused", i);
		assert_string_equal(e.msg, bad[i].msg);
		agd_feed_set_free(&s);
	}
}

/* ---- the stored record --------------------------------------------------- */

struct rec_fx {
	struct agd_feed_meta m;
	struct agd_feed_set s;
	void *rec;
	size_t len;
};

static void rec_make(struct rec_fx *f, const char *feed)
{
	memset(f, 0, sizeof(*f));
	assert_int_equal(parse(feed, 0, &f->s, NULL), 0);
	snprintf(f->m.source, sizeof(f->m.source), "https://example.net/agents.json");
	f->m.interval_ms = 3600000;
	snprintf(f->m.etag, sizeof(f->m.etag), "\"5f2b-63a1\"");
	snprintf(f->m.last_modified, sizeof(f->m.last_modified), "Thu, 20 Nov 2025 15:46:12 GMT");
	f->m.applied_ms = 1763653572000ULL;
	f->m.digest = agd_feed_digest(&f->s);
	assert_int_equal(agd_feed_rec_encode(&f->m, &f->s, &f->rec, &f->len), 0);
}

static void rec_free(struct rec_fx *f)
{
	free(f->rec);
	agd_feed_set_free(&f->s);
}

static const char rec_feed[] = "{\"creationTime\":\"2025-11-20T15:46:12.000000\",\"prefixes\":["
			       "{\"ipv4Prefix\":\"0.0.0.0/0\"},{\"ipv4Prefix\":\"66.249.64.0/27\"},"
			       "{\"ipv4Prefix\":\"192.0.2.7/32\"},{\"ipv6Prefix\":\"8000::/1\"},"
			       "{\"ipv6Prefix\":\"2001:db8::2/127\"},"
			       "{\"ipv6Prefix\":\"2001:db8::3/128\"}]}";

static void rec_round_trip(void **state)
{
	struct rec_fx f;
	struct agd_feed_meta m;
	struct agd_feed_set s = { 0 };
	struct agd_err e = { 0 };
	struct rec_head h;

	(void)state;
	rec_make(&f, rec_feed);
	memcpy(&h, f.rec, sizeof(h));
	assert_int_equal(h.version, AGD_FEED_REC_VERSION);
	assert_int_equal(h.n, 6);
	assert_int_equal(f.len, sizeof(h) + strlen(f.m.source) + strlen(f.m.etag) +
					strlen(f.m.last_modified) + strlen(f.s.created) +
					2 + 6 + 6 + 3 + 18 + 18);
	assert_int_equal(agd_feed_rec_decode(f.rec, f.len, &m, &s, &e), 0);
	assert_int_equal(memcmp(&m, &f.m, sizeof(m)), 0); /* strings zero-filled alike */
	assert_true(same_set(&s, &f.s));
	assert_string_equal(s.created, "2025-11-20T15:46:12.000000");
	agd_feed_set_free(&s);
	rec_free(&f);

	/* A set given whole: no source, no validators, no prefixes yet. */
	memset(&f, 0, sizeof(f));
	f.m.digest = agd_feed_digest(&f.s);
	assert_int_equal(agd_feed_rec_encode(&f.m, &f.s, &f.rec, &f.len), 0);
	assert_int_equal(f.len, sizeof(h));
	assert_int_equal(agd_feed_rec_decode(f.rec, f.len, &m, &s, &e), 0);
	assert_int_equal(memcmp(&m, &f.m, sizeof(m)), 0);
	assert_int_equal(s.n, 0);
	assert_string_equal(s.created, "");
	rec_free(&f);

	/* Every string at its longest. */
	memset(&f, 0, sizeof(f));
	memset(f.m.source, 's', AGD_FEED_SOURCE_MAX);
	memset(f.m.etag, 'e', AGD_FEED_VALIDATOR_MAX);
	memset(f.m.last_modified, 'l', AGD_FEED_VALIDATOR_MAX);
	memset(f.s.created, 'c', AGD_FEED_TIME_MAX);
	f.m.interval_ms = UINT64_MAX;
	f.m.applied_ms = UINT64_MAX - 1;
	f.m.digest = agd_feed_digest(&f.s);
	assert_int_equal(agd_feed_rec_encode(&f.m, &f.s, &f.rec, &f.len), 0);
	assert_int_equal(agd_feed_rec_decode(f.rec, f.len, &m, &s, &e), 0);
	assert_int_equal(memcmp(&m, &f.m, sizeof(m)), 0);
	assert_int_equal(strlen(s.created), AGD_FEED_TIME_MAX);
	agd_feed_set_free(&s);
	rec_free(&f);
}

/* One damaged copy: refused with code and a message, no prefix kept. */
static void expect_rec_refused(const void *rec, size_t len, int code, const char *what)
{
	struct agd_feed_meta m;
	struct agd_feed_set s = { 0 };
	struct agd_err e = { 0 };
	void *copy = malloc(len ? len : 1); /* exact: ASan sees a read past its end */
	int rc;

	memset(&m, 0x5a, sizeof(m));

	assert_non_null(copy);
	memcpy(copy, rec, len);
	rc = agd_feed_rec_decode(copy, len, &m, &s, &e);
	free(copy);
	if (rc != code)
		fail_msg("%s: %d, expected %d (%s)", what, rc, code, e.msg);
	if (!e.msg[0])
		fail_msg("%s: refused without a message", what);
	assert_int_equal(s.n, 0);
	assert_null(s.v);
}

static void rec_damaged_refused(void **state)
{
	struct rec_fx f;
	struct rec_head h, good;
	uint8_t *b;
	char what[64];
	size_t i, strs;

	(void)state;
	rec_make(&f, rec_feed);
	b = f.rec;

	/* Cut at every length: the head, a string, between or inside prefixes. */
	for (i = 0; i < f.len; i++) {
		snprintf(what, sizeof(what), "cut at %zu of %zu", i, f.len);
		expect_rec_refused(b, i, -EUCLEAN, what);
	}
	/* One byte more: a prefix record the count does not know. */
	{
		uint8_t *longer = malloc(f.len + 3);

		assert_non_null(longer);
		memcpy(longer, b, f.len);
		memcpy(longer + f.len, "\x04\x08\x0b", 3);
		expect_rec_refused(longer, f.len + 3, -EUCLEAN, "a prefix added");
		memcpy(longer + f.len, "\x04", 1);
		expect_rec_refused(longer, f.len + 1, -EUCLEAN, "a byte added");
		free(longer);
	}

	memcpy(&good, b, sizeof(good));
#define WITH_HEAD(field, value, code)                                                     \
	do {                                                                              \
		h = good;                                                                 \
		h.field = (value);                                                        \
		memcpy(b, &h, sizeof(h));                                                 \
		expect_rec_refused(b, f.len, code, #field " = " #value);                  \
		memcpy(b, &good, sizeof(good));                                           \
	} while (0)

	WITH_HEAD(digest, good.digest ^ 1, -EUCLEAN);
	WITH_HEAD(digest, 0, -EUCLEAN);
	WITH_HEAD(n, good.n + 1, -EUCLEAN);
	WITH_HEAD(n, good.n - 1, -EUCLEAN);
	WITH_HEAD(n, 0, -EUCLEAN);
	WITH_HEAD(n, UINT32_MAX, -EUCLEAN);
	WITH_HEAD(version, AGD_FEED_REC_VERSION + 1, -EPROTO);
	WITH_HEAD(version, 0, -EPROTO);
	WITH_HEAD(version, UINT32_MAX, -EPROTO);
	/* Strings longer than their fields, or shifted against the prefixes. */
	WITH_HEAD(source_len, AGD_FEED_SOURCE_MAX + 1, -EUCLEAN);
	WITH_HEAD(etag_len, AGD_FEED_VALIDATOR_MAX + 1, -EUCLEAN);
	WITH_HEAD(lastmod_len, UINT16_MAX, -EUCLEAN);
	WITH_HEAD(created_len, AGD_FEED_TIME_MAX + 1, -EUCLEAN);
	WITH_HEAD(source_len, good.source_len + 1, -EUCLEAN);
	WITH_HEAD(created_len, good.created_len - 1, -EUCLEAN);
#undef WITH_HEAD

	/* A NUL inside a string. */
	b[sizeof(h) + 3] = 0;
	expect_rec_refused(b, f.len, -EUCLEAN, "NUL in the source");
	b[sizeof(h) + 3] = 'p';

	/* Every single bit flipped, never a crash: the version's refused as
	 * another version; the count, the digest and the prefixes as damaged;
	 * the times and the strings (a NUL aside) not covered by the digest are
	 * read as they are, with the same set; the string lengths either. */
	strs = sizeof(h) + good.source_len + good.etag_len + good.lastmod_len + good.created_len;
	for (i = 0; i < f.len * 8; i++) {
		size_t at = i / 8;
		struct agd_feed_meta m;
		struct agd_feed_set s = { 0 };
		struct agd_err e = { 0 };
		int rc;

		b[at] ^= (uint8_t)(1u << (i % 8));
		rc = agd_feed_rec_decode(b, f.len, &m, &s, &e);
		if (rc == 0 && !same_set(&s, &f.s))
			fail_msg("bit %zu flipped: accepted with another set", i);
		if (at < 4 && rc != -EPROTO)
			fail_msg("bit %zu (version) flipped: %d", i, rc);
		if (((at >= 4 && at < 8) || (at >= 24 && at < 32) || at >= strs) && rc != -EUCLEAN)
			fail_msg("bit %zu flipped: %d, expected -EUCLEAN", i, rc);
		if (at >= 8 && at < 24 && rc)
			fail_msg("bit %zu (a time) flipped: %d (%s)", i, rc, e.msg);
		if (at >= 32 && at < strs && rc && rc != -EUCLEAN)
			fail_msg("bit %zu flipped: %d (%s)", i, rc, e.msg);
		agd_feed_set_free(&s);
		b[at] ^= (uint8_t)(1u << (i % 8));
	}
	/* Still whole after all that. */
	{
		struct agd_feed_meta m;
		struct agd_feed_set s = { 0 };

		assert_int_equal(agd_feed_rec_decode(b, f.len, &m, &s, NULL), 0);
		assert_true(same_set(&s, &f.s));
		agd_feed_set_free(&s);
	}
	rec_free(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(json_google_style),
		cmocka_unit_test(json_openai_style),
		cmocka_unit_test(text_list),
		cmocka_unit_test(empty_feeds),
		cmocka_unit_test(text_refused_naming_the_line),
		cmocka_unit_test(json_refused_naming_the_index),
		cmocka_unit_test(nul_byte_refused),
		cmocka_unit_test(max_prefixes),
		cmocka_unit_test(max_prefixes_duplicate_after_the_limit),
		cmocka_unit_test(line_numbers_count_leading_blank_lines),
		cmocka_unit_test(set_by_hand),
		cmocka_unit_test(set_diff),
		cmocka_unit_test(digest),
		cmocka_unit_test(encode_decode_round_trip),
		cmocka_unit_test(decode_refuses_damaged_runs),
		cmocka_unit_test(rec_round_trip),
		cmocka_unit_test(rec_damaged_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
