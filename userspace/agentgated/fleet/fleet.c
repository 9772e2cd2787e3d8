// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The fleet on NATS JetStream (fleet.h says what; docs/FLEET.md says why).
 *
 * Threads: the consumer applies the stream in order; the outbox publisher
 * drains ratings kept while NATS was unreachable; the demand thread
 * publishes and merges demand counters (demand.c). Publishing happens in
 * the caller's thread (an HTTP worker or an ingest stream), which then
 * waits until the consumer applied what it published.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>
#include <openssl/evp.h>

#include "common.h"
#include "core/outbox.h"
#include "fleet.h"

#define APPLY_WAIT_MS 10000 /* a publisher waits this long for its host to apply */
#define OUTBOX_BATCH 1024

_Static_assert(AGD_FLEET_SUBJECT_MAX <= AGD_OUTBOX_SUBJECT_MAX + 1 &&
	       AGD_RATING_ID_MAX <= AGD_OUTBOX_ID_MAX, "outbox fields hold a rating's");

static void nolog(int level, const char *fmt, ...)
{
}

/* ---- names ------------------------------------------------------------------- */

int agd_fleet_node_check(const char *node, struct agd_err *why)
{
	size_t n = strlen(node), i;

	if (!n || n > AGD_NODE_MAX) {
		return agd_errf(why, -1, "node name must be 1 to %d characters", AGD_NODE_MAX);
	}
	for (i = 0; i < n; i++) {
		char c = node[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-')) {
			return agd_errf(why, -1,
				"node name '%s': invalid character at position %zu "
				 "(allowed: A-Z a-z 0-9 _ -)", node, i + 1);
		}
	}
	return 0;
}

void agd_fleet_default_node(char *node, size_t len)
{
	char host[256] = "";
	size_t i;

	if (gethostname(host, sizeof(host) - 1) || !host[0])
		snprintf(host, sizeof(host), "node");
	host[AGD_NODE_MAX] = 0;
	for (i = 0; host[i]; i++)
		if (!((host[i] >= 'a' && host[i] <= 'z') || (host[i] >= 'A' && host[i] <= 'Z') ||
		      (host[i] >= '0' && host[i] <= '9') || host[i] == '_' || host[i] == '-'))
			host[i] = '-';
	snprintf(node, len, "%s", host);
}

/* ---- messages ---------------------------------------------------------------- */

static char *rating_payload(const struct agd_rating *r)
{
	char *text = malloc(AGD_FLEET_LINE_MAX);

	if (text)
		agd_fleet_rating_line(r, text);
	return text;
}

static void random_id(const char *node, char *id, size_t len)
{
	unsigned char b[16];
	size_t i, off;

	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
		__u64 t = agd_fleet_wall_ms() ^ ((__u64)getpid() << 40);

		for (i = 0; i < sizeof(b); i++)
			b[i] = (unsigned char)(t >> (8 * (i % 8))) ^ (unsigned char)rand();
	}
	off = (size_t)snprintf(id, len, "%s-", node);
	for (i = 0; i < sizeof(b) && off + 2 < len; i++, off += 2)
		snprintf(id + off, len - off, "%02x", b[i]);
}

static natsMsg *make_msg(const char *subject, const char *msg_id, const char *data, size_t len)
{
	natsMsg *m = NULL;

	if (natsMsg_Create(&m, subject, NULL, data, (int)len) != NATS_OK)
		return NULL;
	if (natsMsgHeader_Set(m, "Nats-Msg-Id", msg_id) != NATS_OK) {
		natsMsg_Destroy(m);
		return NULL;
	}
	return m;
}

/* ---- the outbox: ratings kept while NATS is unreachable (core/outbox.c) ----- */

/* Keeps ratings durably; 0 once committed. */
static int outbox_put(struct agd_fleet *f, const struct agd_rating *items, const size_t *idx,
		      size_t n)
{
	struct agd_outbox_msg *m = calloc(n ? n : 1, sizeof(*m));
	struct agd_err err = { 0 };
	size_t i;
	int rc = m ? 0 : -ENOMEM;

	for (i = 0; i < n && !rc; i++) {
		const struct agd_rating *r = &items[idx[i]];

		agd_fleet_subject(r->agent, m[i].subject, sizeof(m[i].subject));
		snprintf(m[i].id, sizeof(m[i].id), "%s", r->id);
		m[i].data = rating_payload(r);
		if (!m[i].data)
			rc = -ENOMEM;
		else
			m[i].len = strlen(m[i].data);
	}
	if (!rc)
		rc = agd_outbox_put(f->outbox_db, m, n, &err);
	else
		agd_errf(&err, rc, "cannot keep ratings in the outbox: out of memory");
	for (i = 0; m && i < n; i++)
		free((char *)m[i].data);
	free(m);
	if (rc) {
		f->opts.log(AGD_LOG_ERR, "fleet: %s", err.msg);
		return -EIO;
	}
	pthread_mutex_lock(&f->lock);
	f->ob_depth += n;
	f->st.queued += n;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->lock);
	return 0;
}

struct outbox_entry {
	__u64 key;
	natsMsg *msg;
	bool acked;
};

struct outbox_batch {
	struct outbox_entry *e;
	size_t n;
};

static void outbox_entry(void *arg, const struct agd_outbox_msg *m)
{
	struct outbox_batch *b = arg;
	struct outbox_entry *oe = &b->e[b->n];

	oe->key = m->key;
	oe->acked = false;
	oe->msg = make_msg(m->subject, m->id, m->data, m->len);
	if (oe->msg)
		b->n++;
}

static int outbox_read(struct agd_fleet *f, struct outbox_batch *b)
{
	b->n = 0;
	return agd_outbox_read(f->outbox_db, OUTBOX_BATCH, outbox_entry, b);
}

