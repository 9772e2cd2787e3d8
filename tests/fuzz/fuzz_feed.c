// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Rule feeds (agentgated/core/feed.c): agd_feed_parse on what a feed URL,
 * a file or `agentgate rule sync` hands the daemon, and the two binary
 * forms read back from the store (agd_feed_rec_decode) and the fleet's log
 * (agd_feed_decode).
 *
 * Input: the bytes, given to all three as they are, each over an exact
 * copy (a read past its end is an ASan report). Checks:
 *   - a parsed set is sorted and without duplicates (agd_feed_rule_cmp),
 *     every prefix a valid one (family, length, no host bits, no port);
 *     a refusal is -EINVAL with a message naming the line (text) or the
 *     JSON's place, and leaves the set empty;
 *   - text (not starting with '{'): the same verdict and set as a reference
 *     written from feed.h (lines, '#' comments, blanks, ag_prefix_parse);
 *   - the same feed with CRLF line ends, or a BOM before it: the same set;
 *   - max_prefixes: the distinct count passes, one less is -E2BIG;
 *   - encode -> decode (whole and in two parts) gives the set back; the
 *     record (encode -> decode) gives meta and set back; the digest is the
 *     same for equal sets; diff with itself is empty;
 *   - a record that decodes is sorted, matches its digest, and encodes
 *     back to as many bytes, its head and strings byte for byte;
 *   - a compact run that decodes encodes back to the same bytes.
 */
#include <sys/socket.h>

#include "core/feed.h"
#include "fuzz.h"

static bool blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static void check_rule(const struct ag_rule *r, size_t i)
{
	size_t full = r->family == AF_INET ? 4 : 16, k;

	FUZZ_CHECK(r->family == AF_INET || r->family == AF_INET6, "prefix %zu: family %d", i,
		   r->family);
	FUZZ_CHECK(r->plen <= full * 8, "prefix %zu: length %u", i, r->plen);
	FUZZ_CHECK(!r->port && !r->slot, "prefix %zu: port %u slot %u", i, r->port, r->slot);
	for (k = r->plen; k < 128; k++)
		FUZZ_CHECK(!(r->addr[k / 8] & (0x80 >> (k % 8))),
			   "prefix %zu: bit %zu set beyond /%u", i, k, r->plen);
}

/* Sorted, unique, every prefix valid. */
static void check_set(const struct agd_feed_set *s)
{
	size_t i;

	FUZZ_CHECK(s->n <= s->cap || (!s->n && !s->cap), "n %zu cap %zu", s->n, s->cap);
	FUZZ_CHECK(memchr(s->created, 0, sizeof(s->created)), "creationTime not terminated");
	for (i = 0; i < s->n; i++) {
		check_rule(&s->v[i], i);
		FUZZ_CHECK(!i || agd_feed_rule_cmp(&s->v[i - 1], &s->v[i]) < 0,
			   "prefixes %zu and %zu out of order or equal", i - 1, i);
		FUZZ_CHECK(agd_feed_set_has(s, &s->v[i]), "prefix %zu not found in its set", i);
	}
}

static bool same_set(const struct agd_feed_set *a, const struct agd_feed_set *b)
{
	size_t i;

	if (a->n != b->n)
		return false;
	for (i = 0; i < a->n; i++)
		if (agd_feed_rule_cmp(&a->v[i], &b->v[i]) ||
		    memcmp(a->v[i].addr, b->v[i].addr, sizeof(a->v[i].addr)))
			return false;
	return true;
}

/* Parses len bytes from an exact copy. */
static int parse_copy(const uint8_t *data, size_t len, size_t max, struct agd_feed_set *s,
		      struct agd_err *e)
{
	char *copy = malloc(len ? len : 1);
	int rc;

	if (!copy)
		FUZZ_HARNESS_ERROR("out of memory");
	memcpy(copy, data, len);
	rc = agd_feed_parse(copy, len, max, s, e);
	free(copy);
	return rc;
}

/* ---- the text reference -------------------------------------------------- */

/* Where the text starts: after a BOM. And whether the feed is JSON: its
 * first byte past blanks and line ends is '{'. */
