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
#include "config_int.h"

#ifndef AG_VERSION
#define AG_VERSION "0.1.0"
#endif

#define F(field) .off = offsetof(struct agd_config, field), \
		 .size = sizeof(((struct agd_config *)0)->field)
#define FL(field, count) .off = offsetof(struct agd_config, field), \
			 .size = sizeof(((struct agd_config *)0)->field[0]), \
			 .count_off = offsetof(struct agd_config, count)
#define AT_LEAST(lo) .bounds = B_MIN, .min = (lo)
#define RANGE(lo, hi) .bounds = B_MIN | B_MAX, .min = (lo), .max = (hi)
#define AT_MOST(hi) .bounds = B_MAX, .max = (hi)
#define ABOVE_AT_MOST(lo, hi) .bounds = B_ABOVE | B_MAX, .min = (lo), .max = (hi)
#define STR_(x) #x
#define STR(x) STR_(x)

const struct opt agd_opts[] = {
	{ "config", K_STR, F(config), .arg = "FILE", .def = AGD_CONFIG_DEFAULT, .cli_only = true,
	  .help = "config file; without --config, read only when it exists" },
	{ "pin-path", K_STR, F(pin_path), .arg = "DIR", .def = AG_PIN_ROOT_DEFAULT,
	  .help = "bpffs directory of the pinned maps" },
	{ "state-dir", K_STR, F(state_dir), .arg = "DIR", .def = AGD_STATE_DIR_DEFAULT,
	  .help = "LMDB state, audit log, dead letters" },
	{ "listen", K_STR, F(listen), .arg = "ADDR:PORT", .def = AGD_LISTEN_DEFAULT,
	  .help = "HTTP listener: ADDR:PORT or [IPV6]:PORT" },
	{ "attach", K_LIST, FL(attach, n_attach), .arg = "DEV", .reload = true,
	  .help = "attach the XDP program to DEV" },
	{ "xdp-mode", K_XDP_MODE, F(xdp_mode), .arg = "MODE", .def = "auto", .reload = true,
	  .help = "auto, native or generic" },
	{ "auth-key-file", K_STR, F(auth_key_file), .arg = "FILE", .reload = true,
	  .help = "a key for bearer tokens: an HS256 secret or a PEM public key (RS256, ES256, "
		  "EdDSA); a key is required unless listening on loopback" },
	{ "auth-keys", K_STR, F(auth_keys), .arg = "DIR", .reload = true,
	  .help = "keys chosen by the token's kid: DIR/KID.pem public keys, DIR/KID.hs256 "
		  "secrets, DIR/KID.retired makes one verify only" },
	{ "auth-revoked", K_STR, F(auth_revoked), .arg = "FILE", .reload = true,
	  .help = "denylist of tokens: lines 'jti ID' and 'sub SUBJECT'" },
	{ "auth-max-lifetime", K_STR, F(auth_max_lifetime), .arg = "SCOPE=TIME,...",
	  .def = "stream:read=15m,*=24h", .reload = true,
	  .help = "longest token lifetime (exp - iat) per scope and for any token (*); 0: none" },
	{ "tls-cert", K_STR, F(tls_cert), .arg = "FILE", .help = "TLS certificate (PEM)" },
	{ "tls-key", K_STR, F(tls_key), .arg = "FILE", .help = "TLS private key (PEM)" },
	{ "max-body", K_BYTES, F(max_body), .arg = "BYTES", .def = "1MiB", AT_LEAST(1),
	  .reload = true, .help = "largest request body" },
	{ "ingest-socket", K_STR, F(ingest_socket), .arg = "PATH",
	  .help = "read NDJSON ratings from a Unix socket" },
	{ "control-socket", K_STR, F(control_socket), .arg = "PATH",
	  .def_doc = "control.sock in the state dir",
	  .help = "where the CLI's changes arrive while this daemon owns the pin root" },
	{ "stdin", K_FLAG, F(use_stdin), .help = "read NDJSON ratings from standard input" },
	{ "dead-letter-max", K_BYTES, F(dead_letter_max), .arg = "BYTES", .def = "16MiB",
	  AT_LEAST(AGD_DEAD_LETTER_MAX_MIN),
	  .help = "size at which " AGD_DEAD_LETTER_FILE " becomes " AGD_DEAD_LETTER_FILE ".1, "
		  "replacing it" },
	{ "nats", K_LIST, FL(nats, n_nats), .arg = "URL",
	  .help = "NATS server of the fleet" },
	{ "node", K_STR, F(node), .arg = "NAME", .def_doc = "the host name", .nonempty = true,
	  .help = "this host's name in the fleet: A-Z a-z 0-9 _ -, at most 32" },
	{ "nats-replicas", K_COUNT, F(nats_replicas), .arg = "N", .def = "1", RANGE(1, 5),
	  .fleet = true,
	  .help = "replicas of the fleet's stream and KV bucket when this host creates them" },
	{ "nats-timeout", K_MS, F(nats_timeout_ms), .arg = "TIME", .def = "2s", AT_LEAST(100),
	  .fleet = true,
	  .help = "wait this long for JetStream to take a rating before keeping it in the outbox" },
	{ "nats-batch", K_COUNT, F(nats_batch), .arg = "N", .def = "256", RANGE(1, 4096),
	  .fleet = true,
	  .help = "most ratings in one stream message, once every host's consumer reads such "
		  "messages; 1: a message per rating" },
	{ "fleet-interval", K_MS, F(fleet_interval_ms), .arg = "TIME", .def = "1s", AT_LEAST(100),
	  .fleet = true, .help = "how often demand is published and shares recomputed" },
	{ "fleet-floor", K_RATE, F(fleet_floor), .arg = "F", .def = "0.05", ABOVE_AT_MOST(0, 1),
	  .fleet = true, .help = "least share of an agent's fleet rate a host keeps" },
	{ "rule-feed", K_LIST, FL(rule_feed, n_rule_feed), .arg = "AGENT=SOURCE", .reload = true,
	  .help = "the agent's rules are the prefixes its operator publishes at SOURCE: a path, "
		  "file:///PATH or an http(s) URL, JSON {\"prefixes\": [{\"ipv4Prefix\": ...}]} "
		  "or one prefix a line" },
	{ "rule-feed-interval", K_MS, F(rule_feed_interval_ms), .arg = "TIME", .def = "1h",
	  RANGE(1000, 2592000000.0), .reload = true,
	  .help = "how often a feed's source is read again (conditional requests)" },
	{ "rule-feed-timeout", K_MS, F(rule_feed_timeout_ms), .arg = "TIME", .def = "30s",
	  RANGE(100, 600000), .reload = true, .help = "longest fetch of a feed" },
	{ "rule-feed-ca", K_STR, F(rule_feed_ca), .arg = "FILE", .reload = true,
	  .help = "CA certificates (PEM) https feeds are checked against instead of the "
		  "system's" },
	{ "rule-feed-max-shrink", K_RATE, F(rule_feed_max_shrink), .arg = "F", .def = "0.5",
	  RANGE(0, 1), .reload = true,
	  .help = "a refresh that would drop more than this fraction of a feed's prefixes is "
		  "refused and the last good set kept; 1: any" },
	{ "rule-feed-max-bytes", K_BYTES, F(rule_feed_max_bytes), .arg = "BYTES", .def = "16MiB",
	  RANGE(1024, 1073741824.0), .reload = true, .help = "largest feed accepted" },
	{ "rule-feed-max-prefixes", K_COUNT, F(rule_feed_max_prefixes), .arg = "N",
	  .def = "200000", RANGE(1, 16777216), .reload = true,
	  .help = "most prefixes one feed may hold" },
	/* The policy rows: defaults from agd_policy_defaults(), checked whole by
	 * agd_policy_check() in check_settings. */
	{ "rate", K_RATE, F(defaults.r0), .arg = "R", .reload = true,
	  .help = "default initial rate r0, tokens/s" },
	{ "alpha", K_RATE, F(defaults.alpha), .arg = "A", .reload = true,
	  .help = "default tokens/s per point of reward" },
	{ "r-min", K_RATE, F(defaults.r_min), .arg = "R", .reload = true,
	  .help = "default lowest rate" },
	{ "r-max", K_RATE, F(defaults.r_max), .arg = "R", .reload = true,
	  .help = "default highest rate" },
	{ "burst", K_BURST, F(defaults.burst), .arg = "B", .reload = true,
	  .help = "default burst: tokens, or seconds of rate as 1s" },
	{ "unit", K_UNIT, F(defaults.unit), .arg = "UNIT", .reload = true,
	  .help = "default unit: pps, bps or conn" },
	{ "auto-create", K_BOOL, F(auto_create), .arg = "yes|no", .def = "yes", .reload = true,
	  .help = "a rating for an unknown agent creates it" },
	{ "rating-fields", K_STR, F(rating_fields), .arg = "FIELD=NAME,...",
	  .help = "more names for the rating fields (id, agent, user, score, ts, comment), "
		  "as other pipelines write them" },
	{ "rating-user-rate", K_RATE, F(rating_user_rate), .arg = "R", .def = "0",
	  RANGE(0, 1e6), .reload = true,
	  .help = "ratings per second one user may send over HTTP (burst 10 s of it); 0: any" },
	{ "rating-token-rate", K_RATE, F(rating_token_rate), .arg = "R", .def = "0",
	  RANGE(0, 1e7), .reload = true,
	  .help = "ratings per second one API token (its sub) may send; 0: any" },
	{ "rating-max-change", K_RATE, F(rating_max_change), .arg = "F", .def = "0",
	  RANGE(0, 100), .reload = true,
	  .help = "ratings move an agent's rate at most F times its rate at the start of a "
		  "change window, either way; 0: no limit" },
	{ "rating-user-cap", K_RATE, F(rating_user_cap), .arg = "POINTS", .def = "2",
	  ABOVE_AT_MOST(0, 2), .reload = true,
	  .help = "one user's voice counts for at most POINTS score points from neutral (3), "
		  "either way: it moves an agent at most alpha*POINTS; 2: the whole scale" },
	{ "charge-max-debt", K_MS, F(charge_max_debt_ms), .arg = "TIME", .def = "60s",
	  RANGE(0, 31622400000.0), .reload = true,
	  .help = "POST /v1/agents/{a}/charge takes a bucket at most TIME of its refill below "
		  "empty (the rest is forgiven)" },
	{ "rating-change-window", K_MS, F(rating_change_window_ms), .arg = "TIME", .def = "1h",
	  RANGE(1000, 2592000000.0), .reload = true,
	  .help = "the window of --rating-max-change, from an agent's first rating in it" },
	{ "rating-wave", K_COUNT, F(rating_wave), .arg = "N", .def = "0", RANGE(0, 1000000),
	  .reload = true,
	  .help = "flag a wave when N users rate an agent for the first time within its change "
		  "window, one way; 0: off" },
	{ "rating-wave-hold", K_BOOL, F(rating_wave_hold), .arg = "yes|no", .def = "no",
	  .reload = true, .help = "a wave pins the agent's rate until an operator unpins it" },
	{ "anonymous-ratings", K_STR, F(anonymous_ratings), .arg = "each|shared|refuse",
	  .def = "each", .reload = true,
	  .help = "a rating without a user: a voice of its own, one shared voice per agent, "
		  "or refused" },
	{ "agent-ttl", K_MS, F(agent_ttl_ms), .arg = "TIME", .def = "24h",
	  RANGE(0, 315360000000.0), .reload = true,
	  .help = "idle TTL of agents a rating or /bucket creates, whole seconds; 0: never" },
	{ "agent-full", K_STR, F(agent_full), .arg = "refuse|evict", .def = "refuse",
	  .reload = true,
	  .help = "no free slot for a new agent: refuse it, or evict the longest-idle agent "
		  "with a TTL" },
	{ "dedup-window", K_MS, F(dedup_window_ms), .arg = "TIME", .def = "24h", .reload = true,
	  .help = "how long rating ids are remembered" },
	{ "dedup-max", K_COUNT, F(dedup_max), .arg = "N", .def = "10M", .reload = true,
	  .help = "most rating ids remembered" },
	{ "metrics-max-agents", K_COUNT, F(metrics_max_agents), .arg = "N", .def = "1000",
	  .reload = true, .help = "agents with their own metric labels, busiest first" },
	{ "max-agents", K_COUNT, F(max_agents), .arg = "N", .def = STR(AG_MAX_AGENTS_DEFAULT),
	  RANGE(1, AG_MAX_AGENTS_LIMIT), .help = "agent slots when the maps are created" },
	{ "store-size", K_BYTES, F(store_size), .arg = "BYTES", .def = "4GiB", AT_LEAST(1 << 20),
	  .help = "largest size of the LMDB state file" },
	{ "queue-max", K_COUNT, F(queue_max), .arg = "N", .def = "1M", AT_LEAST(1),
	  .help = "ratings waiting to be applied before ingest waits" },
	/* threads plus stream-max-clients at most AGD_THREADS_MAX: check_settings. */
	{ "threads", K_COUNT, F(threads), .arg = "N", .def = "64", RANGE(1, AGD_THREADS_MAX),
	  .help = "HTTP worker threads: requests that may wait, served at once" },
	{ "request-timeout", K_MS, F(request_timeout_ms), .arg = "TIME", .def = "10s",
	  .help = "time a client has to send a request" },
	{ "stream-max-clients", K_COUNT, F(stream_max_clients), .arg = "N", .def = "256",
	  AT_MOST(AGD_THREADS_MAX),
	  .help = "WebSocket /v1/stream clients at once (a sender thread each)" },
	{ "stream-max-per-ip", K_COUNT, F(stream_max_per_ip), .arg = "N", .def = "16", AT_LEAST(1),
	  .help = "WebSocket clients from one source address" },
	{ "stream-queue", K_COUNT, F(stream_queue), .arg = "N", .def = "1024", RANGE(1, 1000000),
	  .help = "updates waiting per WebSocket client; beyond, they coalesce per topic" },
	{ "stream-max-lag", K_MS, F(stream_max_lag_ms), .arg = "TIME", .def = "10s", AT_LEAST(100),
	  .help = "a WebSocket client this far behind is disconnected" },
	{ "stream-ping", K_MS, F(stream_ping_ms), .arg = "TIME", .def = "15s", AT_LEAST(100),
	  .help = "ping an idle WebSocket client this often; 5 unanswered close it" },
	{ "user", K_STR, F(user), .arg = "USER",
	  .help = "after setup, run as this account (and its groups), keeping only the "
		  "capabilities in use" },
	{ "read-group", K_STR, F(read_group), .arg = "GROUP", .def_doc = "the owner alone",
	  .help = "this group may read the pins and the state, for the CLI's reading commands" },
	{ "quiet", K_FLAG, F(quiet), .reload = true, .help = "log errors and warnings only" },
};

