/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The engine: agentgated's state and every change to it. It owns the LMDB
 * store, the pinned maps (through libagentgate) and an in-memory table of
 * agents. Ratings are applied by one thread in group commits: every queued
 * request goes into one LMDB transaction and one fsync, then the new rates
 * go into the buckets, then the requests are answered. Operator changes run
 * in the caller's thread under the same lock.
 *
 * Ordering, so that a crash at any point leaves nothing torn and loses
 * nothing acknowledged: what adds state is committed to LMDB before the
 * maps, what removes state is removed from the maps first; on start the
 * engine brings the maps to what LMDB says (see ag_engine_open).
 */
#ifndef AGENTGATED_ENGINE_H
#define AGENTGATED_ENGINE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <linux/types.h>

#include "agentgate.h"
#include "policy.h"
#include "rating.h"

struct ag_engine;

typedef void (*ag_engine_log_fn)(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The metrics label of agents beyond --metrics-max-agents: no agent may
 * have this name. */
#define AG_METRICS_OTHER "_other"

#define AG_LOG_ERR 3
#define AG_LOG_WARN 4
#define AG_LOG_INFO 6

struct ag_engine_opts {
	const char *state_dir;
	const char *pin_root; /* NULL: AG_PIN_ROOT_DEFAULT */
	__u32 max_agents;     /* when the maps are created; 0: library default */
	size_t store_size;    /* bytes the LMDB file may grow to */
	struct ag_policy defaults;
	__u64 dedup_window_ms;
	__u64 dedup_max; /* ids remembered at most */
	bool auto_create; /* a rating for an unknown agent creates it */
	size_t queue_max; /* ratings waiting to be applied before submitters block */
	ag_engine_log_fn log;
};

/* Opens the store, takes the pin root's exclusive owner lock (agentgate.h:
 * waiting up to 10 s for CLI writes under way; -EBUSY when another daemon
 * owns it), opens the maps (created when missing), loads the agents and
 * reconciles: what the owner's journal names (changed by the CLI while no
 * daemon ran) is taken from the maps; other agents and rules LMDB knows are
 * written into the maps (rates restored, live buckets untouched); agents
 * and rules found only in the maps (made with the CLI) are adopted. Starts
 * the apply thread. The lock is released by ag_engine_close, last. */
int ag_engine_open(const struct ag_engine_opts *opts, struct ag_engine **out, char *err,
		   size_t len);
/* Stops the apply thread after the queue is drained; the maps stay. */
void ag_engine_close(struct ag_engine *e);
struct ag_ctx *ag_engine_ctx(struct ag_engine *e);

/* SIGHUP: new defaults and limits; burst sizes given in seconds follow. */
void ag_engine_reconfigure(struct ag_engine *e, const struct ag_policy *defaults,
			   __u64 dedup_window_ms, __u64 dedup_max, bool auto_create);

/* ---- ratings --------------------------------------------------------------- */

struct ag_job_agent {
	char name[AG_NAME_MAX + 1];
	double rate, mean_score;
	__u64 ratings;
};

struct ag_job {
	/* in */
	const struct ag_rating *items;
	size_t n;
	__u64 received_ns; /* ag_now_ns() when the request arrived */
	/* Called in the apply thread once the job is finished; NULL for
	 * ag_engine_rate, which waits instead. */
	void (*done)(struct ag_job *job);
	void *arg;
	/* NULL: the job is applied whole or not at all (HTTP). Else n entries,
	 * zeroed: an item naming an unknown agent (-ENOENT), one an operator
	 * deleted (-EIDRM) or one no slot is left for (-ENOSPC) is refused
	 * alone and marked here (streams); a duplicate is marked
	 * AG_ITEM_DUPLICATE. */
	int *item_err;
	/* out */
	int err; /* 0, -ENOENT (unknown agent), -ENOSPC (no free slot), -EIO... */
	char msg[256];
	size_t applied, duplicates;
	struct ag_job_agent *agents; /* each agent the job rated, after it */
	size_t n_agents;
	/* Where dispatch sent it, when a replicator took it (a fleet); the
	 * engine neither reads nor writes these. */
	struct {
		size_t refused; /* items the log refused one by one */
		bool queued;    /* kept in the outbox, not yet in the log */
		__u64 sequence; /* the log sequence of its last rating */
	} routed;
	/* engine's */
	struct ag_job *next;
	void *waiter; /* the semaphore of a submitter that waits */
	__u64 serial;
	__u64 log_seq, log_ms; /* ag_engine_apply_ratings' */
};

#define AG_ITEM_DUPLICATE 1 /* item_err: the rating id was applied before */

/* Queues a job for the apply thread, here; blocks while the queue is full.
 * -ESHUTDOWN when closing. Where a job goes is dispatch.c's to decide:
 * ag_engine_submit. */
int ag_engine_queue(struct ag_engine *e, struct ag_job *job);
/* Ratings from the fleet's log, applied here; waits until they are. seq:
 * the log sequence of the job's last rating, stored in the transaction that
 * applies it; log_ms: the log's time, used instead of the wall clock, so
 * every host remembers and forgets rating ids alike. */
int ag_engine_apply_ratings(struct ag_engine *e, struct ag_job *job, __u64 seq, __u64 log_ms);
/* Queues with submit() and waits until the job is finished: job->err. */
int ag_job_wait(struct ag_engine *e, struct ag_job *job,
		int (*submit)(struct ag_engine *e, struct ag_job *job));
/* Clears a job's results before it is submitted again. */
void ag_job_reset(struct ag_job *job);
void ag_job_release(struct ag_job *job);
/* Reports a job finished: runs its done() or wakes ag_engine_rate. */
void ag_job_complete(struct ag_job *job);

/* ---- applied ratings, as they happen (the live stream) ---------------------- */

struct ag_rating_event {
	char agent[AG_NAME_MAX + 1];
	char id[AG_RATING_ID_MAX + 1]; /* "" when the client gave none */
	char user[AG_RATING_USER_MAX + 1];
	int score;
	__s64 ts_ms;       /* the rating's time: the client's, else when applied */
	double rate;       /* the agent's refill rate right after this rating */
	double mean_score; /* and its rating statistics */
	__u64 ratings;
};

typedef void (*ag_rating_observer)(void *arg, const struct ag_rating_event *ev, size_t n);

/* fn receives each committed batch's applied ratings (duplicates excluded),
 * in order, from the apply thread after the commit and outside the engine's
 * lock. wanted() is asked once per batch: when it says no, no event is
 * recorded, so an observer without listeners costs nothing. */
void ag_engine_observe(struct ag_engine *e, ag_rating_observer fn, bool (*wanted)(void *arg),
		       void *arg);

/* ---- operator changes -------------------------------------------------------- */

/* Fields a PUT may carry besides the policy ones. */
struct ag_agent_change {
	unsigned int set;     /* enum ag_policy_fields present */
	unsigned int unset;   /* fields going back to the global defaults */
	struct ag_policy own; /* their values; own.r0 is "rate" */
	double fill_tokens;   /* < 0: leave the bucket level alone */
};

/* An engine error as the HTTP status every route (and the control socket)
 * gives it: -EINVAL 400, -ENOENT 404, -EEXIST 409, -ENOSPC 507, the fleet's
 * log unreachable 503, anything else 500. */
int ag_engine_status(int err);

/* Error text for the caller's response: */
struct ag_op_err {
	char msg[256];
};

/* The datapath's global settings (agentgate config set): -1 leaves one as
 * it is. */
struct ag_config_change {
	int default_action; /* enum ag_action */
	int dry_run;        /* 0 or 1 */
};

/* ---- dispatch (dispatch.c): where a change goes ------------------------------
 *
 * What the API, the control socket and the ingest readers call. Standalone,
 * a change is applied here at once (ag_engine_apply_*, ag_engine_queue);
 * with a replicator set (a fleet) ratings and operator changes go to the
 * fleet's log instead, and every host applies them from there with the log
 * sequence passed explicitly. Bucket operations (reset, drain, consume)
 * are local everywhere. */

/* Submits a job: to the replicator, or queued here. */
int ag_engine_submit(struct ag_engine *e, struct ag_job *job);
/* Submits and waits until the job is applied (or refused). */
int ag_engine_rate(struct ag_engine *e, struct ag_job *job);
int ag_engine_agent_put(struct ag_engine *e, const char *name, const struct ag_agent_change *c,
			const char *subject, bool *created, struct ag_op_err *oe);
int ag_engine_agent_delete(struct ag_engine *e, const char *name, const char *subject,
			   struct ag_op_err *oe);
int ag_engine_agent_reset(struct ag_engine *e, const char *name, const char *subject,
			  struct ag_op_err *oe);
int ag_engine_agent_drain(struct ag_engine *e, const char *name, __u64 tokens,
			  const char *subject, double *remaining, struct ag_op_err *oe);
int ag_engine_consume(struct ag_engine *e, const char *name, __u64 tokens,
		      struct ag_consume_result *res, struct ag_op_err *oe);
int ag_engine_rule_add(struct ag_engine *e, const struct ag_rule *rule, const char *agent,
		       const char *subject, struct ag_op_err *oe);
int ag_engine_rule_del(struct ag_engine *e, const struct ag_rule *rule, const char *subject,
		       struct ag_op_err *oe);
/* default-action and dry-run in ag_config: audited as config.set, and
 * replicated in a fleet like the changes above. */
int ag_engine_config_set(struct ag_engine *e, const struct ag_config_change *c,
			 const char *subject, struct ag_op_err *oe);

/* ---- applying an operator change, here and now --------------------------------
 *
 * Stored, audited and in the maps; seq: the fleet log sequence that carried
 * it (stored in the same transaction), 0 for a local change. */
int ag_engine_apply_agent_put(struct ag_engine *e, __u64 seq, const char *name,
			      const struct ag_agent_change *c, const char *subject, bool *created,
			      struct ag_op_err *oe);
int ag_engine_apply_agent_delete(struct ag_engine *e, __u64 seq, const char *name,
				 const char *subject, struct ag_op_err *oe);
int ag_engine_apply_rule_add(struct ag_engine *e, __u64 seq, const struct ag_rule *rule,
			     const char *agent, const char *subject, struct ag_op_err *oe);
int ag_engine_apply_rule_del(struct ag_engine *e, __u64 seq, const struct ag_rule *rule,
			     const char *subject, struct ag_op_err *oe);
int ag_engine_apply_config_set(struct ag_engine *e, __u64 seq, const struct ag_config_change *c,
			       const char *subject, struct ag_op_err *oe);

/* ---- replication (the fleet) ---------------------------------------------------
 *
 * With a replicator set, ratings and operator changes (agent put/delete,
 * rule add/delete) are not applied where they arrive: they are handed to the
 * replicator, which appends them to the fleet's log; every host applies the
 * log in order through ag_engine_submit (jobs with a seq) and
 * ag_engine_apply_op, and the sequence is stored in the same LMDB
 * transaction as the state it produced. Bucket operations (reset, drain,
 * consume) stay local. */

enum ag_op_kind {
	AG_OP_AGENT_PUT = 1,
	AG_OP_AGENT_DELETE,
	AG_OP_RULE_ADD,
	AG_OP_RULE_DEL,
	AG_OP_CONFIG_SET,
};


struct ag_op {
	enum ag_op_kind kind;
	char agent[AG_NAME_MAX + 1];   /* AGENT_*, RULE_ADD */
	struct ag_agent_change change; /* AGENT_PUT */
	struct ag_rule rule;           /* RULE_* */
	struct ag_config_change config; /* CONFIG_SET */
	char subject[136];             /* who asked, for the audit log */
};

struct ag_replicator {
	/* Takes over a rating job; finishes it with ag_job_complete. */
	int (*submit)(void *arg, struct ag_job *job);
	/* Runs a change through the log; returns what applying it here gave. */
	int (*op)(void *arg, const struct ag_op *op, bool *created, struct ag_op_err *oe);
	void *arg;
};

/* Set before the API starts; NULL: standalone. */
void ag_engine_replicate(struct ag_engine *e, const struct ag_replicator *r);
/* The replicator set, or NULL (standalone). */
const struct ag_replicator *ag_engine_replicator(struct ag_engine *e);
int ag_engine_apply_op(struct ag_engine *e, const struct ag_op *op, __u64 seq, bool *created,
		       struct ag_op_err *oe);
/* The log sequence the stored state includes (0: none). */
__u64 ag_engine_log_seq(struct ag_engine *e);
/* With auto-create off: -ENOENT and msg naming the first item whose agent
 * is unknown here (a whole-or-nothing job is refused before the log). */
int ag_engine_check_agents(struct ag_engine *e, const struct ag_job *job, char *msg,
			   size_t len);
/* Fills job->agents with the current values of the agents its items name. */
int ag_engine_job_agents(struct ag_engine *e, struct ag_job *job);
/* The fraction of the agent's (fleet-wide) rate this host's bucket gets:
 * its bucket refills at rate * share. Not stored: the fleet recomputes it. */
int ag_engine_set_share(struct ag_engine *e, const char *name, double share);

/* ---- views -------------------------------------------------------------------- */

struct ag_agent_view {
	char name[AG_NAME_MAX + 1];
	__u32 slot;
	struct ag_policy policy; /* effective */
	unsigned int set;        /* fields the agent sets itself */
	double rate;
	double share; /* of rate this host's bucket gets (1 standalone) */
	bool fleet;   /* the engine is replicated: JSON shows the share */
	__u64 burst; /* tokens, at the local rate */
	double tokens;
	struct ag_rating_stats stats;
	struct ag_counters counters;
	__u64 created_ms, updated_ms;
};

int ag_engine_agent_view(struct ag_engine *e, const char *name, struct ag_agent_view *v);
/* Where the agent's rate comes from (explain.h; agentgated(8), EXPLAIN): a
 * jansson object (json_t *) as void *, the caller's to json_decref: the
 * one GET /v1/agents/{agent}/explain returns. -ENOENT with oe->msg naming
 * an unknown agent, -EINVAL for a bad name, -EBUSY without a store reader
 * slot, -EUCLEAN for a malformed stored value, -ENOMEM. */
int ag_engine_explain(struct ag_engine *e, const char *name, void **json_out,
		      struct ag_op_err *oe);
/* A page of agents in name order: at most limit (>= 1) views of the
 * agents after `after` ("" for the first page); free(*out). next is the
 * `after` of the next page, "" on the last one. Read from the store with a
 * cursor, so a page costs the same at any depth; agents deleted while the
 * page is read are left out (a page may then hold fewer than limit).
 * -EBUSY when the store has no reader slot free. */
int ag_engine_agent_page(struct ag_engine *e, const char *after, size_t limit,
			 struct ag_agent_view **out, size_t *n, char next[AG_NAME_MAX + 1]);
size_t ag_engine_agent_count(struct ag_engine *e);

/* Every agent's view (slot order not guaranteed); free(*out). Counters
 * read in one pass. */
int ag_engine_agent_views(struct ag_engine *e, struct ag_agent_view **out, size_t *n);

/* Engine counters for /metrics. */
#define AG_APPLY_BUCKETS 14
extern const double ag_apply_bucket_le[AG_APPLY_BUCKETS];
struct ag_engine_stats {
	__u64 ratings_applied, ratings_duplicate, ratings_invalid, ratings_rejected;
	__u64 apply_hist[AG_APPLY_BUCKETS + 1]; /* last: +Inf */
	double apply_sum;
	__u64 apply_count;
	__u64 queue_depth;
	__u64 dedup_ids;
	__u64 commits, commit_errors, map_errors;
	__u64 agents_refused; /* new agents without a free slot */
};
void ag_engine_stats(struct ag_engine *e, struct ag_engine_stats *s);
/* Invalid ratings seen outside the engine (parsing) are counted here. */
void ag_engine_count_invalid(struct ag_engine *e, __u64 n);

/* The JSON form of an agent's policy and state, shared by the API and the
 * audit log. Returns a jansson object (json_t *) as void * to keep jansson
 * out of this header. */
void *ag_agent_view_json(const struct ag_agent_view *v);

#endif