static void outbox_delete(struct agd_fleet *f, const struct outbox_batch *b)
{
	__u64 keys[OUTBOX_BATCH];
	struct agd_err err = { 0 };
	size_t i, n = 0, gone;

	for (i = 0; i < b->n; i++)
		if (b->e[i].acked)
			keys[n++] = b->e[i].key;
	if (agd_outbox_delete(f->outbox_db, keys, n, &gone, &err)) {
		/* Published but still kept: sent again later, and deduplicated then. */
		f->opts.log(AGD_LOG_ERR, "fleet: %s", err.msg);
		return;
	}
	pthread_mutex_lock(&f->lock);
	f->ob_depth -= gone;
	pthread_mutex_unlock(&f->lock);
}

/* ---- publishing ---------------------------------------------------------------- */

/*
 * Publishing ratings: one JetStream context for the whole host (f->pjs),
 * asynchronous, at most PUB_INFLIGHT publications awaiting their
 * acknowledgement (a publisher past that waits). Each publish_all call
 * registers its messages in f->waits (message address -> its waiter and
 * item) and sleeps until the context's handler has settled every one of
 * them: acknowledged (the stream's sequence), refused, or timed out after
 * --nats-timeout (jsPubOptions.MaxWait: the library calls the handler
 * then too). A 200 still means the log has the rating.
 */
#define PUB_INFLIGHT 4096

struct pub_wait {
	pthread_cond_t cv;
	size_t left; /* messages not settled yet */
	__u64 *seq;  /* per item: stream sequence once acknowledged */
	bool *dup;   /* per item: JetStream had its id already */
};

struct pub_slot {
	natsMsg *msg; /* NULL: free */
	struct pub_wait *w;
	size_t item, count; /* the items it carries: item .. item + count */
};

static size_t ptr_hash(const void *p, size_t mask)
{
	return (size_t)(((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ULL) & mask;
}

/* Under f->plock. The slot of msg, or NULL. Linear probing; a removal
 * shifts the probe run back so that lookups need no tombstones. */
static struct pub_slot *wait_find(struct agd_fleet *f, const natsMsg *msg)
{
	size_t h = ptr_hash(msg, f->wmask);

	while (f->waits[h].msg && f->waits[h].msg != msg)
		h = (h + 1) & f->wmask;
	return f->waits[h].msg ? &f->waits[h] : NULL;
}

/* Whether the entry at j, whose home is k, stays when i is emptied: when
 * k lies cyclically in (i, j]. */
static bool stays(size_t i, size_t j, size_t k)
{
	return i <= j ? (i < k && k <= j) : (i < k || k <= j);
}

static void wait_remove(struct agd_fleet *f, struct pub_slot *sl)
{
	size_t i = (size_t)(sl - f->waits), j = i;

	f->waits[i].msg = NULL;
	for (;;) {
		j = (j + 1) & f->wmask;
		if (!f->waits[j].msg)
			break;
		if (!stays(i, j, ptr_hash(f->waits[j].msg, f->wmask))) {
			f->waits[i] = f->waits[j];
			f->waits[j].msg = NULL;
			i = j;
		}
	}
	f->wn--;
}

/* Under f->plock: room for n more (the table at most half full). */
static int wait_room(struct agd_fleet *f, size_t n)
{
	struct pub_slot *old = f->waits;
	size_t cap = old ? f->wmask + 1 : 64, i, h;

	if (f->waits && 2 * (f->wn + n) <= cap)
		return 0;
	while (2 * (f->wn + n) > cap)
		cap *= 2;
	f->waits = calloc(cap, sizeof(*f->waits));
	if (!f->waits) {
		f->waits = old;
		return -ENOMEM;
	}
	for (i = 0; old && i <= f->wmask; i++) {
		if (!old[i].msg)
			continue;
		h = ptr_hash(old[i].msg, cap - 1);
		while (f->waits[h].msg)
			h = (h + 1) & (cap - 1);
		f->waits[h] = old[i];
	}
	f->wmask = cap - 1;
	free(old);
	return 0;
}

static void settle(struct agd_fleet *f, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae)
{
	struct pub_slot *sl;

	pthread_mutex_lock(&f->plock);
	sl = wait_find(f, msg);
	if (sl) {
		struct pub_wait *w = sl->w;

		for (size_t i = sl->item; pa && !pae && i < sl->item + sl->count; i++) {
			w->seq[i] = pa->Sequence;
			w->dup[i] = pa->Duplicate;
		}
		wait_remove(f, sl);
		if (!--w->left)
			pthread_cond_broadcast(&w->cv);
	}
	pthread_mutex_unlock(&f->plock);
}

/* Under f->plock: a message that was not sent, out of w's. */
static void settle_locked_remove(struct agd_fleet *f, const natsMsg *m, struct pub_wait *w)
{
	struct pub_slot *sl = wait_find(f, m);

	if (sl && sl->w == w) {
		wait_remove(f, sl);
		w->left--;
	}
}

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	settle(closure, msg, pa, pae);
	natsMsg_Destroy(msg); /* ours, acknowledged or not */
}

static int pub_open(struct agd_fleet *f)
{
	jsOptions jo;

	jsOptions_Init(&jo);
	jo.Wait = (int64_t)f->opts.timeout_ms;
	jo.PublishAsync.AckHandler = on_ack;
	jo.PublishAsync.AckHandlerClosure = f;
	jo.PublishAsync.MaxPending = PUB_INFLIGHT;
	jo.PublishAsync.StallWait = (int64_t)f->opts.timeout_ms;
	return natsConnection_JetStream(&f->pjs, f->nc, &jo) == NATS_OK ? 0 : -EIO;
}

/* Publishes msgs[0..n) (consumed) and waits for their acknowledgements.
 * Message k carries items item[k] .. item[k] + count[k] (count NULL: one);
 * seq[i] stays 0 for the items of a message not acknowledged in time. */
static void publish_all(struct agd_fleet *f, natsMsg **msgs, const size_t *item,
			const size_t *count, size_t n, __u64 *seq, bool *dup)
{
	struct pub_wait w = { .seq = seq, .dup = dup };
	natsMsg **sent = malloc((n ? n : 1) * sizeof(*sent)); /* the addresses, to forget */
	pthread_condattr_t ca;
	jsPubOptions po;
	struct timespec ts;
	size_t i;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w.cv, &ca);
	pthread_condattr_destroy(&ca);
	jsPubOptions_Init(&po);
	po.MaxWait = (int64_t)f->opts.timeout_ms;
	pthread_mutex_lock(&f->plock);
	if (!sent || !f->pjs || wait_room(f, n)) {
		pthread_mutex_unlock(&f->plock);
		goto out;
	}
	for (i = 0; i < n; i++) { /* registered before the handler can see them */
		struct pub_slot *sl = &f->waits[ptr_hash(msgs[i], f->wmask)];

		while (sl->msg)
			sl = &f->waits[(size_t)(sl - f->waits + 1) & f->wmask];
		*sl = (struct pub_slot){ .msg = msgs[i], .w = &w, .item = item[i],
					 .count = count ? count[i] : 1 };
		sent[i] = msgs[i];
		f->wn++;
	}
	w.left = n;
	pthread_mutex_unlock(&f->plock);
	for (i = 0; i < n; i++) {
		natsMsg *m = msgs[i];

		if (js_PublishMsgAsync(f->pjs, &msgs[i], &po) == NATS_OK) {
			msgs[i] = NULL; /* the library's until the handler */
			continue;
		}
		pthread_mutex_lock(&f->plock); /* not sent: settled here, ours again */
		settle_locked_remove(f, m, &w);
		pthread_mutex_unlock(&f->plock);
	}
	/* Every message sent settles within --nats-timeout (the handler runs
	 * for a timeout too); a second more, then forget what is left. */
	agd_fleet_deadline(&ts, f->opts.timeout_ms + 1000);
	pthread_mutex_lock(&f->plock);
	while (w.left && pthread_cond_timedwait(&w.cv, &f->plock, &ts) != ETIMEDOUT)
		;
	/* An entry still there was not settled: its message is alive (only
	 * the handler frees it, after removing the entry), its address ours. */
	for (i = 0; w.left && i < n; i++) {
		struct pub_slot *sl = wait_find(f, sent[i]);

		if (sl && sl->w == &w) {
			wait_remove(f, sl);
			w.left--;
		}
	}
	pthread_mutex_unlock(&f->plock);
out:
	free(sent);
	pthread_cond_destroy(&w.cv);
	for (i = 0; i < n; i++)
		natsMsg_Destroy(msgs[i]);
}

