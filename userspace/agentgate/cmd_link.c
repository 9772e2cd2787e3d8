// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* agentgate attach|detach|status */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "cli.h"

static int parse_size(struct cli *cli, const char *what, const char *text, __u32 *out)
{
	__u64 v;
	int err = parse_count(cli, what, text, &v);

	if (err)
		return err;
	if (v < 1 || v > AG_MAX_AGENTS_LIMIT)
		return cli_error(cli, EXIT_USAGE, "%s must be 1 to %u", what, AG_MAX_AGENTS_LIMIT);
	*out = (__u32)v;
	return 0;
}

/* --replace ID: a program id, 1 to 2^32-1. */
static int parse_prog_id(struct cli *cli, const char *text, __u32 *out)
{
	__u64 v;
	int err = parse_count(cli, "replace", text, &v);

	if (err)
		return err;
	if (v < 1 || v > 0xffffffffULL)
		return cli_error(cli, EXIT_USAGE, "--replace takes a program id (agentgate status)");
	*out = (__u32)v;
	return 0;
}

/* A program's name, "" when it cannot be read (opening by id needs
 * CAP_SYS_ADMIN). */
static void prog_name(__u32 id, char *buf, size_t len)
{
	struct bpf_prog_info info = {};
	__u32 ilen = sizeof(info);
	int fd = id ? bpf_prog_get_fd_by_id(id) : -1;

	buf[0] = 0;
	if (fd < 0)
		return;
	if (!bpf_obj_get_info_by_fd(fd, &info, &ilen))
		snprintf(buf, len, "%s", info.name);
	close(fd);
}

int do_attach(struct cli *cli, int argc, char **argv)
{
	struct ag_attach_opts o = { .mode = AG_XDP_AUTO };
	enum ag_xdp_mode mode = AG_XDP_AUTO;
	struct ag_attach_result res;
	const char *dev = NULL;
	int i, err = 0;

	for (i = 0; i < argc && !err; i++) {
		if (!strcmp(argv[i], "--mode") || !strcmp(argv[i], "--max-agents") ||
		    !strcmp(argv[i], "--max-rules") || !strcmp(argv[i], "--replace")) {
			if (i + 1 >= argc)
				return cli_usage(cli, "'%s' needs a value", argv[i]);
			if (!strcmp(argv[i], "--replace"))
				err = parse_prog_id(cli, argv[++i], &o.expected_prog_id);
			else if (!strcmp(argv[i], "--max-agents"))
				err = parse_size(cli, "max-agents", argv[++i], &cli->max_agents);
			else if (!strcmp(argv[i], "--max-rules"))
				err = parse_size(cli, "max-rules", argv[++i], &cli->max_rules);
			else if (!strcmp(argv[++i], "native"))
				mode = AG_XDP_NATIVE;
			else if (!strcmp(argv[i], "generic"))
				mode = AG_XDP_GENERIC;
			else
				return cli_error(cli, EXIT_USAGE,
						 "invalid mode '%s' (native or generic)", argv[i]);
		} else if (!dev && argv[i][0] != '-') {
			dev = argv[i];
		} else {
			return cli_usage(cli, "unexpected argument '%s'", argv[i]);
		}
	}
	if (err)
		return err;
	if (!dev)
		return cli_usage(cli, "expected a device");
	/* Before creating anything: a typo, or a device agentgate cannot be
	 * attached to, must not leave maps behind. */
	err = ag_device_check(dev);
	if (err)
		return cli_lib_error(cli, err);
	err = cli_open(cli, OPEN_CREATE);
	if (err)
		return err;
	if ((cli->max_agents && cli->max_agents != ag_max_agents(cli->ctx)) ||
	    (cli->max_rules && cli->max_rules != ag_max_rules(cli->ctx)))
		fprintf(stderr,
			"agentgate: warning: %s already holds maps for %u agents and %u rules per "
			"map; --max-agents/--max-rules apply only when creating them\n",
			ag_pin_root(cli->ctx), ag_max_agents(cli->ctx), ag_max_rules(cli->ctx));
	o.mode = mode;
	err = ag_attach_with(cli->ctx, dev, &o, &res);
	if (err)
		return cli_lib_error(cli, err);
	if (cli->json) {
		jsonw_start_object(&cli->jw);
		jsonw_string_field(&cli->jw, "ifname", dev);
		jsonw_string_field(&cli->jw, "mode", mode_name(res.mode));
		jsonw_uint_field(&cli->jw, "prog_id", res.prog_id);
		jsonw_uint_field(&cli->jw, "link_id", res.link_id);
		jsonw_bool_field(&cli->jw, "replaced", res.replaced);
		if (res.chained && res.next_prog_id) /* only before another program */
			jsonw_uint_field(&cli->jw, "next_prog_id", res.next_prog_id);
		jsonw_string_field(&cli->jw, "pin_root", ag_pin_root(cli->ctx));
		jsonw_end_object(&cli->jw);
		jsonw_end_document(&cli->jw);
	} else if (res.chained) {
		char name[BPF_OBJ_NAME_LEN] = "";

		prog_name(res.next_prog_id, name, sizeof(name));
		printf("%s %s in %s mode (program %u, through netlink), before program %u%s%s%s\n",
		       res.replaced ? "replaced the program on" : "attached to", dev,
		       mode_name(res.mode), res.prog_id, res.next_prog_id, name[0] ? " (" : "", name,
		       name[0] ? "): what agentgate passes runs through it" : "");
	} else {
		printf("%s %s in %s mode (program %u, link %u)\n",
		       res.replaced ? "replaced the program on" : "attached to", dev,
		       mode_name(res.mode), res.prog_id, res.link_id);
	}
	return 0;
}

