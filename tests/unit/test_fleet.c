// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The fleet's own formats: operator changes as the stream carries them must
 * come back bit for bit on every host (the rates depend on it), and anything
 * else in the stream must be refused with a reason (a dead letter). Node
 * names must be what NATS accepts in a durable consumer's name.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "fleet/common.h"
#include "fleet/demand_wire.h"
#include "fleet/fleet.h"

static struct agd_op roundtrip(const struct agd_op *in)
{
	char *text = agd_fleet_op_encode(in), why[200] = "";
	struct agd_op out;

	assert_non_null(text);
	assert_int_equal(agd_fleet_op_decode(text, strlen(text), &out, why, sizeof(why)), 0);
	free(text);
	return out;
}

static void agent_put_comes_back_exactly(void **state)
{
	struct agd_op in = { .kind = AGD_OP_AGENT_PUT, .agent = "a:b.c-d_e", .subject = "ops@x" };
	struct agd_op out;

	/* Doubles with no short decimal form must survive the text. */
	in.change.set = AGD_POL_R0 | AGD_POL_ALPHA | AGD_POL_BURST | AGD_POL_PINNED;
	in.change.unset = AGD_POL_R_MAX;
	in.change.own.r0 = 1.0 / 3;
	in.change.own.alpha = 0.1;
	in.change.own.r_min = 1e-6;
	in.change.own.r_max = 9999999999.999998;
	in.change.own.burst = 2.5;
	in.change.own.burst_kind = AGD_BURST_SECONDS;
	in.change.own.unit = AG_UNIT_BPS;
	in.change.own.pinned = true;
	in.change.fill_tokens = -1;
	out = roundtrip(&in);
	assert_int_equal(out.kind, AGD_OP_AGENT_PUT);
	assert_string_equal(out.agent, in.agent);
	assert_string_equal(out.subject, in.subject);
	assert_int_equal(out.change.set, in.change.set);
	assert_int_equal(out.change.unset, in.change.unset);
	assert_memory_equal(&out.change.own.r0, &in.change.own.r0, sizeof(double));
	assert_memory_equal(&out.change.own.alpha, &in.change.own.alpha, sizeof(double));
	assert_memory_equal(&out.change.own.r_min, &in.change.own.r_min, sizeof(double));
	assert_memory_equal(&out.change.own.r_max, &in.change.own.r_max, sizeof(double));
	assert_memory_equal(&out.change.own.burst, &in.change.own.burst, sizeof(double));
	assert_int_equal(out.change.own.burst_kind, AGD_BURST_SECONDS);
	assert_int_equal(out.change.own.unit, AG_UNIT_BPS);
	assert_true(out.change.own.pinned);
	assert_true(out.change.fill_tokens == -1);
}

static void rules_and_delete_come_back(void **state)
{
	struct agd_op in = { .kind = AGD_OP_RULE_ADD, .agent = "web" }, out;
	int i;

	in.rule.family = AF_INET6;
	for (i = 0; i < 16; i++)
		in.rule.addr[i] = (unsigned char)(0xf0 + i);
	in.rule.plen = 128;
	in.rule.port = 65535;
	out = roundtrip(&in);
	assert_int_equal(out.rule.family, AF_INET6);
	assert_memory_equal(out.rule.addr, in.rule.addr, 16);
	assert_int_equal(out.rule.plen, 128);
	assert_int_equal(out.rule.port, 65535);

	in.kind = AGD_OP_RULE_DEL;
	in.rule.family = AF_INET;
	memset(in.rule.addr, 0, sizeof(in.rule.addr));
	in.rule.addr[0] = 10;
	in.rule.plen = 8;
	in.rule.port = 0;
	out = roundtrip(&in);
	assert_int_equal(out.kind, AGD_OP_RULE_DEL);
	assert_int_equal(out.rule.family, AF_INET);
	assert_int_equal(out.rule.addr[0], 10);
	assert_int_equal(out.rule.plen, 8);

	in = (struct agd_op){ .kind = AGD_OP_AGENT_DELETE, .agent = "gone" };
	out = roundtrip(&in);
	assert_int_equal(out.kind, AGD_OP_AGENT_DELETE);
	assert_string_equal(out.agent, "gone");
}

