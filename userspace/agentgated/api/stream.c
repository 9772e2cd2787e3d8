// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The live stream (see stream.h). Threads:
 *  - CivetWeb's worker of each connection runs the handshake callbacks and
 *    reads the client's messages (subscribe, unsubscribe, close);
 *  - one sender thread per client writes its queue, so a blocked write
 *    stalls that client only;
 *  - the hub thread fans applied ratings out to the subscribed clients'
 *    queues, samples subscribed buckets once a second and disconnects
 *    clients that stay behind.
 * The engine hands ratings to the hub through a bounded inbox and never
 * waits for a client.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <civetweb.h>
#include <jansson.h>

#include "agentgate.h"
#include "reply.h"
#include "core/jsonguard.h"
#include "reqlimits.h"
#include "stream.h"

#define TOPIC_MAX 80           /* "bucket.agent." + an agent name */
#define TOPICS_PER_CLIENT 256  /* subscriptions one client may hold */
#define CLIENT_MSG_MAX 4096    /* largest message a client may send */
#define INBOX_MAX 65536        /* rating events waiting for the hub */
#define TICK_MS 100            /* the hub's housekeeping period */
#define BUCKET_PERIOD_MS 1000  /* bucket.agent.* updates: at most 1 Hz */
#define CLOSE_GRACE_MS 2000    /* a close frame's answer is awaited this long */
#define SENDER_STACK (256 * 1024)

#define WS_CLOSE_GOING_AWAY 1001
#define WS_CLOSE_UNSUPPORTED 1003
#define WS_CLOSE_POLICY 1008
#define WS_CLOSE_TOO_BIG 1009
#define WS_CLOSE_INTERNAL 1011
#define WS_CLOSE_TRY_LATER 1013

const char *const agd_stream_refusal_names[4] = { "auth", "topic", "per_ip", "full" };

/* One update or reply, shared by every queue it is in. */
struct msg {
	atomic_uint refs;
	char topic[TOPIC_MAX]; /* "" for replies: never coalesced */
	size_t len;
	char data[];
};

struct qent {
	struct msg *m;
	__u64 enq_ns;
};

typedef char topic_name[AG_NAME_MAX + 1];

struct client {
	struct agd_stream *s;
	struct client *next, *prev;
	struct mg_connection *conn;
	int fd; /* the connection's socket, to cut it; -1 when not found */
	char ip[48];

	pthread_mutex_t lock;
	pthread_cond_t cv;
	struct qent *q; /* ring of s->o.queue entries */
	unsigned int head, n;
	__u64 writing_since_ns; /* enqueue time of the update being written; 0: idle */
	bool global;
	topic_name *rating, *bucket;
	size_t n_rating, n_bucket;
	bool closing;     /* no more updates; the sender sends the close frame */
	bool close_sent;
	bool gone;        /* CivetWeb closed it: the sender leaves */
	bool shut;        /* socket shut down */
	int close_code;
	char close_reason[100];
	__u64 closing_since_ns;

	pthread_t thread;
	bool thread_started;
};

struct bucket_sample {
	char name[AG_NAME_MAX + 1];
	__u64 passed, dropped, t_ns;
	bool seen; /* still subscribed at the last tick */
};

struct agd_stream {
	struct agd_engine *e;
	struct agd_stream_opts o;
	agd_stream_auth_fn auth;
	void *auth_arg;

	pthread_mutex_t lock; /* clients list, stats */
	pthread_cond_t empty_cv;
	struct client *clients;
	unsigned int n_clients;
	atomic_uint n_listeners; /* clients: the engine records events when > 0 */
	struct agd_stream_stats st;
	bool stopping;

	pthread_mutex_t ilock; /* inbox */
	pthread_cond_t icv;
	struct agd_rating_event *inbox, *spare;
	size_t in_n, in_cap, spare_cap;
	bool hub_stop;
	pthread_t hub;
	bool hub_started;

	struct bucket_sample *samples; /* hub thread's */
	size_t n_samples;
};

static __u64 mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000000000ULL + (__u64)ts.tv_nsec;
}

static __s64 wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (__s64)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- messages ------------------------------------------------------------------- */

static struct msg *msg_new(const char *topic, const char *text, size_t len)
{
	struct msg *m = malloc(sizeof(*m) + len + 1);

	if (!m)
		return NULL;
	atomic_init(&m->refs, 1);
	snprintf(m->topic, sizeof(m->topic), "%s", topic);
	memcpy(m->data, text, len);
	m->data[len] = 0;
	m->len = len;
	return m;
}

/* Takes the reference of o (a jansson object). */
static struct msg *msg_json(const char *topic, json_t *o)
{
	struct msg *m = NULL;
	char *text;

	if (!o)
		return NULL;
	text = json_dumps(o, JSON_COMPACT);
	if (text)
		m = msg_new(topic, text, strlen(text));
	free(text);
	json_decref(o);
	return m;
}

