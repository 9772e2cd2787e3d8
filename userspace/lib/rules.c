// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Classification rules. Host prefixes (/32, /128) go to the exact-match
 * hashes, shorter ones to the LPM tries (see abi.h for the key layout).
 * ag_config.rule_count[] tells the datapath which lookups can hit; it is
 * raised before an insert and lowered after a delete, under the journal bit,
 * so the datapath never skips a map holding a live rule.
 *
 * Every trie rule is also in the per-length hash of its family (abi.h,
 * struct ag_probes): inserted after the trie, deleted with it, counted by
 * length, and the probe plans rewritten after each change. A plan carries
 * the family's trie rule count, so between the count's change and the new
 * plan the datapath walks the trie, which is complete at every step.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "internal.h"

union rule_key {
	struct ag_lpm4_key lpm4;
	struct ag_lpm6_key lpm6;
	struct ag_host4_key host4;
	struct ag_host6_key host6;
};

static int addr_len(int family)
{
	return family == AF_INET ? 4 : 16;
}

static int max_plen(int family)
{
	return family == AF_INET ? 32 : 128;
}

int ag_port_parse(const char *text, __u16 *port)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = text && *text >= '0' && *text <= '9' ? strtoul(text, &end, 10) : 0;
	if (!text || !*text || *text < '0' || *text > '9' || errno || *end || v < 1 || v > 65535)
		return ag_err(EINVAL, "invalid port '%s' (1 to 65535)", text ? text : "");
	*port = (__u16)v;
	return 0;
}

static bool host_bits_clear(const __u8 *addr, int len, int plen)
{
	int i;

	for (i = 0; i < len; i++) {
		int bits = plen - i * 8;
		__u8 mask = bits >= 8 ? 0xff : bits <= 0 ? 0 : (__u8)(0xff << (8 - bits));

		if (addr[i] & ~mask)
			return false;
	}
	return true;
}

static void clear_host_bits(__u8 *addr, int len, int plen)
{
	int i;

	for (i = 0; i < len; i++) {
		int bits = plen - i * 8;

		addr[i] &= bits >= 8 ? 0xff : bits <= 0 ? 0 : (__u8)(0xff << (8 - bits));
	}
}

int ag_prefix_parse(const char *text, struct ag_rule *rule)
{
	char buf[INET6_ADDRSTRLEN + 8], *slash, *end;
	unsigned long plen;

	memset(rule, 0, sizeof(*rule));
	if (!text || strlen(text) >= sizeof(buf))
		return ag_err(EINVAL, "invalid prefix '%s'", text ? text : "");
	strcpy(buf, text);
	slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	if (inet_pton(AF_INET, buf, rule->addr) == 1)
		rule->family = AF_INET;
	else if (inet_pton(AF_INET6, buf, rule->addr) == 1)
		rule->family = AF_INET6;
	else
		return ag_err(EINVAL, "invalid prefix '%s': '%s' is not an IPv4 or IPv6 address",
			      text, buf);
	plen = max_plen(rule->family);
	if (slash) {
		/* digits only: strtoul alone would take "-1", "+8" and " 8" */
		if (slash[1] < '0' || slash[1] > '9')
			return ag_err(EINVAL, "invalid prefix '%s': length must be 0 to %d", text,
				      max_plen(rule->family));
		errno = 0;
		plen = strtoul(slash + 1, &end, 10);
		if (errno || *end || plen > (unsigned long)max_plen(rule->family))
			return ag_err(EINVAL, "invalid prefix '%s': length must be 0 to %d", text,
				      max_plen(rule->family));
	}
	rule->plen = (__u8)plen;
	if (!host_bits_clear(rule->addr, addr_len(rule->family), rule->plen)) {
		struct ag_rule fixed = *rule;
		char hint[AG_PREFIX_STRLEN];

		clear_host_bits(fixed.addr, addr_len(fixed.family), fixed.plen);
		ag_prefix_format(&fixed, hint, sizeof(hint));
		return ag_err(EINVAL, "invalid prefix '%s': host bits set (did you mean %s?)", text,
			      hint);
	}
	return 0;
}

void ag_prefix_format(const struct ag_rule *rule, char *buf, size_t len)
{
	char addr[INET6_ADDRSTRLEN];

	inet_ntop(rule->family, rule->addr, addr, sizeof(addr));
	snprintf(buf, len, "%s/%u", addr, rule->plen);
}

static enum ag_rule_kind rule_kind(const struct ag_rule *r)
{
	bool host = r->plen == max_plen(r->family), port = r->port != 0;

