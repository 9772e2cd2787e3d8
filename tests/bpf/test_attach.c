// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Attaching for real: veth pairs in a network namespace private to this
 * process (unshare(CLONE_NEWNET); it dies with the process, taking the
 * devices along). Native and generic attach through pinned bpf_links, atomic
 * replacement, refusal of a stale replacement, detach, a foreign XDP program,
 * a device re-created under the same name, and real frames sent from the
 * peer through an AF_PACKET socket, limited by the attached program.
 * Devices without an Ethernet header (tun, ipip) are refused untouched.
 */
#include <errno.h>
#include <limits.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <linux/if_link.h>

#include "agentgate.h"
#include "harness.h"
#include "pkt.h"
#include "testenv.h"

static struct ag_ctx *ctx;
static const char *root;
static char last_warning[512];

static void capture_warning(const char *msg)
{
	snprintf(last_warning, sizeof(last_warning), "%s", msg);
}

static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd) == 0 ? 0 : -1;
}

static int veth(const char *a, const char *b)
{
	return sh("ip link add %s type veth peer name %s && ip link set %s up && "
		  "ip link set %s up",
		  a, b, a, b);
}

static __u32 xdp_prog_on(const char *ifname, __u8 *mode)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);

	if (bpf_xdp_query(if_nametoindex(ifname), 0, &q))
		return 0;
	if (mode)
		*mode = q.attach_mode;
	return q.prog_id;
}

static bool pinned(const char *ifname)
{
	char path[512];
	struct stat st;

	snprintf(path, sizeof(path), "%s/links/%s", root, ifname);
	return stat(path, &st) == 0;
}

static bool test_native_attach(void)
{
	struct ag_attach_result res;
	__u8 mode = 0;

	return ASSERT_OK(ag_attach(ctx, "agt0a", AG_XDP_NATIVE, &res), "attach") &&
	       ASSERT_EQ(res.mode, AG_XDP_NATIVE, "mode") &&
	       ASSERT_TRUE(res.prog_id && res.link_id, "ids") &&
	       ASSERT_EQ(xdp_prog_on("agt0a", &mode), res.prog_id, "kernel's program") &&
	       ASSERT_EQ(mode, XDP_ATTACHED_DRV, "driver mode") &&
	       ASSERT_TRUE(pinned("agt0a"), "link pinned");
}

static bool test_link_list(void)
{
	struct ag_link_info *links = NULL;
	size_t n = 0, i;
	bool ok = ASSERT_OK(ag_link_list(ctx, &links, &n), "list") && ASSERT_EQ(n, 1, "links");

	for (i = 0; ok && i < n; i++)
		ok = ASSERT_TRUE(!strcmp(links[i].ifname, "agt0a"), "ifname") &&
		     ASSERT_EQ(links[i].ifindex, if_nametoindex("agt0a"), "ifindex") &&
		     ASSERT_EQ(links[i].mode, AG_XDP_NATIVE, "mode") &&
		     ASSERT_EQ(links[i].prog_id, xdp_prog_on("agt0a", NULL), "prog");
	free(links);
	return ok;
}

/* Send n frames from 10.77.0.1 out of the peer; they arrive on agt0a. */
static bool send_frames(const char *out_if, int n)
{
	struct sockaddr_ll addr = { .sll_family = AF_PACKET,
				    .sll_ifindex = (int)if_nametoindex(out_if),
				    .sll_halen = 6 };
	struct pkt p;
	int fd, i, sent = 0;

	pkt_eth(&p, ETH_P_IP);
	pkt_ipv4(&p, "10.77.0.1", "10.77.0.2", IPPROTO_UDP, NULL);
	pkt_udp(&p, 9);
	pkt_pad_to(&p, 100);
	pkt_finish(&p);
	fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (fd < 0)
		return ASSERT_OK(-errno, "packet socket");
	for (i = 0; i < n; i++)
		sent += sendto(fd, p.b, p.len, 0, (struct sockaddr *)&addr, sizeof(addr)) ==
			(ssize_t)p.len;
	close(fd);
	return ASSERT_EQ(sent, n, "frames sent");
}

static bool wait_counted(__u32 slot, __u64 want, struct ag_counters *c)
{
	int i;

	for (i = 0; i < 200; i++) { /* frames cross the veth asynchronously */
		if (ag_counters_get(ctx, slot, c))
			return false;
		if (c->passed_packets + c->dropped_packets >= want)
			return true;
		usleep(10000);
	}
	return false;
}

static bool test_real_frames_limited(void)
{
	struct ag_agent_update u = { .fields = AG_SET_RATE | AG_SET_BURST, .rate = 1, .burst = 3 };
	struct ag_counters c;
	struct ag_rule r;
	__u32 slot;

	/* 1 token/s, burst 3: of 10 frames sent at once, 3 pass and 7 drop. */
	return ASSERT_OK(ag_agent_set(ctx, "wire", &u, &slot, NULL), "agent") &&
	       ASSERT_OK(ag_prefix_parse("10.77.0.0/24", &r), "prefix") &&
	       ASSERT_OK(ag_rule_add(ctx, &r, "wire"), "rule") && send_frames("agt0b", 10) &&
	       ASSERT_TRUE(wait_counted(slot, 10, &c), "frames seen by XDP") &&
	       ASSERT_EQ(c.passed_packets, 3, "passed") && ASSERT_EQ(c.dropped_packets, 7, "dropped") &&
	       ASSERT_EQ(c.dropped_bytes, 700, "dropped bytes");
}

