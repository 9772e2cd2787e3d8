// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * agentgate top: per-agent rates over each interval. On a terminal it
 * redraws in place with the terminal in raw mode (q quits) and restores the
 * terminal on every way out; otherwise it prints one frame (or, with --json,
 * one JSON document) per interval.
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static volatile sig_atomic_t stop;
static struct termios saved_tty;
static bool tty_raw;

static void on_signal(int sig)
{
	stop = 1;
}

static void restore_terminal(void)
{
	if (tty_raw) {
		tcsetattr(STDIN_FILENO, TCSANOW, &saved_tty);
		tty_raw = false;
	}
	if (isatty(STDOUT_FILENO))
		fputs("\033[?25h", stdout); /* cursor back */
	fflush(stdout);
}

/* Keys without Enter, no echo; Ctrl-C still raises SIGINT. */
static void raw_terminal(void)
{
	struct termios t;

	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_tty))
		return;
	t = saved_tty;
	t.c_lflag &= ~(ICANON | ECHO);
	t.c_cc[VMIN] = 0;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0)
		tty_raw = true;
	fputs("\033[?25l", stdout); /* hide the cursor while redrawing */
}

static void catch_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal }; /* no SA_RESTART: wake poll */

	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

/* Wait one interval; false when the user asked to quit. */
static bool wait_interval(double seconds)
{
	struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };
	double end = (double)ag_now_ns() / 1e9 + seconds;

	while (!stop) {
		double left = end - (double)ag_now_ns() / 1e9;
		char key;

		if (left <= 0)
			return true;
		if (!tty_raw) {
			struct timespec ts = { (time_t)left, (long)((left - floor(left)) * 1e9) };

			nanosleep(&ts, NULL);
			continue;
		}
		if (poll(&pfd, 1, (int)(left * 1000) + 1) > 0 && read(STDIN_FILENO, &key, 1) == 1 &&
		    (key == 'q' || key == 'Q'))
			return false;
	}
	return false;
}

struct top_row {
	struct agent_row r;
	double passed_pps, dropped_pps, passed_Bps, dropped_Bps;
};

static int sort_key;

static int compare(const void *a, const void *b)
{
	const struct top_row *x = a, *y = b;

	if (sort_key == SORT_DROPS && x->dropped_pps != y->dropped_pps)
		return x->dropped_pps > y->dropped_pps ? -1 : 1;
	if (sort_key == SORT_RATE && x->r.a.rate != y->r.a.rate)
		return x->r.a.rate > y->r.a.rate ? -1 : 1;
	return strcmp(x->r.a.name, y->r.a.name);
}

/* Previous counters per slot, to turn totals into rates. */
struct history {
	struct ag_counters *c;
	__u64 *created; /* a slot reused by a new agent starts over */
	__u64 t_ns;
};

static double per_second(__u64 now, __u64 before, double dt)
{
	return now >= before && dt > 0 ? (double)(now - before) / dt : 0;
}

static int frame_rows(struct cli *cli, struct history *h, struct top_row **out, size_t *n,
		      double *dt)
{
	struct agent_row *rows;
	struct top_row *tr;
	__u64 now = ag_now_ns();
	size_t i;
	int err = load_rows(cli, &rows, n);

	if (err)
		return err;
	tr = calloc(*n ? *n : 1, sizeof(*tr));
	if (!tr) {
		free(rows);
		return cli_error(cli, EXIT_RUNTIME, "out of memory");
	}
	*dt = h->t_ns ? (double)(now - h->t_ns) / 1e9 : 0;
	for (i = 0; i < *n; i++) {
		__u32 s = rows[i].a.slot;
		const struct ag_counters *c = &rows[i].c, *p = &h->c[s];
		bool same = h->created[s] == rows[i].a.created_ns;

		tr[i].r = rows[i];
		tr[i].passed_pps = same ? per_second(c->passed_packets, p->passed_packets, *dt) : 0;
		tr[i].dropped_pps = same ? per_second(c->dropped_packets, p->dropped_packets, *dt) : 0;
		tr[i].passed_Bps = same ? per_second(c->passed_bytes, p->passed_bytes, *dt) : 0;
		tr[i].dropped_Bps = same ? per_second(c->dropped_bytes, p->dropped_bytes, *dt) : 0;
		h->c[s] = *c;
		h->created[s] = rows[i].a.created_ns;
	}
	h->t_ns = now;
	free(rows);
	qsort(tr, *n, sizeof(*tr), compare);
	*out = tr;
	return 0;
}