static void msg_ref(struct msg *m)
{
	atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

static void msg_unref(struct msg *m)
{
	if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
		free(m);
}

static struct msg *reply(const char *type, const char *topic, const char *message)
{
	json_t *o = json_pack("{s:s}", "type", type);

	if (o && topic)
		json_object_set_new(o, "topic", json_string(topic));
	if (o && message)
		json_object_set_new(o, "message", json_string(message));
	return msg_json("", o);
}

/* ---- topics ----------------------------------------------------------------------- */

enum topic_kind { T_NONE, T_GLOBAL, T_RATING, T_BUCKET };

static enum topic_kind topic_parse(const char *t, const char **agent)
{
	static const char rating[] = "rating.agent.", bucket[] = "bucket.agent.";

	if (!strcmp(t, "rating.global"))
		return T_GLOBAL;
	if (!strncmp(t, rating, sizeof(rating) - 1) && !ag_name_check(t + sizeof(rating) - 1)) {
		*agent = t + sizeof(rating) - 1;
		return T_RATING;
	}
	if (!strncmp(t, bucket, sizeof(bucket) - 1) && !ag_name_check(t + sizeof(bucket) - 1)) {
		*agent = t + sizeof(bucket) - 1;
		return T_BUCKET;
	}
	return T_NONE;
}

bool agd_stream_topic_valid(const char *t)
{
	const char *agent;

	return topic_parse(t, &agent) != T_NONE;
}

static const char *topic_problem(void)
{
	return "unknown topic: use rating.global, rating.agent.{agent} or bucket.agent.{agent} "
	       "(agent names: 1 to 64 of [A-Za-z0-9._:-], not . nor ..)";
}

static ssize_t name_index(topic_name *list, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(list[i], name))
			return (ssize_t)i;
	return -1;
}

/* c->lock held. 1 added, 0 already there, -ENOSPC over the per-client cap. */
static int subscribe(struct client *c, const char *topic)
{
	const char *agent = NULL;
	enum topic_kind k = topic_parse(topic, &agent);
	topic_name **list = k == T_RATING ? &c->rating : &c->bucket;
	size_t *n = k == T_RATING ? &c->n_rating : &c->n_bucket;

	if (k == T_GLOBAL) {
		if (c->global)
			return 0;
		c->global = true;
		return 1;
	}
	if (name_index(*list, *n, agent) >= 0)
		return 0;
	if (c->n_rating + c->n_bucket + c->global >= TOPICS_PER_CLIENT)
		return -ENOSPC;
	if (!*list) {
		*list = calloc(TOPICS_PER_CLIENT, sizeof(**list));
		if (!*list)
			return -ENOMEM;
	}
	snprintf((*list)[(*n)++], sizeof(topic_name), "%s", agent);
	return 1;
}

/* c->lock held. 1 removed, 0 was not subscribed. */
static int unsubscribe(struct client *c, const char *topic)
{
	const char *agent = NULL;
	enum topic_kind k = topic_parse(topic, &agent);
	topic_name *list = k == T_RATING ? c->rating : c->bucket;
	size_t *n = k == T_RATING ? &c->n_rating : &c->n_bucket;
	ssize_t i;

	if (k == T_GLOBAL) {
		bool was = c->global;

		c->global = false;
		return was;
	}
	i = name_index(list, *n, agent);
	if (i < 0)
		return 0;
	memmove(&list[i], &list[i + 1], (*n - (size_t)i - 1) * sizeof(*list));
	(*n)--;
	return 1;
}

/* ---- per-client queue ----------------------------------------------------------------- */

/* c->lock held: stop sending updates; the sender writes the close frame. */
static void start_close(struct client *c, int code, const char *reason)
{
	unsigned int i;

	if (c->closing)
		return;
	c->closing = true;
	c->close_code = code;
	snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason);
	c->closing_since_ns = mono_ns();
	for (i = 0; i < c->n; i++)
		msg_unref(c->q[(c->head + i) % c->s->o.queue].m);
	c->n = 0;
	pthread_cond_signal(&c->cv);
}

/* c->lock held: unblocks the sender's write and CivetWeb's read at once. */
static void cut(struct client *c)
{
	if (c->shut || c->fd < 0)
		return;
	shutdown(c->fd, SHUT_RDWR);
	c->shut = true;
}

/* Statistics are atomic: they are counted under any of the locks. */
static void count(__u64 *field, __u64 n)
{
	__atomic_fetch_add(field, n, __ATOMIC_RELAXED);
}

/* A slow client: too far behind to catch up. */
static void cut_slow(struct client *c, const char *why)
{
	start_close(c, WS_CLOSE_POLICY, why);
	if (c->writing_since_ns)
		cut(c); /* its write is stuck: a close frame would not get through either */
	count(&c->s->st.cut_slow, 1);
}

/*
 * c->lock held. Queues m (a reference is taken); notify() wakes the sender.
 * With `latest_only` (bucket states), or when the queue is full, m replaces
 * the pending update of its topic; a full queue without one means the
 * client stays behind.
 */
static void enqueue(struct client *c, struct msg *m, bool latest_only)
{
	struct agd_stream *s = c->s;
	unsigned int i, cap = s->o.queue;

	if (c->closing)
		return;
	if (m->topic[0] && (latest_only || c->n >= cap)) {
		for (i = c->n; i-- > 0;) {
			struct qent *q = &c->q[(c->head + i) % cap];

			if (!strcmp(q->m->topic, m->topic)) {
				msg_ref(m);
				msg_unref(q->m);
				q->m = m; /* keeps its place and its age */
				count(&s->st.coalesced, 1);
				return;
			}
		}
	}
	if (c->n >= cap) {
		cut_slow(c, "too slow: the update queue is full");
		return;
	}
	msg_ref(m);
	c->q[(c->head + c->n) % cap] = (struct qent){ m, mono_ns() };
	c->n++;
}

