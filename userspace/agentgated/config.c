// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agentgate.h"
#include "config.h"

#ifndef AG_VERSION
#define AG_VERSION "0.1.0"
#endif

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

struct opt {
	const char *name; /* flag and config key */
	enum kind kind;
	size_t off;  /* offsetof the field in struct agd_config */
	size_t size; /* of the field (of one element for K_LIST) */
	const char *arg, *help;
};

#define F(field) offsetof(struct agd_config, field), sizeof(((struct agd_config *)0)->field)
#define FL(field) offsetof(struct agd_config, field), sizeof(((struct agd_config *)0)->field[0])

static const struct opt opts[] = {
	{ "config", K_STR, F(config), "FILE",
	  "config file (default " AGD_CONFIG_DEFAULT " when it exists)" },
	{ "pin-path", K_STR, F(pin_path), "DIR", "bpffs directory of the pinned maps (default "
	  AG_PIN_ROOT_DEFAULT ")" },
	{ "state-dir", K_STR, F(state_dir), "DIR", "LMDB state, audit log, dead letters (default "
	  AGD_STATE_DIR_DEFAULT ")" },
	{ "listen", K_STR, F(listen), "ADDR:PORT", "HTTP listener (default " AGD_LISTEN_DEFAULT
	  "; [IPV6]:PORT only where CivetWeb was built with IPv6)" },
	{ "attach", K_LIST, FL(attach), "DEV", "attach the XDP program to DEV (repeatable)" },
	{ "xdp-mode", K_XDP_MODE, F(xdp_mode), "MODE", "auto, native or generic (default auto)" },
	{ "auth-key-file", K_STR, F(auth_key_file), "FILE",
	  "HS256 secret for bearer tokens (required unless listening on loopback)" },
	{ "tls-cert", K_STR, F(tls_cert), "FILE", "TLS certificate (PEM)" },
	{ "tls-key", K_STR, F(tls_key), "FILE", "TLS private key (PEM)" },
	{ "max-body", K_BYTES, F(max_body), "BYTES", "largest request body (default 1MiB)" },
	{ "ingest-socket", K_STR, F(ingest_socket), "PATH", "read NDJSON ratings from a Unix socket" },
	{ "control-socket", K_STR, F(control_socket), "PATH",
	  "where the CLI's changes arrive while this daemon owns the pin root (default "
	  "<state-dir>/control.sock)" },
	{ "stdin", K_FLAG, F(use_stdin), NULL, "read NDJSON ratings from standard input" },
	{ "dead-letter-max", K_BYTES, F(dead_letter_max), "BYTES",
	  "size at which " AGD_DEAD_LETTER_FILE " becomes " AGD_DEAD_LETTER_FILE ".1, replacing "
	  "it (default 16MiB, at least 64KiB)" },
	{ "nats", K_LIST, FL(nats), "URL", "NATS server of the fleet (repeatable)" },
	{ "node", K_STR, F(node), "NAME",
	  "this host's name in the fleet: A-Z a-z 0-9 _ -, at most 32 (default: the host name)" },
	{ "nats-replicas", K_COUNT, F(nats_replicas), "N",
	  "replicas of the fleet's stream and KV bucket when this host creates them (default 1)" },
	{ "nats-timeout", K_MS, F(nats_timeout_ms), "TIME",
	  "wait this long for JetStream to take a rating before keeping it in the outbox "
	  "(default 2s)" },
	{ "fleet-interval", K_MS, F(fleet_interval_ms), "TIME",
	  "how often demand is published and shares recomputed (default 1s)" },
	{ "fleet-floor", K_RATE, F(fleet_floor), "F",
	  "least share of an agent's fleet rate a host keeps, 0 < F <= 1 (default 0.05)" },
	{ "rate", K_RATE, F(defaults.r0), "R", "default initial rate r0, tokens/s (default 100)" },
	{ "alpha", K_RATE, F(defaults.alpha), "A",
	  "default tokens/s per point of reward (default 10)" },
	{ "r-min", K_RATE, F(defaults.r_min), "R", "default lowest rate (default 1)" },
	{ "r-max", K_RATE, F(defaults.r_max), "R", "default highest rate (default 10000)" },
	{ "burst", K_BURST, F(defaults.burst), "B",
	  "default burst: tokens, or seconds of rate as 1s (default 1s)" },
	{ "unit", K_UNIT, F(defaults.unit), "UNIT", "default unit: pps or bps (default pps)" },
	{ "auto-create", K_BOOL, F(auto_create), "yes|no",
	  "a rating for an unknown agent creates it (default yes)" },
	{ "dedup-window", K_MS, F(dedup_window_ms), "TIME",
	  "how long rating ids are remembered (default 24h)" },
	{ "dedup-max", K_COUNT, F(dedup_max), "N", "most rating ids remembered (default 10M)" },
	{ "metrics-max-agents", K_COUNT, F(metrics_max_agents), "N",
	  "agents with their own metric labels, busiest first (default 1000)" },
	{ "max-agents", K_COUNT, F(max_agents), "N",
	  "agent slots when the maps are created (default 65536)" },
	{ "store-size", K_BYTES, F(store_size), "BYTES",
	  "largest size of the LMDB state file (default 4GiB)" },
	{ "queue-max", K_COUNT, F(queue_max), "N",
	  "ratings waiting to be applied before ingest waits (default 1M)" },
	{ "threads", K_COUNT, F(threads), "N", "HTTP worker threads: requests served at once (default 64)" },
	{ "request-timeout", K_MS, F(request_timeout_ms), "TIME",
	  "time a client has to send a request (default 10s)" },
	{ "stream-max-clients", K_COUNT, F(stream_max_clients), "N",
	  "WebSocket /v1/stream clients at once, on top of --threads (default 256)" },
	{ "stream-max-per-ip", K_COUNT, F(stream_max_per_ip), "N",
	  "WebSocket clients from one source address (default 16)" },
	{ "stream-queue", K_COUNT, F(stream_queue), "N",
	  "updates waiting per WebSocket client; beyond, they coalesce per topic (default 1024)" },
	{ "stream-max-lag", K_MS, F(stream_max_lag_ms), "TIME",
	  "a WebSocket client this far behind is disconnected (default 10s)" },
	{ "stream-ping", K_MS, F(stream_ping_ms), "TIME",
	  "ping an idle WebSocket client this often; 5 unanswered close it (default 15s)" },
	{ "user", K_STR, F(user), "USER",
	  "after setup, run as this account (and its groups), keeping only the capabilities "
	  "in use" },
	{ "read-group", K_STR, F(read_group), "GROUP",
	  "this group may read the pins and the state (read-only CLI use); default: owner only" },
	{ "quiet", K_FLAG, F(quiet), NULL, "log errors and warnings only" },
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

void agd_config_defaults(struct agd_config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->config, sizeof(c->config), "%s", AGD_CONFIG_DEFAULT);
	snprintf(c->pin_path, sizeof(c->pin_path), "%s", AG_PIN_ROOT_DEFAULT);
	snprintf(c->state_dir, sizeof(c->state_dir), "%s", AGD_STATE_DIR_DEFAULT);
	snprintf(c->listen, sizeof(c->listen), "%s", AGD_LISTEN_DEFAULT);
	snprintf(c->xdp_mode, sizeof(c->xdp_mode), "auto");
	c->max_body = 1 << 20;
	c->dead_letter_max = AGD_DEAD_LETTER_MAX_DEFAULT;
	ag_policy_defaults(&c->defaults);
	c->auto_create = true;
	c->dedup_window_ms = 24ULL * 3600 * 1000;
	c->dedup_max = 10000000;
	c->metrics_max_agents = 1000;
	c->max_agents = AG_MAX_AGENTS_DEFAULT;
	c->store_size = 4ULL << 30;
	c->queue_max = 1000000;
	c->threads = 64;
	c->request_timeout_ms = 10000;
	c->stream_max_clients = 256;
	c->stream_max_per_ip = 16;
	c->stream_queue = 1024;
	c->stream_max_lag_ms = 10000;
	c->stream_ping_ms = 15000;
	c->nats_replicas = 1;
	c->nats_timeout_ms = 2000;
	c->fleet_interval_ms = 1000;
	c->fleet_floor = 0.05;
}

