// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * agentgate XDP datapath: classify each packet to an agent by source prefix
 * (optionally narrowed to a destination port), charge the agent's GCRA bucket
 * by compare-and-swap, pass or drop, count per CPU.
 *
 * Anything that cannot be parsed far enough to know the source address is
 * passed and counted by reason when the kernel drops it anyway (truncated,
 * bad version), and dropped when it may deliver it (VLAN tags beyond the
 * parser's reach); IP inside a link header the kernel opens when the host
 * terminates it (PPPoE session, MPLS, MACsec) gets the default action, as
 * a packet no rule claims. A packet whose source is known but whose L4 header
 * cannot be reached (truncated L4) is still charged to the agent its source
 * prefix selects, so malformed traffic cannot slip past the limiter. Later
 * fragments are charged to the agent of their datagram's first fragment
 * (ag_frags); one whose first fragment was not seen, like an IPv6 chain
 * longer than the kernel follows, goes by its source prefix, and is dropped
 * when only a port rule could have claimed it. Never XDP_ABORTED.
 *
 * Only uapi headers are used (no vmlinux.h): the program reads packet headers
 * and its own maps, never kernel structures, so CO-RE would add nothing.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "agentgate/abi.h"
#include "agentgate/gcra.h"
#include "parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Bounded CAS retries; on exhaustion the packet is dropped (keeps the bound). */
#define AG_CAS_TRIES 8

/*
 * The maps: one per row of AG_MAP_LIST (include/agentgate/abi.h), by the
 * same name, and no other. Their types and sizes are defined here only;
 * the library's build fails when the maps and the list differ
 * (userspace/lib/maps.c).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, AG_MAX_AGENTS_DEFAULT);
	__type(key, __u32);
	__type(value, struct ag_bucket);
} ag_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, AG_MAX_AGENTS_DEFAULT);
	__type(key, __u32);
	__type(value, struct ag_tally);
} ag_tally SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, AG_MAX_RULES_DEFAULT);
	__type(key, struct ag_lpm4_key);
	__type(value, struct ag_rule_val);
} ag_rules_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, AG_MAX_RULES_DEFAULT);
	__type(key, struct ag_lpm6_key);
	__type(value, struct ag_rule_val);
} ag_rules_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, AG_MAX_RULES_DEFAULT);
	__type(key, struct ag_host4_key);
	__type(value, struct ag_rule_val);
} ag_hosts_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, AG_MAX_RULES_DEFAULT);
	__type(key, struct ag_host6_key);
	__type(value, struct ag_rule_val);
} ag_hosts_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, AG_MAX_RULES_DEFAULT);
	__type(key, struct ag_lpm4_key);
	__type(value, struct ag_rule_val);
} ag_prefixes_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, AG_MAX_RULES_DEFAULT);
	__type(key, struct ag_lpm6_key);
	__type(value, struct ag_rule_val);
} ag_prefixes_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ag_probes);
} ag_probes SEC(".maps");

/* Not read by the datapath: userspace bookkeeping pinned beside the rest
 * (arrays that userspace maps; abi.h has their layout). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, AG_MAX_AGENTS_DEFAULT);
	__type(key, __u32);
	__type(value, struct ag_agent_info);
} ag_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, AG_INDEX_BLKS(AG_MAX_AGENTS_DEFAULT));
	__type(key, __u32);
	__type(value, struct ag_index_blk);
} ag_index SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ag_config);
} ag_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AG_STAT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} ag_stats SEC(".maps");

/* First fragments judged, by reassembly key (see abi.h). One map for every
 * CPU: the fragments of a datagram may be judged on different ones. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, AG_FRAGS_MAX);
	__type(key, struct ag_frag_key);
	__type(value, struct ag_frag_val);
} ag_frags SEC(".maps");

/* What runs after agentgate on a device, by ifindex (abi.h, AG_NEXT_MAX). */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, AG_NEXT_MAX);
	__type(key, __u32);
	__type(value, __u32);
} ag_next SEC(".maps");

/* Each bucket's parent and quota (abi.h, "Parent buckets"); mapped by
 * userspace, whose consumers walk the same paths. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, AG_MAX_AGENTS_DEFAULT);
	__type(key, __u32);
	__type(value, struct ag_budget);
} ag_budgets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AG_TALLY_CACHE);
	__type(key, __u32);
	__type(value, struct ag_tally_ent);
} ag_tally_cache SEC(".maps");

enum ag_verdict {
	AG_V_PASS,
	AG_V_DROP,
	AG_V_NO_BUCKET,
	AG_V_EXHAUSTED,
	AG_V_UNKNOWN, /* a connection bucket, and whether the packet opens one
		       * not read yet (a level judged without the packet) */
};

static __always_inline void stat_inc(__u32 reason)
{
	__u64 *v = bpf_map_lookup_elem(&ag_stats, &reason);

	if (v)
		*v += 1;
}

/* ---- classification ------------------------------------------------ */

/* Pick between the port-specific and wildcard trie matches: longest prefix
 * wins, and at equal length the port-specific rule does. */
static __always_inline struct ag_rule_val *better(struct ag_rule_val *port_match,
						   struct ag_rule_val *any_match)
{
	if (!port_match)
		return any_match;
	if (!any_match || port_match->plen >= any_match->plen)
		return port_match;
	return any_match;
}

/* The plan for a family's trie rules, 0 when the trie is to be walked. */
static __always_inline __u64 probe_plan(const struct ag_config *cfg, int v6)
{
	__u32 zero = 0, rules = v6 ? cfg->rule_count[AG_RK_LPM6] + cfg->rule_count[AG_RK_LPM6_PORT] :
				     cfg->rule_count[AG_RK_LPM4] + cfg->rule_count[AG_RK_LPM4_PORT];
	struct ag_probes *pr = bpf_map_lookup_elem(&ag_probes, &zero);
	__u64 plan;

	if (!pr)
		return 0;
	plan = *(volatile __u64 *)&pr->plan[v6];
	if (!(plan & AG_PLAN_VALID) || AG_PLAN_CHECK(plan) != (rules & 0xff))
		return 0;
	return plan;
}

/* Network-order mask of the first plen bits of a 32-bit word (plen <= 32). */
static __always_inline __be32 mask32(__s32 plen)
{
	if (plen <= 0)
		return 0;
	if (plen >= 32)
		return 0xffffffff;
	return bpf_htonl((__u32)(0xffffffffULL << (32 - plen)));
}

