// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * XDP cost per packet: the agentgate datapath against an empty XDP_DROP
 * program, both run through BPF_PROG_TEST_RUN with a large repeat count
 * (the kernel reports the average nanoseconds per repetition).
 *
 * For each scale (1, 10^4, 10^6 agents, one rule each) and each rule shape
 * (IPv4 host /32 and IPv6 host /128 rules in the exact-match hashes, IPv4 /24
 * and IPv6 /64 prefix rules in the LPM tries) a fresh pin root is created
 * under the bpffs given on the command line, the agents and rules are added
 * through libagentgate (timed), and the variants are measured in interleaved
 * rounds, with frames of the shape's family:
 *   empty   the empty XDP_DROP program: the floor of test_run itself
 *   pass    a classified source whose agent never runs out of tokens
 *   drop    the same source with the agent limited to 1 token/s, burst 1
 *   uncl    a source far from every rule (192.0.2.1 or 3fff::1; default
 *           action: pass)
 *   near    a source no rule matches right after the last rule's addresses
 *           (an LPM trie walks deep before it misses)
 *   pass6   the pass case over the other family (the target agent's one
 *           extra rule there; named pass4 in the IPv6 shapes)
 *   ptrie   pass with the prefix index forced to the LPM trie for the run
 *           (ag_prefix_index_set): the trie walk against the per-length
 *           hash in the same rounds (in the host shapes the same as pass)
 *   chain   pass with the empty program chained after agentgate on the
 *           test's device (ag_chain_set on lo, which test_run's frames
 *           arrive on): the tail call into another program and that
 *           program's floor, against pass
 *   par1..3 pass with the target agent under 1, 2 or 3 parent buckets (a
 *           path of 2 to 4 buckets, docs/BUDGETS.md), none of which runs
 *           out: what each level adds to the pass path
 *   quota   pass with a quota on the target agent that never runs out
 *           (AG_QUOTA_MAX a 30-day window): the quota's count and the
 *           TAI clock on the pass path
 * The medians over the rounds are reported with their ratio to the median of
 * the empty program measured in the same rounds: on a shared machine the
 * absolute numbers drift, the ratio much less.
 *
 * --breakdown adds probe programs built from raw instructions that do one
 * thing each (a clock helper: bpf_ktime_get_ns, bpf_ktime_get_coarse_ns,
 * bpf_jiffies64; one lookup in the rule map that the shape uses, with a
 * hitting and a missing key, and one in the per-length hash of the prefix
 * shapes), to see where the time goes.
 *
 * --all-cpus runs every measurement on every online CPU at once, one
 * thread pinned to each, the same frame of the same agent: a one-agent
 * flood from all CPUs, where counters or bucket state that CPUs share would
 * show as contention. The ns reported are the CPUs' mean per packet.
 *
 * The program mounts nothing: bench/run.sh mounts a private bpffs and
 * removes it afterwards. Every pin root made here is removed on the way out.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/vfs.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include "agentgate.h"
#include "empty.skel.h"
#include "../tests/lib/pkt.h"
#include "rmtree.h"

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif

#define DEF_REPEAT 1000000u
#define DEF_ROUNDS 7
#define MAX_ROUNDS 51
#define DEF_MAX_SCALE 1000000u
#define FRAME_LEN 64
#define SETUP_SLOW_S 60.0
#define PASS_RATE 1e10            /* tokens/s: the bucket never empties */
#define PASS_BURST (1ULL << 40)
#define DROP_RATE 1.0
#define DROP_BURST 1ULL
#define FILL_RATE 100.0           /* every other agent */
#define FILL_BURST 100ULL
#define DROP_SLACK 16             /* packets a drop run may pass (refill, first one) */
#define PROGRESS_EVERY 100000u
#define UNCLASSIFIED_SRC4 "192.0.2.1"
#define UNCLASSIFIED_SRC6 "3fff::1"  /* RFC 9637 documentation prefix */
#define TARGET_SRC6 "2001:db8:1::1"
#define TARGET_SRC4 "10.255.0.1"     /* the extra IPv4 rule of the IPv6 shapes */

static const __u32 scales[] = { 1, 10000, 1000000 };
#define N_SCALES (sizeof(scales) / sizeof(scales[0]))

enum shape {
	SHAPE_HOST,
	SHAPE_PREFIX,
	SHAPE_HOST6,
	SHAPE_PREFIX6,
	SHAPE__COUNT
};

struct shape_desc {
	const char *name;
	int family;       /* AF_INET or AF_INET6: the scaled rules and the main frames */
	__u8 plen;
	const char *map;  /* the map the rules go to */
	const char *what;
};

static const struct shape_desc shapes[SHAPE__COUNT] = {
	[SHAPE_HOST] = { "host", AF_INET, 32, AG_MAP_HOSTS_V4, "IPv4 /32, exact-match hash" },
	[SHAPE_PREFIX] = { "prefix", AF_INET, 24, AG_MAP_RULES_V4, "IPv4 /24, LPM trie + per-length hash" },
	[SHAPE_HOST6] = { "host6", AF_INET6, 128, AG_MAP_HOSTS_V6, "IPv6 /128, exact-match hash" },
	[SHAPE_PREFIX6] = { "prefix6", AF_INET6, 64, AG_MAP_RULES_V6, "IPv6 /64, LPM trie + per-length hash" },
};

enum frame_id {
	F_HIT,  /* source of the target agent's rule of the shape */
	F_HITX, /* source of the target agent's extra rule in the other family */
	F_MISS, /* no rule, far from all of them */
	F_NEAR, /* no rule, next to the last one */
	F__COUNT
};

enum variant {
	V_EMPTY,
	V_PASS,
	V_DROP,
	V_UNCL,
	V_NEAR,
	V_PASSX,    /* pass over the other family */
	V_PTRIE,    /* pass with the prefix index forced to the trie */
	V_CHAIN,    /* pass, then the empty program chained after agentgate */
	V_PAR1,     /* pass under one parent bucket */
	V_PAR2,     /* ... two */
	V_PAR3,     /* ... three (AG_PATH_MAX buckets) */
	V_QUOTA,    /* pass with a quota that never runs out */
	V_KTIME,    /* --breakdown probes from here on */
	V_COARSE,
	V_JIFFIES,
	V_RULE_HIT,
	V_RULE_MISS,
	V_PHASH,
	V__COUNT
};
#define V__MAIN V_KTIME

enum limit {
	LIMIT_FILL,
	LIMIT_PASS,
	LIMIT_DROP,
};

struct options {
	const char *bpffs;
	const char *json;
	__u32 max_scale;
	__u32 repeat;
	int rounds;
	int cpu;
	bool breakdown;
	bool all_cpus; /* every measurement on every online CPU at once */
	bool shape_on[SHAPE__COUNT];
};

