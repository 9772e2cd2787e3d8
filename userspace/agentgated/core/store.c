// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The state store. Opening it refuses a damaged file rather than risk it
 * (see agd_store_open); once open, a store found damaged (LMDB's own errors,
 * the file shrunk, removed or replaced, a SIGBUS from LMDB's map) is
 * remembered, and every later write is refused before LMDB touches the
 * file. The SIGBUS handler maps zeroed pages over the part of the map the
 * file no longer backs (the two meta pages as last committed, so that LMDB
 * still finds its roots there), so the read that faulted goes on and LMDB
 * reports a damaged page instead of the process dying.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

/* Named databases LMDB makes room for (8 in use; some to spare). */
#define AG_STORE_MAX_DBS 16

/* The last LMDB result this thread converted: -ENOSPC stands for a full
 * map (--store-size) and for a full disk alike, and the message differs. */
static __thread int last_rc;

enum damage {
	DMG_NONE,
	DMG_LMDB,   /* a: LMDB's error code */
	DMG_IO,     /* EIO reading or writing the file */
	DMG_BUS,    /* a: the offset in the file a read of the map faulted at */
	DMG_SHRUNK, /* a: bytes now, b: bytes before */
	DMG_GONE,   /* the path no longer names the open file */
	DMG_ASSERT, /* LMDB failed an assertion */
};

/* One store per process: what the guards need. */
static struct {
	char dir[4096];
	char path[4200];    /* <dir>/data.mdb */
	int fd;             /* LMDB's descriptor of it; -1: not open */
	ino_t ino;
	atomic_ullong size; /* the largest size seen: LMDB never shrinks it */
	char *map;          /* LMDB's map of it, for the SIGBUS handler */
	size_t map_size, page;
	bool bus_armed;
	struct sigaction old_bus;
	size_t meta_len;      /* the two meta pages: 2 * LMDB's page size */
	atomic_int meta_cur;  /* which copy of them is whole */
	atomic_int claim, kind; /* the first damage claims, then publishes */
	__u64 a, b;
	void (*notify)(void);
	void (*fatal)(const char *why);
	atomic_ullong errors;
} g = { .fd = -1 };

/* The meta pages as last committed, twice: one is rewritten while the
 * SIGBUS handler may read the other. */
#define META_COPY_MAX (2 * 65536)
static char meta_copy[2][META_COPY_MAX];

/* LMDB reports a write the disk cut short as EIO: on a file system with
 * next to no space left, that is the full disk. */
static bool disk_full(void)
{
	struct statvfs v;

	return g.dir[0] && !statvfs(g.dir, &v) && (__u64)v.f_bavail * v.f_frsize < (256u << 10);
}

/* Async-signal-safe: the SIGBUS handler calls it. */
static void damaged(enum damage kind, __u64 a, __u64 b)
{
	int none = 0;

	if (!atomic_compare_exchange_strong(&g.claim, &none, 1))
		return;
	g.a = a;
	g.b = b;
	atomic_store(&g.kind, (int)kind);
	if (g.notify)
		g.notify();
}

static int convert(int rc, bool count)
{
	if (rc == EIO && disk_full())
		rc = ENOSPC;
	last_rc = rc;
	switch (rc) {
	case MDB_SUCCESS:
		return 0;
	case MDB_NOTFOUND:
		return -ENOENT;
	case MDB_KEYEXIST:
		return -EEXIST;
	}
	if (count)
		atomic_fetch_add(&g.errors, 1);
	switch (rc) {
	case MDB_MAP_FULL:
	case MDB_TXN_FULL:
		return -ENOSPC;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_PANIC:
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH:
		damaged(DMG_LMDB, (__u64)(__s64)rc, 0);
		return -EUCLEAN;
	case EIO:
		damaged(DMG_IO, 0, 0);
		return -EUCLEAN;
	default:
		return rc > 0 && rc < 4096 ? -rc : -EIO;
	}
}

int agd_store_errno(int rc)
{
	return convert(rc, true);
}

bool agd_store_damaged(char *why, size_t len)
{
	int kind = atomic_load(&g.kind);
	char what[200];

	switch (kind) {
	case DMG_NONE:
		if (len)
			why[0] = 0;
		return false;
	case DMG_LMDB:
		snprintf(what, sizeof(what), "LMDB: %s", mdb_strerror((int)(__s64)g.a));
		break;
	case DMG_IO:
		snprintf(what, sizeof(what), "an I/O error on the file");
		break;
	case DMG_BUS:
		snprintf(what, sizeof(what), "a read at offset %llu faulted: the file was cut "
			 "short under the daemon", (unsigned long long)g.a);
		break;
	case DMG_SHRUNK:
		snprintf(what, sizeof(what), "the file was cut short under the daemon, from %llu "
			 "to %llu bytes", (unsigned long long)g.b, (unsigned long long)g.a);
		break;
	case DMG_GONE:
		snprintf(what, sizeof(what), "the file was removed or replaced under the daemon");
		break;
	default:
		snprintf(what, sizeof(what), "LMDB failed one of its own checks");
		break;
	}
	snprintf(why, len, "the state store %s is damaged (%s)", g.path, what);
	return true;
}

const char *agd_store_strerror(int err)
{
	static __thread char msg[4800];

	if (err == -EUCLEAN) {
		if (!agd_store_damaged(msg, sizeof(msg)))
			snprintf(msg, sizeof(msg), "the state store %s is damaged", g.path);
		snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg),
			 ": changes are refused until it is restored");
		return msg;
	}
	if (err != -ENOSPC)
		return strerror(-err);
	if (last_rc == ENOSPC || last_rc == EDQUOT)
		return "no space left on the state directory's file system (free some; nothing "
		       "was changed)";
	return "the state store is full (raise --store-size)";
}

__u64 agd_store_errors(void)
{
	return atomic_load(&g.errors);
}

void agd_store_on_damage(void (*notify)(void), void (*fatal)(const char *why))
{
	g.notify = notify;
	g.fatal = fatal;
}

/* ---- the guards of an open store ---------------------------------------------- */

/* Zeroed pages where the file no longer backs LMDB's map: the faulting
 * read goes on, LMDB meets an empty page and reports it. */
