// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The HTTP/1.1 server (server.h). Each loop thread has an epoll set with
 * the shared listener (EPOLLEXCLUSIVE: one loop wakes per connection), its
 * connections (edge-triggered: a connection is read until EAGAIN, and
 * whoever resumes it tries again) and an eventfd through which workers and
 * stream senders hand connections back. A connection is touched by one
 * thread at a time: its loop, or the worker running its request. Time
 * limits are three FIFO lists per loop, one a duration (request, idle,
 * WebSocket ping), so the next deadline is always a list's head.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#include "server.h"

#define IN_CAP 32768          /* a head (< 16 KiB) and room to read after it */
#define LINGER_MS 2000        /* after our FIN, for the client's */
#define WS_FRAME_MAX 16384    /* a client's frame payload, at most */
#define WS_PINGS_MAX 5        /* unanswered pings before the close */
#define ACCEPT_BATCH 64

enum cstate { CS_TLS, CS_HEAD, CS_BODY, CS_BUSY, CS_WS, CS_LINGER };
enum tlist { TL_REQ, TL_IDLE, TL_WS, TL_LINGER, TL_N };

struct loop;

struct agd_conn {
	struct loop *L;
	int fd;
	SSL *ssl;
	enum cstate st;
	bool want_read;  /* bytes may be waiting: an event came since the last short read */
	bool eof;        /* the peer closed its side, or the socket failed */
	bool rdhup;      /* its FIN came: read on to the end (no event will follow) */
	bool close_after, client_close, answered;
	bool unread_body; /* the request declared a body its route did not read */
	bool ws, ws_close_queued, ws_closing, hooked;
	bool ws_open; /* the 101 is out: writers may send themselves (wlock) */
	bool closed; /* socket closed; freed at the end of the loop's round */
	unsigned int pings;

	char *in; /* IN_CAP bytes while active */
	size_t in_len, head_len;
	struct agd_reqinfo ri;
	char *out;
	size_t out_len, out_off, out_cap;

	char *body;
	size_t body_len, body_cap;
	unsigned long long body_max;
	long long body_left; /* Content-Length still to come; -1: chunked */
	struct agd_chunks chunks;
	bool run_inline;
	bool on_worker, to_worker, deferred;
	void (*finish)(struct agd_conn *c, void *arg);
	void *finish_arg;

	void *req; /* o.req_size bytes, after the struct */
	void *data;

	/* timers */
	struct agd_conn *tprev, *tnext;
	int tl;
	uint64_t deadline;

	/* hand-back from workers and WebSocket writers */
	struct agd_conn *qnext;
	bool queued; /* on the loop's resume list, or closed (L->lock) */
	struct agd_conn *dnext; /* on the loop's list of the dead */

	/* WebSocket writes from other threads (wlock) */
	pthread_mutex_t wlock;
	pthread_cond_t wcv;
	char *ctl;
	size_t ctl_len, ctl_cap;
	const char *ext;
	size_t ext_len, ext_off;
	bool gone;
};

struct tq {
	struct agd_conn *head, *tail;
};

struct loop {
	struct agd_srv *s;
	int ep, evfd;
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	struct agd_conn *resume; /* handed back, under lock */
	struct tq tq[TL_N];
	unsigned int n_conns;
	uint64_t now; /* ms, read once a round */
	struct agd_conn *dead; /* closed this round: events may still name them */
};

struct agd_srv {
	struct agd_srv_opts o;
	const struct agd_srv_hooks *hk;
	SSL_CTX *tls;
	int lfd, spare_fd;
	atomic_bool stop;
	atomic_uint n_conns;
	struct loop *loops;
	unsigned int n_loops;
	uint64_t dur[TL_N];

	atomic_uint n_deferred; /* deferred answers not handed back yet */
	pthread_mutex_t plock;
	pthread_cond_t pcv;
	struct agd_conn *pq_head, *pq_tail;
	pthread_t *workers;
	unsigned int n_workers;
	bool pool_stop;
};

static char listen_marker, wake_marker;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- timers ---------------------------------------------------------------------------- */

static void timer_del(struct agd_conn *c)
{
	struct tq *q;

	if (c->tl < 0)
		return;
	q = &c->L->tq[c->tl];
	if (c->tprev)
		c->tprev->tnext = c->tnext;
	else
		q->head = c->tnext;
	if (c->tnext)
		c->tnext->tprev = c->tprev;
	else
		q->tail = c->tprev;
	c->tprev = c->tnext = NULL;
	c->tl = -1;
}

/* (Re)arms c on list tl: its deadline is now + that list's duration. */
static void timer_set(struct agd_conn *c, int tl)
{
	struct tq *q = &c->L->tq[tl];

	timer_del(c);
	c->tl = tl;
	c->deadline = c->L->now + c->L->s->dur[tl];
	c->tprev = q->tail;
	c->tnext = NULL;
	if (q->tail)
		q->tail->tnext = c;
	else
		q->head = c;
	q->tail = c;
}

/* ---- socket I/O ------------------------------------------------------------------------ */

