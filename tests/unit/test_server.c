// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The HTTP server under the API (api/server.h) with hooks of the test's
 * own, over real loopback sockets: pipelined requests answered in order
 * whether they run in the loop or on a worker; two thousand idle
 * connections beside a request on one worker; a head that never ends cut
 * with the server's error and closed; bodies by length and in chunks,
 * and one over its limit; WebSocket frames written from another thread,
 * a client's message and close, the close hook once; a stop with
 * connections open, idle and busy.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "api/server.h"

static atomic_int ws_closes, ws_messages;
static struct agd_conn *ws_conn;
static pthread_mutex_t ws_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ws_cv = PTHREAD_COND_INITIALIZER;
static char ws_last[64];
static atomic_int pool_wait_ms;

static void answer(struct agd_conn *c, const char *text)
{
	char buf[256];
	int n = snprintf(buf, sizeof(buf), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s",
			 strlen(text), text);

	agd_conn_write(c, buf, (size_t)n);
}

static enum agd_head_verdict head(struct agd_conn *c, void *arg, unsigned long long *max,
				  bool *quick)
{
	const char *uri = agd_conn_info(c)->request_uri;

	*quick = !strcmp(uri, "/inline");
	if (!strcmp(uri, "/ws"))
		return AGD_HEAD_UPGRADE;
	if (!strcmp(uri, "/body")) {
		*max = 100;
		return AGD_HEAD_BODY;
	}
	return AGD_HEAD_RUN;
}

static void run(struct agd_conn *c, void *arg)
{
	const char *uri = agd_conn_info(c)->request_uri;
	size_t len;
	char *body = agd_conn_body(c, &len);
	char text[200];

	if (!strcmp(uri, "/pool") && atomic_load(&pool_wait_ms))
		usleep((useconds_t)atomic_load(&pool_wait_ms) * 1000);
	snprintf(text, sizeof(text), "%s %zu %s", uri, len, body);
	answer(c, text);
}

static void error(struct agd_conn *c, int status, const char *extra, const char *msg, void *arg)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf), "HTTP/1.1 %d E\r\nContent-Length: %zu\r\n%s\r\n%s",
			 status, strlen(msg), extra ? extra : "", msg);

	agd_conn_write(c, buf, (size_t)n);
}

static void ws_ready(struct agd_conn *c, void *arg)
{
	pthread_mutex_lock(&ws_lock);
	ws_conn = c;
	pthread_cond_broadcast(&ws_cv);
	pthread_mutex_unlock(&ws_lock);
}

static int ws_data(struct agd_conn *c, int bits, char *data, size_t len, void *arg)
{
	pthread_mutex_lock(&ws_lock);
	snprintf(ws_last, sizeof(ws_last), "%d:%.*s", bits & 0xf, (int)len, data);
	atomic_fetch_add(&ws_messages, 1);
	pthread_cond_broadcast(&ws_cv);
	pthread_mutex_unlock(&ws_lock);
	if ((bits & 0xf) == 0x8)
		agd_ws_control(c, 0x8, data, len);
	return 1;
}

static void ws_close(struct agd_conn *c, void *arg)
{
	atomic_fetch_add(&ws_closes, 1);
	pthread_mutex_lock(&ws_lock);
	ws_conn = NULL;
	pthread_cond_broadcast(&ws_cv);
	pthread_mutex_unlock(&ws_lock);
}

static const struct agd_srv_hooks hooks = { head, run, error, ws_ready, ws_data, ws_close };

static int port;

static struct agd_srv *start(unsigned int workers, unsigned long long timeout_ms)
{
	struct agd_srv_opts o = { .loops = 2, .workers = workers, .request_timeout_ms = timeout_ms,
				  .keepalive_ms = 30000, .ws_ping_ms = 15000, .hooks = &hooks };
	struct agd_srv *s = NULL;
	char listen[32], why[256];

	for (int i = 0; i < 50 && !s; i++) {
		port = 20000 + (int)((getpid() * 7 + i * 131) % 9000);
		snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
		o.listen = listen;
		if (agd_srv_start(&o, &s, why, sizeof(why)))
			s = NULL;
	}
	assert_non_null(s);
	return s;
}

