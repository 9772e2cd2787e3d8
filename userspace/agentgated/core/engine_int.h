/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The engine's insides, shared by its files and by nothing else:
 *   engine.c     open and close, the agent table, the helpers below, reload, stats
 *   apply.c      the apply thread: the queue, group commits, histories, observers
 *   ops.c        operator changes applied here, bucket operations, replication
 *   reconcile.c  start: the agents and rules LMDB and the maps know, the owner's journal
 *   views.c      agents as the API shows them: views, pages, counts, explain
 * None of them includes another's declarations but through this header;
 * engine.h is the engine's API, this is not.
 */
#ifndef AGENTGATED_ENGINE_INT_H
#define AGENTGATED_ENGINE_INT_H

#include <jansson.h>

#include "engine.h"
#include "store.h"

/* One agent in memory: its stored record and what was last written into
 * its bucket. Only the engine lock holder touches these. */
struct entry {
	struct entry *next; /* hash chain */
	char name[AG_NAME_MAX + 1];
	__u32 slot;
	struct agd_agent_rec rec;
	/* map state last written, to skip writes that change nothing */
	double map_rate; /* < 0: not in the maps */
	__u64 map_burst;
	__u32 map_unit;
	bool map_pinned;
	/* apply-batch bookkeeping */
	__u64 batch;             /* batch that saved `undo` */
	struct agd_agent_rec undo;
	bool new_in_batch;
	__u64 created_job; /* job that created it in this batch */
	__u64 job_mark;    /* last job that listed it in its answer */
	struct entry *touched_next;
	double share; /* of rec.rate this host's bucket refills at (fleet) */
	/* The ratings the policy applied to it in the current batch, for its
	 * history: a list through e->hist, valid while hist_batch is the batch. */
	__u64 hist_batch;
	__u32 hist_first, hist_last, hist_n;
};


struct hist_pend; /* a rating applied in the current batch (apply.c) */

struct agd_engine {
	struct agd_engine_opts opts;
	struct agd_policy defaults;
	struct agd_store st;
	struct ag_ctx *ctx;
	int audit_fd;
	int owner_fd; /* the pin root's exclusive owner lock (agentgate.h) */

	pthread_mutex_t lock; /* the table, the store's write side, the maps */
	struct entry **buckets;
	size_t nbuckets, count;

	/* apply queue */
	pthread_mutex_t qlock;
	pthread_cond_t qcv;    /* work queued or stopping */
	pthread_cond_t spacecv; /* room in the queue */
	size_t space_waiters;
	struct agd_job *qhead, *qtail;
	size_t queued;         /* ratings in the queue */
	bool stopping;
	pthread_t thread;
	bool thread_started;
	__u64 serial, batch_serial;

	/* rating observer; ev is the apply thread's alone */
	agd_rating_observer obs;
	bool (*obs_wanted)(void *arg);
	void *obs_arg;
	struct agd_rating_event *ev;
	size_t ev_n, ev_cap;
	bool ev_on;
	/* the batch's applied ratings, for the agents' histories (apply thread) */
	struct hist_pend *hist;
	size_t hist_n, hist_cap;

	pthread_mutex_t slock; /* stats */
	struct agd_engine_stats stats;

	/* the fleet's log: set once before the API starts */
	struct agd_replicator repl;
	bool replicated;
	__u64 log_seq; /* under lock: the sequence the stored state includes */
};

#define TAB_FOREACH(e, i, en)                                                              \
	for (i = 0; i < (e)->nbuckets; i++)                                                \
		for (en = (e)->buckets[i]; en; en = en->next)

/* engine.c */
__u64 wall_ms(void);
struct entry *tab_find(struct agd_engine *e, const char *name);
struct entry *tab_add(struct agd_engine *e, const char *name);
void tab_remove(struct agd_engine *e, struct entry *victim);
void rec_init(struct agd_agent_rec *r, const struct agd_policy *defaults, __u64 now);
void effective(struct agd_engine *e, const struct entry *en, struct agd_policy *p);
int push_to_map(struct agd_engine *e, struct entry *en, bool force);
json_t *policy_json(const struct agd_engine *e, const struct agd_agent_rec *r);
int audit(struct agd_engine *e, MDB_txn *txn, const char *subject, const char *action,
	  const char *agent, json_t *before, json_t *after, char **line);
void audit_file(struct agd_engine *e, char *line);
int txn_begin(struct agd_engine *e, MDB_txn **txn);
int txn_commit(struct agd_engine *e, MDB_txn *txn, __u64 seq);
/* Logs err with what the store says about it, after the context fmt. */
void store_log(struct agd_engine *e, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void rule_key_of(const struct ag_rule *r, struct agd_rule_rec_key *k);
const char **slot_names(struct agd_engine *e);
const char *slot_name(const char **names, struct ag_ctx *ctx, __u32 slot);

/* reconcile.c */
int load_agents(struct agd_engine *e, struct agd_err *errbuf);
int reconcile(struct agd_engine *e, struct agd_err *errbuf);

/* apply.c */
void *apply_thread(void *arg);

#endif
