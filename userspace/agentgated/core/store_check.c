// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The integrity check of the state store's data file, read with pread(2)
 * alone: the file is never mapped here, so a file cut short gives a short
 * read and a message, not the SIGBUS a read through LMDB's map would.
 *
 * It checks what LMDB 0.9 itself relies on (its on-disk format, mdb.c):
 *   - both meta pages: the meta flag, the magic, the format version, the
 *     page size; the newer one (the higher transaction id) is the snapshot
 *     LMDB opens;
 *   - every page of that snapshot, from the roots of the free-page tree, the
 *     main tree and each named database in it: the page number each page
 *     carries, its type (branch above, leaf at the tree's depth, overflow
 *     runs), the bounds of its nodes, and that it lies inside the file;
 *   - each tree's counts of branch, leaf and overflow pages, entries and
 *     depth against its database record;
 *   - LMDB's invariant that every page up to the last one the meta page
 *     names is reached exactly once: in use by one tree, or listed free.
 *     (Only listed free pages may lie past the end of the file: LMDB does
 *     not write a page freed in the transaction that allocated it.)
 * A damaged page that a walk through LMDB would meet as MDB_CORRUPTED,
 * MDB_PAGE_NOTFOUND, an assertion or a wild pointer is found here first.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"

_Static_assert(sizeof(size_t) == 8, "the layout below is LMDB's on 64-bit hosts");

/* LMDB 0.9's format (mdb.c), 64-bit: pgno_t and txnid_t are 8 bytes. */
#define LMDB_MAGIC 0xBEEFC0DEu
#define LMDB_VERSION 1
#define PAGEHDRSZ 16
#define NODESIZE 8
#define DBSIZE 48 /* MDB_db */
#define P_BRANCH 0x01
#define P_LEAF 0x02
#define P_OVERFLOW 0x04
#define P_META 0x08
#define P_LEAF2 0x20
#define P_SUBP 0x40
#define P_TYPES (P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2 | P_SUBP)
#define F_BIGDATA 0x01
#define F_SUBDATA 0x02
#define F_DUPDATA 0x04
#define P_INVALID (~(__u64)0)
#define MAX_DEPTH 32 /* LMDB's CURSOR_STACK */
#define META_OFF PAGEHDRSZ
/* Pages past the end of the file the meta page may name: listed free, never
 * written (see above); more than this is a file cut short. */
#define TAIL_SLACK 65536

struct db_rec {
	__u16 flags, depth;
	__u64 branch, leaf, overflow, entries, root;
};

struct meta {
	__u32 magic, version;
	struct db_rec free, main;
	__u64 psize, last_pg, txnid;
};

struct tally {
	__u64 branch, leaf, overflow, entries;
};

struct walk {
	int fd;
	__u64 fsize;  /* bytes in the file */
	__u64 psize;  /* page size */
	__u64 npages; /* last page + 1, from the meta page */
	__u8 *seen;   /* a bit per page: reached once already */
	__u64 reached;
	struct agd_err *err;
};