const size_t agd_n_opts = sizeof(agd_opts) / sizeof(agd_opts[0]);
#define N_OPTS (sizeof(agd_opts) / sizeof(agd_opts[0]))

static int set_opt(struct agd_config *c, const struct opt *o, const char *val,
		   struct agd_err *buf);

void agd_config_defaults(struct agd_config *c)
{
	struct agd_err why = { 0 };
	size_t i;

	memset(c, 0, sizeof(*c));
	agd_policy_defaults(&c->defaults);
	for (i = 0; i < N_OPTS; i++) {
		const struct opt *o = &agd_opts[i];

		/* The table itself is wrong: no start could succeed. */
		if (o->bounds && o->kind != K_BYTES && o->kind != K_COUNT && o->kind != K_MS &&
		    o->kind != K_RATE) {
			fprintf(stderr, "agentgated: %s: bounds on a setting that is no number\n",
				o->name);
			abort();
		}
		if (o->def && set_opt(c, o, o->def, &why)) {
			fprintf(stderr, "agentgated: built-in default of %s\n", why.msg);
			abort();
		}
	}
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
		return "pps, bps or conn";
	case K_XDP_MODE:
		return "auto, native or generic";
	default:
		return "shorter text";
	}
}

/* Sets one option; 0, or -EINVAL with the reason in err. */
static int set_opt(struct agd_config *c, const struct opt *o, const char *val,
		   struct agd_err *buf)
{
	char *field = (char *)c + o->off;
	const char *rest;
	double v;
	int bad = 0;

