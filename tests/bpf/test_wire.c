// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Real frames through the attached program, counted where the kernel
 * delivers them. The test process unshares a network namespace (the
 * outside) and makes a second one (the host) whose eth0, one end of a veth
 * pair, runs agentgate in native and then in generic mode. Frames are
 * written with AF_PACKET into the outer end; the host's UDP sockets on port
 * 9000 count what its stack delivered, and its IP counters what entered
 * reassembly. Both namespaces belong to this process alone and vanish with
 * it, whatever way it ends; the pins live under its private pin root.
 *
 * Per shape (VLAN priority tags, IPv6 extension chains, fragments): a
 * control source with an unlimited agent shows whether the kernel delivers
 * the shape at all, then a source whose agent has rate 100/s and burst 100
 * sends 1000 frames at once, and what reaches the socket must stay within
 * burst + rate * t (t from the bucket's reset to the end of the count).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <linux/ipv6.h>

#include "agentgate.h"
#include "harness.h"
#include "pkt.h"
#include "testenv.h"

#define RATE 100
#define BURST 100
#define FLOOD 1000   /* frames (or datagrams) from the limited source per case */
#define CONTROL 50   /* from the unlimited source */
#define PORT 9000

#define LIM4 "192.0.2.7"
#define CTL4 "203.0.113.7"
#define LIM6 "2001:db8:bee::7"
#define CTL6 "2001:db8:c0::7"
#define DST4 "10.99.0.1"
#define DST6 "2001:db8:99::1"

static struct ag_ctx *ctx;
static int outer_ns = -1, host_ns = -1;
static int tx = -1, rx4 = -1, rx6 = -1;
static unsigned char host_mac[6];
static __u32 slot_lim4, slot_lim6, slot_ctl4, slot_ctl6;
static __u32 next_id = 1;

static int sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd) == 0 ? 0 : -1;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts))
		;
}

static bool in_host(bool host)
{
	return setns(host ? host_ns : outer_ns, CLONE_NEWNET) == 0;
}

/* ---- frames ------------------------------------------------------------ */

struct l2 {
	int tags;            /* VLAN tags before IP */
	const uint16_t *tpids; /* taken in turn, 0-ended */
	uint16_t tci;
	uint16_t inner_tpid; /* nonzero: one extra tag of this TPID innermost */
};

static const uint16_t tp_q[] = { ETH_P_8021Q, 0 };
static const uint16_t tp_mix[] = { ETH_P_8021AD, ETH_P_8021Q, 0 };

static void put_l2(struct pkt *p, const struct l2 *l, uint16_t proto)
{
	if (l && l->inner_tpid) {
		pkt_eth_tags(p, l->tpids, l->tags, l->tci, l->inner_tpid);
		pkt_tag(p, l->tci, proto);
	} else if (l && l->tags) {
		pkt_eth_tags(p, l->tpids, l->tags, l->tci, proto);
	} else {
		pkt_eth(p, proto);
	}
	memcpy(p->b, host_mac, 6);
}

static void addr_of(const char *s, uint8_t *out, int family)
{
	inet_pton(family == 4 ? AF_INET : AF_INET6, s, out);
}

/* A UDP datagram's header and data (data_len bytes), checksummed. */
static size_t udp_datagram(uint8_t *buf, int family, const char *src, const char *dst,
			   size_t data_len)
{
	uint8_t s[16], d[16];
	size_t len = 8 + data_len;

	buf[0] = 40000 >> 8, buf[1] = 40000 & 0xff;
	buf[2] = PORT >> 8, buf[3] = PORT & 0xff;
	buf[4] = (uint8_t)(len >> 8), buf[5] = (uint8_t)len;
	memset(buf + 8, 0x5a, data_len);
	addr_of(src, s, family);
	addr_of(dst, d, family);
	pkt_udp_csum(buf, len, s, d, family == 4 ? 4 : 16);
	return len;
}

