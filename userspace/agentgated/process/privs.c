// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Dropping privileges in every thread. Capabilities, the bounding set,
 * securebits and no_new_privs belong to each thread, not to the process, and
 * by the time setup is done the HTTP server's loops and workers, the
 * engine's and the stream's threads exist. So the drop is broadcast the way glibc broadcasts
 * setuid(): each thread gets a signal whose handler makes the same raw
 * system calls (async-signal-safe) on itself, then the main thread reads
 * /proc/self/task/<tid>/status of every thread and signals again any that
 * does not show the expected identity and sets (a thread created meanwhile
 * by one that had not dropped yet). The daemon goes on only when all do.
 */
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>

#include "agentgate/abi.h"
#include "privs.h"

#define BIT(cap) (1ULL << (cap))

/* The signal that carries the drop to each thread (glibc keeps the first
 * real-time signals for itself; SIGRTMIN is past them). */
#define DROP_SIGNAL (SIGRTMIN + 3)
#define DROP_ROUNDS 8
#define DROP_WAIT_MS 2000

static const struct {
	int cap;
	const char *name;
} cap_names[] = {
	{ CAP_BPF, "CAP_BPF" },
	{ CAP_NET_ADMIN, "CAP_NET_ADMIN" },
	{ CAP_PERFMON, "CAP_PERFMON" },
	{ CAP_NET_BIND_SERVICE, "CAP_NET_BIND_SERVICE" },
};

/* ---- planning -------------------------------------------------------------------- */

static int caps_get(__u64 *eff, __u64 *prm)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	/* zeroed: valgrind's capget knows of one struct, version 3 fills two */
	struct __user_cap_data_struct d[2] = { { 0 } };

	if (syscall(SYS_capget, &h, d))
		return -errno;
	*eff = d[0].effective | (__u64)d[1].effective << 32;
	*prm = d[0].permitted | (__u64)d[1].permitted << 32;
	return 0;
}

static int last_cap(void)
{
	FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
	int n = CAP_LAST_CAP;

	if (f) {
		if (fscanf(f, "%d", &n) != 1 || n < 0 || n > 63)
			n = CAP_LAST_CAP;
		fclose(f);
	}
	return n;
}

/* A port below 1024 needs CAP_NET_BIND_SERVICE (for as long as it is bound). */
static bool privileged_port(const char *listen)
{
	const char *colon = listen ? strrchr(listen, ':') : NULL;
	long port = colon ? strtol(colon + 1, NULL, 10) : 0;

	return port > 0 && port < 1024;
}

static bool all_digits(const char *s)
{
	return *s && strspn(s, "0123456789") == strlen(s);
}

/* The error of a failed getpw* / getgr* lookup (errno 0: not found). */
static int not_found(const char *opt, const char *name, const char *what, struct agd_err *err)
{
	return agd_errf(err, -ENOENT, "--%s %s: no such %s%s%s", opt, name, what, errno ? ": " : "",
		 errno ? strerror(errno) : "");
}

/* ---- the account: one of agentgated's own ----------------------------------------------
 *
 * The pins and the state become the account's, and every process running
 * as it may then write the maps: rates, rules, dry-run. So the account must
 * be agentgated's alone, and is refused (-EUSERS) when it is
 *   - root (uid 0): --user names the account to switch to;
 *   - nobody or nogroup (uid or primary gid 65534): shared by unrelated
 *     services, and by every NFS user squashed to it;
 *   - a static account of the distribution, below SYS_UID_MIN of
 *     /etc/login.defs (default 100): daemon, bin, www-data... are shared by
 *     convention;
 *   - an account with a login shell (anything but nologin or false): people
 *     and their scripts log in as it;
 *   - the account of any other running process at start (agentgated's own,
 *     and the CLI's, aside): someone else uses it already.
 * A system account made for it (useradd --system --shell
 * /usr/sbin/nologin, as make install does) passes.
 */
#define ACCOUNT_HINT "; create a system account of agentgated's own (make install does: useradd " \
	"--system --user-group --no-create-home --shell /usr/sbin/nologin agentgate) and name " \
	"it instead"