struct sample {
	__u32 retval;
	__u32 ns;       /* kernel: average ns per repetition (integer) */
	double wall_ns; /* clock_gettime around the syscall / repeat */
};

struct summary {
	double median, min, max, wall_median, ratio;
};

struct run {
	__u32 agents;
	enum shape shape;
	__u32 max_agents, max_rules;
	double setup_s;
	char root[PATH_MAX];
	struct ag_ctx *ctx;
	struct ag_prog *prog;
	int probe_fd[V__COUNT]; /* probe programs, -1 when absent */
	int rule_map_fd;
	int prefix_map_fd;
	bool index_hash; /* the datapath probes the per-length hash for the shape's family */
	char target[32];
	__u32 target_slot;
	enum limit limit;
	struct pkt frames[F__COUNT];
	struct sample samples[V__COUNT][MAX_ROUNDS];
	struct summary sum[V__COUNT];
};

struct variant_desc {
	const char *name;
	const char *what;
	enum frame_id frame;
};

static const struct variant_desc variants[V__COUNT] = {
	[V_EMPTY] = { "empty", "empty XDP_DROP program (floor)", F_HIT },
	[V_PASS] = { "pass", "classified, within limit -> XDP_PASS", F_HIT },
	[V_DROP] = { "drop", "classified, over limit -> XDP_DROP", F_HIT },
	[V_UNCL] = { "uncl", "unclassified, far from the rules, default pass", F_MISS },
	[V_NEAR] = { "near", "unclassified, next to the rules, default pass", F_NEAR },
	[V_PASSX] = { "pass6", "classified over the other family -> XDP_PASS", F_HITX },
	[V_PTRIE] = { "ptrie", "pass with prefix rules looked up in the LPM trie", F_HIT },
	[V_CHAIN] = { "chain", "pass, then the empty program after it (ag_next)", F_HIT },
	[V_PAR1] = { "par1", "pass under 1 parent bucket (2 buckets on the path)", F_HIT },
	[V_PAR2] = { "par2", "pass under 2 parent buckets (3 on the path)", F_HIT },
	[V_PAR3] = { "par3", "pass under 3 parent buckets (4 on the path)", F_HIT },
	[V_QUOTA] = { "quota", "pass with a quota (30-day window) beside the rate", F_HIT },
	[V_KTIME] = { "p:ktime", "probe: bpf_ktime_get_ns() only", F_HIT },
	[V_COARSE] = { "p:coarse", "probe: bpf_ktime_get_coarse_ns() only", F_HIT },
	[V_JIFFIES] = { "p:jiff", "probe: bpf_jiffies64() only", F_HIT },
	[V_RULE_HIT] = { "p:hit", "probe: one rule-map lookup, hit", F_HIT },
	[V_RULE_MISS] = { "p:miss", "probe: one rule-map lookup, miss", F_HIT },
	[V_PHASH] = { "p:phash", "probe: one per-length hash lookup, hit", F_HIT },
};

/* pass6 over IPv4 rules is pass4 over IPv6 ones. */
static const char *variant_name(const struct run *r, int v)
{
	if (v == V_PASSX && shapes[r->shape].family == AF_INET6)
		return "pass4";
	return variants[v].name;
}

static struct options opt = {
	.max_scale = DEF_MAX_SCALE,
	.repeat = DEF_REPEAT,
	.rounds = DEF_ROUNDS,
	.cpu = -1,
};
static int empty_fd = -1;
static char command[4096];

/* ---- small helpers ----------------------------------------------------- */

static double now_s(void)
{
	return ag_now_ns() / 1e9;
}

static __u32 roundup_pow2(__u32 n)
{
	__u32 p = 16;

	while (p < n)
		p <<= 1;
	return p;
}

static int lib_err(const char *what, int err)
{
	fprintf(stderr, "xdp_cost: %s: %s\n", what, ag_errmsg());
	return err;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- raw-instruction probe programs (--breakdown) ----------------------- */

static struct bpf_insn insn(__u8 code, __u8 dst, __u8 src, __s16 off, __s32 imm)
{
	struct bpf_insn i = { .code = code, .dst_reg = dst, .src_reg = src, .off = off, .imm = imm };

	return i;
}

static int probe_load(const struct bpf_insn *prog, size_t n)
{
	LIBBPF_OPTS(bpf_prog_load_opts, o);
	int fd;

	fd = bpf_prog_load(BPF_PROG_TYPE_XDP, "ag_probe", "Dual BSD/GPL", prog, n, &o);
	if (fd < 0) {
		fprintf(stderr, "xdp_cost: cannot load a probe program: %s\n", strerror(errno));
		return -errno;
	}
	return fd;
}

/* One helper call without arguments; return XDP_DROP. */
static int probe_call(enum bpf_func_id func)
{
	struct bpf_insn p[3];

	p[0] = insn(BPF_JMP | BPF_CALL, 0, 0, 0, func);
	p[1] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, XDP_DROP);
	p[2] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
	return probe_load(p, 3);
}

