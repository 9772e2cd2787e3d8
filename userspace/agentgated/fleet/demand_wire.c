// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Demand sharing's messages and the owners' merge (demand_wire.h). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "demand_wire.h"

static uint64_t fnv(const char *s, uint64_t h)
{
	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

unsigned int agd_dem_group(const char *agent)
{
	return (unsigned int)(fnv(agent, 1469598103934665603ULL) % AGD_DEM_GROUPS);
}

/* ---- the wire ---------------------------------------------------------------------- */

struct wbuf {
	uint8_t *b;
	size_t n, cap;
	bool oom;
};

static void put(struct wbuf *w, const void *p, size_t len)
{
	if (w->oom)
		return;
	if (w->n + len > w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 256;
		uint8_t *g;

		while (cap < w->n + len)
			cap *= 2;
		g = realloc(w->b, cap);
		if (!g) {
			w->oom = true;
			return;
		}
		w->b = g;
		w->cap = cap;
	}
	memcpy(w->b + w->n, p, len);
	w->n += len;
}

static void put_le(struct wbuf *w, uint64_t v, size_t bytes)
{
	uint8_t b[8];
	size_t i;

	for (i = 0; i < bytes; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	put(w, b, bytes);
}

static void put_str(struct wbuf *w, const char *s, size_t max)
{
	size_t len = strnlen(s, max);
	uint8_t l = (uint8_t)len;

	put(w, &l, 1);
	put(w, s, len);
}

static void put_f32(struct wbuf *w, double v)
{
	float f = isfinite(v) && v > 0 ? (float)v : 0;
	uint32_t u;

	memcpy(&u, &f, 4);
	put_le(w, u, 4);
}

int agd_dem_encode(const struct agd_dem_head *h, const struct agd_dem_entry *e, size_t n,
		   uint8_t **out, size_t *len)
{
	struct wbuf w = { 0 };
	uint8_t kind = (uint8_t)h->kind;
	size_t i;

	put(&w, "AGD", 3);
	put(&w, &kind, 1);
	put_str(&w, h->node, AGD_DEM_NODE_MAX);
	put_le(&w, h->epoch, 8);
	put_le(&w, h->ms, 8);
	put_le(&w, h->group, 2);
	put_le(&w, n, 4);
	for (i = 0; i < n; i++) {
		put_str(&w, e[i].agent, AG_NAME_MAX);
		if (h->kind == AGD_DEM_REPORT) {
			uint64_t v = e[i].counter;

			do { /* LEB128 */
				uint8_t b = (uint8_t)(v & 0x7f);

				v >>= 7;
				if (v)
					b |= 0x80;
				put(&w, &b, 1);
			} while (v);
			put_f32(&w, e[i].rate);
		} else {
			put_f32(&w, e[i].rate);
			put_le(&w, e[i].hosts > 65535 ? 65535 : e[i].hosts, 2);
		}
	}
	if (w.oom) {
		free(w.b);
		return -ENOMEM;
	}
	*out = w.b;
	*len = w.n;
	return 0;
}

struct rbuf {
	const uint8_t *b;
	size_t n, pos;
	bool bad;
};

static uint64_t get_le(struct rbuf *r, size_t bytes)
{
	uint64_t v = 0;
	size_t i;

	if (r->bad || r->n - r->pos < bytes) {
		r->bad = true;
		return 0;
	}
	for (i = 0; i < bytes; i++)
		v |= (uint64_t)r->b[r->pos + i] << (8 * i);
	r->pos += bytes;
	return v;
}

static void get_str(struct rbuf *r, char *dst, size_t max)
{
	size_t len = (size_t)get_le(r, 1);

	if (r->bad || len > max || r->n - r->pos < len || memchr(r->b + r->pos, 0, len)) {
		r->bad = true;
		dst[0] = 0;
		return;
	}
	memcpy(dst, r->b + r->pos, len);
	dst[len] = 0;
	r->pos += len;
}

static double get_f32(struct rbuf *r)
{
	uint32_t u = (uint32_t)get_le(r, 4);
	float f;

	memcpy(&f, &u, 4);
	if (!isfinite(f) || f < 0) {
		r->bad = true;
		return 0;
	}
	return f;
}

int agd_dem_decode(const uint8_t *buf, size_t len, struct agd_dem_head *h,
		   struct agd_dem_entry **e, size_t *n)
{
	struct rbuf r = { .b = buf, .n = len };
	uint64_t count;
	size_t i;

	*e = NULL;
	*n = 0;
	memset(h, 0, sizeof(*h));
	if (len < 4 || memcmp(buf, "AGD", 3) || (buf[3] != AGD_DEM_REPORT && buf[3] != AGD_DEM_TOTALS))
		return -EINVAL;
	h->kind = buf[3];
	r.pos = 4;
	get_str(&r, h->node, AGD_DEM_NODE_MAX);
	h->epoch = get_le(&r, 8);
	h->ms = get_le(&r, 8);
	h->group = (unsigned int)get_le(&r, 2);
	count = get_le(&r, 4);
	/* Every entry takes 6 bytes at least: a count the rest cannot hold is damage. */
	if (r.bad || !h->node[0] || h->group >= AGD_DEM_GROUPS || count > (len - r.pos) / 6)
		return -EINVAL;
	*e = calloc(count ? count : 1, sizeof(**e));
	if (!*e)
		return -ENOMEM;
	for (i = 0; i < count && !r.bad; i++) {
		struct agd_dem_entry *x = &(*e)[i];

		get_str(&r, x->agent, AG_NAME_MAX);
		if (!x->agent[0] || agd_dem_group(x->agent) != h->group)
			r.bad = true;
		if (h->kind == AGD_DEM_REPORT) {
			uint64_t v = 0;
			unsigned int shift = 0;
			uint8_t b;

			do {
				b = (uint8_t)get_le(&r, 1);
				if (shift > 63)
					r.bad = true;
				else
					v |= (uint64_t)(b & 0x7f) << shift;
				shift += 7;
			} while ((b & 0x80) && !r.bad);
			x->counter = v;
			x->rate = get_f32(&r);
		} else {
			x->rate = get_f32(&r);
			x->hosts = (unsigned int)get_le(&r, 2);
		}
	}
	if (r.bad || r.pos != len) {
		free(*e);
		*e = NULL;
		return -EINVAL;
	}
	*n = (size_t)count;
	return 0;
}

/* ---- the owners' merge --------------------------------------------------------------- */

struct slot {
	struct slot *next;
	char node[AGD_DEM_NODE_MAX + 1];
	char agent[AG_NAME_MAX + 1];
	unsigned int group;
	uint64_t epoch, counter, recv_ms;
	double rate;
};

#define AGG_BUCKETS 65536

struct agd_dem_agg {
	struct slot **b;
	size_t size;
};

struct agd_dem_agg *agd_dem_agg_new(void)
{
	struct agd_dem_agg *a = calloc(1, sizeof(*a));

	if (a && !(a->b = calloc(AGG_BUCKETS, sizeof(*a->b)))) {
		free(a);
		a = NULL;
	}
	return a;
}

void agd_dem_agg_free(struct agd_dem_agg *a)
{
	size_t i;

	if (!a)
		return;
	for (i = 0; i < AGG_BUCKETS; i++)
		while (a->b[i]) {
			struct slot *s = a->b[i];

			a->b[i] = s->next;
			free(s);
		}
	free(a->b);
	free(a);
}

size_t agd_dem_agg_size(const struct agd_dem_agg *a)
{
	return a ? a->size : 0;
}

static struct slot **find(struct agd_dem_agg *a, const char *node, const char *agent)
{
	uint64_t h = fnv(agent, fnv(node, 1469598103934665603ULL) ^ 0xff);
	struct slot **pp = &a->b[h % AGG_BUCKETS];

	for (; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->agent, agent) && !strcmp((*pp)->node, node))
			break;
	return pp;
}

int agd_dem_agg_take(struct agd_dem_agg *a, const struct agd_dem_head *h,
		     const struct agd_dem_entry *e, size_t n, uint64_t now_ms)
{
	size_t i;

	if (h->kind != AGD_DEM_REPORT)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		struct slot **pp = find(a, h->node, e[i].agent), *s = *pp;

		if (!s) {
			s = calloc(1, sizeof(*s));
			if (!s)
				return -ENOMEM;
			memcpy(s->node, h->node, sizeof(s->node));
			memcpy(s->agent, e[i].agent, sizeof(s->agent));
			s->group = h->group;
			*pp = s;
			a->size++;
		} else if (h->epoch < s->epoch ||
			   (h->epoch == s->epoch && e[i].counter <= s->counter)) {
			continue; /* late, repeated or reordered: never back */
		}
		s->epoch = h->epoch;
		s->counter = e[i].counter;
		s->rate = e[i].rate;
		s->recv_ms = now_ms;
	}
	return 0;
}

