/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing for the agentgate datapath: Ethernet, up to AG_VLAN_MAX
 * VLAN tags (802.1Q, 802.1ad), IPv4 (options honoured, one authentication
 * header walked), IPv6 (up to AG_IPV6_MAX_EXT extension headers), and the
 * L4 destination port of TCP, UDP, UDP-Lite, SCTP and DCCP; PPPoE session,
 * MPLS and MACsec frames are told from link protocols, not opened. Every
 * bounds check fails into a counted reason. The limits are the kernel's
 * own: it strips at most 8 VLAN tags and follows at most 12 extension
 * headers (measured on 6.18: one more and it drops the packet), so
 * whatever the kernel delivers is followed to its source and port.
 *
 * Included once, by agentgate.bpf.c: ag_parse_l3() is a global BPF
 * function, which the verifier checks once on its own rather than once per
 * way of reaching it (per VLAN depth, and per everything after it). The
 * shapes nearly all traffic has are parsed inline first (ag_parse_fast()),
 * so that only the others pay for the call.
 */
#ifndef AGENTGATE_BPF_PARSE_H
#define AGENTGATE_BPF_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "agentgate/abi.h"

#define AG_VLAN_MAX 8
#define AG_IPV6_MAX_EXT 12

enum ag_parse_result {
	AG_PARSE_CARRIER = -4,    /* IP inside a link header the parser does not open
				   * (PPPoE, MPLS, MACsec): the default action */
	AG_PARSE_UNFOLLOWED = -3, /* source unknown, yet the kernel may deliver it: dropped */
	AG_PARSE_MALFORMED = -2,  /* source unknown: pass, reason counted */
	AG_PARSE_NON_IP = -1,     /* ARP, LLDP, ...: pass */
	AG_PARSE_V4 = 4,
	AG_PARSE_V6 = 6,
};

enum ag_frag_kind {
	AG_FRAG_NONE,
	AG_FRAG_FIRST, /* offset 0, more fragments follow: the L4 header is here */
	AG_FRAG_LATER, /* offset > 0: no L4 header */
};

struct ag_flow {
	__be32 saddr4;
	__u8 saddr6[16];
	__be16 dport;
	__u8 has_port;
	__u8 frag;         /* enum ag_frag_kind; fk is then filled in */
	__u8 port_unknown; /* an L4 header the parser could not reach */
	__u8 reason;       /* a stat index worth counting, or AG_STAT__MAX */
	__u16 l4_off;      /* with has_port: the L4 header's offset in the frame */
	struct ag_frag_key fk; /* a fragment's reassembly key */
	__u8 proto;        /* with has_port: the L4 protocol */
	__u8 l3_off;       /* V4/V6: the IP header's offset in the frame, where the
			    * datagram's length is read (is_opening()) */
} __attribute__((aligned(8)));

_Static_assert(AG_STAT__MAX < 256, "a reason fits ag_flow.reason");

struct ag_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

struct ag_ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-octet units << 3 | flags */
	__be32 id;
};

#ifndef IPPROTO_MH
#define IPPROTO_MH 135
#endif
#define AG_IPPROTO_HIP 139
#define AG_IPPROTO_SHIM6 140
#define AG_IPV4_OFFSET_MASK 0x1fff
#define AG_IPV4_MF 0x2000
#define AG_IPV6_OFFSET_MASK 0xfff8
#define AG_IPV6_MF 0x0001
#define AG_L2_MAX (ETH_HLEN + AG_VLAN_MAX * 4)
_Static_assert(AG_L2_MAX < 64, "an IP header's offset fits ag_flow.l3_off, and a 6-bit mask");

static __always_inline int ag_l4_has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE ||
	       proto == IPPROTO_SCTP || proto == IPPROTO_DCCP;
}

/* Read the destination port at l4; sets the reason when it cannot. */
static __always_inline void ag_parse_port(void *data, void *l4, void *data_end, __u8 proto,
					  struct ag_flow *f)
{
	__be16 *ports = l4;

	if (!ag_l4_has_ports(proto)) {
		f->reason = AG_STAT_NO_PORT;
		return;
	}
	if ((void *)(ports + 2) > data_end) {
		f->reason = AG_STAT_L4_TRUNCATED;
		return;
	}
	f->dport = ports[1];
	f->has_port = 1;
	f->l4_off = l4 - data;
	f->proto = proto;
}