/* ---- values ------------------------------------------------------------------ */

static int suffix_mult(const char *s, const char *const *names, const double *mults, size_t n,
		       double *mult)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(s, names[i])) {
			*mult = mults[i];
			return 0;
		}
	return -1;
}

static int parse_number(const char *text, double *v, const char **rest)
{
	char *end;

	if (!*text || isspace((unsigned char)*text))
		return -1;
	errno = 0;
	*v = strtod(text, &end);
	if (errno || end == text || !isfinite(*v) || *v < 0)
		return -1;
	/* decimal only: no hex, no exponent surprises like "1e" */
	if (strpbrk(text, "xXpP") && strpbrk(text, "xXpP") < end)
		return -1;
	*rest = end;
	return 0;
}

static int parse_scaled(const char *text, enum kind kind, __u64 *out)
{
	static const char *const bytes_n[] = { "", "k", "K", "KiB", "M", "MiB", "G", "GiB" };
	static const double bytes_m[] = { 1, 1024, 1024, 1024, 1 << 20, 1 << 20, 1 << 30, 1 << 30 };
	static const char *const count_n[] = { "", "k", "K", "M", "G" };
	static const double count_m[] = { 1, 1e3, 1e3, 1e6, 1e9 };
	static const char *const ms_n[] = { "ms", "s", "m", "h", "d" };
	static const double ms_m[] = { 1, 1e3, 60e3, 3600e3, 86400e3 };
	const char *rest;
	double v, mult;
	int bad;

	if (parse_number(text, &v, &rest))
		return -1;
	if (kind == K_BYTES)
		bad = suffix_mult(rest, bytes_n, bytes_m, 8, &mult);
	else if (kind == K_COUNT)
		bad = suffix_mult(rest, count_n, count_m, 5, &mult);
	else
		bad = suffix_mult(rest, ms_n, ms_m, 5, &mult);
	if (bad)
		return -1;
	v *= mult;
	if (v != floor(v) || v > 1.8e19)
		return -1;
	*out = (__u64)v;
	return 0;
}

