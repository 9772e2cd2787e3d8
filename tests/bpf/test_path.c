// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Parent buckets, the conn unit and charges with debt, through
 * BPF_PROG_TEST_RUN and the library: every case builds its own agents and
 * parents (names and prefixes of its own), sends frames, and checks the
 * verdicts, each bucket's counters and refusals by reason, and the tokens
 * left in each bucket, so that a packet refused anywhere is seen to cost
 * nothing anywhere.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <linux/bpf.h>

#include "agentgate.h"
#include "harness.h"
#include "pkt.h"
#include "testenv.h"

static struct ag_ctx *ctx;
static struct ag_prog *prog;

/* ---- world ------------------------------------------------------------- */

static bool mk(const char *name, bool parent, double rate, __u64 burst, enum ag_unit unit,
	       const char *above, const char *prefix, __u32 *slot)
{
	struct ag_agent_update u = { .fields = AG_SET_RATE | AG_SET_BURST | AG_SET_UNIT |
					       (above ? AG_SET_PARENT : 0),
				     .rate = rate, .burst = burst, .unit = unit, .parent = above };
	struct ag_rule r;
	int err = parent ? ag_parent_set(ctx, name, &u, slot, NULL) :
			   ag_agent_set(ctx, name, &u, slot, NULL);

	if (!ASSERT_OK(err, name) || !ASSERT_OK(ag_bucket_reset(ctx, *slot), "reset"))
		return false;
	if (!prefix)
		return true;
	return ASSERT_OK(ag_prefix_parse(prefix, &r), prefix) &&
	       ASSERT_OK(ag_rule_add(ctx, &r, name), "rule");
}

#define AGENT(name, rate, burst, unit, above, prefix, slot) \
	mk(name, false, rate, burst, unit, above, prefix, slot)
#define PARENT(name, rate, burst, unit, above, slot) \
	mk(name, true, rate, burst, unit, above, NULL, slot)

/* ---- frames ------------------------------------------------------------ */

static void udp_frame(struct pkt *p, const char *src)
{
	memset(p, 0, sizeof(*p));
	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, src, NULL, IPPROTO_UDP, NULL);
	pkt_udp(p, 9);
	pkt_payload(p, 16);
	pkt_finish(p);
}

#define TCP_SYN 0x02
#define TCP_ACK 0x10
#define TCP_PSH 0x08

static void tcp_frame(struct pkt *p, const char *src, uint8_t flags)
{
	uint8_t *h;

	memset(p, 0, sizeof(*p));
	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, src, NULL, IPPROTO_TCP, NULL);
	h = p->b + p->len;
	pkt_tcp(p, 443);
	h[13] = flags;
	pkt_finish(p);
}

/* A QUIC long header (first byte, version) padded as an Initial is. */
static void quic_frame(struct pkt *p, const char *src, uint8_t first, uint32_t version,
		       size_t payload)
{
	uint8_t *q;

	memset(p, 0, sizeof(*p));
	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, src, NULL, IPPROTO_UDP, NULL);
	pkt_udp(p, 443);
	q = pkt_put(p, NULL, payload);
	memset(q, 0, payload);
	q[0] = first;
	if (payload >= 5) {
		q[1] = version >> 24;
		q[2] = version >> 16;
		q[3] = version >> 8;
		q[4] = version;
	}
	pkt_finish(p);
}

static void bps_frame400(struct pkt *p)
{
	memset(p, 0, sizeof(*p));
	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "10.17.0.1", NULL, IPPROTO_UDP, NULL);
	pkt_udp(p, 9);
	pkt_pad_to(p, 400);
	pkt_finish(p);
}

/* An IPv4 first fragment holding only `l4` bytes of a TCP header. */
static void tcp_tiny_first_fragment(struct pkt *p, const char *src, size_t l4)
{
	uint8_t *ip;

	memset(p, 0, sizeof(*p));
	pkt_eth(p, ETH_P_IP);
	ip = p->b + p->len;
	pkt_ipv4(p, src, NULL, IPPROTO_TCP, NULL);
	ip[6] = 0x20; /* MF, offset 0 */
	ip[4] = 0x12;
	pkt_be16(p, 40000);
	pkt_be16(p, 443);
	pkt_payload(p, l4 - 4);
	pkt_finish(p);
}

static int verdict(const struct pkt *p)
{
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = p->b, .data_size_in = (__u32)p->len,
		    .repeat = 1);

	if (bpf_prog_test_run_opts(ag_prog_fd(prog), &o))
		return -errno;
	return (int)o.retval;
}

