/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The fleet's state shared by fleet.c (publishing, outbox), fleet_log.c
 * (the consumer) and demand.c (demand sharing), and the helpers on it
 * (common.c). fleet.c starts the other two; they depend on this file and
 * names.h only, never on fleet.c. */
#ifndef AGENTGATED_FLEET_COMMON_H
#define AGENTGATED_FLEET_COMMON_H

#include <pthread.h>
#include <nats/nats.h>

#include "names.h"

struct agd_outbox;

#define AGD_FLEET_RESULTS (1u << 17) /* per-rating outcomes remembered, by sequence */
#define AGD_FLEET_OPS 64             /* operator-change outcomes remembered */
#define AGD_LIST_MAX_URLS 16

struct item_result {
	__u64 seq;
	int code; /* 0 applied, AGD_ITEM_DUPLICATE, negative errno: refused */
};

/* The outcomes of one batch message's ratings (AGD_FLEET_BATCH), by
 * sequence: codes NULL when every one was 0 or when all is set. */
#define AGD_FLEET_BATCH_RESULTS 4096
struct batch_result {
	__u64 seq;
	__u32 n;
	int all;      /* nonzero: every rating's outcome (an invalid message) */
	short *codes; /* per rating: 0, AGD_ITEM_DUPLICATE or a negative errno */
};

struct op_result {
	__u64 seq;
	int err;
	bool created;
	char msg[256];
};

struct pub_slot;
struct comb_wait;

struct agd_fleet {
	struct agd_engine *e;
	struct agd_fleet_opts opts;
	natsOptions *nopts;
	natsConnection *nc;
	jsCtx *js;  /* operator changes, the consumer's dead letters: one at a time */
	jsCtx *pjs; /* ratings: asynchronous, acknowledged through f->waits (fleet.c) */
	pthread_mutex_t cmu;     /* single ratings combined (fleet.c): the queue below */
	struct comb_wait *comb_head, *comb_tail;
	bool comb_busy;          /* one of them leads */
	pthread_mutex_t plock;   /* the table below */
	struct pub_slot *waits;  /* messages awaiting their acknowledgement */
	size_t wmask, wn;

	pthread_mutex_t lock; /* everything below */
	pthread_cond_t cv;      /* applied moved; outbox grew */
	pthread_cond_t stop_cv; /* stopping */
	bool stopping;
	bool ready;     /* stream and consumer set up on the current connection */
	bool caught_up; /* the consumer found nothing pending once */
	__u64 applied;  /* the consumer's position: every sequence up to it is done */
	__u64 stream_last;
	struct item_result results[AGD_FLEET_RESULTS];
	struct batch_result batch_results[AGD_FLEET_BATCH_RESULTS];
	bool batches;          /* every host's consumer reads batch messages */
	__u64 batches_checked; /* when that was last asked, monotonic ms (outbox thread) */
	__u64 batches_every;   /* ms between those */
	__u64 gap_at;          /* the consumer's last delivery gap (its sequence) */
	unsigned int gap_tries; /* and how often it was read again */
	bool batches_logged;
	unsigned int batches_votes; /* checks in a row that found every host reads them */
	struct op_result ops[AGD_FLEET_OPS];
	struct agd_fleet_stats st;

	struct agd_outbox *outbox_db;
	__u64 ob_depth; /* messages in it, under lock */

	pthread_t consumer, outbox, demand;
	bool consumer_started, outbox_started, demand_started;
};

/* agentgate.ratings.<agent>, '.' in the name written %2E (a subject
 * token may not be empty) and an agent named dlq as %64lq (the dead-letter
 * subject is agentgate.ratings.dlq). */
#define AGD_FLEET_SUBJECT_MAX (sizeof(AGD_FLEET_RATINGS) + 3 * AG_NAME_MAX)
void agd_fleet_subject(const char *agent, char *subject, size_t len);

/* A rating as the stream carries it, the fields that change state:
 * {"id","agent","score"[,"user"][,"ts"]} written at out (at least
 * AGD_FLEET_LINE_MAX bytes: every string byte escaped as \u00XX), no
 * newline; its length. */
#define AGD_FLEET_LINE_MAX (6 * (AGD_RATING_ID_MAX + AG_NAME_MAX + AGD_RATING_USER_MAX) + 96)
size_t agd_fleet_rating_line(const struct agd_rating *r, char *out);

__u64 agd_fleet_wall_ms(void);
/* CLOCK_MONOTONIC now + ms, for pthread_cond_timedwait on f's conditions. */
void agd_fleet_deadline(struct timespec *ts, __u64 ms);
bool agd_fleet_pause(struct agd_fleet *f, __u64 ms);
bool agd_fleet_connected(struct agd_fleet *f);
/* Under f->lock. */
struct item_result *agd_fleet_result_slot(struct agd_fleet *f, __u64 seq);
void agd_fleet_record(struct agd_fleet *f, __u64 seq, int code);
/* A batch message's outcomes: codes[0..n), or all of them when all != 0. */
void agd_fleet_record_batch(struct agd_fleet *f, __u64 seq, const int *codes, size_t n, int all);
/* The outcome of rating pos of the batch message at seq; 0 when no longer
 * remembered. */
int agd_fleet_batch_result(struct agd_fleet *f, __u64 seq, size_t pos);
void agd_fleet_record_op(struct agd_fleet *f, __u64 seq, int err, bool created, const char *msg);

/* fleet_log.c */
void *agd_fleet_consumer(void *arg);
char *agd_fleet_op_encode(const struct agd_op *op);
/* 0, or -EINVAL with why. */
int agd_fleet_op_decode(const char *data, size_t len, struct agd_op *op, char *why, size_t wlen);
/* Frees what decoding a feed.set allocated (its parts). */
void agd_fleet_op_release(struct agd_op *op);
const char *agd_fleet_op_name(enum agd_op_kind kind);

/* demand.c */
void *agd_fleet_demand(void *arg);

#endif
