/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * agentgate ABI: every structure shared by the XDP program and userspace,
 * the pinned map names and the constants both sides agree on.
 *
 * This header is included by BPF code (clang -target bpf) and by userspace.
 * It uses only <linux/types.h> types so that both worlds see identical
 * layouts; every struct has explicit padding and a _Static_assert on its size.
 * Changing a layout changes the map value size, which the loader detects on
 * pinned maps and refuses to reuse (see userspace/lib/maps.c).
 */
#ifndef AGENTGATE_ABI_H
#define AGENTGATE_ABI_H

#include <linux/types.h>

/* ---- pinned objects -------------------------------------------------- */

#define AG_PIN_ROOT_DEFAULT "/sys/fs/bpf/agentgate"
#define AG_PIN_LINKS_DIR "links" /* <pin root>/links/<ifname>: bpf_link per device */
#define AG_PIN_PROGS_DIR "progs" /* <pin root>/progs/<ifname>: the program that link runs, or
				 * that runs on ifname attached through netlink (chained) */
#define AG_PIN_OWNER_DIR "owner" /* <pin root>/owner/: agentgated's flock, its record */
#define AG_PIN_OWNER_REC "record" /* <pin root>/owner/record: ARRAY[1] of struct ag_owner */
#define AG_PIN_OWNER_JOURNAL "journal" /* <pin root>/owner/journal: HASH, what the CLI changed alone */

/*
 * The pinned maps, one row each: X(id, name, sizing, description).
 *   id           AG_M_<id> in the library (userspace/lib/internal.h)
 *   name         the map's name in bpf/agentgate.bpf.c, which is also its pin
 *                name under the pin root; AG_MAP_<id> below is it as a string
 *   sizing       max_entries: FIXED as the BPF object declares it, AGENTS
 *                (max agents) or RULES (max rules) of the pin root
 *   description  type and key -> value
 * From it come the library's map ids and its table of names and sizings
 * (userspace/lib/maps.c), the maps agentgate(8) lists, and build-time checks
 * that bpf/agentgate.bpf.c defines exactly these maps (maps.c: a map there
 * without a row, or a row without a map, does not compile). A new map is a
 * row here, its AG_MAP_<id> string, and its definition in the BPF program.
 * Rows are in the order the library opens and creates the maps.
 */
#define AG_MAP_LIST(X)                                                                                  \
	X(BUCKETS, ag_buckets, AGENTS, "ARRAY, mmapable: slot -> struct ag_bucket")                     \
	X(TALLY, ag_tally, AGENTS, "ARRAY, mmapable: slot -> struct ag_tally (counts folded in)")       \
	X(RULES_V4, ag_rules_v4, RULES, "LPM_TRIE: struct ag_lpm4_key -> struct ag_rule_val")           \
	X(RULES_V6, ag_rules_v6, RULES, "LPM_TRIE: struct ag_lpm6_key -> struct ag_rule_val")           \
	X(HOSTS_V4, ag_hosts_v4, RULES, "HASH, not preallocated: /32 rules, struct ag_host4_key -> struct ag_rule_val") \
	X(HOSTS_V6, ag_hosts_v6, RULES, "HASH, not preallocated: /128 rules, struct ag_host6_key -> struct ag_rule_val") \
	X(PREFIXES_V4, ag_prefixes_v4, RULES, "HASH: every ag_rules_v4 rule, the same key")             \
	X(PREFIXES_V6, ag_prefixes_v6, RULES, "HASH: every ag_rules_v6 rule, the same key")             \
	X(PROBES, ag_probes, FIXED, "ARRAY[1], mmapable: struct ag_probes")                             \
	X(NAMES, ag_names, AGENTS, "ARRAY, mmapable: slot -> struct ag_agent_info (name[0] 0: free)")   \
	X(INDEX, ag_index, INDEX, "ARRAY, mmapable: name -> slot, open addressing (struct ag_index_blk)") \
	X(CONFIG, ag_config, FIXED, "ARRAY[1]: struct ag_config")                                       \
	X(STATS, ag_stats, FIXED, "PERCPU_ARRAY[AG_STAT_SLOTS]: __u64 packets")                         \
	X(FRAGS, ag_frags, FIXED, "LRU_HASH: struct ag_frag_key -> struct ag_frag_val")                 \
	X(NEXT, ag_next, FIXED, "PROG_ARRAY[AG_NEXT_MAX]: ifindex -> the XDP program run after a pass")   \
	X(BUDGETS, ag_budgets, AGENTS, "ARRAY, mmapable: slot -> struct ag_budget (parent, quota)")      \
	X(TALLY_CACHE, ag_tally_cache, FIXED, "PERCPU_ARRAY[AG_TALLY_CACHE]: struct ag_tally_ent")

