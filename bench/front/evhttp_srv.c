// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * evhttp_srv PORT: the libevent 2.1.12 evhttp candidate of bench/front.sh
 * (routing and answers in common.h). 2 threads, each with its own
 * event_base and evhttp accepting on its own SO_REUSEPORT listening socket
 * for 127.0.0.1:PORT (the kernel spreads the connections over them); idle
 * and request timeout 30 s. evhttp sets no TCP_NODELAY itself: the accepted
 * sockets inherit it from the listener. The main thread waits for SIGTERM
 * or SIGINT and exits.
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <pthread.h>
#include <unistd.h>

#include "common.h"

#define NTHREADS 2

static void reply(struct evhttp_request *req, int status, const char *reason, const char *body)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "application/json");
	evbuffer_add_reference(evhttp_request_get_output_buffer(req), body, strlen(body), NULL,
			       NULL);
	evhttp_send_reply(req, status, reason, NULL);
}

/* evhttp calls it once the whole body is in the input buffer */
static void on_req(struct evhttp_request *req, void *arg)
{
	const char *uri = evhttp_request_get_uri(req), *q = strchr(uri, '?');
	size_t len = q ? (size_t)(q - uri) : strlen(uri);
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);

	log_req(m == EVHTTP_REQ_POST ? "POST" : m == EVHTTP_REQ_GET ? "GET" : "other", uri,
		strlen(uri), evbuffer_get_length(in));
	evbuffer_drain(in, evbuffer_get_length(in));
	if (m == EVHTTP_REQ_POST && is_consume(uri, len))
		reply(req, 200, "OK", CONSUME_BODY);
	else if (m == EVHTTP_REQ_GET && is_health(uri, len))
		reply(req, 200, "OK", HEALTH_BODY);
	else
		reply(req, 404, "Not Found", NOTFOUND_BODY);
}

static void *worker(void *arg)
{
	struct event_base *base = event_base_new();
	struct evhttp *http = base ? evhttp_new(base) : NULL;

	if (!http) {
		fprintf(stderr, "evhttp: cannot make an event base\n");
		exit(1);
	}
	evhttp_set_timeout(http, 30);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
					 EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	evhttp_set_gencb(http, on_req, NULL);
	if (!evhttp_accept_socket_with_handle(http, *(int *)arg)) {
		fprintf(stderr, "evhttp: cannot accept\n");
		exit(1);
	}
	event_base_dispatch(base);
	return NULL;
}

int main(int argc, char **argv)
{
	int port = front_init(argc, argv), fds[NTHREADS], i, sig;
	pthread_t t;
	sigset_t set;

	for (i = 0; i < NTHREADS; i++)
		fds[i] = listen_reuseport(port);
	/* the workers inherit the mask: only main takes SIGTERM and SIGINT */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	for (i = 0; i < NTHREADS; i++) {
		if (pthread_create(&t, NULL, worker, &fds[i])) {
			fprintf(stderr, "evhttp: cannot start a thread\n");
			return 1;
		}
	}
	sigwait(&set, &sig);
	/* evhttp is not thread-safe without evthread_use_pthreads(): no teardown */
	_exit(0);
}
