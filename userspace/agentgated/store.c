// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The state store. Opening it refuses a damaged file rather than risk it
 * (see ag_store_open); once open, a store found damaged (LMDB's own errors,
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

int ag_store_errno(int rc)
{
	return convert(rc, true);
}

bool ag_store_damaged(char *why, size_t len)
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

const char *ag_store_strerror(int err)
{
	static __thread char msg[4800];

	if (err == -EUCLEAN) {
		if (!ag_store_damaged(msg, sizeof(msg)))
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

__u64 ag_store_errors(void)
{
	return atomic_load(&g.errors);
}

void ag_store_on_damage(void (*notify)(void), void (*fatal)(const char *why))
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
		    ino == (unsigned long long)g.ino && strstr(line, "/" AG_STORE_FILE)) {
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

int ag_store_txn_begin(struct ag_store *st, MDB_txn **txn)
{
	int err = guard();

	return err ? err : ag_store_errno(mdb_txn_begin(st->env, NULL, 0, txn));
}

int ag_store_commit(struct ag_store *st, MDB_txn *txn)
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

static int check_version(struct ag_store *st, MDB_txn *txn, char *err, size_t len)
{
	MDB_val k = { 7, "version" }, v;
	__u32 ver = AG_STORE_VERSION;
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
		       "this one reads version %u)", ver, AG_STORE_VERSION);
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
		if (exists(g.dir, AG_STORE_MARKER) || exists(g.dir, "lock.mdb"))
			return refuse(err, len, "is missing, yet this state directory held a store "
				      "(%s or lock.mdb is there): starting afresh would forget "
				      "every agent, rate and applied rating id", AG_STORE_MARKER);
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
	rc = ag_store_check(fd, false, why, sizeof(why));
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
	rc = ag_store_check(fd, true, why, sizeof(why));
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

	if (exists(g.dir, AG_STORE_MARKER))
		return 0;
	snprintf(path, sizeof(path), "%s/%s", g.dir, AG_STORE_MARKER);
	gmtime_r(&now, &tm);
	n = strftime(text, sizeof(text), "agentgated: the state store here (" AG_STORE_FILE
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
static int open_dbis(struct ag_store *st, MDB_txn *txn, char *err, size_t len)
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
	if (!rc)
		rc = check_version(st, txn, err, len);
	if (rc == EPROTO)
		return -EUCLEAN; /* err says which version */
	if (rc)
		snprintf(err, len, "cannot initialise the state store %s: %s", g.path,
			 mdb_strerror(rc));
	return ag_store_errno(rc);
}

int ag_store_open(const char *dir, size_t map_size, struct ag_store *st, char *err, size_t len)
{
	MDB_txn *txn = NULL;
	int rc;

	memset(st, 0, sizeof(*st));
	err[0] = 0;
	disarm();
	atomic_store(&g.claim, 0);
	atomic_store(&g.kind, DMG_NONE);
	snprintf(g.dir, sizeof(g.dir), "%s", dir);
	snprintf(g.path, sizeof(g.path), "%s/" AG_STORE_FILE, dir);
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
		rc = mdb_env_set_maxdbs(st->env, 8);
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
		rc = mdb_env_set_maxreaders(st->env, AG_STORE_MAX_READERS);
	if (!rc)
		rc = mdb_env_open(st->env, dir, MDB_NOTLS, 0600);
	if (!rc)
		rc = mdb_txn_begin(st->env, NULL, 0, &txn);
	if (rc) {
		snprintf(err, len, "cannot open the state store %s: %s", g.path, mdb_strerror(rc));
		rc = ag_store_errno(rc);
		goto cleanup;
	}
	/* No other writer meanwhile: the snapshot checked is the one used. */
	rc = check_whole(st->env, err, len);
	if (!rc)
		rc = open_dbis(st, txn, err, len);
	if (!rc) {
		rc = ag_store_errno(mdb_txn_commit(txn));
		txn = NULL;
		if (rc)
			snprintf(err, len, "cannot initialise the state store %s: %s", g.path,
				 ag_store_strerror(rc));
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

int ag_store_meta_get_u64(struct ag_store *st, MDB_txn *txn, const char *key, __u64 *v)
{
	MDB_val k = { strlen(key), (void *)key }, d;
	int rc = mdb_get(txn, st->meta, &k, &d);

	*v = 0;
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return ag_store_errno(rc);
	if (d.mv_size != sizeof(*v))
		return -EPROTO;
	memcpy(v, d.mv_data, sizeof(*v));
	return 0;
}

int ag_store_meta_put_u64(struct ag_store *st, MDB_txn *txn, const char *key, __u64 v)
{
	MDB_val k = { strlen(key), (void *)key }, d = { sizeof(v), &v };

	return ag_store_errno(mdb_put(txn, st->meta, &k, &d, 0));
}

void ag_store_close(struct ag_store *st)
{
	disarm();
	if (st->env)
		mdb_env_close(st->env);
	st->env = NULL;
}

void ag_rec_policy(const struct ag_agent_rec *r, struct ag_policy *own)
{
	*own = (struct ag_policy){
		.r0 = r->r0,
		.alpha = r->alpha,
		.r_min = r->r_min,
		.r_max = r->r_max,
		.burst = r->burst,
		.burst_kind = (enum ag_burst_kind)r->burst_kind,
		.unit = (enum ag_unit)r->unit,
		.pinned = r->pinned,
	};
}

void ag_rec_set_policy(struct ag_agent_rec *r, const struct ag_policy *own, unsigned int set)
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

void ag_rec_effective(const struct ag_agent_rec *r, const struct ag_policy *defaults,
		      struct ag_policy *out)
{
	struct ag_policy own;

	ag_rec_policy(r, &own);
	ag_policy_merge(defaults, &own, r->set, out);
}

static MDB_val str_val(const char *s)
{
	return (MDB_val){ strlen(s), (void *)s };
}

int ag_store_agent_put(struct ag_store *st, MDB_txn *txn, const char *name,
		       const struct ag_agent_rec *rec)
{
	MDB_val k = str_val(name), v = { sizeof(*rec), (void *)rec };

	return ag_store_errno(mdb_put(txn, st->agents, &k, &v, 0));
}

int ag_store_agent_del(struct ag_store *st, MDB_txn *txn, const char *name)
{
	MDB_val k = str_val(name);

	return ag_store_errno(mdb_del(txn, st->agents, &k, NULL));
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

int ag_store_dedup_seen(struct ag_store *st, MDB_txn *txn, const char *id)
{
	MDB_val k = str_val(id), v;
	int rc = mdb_get(txn, st->dedup, &k, &v);

	if (rc == MDB_NOTFOUND)
		return 0;
	return rc ? ag_store_errno(rc) : 1;
}

int ag_store_dedup_add(struct ag_store *st, MDB_txn *txn, const char *id, __u64 now_ms)
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
	return ag_store_errno(rc);
}

__u64 ag_store_dedup_count(struct ag_store *st, MDB_txn *txn)
{
	MDB_stat s;

	return mdb_stat(txn, st->dedup, &s) ? 0 : s.ms_entries;
}

int ag_store_dedup_prune(struct ag_store *st, MDB_txn *txn, __u64 now_ms, __u64 window_ms,
			 __u64 max_ids, size_t budget)
{
	__u64 count = ag_store_dedup_count(st, txn);
	__u64 cutoff = now_ms > window_ms ? now_ms - window_ms : 0;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;

	rc = mdb_cursor_open(txn, st->dedup_at, &cur);
	if (rc)
		return ag_store_errno(rc);
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
	return rc == MDB_NOTFOUND ? 0 : ag_store_errno(rc);
}

/* ---- rules and audit --------------------------------------------------- */

int ag_store_rule_put(struct ag_store *st, MDB_txn *txn, const struct ag_rule_rec_key *key,
		      const char *agent)
{
	MDB_val k = { sizeof(*key), (void *)key }, v = str_val(agent);

	return ag_store_errno(mdb_put(txn, st->rules, &k, &v, 0));
}

int ag_store_rule_del(struct ag_store *st, MDB_txn *txn, const struct ag_rule_rec_key *key)
{
	MDB_val k = { sizeof(*key), (void *)key };

	return ag_store_errno(mdb_del(txn, st->rules, &k, NULL));
}

/* The newest AG_STORE_AUDIT_MAX records stay (audit.log keeps them all):
 * each append removes up to two of the oldest beyond that. */
static int prune_audit(struct ag_store *st, MDB_txn *txn)
{
	MDB_cursor *cur;
	MDB_stat stat;
	MDB_val k, v;
	int rc, n;

	rc = mdb_stat(txn, st->audit, &stat);
	if (rc || stat.ms_entries <= AG_STORE_AUDIT_MAX)
		return rc;
	rc = mdb_cursor_open(txn, st->audit, &cur);
	for (n = 0; !rc && n < 2 && stat.ms_entries - (size_t)n > AG_STORE_AUDIT_MAX; n++) {
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
		if (!rc)
			rc = mdb_cursor_del(cur, 0);
	}
	if (!rc || rc == MDB_NOTFOUND)
		rc = 0;
	mdb_cursor_close(cur);
	return rc;
}

int ag_store_audit(struct ag_store *st, MDB_txn *txn, const char *line)
{
	MDB_cursor *cur;
	MDB_val k, v;
	__u64 seq = 1, be;
	int rc = mdb_cursor_open(txn, st->audit, &cur);

	if (rc)
		return ag_store_errno(rc);
	rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	if (!rc && k.mv_size == 8) {
		memcpy(&be, k.mv_data, 8);
		seq = be64toh(be) + 1;
	}
	mdb_cursor_close(cur);
	if (rc && rc != MDB_NOTFOUND)
		return ag_store_errno(rc);
	be = htobe64(seq);
	k = (MDB_val){ 8, &be };
	v = str_val(line);
	rc = mdb_put(txn, st->audit, &k, &v, MDB_APPEND);
	if (!rc)
		rc = prune_audit(st, txn);
	return ag_store_errno(rc);
}