/* Each map's name as a string literal, for code that names one map. The
 * preprocessor cannot define macros from the list, so each name is spelled
 * again here; userspace/lib/maps.c checks at build time that every
 * AG_MAP_<id> is the name in its row. */
#define AG_MAP_BUCKETS "ag_buckets"
#define AG_MAP_TALLY "ag_tally"
#define AG_MAP_RULES_V4 "ag_rules_v4"
#define AG_MAP_RULES_V6 "ag_rules_v6"
#define AG_MAP_HOSTS_V4 "ag_hosts_v4"
#define AG_MAP_HOSTS_V6 "ag_hosts_v6"
#define AG_MAP_PREFIXES_V4 "ag_prefixes_v4"
#define AG_MAP_PREFIXES_V6 "ag_prefixes_v6"
#define AG_MAP_PROBES "ag_probes"
#define AG_MAP_NAMES "ag_names"
#define AG_MAP_INDEX "ag_index"
#define AG_MAP_CONFIG "ag_config"
#define AG_MAP_STATS "ag_stats"
#define AG_MAP_FRAGS "ag_frags"
#define AG_MAP_NEXT "ag_next"
#define AG_MAP_BUDGETS "ag_budgets"
#define AG_MAP_TALLY_CACHE "ag_tally_cache"
/* Maps of an older layout, read (never written) where still pinned: the
 * per-CPU counters and refusals per slot that ag_tally replaced. */
#define AG_MAP_LEGACY_COUNTERS "ag_counters"
#define AG_MAP_LEGACY_REFUSALS "ag_refusals"

/*
 * Other XDP programs on a device (docs/DATAPATH.md, "Beside other XDP
 * programs"): a packet agentgate passes goes on to the program in
 * ag_next[ingress ifindex], when there is one (a tail call: its verdict is
 * the packet's). Devices with an ifindex of AG_NEXT_MAX or more cannot
 * chain.
 */
#define AG_NEXT_MAX 65536

#define AG_MAX_AGENTS_DEFAULT 65536
#define AG_MAX_AGENTS_LIMIT (1u << 24)
#define AG_MAX_RULES_DEFAULT 65536 /* per map */

/* ---- agents ---------------------------------------------------------- */

/* 1-64 characters of [A-Za-z0-9._:-]; stored NUL-padded, not terminated at 64. */
#define AG_NAME_MAX 64

enum ag_unit {
	AG_UNIT_PPS = 0,  /* one token per packet */
	AG_UNIT_BPS = 1,  /* one token per byte of L2 frame (bytes per second) */
	AG_UNIT_CONN = 2, /* one token per connection opening (TCP SYN without ACK,
			   * QUIC Initial, SCTP INIT, DCCP-Request); other
			   * packets cost this bucket nothing (docs/DATAPATH.md) */
	AG_UNIT__COUNT
};

enum ag_agent_flags {
	AG_AGENT_PINNED = 1u << 0, /* rate set by an operator; ratings don't move it */
	AG_AGENT_PARENT = 1u << 1, /* a parent bucket (a customer, a team): shared by
				    * the agents and parents below it; no rule
				    * points at it, ratings don't move it */
	AG_AGENT_LIVE = 1u << 15,  /* ag_names: the record is an agent (set last when
				    * one is made, cleared first when it goes) */
};

/*
 * Parent buckets. Every bucket (agent or parent) may have a parent, a
 * parent bucket in the same slot space: ag_budgets[slot].up holds its slot
 * + 1 (0: none), written whole by userspace (under the lock). A packet's path is its agent's bucket and the parents above
 * it, AG_PATH_MAX buckets at most (org -> team -> sub-team -> agent); it
 * passes only if every bucket on the path admits it, and a packet refused
 * anywhere is charged nowhere (docs/DATAPATH.md, "Parent buckets").
 * ag_agent_info.parent is the record of the same link, which the map
 * follows (names are the truth, as for the bucket parameters).
 */
