// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <arpa/inet.h>
#include <civetweb.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "deadline.h"

#define SLOTS 1024 /* bodies being read at once that can be bounded */

struct slot {
	int fd;    /* -1: free */
	__u64 at;  /* CLOCK_MONOTONIC ns */
	bool fired;
};

struct agd_deadlines {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	__u64 timeout_ns;
	struct slot slots[SLOTS];
};

/* The socket of the connection a worker thread serves, remembered while
 * the connection lasts (keep-alive): checked with one getpeername(). */
static __thread int cached_fd = -1;

static __u64 now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000000000ULL + (__u64)ts.tv_nsec;
}

/* Whether fd is the TCP connection from addr:port to our local port. */
static bool is_conn(int fd, const char *addr, int port, int local_port)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char text[INET6_ADDRSTRLEN];
	int p;

	if (getpeername(fd, (struct sockaddr *)&ss, &len))
		return false;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
		p = ntohs(in->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
		p = ntohs(in6->sin6_port);
	} else {
		return false;
	}
	if (p != port || strcmp(text, addr))
		return false;
	len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len))
		return false;
	p = ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port) :
				      ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return p == local_port;
}

static int conn_fd(struct mg_connection *conn)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	struct dirent *de;
	DIR *d;
	int fd = -1;

	if (cached_fd >= 0 && is_conn(cached_fd, ri->remote_addr, ri->remote_port, ri->server_port))
		return cached_fd;
	d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	while (fd < 0 && (de = readdir(d))) {
		int n = atoi(de->d_name);

		if (de->d_name[0] != '.' && n != dirfd(d) &&
		    is_conn(n, ri->remote_addr, ri->remote_port, ri->server_port))
			fd = n;
	}
	closedir(d);
	cached_fd = fd;
	return fd;
}

static void *watch(void *arg)
{
	struct agd_deadlines *d = arg;

	pthread_mutex_lock(&d->lock);
	while (!d->stop) {
		__u64 now = now_ns(), next = now + 1000000000ULL;
		struct timespec ts;
		int i;

		for (i = 0; i < SLOTS; i++) {
			struct slot *s = &d->slots[i];

			if (s->fd < 0 || s->fired)
				continue;
			if (s->at <= now) {
				/* The handler holds the connection until it disarms
				 * (under this lock): fd is still its socket. */
				shutdown(s->fd, SHUT_RD);
				s->fired = true;
			} else if (s->at < next) {
				next = s->at;
			}
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		next -= now;
		ts.tv_sec += (time_t)(next / 1000000000ULL);
		ts.tv_nsec += (long)(next % 1000000000ULL);
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&d->cond, &d->lock, &ts);
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

int agd_deadlines_start(__u64 timeout_ms, struct agd_deadlines **out)
{
	struct agd_deadlines *d = calloc(1, sizeof(*d));
	pthread_condattr_t ca;
	int i, err;

	if (!d)
		return -ENOMEM;
	for (i = 0; i < SLOTS; i++)
		d->slots[i].fd = -1;
	d->timeout_ns = timeout_ms * 1000000ULL;
	pthread_mutex_init(&d->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&d->cond, &ca);
	pthread_condattr_destroy(&ca);
	err = -pthread_create(&d->thread, NULL, watch, d);
	if (err) {
		pthread_cond_destroy(&d->cond);
		pthread_mutex_destroy(&d->lock);
		free(d);
		return err;
	}
	*out = d;
	return 0;
}

void agd_deadlines_stop(struct agd_deadlines *d)
{
	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	d->stop = true;
	pthread_cond_signal(&d->cond);
	pthread_mutex_unlock(&d->lock);
	pthread_join(d->thread, NULL);
	pthread_cond_destroy(&d->cond);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

int agd_deadline_arm(struct agd_deadlines *d, struct mg_connection *conn)
{
	int fd = d ? conn_fd(conn) : -1, i;

	if (fd < 0)
		return -1;
	pthread_mutex_lock(&d->lock);
	for (i = 0; i < SLOTS && d->slots[i].fd >= 0; i++)
		;
	if (i < SLOTS) {
		d->slots[i] = (struct slot){ .fd = fd, .at = now_ns() + d->timeout_ns };
		pthread_cond_signal(&d->cond);
	}
	pthread_mutex_unlock(&d->lock);
	return i < SLOTS ? i : -1;
}

bool agd_deadline_disarm(struct agd_deadlines *d, int handle)
{
	bool fired;

	if (!d || handle < 0)
		return false;
	pthread_mutex_lock(&d->lock);
	fired = d->slots[handle].fired;
	d->slots[handle].fd = -1;
	d->slots[handle].fired = false;
	pthread_mutex_unlock(&d->lock);
	return fired;
}
