// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* agentgate rule add|del|list */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "../agentgated/core/feed.h"

#define AGD_FEED_FILE_MAX (32u << 20) /* what the control socket takes */

void json_rule(struct jsonw *w, const struct ag_rule *r, const char *agent)
{
	char prefix[AG_PREFIX_STRLEN];

	ag_prefix_format(r, prefix, sizeof(prefix));
	jsonw_start_object(w);
	jsonw_string_field(w, "prefix", prefix);
	jsonw_name(w, "port");
	if (r->port)
		jsonw_uint(w, r->port);
	else
		jsonw_null(w);
	if (agent)
		jsonw_string_field(w, "agent", agent);
	jsonw_end_object(w);
}

/* PREFIX [port P], then what remains. */
static int parse_rule(struct cli *cli, int *argc, char ***argv,
		      struct ag_rule *r)
{
	if (*argc < 1)
		return cli_usage(cli, "expected a prefix");
	if (ag_prefix_parse((*argv)[0], r))
		return cli_lib_error(cli, -22);
	(*argc)--, (*argv)++;
	if (*argc >= 1 && !strcmp((*argv)[0], "port")) {
		if (*argc < 2)
			return cli_usage(cli, "'port' needs a value");
		if (ag_port_parse((*argv)[1], &r->port))
			return cli_lib_error(cli, -22);
		*argc -= 2, *argv += 2;
	}
	return 0;
}

static void print_rule(struct cli *cli, const struct ag_rule *r, const char *agent,
		       const char *what)
{
	char prefix[AG_PREFIX_STRLEN];

	if (cli->json) {
		json_rule(&cli->jw, r, agent);
		jsonw_end_document(&cli->jw);
		return;
	}
	ag_prefix_format(r, prefix, sizeof(prefix));
	printf("%s rule %s", what, prefix);
	if (r->port)
		printf(" port %u", r->port);
	if (agent)
		printf(" agent %s", agent);
	putchar('\n');
}

int do_rule_add(struct cli *cli, int argc, char **argv)
{
	struct ag_rule r;
	int code, err = parse_rule(cli, &argc, &argv, &r);

	if (err)
		return err;
	if (argc != 2 || strcmp(argv[0], "agent"))
		return cli_usage(cli, "expected 'agent NAME' after the prefix");
	err = parse_name(cli, argv[1]);
	if (err)
		return err;
	if (route_rule(cli, true, &r, argv[1], &code)) {
		if (code)
			return code;
	} else {
		err = ag_rule_add(cli->ctx, &r, argv[1]);
		if (err)
			return cli_lib_error(cli, err);
	}
	print_rule(cli, &r, argv[1], "added");
	return 0;
}

int do_rule_del(struct cli *cli, int argc, char **argv)
{
	struct ag_rule r;
	int code, err = parse_rule(cli, &argc, &argv, &r);

	if (err)
		return err;
	if (argc != 0)
		return cli_usage(cli, "unexpected argument '%s'", argv[0]);
	if (route_rule(cli, false, &r, NULL, &code)) {
		if (code)
			return code;
	} else {
		err = ag_rule_del(cli->ctx, &r);
		if (err)
			return cli_lib_error(cli, err);
	}
	print_rule(cli, &r, NULL, "deleted");
	return 0;
}

static int by_prefix(const void *a, const void *b)
{
	const struct ag_rule *x = a, *y = b;
	int c;

	if (x->family != y->family)
		return x->family < y->family ? -1 : 1;
	c = memcmp(x->addr, y->addr, 16);
	if (c)
		return c;
	if (x->plen != y->plen)
		return x->plen < y->plen ? -1 : 1;
	return x->port < y->port ? -1 : x->port > y->port;
}

/* slot -> name, for every agent. */
static int slot_names(struct cli *cli, char (**names)[AG_NAME_MAX + 1])
{
	struct ag_agent *agents;
	size_t n, i;
	int err = ag_agent_list(cli->ctx, &agents, &n);

	if (err)
		return cli_lib_error(cli, err);
	*names = calloc(ag_max_agents(cli->ctx), sizeof(**names));
	if (!*names) {
		free(agents);
		return cli_error(cli, EXIT_RUNTIME, "out of memory");
	}
	for (i = 0; i < n; i++)
		memcpy((*names)[agents[i].slot], agents[i].name, sizeof(agents[i].name));
	free(agents);
	return 0;
}

/* The text table: PREFIX and AGENT left, PORT right, two spaces before
 * AGENT; each column as wide as its content. */
static const struct table_col rule_cols[] = {
	{ "PREFIX", TABLE_LEFT },
	{ "PORT", TABLE_RIGHT },
	{ "AGENT", TABLE_LEFT, 2 },
};

