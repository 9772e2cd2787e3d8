// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The option table as people read it: --help, and --check-man, which holds
 * the manual page's OPTIONS section to the table (config.c). */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "config.h"
#include "config_int.h"

/* ---- --help ---------------------------------------------------------------- */

void agd_usage(FILE *f)
{
	struct agd_config *d = malloc(sizeof(*d));
	size_t i;

	if (d)
		agd_config_defaults(d);
	fprintf(f, "Usage: agentgated [OPTIONS]\n\n"
		   "agentgated turns user ratings of AI agents into the refill rates of their\n"
		   "token buckets in the agentgate XDP datapath, and serves the HTTP API.\n\n"
		   "Options (each also a config file key without the dashes):\n");
	for (i = 0; i < agd_n_opts; i++) {
		const struct opt *o = &agd_opts[i];
		char left[64], text[300], extra[700] = "";
		size_t n = 0;

		snprintf(left, sizeof(left), "--%s%s%s", o->name, o->arg ? " " : "",
			 o->arg ? o->arg : "");
		if (o->kind == K_LIST)
			n += snprintf(extra + n, sizeof(extra) - n, "repeatable");
		if (d && agd_opt_default_text(o, d, text, sizeof(text)))
			n += snprintf(extra + n, sizeof(extra) - n, "%sdefault %s", n ? ", " : "",
				      text);
		if (n < sizeof(extra) && agd_opt_bounds_text(o, text, sizeof(text)))
			n += snprintf(extra + n, sizeof(extra) - n, "%s%s%s", n ? ", " : "", text,
				      o->fleet ? " with --nats" : "");
		if (n < sizeof(extra) && o->reload)
			snprintf(extra + n, sizeof(extra) - n, "%sreloads on SIGHUP", n ? "; " : "");
		fprintf(f, "  %-28s %s%s%s%s\n", left, o->help, extra[0] ? " (" : "", extra,
			extra[0] ? ")" : "");
	}
	fprintf(f, "  %-28s %s\n  %-28s %s\n  %-28s %s\n", "-h, --help", "show this help",
		"-V, --version", "show the version", "--check-man FILE",
		"check that the manual page FILE documents every option as this table has it");
	free(d);
}

/* ---- --check-man: the manual page against the table ------------------------ */

struct sbuf {
	char *p;
	size_t len, cap;
};

static void sb_putc(struct sbuf *sb, char ch)
{
	if (sb->len + 2 > sb->cap) {
		size_t cap = sb->cap ? sb->cap * 2 : 256;
		char *p = realloc(sb->p, cap);

		if (!p)
			abort();
		sb->p = p;
		sb->cap = cap;
	}
	sb->p[sb->len++] = ch;
	sb->p[sb->len] = 0;
}

/* Roff text as it reads: fonts dropped, \- as -, glyphs as one character. */
static void roff_text(struct sbuf *sb, const char *s, const char *end)
{
	while (s < end) {
		if (*s != '\\') {
			sb_putc(sb, *s++);
			continue;
		}
		if (++s >= end)
			break;
		switch (*s) {
		case '-':
			sb_putc(sb, '-');
			s++;
			break;
		case 'e':
			sb_putc(sb, '\\');
			s++;
			break;
		case 'f': /* \fB, \f(CW */
			s++;
			s += s < end && *s == '(' ? 3 : 1;
			break;
		case '(': /* \(mu */
			sb_putc(sb, end - s >= 3 && !strncmp(s + 1, "mu", 2) ? 'x' : '?');
			s += 3;
			break;
		case '&':
		case '%':
			s++;
			break;
		case '"': /* comment */
			s = end;
			break;
		default:
			sb_putc(sb, *s++);
			break;
		}
	}
}

/* Of a request line, the index of its font macro; -1: another request. */
static int font_macro(const char *line)
{
	static const char *const fonts[] = { "B", "I", "SM", "SB", "BI", "BR", "IB", "IR", "RB", "RI" };
	size_t i, n = strcspn(line + 1, " ");

	for (i = 0; i < sizeof(fonts) / sizeof(fonts[0]); i++)
		if (strlen(fonts[i]) == n && !strncmp(fonts[i], line + 1, n))
			return (int)i;
	return -1;
}

/* Text, or a font macro's (other requests are no text). */
static bool roff_is_text(const char *line)
{
	return (line[0] != '.' && line[0] != '\'') || font_macro(line) >= 0;
}