/* >0 bytes, 0 EOF, -EAGAIN, or another negative errno. */
static ssize_t sock_read(struct agd_conn *c, char *buf, size_t len)
{
	while (c->ssl) {
		int n, e;

		ERR_clear_error();
		n = SSL_read(c->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
		if (n > 0)
			return n;
		e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_SYSCALL && errno == EINTR)
			continue; /* a signal (the privilege drop's) */
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			return -EAGAIN;
		if (e == SSL_ERROR_ZERO_RETURN)
			return 0;
		return -EIO;
	}
	for (;;) {
		ssize_t n = recv(c->fd, buf, len, 0);

		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

static ssize_t sock_write(struct agd_conn *c, const char *buf, size_t len)
{
	while (c->ssl) {
		int n, e;

		ERR_clear_error();
		n = SSL_write(c->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
		if (n > 0)
			return n;
		e = SSL_get_error(c->ssl, n);
		if (e == SSL_ERROR_SYSCALL && errno == EINTR)
			continue;
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			return -EAGAIN;
		return -EIO;
	}
	for (;;) {
		ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);

		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

/* Writes from buf until done or EAGAIN: 1 all out, 0 blocked, -1 failed. */
static int write_all(struct agd_conn *c, const char *buf, size_t len, size_t *off)
{
	while (*off < len) {
		ssize_t n = sock_write(c, buf + *off, len - *off);

		if (n == -EAGAIN)
			return 0;
		if (n <= 0)
			return -1;
		*off += (size_t)n;
	}
	return 1;
}

/* ---- the answer buffer ----------------------------------------------------------------- */

static int buf_append(char **buf, size_t *len, size_t *cap, const void *data, size_t n)
{
	if (*len + n > *cap) {
		size_t nc = *cap ? *cap : 4096;
		char *b;

		while (nc < *len + n)
			nc *= 2;
		b = realloc(*buf, nc);
		if (!b)
			return -ENOMEM;
		*buf = b;
		*cap = nc;
	}
	memcpy(*buf + *len, data, n);
	*len += n;
	return 0;
}

int agd_conn_write(struct agd_conn *c, const void *buf, size_t len)
{
	return buf_append(&c->out, &c->out_len, &c->out_cap, buf, len);
}

/* 1 the answer is out, 0 blocked, -1 failed. */
static int flush_out(struct agd_conn *c)
{
	int rc;

	if (c->out_off >= c->out_len)
		return 1;
	rc = write_all(c, c->out, c->out_len, &c->out_off);
	if (rc == 1) {
		c->out_len = c->out_off = 0;
		if (c->out_cap > 65536) { /* a big answer's buffer is not kept */
			free(c->out);
			c->out = NULL;
			c->out_cap = 0;
		}
	}
	return rc;
}

/* ---- life of a connection ------------------------------------------------------------ */

static void conn_free(struct agd_conn *c)
{
	pthread_mutex_destroy(&c->wlock);
	pthread_cond_destroy(&c->wcv);
	free(c->in);
	free(c->out);
	free(c->body);
	free(c->ctl);
	free(c);
}

/* The connections closed in this round of the loop. */
static void bury(struct loop *L)
{
	while (L->dead) {
		struct agd_conn *c = L->dead;

		L->dead = c->dnext;
		conn_free(c);
	}
}

/* Closes now: a WebSocket's hook first (its writers let go), then the socket. */
static void conn_close(struct agd_conn *c)
{
	struct agd_srv *s = c->L->s;

	pthread_mutex_lock(&c->wlock);
	c->gone = true;
	pthread_cond_broadcast(&c->wcv);
	pthread_mutex_unlock(&c->wlock);
	if (c->hooked && s->hk->ws_close)
		s->hk->ws_close(c, s->o.arg);
	c->hooked = false;
	/* Off the resume list, and never put on it again. */
	pthread_mutex_lock(&c->L->lock);
	if (c->queued) {
		struct agd_conn **pp;

		for (pp = &c->L->resume; *pp; pp = &(*pp)->qnext)
			if (*pp == c) {
				*pp = c->qnext;
				break;
			}
	}
	c->queued = true;
	pthread_mutex_unlock(&c->L->lock);
	timer_del(c);
	if (c->ssl)
		SSL_free(c->ssl);
	c->ssl = NULL;
	close(c->fd);
	c->closed = true;
	c->dnext = c->L->dead;
	c->L->dead = c;
	c->L->n_conns--;
	atomic_fetch_sub(&s->n_conns, 1);
}

/* After the last answer: our FIN, then the client's is awaited a while so
 * that unread bytes of its do not turn our close into a reset that could
 * destroy the answer before it is read. */
static void conn_linger(struct agd_conn *c)
{
	if (c->ssl)
		SSL_shutdown(c->ssl);
	shutdown(c->fd, SHUT_WR);
	c->st = CS_LINGER;
	timer_set(c, TL_LINGER);
}

static void server_error(struct agd_conn *c, int status, const char *extra, const char *msg)
{
	struct agd_srv *s = c->L->s;

	c->close_after = true;
	c->out_len = c->out_off = 0;
	s->hk->error(c, status, extra, msg, s->o.arg);
	c->answered = true;
}

/* ---- requests ---------------------------------------------------------------------------- */

static void request_reset(struct agd_conn *c)
{
	size_t rest = c->in_len - c->head_len;

	/* The next request's bytes to the front. */
	if (rest && c->head_len)
		memmove(c->in, c->in + c->head_len, rest);
	c->in_len = rest;
	c->head_len = 0;
	/* A small body's buffer is kept for the next request; a big one goes. */
	if (c->body_cap > 65536) {
		free(c->body);
		c->body = NULL;
		c->body_cap = 0;
	}
	c->body_len = 0;
	c->answered = false;
	c->st = CS_HEAD;
}

static void pool_push(struct agd_srv *s, struct agd_conn *c)
{
	pthread_mutex_lock(&s->plock);
	c->qnext = NULL;
	if (s->pq_tail)
		s->pq_tail->qnext = c;
	else
		s->pq_head = c;
	s->pq_tail = c;
	pthread_cond_signal(&s->pcv);
	pthread_mutex_unlock(&s->plock);
}

/* Wakes a loop. A full counter (never, in practice) means it is awake. */
static void ring(int evfd)
{
	uint64_t one = 1;
	ssize_t n = write(evfd, &one, sizeof(one));

	(void)n;
}

/* Hands c to its loop (from any thread). */
static void loop_resume(struct agd_conn *c)
{
	struct loop *L = c->L;
	bool wake;

	pthread_mutex_lock(&L->lock);
	wake = !L->resume;
	if (!c->queued) {
		c->queued = true;
		c->qnext = L->resume;
		L->resume = c;
	}
	pthread_mutex_unlock(&L->lock);
	if (wake)
		ring(L->evfd);
}

static void run_request(struct agd_conn *c)
{
	struct agd_srv *s = c->L->s;

	if (!c->body) {
		c->body = malloc(1);
		c->body_cap = c->body ? 1 : 0;
	}
	if (c->body && !c->body_len)
		c->body[0] = 0;
	c->st = CS_BUSY;
	timer_del(c);
	if (c->run_inline) {
		c->on_worker = false;
		s->hk->run(c, s->o.arg);
		if (c->to_worker) {
			c->to_worker = false;
			c->out_len = c->out_off = 0;
			c->on_worker = true;
			pool_push(s, c);
			return;
		}
		if (c->deferred)
			return; /* busy until agd_conn_resume() */
		c->answered = true;
		c->st = CS_HEAD;
		return;
	}
	c->on_worker = true;
	pool_push(s, c);
}

static int body_room(struct agd_conn *c, size_t want)
{
	if (c->body_len + want + 1 <= c->body_cap)
		return 0;
	{
		size_t nc = c->body_cap ? c->body_cap : 4096;
		char *b;

		while (nc < c->body_len + want + 1)
			nc *= 2;
		b = realloc(c->body, nc);
		if (!b)
			return -ENOMEM;
		c->body = b;
		c->body_cap = nc;
	}
	return 0;
}

/* Moves body bytes from c->in (after the head) into c->body: 1 complete,
 * 0 more wanted, -1 answered with an error. */
static int take_body(struct agd_conn *c)
{
	char *src = c->in + c->head_len;
	size_t avail = c->in_len - c->head_len, used = 0;
	char why[256];

	if (c->body_left >= 0) {
		size_t n = avail < (unsigned long long)c->body_left ? avail : (size_t)c->body_left;

		if (body_room(c, n)) {
			server_error(c, 500, NULL, "out of memory");
			return -1;
		}
		if (n)
			memcpy(c->body + c->body_len, src, n);
		c->body_len += n;
		c->body_left -= (long long)n;
		used = n;
	} else {
		while (used < avail) {
			size_t u = 0, made = 0, room;
			int rc;

			if (body_room(c, 4096)) {
				server_error(c, 500, NULL, "out of memory");
				return -1;
			}
			room = c->body_cap - c->body_len - 1;
			rc = agd_chunks_feed(&c->chunks, src + used, avail - used, c->body + c->body_len,
					     room, &u, &made, why, sizeof(why));
			used += u;
			c->body_len += made;
			if (c->body_len > c->body_max) {
				char msg[160];

				snprintf(msg, sizeof(msg), "request body is over the limit of %llu "
					 "bytes (--max-body)", c->body_max);
				server_error(c, 413, NULL, msg);
				return -1;
			}
			if (rc < 0) {
				server_error(c, 400, "Connection: close\r\n", why);
				return -1;
			}
			if (rc == 1) {
				c->body_left = 0;
				break;
			}
			if (!u && !made)
				break;
		}
	}
	/* Consumed input leaves the buffer; the head stays (ri points into it). */
	memmove(src, src + used, avail - used);
	c->in_len -= used;
	if (c->body_left)
		return 0;
	c->body[c->body_len] = 0;
	return 1;
}

static void ws_accept_key(const char *key, char out[29])
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	unsigned char md[SHA_DIGEST_LENGTH];
	char buf[128];

	snprintf(buf, sizeof(buf), "%s%s", key, guid);
	SHA1((const unsigned char *)buf, strlen(buf), md);
	EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
}

static void start_ws(struct agd_conn *c)
{
	struct agd_srv *s = c->L->s;
	char resp[256], acc[32];
	int n;

	ws_accept_key(agd_conn_header(c, "Sec-WebSocket-Key"), acc);
	n = snprintf(resp, sizeof(resp), "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket"
		     "\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acc);
	agd_conn_write(c, resp, (size_t)n);
	/* The head's bytes go; frames the client sent early stay. */
	memmove(c->in, c->in + c->head_len, c->in_len - c->head_len);
	c->in_len -= c->head_len;
	c->head_len = 0;
	c->ws = true;
	c->st = CS_WS;
	c->hooked = true;
	timer_set(c, TL_WS);
	if (s->hk->ws_ready)
		s->hk->ws_ready(c, s->o.arg);
}

/* A complete head in c->in: 1 go on, 0 stop here (busy or closing). */
static int on_head(struct agd_conn *c, long len)
{
	struct agd_srv *s = c->L->s;
	const char *te, *cl;
	enum agd_head_verdict v;
	bool inl = false;

	c->head_len = (size_t)len;
	/* "close" in any Connection line: the lines are one list (RFC 9110 5.3). */
	c->client_close = !strcmp(c->ri.http_version, "1.0") ||
			  agd_reqinfo_has_token(&c->ri, "Connection", "close");
	/* A body the route does not read (a route without one, or a request
	 * answered before its body: 401, 404, 405, ...) is not skipped: its
	 * bytes would be read as the next request. The answer closes the
	 * connection instead (RFC 9112 9.6), until the route says it reads it. */
	te = agd_reqinfo_header(&c->ri, "Transfer-Encoding");
	cl = agd_reqinfo_header(&c->ri, "Content-Length");
	c->unread_body = te || (cl && strtoll(cl, NULL, 10) > 0);
	c->body_max = 0;
	c->run_inline = false;
	memset(c->req, 0, s->o.req_size);
	v = s->hk->head(c, s->o.arg, &c->body_max, &inl);
	c->run_inline = inl;
	switch (v) {
	case AGD_HEAD_DONE:
		c->answered = true;
		return 1;
	case AGD_HEAD_UPGRADE:
		start_ws(c);
		return 1;
	case AGD_HEAD_RUN:
		c->body_left = 0;
		run_request(c);
		return c->st != CS_BUSY;
	case AGD_HEAD_BODY:
		c->unread_body = false;
		break;
	}
	if (te) {
		c->body_left = -1;
		agd_chunks_init(&c->chunks);
		c->close_after = true; /* see http.c: nothing after a chunked body is read */
	} else {
		c->body_left = cl ? strtoll(cl, NULL, 10) : 0;
	}
	c->st = CS_BODY;
	timer_set(c, TL_REQ);
	return 1;
}

/* The timer of a connection waiting for its next request. */
static void arm_wait(struct agd_conn *c)
{
	timer_set(c, c->in_len ? TL_REQ : TL_IDLE);
}

/* ---- WebSocket frames ---------------------------------------------------------------- */

static size_t ws_frame_head(unsigned char *h, int opcode, size_t len)
{
	h[0] = (unsigned char)(0x80 | opcode);
	if (len < 126) {
		h[1] = (unsigned char)len;
		return 2;
	}
	if (len < 65536) {
		h[1] = 126;
		h[2] = (unsigned char)(len >> 8);
		h[3] = (unsigned char)len;
		return 4;
	}
	h[1] = 127;
	for (int i = 0; i < 8; i++)
		h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
	return 10;
}

/* wlock held */
static void ctl_queue(struct agd_conn *c, int opcode, const void *payload, size_t len)
{
	unsigned char h[10];
	size_t hl;

	if (c->ws_close_queued || c->gone)
		return;
	if (len > 125)
		len = 125;
	hl = ws_frame_head(h, opcode, len);
	if (!buf_append(&c->ctl, &c->ctl_len, &c->ctl_cap, h, hl))
		buf_append(&c->ctl, &c->ctl_len, &c->ctl_cap, payload, len);
	if (opcode == 0x8)
		c->ws_close_queued = true;
}

void agd_ws_control(struct agd_conn *c, int opcode, const void *payload, size_t len)
{
	pthread_mutex_lock(&c->wlock);
	ctl_queue(c, opcode, payload, len);
	pthread_mutex_unlock(&c->wlock);
	loop_resume(c);
}

bool agd_ws_write(struct agd_conn *c, const void *frames, size_t len)
{
	bool ok;

	pthread_mutex_lock(&c->wlock);
	while (c->ext && !c->gone) /* one writer at a time */
		pthread_cond_wait(&c->wcv, &c->wlock);
	if (c->gone || c->ws_close_queued) {
		pthread_mutex_unlock(&c->wlock);
		return false;
	}
	c->ext = frames;
	c->ext_len = len;
	c->ext_off = 0;
	/* Plain TCP, the 101 out and nothing queued before it: written here;
	 * the loop only takes over what the socket does not take now (a send
	 * and a recv on two threads are safe; TLS state is not, so TLS goes
	 * through the loop). */
	if (!c->ssl && !c->ctl_len && c->ws_open) {
		while (c->ext_off < len) {
			ssize_t n = send(c->fd, (const char *)frames + c->ext_off, len - c->ext_off,
					 MSG_NOSIGNAL | MSG_DONTWAIT);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			c->ext_off += (size_t)n;
		}
		if (c->ext_off == len || (c->ext_off == 0 && errno != EAGAIN)) {
			bool ok = c->ext_off == len;

			/* Done, or the socket failed (the loop sees that itself). */
			c->ext = NULL;
			c->ext_off = 0;
			pthread_cond_broadcast(&c->wcv);
			pthread_mutex_unlock(&c->wlock);
			return ok;
		}
	}
	pthread_mutex_unlock(&c->wlock);
	loop_resume(c);
	pthread_mutex_lock(&c->wlock);
	while (c->ext == frames && !c->gone)
		pthread_cond_wait(&c->wcv, &c->wlock);
	ok = c->ext != frames && c->ext_off == len;
	if (c->ext == frames)
		c->ext = NULL;
	c->ext_off = 0;
	pthread_cond_broadcast(&c->wcv);
	pthread_mutex_unlock(&c->wlock);
	return ok;
}

/* Writes what WebSocket writers queued: control frames between their
 * batches, never inside one. 1 all out, 0 blocked, -1 failed. */
static int ws_flush(struct agd_conn *c)
{
	int rc = 1;

	pthread_mutex_lock(&c->wlock);
	for (;;) {
		if (c->ext && c->ext_off) { /* a batch begun is finished first */
			rc = write_all(c, c->ext, c->ext_len, &c->ext_off);
			if (rc != 1)
				break;
			c->ext = NULL; /* ext_off == ext_len tells the writer */
			c->ext_off = c->ext_len;
			pthread_cond_broadcast(&c->wcv);
			continue;
		}
		if (c->ctl_len) {
			size_t off = 0;

			rc = write_all(c, c->ctl, c->ctl_len, &off);
			memmove(c->ctl, c->ctl + off, c->ctl_len - off);
			c->ctl_len -= off;
			if (rc != 1)
				break;
			if (c->ws_close_queued)
				c->ws_closing = true;
			continue;
		}
		if (c->ext && (c->ws_closing || c->ws_close_queued)) {
			c->ext = NULL; /* after a close frame nothing is written: the writer is told */
			c->ext_off = 0;
			pthread_cond_broadcast(&c->wcv);
			break;
		}
		if (c->ext) {
			rc = write_all(c, c->ext, c->ext_len, &c->ext_off);
			if (rc != 1)
				break;
			c->ext = NULL;
			c->ext_off = c->ext_len;
			pthread_cond_broadcast(&c->wcv);
			continue;
		}
		break;
	}
	if (rc < 0) {
		c->gone = true;
		pthread_cond_broadcast(&c->wcv);
	}
	pthread_mutex_unlock(&c->wlock);
	return rc;
}

/* One frame from c->in: 1 handled, 0 incomplete, -1 close now. */
static int ws_frame(struct agd_conn *c)
{
	struct agd_srv *s = c->L->s;
	unsigned char *p = (unsigned char *)c->in;
	size_t hl = 2, plen;
	int op, keep;

	if (c->in_len < 2)
		return 0;
	op = p[0] & 0x0f;
	plen = p[1] & 0x7f;
	if (!(p[1] & 0x80) || (p[0] & 0x70)) {
		agd_ws_control(c, 0x8, "\x03\xea" "frames from a client are masked, without "
			       "extensions", 53);
		return -1;
	}
	if (plen == 126) {
		if (c->in_len < 4)
			return 0;
		plen = (size_t)p[2] << 8 | p[3];
		hl = 4;
	} else if (plen == 127) {
		if (c->in_len < 10)
			return 0;
		plen = 0;
		for (int i = 0; i < 8; i++) {
			if (plen > WS_FRAME_MAX)
				break;
			plen = plen << 8 | p[2 + i];
		}
		hl = 10;
	}
	if (plen > WS_FRAME_MAX) {
		agd_ws_control(c, 0x8, "\x03\xf1" "messages are at most 4096 bytes", 33);
		return -1;
	}
	if (c->in_len < hl + 4 + plen)
		return 0;
	{
		unsigned char *mask = p + hl, *data = p + hl + 4;

		for (size_t i = 0; i < plen; i++)
			data[i] ^= mask[i & 3];
		c->pings = 0;
		timer_set(c, TL_WS);
		if (op == 0x9) {
			agd_ws_control(c, 0xa, data, plen);
			keep = 1;
		} else if (op == 0xa) {
			keep = 1;
		} else {
			char save = (char)data[plen]; /* a NUL after the message, put back */

			data[plen] = 0;
			keep = s->hk->ws_data(c, p[0], (char *)data, plen, s->o.arg);
			data[plen] = (unsigned char)save;
			if (op == 0x8)
				keep = 0;
		}
		memmove(c->in, c->in + hl + 4 + plen, c->in_len - (hl + 4 + plen));
		c->in_len -= hl + 4 + plen;
	}
	return keep ? 1 : -1;
}

/* ---- the state machine ------------------------------------------------------------ */

/* Reads into c->in: 1 got bytes, 0 nothing now, -1 EOF or error. */
static int fill(struct agd_conn *c)
{
	size_t room;
	ssize_t n;

	if (!c->in) {
		c->in = malloc(IN_CAP + 1);
		if (!c->in)
			return -1;
	}
	if (c->in_len >= IN_CAP)
		return 0; /* full: what is there is handled first */
	if (!c->want_read)
		return 0;
	room = IN_CAP - c->in_len;
	n = sock_read(c, c->in + c->in_len, room);
	if (n == -EAGAIN) {
		c->want_read = false;
		return 0;
	}
	if (n <= 0) {
		c->eof = true;
		c->want_read = false;
		return -1;
	}
	c->in_len += (size_t)n;
	/* A short read took all the socket had: the next bytes bring an event
	 * of their own (edge-triggered), so no read just to see EAGAIN. TLS
	 * gives a record at a time: read on until it wants more. */
	c->want_read = c->ssl || c->rdhup || (size_t)n == room;
	return 1;
}

static void head_step(struct agd_conn *c, bool *progress)
{
	char why[256];
	long rc;

	if (c->in_len) {
		rc = agd_head_parse(c->in, c->in_len, &c->ri, why, sizeof(why));
		if (rc < 0) {
			server_error(c, (int)-rc, "Connection: close\r\n", why);
			*progress = true;
			return;
		}
		if (rc > 0) {
			if (on_head(c, rc))
				*progress = true;
			return;
		}
	}
	if (c->in_len >= IN_CAP) /* unreachable: the parser refuses at 16 KiB */
		return;
	switch (fill(c)) {
	case 1:
		if (c->tl != TL_REQ)
			timer_set(c, TL_REQ); /* the request's time starts at its first byte */
		*progress = true;
		break;
	case -1:
		/* The client left: nothing to answer. */
		c->close_after = true;
		c->answered = true;
		c->out_len = c->out_off = 0;
		*progress = true;
		break;
	}
}

static void body_step(struct agd_conn *c, bool *progress)
{
	int rc = take_body(c);

	if (rc < 0) {
		*progress = true;
		return;
	}
	if (rc == 1) {
		run_request(c);
		*progress = c->st != CS_BUSY;
		return;
	}
	switch (fill(c)) {
	case 1:
		*progress = true;
		break;
	case -1: {
		char msg[160];

		snprintf(msg, sizeof(msg), "request body ended after %zu bytes", c->body_len);
		server_error(c, 400, "Connection: close\r\n", msg);
		*progress = true;
		break;
	}
	}
}

static void ws_step(struct agd_conn *c, bool *progress)
{
	int rc = ws_frame(c);

	if (rc > 0) {
		*progress = true;
		return;
	}
	/* Closing: asked for, or the client's side ended (a part of a frame
	 * left over is dropped). */
	if (rc < 0 || c->eof) {
		c->ws_closing = true;
		*progress = true;
		return;
	}
	if (fill(c) != 0)
		*progress = true;
}

/* Runs c as far as it goes without waiting. */
static void conn_run(struct agd_conn *c)
{
	bool progress = true;

	while (progress) {
		progress = false;
		if (c->closed || c->st == CS_BUSY)
			return;
		if (c->st == CS_LINGER) {
			char sink[4096];
			ssize_t n;

			while ((n = recv(c->fd, sink, sizeof(sink), 0)) > 0)
				;
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
				conn_close(c);
			return;
		}
		if (c->st == CS_TLS) {
			int r, e;

			ERR_clear_error();
			r = SSL_accept(c->ssl);
			if (r == 1) {
				c->st = CS_HEAD;
				progress = true;
				continue;
			}
			e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_SYSCALL && errno == EINTR) {
				progress = true;
				continue;
			}
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
				conn_close(c);
			return;
		}
		if (c->ws) {
			int w = flush_out(c); /* the 101 */

			if (w == 1 && !c->ws_open) {
				pthread_mutex_lock(&c->wlock);
				c->ws_open = true; /* frames may follow it now */
				pthread_mutex_unlock(&c->wlock);
			}
			if (w == 1)
				w = ws_flush(c);

			if (w < 0 || (c->eof && !c->in_len) || (c->ws_closing && w == 1 && !c->ext)) {
				if (w < 0 || c->eof)
					conn_close(c);
				else
					conn_linger(c);
				return;
			}
			if (c->ws_closing)
				return; /* waiting for the frames to go out */
			ws_step(c, &progress);
			continue;
		}
		/* An answer: out first, then what comes after it. */
		if (c->answered) {
			size_t before = c->out_off;
			int w = flush_out(c);

			if (w < 0) {
				conn_close(c);
				return;
			}
			/* A client not reading its answer has the request timeout
			 * from its last progress; events without any (bytes it
			 * sends meanwhile) do not extend it. */
			if (w == 0) {
				if (c->out_off != before || c->tl != TL_REQ)
					timer_set(c, TL_REQ);
				return;
			}
			if (c->close_after || c->client_close || c->unread_body || c->eof) {
				if (c->eof)
					conn_close(c);
				else
					conn_linger(c);
				return;
			}
			request_reset(c);
			arm_wait(c);
			progress = true;
			continue;
		}
		if (c->out_len > c->out_off) { /* 100 Continue */
			int w = flush_out(c);

			if (w < 0) {
				conn_close(c);
				return;
			}
			if (w == 0)
				return;
		}
		if (c->st == CS_HEAD)
			head_step(c, &progress);
		else if (c->st == CS_BODY)
			body_step(c, &progress);
	}
}

/* ---- the loop ------------------------------------------------------------------------ */

static void expire(struct loop *L, uint64_t now)
{
	for (int tl = 0; tl < TL_N; tl++) {
		struct agd_conn *c;

		while ((c = L->tq[tl].head) && c->deadline <= now) {
			timer_del(c);
			switch (tl) {
			case TL_IDLE:
			case TL_LINGER:
				conn_close(c);
				break;
			case TL_WS:
				if (c->pings >= WS_PINGS_MAX) {
					conn_close(c);
					break;
				}
				c->pings++;
				timer_set(c, TL_WS);
				pthread_mutex_lock(&c->wlock);
				ctl_queue(c, 0x9, "", 0);
				pthread_mutex_unlock(&c->wlock);
				conn_run(c);
				break;
			case TL_REQ:
				if (c->st == CS_BODY && !c->answered) {
					char msg[200];

					snprintf(msg, sizeof(msg), "request body not received within the "
						 "request timeout (--request-timeout); %zu bytes came",
						 c->body_len);
					server_error(c, 408, NULL, msg);
					conn_run(c);
				} else if (c->st == CS_HEAD && !c->answered && c->in_len) {
					server_error(c, 400, "Connection: close\r\n",
						     "request line and headers not complete within the "
						     "request timeout (--request-timeout)");
					conn_run(c);
				} else {
					conn_close(c); /* silent, handshaking, or not reading */
				}
				break;
			}
		}
	}
}

static int next_timeout(struct loop *L, uint64_t now)
{
	uint64_t next = now + 1000;

	for (int tl = 0; tl < TL_N; tl++)
		if (L->tq[tl].head && L->tq[tl].head->deadline < next)
			next = L->tq[tl].head->deadline;
	return next <= now ? 0 : (int)(next - now);
}

static void accept_some(struct loop *L)
{
	struct agd_srv *s = L->s;

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET };
		struct agd_conn *c;
		int fd = accept4(s->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0 && (errno == EMFILE || errno == ENFILE) && s->spare_fd >= 0) {
			/* Out of descriptors: the connection is taken and closed at
			 * once (with the one kept spare) rather than left to make the
			 * listener ready forever. */
			pthread_mutex_lock(&s->plock);
			if (s->spare_fd >= 0) {
				close(s->spare_fd);
				fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
				if (fd >= 0)
					close(fd);
				s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
			}
			pthread_mutex_unlock(&s->plock);
			continue;
		}
		if (fd < 0)
			return; /* EAGAIN */
		c = calloc(1, sizeof(*c) + s->o.req_size);
		if (!c) {
			close(fd);
			continue;
		}
		c->L = L;
		c->fd = fd;
		c->req = c + 1;
		c->want_read = true;
		c->tl = -1;
		pthread_mutex_init(&c->wlock, NULL);
		pthread_cond_init(&c->wcv, NULL);
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *a = (void *)&ss;

			inet_ntop(AF_INET, &a->sin_addr, c->ri.remote_addr, sizeof(c->ri.remote_addr));
			c->ri.remote_port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (void *)&ss;

			inet_ntop(AF_INET6, &a->sin6_addr, c->ri.remote_addr,
				  sizeof(c->ri.remote_addr));
			c->ri.remote_port = ntohs(a->sin6_port);
		}
		c->st = CS_HEAD;
		if (s->tls) {
			c->ssl = SSL_new(s->tls);
			if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
				if (c->ssl)
					SSL_free(c->ssl);
				close(fd);
				free(c);
				continue;
			}
			SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
				     SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
			c->st = CS_TLS;
		}
		ev.data.ptr = c;
		if (epoll_ctl(L->ep, EPOLL_CTL_ADD, fd, &ev)) {
			if (c->ssl)
				SSL_free(c->ssl);
			close(fd);
			free(c);
			continue;
		}
		L->n_conns++;
		atomic_fetch_add(&s->n_conns, 1);
		/* A connection that sends nothing is closed after the request
		 * timeout. Nothing is read yet: bytes that came already make
		 * EPOLL_CTL_ADD report the socket ready, so the first read waits
		 * for that event (no recv() per accept just to see EAGAIN). */
		timer_set(c, TL_REQ);
	}
}

