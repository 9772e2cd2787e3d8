/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * ag-trafficgen's own parts: the flows and options (trafficgen.c), and the
 * transmit engines that put a flow's frames on the wire: live frames
 * (tx_live.c, the kernel generates them with BPF_PROG_TEST_RUN) and
 * AF_PACKET (tx_packet.c, ordinary sockets, no BPF at all).
 */
#ifndef AGENTGATE_TG_H
#define AGENTGATE_TG_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "trafficgen.h"

#define TG_ETH_HLEN 14
#define TG_IP4_HLEN 20
#define TG_IP6_HLEN 40
#define TG_UDP_HLEN 8
#define TG_FRAME_MAX 1514 /* a veth refuses frames over MTU (1500) + Ethernet header */

enum tg_engine_kind { TG_ENGINE_AUTO, TG_ENGINE_LIVE, TG_ENGINE_PACKET };

struct tg_flow_opts {
	int family;               /* AF_INET or AF_INET6 */
	uint8_t src_base[16];     /* first source address, network order */
	uint32_t src_count;
	const char *src_arg;
	const char *dst_arg;
	uint8_t dst[16];
	uint16_t sport, dport;
	unsigned int size;        /* frame length, bytes */
	uint64_t count;           /* frames in all, 0: no limit */
	double rate;              /* frames per second in all, 0: as fast as possible */
	uint8_t frame[TG_FRAME_MAX]; /* the template: the first source, checksums valid */
	uint32_t frame_len;
	uint16_t frame_csum;      /* the checksum the source is part of, as in the template */
	uint32_t src_first;       /* the template's source: the low 32 bits, host order */
};

struct tg_opts {
	const char *dev;
	int ifindex;
	uint8_t dst_mac[6];
	double duration;          /* seconds, 0: until every count is sent or a signal */
	unsigned int threads;
	enum tg_engine_kind engine;
	bool json;
	struct tg_flow_opts flows[TG_MAX_FLOWS];
	unsigned int nflows;
};

/* One thread's share of one flow. */
struct tg_share {
	double rate;              /* 0: unpaced */
	uint64_t quota;           /* 0: no limit */
	uint64_t sent;            /* frames the device accepted */
	uint64_t refused;         /* transmit attempts the device turned away (retried) */
	bool done;
};

struct tg_worker {
	pthread_t tid;
	bool started;
	unsigned int index;
	const struct tg_opts *o;
	const struct tg_engine *eng;
	void *eng_state;          /* what the engine keeps per thread */
	int cpu;
	double t_start, t_end;    /* monotonic seconds: the thread's sending span */
	struct tg_share share[TG_MAX_FLOWS];
	int err;                  /* negative errno of the first failure */
	const char *err_what;     /* what failed */
};

/*
 * A transmit engine. open() prepares what every thread shares and may
 * refuse (-errno, the reason written to why); thread_open() and send() run
 * in the sending thread. send() transmits up to n frames of flow f, taking
 * their sources from the share's sent on (source i of a share is sent i), and returns how many the device
 * accepted (0..n; it may send fewer when its batch is smaller), or -errno
 * when transmitting failed for good. Frames the device turned away for now
 * (a full queue) are added to share->refused, not sent: the caller tries
 * again.
 */
struct tg_engine {
	const char *name;
	int (*open)(const struct tg_opts *o, char *why, size_t whylen);
	int (*thread_open)(struct tg_worker *w);
	int64_t (*send)(struct tg_worker *w, unsigned int f, uint32_t n);
	void (*thread_close)(struct tg_worker *w);
	void (*close)(void);
};

extern const struct tg_engine tg_engine_live;
extern const struct tg_engine tg_engine_packet;

/* Set by SIGINT and SIGTERM: every thread stops. */
extern volatile sig_atomic_t tg_stop;

/* The low 32 bits of an address of the family, host order. */
uint32_t tg_low32(int family, const uint8_t a[16]);
/* Rewrites a copy of the flow's template for source addr (host order). */
void tg_frame_set_source(const struct tg_flow_opts *fl, uint8_t *frame, uint32_t addr);

/* Source number i of a flow (host order, the address's last 32 bits). */
static inline uint32_t tg_source(const struct tg_flow_opts *fl, uint64_t i)
{
	return fl->src_first + (uint32_t)(i % fl->src_count);
}

#endif
