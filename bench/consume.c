// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * consume: a closed-loop load client for application-level rate-limit
 * checks, speaking either HTTP/1.1 to agentgated's
 * POST /v1/agents/{agent}/consume {"tokens": 1} or RESP to redis-server
 * running a token-bucket script (EVALSHA, bench/tokenbucket.lua), so both
 * get the same client, concurrency and keep-alive (bench/consume.sh).
 *
 * C connections, each with one request outstanding at a time (no
 * pipelining: what an application thread waiting for its answer does), all
 * driven by one epoll loop. Requests go to agents PREFIX0..PREFIX(K-1) in
 * turn. After a warm-up, checks completed within the measured seconds are
 * counted: allowed (HTTP 200, script 1), denied (HTTP 429, script 0), and
 * their latency from request to complete answer. Anything else (another
 * status, an error reply, a closed connection) fails the run.
 *
 * Usage: consume --proto http|redis --port P [--host ADDR] [--connections C]
 *                [--seconds S] [--warmup S] [--agents K] [--prefix NAME]
 *                [--sha SHA --rate R --burst B]     (redis)
 * Prints one JSON object. Exit: 0 measured, 1 failure, 2 usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define REQ_MAX 512
#define RESP_MAX 4096
#define HIST_US 200000 /* latency histogram: 1 us buckets up to 200 ms */
#define MAX_CONNS 4096

enum proto { P_HTTP, P_REDIS };

struct opts {
	enum proto proto;
	const char *host, *prefix, *sha, *rate, *burst;
	int port;
	int conns;
	double seconds, warmup;
	unsigned int agents;
};

struct conn {
	int fd;
	char req[REQ_MAX];
	size_t req_len, req_off;
	char resp[RESP_MAX];
	size_t resp_len;
	uint64_t sent_ns;
	unsigned int next_agent;
};

struct tally {
	uint64_t allowed, denied;
	uint64_t over;          /* latencies beyond the histogram */
	uint32_t *hist;         /* [HIST_US] */
};

