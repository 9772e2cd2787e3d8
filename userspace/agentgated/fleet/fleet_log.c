// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The fleet's consumer: applies the stream AGENTGATE in order, on every host
 * alike. Its durable consumer (agentgate-<node>) is created at each start
 * of the connection from the sequence the engine stored, so delivery starts
 * exactly after what the state already includes; redelivered or older
 * messages are skipped by sequence. Acknowledged (ack-all) after the engine
 * committed them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <jansson.h>

#include "common.h"
#include "core/rating.h"

#define FETCH_BATCH 512
#define FETCH_WAIT_MS 250
#define ACK_WAIT_NS (30LL * 1000000000LL)
#define DUPLICATE_WINDOW_NS (10LL * 60 * 1000000000LL)
#define JS_STREAM_NOT_FOUND 10059
#define JS_NO_MESSAGE_FOUND 10037
#define GAP_TRIES 8 /* reads of the same delivery gap before it is left out */

/* ---- operator changes as the stream carries them --------------------------------- */

static const char *const op_names[] = {
	[AGD_OP_AGENT_PUT] = "agent.put",
	[AGD_OP_AGENT_DELETE] = "agent.delete",
	[AGD_OP_RULE_ADD] = "rule.add",
	[AGD_OP_RULE_DEL] = "rule.del",
	[AGD_OP_CONFIG_SET] = "config.set",
	[AGD_OP_AGENT_TOUCH] = "agent.touch",
	[AGD_OP_AGENT_EXPIRE] = "agent.expire",
	[AGD_OP_AUTH_REVOKE] = "auth.revoke",
	[AGD_OP_FEED_PUT] = "feed.put",
	[AGD_OP_FEED_DELETE] = "feed.delete",
	[AGD_OP_FEED_SET] = "feed.set",
	[AGD_OP_PARENT_PUT] = "parent.put",
	[AGD_OP_PARENT_DELETE] = "parent.delete",
};
#define OP_LAST AGD_OP_PARENT_DELETE

const char *agd_fleet_op_name(enum agd_op_kind kind)
{
	return kind >= AGD_OP_AGENT_PUT && kind <= OP_LAST ? op_names[kind] : "unknown";
}

void agd_fleet_op_release(struct agd_op *op)
{
	free(op->feed_parts);
	op->feed_parts = NULL;
	op->n_feed_parts = 0;
}

/* feed.put: the source bound; feed.set: the set's meta, size, digest and
 * the sequences of the feed.part messages holding its prefixes. */
static json_t *feed_json(const struct agd_op *op)
{
	char digest[17];
	json_t *o, *parts;
	size_t i;

	if (op->kind == AGD_OP_FEED_PUT)
		return json_pack("{s:s,s:I}", "source", op->feed.source, "interval_ms",
				 (json_int_t)op->feed.interval_ms);
	parts = json_array();
	for (i = 0; parts && i < op->n_feed_parts; i++)
		json_array_append_new(parts, json_integer((json_int_t)op->feed_parts[i]));
	snprintf(digest, sizeof(digest), "%016llx", (unsigned long long)op->feed.digest);
	o = json_pack("{s:s,s:s,s:s,s:s,s:I,s:s,s:o}", "source", op->feed.source, "etag",
		      op->feed.etag, "last_modified", op->feed.last_modified, "created",
		      op->feed_set ? op->feed_set->created : "", "n", (json_int_t)op->feed_n,
		      "digest", digest, "parts", parts ? parts : json_array());
	return o;
}

/* An agent's own influence limits as a change carries them; user_cap only
 * when the change names it (hosts from before it decode the rest). */
static json_t *influence_json(const struct agd_agent_change *c)
{
	json_t *o = json_pack("{s:i,s:i,s:f,s:I,s:I,s:b}", "set", c->inf_set, "unset",
			      c->inf_unset, "max_change", c->inf.max_change, "window_ms",
			      (json_int_t)c->inf.window_ms, "wave_users",
			      (json_int_t)c->inf.wave_users, "wave_hold", c->inf.wave_hold);

	if (o && ((c->inf_set | c->inf_unset) & AGD_INF_USER_CAP))
		json_object_set_new(o, "user_cap", json_real(c->inf.user_cap));
	return o;
}

