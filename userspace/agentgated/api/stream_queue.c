// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The stream's messages and each client's queue: coalescing, closing, and
 * the client's sender thread that writes it (stream.c: the connections and
 * the hub that fills the queues).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "server.h"
#include <jansson.h>

#include "stream.h"
#include "stream_int.h"

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
struct msg *agd_stream_msg_json(const char *topic, json_t *o)
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

void agd_stream_msg_unref(struct msg *m)
{
	if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
		free(m);
}

struct msg *agd_stream_reply(const char *type, const char *topic, const char *message)
{
	json_t *o = json_pack("{s:s}", "type", type);

	if (o && topic)
		json_object_set_new(o, "topic", json_string(topic));
	if (o && message)
		json_object_set_new(o, "message", json_string(message));
	return agd_stream_msg_json("", o);
}

/* ---- per-client queue ----------------------------------------------------------------- */

/* c->lock held: stop sending updates; the sender writes the close frame. */
void agd_stream_start_close(struct client *c, int code, const char *reason)
{
	unsigned int i;

	if (c->closing)
		return;
	c->closing = true;
	c->close_code = code;
	snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason);
	c->closing_since_ns = mono_ns();
	for (i = 0; i < c->n; i++)
		agd_stream_msg_unref(c->q[(c->head + i) % c->s->o.queue].m);
	c->n = 0;
	pthread_cond_signal(&c->cv);
}

/* c->lock held: the socket shut down; the server's loop then closes the
 * connection, which also ends a write the sender waits for. */
void agd_stream_cut(struct client *c)
{
	if (c->shut || c->gone)
		return;
	agd_conn_cut(c->conn);
	c->shut = true;
}

/* A slow client: too far behind to catch up. */
void agd_stream_cut_slow(struct client *c, const char *why)
{
	agd_stream_start_close(c, WS_CLOSE_POLICY, why);
	if (c->writing_since_ns)
		agd_stream_cut(c); /* its write is stuck: a close frame would not get through either */
	count(&c->s->st.cut_slow, 1);
}

/*
 * c->lock held. Queues m (a reference is taken); agd_stream_notify() wakes the sender.
 * With `latest_only` (bucket states), or when the queue is full, m replaces
 * the pending update of its topic; a full queue without one means the
 * client stays behind.
 */
void agd_stream_enqueue(struct client *c, struct msg *m, bool latest_only)
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
				agd_stream_msg_unref(q->m);
				q->m = m; /* keeps its place and its age */
				count(&s->st.coalesced, 1);
				return;
			}
		}
	}
	if (c->n >= cap) {
		agd_stream_cut_slow(c, "too slow: the update queue is full");
		return;
	}
	msg_ref(m);
	c->q[(c->head + c->n) % cap] = (struct qent){ m, mono_ns() };
	c->n++;
}

/* c->lock held: wakes the sender once for everything queued since. */
void agd_stream_notify(struct client *c)
{
	if (c->n)
		pthread_cond_signal(&c->cv);
}

void agd_stream_send_close(struct client *c, int code, const char *reason)
{
	char frame[2 + sizeof(c->close_reason)];
	size_t n = strlen(reason);

	frame[0] = (char)(code >> 8);
	frame[1] = (char)(code & 0xff);
	memcpy(frame + 2, reason, n);
	agd_ws_control(c->conn, WS_OP_CLOSE, frame, n + 2);
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
	h[0] = 0x80 | WS_OP_TEXT; /* FIN, text */
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

/* Writes the frames in one go (the server's loop writes them; this thread
 * waits): one system call and, with TCP_NODELAY, one segment a batch. */
static bool write_frames(struct client *c, const char *buf, size_t len)
{
	return agd_ws_write(c->conn, buf, len);
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
			agd_stream_send_close(c, code, reason);
			pthread_mutex_lock(&c->lock);
			continue;
		}
		if (!c->n) {
			pthread_cond_wait(&c->cv, &c->lock);
			continue;
		}
		if (!batch) { /* no memory for a batch: one at a time */
			agd_stream_start_close(c, WS_CLOSE_INTERNAL, "out of memory");
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
			agd_stream_msg_unref(batch[i].m);
		pthread_mutex_lock(&c->lock);
		c->writing_since_ns = 0;
		pthread_mutex_unlock(&c->lock);
		count(&s->st.sent, sent);
		pthread_mutex_lock(&c->lock);
		if (failed) { /* the connection is gone or cut: nothing more to write */
			c->closing = c->close_sent = true;
			agd_stream_cut(c);
		}
	}
	pthread_mutex_unlock(&c->lock);
	free(batch);
	free(out);
	return NULL;
}

int agd_stream_start_sender(struct client *c)
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