/* One bpf_map_lookup_elem(map, key); XDP_DROP on a hit, XDP_PASS on a miss. */
static int probe_lookup(int map_fd, const void *key, size_t key_len)
{
	struct bpf_insn p[16];
	size_t n = 0, i;
	__s32 w;

	if (key_len % 4 || key_len > 24)
		return -EINVAL;
	for (i = 0; i < key_len; i += 4) {
		memcpy(&w, (const char *)key + i, 4);
		p[n++] = insn(BPF_ST | BPF_MEM | BPF_W, BPF_REG_10, 0, (__s16)(-24 + (int)i), w);
	}
	p[n++] = insn(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0);
	p[n++] = insn(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, -24);
	p[n++] = insn(BPF_LD | BPF_DW | BPF_IMM, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0, map_fd);
	p[n++] = insn(0, 0, 0, 0, 0);
	p[n++] = insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem);
	p[n++] = insn(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, 2, 0);
	p[n++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, XDP_DROP);
	p[n++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
	p[n++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, XDP_PASS);
	p[n++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
	return probe_load(p, n);
}

/* The key the datapath builds for a source address in the shape's rule map. */
static size_t rule_key(enum shape shape, const __u8 addr[16], void *key)
{
	switch (shape) {
	case SHAPE_HOST: {
		struct ag_host4_key k = { .port = 0 };

		memcpy(k.addr, addr, 4);
		memcpy(key, &k, sizeof(k));
		return sizeof(k);
	}
	case SHAPE_PREFIX: {
		struct ag_lpm4_key k = { .prefixlen = 32 + 32, .port = 0 };

		memcpy(k.addr, addr, 4);
		memcpy(key, &k, sizeof(k));
		return sizeof(k);
	}
	case SHAPE_HOST6: {
		struct ag_host6_key k = { .port = 0 };

		memcpy(k.addr, addr, 16);
		memcpy(key, &k, sizeof(k));
		return sizeof(k);
	}
	default: {
		struct ag_lpm6_key k = { .prefixlen = 32 + 128, .port = 0 };

		memcpy(k.addr, addr, 16);
		memcpy(key, &k, sizeof(k));
		return sizeof(k);
	}
	}
}

/* ---- addresses and frames ------------------------------------------------ */

static void put_be32(__u8 *p, __u32 v)
{
	v = htonl(v);
	memcpy(p, &v, 4);
}

/*
 * Rule i of a shape, network order (IPv4 in the first 4 bytes):
 *   host     10.0.0.1 + i /32
 *   prefix   16.0.0.0/24 + i (i in bits 8..31)
 *   host6    2001:db8:100::1 + i /128 (i in the last 32 bits)
 *   prefix6  2001:db8:XXXX:XXXX::/64, the middle 32 bits 0x00010000 + i
 */
static void rule_addr(enum shape shape, __u32 i, __u8 out[16])
{
	memset(out, 0, 16);
	switch (shape) {
	case SHAPE_HOST:
		put_be32(out, 0x0a000001u + i);
		break;
	case SHAPE_PREFIX:
		put_be32(out, (0x100000u + i) << 8);
		break;
	case SHAPE_HOST6:
		put_be32(out, 0x20010db8u);
		put_be32(out + 4, 0x01000000u);
		put_be32(out + 12, 1 + i);
		break;
	default:
		put_be32(out, 0x20010db8u);
		put_be32(out + 4, 0x00010000u + i);
		break;
	}
}

static __u32 target_index(__u32 agents)
{
	return agents / 2; /* a middle rule, not the first one inserted */
}

/* A source inside rule i: the host itself, or the prefix's first host. */
static void source_in(enum shape shape, __u32 i, __u8 out[16])
{
	rule_addr(shape, i, out);
	if (shape == SHAPE_PREFIX)
		out[3] |= 1;
	else if (shape == SHAPE_PREFIX6)
		out[15] |= 1;
}

static void frame_of(struct pkt *p, int family, const __u8 src[16])
{
	char text[INET6_ADDRSTRLEN];

	inet_ntop(family, src, text, sizeof(text));
	pkt_eth(p, family == AF_INET ? ETH_P_IP : ETH_P_IPV6);
	if (family == AF_INET)
		pkt_ipv4(p, text, NULL, IPPROTO_UDP, NULL);
	else
		pkt_ipv6(p, text, NULL, IPPROTO_UDP);
	pkt_udp(p, 53);
	pkt_pad_to(p, FRAME_LEN);
	pkt_finish(p);
}

static int other_family(int family)
{
	return family == AF_INET ? AF_INET6 : AF_INET;
}

/* The target agent's extra rule in the other family, as text. */
static const char *extra_rule(enum shape shape)
{
	switch (shape) {
	case SHAPE_HOST: return TARGET_SRC6 "/128";
	case SHAPE_PREFIX: return "2001:db8:1::/64";
	case SHAPE_HOST6: return TARGET_SRC4 "/32";
	default: return "10.255.0.0/24";
	}
}

static void build_frames(struct run *r)
{
	int fam = shapes[r->shape].family, xfam = other_family(fam);
	__u8 a[16] = {};

	source_in(r->shape, target_index(r->agents), a);
	frame_of(&r->frames[F_HIT], fam, a);
	/* the extra rule's first host: TARGET_SRC6, TARGET_SRC4 or inside them */
	inet_pton(xfam, xfam == AF_INET6 ? TARGET_SRC6 : TARGET_SRC4, a);
	frame_of(&r->frames[F_HITX], xfam, a);
	inet_pton(fam, fam == AF_INET ? UNCLASSIFIED_SRC4 : UNCLASSIFIED_SRC6, a);
	frame_of(&r->frames[F_MISS], fam, a);
	/* rule index `agents` does not exist: its address is unclassified */
	source_in(r->shape, r->agents, a);
	frame_of(&r->frames[F_NEAR], fam, a);
}

/* ---- setup --------------------------------------------------------------- */

static void agent_name(__u32 i, char *buf, size_t len)
{
	snprintf(buf, len, "agent-%07u", i);
}

static int add_agent_rule(struct run *r, __u32 i)
{
	struct ag_agent_update u = {
		.fields = AG_SET_RATE | AG_SET_BURST, .rate = FILL_RATE, .burst = FILL_BURST,
	};
	struct ag_rule rule = { .family = shapes[r->shape].family, .plen = shapes[r->shape].plen };
	char name[32];
	int err;

	agent_name(i, name, sizeof(name));
	err = ag_agent_set(r->ctx, name, &u, NULL, NULL);
	if (err)
		return lib_err("ag_agent_set", err);
	rule_addr(r->shape, i, rule.addr);
	err = ag_rule_add(r->ctx, &rule, name);
	if (err)
		return lib_err("ag_rule_add", err);
	return 0;
}

/* The target agent also owns one rule of the other family (pass6/pass4). */
static int add_target_extra(struct run *r)
{
	struct ag_rule rule;
	int err;

	err = ag_prefix_parse(extra_rule(r->shape), &rule);
	if (!err)
		err = ag_rule_add(r->ctx, &rule, r->target);
	if (err)
		return lib_err("ag_rule_add (other family)", err);
	return 0;
}

static int populate(struct run *r)
{
	double t0 = now_s();
	struct ag_agent a;
	__u32 i;
	int err;

	for (i = 0; i < r->agents; i++) {
		err = add_agent_rule(r, i);
		if (err)
			return err;
		if (r->agents >= 10 * PROGRESS_EVERY && (i + 1) % PROGRESS_EVERY == 0)
			fprintf(stderr, "  %u/%u agents+rules, %.1f s\n", i + 1, r->agents,
				now_s() - t0);
	}
	agent_name(target_index(r->agents), r->target, sizeof(r->target));
	err = ag_agent_get(r->ctx, r->target, &a);
	if (err)
		return lib_err("ag_agent_get", err);
	r->target_slot = a.slot;
	r->limit = LIMIT_FILL;
	err = add_target_extra(r);
	r->setup_s = now_s() - t0;
	return err;
}

static int open_rule_map(struct run *r)
{
	char path[PATH_MAX + 32];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", r->root, shapes[r->shape].map);
	fd = bpf_obj_get(path);
	if (fd < 0) {
		fprintf(stderr, "xdp_cost: cannot open %s: %s\n", path, strerror(errno));
		return -errno;
	}
	r->rule_map_fd = fd;
	return 0;
}

static int load_probes(struct run *r)
{
	static const struct {
		enum variant v;
		enum bpf_func_id func;
	} calls[] = {
		{ V_KTIME, BPF_FUNC_ktime_get_ns },
		{ V_COARSE, BPF_FUNC_ktime_get_coarse_ns },
		{ V_JIFFIES, BPF_FUNC_jiffies64 },
	};
	int fam = shapes[r->shape].family;
	__u8 key[24], a[16] = {};
	size_t len, i;
	int fd, err;

	err = open_rule_map(r);
	if (err)
		return err;
	for (i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
		fd = probe_call(calls[i].func);
		if (fd < 0)
			return fd;
		r->probe_fd[calls[i].v] = fd;
	}
	/* the hash is keyed by the host, the trie by any address inside */
	source_in(r->shape, target_index(r->agents), a);
	len = rule_key(r->shape, a, key);
	fd = probe_lookup(r->rule_map_fd, key, len);
	if (fd < 0)
		return fd;
	r->probe_fd[V_RULE_HIT] = fd;
	inet_pton(fam, fam == AF_INET ? UNCLASSIFIED_SRC4 : UNCLASSIFIED_SRC6, a);
	len = rule_key(r->shape, a, key);
	fd = probe_lookup(r->rule_map_fd, key, len);
	if (fd < 0)
		return fd;
	r->probe_fd[V_RULE_MISS] = fd;
	/* the per-length hash is keyed by the rule itself (host shapes: the
	 * host hash again) */
	if (r->shape == SHAPE_PREFIX || r->shape == SHAPE_PREFIX6) {
		char path[PATH_MAX + 32];
		struct ag_lpm6_key k6 = { .prefixlen = 32 + shapes[r->shape].plen };

		snprintf(path, sizeof(path), "%s/%s", r->root,
			 fam == AF_INET ? AG_MAP_PREFIXES_V4 : AG_MAP_PREFIXES_V6);
		r->prefix_map_fd = bpf_obj_get(path);
		if (r->prefix_map_fd < 0) {
			fprintf(stderr, "xdp_cost: cannot open %s: %s\n", path, strerror(errno));
			return -errno;
		}
		rule_addr(r->shape, target_index(r->agents), a);
		memcpy(k6.addr, a, 16); /* ag_lpm4_key is the same up to its 4-byte address */
		fd = probe_lookup(r->prefix_map_fd, &k6,
				  fam == AF_INET ? sizeof(struct ag_lpm4_key) : sizeof(k6));
	} else {
		fd = dup(r->probe_fd[V_RULE_HIT]);
	}
	if (fd < 0)
		return fd;
	r->probe_fd[V_PHASH] = fd;
	return 0;
}

/* bx-p1 <- bx-p2 <- bx-p3, none of which runs out; the par variants hang
 * the target under one of them. */
static const char *const parent_names[3] = { "bx-p1", "bx-p2", "bx-p3" };

static int add_parents(struct run *r)
{
	int i, err;

	for (i = 0; i < 3; i++) {
		struct ag_agent_update u = { .fields = AG_SET_RATE | AG_SET_BURST | AG_SET_PARENT,
					     .rate = PASS_RATE, .burst = PASS_BURST,
					     .parent = i ? parent_names[i - 1] : NULL };

		err = ag_parent_set(r->ctx, parent_names[i], &u, NULL, NULL);
		if (err)
			return lib_err("ag_parent_set", err);
	}
	return 0;
}

static int set_parent(struct run *r, const char *parent)
{
	struct ag_agent_update u = { .fields = AG_SET_PARENT, .parent = parent };
	int err = ag_agent_set(r->ctx, r->target, &u, NULL, NULL);

	return err ? lib_err("ag_agent_set (parent)", err) : 0;
}

static int set_quota(struct run *r, __u64 limit)
{
	struct ag_agent_update u = { .fields = AG_SET_QUOTA, .quota = limit,
				     .quota_window = limit ? AG_QW_30D : AG_QW_NONE };
	int err = ag_agent_set(r->ctx, r->target, &u, NULL, NULL);

	return err ? lib_err("ag_agent_set (quota)", err) : 0;
}

static int run_setup(struct run *r)
{
	struct ag_open_opts o = { .create = true };
	int err;

	snprintf(r->root, sizeof(r->root), "%s/xdp-cost-%s-%u-%d", opt.bpffs,
		 shapes[r->shape].name, r->agents, (int)getpid());
	bench_rm_tree(r->root);
	r->max_agents = roundup_pow2(r->agents + 3); /* and the par variants' parents */
	r->max_rules = roundup_pow2(r->agents);
	o.pin_root = r->root;
	o.max_agents = r->max_agents;
	o.max_rules = r->max_rules;
	err = ag_open(&o, &r->ctx);
	if (err)
		return lib_err("ag_open", err);
	err = populate(r);
	if (err)
		return err;
	err = add_parents(r);
	if (err)
		return err;
	err = ag_prog_load(r->ctx, &r->prog);
	if (err)
		return lib_err("ag_prog_load", err);
	err = ag_prefix_index_active(r->ctx, shapes[r->shape].family);
	if (err < 0)
		return lib_err("ag_prefix_index_active", err);
	r->index_hash = err == 1;
	build_frames(r);
	if (opt.breakdown)
		return load_probes(r);
	return 0;
}

static void run_teardown(struct run *r)
{
	int v;

	for (v = 0; v < V__COUNT; v++)
		if (r->probe_fd[v] >= 0)
			close(r->probe_fd[v]);
	if (r->rule_map_fd >= 0)
		close(r->rule_map_fd);
	if (r->prefix_map_fd >= 0)
		close(r->prefix_map_fd);
	ag_prog_free(r->prog);
	ag_close(r->ctx);
	r->prog = NULL;
	r->ctx = NULL;
	bench_rm_tree(r->root);
}

/* ---- measurement --------------------------------------------------------- */

static int set_limit(struct run *r, enum limit want)
{
	struct ag_agent_update u = { .fields = AG_SET_RATE | AG_SET_BURST };
	int err;

	if (r->limit == want)
		return 0;
	u.rate = want == LIMIT_PASS ? PASS_RATE : DROP_RATE;
	u.burst = want == LIMIT_PASS ? PASS_BURST : DROP_BURST;
	err = ag_agent_set(r->ctx, r->target, &u, NULL, NULL);
	if (err)
		return lib_err("ag_agent_set (limit)", err);
	r->limit = want;
	return 0;
}

static int prog_fd_of(const struct run *r, enum variant v)
{
	if (v == V_EMPTY)
		return empty_fd;
	if (v >= V__MAIN)
		return r->probe_fd[v];
	return ag_prog_fd(r->prog);
}

/* --all-cpus: one thread per online CPU, pinned, all running the same
 * frame through the same program (one agent flooded from every CPU). */
struct flood_arg {
	int cpu, fd, err;
	const struct pkt *p;
	__u32 repeat, retval, ns;
	_Atomic int *go; /* 1: run, -1: give up (not every thread started) */
};

static void *flood_thread(void *arg)
{
	struct flood_arg *a = arg;
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = a->p->b, .data_size_in = (__u32)a->p->len,
		    .repeat = a->repeat);
	cpu_set_t set;
	int go;

	CPU_ZERO(&set);
	CPU_SET(a->cpu, &set);
	a->err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	while (!(go = atomic_load(a->go)))
		sched_yield();
	if (go < 0)
		return NULL;
	if (!a->err && bpf_prog_test_run_opts(a->fd, &o))
		a->err = errno;
	a->retval = o.retval;
	a->ns = o.duration;
	return NULL;
}

