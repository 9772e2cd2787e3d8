// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The stream's topics and each client's subscriptions to them: parsing a
 * topic, the ?topics= of the handshake, the welcome, subscribe and
 * unsubscribe messages (stream.c: the connections and the hub).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "server.h"
#include <jansson.h>

#include "agentgate.h"
#include "core/jsonguard.h"
#include "stream.h"
#include "stream_int.h"

/* ---- topics ----------------------------------------------------------------------- */

enum topic_kind { T_NONE, T_GLOBAL, T_RATING, T_BUCKET, T_PARENT };

static enum topic_kind topic_parse(const char *t, const char **agent)
{
	static const char rating[] = "rating.agent.", bucket[] = "bucket.agent.",
			  parent[] = "bucket.parent.";

	if (!strcmp(t, "rating.global"))
		return T_GLOBAL;
	if (!strncmp(t, rating, sizeof(rating) - 1) && !ag_name_check(t + sizeof(rating) - 1)) {
		*agent = t + sizeof(rating) - 1;
		return T_RATING;
	}
	if (!strncmp(t, bucket, sizeof(bucket) - 1) && !ag_name_check(t + sizeof(bucket) - 1)) {
		*agent = t + sizeof(bucket) - 1;
		return T_BUCKET;
	}
	if (!strncmp(t, parent, sizeof(parent) - 1) && !ag_name_check(t + sizeof(parent) - 1)) {
		*agent = t + sizeof(parent) - 1;
		return T_PARENT;
	}
	return T_NONE;
}

bool agd_stream_topic_valid(const char *t)
{
	const char *agent;

	return topic_parse(t, &agent) != T_NONE;
}

static const char *topic_problem(void)
{
	return "unknown topic: use rating.global, rating.agent.{agent}, bucket.agent.{agent} or "
	       "bucket.parent.{parent} (names: 1 to 64 of [A-Za-z0-9._:-], not . nor ..)";
}

ssize_t agd_stream_name_index(topic_name *list, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(list[i], name))
			return (ssize_t)i;
	return -1;
}

/* A bucket topic's key in c->bucket: the agent's name, "/" and a parent's. */
static const char *bucket_key(enum topic_kind k, const char *name, topic_name key)
{
	if (k != T_PARENT)
		return name;
	snprintf(key, sizeof(topic_name), "/%s", name);
	return key;
}

/* c->lock held. 1 added, 0 already there, -ENOSPC over the per-client cap. */
static int subscribe(struct client *c, const char *topic)
{
	const char *agent = NULL;
	enum topic_kind k = topic_parse(topic, &agent);
	topic_name key;
	topic_name **list = k == T_RATING ? &c->rating : &c->bucket;
	size_t *n = k == T_RATING ? &c->n_rating : &c->n_bucket;

	if (k == T_GLOBAL) {
		if (c->global)
			return 0;
		c->global = true;
		return 1;
	}
	agent = bucket_key(k, agent, key);
	if (agd_stream_name_index(*list, *n, agent) >= 0)
		return 0;
	if (c->n_rating + c->n_bucket + c->global >= TOPICS_PER_CLIENT)
		return -ENOSPC;
	if (!*list) {
		*list = calloc(TOPICS_PER_CLIENT, sizeof(**list));
		if (!*list)
			return -ENOMEM;
	}
	snprintf((*list)[(*n)++], sizeof(topic_name), "%s", agent);
	return 1;
}

/* c->lock held. 1 removed, 0 was not subscribed. */
static int unsubscribe(struct client *c, const char *topic)
{
	const char *agent = NULL;
	enum topic_kind k = topic_parse(topic, &agent);
	topic_name *list = k == T_RATING ? c->rating : c->bucket;
	size_t *n = k == T_RATING ? &c->n_rating : &c->n_bucket;
	topic_name key;
	ssize_t i;

	if (k == T_GLOBAL) {
		bool was = c->global;

		c->global = false;
		return was;
	}
	i = agd_stream_name_index(list, *n, bucket_key(k, agent, key));
	if (i < 0)
		return 0;
	memmove(&list[i], &list[i + 1], (*n - (size_t)i - 1) * sizeof(*list));
	(*n)--;
	return 1;
}

