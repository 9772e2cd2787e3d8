// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Datapath fixtures through BPF_PROG_TEST_RUN: each row is a frame, the
 * verdict it must get and the exact counter deltas it must cause. Every
 * agent's counters and every global reason counter are compared before and
 * after, so a fixture also proves that nothing else moved.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include <bpf/bpf.h>
#include <linux/bpf.h>

#include "agentgate.h"
#include "agentgate/gcra.h"
#include "fixtures.h"
#include "harness.h"
#include "testenv.h"

static struct ag_ctx *ctx;
static struct ag_prog *prog;
static __u32 slots[A__COUNT];

#define MAX_STATS 4
#define MAX_PRELUDE 3

struct fixture {
	const char *desc;
	void (*build)(struct pkt *p);
	int verdict;                /* XDP_PASS / XDP_DROP */
	int agent;                  /* charged agent or A_NONE */
	int stats[MAX_STATS];       /* reasons expected to move by +1 (0-terminated: +1) */
	int default_action;         /* AG_ACTION_* while the fixture runs */
	int dry_run;
	/* Frames run first, under the same settings, outside the deltas: the
	 * first fragments a later fragment follows. ag_frags starts empty. */
	void (*prelude[MAX_PRELUDE])(struct pkt *p);
};

/* Reasons are stored +1 so that a zero-initialised slot means "none". */
#define S(x) (AG_STAT_##x + 1)