/* An IPv4 frame carrying bytes [off, off + n) of a datagram. */
static void v4_piece(struct pkt *p, const struct l2 *l, const char *src, uint16_t id,
		     const uint8_t *dg, size_t off, size_t n, int more)
{
	struct v4_opts o = { .id = id,
			     .frag = (uint16_t)((more ? 0x2000 : 0) | (off / 8)) };

	put_l2(p, l, ETH_P_IP);
	pkt_ipv4(p, src, DST4, IPPROTO_UDP, &o);
	pkt_put(p, dg + off, n);
	pkt_finish(p);
	pkt_ipv4_csum(p->b + p->l3);
}

/* IPv6 header, then `ext` destination options headers (after a hop-by-hop
 * one when hbh), a routing header (type 253, no segments left) when rt. */
struct chain6 {
	int hbh, ext, rt;
	int frag;         /* a fragment header after them (atomic unless cutting) */
	int ext_after;    /* destination options headers after the fragment header */
};

static uint8_t chain_first(const struct chain6 *c)
{
	if (c->hbh)
		return IPPROTO_HOPOPTS;
	if (c->ext)
		return IPPROTO_DSTOPTS;
	if (c->rt)
		return IPPROTO_ROUTING;
	return c->frag ? IPPROTO_FRAGMENT : c->ext_after ? IPPROTO_DSTOPTS : IPPROTO_UDP;
}

/* The headers before the fragment header (or before UDP without one). */
static void put_chain_front(struct pkt *p, const struct chain6 *c)
{
	uint8_t after = c->frag ? IPPROTO_FRAGMENT : c->ext_after ? IPPROTO_DSTOPTS : IPPROTO_UDP;
	int i;

	if (c->hbh)
		pkt_ext6(p, c->ext ? IPPROTO_DSTOPTS : c->rt ? IPPROTO_ROUTING : after, 0);
	for (i = 0; i < c->ext; i++)
		pkt_ext6(p, i < c->ext - 1 ? IPPROTO_DSTOPTS : c->rt ? IPPROTO_ROUTING : after, 0);
	if (c->rt) {
		size_t at = p->len;

		pkt_ext6(p, after, 0);
		p->b[at + 2] = 253; /* routing type for experiments */
		p->b[at + 3] = 0;   /* segments left */
	}
}

/* The fragmentable part's headers before UDP. */
static size_t put_after_frag(uint8_t *buf, const struct chain6 *c)
{
	int i;

	for (i = 0; i < c->ext_after; i++) {
		uint8_t *h = buf + 8 * i;

		memset(h, 0, 8);
		h[0] = i < c->ext_after - 1 ? IPPROTO_DSTOPTS : IPPROTO_UDP;
		h[2] = 1, h[3] = 4; /* PadN */
	}
	return 8u * c->ext_after;
}

/* An IPv6 frame: the chain, then bytes [off, off + n) of the fragmentable
 * part (with a fragment header of identification id when cutting). */
static void v6_piece(struct pkt *p, const struct l2 *l, const char *src, const struct chain6 *c,
		     uint32_t id, const uint8_t *part, size_t off, size_t n, int more, int cut)
{
	put_l2(p, l, ETH_P_IPV6);
	pkt_ipv6(p, src, DST6, chain_first(c));
	put_chain_front(p, c);
	if (c->frag)
		pkt_frag6_id(p, c->ext_after ? IPPROTO_DSTOPTS : IPPROTO_UDP,
			     cut ? (uint16_t)(off / 8) : 0, cut && more, cut ? id : 0);
	pkt_put(p, part + off, n);
	pkt_finish(p);
}

/* ---- sockets and counters --------------------------------------------- */

struct delivered {
	int lim, ctl, other;
};

