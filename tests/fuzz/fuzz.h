/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Shared by the libFuzzer harnesses in tests/fuzz: reading fields out of the
 * fuzzer's bytes, failing a check with a message (a product failure) or
 * reporting a harness error (the harness's own machinery failed: not the
 * product, not the input), system calls that survive signals and partial
 * transfers, and a private sandbox (mount and network namespaces) for the
 * harnesses that need pinned maps.
 */
#ifndef AGENTGATE_FUZZ_H
#define AGENTGATE_FUZZ_H

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- system calls that signals and full buffers interrupt -------------------------- */

/*
 * libFuzzer's -timeout alarm (SIGALRM, every timeout/2 + 1 s) and its other
 * handlers are installed without SA_RESTART: any blocking call of a harness
 * may fail with EINTR, or transfer part of its bytes. These helpers resume
 * them; what they return is a real outcome (0 or a count, else -errno).
 */

static inline long long fuzz_now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Waits for events on fd until deadline (fuzz_now_ms() time): 1 and the
 * events, 0 at the deadline, -errno. */
static inline int fuzz_poll(int fd, short events, long long deadline, short *revents)
{
	for (;;) {
		long long left = deadline - fuzz_now_ms();
		struct pollfd p = { .fd = fd, .events = events };
		int n;

		if (left < 0)
			left = 0;
		n = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (n > 0) {
			if (revents)
				*revents = p.revents;
			return 1;
		}
		if (n == 0 && fuzz_now_ms() >= deadline)
			return 0;
		if (n < 0 && errno != EINTR && errno != EAGAIN && errno != ENOMEM)
			return -errno;
	}
}

/*
 * connect() that a signal does not break. An interrupted TCP connect goes on
 * asynchronously (POSIX): the socket turns writable when it is made or has
 * failed, and SO_ERROR says which. An interrupted AF_UNIX connect is dropped
 * instead: no error, not connected (getpeername: ENOTCONN), so it is made
 * again; a connect retried while one is under way says EALREADY, or EISCONN
 * once it is made. 0 or -errno; -ETIMEDOUT at the deadline.
 */
static inline int fuzz_connect(int fd, const struct sockaddr *addr, socklen_t len,
			       long long deadline)
{
	for (;;) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer), elen;
		int err, rc;

		if (connect(fd, addr, len) == 0 || errno == EISCONN)
			return 0;
		if (errno != EINTR && errno != EINPROGRESS && errno != EALREADY && errno != EAGAIN)
			return -errno;
		rc = fuzz_poll(fd, POLLOUT, deadline, NULL);
		if (rc <= 0)
			return rc ? rc : -ETIMEDOUT;
		err = 0;
		elen = sizeof(err);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen))
			return -errno;
		if (err)
			return -err;
		if (getpeername(fd, (struct sockaddr *)&peer, &plen) == 0)
			return 0;
		if (errno != ENOTCONN)
			return -errno;
		if (fuzz_now_ms() >= deadline)
			return -ETIMEDOUT;
		poll(NULL, 0, 1); /* dropped, not failed: again after 1 ms (not nanosleep,
				   * which fuzz_cli wraps) */
	}
}

/* All n bytes to fd, through signals, short writes and a full pipe: 0 or
 * -errno. */
static inline int fuzz_write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t w = write(fd, c, n);

		if (w > 0) {
			c += w;
			n -= (size_t)w;
		} else if (w < 0 && errno == EAGAIN) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };

			poll(&pfd, 1, 100);
		} else if (w < 0 && errno != EINTR) {
			return -errno;
		}
	}
	return 0;
}

/* ---- failing ----------------------------------------------------------------- */

/* stderr as it was before libFuzzer's -close_fd_mask closed it: a failed
 * check must still say what failed. */
static int fuzz_err_fd = 2;

static inline void fuzz_keep_stderr(void)
{
	int fd = fcntl(2, F_DUPFD_CLOEXEC, 100);

	if (fd >= 0)
		fuzz_err_fd = fd;
}

static inline void fuzz_vreport(const char *head, const char *fmt, va_list ap)
{
	char msg[1200];
	size_t n = strlen(head);

	if (n > 600)
		n = 600;
	memcpy(msg, head, n);
	vsnprintf(msg + n, sizeof(msg) - 1 - n, fmt, ap);
	n = strlen(msg);
	msg[n++] = '\n';
	fuzz_write_all(fuzz_err_fd, msg, n);
}

/*
 * A product failure: the code under test broke a check. libFuzzer reports
 * the abort as a "deadly signal" and saves the input as crash-*.
 */
__attribute__((noreturn, format(printf, 4, 5))) static inline void
fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
	char head[640];
	va_list ap;

	snprintf(head, sizeof(head), "%s:%d: check failed: (%s) ", file, line, cond);
	va_start(ap, fmt);
	fuzz_vreport(head, fmt, ap);
	va_end(ap);
	abort(); /* libFuzzer saves the input as a crash */
}