/* agentgate chain add DEV PROG | chain del DEV */
int do_chain_add(struct cli *cli, int argc, char **argv)
{
	char name[BPF_OBJ_NAME_LEN] = "";
	__u32 id = 0;
	int fd, err;

	if (argc == 3 && !strcmp(argv[1], "id")) {
		char *end;
		unsigned long v = strtoul(argv[2], &end, 10);

		if (*end || !v || v > UINT32_MAX)
			return cli_usage(cli, "invalid program id '%s'", argv[2]);
		fd = bpf_prog_get_fd_by_id((__u32)v);
		if (fd < 0)
			return cli_error(cli, EXIT_RUNTIME, "cannot open program %lu: %s", v,
					 strerror(errno));
	} else if (argc == 2) {
		fd = bpf_obj_get(argv[1]);
		if (fd < 0)
			return cli_error(cli, EXIT_RUNTIME, "cannot open the pinned program %s: %s",
					 argv[1], strerror(errno));
	} else {
		return cli_usage(cli, "expected DEV and a pinned program PATH, or DEV id ID");
	}
	err = ag_chain_set(cli->ctx, argv[0], fd);
	if (!err) {
		struct bpf_prog_info info = {};
		__u32 len = sizeof(info);

		if (!bpf_obj_get_info_by_fd(fd, &info, &len)) {
			id = info.id;
			snprintf(name, sizeof(name), "%s", info.name);
		}
	}
	close(fd);
	if (err)
		return cli_lib_error(cli, err);
	if (cli->json) {
		jsonw_start_object(&cli->jw);
		jsonw_string_field(&cli->jw, "ifname", argv[0]);
		jsonw_uint_field(&cli->jw, "next_prog_id", id);
		jsonw_string_field(&cli->jw, "next_prog_name", name);
		jsonw_end_object(&cli->jw);
		jsonw_end_document(&cli->jw);
	} else {
		printf("program %u (%s) runs after agentgate on %s\n", id, name, argv[0]);
	}
	return 0;
}