static const struct fixture fixtures[] = {
	/* IPv4 classification */
	{ "ipv4 udp matches /8 wildcard", f_v4_udp_net10, XDP_PASS, A_NET10 },
	{ "ipv4 tcp longest prefix /16 beats /8", f_v4_tcp_net10_1, XDP_PASS, A_NET10_1 },
	{ "ipv4 port rule beats wildcard of equal length", f_v4_tcp_web443, XDP_PASS, A_WEB443 },
	{ "ipv4 /8 port rule beats /8 wildcard", f_v4_tcp_wide443, XDP_PASS, A_WIDE443 },
	{ "ipv4 host /32 wildcard beats shorter port rule", f_v4_udp_host443, XDP_PASS, A_HOST },
	{ "ipv4 host /32 port rule", f_v4_tcp_host80, XDP_PASS, A_HOST80 },
	{ "ipv4 host port rule, other port falls to /16 port rule", f_v4_tcp_host80_443, XDP_PASS,
	  A_WEB443 },
	{ "ipv4 host port rule, other port falls to /16 wildcard", f_v4_tcp_host80_22, XDP_PASS,
	  A_NET10_1 },
	{ "ipv4 icmp has no port: wildcard only", f_v4_icmp_net10_1, XDP_PASS, A_NET10_1,
	  { S(NO_PORT) } },
	{ "ipv4 icmp skips /8 port rule", f_v4_icmp_net10, XDP_PASS, A_NET10, { S(NO_PORT) } },
	{ "ipv4 sctp port", f_v4_sctp_web443, XDP_PASS, A_WEB443 },
	{ "ipv4 udplite port", f_v4_udplite_web443, XDP_PASS, A_WEB443 },
	{ "ipv4 options honoured (ihl 6)", f_v4_options, XDP_PASS, A_WEB443 },
	{ "ipv4 maximal options (ihl 15)", f_v4_max_options, XDP_PASS, A_WEB443 },
	{ "ipv4 0.0.0.0/0 port rule", f_v4_all8443, XDP_PASS, A_ALL },
	{ "ipv4 unclassified, default pass", f_v4_unclassified, XDP_PASS, A_NONE,
	  { S(UNCLASSIFIED_PASSED) } },
	{ "ipv4 unclassified, default drop", f_v4_unclassified, XDP_DROP, A_NONE,
	  { S(UNCLASSIFIED_DROPPED) }, AG_ACTION_DROP },
	{ "ipv4 unclassified, default drop in dry-run", f_v4_unclassified, XDP_PASS, A_NONE,
	  { S(UNCLASSIFIED_PASSED), S(DRYRUN_WOULD_DROP) }, AG_ACTION_DROP, 1 },
	{ "ipv4 classified traffic ignores default drop", f_v4_tcp_web443, XDP_PASS, A_WEB443, {},
	  AG_ACTION_DROP },
	/* IPv4 fragments */
	{ "ipv4 first fragment has a port", f_v4_first_frag, XDP_PASS, A_WEB443 },
	{ "ipv4 non-first fragment, its first not seen: prefix only", f_v4_later_frag, XDP_PASS,
	  A_NET10_1, { S(FRAGMENT), S(FRAGMENT_ORPHAN) } },
	{ "ipv4 DF flag is not a fragment", f_v4_dont_frag, XDP_PASS, A_WEB443 },
	{ "ipv4 later fragment follows its first fragment to the port rule", f_v4_later_frag,
	  XDP_PASS, A_WEB443, { S(FRAGMENT) }, .prelude = { f_v4_first_frag } },
	{ "ipv4 later fragment, first of another identification: prefix only", f_v4_later_id9,
	  XDP_PASS, A_NET10_1, { S(FRAGMENT), S(FRAGMENT_ORPHAN) },
	  .prelude = { f_v4_first_id8 } },
	{ "ipv4 later fragment, first to another destination: prefix only", f_v4_later_id9,
	  XDP_PASS, A_NET10_1, { S(FRAGMENT), S(FRAGMENT_ORPHAN) },
	  .prelude = { f_v4_first_id9_dst2 } },
	{ "ipv4 later fragment, first of another protocol: prefix only", f_v4_later_id9,
	  XDP_PASS, A_NET10_1, { S(FRAGMENT), S(FRAGMENT_ORPHAN) },
	  .prelude = { f_v4_first_id9_tcp } },
	{ "ipv4 later fragment of the same identification follows", f_v4_later_id9, XDP_PASS,
	  A_WEB443, { S(FRAGMENT) }, .prelude = { f_v4_first_id9 } },
	{ "ipv4 port-scoped agent: its later fragment is charged to it", f_v4_later_172, XDP_PASS,
	  A_ALL, { S(FRAGMENT) }, .prelude = { f_v4_first_8443 } },
	{ "ipv4 port-scoped agent: its later fragment passes default drop", f_v4_later_172,
	  XDP_PASS, A_ALL, { S(FRAGMENT) }, AG_ACTION_DROP, .prelude = { f_v4_first_8443 } },
	{ "ipv4 later fragment, first not seen, only a port rule covers the source: dropped",
	  f_v4_later_172, XDP_DROP, A_NONE,
	  { S(FRAGMENT), S(FRAGMENT_ORPHAN), S(PORT_UNKNOWN_DROPPED) } },
	{ "ipv4 the same in dry-run: passed, counted", f_v4_later_172, XDP_PASS, A_NONE,
	  { S(FRAGMENT), S(FRAGMENT_ORPHAN), S(PORT_UNKNOWN_DROPPED), S(DRYRUN_WOULD_DROP) },
	  AG_ACTION_PASS, 1 },
	{ "ipv4 later fragment of an unclassified datagram: unclassified", f_v4_later_172,
	  XDP_PASS, A_NONE, { S(FRAGMENT), S(UNCLASSIFIED_PASSED) }, .prelude = { f_v4_first_53 } },
	{ "ipv4 later fragment of an unclassified datagram, default drop", f_v4_later_172, XDP_DROP,
	  A_NONE, { S(FRAGMENT), S(UNCLASSIFIED_DROPPED) }, AG_ACTION_DROP,
	  .prelude = { f_v4_first_53 } },
	{ "ipv4 a decoy first fragment stays with the agent charged", f_v4_first_53, XDP_PASS,
	  A_ALL, {}, .prelude = { f_v4_first_8443 } },
	{ "ipv4 later fragment after a decoy first fragment", f_v4_later_172, XDP_PASS, A_ALL,
	  { S(FRAGMENT) }, .prelude = { f_v4_first_8443, f_v4_first_53 } },
	{ "ipv4 the real first fragment after a decoy is charged", f_v4_first_8443, XDP_PASS,
	  A_ALL, {}, .prelude = { f_v4_first_53 } },
	{ "ipv4 later fragment after decoy and real first fragments", f_v4_later_172, XDP_PASS,
	  A_ALL, { S(FRAGMENT) }, .prelude = { f_v4_first_53, f_v4_first_8443 } },
	{ "ipv4 first fragment without its port (2 bytes of UDP): prefix only", f_v4_tiny_first,
	  XDP_PASS, A_NET10_1, { S(L4_TRUNCATED) } },
	{ "ipv4 later fragment follows a first fragment without its port", f_v4_later_id9,
	  XDP_PASS, A_NET10_1, { S(FRAGMENT) }, .prelude = { f_v4_tiny_first } },
	/* IPv4 malformed */
	{ "ipv4 ethertype with no header", f_eth_only_ipv4, XDP_PASS, A_NONE,
	  { S(IPV4_TRUNCATED) } },
	{ "ipv4 header cut short", f_v4_header_cut, XDP_PASS, A_NONE, { S(IPV4_TRUNCATED) } },
	{ "ipv4 ihl 4 is malformed", f_v4_bad_ihl, XDP_PASS, A_NONE, { S(IPV4_BAD_IHL) } },
	{ "ipv4 ihl beyond the frame", f_v4_ihl_beyond_frame, XDP_PASS, A_NONE,
	  { S(IPV4_TRUNCATED) } },
	{ "ipv4 total length below header", f_v4_short_totlen, XDP_PASS, A_NONE,
	  { S(IPV4_BAD_TOTLEN) } },
	{ "ipv4 ethertype carrying version 6", f_v4_bad_version, XDP_PASS, A_NONE,
	  { S(IP_BAD_VERSION) } },
	{ "ipv4 truncated l4 still charged by prefix", f_v4_l4_truncated, XDP_PASS, A_NET10_1,
	  { S(L4_TRUNCATED) } },
	{ "malformed passes even with default drop", f_v4_bad_ihl, XDP_PASS, A_NONE,
	  { S(IPV4_BAD_IHL) }, AG_ACTION_DROP },
	{ "arp is not ip: passed", f_arp, XDP_PASS, A_NONE, { S(NON_IP) } },
	{ "arp passes with default drop", f_arp, XDP_PASS, A_NONE, { S(NON_IP) }, AG_ACTION_DROP },
	/* IPv4 authentication header, walked as IPv6's */
	{ "ipv4 authentication header then tcp: the port rule", f_v4_ah_web443, XDP_PASS,
	  A_WEB443 },
	{ "ipv4 authentication header to a port-scoped agent passes default drop",
	  f_v4_ah_all8443, XDP_PASS, A_ALL, {}, AG_ACTION_DROP },
	{ "ipv4 authentication header longer than the frame: prefix only", f_v4_ah_truncated,
	  XDP_PASS, A_NET10_1, { S(IPV4_AH_TRUNCATED) } },
	{ "ipv4 authentication header cut before its length: prefix only", f_v4_ah_len_cut,
	  XDP_PASS, A_NET10_1, { S(IPV4_AH_TRUNCATED) } },
	/* IP inside PPPoE, MPLS, MACsec: the default action */
	{ "pppoe session ipv4, default drop: dropped", f_pppoe_v4, XDP_DROP, A_NONE,
	  { S(IP_CARRIER), S(UNCLASSIFIED_DROPPED) }, AG_ACTION_DROP },
	{ "pppoe session ipv4, default pass: passed", f_pppoe_v4, XDP_PASS, A_NONE,
	  { S(IP_CARRIER), S(UNCLASSIFIED_PASSED) } },
	{ "pppoe session ipv6, default drop: dropped", f_pppoe_v6, XDP_DROP, A_NONE,
	  { S(IP_CARRIER), S(UNCLASSIFIED_DROPPED) }, AG_ACTION_DROP },
	{ "pppoe session ipv6, default pass: passed", f_pppoe_v6, XDP_PASS, A_NONE,
	  { S(IP_CARRIER), S(UNCLASSIFIED_PASSED) } },
	{ "mpls unicast, default drop: dropped", f_mpls_uc, XDP_DROP, A_NONE,
	  { S(IP_CARRIER), S(UNCLASSIFIED_DROPPED) }, AG_ACTION_DROP },
	{ "mpls unicast, default pass: passed", f_mpls_uc, XDP_PASS, A_NONE,
	  { S(IP_CARRIER), S(UNCLASSIFIED_PASSED) } },
	{ "mpls multicast, default drop: dropped", f_mpls_mc, XDP_DROP, A_NONE,
	  { S(IP_CARRIER), S(UNCLASSIFIED_DROPPED) }, AG_ACTION_DROP },
	{ "mpls multicast, default pass: passed", f_mpls_mc, XDP_PASS, A_NONE,
	  { S(IP_CARRIER), S(UNCLASSIFIED_PASSED) } },
	{ "macsec, default drop: dropped", f_macsec, XDP_DROP, A_NONE,
	  { S(IP_CARRIER), S(UNCLASSIFIED_DROPPED) }, AG_ACTION_DROP },
	{ "macsec, default pass: passed", f_macsec, XDP_PASS, A_NONE,
	  { S(IP_CARRIER), S(UNCLASSIFIED_PASSED) } },
	{ "mpls behind a vlan tag, default drop: dropped", f_vlan_mpls, XDP_DROP, A_NONE,
	  { S(IP_CARRIER), S(UNCLASSIFIED_DROPPED) }, AG_ACTION_DROP },
	{ "pppoe session ipv4, default drop in dry-run: passed, counted", f_pppoe_v4, XDP_PASS,
	  A_NONE, { S(IP_CARRIER), S(UNCLASSIFIED_PASSED), S(DRYRUN_WOULD_DROP) },
	  AG_ACTION_DROP, 1 },
	{ "pppoe session lcp is a link protocol: passed with default drop", f_pppoe_lcp, XDP_PASS,
	  A_NONE, { S(NON_IP) }, AG_ACTION_DROP },
	/* VLAN */
	{ "802.1Q tag", f_vlan_q_v4, XDP_PASS, A_WEB443 },
	{ "802.1ad + 802.1Q tags", f_vlan_qinq_v4, XDP_PASS, A_WEB443 },
	{ "802.1Q tag over ipv6", f_vlan_q_v6, XDP_PASS, A_V6WEB },
	{ "802.1ad + 2 x 802.1Q tags", f_vlan_adqq_v4, XDP_PASS, A_WEB443 },
	{ "three priority tags (VLAN ID 0) over ipv4", f_vlan_prio3_v4, XDP_PASS, A_WEB443 },
	{ "three priority tags over ipv6", f_vlan_prio3_v6, XDP_PASS, A_V6WEB },
	{ "three tags with priority and DEI bits, VLAN ID 0", f_vlan_pcp3_v4, XDP_PASS, A_WEB443 },
	{ "eight tags, 802.1ad and 802.1Q mixed: the kernel's most", f_vlan_prio8_v4, XDP_PASS,
	  A_WEB443 },
	{ "eight tags over ipv6", f_vlan_prio8_v6, XDP_PASS, A_V6WEB },
	{ "nine tags are too deep: dropped", f_vlan_prio9_v4, XDP_DROP, A_NONE,
	  { S(VLAN_TOO_DEEP) } },
	{ "nine tags over ipv6, default pass: dropped", f_vlan_prio9_v6, XDP_DROP, A_NONE,
	  { S(VLAN_TOO_DEEP) } },
	{ "nine tags in dry-run: passed, counted", f_vlan_prio9_v4, XDP_PASS, A_NONE,
	  { S(VLAN_TOO_DEEP), S(DRYRUN_WOULD_DROP) }, AG_ACTION_PASS, 1 },
	{ "0x9100 is not a tag: not ip", f_vlan_9100, XDP_PASS, A_NONE, { S(NON_IP) } },
	{ "0x9100 inside a priority tag: not ip", f_vlan_q_9100, XDP_PASS, A_NONE, { S(NON_IP) } },
	{ "truncated vlan tag", f_vlan_truncated, XDP_PASS, A_NONE, { S(VLAN_TRUNCATED) } },
	{ "truncated second vlan tag", f_vlan_second_truncated, XDP_PASS, A_NONE,
	  { S(VLAN_TRUNCATED) } },
	/* IPv6 */
	{ "ipv6 udp matches /32 wildcard", f_v6_udp_net, XDP_PASS, A_V6NET },
	{ "ipv6 /48 port rule", f_v6_tcp_web, XDP_PASS, A_V6WEB },
	{ "ipv6 /48 port rule, other port falls to /32", f_v6_tcp_web_80, XDP_PASS, A_V6NET },
	{ "ipv6 host /128 rule", f_v6_host, XDP_PASS, A_V6HOST },
	{ "ipv6 host /128 port rule", f_v6_dns, XDP_PASS, A_V6DNS },
	{ "ipv6 host port rule, other port", f_v6_dns_other_port, XDP_PASS, A_V6NET },
	{ "ipv6 unclassified", f_v6_unclassified, XDP_PASS, A_NONE, { S(UNCLASSIFIED_PASSED) } },
	{ "ipv6 hop-by-hop + dstopts then tcp", f_v6_hop_dst, XDP_PASS, A_V6WEB },
	{ "ipv6 routing + first fragment then udp", f_v6_rt_frag0, XDP_PASS, A_V6WEB },
	{ "ipv6 authentication header then tcp", f_v6_ah, XDP_PASS, A_V6WEB },
	{ "ipv6 six extension headers walked", f_v6_chain6, XDP_PASS, A_V6WEB },
	{ "ipv6 seven extension headers walked", f_v6_chain7, XDP_PASS, A_V6WEB },
	{ "ipv6 twelve extension headers walked: the kernel's most", f_v6_chain12, XDP_PASS,
	  A_V6WEB },
	{ "ipv6 twelve headers to a port rule no wildcard rule shadows", f_v6_chain12_p9000,
	  XDP_PASS, A_V6P9000 },
	{ "ipv6 thirteen extension headers: port out of reach, prefix only", f_v6_chain13,
	  XDP_PASS, A_V6NET, { S(IPV6_EXT_CHAIN) } },
	{ "ipv6 thirteen headers, only a port rule covers the source: dropped",
	  f_v6_chain13_p9000, XDP_DROP, A_NONE, { S(IPV6_EXT_CHAIN), S(PORT_UNKNOWN_DROPPED) } },
	{ "ipv6 the same in dry-run: passed, counted", f_v6_chain13_p9000, XDP_PASS, A_NONE,
	  { S(IPV6_EXT_CHAIN), S(PORT_UNKNOWN_DROPPED), S(DRYRUN_WOULD_DROP) }, AG_ACTION_PASS,
	  1 },
	{ "ipv6 every header kind walked, an atomic fragment among them", f_v6_mixed_chain,
	  XDP_PASS, A_V6WEB },
	{ "ipv6 atomic fragment is a whole packet", f_v6_atomic_frag, XDP_PASS, A_V6WEB },
	{ "ipv6 non-first fragment, its first not seen: prefix only", f_v6_later_frag, XDP_PASS,
	  A_V6NET, { S(FRAGMENT), S(FRAGMENT_ORPHAN) } },
	{ "ipv6 first fragment has a port", f_v6_first_id3, XDP_PASS, A_V6WEB },
	{ "ipv6 later fragment follows its first fragment to the port rule", f_v6_later_id3,
	  XDP_PASS, A_V6WEB, { S(FRAGMENT) }, .prelude = { f_v6_first_id3 } },
	{ "ipv6 the key has no next header (as the kernel's)", f_v6_later_id3_tcp, XDP_PASS,
	  A_V6WEB, { S(FRAGMENT) }, .prelude = { f_v6_first_id3 } },
	{ "ipv6 fragment header inside a chain: first fragment", f_v6_first_id3_chain, XDP_PASS,
	  A_V6WEB },
	{ "ipv6 fragment header inside a chain: later fragment follows", f_v6_later_id3_chain,
	  XDP_PASS, A_V6WEB, { S(FRAGMENT) }, .prelude = { f_v6_first_id3_chain } },
	{ "ipv6 port-scoped agent: its later fragment is charged to it", f_v6_later_p9000,
	  XDP_PASS, A_V6P9000, { S(FRAGMENT) }, .prelude = { f_v6_first_p9000 } },
	{ "ipv6 port-scoped agent: its later fragment passes default drop", f_v6_later_p9000,
	  XDP_PASS, A_V6P9000, { S(FRAGMENT) }, AG_ACTION_DROP, .prelude = { f_v6_first_p9000 } },
	{ "ipv6 later fragment, first not seen, only a port rule covers the source: dropped",
	  f_v6_later_p9000, XDP_DROP, A_NONE,
	  { S(FRAGMENT), S(FRAGMENT_ORPHAN), S(PORT_UNKNOWN_DROPPED) } },
	{ "ipv6 a later fragment's header after a first one's: the later decides",
	  f_v6_nested_frag, XDP_PASS, A_V6NET, { S(FRAGMENT), S(FRAGMENT_ORPHAN) },
	  .prelude = { f_v6_first_id3 } },
	{ "ipv6 esp has no port", f_v6_esp, XDP_PASS, A_V6NET, { S(NO_PORT) } },
	{ "ipv6 extension header longer than frame", f_v6_ext_truncated, XDP_PASS, A_V6NET,
	  { S(IPV6_EXT_TRUNCATED) } },
	{ "ipv6 extension header cut before its length", f_v6_ext_len_cut, XDP_PASS, A_V6NET,
	  { S(IPV6_EXT_TRUNCATED) } },
	{ "ipv6 truncated l4", f_v6_l4_truncated, XDP_PASS, A_V6NET, { S(L4_TRUNCATED) } },
	{ "ipv6 header cut short", f_v6_truncated, XDP_PASS, A_NONE, { S(IPV6_TRUNCATED) } },
	{ "ipv6 ethertype carrying version 4", f_v6_bad_version, XDP_PASS, A_NONE,
	  { S(IP_BAD_VERSION) } },
	/* conn: the datagram's end cuts a header off, not the frame's. The
	 * prelude's SYN takes the agent's one token: an opening is dropped. */
	{ "conn: a syn once the token is taken is dropped", f_v4_syn_conn, XDP_DROP, A_CONN4, {},
	  .prelude = { f_v4_syn_conn } },
	{ "conn: ipv4 tiny tcp first fragment padded to 60 bytes is an opening",
	  f_v4_tiny_tcp_padded, XDP_DROP, A_CONN4, {}, .prelude = { f_v4_syn_conn } },
	{ "conn: ipv4 tiny udp first fragment padded (no quic header shown) is an opening",
	  f_v4_tiny_udp_padded, XDP_DROP, A_CONN4, {}, .prelude = { f_v4_syn_conn } },
	{ "conn: ipv4 tiny sctp first fragment padded is an opening", f_v4_tiny_sctp_padded,
	  XDP_DROP, A_CONN4, {}, .prelude = { f_v4_syn_conn } },
	{ "conn: ipv4 tiny dccp first fragment padded is an opening", f_v4_tiny_dccp_padded,
	  XDP_DROP, A_CONN4, {}, .prelude = { f_v4_syn_conn } },
	{ "conn: the rest of a dropped padded tiny first fragment is dropped",
	  f_v4_tiny_tcp_second, XDP_DROP, A_CONN4, { S(FRAGMENT), S(FRAGMENT_AFTER_DROP) },
	  .prelude = { f_v4_syn_conn, f_v4_tiny_tcp_padded } },
	{ "conn: ipv6 tiny tcp first fragment with a trailer is an opening",
	  f_v6_tiny_tcp_trailer, XDP_DROP, A_CONN6, {}, .prelude = { f_v6_syn_conn } },
	{ "conn: ipv6 tiny udp first fragment with a trailer is an opening",
	  f_v6_tiny_udp_trailer, XDP_DROP, A_CONN6, {}, .prelude = { f_v6_syn_conn } },
	{ "conn: ipv6 tiny sctp first fragment with a trailer is an opening",
	  f_v6_tiny_sctp_trailer, XDP_DROP, A_CONN6, {}, .prelude = { f_v6_syn_conn } },
	{ "conn: a whole 8-byte udp datagram, padding like a quic initial: no opening",
	  f_v4_udp8_padded_initial, XDP_PASS, A_CONN4, {}, .prelude = { f_v4_syn_conn } },
	{ "conn: a padded first fragment with a whole tcp ack: no opening", f_v4_frag_ack_padded,
	  XDP_PASS, A_CONN4, {}, .prelude = { f_v4_syn_conn } },
};

