// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * local_consume: an application on an agentgate edge host asking, before
 * each piece of work, whether the agent may go on, from the same bucket the
 * NIC charges the agent's packets to (docs/LOCAL.md).
 *
 *   local_consume [--pin-root DIR] AGENT [N] [TOKENS]
 *
 * Makes N checks (default 1) of TOKENS tokens (default 1), back to back,
 * and prints one line per check: "allowed, R left" or "refused, retry
 * after S s". Exit: 0 if every check was allowed, 1 if one was refused, 2
 * on an error (no maps, unknown agent, more tokens than the burst).
 *
 * Build beside an installed libagentgate:
 *   cc -O2 local_consume.c $(pkg-config --cflags --libs agentgate)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <agentgate.h>

int main(int argc, char **argv)
{
	struct ag_open_opts oo = { 0 }; /* the default pin root, maps opened for writing */
	struct ag_ctx *ctx;
	unsigned long n = 1, tokens = 1, i;
	int arg = 1, refused = 0, err;

	if (argc > 2 && !strcmp(argv[1], "--pin-root")) {
		oo.pin_root = argv[2];
		arg = 3;
	}
	if (argc - arg < 1 || argc - arg > 3) {
		fprintf(stderr, "usage: local_consume [--pin-root DIR] AGENT [N] [TOKENS]\n");
		return 2;
	}
	if (argc - arg > 1)
		n = strtoul(argv[arg + 1], NULL, 10);
	if (argc - arg > 2)
		tokens = strtoul(argv[arg + 2], NULL, 10);
	if (ag_open(&oo, &ctx)) {
		fprintf(stderr, "local_consume: %s\n", ag_errmsg());
		return 2;
	}
	for (i = 0; i < n; i++) {
		struct ag_consume_result res;

		/* No system call once the agent's slot is known: one
		 * compare-and-swap on the bucket the datapath uses. */
		err = ag_consume(ctx, argv[arg], tokens, &res);
		if (err) {
			fprintf(stderr, "local_consume: %s\n", ag_errmsg());
			ag_close(ctx);
			return 2;
		}
		if (res.allowed) {
			printf("allowed, %.3f left\n", res.remaining);
		} else {
			printf("refused, retry after %.6f s\n", (double)res.retry_after_ns / 1e9);
			refused = 1;
		}
	}
	ag_close(ctx);
	return refused;
}
