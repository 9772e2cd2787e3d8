// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The physical floor for the XDP cost benchmark: drop every frame, touch nothing. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int empty_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}
