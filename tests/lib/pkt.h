/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Frame builder for BPF_PROG_TEST_RUN fixtures and benchmarks: append
 * headers in order; lengths and checksums that the datapath ignores are left
 * plain. Every field the parser checks can be overridden.
 */
#ifndef AGENTGATE_TEST_PKT_H
#define AGENTGATE_TEST_PKT_H

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>
#include <linux/if_ether.h>
#include <linux/in.h>

#define PKT_MAX 4096

struct pkt {
	uint8_t b[PKT_MAX];
	size_t len;
	size_t l3;       /* offset of the IP header, for length fix-ups */
	int family;      /* 4 or 6 once an IP header was added */
};

static inline void *pkt_put(struct pkt *p, const void *data, size_t n)
{
	void *at = p->b + p->len;

	if (data)
		memcpy(at, data, n);
	else
		memset(at, 0, n);
	p->len += n;
	return at;
}

static inline void pkt_be16(struct pkt *p, uint16_t v)
{
	v = htons(v);
	pkt_put(p, &v, 2);
}

/* Ethernet header; proto is the first EtherType (a TPID when tags follow). */
static inline void pkt_eth(struct pkt *p, uint16_t proto)
{
	static const uint8_t macs[12] = { 2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2 };

	p->len = 0;
	pkt_put(p, macs, 12);
	pkt_be16(p, proto);
}

/* A VLAN tag whose encapsulated EtherType is next_proto. */
static inline void pkt_vlan(struct pkt *p, uint16_t vid, uint16_t next_proto)
{
	pkt_be16(p, vid & 0xfff);
	pkt_be16(p, next_proto);
}

/* A tag with a whole TCI (priority and DEI bits too). */
static inline void pkt_tag(struct pkt *p, uint16_t tci, uint16_t next_proto)
{
	pkt_be16(p, tci);
	pkt_be16(p, next_proto);
}

/* Ethernet and n tags of TCI tci, TPIDs taken in turn from tpids (0-ended),
 * the last one encapsulating proto. */
static inline void pkt_eth_tags(struct pkt *p, const uint16_t *tpids, int n, uint16_t tci,
				uint16_t proto)
{
	int i, k = 0;

	pkt_eth(p, n ? tpids[0] : proto);
	for (i = 0; i < n; i++) {
		uint16_t next;

		k = tpids[k + 1] ? k + 1 : 0;
		next = i == n - 1 ? proto : tpids[k];
		pkt_tag(p, tci, next);
	}
}

struct v4_opts {
	int ihl;          /* 0: 5 + options/4 */
	int tot_len;      /* 0: fixed up by pkt_finish(); >0: as given */
	uint16_t frag;    /* host order: flags (0x2000 = MF) | offset in 8-byte units */
	int version;      /* 0: 4 */
	int options;      /* bytes of IP options (multiple of 4) */
	uint16_t id;      /* identification */
};

static inline void pkt_ipv4(struct pkt *p, const char *src, const char *dst, uint8_t proto,
			    const struct v4_opts *o)
{
	struct v4_opts def = {};
	uint8_t *h;
	int ihl;

	if (!o)
		o = &def;
	ihl = o->ihl ? o->ihl : 5 + o->options / 4;
	p->l3 = p->len;
	p->family = 4;
	h = pkt_put(p, NULL, 20 + o->options);
	h[0] = (uint8_t)(((o->version ? o->version : 4) << 4) | (ihl & 0xf));
	if (o->tot_len > 0) {
		h[2] = (uint8_t)(o->tot_len >> 8);
		h[3] = (uint8_t)o->tot_len;
	} else {
		h[2] = h[3] = 0xff; /* marker: pkt_finish() computes it */
	}
	h[4] = (uint8_t)(o->id >> 8);
	h[5] = (uint8_t)o->id;
	h[6] = (uint8_t)(o->frag >> 8);
	h[7] = (uint8_t)o->frag;
	h[8] = 64;
	h[9] = proto;
	inet_pton(AF_INET, src, h + 12);
	inet_pton(AF_INET, dst ? dst : "192.168.0.1", h + 16);
	if (o->options)
		memset(h + 20, 1, o->options); /* NOPs */
}

static inline void pkt_ipv6(struct pkt *p, const char *src, const char *dst, uint8_t nexthdr)
{
	uint8_t *h;

	p->l3 = p->len;
	p->family = 6;
	h = pkt_put(p, NULL, 40);
	h[0] = 6 << 4;
	h[4] = h[5] = 0xff; /* payload length: pkt_finish() */
	h[6] = nexthdr;
	h[7] = 64;
	inet_pton(AF_INET6, src, h + 8);
	inet_pton(AF_INET6, dst ? dst : "2001:db8:ffff::1", h + 24);
}

