// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Budgets: parent buckets (parent set, show, list, del) and charges of a
 * cost known afterwards (agent charge). Parent links are kept in the maps
 * themselves, not by agentgated's policy: these commands write the maps
 * whether or not agentgated runs (the library's lock orders them with its
 * writes).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Default for agent charge: the debt is repaid within a minute of refill. */
#define CHARGE_MAX_DEBT_DEFAULT_S 60.0

void fill_parent_name(struct cli *cli, struct agent_row *row)
{
	struct ag_agent p;

	row->parent[0] = '\0';
	if (row->a.parent && !ag_agent_get_slot(cli->ctx, row->a.parent - 1, &p))
		memcpy(row->parent, p.name, sizeof(row->parent));
	memset(&row->quota, 0, sizeof(row->quota));
	if (row->a.quota)
		ag_quota_status(cli->ctx, row->a.slot, &row->quota);
}

int parse_quota_arg(struct cli *cli, const char *text, struct ag_agent_update *u)
{
	char num[64], *end;
	const char *slash = strchr(text, '/');
	enum ag_quota_window w;
	double x;
	__u64 n;

	u->fields |= AG_SET_QUOTA;
	if (!strcmp(text, "none")) {
		u->quota = 0;
		u->quota_window = AG_QW_NONE;
		return 0;
	}
	if (!slash || (size_t)(slash - text) >= sizeof(num))
		return cli_error(cli, EXIT_USAGE, "invalid quota '%s' (N/hour, N/day, N/30d or none, "
				 "e.g. 1e7/day)", text);
	memcpy(num, text, (size_t)(slash - text));
	num[slash - text] = '\0';
	/* 1e7 as well as 10M: quotas are large round numbers. */
	x = strtod(num, &end);
	if (end != num && !*end && x >= 0 && x == floor(x) && x <= 1.8e19)
		n = (__u64)x;
	else if (parse_count(cli, "quota", num, &n))
		return EXIT_USAGE;
	if (!n)
		return cli_error(cli, EXIT_USAGE,
				 "a quota of 0 tokens: use 'quota none' to remove one");
	if (ag_quota_window_parse(slash + 1, &w) || ag_quota_check(n, w))
		return cli_error(cli, EXIT_USAGE, "%s", ag_errmsg());
	u->quota = n;
	u->quota_window = w;
	return 0;
}

/* "quota": {"limit", "window", "used", "remaining", "resets_in_s"} or null. */
void json_quota(struct jsonw *w, const struct agent_row *r)
{
	const struct ag_quota_status *q = &r->quota;

	jsonw_name(w, "quota");
	if (!q->limit) {
		jsonw_null(w);
		return;
	}
	jsonw_start_object(w);
	jsonw_uint_field(w, "limit", q->limit);
	jsonw_string_field(w, "window", ag_quota_window_name(q->window));
	jsonw_uint_field(w, "used", q->used);
	jsonw_double_field(w, "remaining", (double)q->limit - (double)q->used);
	jsonw_uint_field(w, "resets_in_s", (q->reset_in_ns + 999999999ULL) / 1000000000ULL);
	jsonw_end_object(w);
}

void print_quota_text(const struct agent_row *r)
{
	const struct ag_quota_status *q = &r->quota;

	if (q->limit)
		printf("  quota %llu/%s: %llu used, resets in %llus\n", (unsigned long long)q->limit,
		       ag_quota_window_name(q->window), (unsigned long long)q->used,
		       (unsigned long long)((q->reset_in_ns + 999999999ULL) / 1000000000ULL));
}

int parse_parent_arg(struct cli *cli, const char *text, struct ag_agent_update *u)
{
	u->fields |= AG_SET_PARENT;
	if (!strcmp(text, "none") || !*text) {
		u->parent = NULL;
		return 0;
	}
	u->parent = text;
	return parse_name(cli, text);
}

/* ---- parent set ---------------------------------------------------------- */

