/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The option table's row type, shared by config.c (parsing, defaults,
 * bounds, reload) and manual.c (--help, --check-man). Private to process/. */
#ifndef AGD_CONFIG_INT_H
#define AGD_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

enum kind {
	K_STR,      /* text into a char array */
	K_LIST,     /* repeatable text */
	K_FLAG,     /* no argument on the command line; yes/no in the file */
	K_BOOL,     /* yes/no, on/off, true/false */
	K_BYTES,    /* 1048576, 1M, 1MiB, 64k */
	K_COUNT,    /* 1000, 10k, 1M */
	K_MS,       /* 500ms, 30s, 10m, 24h, 7d */
	K_RATE,     /* a decimal number */
	K_BURST,    /* 500 (tokens) or 1.5s (seconds of rate) */
	K_UNIT,     /* pps | bps */
	K_XDP_MODE, /* auto | native | generic */
};

/* Bounds of a numeric row (K_BYTES, K_COUNT, K_MS, K_RATE). */
enum {
	B_MIN = 1 << 0,   /* value >= min */
	B_ABOVE = 1 << 1, /* value > min */
	B_MAX = 1 << 2,   /* value <= max */
};

/*
 * The option table: one row per option, and everything about the option is
 * in its row. From the rows come
 *   - parsing: the flag --NAME and the config-file key NAME (agd_config_load,
 *     agd_config_file), with the syntax of the row's kind;
 *   - the defaults (agd_config_defaults): .def parsed like a given value;
 *     without .def the field stays empty or zero, except the policy rows,
 *     whose defaults are agd_policy_defaults() (core/policy.c, which the CLI's
 *     offline explain shares);
 *   - the bounds (agd_config_check, from check_settings in main.c, which then
 *     runs the checks across options): a value outside them is refused
 *     naming the option and the bound, exit status 2;
 *   - SIGHUP (agd_config_restart_change): a row without .reload whose value
 *     a reload changed is logged as taking effect on restart;
 *   - --help (agd_usage): argument, help, the default as the value formats,
 *     the bounds, and whether SIGHUP applies it.
 *
 * The manual page (docs/agentgated.8, OPTIONS) stays prose written for its
 * reader, with related options grouped in one entry: generating it from
 * these one-line help texts would lose that. Instead it is held to this
 * table: `agentgated --check-man docs/agentgated.8`, run by make check-man,
 * fails unless every row has an entry naming --NAME ARG, saying "default X"
 * (or "default: X") and the bounds exactly as --help prints them, no entry
 * names an option the table lacks, and the paragraph "SIGHUP applies ..."
 * names exactly the .reload rows. (In an entry grouping several options,
 * such as --rate, --alpha, --r-min, --r-max, each phrase need only be in
 * the entry.) Change a row and check-man fails until the page agrees.
 */
struct opt {
	const char *name; /* flag and config key */
	enum kind kind;
	size_t off;       /* offsetof the field in struct agd_config */
	size_t size;      /* of the field (of one element for K_LIST) */
	size_t count_off; /* K_LIST: offsetof its count */
	const char *arg;  /* NULL: a flag without an argument */
	const char *def;  /* the default, parsed as a value would be */
	const char *def_doc; /* a default decided at run time, in words */
	unsigned int bounds; /* B_*, with min and max */
	double min, max;
	bool reload;   /* SIGHUP applies it; otherwise it waits for a restart */
	bool fleet;    /* its bounds are checked in fleet mode (with --nats) only */
	bool nonempty; /* "" is refused */
	bool cli_only; /* not a config-file key */
	const char *help;
};

extern const struct opt agd_opts[];
extern const size_t agd_n_opts;

/* The default (d: agd_config_defaults), as the value formats or in words. */
bool agd_opt_default_text(const struct opt *o, const struct agd_config *d, char *buf, size_t len);
/* "1 to 5", "at least 64KiB", "above 0 and at most 1". */
bool agd_opt_bounds_text(const struct opt *o, char *buf, size_t len);
/* The OPTIONS section of the manual page at path against the table: 0, or
 * the number of problems, each printed. */
int agd_man_check(const char *path);

#endif
