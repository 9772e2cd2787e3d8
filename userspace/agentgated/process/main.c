// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * agentgated: the control daemon. Startup order: settings, state and maps
 * (the engine), XDP attachments, the HTTP API, the ingest streams; then the
 * main thread waits for signals: SIGHUP reloads the settings, SIGTERM and
 * SIGINT stop in the reverse order. The XDP program stays attached: the
 * datapath keeps enforcing the last rates while the daemon is down.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agentgate.h"
#include "config.h"
#include "api/control.h"
#include "core/engine.h"
#include "api/http.h"
#include "api/tls.h"
#include "ingest/feeds.h"
#include "ingest/ingest.h"
#include "fleet/fleet.h"
#include "privs.h"
#include "core/store.h"

/* Exit status (agentgated(8), EXIT STATUS). */
enum {
	EXIT_CLEAN = 0,
	EXIT_RUNTIME = 1, /* a failure at start: maps, listener, attach... */
	EXIT_USAGE = 2,   /* invalid options or configuration */
	EXIT_STORE = 3,   /* the state store refused: damaged, cut short, missing */
	EXIT_ACCOUNT = 4, /* --user (or the account run as) is shared */
};

/* SIGUSR2 wakes the main thread when the store is found damaged. */
#define STORE_SIGNAL SIGUSR2

static bool quiet;