struct snapshot {
	struct ag_counters *agents;
	__u64 stats[AG_STAT__MAX];
};

static bool take(struct snapshot *s)
{
	if (!s->agents)
		s->agents = calloc(ag_max_agents(ctx), sizeof(*s->agents));
	return s->agents && ag_counters_get_all(ctx, s->agents) == 0 &&
	       ag_stats_get(ctx, s->stats) == 0;
}

static int run_frame_on(const struct ag_prog *pr, const struct pkt *p, int repeat,
			__u32 *retval)
{
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = p->b, .data_size_in = (__u32)p->len,
		    .repeat = repeat);

	if (bpf_prog_test_run_opts(ag_prog_fd(pr), &o))
		return -errno;
	*retval = o.retval;
	return 0;
}

static int run_frame(const struct pkt *p, int repeat, __u32 *retval)
{
	return run_frame_on(prog, p, repeat, retval);
}

static int agent_of_slot(__u32 slot)
{
	int a;

	for (a = 0; a < A__COUNT; a++)
		if (slots[a] == slot)
			return a;
	return A_NONE;
}

/* Compare every counter: the expected agent and reasons moved, nothing else. */
static bool check_deltas(const struct snapshot *before, const struct snapshot *after,
			 const struct ag_counters *want, int agent, const __u64 *want_stats)
{
	bool ok = true;
	__u32 s;
	int i;

	for (s = 0; s < ag_max_agents(ctx); s++) {
		const struct ag_counters *b = &before->agents[s], *a = &after->agents[s];
		static const struct ag_counters none;
		const struct ag_counters *w = agent_of_slot(s) == agent && agent != A_NONE ?
						      want : &none;
		char what[64];

		snprintf(what, sizeof(what), "slot %u (%s)", s,
			 agent_of_slot(s) == A_NONE ? "-" : agent_defs[agent_of_slot(s)].name);
		ok &= ASSERT_EQ(a->passed_packets - b->passed_packets, w->passed_packets, what);
		ok &= ASSERT_EQ(a->passed_bytes - b->passed_bytes, w->passed_bytes, what);
		ok &= ASSERT_EQ(a->dropped_packets - b->dropped_packets, w->dropped_packets, what);
		ok &= ASSERT_EQ(a->dropped_bytes - b->dropped_bytes, w->dropped_bytes, what);
		ok &= ASSERT_EQ(a->would_drop_packets - b->would_drop_packets,
				w->would_drop_packets, what);
		ok &= ASSERT_EQ(a->would_drop_bytes - b->would_drop_bytes, w->would_drop_bytes,
				what);
	}
	for (i = 0; i < AG_STAT__MAX; i++)
		ok &= ASSERT_EQ(after->stats[i] - before->stats[i], want_stats[i],
				ag_stat_name(i));
	return ok;
}

