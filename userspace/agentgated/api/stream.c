// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The live stream (see stream.h). Threads:
 *  - the server's event loop runs the handshake hooks and hands over the
 *    client's messages (subscribe, unsubscribe, close);
 *  - one sender thread per client writes its queue, so a blocked write
 *    stalls that client only;
 *  - the hub thread fans applied ratings out to the subscribed clients'
 *    queues, samples subscribed buckets once a second and disconnects
 *    clients that stay behind.
 * The engine hands ratings to the hub through a bounded inbox and never
 * waits for a client. Here: the connections (the server's hooks), the
 * hub, start and stop; topics and subscriptions are stream_topics.c's,
 * messages, the queues and their senders stream_queue.c's.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server.h"
#include <jansson.h>

#include "agentgate.h"
#include "reply.h"
#include "reqlimits.h"
#include "stream.h"
#include "stream_int.h"

const char *const agd_stream_refusal_names[4] = { "auth", "topic", "per_ip", "full" };

struct bucket_sample {
	topic_name name; /* an agent's, or "/" and a parent's */
	__u64 passed, dropped, t_ns;
	bool seen; /* still subscribed at the last tick */
};

static __s64 wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (__s64)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the server's WebSocket hooks -------------------------------------------------------- */

static unsigned int clients_from(struct agd_stream *s, const char *ip)
{
	const struct client *c;
	unsigned int n = 0;

	for (c = s->clients; c; c = c->next)
		n += !strcmp(c->ip, ip);
	return n;
}

int agd_stream_connect(struct agd_stream *s, struct agd_conn *conn)
{
	const struct agd_reqinfo *ri = agd_conn_info(conn);
	char token[4096], topics[8192], bad[256];
	const char *q = ri->query_string;
	int got = q ? agd_query_var(q, "token", token, sizeof(token)) : -1;
	enum agd_stream_refusal why;
	struct handshake *keep;
	struct agd_token tok;
	bool full, per_ip;

	int rc;

	if (got == -2) {
		count(&s->st.refused[AGD_STREAM_REFUSED_AUTH], 1);
		return agd_reply_error(conn, 401, NULL, "?token= longer than %zu bytes",
				       sizeof(token) - 1);
	}
	rc = s->auth(s->auth_arg, conn, got >= 0 ? token : NULL, &tok);
	if (rc) {
		count(&s->st.refused[AGD_STREAM_REFUSED_AUTH], 1);
		return rc;
	}
	if (agd_stream_query_topics(ri, topics, sizeof(topics), bad, sizeof(bad))) {
		count(&s->st.refused[AGD_STREAM_REFUSED_TOPIC], 1);
		return agd_reply_error(conn, 400, NULL, "%s", bad);
	}
	pthread_mutex_lock(&s->lock);
	full = s->stopping || s->n_clients >= s->o.max_clients;
	per_ip = clients_from(s, ri->remote_addr) >= s->o.max_per_ip;
	pthread_mutex_unlock(&s->lock);
	if (!full && !per_ip) {
		/* For ws_ready: the token the client is checked against while
		 * connected (revocation, expiry), kept by connection until then. */
		keep = calloc(1, sizeof(*keep));
		if (!keep)
			return agd_reply_error(conn, 503, NULL, "out of memory");
		keep->conn = conn;
		keep->tok = tok;
		pthread_mutex_lock(&s->lock);
		keep->next = s->handshakes;
		s->handshakes = keep;
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	why = full ? AGD_STREAM_REFUSED_FULL : AGD_STREAM_REFUSED_PER_IP;
	count(&s->st.refused[why], 1);
	if (full)
		return agd_reply_error(conn, 503, "Retry-After: 5\r\n", "%u stream clients "
				       "connected, the most there may be (--stream-max-clients)",
				       s->o.max_clients);
	return agd_reply_error(conn, 429, "Retry-After: 5\r\n", "%u stream clients from %s "
			       "connected, the most one address may have (--stream-max-per-ip)",
			       s->o.max_per_ip, ri->remote_addr);
}

static void client_free(struct client *c)
{
	unsigned int i;

	for (i = 0; i < c->n; i++) /* updates never sent */
		agd_stream_msg_unref(c->q[(c->head + i) % c->s->o.queue].m);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cv);
	free(c->q);
	free(c->rating);
	free(c->bucket);
	free(c);
}

static struct client *client_new(struct agd_stream *s, struct agd_conn *conn)
{
	const struct agd_reqinfo *ri = agd_conn_info(conn);
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
	snprintf(c->ip, sizeof(c->ip), "%s", ri->remote_addr);
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cv, NULL);
	return c;
}