/* n frames; how many passed. */
static int send_frames(const struct pkt *p, int n)
{
	int i, passed = 0;

	for (i = 0; i < n; i++) {
		int v = verdict(p);

		if (v < 0)
			return v;
		passed += v == XDP_PASS;
	}
	return passed;
}

/* ---- readings ---------------------------------------------------------- */

static bool tokens_near(__u32 slot, double want, const char *what)
{
	double t = -1;

	if (!ASSERT_OK(ag_bucket_tokens(ctx, slot, &t), what))
		return false;
	/* Rates here are 1 token/s at most: a run of milliseconds refills
	 * well under a tenth of one. */
	if (fabs(t - want) < 0.1)
		return true;
	fprintf(stderr, "  %s: %.3f tokens, want %.3f\n", what, t, want);
	return false;
}

static bool counted(__u32 slot, __u64 passed, __u64 dropped, __u64 by_parent, const char *what)
{
	struct ag_counters c;
	struct ag_refusals r;

	return ASSERT_OK(ag_counters_get(ctx, slot, &c), what) &&
	       ASSERT_OK(ag_refusals_get(ctx, slot, &r), what) &&
	       ASSERT_EQ(c.passed_packets, passed, what) &&
	       ASSERT_EQ(c.dropped_packets, dropped, what) &&
	       ASSERT_EQ(r.parent_packets, by_parent, what);
}

static __u64 stat_of(unsigned int id)
{
	__u64 s[AG_STAT__MAX] = {};

	ag_stats_get(ctx, s);
	return s[id];
}

/* ---- cases ------------------------------------------------------------- */

static bool test_parent_caps_children(void)
{
	__u32 p, a, b;
	__u64 parent_drops = stat_of(AG_STAT_PARENT_DROPPED);
	struct pkt fa, fb;

	udp_frame(&fa, "10.1.0.1");
	udp_frame(&fb, "10.2.0.1");
	return PARENT("cust1", 1, 5, AG_UNIT_PPS, NULL, &p) &&
	       AGENT("cust1-a", 1, 4, AG_UNIT_PPS, "cust1", "10.1.0.0/16", &a) &&
	       AGENT("cust1-b", 1, 4, AG_UNIT_PPS, "cust1", "10.2.0.0/16", &b) &&
	       ASSERT_EQ(send_frames(&fa, 4), 4, "a: all four") &&
	       ASSERT_EQ(send_frames(&fb, 4), 1, "b: the parent's last token") &&
	       counted(a, 4, 0, 0, "a counters") && counted(b, 1, 3, 3, "b counters") &&
	       counted(p, 5, 3, 0, "parent counters") &&
	       tokens_near(b, 3, "b kept what the parent refused") &&
	       tokens_near(a, 0, "a") && tokens_near(p, 0, "parent") &&
	       ASSERT_EQ(stat_of(AG_STAT_PARENT_DROPPED) - parent_drops, 3, "parent_dropped stat");
}

static bool test_flooding_agent_own_rate(void)
{
	__u32 p, a;
	struct pkt f;

	udp_frame(&f, "10.3.0.1");
	return PARENT("cust2", 1, 10, AG_UNIT_PPS, NULL, &p) &&
	       AGENT("cust2-a", 1, 2, AG_UNIT_PPS, "cust2", "10.3.0.0/16", &a) &&
	       ASSERT_EQ(send_frames(&f, 5), 2, "the agent's burst") &&
	       counted(a, 2, 3, 0, "agent: refused by its own rate") &&
	       counted(p, 2, 0, 0, "parent saw only what the agent admitted") &&
	       tokens_near(p, 8, "parent charged for admitted packets only");
}

static bool test_three_levels(void)
{
	__u32 org, team, a;
	struct pkt f;

	udp_frame(&f, "10.4.0.1");
	return PARENT("org3", 1, 2, AG_UNIT_PPS, NULL, &org) &&
	       PARENT("org3-team", 1, 5, AG_UNIT_PPS, "org3", &team) &&
	       AGENT("org3-team-a", 1, 5, AG_UNIT_PPS, "org3-team", "10.4.0.0/16", &a) &&
	       ASSERT_EQ(send_frames(&f, 4), 2, "the org's burst") &&
	       counted(a, 2, 2, 2, "agent") && counted(team, 2, 2, 2, "team") &&
	       counted(org, 2, 2, 0, "org") && tokens_near(a, 3, "agent kept the refused") &&
	       tokens_near(team, 3, "team kept the refused") && tokens_near(org, 0, "org");
}