static void budgets_come_back(void **state)
{
	struct agd_op in = { .kind = AGD_OP_PARENT_PUT, .agent = "org", .subject = "ops" }, out;

	in.budget.fields = AG_SET_RATE | AG_SET_BURST | AG_SET_UNIT | AG_SET_PARENT | AG_SET_QUOTA;
	in.budget.rate = 1.0 / 3;
	in.budget.burst = 1ULL << 40;
	in.budget.unit = AG_UNIT_CONN;
	snprintf(in.budget.parent, sizeof(in.budget.parent), "root");
	in.budget.quota = (1ULL << 43) - 1;
	in.budget.quota_window = AG_QW_30D;
	out = roundtrip(&in);
	assert_int_equal(out.kind, AGD_OP_PARENT_PUT);
	assert_string_equal(out.agent, "org");
	assert_int_equal(out.budget.fields, in.budget.fields);
	assert_memory_equal(&out.budget.rate, &in.budget.rate, sizeof(double));
	assert_true(out.budget.burst == in.budget.burst);
	assert_int_equal(out.budget.unit, AG_UNIT_CONN);
	assert_string_equal(out.budget.parent, "root");
	assert_true(out.budget.quota == in.budget.quota);
	assert_int_equal(out.budget.quota_window, AG_QW_30D);

	in = (struct agd_op){ .kind = AGD_OP_PARENT_DELETE, .agent = "org" };
	out = roundtrip(&in);
	assert_int_equal(out.kind, AGD_OP_PARENT_DELETE);
	assert_string_equal(out.agent, "org");

	/* An agent's parent and quota travel with its change. */
	in = (struct agd_op){ .kind = AGD_OP_AGENT_PUT, .agent = "a1" };
	in.change.fill_tokens = -1;
	in.change.budget.fields = AG_SET_PARENT | AG_SET_QUOTA;
	snprintf(in.change.budget.parent, sizeof(in.change.budget.parent), "org");
	in.change.budget.quota = 10000000;
	in.change.budget.quota_window = AG_QW_DAY;
	out = roundtrip(&in);
	assert_int_equal(out.change.budget.fields, AG_SET_PARENT | AG_SET_QUOTA);
	assert_string_equal(out.change.budget.parent, "org");
	assert_true(out.change.budget.quota == 10000000);
	assert_int_equal(out.change.budget.quota_window, AG_QW_DAY);
	/* None: nothing of the kind in the message, none after it. */
	in.change.budget = (struct agd_budget_change){ 0 };
	out = roundtrip(&in);
	assert_int_equal(out.change.budget.fields, 0);
}