/* Forget every first fragment: each fixture starts from an empty ag_frags. */
static bool frags_clear(void)
{
	struct ag_frag_key k, next;
	char path[PATH_MAX];
	int fd, n = 0;

	snprintf(path, sizeof(path), "%s/%s", ag_pin_root(ctx), AG_MAP_FRAGS);
	fd = bpf_obj_get(path);
	if (!ASSERT_TRUE(fd >= 0, "open ag_frags"))
		return false;
	while (!bpf_map_get_next_key(fd, NULL, &next) && n++ < 100000) {
		k = next;
		bpf_map_delete_elem(fd, &k);
	}
	close(fd);
	return ASSERT_TRUE(n < 100000, "ag_frags emptied");
}

static bool set_config(int default_action, int dry_run)
{
	return ASSERT_OK(ag_config_set_default_action(ctx, default_action), "default action") &&
	       ASSERT_OK(ag_config_set_dry_run(ctx, dry_run), "dry run");
}

static bool run_fixture(const struct fixture *f)
{
	struct snapshot before = {}, after = {};
	struct ag_counters want = {};
	__u64 want_stats[AG_STAT__MAX] = {};
	struct pkt p = {};
	__u32 retval = 0;
	bool ok = false;
	int i;

	if (!frags_clear() || !set_config(f->default_action, f->dry_run))
		goto out;
	for (i = 0; i < MAX_PRELUDE && f->prelude[i]; i++) {
		f->prelude[i](&p);
		if (!ASSERT_OK(run_frame(&p, 1, &retval), "prelude run"))
			goto out;
	}
	f->build(&p);
	if (!take(&before))
		goto out;
	if (!ASSERT_OK(run_frame(&p, 1, &retval), "test run"))
		goto out;
	if (!ASSERT_EQ(retval, f->verdict, "verdict") || !take(&after))
		goto out;
	if (f->verdict == XDP_PASS) {
		want.passed_packets = 1;
		want.passed_bytes = p.len;
	} else {
		want.dropped_packets = 1;
		want.dropped_bytes = p.len;
	}
	for (i = 0; i < MAX_STATS && f->stats[i]; i++)
		want_stats[f->stats[i] - 1]++;
	ok = check_deltas(&before, &after, &want, f->agent, want_stats);
out:
	free(before.agents);
	free(after.agents);
	set_config(AG_ACTION_PASS, 0);
	return ok;
}

/* ---- sequences: frames that depend on bucket state --------------------- */

struct seq_expect {
	__u64 passed, dropped, would_drop;
	__u64 frame_len;
	__u64 dryrun_stat;
};

/* Send `n` copies of a frame as separate runs and check the agent's deltas. */
static bool send_n(int agent, const struct pkt *p, int n, const struct seq_expect *e)
{
	struct snapshot before = {}, after = {};
	struct ag_counters want = {};
	__u64 want_stats[AG_STAT__MAX] = {};
	__u32 retval;
	bool ok = false;
	int i;

	if (!take(&before))
		goto out;
	for (i = 0; i < n; i++)
		if (!ASSERT_OK(run_frame(p, 1, &retval), "test run"))
			goto out;
	if (!take(&after))
		goto out;
	want.passed_packets = e->passed;
	want.passed_bytes = e->passed * p->len;
	want.dropped_packets = e->dropped;
	want.dropped_bytes = e->dropped * p->len;
	want.would_drop_packets = e->would_drop;
	want.would_drop_bytes = e->would_drop * p->len;
	want_stats[AG_STAT_DRYRUN_WOULD_DROP] = e->dryrun_stat;
	ok = check_deltas(&before, &after, &want, agent, want_stats);
out:
	free(before.agents);
	free(after.agents);
	return ok;
}

static bool set_limit(int agent, double rate, __u64 burst, enum ag_unit unit)
{
	struct ag_agent_update u = { .fields = AG_SET_RATE | AG_SET_BURST | AG_SET_UNIT,
				     .rate = rate,
				     .burst = burst,
				     .unit = unit };

	return ASSERT_OK(ag_agent_set(ctx, agent_defs[agent].name, &u, NULL, NULL), "set") &&
	       ASSERT_OK(ag_bucket_reset(ctx, slots[agent]), "reset");
}

static bool test_pps_burst(void)
{
	struct pkt p;
	struct seq_expect e = { .passed = 3, .dropped = 2 };

	f_v4_lim(&p);
	/* 1 token/s: nothing refills within the test; burst 3 then drops. */
	return set_limit(A_LIM, 1, 3, AG_UNIT_PPS) && send_n(A_LIM, &p, 5, &e);
}

static bool test_pps_burst_repeat(void)
{
	struct snapshot before = {}, after = {};
	struct pkt p;
	__u32 retval;
	bool ok;

	/* One BPF_PROG_TEST_RUN with repeat: the last run's verdict is a drop. */
	f_v4_lim(&p);
	ok = set_limit(A_LIM, 1, 3, AG_UNIT_PPS) && take(&before) &&
	     ASSERT_OK(run_frame(&p, 10, &retval), "test run") &&
	     ASSERT_EQ(retval, XDP_DROP, "last verdict") && take(&after) &&
	     ASSERT_EQ(after.agents[slots[A_LIM]].passed_packets -
			       before.agents[slots[A_LIM]].passed_packets,
		       3, "passed") &&
	     ASSERT_EQ(after.agents[slots[A_LIM]].dropped_packets -
			       before.agents[slots[A_LIM]].dropped_packets,
		       7, "dropped");
	free(before.agents);
	free(after.agents);
	return ok;
}

static bool test_dry_run_bucket(void)
{
	struct pkt p;
	struct seq_expect e = { .passed = 5, .would_drop = 2, .dryrun_stat = 2 };
	bool ok;

	f_v4_lim(&p);
	ok = set_limit(A_LIM, 1, 3, AG_UNIT_PPS) && set_config(AG_ACTION_PASS, 1) &&
	     send_n(A_LIM, &p, 5, &e);
	return set_config(AG_ACTION_PASS, 0) && ok;
}

static void bps_frame(struct pkt *p, size_t len)
{
	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, "198.51.100.9", NULL, IPPROTO_UDP, NULL);
	pkt_udp(p, 9);
	pkt_pad_to(p, len);
	pkt_finish(p);
}

static bool test_bps_bytes(void)
{
	struct pkt p;
	struct seq_expect e = { .passed = 2, .dropped = 1 };

	/* 1000-byte burst holds two 400-byte frames, not a third. */
	bps_frame(&p, 400);
	return set_limit(A_BPS, 1, 1000, AG_UNIT_BPS) && send_n(A_BPS, &p, 3, &e);
}

static bool test_bps_frame_over_burst(void)
{
	struct pkt p;
	struct seq_expect e = { .dropped = 2 };

	bps_frame(&p, 1200); /* larger than the whole burst */
	return set_limit(A_BPS, 1, 1000, AG_UNIT_BPS) && send_n(A_BPS, &p, 2, &e);
}

static bool test_bps_exact_fit(void)
{
	struct pkt p;
	struct seq_expect e = { .passed = 1, .dropped = 1 };

	bps_frame(&p, 500);
	return set_limit(A_BPS, 1, 500, AG_UNIT_BPS) && send_n(A_BPS, &p, 2, &e);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts))
		;
}