static int flood_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

/* The mean of the CPUs' ns per repetition; every CPU's verdict the same. */
static int test_run_all(int fd, const struct pkt *p, __u32 repeat, struct sample *s)
{
	int n = flood_cpus(), i, started, err = 0;
	struct flood_arg a[256];
	pthread_t t[256];
	_Atomic int go = 0;
	__u64 t0, sum = 0;

	for (started = 0; started < n; started++) {
		a[started] = (struct flood_arg){ .cpu = started, .fd = fd, .p = p,
						 .repeat = repeat, .go = &go };
		if (pthread_create(&t[started], NULL, flood_thread, &a[started]))
			break;
	}
	t0 = ag_now_ns();
	atomic_store(&go, started == n ? 1 : -1);
	if (started < n) {
		fprintf(stderr, "xdp_cost: cannot start a thread per CPU\n");
		err = -EAGAIN;
	}
	for (i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	for (i = 0; i < started && !err; i++) {
		if (a[i].err) {
			fprintf(stderr, "xdp_cost: CPU %d: %s\n", a[i].cpu, strerror(a[i].err));
			err = -a[i].err;
		} else if (a[i].retval != a[0].retval) {
			fprintf(stderr, "xdp_cost: CPU %d returned %u, CPU 0 %u\n", a[i].cpu,
				a[i].retval, a[0].retval);
			err = -EPROTO;
		}
		sum += a[i].ns;
	}
	s->wall_ns = (double)(ag_now_ns() - t0) / repeat;
	s->retval = a[0].retval;
	s->ns = (__u32)((sum + n / 2) / n);
	return err;
}

static int test_run(int fd, const struct pkt *p, __u32 repeat, struct sample *s)
{
	if (opt.all_cpus)
		return test_run_all(fd, p, repeat, s);
	{
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = p->b, .data_size_in = (__u32)p->len,
		    .repeat = repeat);
	__u64 t0 = ag_now_ns();

	if (bpf_prog_test_run_opts(fd, &o)) {
		fprintf(stderr, "xdp_cost: BPF_PROG_TEST_RUN: %s\n", strerror(errno));
		return -errno;
	}
	s->wall_ns = (double)(ag_now_ns() - t0) / repeat;
	s->retval = o.retval;
	s->ns = o.duration;
	return 0;
	}
}

