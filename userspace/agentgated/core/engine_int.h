/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The engine's insides, shared by its files and by nothing else:
 *   engine.c     open and close, the agent table, the helpers below, reload, stats
 *   apply.c      the apply thread: the queue, group commits, histories, observers
 *   ops.c        operator changes applied here, bucket operations, replication
 *   reconcile.c  start: the agents and rules LMDB and the maps know, the owner's journal
 *   views.c      agents as the API shows them: views, pages, counts, explain
 *   expire.c     idle agents: the sweep thread, expiring, evicting, fleet proposals
 * None of them includes another's declarations but through this header;
 * engine.h is the engine's API, this is not.
 */
#ifndef AGENTGATED_ENGINE_INT_H
#define AGENTGATED_ENGINE_INT_H

#include <jansson.h>
#include <stdatomic.h>

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
	/* Activity (expire.c): idle time observed, what the sweep last read
	 * of its bucket's tat word and its counters, and whether this idle
	 * spell is stored. */
	__u64 idle_ms;
	__u64 active_at; /* CLOCK_MONOTONIC ms of the last activity seen */
	__u64 snap_word, snap_packets;
	bool snap_ok, idle_stored;
	bool local_active;  /* the sweep saw traffic or a consume here */
	__u64 log_mark;     /* fleet: sequence of the last log entry for it */
	__u64 touch_sent;   /* fleet: CLOCK_MONOTONIC ms this host last told the log */
	bool expiring; /* in the batch being expired */
	/* Its change window (apply.c, --rating-max-change), read from the
	 * store when first needed; dirty: restarted in this batch. */
	bool win_known, win_dirty;
	struct agd_window_rec win;
	struct agd_influence_rec inf; /* its own limits (inf.set 0: none) */
	/* What its ratings met since agentgated started (enum agd_tally);
	 * the apply thread's own, but for refusals (e->lock), and restored
	 * with undo when a batch rolls back. */
	__u64 tally[AGD_TALLY__N], tally_undo[AGD_TALLY__N];
	struct feed_entry *feed; /* its rule feed (feeds.c), or NULL */
};

/* An agent's rule feed in memory (feeds.c): the stored part and the
 * refreshes' outcome since start. */
struct feed_entry {
	struct feed_entry *next, *prev; /* e->feeds */
	struct agd_feed_info info;
	struct agd_feed_set set; /* the last good set */
};


struct hist_pend; /* a rating applied in the current batch (apply.c) */

struct agd_engine {
	struct agd_engine_opts opts;
	struct agd_policy defaults;
	struct agd_store st;
	struct ag_ctx *ctx;
	struct agd_intake *intake; /* rating intake limits (intake.h) */
	struct agd_voices *voices; /* every (user, agent)'s latest score (voices.h) */
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

	/* expiry (expire.c) */
	pthread_t sweeper;
	bool sweeper_started;
	pthread_mutex_t swlock;
	pthread_cond_t swcv;
	bool sw_stop;
	__u64 last_sweep_ms;   /* idle clock of the last sweep */
	__u64 sweep_every_ms;  /* the interval the last sweep chose */
	__u64 *sw_words;       /* per slot, the sweep's reads */
	struct ag_counters *sw_counters;
	_Atomic __u8 *consumed; /* per slot: consumed from since the last sweep */
	agd_removal_observer robs;
	void *robs_arg;

	/* the batch's rating waves and the audit lines of the holds (apply thread) */
#define WAVES_MAX 64
	struct agd_wave_event waves[WAVES_MAX];
	size_t waves_n;
	char *hold_lines[WAVES_MAX];
	size_t hold_n;
	agd_wave_observer wobs;
	void *wobs_arg;

	/* revoked tokens (revoked.c): a hash of their keys */
	pthread_rwlock_t rvlock;
	struct revoked_entry **rv;
	size_t rv_count;

	/* the fleet's log: set once before the API starts */
	struct agd_replicator repl;
	bool replicated;
	struct feed_entry *feeds; /* every agent's feed (e->lock) */
	size_t n_feeds;
	__u64 log_seq; /* under lock: the sequence the stored state includes */
	struct budget **budgets; /* parents, agents' parents and quotas (budgets.c) */
	size_t n_budgets;
};

#define TAB_FOREACH(e, i, en)                                                              \
	for (i = 0; i < (e)->nbuckets; i++)                                                \
		for (en = (e)->buckets[i]; en; en = en->next)