	switch (o->kind) {
	case K_STR:
		/* An empty node name would silently mean "the host name". */
		if (!*val && o->nonempty) {
			return agd_errf(buf, -EINVAL, "%s: must not be empty", o->name);
		}
		if (strlen(val) >= o->size)
			bad = 1;
		else
			snprintf(field, o->size, "%s", val);
		break;
	case K_LIST: {
		size_t *n = (size_t *)((char *)c + o->count_off);

		if (*n >= AGD_LIST_MAX) {
			return agd_errf(buf, -EINVAL,
				"%s: at most %d given", o->name, AGD_LIST_MAX);
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
			c->defaults.burst_kind = *rest ? AGD_BURST_SECONDS : AGD_BURST_TOKENS;
		}
		break;
	case K_UNIT:
		if (ag_unit_parse(val, &c->defaults.unit))
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
		return agd_errf(buf, -EINVAL, "%s: invalid value '%s' (expected %s)", o->name, val,
			 kind_expects(o->kind));
	}
	return 0;
}

static const struct opt *find_opt(const char *name)
{
	size_t i;

	for (i = 0; i < N_OPTS; i++)
		if (!strcmp(agd_opts[i].name, name))
			return &agd_opts[i];
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

int agd_config_file(struct agd_config *c, const char *path, struct agd_err *err)
{
	struct agd_err why = { 0 };
	char line[8192];
	FILE *f = fopen(path, "re");
	int lineno = 0, rc = 0;

	if (!f)
		return agd_errf(err, -EINVAL, "%s: %s", path, strerror(errno));
	while (!rc && fgets(line, sizeof(line), f)) {
		char *key, *val, *eq, *hash;
		const struct opt *o;

		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			rc = agd_errf(err, -EINVAL, "%s:%d: line too long", path, lineno);
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
			rc = agd_errf(err, -EINVAL, "%s:%d: expected 'key = value'", path, lineno);
			break;
		}
		*eq = 0;
		val = trim(eq + 1);
		key = trim(key);
		o = find_opt(key);
		if (!o)
			rc = agd_errf(err, -EINVAL, "%s:%d: unknown key '%s'", path, lineno, key);
		else if (o->cli_only)
			rc = agd_errf(err, -EINVAL,
				"%s:%d: '%s' cannot be set in a config file", path,
				      lineno, key);
		else if (set_opt(c, o, val, &why))
			rc = agd_errf(err, -EINVAL, "%s:%d: %s", path, lineno, why.msg);
	}
	fclose(f);
	return rc;
}

/* ---- values as text: defaults and bounds as --help and the manual say them -- */

/* In the kind's largest unit that keeps the value whole (65536 bytes: 64KiB,
 * 86400000 ms: 24h, 10000000: 10M); the parser reads each of them back. */
static void fmt_scaled(enum kind kind, __u64 v, char *buf, size_t len)
{
	static const char *const bytes_n[] = { "GiB", "MiB", "KiB" };
	static const __u64 bytes_m[] = { 1ULL << 30, 1ULL << 20, 1ULL << 10 };
	static const char *const count_n[] = { "G", "M" };
	static const __u64 count_m[] = { 1000000000ULL, 1000000ULL };
	static const char *const ms_n[] = { "h", "m", "s" };
	static const __u64 ms_m[] = { 3600000ULL, 60000ULL, 1000ULL };
	const char *const *names = kind == K_BYTES ? bytes_n : kind == K_COUNT ? count_n : ms_n;
	const __u64 *mults = kind == K_BYTES ? bytes_m : kind == K_COUNT ? count_m : ms_m;
	size_t i, n = kind == K_COUNT ? 2 : 3;

	for (i = 0; i < n && v; i++)
		if (v % mults[i] == 0) {
			snprintf(buf, len, "%llu%s", (unsigned long long)(v / mults[i]), names[i]);
			return;
		}
	snprintf(buf, len, "%llu%s", (unsigned long long)v, kind == K_MS ? "ms" : "");
}

/* A number of a numeric row (a bound, or its value). */
static void fmt_number(const struct opt *o, double v, char *buf, size_t len)
{
	if (o->kind == K_RATE)
		snprintf(buf, len, "%.15g", v);
	else
		fmt_scaled(o->kind, (__u64)v, buf, len);
}

static double num_value(const struct opt *o, const struct agd_config *c)
{
	const char *field = (const char *)c + o->off;

	return o->kind == K_RATE ? *(const double *)field : (double)*(const __u64 *)field;
}

/* The row's value in c; false when it has none to show (an empty text, a
 * flag, a list). */
static bool fmt_value(const struct opt *o, const struct agd_config *c, char *buf, size_t len)
{
	const char *field = (const char *)c + o->off;

	switch (o->kind) {
	case K_STR:
	case K_XDP_MODE:
		snprintf(buf, len, "%s", field);
		return *field;
	case K_BOOL:
		snprintf(buf, len, "%s", *(const bool *)field ? "yes" : "no");
		return true;
	case K_BYTES:
	case K_COUNT:
	case K_MS:
	case K_RATE:
		fmt_number(o, num_value(o, c), buf, len);
		return true;
	case K_BURST:
		snprintf(buf, len, "%.15g%s", c->defaults.burst,
			 c->defaults.burst_kind == AGD_BURST_SECONDS ? "s" : "");
		return true;
	case K_UNIT:
		snprintf(buf, len, "%s", ag_unit_name(c->defaults.unit));
		return true;
	default:
		return false;
	}
}

/* The default (d: agd_config_defaults), as the value formats or in words. */
bool agd_opt_default_text(const struct opt *o, const struct agd_config *d, char *buf, size_t len)
{
	if (o->def_doc) {
		snprintf(buf, len, "%s", o->def_doc);
		return true;
	}
	return fmt_value(o, d, buf, len);
}

/* "1 to 5", "at least 64KiB", "above 0 and at most 1". */
bool agd_opt_bounds_text(const struct opt *o, char *buf, size_t len)
{
	char lo[64], hi[64];

	if (!o->bounds)
		return false;
	fmt_number(o, o->min, lo, sizeof(lo));
	fmt_number(o, o->max, hi, sizeof(hi));
	if ((o->bounds & B_MIN) && (o->bounds & B_MAX))
		snprintf(buf, len, "%s to %s", lo, hi);
	else if (o->bounds & B_MIN)
		snprintf(buf, len, "at least %s", lo);
	else if ((o->bounds & B_ABOVE) && (o->bounds & B_MAX))
		snprintf(buf, len, "above %s and at most %s", lo, hi);
	else if (o->bounds & B_ABOVE)
		snprintf(buf, len, "above %s", lo);
	else
		snprintf(buf, len, "at most %s", hi);
	return true;
}

int agd_config_check(const struct agd_config *c, struct agd_err *buf)
{
	char val[64], bound[160];
	size_t i;

	for (i = 0; i < N_OPTS; i++) {
		const struct opt *o = &agd_opts[i];
		double v;

		if (!o->bounds || (o->fleet && !c->n_nats))
			continue;
		v = num_value(o, c);
		if ((!(o->bounds & B_MIN) || v >= o->min) && (!(o->bounds & B_ABOVE) || v > o->min) &&
		    (!(o->bounds & B_MAX) || v <= o->max))
			continue;
		fmt_value(o, c, val, sizeof(val));
		agd_opt_bounds_text(o, bound, sizeof(bound));
		return agd_errf(buf, -EINVAL, "%s is %s; it must be %s%s", o->name, val, bound,
			 o->fleet ? " (with --nats)" : "");
	}
	return 0;
}

static bool same_value(const struct opt *o, const struct agd_config *a, const struct agd_config *b)
{
	const char *x = (const char *)a + o->off, *y = (const char *)b + o->off;
	size_t i, n;

	switch (o->kind) {
	case K_STR:
	case K_XDP_MODE:
		return !strncmp(x, y, o->size);
	case K_LIST:
		n = *(const size_t *)((const char *)a + o->count_off);
		if (n != *(const size_t *)((const char *)b + o->count_off))
			return false;
		for (i = 0; i < n; i++)
			if (strncmp(x + i * o->size, y + i * o->size, o->size))
				return false;
		return true;
	case K_BURST:
		return a->defaults.burst == b->defaults.burst &&
		       a->defaults.burst_kind == b->defaults.burst_kind;
	default:
		return !memcmp(x, y, o->size);
	}
}

const char *agd_config_restart_change(const struct agd_config *old, const struct agd_config *c,
				      size_t *iter)
{
	while (*iter < N_OPTS) {
		const struct opt *o = &agd_opts[(*iter)++];

		if (!o->reload && !same_value(o, old, c))
			return o->name;
	}
	return NULL;
}

/* Pass 1 finds --config (and --help/--version); pass 2 applies the rest
 * over the file's values, so flags override the file. */
enum agd_parse_result agd_config_load(struct agd_config *c, int argc, char **argv)
{
	struct option lopts[N_OPTS + 4];
	struct agd_err why = { 0 };
	unsigned long long list_seen = 0;
	size_t i;
	int ch, pass;

