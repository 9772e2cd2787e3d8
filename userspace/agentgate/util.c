// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Value parsing and the agent rows shared by list, show and top. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cli.h"

/* Decimal (digits, at most one point) with an optional k, M or G (powers of
 * 1000) suffix. No signs, exponents or hex: what the help promises. */
static bool parse_scaled(const char *text, double *v)
{
	const char *p = text;
	bool digits = false, point = false;
	double x;

	if (!text)
		return false;
	for (; *p; p++) {
		if (*p >= '0' && *p <= '9')
			digits = true;
		else if (*p == '.' && !point)
			point = true;
		else
			break;
	}
	if (!digits || (*p && p[1]) || (*p && *p != 'k' && *p != 'K' && *p != 'M' && *p != 'G'))
		return false;
	x = strtod(text, NULL);
	if (*p == 'k' || *p == 'K')
		x *= 1e3;
	else if (*p == 'M')
		x *= 1e6;
	else if (*p == 'G')
		x *= 1e9;
	if (!isfinite(x))
		return false;
	*v = x;
	return true;
}

int parse_rate(struct cli *cli, const char *text, double *rate)
{
	if (!parse_scaled(text, rate))
		return cli_error(cli, EXIT_USAGE,
				 "invalid rate '%s' (tokens per second, e.g. 500, 2.5k, 1G)", text);
	return ag_rate_check(*rate) ? cli_lib_error(cli, -EINVAL) : 0;
}

int parse_count(struct cli *cli, const char *what, const char *text, __u64 *v)
{
	double x;

	if (!parse_scaled(text, &x) || x != floor(x) || x < 0 || x > 1.8e19)
		return cli_error(cli, EXIT_USAGE, "invalid %s '%s' (a whole number, e.g. 100, 64k)",
				 what, text);
	*v = (__u64)x;
	return 0;
}

int parse_unit(struct cli *cli, const char *text, enum ag_unit *unit)
{
	if (ag_unit_parse(text, unit))
		return cli_error(cli, EXIT_USAGE, "%s", ag_errmsg());
	return 0;
}

int parse_name(struct cli *cli, const char *text)
{
	return ag_name_check(text) ? cli_lib_error(cli, -EINVAL) : 0;
}

const char *unit_name(enum ag_unit unit)
{
	return ag_unit_name(unit);
}

const char *mode_name(enum ag_xdp_mode mode)
{
	return mode == AG_XDP_NATIVE ? "native" : mode == AG_XDP_GENERIC ? "generic" : "unknown";
}

/* Agents placed at their slot index, so the passes below run in slot order
 * (sequential through the bucket mmap and the counters). */
static int place_row(void *arg, const struct ag_agent *a)
{
	struct agent_row *rows = arg;

	rows[a->slot].a = *a;
	return 0;
}

/* Zeroed memory for a table of every slot, free()able. Large ones in huge
 * pages where the kernel gives them (madvise): 10^6 rows are 300 MB, and a
 * page fault per 4 KiB of them was most of a listing's time. */
static void *table_zalloc(size_t n, size_t size)
{
	const size_t huge = 2u << 20;
	size_t bytes = (n ? n : 1) * size;
	void *p;

	if (bytes < 2 * huge)
		return calloc(n ? n : 1, size);
	bytes = (bytes + huge - 1) & ~(huge - 1);
	p = aligned_alloc(huge, bytes);
	if (!p)
		return NULL;
	madvise(p, bytes, MADV_HUGEPAGE); /* a hint: 4 KiB pages otherwise */
	memset(p, 0, bytes);
	return p;
}

/* Every agent with its tokens and counters. Rows are allocated for every
 * slot, then compacted. */
int load_rows(struct cli *cli, struct agent_row **out, size_t *n_out)
{
	__u32 max = ag_max_agents(cli->ctx), slot;
	struct agent_row *rows = table_zalloc(max, sizeof(*rows));
	struct ag_counters *counters = table_zalloc(max, sizeof(*counters));
	size_t n = 0;
	int err;

	if (!rows || !counters) {
		free(rows);
		free(counters);
		return cli_error(cli, EXIT_RUNTIME, "out of memory");
	}
	err = ag_agent_foreach(cli->ctx, place_row, rows);
	if (!err)
		err = ag_counters_get_all(cli->ctx, counters);
	for (slot = 0; !err && slot < max; slot++) {
		struct agent_row *r = &rows[n];

		if (!rows[slot].a.name[0])
			continue;
		if (r != &rows[slot])
			*r = rows[slot];
		r->c = counters[slot];
		r->idle_s = -1;
		fill_parent_name(cli, r);
		if (ag_bucket_tokens(cli->ctx, slot, &r->tokens))
			r->tokens = NAN; /* deleted meanwhile */
		n++;
	}
	free(counters);
	if (err) {
		free(rows);
		return cli_lib_error(cli, err);
	}
	*out = rows;
	*n_out = n;
	return 0;
}

void json_agent(struct jsonw *w, const struct agent_row *r)
{
	jsonw_start_object(w);
	json_agent_fields(w, r);
	jsonw_end_object(w);
}

/* "parent" and the counters, as agents and parents show them. */
void json_parent_counters(struct jsonw *w, const struct agent_row *r)
{
	jsonw_name(w, "parent");
	if (r->parent[0])
		jsonw_string(w, r->parent);
	else
		jsonw_null(w);
	jsonw_uint_field(w, "passed_packets", r->c.passed_packets);
	jsonw_uint_field(w, "passed_bytes", r->c.passed_bytes);
	jsonw_uint_field(w, "dropped_packets", r->c.dropped_packets);
	jsonw_uint_field(w, "dropped_bytes", r->c.dropped_bytes);
	jsonw_uint_field(w, "would_drop_packets", r->c.would_drop_packets);
	jsonw_uint_field(w, "would_drop_bytes", r->c.would_drop_bytes);
}

/* {"name", "deleted": true} or "deleted KIND NAME". */
void print_deleted(struct cli *cli, const char *kind, const char *name)
{
	if (cli->json) {
		jsonw_start_object(&cli->jw);
		jsonw_string_field(&cli->jw, "name", name);
		jsonw_bool_field(&cli->jw, "deleted", true);
		jsonw_end_object(&cli->jw);
		jsonw_end_document(&cli->jw);
	} else {
		printf("deleted %s %s\n", kind, name);
	}
}

/* What agents and parents both are: a bucket with a name and a limit. */
void json_limit_fields(struct jsonw *w, const struct agent_row *r)
{
	jsonw_string_field(w, "name", r->a.name);
	jsonw_uint_field(w, "slot", r->a.slot);
	jsonw_double_field(w, "rate", r->a.rate);
	jsonw_uint_field(w, "burst", r->a.burst);
	jsonw_string_field(w, "unit", unit_name(r->a.unit));
	jsonw_double_field(w, "tokens", floor(r->tokens * 1000) / 1000);
}

void json_agent_fields(struct jsonw *w, const struct agent_row *r)
{
	json_limit_fields(w, r);
	jsonw_bool_field(w, "pinned", r->a.pinned);
	json_parent_counters(w, r);
	json_quota(w, r);
	jsonw_uint_field(w, "created_ms", r->a.created_ns / 1000000);
	if (r->idle_s >= 0) {
		jsonw_uint_field(w, "idle_s", (__u64)r->idle_s);
		jsonw_uint_field(w, "ttl", (__u64)r->ttl);
	} else {
		jsonw_name(w, "idle_s");
		jsonw_null(w);
		jsonw_name(w, "ttl");
		jsonw_null(w);
	}
}
