// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * /v1/parents and /v1/parents/{parent}: parent buckets (docs/BUDGETS.md),
 * changed through the engine (stored, audited and replicated like agents:
 * core/budgets.c) and read from the maps. They are the operator's: ratings
 * never move them.
 */
#include "server.h"
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/handlers.h"
#include "core/engine.h"

static struct ag_ctx *ctx_of(struct req *r)
{
	return agd_engine_ctx(r->h->e);
}

struct children {
	__u32 slot;
	json_t *names;
};

static int note_child(void *arg, const struct ag_agent *a)
{
	struct children *c = arg;

	if (a->parent == c->slot + 1)
		json_array_append_new(c->names, json_string(a->name));
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

/* A JSON array of names, sorted in place (children in name order, not the
 * order of their slots). */
static void sort_names(json_t *arr)
{
	size_t i, n = json_array_size(arr);
	json_t **v = n > 1 ? calloc(n, sizeof(*v)) : NULL;

	if (!v)
		return;
	for (i = 0; i < n; i++)
		v[i] = json_incref(json_array_get(arr, i));
	qsort(v, n, sizeof(*v), cmp_str);
	json_array_clear(arr);
	for (i = 0; i < n; i++)
		json_array_append_new(arr, v[i]);
	free(v);
}

static json_t *quota_json(struct agd_engine *e, __u32 slot)
{
	struct ag_quota_status q;

	if (ag_quota_status(agd_engine_ctx(e), slot, &q) || !q.limit)
		return json_null();
	return json_pack("{s:I,s:s,s:I,s:f,s:I}", "limit", (json_int_t)q.limit, "window",
			 ag_quota_window_name(q.window), "used", (json_int_t)q.used, "remaining",
			 (double)q.limit - (double)q.used, "resets_in_s",
			 (json_int_t)((q.reset_in_ns + 999999999ULL) / 1000000000ULL));
}

/* The parent object: as `agentgate parent show --json` prints it; in a
 * fleet "rate" is the operator's and "fleet" this host's part of it. */
static json_t *parent_json(struct agd_engine *e, const struct ag_agent *a)
{
	struct ag_ctx *ctx = agd_engine_ctx(e);
	double rate = a->rate, share = 1;
	json_t *o;

	struct children ch = { a->slot, json_array() };
	struct ag_counters c = { 0 };
	struct ag_refusals rf = { 0 };
	struct ag_agent up;
	double tokens = 0;
	__u64 refused;

	ag_counters_get(ctx, a->slot, &c);
	ag_refusals_get(ctx, a->slot, &rf);
	ag_bucket_tokens(ctx, a->slot, &tokens);
	ag_agent_foreach(ctx, note_child, &ch);
	ag_parent_foreach(ctx, note_child, &ch);
	sort_names(ch.names);
	refused = c.dropped_packets + c.would_drop_packets;
	agd_engine_parent_rate(e, a->name, &rate, &share);
	o = json_pack(
		"{s:s,s:I,s:f,s:I,s:s,s:f,s:o,s:o,s:o,s:I,s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I}}",
		"name", a->name, "slot", (json_int_t)a->slot, "rate", rate, "burst",
		(json_int_t)a->burst, "unit", ag_unit_name(a->unit), "tokens",
		floor(tokens * 1000) / 1000, "parent",
		a->parent && !ag_agent_get_slot(ctx, a->parent - 1, &up) ? json_string(up.name) :
									    json_null(),
		"children", ch.names, "quota", quota_json(e, a->slot), "passed_packets",
		(json_int_t)c.passed_packets, "passed_bytes", (json_int_t)c.passed_bytes,
		"dropped_packets", (json_int_t)c.dropped_packets, "dropped_bytes",
		(json_int_t)c.dropped_bytes, "would_drop_packets", (json_int_t)c.would_drop_packets,
		"created_ms", (json_int_t)(a->created_ns / 1000000), "refused", "rate",
		(json_int_t)(refused - rf.parent_packets - rf.quota_packets), "quota",
		(json_int_t)rf.quota_packets, "parent", (json_int_t)rf.parent_packets);
	if (o && agd_engine_replicator(e))
		json_object_set_new(o, "fleet", json_pack("{s:f,s:f}", "share", share,
							  "local_rate", a->rate));
	return o;
}

/* The named bucket, which must be a parent: 0, or the status sent. */
static int find_parent(struct req *r, struct ag_agent *a, int *status)
{
	int err = ag_agent_get(ctx_of(r), r->param, a);

	if (!err && a->is_parent)
		return 0;
	if (!err)
		*status = send_error(r->conn, 409, "'%s' is an agent, not a parent", r->param);
	else
		*status = send_error(r->conn, err == -ENOENT ? 404 : err == -EINVAL ? 400 : 500,
				     err == -ENOENT ? "unknown parent '%s'" : "%s",
				     err == -ENOENT ? r->param : ag_errmsg());
	return -1;
}

int parent_get(struct req *r)
{
	struct ag_agent a;
	int status;

	if (find_parent(r, &a, &status))
		return status;
	return agd_reply_json(r->conn, 200, parent_json(r->h->e, &a), NULL);
}

static int list_one(void *arg, const struct ag_agent *a)
{
	json_t *arr = ((json_t **)arg)[0];
	struct agd_engine *e = ((struct agd_engine **)arg)[1];

	return json_array_append_new(arr, parent_json(e, a)) ? -ENOMEM : 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "name")),
		      json_string_value(json_object_get(*(json_t *const *)b, "name")));
}

