// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The daemon's HTTP layer as it runs: the engine (LMDB state, pinned maps)
 * and agd_http_start's server (api/server.c) with the real route table and
 * handlers (userspace/agentgated/api/ and core/),
 * started once in a sandbox of this process's own (mount namespace with a
 * fresh bpffs over /sys/fs/bpf, network namespace with only loopback,
 * state on a tmpfs); each input is sent as one connection's bytes to
 * 127.0.0.1:9470 (another free port if that one were taken) and the answer
 * read back. No daemon code is changed or mocked. As in agentgated, whose
 * main() keeps its signals to the main thread, the daemon's threads block
 * the signals libFuzzer handles (its -timeout alarm must reach the fuzzing
 * thread, and never interrupts a daemon system call), and SIGPIPE is
 * ignored.
 *
 * Input: one flag byte, then a request written with \n line ends:
 *   METHOD PATH HTTP/1.1\n Header: value\n ... \n\n body
 * The harness turns \n into \r\n in the head, replaces $TOKEN with a valid
 * HS256 token carrying every scope, and adds Host and Content-Length (for
 * the body) unless the request names its own. Flags: bit 0 auth on (tokens
 * required), bit 1 send the bytes as they are (no rewriting at all), bit 2
 * send them instead to the NDJSON ingest socket (ingest.c,
 * --ingest-socket), bit 3 to the control socket (control.c, the CLI's
 * changes while the daemon owns the pin root).
 * Checks: every connection is accepted, then answered or closed, with no
 * wait of more than 10 s for progress; an answer from our handlers
 * (application/json) is one JSON document whose length is its
 * Content-Length, and every error is {"error": code, "message": text} as
 * DESIGN.md says; no status 500; the ingest socket's reply counts every
 * non-blank line once (applied + duplicates + invalid + rejected); the
 * control socket answers one JSON line, {"ok": true, "result": {...}} or
 * {"ok": false, "status", "error", "message"} and never status 500; no
 * sanitizer report in any thread of the daemon. What fails in the harness's
 * own machinery (no descriptors, no local ports) is a harness error
 * (fuzz.h), never a finding.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <jwt.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <strings.h>
#include <sys/un.h>
#include <time.h>

#include "core/engine.h"
#include "fuzz.h"
#include "api/http.h"
#include "ingest/ingest.h"
#include "api/control.h"

#define PORT 9470 /* below the ephemeral ports the client's own come from */
#define ANSWER_MAX (4 << 20)
#define WAIT_MS 10000

static const char key[] = "fuzz-http-key-0123456789-0123456789";

static char state_dir[64];
static char listen_addr[32];
static unsigned short port;
static struct agd_engine *engine;
static struct agd_http *http;
static struct agd_ingest *ingest;
static char ingest_path[108];
static struct agd_control *control;
static struct agd_http_live live;
static char *token;
static bool auth_on, debug;

static void quiet_log(int level, const char *fmt, ...)
{
}

static char *make_token(void)
{
	jwt_t *jwt = NULL;
	char *t = NULL;

	if (jwt_new(&jwt) || jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)key,
					 (int)strlen(key)) ||
	    jwt_add_grant(jwt, "sub", "fuzz") ||
	    jwt_add_grant(jwt, "scope", "ratings:write agents:admin stream:read metrics:read") ||
	    jwt_add_grant_int(jwt, "exp", (long)time(NULL) + 10L * 365 * 86400))
		goto cleanup;
	t = jwt_encode_str(jwt);
cleanup:
	jwt_free(jwt);
	return t;
}

/* Before a harness error's exit: the scratch mount point must not outlive us. */
static void remove_scratch(void)
{
	fuzz_scratch_remove(state_dir);
}

static void stop_daemon(void)
{
	agd_control_stop(control);
	agd_ingest_stop(ingest);
	agd_http_stop(http);
	agd_engine_close(engine);
	free(token);
	fuzz_scratch_remove(state_dir);
}

/* A loopback port nothing listens on, as the kernel picks it: 0 if none. */
static unsigned short free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	unsigned short p = 0;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(fd, (struct sockaddr *)&a, &len))
		p = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return p;
}