	if (r->family == AF_INET)
		return host ? (port ? AG_RK_HOST4_PORT : AG_RK_HOST4) :
			      (port ? AG_RK_LPM4_PORT : AG_RK_LPM4);
	return host ? (port ? AG_RK_HOST6_PORT : AG_RK_HOST6) :
		      (port ? AG_RK_LPM6_PORT : AG_RK_LPM6);
}

static enum ag_map_id kind_map(enum ag_rule_kind k)
{
	static const enum ag_map_id maps[AG_RK__MAX] = {
		[AG_RK_HOST4] = AG_M_HOSTS_V4, [AG_RK_HOST4_PORT] = AG_M_HOSTS_V4,
		[AG_RK_LPM4] = AG_M_RULES_V4,  [AG_RK_LPM4_PORT] = AG_M_RULES_V4,
		[AG_RK_HOST6] = AG_M_HOSTS_V6, [AG_RK_HOST6_PORT] = AG_M_HOSTS_V6,
		[AG_RK_LPM6] = AG_M_RULES_V6,  [AG_RK_LPM6_PORT] = AG_M_RULES_V6,
	};
	return maps[k];
}

static void make_key(const struct ag_rule *r, union rule_key *k)
{
	__be32 port = htonl(r->port);

	memset(k, 0, sizeof(*k));
	switch (kind_map(rule_kind(r))) {
	case AG_M_HOSTS_V4:
		memcpy(k->host4.addr, r->addr, 4);
		k->host4.port = port;
		break;
	case AG_M_RULES_V4:
		k->lpm4.prefixlen = 32 + r->plen;
		k->lpm4.port = port;
		memcpy(k->lpm4.addr, r->addr, 4);
		break;
	case AG_M_HOSTS_V6:
		memcpy(k->host6.addr, r->addr, 16);
		k->host6.port = port;
		break;
	default:
		k->lpm6.prefixlen = 32 + r->plen;
		k->lpm6.port = port;
		memcpy(k->lpm6.addr, r->addr, 16);
		break;
	}
}

static void key_to_rule(enum ag_map_id map, const union rule_key *k, __u32 slot,
			struct ag_rule *r)
{
	memset(r, 0, sizeof(*r));
	r->slot = slot;
	switch (map) {
	case AG_M_HOSTS_V4:
		r->family = AF_INET, r->plen = 32, r->port = ntohl(k->host4.port);
		memcpy(r->addr, k->host4.addr, 4);
		break;
	case AG_M_RULES_V4:
	case AG_M_PREFIXES_V4:
		r->family = AF_INET, r->plen = k->lpm4.prefixlen - 32, r->port = ntohl(k->lpm4.port);
		memcpy(r->addr, k->lpm4.addr, 4);
		break;
	case AG_M_HOSTS_V6:
		r->family = AF_INET6, r->plen = 128, r->port = ntohl(k->host6.port);
		memcpy(r->addr, k->host6.addr, 16);
		break;
	default:
		r->family = AF_INET6, r->plen = k->lpm6.prefixlen - 32,
		r->port = ntohl(k->lpm6.port);
		memcpy(r->addr, k->lpm6.addr, 16);
		break;
	}
}

static void describe(const struct ag_rule *r, char *buf, size_t len)
{
	char prefix[AG_PREFIX_STRLEN];

	ag_prefix_format(r, prefix, sizeof(prefix));
	if (r->port)
		snprintf(buf, len, "%s port %u", prefix, r->port);
	else
		snprintf(buf, len, "%s", prefix);
}

/* The rule with exactly this key, if any. A lookup in an LPM trie returns
 * the longest match at most as long as the key, so compare lengths. */
static bool find_exact(int fd, const union rule_key *key, const struct ag_rule *r,
		       struct ag_rule_val *val)
{
	return !bpf_map_lookup_elem(fd, key, val) && val->plen == r->plen;
}

static int check_rule(const struct ag_rule *r)
{
	if (r->family != AF_INET && r->family != AF_INET6)
		return ag_err(EINVAL, "rule has no address family");
	if (r->plen > max_plen(r->family))
		return ag_err(EINVAL, "prefix length %u too long", r->plen);
	if (!host_bits_clear(r->addr, addr_len(r->family), r->plen))
		return ag_err(EINVAL, "prefix has host bits set");
	return 0;
}

/* Count and journal in one config write. */
static int adjust_count(struct ag_ctx *ctx, enum ag_rule_kind k, int delta, bool dirty)
{
	struct ag_config cfg;
	int err = ag_config_read(ctx, &cfg);

	if (err)
		return err;
	if (delta > 0 || cfg.rule_count[k] > 0)
		cfg.rule_count[k] += delta;
	cfg.dirty = dirty ? cfg.dirty | AG_DIRTY_RULES : cfg.dirty & ~AG_DIRTY_RULES;
	return ag_config_write(ctx, &cfg);
}

