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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(idle_ops_come_back),
		cmocka_unit_test(agent_put_comes_back_exactly),
		cmocka_unit_test(rules_and_delete_come_back),
		cmocka_unit_test(anything_else_is_refused_with_a_reason),
		cmocka_unit_test(node_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
