// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "agentgate.h"
#include "policy.h"
#include "jsonguard.h"
#include "rating.h"

struct item_error {
	const char *field;
	char reason[112];
};

static int item_fail(struct item_error *e, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int item_fail(struct item_error *e, const char *field, const char *fmt, ...)
{
	va_list ap;

	e->field = field;
	va_start(ap, fmt);
	vsnprintf(e->reason, sizeof(e->reason), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Printable ASCII without controls: ids and users travel in headers and logs. */
static bool printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

/* No NUL can occur inside: the parser refuses \u0000 (no JSON_ALLOW_NUL). */
static int opt_string(json_t *obj, const char *key, char *out, size_t max, bool check_chars,
		      struct item_error *e)
{
	json_t *v = json_object_get(obj, key);
	const char *s;

	out[0] = '\0';
	if (!v)
		return 0;
	if (!json_is_string(v))
		return item_fail(e, key, "must be a string");
	s = json_string_value(v);
	if (json_string_length(v) > max)
		return item_fail(e, key, "longer than %zu characters", max);
	if (check_chars && !printable(s))
		return item_fail(e, key, "must be printable ASCII");
	if (out != NULL && max > 0)
		snprintf(out, max + 1, "%s", s);
	return 0;
}

/* ---- field names ------------------------------------------------------------------ */

static const char *const canonical[] = { "id", "agent", "user", "score", "ts", "comment" };
#define N_CANON (sizeof(canonical) / sizeof(canonical[0]))

/* The names other rating pipelines use (agentgated(8), POLICY), then the
 * operator's (--rating-fields), each for one canonical field. */
struct alias {
	char name[AGD_RATING_FIELD_MAX + 1];
	const char *field;
};
static const struct alias builtin[] = {
	{ "agentId", "agent" },   { "userId", "user" },   { "timestamp", "ts" },
	{ "productId", "agent" }, { "item_id", "agent" }, { "user_id", "user" },
	{ "rating", "score" },
};
static struct alias custom[AGD_RATING_ALIASES_MAX];
static size_t n_custom;

static const char *field_of(const char *key)
{
	size_t i;

	for (i = 0; i < N_CANON; i++)
		if (!strcmp(key, canonical[i]))
			return canonical[i];
	for (i = 0; i < n_custom; i++)
		if (!strcmp(key, custom[i].name))
			return custom[i].field;
	for (i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
		if (!strcmp(key, builtin[i].name))
			return builtin[i].field;
	return NULL;
}

static int parse_fields(const char *spec, struct alias *next, size_t *n_out,
			struct agd_err *err)
{
	const char *p = spec;
	size_t n = 0, i;

	while (p && *p) {
		size_t len = strcspn(p, ","), eq;
		char part[2 * AGD_RATING_FIELD_MAX + 4];
		const char *field = NULL;

		if (len >= sizeof(part) || n == AGD_RATING_ALIASES_MAX)
			return agd_errf(err, -EINVAL, "rating fields: at most %d names of at most "
					"%d characters", AGD_RATING_ALIASES_MAX, AGD_RATING_FIELD_MAX);
		memcpy(part, p, len);
		part[len] = 0;
		p += len + (p[len] == ',');
		eq = strcspn(part, "=");
		if (part[eq]) {
			part[eq] = 0;
			for (i = 0; i < N_CANON; i++)
				if (!strcmp(part, canonical[i]))
					field = canonical[i];
		}
		if (!field || !part[eq + 1] || strlen(part + eq + 1) > AGD_RATING_FIELD_MAX)
			return agd_errf(err, -EINVAL, "rating fields: '%s' is not FIELD=NAME with "
					"FIELD one of id, agent, user, score, ts, comment", part);
		for (i = 0; i < N_CANON; i++)
			if (!strcmp(part + eq + 1, canonical[i]))
				return agd_errf(err, -EINVAL, "rating fields: '%s' is a field's own "
						"name", part + eq + 1);
		snprintf(next[n].name, sizeof(next[n].name), "%s", part + eq + 1);
		next[n++].field = field;
	}
	*n_out = n;
	return 0;
}

int agd_rating_fields_check(const char *spec, struct agd_err *err)
{
	struct alias next[AGD_RATING_ALIASES_MAX];
	size_t n;

	return parse_fields(spec, next, &n, err);
}

int agd_rating_fields_set(const char *spec, struct agd_err *err)
{
	struct alias next[AGD_RATING_ALIASES_MAX];
	size_t n;
	int rc = parse_fields(spec, next, &n, err);

	if (rc)
		return rc;
	memcpy(custom, next, n * sizeof(*next));
	n_custom = n;
	return 0;
}

/* The object with every field under its canonical name: each known once,
 * nothing unknown. NULL after item_fail. */
static json_t *canonical_object(json_t *obj, struct item_error *e)
{
	json_t *out = json_object(), *v;
	const char *key;

	if (!out) {
		item_fail(e, "", "out of memory");
		return NULL;
	}
	json_object_foreach(obj, key, v) {
		const char *f = field_of(key);

		if (!f) {
			json_decref(out);
			item_fail(e, "", "unknown field '%.60s'", key);
			return NULL;
		}
		if (json_object_get(out, f)) {
			json_decref(out);
			item_fail(e, f, "given twice (as '%.40s' and another name)", key);
			return NULL;
		}
		json_object_set(out, f, v);
	}
	return out;
}

/* ISO 8601 / RFC 3339: YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM|-HH:MM], as ms. */
static int iso8601_ms(const char *s, int64_t *out)
{
	int y, mo, d, h, mi, sec, n = 0, off = 0;
	long long days, frac = 0, scale = 1000;
	const char *p;

	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
	    n != 19 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 ||
	    y < 1970)
		return -EINVAL;
	p = s + n;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return -EINVAL;
		while (*p >= '0' && *p <= '9') {
			if (scale > 1) {
				scale /= 10;
				frac += (*p - '0') * scale;
			}
			p++;
		}
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int oh, om, m = 0;

		if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &m) != 2 || m != 5 || oh > 23 || om > 59)
			return -EINVAL;
		off = (oh * 60 + om) * (*p == '+' ? 1 : -1);
		p += 6;
	} else {
		return -EINVAL;
	}
	if (*p)
		return -EINVAL;
	/* days from the civil date (Howard Hinnant's algorithm) */
	y -= mo <= 2;
	{
		long long era = y / 400, yoe = y - era * 400;
		long long doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
		long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

		days = era * 146097 + doe - 719468;
	}
	*out = ((days * 86400 + h * 3600LL + mi * 60LL + sec) - off * 60LL) * 1000 + frac;
	return *out < 0 || *out > AGD_RATING_TS_MAX ? -EINVAL : 0;
}