static void drain(struct delivered *d)
{
	struct sockaddr_storage from;
	char buf[2048];
	socklen_t fl;

	for (;;) {
		fl = sizeof(from);
		if (recvfrom(rx4, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fl) < 0)
			break;
		if (((struct sockaddr_in *)&from)->sin_addr.s_addr == inet_addr(LIM4))
			d->lim++;
		else if (((struct sockaddr_in *)&from)->sin_addr.s_addr == inet_addr(CTL4))
			d->ctl++;
		else
			d->other++;
	}
	for (;;) {
		struct in6_addr lim, ctl;

		fl = sizeof(from);
		if (recvfrom(rx6, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fl) < 0)
			break;
		inet_pton(AF_INET6, LIM6, &lim);
		inet_pton(AF_INET6, CTL6, &ctl);
		if (!memcmp(&((struct sockaddr_in6 *)&from)->sin6_addr, &lim, 16))
			d->lim++;
		else if (!memcmp(&((struct sockaddr_in6 *)&from)->sin6_addr, &ctl, 16))
			d->ctl++;
		else
			d->other++;
	}
}

/* The host's "ReasmReqds": fragments that entered its reassembly. */
static long long reasm_reqds(int family)
{
	char line[4096], *tok;
	long long v = -1;
	FILE *f;
	int col = -1, i;

	if (family == 6) {
		f = fopen("/proc/thread-self/net/snmp6", "r");
		while (f && fgets(line, sizeof(line), f))
			if (sscanf(line, "Ip6ReasmReqds %lld", &v) == 1)
				break;
		if (f)
			fclose(f);
		return v;
	}
	f = fopen("/proc/thread-self/net/snmp", "r");
	while (f && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "Ip: ", 4))
			continue;
		for (i = 0, tok = strtok(line, " \n"); tok; tok = strtok(NULL, " \n"), i++) {
			if (col < 0 && !strcmp(tok, "ReasmReqds"))
				col = i;
			else if (col >= 0 && i == col)
				v = atoll(tok);
		}
	}
	if (f)
		fclose(f);
	return v;
}

/* Everything the datapath counted so far, to see when frames stop coming. */
static __u64 datapath_events(void)
{
	__u64 st[AG_STAT__MAX], n = 0;
	struct ag_counters c;
	__u32 slots[] = { slot_lim4, slot_lim6, slot_ctl4, slot_ctl6 };
	size_t i;

	if (!ag_stats_get(ctx, st))
		for (i = 0; i < AG_STAT__MAX; i++)
			n += st[i];
	for (i = 0; i < sizeof(slots) / sizeof(slots[0]); i++)
		if (!ag_counters_get(ctx, slots[i], &c))
			n += c.passed_packets + c.dropped_packets;
	return n;
}

/* Wait until frames stop arriving, counting what was delivered. */
static void settle(struct delivered *d)
{
	__u64 seen = datapath_events(), now;
	struct delivered before;
	int quiet = 0, i;

	for (i = 0; i < 300 && quiet < 5; i++) {
		sleep_ms(10);
		before = *d;
		drain(d);
		now = datapath_events();
		quiet = now == seen && !memcmp(&before, d, sizeof(*d)) ? quiet + 1 : 0;
		seen = now;
	}
}

static int send_frames(const struct pkt *f, int n)
{
	int i, sent = 0;

	for (i = 0; i < n; i++)
		sent += send(tx, f[i].b, f[i].len, 0) == (ssize_t)f[i].len;
	return sent;
}

static bool frags_clear(void)
{
	struct ag_frag_key k;
	char path[PATH_MAX];
	int fd, n = 0;

	snprintf(path, sizeof(path), "%s/%s", ag_pin_root(ctx), AG_MAP_FRAGS);
	fd = bpf_obj_get(path);
	if (fd < 0)
		return false;
	while (!bpf_map_get_next_key(fd, NULL, &k) && n++ < 100000)
		bpf_map_delete_elem(fd, &k);
	close(fd);
	return true;
}

static bool reset_all(void)
{
	return frags_clear() && !ag_bucket_reset(ctx, slot_lim4) &&
	       !ag_bucket_reset(ctx, slot_lim6) && !ag_bucket_reset(ctx, slot_ctl4) &&
	       !ag_bucket_reset(ctx, slot_ctl6);
}