#define AG_PATH_MAX 4

/*
 * Long-window quotas: N tokens (in the bucket's unit) per calendar window
 * of an hour, a day or 30 days, beside the rate (docs/BUDGETS.md,
 * "Quotas"). Windows are aligned to CLOCK_TAI (bpf_ktime_get_tai_ns(), the
 * same clock in userspace): window k covers [k*W, (k+1)*W). quota_conf is
 * written whole by userspace; quota_used by compare-and-swap from every
 * side: the window's index (mod 2^20) and the tokens used in it. A word of
 * another window counts as none used.
 */
enum ag_quota_window {
	AG_QW_NONE = 0,
	AG_QW_HOUR = 1,
	AG_QW_DAY = 2,
	AG_QW_30D = 3,
	AG_QW__COUNT
};

#define AG_QUOTA_MAX ((1ULL << 43) - 1)   /* tokens per window */
#define AG_QUOTA_USED_BITS 44
#define AG_QUOTA_USED_MASK ((1ULL << AG_QUOTA_USED_BITS) - 1)
#define AG_QUOTA_IDX_MASK ((1ULL << (64 - AG_QUOTA_USED_BITS)) - 1)
#define AG_QUOTA_CONF(limit, window) ((limit) | ((__u64)(window) << 56))
#define AG_QUOTA_LIMIT(conf) ((conf) & AG_QUOTA_USED_MASK)
#define AG_QUOTA_WINDOW(conf) ((__u32)((conf) >> 56))

struct ag_budget {
	__u64 up;         /* parent's slot + 1; 0: none */
	__u64 quota_conf; /* AG_QUOTA_CONF(limit, window); 0: no quota */
	__u64 quota_used; /* window index << 44 | tokens used in that window */
};
_Static_assert(sizeof(struct ag_budget) == 24, "ag_budget layout");

/*
 * Rate limits: 0.001 .. 1e10 tokens/s, stored for display in milli-tokens/s.
 * Burst: 1 .. 2^40 tokens.
 */
#define AG_RATE_MIN_MTPS 1ULL
#define AG_RATE_MAX_MTPS 10000000000000ULL /* 1e10 tokens/s */
#define AG_BURST_MAX (1ULL << 40)

struct ag_name_key {
	char name[AG_NAME_MAX];
};
_Static_assert(sizeof(struct ag_name_key) == 64, "ag_name_key layout");

/*
 * ag_names: one record per slot, an ARRAY mapped by userspace (the datapath
 * never reads it). A slot is free while name[0] is 0. Writers (under the
 * pin-root lock) make seq odd, write the record, make it even again;
 * readers copy it and retry while seq was odd or moved.
 */
struct ag_agent_info {
	char name[AG_NAME_MAX];
	__u64 rate_mtps;  /* configured rate, milli-tokens per second */
	__u64 burst;      /* configured burst, tokens */
	__u64 created_ns; /* CLOCK_REALTIME at creation */
	__u16 unit;       /* enum ag_unit */
	__u16 flags;      /* enum ag_agent_flags */
	__u32 seq;        /* odd while the record is being written */
	__u32 slot;       /* self-reference, checked by readers */
	__u32 parent;     /* the parent's slot + 1, 0: none (ag_budgets follows it) */
};
_Static_assert(sizeof(struct ag_agent_info) == 104, "ag_agent_info layout");

/*
 * ag_index: name -> slot, an open-addressing table (linear probing) in an
 * ARRAY of 64-byte blocks, mapped by userspace. Block 0 is the header; the
 * cells follow, AG_INDEX_CELLS(max agents) of them (at most half full), a
 * cell at hash & (cells - 1) or after it. The hash is SipHash-1-3 of the
 * name under the header's random key (names come from users: nobody can
 * pick names that collide). A cell holds the slot + 1 in its low 25 bits
 * and 7 more bits of the hash above them (most cells that are not the name
 * are skipped without reading its record); 0 is empty, AG_INDEX_TOMB a
 * removed entry (probing goes on past it). Every hit is checked against
 * ag_names. Writers hold the pin-root lock; a writer that moves entries
 * (rebuilding the table when removed entries pile up) makes seq odd
 * meanwhile, and a reader that missed while seq was odd or moved looks
 * again.
 */