static struct opts opt = {
	.host = "127.0.0.1", .prefix = "bn-c", .conns = 1, .seconds = 5, .warmup = 1, .agents = 100,
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- requests ------------------------------------------------------------ */

static int http_request(char *buf, size_t len, const char *agent)
{
	static const char body[] = "{\"tokens\":1}";

	return snprintf(buf, len,
			"POST /v1/agents/%s/consume HTTP/1.1\r\nHost: %s\r\n"
			"Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
			agent, opt.host, sizeof(body) - 1, body);
}

/* One RESP bulk string. */
static int resp_arg(char *buf, size_t len, const char *s)
{
	return snprintf(buf, len, "$%zu\r\n%s\r\n", strlen(s), s);
}

/* EVALSHA sha 1 key rate burst 1 */
static int redis_request(char *buf, size_t len, const char *agent)
{
	const char *args[] = { "EVALSHA", opt.sha, "1", NULL, opt.rate, opt.burst, "1" };
	char key[128];
	size_t i, n = 0;
	int w;

	snprintf(key, sizeof(key), "tb:%s", agent);
	args[3] = key;
	w = snprintf(buf, len, "*%zu\r\n", sizeof(args) / sizeof(args[0]));
	for (i = 0; w > 0 && (size_t)w < len - n && i < sizeof(args) / sizeof(args[0]); i++) {
		n += (size_t)w;
		w = resp_arg(buf + n, len - n, args[i]);
	}
	if (w < 0 || (size_t)w >= len - n)
		return -1;
	return (int)(n + (size_t)w);
}

static int build_request(struct conn *c)
{
	char agent[96];
	int n;

	snprintf(agent, sizeof(agent), "%s%u", opt.prefix, c->next_agent);
	c->next_agent = (c->next_agent + 1) % opt.agents;
	n = opt.proto == P_HTTP ? http_request(c->req, sizeof(c->req), agent) :
				  redis_request(c->req, sizeof(c->req), agent);
	if (n < 0 || (size_t)n >= sizeof(c->req))
		return -EOVERFLOW;
	c->req_len = (size_t)n;
	c->req_off = 0;
	c->resp_len = 0;
	return 0;
}

/* ---- responses --------------------------------------------------------------- */

/* Bytes of one complete RESP reply at buf, 0 if incomplete, -1 if malformed. */
static long resp_reply_len(const char *buf, size_t len)
{
	const char *eol = memmem(buf, len, "\r\n", 2);
	size_t head;
	long n, i, sub, off;

	if (!eol)
		return 0;
	head = (size_t)(eol - buf) + 2;
	switch (buf[0]) {
	case '+':
	case '-':
	case ':':
		return (long)head;
	case '$':
		n = strtol(buf + 1, NULL, 10);
		if (n < 0)
			return (long)head;
		return len >= head + (size_t)n + 2 ? (long)(head + (size_t)n + 2) : 0;
	case '*':
		n = strtol(buf + 1, NULL, 10);
		for (i = 0, off = (long)head; i < n; i++, off += sub) {
			if ((size_t)off >= len)
				return 0;
			sub = resp_reply_len(buf + off, len - (size_t)off);
			if (sub <= 0)
				return sub;
		}
		return off;
	}
	return -1;
}

/* A complete reply: 1 allowed, 0 denied, -EAGAIN incomplete, -EPROTO other. */
static int redis_verdict(struct conn *c)
{
	long n = resp_reply_len(c->resp, c->resp_len);

	if (n == 0)
		return -EAGAIN;
	if (n < 0 || (size_t)n != c->resp_len || strncmp(c->resp, "*", 1)) {
		fprintf(stderr, "consume: unexpected redis reply: %.*s\n", (int)c->resp_len, c->resp);
		return -EPROTO;
	}
	/* *2\r\n:1\r\n... or *3\r\n:0\r\n... */
	{
		const char *first = memmem(c->resp, c->resp_len, "\r\n:", 3);

		if (!first)
			return -EPROTO;
		return first[3] == '1' ? 1 : 0;
	}
}

static long content_length(const char *head, size_t len)
{
	const char *p = head, *end = head + len;

	while (p < end) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);

		if (!eol)
			break;
		if ((size_t)(eol - p) > 15 && !strncasecmp(p, "Content-Length:", 15))
			return strtol(p + 15, NULL, 10);
		p = eol + 2;
	}
	return -1;
}

static int http_verdict(struct conn *c)
{
	const char *hend = memmem(c->resp, c->resp_len, "\r\n\r\n", 4);
	size_t head;
	long body;
	int status;

	if (!hend)
		return c->resp_len == sizeof(c->resp) ? -EPROTO : -EAGAIN;
	head = (size_t)(hend - c->resp) + 4;
	body = content_length(c->resp, head);
	if (body < 0 || sscanf(c->resp, "HTTP/1.1 %d", &status) != 1) {
		fprintf(stderr, "consume: unexpected HTTP answer: %.*s\n", (int)head, c->resp);
		return -EPROTO;
	}
	if (c->resp_len < head + (size_t)body)
		return -EAGAIN;
	if (c->resp_len > head + (size_t)body || (status != 200 && status != 429)) {
		fprintf(stderr, "consume: unexpected HTTP answer: %.*s\n", (int)c->resp_len, c->resp);
		return -EPROTO;
	}
	return status == 200;
}

/* ---- connections ---------------------------------------------------------- */

static int dial(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port) };
	int fd, one = 1;

	if (inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1)
		return -EINVAL;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* Write what is left of the request; 1 when all of it is out. */
static int flush_request(struct conn *c)
{
	while (c->req_off < c->req_len) {
		ssize_t n = send(c->fd, c->req + c->req_off, c->req_len - c->req_off,
				 MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0)
			return errno == EAGAIN ? 0 : -errno;
		c->req_off += (size_t)n;
	}
	return 1;
}