/* The token ws_connect kept for conn, taken off the list (NULL: none). */
static struct handshake *handshake_take(struct agd_stream *s, const struct agd_conn *conn)
{
	struct handshake **pp, *h = NULL;

	pthread_mutex_lock(&s->lock);
	for (pp = &s->handshakes; *pp; pp = &(*pp)->next)
		if ((*pp)->conn == conn) {
			h = *pp;
			*pp = h->next;
			break;
		}
	pthread_mutex_unlock(&s->lock);
	return h;
}

void agd_stream_ready(struct agd_stream *s, struct agd_conn *conn)
{
	struct handshake *hs = handshake_take(s, conn);
	struct client *c = client_new(s, conn);
	bool full, per_ip;

	if (c && hs)
		c->tok = hs->tok;
	free(hs);
	if (!c) {
		agd_ws_control(conn, 0x8, "\x03\xf3no memory", 11);
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
		agd_stream_send_close(c, WS_CLOSE_TRY_LATER, full ? "too many stream clients" :
							  "too many stream clients from this address");
		client_free(c);
		return;
	}
	agd_conn_set_data(conn, c);
	if (agd_stream_start_sender(c)) {
		agd_stream_send_close(c, WS_CLOSE_INTERNAL, "cannot start a sender thread");
		pthread_mutex_lock(&c->lock);
		c->closing = c->close_sent = true;
		pthread_mutex_unlock(&c->lock);
		return;
	}
	agd_stream_greet(c);
}

/* Closes from the server's loop: the frame goes before any queued update. */
static int close_now(struct client *c, int code, const char *reason)
{
	pthread_mutex_lock(&c->lock);
	agd_stream_start_close(c, code, reason);
	c->close_sent = true;
	pthread_mutex_unlock(&c->lock);
	agd_stream_send_close(c, code, reason);
	return 0;
}

int agd_stream_data(struct agd_stream *s, struct agd_conn *conn, int bits, char *data,
		    size_t len)
{
	struct client *c = agd_conn_data(conn);
	int op = bits & 0xf;
	bool fin = bits & 0x80;

	if (!c)
		return 0;
	if (op == WS_OP_CLOSE) {
		/* Echo the client's status code (RFC 6455 5.5.1), then the server closes. */
		int code = len >= 2 ? ((unsigned char)data[0] << 8) | (unsigned char)data[1] : 1000;

		pthread_mutex_lock(&c->lock);
		if (c->close_sent) { /* the answer to our own close frame */
			pthread_mutex_unlock(&c->lock);
			return 0;
		}
		pthread_mutex_unlock(&c->lock);
		return close_now(c, code, "");
	}
	if (op == WS_OP_PONG || op == WS_OP_PING)
		return 1;
	if (op != WS_OP_TEXT || !fin)
		return close_now(c, WS_CLOSE_UNSUPPORTED, "send unfragmented text messages");
	if (len > CLIENT_MSG_MAX)
		return close_now(c, WS_CLOSE_TOO_BIG, "messages are at most 4096 bytes");
	agd_stream_client_message(c, data, len);
	return 1;
}

void agd_stream_closed(struct agd_stream *s, struct agd_conn *conn)
{
	struct client *c = agd_conn_data(conn);

	free(handshake_take(s, conn)); /* closed before it was ready */
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->gone = true;
	if (c->writing_since_ns)
		agd_stream_cut(c); /* the socket is still open: the server closes it after this */
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
	agd_conn_set_data(conn, NULL);
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
	return agd_stream_msg_json(topic, json_pack("{s:s,s:s,s:o}", "type", type, "topic", topic,
						    "data", data));
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
					agd_stream_enqueue(c, global[i], false);
			}
			if (c->n_rating &&
			    agd_stream_name_index(c->rating, c->n_rating, ev[i].agent) >= 0) {
				if (!own[i]) {
					snprintf(topic, sizeof(topic), "rating.agent.%s", ev[i].agent);
					own[i] = update("rating_update", topic, rating_data(&ev[i]));
				}
				if (own[i])
					agd_stream_enqueue(c, own[i], false);
			}
		}
		agd_stream_notify(c);
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_unlock(&s->lock);
	for (i = 0; i < n; i++) {
		agd_stream_msg_unref(global[i]);
		agd_stream_msg_unref(own[i]);
	}
	free(global);
	free(own);
}