/* The trie's longest match, by one hash lookup per planned length. */
static __always_inline struct ag_rule_val *by_length_v4(__u64 plan, const struct ag_flow *f,
							 __be32 port)
{
	__u32 n = AG_PLAN_N(plan), i;

	for (i = 0; i < AG_PROBES_MAX; i++) {
		struct ag_lpm4_key k;
		struct ag_rule_val *v;
		__u32 probe, plen;
		__be32 a;

		if (i >= n)
			break;
		probe = AG_PLAN_PROBE(plan, i);
		if ((probe & AG_PROBE_PORT) && !port)
			continue;
		plen = AG_PROBE_PLEN(probe);
		k.prefixlen = 32 + plen;
		k.port = probe & AG_PROBE_PORT ? port : 0;
		a = f->saddr4 & mask32(plen);
		__builtin_memcpy(k.addr, &a, 4);
		v = bpf_map_lookup_elem(&ag_prefixes_v4, &k);
		if (v)
			return v;
	}
	return NULL;
}

static __always_inline struct ag_rule_val *by_length_v6(__u64 plan, const struct ag_flow *f,
							 __be32 port)
{
	__u32 n = AG_PLAN_N(plan), i;

	for (i = 0; i < AG_PROBES_MAX; i++) {
		struct ag_lpm6_key k;
		struct ag_rule_val *v;
		__u32 probe, plen, w;
		__be32 a[4];

		if (i >= n)
			break;
		probe = AG_PLAN_PROBE(plan, i);
		if ((probe & AG_PROBE_PORT) && !port)
			continue;
		plen = AG_PROBE_PLEN(probe);
		k.prefixlen = 32 + plen;
		k.port = probe & AG_PROBE_PORT ? port : 0;
		__builtin_memcpy(a, f->saddr6, 16);
		for (w = 0; w < 4; w++)
			a[w] &= mask32((__s32)plen - 32 * (__s32)w);
		__builtin_memcpy(k.addr, a, 16);
		v = bpf_map_lookup_elem(&ag_prefixes_v6, &k);
		if (v)
			return v;
	}
	return NULL;
}

static __always_inline struct ag_rule_val *classify_v4(const struct ag_config *cfg,
							const struct ag_flow *f)
{
	struct ag_rule_val *v, *vp = NULL, *vw = NULL;
	__be32 port = f->has_port ? bpf_htonl(bpf_ntohs(f->dport)) : 0;
	__u64 plan;

	/* A host rule is the longest possible prefix: it wins outright. */
	if (port && cfg->rule_count[AG_RK_HOST4_PORT]) {
		struct ag_host4_key k = { .port = port };

		__builtin_memcpy(k.addr, &f->saddr4, 4);
		v = bpf_map_lookup_elem(&ag_hosts_v4, &k);
		if (v)
			return v;
	}
	if (cfg->rule_count[AG_RK_HOST4]) {
		struct ag_host4_key k = { .port = 0 };

		__builtin_memcpy(k.addr, &f->saddr4, 4);
		v = bpf_map_lookup_elem(&ag_hosts_v4, &k);
		if (v)
			return v;
	}
	if (!cfg->rule_count[AG_RK_LPM4_PORT] && !cfg->rule_count[AG_RK_LPM4])
		return NULL;
	plan = probe_plan(cfg, 0);
	if (plan)
		return by_length_v4(plan, f, port);
	if (port && cfg->rule_count[AG_RK_LPM4_PORT]) {
		struct ag_lpm4_key k = { .prefixlen = 64, .port = port };

		__builtin_memcpy(k.addr, &f->saddr4, 4);
		vp = bpf_map_lookup_elem(&ag_rules_v4, &k);
	}
	if (cfg->rule_count[AG_RK_LPM4]) {
		struct ag_lpm4_key k = { .prefixlen = 64, .port = 0 };

		__builtin_memcpy(k.addr, &f->saddr4, 4);
		vw = bpf_map_lookup_elem(&ag_rules_v4, &k);
	}
	return better(vp, vw);
}

static __always_inline struct ag_rule_val *classify_v6(const struct ag_config *cfg,
							const struct ag_flow *f)
{
	struct ag_rule_val *v, *vp = NULL, *vw = NULL;
	__be32 port = f->has_port ? bpf_htonl(bpf_ntohs(f->dport)) : 0;
	__u64 plan;

	if (port && cfg->rule_count[AG_RK_HOST6_PORT]) {
		struct ag_host6_key k = { .port = port };

		__builtin_memcpy(k.addr, f->saddr6, 16);
		v = bpf_map_lookup_elem(&ag_hosts_v6, &k);
		if (v)
			return v;
	}
	if (cfg->rule_count[AG_RK_HOST6]) {
		struct ag_host6_key k = { .port = 0 };

		__builtin_memcpy(k.addr, f->saddr6, 16);
		v = bpf_map_lookup_elem(&ag_hosts_v6, &k);
		if (v)
			return v;
	}
	if (!cfg->rule_count[AG_RK_LPM6_PORT] && !cfg->rule_count[AG_RK_LPM6])
		return NULL;
	plan = probe_plan(cfg, 1);
	if (plan)
		return by_length_v6(plan, f, port);
	if (port && cfg->rule_count[AG_RK_LPM6_PORT]) {
		struct ag_lpm6_key k = { .prefixlen = 32 + 128, .port = port };

		__builtin_memcpy(k.addr, f->saddr6, 16);
		vp = bpf_map_lookup_elem(&ag_rules_v6, &k);
	}
	if (cfg->rule_count[AG_RK_LPM6]) {
		struct ag_lpm6_key k = { .prefixlen = 32 + 128, .port = 0 };

		__builtin_memcpy(k.addr, f->saddr6, 16);
		vw = bpf_map_lookup_elem(&ag_rules_v6, &k);
	}
	return better(vp, vw);
}

/* ---- connection openings --------------------------------------------- */

#define AG_TCP_SYN 0x02
#define AG_TCP_ACK 0x10
#define AG_QUIC_V2 0x6b3343cfU
#define AG_SCTP_INIT 1