static bool test_four_levels(void)
{
	__u32 s[4];
	struct pkt f;

	udp_frame(&f, "10.5.0.1");
	return PARENT("l4-org", 1, 1, AG_UNIT_PPS, NULL, &s[0]) &&
	       PARENT("l4-div", 1, 9, AG_UNIT_PPS, "l4-org", &s[1]) &&
	       PARENT("l4-team", 1, 9, AG_UNIT_PPS, "l4-div", &s[2]) &&
	       AGENT("l4-a", 1, 9, AG_UNIT_PPS, "l4-team", "10.5.0.0/16", &s[3]) &&
	       ASSERT_EQ(send_frames(&f, 3), 1, "the top's burst of 1") &&
	       counted(s[3], 1, 2, 2, "agent") && counted(s[0], 1, 2, 0, "top") &&
	       tokens_near(s[3], 8, "agent") && tokens_near(s[2], 8, "team") &&
	       tokens_near(s[1], 8, "division");
}

static bool test_dry_run_parent(void)
{
	__u32 p, a;
	struct pkt f;
	bool ok;

	udp_frame(&f, "10.6.0.1");
	ok = PARENT("dry", 1, 1, AG_UNIT_PPS, NULL, &p) &&
	     AGENT("dry-a", 1, 5, AG_UNIT_PPS, "dry", "10.6.0.0/16", &a) &&
	     ASSERT_OK(ag_config_set_dry_run(ctx, true), "dry-run on") &&
	     ASSERT_EQ(send_frames(&f, 3), 3, "dry-run passes all") &&
	     counted(a, 3, 0, 2, "agent: would-drop for the parent") &&
	     tokens_near(a, 4, "agent charged for the one admitted only") &&
	     tokens_near(p, 0, "parent");
	return ASSERT_OK(ag_config_set_dry_run(ctx, false), "dry-run off") && ok;
}

static bool test_link_checks(void)
{
	struct ag_agent_update to_a = { .fields = AG_SET_PARENT, .parent = "chk-a" };
	struct ag_agent_update to_top = { .fields = AG_SET_PARENT, .parent = "chk-top" };
	struct ag_agent_update to_b = { .fields = AG_SET_PARENT, .parent = "chk-b" };
	struct ag_agent_update to_none = { .fields = AG_SET_PARENT, .parent = "" };
	struct ag_agent_update to_ghost = { .fields = AG_SET_PARENT, .parent = "chk-ghost" };
	struct ag_agent got;
	struct ag_rule r;
	__u32 s[5], a;

	return PARENT("chk-top", 1, 1, AG_UNIT_PPS, NULL, &s[0]) &&
	       PARENT("chk-b", 1, 1, AG_UNIT_PPS, "chk-top", &s[1]) &&
	       PARENT("chk-c", 1, 1, AG_UNIT_PPS, "chk-b", &s[2]) &&
	       AGENT("chk-a", 1, 1, AG_UNIT_PPS, "chk-c", NULL, &a) &&
	       /* a fifth level */
	       ASSERT_EQ(ag_parent_set(ctx, "chk-top", &to_a, NULL, NULL), -EINVAL,
			 "an agent is no parent") &&
	       ASSERT_EQ(ag_parent_set(ctx, "chk-d", &to_a, NULL, NULL), -EINVAL,
			 "an agent is no parent, on create") &&
	       ASSERT_EQ(ag_agent_get(ctx, "chk-d", &got), -ENOENT, "nothing made") &&
	       PARENT("chk-d", 1, 1, AG_UNIT_PPS, "chk-c", &s[3]) &&
	       ASSERT_EQ(ag_agent_set(ctx, "chk-a", &(struct ag_agent_update){
						.fields = AG_SET_PARENT, .parent = "chk-d" },
				      NULL, NULL),
			 -EINVAL, "five buckets on a path") &&
	       ASSERT_EQ(ag_parent_set(ctx, "chk-top", &to_b, NULL, NULL), -ELOOP, "cycle") &&
	       ASSERT_EQ(ag_parent_set(ctx, "chk-top", &to_top, NULL, NULL), -ELOOP, "self") &&
	       ASSERT_EQ(ag_agent_set(ctx, "chk-a", &to_ghost, NULL, NULL), -ENOENT,
			 "unknown parent") &&
	       ASSERT_EQ(ag_agent_set(ctx, "chk-top", &to_none, NULL, NULL), -EEXIST,
			 "a parent's name through the agent calls") &&
	       ASSERT_EQ(ag_parent_set(ctx, "chk-a", &to_none, NULL, NULL), -EEXIST,
			 "an agent's name through the parent calls") &&
	       ASSERT_EQ(ag_agent_delete(ctx, "chk-top"), -EEXIST, "agent delete of a parent") &&
	       ASSERT_EQ(ag_parent_delete(ctx, "chk-c"), -EBUSY, "a parent with children") &&
	       ASSERT_OK(ag_prefix_parse("10.7.0.0/16", &r), "prefix") &&
	       ASSERT_EQ(ag_rule_add(ctx, &r, "chk-c"), -EINVAL, "no rule to a parent") &&
	       /* Moving a subtree under a deeper parent would lengthen its paths. */
	       ASSERT_EQ(ag_parent_set(ctx, "chk-b", &(struct ag_agent_update){
						 .fields = AG_SET_PARENT, .parent = "chk-d" },
				       NULL, NULL),
			 -ELOOP, "below itself") &&
	       ASSERT_OK(ag_agent_delete(ctx, "chk-a"), "delete the agent") &&
	       ASSERT_OK(ag_parent_delete(ctx, "chk-d"), "delete a leaf parent") &&
	       ASSERT_OK(ag_parent_delete(ctx, "chk-c"), "then its parent") &&
	       ASSERT_OK(ag_agent_get_slot(ctx, s[1], &got), "chk-b") &&
	       ASSERT_TRUE(got.is_parent && got.parent == s[0] + 1, "chk-b under chk-top");
}