static unsigned long sys_uid_min(void)
{
	FILE *f = fopen("/etc/login.defs", "re");
	unsigned long v = 100, n;
	char line[256];

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, " SYS_UID_MIN %lu", &n) == 1)
			v = n;
	if (f)
		fclose(f);
	return v;
}

static bool login_shell(const char *shell)
{
	const char *base = strrchr(shell, '/');

	base = base ? base + 1 : shell;
	return !*shell || (strcmp(base, "nologin") && strcmp(base, "false"));
}

/* A process other than this one and agentgate's own running as uid (any of
 * its real, effective, saved or file-system ids): "NAME (pid N)" in who. */
static bool other_process(uid_t uid, char *who, size_t len)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	bool found = false;

	while (d && !found && (de = readdir(d))) {
		char path[300], line[256], name[64] = "";
		unsigned int u[4];
		bool theirs = false;
		FILE *f;

		if (!all_digits(de->d_name) || atoi(de->d_name) == getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/%s/status", de->d_name);
		f = fopen(path, "re");
		while (f && fgets(line, sizeof(line), f)) {
			if (sscanf(line, "Name: %63s", name) == 1)
				continue;
			if (sscanf(line, "Uid: %u %u %u %u", &u[0], &u[1], &u[2], &u[3]) == 4)
				theirs = u[0] == uid || u[1] == uid || u[2] == uid || u[3] == uid;
		}
		if (f)
			fclose(f);
		if (theirs && strncmp(name, "agentgate", 9)) {
			snprintf(who, len, "%s (pid %s)", name, de->d_name);
			found = true;
		}
	}
	if (d)
		closedir(d);
	return found;
}

/* how: "--user NAME" or "running as NAME"; shell NULL when unknown. */
static int check_account(const char *how, uid_t uid, gid_t gid, const char *name,
			 const char *shell, struct agd_err *err)
{
	unsigned long min = sys_uid_min();
	char who[128];

	if (uid == 0)
		snprintf(err->msg, sizeof(err->msg),
			"%s: root is not an account to switch to: leave --user out to "
			 "stay root, or name an account of agentgated's own", how);
	else if (uid == 65534 || gid == 65534 || !strcmp(name, "nobody") ||
		 !strcmp(name, "nfsnobody"))
		snprintf(err->msg, sizeof(err->msg),
			"%s: nobody/nogroup (65534) is shared by unrelated services "
			 "and NFS's squashed users, and any of them could rewrite the pinned maps "
			 "(rates, rules, dry-run)" ACCOUNT_HINT, how);
	else if (uid < min)
		snprintf(err->msg, sizeof(err->msg),
			"%s: uid %u is a static account of the distribution (below "
			 "SYS_UID_MIN %lu), shared by convention, and any process running as it "
			 "could rewrite the pinned maps" ACCOUNT_HINT, how, (unsigned int)uid, min);
	else if (shell && login_shell(shell))
		snprintf(err->msg, sizeof(err->msg),
			"%s: the account has a login shell (%s): people and their "
			 "scripts log in as it and could rewrite the pinned maps" ACCOUNT_HINT
			 " (or: usermod --shell /usr/sbin/nologin %s)", how,
			 *shell ? shell : "/bin/sh", name);
	else if (other_process(uid, who, sizeof(who)))
		snprintf(err->msg, sizeof(err->msg),
			"%s: the account is shared: %s runs as it, and could rewrite "
			 "the pinned maps" ACCOUNT_HINT, how, who);
	else
		return 0;
	return -EUSERS;
}