/*
 * Whether a packet opens a connection, for buckets of unit conn: a TCP SYN
 * without ACK, a QUIC long-header Initial (v1, v2 and drafts: type 0, v2:
 * type 1; not version negotiation), an SCTP INIT, a DCCP-Request. Read only
 * when such a bucket is on the packet's path. A header cut off before the
 * bytes that tell counts as an opening where the kernel could still see
 * one: a first fragment (RFC 1858's tiny fragments) or an unfollowed IPv6
 * chain; a whole UDP datagram too short for a QUIC header is none. Later
 * fragments belong to the datagram their first fragment opened.
 *
 * Cut off means by the end of the frame or of the datagram, whichever
 * comes first: the bytes after the datagram (IPv4 total length, IPv6 40 +
 * payload length) are Ethernet padding or a trailer, which the kernel
 * trims, so they tell nothing (a tiny first fragment padded to 60 bytes
 * must not have its flags read from the padding).
 *
 * A global function, verified once on its own and called only for a
 * connection bucket. Inlined at its three call sites, the bounds it reads
 * took the program's stack 16 bytes past what the verifier allows beside
 * its deepest call (512 bytes in all).
 */
__noinline int is_opening(struct xdp_md *ctx, const struct ag_flow *f)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	__u32 off, l3, end, held;
	__u8 *l4, *ip;

	if (!f) /* not reached */
		return 1;
	off = f->l4_off;
	l3 = f->l3_off;
	if (!f->has_port)
		return f->port_unknown;
	/* Bounds the offsets for the verifier (a pointer checked against the
	 * packet's end must stay below 64 KiB); no frame XDP sees is longer,
	 * and the parser puts no IP header beyond AG_L2_MAX. */
	if (off > 0x7fff || l3 > AG_L2_MAX)
		return 1;
	asm volatile("%0 &= 0x7fff" : "+r"(off)); /* a bound on the register added */
	asm volatile("%0 &= 0x3f" : "+r"(l3));
	ip = data + l3;
	if ((void *)(ip + 6) > data_end) /* not reached: the parser read it */
		return 1;
	if ((ip[0] >> 4) == 4)
		end = l3 + (((__u32)ip[2] << 8) | ip[3]);
	else
		end = l3 + sizeof(struct ipv6hdr) + (((__u32)ip[4] << 8) | ip[5]);
	held = end > off ? end - off : 0; /* L4 bytes in the datagram */
	l4 = data + off;
	switch (f->proto) {
	case IPPROTO_TCP:
		if ((void *)(l4 + 14) > data_end || held < 14)
			return 1;
		return (l4[13] & (AG_TCP_SYN | AG_TCP_ACK)) == AG_TCP_SYN;
	case IPPROTO_UDP: {
		__u32 version;

		if ((void *)(l4 + 13) > data_end || held < 13)
			return f->frag == AG_FRAG_FIRST;
		if (!(l4[8] & 0x80)) /* short header */
			return 0;
		version = ((__u32)l4[9] << 24) | ((__u32)l4[10] << 16) | ((__u32)l4[11] << 8) |
			  l4[12];
		if (!version)
			return 0;
		return ((l4[8] >> 4) & 3) == (version == AG_QUIC_V2 ? 1 : 0);
	}
	case IPPROTO_SCTP:
		if ((void *)(l4 + 13) > data_end || held < 13)
			return 1;
		return l4[12] == AG_SCTP_INIT;
	case IPPROTO_DCCP:
		if ((void *)(l4 + 9) > data_end || held < 9)
			return 1;
		return ((l4[8] >> 1) & 0xf) == 0;
	}
	return 0;
}

/* One packet being judged; `opening` is read on first need. */
struct ag_pkt {
	struct xdp_md *ctx;
	const struct ag_flow *f;
	__u64 len;
	int opening; /* -1: not read yet */
};

static __always_inline __u64 pkt_cost(struct ag_pkt *pk, __u32 unit, __u64 interval)
{
	if (unit == AG_UNIT_CONN && pk->opening < 0)
		pk->opening = is_opening(pk->ctx, pk->f);
	return ag_packet_cost(unit, interval, pk->len, pk->opening > 0);
}

/* The same for a level of a path, judged where the packet is not at hand:
 * 0 when the unit needs to know whether it opens a connection and that was
 * not read (the caller reads it and judges the level again). */
static __always_inline int level_cost(struct ag_pkt *pk, __u32 unit, __u64 interval, __u64 *cost)
{
	if (unit == AG_UNIT_CONN && pk->opening < 0)
		return 0;
	*cost = ag_packet_cost(unit, interval, pk->len, pk->opening > 0);
	return 1;
}

/* ---- bucket ---------------------------------------------------------- */

/*
 * GCRA by compare-and-swap. Admission is monotone in time (a request refused
 * at some moment is refused at every earlier one), and a refusal writes
 * nothing; so a packet the bucket refuses at an upper bound of the present,
 * the coarse clock plus its largest lag, is refused now, and is dropped
 * without reading the exact clock (~30 ns of the path). Whatever may be
 * admitted is judged again on the exact clock, so admissions, and with them
 * burst + rate*t, never depend on the coarse one.
 *
 * A refusal at the bound needs the next admission to lie beyond it, and the
 * next admission lies at most one packet's cost after the last admission:
 * with a cost below a third of the slack (one tick, when the coarse clock
 * lags its usual two ticks at most) the bound never refuses, and the
 * coarse clock is not read at all (fast buckets, passing traffic). The gate
 * is a quarter of the slack, a shift where a third would be a division
 * per packet (the difference was below 1 ns in bench/xdp_cost); costs
 * between the two merely read the coarse clock in vain.
 */
