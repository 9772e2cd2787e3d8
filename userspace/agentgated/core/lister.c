// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "lister.h"

struct agd_lister {
	struct agd_engine *e;
	pthread_t thread;
	bool started;
	pthread_mutex_t call; /* one page asked for at a time */
	pthread_mutex_t lock; /* what follows */
	pthread_cond_t cv;    /* a page asked for, a page done, stopping */
	bool stopping, pending, done;
	/* the page asked for, and what became of it */
	const char *after;
	size_t limit;
	char *next;
	struct agd_agent_view *views;
	size_t n;
	int err;
};

static void *run(void *arg)
{
	struct agd_lister *l = arg;

	pthread_mutex_lock(&l->lock);
	for (;;) {
		struct agd_agent_view *views = NULL;
		size_t n = 0;
		int err;

		while (!l->pending && !l->stopping)
			pthread_cond_wait(&l->cv, &l->lock);
		if (!l->pending)
			break;
		pthread_mutex_unlock(&l->lock);
		err = agd_engine_agent_page(l->e, l->after, l->limit, &views, &n, l->next);
		pthread_mutex_lock(&l->lock);
		l->err = err;
		l->views = views;
		l->n = n;
		l->pending = false;
		l->done = true;
		pthread_cond_broadcast(&l->cv);
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

int agd_lister_page(struct agd_lister *l, const char *after, size_t limit,
		    struct agd_agent_view **out, size_t *n, char next[AG_NAME_MAX + 1])
{
	int err = -ESHUTDOWN;

	pthread_mutex_lock(&l->call);
	pthread_mutex_lock(&l->lock);
	if (l->stopping)
		goto cleanup;
	l->after = after;
	l->limit = limit;
	l->next = next;
	l->done = false;
	l->pending = true;
	pthread_cond_broadcast(&l->cv);
	while (!l->done)
		pthread_cond_wait(&l->cv, &l->lock);
	err = l->err;
	*out = l->views;
	*n = l->n;
	l->views = NULL;
cleanup:
	pthread_mutex_unlock(&l->lock);
	pthread_mutex_unlock(&l->call);
	return err;
}

int agd_lister_start(struct agd_engine *e, struct agd_lister **out)
{
	struct agd_agent_view *views = NULL;
	char next[AG_NAME_MAX + 1];
	struct agd_lister *l;
	size_t n;
	int err;

	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->e = e;
	pthread_mutex_init(&l->call, NULL);
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cv, NULL);
	err = -pthread_create(&l->thread, NULL, run, l);
	l->started = !err;
	if (!err)
		err = agd_lister_page(l, "", 1, &views, &n, next);
	free(views);
	if (err) {
		agd_lister_stop(l);
		return err;
	}
	*out = l;
	return 0;
}

void agd_lister_stop(struct agd_lister *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->lock);
	l->stopping = true;
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->lock);
	if (l->started)
		pthread_join(l->thread, NULL);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->lock);
	pthread_mutex_destroy(&l->call);
	free(l);
}