/* One line of text (roff_is_text) appended as it reads. */
static void roff_line(struct sbuf *sb, const char *line)
{
	const char *s = line + 1 + strcspn(line + 1, " "), *arg;
	size_t nargs = 0;
	bool alternate;

	if (line[0] != '.' && line[0] != '\'') {
		roff_text(sb, line, line + strlen(line));
		sb_putc(sb, ' ');
		return;
	}
	alternate = font_macro(line) >= 4; /* BI, BR...: arguments joined, no space */
	for (;;) {
		while (*s == ' ')
			s++;
		if (!*s)
			break;
		if (*s == '"') {
			arg = ++s;
			while (*s && *s != '"')
				s++;
		} else {
			arg = s;
			while (*s && *s != ' ')
				s++;
		}
		if (nargs++ && !alternate)
			sb_putc(sb, ' ');
		roff_text(sb, arg, s);
		if (*s == '"')
			s++;
	}
	sb_putc(sb, ' ');
}

/* Runs of white space as one space. */
static void squeeze(struct sbuf *sb)
{
	size_t i, n = 0;

	for (i = 0; sb->p && i < sb->len; i++)
		if (!isspace((unsigned char)sb->p[i]))
			sb->p[n++] = sb->p[i];
		else if (n && sb->p[n - 1] != ' ')
			sb->p[n++] = ' ';
	if (n && sb->p[n - 1] == ' ')
		n--;
	sb->len = n;
	if (sb->p)
		sb->p[n] = 0;
}

static bool word_char(char ch)
{
	return isalnum((unsigned char)ch) || ch == '-' || ch == '_' || ch == '/' || ch == ':';
}

/* needle in text as a whole phrase: not inside a longer name or number. */
static const char *find_phrase(const char *text, const char *needle)
{
	const char *p = text;
	size_t n = strlen(needle);

	while (text && (p = strstr(p, needle))) {
		const char *e = p + n;
		bool before = p == text || !(isalnum((unsigned char)p[-1]) || p[-1] == '-');
		bool after = !word_char(*e) && !(*e == '.' && isalnum((unsigned char)e[1]));

		if (before && after)
			return p;
		p++;
	}
	return NULL;
}

struct man_par {
	struct sbuf tag; /* a .TP entry's tag; empty: a paragraph */
	struct sbuf text;
	bool entry;
};

static bool known_option(const char *name, size_t n, bool reload_only)
{
	static const char *const actions[] = { "help", "version", "check-man" };
	size_t i;

	for (i = 0; i < agd_n_opts; i++)
		if (strlen(agd_opts[i].name) == n && !strncmp(agd_opts[i].name, name, n))
			return !reload_only || agd_opts[i].reload;
	for (i = 0; !reload_only && i < sizeof(actions) / sizeof(actions[0]); i++)
		if (strlen(actions[i]) == n && !strncmp(actions[i], name, n))
			return true;
	return false;
}

/* Every --NAME in text is an option (a reloadable one); 0 or the problems. */
static int names_known(const char *path, const char *text, bool reload_only, const char *where)
{
	const char *p = text;
	int bad = 0;

	while ((p = strstr(p, "--"))) {
		const char *name = p + 2, *e = name;

		if (p > text && (isalnum((unsigned char)p[-1]) || p[-1] == '-')) {
			p = name;
			continue;
		}
		while (islower((unsigned char)*e) || isdigit((unsigned char)*e) || *e == '-')
			e++;
		if (e > name && !known_option(name, (size_t)(e - name), reload_only)) {
			fprintf(stderr, "agentgated: %s: %s names --%.*s, which %s\n", path, where,
				(int)(e - name), name,
				reload_only ? "SIGHUP does not apply" : "is no option of agentgated");
			bad++;
		}
		p = e;
	}
	return bad;
}

