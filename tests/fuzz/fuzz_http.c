// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The daemon's HTTP layer as it runs: the engine (LMDB state, pinned maps)
 * and agd_http_start's CivetWeb server with the real route table and
 * handlers (userspace/agentgated/http.c, engine.c, metrics.c, rating.c),
 * started once in a sandbox of this process's own (mount namespace with a
 * fresh bpffs over /sys/fs/bpf, network namespace with only loopback,
 * state on a tmpfs); each input is sent as one connection's bytes to
 * 127.0.0.1:9470 and the answer read back. No daemon code is changed or
 * mocked.
 *
 * Input: one flag byte, then a request written with \n line ends:
 *   METHOD PATH HTTP/1.1\n Header: value\n ... \n\n body
 * The harness turns \n into \r\n in the head, replaces $TOKEN with a valid
 * HS256 token carrying every scope, and adds Content-Length for the body
 * unless the request names its own. Flags: bit 0 auth on (tokens required),
 * bit 1 send the bytes as they are (no rewriting at all), bit 2 send them
 * instead to the NDJSON ingest socket (ingest.c, --ingest-socket).
 * Checks: every connection is answered or closed within 10 s; an answer
 * from our handlers (application/json) is one JSON document whose length
 * is its Content-Length, and every error is {"error": code, "message":
 * text} as DESIGN.md says; no status 500; the ingest socket's reply counts
 * every non-blank line once (applied + duplicates + invalid + rejected);
 * no sanitizer report in any thread of the daemon.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <jwt.h>
#include <netinet/in.h>
#include <poll.h>
#include <strings.h>
#include <sys/un.h>
#include <time.h>

#include "engine.h"
#include "fuzz.h"
#include "http.h"
#include "ingest.h"

#define LISTEN "127.0.0.1:9470"
#define PORT 9470
#define ANSWER_MAX (4 << 20)
#define WAIT_MS 10000

static const char key[] = "fuzz-http-key-0123456789-0123456789";

static char state_dir[64];
static struct ag_engine *engine;
static struct agd_http *http;
static struct agd_ingest *ingest;
static char ingest_path[108];
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

static void stop_daemon(void)
{
	agd_ingest_stop(ingest);
	agd_http_stop(http);
	ag_engine_close(engine);
	free(token);
	fuzz_scratch_remove(state_dir);
}

static int start_daemon(void)
{
	struct ag_engine_opts eo = {
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
		.listen = LISTEN,
		.threads = 2,
		.request_timeout_ms = 2000,
		.tls_cert = "",
		.tls_key = "",
		.stream = { .max_clients = 2, .max_per_ip = 2, .queue = 64, .max_lag_ms = 2000,
			    .ping_ms = 1000 },
	};
	char err[1024];
	int rc;

	ag_policy_defaults(&eo.defaults);
	rc = ag_engine_open(&eo, &engine, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "fuzz_http: engine: %s\n", err);
		return rc;
	}
	live.max_body = 64 << 10;
	live.metrics_max_agents = 100;
	memcpy(live.key, key, strlen(key));
	live.key_len = strlen(key);
	rc = agd_http_start(engine, &ho, &live, &http, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "fuzz_http: http: %s\n", err);
		return rc;
	}
	snprintf(ingest_path, sizeof(ingest_path), "%s/ingest.sock", state_dir);
	snprintf(err, sizeof(err), "%s/dead-letter.ndjson", state_dir);
	rc = agd_ingest_start(engine, -1, ingest_path, err, &ingest, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "fuzz_http: ingest: %s\n", err);
		return rc;
	}
	agd_http_set_ready(http, true, NULL);
	return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int err;

	fuzz_keep_stderr();
	err = fuzz_sandbox(true);
	if (!err)
		err = fuzz_scratch(state_dir, sizeof(state_dir), "fuzz-http");
	if (err) {
		fprintf(stderr, "fuzz_http: cannot make the sandbox (needs root): %s\n",
			strerror(-err));
		exit(1);
	}
	token = make_token();
	if (!token || start_daemon()) {
		stop_daemon();
		exit(1);
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

static bool names_length(const char *head, size_t n)
{
	const char *p = head, *end = head + n;

	for (; p < end; p++)
		if ((p == head || p[-1] == '\n') && (size_t)(end - p) >= 15 &&
		    !strncasecmp(p, "content-length:", 15))
			return true;
	return false;
}

/* The head with \r\n and the token, a Content-Length, the body. */
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
	if (!names_length((const char *)data, head_n)) {
		snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", body_n);
		put(req, cl, strlen(cl));
	}
	put(req, "\r\n", 2);
	put(req, body, body_n);
}

/* ---- the answer ------------------------------------------------------------- */

static int connect_tcp(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(PORT) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	FUZZ_CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0,
		   "connect: %s", strerror(errno));
	return fd;
}

static int connect_ingest(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", ingest_path);
	FUZZ_CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0,
		   "connect %s: %s", ingest_path, strerror(errno));
	return fd;
}

/* Readable within WAIT_MS, signals notwithstanding (libFuzzer's -timeout
 * alarm interrupts poll). */
static bool wait_readable(int fd)
{
	struct timespec t0, t;
	long left = WAIT_MS;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (left > 0) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int n = poll(&pfd, 1, (int)left);

		if (n > 0)
			return true;
		if (n == 0 || errno != EINTR)
			return false;
		clock_gettime(CLOCK_MONOTONIC, &t);
		left = WAIT_MS - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
	}
	return false;
}

/* Sends req on fd, shuts the writing side, reads the answer to the end. */
static void exchange(int fd, const char *req, size_t n, struct buf *ans)
{
	size_t off = 0;
	char chunk[8192];

	/* The server may answer (413, 400) and close before reading it all. */
	while (off < n) {
		ssize_t w = send(fd, req + off, n - off, MSG_NOSIGNAL);

		if (w <= 0)
			break;
		off += (size_t)w;
	}
	shutdown(fd, SHUT_WR);
	for (;;) {
		ssize_t r;

		FUZZ_CHECK(wait_readable(fd), "no answer within %d ms", WAIT_MS);
		r = recv(fd, chunk, sizeof(chunk), 0);
		if (r <= 0)
			break;
		if (ans->n < ANSWER_MAX)
			put(ans, chunk, (size_t)r);
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
		return; /* closed without a word: CivetWeb on a garbled request */
	/* Ours all start so; CivetWeb's own (505, 400...) echo the request's
	 * version, whatever it was: not ours to check. */
	if (strncmp(a, "HTTP/1.1 ", 9) || sscanf(a + 9, "%3d", &status) != 1)
		return;
	FUZZ_CHECK(status != 500, "500: %.400s", a);
	head_end = strstr(a, "\r\n\r\n");
	if (!head_end)
		return; /* truncated by ANSWER_MAX */
	type = header(head_end, a, "Content-Type", &type_n);
	if (!type || strncmp(type, "application/json", 16))
		return; /* CivetWeb's own answer, or /metrics */
	len_text = header(head_end, a, "Content-Length", &len_n);
	FUZZ_CHECK(len_text, "JSON without Content-Length");
	declared = strtoul(len_text, NULL, 10);
	body = head_end + 4;
	FUZZ_CHECK(declared <= ans->n - (size_t)(body - a), "body shorter than its length");
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
