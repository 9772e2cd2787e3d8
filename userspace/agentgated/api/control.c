// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The control socket (control.h): requests from the CLI, one per connection. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "control.h"
#include "reply.h"
#include "core/jsonguard.h"

struct agd_control {
	int fd;
	int stop_pipe[2];
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct agd_engine *e;
	pthread_t thread;
	bool running;
};

/* ---- answers ------------------------------------------------------------------- */

static json_t *failure(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_t *failure(int err, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int status = agd_engine_status(err);

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return json_pack("{s:b,s:i,s:s,s:s}", "ok", 0, "status", status, "error", agd_reply_code(status),
			 "message", msg);
}

static json_t *success(json_t *result)
{
	return json_pack("{s:b,s:o}", "ok", 1, "result", result ? result : json_object());
}

/* ---- request fields -------------------------------------------------------------- */

/* NULL when every key of o is in allowed, else the failure naming one. */
static json_t *unknown_fields(json_t *o, const char *const *allowed)
{
	const char *key;
	json_t *v;

	json_object_foreach(o, key, v) {
		size_t i;

		for (i = 0; allowed[i] && strcmp(allowed[i], key); i++)
			;
		if (!allowed[i])
			return failure(-EINVAL, "unknown field '%s'", key);
	}
	return NULL;
}

static json_t *get_agent(json_t *o, const char **agent)
{
	*agent = json_string_value(json_object_get(o, "agent"));
	if (!*agent)
		return failure(-EINVAL, "field 'agent': expected a string");
	if (ag_name_check(*agent))
		return failure(-EINVAL, "field 'agent': %s", ag_errmsg());
	return NULL;
}

static json_t *get_rule(json_t *o, struct ag_rule *rule)
{
	const char *prefix = json_string_value(json_object_get(o, "prefix"));
	json_t *port = json_object_get(o, "port");

	if (!prefix)
		return failure(-EINVAL, "field 'prefix': expected a string");
	if (ag_prefix_parse(prefix, rule))
		return failure(-EINVAL, "field 'prefix': %s", ag_errmsg());
	if (port && (!json_is_integer(port) || json_integer_value(port) < 0 ||
		     json_integer_value(port) > 65535))
		return failure(-EINVAL, "field 'port': expected 0 to 65535");
	rule->port = port ? (__u16)json_integer_value(port) : 0;
	return NULL;
}

/* ---- operations ------------------------------------------------------------------ */

/* agent.set's influence: {"max_change", "change_window" (seconds),
 * "wave_users", "wave_hold", "user_cap"}, each a value or null (back to the
 * option); ranges are the engine's to check. */
static json_t *influence_of_op(json_t *inf, struct agd_agent_change *c)
{
	static const struct {
		const char *name;
		unsigned int bit;
		bool boolean;
	} f[] = {
		{ "max_change", AGD_INF_MAX_CHANGE, false },
		{ "change_window", AGD_INF_WINDOW, false },
		{ "wave_users", AGD_INF_WAVE_USERS, false },
		{ "wave_hold", AGD_INF_WAVE_HOLD, true },
		{ "user_cap", AGD_INF_USER_CAP, false },
	};
	size_t i, known = 0;

	if (!json_is_object(inf))
		return failure(-EINVAL, "field 'influence': expected an object");
	for (i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		json_t *v = json_object_get(inf, f[i].name);
		double x;

		if (!v)
			continue;
		known++;
		if (json_is_null(v)) {
			c->inf_unset |= f[i].bit;
			continue;
		}
		if (f[i].boolean ? !json_is_boolean(v) : !json_is_number(v))
			return failure(-EINVAL, "field 'influence.%s': expected %s", f[i].name,
				       f[i].boolean ? "true, false or null" : "a number or null");
		x = f[i].boolean ? 0 : json_number_value(v);
		if (!f[i].boolean && !(x >= 0 && x <= 1e12))
			return failure(-EINVAL, "field 'influence.%s': out of range", f[i].name);
		c->inf_set |= f[i].bit;
		if (f[i].bit == AGD_INF_MAX_CHANGE)
			c->inf.max_change = x;
		else if (f[i].bit == AGD_INF_WINDOW)
			c->inf.window_ms = (__u64)(x * 1000);
		else if (f[i].bit == AGD_INF_WAVE_USERS)
			c->inf.wave_users = x > 4e9 ? UINT32_MAX : (__u32)x;
		else if (f[i].bit == AGD_INF_WAVE_HOLD)
			c->inf.wave_hold = json_is_true(v);
		else
			c->inf.user_cap = x;
	}
	if (known != json_object_size(inf))
		return failure(-EINVAL, "field 'influence': known fields are max_change, "
			       "change_window, wave_users, wave_hold and user_cap");
	return NULL;
}

static json_t *agent_set(struct agd_engine *e, json_t *o, const char *subject)
{
	static const char *const allowed[] = { "op", "agent", "rate", "burst", "unit", "pinned",
					       "ttl", "influence", "parent", "quota", NULL };
	struct agd_agent_change c = { .fill_tokens = -1 };
	struct agd_err oe = { 0 };
	const char *agent, *unit;
	json_t *v, *bad;
	bool created = false;
	int err;

	if ((bad = unknown_fields(o, allowed)) || (bad = get_agent(o, &agent)))
		return bad;
	if ((v = json_object_get(o, "rate"))) {
		struct agd_policy eff;

		if (!json_is_number(v) || json_number_value(v) <= 0)
			return failure(-EINVAL, "field 'rate': expected a positive number");
		c.own.r0 = json_number_value(v);
		c.set |= AGD_POL_R0;
		/* The CLI sets the rate the datapath enforces, as it does without a
		 * daemon: a rate outside the agent's bounds widens them. */
		agd_engine_policy_of(e, agent, &eff);
		if (c.own.r0 < eff.r_min) {
			c.own.r_min = c.own.r0;
			c.set |= AGD_POL_R_MIN;
		}
		if (c.own.r0 > eff.r_max) {
			c.own.r_max = c.own.r0;
			c.set |= AGD_POL_R_MAX;
		}
	}
	if ((v = json_object_get(o, "burst"))) {
		if (!json_is_integer(v) || json_integer_value(v) <= 0)
			return failure(-EINVAL, "field 'burst': expected a positive integer");
		c.own.burst = (double)json_integer_value(v);
		c.own.burst_kind = AGD_BURST_TOKENS;
		c.set |= AGD_POL_BURST;
	}
	if ((v = json_object_get(o, "unit"))) {
		unit = json_string_value(v);
		if (!unit || ag_unit_parse(unit, &c.own.unit))
			return failure(-EINVAL,
				       "field 'unit': expected \"pps\", \"bps\" or \"conn\"");
		c.set |= AGD_POL_UNIT;
	}
	if ((v = json_object_get(o, "pinned"))) {
		if (!json_is_boolean(v))
			return failure(-EINVAL, "field 'pinned': expected true or false");
		c.own.pinned = json_is_true(v);
		c.set |= AGD_POL_PINNED;
	}
	if ((v = json_object_get(o, "ttl"))) {
		if (!json_is_number(v) ||
		    agd_ttl_seconds(json_number_value(v), &c.own.ttl, &oe))
			return failure(-EINVAL, "field 'ttl': %s",
				       oe.msg[0] ? oe.msg : "expected whole seconds");
		c.set |= AGD_POL_TTL;
	}
	if ((v = json_object_get(o, "influence")) && (bad = influence_of_op(v, &c)))
		return bad;
	if (agd_budget_parse(o, false, &c.budget, &oe))
		return failure(-EINVAL, "%s", oe.msg);
	err = agd_engine_agent_put(e, agent, &c, subject, &created, &oe);
	if (err)
		return failure(err, "%s", oe.msg);
	return success(json_pack("{s:s,s:b}", "agent", agent, "created", created));
}

/* parent.set {"name", rate, burst, unit, parent, quota}, parent.delete {"name"}. */
static json_t *parent_op(struct agd_engine *e, json_t *o, bool set, const char *subject)
{
	static const char *const set_fields[] = { "op",	    "name",   "rate",  "burst",
						  "unit",   "parent", "quota", NULL };
	static const char *const del_fields[] = { "op", "name", NULL };
	struct agd_budget_change b;
	struct agd_err oe = { 0 };
	const char *name;
	bool created = false;
	json_t *bad;
	int err;

	if ((bad = unknown_fields(o, set ? set_fields : del_fields)))
		return bad;
	name = json_string_value(json_object_get(o, "name"));
	if (!name || ag_name_check(name))
		return failure(-EINVAL, "field 'name': expected a parent's name");
	if (!set) {
		err = agd_engine_parent_delete(e, name, subject, &oe);
		if (err)
			return failure(err, "%s", oe.msg);
		return success(json_pack("{s:s}", "deleted", name));
	}
	if (agd_budget_parse(o, true, &b, &oe))
		return failure(-EINVAL, "%s", oe.msg);
	err = agd_engine_parent_put(e, name, &b, subject, &created, &oe);
	if (err)
		return failure(err, "%s", oe.msg);
	return success(json_pack("{s:s,s:b}", "name", name, "created", created));
}

static json_t *agent_simple(struct agd_engine *e, json_t *o, const char *op, const char *subject)
{
	static const char *const allowed[] = { "op", "agent", "tokens", NULL };
	struct agd_err oe = { 0 };
	const char *agent;
	double left = 0;
	json_t *bad, *v;
	void *explained = NULL;
	int err;

	if ((bad = unknown_fields(o, allowed)) || (bad = get_agent(o, &agent)))
		return bad;
	v = json_object_get(o, "tokens");
	if ((strcmp(op, "agent.drain") == 0) != (v != NULL))
		return failure(-EINVAL, v ? "field 'tokens': only agent.drain takes it"
					  : "field 'tokens': agent.drain needs it");
	if (!strcmp(op, "agent.delete")) {
		err = agd_engine_agent_delete(e, agent, subject, &oe);
		if (!err)
			return success(json_pack("{s:s,s:b}", "agent", agent, "deleted", 1));
	} else if (!strcmp(op, "agent.reset")) {
		err = agd_engine_agent_reset(e, agent, subject, &oe);
		if (!err) {
			struct agd_agent_view view;

			err = agd_engine_agent_view(e, agent, &view);
			left = err ? 0 : view.tokens;
			return success(json_pack("{s:s,s:f}", "agent", agent, "tokens", left));
		}
	} else if (!strcmp(op, "agent.drain")) {
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return failure(-EINVAL, "field 'tokens': expected a count");
		err = agd_engine_agent_drain(e, agent, (__u64)json_integer_value(v), subject, &left,
					    &oe);
		if (!err)
			return success(json_pack("{s:s,s:f}", "agent", agent, "tokens", left));
	} else {
		err = agd_engine_explain(e, agent, &explained, &oe);
		if (!err)
			return success(explained);
	}
	return failure(err, "%s", oe.msg[0] ? oe.msg : strerror(-err));
}

static json_t *rule_op(struct agd_engine *e, json_t *o, bool add, const char *subject)
{
	static const char *const add_fields[] = { "op", "prefix", "port", "agent", NULL };
	static const char *const del_fields[] = { "op", "prefix", "port", NULL };
	struct agd_err oe = { 0 };
	struct ag_rule rule;
	const char *agent = NULL;
	json_t *bad;
	int err;

	if ((bad = unknown_fields(o, add ? add_fields : del_fields)) ||
	    (bad = get_rule(o, &rule)) || (add && (bad = get_agent(o, &agent))))
		return bad;
	err = add ? agd_engine_rule_add(e, &rule, agent, subject, &oe)
		  : agd_engine_rule_del(e, &rule, subject, &oe);
	if (err)
		return failure(err, "%s", oe.msg);
	return success(NULL);
}

/* rule sync: {"agent", "feed": the text of a feed, either format}: the
 * agent's feed set replaced by it whole. */
static json_t *feed_sync(struct agd_engine *e, json_t *o, const char *subject)
{
	static const char *const allowed[] = { "op", "agent", "feed", NULL };
	struct agd_feed_set set = { 0 };
	struct agd_feed_meta m = { 0 };
	struct agd_feed_info fi;
	struct agd_err oe = { 0 };
	const char *agent = NULL;
	json_t *bad, *text;
	int err;

	if ((bad = unknown_fields(o, allowed)) || (bad = get_agent(o, &agent)))
		return bad;
	text = json_object_get(o, "feed");
	if (!json_is_string(text))
		return failure(-EINVAL, "field 'feed': expected the feed's text");
	err = agd_feed_parse(json_string_value(text), json_string_length(text), 0, &set, &oe);
	if (err)
		return failure(err == -E2BIG ? -EINVAL : err, "the feed: %s", oe.msg);
	err = agd_engine_feed_set(e, agent, &set, &m, subject, &oe);
	agd_feed_set_free(&set);
	if (err)
		return failure(err, "%s", oe.msg);
	if (agd_engine_feed_info(e, agent, &fi))
		return failure(-ENOENT, "agent '%s' has no rule feed (deleted meanwhile)", agent);
	return success(agd_feed_info_json(&fi));
}

static json_t *config_set(struct agd_engine *e, json_t *o, const char *subject)
{
	static const char *const allowed[] = { "op", "default_action", "dry_run", NULL };
	struct agd_config_change c = { -1, -1 };
	struct agd_err oe = { 0 };
	json_t *bad, *v;
	int err;

	if ((bad = unknown_fields(o, allowed)))
		return bad;
	if ((v = json_object_get(o, "default_action"))) {
		const char *a = json_string_value(v);

		if (!a || (strcmp(a, "pass") && strcmp(a, "drop")))
			return failure(-EINVAL, "field 'default_action': expected \"pass\" or \"drop\"");
		c.default_action = strcmp(a, "drop") ? AG_ACTION_PASS : AG_ACTION_DROP;
	}
	if ((v = json_object_get(o, "dry_run"))) {
		if (!json_is_boolean(v))
			return failure(-EINVAL, "field 'dry_run': expected true or false");
		c.dry_run = json_is_true(v);
	}
	err = agd_engine_config_set(e, &c, subject, &oe);
	if (err)
		return failure(err, "%s", oe.msg);
	return success(NULL);
}

/* agent.activity: by slot, each agent's idle seconds (-1: no agent of the
 * daemon's there) and TTL, two arrays as long as the maps have slots
 * (agentgate agent list: IDLE, TTL, --sort idle). */
static json_t *agent_activity(struct agd_engine *e)
{
	size_t n = ag_max_agents(agd_engine_ctx(e)), i;
	__u64 *idle = calloc(n, sizeof(*idle));
	__u32 *ttl = calloc(n, sizeof(*ttl));
	json_t *ji = json_array(), *jt = json_array(), *res = NULL;

	if (idle && ttl && ji && jt) {
		agd_engine_activity(e, idle, ttl, n);
		for (i = 0; i < n; i++) {
			json_array_append_new(ji, json_integer(idle[i] == UINT64_MAX ? -1 :
							       (json_int_t)(idle[i] / 1000)));
			json_array_append_new(jt, json_integer(ttl[i]));
		}
		res = success(json_pack("{s:o,s:o}", "idle_s", ji, "ttl", jt));
		ji = jt = NULL;
	}
	json_decref(ji);
	json_decref(jt);
	free(idle);
	free(ttl);
	return res ? res : failure(-ENOMEM, "out of memory");
}

char *agd_control_handle(struct agd_engine *e, const char *line, size_t len, const char *subject)
{
	json_t *o, *reply;
	json_error_t je;
	const char *op;
	char *text;

	o = agd_json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
	if (!o || !json_is_object(o))
		reply = failure(-EINVAL, "expected one JSON object: %s", o ? "not an object" : je.text);
	else if (!(op = json_string_value(json_object_get(o, "op"))))
		reply = failure(-EINVAL, "field 'op': expected a string");
	else if (!strcmp(op, "agent.set"))
		reply = agent_set(e, o, subject);
	else if (!strcmp(op, "agent.delete") || !strcmp(op, "agent.reset") ||
		 !strcmp(op, "agent.drain") || !strcmp(op, "agent.explain"))
		reply = agent_simple(e, o, op, subject);
	else if (!strcmp(op, "parent.set") || !strcmp(op, "parent.delete"))
		reply = parent_op(e, o, !strcmp(op, "parent.set"), subject);
	else if (!strcmp(op, "rule.add") || !strcmp(op, "rule.del"))
		reply = rule_op(e, o, !strcmp(op, "rule.add"), subject);
	else if (!strcmp(op, "feed.sync"))
		reply = feed_sync(e, o, subject);
	else if (!strcmp(op, "config.set"))
		reply = config_set(e, o, subject);
	else if (!strcmp(op, "agent.activity"))
		reply = agent_activity(e);
	else
		reply = failure(-EINVAL, "field 'op': unknown operation '%s'", op);
	json_decref(o);
	text = reply ? json_dumps(reply, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
	json_decref(reply);
	return text;
}

/* ---- the socket ----------------------------------------------------------------- */

int agd_control_open(const char *path, struct agd_control **out, struct agd_err *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct agd_control *c;
	struct stat st;
	int e;

	*out = NULL;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		return agd_errf(err, -ENAMETOOLONG,
			"control socket %s: path longer than %zu bytes (set "
			 "--control-socket)", path, sizeof(sa.sun_path) - 1);
	}
	memcpy(sa.sun_path, path, strlen(path));
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			return agd_errf(err, -EEXIST,
				"control socket %s: exists and is not a socket", path);
		}
		/* Left by a run that ended without removing it: the owner
		 * lock we hold says no other daemon serves this pin root. */
		unlink(path);
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->stop_pipe[0] = c->stop_pipe[1] = -1;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || bind(c->fd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(path, 0600) ||
	    listen(c->fd, 16) || pipe2(c->stop_pipe, O_CLOEXEC)) {
		e = errno;
		snprintf(err->msg, sizeof(err->msg), "control socket %s: %s", path, strerror(e));
		if (c->fd >= 0)
			close(c->fd);
		free(c);
		return -e;
	}
	snprintf(c->path, sizeof(c->path), "%s", path);
	*out = c;
	return 0;
}

