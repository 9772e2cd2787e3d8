// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Rule feeds: parsing, sets, differences, the compact form (feed.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <jansson.h>

#include "feed.h"
#include "jsonguard.h"

void agd_feed_set_free(struct agd_feed_set *s)
{
	free(s->v);
	memset(s, 0, sizeof(*s));
}

int agd_feed_set_add(struct agd_feed_set *s, const struct ag_rule *r)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		struct ag_rule *v = realloc(s->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n] = *r;
	s->v[s->n].port = 0;
	s->v[s->n].slot = 0;
	s->n++;
	return 0;
}

int agd_feed_rule_cmp(const struct ag_rule *a, const struct ag_rule *b)
{
	int c;

	if (a->family != b->family)
		return a->family == AF_INET ? -1 : 1;
	c = memcmp(a->addr, b->addr, a->family == AF_INET ? 4 : 16);
	if (c)
		return c;
	return (int)a->plen - (int)b->plen;
}

static int cmp_qsort(const void *a, const void *b)
{
	return agd_feed_rule_cmp(a, b);
}

void agd_feed_set_normalize(struct agd_feed_set *s)
{
	size_t i, k = 0;

	if (s->n > 1)
		qsort(s->v, s->n, sizeof(s->v[0]), cmp_qsort);
	for (i = 0; i < s->n; i++)
		if (!k || agd_feed_rule_cmp(&s->v[k - 1], &s->v[i]))
			s->v[k++] = s->v[i];
	s->n = k;
}

bool agd_feed_set_has(const struct agd_feed_set *s, const struct ag_rule *r)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = agd_feed_rule_cmp(&s->v[mid], r);

		if (!c)
			return true;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/* One entry: a prefix of the wanted family (0: either). */
static int parse_one(const char *text, int family, struct ag_rule *r)
{
	memset(r, 0, sizeof(*r));
	if (ag_prefix_parse(text, r))
		return -EINVAL;
	if (family && r->family != family)
		return -EAFNOSUPPORT;
	return 0;
}

static int add_checked(struct agd_feed_set *s, const struct ag_rule *r, size_t max,
		       struct agd_err *oe)
{
	/* Duplicates count once: normalize when the limit seems reached, and
	 * a prefix already there is no new one. */
	if (max && s->n >= max) {
		agd_feed_set_normalize(s);
		if (s->n >= max && agd_feed_set_has(s, r))
			return 0;
		if (s->n >= max)
			return agd_errf(oe, -E2BIG, "the feed has more than %zu prefixes", max);
	}
	return agd_feed_set_add(s, r) ? agd_errf(oe, -ENOMEM, "out of memory") : 0;
}

static int parse_json(const char *buf, size_t len, size_t max, struct agd_feed_set *out,
		      struct agd_err *oe)
{
	json_error_t jerr;
	json_t *root = agd_json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr), *list, *item;
	size_t i;
	int err = 0;

	if (!root)
		return agd_errf(oe, -EINVAL, "not JSON: %s (line %d)", jerr.text, jerr.line);
	if (!json_is_object(root)) {
		err = agd_errf(oe, -EINVAL, "a JSON feed is an object with \"prefixes\"");
		goto out;
	}
	item = json_object_get(root, "creationTime");
	if (item && json_is_string(item))
		snprintf(out->created, sizeof(out->created), "%s", json_string_value(item));
	list = json_object_get(root, "prefixes");
	if (!json_is_array(list)) {
		err = agd_errf(oe, -EINVAL, "\"prefixes\" %s", list ? "is not an array" : "is missing");
		goto out;
	}
	json_array_foreach(list, i, item) {
		json_t *v4 = json_object_get(item, "ipv4Prefix"), *v6 = json_object_get(item, "ipv6Prefix");
		json_t *v = v4 ? v4 : v6;
		struct ag_rule r;
		int rc;

		if (!json_is_object(item) || !v || (v4 && v6)) {
			err = agd_errf(oe, -EINVAL,
				       "prefixes[%zu]: an object with ipv4Prefix or ipv6Prefix", i);
			goto out;
		}
		if (!json_is_string(v)) {
			err = agd_errf(oe, -EINVAL, "prefixes[%zu].%s: not a string", i,
				       v4 ? "ipv4Prefix" : "ipv6Prefix");
			goto out;
		}
		rc = parse_one(json_string_value(v), v4 ? AF_INET : AF_INET6, &r);
		if (rc) {
			err = agd_errf(oe, -EINVAL, "prefixes[%zu].%s: %s: %.64s", i,
				       v4 ? "ipv4Prefix" : "ipv6Prefix",
				       rc == -EAFNOSUPPORT ? "the other address family" :
							     ag_errmsg(),
				       json_string_value(v));
			goto out;
		}
		err = add_checked(out, &r, max, oe);
		if (err)
			goto out;
	}
out:
	json_decref(root);
	return err;
}

static bool blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static int parse_text(const char *buf, size_t len, size_t max, struct agd_feed_set *out,
		      struct agd_err *oe)
{
	size_t pos = 0, line = 0;