struct snap {
	struct ag_counters c;
	__u64 stats[AG_STAT__MAX];
};

static int take_snap(struct run *r, struct snap *s)
{
	int err = ag_counters_get(r->ctx, r->target_slot, &s->c);

	if (!err)
		err = ag_stats_get(r->ctx, s->stats);
	if (err)
		return lib_err("reading counters", err);
	return 0;
}

/* Programs without counters (empty, probes): the verdict alone. */
static bool verdict_ok(enum variant v, const struct sample *s)
{
	return s->retval == (v == V_RULE_MISS ? XDP_PASS : XDP_DROP);
}

/* The datapath took the path the variant names: verdict and counter deltas. */
static bool path_ok(enum variant v, const struct snap *a, const struct snap *b,
		    const struct sample *s, __u32 repeat)
{
	__u64 passed = b->c.passed_packets - a->c.passed_packets;
	__u64 dropped = b->c.dropped_packets - a->c.dropped_packets;
	__u64 uncl = b->stats[AG_STAT_UNCLASSIFIED_PASSED] - a->stats[AG_STAT_UNCLASSIFIED_PASSED];

	/* Every CPU swapping one bucket's word: a packet whose swaps all lost
	 * (AG_CAS_TRIES) is dropped and counted (cas_exhausted); it must stay
	 * rare: under 5 % here. */
	if (opt.all_cpus && passed + dropped == repeat && dropped * 20 < repeat &&
	    (v == V_PASS || v == V_PASSX || v == V_PTRIE || v == V_CHAIN ||
	     (v >= V_PAR1 && v <= V_QUOTA)))
		return true;
	switch (v) {
	case V_PASS:
	case V_PASSX:
	case V_PTRIE:
	case V_PAR1:
	case V_PAR2:
	case V_PAR3:
	case V_QUOTA:
		return s->retval == XDP_PASS && passed == repeat && dropped == 0;
	case V_CHAIN: /* passed by agentgate, dropped by the program after it */
		return s->retval == XDP_DROP && passed == repeat && dropped == 0;
	case V_DROP:
		return s->retval == XDP_DROP && passed + dropped == repeat &&
		       dropped + DROP_SLACK >= repeat;
	case V_UNCL:
	case V_NEAR:
		return s->retval == XDP_PASS && uncl == repeat && passed + dropped == 0;
	default:
		return false;
	}
}

static int prefix_index(struct run *r, enum ag_prefix_index mode)
{
	int err = ag_prefix_index_set(r->ctx, mode);

	return err ? lib_err("ag_prefix_index_set", err) : 0;
}

static int prepare(struct run *r, enum variant v)
{
	int err;

	if (v == V_PASS || v == V_PASSX)
		return set_limit(r, LIMIT_PASS);
	if (v == V_PTRIE) {
		err = set_limit(r, LIMIT_PASS);
		return err ? err : prefix_index(r, AG_PREFIX_INDEX_TRIE);
	}
	if (v == V_DROP)
		return set_limit(r, LIMIT_DROP);
	if (v == V_CHAIN) {
		err = set_limit(r, LIMIT_PASS);
		if (!err && ag_chain_set(r->ctx, "lo", empty_fd))
			err = lib_err("ag_chain_set", -EINVAL);
		return err;
	}
	if (v >= V_PAR1 && v <= V_PAR3) {
		err = set_limit(r, LIMIT_PASS);
		return err ? err : set_parent(r, parent_names[v - V_PAR1]);
	}
	if (v == V_QUOTA) {
		err = set_limit(r, LIMIT_PASS);
		return err ? err : set_quota(r, AG_QUOTA_MAX);
	}
	return 0;
}