static bool test_replace_in_place(void)
{
	struct ag_attach_result first, again;
	__u32 before = xdp_prog_on("agt0a", NULL);
	struct ag_agent a;

	/* Attaching again upgrades the program through the same link. */
	return ASSERT_TRUE(before != 0, "attached") &&
	       ASSERT_OK(ag_attach(ctx, "agt0a", AG_XDP_NATIVE, &first), "re-attach") &&
	       ASSERT_TRUE(first.replaced, "replaced") &&
	       ASSERT_TRUE(first.prog_id != before, "new program") &&
	       ASSERT_EQ(xdp_prog_on("agt0a", NULL), first.prog_id, "kernel runs the new one") &&
	       ASSERT_OK(ag_attach(ctx, "agt0a", AG_XDP_NATIVE, &again), "again") &&
	       ASSERT_EQ(again.link_id, first.link_id, "same link") &&
	       ASSERT_OK(ag_agent_get(ctx, "wire", &a), "maps kept");
}

static bool test_stale_replace_refused(void)
{
	struct ag_attach_result res, next;
	struct ag_prog *prog = NULL;
	__u32 running = xdp_prog_on("agt0a", NULL);
	bool ok;

	/* Expecting a program that no longer runs: refused, nothing changes. */
	ok = ASSERT_OK(ag_attach(ctx, "agt0a", AG_XDP_NATIVE, &res), "upgrade") &&
	     ASSERT_OK(ag_prog_load(ctx, &prog), "load") &&
	     ASSERT_EQ(ag_link_replace(ctx, "agt0a", prog, running, &next), -EPERM,
		       "stale replace") &&
	     ASSERT_TRUE(strstr(ag_errmsg(), "refused") != NULL, "message") &&
	     ASSERT_EQ(xdp_prog_on("agt0a", NULL), res.prog_id, "old program stays") &&
	     ASSERT_OK(ag_link_replace(ctx, "agt0a", prog, res.prog_id, &next), "fresh replace") &&
	     ASSERT_EQ(xdp_prog_on("agt0a", NULL), next.prog_id, "replaced");
	ag_prog_free(prog);
	return ok;
}

/* keep_same: the running program is this very one (same instructions on
 * the same maps): left as it is; one on other maps: replaced. */
static bool test_keep_same(void)
{
	struct ag_open_opts o = { .create = true, .max_agents = 16, .max_rules = 16 };
	struct ag_attach_opts keep = { .mode = AG_XDP_NATIVE, .keep_same = true };
	struct ag_attach_result res, other_res;
	__u32 running = xdp_prog_on("agt0a", NULL);
	struct ag_ctx *other = NULL;
	struct ag_prog *prog = NULL;
	bool ok;

	o.pin_root = testenv_pin_root("attach-other");
	ok = ASSERT_OK(ag_attach_with(ctx, "agt0a", &keep, &res), "keep") &&
	     ASSERT_TRUE(res.kept && !res.replaced, "kept") &&
	     ASSERT_EQ(res.prog_id, running, "same program id") &&
	     ASSERT_EQ(xdp_prog_on("agt0a", NULL), running, "kernel still runs it") &&
	     ASSERT_OK(ag_open(&o, &other), "other maps") &&
	     ASSERT_OK(ag_prog_load(other, &prog), "load on other maps") &&
	     ASSERT_OK(ag_link_replace(ctx, "agt0a", prog, running, &other_res), "run it") &&
	     ASSERT_OK(ag_attach_with(ctx, "agt0a", &keep, &res), "attach again") &&
	     ASSERT_TRUE(res.replaced && !res.kept, "other maps: replaced") &&
	     ASSERT_TRUE(res.prog_id != other_res.prog_id, "new program") &&
	     ASSERT_EQ(xdp_prog_on("agt0a", NULL), res.prog_id, "kernel runs ours");
	ag_prog_free(prog);
	ag_close(other);
	return ok;
}

static bool test_expected_prog(void)
{
	struct ag_attach_opts o = { .mode = AG_XDP_NATIVE };
	__u32 running = xdp_prog_on("agt0a", NULL);
	struct ag_attach_result res;

	/* Replace only while the expected program runs; none where no link is. */
	o.expected_prog_id = running + 100000;
	if (!ASSERT_EQ(ag_attach_with(ctx, "agt0a", &o, &res), -EPERM, "stale") ||
	    !ASSERT_EQ(xdp_prog_on("agt0a", NULL), running, "old program stays"))
		return false;
	o.expected_prog_id = running;
	if (!ASSERT_OK(ag_attach_with(ctx, "agt0a", &o, &res), "current") ||
	    !ASSERT_TRUE(res.replaced && res.prog_id != running, "replaced"))
		return false;
	o.expected_prog_id = res.prog_id;
	return ASSERT_EQ(ag_attach_with(ctx, "agt2a", &o, &res), -ENOENT, "no link") &&
	       ASSERT_EQ(xdp_prog_on("agt2a", NULL), 0, "nothing attached");
}