static void anything_else_is_refused_with_a_reason(void **state)
{
	static const char *const bad[] = {
		"",
		"not json",
		"[1,2]",
		"{\"v\":2,\"op\":\"agent.delete\",\"agent\":\"a\",\"subject\":\"\"}",
		"{\"v\":1,\"op\":\"agent.rename\",\"agent\":\"a\",\"subject\":\"\"}",
		"{\"v\":1,\"op\":\"agent.put\",\"agent\":\"a\",\"subject\":\"\"}",
		"{\"v\":1,\"op\":\"rule.add\",\"agent\":\"a\",\"subject\":\"\"}",
		"{\"v\":1,\"op\":\"rule.add\",\"agent\":\"a\",\"subject\":\"\",\"rule\":"
		"{\"family\":5,\"addr\":\"00000000000000000000000000000000\",\"plen\":1,\"port\":0}}",
		"{\"v\":1,\"op\":\"rule.add\",\"agent\":\"a\",\"subject\":\"\",\"rule\":"
		"{\"family\":4,\"addr\":\"zz000000000000000000000000000000\",\"plen\":1,\"port\":0}}",
		"{\"v\":1,\"op\":\"rule.add\",\"agent\":\"a\",\"subject\":\"\",\"rule\":"
		"{\"family\":4,\"addr\":\"00000000000000000000000000000000\",\"plen\":33,\"port\":0}}",
		"{\"v\":1,\"op\":\"agent.put\",\"agent\":\"a\",\"subject\":\"\",\"change\":{\"set\":1,"
		"\"unset\":0,\"fill\":-1,\"policy\":{\"r0\":1,\"alpha\":1,\"r_min\":1,\"r_max\":2,"
		"\"burst\":1,\"burst_kind\":0,\"unit\":0,\"pinned\":false,\"extra\":1}}}",
		"{\"v\":1,\"op\":\"agent.put\",\"agent\":\"a\",\"subject\":\"\",\"change\":{\"set\":256,"
		"\"unset\":0,\"fill\":-1,\"policy\":{\"r0\":1,\"alpha\":1,\"r_min\":1,\"r_max\":2,"
		"\"burst\":1,\"burst_kind\":0,\"unit\":0,\"pinned\":false}}}",
		"{\"v\":1,\"op\":\"parent.put\",\"agent\":\"p\",\"subject\":\"\"}",
		"{\"v\":1,\"op\":\"parent.put\",\"agent\":\"p\",\"subject\":\"\",\"budget\":"
		"{\"fields\":1,\"rate\":1,\"burst\":1,\"unit\":9,\"parent\":\"\",\"quota\":0,"
		"\"window\":0}}",
		"{\"v\":1,\"op\":\"parent.put\",\"agent\":\"p\",\"subject\":\"\",\"budget\":"
		"{\"fields\":1,\"rate\":1,\"burst\":1,\"unit\":0,\"parent\":\"a b\",\"quota\":0,"
		"\"window\":0}}",
		"{\"v\":1,\"op\":\"parent.put\",\"agent\":\"p\",\"subject\":\"\",\"budget\":"
		"{\"fields\":1024,\"rate\":1,\"burst\":1,\"unit\":0,\"parent\":\"\",\"quota\":0,"
		"\"window\":0}}",
		"{\"v\":1,\"op\":\"parent.put\",\"agent\":\"p\",\"subject\":\"\",\"budget\":"
		"{\"fields\":1,\"rate\":1,\"burst\":1,\"unit\":0,\"parent\":\"\",\"quota\":0,"
		"\"window\":7}}",
		"{\"v\":1,\"op\":\"agent.delete\",\"agent\":\"0123456789012345678901234567890123456789"
		"01234567890123456789012345\",\"subject\":\"\"}",
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct agd_op op;
		char why[200] = "";

		if (agd_fleet_op_decode(bad[i], strlen(bad[i]), &op, why, sizeof(why)) != -EINVAL)
			fail_msg("accepted: %s", bad[i]);
		if (!why[0])
			fail_msg("no reason for: %s", bad[i]);
	}
}

static void node_names(void **state)
{
	struct agd_err why;
	char node[AGD_NODE_MAX + 1];

	assert_int_equal(agd_fleet_node_check("edge-1_a", &why), 0);
	assert_int_equal(agd_fleet_node_check("", &why), -1);
	assert_int_equal(agd_fleet_node_check("a.b", &why), -1); /* durable names */
	assert_int_equal(agd_fleet_node_check("a b", &why), -1);
	assert_int_equal(agd_fleet_node_check("012345678901234567890123456789012", &why), -1);
	agd_fleet_default_node(node, sizeof(node));
	assert_int_equal(agd_fleet_node_check(node, &why), 0);
}