void agd_dem_agg_expire(struct agd_dem_agg *a, uint64_t now_ms, uint64_t forget_ms)
{
	size_t i;

	for (i = 0; i < AGG_BUCKETS; i++) {
		struct slot **pp = &a->b[i];

		while (*pp) {
			struct slot *s = *pp;

			if (now_ms > s->recv_ms + forget_ms) {
				*pp = s->next;
				free(s);
				a->size--;
			} else {
				pp = &s->next;
			}
		}
	}
}

static int by_agent(const void *x, const void *y)
{
	const struct slot *a = *(const struct slot *const *)x, *b = *(const struct slot *const *)y;

	return strcmp(a->agent, b->agent);
}

int agd_dem_agg_totals(struct agd_dem_agg *a, unsigned int group, uint64_t now_ms,
		       uint64_t stale_ms, struct agd_dem_entry **out, size_t *n)
{
	struct slot **v = NULL;
	size_t m = 0, cap = 0, i, k = 0;

	*out = NULL;
	*n = 0;
	for (i = 0; i < AGG_BUCKETS; i++) {
		struct slot *s;

		for (s = a->b[i]; s; s = s->next) {
			if (s->group != group || s->rate <= 0 || now_ms > s->recv_ms + stale_ms)
				continue;
			if (m == cap) {
				struct slot **g;

				cap = cap ? cap * 2 : 256;
				g = realloc(v, cap * sizeof(*v));
				if (!g) {
					free(v);
					return -ENOMEM;
				}
				v = g;
			}
			v[m++] = s;
		}
	}
	if (m)
		qsort(v, m, sizeof(*v), by_agent);
	*out = calloc(m ? m : 1, sizeof(**out));
	if (!*out) {
		free(v);
		return -ENOMEM;
	}
	for (i = 0; i < m; i++) {
		if (!k || strcmp((*out)[k - 1].agent, v[i]->agent))
			memcpy((*out)[k++].agent, v[i]->agent, sizeof(v[i]->agent));
		(*out)[k - 1].rate += v[i]->rate;
		(*out)[k - 1].hosts++;
	}
	free(v);
	*n = k;
	return 0;
}

double agd_dem_share(double own, double others, double floor)
{
	if (!(others > 0))
		return 1;
	if (!(own > 0))
		return floor;
	return fmax(floor, fmin(1, own / (own + others)));
}
