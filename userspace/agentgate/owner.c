// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * One owner of policy: while agentgated owns the pin root, a CLI write goes
 * through its control socket (agentgated/api/control.h) and is stored, audited
 * and replicated like an API change; without a daemon the CLI writes the
 * maps itself, holding the shared owner lock so that no daemon starts in
 * the middle (agentgate.h, "the owner of a pin root").
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"

#define OWNER_WAIT_MS 10000  /* a daemon starting or stopping settles in this */
#define ANSWER_WAIT_MS 60000 /* a change in a fleet waits for the log */

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static const char *pin_root(const struct cli *cli)
{
	return cli->pin_path ? cli->pin_path : AG_PIN_ROOT_DEFAULT;
}

/* Connects to path: 0 and *fd, or -errno. */
static int dial(const char *path, int *fd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path));
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa))) {
		int err = -errno;

		close(s);
		return err;
	}
	*fd = s;
	return 0;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The answer line: 0 and *reply, or -EPIPE when the daemon closed without
 * one, -ETIMEDOUT, -EPROTO for an answer that is not a JSON object. */
static int receive(int fd, json_t **reply)
{
	size_t cap = 4096, n = 0;
	long long deadline = now_ms() + ANSWER_WAIT_MS;
	char *buf = malloc(cap);
	int err = 0;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		long long left = deadline - now_ms();
		ssize_t r;

		if (left <= 0) {
			err = -ETIMEDOUT;
			break;
		}
		if (poll(&p, 1, (int)left) < 0 && errno != EINTR) {
			err = -errno;
			break;
		}
		if (n + 1 >= cap) {
			char *grown = cap < (16u << 20) ? realloc(buf, cap * 2) : NULL;

			if (!grown) {
				err = -EPROTO;
				break;
			}
			buf = grown;
			cap *= 2;
		}
		r = recv(fd, buf + n, cap - n - 1, 0);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r < 0) {
			err = -errno;
			break;
		}
		if (r == 0) {
			err = n ? 0 : -EPIPE;
			break;
		}
		n += (size_t)r;
		if (memchr(buf, '\n', n))
			break;
	}
	if (!err) {
		*reply = json_loadb(buf, n, 0, NULL);
		if (!*reply || !json_is_object(*reply)) {
			json_decref(*reply);
			*reply = NULL;
			err = -EPROTO;
		}
	}
	free(buf);
	return err;
}

/*
 * Asks the daemon that owns the pin root. With lock, a caller about to
 * write: 0 means no daemon owns the pin root and the shared lock is kept
 * (cli->owner_fd) until the CLI exits. 1: *reply is the daemon's answer.
 * Negative: an error, already printed, *code its exit status.
 */
static int ask(struct cli *cli, json_t *req, bool lock, json_t **reply, int *code)
{
	long long deadline = now_ms() + OWNER_WAIT_MS;
	struct ag_owner rec;
	int err = 0, fd;
	char *text = json_dumps(req, JSON_COMPACT | JSON_REAL_PRECISION(17));

	*reply = NULL;
	if (!text) {
		*code = cli_error(cli, EXIT_RUNTIME, "out of memory");
		return -ENOMEM;
	}
	for (;;) {
		int s = -1, r = ag_owner_probe(pin_root(cli), lock ? &fd : NULL, &rec);

		if (r < 0) {
			*code = cli_lib_error(cli, r);
			err = r;
			break;
		}
		if (r == 0) {
			if (lock)
				cli->owner_fd = fd;
			err = 0;
			break;
		}
		/* Owned: the record may not be pinned yet (a daemon starting)
		 * or its socket already gone (one stopping): wait for either. */
		err = rec.pid ? dial(rec.control, &s) : -ENOENT;
		if (!err) {
			err = send_all(s, text, strlen(text));
			if (!err)
				err = send_all(s, "\n", 1);
			if (!err)
				err = receive(s, reply);
			close(s);
			if (!err) {
				err = 1;
				break;
			}
			*code = cli_error(cli, EXIT_RUNTIME,
					  "agentgated (pid %u) took the request on %s but did not "
					  "answer (%s): whether the change was made is not known; "
					  "look with 'agentgate agent show' or its audit log",
					  rec.pid, rec.control, strerror(-err));
			break;
		}
		if (err == -EACCES || err == -EPERM) {
			*code = cli_error(cli, EXIT_RUNTIME,
					  "agentgated (pid %u) owns %s and changes go through its "
					  "control socket %s, which this account may not use (%s): "
					  "run this as root, or use its HTTP API",
					  rec.pid, pin_root(cli), rec.control, strerror(-err));
			break;
		}
		if (now_ms() >= deadline) {
			*code = cli_error(cli, EXIT_RUNTIME,
					  "agentgated%s owns %s but its control socket %s does not "
					  "answer (%s); nothing was changed. Wait for it to finish "
					  "starting or stopping, or change the policy through its "
					  "HTTP API",
					  rec.pid ? "" : " (starting or stopping)", pin_root(cli),
					  rec.pid ? rec.control : "(not published yet)",
					  strerror(-err));
			break;
		}
		usleep(20 * 1000);
	}
	free(text);
	if (*code)
		return err < 0 ? err : -EIO;
	return err;
}