static bool test_refill(void)
{
	struct pkt p;
	struct seq_expect one = { .passed = 1 }, denied = { .dropped = 1 };

	/* 10 tokens/s, burst 1: a token every 100 ms. */
	f_v4_lim(&p);
	return set_limit(A_LIM, 10, 1, AG_UNIT_PPS) && send_n(A_LIM, &p, 1, &one) &&
	       send_n(A_LIM, &p, 1, &denied) && (sleep_ms(150), true) &&
	       send_n(A_LIM, &p, 1, &one) && send_n(A_LIM, &p, 1, &denied);
}

static bool test_refill_caps_at_burst(void)
{
	struct pkt p;
	struct seq_expect e = { .passed = 2, .dropped = 3 };

	/* 100 tokens/s for 300 ms would be 30 tokens, but the burst is 2. */
	f_v4_lim(&p);
	return set_limit(A_LIM, 100, 2, AG_UNIT_PPS) && (sleep_ms(300), true) &&
	       send_n(A_LIM, &p, 5, &e);
}

static bool test_userspace_reset(void)
{
	struct pkt p;
	struct seq_expect empty = { .passed = 3, .dropped = 1 }, again = { .passed = 3 };

	f_v4_lim(&p);
	return set_limit(A_LIM, 1, 3, AG_UNIT_PPS) && send_n(A_LIM, &p, 4, &empty) &&
	       ASSERT_OK(ag_bucket_reset(ctx, slots[A_LIM]), "reset") &&
	       send_n(A_LIM, &p, 3, &again);
}

static bool test_userspace_drain(void)
{
	struct pkt p;
	struct seq_expect e = { .passed = 1, .dropped = 2 };
	double left = -1;

	f_v4_lim(&p);
	return set_limit(A_LIM, 1, 3, AG_UNIT_PPS) &&
	       ASSERT_OK(ag_bucket_drain(ctx, slots[A_LIM], 2, &left), "drain") &&
	       ASSERT_TRUE(left > 0.99 && left < 1.01, "one token left") &&
	       send_n(A_LIM, &p, 3, &e);
}

static bool test_userspace_consume_shares_bucket(void)
{
	struct ag_consume_result r;
	struct pkt p;
	struct seq_expect e = { .passed = 1, .dropped = 1 };

	f_v4_lim(&p);
	return set_limit(A_LIM, 1, 3, AG_UNIT_PPS) &&
	       ASSERT_OK(ag_bucket_consume(ctx, slots[A_LIM], 2, &r), "consume") &&
	       ASSERT_TRUE(r.allowed, "allowed") && send_n(A_LIM, &p, 2, &e) &&
	       ASSERT_OK(ag_bucket_consume(ctx, slots[A_LIM], 1, &r), "consume") &&
	       ASSERT_TRUE(!r.allowed, "denied once XDP emptied it") &&
	       ASSERT_TRUE(r.retry_after_ns > 0 && r.retry_after_ns <= 1000000000ULL,
			   "retry after within one token's time");
}

static bool test_rate_change_keeps_tokens(void)
{
	struct pkt p;
	struct seq_expect e = { .passed = 1, .dropped = 1 };

	/* Empty the bucket, then raise the rate: still empty, no burst appears. */
	f_v4_lim(&p);
	return set_limit(A_LIM, 1, 3, AG_UNIT_PPS) &&
	       ASSERT_OK(ag_bucket_drain(ctx, slots[A_LIM], 2, NULL), "drain") &&
	       ASSERT_OK(ag_agent_set(ctx, "lim",
				      &(struct ag_agent_update){ .fields = AG_SET_RATE, .rate = 2 },
				      NULL, NULL),
			 "raise rate") &&
	       send_n(A_LIM, &p, 2, &e);
}

static bool test_deleted_agent_unclassified(void)
{
	struct snapshot before = {}, after = {};
	struct ag_rule r;
	struct pkt p;
	__u32 retval;
	bool ok;

	/* A scratch agent on 203.0.113.0/24: delete it, its rule goes too. */
	f_v4_lim(&p);
	memcpy(p.b + 14 + 12, (unsigned char[]){ 203, 0, 113, 5 }, 4);
	ok = ASSERT_OK(ag_agent_set(ctx, "scratch",
				    &(struct ag_agent_update){ .fields = AG_SET_RATE, .rate = 1e6 },
				    NULL, NULL),
		       "create") &&
	     ASSERT_OK(ag_prefix_parse("203.0.113.0/24", &r), "prefix") &&
	     ASSERT_OK(ag_rule_add(ctx, &r, "scratch"), "rule") &&
	     ASSERT_OK(ag_agent_delete(ctx, "scratch"), "delete") && take(&before) &&
	     ASSERT_OK(run_frame(&p, 1, &retval), "run") && ASSERT_EQ(retval, XDP_PASS, "verdict") &&
	     take(&after) &&
	     ASSERT_EQ(after.stats[AG_STAT_UNCLASSIFIED_PASSED] -
			       before.stats[AG_STAT_UNCLASSIFIED_PASSED],
		       1, "unclassified");
	free(before.agents);
	free(after.agents);
	return ok;
}

/* The grandchild of a process that unshared a time namespace lives in it. */
static int reset_in_time_namespace(__u32 slot, const char *root)
{
	struct ag_open_opts o = { .pin_root = root };
	struct ag_ctx *c;
	int status, fd;
	pid_t pid;

	if (unshare(CLONE_NEWTIME))
		return 77;
	fd = open("/proc/self/timens_offsets", O_WRONLY);
	if (fd < 0 || write(fd, "monotonic 3600 0", 16) != 16)
		return 77;
	close(fd);
	pid = fork();
	if (pid == 0)
		_exit(ag_open(&o, &c) || ag_bucket_reset(c, slot) ? 1 : 0);
	if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
		return 1;
	return WEXITSTATUS(status);
}

static bool test_time_namespace(void)
{
	struct seq_expect e = { .passed = 3, .dropped = 1 };
	struct pkt p;
	int status;
	pid_t pid;

	if (access("/proc/self/ns/time", F_OK)) {
		printf("# no time namespaces here: nothing to check\n");
		return true;
	}
	/* Empty the bucket, then reset it from a clock an hour ahead: the
	 * datapath must see a full bucket, not an hour of debt. */
	f_v4_lim(&p);
	if (!set_limit(A_LIM, 1, 3, AG_UNIT_PPS) ||
	    !ASSERT_OK(ag_bucket_drain(ctx, slots[A_LIM], 3, NULL), "drain"))
		return false;
	pid = fork();
	if (pid == 0)
		_exit(reset_in_time_namespace(slots[A_LIM], ag_pin_root(ctx)));
	if (!ASSERT_TRUE(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status),
			 "child"))
		return false;
	if (WEXITSTATUS(status) == 77) {
		printf("# cannot create a time namespace: nothing to check\n");
		return true;
	}
	return ASSERT_EQ(WEXITSTATUS(status), 0, "reset in the time namespace") &&
	       send_n(A_LIM, &p, 4, &e);
}

/* ---- drops decided on the coarse clock --------------------------------- */

/* CLOCK_MONOTONIC_COARSE as the datapath reads it (bpf_ktime_get_coarse_ns()
 * and the vDSO serve the same timekeeper value); 0 inside a time namespace
 * with a monotonic offset, where the two differ. */
static __u64 coarse_now_ns(void)
{
	FILE *f = fopen("/proc/self/timens_offsets", "r");
	long long sec = 0, nsec = 0;
	struct timespec ts;
	char clock[32];

	while (f && fscanf(f, "%31s %lld %lld", clock, &sec, &nsec) == 3)
		if (!strcmp(clock, "monotonic") && (sec || nsec)) {
			fclose(f);
			return 0;
		}
	if (f)
		fclose(f);
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (__u64)ts.tv_sec * 1000000000ULL + (__u64)ts.tv_nsec;
}

static int bucket_fd(void)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", ag_pin_root(ctx), AG_MAP_BUCKETS);
	return bpf_obj_get(path);
}

enum at { AT_COARSE_UPPER, AT_EXACT_NOW };

/*
 * Place the A_LIM bucket so that its next admission is due `delta` bucket
 * ticks after a reference moment, run one frame through `pr` and compare the
 * verdict. The reference is the coarse clock plus `slack_ns` (the upper
 * bound the datapath decides drops against) or the exact clock read just
 * before the run. A case in which the coarse clock ticked between the setup
 * and the run, or lagged by more than the slack, says nothing about the
 * boundary and is made again.
 */
