// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* agentgate agent list|show|set|reset|drain|del|explain */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "cli.h"
#include "../agentgated/core/policy.h"

int parse_sort(struct cli *cli, const char *text, int *key)
{
	if (is_prefix(text, "drops"))
		*key = SORT_DROPS;
	else if (is_prefix(text, "rate"))
		*key = SORT_RATE;
	else if (is_prefix(text, "name"))
		*key = SORT_NAME;
	else if (is_prefix(text, "idle"))
		*key = SORT_IDLE;
	else
		return cli_error(cli, EXIT_USAGE,
				 "invalid sort key '%s' (drops, rate, idle or name)", text);
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct agent_row *)a)->a.name, ((const struct agent_row *)b)->a.name);
}

static int by_drops(const void *a, const void *b)
{
	const struct agent_row *x = a, *y = b;

	if (x->c.dropped_packets != y->c.dropped_packets)
		return x->c.dropped_packets > y->c.dropped_packets ? -1 : 1;
	return by_name(a, b);
}

static int by_rate(const void *a, const void *b)
{
	const struct agent_row *x = a, *y = b;

	if (x->a.rate != y->a.rate)
		return x->a.rate > y->a.rate ? -1 : 1;
	return by_name(a, b);
}

/* Longest idle first; agents the daemon does not know last. */
static int by_idle(const void *a, const void *b)
{
	const struct agent_row *x = a, *y = b;

	if (x->idle_s != y->idle_s)
		return x->idle_s > y->idle_s ? -1 : 1;
	return by_name(a, b);
}

void sort_rows(struct agent_row *rows, size_t n, int key)
{
	qsort(rows, n, sizeof(*rows), key == SORT_DROPS ? by_drops :
				      key == SORT_RATE	? by_rate :
				      key == SORT_IDLE	? by_idle :
							  by_name);
}

/* Idle times and TTLs from agentgated, best effort (the maps are the
 * listing's; a reader without access to the daemon still lists): 1 when
 * it answered, 0 when not. */
static int add_activity(struct cli *cli, struct agent_row *rows, size_t n)
{
	json_t *req = json_pack("{s:s}", "op", "agent.activity"), *reply = NULL, *idle, *ttl;
	size_t k;
	int r = req ? cli_daemon_peek(cli, req, (void **)&reply) : 0;

	json_decref(req);
	if (!r)
		return 0;
	idle = json_object_get(json_object_get(reply, "result"), "idle_s");
	ttl = json_object_get(json_object_get(reply, "result"), "ttl");
	if (!json_is_array(idle) || !json_is_array(ttl)) {
		json_decref(reply);
		return 0;
	}
	for (k = 0; k < n; k++) {
		json_int_t i = json_integer_value(json_array_get(idle, rows[k].a.slot));

		rows[k].idle_s = json_is_integer(json_array_get(idle, rows[k].a.slot)) ? i : -1;
		rows[k].ttl = json_integer_value(json_array_get(ttl, rows[k].a.slot));
	}
	json_decref(reply);
	return 1;
}

static const struct table_col list_cols[] = {
	{ "NAME", TABLE_LEFT },
	{ "SLOT", TABLE_RIGHT },
	{ "RATE", TABLE_RIGHT },
	{ "BURST", TABLE_RIGHT },
	{ "UNIT", TABLE_RIGHT },
	{ "TOKENS", TABLE_RIGHT },
	{ "PIN", TABLE_RIGHT },
	{ "PASSED", TABLE_RIGHT },
	{ "DROPPED", TABLE_RIGHT },
	{ "IDLE", TABLE_RIGHT }, /* these two with agentgated running */
	{ "TTL", TABLE_RIGHT },
};

/* The rows shown, in columns as wide as their content; with agentgated
 * running, also how long each has been idle and its TTL. */
