// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libagentgate's text parsers for rules and names (userspace/lib/rules.c,
 * agents.c): ag_prefix_parse, ag_prefix_format, ag_port_parse,
 * ag_name_check, as the CLI and the HTTP API call them.
 *
 * Input: one selector byte ('p' prefix, 'P' port, 'n' agent name; other
 * values pick by their low bits), then the text (up to a NUL).
 * Each parser is compared with a small reference written from the
 * documented rules, not from the code: prefixes are an inet_pton address,
 * optionally '/' and decimal digits up to 32 or 128, no host bits; a
 * formatted prefix parses back to the same rule; ports are digits 1-65535;
 * names 1-64 of [A-Za-z0-9._:-].
 */
#include <arpa/inet.h>

#include "agentgate.h"
#include "fuzz.h"

/* The parser's input buffer: longer text is refused outright. */
#define PREFIX_TEXT_MAX (INET6_ADDRSTRLEN + 8 - 1)

static bool digits_value(const char *s, unsigned long max, unsigned long *v)
{
	unsigned long x = 0;

	if (!*s)
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		x = x * 10 + (unsigned long)(*s - '0');
		if (x > max)
			x = max + 1; /* saturate: still refused, never wraps */
	}
	*v = x;
	return x <= max;
}

/* The reference: 1 valid, 0 invalid. */
static int ref_prefix(const char *text, struct ag_rule *out)
{
	char addr[256];
	const char *slash = strchr(text, '/');
	size_t alen = slash ? (size_t)(slash - text) : strlen(text);
	unsigned long plen, max;
	int i;

	if (alen >= sizeof(addr))
		return 0;
	memcpy(addr, text, alen);
	addr[alen] = 0;
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, addr, out->addr) == 1)
		out->family = AF_INET;
	else if (inet_pton(AF_INET6, addr, out->addr) == 1)
		out->family = AF_INET6;
	else
		return 0;
	max = out->family == AF_INET ? 32 : 128;
	plen = max;
	if (slash && !digits_value(slash + 1, max, &plen))
		return 0;
	out->plen = (__u8)plen;
	for (i = (int)plen; i < (int)max; i++)
		if (out->addr[i / 8] & (0x80 >> (i % 8)))
			return 0;
	return 1;
}

static void fuzz_prefix(const char *text)
{
	struct ag_rule rule, ref, again;
	char buf[AG_PREFIX_STRLEN];
	int err = ag_prefix_parse(text, &rule);
	int want = ref_prefix(text, &ref);

	if (err) {
		FUZZ_CHECK(err == -EINVAL, "error %d", err);
		FUZZ_CHECK(ag_errmsg()[0], "no message");
		FUZZ_CHECK(!want || strlen(text) > PREFIX_TEXT_MAX, "valid prefix '%s' refused: %s",
			   text, ag_errmsg());
		return;
	}
	FUZZ_CHECK(want, "invalid prefix '%s' accepted", text);
	FUZZ_CHECK(rule.family == ref.family && rule.plen == ref.plen &&
			   !memcmp(rule.addr, ref.addr, sizeof(rule.addr)) && rule.port == 0,
		   "'%s' parsed differently", text);
	ag_prefix_format(&rule, buf, sizeof(buf));
	FUZZ_CHECK(strlen(buf) < sizeof(buf) - 1, "formatted prefix truncated: %s", buf);
	FUZZ_CHECK(ag_prefix_parse(buf, &again) == 0, "'%s' formatted as '%s', refused", text,
		   buf);
	FUZZ_CHECK(!memcmp(&again, &rule, sizeof(rule)), "'%s' -> '%s' round trip differs", text,
		   buf);
}

static void fuzz_port(const char *text)
{
	unsigned long v = 0;
	bool want = digits_value(text, 65535, &v) && v >= 1;
	__u16 port = 0;
	int err = ag_port_parse(text, &port);

	FUZZ_CHECK(!err == want, "port '%s': parser %d, reference %d", text, err, want);
	FUZZ_CHECK(err || port == v, "port '%s' became %u", text, port);
}

static void fuzz_name(const char *text)
{
	size_t len = strlen(text);
	bool want = len >= 1 && len <= AG_NAME_MAX &&
		    strspn(text, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-") ==
			    len && strcmp(text, ".") && strcmp(text, "..");

	FUZZ_CHECK(!ag_name_check(text) == want, "name '%s': reference %d", text, want);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_keep_stderr();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint8_t sel = fuzz_u8(&in);
	char *text = fuzz_rest_str(&in, NULL);

	if (sel == 'p' || (sel != 'P' && sel != 'n' && sel % 3 == 0))
		fuzz_prefix(text);
	else if (sel == 'P' || (sel != 'n' && sel % 3 == 1))
		fuzz_port(text);
	else
		fuzz_name(text);
	free(text);
	return 0;
}