static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	char *a = si->si_addr, *map = g.map, *pg;

	(void)uc;
	if (si->si_code > 0 && map && a >= map && a < map + g.map_size) {
		int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE;
		size_t len;

		pg = (char *)((uintptr_t)a & ~(uintptr_t)(g.page - 1));
		len = (size_t)(map + g.map_size - pg);
		if (mmap(pg, len, PROT_READ | PROT_WRITE, flags, -1, 0) != MAP_FAILED) {
			if ((size_t)(pg - map) < g.meta_len)
				memcpy(pg, meta_copy[atomic_load(&g.meta_cur)] + (pg - map),
				       g.meta_len - (size_t)(pg - map));
			mprotect(pg, len, PROT_READ);
			damaged(DMG_BUS, (__u64)(a - map), 0);
			return;
		}
	}
	/* Not ours: the previous disposition, at once for a sent signal, on
	 * the repeated fault otherwise. */
	sigaction(SIGBUS, &g.old_bus, NULL);
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
		    ino == (unsigned long long)g.ino && strstr(line, "/" AGD_STORE_FILE)) {
			g.map = (char *)(uintptr_t)start;
			g.map_size = (size_t)(end - start);
			rc = 0;
		}
	}
	fclose(f);
	return rc;
}

/* After a commit: the meta pages it wrote. */
static void copy_metas(void)
{
	int next = !atomic_load(&g.meta_cur);

	if (g.meta_len && pread(g.fd, meta_copy[next], g.meta_len, 0) == (ssize_t)g.meta_len)
		atomic_store(&g.meta_cur, next);
}

static void arm(MDB_env *env)
{
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	struct stat st;
	MDB_stat ms;
	int fd;

	if (mdb_env_get_fd(env, &fd) || fstat(fd, &st))
		return;
	g.fd = fd;
	g.ino = st.st_ino;
	atomic_store(&g.size, (__u64)st.st_size);
	g.page = (size_t)sysconf(_SC_PAGESIZE);
	if (find_map() || mdb_env_stat(env, &ms) || 2 * (size_t)ms.ms_psize > META_COPY_MAX)
		return; /* the guards before writes still hold */
	g.meta_len = 2 * (size_t)ms.ms_psize;
	copy_metas();
	sigemptyset(&sa.sa_mask);
	g.bus_armed = !sigaction(SIGBUS, &sa, &g.old_bus);
}

static void disarm(void)
{
	if (g.bus_armed)
		sigaction(SIGBUS, &g.old_bus, NULL);
	g.bus_armed = false;
	g.map = NULL;
	g.meta_len = 0;
	g.fd = -1;
}

/* Whether the path still names the file open as fs (a path the account
 * cannot reach, after --user, tells nothing). */
static bool replaced(const struct stat *fs)
{
	struct stat ps;

	if (!fs->st_nlink)
		return true;
	if (stat(g.path, &ps))
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

	if (!atomic_load(&g.kind) && g.fd >= 0 && !fstat(g.fd, &fs)) {
		seen = atomic_load(&g.size);
		if (replaced(&fs))
			damaged(DMG_GONE, 0, 0);
		else if ((__u64)fs.st_size < seen)
			damaged(DMG_SHRUNK, (__u64)fs.st_size, seen);
		else if ((__u64)fs.st_size > seen)
			atomic_store(&g.size, (__u64)fs.st_size);
	}
	if (!atomic_load(&g.kind))
		return 0;
	atomic_fetch_add(&g.errors, 1);
	return -EUCLEAN;
}

int agd_store_txn_begin(struct agd_store *st, MDB_txn **txn)
{
	int err = guard();

	return err ? err : agd_store_errno(mdb_txn_begin(st->env, NULL, 0, txn));
}

int agd_store_commit(struct agd_store *st, MDB_txn *txn)
{
	int err;

	if (atomic_load(&g.kind)) {
		mdb_txn_abort(txn);
		return -EUCLEAN;
	}
	err = convert(mdb_txn_commit(txn), false);
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
	damaged(DMG_ASSERT, 0, 0);
	snprintf(why, sizeof(why), "the state store %s is damaged: LMDB: %s", g.path, msg);
	if (g.fatal)
		g.fatal(why);
}

/* ---- opening ------------------------------------------------------------------- */

static int open_dbi(MDB_txn *txn, const char *name, MDB_dbi *dbi)
{
	return mdb_dbi_open(txn, name, MDB_CREATE, dbi);
}

static bool exists(const char *dir, const char *name)
{
	char path[4200];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return !lstat(path, &st);
}

static int refuse(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int refuse(char *err, size_t len, const char *fmt, ...)
{
	char what[900];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(err, len, "the state store %s %s; agentgated will not start on it and wrote "
		 "nothing to it: restore a copy (mdb_copy), or see agentgated(8), STATE STORE",
		 g.path, what);
	return -EUCLEAN;
}

static int check_version(struct agd_store *st, MDB_txn *txn, char *err, size_t len)
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
		refuse(err, len, "was written by an incompatible agentgated (store version %u; "
		       "this one reads version %u)", ver, AGD_STORE_VERSION);
		return EPROTO;
	}
	return 0;
}

/* Before LMDB opens the file (it would map it, or take an empty one for a
 * new store): a regular file with two sound meta pages, or no file at all
 * in a state dir that never held a store. */
static int check_before_open(char *err, size_t len)
{
	char why[700];
	struct stat st;
	int fd, rc;

	if (stat(g.path, &st)) {
		rc = -errno;
		if (rc != -ENOENT) {
			snprintf(err, len, "cannot open the state store %s: %s", g.path,
				 strerror(-rc));
			return rc;
		}
		if (exists(g.dir, AGD_STORE_MARKER) || exists(g.dir, "lock.mdb"))
			return refuse(err, len, "is missing, yet this state directory held a store "
				      "(%s or lock.mdb is there): starting afresh would forget "
				      "every agent, rate and applied rating id", AGD_STORE_MARKER);
		return 0; /* a first start */
	}
	if (!S_ISREG(st.st_mode))
		return refuse(err, len, "is not a regular file (%s)",
			      S_ISDIR(st.st_mode) ? "a directory" : "a special file");
	if (!st.st_size)
		return refuse(err, len, "is empty (0 bytes): it was cut short");
	fd = open(g.path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, len, "cannot open the state store %s: %s", g.path, strerror(-rc));
		return rc;
	}
	rc = agd_store_check(fd, false, why, sizeof(why));
	close(fd);
	if (rc == -EUCLEAN)
		return refuse(err, len, "is damaged: %s", why);
	if (rc)
		snprintf(err, len, "cannot read the state store %s: %s", g.path, why);
	return rc;
}

