/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Minimal TAP test harness in the style of selftests/bpf: ASSERT_* macros
 * print the failing expression with both values and evaluate to a bool, so a
 * test can stop at its first failure with `if (!ASSERT_EQ(...)) return false;`.
 * tests/run.sh counts the "ok"/"not ok"/"# SKIP" lines.
 */
#ifndef AGENTGATE_TEST_HARNESS_H
#define AGENTGATE_TEST_HARNESS_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Exit code of a test program that cannot run here (not root, no BPF). */
#define TEST_SKIP_CODE 77

static int h_count, h_failed;

#define ASSERT_TRUE(cond, what)                                                          \
	({                                                                               \
		bool ok_ = (cond);                                                       \
		if (!ok_)                                                                \
			fprintf(stderr, "  %s:%d: %s: expected true: %s\n", __FILE__,    \
				__LINE__, (what), #cond);                                \
		ok_;                                                                     \
	})

#define ASSERT_CMP(a, op, b, what)                                                       \
	({                                                                               \
		long long a_ = (long long)(a), b_ = (long long)(b);                      \
		bool ok_ = a_ op b_;                                                     \
		if (!ok_)                                                                \
			fprintf(stderr, "  %s:%d: %s: %s = %lld, expected %s %lld\n",    \
				__FILE__, __LINE__, (what), #a, a_, #op, b_);            \
		ok_;                                                                     \
	})

#define ASSERT_EQ(a, b, what) ASSERT_CMP(a, ==, b, what)
#define ASSERT_LE(a, b, what) ASSERT_CMP(a, <=, b, what)
#define ASSERT_GE(a, b, what) ASSERT_CMP(a, >=, b, what)
#define ASSERT_OK(err, what)                                                             \
	({                                                                               \
		long long e_ = (long long)(err);                                         \
		if (e_)                                                                  \
			fprintf(stderr, "  %s:%d: %s failed: %lld (%s)\n", __FILE__,     \
				__LINE__, (what), e_, ag_errmsg());                      \
		e_ == 0;                                                                 \
	})

static inline void h_plan(int n)
{
	printf("1..%d\n", n);
	fflush(stdout);
}

static inline void h_result(const char *name, bool ok)
{
	h_count++;
	if (!ok)
		h_failed++;
	printf("%sok %d - %s\n", ok ? "" : "not ", h_count, name);
	fflush(stdout);
}

static inline void h_skip(const char *name, const char *why)
{
	h_count++;
	printf("ok %d - %s # SKIP %s\n", h_count, name, why);
	fflush(stdout);
}

static inline int h_exit(void)
{
	return h_failed ? 1 : 0;
}

/* Skip the whole program unless it runs as root. */
static inline void h_require_root(void)
{
	if (geteuid() != 0) {
		printf("1..0 # SKIP needs root (BPF and bpffs)\n");
		exit(TEST_SKIP_CODE);
	}
}

#endif