static size_t body_start(const uint8_t *d, size_t n, bool *json)
{
	size_t i = n >= 3 && !memcmp(d, "\xef\xbb\xbf", 3) ? 3 : 0, k = i;

	while (k < n && (blank((char)d[k]) || d[k] == '\n'))
		k++;
	*json = k < n && d[k] == '{';
	return i;
}

/* 0 and the prefixes (not normalized), or -EINVAL and the first bad line,
 * counted from the first byte past the BOM. */
static int ref_text(const uint8_t *d, size_t n, struct agd_feed_set *out, size_t *bad_line)
{
	size_t pos = 0, line = 0;

	while (pos < n) {
		const uint8_t *start = d + pos, *nl = memchr(start, '\n', n - pos);
		size_t len = nl ? (size_t)(nl - start) : n - pos, a = 0, b, k;
		char text[256];
		struct ag_rule r;

		pos += len + (nl != NULL);
		line++;
		for (k = 0; k < len && start[k] != '#'; k++)
			;
		len = k;
		while (a < len && blank((char)start[a]))
			a++;
		b = len;
		while (b > a && blank((char)start[b - 1]))
			b--;
		if (a == b)
			continue;
		*bad_line = line;
		if (b - a >= sizeof(text) || memchr(start + a, ' ', b - a) ||
		    memchr(start + a, '\t', b - a))
			return -EINVAL;
		memcpy(text, start + a, b - a);
		text[b - a] = 0;
		if (ag_prefix_parse(text, &r) || agd_feed_set_add(out, &r))
			return -EINVAL;
	}
	return 0;
}

/* ---- one input ----------------------------------------------------------- */

static void check_refusal(int rc, const struct agd_err *e, const struct agd_feed_set *s,
			  bool json)
{
	FUZZ_CHECK(rc == -EINVAL, "refused with %d: %s", rc, e->msg);
	FUZZ_CHECK(e->code == rc && e->msg[0], "code %d, message \"%s\"", e->code, e->msg);
	FUZZ_CHECK(!s->n && !s->v, "a refused feed left %zu prefixes", s->n);
	if (!strcmp(e->msg, "the feed holds a NUL byte: not text"))
		return;
	if (json)
		FUZZ_CHECK(!strncmp(e->msg, "not JSON: ", 10) ||
				   !strncmp(e->msg, "prefixes[", 9) ||
				   !strncmp(e->msg, "\"prefixes\" ", 11) ||
				   !strncmp(e->msg, "a JSON feed is", 14),
			   "a JSON feed refused without saying where: %s", e->msg);
	else
		FUZZ_CHECK(!strncmp(e->msg, "line ", 5), "a text feed refused without its line: %s",
			   e->msg);
}

