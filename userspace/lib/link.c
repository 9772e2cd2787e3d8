// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Loading the datapath against the pinned maps and attaching it with a
 * bpf_link pinned at <pin root>/links/<ifname>. The pinned link keeps the
 * program attached while no process holds it, and bpf_link_update replaces
 * the program atomically (with BPF_F_REPLACE: only if the expected one runs).
 *
 * The program a link runs is pinned too, at <pin root>/progs/<ifname>:
 * BPF_F_REPLACE needs a descriptor of the old program, and opening a program
 * by id takes CAP_SYS_ADMIN, which a daemon running with CAP_BPF and
 * CAP_NET_ADMIN only does not have; opening a pin needs file access only.
 *
 * Beside another program: a device that already runs one (attached through
 * netlink) gets agentgate attached through netlink in its place with
 * XDP_FLAGS_REPLACE, the other program in ag_next[ifindex] behind it. Such
 * an attachment has no link: the pin of its program at progs/<ifname> is
 * what says it is agentgate's (the device runs exactly that program).
 *
 * Only a device whose frames start with an Ethernet header is attached: the
 * datapath parses Ethernet, and on a device without one (tun, WireGuard,
 * ipip/gre/sit tunnels: XDP sees the IP header first) every packet would
 * read as a non-IP ethertype and pass uncharged. Loopback qualifies: it
 * carries an Ethernet header (zero addresses) and XDP sees it.
 */
#include <dirent.h>
#include <errno.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>

#include "agentgate.skel.h"
#include "internal.h"

struct ag_prog {
	struct agentgate_bpf *skel;
};

static struct bpf_map *skel_map(struct agentgate_bpf *skel, enum ag_map_id id)
{
	return bpf_object__find_map_by_name(skel->obj, ag_map_descs[id].name);
}

/*
 * The coarse clock (CLOCK_MONOTONIC_COARSE, bpf_ktime_get_coarse_ns()) is the
 * time of the timekeeper's last update. Updates come with the timer tick
 * and account for whole ticks only, so it lags CLOCK_MONOTONIC by less than
 * two ticks while ticks come on time (the remainder of the last update,
 * under one tick, plus the time since it). One more tick covers a late tick.
 * clock_getres() of the coarse clock is the tick: 1/CONFIG_HZ.
 */
#define AG_COARSE_SLACK_TICKS 3
#define AG_COARSE_TICK_FALLBACK_NS 10000000ULL /* HZ = 100, the slowest tick */

__u64 ag_coarse_slack_default_ns(void)
{
	struct timespec res;
	__u64 tick = AG_COARSE_TICK_FALLBACK_NS;

	if (!clock_getres(CLOCK_MONOTONIC_COARSE, &res) && !res.tv_sec && res.tv_nsec > 0)
		tick = (__u64)res.tv_nsec;
	return AG_COARSE_SLACK_TICKS * tick;
}

/*
 * The slack lives in ag_config, beside the maps every program on them
 * shares: a property of the machine's timer, not of one program, so a
 * program re-loaded on the same maps is the same program (same tag, same
 * maps; see keep_if_same()). The largest value the field holds is ~4.3 s.
 */
static int set_coarse_slack(struct ag_ctx *ctx, __u64 slack_ns)
{
	__u32 want = slack_ns > UINT32_MAX ? UINT32_MAX : (__u32)slack_ns;
	struct ag_config cfg;
	int err = ag_lock(ctx);

	if (err)
		return err;
	err = ag_config_read(ctx, &cfg);
	if (!err && cfg.coarse_slack_ns != want) {
		cfg.coarse_slack_ns = want;
		err = ag_config_write(ctx, &cfg);
	}
	ag_unlock(ctx);
	return err;
}

int ag_prog_load(struct ag_ctx *ctx, struct ag_prog **out)
{
	return ag_prog_load_opts(ctx, NULL, out);
}

int ag_prog_load_opts(struct ag_ctx *ctx, const struct ag_prog_opts *opts, struct ag_prog **out)
{
	__s64 slack = opts ? opts->coarse_slack_ns : 0;
	struct ag_prog *prog;
	int i, err;

	err = ag_require_writable(ctx);
	if (err)
		return err;
	prog = calloc(1, sizeof(*prog));
	if (!prog)
		return ag_err(ENOMEM, "out of memory");
	prog->skel = agentgate_bpf__open();
	if (!prog->skel) {
		err = ag_err(errno, "cannot open the embedded BPF object: %s", strerror(errno));
		goto fail;
	}
	err = ag_grow_stats(ctx, bpf_map__max_entries(prog->skel->maps.ag_stats));
	if (err)
		goto fail;
	for (i = 0; i < AG_M__COUNT; i++) {
		struct bpf_map *m = skel_map(prog->skel, i);

		if (ctx->fds[i] < 0) {
			err = ag_err(ENOENT, "map %s is not pinned at %s (pins of an older "
					     "version); opening them to create (agentgate attach, "
					     "agentgated) adds it",
				     ag_map_descs[i].name, ctx->pin_root);
			goto fail;
		}
		if (!m || bpf_map__reuse_fd(m, ctx->fds[i])) {
			err = ag_err(errno ? errno : ENOENT, "cannot bind map %s: %s",
				     ag_map_descs[i].name, strerror(errno ? errno : ENOENT));
			goto fail;
		}
	}
	if (agentgate_bpf__load(prog->skel)) {
		err = ag_err(errno, "cannot load the XDP program (verifier or kernel): %s",
			     strerror(errno));
		goto fail;
	}
	err = set_coarse_slack(ctx, slack < 0 ? 0 : slack ? (__u64)slack :
						 ag_coarse_slack_default_ns());
	if (err)
		goto fail;
	*out = prog;
	return 0;
fail:
	ag_prog_free(prog);
	return err;
}