static json_t *rule_json(const struct ag_rule *r)
{
	char hex[33];
	int i;

	for (i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", r->addr[i]);
	return json_pack("{s:i,s:s,s:i,s:i}", "family", r->family == AF_INET6 ? 6 : 4, "addr",
			 hex, "plen", r->plen, "port", r->port);
}

/* A budget change (a parent's, or an agent's parent and quota). */
static json_t *budget_change_json(const struct agd_budget_change *b)
{
	return json_pack("{s:i,s:f,s:I,s:i,s:s,s:I,s:i}", "fields", (int)b->fields, "rate",
			 b->rate, "burst", (json_int_t)b->burst, "unit", (int)b->unit, "parent",
			 b->parent, "quota", (json_int_t)b->quota, "window", (int)b->quota_window);
}

static int decode_budget(json_t *j, struct agd_budget_change *b, char *why, size_t wlen)
{
	const unsigned int known = AG_SET_RATE | AG_SET_BURST | AG_SET_UNIT | AG_SET_PARENT |
				   AG_SET_QUOTA;
	json_int_t burst, quota;
	int fields, unit, window;
	const char *parent;
	json_error_t je;

	if (!j || json_unpack_ex(j, &je, JSON_STRICT, "{s:i,s:F,s:I,s:i,s:s,s:I,s:i}", "fields",
				 &fields, "rate", &b->rate, "burst", &burst, "unit", &unit,
				 "parent", &parent, "quota", &quota, "window", &window) ||
	    ((unsigned int)fields & ~known) || burst < 0 || quota < 0 ||
	    ag_unit_check(unit) || window < 0 || window >= AG_QW__COUNT ||
	    (parent[0] && ag_name_check(parent))) {
		snprintf(why, wlen, "budget: %s", j ? "a field out of range" : "missing");
		return -EINVAL;
	}
	b->fields = (unsigned int)fields;
	b->burst = (__u64)burst;
	b->unit = (enum ag_unit)unit;
	snprintf(b->parent, sizeof(b->parent), "%s", parent);
	b->quota = (__u64)quota;
	b->quota_window = (enum ag_quota_window)window;
	return 0;
}

char *agd_fleet_op_encode(const struct agd_op *op)
{
	json_t *o = json_pack("{s:i,s:s,s:s,s:s}", "v", 1, "op", agd_fleet_op_name(op->kind),
			      "agent", op->agent, "subject", op->subject);
	const struct agd_policy *p = &op->change.own;
	char *text;

	if (!o)
		return NULL;
	if (op->kind == AGD_OP_AGENT_PUT)
		json_object_set_new(o, "change",
				    json_pack("{s:i,s:i,s:f,s:b,s:{s:f,s:f,s:f,s:f,s:f,s:i,s:i,s:b,s:f}}",
					      "set", op->change.set, "unset", op->change.unset,
					      "fill", op->change.fill_tokens, "implicit",
					      op->change.implicit, "policy", "r0", p->r0,
					      "alpha", p->alpha, "r_min", p->r_min, "r_max", p->r_max,
					      "burst", p->burst, "burst_kind", (int)p->burst_kind,
					      "unit", (int)p->unit, "pinned", p->pinned, "ttl", p->ttl));
	if (op->kind == AGD_OP_AGENT_PUT && (op->change.inf_set | op->change.inf_unset))
		json_object_set_new(json_object_get(o, "change"), "influence",
				    influence_json(&op->change));
	if (op->kind == AGD_OP_AGENT_PUT && op->change.budget.fields)
		json_object_set_new(json_object_get(o, "change"), "budget",
				    budget_change_json(&op->change.budget));
	if (op->kind == AGD_OP_PARENT_PUT)
		json_object_set_new(o, "budget", budget_change_json(&op->budget));
	if (op->kind == AGD_OP_RULE_ADD || op->kind == AGD_OP_RULE_DEL)
		json_object_set_new(o, "rule", rule_json(&op->rule));
	if (op->kind == AGD_OP_AGENT_EXPIRE)
		json_object_set_new(o, "mark", json_integer((json_int_t)op->mark));
	if (op->kind == AGD_OP_AUTH_REVOKE)
		json_object_set_new(o, "revoke",
				    json_pack("{s:s,s:s,s:I,s:I}", "kind",
					      op->revoke.kind == AGD_REVOKE_JTI ? "jti" : "sub",
					      "value", op->revoke.value, "at",
					      (json_int_t)op->revoke.at_s, "until",
					      (json_int_t)op->revoke.until_s));
	if (op->kind == AGD_OP_FEED_PUT || op->kind == AGD_OP_FEED_SET)
		json_object_set_new(o, "feed", feed_json(op));
	if (op->kind == AGD_OP_CONFIG_SET)
		json_object_set_new(o, "config",
				    json_pack("{s:i,s:i}", "default_action",
					      op->config.default_action, "dry_run",
					      op->config.dry_run));
	text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
	json_decref(o);
	return text;
}

static int decode_rule(json_t *r, struct ag_rule *rule, char *why, size_t wlen)
{
	const char *hex;
	int family, plen, port, i;
	json_error_t je;

	if (json_unpack_ex(r, &je, JSON_STRICT, "{s:i,s:s,s:i,s:i}", "family", &family, "addr",
			   &hex, "plen", &plen, "port", &port) ||
	    (family != 4 && family != 6) || strlen(hex) != 32 || plen < 0 ||
	    plen > (family == 4 ? 32 : 128) || port < 0 || port > 65535) {
		snprintf(why, wlen, "rule: expected family 4|6, addr (32 hex), plen, port");
		return -EINVAL;
	}
	memset(rule, 0, sizeof(*rule));
	rule->family = family == 6 ? AF_INET6 : AF_INET;
	rule->plen = (__u8)plen;
	rule->port = (__u16)port;
	for (i = 0; i < 16; i++) {
		unsigned int b;

		if (sscanf(hex + 2 * i, "%2x", &b) != 1) {
			snprintf(why, wlen, "rule: addr is not hexadecimal");
			return -EINVAL;
		}
		rule->addr[i] = (__u8)b;
	}
	return 0;
}

static int decode_change(json_t *c, struct agd_agent_change *ch, char *why, size_t wlen)
{
	struct agd_policy *p = &ch->own;
	int set, unset, kind, unit, pinned, implicit = 0;
	json_t *inf = NULL, *budget = NULL;
	json_error_t je;

	/* implicit and ttl: absent in an older agentgated's entries. */
	if (!c || json_unpack_ex(c, &je, JSON_STRICT,
				 "{s:i,s:i,s:F,s?b,s:{s:F,s:F,s:F,s:F,s:F,s:i,s:i,s:b,s?F},s?o,s?o}",
				 "set", &set, "unset", &unset, "fill", &ch->fill_tokens, "implicit",
				 &implicit, "policy", "r0", &p->r0, "alpha", &p->alpha, "r_min",
				 &p->r_min, "r_max", &p->r_max, "burst", &p->burst, "burst_kind",
				 &kind, "unit", &unit, "pinned", &pinned, "ttl", &p->ttl, "influence",
				 &inf, "budget", &budget)) {
		snprintf(why, wlen, "change: %s", c ? je.text : "missing");
		return -EINVAL;
	}
	if ((set & ~AGD_POL__ALL) || (unset & ~AGD_POL__ALL) ||
	    (kind != AGD_BURST_TOKENS && kind != AGD_BURST_SECONDS) ||
	    ag_unit_check(unit)) {
		snprintf(why, wlen, "change: field mask, burst_kind or unit out of range");
		return -EINVAL;
	}
	if ((set & AGD_POL_TTL) && agd_ttl_seconds(p->ttl, &p->ttl, &(struct agd_err){ 0 })) {
		snprintf(why, wlen, "change: ttl out of range");
		return -EINVAL;
	}
	if (inf) {
		int iset, iunset, hold;
		json_int_t wms, wusers;

		ch->inf.user_cap = 0;
		if (json_unpack_ex(inf, &je, JSON_STRICT, "{s:i,s:i,s:F,s:I,s:I,s:b,s?F}", "set",
				   &iset, "unset", &iunset, "max_change", &ch->inf.max_change,
				   "window_ms", &wms, "wave_users", &wusers, "wave_hold", &hold,
				   "user_cap", &ch->inf.user_cap) ||
		    ((iset | iunset) & ~AGD_INF__ALL) || wms < 0 || wusers < 0 ||
		    wusers > 1000000 || ((iset & AGD_INF_USER_CAP) &&
					  !(ch->inf.user_cap > 0 &&
					    ch->inf.user_cap <= AGD_USER_CAP_MAX))) {
			snprintf(why, wlen, "change: influence: %s", je.text[0] ? je.text :
				 "a field out of range");
			return -EINVAL;
		}
		ch->inf_set = (unsigned int)iset;
		ch->inf_unset = (unsigned int)iunset;
		ch->inf.window_ms = (__u64)wms;
		ch->inf.wave_users = (__u32)wusers;
		ch->inf.wave_hold = hold;
	}
	if (budget && decode_budget(budget, &ch->budget, why, wlen))
		return -EINVAL;
	ch->implicit = implicit;
	ch->set = (unsigned int)set;
	ch->unset = (unsigned int)unset;
	p->burst_kind = kind;
	p->unit = unit;
	p->pinned = pinned;
	return 0;
}

static int decode_config(json_t *c, struct agd_config_change *cc, char *why, size_t wlen)
{
	json_error_t je;

	if (!c || json_unpack_ex(c, &je, JSON_STRICT, "{s:i,s:i}", "default_action",
				 &cc->default_action, "dry_run", &cc->dry_run) ||
	    cc->default_action < -1 || cc->default_action > AG_ACTION_DROP || cc->dry_run < -1 ||
	    cc->dry_run > 1) {
		snprintf(why, wlen, "config: expected default_action and dry_run, -1 to leave");
		return -EINVAL;
	}
	return 0;
}

static int decode_revoke(json_t *r, struct agd_revocation *rv, char *why, size_t wlen)
{
	const char *kind, *value;
	json_int_t at, until;
	json_error_t je;

	if (!r || json_unpack_ex(r, &je, JSON_STRICT, "{s:s,s:s,s:I,s:I}", "kind", &kind, "value",
				 &value, "at", &at, "until", &until) ||
	    (strcmp(kind, "jti") && strcmp(kind, "sub")) || !value[0] ||
	    strlen(value) > AGD_REVOKED_VALUE_MAX || until < at) {
		snprintf(why, wlen, "revoke: expected kind jti|sub, value (1 to %d bytes), at, "
			 "until >= at", AGD_REVOKED_VALUE_MAX);
		return -EINVAL;
	}
	rv->kind = strcmp(kind, "jti") ? AGD_REVOKE_SUB : AGD_REVOKE_JTI;
	snprintf(rv->value, sizeof(rv->value), "%s", value);
	rv->at_s = at;
	rv->until_s = until;
	return 0;
}

#define FEED_PARTS_MAX 4096

static int decode_feed(json_t *o, struct agd_op *op, char *created, size_t clen, char *why,
		       size_t wlen)
{
	const char *source = "", *etag = "", *lastmod = "", *cr = "", *digest = "";
	json_int_t interval = 0, n = 0;
	json_t *parts = NULL, *v;
	json_error_t je;
	size_t i;
	char *end;

	if (!o || (op->kind == AGD_OP_FEED_PUT ?
			   json_unpack_ex(o, &je, JSON_STRICT, "{s:s,s:I}", "source", &source,
					  "interval_ms", &interval) :
			   json_unpack_ex(o, &je, JSON_STRICT, "{s:s,s:s,s:s,s:s,s:I,s:s,s:o}",
					  "source", &source, "etag", &etag, "last_modified",
					  &lastmod, "created", &cr, "n", &n, "digest", &digest,
					  "parts", &parts))) {
		snprintf(why, wlen, "feed: %s", o ? je.text : "missing");
		return -EINVAL;
	}
	if (strlen(source) > AGD_FEED_SOURCE_MAX || strlen(etag) > AGD_FEED_VALIDATOR_MAX ||
	    strlen(lastmod) > AGD_FEED_VALIDATOR_MAX || strlen(cr) > AGD_FEED_TIME_MAX ||
	    interval < 0 || n < 0 || n > (1 << 24) ||
	    (op->kind == AGD_OP_FEED_PUT && !source[0])) {
		snprintf(why, wlen, "feed: a field out of range");
		return -EINVAL;
	}
	snprintf(op->feed.source, sizeof(op->feed.source), "%s", source);
	snprintf(op->feed.etag, sizeof(op->feed.etag), "%s", etag);
	snprintf(op->feed.last_modified, sizeof(op->feed.last_modified), "%s", lastmod);
	snprintf(created, clen, "%s", cr);
	op->feed.interval_ms = (__u64)interval;
	if (op->kind == AGD_OP_FEED_PUT)
		return 0;
	op->feed.digest = strtoull(digest, &end, 16);
	if (strlen(digest) != 16 || *end || !json_is_array(parts) ||
	    json_array_size(parts) > FEED_PARTS_MAX) {
		snprintf(why, wlen, "feed: digest (16 hex) or parts (at most %d) malformed",
			 FEED_PARTS_MAX);
		return -EINVAL;
	}
	op->feed_n = (size_t)n;
	op->n_feed_parts = json_array_size(parts);
	op->feed_parts = calloc(op->n_feed_parts ? op->n_feed_parts : 1, sizeof(__u64));
	if (!op->feed_parts) {
		snprintf(why, wlen, "out of memory");
		return -ENOMEM;
	}
	json_array_foreach(parts, i, v) {
		if (!json_is_integer(v) || json_integer_value(v) <= 0) {
			agd_fleet_op_release(op);
			snprintf(why, wlen, "feed: parts: expected stream sequences");
			return -EINVAL;
		}
		op->feed_parts[i] = (__u64)json_integer_value(v);
	}
	return 0;
}

int agd_fleet_op_decode(const char *data, size_t len, struct agd_op *op, char *why, size_t wlen)
{
	json_t *o = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL), *change = NULL,
	       *rule = NULL, *config = NULL, *mark = NULL, *revoke = NULL, *feed = NULL,
	       *budget = NULL;
	const char *name, *agent, *subject;
	json_error_t je;
	int v, err = -EINVAL, k;

	memset(op, 0, sizeof(*op));
	if (!o) {
		snprintf(why, wlen, "not JSON");
		return -EINVAL;
	}
	if (json_unpack_ex(o, &je, 0, "{s:i,s:s,s:s,s:s,s?o,s?o,s?o,s?o,s?o,s?o,s?o}", "v", &v,
			   "op", &name, "agent", &agent, "subject", &subject, "change", &change,
			   "rule", &rule, "config", &config, "mark", &mark, "revoke", &revoke,
			   "feed", &feed, "budget", &budget)) {
		snprintf(why, wlen, "%s", je.text);
		goto out;
	}
	if (v != 1) {
		snprintf(why, wlen, "version %d is not understood", v);
		goto out;
	}
	for (k = AGD_OP_AGENT_PUT; k <= OP_LAST; k++)
		if (!strcmp(name, op_names[k]))
			op->kind = k;
	if (!op->kind || strlen(agent) > AG_NAME_MAX || strlen(subject) >= sizeof(op->subject)) {
		snprintf(why, wlen, "unknown operation '%s' or overlong names", name);
		goto out;
	}
	snprintf(op->agent, sizeof(op->agent), "%s", agent);
	snprintf(op->subject, sizeof(op->subject), "%s", subject);
	err = 0;
	if (op->kind == AGD_OP_AGENT_PUT)
		err = decode_change(change, &op->change, why, wlen);
	else if (op->kind == AGD_OP_RULE_ADD || op->kind == AGD_OP_RULE_DEL)
		err = rule ? decode_rule(rule, &op->rule, why, wlen) : -EINVAL;
	else if (op->kind == AGD_OP_CONFIG_SET)
		err = decode_config(config, &op->config, why, wlen);
	else if (op->kind == AGD_OP_AGENT_EXPIRE &&
		 (!json_is_integer(mark) || json_integer_value(mark) < 0)) {
		snprintf(why, wlen, "mark: expected a log sequence");
		err = -EINVAL;
	}
	if (op->kind == AGD_OP_AGENT_EXPIRE && !err)
		op->mark = (__u64)json_integer_value(mark);
	if (op->kind == AGD_OP_AUTH_REVOKE && !err)
		err = decode_revoke(revoke, &op->revoke, why, wlen);
	if (op->kind == AGD_OP_PARENT_PUT && !err)
		err = decode_budget(budget, &op->budget, why, wlen);
	if ((op->kind == AGD_OP_FEED_PUT || op->kind == AGD_OP_FEED_SET) && !err)
		err = decode_feed(feed, op, op->feed_created, sizeof(op->feed_created), why, wlen);
	if (op->kind >= AGD_OP_FEED_PUT && !err && ag_name_check(agent)) {
		snprintf(why, wlen, "agent: %s", ag_errmsg());
		agd_fleet_op_release(op);
		err = -EINVAL;
	}
	if ((op->kind == AGD_OP_AGENT_TOUCH || op->kind == AGD_OP_AGENT_EXPIRE) && !err &&
	    ag_name_check(agent)) {
		snprintf(why, wlen, "agent: %s", ag_errmsg());
		err = -EINVAL;
	}
	if (err && !why[0])
		snprintf(why, wlen, "rule missing");
out:
	json_decref(o);
	return err;
}