/* An event of agent's (type, data as data_of builds it for item i): to
 * rating.global, and to whoever follows that agent's ratings or bucket on
 * rating.agent.{agent}. Called outside s->lock, possibly under the
 * engine's. */
static void agent_events(struct agd_stream *s, const char *type, size_t n,
			 const char *(*agent_of)(const void *ev, size_t i),
			 json_t *(*data_of)(const void *ev, size_t i), const void *ev)
{
	char topic[TOPIC_MAX];
	struct client *c;
	size_t i;

	pthread_mutex_lock(&s->lock);
	for (c = s->clients; c; c = c->next) {
		pthread_mutex_lock(&c->lock);
		for (i = 0; i < n && !c->closing; i++) {
			const char *agent = agent_of(ev, i);
			bool own = (c->n_rating &&
				    agd_stream_name_index(c->rating, c->n_rating, agent) >= 0) ||
				   (c->n_bucket &&
				    agd_stream_name_index(c->bucket, c->n_bucket, agent) >= 0);
			struct msg *m;

			if (!c->global && !own)
				continue;
			if (own)
				snprintf(topic, sizeof(topic), "rating.agent.%s", agent);
			m = update(type, own ? topic : "rating.global", data_of(ev, i));
			if (m) {
				agd_stream_enqueue(c, m, false);
				agd_stream_msg_unref(m);
			}
		}
		agd_stream_notify(c);
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_unlock(&s->lock);
}

static const char *removal_agent(const void *ev, size_t i)
{
	return ((const struct agd_removal_event *)ev)[i].agent;
}

static json_t *removal_data(const void *ev, size_t i)
{
	const struct agd_removal_event *r = &((const struct agd_removal_event *)ev)[i];

	return json_pack("{s:s,s:s,s:f,s:I}", "agent", r->agent, "reason", r->reason, "idle_s",
			 (double)r->idle_ms / 1000, "ts", (json_int_t)r->ts_ms);
}

/* The engine removed agents (idle past their TTL, or evicted). */
static void on_removals(void *arg, const struct agd_removal_event *ev, size_t n)
{
	agent_events(arg, "agent_removed", n, removal_agent, removal_data, ev);
}

static const char *wave_agent(const void *ev, size_t i)
{
	return ((const struct agd_wave_event *)ev)[i].agent;
}

static json_t *wave_data(const void *ev, size_t i)
{
	const struct agd_wave_event *w = &((const struct agd_wave_event *)ev)[i];

	return json_pack("{s:s,s:s,s:I,s:I,s:b,s:I}", "agent", w->agent, "direction",
			 w->direction, "new_users", (json_int_t)w->new_users, "window_start",
			 (json_int_t)w->window_start_ms, "held", w->held, "ts",
			 (json_int_t)w->ts_ms);
}

/* A rating wave on an agent (many new users, one way). */
static void on_waves(void *arg, const struct agd_wave_event *ev, size_t n)
{
	agent_events(arg, "rating_wave", n, wave_agent, wave_data, ev);
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

/* A parent's bucket update (bucket.parent.{parent}), read from the maps. */
static struct msg *parent_update(struct agd_stream *s, struct bucket_sample *b, __u64 now)
{
	struct ag_ctx *ctx = agd_engine_ctx(s->e);
	struct ag_counters c = { 0 };
	struct ag_refusals rf = { 0 };
	struct ag_quota_status q;
	char topic[TOPIC_MAX];
	const char *name = b->name + 1;
	struct ag_agent a;
	double tokens = 0, dt;
	json_t *data = NULL, *quota = json_null();
	bool first = !b->t_ns;

	if (ag_agent_get(ctx, name, &a) || !a.is_parent) {
		b->t_ns = 0;
		return NULL;
	}
	ag_bucket_tokens(ctx, a.slot, &tokens);
	ag_counters_get(ctx, a.slot, &c);
	ag_refusals_get(ctx, a.slot, &rf);
	dt = (double)(now - b->t_ns) / 1e9;
	if (!first && !ag_quota_status(ctx, a.slot, &q) && q.limit)
		quota = json_pack("{s:I,s:s,s:I,s:f}", "limit", (json_int_t)q.limit, "window",
				  ag_quota_window_name(q.window), "used", (json_int_t)q.used,
				  "remaining", (double)q.limit - (double)q.used);
	if (!first)
		data = json_pack("{s:s,s:f,s:I,s:f,s:f,s:f,s:I,s:I,s:o,s:{s:I,s:I,s:I},s:I}", "parent",
				 name, "tokens", tokens, "capacity", (json_int_t)a.burst, "rate",
				 a.rate, "passed_pps", (double)(c.passed_packets - b->passed) / dt,
				 "dropped_pps", (double)(c.dropped_packets - b->dropped) / dt,
				 "passed", (json_int_t)c.passed_packets, "dropped",
				 (json_int_t)c.dropped_packets, "quota", quota, "refused", "rate",
				 (json_int_t)(c.dropped_packets + c.would_drop_packets -
					      rf.parent_packets - rf.quota_packets),
				 "quota", (json_int_t)rf.quota_packets, "above",
				 (json_int_t)rf.parent_packets, "ts", (json_int_t)wall_ms());
	b->passed = c.passed_packets;
	b->dropped = c.dropped_packets;
	b->t_ns = now;
	snprintf(topic, sizeof(topic), "bucket.parent.%s", name);
	return update("bucket_update", topic, data);
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

	if (b->name[0] == '/')
		return parent_update(s, b, now);
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
			if (agd_stream_name_index(c->bucket, c->n_bucket, s->samples[i].name) >= 0) {
				agd_stream_enqueue(c, m, true);
				agd_stream_notify(c);
			}
			pthread_mutex_unlock(&c->lock);
		}
		pthread_mutex_unlock(&s->lock);
		agd_stream_msg_unref(m);
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
				agd_stream_cut(c);
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
			agd_stream_cut_slow(c, why);
		}
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_unlock(&s->lock);
}