static bool test_unlink(void)
{
	struct ag_agent_update none = { .fields = AG_SET_PARENT, .parent = NULL };
	__u32 p, a;
	struct pkt f;

	udp_frame(&f, "10.8.0.1");
	return PARENT("unl", 1, 1, AG_UNIT_PPS, NULL, &p) &&
	       AGENT("unl-a", 1, 5, AG_UNIT_PPS, "unl", "10.8.0.0/16", &a) &&
	       ASSERT_EQ(send_frames(&f, 3), 1, "under the parent") &&
	       ASSERT_OK(ag_agent_set(ctx, "unl-a", &none, NULL, NULL), "unlink") &&
	       ASSERT_EQ(send_frames(&f, 3), 3, "on its own") &&
	       ASSERT_OK(ag_parent_delete(ctx, "unl"), "childless parent deleted");
}

static bool test_conn_tcp(void)
{
	struct pkt syn, ack, synack, data;
	__u32 a;

	tcp_frame(&syn, "10.9.0.1", TCP_SYN);
	tcp_frame(&synack, "10.9.0.1", TCP_SYN | TCP_ACK);
	tcp_frame(&ack, "10.9.0.1", TCP_ACK);
	tcp_frame(&data, "10.9.0.1", TCP_ACK | TCP_PSH);
	return AGENT("conn-tcp", 1, 2, AG_UNIT_CONN, NULL, "10.9.0.0/16", &a) &&
	       ASSERT_EQ(send_frames(&syn, 3), 2, "two openings of a burst of 2") &&
	       ASSERT_EQ(send_frames(&ack, 5), 5, "ACKs are free") &&
	       ASSERT_EQ(send_frames(&data, 5), 5, "data is free") &&
	       ASSERT_EQ(send_frames(&synack, 5), 5, "SYN-ACK opens nothing here") &&
	       counted(a, 17, 1, 0, "counters count every packet") && tokens_near(a, 0, "empty");
}

static bool test_conn_quic(void)
{
	struct pkt v1_initial, v2_initial, v1_handshake, v2_retry_type0, vneg, short_hdr, tiny;
	__u32 a;

	quic_frame(&v1_initial, "10.10.0.1", 0xc0, 0x00000001, 1200);
	quic_frame(&v2_initial, "10.10.0.1", 0xd0, 0x6b3343cf, 1200);
	quic_frame(&v1_handshake, "10.10.0.1", 0xe0, 0x00000001, 1200);
	quic_frame(&v2_retry_type0, "10.10.0.1", 0xc0, 0x6b3343cf, 1200);
	quic_frame(&vneg, "10.10.0.1", 0xc0, 0, 1200);
	quic_frame(&short_hdr, "10.10.0.1", 0x40, 0x12345678, 1200);
	quic_frame(&tiny, "10.10.0.1", 0xc0, 0, 3); /* a whole datagram of 3 bytes */
	return AGENT("conn-quic", 1, 2, AG_UNIT_CONN, NULL, "10.10.0.0/16", &a) &&
	       ASSERT_EQ(send_frames(&v1_handshake, 3), 3, "v1 Handshake is free") &&
	       ASSERT_EQ(send_frames(&v2_retry_type0, 3), 3, "v2 type 0 (Retry) is free") &&
	       ASSERT_EQ(send_frames(&vneg, 3), 3, "version negotiation is free") &&
	       ASSERT_EQ(send_frames(&short_hdr, 3), 3, "short headers are free") &&
	       ASSERT_EQ(send_frames(&tiny, 3), 3, "a short datagram is no Initial") &&
	       ASSERT_EQ(send_frames(&v1_initial, 1), 1, "v1 Initial") &&
	       ASSERT_EQ(send_frames(&v2_initial, 2), 1, "v2 Initial: the second is over") &&
	       tokens_near(a, 0, "two openings taken");
}