/* ---- shapes ------------------------------------------------------------ */

/* One unit of a shape from src: one frame, or a datagram's fragments.
 * Returns the number of frames written to f. */
typedef int (*build_fn)(struct pkt *f, const char *src, int family);

#define MAX_UNIT 4

static const struct l2 vlan3 = { 3, tp_q, 0, 0 };
static const struct l2 vlan_adqq = { 3, tp_mix, 0, 0 };
static const struct l2 vlan8 = { 8, tp_mix, 0, 0 };
static const struct l2 vlan9 = { 9, tp_q, 0, 0 };
static const struct l2 vlan_pcp = { 3, tp_q, 0xf000, 0 };
static const struct l2 vlan_9100 = { 1, tp_q, 0, 0x9100 };

static int plain(struct pkt *f, const char *src, int family, const struct l2 *l,
		 const struct chain6 *c)
{
	uint8_t dg[64], part[160];
	size_t n = udp_datagram(dg, family, src, family == 4 ? DST4 : DST6, 16), pre;

	if (family == 4) {
		v4_piece(f, l, src, (uint16_t)next_id++, dg, 0, n, 0);
		return 1;
	}
	pre = put_after_frag(part, c);
	memcpy(part + pre, dg, n);
	v6_piece(f, l, src, c, 0, part, 0, pre + n, 0, 0);
	return 1;
}

#define PLAIN(name, l, c)                                                                \
	static int name(struct pkt *f, const char *src, int family)                    \
	{                                                                              \
		static const struct chain6 ch = c;                                     \
		return plain(f, src, family, l, &ch);                                  \
	}

#define NOCHAIN { 0, 0, 0, 0, 0 }
PLAIN(b_vlan3, &vlan3, NOCHAIN)
PLAIN(b_vlan_adqq, &vlan_adqq, NOCHAIN)
PLAIN(b_vlan8, &vlan8, NOCHAIN)
PLAIN(b_vlan9, &vlan9, NOCHAIN)
PLAIN(b_vlan_pcp, &vlan_pcp, NOCHAIN)
PLAIN(b_vlan_9100, &vlan_9100, NOCHAIN)
PLAIN(b_chain7, NULL, ((struct chain6){ 0, 7, 0, 0, 0 }))
PLAIN(b_chain12, NULL, ((struct chain6){ 1, 10, 1, 0, 0 }))
PLAIN(b_chain13, NULL, ((struct chain6){ 0, 13, 0, 0, 0 }))
PLAIN(b_atomic_chain, NULL, ((struct chain6){ 1, 4, 1, 1, 2 }))

/* A datagram in three fragments (16 + 16 + 8 bytes of UDP), optionally with
 * a decoy first fragment to port 53 right after the real one. */
static int frags(struct pkt *f, const char *src, int family, const struct chain6 *c, int decoy)
{
	uint8_t dg[128], part[160];
	uint32_t id = next_id++;
	size_t n, pre = 0;
	int k = 0;

	n = udp_datagram(dg, family, src, family == 4 ? DST4 : DST6, 32);
	if (family == 4) {
		v4_piece(&f[k++], NULL, src, (uint16_t)id, dg, 0, 16, 1);
		if (decoy) {
			uint8_t d[128];

			memcpy(d, dg, n);
			d[3] = 53;
			v4_piece(&f[k++], NULL, src, (uint16_t)id, d, 0, 16, 1);
		}
		v4_piece(&f[k++], NULL, src, (uint16_t)id, dg, 16, 16, 1);
		v4_piece(&f[k++], NULL, src, (uint16_t)id, dg, 32, n - 32, 0);
		return k;
	}
	pre = put_after_frag(part, c);
	memcpy(part + pre, dg, n);
	n += pre;
	v6_piece(&f[k++], NULL, src, c, id, part, 0, pre + 16, 1, 1);
	v6_piece(&f[k++], NULL, src, c, id, part, pre + 16, 16, 1, 1);
	v6_piece(&f[k++], NULL, src, c, id, part, pre + 32, n - pre - 32, 0, 1);
	return k;
}