/* ---- the plain shape, without jansson ---------------------------------------------- */
/*
 * Nearly every rating is one flat object of short ASCII strings and small
 * integers, and jansson (a tree of allocations per line) was most of the
 * ingest's time. fast_object reads that shape alone: strings of printable
 * ASCII without escapes, non-negative integers without sign, fraction or
 * exponent, JSON whitespace, every field known once and valid. Anything
 * else, valid or not, goes to the full parser, so errors keep its words and
 * an accepted rating is the one it would give (fuzz_rating holds the two
 * to that).
 */
enum { F_ID, F_AGENT, F_USER, F_SCORE, F_TS, F_COMMENT, F_N }; /* canonical[]'s order */
_Static_assert(N_CANON == F_N, "a field index for each canonical name");

struct fast_val {
	const char *s; /* NULL: an integer */
	size_t len;
	long long num;
};

static const char *fast_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* p at the opening quote: the position after the closing one, or NULL. */
static const char *fast_str(const char *p, const char *end, struct fast_val *v)
{
	const char *q = ++p;

	while (q < end && *q != '"') {
		if ((unsigned char)*q < 0x20 || (unsigned char)*q > 0x7e || *q == '\\')
			return NULL;
		q++;
	}
	if (q == end)
		return NULL;
	v->s = p;
	v->len = (size_t)(q - p);
	return q + 1;
}

