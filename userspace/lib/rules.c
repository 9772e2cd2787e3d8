// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Classification rules. Host prefixes (/32, /128) go to the exact-match
 * hashes, shorter ones to the LPM tries (see abi.h for the key layout).
 * ag_config.rule_count[] tells the datapath which lookups can hit; it is
 * raised before an insert and lowered after a delete, under the journal bit,
 * so the datapath never skips a map holding a live rule.
 */
#include <arpa/inet.h>
#include <errno.h>
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

static int insert_rule(struct ag_ctx *ctx, const struct ag_rule *rule, const char *agent)
{
	struct ag_rule_val val, old;
	struct rule_place at;
	struct ag_agent a;
	int err;

	err = ag_agent_get(ctx, agent, &a);
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
	return adjust_count(ctx, at.kind, -1, false);
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

/* Visit every rule of every map; stops at the first non-zero return. */
static int for_each_rule(struct ag_ctx *ctx,
			 int (*fn)(void *arg, enum ag_map_id map, const union rule_key *k,
				   const struct ag_rule_val *v),
			 void *arg)
{
	size_t m;

	for (m = 0; m < sizeof(rule_maps) / sizeof(rule_maps[0]); m++) {
		int fd = ctx->fds[rule_maps[m]];
		union rule_key key, next;
		struct ag_rule_val val;
		bool first = true;
		int err;

		while (!bpf_map_get_next_key(fd, first ? NULL : &key, &next)) {
			first = false;
			key = next;
			if (bpf_map_lookup_elem(fd, &key, &val))
				continue; /* deleted meanwhile */
			err = fn(arg, rule_maps[m], &key, &val);
			if (err)
				return err;
		}
		if (errno != ENOENT)
			return ag_err(errno, "cannot list %s: %s", ag_map_descs[rule_maps[m]].name,
				      strerror(errno));
	}
	return 0;
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

static int delete_rules(struct ag_ctx *ctx, const struct rule_vec *rv)
{
	size_t i;
	int err = 0;

	for (i = 0; i < rv->n && !err; i++) {
		union rule_key key;

		make_key(&rv->v[i], &key);
		if (bpf_map_delete_elem(ctx->fds[kind_map(rule_kind(&rv->v[i]))], &key) &&
		    errno != ENOENT)
			err = ag_err(errno, "cannot delete rule: %s", strerror(errno));
		else
			err = adjust_count(ctx, rule_kind(&rv->v[i]), -1, true);
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
	free(rv.v);
	free(named);
	return err;
}
