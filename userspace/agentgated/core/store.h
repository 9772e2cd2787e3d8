/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * agentgated's persistent state in LMDB (<state dir>/data.mdb). One write
 * transaction holds everything one change produced, so a crash leaves either
 * all of it or none of it. Databases:
 *   agents   name                       -> struct agd_agent_rec
 *   rules    struct agd_rule_rec_key     -> agent name
 *   dedup_log be64 sequence             -> be64 ms | rating id: each id
 *                                          applied and when, in the order
 *                                          applied (found by an index in
 *                                          memory, store_dedup.c)
 *   dedup, dedup_at                      earlier versions' ids (id -> ms;
 *                                          ms | id -> ""), moved to
 *                                          dedup_log when the engine opens
 *   audit    be64 sequence              -> one JSON line
 *   meta     "version"                  -> __u32 AGD_STORE_VERSION
 *            "log_seq"                  -> __u64 fleet log sequence applied
 *            "defaults"                 -> struct agd_policy_rec: the global
 *                                          defaults the daemon last ran with
 *   deleted  name                       -> struct agd_deleted_rec: an agent an
 *                                          operator deleted, which ratings
 *                                          do not create again
 *   activity name                       -> struct agd_activity_rec: since when
 *                                          an idle agent has been idle, and
 *                                          what its bucket and counters read
 *                                          then (expire.c)
 *   revoked  'j' jti | 's' sub           -> struct agd_revoked_rec: a revoked
 *                                          token, or a subject's tokens issued
 *                                          until then (core/revoked.c)
 *   influence agent                     -> struct agd_influence_rec: the
 *                                          agent's own influence limits
 *   windows  agent                      -> struct agd_window_rec: the agent's
 *                                          current change window (damping)
 *   voices   agent NUL user             -> struct agd_voice_rec: the voices
 *                                          as stores before the voice snapshot
 *                                          kept them (read, emptied at the
 *                                          first fold: core/voices.c)
 *   voice_snap u64 big-endian          -> every voice as of the last fold:
 *                                          runs of AGD_VLOG_VOICE records
 *   voice_log  u64 big-endian          -> the voices set and agents dropped
 *                                          since: records (AGD_VLOG_*), one
 *                                          value per transaction
 *   feeds    agent                      -> the agent's rule feed: its source and
 *                                          validators and the last good set
 *                                          applied (core/feed.h, the record)
 *   budgets  name                       -> struct agd_budget_rec: a parent
 *                                          bucket, or an agent's parent and
 *                                          quota (core/budgets.c)
 *   hist_rated   name -> the agent's last ratings the policy applied
 *   hist_changes name -> the agent's last operator changes, and who pinned it
 *
 * The two hist_ databases are what `explain` shows (explain.c). Each is
 * written at most once per agent per committed transaction: a group commit
 * of ratings rewrites one hist_rated value per agent it moved, an operator
 * change one hist_changes value, in the transaction of the change itself.
 * A value is a head (struct agd_hist_head, or struct agd_hist_changes_head)
 * and then its entries, oldest first, each a fixed struct followed by the
 * bytes of its strings (lengths in the struct, no terminators): a ring of
 * at most AGD_HIST_RATINGS / AGD_HIST_CHANGES entries, the oldest dropped.
 * Deleting an agent deletes both in the same transaction; an agent created
 * again starts afresh. Added without a new AGD_STORE_VERSION: a store
 * without them (an older agentgated's) opens and gets them, empty; an older
 * agentgated ignores them. Their values carry AGD_HIST_VERSION.
 */
#ifndef AGENTGATED_STORE_H
#define AGENTGATED_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <lmdb.h>
#include <linux/types.h>

#include "agentgate/abi.h"
#include "policy.h"
#include "err.h"

#define AGD_STORE_VERSION 1
#define AGD_STORE_AUDIT_MAX 1000000 /* audit records kept in the store */
#define AGD_STORE_MAX_READERS 1024 /* concurrent read transactions (MDB_NOTLS) */

/* An agent as stored: its own policy fields, its current rate and its
 * rating statistics. Fixed layout: the file outlives the binary. */
struct agd_agent_rec {
	__u32 version; /* AGD_STORE_VERSION */
	__u32 set;     /* enum agd_policy_fields the agent sets itself */
	double r0, alpha, r_min, r_max, burst;
	__u32 burst_kind; /* enum agd_burst_kind */
	__u32 unit;       /* enum ag_unit */
	__u8 pinned;
	__u8 implicit;    /* created by a rating or /bucket, not by an operator */
	__u8 pad[2];
	__u32 ttl;        /* seconds, when set has AGD_POL_TTL (0: never) */
	double rate; /* current rate, tokens/s: learned, or set by an operator */
	__u64 count; /* ratings applied */
	double score_sum;
	__s64 last_ms;    /* last rating, ms since the epoch; -1: none */
	__u64 created_ms; /* wall clock */
	__u64 updated_ms;
};
_Static_assert(sizeof(struct agd_agent_rec) == 112, "agd_agent_rec layout is on-disk ABI");

struct agd_rule_rec_key {
	__u8 family; /* AF_INET, AF_INET6 */
	__u8 plen;
	__u16 port; /* host order; 0: any */
	__u8 addr[16];
};
_Static_assert(sizeof(struct agd_rule_rec_key) == 20, "agd_rule_rec_key layout is on-disk ABI");

/* An operator's delete: when and by whom. Until an operator creates the
 * agent again (which removes this), a rating naming it is refused, so a
 * deleted agent stays deleted. */
struct agd_deleted_rec {
	__u64 time_ms;
	char subject[136]; /* NUL-terminated */
};
_Static_assert(sizeof(struct agd_deleted_rec) == 144, "agd_deleted_rec layout is on-disk ABI");


/* An idle agent's activity as the sweep last stored it: idle since
 * since_ms (wall clock), when its bucket's tat word read `word` and its
 * counters `packets` (passed, dropped and would-drop, all CPUs). On start
 * the agent is idle since then only if both still read the same (the
 * datapath kept counting while no daemon ran). In a fleet it also holds
 * the sequence of the last log entry that touched the agent, written with
 * that entry's changes: every host has the same, and an expiry through the
 * log applies only where it still matches. Added without a new
 * AGD_STORE_VERSION, like the hist_ databases. */
struct agd_activity_rec {
	__u32 version; /* AGD_STORE_VERSION */
	__u32 pad;
	__u64 since_ms;
	__u64 word;
	__u64 packets;
	__u64 log_seq; /* fleet: the last log entry that touched the agent */
};
_Static_assert(sizeof(struct agd_activity_rec) == 40, "agd_activity_rec layout is on-disk ABI");

/* A user's latest rating of an agent: a new one moves the rate by
 * alpha * (score - this score), then replaces it. */
struct agd_voice_rec {
	__u8 score;
	__u8 pad[7];
	__s64 ts_ms;
};
_Static_assert(sizeof(struct agd_voice_rec) == 16, "agd_voice_rec layout is on-disk ABI");

/* An agent's change window (--rating-change-window): since start_ms, its
 * rate may move at most max_change times base either way; new_down and
 * new_up count the users who rated it for the first time in the window,
 * below and above neutral (--rating-wave); wave: a wave was flagged in it;
 * damped: the ratings whose move its bound cut. */
struct agd_window_rec {
	__s64 start_ms;
	double base;
	__u32 new_down, new_up;
	__u8 wave;
	__u8 pad[3];
	__u32 damped; /* ratings whose move the bound cut in the window */
};
_Static_assert(sizeof(struct agd_window_rec) == 32, "agd_window_rec layout is on-disk ABI");

/* An agent's own influence limits (PUT max_change, change_window,
 * wave_users, wave_hold, user_cap): the fields in `set` override the
 * daemon's options. enum agd_influence_fields. Records written before
 * user_cap existed are the first 32 bytes of this one (read as such:
 * agd_store_influence_get). */
struct agd_influence_rec {
	__u32 version; /* AGD_STORE_VERSION */
	__u32 set;
	double max_change;
	__u64 window_ms;
	__u32 wave_users;
	__u8 wave_hold;
	__u8 pad[3];
	double user_cap;
};
_Static_assert(sizeof(struct agd_influence_rec) == 40, "agd_influence_rec layout is on-disk ABI");
#define AGD_INFLUENCE_REC_V1_SIZE 32 /* without user_cap */

/* A budget (docs/BUDGETS.md): a parent bucket (kind PARENT: its rate,
 * burst and unit), or what an agent has besides its rating policy (kind
 * AGENT): each may have a parent and a quota. quota_word is the quota's
 * count (window index << 44 | used) as last saved, put back after a
 * reboot when its window still runs. Kept when an agent expires: the
 * agent made again has them again; deleted with the agent or parent. */
enum agd_budget_kind {
	AGD_BUDGET_AGENT = 1,
	AGD_BUDGET_PARENT = 2,
};
struct agd_budget_rec {
	__u32 version; /* AGD_STORE_VERSION */
	__u32 kind;    /* enum agd_budget_kind */
	double rate;   /* PARENT: tokens per second */
	__u64 burst;   /* PARENT: tokens */
	__u32 unit;    /* PARENT: enum ag_unit */
	__u32 quota_window; /* enum ag_quota_window */
	__u64 quota_limit;  /* tokens per window; 0: no quota */
	__u64 quota_word;
	__u64 updated_ms;
	char parent[AG_NAME_MAX + 1]; /* "": none */
	__u8 pad[7];
};
_Static_assert(sizeof(struct agd_budget_rec) == 128, "agd_budget_rec layout is on-disk ABI");

/* A revocation: made at at_s, kept until until_s (Unix seconds), when
 * every token it names has expired anyway. */
struct agd_revoked_rec {
	__s64 at_s;
	__s64 until_s;
};
_Static_assert(sizeof(struct agd_revoked_rec) == 16, "agd_revoked_rec layout is on-disk ABI");

/* meta "defaults": what inherited policy fields resolve to, for readers
 * that do not have the daemon's configuration (agentgate agent explain). */
struct agd_policy_rec {
	__u32 version; /* AGD_STORE_VERSION */
	__u32 burst_kind, unit;
	__u8 pinned;
	__u8 pad[3];
	double r0, alpha, r_min, r_max, burst;
};
_Static_assert(sizeof(struct agd_policy_rec) == 56, "agd_policy_rec layout is on-disk ABI");

/* ---- explain history (hist_rated, hist_changes) ---- */
#define AGD_HIST_VERSION 1
#define AGD_HIST_RATINGS 16   /* ratings kept per agent */
#define AGD_HIST_CHANGES 16   /* operator changes kept per agent */
#define AGD_HIST_STR_MAX 255  /* bytes of an id, user, subject or action */
#define AGD_HIST_DETAIL_MAX 4096 /* bytes of a change's detail (JSON) */

struct agd_hist_head {
	__u32 version; /* AGD_HIST_VERSION */
	__u32 n;       /* entries that follow */
	__u64 total;   /* entries ever recorded for the agent (the ring keeps n) */
};
_Static_assert(sizeof(struct agd_hist_head) == 16, "agd_hist_head layout is on-disk ABI");

/* One rating the policy applied (the agent not pinned, not a duplicate),
 * followed by id_len bytes of its id and user_len bytes of its user. */
struct agd_hist_rating_rec {
	__s64 ts_ms;      /* the rating's time: the client's, else when applied */
	__u64 applied_ms; /* when its batch was applied */
	double rate_before, rate_after;
	__u8 score;
	__u8 id_len, user_len;
	__u8 pad[5];
};
_Static_assert(sizeof(struct agd_hist_rating_rec) == 40, "agd_hist_rating_rec layout is on-disk ABI");

struct agd_hist_changes_head {
	struct agd_hist_head h;
	__s64 pin_ms; /* the change that pinned the agent: when; -1: none recorded */
	__u8 pin_subject_len;
	__u8 pad[7];
	char pin_subject[256]; /* and who made it (pin_subject_len bytes) */
};
_Static_assert(sizeof(struct agd_hist_changes_head) == 288,
	       "agd_hist_changes_head layout is on-disk ABI");

/* One operator change, followed by subject_len bytes of its subject,
 * action_len of its action ("agent.update", ...) and detail_len of its
 * detail: compact JSON {"before": {...}, "after": {...}} holding the fields
 * that changed (either side null when there is none). */
struct agd_hist_change_rec {
	__u64 time_ms;
	__u8 subject_len, action_len;
	__u16 detail_len;
	__u8 pad[4];
};
_Static_assert(sizeof(struct agd_hist_change_rec) == 16, "agd_hist_change_rec layout is on-disk ABI");

/* Decoded entries (in memory only). */
struct agd_hist_rating {
	__s64 ts_ms;
	__u64 applied_ms;
	double rate_before, rate_after;
	int score;
	char id[AGD_HIST_STR_MAX + 1];   /* "" when the rating had none */
	char user[AGD_HIST_STR_MAX + 1]; /* "" when the rating had none */
};

struct agd_hist_change {
	__u64 time_ms;
	char subject[AGD_HIST_STR_MAX + 1];
	char action[AGD_HIST_STR_MAX + 1];
	char detail[AGD_HIST_DETAIL_MAX + 1];
};

struct agd_hist_ratings {
	__u64 total;
	size_t n; /* oldest first */
	struct agd_hist_rating r[AGD_HIST_RATINGS];
};

struct agd_hist_changes {
	__u64 total;
	__s64 pin_ms;
	char pin_subject[AGD_HIST_STR_MAX + 1];
	size_t n; /* oldest first */
	struct agd_hist_change c[AGD_HIST_CHANGES];
};

struct agd_store {
	MDB_env *env;
	MDB_dbi agents, rules, dedup, dedup_at, dedup_log, audit, meta;
	MDB_dbi hist_rated, hist_changes;
	MDB_dbi deleted;
	MDB_dbi activity;
	MDB_dbi revoked;
	MDB_dbi voices;
	MDB_dbi voice_log;
	MDB_dbi voice_snap;
	MDB_dbi windows;
	MDB_dbi influence;
	MDB_dbi feeds;
	MDB_dbi budgets; /* 0 in a read-only open of an older store */
	bool hist; /* the hist_ databases are there (read-only: an older store lacks them) */
	struct agd_dedup_index *ids; /* rating ids by hash (store_dedup.c); NULL until loaded */
};

#define AGD_STORE_FILE "data.mdb"
/* Written next to data.mdb once the store is initialised: from then on a
 * missing or empty data.mdb is refused, never taken for a first start. */
#define AGD_STORE_MARKER "data.mdb.init"

/* Open or create the store in dir (created 0700). map_size: bytes the
 * file may grow to (MDB_MAP_FULL past it). Before LMDB maps the file, and
 * again under its writer lock before anything is written, the file is
 * checked whole (agd_store_check). -EUCLEAN, with err naming the file and
 * what is wrong, when the store is refused: damaged, cut short, not an
 * LMDB file, of another version, not a regular file, or missing or empty
 * where the state dir was initialised before (AGD_STORE_MARKER or
 * lock.mdb). Nothing is written to a refused store. Other errors: -errno. */
int agd_store_open(const char *dir, size_t map_size, struct agd_store *st, struct agd_err *err);
void agd_store_close(struct agd_store *st);

/* The integrity check of an LMDB data file through pread alone (never its
 * map): the meta pages and the file's size (full: and every page of every
 * database, store_check.c). 0, -EUCLEAN with what is wrong, or -errno. */
int agd_store_check(int fd, bool full, struct agd_err *err);

/* A write transaction, refused (-EUCLEAN) once the store is damaged; it
 * also checks, without touching the map, that data.mdb was not cut short,
 * removed or replaced since (LMDB never shrinks it). */
int agd_store_txn_begin(struct agd_store *st, MDB_txn **txn);
/* With LMDB's per-transaction flags (MDB_NOMETASYNC). */
int agd_store_txn_begin_flags(struct agd_store *st, MDB_txn **txn, unsigned int flags);
/* Commits, or aborts (-EUCLEAN) when the store was found damaged meanwhile. */
int agd_store_commit(struct agd_store *st, MDB_txn *txn);

/* A negative errno for an LMDB or system error code; a damaged store
 * (MDB_CORRUPTED, MDB_PAGE_NOTFOUND, MDB_PANIC, an I/O error...) gives
 * -EUCLEAN and is remembered: every later write is refused. Errors are
 * counted (agd_store_errors). */
int agd_store_errno(int rc);
/* Sets e to err with "CONTEXT: " (fmt, when not NULL) and what the store
 * says about an error agd_store_errno() just returned in this thread:
 * -ENOSPC says whether the disk or the store size is full; -EUCLEAN names
 * the damaged file and what was found. Returns err. */
int agd_store_fail(struct agd_err *e, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Once the open store was found damaged (an LMDB error, a SIGBUS from its
 * map when the file was cut short under the daemon, the file shrunk,
 * removed or replaced): true, with the message. The daemon then refuses
 * changes and is not ready; a restart checks the file again. */
bool agd_store_damaged(struct agd_err *why);
/* Store errors outside a commit (a commit's own are the engine's). */
__u64 agd_store_errors(void);
/* notify: run once when damage is first seen, possibly in a signal
 * handler, so async-signal-safe. fatal: run when LMDB fails one of its own
 * assertions, with its text, instead of LMDB's abort(); it must not
 * return (LMDB aborts if it does). Either may be NULL. */
void agd_store_on_damage(void (*notify)(void), void (*fatal)(const char *why));

/* The rec's own policy and the effective one under `defaults`. */
void agd_rec_policy(const struct agd_agent_rec *r, struct agd_policy *own);
void agd_rec_set_policy(struct agd_agent_rec *r, const struct agd_policy *own, unsigned int set);
void agd_rec_effective(const struct agd_agent_rec *r, const struct agd_policy *defaults,
		      struct agd_policy *out);

/* A read transaction (a snapshot: it never waits for a writer); -EBUSY
 * when no reader slot is free. End it with agd_store_txn_end. */
int agd_store_read_begin(struct agd_store *st, MDB_txn **txn);
/* Ends a transaction without committing (reads, or a write given up). */
void agd_store_txn_end(MDB_txn *txn);

/* Every stored agent in name order, to fn (a record of another size or a
 * key that is not a name is skipped, counted in *skipped when not NULL);
 * fn returns 0 to go on, or an error that ends the walk and is returned. */
int agd_store_agents_foreach(struct agd_store *st, MDB_txn *txn,
			    int (*fn)(void *arg, const char *name, const struct agd_agent_rec *rec),
			    void *arg, size_t *skipped);
/* The names after `after` in key order (bytes, as strcmp orders names), at
 * most max: O(log n + max) at any depth. */
int agd_store_agent_names_after(struct agd_store *st, MDB_txn *txn, const char *after, size_t max,
			       char (*names)[AG_NAME_MAX + 1], size_t *n);
/* Every stored rule to fn; fn returns 1 to delete the rule it was given, 0
 * to keep it, or an error that ends the walk and is returned. */
int agd_store_rules_foreach(struct agd_store *st, MDB_txn *txn,
			   int (*fn)(void *arg, const struct agd_rule_rec_key *key,
				     const char *agent),
			   void *arg);
/* The agent a stored rule maps to, into buf; 0, -ENOENT or an error. */
int agd_store_rule_get(struct agd_store *st, MDB_txn *txn, const struct agd_rule_rec_key *key,
		      char *buf, size_t len);

int agd_store_agent_put(struct agd_store *st, MDB_txn *txn, const char *name,
		       const struct agd_agent_rec *rec);
int agd_store_agent_del(struct agd_store *st, MDB_txn *txn, const char *name);
/* 0 and *rec, -ENOENT, -EUCLEAN for a record of another size, -errno. */
int agd_store_agent_get(struct agd_store *st, MDB_txn *txn, const char *name,
		       struct agd_agent_rec *rec);
int agd_store_deleted_put(struct agd_store *st, MDB_txn *txn, const char *name, __u64 time_ms,
			 const char *subject);
/* 1 and *rec when name was deleted by an operator, 0 when not, -errno. */
int agd_store_deleted_get(struct agd_store *st, MDB_txn *txn, const char *name,
			 struct agd_deleted_rec *rec);
int agd_store_deleted_del(struct agd_store *st, MDB_txn *txn, const char *name);

/* The agent's activity record: 1 and *rec, 0 when there is none (or one of
 * another layout), -errno. */
int agd_store_activity_get(struct agd_store *st, MDB_txn *txn, const char *name,
			  struct agd_activity_rec *rec);
int agd_store_activity_put(struct agd_store *st, MDB_txn *txn, const char *name,
			  const struct agd_activity_rec *rec);

/* Voices live in memory (core/voices.c) over the snapshot and log below;
 * the voices database of older stores is read whole, and deleting an agent
 * deletes its voices there (agd_store_agent_del). */
/* The agent's voices: how many users rated it (their latest kept), from
 * the voices database, the snapshot and the log after them. */
int agd_store_voices_of(struct agd_store *st, MDB_txn *txn, const char *agent, __u64 *n);

/*
 * The voice snapshot and log: every voice as of the last fold (the
 * snapshot, values of up to AGD_VSNAP_VALUE_MAX bytes) and what changed
 * since (the log, one value per transaction), each value a run of
 * records:
 *   AGD_VLOG_VOICE  u8 kind, u8 agent length, u8 user length, agent, user,
 *                   u8 score, s64 ts_ms (little-endian)
 *   AGD_VLOG_DROP   u8 kind, u8 agent length, agent: the agent's voices
 *                   are gone (deleted or expired)
 * Read in key order, the snapshot then the log, on top of the voices
 * database, they give the voices now.
 */
enum { AGD_VLOG_VOICE = 1, AGD_VLOG_DROP = 2 };
enum agd_vlog_db { AGD_VLOG_LOG, AGD_VLOG_SNAP };
#define AGD_VSNAP_VALUE_MAX (1u << 20)
#define AGD_VLOG_VOICE_MAX (3 + AG_NAME_MAX + 128 + 1 + 8)
struct agd_vlog_rec {
	int kind;
	char agent[AG_NAME_MAX + 1];
	char user[128 + 1];
	int score;
	__s64 ts_ms;
};
/* Appends one record to buf (room: AGD_VLOG_VOICE_MAX); its length. */
size_t agd_vlog_encode(unsigned char *buf, const struct agd_vlog_rec *r);
size_t agd_vlog_encode_voice(unsigned char *buf, const char *agent, const char *user, int score,
			     __s64 ts_ms);
/* The record at *p (before end): 1 and *r with *p past it, 0 at end,
 * -EUCLEAN when it is damaged. */
int agd_vlog_decode(const unsigned char **p, const unsigned char *end, struct agd_vlog_rec *r);
/* Each value of the log or the snapshot in order; fn's nonzero return
 * stops and is returned. */
int agd_store_vlog_foreach(struct agd_store *st, MDB_txn *txn, enum agd_vlog_db db,
			  int (*fn)(void *arg, const unsigned char *data, size_t len), void *arg);
/* A value after the last; one emptied (at a fold). */
int agd_store_vlog_append(struct agd_store *st, MDB_txn *txn, enum agd_vlog_db db,
			 const void *data, size_t len);
int agd_store_vlog_clear(struct agd_store *st, MDB_txn *txn, enum agd_vlog_db db);
/* The voices database emptied (its voices are in the snapshot now). */
int agd_store_voices_clear(struct agd_store *st, MDB_txn *txn);
/* Every voice in the voices database, in key order. */
int agd_store_voices_foreach(struct agd_store *st, MDB_txn *txn,
			    int (*fn)(void *arg, const char *agent, const char *user,
				      const struct agd_voice_rec *rec),
			    void *arg);
/* Voices in the voices database (a store from before the snapshot), and
 * the bytes of its pages, the snapshot's and the log's (bytes may be NULL). */
__u64 agd_store_voice_count(struct agd_store *st, MDB_txn *txn, __u64 *bytes);

/* Influence limits: 1 and *rec, 0 when none, -errno; put deletes it when
 * rec->set is 0; foreach gives each stored one to fn. */
int agd_store_influence_get(struct agd_store *st, MDB_txn *txn, const char *agent,
			   struct agd_influence_rec *rec);
int agd_store_influence_put(struct agd_store *st, MDB_txn *txn, const char *agent,
			   const struct agd_influence_rec *rec);
int agd_store_influence_foreach(struct agd_store *st, MDB_txn *txn,
			       int (*fn)(void *arg, const char *agent,
					 const struct agd_influence_rec *rec),
			       void *arg);

/* Budgets: put replaces, del of a missing one is 0; foreach gives each
 * stored one to fn (a record of another size or version: *skipped). */
int agd_store_budget_put(struct agd_store *st, MDB_txn *txn, const char *name,
			 const struct agd_budget_rec *rec);
int agd_store_budget_del(struct agd_store *st, MDB_txn *txn, const char *name);
int agd_store_budgets_foreach(struct agd_store *st, MDB_txn *txn,
			      int (*fn)(void *arg, const char *name,
					const struct agd_budget_rec *rec),
			      void *arg, size_t *skipped);

/* Change windows: 1 and *rec, 0 when none, -errno. */
int agd_store_window_get(struct agd_store *st, MDB_txn *txn, const char *agent,
			struct agd_window_rec *rec);
int agd_store_window_put(struct agd_store *st, MDB_txn *txn, const char *agent,
			const struct agd_window_rec *rec);

/* Revocations: key is the kind byte ('j', 's') and the value. */
int agd_store_revoked_put(struct agd_store *st, MDB_txn *txn, const char *key,
			 const struct agd_revoked_rec *rec);
int agd_store_revoked_del(struct agd_store *st, MDB_txn *txn, const char *key);
/* Every stored revocation to fn (one of another size is skipped). */
int agd_store_revoked_foreach(struct agd_store *st, MDB_txn *txn,
			     int (*fn)(void *arg, const char *key, const struct agd_revoked_rec *rec),
			     void *arg);

/* Moves at most budget ids of earlier versions' databases (dedup_at, in
 * the order they expire; dedup emptied) to dedup_log; *more when some are
 * left for another transaction. Before agd_store_dedup_load. */
int agd_store_dedup_migrate(struct agd_store *st, MDB_txn *txn, size_t budget, bool *more);
/* The index of rating ids in memory, made from dedup_log. The seen, add
 * and prune calls need it (-ENOTCONN without). */
int agd_store_dedup_load(struct agd_store *st, MDB_txn *txn);
void agd_store_dedup_unload(struct agd_store *st);
/* At the start of a write transaction: made again when the last one that
 * changed the index did not commit. settled: after a commit (or not). */
int agd_store_dedup_sync(struct agd_store *st, MDB_txn *txn);
void agd_store_dedup_settled(struct agd_store *st, bool committed);
/* Brings the index's slot for id toward the CPU (no effect otherwise). */
void agd_store_dedup_prefetch(const struct agd_store *st, const char *id);
/* 1 when id was applied (inside the window), 0 when not, negative errno. */
int agd_store_dedup_seen(struct agd_store *st, MDB_txn *txn, const char *id);
/* Records id: 0, or 1 when it was already there (a duplicate, not
 * recorded again), or negative errno. */
int agd_store_dedup_add(struct agd_store *st, MDB_txn *txn, const char *id, __u64 now_ms);
/* Forget ids older than now_ms - window_ms and the oldest beyond max_ids,
 * at most `budget` of them (the rest on the next call). */
int agd_store_dedup_prune(struct agd_store *st, MDB_txn *txn, __u64 now_ms, __u64 window_ms,
			 __u64 max_ids, size_t budget);
__u64 agd_store_dedup_count(struct agd_store *st, MDB_txn *txn);

int agd_store_rule_put(struct agd_store *st, MDB_txn *txn, const struct agd_rule_rec_key *k,
		      const char *agent);

/* Rule feeds, the record as core/feed.c encodes it: get gives 1 and the
 * value (valid until the transaction ends), 0 when none; foreach gives each
 * agent's to fn (stops at fn's negative return). */
int agd_store_feed_get(struct agd_store *st, MDB_txn *txn, const char *agent, const void **val,
		      size_t *len);
int agd_store_feed_put(struct agd_store *st, MDB_txn *txn, const char *agent, const void *val,
		      size_t len);
int agd_store_feed_del(struct agd_store *st, MDB_txn *txn, const char *agent);
int agd_store_feeds_foreach(struct agd_store *st, MDB_txn *txn,
			   int (*fn)(void *arg, const char *agent, const void *val, size_t len),
			   void *arg);
int agd_store_rule_del(struct agd_store *st, MDB_txn *txn, const struct agd_rule_rec_key *k);

/* A __u64 under key in meta: 0 when absent. */
int agd_store_meta_get_u64(struct agd_store *st, MDB_txn *txn, const char *key, __u64 *v);
int agd_store_meta_put_u64(struct agd_store *st, MDB_txn *txn, const char *key, __u64 v);

/* Appends one JSON line under the next sequence number. */
int agd_store_audit(struct agd_store *st, MDB_txn *txn, const char *line);

/* meta "defaults": 0, -ENOENT when absent (a store no daemon of this
 * version ran on), -EUCLEAN when malformed, or negative errno. */
int agd_store_defaults_get(struct agd_store *st, MDB_txn *txn, struct agd_policy *p);
int agd_store_defaults_put(struct agd_store *st, MDB_txn *txn, const struct agd_policy *p);

/* ---- explain history ----
 * The value codecs (pure: the unit tests use them on buffers). Encoding
 * appends to `old` (NULL/0: none) and keeps the newest entries within the
 * ring; *len is the bytes of buf (malloc'd) written. skipped: ratings
 * applied just before these that the ring would drop at once (counted in
 * total only). -EUCLEAN when old is malformed, -ENOMEM. */
struct agd_hist_rating_in {
	const char *id, *user; /* NULL or "": none */
	int score;
	__s64 ts_ms;
	__u64 applied_ms;
	double rate_before, rate_after;
};
int agd_hist_ratings_encode(const void *old, size_t old_len, const struct agd_hist_rating_in *in,
			   size_t n, __u64 skipped, void **buf, size_t *len);
int agd_hist_ratings_decode(const void *buf, size_t len, struct agd_hist_ratings *out);
/* pin: 1 the change pinned the agent (subject and time_ms recorded), 0 it
 * unpinned it, -1 it left the pin alone. */
int agd_hist_changes_encode(const void *old, size_t old_len, __u64 time_ms, const char *subject,
			   const char *action, const char *detail, int pin, void **buf,
			   size_t *len);
int agd_hist_changes_decode(const void *buf, size_t len, struct agd_hist_changes *out);

/* In the write transaction. fresh: the agent is new, a value found there is
 * an earlier agent's and is replaced. */
int agd_store_hist_add_ratings(struct agd_store *st, MDB_txn *txn, const char *name, bool fresh,
			      const struct agd_hist_rating_in *in, size_t n, __u64 skipped);
int agd_store_hist_add_change(struct agd_store *st, MDB_txn *txn, const char *name, bool fresh,
			     __u64 time_ms, const char *subject, const char *action,
			     const char *detail, int pin);
/* Both values of the agent, when there. */
int agd_store_hist_del(struct agd_store *st, MDB_txn *txn, const char *name);
/* Reads them: empty (n 0, pin_ms -1) when absent. 0, -EUCLEAN, -errno. */
int agd_store_hist_get(struct agd_store *st, MDB_txn *txn, const char *name,
		      struct agd_hist_ratings *r, struct agd_hist_changes *c);

/* Opens an existing store read-only (agentgate agent explain, with no
 * daemon running): dir must hold an initialised data.mdb, sound (checked
 * whole first, agd_store_check) and of this AGD_STORE_VERSION. Nothing is
 * created or written there: LMDB's lock file is used when present (a
 * daemon may start meanwhile), else none. On success *txn is a read
 * transaction with the databases open (st->hist false when the store
 * predates them): mdb_txn_abort it, then agd_store_close. Errors: -ENOENT
 * (no directory, or no data.mdb), -ENOTDIR, -EUCLEAN (damaged, not
 * agentgated's, another version), -errno; err names the directory or file
 * and what is missing or wrong. */
int agd_store_open_ro(const char *dir, struct agd_store *st, MDB_txn **txn, struct agd_err *err);

#endif