	while (pos < len) {
		const char *start = buf + pos, *nl = memchr(start, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - start) : len - pos, a = 0, b;
		char text[AG_PREFIX_STRLEN];
		const char *hash;
		struct ag_rule r;
		int err;

		pos += n + (nl != NULL);
		line++;
		hash = memchr(start, '#', n);
		if (hash)
			n = (size_t)(hash - start);
		while (a < n && blank(start[a]))
			a++;
		b = n;
		while (b > a && blank(start[b - 1]))
			b--;
		if (a == b)
			continue;
		if (b - a >= sizeof(text) || memchr(start + a, ' ', b - a) ||
		    memchr(start + a, '\t', b - a))
			return agd_errf(oe, -EINVAL, "line %zu: not one prefix", line);
		memcpy(text, start + a, b - a);
		text[b - a] = '\0';
		if (parse_one(text, 0, &r))
			return agd_errf(oe, -EINVAL, "line %zu: %s", line, ag_errmsg());
		err = add_checked(out, &r, max, oe);
		if (err)
			return err;
	}
	return 0;
}

int agd_feed_parse(const char *buf, size_t len, size_t max_prefixes, struct agd_feed_set *out,
		   struct agd_err *oe)
{
	size_t i = 0, start;
	int err;

	agd_feed_set_free(out);
	if (memchr(buf, '\0', len))
		return agd_errf(oe, -EINVAL, "the feed holds a NUL byte: not text");
	if (len >= 3 && !memcmp(buf, "\xef\xbb\xbf", 3))
		i = 3; /* a UTF-8 byte order mark */
	start = i;
	/* The first character says which format; both parse from the start,
	 * so that line numbers count every line. */
	while (i < len && (blank(buf[i]) || buf[i] == '\n'))
		i++;
	err = i < len && buf[i] == '{' ?
		      parse_json(buf + start, len - start, max_prefixes, out, oe) :
		      parse_text(buf + start, len - start, max_prefixes, out, oe);
	if (err) {
		agd_feed_set_free(out);
		return err;
	}
	agd_feed_set_normalize(out);
	return 0;
}

int agd_feed_diff(const struct agd_feed_set *old, const struct agd_feed_set *new,
		  struct agd_feed_set *add, struct agd_feed_set *del)
{
	size_t i = 0, j = 0;

	memset(add, 0, sizeof(*add));
	memset(del, 0, sizeof(*del));
	while (i < old->n || j < new->n) {
		int c = i == old->n ? 1 : j == new->n ? -1 : agd_feed_rule_cmp(&old->v[i], &new->v[j]);
		int err = 0;

		if (c < 0)
			err = agd_feed_set_add(del, &old->v[i++]);
		else if (c > 0)
			err = agd_feed_set_add(add, &new->v[j++]);
		else
			i++, j++;
		if (err) {
			agd_feed_set_free(add);
			agd_feed_set_free(del);
			return err;
		}
	}
	return 0;
}

static size_t addr_bytes(int family, unsigned int plen)
{
	size_t full = family == AF_INET ? 4 : 16, need = (plen + 7) / 8;

	return need < full ? need : full;
}

uint64_t agd_feed_digest(const struct agd_feed_set *s)
{
	uint64_t h = 1469598103934665603ULL;
	size_t i, k;

	for (i = 0; i < s->n; i++) {
		const struct ag_rule *r = &s->v[i];
		__u8 head[2] = { r->family == AF_INET ? 4 : 6, r->plen };

		for (k = 0; k < 2; k++)
			h = (h ^ head[k]) * 1099511628211ULL;
		for (k = 0; k < (r->family == AF_INET ? 4u : 16u); k++)
			h = (h ^ r->addr[k]) * 1099511628211ULL;
	}
	return h;
}

int agd_feed_encode(const struct agd_feed_set *s, size_t from, size_t count, uint8_t **out,
		    size_t *len)
{
	size_t i, n = 0, end;
	uint8_t *buf;

	if (from > s->n)
		from = s->n;
	end = count > s->n - from ? s->n : from + count;
	buf = malloc((end - from) * 18 + 1);

	if (!buf)
		return -ENOMEM;
	for (i = from; i < end; i++) {
		const struct ag_rule *r = &s->v[i];
		size_t b = addr_bytes(r->family, r->plen);

		buf[n++] = r->family == AF_INET ? 4 : 6;
		buf[n++] = r->plen;
		memcpy(buf + n, r->addr, b);
		n += b;
	}
	*out = buf;
	*len = n;
	return 0;
}

