// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * /v1/agents/{agent}/feed: the agent's rule feed. GET shows it (source,
 * prefixes, how the last refresh went), PUT binds a source
 * {"source": "https://...", "interval": "1h"} (the first read follows at
 * once), DELETE unbinds it and its rules leave the maps (hand rules stay).
 */
#include <errno.h>
#include <string.h>

#include "handlers.h"
#include "core/policy.h"
#include "ingest/feeds.h"

static int feed_reply(struct req *r, int status)
{
	struct agd_feed_info fi;

	if (agd_engine_feed_info(r->h->e, r->param, &fi))
		return send_error(r->conn, 404, "agent '%s' has no rule feed", r->param);
	return agd_reply_json(r->conn, status, agd_feed_info_json(&fi), NULL);
}

int feed_get(struct req *r)
{
	return feed_reply(r, 200);
}

/* interval: whole seconds or a duration ("10m"), 1s to 30d; absent or null:
 * --rule-feed-interval. */
static int interval_field(struct req *r, json_t *o, __u64 *ms, int *status)
{
	json_t *v = json_object_get(o, "interval");
	struct agd_err why = { 0 };
	double secs = 0;

	*ms = 0;
	if (!v || json_is_null(v))
		return 0;
	if ((json_is_string(v) ? agd_ttl_parse(json_string_value(v), &secs, &why) :
	     json_is_number(v) ? agd_ttl_seconds(json_number_value(v), &secs, &why) : -1) ||
	    secs < 1 || secs > 2592000) {
		*status = send_error(r->conn, 400, "field 'interval': whole seconds or a duration "
				     "such as \"1h\", 1s to 30d");
		return -1;
	}
	*ms = (__u64)secs * 1000;
	return 0;
}

int feed_put(struct req *r)
{
	static const char *const allowed[] = { "source", "interval", NULL };
	struct agd_feed_info before;
	struct agd_err oe = { 0 };
	bool existed;
	json_t *o, *src;
	__u64 ms;
	int status, err;

	o = body_object(r, allowed, &status);
	if (!o)
		return status;
	src = json_object_get(o, "source");
	if (!json_is_string(src)) {
		json_decref(o);
		return send_error(r->conn, 400, "field 'source': %s", src ? "expected a string" :
					     "missing (a path, file:///PATH or an http(s) URL)");
	}
	if (interval_field(r, o, &ms, &status)) {
		json_decref(o);
		return status;
	}
	existed = !agd_engine_feed_info(r->h->e, r->param, &before);
	err = agd_engine_feed_put(r->h->e, r->param, json_string_value(src), ms, r->tok.subject,
				  &oe);
	json_decref(o);
	if (err) {
		if (err == -EINVAL)
			return send_error(r->conn, 400, "%s", oe.msg);
		return bad_agent(r, err, &oe);
	}
	agd_feeds_kick(r->h->feeds);
	return feed_reply(r, existed ? 200 : 201);
}

int feed_delete(struct req *r)
{
	struct agd_err oe = { 0 };
	int err = agd_engine_feed_delete(r->h->e, r->param, r->tok.subject, &oe);

	if (err)
		return bad_agent(r, err, &oe);
	return agd_reply_json(r->conn, 200, json_pack("{s:s}", "deleted_feed", r->param), NULL);
}