int ag_prog_fd(const struct ag_prog *prog)
{
	return bpf_program__fd(prog->skel->progs.agentgate_xdp);
}

void ag_prog_free(struct ag_prog *prog)
{
	if (!prog)
		return;
	agentgate_bpf__destroy(prog->skel);
	free(prog);
}

static int prog_id_of(int prog_fd, __u32 *id);

/* Where a program pin is made before it is renamed over the old one. */
#define AG_PIN_NEW_DIR "new"

/*
 * The pin name of a device: bpffs refuses names with a dot, which device
 * names may have (eth0.100), so '.' is written %2e and '%' itself %25.
 */
static void pin_name_of(const char *ifname, char *out /* 3 * IF_NAMESIZE */)
{
	for (; *ifname; ifname++) {
		if (*ifname == '.' || *ifname == '%')
			out += sprintf(out, "%%%02x", (unsigned char)*ifname);
		else
			*out++ = *ifname;
	}
	*out = '\0';
}

/* The device name of a pin name; -1 if it is not one pin_name_of() makes. */
static int ifname_of_pin(const char *name, char *out, size_t len)
{
	size_t n = 0;
	unsigned int c;

	for (; *name; name++) {
		if (n + 1 >= len)
			return -1;
		if (*name == '%') {
			if (sscanf(name + 1, "%2x", &c) != 1 || (c != '.' && c != '%'))
				return -1;
			out[n++] = (char)c;
			name += 2;
		} else {
			out[n++] = *name;
		}
	}
	out[n] = '\0';
	return 0;
}

/* <pin root>/<dir>/<pin name of ifname><suffix> */
static int dev_pin_path(const struct ag_ctx *ctx, const char *dir, const char *ifname, char *buf,
			size_t len)
{
	char name[3 * IF_NAMESIZE];
	int n;

	if (!ifname || !*ifname || strlen(ifname) >= IF_NAMESIZE || strchr(ifname, '/'))
		return ag_err(EINVAL, "invalid interface name '%s'", ifname ? ifname : "");
	pin_name_of(ifname, name);
	n = snprintf(buf, len, "%s/%s/%s", ctx->pin_root, dir, name);
	if (n < 0 || (size_t)n >= len)
		return ag_err(ENAMETOOLONG, "pin path too long");
	return 0;
}

static int link_path(const struct ag_ctx *ctx, const char *ifname, char *buf, size_t len)
{
	return dev_pin_path(ctx, AG_PIN_LINKS_DIR, ifname, buf, len);
}

/*
 * Pin the program the link of ifname now runs, replacing the previous pin
 * atomically (pin under a temporary name, rename over). A failure is only
 * warned about: the link works; a later replace then needs CAP_SYS_ADMIN.
 */
static void pin_link_prog(const struct ag_ctx *ctx, const char *ifname, int prog_fd)
{
	char path[PATH_MAX], tmp[PATH_MAX], dir[PATH_MAX + 16];

	if (dev_pin_path(ctx, AG_PIN_PROGS_DIR, ifname, path, sizeof(path)) ||
	    dev_pin_path(ctx, AG_PIN_PROGS_DIR "/" AG_PIN_NEW_DIR, ifname, tmp, sizeof(tmp)))
		return;
	snprintf(dir, sizeof(dir), "%s/%s", ctx->pin_root, AG_PIN_PROGS_DIR);
	if (mkdir(dir, 0700) && errno != EEXIST)
		goto fail;
	snprintf(dir, sizeof(dir), "%s/%s/%s", ctx->pin_root, AG_PIN_PROGS_DIR, AG_PIN_NEW_DIR);
	if (mkdir(dir, 0700) && errno != EEXIST)
		goto fail;
	unlink(tmp);
	if (bpf_obj_pin(prog_fd, tmp))
		goto fail;
	if (rename(tmp, path)) {
		unlink(tmp);
		goto fail;
	}
	return;
fail:
	ag_warn("cannot pin the program of %s at %s: %s (replacing it later needs CAP_SYS_ADMIN)",
		ifname, path, strerror(errno));
}

static void unpin_link_prog(const struct ag_ctx *ctx, const char *ifname)
{
	char path[PATH_MAX];

	if (!dev_pin_path(ctx, AG_PIN_PROGS_DIR, ifname, path, sizeof(path)))
		unlink(path);
}

/*
 * A descriptor of program prog_id, running on ifname: from its pin when the
 * pin holds that very program, else by id (CAP_SYS_ADMIN); *by_id says which.
 */
