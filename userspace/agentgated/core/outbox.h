/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The fleet's outbox: messages kept on disk while NATS is unreachable, in
 * <state dir>/outbox, an LMDB environment of its own (the state store's
 * size limit and write transactions are not shared with it). Keys count up
 * from 1, so the publisher sends in the order ratings were kept. Writers
 * (put, delete) are serialized here; reads may run beside them. */
#ifndef AGD_OUTBOX_H
#define AGD_OUTBOX_H

#include <linux/types.h>
#include <stddef.h>

#include "err.h"

#define AGD_OUTBOX_SUBJECT_MAX 255
#define AGD_OUTBOX_ID_MAX 128

struct agd_outbox;

struct agd_outbox_msg {
	__u64 key; /* set by agd_outbox_read */
	char subject[AGD_OUTBOX_SUBJECT_MAX + 1];
	char id[AGD_OUTBOX_ID_MAX + 1];
	const char *data; /* valid during the callback (read) or the call (put) */
	size_t len;
};

/* Opens (creating) the outbox under state_dir; *depth: the messages it holds. */
int agd_outbox_open(const char *state_dir, struct agd_outbox **out, __u64 *depth,
		    struct agd_err *err);
/* Keeps n messages, all or none: 0 once committed, else -EIO (err says why). */
int agd_outbox_put(struct agd_outbox *o, const struct agd_outbox_msg *m, size_t n,
		   struct agd_err *err);
/* Calls fn for the first max messages, oldest first; 0, or -EIO. */
int agd_outbox_read(struct agd_outbox *o, size_t max,
		    void (*fn)(void *arg, const struct agd_outbox_msg *m), void *arg);
/* Removes the messages with these keys (absent ones are not an error);
 * *gone: how many it removed. */
int agd_outbox_delete(struct agd_outbox *o, const __u64 *keys, size_t n, size_t *gone,
		      struct agd_err *err);
void agd_outbox_close(struct agd_outbox *o);

#endif
