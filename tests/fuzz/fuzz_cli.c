// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The CLI (userspace/agentgate): its main(), compiled as agentgate_main(),
 * run with fuzzed arguments through the table-driven dispatch, every
 * command's argument parsing and output, on maps that exist only in this
 * process's sandbox: a fresh bpffs over /sys/fs/bpf in a mount namespace of
 * its own, a network namespace of its own (only lo). The harness always
 * passes --pin-path to its own pin root and turns fuzzed --pi... words into
 * --json, so no other pin root is ever opened.
 *
 * Link-time wraps (fuzz.mk): ag_attach_with (what `attach` calls) and
 * ag_attach are answered without loading the program (the verifier would
 * take the fuzzer's time, up to tens of seconds under ASan, and attaching
 * is tests/bpf/test_attach.c's job; should a command load it anyway, the
 * wrap of bpf_object__load_skeleton reports a harness error); nanosleep and
 * ag_now_ns run on a simulated clock, and `top` gets "--count 1" appended,
 * so it draws one frame and returns instead of waiting for q.
 *
 * As a new process would, every command line starts with libFuzzer's
 * SIGINT/SIGTERM/SIGHUP handling (top installs handlers of its own) and a
 * stdout that is no terminal (top would set the terminal raw and poll the
 * keyboard for real seconds when the harness runs by hand).
 *
 * Input: the arguments after "agentgate", NUL-separated (at most 24).
 * Checks: the exit code is 0, 1 or 2; in JSON mode (-j, --json, -p,
 * --pretty before the command) everything printed on stdout is JSON
 * documents (one per line for top), errors included.
 */
#include <jansson.h>
#include <signal.h>
#include <sys/mman.h>
#include <time.h>

#include "agentgate.h"
#include "fuzz.h"
#include "internal.h"

#define PIN "/sys/fs/bpf/agentgate-fuzz"
#define ARGS_MAX 24

int agentgate_main(int argc, char **argv);

/* ---- link-time wraps ---------------------------------------------------------- */

static __u64 clock_offset_ns;

__u64 __real_ag_now_ns(void);
__u64 __wrap_ag_now_ns(void);
__u64 __wrap_ag_now_ns(void)
{
	return __real_ag_now_ns() + clock_offset_ns;
}

int __wrap_nanosleep(const struct timespec *req, struct timespec *rem);
int __wrap_nanosleep(const struct timespec *req, struct timespec *rem)
{
	clock_offset_ns += (__u64)req->tv_sec * 1000000000ULL + (__u64)req->tv_nsec;
	return 0;
}

/* Program 1 on link 2, in the mode asked; --replace 1 replaces it, another
 * id is refused as the library refuses a program that no longer runs. */
int __wrap_ag_attach_with(struct ag_ctx *ctx, const char *ifname, const struct ag_attach_opts *o,
			  struct ag_attach_result *res);
int __wrap_ag_attach_with(struct ag_ctx *ctx, const char *ifname, const struct ag_attach_opts *o,
			  struct ag_attach_result *res)
{
	*res = (struct ag_attach_result){
		.prog_id = 1, .link_id = 2,
		.mode = o->mode == AG_XDP_GENERIC ? AG_XDP_GENERIC : AG_XDP_NATIVE,
		.replaced = o->expected_prog_id != 0,
	};
	if (o->expected_prog_id > 1)
		return ag_err(EPERM, "%s no longer runs program %u; replace refused", ifname,
			      o->expected_prog_id);
	return 0;
}

int __wrap_ag_attach(struct ag_ctx *ctx, const char *ifname, enum ag_xdp_mode mode,
		     struct ag_attach_result *res);
int __wrap_ag_attach(struct ag_ctx *ctx, const char *ifname, enum ag_xdp_mode mode,
		     struct ag_attach_result *res)
{
	*res = (struct ag_attach_result){
		.prog_id = 1, .link_id = 2,
		.mode = mode == AG_XDP_GENERIC ? AG_XDP_GENERIC : AG_XDP_NATIVE,
	};
	return 0;
}

/* Nothing the harness runs may load the program: a call here means a wrap
 * above went stale (a command calls another function now), so every such
 * input would load it for real. A harness error says so at once. */