static int open_link_prog(const struct ag_ctx *ctx, const char *ifname, __u32 prog_id,
			  bool *by_id)
{
	char path[PATH_MAX];
	__u32 id = 0;
	int fd;

	*by_id = false;
	if (!dev_pin_path(ctx, AG_PIN_PROGS_DIR, ifname, path, sizeof(path))) {
		fd = bpf_obj_get(path);
		if (fd >= 0 && !prog_id_of(fd, &id) && id == prog_id)
			return fd;
		if (fd >= 0)
			close(fd);
	}
	*by_id = true;
	fd = bpf_prog_get_fd_by_id(prog_id);
	if (fd >= 0)
		return fd;
	if (errno == EPERM)
		return ag_err(EPERM, "cannot open program %u running on %s: no pin of it at %s and "
				     "opening by id needs CAP_SYS_ADMIN; replace refused",
			      prog_id, ifname, path);
	return ag_err(errno == ENOENT ? EPERM : errno,
		      "program %u expected on %s is gone; replace refused", prog_id, ifname);
}

static int prog_id_of(int prog_fd, __u32 *id)
{
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(prog_fd, &info, &len))
		return ag_err(errno, "cannot query program: %s", strerror(errno));
	*id = info.id;
	return 0;
}

static int link_info(int link_fd, struct bpf_link_info *info)
{
	__u32 len = sizeof(*info);

	memset(info, 0, sizeof(*info));
	if (bpf_obj_get_info_by_fd(link_fd, info, &len))
		return ag_err(errno, "cannot query link: %s", strerror(errno));
	return 0;
}

static enum ag_xdp_mode query_mode(__u32 ifindex)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);

	if (!ifindex || bpf_xdp_query(ifindex, 0, &q))
		return AG_XDP_AUTO;
	return q.attach_mode == XDP_ATTACHED_SKB ? AG_XDP_GENERIC : AG_XDP_NATIVE;
}

static int create_link(int prog_fd, const char *ifname, unsigned int ifindex,
		       enum ag_xdp_mode mode, enum ag_xdp_mode *used)
{
	LIBBPF_OPTS(bpf_link_create_opts, o);
	__u32 other = 0;
	int fd, err;

	o.flags = mode == AG_XDP_GENERIC ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE;
	*used = mode == AG_XDP_GENERIC ? AG_XDP_GENERIC : AG_XDP_NATIVE;
	fd = bpf_link_create(prog_fd, ifindex, BPF_XDP, &o);
	if (fd < 0 && mode == AG_XDP_AUTO && (errno == EOPNOTSUPP || errno == EINVAL)) {
		ag_warn("%s does not support native XDP; attaching in generic (skb) mode, which "
			"is slower",
			ifname);
		o.flags = XDP_FLAGS_SKB_MODE;
		*used = AG_XDP_GENERIC;
		fd = bpf_link_create(prog_fd, ifindex, BPF_XDP, &o);
	}
	if (fd >= 0)
		return fd;
	err = errno;
	if (err == EBUSY || err == EEXIST) {
		bpf_xdp_query_id(ifindex, 0, &other);
		return ag_err(EBUSY, "%s already has an XDP program attached (id %u) that is not "
				     "agentgate's; detach it first",
			      ifname, other);
	}
	if (err == EOPNOTSUPP)
		return ag_err(err, "%s does not support %s XDP", ifname,
			      mode == AG_XDP_GENERIC ? "generic" : "native");
	return ag_err(err, "cannot attach XDP to %s: %s", ifname, strerror(err));
}

static int fill_result(int link_fd, int prog_fd, __u32 ifindex, struct ag_attach_result *res)
{
	struct bpf_link_info li;
	int err = link_info(link_fd, &li);

	if (!err)
		err = prog_id_of(prog_fd, &res->prog_id);
	res->link_id = li.id;
	if (!err && query_mode(ifindex) != AG_XDP_AUTO)
		res->mode = query_mode(ifindex);
	return err;
}

int ag_link_replace(struct ag_ctx *ctx, const char *ifname, const struct ag_prog *prog,
		    __u32 expected_prog_id, struct ag_attach_result *res)
{
	LIBBPF_OPTS(bpf_link_update_opts, o, .flags = BPF_F_REPLACE);
	char path[PATH_MAX];
	struct bpf_link_info li;
	int link_fd = -1, old_fd = -1, err;
	bool by_id;

	memset(res, 0, sizeof(*res));
	err = link_path(ctx, ifname, path, sizeof(path));
	if (err)
		return err;
	link_fd = bpf_obj_get(path);
	if (link_fd < 0)
		return ag_err(errno, "no agentgate link for %s at %s: %s", ifname, path,
			      strerror(errno));
	err = link_info(link_fd, &li);
	if (err)
		goto out;
	if (expected_prog_id && expected_prog_id != li.prog_id) {
		err = ag_err(EPERM, "%s no longer runs program %u; replace refused, the running "
				    "program is left in place", ifname, expected_prog_id);
		goto out;
	}
	/* The kernel checks old_prog_fd again, atomically with the update. */
	old_fd = open_link_prog(ctx, ifname, li.prog_id, &by_id);
	if (old_fd < 0) {
		err = old_fd;
		goto out;
	}
	o.old_prog_fd = old_fd;
	if (bpf_link_update(link_fd, ag_prog_fd(prog), &o)) {
		err = errno == EPERM ? ag_err(EPERM,
					      "%s no longer runs program %u; replace refused, the "
					      "running program is left in place",
					      ifname, expected_prog_id) :
				       ag_err(errno, "cannot replace the program on %s: %s", ifname,
					      strerror(errno));
		goto out;
	}
	res->replaced = true;
	pin_link_prog(ctx, ifname, ag_prog_fd(prog));
	err = fill_result(link_fd, ag_prog_fd(prog), li.xdp.ifindex, res);
out:
	if (old_fd >= 0)
		close(old_fd);
	close(link_fd);
	return err;
}