static __u16 get16(const __u8 *p)
{
	__u16 v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static __u32 get32(const __u8 *p)
{
	__u32 v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static __u64 get64(const __u8 *p)
{
	__u64 v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static void get_db(const __u8 *p, struct db_rec *d)
{
	d->flags = get16(p + 4);
	d->depth = get16(p + 6);
	d->branch = get64(p + 8);
	d->leaf = get64(p + 16);
	d->overflow = get64(p + 24);
	d->entries = get64(p + 32);
	d->root = get64(p + 40);
}

static int bad(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(struct walk *w, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	agd_verrf(w->err, -EUCLEAN, fmt, ap);
	va_end(ap);
	return -EUCLEAN;
}

/* Exactly n bytes at off, or a message: short (the file ends first) or the
 * read's error. */
static int read_at(struct walk *w, void *buf, size_t n, __u64 off, const char *what)
{
	ssize_t r = pread(w->fd, buf, n, (off_t)off);

	if (r < 0) {
		int e = errno;

		return agd_errf(w->err, -e, "cannot read %s: %s", what, strerror(e));
	}
	if ((size_t)r != n)
		return bad(w, "%s lies past the end of the file (%llu bytes): the file was cut "
			   "short", what, (unsigned long long)w->fsize);
	return 0;
}

/* ---- meta pages ------------------------------------------------------------ */

static int read_meta(struct walk *w, unsigned int i, __u64 off, struct meta *m)
{
	__u8 b[META_OFF + 136];
	char what[32];
	int err;

	snprintf(what, sizeof(what), "meta page %u", i);
	err = read_at(w, b, sizeof(b), off, what);
	if (err)
		return err;
	m->magic = get32(b + META_OFF);
	m->version = get32(b + META_OFF + 4);
	get_db(b + META_OFF + 24, &m->free);
	get_db(b + META_OFF + 24 + DBSIZE, &m->main);
	m->psize = get32(b + META_OFF + 24); /* the free DB's md_pad */
	m->last_pg = get64(b + META_OFF + 24 + 2 * DBSIZE);
	m->txnid = get64(b + META_OFF + 32 + 2 * DBSIZE);
	if (!(get16(b + 10) & P_META) || m->magic != LMDB_MAGIC)
		return bad(w, "meta page %u is not an LMDB meta page (the file is not an LMDB "
			   "store, or its start was overwritten)", i);
	if (m->version != LMDB_VERSION)
		return bad(w, "meta page %u has LMDB format version %u, not %u", i, m->version,
			   LMDB_VERSION);
	if (get64(b) != i)
		return bad(w, "meta page %u carries page number %llu", i,
			   (unsigned long long)get64(b));
	if (m->psize < 512 || m->psize > 65536 || (m->psize & (m->psize - 1)))
		return bad(w, "meta page %u gives an impossible page size (%llu)", i,
			   (unsigned long long)m->psize);
	if (m->last_pg < 1)
		return bad(w, "meta page %u names no pages", i);
	return 0;
}

/* Both meta pages, as LMDB reads them before it maps the file; *m: the
 * newer one, whose snapshot LMDB opens. */
static int read_metas(struct walk *w, struct meta *m)
{
	struct meta m1;
	int err = read_meta(w, 0, 0, m);

	if (!err)
		err = read_meta(w, 1, m->psize, &m1);
	if (err)
		return err;
	if (m1.psize != m->psize)
		return bad(w, "the two meta pages give different page sizes (%llu, %llu)",
			   (unsigned long long)m->psize, (unsigned long long)m1.psize);
	if (m1.txnid > m->txnid)
		*m = m1;
	w->psize = m->psize;
	w->npages = m->last_pg + 1;
	if (w->fsize < 2 * w->psize)
		return bad(w, "the file (%llu bytes) is shorter than its two meta pages: it was "
			   "cut short", (unsigned long long)w->fsize);
	if (w->npages > w->fsize / w->psize + TAIL_SLACK)
		return bad(w, "the file holds %llu pages of %llu bytes but its meta page names "
			   "%llu: it was cut short", (unsigned long long)(w->fsize / w->psize),
			   (unsigned long long)w->psize, (unsigned long long)w->npages);
	return 0;
}

/* ---- pages ----------------------------------------------------------------------- */

/* Pages [pgno, pgno + n) are reached: each once, each named by the meta
 * page, and (in_file) inside the file. */
static int reach(struct walk *w, const char *db, __u64 pgno, __u64 n, bool in_file)
{
	__u64 p;

	if (pgno < 2 || n > w->npages || pgno > w->npages - n)
		return bad(w, "%s refers to page %llu (+%llu), outside pages 2 to %llu "
			   "the meta page names", db, (unsigned long long)pgno,
			   (unsigned long long)n, (unsigned long long)(w->npages - 1));
	if (in_file && (pgno + n) * w->psize > w->fsize)
		return bad(w, "page %llu of %s lies past the end of the file (%llu "
			   "bytes, pages of %llu): the file was cut short",
			   (unsigned long long)(pgno + n - 1), db, (unsigned long long)w->fsize,
			   (unsigned long long)w->psize);
	for (p = pgno; p < pgno + n; p++) {
		if (w->seen[p / 8] & (1u << (p % 8)))
			return bad(w, "page %llu is reached twice (%s)",
				   (unsigned long long)p, db);
		w->seen[p / 8] |= 1u << (p % 8);
	}
	w->reached += n;
	return 0;
}

static int read_page(struct walk *w, const char *db, __u64 pgno, __u8 *buf)
{
	char what[160];

	snprintf(what, sizeof(what), "page %llu of %s", (unsigned long long)pgno, db);
	return read_at(w, buf, w->psize, pgno * w->psize, what);
}

/* An overflow run of a value of dsize bytes starting at pgno; *pages: its
 * length. */
static int overflow_run(struct walk *w, const char *db, __u64 pgno, __u64 dsize, __u64 *pages)
{
	__u8 h[PAGEHDRSZ];
	char what[160];
	int err;

	if (pgno < 2 || pgno >= w->npages)
		return reach(w, db, pgno, 1, true);
	snprintf(what, sizeof(what), "overflow page %llu of %s",
		 (unsigned long long)pgno, db);
	err = read_at(w, h, sizeof(h), pgno * w->psize, what);
	if (err)
		return err;
	*pages = get32(h + 12);
	if (get64(h) != pgno || (get16(h + 10) & P_TYPES) != P_OVERFLOW || !*pages ||
	    *pages * w->psize - PAGEHDRSZ < dsize)
		return bad(w, "%s is damaged (not the overflow page of a %llu-byte value)", what,
			   (unsigned long long)dsize);
	return reach(w, db, pgno, *pages, true);
}

/* The value of a free-page record: a list of page numbers, count first. */
static int free_list(struct walk *w, const __u8 *data, __u64 dsize)
{
	__u64 n = dsize >= 8 ? get64(data) : 0, i;
	int err;

	if (dsize < 8 || n > w->npages || (n + 1) * 8 > dsize)
		return bad(w, "a record of the free-page list is damaged (%llu bytes, %llu pages)",
			   (unsigned long long)dsize, (unsigned long long)n);
	for (i = 1; i <= n; i++) {
		err = reach(w, "the free-page list", get64(data + i * 8), 1, false);
		if (err)
			return err;
	}
	return 0;
}

/* A value on its overflow pages, read whole (free-page lists only). */
static int read_value(struct walk *w, __u64 pgno, __u64 dsize, __u8 **out)
{
	*out = malloc(dsize ? dsize : 1);
	if (!*out)
		return -ENOMEM;
	return read_at(w, *out, dsize, pgno * w->psize + PAGEHDRSZ, "a free-page list");
}

enum tree_kind { TREE_FREE, TREE_MAIN, TREE_NAMED };

struct tree {
	enum tree_kind kind;
	const char *name;
	__u16 depth;
	struct tally t;
};

static int walk_tree(struct walk *w, enum tree_kind kind, const char *name,
		     const struct db_rec *d);

/* A named database's record in the main tree: its name is the key. */
static int named_db(struct walk *w, const __u8 *key, size_t ksize, const __u8 *data)
{
	char name[96] = "database '";
	struct db_rec d;
	size_t i, n = strlen(name);

	for (i = 0; i < ksize && n + 2 < sizeof(name); i++)
		name[n++] = key[i] >= 0x20 && key[i] < 0x7f ? (char)key[i] : '?';
	name[n++] = '\'';
	name[n] = 0;
	get_db(data, &d);
	return walk_tree(w, TREE_NAMED, name, &d);
}

static int leaf_node(struct walk *w, struct tree *tr, const __u8 *pg, const __u8 *node,
		     __u64 pgno)
{
	__u16 flags = get16(node + 4), ksize = get16(node + 6);
	__u64 dsize = get16(node) | (__u64)get16(node + 2) << 16;
	const __u8 *data = node + NODESIZE + ksize;
	__u8 *value = NULL;
	__u64 pages = 0;
	int err = 0;

	if (flags & F_DUPDATA || (flags & F_SUBDATA && tr->kind != TREE_MAIN) ||
	    (flags & ~(F_BIGDATA | F_SUBDATA | F_DUPDATA)))
		return bad(w, "page %llu of %s holds an entry of a kind agentgated never "
			   "writes (flags 0x%x)", (unsigned long long)pgno, tr->name, flags);
	if (flags & F_BIGDATA) {
		if (data + 8 > pg + w->psize)
			return bad(w, "page %llu of %s: an entry runs past the page",
				   (unsigned long long)pgno, tr->name);
		err = overflow_run(w, tr->name, get64(data), dsize, &pages);
		tr->t.overflow += pages;
		if (!err && tr->kind == TREE_FREE) {
			err = read_value(w, get64(data), dsize, &value);
			if (!err)
				err = free_list(w, value, dsize);
			free(value);
		}
	} else if (data + dsize > pg + w->psize) {
		return bad(w, "page %llu of %s: an entry runs past the page",
			   (unsigned long long)pgno, tr->name);
	} else if (flags & F_SUBDATA) {
		if (dsize == DBSIZE)
			err = named_db(w, node + NODESIZE, ksize, data);
		else
			err = bad(w, "page %llu of the main database: a damaged record of a named "
				  "database", (unsigned long long)pgno);
	} else if (tr->kind == TREE_FREE) {
		err = free_list(w, data, dsize);
	}
	tr->t.entries++;
	return err;
}

static int walk_page(struct walk *w, struct tree *tr, __u64 pgno, unsigned int level)
{
	__u8 *pg = NULL;
	__u16 flags, lower, upper, n, i;
	int err = reach(w, tr->name, pgno, 1, true);

	if (err)
		return err;
	pg = malloc(w->psize);
	if (!pg)
		return -ENOMEM;
	err = read_page(w, tr->name, pgno, pg);
	if (err)
		goto out;
	flags = get16(pg + 10) & P_TYPES;
	lower = get16(pg + 12);
	upper = get16(pg + 14);
	if (get64(pg) != pgno) {
		err = bad(w, "page %llu of %s carries page number %llu: it was "
			  "overwritten", (unsigned long long)pgno, tr->name,
			  (unsigned long long)get64(pg));
		goto out;
	}
	if (flags != (level < tr->depth ? P_BRANCH : P_LEAF) || lower < PAGEHDRSZ ||
	    lower > upper || upper > w->psize || (lower - PAGEHDRSZ) % 2 ||
	    (flags == P_BRANCH && lower == PAGEHDRSZ)) {
		err = bad(w, "page %llu of %s is damaged (a %s page at level %u of %u "
			  "expected; flags 0x%x, bounds %u-%u)", (unsigned long long)pgno,
			  tr->name, level < tr->depth ? "branch" : "leaf", level, tr->depth,
			  get16(pg + 10), lower, upper);
		goto out;
	}
	n = (lower - PAGEHDRSZ) / 2;
	if (flags == P_BRANCH)
		tr->t.branch++;
	else
		tr->t.leaf++;
	for (i = 0; i < n && !err; i++) {
		__u16 off = get16(pg + PAGEHDRSZ + 2 * i);
		const __u8 *node = pg + off;

		if (off < upper || (size_t)off + NODESIZE > w->psize ||
		    (size_t)off + NODESIZE + get16(node + 6) > w->psize) {
			err = bad(w, "page %llu of %s: entry %u lies outside the page",
				  (unsigned long long)pgno, tr->name, i);
			break;
		}
		if (flags == P_BRANCH)
			err = walk_page(w, tr, get16(node) | (__u64)get16(node + 2) << 16 |
						       (__u64)get16(node + 4) << 32,
					level + 1);
		else
			err = leaf_node(w, tr, pg, node, pgno);
	}
out:
	free(pg);
	return err;
}

static int walk_tree(struct walk *w, enum tree_kind kind, const char *name,
		     const struct db_rec *d)
{
	struct tree tr = { kind, name, d->depth, { 0 } };
	int err;

	if (d->root == P_INVALID) {
		if (d->depth || d->entries || d->branch || d->leaf || d->overflow)
			return bad(w, "%s is empty yet counts %llu entries", name,
				   (unsigned long long)d->entries);
		return 0;
	}
	if (!d->depth || d->depth > MAX_DEPTH)
		return bad(w, "%s has an impossible depth (%u)", name, d->depth);
	err = walk_page(w, &tr, d->root, 1);
	if (err)
		return err;
	if (tr.t.branch != d->branch || tr.t.leaf != d->leaf || tr.t.overflow != d->overflow ||
	    tr.t.entries != d->entries)
		return bad(w, "%s does not match its record: %llu branch, %llu leaf, "
			   "%llu overflow pages and %llu entries found; %llu, %llu, %llu and %llu "
			   "recorded", name, (unsigned long long)tr.t.branch,
			   (unsigned long long)tr.t.leaf, (unsigned long long)tr.t.overflow,
			   (unsigned long long)tr.t.entries, (unsigned long long)d->branch,
			   (unsigned long long)d->leaf, (unsigned long long)d->overflow,
			   (unsigned long long)d->entries);
	return 0;
}

int agd_store_check(int fd, bool full, struct agd_err *err)
{
	struct walk w = { .fd = fd, .err = err };
	struct meta m;
	struct stat st;
	int rc;

	agd_err_clear(err);
	if (fstat(fd, &st)) {
		rc = -errno;
		return agd_errf(err, rc, "cannot read it: %s", strerror(-rc));
	}
	w.fsize = (__u64)st.st_size;
	rc = read_metas(&w, &m);
	if (rc || !full)
		return rc;
	w.seen = calloc(w.npages / 8 + 1, 1);
	if (!w.seen) {
		return agd_errf(err, -ENOMEM, "out of memory");
	}
	w.seen[0] = 3; /* the two meta pages */
	w.reached = 2;
	rc = walk_tree(&w, TREE_FREE, "the free-page list", &m.free);
	if (!rc)
		rc = walk_tree(&w, TREE_MAIN, "the main database", &m.main);
	if (!rc && w.reached != w.npages)
		rc = bad(&w, "%llu of its %llu pages are neither in use nor listed free: the "
			 "free-page list is damaged", (unsigned long long)(w.npages - w.reached),
			 (unsigned long long)w.npages);
	free(w.seen);
	return rc;
}
