/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What the stream's files share, private to them: stream.c (the
 * connections, the hub, the life cycle), stream_topics.c (topics and
 * subscriptions) and stream_queue.c (messages, the per-client queues, the
 * sender threads).
 */
#ifndef AGENTGATED_STREAM_INT_H
#define AGENTGATED_STREAM_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>
#include <linux/types.h>

#include <jansson.h>

#include "agentgate.h"
#include "core/engine.h"
#include "stream.h"

struct agd_reqinfo;

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

/* One update or reply, shared by every queue it is in. */
struct msg {
	atomic_uint refs;
	char topic[TOPIC_MAX]; /* "" for replies: never coalesced */
	size_t len;
	char data[];
};

/* WebSocket opcodes (RFC 6455 5.2). */
#define WS_OP_TEXT 0x1
#define WS_OP_CLOSE 0x8
#define WS_OP_PING 0x9
#define WS_OP_PONG 0xa

struct qent {
	struct msg *m;
	__u64 enq_ns;
};

/* An agent's name, or "/" and a parent's (bucket.parent.{parent}). */
typedef char topic_name[AG_NAME_MAX + 2];

struct client {
	struct agd_stream *s;
	struct client *next, *prev;
	struct agd_conn *conn;
	char ip[48];

	pthread_mutex_t lock;
	pthread_cond_t cv;
	struct qent *q; /* ring of s->o.queue entries */
	unsigned int head, n;
	__u64 writing_since_ns; /* enqueue time of the update being written; 0: idle */
	struct agd_token tok; /* tok.exp 0: connected without a token */
	bool global;
	topic_name *rating, *bucket;
	size_t n_rating, n_bucket;
	bool closing;     /* no more updates; the sender sends the close frame */
	bool close_sent;
	bool gone;        /* the server closed it: the sender leaves */
	bool shut;        /* socket shut down */
	int close_code;
	char close_reason[100];
	__u64 closing_since_ns;

	pthread_t thread;
	bool thread_started;
};

struct bucket_sample;

/* A handshake ws_connect accepted, until ws_ready makes its client. */
struct handshake {
	struct handshake *next;
	const struct agd_conn *conn;
	struct agd_token tok;
};

struct agd_stream {
	struct agd_engine *e;
	struct agd_stream_opts o;
	struct handshake *handshakes; /* under lock */
	agd_stream_auth_fn auth;
	agd_stream_recheck_fn recheck;
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

static inline __u64 mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000000000ULL + (__u64)ts.tv_nsec;
}

/* Statistics are atomic: they are counted under any of the locks. */
static inline void count(__u64 *field, __u64 n)
{
	__atomic_fetch_add(field, n, __ATOMIC_RELAXED);
}

/* stream_queue.c */
struct msg *agd_stream_msg_json(const char *topic, json_t *o);
void agd_stream_msg_unref(struct msg *m);
struct msg *agd_stream_reply(const char *type, const char *topic, const char *message);
void agd_stream_start_close(struct client *c, int code, const char *reason);
void agd_stream_cut(struct client *c);
void agd_stream_cut_slow(struct client *c, const char *why);
void agd_stream_enqueue(struct client *c, struct msg *m, bool latest_only);
void agd_stream_notify(struct client *c);
void agd_stream_send_close(struct client *c, int code, const char *reason);
int agd_stream_start_sender(struct client *c);

/* stream_topics.c */
ssize_t agd_stream_name_index(topic_name *list, size_t n, const char *name);
int agd_stream_query_topics(const struct agd_reqinfo *ri, char *buf, size_t len, char *bad,
			    size_t bad_len);
void agd_stream_greet(struct client *c);
void agd_stream_client_message(struct client *c, const char *data, size_t len);

#endif
