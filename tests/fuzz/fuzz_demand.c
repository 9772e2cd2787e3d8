// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Demand sharing's messages (agentgated/fleet/demand_wire.c, agd_dem_decode):
 * what every host and every group owner decodes from NATS, from any sender
 * that can publish on agentgate.demand.>.
 *
 * Input: one message. The decoder runs over an exact copy (a read past its
 * end is an ASan report); a message it takes must encode again and decode
 * to the same head and entries (names, counters, rates as f32, hosts), hold
 * only entries of its group with finite, non-negative rates, and a report
 * must merge into an owner's table whose totals sum exactly its rates.
 */
#include <math.h>

#include "fleet/demand_wire.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy = malloc(size ? size : 1), *again = NULL;
	struct agd_dem_entry *e = NULL, *e2 = NULL, *t = NULL;
	struct agd_dem_head h, h2;
	size_t n = 0, n2 = 0, nt = 0, len = 0, i;
	struct agd_dem_agg *a;
	int rc;

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	rc = agd_dem_decode(copy, size, &h, &e, &n);
	FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ENOMEM, "decode returned %d", rc);
	if (rc) {
		FUZZ_CHECK(!e && !n, "a refused message left entries");
		free(copy);
		return 0;
	}
	FUZZ_CHECK(h.group < AGD_DEM_GROUPS && h.node[0], "head: group %u node '%s'", h.group,
		   h.node);
	for (i = 0; i < n; i++) {
		FUZZ_CHECK(e[i].agent[0] && (h.kind == AGD_DEM_QUOTAS ?
						     h.group == 0 :
						     agd_dem_group(e[i].agent) == h.group),
			   "entry %zu: '%s' not of group %u", i, e[i].agent, h.group);
		FUZZ_CHECK(isfinite(e[i].rate) && e[i].rate >= 0, "entry %zu: rate %g", i,
			   e[i].rate);
	}
	if (agd_dem_encode(&h, e, n, &again, &len))
		FUZZ_HARNESS_ERROR("out of memory");
	FUZZ_CHECK(!agd_dem_decode(again, len, &h2, &e2, &n2), "its own encoding refused");
	FUZZ_CHECK(n2 == n && h2.kind == h.kind && h2.epoch == h.epoch && h2.ms == h.ms &&
			   h2.group == h.group && !strcmp(h2.node, h.node),
		   "the head came back otherwise");
	for (i = 0; i < n && i < n2; i++)
		FUZZ_CHECK(!strcmp(e[i].agent, e2[i].agent) &&
				   (h.kind != AGD_DEM_REPORT || e[i].counter == e2[i].counter) &&
				   (h.kind != AGD_DEM_TOTALS || e[i].hosts == e2[i].hosts) &&
				   (h.kind != AGD_DEM_QUOTAS || (e[i].q_idx == e2[i].q_idx &&
								 e[i].q_used == e2[i].q_used)) &&
				   (float)e[i].rate == (float)e2[i].rate,
			   "entry %zu came back otherwise", i);
	if (h.kind == AGD_DEM_REPORT) {
		double want = 0, got = 0;

		a = agd_dem_agg_new();
		if (!a)
			FUZZ_HARNESS_ERROR("out of memory");
		FUZZ_CHECK(!agd_dem_agg_take(a, &h, e, n, 1000), "merge refused");
		FUZZ_CHECK(!agd_dem_agg_totals(a, h.group, 1000, 1, &t, &nt), "totals refused");
		/* One host: an agent's total is its rate in the report's entry
		 * with the largest counter, the first of equal ones. */
		for (i = 0; i < nt; i++)
			got += t[i].rate;
		for (i = 0; i < n; i++) {
			size_t k, best = i;

			for (k = 0; k < n; k++)
				if (!strcmp(e[k].agent, e[i].agent) &&
				    (e[k].counter > e[best].counter ||
				     (e[k].counter == e[best].counter && k < best)))
					best = k;
			if (best == i && e[i].rate > 0) {
				bool first = true;

				for (k = 0; k < i; k++)
					if (!strcmp(e[k].agent, e[i].agent) && e[k].counter == e[i].counter)
						first = false;
				if (first)
					want += e[i].rate;
			}
		}
		FUZZ_CHECK(fabs(got - want) <= 1e-6 * (1 + want), "totals %g, want %g", got, want);
		agd_dem_agg_free(a);
	}
	free(t);
	free(e);
	free(e2);
	free(again);
	free(copy);
	return 0;
}