/* The key the kernel reassembles IPv4 fragments by. */
static __always_inline void ag_frag_key_v4(struct ag_frag_key *k, const struct iphdr *ip)
{
	__builtin_memcpy(k->saddr, &ip->saddr, 4);
	__builtin_memcpy(k->daddr, &ip->daddr, 4);
	k->id = ip->id;
	k->family = 4;
	k->proto = ip->protocol;
}

/* IPv6 reassembles by source, destination and identification only. */
static __always_inline void ag_frag_key_v6(struct ag_frag_key *k, const struct ipv6hdr *ip6,
					   __be32 id)
{
	__builtin_memcpy(k->saddr, &ip6->saddr, 16);
	__builtin_memcpy(k->daddr, &ip6->daddr, 16);
	k->id = id;
	k->family = 6;
}

static __always_inline int ag_parse_v4(void *data, void *l3, void *data_end, struct ag_flow *f)
{
	struct iphdr *ip = l3;
	__u8 *l4, proto;
	__u32 hlen;

	if ((void *)(ip + 1) > data_end) {
		f->reason = AG_STAT_IPV4_TRUNCATED;
		return AG_PARSE_MALFORMED;
	}
	if (ip->version != 4) {
		f->reason = AG_STAT_IP_BAD_VERSION;
		return AG_PARSE_MALFORMED;
	}
	if (ip->ihl < 5) {
		f->reason = AG_STAT_IPV4_BAD_IHL;
		return AG_PARSE_MALFORMED;
	}
	hlen = ip->ihl * 4;
	if (l3 + hlen > data_end) {
		f->reason = AG_STAT_IPV4_TRUNCATED;
		return AG_PARSE_MALFORMED;
	}
	if (bpf_ntohs(ip->tot_len) < hlen) {
		f->reason = AG_STAT_IPV4_BAD_TOTLEN;
		return AG_PARSE_MALFORMED;
	}
	f->saddr4 = ip->saddr;
	if (ip->frag_off & bpf_htons(AG_IPV4_MF | AG_IPV4_OFFSET_MASK)) {
		ag_frag_key_v4(&f->fk, ip);
		if (ip->frag_off & bpf_htons(AG_IPV4_OFFSET_MASK)) {
			f->frag = AG_FRAG_LATER;
			f->reason = AG_STAT_FRAGMENT; /* no L4 header */
			return AG_PARSE_V4;
		}
		f->frag = AG_FRAG_FIRST;
	}
	l4 = l3 + hlen;
	proto = ip->protocol;
	/* One authentication header is walked, as IPv6's (the kernel
	 * checks it and hands the packet to the protocol it names): cut
	 * off, the port is out of reach and the source prefix charges it. */
	if (proto == IPPROTO_AH) {
		if ((void *)(l4 + 2) > data_end) {
			f->reason = AG_STAT_IPV4_AH_TRUNCATED;
			return AG_PARSE_V4;
		}
		proto = l4[0];
		/* l4[1]: its length in 4-octet units, not counting the first 8 */
		l4 += ((__u32)l4[1] + 2) * 4;
		if ((void *)l4 > data_end) {
			f->reason = AG_STAT_IPV4_AH_TRUNCATED;
			return AG_PARSE_V4;
		}
	}
	ag_parse_port(data, l4, data_end, proto, f);
	return AG_PARSE_V4;
}

/* A fragment header: fragments get their key; an atomic fragment (offset
 * 0, M clear) is a whole packet, whose header the kernel just skips.
 * Returns 1 for a later fragment (nothing more to parse). */
static __always_inline int ag_parse_frag6(const struct ipv6hdr *ip6,
					  const struct ag_ipv6_frag_hdr *fh, struct ag_flow *f)
{
	if (!(fh->frag_off & bpf_htons(AG_IPV6_OFFSET_MASK | AG_IPV6_MF)))
		return 0;
	ag_frag_key_v6(&f->fk, ip6, fh->id);
	if (fh->frag_off & bpf_htons(AG_IPV6_OFFSET_MASK)) {
		f->frag = AG_FRAG_LATER;
		f->reason = AG_STAT_FRAGMENT;
		return 1;
	}
	f->frag = AG_FRAG_FIRST;
	return 0;
}