static bool test_conn_tiny_fragment(void)
{
	struct pkt frag;
	__u32 a;

	/* RFC 1858: flags pushed out of the first fragment still count. */
	tcp_tiny_first_fragment(&frag, "10.11.0.1", 8);
	return AGENT("conn-frag", 1, 1, AG_UNIT_CONN, NULL, "10.11.0.0/16", &a) &&
	       ASSERT_EQ(send_frames(&frag, 2), 1, "tiny first fragments are openings");
}

static bool test_conn_parent_over_pps(void)
{
	struct pkt syn, ack;
	__u32 p, a;

	tcp_frame(&syn, "10.12.0.1", TCP_SYN);
	tcp_frame(&ack, "10.12.0.1", TCP_ACK);
	return PARENT("connp", 1, 1, AG_UNIT_CONN, NULL, &p) &&
	       AGENT("connp-a", 1, 10, AG_UNIT_PPS, "connp", "10.12.0.0/16", &a) &&
	       ASSERT_EQ(send_frames(&syn, 2), 1, "the parent allows one opening") &&
	       ASSERT_EQ(send_frames(&ack, 3), 3, "other packets pass the parent") &&
	       tokens_near(a, 6, "the agent paid for what passed: 1 SYN + 3 ACKs") &&
	       counted(a, 4, 1, 1, "agent");
}

/* The agent's own level is judged in round two without a look first: a
 * conn agent under a pps parent learns there whether a packet opens a
 * connection, and so does its parent. */
static bool test_conn_agent_under_parent(void)
{
	struct pkt syn, ack;
	__u32 p, a;

	tcp_frame(&syn, "10.20.0.1", TCP_SYN);
	tcp_frame(&ack, "10.20.0.1", TCP_ACK);
	return PARENT("conna-p", 1, 6, AG_UNIT_PPS, NULL, &p) &&
	       AGENT("conna", 1, 2, AG_UNIT_CONN, "conna-p", "10.20.0.0/16", &a) &&
	       ASSERT_EQ(send_frames(&syn, 3), 2, "the agent allows two openings") &&
	       ASSERT_EQ(send_frames(&ack, 5), 4, "the parent's six packets: 2 SYNs and 4 ACKs") &&
	       tokens_near(a, 0, "the agent paid for its openings only") &&
	       tokens_near(p, 0, "the parent paid for every packet that passed") &&
	       counted(a, 6, 2, 1, "agent");
}

static bool test_consume_walks_path(void)
{
	struct ag_consume_result res;
	__u32 p, a, b;

	return PARENT("cons", 1, 5, AG_UNIT_PPS, NULL, &p) &&
	       AGENT("cons-a", 1, 4, AG_UNIT_PPS, "cons", NULL, &a) &&
	       AGENT("cons-b", 1, 4, AG_UNIT_PPS, "cons", NULL, &b) &&
	       ASSERT_OK(ag_consume(ctx, "cons-a", 4, &res), "a takes 4") &&
	       ASSERT_TRUE(res.allowed, "allowed") &&
	       ASSERT_TRUE(fabs(res.remaining - 0) < 0.1, "the fewest left on the path") &&
	       ASSERT_OK(ag_consume(ctx, "cons-b", 2, &res), "b asks 2") &&
	       ASSERT_TRUE(!res.allowed, "the parent has 1") &&
	       ASSERT_TRUE(res.retry_after_ns > 500000000ULL, "a second's refill to wait") &&
	       tokens_near(b, 4, "b kept its tokens") && tokens_near(p, 1, "parent untouched") &&
	       ASSERT_OK(ag_consume(ctx, "cons-b", 1, &res), "b takes 1") &&
	       ASSERT_TRUE(res.allowed, "allowed") && tokens_near(b, 3, "b") &&
	       tokens_near(p, 0, "parent") &&
	       ASSERT_EQ(ag_consume(ctx, "cons-b", 6, &res), -EINVAL, "over the parent's burst");
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static bool test_charge_debt(void)
{
	struct ag_consume_result res;
	struct pkt f;
	__u32 p, a;

	udp_frame(&f, "10.13.0.1");
	/* 1000 tokens/s, burst 10: a charge of 50 leaves a debt of 40 (40 ms). */
	return PARENT("debt", 1000, 100, AG_UNIT_PPS, NULL, &p) &&
	       AGENT("debt-a", 1000, 10, AG_UNIT_PPS, "debt", "10.13.0.0/16", &a) &&
	       ASSERT_OK(ag_charge(ctx, "debt-a", 50, 1000000000ULL, &res), "charge") &&
	       ASSERT_TRUE(res.allowed, "a charge always applies") &&
	       ASSERT_TRUE(res.remaining < -39 && res.remaining > -41, "a debt of 40") &&
	       ASSERT_TRUE(res.retry_after_ns >= 40000000ULL, "paid back in 41 ms") &&
	       ASSERT_EQ(send_frames(&f, 3), 0, "in debt: the NIC drops") &&
	       ASSERT_OK(ag_consume(ctx, "debt-a", 1, &res), "consume") &&
	       ASSERT_TRUE(!res.allowed, "in debt: consume refuses") &&
	       tokens_near(p, 50, "the parent was charged too") &&
	       (sleep_ms(60), true) &&
	       ASSERT_EQ(send_frames(&f, 1), 1, "paid back: passes again") &&
	       /* Bounded: 10^9 tokens with at most 0.1 s of refill owed. */
	       ASSERT_OK(ag_charge(ctx, "debt-a", 1000000000ULL, 100000000ULL, &res), "big") &&
	       ASSERT_TRUE(res.remaining >= -100.5 && res.remaining < -99, "debt capped at 0.1 s") &&
	       ASSERT_EQ(ag_charge(ctx, "nobody", 1, 0, &res), -ENOENT, "unknown agent");
}

/* ---- quotas ------------------------------------------------------------------ */

static const char *pin_root;

static bool set_quota(const char *name, bool parent, __u64 limit, enum ag_quota_window w)
{
	struct ag_agent_update u = { .fields = AG_SET_QUOTA, .quota = limit, .quota_window = w };

	return ASSERT_OK(parent ? ag_parent_set(ctx, name, &u, NULL, NULL) :
				  ag_agent_set(ctx, name, &u, NULL, NULL),
			 "quota");
}

static __u64 tai_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_TAI, &ts);
	return (__u64)ts.tv_sec * 1000000000ULL + (__u64)ts.tv_nsec;
}

