/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing for the agentgate datapath: Ethernet, up to two VLAN tags
 * (802.1Q, 802.1ad), IPv4 (options honoured), IPv6 (up to AG_IPV6_MAX_EXT
 * extension headers), and the L4 destination port of TCP, UDP, UDP-Lite,
 * SCTP and DCCP. Every bounds check fails into a counted reason.
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

#define AG_VLAN_MAX 2
#define AG_IPV6_MAX_EXT 6

enum ag_parse_result {
	AG_PARSE_MALFORMED = -2, /* source unknown: pass, reason counted */
	AG_PARSE_NON_IP = -1,    /* ARP, LLDP, ...: pass */
	AG_PARSE_V4 = 4,
	AG_PARSE_V6 = 6,
};

struct ag_flow {
	__be32 saddr4;
	__u8 saddr6[16];
	__be16 dport;
	__u8 has_port;
	__u8 pad;
};

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

static __always_inline int ag_l4_has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE ||
	       proto == IPPROTO_SCTP || proto == IPPROTO_DCCP;
}

/* Read the destination port at l4; sets *reason when it cannot. */
static __always_inline void ag_parse_port(void *l4, void *data_end, __u8 proto,
					  struct ag_flow *f, __u32 *reason)
{
	__be16 *ports = l4;

	if (!ag_l4_has_ports(proto)) {
		*reason = AG_STAT_NO_PORT;
		return;
	}
	if ((void *)(ports + 2) > data_end) {
		*reason = AG_STAT_L4_TRUNCATED;
		return;
	}
	f->dport = ports[1];
	f->has_port = 1;
}

static __always_inline int ag_parse_v4(void *l3, void *data_end, struct ag_flow *f,
				       __u32 *reason)
{
	struct iphdr *ip = l3;
	__u32 hlen;

	if ((void *)(ip + 1) > data_end) {
		*reason = AG_STAT_IPV4_TRUNCATED;
		return AG_PARSE_MALFORMED;
	}
	if (ip->version != 4) {
		*reason = AG_STAT_IP_BAD_VERSION;
		return AG_PARSE_MALFORMED;
	}
	if (ip->ihl < 5) {
		*reason = AG_STAT_IPV4_BAD_IHL;
		return AG_PARSE_MALFORMED;
	}
	hlen = ip->ihl * 4;
	if (l3 + hlen > data_end) {
		*reason = AG_STAT_IPV4_TRUNCATED;
		return AG_PARSE_MALFORMED;
	}
	if (bpf_ntohs(ip->tot_len) < hlen) {
		*reason = AG_STAT_IPV4_BAD_TOTLEN;
		return AG_PARSE_MALFORMED;
	}
	f->saddr4 = ip->saddr;
	if (ip->frag_off & bpf_htons(AG_IPV4_OFFSET_MASK)) {
		*reason = AG_STAT_FRAGMENT; /* non-first fragment: no L4 header */
		return AG_PARSE_V4;
	}
	ag_parse_port(l3 + hlen, data_end, ip->protocol, f, reason);
	return AG_PARSE_V4;
}

static __always_inline int ag_parse_v6(void *l3, void *data_end, struct ag_flow *f,
				       __u32 *reason)
{
	struct ipv6hdr *ip6 = l3;
	void *cur = l3 + sizeof(*ip6);
	__u8 nexthdr;
	int i;

	if ((void *)(ip6 + 1) > data_end) {
		*reason = AG_STAT_IPV6_TRUNCATED;
		return AG_PARSE_MALFORMED;
	}
	if (ip6->version != 6) {
		*reason = AG_STAT_IP_BAD_VERSION;
		return AG_PARSE_MALFORMED;
	}
	__builtin_memcpy(f->saddr6, &ip6->saddr, 16);
	nexthdr = ip6->nexthdr;

#pragma unroll
	for (i = 0; i <= AG_IPV6_MAX_EXT; i++) {
		__u8 *hdr = cur;
		__u32 len;

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
			ag_parse_port(cur, data_end, nexthdr, f, reason);
			return AG_PARSE_V6;
		}
		if (i == AG_IPV6_MAX_EXT) {
			*reason = AG_STAT_IPV6_EXT_CHAIN; /* one more than we walk */
			return AG_PARSE_V6;
		}
		if (len == 0) {
			struct ag_ipv6_frag_hdr *fh = cur;

			if ((void *)(fh + 1) > data_end) {
				*reason = AG_STAT_IPV6_EXT_TRUNCATED;
				return AG_PARSE_V6;
			}
			if (fh->frag_off & bpf_htons(0xfff8)) {
				*reason = AG_STAT_FRAGMENT;
				return AG_PARSE_V6;
			}
			nexthdr = fh->nexthdr;
			cur += sizeof(*fh);
			continue;
		}
		if ((void *)(hdr + 2) > data_end) {
			*reason = AG_STAT_IPV6_EXT_TRUNCATED;
			return AG_PARSE_V6;
		}
		/* hdr[1]: length in 8-octet units not counting the first 8
		 * (AH: 4-octet units not counting the first 8). */
		len = len == 8 ? ((__u32)hdr[1] + 1) * 8 : ((__u32)hdr[1] + 2) * 4;
		nexthdr = hdr[0];
		cur += len;
		if (cur > data_end) {
			*reason = AG_STAT_IPV6_EXT_TRUNCATED;
			return AG_PARSE_V6;
		}
	}
	return AG_PARSE_V6; /* not reached: the loop returns on its last pass */
}

/*
 * Parse the frame. Returns AG_PARSE_V4/V6 with the source (and the port when
 * reachable) in *f, or NON_IP/MALFORMED. *reason is set to a stat index when
 * something worth counting was seen, otherwise left alone.
 */
static __always_inline int ag_parse(void *data, void *data_end, struct ag_flow *f,
				    __u32 *reason)
{
	struct ethhdr *eth = data;
	void *cur = data + sizeof(*eth);
	__be16 proto;
	int i;

	if (cur > data_end) {
		*reason = AG_STAT_ETH_TRUNCATED;
		return AG_PARSE_MALFORMED;
	}
	proto = eth->h_proto;

#pragma unroll
	for (i = 0; i < AG_VLAN_MAX; i++) {
		struct ag_vlan_hdr *vh = cur;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end) {
			*reason = AG_STAT_VLAN_TRUNCATED;
			return AG_PARSE_MALFORMED;
		}
		proto = vh->encap_proto;
		cur = vh + 1;
	}
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		*reason = AG_STAT_VLAN_TOO_DEEP;
		return AG_PARSE_MALFORMED;
	}
	if (proto == bpf_htons(ETH_P_IP))
		return ag_parse_v4(cur, data_end, f, reason);
	if (proto == bpf_htons(ETH_P_IPV6))
		return ag_parse_v6(cur, data_end, f, reason);
	return AG_PARSE_NON_IP;
}

#endif /* AGENTGATE_BPF_PARSE_H */