const char *agd_control_path(const struct agd_control *c)
{
	return c->path;
}

/* "local:USER" for the peer; 0, or -EACCES for an account not served. */
static int peer_subject(int fd, char *subject, size_t len)
{
	struct ucred cred;
	socklen_t sl = sizeof(cred);
	struct passwd pw, *res = NULL;
	char buf[1024];

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &sl))
		return -errno;
	if (cred.uid != 0 && cred.uid != geteuid())
		return -EACCES;
	if (!getpwuid_r(cred.uid, &pw, buf, sizeof(buf), &res) && res)
		snprintf(subject, len, "local:%s", pw.pw_name);
	else
		snprintf(subject, len, "local:uid %u", (unsigned int)cred.uid);
	return 0;
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* Reads one line (or up to EOF) within the timeout; its length, or -1. */
/* One line into *buf, grown as it comes up to AGD_CONTROL_LINE_MAX. */
static ssize_t read_line(int fd, char **buf)
{
	struct timespec t0, now;
	size_t n = 0, cap = 65536;

	*buf = malloc(cap);
	if (!*buf)
		return -1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		long left;
		ssize_t r;

		if (n == cap) {
			char *grown;

			if (cap >= AGD_CONTROL_LINE_MAX)
				return -1;
			cap *= 2;
			grown = realloc(*buf, cap);
			if (!grown)
				return -1;
			*buf = grown;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		left = AGD_CONTROL_TIMEOUT_MS - ((now.tv_sec - t0.tv_sec) * 1000 +
						 (now.tv_nsec - t0.tv_nsec) / 1000000);
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return -1;
		r = recv(fd, *buf + n, cap - n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			return (ssize_t)n;
		if (memchr(*buf + n, '\n', (size_t)r))
			return (ssize_t)(n + (size_t)r);
		n += (size_t)r;
	}
}

static void serve_one(struct agd_control *c, int fd)
{
	char subject[160], *reply = NULL, *buf;
	ssize_t n;

	if (peer_subject(fd, subject, sizeof(subject))) {
		static const char denied[] = "{\"ok\":false,\"status\":403,\"error\":\"forbidden\","
					     "\"message\":\"only root and agentgated's own account "
					     "may use the control socket\"}\n";

		write_all(fd, denied, sizeof(denied) - 1);
		return;
	}
	n = read_line(fd, &buf);
	if (n < 0) {
		static const char bad[] = "{\"ok\":false,\"status\":400,\"error\":\"bad_request\","
					  "\"message\":\"expected one JSON line of at most 32 MiB "
					  "within 5 s\"}\n";

		write_all(fd, bad, sizeof(bad) - 1);
	} else {
		reply = agd_control_handle(c->e, buf, (size_t)n, subject);
		if (reply) {
			write_all(fd, reply, strlen(reply));
			write_all(fd, "\n", 1);
		}
	}
	free(reply);
	free(buf);
}

static void *control_thread(void *arg)
{
	struct agd_control *c = arg;

	for (;;) {
		struct pollfd p[2] = { { .fd = c->fd, .events = POLLIN },
				       { .fd = c->stop_pipe[0], .events = POLLIN } };
		int fd;

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		fd = accept4(c->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		serve_one(c, fd);
		close(fd);
	}
	return NULL;
}

int agd_control_serve(struct agd_control *c, struct agd_engine *e, struct agd_err *err)
{
	int rc;

	c->e = e;
	rc = pthread_create(&c->thread, NULL, control_thread, c);
	if (rc) {
		return agd_errf(err, -rc,
			"control socket: cannot start its thread: %s", strerror(rc));
	}
	c->running = true;
	return 0;
}

void agd_control_stop(struct agd_control *c)
{
	if (!c)
		return;
	if (c->running) {
		(void)!write(c->stop_pipe[1], "x", 1);
		pthread_join(c->thread, NULL);
	}
	close(c->fd);
	unlink(c->path);
	close(c->stop_pipe[0]);
	close(c->stop_pipe[1]);
	free(c);
}