/* Where a rule lives: its kind, map, key and a description for messages. */
struct rule_place {
	enum ag_rule_kind kind;
	int fd;
	union rule_key key;
	char what[AG_PREFIX_STRLEN + 16];
};

static void locate(struct ag_ctx *ctx, const struct ag_rule *rule, struct rule_place *at)
{
	at->kind = rule_kind(rule);
	at->fd = ctx->fds[kind_map(at->kind)];
	make_key(rule, &at->key);
	describe(rule, at->what, sizeof(at->what));
}

/* ---- per-length index of trie rules ------------------------------------ */

static bool kind_is_trie(enum ag_rule_kind k)
{
	return k == AG_RK_LPM4 || k == AG_RK_LPM4_PORT || k == AG_RK_LPM6 || k == AG_RK_LPM6_PORT;
}

static int kind_family(enum ag_rule_kind k)
{
	return k >= AG_RK_HOST6; /* 0: IPv4, 1: IPv6 (index into ag_probes) */
}

static const enum ag_map_id trie_maps[2] = { AG_M_RULES_V4, AG_M_RULES_V6 };
static const enum ag_map_id prefix_maps[2] = { AG_M_PREFIXES_V4, AG_M_PREFIXES_V6 };

static __u32 trie_rules(const struct ag_config *cfg, int fam)
{
	return fam ? cfg->rule_count[AG_RK_LPM6] + cfg->rule_count[AG_RK_LPM6_PORT] :
		     cfg->rule_count[AG_RK_LPM4] + cfg->rule_count[AG_RK_LPM4_PORT];
}

/*
 * AUTO: probe the hashes while their worst case, one hash lookup per planned
 * combination, costs no more than the trie's lookup. Measured with
 * bench/xdp_cost (docs/BENCHMARKS.md, cache-hot): a probe costs a little
 * more than a lookup in a trie of one rule, and the trie adds about half a
 * probe per doubling of its rules: one probe pays from 2 rules on, two
 * from 8, three from 32, ... six from 2048.
 */
static bool auto_prefers_hash(__u32 probes, __u32 rules)
{
	__u32 depth = 0;

	while (rules >> (depth + 1))
		depth++; /* floor(log2(rules)) */
	return probes <= (depth + 1) / 2;
}

/* Longest first, and a port rule before a wildcard one of equal length: the
 * order in which the first hit is the trie's answer. 0: walk the trie. */
static __u64 make_plan(const struct ag_ctx *ctx, int fam, __u32 rules)
{
	__u64 plan = 0;
	__u32 n = 0;
	int plen, port;

	if (ctx->prefix_index == AG_PREFIX_INDEX_TRIE)
		return 0;
	for (plen = (fam ? 128 : 32) - 1; plen >= 0; plen--)
		for (port = 1; port >= 0; port--) {
			if (!ctx->probes->count[fam][port][plen])
				continue;
			if (n == AG_PROBES_MAX)
				return 0;
			plan |= (__u64)((port ? AG_PROBE_PORT : 0) | (__u32)plen) << (8 * (n + 1));
			n++;
		}
	if (ctx->prefix_index == AG_PREFIX_INDEX_AUTO && !auto_prefers_hash(n, rules))
		return 0;
	return plan | n | AG_PLAN_VALID | ((__u64)(rules & 0xff) << 56);
}

static void store_plans(struct ag_ctx *ctx, const struct ag_config *cfg)
{
	int fam;

	for (fam = 0; fam < 2; fam++)
		atomic_store((_Atomic __u64 *)&ctx->probes->plan[fam],
			     make_plan(ctx, fam, trie_rules(cfg, fam)));
}

/* Plans for the current counts. Counts that disagree with ag_config's
 * (a writer that keeps no index changed the trie) rebuild the index. */
static int publish_plans(struct ag_ctx *ctx)
{
	struct ag_config cfg;
	int fam, port, plen, err = ag_config_read(ctx, &cfg);

	if (err)
		return err;
	for (fam = 0; fam < 2; fam++) {
		__u32 sum = 0;

		for (port = 0; port < 2; port++)
			for (plen = 0; plen < 128; plen++)
				sum += ctx->probes->count[fam][port][plen];
		if (sum != trie_rules(&cfg, fam)) {
			ag_warn("prefix index out of step with the rules: rebuilding it");
			return ag_repair_rules(ctx);
		}
	}
	store_plans(ctx, &cfg);
	return 0;
}