static int resolve_user(const char *name, struct agd_privs *p, struct agd_err *err)
{
	struct passwd *pw;
	char how[300];
	int rc;

	errno = 0;
	pw = all_digits(name) ? getpwuid((uid_t)strtoul(name, NULL, 10)) : getpwnam(name);
	if (!pw)
		return not_found("user", name, "account", err);
	p->switch_user = true;
	p->uid = pw->pw_uid;
	p->gid = pw->pw_gid;
	snprintf(p->user, sizeof(p->user), "%s", pw->pw_name);
	snprintf(how, sizeof(how), "--user %s", name);
	rc = check_account(how, pw->pw_uid, pw->pw_gid, pw->pw_name, pw->pw_shell, err);
	if (rc)
		return rc;
	p->n_groups = AGD_PRIVS_GROUPS_MAX;
	if (getgrouplist(pw->pw_name, pw->pw_gid, p->groups, &p->n_groups) < 0) {
		return agd_errf(err, -E2BIG, "--user %s: member of more than %d groups", name,
			 AGD_PRIVS_GROUPS_MAX);
	}
	return 0;
}

static int resolve_group(const char *name, struct agd_privs *p, struct agd_err *err)
{
	struct group *gr;

	errno = 0;
	gr = all_digits(name) ? getgrgid((gid_t)strtoul(name, NULL, 10)) : getgrnam(name);
	if (!gr)
		return not_found("read-group", name, "group", err);
	p->read_group = true;
	p->read_gid = gr->gr_gid;
	return 0;
}

/* Started as another account than root, without --user: that account. */
static int check_own_account(struct agd_err *err)
{
	struct passwd *pw = getpwuid(geteuid());
	char how[96];

	if (geteuid() == 0)
		return 0;
	snprintf(how, sizeof(how), "running as %s", pw ? pw->pw_name : "uid");
	return check_account(how, geteuid(), pw ? pw->pw_gid : getegid(), pw ? pw->pw_name : "",
			     pw ? pw->pw_shell : NULL, err);
}

int agd_privs_plan(const struct agd_privs_opts *o, struct agd_privs *p, struct agd_err *err)
{
	__u64 eff = 0, prm = 0, want = BIT(CAP_BPF) | BIT(CAP_NET_ADMIN) | BIT(CAP_PERFMON);
	int rc;

	memset(p, 0, sizeof(*p));
	snprintf(p->pin_path, sizeof(p->pin_path), "%s", o->pin_path ? o->pin_path : "");
	snprintf(p->state_dir, sizeof(p->state_dir), "%s", o->state_dir ? o->state_dir : "");
	rc = caps_get(&eff, &prm);
	if (rc) {
		return agd_errf(err, rc,
			"cannot read this process's capabilities: %s", strerror(-rc));
	}
	if (privileged_port(o->listen))
		want |= BIT(CAP_NET_BIND_SERVICE);
	p->keep = want & prm;
	p->drop_bounding = eff & BIT(CAP_SETPCAP);
	p->last_cap = last_cap();
	if (o->user && *o->user) {
		rc = resolve_user(o->user, p, err);
		if (rc)
			return rc;
		if ((eff & (BIT(CAP_SETUID) | BIT(CAP_SETGID))) !=
		    (BIT(CAP_SETUID) | BIT(CAP_SETGID))) {
			return agd_errf(err, -EPERM,
				"--user %s: switching accounts needs CAP_SETUID and "
				 "CAP_SETGID (start agentgated as root)", o->user);
		}
	} else {
		rc = check_own_account(err);
		if (rc)
			return rc;
	}
	if (o->read_group && *o->read_group) {
		rc = resolve_group(o->read_group, p, err);
		if (rc)
			return rc;
	}
	umask(p->read_group ? 027 : 077);
	return 0;
}

void agd_privs_describe(const struct agd_privs *p, char *buf, size_t len)
{
	size_t n, i;

	n = (size_t)snprintf(buf, len, "uid %u%s%s%s, keeping", p->switch_user ? p->uid : getuid(),
			     p->switch_user ? " (" : "", p->switch_user ? p->user : "",
			     p->switch_user ? ")" : "");
	for (i = 0; i < sizeof(cap_names) / sizeof(cap_names[0]) && n < len; i++)
		if (p->keep & BIT(cap_names[i].cap))
			n += (size_t)snprintf(buf + n, len - n, " %s", cap_names[i].name);
	if (!p->keep && n < len)
		snprintf(buf + n, len - n, " no capabilities");
}