/* A deferred request's answer, written in the loop. */
static void finish_deferred(struct agd_conn *c)
{
	c->deferred = false;
	c->finish(c, c->finish_arg);
}

/* Connections workers and writers handed back. */
static void resume_all(struct loop *L)
{
	struct agd_conn *list, *c;
	uint64_t v;

	ssize_t r = read(L->evfd, &v, sizeof(v)); /* the counter reset; EAGAIN: it was 0 */

	(void)r;
	pthread_mutex_lock(&L->lock);
	list = L->resume;
	L->resume = NULL;
	pthread_mutex_unlock(&L->lock);
	while (list) {
		c = list;
		/* Taken off only now: until then a connection is marked queued,
		 * so that a hand-back meanwhile does not relink it (its link is
		 * this list's). A closed one stays marked: never queued again. */
		pthread_mutex_lock(&L->lock);
		list = c->qnext;
		if (!c->closed)
			c->queued = false;
		pthread_mutex_unlock(&L->lock);
		if (c->st == CS_BUSY) { /* a worker answered, or a deferred answer came */
			if (c->deferred)
				finish_deferred(c);
			c->answered = true;
			c->st = CS_HEAD;
			c->want_read = true; /* events while it was busy were not looked at */
		}
		conn_run(c);
	}
}