/* ---- dead letters ------------------------------------------------------------------- */

static void dead_letter(struct agd_fleet *f, natsMsg *msg, __u64 seq, const char *why)
{
	char id[48], seqs[24];
	natsMsg *m = NULL;
	jsPubOptions po;
	natsStatus s;

	snprintf(id, sizeof(id), "dlq-%llu", (unsigned long long)seq);
	snprintf(seqs, sizeof(seqs), "%llu", (unsigned long long)seq);
	s = natsMsg_Create(&m, AGD_FLEET_DLQ, NULL, natsMsg_GetData(msg),
			   natsMsg_GetDataLength(msg));
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, "Nats-Msg-Id", id); /* once, whichever host sends it */
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, "Agentgate-Reason", why);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, "Agentgate-Seq", seqs);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(m, "Agentgate-Subject", natsMsg_GetSubject(msg));
	if (s == NATS_OK) {
		jsPubOptions_Init(&po);
		po.MaxWait = (int64_t)f->opts.timeout_ms;
		s = js_PublishMsg(NULL, f->js, m, &po, NULL);
	}
	natsMsg_Destroy(m);
	f->opts.log(AGD_LOG_WARN, "fleet: stream message %llu (%s) is invalid: %s%s",
		    (unsigned long long)seq, natsMsg_GetSubject(msg), why,
		    s == NATS_OK ? "; sent to " AGD_FLEET_DLQ : "; the dead-letter subject refused it");
	agd_engine_count_invalid(f->e, 1);
	pthread_mutex_lock(&f->lock);
	f->st.dead_letters++;
	pthread_mutex_unlock(&f->lock);
}