static void idle_ops_come_back(void **state)
{
	struct agd_op in = { .kind = AGD_OP_AGENT_EXPIRE, .agent = "tut-1", .subject = "agentgated",
			     .mark = 1234567890123ULL };
	struct agd_op out = roundtrip(&in);
	struct agd_op put = { .kind = AGD_OP_AGENT_PUT, .agent = "p", .subject = "s" };
	static const char *const bad[] = {
		"{\"v\":1,\"op\":\"agent.expire\",\"agent\":\"a\",\"subject\":\"s\"}",
		"{\"v\":1,\"op\":\"agent.expire\",\"agent\":\"a\",\"subject\":\"s\",\"mark\":-1}",
		"{\"v\":1,\"op\":\"agent.expire\",\"agent\":\"a\",\"subject\":\"s\",\"mark\":\"7\"}",
		"{\"v\":1,\"op\":\"agent.touch\",\"agent\":\"a/b\",\"subject\":\"s\"}",
		"{\"v\":1,\"op\":\"agent.touch\",\"agent\":\"\",\"subject\":\"s\"}",
	};
	char why[200];
	size_t i;

	assert_int_equal(out.kind, AGD_OP_AGENT_EXPIRE);
	assert_string_equal(out.agent, "tut-1");
	assert_true(out.mark == in.mark);
	in.kind = AGD_OP_AGENT_TOUCH;
	out = roundtrip(&in);
	assert_int_equal(out.kind, AGD_OP_AGENT_TOUCH);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct agd_op op;

		why[0] = 0;
		if (agd_fleet_op_decode(bad[i], strlen(bad[i]), &op, why, sizeof(why)) != -EINVAL ||
		    !why[0])
			fail_msg("accepted: %s", bad[i]);
	}
	/* A put's influence limits travel. */
	put.change.inf_set = AGD_INF_MAX_CHANGE | AGD_INF_WAVE_USERS;
	put.change.inf_unset = AGD_INF_WAVE_HOLD;
	put.change.inf.max_change = 0.25;
	put.change.inf.wave_users = 77;
	out = roundtrip(&put);
	assert_int_equal(out.change.inf_set, put.change.inf_set);
	assert_int_equal(out.change.inf_unset, AGD_INF_WAVE_HOLD);
	assert_true(out.change.inf.max_change == 0.25 && out.change.inf.wave_users == 77);
	/* user_cap travels when set; a cap out of range is refused. */
	put.change.inf_set = AGD_INF_USER_CAP;
	put.change.inf_unset = 0;
	put.change.inf.user_cap = 0.75;
	out = roundtrip(&put);
	assert_int_equal(out.change.inf_set, AGD_INF_USER_CAP);
	assert_true(out.change.inf.user_cap == 0.75);
	put.change.inf.user_cap = 2.5;
	{
		char *text = agd_fleet_op_encode(&put);
		struct agd_op bad_op;

		assert_non_null(text);
		assert_int_equal(agd_fleet_op_decode(text, strlen(text), &bad_op, why, sizeof(why)),
				 -EINVAL);
		free(text);
	}
	put.change.inf_set = put.change.inf_unset = 0;
	/* A put's TTL and kind travel; an older host's put without them decodes. */
	put.change.set = AGD_POL_TTL;
	put.change.own.ttl = 86400;
	put.change.implicit = true;
	put.change.fill_tokens = -1;
	out = roundtrip(&put);
	assert_true(out.change.own.ttl == 86400 && out.change.implicit);
	{
		static const char old[] =
			"{\"v\":1,\"op\":\"agent.put\",\"agent\":\"a\",\"subject\":\"s\","
			"\"change\":{\"set\":1,\"unset\":0,\"fill\":-1,\"policy\":{\"r0\":5,"
			"\"alpha\":1,\"r_min\":1,\"r_max\":10,\"burst\":1,\"burst_kind\":1,"
			"\"unit\":0,\"pinned\":false}}}";

		assert_int_equal(agd_fleet_op_decode(old, strlen(old), &out, why, sizeof(why)), 0);
		assert_true(out.change.own.ttl == 0 && !out.change.implicit);
	}
}

/* ---- demand sharing's messages and merge (fleet/demand_wire.h) ---------------- */

