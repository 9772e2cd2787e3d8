// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libagentgate unit tests (cmocka): pinned-map lifecycle, agents and slots,
 * rules, buckets through the mmap, crash repair, counters and config.
 *
 * Every test works in its own directory under the private pin root from
 * testenv_pin_root() and registers what it opens or allocates in a fixture,
 * so a failing assertion (a longjmp out of the test) still closes contexts,
 * fds and frees memory in the teardown: the binary stays leak-free under ASan.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <limits.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <linux/bpf.h>

#include "agentgate.h"
#include "testenv.h"

#define SKIP_CODE 77

static const char *g_root; /* private pin root of this program */

/* ---- assertions printing decimal values and the library's message ------ */

#define check_eq(a, b)                                                                   \
	do {                                                                             \
		long long a_ = (long long)(a), b_ = (long long)(b);                      \
		if (a_ != b_)                                                            \
			fail_msg("%s = %lld, expected %lld (last message: %s)", #a, a_,  \
				 b_, ag_errmsg());                                       \
	} while (0)

#define check_ok(e) check_eq(e, 0)

#define check_range(v, lo, hi)                                                           \
	do {                                                                             \
		double v_ = (v);                                                         \
		if (!(v_ >= (double)(lo) && v_ <= (double)(hi)))                         \
			fail_msg("%s = %.9g, expected within [%.9g, %.9g]", #v, v_,      \
				 (double)(lo), (double)(hi));                            \
	} while (0)

#define check_msg(sub)                                                                   \
	do {                                                                             \
		if (!strstr(ag_errmsg(), (sub)))                                         \
			fail_msg("message \"%s\" does not contain \"%s\"", ag_errmsg(),  \
				 (sub));                                                 \
	} while (0)

/* ---- fixture: everything a test must release ---------------------------- */

#define FX_MAX 32

struct fx {
	char root[PATH_MAX];
	struct ag_ctx *ctx[FX_MAX];
	void *mem[FX_MAX];
	int fds[FX_MAX];
	int nctx, nmem, nfds;
};

static char g_log[4096]; /* library warnings captured by some tests */

static void capture_log(const char *msg)
{
	size_t len = strlen(g_log);

	snprintf(g_log + len, sizeof(g_log) - len, "%s\n", msg);
}

static int fx_setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;
	int i;

	for (i = 0; i < fx->nctx; i++)
		ag_close(fx->ctx[i]);
	for (i = 0; i < fx->nmem; i++)
		free(fx->mem[i]);
	for (i = 0; i < fx->nfds; i++)
		if (fx->fds[i] >= 0)
			close(fx->fds[i]);
	ag_set_log(NULL);
	free(fx);
	return 0;
}

static void *fx_mem(struct fx *fx, void *p)
{
	assert_true(fx->nmem < FX_MAX);
	fx->mem[fx->nmem++] = p;
	return p;
}

static int fx_fd(struct fx *fx, int fd)
{
	assert_true(fx->nfds < FX_MAX);
	fx->fds[fx->nfds++] = fd;
	return fd;
}

static struct ag_ctx *fx_ctx(struct fx *fx, struct ag_ctx *ctx)
{
	assert_true(fx->nctx < FX_MAX);
	fx->ctx[fx->nctx++] = ctx;
	return ctx;
}

/* Close a tracked context before the teardown (reopen tests). */
static void fx_close(struct fx *fx, struct ag_ctx *ctx)
{
	int i;

	for (i = 0; i < fx->nctx; i++)
		if (fx->ctx[i] == ctx)
			fx->ctx[i] = NULL;
	ag_close(ctx);
}

static const char *fx_root(struct fx *fx, const char *name)
{
	snprintf(fx->root, sizeof(fx->root), "%s/%s", g_root, name);
	return fx->root;
}

/* The pin root itself, without creating any map (for raw pins). */
static void fx_mkroot(struct fx *fx)
{
	if (mkdir(g_root, 0700) && errno != EEXIST)
		fail_msg("mkdir %s: %s", g_root, strerror(errno));
	if (mkdir(fx->root, 0700) && errno != EEXIST)
		fail_msg("mkdir %s: %s", fx->root, strerror(errno));
}

static int try_open(const char *root, bool create, bool ro, __u32 max_agents, __u32 max_rules,
		    struct ag_ctx **out)
{
	struct ag_open_opts o = {
		.pin_root = root,
		.create = create,
		.read_only = ro,
		.max_agents = max_agents,
		.max_rules = max_rules,
	};

	return ag_open(&o, out);
}

static struct ag_ctx *fx_open(struct fx *fx, const char *root, bool create, bool ro,
			      __u32 max_agents, __u32 max_rules)
{
	struct ag_ctx *ctx = NULL;

	check_ok(try_open(root, create, ro, max_agents, max_rules, &ctx));
	return fx_ctx(fx, ctx);
}

/* A raw fd of a pinned map of the root under test. */
static int fx_map(struct fx *fx, const char *map)
{
	char path[PATH_MAX + 64];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", fx->root, map);
	fd = bpf_obj_get(path);
	if (fd < 0)
		fail_msg("bpf_obj_get %s: %s", path, strerror(errno));
	return fx_fd(fx, fd);
}

static void map_info_of(int fd, struct bpf_map_info *info)
{
	__u32 len = sizeof(*info);

	memset(info, 0, sizeof(*info));
	check_ok(bpf_obj_get_info_by_fd(fd, info, &len));
}

/* ---- small helpers ------------------------------------------------------ */

static __u32 set_agent(struct ag_ctx *ctx, const char *name, double rate, __u64 burst)
{
	struct ag_agent_update u = {
		.fields = AG_SET_RATE | AG_SET_BURST,
		.rate = rate,
		.burst = burst,
	};
	__u32 slot = UINT32_MAX;
	bool created = false;

	check_ok(ag_agent_set(ctx, name, &u, &slot, &created));
	assert_true(created);
	assert_true(slot < ag_max_agents(ctx));
	return slot;
}

static void check_agent(struct ag_ctx *ctx, const char *name, __u32 slot, double rate,
			__u64 burst)
{
	struct ag_agent a;

	check_ok(ag_agent_get(ctx, name, &a));
	assert_string_equal(a.name, name);
	check_eq(a.slot, slot);
	check_range(a.rate, rate - 1e-9, rate + 1e-9);
	check_eq(a.burst, burst);
}

static struct ag_agent *list_agents(struct fx *fx, struct ag_ctx *ctx, size_t *n)
{
	struct ag_agent *v = NULL;

	check_ok(ag_agent_list(ctx, &v, n));
	return fx_mem(fx, v);
}

static struct ag_rule *list_rules(struct fx *fx, struct ag_ctx *ctx, size_t *n)
{
	struct ag_rule *v = NULL;

	check_ok(ag_rule_list(ctx, &v, n));
	return fx_mem(fx, v);
}

static bool agent_listed(const struct ag_agent *v, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(v[i].name, name))
			return true;
	return false;
}

static struct ag_rule prefix(const char *text, __u16 port)
{
	struct ag_rule r;

	check_ok(ag_prefix_parse(text, &r));
	r.port = port;
	return r;
}

static bool same_rule(const struct ag_rule *a, const struct ag_rule *b)
{
	return a->family == b->family && a->plen == b->plen && a->port == b->port &&
	       !memcmp(a->addr, b->addr, sizeof(a->addr));
}

/* Index of r in v, or -1. */
static int rule_index(const struct ag_rule *v, size_t n, const struct ag_rule *r)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (same_rule(&v[i], r))
			return (int)i;
	return -1;
}

static void check_rule_slot(const struct ag_rule *v, size_t n, const struct ag_rule *r,
			    __u32 slot)
{
	int i = rule_index(v, n, r);
	char text[AG_PREFIX_STRLEN];

	ag_prefix_format(r, text, sizeof(text));
	if (i < 0)
		fail_msg("rule %s port %u not listed", text, r->port);
	check_eq(v[i].slot, slot);
}

static struct ag_config config(struct ag_ctx *ctx)
{
	struct ag_config cfg;

	check_ok(ag_config_get(ctx, &cfg));
	return cfg;
}

static double tokens(struct ag_ctx *ctx, __u32 slot)
{
	double t = -1;

	check_ok(ag_bucket_tokens(ctx, slot, &t));
	return t;
}

/* ---- 1. slot claims racing between two processes ----------------------- */

#define RACE_SLOTS 1024
#define RACE_OWN 300
#define RACE_SHARED 50
#define RACE_TOTAL (2 * RACE_OWN + RACE_SHARED)

static int set_default(struct ag_ctx *ctx, const char *name, bool *created)
{
	struct ag_agent_update none = {};

	return ag_agent_set(ctx, name, &none, NULL, created);
}

/* Child body: returns its exit code; writes how many shared names it created. */
static int race_child(const char *root, char tag, int go_fd, int out_fd)
{
	struct ag_ctx *ctx = NULL;
	int i, shared = 0, err;
	char name[32], c;
	bool created;

	if (read(go_fd, &c, 1) != 0) /* EOF once the parent closes its end */
		return 10;
	err = try_open(root, true, false, RACE_SLOTS, 64, &ctx);
	for (i = 0; i < RACE_OWN && !err; i++) {
		snprintf(name, sizeof(name), "%c-%d", tag, i);
		err = set_default(ctx, name, &created);
		if (!err && !created)
			err = -EEXIST;
		if (err || i % (RACE_OWN / RACE_SHARED))
			continue;
		snprintf(name, sizeof(name), "shared-%d", i / (RACE_OWN / RACE_SHARED));
		err = set_default(ctx, name, &created);
		shared += !err && created;
	}
	if (err)
		fprintf(stderr, "# child %c: %d: %s\n", tag, err, ag_errmsg());
	ag_close(ctx);
	if (!err && write(out_fd, &shared, sizeof(shared)) != sizeof(shared))
		return 11;
	return err ? 12 : 0;
}

static pid_t race_spawn(const char *root, char tag, int go[2], int out[2])
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		close(go[1]);
		close(out[0]);
		_exit(race_child(root, tag, go[0], out[1]));
	}
	return pid;
}

