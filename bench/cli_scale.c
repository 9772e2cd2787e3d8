// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Scale: kernel memory per agent, and `agentgate --json agent list` over N
 * agents (default 10^6) against `bpftool -j map dump` of the names map, the
 * generic tool reading the same entries, timed in the same run.
 *
 * Each agent gets one host rule (a /32) and the rule maps are sized for one
 * rule per agent (--no-rules: neither), so the memory is what an agent with
 * its name and one rule costs. Every map sized by agents or rules is read
 * (fdinfo memlock), and its per-CPU part (max_entries x value x possible
 * CPUs, for the per-CPU maps) is reported apart: F + P*C bytes per agent.
 *
 * Usage: cli_scale --bpffs DIR --cli PATH [--agents N] [--runs R] [--json PATH]
 *                  [--no-rules]
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "agentgate.h"
#include "rmtree.h"

struct opts {
	const char *bpffs, *cli, *json;
	unsigned long agents;
	int runs;
	bool no_rules;
};

/* The maps sized by agents or rules (abi.h's list): their memory grows
 * with the host's agents. */
enum { SZ_AGENTS, SZ_RULES, SZ_INDEX, SZ_FIXED };
static const struct {
	const char *name;
	int sizing;
} maps[] = {
#define ROW(id, name, sizing, desc) { #name, SZ_##sizing },
	AG_MAP_LIST(ROW)
#undef ROW
};
#define N_MAPS (sizeof(maps) / sizeof(maps[0]))

struct mem {
	long long total;  /* memlock */
	long long percpu; /* of it, the per-CPU values */
};

static double now_s(void)
{
	return (double)ag_now_ns() / 1e9;
}

/* Run argv with stdout to out_path; wall seconds, or -1 on failure. */
static double timed_run(char *const argv[], const char *out_path)
{
	double t0 = now_s();
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0) {
		int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0)
			_exit(127);
		execvp(argv[0], argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		return -1;
	return now_s() - t0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median_run(char *const argv[], int runs)
{
	double t[32];
	int i;

	for (i = 0; i < runs && i < 32; i++) {
		t[i] = timed_run(argv, "/dev/null");
		if (t[i] < 0)
			return -1;
	}
	qsort(t, i, sizeof(t[0]), cmp_double);
	return t[i / 2];
}

/* Objects in a JSON array of agent objects: count "name" keys. */
static long count_agents(const char *path)
{
	FILE *f = fopen(path, "r");
	const char *key = "\"name\":";
	size_t k = 0, len = strlen(key);
	long n = 0;
	int c;

	if (!f)
		return -1;
	while ((c = fgetc(f)) != EOF) {
		k = c == key[k] ? k + 1 : (c == key[0] ? 1 : 0);
		if (k == len) {
			n++;
			k = 0;
		}
	}
	fclose(f);
	return n;
}

/* Kernel memory of a pinned map: fdinfo's memlock, and its per-CPU part. */
static long long map_memory(const char *root, const char *name, long long *percpu)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);
	char path[1024], line[256];
	long long bytes = -1;
	FILE *f;
	int fd;

	*percpu = 0;
	snprintf(path, sizeof(path), "%s/%s", root, name);
	fd = bpf_obj_get(path);
	if (fd < 0)
		return -1;
	if (!bpf_obj_get_info_by_fd(fd, &info, &len) &&
	    (info.type == BPF_MAP_TYPE_PERCPU_ARRAY || info.type == BPF_MAP_TYPE_PERCPU_HASH ||
	     info.type == BPF_MAP_TYPE_LRU_PERCPU_HASH))
		*percpu = (long long)info.max_entries * ((info.value_size + 7) & ~7u) *
			  libbpf_num_possible_cpus();
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "memlock: %lld", &bytes) == 1)
			break;
	if (f)
		fclose(f);
	close(fd);
	return bytes;
}

