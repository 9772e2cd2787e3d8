// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The owner of a pin root (agentgate.h says the protocol): an flock on
 * <pin root>/owner, exclusive for agentgated's life, shared for a CLI write,
 * and the daemon's record pinned beside it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "internal.h"

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif

_Static_assert(sizeof(struct ag_owner) == 136, "struct ag_owner is shared between versions");

static int owner_path(const char *pin_root, const char *leaf, char *buf, size_t len)
{
	int n = leaf ? snprintf(buf, len, "%s/%s/%s", pin_root, AG_PIN_OWNER_DIR, leaf)
		     : snprintf(buf, len, "%s/%s", pin_root, AG_PIN_OWNER_DIR);

	if (n < 0 || (size_t)n >= len)
		return ag_err(ENAMETOOLONG, "pin path too long: %s", pin_root);
	return 0;
}

/* Opens <pin root>/owner, creating it (and the pin root) when missing. The
 * pin root must be on a BPF filesystem: a plain directory of that name
 * would hold a lock no daemon on the real pins sees. */
static int open_owner_dir(const char *pin_root, bool create, int *out)
{
	char path[PATH_MAX];
	struct statfs sfs;
	int fd, err;

	err = owner_path(pin_root, NULL, path, sizeof(path));
	if (err)
		return err;
	if (create) {
		err = ag_mkdir_p(pin_root, 0700);
		if (err)
			return ag_err(-err, "cannot create pin root %s: %s", pin_root,
				      strerror(-err));
		if (statfs(pin_root, &sfs) == 0 && sfs.f_type != BPF_FS_MAGIC)
			return ag_err(ENOTSUP,
				      "%s is not on a BPF filesystem (mount one: mount -t bpf bpf %s)",
				      pin_root, pin_root);
		if (mkdir(path, 0700) && errno != EEXIST)
			return ag_err(errno, "cannot create %s: %s", path, strerror(errno));
	}
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return ag_err(errno, "cannot open %s: %s", path, strerror(errno));
	*out = fd;
	return 0;
}

