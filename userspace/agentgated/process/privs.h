/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Least privilege. Once set up (maps, state, attachments, ingest socket;
 * the HTTP listener opens afterwards), agentgated keeps only the
 * capabilities it still uses, in every thread: CAP_BPF (maps, loading the
 * program on SIGHUP), CAP_NET_ADMIN (attaching on SIGHUP), CAP_PERFMON (the
 * verifier refuses the program's packet pointer arithmetic without it), and
 * CAP_NET_BIND_SERVICE when it listens on a port below 1024; each only if
 * it was given. The bounding set shrinks to the same (when CAP_SETPCAP
 * allows), the ambient and inheritable sets are emptied, no_new_privs is
 * set. --user switches to an account at the same moment; --read-group lets
 * a group read the pins and the state (read-only CLI use).
 */
#ifndef AGENTGATED_PRIVS_H
#define AGENTGATED_PRIVS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <linux/types.h>
#include "core/err.h"

#define AGD_PRIVS_GROUPS_MAX 64

struct agd_privs_opts {
	const char *user;       /* "" or NULL: stay who we are */
	const char *read_group; /* "" or NULL: pins and state for the owner only */
	const char *listen;     /* ADDR:PORT, for CAP_NET_BIND_SERVICE */
	const char *pin_path, *state_dir;
};

struct agd_privs {
	bool switch_user;
	uid_t uid;
	gid_t gid;
	gid_t groups[AGD_PRIVS_GROUPS_MAX];
	int n_groups;
	char user[64];
	bool read_group;
	gid_t read_gid;
	__u64 keep;       /* capabilities kept (bit n: capability n) */
	bool drop_bounding; /* CAP_SETPCAP is effective: the bounding set can shrink */
	int last_cap;
	char pin_path[4096], state_dir[4096];
};

/* Resolves the account and group and decides what to keep; sets the
 * umask (077, or 027 with a read group). 0, or -errno with the reason:
 * -EUSERS when the account (--user, or the one started as when not root)
 * is not agentgated's alone: root, nobody/nogroup, a static account of the
 * distribution, one with a login shell, or one another process runs as. */
int agd_privs_plan(const struct agd_privs_opts *o, struct agd_privs *p, struct agd_err *err);

/* Gives the pins and the state to the account and group (owner only
 * otherwise), then drops, in every thread, and checks every thread.
 * 0, or -errno with the reason: the daemon must not go on. warn gets ""
 * or what will not work as that account (a pin root it cannot reach). */
int agd_privs_drop(const struct agd_privs *p, char *warn, size_t wlen, struct agd_err *err);

/* "uid 65534 (nobody), CAP_BPF CAP_NET_ADMIN CAP_PERFMON", for the log. */
void agd_privs_describe(const struct agd_privs *p, char *buf, size_t len);

#endif