static int text_list(struct cli *cli, const struct agent_row *rows, size_t n, bool activity)
{
	size_t cols = sizeof(list_cols) / sizeof(list_cols[0]);
	struct table *t = table_new(list_cols, activity ? cols : cols - 2);
	size_t k;
	int err;

	if (!t)
		return cli_error(cli, EXIT_RUNTIME, "out of memory");
	for (k = 0; k < n; k++) {
		const struct agent_row *r = &rows[k];

		table_text(t, r->a.name);
		table_uint(t, r->a.slot);
		table_cell(t, "%.6g", r->a.rate);
		table_uint(t, r->a.burst);
		table_text(t, unit_name(r->a.unit));
		table_cell(t, "%.1f", r->tokens);
		table_text(t, r->a.pinned ? "yes" : "no");
		table_uint(t, r->c.passed_packets);
		table_uint(t, r->c.dropped_packets);
		if (!activity)
			continue;
		if (r->idle_s >= 0)
			table_cell(t, "%llds", r->idle_s);
		else
			table_text(t, "-");
		if (r->idle_s >= 0 && r->ttl)
			table_cell(t, "%llds", r->ttl);
		else
			table_text(t, "-");
	}
	err = table_print(t, stdout);
	table_free(t);
	return err ? cli_error(cli, EXIT_RUNTIME, "out of memory") : 0;
}

int do_agent_list(struct cli *cli, int argc, char **argv)
{
	struct agent_row *rows;
	int key = SORT_NAME, i, err, daemon;
	__u64 limit = UINT64_MAX;
	size_t n, k;

	for (i = 0; i < argc; i++) {
		if (i + 1 >= argc)
			return cli_usage(cli, "'%s' needs a value", argv[i]);
		if (!strcmp(argv[i], "--sort"))
			err = parse_sort(cli, argv[++i], &key);
		else if (!strcmp(argv[i], "--limit"))
			err = parse_count(cli, "limit", argv[++i], &limit);
		else
			return cli_usage(cli, "unexpected argument '%s'", argv[i]);
		if (err)
			return err;
	}
	err = load_rows(cli, &rows, &n);
	if (err)
		return err;
	daemon = add_activity(cli, rows, n);
	if (key == SORT_IDLE && !daemon) {
		free(rows);
		return cli_error(cli, EXIT_RUNTIME, "--sort idle: idle times are agentgated's, "
				 "and it does not answer on %s (not running, or this account "
				 "may not use its control socket)",
				 cli->pin_path ? cli->pin_path : AG_PIN_ROOT_DEFAULT);
	}
	sort_rows(rows, n, key);
	if (limit < n)
		n = limit;
	if (cli->json) {
		jsonw_start_array(&cli->jw);
		for (k = 0; k < n; k++)
			json_agent(&cli->jw, &rows[k]);
		jsonw_end_array(&cli->jw);
		jsonw_end_document(&cli->jw);
	} else {
		err = text_list(cli, rows, n, daemon == 1);
	}
	free(rows);
	return err;
}

/* One agent's row, by name. */
static int load_one(struct cli *cli, const char *name, struct agent_row *row)
{
	int err = parse_name(cli, name);

	if (err)
		return err;
	memset(row, 0, sizeof(*row));
	row->idle_s = -1;
	err = ag_agent_get(cli->ctx, name, &row->a);
	if (!err && row->a.is_parent)
		return cli_error(cli, EXIT_RUNTIME, "'%s' is a parent, not an agent (agentgate "
				 "parent show %s)", name, name);
	if (!err)
		err = ag_counters_get(cli->ctx, row->a.slot, &row->c);
	if (!err)
		fill_parent_name(cli, row);
	if (!err)
		err = ag_bucket_tokens(cli->ctx, row->a.slot, &row->tokens);
	return err ? cli_lib_error(cli, err) : 0;
}

static int rules_of(struct cli *cli, __u32 slot, struct ag_rule **out, size_t *n)
{
	struct ag_rule *all;
	size_t total, i, k = 0;
	int err = ag_rule_list(cli->ctx, &all, &total);

	if (err)
		return cli_lib_error(cli, err);
	for (i = 0; i < total; i++)
		if (all[i].slot == slot)
			all[k++] = all[i];
	*out = all;
	*n = k;
	return 0;
}

static void print_rule_text(const struct ag_rule *r)
{
	char prefix[AG_PREFIX_STRLEN];

	ag_prefix_format(r, prefix, sizeof(prefix));
	if (r->port)
		printf("  rule %s port %u\n", prefix, r->port);
	else
		printf("  rule %s\n", prefix);
}

static void print_created(__u64 created_ns)
{
	time_t t = (time_t)(created_ns / 1000000000ULL);
	char buf[64];

	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
	printf("  created %s\n", buf);
}