static bool coarse_case(struct ag_prog *pr, __u64 slack_ns, enum at at, __s64 delta,
			int verdict)
{
	struct snapshot before = {}, after = {};
	int fd = bucket_fd(), tries;
	__u32 slot = slots[A_LIM], retval = 0;
	bool ok = false;
	struct pkt p;

	f_v4_lim(&p);
	if (!ASSERT_TRUE(fd >= 0, "open ag_buckets"))
		return false;
	for (tries = 0; tries < 50; tries++) {
		__u64 c0, c1, e0, ref, tau, cost;
		struct ag_gcra_params *gp;
		struct ag_bucket b;

		c0 = coarse_now_ns();
		e0 = ag_now_ns();
		if (!c0) {
			printf("# monotonic clock offset by a time namespace: nothing to check\n");
			ok = true;
			break;
		}
		if (e0 - c0 > slack_ns && at == AT_EXACT_NOW)
			continue; /* the coarse clock lags more than the slack right now */
		if (!ASSERT_OK(bpf_map_lookup_elem(fd, &slot, &b), "read bucket"))
			break;
		gp = &b.set[b.tat >> 63];
		tau = gp->tau;
		cost = gp->interval; /* pps: one token */
		ref = ag_ns_to_ticks(at == AT_EXACT_NOW ? e0 : c0 + slack_ns, gp->mult);
		/* Next admission at ref + delta: tat + cost - tau = ref + delta. */
		b.tat = (b.tat & AG_TAT_SEL) | (ref + delta + tau - cost);
		if (!ASSERT_OK(bpf_map_update_elem(fd, &slot, &b, BPF_EXIST), "write bucket"))
			break;
		if (!take(&before) || !ASSERT_OK(run_frame_on(pr, &p, 1, &retval), "test run") ||
		    !take(&after))
			break;
		c1 = coarse_now_ns();
		if (c1 != c0)
			continue; /* the coarse clock moved: place the bucket again */
		ok = ASSERT_EQ(retval, verdict, "verdict") &&
		     ASSERT_EQ(after.agents[slot].passed_packets - before.agents[slot].passed_packets,
			       verdict == XDP_PASS, "passed") &&
		     ASSERT_EQ(after.agents[slot].dropped_packets -
				       before.agents[slot].dropped_packets,
			       verdict == XDP_DROP, "dropped");
		break;
	}
	if (tries == 50)
		ASSERT_TRUE(false, "the coarse clock stood still long enough once in 50 tries");
	close(fd);
	free(before.agents);
	free(after.agents);
	return ok;
}

/* Loads a program on ctx's maps with slack_ns (which sets it for every
 * program on them) and frees it: prog then runs with that slack. */
static bool use_slack(__s64 slack_ns)
{
	struct ag_prog_opts o = { .coarse_slack_ns = slack_ns };
	struct ag_prog *pr = NULL;
	bool ok = ASSERT_OK(ag_prog_load_opts(ctx, &o, &pr), "load with a slack");

	ag_prog_free(pr);
	return ok;
}

static bool test_coarse_boundary(void)
{
	__u64 slack = ag_coarse_slack_default_ns();
	struct ag_config cfg;
	bool ok;

	/* 1 token/s, burst 3: a token costs a second, far above any slack. */
	if (!set_limit(A_LIM, 1, 3, AG_UNIT_PPS) || !use_slack(1))
		return false;
	ok = /* With a 1 ns slack the bound is the coarse clock itself, which
	      * lags the exact one: one tick past the bound is dropped on the
	      * coarse clock although the exact clock would admit it ... */
		coarse_case(prog, 1, AT_COARSE_UPPER, 1, XDP_DROP) &&
		/* ... and a packet due exactly at the bound is judged on the
		 * exact clock, and admitted. */
		coarse_case(prog, 1, AT_COARSE_UPPER, 0, XDP_PASS) &&
		/* Without the shortcut (slack 0) the same state is judged on
		 * the exact clock, which admits it. */
		use_slack(-1) && ASSERT_OK(ag_config_get(ctx, &cfg), "config") &&
		ASSERT_EQ(cfg.coarse_slack_ns, 0, "slack 0 stored") &&
		coarse_case(prog, 1, AT_COARSE_UPPER, 1, XDP_PASS) &&
		/* The loader's slack: past the bound is a drop, and a packet
		 * due when the run starts is admitted however far the coarse
		 * clock lags (within the slack). */
		use_slack(0) && ASSERT_OK(ag_config_get(ctx, &cfg), "config") &&
		ASSERT_EQ(cfg.coarse_slack_ns, slack, "default slack stored") &&
		coarse_case(prog, slack, AT_COARSE_UPPER, 1, XDP_DROP) &&
		coarse_case(prog, slack, AT_EXACT_NOW, 0, XDP_PASS) &&
		coarse_case(prog, slack, AT_EXACT_NOW, -1, XDP_PASS);
	use_slack(0);
	return ok;
}

static bool test_coarse_slack_default(void)
{
	struct timespec res;

	/* Three ticks of the kernel timer, the coarse clock's resolution. */
	return ASSERT_OK(clock_getres(CLOCK_MONOTONIC_COARSE, &res), "clock_getres") &&
	       ASSERT_EQ(ag_coarse_slack_default_ns(),
			 3 * ((__u64)res.tv_sec * 1000000000ULL + (__u64)res.tv_nsec), "slack");
}

/* Frames below the Ethernet header: the kernel refuses them in test runs
 * (-EINVAL); where it accepts one, the program must pass and count it. */
static bool test_short_frames(void)
{
	struct snapshot before = {}, after = {};
	struct pkt p = {};
	bool ok = true;
	size_t len;

	memset(p.b, 0x08, sizeof(p.b));
	for (len = 0; len < 14 && ok; len++) {
		__u32 retval = 0;
		int err;

		p.len = len;
		ok = take(&before);
		err = run_frame(&p, 1, &retval);
		ok = ok && take(&after);
		if (!ok)
			break;
		if (err) {
			ok = ASSERT_EQ(err, -EINVAL, "kernel refusal");
			continue;
		}
		ok = ASSERT_EQ(retval, XDP_PASS, "verdict") &&
		     ASSERT_EQ(after.stats[AG_STAT_ETH_TRUNCATED] -
				       before.stats[AG_STAT_ETH_TRUNCATED],
			       1, "eth_truncated");
	}
	free(before.agents);
	free(after.agents);
	return ok;
}

/* ---- fragments against a bucket ---------------------------------------- */

/* A fragment from src of datagram id (UDP to port 9 when first), len bytes. */
static void frag_frame(struct pkt *p, const char *src, uint16_t id, uint16_t offset8, int more,
		       size_t len)
{
	struct v4_opts o = { .frag = (uint16_t)((more ? 0x2000 : 0) | offset8), .id = id };

	pkt_eth(p, ETH_P_IP);
	pkt_ipv4(p, src, NULL, IPPROTO_UDP, &o);
	if (!offset8)
		pkt_udp(p, 9);
	pkt_pad_to(p, len);
	pkt_finish(p);
}

/* Run frames (each its own run) and check the agent's deltas and the
 * reasons (want_stats, every other reason unmoved). */
static bool run_frames(const struct pkt *frames, int n, int agent, const struct ag_counters *want,
		       const __u64 *want_stats)
{
	struct snapshot before = {}, after = {};
	__u32 retval;
	bool ok = false;
	int i;

	if (!take(&before))
		goto out;
	for (i = 0; i < n; i++)
		if (!ASSERT_OK(run_frame(&frames[i], 1, &retval), "test run"))
			goto out;
	ok = take(&after) && check_deltas(&before, &after, want, agent, want_stats);
out:
	free(before.agents);
	free(after.agents);
	return ok;
}

static bool test_frag_first_dropped(void)
{
	struct pkt first, later[2], plain[3];
	struct ag_counters dropped1 = { .dropped_packets = 1 }, rest = {}, plain_want = {};
	__u64 none[AG_STAT__MAX] = {}, st[AG_STAT__MAX] = {};
	int i;

	/* The first fragment is refused: the rest of its datagram is dropped
	 * without taking the tokens a reset put back (three plain packets
	 * then find both). */
	frag_frame(&first, "192.0.2.7", 5, 0, 1, 60);
	for (i = 0; i < 2; i++)
		frag_frame(&later[i], "192.0.2.7", 5, (uint16_t)(4 + 4 * i), i == 0, 60);
	for (i = 0; i < 3; i++)
		f_v4_lim(&plain[i]);
	dropped1.dropped_bytes = first.len;
	rest.dropped_packets = 2;
	rest.dropped_bytes = later[0].len + later[1].len;
	st[AG_STAT_FRAGMENT] = 2;
	st[AG_STAT_FRAGMENT_AFTER_DROP] = 2;
	plain_want.passed_packets = 2;
	plain_want.passed_bytes = 2 * plain[0].len;
	plain_want.dropped_packets = 1;
	plain_want.dropped_bytes = plain[0].len;
	return frags_clear() && set_limit(A_LIM, 1, 2, AG_UNIT_PPS) &&
	       ASSERT_OK(ag_bucket_drain(ctx, slots[A_LIM], 2, NULL), "drain") &&
	       run_frames(&first, 1, A_LIM, &dropped1, none) &&
	       ASSERT_OK(ag_bucket_reset(ctx, slots[A_LIM]), "reset") &&
	       run_frames(later, 2, A_LIM, &rest, st) &&
	       run_frames(plain, 3, A_LIM, &plain_want, none);
}

