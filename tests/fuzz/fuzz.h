/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Shared by the libFuzzer harnesses in tests/fuzz: reading fields out of the
 * fuzzer's bytes, failing a check with a message, and a private sandbox
 * (mount and network namespaces) for the harnesses that need pinned maps.
 */
#ifndef AGENTGATE_FUZZ_H
#define AGENTGATE_FUZZ_H

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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

__attribute__((noreturn, format(printf, 4, 5))) static void
fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	int n;

	n = snprintf(msg, sizeof(msg), "%s:%d: check failed: (%s) ", file, line, cond);
	va_start(ap, fmt);
	vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	dprintf(fuzz_err_fd, "%s\n", msg);
	abort(); /* libFuzzer saves the input as a crash */
}

#define FUZZ_CHECK(cond, ...)                                                                \
	do {                                                                                 \
		if (!(cond))                                                                 \
			fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                   \
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