/* One message (consumed), its items 0..count: published and acknowledged
 * in this thread (a request whose answer the connection's reader hands
 * over directly, one thread switch fewer than the acknowledgement
 * handler's). */
static void publish_one(struct agd_fleet *f, natsMsg *m, size_t count, __u64 *seq, bool *dup)
{
	jsPubAck *pa = NULL;
	jsPubOptions po;
	jsCtx *js;
	size_t i;

	pthread_mutex_lock(&f->plock);
	js = f->pjs;
	pthread_mutex_unlock(&f->plock);
	jsPubOptions_Init(&po);
	po.MaxWait = (int64_t)f->opts.timeout_ms;
	if (js && js_PublishMsg(&pa, js, m, &po, NULL) == NATS_OK) {
		for (i = 0; i < count; i++) {
			seq[i] = pa->Sequence;
			dup[i] = pa->Duplicate;
		}
	}
	jsPubAck_Destroy(pa);
	natsMsg_Destroy(m);
}

/* ---- waiting for this host to apply ------------------------------------------------ */

/* Waits until the consumer applied seq; false on timeout or stop. */
static bool wait_applied(struct agd_fleet *f, __u64 seq)
{
	struct timespec ts;
	bool done;

	agd_fleet_deadline(&ts, APPLY_WAIT_MS);
	pthread_mutex_lock(&f->lock);
	while (f->applied < seq && !f->stopping)
		if (pthread_cond_timedwait(&f->cv, &f->lock, &ts) == ETIMEDOUT)
			break;
	done = f->applied >= seq;
	pthread_mutex_unlock(&f->lock);
	return done;
}

/* What applying seq gave: 0, AGD_ITEM_DUPLICATE or a negative errno; 0
 * when the record was overwritten (a batch larger than the ring). */
static int result_of(struct agd_fleet *f, __u64 seq)
{
	struct item_result r;

	pthread_mutex_lock(&f->lock);
	r = *agd_fleet_result_slot(f, seq);
	pthread_mutex_unlock(&f->lock);
	return r.seq == seq ? r.code : 0;
}

static int batch_result_of(struct agd_fleet *f, __u64 seq, size_t pos)
{
	int code;

	pthread_mutex_lock(&f->lock);
	code = agd_fleet_batch_result(f, seq, pos);
	pthread_mutex_unlock(&f->lock);
	return code;
}

/* ---- ratings: the replicator's submit -------------------------------------------- */

#define SINGLE ((size_t)-1) /* pos of an item sent in a message of its own */

struct submit {
	struct agd_rating *items; /* with ids */
	natsMsg **msgs;
	size_t *item, *count; /* per message: its first item, how many */
	size_t *pos;          /* per item: its line in a batch message, or SINGLE */
	__u64 *seq;
	bool *dup;
	size_t *unacked;
};

static void submit_free(struct submit *s)
{
	free(s->items);
	free(s->msgs);
	free(s->item);
	free(s->count);
	free(s->pos);
	free(s->seq);
	free(s->dup);
	free(s->unacked);
}