static __always_inline int ag_parse_v6(void *data, __u32 l3, void *data_end, struct ag_flow *f)
{
	struct ipv6hdr *ip6 = data + l3;
	__u32 off = l3 + sizeof(*ip6);
	__u8 nexthdr;
	int i;

	if ((void *)(ip6 + 1) > data_end) {
		f->reason = AG_STAT_IPV6_TRUNCATED;
		return AG_PARSE_MALFORMED;
	}
	if (ip6->version != 6) {
		f->reason = AG_STAT_IP_BAD_VERSION;
		return AG_PARSE_MALFORMED;
	}
	__builtin_memcpy(f->saddr6, &ip6->saddr, 16);
	nexthdr = ip6->nexthdr;

	/* The position is kept as an offset, not a pointer: the verifier
	 * then sees one state per pass however the headers before it were
	 * sized, instead of one per combination. */
	for (i = 0; i <= AG_IPV6_MAX_EXT; i++) {
		__u8 *hdr;
		__u32 len;

		if (off > 0xffff) /* not reached: bounds the offset for the verifier */
			break;
		hdr = data + off;
		switch (nexthdr) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
		case IPPROTO_MH:
		case AG_IPPROTO_HIP:
		case AG_IPPROTO_SHIM6:
			len = 8;
			break;
		case IPPROTO_AH:
			len = 4;
			break;
		case IPPROTO_FRAGMENT:
			len = 0;
			break;
		default:
			ag_parse_port(data, hdr, data_end, nexthdr, f);
			return AG_PARSE_V6;
		}
		if (i == AG_IPV6_MAX_EXT) {
			/* One more than the kernel follows (it drops these; an
			 * older kernel may not): the port is out of reach. */
			f->reason = AG_STAT_IPV6_EXT_CHAIN;
			f->frag = AG_FRAG_NONE;
			f->port_unknown = 1;
			return AG_PARSE_V6;
		}
		if (len == 0) {
			struct ag_ipv6_frag_hdr *fh = (void *)hdr;

			if ((void *)(fh + 1) > data_end) {
				f->reason = AG_STAT_IPV6_EXT_TRUNCATED;
				return AG_PARSE_V6;
			}
			if (ag_parse_frag6(ip6, fh, f))
				return AG_PARSE_V6;
			nexthdr = fh->nexthdr;
			off += sizeof(*fh);
			continue;
		}
		if ((void *)(hdr + 2) > data_end) {
			f->reason = AG_STAT_IPV6_EXT_TRUNCATED;
			return AG_PARSE_V6;
		}
		/* hdr[1]: length in 8-octet units not counting the first 8
		 * (AH: 4-octet units not counting the first 8). */
		len = len == 8 ? ((__u32)hdr[1] + 1) * 8 : ((__u32)hdr[1] + 2) * 4;
		nexthdr = hdr[0];
		off += len;
		if (data + off > data_end) {
			f->reason = AG_STAT_IPV6_EXT_TRUNCATED;
			return AG_PARSE_V6;
		}
	}
	f->reason = AG_STAT_IPV6_EXT_TRUNCATED; /* not reached */
	return AG_PARSE_V6;
}

/*
 * IPv4 or IPv6 at offset l3 of the frame, proto its EtherType. Returns
 * AG_PARSE_V4/V6 with the source (and the port when reachable) in *f, or
 * MALFORMED/NON_IP. f->reason is set when something worth counting was
 * seen; for a fragment f->frag says which kind and f->fk holds its key.
 */
__noinline int ag_parse_l3(struct xdp_md *ctx, __u32 l3, __u32 proto, struct ag_flow *f)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (!f)
		return AG_PARSE_MALFORMED;
	if (l3 > AG_L2_MAX) /* not reached: tells the verifier the bound */
		return AG_PARSE_MALFORMED;
	f->l3_off = l3;
	if (proto == bpf_htons(ETH_P_IP))
		return ag_parse_v4(data, data + l3, data_end, f);
	if (proto == bpf_htons(ETH_P_IPV6))
		return ag_parse_v6(data, l3, data_end, f);
	return AG_PARSE_NON_IP;
}

/*
 * The shapes nearly all traffic has, parsed inline: at most one VLAN tag,
 * then IPv4 without options and not a fragment, or IPv6 straight to the L4
 * header, with the ports in the frame. Returns 0 for anything else. Only
 * the fields such a packet needs are written (fk is left alone).
 */