/* Under LMDB's writer lock (txn), before anything is written: every page. */
static int check_whole(MDB_env *env, char *err, size_t len)
{
	char why[700];
	int fd, rc;

	if (mdb_env_get_fd(env, &fd)) {
		snprintf(err, len, "cannot check the state store %s", g.path);
		return -EBADF;
	}
	rc = agd_store_check(fd, true, why, sizeof(why));
	if (rc == -EUCLEAN)
		return refuse(err, len, "is damaged: %s", why);
	if (rc)
		snprintf(err, len, "cannot read the state store %s: %s", g.path, why);
	return rc;
}

/* The marker that tells a later start this directory holds a store. */
static int write_marker(char *err, size_t len)
{
	char path[4200], text[200];
	time_t now = time(NULL);
	struct tm tm;
	int fd, dfd, rc = 0;
	size_t n;

	if (exists(g.dir, AGD_STORE_MARKER))
		return 0;
	snprintf(path, sizeof(path), "%s/%s", g.dir, AGD_STORE_MARKER);
	gmtime_r(&now, &tm);
	n = strftime(text, sizeof(text), "agentgated: the state store here (" AGD_STORE_FILE
		     ") was initialised on %Y-%m-%dT%H:%M:%SZ; see agentgated(8), STATE STORE\n",
		     &tm);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, text, n) != (ssize_t)n || fsync(fd))
		rc = -errno;
	if (fd >= 0)
		close(fd);
	dfd = rc ? -1 : open(g.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	if (rc) {
		unlink(path);
		snprintf(err, len, "cannot write %s: %s", path, strerror(-rc));
	}
	return rc;
}

/* The databases, and the store version in meta (written when new). */
static int open_dbis(struct agd_store *st, MDB_txn *txn, char *err, size_t len)
{
	int rc = open_dbi(txn, "agents", &st->agents);

	if (!rc)
		rc = open_dbi(txn, "rules", &st->rules);
	if (!rc)
		rc = open_dbi(txn, "dedup", &st->dedup);
	if (!rc)
		rc = open_dbi(txn, "dedup_at", &st->dedup_at);
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
		rc = check_version(st, txn, err, len);
	if (rc == EPROTO)
		return -EUCLEAN; /* err says which version */
	if (rc)
		snprintf(err, len, "cannot initialise the state store %s: %s", g.path,
			 mdb_strerror(rc));
	return agd_store_errno(rc);
}

int agd_store_open(const char *dir, size_t map_size, struct agd_store *st, char *err, size_t len)
{
	MDB_txn *txn = NULL;
	int rc;

	memset(st, 0, sizeof(*st));
	err[0] = 0;
	disarm();
	atomic_store(&g.claim, 0);
	atomic_store(&g.kind, DMG_NONE);
	snprintf(g.dir, sizeof(g.dir), "%s", dir);
	snprintf(g.path, sizeof(g.path), "%s/" AGD_STORE_FILE, dir);
	if (mkdir(dir, 0700) && errno != EEXIST) {
		rc = errno;
		snprintf(err, len, "cannot create state directory %s: %s", dir, strerror(rc));
		return -rc;
	}
	rc = check_before_open(err, len);
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
		snprintf(err, len, "cannot open the state store %s: %s", g.path, mdb_strerror(rc));
		rc = agd_store_errno(rc);
		goto cleanup;
	}
	/* No other writer meanwhile: the snapshot checked is the one used. */
	rc = check_whole(st->env, err, len);
	if (!rc)
		rc = open_dbis(st, txn, err, len);
	if (!rc) {
		rc = agd_store_errno(mdb_txn_commit(txn));
		txn = NULL;
		if (rc)
			snprintf(err, len, "cannot initialise the state store %s: %s", g.path,
				 agd_store_strerror(rc));
	}
	if (!rc)
		rc = write_marker(err, len);
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

int agd_store_meta_get_u64(struct agd_store *st, MDB_txn *txn, const char *key, __u64 *v)
{
	MDB_val k = { strlen(key), (void *)key }, d;
	int rc = mdb_get(txn, st->meta, &k, &d);

	*v = 0;
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return agd_store_errno(rc);
	if (d.mv_size != sizeof(*v))
		return -EPROTO;
	memcpy(v, d.mv_data, sizeof(*v));
	return 0;
}

int agd_store_meta_put_u64(struct agd_store *st, MDB_txn *txn, const char *key, __u64 v)
{
	MDB_val k = { strlen(key), (void *)key }, d = { sizeof(v), &v };

	return agd_store_errno(mdb_put(txn, st->meta, &k, &d, 0));
}

void agd_store_close(struct agd_store *st)
{
	disarm();
	if (st->env)
		mdb_env_close(st->env);
	st->env = NULL;
}

void agd_rec_policy(const struct agd_agent_rec *r, struct agd_policy *own)
{
	*own = (struct agd_policy){
		.r0 = r->r0,
		.alpha = r->alpha,
		.r_min = r->r_min,
		.r_max = r->r_max,
		.burst = r->burst,
		.burst_kind = (enum agd_burst_kind)r->burst_kind,
		.unit = (enum ag_unit)r->unit,
		.pinned = r->pinned,
	};
}

void agd_rec_set_policy(struct agd_agent_rec *r, const struct agd_policy *own, unsigned int set)
{
	r->set = set;
	r->r0 = own->r0;
	r->alpha = own->alpha;
	r->r_min = own->r_min;
	r->r_max = own->r_max;
	r->burst = own->burst;
	r->burst_kind = own->burst_kind;
	r->unit = own->unit;
	r->pinned = own->pinned;
}

void agd_rec_effective(const struct agd_agent_rec *r, const struct agd_policy *defaults,
		      struct agd_policy *out)
{
	struct agd_policy own;

	agd_rec_policy(r, &own);
	agd_policy_merge(defaults, &own, r->set, out);
}

static MDB_val str_val(const char *s)
{
	return (MDB_val){ strlen(s), (void *)s };
}

int agd_store_agent_put(struct agd_store *st, MDB_txn *txn, const char *name,
		       const struct agd_agent_rec *rec)
{
	MDB_val k = str_val(name), v = { sizeof(*rec), (void *)rec };

	return agd_store_errno(mdb_put(txn, st->agents, &k, &v, 0));
}

