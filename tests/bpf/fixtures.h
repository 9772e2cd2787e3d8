/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The test world for tests/bpf/test_xdp.c: agents, their rules, and one
 * frame builder per fixture. Agents get a high rate so classification
 * fixtures never run out of tokens; the LIM and BPS agents are for buckets.
 */
#ifndef AGENTGATE_TEST_FIXTURES_H
#define AGENTGATE_TEST_FIXTURES_H

#include "pkt.h"

enum agent_id {
	A_NET10,    /* 10.0.0.0/8                */
	A_NET10_1,  /* 10.1.0.0/16               */
	A_WEB443,   /* 10.1.0.0/16 port 443      */
	A_WIDE443,  /* 10.0.0.0/8 port 443       */
	A_HOST,     /* 10.1.2.3/32               */
	A_HOST80,   /* 10.1.2.4/32 port 80       */
	A_V6NET,    /* 2001:db8::/32             */
	A_V6WEB,    /* 2001:db8:1::/48 port 443  */
	A_V6HOST,   /* 2001:db8::1/128           */
	A_V6DNS,    /* 2001:db8::2/128 port 53   */
	A_LIM,      /* 192.0.2.0/24, pps         */
	A_BPS,      /* 198.51.100.0/24, bps      */
	A_ALL,      /* 0.0.0.0/0 port 8443       */
	A_V6P9000,  /* 3fff:bee::/64 port 9000: no wildcard rule covers it */
	A__COUNT,
	A_NONE = -1,
};

struct agent_def {
	const char *name;
	const char *prefix;
	int port;
	double rate;
	unsigned long long burst;
	int unit;
};

static const struct agent_def agent_defs[A__COUNT] = {
	[A_NET10] = { "net10", "10.0.0.0/8", 0, 1e9, 1000000, 0 },
	[A_NET10_1] = { "net10-1", "10.1.0.0/16", 0, 1e9, 1000000, 0 },
	[A_WEB443] = { "web443", "10.1.0.0/16", 443, 1e9, 1000000, 0 },
	[A_WIDE443] = { "wide443", "10.0.0.0/8", 443, 1e9, 1000000, 0 },
	[A_HOST] = { "host", "10.1.2.3", 0, 1e9, 1000000, 0 },
	[A_HOST80] = { "host80", "10.1.2.4/32", 80, 1e9, 1000000, 0 },
	[A_V6NET] = { "v6net", "2001:db8::/32", 0, 1e9, 1000000, 0 },
	[A_V6WEB] = { "v6web", "2001:db8:1::/48", 443, 1e9, 1000000, 0 },
	[A_V6HOST] = { "v6host", "2001:db8::1", 0, 1e9, 1000000, 0 },
	[A_V6DNS] = { "v6dns", "2001:db8::2/128", 53, 1e9, 1000000, 0 },
	[A_LIM] = { "lim", "192.0.2.0/24", 0, 1, 3, 0 },
	[A_BPS] = { "bps", "198.51.100.0/24", 0, 1, 1000, 1 },
	[A_ALL] = { "all8443", "0.0.0.0/0", 8443, 1e9, 1000000, 0 },
	[A_V6P9000] = { "v6p9000", "3fff:bee::/64", 9000, 1e9, 1000000, 0 },
};

/* ---- frame builders -------------------------------------------------- */

#define V4(name, src, proto, l4)                                                         \
	static void name(struct pkt *p)                                                  \
	{                                                                                \
		pkt_eth(p, ETH_P_IP);                                                    \
		pkt_ipv4(p, src, NULL, proto, NULL);                                     \
		l4;                                                                      \
		pkt_finish(p);                                                           \
	}