static __always_inline int ag_parse_fast(struct xdp_md *ctx, struct ag_flow *f)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l3 = eth + 1;
	__be16 proto;

	if (l3 > data_end)
		return 0;
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct ag_vlan_hdr *vh = l3;

		if ((void *)(vh + 1) > data_end)
			return 0;
		proto = vh->encap_proto;
		l3 = vh + 1;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		__be16 *ports = (void *)(ip + 1);

		if ((void *)(ports + 2) > data_end || *(__u8 *)ip != 0x45 ||
		    bpf_ntohs(ip->tot_len) < sizeof(*ip) ||
		    (ip->frag_off & bpf_htons(AG_IPV4_MF | AG_IPV4_OFFSET_MASK)) ||
		    !ag_l4_has_ports(ip->protocol))
			return 0;
		f->saddr4 = ip->saddr;
		f->dport = ports[1];
		f->proto = ip->protocol;
		f->l4_off = (void *)ports - data;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		__be16 *ports = (void *)(ip6 + 1);

		if ((void *)(ports + 2) > data_end || ip6->version != 6 ||
		    !ag_l4_has_ports(ip6->nexthdr))
			return 0;
		__builtin_memcpy(f->saddr6, &ip6->saddr, 16);
		f->dport = ports[1];
		f->proto = ip6->nexthdr;
		f->l4_off = (void *)ports - data;
	} else {
		return 0;
	}
	f->l3_off = l3 - data;
	f->has_port = 1;
	f->frag = AG_FRAG_NONE;
	f->port_unknown = 0;
	f->reason = AG_STAT__MAX;
	return proto == bpf_htons(ETH_P_IP) ? AG_PARSE_V4 : AG_PARSE_V6;
}

/*
 * A frame that is neither IPv4 nor IPv6 at offset l3 (proto its EtherType).
 * Link protocols (ARP, LLDP, EAPOL, PPPoE discovery, ...) are NON_IP. A
 * link header the kernel opens to deliver the IP packet inside when the
 * host terminates it, PPPoE session, MPLS or MACsec, is a CARRIER: its
 * source is out of the parser's reach, so it gets the default action like
 * any packet no rule claims. Of a PPPoE session, only the PPP protocols of
 * network-layer datagrams (below 0x8000, or one byte long when compressed:
 * IPv4, IPv6, compressed TCP/IP, compressed datagrams, ...) carry IP; its
 * link and network control (LCP, IPCP, PAP, CHAP, ...) is a link protocol.
 */
static __always_inline int ag_parse_link(struct xdp_md *ctx, __u32 l3, __be16 proto,
					 struct ag_flow *f)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (proto == bpf_htons(ETH_P_PPP_SES)) {
		__u8 *ppp = data + l3 + 6; /* after the PPPoE header */

		/* Cut before the PPP protocol: counted as one that carries IP. */
		if ((void *)(ppp + 1) <= data_end && ppp[0] >= 0x80 && !(ppp[0] & 1))
			return AG_PARSE_NON_IP;
	} else if (proto != bpf_htons(ETH_P_MPLS_UC) && proto != bpf_htons(ETH_P_MPLS_MC) &&
		   proto != bpf_htons(ETH_P_MACSEC)) {
		return AG_PARSE_NON_IP;
	}
	f->reason = AG_STAT_IP_CARRIER;
	return AG_PARSE_CARRIER;
}

/*
 * Parse the frame (see ag_parse_l3() for what comes back). VLAN tags of any
 * ID are walked: the kernel strips a priority tag (ID 0) and delivers the
 * packet, and another ID reaches a VLAN device or is dropped. 0x9100 and
 * the like are no tags to the kernel: not IP, and not delivered.
 */
static __always_inline int ag_parse(struct xdp_md *ctx, struct ag_flow *f)
{
	void *data, *data_end;
	struct ethhdr *eth;
	__u32 l3 = sizeof(*eth);
	__be16 proto;
	int i, family;

	family = ag_parse_fast(ctx, f);
	if (family)
		return family;

	__builtin_memset(f, 0, sizeof(*f));
	f->reason = AG_STAT__MAX;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end) {
		f->reason = AG_STAT_ETH_TRUNCATED;
		return AG_PARSE_MALFORMED;
	}
	proto = eth->h_proto;

#pragma unroll
	for (i = 0; i < AG_VLAN_MAX; i++) {
		struct ag_vlan_hdr *vh = data + l3;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end) {
			f->reason = AG_STAT_VLAN_TRUNCATED;
			return AG_PARSE_MALFORMED;
		}
		proto = vh->encap_proto;
		l3 += sizeof(*vh);
	}
	/* More tags than the kernel strips: it drops these today, but the
	 * source is out of reach, and a kernel that stripped more would
	 * deliver it unlimited. */
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		f->reason = AG_STAT_VLAN_TOO_DEEP;
		return AG_PARSE_UNFOLLOWED;
	}
	if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6))
		return ag_parse_link(ctx, l3, proto, f);
	return ag_parse_l3(ctx, l3, proto, f);
}

#endif /* AGENTGATE_BPF_PARSE_H */