static int b_frags(struct pkt *f, const char *src, int family)
{
	static const struct chain6 c = { 0, 0, 0, 1, 0 };

	return frags(f, src, family, &c, 0);
}

static int b_frags_in_chain(struct pkt *f, const char *src, int family)
{
	static const struct chain6 c = { 1, 1, 0, 1, 1 };

	return frags(f, src, family, &c, 0);
}

static int b_frags_decoy(struct pkt *f, const char *src, int family)
{
	static const struct chain6 c = { 0, 0, 0, 1, 0 };

	return frags(f, src, family, &c, 1);
}

/* ---- cases ------------------------------------------------------------- */

struct wire_case {
	const char *name;
	build_fn build;
	int family;
	int frames_per_unit;    /* tokens a delivered unit took at least */
	bool kernel_delivers;   /* the control source must get everything through */
	int min_lim;            /* units of the limited source that must get through */
	int default_action;
};

/* Send CONTROL units from the unlimited source, then FLOOD from the
 * limited one, and check what the host delivered. */
static bool run_case(const struct wire_case *wc)
{
	struct pkt *f = calloc((size_t)FLOOD * MAX_UNIT, sizeof(*f));
	struct delivered d = {};
	double t_reset, t_end, bound;
	int n = 0, i, sent;
	bool ok = false;

	if (!ASSERT_TRUE(f != NULL, "memory") ||
	    !ASSERT_OK(ag_config_set_default_action(ctx, wc->default_action), "default action"))
		goto out;
	for (i = 0; i < CONTROL; i++)
		n += wc->build(&f[n], wc->family == 4 ? CTL4 : CTL6, wc->family);
	if (!ASSERT_TRUE(reset_all(), "reset") || !in_host(true))
		goto out;
	drain(&d);
	memset(&d, 0, sizeof(d));
	sent = send_frames(f, n);
	settle(&d);
	if (!ASSERT_EQ(sent, n, "control frames sent"))
		goto out;
	printf("# %s: the kernel delivered %d of %d from the unlimited source\n", wc->name, d.ctl,
	       CONTROL);
	if (wc->kernel_delivers && !ASSERT_EQ(d.ctl, CONTROL, "control delivered"))
		goto out;

	for (n = 0, i = 0; i < FLOOD; i++)
		n += wc->build(&f[n], wc->family == 4 ? LIM4 : LIM6, wc->family);
	memset(&d, 0, sizeof(d));
	t_reset = now_s();
	if (!ASSERT_TRUE(reset_all(), "reset"))
		goto out;
	sent = send_frames(f, n);
	settle(&d);
	t_end = now_s();
	bound = BURST + RATE * (t_end - t_reset);
	printf("# %s: %d of %d units from the limited source delivered (%d frames each); "
	       "burst + rate * t = %.1f tokens (t = %.3f s)\n",
	       wc->name, d.lim, FLOOD, wc->frames_per_unit, bound, t_end - t_reset);
	ok = ASSERT_EQ(sent, n, "frames sent") &&
	     ASSERT_TRUE(bound < FLOOD / 2, "t short enough to tell a bypass") &&
	     ASSERT_LE(d.lim * wc->frames_per_unit, (long long)bound, "within burst + rate * t") &&
	     ASSERT_GE(d.lim, wc->min_lim, "the burst gets through");
out:
	in_host(false);
	ag_config_set_default_action(ctx, AG_ACTION_PASS);
	free(f);
	return ok;
}