int do_chain_del(struct cli *cli, int argc, char **argv)
{
	int err;

	if (argc != 1)
		return cli_usage(cli, "expected one device");
	err = ag_chain_set(cli->ctx, argv[0], -1);
	if (err)
		return cli_lib_error(cli, err);
	if (cli->json) {
		jsonw_start_object(&cli->jw);
		jsonw_string_field(&cli->jw, "ifname", argv[0]);
		jsonw_name(&cli->jw, "next_prog_id");
		jsonw_null(&cli->jw);
		jsonw_end_object(&cli->jw);
		jsonw_end_document(&cli->jw);
	} else {
		printf("nothing runs after agentgate on %s\n", argv[0]);
	}
	return 0;
}

int do_detach(struct cli *cli, int argc, char **argv)
{
	int err;

	if (argc != 1)
		return cli_usage(cli, "expected one device");
	err = ag_detach(cli->ctx, argv[0]);
	if (err)
		return cli_lib_error(cli, err);
	if (cli->json) {
		jsonw_start_object(&cli->jw);
		jsonw_string_field(&cli->jw, "ifname", argv[0]);
		jsonw_bool_field(&cli->jw, "detached", true);
		jsonw_end_object(&cli->jw);
		jsonw_end_document(&cli->jw);
	} else {
		printf("detached from %s\n", argv[0]);
	}
	return 0;
}

struct status {
	struct ag_link_info *links;
	size_t n_links;
	size_t agents;
	size_t rules_v4, rules_v6;
	struct ag_config cfg;
	int owned; /* 1: a daemon owns the pin root (owner), 0: none, < 0: unknown */
	struct ag_owner owner;
};

static int gather(struct cli *cli, struct status *st)
{
	struct ag_agent *agents = NULL;
	struct ag_rule *rules = NULL;
	size_t n, i;
	int err;

	memset(st, 0, sizeof(*st));
	err = ag_link_list(cli->ctx, &st->links, &st->n_links);
	if (!err)
		err = ag_agent_list(cli->ctx, &agents, &st->agents);
	if (!err)
		err = ag_rule_list(cli->ctx, &rules, &n);
	for (i = 0; !err && i < n; i++) {
		if (rules[i].family == AF_INET)
			st->rules_v4++;
		else
			st->rules_v6++;
	}
	if (!err)
		err = ag_config_get(cli->ctx, &st->cfg);
	if (!err) /* an account that may not lock reads "unknown" */
		st->owned = ag_owner_probe(ag_pin_root(cli->ctx), NULL, &st->owner);
	free(agents);
	free(rules);
	return err ? cli_lib_error(cli, err) : 0;
}

