/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * libagentgate: the only code that touches agentgate's pinned BPF objects.
 * The CLI (agentgate) and the daemon (agentgated) are built on it.
 *
 * Conventions: functions return 0 or a negative errno; on failure a one-line
 * human message is available from ag_errmsg() (per thread). Mutations of
 * agents, rules and config are serialized between processes with flock(2) on
 * the pin root directory (released by the kernel if a process dies); the
 * datapath itself never takes a lock.
 */
#ifndef AGENTGATE_LIB_H
#define AGENTGATE_LIB_H

#include <stdbool.h>
#include <stddef.h>
#include <linux/types.h>

#include "agentgate/abi.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ag_ctx;

const char *ag_errmsg(void);

/* Library warnings (e.g. falling back to generic XDP); default: stderr. */
typedef void (*ag_log_fn)(const char *msg);
void ag_set_log(ag_log_fn fn);

/* CLOCK_MONOTONIC nanoseconds: the datapath's bpf_ktime_get_ns() clock. */
__u64 ag_now_ns(void);
/* CLOCK_TAI in ns: the quotas' calendar windows (docs/BUDGETS.md). */
__u64 ag_tai_ns(void);

/* ---- opening the pinned maps ----------------------------------------- */

struct ag_open_opts {
	const char *pin_root; /* NULL: AG_PIN_ROOT_DEFAULT */
	bool create;          /* create missing maps (else -ENOENT) */
	bool read_only;       /* inspection: BPF_F_RDONLY fds, read-only mmap */
	__u32 max_agents;     /* when creating; 0: AG_MAX_AGENTS_DEFAULT */
	__u32 max_rules;      /* per rule map, when creating; 0: AG_MAX_RULES_DEFAULT */
};

int ag_open(const struct ag_open_opts *opts, struct ag_ctx **out);
void ag_close(struct ag_ctx *ctx);
const char *ag_pin_root(const struct ag_ctx *ctx);
__u32 ag_max_agents(const struct ag_ctx *ctx);
__u32 ag_max_rules(const struct ag_ctx *ctx);
int ag_num_cpus(const struct ag_ctx *ctx);

/* ---- agents -------------------------------------------------------- */

struct ag_agent {
	char name[AG_NAME_MAX + 1];
	__u32 slot;
	double rate; /* tokens per second */
	__u64 burst; /* tokens */
	enum ag_unit unit;
	bool pinned;
	bool is_parent;   /* a parent bucket (ag_parent_set), not an agent */
	__u32 parent;     /* its parent's slot + 1; 0: none */
	__u64 quota;      /* tokens per quota window; 0: no quota */
	enum ag_quota_window quota_window;
	__u64 created_ns; /* CLOCK_REALTIME */
};

enum ag_update_fields {
	AG_SET_RATE = 1u << 0,
	AG_SET_BURST = 1u << 1,
	AG_SET_UNIT = 1u << 2,
	AG_SET_PINNED = 1u << 3,
	AG_SET_PARENT = 1u << 4,
	AG_SET_QUOTA = 1u << 5,
};

struct ag_agent_update {
	__u32 fields; /* enum ag_update_fields */
	double rate;
	__u64 burst;
	enum ag_unit unit;
	bool pinned;
	const char *parent; /* AG_SET_PARENT: a parent's name; NULL or "": none */
	__u64 quota;        /* AG_SET_QUOTA: tokens per window, 0: none */
	enum ag_quota_window quota_window;
};

/* Defaults for fields a creating ag_agent_set() does not name. */
#define AG_DEFAULT_RATE 100.0
#define AG_BPS_MIN_BURST 1518 /* a bps bucket must hold one full-size frame */

/* Validation: 0, or -EINVAL with a message naming the limit. A name is 1 to
 * AG_NAME_MAX of [A-Za-z0-9._:-], not "." nor "..". */