static __always_inline enum ag_verdict charge(__u32 slot, struct ag_pkt *pk, __u64 slack_ns,
					       __u32 *gen)
{
	struct ag_bucket *b = bpf_map_lookup_elem(&ag_buckets, &slot);
	__u64 now_ns = 0, w;
	int i;

	if (!b)
		return AG_V_NO_BUCKET;
	/* The slot's generation, for the counters (tally_of): read with tat,
	 * from the line this judgement loads anyway, rather than again after
	 * the swap, when another CPU may have taken the line. */
	*gen = *(volatile __u32 *)&b->gen;
	if (!slack_ns)
		now_ns = bpf_ktime_get_ns();

	/* A first pass without the exact clock (no CAS in it), then up to
	 * AG_CAS_TRIES on the exact clock. A failed CAS returns the word that
	 * beat it, which the next try starts from. */
	w = *(volatile __u64 *)&b->tat;
	for (i = now_ns ? 1 : 0; i <= AG_CAS_TRIES; i++) {
		__u32 sel = w >> 63;
		struct ag_gcra_params *p = &b->set[sel];
		__u64 interval = *(volatile __u64 *)&p->interval;
		__u64 cost, new_tat, seen;

		if (!interval)
			return AG_V_NO_BUCKET;
		cost = pkt_cost(pk, b->unit[sel], interval);
		if (!cost) /* a conn bucket, and no opening */
			return AG_V_PASS;
		if (!now_ns) {
			if (cost > ag_ns_to_ticks(slack_ns >> 2, p->mult) &&
			    !ag_gcra_admit(w & AG_TAT_MASK,
					   ag_ns_to_ticks(bpf_ktime_get_coarse_ns() + slack_ns,
							  p->mult),
					   cost, p->tau, &new_tat))
				goto refused;
			/* May be admitted: read the clock, then tat afresh, so that
			 * the clock read stays out of the window between reading
			 * tat and swapping it (a wider window loses more CAS races). */
			now_ns = bpf_ktime_get_ns();
			seen = *(volatile __u64 *)&b->tat;
			if ((seen ^ w) & AG_TAT_SEL) {
				w = seen; /* other parameters: start over with them */
				continue;
			}
			w = seen;
		}
		if (!ag_gcra_admit(w & AG_TAT_MASK, ag_ns_to_ticks(now_ns, p->mult), cost, p->tau,
				   &new_tat))
			goto refused;
		seen = __sync_val_compare_and_swap(&b->tat, w, (w & AG_TAT_SEL) | new_tat);
		if (seen == w)
			return AG_V_PASS;
		w = seen;
		continue;
refused:
		/* Judged on parameters a writer was replacing? Judge again.
		 * (Admissions by other CPUs move tat too: those don't count.) */
		seen = *(volatile __u64 *)&b->tat;
		if (!((seen ^ w) & AG_TAT_SEL))
			return AG_V_DROP;
		w = seen;
	}
	return AG_V_EXHAUSTED;
}

/* No agent to charge, and no delivering it uncharged (the reason is
 * counted by the caller). */
static __always_inline int refuse(const struct ag_config *cfg)
{
	if (cfg->dry_run) {
		stat_inc(AG_STAT_DRYRUN_WOULD_DROP);
		return XDP_PASS;
	}
	return XDP_DROP;
}

/*
 * Budget paths (abi.h, "Parent buckets", "Long-window quotas"): a bucket
 * with a parent or a quota is judged with everything above it, its own
 * rate and quota first, then each parent's. The path is judged in two
 * rounds on one reading of each clock: first every rate and quota is
 * looked at without writing, so that a packet any of them refuses writes
 * nothing; then each admits it by compare-and-swap, the agent's first. One
 * that refuses in the second round (another CPU took what the first saw)
 * has the admissions before it taken back: a quota's exactly (a count in
 * the same window), a rate's by putting back the word its swap replaced,
 * unless another CPU has moved that word since; then the admission stays
 * (never more tokens than the bound) and refund_raced counts it.
 */
struct ag_level {
	__u64 prev;         /* rate: the word round one judged, then the one our
			     * swap replaced */
	__u64 word;         /* rate: what our swap wrote; 0: none */
	__u64 qword;        /* quota: the word our swap wrote; 0: none */
	union {
		__u64 next;    /* rate, round one: the word that admits the packet
				* (0: none), for round two's swap */
		__u64 qtokens; /* quota, round two: what it counted */
	};
	__u32 slot;
	__u32 gen;          /* the bucket's generation, read with tat (tally_of) */
	__u8 unit;          /* the unit the bucket judged in, the quota's too */
	__u8 verdict;       /* enum ag_verdict of the last judgement */
	__u8 has_quota;     /* its quota word was set when the path was read */
	__u8 pad[5];
};
/* Four of these live on the stack of a path (AG_PATH_MAX): keep it small. */
_Static_assert(sizeof(struct ag_level) == 48, "ag_level size");

/* A bucket's rate at now_ns; commit: admit by swap (else look only). */
static __always_inline enum ag_verdict judge_bucket(struct ag_level *l, struct ag_pkt *pk,
						    __u64 now_ns, int commit)
{
	struct ag_bucket *b = bpf_map_lookup_elem(&ag_buckets, &l->slot);
	__u64 w, new_tat, seen;
	int i;

	l->word = 0;
	if (!b)
		return AG_V_NO_BUCKET;
	l->gen = *(volatile __u32 *)&b->gen;
	w = *(volatile __u64 *)&b->tat;
	for (i = 0; i < AG_CAS_TRIES; i++) {
		__u32 sel = w >> 63;
		struct ag_gcra_params *p = &b->set[sel];
		__u64 interval = *(volatile __u64 *)&p->interval, cost;

		if (!interval)
			return AG_V_NO_BUCKET;
		l->unit = b->unit[sel];
		if (!level_cost(pk, l->unit, interval, &cost))
			return AG_V_UNKNOWN;
		if (!cost)
			return AG_V_PASS;
		if (!ag_gcra_admit(w & AG_TAT_MASK, ag_ns_to_ticks(now_ns, p->mult), cost, p->tau,
				   &new_tat)) {
			seen = *(volatile __u64 *)&b->tat;
			if (!((seen ^ w) & AG_TAT_SEL))
				return AG_V_DROP;
			w = seen; /* other parameters: judge again */
			continue;
		}
		if (!commit)
			return AG_V_PASS;
		new_tat |= w & AG_TAT_SEL;
		seen = __sync_val_compare_and_swap(&b->tat, w, new_tat);
		if (seen == w) {
			l->prev = w;
			l->word = new_tat;
			return AG_V_PASS;
		}
		w = seen;
	}
	return AG_V_EXHAUSTED;
}

/* Round one for a bucket's rate: a look, without writing or retrying (a
 * view torn by a parameter change passes here and is judged in round two). */