/* ---- ownership of the pins and the state ------------------------------------------- */

/*
 * At each start agentgated makes its pins and state its own: owned by the
 * account it runs as (root, or --user), directories 0700 and files 0600, or
 * with --read-group that group's with 02750 (new entries take the group)
 * and 0640. Only its own entries: the maps (ag_*), links/, progs/ and owner/ of the
 * pin root, the files of the state dir listed here and the fleet's outbox/.
 * The ingest socket keeps 0660.
 */
static const char *const state_files[] = { "data.mdb", "lock.mdb", "data.mdb.init", "audit.log",
					    "dead-letter.ndjson", "dead-letter.ndjson.1", NULL };

static bool listed(const char *const *names, const char *name)
{
	for (; *names; names++)
		if (!strcmp(*names, name))
			return true;
	return false;
}

static int own_path(const struct agd_privs *p, const char *path, struct agd_err *err)
{
	bool root = geteuid() == 0;
	uid_t uid = p->switch_user ? p->uid : root ? 0 : geteuid();
	gid_t gid = p->read_group ? p->read_gid : p->switch_user ? p->gid : root ? 0 : (gid_t)-1;
	struct stat st;
	mode_t mode;

	if (lstat(path, &st))
		return errno == ENOENT ? 0 : -errno;
	if (S_ISLNK(st.st_mode) || S_ISSOCK(st.st_mode) || (!root && st.st_uid != uid))
		return 0; /* not ours to change: left as it is */
	mode = S_ISDIR(st.st_mode) ? (p->read_group ? 02750 : 0700) :
				     (p->read_group ? 0640 : 0600);
	if (((st.st_uid != uid || (gid != (gid_t)-1 && st.st_gid != gid)) &&
	     lchown(path, uid, gid)) ||
	    ((st.st_mode & 07777) != mode && chmod(path, mode))) {
		int rc = -errno;

		return agd_errf(err, rc, "cannot make %s agentgated's (%s): %s", path,
			 p->switch_user ? p->user : "owner only", strerror(-rc));
	}
	return 0;
}

/* A directory of agentgated's own, not a shared one such as /tmp. */
static int own_dir_check(const char *dir, const char *what, struct agd_err *err)
{
	struct stat st;

	if (lstat(dir, &st)) {
		return agd_errf(err, -errno, "%s %s: %s", what, dir, strerror(errno));
	}
	if (!S_ISDIR(st.st_mode) || (st.st_mode & (S_IWOTH | S_ISVTX))) {
		return agd_errf(err, -EPERM,
			"%s %s is a shared directory (writable by all, or sticky): "
			 "give agentgated a directory of its own", what, dir);
	}
	return 0;
}

static bool is_dir(const char *path)
{
	struct stat st;

	return !lstat(path, &st) && S_ISDIR(st.st_mode);
}

/* dir and its entries, all of them (top: only those named in top). */
static int own_tree(const struct agd_privs *p, const char *dir, const char *const *top,
		    struct agd_err *err)
{
	char path[4200];
	struct dirent *de;
	DIR *d;
	int rc = own_path(p, dir, err);

	if (rc)
		return rc;
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while (!rc && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (top && !listed(top, de->d_name) && strncmp(de->d_name, "ag_", 3))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		rc = is_dir(path) ? own_tree(p, path, NULL, err) : own_path(p, path, err);
	}
	closedir(d);
	return rc;
}

static int own_all(const struct agd_privs *p, struct agd_err *err)
{
	static const char *const pin_top[] = { AG_PIN_LINKS_DIR, AG_PIN_PROGS_DIR, AG_PIN_OWNER_DIR,
					       NULL };
	char path[4200];
	int rc, i;

	rc = own_dir_check(p->pin_path, "--pin-path", err);
	if (!rc)
		rc = own_dir_check(p->state_dir, "--state-dir", err);
	if (!rc)
		rc = own_tree(p, p->pin_path, pin_top, err);
	if (!rc)
		rc = own_path(p, p->state_dir, err);
	for (i = 0; !rc && state_files[i]; i++) {
		snprintf(path, sizeof(path), "%s/%s", p->state_dir, state_files[i]);
		rc = own_path(p, path, err);
	}
	snprintf(path, sizeof(path), "%s/outbox", p->state_dir); /* fleet mode: an LMDB dir */
	if (!rc && is_dir(path))
		rc = own_tree(p, path, NULL, err);
	return rc;
}