static int wait_exit(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int read_int(int fd)
{
	int v = -1;

	return read(fd, &v, sizeof(v)) == sizeof(v) ? v : -1;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void race_expected_names(char (*names)[32])
{
	int i, n = 0;

	for (i = 0; i < RACE_OWN; i++)
		snprintf(names[n++], 32, "a-%d", i);
	for (i = 0; i < RACE_OWN; i++)
		snprintf(names[n++], 32, "b-%d", i);
	for (i = 0; i < RACE_SHARED; i++)
		snprintf(names[n++], 32, "shared-%d", i);
}

/* The listed names, sorted, must equal the expected names, sorted. */
static void race_check_names(struct fx *fx, const struct ag_agent *v, size_t n)
{
	char (*want)[32] = fx_mem(fx, calloc(RACE_TOTAL, 32));
	const char **got = fx_mem(fx, calloc(RACE_TOTAL, sizeof(*got)));
	const char **exp = fx_mem(fx, calloc(RACE_TOTAL, sizeof(*exp)));
	size_t i;

	assert_non_null(want);
	assert_non_null(got);
	assert_non_null(exp);
	race_expected_names(want);
	for (i = 0; i < RACE_TOTAL; i++) {
		got[i] = v[i].name;
		exp[i] = want[i];
	}
	qsort(got, n, sizeof(*got), cmp_str);
	qsort(exp, n, sizeof(*exp), cmp_str);
	for (i = 0; i < RACE_TOTAL; i++)
		assert_string_equal(got[i], exp[i]);
}

static void race_check_lookups(struct ag_ctx *ctx, const struct ag_agent *v, size_t n)
{
	struct ag_agent a, b;
	size_t i;

	for (i = 0; i < n; i++) {
		check_ok(ag_agent_get(ctx, v[i].name, &a));
		check_eq(a.slot, v[i].slot);
		check_ok(ag_agent_get_slot(ctx, a.slot, &b));
		assert_string_equal(b.name, v[i].name);
		check_range(tokens(ctx, a.slot), AG_DEFAULT_RATE - 1e-6, AG_DEFAULT_RATE);
	}
}

static void test_slot_claim_race(void **state)
{
	struct fx *fx = *state;
	const char *root = fx_root(fx, "slot_race");
	int go[2], out_a[2], out_b[2], rc_a, rc_b, shared_a, shared_b;
	struct ag_agent *v;
	struct ag_ctx *ctx;
	pid_t a, b;
	size_t n, i;

	assert_true(!pipe(go) && !pipe(out_a) && !pipe(out_b));
	a = race_spawn(root, 'a', go, out_a);
	b = a > 0 ? race_spawn(root, 'b', go, out_b) : -1;
	close(go[0]);
	close(go[1]); /* both children start now */
	close(out_a[1]);
	close(out_b[1]);
	rc_a = a > 0 ? wait_exit(a) : -1;
	rc_b = b > 0 ? wait_exit(b) : -1;
	shared_a = read_int(out_a[0]);
	shared_b = read_int(out_b[0]);
	close(out_a[0]);
	close(out_b[0]);
	check_eq(rc_a, 0);
	check_eq(rc_b, 0);
	/* Each shared name was created by exactly one of the two. */
	check_eq(shared_a + shared_b, RACE_SHARED);

	ctx = fx_open(fx, root, false, false, 0, 0);
	check_eq(ag_max_agents(ctx), RACE_SLOTS);
	v = list_agents(fx, ctx, &n);
	check_eq(n, RACE_TOTAL);
	for (i = 0; i < n; i++) {
		assert_true(v[i].slot < RACE_SLOTS);
		if (i) /* sorted by slot: strictly increasing means distinct */
			assert_true(v[i].slot > v[i - 1].slot);
	}
	race_check_names(fx, v, n);
	race_check_lookups(ctx, v, n);
	check_eq(config(ctx).dirty, 0);
}

/* ---- 2. slot exhaustion ------------------------------------------------ */

static void test_slot_exhaustion(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "exhaust"), true, false, 8, 16);
	struct ag_agent_update u = { .fields = AG_SET_RATE, .rate = 5 };
	struct ag_agent a;
	__u32 slots[8];
	char name[16];
	size_t n;
	int i;

	for (i = 0; i < 8; i++) {
		snprintf(name, sizeof(name), "ag-%d", i);
		slots[i] = set_agent(ctx, name, i + 1, 10 + i);
	}
	check_eq(ag_agent_set(ctx, "ag-8", &u, NULL, NULL), -ENOSPC);
	check_msg("slot");
	check_msg("8");
	check_eq(ag_agent_get(ctx, "ag-8", &a), -ENOENT);

	list_agents(fx, ctx, &n);
	check_eq(n, 8);
	for (i = 0; i < 8; i++) {
		snprintf(name, sizeof(name), "ag-%d", i);
		check_agent(ctx, name, slots[i], i + 1, 10 + i);
		check_range(tokens(ctx, slots[i]), 10 + i - 1e-6, 10 + i);
	}
	check_eq(config(ctx).dirty, 0);
}

/* ---- 3. layout mismatch: refuse, never overwrite ------------------------ */

static int pin_raw_map(struct fx *fx, enum bpf_map_type type, const char *name, __u32 value_size,
		       __u32 max_entries, __u32 flags)
{
	LIBBPF_OPTS(bpf_map_create_opts, o, .map_flags = flags);
	char path[PATH_MAX + 64];
	int fd;

	fx_mkroot(fx);
	fd = bpf_map_create(type, name, 4, value_size, max_entries, &o);
	if (fd < 0)
		fail_msg("bpf_map_create %s: %s", name, strerror(errno));
	fx_fd(fx, fd);
	snprintf(path, sizeof(path), "%s/%s", fx->root, name);
	check_ok(bpf_obj_pin(fd, path));
	return fd;
}

static void test_layout_value_size(void **state)
{
	struct fx *fx = *state;
	struct bpf_map_info info;
	struct ag_ctx *ctx = NULL;
	int err;

	fx_root(fx, "layout_value");
	pin_raw_map(fx, BPF_MAP_TYPE_ARRAY, AG_MAP_BUCKETS, 32, 64, BPF_F_MMAPABLE);

	err = try_open(fx->root, true, false, 64, 16, &ctx);
	fx_ctx(fx, ctx);
	assert_true(err < 0);
	assert_null(ctx);
	check_msg(AG_MAP_BUCKETS);
	check_msg("value size");

	/* The pin is the one we made, unchanged. */
	map_info_of(fx_map(fx, AG_MAP_BUCKETS), &info);
	check_eq(info.type, BPF_MAP_TYPE_ARRAY);
	check_eq(info.value_size, 32);
	check_eq(info.max_entries, 64);
}

static void test_layout_type(void **state)
{
	struct fx *fx = *state;
	struct bpf_map_info info;
	struct ag_ctx *ctx = NULL;
	int err;

	fx_root(fx, "layout_type");
	pin_raw_map(fx, BPF_MAP_TYPE_HASH, AG_MAP_CONFIG, sizeof(struct ag_config), 1, 0);

	err = try_open(fx->root, true, false, 64, 16, &ctx);
	fx_ctx(fx, ctx);
	assert_true(err < 0);
	assert_null(ctx);
	check_msg(AG_MAP_CONFIG);
	check_msg("type");

	map_info_of(fx_map(fx, AG_MAP_CONFIG), &info);
	check_eq(info.type, BPF_MAP_TYPE_HASH);
	check_eq(info.value_size, sizeof(struct ag_config));
}

/* ---- 4. reopening keeps everything ------------------------------------ */

static void test_reopen_keeps_state(void **state)
{
	struct fx *fx = *state;
	const char *root = fx_root(fx, "reopen");
	struct ag_ctx *ctx = fx_open(fx, root, true, false, 32, 16);
	struct ag_agent_update pin = { .fields = AG_SET_PINNED, .pinned = true };
	struct ag_rule r8 = prefix("10.0.0.0/8", 0), rh = prefix("192.168.1.1", 443),
		       r6 = prefix("2001:db8::/32", 0), *rules;
	struct ag_config before, after;
	__u32 slow, fast;
	struct ag_agent a;
	double left;
	size_t n;

	slow = set_agent(ctx, "slow", 1, 10);
	fast = set_agent(ctx, "fast", 50, 100);
	check_ok(ag_agent_set(ctx, "fast", &pin, NULL, NULL));
	check_ok(ag_rule_add(ctx, &r8, "slow"));
	check_ok(ag_rule_add(ctx, &rh, "fast"));
	check_ok(ag_rule_add(ctx, &r6, "fast"));
	check_ok(ag_config_set_default_action(ctx, AG_ACTION_DROP));
	check_ok(ag_bucket_drain(ctx, slow, 4, &left));
	check_range(left, 6 - 1e-6, 6 + 1e-6);
	before = config(ctx);
	fx_close(fx, ctx);

	/* Sizes come from the pinned maps, not from the options. */
	ctx = fx_open(fx, root, false, false, 4096, 7);
	check_eq(ag_max_agents(ctx), 32);
	check_eq(ag_max_rules(ctx), 16);
	list_agents(fx, ctx, &n);
	check_eq(n, 2);
	check_agent(ctx, "slow", slow, 1, 10);
	check_agent(ctx, "fast", fast, 50, 100);
	check_ok(ag_agent_get(ctx, "fast", &a));
	assert_true(a.pinned);
	check_range(tokens(ctx, slow), 5.95, 6.5); /* refilled for a moment at 1/s */
	check_range(tokens(ctx, fast), 100 - 1e-6, 100);
	rules = list_rules(fx, ctx, &n);
	check_eq(n, 3);
	check_rule_slot(rules, n, &r8, slow);
	check_rule_slot(rules, n, &rh, fast);
	check_rule_slot(rules, n, &r6, fast);
	after = config(ctx);
	assert_memory_equal(&before, &after, sizeof(before));
	check_eq(after.default_action, AG_ACTION_DROP);

	/* A creating open of an existing root adopts it too. */
	ctx = fx_open(fx, root, true, false, 64, 32);
	check_eq(ag_max_agents(ctx), 32);
	check_eq(ag_max_rules(ctx), 16);
	check_agent(ctx, "slow", slow, 1, 10);
}

/* ---- 5. missing pin root ---------------------------------------------- */

static void test_missing_root(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = NULL;
	int err;

	fx_root(fx, "missing/deeper");
	err = try_open(fx->root, false, false, 0, 0, &ctx);
	fx_ctx(fx, ctx);
	check_eq(err, -ENOENT);
	assert_null(ctx);
	check_msg("agentgated");
	check_msg("attach");
	/* Nothing was created by the failed open. */
	assert_true(access(fx->root, F_OK) && errno == ENOENT);

	/* An existing but empty directory: also -ENOENT, with the same hint. */
	fx_root(fx, "empty");
	fx_mkroot(fx);
	err = try_open(fx->root, false, false, 0, 0, &ctx);
	fx_ctx(fx, ctx);
	check_eq(err, -ENOENT);
	check_msg("agentgated");
}

/* ---- 6. read-only open ------------------------------------------------- */

static void test_read_only(void **state)
{
	struct fx *fx = *state;
	const char *root = fx_root(fx, "read_only");
	struct ag_ctx *rw = fx_open(fx, root, true, false, 16, 16);
	struct ag_agent_update u = { .fields = AG_SET_RATE, .rate = 99 };
	struct ag_rule r = prefix("10.0.0.0/8", 0);
	struct ag_consume_result res;
	struct ag_agent *v;
	struct ag_ctx *ro;
	__u32 slot;
	double left;
	size_t n;

	slot = set_agent(rw, "watched", 10, 20);
	check_ok(ag_rule_add(rw, &r, "watched"));
	ro = fx_open(fx, root, false, true, 0, 0);

	v = list_agents(fx, ro, &n);
	check_eq(n, 1);
	assert_string_equal(v[0].name, "watched");
	check_range(tokens(ro, slot), 20 - 1e-6, 20);
	list_rules(fx, ro, &n);
	check_eq(n, 1);

	check_eq(ag_agent_set(ro, "watched", &u, NULL, NULL), -EROFS);
	check_eq(ag_agent_set(ro, "newcomer", &u, NULL, NULL), -EROFS);
	check_eq(ag_bucket_consume(ro, slot, 1, &res), -EROFS);
	check_eq(ag_bucket_drain(ro, slot, 5, &left), -EROFS);
	check_eq(ag_bucket_fill(ro, slot, 1), -EROFS);
	check_eq(ag_bucket_reset(ro, slot), -EROFS);
	check_eq(ag_agent_delete(ro, "watched"), -EROFS);
	check_eq(ag_rule_del(ro, &r), -EROFS);
	check_eq(ag_config_set_dry_run(ro, true), -EROFS);

	/* Nothing moved. */
	list_agents(fx, rw, &n);
	check_eq(n, 1);
	check_agent(rw, "watched", slot, 10, 20);
	check_range(tokens(rw, slot), 20 - 1e-6, 20);
	check_eq(config(rw).dry_run, 0);
}

/* ---- 7. attach to a bad interface ------------------------------------- */

static void test_attach_bad_interface(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "attach"), true, false, 16, 16);
	struct ag_attach_result res;
	struct ag_link_info *links = NULL;
	size_t n = 1;

	assert_int_equal(if_nametoindex("nonexistent0"), 0);
	check_eq(ag_attach(ctx, "nonexistent0", AG_XDP_AUTO, &res), -ENODEV);
	check_msg("nonexistent0");
	check_eq(ag_attach(ctx, "a/b", AG_XDP_AUTO, &res), -EINVAL);
	check_eq(ag_attach(ctx, "abcdefghijklmnopqrst", AG_XDP_AUTO, &res), -EINVAL);
	check_eq(ag_attach(ctx, "", AG_XDP_AUTO, &res), -EINVAL);

	check_ok(ag_link_list(ctx, &links, &n));
	free(links);
	check_eq(n, 0);
}

/* ---- 8. agent names ---------------------------------------------------- */