/* c->lock held: wakes the sender once for everything queued since. */
static void notify(struct client *c)
{
	if (c->n)
		pthread_cond_signal(&c->cv);
}

static void send_close(struct client *c, int code, const char *reason)
{
	char frame[2 + sizeof(c->close_reason)];
	size_t n = strlen(reason);

	frame[0] = (char)(code >> 8);
	frame[1] = (char)(code & 0xff);
	memcpy(frame + 2, reason, n);
	mg_websocket_write(c->conn, MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE, frame, n + 2);
}

/* Appends m as one unmasked text frame (RFC 6455 5.2) to the batch buffer. */
static int frame_append(char **buf, size_t *len, size_t *cap, const struct msg *m)
{
	size_t need = *len + 10 + m->len;
	unsigned char *h;
	size_t hl;

	if (need > *cap) {
		size_t n = *cap ? *cap : 16384;
		char *b;

		while (n < need)
			n *= 2;
		b = realloc(*buf, n);
		if (!b)
			return -ENOMEM;
		*buf = b;
		*cap = n;
	}
	h = (unsigned char *)*buf + *len;
	h[0] = 0x80 | MG_WEBSOCKET_OPCODE_TEXT; /* FIN, text */
	if (m->len < 126) {
		h[1] = (unsigned char)m->len;
		hl = 2;
	} else if (m->len < 65536) {
		h[1] = 126;
		h[2] = (unsigned char)(m->len >> 8);
		h[3] = (unsigned char)m->len;
		hl = 4;
	} else {
		int i;

		h[1] = 127;
		for (i = 0; i < 8; i++)
			h[2 + i] = (unsigned char)((__u64)m->len >> (56 - 8 * i));
		hl = 10;
	}
	memcpy(h + hl, m->data, m->len);
	*len += hl + m->len;
	return 0;
}

/*
 * Writes the frames in one write under the connection's lock (which
 * CivetWeb's own pings take too). mg_websocket_write() would cost two
 * writes, and with TCP_NODELAY two segments, per update.
 */
static bool write_frames(struct client *c, const char *buf, size_t len)
{
	int n;

	mg_lock_connection(c->conn);
	n = mg_write(c->conn, buf, len);
	mg_unlock_connection(c->conn);
	return n == (int)len;
}

#define BATCH_BYTES (256 * 1024) /* written at once at most */

static void *sender(void *arg)
{
	struct client *c = arg;
	struct agd_stream *s = c->s;
	unsigned int cap = s->o.queue;
	struct qent *batch = malloc(cap * sizeof(*batch));
	char *out = NULL;
	size_t out_cap = 0;

	pthread_mutex_lock(&c->lock);
	while (!c->gone) {
		unsigned int i, k;
		size_t bytes, len;
		__u64 sent;
		bool failed = false;

		if (c->closing && c->close_sent) { /* nothing more to write */
			pthread_cond_wait(&c->cv, &c->lock);
			continue;
		}
		if (c->closing) {
			int code = c->close_code;
			char reason[sizeof(c->close_reason)];

			snprintf(reason, sizeof(reason), "%s", c->close_reason);
			c->close_sent = true;
			pthread_mutex_unlock(&c->lock);
			send_close(c, code, reason);
			pthread_mutex_lock(&c->lock);
			continue;
		}
		if (!c->n) {
			pthread_cond_wait(&c->cv, &c->lock);
			continue;
		}
		if (!batch) { /* no memory for a batch: one at a time */
			start_close(c, WS_CLOSE_INTERNAL, "out of memory");
			continue;
		}
		bytes = 0;
		for (k = 0; c->n && bytes < BATCH_BYTES; k++, c->n--, c->head = (c->head + 1) % cap) {
			batch[k] = c->q[c->head];
			bytes += batch[k].m->len;
		}
		c->writing_since_ns = batch[0].enq_ns; /* the oldest of the batch */
		pthread_mutex_unlock(&c->lock);
		len = 0;
		for (i = 0; i < k && !failed; i++)
			failed = frame_append(&out, &len, &out_cap, batch[i].m) != 0;
		failed = failed || !write_frames(c, out, len);
		sent = failed ? 0 : k;
		for (i = 0; i < k; i++)
			msg_unref(batch[i].m);
		pthread_mutex_lock(&c->lock);
		c->writing_since_ns = 0;
		pthread_mutex_unlock(&c->lock);
		count(&s->st.sent, sent);
		pthread_mutex_lock(&c->lock);
		if (failed) { /* the connection is gone or cut: nothing more to write */
			c->closing = c->close_sent = true;
			cut(c);
		}
	}
	pthread_mutex_unlock(&c->lock);
	free(batch);
	free(out);
	return NULL;
}

/* ---- the socket of a connection ------------------------------------------------------ */

static bool same_endpoint(const struct sockaddr_storage *ss, const char *addr, int port)
{
	char text[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)ss;

		return ntohs(a->sin_port) == port &&
		       inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text)) && !strcmp(text, addr);
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)ss;

		return ntohs(a->sin6_port) == port &&
		       inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text)) && !strcmp(text, addr);
	}
	return false;
}