static int submit_prepare(struct agd_fleet *f, const struct agd_job *job, struct submit *s)
{
	size_t i, n = job->n;

	s->items = malloc(n * sizeof(*s->items));
	s->msgs = calloc(n, sizeof(*s->msgs));
	s->item = calloc(n, sizeof(*s->item));
	s->count = calloc(n, sizeof(*s->count));
	s->pos = calloc(n, sizeof(*s->pos));
	s->seq = calloc(n, sizeof(*s->seq));
	s->dup = calloc(n, sizeof(*s->dup));
	s->unacked = calloc(n, sizeof(*s->unacked));
	if (!s->items || !s->msgs || !s->item || !s->count || !s->pos || !s->seq || !s->dup ||
	    !s->unacked)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		struct agd_rating *r = &s->items[i];

		*r = job->items[i];
		if (!r->id[0]) /* the id makes a retry, and the outbox, exactly-once */
			random_id(f->opts.node, r->id, sizeof(r->id));
	}
	return 0;
}

/* A batch message's Nats-Msg-Id: "batch:" and its ratings' ids hashed
 * (SHA-256, 128 bits in hex; no node's generated id has a ':'). The same
 * ratings sent again make the same id, so JetStream drops the copy as it
 * drops a single rating's; ids in another grouping are caught by the
 * engine's own record of ids. */
#define BATCH_ID_LEN (6 + 32 + 1)
static int batch_id(const struct agd_rating *items, size_t n, char out[BATCH_ID_LEN])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	size_t i;
	int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);

	for (i = 0; ok && i < n; i++)
		ok = EVP_DigestUpdate(ctx, items[i].id, strlen(items[i].id) + 1);
	ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen >= 16;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return -ENOMEM;
	memcpy(out, "batch:", 6);
	for (i = 0; i < 16; i++)
		snprintf(out + 6 + 2 * i, 3, "%02x", md[i]);
	return 0;
}

/* Items from..n into one message of at most f->opts.batch ratings and
 * max_bytes: a batch message (one rating a line) when more than one fits,
 * the single form otherwise. *next: the first item left out. */
static natsMsg *pack(struct agd_fleet *f, struct submit *s, size_t from, size_t n, size_t max_bytes,
		     char *buf, size_t *next)
{
	char subject[AGD_FLEET_SUBJECT_MAX], id[BATCH_ID_LEN];
	size_t i = from, len = 0;

	while (i < n && i - from < f->opts.batch) {
		size_t l = agd_fleet_rating_line(&s->items[i], buf + len);

		if (i > from && len + l + 1 > max_bytes)
			break;
		s->pos[i] = i - from;
		len += l;
		buf[len++] = '\n';
		i++;
	}
	*next = i;
	if (i - from == 1) {
		s->pos[from] = SINGLE;
		agd_fleet_subject(s->items[from].agent, subject, sizeof(subject));
		return make_msg(subject, s->items[from].id, buf, len - 1);
	}
	if (batch_id(&s->items[from], i - from, id))
		return NULL;
	return make_msg(AGD_FLEET_BATCH, id, buf, len);
}

static bool batches_on(struct agd_fleet *f)
{
	bool on;

	pthread_mutex_lock(&f->lock);
	on = f->batches; /* never set with --nats-batch 1 (batches_check) */
	pthread_mutex_unlock(&f->lock);
	return on;
}

/* The most bytes of ratings in one message: half the server's largest
 * payload, at most 512 KiB, at least two of the longest lines. */
static size_t message_bytes(struct agd_fleet *f)
{
	int64_t maxp = natsConnection_GetMaxPayload(f->nc);
	size_t max_bytes = maxp > 4 * AGD_FLEET_LINE_MAX ? (size_t)maxp / 2 : 2 * AGD_FLEET_LINE_MAX;

	return max_bytes > 512 * 1024 ? 512 * 1024 : max_bytes;
}

/* The items as messages (batch messages when every host reads them),
 * published and settled. */
static int submit_publish(struct agd_fleet *f, struct submit *s, size_t n)
{
	size_t max_bytes = message_bytes(f);
	bool batches = n > 1 && batches_on(f);
	char *buf;
	size_t i, k = 0;

	buf = malloc(max_bytes + AGD_FLEET_LINE_MAX + 1);
	if (!buf)
		return -ENOMEM;
	for (i = 0; i < n; k++) {
		size_t next;

		s->item[k] = i;
		s->msgs[k] = batches ? pack(f, s, i, n, max_bytes, buf, &next) :
				       pack(f, s, i, i + 1, max_bytes, buf, &next);
		if (!s->msgs[k]) {
			while (k--)
				natsMsg_Destroy(s->msgs[k]);
			free(buf);
			return -ENOMEM;
		}
		s->count[k] = next - i;
		i = next;
	}
	free(buf);
	if (k == 1)
		publish_one(f, s->msgs[0], s->count[0], s->seq, s->dup);
	else
		publish_all(f, s->msgs, s->item, s->count, k, s->seq, s->dup);
	return 0;
}

/* Counts what the log did with each acknowledged item. */
static void submit_results(struct agd_fleet *f, struct agd_job *job, const struct submit *s)
{
	size_t i;

	for (i = 0; i < job->n; i++) {
		int code;

		if (!s->seq[i])
			continue;
		if (s->dup[i]) {
			job->duplicates++;
			if (job->item_err)
				job->item_err[i] = AGD_ITEM_DUPLICATE;
			continue;
		}
		code = s->pos[i] == SINGLE ? result_of(f, s->seq[i]) :
					     batch_result_of(f, s->seq[i], s->pos[i]);
		if (job->item_err)
			job->item_err[i] = code;
		if (code == AGD_ITEM_DUPLICATE)
			job->duplicates++;
		else if (code < 0)
			job->routed.refused++;
		else
			job->applied++;
	}
}

/*
 * Requests of one rating each that arrive together go out as one batch
 * message (while every host reads them): the first one leads, publishing
 * what is queued by then, its own rating and the others' (at most
 * --nats-batch, and what fits a message); the others wait; then the next
 * one queued leads. A rating alone is still a message of its own. Each
 * request gets its own rating's sequence and line, so its answer is what
 * it would have been alone.
 */
struct comb_wait {
	struct submit *s; /* one item: items[0]; seq, dup, pos [0] are set here */
	struct comb_wait *next;
	pthread_cond_t cv;
	bool done, lead;
};