/* The round trips of a good set: compact form, record, digest, diff. */
static void check_round_trips(const struct agd_feed_set *s)
{
	struct agd_feed_set back = { 0 }, add, del;
	struct agd_feed_meta m = { .interval_ms = 60000, .applied_ms = 1 }, m2;
	struct agd_err e = { 0 };
	uint8_t *buf;
	void *rec;
	size_t len, half = s->n / 2;

	FUZZ_CHECK(!agd_feed_encode(s, 0, s->n, &buf, &len), "encode failed");
	FUZZ_CHECK(!agd_feed_decode(buf, len, &back, &e), "own encoding refused: %s", e.msg);
	FUZZ_CHECK(same_set(s, &back), "encode -> decode changed the set");
	free(buf);
	agd_feed_set_free(&back);

	/* In two parts, appended: as the fleet's log carries it. */
	FUZZ_CHECK(!agd_feed_encode(s, 0, half, &buf, &len), "encode failed");
	FUZZ_CHECK(!agd_feed_decode(buf, len, &back, &e), "own encoding refused: %s", e.msg);
	free(buf);
	FUZZ_CHECK(!agd_feed_encode(s, half, s->n, &buf, &len), "encode failed");
	FUZZ_CHECK(!agd_feed_decode(buf, len, &back, &e), "own encoding refused: %s", e.msg);
	free(buf);
	FUZZ_CHECK(same_set(s, &back), "encode -> decode in parts changed the set");
	FUZZ_CHECK(agd_feed_digest(&back) == agd_feed_digest(s), "equal sets, other digests");
	agd_feed_set_free(&back);

	snprintf(m.source, sizeof(m.source), "https://example.net/feed.json");
	snprintf(m.etag, sizeof(m.etag), "\"e\"");
	m.digest = agd_feed_digest(s);
	FUZZ_CHECK(m.digest == agd_feed_digest(s), "the digest changed between two calls");
	FUZZ_CHECK(!agd_feed_rec_encode(&m, s, &rec, &len), "record encode failed");
	FUZZ_CHECK(!agd_feed_rec_decode(rec, len, &m2, &back, &e), "own record refused: %s", e.msg);
	FUZZ_CHECK(!memcmp(&m, &m2, sizeof(m)), "record changed the meta");
	FUZZ_CHECK(same_set(s, &back) && !strcmp(s->created, back.created),
		   "record changed the set");
	free(rec);
	agd_feed_set_free(&back);

	FUZZ_CHECK(!agd_feed_diff(s, s, &add, &del), "diff failed");
	FUZZ_CHECK(!add.n && !del.n, "a set differs from itself by +%zu -%zu", add.n, del.n);
	agd_feed_set_free(&add);
	agd_feed_set_free(&del);
	FUZZ_CHECK(!agd_feed_diff(&back, s, &add, &del), "diff failed");
	FUZZ_CHECK(same_set(&add, s) && !del.n, "diff from nothing is not the set");
	agd_feed_set_free(&add);
	agd_feed_set_free(&del);
}

static void fuzz_parse(const uint8_t *data, size_t size)
{
	struct agd_feed_set s = { 0 }, other = { 0 }, ref = { 0 };
	struct agd_err e = { 0 };
	size_t from, bad_line = 0, i, k;
	bool json, has_nul = memchr(data, 0, size) != NULL;
	int rc0 = parse_copy(data, size, 0, &s, &e), ref_rc, rc;
	uint8_t *crlf;

	from = body_start(data, size, &json);
	if (rc0) {
		check_refusal(rc0, &e, &s, json);
	} else {
		FUZZ_CHECK(!has_nul, "a feed with a NUL byte accepted");
		check_set(&s);
		check_round_trips(&s);
	}
	if (!json && !has_nul) {
		ref_rc = ref_text(data + from, size - from, &ref, &bad_line);
		agd_feed_set_normalize(&ref);
		FUZZ_CHECK(rc0 == ref_rc, "text feed: %d, the reference %d at line %zu (%s)", rc0,
			   ref_rc, bad_line, e.msg);
		if (!rc0) {
			FUZZ_CHECK(same_set(&s, &ref), "text feed: %zu prefixes, the reference %zu",
				   s.n, ref.n);
		} else {
			char want[32];

			/* Lines count from the feed's first byte, blank ones
			 * before the first entry included (the corpus's
			 * regress-line-after-leading-blank-lines). */
			snprintf(want, sizeof(want), "line %zu: ", bad_line);
			FUZZ_CHECK(!strncmp(e.msg, want, strlen(want)),
				   "refusal names another line than %zu: %s", bad_line, e.msg);
		}
		agd_feed_set_free(&ref);
	}

	/* CRLF line ends, and a BOM before a feed without one: the same. */
	crlf = malloc(2 * size + 3);
	if (!crlf)
		FUZZ_HARNESS_ERROR("out of memory");
	for (i = k = 0; i < size; i++) {
		if (data[i] == '\n')
			crlf[k++] = '\r';
		crlf[k++] = data[i];
	}
	rc = parse_copy(crlf, k, 0, &other, NULL);
	FUZZ_CHECK(rc == rc0 && same_set(&s, &other) && !strcmp(s.created, other.created),
		   "with CRLF: %d (%d as is), %zu prefixes (%zu)", rc, rc0, other.n, s.n);
	agd_feed_set_free(&other);
	if (from == 0) {
		memcpy(crlf, "\xef\xbb\xbf", 3);
		memcpy(crlf + 3, data, size);
		rc = parse_copy(crlf, size + 3, 0, &other, NULL);
		FUZZ_CHECK(rc == rc0 && same_set(&s, &other) && !strcmp(s.created, other.created),
			   "after a BOM: %d (%d as is), %zu prefixes (%zu)", rc, rc0, other.n, s.n);
		agd_feed_set_free(&other);
	}
	free(crlf);

	/* The limit counts distinct prefixes: the set's size passes, one less
	 * does not. */
	if (!rc0 && s.n) {
		rc = parse_copy(data, size, s.n, &other, &e);
		FUZZ_CHECK(!rc, "limit %zu (the distinct count): %d %s", s.n, rc, e.msg);
		FUZZ_CHECK(rc || same_set(&s, &other), "limit %zu: another set", s.n);
		agd_feed_set_free(&other);
	}
	if (!rc0 && s.n > 1) {
		rc = parse_copy(data, size, s.n - 1, &other, &e);
		FUZZ_CHECK(rc == -E2BIG && !other.v, "limit %zu of %zu distinct: %d %s", s.n - 1,
			   s.n, rc, e.msg);
	}
	agd_feed_set_free(&other);
	agd_feed_set_free(&s);
}