/* ---- applying ------------------------------------------------------------------------ */

/* Ratings gathered for one engine job: at most PENDING_MAX, the ratings of
 * a fetch's single messages or of whole batch messages. */
#define PENDING_MAX (FETCH_BATCH + AGD_FLEET_BATCH_MAX)
#define SINGLE ((__u32)-1)

struct pending {
	struct agd_rating *items;
	int *item_err;
	__u64 *seq;
	__u32 *pos; /* the rating's line in a batch message, or SINGLE */
	size_t n;
	__u64 log_ms;
	__u64 *ms; /* each rating's log time */
	bool resubscribe; /* a delivery skipped messages the stream still has */
};

static void mark_applied(struct agd_fleet *f, __u64 seq)
{
	pthread_mutex_lock(&f->lock);
	if (seq > f->applied)
		f->applied = seq;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->lock);
}

/* Applies the ratings gathered so far as one engine job; retries a store
 * failure (the log must not move on without them). False when stopping. */
static bool flush(struct agd_fleet *f, struct pending *p)
{
	struct agd_job job;
	size_t i;

	if (!p->n)
		return true;
	for (;;) {
		memset(&job, 0, sizeof(job));
		memset(p->item_err, 0, p->n * sizeof(*p->item_err));
		job.items = p->items;
		job.n = p->n;
		job.item_err = p->item_err;
		job.item_seq = p->seq;
		job.item_ms = p->ms;
		job.received_ns = ag_now_ns();
		if (!agd_engine_apply_ratings(f->e, &job, p->seq[p->n - 1], p->log_ms) ||
		    job.err.code == -ESHUTDOWN)
			break;
		agd_job_release(&job);
		f->opts.log(AGD_LOG_ERR, "fleet: cannot apply stream messages up to %llu: %s; "
			    "retrying", (unsigned long long)p->seq[p->n - 1], job.err.msg);
		if (!agd_fleet_pause(f, 1000))
			return false;
	}
	agd_job_release(&job);
	if (job.err.code)
		return false;
	pthread_mutex_lock(&f->lock);
	for (i = 0; i < p->n;) {
		size_t j = i + 1;

		if (p->pos[i] == SINGLE) {
			agd_fleet_record(f, p->seq[i], p->item_err[i]);
		} else {
			while (j < p->n && p->seq[j] == p->seq[i])
				j++;
			agd_fleet_record_batch(f, p->seq[i], &p->item_err[i], j - i, 0);
		}
		i = j;
	}
	pthread_mutex_unlock(&f->lock);
	mark_applied(f, p->seq[p->n - 1]);
	p->n = 0;
	return true;
}