/* Publishes the n requests from first as one message. */
static void comb_round(struct agd_fleet *f, struct comb_wait *first, size_t n)
{
	size_t max_bytes = message_bytes(f), i, next;
	struct submit r = { 0 };
	struct comb_wait *w;
	char *buf;
	natsMsg *m = NULL;

	r.items = malloc(n * sizeof(*r.items));
	r.pos = calloc(n, sizeof(*r.pos));
	r.seq = calloc(n, sizeof(*r.seq));
	r.dup = calloc(n, sizeof(*r.dup));
	buf = malloc(max_bytes + AGD_FLEET_LINE_MAX + 1);
	if (r.items && r.pos && r.seq && r.dup && buf) {
		for (i = 0, w = first; i < n; i++, w = w->next)
			r.items[i] = w->s->items[0];
		m = pack(f, &r, 0, n, max_bytes, buf, &next);
	}
	if (m) /* n fits one message (comb_publish's cap): next == n */
		publish_one(f, m, n, r.seq, r.dup);
	for (i = 0, w = first; i < n; i++, w = w->next) {
		w->s->seq[0] = r.seq[i];
		w->s->dup[0] = r.dup[i];
		w->s->pos[0] = n == 1 ? SINGLE : r.pos[i];
	}
	free(buf);
	free(r.items);
	free(r.pos);
	free(r.seq);
	free(r.dup);
}

static void comb_publish(struct agd_fleet *f, struct submit *s)
{
	struct comb_wait me = { .s = s }, *w, *first, *next;
	size_t cap = message_bytes(f) / AGD_FLEET_LINE_MAX, n;
	bool leading = true;

	if (cap > f->opts.batch)
		cap = f->opts.batch;
	pthread_cond_init(&me.cv, NULL);
	pthread_mutex_lock(&f->cmu);
	if (f->comb_tail)
		f->comb_tail->next = &me;
	else
		f->comb_head = &me;
	f->comb_tail = &me;
	if (f->comb_busy) {
		while (!me.done && !me.lead)
			pthread_cond_wait(&me.cv, &f->cmu);
		leading = !me.done;
	} else {
		f->comb_busy = true;
	}
	while (leading && !me.done) { /* rounds until its own went out */
		first = f->comb_head;
		for (n = 1, w = first; n < cap && w->next; n++)
			w = w->next;
		f->comb_head = w->next;
		if (!f->comb_head)
			f->comb_tail = NULL;
		w->next = NULL;
		pthread_mutex_unlock(&f->cmu);
		comb_round(f, first, n);
		pthread_mutex_lock(&f->cmu);
		for (w = first; w; w = next) {
			next = w->next;
			w->done = true;
			if (w != &me)
				pthread_cond_signal(&w->cv);
		}
	}
	if (leading) { /* hand on: the next queued one leads */
		if (f->comb_head) {
			f->comb_head->lead = true;
			pthread_cond_signal(&f->comb_head->cv);
		} else {
			f->comb_busy = false;
		}
	}
	pthread_mutex_unlock(&f->cmu);
	pthread_cond_destroy(&me.cv);
}

static int fleet_submit(void *arg, struct agd_job *job)
{
	struct agd_fleet *f = arg;
	struct submit s = { 0 };
	size_t i, n_unacked = 0;
	__u64 last = 0, dups = 0;
	int err;

	/* Whole or nothing (HTTP): refused here like a standalone host would. */
	if (!job->item_err) {
		job->err.code = agd_engine_check_agents(f->e, job, job->err.msg, sizeof(job->err.msg));
		if (job->err.code) {
			agd_job_complete(job);
			return 0;
		}
	}
	err = submit_prepare(f, job, &s);
	if (!err && agd_fleet_connected(f)) {
		if (job->n == 1 && batches_on(f))
			comb_publish(f, &s);
		else
			err = submit_publish(f, &s, job->n);
	}
	if (err)
		goto out;
	for (i = 0; i < job->n; i++) {
		if (!s.seq[i])
			s.unacked[n_unacked++] = i;
		else if (s.seq[i] > last)
			last = s.seq[i];
		dups += s.dup[i];
	}
	pthread_mutex_lock(&f->lock);
	f->st.published += job->n - n_unacked;
	f->st.duplicates += dups;
	pthread_mutex_unlock(&f->lock);
	/* Not acknowledged (or NATS unreachable): kept until it can be. */
	if (n_unacked) {
		err = outbox_put(f, s.items, s.unacked, n_unacked);
		if (err) {
			snprintf(job->err.msg, sizeof(job->err.msg), "ratings neither published nor kept: "
				 "the outbox in %s/outbox cannot be written", f->opts.state_dir);
			goto out;
		}
		job->routed.queued = true;
	}
	if (last && !wait_applied(f, last)) {
		/* Published and durable; this host applies it when it can. */
		job->routed.queued = true;
	}
	job->routed.sequence = last;
	submit_results(f, job, &s);
	if (job->applied + job->duplicates)
		agd_engine_job_agents(f->e, job);
out:
	submit_free(&s);
	if (err)
		return err; /* not taken: the caller answers */
	agd_job_complete(job);
	return 0;
}

/* ---- operator changes ------------------------------------------------------------ */

/* A feed set's prefixes into the log as feed.part messages of at most half
 * the server's largest payload (512 KiB at most): their sequences in
 * op->feed_parts, for the feed.set that follows. */