/* At most 16 digits, no leading zero; NULL for any other number. */
static const char *fast_int(const char *p, const char *end, struct fast_val *v)
{
	const char *q = p;
	long long n = 0;

	if (q < end && *q == '0')
		q++;
	else
		while (q < end && *q >= '0' && *q <= '9' && q - p < 16)
			n = n * 10 + (*q++ - '0');
	if (q == p || (q < end && ((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' ||
				   *q == 'E')))
		return NULL;
	v->s = NULL;
	v->num = n;
	return q;
}

/* A key's canonical field without a copy when it is a canonical name (the
 * usual case; field_of checks those first too), else through field_of. */
static int fast_field(const struct fast_val *k)
{
	/* canonical[]'s lengths (a wrong one only sends that name through field_of) */
	static const unsigned char canon_len[F_N] = { 2, 5, 4, 5, 2, 7 };
	char key[AGD_RATING_FIELD_MAX + 1];
	const char *f;
	int i;

	for (i = 0; i < F_N; i++)
		if (k->len == canon_len[i] && !memcmp(k->s, canonical[i], k->len))
			return i;
	if (k->len > AGD_RATING_FIELD_MAX)
		return -1;
	memcpy(key, k->s, k->len);
	key[k->len] = 0;
	f = field_of(key);
	for (i = 0; f && i < F_N; i++)
		if (f == canonical[i])
			return i;
	return -1;
}

/* A string of min to max characters. */
static bool fast_fits(const struct fast_val *v, size_t min, size_t max)
{
	return v->s && v->len >= min && v->len <= max;
}

static bool fast_copy(char *out, size_t max, const struct fast_val *v, size_t min)
{
	if (!fast_fits(v, min, max))
		return false;
	memcpy(out, v->s, v->len);
	out[v->len] = 0;
	return true;
}

/* The fields' values checked as item_fields checks them; false for anything
 * item_fields would refuse. */
static bool fast_fields(const struct fast_val *v, unsigned int seen, struct agd_rating *r)
{
	char ts[40];

	if (!(seen & 1u << F_AGENT) || !(seen & 1u << F_SCORE))
		return false;
	if (!fast_copy(r->agent, AG_NAME_MAX, &v[F_AGENT], 1) || ag_name_check(r->agent) ||
	    !strcmp(r->agent, "_other"))
		return false;
	if (v[F_SCORE].s || v[F_SCORE].num < AGD_SCORE_MIN || v[F_SCORE].num > AGD_SCORE_MAX)
		return false;
	r->score = (int)v[F_SCORE].num;
	if (seen & 1u << F_TS) {
		if (v[F_TS].s) {
			if (!fast_copy(ts, sizeof(ts) - 1, &v[F_TS], 0) || iso8601_ms(ts, &r->ts_ms))
				return false;
		} else if (v[F_TS].num > AGD_RATING_TS_MAX) {
			return false;
		} else {
			r->ts_ms = v[F_TS].num;
		}
	}
	if (seen & 1u << F_ID && !fast_copy(r->id, AGD_RATING_ID_MAX, &v[F_ID], 1))
		return false;
	if (seen & 1u << F_USER && !fast_copy(r->user, AGD_RATING_USER_MAX, &v[F_USER], 0))
		return false;
	return !(seen & 1u << F_COMMENT) || fast_fits(&v[F_COMMENT], 0, AGD_RATING_COMMENT_MAX);
}

/* One object from *pp: true with *r set and *pp after its '}'. */
static bool fast_object(const char **pp, const char *end, struct agd_rating *r)
{
	struct fast_val v[F_N];
	const char *p = fast_ws(*pp, end);
	unsigned int seen = 0;

	memset(r, 0, sizeof(*r));
	r->ts_ms = -1;
	if (p == end || *p != '{')
		return false;
	p = fast_ws(p + 1, end);
	for (;;) {
		struct fast_val k;
		int i;

		if (p == end || *p != '"' || !(p = fast_str(p, end, &k)))
			return false;
		i = fast_field(&k);
		if (i < 0 || seen & 1u << i) /* unknown, or given twice */
			return false;
		seen |= 1u << i;
		p = fast_ws(p, end);
		if (p == end || *p != ':')
			return false;
		p = fast_ws(p + 1, end);
		if (p == end)
			return false;
		p = *p == '"' ? fast_str(p, end, &v[i]) : fast_int(p, end, &v[i]);
		if (!p)
			return false;
		p = fast_ws(p, end);
		if (p < end && *p == '}')
			break;
		if (p == end || *p != ',')
			return false;
		p = fast_ws(p + 1, end);
	}
	*pp = p + 1;
	return fast_fields(v, seen, r);
}

int agd_rating_parse_fast(const char *text, size_t len, struct agd_rating *out)
{
	const char *p = text, *end = text + len;

	return fast_object(&p, end, out) && fast_ws(p, end) == end;
}

/* A body holding one object or an array of them, each of the plain shape:
 * true with b->items and b->n set; false with nothing kept. */
static bool fast_body(const char *body, size_t len, struct agd_rating_batch *b)
{
	const char *p = fast_ws(body, body + len), *end = body + len, *q;
	size_t cap = 1, n = 0;

	if (p < end && *p != '[') {
		b->items = calloc(1, sizeof(*b->items));
		if (b->items && agd_rating_parse_fast(p, (size_t)(end - p), b->items)) {
			b->n = 1;
			return true;
		}
		free(b->items);
		b->items = NULL;
		return false;
	}
	for (q = p; q < end && (q = memchr(q, '{', (size_t)(end - q))); q++)
		cap++; /* at least one '{' an item */
	if (p == end || cap - 1 > AGD_RATING_BATCH_MAX ||
	    !(b->items = calloc(cap, sizeof(*b->items))))
		return false;
	p = fast_ws(p + 1, end);
	while (n < cap && fast_object(&p, end, &b->items[n])) {
		n++;
		p = fast_ws(p, end);
		if (p < end && *p == ']') {
			if (fast_ws(p + 1, end) != end)
				break;
			b->n = n;
			return true;
		}
		if (p == end || *p != ',')
			break;
		p++;
	}
	free(b->items);
	b->items = NULL;
	return false;
}

static int item_fields(json_t *obj, struct agd_rating *r, struct item_error *e);

static int item_from_json(json_t *obj, struct agd_rating *r, struct item_error *e)
{
	int err;

	memset(r, 0, sizeof(*r));
	r->ts_ms = -1;
	if (!json_is_object(obj))
		return item_fail(e, "", "must be a JSON object");
	obj = canonical_object(obj, e);
	if (!obj)
		return -EINVAL;
	err = item_fields(obj, r, e);
	json_decref(obj);
	return err;
}

static int item_fields(json_t *obj, struct agd_rating *r, struct item_error *e)
{
	char comment[AGD_RATING_COMMENT_MAX + 1];
	json_t *agent, *score, *ts;
	json_int_t sv;
	int err;

	agent = json_object_get(obj, "agent");
	if (!agent)
		return item_fail(e, "agent", "is required");
	if (!json_is_string(agent))
		return item_fail(e, "agent", "must be a string of 1 to 64 characters of A-Z a-z 0-9 . _ : -");
	if (json_string_length(agent) != strlen(json_string_value(agent)))
		return item_fail(e, "agent", "must not contain NUL");
	if (ag_name_check(json_string_value(agent)))
		return item_fail(e, "agent", "%s", ag_errmsg()); /* the one validator's words */
	if (!strcmp(json_string_value(agent), "_other"))
		return item_fail(e, "agent", "'_other' is reserved (the metrics aggregate)");
	snprintf(r->agent, sizeof(r->agent), "%s", json_string_value(agent));
	score = json_object_get(obj, "score");
	if (!score)
		return item_fail(e, "score", "is required");
	sv = json_is_integer(score) ? json_integer_value(score) : 0;
	if (!json_is_integer(score) || sv < AGD_SCORE_MIN || sv > AGD_SCORE_MAX)
		return item_fail(e, "score", "must be an integer from 1 to 5");
	r->score = (int)sv;
	ts = json_object_get(obj, "ts");
	if (json_is_string(ts)) {
		if (iso8601_ms(json_string_value(ts), &r->ts_ms))
			return item_fail(e, "ts", "must be milliseconds since the epoch or an ISO "
					 "8601 time such as 2026-12-06T20:00:00.000Z");
	} else if (ts) {
		if (!json_is_integer(ts) || json_integer_value(ts) < 0 ||
		    json_integer_value(ts) > AGD_RATING_TS_MAX)
			return item_fail(e, "ts", "must be milliseconds since the epoch (integer)");
		r->ts_ms = json_integer_value(ts);
	}
	err = opt_string(obj, "id", r->id, AGD_RATING_ID_MAX, true, e);
	if (!err && json_object_get(obj, "id") && !r->id[0])
		err = item_fail(e, "id", "must not be empty");
	if (!err)
		err = opt_string(obj, "user", r->user, AGD_RATING_USER_MAX, true, e);
	if (!err)
		err = opt_string(obj, "comment", comment, AGD_RATING_COMMENT_MAX, false, e);
	return err;
}

static int push_error(struct agd_rating_batch *b, size_t index, const struct item_error *e)
{
	struct agd_rating_error *x;

	if (b->n_errors++ >= AGD_RATING_ERRORS_MAX)
		return 0; /* counted, not detailed */
	/* Made on the first error: most batches have none, and 13.6 KB
	 * zeroed per request showed in profiles. */
	if (!b->errors)
		b->errors = calloc(AGD_RATING_ERRORS_MAX, sizeof(*b->errors));
	if (!b->errors)
		return -ENOMEM; /* agd_ratings_parse says so */
	x = &b->errors[b->n_errors - 1];
	x->index = index;
	snprintf(x->field, sizeof(x->field), "%s", e->field ? e->field : "");
	snprintf(x->reason, sizeof(x->reason), "%s", e->reason);
	return 0;
}

static int add_item(struct agd_rating_batch *b, size_t index, json_t *obj)
{
	struct item_error e = {};

	if (b->n >= AGD_RATING_BATCH_MAX) {
		item_fail(&e, "", "more than %d ratings in one request", AGD_RATING_BATCH_MAX);
		return push_error(b, index, &e);
	}
	if (item_from_json(obj, &b->items[b->n], &e))
		return push_error(b, index, &e);
	b->n++;
	return 0;
}

static size_t count_lines(const char *s, size_t len)
{
	size_t n = 1, i;

	for (i = 0; i < len; i++)
		n += s[i] == '\n';
	return n;
}

static int parse_json(const char *body, size_t len, struct agd_rating_batch *b, bool fast)
{
	json_error_t jerr;
	json_t *root;
	size_t i;

	if (fast && fast_body(body, len, b))
		return 0;
	root = agd_json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);

	if (!root) {
		struct item_error e = {};

		item_fail(&e, "", "invalid JSON at line %d column %d: %.60s", jerr.line,
			  jerr.column, jerr.text);
		return push_error(b, 0, &e);
	}
	if (json_is_array(root)) {
		if (json_array_size(root) == 0) {
			struct item_error e = {};

			item_fail(&e, "", "the array holds no ratings");
			push_error(b, 0, &e);
		}
		b->items = calloc(json_array_size(root) + 1, sizeof(*b->items));
		for (i = 0; b->items && i < json_array_size(root); i++)
			add_item(b, i, json_array_get(root, i));
	} else {
		b->items = calloc(1, sizeof(*b->items));
		if (b->items)
			add_item(b, 0, root);
	}
	json_decref(root);
	return b->items ? 0 : -ENOMEM;
}