/* A feed.set's prefixes, read back from the feed.part messages it names;
 * the set checked against the size and digest it carries. */
static int gather_feed(struct agd_fleet *f, const struct agd_op *op, struct agd_feed_set *set,
		       struct agd_err *oe)
{
	size_t i;

	for (i = 0; i < op->n_feed_parts; i++) {
		natsMsg *m = NULL;
		jsErrCode jerr = 0;
		natsStatus s = js_GetMsg(&m, f->js, AGD_FLEET_STREAM, op->feed_parts[i], NULL, &jerr);
		int err;

		if (s != NATS_OK)
			return agd_errf(oe, -EIO, "the feed's prefixes at stream sequence %llu cannot "
					"be read: %s", (unsigned long long)op->feed_parts[i],
					natsStatus_GetText(s));
		err = strcmp(natsMsg_GetSubject(m), AGD_FLEET_FEED_PART) ?
			      agd_errf(oe, -EINVAL, "stream sequence %llu is no feed part",
				       (unsigned long long)op->feed_parts[i]) :
			      agd_feed_decode((const uint8_t *)natsMsg_GetData(m),
					      (size_t)natsMsg_GetDataLength(m), set, oe);
		natsMsg_Destroy(m);
		if (err)
			return err;
	}
	agd_feed_set_normalize(set);
	snprintf(set->created, sizeof(set->created), "%s", op->feed_created);
	if (set->n != op->feed_n || agd_feed_digest(set) != op->feed.digest)
		return agd_errf(oe, -EINVAL, "the feed's prefixes (%zu) do not match the %zu and the "
				"digest its change names", set->n, op->feed_n);
	return 0;
}