int do_rule_list(struct cli *cli, int argc, char **argv)
{
	char(*names)[AG_NAME_MAX + 1] = NULL;
	const char *only = NULL;
	struct ag_rule *rules = NULL;
	struct table *t = NULL;
	size_t n, i;
	int err;

	if (argc == 2 && !strcmp(argv[0], "agent"))
		only = argv[1];
	else if (argc != 0)
		return cli_usage(cli, "unexpected argument '%s'", argv[0]);
	if (only) {
		struct ag_agent a;

		err = parse_name(cli, only);
		if (err)
			return err;
		err = ag_agent_get(cli->ctx, only, &a);
		if (err)
			return cli_lib_error(cli, err);
	}
	err = slot_names(cli, &names);
	if (err)
		return err;
	err = ag_rule_list(cli->ctx, &rules, &n);
	if (err) {
		free(names);
		return cli_lib_error(cli, err);
	}
	qsort(rules, n, sizeof(*rules), by_prefix);
	if (cli->json) {
		jsonw_start_array(&cli->jw);
	} else {
		t = table_new(rule_cols, sizeof(rule_cols) / sizeof(rule_cols[0]));
		if (!t) {
			free(rules);
			free(names);
			return cli_error(cli, EXIT_RUNTIME, "out of memory");
		}
	}
	for (i = 0; i < n; i++) {
		const char *agent = rules[i].slot < ag_max_agents(cli->ctx) ?
					    names[rules[i].slot] : "";
		char prefix[AG_PREFIX_STRLEN], port[8] = "any";

		if (only && strcmp(agent, only))
			continue;
		if (cli->json) {
			json_rule(&cli->jw, &rules[i], agent);
			continue;
		}
		ag_prefix_format(&rules[i], prefix, sizeof(prefix));
		if (rules[i].port)
			snprintf(port, sizeof(port), "%u", rules[i].port);
		table_text(t, prefix);
		table_text(t, port);
		table_text(t, agent);
	}
	if (cli->json) {
		jsonw_end_array(&cli->jw);
		jsonw_end_document(&cli->jw);
	} else if (table_print(t, stdout)) {
		err = cli_error(cli, EXIT_RUNTIME, "out of memory");
	}
	table_free(t);
	free(rules);
	free(names);
	return err;
}

/* ---- rule sync ------------------------------------------------------------------ */

/* The whole file (or standard input for "-"), at most 32 MiB. */
static int read_feed_file(struct cli *cli, const char *path, char **out, size_t *len)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "re") : stdin;
	size_t cap = 65536, n = 0;
	char *buf;

	if (!f)
		return cli_error(cli, EXIT_USAGE, "cannot open %s: %s", path, strerror(errno));
	buf = malloc(cap);
	while (buf) {
		size_t got = fread(buf + n, 1, cap - n, f);

		n += got;
		if (n < cap)
			break;
		if (cap >= AGD_FEED_FILE_MAX) {
			free(buf);
			if (f != stdin)
				fclose(f);
			return cli_error(cli, EXIT_USAGE, "%s: more than 32 MiB", path);
		}
		cap *= 2;
		{
			char *grown = realloc(buf, cap);

			if (!grown)
				free(buf);
			buf = grown;
		}
	}
	if (!buf || ferror(f)) {
		int e = errno;

		free(buf);
		if (f != stdin)
			fclose(f);
		return cli_error(cli, EXIT_RUNTIME, "cannot read %s: %s", path,
				 buf ? strerror(e) : "out of memory");
	}
	if (f != stdin)
		fclose(f);
	*out = buf;
	*len = n;
	return 0;
}

int do_rule_sync(struct cli *cli, int argc, char **argv)
{
	struct agd_feed_set set = { 0 };
	struct agd_err why = { 0 };
	json_t *req, *rep, *res;
	void *reply = NULL;
	char *text = NULL;
	size_t len = 0;
	int err, r;

	if (argc != 2)
		return cli_usage(cli, "expected AGENT FILE");
	err = parse_name(cli, argv[0]);
	if (!err)
		err = read_feed_file(cli, argv[1], &text, &len);
	if (err)
		return err;
	/* Checked here first: a bad file is a usage error, whoever answers. */
	if (agd_feed_parse(text, len, 0, &set, &why)) {
		free(text);
		return cli_usage(cli, "%s: %s", argv[1], why.msg);
	}
	req = json_pack("{s:s,s:s,s:s%}", "op", "feed.sync", "agent", argv[0], "feed", text, len);
	free(text);
	if (!req) {
		agd_feed_set_free(&set);
		return cli_error(cli, EXIT_RUNTIME, "out of memory");
	}
	r = cli_daemon_ask(cli, req, &reply);
	json_decref(req);
	if (r <= 0) {
		agd_feed_set_free(&set);
		if (r < 0)
			return EXIT_RUNTIME; /* printed */
		return cli_error(cli, EXIT_RUNTIME, "rule sync needs agentgated: an agent's feed "
				 "rules are kept apart from its hand rules in its state store "
				 "(agentgated(8), RULE FEEDS); no agentgated owns %s",
				 cli->pin_path ? cli->pin_path : AG_PIN_ROOT_DEFAULT);
	}
	rep = reply;
	res = json_object_get(rep, "result");
	if (!json_is_true(json_object_get(rep, "ok")) || !json_is_object(res)) {
		const char *msg = json_string_value(json_object_get(rep, "message"));
		int status = (int)json_integer_value(json_object_get(rep, "status"));

		err = cli_error(cli, status == 400 ? EXIT_USAGE : EXIT_RUNTIME,
				"agentgated refused: %s", msg ? msg : "(no message)");
	} else if (cli->json) {
		cli_emit_json(&cli->jw, res);
		jsonw_end_document(&cli->jw);
	} else {
		printf("synced agent %s: %lld prefixes", argv[0],
		       (long long)json_integer_value(json_object_get(res, "prefixes")));
		if (json_integer_value(json_object_get(res, "conflicts")))
			printf(" (%lld already another agent's rule, left to it)",
			       (long long)json_integer_value(json_object_get(res, "conflicts")));
		putchar('\n');
	}
	json_decref(rep);
	agd_feed_set_free(&set);
	return err;
}