static __always_inline enum ag_verdict look_bucket(struct ag_level *l, struct ag_pkt *pk,
						   __u64 now_ns)
{
	struct ag_bucket *b = bpf_map_lookup_elem(&ag_buckets, &l->slot);
	struct ag_gcra_params *p;
	__u64 w, interval, cost, new_tat;
	__u32 sel;

	l->word = 0;
	l->next = 0;
	if (!b)
		return AG_V_NO_BUCKET;
	l->gen = *(volatile __u32 *)&b->gen;
	w = *(volatile __u64 *)&b->tat;
	sel = w >> 63;
	p = &b->set[sel];
	interval = *(volatile __u64 *)&p->interval;
	if (!interval)
		return AG_V_NO_BUCKET;
	l->unit = b->unit[sel];
	if (!level_cost(pk, l->unit, interval, &cost))
		return AG_V_UNKNOWN;
	if (!cost)
		return AG_V_PASS;
	if (ag_gcra_admit(w & AG_TAT_MASK, ag_ns_to_ticks(now_ns, p->mult), cost, p->tau,
			  &new_tat)) {
		l->prev = w;
		l->next = new_tat | (w & AG_TAT_SEL);
		return AG_V_PASS;
	}
	return (*(volatile __u64 *)&b->tat ^ w) & AG_TAT_SEL ? AG_V_PASS : AG_V_DROP;
}

/* A level's quota, when it has one that counts this packet: its budget,
 * limit, the window's index on the TAI clock (*tai_ns read on first need)
 * and the packet's tokens in the bucket's unit. NULL: nothing to count. */
static __always_inline struct ag_budget *quota_of(struct ag_level *l, struct ag_pkt *pk,
						  __u64 *tai_ns, __u64 *limit, __u64 *idx,
						  __u64 *tokens)
{
	struct ag_budget *bd;
	__u64 conf, wns;

	l->qword = 0;
	if (!l->has_quota)
		return NULL;
	bd = bpf_map_lookup_elem(&ag_budgets, &l->slot);
	if (!bd)
		return NULL;
	conf = *(volatile __u64 *)&bd->quota_conf;
	*limit = AG_QUOTA_LIMIT(conf);
	wns = ag_quota_window_ns(AG_QUOTA_WINDOW(conf));
	/* The rate, judged first in the same unit, had what it needed. */
	if (!level_cost(pk, l->unit, 1, tokens))
		return NULL;
	if (!*limit || !wns || !*tokens)
		return NULL;
	if (!*tai_ns)
		*tai_ns = bpf_ktime_get_tai_ns();
	*idx = ag_quota_index(*tai_ns, wns);
	return bd;
}

/* A bucket's quota, in its unit, at the TAI clock (*tai_ns read on first
 * need); commit: count by swap (else look only). */
static __always_inline enum ag_verdict judge_quota(struct ag_level *l, struct ag_pkt *pk,
						   __u64 *tai_ns, int commit)
{
	__u64 limit, idx, w, nw, seen, tokens;
	struct ag_budget *bd = quota_of(l, pk, tai_ns, &limit, &idx, &tokens);
	int i;

	if (!bd)
		return AG_V_PASS;
	w = *(volatile __u64 *)&bd->quota_used;
	for (i = 0; i < AG_CAS_TRIES; i++) {
		if (!ag_quota_admit(w, idx, tokens, limit, &nw))
			return AG_V_DROP;
		if (!commit)
			return AG_V_PASS;
		seen = __sync_val_compare_and_swap(&bd->quota_used, w, nw);
		if (seen == w) {
			l->qword = nw;
			l->qtokens = tokens;
			return AG_V_PASS;
		}
		w = seen;
	}
	return AG_V_EXHAUSTED;
}

/* Global functions (ag_take_back, ag_look_path, ag_take_level), each
 * verified once on its own: inlined, round two's retries on every level of
 * the path exceed what the verifier explores, and the frames must stay
 * within the 512-byte stack beside the caller's. */
__noinline int ag_take_back(struct ag_level *l)
{
	struct ag_bucket *b;
	struct ag_budget *bd;
	__u64 w, seen;
	int i;

	if (!l)
		return 0;
	if (l->word) {
		b = bpf_map_lookup_elem(&ag_buckets, &l->slot);
		if (b && __sync_val_compare_and_swap(&b->tat, l->word, l->prev) != l->word)
			stat_inc(AG_STAT_REFUND_RACED);
	}
	if (!l->qword)
		return 0;
	bd = bpf_map_lookup_elem(&ag_budgets, &l->slot);
	if (!bd)
		return 0;
	w = *(volatile __u64 *)&bd->quota_used;
	for (i = 0; i < AG_CAS_TRIES; i++) {
		/* A new window began meanwhile: the count went with the old one. */
		if ((w >> AG_QUOTA_USED_BITS) != (l->qword >> AG_QUOTA_USED_BITS) ||
		    (w & AG_QUOTA_USED_MASK) < l->qtokens)
			return 0;
		seen = __sync_val_compare_and_swap(&bd->quota_used, w, w - l->qtokens);
		if (seen == w)
			return 0;
		w = seen;
	}
	stat_inc(AG_STAT_REFUND_RACED);
	return 0;
}

/* Round one for a bucket's quota: a look. */
static __always_inline enum ag_verdict look_quota(struct ag_level *l, struct ag_pkt *pk,
						  __u64 *tai_ns)
{
	__u64 limit, idx, tokens, nw;
	struct ag_budget *bd = quota_of(l, pk, tai_ns, &limit, &idx, &tokens);

	if (!bd)
		return AG_V_PASS;
	return ag_quota_admit(*(volatile __u64 *)&bd->quota_used, idx, tokens, limit, &nw) ?
		       AG_V_PASS :
		       AG_V_DROP;
}

/* The counts of an entry moved out to its slot's ag_tally: only the
 * fields that moved. */
#define AG_FOLD(dst, src, f)                                     \
	do {                                                     \
		if ((src)->f)                                    \
			__sync_fetch_and_add(&(dst)->f, (src)->f); \
	} while (0)

static __always_inline void tally_fold(struct ag_tally_ent *t)
{
	__u32 old = t->slot1 - 1;
	struct ag_bucket *b = bpf_map_lookup_elem(&ag_buckets, &old);
	struct ag_tally *d = bpf_map_lookup_elem(&ag_tally, &old);

	/* The agent whose counts these are was deleted meanwhile: gone. */
	if (!b || !d || *(volatile __u32 *)&b->gen != t->gen)
		return;
	AG_FOLD(&d->c, &t->c, passed_packets);
	AG_FOLD(&d->c, &t->c, passed_bytes);
	AG_FOLD(&d->c, &t->c, dropped_packets);
	AG_FOLD(&d->c, &t->c, dropped_bytes);
	AG_FOLD(&d->c, &t->c, would_drop_packets);
	AG_FOLD(&d->c, &t->c, would_drop_bytes);
	AG_FOLD(&d->r, &t->r, parent_packets);
	AG_FOLD(&d->r, &t->r, parent_bytes);
	AG_FOLD(&d->r, &t->r, quota_packets);
	AG_FOLD(&d->r, &t->r, quota_bytes);
}

