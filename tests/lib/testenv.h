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

#define TESTENV_ROOTS 8
static char testenv_roots[TESTENV_ROOTS][PATH_MAX];
static int testenv_nroots;

static int testenv_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return flag == FTW_DP ? rmdir(path) : unlink(path);
}

/* Every root this program asked for, not only the last. */
static inline void testenv_cleanup(void)
{
	int i;

	for (i = 0; i < testenv_nroots; i++)
		nftw(testenv_roots[i], testenv_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* Returns a fresh pin root "<bpffs>/<tag>-<pid>", removed at exit. */
static inline const char *testenv_pin_root(const char *tag)
{
	const char *base = getenv("AG_TEST_BPFFS");
	struct statfs sfs;
	char *root;

	if (!base || statfs(base, &sfs) || sfs.f_type != BPF_FS_MAGIC) {
		fprintf(stderr, "AG_TEST_BPFFS must name a mounted bpffs (tests/run.sh does this)\n");
		exit(2);
	}
	if (testenv_nroots == TESTENV_ROOTS) {
		fprintf(stderr, "testenv: more than %d pin roots\n", TESTENV_ROOTS);
		exit(2);
	}
	root = testenv_roots[testenv_nroots];
	snprintf(root, PATH_MAX, "%s/%s-%d", base, tag, (int)getpid());
	nftw(root, testenv_rm, 16, FTW_DEPTH | FTW_PHYS);
	if (!testenv_nroots++)
		atexit(testenv_cleanup);
	return root;
}

#endif
