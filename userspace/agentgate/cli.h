/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* agentgate CLI: shared state, the command table and output helpers. */
#ifndef AGENTGATE_CLI_H
#define AGENTGATE_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "agentgate.h"
#include "jsonw.h"

/* Exit codes. */
#define EXIT_RUNTIME 1 /* unknown agent, no maps, kernel refused, ... */
#define EXIT_USAGE 2   /* invalid command line or value; nothing changed */

enum open_mode {
	OPEN_NONE,   /* the command opens nothing (help) */
	OPEN_READ,   /* inspection: read-only map fds */
	OPEN_WRITE,  /* changes existing maps */
	OPEN_CREATE, /* creates the maps when missing (attach) */
};

struct cli {
	bool json;
	bool pretty;
	const char *pin_path;
	const char *state_dir;
	__u32 max_agents; /* for OPEN_CREATE */
	__u32 max_rules;
	struct jsonw jw;
	struct ag_ctx *ctx;
	const struct command *cmd; /* the command running, for its usage line */
};

struct command {
	const char *object;    /* first word: "agent", "attach", ... */
	const char *verb;      /* second word, or NULL */
	const char *args;      /* arguments after object and verb, for synopsis */
	const char *summary;   /* one line */
	const char *details;   /* paragraphs for help and the manual; may be NULL */
	enum open_mode open;
	int (*run)(struct cli *cli, int argc, char **argv);
};

extern const struct command commands[];
extern const size_t n_commands;

/* Errors: one line on stderr, or {"error","message"} on stdout in JSON mode.
 * Return the exit code to use. */
int cli_error(struct cli *cli, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Map a library error (negative errno + ag_errmsg) to an exit code. */
int cli_lib_error(struct cli *cli, int err);
/* A usage error of the running command: the message and its synopsis. */
int cli_usage(struct cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Value parsing; each prints its error and returns EXIT_USAGE on failure. */
int parse_rate(struct cli *cli, const char *text, double *rate);
int parse_count(struct cli *cli, const char *what, const char *text, __u64 *v);
int parse_unit(struct cli *cli, const char *text, enum ag_unit *unit);
int parse_name(struct cli *cli, const char *text);

int cli_open(struct cli *cli, enum open_mode mode);
bool is_prefix(const char *word, const char *full);
const char *unit_name(enum ag_unit unit);
const char *mode_name(enum ag_xdp_mode mode);
void print_help(const struct command *cmd, FILE *out);
void print_manual(FILE *out);

/* Commands */
int do_attach(struct cli *cli, int argc, char **argv);
int do_detach(struct cli *cli, int argc, char **argv);
int do_status(struct cli *cli, int argc, char **argv);
int do_agent_list(struct cli *cli, int argc, char **argv);
int do_agent_show(struct cli *cli, int argc, char **argv);
int do_agent_set(struct cli *cli, int argc, char **argv);
int do_agent_reset(struct cli *cli, int argc, char **argv);
int do_agent_drain(struct cli *cli, int argc, char **argv);
int do_agent_del(struct cli *cli, int argc, char **argv);
int do_agent_explain(struct cli *cli, int argc, char **argv);
int do_rule_add(struct cli *cli, int argc, char **argv);
int do_rule_del(struct cli *cli, int argc, char **argv);
int do_rule_list(struct cli *cli, int argc, char **argv);
int do_config_set(struct cli *cli, int argc, char **argv);
int do_config_show(struct cli *cli, int argc, char **argv);
int do_top(struct cli *cli, int argc, char **argv);
int do_stats(struct cli *cli, int argc, char **argv);

/* Agent rows shared by list, show and top. */
struct agent_row {
	struct ag_agent a;
	double tokens;
	struct ag_counters c;
};
int load_rows(struct cli *cli, struct agent_row **rows, size_t *n);
void json_agent(struct jsonw *w, const struct agent_row *r);
void json_agent_fields(struct jsonw *w, const struct agent_row *r);
void json_rule(struct jsonw *w, const struct ag_rule *r, const char *agent);
int parse_sort(struct cli *cli, const char *text, int *key);
void sort_rows(struct agent_row *rows, size_t n, int key);
enum sort_key { SORT_NAME, SORT_DROPS, SORT_RATE };

#endif