static void print_json_frame(struct cli *cli, const struct top_row *tr, size_t n, double dt)
{
	struct jsonw *w = &cli->jw;
	struct timespec ts;
	size_t i;

	clock_gettime(CLOCK_REALTIME, &ts);
	jsonw_start_object(w);
	jsonw_uint_field(w, "time_ms", (__u64)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
	jsonw_double_field(w, "interval_s", round(dt * 1000) / 1000);
	jsonw_name(w, "agents");
	jsonw_start_array(w);
	for (i = 0; i < n; i++) {
		jsonw_start_object(w);
		jsonw_string_field(w, "name", tr[i].r.a.name);
		jsonw_uint_field(w, "slot", tr[i].r.a.slot);
		jsonw_double_field(w, "rate", tr[i].r.a.rate);
		jsonw_uint_field(w, "burst", tr[i].r.a.burst);
		jsonw_string_field(w, "unit", unit_name(tr[i].r.a.unit));
		jsonw_double_field(w, "tokens", floor(tr[i].r.tokens * 1000) / 1000);
		jsonw_double_field(w, "passed_pps", round(tr[i].passed_pps * 10) / 10);
		jsonw_double_field(w, "dropped_pps", round(tr[i].dropped_pps * 10) / 10);
		jsonw_double_field(w, "passed_bytes_per_s", round(tr[i].passed_Bps));
		jsonw_double_field(w, "dropped_bytes_per_s", round(tr[i].dropped_Bps));
		jsonw_end_object(w);
	}
	jsonw_end_array(w);
	jsonw_end_object(w);
	jsonw_end_document(w);
	fflush(stdout);
}

static size_t terminal_rows(void)
{
	struct winsize ws;

	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 4)
		return ws.ws_row - 3;
	return SIZE_MAX;
}

static const struct table_col top_cols[] = {
	{ "NAME", TABLE_LEFT },
	{ "RATE", TABLE_RIGHT },
	{ "BURST", TABLE_RIGHT },
	{ "UNIT", TABLE_RIGHT },
	{ "TOKENS", TABLE_RIGHT },
	{ "PASSED/s", TABLE_RIGHT },
	{ "DROPPED/s", TABLE_RIGHT },
};

/* total agents, of which shown rows: "1 agent", "22 agents", or "22 agents,
 * 1 shown (--limit 1)" (or "(terminal height)" when the window is the cut). */
static void count_text(char *buf, size_t len, size_t total, size_t shown, __u64 limit)
{
	int k = snprintf(buf, len, "%zu %s", total, total == 1 ? "agent" : "agents");

	if (shown == total || k < 0 || (size_t)k >= len)
		return;
	if (limit == shown)
		snprintf(buf + k, len - k, ", %zu shown (--limit %llu)", shown,
			 (unsigned long long)limit);
	else
		snprintf(buf + k, len - k, ", %zu shown (terminal height)", shown);
}

/* A frame: title, then the rows shown (--limit, and on a terminal its
 * height) in columns as wide as their content. total: every agent. */