/* The program's type, tag and sorted map ids (ids holds AG_M__COUNT). */
static int prog_identity(int prog_fd, struct bpf_prog_info *info, __u32 *ids)
{
	__u32 len = sizeof(*info), i, j;

	memset(info, 0, sizeof(*info));
	info->nr_map_ids = AG_M__COUNT;
	info->map_ids = (__u64)(unsigned long)ids;
	if (bpf_obj_get_info_by_fd(prog_fd, info, &len))
		return ag_err(errno, "cannot query program: %s", strerror(errno));
	for (i = 1; i < info->nr_map_ids && i < AG_M__COUNT; i++)
		for (j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
			__u32 t = ids[j];

			ids[j] = ids[j - 1];
			ids[j - 1] = t;
		}
	return 0;
}

/*
 * 1 when running_fd is the program prog would install: the same
 * instructions (the kernel's tag hashes them with map references zeroed)
 * on the same maps; 0 when it differs.
 */
static int same_program(int running_fd, const struct ag_prog *prog)
{
	__u32 ids_a[AG_M__COUNT] = { 0 }, ids_b[AG_M__COUNT] = { 0 };
	struct bpf_prog_info a, b;
	int err = prog_identity(running_fd, &a, ids_a);

	if (!err)
		err = prog_identity(ag_prog_fd(prog), &b, ids_b);
	if (err)
		return err;
	return a.type == b.type && !memcmp(a.tag, b.tag, sizeof(a.tag)) &&
	       a.nr_map_ids == b.nr_map_ids && a.nr_map_ids <= AG_M__COUNT &&
	       !memcmp(ids_a, ids_b, sizeof(ids_a));
}

/*
 * The live link of ifname left as it is when it runs prog's very program:
 * 1 (res filled), 0 when it runs another one, or a negative errno.
 */
static int keep_if_same(struct ag_ctx *ctx, const char *ifname, const struct ag_prog *prog,
			__u32 expected_prog_id, struct ag_attach_result *res)
{
	char path[PATH_MAX];
	struct bpf_link_info li;
	int link_fd, prog_fd = -1, err;
	bool by_id;

	err = link_path(ctx, ifname, path, sizeof(path));
	if (err)
		return err;
	link_fd = bpf_obj_get(path);
	if (link_fd < 0)
		return ag_err(errno, "cannot open %s: %s", path, strerror(errno));
	err = link_info(link_fd, &li);
	if (err || (expected_prog_id && expected_prog_id != li.prog_id))
		goto out; /* a stale expectation is for the replace to refuse */
	prog_fd = open_link_prog(ctx, ifname, li.prog_id, &by_id);
	if (prog_fd < 0) {
		err = prog_fd;
		goto out;
	}
	err = same_program(prog_fd, prog);
	if (err != 1)
		goto out;
	if (by_id)
		pin_link_prog(ctx, ifname, prog_fd);
	memset(res, 0, sizeof(*res));
	res->kept = true;
	res->prog_id = li.prog_id;
	res->link_id = li.id;
	res->mode = query_mode(li.xdp.ifindex);
out:
	if (prog_fd >= 0)
		close(prog_fd);
	close(link_fd);
	return err;
}

/*
 * A link pinned for ifname: 1 if it is live on ifindex, 0 if there is none or
 * it was defunct (its device vanished, maybe re-created under the same name)
 * and has been unpinned.
 */
static int drop_stale_link(const char *path, const char *ifname, unsigned int ifindex)
{
	struct bpf_link_info li;
	int fd = bpf_obj_get(path), err;

	if (fd < 0)
		return errno == ENOENT ? 0 :
					 ag_err(errno, "cannot open %s: %s", path, strerror(errno));
	err = link_info(fd, &li);
	close(fd);
	if (err)
		return err;
	if (li.xdp.ifindex == ifindex)
		return 1;
	ag_warn("removing stale link pin %s (its device is gone)", path);
	if (unlink(path))
		return ag_err(errno, "cannot remove stale %s: %s", path, strerror(errno));
	return 0;
}

/* ---- beside another program: netlink, ag_next ---------------------------------- */

/* What runs on ifindex through netlink: its id and mode (0: nothing). */
static __u32 attached_prog(unsigned int ifindex, __u32 *xdp_flags)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);

	if (bpf_xdp_query(ifindex, 0, &q))
		return 0;
	*xdp_flags = q.attach_mode == XDP_ATTACHED_SKB ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE;
	return q.prog_id;
}

/* The pin of agentgate's program on ifname when the device runs exactly it
 * through netlink: its descriptor, or -ENOENT. */
static int our_netlink_prog(const struct ag_ctx *ctx, const char *ifname, __u32 running)
{
	char path[PATH_MAX];
	__u32 id = 0;
	int fd;

	if (!running || dev_pin_path(ctx, AG_PIN_PROGS_DIR, ifname, path, sizeof(path)))
		return -ENOENT;
	fd = bpf_obj_get(path);
	if (fd >= 0 && !prog_id_of(fd, &id) && id == running)
		return fd;
	if (fd >= 0)
		close(fd);
	return -ENOENT;
}

__u32 ag_chain_get(struct ag_ctx *ctx, unsigned int ifindex)
{
	__u32 key = ifindex, id = 0;

	if (ctx->fds[AG_M_NEXT] < 0 || ifindex >= AG_NEXT_MAX ||
	    bpf_map_lookup_elem(ctx->fds[AG_M_NEXT], &key, &id))
		return 0;
	return id;
}