V4(f_v4_udp_net10, "10.3.0.1", IPPROTO_UDP, pkt_udp(p, 53))
V4(f_v4_tcp_net10_1, "10.1.9.9", IPPROTO_TCP, pkt_tcp(p, 22))
V4(f_v4_tcp_web443, "10.1.9.9", IPPROTO_TCP, pkt_tcp(p, 443))
V4(f_v4_tcp_wide443, "10.2.0.1", IPPROTO_TCP, pkt_tcp(p, 443))
V4(f_v4_udp_host443, "10.1.2.3", IPPROTO_UDP, pkt_udp(p, 443))
V4(f_v4_tcp_host80, "10.1.2.4", IPPROTO_TCP, pkt_tcp(p, 80))
V4(f_v4_tcp_host80_443, "10.1.2.4", IPPROTO_TCP, pkt_tcp(p, 443))
V4(f_v4_tcp_host80_22, "10.1.2.4", IPPROTO_TCP, pkt_tcp(p, 22))
V4(f_v4_icmp_net10_1, "10.1.9.9", IPPROTO_ICMP, pkt_payload(p, 8))
V4(f_v4_icmp_net10, "10.2.0.1", IPPROTO_ICMP, pkt_payload(p, 8))
V4(f_v4_sctp_web443, "10.1.9.9", IPPROTO_SCTP, (pkt_udp(p, 443), pkt_payload(p, 4)))
V4(f_v4_udplite_web443, "10.1.9.9", IPPROTO_UDPLITE, pkt_udp(p, 443))
V4(f_v4_unclassified, "172.16.0.1", IPPROTO_UDP, pkt_udp(p, 53))
V4(f_v4_all8443, "172.16.0.1", IPPROTO_TCP, pkt_tcp(p, 8443))
V4(f_v4_l4_truncated, "10.1.9.9", IPPROTO_UDP, pkt_payload(p, 2))
V4(f_v4_lim, "192.0.2.7", IPPROTO_UDP, pkt_udp(p, 9))

static void f_v4_options(struct pkt *p)
{
	struct v4_opts o = { .options = 4 };

	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_UDP, &o);
	pkt_udp(p, 443);
	pkt_finish(p);
}

static void f_v4_max_options(struct pkt *p)
{
	struct v4_opts o = { .options = 40 };

	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_TCP, &o);
	pkt_tcp(p, 443);
	pkt_finish(p);
}

static void f_v4_first_frag(struct pkt *p)
{
	struct v4_opts o = { .frag = 0x2000 }; /* MF, offset 0 */

	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_UDP, &o);
	pkt_udp(p, 443);
	pkt_payload(p, 32);
	pkt_finish(p);
}

static void f_v4_later_frag(struct pkt *p)
{
	/* Offset 5 (40 bytes): the payload bytes look like a port 443 header,
	 * which the parser must not read. */
	struct v4_opts o = { .frag = 5 };

	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_UDP, &o);
	pkt_udp(p, 443);
	pkt_finish(p);
}

static void f_v4_dont_frag(struct pkt *p)
{
	struct v4_opts o = { .frag = 0x4000 }; /* DF only: not a fragment */

	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_UDP, &o);
	pkt_udp(p, 443);
	pkt_finish(p);
}

static void f_v4_bad_ihl(struct pkt *p)
{
	struct v4_opts o = { .ihl = 4 };

	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_UDP, &o);
	pkt_udp(p, 443);
	pkt_finish(p);
}

static void f_v4_ihl_beyond_frame(struct pkt *p)
{
	struct v4_opts o = { .ihl = 15 }; /* 60-byte header, 28 bytes present */

	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_UDP, &o);
	pkt_udp(p, 443);
	pkt_finish(p);
}

static void f_v4_short_totlen(struct pkt *p)
{
	struct v4_opts o = { .tot_len = 19 };

	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_UDP, &o);
	pkt_udp(p, 443);
}

static void f_v4_bad_version(struct pkt *p)
{
	struct v4_opts o = { .version = 6 };

	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_UDP, &o);
	pkt_udp(p, 443);
	pkt_finish(p);
}

static void f_v4_header_cut(struct pkt *p)
{
	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_UDP, NULL);
	p->len -= 4; /* 16 of 20 header bytes */
}

static void f_eth_only_ipv4(struct pkt *p)
{
	pkt_eth(p, ETH_P_IP);
}

static void f_arp(struct pkt *p)
{
	pkt_eth(p, ETH_P_ARP);
	pkt_payload(p, 28);
}