static int parse_bool(const char *t, bool *out)
{
	if (!strcmp(t, "yes") || !strcmp(t, "on") || !strcmp(t, "true") || !strcmp(t, "1"))
		*out = true;
	else if (!strcmp(t, "no") || !strcmp(t, "off") || !strcmp(t, "false") || !strcmp(t, "0"))
		*out = false;
	else
		return -1;
	return 0;
}

static const char *kind_expects(enum kind k)
{
	switch (k) {
	case K_BOOL:
	case K_FLAG:
		return "yes or no";
	case K_BYTES:
		return "a size in bytes such as 1048576, 64k or 1MiB";
	case K_COUNT:
		return "a whole number such as 1000, 10k or 1M";
	case K_MS:
		return "a duration such as 500ms, 30s, 10m, 24h or 7d";
	case K_RATE:
		return "a decimal number";
	case K_BURST:
		return "tokens (500) or seconds of rate (1.5s)";
	case K_UNIT:
		return "pps or bps";
	case K_XDP_MODE:
		return "auto, native or generic";
	default:
		return "shorter text";
	}
}

/* Sets one option; 0, or -1 with the reason in buf. */
static int set_opt(struct agd_config *c, const struct opt *o, const char *val, char *buf,
		   size_t len)
{
	char *field = (char *)c + o->off;
	const char *rest;
	double v;
	int bad = 0;

	switch (o->kind) {
	case K_STR:
		/* An empty node name would silently mean "the host name". */
		if (!*val && o->off == offsetof(struct agd_config, node)) {
			snprintf(buf, len, "%s: must not be empty", o->name);
			return -1;
		}
		if (strlen(val) >= o->size)
			bad = 1;
		else
			snprintf(field, o->size, "%s", val);
		break;
	case K_LIST: {
		size_t *n = o->off == offsetof(struct agd_config, attach) ? &c->n_attach : &c->n_nats;

		if (*n >= AGD_LIST_MAX) {
			snprintf(buf, len, "%s: at most %d given", o->name, AGD_LIST_MAX);
			return -1;
		}
		if (strlen(val) >= o->size || !*val)
			bad = 1;
		else
			snprintf(field + *n * o->size, o->size, "%s", val), (*n)++;
		break;
	}
	case K_FLAG:
	case K_BOOL:
		bad = parse_bool(val, (bool *)field);
		break;
	case K_BYTES:
	case K_COUNT:
	case K_MS:
		bad = parse_scaled(val, o->kind, (__u64 *)field);
		break;
	case K_RATE:
		bad = parse_number(val, &v, &rest) || *rest;
		if (!bad)
			*(double *)field = v;
		break;
	case K_BURST:
		bad = parse_number(val, &v, &rest) || (*rest && strcmp(rest, "s"));
		if (!bad) {
			c->defaults.burst = v;
			c->defaults.burst_kind = *rest ? AG_BURST_SECONDS : AG_BURST_TOKENS;
		}
		break;
	case K_UNIT:
		if (!strcmp(val, "pps"))
			c->defaults.unit = AG_UNIT_PPS;
		else if (!strcmp(val, "bps"))
			c->defaults.unit = AG_UNIT_BPS;
		else
			bad = 1;
		break;
	case K_XDP_MODE:
		if (strcmp(val, "auto") && strcmp(val, "native") && strcmp(val, "generic"))
			bad = 1;
		else
			snprintf(field, o->size, "%s", val);
		break;
	}
	if (bad) {
		snprintf(buf, len, "%s: invalid value '%s' (expected %s)", o->name, val,
			 kind_expects(o->kind));
		return -1;
	}
	return 0;
}

