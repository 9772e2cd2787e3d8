/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What the state store's files share, private to them: store.c (the state
 * below, errors, closing, agents, defaults, explain history, the read-only
 * open), store_open.c (opening for the daemon, the guards, write
 * transactions), store_records.c and store_dedup.c. Include it after every
 * other header: the store's state is agd_store_g.
 */
#ifndef AGENTGATED_STORE_INT_H
#define AGENTGATED_STORE_INT_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/types.h>
#include <lmdb.h>
#include <linux/types.h>

/* Named databases LMDB makes room for (8 in use; some to spare). */
#define AG_STORE_MAX_DBS 24

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
struct agd_store_global {
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
};
/* The store's state (store.c), shared by its files. */
extern struct agd_store_global agd_store_g;

static inline MDB_val str_val(const char *s)
{
	return (MDB_val){ strlen(s), (void *)s };
}

/* A fixed-size record under k in dbi (0: a database the store lacks): 1 and
 * *rec, 0 when absent or of another size (not ours to judge), -errno. */
static inline int rec_get(MDB_txn *txn, MDB_dbi dbi, MDB_val k, void *rec, size_t size)
{
	MDB_val v;
	int rc = dbi ? mdb_get(txn, dbi, &k, &v) : MDB_NOTFOUND;

	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return agd_store_errno(rc);
	if (v.mv_size != size)
		return 0;
	memcpy(rec, v.mv_data, size);
	return 1;
}

static inline int rec_put(MDB_txn *txn, MDB_dbi dbi, MDB_val k, const void *rec, size_t size)
{
	MDB_val v = { size, (void *)rec };

	return agd_store_errno(mdb_put(txn, dbi, &k, &v, 0));
}

/* store.c */
/* Records the first damage seen (async-signal-safe: the SIGBUS handler
 * calls it). */
void agd_store_mark_damaged(enum damage kind, __u64 a, __u64 b);
/* agd_store_errno(), counting the error in agd_store_errors() or not. */
int agd_store_convert(int rc, bool count);
/* The guards off: no SIGBUS handler, no file (store_open.c arms them). */
void agd_store_disarm(void);
/* Whether dir/name exists (lstat). */
bool agd_store_exists(const char *dir, const char *name);

#endif