static bool test_detach(void)
{
	return ASSERT_OK(ag_detach(ctx, "agt0a"), "detach") &&
	       ASSERT_EQ(xdp_prog_on("agt0a", NULL), 0, "no program") &&
	       ASSERT_TRUE(!pinned("agt0a"), "pin removed") &&
	       ASSERT_EQ(ag_detach(ctx, "agt0a"), -ENOENT, "second detach") &&
	       ASSERT_TRUE(strstr(ag_errmsg(), "not attached") != NULL, "message");
}

static bool test_generic_mode(void)
{
	struct ag_attach_result res;
	__u8 mode = 0;

	return ASSERT_OK(ag_attach(ctx, "agt1a", AG_XDP_GENERIC, &res), "attach") &&
	       ASSERT_EQ(res.mode, AG_XDP_GENERIC, "mode") &&
	       ASSERT_EQ(xdp_prog_on("agt1a", &mode), res.prog_id, "program") &&
	       ASSERT_EQ(mode, XDP_ATTACHED_SKB, "skb mode") &&
	       ASSERT_OK(ag_detach(ctx, "agt1a"), "detach");
}

static bool test_auto_falls_back_on_lo(void)
{
	struct ag_attach_result res;

	/* Loopback has no native XDP: auto mode attaches generic and warns. */
	last_warning[0] = '\0';
	return ASSERT_OK(ag_attach(ctx, "lo", AG_XDP_AUTO, &res), "attach") &&
	       ASSERT_EQ(res.mode, AG_XDP_GENERIC, "mode") &&
	       ASSERT_TRUE(strstr(last_warning, "generic") != NULL, last_warning) &&
	       ASSERT_EQ(ag_attach(ctx, "lo", AG_XDP_NATIVE, &res) == 0 ? 0 : 1, 0,
			 "re-attach replaces") &&
	       ASSERT_OK(ag_detach(ctx, "lo"), "detach");
}

/* XDP_PASS, loaded by hand: somebody else's program, for the xdp attach
 * type as libbpf and libxdp load it (attach_type 0: as raw loaders do). */
static int foreign_prog(enum bpf_attach_type attach_type)
{
	LIBBPF_OPTS(bpf_prog_load_opts, o, .expected_attach_type = attach_type);
	struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = XDP_PASS },
		{ .code = BPF_JMP | BPF_EXIT },
	};

	return bpf_prog_load(BPF_PROG_TYPE_XDP, "foreign", "GPL", insns, 2, &o);
}

static __u32 id_of(int fd)
{
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);

	return bpf_obj_get_info_by_fd(fd, &info, &len) ? 0 : info.id;
}

/*
 * A device that runs another program: agentgate goes before it in one
 * atomic replace (netlink), the other in ag_next; an upgrade keeps it
 * there, a stale one is refused; detach puts the other back. One the kernel
 * refuses in a tail call is left alone, with the reason.
 */
static bool test_foreign_program(void)
{
	unsigned int ifindex = if_nametoindex("agt1a");
	struct ag_attach_result res, up;
	struct ag_attach_opts stale = { .expected_prog_id = 1 };
	struct ag_link_info *links = NULL;
	int fd = foreign_prog(BPF_XDP), raw = foreign_prog(0);
	size_t n = 0, i;
	__u32 foreign = id_of(fd);
	bool ok, listed = false;

	if (!ASSERT_TRUE(fd >= 0 && raw >= 0, "foreign programs"))
		return false;
	ok = ASSERT_OK(bpf_xdp_attach(ifindex, raw, XDP_FLAGS_DRV_MODE, NULL), "raw attach") &&
	     ASSERT_EQ(ag_attach(ctx, "agt1a", AG_XDP_AUTO, &res), -EINVAL, "raw refused") &&
	     ASSERT_TRUE(strstr(ag_errmsg(), "xdp attach type") != NULL, ag_errmsg()) &&
	     ASSERT_EQ(xdp_prog_on("agt1a", NULL), id_of(raw), "raw still runs") &&
	     ASSERT_EQ(ag_chain_get(ctx, ifindex), 0, "nothing chained");
	bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, NULL);
	ok = ok && ASSERT_OK(bpf_xdp_attach(ifindex, fd, XDP_FLAGS_DRV_MODE, NULL), "attach") &&
	     ASSERT_OK(ag_attach(ctx, "agt1a", AG_XDP_AUTO, &res), "chained") &&
	     ASSERT_TRUE(res.chained, "chained flag") &&
	     ASSERT_EQ(res.next_prog_id, foreign, "next") && ASSERT_EQ(res.link_id, 0, "no link") &&
	     ASSERT_EQ(res.mode, AG_XDP_NATIVE, "its mode") &&
	     ASSERT_EQ(xdp_prog_on("agt1a", NULL), res.prog_id, "agentgate runs") &&
	     ASSERT_EQ(ag_chain_get(ctx, ifindex), foreign, "ag_next") &&
	     ASSERT_TRUE(!pinned("agt1a"), "no link pinned") &&
	     ASSERT_OK(ag_link_list(ctx, &links, &n), "list");
	for (i = 0; ok && i < n; i++)
		if (!strcmp(links[i].ifname, "agt1a"))
			listed = ASSERT_EQ(links[i].prog_id, res.prog_id, "listed program") &&
				 ASSERT_EQ(links[i].next_prog_id, foreign, "listed next") &&
				 ASSERT_EQ(links[i].link_id, 0, "listed without link");
	free(links);
	ok = ok && ASSERT_TRUE(listed, "listed") &&
	     /* An upgrade in place keeps the chain; a stale expectation changes nothing. */
	     ASSERT_EQ(ag_attach_with(ctx, "agt1a", &stale, &up), -EPERM, "stale refused") &&
	     ASSERT_EQ(xdp_prog_on("agt1a", NULL), res.prog_id, "unchanged") &&
	     ASSERT_OK(ag_attach(ctx, "agt1a", AG_XDP_AUTO, &up), "upgrade") &&
	     ASSERT_TRUE(up.replaced && up.chained, "replaced, chained") &&
	     ASSERT_TRUE(up.prog_id != res.prog_id, "new program") &&
	     ASSERT_EQ(xdp_prog_on("agt1a", NULL), up.prog_id, "new one runs") &&
	     ASSERT_EQ(ag_chain_get(ctx, ifindex), foreign, "still next") &&
	     /* Detach: the foreign program runs there again. */
	     ASSERT_OK(ag_detach(ctx, "agt1a"), "detach") &&
	     ASSERT_EQ(xdp_prog_on("agt1a", NULL), foreign, "foreign back") &&
	     ASSERT_EQ(ag_chain_get(ctx, ifindex), 0, "chain cleared") &&
	     ASSERT_EQ(ag_detach(ctx, "agt1a"), -ENOENT, "not ours any more");
	bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, NULL);
	close(fd);
	close(raw);
	return ok;
}

