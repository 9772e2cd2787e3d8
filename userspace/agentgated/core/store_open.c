// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Opening the state store for the daemon, the guards of an open store and
 * write transactions (store.c: the store's state, its errors and the rest).
 *
 * The state store. Opening it refuses a damaged file rather than risk it
 * (see agd_store_open); once open, a store found damaged (LMDB's own errors,
 * the file shrunk, removed or replaced, a SIGBUS from LMDB's map) is
 * remembered, and every later write is refused before LMDB touches the
 * file. The SIGBUS handler maps zeroed pages over the part of the map the
 * file no longer backs (the two meta pages as last committed, so that LMDB
 * still finds its roots there), so the read that faulted goes on and LMDB
 * reports a damaged page instead of the process dying.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "store_int.h"

/* The meta pages as last committed, twice: one is rewritten while the
 * SIGBUS handler may read the other. */
#define META_COPY_MAX (2 * 65536)
static char meta_copy[2][META_COPY_MAX];

__u64 agd_store_errors(void)
{
	return atomic_load(&agd_store_g.errors);
}

void agd_store_on_damage(void (*notify)(void), void (*fatal)(const char *why))
{
	agd_store_g.notify = notify;
	agd_store_g.fatal = fatal;
}

/* ---- the guards of an open store ---------------------------------------------- */

/* Zeroed pages where the file no longer backs LMDB's map: the faulting
 * read goes on, LMDB meets an empty page and reports it. */
static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	char *a = si->si_addr, *map = agd_store_g.map, *pg;

	(void)uc;
	if (si->si_code > 0 && map && a >= map && a < map + agd_store_g.map_size) {
		int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE;
		size_t len;

		pg = (char *)((uintptr_t)a & ~(uintptr_t)(agd_store_g.page - 1));
		len = (size_t)(map + agd_store_g.map_size - pg);
		if (mmap(pg, len, PROT_READ | PROT_WRITE, flags, -1, 0) != MAP_FAILED) {
			if ((size_t)(pg - map) < agd_store_g.meta_len)
				memcpy(pg, meta_copy[atomic_load(&agd_store_g.meta_cur)] + (pg - map),
				       agd_store_g.meta_len - (size_t)(pg - map));
			mprotect(pg, len, PROT_READ);
			agd_store_mark_damaged(DMG_BUS, (__u64)(a - map), 0);
			return;
		}
	}
	/* Not ours: the previous disposition, at once for a sent signal, on
	 * the repeated fault otherwise. */
	sigaction(SIGBUS, &agd_store_g.old_bus, NULL);
	if (si->si_code <= 0)
		raise(sig);
}

/* LMDB's map of data.mdb: the mapping of that inode in /proc/self/maps. */
static int find_map(void)
{
	unsigned long long start, end, ino;
	char line[4600];
	FILE *f = fopen("/proc/self/maps", "re");
	int rc = -ENOENT;

	if (!f)
		return -errno;
	while (rc && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%llx-%llx %*s %*s %*s %llu", &start, &end, &ino) == 3 &&
		    ino == (unsigned long long)agd_store_g.ino && strstr(line, "/" AGD_STORE_FILE)) {
			agd_store_g.map = (char *)(uintptr_t)start;
			agd_store_g.map_size = (size_t)(end - start);
			rc = 0;
		}
	}
	fclose(f);
	return rc;
}

/* After a commit: the meta pages it wrote. */
static void copy_metas(void)
{
	int next = !atomic_load(&agd_store_g.meta_cur);

	if (agd_store_g.meta_len && pread(agd_store_g.fd, meta_copy[next], agd_store_g.meta_len, 0) == (ssize_t)agd_store_g.meta_len)
		atomic_store(&agd_store_g.meta_cur, next);
}

static void arm(MDB_env *env)
{
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	struct stat st;
	MDB_stat ms;
	int fd;

	if (mdb_env_get_fd(env, &fd) || fstat(fd, &st))
		return;
	agd_store_g.fd = fd;
	agd_store_g.ino = st.st_ino;
	atomic_store(&agd_store_g.size, (__u64)st.st_size);
	agd_store_g.page = (size_t)sysconf(_SC_PAGESIZE);
	if (find_map() || mdb_env_stat(env, &ms) || 2 * (size_t)ms.ms_psize > META_COPY_MAX)
		return; /* the guards before writes still hold */
	agd_store_g.meta_len = 2 * (size_t)ms.ms_psize;
	copy_metas();
	sigemptyset(&sa.sa_mask);
	agd_store_g.bus_armed = !sigaction(SIGBUS, &sa, &agd_store_g.old_bus);
}