static __u32 *length_count(struct ag_ctx *ctx, const struct ag_rule *r)
{
	return &ctx->probes->count[r->family == AF_INET6][r->port != 0][r->plen];
}

/* The index side of a trie insert: the hash entry, then the count. */
static int index_add(struct ag_ctx *ctx, const struct rule_place *at, const struct ag_rule *r,
		     const struct ag_rule_val *val)
{
	int fd = ctx->fds[prefix_maps[kind_family(at->kind)]];

	if (bpf_map_update_elem(fd, &at->key, val, BPF_ANY))
		return ag_err(errno, "cannot add rule %s to %s: %s", at->what,
			      ag_map_descs[prefix_maps[kind_family(at->kind)]].name,
			      strerror(errno));
	(*length_count(ctx, r))++;
	return 0;
}

static int index_del(struct ag_ctx *ctx, enum ag_rule_kind kind, const union rule_key *key,
		     const struct ag_rule *r)
{
	__u32 *count = length_count(ctx, r);

	if (bpf_map_delete_elem(ctx->fds[prefix_maps[kind_family(kind)]], key) && errno != ENOENT)
		return ag_err(errno, "cannot delete a rule from %s: %s",
			      ag_map_descs[prefix_maps[kind_family(kind)]].name, strerror(errno));
	if (*count)
		(*count)--;
	return 0;
}

int ag_prefix_index_set(struct ag_ctx *ctx, enum ag_prefix_index mode)
{
	int err;

	if (mode != AG_PREFIX_INDEX_AUTO && mode != AG_PREFIX_INDEX_TRIE &&
	    mode != AG_PREFIX_INDEX_HASH)
		return ag_err(EINVAL, "unknown prefix index mode %d", (int)mode);
	err = ag_lock(ctx);
	if (err)
		return err;
	ctx->prefix_index = mode;
	err = publish_plans(ctx);
	ag_unlock(ctx);
	return err;
}

int ag_prefix_index_active(struct ag_ctx *ctx, int family)
{
	int fam = family == AF_INET6;
	struct ag_config cfg;
	__u64 plan;
	int err;

	if (!ctx->probes)
		return ag_err(EROFS, "the probe plans are not mapped (read-only open)");
	err = ag_config_read(ctx, &cfg);
	if (err)
		return err;
	plan = atomic_load((_Atomic __u64 *)&ctx->probes->plan[fam]);
	return (plan & AG_PLAN_VALID) && AG_PLAN_CHECK(plan) == (trie_rules(&cfg, fam) & 0xff);
}

/* Traffic is classified to agents; a parent is charged through them. */
static int parent_has_no_rules(const char *name)
{
	return ag_err(EINVAL, "'%s' is a parent: rules point at agents, and each packet of an "
			      "agent is charged to the parents above it",
		      name);
}

static int insert_rule(struct ag_ctx *ctx, const struct ag_rule *rule, const char *agent)
{
	struct ag_rule_val val, old;
	struct rule_place at;
	struct ag_agent a;
	int err;

	err = ag_agent_get(ctx, agent, &a);
	if (!err && a.is_parent)
		err = parent_has_no_rules(agent);
	if (err)
		return err;
	locate(ctx, rule, &at);
	if (find_exact(at.fd, &at.key, rule, &old)) {
		struct ag_agent owner;

		if (old.slot == a.slot)
			return 0; /* already there: idempotent */
		if (ag_agent_get_slot(ctx, old.slot, &owner))
			snprintf(owner.name, sizeof(owner.name), "slot %u", old.slot);
		return ag_err(EEXIST, "rule %s already maps to agent '%s'; delete it first",
			      at.what, owner.name);
	}
	val.slot = a.slot;
	val.plen = rule->plen;
	err = adjust_count(ctx, at.kind, +1, true);
	if (err)
		return err;
	if (bpf_map_update_elem(at.fd, &at.key, &val, BPF_NOEXIST)) {
		err = errno == E2BIG || errno == ENOMEM || errno == ENOSPC ?
			      ag_err(ENOSPC, "cannot add rule %s: rule map %s is full (%u rules)",
				     at.what, ag_map_descs[kind_map(at.kind)].name, ctx->max_rules) :
			      ag_err(errno, "cannot add rule %s: %s", at.what, strerror(errno));
		adjust_count(ctx, at.kind, -1, false);
		return err;
	}
	if (kind_is_trie(at.kind)) {
		err = index_add(ctx, &at, rule, &val);
		if (err) { /* the journal stays set: the next locker rebuilds */
			bpf_map_delete_elem(at.fd, &at.key);
			return err;
		}
		err = publish_plans(ctx);
		if (err)
			return err;
	}
	return ag_dirty_clear(ctx, AG_DIRTY_RULES);
}