static void apply_op(struct agd_fleet *f, natsMsg *msg, __u64 seq)
{
	struct agd_feed_set set = { 0 };
	struct agd_err oe = { 0 };
	struct agd_op op;
	char why[200] = "";
	bool created = false;
	int err;

	err = agd_fleet_op_decode(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg), &op,
				  why, sizeof(why));
	if (err) {
		dead_letter(f, msg, seq, why);
		snprintf(oe.msg, sizeof(oe.msg), "invalid change in the log: %s", why);
	} else {
		if (op.kind == AGD_OP_FEED_SET) {
			err = gather_feed(f, &op, &set, &oe);
			op.feed_set = &set;
			if (err)
				f->opts.log(AGD_LOG_ERR, "fleet: the feed of '%s' at sequence %llu is "
					    "not applied: %s", op.agent, (unsigned long long)seq,
					    oe.msg);
		}
		if (!err)
			err = agd_engine_apply_op(f->e, &op, seq, &created, &oe);
		agd_fleet_op_release(&op);
		agd_feed_set_free(&set);
	}
	pthread_mutex_lock(&f->lock);
	agd_fleet_record_op(f, seq, err, created, oe.msg);
	pthread_mutex_unlock(&f->lock);
	mark_applied(f, seq);
}

/* A rating message: into p, or to the dead letters. */
static void take_rating(struct agd_fleet *f, natsMsg *msg, __u64 seq, struct pending *p)
{
	const char *subject = natsMsg_GetSubject(msg), *hdr_id = NULL;
	struct agd_rating *r = &p->items[p->n];
	struct agd_rating_error re = { 0 };
	char why[200], expected[AGD_FLEET_SUBJECT_MAX];

	if (agd_rating_parse_line(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg), r,
				 &re)) {
		snprintf(why, sizeof(why), "%s%s%s", re.field, re.field[0] ? ": " : "", re.reason);
		goto bad;
	}
	agd_fleet_subject(r->agent, expected, sizeof(expected));
	if (strcmp(subject, expected)) {
		snprintf(why, sizeof(why), "the subject names another agent than '%s'", r->agent);
		goto bad;
	}
	/* Without the client's time, the stream's: the same on every host. */
	if (r->ts_ms < 0)
		r->ts_ms = (int64_t)p->log_ms;
	/* A publisher of its own may give the id in the header only. */
	if (!r->id[0] && natsMsgHeader_Get(msg, "Nats-Msg-Id", &hdr_id) == NATS_OK &&
	    strlen(hdr_id) <= AGD_RATING_ID_MAX)
		snprintf(r->id, sizeof(r->id), "%s", hdr_id);
	p->ms[p->n] = p->log_ms;
	p->pos[p->n] = SINGLE;
	p->seq[p->n++] = seq;
	return;
bad:
	pthread_mutex_lock(&f->lock);
	agd_fleet_record(f, seq, -EINVAL);
	pthread_mutex_unlock(&f->lock);
	dead_letter(f, msg, seq, why);
	if (!p->n)
		mark_applied(f, seq);
}

/* A batch message: its ratings into p (flushed first when they do not
 * fit), every one valid and with its id, or the whole message to the dead
 * letters. False when stopping. */
static bool take_batch(struct agd_fleet *f, natsMsg *msg, __u64 seq, struct pending *p)
{
	struct agd_rating_batch b = { 0 };
	char why[200] = "";
	size_t i;
	int err;

	err = agd_ratings_parse(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg),
				AGD_RATING_NDJSON, &b);
	if (err == -EINVAL && b.n_errors)
		snprintf(why, sizeof(why), "line %zu: %s%s%s", b.errors[0].index + 1,
			 b.errors[0].field, b.errors[0].field[0] ? ": " : "", b.errors[0].reason);
	else if (err)
		snprintf(why, sizeof(why), "cannot be read (%s)", strerror(-err));
	else if (b.n < 2 || b.n > AGD_FLEET_BATCH_MAX)
		snprintf(why, sizeof(why), "a batch holds 2 to %d ratings, not %zu",
			 AGD_FLEET_BATCH_MAX, b.n);
	for (i = 0; !why[0] && i < b.n; i++)
		if (!b.items[i].id[0])
			snprintf(why, sizeof(why), "line %zu: id: a batch's ratings need one", i + 1);
	if (why[0]) {
		agd_rating_batch_free(&b);
		pthread_mutex_lock(&f->lock);
		agd_fleet_record_batch(f, seq, NULL, 0, -EINVAL);
		pthread_mutex_unlock(&f->lock);
		dead_letter(f, msg, seq, why);
		if (!p->n)
			mark_applied(f, seq);
		return true;
	}
	if (p->n + b.n > PENDING_MAX && !flush(f, p)) {
		agd_rating_batch_free(&b);
		return false;
	}
	for (i = 0; i < b.n; i++) {
		struct agd_rating *r = &p->items[p->n];

		*r = b.items[i];
		if (r->ts_ms < 0) /* the stream's time: the same on every host */
			r->ts_ms = (int64_t)p->log_ms;
		p->ms[p->n] = p->log_ms;
		p->pos[p->n] = (__u32)i;
		p->seq[p->n++] = seq;
	}
	agd_rating_batch_free(&b);
	return true;
}

static bool is_ratings(const char *subject)
{
	return !strncmp(subject, AGD_FLEET_RATINGS, strlen(AGD_FLEET_RATINGS)) &&
	       subject[strlen(AGD_FLEET_RATINGS)];
}

/* The first sequence in [from, to) the stream still holds, in *held (to
 * when none: its limits or a deletion removed them); -EIO when the stream
 * cannot be asked. Below the stream's first sequence nothing is held;
 * above it at most GAP_PROBES sequences are asked for one by one, and a
 * longer run of missing ones is taken as removed whole (a purge or a
 * deletion of a range). */