static const struct opt *find_opt(const char *name)
{
	size_t i;

	for (i = 0; i < N_OPTS; i++)
		if (!strcmp(opts[i].name, name))
			return &opts[i];
	return NULL;
}

static char *trim(char *s)
{
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = 0;
	return s;
}

int agd_config_file(struct agd_config *c, const char *path, char *buf, size_t len)
{
	char line[8192], why[512];
	FILE *f = fopen(path, "re");
	int lineno = 0, rc = 0;

	if (!f) {
		snprintf(buf, len, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *key, *val, *eq, *hash;
		const struct opt *o;

		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			snprintf(buf, len, "%s:%d: line too long", path, lineno);
			rc = -1;
			break;
		}
		hash = strchr(line, '#');
		if (hash)
			*hash = 0;
		key = trim(line);
		if (!*key)
			continue;
		eq = strchr(key, '=');
		if (!eq) {
			snprintf(buf, len, "%s:%d: expected 'key = value'", path, lineno);
			rc = -1;
			break;
		}
		*eq = 0;
		val = trim(eq + 1);
		key = trim(key);
		o = find_opt(key);
		if (!o) {
			snprintf(buf, len, "%s:%d: unknown key '%s'", path, lineno, key);
			rc = -1;
			break;
		}
		if (!strcmp(key, "config")) {
			snprintf(buf, len, "%s:%d: 'config' cannot be set in a config file", path,
				 lineno);
			rc = -1;
			break;
		}
		if (set_opt(c, o, val, why, sizeof(why))) {
			snprintf(buf, len, "%s:%d: %s", path, lineno, why);
			rc = -1;
			break;
		}
	}
	fclose(f);
	return rc;
}