/* chain add/del by hand: a loaded program after agentgate's link; the
 * link's detach is refused while it is there. */
static bool test_chain_after_link(void)
{
	unsigned int ifindex = if_nametoindex("agt1a");
	struct ag_attach_result res;
	int fd = foreign_prog(BPF_XDP);
	bool ok;

	if (!ASSERT_TRUE(fd >= 0, "program"))
		return false;
	ok = ASSERT_OK(ag_attach(ctx, "agt1a", AG_XDP_NATIVE, &res), "attach") &&
	     ASSERT_TRUE(!res.chained && res.link_id, "a link") &&
	     ASSERT_OK(ag_chain_set(ctx, "agt1a", fd), "chain add") &&
	     ASSERT_EQ(ag_chain_get(ctx, ifindex), id_of(fd), "chained") &&
	     ASSERT_EQ(ag_detach(ctx, "agt1a"), -EBUSY, "detach refused") &&
	     ASSERT_TRUE(strstr(ag_errmsg(), "chain agt1a del") != NULL, ag_errmsg()) &&
	     ASSERT_OK(ag_chain_set(ctx, "agt1a", -1), "chain del") &&
	     ASSERT_EQ(ag_chain_get(ctx, ifindex), 0, "cleared") &&
	     ASSERT_OK(ag_detach(ctx, "agt1a"), "detach");
	close(fd);
	return ok;
}

static bool test_recreated_device(void)
{
	struct ag_attach_result res;

	/* Delete the device under a pinned link, re-create it, attach again. */
	return ASSERT_OK(ag_attach(ctx, "agt2a", AG_XDP_NATIVE, &res), "attach") &&
	       ASSERT_OK(sh("ip link del agt2a"), "delete device") &&
	       ASSERT_OK(veth("agt2a", "agt2b"), "re-create") &&
	       ASSERT_OK(ag_attach(ctx, "agt2a", AG_XDP_NATIVE, &res), "attach again") &&
	       ASSERT_TRUE(!res.replaced, "fresh link") &&
	       ASSERT_EQ(xdp_prog_on("agt2a", NULL), res.prog_id, "program") &&
	       ASSERT_OK(ag_detach(ctx, "agt2a"), "detach");
}

/*
 * A device name with a dot (a VLAN, eth0.100): bpffs refuses dots in pin
 * names, so the link and program pins are encoded; the list decodes them.
 * The program pin is what lets a replace work without CAP_SYS_ADMIN.
 */