int cli_daemon_ask(struct cli *cli, void *req_json, void **reply_json)
{
	json_t *reply = NULL;
	int code = 0, r = ask(cli, req_json, false, &reply, &code);

	*reply_json = reply;
	return r;
}

int cli_daemon_peek(struct cli *cli, void *req_json, void **reply_json)
{
	char *text = json_dumps(req_json, JSON_COMPACT);
	json_t *reply = NULL;
	struct ag_owner rec;
	int s = -1, ok = 0;

	*reply_json = NULL;
	if (text && ag_owner_probe(pin_root(cli), NULL, &rec) == 1 && rec.pid &&
	    !dial(rec.control, &s)) {
		ok = !send_all(s, text, strlen(text)) && !send_all(s, "\n", 1) &&
		     !receive(s, &reply);
		close(s);
	}
	free(text);
	if (!ok) {
		json_decref(reply);
		return 0;
	}
	*reply_json = reply;
	return 1;
}

static int route(struct cli *cli, json_t *req, json_t **result, int *code)
{
	json_t *reply = NULL, *res;
	int r;

	*code = 0;
	*result = NULL;
	r = ask(cli, req, true, &reply, code);
	json_decref(req);
	if (r < 0)
		return 1;
	if (r == 0)
		return 0; /* the caller writes the maps itself */
	if (json_is_true(json_object_get(reply, "ok"))) {
		res = json_object_get(reply, "result");
		*result = json_incref(res ? res : json_object());
	} else {
		int status = (int)json_integer_value(json_object_get(reply, "status"));
		const char *msg = json_string_value(json_object_get(reply, "message"));

		/* 400: the daemon refused the value (its policy's bounds):
		 * nothing changed, as with a usage error. */
		*code = cli_error(cli, status == 400 ? EXIT_USAGE : EXIT_RUNTIME,
				  "agentgated refused: %s", msg ? msg : "(no message)");
	}
	json_decref(reply);
	return 1;
}

/* ---- the write verbs' requests ---------------------------------------------------- */

/* A write made here, without a daemon, is journaled first: the next
 * daemon takes the maps' word for it (a crash after the journal and before
 * the write only makes the maps the truth for what did not change). */
static int journal(struct cli *cli, enum ag_journal_kind kind, const char *name,
		   const struct ag_rule *rule, int *code)
{
	int err = ag_owner_journal_add(pin_root(cli), kind, name, rule);

	if (err) {
		*code = cli_lib_error(cli, err);
		return 1;
	}
	return 0;
}

/* An update's parent and quota, as the control socket takes them. */
static void budget_fields(json_t *req, const struct ag_agent_update *u)
{
	if (u->fields & AG_SET_PARENT)
		json_object_set_new(req, "parent", u->parent && u->parent[0] ?
							   json_string(u->parent) : json_null());
	if (u->fields & AG_SET_QUOTA)
		json_object_set_new(req, "quota",
				    u->quota ? json_pack("{s:I,s:s}", "limit", (json_int_t)u->quota,
							 "window",
							 ag_quota_window_name(u->quota_window)) :
					       json_null());
}