	for (i = 0; i < N_OPTS; i++)
		lopts[i] = (struct option){ agd_opts[i].name,
					    agd_opts[i].kind == K_FLAG ? no_argument : required_argument,
					    NULL, (int)(1000 + i) };
	lopts[N_OPTS] = (struct option){ "help", no_argument, NULL, 'h' };
	lopts[N_OPTS + 1] = (struct option){ "version", no_argument, NULL, 'V' };
	lopts[N_OPTS + 2] = (struct option){ "check-man", required_argument, NULL, 'M' };
	lopts[N_OPTS + 3] = (struct option){ NULL, 0, NULL, 0 };

	agd_config_defaults(c);
	for (pass = 1; pass <= 2; pass++) {
		optind = 1;
		opterr = pass == 1;
		while ((ch = getopt_long(argc, argv, "hVc:", lopts, NULL)) != -1) {
			const struct opt *o = ch >= 1000 ? &agd_opts[ch - 1000] : NULL;

			if (ch == 'h') {
				agd_usage(stdout);
				return AGD_EXIT_OK;
			}
			if (ch == 'V') {
				printf("agentgated %s\n", AG_VERSION);
				return AGD_EXIT_OK;
			}
			if (ch == 'M') {
				if (agd_man_check(optarg))
					return AGD_EXIT_USAGE;
				printf("%s documents the %zu options of agentgated\n", optarg,
				       N_OPTS);
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
			if (pass == 2 && o->kind == K_LIST && !(list_seen & (1ULL << (o - agd_opts)))) {
				list_seen |= 1ULL << (o - agd_opts);
				*(size_t *)((char *)c + o->count_off) = 0;
			}
			if (set_opt(c, o, o->kind == K_FLAG ? "yes" : optarg, &why)) {
				fprintf(stderr, "agentgated: --%s\n", why.msg);
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
		    agd_config_file(c, c->config, &why)) {
			fprintf(stderr, "agentgated: %s\n", why.msg);
			return AGD_EXIT_USAGE;
		}
	}
	/* The policy's TTL is whole seconds (main.c refuses a fraction). */
	c->defaults.ttl = (double)(c->agent_ttl_ms / 1000);
	return AGD_RUN;
}
