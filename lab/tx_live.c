// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The live-frames engine: the kernel generates the frames. A thread runs the
 * frame program (trafficgen.bpf.c) on a flow's template frame with
 * BPF_PROG_TEST_RUN, BPF_F_TEST_XDP_LIVE_FRAMES and a repeat count; the
 * program writes the flow's next source address and returns XDP_TX, and the
 * kernel transmits every repetition out of --dev. On a veth pair the frames
 * arrive at the peer's XDP program as XDP frames, as from a NIC's ring.
 *
 * Kernels with a BPF LSM policy or lockdown refuse such runs (EPERM, even
 * for root). open() finds out with a probe run of a program that returns
 * XDP_DROP, so the probe transmits nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tg.h"
#include "trafficgen.skel.h"

static struct {
	struct trafficgen_bpf *skel;
	struct bpf_link *anchor;
	const struct tg_opts *o;
	int prog_fd;
} live;

static int test_run(int prog_fd, const struct tg_flow_opts *fl, int ifindex, uint32_t n)
{
	struct xdp_md ctx = { .data_end = fl->frame_len, .ingress_ifindex = (__u32)ifindex };
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = fl->frame, .data_size_in = fl->frame_len,
		    .ctx_in = &ctx, .ctx_size_in = sizeof(ctx), .repeat = n,
		    .batch_size = n < 256 ? n : 256, .flags = BPF_F_TEST_XDP_LIVE_FRAMES);

	return bpf_prog_test_run_opts(prog_fd, &opts) ? -errno : 0;
}

/* The flows' source ranges into the program's map. */
static int load_flows(const struct tg_opts *o)
{
	int fd = bpf_map__fd(live.skel->maps.tg_flows);
	unsigned int i;

	for (i = 0; i < o->nflows; i++) {
		const struct tg_flow_opts *fl = &o->flows[i];
		struct tg_flow v = { .src_first = fl->src_first,
				     .src_count = fl->src_count,
				     .ip_version = fl->family == AF_INET ? 4 : 6 };

		if (bpf_map_update_elem(fd, &i, &v, 0))
			return -errno;
	}
	return 0;
}

static void live_close(void)
{
	bpf_link__destroy(live.anchor);
	trafficgen_bpf__destroy(live.skel);
	live.anchor = NULL;
	live.skel = NULL;
}

/*
 * Each XDP test run adds the program to the kernel's XDP dispatcher and
 * removes it again, and each change waits for an RCU grace period: about
 * 20 ms a call. A program already attached in native mode stays in the
 * dispatcher, so the runs change nothing and cost microseconds. Attach the
 * frame program to the device itself through a link (gone when this process
 * exits, however it exits); it passes received frames untouched. If the
 * device has a program already, go on without: slower calls, same frames.
 */
static void attach_anchor(const struct tg_opts *o)
{
	live.anchor = bpf_program__attach_xdp(live.skel->progs.trafficgen_xdp, o->ifindex);
	if (!live.anchor)
		fprintf(stderr, "ag-trafficgen: note: cannot attach to %s (%s): each batch then "
				"costs about 20 ms, batches grow to match\n", o->dev, strerror(errno));
}

static int live_open(const struct tg_opts *o, char *why, size_t whylen)
{
	struct tg_flow_opts probe_frame;
	uint8_t own_mac[6];
	int err;

	memcpy(own_mac, o->flows[0].frame + 6, 6);
	live.o = o;
	live.skel = trafficgen_bpf__open();
	if (!live.skel) {
		err = -errno;
		snprintf(why, whylen, "cannot open the frame program: %s", strerror(-err));
		return err;
	}
	memcpy((void *)live.skel->rodata->own_mac, own_mac, 6);
	err = trafficgen_bpf__load(live.skel);
	if (!err)
		err = load_flows(o);
	if (err) {
		snprintf(why, whylen, "cannot load the frame program: %s", strerror(-err));
		goto fail;
	}
	/* The probe: XDP_DROP with live frames transmits nothing. */
	memcpy(&probe_frame, &o->flows[0], sizeof(probe_frame));
	err = test_run(bpf_program__fd(live.skel->progs.trafficgen_probe), &probe_frame,
		       o->ifindex, 1);
	if (err) {
		snprintf(why, whylen, "the kernel refuses BPF_PROG_TEST_RUN with "
			 "BPF_F_TEST_XDP_LIVE_FRAMES: %s", strerror(-err));
		goto fail;
	}
	live.prog_fd = bpf_program__fd(live.skel->progs.trafficgen_xdp);
	attach_anchor(o);
	return 0;
fail:
	live_close();
	return err;
}

static int live_thread_open(struct tg_worker *w)
{
	return 0;
}

static void live_thread_close(struct tg_worker *w)
{
}

/*
 * The program keeps its own per-CPU position in each flow's range: sources
 * go in turn per CPU, not by the share's count of frames sent.
 */
static int64_t live_send(struct tg_worker *w, unsigned int f, uint32_t n)
{
	int err = test_run(live.prog_fd, &live.o->flows[f], live.o->ifindex, n);

	return err ? err : (int64_t)n;
}

const struct tg_engine tg_engine_live = {
	.name = "live",
	.open = live_open,
	.thread_open = live_thread_open,
	.send = live_send,
	.thread_close = live_thread_close,
	.close = live_close,
};