/* VLAN */
static void f_vlan_q_v4(struct pkt *p)
{
	pkt_eth(p, ETH_P_8021Q);
	pkt_vlan(p, 100, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_TCP, NULL);
	pkt_tcp(p, 443);
	pkt_finish(p);
}

static void f_vlan_qinq_v4(struct pkt *p)
{
	pkt_eth(p, ETH_P_8021AD);
	pkt_vlan(p, 10, ETH_P_8021Q);
	pkt_vlan(p, 20, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_TCP, NULL);
	pkt_tcp(p, 443);
	pkt_finish(p);
}

static void f_vlan_q_v6(struct pkt *p)
{
	pkt_eth(p, ETH_P_8021Q);
	pkt_vlan(p, 7, ETH_P_IPV6);
	pkt_ipv6(p, "2001:db8:1::5", NULL, IPPROTO_TCP);
	pkt_tcp(p, 443);
	pkt_finish(p);
}

static void f_vlan_adqq_v4(struct pkt *p)
{
	pkt_eth(p, ETH_P_8021AD);
	pkt_vlan(p, 1, ETH_P_8021Q);
	pkt_vlan(p, 2, ETH_P_8021Q);
	pkt_vlan(p, 3, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_TCP, NULL);
	pkt_tcp(p, 443);
	pkt_finish(p);
}

static void f_vlan_truncated(struct pkt *p)
{
	pkt_eth(p, ETH_P_8021Q);
	pkt_be16(p, 100); /* TCI without the encapsulated EtherType */
}

static void f_vlan_second_truncated(struct pkt *p)
{
	pkt_eth(p, ETH_P_8021AD);
	pkt_vlan(p, 10, ETH_P_8021Q);
	pkt_be16(p, 20);
}

/* IPv6 */
#define V6(name, src, nh, rest)                                                          \
	static void name(struct pkt *p)                                                  \
	{                                                                                \
		pkt_eth(p, ETH_P_IPV6);                                                  \
		pkt_ipv6(p, src, NULL, nh);                                              \
		rest;                                                                    \
		pkt_finish(p);                                                           \
	}

V6(f_v6_udp_net, "2001:db8:5::1", IPPROTO_UDP, pkt_udp(p, 53))
V6(f_v6_tcp_web, "2001:db8:1::5", IPPROTO_TCP, pkt_tcp(p, 443))
V6(f_v6_tcp_web_80, "2001:db8:1::5", IPPROTO_TCP, pkt_tcp(p, 80))
V6(f_v6_host, "2001:db8::1", IPPROTO_TCP, pkt_tcp(p, 443))
V6(f_v6_dns, "2001:db8::2", IPPROTO_UDP, pkt_udp(p, 53))
V6(f_v6_dns_other_port, "2001:db8::2", IPPROTO_UDP, pkt_udp(p, 54))
V6(f_v6_unclassified, "fe80::1", IPPROTO_UDP, pkt_udp(p, 53))
V6(f_v6_hop_dst, "2001:db8:1::5", IPPROTO_HOPOPTS,
   (pkt_ext6(p, IPPROTO_DSTOPTS, 0), pkt_ext6(p, IPPROTO_TCP, 1), pkt_tcp(p, 443)))
V6(f_v6_rt_frag0, "2001:db8:1::5", IPPROTO_ROUTING,
   (pkt_ext6(p, IPPROTO_FRAGMENT, 2), pkt_frag6(p, IPPROTO_UDP, 0, 1), pkt_udp(p, 443)))
V6(f_v6_ah, "2001:db8:1::5", IPPROTO_AH, (pkt_ah6(p, IPPROTO_TCP, 4), pkt_tcp(p, 443)))
V6(f_v6_later_frag, "2001:db8:1::5", IPPROTO_FRAGMENT,
   (pkt_frag6(p, IPPROTO_UDP, 8, 0), pkt_udp(p, 443)))
V6(f_v6_esp, "2001:db8:1::5", IPPROTO_ESP, pkt_payload(p, 24))
V6(f_v6_ext_truncated, "2001:db8:1::5", IPPROTO_HOPOPTS,
   (pkt_ext6(p, IPPROTO_TCP, 3), p->len -= 16))