static int dial(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static void send_all(int fd, const char *s, size_t n)
{
	while (n) {
		ssize_t k = send(fd, s, n, MSG_NOSIGNAL);

		assert_true(k > 0);
		s += k;
		n -= (size_t)k;
	}
}

/* Reads until want bytes came, the peer closed, or 10 s passed: the
 * bytes (NUL-terminated), *closed whether it closed. */
static size_t recv_some(int fd, char *buf, size_t cap, size_t want, bool *closed)
{
	size_t len = 0;

	*closed = false;
	while (len < want && len + 1 < cap) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t k;

		if (poll(&p, 1, 10000) <= 0)
			break;
		k = recv(fd, buf + len, cap - 1 - len, 0);
		if (k <= 0) {
			*closed = true;
			break;
		}
		len += (size_t)k;
	}
	buf[len] = 0;
	return len;
}

static void pipelined_in_order(void **state)
{
	struct agd_srv *s = start(4, 5000);
	const char *req = "GET /pool HTTP/1.1\r\nHost: t\r\n\r\n"
			  "GET /inline HTTP/1.1\r\nHost: t\r\n\r\n"
			  "POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
			  "GET /inline HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
	char buf[4096];
	bool closed;
	int fd;

	atomic_store(&pool_wait_ms, 50); /* the worker answers last unless the order holds */
	fd = dial();
	send_all(fd, req, strlen(req));
	recv_some(fd, buf, sizeof(buf), sizeof(buf), &closed);
	assert_true(closed);
	assert_non_null(strstr(buf, "/pool 0 "));
	assert_true(strstr(buf, "/pool 0 ") < strstr(buf, "/inline 0 "));
	assert_true(strstr(buf, "/inline 0 ") < strstr(buf, "/body 5 hello"));
	assert_non_null(strstr(strstr(buf, "/body 5 hello"), "/inline 0 "));
	atomic_store(&pool_wait_ms, 0);
	close(fd);
	agd_srv_stop(s);
}

static void idle_connections_take_no_worker(void **state)
{
	enum { N = 2000 };
	struct rlimit rl;
	struct agd_srv *s;
	int *fds = calloc(N, sizeof(int)), fd;
	char buf[1024];
	bool closed;

	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < 2 * N + 100) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	s = start(1, 10000);
	for (int i = 0; i < N; i++)
		fds[i] = dial();
	/* Half of them mid-request. */
	for (int i = 0; i < N; i += 2)
		send_all(fds[i], "GET /pool HTTP/1.1\r\nHos", 23);
	fd = dial();
	send_all(fd, "GET /pool HTTP/1.1\r\nHost: t\r\n\r\n", 31);
	recv_some(fd, buf, sizeof(buf), 40, &closed);
	assert_non_null(strstr(buf, "200 OK"));
	assert_true(agd_srv_connections(s) >= N);
	close(fd);
	for (int i = 0; i < N; i++)
		close(fds[i]);
	free(fds);
	agd_srv_stop(s); /* with connections still being closed under it */
}

static void slow_head_cut(void **state)
{
	struct agd_srv *s = start(1, 300);
	char buf[1024];
	bool closed;
	int fd = dial();

	send_all(fd, "GET /pool HTTP/1.1\r\nX-Slow: a", 29);
	recv_some(fd, buf, sizeof(buf), sizeof(buf), &closed);
	assert_non_null(strstr(buf, "HTTP/1.1 400"));
	assert_non_null(strstr(buf, "--request-timeout"));
	assert_true(closed);
	close(fd);
	agd_srv_stop(s);
}

static void bodies(void **state)
{
	struct agd_srv *s = start(2, 5000);
	char buf[2048];
	bool closed;
	int fd = dial();
	const char *chunked = "POST /body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
			      "3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: v\r\n\r\n";

	send_all(fd, chunked, strlen(chunked));
	recv_some(fd, buf, sizeof(buf), 40, &closed);
	assert_non_null(strstr(buf, "/body 5 abcde"));
	close(fd);
	/* Chunks past the limit of 100 bytes: refused. */
	fd = dial();
	send_all(fd, chunked, 60); /* its head */
	for (int i = 0; i < 12; i++)
		send_all(fd, "a\r\n0123456789\r\n", 15);
	recv_some(fd, buf, sizeof(buf), sizeof(buf), &closed);
	assert_non_null(strstr(buf, "HTTP/1.1 413"));
	assert_true(closed);
	close(fd);
	/* A body cut short by the client's close: the server's error. */
	fd = dial();
	send_all(fd, "POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\nabc", 55);
	shutdown(fd, SHUT_WR);
	recv_some(fd, buf, sizeof(buf), sizeof(buf), &closed);
	assert_non_null(strstr(buf, "HTTP/1.1 400"));
	assert_non_null(strstr(buf, "ended after 3 bytes"));
	close(fd);
	agd_srv_stop(s);
}