static void show_text(const struct agent_row *r, const struct ag_rule *rules, size_t n)
{
	size_t i;

	printf("agent %s (slot %u)\n", r->a.name, r->a.slot);
	printf("  rate %.6g %s, burst %llu, tokens %.1f%s\n", r->a.rate, unit_name(r->a.unit),
	       (unsigned long long)r->a.burst, r->tokens, r->a.pinned ? ", pinned" : "");
	if (r->parent[0])
		printf("  parent %s\n", r->parent);
	print_quota_text(r);
	printf("  passed %llu packets %llu bytes, dropped %llu packets %llu bytes",
	       (unsigned long long)r->c.passed_packets, (unsigned long long)r->c.passed_bytes,
	       (unsigned long long)r->c.dropped_packets, (unsigned long long)r->c.dropped_bytes);
	if (r->c.would_drop_packets)
		printf(", would drop %llu packets", (unsigned long long)r->c.would_drop_packets);
	putchar('\n');
	print_created(r->a.created_ns);
	if (r->idle_s >= 0 && r->ttl)
		printf("  idle %llds, expires after %llds idle\n", r->idle_s, r->ttl);
	else if (r->idle_s >= 0)
		printf("  idle %llds, no idle TTL\n", r->idle_s);
	for (i = 0; i < n; i++)
		print_rule_text(&rules[i]);
}

/* The agent object plus its rules, as agent show prints it; set adds
 * "created" (created < 0: not printed). */
static void show_json(struct cli *cli, const struct agent_row *r, const struct ag_rule *rules,
		      size_t n, int created)
{
	struct jsonw *w = &cli->jw;
	size_t i;

	jsonw_start_object(w);
	json_agent_fields(w, r);
	jsonw_name(w, "rules");
	jsonw_start_array(w);
	for (i = 0; i < n; i++)
		json_rule(w, &rules[i], NULL);
	jsonw_end_array(w);
	if (created >= 0)
		jsonw_bool_field(w, "created", created);
	jsonw_end_object(w);
}

static int show(struct cli *cli, const char *name, int created)
{
	struct agent_row row;
	struct ag_rule *rules = NULL;
	size_t n = 0;
	int err;

	err = load_one(cli, name, &row);
	if (!err)
		add_activity(cli, &row, 1);
	if (!err)
		err = rules_of(cli, row.a.slot, &rules, &n);
	if (err)
		return err;
	if (cli->json) {
		show_json(cli, &row, rules, n, created);
		jsonw_end_document(&cli->jw);
	} else {
		show_text(&row, rules, n);
	}
	free(rules);
	return 0;
}

int do_agent_show(struct cli *cli, int argc, char **argv)
{
	if (argc != 1)
		return cli_usage(cli, "expected one agent name");
	return show(cli, argv[0], -1);
}

/* A bps bucket passes no frame larger than its burst. */
static void warn_small_bps_burst(struct cli *cli, const char *name)
{
	struct ag_agent a;

	if (!ag_agent_get(cli->ctx, name, &a) && a.unit == AG_UNIT_BPS &&
	    a.burst < AG_BPS_MIN_BURST)
		fprintf(stderr,
			"agentgate: warning: agent %s has a burst of %llu bytes: frames larger "
			"than that are always dropped (%u holds a full-size Ethernet frame)\n",
			name, (unsigned long long)a.burst, AG_BPS_MIN_BURST);
}

/* The influence limits agent set takes (kept by agentgated): keyword, the
 * field of the control op, and its kind. "default" returns one to the
 * daemon's option. */
static const struct {
	const char *word, *field;
	enum { INF_NUMBER, INF_COUNT, INF_DURATION, INF_YESNO } kind;
} influence_words[] = {
	{ "max-change", "max_change", INF_NUMBER },
	{ "change-window", "change_window", INF_DURATION },
	{ "wave-users", "wave_users", INF_COUNT },
	{ "wave-hold", "wave_hold", INF_YESNO },
	{ "user-cap", "user_cap", INF_NUMBER },
};

/* One influence keyword's value into inf (checked for its kind here, for
 * its range by agentgated). */
