/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The test world for tests/bpf/test_xdp.c: agents, their rules, and one
 * frame builder per fixture. Agents get a high rate so classification
 * fixtures never run out of tokens; the LIM and BPS agents are for buckets,
 * the CONN ones for connection openings (kept empty: see f_v4_syn_conn).
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
	A_CONN4,    /* 100.64.0.0/16, conn, burst 1, next token in 1000 s */
	A_CONN6,    /* 3fff:c::/32, the same */
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
	[A_CONN4] = { "conn4", "100.64.0.0/16", 0, 0.001, 1, 2 },
	[A_CONN6] = { "conn6", "3fff:c::/32", 0, 0.001, 1, 2 },
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

/* ---- connection openings cut off by the datagram's end ---------------- */

/* The conn agents run a frame only after an opening (a prelude) took
 * their one token: an opening is then dropped, anything else passes. */
static void f_v4_syn_conn(struct pkt *p)
{
	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "100.64.0.1", NULL, IPPROTO_TCP, NULL);
	pkt_tcp(p, 443);
	p->b[p->len - 7] = 0x02; /* SYN */
	pkt_finish(p);
}

static void f_v6_syn_conn(struct pkt *p)
{
	pkt_eth(p, ETH_P_IPV6);
	pkt_ipv6(p, "3fff:c::1", NULL, IPPROTO_TCP);
	pkt_tcp(p, 443);
	p->b[p->len - 7] = 0x02;
	pkt_finish(p);
}

/* The first 8 bytes of an L4 header (ports 40000 -> 443), as a tiny first
 * fragment carries them: too few to show TCP's flags, a QUIC header, an
 * SCTP chunk or a DCCP type. */
static void l4_first8(struct pkt *p, uint8_t proto)
{
	uint8_t *h = pkt_put(p, NULL, 8);

	h[0] = 0x9c, h[1] = 0x40, h[2] = 0x01, h[3] = 0xbb;
	if (proto == IPPROTO_UDP)
		h[4] = 0x04, h[5] = 0xb8; /* a 1208-byte datagram, like an Initial's */
}

/*
 * Bytes after the datagram (Ethernet padding up to 60 bytes, a trailer):
 * the kernel trims them. Laid out as what follows 8 bytes of each L4
 * header would be in a packet that opens nothing: TCP flags ACK, a QUIC
 * short header, an SCTP DATA chunk, a DCCP-Response.
 */
static void trailer(struct pkt *p, uint8_t proto, size_t to)
{
	uint8_t *t;
	size_t n = to > p->len ? to - p->len : 0;

	t = pkt_put(p, NULL, n);
	if (n < 6)
		return;
	if (proto == IPPROTO_TCP)
		t[4] = 0x50, t[5] = 0x10;
	else if (proto == IPPROTO_UDP)
		t[0] = 0x40;
	else if (proto == IPPROTO_DCCP)
		t[0] = 0x02;
}

/* An IPv4 first fragment of 8 L4 bytes (total length 28) padded to 60. */
static void v4_tiny_first_padded(struct pkt *p, uint8_t proto)
{
	struct v4_opts o = { .frag = 0x2000, .id = 21 };

	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "100.64.0.1", NULL, proto, &o);
	l4_first8(p, proto);
	pkt_finish(p);
	trailer(p, proto, 60);
}

static void f_v4_tiny_tcp_padded(struct pkt *p)
{
	v4_tiny_first_padded(p, IPPROTO_TCP);
}

static void f_v4_tiny_udp_padded(struct pkt *p)
{
	v4_tiny_first_padded(p, IPPROTO_UDP);
}

static void f_v4_tiny_sctp_padded(struct pkt *p)
{
	v4_tiny_first_padded(p, IPPROTO_SCTP);
}

static void f_v4_tiny_dccp_padded(struct pkt *p)
{
	v4_tiny_first_padded(p, IPPROTO_DCCP);
}

/* Its next fragment (offset 8): the rest of the TCP header, SYN set. */
static void f_v4_tiny_tcp_second(struct pkt *p)
{
	struct v4_opts o = { .frag = 1, .id = 21 };
	uint8_t *t;

	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "100.64.0.1", NULL, IPPROTO_TCP, &o);
	t = pkt_put(p, NULL, 12);
	t[4] = 0x50, t[5] = 0x02;
	pkt_finish(p);
	pkt_put(p, NULL, 60 - p->len);
}

/* An IPv6 first fragment of 8 L4 bytes (payload length 16) with an 8-byte
 * trailer after it. */
static void v6_tiny_first_trailer(struct pkt *p, uint8_t proto)
{
	pkt_eth(p, ETH_P_IPV6);
	pkt_ipv6(p, "3fff:c::1", NULL, IPPROTO_FRAGMENT);
	pkt_frag6_id(p, proto, 0, 1, 21);
	l4_first8(p, proto);
	pkt_finish(p);
	trailer(p, proto, p->len + 8);
}

static void f_v6_tiny_tcp_trailer(struct pkt *p)
{
	v6_tiny_first_trailer(p, IPPROTO_TCP);
}

static void f_v6_tiny_udp_trailer(struct pkt *p)
{
	v6_tiny_first_trailer(p, IPPROTO_UDP);
}

static void f_v6_tiny_sctp_trailer(struct pkt *p)
{
	v6_tiny_first_trailer(p, IPPROTO_SCTP);
}