int ag_name_check(const char *name);
int ag_rate_check(double rate);
int ag_burst_check(__u64 burst);
int ag_unit_check(enum ag_unit unit);
/* "pps", "bps", "conn" (enum ag_unit) and back; -EINVAL names the choices. */
const char *ag_unit_name(enum ag_unit unit);
int ag_unit_parse(const char *text, enum ag_unit *unit);
/* The combination, as ag_agent_set() would build it. */
int ag_limit_check(double rate, __u64 burst, enum ag_unit unit);

/* Create the agent if missing (*created set), else update the named fields.
 * Tokens in the bucket are preserved across a rate change (capped at burst). */
int ag_agent_set(struct ag_ctx *ctx, const char *name, const struct ag_agent_update *u,
		 __u32 *slot, bool *created);
int ag_agent_get(struct ag_ctx *ctx, const char *name, struct ag_agent *out);
int ag_agent_get_slot(struct ag_ctx *ctx, __u32 slot, struct ag_agent *out);
/* The slot of a named agent, remembered per context and checked on every
 * call against a generation word in the bucket (bumped whenever any process
 * claims or frees the slot): no system call when the agent is known. A
 * slot it returns belonged to the agent at some moment during the call,
 * as with ag_agent_get(). */
int ag_agent_slot(struct ag_ctx *ctx, const char *name, __u32 *slot);
/* Removes the agent and every rule pointing at it. */
int ag_agent_delete(struct ag_ctx *ctx, const char *name);

/*
 * Parent buckets: a bucket several agents (or parents) share, with its own
 * rate, burst and unit; a packet passes only if its agent's bucket and
 * every parent above it admit it (abi.h, "Parent buckets"). Parents and
 * agents share one name space and one slot space (max_agents). An agent
 * or parent gets a parent with AG_SET_PARENT; the name must be a parent,
 * no cycle may form and no path may hold more than AG_PATH_MAX buckets
 * (-EINVAL, -ELOOP). The ag_agent_* calls refuse a parent's name and the
 * ag_parent_* calls an agent's (-EEXIST); ag_agent_get() and
 * ag_agent_get_slot() read either (is_parent). A parent with children
 * cannot be deleted (-EBUSY). -ENOENT names the missing map when the pins
 * predate parents and no agentgated or attach has added ag_budgets yet.
 */
int ag_parent_set(struct ag_ctx *ctx, const char *name, const struct ag_agent_update *u,
		  __u32 *slot, bool *created);
int ag_parent_delete(struct ag_ctx *ctx, const char *name);
int ag_parent_list(struct ag_ctx *ctx, struct ag_agent **out, size_t *n);
int ag_parent_foreach(struct ag_ctx *ctx, int (*fn)(void *arg, const struct ag_agent *a),
		      void *arg);
/*
 * Long-window quotas (docs/BUDGETS.md, "Quotas"): AG_SET_QUOTA gives an
 * agent or a parent N tokens (its unit) per calendar hour, day or 30 days
 * beside its rate, on the TAI clock; 0 removes it. A packet or consume the
 * quota refuses takes nothing anywhere; consume's retry_after is then the
 * window's end. A new window length starts its count afresh.
 */
int ag_quota_check(__u64 limit, enum ag_quota_window window);
const char *ag_quota_window_name(enum ag_quota_window w);
int ag_quota_window_parse(const char *text, enum ag_quota_window *w);
struct ag_quota_status {
	__u64 limit;            /* 0: no quota */
	enum ag_quota_window window;
	__u64 used;             /* in the current window (may pass limit after a charge) */
	__u64 reset_in_ns;      /* until the current window ends */
};
int ag_quota_status(struct ag_ctx *ctx, __u32 slot, struct ag_quota_status *out);
/* The quota's count word (window index << 44 | used), to be saved; and
 * put back: ag_quota_restore() raises the live count to a saved word of
 * the window running now and ignores one of an ended window (a saved count
 * never lowers the live one). agentgated saves them across reboots. */
int ag_quota_word(struct ag_ctx *ctx, __u32 slot, __u64 *word);
int ag_quota_restore(struct ag_ctx *ctx, __u32 slot, __u64 word);
/* Adds delta (either way, floored at 0) to the count of window idx: what
 * other hosts of a fleet used (agentgated). Nothing when a later window
 * runs already; an earlier window's count is replaced. */