static int parse_influence_arg(struct cli *cli, size_t w, const char *text, json_t *inf)
{
	const char *field = influence_words[w].field;
	struct agd_err why = { 0 };
	char *end = NULL;
	double x;

	if (json_object_get(inf, field))
		return cli_usage(cli, "'%s' given twice", influence_words[w].word);
	if (!strcmp(text, "default"))
		return json_object_set_new(inf, field, json_null()), 0;
	switch (influence_words[w].kind) {
	case INF_YESNO:
		if (strcmp(text, "yes") && strcmp(text, "no"))
			return cli_usage(cli, "'%s' takes yes, no or default",
					 influence_words[w].word);
		return json_object_set_new(inf, field, json_boolean(!strcmp(text, "yes"))), 0;
	case INF_DURATION:
		if (agd_ttl_parse(text, &x, &why) || x < 1)
			return cli_usage(cli, "'%s': a duration such as 1h (1s to 30d), or default",
					 influence_words[w].word);
		return json_object_set_new(inf, field, json_integer((json_int_t)x)), 0;
	default:
		errno = 0;
		x = strtod(text, &end);
		if (errno || end == text || *end || !isfinite(x) || x < 0 ||
		    (influence_words[w].kind == INF_COUNT && x != floor(x)))
			return cli_usage(cli, "'%s': expected %s or default, not '%s'",
					 influence_words[w].word,
					 influence_words[w].kind == INF_COUNT ? "a whole number" :
										 "a number",
					 text);
		return json_object_set_new(inf, field, json_real(x)), 0;
	}
}

/* Parse the keyword arguments of agent set into an update; *ttl: the idle
 * TTL in seconds, -1 when not given; inf: the influence limits given. */
static int parse_set_args(struct cli *cli, int argc, char **argv, struct ag_agent_update *u,
			  double *ttl, json_t *inf)
{
	int i, err = 0;

	memset(u, 0, sizeof(*u));
	*ttl = -1;
	for (i = 0; i < argc && !err; i++) {
		const char *k = argv[i];
		size_t w;

		for (w = 0; w < sizeof(influence_words) / sizeof(influence_words[0]); w++)
			if (!strcmp(k, influence_words[w].word))
				break;
		if (w < sizeof(influence_words) / sizeof(influence_words[0])) {
			if (i + 1 >= argc)
				return cli_usage(cli, "'%s' needs a value", k);
			err = parse_influence_arg(cli, w, argv[++i], inf);
			continue;
		}
		if (!strcmp(k, "ttl")) {
			struct agd_err why = { 0 };

			if (*ttl >= 0)
				return cli_usage(cli, "'ttl' given twice");
			if (i + 1 >= argc)
				return cli_usage(cli, "'ttl' needs a value");
			if (agd_ttl_parse(argv[++i], ttl, &why))
				return cli_usage(cli, "%s", why.msg);
			continue;
		}
		__u32 field = !strcmp(k, "rate")   ? AG_SET_RATE :
			      !strcmp(k, "burst")  ? AG_SET_BURST :
			      !strcmp(k, "unit")   ? AG_SET_UNIT :
			      !strcmp(k, "parent") ? AG_SET_PARENT :
			      !strcmp(k, "quota")  ? AG_SET_QUOTA :
			      !strcmp(k, "pin") || !strcmp(k, "unpin") ? AG_SET_PINNED :
							      0;

		if (!field)
			return cli_usage(cli, "unexpected argument '%s'", k);
		if (u->fields & field)
			return cli_usage(cli, "'%s' given twice", k);
		u->fields |= field;
		if (field == AG_SET_PINNED) {
			u->pinned = !strcmp(k, "pin");
			continue;
		}
		if (i + 1 >= argc)
			return cli_usage(cli, "'%s' needs a value", k);
		if (field == AG_SET_PARENT)
			err = parse_parent_arg(cli, argv[++i], u);
		else if (field == AG_SET_QUOTA)
			err = parse_quota_arg(cli, argv[++i], u);
		else if (field == AG_SET_RATE)
			err = parse_rate(cli, argv[++i], &u->rate);
		else if (field == AG_SET_BURST)
			err = parse_count(cli, "burst", argv[++i], &u->burst) ?:
			      (ag_burst_check(u->burst) ? cli_lib_error(cli, -EINVAL) : 0);
		else
			err = parse_unit(cli, argv[++i], &u->unit);
	}
	return err;
}