/* Simulated time: the count word of slot's quota rewritten as if `used`
 * tokens had been counted `windows_ago` windows back (0: this window). */
static bool quota_word(__u32 slot, __u64 window_ns, __u64 windows_ago, __u64 used)
{
	char path[256];
	struct ag_budget b;
	__u64 idx = (tai_now() / window_ns - windows_ago) & AG_QUOTA_IDX_MASK;
	int fd, ok;

	snprintf(path, sizeof(path), "%s/%s", pin_root, AG_MAP_BUDGETS);
	fd = bpf_obj_get(path);
	if (!ASSERT_TRUE(fd >= 0, "open ag_budgets"))
		return false;
	ok = !bpf_map_lookup_elem(fd, &slot, &b);
	b.quota_used = (idx << AG_QUOTA_USED_BITS) | used;
	ok = ok && !bpf_map_update_elem(fd, &slot, &b, BPF_EXIST);
	close(fd);
	return ASSERT_TRUE(ok, "rewrite the quota's count");
}

static bool quota_used_is(__u32 slot, __u64 want, const char *what)
{
	struct ag_quota_status q;

	return ASSERT_OK(ag_quota_status(ctx, slot, &q), what) && ASSERT_EQ(q.used, want, what);
}

static bool quota_refusals(__u32 slot, __u64 by_quota, const char *what)
{
	struct ag_refusals r;

	return ASSERT_OK(ag_refusals_get(ctx, slot, &r), what) &&
	       ASSERT_EQ(r.quota_packets, by_quota, what);
}

static bool test_quota_day(void)
{
	__u64 drops = stat_of(AG_STAT_QUOTA_DROPPED);
	struct pkt f;
	__u32 a;

	udp_frame(&f, "10.14.0.1");
	return AGENT("q-day", 1, 100, AG_UNIT_PPS, NULL, "10.14.0.0/16", &a) &&
	       set_quota("q-day", false, 3, AG_QW_DAY) &&
	       ASSERT_EQ(send_frames(&f, 5), 3, "three a day") &&
	       counted(a, 3, 2, 0, "counters") && quota_refusals(a, 2, "refused by the quota") &&
	       tokens_near(a, 97, "the rate kept what the quota refused") &&
	       quota_used_is(a, 3, "used") &&
	       ASSERT_EQ(stat_of(AG_STAT_QUOTA_DROPPED) - drops, 2, "quota_dropped stat") &&
	       /* Simulated time: the count belongs to yesterday, today is new. */
	       quota_word(a, 86400ULL * 1000000000ULL, 1, 3) &&
	       ASSERT_EQ(send_frames(&f, 4), 3, "a new day: three again") &&
	       quota_used_is(a, 3, "used today") &&
	       quota_word(a, 86400ULL * 1000000000ULL, 0, 2) &&
	       ASSERT_EQ(send_frames(&f, 2), 1, "two used today: one left") &&
	       set_quota("q-day", false, 0, AG_QW_NONE) &&
	       ASSERT_EQ(send_frames(&f, 3), 3, "no quota: the rate alone");
}