static bool test_dotted_device_name(void)
{
	struct ag_attach_result res, again;
	struct ag_link_info *links = NULL;
	size_t n = 0, i;
	char path[512];
	bool ok, listed = false;

	ok = ASSERT_OK(sh("ip link add agt3.1 type veth peer name agt3b && ip link set agt3.1 up && "
			  "ip link set agt3b up"), "veth with a dot") &&
	     ASSERT_OK(ag_attach(ctx, "agt3.1", AG_XDP_NATIVE, &res), "attach") &&
	     ASSERT_EQ(xdp_prog_on("agt3.1", NULL), res.prog_id, "program");
	snprintf(path, sizeof(path), "%s/progs/agt3%%2e1", ag_pin_root(ctx));
	ok = ok && ASSERT_TRUE(access(path, F_OK) == 0, "program pinned under the encoded name") &&
	     ASSERT_OK(ag_link_list(ctx, &links, &n), "list");
	for (i = 0; ok && i < n; i++)
		listed |= !strcmp(links[i].ifname, "agt3.1") && links[i].prog_id == res.prog_id;
	free(links);
	ok = ok && ASSERT_TRUE(listed, "listed under its own name") &&
	     ASSERT_OK(ag_attach(ctx, "agt3.1", AG_XDP_NATIVE, &again), "attach again") &&
	     ASSERT_TRUE(again.replaced, "replaced in place") &&
	     ASSERT_EQ(xdp_prog_on("agt3.1", NULL), again.prog_id, "new program runs") &&
	     ASSERT_OK(ag_detach(ctx, "agt3.1"), "detach") &&
	     ASSERT_TRUE(access(path, F_OK) != 0, "program pin removed");
	sh("ip link del agt3.1 2>/dev/null");
	return ok;
}

static bool test_missing_device(void)
{
	struct ag_attach_result res;

	return ASSERT_EQ(ag_attach(ctx, "agtnone0", AG_XDP_AUTO, &res), -ENODEV, "attach") &&
	       ASSERT_TRUE(strstr(ag_errmsg(), "agtnone0") != NULL, "names it") &&
	       ASSERT_EQ(ag_attach(ctx, "a/b", AG_XDP_AUTO, &res), -EINVAL, "bad name");
}

/* Why the current test was skipped (h_skip), or NULL. */
static const char *skip_why;

/* Nothing of agentgate's on ifname: no program in any mode, no link or
 * program pin, no bpf_link on its ifindex, not listed. */
static bool nothing_left_on(const char *ifname)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);
	unsigned int ifindex = if_nametoindex(ifname);
	struct ag_link_info *links = NULL;
	char path[PATH_MAX];
	__u32 id = 0, on_dev = 0;
	size_t n = 0, i, listed = 0;
	bool ok;

	snprintf(path, sizeof(path), "%s/progs/%s", root, ifname);
	ok = ASSERT_TRUE(ifindex != 0, ifname) &&
	     ASSERT_OK(bpf_xdp_query(ifindex, 0, &q), "query") &&
	     ASSERT_EQ(q.prog_id, 0, "no XDP program") && ASSERT_EQ(q.drv_prog_id, 0, "native") &&
	     ASSERT_EQ(q.skb_prog_id, 0, "generic") && ASSERT_TRUE(!pinned(ifname), "no link pin") &&
	     ASSERT_TRUE(access(path, F_OK) != 0, "no program pin");
	while (ok && !bpf_link_get_next_id(id, &id)) {
		struct bpf_link_info li = {};
		__u32 len = sizeof(li);
		int fd = bpf_link_get_fd_by_id(id);

		if (fd < 0)
			continue;
		if (!bpf_obj_get_info_by_fd(fd, &li, &len) && li.type == BPF_LINK_TYPE_XDP &&
		    li.xdp.ifindex == ifindex)
			on_dev++;
		close(fd);
	}
	ok = ok && ASSERT_EQ(on_dev, 0, "no bpf_link on the device") &&
	     ASSERT_OK(ag_link_list(ctx, &links, &n), "list");
	for (i = 0; ok && i < n; i++)
		listed += !strcmp(links[i].ifname, ifname);
	free(links);
	return ok && ASSERT_EQ(listed, 0, "not listed");
}

/* Attaching to ifname (link type type, ip link's name) is refused in each
 * mode, naming the device and its type, and leaves nothing behind. */
static bool refused_not_ethernet(const char *ifname, unsigned int type, const char *type_name)
{
	static const enum ag_xdp_mode modes[] = { AG_XDP_NATIVE, AG_XDP_GENERIC, AG_XDP_AUTO };
	struct ag_attach_opts keep = { .mode = AG_XDP_AUTO, .keep_same = true };
	struct ag_attach_result res;
	char want[128];
	size_t i;
	bool ok = true;

	snprintf(want, sizeof(want), "device %s is not Ethernet (link type %u, %s)", ifname, type,
		 type_name);
	for (i = 0; ok && i < sizeof(modes) / sizeof(modes[0]); i++)
		ok = ASSERT_EQ(ag_attach(ctx, ifname, modes[i], &res), -EOPNOTSUPP, "refused") &&
		     ASSERT_TRUE(strstr(ag_errmsg(), want) != NULL, ag_errmsg()) &&
		     ASSERT_TRUE(strstr(ag_errmsg(), "Ethernet device the traffic arrives on") !=
					 NULL,
				 "says what to do") &&
		     nothing_left_on(ifname);
	/* agentgated's attach (keep_same) is refused the same way. */
	return ok && ASSERT_EQ(ag_attach_with(ctx, ifname, &keep, &res), -EOPNOTSUPP, "daemon's") &&
	       nothing_left_on(ifname);
}

/*
 * A tun device (IFF_TUN: frames start with the IP header, link type none):
 * attaching would enforce nothing, so it is refused in native, generic and
 * auto mode, before anything is made. The device goes also on failure (and
 * with this process's network namespace in any case).
 */