/* Whether the account may search directory st (owner, group, others). */
static bool may_search(const struct agd_privs *p, const struct stat *st)
{
	int i;

	if (st->st_uid == p->uid)
		return st->st_mode & S_IXUSR;
	for (i = 0; i < p->n_groups; i++)
		if (st->st_gid == p->groups[i])
			return st->st_mode & S_IXGRP;
	return st->st_mode & S_IXOTH;
}

/* The first parent of path the account cannot search, or "" when none. */
static void unreachable_parent(const struct agd_privs *p, const char *path, char *out,
			       size_t len)
{
	char dir[4096];
	struct stat st;
	char *slash;

	out[0] = 0;
	snprintf(dir, sizeof(dir), "%s", path);
	while ((slash = strrchr(dir, '/')) && slash != dir) {
		*slash = 0;
		if (!stat(dir, &st) && !may_search(p, &st))
			snprintf(out, len, "%s", dir);
	}
}

/* ---- the drop, in one thread ---------------------------------------------------------- */

static struct {
	const struct agd_privs *p;
	atomic_bool active;
	atomic_int acked;
	atomic_int failed; /* the first error, as a positive errno */
} bc;

/* Raw system calls only: this runs in signal handlers. */
static int drop_self(const struct agd_privs *p)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2] = { { 0 } };
	int cap;

	for (cap = 0; p->drop_bounding && cap <= p->last_cap; cap++)
		if (!(p->keep & BIT(cap)) && syscall(SYS_prctl, PR_CAPBSET_DROP, cap, 0, 0, 0) &&
		    errno != EINVAL)
			return errno;
	if (syscall(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) &&
	    errno != EINVAL)
		return errno;
	if (p->switch_user &&
	    (syscall(SYS_prctl, PR_SET_KEEPCAPS, 1, 0, 0, 0) ||
	     syscall(SYS_setgroups, p->n_groups, p->groups) ||
	     syscall(SYS_setresgid, p->gid, p->gid, p->gid) ||
	     syscall(SYS_setresuid, p->uid, p->uid, p->uid)))
		return errno;
	d[0].effective = d[0].permitted = (__u32)p->keep;
	d[1].effective = d[1].permitted = (__u32)(p->keep >> 32);
	if (syscall(SYS_capset, &h, d))
		return errno;
	if (p->switch_user && syscall(SYS_prctl, PR_SET_KEEPCAPS, 0, 0, 0, 0))
		return errno;
	if (syscall(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return errno;
	return 0;
}

static void on_drop_signal(int sig)
{
	int saved = errno, rc;

	(void)sig;
	if (!atomic_load(&bc.active))
		return; /* a late duplicate: this thread has dropped already */
	rc = drop_self(bc.p);
	if (rc) {
		int none = 0;

		atomic_compare_exchange_strong(&bc.failed, &none, rc);
	}
	atomic_fetch_add(&bc.acked, 1);
	errno = saved;
}

/* ---- checking every thread --------------------------------------------------------- */

static bool hex_field(const char *line, const char *key, __u64 *v)
{
	size_t n = strlen(key);

	if (strncmp(line, key, n))
		return false;
	*v = strtoull(line + n, NULL, 16);
	return true;
}

static bool ids_field(const char *line, const char *key, unsigned int want)
{
	unsigned int a, b, c, d;

	return sscanf(line + strlen(key), "%u %u %u %u", &a, &b, &c, &d) == 4 && a == want &&
	       b == want && c == want && d == want;
}

/* 1 when thread tid shows the dropped identity and sets, 0 when not, -1 gone. */
static int thread_dropped(const struct agd_privs *p, const char *tid)
{
	char path[320], line[256];
	__u64 v;
	int ok = 1, seen = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%s/status", tid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (hex_field(line, "CapPrm:", &v) || hex_field(line, "CapEff:", &v))
			seen++, ok &= v == p->keep;
		else if (hex_field(line, "CapInh:", &v) || hex_field(line, "CapAmb:", &v))
			seen++, ok &= v == 0;
		else if (hex_field(line, "CapBnd:", &v))
			seen++, ok &= !p->drop_bounding || (v & ~p->keep) == 0;
		else if (!strncmp(line, "NoNewPrivs:", 11))
			seen++, ok &= atoi(line + 11) == 1;
		else if (p->switch_user && !strncmp(line, "Uid:", 4))
			seen++, ok &= ids_field(line, "Uid:", p->uid);
		else if (p->switch_user && !strncmp(line, "Gid:", 4))
			seen++, ok &= ids_field(line, "Gid:", p->gid);
	}
	fclose(f);
	return seen >= (p->switch_user ? 8 : 6) ? ok : 0;
}