/* Whether the path still names the file open as fs (a path the account
 * cannot reach, after --user, tells nothing). */
static bool replaced(const struct stat *fs)
{
	struct stat ps;

	if (!fs->st_nlink)
		return true;
	if (stat(agd_store_g.path, &ps))
		return errno == ENOENT;
	return ps.st_ino != fs->st_ino || ps.st_dev != fs->st_dev;
}

/* Before a write: refused once damaged; the file must still be the one
 * LMDB has open, and no shorter than it was. Touches the file's inode
 * only, never the map. */
static int guard(void)
{
	struct stat fs;
	__u64 seen;

	if (!atomic_load(&agd_store_g.kind) && agd_store_g.fd >= 0 && !fstat(agd_store_g.fd, &fs)) {
		seen = atomic_load(&agd_store_g.size);
		if (replaced(&fs))
			agd_store_mark_damaged(DMG_GONE, 0, 0);
		else if ((__u64)fs.st_size < seen)
			agd_store_mark_damaged(DMG_SHRUNK, (__u64)fs.st_size, seen);
		else if ((__u64)fs.st_size > seen)
			atomic_store(&agd_store_g.size, (__u64)fs.st_size);
	}
	if (!atomic_load(&agd_store_g.kind))
		return 0;
	atomic_fetch_add(&agd_store_g.errors, 1);
	return -EUCLEAN;
}

int agd_store_txn_begin(struct agd_store *st, MDB_txn **txn)
{
	return agd_store_txn_begin_flags(st, txn, 0);
}

int agd_store_txn_begin_flags(struct agd_store *st, MDB_txn **txn, unsigned int flags)
{
	int err = guard();

	return err ? err : agd_store_errno(mdb_txn_begin(st->env, NULL, flags, txn));
}

int agd_store_commit(struct agd_store *st, MDB_txn *txn)
{
	int err;

	if (atomic_load(&agd_store_g.kind)) {
		mdb_txn_abort(txn);
		return -EUCLEAN;
	}
	err = agd_store_convert(mdb_txn_commit(txn), false);
	if (!err)
		copy_metas();
	return err;
}

/* LMDB's assertion failures end in abort(): the daemon's fatal hook
 * says why and exits instead. */
static void on_assert(MDB_env *env, const char *msg)
{
	char why[4800];

	(void)env;
	agd_store_mark_damaged(DMG_ASSERT, 0, 0);
	snprintf(why, sizeof(why), "the state store %s is damaged: LMDB: %s", agd_store_g.path, msg);
	if (agd_store_g.fatal)
		agd_store_g.fatal(why);
}

/* ---- opening ------------------------------------------------------------------- */

static int open_dbi(MDB_txn *txn, const char *name, MDB_dbi *dbi)
{
	return mdb_dbi_open(txn, name, MDB_CREATE, dbi);
}