static bool test_tun_refused(void)
{
	bool ok = ASSERT_OK(sh("ip tuntap add dev agt5t mode tun && ip link set agt5t up"),
			    "tun device") &&
		  refused_not_ethernet("agt5t", ARPHRD_NONE, "none");

	sh("ip link del agt5t 2>/dev/null");
	return ok;
}

/* An ipip tunnel (link type ipip), where the kernel has ipip; skipped
 * otherwise. */
static bool test_ipip_refused(void)
{
	bool ok;

	if (sh("ip link add agt6i type ipip local 10.78.0.1 remote 10.78.0.2 2>/dev/null")) {
		sh("ip link del agt6i 2>/dev/null");
		skip_why = "no ipip tunnels in this kernel";
		return true;
	}
	ok = ASSERT_OK(sh("ip link set agt6i up"), "ipip up") &&
	     refused_not_ethernet("agt6i", ARPHRD_TUNNEL, "ipip");
	sh("ip link del agt6i 2>/dev/null");
	return ok;
}

/* An orphan IPv6 fragment (first not seen) from 3fff::1, no rule for it. */
static void orphan_frame(struct pkt *p)
{
	pkt_eth(p, ETH_P_IPV6);
	pkt_ipv6(p, "3fff::1", NULL, IPPROTO_FRAGMENT);
	pkt_frag6_id(p, IPPROTO_UDP, 4, 0, 1);
	pkt_payload(p, 16);
	pkt_finish(p);
}

#define OLD_STATS 19 /* reasons counted before ag_frags existed */

/* The counters of an older layout: per-CPU ag_counters and ag_refusals
 * (no ag_tally, no cache), slot holding 5 passed packets and 3 refused by
 * a parent on each CPU. */
static bool make_old_counters(const char *r, int ncpus, __u32 slot)
{
	struct ag_counters *c = calloc(ncpus, sizeof(*c));
	struct ag_refusals *rf = calloc(ncpus, sizeof(*rf));
	char path[PATH_MAX];
	bool ok = c && rf;
	int fc, fr, i;

	for (i = 0; ok && i < ncpus; i++) {
		c[i].passed_packets = 5;
		rf[i].parent_packets = 3;
	}
	fc = bpf_map_create(BPF_MAP_TYPE_PERCPU_ARRAY, "ag_counters", 4, sizeof(*c), 16, NULL);
	fr = bpf_map_create(BPF_MAP_TYPE_PERCPU_ARRAY, "ag_refusals", 4, sizeof(*rf), 16, NULL);
	ok = ok && ASSERT_TRUE(fc >= 0 && fr >= 0, "old counter maps") &&
	     ASSERT_OK(bpf_map_update_elem(fc, &slot, c, BPF_ANY), "old counts") &&
	     ASSERT_OK(bpf_map_update_elem(fr, &slot, rf, BPF_ANY), "old refusals");
	snprintf(path, sizeof(path), "%s/%s", r, AG_MAP_LEGACY_COUNTERS);
	ok = ok && ASSERT_OK(bpf_obj_pin(fc, path), "pin old ag_counters");
	snprintf(path, sizeof(path), "%s/%s", r, AG_MAP_LEGACY_REFUSALS);
	ok = ok && ASSERT_OK(bpf_obj_pin(fr, path), "pin old ag_refusals");
	snprintf(path, sizeof(path), "%s/%s", r, AG_MAP_TALLY);
	ok = ok && ASSERT_OK(unlink(path), "unpin ag_tally");
	snprintf(path, sizeof(path), "%s/%s", r, AG_MAP_TALLY_CACHE);
	ok = ok && ASSERT_OK(unlink(path), "unpin ag_tally_cache");
	if (fc >= 0)
		close(fc);
	if (fr >= 0)
		close(fr);
	free(c);
	free(rf);
	return ok;
}

/* slot's passed packets and refusals by a parent are n and m. */
static bool old_agent_counts(struct ag_ctx *c, __u32 slot, __u64 n, __u64 m)
{
	struct ag_counters sum;
	struct ag_refusals rf;

	return ASSERT_OK(ag_counters_get(c, slot, &sum), "counters") &&
	       ASSERT_EQ(sum.passed_packets, n, "passed, the old layout's counted") &&
	       ASSERT_OK(ag_refusals_get(c, slot, &rf), "refusals") &&
	       ASSERT_EQ(rf.parent_packets, m, "refused by a parent, the old layout's counted");
}

/* Turn a pin root into one of the previous version: an ag_stats of
 * OLD_STATS entries holding k + 1 on each CPU for reason k, no ag_frags. */
