// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * What the candidate HTTP/1.1 fronts of bench/front.sh share: the routing
 * and the fixed answers. Each server answers POST /v1/agents/NAME/consume
 * (after reading the whole body) with 200 {"allowed":true,"remaining":99},
 * GET /healthz with 200 {"status":"ok"}, anything else with 404; all as
 * application/json, keep-alive, on 127.0.0.1:PORT.
 *
 * SRV_LOG=1 in the environment makes a server log method, target and the
 * body bytes the handler saw, one stderr line per request: what it made of
 * the odd framings of smuggle.py.
 */
#ifndef FRONT_COMMON_H
#define FRONT_COMMON_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define CONSUME_BODY "{\"allowed\":true,\"remaining\":99}"
#define HEALTH_BODY "{\"status\":\"ok\"}"
#define NOTFOUND_BODY "{\"error\":\"not_found\"}"

static int srv_log;

/* /v1/agents/NAME/consume, NAME not empty and without '/' */
static inline int is_consume(const char *path, size_t len)
{
	static const char pre[] = "/v1/agents/", suf[] = "/consume";
	size_t lp = sizeof(pre) - 1, ls = sizeof(suf) - 1;

	if (len <= lp + ls || memcmp(path, pre, lp) || memcmp(path + len - ls, suf, ls))
		return 0;
	return !memchr(path + lp, '/', len - lp - ls);
}

static inline int is_health(const char *path, size_t len)
{
	return len == 8 && !memcmp(path, "/healthz", 8);
}

static inline void log_req(const char *method, const char *target, size_t len, size_t body)
{
	if (srv_log)
		fprintf(stderr, "req method=[%s] target=[%.*s] body=%zu\n", method, (int)len,
			target, body);
}

/* The command line is PORT: returns it (exit 2 otherwise); reads SRV_LOG. */
static inline int front_init(int argc, char **argv)
{
	int port = argc == 2 ? atoi(argv[1]) : 0;

	if (port <= 0 || port > 65535) {
		fprintf(stderr, "usage: %s PORT\n", argv[0]);
		exit(2);
	}
	srv_log = getenv("SRV_LOG") && atoi(getenv("SRV_LOG")) > 0;
	signal(SIGPIPE, SIG_IGN);
	return port;
}

/*
 * A non-blocking listening socket on 127.0.0.1:PORT with SO_REUSEPORT (one
 * per thread: the kernel spreads the connections over them), TCP_NODELAY
 * (accepted sockets inherit it on Linux), backlog 4096. Exits on failure.
 */
static inline int listen_reuseport(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4096)) {
		perror("listen 127.0.0.1");
		exit(1);
	}
	return fd;
}

#endif /* FRONT_COMMON_H */