static int start_request(int ep, struct conn *c)
{
	struct epoll_event ev = { .data.ptr = c };
	int err = build_request(c);

	if (err)
		return err;
	c->sent_ns = now_ns();
	err = flush_request(c);
	if (err < 0)
		return err;
	ev.events = err ? EPOLLIN : EPOLLOUT;
	return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) ? -errno : 0;
}

static void count(struct tally *t, int allowed, uint64_t lat_ns)
{
	uint64_t us = lat_ns / 1000;

	if (allowed)
		t->allowed++;
	else
		t->denied++;
	if (us < HIST_US)
		t->hist[us]++;
	else
		t->over++;
}

/* Data arrived on c: 1 when a whole answer was counted, 0 for more, <0 error. */
static int on_readable(struct conn *c, struct tally *t, bool counting)
{
	ssize_t n = recv(c->fd, c->resp + c->resp_len, sizeof(c->resp) - c->resp_len, MSG_DONTWAIT);
	int v;

	if (n < 0)
		return errno == EAGAIN ? 0 : -errno;
	if (n == 0) {
		fprintf(stderr, "consume: the server closed a connection\n");
		return -ECONNRESET;
	}
	c->resp_len += (size_t)n;
	v = opt.proto == P_HTTP ? http_verdict(c) : redis_verdict(c);
	if (v == -EAGAIN)
		return 0;
	if (v < 0)
		return v;
	if (counting)
		count(t, v, now_ns() - c->sent_ns);
	return 1;
}

/* ---- the run ------------------------------------------------------------------ */

static int open_conns(int ep, struct conn *cs)
{
	int i, fd;

	for (i = 0; i < opt.conns; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &cs[i] };

		fd = dial();
		if (fd < 0) {
			fprintf(stderr, "consume: cannot connect to %s:%d: %s\n", opt.host, opt.port,
				strerror(-fd));
			return fd;
		}
		cs[i].fd = fd;
		cs[i].next_agent = (unsigned int)i % opt.agents;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
			return -errno;
	}
	return 0;
}

static int handle(int ep, struct epoll_event *ev, struct tally *t, bool counting, bool more)
{
	struct conn *c = ev->data.ptr;
	struct epoll_event in = { .events = EPOLLIN, .data.ptr = c };
	int r;

	if (ev->events & EPOLLOUT) {
		r = flush_request(c);
		if (r <= 0)
			return r;
		return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &in) ? -errno : 0;
	}
	if (ev->events & (EPOLLERR | EPOLLHUP) && !(ev->events & EPOLLIN))
		return -ECONNRESET;
	r = on_readable(c, t, counting);
	if (r <= 0)
		return r;
	return more ? start_request(ep, c) : 0;
}

static int loop(int ep, struct conn *cs, struct tally *t, double *secs)
{
	struct epoll_event evs[64];
	uint64_t t0 = now_ns(), warm_end = t0 + (uint64_t)(opt.warmup * 1e9);
	uint64_t end = warm_end + (uint64_t)(opt.seconds * 1e9), now;
	int i, n, err;

	for (i = 0; i < opt.conns; i++) {
		err = start_request(ep, &cs[i]);
		if (err)
			return err;
	}
	while ((now = now_ns()) < end) {
		n = epoll_wait(ep, evs, 64, 100);
		if (n < 0 && errno != EINTR)
			return -errno;
		now = now_ns();
		for (i = 0; i < n; i++) {
			err = handle(ep, &evs[i], t, now >= warm_end && now < end, now < end);
			if (err)
				return err;
		}
	}
	*secs = opt.seconds;
	return 0;
}

static double percentile(const struct tally *t, double p)
{
	uint64_t total = t->allowed + t->denied, want = (uint64_t)(p * (double)total), seen = 0;
	uint32_t us;

	for (us = 0; us < HIST_US; us++) {
		seen += t->hist[us];
		if (seen > want)
			return us;
	}
	return HIST_US;
}