static int create_agents(const char *root, unsigned long n, bool rules, double *secs)
{
	struct ag_open_opts o = { .pin_root = root, .create = true, .max_agents = (__u32)n,
				  .max_rules = rules ? (__u32)n : 16 };
	struct ag_agent_update u = { .fields = AG_SET_RATE, .rate = 1000 };
	struct ag_ctx *ctx;
	double t0 = now_s();
	unsigned long i;
	int err = ag_open(&o, &ctx);

	for (i = 0; !err && i < n; i++) {
		char name[32];

		snprintf(name, sizeof(name), "agent-%07lu", i);
		err = ag_agent_set(ctx, name, &u, NULL, NULL);
		if (!err && rules) { /* 10.0.0.0/8 and up: one host each */
			struct ag_rule r = { .family = AF_INET, .plen = 32 };
			__u32 a = htonl(0x0a000000u + (__u32)i);

			memcpy(r.addr, &a, 4);
			err = ag_rule_add(ctx, &r, name);
		}
	}
	if (err)
		fprintf(stderr, "cli_scale: creating agents: %s\n", ag_errmsg());
	ag_close(ctx);
	*secs = now_s() - t0;
	return err;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "bpffs", required_argument, NULL, 'b' }, { "cli", required_argument, NULL, 'c' },
		{ "agents", required_argument, NULL, 'n' }, { "runs", required_argument, NULL, 'r' },
		{ "json", required_argument, NULL, 'j' },   { "no-rules", no_argument, NULL, 'R' },
		{},
	};
	int c;

	o->agents = 1000000;
	o->runs = 5;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'b': o->bpffs = optarg; break;
		case 'c': o->cli = optarg; break;
		case 'n': o->agents = strtoul(optarg, NULL, 10); break;
		case 'r': o->runs = atoi(optarg); break;
		case 'j': o->json = optarg; break;
		case 'R': o->no_rules = true; break;
		default: return -1;
		}
	}
	if (!o->bpffs || !o->cli || o->agents < 1 || o->agents > AG_MAX_AGENTS_LIMIT ||
	    o->runs < 1 || o->runs > 31)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct mem mem[N_MAPS];
	long long total = 0, percpu = 0;
	int cpus = libbpf_num_possible_cpus();
	char root[512], names[600], out[] = "/tmp/agentgate-list.XXXXXX";
	double setup, t_json, t_text, t_bpftool;
	struct utsname un;
	struct opts o = {};
	long listed;
	int i, fd;

	if (parse_args(argc, argv, &o)) {
		fprintf(stderr, "usage: cli_scale --bpffs DIR --cli PATH [--agents N] [--runs R] "
				"[--json PATH] [--no-rules]\n");
		return 2;
	}
	snprintf(root, sizeof(root), "%s/scale", o.bpffs);
	snprintf(names, sizeof(names), "%s/%s", root, AG_MAP_NAMES);
	bench_rm_tree(root); /* a leftover root would be measured as it is */
	if (create_agents(root, o.agents, !o.no_rules, &setup)) {
		bench_rm_tree(root);
		return 1;
	}
	for (i = 0; i < (int)N_MAPS; i++) {
		mem[i].percpu = 0;
		mem[i].total = maps[i].sizing == SZ_FIXED ? 0 :
							     map_memory(root, maps[i].name, &mem[i].percpu);
		if (mem[i].total < 0) { /* not pinned (created by a program load) */
			mem[i].total = 0;
			mem[i].percpu = 0;
		}
		total += mem[i].total;
		percpu += mem[i].percpu;
	}
	{
		char *json_list[] = { (char *)o.cli, "--pin-path", root, "--json", "agent", "list",
				      NULL };
		char *text_list[] = { (char *)o.cli, "--pin-path", root, "agent", "list", NULL };
		char *dump[] = { "bpftool", "-j", "map", "dump", "pinned", names, NULL };

		fd = mkstemp(out);
		if (fd < 0) {
			bench_rm_tree(root);
			return 1;
		}
		close(fd);
		if (timed_run(json_list, out) < 0) {
			fprintf(stderr, "cli_scale: %s agent list failed\n", o.cli);
			unlink(out);
			bench_rm_tree(root);
			return 1;
		}
		listed = count_agents(out);
		unlink(out);
		/* Interleave the three so that load on the machine hits all alike. */
		t_json = median_run(json_list, o.runs);
		t_bpftool = median_run(dump, o.runs);
		t_text = median_run(text_list, o.runs);
	}
	uname(&un);
	{
		time_t t = time(NULL);
		char when[32];

		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
		printf("agentgate scale\n  date      %s  agents %lu  runs %d\n  kernel    %s  "
		       "nproc %ld\n",
		       when, o.agents, o.runs, un.release, sysconf(_SC_NPROCESSORS_ONLN));
	}
	printf("  setup     %.2f s (%.1f us per agent)\n", setup, setup / o.agents * 1e6);
	printf("kernel memory (fdinfo memlock), agents %s, %d possible CPUs\n",
	       o.no_rules ? "without rules" : "with one host rule each (rule maps sized for one "
					      "per agent)",
	       cpus);
	for (i = 0; i < (int)N_MAPS; i++)
		if (maps[i].sizing != SZ_FIXED)
			printf("  %-15s %12lld bytes  %8.1f per agent%s\n", maps[i].name,
			       mem[i].total, (double)mem[i].total / o.agents,
			       mem[i].percpu ? " (per-CPU values)" : "");
	printf("  %-15s %12lld bytes  %8.1f per agent (goal <= 256, independent of C)\n", "total",
	       total, (double)total / o.agents);
	printf("  formula         %.1f + %.1f * C bytes per agent (C possible CPUs; C = 64: %.1f)\n",
	       (double)(total - percpu) / o.agents, (double)percpu / o.agents / cpus,
	       (double)(total - percpu) / o.agents + (double)percpu / o.agents / cpus * 64);
	printf("listing %ld agents (median of %d)\n", listed, o.runs);
	printf("  agentgate --json agent list   %7.3f s (goal <= 1 s)\n", t_json);
	printf("  agentgate agent list          %7.3f s\n", t_text);
	printf("  bpftool -j map dump ag_names  %7.3f s (baseline)\n", t_bpftool);
	printf("  ratio json list / bpftool     %7.2f\n", t_json / t_bpftool);
	if (o.json) {
		FILE *f = fopen(o.json, "w");

		if (f) {
			fprintf(f,
				"{\"agents\":%lu,\"rules\":%s,\"listed\":%ld,\"setup_s\":%.3f,"
				"\"memory_bytes\":{",
				o.agents, o.no_rules ? "false" : "true", listed, setup);
			for (i = 0; i < (int)N_MAPS; i++)
				if (maps[i].sizing != SZ_FIXED)
					fprintf(f, "\"%s\":%lld,", maps[i].name, mem[i].total);
			fprintf(f,
				"\"total\":%lld,\"percpu\":%lld},\"bytes_per_agent\":%.1f,"
				"\"fixed_per_agent\":%.1f,\"per_cpu_per_agent\":%.1f,\"cpus\":%d,"
				"\"list_json_s\":%.3f,\"list_text_s\":%.3f,\"bpftool_dump_s\":%.3f,"
				"\"ratio\":%.3f}\n",
				total, percpu, (double)total / o.agents,
				(double)(total - percpu) / o.agents, (double)percpu / o.agents / cpus,
				cpus, t_json, t_text, t_bpftool, t_json / t_bpftool);
			fclose(f);
		}
	}
	bench_rm_tree(root);
	return listed == (long)o.agents ? 0 : 1;
}