static int finish(struct run *r, enum variant v)
{
	if (v == V_CHAIN)
		return ag_chain_set(r->ctx, "lo", -1) ? lib_err("ag_chain_set", -EINVAL) : 0;
	if (v >= V_PAR1 && v <= V_PAR3)
		return set_parent(r, NULL);
	if (v == V_QUOTA)
		return set_quota(r, 0);
	return v == V_PTRIE ? prefix_index(r, AG_PREFIX_INDEX_AUTO) : 0;
}

static int measure(struct run *r, enum variant v, __u32 repeat, struct sample *s)
{
	bool datapath = v != V_EMPTY && v < V__MAIN;
	struct snap before, after;
	int err;

	err = prepare(r, v);
	if (!err && datapath)
		err = take_snap(r, &before);
	if (!err)
		err = test_run(prog_fd_of(r, v), &r->frames[variants[v].frame], repeat, s);
	if (!err)
		err = finish(r, v);
	if (!err && datapath)
		err = take_snap(r, &after);
	if (err)
		return err;
	if (datapath && !path_ok(v, &before, &after, s,
				 opt.all_cpus ? repeat * (__u32)flood_cpus() : repeat)) {
		fprintf(stderr,
			"xdp_cost: variant %s took the wrong path (verdict %u, passed %llu, "
			"dropped %llu)\n",
			variant_name(r, v), s->retval,
			(unsigned long long)(after.c.passed_packets - before.c.passed_packets),
			(unsigned long long)(after.c.dropped_packets - before.c.dropped_packets));
		return -EPROTO;
	}
	if (!datapath && !verdict_ok(v, s)) {
		fprintf(stderr, "xdp_cost: %s returned %u\n", variant_name(r, v), s->retval);
		return -EPROTO;
	}
	return 0;
}

static int n_variants(void)
{
	return opt.breakdown ? V__COUNT : V__MAIN;
}

/* Warm-up, then rounds; each round starts one variant later than the last. */
static int run_rounds(struct run *r)
{
	int nv = n_variants(), round, k, err;
	struct sample warm;

	for (k = 0; k < nv; k++) {
		err = measure(r, k, opt.repeat / 10 + 1, &warm);
		if (err)
			return err;
	}
	for (round = 0; round < opt.rounds; round++) {
		for (k = 0; k < nv; k++) {
			enum variant v = (round + k) % nv;

			err = measure(r, v, opt.repeat, &r->samples[v][round]);
			if (err)
				return err;
		}
	}
	return 0;
}

static void summarize(struct run *r)
{
	double ns[MAX_ROUNDS], wall[MAX_ROUNDS];
	int v, i;

	for (v = 0; v < n_variants(); v++) {
		struct summary *s = &r->sum[v];

		for (i = 0; i < opt.rounds; i++) {
			ns[i] = r->samples[v][i].ns;
			wall[i] = r->samples[v][i].wall_ns;
		}
		s->median = median(ns, opt.rounds);
		s->min = ns[0];
		s->max = ns[opt.rounds - 1];
		s->wall_median = median(wall, opt.rounds);
	}
	for (v = 0; v < n_variants(); v++)
		r->sum[v].ratio = r->sum[V_EMPTY].median > 0 ?
					  r->sum[v].median / r->sum[V_EMPTY].median : 0;
}

static int run_one(struct run *r)
{
	int err;

	fprintf(stderr, "xdp_cost: %u agent(s), %s rules: setting up\n", r->agents,
		shapes[r->shape].name);
	err = run_setup(r);
	if (!err) {
		fprintf(stderr, "xdp_cost: setup %.2f s%s; measuring\n", r->setup_s,
			r->setup_s > SETUP_SLOW_S ? " (slow)" : "");
		err = run_rounds(r);
	}
	if (!err)
		summarize(r);
	run_teardown(r);
	return err;
}

/* ---- goals ----------------------------------------------------------------- */

struct goal {
	__u32 agents;
	double max_ratio;
	const char *source;
};

static const struct goal goals[] = {
	{ 1, 1.5, "1-agent goal" },
	{ 1000000, 2.0, "scale goal" },
};
#define N_GOALS (sizeof(goals) / sizeof(goals[0]))

static const struct goal *goal_for(__u32 agents)
{
	size_t i;

	for (i = 0; i < N_GOALS; i++)
		if (goals[i].agents == agents)
			return &goals[i];
	return NULL;
}

static const enum variant goal_variants[] = { V_PASS, V_DROP };
#define N_GOAL_VARIANTS (sizeof(goal_variants) / sizeof(goal_variants[0]))

/* ---- output ---------------------------------------------------------------- */

struct env {
	char date[32];
	char kernel[128];
	char cpu_model[128];
	long nproc;
	int bpf_stats;
};