struct ag_index_hdr {
	__u64 key[2];  /* SipHash key, random, set when the map is made */
	__u32 seq;     /* odd while entries move */
	__u32 cells;   /* number of cells, a power of two */
	__u32 used;    /* cells holding an entry */
	__u32 tombs;   /* cells holding AG_INDEX_TOMB */
	__u32 pad[8];
};
_Static_assert(sizeof(struct ag_index_hdr) == 64, "ag_index_hdr layout");

#define AG_INDEX_PER_BLK 16
struct ag_index_blk {
	__u32 cell[AG_INDEX_PER_BLK];
};
_Static_assert(sizeof(struct ag_index_blk) == 64, "ag_index_blk layout");

#define AG_INDEX_SLOT_BITS 25
#define AG_INDEX_SLOT_MASK ((1u << AG_INDEX_SLOT_BITS) - 1)
#define AG_INDEX_TOMB AG_INDEX_SLOT_MASK /* no slot + 1 reaches it */
_Static_assert(AG_MAX_AGENTS_LIMIT < AG_INDEX_TOMB, "slot + 1 fits a cell");
/* Cells for max agents: a power of two, at least twice max agents. */
#define AG_INDEX_CELLS(max_agents)                                                                 \
	((max_agents) <= 8 ? 16u : 1u << (33 - __builtin_clz((__u32)(max_agents) - 1)))
/* max_entries of ag_index: the header block and the cells' blocks. */
#define AG_INDEX_BLKS(max_agents) (1 + AG_INDEX_CELLS(max_agents) / AG_INDEX_PER_BLK)

/* ---- GCRA bucket ------------------------------------------------------ */
/*
 * Each bucket keeps its own time base ("ticks") chosen so that the emission
 * interval (ticks per token) is an exact integer: tick rate F = rate * interval.
 * Monotonic nanoseconds convert to ticks with a 32.32 fixed-point multiplier:
 *   ticks = floor(now_ns * mult / 2^32),  mult = F * 2^32 / 1e9.
 * F never exceeds AG_TICK_HZ_MAX, so tick counts stay below 2^62 for
 * AG_UPTIME_MAX_S of uptime, and tau/cost stay below 2^61: no sum overflows.
 *
 * tat (theoretical arrival time) is the only word written by the datapath, by
 * compare-and-swap. Its bit 63 selects which of the two parameter sets it is
 * expressed in: a writer fills the inactive set, then flips the selector and
 * converts tat in one CAS, so readers never combine a tat with foreign params.
 */
#define AG_TICK_HZ_MAX 14000000000ULL           /* ticks per second, upper bound */
#define AG_UPTIME_MAX_S (10ULL * 366 * 86400)   /* 10 years of uptime */
#define AG_TAU_MAX (1ULL << 61)                 /* burst tolerance / cost bound */
#define AG_TAT_SEL (1ULL << 63)
#define AG_TAT_MASK (AG_TAT_SEL - 1)
#define AG_FRAME_MAX 65536ULL                   /* largest frame a bps bucket may cost */

_Static_assert(AG_TICK_HZ_MAX * AG_UPTIME_MAX_S < (1ULL << 62), "tick range");

struct ag_gcra_params {
	__u64 mult;     /* ticks per ns, 32.32 fixed point; 0 = set unused */
	__u64 interval; /* ticks per token (emission interval); 0 = no limit configured */
	__u64 tau;      /* burst tolerance: burst * interval */
};
_Static_assert(sizeof(struct ag_gcra_params) == 24, "ag_gcra_params layout");

struct ag_bucket {
	__u64 tat;                       /* AG_TAT_SEL | theoretical arrival time */
	struct ag_gcra_params set[2];    /* selected by tat bit 63 */
	__u8 unit[2];                    /* enum ag_unit of set[i] */
	__u8 in_use;                     /* userspace free-slot hint, mirrors ag_names;
					  * the datapath ignores it */
	__u8 pad;
	__u32 gen;                       /* userspace: bumped whenever the slot is claimed
					  * or freed, so a cached name -> slot can be
					  * checked through the mmap; the datapath
					  * ignores it */
};
/* One cache line per bucket: no false sharing between agents. */
_Static_assert(sizeof(struct ag_bucket) == 64, "ag_bucket layout");