static void test_name_validation(void **state)
{
	static const char *const bad[] = { "", "a b", "a/b", "\xc3\xa9", "tab\t", "new\nline",
					   ".", ".." };
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "names"), true, false, 16, 16);
	struct ag_agent_update u = {};
	char n64[AG_NAME_MAX + 1], n65[AG_NAME_MAX + 2];
	struct ag_agent *v, a;
	size_t n, i;

	memset(n64, 'x', AG_NAME_MAX);
	n64[AG_NAME_MAX] = '\0';
	memset(n65, 'y', AG_NAME_MAX + 1);
	n65[AG_NAME_MAX + 1] = '\0';

	check_ok(ag_name_check("a"));
	check_ok(ag_name_check(n64));
	check_ok(ag_name_check("123e4567-e89b-12d3-a456-426614174000"));
	check_ok(ag_name_check("Agent_1.prod:eu-west"));
	check_ok(ag_name_check("..."));
	check_ok(ag_name_check(".a"));
	check_eq(ag_name_check(n65), -EINVAL);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		check_eq(ag_name_check(bad[i]), -EINVAL);

	/* A 64-character name is stored without a terminator: must read back whole. */
	set_agent(ctx, n64, 1, 1);
	check_ok(ag_agent_get(ctx, n64, &a));
	assert_string_equal(a.name, n64);

	check_eq(ag_agent_set(ctx, n65, &u, NULL, NULL), -EINVAL);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		check_eq(ag_agent_set(ctx, bad[i], &u, NULL, NULL), -EINVAL);
	v = list_agents(fx, ctx, &n);
	check_eq(n, 1);
	assert_string_equal(v[0].name, n64);
	check_eq(config(ctx).dirty, 0);
}

/* ---- 9. prefix and port parsing ---------------------------------------- */

static void check_prefix(const char *text, int family, const char *addr, __u8 plen,
			 const char *canon)
{
	struct ag_rule r, again;
	__u8 want[16] = {};
	char buf[AG_PREFIX_STRLEN];

	check_ok(ag_prefix_parse(text, &r));
	check_eq(r.family, family);
	check_eq(r.plen, plen);
	check_eq(r.port, 0);
	assert_int_equal(inet_pton(family, addr, want), 1);
	assert_memory_equal(r.addr, want, sizeof(want));
	ag_prefix_format(&r, buf, sizeof(buf));
	assert_string_equal(buf, canon);
	check_ok(ag_prefix_parse(buf, &again));
	assert_true(same_rule(&r, &again));
}

static void test_prefix_port_parse(void **state)
{
	static const char *const bad[] = { "10.0.0.0/33", "10.0.0.0/", "300.1.1.1",
					   "2001:db8::/129", "abc", "", "10.0.0.0/-1",
					   "10.0.0.0/8x" };
	static const char *const bad_ports[] = { "0", "65536", "-1", "80x", "", " 80" };
	struct ag_rule r;
	__u16 port = 7;
	size_t i;

	check_prefix("10.0.0.0/8", AF_INET, "10.0.0.0", 8, "10.0.0.0/8");
	check_prefix("10.1.2.3", AF_INET, "10.1.2.3", 32, "10.1.2.3/32");
	check_prefix("2001:db8::/32", AF_INET6, "2001:db8::", 32, "2001:db8::/32");
	check_prefix("::/0", AF_INET6, "::", 0, "::/0");
	check_prefix("0.0.0.0/0", AF_INET, "0.0.0.0", 0, "0.0.0.0/0");
	check_prefix("2001:db8::1", AF_INET6, "2001:db8::1", 128, "2001:db8::1/128");

	check_eq(ag_prefix_parse("10.0.0.1/24", &r), -EINVAL);
	check_msg("did you mean 10.0.0.0/24");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (ag_prefix_parse(bad[i], &r) != -EINVAL)
			fail_msg("prefix '%s' was not rejected with -EINVAL", bad[i]);
	}

	check_ok(ag_port_parse("1", &port));
	check_eq(port, 1);
	check_ok(ag_port_parse("65535", &port));
	check_eq(port, 65535);
	for (i = 0; i < sizeof(bad_ports) / sizeof(bad_ports[0]); i++) {
		port = 7;
		if (ag_port_parse(bad_ports[i], &port) != -EINVAL)
			fail_msg("port '%s' was not rejected with -EINVAL", bad_ports[i]);
		check_eq(port, 7);
	}
}

/* ---- 10. rules --------------------------------------------------------- */

static void check_counts(struct ag_ctx *ctx, const __u32 want[AG_RK__MAX])
{
	struct ag_config cfg = config(ctx);
	int k;

	for (k = 0; k < AG_RK__MAX; k++)
		if (cfg.rule_count[k] != want[k])
			fail_msg("rule_count[%d] = %u, expected %u", k, cfg.rule_count[k],
				 want[k]);
	check_eq(cfg.dirty, 0);
}

static void test_rules(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "rules"), true, false, 16, 16);
	struct ag_rule r16 = prefix("10.0.0.0/16", 0), r8 = prefix("10.0.0.0/8", 0),
		       host = prefix("10.0.0.5", 0), web = prefix("10.0.0.6", 443),
		       r6 = prefix("2001:db8::/32", 0), *v;
	__u32 counts[AG_RK__MAX] = {};
	__u32 alice, bob;
	size_t n;

	alice = set_agent(ctx, "alice", 10, 10);
	bob = set_agent(ctx, "bob", 10, 10);

	check_ok(ag_rule_add(ctx, &r16, "alice"));
	check_ok(ag_rule_add(ctx, &r16, "alice")); /* idempotent */
	counts[AG_RK_LPM4] = 1;
	check_counts(ctx, counts);
	check_eq(ag_rule_add(ctx, &r16, "bob"), -EEXIST);
	check_msg("alice");
	check_eq(ag_rule_add(ctx, &r8, "ghost"), -ENOENT);
	v = list_rules(fx, ctx, &n);
	check_eq(n, 1);
	check_rule_slot(v, n, &r16, alice);
	check_counts(ctx, counts);

	/* Same base address, other length: a separate LPM entry. */
	check_ok(ag_rule_add(ctx, &r8, "bob"));
	check_ok(ag_rule_add(ctx, &host, "alice"));
	check_ok(ag_rule_add(ctx, &web, "alice"));
	check_ok(ag_rule_add(ctx, &r6, "alice"));
	counts[AG_RK_LPM4] = 2;
	counts[AG_RK_HOST4] = 1;
	counts[AG_RK_HOST4_PORT] = 1;
	counts[AG_RK_LPM6] = 1;
	check_counts(ctx, counts);
	v = list_rules(fx, ctx, &n);
	check_eq(n, 5);
	check_rule_slot(v, n, &r16, alice);
	check_rule_slot(v, n, &r8, bob);
	check_rule_slot(v, n, &host, alice);
	check_rule_slot(v, n, &web, alice);
	check_rule_slot(v, n, &r6, alice);

	/* Deletion is exact: covered or similar rules are not "the" rule. */
	check_eq(ag_rule_del(ctx, &(struct ag_rule){ .family = AF_INET, .plen = 24,
						     .addr = { 10 } }), -ENOENT);
	check_eq(ag_rule_del(ctx, &(struct ag_rule){ .family = AF_INET, .plen = 32,
						     .addr = { 10, 0, 0, 6 }, .port = 80 }),
		 -ENOENT);
	check_eq(ag_rule_del(ctx, &(struct ag_rule){ .family = AF_INET, .plen = 16,
						     .addr = { 10, 9 } }), -ENOENT);
	check_counts(ctx, counts);

	/* Deleting alice takes her four rules along. */
	check_ok(ag_agent_delete(ctx, "alice"));
	v = list_rules(fx, ctx, &n);
	check_eq(n, 1);
	check_rule_slot(v, n, &r8, bob);
	memset(counts, 0, sizeof(counts));
	counts[AG_RK_LPM4] = 1;
	check_counts(ctx, counts);
	check_eq(ag_rule_del(ctx, &r16), -ENOENT);

	check_ok(ag_rule_del(ctx, &r8));
	list_rules(fx, ctx, &n);
	check_eq(n, 0);
	counts[AG_RK_LPM4] = 0;
	check_counts(ctx, counts);
}

/* ---- 11. a full rule map ----------------------------------------------- */

static void test_rule_map_full(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "rules_full"), true, false, 8, 4);
	struct ag_rule r[5], host = prefix("10.9.9.9", 0), *v;
	__u32 counts[AG_RK__MAX] = {};
	__u32 slot;
	char text[32];
	size_t n;
	int i;

	slot = set_agent(ctx, "a", 10, 10);
	for (i = 0; i < 5; i++) {
		snprintf(text, sizeof(text), "10.%d.0.0/16", i);
		r[i] = prefix(text, 0);
	}
	for (i = 0; i < 4; i++)
		check_ok(ag_rule_add(ctx, &r[i], "a"));
	check_eq(ag_rule_add(ctx, &r[4], "a"), -ENOSPC);
	check_msg(AG_MAP_RULES_V4);

	counts[AG_RK_LPM4] = 4;
	check_counts(ctx, counts);
	v = list_rules(fx, ctx, &n);
	check_eq(n, 4);
	for (i = 0; i < 4; i++)
		check_rule_slot(v, n, &r[i], slot);
	check_eq(rule_index(v, n, &r[4]), -1);

	/* Another map still has room. */
	check_ok(ag_rule_add(ctx, &host, "a"));
	counts[AG_RK_HOST4] = 1;
	check_counts(ctx, counts);
}

/* Host maps fill up like the others (not preallocated, the count still
 * bounds them); host maps pinned preallocated by an older version are
 * used as they are. */
static void test_host_maps_prealloc_or_not(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "hosts_prealloc"), true, false, 8, 4);
	struct ag_rule h[5], *v;
	struct bpf_map_info info;
	char text[32], path[PATH_MAX + 64];
	size_t n;
	int i, old;

	set_agent(ctx, "a", 10, 10);
	for (i = 0; i < 5; i++) {
		snprintf(text, sizeof(text), "10.0.0.%d", i + 1);
		h[i] = prefix(text, 0);
	}
	for (i = 0; i < 4; i++)
		check_ok(ag_rule_add(ctx, &h[i], "a"));
	check_eq(ag_rule_add(ctx, &h[4], "a"), -ENOSPC);
	check_msg(AG_MAP_HOSTS_V4);
	map_info_of(fx_map(fx, AG_MAP_HOSTS_V4), &info);
	check_eq(info.map_flags & BPF_F_NO_PREALLOC, BPF_F_NO_PREALLOC);
	fx_close(fx, ctx);

	/* The older layout: ag_hosts_v6 preallocated, same key and value. */
	old = fx_fd(fx, bpf_map_create(BPF_MAP_TYPE_HASH, AG_MAP_HOSTS_V6,
				       sizeof(struct ag_host6_key), sizeof(struct ag_rule_val), 4,
				       NULL));
	assert_true(old >= 0);
	snprintf(path, sizeof(path), "%s/%s", fx->root, AG_MAP_HOSTS_V6);
	check_ok(unlink(path));
	check_ok(bpf_obj_pin(old, path));
	ctx = fx_open(fx, fx->root, true, false, 0, 0);
	{
		struct ag_rule r6 = prefix("2001:db8::7", 443);

		check_ok(ag_rule_add(ctx, &r6, "a"));
		v = list_rules(fx, ctx, &n);
		check_eq(n, 5);
		assert_true(rule_index(v, n, &r6) >= 0);
	}
	map_info_of(fx_map(fx, AG_MAP_HOSTS_V6), &info);
	check_eq(info.map_flags & BPF_F_NO_PREALLOC, 0); /* left as it was */
}

/* ---- 12. bucket operations through the mmap --------------------------- */