struct writer {
	struct agd_conn *c;
	int frames;
	bool ok;
};

static void *write_frames(void *arg)
{
	struct writer *w = arg;

	w->ok = true;
	for (int i = 0; i < w->frames && w->ok; i++) {
		char f[16];

		f[0] = (char)0x81;
		f[1] = 5;
		snprintf(f + 2, sizeof(f) - 2, "m%04d", i);
		w->ok = agd_ws_write(w->c, f, 7);
	}
	return NULL;
}

static void websocket(void **state)
{
	struct agd_srv *s = start(1, 5000);
	const char *hs = "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
			 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
	/* "hi" masked with 01 02 03 04, then a close 1000 masked the same way. */
	const unsigned char msg[] = { 0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2 };
	const unsigned char cl[] = { 0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2 };
	static char buf[1 << 16];
	struct writer w = { .frames = 1000 };
	pthread_t t;
	size_t len;
	bool closed;
	int fd = dial();

	atomic_store(&ws_closes, 0);
	send_all(fd, hs, strlen(hs));
	len = recv_some(fd, buf, sizeof(buf), 129, &closed);
	assert_non_null(strstr(buf, "101 Switching Protocols"));
	assert_non_null(strstr(buf, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
	pthread_mutex_lock(&ws_lock);
	while (!ws_conn)
		pthread_cond_wait(&ws_cv, &ws_lock);
	w.c = ws_conn;
	pthread_mutex_unlock(&ws_lock);
	assert_int_equal(pthread_create(&t, NULL, write_frames, &w), 0);
	len = recv_some(fd, buf, sizeof(buf), 7000, &closed);
	pthread_join(t, NULL);
	assert_true(w.ok);
	assert_int_equal(len, 7000);
	for (int i = 0; i < 1000; i++) { /* whole frames, in order */
		char want[8];

		snprintf(want, sizeof(want), "m%04d", i);
		assert_int_equal((unsigned char)buf[7 * i], 0x81);
		assert_memory_equal(buf + 7 * i + 2, want, 5);
	}
	send_all(fd, (const char *)msg, sizeof(msg));
	pthread_mutex_lock(&ws_lock);
	while (!atomic_load(&ws_messages))
		pthread_cond_wait(&ws_cv, &ws_lock);
	assert_string_equal(ws_last, "1:hi");
	pthread_mutex_unlock(&ws_lock);
	send_all(fd, (const char *)cl, sizeof(cl));
	len = recv_some(fd, buf, sizeof(buf), sizeof(buf), &closed);
	assert_true(closed);
	assert_int_equal(len, 4); /* the close echoed */
	assert_int_equal((unsigned char)buf[0], 0x88);
	pthread_mutex_lock(&ws_lock);
	while (ws_conn)
		pthread_cond_wait(&ws_cv, &ws_lock);
	pthread_mutex_unlock(&ws_lock);
	assert_int_equal(atomic_load(&ws_closes), 1);
	close(fd);
	agd_srv_stop(s);
	assert_int_equal(atomic_load(&ws_closes), 1);
}

static void stop_with_connections(void **state)
{
	struct agd_srv *s = start(2, 5000);
	int idle = dial(), busy = dial(), ws = dial();
	const char *hs = "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
			 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
	char buf[512];
	bool closed;

	atomic_store(&ws_closes, 0);
	atomic_store(&pool_wait_ms, 200);
	send_all(ws, hs, strlen(hs));
	recv_some(ws, buf, sizeof(buf), 129, &closed);
	send_all(busy, "GET /pool HTTP/1.1\r\nHost: t\r\n\r\n", 31);
	usleep(50000);
	agd_srv_stop(s); /* the busy request finishes; everything closes */
	atomic_store(&pool_wait_ms, 0);
	assert_int_equal(atomic_load(&ws_closes), 1);
	recv_some(idle, buf, sizeof(buf), sizeof(buf), &closed);
	assert_true(closed);
	close(idle);
	close(busy);
	close(ws);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(pipelined_in_order),
		cmocka_unit_test(idle_connections_take_no_worker),
		cmocka_unit_test(slow_head_cut),
		cmocka_unit_test(bodies),
		cmocka_unit_test(websocket),
		cmocka_unit_test(stop_with_connections),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