/* ---- counters -------------------------------------------------------- */

struct ag_counters {
	__u64 passed_packets;
	__u64 passed_bytes;
	__u64 dropped_packets;
	__u64 dropped_bytes;
	__u64 would_drop_packets; /* dry-run: over the limit but passed */
	__u64 would_drop_bytes;
};
_Static_assert(sizeof(struct ag_counters) == 48, "ag_counters layout");

/*
 * Refusals by reason, per slot and CPU, beside ag_counters (whose
 * dropped_* and, in dry-run, would_drop_* count every refusal): packets
 * that reached this bucket and that a parent above it refused (parent_*),
 * or its quota (quota_*, kept for the long-window quotas). What the
 * bucket's own rate refused is the rest.
 */
struct ag_refusals {
	__u64 parent_packets;
	__u64 parent_bytes;
	__u64 quota_packets;
	__u64 quota_bytes;
};
_Static_assert(sizeof(struct ag_refusals) == 32, "ag_refusals layout");

/*
 * Counters whose memory does not grow with the CPU count: per slot one
 * struct ag_tally (80 B) that the datapath adds to atomically, and in
 * front of it per CPU a cache of AG_TALLY_CACHE entries, direct-mapped by
 * slot, where each packet is counted with plain adds. An entry holds one
 * slot's counts (slot1, and the bucket's gen when it was taken, so that a
 * slot freed and claimed again never gets another agent's counts); a
 * packet of another slot first moves them out (atomic adds to ag_tally),
 * seq odd meanwhile. So a flood of one agent on every CPU counts on each
 * CPU's own line, as per-CPU counters did. A slot's counts are its
 * ag_tally plus every CPU's entry that holds it: readers take the entries,
 * the tally, the entries again, and retry when a seq moved in between.
 */
#define AG_TALLY_CACHE 4096
struct ag_tally {
	struct ag_counters c;
	struct ag_refusals r;
};
_Static_assert(sizeof(struct ag_tally) == 80, "ag_tally layout");

struct ag_tally_ent {
	__u32 slot1; /* slot + 1 counted here; 0: none */
	__u32 gen;   /* the slot's ag_bucket.gen when taken */
	__u32 seq;   /* odd while its counts move out */
	__u32 pad;
	struct ag_counters c;
	struct ag_refusals r;
};
_Static_assert(sizeof(struct ag_tally_ent) == 96, "ag_tally_ent layout");

/*
 * Global per-CPU counters by reason. One list, expanded into the enum used by
 * the datapath and the name table used by userspace (metrics, CLI).
 * Kind: 'p' = parse error (malformed), 'i' = informational.
 * A reason keeps its index for ever: new ones go at the end, so that the
 * counters of an ag_stats pinned by an older version keep their meaning
 * when it is grown (ag_stats has AG_STAT_SLOTS entries, room for more).
 */