#define FUZZ_CHECK(cond, ...)                                                                \
	do {                                                                                 \
		if (!(cond))                                                                 \
			fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                   \
	} while (0)

/*
 * A harness error: the harness's own machinery failed for real (no sandbox,
 * no descriptors, no ports, a scratch file it cannot write), not the code
 * under test, and not because of the input. Said as such, and the process
 * ends with FUZZ_HARNESS_EXIT at once: no crash-* artifact, no libFuzzer
 * "deadly signal". make fuzz and tests/fuzz/replay.sh tell it apart from a
 * product failure by that status.
 */
#define FUZZ_HARNESS_EXIT 75 /* EX_TEMPFAIL */

/* Run before that exit, if set: short, e.g. removing a scratch directory. */
static void (*fuzz_on_harness_error)(void);

__attribute__((noreturn, format(printf, 3, 4))) static inline void
fuzz_harness_error(const char *file, int line, const char *fmt, ...)
{
	char head[640];
	va_list ap;

	snprintf(head, sizeof(head),
		 "%s:%d: harness error (not a product failure; exit %d, input not saved): ", file,
		 line, FUZZ_HARNESS_EXIT);
	va_start(ap, fmt);
	fuzz_vreport(head, fmt, ap);
	va_end(ap);
	if (fuzz_on_harness_error)
		fuzz_on_harness_error();
	_exit(FUZZ_HARNESS_EXIT);
}

#define FUZZ_HARNESS_ERROR(...) fuzz_harness_error(__FILE__, __LINE__, __VA_ARGS__)
#define FUZZ_HARNESS_CHECK(cond, ...)                                                        \
	do {                                                                                 \
		if (!(cond))                                                                 \
			fuzz_harness_error(__FILE__, __LINE__, __VA_ARGS__);                 \
	} while (0)

/* ---- reading the input --------------------------------------------------- */

struct fuzz_in {
	const uint8_t *p;
	size_t n;
};

static inline uint8_t fuzz_u8(struct fuzz_in *in)
{
	uint8_t v = 0;

	if (in->n) {
		v = *in->p++;
		in->n--;
	}
	return v;
}

/* Little-endian, zero-padded when the input runs out. */
static inline uint64_t fuzz_uint(struct fuzz_in *in, unsigned int bytes)
{
	uint64_t v = 0;
	unsigned int i;

	for (i = 0; i < bytes; i++)
		v |= (uint64_t)fuzz_u8(in) << (8 * i);
	return v;
}

/* A NUL-terminated copy of everything left (free it). */
static inline char *fuzz_rest_str(struct fuzz_in *in, size_t *len)
{
	char *s = malloc(in->n + 1);

	if (!s)
		abort();
	memcpy(s, in->p, in->n);
	s[in->n] = 0;
	if (len)
		*len = in->n;
	in->p += in->n;
	in->n = 0;
	return s;
}

/* ---- a private sandbox ------------------------------------------------------- */

/*
 * A mount namespace of our own with an empty bpffs over /sys/fs/bpf, and
 * (net) a network namespace of our own with loopback up: pinned maps and
 * interfaces the harness touches exist only for this process and vanish
 * with it, whatever a fuzzed path or device names. Needs root.
 */
static inline int fuzz_sandbox(bool net)
{
	int flags = CLONE_NEWNS | (net ? CLONE_NEWNET : 0);

	if (unshare(flags))
		return -errno;
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
		return -errno;
	if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700"))
		return -errno;
	if (net) {
		struct ifreq ifr = { .ifr_name = "lo" };
		int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		int err = 0;

		if (fd < 0)
			return -errno;
		if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
			ifr.ifr_flags |= IFF_UP;
			if (ioctl(fd, SIOCSIFFLAGS, &ifr))
				err = -errno;
		} else {
			err = -errno;
		}
		close(fd);
		if (err)
			return err;
	}
	return 0;
}

/* A scratch directory on a tmpfs mounted in the sandbox (fsync costs
 * nothing; gone when the process ends). The empty directory itself is
 * removed by fuzz_scratch_remove(). */
static inline int fuzz_scratch(char *dir, size_t len, const char *tag)
{
	snprintf(dir, len, "/tmp/agentgate-%s.XXXXXX", tag);
	if (!mkdtemp(dir))
		return -errno;
	if (mount("tmpfs", dir, "tmpfs", 0, "size=256m,mode=0700")) {
		int err = -errno;

		rmdir(dir);
		return err;
	}
	return 0;
}

static inline void fuzz_scratch_remove(const char *dir)
{
	if (!dir[0])
		return;
	umount2(dir, MNT_DETACH);
	rmdir(dir);
}

#endif
