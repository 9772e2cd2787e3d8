// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Baseline for the rating-ingest benchmark: the same NDJSON lines through
 * the same per-line parser agentgated uses, applied nowhere. The ingest
 * figure divided by this one is the cost of everything else (queue, policy,
 * LMDB commit, map writes).
 * Usage: rating_parse FILE  -> prints "lines seconds"
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/rating.h"

int main(int argc, char **argv)
{
	struct agd_rating r;
	struct agd_rating_error e;
	struct timespec a, b;
	size_t cap = 0, n = 0, bad = 0;
	ssize_t len;
	char *line = NULL;
	FILE *f;

	if (argc != 2 || !(f = fopen(argv[1], "r"))) {
		fprintf(stderr, "usage: rating_parse FILE\n");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &a);
	while ((len = getline(&line, &cap, f)) > 0) {
		if (line[len - 1] == '\n')
			len--;
		bad += agd_rating_parse_line(line, (size_t)len, &r, &e) != 0;
		n++;
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	free(line);
	fclose(f);
	if (bad) {
		fprintf(stderr, "rating_parse: %zu invalid lines\n", bad);
		return 1;
	}
	printf("%zu %.6f\n", n, (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9);
	return 0;
}
