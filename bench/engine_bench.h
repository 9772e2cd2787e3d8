/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* agentgated's engine as the engine benchmarks open it (sweep_cost.c,
 * voices_cost.c): a pin root under bpffs, a state store in state, the
 * embedded policy defaults, ratings creating their agents. */
#ifndef AGENTGATE_ENGINE_BENCH_H
#define AGENTGATE_ENGINE_BENCH_H

#include <stdio.h>

#include "core/engine.h"

static inline int bench_engine_open(const char *bpffs, const char *state, __u32 max_agents,
				    struct agd_engine **e, struct agd_err *why)
{
	struct agd_engine_opts eo = { 0 };
	char pin[4096];

	snprintf(pin, sizeof(pin), "%s/agentgate", bpffs);
	eo.state_dir = state;
	eo.pin_root = pin;
	eo.max_agents = max_agents;
	eo.store_size = 16ULL << 30;
	agd_policy_defaults(&eo.defaults);
	eo.dedup_window_ms = 86400000;
	eo.dedup_max = 1000;
	eo.auto_create = true;
	eo.queue_max = 1 << 20;
	eo.change_window_ms = 3600000;
	return agd_engine_open(&eo, e, why);
}

#endif