static int refuse(struct agd_err *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int refuse(struct agd_err *err, const char *fmt, ...)
{
	char what[900];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return agd_errf(err, -EUCLEAN,
		"the state store %s %s; agentgated will not start on it and wrote "
		 "nothing to it: restore a copy (mdb_copy), or see agentgated(8), STATE STORE",
		 agd_store_g.path, what);
}

static int check_version(struct agd_store *st, MDB_txn *txn, struct agd_err *err)
{
	MDB_val k = { 7, "version" }, v;
	__u32 ver = AGD_STORE_VERSION;
	int rc = mdb_get(txn, st->meta, &k, &v);

	if (rc == MDB_NOTFOUND) {
		v = (MDB_val){ sizeof(ver), &ver };
		return mdb_put(txn, st->meta, &k, &v, 0);
	}
	if (rc)
		return rc;
	if (v.mv_size != sizeof(ver) || memcmp(v.mv_data, &ver, sizeof(ver))) {
		ver = 0;
		if (v.mv_size == sizeof(ver))
			memcpy(&ver, v.mv_data, sizeof(ver));
		refuse(err, "was written by an incompatible agentgated (store version %u; "
		       "this one reads version %u)", ver, AGD_STORE_VERSION);
		return EPROTO;
	}
	return 0;
}

/* Before LMDB opens the file (it would map it, or take an empty one for a
 * new store): a regular file with two sound meta pages, or no file at all
 * in a state dir that never held a store. */
static int check_before_open(struct agd_err *err)
{
	struct agd_err why = { 0 };
	struct stat st;
	int fd, rc;

	if (stat(agd_store_g.path, &st)) {
		rc = -errno;
		if (rc != -ENOENT) {
			return agd_errf(err, rc,
				"cannot open the state store %s: %s", agd_store_g.path,
				 strerror(-rc));
		}
		if (agd_store_exists(agd_store_g.dir, AGD_STORE_MARKER) || agd_store_exists(agd_store_g.dir, "lock.mdb"))
			return refuse(err, "is missing, yet this state directory held a store "
				      "(%s or lock.mdb is there): starting afresh would forget "
				      "every agent, rate and applied rating id", AGD_STORE_MARKER);
		return 0; /* a first start */
	}
	if (!S_ISREG(st.st_mode))
		return refuse(err, "is not a regular file (%s)",
			      S_ISDIR(st.st_mode) ? "a directory" : "a special file");
	if (!st.st_size)
		return refuse(err, "is empty (0 bytes): it was cut short");
	fd = open(agd_store_g.path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		return agd_errf(err, rc,
			"cannot open the state store %s: %s", agd_store_g.path, strerror(-rc));
	}
	rc = agd_store_check(fd, false, &why);
	close(fd);
	if (rc == -EUCLEAN)
		return refuse(err, "is damaged: %s", why.msg);
	if (rc)
		return agd_errf(err, rc, "cannot read the state store %s: %s", agd_store_g.path,
				why.msg);
	return 0;
}

/* Under LMDB's writer lock (txn), before anything is written: every page. */
static int check_whole(MDB_env *env, struct agd_err *err)
{
	struct agd_err why = { 0 };
	int fd, rc;

	if (mdb_env_get_fd(env, &fd)) {
		return agd_errf(err, -EBADF, "cannot check the state store %s", agd_store_g.path);
	}
	rc = agd_store_check(fd, true, &why);
	if (rc == -EUCLEAN)
		return refuse(err, "is damaged: %s", why.msg);
	if (rc)
		return agd_errf(err, rc, "cannot read the state store %s: %s", agd_store_g.path,
				why.msg);
	return 0;
}

/* The marker that tells a later start this directory holds a store. */
static int write_marker(struct agd_err *err)
{
	char path[4200], text[200];
	time_t now = time(NULL);
	struct tm tm;
	int fd, dfd, rc = 0;
	size_t n;

	if (agd_store_exists(agd_store_g.dir, AGD_STORE_MARKER))
		return 0;
	snprintf(path, sizeof(path), "%s/%s", agd_store_g.dir, AGD_STORE_MARKER);
	gmtime_r(&now, &tm);
	n = strftime(text, sizeof(text), "agentgated: the state store here (" AGD_STORE_FILE
		     ") was initialised on %Y-%m-%dT%H:%M:%SZ; see agentgated(8), STATE STORE\n",
		     &tm);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, text, n) != (ssize_t)n || fsync(fd))
		rc = -errno;
	if (fd >= 0)
		close(fd);
	dfd = rc ? -1 : open(agd_store_g.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	if (rc) {
		unlink(path);
		snprintf(err->msg, sizeof(err->msg), "cannot write %s: %s", path, strerror(-rc));
	}
	return rc;
}

