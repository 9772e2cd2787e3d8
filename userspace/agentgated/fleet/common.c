// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* What the fleet's threads share (common.h): time, pausing, the connection's
 * state, subjects, and the outcomes the consumer records for publishers. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

#include "common.h"

__u64 agd_fleet_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (__u64)ts.tv_sec * 1000 + (__u64)ts.tv_nsec / 1000000;
}

void agd_fleet_deadline(struct timespec *ts, __u64 ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += (time_t)(ms / 1000);
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Sleeps up to ms unless the fleet is stopping; false when it is. */
bool agd_fleet_pause(struct agd_fleet *f, __u64 ms)
{
	struct timespec ts;
	bool go;

	agd_fleet_deadline(&ts, ms);
	pthread_mutex_lock(&f->lock);
	if (!f->stopping)
		pthread_cond_timedwait(&f->stop_cv, &f->lock, &ts);
	go = !f->stopping;
	pthread_mutex_unlock(&f->lock);
	return go;
}

bool agd_fleet_connected(struct agd_fleet *f)
{
	return natsConnection_Status(f->nc) == NATS_CONN_STATUS_CONNECTED;
}

void agd_fleet_subject(const char *agent, char *subject, size_t len)
{
	size_t off = (size_t)snprintf(subject, len, "%s", AGD_FLEET_RATINGS), i;
	bool dlq = !strcmp(agent, "dlq");

	for (i = 0; agent[i] && off + 4 < len; i++) {
		if (agent[i] == '.' || (dlq && i == 0)) {
			off += (size_t)snprintf(subject + off, len - off, "%%%02X",
						(unsigned char)agent[i]);
			continue;
		}
		subject[off++] = agent[i];
	}
	subject[off] = 0;
}

/* A JSON string of text (valid UTF-8, as the parser left it) at p. */
static char *put_str(char *p, const char *text)
{
	static const char hex[] = "0123456789abcdef";

	*p++ = '"';
	for (; *text; text++) {
		unsigned char c = (unsigned char)*text;

		if (c == '"' || c == '\\') {
			*p++ = '\\';
			*p++ = (char)c;
		} else if (c < 0x20) {
			memcpy(p, "\\u00", 4);
			p[4] = hex[c >> 4];
			p[5] = hex[c & 15];
			p += 6;
		} else {
			*p++ = (char)c;
		}
	}
	*p++ = '"';
	return p;
}

size_t agd_fleet_rating_line(const struct agd_rating *r, char *out)
{
	char *p = out;

	p = put_str(p + sprintf(p, "{\"id\":"), r->id);
	p = put_str(p + sprintf(p, ",\"agent\":"), r->agent);
	p += sprintf(p, ",\"score\":%d", r->score);
	if (r->user[0])
		p = put_str(p + sprintf(p, ",\"user\":"), r->user);
	if (r->ts_ms >= 0)
		p += sprintf(p, ",\"ts\":%lld", (long long)r->ts_ms);
	*p++ = '}';
	*p = 0;
	return (size_t)(p - out);
}

struct item_result *agd_fleet_result_slot(struct agd_fleet *f, __u64 seq)
{
	return &f->results[seq & (AGD_FLEET_RESULTS - 1)];
}

void agd_fleet_record(struct agd_fleet *f, __u64 seq, int code)
{
	struct item_result *r = agd_fleet_result_slot(f, seq);

	r->seq = seq;
	r->code = code;
}

void agd_fleet_record_batch(struct agd_fleet *f, __u64 seq, const int *codes, size_t n, int all)
{
	struct batch_result *r = &f->batch_results[seq & (AGD_FLEET_BATCH_RESULTS - 1)];
	size_t i;

	free(r->codes);
	*r = (struct batch_result){ .seq = seq, .n = (__u32)n, .all = all };
	for (i = 0; !all && i < n && !codes[i]; i++)
		;
	if (all || i == n)
		return;
	r->codes = malloc(n * sizeof(*r->codes));
	if (!r->codes) { /* unknown: forgotten, as an overwritten one would be */
		r->seq = 0;
		return;
	}
	for (i = 0; i < n; i++)
		r->codes[i] = (short)codes[i];
}

int agd_fleet_batch_result(struct agd_fleet *f, __u64 seq, size_t pos)
{
	const struct batch_result *r = &f->batch_results[seq & (AGD_FLEET_BATCH_RESULTS - 1)];

	if (r->seq != seq)
		return 0;
	if (r->all)
		return r->all;
	return r->codes && pos < r->n ? r->codes[pos] : 0;
}

void agd_fleet_record_op(struct agd_fleet *f, __u64 seq, int err, bool created, const char *msg)
{
	struct op_result *res = &f->ops[seq % AGD_FLEET_OPS];

	res->seq = seq;
	res->err = err;
	res->created = created;
	snprintf(res->msg, sizeof(res->msg), "%s", msg);
}

