/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The pages of GET /v1/agents, read by one thread of their own.
 *
 * A page is read from the store (agd_engine_agent_page): an LMDB read
 * transaction. LMDB ties a reader slot to each thread that ever reads, for
 * as long as the thread lives, and the state store has 126 of them, while
 * the HTTP server runs --threads workers (64 by default, up to 20000):
 * pages read by whichever worker took the request would run out of slots
 * and be refused for good once enough workers had served one. The lister's
 * thread takes its slot at start and serves the pages in turn (one costs
 * about a millisecond at 10^6 agents), so at most one page is in memory at
 * a time, however many clients list at once.
 */
#ifndef AGENTGATED_LISTER_H
#define AGENTGATED_LISTER_H

#include <stddef.h>

#include "engine.h"

struct agd_lister;

/* Starts the thread and reads a first page, which takes its reader slot. */
int agd_lister_start(struct agd_engine *e, struct agd_lister **out);
/* Waits for the page in progress, then stops the thread. NULL: nothing. */
void agd_lister_stop(struct agd_lister *l);

/* agd_engine_agent_page() in the lister's thread; waits for the pages
 * asked for before. -ESHUTDOWN once stopping. */
int agd_lister_page(struct agd_lister *l, const char *after, size_t limit,
		    struct agd_agent_view **out, size_t *n, char next[AG_NAME_MAX + 1]);

#endif