static int remove_rule(struct ag_ctx *ctx, const struct ag_rule *rule)
{
	struct ag_rule_val old;
	struct rule_place at;
	int err;

	locate(ctx, rule, &at);
	if (!find_exact(at.fd, &at.key, rule, &old))
		return ag_err(ENOENT, "no rule %s", at.what);
	err = ag_dirty_set(ctx, AG_DIRTY_RULES);
	if (err)
		return err;
	if (bpf_map_delete_elem(at.fd, &at.key)) {
		err = ag_err(errno, "cannot delete rule %s: %s", at.what, strerror(errno));
		ag_dirty_clear(ctx, AG_DIRTY_RULES);
		return err;
	}
	if (!kind_is_trie(at.kind))
		return adjust_count(ctx, at.kind, -1, false);
	err = index_del(ctx, at.kind, &at.key, rule);
	if (!err)
		err = adjust_count(ctx, at.kind, -1, true);
	if (!err)
		err = publish_plans(ctx);
	return err ? err : ag_dirty_clear(ctx, AG_DIRTY_RULES);
}

int ag_rule_add(struct ag_ctx *ctx, const struct ag_rule *rule, const char *agent)
{
	int err = check_rule(rule);

	if (!err)
		err = ag_lock(ctx);
	if (err)
		return err;
	err = insert_rule(ctx, rule, agent);
	ag_unlock(ctx);
	return err;
}

int ag_rule_del(struct ag_ctx *ctx, const struct ag_rule *rule)
{
	int err = check_rule(rule);

	if (!err)
		err = ag_lock(ctx);
	if (err)
		return err;
	err = remove_rule(ctx, rule);
	ag_unlock(ctx);
	return err;
}

static const enum ag_map_id rule_maps[] = { AG_M_HOSTS_V4, AG_M_RULES_V4, AG_M_HOSTS_V6,
					    AG_M_RULES_V6 };

typedef int (*rule_fn)(void *arg, enum ag_map_id map, const union rule_key *k,
		       const struct ag_rule_val *v);

/* Visit every entry of the given maps; stops at the first non-zero return. */
static int for_each_in(struct ag_ctx *ctx, const enum ag_map_id *maps, size_t n_maps, rule_fn fn,
		       void *arg)
{
	size_t m;

	for (m = 0; m < n_maps; m++) {
		int fd = ctx->fds[maps[m]];
		union rule_key key, next;
		struct ag_rule_val val;
		bool first = true;
		int err;

		while (!bpf_map_get_next_key(fd, first ? NULL : &key, &next)) {
			first = false;
			key = next;
			if (bpf_map_lookup_elem(fd, &key, &val))
				continue; /* deleted meanwhile */
			err = fn(arg, maps[m], &key, &val);
			if (err)
				return err;
		}
		if (errno != ENOENT)
			return ag_err(errno, "cannot list %s: %s", ag_map_descs[maps[m]].name,
				      strerror(errno));
	}
	return 0;
}

/* Visit every rule (the index hashes are copies, not visited). */
static int for_each_rule(struct ag_ctx *ctx, rule_fn fn, void *arg)
{
	return for_each_in(ctx, rule_maps, sizeof(rule_maps) / sizeof(rule_maps[0]), fn, arg);
}

struct rule_vec {
	struct ag_rule *v;
	size_t n, cap;
	__u32 only_slot; /* with filter: collect rules of this slot only */
	bool filter;
	const bool *named; /* with orphans: collect rules of unnamed slots */
	__u32 max_agents;
};

static int collect(void *arg, enum ag_map_id map, const union rule_key *k,
		   const struct ag_rule_val *val)
{
	struct rule_vec *rv = arg;

	if (rv->filter && val->slot != rv->only_slot)
		return 0;
	if (rv->named && val->slot < rv->max_agents && rv->named[val->slot])
		return 0;
	if (rv->n == rv->cap) {
		struct ag_rule *grown;

		rv->cap = rv->cap ? rv->cap * 2 : 64;
		grown = realloc(rv->v, rv->cap * sizeof(*grown));
		if (!grown)
			return ag_err(ENOMEM, "out of memory");
		rv->v = grown;
	}
	key_to_rule(map, k, val->slot, &rv->v[rv->n++]);
	return 0;
}