int ag_quota_shift(struct ag_ctx *ctx, __u32 slot, __u64 idx, __s64 delta);

/* slot's parent slot + 1 (0: none), through the mmap: no system call. */
__u32 ag_bucket_parent(struct ag_ctx *ctx, __u32 slot);
/* The path from slot up: slots[0] = slot, then its parents; *n buckets. */
int ag_bucket_path(struct ag_ctx *ctx, __u32 slot, __u32 slots[AG_PATH_MAX], int *n);
/* All agents (not parents), sorted by slot; free(*out). */
int ag_agent_list(struct ag_ctx *ctx, struct ag_agent **out, size_t *n);
/* Every agent, in no particular order, without holding them all in memory:
 * fn's non-zero return stops the walk and is returned. */
int ag_agent_foreach(struct ag_ctx *ctx, int (*fn)(void *arg, const struct ag_agent *a),
		     void *arg);

/* ---- buckets (through the mmap, lock-free) ------------------------- */

struct ag_consume_result {
	bool allowed;
	double remaining;      /* tokens left after this request */
	__u64 retry_after_ns;  /* when not allowed: wait before retrying */
};

int ag_bucket_tokens(struct ag_ctx *ctx, __u32 slot, double *tokens);
int ag_bucket_reset(struct ag_ctx *ctx, __u32 slot);                  /* full */
int ag_bucket_fill(struct ag_ctx *ctx, __u32 slot, double tokens);    /* set level */
int ag_bucket_drain(struct ag_ctx *ctx, __u32 slot, __u64 tokens, double *remaining);
/* Takes tokens from the bucket in slot and every parent above it, or from
 * none: allowed only if each admits; remaining is the fewest tokens left on
 * the path and retry_after_ns the longest wait (each bucket in its unit). */
int ag_bucket_consume(struct ag_ctx *ctx, __u32 slot, __u64 tokens,
		      struct ag_consume_result *res);
/*
 * The fast path for an application on the same host: takes `tokens` from
 * the named agent's bucket, the one its traffic is charged to at the NIC,
 * in the caller's thread and without a system call once the agent is known
 * (its slot cached, checked through the mmap: ag_agent_slot). 0 and *res
 * (allowed, or when to retry), or -ENOENT (no such agent), -EINVAL (more
 * tokens than its burst), -EROFS (ctx opened read-only). Opening the maps
 * for writing needs write access to the pin root's bucket map, which is
 * write access to every agent's bucket: for trusted local callers
 * (docs/LOCAL.md). Thread-safe: one ctx may serve every thread.
 */
int ag_consume(struct ag_ctx *ctx, const char *agent, __u64 tokens,
	       struct ag_consume_result *res);

/*
 * A cost known only afterwards (an LLM gateway's token count for a
 * response): `tokens` taken from the bucket and every parent above it
 * whatever is left, so that a bucket goes into debt, bounded at
 * max_debt_ns of its refill below empty (the excess is forgiven). Until
 * refill has paid the debt back, the NIC drops the agent's packets and
 * consume refuses. *res: allowed is true; remaining is the lowest level on
 * the path, negative while in debt; retry_after_ns when one token will be
 * admitted again. ag_consume() stays the check-before form.
 */
int ag_bucket_charge(struct ag_ctx *ctx, __u32 slot, __u64 tokens, __u64 max_debt_ns,
		     struct ag_consume_result *res);
int ag_charge(struct ag_ctx *ctx, const char *agent, __u64 tokens, __u64 max_debt_ns,
	      struct ag_consume_result *res);

/* out[max_agents]: each slot's tat word, read through the mmap without a
 * system call. It changes whenever the datapath admits a packet or
 * userspace changes the bucket (consume, fill, a new rate); a refused
 * packet leaves it alone (the counters count those). -ENODEV when the
 * buckets are not mapped. */
int ag_bucket_words(struct ag_ctx *ctx, __u64 *out);

