/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * A private pin root per test program under the bpffs that tests/run.sh
 * mounted (AG_TEST_BPFFS), removed again at exit.
 */
#ifndef AGENTGATE_TESTENV_H
#define AGENTGATE_TESTENV_H

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif

static char testenv_root[PATH_MAX];

static int testenv_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static inline void testenv_cleanup(void)
{
	if (testenv_root[0])
		nftw(testenv_root, testenv_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* Returns a fresh pin root "<bpffs>/<tag>-<pid>", removed at exit. */
static inline const char *testenv_pin_root(const char *tag)
{
	const char *base = getenv("AG_TEST_BPFFS");
	struct statfs sfs;

	if (!base || statfs(base, &sfs) || sfs.f_type != BPF_FS_MAGIC) {
		fprintf(stderr, "AG_TEST_BPFFS must name a mounted bpffs (tests/run.sh does this)\n");
		exit(2);
	}
	snprintf(testenv_root, sizeof(testenv_root), "%s/%s-%d", base, tag, (int)getpid());
	testenv_cleanup();
	atexit(testenv_cleanup);
	return testenv_root;
}

#endif