static void *loop_thread(void *arg)
{
	struct loop *L = arg;
	struct epoll_event evs[128];

	/* Signals: the mask of the thread that started the server (agentgated
	 * keeps them to its main thread); faults such as the store's SIGBUS
	 * must reach the thread that takes them. */
	L->now = now_ms();
	while (!atomic_load(&L->s->stop)) {
		int n = epoll_wait(L->ep, evs, 128, next_timeout(L, L->now));

		L->now = now_ms();
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;

			if (p == &listen_marker) {
				accept_some(L);
			} else if (p == &wake_marker) {
				resume_all(L);
			} else {
				struct agd_conn *c = p;

				if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
					c->want_read = true;
				if (evs[i].events & (EPOLLRDHUP | EPOLLERR | EPOLLHUP))
					c->rdhup = true;
				if (c->st != CS_BUSY)
					conn_run(c);
			}
		}
		expire(L, L->now);
		bury(L);
	}
	return NULL;
}

static void *worker_thread(void *arg)
{
	struct agd_srv *s = arg;

	pthread_mutex_lock(&s->plock);
	for (;;) {
		struct agd_conn *c;

		while (!s->pq_head && !s->pool_stop)
			pthread_cond_wait(&s->pcv, &s->plock);
		if (!s->pq_head)
			break;
		c = s->pq_head;
		s->pq_head = c->qnext;
		if (!s->pq_head)
			s->pq_tail = NULL;
		pthread_mutex_unlock(&s->plock);
		s->hk->run(c, s->o.arg);
		loop_resume(c);
		pthread_mutex_lock(&s->plock);
	}
	pthread_mutex_unlock(&s->plock);
	return NULL;
}