int agd_feed_decode(const uint8_t *buf, size_t len, struct agd_feed_set *s, struct agd_err *oe)
{
	size_t pos = 0;

	while (pos < len) {
		struct ag_rule r;
		size_t b;

		memset(&r, 0, sizeof(r));
		if (len - pos < 2 || (buf[pos] != 4 && buf[pos] != 6))
			return agd_errf(oe, -EINVAL, "damaged prefix record at byte %zu", pos);
		r.family = buf[pos] == 4 ? AF_INET : AF_INET6;
		r.plen = buf[pos + 1];
		if (r.plen > (r.family == AF_INET ? 32 : 128))
			return agd_errf(oe, -EINVAL, "prefix length %u at byte %zu", r.plen, pos);
		b = addr_bytes(r.family, r.plen);
		pos += 2;
		if (len - pos < b)
			return agd_errf(oe, -EINVAL, "damaged prefix record at byte %zu", pos - 2);
		memcpy(r.addr, buf + pos, b);
		pos += b;
		/* Host bits must be clear, as the parser made them. */
		if (r.plen % 8 && b && (r.addr[b - 1] & (0xff >> (r.plen % 8))))
			return agd_errf(oe, -EINVAL, "prefix with host bits set at byte %zu",
					pos - b - 2);
		if (agd_feed_set_add(s, &r))
			return agd_errf(oe, -ENOMEM, "out of memory");
	}
	return 0;
}

/* ---- the stored record ---------------------------------------------------------- */

struct feed_rec_head {
	uint32_t version;
	uint32_t n;
	uint64_t interval_ms, applied_ms, digest;
	uint16_t source_len, etag_len, lastmod_len, created_len;
};
_Static_assert(sizeof(struct feed_rec_head) == 40, "feed record head is on-disk ABI");

int agd_feed_rec_encode(const struct agd_feed_meta *m, const struct agd_feed_set *s, void **out,
			size_t *len)
{
	struct feed_rec_head h = {
		.version = AGD_FEED_REC_VERSION, .n = (uint32_t)s->n,
		.interval_ms = m->interval_ms, .applied_ms = m->applied_ms, .digest = m->digest,
		.source_len = (uint16_t)strlen(m->source), .etag_len = (uint16_t)strlen(m->etag),
		.lastmod_len = (uint16_t)strlen(m->last_modified),
		.created_len = (uint16_t)strlen(s->created),
	};
	size_t strs = (size_t)h.source_len + h.etag_len + h.lastmod_len + h.created_len, enc_len;
	uint8_t *enc, *buf;
	int err = agd_feed_encode(s, 0, s->n, &enc, &enc_len);

	if (err)
		return err;
	buf = malloc(sizeof(h) + strs + enc_len);
	if (!buf) {
		free(enc);
		return -ENOMEM;
	}
	memcpy(buf, &h, sizeof(h));
	*len = sizeof(h);
	memcpy(buf + *len, m->source, h.source_len), *len += h.source_len;
	memcpy(buf + *len, m->etag, h.etag_len), *len += h.etag_len;
	memcpy(buf + *len, m->last_modified, h.lastmod_len), *len += h.lastmod_len;
	memcpy(buf + *len, s->created, h.created_len), *len += h.created_len;
	memcpy(buf + *len, enc, enc_len), *len += enc_len;
	free(enc);
	*out = buf;
	return 0;
}

static int take_str(const uint8_t *buf, size_t len, size_t *pos, size_t n, char *dst, size_t cap)
{
	if (n >= cap || len - *pos < n || memchr(buf + *pos, 0, n))
		return -1;
	memcpy(dst, buf + *pos, n);
	dst[n] = 0;
	*pos += n;
	return 0;
}

int agd_feed_rec_decode(const void *vbuf, size_t len, struct agd_feed_meta *m,
			struct agd_feed_set *s, struct agd_err *oe)
{
	const uint8_t *buf = vbuf;
	struct feed_rec_head h;
	size_t pos = sizeof(h);
	int err;

	memset(m, 0, sizeof(*m));
	agd_feed_set_free(s);
	if (len < sizeof(h))
		return agd_errf(oe, -EUCLEAN, "feed record of %zu bytes", len);
	memcpy(&h, buf, sizeof(h));
	if (h.version != AGD_FEED_REC_VERSION)
		return agd_errf(oe, -EPROTO, "feed record of version %u (this agentgated: %u)",
				h.version, AGD_FEED_REC_VERSION);
	if (take_str(buf, len, &pos, h.source_len, m->source, sizeof(m->source)) ||
	    take_str(buf, len, &pos, h.etag_len, m->etag, sizeof(m->etag)) ||
	    take_str(buf, len, &pos, h.lastmod_len, m->last_modified, sizeof(m->last_modified)) ||
	    take_str(buf, len, &pos, h.created_len, s->created, sizeof(s->created)))
		return agd_errf(oe, -EUCLEAN, "feed record with a damaged string");
	m->interval_ms = h.interval_ms;
	m->applied_ms = h.applied_ms;
	m->digest = h.digest;
	err = agd_feed_decode(buf + pos, len - pos, s, oe);
	if (!err && s->n != h.n)
		err = agd_errf(oe, -EUCLEAN, "feed record holds %zu prefixes, its head says %u",
			       s->n, h.n);
	if (!err) {
		size_t n = s->n;

		agd_feed_set_normalize(s);
		if (s->n != n || agd_feed_digest(s) != h.digest)
			err = agd_errf(oe, -EUCLEAN, "feed record whose prefixes do not match "
						     "its digest");
	}
	if (err) {
		if (err != -ENOMEM)
			err = -EUCLEAN;
		if (oe)
			oe->code = err;
		agd_feed_set_free(s);
		memset(m, 0, sizeof(*m));
	}
	return err;
}