#define GAP_PROBES 64
static int first_held(struct agd_fleet *f, __u64 from, __u64 to, __u64 *held)
{
	jsStreamInfo *si = NULL;
	__u64 last;

	if (js_GetStreamInfo(&si, f->js, AGD_FLEET_STREAM, NULL, NULL) != NATS_OK)
		return -EIO;
	if (si->State.FirstSeq > from)
		from = si->State.FirstSeq;
	jsStreamInfo_Destroy(si);
	last = to - from > GAP_PROBES ? from + GAP_PROBES : to;
	for (; from < last; from++) {
		natsMsg *m = NULL;
		jsErrCode jerr = 0;
		natsStatus s = js_GetMsg(&m, f->js, AGD_FLEET_STREAM, from, NULL, &jerr);

		natsMsg_Destroy(m);
		if (s == NATS_OK)
			break;
		if (s != NATS_NOT_FOUND && jerr != JS_NO_MESSAGE_FOUND)
			return -EIO;
	}
	*held = from < last ? from : to;
	return 0;
}

/* Applies one fetched list in order; false when stopping. A delivery that
 * skips sequences the stream still holds (a fetch's answer lost while a
 * cluster changes its leader, then acknowledged by ack-all after later
 * ones) stops at the gap with p->resubscribe set: the consumer is made
 * again from what was applied. */
static bool apply_list(struct agd_fleet *f, natsMsgList *list, struct pending *p)
{
	natsMsg *last = NULL;
	__u64 applied, pending_after = 0, last_seq = 0;
	int i;

	pthread_mutex_lock(&f->lock);
	applied = f->applied;
	pthread_mutex_unlock(&f->lock);
	p->n = 0;
	for (i = 0; i < list->Count; i++) {
		natsMsg *msg = list->Msgs[i];
		const char *subject = natsMsg_GetSubject(msg);
		jsMsgMetaData *meta = NULL;
		__u64 seq;

		if (natsMsg_GetMetaData(&meta, msg) != NATS_OK)
			continue;
		seq = meta->Sequence.Stream;
		pending_after = meta->NumPending;
		p->log_ms = (__u64)(meta->Timestamp / 1000000);
		jsMsgMetaData_Destroy(meta);
		last = msg;
		last_seq = seq;
		if (seq <= applied)
			continue; /* redelivered: the state has it */
		if (seq > applied + 1) {
			__u64 held = seq;
			int err;

			if (!flush(f, p))
				return false;
			err = first_held(f, applied + 1, seq, &held);
			/* Read again while the stream holds what was skipped; when
			 * it does not answer whether it does, GAP_TRIES times. */
			if (f->gap_at != seq)
				f->gap_tries = 0;
			f->gap_at = seq;
			if ((!err && held < seq) || (err && f->gap_tries < GAP_TRIES)) {
				f->gap_tries++;
				f->opts.log(AGD_LOG_WARN, "fleet: the delivery skipped stream sequences "
					    "%llu to %llu; reading them again%s",
					    (unsigned long long)applied + 1,
					    (unsigned long long)seq - 1,
					    err ? " (the stream did not say whether it holds them)" :
						  "");
				if (applied)
					mark_applied(f, applied);
				p->resubscribe = true;
				return true;
			}
			f->opts.log(AGD_LOG_WARN, "fleet: stream sequences %llu to %llu are gone "
				    "(%s): this host never applied them",
				    (unsigned long long)applied + 1, (unsigned long long)seq - 1,
				    err ? "the stream did not say whether it holds them" :
					  "stream limits or a deletion?");
		}
		applied = seq;
		if (!strcmp(subject, AGD_FLEET_DLQ)) {
			if (!p->n)
				mark_applied(f, seq);
		} else if (!strcmp(subject, AGD_FLEET_BATCH)) {
			if (!take_batch(f, msg, seq, p))
				return false;
		} else if (is_ratings(subject)) {
			if (p->n == PENDING_MAX && !flush(f, p))
				return false;
			take_rating(f, msg, seq, p);
		} else if (!strcmp(subject, AGD_FLEET_FEED_PART)) {
			if (!p->n) /* read when its feed.set comes */
				mark_applied(f, seq);
		} else if (!strncmp(subject, AGD_FLEET_POLICY, strlen(AGD_FLEET_POLICY))) {
			if (!flush(f, p))
				return false;
			apply_op(f, msg, seq);
		} else {
			if (!flush(f, p))
				return false;
			dead_letter(f, msg, seq, "subject is neither agentgate.ratings.<agent> "
				    "nor agentgate.policy.<change>");
			mark_applied(f, seq);
		}
	}
	if (!flush(f, p))
		return false;
	if (last_seq)
		mark_applied(f, last_seq);
	if (last)
		natsMsg_Ack(last, NULL); /* ack-all: everything up to it */
	pthread_mutex_lock(&f->lock);
	f->stream_last = last_seq + pending_after;
	pthread_mutex_unlock(&f->lock);
	return true;
}

/* ---- set-up ------------------------------------------------------------------------- */