static bool test_quota_parent(void)
{
	__u32 p, a, b;
	struct pkt fa, fb;

	udp_frame(&fa, "10.15.0.1");
	udp_frame(&fb, "10.16.0.1");
	return PARENT("qp", 1, 100, AG_UNIT_PPS, NULL, &p) && set_quota("qp", true, 4, AG_QW_HOUR) &&
	       AGENT("qp-a", 1, 100, AG_UNIT_PPS, "qp", "10.15.0.0/16", &a) &&
	       AGENT("qp-b", 1, 100, AG_UNIT_PPS, "qp", "10.16.0.0/16", &b) &&
	       ASSERT_EQ(send_frames(&fa, 3), 3, "a: three") &&
	       ASSERT_EQ(send_frames(&fb, 3), 1, "b: the hour's last one") &&
	       counted(b, 1, 2, 2, "b: refused by its parent") && quota_refusals(b, 0, "b") &&
	       counted(p, 4, 2, 0, "parent") && quota_refusals(p, 2, "parent: by its quota") &&
	       tokens_near(b, 99, "b kept the refused") && tokens_near(p, 96, "parent's rate") &&
	       quota_used_is(p, 4, "parent used");
}

static bool test_quota_units(void)
{
	struct pkt big, syn, ack;
	__u32 b, c;

	bps_frame400(&big);
	tcp_frame(&syn, "10.18.0.1", TCP_SYN);
	tcp_frame(&ack, "10.18.0.1", TCP_ACK);
	return AGENT("q-bps", 1, 100000, AG_UNIT_BPS, NULL, "10.17.0.0/16", &b) &&
	       set_quota("q-bps", false, 1000, AG_QW_30D) &&
	       ASSERT_EQ(send_frames(&big, 3), 2, "1000 bytes: two 400-byte frames") &&
	       quota_used_is(b, 800, "bytes counted") &&
	       AGENT("q-conn", 1, 100, AG_UNIT_CONN, NULL, "10.18.0.0/16", &c) &&
	       set_quota("q-conn", false, 2, AG_QW_DAY) &&
	       ASSERT_EQ(send_frames(&syn, 3), 2, "two openings a day") &&
	       ASSERT_EQ(send_frames(&ack, 3), 3, "the rest is not counted") &&
	       quota_used_is(c, 2, "openings counted");
}

static bool test_quota_consume_charge(void)
{
	struct ag_consume_result res;
	struct ag_quota_status q;
	struct pkt f;
	__u32 a;

	udp_frame(&f, "10.19.0.1");
	return AGENT("q-cons", 1, 100, AG_UNIT_PPS, NULL, "10.19.0.0/16", &a) &&
	       set_quota("q-cons", false, 5, AG_QW_HOUR) &&
	       ASSERT_OK(ag_consume(ctx, "q-cons", 5, &res), "five") &&
	       ASSERT_TRUE(res.allowed && fabs(res.remaining) < 1e-9, "none left in the hour") &&
	       ASSERT_OK(ag_consume(ctx, "q-cons", 1, &res), "one more") &&
	       ASSERT_OK(ag_quota_status(ctx, a, &q), "status") &&
	       ASSERT_TRUE(!res.allowed, "refused by the quota") &&
	       ASSERT_TRUE(res.retry_after_ns > 0 && res.retry_after_ns <= 3600ULL * 1000000000ULL,
			   "retry after: within the hour") &&
	       ASSERT_TRUE(res.retry_after_ns + 1000000000ULL >= q.reset_in_ns &&
				   res.retry_after_ns <= q.reset_in_ns + 1000000000ULL,
			   "retry after: the window's end") &&
	       tokens_near(a, 95, "the rate kept what the quota refused") &&
	       ASSERT_EQ(send_frames(&f, 1), 0, "the NIC agrees") &&
	       set_quota("q-cons", false, 10, AG_QW_HOUR) &&
	       quota_used_is(a, 5, "a new limit keeps the count") &&
	       ASSERT_OK(ag_charge(ctx, "q-cons", 15, 1000000000ULL, &res), "charge 15") &&
	       quota_used_is(a, 20, "a charge counts past the limit") &&
	       ASSERT_TRUE(res.remaining <= -10 + 1e-9, "ten over the quota") &&
	       ASSERT_EQ(send_frames(&f, 1), 0, "over the quota: dropped") &&
	       set_quota("q-cons", false, 10, AG_QW_DAY) &&
	       quota_used_is(a, 0, "a new window length starts afresh");
}