static int man_check_pars(const char *path, struct man_par *pars, size_t n_pars)
{
	struct agd_config *d = malloc(sizeof(*d));
	const struct man_par *sighup = NULL;
	char want[400], text[300], where[80];
	int bad = 0;
	size_t i, j;

	if (!d)
		abort();
	agd_config_defaults(d);
	for (j = 0; j < n_pars; j++)
		if (!pars[j].entry && pars[j].text.p && !strncmp(pars[j].text.p, "SIGHUP applies ", 15))
			sighup = &pars[j];
	if (!sighup) {
		fprintf(stderr, "agentgated: %s: OPTIONS has no paragraph 'SIGHUP applies ...' "
			"naming the options a reload applies\n", path);
		bad++;
	}
	for (i = 0; i < agd_n_opts; i++) {
		const struct opt *o = &agd_opts[i];
		const struct man_par *e = NULL;

		snprintf(want, sizeof(want), "--%s", o->name);
		for (j = 0; j < n_pars && !e; j++)
			if (pars[j].entry && find_phrase(pars[j].tag.p, want))
				e = &pars[j];
		if (!e) {
			fprintf(stderr, "agentgated: %s: OPTIONS has no entry for --%s\n", path, o->name);
			bad++;
			continue;
		}
		if (o->arg) {
			snprintf(want, sizeof(want), "--%s %s", o->name, o->arg);
			if (!find_phrase(e->tag.p, want)) {
				fprintf(stderr, "agentgated: %s: the entry of --%s does not show '%s'\n",
					path, o->name, want);
				bad++;
			}
		}
		if (agd_opt_default_text(o, d, text, sizeof(text))) {
			char colon[400];

			snprintf(want, sizeof(want), "default %s", text);
			snprintf(colon, sizeof(colon), "default: %s", text);
			if (!find_phrase(e->text.p, want) && !find_phrase(e->text.p, colon)) {
				fprintf(stderr, "agentgated: %s: the entry of --%s does not say '%s'\n",
					path, o->name, want);
				bad++;
			}
		}
		if (agd_opt_bounds_text(o, text, sizeof(text)) && !find_phrase(e->text.p, text)) {
			fprintf(stderr, "agentgated: %s: the entry of --%s does not say '%s'\n", path,
				o->name, text);
			bad++;
		}
		snprintf(want, sizeof(want), "--%s", o->name);
		if (o->reload && sighup && !find_phrase(sighup->text.p, want)) {
			fprintf(stderr, "agentgated: %s: the paragraph 'SIGHUP applies ...' of OPTIONS "
				"does not name --%s\n", path, o->name);
			bad++;
		}
	}
	for (j = 0; j < n_pars; j++)
		if (pars[j].entry) {
			snprintf(where, sizeof(where), "the OPTIONS entry '%.40s'",
				 pars[j].tag.p ? pars[j].tag.p : "");
			bad += names_known(path, pars[j].tag.p ? pars[j].tag.p : "", false, where);
		}
	if (sighup)
		bad += names_known(path, sighup->text.p, true, "the paragraph 'SIGHUP applies ...'");
	free(d);
	return bad;
}

/* The OPTIONS section of the manual page FILE against the table: 0, or the
 * number of problems, each printed. */
int agd_man_check(const char *path)
{
	struct man_par *pars = NULL;
	size_t n_pars = 0, i;
	bool in = false, want_tag = false, seen = false;
	char *line = NULL;
	size_t cap = 0;
	ssize_t got;
	int bad;
	FILE *f = fopen(path, "re");

	if (!f) {
		fprintf(stderr, "agentgated: %s: %s\n", path, strerror(errno));
		return 1;
	}
	while ((got = getline(&line, &cap, f)) >= 0) {
		bool tp, pp;

		while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
			line[--got] = 0;
		if (!strncmp(line, ".SH", 3) && (line[3] == ' ' || !line[3])) {
			char *name = line + 3;

			if (in)
				break;
			while (*name == ' ' || *name == '"')
				name++;
			in = !strncmp(name, "OPTIONS", 7);
			seen |= in;
			continue;
		}
		if (!in || !strncmp(line, ".\\\"", 3))
			continue;
		tp = !strcmp(line, ".TP") || !strncmp(line, ".TP ", 4);
		pp = !strcmp(line, ".PP") || !strcmp(line, ".P") || !strcmp(line, ".LP");
		if (tp || pp || (!n_pars && roff_is_text(line))) {
			struct man_par *np = realloc(pars, (n_pars + 1) * sizeof(*pars));

			if (!np)
				abort();
			pars = np;
			memset(&pars[n_pars], 0, sizeof(pars[n_pars]));
			pars[n_pars++].entry = tp;
			want_tag = tp;
			if (tp || pp)
				continue;
		}
		if (!roff_is_text(line))
			continue;
		if (want_tag) {
			roff_line(&pars[n_pars - 1].tag, line);
			want_tag = false;
		} else {
			roff_line(&pars[n_pars - 1].text, line);
		}
	}
	free(line);
	fclose(f);
	for (i = 0; i < n_pars; i++) {
		squeeze(&pars[i].tag);
		squeeze(&pars[i].text);
	}
	if (!seen) {
		fprintf(stderr, "agentgated: %s: no OPTIONS section\n", path);
		bad = 1;
	} else {
		bad = man_check_pars(path, pars, n_pars);
	}
	for (i = 0; i < n_pars; i++) {
		free(pars[i].tag.p);
		free(pars[i].text.p);
	}
	free(pars);
	return bad;
}
