// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* agentgate config set|show, agentgate stats */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int show(struct cli *cli)
{
	struct ag_config cfg;
	int err = ag_config_get(cli->ctx, &cfg);

	if (err)
		return cli_lib_error(cli, err);
	if (cli->json) {
		jsonw_start_object(&cli->jw);
		jsonw_string_field(&cli->jw, "default_action",
				   cfg.default_action == AG_ACTION_DROP ? "drop" : "pass");
		jsonw_bool_field(&cli->jw, "dry_run", cfg.dry_run);
		jsonw_end_object(&cli->jw);
		jsonw_end_document(&cli->jw);
	} else {
		printf("default-action %s\ndry-run %s\n",
		       cfg.default_action == AG_ACTION_DROP ? "drop" : "pass",
		       cfg.dry_run ? "on" : "off");
	}
	return 0;
}

int do_config_show(struct cli *cli, int argc, char **argv)
{
	if (argc)
		return cli_usage(cli, "unexpected argument '%s'", argv[0]);
	return show(cli);
}

int do_config_set(struct cli *cli, int argc, char **argv)
{
	int err, code;

	if (argc != 2)
		return cli_usage(cli, "expected a setting and a value");
	if (!strcmp(argv[0], "default-action")) {
		if (strcmp(argv[1], "pass") && strcmp(argv[1], "drop"))
			return cli_error(cli, EXIT_USAGE,
					 "invalid default-action '%s' (pass or drop)", argv[1]);
		if (route_config(cli, argv[0], argv[1], &code))
			return code ? code : show(cli);
		err = ag_config_set_default_action(cli->ctx, !strcmp(argv[1], "drop") ?
								     AG_ACTION_DROP :
								     AG_ACTION_PASS);
	} else if (!strcmp(argv[0], "dry-run")) {
		if (strcmp(argv[1], "on") && strcmp(argv[1], "off"))
			return cli_error(cli, EXIT_USAGE, "invalid dry-run '%s' (on or off)",
					 argv[1]);
		if (route_config(cli, argv[0], argv[1], &code))
			return code ? code : show(cli);
		err = ag_config_set_dry_run(cli->ctx, !strcmp(argv[1], "on"));
	} else {
		return cli_usage(cli, "unknown setting '%s' (default-action, dry-run)",
				 argv[0]);
	}
	return err ? cli_lib_error(cli, err) : show(cli);
}

int do_stats(struct cli *cli, int argc, char **argv)
{
	struct ag_counters total = {}, *all;
	__u64 stats[AG_STAT__MAX], parse_errors = 0;
	__u32 i, max = ag_max_agents(cli->ctx);
	int err;

	if (argc)
		return cli_usage(cli, "stats takes no arguments");
	all = calloc(max, sizeof(*all));
	if (!all)
		return cli_error(cli, EXIT_RUNTIME, "out of memory");
	err = ag_stats_get(cli->ctx, stats);
	if (!err)
		err = ag_counters_get_all(cli->ctx, all);
	for (i = 0; !err && i < max; i++) {
		total.passed_packets += all[i].passed_packets;
		total.passed_bytes += all[i].passed_bytes;
		total.dropped_packets += all[i].dropped_packets;
		total.dropped_bytes += all[i].dropped_bytes;
		total.would_drop_packets += all[i].would_drop_packets;
		total.would_drop_bytes += all[i].would_drop_bytes;
	}
	free(all);
	if (err)
		return cli_lib_error(cli, err);
	for (i = 0; i < AG_STAT__MAX; i++)
		if (ag_stat_is_parse_error(i))
			parse_errors += stats[i];
	{
		const char *names[] = { "passed_packets", "passed_bytes", "dropped_packets",
					"dropped_bytes", "would_drop_packets", "would_drop_bytes",
					"parse_errors" };
		__u64 values[] = { total.passed_packets, total.passed_bytes,
				   total.dropped_packets, total.dropped_bytes,
				   total.would_drop_packets, total.would_drop_bytes, parse_errors };

		if (cli->json)
			jsonw_start_object(&cli->jw);
		for (i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
			if (cli->json)
				jsonw_uint_field(&cli->jw, names[i], values[i]);
			else
				printf("%-24s %llu\n", names[i], (unsigned long long)values[i]);
		}
	}
	for (i = 0; i < AG_STAT__MAX; i++) {
		if (cli->json)
			jsonw_uint_field(&cli->jw, ag_stat_name(i), stats[i]);
		else
			printf("%-24s %llu\n", ag_stat_name(i), (unsigned long long)stats[i]);
	}
	if (cli->json) {
		jsonw_end_object(&cli->jw);
		jsonw_end_document(&cli->jw);
	}
	return 0;
}