static int parse_ndjson(const char *body, size_t len, struct agd_rating_batch *b, bool fast)
{
	size_t start = 0, index = 0, end;

	b->items = calloc(count_lines(body, len), sizeof(*b->items));
	if (!b->items)
		return -ENOMEM;
	while (start < len) {
		const char *nl = memchr(body + start, '\n', len - start);
		json_error_t jerr;
		json_t *obj;
		size_t i;
		bool blank = true;

		end = nl ? (size_t)(nl - body) : len;
		for (i = start; i < end && blank; i++)
			blank = body[i] == ' ' || body[i] == '\t' || body[i] == '\r';
		if (!blank && fast && b->n < AGD_RATING_BATCH_MAX &&
		    agd_rating_parse_fast(body + start, end - start, &b->items[b->n])) {
			b->n++;
			index++;
		} else if (!blank) {
			obj = agd_json_loadb(body + start, end - start, JSON_REJECT_DUPLICATES, &jerr);
			if (obj) {
				add_item(b, index, obj);
				json_decref(obj);
			} else {
				struct item_error e = {};

				item_fail(&e, "", "invalid JSON at column %d: %.60s", jerr.column,
					  jerr.text);
				push_error(b, index, &e);
			}
			index++;
		}
		start = end + 1;
	}
	if (index == 0) {
		struct item_error e = {};

		item_fail(&e, "", "no ratings in the body");
		push_error(b, 0, &e);
	}
	return 0;
}