/* Pure rate math, exposed for tests: the parameter set for a limit. */
int ag_gcra_params_for(double rate, __u64 burst, enum ag_unit unit,
		       struct ag_gcra_params *out);

/* ---- counters -------------------------------------------------------- */

int ag_counters_get(struct ag_ctx *ctx, __u32 slot, struct ag_counters *sum);
/* Refusals by reason (struct ag_refusals) summed over CPUs; zeros on pins
 * that predate them. */
int ag_refusals_get(struct ag_ctx *ctx, __u32 slot, struct ag_refusals *sum);
/* out[max_agents]: every slot's counters summed over CPUs (batch lookups). */
int ag_counters_get_all(struct ag_ctx *ctx, struct ag_counters *out);
int ag_stats_get(struct ag_ctx *ctx, __u64 out[AG_STAT__MAX]);
const char *ag_stat_name(unsigned int stat);
bool ag_stat_is_parse_error(unsigned int stat);

/* ---- rules ------------------------------------------------------------ */

struct ag_rule {
	int family;      /* AF_INET or AF_INET6 */
	__u8 addr[16];   /* network order; IPv4 in the first 4 bytes */
	__u8 plen;
	__u16 port;      /* host order; 0 = any port */
	__u32 slot;      /* filled by ag_rule_list */
};

/* "10.0.0.0/24", "2001:db8::/32", a bare address means a host prefix.
 * Host bits set beyond the prefix are an error. */
int ag_prefix_parse(const char *text, struct ag_rule *rule);
int ag_port_parse(const char *text, __u16 *port);
/* "10.0.0.0/24" (no port); buf of at least AG_PREFIX_STRLEN. */
#define AG_PREFIX_STRLEN 64
void ag_prefix_format(const struct ag_rule *rule, char *buf, size_t len);

int ag_rule_add(struct ag_ctx *ctx, const struct ag_rule *rule, const char *agent);
int ag_rule_del(struct ag_ctx *ctx, const struct ag_rule *rule);
/* Every rule of both families; free(*out). */
int ag_rule_list(struct ag_ctx *ctx, struct ag_rule **out, size_t *n);
/* Replaces part of one agent's rules in one locked pass (a feed's swap): the
 * rules of add are inserted first, then those of del that map to the agent
 * are deleted, so a source covered before and after stays the agent's at
 * every step. A rule of add already the agent's is left; one that maps to
 * another agent is left to it. state[i] (n_add bytes, or NULL) says which
 * befell add[i]. An insert that fails takes back every insert before it and
 * deletes nothing. */
struct ag_rules_swap_result {
	size_t added, removed, conflicts;
};
enum { AG_SWAP_KEPT = 0, AG_SWAP_ADDED = 1, AG_SWAP_CONFLICT = 2 };
int ag_rules_swap(struct ag_ctx *ctx, const char *agent, const struct ag_rule *add, size_t n_add,
		  const struct ag_rule *del, size_t n_del, __u8 *state,
		  struct ag_rules_swap_result *res);

/* How the datapath finds the longest matching trie rule (abi.h, struct
 * ag_probes). The choice is this context's: every rule change it makes
 * rewrites the plans accordingly. */
enum ag_prefix_index {
	AG_PREFIX_INDEX_AUTO = 0, /* hash probes while they cost less than the trie */
	AG_PREFIX_INDEX_TRIE,     /* always walk the LPM trie */
	AG_PREFIX_INDEX_HASH,     /* hash probes whenever the lengths fit a plan */
};
int ag_prefix_index_set(struct ag_ctx *ctx, enum ag_prefix_index mode);
/* 1 when the datapath probes hashes for this family (AF_INET, AF_INET6). */
int ag_prefix_index_active(struct ag_ctx *ctx, int family);

/* ---- global config ---------------------------------------------------- */

int ag_config_get(struct ag_ctx *ctx, struct ag_config *cfg);
int ag_config_set_default_action(struct ag_ctx *ctx, enum ag_action action);
int ag_config_set_dry_run(struct ag_ctx *ctx, bool on);

