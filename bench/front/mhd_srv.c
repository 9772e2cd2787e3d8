// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * mhd_srv PORT: the libmicrohttpd 0.9.75 candidate of bench/front.sh
 * (routing and answers in common.h). Its own epoll threads, a pool of 2
 * (MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_TURBO), up to 20000 connections,
 * connection timeout 30 s, listen backlog 4096; the answers are persistent
 * MHD_Responses.
 */
#include <microhttpd.h>
#include <unistd.h>

#include "common.h"

static struct MHD_Response *r_consume, *r_health, *r_404;

/*
 * Called once for the head, then for each piece of the body, then once
 * more with *size 0. *state holds 1 + the body bytes seen so far.
 */
static enum MHD_Result on_req(void *cls, struct MHD_Connection *c, const char *url,
			      const char *method, const char *version, const char *data,
			      size_t *size, void **state)
{
	size_t len = strlen(url);

	if (!*state) {
		*state = (void *)1;
		return MHD_YES;
	}
	if (*size) {
		*state = (void *)((size_t)*state + *size);
		*size = 0;
		return MHD_YES;
	}
	log_req(method, url, len, (size_t)*state - 1);
	if (!strcmp(method, "POST") && is_consume(url, len))
		return MHD_queue_response(c, 200, r_consume);
	if (!strcmp(method, "GET") && is_health(url, len))
		return MHD_queue_response(c, 200, r_health);
	return MHD_queue_response(c, 404, r_404);
}

static struct MHD_Response *json(const char *body)
{
	struct MHD_Response *r;

	r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
	if (!r || MHD_add_response_header(r, "Content-Type", "application/json") != MHD_YES) {
		fprintf(stderr, "mhd: cannot make a response\n");
		exit(1);
	}
	return r;
}

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	stop = 1;
}

int main(int argc, char **argv)
{
	int port = front_init(argc, argv);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct MHD_Daemon *d;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	r_consume = json(CONSUME_BODY);
	r_health = json(HEALTH_BODY);
	r_404 = json(NOTFOUND_BODY);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_TURBO | MHD_USE_ERROR_LOG,
			     (uint16_t)port, NULL, NULL, on_req, NULL,
			     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
			     MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)2,
			     MHD_OPTION_CONNECTION_LIMIT, (unsigned int)20000,
			     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)30,
			     MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)4096,
			     MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "mhd: MHD_start_daemon failed\n");
		return 1;
	}
	while (!stop)
		pause();
	MHD_stop_daemon(d);
	return 0;
}