int ag_rule_list(struct ag_ctx *ctx, struct ag_rule **out, size_t *n)
{
	struct rule_vec rv = {};
	int err = for_each_rule(ctx, collect, &rv);

	if (err) {
		free(rv.v);
		return err;
	}
	*out = rv.v ? rv.v : calloc(1, sizeof(struct ag_rule));
	*n = rv.n;
	return *out ? 0 : ag_err(ENOMEM, "out of memory");
}

/* Under the journal; the caller publishes the plans. */
static int delete_rules(struct ag_ctx *ctx, const struct rule_vec *rv)
{
	size_t i;
	int err = 0;

	for (i = 0; i < rv->n && !err; i++) {
		enum ag_rule_kind kind = rule_kind(&rv->v[i]);
		union rule_key key;

		make_key(&rv->v[i], &key);
		if (bpf_map_delete_elem(ctx->fds[kind_map(kind)], &key) && errno != ENOENT)
			err = ag_err(errno, "cannot delete rule: %s", strerror(errno));
		if (!err && kind_is_trie(kind))
			err = index_del(ctx, kind, &key, &rv->v[i]);
		if (!err)
			err = adjust_count(ctx, kind, -1, true);
	}
	return err;
}

int ag_rules_drop_slot(struct ag_ctx *ctx, __u32 slot)
{
	struct rule_vec rv = { .only_slot = slot, .filter = true };
	int err;

	err = ag_lock(ctx);
	if (err)
		return err;
	err = for_each_rule(ctx, collect, &rv);
	if (!err && rv.n) {
		err = ag_dirty_set(ctx, AG_DIRTY_RULES);
		if (!err)
			err = delete_rules(ctx, &rv);
		if (!err)
			err = publish_plans(ctx);
		if (!err)
			err = ag_dirty_clear(ctx, AG_DIRTY_RULES);
	}
	free(rv.v);
	ag_unlock(ctx);
	return err;
}

static int count_rule(void *arg, enum ag_map_id map, const union rule_key *k,
		      const struct ag_rule_val *val)
{
	__u32 *counts = arg;
	struct ag_rule r;

	key_to_rule(map, k, val->slot, &r);
	counts[rule_kind(&r)]++;
	return 0;
}

/* Under the lock after an interrupted change: drop rules of vanished agents,
 * recount every kind. */
int ag_repair_rules(struct ag_ctx *ctx)
{
	struct rule_vec rv = { .max_agents = ctx->max_agents };
	__u32 counts[AG_RK__MAX] = {};
	struct ag_config cfg;
	bool *named;
	__u32 slot;
	int err;

	named = calloc(ctx->max_agents, sizeof(*named));
	if (!named)
		return ag_err(ENOMEM, "out of memory");
	for (slot = 0; slot < ctx->max_agents; slot++)
		named[slot] = ctx->buckets[slot].in_use;
	rv.named = named;
	err = for_each_rule(ctx, collect, &rv);
	if (!err && rv.n) {
		ag_warn("removing %zu rule(s) of agents deleted by an interrupted change", rv.n);
		err = delete_rules(ctx, &rv);
	}
	if (!err)
		err = for_each_rule(ctx, count_rule, counts);
	if (!err)
		err = ag_config_read(ctx, &cfg);
	if (!err) {
		memcpy(cfg.rule_count, counts, sizeof(counts));
		err = ag_config_write(ctx, &cfg);
	}
	if (!err)
		err = ag_rebuild_prefix_index(ctx);
	free(rv.v);
	free(named);
	return err;
}

struct index_build {
	struct ag_ctx *ctx;
	__u32 (*count)[2][128];
	struct rule_vec stale; /* hash entries without their trie rule */
};

/* A trie rule: into its family's hash (again), counted by length. */
static int index_rule(void *arg, enum ag_map_id map, const union rule_key *k,
		      const struct ag_rule_val *v)
{
	struct index_build *ib = arg;
	int fam = map == AG_M_RULES_V6;
	struct ag_rule r;

	key_to_rule(map, k, v->slot, &r);
	if (bpf_map_update_elem(ib->ctx->fds[prefix_maps[fam]], k, v, BPF_ANY))
		return ag_err(errno, "cannot add a rule to %s: %s",
			      ag_map_descs[prefix_maps[fam]].name, strerror(errno));
	ib->count[fam][r.port != 0][r.plen]++;
	return 0;
}