#define AG_STAT_LIST(X)                                                        \
	X(UNCLASSIFIED_PASSED, "unclassified_passed", 'i')                   \
	X(UNCLASSIFIED_DROPPED, "unclassified_dropped", 'i')                 \
	X(NON_IP, "non_ip", 'i')                                             \
	X(FRAGMENT, "fragment", 'i')                                         \
	X(NO_PORT, "no_port", 'i')                                           \
	X(DRYRUN_WOULD_DROP, "dryrun_would_drop", 'i')                       \
	X(NO_BUCKET, "no_bucket", 'i')                                       \
	X(CAS_EXHAUSTED, "cas_exhausted", 'i')                               \
	X(ETH_TRUNCATED, "eth_truncated", 'p')                               \
	X(VLAN_TRUNCATED, "vlan_truncated", 'p')                             \
	X(VLAN_TOO_DEEP, "vlan_too_deep", 'p')                               \
	X(IP_BAD_VERSION, "ip_bad_version", 'p')                             \
	X(IPV4_TRUNCATED, "ipv4_truncated", 'p')                             \
	X(IPV4_BAD_IHL, "ipv4_bad_ihl", 'p')                                 \
	X(IPV4_BAD_TOTLEN, "ipv4_bad_totlen", 'p')                           \
	X(IPV6_TRUNCATED, "ipv6_truncated", 'p')                             \
	X(IPV6_EXT_TRUNCATED, "ipv6_ext_truncated", 'p')                     \
	X(IPV6_EXT_CHAIN, "ipv6_ext_chain", 'p')                             \
	X(L4_TRUNCATED, "l4_truncated", 'p')                                 \
	X(FRAGMENT_ORPHAN, "fragment_orphan", 'i')                           \
	X(FRAGMENT_AFTER_DROP, "fragment_after_drop", 'i')                   \
	X(PORT_UNKNOWN_DROPPED, "port_unknown_dropped", 'i')                 \
	X(PARENT_DROPPED, "parent_dropped", 'i')                             \
	X(REFUND_RACED, "refund_raced", 'i')                                 \
	X(QUOTA_DROPPED, "quota_dropped", 'i')                               \
	X(IP_CARRIER, "ip_carrier", 'i')                                     \
	X(IPV4_AH_TRUNCATED, "ipv4_ah_truncated", 'p')

#define AG_STAT_ENUM_ENTRY(id, name, kind) AG_STAT_##id,
enum ag_stat {
	AG_STAT_LIST(AG_STAT_ENUM_ENTRY)
	AG_STAT__MAX
};
#undef AG_STAT_ENUM_ENTRY

#define AG_STAT_SLOTS 32 /* entries of ag_stats */
_Static_assert(AG_STAT__MAX <= AG_STAT_SLOTS, "ag_stats has room for every reason");

/* ---- fragments ------------------------------------------------------- */
/*
 * Only the first fragment of a datagram carries its L4 header. The datapath
 * remembers how it judged each first fragment, under the key the kernel
 * reassembles by (source, destination, identification, and for IPv4 the
 * protocol), and charges the later fragments to the same agent; fragments
 * after one that was dropped are dropped too (the datagram cannot be
 * reassembled). An LRU: the oldest datagrams are forgotten first.
 */
#define AG_FRAGS_MAX 16384

struct ag_frag_key {
	__u8 saddr[16];  /* IPv4: the first 4 bytes */
	__u8 daddr[16];
	__be32 id;       /* IPv4: the 16-bit identification */
	__u8 family;     /* 4 or 6 */
	__u8 proto;      /* IPv4: the protocol; IPv6: 0 */
	__u16 pad;
};
_Static_assert(sizeof(struct ag_frag_key) == 40, "ag_frag_key layout");

#define AG_FRAG_NO_SLOT 0xffffffffu /* the first fragment was unclassified */
#define AG_FRAG_DROPPED 1u          /* a fragment of the datagram was dropped */

struct ag_frag_val {
	__u32 slot;  /* agent charged for the first fragment, or AG_FRAG_NO_SLOT */
	__u32 flags; /* AG_FRAG_DROPPED */
};
_Static_assert(sizeof(struct ag_frag_val) == 8, "ag_frag_val layout");

/* ---- classification rules ------------------------------------------- */
/*
 * Rules map a source prefix, optionally narrowed to one L4 destination port,
 * to a slot. /32 and /128 rules live in exact-match hashes (one lookup, flat
 * cost at any count); shorter prefixes in one LPM trie per family whose key
 * data is (port, address): a wildcard rule is stored with port 0 and prefix
 * length 32 + plen, so the trie's own longest match handles both kinds.
 * Port 0 is therefore reserved to mean "any port". The same keys, with the
 * host bits clear, index the per-length hashes (struct ag_probes below).
 */
struct ag_lpm4_key {
	__u32 prefixlen; /* 32 + source prefix length */
	__be32 port;     /* destination port in the low 16 bits, network order; 0 = any */
	__u8 addr[4];
};
_Static_assert(sizeof(struct ag_lpm4_key) == 12, "ag_lpm4_key layout");