static int start_daemon(char *why, size_t why_len)
{
	struct agd_engine_opts eo = {
		.state_dir = state_dir,
		.pin_root = "/sys/fs/bpf/agentgate",
		.max_agents = 64,
		.store_size = 64 << 20,
		.dedup_window_ms = 3600 * 1000,
		.dedup_max = 1000,
		.auto_create = true,
		.queue_max = 1000,
		.log = quiet_log,
	};
	struct agd_http_opts ho = {
		.listen = listen_addr,
		.threads = 2,
		.request_timeout_ms = 2000,
		.tls_cert = "",
		.tls_key = "",
		.stream = { .max_clients = 2, .max_per_ip = 2, .queue = 64, .max_lag_ms = 2000,
			    .ping_ms = 1000 },
	};
	struct agd_err err = { 0 };
	char path[1024];
	int rc, attempt;

	agd_policy_defaults(&eo.defaults);
	rc = agd_engine_open(&eo, &engine, &err);
	if (rc) {
		snprintf(why, why_len, "engine: %s", err.msg);
		return rc;
	}
	live.max_body = 64 << 10;
	live.metrics_max_agents = 100;
	live.keys = calloc(1, sizeof(*live.keys));
	if (live.keys)
		live.keys->keys = calloc(1, sizeof(*live.keys->keys));
	if (!live.keys || !live.keys->keys)
		abort();
	live.keys->n = 1;
	live.keys->keys[0].alg = AGD_ALG_HS256;
	memcpy(live.keys->keys[0].secret, key, strlen(key));
	live.keys->keys[0].secret_len = strlen(key);
	/* The sandbox's network namespace is our own, so PORT is free; should
	 * it not be, a port the kernel finds free. */
	for (attempt = 0, port = PORT; attempt < 5; attempt++, port = free_port()) {
		snprintf(listen_addr, sizeof(listen_addr), "127.0.0.1:%u", port);
		rc = port ? agd_http_start(engine, &ho, &live, &http, &err) : -EADDRINUSE;
		if (rc != -EADDRINUSE)
			break;
	}
	if (rc) {
		snprintf(why, why_len, "http: %s", err.msg);
		return rc;
	}
	snprintf(ingest_path, sizeof(ingest_path), "%s/ingest.sock", state_dir);
	snprintf(path, sizeof(path), "%s/dead-letter.ndjson", state_dir);
	rc = agd_ingest_start(engine, -1, ingest_path, path, &ingest, &err);
	if (rc) {
		snprintf(why, why_len, "ingest: %s", err.msg);
		return rc;
	}
	snprintf(path, sizeof(path), "%s/control.sock", state_dir);
	rc = agd_control_open(path, &control, &err);
	if (!rc)
		rc = agd_control_serve(control, engine, &err);
	if (rc) {
		snprintf(why, why_len, "control: %s", err.msg);
		return rc;
	}
	agd_http_set_ready(http, true, NULL);
	return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const int fuzzer_signals[] = { SIGALRM, SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2 };
	sigset_t block, old;
	char why[1100] = "";
	size_t i;
	int err;

	fuzz_keep_stderr();
	err = fuzz_sandbox(true);
	if (!err)
		err = fuzz_scratch(state_dir, sizeof(state_dir), "fuzz-http");
	if (err)
		FUZZ_HARNESS_ERROR("fuzz_http: cannot make the sandbox (needs root): %s",
				   strerror(-err));
	fuzz_on_harness_error = remove_scratch;
	token = make_token();
	if (!token) {
		stop_daemon();
		FUZZ_HARNESS_ERROR("fuzz_http: cannot make a token with libjwt");
	}
	/* What agentgated's main() does before it starts a thread. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&block);
	for (i = 0; i < sizeof(fuzzer_signals) / sizeof(fuzzer_signals[0]); i++)
		sigaddset(&block, fuzzer_signals[i]);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	err = start_daemon(why, sizeof(why));
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		stop_daemon();
		FUZZ_HARNESS_ERROR("fuzz_http: cannot start the daemon: %s", why);
	}
	atexit(stop_daemon);
	debug = getenv("FUZZ_HTTP_DEBUG") != NULL;
	return 0;
}

/* ---- the request ----------------------------------------------------------- */

struct buf {
	char *p;
	size_t n, cap;
};

static void put(struct buf *b, const void *p, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		b->cap = (b->n + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			abort();
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = 0;
}

/* Whether a line of the head starts with name (e.g. "host:", any case). */
static bool names_header(const char *head, size_t n, const char *name)
{
	const char *p = head, *end = head + n;
	size_t len = strlen(name);

	for (; p < end; p++)
		if ((p == head || p[-1] == '\n') && (size_t)(end - p) >= len &&
		    !strncasecmp(p, name, len))
			return true;
	return false;
}

/* The head with \r\n and the token, a Host and a Content-Length, the body. */
static void build(const uint8_t *data, size_t size, struct buf *req)
{
	const uint8_t *sep = memmem(data, size, "\n\n", 2);
	size_t head_n = sep ? (size_t)(sep - data) : size, i;
	const uint8_t *body = sep ? sep + 2 : data + size;
	size_t body_n = size - (size_t)(body - data);
	char cl[48];

	for (i = 0; i < head_n; i++) {
		if (data[i] == '\n')
			put(req, "\r\n", 2);
		else if (data[i] == '$' && head_n - i >= 6 && !memcmp(data + i, "$TOKEN", 6))
			put(req, token, strlen(token)), i += 5;
		else
			put(req, &data[i], 1);
	}
	put(req, "\r\n", 2);
	/* HTTP/1.1 requires Host (a request without it is answered 400 before
	 * any route): raw inputs (flag bit 1) still reach that. */
	if (!names_header((const char *)data, head_n, "host:"))
		put(req, "Host: 127.0.0.1\r\n", 17);
	if (!names_header((const char *)data, head_n, "content-length:")) {
		snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", body_n);
		put(req, cl, strlen(cl));
	}
	put(req, "\r\n", 2);
	put(req, body, body_n);
}

/* ---- the answer ------------------------------------------------------------- */

/*
 * Why a connection could not be made. The daemon's, a finding: its listener
 * is gone (refused, no socket file) or takes no connection for WAIT_MS. The
 * harness's own, reported as a harness error once retrying for WAIT_MS did
 * not help: no descriptors (the daemon shares the table: one that leaks them
 * shows here first), no local ports, no memory.
 */
static bool transient(int err)
{
	return err == EADDRNOTAVAIL || err == EAGAIN || err == ENOBUFS || err == ENOMEM ||
	       err == EMFILE || err == ENFILE;
}

static bool daemon_fault(int err)
{
	return err == ETIMEDOUT || err == ECONNREFUSED || err == ECONNRESET ||
	       err == ECONNABORTED || err == ENOENT;
}

static int open_conn(int family, const struct sockaddr *addr, socklen_t len, const char *what)
{
	long long t0 = fuzz_now_ms(), deadline = t0 + WAIT_MS;
	int fd, err;

	for (;;) {
		fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		err = fd < 0 ? -errno : fuzz_connect(fd, addr, len, deadline);
		if (!err)
			break;
		if (fd >= 0)
			close(fd);
		if (!transient(-err) || fuzz_now_ms() >= deadline) {
			FUZZ_CHECK(!daemon_fault(-err), "%s takes no connection: %s", what,
				   strerror(-err));
			FUZZ_HARNESS_ERROR("cannot connect to %s: %s%s", what, strerror(-err),
					   err == -EMFILE || err == -ENFILE ?
						   " (does the daemon leak descriptors?)" :
						   "");
		}
		poll(NULL, 0, 10); /* a breath before the next attempt */
	}
	if (debug && fuzz_now_ms() - t0 > 200)
		dprintf(fuzz_err_fd, "(connecting to %s took %lld ms)\n", what, fuzz_now_ms() - t0);
	return fd;
}

static int connect_tcp(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return open_conn(AF_INET, (struct sockaddr *)&a, sizeof(a), listen_addr);
}

static int connect_ingest(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", ingest_path);
	return open_conn(AF_UNIX, (struct sockaddr *)&a, sizeof(a), ingest_path);
}

/*
 * Sends req on fd and reads what comes back meanwhile (the server may
 * answer, 413 or 400, and close before it has read it all), shuts the
 * writing side once all is sent, reads the answer to its end. Signals
 * (libFuzzer's -timeout alarm) and partial sends are resumed; no progress
 * for WAIT_MS is the daemon's failure.
 */
static void exchange(int fd, const char *req, size_t n, struct buf *ans)
{
	long long deadline = fuzz_now_ms() + WAIT_MS;
	bool sending = true;
	size_t off = 0;
	char chunk[8192];

	for (;;) {
		short ev = 0;
		int rc;

		if (sending && off == n) {
			shutdown(fd, SHUT_WR); /* fails only if the server reset it already */
			sending = false;
		}
		rc = fuzz_poll(fd, (short)(POLLIN | (sending ? POLLOUT : 0)), deadline, &ev);
		if (rc < 0)
			FUZZ_HARNESS_ERROR("poll: %s", strerror(-rc));
		FUZZ_CHECK(rc, "no answer within %d ms (%zu of %zu bytes sent)", WAIT_MS, off, n);
		if (sending && (ev & (POLLOUT | POLLERR | POLLHUP))) {
			ssize_t w = send(fd, req + off, n - off, MSG_NOSIGNAL | MSG_DONTWAIT);

			if (w > 0) {
				off += (size_t)w;
				deadline = fuzz_now_ms() + WAIT_MS;
			} else if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
				sending = false; /* answered and closed early */
			} else if (w < 0 && errno != EINTR && errno != EAGAIN) {
				FUZZ_HARNESS_ERROR("send: %s", strerror(errno));
			}
		}
		if (ev & (POLLIN | POLLERR | POLLHUP)) {
			ssize_t r = recv(fd, chunk, sizeof(chunk), MSG_DONTWAIT);

			if (r > 0) {
				if (ans->n < ANSWER_MAX)
					put(ans, chunk, (size_t)r);
				deadline = fuzz_now_ms() + WAIT_MS;
			} else if (r == 0 || errno == ECONNRESET || errno == EPIPE) {
				break;
			} else if (errno != EINTR && errno != EAGAIN) {
				FUZZ_HARNESS_ERROR("recv: %s", strerror(errno));
			}
		}
	}
	close(fd);
}

/* Lines with anything but spaces and tabs (a trailing \r dropped). */
static size_t rating_lines(const uint8_t *p, size_t n)
{
	size_t count = 0, pos = 0;

	while (pos < n) {
		const uint8_t *nl = memchr(p + pos, '\n', n - pos);
		size_t end = nl ? (size_t)(nl - p) : n, l = end, i;

		if (l > pos && p[l - 1] == '\r')
			l--;
		for (i = pos; i < l && (p[i] == ' ' || p[i] == '\t'); i++)
			;
		count += i < l;
		pos = end + 1;
	}
	return count;
}

static void check_ingest_reply(const struct buf *ans, size_t lines)
{
	json_t *j = ans->n ? json_loadb(ans->p, ans->n, 0, NULL) : NULL;
	json_int_t sum = 0;
	const char *k;
	json_t *v;

	FUZZ_CHECK(j, "ingest reply is not JSON: %.200s", ans->p ? ans->p : "");
	json_object_foreach(j, k, v)
		sum += json_integer_value(v);
	FUZZ_CHECK(sum == (json_int_t)lines, "ingest counted %lld lines of %zu: %.200s",
		   (long long)sum, lines, ans->p);
	json_decref(j);
}

static int connect_control(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", agd_control_path(control));
	return open_conn(AF_UNIX, (struct sockaddr *)&a, sizeof(a), a.sun_path);
}

static void check_control_reply(const struct buf *ans)
{
	json_t *j, *ok;

	FUZZ_CHECK(ans->n && ans->p[ans->n - 1] == '\n' && memchr(ans->p, '\n', ans->n) ==
							      ans->p + ans->n - 1,
		   "control answer is not one line: %.200s", ans->p ? ans->p : "(nothing)");
	j = json_loadb(ans->p, ans->n, 0, NULL);
	FUZZ_CHECK(j, "control answer is not JSON: %.200s", ans->p);
	ok = json_object_get(j, "ok");
	FUZZ_CHECK(json_is_boolean(ok), "control answer without ok: %.200s", ans->p);
	if (json_is_true(ok))
		FUZZ_CHECK(json_is_object(json_object_get(j, "result")),
			   "control success without a result: %.200s", ans->p);
	else
		FUZZ_CHECK(json_is_integer(json_object_get(j, "status")) &&
				   json_integer_value(json_object_get(j, "status")) != 500 &&
				   json_is_string(json_object_get(j, "error")) &&
				   json_is_string(json_object_get(j, "message")),
			   "control failure without status (not 500), error, message: %.300s",
			   ans->p);
	json_decref(j);
}

static const char *header(const char *head_end, const char *ans, const char *name,
			  size_t *len)
{
	const char *p = ans;
	size_t nl = strlen(name);

	while ((p = strstr(p, "\r\n")) && p < head_end) {
		p += 2;
		if (!strncasecmp(p, name, nl) && p[nl] == ':') {
			const char *v = p + nl + 1, *e;

			v += strspn(v, " ");
			e = strstr(v, "\r\n");
			*len = e ? (size_t)(e - v) : strlen(v);
			return v;
		}
	}
	return NULL;
}

/* The first answer on the connection. */
static void check_answer(const struct buf *ans)
{
	const char *a = ans->p, *head_end, *type, *len_text, *body;
	size_t type_n, len_n;
	unsigned long declared;
	json_t *j;
	int status;

	if (!ans->n)
		return; /* closed without a word: no request head came whole */
	/* Every answer is the server's own: HTTP/1.1, a status; "100 Continue"
	 * goes before the final one. */
	FUZZ_CHECK(!strncmp(a, "HTTP/1.1 ", 9) && sscanf(a + 9, "%3d", &status) == 1,
		   "not an HTTP/1.1 answer: %.200s", a);
	if (status == 100) {
		head_end = strstr(a, "\r\n\r\n");
		if (!head_end || !head_end[4])
			return;
		a = head_end + 4;
		FUZZ_CHECK(!strncmp(a, "HTTP/1.1 ", 9) && sscanf(a + 9, "%3d", &status) == 1,
			   "not an HTTP/1.1 answer after 100: %.200s", a);
	}
	FUZZ_CHECK(status != 500, "500: %.400s", a);
	if (status == 101)
		return; /* a WebSocket: frames follow */
	head_end = strstr(a, "\r\n\r\n");
	if (!head_end)
		return; /* truncated by ANSWER_MAX */
	type = header(head_end, a, "Content-Type", &type_n);
	FUZZ_CHECK(status < 400 || (type && !strncmp(type, "application/json", 16)),
		   "error %d not in JSON: %.300s", status, a);
	if (!type || strncmp(type, "application/json", 16))
		return; /* /metrics */
	len_text = header(head_end, a, "Content-Length", &len_n);
	FUZZ_CHECK(len_text, "JSON without Content-Length");
	declared = strtoul(len_text, NULL, 10);
	body = head_end + 4;
	FUZZ_CHECK(declared <= ans->n - (size_t)(body - ans->p), "body shorter than its length");
	j = json_loadb(body, declared, 0, NULL);
	FUZZ_CHECK(j, "answer %d is not JSON: %.300s", status, body);
	if (status >= 400)
		FUZZ_CHECK(json_is_string(json_object_get(j, "error")) &&
				   json_is_string(json_object_get(j, "message")),
			   "error %d without error and message: %.300s", status, body);
	json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint8_t flags = fuzz_u8(&in);
	struct buf req = { 0 }, ans = { 0 };

	if ((bool)(flags & 1) != auth_on) {
		auth_on = flags & 1;
		live.auth = auth_on;
		agd_http_update(http, &live);
	}
	if (flags & 4) {
		put(&req, in.p, in.n);
		exchange(connect_ingest(), req.p, req.n, &ans);
		if (debug)
			dprintf(fuzz_err_fd, "%s", ans.p ? ans.p : "(nothing)\n");
		check_ingest_reply(&ans, rating_lines(in.p, in.n));
		free(req.p);
		free(ans.p);
		return 0;
	}
	if (flags & 8) {
		put(&req, in.p, in.n);
		exchange(connect_control(), req.p, req.n, &ans);
		check_control_reply(&ans);
		free(req.p);
		free(ans.p);
		return 0;
	}
	if (flags & 2)
		put(&req, in.p, in.n);
	else
		build(in.p, in.n, &req);
	exchange(connect_tcp(), req.p, req.n, &ans);
	if (debug) /* FUZZ_HTTP_DEBUG=1: each answer's status line */
		dprintf(fuzz_err_fd, "%.*s\n", (int)strcspn(ans.p ? ans.p : "", "\r"),
			ans.p ? ans.p : "");
	check_answer(&ans);
	free(req.p);
	free(ans.p);
	return 0;
}