/* ---- program and links ----------------------------------------------- */

enum ag_xdp_mode {
	AG_XDP_AUTO = 0,  /* native, generic with a warning when unsupported */
	AG_XDP_NATIVE,
	AG_XDP_GENERIC,
};

struct ag_attach_result {
	__u32 prog_id;
	__u32 link_id;
	enum ag_xdp_mode mode; /* NATIVE or GENERIC as attached */
	bool replaced;         /* an existing link's program was updated */
	bool kept;             /* the link already ran this very program: left as it was */
	/* Attached before another program (through netlink, link_id 0): the
	 * program that runs on what agentgate passes (ag_next). */
	bool chained;
	__u32 next_prog_id;
};

struct ag_attach_opts {
	enum ag_xdp_mode mode;
	/* Replace only while the link runs this program (0: whatever runs);
	 * refused (-EPERM) otherwise, and -ENOENT when there is no link. */
	__u32 expected_prog_id;
	/* A link already running this program, the same instructions on the
	 * same maps, is kept as it is (its program id does not change). */
	bool keep_same;
};

struct ag_link_info {
	char ifname[32]; /* pin name */
	__u32 ifindex;   /* 0: device gone, link defunct */
	__u32 link_id;   /* 0: attached through netlink, before another program */
	__u32 prog_id;
	__u32 next_prog_id; /* the program chained after agentgate here, or 0 */
	enum ag_xdp_mode mode;
	int error;       /* -errno when the pin could not be opened (e.g. -EACCES:
			  * link pins need write access), the ids then 0 */
};

/* A loaded instance of the datapath program bound to ctx's maps. */
struct ag_prog;
int ag_prog_load(struct ag_ctx *ctx, struct ag_prog **out);
struct ag_prog_opts {
	/* Drops are decided without the exact clock when the bucket refuses
	 * the packet even at the coarse clock plus this many ns (its largest
	 * lag behind CLOCK_MONOTONIC). 0: ag_coarse_slack_default_ns();
	 * negative: every classified packet reads the exact clock. Stored in
	 * ag_config, so it applies to every program on ctx's maps: the last
	 * load's value holds. */
	__s64 coarse_slack_ns;
};
int ag_prog_load_opts(struct ag_ctx *ctx, const struct ag_prog_opts *opts, struct ag_prog **out);
/* Three ticks of the kernel's timer (clock_getres of CLOCK_MONOTONIC_COARSE). */
__u64 ag_coarse_slack_default_ns(void);
int ag_prog_fd(const struct ag_prog *prog);
void ag_prog_free(struct ag_prog *prog);

/* Attach to ifname through a bpf_link pinned under <pin root>/links/.
 * If a link is already pinned there, its program is replaced atomically.
 *
 * A device that runs another XDP program (attached through netlink, as
 * libxdp's tools and ip link do) gets agentgate before it: the other
 * program goes into ag_next[ifindex] and agentgate replaces it on the
 * device atomically (XDP_FLAGS_REPLACE), in its mode; what agentgate
 * passes then runs through it (res->chained). Upgrades replace agentgate
 * there the same way; ag_detach puts the other program back atomically. */
int ag_attach(struct ag_ctx *ctx, const char *ifname, enum ag_xdp_mode mode,
	      struct ag_attach_result *res);
/* Whether agentgate can be attached to ifname: it exists and carries
 * Ethernet frames (ARPHRD_ETHER, or loopback). 0, -ENODEV, or -EOPNOTSUPP
 * naming its link type. ag_attach checks it first; callers that create
 * maps before attaching check it before. */
int ag_device_check(const char *ifname);
/* The same with options: a conditional replace, or keeping an identical
 * program (a daemon restarting on a link it made). */
int ag_attach_with(struct ag_ctx *ctx, const char *ifname, const struct ag_attach_opts *opts,
		   struct ag_attach_result *res);
/* Replace the program of an attached link with prog; refused (-EPERM) when
 * the link no longer runs expected_prog_id (0: whatever runs now). */