static const struct wire_case cases[] = {
	{ "3 priority tags (802.1Q, VLAN ID 0) over ipv4", b_vlan3, 4, 1, true, BURST },
	{ "3 priority tags over ipv6", b_vlan3, 6, 1, true, BURST },
	{ "802.1ad + 2 x 802.1Q priority tags", b_vlan_adqq, 4, 1, true, BURST },
	{ "3 tags with priority and DEI bits, VLAN ID 0", b_vlan_pcp, 4, 1, true, BURST },
	{ "8 priority tags, 802.1ad and 802.1Q mixed", b_vlan8, 4, 1, true, BURST },
	{ "8 priority tags over ipv6", b_vlan8, 6, 1, true, BURST },
	{ "9 priority tags: dropped", b_vlan9, 4, 1, false, 0 },
	{ "a priority tag around 0x9100: not delivered", b_vlan_9100, 4, 1, false, 0 },
	{ "ipv6, 7 destination options headers", b_chain7, 6, 1, true, BURST },
	{ "ipv6, 12 extension headers (hop-by-hop, 10 options, routing)", b_chain12, 6, 1, true,
	  BURST },
	{ "ipv6, 13 extension headers", b_chain13, 6, 1, false, 0 },
	{ "ipv6, 9 headers with an atomic fragment among them", b_atomic_chain, 6, 1, true,
	  BURST },
	{ "ipv4 datagrams in 3 fragments", b_frags, 4, 3, true, BURST / 3 - 1 },
	{ "ipv6 datagrams in 3 fragments", b_frags, 6, 3, true, BURST / 3 - 1 },
	{ "ipv6 fragments behind hop-by-hop and options headers", b_frags_in_chain, 6, 3, true,
	  BURST / 3 - 1 },
	{ "ipv4 fragments with a decoy first fragment to port 53", b_frags_decoy, 4, 3, true,
	  BURST / 4 - 1 },
	{ "ipv4 fragments under the rate, default action drop", b_frags, 4, 3, true,
	  BURST / 3 - 1, AG_ACTION_DROP },
	{ "ipv6 fragments under the rate, default action drop", b_frags, 6, 3, true,
	  BURST / 3 - 1, AG_ACTION_DROP },
};

/* Fragmented datagrams under the agent's rate, default action drop: all of
 * them delivered (their later fragments follow the first to the agent). */
static bool run_under_rate(int family)
{
	struct pkt f[30 * 3];
	struct delivered d = {};
	int n = 0, i;
	bool ok;

	for (i = 0; i < 30; i++)
		n += b_frags(&f[n], family == 4 ? LIM4 : LIM6, family);
	ok = ASSERT_OK(ag_config_set_default_action(ctx, AG_ACTION_DROP), "default drop") &&
	     ASSERT_TRUE(reset_all(), "reset") && in_host(true);
	if (ok) {
		drain(&d);
		memset(&d, 0, sizeof(d));
		ok = ASSERT_EQ(send_frames(f, n), n, "sent");
		settle(&d);
		printf("# %d of 30 datagrams (90 fragments, burst %d) delivered\n", d.lim, BURST);
		ok = ok && ASSERT_EQ(d.lim, 30, "every datagram under the rate delivered");
	}
	in_host(false);
	ag_config_set_default_action(ctx, AG_ACTION_PASS);
	return ok;
}

/*
 * 4000 later fragments of distinct datagrams whose first fragments never
 * come, from the limited port-scoped source: none may reach the host's
 * reassembly beyond what the agent's bucket allows, and a third party's
 * fragmented datagrams still get through afterwards.
 */
