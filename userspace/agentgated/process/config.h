/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * agentgated's settings: built-in defaults, then the config file, then the
 * command line. One table (opts[] in config.c) has a row per setting: its
 * flag (--name) and config-file key (the same name), its kind, argument,
 * default, bounds, whether SIGHUP applies it, and its help text. Parsing,
 * the defaults, the bounds check, the reload warning, --help and the check
 * of the manual page (--check-man) all come from it.
 *
 * Config file: "key = value" lines, '#' starts a comment, repeatable keys
 * (attach, nats) may appear more than once.
 */
#ifndef AGENTGATED_CONFIG_H
#define AGENTGATED_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <linux/types.h>

#include "core/policy.h"
#include "ingest/ingest.h" /* the dead-letter file's name and bounds */
#include "core/err.h"

#define AGD_STATE_DIR_DEFAULT "/var/lib/agentgate"
#define AGD_LISTEN_DEFAULT "127.0.0.1:9470"
#define AGD_CONFIG_DEFAULT "/etc/agentgate/agentgated.conf"
#define AGD_LIST_MAX 16
#define AGD_THREADS_MAX 20000 /* HTTP workers plus WebSocket clients */

struct agd_config {
	char config[4096];
	bool config_given; /* --config named it: it must exist */
	char pin_path[4096];
	char state_dir[4096];
	char listen[256];
	char attach[AGD_LIST_MAX][32];
	size_t n_attach;
	char xdp_mode[16];
	char auth_key_file[4096];
	char auth_keys[4096];          /* a directory of keys */
	char auth_revoked[4096];       /* the operator's denylist */
	char auth_max_lifetime[256];   /* SCOPE=TIME,... */
	char tls_cert[4096], tls_key[4096];
	__u64 max_body;
	char ingest_socket[108];
	char control_socket[108]; /* "": <state dir>/control.sock */
	bool use_stdin;
	__u64 dead_letter_max; /* bytes of the dead-letter file before it rotates */
	char nats[AGD_LIST_MAX][256];
	size_t n_nats;
	char node[64];
	__u64 nats_replicas;
	__u64 nats_timeout_ms;
	__u64 nats_batch;
	__u64 fleet_interval_ms;
	double fleet_floor;
	char rule_feed[AGD_LIST_MAX][1100]; /* AGENT=SOURCE */
	size_t n_rule_feed;
	__u64 rule_feed_interval_ms, rule_feed_timeout_ms;
	double rule_feed_max_shrink;
	__u64 rule_feed_max_bytes, rule_feed_max_prefixes;
	char rule_feed_ca[4096]; /* "": the system's trust store */
	char user[256];       /* --user: the account to switch to after setup */
	char read_group[256]; /* --read-group: may read the pins and the state */

	struct agd_policy defaults;
	bool auto_create;
	__u64 agent_ttl_ms;    /* defaults.ttl, in ms as parsed */
	char agent_full[16];   /* refuse | evict */
	char anonymous_ratings[16]; /* each | shared | refuse */
	char rating_fields[1024];   /* FIELD=NAME,... */
	double rating_user_rate, rating_token_rate;
	double rating_max_change;
	__u64 rating_change_window_ms;
	__u64 charge_max_debt_ms;
	__u64 rating_wave;
	double rating_user_cap;
	bool rating_wave_hold;
	__u64 dedup_window_ms;
	__u64 dedup_max;
	__u64 metrics_max_agents;
	__u64 max_agents;
	__u64 store_size;
	__u64 queue_max;
	__u64 threads;
	__u64 request_timeout_ms;
	__u64 stream_max_clients, stream_max_per_ip, stream_queue;
	__u64 stream_max_lag_ms, stream_ping_ms;
	bool quiet;
};

enum agd_parse_result {
	AGD_RUN = 0,
	AGD_EXIT_OK = 1, /* --help, --version printed; --check-man found no problem */
	AGD_EXIT_USAGE = 2,
};

void agd_config_defaults(struct agd_config *c);

/* Command line (with the config file it names, or the default one when it
 * exists). Errors are printed to stderr. */
enum agd_parse_result agd_config_load(struct agd_config *c, int argc, char **argv);

/* The file alone: 0, or -1 with the error (file:line: ...) in buf. */
int agd_config_file(struct agd_config *c, const char *path, struct agd_err *err);

/* The help text, from the table. */
void agd_usage(FILE *f);

/* The table's bounds of each numeric setting (those of the fleet only with
 * --nats): 0, or -1 with "NAME is VALUE; it must be BOUNDS" in buf. Checks
 * across settings are the caller's. */
int agd_config_check(const struct agd_config *c, struct agd_err *err);

/* The next setting, from *iter on (start at 0), that SIGHUP does not apply
 * and whose value differs between old and c; NULL after the last. */
const char *agd_config_restart_change(const struct agd_config *old, const struct agd_config *c,
				      size_t *iter);

#endif
