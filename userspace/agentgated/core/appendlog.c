// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "appendlog.h"

int agd_append_line(int fd, const char *text, size_t len)
{
	struct stat st;
	ssize_t n;
	char *buf;
	int err = 0;

	if (fstat(fd, &st))
		return -errno;
	buf = malloc(len + 1);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, text, len);
	buf[len] = '\n';
	n = write(fd, buf, len + 1);
	if (n < 0)
		err = -errno;
	else if ((size_t)n != len + 1)
		err = -ENOSPC; /* a short write to a regular file: the disk is full */
	if (n > 0 && err && ftruncate(fd, st.st_size))
		err = -errno;
	free(buf);
	return err;
}

/* 0640 under the daemon's umask: 0600, or 0640 with a read group (a file a
 * rotation makes while running is then readable by the group at once). */
static int open_append(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int agd_caplog_open(struct agd_caplog *l, const char *path, __u64 max, struct agd_err *err)
{
	struct stat st;
	int rc;

	memset(l, 0, sizeof(*l));
	snprintf(l->path, sizeof(l->path), "%s", path);
	snprintf(l->old, sizeof(l->old), "%s.1", path);
	l->max = max;
	l->fd = open_append(path);
	if (l->fd < 0 || fstat(l->fd, &st)) {
		rc = -errno;
		snprintf(err->msg, sizeof(err->msg), "cannot open %s: %s", path, strerror(-rc));
		if (l->fd >= 0)
			close(l->fd);
		l->fd = -1;
		return rc;
	}
	l->size = (__u64)st.st_size;
	pthread_mutex_init(&l->lock, NULL);
	return 0;
}

/* Lines in path (0 when it cannot be read: it is replaced all the same). */
static __u64 count_lines(const char *path)
{
	char buf[65536], *p;
	__u64 n = 0;
	ssize_t r;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	while (fd >= 0 && (r = read(fd, buf, sizeof(buf))) > 0)
		for (p = buf; (p = memchr(p, '\n', (size_t)(buf + r - p))); p++)
			n++;
	if (fd >= 0)
		close(fd);
	return n;
}

/* FILE becomes FILE.1; a new FILE. */
static int rotate(struct agd_caplog *l, __u64 *discarded)
{
	int fd;

	*discarded = count_lines(l->old);
	if (rename(l->path, l->old)) {
		*discarded = 0;
		return -errno;
	}
	fd = open_append(l->path);
	if (fd < 0)
		return -errno; /* the old descriptor stays: nothing is written to it */
	close(l->fd);
	l->fd = fd;
	l->size = 0;
	return 0;
}

int agd_caplog_append(struct agd_caplog *l, const char *text, size_t len, __u64 *discarded)
{
	int err = 0;

	*discarded = 0;
	if (l->fd < 0)
		return -EBADF;
	pthread_mutex_lock(&l->lock);
	if (l->size && l->size + len + 1 > l->max)
		err = rotate(l, discarded);
	if (!err)
		err = agd_append_line(l->fd, text, len);
	if (!err)
		l->size += len + 1;
	pthread_mutex_unlock(&l->lock);
	return err;
}

void agd_caplog_close(struct agd_caplog *l)
{
	if (l->fd < 0)
		return;
	close(l->fd);
	l->fd = -1;
	pthread_mutex_destroy(&l->lock);
}