static bool test_quota_checks(void)
{
	struct ag_agent_update big = { .fields = AG_SET_QUOTA, .quota = AG_QUOTA_MAX + 1,
				       .quota_window = AG_QW_DAY };
	struct ag_agent_update nowin = { .fields = AG_SET_QUOTA, .quota = 5,
					 .quota_window = AG_QW_NONE };
	struct ag_agent got;
	__u32 a;

	return AGENT("q-chk", 1, 10, AG_UNIT_PPS, NULL, NULL, &a) &&
	       ASSERT_EQ(ag_agent_set(ctx, "q-chk", &big, NULL, NULL), -EINVAL, "too big") &&
	       ASSERT_EQ(ag_agent_set(ctx, "q-chk", &nowin, NULL, NULL), -EINVAL, "no window") &&
	       ASSERT_EQ(ag_agent_set(ctx, "q-new", &big, NULL, NULL), -EINVAL, "on create") &&
	       ASSERT_EQ(ag_agent_get(ctx, "q-new", &got), -ENOENT, "nothing made") &&
	       set_quota("q-chk", false, AG_QUOTA_MAX, AG_QW_30D) &&
	       ASSERT_OK(ag_agent_get(ctx, "q-chk", &got), "get") &&
	       ASSERT_TRUE(got.quota == AG_QUOTA_MAX && got.quota_window == AG_QW_30D, "read back") &&
	       ASSERT_OK(ag_agent_delete(ctx, "q-chk"), "delete") &&
	       AGENT("q-chk", 1, 10, AG_UNIT_PPS, NULL, NULL, &a) &&
	       ASSERT_OK(ag_agent_get(ctx, "q-chk", &got), "get") &&
	       ASSERT_EQ(got.quota, 0, "a slot used again starts without a quota");
}

static bool setup(void)
{
	struct ag_open_opts o = { .pin_root = testenv_pin_root("path"), .create = true,
				  .max_agents = 128, .max_rules = 64 };

	pin_root = o.pin_root;
	return ASSERT_OK(ag_open(&o, &ctx), "open") && ASSERT_OK(ag_prog_load(ctx, &prog), "load");
}

static const struct {
	const char *name;
	bool (*fn)(void);
} cases[] = {
	{ "parent: caps the sum of its children; refused packets cost the child nothing",
	  test_parent_caps_children },
	{ "parent: a flooding agent gets its own rate, the parent pays only for admissions",
	  test_flooding_agent_own_rate },
	{ "three levels: refused at the top, charged nowhere", test_three_levels },
	{ "four levels (AG_PATH_MAX): refused at the top, charged nowhere", test_four_levels },
	{ "dry-run: a parent's refusal passes, would-drop, charges nothing", test_dry_run_parent },
	{ "links: kinds, cycles, depth, unknown parents, rules, deletes checked", test_link_checks },
	{ "unlinked agent is on its own again", test_unlink },
	{ "conn: TCP SYN without ACK charged, the rest free", test_conn_tcp },
	{ "conn: QUIC v1/v2 Initial charged, other long headers and short headers free",
	  test_conn_quic },
	{ "conn: a first fragment too short to show the flags is an opening",
	  test_conn_tiny_fragment },
	{ "conn parent over a pps agent limits openings only", test_conn_parent_over_pps },
	{ "conn agent under a pps parent: openings at the agent, every packet at the parent",
	  test_conn_agent_under_parent },
	{ "consume walks the path: all or nothing, the fewest left, the longest wait",
	  test_consume_walks_path },
	{ "charge: into debt, the NIC drops until paid back, bounded, parents charged",
	  test_charge_debt },
	{ "quota: three a day, the rate keeps what the quota refused; a new day (simulated) "
	  "starts afresh",
	  test_quota_day },
	{ "quota: a parent's caps its children, reasons quota and parent", test_quota_parent },
	{ "quota: bps counts bytes, conn counts openings", test_quota_units },
	{ "quota: consume's retry after is the window's end; charges count past the limit",
	  test_quota_consume_charge },
	{ "quota: bad limits and windows refused; a slot used again has none",
	  test_quota_checks },
};

int main(void)
{
	size_t i, n = sizeof(cases) / sizeof(cases[0]);

	h_require_root();
	h_plan((int)n);
	if (!setup()) {
		fprintf(stderr, "setup failed: %s\n", ag_errmsg());
		return 1;
	}
	for (i = 0; i < n; i++)
		h_result(cases[i].name, cases[i].fn());
	ag_prog_free(prog);
	ag_close(ctx);
	return h_exit();
}
