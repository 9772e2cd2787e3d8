// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Demand sharing's messages and the owners' merge (demand_wire.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "demand_wire.h"

static uint64_t fnv(const char *s, uint64_t h)
{
	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

uint64_t agd_dem_hash(const char *s)
{
	return fnv(s, 1469598103934665603ULL);
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

static void put_leb(struct wbuf *w, uint64_t v)
{
	do {
		uint8_t b = (uint8_t)(v & 0x7f);

		v >>= 7;
		if (v)
			b |= 0x80;
		put(w, &b, 1);
	} while (v);
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
			put_leb(&w, e[i].counter);
			put_f32(&w, e[i].rate);
		} else if (h->kind == AGD_DEM_QUOTAS) {
			put_leb(&w, e[i].q_idx);
			put_leb(&w, e[i].q_used);
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

static uint64_t get_leb(struct rbuf *r)
{
	uint64_t v = 0;
	unsigned int shift = 0;
	uint8_t b;

	do {
		b = (uint8_t)get_le(r, 1);
		if (shift > 63)
			r->bad = true;
		else
			v |= (uint64_t)(b & 0x7f) << shift;
		shift += 7;
	} while ((b & 0x80) && !r->bad);
	return v;
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
	if (len < 4 || memcmp(buf, "AGD", 3) ||
	    (buf[3] != AGD_DEM_REPORT && buf[3] != AGD_DEM_TOTALS && buf[3] != AGD_DEM_QUOTAS))
		return -EINVAL;
	h->kind = buf[3];
	r.pos = 4;
	get_str(&r, h->node, AGD_DEM_NODE_MAX);
	h->epoch = get_le(&r, 8);
	h->ms = get_le(&r, 8);
	h->group = (unsigned int)get_le(&r, 2);
	count = get_le(&r, 4);
	/* Every entry takes 6 bytes at least: a count the rest cannot hold is damage. */
	if (r.bad || !h->node[0] || h->group >= AGD_DEM_GROUPS || count > (len - r.pos) / 3 ||
	    (h->kind != AGD_DEM_QUOTAS && count > (len - r.pos) / 6) ||
	    (h->kind == AGD_DEM_QUOTAS && h->group))
		return -EINVAL;
	*e = calloc(count ? count : 1, sizeof(**e));
	if (!*e)
		return -ENOMEM;
	for (i = 0; i < count && !r.bad; i++) {
		struct agd_dem_entry *x = &(*e)[i];

		get_str(&r, x->agent, AG_NAME_MAX);
		/* Quotas: every group's names in one message. */
		if (!x->agent[0] ||
		    (h->kind != AGD_DEM_QUOTAS && agd_dem_group(x->agent) != h->group))
			r.bad = true;
		if (h->kind == AGD_DEM_REPORT) {
			x->counter = get_leb(&r);
			x->rate = get_f32(&r);
		} else if (h->kind == AGD_DEM_QUOTAS) {
			x->q_idx = get_leb(&r);
			x->q_used = get_leb(&r);
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

/* ---- the owners' merge ---------------------------------------------------------------
 *
 * Per group two open tables: the agents (name -> the sum of the counted
 * hosts' rates) and the slots (host, agent -> the newest report). A slot
 * holds its agent's index, and whether its rate is in the agent's sum:
 * a newer report replaces its part of the sum, a slot gone stale takes it
 * out (one pass over the group's slots when its totals are made). Hashes
 * are kept beside the keys, so a probe compares strings only on a match.
 */

struct agent_rec {
	uint64_t hash;
	char name[AG_NAME_MAX + 1];
	double sum;
	unsigned int hosts;
};

struct slot {
	uint64_t hash;
	uint32_t agent;   /* index into the group's agents */
	uint32_t node;    /* index into the table's nodes */
	uint64_t epoch, counter, recv_ms;
	double rate;
	bool counted;
	bool used;
};

struct gtab {
	struct agent_rec *agents; /* open addressing, cap_a a power of two */
	uint32_t *aslot;          /* index + 1 into agents, 0 empty */
	size_t n_agents, cap_a;
	struct slot *slots;       /* open addressing */
	size_t n_slots, cap_s;
};

struct agd_dem_agg {
	struct gtab g[AGD_DEM_GROUPS];
	char (*nodes)[AGD_DEM_NODE_MAX + 1];
	uint64_t *node_hash;
	size_t n_nodes, cap_nodes;
};

struct agd_dem_agg *agd_dem_agg_new(void)
{
	return calloc(1, sizeof(struct agd_dem_agg));
}

void agd_dem_agg_free(struct agd_dem_agg *a)
{
	unsigned int g;

	if (!a)
		return;
	for (g = 0; g < AGD_DEM_GROUPS; g++) {
		free(a->g[g].agents);
		free(a->g[g].aslot);
		free(a->g[g].slots);
	}
	free(a->nodes);
	free(a->node_hash);
	free(a);
}

size_t agd_dem_agg_size(const struct agd_dem_agg *a)
{
	size_t n = 0;
	unsigned int g;

	for (g = 0; a && g < AGD_DEM_GROUPS; g++)
		n += a->g[g].n_slots;
	return n;
}

/* The index of node (added when new); -1 without memory. */
static long node_index(struct agd_dem_agg *a, const char *node)
{
	uint64_t h = fnv(node, 1469598103934665603ULL);
	size_t i;

	for (i = 0; i < a->n_nodes; i++) /* hosts: hundreds, looked up once a report */
		if (a->node_hash[i] == h && !strcmp(a->nodes[i], node))
			return (long)i;
	if (a->n_nodes == a->cap_nodes) {
		size_t cap = a->cap_nodes ? a->cap_nodes * 2 : 64;
		void *n1 = realloc(a->nodes, cap * sizeof(*a->nodes));
		void *n2 = n1 ? realloc(a->node_hash, cap * sizeof(*a->node_hash)) : NULL;

		if (n1)
			a->nodes = n1;
		if (!n2)
			return -1;
		a->node_hash = n2;
		a->cap_nodes = cap;
	}
	snprintf(a->nodes[a->n_nodes], sizeof(a->nodes[0]), "%s", node);
	a->node_hash[a->n_nodes] = h;
	return (long)a->n_nodes++;
}

static int agents_grow(struct gtab *t)
{
	size_t cap = t->cap_a ? t->cap_a * 2 : 1024, i;
	uint32_t *idx = calloc(cap, sizeof(*idx));
	struct agent_rec *v = realloc(t->agents, cap / 2 * sizeof(*v));

	if (!idx || !v) {
		free(idx);
		if (v)
			t->agents = v;
		return -ENOMEM;
	}
	t->agents = v;
	for (i = 0; i < t->n_agents; i++) {
		size_t k = v[i].hash & (cap - 1);

		while (idx[k])
			k = (k + 1) & (cap - 1);
		idx[k] = (uint32_t)i + 1;
	}
	free(t->aslot);
	t->aslot = idx;
	t->cap_a = cap;
	return 0;
}

/* The index of agent in t (added when new); -1 without memory. */
static long agent_index(struct gtab *t, const char *name, uint64_t h)
{
	size_t k;

	if ((t->n_agents + 1) * 2 > t->cap_a && agents_grow(t))
		return -1;
	for (k = h & (t->cap_a - 1); t->aslot[k]; k = (k + 1) & (t->cap_a - 1)) {
		struct agent_rec *r = &t->agents[t->aslot[k] - 1];

		if (r->hash == h && !strcmp(r->name, name))
			return (long)(t->aslot[k] - 1);
	}
	memset(&t->agents[t->n_agents], 0, sizeof(t->agents[0]));
	t->agents[t->n_agents].hash = h;
	snprintf(t->agents[t->n_agents].name, sizeof(t->agents[0].name), "%s", name);
	t->aslot[k] = (uint32_t)t->n_agents + 1;
	return (long)t->n_agents++;
}

static int slots_grow(struct gtab *t)
{
	size_t cap = t->cap_s ? t->cap_s * 2 : 2048, i;
	struct slot *v = calloc(cap, sizeof(*v));

	if (!v)
		return -ENOMEM;
	for (i = 0; i < t->cap_s; i++) {
		size_t k;

		if (!t->slots[i].used)
			continue;
		for (k = t->slots[i].hash & (cap - 1); v[k].used; k = (k + 1) & (cap - 1))
			;
		v[k] = t->slots[i];
	}
	free(t->slots);
	t->slots = v;
	t->cap_s = cap;
	return 0;
}

static void uncount(struct gtab *t, struct slot *s)
{
	if (!s->counted)
		return;
	t->agents[s->agent].sum -= s->rate;
	t->agents[s->agent].hosts--;
	if (!t->agents[s->agent].hosts)
		t->agents[s->agent].sum = 0; /* no rounding left behind */
	s->counted = false;
}

int agd_dem_agg_take(struct agd_dem_agg *a, const struct agd_dem_head *h,
		     const struct agd_dem_entry *e, size_t n, uint64_t now_ms)
{
	struct gtab *t;
	long node;
	size_t i;

	if (h->kind != AGD_DEM_REPORT || h->group >= AGD_DEM_GROUPS)
		return -EINVAL;
	t = &a->g[h->group];
	node = node_index(a, h->node);
	if (node < 0)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		uint64_t ah = fnv(e[i].agent, 1469598103934665603ULL);
		uint64_t sh = ah ^ (a->node_hash[node] * 0x9e3779b97f4a7c15ULL);
		struct slot *s = NULL;
		size_t k;

		if ((t->n_slots + 1) * 2 > t->cap_s && slots_grow(t))
			return -ENOMEM;
		for (k = sh & (t->cap_s - 1); t->slots[k].used; k = (k + 1) & (t->cap_s - 1))
			if (t->slots[k].hash == sh && t->slots[k].node == (uint32_t)node &&
			    !strcmp(t->agents[t->slots[k].agent].name, e[i].agent)) {
				s = &t->slots[k];
				break;
			}
		if (!s) {
			long ai = agent_index(t, e[i].agent, ah);

			if (ai < 0)
				return -ENOMEM;
			s = &t->slots[k];
			memset(s, 0, sizeof(*s));
			s->used = true;
			s->hash = sh;
			s->node = (uint32_t)node;
			s->agent = (uint32_t)ai;
			t->n_slots++;
		} else if (h->epoch < s->epoch ||
			   (h->epoch == s->epoch && e[i].counter <= s->counter)) {
			continue; /* late, repeated or reordered: never back */
		}
		uncount(t, s);
		s->epoch = h->epoch;
		s->counter = e[i].counter;
		s->rate = e[i].rate;
		s->recv_ms = now_ms;
		if (s->rate > 0) {
			t->agents[s->agent].sum += s->rate;
			t->agents[s->agent].hosts++;
			s->counted = true;
		}
	}
	return 0;
}

/* Rebuilds a group's slot table without the slots forgotten. */
static void rehash_slots(struct gtab *t)
{
	struct slot *old = t->slots;
	size_t cap = t->cap_s, i;

	t->slots = calloc(cap, sizeof(*t->slots));
	if (!t->slots) { /* keep the old table: forgetting can wait */
		t->slots = old;
		return;
	}
	for (i = 0; i < cap; i++) {
		size_t k;

		if (!old[i].used)
			continue;
		for (k = old[i].hash & (cap - 1); t->slots[k].used; k = (k + 1) & (cap - 1))
			;
		t->slots[k] = old[i];
	}
	free(old);
}

/* Keeps the agents some slot still holds (a group's agents come and go:
 * the table must not grow with every name ever reported). */
static void compact_agents(struct gtab *t)
{
	uint32_t *map = malloc((t->n_agents ? t->n_agents : 1) * sizeof(*map));
	size_t i, n = 0;

	if (!map)
		return; /* kept as they are: compacting can wait */
	for (i = 0; i < t->n_agents; i++)
		map[i] = UINT32_MAX;
	for (i = 0; i < t->cap_s; i++) /* which are held */
		if (t->slots[i].used)
			map[t->slots[i].agent] = 0;
	for (i = 0; i < t->n_agents; i++) /* in order: n never passes i */
		if (map[i] != UINT32_MAX) {
			map[i] = (uint32_t)n;
			t->agents[n++] = t->agents[i];
		}
	for (i = 0; i < t->cap_s; i++)
		if (t->slots[i].used)
			t->slots[i].agent = map[t->slots[i].agent];
	free(map);
	t->n_agents = n;
	memset(t->aslot, 0, t->cap_a * sizeof(*t->aslot));
	for (i = 0; i < n; i++) {
		size_t k = t->agents[i].hash & (t->cap_a - 1);

		while (t->aslot[k])
			k = (k + 1) & (t->cap_a - 1);
		t->aslot[k] = (uint32_t)i + 1;
	}
}

void agd_dem_agg_expire(struct agd_dem_agg *a, uint64_t now_ms, uint64_t forget_ms)
{
	unsigned int g;

	for (g = 0; g < AGD_DEM_GROUPS; g++) {
		struct gtab *t = &a->g[g];
		size_t i, gone = 0;

		for (i = 0; i < t->cap_s; i++) {
			struct slot *s = &t->slots[i];

			if (!s->used || now_ms <= s->recv_ms + forget_ms)
				continue;
			uncount(t, s);
			s->used = false;
			t->n_slots--;
			gone++;
		}
		if (gone) {
			rehash_slots(t); /* open addressing: no holes left in a chain */
			compact_agents(t);
		}
	}
}

int agd_dem_agg_totals(struct agd_dem_agg *a, unsigned int group, uint64_t now_ms,
		       uint64_t stale_ms, struct agd_dem_entry **out, size_t *n)
{
	struct gtab *t;
	size_t i, k = 0;

	*out = NULL;
	*n = 0;
	if (group >= AGD_DEM_GROUPS)
		return -EINVAL;
	t = &a->g[group];
	/* Hosts gone quiet leave the sums. */
	for (i = 0; i < t->cap_s; i++)
		if (t->slots[i].used && t->slots[i].counted && now_ms > t->slots[i].recv_ms + stale_ms)
			uncount(t, &t->slots[i]);
	*out = calloc(t->n_agents ? t->n_agents : 1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	for (i = 0; i < t->n_agents; i++) {
		if (!t->agents[i].hosts || !(t->agents[i].sum > 0))
			continue;
		memcpy((*out)[k].agent, t->agents[i].name, sizeof(t->agents[i].name));
		(*out)[k].rate = t->agents[i].sum;
		(*out)[k].hosts = t->agents[i].hosts;
		k++;
	}
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