int parents_list(struct req *r)
{
	void *arg[2] = { json_array(), r->h->e };
	json_t *arr = arg[0], *sorted;
	json_t **items;
	size_t i, n;

	if (!arr || ag_parent_foreach(ctx_of(r), list_one, arg)) {
		json_decref(arr);
		return send_error(r->conn, 500, "cannot list the parents: %s", ag_errmsg());
	}
	n = json_array_size(arr);
	items = calloc(n ? n : 1, sizeof(*items));
	sorted = json_array();
	if (!items || !sorted) {
		free(items);
		json_decref(sorted);
		json_decref(arr);
		return send_error(r->conn, 500, "out of memory");
	}
	for (i = 0; i < n; i++)
		items[i] = json_array_get(arr, i);
	qsort(items, n, sizeof(*items), by_name);
	for (i = 0; i < n; i++)
		json_array_append(sorted, items[i]);
	free(items);
	json_decref(arr);
	return agd_reply_json(r->conn, 200, json_pack("{s:o}", "parents", sorted), NULL);
}

int parent_put(struct req *r)
{
	static const char *const allowed[] = { "rate", "burst", "unit", "parent", "quota", NULL };
	struct agd_budget_change b;
	struct agd_err oe = { 0 };
	struct ag_agent a;
	bool created = false;
	int status = 0, err;
	json_t *o;

	err = ag_name_check(r->param);
	if (err)
		return send_error(r->conn, 400, "%s", ag_errmsg());
	o = body_object(r, allowed, &status);
	if (!o)
		return status;
	err = agd_budget_parse(o, true, &b, &oe);
	json_decref(o);
	if (!err)
		err = agd_engine_parent_put(r->h->e, r->param, &b, r->tok.subject, &created, &oe);
	if (err)
		return send_error(r->conn, agd_engine_status(err), "%s", oe.msg);
	if (ag_agent_get(ctx_of(r), r->param, &a))
		return send_error(r->conn, 500, "%s", ag_errmsg());
	return agd_reply_json(r->conn, created ? 201 : 200, parent_json(r->h->e, &a), NULL);
}

int parent_delete(struct req *r)
{
	struct agd_err oe = { 0 };
	int err = agd_engine_parent_delete(r->h->e, r->param, r->tok.subject, &oe);

	if (err)
		return send_error(r->conn, agd_engine_status(err), "%s", oe.msg);
	return agd_reply_json(r->conn, 200, json_pack("{s:s}", "deleted", r->param), NULL);
}