int agd_store_agent_get(struct agd_store *st, MDB_txn *txn, const char *name,
		       struct agd_agent_rec *rec)
{
	MDB_val k = str_val(name), v;
	int rc = mdb_get(txn, st->agents, &k, &v);

	if (rc == MDB_NOTFOUND)
		return -ENOENT;
	if (rc)
		return agd_store_errno(rc);
	if (v.mv_size != sizeof(*rec))
		return -EUCLEAN;
	memcpy(rec, v.mv_data, sizeof(*rec));
	return 0;
}

int agd_store_agent_del(struct agd_store *st, MDB_txn *txn, const char *name)
{
	MDB_val k = str_val(name);

	return agd_store_errno(mdb_del(txn, st->agents, &k, NULL));
}

/* ---- transactions and walks ---------------------------------------------------- */

int agd_store_read_begin(struct agd_store *st, MDB_txn **txn)
{
	int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, txn);

	if (rc == MDB_READERS_FULL)
		return -EBUSY;
	return rc ? agd_store_errno(rc) : 0;
}

void agd_store_txn_end(MDB_txn *txn)
{
	if (txn)
		mdb_txn_abort(txn);
}

int agd_store_agents_foreach(struct agd_store *st, MDB_txn *txn,
			    int (*fn)(void *arg, const char *name, const struct agd_agent_rec *rec),
			    void *arg, size_t *skipped)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, st->agents, &cur), err = 0;

	if (rc)
		return agd_store_errno(rc);
	while (!err && !(rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))) {
		char name[AG_NAME_MAX + 1];
		struct agd_agent_rec rec;

		if (!k.mv_size || k.mv_size > AG_NAME_MAX || v.mv_size != sizeof(rec)) {
			if (skipped)
				(*skipped)++;
			continue;
		}
		memcpy(name, k.mv_data, k.mv_size);
		name[k.mv_size] = 0;
		memcpy(&rec, v.mv_data, sizeof(rec));
		err = fn(arg, name, &rec);
	}
	mdb_cursor_close(cur);
	if (err)
		return err;
	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

int agd_store_agent_names_after(struct agd_store *st, MDB_txn *txn, const char *after, size_t max,
			       char (*names)[AG_NAME_MAX + 1], size_t *n)
{
	size_t after_len = strlen(after);
	MDB_val k = { after_len, (void *)after }, v;
	MDB_cursor *cur = NULL;
	int rc;

	*n = 0;
	rc = mdb_cursor_open(txn, st->agents, &cur);
	if (!rc)
		rc = mdb_cursor_get(cur, &k, &v, after_len ? MDB_SET_RANGE : MDB_FIRST);
	for (; !rc && *n < max; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (!k.mv_size || k.mv_size > AG_NAME_MAX)
			continue; /* not a name: the agents walk skips it too */
		if (k.mv_size == after_len && !memcmp(k.mv_data, after, after_len))
			continue;
		memcpy(names[*n], k.mv_data, k.mv_size);
		names[(*n)++][k.mv_size] = 0;
	}
	if (cur)
		mdb_cursor_close(cur);
	return rc && rc != MDB_NOTFOUND ? agd_store_errno(rc) : 0;
}

int agd_store_rules_foreach(struct agd_store *st, MDB_txn *txn,
			   int (*fn)(void *arg, const struct agd_rule_rec_key *key,
				     const char *agent),
			   void *arg)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, st->rules, &cur), r = 0;

	if (rc)
		return agd_store_errno(rc);
	while (!(rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))) {
		struct agd_rule_rec_key key;
		char agent[AG_NAME_MAX + 1];

		if (k.mv_size != sizeof(key) || v.mv_size > AG_NAME_MAX)
			continue;
		memcpy(&key, k.mv_data, sizeof(key));
		memcpy(agent, v.mv_data, v.mv_size);
		agent[v.mv_size] = 0;
		r = fn(arg, &key, agent);
		if (r < 0)
			break;
		if (r == 1 && (rc = mdb_cursor_del(cur, 0)))
			break;
	}
	mdb_cursor_close(cur);
	if (r < 0)
		return r;
	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

int agd_store_rule_get(struct agd_store *st, MDB_txn *txn, const struct agd_rule_rec_key *key,
		      char *buf, size_t len)
{
	MDB_val k = { sizeof(*key), (void *)key }, v;
	int rc = mdb_get(txn, st->rules, &k, &v);

	if (rc)
		return agd_store_errno(rc);
	snprintf(buf, len, "%.*s", (int)v.mv_size, (const char *)v.mv_data);
	return 0;
}

/* ---- agents an operator deleted --------------------------------------------- */

int agd_store_deleted_put(struct agd_store *st, MDB_txn *txn, const char *name, __u64 time_ms,
			 const char *subject)
{
	struct agd_deleted_rec rec = { .time_ms = time_ms };
	MDB_val k = str_val(name), v = { sizeof(rec), &rec };

	snprintf(rec.subject, sizeof(rec.subject), "%s", subject ? subject : "");
	return agd_store_errno(mdb_put(txn, st->deleted, &k, &v, 0));
}

int agd_store_deleted_get(struct agd_store *st, MDB_txn *txn, const char *name,
			 struct agd_deleted_rec *rec)
{
	MDB_val k = str_val(name), v;
	int rc = mdb_get(txn, st->deleted, &k, &v);

	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return agd_store_errno(rc);
	if (v.mv_size != sizeof(*rec))
		return 0; /* a record of another layout: not ours to judge */
	memcpy(rec, v.mv_data, sizeof(*rec));
	rec->subject[sizeof(rec->subject) - 1] = '\0';
	return 1;
}