static int next_put(struct ag_ctx *ctx, const char *ifname, unsigned int ifindex, int prog_fd)
{
	__u32 key = ifindex;

	if (ctx->fds[AG_M_NEXT] < 0)
		return ag_err(ENOENT, "map %s is not pinned at %s (pins of an older version); "
				      "agentgate attach adds it", AG_MAP_NEXT, ctx->pin_root);
	if (ifindex >= AG_NEXT_MAX)
		return ag_err(ERANGE, "%s has ifindex %u: programs run after agentgate only on "
				      "devices numbered below %u", ifname, ifindex, AG_NEXT_MAX);
	if (prog_fd < 0)
		return bpf_map_delete_elem(ctx->fds[AG_M_NEXT], &key) && errno != ENOENT ?
			       ag_err(errno, "cannot clear %s[%u]: %s", AG_MAP_NEXT, ifindex,
				      strerror(errno)) : 0;
	if (bpf_map_update_elem(ctx->fds[AG_M_NEXT], &key, &prog_fd, BPF_ANY))
		return errno == EINVAL ?
			       ag_err(EINVAL, "the kernel refuses this program after agentgate on "
					      "%s: it must be an XDP program loaded for the xdp attach "
					      "type, without frags (as libbpf and libxdp load SEC(\"xdp\"))",
				      ifname) :
			       ag_err(errno, "cannot chain the program on %s: %s", ifname,
				      strerror(errno));
	return 0;
}

int ag_chain_set(struct ag_ctx *ctx, const char *ifname, int prog_fd)
{
	unsigned int ifindex;
	int err = ag_require_writable(ctx);

	if (err)
		return err;
	ifindex = if_nametoindex(ifname);
	if (!ifindex)
		return ag_err(ENODEV, "interface '%s' does not exist", ifname);
	if (prog_fd >= 0) {
		struct bpf_prog_info info = {};
		__u32 len = sizeof(info);

		if (bpf_obj_get_info_by_fd(prog_fd, &info, &len))
			return ag_err(errno, "not a BPF program: %s", strerror(errno));
		if (info.type != BPF_PROG_TYPE_XDP)
			return ag_err(EINVAL, "program %u is not an XDP program", info.id);
		if (!strcmp(info.name, "agentgate_xdp"))
			return ag_err(EINVAL, "program %u is agentgate itself", info.id);
	}
	return next_put(ctx, ifname, ifindex, prog_fd);
}

/* Upgrades agentgate attached through netlink on ifname (its program pinned,
 * cur_fd), or keeps it. */
static int netlink_replace(struct ag_ctx *ctx, const char *ifname, unsigned int ifindex,
			   int cur_fd, __u32 cur_id, __u32 flags, const struct ag_prog *prog,
			   const struct ag_attach_opts *o, struct ag_attach_result *res)
{
	LIBBPF_OPTS(bpf_xdp_attach_opts, xo, .old_prog_fd = cur_fd);
	int err;

	if (o->expected_prog_id && o->expected_prog_id != cur_id)
		return ag_err(EPERM, "%s no longer runs program %u; replace refused, the running "
				     "program is left in place", ifname, o->expected_prog_id);
	res->chained = true;
	res->next_prog_id = ag_chain_get(ctx, ifindex);
	res->mode = flags & XDP_FLAGS_SKB_MODE ? AG_XDP_GENERIC : AG_XDP_NATIVE;
	if (o->keep_same) {
		err = same_program(cur_fd, prog);
		if (err < 0)
			return err;
		if (err == 1) {
			res->kept = true;
			res->prog_id = cur_id;
			return 0;
		}
	}
	/* The kernel compares the running program with old_prog_fd atomically. */
	if (bpf_xdp_attach(ifindex, ag_prog_fd(prog), flags | XDP_FLAGS_REPLACE, &xo))
		return errno == EEXIST || errno == EBUSY ?
			       ag_err(EPERM, "%s no longer runs program %u; replace refused, the "
					     "running program is left in place", ifname, cur_id) :
			       ag_err(errno, "cannot replace the program on %s: %s", ifname,
				      strerror(errno));
	res->replaced = true;
	pin_link_prog(ctx, ifname, ag_prog_fd(prog));
	return prog_id_of(ag_prog_fd(prog), &res->prog_id);
}

