/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Voices in memory: the latest score of each (user, agent), looked up and
 * replaced by the apply thread without touching the store's B-tree.
 *
 * A rating batch's voice changes go to the store as one value of the voice
 * log (store.h), appended in the batch's own transaction: a few sequential
 * pages per commit where keeping each voice in a B-tree would dirty one
 * random page per voice. Once the log holds twice as many records as there
 * are voices (at least AGD_VOICES_FOLD_MIN), the whole table is written as the
 * new voice snapshot and the log is emptied, in one transaction (also when
 * the engine closes): sequential pages again, their cost spread over as
 * many ratings as voices. Opening reads the voices database (stores from
 * before the snapshot; emptied at the first fold), the snapshot, then the
 * log on top.
 *
 * A transaction that fails after voices changed leaves memory ahead of the
 * store: the table is then read again from the store before its next use
 * (agd_voices_sync). Every function runs under the engine's lock.
 */
#ifndef AGENTGATED_VOICES_H
#define AGENTGATED_VOICES_H

#include <stdbool.h>
#include <stddef.h>
#include <linux/types.h>

#include "store.h"
#include "err.h"

#define AGD_VOICES_FOLD_MIN 65536 /* log records before a fold, at least */

struct agd_voices;

/* Reads every voice from st (the voices database, then the log). -EUCLEAN
 * with err saying where when the store holds a damaged one. */
int agd_voices_open(struct agd_store *st, MDB_txn *txn, struct agd_voices **out,
		    struct agd_err *err);
void agd_voices_free(struct agd_voices *v);

/* Before a write transaction's first use: reads the table again when the
 * last transaction that changed it did not commit. */
int agd_voices_sync(struct agd_voices *v, struct agd_store *st, MDB_txn *txn,
		    struct agd_err *err);

/* The user's voice for agent: 1 and *score, 0 when none. */
int agd_voices_get(struct agd_voices *v, const char *agent, const char *user, int *score);
/* Sets it (logged with the transaction), *old its score before (0: a new
 * voice): 0, or -ENOMEM (the table is then read again: agd_voices_sync). */
int agd_voices_set(struct agd_voices *v, const char *agent, const char *user, int score,
		   __s64 ts_ms, int *old);
/* Forgets the agent's voices (deleted or expired; logged). */
int agd_voices_drop(struct agd_voices *v, const char *agent);

/* In the transaction, before its commit: appends what changed to the log. */
int agd_voices_flush(struct agd_voices *v, struct agd_store *st, MDB_txn *txn);
/* After it: committed, or not (memory is then read again). */
void agd_voices_settled(struct agd_voices *v, bool committed);

/* Whether the log is long enough to fold; the fold (the snapshot written
 * anew, the log emptied), in a transaction of its own (agd_voices_settled
 * after its commit). */
bool agd_voices_fold_due(const struct agd_voices *v);
__u64 agd_voices_logged(const struct agd_voices *v); /* records in the log */
int agd_voices_fold(struct agd_voices *v, struct agd_store *st, MDB_txn *txn);

/* Voices kept (every agent, or one), and the bytes the table takes. */
__u64 agd_voices_count(const struct agd_voices *v);
__u64 agd_voices_of(struct agd_voices *v, const char *agent);
size_t agd_voices_bytes(const struct agd_voices *v);

#endif
