/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Shared by the traffic generator and its frame program. */
#ifndef AGENTGATE_TRAFFICGEN_H
#define AGENTGATE_TRAFFICGEN_H

#include <linux/types.h>

#define TG_MAX_FLOWS 64

/*
 * One flow: the source range its frames take in turn. The template frame
 * carries its flow's index in a header field the program leaves alone: the
 * IPv4 identification or the low 16 bits of the IPv6 flow label.
 */
struct tg_flow {
	__u32 src_first; /* host order: first address (IPv6: its last 32 bits) */
	__u32 src_count; /* addresses in the range, >= 1 */
	__u8 ip_version; /* 4 or 6 */
	__u8 pad[7];
};
_Static_assert(sizeof(struct tg_flow) == 16, "tg_flow layout");

#endif