static bool run_orphan_flood(int family)
{
	const int flood = 4000;
	struct pkt *f = calloc(flood, sizeof(*f)), g[CONTROL * 3];
	uint8_t part[1200];
	struct delivered d = {};
	long long r0, r1;
	double t0, bound;
	int i, n = 0;
	bool ok = false;

	if (!ASSERT_TRUE(f != NULL, "memory"))
		return false;
	memset(part, 0x5a, sizeof(part));
	for (i = 0; i < flood; i++) {
		static const struct chain6 c = { 0, 0, 0, 1, 0 };
		uint32_t id = next_id++;

		if (family == 4)
			v4_piece(&f[i], NULL, LIM4, (uint16_t)id, part, 8, 1000, 1);
		else
			v6_piece(&f[i], NULL, LIM6, &c, id, part, 8, 1000, 1, 1);
	}
	for (i = 0; i < CONTROL; i++)
		n += b_frags(&g[n], family == 4 ? CTL4 : CTL6, family);
	t0 = now_s();
	if (!ASSERT_TRUE(reset_all(), "reset") || !in_host(true))
		goto out;
	r0 = reasm_reqds(family);
	ok = ASSERT_EQ(send_frames(f, flood), flood, "flood sent");
	settle(&d);
	r1 = reasm_reqds(family);
	bound = BURST + RATE * (now_s() - t0);
	printf("# %lld of %d orphan fragments entered the host's reassembly (bound %.1f)\n",
	       r1 - r0, flood, bound);
	memset(&d, 0, sizeof(d));
	ok = ok && ASSERT_TRUE(r0 >= 0 && r1 >= 0, "reassembly counters") &&
	     ASSERT_LE(r1 - r0, (long long)bound, "orphans into reassembly within the bound") &&
	     ASSERT_EQ(send_frames(g, n), n, "third party sent");
	settle(&d);
	printf("# a third party got %d of %d fragmented datagrams through afterwards\n", d.ctl,
	       CONTROL);
	ok = ok && ASSERT_EQ(d.ctl, CONTROL, "third party delivered");
out:
	in_host(false);
	free(f);
	return ok;
}

static bool run_mode(enum ag_xdp_mode mode, const char *mode_name)
{
	struct ag_attach_result res;
	char name[256];
	size_t i;
	bool ok;

	ok = in_host(true) && ASSERT_OK(ag_attach(ctx, "eth0", mode, &res), "attach") &&
	     ASSERT_EQ(res.mode, mode, "mode");
	in_host(false);
	snprintf(name, sizeof(name), "[%s] attached to the host's eth0", mode_name);
	h_result(name, ok);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(name, sizeof(name), "[%s] %s", mode_name, cases[i].name);
		h_result(name, ok && run_case(&cases[i]));
	}
	snprintf(name, sizeof(name), "[%s] ipv4: 30 fragmented datagrams under the rate, default drop: all delivered", mode_name);
	h_result(name, ok && run_under_rate(4));
	snprintf(name, sizeof(name), "[%s] ipv6: 30 fragmented datagrams under the rate, default drop: all delivered", mode_name);
	h_result(name, ok && run_under_rate(6));
	snprintf(name, sizeof(name), "[%s] ipv4: an orphan-fragment flood stays out of reassembly; a third party gets through", mode_name);
	h_result(name, ok && run_orphan_flood(4));
	snprintf(name, sizeof(name), "[%s] ipv6: an orphan-fragment flood stays out of reassembly; a third party gets through", mode_name);
	h_result(name, ok && run_orphan_flood(6));
	ok = in_host(true);
	ok = ok && ASSERT_OK(ag_detach(ctx, "eth0"), "detach");
	in_host(false);
	return ok;
}

/* ---- setup ------------------------------------------------------------- */

static bool agent(const char *name, const char *prefix, double rate, __u64 burst, __u32 *slot)
{
	struct ag_agent_update u = { .fields = AG_SET_RATE | AG_SET_BURST, .rate = rate,
				     .burst = burst };
	struct ag_rule r;

	return ASSERT_OK(ag_agent_set(ctx, name, &u, slot, NULL), name) &&
	       ASSERT_OK(ag_prefix_parse(prefix, &r), prefix) &&
	       ((r.port = PORT), ASSERT_OK(ag_rule_add(ctx, &r, name), prefix));
}