/* A whole UDP datagram of 8 bytes, the padding after it laid out like a
 * QUIC v1 Initial: the datagram holds no QUIC header, so no opening. */
static void f_v4_udp8_padded_initial(struct pkt *p)
{
	uint8_t *t;

	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "100.64.0.1", NULL, IPPROTO_UDP, NULL);
	pkt_udp(p, 443);
	pkt_finish(p);
	t = pkt_put(p, NULL, 60 - p->len);
	t[0] = 0xc0, t[4] = 0x01;
}

/* An IPv4 first fragment holding a whole TCP header (an ACK), padded:
 * read as ever, no opening. */
static void f_v4_frag_ack_padded(struct pkt *p)
{
	struct v4_opts o = { .frag = 0x2000, .id = 22 };

	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "100.64.0.1", NULL, IPPROTO_TCP, &o);
	pkt_tcp(p, 443);
	p->b[p->len - 7] = 0x10; /* ACK */
	pkt_finish(p);
	pkt_put(p, NULL, 60 - p->len);
}

/* ---- IPv4 authentication header ---------------------------------------- */

/* src -> AH (24 bytes) -> TCP dport. */
static void v4_ah(struct pkt *p, const char *src, uint16_t dport)
{
	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, src, NULL, IPPROTO_AH, NULL);
	pkt_ah6(p, IPPROTO_TCP, 4); /* AH's layout is the same in IPv4 */
	pkt_tcp(p, dport);
	pkt_finish(p);
}

static void f_v4_ah_web443(struct pkt *p)
{
	v4_ah(p, "10.1.9.9", 443);
}

static void f_v4_ah_all8443(struct pkt *p)
{
	v4_ah(p, "172.16.0.1", 8443);
}

/* The AH's length runs past the frame. */
static void f_v4_ah_truncated(struct pkt *p)
{
	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_AH, NULL);
	pkt_ah6(p, IPPROTO_TCP, 4);
	p->len -= 12;
	pkt_finish(p);
}

/* Cut before its length. */
static void f_v4_ah_len_cut(struct pkt *p)
{
	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_AH, NULL);
	*(uint8_t *)pkt_put(p, NULL, 1) = IPPROTO_TCP;
	pkt_finish(p);
}

/* ---- link headers the kernel opens to deliver IP ----------------------- */

static void inner_v4(struct pkt *p)
{
	pkt_ipv4(p, "10.1.9.9", NULL, IPPROTO_TCP, NULL);
	pkt_tcp(p, 443);
	pkt_finish(p);
}

/* PPPoE session header (version 1, type 1, code 0, session 1), then the
 * PPP protocol; the length is filled in by pppoe_len(). */
static size_t pppoe(struct pkt *p, uint16_t ppp_proto)
{
	size_t at;

	pkt_eth(p, ETH_P_PPP_SES);
	pkt_be16(p, 0x1100);
	pkt_be16(p, 1);
	at = p->len;
	pkt_be16(p, 0);
	pkt_be16(p, ppp_proto);
	return at;
}

static void pppoe_len(struct pkt *p, size_t at)
{
	size_t n = p->len - at - 2;

	p->b[at] = (uint8_t)(n >> 8);
	p->b[at + 1] = (uint8_t)n;
}

static void f_pppoe_v4(struct pkt *p)
{
	size_t at = pppoe(p, 0x0021);

	inner_v4(p);
	pppoe_len(p, at);
}

static void f_pppoe_v6(struct pkt *p)
{
	size_t at = pppoe(p, 0x0057);

	pkt_ipv6(p, "2001:db8:1::5", NULL, IPPROTO_TCP);
	pkt_tcp(p, 443);
	pkt_finish(p);
	pppoe_len(p, at);
}

/* LCP echo request: PPP's own control, a link protocol. */
static void f_pppoe_lcp(struct pkt *p)
{
	size_t at = pppoe(p, 0xc021);
	uint8_t *h = pkt_put(p, NULL, 8);

	h[0] = 9, h[1] = 1, h[3] = 8;
	pppoe_len(p, at);
}

/* One MPLS label stack entry (label 100, bottom of stack, TTL 64). */
static void mpls(struct pkt *p, uint16_t ethertype)
{
	static const uint8_t lse[4] = { 0x00, 0x06, 0x41, 0x40 };

	pkt_eth(p, ethertype);
	pkt_put(p, lse, 4);
	inner_v4(p);
}

static void f_mpls_uc(struct pkt *p)
{
	mpls(p, ETH_P_MPLS_UC);
}

static void f_mpls_mc(struct pkt *p)
{
	mpls(p, ETH_P_MPLS_MC);
}

static void f_vlan_mpls(struct pkt *p)
{
	static const uint8_t lse[4] = { 0x00, 0x06, 0x41, 0x40 };

	pkt_eth(p, ETH_P_8021Q);
	pkt_vlan(p, 100, ETH_P_MPLS_UC);
	pkt_put(p, lse, 4);
	inner_v4(p);
}

/* MACsec, integrity only: SecTAG with an SCI, the EtherType, IPv4, ICV. */
static void f_macsec(struct pkt *p)
{
	uint8_t *h;

	pkt_eth(p, ETH_P_MACSEC);
	h = pkt_put(p, NULL, 14);
	h[0] = 0x20; /* TCI: SC present, not encrypted, AN 0 */
	h[5] = 1;    /* packet number 1 */
	pkt_be16(p, ETH_P_IP);
	inner_v4(p);
	pkt_put(p, NULL, 16);
}

#endif