/*
 * This CPU's entry for the slot's counts (abi.h, "ag_tally"): the one it
 * holds, or, when it holds another slot's, that one's counts moved out to
 * ag_tally first. Readers see seq odd while they move. NULL: no bucket.
 */
/* The slot's bucket generation read when it was judged (the caller's), or
 * read here for a packet no bucket judged. */
static __always_inline __u32 slot_gen(__u32 slot)
{
	struct ag_bucket *b = bpf_map_lookup_elem(&ag_buckets, &slot);

	return b ? *(volatile __u32 *)&b->gen : 0;
}

static __always_inline struct ag_tally_ent *tally_of(__u32 slot, __u32 gen)
{
	__u32 k = slot & (AG_TALLY_CACHE - 1);
	struct ag_tally_ent *t = bpf_map_lookup_elem(&ag_tally_cache, &k);

	if (!t)
		return NULL;
	if (t->slot1 == slot + 1 && t->gen == gen)
		return t;
	*(volatile __u32 *)&t->seq = t->seq + 1;
	asm volatile("" ::: "memory");
	if (t->slot1)
		tally_fold(t);
	__builtin_memset(&t->c, 0, sizeof(t->c));
	__builtin_memset(&t->r, 0, sizeof(t->r));
	t->slot1 = slot + 1;
	t->gen = gen;
	asm volatile("" ::: "memory");
	*(volatile __u32 *)&t->seq = t->seq + 1;
	return t;
}

static __always_inline void count_pass(__u32 slot, __u32 gen, __u64 len)
{
	struct ag_tally_ent *t = tally_of(slot, gen);

	if (t) {
		t->c.passed_packets++;
		t->c.passed_bytes += len;
	}
}

/* Over the limit: dropped, or passed and counted in dry-run. */
static __always_inline int deny(const struct ag_config *cfg, struct ag_counters *c, __u64 len)
{
	if (cfg->dry_run) {
		c->would_drop_packets++;
		c->would_drop_bytes += len;
		c->passed_packets++;
		c->passed_bytes += len;
		stat_inc(AG_STAT_DRYRUN_WOULD_DROP);
		return XDP_PASS;
	}
	c->dropped_packets++;
	c->dropped_bytes += len;
	return XDP_DROP;
}

/* A refusal counted at a bucket: by a parent above it, by its quota, or
 * (neither) by its rate. */
static __always_inline int deny_at(const struct ag_config *cfg, __u32 slot, __u32 gen,
				   __u64 len, int by_parent, int by_quota)
{
	struct ag_tally_ent *t = tally_of(slot, gen);

	if (!t)
		return refuse(cfg);
	if (by_parent) {
		t->r.parent_packets++;
		t->r.parent_bytes += len;
	} else if (by_quota) {
		t->r.quota_packets++;
		t->r.quota_bytes += len;
	}
	return deny(cfg, &t->c, len);
}

/* What every level of a path is judged on. */
struct ag_judge_in {
	__u64 now_ns;  /* CLOCK_MONOTONIC, read once for the path */
	__u64 tai_ns;  /* CLOCK_TAI, read on a quota's first need; 0: not yet */
	__u32 len;     /* frame length */
	__s32 opening; /* the frame opens a connection; -1: not read yet */
};

/* Round one (commit 0: looks, loop-free) or two (1: swaps) of a level: its
 * rate, then its quota. Returns 0 (admitted), 1 (the rate refused), 2
 * (the quota refused) or 3 (judge it again once in->opening is read:
 * nothing was written); l->verdict says how. */
static __always_inline int judge_level(struct ag_level *l, struct ag_judge_in *in, int commit)
{
	struct ag_pkt pk;
	enum ag_verdict v;

	if (!l || !in)
		return 1;
	pk.ctx = NULL;
	pk.f = NULL;
	pk.len = in->len;
	pk.opening = in->opening;
	v = commit ? judge_bucket(l, &pk, in->now_ns, 1) : look_bucket(l, &pk, in->now_ns);
	l->verdict = v;
	if (v == AG_V_NO_BUCKET) { /* a parent being deleted: no limit */
		stat_inc(AG_STAT_NO_BUCKET);
		return 0;
	}
	if (v == AG_V_UNKNOWN)
		return 3;
	if (v != AG_V_PASS)
		return 1;
	v = commit ? judge_quota(l, &pk, &in->tai_ns, 1) : look_quota(l, &pk, &in->tai_ns);
	l->verdict = v;
	return v == AG_V_PASS ? 0 : 2;
}

/* A packet's path: its levels and what they are judged on (how many
 * levels it has goes beside it, in a register). */
struct ag_path {
	struct ag_level lv[AG_PATH_MAX];
	struct ag_judge_in in;
};

/* Round one over the path: -1 when every level admits, else the first
 * that refuses << 2 | why (judge_level). A global function. The agent's
 * own rate is judged first in round two, before anything is taken, so
 * without a quota (whose refusal after a taken rate would need a refund)
 * it is looked at here only when a level above refuses: then the path is
 * looked at again from the agent, for the first level that refuses. */
__noinline int ag_look_path(struct ag_path *p, int n)
{
	int i, why, from;

	if (!p)
		return 1; /* not reached: refused at the agent */
	from = p->lv[0].has_quota ? 0 : 1;
	for (i = from; i < AG_PATH_MAX; i++) {
		if (i >= n)
			return -1;
		why = judge_level(&p->lv[i], &p->in, 0);
		if (why && !from)
			return (i << 2) | why;
		if (why)
			break;
	}
	if (i >= AG_PATH_MAX)
		return -1;
	for (i = 0; i < AG_PATH_MAX; i++) {
		if (i >= n)
			break;
		why = judge_level(&p->lv[i], &p->in, 0);
		if (why)
			return (i << 2) | why;
	}
	return -1;
}