/* Puts agentgate before the program other_id that runs on ifname. */
static int chain_before(struct ag_ctx *ctx, const char *ifname, unsigned int ifindex,
			__u32 other_id, __u32 flags, const struct ag_prog *prog,
			const struct ag_attach_opts *o, struct ag_attach_result *res)
{
	LIBBPF_OPTS(bpf_xdp_attach_opts, xo);
	int other_fd, pinned, err;
	__u32 id = 0;

	if ((o->mode == AG_XDP_NATIVE && (flags & XDP_FLAGS_SKB_MODE)) ||
	    (o->mode == AG_XDP_GENERIC && !(flags & XDP_FLAGS_SKB_MODE)))
		return ag_err(EBUSY, "%s runs program %u in %s mode: agentgate goes before it in "
				     "the same mode (omit --mode)", ifname, other_id,
			      flags & XDP_FLAGS_SKB_MODE ? "generic" : "native");
	other_fd = bpf_prog_get_fd_by_id(other_id);
	if (other_fd < 0)
		return ag_err(errno, "%s runs program %u, which cannot be opened to run after "
				     "agentgate: %s", ifname, other_id, strerror(errno));
	err = next_put(ctx, ifname, ifindex, other_fd);
	if (err)
		goto out;
	xo.old_prog_fd = other_fd;
	if (bpf_xdp_attach(ifindex, ag_prog_fd(prog), flags | XDP_FLAGS_REPLACE, &xo)) {
		err = errno == EBUSY || errno == EEXIST ?
			      ag_err(EBUSY, "%s runs program %u through a bpf_link that is not "
					    "agentgate's: agentgate can go before a program attached "
					    "through netlink (as libxdp's tools and ip link attach) only",
				     ifname, other_id) :
			      ag_err(errno, "cannot attach XDP to %s before program %u: %s", ifname,
				     other_id, strerror(errno));
		next_put(ctx, ifname, ifindex, -1);
		goto out;
	}
	/* The pin says the attachment is agentgate's: without it, hand the
	 * device back. */
	pin_link_prog(ctx, ifname, ag_prog_fd(prog));
	pinned = prog_id_of(ag_prog_fd(prog), &id) ? -1 : our_netlink_prog(ctx, ifname, id);
	if (pinned < 0) {
		LIBBPF_OPTS(bpf_xdp_attach_opts, back, .old_prog_fd = ag_prog_fd(prog));

		bpf_xdp_attach(ifindex, other_fd, flags | XDP_FLAGS_REPLACE, &back);
		next_put(ctx, ifname, ifindex, -1);
		err = ag_err(EIO, "cannot pin agentgate's program for %s; program %u runs there "
				  "alone again", ifname, other_id);
		goto out;
	}
	close(pinned);
	res->chained = true;
	res->next_prog_id = other_id;
	res->prog_id = id;
	res->mode = flags & XDP_FLAGS_SKB_MODE ? AG_XDP_GENERIC : AG_XDP_NATIVE;
out:
	close(other_fd);
	return err;
}

/* A device without agentgate's link: 1 when nothing runs there (attach a
 * link), else done here (0 or an error): agentgate upgraded where it runs
 * through netlink, or put before the other program. */
static int attach_beside(struct ag_ctx *ctx, const char *ifname, unsigned int ifindex,
			 const struct ag_prog *prog, const struct ag_attach_opts *o,
			 struct ag_attach_result *res)
{
	__u32 flags = 0, running = attached_prog(ifindex, &flags);
	int ours, err;

	if (!running)
		return 1;
	ours = our_netlink_prog(ctx, ifname, running);
	if (ours >= 0) {
		err = netlink_replace(ctx, ifname, ifindex, ours, running, flags, prog, o, res);
		close(ours);
		return err;
	}
	if (o->expected_prog_id)
		return ag_err(ENOENT, "%s runs program %u, not agentgate's (expected program %u); "
				      "nothing replaced", ifname, running, o->expected_prog_id);
	return chain_before(ctx, ifname, ifindex, running, flags, prog, o, res);
}

/* agentgate through netlink on ifname: the program after it back in its
 * place (atomically), or nothing there. */
static int detach_netlink(struct ag_ctx *ctx, const char *ifname)
{
	LIBBPF_OPTS(bpf_xdp_attach_opts, xo);
	unsigned int ifindex = if_nametoindex(ifname);
	__u32 flags = 0, running = ifindex ? attached_prog(ifindex, &flags) : 0, next;
	int ours = our_netlink_prog(ctx, ifname, running), next_fd = -1, err = 0;

	if (ours < 0)
		return ag_err(ENOENT, "agentgate is not attached to %s", ifname);
	next = ag_chain_get(ctx, ifindex);
	if (next) {
		next_fd = bpf_prog_get_fd_by_id(next);
		if (next_fd < 0) {
			err = ag_err(errno, "cannot open program %u, which runs after agentgate on "
					    "%s, to put it back: %s; nothing changed", next, ifname,
				     strerror(errno));
			goto out;
		}
	}
	xo.old_prog_fd = ours;
	if (bpf_xdp_attach(ifindex, next_fd, flags | XDP_FLAGS_REPLACE, &xo)) {
		err = ag_err(errno, "cannot detach from %s: %s", ifname, strerror(errno));
		goto out;
	}
	next_put(ctx, ifname, ifindex, -1);
	unpin_link_prog(ctx, ifname);
out:
	if (next_fd >= 0)
		close(next_fd);
	close(ours);
	return err;
}

/* Link types glibc's <net/if_arp.h> may lack (<linux/if_arp.h> clashes with
 * <netinet/in.h>). */
#ifndef ARPHRD_RAWIP
#define ARPHRD_RAWIP 519
#endif
#ifndef ARPHRD_IP6GRE
#define ARPHRD_IP6GRE 823
#endif
#ifndef ARPHRD_NETLINK
#define ARPHRD_NETLINK 824
#endif

