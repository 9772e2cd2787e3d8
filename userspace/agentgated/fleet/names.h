/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The fleet's names in NATS (stream, subjects, KV bucket), its settings
 * and its counters: what every fleet file and the fleet's users share. */
#ifndef AGENTGATED_FLEET_NAMES_H
#define AGENTGATED_FLEET_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <linux/types.h>

#include "core/engine.h"

#define AGD_FLEET_STREAM "AGENTGATE"
#define AGD_FLEET_RATINGS "agentgate.ratings."
#define AGD_FLEET_POLICY "agentgate.policy."
#define AGD_FLEET_DLQ "agentgate.ratings.dlq"
/* Several ratings in one message, one per line ('%' is in no agent's
 * subject). Published only while every host's consumer says it reads them
 * (AGD_FLEET_READS_BATCHES in its description): an older host would send
 * them to the dead letters. */
#define AGD_FLEET_BATCH "agentgate.ratings.%batch"
#define AGD_FLEET_READS_BATCHES "reads " AGD_FLEET_BATCH
#define AGD_FLEET_BATCH_MAX 4096 /* ratings in one message, at most */
/* A part of a feed set (binary, core/feed.h's compact form): applied by
 * the feed.set that names its sequence, nothing on its own. */
#define AGD_FLEET_FEED_PART AGD_FLEET_POLICY "feed.part"
#define AGD_NODE_MAX 32

struct agd_fleet_opts {
	const char (*urls)[256];
	size_t n_urls;
	const char *node;     /* [A-Za-z0-9_-], 1..AGD_NODE_MAX */
	unsigned int replicas; /* of the stream and KV bucket when created */
	__u64 interval_ms;    /* demand publication and share period */
	double floor;         /* least share of an agent's rate a host keeps */
	__u64 timeout_ms;     /* JetStream acknowledgement wait */
	unsigned int batch;   /* most ratings in one message (1: a message each) */
	const char *state_dir;
	agd_engine_log_fn log;
};

struct agd_fleet_stats {
	bool connected;
	bool caught_up; /* the consumer reached the stream's end once */
	__u64 applied_seq, lag;
	__u64 outbox_depth;
	__u64 dead_letters;
	__u64 published, duplicates, queued; /* ratings */
	bool batches; /* ratings go out several to a message */
};

/* 0 when node is a valid node name; else -1 with why. */
#endif