/* ---- start and stop --------------------------------------------------------------------- */

static int bind_listener(const char *spec, char *why, size_t wl)
{
	char host[256];
	const char *colon = strrchr(spec, ':');
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE |
				  AI_NUMERICSERV }, *res = NULL;
	int fd, one = 1, rc;
	size_t hl;

	if (!colon)
		return -EINVAL;
	hl = (size_t)(colon - spec);
	if (spec[0] == '[') {
		memcpy(host, spec + 1, hl - 2);
		host[hl - 2] = 0;
	} else {
		memcpy(host, spec, hl);
		host[hl] = 0;
	}
	rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
	if (rc) {
		snprintf(why, wl, "cannot listen on %s: %s", spec, gai_strerror(rc));
		return -EINVAL;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		freeaddrinfo(res);
		snprintf(why, wl, "cannot listen on %s: %s", spec, strerror(-rc));
		return rc;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* Accepted sockets inherit it: one answer, one segment, no Nagle wait. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 4096)) {
		rc = -errno;
		close(fd);
		freeaddrinfo(res);
		snprintf(why, wl, "cannot listen on %s: %s", spec, strerror(-rc));
		return rc;
	}
	freeaddrinfo(res);
	return fd;
}

/* Descriptors for thousands of connections: the soft limit raised to the hard one. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int agd_srv_start(const struct agd_srv_opts *o, struct agd_srv **out, char *why, size_t wl)
{
	struct agd_srv *s = calloc(1, sizeof(*s));
	int rc = 0;

	if (!s)
		return -ENOMEM;
	s->o = *o;
	s->hk = o->hooks;
	s->tls = o->tls;
	s->lfd = -1;
	s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	s->dur[TL_REQ] = o->request_timeout_ms;
	s->dur[TL_IDLE] = o->keepalive_ms;
	s->dur[TL_WS] = o->ws_ping_ms;
	s->dur[TL_LINGER] = LINGER_MS;
	pthread_mutex_init(&s->plock, NULL);
	pthread_cond_init(&s->pcv, NULL);
	raise_nofile();
	s->lfd = bind_listener(o->listen, why, wl);
	if (s->lfd < 0) {
		rc = s->lfd;
		s->lfd = -1;
		goto fail;
	}
	s->n_loops = o->loops ? o->loops : 1;
	s->loops = calloc(s->n_loops, sizeof(*s->loops));
	s->workers = calloc(o->workers ? o->workers : 1, sizeof(*s->workers));
	if (!s->loops || !s->workers) {
		rc = -ENOMEM;
		snprintf(why, wl, "out of memory");
		goto fail;
	}
	for (unsigned int i = 0; i < s->n_loops; i++) {
		struct loop *L = &s->loops[i];
		struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &listen_marker };
		struct epoll_event wv = { .events = EPOLLIN, .data.ptr = &wake_marker };

		L->s = s;
		L->ep = epoll_create1(EPOLL_CLOEXEC);
		L->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		pthread_mutex_init(&L->lock, NULL);
		if (L->ep < 0 || L->evfd < 0 || epoll_ctl(L->ep, EPOLL_CTL_ADD, s->lfd, &ev) ||
		    epoll_ctl(L->ep, EPOLL_CTL_ADD, L->evfd, &wv)) {
			rc = -errno;
			snprintf(why, wl, "cannot set up the HTTP event loop: %s", strerror(-rc));
			goto fail;
		}
	}
	for (unsigned int i = 0; i < (o->workers ? o->workers : 1); i++) {
		pthread_attr_t a;
		int err;

		pthread_attr_init(&a);
		pthread_attr_setstacksize(&a, 1 << 20);
		err = pthread_create(&s->workers[i], &a, worker_thread, s);
		pthread_attr_destroy(&a);
		if (err) {
			rc = -err;
			snprintf(why, wl, "cannot start HTTP worker %u: %s", i + 1, strerror(err));
			goto fail;
		}
		s->n_workers++;
	}
	for (unsigned int i = 0; i < s->n_loops; i++) {
		int err = pthread_create(&s->loops[i].thread, NULL, loop_thread, &s->loops[i]);

		if (err) {
			rc = -err;
			snprintf(why, wl, "cannot start the HTTP event loop: %s", strerror(err));
			goto fail;
		}
		s->loops[i].started = true;
	}
	*out = s;
	return 0;
fail:
	agd_srv_stop(s);
	return rc;
}

void agd_srv_stop(struct agd_srv *s)
{
	if (!s)
		return;
	atomic_store(&s->stop, true);
	for (unsigned int i = 0; s->loops && i < s->n_loops; i++)
		if (s->loops[i].started)
			ring(s->loops[i].evfd);
	for (unsigned int i = 0; s->loops && i < s->n_loops; i++)
		if (s->loops[i].started)
			pthread_join(s->loops[i].thread, NULL);
	/* Requests still running finish; their connections are then closed. */
	pthread_mutex_lock(&s->plock);
	s->pool_stop = true;
	pthread_cond_broadcast(&s->pcv);
	pthread_mutex_unlock(&s->plock);
	for (unsigned int i = 0; i < s->n_workers; i++)
		pthread_join(s->workers[i], NULL);
	/* Deferred answers (the engine's apply thread still runs) are handed
	 * back to the resume lists, processed below. */
	for (int ms = 0; atomic_load(&s->n_deferred) && ms < 60000; ms++)
		usleep(1000);
	for (unsigned int i = 0; s->loops && i < s->n_loops; i++) {
		struct loop *L = &s->loops[i];
		struct agd_conn *c;

		/* Every connection is on a timer list, the resume list, or busy
		 * (then handed back to the resume list by its worker, joined above). */
		pthread_mutex_lock(&L->lock);
		c = L->resume; /* they stay marked queued: nothing relinks them */
		L->resume = NULL;
		pthread_mutex_unlock(&L->lock);
		while (c) {
			struct agd_conn *next = c->qnext;

			if (c->deferred)
				finish_deferred(c); /* frees what the request held */
			if (c->tl < 0)
				conn_close(c);
			c = next;
		}
		for (int tl = 0; tl < TL_N; tl++)
			while (L->tq[tl].head)
				conn_close(L->tq[tl].head);
		bury(L);
		if (L->ep >= 0)
			close(L->ep);
		if (L->evfd >= 0)
			close(L->evfd);
		pthread_mutex_destroy(&L->lock);
	}
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->spare_fd >= 0)
		close(s->spare_fd);
	free(s->loops);
	free(s->workers);
	pthread_mutex_destroy(&s->plock);
	pthread_cond_destroy(&s->pcv);
	free(s);
}