/* Each client's token still good: revoked or expired, it is closed with
 * the code the auth layer gives. */
static void token_tick(struct agd_stream *s)
{
	struct client *c;

	pthread_mutex_lock(&s->lock);
	for (c = s->clients; c; c = c->next) {
		int code;

		if (!c->tok.exp)
			continue;
		code = s->recheck(s->auth_arg, &c->tok);
		if (!code)
			continue;
		pthread_mutex_lock(&c->lock);
		agd_stream_start_close(c, code, code == AGD_WS_CLOSE_REVOKED ? "token revoked" :
							      "token expired");
		agd_stream_notify(c);
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
			token_tick(s);
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

int agd_stream_start(struct agd_engine *e, const struct agd_stream_opts *o,
		     agd_stream_auth_fn auth, agd_stream_recheck_fn recheck, void *auth_arg,
		     struct agd_stream **out)
{
	struct agd_stream *s = calloc(1, sizeof(*s));
	int err;

	if (!s)
		return -ENOMEM;
	s->e = e;
	s->o = *o;
	s->auth = auth;
	s->recheck = recheck;
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
	agd_engine_observe_removals(e, on_removals, s);
	agd_engine_observe_waves(e, on_waves, s);
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
	agd_engine_observe_removals(s->e, NULL, NULL);
	agd_engine_observe_waves(s->e, NULL, NULL);
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
		agd_stream_start_close(c, WS_CLOSE_GOING_AWAY, "agentgated is shutting down");
		/* Queued with the server at once (it goes out after a batch being
		 * written), not through the sender thread. */
		if (!c->close_sent) {
			c->close_sent = true;
			agd_stream_send_close(c, WS_CLOSE_GOING_AWAY, "agentgated is shutting down");
		}
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
			agd_stream_cut(c);
			pthread_mutex_unlock(&c->lock);
		}
	}
	pthread_mutex_unlock(&s->lock);
}

void agd_stream_free(struct agd_stream *s)
{
	if (!s)
		return;
	agd_stream_shutdown(s); /* idempotent; the server's stop has closed every client */
	while (s->handshakes) {
		struct handshake *h = s->handshakes;

		s->handshakes = h->next;
		free(h);
	}
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