/* The databases, and the store version in meta (written when new). */
static int open_dbis(struct agd_store *st, MDB_txn *txn, struct agd_err *err)
{
	int rc = open_dbi(txn, "agents", &st->agents);

	if (!rc)
		rc = open_dbi(txn, "rules", &st->rules);
	if (!rc)
		rc = open_dbi(txn, "dedup", &st->dedup);
	if (!rc)
		rc = open_dbi(txn, "dedup_at", &st->dedup_at);
	if (!rc)
		rc = open_dbi(txn, "dedup_log", &st->dedup_log);
	if (!rc)
		rc = open_dbi(txn, "audit", &st->audit);
	if (!rc)
		rc = open_dbi(txn, "meta", &st->meta);
	/* Created in a store an older agentgated wrote: no new version. */
	if (!rc)
		rc = open_dbi(txn, "hist_rated", &st->hist_rated);
	if (!rc)
		rc = open_dbi(txn, "hist_changes", &st->hist_changes);
	st->hist = !rc;
	if (!rc)
		rc = open_dbi(txn, "deleted", &st->deleted);
	if (!rc)
		rc = open_dbi(txn, "activity", &st->activity);
	if (!rc)
		rc = open_dbi(txn, "revoked", &st->revoked);
	if (!rc)
		rc = open_dbi(txn, "voices", &st->voices);
	if (!rc)
		rc = open_dbi(txn, "voice_log", &st->voice_log);
	if (!rc)
		rc = open_dbi(txn, "voice_snap", &st->voice_snap);
	if (!rc)
		rc = open_dbi(txn, "windows", &st->windows);
	if (!rc)
		rc = open_dbi(txn, "influence", &st->influence);
	if (!rc)
		rc = open_dbi(txn, "feeds", &st->feeds);
	if (!rc)
		rc = open_dbi(txn, "budgets", &st->budgets);
	if (!rc)
		rc = check_version(st, txn, err);
	if (rc == EPROTO)
		return -EUCLEAN; /* err says which version */
	if (rc) {
		const char *why = mdb_strerror(rc);

		return agd_errf(err, agd_store_errno(rc),
			"cannot initialise the state store %s: %s",
				agd_store_g.path, why);
	}
	return 0;
}

int agd_store_open(const char *dir, size_t map_size, struct agd_store *st, struct agd_err *err)
{
	MDB_txn *txn = NULL;
	int rc;

	memset(st, 0, sizeof(*st));
	agd_err_clear(err);
	agd_store_disarm();
	atomic_store(&agd_store_g.claim, 0);
	atomic_store(&agd_store_g.kind, DMG_NONE);
	snprintf(agd_store_g.dir, sizeof(agd_store_g.dir), "%s", dir);
	snprintf(agd_store_g.path, sizeof(agd_store_g.path), "%s/" AGD_STORE_FILE, dir);
	if (mkdir(dir, 0700) && errno != EEXIST) {
		rc = errno;
		return agd_errf(err, -rc,
			"cannot create state directory %s: %s", dir, strerror(rc));
	}
	rc = check_before_open(err);
	if (rc)
		return rc;
	rc = mdb_env_create(&st->env);
	if (!rc)
		rc = mdb_env_set_maxdbs(st->env, AG_STORE_MAX_DBS);
	if (!rc)
		rc = mdb_env_set_mapsize(st->env, map_size);
	if (!rc)
		rc = mdb_env_set_assert(st->env, on_assert);
	/*
	 * Read transactions come from any of the HTTP workers (320 by
	 * default): with MDB_NOTLS a reader slot belongs to the transaction,
	 * not to the thread for its whole life, so the slots cannot run out
	 * (MDB_READERS_FULL) once enough distinct threads have read.
	 */
	if (!rc)
		rc = mdb_env_set_maxreaders(st->env, AGD_STORE_MAX_READERS);
	if (!rc)
		rc = mdb_env_open(st->env, dir, MDB_NOTLS, 0600);
	if (!rc)
		rc = mdb_txn_begin(st->env, NULL, 0, &txn);
	if (rc) {
		snprintf(err->msg, sizeof(err->msg),
			"cannot open the state store %s: %s", agd_store_g.path, mdb_strerror(rc));
		rc = agd_store_errno(rc);
		goto cleanup;
	}
	/* No other writer meanwhile: the snapshot checked is the one used. */
	rc = check_whole(st->env, err);
	if (!rc)
		rc = open_dbis(st, txn, err);
	if (!rc) {
		rc = agd_store_errno(mdb_txn_commit(txn));
		txn = NULL;
		if (rc)
			agd_store_fail(err, rc, "cannot initialise the state store %s",
				       agd_store_g.path);
	}
	if (!rc)
		rc = write_marker(err);
	if (!rc)
		arm(st->env);
cleanup:
	if (txn)
		mdb_txn_abort(txn);
	if (rc) {
		if (st->env)
			mdb_env_close(st->env);
		st->env = NULL;
	}
	return rc;
}