/* A stored record: refused as damaged or of another version, or a sorted
 * set matching its digest that encodes back to as many bytes. */
static void fuzz_record(const uint8_t *data, size_t size)
{
	uint8_t *copy = malloc(size ? size : 1);
	struct agd_feed_meta m;
	struct agd_feed_set s = { 0 };
	struct agd_err e = { 0 };
	uint8_t *enc;
	void *again;
	size_t len, enc_len;
	int rc;

	if (!copy)
		FUZZ_HARNESS_ERROR("out of memory");
	memcpy(copy, data, size);
	rc = agd_feed_rec_decode(copy, size, &m, &s, &e);
	free(copy);
	if (rc) {
		FUZZ_CHECK(rc == -EUCLEAN || rc == -EPROTO, "record refused with %d: %s", rc,
			   e.msg);
		FUZZ_CHECK(e.msg[0], "record refused without a message");
		FUZZ_CHECK(!s.n && !s.v, "a refused record left %zu prefixes", s.n);
		return;
	}
	check_set(&s);
	FUZZ_CHECK(agd_feed_digest(&s) == m.digest, "a record accepted against its digest");
	FUZZ_CHECK(!agd_feed_rec_encode(&m, &s, &again, &len), "record encode failed");
	FUZZ_CHECK(len == size, "a record of %zu bytes encodes back to %zu", size, len);
	FUZZ_CHECK(!agd_feed_encode(&s, 0, s.n, &enc, &enc_len), "encode failed");
	/* The head and the strings byte for byte; the prefixes maybe sorted. */
	FUZZ_CHECK(enc_len <= len && !memcmp(again, data, len - enc_len),
		   "a record's head or strings encode back otherwise");
	free(enc);
	free(again);
	agd_feed_set_free(&s);
}

/* A compact run: refused, or the same bytes encoded back. */
static void fuzz_run(const uint8_t *data, size_t size)
{
	uint8_t *copy = malloc(size ? size : 1), *enc;
	struct agd_feed_set s = { 0 };
	struct agd_err e = { 0 };
	size_t len, i;
	int rc;

	if (!copy)
		FUZZ_HARNESS_ERROR("out of memory");
	memcpy(copy, data, size);
	rc = agd_feed_decode(copy, size, &s, &e);
	free(copy);
	if (rc) {
		FUZZ_CHECK(rc == -EINVAL && e.code == rc && e.msg[0], "run refused with %d: %s", rc,
			   e.msg);
		agd_feed_set_free(&s); /* what came before the damage */
		return;
	}
	for (i = 0; i < s.n; i++)
		check_rule(&s.v[i], i);
	FUZZ_CHECK(!agd_feed_encode(&s, 0, s.n, &enc, &len), "encode failed");
	FUZZ_CHECK(len == size && !memcmp(enc, data, size),
		   "a run of %zu bytes encodes back otherwise (%zu)", size, len);
	free(enc);
	agd_feed_set_free(&s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_keep_stderr();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_parse(data, size);
	fuzz_record(data, size);
	fuzz_run(data, size);
	return 0;
}