static void test_bucket_ops(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "buckets"), true, false, 16, 16);
	struct ag_agent_update rate = { .fields = AG_SET_RATE, .rate = 0.5 };
	struct ag_agent_update burst = { .fields = AG_SET_BURST, .burst = 4 };
	struct ag_consume_result res;
	double left = -1, before, after;
	__u32 slot;

	slot = set_agent(ctx, "b", 1, 10);
	check_range(tokens(ctx, slot), 10 - 1e-6, 10);

	check_ok(ag_bucket_consume(ctx, slot, 4, &res));
	assert_true(res.allowed);
	check_range(res.remaining, 6 - 1e-6, 6 + 1e-6);
	check_eq(res.retry_after_ns, 0);

	check_ok(ag_bucket_consume(ctx, slot, 7, &res));
	assert_false(res.allowed);
	check_range(res.retry_after_ns, 0.9e9, 1.1e9);
	check_range(res.remaining, 6 - 1e-6, 6.1);

	check_eq(ag_bucket_consume(ctx, slot, 11, &res), -EINVAL);
	check_msg("burst");

	check_ok(ag_bucket_drain(ctx, slot, 100, &left));
	check_range(left, 0, 0);
	check_range(tokens(ctx, slot), 0, 0.1);
	/* Empty, not in debt: the next token is one interval away. */
	check_ok(ag_bucket_consume(ctx, slot, 1, &res));
	assert_false(res.allowed);
	check_range(res.retry_after_ns, 0.9e9, 1.1e9);

	check_ok(ag_bucket_reset(ctx, slot));
	check_range(tokens(ctx, slot), 10 - 1e-6, 10);
	check_ok(ag_bucket_fill(ctx, slot, 3.5));
	check_range(tokens(ctx, slot), 3.5 - 1e-6, 3.6);

	/* A rate change carries the level over. */
	before = tokens(ctx, slot);
	check_ok(ag_agent_set(ctx, "b", &rate, NULL, NULL));
	after = tokens(ctx, slot);
	check_range(after - before, -0.01, 0.01);
	check_agent(ctx, "b", slot, 0.5, 10);

	/* A lower burst caps the level. */
	check_ok(ag_bucket_reset(ctx, slot));
	check_ok(ag_agent_set(ctx, "b", &burst, NULL, NULL));
	check_range(tokens(ctx, slot), 4 - 1e-6, 4);
	check_agent(ctx, "b", slot, 0.5, 4);
	check_eq(ag_bucket_consume(ctx, slot, 5, &res), -EINVAL);
}

/* ---- 13. repair of an interrupted change ----------------------------- */

static void set_dirty(int cfg_fd, __u32 bits)
{
	struct ag_config cfg;
	__u32 zero = 0;

	check_ok(bpf_map_lookup_elem(cfg_fd, &zero, &cfg));
	cfg.dirty |= bits;
	check_ok(bpf_map_update_elem(cfg_fd, &zero, &cfg, BPF_ANY));
}

static __u32 free_slot(int names_fd, __u32 max)
{
	struct ag_agent_info info;
	__u32 slot;

	for (slot = 0; slot < max; slot++)
		if (!bpf_map_lookup_elem(names_fd, &slot, &info) && !info.name[0])
			return slot;
	fail_msg("no free slot");
	return 0;
}

static void test_repair_half_created(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "repair_create"), true, false, 8, 16);
	struct ag_agent_info torn = { .name = "torn", .rate_mtps = 1000, .burst = 10 };
	int names = fx_map(fx, AG_MAP_NAMES), cfg = fx_map(fx, AG_MAP_CONFIG);
	struct ag_agent *v, a;
	char name[16];
	__u32 keep;
	size_t n;
	int i;

	keep = set_agent(ctx, "keep", 5, 20);
	/* A record claimed, never made LIVE: a creation cut short. */
	torn.slot = free_slot(names, 8);
	check_ok(bpf_map_update_elem(names, &torn.slot, &torn, BPF_ANY));
	set_dirty(cfg, AG_DIRTY_AGENTS);
	/* Not an agent yet: neither listed nor reachable by name. */
	v = list_agents(fx, ctx, &n);
	check_eq(n, 1);
	assert_false(agent_listed(v, n, "torn"));
	check_eq(ag_agent_get(ctx, "torn", &a), -ENOENT);

	g_log[0] = '\0';
	ag_set_log(capture_log);
	set_agent(ctx, "other", 1, 1);
	if (!strstr(g_log, "torn"))
		fail_msg("no repair warning naming 'torn' (log: %s)", g_log);

	v = list_agents(fx, ctx, &n);
	check_eq(n, 2);
	assert_false(agent_listed(v, n, "torn"));
	check_ok(bpf_map_lookup_elem(names, &torn.slot, &torn));
	if (torn.name[0])
		assert_string_not_equal(torn.name, "torn"); /* freed (maybe claimed again) */
	check_eq(config(ctx).dirty, 0);
	check_agent(ctx, "keep", keep, 5, 20);

	/* Every slot, the torn one included, can be claimed again. */
	for (i = 0; i < 6; i++) {
		snprintf(name, sizeof(name), "fill-%d", i);
		set_agent(ctx, name, 1, 1);
	}
	list_agents(fx, ctx, &n);
	check_eq(n, 8);
	check_eq(ag_agent_set(ctx, "fill-6", &(struct ag_agent_update){}, NULL, NULL), -ENOSPC);
}

/* The name index's cells (abi.h): the header block, then the cells. */
struct index_copy {
	struct ag_index_hdr hdr;
	__u32 *cell;
};

static struct index_copy read_index(struct fx *fx, int fd)
{
	struct index_copy c;
	struct ag_index_blk blk;
	__u32 k;

	k = 0;
	check_ok(bpf_map_lookup_elem(fd, &k, &blk));
	memcpy(&c.hdr, &blk, sizeof(c.hdr));
	c.cell = fx_mem(fx, calloc(c.hdr.cells, sizeof(__u32)));
	for (k = 0; k < c.hdr.cells / AG_INDEX_PER_BLK; k++) {
		__u32 key = k + 1;

		check_ok(bpf_map_lookup_elem(fd, &key, &blk));
		memcpy(&c.cell[k * AG_INDEX_PER_BLK], &blk, sizeof(blk));
	}
	return c;
}

static void write_cell(int fd, __u32 i, __u32 cell)
{
	struct ag_index_blk blk;
	__u32 key = 1 + i / AG_INDEX_PER_BLK;

	check_ok(bpf_map_lookup_elem(fd, &key, &blk));
	blk.cell[i % AG_INDEX_PER_BLK] = cell;
	check_ok(bpf_map_update_elem(fd, &key, &blk, BPF_ANY));
}

/* Cells holding slot + 1 (any tag). */
static int cells_of(const struct index_copy *c, __u32 slot)
{
	int n = 0;
	__u32 i;

	for (i = 0; i < c->hdr.cells; i++)
		n += c->cell[i] && c->cell[i] != AG_INDEX_TOMB &&
		     (c->cell[i] & AG_INDEX_SLOT_MASK) == slot + 1;
	return n;
}

static __u32 empty_cell(const struct index_copy *c, __u32 from)
{
	__u32 i;

	for (i = from; i < c->hdr.cells; i++)
		if (!c->cell[i])
			return i;
	fail_msg("no empty cell");
	return 0;
}

static void test_repair_stale_index(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "repair_index"), true, false, 8, 16);
	int names = fx_map(fx, AG_MAP_NAMES), index = fx_map(fx, AG_MAP_INDEX),
	    cfg = fx_map(fx, AG_MAP_CONFIG);
	struct index_copy c;
	struct ag_agent a;
	__u32 keep, gslot, i, j;
	bool created = false;
	size_t n;

	keep = set_agent(ctx, "keep", 5, 20);
	gslot = free_slot(names, 8);
	c = read_index(fx, index);
	check_eq(c.hdr.cells, AG_INDEX_CELLS(8));
	check_eq(c.hdr.used, 1);
	check_eq(cells_of(&c, keep), 1);
	/* Damage: a cell for a free slot, a second cell for keep's slot, and
	 * keep's own cell removed (keep then only reachable through a scan). */
	i = empty_cell(&c, 0);
	write_cell(index, i, gslot + 1);
	j = empty_cell(&c, i + 1);
	write_cell(index, j, 0x7fu << AG_INDEX_SLOT_BITS | (keep + 1));
	set_dirty(cfg, AG_DIRTY_AGENTS);
	check_eq(ag_agent_get(ctx, "ghost", &a), -ENOENT);

	/* Any locked mutation repairs first: the index is built again. */
	check_ok(ag_config_set_dry_run(ctx, false));
	c = read_index(fx, index);
	check_eq(cells_of(&c, gslot), 0);
	check_eq(cells_of(&c, keep), 1);
	check_eq(c.hdr.used, 1);
	check_eq(c.hdr.tombs, 0);
	check_eq(c.hdr.seq % 2, 0);
	check_eq(config(ctx).dirty, 0);
	check_agent(ctx, "keep", keep, 5, 20);
	list_agents(fx, ctx, &n);
	check_eq(n, 1);

	/* The names are free again. */
	check_ok(ag_agent_set(ctx, "ghost", &(struct ag_agent_update){}, NULL, &created));
	assert_true(created);
}

/* Agents made and removed many times over in a small table: removed
 * entries are cleared away, every agent stays reachable, no other is. */
static void test_index_churn(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "index_churn"), true, false, 32, 16);
	int index = fx_map(fx, AG_MAP_INDEX);
	bool live[64] = {};
	struct index_copy c;
	struct ag_agent a;
	char name[32];
	unsigned int seed = 7, round, k, n_live = 0;

	for (round = 0; round < 3000; round++) {
		k = rand_r(&seed) % 64;
		snprintf(name, sizeof(name), "churn-%u", k);
		if (live[k]) {
			check_ok(ag_agent_delete(ctx, name));
			live[k] = false;
			n_live--;
		} else if (n_live < 32) {
			set_agent(ctx, name, 1, 1);
			live[k] = true;
			n_live++;
		}
		if (round % 97)
			continue;
		for (k = 0; k < 64; k++) {
			snprintf(name, sizeof(name), "churn-%u", k);
			check_eq(ag_agent_get(ctx, name, &a), live[k] ? 0 : -ENOENT);
		}
	}
	c = read_index(fx, index);
	check_eq(c.hdr.used, n_live);
	assert_true(c.hdr.tombs <= c.hdr.cells / 4);
	check_eq(c.hdr.seq % 2, 0);
	assert_true(c.hdr.seq > 0); /* removed entries were cleared at least once */
}

/* A writer that died inside a record or inside a rebuild leaves its seq
 * odd: readers do not wait for ever, the next locked change repairs. */
static void test_index_stuck_writer(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "index_stuck"), true, false, 8, 16);
	int names = fx_map(fx, AG_MAP_NAMES), index = fx_map(fx, AG_MAP_INDEX),
	    cfg = fx_map(fx, AG_MAP_CONFIG);
	struct ag_agent_info rec;
	struct ag_index_blk blk;
	struct ag_index_hdr hdr;
	struct ag_agent a;
	__u32 one, two, zero = 0;

	one = set_agent(ctx, "one", 1, 1);
	two = set_agent(ctx, "two", 2, 2);
	check_ok(bpf_map_lookup_elem(names, &one, &rec));
	rec.seq |= 1;
	check_ok(bpf_map_update_elem(names, &one, &rec, BPF_ANY));
	check_eq(ag_agent_get(ctx, "one", &a), -ENOENT); /* its record is unreadable */
	check_agent(ctx, "two", two, 2, 2);

	/* The index held odd: lookups fall back to reading the records. */
	check_ok(bpf_map_lookup_elem(index, &zero, &blk));
	memcpy(&hdr, &blk, sizeof(hdr));
	hdr.seq |= 1;
	memcpy(&blk, &hdr, sizeof(hdr));
	check_ok(bpf_map_update_elem(index, &zero, &blk, BPF_ANY));
	check_agent(ctx, "two", two, 2, 2);
	check_eq(ag_agent_get(ctx, "nobody", &a), -ENOENT);

	set_dirty(cfg, AG_DIRTY_AGENTS);
	check_ok(ag_config_set_dry_run(ctx, false));
	check_agent(ctx, "one", one, 1, 1);
	check_agent(ctx, "two", two, 2, 2);
	check_eq(read_index(fx, index).hdr.seq % 2, 0);

	/* A damaged header (a size that is not the index's): readers scan
	 * the records, the next writer builds the index again. */
	check_ok(bpf_map_lookup_elem(index, &zero, &blk));
	memcpy(&hdr, &blk, sizeof(hdr));
	hdr.cells = 3;
	memcpy(&blk, &hdr, sizeof(hdr));
	check_ok(bpf_map_update_elem(index, &zero, &blk, BPF_ANY));
	check_agent(ctx, "one", one, 1, 1);
	check_eq(ag_agent_get(ctx, "nobody", &a), -ENOENT);
	set_agent(ctx, "three", 3, 3);
	check_eq(read_index(fx, index).hdr.cells, AG_INDEX_CELLS(8));
	check_eq(read_index(fx, index).hdr.used, 3);
	check_agent(ctx, "one", one, 1, 1);
	check_agent(ctx, "two", two, 2, 2);
}

struct churn_arg {
	struct ag_ctx *ctx;
	atomic_bool stop;
	atomic_long misses, reads;
};