/* Round two of a level, a global function (see ag_take_back). */
__noinline int ag_take_level(struct ag_level *l, struct ag_judge_in *in)
{
	struct ag_bucket *b;

	if (!l)
		return 1;
	/* Round one found the word that admits the packet at its rate, on
	 * the same clock reading: unless tat moved since, swapping it in is
	 * the judgement (a quota is judged as ever). */
	if (l->next && !l->has_quota) {
		b = bpf_map_lookup_elem(&ag_buckets, &l->slot);
		if (b && __sync_val_compare_and_swap(&b->tat, l->prev, l->next) == l->prev) {
			l->word = l->next;
			l->verdict = AG_V_PASS;
			return 0;
		}
	}
	return judge_level(l, in, 1);
}

static __always_inline int enforce_path(const struct ag_config *cfg, struct ag_pkt *pk,
					__u32 slot, __u64 up, __u64 quota_conf)
{
	/* Not zeroed whole (a 232-byte store per packet): each level in use
	 * gets what is read before it is judged, the rest is never read. */
	struct ag_path p;
	int i, j, r = -1, why, n = 1;

	p.in.now_ns = bpf_ktime_get_ns();
	p.in.tai_ns = 0;
	p.in.len = (__u32)pk->len;
	/* The agent's budget was read by the caller; the parents' here. */
	p.lv[0].slot = slot;
	p.lv[0].has_quota = quota_conf != 0;
	/* qword: a level its rate refuses in round two is taken back
	 * before its quota is looked at; next: the agent's own level is
	 * not looked at in round one. (word is set by every judgement.) */
	p.lv[0].qword = p.lv[0].next = 0;
	for (i = 1; i < AG_PATH_MAX && up; i++) {
		struct ag_budget *bd;

		p.lv[i].slot = (__u32)up - 1;
		p.lv[i].qword = p.lv[i].next = 0;
		n++;
		bd = bpf_map_lookup_elem(&ag_budgets, &p.lv[i].slot);
		up = bd ? *(volatile __u64 *)&bd->up : 0;
		p.lv[i].has_quota = bd && *(volatile __u64 *)&bd->quota_conf;
	}
	/* Whether the packet opens a connection is read here, the levels
	 * being judged by functions of their own without the packet, and only
	 * when a level's unit needs it (a connection bucket). */
	p.in.opening = -1;
	/* Round one: look. */
	why = ag_look_path(&p, n);
	if (why >= 0 && (why & 3) == 3) {
		p.in.opening = is_opening(pk->ctx, pk->f);
		why = ag_look_path(&p, n);
		if (why >= 0 && (why & 3) == 3) /* not reached: refused, never uncharged */
			why = (why & ~3) | 1;
	}
	if (why >= 0) {
		r = (why >> 2) & (AG_PATH_MAX - 1);
		why &= 3;
	}
	/* Round two: take, or take back what was taken. */
	for (i = 0; i < AG_PATH_MAX && r < 0; i++) {
		if (i >= n)
			break;
		why = ag_take_level(&p.lv[i], &p.in);
		if (why == 3) { /* the agent's own level (not looked at), or units changed */
			p.in.opening = is_opening(pk->ctx, pk->f);
			why = ag_take_level(&p.lv[i], &p.in);
			if (why == 3) /* not reached */
				why = 1;
		}
		if (!why)
			continue;
		r = i;
		for (j = AG_PATH_MAX - 1; j >= 0; j--)
			if (j <= i)
				ag_take_back(&p.lv[j]);
	}
	if (r < 0) {
		for (i = 0; i < AG_PATH_MAX; i++)
			if (i < n)
				count_pass(p.lv[i].slot, p.lv[i].gen, pk->len);
		return XDP_PASS;
	}
	/* The level that refused (r < AG_PATH_MAX: tells the verifier). */
	if (r >= AG_PATH_MAX)
		return XDP_DROP;
	if (p.lv[r].verdict == AG_V_EXHAUSTED)
		stat_inc(AG_STAT_CAS_EXHAUSTED);
	if (r > 0)
		stat_inc(AG_STAT_PARENT_DROPPED);
	if (why == 2)
		stat_inc(AG_STAT_QUOTA_DROPPED);
	for (i = 0; i < AG_PATH_MAX; i++)
		if (i < r)
			deny_at(cfg, p.lv[i].slot, p.lv[i].gen, pk->len, 1, 0);
	return deny_at(cfg, p.lv[r].slot, p.lv[r].gen, pk->len, 0, why == 2);
}

static __always_inline int enforce(const struct ag_config *cfg, __u32 slot, struct ag_pkt *pk)
{
	struct ag_budget *bd = bpf_map_lookup_elem(&ag_budgets, &slot);
	__u64 up = bd ? *(volatile __u64 *)&bd->up : 0;
	__u64 quota_conf = bd ? *(volatile __u64 *)&bd->quota_conf : 0;
	struct ag_tally_ent *t;
	struct ag_counters *c;
	enum ag_verdict v;
	__u32 gen = 0;

	if (up | quota_conf)
		return enforce_path(cfg, pk, slot, up, quota_conf);
	v = charge(slot, pk, cfg->coarse_slack_ns, &gen);
	if (v == AG_V_NO_BUCKET) {
		stat_inc(AG_STAT_NO_BUCKET);
		return XDP_PASS;
	}
	t = tally_of(slot, gen);
	if (!t)
		return XDP_PASS;
	c = &t->c;
	if (v == AG_V_PASS) {
		c->passed_packets++;
		c->passed_bytes += pk->len;
		return XDP_PASS;
	}
	if (v == AG_V_EXHAUSTED)
		stat_inc(AG_STAT_CAS_EXHAUSTED);
	return deny(cfg, c, pk->len);
}

static __always_inline int unclassified(const struct ag_config *cfg)
{
	if (cfg->default_action != AG_ACTION_DROP) {
		stat_inc(AG_STAT_UNCLASSIFIED_PASSED);
		return XDP_PASS;
	}
	if (cfg->dry_run) {
		stat_inc(AG_STAT_UNCLASSIFIED_PASSED);
		stat_inc(AG_STAT_DRYRUN_WOULD_DROP);
		return XDP_PASS;
	}
	stat_inc(AG_STAT_UNCLASSIFIED_DROPPED);
	return XDP_DROP;
}

/* ---- fragments and unreachable ports --------------------------------- */

#define AG_GO -1 /* judge the packet by *slot */