static int ensure_stream(struct agd_fleet *f)
{
	const char *subjects[] = { AGD_FLEET_RATINGS ">", AGD_FLEET_POLICY ">" };
	jsStreamInfo *si = NULL;
	jsStreamConfig sc;
	jsErrCode jerr = 0;
	natsStatus s;

	s = js_GetStreamInfo(&si, f->js, AGD_FLEET_STREAM, NULL, &jerr);
	if (s == NATS_OK) {
		jsStreamInfo_Destroy(si);
		return 0;
	}
	if (jerr != JS_STREAM_NOT_FOUND && s != NATS_NOT_FOUND)
		goto fail;
	jsStreamConfig_Init(&sc);
	sc.Name = AGD_FLEET_STREAM;
	sc.Subjects = subjects;
	sc.SubjectsLen = 2;
	sc.Storage = js_FileStorage;
	sc.Replicas = f->opts.replicas;
	sc.Duplicates = DUPLICATE_WINDOW_NS;
	s = js_AddStream(&si, f->js, &sc, NULL, &jerr);
	if (s == NATS_OK) {
		jsStreamInfo_Destroy(si);
		f->opts.log(AGD_LOG_INFO, "fleet: created stream %s (%u replica%s)",
			    AGD_FLEET_STREAM, f->opts.replicas, f->opts.replicas == 1 ? "" : "s");
		return 0;
	}
fail:
	f->opts.log(AGD_LOG_WARN, "fleet: stream %s: %s (JetStream error %d)", AGD_FLEET_STREAM,
		    nats_GetLastError(NULL) ? nats_GetLastError(NULL) : natsStatus_GetText(s),
		    (int)jerr);
	return -EIO;
}

static int subscribe(struct agd_fleet *f, natsSubscription **sub)
{
	char durable[sizeof("agentgate-") + AGD_NODE_MAX];
	jsConsumerConfig cc;
	jsConsumerInfo *ci = NULL;
	jsSubOptions so;
	jsErrCode jerr = 0;
	natsStatus s;
	__u64 from;

	snprintf(durable, sizeof(durable), "agentgate-%s", f->opts.node);
	pthread_mutex_lock(&f->lock);
	from = f->applied + 1;
	pthread_mutex_unlock(&f->lock);
	/* Made anew from what the state includes: delivery starts right after. */
	js_DeleteConsumer(f->js, AGD_FLEET_STREAM, durable, NULL, NULL);
	jsConsumerConfig_Init(&cc);
	cc.Durable = durable;
	/* Tells publishers this host reads batch messages (fleet.c). */
	cc.Description = "agentgated: " AGD_FLEET_READS_BATCHES;
	cc.AckPolicy = js_AckAll;
	cc.DeliverPolicy = js_DeliverByStartSequence;
	cc.OptStartSeq = from;
	cc.AckWait = ACK_WAIT_NS;
	cc.MaxAckPending = 4 * FETCH_BATCH;
	s = js_AddConsumer(&ci, f->js, AGD_FLEET_STREAM, &cc, NULL, &jerr);
	if (s == NATS_OK) {
		jsConsumerInfo_Destroy(ci);
		jsSubOptions_Init(&so);
		so.Stream = AGD_FLEET_STREAM;
		so.Consumer = durable;
		s = js_PullSubscribe(sub, f->js, "", durable, NULL, &so, &jerr);
	}
	if (s != NATS_OK) {
		f->opts.log(AGD_LOG_WARN, "fleet: consumer %s: %s (JetStream error %d)", durable,
			    nats_GetLastError(NULL) ? nats_GetLastError(NULL) :
						       natsStatus_GetText(s), (int)jerr);
		return -EIO;
	}
	return 0;
}

void *agd_fleet_consumer(void *arg)
{
	struct agd_fleet *f = arg;
	struct pending p = { calloc(PENDING_MAX, sizeof(*p.items)),
			     calloc(PENDING_MAX, sizeof(*p.item_err)),
			     calloc(PENDING_MAX, sizeof(*p.seq)),
			     calloc(PENDING_MAX, sizeof(*p.pos)), 0, 0,
			     calloc(PENDING_MAX, sizeof(*p.ms)) };
	natsSubscription *sub = NULL;
	int failures = 0;

	while (p.items && p.item_err && p.seq && p.pos && p.ms) {
		natsMsgList list = { 0 };
		natsStatus s;

		if (!sub) {
			if (!agd_fleet_connected(f) || ensure_stream(f) || subscribe(f, &sub)) {
				if (!agd_fleet_pause(f, 500))
					break;
				continue;
			}
			pthread_mutex_lock(&f->lock);
			f->ready = true;
			pthread_mutex_unlock(&f->lock);
			failures = 0;
		}
		s = natsSubscription_Fetch(&list, sub, FETCH_BATCH, FETCH_WAIT_MS, NULL);
		if (s == NATS_OK) {
			bool go = apply_list(f, &list, &p);

			natsMsgList_Destroy(&list);
			failures = 0;
			if (!go)
				break;
			if (p.resubscribe) { /* made again from what was applied */
				p.resubscribe = false;
				natsSubscription_Destroy(sub);
				sub = NULL;
				pthread_mutex_lock(&f->lock);
				f->ready = false;
				pthread_mutex_unlock(&f->lock);
				if (!agd_fleet_pause(f, f->gap_tries < 50 ? 100 * f->gap_tries : 5000))
					break;
			}
		} else if (s == NATS_TIMEOUT) {
			pthread_mutex_lock(&f->lock);
			f->caught_up = true;
			f->stream_last = f->applied;
			pthread_mutex_unlock(&f->lock);
		} else if (++failures >= 8 || !agd_fleet_connected(f)) {
			/* Set up again once connected (a cluster member may be gone). */
			natsSubscription_Destroy(sub);
			sub = NULL;
			pthread_mutex_lock(&f->lock);
			f->ready = false;
			pthread_mutex_unlock(&f->lock);
		}
		if (s != NATS_OK && s != NATS_TIMEOUT && !agd_fleet_pause(f, 100))
			break;
		pthread_mutex_lock(&f->lock);
		s = f->stopping ? NATS_ILLEGAL_STATE : NATS_OK;
		pthread_mutex_unlock(&f->lock);
		if (s != NATS_OK)
			break;
	}
	natsSubscription_Destroy(sub);
	free(p.items);
	free(p.item_err);
	free(p.seq);
	free(p.pos);
	free(p.ms);
	return NULL;
}