/* The name ip link shows for a link type (ARPHRD_*), or NULL. */
static const char *link_type_name(unsigned int type)
{
	static const struct {
		unsigned int type;
		const char *name;
	} names[] = {
		{ ARPHRD_ETHER, "ether" },
		{ ARPHRD_LOOPBACK, "loopback" },
		{ ARPHRD_NONE, "none" }, /* tun, WireGuard */
		{ ARPHRD_TUNNEL, "ipip" },
		{ ARPHRD_TUNNEL6, "tunnel6" },
		{ ARPHRD_SIT, "sit" },
		{ ARPHRD_IPGRE, "gre" },
		{ ARPHRD_IP6GRE, "gre6" },
		{ ARPHRD_PPP, "ppp" },
		{ ARPHRD_RAWIP, "rawip" },
		{ ARPHRD_INFINIBAND, "infiniband" },
		{ ARPHRD_NETLINK, "netlink" },
		{ ARPHRD_CAN, "can" },
		{ ARPHRD_IEEE80211_RADIOTAP, "ieee802.11/radiotap" },
		{ ARPHRD_VOID, "void" },
	};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].type == type)
			return names[i].name;
	return NULL;
}

/*
 * -EOPNOTSUPP unless ifname's frames start with an Ethernet header (see the
 * top of this file). The link type is the hardware address family
 * SIOCGIFHWADDR reports (ifi_type of RTM_GETLINK): read in this process's
 * network namespace, where /sys/class/net may show another one's devices.
 */
int ag_device_check(const char *ifname)
{
	struct ifreq ifr = {};
	unsigned int type;
	const char *name;
	int fd, err;

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return ag_err(errno, "cannot read the link type of %s: %s", ifname,
			      strerror(errno));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	err = ioctl(fd, SIOCGIFHWADDR, &ifr) ? errno : 0;
	close(fd);
	if (err == ENODEV)
		return ag_err(ENODEV, "interface '%s' does not exist", ifname);
	if (err)
		return ag_err(err, "cannot read the link type of %s: %s", ifname, strerror(err));
	type = (unsigned short)ifr.ifr_hwaddr.sa_family;
	if (type == ARPHRD_ETHER || type == ARPHRD_LOOPBACK)
		return 0;
	name = link_type_name(type);
	return ag_err(EOPNOTSUPP, "device %s is not Ethernet (link type %u%s%s): agentgate's "
				  "datapath reads Ethernet frames; attach it to the Ethernet "
				  "device the traffic arrives on",
		      ifname, type, name ? ", " : "", name ? name : "");
}

int ag_attach(struct ag_ctx *ctx, const char *ifname, enum ag_xdp_mode mode,
	      struct ag_attach_result *res)
{
	struct ag_attach_opts o = { .mode = mode };

	return ag_attach_with(ctx, ifname, &o, res);
}

/* Upgrade the live link of ifname in place, or keep it (opts->keep_same). */
static int attach_live(struct ag_ctx *ctx, const char *ifname, const struct ag_prog *prog,
		       const struct ag_attach_opts *o, struct ag_attach_result *res)
{
	int err = 0;

	if (o->keep_same)
		err = keep_if_same(ctx, ifname, prog, o->expected_prog_id, res);
	if (err)
		return err < 0 ? err : 0;
	return ag_link_replace(ctx, ifname, prog, o->expected_prog_id, res);
}

int ag_attach_with(struct ag_ctx *ctx, const char *ifname, const struct ag_attach_opts *o,
		   struct ag_attach_result *res)
{
	char path[PATH_MAX], dir[PATH_MAX + 16];
	struct ag_prog *prog = NULL;
	unsigned int ifindex;
	int link_fd = -1, err;

	memset(res, 0, sizeof(*res));
	err = link_path(ctx, ifname, path, sizeof(path));
	if (err)
		return err;
	ifindex = if_nametoindex(ifname);
	if (!ifindex)
		return ag_err(ENODEV, "interface '%s' does not exist", ifname);
	/* Before anything changes: no program loaded, no pin, no link. */
	err = ag_device_check(ifname);
	if (err)
		return err;
	err = ag_prog_load(ctx, &prog);
	if (err)
		return err;
	err = drop_stale_link(path, ifname, ifindex);
	if (err < 0)
		goto out;
	if (err == 1) { /* already ours and live: upgrade in place */
		err = attach_live(ctx, ifname, prog, o, res);
		goto out;
	}
	err = attach_beside(ctx, ifname, ifindex, prog, o, res);
	if (err != 1)
		goto out;
	if (o->expected_prog_id) {
		err = ag_err(ENOENT, "%s has no agentgate link (expected program %u); nothing "
				     "replaced",
			     ifname, o->expected_prog_id);
		goto out;
	}
	link_fd = create_link(ag_prog_fd(prog), ifname, ifindex, o->mode, &res->mode);
	if (link_fd < 0) {
		err = link_fd;
		goto out;
	}
	snprintf(dir, sizeof(dir), "%s/%s", ctx->pin_root, AG_PIN_LINKS_DIR);
	if (mkdir(dir, 0700) && errno != EEXIST) {
		err = ag_err(errno, "cannot create %s: %s", dir, strerror(errno));
		goto out;
	}
	if (bpf_obj_pin(link_fd, path)) {
		err = ag_err(errno, "cannot pin link at %s: %s", path, strerror(errno));
		goto out; /* closing the unpinned link detaches it again */
	}
	pin_link_prog(ctx, ifname, ag_prog_fd(prog));
	err = fill_result(link_fd, ag_prog_fd(prog), ifindex, res);
out:
	if (link_fd >= 0)
		close(link_fd);
	ag_prog_free(prog);
	return err;
}

