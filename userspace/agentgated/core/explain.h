/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * explain: where an agent's rate comes from, as one JSON object built from a
 * read transaction of the state store (the agent's record, the global
 * defaults, its history: store.h, hist_rated and hist_changes) and the live
 * values of the maps. agentgated serves it (agd_engine_explain: GET
 * /v1/agents/{agent}/explain and the control socket); agentgate builds the
 * same object from the state directory, read-only, when no daemon runs. So
 * this file needs the store, the policy and libagentgate, nothing of the
 * engine. The object's fields are documented in agentgated(8), EXPLAIN.
 */
#ifndef AGENTGATED_EXPLAIN_H
#define AGENTGATED_EXPLAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>
#include <lmdb.h>
#include <linux/types.h>

#include "agentgate.h"
#include "policy.h"
#include "store.h"
#include "err.h"

struct agd_explain_opts {
	/* The global defaults inherited fields resolve to; NULL: the ones the
	 * daemon stored (meta "defaults"), else the built-in ones. */
	const struct agd_policy *defaults;
	struct ag_ctx *ctx; /* the maps, for the live values; NULL: none */
	bool fleet;         /* in a fleet: share is this host's part of the rate */
	double share;
	const char *answered_by; /* "agentgated" or "state store" */
	/* The agent's voices, counted by the caller (the daemon keeps them in
	 * memory); < 0: counted from the store. */
	__s64 voices;
};

/* The explain object of agent `name`: 0 and *out (json_t *, the caller's
 * reference), -ENOENT with err "unknown agent 'NAME'" when neither the
 * store nor the maps know it, -EUCLEAN when its stored values are
 * malformed (err says which), -ENOMEM or another negative errno. */
int agd_explain_build(struct agd_store *st, MDB_txn *txn, const char *name,
		      const struct agd_explain_opts *o, json_t **out, struct agd_err *err);

/* Records an operator change (an audit record: action, subject, before and
 * after as the audit log has them) in the agent's history, in the change's
 * own write transaction: the fields that differ are kept, and a change
 * that pins the agent is remembered as its pin. agent.delete removes the
 * history (ratings and changes); agent.create starts both afresh; no agent
 * (config.set): nothing. */
int agd_explain_record_change(struct agd_store *st, MDB_txn *txn, const char *agent,
			      __u64 time_ms, const char *subject, const char *action,
			      json_t *before, json_t *after);

/* The diff stored for a change: {"before": {...}|null, "after": {...}|null}
 * holding the keys whose values differ; malloc'd compact JSON, or NULL. */
char *agd_explain_change_detail(json_t *before, json_t *after);

/* A policy's burst as the API shows it: tokens, or "Ns" (seconds of rate). */
json_t *agd_burst_policy_json(const struct agd_policy *p);

#endif
