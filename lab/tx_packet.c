// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The AF_PACKET engine: ordinary sockets, no BPF, so it runs where the
 * kernel refuses live frames. Each thread has its own packet socket bound to
 * --dev with protocol 0 (it transmits and never receives), the qdisc
 * bypassed (PACKET_QDISC_BYPASS: the frame goes straight to the driver, as
 * pktgen's do), and per flow a batch of copies of the flow's template. A
 * send rewrites each copy's source (the address word and the checksum that
 * covers it, nothing else) and hands the batch to one sendmmsg(2).
 *
 * A device whose queue is full turns frames away (ENOBUFS; on a veth: its
 * peer's ring, 256 frames when the peer runs XDP, is full): those attempts
 * are counted as refused and the frames are sent again later, so a --count
 * arrives in full and a paced flow keeps its rate whenever the receiver can
 * take it. The socket's send buffer bounds the frames in flight; a sender
 * that fills it waits in sendmmsg until the receiver frees some.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <linux/if_packet.h>

#include "tg.h"

#define PKT_BATCH 256            /* frames per sendmmsg */
#define PKT_SNDBUF (4 << 20)     /* bytes of socket buffers in flight per thread */

struct pkt_flow {
	uint8_t *frames;         /* PKT_BATCH copies of the template, frame_len apart */
	struct iovec iov[PKT_BATCH];
	struct mmsghdr msgs[PKT_BATCH];
};

struct pkt_thread {
	int fd;
	struct pkt_flow flows[TG_MAX_FLOWS];
};

static const struct tg_opts *pkt_o;

/* A packet socket on the device that only transmits; -errno on failure. */
static int pkt_socket(int ifindex)
{
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = 0,
				   .sll_ifindex = ifindex };
	int one = 1, size = PKT_SNDBUF, fd, err;

	fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) ||
	    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one))) {
		err = -errno;
		close(fd);
		return err;
	}
	/* Beyond net.core.wmem_max needs CAP_NET_ADMIN: else take what is allowed. */
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)))
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	return fd;
}

static int pkt_open(const struct tg_opts *o, char *why, size_t whylen)
{
	int fd = pkt_socket(o->ifindex);

	if (fd < 0) {
		snprintf(why, whylen, "an AF_PACKET socket on %s: %s%s", o->dev, strerror(-fd),
			 fd == -EPERM ? " (needs CAP_NET_RAW)" : "");
		return fd;
	}
	close(fd);
	pkt_o = o;
	return 0;
}

static void pkt_close(void)
{
	pkt_o = NULL;
}

static void pkt_thread_close(struct tg_worker *w)
{
	struct pkt_thread *t = w->eng_state;
	unsigned int i;

	if (!t)
		return;
	for (i = 0; i < TG_MAX_FLOWS; i++)
		free(t->flows[i].frames);
	if (t->fd >= 0)
		close(t->fd);
	free(t);
	w->eng_state = NULL;
}

static int pkt_thread_open(struct tg_worker *w)
{
	const struct tg_opts *o = pkt_o;
	struct pkt_thread *t = calloc(1, sizeof(*t));
	unsigned int f, i;

	if (!t)
		return -ENOMEM;
	w->eng_state = t;
	t->fd = pkt_socket(o->ifindex);
	if (t->fd < 0)
		return t->fd;
	for (f = 0; f < o->nflows; f++) {
		const struct tg_flow_opts *fl = &o->flows[f];
		struct pkt_flow *pf = &t->flows[f];

		pf->frames = malloc((size_t)fl->frame_len * PKT_BATCH);
		if (!pf->frames)
			return -ENOMEM;
		for (i = 0; i < PKT_BATCH; i++) {
			uint8_t *frame = pf->frames + (size_t)i * fl->frame_len;

			memcpy(frame, fl->frame, fl->frame_len);
			pf->iov[i] = (struct iovec){ .iov_base = frame, .iov_len = fl->frame_len };
			pf->msgs[i].msg_hdr = (struct msghdr){ .msg_iov = &pf->iov[i], .msg_iovlen = 1 };
		}
	}
	return 0;
}

static int64_t pkt_send(struct tg_worker *w, unsigned int f, uint32_t n)
{
	struct pkt_thread *t = w->eng_state;
	const struct tg_flow_opts *fl = &pkt_o->flows[f];
	struct pkt_flow *pf = &t->flows[f];
	struct tg_share *sh = &w->share[f];
	unsigned int m = n < PKT_BATCH ? n : PKT_BATCH, i;
	int r;

	for (i = 0; i < m; i++)
		tg_frame_set_source(fl, pf->frames + (size_t)i * fl->frame_len,
				    tg_source(fl, sh->sent + i));
	r = sendmmsg(t->fd, pf->msgs, m, 0);
	if (r >= 0)
		return r;
	switch (errno) {
	case ENOBUFS: /* the device's queue is full */
	case EAGAIN:
		sh->refused++;
		return 0;
	case EINTR: /* a signal: the caller looks at tg_stop */
		return 0;
	default:
		return -errno;
	}
}

const struct tg_engine tg_engine_packet = {
	.name = "packet",
	.open = pkt_open,
	.thread_open = pkt_thread_open,
	.send = pkt_send,
	.thread_close = pkt_thread_close,
	.close = pkt_close,
};