static void status_json(struct cli *cli, const struct status *st)
{
	struct jsonw *w = &cli->jw;
	size_t i;

	jsonw_start_object(w);
	jsonw_string_field(w, "pin_root", ag_pin_root(cli->ctx));
	jsonw_name(w, "links");
	jsonw_start_array(w);
	for (i = 0; i < st->n_links; i++) {
		jsonw_start_object(w);
		jsonw_string_field(w, "ifname", st->links[i].ifname);
		jsonw_uint_field(w, "ifindex", st->links[i].ifindex);
		jsonw_string_field(w, "mode", st->links[i].error   ? "unknown" :
					      st->links[i].ifindex ? mode_name(st->links[i].mode) :
								     "defunct");
		if (st->links[i].error)
			jsonw_string_field(w, "error", strerror(-st->links[i].error));
		jsonw_uint_field(w, "prog_id", st->links[i].prog_id);
		jsonw_uint_field(w, "link_id", st->links[i].link_id);
		if (st->links[i].next_prog_id) { /* only where a program runs after it */
			char name[BPF_OBJ_NAME_LEN] = "";

			prog_name(st->links[i].next_prog_id, name, sizeof(name));
			jsonw_name(w, "next");
			jsonw_start_object(w);
			jsonw_uint_field(w, "prog_id", st->links[i].next_prog_id);
			jsonw_string_field(w, "name", name);
			jsonw_end_object(w);
		}
		jsonw_end_object(w);
	}
	jsonw_end_array(w);
	jsonw_uint_field(w, "agents", st->agents);
	jsonw_uint_field(w, "agent_slots", ag_max_agents(cli->ctx));
	jsonw_name(w, "rules");
	jsonw_start_object(w);
	jsonw_uint_field(w, "ipv4", st->rules_v4);
	jsonw_uint_field(w, "ipv6", st->rules_v6);
	jsonw_end_object(w);
	jsonw_uint_field(w, "rule_slots", ag_max_rules(cli->ctx));
	jsonw_string_field(w, "default_action",
			   st->cfg.default_action == AG_ACTION_DROP ? "drop" : "pass");
	jsonw_bool_field(w, "dry_run", st->cfg.dry_run);
	jsonw_name(w, "owner");
	if (st->owned == 0) {
		jsonw_null(w);
	} else {
		jsonw_start_object(w);
		if (st->owned < 0) {
			jsonw_string_field(w, "error", strerror(-st->owned));
		} else if (st->owner.pid) {
			jsonw_uint_field(w, "pid", st->owner.pid);
			jsonw_string_field(w, "control_socket", st->owner.control);
			jsonw_uint_field(w, "since_ms", st->owner.since_ms);
		} else {
			jsonw_name(w, "pid"); /* starting or stopping */
			jsonw_null(w);
		}
		jsonw_end_object(w);
	}
	jsonw_end_object(w);
	jsonw_end_document(w);
}

static void status_text(struct cli *cli, const struct status *st)
{
	size_t i;

	printf("pin root        %s\n", ag_pin_root(cli->ctx));
	if (!st->n_links)
		printf("attached        nowhere (agentgate attach DEV)\n");
	for (i = 0; i < st->n_links; i++) {
		const struct ag_link_info *l = &st->links[i];

		if (l->error)
			printf("attached        %s (the link pin cannot be opened: %s)\n", l->ifname,
			       strerror(-l->error));
		else if (l->link_id)
			printf("attached        %s, %s mode, program %u, link %u\n", l->ifname,
			       l->ifindex ? mode_name(l->mode) : "defunct (device gone)", l->prog_id,
			       l->link_id);
		else
			printf("attached        %s, %s mode, program %u, through netlink\n", l->ifname,
			       mode_name(l->mode), l->prog_id);
		if (!l->error && l->next_prog_id) {
			char name[BPF_OBJ_NAME_LEN] = "";

			prog_name(l->next_prog_id, name, sizeof(name));
			printf("  then          program %u%s%s%s on what agentgate passes\n",
			       l->next_prog_id, name[0] ? " (" : "", name, name[0] ? ")" : "");
		}
	}
	printf("agents          %zu of %u slots\n", st->agents, ag_max_agents(cli->ctx));
	printf("rules           %zu IPv4, %zu IPv6 (%u per map)\n", st->rules_v4, st->rules_v6,
	       ag_max_rules(cli->ctx));
	printf("default action  %s\n", st->cfg.default_action == AG_ACTION_DROP ? "drop" : "pass");
	printf("dry-run         %s\n", st->cfg.dry_run ? "on" : "off");
	if (st->owned < 0)
		printf("owner           unknown (%s)\n", strerror(-st->owned));
	else if (st->owned == 0)
		printf("owner           none: agentgate changes the maps itself\n");
	else if (st->owner.pid)
		printf("owner           agentgated, pid %u: changes go through %s\n", st->owner.pid,
		       st->owner.control);
	else
		printf("owner           agentgated, starting or stopping\n");
}

int do_status(struct cli *cli, int argc, char **argv)
{
	struct status st;
	int err;

	if (argc)
		return cli_usage(cli, "unexpected argument '%s'", argv[0]);
	err = gather(cli, &st);
	if (err)
		return err;
	if (cli->json)
		status_json(cli, &st);
	else
		status_text(cli, &st);
	free(st.links);
	return 0;
}
