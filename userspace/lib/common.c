// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Errors, warnings, time and the inter-process lock. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>

#include "internal.h"

static __thread char errbuf[512];

const char *ag_errmsg(void)
{
	return errbuf[0] ? errbuf : "no error";
}

int ag_err(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errbuf, sizeof(errbuf), fmt, ap);
	va_end(ap);
	return -err;
}

static void log_stderr(const char *msg)
{
	fprintf(stderr, "agentgate: warning: %s\n", msg);
}

static ag_log_fn log_fn = log_stderr;

void ag_set_log(ag_log_fn fn)
{
	log_fn = fn ? fn : log_stderr;
}

void ag_warn(const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_fn(buf);
}

/*
 * In a time namespace CLOCK_MONOTONIC is shifted by an offset that
 * bpf_ktime_get_ns() does not see; buckets must run on the kernel's own
 * monotonic clock, so the offset is taken back out. It is read once per
 * process: a child may be forked into another time namespace, so fork()
 * forgets it.
 */
static __s64 timens_offset_ns;
static atomic_int timens_known;

static void forget_timens_offset(void)
{
	atomic_store(&timens_known, 0);
}

static void register_atfork(void)
{
	pthread_atfork(NULL, NULL, forget_timens_offset);
}

static void read_timens_offset(void)
{
	static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
	FILE *f = fopen("/proc/self/timens_offsets", "r");
	char clock[32];
	long long sec, nsec;
	__s64 offset = 0;

	pthread_once(&atfork_once, register_atfork);
	while (f && fscanf(f, "%31s %lld %lld", clock, &sec, &nsec) == 3)
		if (!strcmp(clock, "monotonic"))
			offset = sec * 1000000000LL + nsec;
	if (f)
		fclose(f);
	timens_offset_ns = offset;
	atomic_store(&timens_known, 1);
}

/* The quotas' clock (abi.h, "Long-window quotas"); here beside ag_now_ns
 * so that a harness can put both on simulated clocks (--wrap). */
__u64 ag_tai_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_TAI, &ts);
	return (__u64)ts.tv_sec * 1000000000ULL + (__u64)ts.tv_nsec;
}

__u64 ag_now_ns(void)
{
	struct timespec ts;

	if (!atomic_load(&timens_known))
		read_timens_offset(); /* racing readers read the same value */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000000000ULL + (__u64)ts.tv_nsec - (__u64)timens_offset_ns;
}

int ag_require_writable(const struct ag_ctx *ctx)
{
	if (ctx->read_only)
		return ag_err(EROFS, "pinned maps under %s were opened read-only", ctx->pin_root);
	return 0;
}

int ag_lock(struct ag_ctx *ctx)
{
	struct ag_config cfg;
	int err;

	err = ag_require_writable(ctx);
	if (err)
		return err;
	pthread_mutex_lock(&ctx->lock);
	if (ctx->lock_depth++ > 0)
		return 0;
	while (flock(ctx->dir_fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			err = errno;
			ctx->lock_depth = 0;
			pthread_mutex_unlock(&ctx->lock);
			return ag_err(err, "cannot lock %s: %s", ctx->pin_root, strerror(err));
		}
	}
	/* A process that died mid-change left its journal bit: finish the job. */
	err = ag_config_read(ctx, &cfg);
	if (!err && (cfg.dirty & AG_DIRTY_AGENTS))
		err = ag_repair_agents(ctx);
	if (!err && (cfg.dirty & AG_DIRTY_RULES))
		err = ag_repair_rules(ctx);
	if (!err && cfg.dirty)
		err = ag_dirty_clear(ctx, cfg.dirty);
	if (err)
		ag_unlock(ctx);
	return err;
}

void ag_unlock(struct ag_ctx *ctx)
{
	if (ctx->lock_depth <= 0)
		return;
	if (--ctx->lock_depth == 0)
		flock(ctx->dir_fd, LOCK_UN);
	pthread_mutex_unlock(&ctx->lock);
}