static void *steady_reader(void *p)
{
	struct churn_arg *c = p;
	struct ag_agent a;
	char name[32];
	unsigned int k = 0;

	while (!atomic_load(&c->stop)) {
		snprintf(name, sizeof(name), "steady-%u", k++ % 8);
		if (ag_agent_get(c->ctx, name, &a) || strcmp(a.name, name))
			atomic_fetch_add(&c->misses, 1);
		atomic_fetch_add(&c->reads, 1);
	}
	return NULL;
}

/* Readers on other threads never miss an agent that stays, while others
 * come and go around it and the index is rebuilt under them. */
static void test_index_readers_during_churn(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "index_readers"), true, false, 16, 16);
	struct ag_ctx *rd = fx_open(fx, fx->root, false, true, 0, 0);
	int index = fx_map(fx, AG_MAP_INDEX);
	struct churn_arg c = { .ctx = rd };
	pthread_t t[2];
	__u32 seq0;
	char name[32];
	int i, k;

	for (k = 0; k < 8; k++) {
		snprintf(name, sizeof(name), "steady-%d", k);
		set_agent(ctx, name, 1, 1);
	}
	seq0 = read_index(fx, index).hdr.seq;
	for (i = 0; i < 2; i++)
		check_eq(pthread_create(&t[i], NULL, steady_reader, &c), 0);
	for (i = 0; i < 4000; i++) {
		/* New names every round: their removed cells pile up. */
		snprintf(name, sizeof(name), "passing-%d-%d", i / 16, i % 8);
		if (i % 16 < 8)
			set_agent(ctx, name, 1, 1);
		else
			check_ok(ag_agent_delete(ctx, name));
	}
	atomic_store(&c.stop, true);
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	check_eq(atomic_load(&c.misses), 0);
	assert_true(atomic_load(&c.reads) > 0);
	assert_true(read_index(fx, index).hdr.seq > seq0 + 2); /* rebuilt under them */
}

/* Pins of the version before the name index: ag_names and ag_index were
 * hashes. Opening to create upgrades them in place; other opens refuse. */
struct v1_info {
	char name[AG_NAME_MAX];
	__u64 rate_mtps, burst, created_ns;
	__u32 unit, flags, slot, parent;
};

static void pin_v1(struct fx *fx, const char *map, int fd)
{
	char path[PATH_MAX + 64];

	snprintf(path, sizeof(path), "%s/%s", fx->root, map);
	check_ok(unlink(path));
	check_ok(bpf_obj_pin(fd, path));
}

static void test_upgrade_names_hash(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "upgrade_names"), true, false, 8, 16);
	int names, index, cfg;
	struct v1_info rec;
	struct ag_name_key key;
	struct ag_agent a, *v;
	struct ag_ctx *again = NULL;
	__u32 one, two;
	size_t n;

	one = set_agent(ctx, "one", 3, 7);
	two = set_agent(ctx, "two", 4, 8); /* becomes a creation cut short */
	check_ok(ag_agent_set(ctx, "one",
			      &(struct ag_agent_update){ .fields = AG_SET_PINNED, .pinned = true },
			      NULL, NULL));
	fx_close(fx, ctx);
	names = fx_fd(fx, bpf_map_create(BPF_MAP_TYPE_HASH, "ag_names", 4, sizeof(rec), 8, NULL));
	index = fx_fd(fx, bpf_map_create(BPF_MAP_TYPE_HASH, "ag_index", AG_NAME_MAX, 4, 8, NULL));
	assert_true(names >= 0 && index >= 0);
	memset(&rec, 0, sizeof(rec));
	strcpy(rec.name, "one");
	rec.rate_mtps = 3000, rec.burst = 7, rec.unit = AG_UNIT_PPS, rec.slot = one;
	rec.flags = AG_AGENT_PINNED;
	check_ok(bpf_map_update_elem(names, &one, &rec, BPF_ANY));
	memset(&key, 0, sizeof(key));
	strcpy(key.name, "one");
	check_ok(bpf_map_update_elem(index, &key, &one, BPF_ANY));
	memset(&rec, 0, sizeof(rec));
	strcpy(rec.name, "two");
	rec.rate_mtps = 4000, rec.burst = 8, rec.unit = AG_UNIT_PPS, rec.slot = two;
	check_ok(bpf_map_update_elem(names, &two, &rec, BPF_ANY));
	pin_v1(fx, AG_MAP_NAMES, names);
	pin_v1(fx, AG_MAP_INDEX, index);

	/* Not an opening that creates: refused, with what to do. */
	assert_true(try_open(fx->root, false, false, 0, 0, &again) < 0);
	check_msg("older agentgate");
	check_msg("upgrades it in place");

	ctx = fx_open(fx, fx->root, true, false, 0, 0);
	check_ok(ag_agent_get(ctx, "one", &a));
	check_eq(a.slot, one);
	check_range(a.rate, 3 - 1e-9, 3 + 1e-9);
	check_eq(a.burst, 7);
	assert_true(a.pinned);
	check_eq(ag_agent_get(ctx, "two", &a), -ENOENT); /* was never indexed */
	v = list_agents(fx, ctx, &n);
	check_eq(n, 1);
	assert_true(agent_listed(v, n, "one"));
	/* The upgrade set the journal bit: the next change's repair frees
	 * two's slot. */
	cfg = fx_map(fx, AG_MAP_CONFIG);
	{
		struct ag_config c;
		__u32 zero = 0;

		check_ok(bpf_map_lookup_elem(cfg, &zero, &c));
		check_eq(c.dirty & AG_DIRTY_AGENTS, AG_DIRTY_AGENTS);
	}
	set_agent(ctx, "three", 1, 1);
	check_eq(config(ctx).dirty, 0);
	check_agent(ctx, "one", one, 3, 7);
	list_agents(fx, ctx, &n);
	check_eq(n, 2);
	{
		struct ag_agent_info now;

		check_ok(bpf_map_lookup_elem(fx_map(fx, AG_MAP_NAMES), &two, &now));
		assert_string_not_equal(now.name, "two"); /* freed, maybe "three" now */
	}
	{
		struct bpf_map_info info;

		map_info_of(fx_map(fx, AG_MAP_NAMES), &info);
		check_eq(info.type, BPF_MAP_TYPE_ARRAY);
		map_info_of(fx_map(fx, AG_MAP_INDEX), &info);
		check_eq(info.type, BPF_MAP_TYPE_ARRAY);
		check_eq(info.max_entries, AG_INDEX_BLKS(8));
	}
}

/* ---- 13b. the per-length index of trie rules --------------------------- */

/* Every trie rule, and nothing else, in its family's hash under the trie
 * key; ag_probes counts them by length and port. */
static int open_map(const char *root, const char *map)
{
	char path[PATH_MAX + 64];

	snprintf(path, sizeof(path), "%s/%s", root, map);
	return bpf_obj_get(path);
}

static bool prefix_index_consistent(struct fx *fx, struct ag_ctx *ctx)
{
	int hash[2] = { open_map(fx->root, AG_MAP_PREFIXES_V4),
			open_map(fx->root, AG_MAP_PREFIXES_V6) };
	int probes = open_map(fx->root, AG_MAP_PROBES);
	static struct ag_probes pr, want;
	struct ag_rule *rules = NULL;
	size_t n = 0, i, trie_rules[2] = { 0, 0 };
	__u32 zero = 0;
	bool ok;
	int fam;

	memset(&want, 0, sizeof(want));
	ok = hash[0] >= 0 && hash[1] >= 0 && probes >= 0 && !ag_rule_list(ctx, &rules, &n);
	for (i = 0; i < n && ok; i++) {
		const struct ag_rule *r = &rules[i];
		struct { __u32 prefixlen; __be32 port; __u8 addr[16]; } k = {};
		struct ag_rule_val v;

		fam = r->family == AF_INET6;
		if (r->plen == (fam ? 128 : 32))
			continue; /* host rules are not in the trie */
		trie_rules[fam]++;
		want.count[fam][r->port != 0][r->plen]++;
		k.prefixlen = 32 + r->plen;
		k.port = htonl(r->port);
		memcpy(k.addr, r->addr, fam ? 16 : 4);
		ok = !bpf_map_lookup_elem(hash[fam], &k, &v) && v.slot == r->slot &&
		     v.plen == r->plen;
	}
	free(rules);
	for (fam = 0; fam < 2 && ok; fam++) {
		__u8 key[24], next[24];
		size_t entries = 0;
		bool first = true;

		while (!bpf_map_get_next_key(hash[fam], first ? NULL : key, next)) {
			first = false;
			memcpy(key, next, sizeof(key));
			entries++;
		}
		ok = entries == trie_rules[fam];
	}
	ok = ok && !bpf_map_lookup_elem(probes, &zero, &pr) &&
	     !memcmp(pr.count, want.count, sizeof(want.count));
	for (i = 0; i < 2; i++)
		if (hash[i] >= 0)
			close(hash[i]);
	if (probes >= 0)
		close(probes);
	return ok;
}

/* Pins made before the index existed: the index maps are created empty
 * beside rules in the tries; the next locked change builds the index. */
static void test_prefix_index_upgrade(void **state)
{
	struct fx *fx = *state;
	const char *root = fx_root(fx, "index_upgrade");
	struct ag_ctx *ctx = fx_open(fx, root, true, false, 8, 16);
	static const char *const gone[] = { AG_MAP_PREFIXES_V4, AG_MAP_PREFIXES_V6, AG_MAP_PROBES };
	struct ag_rule r24 = prefix("10.2.3.0/24", 0), r16 = prefix("10.1.0.0/16", 443),
		       r48 = prefix("2001:db8:1::/48", 0);
	char path[PATH_MAX + 64];
	size_t i;

	set_agent(ctx, "a", 5, 5);
	check_ok(ag_rule_add(ctx, &r24, "a"));
	check_ok(ag_rule_add(ctx, &r16, "a"));
	check_ok(ag_rule_add(ctx, &r48, "a"));
	fx_close(fx, ctx);
	for (i = 0; i < sizeof(gone) / sizeof(gone[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", root, gone[i]);
		check_ok(unlink(path));
	}
	ctx = fx_open(fx, root, true, false, 0, 0);
	check_eq(config(ctx).dirty, AG_DIRTY_RULES);
	check_eq(ag_prefix_index_active(ctx, AF_INET), 0);
	check_ok(ag_config_set_dry_run(ctx, false)); /* any locked change */
	check_eq(config(ctx).dirty, 0);
	assert_true(prefix_index_consistent(fx, ctx));
	check_ok(ag_prefix_index_set(ctx, AG_PREFIX_INDEX_HASH));
	check_eq(ag_prefix_index_active(ctx, AF_INET), 1);
	check_eq(ag_prefix_index_active(ctx, AF_INET6), 1);
}

/* The hash holding a rule the trie lost, missing one it has, and counts
 * that disagree: a change left in the journal rebuilds all of it. */
static void test_repair_prefix_index(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "repair_prefix_index"), true, false, 8, 16);
	int hash = fx_map(fx, AG_MAP_PREFIXES_V4), cfg = fx_map(fx, AG_MAP_CONFIG);
	struct ag_lpm4_key bogus = { .prefixlen = 32 + 20, .addr = { 10, 9, 0, 0 } },
			   real = { .prefixlen = 32 + 24, .addr = { 10, 2, 3, 0 } };
	struct ag_rule_val v = { .slot = 0, .plen = 20 };
	struct ag_rule r24 = prefix("10.2.3.0/24", 0), r8 = prefix("10.0.0.0/8", 0);
	__u32 slot;

	slot = set_agent(ctx, "a", 5, 5);
	v.slot = slot;
	check_ok(ag_rule_add(ctx, &r24, "a"));
	check_ok(ag_rule_add(ctx, &r8, "a"));
	check_ok(ag_prefix_index_set(ctx, AG_PREFIX_INDEX_HASH));
	check_eq(ag_prefix_index_active(ctx, AF_INET), 1);
	check_ok(bpf_map_update_elem(hash, &bogus, &v, BPF_NOEXIST));
	check_ok(bpf_map_delete_elem(hash, &real));
	assert_false(prefix_index_consistent(fx, ctx));
	set_dirty(cfg, AG_DIRTY_RULES);
	check_ok(ag_config_set_dry_run(ctx, false));
	assert_true(prefix_index_consistent(fx, ctx));
	check_eq(ag_prefix_index_active(ctx, AF_INET), 1);

	/* Deleting keeps it so, down to no rule at all. */
	check_ok(ag_rule_del(ctx, &r24));
	assert_true(prefix_index_consistent(fx, ctx));
	check_ok(ag_agent_delete(ctx, "a"));
	assert_true(prefix_index_consistent(fx, ctx));
}

