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
 * engine brings the maps to what LMDB says (see agd_engine_open).
 */
#ifndef AGENTGATED_ENGINE_H
#define AGENTGATED_ENGINE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <linux/types.h>

#include "agentgate.h"
#include "feed.h"
#include "policy.h"
#include "rating.h"
#include "err.h"
#include "revoked.h"

struct agd_engine;

typedef void (*agd_engine_log_fn)(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The metrics label of agents beyond --metrics-max-agents: no agent may
 * have this name. */
#define AGD_METRICS_OTHER "_other"

#define AGD_LOG_ERR 3
#define AGD_LOG_WARN 4
#define AGD_LOG_INFO 6

struct agd_engine_opts {
	const char *state_dir;
	const char *pin_root; /* NULL: AG_PIN_ROOT_DEFAULT */
	__u32 max_agents;     /* when the maps are created; 0: library default */
	size_t store_size;    /* bytes the LMDB file may grow to */
	struct agd_policy defaults;
	__u64 dedup_window_ms;
	__u64 dedup_max; /* ids remembered at most */
	bool auto_create; /* a rating for an unknown agent creates it */
	/* Ratings without a user: each its own voice, one shared voice per
	 * agent, or refused (one voice per user otherwise: apply.c). */
	enum agd_anonymous {
		AGD_ANON_EACH = 0,
		AGD_ANON_SHARED,
		AGD_ANON_REFUSE,
	} anonymous;
	/* Damping: within a window of change_window_ms from an agent's first
	 * rating in it, ratings move its rate at most max_change times the
	 * rate the window started with, either way (0: no damping). */
	double max_change;
	__u64 change_window_ms;
	/* A wave: wave_users users rating an agent for the first time within
	 * its change window, one way (0: not watched); wave_hold pins it. */
	__u32 wave_users;
	bool wave_hold;
	/* One voice counts for at most user_cap score points from neutral
	 * (above 0; AGD_USER_CAP_MAX or 0: the scale's own; policy.h). */
	double user_cap;
	/* A charge takes a bucket at most this much of its refill below empty. */
	__u64 charge_max_debt_ms;
	/* Intake limits, ratings per second per user and per API token
	 * (core/intake.h; 0: none). */
	double user_rate, token_rate;
	size_t queue_max; /* ratings waiting to be applied before submitters block */
	/* With no free slot for a new agent: evict the longest-idle agent that
	 * has an idle TTL (true), or refuse the new one (false). */
	bool evict_when_full;
	agd_engine_log_fn log;
};

/* Opens the store, takes the pin root's exclusive owner lock (agentgate.h:
 * waiting up to 10 s for CLI writes under way; -EBUSY when another daemon
 * owns it), opens the maps (created when missing), loads the agents and
 * reconciles: what the owner's journal names (changed by the CLI while no
 * daemon ran) is taken from the maps; other agents and rules LMDB knows are
 * written into the maps (rates restored, live buckets untouched); agents
 * and rules found only in the maps (made with the CLI) are adopted. Starts
 * the apply thread. The lock is released by agd_engine_close, last. */
int agd_engine_open(const struct agd_engine_opts *opts, struct agd_engine **out,
		   struct agd_err *err);
/* Stops the apply thread after the queue is drained; the maps stay. */
void agd_engine_close(struct agd_engine *e);
struct ag_ctx *agd_engine_ctx(struct agd_engine *e);

/* SIGHUP: new defaults and limits from next (its policy defaults, dedup,
 * auto-create, eviction, anonymous and damping fields; the rest is kept);
 * burst sizes given in seconds follow. */
void agd_engine_reconfigure(struct agd_engine *e, const struct agd_engine_opts *next);

/* ---- expiry --------------------------------------------------------------------
 *
 * An agent whose idle TTL (agd_policy_ttl) has passed without traffic
 * (passed or dropped packets), a rating, a consume or an operator change
 * leaves the maps and the store with its rules, audited (agent.expire).
 * A sweep thread finds them: every interval (a quarter of the shortest
 * TTL, between 250 ms and 60 s) it reads each bucket's tat word through
 * the mmap and the counters in batches and compares them with its last
 * read. With evict_when_full, a new agent that finds no free slot takes
 * the one of the longest-idle agent with a TTL (agent.evict). */

struct agd_removal_event {
	char agent[AG_NAME_MAX + 1];
	const char *reason; /* "ttl" or "evicted" */
	__u64 idle_ms;
	__u64 ts_ms; /* wall clock */
};

typedef void (*agd_removal_observer)(void *arg, const struct agd_removal_event *ev, size_t n);

/* A rating wave (apply.c): an agent that many users rated for the first
 * time within its change window, all one way. */
struct agd_wave_event {
	char agent[AG_NAME_MAX + 1];
	const char *direction; /* "down" or "up" */
	__u32 new_users;
	__u64 window_start_ms, ts_ms;
	bool held; /* pinned by --rating-wave-hold */
};

typedef void (*agd_wave_observer)(void *arg, const struct agd_wave_event *ev, size_t n);
/* fn receives each committed batch's waves, outside the engine's lock. */
void agd_engine_observe_waves(struct agd_engine *e, agd_wave_observer fn, void *arg);

/* fn receives each batch of expired or evicted agents, outside the
 * engine's lock. Set before the API starts (NULL: none). */
void agd_engine_observe_removals(struct agd_engine *e, agd_removal_observer fn, void *arg);
/* Runs one sweep now, between the sweep thread's (bench/sweep_cost.c):
 * the agents it expired. */
size_t agd_engine_sweep(struct agd_engine *e);

/* ---- ratings --------------------------------------------------------------- */

struct agd_job_agent {
	char name[AG_NAME_MAX + 1];
	double rate, mean_score;
	__u64 ratings;
};

struct agd_job {
	/* in */
	const struct agd_rating *items;
	size_t n;
	__u64 received_ns; /* ag_now_ns() when the request arrived */
	/* Called in the apply thread once the job is finished; NULL for
	 * agd_engine_rate, which waits instead. */
	void (*done)(struct agd_job *job);
	void *arg;
	/* NULL: the job is applied whole or not at all (HTTP). Else n entries,
	 * zeroed: an item naming an unknown agent (-ENOENT), one an operator
	 * deleted (-EIDRM) or one no slot is left for (-ENOSPC) is refused
	 * alone and marked here (streams); a duplicate is marked
	 * AGD_ITEM_DUPLICATE. */
	int *item_err;
	/* The fleet's log: each item's log sequence and time (NULL otherwise). */
	const __u64 *item_seq, *item_ms;
	/* out */
	/* code: 0, -ENOENT (unknown agent), -ENOSPC (no free slot), -EIO...;
	 * msg: why, for the client */
	struct agd_err err;
	size_t applied, duplicates;
	size_t replaced; /* ratings that replaced their voice's earlier one */
	size_t damped;   /* ratings whose move the change window cut */
	size_t capped;   /* ratings whose move --rating-user-cap cut */
	size_t anonymous; /* ratings refused without a user (--anonymous-ratings refuse) */
	struct agd_job_agent *agents; /* each agent the job rated, after it */
	size_t n_agents;
	/* Where dispatch sent it, when a replicator took it (a fleet); the
	 * engine neither reads nor writes these. */
	struct {
		size_t refused; /* items the log refused one by one */
		bool queued;    /* kept in the outbox, not yet in the log */
		__u64 sequence; /* the log sequence of its last rating */
	} routed;
	/* engine's */
	struct agd_job *next;
	void *waiter; /* the semaphore of a submitter that waits */
	__u64 serial;
	__u64 log_seq, log_ms; /* agd_engine_apply_ratings' */
};

#define AGD_ITEM_DUPLICATE 1 /* item_err: the rating id was applied before */

/* Queues a job for the apply thread, here; blocks while the queue is full.
 * -ESHUTDOWN when closing. Where a job goes is dispatch.c's to decide:
 * agd_engine_submit. */
int agd_engine_queue(struct agd_engine *e, struct agd_job *job);
/* The same without waiting: -EAGAIN while the queue is full. For a caller
 * that must not block (the HTTP server's event loop), standalone only. */
int agd_engine_try_queue(struct agd_engine *e, struct agd_job *job);
/* Ratings from the fleet's log, applied here; waits until they are. seq:
 * the log sequence of the job's last rating, stored in the transaction that
 * applies it; log_ms: the log's time, used instead of the wall clock, so
 * every host remembers and forgets rating ids alike. */
int agd_engine_apply_ratings(struct agd_engine *e, struct agd_job *job, __u64 seq, __u64 log_ms);
/* Queues with submit() and waits until the job is finished: job->err. */
int agd_job_wait(struct agd_engine *e, struct agd_job *job,
		int (*submit)(struct agd_engine *e, struct agd_job *job));
/* Clears a job's results before it is submitted again. */
void agd_job_reset(struct agd_job *job);
void agd_job_release(struct agd_job *job);
/* Reports a job finished: runs its done() or wakes agd_engine_rate. */
void agd_job_complete(struct agd_job *job);

/* ---- applied ratings, as they happen (the live stream) ---------------------- */

struct agd_rating_event {
	char agent[AG_NAME_MAX + 1];
	char id[AGD_RATING_ID_MAX + 1]; /* "" when the client gave none */
	char user[AGD_RATING_USER_MAX + 1];
	int score;
	__s64 ts_ms;       /* the rating's time: the client's, else when applied */
	double rate;       /* the agent's refill rate right after this rating */
	double mean_score; /* and its rating statistics */
	__u64 ratings;
};

typedef void (*agd_rating_observer)(void *arg, const struct agd_rating_event *ev, size_t n);

/* fn receives each committed batch's applied ratings (duplicates excluded),
 * in order, from the apply thread after the commit and outside the engine's
 * lock. wanted() is asked once per batch: when it says no, no event is
 * recorded, so an observer without listeners costs nothing. */
void agd_engine_observe(struct agd_engine *e, agd_rating_observer fn, bool (*wanted)(void *arg),
		       void *arg);

/* ---- operator changes -------------------------------------------------------- */

/* The limits in effect for an agent (its own, else the options'; the
 * fields: enum agd_influence_fields, policy.h). */
struct agd_influence {
	double max_change;
	__u64 window_ms;
	__u32 wave_users;
	bool wave_hold;
	double user_cap; /* score points from neutral one voice counts for, 0 to 2 */
};

/* A parent's fields, or an agent's parent and quota (docs/BUDGETS.md).
 * fields: AG_SET_RATE, AG_SET_BURST and AG_SET_UNIT (a parent's own),
 * AG_SET_PARENT and AG_SET_QUOTA (either's). */
struct agd_budget_change {
	unsigned int fields;
	double rate;
	__u64 burst;
	enum ag_unit unit;
	char parent[AG_NAME_MAX + 1]; /* "": none */
	__u64 quota;                  /* tokens per window; 0: none */
	enum ag_quota_window quota_window;
};

/* Fields a PUT may carry besides the policy ones. */
struct agd_agent_change {
	unsigned int set;     /* enum agd_policy_fields present */
	unsigned int unset;   /* fields going back to the global defaults */
	struct agd_policy own; /* their values; own.r0 is "rate" */
	double fill_tokens;   /* < 0: leave the bucket level alone */
	bool implicit;        /* a new agent is made implicitly (/bucket): it
				 inherits the global idle TTL */
	/* Its own influence limits: fields set and those going back to the
	 * options (enum agd_influence_fields), and their values. */
	unsigned int inf_set, inf_unset;
	struct agd_influence inf;
	/* Its parent and quota: budget.fields AG_SET_PARENT, AG_SET_QUOTA. */
	struct agd_budget_change budget;
};

/* An engine error as the HTTP status every route (and the control socket)
 * gives it: -EINVAL 400, -ENOENT 404, -EEXIST 409, -ENOSPC 507, the fleet's
 * log unreachable 503, anything else 500. */
int agd_engine_status(int err);

/* The datapath's global settings (agentgate config set): -1 leaves one as
 * it is. */
struct agd_config_change {
	int default_action; /* enum ag_action */
	int dry_run;        /* 0 or 1 */
};

/* ---- dispatch (dispatch.c): where a change goes ------------------------------
 *
 * What the API, the control socket and the ingest readers call. Standalone,
 * a change is applied here at once (agd_engine_apply_*, agd_engine_queue);
 * with a replicator set (a fleet) ratings and operator changes go to the
 * fleet's log instead, and every host applies them from there with the log
 * sequence passed explicitly. Bucket operations (reset, drain, consume)
 * are local everywhere. */

/* Submits a job: to the replicator, or queued here. */
int agd_engine_submit(struct agd_engine *e, struct agd_job *job);
/* Submits and waits until the job is applied (or refused). */
int agd_engine_rate(struct agd_engine *e, struct agd_job *job);
int agd_engine_agent_put(struct agd_engine *e, const char *name, const struct agd_agent_change *c,
			const char *subject, bool *created, struct agd_err *oe);
int agd_engine_agent_delete(struct agd_engine *e, const char *name, const char *subject,
			   struct agd_err *oe);
int agd_engine_agent_reset(struct agd_engine *e, const char *name, const char *subject,
			  struct agd_err *oe);
int agd_engine_agent_drain(struct agd_engine *e, const char *name, __u64 tokens,
			  const char *subject, double *remaining, struct agd_err *oe);
/* A cost known afterwards, into bounded debt (ag_bucket_charge): tokens
 * from the agent's bucket and every parent above it, whatever is left. */
int agd_engine_charge(struct agd_engine *e, const char *name, __u64 tokens,
		      struct ag_consume_result *res, struct agd_err *oe);
int agd_engine_consume(struct agd_engine *e, const char *name, __u64 tokens,
		      struct ag_consume_result *res, struct agd_err *oe);
/* Parent buckets: created or changed (rate, burst and unit needed to
 * create one), and deleted (refused while an agent or parent, in the maps
 * or stored, names it). Stored, audited, replicated like agents. */
int agd_engine_parent_put(struct agd_engine *e, const char *name,
			  const struct agd_budget_change *c, const char *subject, bool *created,
			  struct agd_err *oe);
int agd_engine_parent_delete(struct agd_engine *e, const char *name, const char *subject,
			     struct agd_err *oe);
/* The budget fields of a request body: "parent" (a name or null) and
 * "quota" ({"limit", "window"} or null), and for a parent "rate", "burst"
 * and "unit". -EINVAL and oe naming the field. */
struct json_t;
int agd_budget_parse(struct json_t *o, bool parent, struct agd_budget_change *b,
		     struct agd_err *oe);
int agd_engine_rule_add(struct agd_engine *e, const struct ag_rule *rule, const char *agent,
		       const char *subject, struct agd_err *oe);
int agd_engine_rule_del(struct agd_engine *e, const struct ag_rule *rule, const char *subject,
		       struct agd_err *oe);
/* default-action and dry-run in ag_config: audited as config.set, and
 * replicated in a fleet like the changes above. */
int agd_engine_config_set(struct agd_engine *e, const struct agd_config_change *c,
			 const char *subject, struct agd_err *oe);

/* ---- applying an operator change, here and now --------------------------------
 *
 * Stored, audited and in the maps; seq: the fleet log sequence that carried
 * it (stored in the same transaction), 0 for a local change. */
int agd_engine_apply_agent_put(struct agd_engine *e, __u64 seq, const char *name,
			      const struct agd_agent_change *c, const char *subject, bool *created,
			      struct agd_err *oe);
int agd_engine_apply_agent_delete(struct agd_engine *e, __u64 seq, const char *name,
				 const char *subject, struct agd_err *oe);
int agd_engine_apply_rule_add(struct agd_engine *e, __u64 seq, const struct ag_rule *rule,
			     const char *agent, const char *subject, struct agd_err *oe);
int agd_engine_apply_rule_del(struct agd_engine *e, __u64 seq, const struct ag_rule *rule,
			     const char *subject, struct agd_err *oe);
int agd_engine_apply_config_set(struct agd_engine *e, __u64 seq, const struct agd_config_change *c,
			       const char *subject, struct agd_err *oe);
int agd_engine_apply_parent_put(struct agd_engine *e, __u64 seq, const char *name,
				const struct agd_budget_change *c, const char *subject,
				bool *created, struct agd_err *oe);
int agd_engine_apply_parent_delete(struct agd_engine *e, __u64 seq, const char *name,
				   const char *subject, struct agd_err *oe);

/* ---- replication (the fleet) ---------------------------------------------------
 *
 * With a replicator set, ratings and operator changes (agent put/delete,
 * rule add/delete) are not applied where they arrive: they are handed to the
 * replicator, which appends them to the fleet's log; every host applies the
 * log in order through agd_engine_submit (jobs with a seq) and
 * agd_engine_apply_op, and the sequence is stored in the same LMDB
 * transaction as the state it produced. Bucket operations (reset, drain,
 * consume) stay local. */

enum agd_op_kind {
	AGD_OP_AGENT_PUT = 1,
	AGD_OP_AGENT_DELETE,
	AGD_OP_RULE_ADD,
	AGD_OP_RULE_DEL,
	AGD_OP_CONFIG_SET,
	/* Idle agents in a fleet (expire.c): a host saw traffic of the agent;
	 * a host proposes to expire it, applied where its last log entry is
	 * still `mark`. */
	AGD_OP_AGENT_TOUCH,
	AGD_OP_AGENT_EXPIRE,
	AGD_OP_AUTH_REVOKE, /* a revoked token or subject (revoked.h) */
	/* Rule feeds (feeds.c): a feed bound to the agent or unbound, and the
	 * agent's feed set replaced (the set travels with the op). */
	AGD_OP_FEED_PUT,
	AGD_OP_FEED_DELETE,
	AGD_OP_FEED_SET,
	AGD_OP_PARENT_PUT, /* a parent bucket (budget) */
	AGD_OP_PARENT_DELETE,
};


struct agd_op {
	enum agd_op_kind kind;
	char agent[AG_NAME_MAX + 1];   /* AGENT_*, RULE_ADD */
	struct agd_agent_change change; /* AGENT_PUT */
	struct agd_budget_change budget; /* PARENT_PUT */
	struct ag_rule rule;           /* RULE_* */
	struct agd_config_change config; /* CONFIG_SET */
	__u64 mark;                    /* AGENT_EXPIRE */
	struct agd_revocation revoke;  /* AUTH_REVOKE */
	struct agd_feed_meta feed;     /* FEED_PUT (source, interval), FEED_SET */
	const struct agd_feed_set *feed_set; /* FEED_SET, the caller's */
	/* FEED_SET in a fleet's log: the stream sequences of the messages
	 * holding the set (fleet/fleet_log.c), and its size and digest. */
	__u64 *feed_parts;
	size_t n_feed_parts, feed_n;
	char feed_created[AGD_FEED_TIME_MAX + 1];
	char subject[136];             /* who asked, for the audit log */
};

struct agd_replicator {
	/* Takes over a rating job; finishes it with agd_job_complete. */
	int (*submit)(void *arg, struct agd_job *job);
	/* Runs a change through the log; returns what applying it here gave. */
	int (*op)(void *arg, const struct agd_op *op, bool *created, struct agd_err *oe);
	void *arg;
};

/* Set before the API starts; NULL: standalone. */
void agd_engine_replicate(struct agd_engine *e, const struct agd_replicator *r);
/* The replicator set, or NULL (standalone). */
const struct agd_replicator *agd_engine_replicator(struct agd_engine *e);
int agd_engine_apply_op(struct agd_engine *e, const struct agd_op *op, __u64 seq, bool *created,
		       struct agd_err *oe);
/* The log sequence the stored state includes (0: none). */
__u64 agd_engine_log_seq(struct agd_engine *e);
/* With auto-create off: -ENOENT and msg naming the first item whose agent
 * is unknown here (a whole-or-nothing job is refused before the log). */
int agd_engine_check_agents(struct agd_engine *e, const struct agd_job *job, char *msg,
			   size_t len);
/* Fills job->agents with the current values of the agents its items name. */
int agd_engine_job_agents(struct agd_engine *e, struct agd_job *job);
/* The fraction of the agent's (fleet-wide) rate this host's bucket gets:
 * its bucket refills at rate * share. Not stored: the fleet recomputes it. */
int agd_engine_set_share(struct agd_engine *e, const char *name, double share);

/* ---- rule feeds (feeds.c) ------------------------------------------------------
 *
 * An agent's feed: a source (a file or an http(s) URL) whose prefixes are
 * the agent's feed rules, kept apart from the rules made by hand (a feed
 * never removes those; a hand rule deleted that the feed also has stays in
 * the maps). The set is replaced whole (ag_rules_swap: the new set in, then
 * the prefixes that left), stored with its source and validators, and in a
 * fleet applied from the log on every host. The refreshes themselves
 * (ingest/feeds.c) report how each went (agd_engine_feed_checked): local,
 * shown in explain, GET /v1/agents/{a}/feed and the metrics. */

#define AGD_FEED_REASON_LIST(X)                                                          \
	X(UNREACHABLE, "unreachable") /* no answer, an HTTP error, an unreadable file */  \
	X(MALFORMED, "malformed")     /* not a feed: the parser's error */                \
	X(OVERSIZED, "oversized")     /* beyond --rule-feed-max-bytes or -max-prefixes */ \
	X(SHRUNK, "shrunk")           /* lost more than --rule-feed-max-shrink */         \
	X(REFUSED, "refused")         /* the swap failed: a full map, the store */

enum agd_feed_reason {
#define X(id, name) AGD_FEED_##id,
	AGD_FEED_REASON_LIST(X)
#undef X
	AGD_FEED_REASON__N
};
extern const char *const agd_feed_reason_names[AGD_FEED_REASON__N];

struct agd_feed_info {
	char agent[AG_NAME_MAX + 1];
	struct agd_feed_meta meta;
	char created[AGD_FEED_TIME_MAX + 1];
	size_t prefixes;  /* in the last good set */
	size_t conflicts; /* of them, another agent's rule already */
	__u64 checked_ms; /* last refresh, wall clock; 0: none since start */
	__u64 ok_ms;      /* last refresh that succeeded (applied or unchanged) */
	bool stale;       /* the last refresh failed: the last good set stays */
	int reason;       /* enum agd_feed_reason of the last failure, -1: none */
	char why[AGD_ERR_MAX];
	__u64 applied, unchanged, failed[AGD_FEED_REASON__N]; /* since start */
};

/* Binds agent to a source (a path or an http(s) URL; interval_ms 0: the
 * default); its last good set stays until the new source gives one. */
int agd_engine_feed_put(struct agd_engine *e, const char *agent, const char *source,
		       __u64 interval_ms, const char *subject, struct agd_err *oe);
/* Unbinds it: the feed's rules leave the maps (hand rules stay). */
int agd_engine_feed_delete(struct agd_engine *e, const char *agent, const char *subject,
			  struct agd_err *oe);
/* Replaces the agent's feed set by set (normalized). m->source names the
 * feed it came from (-ESTALE when the agent's feed is another by now), ""
 * for a set given whole (rule sync: -EEXIST when a source feeds the agent).
 * m's validators are stored with it. */
int agd_engine_feed_set(struct agd_engine *e, const char *agent, const struct agd_feed_set *set,
		       const struct agd_feed_meta *m, const char *subject, struct agd_err *oe);
int agd_engine_apply_feed_put(struct agd_engine *e, __u64 seq, const char *agent,
			     const struct agd_feed_meta *m, const char *subject, struct agd_err *oe);
int agd_engine_apply_feed_delete(struct agd_engine *e, __u64 seq, const char *agent,
				const char *subject, struct agd_err *oe);
int agd_engine_apply_feed_set(struct agd_engine *e, __u64 seq, const char *agent,
			     const struct agd_feed_set *set, const struct agd_feed_meta *m,
			     const char *subject, struct agd_err *oe);
/* Every feed (*out malloc'ed), or one (-ENOENT). */
int agd_engine_feeds(struct agd_engine *e, struct agd_feed_info **out, size_t *n);
int agd_engine_feed_info(struct agd_engine *e, const char *agent, struct agd_feed_info *out);
/* A refresh's outcome: reason -1 with applied or unchanged, else the
 * failure and why. Validators ("" keeps the stored ones) are remembered for
 * the next conditional request. */
void agd_engine_feed_checked(struct agd_engine *e, const char *agent, const char *source,
			    int reason, bool applied, const char *why, const char *etag,
			    const char *last_modified);
/* The feed object of GET /v1/agents/{a}/feed and explain's "feed"
 * (agentgated(8), RULE FEEDS). */
void *agd_feed_info_json(const struct agd_feed_info *fi); /* json_t * */

/* ---- revoked tokens (revoked.c) ---------------------------------------------------
 *
 * Stored, audited (auth.revoke) and in memory at once; in a fleet through
 * the log, so every host refuses the token. */

/* -EINVAL for an empty or overlong value or an until before at; -ENOSPC
 * when AGD_REVOKED_MAX unexpired revocations are kept. */
int agd_engine_revoke(struct agd_engine *e, const struct agd_revocation *r, const char *subject,
		     struct agd_err *oe);
int agd_engine_apply_revoke(struct agd_engine *e, __u64 seq, const struct agd_revocation *r,
			   const char *subject, struct agd_err *oe);
/* Whether a token (jti "" when none, sub, iat -1 when none) is revoked. */
bool agd_engine_revoked(struct agd_engine *e, const char *jti, const char *sub, int64_t iat,
		       int64_t now_s);
size_t agd_engine_revoked_count(struct agd_engine *e);

/* ---- views -------------------------------------------------------------------- */

struct agd_agent_view {
	char name[AG_NAME_MAX + 1];
	__u32 slot;
	struct agd_policy policy; /* effective */
	unsigned int set;        /* fields the agent sets itself */
	double rate;
	double share; /* of rate this host's bucket gets (1 standalone) */
	bool fleet;   /* the engine is replicated: JSON shows the share */
	__u64 burst; /* tokens, at the local rate */
	double tokens;
	struct agd_rating_stats stats;
	struct ag_counters counters;
	__u64 created_ms, updated_ms;
	__u64 idle_ms; /* since its last activity seen (traffic: by the sweeps) */
	struct agd_influence influence; /* in effect */
	unsigned int influence_set;     /* its own: enum agd_influence_fields */
	bool implicit; /* created by a rating or /bucket */
	/* Its budget, from the maps (docs/BUDGETS.md): the parent bucket's
	 * name ("" for none) and its quota (limit 0: none). */
	char parent[AG_NAME_MAX + 1];
	struct ag_quota_status quota;
};

int agd_engine_agent_view(struct agd_engine *e, const char *name, struct agd_agent_view *v);
/* The agent's effective policy, or the defaults a new agent would get. */
void agd_engine_policy_of(struct agd_engine *e, const char *name, struct agd_policy *p);
/* Where the agent's rate comes from (explain.h; agentgated(8), EXPLAIN): a
 * jansson object (json_t *) as void *, the caller's to json_decref: the
 * one GET /v1/agents/{agent}/explain returns. -ENOENT with oe->msg naming
 * an unknown agent, -EINVAL for a bad name, -EBUSY without a store reader
 * slot, -EUCLEAN for a malformed stored value, -ENOMEM. */
int agd_engine_explain(struct agd_engine *e, const char *name, void **json_out,
		      struct agd_err *oe);
/* A page of agents in name order: at most limit (>= 1) views of the
 * agents after `after` ("" for the first page); free(*out). next is the
 * `after` of the next page, "" on the last one. Read from the store with a
 * cursor, so a page costs the same at any depth; agents deleted while the
 * page is read are left out (a page may then hold fewer than limit).
 * -EBUSY when the store has no reader slot free. */
int agd_engine_agent_page(struct agd_engine *e, const char *after, size_t limit,
			 struct agd_agent_view **out, size_t *n, char next[AG_NAME_MAX + 1]);
size_t agd_engine_agent_count(struct agd_engine *e);

/* Every agent's view (slot order not guaranteed); free(*out). Counters
 * read in one pass. */
int agd_engine_agent_views(struct agd_engine *e, struct agd_agent_view **out, size_t *n);

/* Parents as the fleet's demand sharing sees them: the packets or bytes
 * (by unit) that reached each, and this host's share of its rate. */
struct agd_parent_view {
	char name[AG_NAME_MAX + 1];
	enum ag_unit unit;
	double rate;  /* the operator's, fleet-wide */
	double share; /* of rate this host's bucket gets (1 standalone) */
	struct ag_counters counters;
};
int agd_engine_parent_views(struct agd_engine *e, struct agd_parent_view **out, size_t *n);
/* This host's share of a parent's rate (the fleet's demand sharing):
 * -ENOENT for a name that is not a parent, -EINVAL outside (0, 1]. */
int agd_engine_set_parent_share(struct agd_engine *e, const char *name, double share);
/* Quotas in a fleet (docs/FLEET.md): this host's own count of each quota
 * in the window running now (used > 0 only), and what the other hosts used
 * of it, which is counted in this host's quota word too: the datapath and
 * consume refuse once the fleet used the limit, and the API shows the
 * fleet's use. */
struct agd_quota_view {
	char name[AG_NAME_MAX + 1];
	__u64 idx, used;
};
int agd_engine_quota_views(struct agd_engine *e, struct agd_quota_view **out, size_t *n);
int agd_engine_set_quota_others(struct agd_engine *e, const char *name, __u64 idx, __u64 others);
/* A parent's stored rate and this host's share: 0, or -ENOENT. */
int agd_engine_parent_rate(struct agd_engine *e, const char *name, double *rate, double *share);

/* Every agent's idle time (ms, as agd_agent_view has it) and TTL (s) by slot,
 * for slots < n; slots without a daemon agent get idle UINT64_MAX. */
void agd_engine_activity(struct agd_engine *e, __u64 *idle_ms, __u32 *ttl_s, size_t n);

/* Engine counters for /metrics. */
#define AGD_APPLY_BUCKETS 14
extern const double agd_apply_bucket_le[AGD_APPLY_BUCKETS];
/* What one agent's ratings met since agentgated started, by reason: a
 * move cut (damped) or ratings refused. Kept per agent (explain) and in
 * total (metrics). X(enum, group, reason). */
#define AGD_TALLY_LIST(X)                                                      \
	X(DAMPED_WINDOW, "damped", "window")     /* --rating-max-change */     \
	X(DAMPED_USER_CAP, "damped", "user_cap") /* --rating-user-cap */       \
	X(REFUSED_USER_RATE, "refused", "user_rate")   /* --rating-user-rate */ \
	X(REFUSED_TOKEN_RATE, "refused", "token_rate") /* --rating-token-rate */ \
	X(REFUSED_ANONYMOUS, "refused", "anonymous")   /* --anonymous-ratings refuse */
enum agd_tally {
#define X(e, g, r) AGD_TALLY_##e,
	AGD_TALLY_LIST(X)
#undef X
	AGD_TALLY__N
};
extern const char *const agd_tally_group[AGD_TALLY__N];
extern const char *const agd_tally_reason[AGD_TALLY__N];

/* Ratings refused before the engine (intake limits): counted for each
 * agent they name, n items. */
/* The intake limits every way ratings come in shares (core/intake.h). */
struct agd_intake *agd_engine_intake(struct agd_engine *e);
void agd_engine_tally_refused(struct agd_engine *e, const struct agd_rating *items, size_t n,
			      enum agd_tally why);

struct agd_engine_stats {
	__u64 ratings_applied, ratings_duplicate, ratings_invalid, ratings_rejected;
	__u64 ratings_replaced; /* applied, replacing their user's earlier rating */
	__u64 tally[AGD_TALLY__N]; /* every agent's, and of agents since removed */
	__u64 waves_down, waves_up;
	__u64 voices;           /* (user, agent) latest ratings kept */
	__u64 voices_bytes;     /* the LMDB pages they take (database and log) */
	__u64 voices_memory;    /* the bytes of their table in memory */
	__u64 voices_logged;    /* records in the voice log, not yet folded */
	__u64 apply_hist[AGD_APPLY_BUCKETS + 1]; /* last: +Inf */
	double apply_sum;
	__u64 apply_count;
	__u64 queue_depth;
	__u64 dedup_ids;
	__u64 commits, commit_errors, map_errors;
	__u64 agents_refused; /* new agents without a free slot */
	__u64 agents_expired, agents_evicted;
	__u64 sweeps, sweep_cpu_ns; /* sweeps run and the CPU time they took */
	__u64 expire_errors;        /* expiries the maps or the store refused */
	__u64 expire_stale;         /* fleet: proposals the log showed active since */
};
void agd_engine_stats(struct agd_engine *e, struct agd_engine_stats *s);
/* Invalid ratings seen outside the engine (parsing) are counted here. */
void agd_engine_count_invalid(struct agd_engine *e, __u64 n);

/* The JSON form of an agent's policy and state, shared by the API and the
 * audit log. Returns a jansson object (json_t *) as void * to keep jansson
 * out of this header. */
void *agd_agent_view_json(const struct agd_agent_view *v);

#endif