static int parse_parent_set(struct cli *cli, int argc, char **argv, struct ag_agent_update *u)
{
	int i, err = 0;

	memset(u, 0, sizeof(*u));
	for (i = 0; i < argc && !err; i++) {
		const char *k = argv[i];
		__u32 field = !strcmp(k, "rate")   ? AG_SET_RATE :
			      !strcmp(k, "burst")  ? AG_SET_BURST :
			      !strcmp(k, "unit")   ? AG_SET_UNIT :
			      !strcmp(k, "parent") ? AG_SET_PARENT :
			      !strcmp(k, "quota")  ? AG_SET_QUOTA :
						     0;

		if (!field)
			return cli_usage(cli, "unexpected argument '%s'", k);
		if (u->fields & field)
			return cli_usage(cli, "'%s' given twice", k);
		if (i + 1 >= argc)
			return cli_usage(cli, "'%s' needs a value", k);
		u->fields |= field;
		if (field == AG_SET_RATE)
			err = parse_rate(cli, argv[++i], &u->rate);
		else if (field == AG_SET_BURST)
			err = parse_count(cli, "burst", argv[++i], &u->burst) ?:
			      (ag_burst_check(u->burst) ? cli_lib_error(cli, -EINVAL) : 0);
		else if (field == AG_SET_UNIT)
			err = parse_unit(cli, argv[++i], &u->unit);
		else if (field == AG_SET_QUOTA)
			err = parse_quota_arg(cli, argv[++i], u);
		else
			err = parse_parent_arg(cli, argv[++i], u);
	}
	return err;
}

/* ---- parent show / list ------------------------------------------------------ */

struct parent_view {
	struct agent_row row;
	struct ag_refusals r;
	char (*children)[AG_NAME_MAX + 1];
	size_t n_children;
};

struct child_walk {
	__u32 slot;
	struct parent_view *v;
	int err;
};

static int note_child(void *arg, const struct ag_agent *a)
{
	struct child_walk *w = arg;
	char(*grown)[AG_NAME_MAX + 1];

	if (a->parent != w->slot + 1)
		return 0;
	grown = realloc(w->v->children, (w->v->n_children + 1) * sizeof(*grown));
	if (!grown)
		return -ENOMEM;
	w->v->children = grown;
	memcpy(grown[w->v->n_children++], a->name, AG_NAME_MAX + 1);
	return 0;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(a, b);
}

static int load_parent(struct cli *cli, const char *name, struct parent_view *v)
{
	struct child_walk w = { 0, v, 0 };
	int err = parse_name(cli, name);

	if (err)
		return err;
	memset(v, 0, sizeof(*v));
	err = ag_agent_get(cli->ctx, name, &v->row.a);
	if (!err && !v->row.a.is_parent)
		return cli_error(cli, EXIT_RUNTIME, "'%s' is an agent, not a parent (agentgate "
				 "agent show %s)", name, name);
	if (!err)
		err = ag_counters_get(cli->ctx, v->row.a.slot, &v->row.c);
	if (!err)
		err = ag_refusals_get(cli->ctx, v->row.a.slot, &v->r);
	if (!err)
		err = ag_bucket_tokens(cli->ctx, v->row.a.slot, &v->row.tokens);
	w.slot = v->row.a.slot;
	if (!err)
		err = ag_agent_foreach(cli->ctx, note_child, &w);
	if (!err)
		err = ag_parent_foreach(cli->ctx, note_child, &w);
	if (err)
		return cli_lib_error(cli, err);
	fill_parent_name(cli, &v->row);
	if (v->n_children)
		qsort(v->children, v->n_children, sizeof(*v->children), cmp_name);
	return 0;
}