static bool test_frag_over_limit(void)
{
	struct ag_counters want = { .passed_packets = 2, .dropped_packets = 2 };
	__u64 st[AG_STAT__MAX] = {};
	struct pkt f[4];
	int i;

	/* Burst 2: the first fragment and one more pass, the third is
	 * refused, and the fourth goes without asking the bucket. */
	frag_frame(&f[0], "192.0.2.7", 6, 0, 1, 60);
	for (i = 1; i < 4; i++)
		frag_frame(&f[i], "192.0.2.7", 6, (uint16_t)(4 * i), i < 3, 60);
	want.passed_bytes = 2 * f[0].len;
	want.dropped_bytes = 2 * f[0].len;
	st[AG_STAT_FRAGMENT] = 3;
	st[AG_STAT_FRAGMENT_AFTER_DROP] = 1;
	return frags_clear() && set_limit(A_LIM, 1, 2, AG_UNIT_PPS) &&
	       run_frames(f, 4, A_LIM, &want, st);
}

static bool test_frag_bps(void)
{
	struct ag_counters want = { .passed_packets = 2, .passed_bytes = 800,
				    .dropped_packets = 1, .dropped_bytes = 400 };
	__u64 st[AG_STAT__MAX] = {};
	struct pkt f[3];

	/* 1000 bytes of burst: two 400-byte fragments, not a third. */
	frag_frame(&f[0], "198.51.100.9", 7, 0, 1, 400);
	frag_frame(&f[1], "198.51.100.9", 7, 48, 1, 400);
	frag_frame(&f[2], "198.51.100.9", 7, 96, 0, 400);
	st[AG_STAT_FRAGMENT] = 2;
	return frags_clear() && set_limit(A_BPS, 1, 1000, AG_UNIT_BPS) &&
	       run_frames(f, 3, A_BPS, &want, st);
}

static bool test_frag_dry_run(void)
{
	struct ag_counters want = { .passed_packets = 2, .would_drop_packets = 2 };
	__u64 st[AG_STAT__MAX] = {};
	struct pkt f[2];
	bool ok;

	/* Dry-run: a refused first fragment passes, so the rest of its
	 * datagram is judged (and would be dropped) too. */
	frag_frame(&f[0], "192.0.2.7", 8, 0, 1, 60);
	frag_frame(&f[1], "192.0.2.7", 8, 4, 0, 60);
	want.passed_bytes = want.would_drop_bytes = 2 * f[0].len;
	st[AG_STAT_FRAGMENT] = 1;
	st[AG_STAT_DRYRUN_WOULD_DROP] = 2;
	ok = frags_clear() && set_limit(A_LIM, 1, 1, AG_UNIT_PPS) &&
	     ASSERT_OK(ag_bucket_drain(ctx, slots[A_LIM], 1, NULL), "drain") &&
	     set_config(AG_ACTION_PASS, 1) && run_frames(f, 2, A_LIM, &want, st);
	return set_config(AG_ACTION_PASS, 0) && ok;
}

/* A run on other maps: its verdict and the reasons that moved. */
static bool run_other(struct ag_ctx *c, const struct ag_prog *pr, void (*build)(struct pkt *),
		      int verdict, const int *reasons, int n)
{
	__u64 b[AG_STAT__MAX], a[AG_STAT__MAX], want[AG_STAT__MAX] = {};
	__u32 retval = 0;
	bool ok;
	struct pkt p;
	int i;

	build(&p);
	for (i = 0; i < n; i++)
		want[reasons[i]]++;
	ok = ASSERT_OK(ag_stats_get(c, b), "stats") &&
	     ASSERT_OK(run_frame_on(pr, &p, 1, &retval), "run") &&
	     ASSERT_EQ(retval, verdict, "verdict") && ASSERT_OK(ag_stats_get(c, a), "stats");
	for (i = 0; ok && i < AG_STAT__MAX; i++)
		ok = ASSERT_EQ(a[i] - b[i], want[i], ag_stat_name(i));
	return ok;
}

/*
 * The port-unknown rule depends on the family's rules: with no port rule,
 * classification needs no port, and an orphan fragment or an over-long
 * chain no wildcard rule claims is unclassified like any packet; once a port
 * rule exists it might have claimed it, and it is dropped.
 */
static bool test_port_unknown_without_port_rules(void)
{
	struct ag_open_opts o = { .pin_root = NULL, .create = true, .max_agents = 8,
				  .max_rules = 8 };
	static const int orphan_uncl[] = { AG_STAT_FRAGMENT, AG_STAT_FRAGMENT_ORPHAN,
					   AG_STAT_UNCLASSIFIED_PASSED },
			 chain_uncl[] = { AG_STAT_IPV6_EXT_CHAIN, AG_STAT_UNCLASSIFIED_PASSED },
			 orphan_drop[] = { AG_STAT_FRAGMENT, AG_STAT_FRAGMENT_ORPHAN,
					   AG_STAT_PORT_UNKNOWN_DROPPED };
	struct ag_agent_update u = { .fields = AG_SET_RATE, .rate = 1e6 };
	static int runs;
	char root[PATH_MAX];
	struct ag_prog *pr = NULL;
	struct ag_ctx *c = NULL;
	struct ag_rule wild, port;
	bool ok;

	/* Inside this program's pin root: removed with it at exit. */
	snprintf(root, sizeof(root), "%s/noport%d", ag_pin_root(ctx), runs++);
	o.pin_root = root;
	ok = ASSERT_OK(ag_open(&o, &c), "open") && ASSERT_OK(ag_agent_set(c, "w", &u, NULL, NULL),
							      "agent") &&
	     ASSERT_OK(ag_prefix_parse("2001:db8::/32", &wild), "prefix") &&
	     ASSERT_OK(ag_rule_add(c, &wild, "w"), "wildcard rule") &&
	     ASSERT_OK(ag_prog_load(c, &pr), "load") &&
	     run_other(c, pr, f_v6_later_p9000, XDP_PASS, orphan_uncl, 3) &&
	     run_other(c, pr, f_v6_chain13_p9000, XDP_PASS, chain_uncl, 2) &&
	     ASSERT_OK(ag_prefix_parse("3fff:bee::/64", &port), "prefix") &&
	     ((port.port = 9000), ASSERT_OK(ag_rule_add(c, &port, "w"), "port rule")) &&
	     run_other(c, pr, f_v6_later_p9000, XDP_DROP, orphan_drop, 3);
	ag_prog_free(pr);
	ag_close(c);
	return ok;
}

static const struct {
	const char *name;
	bool (*fn)(void);
} sequences[] = {
	{ "frames of 0-13 bytes: refused by the kernel or passed and counted", test_short_frames },
	{ "pps: burst of 3 then drops", test_pps_burst },
	{ "pps: repeat run shares one bucket", test_pps_burst_repeat },
	{ "dry-run: over-limit frames pass and are counted as would-drop", test_dry_run_bucket },
	{ "bps: frames charged by length", test_bps_bytes },
	{ "bps: frame larger than burst never passes", test_bps_frame_over_burst },
	{ "bps: frame of exactly the burst passes once", test_bps_exact_fit },
	{ "refill: one token after 1/rate", test_refill },
	{ "refill: capped at burst after idle", test_refill_caps_at_burst },
	{ "userspace reset refills the datapath bucket", test_userspace_reset },
	{ "userspace drain removes tokens the datapath sees", test_userspace_drain },
	{ "userspace consume and XDP share one bucket", test_userspace_consume_shares_bucket },
	{ "rate change preserves the token level", test_rate_change_keeps_tokens },
	{ "deleted agent's rules are gone: traffic unclassified", test_deleted_agent_unclassified },
	{ "userspace in a time namespace runs buckets on the datapath's clock", test_time_namespace },
	{ "coarse clock: drops past coarse + slack skip the exact clock, the rest is judged exactly",
	  test_coarse_boundary },
	{ "coarse clock: the loader's slack is three timer ticks", test_coarse_slack_default },
	{ "fragments: the rest of a datagram whose first was dropped is dropped uncharged",
	  test_frag_first_dropped },
	{ "fragments: one refused mid-datagram drops the rest without asking the bucket",
	  test_frag_over_limit },
	{ "fragments: a bps agent pays every fragment's bytes", test_frag_bps },
	{ "fragments in dry-run: the rest of a refused datagram is judged, would-drop",
	  test_frag_dry_run },
	{ "port unknown, no port rule in the family: unclassified; with one: dropped",
	  test_port_unknown_without_port_rules },
};