unsigned int agd_srv_connections(struct agd_srv *s)
{
	return atomic_load(&s->n_conns);
}

/* ---- accessors -------------------------------------------------------------------------- */

const struct agd_reqinfo *agd_conn_info(const struct agd_conn *c)
{
	return &c->ri;
}

const char *agd_conn_header(const struct agd_conn *c, const char *name)
{
	return agd_reqinfo_header(&c->ri, name);
}

char *agd_conn_body(struct agd_conn *c, size_t *len)
{
	*len = c->body_len;
	return c->body;
}

bool agd_conn_chunked(const struct agd_conn *c)
{
	return agd_reqinfo_header(&c->ri, "Transfer-Encoding") != NULL;
}

void agd_conn_close_after(struct agd_conn *c)
{
	c->close_after = true;
}

bool agd_conn_closing(const struct agd_conn *c)
{
	return c->close_after || c->client_close || c->unread_body;
}

void *agd_conn_req(struct agd_conn *c)
{
	return c->req;
}

void agd_conn_set_data(struct agd_conn *c, void *p)
{
	c->data = p;
}

void *agd_conn_data(const struct agd_conn *c)
{
	return c->data;
}

void agd_conn_defer(struct agd_conn *c, void (*finish)(struct agd_conn *c, void *arg), void *arg)
{
	if (!finish) { /* taken back: answered now after all */
		if (c->deferred)
			atomic_fetch_sub(&c->L->s->n_deferred, 1);
		c->deferred = false;
		return;
	}
	c->finish = finish;
	c->finish_arg = arg;
	if (!c->deferred)
		atomic_fetch_add(&c->L->s->n_deferred, 1);
	c->deferred = true;
}

void agd_conn_resume(struct agd_conn *c)
{
	struct agd_srv *s = c->L->s;

	loop_resume(c);
	atomic_fetch_sub(&s->n_deferred, 1); /* after: a stop then finds it listed */
}

void agd_conn_to_worker(struct agd_conn *c)
{
	c->to_worker = true;
}

bool agd_conn_may_wait(const struct agd_conn *c)
{
	return c->on_worker;
}

void agd_conn_cut(struct agd_conn *c)
{
	shutdown(c->fd, SHUT_RDWR);
}