V6(f_v6_ext_len_cut, "2001:db8:1::5", IPPROTO_DSTOPTS, pkt_payload(p, 1))
V6(f_v6_l4_truncated, "2001:db8:1::5", IPPROTO_TCP, pkt_payload(p, 3))

/* n extension headers (alternating hop-by-hop style options) then TCP 443. */
static void v6_chain(struct pkt *p, int n)
{
	int i;

	pkt_eth(p, ETH_P_IPV6);
	pkt_ipv6(p, "2001:db8:1::5", NULL, IPPROTO_DSTOPTS);
	for (i = 0; i < n; i++)
		pkt_ext6(p, i == n - 1 ? IPPROTO_TCP : IPPROTO_DSTOPTS, 0);
	pkt_tcp(p, 443);
	pkt_finish(p);
}

static void f_v6_chain6(struct pkt *p)
{
	v6_chain(p, 6);
}

static void f_v6_chain7(struct pkt *p)
{
	v6_chain(p, 7);
}

static void f_v6_truncated(struct pkt *p)
{
	pkt_eth(p, ETH_P_IPV6);
	pkt_ipv6(p, "2001:db8:1::5", NULL, IPPROTO_TCP);
	p->len -= 10;
}

static void f_v6_bad_version(struct pkt *p)
{
	pkt_eth(p, ETH_P_IPV6);
	pkt_ipv6(p, "2001:db8:1::5", NULL, IPPROTO_TCP);
	p->b[p->l3] = 4 << 4;
	pkt_tcp(p, 443);
	pkt_finish(p);
}

/* ---- VLAN stacks the kernel strips, and deeper ones ------------------- */

static const uint16_t tp_q[] = { ETH_P_8021Q, 0 };
static const uint16_t tp_mix[] = { ETH_P_8021AD, ETH_P_8021Q, 0 };

/* n tags of TCI tci (TPIDs from tpids in turn) over 10.1.9.9 -> TCP 443. */
static void vlan_v4(struct pkt *p, const uint16_t *tpids, int n, uint16_t tci)
{
	pkt_eth_tags(p, tpids, n, tci, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_TCP, NULL);
	pkt_tcp(p, 443);
	pkt_finish(p);
}

static void vlan_v6(struct pkt *p, const uint16_t *tpids, int n, uint16_t tci)
{
	pkt_eth_tags(p, tpids, n, tci, ETH_P_IPV6);
	pkt_ipv6(p, "2001:db8:1::5", NULL, IPPROTO_TCP);
	pkt_tcp(p, 443);
	pkt_finish(p);
}

static void f_vlan_prio3_v4(struct pkt *p)
{
	vlan_v4(p, tp_q, 3, 0);
}

static void f_vlan_prio3_v6(struct pkt *p)
{
	vlan_v6(p, tp_q, 3, 0);
}

static void f_vlan_pcp3_v4(struct pkt *p)
{
	vlan_v4(p, tp_mix, 3, 0xf000); /* priority 7, DEI, VLAN ID 0 */
}

static void f_vlan_prio8_v4(struct pkt *p)
{
	vlan_v4(p, tp_mix, 8, 0);
}

static void f_vlan_prio8_v6(struct pkt *p)
{
	vlan_v6(p, tp_mix, 8, 0);
}

static void f_vlan_prio9_v4(struct pkt *p)
{
	vlan_v4(p, tp_q, 9, 0);
}

static void f_vlan_prio9_v6(struct pkt *p)
{
	vlan_v6(p, tp_mix, 9, 0);
}

/* 0x9100 is no VLAN tag to the kernel: outermost, or inside a priority tag. */
static void f_vlan_9100(struct pkt *p)
{
	pkt_eth(p, 0x9100);
	pkt_tag(p, 0, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_TCP, NULL);
	pkt_tcp(p, 443);
	pkt_finish(p);
}

static void f_vlan_q_9100(struct pkt *p)
{
	pkt_eth(p, ETH_P_8021Q);
	pkt_tag(p, 0, 0x9100);
	pkt_tag(p, 0, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_TCP, NULL);
	pkt_tcp(p, 443);
	pkt_finish(p);
}