static void report(const struct tally *t, double secs)
{
	uint64_t total = t->allowed + t->denied;

	printf("{\"proto\":\"%s\",\"connections\":%d,\"agents\":%u,\"seconds\":%.3f,"
	       "\"checks\":%llu,\"allowed\":%llu,\"denied\":%llu,\"checks_per_s\":%.1f,"
	       "\"p50_us\":%.0f,\"p99_us\":%.0f,\"over_200ms\":%llu}\n",
	       opt.proto == P_HTTP ? "http" : "redis", opt.conns, opt.agents, secs,
	       (unsigned long long)total, (unsigned long long)t->allowed,
	       (unsigned long long)t->denied, (double)total / secs, percentile(t, 0.5),
	       percentile(t, 0.99), (unsigned long long)t->over);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: consume --proto http|redis --port P [--host ADDR] [--connections C]\n"
		   "               [--seconds S] [--warmup S] [--agents K] [--prefix NAME]\n"
		   "               [--sha SHA --rate R --burst B]   (redis)\n");
}

static int parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "proto", required_argument, NULL, 'P' },   { "host", required_argument, NULL, 'H' },
		{ "port", required_argument, NULL, 'p' },    { "connections", required_argument, NULL, 'c' },
		{ "seconds", required_argument, NULL, 's' }, { "warmup", required_argument, NULL, 'w' },
		{ "agents", required_argument, NULL, 'a' },  { "prefix", required_argument, NULL, 'x' },
		{ "sha", required_argument, NULL, 'S' },     { "rate", required_argument, NULL, 'r' },
		{ "burst", required_argument, NULL, 'b' },   { "help", no_argument, NULL, 'h' },
		{}
	};
	int c, proto = -1;

	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'P': proto = !strcmp(optarg, "http") ? P_HTTP : !strcmp(optarg, "redis") ? P_REDIS : -1;
			  if (proto < 0)
				  return -EINVAL;
			  break;
		case 'H': opt.host = optarg; break;
		case 'p': opt.port = atoi(optarg); break;
		case 'c': opt.conns = atoi(optarg); break;
		case 's': opt.seconds = atof(optarg); break;
		case 'w': opt.warmup = atof(optarg); break;
		case 'a': opt.agents = (unsigned int)atoi(optarg); break;
		case 'x': opt.prefix = optarg; break;
		case 'S': opt.sha = optarg; break;
		case 'r': opt.rate = optarg; break;
		case 'b': opt.burst = optarg; break;
		case 'h': usage(stdout); exit(0);
		default: return -EINVAL;
		}
	}
	opt.proto = (enum proto)proto;
	if (optind != argc || proto < 0 || opt.port <= 0 || opt.port > 65535 || opt.conns < 1 ||
	    opt.conns > MAX_CONNS || opt.seconds <= 0 || opt.warmup < 0 || opt.agents < 1)
		return -EINVAL;
	if (proto == P_REDIS && (!opt.sha || !opt.rate || !opt.burst))
		return -EINVAL;
	return 0;
}

int main(int argc, char **argv)
{
	struct tally t = {};
	struct conn *cs = NULL;
	double secs = 0;
	int ep = -1, i, err;

	if (parse_args(argc, argv)) {
		usage(stderr);
		return 2;
	}
	cs = calloc((size_t)opt.conns, sizeof(*cs));
	t.hist = calloc(HIST_US, sizeof(*t.hist));
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (!cs || !t.hist || ep < 0) {
		err = -ENOMEM;
		goto cleanup;
	}
	for (i = 0; i < opt.conns; i++)
		cs[i].fd = -1;
	err = open_conns(ep, cs);
	if (!err)
		err = loop(ep, cs, &t, &secs);
	if (err) {
		fprintf(stderr, "consume: %s\n", strerror(-err));
		goto cleanup;
	}
	report(&t, secs);
cleanup:
	for (i = 0; cs && i < opt.conns; i++)
		if (cs[i].fd >= 0)
			close(cs[i].fd);
	if (ep >= 0)
		close(ep);
	free(t.hist);
	free(cs);
	return err ? 1 : 0;
}
