// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Rating intake limits per user and per API token (intake.h). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "intake.h"

#define BUCKETS 65536 /* a power of two */

struct slot {
	struct slot *next;
	double tat; /* GCRA: theoretical arrival time, seconds */
	char key[2 + AGD_RATING_USER_MAX + 1]; /* 'u' user or 't' token subject */
};

struct agd_intake {
	pthread_mutex_t lock;
	struct slot **tab;
	size_t n;
	double per_user, per_token;
	double forgot_at; /* when full buckets were last forgotten */
	double next_free; /* then: the earliest time a kept bucket is full again */
	uint64_t refused[3];
};

static size_t hash(const char *s)
{
	size_t h = 1469598103934665603ULL;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h & (BUCKETS - 1);
}

struct agd_intake *agd_intake_new(void)
{
	struct agd_intake *in = calloc(1, sizeof(*in));

	if (!in)
		return NULL;
	in->tab = calloc(BUCKETS, sizeof(*in->tab));
	if (!in->tab) {
		free(in);
		return NULL;
	}
	pthread_mutex_init(&in->lock, NULL);
	return in;
}

void agd_intake_free(struct agd_intake *in)
{
	size_t i;

	if (!in)
		return;
	for (i = 0; i < BUCKETS; i++)
		while (in->tab[i]) {
			struct slot *s = in->tab[i];

			in->tab[i] = s->next;
			free(s);
		}
	free(in->tab);
	pthread_mutex_destroy(&in->lock);
	free(in);
}

void agd_intake_set(struct agd_intake *in, double per_user, double per_token)
{
	pthread_mutex_lock(&in->lock);
	in->per_user = per_user;
	in->per_token = per_token;
	pthread_mutex_unlock(&in->lock);
}

static double burst_of(double rate)
{
	return rate * 10 >= 1 ? rate * 10 : 1;
}

/* Forgets the buckets that are full again (tat in the past): they hold
 * nothing a new bucket would not. */
static void forget_full(struct agd_intake *in, double now)
{
	size_t i;

	in->next_free = 0;
	for (i = 0; i < BUCKETS; i++) {
		struct slot **pp = &in->tab[i];

		while (*pp) {
			struct slot *s = *pp;

			if (s->tat <= now) {
				*pp = s->next;
				free(s);
				in->n--;
			} else {
				if (!in->next_free || s->tat < in->next_free)
					in->next_free = s->tat;
				pp = &s->next;
			}
		}
	}
}

/* Whether k more users or tokens can be tracked: with the table full,
 * full buckets are forgotten first, at most once a second (a scan of the
 * whole table). */
static bool room(struct agd_intake *in, double now, size_t k)
{
	if (in->n + k > AGD_INTAKE_MAX && (now - in->forgot_at >= 1 || now < in->forgot_at)) {
		in->forgot_at = now;
		forget_full(in, now);
	}
	return in->n + k <= AGD_INTAKE_MAX;
}

static struct slot *find(struct agd_intake *in, const char *key, bool add, double now)
{
	size_t h = hash(key);
	struct slot *s;

	for (s = in->tab[h]; s; s = s->next)
		if (!strcmp(s->key, key))
			return s;
	if (!add || !room(in, now, 1))
		return NULL; /* every tracked one is limited: refuse rather than forget */
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	snprintf(s->key, sizeof(s->key), "%s", key);
	s->tat = now;
	s->next = in->tab[h];
	in->tab[h] = s;
	in->n++;
	return s;
}

/* Seconds until cost more fits (0: it fits now). */
static double wait_for(const struct slot *s, double cost, double rate, double now)
{
	double base = s && s->tat > now ? s->tat : now;
	double tau = burst_of(rate) / rate;

	return base + cost / rate - now > tau ? base + cost / rate - now - tau : 0;
}

