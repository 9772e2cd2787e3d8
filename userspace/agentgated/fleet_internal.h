/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The fleet's parts shared by fleet.c (publishing, outbox), fleet_log.c
 * (the consumer) and demand.c (demand sharing). */
#ifndef AGENTGATED_FLEET_INTERNAL_H
#define AGENTGATED_FLEET_INTERNAL_H

#include <pthread.h>
#include <lmdb.h>
#include <nats/nats.h>

#include "fleet.h"

#define AGD_FLEET_RESULTS (1u << 17) /* per-rating outcomes remembered, by sequence */
#define AGD_FLEET_OPS 64             /* operator-change outcomes remembered */
#define AGD_LIST_MAX_URLS 16

struct item_result {
	__u64 seq;
	int code; /* 0 applied, AG_ITEM_DUPLICATE, negative errno: refused */
};

struct op_result {
	__u64 seq;
	int err;
	bool created;
	char msg[256];
};

struct agd_fleet {
	struct ag_engine *e;
	struct agd_fleet_opts opts;
	natsOptions *nopts;
	natsConnection *nc;
	jsCtx *js;

	pthread_mutex_t lock; /* everything below */
	pthread_cond_t cv;      /* applied moved; outbox grew */
	pthread_cond_t stop_cv; /* stopping */
	bool stopping;
	bool ready;     /* stream and consumer set up on the current connection */
	bool caught_up; /* the consumer found nothing pending once */
	__u64 applied;  /* the consumer's position: every sequence up to it is done */
	__u64 stream_last;
	struct item_result results[AGD_FLEET_RESULTS];
	struct op_result ops[AGD_FLEET_OPS];
	struct agd_fleet_stats st;

	pthread_mutex_t ob_lock; /* the outbox's write side */
	MDB_env *ob_env;
	MDB_dbi ob_dbi;
	__u64 ob_next;  /* next key */
	__u64 ob_depth; /* under lock */

	pthread_t consumer, outbox, demand;
	bool consumer_started, outbox_started, demand_started;
};

__u64 agd_fleet_wall_ms(void);
bool agd_fleet_pause(struct agd_fleet *f, __u64 ms);
bool agd_fleet_connected(struct agd_fleet *f);
/* Under f->lock. */
void agd_fleet_record(struct agd_fleet *f, __u64 seq, int code);
void agd_fleet_record_op(struct agd_fleet *f, __u64 seq, int err, bool created, const char *msg);

/* fleet_log.c */
void *agd_fleet_consumer(void *arg);
char *agd_fleet_op_encode(const struct ag_op *op);
/* 0, or -EINVAL with why. */
int agd_fleet_op_decode(const char *data, size_t len, struct ag_op *op, char *why, size_t wlen);
const char *agd_fleet_op_name(enum ag_op_kind kind);

/* demand.c */
void *agd_fleet_demand(void *arg);

#endif