/* Generic extension header of (len8 + 1) * 8 bytes (hop-by-hop, routing,
 * destination options). */
static inline void pkt_ext6(struct pkt *p, uint8_t nexthdr, uint8_t len8)
{
	uint8_t *h = pkt_put(p, NULL, (len8 + 1) * 8u);

	h[0] = nexthdr;
	h[1] = len8;
	if (len8 == 0)
		h[2] = 1, h[3] = 4; /* PadN over the rest */
}

/* Authentication header: (len4 + 2) * 4 bytes. */
static inline void pkt_ah6(struct pkt *p, uint8_t nexthdr, uint8_t len4)
{
	uint8_t *h = pkt_put(p, NULL, (len4 + 2) * 4u);

	h[0] = nexthdr;
	h[1] = len4;
}

static inline void pkt_frag6_id(struct pkt *p, uint8_t nexthdr, uint16_t offset8, int more,
				uint32_t id)
{
	uint8_t *h = pkt_put(p, NULL, 8);
	uint16_t fo = (uint16_t)(offset8 << 3) | (more ? 1 : 0);

	h[0] = nexthdr;
	h[2] = (uint8_t)(fo >> 8);
	h[3] = (uint8_t)fo;
	id = htonl(id);
	memcpy(h + 4, &id, 4);
}

static inline void pkt_frag6(struct pkt *p, uint8_t nexthdr, uint16_t offset8, int more)
{
	pkt_frag6_id(p, nexthdr, offset8, more, 1);
}

static inline void pkt_udp(struct pkt *p, uint16_t dport)
{
	pkt_be16(p, 40000);
	pkt_be16(p, dport);
	pkt_be16(p, 8);
	pkt_be16(p, 0);
}

static inline void pkt_tcp(struct pkt *p, uint16_t dport)
{
	uint8_t *h;

	pkt_be16(p, 40000);
	pkt_be16(p, dport);
	h = pkt_put(p, NULL, 16);
	h[8] = 5 << 4; /* data offset */
}

static inline void pkt_payload(struct pkt *p, size_t n)
{
	memset(pkt_put(p, NULL, n), 0xab, n);
}

/* Pad to exactly total bytes (a frame length for bps tests). */
static inline void pkt_pad_to(struct pkt *p, size_t total)
{
	if (total > p->len)
		pkt_payload(p, total - p->len);
}

/* Fill IP length fields left to be computed. */
static inline void pkt_finish(struct pkt *p)
{
	uint8_t *h = p->b + p->l3;
	size_t n;

	if (p->family == 4 && h[2] == 0xff && h[3] == 0xff) {
		n = p->len - p->l3;
		h[2] = (uint8_t)(n >> 8);
		h[3] = (uint8_t)n;
	} else if (p->family == 6 && h[4] == 0xff && h[5] == 0xff) {
		n = p->len - p->l3 - 40;
		h[4] = (uint8_t)(n >> 8);
		h[5] = (uint8_t)n;
	}
}

/* ---- checksums, for frames a kernel is to deliver ---------------------- */

static inline uint32_t pkt_sum(uint32_t sum, const uint8_t *d, size_t n)
{
	size_t i;

	for (i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)(d[i] << 8 | d[i + 1]);
	if (n & 1)
		sum += (uint32_t)(d[n - 1] << 8);
	return sum;
}

static inline uint16_t pkt_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* The IPv4 header checksum of the header at l3. */
static inline void pkt_ipv4_csum(uint8_t *l3)
{
	uint16_t c;

	l3[10] = l3[11] = 0;
	c = pkt_fold(pkt_sum(0, l3, (size_t)(l3[0] & 0xf) * 4));
	l3[10] = (uint8_t)(c >> 8);
	l3[11] = (uint8_t)c;
}

/* The checksum of a UDP datagram (header at udp, len bytes in all) from
 * src to dst (4 or 16 bytes each); never 0, which means "none". */
static inline void pkt_udp_csum(uint8_t *udp, size_t len, const uint8_t *src,
				const uint8_t *dst, size_t alen)
{
	uint8_t tail[4] = { 0, IPPROTO_UDP, (uint8_t)(len >> 8), (uint8_t)len };
	uint32_t sum = 0;
	uint16_t c;

	udp[6] = udp[7] = 0;
	sum = pkt_sum(sum, src, alen);
	sum = pkt_sum(sum, dst, alen);
	sum = pkt_sum(sum, tail, sizeof(tail));
	c = pkt_fold(pkt_sum(sum, udp, len));
	if (!c)
		c = 0xffff;
	udp[6] = (uint8_t)(c >> 8);
	udp[7] = (uint8_t)c;
}

#endif