/* AUTO walks the trie for a few rules of many lengths and probes the
 * hashes for many rules of one length. */
static void test_prefix_index_auto(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "index_auto"), true, false, 8, 64);
	char text[32];
	int i;

	set_agent(ctx, "a", 5, 5);
	for (i = 0; i < 3; i++) {
		struct ag_rule r;

		snprintf(text, sizeof(text), "10.0.0.0/%d", 8 + 4 * i);
		r = prefix(text, 0);
		check_ok(ag_rule_add(ctx, &r, "a"));
	}
	check_eq(ag_prefix_index_active(ctx, AF_INET), 0);
	for (i = 0; i < 3; i++) {
		struct ag_rule r;

		snprintf(text, sizeof(text), "10.0.0.0/%d", 8 + 4 * i);
		r = prefix(text, 0);
		check_ok(ag_rule_del(ctx, &r));
	}
	for (i = 0; i < 32; i++) {
		struct ag_rule r;

		snprintf(text, sizeof(text), "10.%d.0.0/16", i);
		r = prefix(text, 0);
		check_ok(ag_rule_add(ctx, &r, "a"));
	}
	check_eq(ag_prefix_index_active(ctx, AF_INET), 1);
	assert_true(prefix_index_consistent(fx, ctx));
}

/* ---- 13b2. swapping an agent's rules in one pass (a feed) ----------------- */

/* The real rules by kind, counted from the list. */
static void count_listed(const struct ag_rule *v, size_t n, __u32 counts[AG_RK__MAX])
{
	size_t i;

	memset(counts, 0, AG_RK__MAX * sizeof(counts[0]));
	for (i = 0; i < n; i++) {
		bool host = v[i].plen == (v[i].family == AF_INET ? 32 : 128);
		int k = v[i].family == AF_INET ? (host ? AG_RK_HOST4 : AG_RK_LPM4) :
						 (host ? AG_RK_HOST6 : AG_RK_LPM6);

		counts[k + (v[i].port != 0)]++;
	}
}

/* ag_config's counts are the real ones, the journal bit clear, and the
 * probe index holds exactly the trie rules. */
static void check_swap_settled(struct fx *fx, struct ag_ctx *ctx)
{
	__u32 counts[AG_RK__MAX];
	struct ag_rule *v;
	size_t n;

	v = list_rules(fx, ctx, &n);
	count_listed(v, n, counts);
	check_counts(ctx, counts);
	assert_true(prefix_index_consistent(fx, ctx));
}

/* The same rules for the same slots, in whatever order. */
static void check_same_rules(const struct ag_rule *a, size_t na, const struct ag_rule *b,
			     size_t nb)
{
	size_t i;

	check_eq(nb, na);
	for (i = 0; i < na; i++)
		check_rule_slot(b, nb, &a[i], a[i].slot);
}

static void test_rules_swap(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "rules_swap"), true, false, 8, 32);
	struct ag_rule kept = prefix("10.1.0.0/16", 0), r2 = prefix("10.2.0.0/16", 0),
		       h1 = prefix("192.0.2.1", 0), r6 = prefix("2001:db8::/32", 0),
		       h6 = prefix("2001:db8::1", 0), web = prefix("10.5.0.0/16", 443),
		       bobs = prefix("10.9.0.0/16", 0), bobs_host = prefix("192.0.2.9", 0),
		       r3 = prefix("10.3.0.0/16", 0), absent = prefix("10.4.0.0/16", 0),
		       r48 = prefix("2001:db8:1::/48", 0), *v, *before;
	struct ag_rules_swap_result res;
	__u32 alice, bob, counts[AG_RK__MAX] = {};
	__u8 st[8];
	size_t n, nb;

	alice = set_agent(ctx, "alice", 10, 10);
	bob = set_agent(ctx, "bob", 10, 10);
	check_ok(ag_prefix_index_set(ctx, AG_PREFIX_INDEX_HASH));
	check_ok(ag_rule_add(ctx, &kept, "alice"));
	check_ok(ag_rule_add(ctx, &bobs, "bob"));
	check_ok(ag_rule_add(ctx, &bobs_host, "bob"));

	/* In: alice's rule left, bob's left to him, the rest added. */
	{
		struct ag_rule add[] = { kept, r2, h1, r6, h6, web, bobs };
		static const __u8 want[] = { AG_SWAP_KEPT,  AG_SWAP_ADDED, AG_SWAP_ADDED,
					     AG_SWAP_ADDED, AG_SWAP_ADDED, AG_SWAP_ADDED,
					     AG_SWAP_CONFLICT };
		size_t i;

		memset(st, 0xee, sizeof(st));
		check_ok(ag_rules_swap(ctx, "alice", add, 7, NULL, 0, st, &res));
		for (i = 0; i < 7; i++)
			if (st[i] != want[i])
				fail_msg("state[%zu] = %u, expected %u", i, st[i], want[i]);
		check_eq(st[7], 0xee); /* n_add bytes, no more */
	}
	check_eq(res.added, 5);
	check_eq(res.removed, 0);
	check_eq(res.conflicts, 1);
	v = list_rules(fx, ctx, &n);
	check_eq(n, 8);
	check_rule_slot(v, n, &kept, alice);
	check_rule_slot(v, n, &r2, alice);
	check_rule_slot(v, n, &h1, alice);
	check_rule_slot(v, n, &r6, alice);
	check_rule_slot(v, n, &h6, alice);
	check_rule_slot(v, n, &web, alice);
	check_rule_slot(v, n, &bobs, bob);
	check_rule_slot(v, n, &bobs_host, bob);
	counts[AG_RK_LPM4] = 3;
	counts[AG_RK_LPM4_PORT] = 1;
	counts[AG_RK_HOST4] = 2;
	counts[AG_RK_LPM6] = 1;
	counts[AG_RK_HOST6] = 1;
	check_counts(ctx, counts);
	check_swap_settled(fx, ctx);
	check_eq(ag_prefix_index_active(ctx, AF_INET), 1);
	check_eq(ag_prefix_index_active(ctx, AF_INET6), 1);

	/* In, then out: only alice's own rules leave; bob's, and one that is
	 * nobody's, are not hers to delete. */
	{
		struct ag_rule add[] = { r3, r2, r48 };
		struct ag_rule del[] = { kept, h1, bobs, bobs_host, absent, r6, web };

		check_ok(ag_rules_swap(ctx, "alice", add, 3, del, 7, st, &res));
		check_eq(st[0], AG_SWAP_ADDED);
		check_eq(st[1], AG_SWAP_KEPT);
		check_eq(st[2], AG_SWAP_ADDED);
	}
	check_eq(res.added, 2);
	check_eq(res.removed, 4);
	check_eq(res.conflicts, 0);
	v = list_rules(fx, ctx, &n);
	check_eq(n, 6);
	check_rule_slot(v, n, &r2, alice);
	check_rule_slot(v, n, &r3, alice);
	check_rule_slot(v, n, &h6, alice);
	check_rule_slot(v, n, &r48, alice);
	check_rule_slot(v, n, &bobs, bob);
	check_rule_slot(v, n, &bobs_host, bob);
	check_eq(rule_index(v, n, &kept), -1);
	check_eq(rule_index(v, n, &absent), -1);
	memset(counts, 0, sizeof(counts));
	counts[AG_RK_LPM4] = 3;
	counts[AG_RK_HOST4] = 1;
	counts[AG_RK_LPM6] = 1;
	counts[AG_RK_HOST6] = 1;
	check_counts(ctx, counts);
	check_swap_settled(fx, ctx);
	check_eq(ag_prefix_index_active(ctx, AF_INET), 1);
	check_eq(ag_prefix_index_active(ctx, AF_INET6), 1);

	/* Out only, no state wanted: the last trie rule of IPv6 leaves. */
	check_ok(ag_rules_swap(ctx, "alice", NULL, 0, &r48, 1, NULL, &res));
	check_eq(res.added, 0);
	check_eq(res.removed, 1);
	counts[AG_RK_LPM6] = 0;
	check_counts(ctx, counts);
	check_swap_settled(fx, ctx);

	/* Refused before anything changes: no such agent, a bad rule. */
	before = list_rules(fx, ctx, &nb);
	check_eq(ag_rules_swap(ctx, "ghost", &r48, 1, &r2, 1, NULL, &res), -ENOENT);
	{
		struct ag_rule bad = r3;

		bad.addr[3] = 1; /* host bits */
		check_eq(ag_rules_swap(ctx, "alice", &r48, 1, &bad, 1, NULL, &res), -EINVAL);
		check_eq(ag_rules_swap(ctx, "alice", &bad, 1, NULL, 0, NULL, &res), -EINVAL);
		bad = r48;
		bad.plen = 129;
		check_eq(ag_rules_swap(ctx, "alice", &bad, 1, NULL, 0, NULL, &res), -EINVAL);
	}
	v = list_rules(fx, ctx, &n);
	check_same_rules(before, nb, v, n);
	check_counts(ctx, counts);
	check_swap_settled(fx, ctx);
}

/* A swap that fills a rule map takes back what it inserted and deletes
 * nothing: the rules are exactly as before, the counts exact and the
 * journal bit clear at once (as ag_rule_add on a full map leaves them). */
static void test_rules_swap_full(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "rules_swap_full"), true, false, 8, 4);
	struct ag_rule a0 = prefix("10.0.0.0/16", 0), a1 = prefix("10.1.0.0/16", 0),
		       b9 = prefix("10.9.0.0/16", 0), ah = prefix("192.0.2.1", 0),
		       r2 = prefix("10.2.0.0/16", 0), r3 = prefix("10.3.0.0/16", 0),
		       h2 = prefix("192.0.2.2", 0), r6 = prefix("2001:db8::/32", 0), *before, *v;
	struct ag_rules_swap_result res;
	__u32 counts[AG_RK__MAX];
	size_t nb, n;
	char text[32];
	int i;

	set_agent(ctx, "a", 10, 10);
	set_agent(ctx, "b", 10, 10);
	check_ok(ag_prefix_index_set(ctx, AG_PREFIX_INDEX_HASH));
	check_ok(ag_rule_add(ctx, &a0, "a"));
	check_ok(ag_rule_add(ctx, &a1, "a"));
	check_ok(ag_rule_add(ctx, &ah, "a"));
	check_ok(ag_rule_add(ctx, &b9, "b"));
	before = list_rules(fx, ctx, &nb);
	check_eq(nb, 4);
	check_swap_settled(fx, ctx);

	/* The trie of IPv4 holds 3 of 4: r2 fills it, r3 does not fit. The
	 * inserts before it (in three maps) are taken back, a1 and ah stay. */
	{
		struct ag_rule add[] = { a0, r6, h2, r2, r3 };
		struct ag_rule del[] = { a1, ah };

		res.added = 99;
		check_eq(ag_rules_swap(ctx, "a", add, 5, del, 2, NULL, &res), -ENOSPC);
		check_msg(AG_MAP_RULES_V4);
		check_eq(res.added, 0);
		check_eq(res.removed, 0);
		check_eq(res.conflicts, 0);
	}
	v = list_rules(fx, ctx, &n);
	check_same_rules(before, nb, v, n);
	count_listed(v, n, counts);
	assert_true(prefix_index_consistent(fx, ctx));
	{
		struct ag_config cfg = config(ctx);
		int k;

		/* Never fewer than the real rules: the datapath would skip a map. */
		for (k = 0; k < AG_RK__MAX; k++)
			if (cfg.rule_count[k] < counts[k])
				fail_msg("rule_count[%d] = %u below the %u rules", k,
					 cfg.rule_count[k], counts[k]);
	}
	check_swap_settled(fx, ctx);
	/* Exact, and the journal clear, by the next locked call at the latest. */
	check_ok(ag_config_set_dry_run(ctx, false));
	check_swap_settled(fx, ctx);

	/* The host map full instead, after a trie insert that fit. */
	for (i = 0; i < 3; i++) {
		struct ag_rule h;

		snprintf(text, sizeof(text), "192.0.2.%d", 100 + i);
		h = prefix(text, 0);
		check_ok(ag_rule_add(ctx, &h, "b"));
	}
	before = list_rules(fx, ctx, &nb);
	check_eq(nb, 7);
	{
		struct ag_rule add[] = { r2, h2 };

		check_eq(ag_rules_swap(ctx, "a", add, 2, &a0, 1, NULL, &res), -ENOSPC);
		check_msg(AG_MAP_HOSTS_V4);
	}
	v = list_rules(fx, ctx, &n);
	check_same_rules(before, nb, v, n);
	assert_true(prefix_index_consistent(fx, ctx));
	check_swap_settled(fx, ctx);
	check_ok(ag_config_set_dry_run(ctx, false));
	check_swap_settled(fx, ctx);

	/* With room again the same swap goes through. */
	check_ok(ag_rule_del(ctx, &ah));
	{
		struct ag_rule add[] = { r2, h2 };

		check_ok(ag_rules_swap(ctx, "a", add, 2, &a0, 1, NULL, &res));
		check_eq(res.added, 2);
		check_eq(res.removed, 1);
	}
	check_swap_settled(fx, ctx);
	check_eq(ag_prefix_index_active(ctx, AF_INET), 1);
}

