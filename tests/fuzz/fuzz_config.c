// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * agentgated's settings (userspace/agentgated/process/config.c): the config file
 * parser and the command line over it, with its value syntaxes (sizes,
 * counts, durations, rates, bursts, units, booleans, lists).
 *
 * Input: the config file's text, then optionally a NUL and the command-line
 * arguments, NUL-separated. The harness always adds --config naming the
 * text (a memfd); arguments that would name another config file (-c...,
 * --c...) are replaced by --quiet, so no fuzzed path is ever opened.
 * Checks: every accepted setting is within its documented form (strings
 * terminated, lists within AGD_LIST_MAX, enums known, numbers finite and not
 * negative); a refusal says file:line and why.
 */
#include <getopt.h>
#include <math.h>
#include <sys/mman.h>

#include "process/config.h"
#include "fuzz.h"

#define ARGS_MAX 32

static int memfd = -1;
static char memfd_path[64];

static bool terminated(const char *s, size_t size)
{
	return memchr(s, 0, size) != NULL;
}

static void check_config(const struct agd_config *c)
{
	size_t i;

	FUZZ_CHECK(terminated(c->pin_path, sizeof(c->pin_path)) &&
			   terminated(c->state_dir, sizeof(c->state_dir)) &&
			   terminated(c->listen, sizeof(c->listen)) &&
			   terminated(c->auth_key_file, sizeof(c->auth_key_file)) &&
			   terminated(c->tls_cert, sizeof(c->tls_cert)) &&
			   terminated(c->tls_key, sizeof(c->tls_key)) &&
			   terminated(c->ingest_socket, sizeof(c->ingest_socket)) &&
			   terminated(c->node, sizeof(c->node)),
		   "unterminated string setting");
	FUZZ_CHECK(c->n_attach <= AGD_LIST_MAX && c->n_nats <= AGD_LIST_MAX, "list overflow");
	for (i = 0; i < c->n_attach; i++)
		FUZZ_CHECK(terminated(c->attach[i], sizeof(c->attach[i])) && c->attach[i][0],
			   "attach[%zu]", i);
	for (i = 0; i < c->n_nats; i++)
		FUZZ_CHECK(terminated(c->nats[i], sizeof(c->nats[i])) && c->nats[i][0], "nats[%zu]",
			   i);
	FUZZ_CHECK(!strcmp(c->xdp_mode, "auto") || !strcmp(c->xdp_mode, "native") ||
			   !strcmp(c->xdp_mode, "generic"),
		   "xdp-mode '%.16s'", c->xdp_mode);
	FUZZ_CHECK(c->defaults.unit == AG_UNIT_PPS || c->defaults.unit == AG_UNIT_BPS, "unit");
	FUZZ_CHECK(c->defaults.burst_kind == AGD_BURST_TOKENS ||
			   c->defaults.burst_kind == AGD_BURST_SECONDS,
		   "burst kind");
	FUZZ_CHECK(isfinite(c->defaults.r0) && c->defaults.r0 >= 0 && isfinite(c->defaults.alpha) &&
			   c->defaults.alpha >= 0 && isfinite(c->defaults.r_min) &&
			   c->defaults.r_min >= 0 && isfinite(c->defaults.r_max) &&
			   c->defaults.r_max >= 0 && isfinite(c->defaults.burst) &&
			   c->defaults.burst >= 0,
		   "a rate setting is negative or not finite");
}

/* The config file's text, whole, in the memfd (the harness's own file: a
 * failure is a harness error). */
static void write_file(const uint8_t *p, size_t n)
{
	size_t off = 0;

	while (ftruncate(memfd, 0))
		if (errno != EINTR)
			FUZZ_HARNESS_ERROR("ftruncate on the config memfd: %s", strerror(errno));
	while (off < n) {
		ssize_t w = pwrite(memfd, p + off, n - off, (off_t)off);

		if (w > 0)
			off += (size_t)w;
		else if (w == 0 || errno != EINTR)
			FUZZ_HARNESS_ERROR("writing the config memfd: %s",
					   w ? strerror(errno) : "no progress");
	}
}

/* glibc's getopt keeps a pointer into the last argv it scanned: start it
 * afresh, as a new process would, before the next command line. */
static void reset_getopt(void)
{
	static char *none[] = { "agentgated", NULL };

	optind = 0;
	opterr = 0;
	getopt_long(1, none, "", NULL, NULL);
}

static void fuzz_file_only(void)
{
	struct agd_config *c = malloc(sizeof(*c));
	struct agd_err why = { 0 };

	if (!c)
		abort();
	agd_config_defaults(c);
	if (agd_config_file(c, memfd_path, &why) == 0)
		check_config(c);
	else
		FUZZ_CHECK(!strncmp(why.msg, memfd_path, strlen(memfd_path)) && strchr(why.msg, ':'),
			   "refusal without file:line: %s", why.msg);
	free(c);
}

static void fuzz_command_line(const uint8_t *p, size_t n)
{
	char *argv[ARGS_MAX + 4], *buf = malloc(n + 1);
	struct agd_config *c = malloc(sizeof(*c));
	enum agd_parse_result r;
	int argc = 0;
	size_t i = 0;

	if (!buf || !c)
		abort();
	memcpy(buf, p, n);
	buf[n] = 0;
	argv[argc++] = "agentgated";
	argv[argc++] = "--config";
	argv[argc++] = memfd_path;
	while (i < n && argc < ARGS_MAX + 3) {
		char *w = buf + i;

		if (!strncmp(w, "-c", 2) || !strncmp(w, "--c", 3))
			w = "--quiet";
		argv[argc++] = w;
		i += strlen(buf + i) + 1;
	}
	argv[argc] = NULL;
	reset_getopt();
	r = agd_config_load(c, argc, argv);
	FUZZ_CHECK(r == AGD_RUN || r == AGD_EXIT_OK || r == AGD_EXIT_USAGE, "result %d", r);
	if (r == AGD_RUN) {
		FUZZ_CHECK(c->config_given && !strcmp(c->config, memfd_path), "config path");
		check_config(c);
	}
	reset_getopt();
	free(c);
	free(buf);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_keep_stderr();
	memfd = memfd_create("agentgated.conf", MFD_CLOEXEC);
	if (memfd < 0)
		FUZZ_HARNESS_ERROR("fuzz_config: memfd_create: %s", strerror(errno));
	snprintf(memfd_path, sizeof(memfd_path), "/proc/self/fd/%d", memfd);
	/* --help and --version print on stdout: keep the fuzzer's output readable */
	if (!freopen("/dev/null", "w", stdout))
		FUZZ_HARNESS_ERROR("fuzz_config: stdout to /dev/null: %s", strerror(errno));
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t file_len = nul ? (size_t)(nul - data) : size;

	write_file(data, file_len);
	if (!nul)
		fuzz_file_only();
	else
		fuzz_command_line(nul + 1, size - file_len - 1);
	return 0;
}