int ag_detach(struct ag_ctx *ctx, const char *ifname)
{
	char path[PATH_MAX];
	int link_fd, err;

	err = ag_require_writable(ctx);
	if (!err)
		err = link_path(ctx, ifname, path, sizeof(path));
	if (err)
		return err;
	link_fd = bpf_obj_get(path);
	if (link_fd < 0 && errno == ENOENT)
		return detach_netlink(ctx, ifname);
	if (link_fd < 0)
		return ag_err(errno, "cannot open %s: %s", path, strerror(errno));
	{
		unsigned int ifindex = if_nametoindex(ifname);
		__u32 next = ifindex ? ag_chain_get(ctx, ifindex) : 0;

		if (next) {
			close(link_fd);
			return ag_err(EBUSY, "program %u runs after agentgate on %s: agentgate "
					     "chain %s del first (it then stops running there)",
				      next, ifname, ifname);
		}
	}
	/* A link whose device vanished is already detached: just unpin it. */
	if (bpf_link_detach(link_fd) && errno != ENOLINK && errno != EINVAL) {
		err = ag_err(errno, "cannot detach from %s: %s", ifname, strerror(errno));
		close(link_fd);
		return err;
	}
	close(link_fd);
	unpin_link_prog(ctx, ifname);
	if (unlink(path))
		return ag_err(errno, "detached, but cannot remove %s: %s", path, strerror(errno));
	return 0;
}

/* Appends agentgate's attachments through netlink (a program pinned under
 * progs/ that its device runs, no link): those before another program. */
static int list_netlink(struct ag_ctx *ctx, struct ag_link_info **out, size_t *n_out, size_t cap)
{
	char dir[PATH_MAX + 16], ifname[IF_NAMESIZE], lpath[PATH_MAX];
	struct ag_link_info *links = *out;
	size_t n = *n_out;
	struct dirent *de;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/%s", ctx->pin_root, AG_PIN_PROGS_DIR);
	d = opendir(dir);
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		__u32 flags = 0, running;
		unsigned int ifindex;
		struct stat st;
		int fd;

		if (de->d_name[0] == '.' || ifname_of_pin(de->d_name, ifname, sizeof(ifname)) ||
		    link_path(ctx, ifname, lpath, sizeof(lpath)) || !stat(lpath, &st))
			continue; /* not a device's, or a link's program */
		ifindex = if_nametoindex(ifname);
		running = ifindex ? attached_prog(ifindex, &flags) : 0;
		fd = our_netlink_prog(ctx, ifname, running);
		if (fd < 0)
			continue;
		close(fd);
		if (n == cap) {
			struct ag_link_info *grown;

			cap = cap ? cap * 2 : 8;
			grown = realloc(links, cap * sizeof(*links));
			if (!grown) {
				closedir(d);
				free(links);
				*out = NULL;
				*n_out = 0;
				return ag_err(ENOMEM, "out of memory");
			}
			links = grown;
		}
		memset(&links[n], 0, sizeof(links[n]));
		snprintf(links[n].ifname, sizeof(links[n].ifname), "%s", ifname);
		links[n].ifindex = ifindex;
		links[n].prog_id = running;
		links[n].mode = flags & XDP_FLAGS_SKB_MODE ? AG_XDP_GENERIC : AG_XDP_NATIVE;
		links[n].next_prog_id = ag_chain_get(ctx, ifindex);
		n++;
	}
	closedir(d);
	*out = links;
	*n_out = n;
	return 0;
}

int ag_link_list(struct ag_ctx *ctx, struct ag_link_info **out, size_t *n_out)
{
	char dir[PATH_MAX + 16], path[PATH_MAX * 2];
	struct ag_link_info *links = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	*out = NULL;
	*n_out = 0;
	snprintf(dir, sizeof(dir), "%s/%s", ctx->pin_root, AG_PIN_LINKS_DIR);
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? list_netlink(ctx, out, n_out, 0) :
					 ag_err(errno, "cannot read %s: %s", dir, strerror(errno));
	while ((de = readdir(d))) {
		struct bpf_link_info li;
		int fd;

		char ifname[IF_NAMESIZE];

		if (de->d_name[0] == '.' || ifname_of_pin(de->d_name, ifname, sizeof(ifname)))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		fd = bpf_obj_get(path);
		if (fd < 0 && errno != EACCES && errno != EPERM)
			continue;
		if (n == cap) {
			struct ag_link_info *grown;

			cap = cap ? cap * 2 : 8;
			grown = realloc(links, cap * sizeof(*links));
			if (!grown) {
				if (fd >= 0)
					close(fd);
				closedir(d);
				free(links);
				return ag_err(ENOMEM, "out of memory");
			}
			links = grown;
		}
		memset(&links[n], 0, sizeof(links[n]));
		snprintf(links[n].ifname, sizeof(links[n].ifname), "%s", ifname);
		if (fd < 0) { /* listed, though not readable: the device is attached */
			links[n++].error = -errno;
			continue;
		}
		if (!link_info(fd, &li)) {
			links[n].link_id = li.id;
			links[n].prog_id = li.prog_id;
			links[n].ifindex = li.xdp.ifindex;
			links[n].mode = query_mode(li.xdp.ifindex);
			links[n].next_prog_id = ag_chain_get(ctx, li.xdp.ifindex);
		}
		close(fd);
		n++;
	}
	closedir(d);
	*out = links;
	*n_out = n;
	return list_netlink(ctx, out, n_out, cap);
}