/* engine.c */
__u64 wall_ms(void);
size_t hash_name(const char *s); /* FNV-1a, the tables' */
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
/* flags: MDB_NOMETASYNC for a transaction of fleet log entries only (apply.c). */
int txn_begin_flags(struct agd_engine *e, MDB_txn **txn, unsigned int flags);
int txn_commit(struct agd_engine *e, MDB_txn *txn, __u64 seq);
/* Logs err with what the store says about it, after the context fmt. */
void store_log(struct agd_engine *e, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void rule_key_of(const struct ag_rule *r, struct agd_rule_rec_key *k);
/* ops.c: commits an operator change's transaction (or ends it on err) and
 * appends its audit line; oe says what the store said. */
int finish_op(struct agd_engine *e, MDB_txn *txn, __u64 seq, int err, char *line,
	      struct agd_err *oe);
const char **slot_names(struct agd_engine *e);
const char *slot_name(const char **names, struct ag_ctx *ctx, __u32 slot);

/* reconcile.c */
int load_agents(struct agd_engine *e, struct agd_err *errbuf);
/* engine.c: the agent out of the store (agd_store_agent_del) and its
 * voices out of memory, logged with txn. */
int store_agent_del(struct agd_engine *e, MDB_txn *txn, const char *name);
/* engine.c: the voices read again when a transaction that changed them
 * did not commit (before the next one would). Under e->lock. */
void voices_resync(struct agd_engine *e);
/* engine.c: folds the voice log into the store when due (force: when it
 * holds anything). Under e->lock. */
void voices_fold(struct agd_engine *e, bool force);
/* engine.c: the influence limits in effect for en. */
void influence_of(const struct agd_engine *e, const struct entry *en, struct agd_influence *out);
int reconcile(struct agd_engine *e, struct agd_err *errbuf);

/* apply.c */
void *apply_thread(void *arg);

/* feeds.c: the stored feeds into memory (before the rules are reconciled),
 * whether a rule in the maps is a feed's (not adopted as a hand rule), the
 * sets back into the maps, and the feed of an agent leaving memory. */
int feeds_load(struct agd_engine *e, MDB_txn *txn, struct agd_err *errbuf);
bool feeds_own_rule(struct agd_engine *e, const struct ag_rule *r, const char *agent);
void feeds_restore(struct agd_engine *e);
void feed_forget(struct agd_engine *e, struct entry *en);
void feeds_free(struct agd_engine *e);

/* revoked.c */
/* Budgets (budgets.c), under e->lock unless said otherwise. */
struct budget;
int budgets_load(struct agd_engine *e, MDB_txn *txn);
void budgets_free(struct agd_engine *e);
int budgets_prepare(struct agd_engine *e, MDB_txn *txn, const struct ag_journal_entry *list,
		    size_t n, bool all, size_t *taken);
int budgets_finish(struct agd_engine *e, MDB_txn *txn, const struct ag_journal_entry *list,
		   size_t n, bool all, size_t *restored, size_t *adopted);
void budgets_save_counts(struct agd_engine *e); /* takes e->lock */
void budget_on_bucket(struct agd_engine *e, const char *name);
json_t *budget_json(const struct agd_budget_rec *r);
json_t *budget_of_json(struct agd_engine *e, const char *name); /* NULL: none */
/* An agent's parent and quota changed: checked and merged (prepare),
 * stored in the change's transaction, then kept and put into the maps. */
int budget_agent_prepare(struct agd_engine *e, const char *name, const struct agd_budget_change *c,
			 struct agd_budget_rec *out, struct agd_err *oe);
int budget_agent_store(struct agd_engine *e, MDB_txn *txn, const char *name,
		       const struct agd_budget_rec *r);
int budget_agent_commit(struct agd_engine *e, const char *name, const struct agd_budget_rec *r,
			bool in_maps);
/* A deleted agent's record, out of the store (in its transaction), then
 * out of the table. */
int budget_forget(struct agd_engine *e, MDB_txn *txn, const char *name);
void budget_read_count(struct agd_engine *e, const char *name, __u32 slot);
int budget_store_kept(struct agd_engine *e, MDB_txn *txn, const char *name);
int budget_delete_kept(struct agd_engine *e, __u64 seq, const char *name, const char *subject,
		       struct agd_err *oe);
void budget_forgotten(struct agd_engine *e, const char *name);

int revoked_load(struct agd_engine *e, struct agd_err *errbuf);
/* Forgets the revocations whose tokens have all expired (store first). */
void revoked_prune(struct agd_engine *e, int64_t now_s);
void revoked_free(struct agd_engine *e);

/* expire.c */
__u64 mono_ms(void);
/* How long since its last activity seen, ms: a rating or change to the
 * millisecond, traffic to the sweep (what agent views and eviction use;
 * expiry counts idle time by sweeps, idle_ms). */
__u64 idle_now(const struct entry *en);
/* The agent showed activity (a rating, an operator change, a consume). */
void touch(struct entry *en);
/* At open, before reconcile: reads what the buckets and counters hold. */
int activity_read(struct agd_engine *e);
/* After reconcile: each agent's idle time from its stored activity. */
void activity_restore(struct agd_engine *e);
int sweeper_start(struct agd_engine *e, struct agd_err *errbuf);
void sweeper_stop(struct agd_engine *e);
/* Fleet: the log entry seq touched agent name (en: its entry, or NULL
 * while it is being made); stored in txn (its activity record). Nothing
 * for seq 0 (a local change). */
int mark_logged(struct agd_engine *e, MDB_txn *txn, const char *name, struct entry *en,
		__u64 seq);
/* Fleet ops (agd_engine_apply_op): TOUCH and EXPIRE, applied at seq. */
int apply_touch(struct agd_engine *e, __u64 seq, const char *name, struct agd_err *oe);
int apply_expire(struct agd_engine *e, __u64 seq, const char *name, __u64 mark,
		 struct agd_err *oe);
/* Under e->lock, before `need` agents are created: with eviction on and
 * fewer free slots, the longest-idle agents that may expire leave. */
void make_room(struct agd_engine *e, size_t need);

#endif