/* ---- 13c. the name -> slot cache ---------------------------------------- */

/* Another process (here: another context) deletes and recreates agents
 * behind a context that has their slots cached: every answer is current. */
static void test_agent_slot_cache(void **state)
{
	struct fx *fx = *state;
	const char *root = fx_root(fx, "slot_cache");
	struct ag_ctx *daemon = fx_open(fx, root, true, false, 4, 4);
	struct ag_ctx *cli = fx_open(fx, root, false, false, 0, 0);
	__u32 a, b, got = 99;

	a = set_agent(cli, "a", 5, 5);
	check_ok(ag_agent_slot(daemon, "a", &got));
	check_eq(got, a);
	check_ok(ag_agent_slot(daemon, "a", &got)); /* from the cache */
	check_eq(got, a);
	check_eq(ag_agent_slot(daemon, "nobody", &got), -ENOENT);
	check_eq(ag_agent_slot(daemon, "bad name!", &got), -EINVAL);

	/* Deleted: unknown, although cached. */
	check_ok(ag_agent_delete(cli, "a"));
	check_eq(ag_agent_slot(daemon, "a", &got), -ENOENT);

	/* Its slot reused by another agent, then the name recreated elsewhere. */
	check_ok(ag_agent_slot(daemon, "b", &got) == -ENOENT ? 0 : -1);
	b = set_agent(cli, "b", 5, 5);
	check_ok(ag_agent_slot(daemon, "b", &got));
	check_eq(got, b);
	check_ok(ag_agent_delete(cli, "b"));
	a = set_agent(cli, "c", 5, 5); /* takes a freed slot */
	b = set_agent(cli, "b", 5, 5);
	check_ok(ag_agent_slot(daemon, "b", &got));
	check_eq(got, b);
	check_ok(ag_agent_slot(daemon, "c", &got));
	check_eq(got, a);
}

/* ag_consume, the local fast path: by name, through the slot cache; the
 * bucket's bound holds (admitted <= burst + rate * t); an agent another
 * process deletes is unknown at once, its slot taken by another agent is
 * never charged for it; read-only and over-burst requests are refused. */
static void test_consume_by_name(void **state)
{
	struct fx *fx = *state;
	const char *root = fx_root(fx, "consume");
	struct ag_ctx *app = fx_open(fx, root, true, false, 4, 4);
	struct ag_ctx *cli = fx_open(fx, root, false, false, 0, 0);
	struct ag_ctx *ro = fx_open(fx, root, false, true, 0, 0);
	struct ag_consume_result res;
	__u64 allowed = 0, n = 0, t0 = ag_now_ns(), t1;
	__u32 slot;

	set_agent(cli, "app", 1000, 50);
	set_agent(cli, "f1", 1, 1); /* the other 3 slots taken: a new agent gets app's */
	set_agent(cli, "f2", 1, 1);
	set_agent(cli, "f3", 1, 1);
	while (ag_now_ns() - t0 < 200000000ULL) { /* 0.2 s */
		check_ok(ag_consume(app, "app", 1, &res));
		allowed += res.allowed;
		n++;
	}
	t1 = ag_now_ns();
	/* Exactly the bucket: burst + rate * t, the last check made after t. */
	assert_true(allowed <= 50 + (__u64)(1000.0 * (double)(t1 - t0) / 1e9) + 1);
	assert_true(allowed + 2 >= 50 + 200);
	assert_true(n > allowed);
	check_eq(ag_consume(app, "app", 51, &res), -EINVAL);
	check_eq(ag_consume(ro, "app", 1, &res), -EROFS);
	check_eq(ag_consume(app, "nobody", 1, &res), -ENOENT);
	check_eq(ag_consume(app, "no way!", 1, &res), -EINVAL);
	/* Deleted by another process, its slot reused: never charged. */
	check_ok(ag_agent_slot(app, "app", &slot));
	check_ok(ag_agent_delete(cli, "app"));
	check_eq(ag_consume(app, "app", 1, &res), -ENOENT);
	check_eq(set_agent(cli, "other", 1, 3), slot);
	check_eq(ag_consume(app, "app", 1, &res), -ENOENT);
	check_ok(ag_consume(app, "other", 3, &res));
	assert_true(res.allowed);
	check_ok(ag_consume(app, "other", 1, &res));
	assert_false(res.allowed);
}

/* ---- 14. counters and stats ------------------------------------------ */

static void test_counters_stats(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "counters"), true, false, 1, 16);
	int ncpus = ag_num_cpus(ctx), tally = fx_map(fx, AG_MAP_TALLY), i;
	int cache = fx_map(fx, AG_MAP_TALLY_CACHE);
	struct ag_counters zero = {}, sum, all[1];
	struct ag_tally folded = {};
	struct ag_tally_ent *percpu;
	struct ag_bucket b;
	__u32 key;
	__u64 stats[AG_STAT__MAX];
	__u32 slot;

	slot = set_agent(ctx, "fresh", 10, 10);
	memset(&sum, 0xff, sizeof(sum));
	check_ok(ag_counters_get(ctx, slot, &sum));
	assert_memory_equal(&sum, &zero, sizeof(sum));
	memset(all, 0xff, sizeof(all));
	check_ok(ag_counters_get_all(ctx, all));
	assert_memory_equal(&all[0], &zero, sizeof(zero));
	memset(stats, 0xff, sizeof(stats));
	check_ok(ag_stats_get(ctx, stats));
	for (i = 0; i < AG_STAT__MAX; i++)
		check_eq(stats[i], 0);

	/* Traffic counted on every CPU's cache entry is summed with what was
	 * folded into the tally (abi.h, "ag_tally") ... */
	percpu = fx_mem(fx, calloc(ncpus, sizeof(*percpu)));
	assert_non_null(percpu);
	check_ok(bpf_map_lookup_elem(fx_map(fx, AG_MAP_BUCKETS), &slot, &b));
	for (i = 0; i < ncpus; i++) {
		percpu[i].slot1 = slot + 1;
		percpu[i].gen = b.gen;
		percpu[i].c.passed_packets = 1, percpu[i].c.dropped_bytes = 100;
		percpu[i].r.quota_packets = 2;
	}
	key = slot & (AG_TALLY_CACHE - 1);
	check_ok(bpf_map_update_elem(cache, &key, percpu, BPF_ANY));
	folded.c.passed_packets = 1000;
	folded.r.parent_packets = 7;
	check_ok(bpf_map_update_elem(tally, &slot, &folded, BPF_ANY));
	check_ok(ag_counters_get(ctx, slot, &sum));
	check_eq(sum.passed_packets, 1000 + ncpus);
	check_eq(sum.dropped_bytes, 100 * ncpus);
	check_eq(sum.passed_bytes, 0);
	{
		struct ag_refusals rf;

		check_ok(ag_refusals_get(ctx, slot, &rf));
		check_eq(rf.parent_packets, 7);
		check_eq(rf.quota_packets, 2 * ncpus);
	}
	check_ok(ag_counters_get_all(ctx, all));
	check_eq(all[0].passed_packets, 1000 + ncpus);
	/* ... an entry of another generation of the slot (a deleted agent's)
	 * counts for nothing ... */
	percpu[0].gen = b.gen + 1000;
	check_ok(bpf_map_update_elem(cache, &key, percpu, BPF_ANY));
	check_ok(ag_counters_get(ctx, slot, &sum));
	check_eq(sum.passed_packets, 1000 + ncpus - 1);
	check_ok(ag_counters_get_all(ctx, all));
	check_eq(all[0].passed_packets, 1000 + ncpus - 1);
	/* ... and a new agent in the same (only) slot starts from zero. */
	check_ok(ag_agent_delete(ctx, "fresh"));
	check_eq(set_agent(ctx, "next", 10, 10), slot);
	check_ok(ag_counters_get(ctx, slot, &sum));
	assert_memory_equal(&sum, &zero, sizeof(sum));
	check_ok(ag_counters_get_all(ctx, all));
	assert_memory_equal(&all[0], &zero, sizeof(zero));

	assert_string_equal(ag_stat_name(AG_STAT_IPV4_BAD_IHL), "ipv4_bad_ihl");
	assert_string_equal(ag_stat_name(AG_STAT_UNCLASSIFIED_PASSED), "unclassified_passed");
	assert_true(ag_stat_is_parse_error(AG_STAT_IPV4_BAD_IHL));
	assert_false(ag_stat_is_parse_error(AG_STAT_UNCLASSIFIED_PASSED));
	for (i = 0; i < AG_STAT__MAX; i++)
		assert_non_null(ag_stat_name(i));
}

/* ---- 15. global config ------------------------------------------------ */

static void test_config(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "config"), true, false, 8, 8);
	struct ag_config before, cfg = config(ctx);

	check_eq(cfg.default_action, AG_ACTION_PASS);
	check_eq(cfg.dry_run, 0);

	check_ok(ag_config_set_default_action(ctx, AG_ACTION_DROP));
	check_eq(config(ctx).default_action, AG_ACTION_DROP);
	check_ok(ag_config_set_dry_run(ctx, true));
	check_eq(config(ctx).dry_run, 1);
	check_eq(config(ctx).default_action, AG_ACTION_DROP);

	before = config(ctx);
	check_eq(ag_config_set_default_action(ctx, (enum ag_action)7), -EINVAL);
	cfg = config(ctx);
	assert_memory_equal(&before, &cfg, sizeof(cfg));

	check_ok(ag_config_set_dry_run(ctx, false));
	check_eq(config(ctx).dry_run, 0);
	check_ok(ag_config_set_default_action(ctx, AG_ACTION_PASS));
	check_eq(config(ctx).default_action, AG_ACTION_PASS);
}

/* ---- findings of the code review, each pinned down ---------------------- */

static struct ag_bucket read_bucket(int fd, __u32 slot)
{
	struct ag_bucket b;

	check_ok(bpf_map_lookup_elem(fd, &slot, &b));
	return b;
}

/* A delete killed after it disabled the bucket and dropped one of three
 * rules: the next locker finishes it (agent and its other rules gone). */
static void test_repair_half_deleted(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "repair_delete"), true, false, 8, 16);
	int buckets = fx_map(fx, AG_MAP_BUCKETS), cfg = fx_map(fx, AG_MAP_CONFIG);
	int trie = fx_map(fx, AG_MAP_RULES_V4);
	struct ag_rule r8 = prefix("10.0.0.0/8", 0), r16 = prefix("10.1.0.0/16", 0),
		       r24 = prefix("10.2.3.0/24", 0), *rules;
	struct ag_lpm4_key k = { .prefixlen = 32 + 16, .addr = { 10, 1, 0, 0 } };
	struct ag_bucket b;
	struct ag_agent *v;
	__u32 slot, want[AG_RK__MAX] = {};
	size_t n;

	slot = set_agent(ctx, "doomed", 100, 100);
	set_agent(ctx, "bystander", 5, 5);
	check_ok(ag_rule_add(ctx, &r8, "doomed"));
	check_ok(ag_rule_add(ctx, &r16, "doomed"));
	check_ok(ag_rule_add(ctx, &r24, "bystander"));
	/* The torn state: journal set, bucket without limit, one rule gone. */
	set_dirty(cfg, AG_DIRTY_AGENTS | AG_DIRTY_RULES);
	b = read_bucket(buckets, slot);
	memset(b.set, 0, sizeof(b.set));
	check_ok(bpf_map_update_elem(buckets, &slot, &b, BPF_ANY));
	check_ok(bpf_map_delete_elem(trie, &k));

	set_agent(ctx, "trigger", 1, 1); /* any locked mutation repairs */
	v = list_agents(fx, ctx, &n);
	check_eq(n, 2);
	assert_false(agent_listed(v, n, "doomed"));
	rules = list_rules(fx, ctx, &n);
	check_eq(n, 1);
	assert_true(same_rule(&rules[0], &r24));
	want[AG_RK_LPM4] = 1;
	check_counts(ctx, want);
	check_eq(config(ctx).dirty, 0);
}

