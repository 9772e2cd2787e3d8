// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * agentgate agent explain NAME: where an agent's rate came from. While
 * agentgated owns the pin root it answers (the control socket's
 * agent.explain, the object of GET /v1/agents/{agent}/explain); without a
 * daemon the same object is built here from its state directory
 * (--state-dir), opened read-only with the daemon's own code (explain.c),
 * and the live values come from the maps. A directory that holds no
 * agentgated store, or a damaged one, is an error: never an empty answer.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "../agentgated/core/explain.h"

/* ---- JSON: the object through the CLI's writer ------------------------------------ */

static void emit(struct jsonw *w, json_t *v, int depth)
{
	const char *key;
	json_t *x;
	size_t i;

	if (depth >= JSONW_MAX_DEPTH - 1) { /* deeper than explain goes */
		jsonw_null(w);
		return;
	}
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		jsonw_start_object(w);
		json_object_foreach(v, key, x) {
			jsonw_name(w, key);
			emit(w, x, depth + 1);
		}
		jsonw_end_object(w);
		break;
	case JSON_ARRAY:
		jsonw_start_array(w);
		json_array_foreach(v, i, x)
			emit(w, x, depth + 1);
		jsonw_end_array(w);
		break;
	case JSON_STRING:
		jsonw_string(w, json_string_value(v));
		break;
	case JSON_INTEGER:
		jsonw_int(w, json_integer_value(v));
		break;
	case JSON_REAL:
		jsonw_double(w, json_real_value(v));
		break;
	case JSON_TRUE:
	case JSON_FALSE:
		jsonw_bool(w, json_is_true(v));
		break;
	default:
		jsonw_null(w);
	}
}

void cli_emit_json(struct jsonw *w, json_t *v)
{
	emit(w, v, 0);
}

/* ---- human text ------------------------------------------------------------------- */

static double num(json_t *o, const char *key)
{
	return json_number_value(json_object_get(o, key));
}

static const char *text_of(json_t *o, const char *key, const char *none)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s && s[0] ? s : none;
}

static void when(json_t *ms, char *buf, size_t len)
{
	json_int_t v;
	time_t t;
	struct tm tm;
	char s[40];

	if (!json_is_integer(ms) || (v = json_integer_value(ms)) < 0) {
		snprintf(buf, len, "-");
		return;
	}
	t = (time_t)(v / 1000);
	if (!gmtime_r(&t, &tm)) {
		snprintf(buf, len, "-");
		return;
	}
	strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%03dZ", s, (int)(v % 1000));
}

/* A value as a person reads it: numbers %.6g, strings bare. */
static void value(json_t *v, char *buf, size_t len)
{
	if (json_is_number(v))
		snprintf(buf, len, "%.6g", json_number_value(v));
	else if (json_is_string(v))
		snprintf(buf, len, "%s", json_string_value(v));
	else if (json_is_boolean(v))
		snprintf(buf, len, "%s", json_is_true(v) ? "true" : "false");
	else
		snprintf(buf, len, "none");
}

/* "field before -> after, ..." for a change. */
static void change_text(json_t *before, json_t *after, char *buf, size_t len)
{
	const char *key;
	size_t n = 0;
	json_t *v;
	char a[300], b[300];

	buf[0] = 0;
#define ADD(...)                                                                           \
	do {                                                                               \
		if (n < len)                                                               \
			n += (size_t)snprintf(buf + n, len - n, __VA_ARGS__);              \
	} while (0)
	json_object_foreach(after, key, v) {
		json_t *old = json_object_get(before, key);

		value(v, a, sizeof(a));
		if (old) {
			value(old, b, sizeof(b));
			ADD("%s%s %s -> %s", n ? ", " : "", key, b, a);
		} else {
			ADD("%s%s %s", n ? ", " : "", key, a);
		}
	}
	json_object_foreach(before, key, v) {
		if (json_object_get(after, key))
			continue;
		value(v, b, sizeof(b));
		ADD("%s%s %s%s", n ? ", " : "", key, b, json_is_object(after) ? " -> none" : "");
	}
	if (!n)
		ADD("no field changed");
#undef ADD
}

static int width(json_t *rows, const char *key, int min)
{
	size_t i;
	json_t *r;
	int w = min;

	json_array_foreach(rows, i, r) {
		int n = (int)strlen(text_of(r, key, "-"));

		w = n > w ? n : w;
	}
	return w;
}

/* The buckets a packet of the agent passes (docs/BUDGETS.md), when it has
 * a parent or a quota: each level's tokens, quota and refusals. */