static void read_env(struct env *e)
{
	time_t t = time(NULL);
	struct utsname u;
	char line[256];
	FILE *f;

	strftime(e->date, sizeof(e->date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
	snprintf(e->kernel, sizeof(e->kernel), "%s", uname(&u) ? "?" : u.release);
	e->nproc = sysconf(_SC_NPROCESSORS_ONLN);
	snprintf(e->cpu_model, sizeof(e->cpu_model), "?");
	f = fopen("/proc/cpuinfo", "r");
	while (f && fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');

		if (strncmp(line, "model name", 10) || !colon)
			continue;
		snprintf(e->cpu_model, sizeof(e->cpu_model), "%s", colon + 2);
		e->cpu_model[strcspn(e->cpu_model, "\n")] = '\0';
		break;
	}
	if (f)
		fclose(f);
	e->bpf_stats = -1;
	f = fopen("/proc/sys/kernel/bpf_stats_enabled", "r");
	if (f && fscanf(f, "%d", &e->bpf_stats) != 1)
		e->bpf_stats = -1;
	if (f)
		fclose(f);
}

static void print_header(const struct env *e)
{
	printf("agentgate XDP cost per packet\n");
	printf("  date      %s\n", e->date);
	printf("  command   %s\n", command);
	printf("  kernel    %s\n", e->kernel);
	if (opt.all_cpus)
		printf("  nproc     %ld (every measurement on all %d online CPUs at once)\n",
		       e->nproc, flood_cpus());
	else
		printf("  nproc     %ld (benchmark pinned to CPU %d)\n", e->nproc, opt.cpu);
	printf("  cpu       %s\n", e->cpu_model);
	printf("  bpf_stats %d%s\n", e->bpf_stats,
	       e->bpf_stats > 0 ? " (enabled: adds overhead to every program run)" : "");
	printf("  method    BPF_PROG_TEST_RUN, repeat %u, %d interleaved rounds, median of the\n"
	       "            kernel's ns/repetition; x_empty = median / median(empty) of the same run\n",
	       opt.repeat, opt.rounds);
	printf("  frames    %d-byte Ethernet/IPv4/UDP and Ethernet/IPv6/UDP\n\n", FRAME_LEN);
}

static void print_run(const struct run *r)
{
	int v;

	printf("%u agent(s), one %s rule each (%s); max_agents %u, max_rules %u; "
	       "prefix rules by %s; setup %.2f s%s\n",
	       r->agents, shapes[r->shape].name, shapes[r->shape].what, r->max_agents,
	       r->max_rules, r->index_hash ? "hash" : "trie", r->setup_s,
	       r->setup_s > SETUP_SLOW_S ? " (SLOW: > 60 s of one-by-one syscalls)" : "");
	printf("  %-8s %9s %6s %6s %8s  %s\n", "variant", "median_ns", "min", "max", "x_empty",
	       "path");
	for (v = 0; v < n_variants(); v++) {
		const struct summary *s = &r->sum[v];

		printf("  %-8s %9.1f %6.0f %6.0f %8.2f  %s\n", variant_name(r, v), s->median, s->min,
		       s->max, s->ratio, variants[v].what);
	}
	printf("\n");
}

static void print_goals(const struct run *runs, int n)
{
	size_t k;
	int i;

	printf("goals (pass and drop in the shape's family, ratio of medians to the empty program)\n");
	for (i = 0; i < n; i++) {
		const struct goal *g = goal_for(runs[i].agents);

		if (!g)
			continue;
		for (k = 0; k < N_GOAL_VARIANTS; k++) {
			enum variant v = goal_variants[k];
			double x = runs[i].sum[v].ratio;

			printf("  %7u agent(s) %-7s %-5s %5.2fx <= %.1fx (%s): %s\n",
			       runs[i].agents, shapes[runs[i].shape].name, variants[v].name, x,
			       g->max_ratio, g->source, x <= g->max_ratio ? "met" : "MISSED");
		}
	}
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void json_variant(FILE *f, const struct run *r, int v)
{
	int i;

	fprintf(f, "        ");
	json_str(f, variant_name(r, v));
	fprintf(f, ": {\"median_ns\": %.1f, \"min_ns\": %.0f, \"max_ns\": %.0f, "
		   "\"wall_median_ns\": %.3f, \"ratio\": %.4f, \"rounds_ns\": [",
		r->sum[v].median, r->sum[v].min, r->sum[v].max, r->sum[v].wall_median,
		r->sum[v].ratio);
	for (i = 0; i < opt.rounds; i++)
		fprintf(f, "%s%u", i ? ", " : "", r->samples[v][i].ns);
	fprintf(f, "]}");
}

static void json_goals(FILE *f, const struct run *r)
{
	const struct goal *g = goal_for(r->agents);
	size_t k;

	fprintf(f, "      \"goals\": [");
	for (k = 0; g && k < N_GOAL_VARIANTS; k++) {
		enum variant v = goal_variants[k];

		fprintf(f, "%s{\"variant\": \"%s\", \"max_ratio\": %.1f, \"ratio\": %.4f, "
			   "\"met\": %s}",
			k ? ", " : "", variants[v].name, g->max_ratio, r->sum[v].ratio,
			r->sum[v].ratio <= g->max_ratio ? "true" : "false");
	}
	fprintf(f, "]");
}

static void json_run(FILE *f, const struct run *r)
{
	int v;

	fprintf(f, "    {\"agents\": %u, \"rules\": \"%s\", \"family\": %d, \"plen\": %u, "
		   "\"max_agents\": %u, \"max_rules\": %u, \"prefix_index\": \"%s\", "
		   "\"setup_s\": %.3f,\n"
		   "      \"variants\": {\n",
		r->agents, shapes[r->shape].name, shapes[r->shape].family == AF_INET ? 4 : 6,
		shapes[r->shape].plen, r->max_agents, r->max_rules,
		r->index_hash ? "hash" : "trie", r->setup_s);
	for (v = 0; v < n_variants(); v++) {
		json_variant(f, r, v);
		fprintf(f, "%s\n", v + 1 < n_variants() ? "," : "");
	}
	fprintf(f, "      },\n");
	json_goals(f, r);
	fprintf(f, "\n    }");
}

static int write_json(const struct env *e, const struct run *runs, int n)
{
	FILE *f = strcmp(opt.json, "-") ? fopen(opt.json, "w") : stdout;
	int i, err = 0;

	if (!f) {
		fprintf(stderr, "xdp_cost: cannot write %s: %s\n", opt.json, strerror(errno));
		return -errno;
	}
	fprintf(f, "{\n  \"benchmark\": \"xdp_cost\",\n  \"date\": ");
	json_str(f, e->date);
	fprintf(f, ",\n  \"command\": ");
	json_str(f, command);
	fprintf(f, ",\n  \"kernel\": ");
	json_str(f, e->kernel);
	fprintf(f, ",\n  \"cpu_model\": ");
	json_str(f, e->cpu_model);
	fprintf(f, ",\n  \"nproc\": %ld,\n  \"cpu\": %d,\n  \"bpf_stats_enabled\": %d,\n"
		   "  \"repeat\": %u,\n  \"rounds\": %d,\n  \"frame_bytes\": %d,\n  \"runs\": [\n",
		e->nproc, opt.cpu, e->bpf_stats, opt.repeat, opt.rounds, FRAME_LEN);
	for (i = 0; i < n; i++) {
		json_run(f, &runs[i]);
		fprintf(f, "%s\n", i + 1 < n ? "," : "");
	}
	fprintf(f, "  ]\n}\n");
	if (fflush(f) || ferror(f))
		err = -EIO;
	if (f != stdout && fclose(f))
		err = -EIO;
	if (err)
		fprintf(stderr, "xdp_cost: error writing %s\n", opt.json);
	return err;
}

/* ---- environment ------------------------------------------------------------ */

static int pin_cpu(void)
{
	cpu_set_t set;
	int c;

	if (opt.cpu < 0) {
		if (sched_getaffinity(0, sizeof(set), &set))
			return -errno;
		for (c = CPU_SETSIZE - 1; c >= 0 && !CPU_ISSET(c, &set); c--)
			;
		opt.cpu = c < 0 ? 0 : c;
	}
	CPU_ZERO(&set);
	CPU_SET(opt.cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		fprintf(stderr, "xdp_cost: cannot pin to CPU %d: %s\n", opt.cpu, strerror(errno));
		return -errno;
	}
	return 0;
}

static int check_bpffs(void)
{
	struct statfs sfs;

	if (!opt.bpffs)
		opt.bpffs = getenv("AG_BENCH_BPFFS");
	if (!opt.bpffs || statfs(opt.bpffs, &sfs) || sfs.f_type != BPF_FS_MAGIC) {
		fprintf(stderr, "xdp_cost: --bpffs DIR (or AG_BENCH_BPFFS) must name a mounted "
				"bpffs; bench/run.sh mounts a private one\n");
		return -EINVAL;
	}
	return 0;
}

static int load_empty(struct empty_bpf **skel)
{
	*skel = empty_bpf__open_and_load();
	if (!*skel) {
		fprintf(stderr, "xdp_cost: cannot load the empty program: %s\n", strerror(errno));
		return -errno;
	}
	empty_fd = bpf_program__fd((*skel)->progs.empty_drop);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: xdp_cost --bpffs DIR [--max-scale N] [--shapes LIST] [--rounds R] [--repeat N]\n"
		"                [--cpu C] [--breakdown] [--all-cpus] [--json PATH|-]\n"
		"  --bpffs DIR     a mounted bpffs for private pin roots (env AG_BENCH_BPFFS)\n"
		"  --max-scale N   largest agent count of 1, 10000, 1000000 (default %u)\n"
		"  --shapes LIST   rule shapes, comma-separated: host (IPv4 /32), prefix (IPv4 /24),\n"
		"                  host6 (IPv6 /128), prefix6 (IPv6 /64); default all\n"
		"  --rounds R      interleaved rounds, medians over them (default %d, max %d)\n"
		"  --repeat N      BPF_PROG_TEST_RUN repetitions per measurement (default %u)\n"
		"  --cpu C         CPU to pin to (default: the last allowed one)\n"
		"  --breakdown     add probe programs: clock helpers, one rule-map lookup\n"
		"  --all-cpus      run each measurement on every online CPU at once (one\n"
		"                  agent flooded from all of them); ns are the CPUs' mean\n"
		"  --json PATH     also write the results as JSON ('-': stdout)\n"
		"Must run as root. Exit: 0 measured, 1 failure, 2 usage.\n",
		DEF_MAX_SCALE, DEF_ROUNDS, MAX_ROUNDS, DEF_REPEAT);
}

static int parse_u32(const char *s, __u32 min, __u32 max, __u32 *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || end == s || v < min || v > max)
		return -EINVAL;
	*out = (__u32)v;
	return 0;
}

/* "host,prefix6": only those shapes are measured. */
static int parse_shapes(const char *list)
{
	char buf[128], *tok, *save = NULL;
	int i;

	if (strlen(list) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, list);
	memset(opt.shape_on, 0, sizeof(opt.shape_on));
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		for (i = 0; i < SHAPE__COUNT && strcmp(tok, shapes[i].name); i++)
			;
		if (i == SHAPE__COUNT) {
			fprintf(stderr, "xdp_cost: --shapes: unknown shape '%s'\n", tok);
			return -EINVAL;
		}
		opt.shape_on[i] = true;
	}
	return 0;
}