static int publish_feed_parts(struct agd_fleet *f, struct agd_op *op, struct agd_err *oe)
{
	const struct agd_feed_set *set = op->feed_set;
	int64_t maxp = natsConnection_GetMaxPayload(f->nc);
	size_t per = (size_t)(maxp > 2048 ? maxp / 2 : 1024), from, n = 0;
	char id[AGD_RATING_ID_MAX + 1];

	if (per > 512 * 1024)
		per = 512 * 1024;
	per /= 18; /* the longest encoded prefix */
	op->feed_n = set->n;
	op->feed.digest = agd_feed_digest(set);
	op->n_feed_parts = 0;
	op->feed_parts = calloc(set->n / per + 1, sizeof(__u64));
	if (!op->feed_parts)
		return agd_errf(oe, -ENOMEM, "out of memory");
	for (from = 0; from < set->n; from += per, n++) {
		jsPubAck *pa = NULL;
		jsPubOptions po;
		jsErrCode jerr = 0;
		uint8_t *buf;
		size_t len;
		natsMsg *m;
		natsStatus s;

		if (agd_feed_encode(set, from, per, &buf, &len))
			return agd_errf(oe, -ENOMEM, "out of memory");
		random_id(f->opts.node, id, sizeof(id));
		m = make_msg(AGD_FLEET_FEED_PART, id, (const char *)buf, len);
		free(buf);
		if (!m)
			return agd_errf(oe, -ENOMEM, "out of memory");
		jsPubOptions_Init(&po);
		po.MaxWait = (int64_t)f->opts.timeout_ms;
		s = js_PublishMsg(&pa, f->js, m, &po, &jerr);
		natsMsg_Destroy(m);
		if (s != NATS_OK)
			return agd_errf(oe, -ENOTCONN, "the fleet's log did not take the feed's "
					"prefixes: %s", natsStatus_GetText(s));
		op->feed_parts[n] = pa->Sequence;
		op->n_feed_parts = n + 1;
		jsPubAck_Destroy(pa);
	}
	return 0;
}

static int fleet_op(void *arg, const struct agd_op *in, bool *created, struct agd_err *oe)
{
	struct agd_fleet *f = arg;
	char id[AGD_RATING_ID_MAX + 1], subject[64];
	struct agd_op feed_op;
	const struct agd_op *op = in;
	char *payload;

	if (in->kind == AGD_OP_FEED_SET) {
		int err;

		if (!agd_fleet_connected(f))
			return agd_errf(oe, -ENOTCONN, "the fleet's NATS servers are unreachable: "
					"operator changes are replicated and wait for them");
		feed_op = *in;
		err = publish_feed_parts(f, &feed_op, oe);
		if (err) {
			agd_fleet_op_release(&feed_op);
			return err;
		}
		op = &feed_op;
	}
	payload = agd_fleet_op_encode(op);
	if (op == &feed_op)
		agd_fleet_op_release(&feed_op);
	jsPubAck *pa = NULL;
	jsPubOptions po;
	jsErrCode jerr = 0;
	natsMsg *m;
	natsStatus s;
	struct op_result *res;
	__u64 seq;
	int err;

	if (!payload) {
		snprintf(oe->msg, sizeof(oe->msg), "out of memory");
		return -ENOMEM;
	}
	if (!agd_fleet_connected(f)) {
		free(payload);
		snprintf(oe->msg, sizeof(oe->msg), "the fleet's NATS servers are unreachable: "
			 "operator changes are replicated and wait for them (ratings do not)");
		return -ENOTCONN;
	}
	random_id(f->opts.node, id, sizeof(id));
	snprintf(subject, sizeof(subject), "%s%s", AGD_FLEET_POLICY, agd_fleet_op_name(op->kind));
	m = make_msg(subject, id, payload, strlen(payload));
	free(payload);
	if (!m) {
		snprintf(oe->msg, sizeof(oe->msg), "out of memory");
		return -ENOMEM;
	}
	jsPubOptions_Init(&po);
	po.MaxWait = (int64_t)f->opts.timeout_ms;
	s = js_PublishMsg(&pa, f->js, m, &po, &jerr);
	natsMsg_Destroy(m);
	if (s != NATS_OK) {
		snprintf(oe->msg, sizeof(oe->msg), "the fleet's log did not take the change: %s",
			 natsStatus_GetText(s));
		return -ENOTCONN;
	}
	seq = pa->Sequence;
	jsPubAck_Destroy(pa);
	if (!wait_applied(f, seq)) {
		snprintf(oe->msg, sizeof(oe->msg), "published as sequence %llu, not yet applied "
			 "here", (unsigned long long)seq);
		return -ETIMEDOUT;
	}
	pthread_mutex_lock(&f->lock);
	res = &f->ops[seq % AGD_FLEET_OPS];
	if (res->seq == seq) {
		err = res->err;
		*created = res->created;
		snprintf(oe->msg, sizeof(oe->msg), "%s", res->msg);
	} else {
		err = 0;
	}
	pthread_mutex_unlock(&f->lock);
	return err;
}

/* ---- whether every host reads batch messages ------------------------------------- */

/* How often publishers ask whether every host reads batch messages: every
 * BATCH_CHECK_MS for up to 16 hosts, proportionally less often beyond (the
 * answer lists every host's consumer). */
#define BATCH_CHECK_MS 2000

static __u64 mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000 + (__u64)ts.tv_nsec / 1000000;
}

/* A host's consumer by name in the stream's answer, or NULL. */
static const jsConsumerInfo *info_of(const jsConsumerInfoList *list, const char *name)
{
	int i;

	for (i = 0; i < list->Count; i++)
		if (list->List[i]->Name && !strcmp(list->List[i]->Name, name))
			return list->List[i];
	return NULL;
}

/* Asks the stream for its consumers: batch messages go out only while
 * every host's (agentgate-<node>) says in its description that it reads
 * them, this host's too. A host of an older version, even one that is
 * down, keeps its consumer and so keeps everyone on a message per rating.
 * The names come from the stream's list of names, the descriptions from
 * its list of consumers: a name without its description there (a
 * clustered answer that left it out) counts as older. Batches go on only
 * when two checks in a row agree (an older host's consumer is briefly
 * gone while it makes it again), off at once; without this host's own
 * consumer (being made again) nothing changes. */