static void parent_json(struct cli *cli, const struct parent_view *v, int created)
{
	struct jsonw *w = &cli->jw;
	const struct agent_row *r = &v->row;
	__u64 refused = r->c.dropped_packets + r->c.would_drop_packets;
	size_t i;

	jsonw_start_object(w);
	json_limit_fields(w, r);
	jsonw_name(w, "children");
	jsonw_start_array(w);
	for (i = 0; i < v->n_children; i++)
		jsonw_string(w, v->children[i]);
	jsonw_end_array(w);
	json_parent_counters(w, r);
	/* Packets refused here by reason: its own rate, or a parent above. */
	jsonw_name(w, "refused");
	jsonw_start_object(w);
	jsonw_uint_field(w, "rate", refused - v->r.parent_packets - v->r.quota_packets);
	jsonw_uint_field(w, "quota", v->r.quota_packets);
	jsonw_uint_field(w, "parent", v->r.parent_packets);
	jsonw_end_object(w);
	json_quota(w, r);
	jsonw_uint_field(w, "created_ms", r->a.created_ns / 1000000);
	if (created >= 0)
		jsonw_bool_field(w, "created", created);
	jsonw_end_object(w);
}

static void parent_text(const struct parent_view *v)
{
	const struct agent_row *r = &v->row;
	size_t i;

	printf("parent %s (slot %u)\n", r->a.name, r->a.slot);
	printf("  rate %.6g %s, burst %llu, tokens %.1f\n", r->a.rate, unit_name(r->a.unit),
	       (unsigned long long)r->a.burst, r->tokens);
	if (r->parent[0])
		printf("  parent %s\n", r->parent);
	printf("  passed %llu packets, dropped %llu packets (%llu by a parent above)\n",
	       (unsigned long long)r->c.passed_packets, (unsigned long long)r->c.dropped_packets,
	       (unsigned long long)v->r.parent_packets);
	print_quota_text(r);
	printf("  children");
	for (i = 0; i < v->n_children; i++)
		printf(" %s", v->children[i]);
	printf("%s\n", v->n_children ? "" : " none");
}

static int show_parent(struct cli *cli, const char *name, int created)
{
	struct parent_view v;
	int err = load_parent(cli, name, &v);

	if (err) {
		free(v.children);
		return err;
	}
	if (cli->json) {
		parent_json(cli, &v, created);
		jsonw_end_document(&cli->jw);
	} else {
		parent_text(&v);
	}
	free(v.children);
	return 0;
}

int do_parent_set(struct cli *cli, int argc, char **argv)
{
	struct ag_agent_update u;
	bool created = false;
	int err, code;

	if (argc < 1)
		return cli_usage(cli, "expected a parent name");
	err = parse_name(cli, argv[0]);
	if (!err)
		err = parse_parent_set(cli, argc - 1, argv + 1, &u);
	if (err)
		return err;
	if (route_parent(cli, true, argv[0], &u, &created, &code)) {
		if (code)
			return code;
	} else {
		err = ag_parent_set(cli->ctx, argv[0], &u, NULL, &created);
		if (err)
			return cli_lib_error(cli, err);
	}
	if (!cli->json)
		printf("%s parent %s\n", created ? "created" : "updated", argv[0]);
	return show_parent(cli, argv[0], created);
}

int do_parent_show(struct cli *cli, int argc, char **argv)
{
	if (argc != 1)
		return cli_usage(cli, "expected one parent name");
	return show_parent(cli, argv[0], -1);
}

static int collect(void *arg, const struct ag_agent *a)
{
	struct { char (*names)[AG_NAME_MAX + 1]; size_t n; } *c = arg;
	char(*grown)[AG_NAME_MAX + 1] = realloc(c->names, (c->n + 1) * sizeof(*grown));

	if (!grown)
		return -ENOMEM;
	c->names = grown;
	memcpy(grown[c->n++], a->name, AG_NAME_MAX + 1);
	return 0;
}