/* A hash entry: stale unless the trie holds the same rule for the same slot. */
static int find_stale(void *arg, enum ag_map_id map, const union rule_key *k,
		      const struct ag_rule_val *v)
{
	struct index_build *ib = arg;
	int fam = map == AG_M_PREFIXES_V6;
	struct ag_rule_val in_trie;
	struct ag_rule r;

	key_to_rule(map, k, v->slot, &r);
	if (find_exact(ib->ctx->fds[trie_maps[fam]], k, &r, &in_trie) && in_trie.slot == v->slot)
		return 0;
	return collect(&ib->stale, map, k, v);
}

/* Under the lock: make the hashes hold exactly the trie rules, recount them
 * by length and write fresh plans. The datapath walks the tries meanwhile. */
int ag_rebuild_prefix_index(struct ag_ctx *ctx)
{
	struct index_build ib = { .ctx = ctx };
	struct ag_config cfg;
	size_t i;
	int err;

	if (!ctx->probes)
		return ag_require_writable(ctx);
	ib.count = calloc(2, sizeof(*ib.count));
	if (!ib.count)
		return ag_err(ENOMEM, "out of memory");
	atomic_store((_Atomic __u64 *)&ctx->probes->plan[0], 0);
	atomic_store((_Atomic __u64 *)&ctx->probes->plan[1], 0);
	err = for_each_in(ctx, prefix_maps, 2, find_stale, &ib);
	for (i = 0; !err && i < ib.stale.n; i++) {
		union rule_key key;

		make_key(&ib.stale.v[i], &key);
		if (bpf_map_delete_elem(ctx->fds[prefix_maps[ib.stale.v[i].family == AF_INET6]],
					&key) &&
		    errno != ENOENT)
			err = ag_err(errno, "cannot delete a stale index entry: %s", strerror(errno));
	}
	if (!err)
		err = for_each_in(ctx, trie_maps, 2, index_rule, &ib);
	if (!err)
		err = ag_config_read(ctx, &cfg);
	if (!err) {
		memcpy(ctx->probes->count, ib.count, sizeof(ctx->probes->count));
		store_plans(ctx, &cfg);
	}
	free(ib.stale.v);
	free(ib.count);
	return err;
}

/* ---- replacing one agent's set of rules in one pass ------------------------- */

/* Raises (delta > 0) or lowers the counts of every kind by per-kind amounts,
 * with the journal bit as given, in one config write. */
static int adjust_counts(struct ag_ctx *ctx, const __u32 *by, int sign, bool dirty)
{
	struct ag_config cfg;
	int err = ag_config_read(ctx, &cfg), k;

	if (err)
		return err;
	for (k = 0; k < AG_RK__MAX; k++) {
		if (sign > 0)
			cfg.rule_count[k] += by[k];
		else
			cfg.rule_count[k] -= by[k] < cfg.rule_count[k] ? by[k] : cfg.rule_count[k];
	}
	cfg.dirty = dirty ? cfg.dirty | AG_DIRTY_RULES : cfg.dirty & ~AG_DIRTY_RULES;
	return ag_config_write(ctx, &cfg);
}

/* Inserts one rule of a swap: 1 when inserted, 0 when it was there already
 * (for this slot, or for another: *conflict), or an error. */
static int swap_insert(struct ag_ctx *ctx, const struct ag_rule *rule, __u32 slot, bool *conflict)
{
	struct ag_rule_val val = { .slot = slot, .plen = rule->plen }, old;
	struct rule_place at;
	int err;

	*conflict = false;
	at.kind = rule_kind(rule);
	at.fd = ctx->fds[kind_map(at.kind)];
	make_key(rule, &at.key);
	if (find_exact(at.fd, &at.key, rule, &old)) {
		*conflict = old.slot != slot;
		return 0;
	}
	if (bpf_map_update_elem(at.fd, &at.key, &val, BPF_NOEXIST)) {
		describe(rule, at.what, sizeof(at.what));
		return errno == E2BIG || errno == ENOMEM || errno == ENOSPC ?
			       ag_err(ENOSPC, "cannot add rule %s: rule map %s is full (%u rules)",
				      at.what, ag_map_descs[kind_map(at.kind)].name,
				      ctx->max_rules) :
			       ag_err(errno, "cannot add rule %s: %s", at.what, strerror(errno));
	}
	if (kind_is_trie(at.kind)) {
		describe(rule, at.what, sizeof(at.what));
		err = index_add(ctx, &at, rule, &val);
		if (err) {
			bpf_map_delete_elem(at.fd, &at.key);
			return err;
		}
	}
	return 1;
}

/* Deletes one rule if it maps to slot: 1 when deleted, 0 when absent or
 * another agent's, or an error. */