/*
 * CivetWeb does not expose a connection's socket; a slow client can only be
 * cut with shutdown(2) on it, so it is found among the process's sockets by
 * its peer address and the local port (unique while the connection lives,
 * and the connection outlives the client record).
 */
static int find_socket(const struct mg_request_info *ri)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int found = -1;

	if (!d)
		return -1;
	while (found < 0 && (de = readdir(d))) {
		struct sockaddr_storage peer, local;
		socklen_t pl = sizeof(peer), ll = sizeof(local);
		struct stat st;
		int fd = atoi(de->d_name);

		if (de->d_name[0] < '0' || de->d_name[0] > '9' || fd == dirfd(d) ||
		    fstat(fd, &st) || !S_ISSOCK(st.st_mode))
			continue;
		if (getpeername(fd, (struct sockaddr *)&peer, &pl) ||
		    getsockname(fd, (struct sockaddr *)&local, &ll))
			continue;
		if (!same_endpoint(&peer, ri->remote_addr, ri->remote_port))
			continue;
		if ((local.ss_family == AF_INET &&
		     ntohs(((struct sockaddr_in *)&local)->sin_port) == ri->server_port) ||
		    (local.ss_family == AF_INET6 &&
		     ntohs(((struct sockaddr_in6 *)&local)->sin6_port) == ri->server_port))
			found = fd;
	}
	closedir(d);
	return found;
}

/* ---- CivetWeb callbacks -------------------------------------------------------------- */

static unsigned int clients_from(struct agd_stream *s, const char *ip)
{
	const struct client *c;
	unsigned int n = 0;

	for (c = s->clients; c; c = c->next)
		n += !strcmp(c->ip, ip);
	return n;
}

/* The ?topics= list, checked: 0, or -EINVAL with the bad topic in bad. */
static int query_topics(const struct mg_request_info *ri, char *buf, size_t len, char *bad,
			size_t bad_len)
{
	const char *q = ri->query_string;
	char *t, *save = NULL;
	size_t n = 0;
	int got;

	buf[0] = 0;
	if (!q)
		return 0;
	got = mg_get_var(q, strlen(q), "topics", buf, len);
	if (got == -2) {
		snprintf(bad, bad_len, "topics: the list is too long");
		return -EINVAL;
	}
	if (got < 0) {
		buf[0] = 0;
		return 0;
	}
	{
		char copy[8192];

		snprintf(copy, sizeof(copy), "%s", buf);
		for (t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			if (!agd_stream_topic_valid(t) || ++n > TOPICS_PER_CLIENT) {
				snprintf(bad, bad_len, "%.*s: %s", TOPIC_MAX, t,
					 n > TOPICS_PER_CLIENT ? "more than 256 topics" :
								 topic_problem());
				return -EINVAL;
			}
		}
	}
	return 0;
}

static int ws_connect(const struct mg_connection *cconn, void *cbdata)
{
	struct mg_connection *conn = (struct mg_connection *)cconn;
	const struct mg_request_info *ri = mg_get_request_info(conn);
	struct agd_stream *s = cbdata;
	char token[4096], topics[8192], bad[256];
	const char *q = ri->query_string;
	int got = q ? mg_get_var(q, strlen(q), "token", token, sizeof(token)) : -1;
	enum agd_stream_refusal why;
	bool full, per_ip;

	if (s->auth(s->auth_arg, conn, got >= 0 ? token : NULL)) {
		count(&s->st.refused[AGD_STREAM_REFUSED_AUTH], 1);
		return 1;
	}
	if (query_topics(ri, topics, sizeof(topics), bad, sizeof(bad))) {
		count(&s->st.refused[AGD_STREAM_REFUSED_TOPIC], 1);
		agd_reply_error(conn, 400, NULL, "%s", bad);
		return 1;
	}
	pthread_mutex_lock(&s->lock);
	full = s->stopping || s->n_clients >= s->o.max_clients;
	per_ip = clients_from(s, ri->remote_addr) >= s->o.max_per_ip;
	pthread_mutex_unlock(&s->lock);
	if (!full && !per_ip)
		return 0;
	why = full ? AGD_STREAM_REFUSED_FULL : AGD_STREAM_REFUSED_PER_IP;
	count(&s->st.refused[why], 1);
	if (full)
		agd_reply_error(conn, 503, "Retry-After: 5\r\n", "%u stream clients connected, the "
			       "most there may be (--stream-max-clients)", s->o.max_clients);
	else
		agd_reply_error(conn, 429, "Retry-After: 5\r\n", "%u stream clients from %s "
			       "connected, the most one address may have (--stream-max-per-ip)",
			       s->o.max_per_ip, ri->remote_addr);
	return 1;
}

static void client_free(struct client *c)
{
	unsigned int i;

	for (i = 0; i < c->n; i++) /* updates never sent */
		msg_unref(c->q[(c->head + i) % c->s->o.queue].m);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cv);
	free(c->q);
	free(c->rating);
	free(c->bucket);
	free(c);
}