static bool make_old_pins(const char *r, int ncpus)
{
	char path[PATH_MAX];
	__u64 *vals = calloc(ncpus, sizeof(*vals));
	bool ok = vals != NULL;
	__u32 k;
	int fd, c;

	fd = bpf_map_create(BPF_MAP_TYPE_PERCPU_ARRAY, "ag_stats", 4, 8, OLD_STATS, NULL);
	ok = ok && ASSERT_TRUE(fd >= 0, "old ag_stats");
	for (k = 0; ok && k < OLD_STATS; k++) {
		for (c = 0; c < ncpus; c++)
			vals[c] = k + 1;
		ok = ASSERT_OK(bpf_map_update_elem(fd, &k, vals, BPF_ANY), "old count");
	}
	snprintf(path, sizeof(path), "%s/%s", r, AG_MAP_STATS);
	ok = ok && ASSERT_OK(unlink(path), "unpin ag_stats") &&
	     ASSERT_OK(bpf_obj_pin(fd, path), "pin old ag_stats");
	snprintf(path, sizeof(path), "%s/%s", r, AG_MAP_FRAGS);
	ok = ok && ASSERT_OK(unlink(path), "unpin ag_frags");
	if (fd >= 0)
		close(fd);
	free(vals);
	return ok;
}

static __u32 pinned_entries(const char *r, const char *map)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", r, map);
	fd = bpf_obj_get(path);
	if (fd < 0)
		return 0;
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		info.max_entries = 0;
	close(fd);
	return info.max_entries;
}

static bool old_counts_kept(struct ag_ctx *c, int ncpus)
{
	__u64 st[AG_STAT__MAX];
	bool ok = ASSERT_OK(ag_stats_get(c, st), "stats");
	int k;

	for (k = 0; ok && k < AG_STAT__MAX; k++)
		ok = ASSERT_EQ(st[k], k < OLD_STATS ? (__u64)(k + 1) * ncpus : 0, ag_stat_name(k));
	return ok;
}

/*
 * Pins of the previous version (fewer reasons in ag_stats, no ag_frags),
 * with a program running on a device: opening them without creating reads
 * them as they are, a program cannot be loaded on them, and attaching (which
 * opens to create) adds ag_frags, grows ag_stats keeping its counts, and
 * replaces the running program through its link. The counters of the
 * layout before ag_tally (per-CPU ag_counters and ag_refusals) are read as
 * they are and stay counted after the upgrade, the new program's on top.
 */
static bool test_upgrade_from_older_pins(void)
{
	struct ag_open_opts o = { .create = true, .max_agents = 16, .max_rules = 16 };
	struct ag_attach_result first, res;
	struct ag_ctx *old = NULL, *ro = NULL, *rw = NULL, *up = NULL;
	struct ag_prog *prog = NULL;
	__u64 before[AG_STAT__MAX], after[AG_STAT__MAX];
	char r[256], grown[PATH_MAX];
	struct ag_agent_update u = { .fields = AG_SET_RATE | AG_SET_BURST, .rate = 1000,
				     .burst = 1000 };
	struct ag_rule rule;
	struct pkt p, q;
	__u32 slot = 0;
	int ncpus;
	bool ok;

	snprintf(r, sizeof(r), "%s/older", root);
	o.pin_root = r;
	ok = ASSERT_OK(veth("agt4a", "agt4b"), "veth") && ASSERT_OK(ag_open(&o, &old), "open") &&
	     ASSERT_OK(ag_attach(old, "agt4a", AG_XDP_NATIVE, &first), "attach") &&
	     ASSERT_OK(ag_agent_set(old, "old1", &u, &slot, NULL), "agent") &&
	     ASSERT_OK(ag_prefix_parse("10.77.0.1", &rule), "prefix") &&
	     ASSERT_OK(ag_rule_add(old, &rule, "old1"), "rule");
	ncpus = old ? ag_num_cpus(old) : 1;
	ag_close(old);
	ok = ok && make_old_pins(r, ncpus) && make_old_counters(r, ncpus, slot);

	o.create = false;
	o.read_only = true;
	ok = ok && ASSERT_OK(ag_open(&o, &ro), "read-only open of older pins") &&
	     old_counts_kept(ro, ncpus) &&
	     old_agent_counts(ro, slot, 5 * (__u64)ncpus, 3 * (__u64)ncpus);
	o.read_only = false;
	ok = ok && ASSERT_OK(ag_open(&o, &rw), "open of older pins") &&
	     ASSERT_EQ(ag_prog_load(rw, &prog), -ENOENT, "no program without ag_frags, ag_tally") &&
	     ASSERT_TRUE(strstr(ag_errmsg(), "older version") != NULL, ag_errmsg());

	o.create = true;
	snprintf(grown, sizeof(grown), "%s/%s_grown", r, AG_MAP_STATS);
	ok = ok && ASSERT_OK(ag_open(&o, &up), "open to create") &&
	     ASSERT_EQ(pinned_entries(r, AG_MAP_FRAGS), AG_FRAGS_MAX, "ag_frags created") &&
	     ASSERT_OK(ag_attach(up, "agt4a", AG_XDP_NATIVE, &res), "attach again") &&
	     ASSERT_TRUE(res.replaced && res.link_id == first.link_id, "replaced through the link") &&
	     ASSERT_EQ(xdp_prog_on("agt4a", NULL), res.prog_id, "kernel runs the new one") &&
	     ASSERT_EQ(pinned_entries(r, AG_MAP_STATS), AG_STAT_SLOTS, "ag_stats grown") &&
	     ASSERT_TRUE(access(grown, F_OK) != 0, "no temporary pin left") &&
	     old_counts_kept(up, ncpus) && old_counts_kept(ro, ncpus) &&
	     ASSERT_EQ(pinned_entries(r, AG_MAP_TALLY), 16, "ag_tally created") &&
	     old_agent_counts(up, slot, 5 * (__u64)ncpus, 3 * (__u64)ncpus);

	/* The grown map counts the reasons the old one had no room for. */
	orphan_frame(&p);
	ok = ok && ASSERT_OK(ag_prog_load(up, &prog), "load") &&
	     ASSERT_OK(ag_stats_get(up, before), "stats");
	if (ok) {
		LIBBPF_OPTS(bpf_test_run_opts, t, .data_in = p.b, .data_size_in = (__u32)p.len);

		ok = ASSERT_OK(bpf_prog_test_run_opts(ag_prog_fd(prog), &t), "run") &&
		     ASSERT_EQ(t.retval, XDP_PASS, "verdict") &&
		     ASSERT_OK(ag_stats_get(up, after), "stats") &&
		     ASSERT_EQ(after[AG_STAT_FRAGMENT_ORPHAN] - before[AG_STAT_FRAGMENT_ORPHAN], 1,
			       "fragment_orphan") &&
		     ASSERT_EQ(after[AG_STAT_FRAGMENT] - before[AG_STAT_FRAGMENT], 1, "fragment");
	}
	/* The new program counts on top of the old layout's counts. */
	pkt_eth(&q, ETH_P_IP);
	pkt_ipv4(&q, "10.77.0.1", NULL, IPPROTO_UDP, NULL);
	pkt_udp(&q, 9);
	pkt_finish(&q);
	if (ok) {
		LIBBPF_OPTS(bpf_test_run_opts, t, .data_in = q.b, .data_size_in = (__u32)q.len);

		ok = ASSERT_OK(bpf_prog_test_run_opts(ag_prog_fd(prog), &t), "run") &&
		     ASSERT_EQ(t.retval, XDP_PASS, "verdict") &&
		     old_agent_counts(up, slot, 5 * (__u64)ncpus + 1, 3 * (__u64)ncpus);
	}
	ag_prog_free(prog);
	if (up)
		ok = ASSERT_OK(ag_detach(up, "agt4a"), "detach") && ok;
	ag_close(up);
	ag_close(rw);
	ag_close(ro);
	sh("ip link del agt4a 2>/dev/null");
	return ok;
}