static int by_key(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

enum agd_intake_by agd_intake_charge(struct agd_intake *in, const struct agd_rating *items,
				     size_t n, const char *token_subject, uint64_t now_ns,
				     unsigned int *retry_s, char *who, size_t who_len)
{
	double now = (double)now_ns / 1e9, worst = 0;
	enum agd_intake_by by = AGD_INTAKE_OK;
	const char **users = NULL;
	char key[sizeof(((struct slot *)0)->key)];
	size_t i, k = 0, fresh = 0; /* users and token not tracked yet */

	pthread_mutex_lock(&in->lock);
	if (in->per_user > 0 && n) {
		users = calloc(n, sizeof(*users));
		if (!users) { /* cannot be checked: refused, never let through */
			worst = 1;
			by = AGD_INTAKE_USER;
			snprintf(who, who_len, "a user (no memory to check)");
		}
		for (i = 0; users && i < n; i++)
			if (items[i].user[0])
				users[k++] = items[i].user;
		if (k > 1)
			qsort(users, k, sizeof(*users), by_key);
	}
	/* Each distinct user, with the ratings it has in the request. */
	for (i = 0; i < k;) {
		size_t j = i;
		struct slot *s;
		double w;

		while (j < k && !strcmp(users[j], users[i]))
			j++;
		snprintf(key, sizeof(key), "u%s", users[i]);
		s = find(in, key, false, now);
		w = wait_for(s, (double)(j - i), in->per_user, now);
		fresh += !s;
		if (w > worst || (j - i) > burst_of(in->per_user)) {
			worst = w > worst ? w : worst;
			by = AGD_INTAKE_USER;
			snprintf(who, who_len, "user '%s'", users[i]);
		}
		i = j;
	}
	/* Tokens without a subject (no "sub", or "") are one bucket "t": a
	 * missing sub does not escape the limit. */
	if (!by && in->per_token > 0 && token_subject) {
		struct slot *s;
		double w;

		snprintf(key, sizeof(key), "t%s", token_subject);
		s = find(in, key, false, now);
		w = wait_for(s, (double)n, in->per_token, now);
		fresh += !s;
		if (w > 0 || n > burst_of(in->per_token)) {
			worst = w;
			by = AGD_INTAKE_TOKEN;
			if (token_subject[0])
				snprintf(who, who_len, "token of '%s'", token_subject);
			else
				snprintf(who, who_len, "tokens without a subject ('sub')");
		}
	}
	if (!by && fresh && !room(in, now, fresh)) {
		/* Those not tracked yet cannot all be: refused, never let
		 * through uncharged, until the first kept bucket is full again
		 * (as the last scan of the table found it). */
		worst = in->next_free > now ? in->next_free - now : 1;
		by = k ? AGD_INTAKE_USER : AGD_INTAKE_TOKEN;
		snprintf(who, who_len, "%s", k ? "new users" : "a new token");
	}
	if (!by) { /* everyone fits: charge them all */
		for (i = 0; i < k; i++) {
			struct slot *s;

			snprintf(key, sizeof(key), "u%s", users[i]);
			s = find(in, key, true, now);
			if (s)
				s->tat = (s->tat > now ? s->tat : now) + 1 / in->per_user;
		}
		if (in->per_token > 0 && token_subject) {
			struct slot *s;

			snprintf(key, sizeof(key), "t%s", token_subject);
			s = find(in, key, true, now);
			if (s)
				s->tat = (s->tat > now ? s->tat : now) + (double)n / in->per_token;
		}
	} else {
		in->refused[by]++;
	}
	pthread_mutex_unlock(&in->lock);
	free(users);
	*retry_s = by ? (unsigned int)(worst >= 1 ? ceil(worst) : 1) : 0;
	return by;
}

void agd_intake_stats(struct agd_intake *in, uint64_t refused[3])
{
	pthread_mutex_lock(&in->lock);
	memcpy(refused, in->refused, sizeof(in->refused));
	pthread_mutex_unlock(&in->lock);
}
