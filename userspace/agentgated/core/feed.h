/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Rule feeds: the address ranges an agent's operator publishes, as a set of
 * source prefixes. Parsing (whole: any bad entry refuses the feed), the set
 * (sorted, without duplicates), the difference of two sets, and the compact
 * form the store and the fleet's log carry. A leaf: it uses libagentgate's
 * prefix parser, jansson and the JSON guard.
 *
 * Formats (agentgated(8), docs/FEEDS.md):
 *   JSON  {"creationTime": "...", "prefixes": [{"ipv4Prefix": "192.0.2.0/24"},
 *          {"ipv6Prefix": "2001:db8::/32"}, ...]}  (OpenAI's and Google's lists)
 *   text  one prefix or address per line; '#' starts a comment; blank lines
 */
#ifndef AGENTGATED_FEED_H
#define AGENTGATED_FEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agentgate.h"
#include "err.h"

#define AGD_FEED_TIME_MAX 63 /* creationTime kept, bytes */

struct agd_feed_set {
	struct ag_rule *v; /* port 0; sorted (family, address, length) */
	size_t n, cap;
	char created[AGD_FEED_TIME_MAX + 1]; /* the JSON's creationTime, or "" */
};

void agd_feed_set_free(struct agd_feed_set *s);

/* Parses a feed of len bytes into *out (emptied first): at most max_prefixes
 * distinct prefixes (0: no limit). -EINVAL naming the line or the index of
 * the first bad entry, -E2BIG beyond max_prefixes, -ENOMEM. */
int agd_feed_parse(const char *buf, size_t len, size_t max_prefixes, struct agd_feed_set *out,
		   struct agd_err *oe);

/* Sorts and removes duplicates (after adding entries by hand). */
void agd_feed_set_normalize(struct agd_feed_set *s);
int agd_feed_set_add(struct agd_feed_set *s, const struct ag_rule *r);
bool agd_feed_set_has(const struct agd_feed_set *s, const struct ag_rule *r);
int agd_feed_rule_cmp(const struct ag_rule *a, const struct ag_rule *b);

/* What going from old to new adds and removes (both normalized); the
 * results own their arrays. */
int agd_feed_diff(const struct agd_feed_set *old, const struct agd_feed_set *new,
		  struct agd_feed_set *add, struct agd_feed_set *del);

/* A 64-bit FNV-1a digest of the set (its prefixes, in order): equal sets,
 * equal digests, on every host. */
uint64_t agd_feed_digest(const struct agd_feed_set *s);

/* The compact form: per prefix one byte (4 or 6), the length, then the
 * address bytes the length needs. *out malloc'ed. */
int agd_feed_encode(const struct agd_feed_set *s, size_t from, size_t count, uint8_t **out,
		    size_t *len);
/* Appends the prefixes of an encoded run to *s (not normalized); -EINVAL
 * for a damaged run. */
int agd_feed_decode(const uint8_t *buf, size_t len, struct agd_feed_set *s, struct agd_err *oe);

/* ---- a feed's stored state ----------------------------------------------- */

#define AGD_FEED_SOURCE_MAX 1023   /* a path or an http(s) URL */
#define AGD_FEED_VALIDATOR_MAX 255 /* ETag, Last-Modified */

/* What the store keeps of an agent's feed: where it comes from and the last
 * good set, applied. source "": a set given whole (agentgate rule sync),
 * never refreshed. */
struct agd_feed_meta {
	char source[AGD_FEED_SOURCE_MAX + 1];
	uint64_t interval_ms; /* 0: --rule-feed-interval */
	char etag[AGD_FEED_VALIDATOR_MAX + 1];
	char last_modified[AGD_FEED_VALIDATOR_MAX + 1];
	uint64_t applied_ms; /* when the set was applied; 0: none yet */
	uint64_t digest;     /* agd_feed_digest of the set */
};

#define AGD_FEED_REC_VERSION 1

/* The stored value: a header, the strings, the encoded set. *out malloc'ed. */
int agd_feed_rec_encode(const struct agd_feed_meta *m, const struct agd_feed_set *s, void **out,
			size_t *len);
/* -EUCLEAN for a damaged value (oe says what), -EPROTO for another version. */
int agd_feed_rec_decode(const void *buf, size_t len, struct agd_feed_meta *m,
			struct agd_feed_set *s, struct agd_err *oe);

#endif