static void print_path(json_t *path)
{
	json_t *levels = json_object_get(path, "levels"), *lim = json_object_get(path, "limited_by");
	json_t *lv, *q, *rf;
	size_t i;

	if (!json_array_size(levels) || (json_array_size(levels) == 1 &&
	    json_is_null(json_object_get(json_array_get(levels, 0), "quota"))))
		return;
	printf("path (each packet passes every level):\n");
	json_array_foreach(levels, i, lv) {
		q = json_object_get(lv, "quota");
		rf = json_object_get(lv, "refused");
		printf("  %s %s: rate %.6g %s, %.1f tokens", text_of(lv, "kind", "?"),
		       text_of(lv, "name", "?"), num(lv, "rate"), text_of(lv, "unit", "pps"),
		       num(lv, "tokens"));
		if (json_is_object(q))
			printf(", quota %.0f/%s used %.0f", num(q, "limit"), text_of(q, "window", "?"),
			       num(q, "used"));
		printf("; refused here %.0f (rate) + %.0f (quota), above %.0f\n", num(rf, "rate"),
		       num(rf, "quota"), num(rf, "above"));
	}
	if (json_is_object(lim))
		printf("  limited now by %s (%s)\n", text_of(lim, "name", "?"),
		       text_of(lim, "reason", "?"));
}

static void print_text(json_t *x, const char *state_dir)
{
	json_t *pol = json_object_get(x, "policy"), *live = json_object_get(x, "live");
	json_t *rat = json_object_get(x, "ratings"), *chg = json_object_get(x, "changes");
	json_t *st = json_object_get(x, "stats"), *fleet = json_object_get(x, "fleet"), *r;
	const char *unit = text_of(pol, "unit", "pps"), *by;
	char t[64];
	size_t i;
	int wu, wi;

	printf("agent %s: %s.\n", text_of(x, "agent", "?"), text_of(x, "explanation", ""));
	by = text_of(x, "answered_by", "");
	if (!strcmp(by, "agentgated"))
		printf("answered by agentgated, which owns the pin root\n");
	else
		printf("read from the state store in %s (agentgated is not running)\n", state_dir);
	if (json_is_object(pol)) {
		json_t *own = json_object_get(pol, "own"), *pb = json_object_get(pol, "pinned_by");
		char bp[64];

		if (json_is_string(json_object_get(pol, "burst_policy")))
			snprintf(bp, sizeof(bp), "%s of rate",
				 text_of(pol, "burst_policy", "?"));
		else
			snprintf(bp, sizeof(bp), "fixed");
		printf("policy: rate %.6g %s, r0 %.6g, alpha %.6g, r_min %.6g, r_max %.6g, burst "
		       "%.0f tokens (%s), %s", num(x, "rate"), unit, num(pol, "r0"),
		       num(pol, "alpha"), num(pol, "r_min"), num(pol, "r_max"), num(pol, "burst"),
		       bp, json_is_true(json_object_get(pol, "pinned")) ? "pinned" : "not pinned");
		if (json_is_object(pb)) {
			when(json_object_get(pb, "time_ms"), t, sizeof(t));
			printf(" by %s at %s", text_of(pb, "subject", "(no subject: auth off)"), t);
		}
		printf("\n  the agent's own:");
		if (!json_array_size(own))
			printf(" none");
		json_array_foreach(own, i, r)
			printf("%s %s", i ? "," : "", json_string_value(r));
		printf("; the rest from the global defaults (%s)\n",
		       text_of(pol, "defaults_from", "?"));
	}
	if (json_is_object(st)) {
		when(json_object_get(st, "last_rating_ms"), t, sizeof(t));
		printf("ratings counted: %.0f, mean score %.3g, last at %s\n", num(st, "ratings"),
		       num(st, "mean_score"), t);
	}
	if (json_is_object(live))
		printf("enforced now: rate %.6g %s, burst %.0f, %.1f tokens%s; passed %.0f packets, "
		       "dropped %.0f (slot %.0f)\n", num(live, "rate"), text_of(live, "unit", unit),
		       num(live, "burst"), num(live, "tokens"),
		       json_is_true(json_object_get(live, "pinned")) ? ", pinned" : "",
		       num(live, "passed_packets"), num(live, "dropped_packets"), num(live, "slot"));
	else
		printf("enforced now: not in the maps (no bucket: its traffic is unclassified)\n");
	print_path(json_object_get(x, "path"));
	if (json_is_object(fleet))
		printf("fleet: this host's share %.3g of the rate, local rate %.6g %s\n",
		       num(fleet, "share"), num(fleet, "local_rate"), unit);

	printf("\nratings that moved the rate: %zu shown of %.0f recorded (oldest first)\n",
	       json_array_size(rat), num(x, "ratings_recorded"));
	if (json_array_size(rat)) {
		wu = width(rat, "user", 4);
		wi = width(rat, "id", 2);
		printf("  %-24s %5s  %-*s  %-*s  %s\n", "TIME", "SCORE", wu, "USER", wi, "ID",
		       "RATE BEFORE -> AFTER");
		json_array_foreach(rat, i, r) {
			when(json_object_get(r, "time_ms"), t, sizeof(t));
			printf("  %-24s %5.0f  %-*s  %-*s  %.6g -> %.6g\n", t, num(r, "score"), wu,
			       text_of(r, "user", "-"), wi, text_of(r, "id", "-"),
			       num(r, "rate_before"), num(r, "rate_after"));
		}
	}
	printf("\noperator changes: %zu shown of %.0f recorded (oldest first)\n",
	       json_array_size(chg), num(x, "changes_recorded"));
	if (json_array_size(chg)) {
		int ws = width(chg, "subject", 7), wa = width(chg, "action", 6);

		printf("  %-24s  %-*s  %-*s  %s\n", "TIME", ws, "SUBJECT", wa, "ACTION", "CHANGED");
		json_array_foreach(chg, i, r) {
			char what[1024];

			when(json_object_get(r, "time_ms"), t, sizeof(t));
			change_text(json_object_get(r, "before"), json_object_get(r, "after"), what,
				    sizeof(what));
			printf("  %-24s  %-*s  %-*s  %s\n", t, ws, text_of(r, "subject", "-"), wa,
			       text_of(r, "action", "?"), what);
		}
	}
}