/* ---- subscriptions of a connection ---------------------------------------------------- */

/* The ?topics= list, checked: 0, or -EINVAL with the bad topic in bad. */
int agd_stream_query_topics(const struct agd_reqinfo *ri, char *buf, size_t len, char *bad,
			    size_t bad_len)
{
	const char *q = ri->query_string;
	char *t, *save = NULL;
	size_t n = 0;
	int got;

	buf[0] = 0;
	if (!q)
		return 0;
	got = agd_query_var(q, "topics", buf, len);
	if (got == -2) {
		snprintf(bad, bad_len, "topics: the list is too long");
		return -EINVAL;
	}
	if (got < 0) {
		buf[0] = 0;
		return 0;
	}
	{
		char copy[8192];

		snprintf(copy, sizeof(copy), "%s", buf);
		for (t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			if (!agd_stream_topic_valid(t) || ++n > TOPICS_PER_CLIENT) {
				snprintf(bad, bad_len, "%.*s: %s", TOPIC_MAX, t,
					 n > TOPICS_PER_CLIENT ? "more than 256 topics" :
								 topic_problem());
				return -EINVAL;
			}
		}
	}
	return 0;
}

/* The welcome and one "subscribed" per ?topics= entry. */
void agd_stream_greet(struct client *c)
{
	const struct agd_reqinfo *ri = agd_conn_info(c->conn);
	char topics[8192], *t, *save = NULL;
	struct msg *m;
	const char *q = ri->query_string;

	pthread_mutex_lock(&c->lock);
	m = agd_stream_reply("connection_success", NULL, NULL);
	if (m) {
		agd_stream_enqueue(c, m, false);
		agd_stream_msg_unref(m);
	}
	if (q && agd_query_var(q, "topics", topics, sizeof(topics)) > 0)
		for (t = strtok_r(topics, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			if (subscribe(c, t) < 0)
				continue;
			m = agd_stream_reply("subscribed", t, NULL);
			if (m) {
				agd_stream_enqueue(c, m, false);
				agd_stream_msg_unref(m);
			}
		}
	agd_stream_notify(c);
	pthread_mutex_unlock(&c->lock);
}

/* One {"action": "subscribe"|"unsubscribe", "topic": "..."} message. */
void agd_stream_client_message(struct client *c, const char *data, size_t len)
{
	json_error_t jerr;
	json_t *o = agd_json_loadb(data, len, 0, &jerr);
	const char *action = NULL, *topic = NULL, *type = NULL;
	char why[160];
	struct msg *m;
	int rc = 0;

	why[0] = 0;
	if (!o || !json_is_object(o))
		snprintf(why, sizeof(why), "expected a JSON object {\"action\", \"topic\"}");
	else if (json_unpack(o, "{s:s,s:s}", "action", &action, "topic", &topic))
		snprintf(why, sizeof(why), "action and topic are required strings");
	else if (strcmp(action, "subscribe") && strcmp(action, "unsubscribe"))
		snprintf(why, sizeof(why), "action: use subscribe or unsubscribe");
	else if (!agd_stream_topic_valid(topic))
		snprintf(why, sizeof(why), "%s", topic_problem());
	pthread_mutex_lock(&c->lock);
	if (!why[0]) {
		bool sub = !strcmp(action, "subscribe");

		rc = sub ? subscribe(c, topic) : unsubscribe(c, topic);
		type = sub ? "subscribed" : "unsubscribed";
		if (rc == -ENOSPC)
			snprintf(why, sizeof(why), "at most %d topics per connection",
				 TOPICS_PER_CLIENT);
		else if (rc < 0)
			snprintf(why, sizeof(why), "out of memory");
	}
	m = why[0] ? agd_stream_reply("error", topic && agd_stream_topic_valid(topic) ? topic : NULL,
				      why) :
		     agd_stream_reply(type, topic, NULL);
	if (m) {
		agd_stream_enqueue(c, m, false);
		agd_stream_msg_unref(m);
	}
	agd_stream_notify(c);
	pthread_mutex_unlock(&c->lock);
	json_decref(o);
}