/* ---- IPv6 extension chains up to the kernel's 12, and beyond ---------- */

/* n destination options headers from src, then UDP to dport. */
static void v6_dst_chain(struct pkt *p, const char *src, int n, uint16_t dport)
{
	int i;

	pkt_eth(p, ETH_P_IPV6);
	pkt_ipv6(p, src, NULL, n ? IPPROTO_DSTOPTS : IPPROTO_UDP);
	for (i = 0; i < n; i++)
		pkt_ext6(p, i == n - 1 ? IPPROTO_UDP : IPPROTO_DSTOPTS, 0);
	pkt_udp(p, dport);
	pkt_finish(p);
}

static void f_v6_chain12(struct pkt *p)
{
	v6_chain(p, 12);
}

static void f_v6_chain13(struct pkt *p)
{
	v6_chain(p, 13);
}

static void f_v6_chain12_p9000(struct pkt *p)
{
	v6_dst_chain(p, "3fff:bee::5", 12, 9000);
}

static void f_v6_chain13_p9000(struct pkt *p)
{
	v6_dst_chain(p, "3fff:bee::5", 13, 9000);
}

/* Every kind the parser walks, an atomic fragment among them: hop-by-hop,
 * destination options, routing, AH, fragment (offset 0, M clear), mobility,
 * HIP, shim6, then TCP. */
static void f_v6_mixed_chain(struct pkt *p)
{
	pkt_eth(p, ETH_P_IPV6);
	pkt_ipv6(p, "2001:db8:1::5", NULL, IPPROTO_HOPOPTS);
	pkt_ext6(p, IPPROTO_DSTOPTS, 0);
	pkt_ext6(p, IPPROTO_ROUTING, 1);
	pkt_ext6(p, IPPROTO_AH, 0);
	pkt_ah6(p, IPPROTO_FRAGMENT, 4);
	pkt_frag6_id(p, 135, 0, 0, 77);
	pkt_ext6(p, 139, 0);
	pkt_ext6(p, 140, 0);
	pkt_ext6(p, IPPROTO_TCP, 0);
	pkt_tcp(p, 443);
	pkt_finish(p);
}

static void f_v6_atomic_frag(struct pkt *p)
{
	pkt_eth(p, ETH_P_IPV6);
	pkt_ipv6(p, "2001:db8:1::5", NULL, IPPROTO_FRAGMENT);
	pkt_frag6_id(p, IPPROTO_UDP, 0, 0, 5);
	pkt_udp(p, 443);
	pkt_finish(p);
}

/* ---- fragments --------------------------------------------------------- */

/* An IPv4 fragment: offset in 8-byte units, a first one carries UDP dport. */
static void v4_frag(struct pkt *p, const char *src, const char *dst, uint8_t proto,
		    uint16_t id, uint16_t offset8, int more, uint16_t dport)
{
	struct v4_opts o = { .frag = (uint16_t)((more ? 0x2000 : 0) | offset8), .id = id };

	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, src, dst, proto, &o);
	if (offset8 == 0)
		pkt_udp(p, dport);
	pkt_payload(p, 24);
	pkt_finish(p);
}

static void f_v4_first_id9(struct pkt *p)
{
	v4_frag(p, "10.1.9.9", NULL, IPPROTO_UDP, 9, 0, 1, 443);
}

static void f_v4_later_id9(struct pkt *p)
{
	v4_frag(p, "10.1.9.9", NULL, IPPROTO_UDP, 9, 4, 1, 0);
}

static void f_v4_first_id8(struct pkt *p)
{
	v4_frag(p, "10.1.9.9", NULL, IPPROTO_UDP, 8, 0, 1, 443);
}

static void f_v4_first_id9_dst2(struct pkt *p)
{
	v4_frag(p, "10.1.9.9", "192.168.0.2", IPPROTO_UDP, 9, 0, 1, 443);
}

static void f_v4_first_id9_tcp(struct pkt *p)
{
	v4_frag(p, "10.1.9.9", NULL, IPPROTO_TCP, 9, 0, 1, 443);
}