static int swap_remove(struct ag_ctx *ctx, const struct ag_rule *rule, __u32 slot)
{
	enum ag_rule_kind kind = rule_kind(rule);
	int fd = ctx->fds[kind_map(kind)];
	struct ag_rule_val old;
	union rule_key key;
	int err;

	make_key(rule, &key);
	if (!find_exact(fd, &key, rule, &old) || old.slot != slot)
		return 0;
	if (bpf_map_delete_elem(fd, &key))
		return errno == ENOENT ? 0 : ag_err(errno, "cannot delete a rule: %s", strerror(errno));
	if (kind_is_trie(kind)) {
		err = index_del(ctx, kind, &key, rule);
		if (err)
			return err;
	}
	return 1;
}

/* Takes back the rules a failed swap inserted (flagged in done[]) and
 * lowers the counts by all that were raised for it (unused: those never
 * inserted); the journal bit stays set when something could not be taken
 * back (the next locker recounts). */
static int swap_undo(struct ag_ctx *ctx, const struct ag_rule *add, size_t n, const __u8 *done,
		     __u32 slot, __u32 *unused)
{
	size_t i;
	int err = 0;

	for (i = 0; i < n; i++) {
		int r;

		if (!done[i])
			continue;
		r = swap_remove(ctx, &add[i], slot);
		if (r == 1)
			unused[rule_kind(&add[i])]++;
		else
			err = r < 0 ? r : -EIO;
	}
	return adjust_counts(ctx, unused, -1, err != 0) ?: err;
}

int ag_rules_swap(struct ag_ctx *ctx, const char *agent, const struct ag_rule *add, size_t n_add,
		  const struct ag_rule *del, size_t n_del, __u8 *state,
		  struct ag_rules_swap_result *res)
{
	__u32 raised[AG_RK__MAX] = {}, unused[AG_RK__MAX], dropped[AG_RK__MAX] = {};
	struct ag_agent a;
	__u8 *done = NULL;
	size_t i;
	int err;

	memset(res, 0, sizeof(*res));
	for (i = 0; i < n_add; i++) {
		err = check_rule(&add[i]);
		if (err)
			return err;
		raised[rule_kind(&add[i])]++;
	}
	for (i = 0; i < n_del; i++) {
		err = check_rule(&del[i]);
		if (err)
			return err;
	}
	done = calloc(n_add ? n_add : 1, 1);
	if (!done)
		return ag_err(ENOMEM, "out of memory");
	err = ag_lock(ctx);
	if (err)
		goto out_free;
	err = ag_agent_get(ctx, agent, &a);
	if (!err && a.is_parent)
		err = parent_has_no_rules(agent);
	if (err)
		goto out_unlock;
	/* The counts go up first (the datapath looks in every map that may hold a
	 * rule), by the most the inserts can add; what was not inserted is taken
	 * off once they are done. */
	err = adjust_counts(ctx, raised, +1, true);
	if (err)
		goto out_unlock;
	memcpy(unused, raised, sizeof(unused));
	for (i = 0; i < n_add; i++) {
		bool clash;
		int r = swap_insert(ctx, &add[i], a.slot, &clash);

		if (r < 0) {
			err = r;
			break;
		}
		if (state)
			state[i] = r == 1 ? AG_SWAP_ADDED : clash ? AG_SWAP_CONFLICT : AG_SWAP_KEPT;
		res->conflicts += clash;
		if (r == 1) {
			done[i] = 1;
			res->added++;
			unused[rule_kind(&add[i])]--;
		}
	}
	if (!err) {
		err = adjust_counts(ctx, unused, -1, true);
		if (!err) /* taken off: the undo below lowers by what it removes */
			memset(unused, 0, sizeof(unused));
	}
	if (!err)
		err = publish_plans(ctx);
	if (err) {
		/* The error stays the insert's; the counts are exact again. */
		swap_undo(ctx, add, n_add, done, a.slot, unused);
		publish_plans(ctx);
		memset(res, 0, sizeof(*res));
		goto out_unlock;
	}
	/* Only now the rules leaving the set: a source both sets cover is
	 * classified to the agent at every step. */
	for (i = 0; i < n_del && !err; i++) {
		int r = swap_remove(ctx, &del[i], a.slot);

		if (r < 0)
			err = r;
		else if (r == 1) {
			res->removed++;
			dropped[rule_kind(&del[i])]++;
		}
	}
	{
		int e2 = adjust_counts(ctx, dropped, -1, err != 0);

		if (!err)
			err = e2;
	}
	if (!err)
		err = publish_plans(ctx);
	if (!err)
		err = ag_dirty_clear(ctx, AG_DIRTY_RULES);
out_unlock:
	ag_unlock(ctx);
out_free:
	free(done);
	return err;
}