static __always_inline int port_rules(const struct ag_config *cfg, int family)
{
	return family == AG_PARSE_V4 ?
		       cfg->rule_count[AG_RK_HOST4_PORT] | cfg->rule_count[AG_RK_LPM4_PORT] :
		       cfg->rule_count[AG_RK_HOST6_PORT] | cfg->rule_count[AG_RK_LPM6_PORT];
}

/*
 * A packet whose L4 header is out of reach although the kernel may deliver
 * it (a later fragment whose first fragment was not seen, an IPv6 chain
 * longer than the kernel follows). Its source prefix is known: a wildcard
 * rule, which needs no port, charges it. Without one, only a port rule
 * could have claimed it, and which one cannot be told: while the family
 * has port rules it is dropped, otherwise it is unclassified like any
 * packet no rule matches.
 */
static __always_inline int port_unknown(const struct ag_config *cfg, int family, __u32 slot)
{
	if (slot != AG_FRAG_NO_SLOT || !port_rules(cfg, family))
		return AG_GO;
	stat_inc(AG_STAT_PORT_UNKNOWN_DROPPED);
	return refuse(cfg);
}

/* The rest of a datagram one fragment of which was dropped: it cannot be
 * reassembled, so it is dropped without taking tokens, and kept out of the
 * kernel's reassembly memory. */
static __always_inline int after_drop(const struct ag_config *cfg, __u32 slot, __u64 len)
{
	struct ag_tally_ent *t = tally_of(slot, slot_gen(slot));

	stat_inc(AG_STAT_FRAGMENT_AFTER_DROP);
	if (!t)
		return refuse(cfg);
	return deny(cfg, &t->c, len);
}

/*
 * Fragments, and packets whose port is unknown. Returns a verdict, or
 * AG_GO to have the packet judged by *slot (its classification, or what
 * its first fragment was judged by); *fv is then the datagram's entry for a
 * later fragment, to be marked when this one is dropped.
 */
static __always_inline int unusual(const struct ag_config *cfg, const struct ag_flow *f,
				   int family, __u32 *slot, struct ag_frag_val **fv, __u64 len)
{
	struct ag_frag_val *v;

	if (f->port_unknown)
		return port_unknown(cfg, family, *slot);
	if (f->frag == AG_FRAG_FIRST) {
		/* A second first fragment that no rule claims (a decoy before
		 * or after the real one, or an identification used again)
		 * stays with the agent already charged for the datagram. */
		if (*slot == AG_FRAG_NO_SLOT) {
			v = bpf_map_lookup_elem(&ag_frags, &f->fk);
			if (v)
				*slot = v->slot;
		}
		return AG_GO;
	}
	v = bpf_map_lookup_elem(&ag_frags, &f->fk);
	if (!v) {
		stat_inc(AG_STAT_FRAGMENT_ORPHAN);
		return port_unknown(cfg, family, *slot);
	}
	*slot = v->slot;
	if ((v->flags & AG_FRAG_DROPPED) && *slot != AG_FRAG_NO_SLOT)
		return after_drop(cfg, *slot, len);
	*fv = v;
	return AG_GO;
}

/* Remember how a first fragment was judged; mark a datagram one later
 * fragment of which was dropped. */
static __always_inline void frag_judged(const struct ag_flow *f, struct ag_frag_val *fv,
					__u32 slot, int verdict)
{
	if (f->frag == AG_FRAG_FIRST) {
		struct ag_frag_val v = { .slot = slot,
					 .flags = verdict == XDP_DROP ? AG_FRAG_DROPPED : 0 };

		bpf_map_update_elem(&ag_frags, &f->fk, &v, BPF_ANY);
	} else if (fv && verdict == XDP_DROP) {
		fv->flags = AG_FRAG_DROPPED;
	}
}

/* A frame whose source the parser did not reach (its reason counted):
 * link protocols and what the kernel drops pass; what it may deliver is
 * dropped (UNFOLLOWED) or gets the default action (CARRIER). */
static __always_inline int unparsed(int family)
{
	struct ag_config *cfg;
	__u32 zero = 0;

	if (family == AG_PARSE_NON_IP) {
		stat_inc(AG_STAT_NON_IP);
		return XDP_PASS;
	}
	if (family == AG_PARSE_MALFORMED)
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&ag_config, &zero);
	if (!cfg)
		return XDP_PASS;
	if (family == AG_PARSE_UNFOLLOWED)
		return refuse(cfg);
	return unclassified(cfg);
}

static __always_inline int judge(struct xdp_md *ctx)
{
	struct ag_frag_val *fv = NULL;
	struct ag_config *cfg;
	struct ag_rule_val *rule;
	struct ag_flow f;
	__u32 zero = 0, slot;
	int family, verdict;
	__u64 len;

	family = ag_parse(ctx, &f);
	/* Read after the parse, so that no packet pointer whose checked range
	 * depends on the VLAN depth lives on: every depth then shares one
	 * verification of what follows. */
	len = ctx->data_end - ctx->data;
	if (f.reason != AG_STAT__MAX)
		stat_inc(f.reason);
	if (family < 0)
		return unparsed(family);

	cfg = bpf_map_lookup_elem(&ag_config, &zero);
	if (!cfg)
		return XDP_PASS;

	rule = family == AG_PARSE_V4 ? classify_v4(cfg, &f) : classify_v6(cfg, &f);
	slot = rule ? rule->slot : AG_FRAG_NO_SLOT;
	if (f.frag | f.port_unknown) {
		verdict = unusual(cfg, &f, family, &slot, &fv, len);
		if (verdict != AG_GO)
			return verdict;
	}
	if (slot == AG_FRAG_NO_SLOT) {
		verdict = unclassified(cfg);
	} else {
		struct ag_pkt pk = { .ctx = ctx, .f = &f, .len = len, .opening = -1 };

		verdict = enforce(cfg, slot, &pk);
	}
	if (f.frag)
		frag_judged(&f, fv, slot, verdict);
	return verdict;
}

SEC("xdp")
int agentgate_xdp(struct xdp_md *ctx)
{
	int verdict = judge(ctx);

	/* A packet agentgate lets through goes on to the device's next
	 * program, if one is chained (its verdict is then the packet's); an
	 * empty slot falls through. */
	if (verdict == XDP_PASS)
		bpf_tail_call(ctx, &ag_next, ctx->ingress_ifindex);
	return verdict;
}