static int parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "bpffs", required_argument, NULL, 'b' },
		{ "max-scale", required_argument, NULL, 's' },
		{ "shapes", required_argument, NULL, 'S' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "repeat", required_argument, NULL, 'n' },
		{ "cpu", required_argument, NULL, 'c' },
		{ "breakdown", no_argument, NULL, 'B' },
		{ "all-cpus", no_argument, NULL, 'A' },
		{ "json", required_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	__u32 v;
	int c, err = 0;

	for (c = 0; c < SHAPE__COUNT; c++)
		opt.shape_on[c] = true;
	while (!err && (c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'b': opt.bpffs = optarg; break;
		case 's': err = parse_u32(optarg, 1, 1u << 24, &opt.max_scale); break;
		case 'S': err = parse_shapes(optarg); break;
		case 'r': err = parse_u32(optarg, 1, MAX_ROUNDS, &v), opt.rounds = (int)v; break;
		case 'n': err = parse_u32(optarg, 1, 1u << 30, &opt.repeat); break;
		case 'c': err = parse_u32(optarg, 0, CPU_SETSIZE - 1, &v), opt.cpu = (int)v; break;
		case 'B': opt.breakdown = true; break;
		case 'A': opt.all_cpus = true; break;
		case 'j': opt.json = optarg; break;
		case 'h': usage(stdout); exit(0);
		default: err = -EINVAL; break;
		}
	}
	if (!err && optind != argc)
		err = -EINVAL;
	return err;
}

static void save_command(int argc, char **argv)
{
	size_t len = 0;
	int i;

	for (i = 0; i < argc && len < sizeof(command) - 1; i++)
		len += snprintf(command + len, sizeof(command) - len, "%s%s", i ? " " : "", argv[i]);
}

static void init_run(struct run *r, __u32 agents, enum shape shape)
{
	int v;

	memset(r, 0, sizeof(*r));
	r->agents = agents;
	r->shape = shape;
	r->rule_map_fd = -1;
	r->prefix_map_fd = -1;
	for (v = 0; v < V__COUNT; v++)
		r->probe_fd[v] = -1;
}

static int run_all(struct run *runs, int *n)
{
	size_t s;
	int shape, err;

	*n = 0;
	for (s = 0; s < N_SCALES && scales[s] <= opt.max_scale; s++) {
		for (shape = 0; shape < SHAPE__COUNT; shape++) {
			if (!opt.shape_on[shape])
				continue;
			init_run(&runs[*n], scales[s], shape);
			err = run_one(&runs[*n]);
			if (err)
				return err;
			(*n)++;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct run runs[N_SCALES * SHAPE__COUNT];
	struct empty_bpf *skel = NULL;
	struct env env;
	int i, n = 0, err;

	save_command(argc, argv);
	if (parse_args(argc, argv)) {
		usage(stderr);
		return 2;
	}
	if (geteuid() != 0) {
		fprintf(stderr, "xdp_cost: must run as root (BPF_PROG_TEST_RUN, map creation)\n");
		return 1;
	}
	err = check_bpffs();
	if (!err)
		err = pin_cpu();
	if (!err)
		err = load_empty(&skel);
	if (err)
		goto cleanup;
	read_env(&env);
	err = run_all(runs, &n);
	if (err && n == 0)
		goto cleanup;
	if (err) /* a larger scale failed: report the ones measured */
		fprintf(stderr, "xdp_cost: results below are incomplete\n");
	print_header(&env);
	for (i = 0; i < n; i++)
		print_run(&runs[i]);
	print_goals(runs, n);
	fflush(stdout);
	if (opt.json && write_json(&env, runs, n))
		err = -EIO;
cleanup:
	empty_bpf__destroy(skel);
	return err ? 1 : 0;
}
