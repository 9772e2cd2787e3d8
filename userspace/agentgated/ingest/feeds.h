/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Rule feed refreshes: one thread reads each agent's feed source on its
 * interval (a file, or http(s) with If-None-Match/If-Modified-Since through
 * libcurl), parses it whole (core/feed.h) and hands a changed set to the
 * engine (agd_engine_feed_set: here, or through the fleet's log). A source
 * that cannot be read, a malformed or oversized feed, one that lost more
 * than max_shrink of its prefixes, or a swap the maps or the store refused
 * leaves the last good set in place; the engine keeps the reason
 * (agd_engine_feed_checked) for explain and the metrics, and it is logged.
 */
#ifndef AGENTGATED_FEEDS_H
#define AGENTGATED_FEEDS_H

#include <stdatomic.h>
#include <stddef.h>
#include <linux/types.h>

#include "core/engine.h"
#include "core/err.h"

struct agd_feeds_opts {
	__u64 interval_ms;   /* a feed's own interval, else this */
	double max_shrink;   /* fraction of its prefixes a refresh may drop; 1: any */
	size_t max_bytes;    /* largest feed body */
	size_t max_prefixes; /* most prefixes in one feed */
	__u64 timeout_ms;    /* one fetch, connection included */
	char ca_file[4096];  /* CA certificates for https; "": the system's */
	void (*log)(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
};

struct agd_feeds;

int agd_feeds_start(struct agd_engine *e, const struct agd_feeds_opts *o, struct agd_feeds **out,
		    struct agd_err *err);
/* New settings (SIGHUP); the next refresh uses them. */
void agd_feeds_reload(struct agd_feeds *f, const struct agd_feeds_opts *o);
/* A feed was bound or rebound: look now rather than at the next tick. */
void agd_feeds_kick(struct agd_feeds *f);
void agd_feeds_stop(struct agd_feeds *f);

/* What one fetch gave (agd_feed_fetch, for the thread and the tests). */
enum agd_fetch_result { AGD_FETCH_OK, AGD_FETCH_NOT_MODIFIED, AGD_FETCH_FAILED };

struct agd_fetch {
	char *body; /* malloc'ed, NUL-terminated; OK only */
	size_t len;
	char etag[AGD_FEED_VALIDATOR_MAX + 1], last_modified[AGD_FEED_VALIDATOR_MAX + 1];
	int reason; /* FAILED: AGD_FEED_UNREACHABLE or AGD_FEED_OVERSIZED */
	char why[AGD_ERR_MAX];
};

/* Reads source (a path, file:///PATH, http:// or https://) if it changed
 * since the validators (a file's are its inode, size and mtime); a
 * transfer ends early once *stop (NULL: never). */
enum agd_fetch_result agd_feed_fetch(const char *source, const char *etag,
				     const char *last_modified, size_t max_bytes,
				     __u64 timeout_ms, const char *ca_file, const atomic_bool *stop,
				     struct agd_fetch *out);

#endif
