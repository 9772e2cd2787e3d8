// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Opening the pin root: create missing maps from the definitions in the
 * embedded BPF object (the single source of every map's type and sizes), or
 * reuse pinned ones after checking their layout. A pinned map whose layout
 * differs is refused with its name; it is never overwritten.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "agentgate.skel.h"
#include "internal.h"

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif

#define AG_MAP_DESC_ENTRY(id, name, sizing, desc) [AG_M_##id] = { #name, AG_SIZE_##sizing },
const struct ag_map_desc ag_map_descs[AG_M__COUNT] = { AG_MAP_LIST(AG_MAP_DESC_ENTRY) };
#undef AG_MAP_DESC_ENTRY

/*
 * AG_MAP_LIST against the BPF program, at build time, through its skeleton
 * (generated from the same object the library embeds):
 * - every row is a map of the program: a row without one fails to compile
 *   with "has no member named '<name>'";
 * - the program has no map without a row: the skeleton has as many maps as
 *   the list has rows (global variables in the program would add internal
 *   maps, .rodata or .bss, to the skeleton: count them here then);
 * - no two rows name the same map (a duplicate member of the struct below);
 * - every AG_MAP_<id> string is its row's name (gcc and clang fold
 *   __builtin_strcmp of two literals to a constant).
 */
#define AG_MAP_CHECK_ENTRY(id, name, sizing, desc)                                          \
	_Static_assert(sizeof(((struct agentgate_bpf *)0)->maps.name) ==                     \
			       sizeof(struct bpf_map *),                                     \
		       "AG_MAP_LIST row " #name " is a map of bpf/agentgate.bpf.c");         \
	_Static_assert(__builtin_strcmp(AG_MAP_##id, #name) == 0,                            \
		       "AG_MAP_" #id " is \"" #name "\", as in its AG_MAP_LIST row");
AG_MAP_LIST(AG_MAP_CHECK_ENTRY)
#undef AG_MAP_CHECK_ENTRY
_Static_assert(sizeof(((struct agentgate_bpf *)0)->maps) == AG_M__COUNT * sizeof(struct bpf_map *),
	       "bpf/agentgate.bpf.c defines as many maps as AG_MAP_LIST "
	       "(include/agentgate/abi.h) has rows");
#define AG_MAP_NAME_MEMBER(id, name, sizing, desc) char name;
struct ag_map_names_unique {
	AG_MAP_LIST(AG_MAP_NAME_MEMBER)
};
#undef AG_MAP_NAME_MEMBER

struct map_def {
	enum bpf_map_type type;
	__u32 key_size, value_size, max_entries, flags;
};

static int map_path(const struct ag_ctx *ctx, enum ag_map_id id, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s", ctx->pin_root, ag_map_descs[id].name);

	if (n < 0 || (size_t)n >= len)
		return ag_err(ENAMETOOLONG, "pin path too long: %s", ctx->pin_root);
	return 0;
}

/* Definitions from the embedded object, with max_entries for this ctx. */
static int load_defs(struct ag_ctx *ctx, struct map_def defs[AG_M__COUNT])
{
	struct agentgate_bpf *skel = agentgate_bpf__open();
	int i, err = 0;

	if (!skel)
		return ag_err(errno, "cannot open the embedded BPF object: %s", strerror(errno));
	for (i = 0; i < AG_M__COUNT; i++) {
		const struct bpf_map *m =
			bpf_object__find_map_by_name(skel->obj, ag_map_descs[i].name);

		if (!m) {
			err = ag_err(ENOENT, "BPF object has no map %s (build mismatch)",
				     ag_map_descs[i].name);
			break;
		}
		defs[i].type = bpf_map__type(m);
		defs[i].key_size = bpf_map__key_size(m);
		defs[i].value_size = bpf_map__value_size(m);
		defs[i].flags = bpf_map__map_flags(m);
		defs[i].max_entries =
			ag_map_descs[i].sizing == AG_SIZE_AGENTS ? ctx->max_agents :
			ag_map_descs[i].sizing == AG_SIZE_RULES	 ? ctx->max_rules :
			ag_map_descs[i].sizing == AG_SIZE_INDEX	 ? AG_INDEX_BLKS(ctx->max_agents) :
								   bpf_map__max_entries(m);
	}
	agentgate_bpf__destroy(skel);
	return err;
}

static bool fd_is_map(int fd)
{
	char link[64], target[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return strcmp(target, "anon_inode:bpf-map") == 0;
}

static int map_info(int fd, struct bpf_map_info *info)
{
	__u32 len = sizeof(*info);

	memset(info, 0, sizeof(*info));
	return bpf_obj_get_info_by_fd(fd, info, &len) ? -errno : 0;
}

static int check_layout(enum ag_map_id id, const char *path, int fd, const struct map_def *want)
{
	struct bpf_map_info info;
	const char *what = NULL;
	__u32 got = 0, exp = 0;

	if (!fd_is_map(fd))
		return ag_err(EINVAL, "%s is pinned but is not a BPF map; refusing to use it", path);
	if (map_info(fd, &info))
		return ag_err(errno, "cannot query %s: %s", path, strerror(errno));
	if (info.type != want->type)
		what = "type", got = info.type, exp = want->type;
	else if (info.key_size != want->key_size)
		what = "key size", got = info.key_size, exp = want->key_size;
	else if (info.value_size != want->value_size)
		what = "value size", got = info.value_size, exp = want->value_size;
	/* Host maps pinned by a version that preallocated them: used as
	 * they are (the program does not care), paying for every rule up
	 * front until the pin root is made again. */
	else if (info.map_flags != want->flags &&
		 !((id == AG_M_HOSTS_V4 || id == AG_M_HOSTS_V6) &&
		   (info.map_flags ^ want->flags) == BPF_F_NO_PREALLOC))
		what = "flags", got = info.map_flags, exp = want->flags;
	/* ag_stats pinned by a version that counted fewer reasons: read as
	 * it is, grown when a program is loaded on it (ag_grow_stats). */
	else if (info.max_entries != want->max_entries &&
		 !(id == AG_M_STATS && info.max_entries < want->max_entries))
		what = "max entries", got = info.max_entries, exp = want->max_entries;
	if (what)
		return ag_err(EUCLEAN,
			      "pinned map %s has %s %u, this agentgate expects %u; refusing to "
			      "reuse it (left untouched; remove the pin root or use another "
			      "--pin-path)",
			      path, what, got, exp);
	return 0;
}

static int create_map(const char *path, enum ag_map_id id, const struct map_def *d)
{
	LIBBPF_OPTS(bpf_map_create_opts, o, .map_flags = d->flags);
	int fd, err;

	fd = bpf_map_create(d->type, ag_map_descs[id].name, d->key_size, d->value_size,
			    d->max_entries, &o);
	if (fd < 0)
		return ag_err(errno, "cannot create map %s (%u entries): %s", ag_map_descs[id].name,
			      d->max_entries, strerror(errno));
	if (bpf_obj_pin(fd, path)) {
		err = errno;
		close(fd);
		return ag_err(err, "cannot pin %s: %s", path, strerror(err));
	}
	return fd;
}

/* Sizes of an existing instance come from its pinned maps. */
static void adopt_pinned_sizes(struct ag_ctx *ctx, const struct ag_open_opts *opts)
{
	LIBBPF_OPTS(bpf_obj_get_opts, ro, .file_flags = BPF_F_RDONLY);
	char path[PATH_MAX];
	struct bpf_map_info info;
	int fd;

	ctx->max_agents = opts->max_agents ? opts->max_agents : AG_MAX_AGENTS_DEFAULT;
	ctx->max_rules = opts->max_rules ? opts->max_rules : AG_MAX_RULES_DEFAULT;
	if (!map_path(ctx, AG_M_BUCKETS, path, sizeof(path)) &&
	    (fd = bpf_obj_get_opts(path, &ro)) >= 0) {
		if (fd_is_map(fd) && !map_info(fd, &info))
			ctx->max_agents = info.max_entries;
		close(fd);
	}
	if (!map_path(ctx, AG_M_RULES_V4, path, sizeof(path)) &&
	    (fd = bpf_obj_get_opts(path, &ro)) >= 0) {
		if (fd_is_map(fd) && !map_info(fd, &info))
			ctx->max_rules = info.max_entries;
		close(fd);
	}
}

/* fd pinned at path in place of what is there: pinned beside it, then
 * renamed over it (readers opening path find the old map or the new). */
static int pin_over(int fd, const char *path, const char *what)
{
	char tmp[PATH_MAX + 16];

	snprintf(tmp, sizeof(tmp), "%s_new", path);
	unlink(tmp);
	if (bpf_obj_pin(fd, tmp) || rename(tmp, path)) {
		int err = errno;

		unlink(tmp);
		return ag_err(err, "cannot pin the %s %s: %s", what, path, strerror(err));
	}
	return 0;
}

/*
 * ag_names and ag_index as versions before the name index pinned them:
 * hashes (slot -> record with 32-bit unit and flags; name -> slot). Opening
 * to create (agentgated, attach) upgrades them in place, under the lock:
 * the records are copied into the array, LIVE where the old index named
 * them (an unindexed record was a creation or deletion a crash cut short:
 * copied as it was, and the journal bit set, so that the next locker's
 * repair removes it), the new array pinned over the
 * old hash; then the old index is replaced by a new one built from the
 * records (a crash between the two steps leaves the second to the next
 * open). The datapath never reads either map.
 */
struct ag_agent_info_v1 {
	char name[AG_NAME_MAX];
	__u64 rate_mtps, burst, created_ns;
	__u32 unit, flags, slot, parent;
};
_Static_assert(sizeof(struct ag_agent_info_v1) == 104, "older ag_agent_info layout");

static bool is_old_hash(int fd)
{
	struct bpf_map_info info;

	return fd_is_map(fd) && !map_info(fd, &info) && info.type == BPF_MAP_TYPE_HASH;
}

static int old_index_fd(struct ag_ctx *ctx)
{
	char path[PATH_MAX];
	int fd;

	if (map_path(ctx, AG_M_INDEX, path, sizeof(path)))
		return -1;
	fd = bpf_obj_get(path);
	if (fd >= 0 && !is_old_hash(fd)) {
		close(fd);
		fd = -1;
	}
	return fd;
}

static void upgrade_record(const struct ag_agent_info_v1 *old, __u32 slot, int old_index,
			   struct ag_agent_info *rec)
{
	struct ag_name_key key = {};
	__u32 at;

	memset(rec, 0, sizeof(*rec));
	memcpy(rec->name, old->name, AG_NAME_MAX);
	rec->rate_mtps = old->rate_mtps;
	rec->burst = old->burst;
	rec->created_ns = old->created_ns;
	rec->unit = (__u16)old->unit;
	rec->flags = (__u16)(old->flags & (AG_AGENT_PINNED | AG_AGENT_PARENT));
	rec->slot = old->slot;
	rec->parent = old->parent;
	memcpy(key.name, old->name, AG_NAME_MAX);
	if (old_index >= 0 && !bpf_map_lookup_elem(old_index, &key, &at) && at == slot &&
	    old->slot == slot)
		rec->flags |= AG_AGENT_LIVE;
}

static int upgrade_names(struct ag_ctx *ctx, int old, const char *path, const struct map_def *d)
{
	struct ag_agent_info_v1 val;
	struct ag_agent_info *recs;
	size_t len = (size_t)ctx->max_agents * sizeof(*recs);
	__u32 key, next;
	int fd, idx = old_index_fd(ctx), err = 0;
	bool first = true;

	fd = bpf_map_create(d->type, AG_MAP_NAMES, d->key_size, d->value_size, d->max_entries,
			    &(struct bpf_map_create_opts){ .sz = sizeof(struct bpf_map_create_opts),
							   .map_flags = d->flags });
	if (fd < 0) {
		err = ag_err(errno, "cannot create %s to upgrade it: %s", AG_MAP_NAMES,
			     strerror(errno));
		goto out;
	}
	recs = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (recs == MAP_FAILED) {
		err = ag_err(errno, "cannot map the new %s: %s", AG_MAP_NAMES, strerror(errno));
		goto out;
	}
	while (!bpf_map_get_next_key(old, first ? NULL : &key, &next)) {
		first = false;
		key = next;
		if (bpf_map_lookup_elem(old, &key, &val) || key >= ctx->max_agents)
			continue;
		upgrade_record(&val, key, idx, &recs[key]);
		if (!(recs[key].flags & AG_AGENT_LIVE))
			ctx->names_torn = true;
	}
	munmap(recs, len);
	err = pin_over(fd, path, "upgraded");
	if (err)
		goto out;
	ag_warn("%s upgraded in place to the array of records (the name index follows)", path);
out:
	if (idx >= 0)
		close(idx);
	close(old);
	if (err && fd >= 0)
		close(fd);
	return err ? err : fd;
}

/* ag_names or ag_index pinned as hashes by an older version: upgraded
 * when creating, else refused with what to do. Returns the fd to use, a
 * new map's (*made), or a negative error. */
static int upgrade_old(struct ag_ctx *ctx, enum ag_map_id id, int fd, const char *path,
		       const struct map_def *d, bool create, bool *made)
{
	if (!create) {
		close(fd);
		return ag_err(EUCLEAN,
			      "pinned map %s has the layout of an older agentgate (a hash); "
			      "starting agentgated or 'agentgate attach' upgrades it in place",
			      path);
	}
	if (id == AG_M_NAMES)
		return upgrade_names(ctx, fd, path, d);
	close(fd);
	if (unlink(path))
		return ag_err(errno, "cannot remove the older %s: %s", path, strerror(errno));
	*made = true;
	return create_map(path, id, d);
}

static int open_maps(struct ag_ctx *ctx, bool create)
{
	LIBBPF_OPTS(bpf_obj_get_opts, ro, .file_flags = BPF_F_RDONLY);
	struct map_def defs[AG_M__COUNT];
	bool created[AG_M__COUNT] = {};
	char path[PATH_MAX];
	int i, err;

	err = load_defs(ctx, defs);
	if (err)
		return err;
	for (i = 0; i < AG_M__COUNT; i++) {
		err = map_path(ctx, i, path, sizeof(path));
		if (err)
			return err;
		ctx->fds[i] = bpf_obj_get_opts(path, ctx->read_only ? &ro : NULL);
		if (ctx->fds[i] < 0 && errno == ENOENT && create) {
			ctx->fds[i] = create_map(path, i, &defs[i]);
			if (ctx->fds[i] < 0)
				return ctx->fds[i];
			created[i] = true;
			continue;
		}
		/* Maps that pins of an older version lack: ag_frags and
		 * ag_next only the datapath uses; without ag_budgets no bucket
		 * has a parent or a quota; without ag_tally the counts are the
		 * older layout's per-CPU counters (still pinned, and read). They
		 * serve every other purpose, and whoever loads a program on them
		 * (attach, agentgated) creates them. */
		if (ctx->fds[i] < 0 && errno == ENOENT &&
		    (i == AG_M_FRAGS || i == AG_M_NEXT || i == AG_M_BUDGETS || i == AG_M_TALLY ||
		     i == AG_M_TALLY_CACHE))
			continue;
		if (ctx->fds[i] >= 0 && (i == AG_M_NAMES || i == AG_M_INDEX) &&
		    is_old_hash(ctx->fds[i])) {
			ctx->fds[i] = upgrade_old(ctx, i, ctx->fds[i], path, &defs[i], create,
						  &created[i]);
			if (ctx->fds[i] < 0)
				return ctx->fds[i];
		}
		if (ctx->fds[i] < 0) {
			err = errno;
			if (err == ENOENT)
				return ag_err(ENOENT,
					      "no agentgate maps pinned at %s (missing %s); start "
					      "agentgated or run 'agentgate attach DEV' first",
					      ctx->pin_root, ag_map_descs[i].name);
			return ag_err(err, "cannot open %s: %s", path, strerror(err));
		}
		err = check_layout(i, path, ctx->fds[i], &defs[i]);
		if (err)
			return err;
	}
	/* A new name index: set up once mapped (ag_open, still locked), and
	 * built from the records if there are any. */
	ctx->index_made = created[AG_M_INDEX];
	ctx->index_fill = created[AG_M_INDEX] && !created[AG_M_NAMES];
	if (ctx->names_torn) { /* upgraded records that were never committed */
		struct ag_config cfg;

		err = ag_config_read(ctx, &cfg);
		if (!err) {
			cfg.dirty |= AG_DIRTY_AGENTS;
			err = ag_config_write(ctx, &cfg);
		}
		if (err)
			return err;
	}
	/* Pins made before the per-length index existed: its maps start
	 * empty beside a trie that may hold rules. Their zero plans keep the
	 * datapath on the trie; the journal has the next locked mutation
	 * build the index (ag_repair_rules). */
	if (!created[AG_M_RULES_V4] &&
	    (created[AG_M_PREFIXES_V4] || created[AG_M_PREFIXES_V6] || created[AG_M_PROBES])) {
		struct ag_config cfg;

		/* Creation holds the lock; ag_dirty_set() would repair now,
		 * before the buckets are mapped. */
		err = ag_config_read(ctx, &cfg);
		if (!err) {
			cfg.dirty |= AG_DIRTY_RULES;
			err = ag_config_write(ctx, &cfg);
		}
		return err;
	}
	return 0;
}

/* Per-CPU values of keys [0, n) copied from one array to another. */
static int copy_percpu(struct ag_ctx *ctx, int from, int to, __u32 n, size_t value_size)
{
	void *vals = calloc(ctx->ncpus, value_size);
	int err = 0;
	__u32 k;

	if (!vals)
		return ag_err(ENOMEM, "out of memory");
	for (k = 0; k < n && !err; k++)
		if (bpf_map_lookup_elem(from, &k, vals) || bpf_map_update_elem(to, &k, vals, BPF_ANY))
			err = ag_err(errno, "cannot copy %s entry %u: %s", AG_MAP_STATS, k,
				     strerror(errno));
	free(vals);
	return err;
}

/*
 * A version that counted fewer reasons pinned a smaller ag_stats. Just
 * before a program is loaded on the maps (which then replaces the running
 * one), a full-size copy is pinned in its place, counts kept: reasons keep
 * their indexes (abi.h). Counts the old program makes between the copy and
 * its replacement are lost. Under the lock, so that two loaders grow it
 * once; a process that finds it grown already takes the grown one.
 */
int ag_grow_stats(struct ag_ctx *ctx, __u32 entries)
{
	LIBBPF_OPTS(bpf_map_create_opts, o);
	char path[PATH_MAX];
	struct bpf_map_info info;
	int fd = -1, grown = -1, err;

	if (map_info(ctx->fds[AG_M_STATS], &info))
		return ag_err(errno, "cannot query %s: %s", AG_MAP_STATS, strerror(errno));
	if (info.max_entries >= entries)
		return 0;
	err = ag_lock(ctx);
	if (err)
		return err;
	err = map_path(ctx, AG_M_STATS, path, sizeof(path));
	if (err)
		goto out;
	fd = bpf_obj_get(path);
	if (fd < 0 || map_info(fd, &info)) {
		err = ag_err(errno, "cannot open %s: %s", path, strerror(errno));
		goto out;
	}
	if (info.max_entries >= entries) { /* grown by another process */
		grown = fd;
		fd = -1;
		goto swap;
	}
	o.map_flags = info.map_flags;
	grown = bpf_map_create(info.type, AG_MAP_STATS, info.key_size, info.value_size, entries,
			       &o);
	if (grown < 0) {
		err = ag_err(errno, "cannot create a larger %s: %s", AG_MAP_STATS, strerror(errno));
		goto out;
	}
	err = copy_percpu(ctx, fd, grown, info.max_entries, info.value_size);
	if (err)
		goto out;
	err = pin_over(grown, path, "larger");
	if (err)
		goto out;
swap:
	close(ctx->fds[AG_M_STATS]);
	ctx->fds[AG_M_STATS] = grown;
	grown = -1;
out:
	if (fd >= 0)
		close(fd);
	if (grown >= 0)
		close(grown);
	ag_unlock(ctx);
	return err;
}

int ag_mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	char *p;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) && errno != EEXIST)
		return -errno;
	return 0;
}

static int open_root(struct ag_ctx *ctx, bool create)
{
	struct statfs sfs;
	int err;

	if (create) {
		err = ag_mkdir_p(ctx->pin_root, 0700);
		if (err)
			return ag_err(-err, "cannot create pin root %s: %s", ctx->pin_root,
				      strerror(-err));
	}
	ctx->dir_fd = open(ctx->pin_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ctx->dir_fd < 0) {
		err = errno;
		if (err == ENOENT)
			return ag_err(ENOENT,
				      "no agentgate maps pinned at %s; start agentgated or run "
				      "'agentgate attach DEV' first",
				      ctx->pin_root);
		return ag_err(err, "cannot open pin root %s: %s", ctx->pin_root, strerror(err));
	}
	if (fstatfs(ctx->dir_fd, &sfs) == 0 && sfs.f_type != BPF_FS_MAGIC)
		return ag_err(ENOTSUP,
			      "%s is not on a BPF filesystem (mount one: mount -t bpf bpf %s)",
			      ctx->pin_root, ctx->pin_root);
	return 0;
}

/*
 * The kernel maps a BPF map only through a writable fd. A read-only open
 * therefore maps through a second, read-write fd with PROT_READ (the mapping
 * can never become writable) and closes it; a caller without write access to
 * the pin gets no mapping, and bucket reads fall back to map lookups.
 */
static int map_entries(struct ag_ctx *ctx, enum ag_map_id id, size_t bytes, void **out,
		       size_t *len)
{
	long page = sysconf(_SC_PAGESIZE);
	int fd = ctx->fds[id];
	char path[PATH_MAX];
	void *p;

	*len = (bytes + page - 1) & ~((size_t)page - 1);
	if (ctx->read_only) {
		if (map_path(ctx, id, path, sizeof(path)))
			return -ENAMETOOLONG;
		fd = bpf_obj_get(path);
		if (fd < 0)
			return 0; /* no write access: lookups instead */
	}
	p = mmap(NULL, *len, PROT_READ | (ctx->read_only ? 0 : PROT_WRITE), MAP_SHARED, fd, 0);
	if (ctx->read_only)
		close(fd);
	if (p == MAP_FAILED)
		return ag_err(errno, "cannot mmap %s/%s: %s", ctx->pin_root, ag_map_descs[id].name,
			      strerror(errno));
	*out = p;
	return 0;
}

static int map_array(struct ag_ctx *ctx, enum ag_map_id id, size_t value_size, void **out,
		     size_t *len)
{
	return map_entries(ctx, id, (size_t)ctx->max_agents * value_size, out, len);
}

static int map_buckets(struct ag_ctx *ctx)
{
	void *p = NULL;
	int err = map_array(ctx, AG_M_BUCKETS, sizeof(struct ag_bucket), &p, &ctx->mmap_len);

	ctx->buckets = p;
	return err;
}

/* The agents' records and the name index (names.c); a new index gets its
 * key here, under the creator's lock, and its entries if records exist. */
static int map_names(struct ag_ctx *ctx)
{
	void *p = NULL, *q = NULL;
	int err = map_array(ctx, AG_M_NAMES, sizeof(struct ag_agent_info), &p, &ctx->names_len);

	ctx->names = p;
	if (!err)
		err = map_entries(ctx, AG_M_INDEX,
				  (size_t)AG_INDEX_BLKS(ctx->max_agents) * sizeof(struct ag_index_blk),
				  &q, &ctx->index_len);
	ctx->index = q;
	if (!err && ctx->index_made)
		err = ag_index_init(ctx);
	if (!err && ctx->index_fill)
		err = ag_index_rebuild(ctx);
	return err;
}

/* Each bucket's parent link and quota, mapped like the buckets (read on
 * every consume); absent in pins of an older version, whose buckets have
 * neither. */
static int map_budgets(struct ag_ctx *ctx)
{
	void *p = NULL;
	int err;

	if (ctx->fds[AG_M_BUDGETS] < 0)
		return 0;
	err = map_array(ctx, AG_M_BUDGETS, sizeof(struct ag_budget), &p, &ctx->budgets_len);
	ctx->budgets = p;
	return err;
}

/* The counters (abi.h, "ag_tally"), mapped for reading without system
 * calls; and the per-CPU counters of an older layout, still pinned beside
 * them, whose counts are added (nothing writes them any more). */
static int map_tally(struct ag_ctx *ctx)
{
	char path[PATH_MAX];
	void *p = NULL;
	int err = 0;

	if (snprintf(path, sizeof(path), "%s/%s", ctx->pin_root, AG_MAP_LEGACY_COUNTERS) <
	    (int)sizeof(path))
		ctx->legacy_counters_fd = bpf_obj_get(path);
	if (snprintf(path, sizeof(path), "%s/%s", ctx->pin_root, AG_MAP_LEGACY_REFUSALS) <
	    (int)sizeof(path))
		ctx->legacy_refusals_fd = bpf_obj_get(path);
	if (ctx->fds[AG_M_TALLY] < 0)
		return 0;
	err = map_array(ctx, AG_M_TALLY, sizeof(struct ag_tally), &p, &ctx->tally_len);
	ctx->tally = p;
	return err;
}

/* The probe plans are written whole through a mapping (C11 atomics), like
 * tat words; only writers map them. */
static int map_probes(struct ag_ctx *ctx)
{
	long page = sysconf(_SC_PAGESIZE);
	void *p;

	if (ctx->read_only)
		return 0;
	ctx->probes_len = (sizeof(struct ag_probes) + page - 1) & ~((size_t)page - 1);
	p = mmap(NULL, ctx->probes_len, PROT_READ | PROT_WRITE, MAP_SHARED, ctx->fds[AG_M_PROBES],
		 0);
	if (p == MAP_FAILED)
		return ag_err(errno, "cannot mmap %s/%s: %s", ctx->pin_root, AG_MAP_PROBES,
			      strerror(errno));
	ctx->probes = p;
	return 0;
}

int ag_open(const struct ag_open_opts *opts, struct ag_ctx **out)
{
	const char *root = opts && opts->pin_root ? opts->pin_root : AG_PIN_ROOT_DEFAULT;
	struct ag_open_opts defaults = {};
	struct ag_ctx *ctx;
	size_t len;
	int i, err;

	if (!opts)
		opts = &defaults;
	*out = NULL;
	if (opts->create && opts->read_only)
		return ag_err(EINVAL, "cannot create maps through a read-only open");
	if (opts->max_agents > AG_MAX_AGENTS_LIMIT)
		return ag_err(EINVAL, "max agents %u exceeds the limit %u", opts->max_agents,
			      AG_MAX_AGENTS_LIMIT);
	len = strlen(root);
	while (len > 1 && root[len - 1] == '/')
		len--;
	if (len == 0 || len >= sizeof(ctx->pin_root) - 32)
		return ag_err(EINVAL, "invalid pin root '%s'", root);

	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return ag_err(ENOMEM, "out of memory");
	memcpy(ctx->pin_root, root, len);
	{
		pthread_mutexattr_t attr;

		pthread_mutexattr_init(&attr);
		pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
		ctx->lock_ready = pthread_mutex_init(&ctx->lock, &attr) == 0;
		pthread_mutexattr_destroy(&attr);
	}
	ctx->read_only = opts->read_only;
	ctx->dir_fd = -1;
	ctx->legacy_counters_fd = ctx->legacy_refusals_fd = -1;
	for (i = 0; i < AG_M__COUNT; i++)
		ctx->fds[i] = -1;
	if (!ctx->lock_ready) {
		err = ag_err(ENOMEM, "cannot initialise a mutex");
		goto cleanup;
	}
	ctx->ncpus = libbpf_num_possible_cpus();
	if (ctx->ncpus <= 0) {
		err = ag_err(EINVAL, "cannot count possible CPUs");
		goto cleanup;
	}

	err = open_root(ctx, opts->create);
	if (err)
		goto cleanup;
	/* Creation happens under the lock so two creators cannot race. */
	if (opts->create && flock(ctx->dir_fd, LOCK_EX) < 0) {
		err = ag_err(errno, "cannot lock %s: %s", ctx->pin_root, strerror(errno));
		goto cleanup;
	}
	adopt_pinned_sizes(ctx, opts);
	err = open_maps(ctx, opts->create);
	if (!err)
		err = map_buckets(ctx);
	if (!err)
		err = map_names(ctx);
	if (opts->create)
		flock(ctx->dir_fd, LOCK_UN);
	if (err)
		goto cleanup;
	if (!err)
		err = map_budgets(ctx);
	if (!err)
		err = map_tally(ctx);
	if (!err)
		err = map_probes(ctx);
	if (err)
		goto cleanup;
	ctx->slot_cache = ag_slot_cache_new(); /* optional: NULL only slows lookups */
	*out = ctx;
	return 0;

cleanup:
	ag_close(ctx);
	return err;
}

void ag_close(struct ag_ctx *ctx)
{
	int i;

	if (!ctx)
		return;
	if (ctx->buckets)
		munmap(ctx->buckets, ctx->mmap_len);
	if (ctx->names)
		munmap(ctx->names, ctx->names_len);
	if (ctx->index)
		munmap(ctx->index, ctx->index_len);
	if (ctx->probes)
		munmap(ctx->probes, ctx->probes_len);
	if (ctx->budgets)
		munmap(ctx->budgets, ctx->budgets_len);
	if (ctx->tally)
		munmap(ctx->tally, ctx->tally_len);
	if (ctx->legacy_counters_fd >= 0)
		close(ctx->legacy_counters_fd);
	if (ctx->legacy_refusals_fd >= 0)
		close(ctx->legacy_refusals_fd);
	ag_slot_cache_free(ctx->slot_cache);
	for (i = 0; i < AG_M__COUNT; i++)
		if (ctx->fds[i] >= 0)
			close(ctx->fds[i]);
	if (ctx->dir_fd >= 0)
		close(ctx->dir_fd);
	if (ctx->lock_ready)
		pthread_mutex_destroy(&ctx->lock);
	free(ctx);
}

const char *ag_pin_root(const struct ag_ctx *ctx)
{
	return ctx->pin_root;
}

__u32 ag_max_agents(const struct ag_ctx *ctx)
{
	return ctx->max_agents;
}

__u32 ag_max_rules(const struct ag_ctx *ctx)
{
	return ctx->max_rules;
}

int ag_num_cpus(const struct ag_ctx *ctx)
{
	return ctx->ncpus;
}

int ag_config_read(struct ag_ctx *ctx, struct ag_config *cfg)
{
	__u32 zero = 0;

	if (bpf_map_lookup_elem(ctx->fds[AG_M_CONFIG], &zero, cfg))
		return ag_err(errno, "cannot read %s: %s", AG_MAP_CONFIG, strerror(errno));
	return 0;
}

int ag_config_write(struct ag_ctx *ctx, const struct ag_config *cfg)
{
	__u32 zero = 0;

	if (bpf_map_update_elem(ctx->fds[AG_M_CONFIG], &zero, cfg, BPF_ANY))
		return ag_err(errno, "cannot write %s: %s", AG_MAP_CONFIG, strerror(errno));
	return 0;
}