int ag_link_replace(struct ag_ctx *ctx, const char *ifname, const struct ag_prog *prog,
		    __u32 expected_prog_id, struct ag_attach_result *res);
int ag_detach(struct ag_ctx *ctx, const char *ifname);
/* A program to run after agentgate on ifname (loaded, not attached: a pin
 * or an id), or none (prog_fd < 0): ag_next[ifindex]. -EINVAL when the
 * kernel refuses it there (not XDP, another attach type). */
int ag_chain_set(struct ag_ctx *ctx, const char *ifname, int prog_fd);
/* The id of the program chained after agentgate on ifindex, or 0. */
__u32 ag_chain_get(struct ag_ctx *ctx, unsigned int ifindex);
/* free(*out). */
int ag_link_list(struct ag_ctx *ctx, struct ag_link_info **out, size_t *n);

/* ---- the owner of a pin root --------------------------------------------
 *
 * While agentgated runs on a pin root it owns the policy there: it holds an
 * exclusive flock(2) on <pin root>/owner (a bpffs directory) for its whole
 * life and pins its record beside it, naming its control socket. A CLI
 * write takes a shared flock on the same directory: when it gets it, no
 * daemon runs and none can start until the write is done (the daemon then
 * adopts what it finds); when it does not, the change goes to the daemon.
 * The kernel releases the lock of a process that dies, so a stale record
 * with no lock behind it means nothing.
 */
#define AG_OWNER_CONTROL_MAX 108 /* sun_path */
struct ag_owner {
	__u32 version; /* 1 */
	__u32 pid;
	__u32 uid;
	__u32 pad;
	__u64 since_ms; /* wall clock when it took the pin root */
	char control[AG_OWNER_CONTROL_MAX]; /* its control socket */
	char pad2[4];
};

/* The daemon: creates the pin root and its owner directory when missing and
 * takes the exclusive lock, waiting up to wait_ms for CLI writes under way.
 * -EBUSY when another process keeps it (*holder filled when its record is
 * readable, else holder->pid 0). *fd holds the lock: keep it open. */
int ag_owner_acquire(const char *pin_root, int wait_ms, int *fd, struct ag_owner *holder);
/* Pins rec as <pin root>/owner/record (replacing a stale one). */
int ag_owner_publish(const char *pin_root, const struct ag_owner *rec);
/* Removes the record and releases the lock (closes fd). */
void ag_owner_release(const char *pin_root, int fd);
/* A writer's probe: 0 when no daemon owns the pin root, and then *fd holds
 * a shared lock until the caller closes it (no daemon starts before);
 * 1 when a daemon owns it, *rec filled from its record (rec->pid 0 while
 * the record is not pinned yet or already removed); negative errno. With
 * fd NULL the shared lock is dropped at once (an inspection). */
int ag_owner_probe(const char *pin_root, int *fd, struct ag_owner *rec);

/* The journal of what the CLI changed while no daemon owned the pin root
 * (written under the shared lock): the agents and rules whose state in the
 * maps is the truth when the next daemon starts, even where its store says
 * otherwise (a pin set, an agent or rule deleted). A full journal becomes
 * AG_JOURNAL_ALL: the maps are the truth for everything. */
enum ag_journal_kind {
	AG_JOURNAL_AGENT = 1,
	AG_JOURNAL_RULE,
	AG_JOURNAL_ALL,
};
#define AG_JOURNAL_MAX 16384
struct ag_journal_entry {
	enum ag_journal_kind kind;
	char name[AG_NAME_MAX + 1]; /* AGENT */
	struct ag_rule rule;        /* RULE */
	__u64 time_ms;              /* when (wall clock) */
};
int ag_owner_journal_add(const char *pin_root, enum ag_journal_kind kind, const char *name,
			 const struct ag_rule *rule);
/* free(*out); none: 0 entries. */
int ag_owner_journal_read(const char *pin_root, struct ag_journal_entry **out, size_t *n);
int ag_owner_journal_clear(const char *pin_root);

#ifdef __cplusplus
}
#endif

#endif /* AGENTGATE_LIB_H */