struct ag_lpm6_key {
	__u32 prefixlen; /* 32 + source prefix length */
	__be32 port;
	__u8 addr[16];
};
_Static_assert(sizeof(struct ag_lpm6_key) == 24, "ag_lpm6_key layout");

struct ag_host4_key {
	__u8 addr[4];
	__be32 port; /* as in ag_lpm4_key */
};
_Static_assert(sizeof(struct ag_host4_key) == 8, "ag_host4_key layout");

struct ag_host6_key {
	__u8 addr[16];
	__be32 port;
};
_Static_assert(sizeof(struct ag_host6_key) == 20, "ag_host6_key layout");

struct ag_rule_val {
	__u32 slot;
	__u32 plen; /* source prefix length, to compare port and wildcard matches */
};
_Static_assert(sizeof(struct ag_rule_val) == 8, "ag_rule_val layout");

/*
 * Prefix rules by length. Every trie rule is also in an exact-match hash
 * (ag_prefixes_v4/v6) under the same key, its address with the host bits
 * clear. While few (length, port or wildcard) combinations are in use, the
 * datapath looks the packet's source up in that hash once per combination,
 * longest first and a port rule before a wildcard one of the same length:
 * the first hit is the rule the trie would pick, at the cost of a hash
 * lookup per combination instead of a trie walk that deepens with the rule
 * count. The probe plan of each family is one 64-bit word, written whole
 * by userspace (through the mmap, under the lock) and read whole by the
 * datapath:
 *   bits 0-2   number of probes, 0..AG_PROBES_MAX
 *   bit 7      AG_PLAN_VALID: probe the hash (else: the trie)
 *   byte 1+i   probe i: AG_PROBE_PORT | prefix length
 *   byte 7     the family's trie rule count (port and wildcard) mod 256
 *              when the plan was made: a plan made for another rule set
 *              (mid-change, or by a writer that does not keep plans) does
 *              not match ag_config's counts and the trie is used instead.
 * count[][][] is the writers' bookkeeping (the datapath reads only plan[]).
 */
#define AG_PROBES_MAX 6
#define AG_PLAN_VALID 0x80ULL
#define AG_PLAN_N(plan) ((__u32)(plan) & 7)
#define AG_PLAN_PROBE(plan, i) ((__u32)((plan) >> (8 * ((i) + 1))) & 0xff)
#define AG_PLAN_CHECK(plan) ((__u32)((plan) >> 56))
#define AG_PROBE_PORT 0x80
#define AG_PROBE_PLEN(probe) ((probe) & 0x7f)

struct ag_probes {
	__u64 plan[2];          /* [0] IPv4, [1] IPv6 */
	__u32 count[2][2][128]; /* [family][port rule][prefix length]: trie rules */
};
_Static_assert(sizeof(struct ag_probes) == 2064, "ag_probes layout");

/* ---- global configuration ------------------------------------------ */

enum ag_action {
	AG_ACTION_PASS = 0,
	AG_ACTION_DROP = 1,
};

/* Rule kinds, so the datapath skips lookups in empty maps. */
enum ag_rule_kind {
	AG_RK_HOST4 = 0,
	AG_RK_HOST4_PORT,
	AG_RK_LPM4,
	AG_RK_LPM4_PORT,
	AG_RK_HOST6,
	AG_RK_HOST6_PORT,
	AG_RK_LPM6,
	AG_RK_LPM6_PORT,
	AG_RK__MAX
};

enum ag_dirty {
	AG_DIRTY_AGENTS = 1u << 0,
	AG_DIRTY_RULES = 1u << 1,
};

struct ag_config {
	__u32 default_action; /* enum ag_action, for unclassified traffic */
	__u32 dry_run;        /* 1: count would-be drops, pass them */
	__u32 rule_count[AG_RK__MAX];
	__u32 dirty;          /* enum ag_dirty: a change was in flight; repaired on
			       * the next locked mutation */
	__u32 coarse_slack_ns; /* how far CLOCK_MONOTONIC may run ahead of the
				* coarse clock: drops certain at the coarse
				* clock plus this are decided without the exact
				* one; 0: the exact clock for every packet.
				* Set by the program loader (ag_prog_load). */
};
_Static_assert(sizeof(struct ag_config) == 48, "ag_config layout");

#endif /* AGENTGATE_ABI_H */