static int print_text_frame(struct cli *cli, const struct top_row *tr, size_t total, __u64 limit,
			    bool redraw)
{
	size_t i, shown = total < limit ? total : (size_t)limit;
	size_t rows = redraw ? terminal_rows() : SIZE_MAX;
	struct table *t = table_new(top_cols, sizeof(top_cols) / sizeof(top_cols[0]));
	char when[32], count[96];
	time_t now = time(NULL);
	int err;

	if (!t)
		return cli_error(cli, EXIT_RUNTIME, "out of memory");
	if (shown > rows)
		shown = rows;
	for (i = 0; i < shown; i++) {
		table_text(t, tr[i].r.a.name);
		table_cell(t, "%.6g", tr[i].r.a.rate);
		table_uint(t, tr[i].r.a.burst);
		table_text(t, unit_name(tr[i].r.a.unit));
		table_cell(t, "%.1f", tr[i].r.tokens);
		table_cell(t, "%.1f", tr[i].passed_pps);
		table_cell(t, "%.1f", tr[i].dropped_pps);
	}
	strftime(when, sizeof(when), "%H:%M:%S", localtime(&now));
	count_text(count, sizeof(count), total, shown, limit);
	if (redraw)
		fputs("\033[H\033[2J", stdout);
	printf("agentgate top  %s  %s  %s%s\n", when, count, ag_pin_root(cli->ctx),
	       redraw ? "  (q quits)" : "");
	err = table_print(t, stdout);
	table_free(t);
	if (err)
		return cli_error(cli, EXIT_RUNTIME, "out of memory");
	if (!redraw)
		putchar('\n');
	fflush(stdout);
	return 0;
}

struct top_opts {
	__u64 limit, count;
	double interval;
};

static int parse_top(struct cli *cli, int argc, char **argv, struct top_opts *o)
{
	int i, err = 0;

	o->limit = o->count = UINT64_MAX;
	o->interval = 1.0;
	sort_key = SORT_DROPS;
	for (i = 0; i < argc && !err; i++) {
		if (i + 1 >= argc)
			return cli_usage(cli, "unexpected argument '%s'", argv[i]);
		if (!strcmp(argv[i], "--sort")) {
			err = parse_sort(cli, argv[++i], &sort_key);
		} else if (!strcmp(argv[i], "--limit")) {
			err = parse_count(cli, "limit", argv[++i], &o->limit);
		} else if (!strcmp(argv[i], "--count")) {
			err = parse_count(cli, "count", argv[++i], &o->count);
		} else if (!strcmp(argv[i], "--interval")) {
			char *end;

			o->interval = strtod(argv[++i], &end);
			if (*end || !(o->interval >= 0.1 && o->interval <= 3600))
				return cli_error(cli, EXIT_USAGE,
						 "invalid interval '%s' (0.1 to 3600 seconds)", argv[i]);
		} else {
			return cli_usage(cli, "unexpected argument '%s'", argv[i]);
		}
	}
	return err;
}

int do_top(struct cli *cli, int argc, char **argv)
{
	struct history h = {};
	struct top_opts o;
	bool redraw = !cli->json && isatty(STDOUT_FILENO);
	__u64 frames = 0;
	int err;

	err = parse_top(cli, argc, argv, &o);
	if (err)
		return err;
	h.c = calloc(ag_max_agents(cli->ctx), sizeof(*h.c));
	h.created = calloc(ag_max_agents(cli->ctx), sizeof(*h.created));
	if (!h.c || !h.created) {
		free(h.c);
		free(h.created);
		return cli_error(cli, EXIT_RUNTIME, "out of memory");
	}
	catch_signals();
	if (redraw) {
		raw_terminal();
		atexit(restore_terminal);
	}
	/* A first snapshot: every frame shows rates over a whole interval. */
	{
		struct top_row *tr;
		size_t n;
		double dt;

		err = frame_rows(cli, &h, &tr, &n, &dt);
		free(err ? NULL : tr);
	}
	while (!err && frames < o.count && wait_interval(o.interval)) {
		struct top_row *tr;
		size_t n;
		double dt;

		err = frame_rows(cli, &h, &tr, &n, &dt);
		if (err)
			break;
		if (cli->json)
			print_json_frame(cli, tr, o.limit < n ? o.limit : n, dt);
		else
			err = print_text_frame(cli, tr, n, o.limit, redraw);
		free(tr);
		frames++;
	}
	if (redraw)
		restore_terminal();
	free(h.c);
	free(h.created);
	return err;
}