static int udp_sink(int family)
{
	int fd = socket(family, SOCK_DGRAM, 0), one = 1, size = 4 << 20;
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(PORT) };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(PORT) };

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
	if (family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (family == AF_INET ? bind(fd, (struct sockaddr *)&a4, sizeof(a4)) :
				bind(fd, (struct sockaddr *)&a6, sizeof(a6))) {
		close(fd);
		return -1;
	}
	return fd;
}

static bool setup_host(void)
{
	struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = 0 };
	struct ifreq ifr = {};
	int fd;

	if (sh("ip link set lo up && ip link add agw0 type veth peer name eth0 && "
	       "ip link set eth0 netns /proc/%d/fd/%d && ip link set agw0 up",
	       (int)getpid(), host_ns))
		return false;
	if (!in_host(true))
		return false;
	/* Small reassembly memory, so that a flood fills it quickly. */
	if (sh("ip link set lo up && ip link set eth0 up && ip addr add " DST4 "/24 dev eth0 && "
	       "ip -6 addr add " DST6 "/64 dev eth0 nodad && "
	       "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.eth0.rp_filter=0 "
	       "net.ipv4.ipfrag_low_thresh=196608 net.ipv4.ipfrag_high_thresh=262144 "
	       "net.ipv6.ip6frag_low_thresh=196608 net.ipv6.ip6frag_high_thresh=262144 && "
	       "ip route add 192.0.2.0/24 dev eth0 && ip route add 203.0.113.0/24 dev eth0"))
		return false;
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "eth0");
	if (fd < 0 || ioctl(fd, SIOCGIFHWADDR, &ifr))
		return false;
	close(fd);
	memcpy(host_mac, ifr.ifr_hwaddr.sa_data, 6);
	rx4 = udp_sink(AF_INET);
	rx6 = udp_sink(AF_INET6);
	if (rx4 < 0 || rx6 < 0 || !in_host(false))
		return false;
	ll.sll_ifindex = (int)if_nametoindex("agw0");
	tx = socket(AF_PACKET, SOCK_RAW, 0);
	return tx >= 0 && bind(tx, (struct sockaddr *)&ll, sizeof(ll)) == 0;
}

int main(void)
{
	struct ag_open_opts o = { .create = true, .max_agents = 16, .max_rules = 16 };
	size_t per_mode = sizeof(cases) / sizeof(cases[0]) + 5;
	bool ok;

	h_require_root();
	if (unshare(CLONE_NEWNET)) {
		printf("1..0 # SKIP cannot create a network namespace: %s\n", strerror(errno));
		return TEST_SKIP_CODE;
	}
	outer_ns = open("/proc/thread-self/ns/net", O_RDONLY);
	if (outer_ns < 0 || unshare(CLONE_NEWNET) ||
	    (host_ns = open("/proc/thread-self/ns/net", O_RDONLY)) < 0 || !in_host(false)) {
		printf("1..0 # SKIP cannot make the host's namespace: %s\n", strerror(errno));
		return TEST_SKIP_CODE;
	}
	h_plan((int)(2 * per_mode + 1));
	o.pin_root = testenv_pin_root("wire");
	ok = ASSERT_OK(ag_open(&o, &ctx), "open") && setup_host() &&
	     agent("lim4", "192.0.2.0/24", RATE, BURST, &slot_lim4) &&
	     agent("lim6", "2001:db8:bee::/64", RATE, BURST, &slot_lim6) &&
	     agent("ctl4", "203.0.113.0/24", 1e9, 1000000, &slot_ctl4) &&
	     agent("ctl6", "2001:db8:c0::/64", 1e9, 1000000, &slot_ctl6);
	h_result("a host namespace behind a veth, port-scoped agents at rate 100 burst 100", ok);
	if (!ok) {
		fprintf(stderr, "setup failed: %s\n", ag_errmsg());
		ag_close(ctx);
		return 1;
	}
	run_mode(AG_XDP_NATIVE, "native");
	run_mode(AG_XDP_GENERIC, "generic");
	ag_close(ctx);
	return h_exit();
}