int route_parent(struct cli *cli, bool set, const char *name, const struct ag_agent_update *u,
		 bool *created, int *code)
{
	json_t *req = json_pack("{s:s,s:s}", "op", set ? "parent.set" : "parent.delete", "name",
				name),
	       *res = NULL;
	int r;

	if (!req) {
		*code = cli_error(cli, EXIT_RUNTIME, "out of memory");
		return 1;
	}
	if (set && (u->fields & AG_SET_RATE))
		json_object_set_new(req, "rate", json_real(u->rate));
	if (set && (u->fields & AG_SET_BURST))
		json_object_set_new(req, "burst", json_integer((json_int_t)u->burst));
	if (set && (u->fields & AG_SET_UNIT))
		json_object_set_new(req, "unit", json_string(unit_name(u->unit)));
	if (set)
		budget_fields(req, u);
	r = route(cli, req, &res, code);
	if (res && created)
		*created = json_is_true(json_object_get(res, "created"));
	json_decref(res);
	return r ? r : journal(cli, AG_JOURNAL_AGENT, name, NULL, code);
}

int route_agent_set(struct cli *cli, const char *name, const struct ag_agent_update *u,
		    double ttl, json_t *influence, bool *created, int *code)
{
	json_t *req = json_pack("{s:s,s:s}", "op", "agent.set", "agent", name), *res = NULL;
	int r;

	if (!req) {
		*code = cli_error(cli, EXIT_RUNTIME, "out of memory");
		return 1;
	}
	if (u->fields & AG_SET_RATE)
		json_object_set_new(req, "rate", json_real(u->rate));
	if (u->fields & AG_SET_BURST)
		json_object_set_new(req, "burst", json_integer((json_int_t)u->burst));
	if (u->fields & AG_SET_UNIT)
		json_object_set_new(req, "unit", json_string(unit_name(u->unit)));
	if (u->fields & AG_SET_PINNED)
		json_object_set_new(req, "pinned", json_boolean(u->pinned));
	if (ttl >= 0)
		json_object_set_new(req, "ttl", json_integer((json_int_t)ttl));
	if (influence)
		json_object_set(req, "influence", influence);
	budget_fields(req, u);
	r = route(cli, req, &res, code);
	if (res)
		*created = json_is_true(json_object_get(res, "created"));
	json_decref(res);
	return r ? r : journal(cli, AG_JOURNAL_AGENT, name, NULL, code);
}

int route_agent_op(struct cli *cli, const char *op, const char *name, __u64 tokens,
		   double *left, int *code)
{
	json_t *req = json_pack("{s:s,s:s}", "op", op, "agent", name), *res = NULL;
	int r;

	if (!req) {
		*code = cli_error(cli, EXIT_RUNTIME, "out of memory");
		return 1;
	}
	if (!strcmp(op, "agent.drain")) /* more than a bucket holds drains it all */
		json_object_set_new(req, "tokens", json_integer(tokens > (__u64)INT64_MAX ?
									INT64_MAX :
									(json_int_t)tokens));
	r = route(cli, req, &res, code);
	if (res && left)
		*left = json_number_value(json_object_get(res, "tokens"));
	json_decref(res);
	if (!r && !strcmp(op, "agent.delete"))
		return journal(cli, AG_JOURNAL_AGENT, name, NULL, code);
	return r;
}

int route_rule(struct cli *cli, bool add, const struct ag_rule *rule, const char *agent,
	       int *code)
{
	char prefix[AG_PREFIX_STRLEN];
	json_t *req, *res = NULL;
	int r;

	ag_prefix_format(rule, prefix, sizeof(prefix));
	req = json_pack("{s:s,s:s,s:i}", "op", add ? "rule.add" : "rule.del", "prefix", prefix,
			"port", rule->port);
	if (req && add)
		json_object_set_new(req, "agent", json_string(agent));
	if (!req) {
		*code = cli_error(cli, EXIT_RUNTIME, "out of memory");
		return 1;
	}
	r = route(cli, req, &res, code);
	json_decref(res);
	return r ? r : journal(cli, AG_JOURNAL_RULE, NULL, rule, code);
}

int route_config(struct cli *cli, const char *key, const char *value, int *code)
{
	json_t *req, *res = NULL;
	int r;

	if (!strcmp(key, "default-action"))
		req = json_pack("{s:s,s:s}", "op", "config.set", "default_action", value);
	else
		req = json_pack("{s:s,s:b}", "op", "config.set", "dry_run", !strcmp(value, "on"));
	if (!req) {
		*code = cli_error(cli, EXIT_RUNTIME, "out of memory");
		return 1;
	}
	r = route(cli, req, &res, code);
	json_decref(res);
	return r;
}
