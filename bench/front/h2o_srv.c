// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * h2o_srv PORT: the H2O 2.2.5 libh2o-evloop candidate of bench/front.sh
 * (routing and answers in common.h). 2 threads, each with its own
 * h2o_evloop_t and h2o_context_t over one shared h2o_globalconf_t, each
 * accepting (up to 16 at a wake-up) on its own SO_REUSEPORT listening
 * socket for 127.0.0.1:PORT. Plain HTTP/1.1, http1.req_timeout 30 s. The
 * main thread waits for SIGTERM or SIGINT and exits.
 */
#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <h2o/http1.h>
#include <pthread.h>
#include <unistd.h>

#include "common.h"

#define NTHREADS 2

static h2o_globalconf_t config;

static void reply(h2o_req_t *req, int status, const char *reason, const char *body)
{
	req->res.status = status;
	req->res.reason = reason;
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
		       H2O_STRLIT("application/json"));
	req->res.content_length = strlen(body); /* else 2.2 answers chunked */
	h2o_send_inline(req, body, strlen(body));
}

/* h2o 2.2 calls it once the whole body is in req->entity */
static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
	if (srv_log) {
		char m[32];

		snprintf(m, sizeof(m), "%.*s", (int)req->method.len, req->method.base);
		log_req(m, req->path.base, req->path.len, req->entity.base ? req->entity.len : 0);
	}
	if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST")) &&
	    is_consume(req->path_normalized.base, req->path_normalized.len))
		reply(req, 200, "OK", CONSUME_BODY);
	else if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
		 is_health(req->path_normalized.base, req->path_normalized.len))
		reply(req, 200, "OK", HEALTH_BODY);
	else
		reply(req, 404, "Not Found", NOTFOUND_BODY);
	return 0;
}

struct worker {
	h2o_context_t ctx;
	h2o_accept_ctx_t accept_ctx;
	int fd;
};

static struct worker workers[NTHREADS];

static void on_accept(h2o_socket_t *listener, const char *err)
{
	struct worker *w = listener->data;
	h2o_socket_t *sock;
	int i;

	if (err)
		return;
	for (i = 0; i < 16 && (sock = h2o_evloop_socket_accept(listener)); i++)
		h2o_accept(&w->accept_ctx, sock);
}

static void *run(void *arg)
{
	struct worker *w = arg;
	h2o_evloop_t *loop = h2o_evloop_create();
	h2o_socket_t *listener;

	h2o_context_init(&w->ctx, loop, &config);
	w->accept_ctx.ctx = &w->ctx;
	w->accept_ctx.hosts = config.hosts;
	listener = h2o_evloop_socket_create(loop, w->fd, H2O_SOCKET_FLAG_DONT_READ);
	listener->data = w;
	h2o_socket_read_start(listener, on_accept);
	for (;;)
		h2o_evloop_run(loop, INT32_MAX);
	return NULL;
}

int main(int argc, char **argv)
{
	int port = front_init(argc, argv), i, sig;
	h2o_hostconf_t *host;
	h2o_pathconf_t *path;
	h2o_handler_t *h;
	pthread_t t;
	sigset_t set;

	h2o_config_init(&config);
	config.http1.req_timeout = 30000;
	host = h2o_config_register_host(&config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
	path = h2o_config_register_path(host, "/", 0);
	h = h2o_create_handler(path, sizeof(*h));
	h->on_req = on_req;
	for (i = 0; i < NTHREADS; i++)
		workers[i].fd = listen_reuseport(port);
	/* the workers inherit the mask: only main takes SIGTERM and SIGINT */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	for (i = 0; i < NTHREADS; i++) {
		if (pthread_create(&t, NULL, run, &workers[i])) {
			fprintf(stderr, "h2o: cannot start a thread\n");
			return 1;
		}
	}
	sigwait(&set, &sig);
	_exit(0);
}