static void logf_(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(int level, const char *fmt, ...)
{
	static const char *const names[] = { [AGD_LOG_ERR] = "error", [AGD_LOG_WARN] = "warning",
					     [AGD_LOG_INFO] = "info" };
	va_list ap;

	if (quiet && level > AGD_LOG_WARN)
		return;
	/* One line, whole: every thread logs here, and stderr is unbuffered
	 * (each call below is a write of its own). */
	flockfile(stderr);
	fprintf(stderr, "agentgated: %s: ", names[level] ? names[level] : "log");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	funlockfile(stderr);
}

static void lib_log(const char *msg)
{
	logf_(AGD_LOG_WARN, "%s", msg);
}

/* The settings that can change while running; 0, or -1 after logging. */
static int live_settings(const struct agd_config *c, struct agd_http_live *live)
{
	struct agd_err why = { 0 };
	int err;

	memset(live, 0, sizeof(*live));
	live->max_body = c->max_body;
	live->metrics_max_agents = c->metrics_max_agents;
	if (agd_lifetimes_parse(c->auth_max_lifetime, &live->life, &why)) {
		logf_(AGD_LOG_ERR, "--auth-max-lifetime: %s", why.msg);
		return -1;
	}
	if (agd_denylist_load(c->auth_revoked, &live->denylist, &why)) {
		logf_(AGD_LOG_ERR, "--auth-revoked: %s", why.msg);
		return -1;
	}
	if (c->auth_key_file[0] || c->auth_keys[0]) {
		err = agd_keyset_load(c->auth_key_file, c->auth_keys, &live->keys, &why);
		if (err) {
			logf_(AGD_LOG_ERR, "%s", why.msg);
			agd_denylist_free(live->denylist);
			live->denylist = NULL;
			return -1;
		}
		live->auth = true;
		return 0;
	}
	if (!agd_listen_is_loopback(c->listen)) {
		logf_(AGD_LOG_ERR, "refusing to serve %s without authentication: give "
		      "--auth-key-file or --auth-keys, or listen on loopback", c->listen);
		agd_denylist_free(live->denylist);
		live->denylist = NULL;
		return -1;
	}
	logf_(AGD_LOG_WARN, "authentication is off (loopback listener %s and no --auth-key-file)",
	      c->listen);
	return 0;
}

/* The address is checked before auth is decided on it (the HTTP layer
 * checks it again when it starts listening). */
static bool listen_ok(const char *listen)
{
	struct agd_err err = { 0 };

	if (agd_listen_check(listen, &err)) {
		logf_(AGD_LOG_ERR, "%s", err.msg);
		return false;
	}
	return true;
}

/* The checks across settings, after each setting's own bounds. */
static enum agd_anonymous anonymous_rule(const struct agd_config *c)
{
	return !strcmp(c->anonymous_ratings, "shared") ? AGD_ANON_SHARED :
	       !strcmp(c->anonymous_ratings, "refuse") ? AGD_ANON_REFUSE :
							 AGD_ANON_EACH;
}

static int cross_checks(const struct agd_config *c)
{
	struct agd_err why = { 0 };

	if (c->agent_ttl_ms % 1000) {
		logf_(AGD_LOG_ERR, "--agent-ttl: whole seconds (0: never)");
		return -1;
	}
	{
		/* Checked here, set once at start (the parsers read the names). */
		struct agd_err fe = { 0 };

		if (agd_rating_fields_check(c->rating_fields, &fe)) {
			logf_(AGD_LOG_ERR, "--rating-fields: %s", fe.msg);
			return -1;
		}
	}
	if (strcmp(c->anonymous_ratings, "each") && strcmp(c->anonymous_ratings, "shared") &&
	    strcmp(c->anonymous_ratings, "refuse")) {
		logf_(AGD_LOG_ERR, "--anonymous-ratings '%s': expected each, shared or refuse",
		      c->anonymous_ratings);
		return -1;
	}
	if (strcmp(c->agent_full, "refuse") && strcmp(c->agent_full, "evict")) {
		logf_(AGD_LOG_ERR, "--agent-full '%s': expected refuse or evict", c->agent_full);
		return -1;
	}
	if (agd_policy_check(&c->defaults, &why)) {
		logf_(AGD_LOG_ERR, "default policy: %s", why.msg);
		return -1;
	}
	if (c->node[0] && agd_fleet_node_check(c->node, &why)) {
		logf_(AGD_LOG_ERR, "--node: %s", why.msg);
		return -1;
	}
	if (agd_tls_check(c->tls_cert, c->tls_key, &why)) {
		logf_(AGD_LOG_ERR, "%s", why.msg);
		return -1;
	}
	if (c->rule_feed_ca[0] && access(c->rule_feed_ca, R_OK)) {
		logf_(AGD_LOG_ERR, "--rule-feed-ca %s: %s", c->rule_feed_ca, strerror(errno));
		return -1;
	}
	{
		size_t i;

		for (i = 0; i < c->n_rule_feed; i++) {
			const char *eq = strchr(c->rule_feed[i], '=');
			char agent[AG_NAME_MAX + 1];

			if (!eq || eq == c->rule_feed[i] || !eq[1] ||
			    (size_t)(eq - c->rule_feed[i]) > AG_NAME_MAX) {
				logf_(AGD_LOG_ERR, "--rule-feed '%s': expected AGENT=SOURCE",
				      c->rule_feed[i]);
				return -1;
			}
			snprintf(agent, sizeof(agent), "%.*s", (int)(eq - c->rule_feed[i]),
				 c->rule_feed[i]);
			if (ag_name_check(agent)) {
				logf_(AGD_LOG_ERR, "--rule-feed '%s': %s", c->rule_feed[i],
				      ag_errmsg());
				return -1;
			}
		}
	}
	/* Each is at most AGD_THREADS_MAX by its bounds: the sum cannot wrap. */
	if (c->threads + c->stream_max_clients > AGD_THREADS_MAX) {
		logf_(AGD_LOG_ERR, "threads plus stream-max-clients must be at most %u",
		      AGD_THREADS_MAX);
		return -1;
	}
	return 0;
}

/* Each setting within the bounds of its row in the option table
 * (config.c), then the checks across settings. */
static int check_settings(const struct agd_config *c)
{
	struct agd_err why = { 0 };

	if (agd_config_check(c, &why)) {
		logf_(AGD_LOG_ERR, "%s", why.msg);
		return -1;
	}
	return cross_checks(c);
}

static enum ag_xdp_mode xdp_mode(const char *m)
{
	return !strcmp(m, "native") ? AG_XDP_NATIVE : !strcmp(m, "generic") ? AG_XDP_GENERIC :
									   AG_XDP_AUTO;
}

static int attach_all(struct agd_engine *e, const struct agd_config *c)
{
	size_t i;

	for (i = 0; i < c->n_attach; i++) {
		/* A restart on its own link keeps the program running there when
		 * it is this version's: the program id does not change. */
		struct ag_attach_opts o = { .mode = xdp_mode(c->xdp_mode), .keep_same = true };
		struct ag_attach_result res;

		if (ag_attach_with(agd_engine_ctx(e), c->attach[i], &o, &res)) {
			logf_(AGD_LOG_ERR, "attach %s: %s", c->attach[i], ag_errmsg());
			return -1;
		}
		logf_(AGD_LOG_INFO, "attached to %s (%s, program %u%s)", c->attach[i],
		      res.mode == AG_XDP_NATIVE ? "native" : "generic", res.prog_id,
		      res.kept ? ", already running" : res.replaced ? ", replaced the previous one" : "");
		if (res.chained && res.next_prog_id)
			logf_(AGD_LOG_INFO, "on %s agentgate runs before program %u: what it passes "
			      "goes on to that program", c->attach[i], res.next_prog_id);
	}
	return 0;
}

/* Before the maps and the store are made: every device to attach exists
 * and carries Ethernet frames (a refusal later would leave them made). */
static int devices_ok(const struct agd_config *c)
{
	size_t i;

	for (i = 0; i < c->n_attach; i++) {
		if (ag_device_check(c->attach[i])) {
			logf_(AGD_LOG_ERR, "attach %s: %s", c->attach[i], ag_errmsg());
			return -1;
		}
	}
	return 0;
}

/* What to keep after setup (and the umask for what setup creates); 0,
 * or the exit status. */
static int plan_privileges(const struct agd_config *c, struct agd_privs *p)
{
	struct agd_privs_opts o = { .user = c->user, .read_group = c->read_group,
				    .listen = c->listen, .pin_path = c->pin_path,
				    .state_dir = c->state_dir };
	struct agd_err why = { 0 };
	int err = agd_privs_plan(&o, p, &why);

	if (!err)
		return 0;
	logf_(AGD_LOG_ERR, "%s", why.msg);
	return err == -EUSERS ? EXIT_ACCOUNT : EXIT_USAGE;
}

/* ---- the owner of the pin root ------------------------------------------------------ */

/* The control socket, bound and published in the owner record before the
 * privileges are dropped (the record's directory is root's); served after. */
static int open_control(const struct agd_config *c, struct agd_control **ctl)
{
	struct agd_err err = { 0 };
	struct ag_owner rec = { .version = 1 };
	char path[4200], cwd[4096];
	struct timespec ts;

	if (c->control_socket[0])
		snprintf(path, sizeof(path), "%s", c->control_socket);
	else
		snprintf(path, sizeof(path), "%s/" AGD_CONTROL_FILE, c->state_dir);
	if (path[0] != '/') { /* the CLI runs elsewhere */
		char rel[sizeof(path)];

		snprintf(rel, sizeof(rel), "%s", path);
		if (!getcwd(cwd, sizeof(cwd))) {
			logf_(AGD_LOG_ERR, "control socket %s: cannot resolve: %s", rel,
			      strerror(errno));
			return -1;
		}
		if (snprintf(path, sizeof(path), "%s/%s", cwd, rel) >= (int)sizeof(path))
			path[sizeof(path) - 1] = '\0'; /* refused below: too long */
	}
	if (agd_control_open(path, ctl, &err)) {
		logf_(AGD_LOG_ERR, "%s", err.msg);
		return -1;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	rec.pid = (__u32)getpid();
	rec.uid = (__u32)geteuid();
	rec.since_ms = (__u64)ts.tv_sec * 1000 + (__u64)ts.tv_nsec / 1000000;
	snprintf(rec.control, sizeof(rec.control), "%s", agd_control_path(*ctl));
	if (ag_owner_publish(c->pin_path, &rec)) {
		logf_(AGD_LOG_ERR, "%s", ag_errmsg());
		return -1;
	}
	return 0;
}

/* ---- a damaged store while running ---------------------------------------------- */

/* From a signal handler possibly: async-signal-safe. */
static void store_notify(void)
{
	kill(getpid(), STORE_SIGNAL);
}

/* LMDB failed one of its own assertions: its state cannot be trusted, and
 * it would abort() next. */
static void store_fatal(const char *why)
{
	logf_(AGD_LOG_ERR, "%s; exiting (status %d) instead of aborting: restore the store and "
	      "start again (agentgated(8), STATE STORE)", why, EXIT_STORE);
	_exit(EXIT_STORE);
}

/* Once, when the store was found damaged: logged, and not ready. */
static void store_damage(struct agd_http *h)
{
	static bool reported;
	struct agd_err why = { 0 };

	if (reported || !agd_store_damaged(&why))
		return;
	reported = true;
	logf_(AGD_LOG_ERR, "%s: changes are refused and /readyz answers 503; the datapath goes on "
	      "enforcing the last rates. Restore the store and restart (agentgated(8), STATE "
	      "STORE)", why.msg);
	if (h)
		agd_http_set_ready(h, false, "the state store is damaged (see the log)");
}

/* The engine's options from the settings (open and SIGHUP). */
static void engine_opts(const struct agd_config *c, struct agd_engine_opts *eo)
{
	eo->state_dir = c->state_dir;
	eo->pin_root = c->pin_path;
	eo->max_agents = (__u32)c->max_agents;
	eo->store_size = c->store_size;
	eo->defaults = c->defaults;
	eo->dedup_window_ms = c->dedup_window_ms;
	eo->dedup_max = c->dedup_max;
	eo->auto_create = c->auto_create;
	eo->evict_when_full = !strcmp(c->agent_full, "evict");
	eo->anonymous = anonymous_rule(c);
	eo->max_change = c->rating_max_change;
	eo->change_window_ms = c->rating_change_window_ms;
	eo->wave_users = (__u32)c->rating_wave;
	eo->wave_hold = c->rating_wave_hold;
	eo->user_cap = c->rating_user_cap;
	eo->charge_max_debt_ms = c->charge_max_debt_ms;
	eo->user_rate = c->rating_user_rate;
	eo->token_rate = c->rating_token_rate;
	eo->queue_max = c->queue_max;
	eo->log = logf_;
}

/* The state and the maps; 0, or the exit status. */
static int open_engine(const struct agd_config *c, struct agd_engine **e)
{
	struct agd_engine_opts eo = { 0 };
	struct agd_err err = { 0 };
	int rc;

	engine_opts(c, &eo);
	agd_store_on_damage(store_notify, store_fatal);
	rc = agd_engine_open(&eo, e, &err);
	if (!rc)
		return 0;
	logf_(AGD_LOG_ERR, "%s", err.msg);
	return rc == -EUCLEAN ? EXIT_STORE : EXIT_RUNTIME;
}

static int drop_privileges(const struct agd_privs *p)
{
	struct agd_err err = { 0 };
	char why[600], warn[600];

	if (agd_privs_drop(p, warn, sizeof(warn), &err)) {
		logf_(AGD_LOG_ERR, "%s", err.msg);
		return -1;
	}
	if (warn[0])
		logf_(AGD_LOG_WARN, "%s", warn);
	agd_privs_describe(p, why, sizeof(why));
	logf_(AGD_LOG_INFO, "privileges: %s", why);
	return 0;
}

/* The settings the option table marks as taking effect on restart only. */
static void warn_restart_needed(const struct agd_config *old, const struct agd_config *c)
{
	const char *name;
	size_t i = 0;

	while ((name = agd_config_restart_change(old, c, &i)))
		logf_(AGD_LOG_WARN, "reload: '%s' changed; it takes effect on restart", name);
}

static int start_fleet(struct agd_engine *e, struct agd_config *c, struct agd_fleet **f)
{
	struct agd_fleet_opts fo = { 0 };
	struct agd_err err = { 0 };

	if (!c->n_nats) {
		if (c->node[0])
			logf_(AGD_LOG_WARN, "--node without --nats: standalone, the name is unused");
		return 0;
	}
	if (!c->node[0]) {
		agd_fleet_default_node(c->node, sizeof(c->node));
		if (agd_fleet_node_check(c->node, &err))
			snprintf(c->node, sizeof(c->node), "node");
	}
	fo.urls = (const char(*)[256])c->nats;
	fo.n_urls = c->n_nats;
	fo.node = c->node;
	fo.replicas = (unsigned int)c->nats_replicas;
	fo.interval_ms = c->fleet_interval_ms;
	fo.floor = c->fleet_floor;
	fo.timeout_ms = c->nats_timeout_ms;
	fo.batch = (unsigned int)c->nats_batch;
	fo.state_dir = c->state_dir;
	fo.log = logf_;
	if (agd_fleet_start(e, &fo, f, &err)) {
		logf_(AGD_LOG_ERR, "%s", err.msg);
		return -1;
	}
	return 0;
}

static void feeds_opts(const struct agd_config *c, struct agd_feeds_opts *o)
{
	o->interval_ms = c->rule_feed_interval_ms;
	o->timeout_ms = c->rule_feed_timeout_ms;
	o->max_shrink = c->rule_feed_max_shrink;
	o->max_bytes = c->rule_feed_max_bytes;
	o->max_prefixes = c->rule_feed_max_prefixes;
	snprintf(o->ca_file, sizeof(o->ca_file), "%s", c->rule_feed_ca);
	o->log = logf_;
}

/* Feeds bound otherwise (the API, rule sync, a --rule-feed no longer
 * given) stay: said once at start. */
static void log_other_feeds(struct agd_engine *e, const struct agd_config *c)
{
	struct agd_feed_info *f = NULL;
	size_t n = 0, i, k;

	if (agd_engine_feeds(e, &f, &n))
		return;
	for (i = 0; i < n; i++) {
		size_t len = strlen(f[i].agent);

		for (k = 0; k < c->n_rule_feed; k++)
			if (!strncmp(c->rule_feed[k], f[i].agent, len) && c->rule_feed[k][len] == '=')
				break;
		if (k == c->n_rule_feed)
			logf_(AGD_LOG_INFO, "feed of '%s' (%s, %zu prefixes) stays bound: not from "
			      "--rule-feed; DELETE /v1/agents/%s/feed unbinds it", f[i].agent,
			      f[i].meta.source[0] ? f[i].meta.source : "a set given whole",
			      f[i].prefixes, f[i].agent);
	}
	free(f);
}

/* The --rule-feed bindings: the agent made when unknown, the feed bound
 * unless it is already, to this source. */
static int bind_feeds(struct agd_engine *e, const struct agd_config *c)
{
	size_t i;

	for (i = 0; i < c->n_rule_feed; i++) {
		const char *eq = strchr(c->rule_feed[i], '=');
		struct agd_agent_change none = { .fill_tokens = -1 };
		struct agd_feed_info fi;
		struct agd_err why = { 0 };
		char agent[AG_NAME_MAX + 1];
		struct agd_agent_view v;

		snprintf(agent, sizeof(agent), "%.*s", (int)(eq - c->rule_feed[i]), c->rule_feed[i]);
		if (agd_engine_agent_view(e, agent, &v) == -ENOENT &&
		    agd_engine_agent_put(e, agent, &none, "config", NULL, &why)) {
			logf_(AGD_LOG_ERR, "--rule-feed %s: cannot create the agent: %s", agent, why.msg);
			return -1;
		}
		if (!agd_engine_feed_info(e, agent, &fi) && !strcmp(fi.meta.source, eq + 1) &&
		    !fi.meta.interval_ms)
			continue;
		if (agd_engine_feed_put(e, agent, eq + 1, 0, "config", &why)) {
			logf_(AGD_LOG_ERR, "--rule-feed %s: %s", agent, why.msg);
			return -1;
		}
	}
	log_other_feeds(e, c);
	return 0;
}

static void reload(int argc, char **argv, struct agd_config *cur, struct agd_engine *e,
		   struct agd_http *h, struct agd_feeds *feeds)
{
	struct agd_config *next = malloc(sizeof(*next));
	struct agd_http_live live;

	if (!next)
		return;
	if (agd_config_load(next, argc, argv) != AGD_RUN || check_settings(next) ||
	    live_settings(next, &live)) {
		logf_(AGD_LOG_ERR, "reload failed; the running settings are unchanged");
		free(next);
		return;
	}
	if (!next->node[0]) /* the default chosen at start */
		snprintf(next->node, sizeof(next->node), "%s", cur->node);
	warn_restart_needed(cur, next);
	{
		struct agd_engine_opts eo = { 0 };

		struct agd_feeds_opts fo = { 0 };

		engine_opts(next, &eo);
		agd_engine_reconfigure(e, &eo);
		feeds_opts(next, &fo);
		agd_feeds_reload(feeds, &fo);
		/* Feeds named now are bound (a feed no longer named stays, as
		 * at a start: DELETE unbinds it). */
		if (bind_feeds(e, next))
			logf_(AGD_LOG_WARN, "reload: not every --rule-feed could be bound");
		agd_feeds_kick(feeds);
	}
	agd_http_update(h, &live); /* it owns live.keys now */
	quiet = next->quiet;
	if (attach_all(e, next))
		logf_(AGD_LOG_WARN, "reload: not every device could be attached");
	*cur = *next;
	free(next);
	logf_(AGD_LOG_INFO, "settings reloaded");
}

int main(int argc, char **argv)
{
	struct agd_config *cfg = malloc(sizeof(*cfg));
	struct agd_http_opts ho = { 0 };
	struct agd_http_live live = { 0 };
	bool live_given = false;
	struct agd_engine *e = NULL;
	struct agd_http *h = NULL;
	struct agd_ingest *in = NULL;
	struct agd_fleet *fleet = NULL;
	struct agd_feeds *feeds = NULL;
	struct agd_feeds_opts fo = { 0 };
	struct agd_privs privs;
	struct agd_ingest_opts io = { 0 };
	struct agd_control *ctl = NULL;
	struct agd_err err = { 0 };
	char dl_path[4200];
	sigset_t sigs;
	int rc = EXIT_RUNTIME, sig;

	if (!cfg)
		return EXIT_RUNTIME;
	switch (agd_config_load(cfg, argc, argv)) {
	case AGD_EXIT_OK:
		free(cfg);
		return EXIT_CLEAN;
	case AGD_EXIT_USAGE:
		free(cfg);
		return EXIT_USAGE;
	case AGD_RUN:
		break;
	}
	quiet = cfg->quiet;
	ag_set_log(lib_log);
	if (check_settings(cfg) || !listen_ok(cfg->listen) || live_settings(cfg, &live))
		rc = EXIT_USAGE;
	else
		rc = plan_privileges(cfg, &privs);
	if (rc) {
		free(cfg);
		return rc;
	}

	/* Signals go to this thread only: every thread started below inherits
	 * the mask. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, STORE_SIGNAL);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	agd_rating_fields_set(cfg->rating_fields, &err); /* checked by check_settings */
	rc = EXIT_RUNTIME;
	if (devices_ok(cfg))
		goto cleanup;
	rc = open_engine(cfg, &e);
	if (rc)
		goto cleanup;
	rc = EXIT_RUNTIME;
	if (attach_all(e, cfg) || start_fleet(e, cfg, &fleet) || bind_feeds(e, cfg))
		goto cleanup;
	feeds_opts(cfg, &fo);
	if (agd_feeds_start(e, &fo, &feeds, &err)) {
		logf_(AGD_LOG_ERR, "%s", err.msg);
		goto cleanup;
	}
	snprintf(dl_path, sizeof(dl_path), "%s/" AGD_DEAD_LETTER_FILE, cfg->state_dir);
	io.in_fd = cfg->use_stdin ? STDIN_FILENO : -1;
	io.socket_path = cfg->ingest_socket;
	io.dead_letter_path = dl_path;
	io.dead_letter_max = cfg->dead_letter_max;
	if ((cfg->use_stdin || cfg->ingest_socket[0]) &&
	    agd_ingest_open(e, &io, &in, &err)) {
		logf_(AGD_LOG_ERR, "%s", err.msg);
		goto cleanup;
	}
	if (open_control(cfg, &ctl))
		goto cleanup;
	/* Before the HTTP server and the control thread: their threads start
	 * with the dropped set, and no request is in flight in a thread the
	 * drop interrupts. */
	if (drop_privileges(&privs))
		goto cleanup;
	if (agd_control_serve(ctl, e, &err)) {
		logf_(AGD_LOG_ERR, "%s", err.msg);
		goto cleanup;
	}
	ho.fleet = fleet;
	ho.feeds = feeds;
	ho.listen = cfg->listen;
	ho.threads = (unsigned int)cfg->threads;
	ho.request_timeout_ms = cfg->request_timeout_ms;
	ho.tls_cert = cfg->tls_cert;
	ho.tls_key = cfg->tls_key;
	ho.stream.max_clients = (unsigned int)cfg->stream_max_clients;
	ho.stream.max_per_ip = (unsigned int)cfg->stream_max_per_ip;
	ho.stream.queue = (unsigned int)cfg->stream_queue;
	ho.stream.max_lag_ms = cfg->stream_max_lag_ms;
	ho.stream.ping_ms = cfg->stream_ping_ms;
	live_given = true; /* agd_http_start owns live.keys, also when it fails */
	if (agd_http_start(e, &ho, &live, &h, &err)) {
		logf_(AGD_LOG_ERR, "%s", err.msg);
		goto cleanup;
	}
	agd_http_set_ready(h, !agd_store_damaged(NULL), NULL);
	store_damage(h);
	logf_(AGD_LOG_INFO, "serving %s://%s (state %s, maps %s)", cfg->tls_cert[0] ? "https" : "http",
	      cfg->listen, cfg->state_dir, cfg->pin_path);

	for (;;) {
		if (sigwait(&sigs, &sig))
			continue;
		if (sig == SIGHUP) {
			reload(argc, argv, cfg, e, h, feeds);
			continue;
		}
		if (sig == STORE_SIGNAL) {
			store_damage(h);
			continue;
		}
		logf_(AGD_LOG_INFO, "%s: shutting down (XDP stays attached)",
		      sig == SIGTERM ? "SIGTERM" : "SIGINT");
		break;
	}
	rc = EXIT_CLEAN;
cleanup:
	if (h)
		agd_http_set_ready(h, false, "shutting down");
	agd_ingest_stop(in); /* its batches finish in the engine */
	agd_http_stop(h);
	agd_feeds_stop(feeds); /* a fetch under way ends early */
	agd_control_stop(ctl); /* CLI writes wait for the lock, then go to the maps */
	agd_fleet_stop(fleet); /* what it published is in the stream, or in its outbox */
	agd_engine_close(e); /* and with it the pin root's owner lock */
	if (!live_given) {
		agd_keyset_free(live.keys);
		agd_denylist_free(live.denylist);
	}
	free(cfg);
	return rc;
}