int do_agent_set(struct cli *cli, int argc, char **argv)
{
	struct ag_agent_update u;
	bool created = false;
	json_t *inf = json_object();
	double ttl;
	int err, code;

	if (argc < 1)
		err = cli_usage(cli, "expected an agent name");
	else if (!inf)
		err = cli_error(cli, EXIT_RUNTIME, "out of memory");
	else
		err = parse_name(cli, argv[0]);
	if (!err)
		err = parse_set_args(cli, argc - 1, argv + 1, &u, &ttl, inf);
	if (err) {
		json_decref(inf);
		return err;
	}
	if (route_agent_set(cli, argv[0], &u, ttl, json_object_size(inf) ? inf : NULL, &created,
			    &code)) {
		json_decref(inf);
		if (code)
			return code;
	} else if (ttl >= 0 || json_object_size(inf)) {
		json_decref(inf);
		return cli_error(cli, EXIT_RUNTIME, "%s: kept by agentgated, which is not running "
				 "on %s (nothing changed)", ttl >= 0 ? "ttl: idle TTLs are" :
				 "influence limits are",
				 cli->pin_path ? cli->pin_path : AG_PIN_ROOT_DEFAULT);
	} else {
		json_decref(inf);
		err = ag_agent_set(cli->ctx, argv[0], &u, NULL, &created);
		if (err)
			return cli_lib_error(cli, err);
	}
	warn_small_bps_burst(cli, argv[0]);
	if (!cli->json)
		printf("%s agent %s\n", created ? "created" : "updated", argv[0]);
	return show(cli, argv[0], created);
}

static int agent_slot(struct cli *cli, const char *name, __u32 *slot)
{
	struct ag_agent a;
	int err = parse_name(cli, name);

	if (err)
		return err;
	err = ag_agent_get(cli->ctx, name, &a);
	if (err)
		return cli_lib_error(cli, err);
	*slot = a.slot;
	return 0;
}

/* {"name", "tokens"} or one line. */
static void print_level(struct cli *cli, const char *name, const char *what, double tokens)
{
	if (cli->json) {
		jsonw_start_object(&cli->jw);
		jsonw_string_field(&cli->jw, "name", name);
		jsonw_double_field(&cli->jw, "tokens", floor(tokens * 1000) / 1000);
		jsonw_end_object(&cli->jw);
		jsonw_end_document(&cli->jw);
	} else {
		printf("%s agent %s: %.1f tokens\n", what, name, tokens);
	}
}

int do_agent_reset(struct cli *cli, int argc, char **argv)
{
	double tokens = 0;
	__u32 slot = 0;
	int err, code;

	if (argc != 1)
		return cli_usage(cli, "expected one agent name");
	err = parse_name(cli, argv[0]);
	if (err)
		return err;
	if (route_agent_op(cli, "agent.reset", argv[0], 0, &tokens, &code)) {
		if (code)
			return code;
		print_level(cli, argv[0], "reset", tokens);
		return 0;
	}
	err = agent_slot(cli, argv[0], &slot);
	if (err)
		return err;
	err = ag_bucket_reset(cli->ctx, slot);
	if (!err)
		err = ag_bucket_tokens(cli->ctx, slot, &tokens);
	if (err)
		return cli_lib_error(cli, err);
	print_level(cli, argv[0], "reset", tokens);
	return 0;
}

int do_agent_drain(struct cli *cli, int argc, char **argv)
{
	double left = 0;
	__u64 n;
	__u32 slot = 0;
	int err, code;

	if (argc != 2)
		return cli_usage(cli, "expected an agent name and a token count");
	/* All input checked before the agent is looked up: bad input is exit 2. */
	err = parse_name(cli, argv[0]);
	if (!err)
		err = parse_count(cli, "token count", argv[1], &n);
	if (err)
		return err;
	if (route_agent_op(cli, "agent.drain", argv[0], n, &left, &code)) {
		if (code)
			return code;
		print_level(cli, argv[0], "drained", left);
		return 0;
	}
	err = agent_slot(cli, argv[0], &slot);
	if (err)
		return err;
	err = ag_bucket_drain(cli->ctx, slot, n, &left);
	if (err)
		return cli_lib_error(cli, err);
	print_level(cli, argv[0], "drained", left);
	return 0;
}

int do_agent_del(struct cli *cli, int argc, char **argv)
{
	int err, code;

	if (argc != 1)
		return cli_usage(cli, "expected one agent name");
	err = parse_name(cli, argv[0]);
	if (err)
		return err;
	if (route_agent_op(cli, "agent.delete", argv[0], 0, NULL, &code)) {
		if (code)
			return code;
	} else {
		err = ag_agent_delete(cli->ctx, argv[0]);
		if (err)
			return cli_lib_error(cli, err);
	}
	print_deleted(cli, "agent", argv[0]);
	return 0;
}

/* Where the rate came from: agentgated's answer when it owns the pin root,
 * else the same object built from its state directory, read-only, with the
 * live values from the maps (explain_cli.c). */
int do_agent_explain(struct cli *cli, int argc, char **argv)
{
	if (argc != 1)
		return cli_usage(cli, "expected one agent name");
	return cli_explain(cli, argv[0]);
}