static int try_lock(int fd, int op)
{
	while (flock(fd, op | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			return 1;
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

/* The pinned record, or rec->pid 0 when there is none (or it is not ours). */
static void read_record(const char *pin_root, struct ag_owner *rec)
{
	char path[PATH_MAX];
	__u32 zero = 0;
	int fd;

	memset(rec, 0, sizeof(*rec));
	if (owner_path(pin_root, AG_PIN_OWNER_REC, path, sizeof(path)))
		return;
	fd = bpf_obj_get(path);
	if (fd < 0)
		return;
	if (bpf_map_lookup_elem(fd, &zero, rec) || rec->version != 1)
		memset(rec, 0, sizeof(*rec));
	rec->control[sizeof(rec->control) - 1] = '\0';
	close(fd);
}

int ag_owner_acquire(const char *pin_root, int wait_ms, int *fd_out, struct ag_owner *holder)
{
	struct timespec pause = { 0, 10 * 1000 * 1000 };
	int fd, err, waited = 0;

	memset(holder, 0, sizeof(*holder));
	err = open_owner_dir(pin_root, true, &fd);
	if (err)
		return err;
	for (;;) {
		err = try_lock(fd, LOCK_EX);
		if (err <= 0)
			break;
		if (waited >= wait_ms) {
			read_record(pin_root, holder);
			close(fd);
			return ag_err(EBUSY, "%s is owned by another process", pin_root);
		}
		nanosleep(&pause, NULL);
		waited += 10;
	}
	if (err) {
		close(fd);
		return ag_err(-err, "cannot lock %s/%s: %s", pin_root, AG_PIN_OWNER_DIR,
			      strerror(-err));
	}
	*fd_out = fd;
	return 0;
}

int ag_owner_publish(const char *pin_root, const struct ag_owner *rec)
{
	LIBBPF_OPTS(bpf_map_create_opts, o);
	char path[PATH_MAX];
	__u32 zero = 0;
	int fd, err;

	err = owner_path(pin_root, AG_PIN_OWNER_REC, path, sizeof(path));
	if (err)
		return err;
	fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "ag_owner", sizeof(__u32), sizeof(*rec), 1, &o);
	if (fd < 0)
		return ag_err(errno, "cannot create the owner record: %s", strerror(errno));
	if (bpf_map_update_elem(fd, &zero, rec, BPF_ANY)) {
		err = ag_err(errno, "cannot write the owner record: %s", strerror(errno));
		goto cleanup;
	}
	/* A record left by a process that died holds nothing: replace it. */
	if (unlink(path) && errno != ENOENT) {
		err = ag_err(errno, "cannot remove the stale %s: %s", path, strerror(errno));
		goto cleanup;
	}
	err = bpf_obj_pin(fd, path) ? ag_err(errno, "cannot pin %s: %s", path, strerror(errno))
				    : 0;
cleanup:
	close(fd);
	return err;
}

void ag_owner_release(const char *pin_root, int fd)
{
	char path[PATH_MAX];

	if (fd < 0)
		return;
	if (!owner_path(pin_root, AG_PIN_OWNER_REC, path, sizeof(path)))
		unlink(path);
	close(fd); /* releases the lock */
}

int ag_owner_probe(const char *pin_root, int *fd_out, struct ag_owner *rec)
{
	int fd, err;

	memset(rec, 0, sizeof(*rec));
	/* Created when missing, so that a daemon starting now locks the very
	 * directory this writer holds. */
	err = open_owner_dir(pin_root, fd_out != NULL, &fd);
	if (err == -ENOENT && !fd_out)
		return 0; /* never owned, and an inspection creates nothing */
	if (err)
		return err;
	err = try_lock(fd, LOCK_SH);
	if (err < 0) {
		close(fd);
		return ag_err(-err, "cannot lock %s/%s: %s", pin_root, AG_PIN_OWNER_DIR,
			      strerror(-err));
	}
	if (err == 1) {
		close(fd);
		read_record(pin_root, rec);
		return 1;
	}
	if (fd_out)
		*fd_out = fd;
	else
		close(fd);
	return 0;
}

/* ---- the journal of changes made without a daemon ---------------------------------- */

struct journal_key {
	__u32 kind;
	char name[AG_NAME_MAX];
	__u8 family; /* 4 or 6 */
	__u8 plen;
	__u16 port;
	__u8 addr[16];
};
_Static_assert(sizeof(struct journal_key) == 88, "journal key layout is shared between versions");

static __u64 wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (__u64)ts.tv_sec * 1000 + (__u64)ts.tv_nsec / 1000000;
}

static int journal_open(const char *pin_root, bool create, int *out)
{
	LIBBPF_OPTS(bpf_map_create_opts, o);
	char path[PATH_MAX];
	int fd, err;

	err = owner_path(pin_root, AG_PIN_OWNER_JOURNAL, path, sizeof(path));
	if (err)
		return err;
	fd = bpf_obj_get(path);
	if (fd >= 0 || errno != ENOENT || !create) {
		if (fd < 0)
			return errno == ENOENT ? -ENOENT
					       : ag_err(errno, "cannot open %s: %s", path, strerror(errno));
		*out = fd;
		return 0;
	}
	fd = bpf_map_create(BPF_MAP_TYPE_HASH, "ag_journal", sizeof(struct journal_key),
			    sizeof(__u64), AG_JOURNAL_MAX, &o);
	if (fd < 0)
		return ag_err(errno, "cannot create the journal %s: %s", path, strerror(errno));
	if (bpf_obj_pin(fd, path)) {
		err = errno;
		close(fd);
		/* Another writer (they share the lock) pinned it first: use that one. */
		if (err == EEXIST && (fd = bpf_obj_get(path)) >= 0) {
			*out = fd;
			return 0;
		}
		return ag_err(err, "cannot pin %s: %s", path, strerror(err));
	}
	*out = fd;
	return 0;
}

int ag_owner_journal_add(const char *pin_root, enum ag_journal_kind kind, const char *name,
			 const struct ag_rule *rule)
{
	struct journal_key k;
	__u64 now = wall_ms();
	int fd, err;

	memset(&k, 0, sizeof(k));
	k.kind = kind;
	if (kind == AG_JOURNAL_AGENT)
		memcpy(k.name, name, strnlen(name, sizeof(k.name)));
	if (kind == AG_JOURNAL_RULE) {
		k.family = rule->family == AF_INET6 ? 6 : 4;
		k.plen = rule->plen;
		k.port = rule->port;
		memcpy(k.addr, rule->addr, 16);
	}
	err = journal_open(pin_root, true, &fd);
	if (err)
		return err;
	if (!bpf_map_update_elem(fd, &k, &now, BPF_ANY)) {
		close(fd);
		return 0;
	}
	if (errno != E2BIG) {
		err = ag_err(errno, "cannot write the journal: %s", strerror(errno));
		close(fd);
		return err;
	}
	/* Full: from now on the maps are the truth for everything; one entry
	 * makes room for that (what it said, ALL says too). */
	memset(&k, 0, sizeof(k));
	k.kind = AG_JOURNAL_ALL;
	if (bpf_map_update_elem(fd, &k, &now, BPF_ANY)) {
		struct journal_key any;

		if (!bpf_map_get_next_key(fd, NULL, &any))
			bpf_map_delete_elem(fd, &any);
		if (bpf_map_update_elem(fd, &k, &now, BPF_ANY))
			err = ag_err(errno, "cannot write the journal: %s", strerror(errno));
	}
	close(fd);
	return err;
}

int ag_owner_journal_read(const char *pin_root, struct ag_journal_entry **out, size_t *n_out)
{
	struct ag_journal_entry *list = NULL;
	struct journal_key k, next;
	size_t n = 0, cap = 0;
	void *prev = NULL;
	int fd, err;

	*out = NULL;
	*n_out = 0;
	err = journal_open(pin_root, false, &fd);
	if (err == -ENOENT)
		return 0;
	if (err)
		return err;
	while (!bpf_map_get_next_key(fd, prev, &next)) {
		struct ag_journal_entry *e;
		__u64 t = 0;

		k = next;
		prev = &k;
		if (bpf_map_lookup_elem(fd, &k, &t))
			continue;
		if (n == cap) {
			struct ag_journal_entry *grown;

			cap = cap ? cap * 2 : 64;
			grown = realloc(list, cap * sizeof(*list));
			if (!grown) {
				free(list);
				close(fd);
				return ag_err(ENOMEM, "out of memory");
			}
			list = grown;
		}
		e = &list[n];
		memset(e, 0, sizeof(*e));
		e->kind = (enum ag_journal_kind)k.kind;
		e->time_ms = t;
		if (k.kind == AG_JOURNAL_AGENT) {
			memcpy(e->name, k.name, sizeof(k.name));
			e->name[AG_NAME_MAX] = '\0';
		} else if (k.kind == AG_JOURNAL_RULE) {
			e->rule.family = k.family == 6 ? AF_INET6 : AF_INET;
			e->rule.plen = k.plen;
			e->rule.port = k.port;
			memcpy(e->rule.addr, k.addr, 16);
		} else if (k.kind != AG_JOURNAL_ALL) {
			continue; /* a kind of a later version: ignored */
		}
		n++;
	}
	close(fd);
	*out = list;
	*n_out = n;
	return 0;
}

int ag_owner_journal_clear(const char *pin_root)
{
	char path[PATH_MAX];
	int err = owner_path(pin_root, AG_PIN_OWNER_JOURNAL, path, sizeof(path));

	if (err)
		return err;
	if (unlink(path) && errno != ENOENT)
		return ag_err(errno, "cannot remove %s: %s", path, strerror(errno));
	return 0;
}
