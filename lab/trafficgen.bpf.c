// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The traffic generator's frame program, run by BPF_PROG_TEST_RUN in
 * BPF_F_TEST_XDP_LIVE_FRAMES mode by the live engine (tx_live.c): the
 * kernel hands it a flow's template frame again and again and carries out
 * its verdict for real. It writes the flow's next source address into the
 * frame, fixes the checksum the address is part of, and returns XDP_TX,
 * which live-frames mode turns into a transmit out of the ingress interface
 * given to the test run.
 *
 * Frame layout (built by trafficgen.c): Ethernet, IPv4 without options or
 * IPv6 without extension headers, UDP. For IPv6 only the last 32 bits of the
 * source vary. Pages are recycled without being reset, so the program reads
 * the address it replaces from the frame and updates the checksum
 * incrementally (RFC 1624) from whatever is there.
 *
 * Frames whose source MAC is not the device's own are not templates: they
 * are passed untouched (the program is also attached to the device, where it
 * meets received frames; see tx_live.c).
 *
 * trafficgen_probe drops every frame: a live-frames run of it transmits
 * nothing and tells whether the kernel allows live frames at all.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "trafficgen.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile __u8 own_mac[ETH_ALEN] = {}; /* set by trafficgen.c before loading */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TG_MAX_FLOWS);
	__type(key, __u32);
	__type(value, struct tg_flow);
} tg_flows SEC(".maps");

/* Frames generated per flow on each CPU: the index into the source range. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TG_MAX_FLOWS);
	__type(key, __u32);
	__type(value, __u64);
} tg_seq SEC(".maps");

/* One's-complement checksum update for a 32-bit field changing from -> to. */
static __always_inline void csum_replace4(__u16 *sum, __u32 from, __u32 to)
{
	__u32 s = (__u16)~*sum;

	s += (__u16)~from + (__u16)~(from >> 16);
	s += (__u16)to + (__u16)(to >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	*sum = (__u16)~s;
}

static __always_inline int from_template(const struct ethhdr *eth)
{
	int i;

#pragma unroll
	for (i = 0; i < ETH_ALEN; i++)
		if (eth->h_source[i] != own_mac[i])
			return 0;
	return 1;
}

/* The flow's next source address, network order. */
static __always_inline int next_source(__u32 flow, __u8 version, __u32 *addr)
{
	struct tg_flow *f = bpf_map_lookup_elem(&tg_flows, &flow);
	__u64 *seq = bpf_map_lookup_elem(&tg_seq, &flow);

	if (!f || !seq || f->ip_version != version || !f->src_count)
		return -1;
	*addr = bpf_htonl(f->src_first + (__u32)(*seq % f->src_count));
	(*seq)++;
	return 0;
}

SEC("xdp")
int trafficgen_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 addr;

	if ((void *)(eth + 1) > end || !from_template(eth))
		return XDP_PASS;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || next_source(bpf_ntohs(ip->id), 4, &addr))
			return XDP_ABORTED;
		csum_replace4(&ip->check, ip->saddr, addr);
		ip->saddr = addr;
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		struct udphdr *udp = (void *)(ip6 + 1);
		__u32 flow;

		if ((void *)(udp + 1) > end)
			return XDP_ABORTED;
		flow = (__u32)ip6->flow_lbl[1] << 8 | ip6->flow_lbl[2];
		if (next_source(flow, 6, &addr))
			return XDP_ABORTED;
		csum_replace4(&udp->check, ip6->saddr.in6_u.u6_addr32[3], addr);
		if (!udp->check)
			udp->check = 0xffff; /* zero means "no checksum", not allowed over IPv6 */
		ip6->saddr.in6_u.u6_addr32[3] = addr;
	}
	return XDP_TX;
}

SEC("xdp")
int trafficgen_probe(struct xdp_md *ctx)
{
	return XDP_DROP;
}