/* ---- the two sources --------------------------------------------------------------- */

/* 1: the daemon answered (*out, or *code after the error printed); 0: no
 * daemon owns the pin root; -1: *code after the error printed. */
static int from_daemon(struct cli *cli, const char *name, json_t **out, int *code)
{
	json_t *req = json_pack("{s:s,s:s}", "op", "agent.explain", "agent", name);
	void *reply = NULL;
	json_t *rep, *res;
	int r;

	if (!req) {
		*code = cli_error(cli, EXIT_RUNTIME, "out of memory");
		return -1;
	}
	r = cli_daemon_ask(cli, req, &reply);
	json_decref(req);
	if (r < 0) { /* printed by cli_daemon_ask */
		*code = EXIT_RUNTIME;
		return -1;
	}
	if (r == 0)
		return 0;
	rep = reply;
	res = json_object_get(rep, "result");
	if (json_is_true(json_object_get(rep, "ok")) && json_is_object(res)) {
		*out = json_incref(res);
	} else {
		const char *msg = json_string_value(json_object_get(rep, "message"));

		*code = cli_error(cli, EXIT_RUNTIME, "%s", msg ? msg : "agentgated gave no answer");
	}
	json_decref(rep);
	return 1;
}

static int from_store(struct cli *cli, const char *name, json_t **out)
{
	struct agd_explain_opts o = { .ctx = cli->ctx, .answered_by = "state store",
				      .voices = -1 };
	struct agd_store st;
	MDB_txn *txn;
	struct agd_err err = { 0 };
	int rc;

	rc = agd_store_open_ro(cli->state_dir, &st, &txn, &err);
	if (rc)
		return cli_error(cli, EXIT_RUNTIME, "%s; agent explain reads agentgated's state "
				 "there when agentgated is not running (--state-dir DIR)", err.msg);
	rc = agd_explain_build(&st, txn, name, &o, out, &err);
	agd_store_txn_end(txn);
	agd_store_close(&st);
	return rc ? cli_error(cli, EXIT_RUNTIME, "%s", err.msg) : 0;
}

int cli_explain(struct cli *cli, const char *name)
{
	json_t *x = NULL;
	int code = 0, r;

	r = parse_name(cli, name);
	if (r)
		return r;
	r = from_daemon(cli, name, &x, &code);
	if (r < 0 || (r == 1 && !x))
		return code;
	if (r == 0) {
		struct ag_agent a;
		int err = ag_agent_get(cli->ctx, name, &a);

		/* An agent the maps do not know: say so before the store. */
		if (err == -ENOENT)
			return cli_lib_error(cli, err);
		code = from_store(cli, name, &x);
		if (code)
			return code;
	}
	if (cli->json) {
		emit(&cli->jw, x, 0);
		jsonw_end_document(&cli->jw);
	} else {
		print_text(x, cli->state_dir);
	}
	json_decref(x);
	return 0;
}