struct bpf_object_skeleton;
int __wrap_bpf_object__load_skeleton(struct bpf_object_skeleton *s);
int __wrap_bpf_object__load_skeleton(struct bpf_object_skeleton *s)
{
	FUZZ_HARNESS_ERROR("fuzz_cli: a command loads the XDP program: wrap the function it calls "
			   "to attach (FUZZ_LINK_cli in tests/fuzz/fuzz.mk), as ag_attach_with is");
}

struct cli;
int __real_do_top(struct cli *cli, int argc, char **argv);
int __wrap_do_top(struct cli *cli, int argc, char **argv);
int __wrap_do_top(struct cli *cli, int argc, char **argv)
{
	char *args[ARGS_MAX + 3];
	int i;

	for (i = 0; i < argc && i < ARGS_MAX; i++)
		args[i] = argv[i];
	args[i++] = "--count";
	args[i++] = "1";
	args[i] = NULL;
	return __real_do_top(cli, i, args);
}

/* ---- the sandbox and its maps ------------------------------------------------- */

static int out_fd = -1;

static void populate(void)
{
	struct ag_open_opts o = { .pin_root = PIN, .create = true, .max_agents = 32,
				  .max_rules = 64 };
	struct ag_agent_update a = { .fields = AG_SET_RATE | AG_SET_BURST, .rate = 100,
				     .burst = 200 };
	struct ag_agent_update b = { .fields = AG_SET_RATE | AG_SET_UNIT, .rate = 1.25e6,
				     .unit = AG_UNIT_BPS };
	struct ag_rule r;
	struct ag_ctx *ctx;
	__u32 slot;
	bool created;

	if (ag_open(&o, &ctx))
		FUZZ_HARNESS_ERROR("fuzz_cli: cannot create maps: %s", ag_errmsg());
	if (ag_agent_set(ctx, "planner-7", &a, &slot, &created) ||
	    ag_agent_set(ctx, "uploader", &b, &slot, &created) ||
	    ag_prefix_parse("10.20.0.0/16", &r) || ag_rule_add(ctx, &r, "planner-7") ||
	    ag_prefix_parse("2001:db8:7::/48", &r) || (r.port = 443, 0) ||
	    ag_rule_add(ctx, &r, "uploader"))
		FUZZ_HARNESS_ERROR("fuzz_cli: cannot add agents: %s", ag_errmsg());
	ag_close(ctx);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int err;

	fuzz_keep_stderr();
	err = fuzz_sandbox(true);
	if (err)
		FUZZ_HARNESS_ERROR("fuzz_cli: cannot make the sandbox (needs root): %s",
				   strerror(-err));
	populate();
	unsetenv("AGENTGATE_PIN_PATH");
	/* The CLI's stdout is a memfd of ours, whatever libFuzzer does to fd 1. */
	out_fd = memfd_create("agentgate-stdout", MFD_CLOEXEC);
	stdout = out_fd >= 0 ? fdopen(dup(out_fd), "w") : NULL;
	if (!stdout)
		FUZZ_HARNESS_ERROR("fuzz_cli: no memfd for the CLI's stdout: %s", strerror(errno));
	/* fd 1 is no terminal, as under make fuzz (-close_fd_mask): isatty(1)
	 * would make top redraw, set the terminal raw and wait for keys. */
	if (isatty(STDOUT_FILENO)) {
		int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

		if (null < 0 || dup2(null, STDOUT_FILENO) < 0)
			FUZZ_HARNESS_ERROR("fuzz_cli: /dev/null: %s", strerror(errno));
		close(null);
	}
	return 0;
}

/* The handlers a command may replace (top catches INT, TERM and HUP to stop
 * drawing): libFuzzer's, saved before the first command line and put back
 * after each, so Ctrl-C and SIGTERM still stop the fuzzer. */
static const int cli_signals[] = { SIGINT, SIGTERM, SIGHUP };
static struct sigaction fuzzer_action[sizeof(cli_signals) / sizeof(cli_signals[0])];

static void signals_save(void)
{
	static bool saved;
	size_t i;

	for (i = 0; !saved && i < sizeof(cli_signals) / sizeof(cli_signals[0]); i++)
		if (sigaction(cli_signals[i], NULL, &fuzzer_action[i]))
			FUZZ_HARNESS_ERROR("sigaction: %s", strerror(errno));
	saved = true;
}