static void batches_check(struct agd_fleet *f)
{
	char own[sizeof("agentgate-") + AGD_NODE_MAX];
	jsConsumerNamesList *names = NULL;
	jsConsumerInfoList *list = NULL;
	const char *old = NULL;
	bool on, seen_own = false, was;
	int i;

	if (f->opts.batch <= 1 ||
	    js_ConsumerNames(&names, f->js, AGD_FLEET_STREAM, NULL, NULL) != NATS_OK)
		return; /* as it was; asked again later */
	if (js_Consumers(&list, f->js, AGD_FLEET_STREAM, NULL, NULL) != NATS_OK) {
		jsConsumerNamesList_Destroy(names);
		return;
	}
	snprintf(own, sizeof(own), "agentgate-%s", f->opts.node);
	for (i = 0; i < names->Count && !old; i++) {
		const char *name = names->List[i];
		const jsConsumerInfo *ci;
		const char *d;

		if (!name || strncmp(name, "agentgate-", 10))
			continue; /* not a host's */
		seen_own |= !strcmp(name, own);
		ci = info_of(list, name);
		d = ci && ci->Config ? ci->Config->Description : NULL;
		if (!d || !strstr(d, AGD_FLEET_READS_BATCHES))
			old = name;
	}
	f->batches_every = BATCH_CHECK_MS * (names->Count > 16 ? (__u64)names->Count / 16 : 1);
	if (!seen_own && !old)
		goto out;
	if (old)
		f->batches_votes = 0;
	else if (f->batches_votes < 2)
		f->batches_votes++;
	on = f->batches_votes >= 2;
	pthread_mutex_lock(&f->lock);
	was = f->batches;
	f->batches = on;
	pthread_mutex_unlock(&f->lock);
	if (on && !was)
		f->opts.log(AGD_LOG_INFO, "fleet: every host reads batch messages: up to %u "
			    "ratings go out in one", f->opts.batch);
	else if (old && (was || !f->batches_logged))
		f->opts.log(AGD_LOG_INFO, "fleet: host %s does not read batch messages (an "
			    "older version): one message per rating", old + 10);
	f->batches_logged |= old != NULL;
out:
	jsConsumerInfoList_Destroy(list);
	jsConsumerNamesList_Destroy(names);
}

static void batches_maybe_check(struct agd_fleet *f)
{
	__u64 now = mono_ms();
	bool ready;

	pthread_mutex_lock(&f->lock);
	ready = f->ready;
	pthread_mutex_unlock(&f->lock);
	if (!ready || (f->batches_checked && now - f->batches_checked < f->batches_every))
		return;
	f->batches_checked = now;
	batches_check(f);
}

/* ---- the outbox publisher ----------------------------------------------------------- */

static void *outbox_thread(void *arg)
{
	struct agd_fleet *f = arg;
	struct outbox_batch b = { calloc(OUTBOX_BATCH, sizeof(*b.e)), 0 };
	natsMsg **msgs = calloc(OUTBOX_BATCH, sizeof(*msgs));
	size_t *item = calloc(OUTBOX_BATCH, sizeof(*item));
	__u64 *seq = calloc(OUTBOX_BATCH, sizeof(*seq));
	bool *dup = calloc(OUTBOX_BATCH, sizeof(*dup));

	while (b.e && msgs && item && seq && dup) {
		size_t i, acked = 0;
		bool work;

		batches_maybe_check(f);
		pthread_mutex_lock(&f->lock);
		work = f->ob_depth > 0 && f->ready;
		pthread_mutex_unlock(&f->lock);
		if (!work || !agd_fleet_connected(f)) {
			if (!agd_fleet_pause(f, 200))
				break;
			continue;
		}
		if (outbox_read(f, &b) || !b.n) {
			if (!agd_fleet_pause(f, 500))
				break;
			continue;
		}
		for (i = 0; i < b.n; i++) {
			msgs[i] = b.e[i].msg;
			item[i] = i;
			seq[i] = 0;
			dup[i] = false;
		}
		publish_all(f, msgs, item, NULL, b.n, seq, dup);
		for (i = 0; i < b.n; i++) {
			b.e[i].acked = seq[i] != 0;
			acked += b.e[i].acked;
		}
		outbox_delete(f, &b);
		if (acked)
			f->opts.log(AGD_LOG_INFO, "fleet: published %zu ratings from the outbox", acked);
		if (acked < b.n && !agd_fleet_pause(f, 500))
			break;
	}
	free(b.e);
	free(msgs);
	free(item);
	free(seq);
	free(dup);
	return NULL;
}

/* ---- start and stop ------------------------------------------------------------------- */

static void on_disconnected(natsConnection *nc, void *closure)
{
	struct agd_fleet *f = closure;

	f->opts.log(AGD_LOG_WARN, "fleet: disconnected from NATS; ratings go to the outbox, "
		    "enforcement continues with the last rates");
}

static void on_reconnected(natsConnection *nc, void *closure)
{
	struct agd_fleet *f = closure;

	f->opts.log(AGD_LOG_INFO, "fleet: connected to NATS again");
}

static void on_connected(natsConnection *nc, void *closure)
{
	struct agd_fleet *f = closure;

	f->opts.log(AGD_LOG_INFO, "fleet: connected to NATS");
}