/* 172.16.0.1: only the 0.0.0.0/0 port 8443 rule covers it. */
static void f_v4_first_8443(struct pkt *p)
{
	v4_frag(p, "172.16.0.1", NULL, IPPROTO_UDP, 9, 0, 1, 8443);
}

static void f_v4_first_53(struct pkt *p)
{
	v4_frag(p, "172.16.0.1", NULL, IPPROTO_UDP, 9, 0, 1, 53);
}

static void f_v4_later_172(struct pkt *p)
{
	v4_frag(p, "172.16.0.1", NULL, IPPROTO_UDP, 9, 4, 0, 0);
}

/* A first fragment with 2 bytes of UDP: the kernel discards the datagram
 * (a first fragment under 8 bytes), the port is out of reach. */
static void f_v4_tiny_first(struct pkt *p)
{
	struct v4_opts o = { .frag = 0x2000, .id = 9 };

	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_UDP, &o);
	pkt_be16(p, 40000);
	pkt_finish(p);
}

/* IPv6 fragments of identification id from src: a first one carries UDP
 * dport, optionally behind a hop-by-hop and a destination options header
 * (and one more after the fragment header). */
static void v6_frag(struct pkt *p, const char *src, uint8_t nexthdr, uint32_t id,
		    uint16_t offset8, int more, uint16_t dport, int in_chain)
{
	pkt_eth(p, ETH_P_IPV6);
	pkt_ipv6(p, src, NULL, in_chain ? IPPROTO_HOPOPTS : IPPROTO_FRAGMENT);
	if (in_chain) {
		pkt_ext6(p, IPPROTO_DSTOPTS, 0);
		pkt_ext6(p, IPPROTO_FRAGMENT, 0);
	}
	pkt_frag6_id(p, in_chain ? IPPROTO_DSTOPTS : nexthdr, offset8, more, id);
	if (offset8 == 0) {
		if (in_chain)
			pkt_ext6(p, nexthdr, 0);
		pkt_udp(p, dport);
	}
	pkt_payload(p, 24);
	pkt_finish(p);
}

static void f_v6_first_id3(struct pkt *p)
{
	v6_frag(p, "2001:db8:1::5", IPPROTO_UDP, 3, 0, 1, 443, 0);
}

static void f_v6_later_id3(struct pkt *p)
{
	v6_frag(p, "2001:db8:1::5", IPPROTO_UDP, 3, 4, 0, 0, 0);
}

/* IPv6 reassembles without the next header: a later fragment claiming
 * another one is still of the same datagram. */
static void f_v6_later_id3_tcp(struct pkt *p)
{
	v6_frag(p, "2001:db8:1::5", IPPROTO_TCP, 3, 4, 0, 0, 0);
}

static void f_v6_first_id3_chain(struct pkt *p)
{
	v6_frag(p, "2001:db8:1::5", IPPROTO_UDP, 3, 0, 1, 443, 1);
}

static void f_v6_later_id3_chain(struct pkt *p)
{
	v6_frag(p, "2001:db8:1::5", IPPROTO_UDP, 3, 4, 0, 0, 1);
}

static void f_v6_first_p9000(struct pkt *p)
{
	v6_frag(p, "3fff:bee::5", IPPROTO_UDP, 3, 0, 1, 9000, 0);
}

static void f_v6_later_p9000(struct pkt *p)
{
	v6_frag(p, "3fff:bee::5", IPPROTO_UDP, 3, 4, 0, 0, 0);
}

/* A first fragment's header followed by a later one's (another datagram
 * nested in it): the later one decides. */
static void f_v6_nested_frag(struct pkt *p)
{
	pkt_eth(p, ETH_P_IPV6);
	pkt_ipv6(p, "2001:db8:1::5", NULL, IPPROTO_FRAGMENT);
	pkt_frag6_id(p, IPPROTO_FRAGMENT, 0, 1, 3);
	pkt_frag6_id(p, IPPROTO_UDP, 4, 0, 4);
	pkt_payload(p, 24);
	pkt_finish(p);
}

#endif