static void signals_restore(void)
{
	size_t i;

	for (i = 0; i < sizeof(cli_signals) / sizeof(cli_signals[0]); i++)
		if (sigaction(cli_signals[i], &fuzzer_action[i], NULL))
			FUZZ_HARNESS_ERROR("sigaction: %s", strerror(errno));
}

/* glibc's getopt keeps a pointer into the last argv it scanned, and its
 * mode ('+') from the first call: forget both, as a new process would. */
static void reset_getopt(void)
{
	static char *none[] = { "agentgate", NULL };

	optind = 0;
	getopt(1, none, "");
	optind = 0;
}

/* ---- one command line ------------------------------------------------------------ */

/* JSON mode, and nothing that prints help or the version instead. */
static bool json_expected(int argc, char **argv)
{
	bool json = false;
	int i;

	for (i = 0; i < argc; i++) {
		const char *w = argv[i];

		if (!strcmp(w, "help") || !strcmp(w, "--help") || !strcmp(w, "-h"))
			return false;
		if (w[0] != '-' || i == 0)
			continue;
		if (w[1] == '-' && (!strncmp(w, "--h", 3) || !strncmp(w, "--v", 3) ||
				    !strncmp(w, "--m", 3)))
			return false;
		if (w[1] != '-' && (strchr(w, 'h') || strchr(w, 'V')))
			return false;
	}
	for (i = 1; i < argc && argv[i][0] == '-'; i++)
		json |= !strcmp(argv[i], "-j") || !strcmp(argv[i], "--json") ||
			!strcmp(argv[i], "-p") || !strcmp(argv[i], "--pretty");
	return json;
}

/* What the command printed on stdout (the memfd). */
static char *output(size_t *len)
{
	size_t got = 0;
	off_t n;
	char *s;

	if (fflush(stdout))
		FUZZ_HARNESS_ERROR("stdout (memfd): %s", strerror(errno));
	n = lseek(out_fd, 0, SEEK_END);
	if (n < 0)
		FUZZ_HARNESS_ERROR("lseek on the stdout memfd: %s", strerror(errno));
	s = malloc((size_t)n + 1);
	if (!s)
		abort();
	while (got < (size_t)n) {
		ssize_t r = pread(out_fd, s + got, (size_t)n - got, (off_t)got);

		if (r > 0)
			got += (size_t)r;
		else if (r == 0 || errno != EINTR)
			FUZZ_HARNESS_ERROR("reading the stdout memfd: %s",
					   r ? strerror(errno) : "shorter than it was");
	}
	s[n] = 0;
	*len = (size_t)n;
	return s;
}

static void check_json(const char *out, size_t len)
{
	size_t off = 0;

	while (off < len) {
		json_error_t e;
		json_t *doc;

		off += strspn(out + off, " \t\r\n");
		if (off >= len)
			break;
		doc = json_loadb(out + off, len - off, JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &e);
		FUZZ_CHECK(doc, "JSON mode printed non-JSON at %zu (%s): %.300s", off, e.text,
			   out + off);
		json_decref(doc);
		off += e.position;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *argv[ARGS_MAX + 4], *buf = malloc(size + 1);
	size_t i = 0, len;
	int argc = 0, rc;
	char *out;

	if (!buf)
		abort();
	memcpy(buf, data, size);
	buf[size] = 0;
	argv[argc++] = "agentgate";
	argv[argc++] = "--pin-path";
	argv[argc++] = PIN;
	while (i < size && argc < ARGS_MAX + 3) {
		char *w = buf + i;

		i += strlen(w) + 1;
		argv[argc++] = strncmp(w, "--pi", 4) ? w : "--json";
	}
	argv[argc] = NULL;
	while (ftruncate(out_fd, 0))
		if (errno != EINTR)
			FUZZ_HARNESS_ERROR("emptying the stdout memfd: %s", strerror(errno));
	rewind(stdout);
	clearerr(stdout);
	reset_getopt();
	signals_save();
	rc = agentgate_main(argc, argv);
	signals_restore();
	FUZZ_CHECK(rc == 0 || rc == 1 || rc == 2, "exit code %d", rc);
	out = output(&len);
	if (getenv("FUZZ_CLI_DEBUG")) /* each run's exit code and stdout */
		dprintf(fuzz_err_fd, "exit %d\n%s", rc, out);
	if (json_expected(argc, argv))
		check_json(out, len);
	free(out);
	free(buf);
	return 0;
}