void agd_usage(FILE *f)
{
	size_t i;

	fprintf(f, "Usage: agentgated [OPTIONS]\n\n"
		   "agentgated turns user ratings of AI agents into the refill rates of their\n"
		   "token buckets in the agentgate XDP datapath, and serves the HTTP API.\n\n"
		   "Options (each also a config file key without the dashes):\n");
	for (i = 0; i < N_OPTS; i++) {
		char left[64];

		snprintf(left, sizeof(left), "--%s%s%s", opts[i].name, opts[i].arg ? " " : "",
			 opts[i].arg ? opts[i].arg : "");
		fprintf(f, "  %-28s %s\n", left, opts[i].help);
	}
	fprintf(f, "  %-28s %s\n  %-28s %s\n", "-h, --help", "show this help", "-V, --version",
		"show the version");
}

/* Pass 1 finds --config (and --help/--version); pass 2 applies the rest
 * over the file's values, so flags override the file. */
enum agd_parse_result agd_config_load(struct agd_config *c, int argc, char **argv)
{
	struct option lopts[N_OPTS + 3];
	char why[1024];
	unsigned long long list_seen = 0;
	size_t i;
	int ch, pass;

	for (i = 0; i < N_OPTS; i++)
		lopts[i] = (struct option){ opts[i].name,
					    opts[i].kind == K_FLAG ? no_argument : required_argument,
					    NULL, (int)(1000 + i) };
	lopts[N_OPTS] = (struct option){ "help", no_argument, NULL, 'h' };
	lopts[N_OPTS + 1] = (struct option){ "version", no_argument, NULL, 'V' };
	lopts[N_OPTS + 2] = (struct option){ NULL, 0, NULL, 0 };

	agd_config_defaults(c);
	for (pass = 1; pass <= 2; pass++) {
		optind = 1;
		opterr = pass == 1;
		while ((ch = getopt_long(argc, argv, "hVc:", lopts, NULL)) != -1) {
			const struct opt *o = ch >= 1000 ? &opts[ch - 1000] : NULL;

			if (ch == 'h') {
				agd_usage(stdout);
				return AGD_EXIT_OK;
			}
			if (ch == 'V') {
				printf("agentgated %s\n", AG_VERSION);
				return AGD_EXIT_OK;
			}
			if (ch == 'c')
				o = find_opt("config");
			if (!o) {
				fprintf(stderr, "Try 'agentgated --help'.\n");
				return AGD_EXIT_USAGE;
			}
			if (pass == 1 && strcmp(o->name, "config"))
				continue;
			if (pass == 2 && !strcmp(o->name, "config"))
				continue;
			/* A list on the command line replaces the file's list. */
			if (pass == 2 && o->kind == K_LIST && !(list_seen & (1ULL << (o - opts)))) {
				list_seen |= 1ULL << (o - opts);
				*(o->off == offsetof(struct agd_config, attach) ? &c->n_attach
									 : &c->n_nats) = 0;
			}
			if (set_opt(c, o, o->kind == K_FLAG ? "yes" : optarg, why, sizeof(why))) {
				fprintf(stderr, "agentgated: --%s\n", why);
				return AGD_EXIT_USAGE;
			}
			if (pass == 1)
				c->config_given = true;
		}
		if (pass == 1 && optind < argc) {
			fprintf(stderr, "agentgated: unexpected argument '%s'\n", argv[optind]);
			return AGD_EXIT_USAGE;
		}
		if (pass == 1 && (c->config_given || access(c->config, F_OK) == 0) &&
		    agd_config_file(c, c->config, why, sizeof(why))) {
			fprintf(stderr, "agentgated: %s\n", why);
			return AGD_EXIT_USAGE;
		}
	}
	return AGD_RUN;
}
