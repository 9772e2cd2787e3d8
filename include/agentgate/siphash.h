/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * SipHash-1-3 (Aumasson and Bernstein): a keyed hash for tables whose keys
 * come from users (agent names), so that nobody without the key can pick
 * keys that collide. Userspace only.
 */
#ifndef AGENTGATE_SIPHASH_H
#define AGENTGATE_SIPHASH_H

#include <stddef.h>
#include <string.h>
#include <linux/types.h>

#define AG_SIP_ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define AG_SIPROUND                                                                             \
	do {                                                                                    \
		v0 += v1; v1 = AG_SIP_ROTL(v1, 13); v1 ^= v0; v0 = AG_SIP_ROTL(v0, 32);         \
		v2 += v3; v3 = AG_SIP_ROTL(v3, 16); v3 ^= v2;                                   \
		v0 += v3; v3 = AG_SIP_ROTL(v3, 21); v3 ^= v0;                                   \
		v2 += v1; v1 = AG_SIP_ROTL(v1, 17); v1 ^= v2; v2 = AG_SIP_ROTL(v2, 32);         \
	} while (0)

static inline __u64 ag_siphash13(__u64 k0, __u64 k1, const void *data, size_t len)
{
	const unsigned char *p = data;
	__u64 v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
	__u64 v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
	__u64 b = (__u64)len << 56, m;
	size_t i, tail = len & 7;

	for (i = 0; i + 8 <= len; i += 8) {
		memcpy(&m, p + i, 8);
		v3 ^= m;
		AG_SIPROUND;
		v0 ^= m;
	}
	for (m = 0; tail; tail--)
		m |= (__u64)p[i + tail - 1] << (8 * (tail - 1));
	b |= m;
	v3 ^= b;
	AG_SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	AG_SIPROUND;
	AG_SIPROUND;
	AG_SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

#undef AG_SIPROUND
#undef AG_SIP_ROTL

#endif /* AGENTGATE_SIPHASH_H */