/* An update killed after it rewrote the names entry but before the bucket
 * followed: the repair applies the recorded limit. */
static void test_repair_half_updated(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "repair_update"), true, false, 8, 16);
	int names = fx_map(fx, AG_MAP_NAMES), buckets = fx_map(fx, AG_MAP_BUCKETS);
	int cfg = fx_map(fx, AG_MAP_CONFIG);
	struct ag_gcra_params want;
	struct ag_agent_info info;
	struct ag_bucket b;
	__u32 slot = set_agent(ctx, "moved", 5, 5);

	check_ok(bpf_map_lookup_elem(names, &slot, &info));
	info.rate_mtps = 1000 * 1000;
	info.burst = 2000;
	check_ok(bpf_map_update_elem(names, &slot, &info, BPF_EXIST));
	set_dirty(cfg, AG_DIRTY_AGENTS);

	set_agent(ctx, "trigger", 1, 1);
	check_ok(ag_gcra_params_for(1000, 2000, AG_UNIT_PPS, &want));
	b = read_bucket(buckets, slot);
	assert_memory_equal(&b.set[b.tat >> 63], &want, sizeof(want));
	check_agent(ctx, "moved", slot, 1000, 2000);
	/* And setting the old value again really reaches the bucket. */
	check_ok(ag_agent_set(ctx, "moved",
			      &(struct ag_agent_update){ .fields = AG_SET_RATE | AG_SET_BURST,
							 .rate = 5, .burst = 5 },
			      NULL, NULL));
	check_ok(ag_gcra_params_for(5, 5, AG_UNIT_PPS, &want));
	b = read_bucket(buckets, slot);
	assert_memory_equal(&b.set[b.tat >> 63], &want, sizeof(want));
}

/* Switching a packet-limited agent to bytes gives it a byte-sized burst. */
static void test_unit_switch_burst(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "unit_switch"), true, false, 8, 16);
	struct ag_agent_update u = { .fields = AG_SET_UNIT | AG_SET_RATE, .unit = AG_UNIT_BPS,
				     .rate = 1e6 };
	struct ag_agent a;

	set_agent(ctx, "u", 100, 100);
	check_ok(ag_agent_set(ctx, "u", &u, NULL, NULL));
	check_ok(ag_agent_get(ctx, "u", &a));
	check_eq(a.unit, AG_UNIT_BPS);
	check_eq(a.burst, 1000000); /* one second of the new rate */
	u = (struct ag_agent_update){ .fields = AG_SET_UNIT | AG_SET_RATE, .unit = AG_UNIT_BPS,
				      .rate = 10 };
	set_agent(ctx, "v", 100, 100);
	check_ok(ag_agent_set(ctx, "v", &u, NULL, NULL));
	check_ok(ag_agent_get(ctx, "v", &a));
	check_eq(a.burst, AG_BPS_MIN_BURST); /* at least one full-size frame */
	/* An explicit burst is kept as given. */
	u.fields = AG_SET_UNIT | AG_SET_BURST, u.unit = AG_UNIT_PPS, u.burst = 7;
	check_ok(ag_agent_set(ctx, "v", &u, NULL, NULL));
	check_ok(ag_agent_get(ctx, "v", &a));
	check_eq(a.burst, 7);
}

struct rule_thread {
	struct ag_ctx *ctx;
	int id;
	int errors;
};

static void *rule_churn(void *arg)
{
	struct rule_thread *t = arg;
	int round, i;

	for (round = 0; round < 5; round++)
		for (i = 0; i < 40; i++) {
			char text[32];
			struct ag_rule r;

			snprintf(text, sizeof(text), "10.%d.%d.0/24", t->id, i);
			if (ag_prefix_parse(text, &r) || ag_rule_add(t->ctx, &r, "shared") ||
			    (round < 4 && ag_rule_del(t->ctx, &r)))
				t->errors++;
		}
	return NULL;
}

/* Threads sharing one context: the library lock orders them too, so the
 * per-kind rule counts stay exact. */
static void test_threads_share_context(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "threads"), true, false, 8, 1024);
	struct rule_thread t[4];
	pthread_t tid[4];
	__u32 want[AG_RK__MAX] = {};
	size_t n;
	int i;

	set_agent(ctx, "shared", 10, 10);
	for (i = 0; i < 4; i++) {
		t[i] = (struct rule_thread){ ctx, i + 1, 0 };
		check_ok(pthread_create(&tid[i], NULL, rule_churn, &t[i]));
	}
	for (i = 0; i < 4; i++) {
		pthread_join(tid[i], NULL);
		check_eq(t[i].errors, 0);
	}
	list_rules(fx, ctx, &n);
	check_eq(n, 160);
	want[AG_RK_LPM4] = 160;
	check_counts(ctx, want);
	check_eq(config(ctx).dirty, 0);
}

/* A wait longer than 2^64 ns saturates instead of wrapping. */
static void test_retry_after_saturates(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "retry_sat"), true, false, 8, 16);
	struct ag_consume_result r;
	__u32 slot = set_agent(ctx, "slow", 0.5, 1ULL << 40);

	check_ok(ag_bucket_drain(ctx, slot, 1ULL << 40, NULL));
	check_ok(ag_bucket_consume(ctx, slot, 1ULL << 40, &r));
	assert_false(r.allowed);
	check_eq(r.retry_after_ns, UINT64_MAX);
}

/* A names entry whose slot field disagrees with its key is never used to
 * index anything, and the repair removes it. */
static void test_corrupt_names_entry(void **state)
{
	struct fx *fx = *state;
	struct ag_ctx *ctx = fx_open(fx, fx_root(fx, "corrupt"), true, false, 8, 16);
	struct ag_agent_info bad = { .name = "bad", .rate_mtps = 1000, .burst = 1,
				     .slot = 0x7fffffff };
	int names = fx_map(fx, AG_MAP_NAMES), cfg = fx_map(fx, AG_MAP_CONFIG);
	__u32 key;
	struct ag_agent *v;
	size_t n;

	set_agent(ctx, "good", 1, 1);
	key = free_slot(names, 8);
	check_ok(bpf_map_update_elem(names, &key, &bad, BPF_ANY));
	v = list_agents(fx, ctx, &n);
	check_eq(n, 1);
	assert_true(agent_listed(v, n, "good"));
	set_dirty(cfg, AG_DIRTY_AGENTS);
	set_agent(ctx, "trigger", 1, 1); /* repairs, then may reuse the slot */
	if (!bpf_map_lookup_elem(names, &key, &bad))
		assert_string_not_equal(bad.name, "bad");
	v = list_agents(fx, ctx, &n);
	check_eq(n, 2);
}

#define VICTIM_RULES 100

static void add_victim(struct ag_ctx *ctx)
{
	int i;

	check_ok(ag_agent_set(ctx, "victim",
			      &(struct ag_agent_update){ .fields = AG_SET_RATE, .rate = 50 }, NULL,
			      NULL));
	for (i = 0; i < VICTIM_RULES; i++) {
		char text[32];
		struct ag_rule r;

		snprintf(text, sizeof(text), "10.77.%d.0/24", i);
		check_ok(ag_prefix_parse(text, &r));
		check_ok(ag_rule_add(ctx, &r, "victim"));
	}
}

/* After repair: the victim is whole (every rule, a live limit) or gone
 * (no rule left), and the counts agree with the maps. */
static bool victim_consistent(struct fx *fx, struct ag_ctx *ctx, int buckets, bool *present)
{
	struct ag_rule *rules;
	struct ag_agent a;
	size_t n, i, mine = 0;
	struct ag_config cfg = config(ctx);
	__u32 counted = 0;

	check_ok(ag_rule_list(ctx, &rules, &n));
	*present = ag_agent_get(ctx, "victim", &a) == 0;
	for (i = 0; i < n; i++)
		mine += *present && rules[i].slot == a.slot;
	free(rules);
	for (i = 0; i < AG_RK__MAX; i++)
		counted += cfg.rule_count[i];
	if (counted != n || cfg.dirty || !prefix_index_consistent(fx, ctx))
		return false;
	if (!*present)
		return n == 0;
	{
		struct ag_bucket b = read_bucket(buckets, a.slot);

		return mine == VICTIM_RULES && n == VICTIM_RULES &&
		       b.set[b.tat >> 63].interval != 0;
	}
}

/* kill -9 in the middle of 'agent del', at random moments, many times. */
static void test_kill_during_delete(void **state)
{
	struct fx *fx = *state;
	const char *root = fx_root(fx, "kill_delete");
	struct ag_ctx *ctx = fx_open(fx, root, true, false, 16, 256);
	int buckets = fx_map(fx, AG_MAP_BUCKETS);
	int round, killed_mid = 0;

	__u64 t0, span_us;

	ag_set_log(capture_log); /* repair warnings are expected here */
	srand(12345);
	/* How long one delete takes here: kills land across that span. */
	add_victim(ctx);
	t0 = ag_now_ns();
	check_ok(ag_agent_delete(ctx, "victim"));
	span_us = (ag_now_ns() - t0) / 1000 + 1;
	for (round = 0; round < 40; round++) {
		bool present;
		pid_t pid;
		int status;

		if (ag_agent_get(ctx, "victim", &(struct ag_agent){}) != 0)
			add_victim(ctx);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct ag_ctx *c;

			if (try_open(root, false, false, 0, 0, &c))
				_exit(2);
			_exit(ag_agent_delete(c, "victim") ? 1 : 0);
		}
		usleep(100 + (useconds_t)(rand() % (span_us + 400)));
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		/* Any locked mutation repairs what the kill left. */
		check_ok(ag_config_set_dry_run(ctx, false));
		if (!victim_consistent(fx, ctx, buckets, &present))
			fail_msg("round %d: inconsistent after kill (victim %s)", round,
				 present ? "present" : "gone");
		killed_mid += WIFSIGNALED(status);
	}
	print_message("# %d of 40 deletes killed before they finished (one takes %llu us)\n",
		      killed_mid, (unsigned long long)span_us);
	assert_true(killed_mid > 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_slot_claim_race),
		T(test_slot_exhaustion),
		T(test_layout_value_size),
		T(test_layout_type),
		T(test_reopen_keeps_state),
		T(test_missing_root),
		T(test_read_only),
		T(test_attach_bad_interface),
		T(test_name_validation),
		T(test_prefix_port_parse),
		T(test_rules),
		T(test_rule_map_full),
		T(test_host_maps_prealloc_or_not),
		T(test_bucket_ops),
		T(test_repair_half_created),
		T(test_repair_stale_index),
		T(test_index_churn),
		T(test_index_stuck_writer),
		T(test_index_readers_during_churn),
		T(test_upgrade_names_hash),
		T(test_prefix_index_upgrade),
		T(test_repair_prefix_index),
		T(test_prefix_index_auto),
		T(test_rules_swap),
		T(test_rules_swap_full),
		T(test_agent_slot_cache),
		T(test_consume_by_name),
		T(test_counters_stats),
		T(test_config),
		T(test_repair_half_deleted),
		T(test_repair_half_updated),
		T(test_unit_switch_burst),
		T(test_threads_share_context),
		T(test_retry_after_saturates),
		T(test_corrupt_names_entry),
		T(test_kill_during_delete),
	};

	if (geteuid() != 0) {
		printf("1..0 # SKIP needs root\n");
		return SKIP_CODE;
	}
	g_root = testenv_pin_root("test_lib");
	return cmocka_run_group_tests_name("libagentgate", tests, NULL, NULL) ? 1 : 0;
}