static bool setup(void)
{
	struct ag_open_opts o = { .pin_root = testenv_pin_root("xdp"), .create = true,
				  .max_agents = 64, .max_rules = 64 };
	int a;

	if (!ASSERT_OK(ag_open(&o, &ctx), "open"))
		return false;
	for (a = 0; a < A__COUNT; a++) {
		const struct agent_def *d = &agent_defs[a];
		struct ag_agent_update u = { .fields = AG_SET_RATE | AG_SET_BURST | AG_SET_UNIT,
					     .rate = d->rate, .burst = d->burst, .unit = d->unit };
		struct ag_rule r;

		if (!ASSERT_OK(ag_agent_set(ctx, d->name, &u, &slots[a], NULL), d->name) ||
		    !ASSERT_OK(ag_prefix_parse(d->prefix, &r), d->prefix))
			return false;
		r.port = d->port;
		if (!ASSERT_OK(ag_rule_add(ctx, &r, d->name), d->prefix))
			return false;
	}
	return ASSERT_OK(ag_prog_load(ctx, &prog), "load");
}

/* A rule the index does not know (a writer that keeps no plans put it in
 * the trie and counted it): the plan no longer matches the count, and the
 * datapath walks the trie, which finds the rule. */
static bool test_plan_out_of_step(void)
{
	struct ag_lpm4_key k = { .prefixlen = 32 + 24, .addr = { 10, 1, 2, 0 } };
	struct ag_rule_val v = { .slot = slots[A_LIM], .plen = 24 };
	struct seq_expect one = { .passed = 1 };
	char path[PATH_MAX];
	struct ag_config cfg;
	__u32 zero = 0;
	int trie, cfd;
	struct pkt p;
	bool ok;

	pkt_eth(&p, ETH_P_IP);
	pkt_ipv4(&p, "10.1.2.9", NULL, IPPROTO_UDP, NULL);
	pkt_udp(&p, 53);
	pkt_finish(&p);
	snprintf(path, sizeof(path), "%s/%s", ag_pin_root(ctx), AG_MAP_RULES_V4);
	trie = bpf_obj_get(path);
	snprintf(path, sizeof(path), "%s/%s", ag_pin_root(ctx), AG_MAP_CONFIG);
	cfd = bpf_obj_get(path);
	ok = ASSERT_TRUE(trie >= 0 && cfd >= 0, "open maps") &&
	     ASSERT_OK(set_limit(A_LIM, 1e9, 1000000, AG_UNIT_PPS) ? 0 : -1, "limit") &&
	     ASSERT_OK(bpf_map_update_elem(trie, &k, &v, BPF_NOEXIST), "trie insert") &&
	     ASSERT_OK(bpf_map_lookup_elem(cfd, &zero, &cfg), "config") &&
	     (cfg.rule_count[AG_RK_LPM4]++, true) &&
	     ASSERT_OK(bpf_map_update_elem(cfd, &zero, &cfg, BPF_EXIST), "count") &&
	     ASSERT_EQ(ag_prefix_index_active(ctx, AF_INET), 0, "plan out of step") &&
	     send_n(A_LIM, &p, 1, &one);
	/* Take it out again the same way: the plan matches once more. */
	if (trie >= 0 && cfd >= 0 && !bpf_map_delete_elem(trie, &k) &&
	    !bpf_map_lookup_elem(cfd, &zero, &cfg)) {
		cfg.rule_count[AG_RK_LPM4]--;
		ok &= ASSERT_OK(bpf_map_update_elem(cfd, &zero, &cfg, BPF_EXIST), "count");
	}
	if (trie >= 0)
		close(trie);
	if (cfd >= 0)
		close(cfd);
	return ok && set_limit(A_LIM, 1, 3, AG_UNIT_PPS);
}

/*
 * A program chained after agentgate on the device the frames arrive on
 * (ag_next[lo], test_run's device): it runs on what agentgate passes and
 * its verdict is the packet's (XDP_TX here); what agentgate drops never
 * reaches it. Cleared, the pass verdict is agentgate's own again.
 */
static bool test_chained_program(void)
{
	LIBBPF_OPTS(bpf_prog_load_opts, lo, .expected_attach_type = BPF_XDP);
	struct bpf_insn tx[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = XDP_TX },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	struct snapshot before = {}, after = {};
	int fd = bpf_prog_load(BPF_PROG_TYPE_XDP, "after_ag", "GPL", tx, 2, &lo), i;
	__u32 want[5] = { XDP_TX, XDP_TX, XDP_TX, XDP_DROP, XDP_DROP }, got = 0;
	struct pkt p, u;
	bool ok;

	f_v4_lim(&p);
	f_v4_unclassified(&u);
	ok = ASSERT_TRUE(fd >= 0, "chained program") && set_limit(A_LIM, 1, 3, AG_UNIT_PPS) &&
	     ASSERT_OK(ag_chain_set(ctx, "lo", fd), "chain") && take(&before);
	for (i = 0; ok && i < 5; i++)
		ok = ASSERT_OK(run_frame(&p, 1, &got), "run") && ASSERT_EQ(got, want[i], "verdict");
	ok = ok && take(&after) &&
	     ASSERT_EQ(after.agents[slots[A_LIM]].passed_packets -
			       before.agents[slots[A_LIM]].passed_packets, 3, "passed") &&
	     ASSERT_EQ(after.agents[slots[A_LIM]].dropped_packets -
			       before.agents[slots[A_LIM]].dropped_packets, 2, "dropped") &&
	     ASSERT_OK(run_frame(&u, 1, &got), "unclassified") &&
	     ASSERT_EQ(got, XDP_TX, "unclassified passed on") &&
	     ASSERT_OK(ag_chain_set(ctx, "lo", -1), "clear") &&
	     ASSERT_OK(run_frame(&u, 1, &got), "unclassified again") &&
	     ASSERT_EQ(got, XDP_PASS, "agentgate's own verdict");
	free(before.agents);
	free(after.agents);
	if (fd >= 0)
		close(fd);
	return ok && set_limit(A_LIM, 1, 3, AG_UNIT_PPS);
}

static void run_all(const char *mode_name)
{
	size_t nf = sizeof(fixtures) / sizeof(fixtures[0]);
	size_t ns = sizeof(sequences) / sizeof(sequences[0]);
	char name[256];
	size_t i;

	for (i = 0; i < nf; i++) {
		snprintf(name, sizeof(name), "[%s] %s", mode_name, fixtures[i].desc);
		h_result(name, run_fixture(&fixtures[i]));
	}
	for (i = 0; i < ns; i++) {
		snprintf(name, sizeof(name), "[%s] %s", mode_name, sequences[i].name);
		h_result(name, sequences[i].fn());
	}
}

/* Every fixture and sequence twice: prefix rules found by walking the LPM
 * tries, then by the per-length hashes (the fixture rules use 6 IPv4 and 2
 * IPv6 length and port combinations, which fit a plan). */
int main(void)
{
	size_t nf = sizeof(fixtures) / sizeof(fixtures[0]);
	size_t ns = sizeof(sequences) / sizeof(sequences[0]);

	h_require_root();
	h_plan((int)(2 * (nf + ns) + 4));
	if (!setup()) {
		fprintf(stderr, "setup failed: %s\n", ag_errmsg());
		return 1;
	}
	h_result("prefix index forced to the tries",
		 ASSERT_OK(ag_prefix_index_set(ctx, AG_PREFIX_INDEX_TRIE), "trie") &&
			 ASSERT_EQ(ag_prefix_index_active(ctx, AF_INET), 0, "IPv4 plan") &&
			 ASSERT_EQ(ag_prefix_index_active(ctx, AF_INET6), 0, "IPv6 plan"));
	run_all("trie");
	h_result("prefix index forced to the hashes",
		 ASSERT_OK(ag_prefix_index_set(ctx, AG_PREFIX_INDEX_HASH), "hash") &&
			 ASSERT_EQ(ag_prefix_index_active(ctx, AF_INET), 1, "IPv4 plan") &&
			 ASSERT_EQ(ag_prefix_index_active(ctx, AF_INET6), 1, "IPv6 plan"));
	run_all("hash");
	h_result("[hash] a trie rule the plan does not know is found in the trie",
		 test_plan_out_of_step());
	h_result("a program chained after agentgate gets what it passes, nothing it drops",
		 test_chained_program());
	ag_prog_free(prog);
	ag_close(ctx);
	return h_exit();
}