static int ratings_parse(const char *body, size_t len, enum agd_rating_format format,
			 struct agd_rating_batch *b, bool fast)
{
	int err;

	memset(b, 0, sizeof(*b));
	err = format == AGD_RATING_NDJSON ? parse_ndjson(body, len, b, fast) :
					    parse_json(body, len, b, fast);
	if (!err && b->n_errors && !b->errors)
		err = -ENOMEM; /* no room to say what was wrong */
	if (err) {
		agd_rating_batch_free(b);
		return err;
	}
	if (b->n_errors) {
		b->n = 0; /* all or nothing */
		return -EINVAL;
	}
	return 0;
}

int agd_ratings_parse(const char *body, size_t len, enum agd_rating_format format,
		     struct agd_rating_batch *b)
{
	return ratings_parse(body, len, format, b, true);
}

int agd_ratings_parse_full(const char *body, size_t len, enum agd_rating_format format,
			   struct agd_rating_batch *b)
{
	return ratings_parse(body, len, format, b, false);
}

void agd_rating_batch_free(struct agd_rating_batch *b)
{
	free(b->items);
	free(b->errors);
	memset(b, 0, sizeof(*b));
}

int agd_rating_parse_line(const char *line, size_t len, struct agd_rating *out,
			 struct agd_rating_error *err)
{
	if (agd_rating_parse_fast(line, len, out)) {
		memset(err, 0, sizeof(*err));
		return 0;
	}
	return agd_rating_parse_line_full(line, len, out, err);
}

int agd_rating_parse_line_full(const char *line, size_t len, struct agd_rating *out,
			       struct agd_rating_error *err)
{
	struct item_error e = {};
	json_error_t jerr;
	json_t *obj;
	int rc;

	memset(err, 0, sizeof(*err));
	obj = agd_json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!obj) {
		item_fail(&e, "", "invalid JSON at column %d: %.60s", jerr.column, jerr.text);
		rc = -EINVAL;
	} else {
		rc = item_from_json(obj, out, &e) ? -EINVAL : 0;
		json_decref(obj);
	}
	if (rc) {
		snprintf(err->field, sizeof(err->field), "%s", e.field ? e.field : "");
		snprintf(err->reason, sizeof(err->reason), "%s", e.reason);
	}
	return rc;
}
