// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
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
