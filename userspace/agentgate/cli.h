/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* agentgate CLI: shared state, the command table and output helpers. */
#ifndef AGENTGATE_CLI_H
#define AGENTGATE_CLI_H

#include <stdbool.h>
#include <stdio.h>
#include <jansson.h>

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
	int owner_fd; /* the shared owner lock of a write made here (-1: none) */
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

/* One owner of policy (owner.c). The route_* functions, for a write verb
 * whose input is checked: 0 when no daemon owns the pin root (the caller
 * writes the maps itself; a shared owner lock keeps a daemon from starting
 * until the CLI exits); 1 when the change went to the daemon (or could not
 * be sent): *code is then the exit status, the error already printed. */
/* influence: the agent's own influence limits given ({"field": value|null}),
 * or NULL. */
int route_agent_set(struct cli *cli, const char *name, const struct ag_agent_update *u,
		    double ttl, json_t *influence, bool *created, int *code);
/* op: agent.delete, agent.reset or agent.drain (tokens); *left: the tokens
 * after a reset or drain. */
/* parent set (set) or parent del: journaled as AG_JOURNAL_AGENT (one name space). */
int route_parent(struct cli *cli, bool set, const char *name, const struct ag_agent_update *u,
		 bool *created, int *code);
int route_agent_op(struct cli *cli, const char *op, const char *name, __u64 tokens,
		   double *left, int *code);
int route_rule(struct cli *cli, bool add, const struct ag_rule *rule, const char *agent,
	       int *code);
/* key "default-action" (pass|drop) or "dry-run" (on|off), checked before. */
int route_config(struct cli *cli, const char *key, const char *value, int *code);
/* A question for the daemon that owns the pin root: 1 with *reply_json its
 * answer ({"ok":...}, json_decref it), 0 when no daemon owns it, negative
 * errno after printing the error. */
int cli_daemon_ask(struct cli *cli, void *req_json, void **reply_json);
/* The same, best effort and quiet: 1 with its answer, 0 when no daemon
 * answers here (none, this account may not use its socket, it is stopping);
 * nothing printed. */
int cli_daemon_peek(struct cli *cli, void *req_json, void **reply_json);
/* A jansson value through the CLI's JSON writer (explain_cli.c). */
void cli_emit_json(struct jsonw *w, json_t *v);

/* Commands */
int do_attach(struct cli *cli, int argc, char **argv);
int do_detach(struct cli *cli, int argc, char **argv);
int do_chain_add(struct cli *cli, int argc, char **argv);
int do_chain_del(struct cli *cli, int argc, char **argv);
int do_status(struct cli *cli, int argc, char **argv);
int do_agent_list(struct cli *cli, int argc, char **argv);
int do_agent_show(struct cli *cli, int argc, char **argv);
int do_agent_set(struct cli *cli, int argc, char **argv);
int do_agent_reset(struct cli *cli, int argc, char **argv);
int do_agent_drain(struct cli *cli, int argc, char **argv);
int do_agent_del(struct cli *cli, int argc, char **argv);
int do_agent_explain(struct cli *cli, int argc, char **argv);
int do_agent_charge(struct cli *cli, int argc, char **argv);
int do_parent_set(struct cli *cli, int argc, char **argv);
int do_parent_show(struct cli *cli, int argc, char **argv);
int do_parent_list(struct cli *cli, int argc, char **argv);
int do_parent_del(struct cli *cli, int argc, char **argv);
/* "parent P" (none: "none" or "") into u, for agent set and parent set. */
int parse_parent_arg(struct cli *cli, const char *text, struct ag_agent_update *u);
/* "quota N/hour|day|30d" or "none" into u. */
int parse_quota_arg(struct cli *cli, const char *text, struct ag_agent_update *u);
int do_rule_add(struct cli *cli, int argc, char **argv);
int do_rule_del(struct cli *cli, int argc, char **argv);
int do_rule_list(struct cli *cli, int argc, char **argv);
int do_rule_sync(struct cli *cli, int argc, char **argv);
int do_config_set(struct cli *cli, int argc, char **argv);
int do_config_show(struct cli *cli, int argc, char **argv);
int do_top(struct cli *cli, int argc, char **argv);
int do_stats(struct cli *cli, int argc, char **argv);

/* Agent rows shared by list, show and top. */
struct agent_row {
	struct ag_agent a;
	char parent[AG_NAME_MAX + 1]; /* its parent's name, "" for none */
	struct ag_quota_status quota; /* limit 0: none */
	double tokens;
	struct ag_counters c;
	/* From agentgated, when it runs (agent.activity): idle seconds as of
	 * its last sweep and idle TTL (0: never); idle_s < 0: not known. */
	long long idle_s, ttl;
};
int load_rows(struct cli *cli, struct agent_row **rows, size_t *n);
/* row->parent and row->quota from row->a (cmd_parent.c). */
void fill_parent_name(struct cli *cli, struct agent_row *row);
void json_quota(struct jsonw *w, const struct agent_row *r);
void print_quota_text(const struct agent_row *r);
void json_agent(struct jsonw *w, const struct agent_row *r);
void json_agent_fields(struct jsonw *w, const struct agent_row *r);
void json_parent_counters(struct jsonw *w, const struct agent_row *r);
void json_limit_fields(struct jsonw *w, const struct agent_row *r);
void print_deleted(struct cli *cli, const char *kind, const char *name);
void json_rule(struct jsonw *w, const struct ag_rule *r, const char *agent);
int parse_sort(struct cli *cli, const char *text, int *key);
void sort_rows(struct agent_row *rows, size_t n, int key);
enum sort_key { SORT_NAME, SORT_DROPS, SORT_RATE, SORT_IDLE };
/* Human tables (table.c): each column as wide as its widest cell, its title
 * at least, so that names up to AG_NAME_MAX keep the columns in line. Cells
 * are added row after row, then printed with the titles. */
enum table_align { TABLE_LEFT, TABLE_RIGHT };
struct table_col {
	const char *title;
	enum table_align align;
	unsigned int gap; /* spaces before the column; 0 means 1 */
};
struct table;
struct table *table_new(const struct table_col *cols, size_t ncols);
void table_cell(struct table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void table_text(struct table *t, const char *s); /* table_cell(t, "%s", s), faster */
void table_uint(struct table *t, unsigned long long v); /* "%llu", faster */
/* Titles, then the rows; -ENOMEM (nothing printed) when a cell was lost. */
int table_print(struct table *t, FILE *out);
void table_free(struct table *t);

/* agent explain (explain_cli.c): prints the explain object of name. */
int cli_explain(struct cli *cli, const char *name);

#endif