static const struct {
	const char *name;
	bool (*fn)(void);
} tests[] = {
	{ "native attach through a pinned bpf_link", test_native_attach },
	{ "link list shows device, mode and program", test_link_list },
	{ "real frames over veth are limited (burst 3 of 10)", test_real_frames_limited },
	{ "attach again replaces the program in place, maps kept", test_replace_in_place },
	{ "replace against a stale program is refused", test_stale_replace_refused },
	{ "keep_same keeps this very program, replaces one on other maps", test_keep_same },
	{ "expected program: stale refused, current replaced, no link refused",
	  test_expected_prog },
	{ "detach removes program and pin", test_detach },
	{ "generic mode on request", test_generic_mode },
	{ "auto mode falls back to generic with a warning", test_auto_falls_back_on_lo },
	{ "a foreign XDP program: agentgate goes before it, upgrades keep it, detach puts it back",
	  test_foreign_program },
	{ "chain add/del: a program after agentgate's link", test_chain_after_link },
	{ "device re-created under the same name", test_recreated_device },
	{ "a device name with a dot: encoded pins, listed by its name, replaced, detached",
	  test_dotted_device_name },
	{ "missing or invalid device", test_missing_device },
	{ "a tun device (no Ethernet header) is refused in every mode, nothing left behind",
	  test_tun_refused },
	{ "an ipip tunnel (no Ethernet header) is refused in every mode, nothing left behind",
	  test_ipip_refused },
	{ "pins of the previous version: read as they are, grown and replaced on attach",
	  test_upgrade_from_older_pins },
};

int main(void)
{
	struct ag_open_opts o = { .create = true, .max_agents = 16, .max_rules = 16 };
	size_t n = sizeof(tests) / sizeof(tests[0]), i;

	h_require_root();
	if (unshare(CLONE_NEWNET)) {
		printf("1..0 # SKIP cannot create a network namespace: %s\n", strerror(errno));
		return TEST_SKIP_CODE;
	}
	h_plan((int)n);
	ag_set_log(capture_warning);
	root = testenv_pin_root("attach");
	o.pin_root = root;
	if (!ASSERT_OK(sh("ip link set lo up"), "lo") || !ASSERT_OK(veth("agt0a", "agt0b"), "veth") ||
	    !ASSERT_OK(veth("agt1a", "agt1b"), "veth") ||
	    !ASSERT_OK(veth("agt2a", "agt2b"), "veth") || !ASSERT_OK(ag_open(&o, &ctx), "open"))
		return 1;
	for (i = 0; i < n; i++) {
		bool ok;

		skip_why = NULL;
		ok = tests[i].fn();
		if (ok && skip_why)
			h_skip(tests[i].name, skip_why);
		else
			h_result(tests[i].name, ok);
	}
	ag_close(ctx);
	return h_exit();
}