/* Signals every thread that has not dropped yet; the number signalled,
 * or -errno. *bad names one that has not. */
static int signal_stragglers(const struct agd_privs *p, char *bad, size_t len)
{
	pid_t self = (pid_t)syscall(SYS_gettid);
	struct dirent *de;
	int n = 0;
	DIR *d = opendir("/proc/self/task");

	if (!d)
		return -errno;
	bad[0] = 0;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || thread_dropped(p, de->d_name) != 0)
			continue;
		snprintf(bad, len, "%s", de->d_name);
		if (atoi(de->d_name) == self)
			continue; /* checked, not signalled: the main thread drops itself */
		if (!syscall(SYS_tgkill, getpid(), atoi(de->d_name), DROP_SIGNAL))
			n++;
	}
	closedir(d);
	return n;
}

static void wait_acks(int want)
{
	struct timespec ms = { 0, 1000000 };
	int i;

	for (i = 0; i < DROP_WAIT_MS && atomic_load(&bc.acked) < want; i++)
		nanosleep(&ms, NULL);
}

static int drop_threads(const struct agd_privs *p, struct agd_err *err)
{
	struct sigaction sa = { .sa_handler = on_drop_signal, .sa_flags = SA_RESTART };
	char bad[256] = "";
	int round, n = 0, rc;

	sigemptyset(&sa.sa_mask);
	bc.p = p;
	atomic_store(&bc.acked, 0);
	atomic_store(&bc.failed, 0);
	atomic_store(&bc.active, true);
	if (sigaction(DROP_SIGNAL, &sa, NULL)) /* left installed: late duplicates are no-ops */
		return -errno;
	rc = drop_self(p);
	for (round = 0; !rc && round < DROP_ROUNDS; round++) {
		atomic_store(&bc.acked, 0);
		n = signal_stragglers(p, bad, sizeof(bad));
		if (n <= 0)
			break;
		wait_acks(n);
		rc = atomic_load(&bc.failed);
	}
	atomic_store(&bc.active, false);
	if (!rc && n < 0)
		rc = -n;
	if (rc) {
		return agd_errf(err, -rc, "cannot drop privileges: %s", strerror(rc));
	}
	if (n > 0 || bad[0]) {
		return agd_errf(err, -EPERM, "cannot drop privileges: thread %s keeps them", bad);
	}
	return 0;
}

int agd_privs_drop(const struct agd_privs *p, char *warn, size_t wlen, struct agd_err *err)
{
	char dir[4096];
	int rc = own_all(p, err);

	warn[0] = 0;
	if (rc)
		return rc;
	if (p->switch_user) {
		unreachable_parent(p, p->pin_path, dir, sizeof(dir));
		if (dir[0])
			snprintf(warn, wlen, "--user %s cannot search %s: a SIGHUP will not "
				 "attach devices (restart instead); the maps and the API are "
				 "unaffected", p->user, dir);
	}
	return drop_threads(p, err);
}
