// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * agentgate: inspect and edit agentgate's pinned maps, with or without the
 * daemon. bpftool-style: agentgate [OPTIONS] OBJECT [VERB] [ARGS...], objects
 * and verbs matched by unambiguous prefix.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#ifndef AG_VERSION
#define AG_VERSION "unknown"
#endif

static const char *global_options =
	"  -j, --json           JSON output (errors too, on stdout)\n"
	"  -p, --pretty         indented JSON (implies --json)\n"
	"      --pin-path DIR   pin root of the maps (default " AG_PIN_ROOT_DEFAULT ")\n"
	"      --state-dir DIR  agentgated's state, for agent explain (default /var/lib/agentgate)\n"
	"  -h, --help           help; also alone after a command (agentgate agent set --help)\n"
	"  -V, --version        print the version\n"
	"      --man            print the manual page (roff)\n";

bool is_prefix(const char *word, const char *full)
{
	size_t n = strlen(word);

	return n > 0 && strncmp(word, full, n) == 0;
}

static void synopsis(const struct command *c, FILE *out)
{
	fprintf(out, "agentgate %s%s%s%s%s", c->object, c->verb ? " " : "", c->verb ? c->verb : "",
		c->args[0] ? " " : "", c->args);
}

void print_help(const struct command *cmd, FILE *out)
{
	const char *last = NULL;
	size_t i;

	if (cmd) {
		fputs("Usage: ", out);
		synopsis(cmd, out);
		fprintf(out, "\n\n%s.\n", cmd->summary);
		if (cmd->details)
			fprintf(out, "\n%s\n", cmd->details);
		return;
	}
	fputs("Usage: agentgate [OPTIONS] OBJECT [VERB] [ARGS...]\n\nCommands:\n", out);
	for (i = 0; i < n_commands; i++) {
		if (last && strcmp(last, commands[i].object) && commands[i].verb)
			fputc('\n', out);
		fputs("  ", out);
		synopsis(&commands[i], out);
		fputc('\n', out);
		last = commands[i].object;
	}
	fprintf(out, "\nOptions:\n%s\nObjects and verbs may be abbreviated to any unambiguous "
		     "prefix. 'agentgate OBJECT help' lists an object's verbs.\n",
		global_options);
}

/* Help for every verb of one object. */
static void print_object_help(const char *object, FILE *out)
{
	size_t i;

	for (i = 0; i < n_commands; i++)
		if (!strcmp(commands[i].object, object)) {
			fputs("  ", out);
			synopsis(&commands[i], out);
			fprintf(out, "\n      %s\n", commands[i].summary);
		}
}

int cli_error(struct cli *cli, int code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (cli->json) {
		struct jsonw w;

		jsonw_init(&w, stdout, cli->pretty);
		jsonw_start_object(&w);
		jsonw_string_field(&w, "error", code == EXIT_USAGE ? "invalid_argument" : "failed");
		jsonw_string_field(&w, "message", msg);
		jsonw_end_object(&w);
		jsonw_end_document(&w);
	} else {
		fprintf(stderr, "agentgate: %s\n", msg);
	}
	return code;
}

int cli_lib_error(struct cli *cli, int err)
{
	/* Invalid values are usage errors; the rest is the world saying no. */
	return cli_error(cli, err == -EINVAL || err == -ERANGE ? EXIT_USAGE : EXIT_RUNTIME, "%s",
			 ag_errmsg());
}

int cli_usage(struct cli *cli, const char *fmt, ...)
{
	const struct command *cmd = cli->cmd;
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (cmd && !cli->json) {
		fprintf(stderr, "agentgate: %s\nUsage: ", msg);
		synopsis(cmd, stderr);
		fputc('\n', stderr);
		return EXIT_USAGE;
	}
	return cli_error(cli, EXIT_USAGE, "%s", msg);
}

/* Find the unique command matching object (and verb) by prefix; exact
 * names win over longer ones they prefix. */
static int match(struct cli *cli, const char *word, const char *object, const char **found)
{
	const char *hit = NULL, *names[32];
	size_t i, n = 0;

	for (i = 0; i < n_commands; i++) {
		const char *name = object ? commands[i].verb : commands[i].object;
		size_t k;

		if (!name || (object && strcmp(commands[i].object, object)))
			continue;
		if (!strcmp(word, name)) {
			*found = name;
			return 0;
		}
		if (!is_prefix(word, name))
			continue;
		for (k = 0; k < n && strcmp(names[k], name); k++)
			;
		if (k == n && n < 32)
			names[n++] = name;
		hit = name;
	}
	if (n == 1) {
		*found = hit;
		return 0;
	}
	if (n == 0)
		return object ? cli_error(cli, EXIT_USAGE,
					  "unknown command '%s %s' (try 'agentgate %s help')",
					  object, word, object) :
				cli_error(cli, EXIT_USAGE,
					  "unknown object '%s' (try 'agentgate --help')", word);
	{
		char list[256] = "";

		for (i = 0; i < n; i++) {
			strncat(list, i ? ", " : "", sizeof(list) - strlen(list) - 1);
			strncat(list, names[i], sizeof(list) - strlen(list) - 1);
		}
		return cli_error(cli, EXIT_USAGE, "'%s' is ambiguous: %s", word, list);
	}
}