int agd_store_deleted_del(struct agd_store *st, MDB_txn *txn, const char *name)
{
	MDB_val k = str_val(name);
	int rc = mdb_del(txn, st->deleted, &k, NULL);

	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

/* ---- dedup ids --------------------------------------------------------- */

#define AT_KEY_MAX (8 + 256)

static size_t at_key(__u64 ms, const char *id, __u8 *buf)
{
	__u64 be = htobe64(ms);
	size_t n = strlen(id);

	if (n > AT_KEY_MAX - 8)
		n = AT_KEY_MAX - 8;
	memcpy(buf, &be, 8);
	memcpy(buf + 8, id, n);
	return 8 + n;
}

int agd_store_dedup_seen(struct agd_store *st, MDB_txn *txn, const char *id)
{
	MDB_val k = str_val(id), v;
	int rc = mdb_get(txn, st->dedup, &k, &v);

	if (rc == MDB_NOTFOUND)
		return 0;
	return rc ? agd_store_errno(rc) : 1;
}

int agd_store_dedup_add(struct agd_store *st, MDB_txn *txn, const char *id, __u64 now_ms)
{
	__u8 buf[AT_KEY_MAX];
	MDB_val k = str_val(id), v = { sizeof(now_ms), &now_ms };
	int rc = mdb_put(txn, st->dedup, &k, &v, MDB_NOOVERWRITE);

	if (rc == MDB_KEYEXIST)
		return 1; /* seen: one lookup answers and records */
	if (!rc) {
		k = (MDB_val){ at_key(now_ms, id, buf), buf };
		v = (MDB_val){ 0, "" };
		rc = mdb_put(txn, st->dedup_at, &k, &v, 0);
	}
	return agd_store_errno(rc);
}

__u64 agd_store_dedup_count(struct agd_store *st, MDB_txn *txn)
{
	MDB_stat s;

	return mdb_stat(txn, st->dedup, &s) ? 0 : s.ms_entries;
}

int agd_store_dedup_prune(struct agd_store *st, MDB_txn *txn, __u64 now_ms, __u64 window_ms,
			 __u64 max_ids, size_t budget)
{
	__u64 count = agd_store_dedup_count(st, txn);
	__u64 cutoff = now_ms > window_ms ? now_ms - window_ms : 0;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;

	rc = mdb_cursor_open(txn, st->dedup_at, &cur);
	if (rc)
		return agd_store_errno(rc);
	while (budget-- && !(rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST))) {
		char id[AT_KEY_MAX];
		MDB_val idk;
		__u64 at;

		if (k.mv_size < 8)
			goto drop; /* not ours: remove rather than stop pruning */
		memcpy(&at, k.mv_data, 8);
		at = be64toh(at);
		if (at >= cutoff && count <= max_ids)
			break;
		memcpy(id, (char *)k.mv_data + 8, k.mv_size - 8);
		idk = (MDB_val){ k.mv_size - 8, id };
		rc = mdb_del(txn, st->dedup, &idk, NULL);
		if (rc && rc != MDB_NOTFOUND)
			break;
		if (!rc && count)
			count--;
drop:
		rc = mdb_cursor_del(cur, 0);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

/* ---- rules and audit --------------------------------------------------- */

int agd_store_rule_put(struct agd_store *st, MDB_txn *txn, const struct agd_rule_rec_key *key,
		      const char *agent)
{
	MDB_val k = { sizeof(*key), (void *)key }, v = str_val(agent);

	return agd_store_errno(mdb_put(txn, st->rules, &k, &v, 0));
}

int agd_store_rule_del(struct agd_store *st, MDB_txn *txn, const struct agd_rule_rec_key *key)
{
	MDB_val k = { sizeof(*key), (void *)key };

	return agd_store_errno(mdb_del(txn, st->rules, &k, NULL));
}

/* The newest AGD_STORE_AUDIT_MAX records stay (audit.log keeps them all):
 * each append removes up to two of the oldest beyond that. */
static int prune_audit(struct agd_store *st, MDB_txn *txn)
{
	MDB_cursor *cur;
	MDB_stat stat;
	MDB_val k, v;
	int rc, n;

	rc = mdb_stat(txn, st->audit, &stat);
	if (rc || stat.ms_entries <= AGD_STORE_AUDIT_MAX)
		return rc;
	rc = mdb_cursor_open(txn, st->audit, &cur);
	for (n = 0; !rc && n < 2 && stat.ms_entries - (size_t)n > AGD_STORE_AUDIT_MAX; n++) {
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
		if (!rc)
			rc = mdb_cursor_del(cur, 0);
	}
	if (!rc || rc == MDB_NOTFOUND)
		rc = 0;
	mdb_cursor_close(cur);
	return rc;
}

int agd_store_audit(struct agd_store *st, MDB_txn *txn, const char *line)
{
	MDB_cursor *cur;
	MDB_val k, v;
	__u64 seq = 1, be;
	int rc = mdb_cursor_open(txn, st->audit, &cur);

	if (rc)
		return agd_store_errno(rc);
	rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	if (!rc && k.mv_size == 8) {
		memcpy(&be, k.mv_data, 8);
		seq = be64toh(be) + 1;
	}
	mdb_cursor_close(cur);
	if (rc && rc != MDB_NOTFOUND)
		return agd_store_errno(rc);
	be = htobe64(seq);
	k = (MDB_val){ 8, &be };
	v = str_val(line);
	rc = mdb_put(txn, st->audit, &k, &v, MDB_APPEND);
	if (!rc)
		rc = prune_audit(st, txn);
	return agd_store_errno(rc);
}

/* ---- global defaults (meta "defaults") ------------------------------------------- */

int agd_store_defaults_get(struct agd_store *st, MDB_txn *txn, struct agd_policy *p)
{
	MDB_val k = { 8, "defaults" }, v;
	struct agd_policy_rec r;
	int rc = mdb_get(txn, st->meta, &k, &v);

	if (rc)
		return agd_store_errno(rc);
	if (v.mv_size != sizeof(r))
		return -EUCLEAN;
	memcpy(&r, v.mv_data, sizeof(r));
	if (r.version != AGD_STORE_VERSION)
		return -EUCLEAN;
	*p = (struct agd_policy){
		.r0 = r.r0,
		.alpha = r.alpha,
		.r_min = r.r_min,
		.r_max = r.r_max,
		.burst = r.burst,
		.burst_kind = (enum agd_burst_kind)r.burst_kind,
		.unit = (enum ag_unit)r.unit,
		.pinned = r.pinned,
	};
	return 0;
}

int agd_store_defaults_put(struct agd_store *st, MDB_txn *txn, const struct agd_policy *p)
{
	struct agd_policy_rec r = {
		.version = AGD_STORE_VERSION,
		.burst_kind = p->burst_kind,
		.unit = p->unit,
		.pinned = p->pinned,
		.r0 = p->r0,
		.alpha = p->alpha,
		.r_min = p->r_min,
		.r_max = p->r_max,
		.burst = p->burst,
	};
	MDB_val k = { 8, "defaults" }, v = { sizeof(r), &r };

	return agd_store_errno(mdb_put(txn, st->meta, &k, &v, 0));
}

/* ---- explain history ----------------------------------------------------------- */

/* Entry i of a value starts at off[i]; off[n] is the value's end. */
struct hist_walk {
	size_t head;                     /* bytes of the head */
	__u64 total;
	size_t n;
	size_t off[AGD_HIST_CHANGES > AGD_HIST_RATINGS ? AGD_HIST_CHANGES + 1 : AGD_HIST_RATINGS + 1];
};

/* The bytes of entry at p that follow its struct; 0 when it does not fit. */
static size_t rating_extra(const __u8 *p, size_t left)
{
	struct agd_hist_rating_rec r;

	if (left < sizeof(r))
		return 0;
	memcpy(&r, p, sizeof(r));
	if ((size_t)r.id_len + r.user_len > left - sizeof(r))
		return 0;
	return sizeof(r) + r.id_len + r.user_len;
}

static size_t change_extra(const __u8 *p, size_t left)
{
	struct agd_hist_change_rec c;

	if (left < sizeof(c))
		return 0;
	memcpy(&c, p, sizeof(c));
	if (c.detail_len > AGD_HIST_DETAIL_MAX ||
	    (size_t)c.subject_len + c.action_len + c.detail_len > left - sizeof(c))
		return 0;
	return sizeof(c) + c.subject_len + c.action_len + c.detail_len;
}

/* Checks a value whole: its head, each entry within it, nothing after. */
static int hist_walk(const void *buf, size_t len, size_t head, size_t cap,
		     size_t (*entry)(const __u8 *p, size_t left), struct hist_walk *w)
{
	const __u8 *b = buf;
	struct agd_hist_head h;
	size_t i, at;

	w->head = head;
	w->total = 0;
	w->n = 0;
	w->off[0] = head;
	if (!buf || !len)
		return 0;
	if (len < head)
		return -EUCLEAN;
	memcpy(&h, b, sizeof(h));
	if (h.version != AGD_HIST_VERSION || h.n > cap || h.total < h.n)
		return -EUCLEAN;
	for (i = 0, at = head; i < h.n; i++) {
		size_t n = entry(b + at, len - at);

		if (!n)
			return -EUCLEAN;
		w->off[i] = at;
		at += n;
	}
	if (at != len)
		return -EUCLEAN;
	w->off[h.n] = at;
	w->n = h.n;
	w->total = h.total;
	return 0;
}

static size_t clip(const char *s, size_t max)
{
	size_t n = s ? strlen(s) : 0;

	return n < max ? n : max;
}

int agd_hist_ratings_encode(const void *old, size_t old_len, const struct agd_hist_rating_in *in,
			   size_t n, __u64 skipped, void **buf, size_t *len)
{
	size_t take = n < AGD_HIST_RATINGS ? n : AGD_HIST_RATINGS, keep, from, size, i;
	struct agd_hist_head h;
	struct hist_walk w;
	__u8 *b, *p;
	int err;

	err = hist_walk(old, old_len, sizeof(h), AGD_HIST_RATINGS, rating_extra, &w);
	if (err)
		return err;
	keep = w.n < AGD_HIST_RATINGS - take ? w.n : AGD_HIST_RATINGS - take;
	from = w.off[w.n - keep];
	size = sizeof(h) + (w.off[w.n] - from);
	for (i = n - take; i < n; i++)
		size += sizeof(struct agd_hist_rating_rec) + clip(in[i].id, AGD_HIST_STR_MAX) +
			clip(in[i].user, AGD_HIST_STR_MAX);
	b = malloc(size);
	if (!b)
		return -ENOMEM;
	h = (struct agd_hist_head){ AGD_HIST_VERSION, (__u32)(keep + take), w.total + skipped + n };
	memcpy(b, &h, sizeof(h));
	p = b + sizeof(h);
	if (keep) {
		memcpy(p, (const __u8 *)old + from, w.off[w.n] - from);
		p += w.off[w.n] - from;
	}
	for (i = n - take; i < n; i++) {
		struct agd_hist_rating_rec r = {
			.ts_ms = in[i].ts_ms,
			.applied_ms = in[i].applied_ms,
			.rate_before = in[i].rate_before,
			.rate_after = in[i].rate_after,
			.score = (__u8)in[i].score,
			.id_len = (__u8)clip(in[i].id, AGD_HIST_STR_MAX),
			.user_len = (__u8)clip(in[i].user, AGD_HIST_STR_MAX),
		};

		memcpy(p, &r, sizeof(r));
		p += sizeof(r);
		memcpy(p, in[i].id ? in[i].id : "", r.id_len);
		p += r.id_len;
		memcpy(p, in[i].user ? in[i].user : "", r.user_len);
		p += r.user_len;
	}
	*buf = b;
	*len = size;
	return 0;
}

int agd_hist_ratings_decode(const void *buf, size_t len, struct agd_hist_ratings *out)
{
	struct hist_walk w;
	size_t i;
	int err = hist_walk(buf, len, sizeof(struct agd_hist_head), AGD_HIST_RATINGS, rating_extra,
			    &w);

	out->total = 0;
	out->n = 0;
	if (err)
		return err;
	for (i = 0; i < w.n; i++) {
		const __u8 *p = (const __u8 *)buf + w.off[i];
		struct agd_hist_rating_rec r;
		struct agd_hist_rating *o = &out->r[i];

		memcpy(&r, p, sizeof(r));
		p += sizeof(r);
		o->ts_ms = r.ts_ms;
		o->applied_ms = r.applied_ms;
		o->rate_before = r.rate_before;
		o->rate_after = r.rate_after;
		o->score = r.score;
		memcpy(o->id, p, r.id_len);
		o->id[r.id_len] = 0;
		memcpy(o->user, p + r.id_len, r.user_len);
		o->user[r.user_len] = 0;
	}
	out->total = w.total;
	out->n = w.n;
	return 0;
}

static const char detail_cut[] = "{\"before\":null,\"after\":null,\"truncated\":true}";

int agd_hist_changes_encode(const void *old, size_t old_len, __u64 time_ms, const char *subject,
			   const char *action, const char *detail, int pin, void **buf,
			   size_t *len)
{
	struct agd_hist_changes_head h = { .pin_ms = -1 };
	size_t keep, from, size, dl = detail ? strlen(detail) : 0;
	struct agd_hist_change_rec c = { .time_ms = time_ms };
	struct hist_walk w;
	__u8 *b, *p;
	int err;

	err = hist_walk(old, old_len, sizeof(h), AGD_HIST_CHANGES, change_extra, &w);
	if (err)
		return err;
	if (old && old_len)
		memcpy(&h, old, sizeof(h));
	if (dl > AGD_HIST_DETAIL_MAX) {
		detail = detail_cut;
		dl = sizeof(detail_cut) - 1;
	}
	c.subject_len = (__u8)clip(subject, AGD_HIST_STR_MAX);
	c.action_len = (__u8)clip(action, AGD_HIST_STR_MAX);
	c.detail_len = (__u16)dl;
	keep = w.n < AGD_HIST_CHANGES - 1 ? w.n : AGD_HIST_CHANGES - 1;
	from = w.off[w.n - keep];
	size = sizeof(h) + (w.off[w.n] - from) + sizeof(c) + c.subject_len + c.action_len + dl;
	b = malloc(size);
	if (!b)
		return -ENOMEM;
	h.h = (struct agd_hist_head){ AGD_HIST_VERSION, (__u32)(keep + 1), w.total + 1 };
	if (pin == 1) {
		h.pin_ms = (__s64)time_ms;
		h.pin_subject_len = c.subject_len;
		memset(h.pin_subject, 0, sizeof(h.pin_subject));
		memcpy(h.pin_subject, subject ? subject : "", c.subject_len);
	} else if (pin == 0) {
		h.pin_ms = -1;
		h.pin_subject_len = 0;
		memset(h.pin_subject, 0, sizeof(h.pin_subject));
	}
	memcpy(b, &h, sizeof(h));
	p = b + sizeof(h);
	if (keep) {
		memcpy(p, (const __u8 *)old + from, w.off[w.n] - from);
		p += w.off[w.n] - from;
	}
	memcpy(p, &c, sizeof(c));
	p += sizeof(c);
	memcpy(p, subject ? subject : "", c.subject_len);
	p += c.subject_len;
	memcpy(p, action ? action : "", c.action_len);
	p += c.action_len;
	memcpy(p, detail ? detail : "", dl);
	*buf = b;
	*len = size;
	return 0;
}

int agd_hist_changes_decode(const void *buf, size_t len, struct agd_hist_changes *out)
{
	struct agd_hist_changes_head h;
	struct hist_walk w;
	size_t i;
	int err = hist_walk(buf, len, sizeof(h), AGD_HIST_CHANGES, change_extra, &w);

	out->total = 0;
	out->n = 0;
	out->pin_ms = -1;
	out->pin_subject[0] = 0;
	if (err)
		return err;
	if (!buf || !len)
		return 0;
	memcpy(&h, buf, sizeof(h)); /* pin_subject_len fits pin_subject: a __u8 */
	for (i = 0; i < w.n; i++) {
		const __u8 *p = (const __u8 *)buf + w.off[i];
		struct agd_hist_change_rec c;
		struct agd_hist_change *o = &out->c[i];

		memcpy(&c, p, sizeof(c));
		p += sizeof(c);
		o->time_ms = c.time_ms;
		memcpy(o->subject, p, c.subject_len);
		o->subject[c.subject_len] = 0;
		p += c.subject_len;
		memcpy(o->action, p, c.action_len);
		o->action[c.action_len] = 0;
		p += c.action_len;
		memcpy(o->detail, p, c.detail_len);
		o->detail[c.detail_len] = 0;
	}
	out->total = w.total;
	out->n = w.n;
	out->pin_ms = h.pin_ms;
	memcpy(out->pin_subject, h.pin_subject, h.pin_subject_len);
	out->pin_subject[h.pin_subject_len] = 0;
	return 0;
}

/* The current value under name in dbi (NULL when absent or fresh). */
static int hist_old(MDB_txn *txn, MDB_dbi dbi, const char *name, bool fresh, MDB_val *v)
{
	MDB_val k = str_val(name);
	int rc;

	*v = (MDB_val){ 0, NULL };
	if (fresh)
		return 0;
	rc = mdb_get(txn, dbi, &k, v);
	if (rc == MDB_NOTFOUND) {
		*v = (MDB_val){ 0, NULL };
		return 0;
	}
	return agd_store_errno(rc);
}

static int hist_put(MDB_txn *txn, MDB_dbi dbi, const char *name, void *buf, size_t len)
{
	MDB_val k = str_val(name), v = { len, buf };
	int rc = mdb_put(txn, dbi, &k, &v, 0);

	free(buf);
	return agd_store_errno(rc);
}

int agd_store_hist_add_ratings(struct agd_store *st, MDB_txn *txn, const char *name, bool fresh,
			      const struct agd_hist_rating_in *in, size_t n, __u64 skipped)
{
	MDB_val old;
	void *buf;
	size_t len;
	int err;

	if (!st->hist || !n)
		return 0;
	if (fresh) { /* an earlier agent's changes, left by an older agentgated */
		MDB_val k = str_val(name);
		int rc = mdb_del(txn, st->hist_changes, &k, NULL);

		if (rc && rc != MDB_NOTFOUND)
			return agd_store_errno(rc);
	}
	err = hist_old(txn, st->hist_rated, name, fresh, &old);
	if (!err)
		err = agd_hist_ratings_encode(old.mv_data, old.mv_size, in, n, skipped, &buf, &len);
	if (err == -EUCLEAN) /* a value we cannot read is replaced, not kept */
		err = agd_hist_ratings_encode(NULL, 0, in, n, skipped, &buf, &len);
	return err ? err : hist_put(txn, st->hist_rated, name, buf, len);
}

int agd_store_hist_add_change(struct agd_store *st, MDB_txn *txn, const char *name, bool fresh,
			     __u64 time_ms, const char *subject, const char *action,
			     const char *detail, int pin)
{
	MDB_val old;
	void *buf;
	size_t len;
	int err;

	if (!st->hist)
		return 0;
	err = hist_old(txn, st->hist_changes, name, fresh, &old);
	if (!err)
		err = agd_hist_changes_encode(old.mv_data, old.mv_size, time_ms, subject, action,
					     detail, pin, &buf, &len);
	if (err == -EUCLEAN)
		err = agd_hist_changes_encode(NULL, 0, time_ms, subject, action, detail, pin, &buf,
					     &len);
	return err ? err : hist_put(txn, st->hist_changes, name, buf, len);
}

int agd_store_hist_del(struct agd_store *st, MDB_txn *txn, const char *name)
{
	MDB_val k = str_val(name);
	int rc;

	if (!st->hist)
		return 0;
	rc = mdb_del(txn, st->hist_rated, &k, NULL);
	if (!rc || rc == MDB_NOTFOUND)
		rc = mdb_del(txn, st->hist_changes, &k, NULL);
	return rc == MDB_NOTFOUND ? 0 : agd_store_errno(rc);
}

int agd_store_hist_get(struct agd_store *st, MDB_txn *txn, const char *name,
		      struct agd_hist_ratings *r, struct agd_hist_changes *c)
{
	MDB_val v;
	int err = 0;

	r->n = c->n = 0;
	r->total = c->total = 0;
	c->pin_ms = -1;
	c->pin_subject[0] = 0;
	if (!st->hist)
		return 0;
	err = hist_old(txn, st->hist_rated, name, false, &v);
	if (!err)
		err = agd_hist_ratings_decode(v.mv_data, v.mv_size, r);
	if (!err)
		err = hist_old(txn, st->hist_changes, name, false, &v);
	if (!err)
		err = agd_hist_changes_decode(v.mv_data, v.mv_size, c);
	return err;
}

/* ---- read-only (agentgate agent explain) ------------------------------------------ */

static int ro_dbi(MDB_txn *txn, const char *name, MDB_dbi *dbi)
{
	return mdb_dbi_open(txn, name, 0, dbi);
}

int agd_store_open_ro(const char *dir, struct agd_store *st, MDB_txn **txn, char *err, size_t len)
{
	MDB_val k = { 7, "version" }, v;
	struct stat ds, fs;
	char why[700];
	unsigned int flags = MDB_RDONLY | MDB_NOTLS;
	__u32 ver = 0;
	int fd, rc;

	memset(st, 0, sizeof(*st));
	*txn = NULL;
	snprintf(g.dir, sizeof(g.dir), "%s", dir);
	snprintf(g.path, sizeof(g.path), "%s/" AGD_STORE_FILE, dir);
	if (stat(dir, &ds)) {
		rc = -errno;
		if (rc == -ENOENT)
			snprintf(err, len, "no agentgated state directory at %s: it does not exist",
				 dir);
		else
			snprintf(err, len, "cannot read the state directory %s: %s", dir,
				 strerror(-rc));
		return rc;
	}
	if (!S_ISDIR(ds.st_mode)) {
		snprintf(err, len, "%s is not an agentgated state directory: not a directory", dir);
		return -ENOTDIR;
	}
	if (stat(g.path, &fs)) {
		rc = -errno;
		if (rc != -ENOENT) {
			snprintf(err, len, "cannot read %s: %s", g.path, strerror(-rc));
			return rc;
		}
		if (exists(dir, AGD_STORE_MARKER)) {
			snprintf(err, len, "the state store %s is missing, yet %s held one (%s is "
				 "there): restore a copy (see agentgated(8), STATE STORE)", g.path,
				 dir, AGD_STORE_MARKER);
			return -EUCLEAN;
		}
		snprintf(err, len, "%s is not an agentgated state directory: it has no "
			 AGD_STORE_FILE " (nor " AGD_STORE_MARKER ")", dir);
		return -ENOENT;
	}
	if (!S_ISREG(fs.st_mode) || !fs.st_size) {
		snprintf(err, len, "the state store %s is %s", g.path,
			 !S_ISREG(fs.st_mode) ? "not a regular file" : "empty (0 bytes)");
		return -EUCLEAN;
	}
	fd = open(g.path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, len, "cannot open the state store %s: %s", g.path, strerror(-rc));
		return rc;
	}
	rc = agd_store_check(fd, true, why, sizeof(why));
	close(fd);
	if (rc) {
		snprintf(err, len, rc == -EUCLEAN ? "the state store %s is damaged: %s" :
			 "cannot read the state store %s: %s", g.path, why);
		return rc;
	}
	/* LMDB's reader table when a daemon ever used the store (one may start
	 * meanwhile); none otherwise: no file is created here. */
	if (!exists(dir, "lock.mdb"))
		flags |= MDB_NOLOCK;
	rc = mdb_env_create(&st->env);
	if (!rc)
		rc = mdb_env_set_maxdbs(st->env, AG_STORE_MAX_DBS);
	if (!rc)
		rc = mdb_env_set_maxreaders(st->env, AGD_STORE_MAX_READERS);
	if (!rc)
		rc = mdb_env_open(st->env, dir, flags, 0600);
	if (!rc)
		rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, txn);
	if (rc) {
		snprintf(err, len, "cannot open the state store %s: %s", g.path, mdb_strerror(rc));
		goto fail;
	}
	rc = ro_dbi(*txn, "agents", &st->agents);
	if (!rc)
		rc = ro_dbi(*txn, "meta", &st->meta);
	if (!rc)
		rc = ro_dbi(*txn, "audit", &st->audit);
	if (!rc)
		rc = mdb_get(*txn, st->meta, &k, &v);
	if (rc == MDB_NOTFOUND) {
		snprintf(err, len, "%s is not agentgated's state store: no agents, audit or "
			 "version record in it", g.path);
		rc = EPROTO;
		goto fail;
	}
	if (rc) {
		snprintf(err, len, "cannot read the state store %s: %s", g.path, mdb_strerror(rc));
		goto fail;
	}
	if (v.mv_size == sizeof(ver))
		memcpy(&ver, v.mv_data, sizeof(ver));
	if (v.mv_size != sizeof(ver) || ver != AGD_STORE_VERSION) {
		snprintf(err, len, "the state store %s was written by an incompatible agentgated "
			 "(store version %u; this one reads version %u)", g.path, ver,
			 AGD_STORE_VERSION);
		rc = EPROTO;
		goto fail;
	}
	rc = ro_dbi(*txn, "hist_rated", &st->hist_rated);
	if (!rc)
		rc = ro_dbi(*txn, "hist_changes", &st->hist_changes);
	st->hist = !rc;
	if (rc && rc != MDB_NOTFOUND) {
		snprintf(err, len, "cannot read the state store %s: %s", g.path, mdb_strerror(rc));
		goto fail;
	}
	return 0;
fail:
	if (*txn)
		mdb_txn_abort(*txn);
	*txn = NULL;
	if (st->env)
		mdb_env_close(st->env);
	st->env = NULL;
	if (rc == EPROTO || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_INVALID ||
	    rc == MDB_VERSION_MISMATCH || rc == MDB_INCOMPATIBLE)
		return -EUCLEAN;
	return rc > 0 && rc < 4096 ? -rc : -EIO;
}