static int connect_nats(struct agd_fleet *f, struct agd_err *err)
{
	const char *urls[AGD_LIST_MAX_URLS];
	char name[80];
	natsStatus s;
	size_t i;

	for (i = 0; i < f->opts.n_urls && i < AGD_LIST_MAX_URLS; i++)
		urls[i] = f->opts.urls[i];
	snprintf(name, sizeof(name), "agentgated %s", f->opts.node);
	s = natsOptions_Create(&f->nopts);
	if (s == NATS_OK)
		s = natsOptions_SetServers(f->nopts, urls, (int)i);
	if (s == NATS_OK)
		s = natsOptions_SetName(f->nopts, name);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(f->nopts, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(f->nopts, 250);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(f->nopts, 2000);
	if (s == NATS_OK) /* a dead server is noticed within seconds */
		s = natsOptions_SetPingInterval(f->nopts, 1000);
	if (s == NATS_OK)
		s = natsOptions_SetMaxPingsOut(f->nopts, 3);
	if (s == NATS_OK)
		s = natsOptions_SetFailRequestsOnDisconnect(f->nopts, true);
	if (s == NATS_OK) /* a rating waits for its acknowledgement: no buffering */
		s = natsOptions_SetSendAsap(f->nopts, true);
	if (s == NATS_OK)
		/* With a callback the first connect retries in the background,
		 * not in this call: the API starts with NATS unreachable. */
		s = natsOptions_SetRetryOnFailedConnect(f->nopts, true, on_connected, f);
	if (s == NATS_OK)
		s = natsOptions_SetDisconnectedCB(f->nopts, on_disconnected, f);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectedCB(f->nopts, on_reconnected, f);
	if (s == NATS_OK) {
		s = natsConnection_Connect(&f->nc, f->nopts);
		if (s == NATS_NOT_YET_CONNECTED) {
			f->opts.log(AGD_LOG_WARN, "fleet: NATS not reachable yet; retrying in the "
				    "background (ratings go to the outbox)");
			s = NATS_OK;
		}
	}
	if (s == NATS_OK) {
		jsOptions jo;

		jsOptions_Init(&jo);
		jo.Wait = (int64_t)f->opts.timeout_ms;
		s = natsConnection_JetStream(&f->js, f->nc, &jo);
		if (s == NATS_OK && pub_open(f))
			s = NATS_ERR;
	}
	if (s != NATS_OK) {
		return agd_errf(err, -EIO, "fleet: cannot set up the NATS connection: %s",
			 natsStatus_GetText(s));
	}
	return 0;
}

int agd_fleet_start(struct agd_engine *e, const struct agd_fleet_opts *o, struct agd_fleet **out,
		    struct agd_err *err)
{
	struct agd_replicator repl = { fleet_submit, fleet_op, NULL };
	struct agd_fleet *f = calloc(1, sizeof(*f));
	struct agd_err oerr = { 0 };
	pthread_condattr_t ca;
	int rc;

	if (!f) {
		return agd_errf(err, -ENOMEM, "out of memory");
	}
	f->e = e;
	f->opts = *o;
	if (!f->opts.log)
		f->opts.log = nolog;
	f->applied = agd_engine_log_seq(e);
	pthread_mutex_init(&f->lock, NULL);
	pthread_mutex_init(&f->plock, NULL);
	pthread_mutex_init(&f->cmu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&f->cv, &ca);
	pthread_cond_init(&f->stop_cv, &ca);
	pthread_condattr_destroy(&ca);
	rc = agd_outbox_open(f->opts.state_dir, &f->outbox_db, &f->ob_depth, &oerr);
	if (rc)
		snprintf(err->msg, sizeof(err->msg), "%s", oerr.msg);
	if (!rc)
		rc = connect_nats(f, err);
	if (rc)
		goto fail;
	rc = -pthread_create(&f->consumer, NULL, agd_fleet_consumer, f);
	if (!rc) {
		f->consumer_started = true;
		rc = -pthread_create(&f->outbox, NULL, outbox_thread, f);
	}
	if (!rc) {
		f->outbox_started = true;
		rc = -pthread_create(&f->demand, NULL, agd_fleet_demand, f);
	}
	if (rc) {
		snprintf(err->msg, sizeof(err->msg),
			"fleet: cannot start its threads: %s", strerror(-rc));
		goto fail;
	}
	f->demand_started = true;
	repl.arg = f;
	agd_engine_replicate(e, &repl);
	f->opts.log(AGD_LOG_INFO, "fleet: node %s, %zu NATS server%s, %llu ratings in the outbox, "
		    "applied up to sequence %llu", o->node, o->n_urls, o->n_urls == 1 ? "" : "s",
		    (unsigned long long)f->ob_depth, (unsigned long long)f->applied);
	*out = f;
	return 0;
fail:
	agd_fleet_stop(f);
	return rc;
}

void agd_fleet_stop(struct agd_fleet *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	f->stopping = true;
	pthread_cond_broadcast(&f->cv);
	pthread_cond_broadcast(&f->stop_cv);
	pthread_mutex_unlock(&f->lock);
	if (f->consumer_started)
		pthread_join(f->consumer, NULL);
	if (f->outbox_started)
		pthread_join(f->outbox, NULL);
	if (f->demand_started)
		pthread_join(f->demand, NULL);
	if (f->js)
		jsCtx_Destroy(f->js);
	if (f->pjs)
		jsCtx_Destroy(f->pjs);
	if (f->nc) {
		natsConnection_Close(f->nc);
		natsConnection_Destroy(f->nc);
	}
	natsOptions_Destroy(f->nopts);
	agd_outbox_close(f->outbox_db);
	/* The library's threads may still run an acknowledgement handler,
	 * which takes f->plock: f stays (a leak at exit) unless they ended. */
	if (nats_CloseAndWait(2000) != NATS_OK) {
		f->opts.log(AGD_LOG_WARN, "fleet: the NATS library's threads did not end in 2 s");
		return;
	}
	pthread_mutex_destroy(&f->lock);
	pthread_mutex_destroy(&f->plock);
	pthread_mutex_destroy(&f->cmu);
	free(f->waits);
	for (size_t i = 0; i < AGD_FLEET_BATCH_RESULTS; i++)
		free(f->batch_results[i].codes);
	pthread_cond_destroy(&f->cv);
	pthread_cond_destroy(&f->stop_cv);
	free(f);
}

void agd_fleet_stats(struct agd_fleet *f, struct agd_fleet_stats *s)
{
	pthread_mutex_lock(&f->lock);
	*s = f->st;
	s->applied_seq = f->applied;
	s->lag = f->stream_last > f->applied ? f->stream_last - f->applied : 0;
	s->outbox_depth = f->ob_depth;
	s->caught_up = f->caught_up;
	s->batches = f->batches;
	pthread_mutex_unlock(&f->lock);
	s->connected = agd_fleet_connected(f);
}
