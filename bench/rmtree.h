/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* A benchmark's private pin root (or any tree), removed with what is in it. */
#ifndef AGENTGATE_BENCH_RMTREE_H
#define AGENTGATE_BENCH_RMTREE_H

#include <ftw.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/stat.h>

static int bench_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static inline void bench_rm_tree(const char *path)
{
	struct stat st;

	if (path[0] && !stat(path, &st))
		nftw(path, bench_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