/* An agent name in group g, made from a stem. */
static void name_in_group(unsigned int g, const char *stem, char *out, size_t len)
{
	int i;

	for (i = 0; i < 100000; i++) {
		snprintf(out, len, "%s-%d", stem, i);
		if (agd_dem_group(out) == g)
			return;
	}
	fail_msg("no name in group %u", g);
}

static void demand_messages_come_back(void **state)
{
	struct agd_dem_head h = { .kind = AGD_DEM_REPORT, .node = "edge-7", .epoch = 1700000000123ULL,
				  .ms = 1700000005000ULL, .group = 5 }, back;
	struct agd_dem_entry e[3] = { 0 }, *out = NULL;
	uint64_t counters[3] = { 0, 127, UINT64_MAX };
	uint8_t *buf;
	size_t len, n, i;

	(void)state;
	for (i = 0; i < 3; i++) {
		name_in_group(5, i == 2 ? "org:team.with-a-rather-long-name" : "a", e[i].agent,
			      sizeof(e[i].agent));
		e[i].counter = counters[i];
		e[i].rate = i * 1000.5;
	}
	assert_int_equal(agd_dem_encode(&h, e, 3, &buf, &len), 0);
	assert_int_equal(agd_dem_decode(buf, len, &back, &out, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(back.node, "edge-7");
	assert_true(back.epoch == h.epoch && back.ms == h.ms && back.group == 5 &&
		    back.kind == AGD_DEM_REPORT);
	for (i = 0; i < 3; i++) {
		assert_string_equal(out[i].agent, e[i].agent);
		assert_true(out[i].counter == counters[i]);
		assert_true(out[i].rate == (float)e[i].rate);
	}
	free(out);
	/* Every cut, and a byte more, is refused; so is an entry of another group. */
	for (i = 0; i < len; i++) {
		assert_int_equal(agd_dem_decode(buf, i, &back, &out, &n), -EINVAL);
		assert_null(out);
	}
	buf = realloc(buf, len + 1);
	assert_non_null(buf);
	buf[len] = 0;
	assert_int_equal(agd_dem_decode(buf, len + 1, &back, &out, &n), -EINVAL);
	free(buf);
	h.group = 6;
	assert_int_equal(agd_dem_encode(&h, e, 1, &buf, &len), 0);
	assert_int_equal(agd_dem_decode(buf, len, &back, &out, &n), -EINVAL);
	free(buf);
	/* Totals: the sum and the hosts. */
	h.kind = AGD_DEM_TOTALS;
	h.group = 5;
	e[0].rate = 2500;
	e[0].hosts = 3;
	assert_int_equal(agd_dem_encode(&h, e, 1, &buf, &len), 0);
	assert_int_equal(agd_dem_decode(buf, len, &back, &out, &n), 0);
	assert_true(n == 1 && out[0].rate == 2500 && out[0].hosts == 3 &&
		    back.kind == AGD_DEM_TOTALS);
	free(out);
	free(buf);
}

static double total_of(struct agd_dem_agg *a, unsigned int g, const char *agent, uint64_t now,
		       unsigned int *hosts)
{
	struct agd_dem_entry *t = NULL;
	size_t n = 0, i;
	double r = -1;

	assert_int_equal(agd_dem_agg_totals(a, g, now, 3000, &t, &n), 0);
	for (i = 0; i < n; i++)
		if (!strcmp(t[i].agent, agent)) {
			r = t[i].rate;
			*hosts = t[i].hosts;
		}
	free(t);
	return r;
}

/* Per host the newest (epoch, counter) wins: late, repeated or reordered
 * reports never move a host back; a later epoch (a restart) supersedes. */
static void demand_merge_never_goes_back(void **state)
{
	struct agd_dem_agg *a = agd_dem_agg_new();
	struct agd_dem_head h1 = { .kind = AGD_DEM_REPORT, .node = "h1", .epoch = 10, .group = 3 },
			    h2 = h1;
	struct agd_dem_entry e = { 0 };
	unsigned int hosts = 0;

	(void)state;
	assert_non_null(a);
	strcpy(h2.node, "h2");
	name_in_group(3, "x", e.agent, sizeof(e.agent));
	e.counter = 100, e.rate = 50;
	assert_int_equal(agd_dem_agg_take(a, &h1, &e, 1, 1000), 0);
	e.counter = 300, e.rate = 30;
	assert_int_equal(agd_dem_agg_take(a, &h2, &e, 1, 1000), 0);
	assert_true(total_of(a, 3, e.agent, 1000, &hosts) == 80 && hosts == 2);
	/* h1's older report comes late: nothing moves. */
	e.counter = 50, e.rate = 999;
	agd_dem_agg_take(a, &h1, &e, 1, 1100);
	e.counter = 100;
	agd_dem_agg_take(a, &h1, &e, 1, 1100); /* repeated */
	assert_true(total_of(a, 3, e.agent, 1100, &hosts) == 80);
	/* A newer one counts. */
	e.counter = 200, e.rate = 70;
	agd_dem_agg_take(a, &h1, &e, 1, 1200);
	assert_true(total_of(a, 3, e.agent, 1200, &hosts) == 100);
	/* h1 restarted: its counter starts low in a later epoch, and counts. */
	h1.epoch = 11;
	e.counter = 5, e.rate = 10;
	agd_dem_agg_take(a, &h1, &e, 1, 1300);
	assert_true(total_of(a, 3, e.agent, 1300, &hosts) == 40);
	/* ... and its old epoch's reports change nothing any more. */
	h1.epoch = 10;
	e.counter = 10000, e.rate = 5000;
	agd_dem_agg_take(a, &h1, &e, 1, 1400);
	assert_true(total_of(a, 3, e.agent, 1400, &hosts) == 40);
	/* A host not heard from within the stale time drops out of the sum;
	 * other groups are apart; expiry forgets. */
	assert_true(total_of(a, 3, e.agent, 1300 + 3001, &hosts) < 0);
	assert_true(total_of(a, 4, e.agent, 1300, &hosts) < 0);
	assert_int_equal(agd_dem_agg_size(a), 2);
	agd_dem_agg_expire(a, 1300 + 10000, 5000);
	assert_int_equal(agd_dem_agg_size(a), 0);
	agd_dem_agg_free(a);
}

/* Agents come and go: an owner forgets those no host reported, keeps the
 * others' sums exact, and takes new ones (10 rounds of 300 new agents
 * each, one host; the last round's are what is left). */
static void demand_merge_forgets_agents(void **state)
{
	struct agd_dem_agg *a = agd_dem_agg_new();
	struct agd_dem_head h = { .kind = AGD_DEM_REPORT, .node = "h1", .epoch = 1, .group = 2 };
	struct agd_dem_entry e[300], keep = { 0 };
	unsigned int hosts = 0, r, i;

	(void)state;
	assert_non_null(a);
	name_in_group(2, "always", keep.agent, sizeof(keep.agent));
	for (r = 0; r < 10; r++) {
		uint64_t now = 1000 + r * 10000;
		char stem[32];

		for (i = 0; i < 300; i++) {
			memset(&e[i], 0, sizeof(e[i]));
			snprintf(stem, sizeof(stem), "r%u-%u", r, i);
			name_in_group(2, stem, e[i].agent, sizeof(e[i].agent));
			e[i].counter = 1;
			e[i].rate = 1;
		}
		keep.counter = r + 1;
		keep.rate = 7;
		assert_int_equal(agd_dem_agg_take(a, &h, e, 300, now), 0);
		assert_int_equal(agd_dem_agg_take(a, &h, &keep, 1, now), 0);
		agd_dem_agg_expire(a, now, 5000);
		assert_int_equal(agd_dem_agg_size(a), 301);
		assert_true(total_of(a, 2, keep.agent, now, &hosts) == 7 && hosts == 1);
		assert_true(total_of(a, 2, e[299].agent, now, &hosts) == 1 && hosts == 1);
	}
	agd_dem_agg_free(a);
}

static void demand_shares(void **state)
{
	(void)state;
	assert_true(agd_dem_share(100, 0, 0.05) == 1);     /* nobody else */
	assert_true(agd_dem_share(100, 100, 0.05) == 0.5);
	assert_true(agd_dem_share(200, 100, 0.05) > 0.666 && agd_dem_share(200, 100, 0.05) < 0.667);
	assert_true(agd_dem_share(1, 1000, 0.05) == 0.05);  /* the floor */
	assert_true(agd_dem_share(0, 1000, 0.1) == 0.1);
}

/* A rating as the stream carries it reads back as the same rating, however
 * its strings (printable ASCII) are escaped; the longest line, every byte
 * of its strings escaped, fits AGD_FLEET_LINE_MAX. */
static void rating_lines_come_back(void **state)
{
	static const char *const shapes[] = {
		"{\"id\":\"r-1\",\"agent\":\"a\",\"score\":5}",
		"{\"id\":\"q\\\"u\\\\o\",\"agent\":\"org:t.a-b_c\",\"score\":1,"
		"\"user\":\"\\u0041 \\\"x\\\" \\\\ \\/ ~\",\"ts\":0}",
		"{\"user\":\"}{\\\\\\\"\",\"ts\":1796000000123,\"score\":3,"
		"\"agent\":\"x\",\"id\":\" \\\\\\\\\"}",
	};
	char line[AGD_FLEET_LINE_MAX], body[3 * AGD_FLEET_LINE_MAX + 3];
	struct agd_rating in[3], out, longest = { .score = 2, .ts_ms = INT64_MAX };
	struct agd_rating_error re;
	struct agd_rating_batch b = { 0 };
	size_t i, len, off = 0;

	(void)state;
	for (i = 0; i < 3; i++) {
		memset(&re, 0, sizeof(re));
		if (agd_rating_parse_line(shapes[i], strlen(shapes[i]), &in[i], &re))
			fail_msg("shape %zu: %s: %s", i, re.field, re.reason);
		len = agd_fleet_rating_line(&in[i], line);
		assert_int_equal(len, strlen(line));
		memset(&out, 0x5a, sizeof(out));
		assert_int_equal(agd_rating_parse_line(line, len, &out, &re), 0);
		assert_string_equal(out.id, in[i].id);
		assert_string_equal(out.agent, in[i].agent);
		assert_string_equal(out.user, in[i].user);
		assert_int_equal(out.score, in[i].score);
		assert_int_equal(out.ts_ms, in[i].ts_ms);
		memcpy(body + off, line, len);
		off += len;
		body[off++] = '\n';
	}
	/* The lines of a batch message read back in order. */
	assert_int_equal(agd_ratings_parse(body, off, AGD_RATING_NDJSON, &b), 0);
	assert_int_equal(b.n, 3);
	for (i = 0; i < 3; i++)
		assert_string_equal(b.items[i].id, in[i].id);
	agd_rating_batch_free(&b);
	/* Every byte of the longest strings a control character: the bound. */
	memset(longest.id, 1, AGD_RATING_ID_MAX);
	memset(longest.agent, 'a', AG_NAME_MAX);
	memset(longest.user, 2, AGD_RATING_USER_MAX);
	len = agd_fleet_rating_line(&longest, line);
	assert_true(len < AGD_FLEET_LINE_MAX);
	assert_int_equal(len, strlen(line));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(idle_ops_come_back),
		cmocka_unit_test(agent_put_comes_back_exactly),
		cmocka_unit_test(rules_and_delete_come_back),
		cmocka_unit_test(budgets_come_back),
		cmocka_unit_test(anything_else_is_refused_with_a_reason),
		cmocka_unit_test(node_names),
		cmocka_unit_test(demand_messages_come_back),
		cmocka_unit_test(demand_merge_never_goes_back),
		cmocka_unit_test(demand_merge_forgets_agents),
		cmocka_unit_test(demand_shares),
		cmocka_unit_test(rating_lines_come_back),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