static const struct command *find(const char *object, const char *verb)
{
	size_t i;

	for (i = 0; i < n_commands; i++)
		if (!strcmp(commands[i].object, object) &&
		    (!verb ? !commands[i].verb : commands[i].verb && !strcmp(commands[i].verb, verb)))
			return &commands[i];
	return NULL;
}

static bool wants_help(const char *word)
{
	return !strcmp(word, "help") || !strcmp(word, "--help") || !strcmp(word, "-h");
}

int cli_open(struct cli *cli, enum open_mode mode)
{
	struct ag_open_opts o = {
		.pin_root = cli->pin_path,
		.create = mode == OPEN_CREATE,
		.read_only = mode == OPEN_READ,
		.max_agents = cli->max_agents,
		.max_rules = cli->max_rules,
	};
	int err = ag_open(&o, &cli->ctx);

	return err ? cli_lib_error(cli, err) : 0;
}

static int run(struct cli *cli, int argc, char **argv)
{
	const struct command *cmd;
	const char *object, *verb = NULL;
	int err;

	err = match(cli, argv[0], NULL, &object);
	if (err)
		return err;
	cmd = find(object, NULL);
	if (!cmd) { /* an object with verbs */
		if (argc < 2 && cli->json)
			return cli_error(cli, EXIT_USAGE, "'%s' needs a verb (try 'agentgate %s help')",
					 object, object);
		if (argc < 2 || wants_help(argv[1])) {
			fprintf(argc < 2 ? stderr : stdout, "Usage: agentgate %s VERB ...\n\n", object);
			print_object_help(object, argc < 2 ? stderr : stdout);
			return argc < 2 ? EXIT_USAGE : 0;
		}
		err = match(cli, argv[1], object, &verb);
		if (err)
			return err;
		cmd = find(object, verb);
		argc--, argv++;
	}
	argc--, argv++;
	/* Only a lone --help or -h: "help" and the rest are valid agent names. */
	if (argc == 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
		print_help(cmd, stdout);
		return 0;
	}
	/* attach parses its sizing options first and opens for itself */
	if (cmd->open != OPEN_NONE && cmd->open != OPEN_CREATE) {
		err = cli_open(cli, cmd->open);
		if (err)
			return err;
	}
	jsonw_init(&cli->jw, stdout, cli->pretty);
	cli->cmd = cmd;
	err = cmd->run(cli, argc, argv);
	ag_close(cli->ctx);
	cli->ctx = NULL;
	return err;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "pretty", no_argument, NULL, 'p' },
		{ "pin-path", required_argument, NULL, 'P' },
		{ "state-dir", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "man", no_argument, NULL, 'M' },
		{},
	};
	struct cli cli = { .state_dir = "/var/lib/agentgate", .owner_fd = -1 };
	static char outbuf[1 << 20];
	int c;

	setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf)); /* listings can be 10^6 rows */
	cli.pin_path = getenv("AGENTGATE_PIN_PATH");
	/* JSON mode must report bad options as JSON, so getopt stays quiet and
	 * the options are scanned for -j first. */
	opterr = 0;
	for (c = 1; c < argc && argv[c][0] == '-'; c++)
		if (!strcmp(argv[c], "-j") || !strcmp(argv[c], "--json") ||
		    !strcmp(argv[c], "-p") || !strcmp(argv[c], "--pretty"))
			cli.json = true;
	/* Stop at the first non-option: the rest belongs to the command. */
	while ((c = getopt_long(argc, argv, "+:jphV", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			cli.json = true;
			break;
		case 'p':
			cli.json = cli.pretty = true;
			break;
		case 'P':
			cli.pin_path = optarg;
			break;
		case 'S':
			cli.state_dir = optarg;
			break;
		case 'h':
			print_help(NULL, stdout);
			return 0;
		case 'V':
			printf("agentgate %s\n", AG_VERSION);
			return 0;
		case 'M':
			print_manual(stdout);
			return 0;
		case ':':
			return cli_error(&cli, EXIT_USAGE, "option '%s' needs a value",
					 argv[optind - 1]);
		default:
			return cli_error(&cli, EXIT_USAGE, "unknown option '%s' (try --help)",
					 argv[optind - 1]);
		}
	}
	if (optind >= argc) {
		print_help(NULL, stderr);
		return EXIT_USAGE;
	}
	return run(&cli, argc - optind, argv + optind);
}
