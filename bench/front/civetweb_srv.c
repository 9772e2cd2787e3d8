// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * civetweb_srv PORT: the CivetWeb 1.15 candidate of bench/front.sh (routing
 * and answers in common.h). Thread per connection as agentgated used it:
 * 64 workers, keep-alive, keep-alive and request timeouts 30 s, TCP_NODELAY,
 * CivetWeb's default listen backlog (200). Head and body go out in one
 * mg_write.
 */
#include <civetweb.h>
#include <unistd.h>

#include "common.h"

static int reply(struct mg_connection *c, int status, const char *reason, const char *body)
{
	char msg[512];
	int n = snprintf(msg, sizeof(msg),
			 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\n\r\n%s", status, reason, strlen(body), body);

	mg_write(c, msg, (size_t)n);
	return status;
}

static int handler(struct mg_connection *c, void *arg)
{
	const struct mg_request_info *ri = mg_get_request_info(c);
	const char *uri = ri->local_uri_raw ? ri->local_uri_raw : ri->local_uri;
	size_t len = strlen(uri), body = 0;
	char buf[4096];
	int n;

	while ((n = mg_read(c, buf, sizeof(buf))) > 0)
		body += (size_t)n;
	log_req(ri->request_method, uri, len, body);
	if (!strcmp(ri->request_method, "POST") && is_consume(uri, len))
		return reply(c, 200, "OK", CONSUME_BODY);
	if (!strcmp(ri->request_method, "GET") && is_health(uri, len))
		return reply(c, 200, "OK", HEALTH_BODY);
	return reply(c, 404, "Not Found", NOTFOUND_BODY);
}

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	stop = 1;
}

int main(int argc, char **argv)
{
	int port = front_init(argc, argv);
	char ports[32];
	const char *opts[] = {
		"listening_ports", ports,
		"num_threads", "64",
		"enable_keep_alive", "yes",
		"keep_alive_timeout_ms", "30000",
		"request_timeout_ms", "30000",
		"tcp_nodelay", "1",
		"decode_url", "no",
		NULL,
	};
	struct mg_callbacks cb = { 0 };
	struct mg_context *ctx;

	snprintf(ports, sizeof(ports), "127.0.0.1:%d", port);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	mg_init_library(0);
	ctx = mg_start(&cb, NULL, opts);
	if (!ctx) {
		fprintf(stderr, "civetweb: mg_start failed\n");
		return 1;
	}
	mg_set_request_handler(ctx, "/", handler, NULL);
	while (!stop)
		pause();
	mg_stop(ctx);
	mg_exit_library();
	return 0;
}