int do_parent_list(struct cli *cli, int argc, char **argv)
{
	struct { char (*names)[AG_NAME_MAX + 1]; size_t n; } c = { NULL, 0 };
	size_t i;
	int err;

	(void)argv;
	if (argc != 0)
		return cli_usage(cli, "parent list takes no arguments");
	err = ag_parent_foreach(cli->ctx, collect, &c);
	if (err) {
		free(c.names);
		return cli_lib_error(cli, err);
	}
	if (c.n)
		qsort(c.names, c.n, sizeof(*c.names), cmp_name);
	if (cli->json)
		jsonw_start_array(&cli->jw);
	for (i = 0; i < c.n && !err; i++) {
		struct parent_view v;

		err = load_parent(cli, c.names[i], &v);
		if (!err && cli->json)
			parent_json(cli, &v, -1);
		else if (!err)
			parent_text(&v);
		free(v.children);
	}
	if (cli->json && !err) {
		jsonw_end_array(&cli->jw);
		jsonw_end_document(&cli->jw);
	}
	free(c.names);
	return err;
}

int do_parent_del(struct cli *cli, int argc, char **argv)
{
	int err, code;

	if (argc != 1)
		return cli_usage(cli, "expected one parent name");
	err = parse_name(cli, argv[0]);
	if (err)
		return err;
	if (route_parent(cli, false, argv[0], NULL, NULL, &code)) {
		if (code)
			return code;
	} else {
		err = ag_parent_delete(cli->ctx, argv[0]);
		if (err)
			return cli_lib_error(cli, err);
	}
	print_deleted(cli, "parent", argv[0]);
	return 0;
}

/* ---- agent charge -------------------------------------------------------------- */

/* "60", "60s", "500ms", "5m": a duration in seconds, >= 0. */
static int parse_duration(struct cli *cli, const char *text, double *s)
{
	char *end;
	double v = strtod(text, &end);
	double scale = !*end || !strcmp(end, "s") ? 1 : !strcmp(end, "ms") ? 1e-3 :
						!strcmp(end, "m") ? 60 : !strcmp(end, "h") ? 3600 : -1;

	if (end == text || !(v >= 0) || scale < 0 || v * scale > 86400.0 * 366)
		return cli_error(cli, EXIT_USAGE,
				 "invalid duration '%s' (e.g. 60s, 500ms, 5m; at most a year)",
				 text);
	*s = v * scale;
	return 0;
}

int do_agent_charge(struct cli *cli, int argc, char **argv)
{
	struct ag_consume_result res;
	double max_debt = CHARGE_MAX_DEBT_DEFAULT_S;
	__u64 n;
	int err;

	if (argc != 2 && argc != 4)
		return cli_usage(cli, "expected NAME TOKENS [max-debt DURATION]");
	err = parse_name(cli, argv[0]);
	if (!err)
		err = parse_count(cli, "token count", argv[1], &n);
	if (!err && argc == 4 && strcmp(argv[2], "max-debt"))
		err = cli_usage(cli, "unexpected argument '%s'", argv[2]);
	if (!err && argc == 4)
		err = parse_duration(cli, argv[3], &max_debt);
	if (err)
		return err;
	err = ag_charge(cli->ctx, argv[0], n, (__u64)(max_debt * 1e9), &res);
	if (err)
		return cli_lib_error(cli, err);
	if (cli->json) {
		jsonw_start_object(&cli->jw);
		jsonw_string_field(&cli->jw, "name", argv[0]);
		jsonw_uint_field(&cli->jw, "charged", n);
		jsonw_double_field(&cli->jw, "remaining", floor(res.remaining * 1000) / 1000);
		jsonw_uint_field(&cli->jw, "retry_after_ms", (res.retry_after_ns + 999999) / 1000000);
		jsonw_end_object(&cli->jw);
		jsonw_end_document(&cli->jw);
	} else {
		printf("charged agent %s %llu tokens: %.1f left%s\n", argv[0], (unsigned long long)n,
		       res.remaining, res.remaining < 0 ? " (in debt)" : "");
	}
	return 0;
}