static struct client *client_new(struct agd_stream *s, struct mg_connection *conn)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	struct client *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->q = calloc(s->o.queue, sizeof(*c->q));
	if (!c->q) {
		free(c);
		return NULL;
	}
	c->s = s;
	c->conn = conn;
	c->fd = find_socket(ri);
	snprintf(c->ip, sizeof(c->ip), "%s", ri->remote_addr);
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cv, NULL);
	return c;
}

static int start_sender(struct client *c)
{
	pthread_attr_t a;
	int err;

	pthread_attr_init(&a);
	pthread_attr_setstacksize(&a, SENDER_STACK);
	err = pthread_create(&c->thread, &a, sender, c);
	pthread_attr_destroy(&a);
	c->thread_started = !err;
	return -err;
}

/* The welcome and one "subscribed" per ?topics= entry. */
static void greet(struct client *c)
{
	const struct mg_request_info *ri = mg_get_request_info(c->conn);
	char topics[8192], *t, *save = NULL;
	struct msg *m;
	const char *q = ri->query_string;

	pthread_mutex_lock(&c->lock);
	m = reply("connection_success", NULL, NULL);
	if (m) {
		enqueue(c, m, false);
		msg_unref(m);
	}
	if (q && mg_get_var(q, strlen(q), "topics", topics, sizeof(topics)) > 0)
		for (t = strtok_r(topics, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			if (subscribe(c, t) < 0)
				continue;
			m = reply("subscribed", t, NULL);
			if (m) {
				enqueue(c, m, false);
				msg_unref(m);
			}
		}
	notify(c);
	pthread_mutex_unlock(&c->lock);
}

static void ws_ready(struct mg_connection *conn, void *cbdata)
{
	struct agd_stream *s = cbdata;
	struct client *c = client_new(s, conn);
	bool full, per_ip;

	if (!c) {
		mg_websocket_write(conn, MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE, "\x03\xf3no memory", 11);
		return;
	}
	pthread_mutex_lock(&s->lock);
	/* Checked again: other handshakes may have finished since ws_connect. */
	full = s->stopping || s->n_clients >= s->o.max_clients;
	per_ip = clients_from(s, c->ip) >= s->o.max_per_ip;
	if (!full && !per_ip) {
		c->next = s->clients;
		if (s->clients)
			s->clients->prev = c;
		s->clients = c;
		s->n_clients++;
		atomic_fetch_add(&s->n_listeners, 1);
		count(&s->st.accepted, 1);
	} else {
		count(&s->st.refused[full ? AGD_STREAM_REFUSED_FULL : AGD_STREAM_REFUSED_PER_IP], 1);
	}
	pthread_mutex_unlock(&s->lock);
	if (full || per_ip) {
		send_close(c, WS_CLOSE_TRY_LATER, full ? "too many stream clients" :
							  "too many stream clients from this address");
		client_free(c);
		return;
	}
	mg_set_user_connection_data(conn, c);
	if (start_sender(c)) {
		send_close(c, WS_CLOSE_INTERNAL, "cannot start a sender thread");
		pthread_mutex_lock(&c->lock);
		c->closing = c->close_sent = true;
		pthread_mutex_unlock(&c->lock);
		return;
	}
	greet(c);
}

/* One {"action": "subscribe"|"unsubscribe", "topic": "..."} message. */
static void client_message(struct client *c, const char *data, size_t len)
{
	json_error_t jerr;
	json_t *o = agd_json_loadb(data, len, 0, &jerr);
	const char *action = NULL, *topic = NULL, *type = NULL;
	char why[160];
	struct msg *m;
	int rc = 0;

	why[0] = 0;
	if (!o || !json_is_object(o))
		snprintf(why, sizeof(why), "expected a JSON object {\"action\", \"topic\"}");
	else if (json_unpack(o, "{s:s,s:s}", "action", &action, "topic", &topic))
		snprintf(why, sizeof(why), "action and topic are required strings");
	else if (strcmp(action, "subscribe") && strcmp(action, "unsubscribe"))
		snprintf(why, sizeof(why), "action: use subscribe or unsubscribe");
	else if (!agd_stream_topic_valid(topic))
		snprintf(why, sizeof(why), "%s", topic_problem());
	pthread_mutex_lock(&c->lock);
	if (!why[0]) {
		bool sub = !strcmp(action, "subscribe");

		rc = sub ? subscribe(c, topic) : unsubscribe(c, topic);
		type = sub ? "subscribed" : "unsubscribed";
		if (rc == -ENOSPC)
			snprintf(why, sizeof(why), "at most %d topics per connection",
				 TOPICS_PER_CLIENT);
		else if (rc < 0)
			snprintf(why, sizeof(why), "out of memory");
	}
	m = why[0] ? reply("error", topic && agd_stream_topic_valid(topic) ? topic : NULL, why) :
		     reply(type, topic, NULL);
	if (m) {
		enqueue(c, m, false);
		msg_unref(m);
	}
	notify(c);
	pthread_mutex_unlock(&c->lock);
	json_decref(o);
}

/* Closes from CivetWeb's worker: the frame is written here, not queued. */
static int close_now(struct client *c, int code, const char *reason)
{
	pthread_mutex_lock(&c->lock);
	start_close(c, code, reason);
	c->close_sent = true;
	pthread_mutex_unlock(&c->lock);
	send_close(c, code, reason);
	return 0;
}

static int ws_data(struct mg_connection *conn, int bits, char *data, size_t len, void *cbdata)
{
	struct client *c = mg_get_user_connection_data(conn);
	int op = bits & 0xf;
	bool fin = bits & 0x80;

	(void)cbdata;
	if (!c)
		return 0;
	if (op == MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE) {
		/* Echo the client's status code (RFC 6455 5.5.1), then CivetWeb closes. */
		int code = len >= 2 ? ((unsigned char)data[0] << 8) | (unsigned char)data[1] : 1000;

		pthread_mutex_lock(&c->lock);
		if (c->close_sent) { /* the answer to our own close frame */
			pthread_mutex_unlock(&c->lock);
			return 0;
		}
		pthread_mutex_unlock(&c->lock);
		return close_now(c, code, "");
	}
	if (op == MG_WEBSOCKET_OPCODE_PONG || op == MG_WEBSOCKET_OPCODE_PING)
		return 1;
	if (op == MG_WEBSOCKET_OPCODE_BINARY || op == MG_WEBSOCKET_OPCODE_CONTINUATION || !fin)
		return close_now(c, WS_CLOSE_UNSUPPORTED, "send unfragmented text messages");
	if (len > CLIENT_MSG_MAX)
		return close_now(c, WS_CLOSE_TOO_BIG, "messages are at most 4096 bytes");
	client_message(c, data, len);
	return 1;
}

static void ws_close(const struct mg_connection *conn, void *cbdata)
{
	struct client *c = mg_get_user_connection_data(conn);
	struct agd_stream *s = cbdata;

	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->gone = true;
	if (c->writing_since_ns)
		cut(c); /* the socket is still open: CivetWeb closes it after this */
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->lock);
	if (c->thread_started)
		pthread_join(c->thread, NULL);
	pthread_mutex_lock(&s->lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_clients--;
	atomic_fetch_sub(&s->n_listeners, 1);
	if (!s->n_clients)
		pthread_cond_broadcast(&s->empty_cv);
	pthread_mutex_unlock(&s->lock);
	mg_set_user_connection_data(conn, NULL);
	client_free(c);
}

/* ---- the hub ---------------------------------------------------------------------------- */

static bool want_events(void *arg)
{
	struct agd_stream *s = arg;

	return atomic_load_explicit(&s->n_listeners, memory_order_relaxed) > 0;
}

/* The engine's observer: copies into the inbox and returns. */
static void on_ratings(void *arg, const struct agd_rating_event *ev, size_t n)
{
	struct agd_stream *s = arg;
	size_t room, take;

	pthread_mutex_lock(&s->ilock);
	if (s->in_n + n > s->in_cap && s->in_cap < INBOX_MAX) {
		size_t cap = s->in_cap ? s->in_cap : 256;
		struct agd_rating_event *b;

		while (cap < s->in_n + n && cap < INBOX_MAX)
			cap *= 2;
		if (cap > INBOX_MAX)
			cap = INBOX_MAX;
		b = realloc(s->inbox, cap * sizeof(*b));
		if (b) {
			s->inbox = b;
			s->in_cap = cap;
		}
	}
	room = s->in_cap - s->in_n;
	take = n < room ? n : room;
	memcpy(s->inbox + s->in_n, ev, take * sizeof(*ev));
	s->in_n += take;
	pthread_cond_signal(&s->icv);
	pthread_mutex_unlock(&s->ilock);
	if (take < n)
		count(&s->st.lost, n - take);
}

static json_t *rating_data(const struct agd_rating_event *ev)
{
	return json_pack("{s:s,s:i,s:s?,s:s?,s:I,s:f,s:f,s:I}", "agent", ev->agent, "score",
			 ev->score, "id", ev->id[0] ? ev->id : NULL, "user",
			 ev->user[0] ? ev->user : NULL, "ts", (json_int_t)ev->ts_ms, "rate", ev->rate,
			 "mean_score", ev->mean_score, "ratings", (json_int_t)ev->ratings);
}

static struct msg *update(const char *type, const char *topic, json_t *data)
{
	if (!data)
		return NULL;
	return msg_json(topic, json_pack("{s:s,s:s,s:o}", "type", type, "topic", topic, "data",
					 data));
}

/*
 * A drained inbox to every subscribed client: clients outside, events
 * inside, so that each sender is woken once for the whole lot and writes
 * it in one go. Each update's JSON is built once, when a first client
 * wants it, and shared.
 */
static void fan_out(struct agd_stream *s, const struct agd_rating_event *ev, size_t n)
{
	struct msg **global = calloc(n, sizeof(*global)), **own = calloc(n, sizeof(*own));
	char topic[TOPIC_MAX];
	struct client *c;
	size_t i;

	if (!global || !own) {
		free(global);
		free(own);
		count(&s->st.lost, n);
		return;
	}
	pthread_mutex_lock(&s->lock);
	for (c = s->clients; c; c = c->next) {
		pthread_mutex_lock(&c->lock);
		for (i = 0; i < n && !c->closing; i++) {
			if (c->global) {
				if (!global[i])
					global[i] = update("rating_update", "rating.global",
							   rating_data(&ev[i]));
				if (global[i])
					enqueue(c, global[i], false);
			}
			if (c->n_rating && name_index(c->rating, c->n_rating, ev[i].agent) >= 0) {
				if (!own[i]) {
					snprintf(topic, sizeof(topic), "rating.agent.%s", ev[i].agent);
					own[i] = update("rating_update", topic, rating_data(&ev[i]));
				}
				if (own[i])
					enqueue(c, own[i], false);
			}
		}
		notify(c);
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_unlock(&s->lock);
	for (i = 0; i < n; i++) {
		msg_unref(global[i]);
		msg_unref(own[i]);
	}
	free(global);
	free(own);
}

static struct bucket_sample *sample_of(struct agd_stream *s, const char *name)
{
	struct bucket_sample *b;
	size_t i;

	for (i = 0; i < s->n_samples; i++)
		if (!strcmp(s->samples[i].name, name))
			return &s->samples[i];
	b = realloc(s->samples, (s->n_samples + 1) * sizeof(*b));
	if (!b)
		return NULL;
	s->samples = b;
	b = &s->samples[s->n_samples++];
	memset(b, 0, sizeof(*b));
	snprintf(b->name, sizeof(b->name), "%s", name);
	return b;
}

/* Agents someone watches the bucket of (s->lock held), marked seen. */
static void mark_watched(struct agd_stream *s)
{
	struct client *c;
	size_t i;

	for (i = 0; i < s->n_samples; i++)
		s->samples[i].seen = false;
	for (c = s->clients; c; c = c->next) {
		pthread_mutex_lock(&c->lock);
		for (i = 0; i < c->n_bucket; i++) {
			struct bucket_sample *b = sample_of(s, c->bucket[i]);

			if (b)
				b->seen = true;
		}
		pthread_mutex_unlock(&c->lock);
	}
}

/* An agent's bucket update, NULL on the first sample (no rate yet) or when the agent does
 * not exist. */
static struct msg *bucket_update(struct agd_stream *s, struct bucket_sample *b, __u64 now)
{
	struct agd_agent_view v;
	char topic[TOPIC_MAX];
	double dt;
	json_t *data;
	bool first = !b->t_ns;

	if (agd_engine_agent_view(s->e, b->name, &v)) {
		b->t_ns = 0;
		return NULL;
	}
	dt = (double)(now - b->t_ns) / 1e9;
	data = first ? NULL :
		       json_pack("{s:s,s:f,s:I,s:f,s:f,s:f,s:I,s:I,s:I}", "agent", b->name, "tokens",
				 v.tokens, "capacity", (json_int_t)v.burst, "rate", v.rate,
				 "passed_pps", (double)(v.counters.passed_packets - b->passed) / dt,
				 "dropped_pps", (double)(v.counters.dropped_packets - b->dropped) / dt,
				 "passed", (json_int_t)v.counters.passed_packets, "dropped",
				 (json_int_t)v.counters.dropped_packets, "ts", (json_int_t)wall_ms());
	b->passed = v.counters.passed_packets;
	b->dropped = v.counters.dropped_packets;
	b->t_ns = now;
	snprintf(topic, sizeof(topic), "bucket.agent.%s", b->name);
	return update("bucket_update", topic, data);
}

static void bucket_tick(struct agd_stream *s, __u64 now)
{
	struct client *c;
	size_t i, keep = 0;

	pthread_mutex_lock(&s->lock);
	mark_watched(s);
	pthread_mutex_unlock(&s->lock);
	for (i = 0; i < s->n_samples; i++)
		if (s->samples[i].seen)
			s->samples[keep++] = s->samples[i];
	s->n_samples = keep;
	for (i = 0; i < s->n_samples; i++) {
		/* The view takes the engine's lock: not under s->lock. */
		struct msg *m = bucket_update(s, &s->samples[i], now);

		if (!m)
			continue;
		pthread_mutex_lock(&s->lock);
		for (c = s->clients; c; c = c->next) {
			pthread_mutex_lock(&c->lock);
			if (name_index(c->bucket, c->n_bucket, s->samples[i].name) >= 0) {
				enqueue(c, m, true);
				notify(c);
			}
			pthread_mutex_unlock(&c->lock);
		}
		pthread_mutex_unlock(&s->lock);
		msg_unref(m);
	}
}

/* Clients behind by more than max_lag_ms are cut off; closing ones that did
 * not answer their close frame in time are shut down. */
static void lag_tick(struct agd_stream *s, __u64 now)
{
	__u64 max_lag = s->o.max_lag_ms * 1000000ULL;
	struct client *c;

	pthread_mutex_lock(&s->lock);
	for (c = s->clients; c; c = c->next) {
		__u64 oldest = 0;

		pthread_mutex_lock(&c->lock);
		if (c->closing) {
			if (now > c->closing_since_ns &&
			    now - c->closing_since_ns > CLOSE_GRACE_MS * 1000000ULL)
				cut(c);
			pthread_mutex_unlock(&c->lock);
			continue;
		}
		if (c->writing_since_ns)
			oldest = c->writing_since_ns;
		else if (c->n)
			oldest = c->q[c->head].enq_ns;
		/* An update queued after `now` was read is younger than now. */
		if (oldest && now > oldest && now - oldest > max_lag) {
			char why[100];

			snprintf(why, sizeof(why), "too slow: an update waited over %llu ms",
				 (unsigned long long)s->o.max_lag_ms);
			cut_slow(c, why);
		}
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_unlock(&s->lock);
}

static void *hub_thread(void *arg)
{
	struct agd_stream *s = arg;
	__u64 next_bucket = mono_ns() + BUCKET_PERIOD_MS * 1000000ULL;

	pthread_mutex_lock(&s->ilock);
	while (!s->hub_stop) {
		struct agd_rating_event *ev;
		struct timespec until;
		size_t n, cap;
		__u64 now;

		if (!s->in_n) {
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_nsec += TICK_MS * 1000000L;
			if (until.tv_nsec >= 1000000000L) {
				until.tv_sec++;
				until.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&s->icv, &s->ilock, &until);
		}
		/* Swap buffers: the engine fills the other one meanwhile. */
		ev = s->inbox;
		n = s->in_n;
		cap = s->in_cap;
		s->inbox = s->spare;
		s->in_cap = s->spare_cap;
		s->in_n = 0;
		s->spare = NULL;
		s->spare_cap = 0;
		pthread_mutex_unlock(&s->ilock);

		if (n)
			fan_out(s, ev, n);
		now = mono_ns();
		lag_tick(s, now);
		if (now >= next_bucket) {
			bucket_tick(s, now);
			next_bucket = now + BUCKET_PERIOD_MS * 1000000ULL;
		}

		pthread_mutex_lock(&s->ilock);
		if (!s->spare) {
			s->spare = ev;
			s->spare_cap = cap;
		} else {
			free(ev);
		}
	}
	pthread_mutex_unlock(&s->ilock);
	return NULL;
}

/* ---- life cycle ------------------------------------------------------------------------- */

int agd_stream_start(struct agd_engine *e, struct mg_context *mg, const struct agd_stream_opts *o,
		     agd_stream_auth_fn auth, void *auth_arg, struct agd_stream **out)
{
	struct agd_stream *s = calloc(1, sizeof(*s));
	int err;

	if (!s)
		return -ENOMEM;
	s->e = e;
	s->o = *o;
	s->auth = auth;
	s->auth_arg = auth_arg;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->empty_cv, NULL);
	pthread_mutex_init(&s->ilock, NULL);
	pthread_cond_init(&s->icv, NULL);
	atomic_init(&s->n_listeners, 0);
	err = pthread_create(&s->hub, NULL, hub_thread, s);
	if (err) {
		agd_stream_free(s);
		return -err;
	}
	s->hub_started = true;
	agd_engine_observe(e, on_ratings, want_events, s);
	mg_set_websocket_handler(mg, "/v1/stream", ws_connect, ws_ready, ws_data, ws_close, s);
	*out = s;
	return 0;
}

void agd_stream_shutdown(struct agd_stream *s)
{
	struct client *c;
	struct timespec until;
	bool any_open;

	if (!s)
		return;
	agd_engine_observe(s->e, NULL, NULL, NULL);
	pthread_mutex_lock(&s->ilock);
	s->hub_stop = true;
	pthread_cond_signal(&s->icv);
	pthread_mutex_unlock(&s->ilock);
	if (s->hub_started)
		pthread_join(s->hub, NULL);
	s->hub_started = false;

	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	any_open = s->clients != NULL;
	for (c = s->clients; c; c = c->next) {
		pthread_mutex_lock(&c->lock);
		start_close(c, WS_CLOSE_GOING_AWAY, "agentgated is shutting down");
		if (c->writing_since_ns)
			cut(c);
		pthread_mutex_unlock(&c->lock);
	}
	/* Clients that answer the close frame leave by themselves; the rest are
	 * cut after a short grace. */
	if (any_open) {
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 300 * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		while (s->n_clients && !pthread_cond_timedwait(&s->empty_cv, &s->lock, &until))
			;
		for (c = s->clients; c; c = c->next) {
			pthread_mutex_lock(&c->lock);
			cut(c);
			pthread_mutex_unlock(&c->lock);
		}
	}
	pthread_mutex_unlock(&s->lock);
}

void agd_stream_free(struct agd_stream *s)
{
	if (!s)
		return;
	agd_stream_shutdown(s); /* idempotent; mg_stop() has run the close handlers */
	free(s->inbox);
	free(s->spare);
	free(s->samples);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->empty_cv);
	pthread_mutex_destroy(&s->ilock);
	pthread_cond_destroy(&s->icv);
	free(s);
}

void agd_stream_get_stats(struct agd_stream *s, struct agd_stream_stats *st)
{
	size_t i;

	pthread_mutex_lock(&s->lock);
	st->clients = s->n_clients;
	pthread_mutex_unlock(&s->lock);
	st->accepted = __atomic_load_n(&s->st.accepted, __ATOMIC_RELAXED);
	for (i = 0; i < 4; i++)
		st->refused[i] = __atomic_load_n(&s->st.refused[i], __ATOMIC_RELAXED);
	st->sent = __atomic_load_n(&s->st.sent, __ATOMIC_RELAXED);
	st->coalesced = __atomic_load_n(&s->st.coalesced, __ATOMIC_RELAXED);
	st->lost = __atomic_load_n(&s->st.lost, __ATOMIC_RELAXED);
	st->cut_slow = __atomic_load_n(&s->st.cut_slow, __ATOMIC_RELAXED);
}
