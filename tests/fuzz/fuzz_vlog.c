// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The voice log's records (agentgated/core/store.c, agd_vlog_decode and
 * agd_vlog_encode): what agentgated reads back from its store at every
 * start, the snapshot and the log alike.
 *
 * Input: one value of the log, as stored. The decoder runs over an exact
 * copy (a read past its end is an ASan report) and is compared with a
 * reference written from the layout in store.h: a voice is kind 1, an
 * agent length 1-64, a user length 0-128, the agent (no NUL), the user (no
 * NUL), a score 1-5 and 8 bytes of time; a drop is kind 2, an agent length
 * and the agent. Every record decoded encodes back to the same bytes.
 */
#include "core/store.h"
#include "fuzz.h"

/* The reference: the length of the record at p (1 + ...), 0 at the end,
 * -1 when it is damaged. */
static long ref_record(const uint8_t *p, size_t left)
{
	size_t a, u = 0, need;

	if (!left)
		return 0;
	if (left < 2 || (p[0] != 1 && p[0] != 2))
		return -1;
	a = p[1];
	if (p[0] == 1) {
		if (left < 3)
			return -1;
		u = p[2];
		need = 3 + a + u + 9;
	} else {
		need = 2 + a;
	}
	if (a < 1 || a > AG_NAME_MAX || u > 128 || left < need)
		return -1;
	if (memchr(p + (p[0] == 1 ? 3 : 2), 0, a))
		return -1;
	if (p[0] == 1 && (memchr(p + 3 + a, 0, u) || p[3 + a + u] < 1 || p[3 + a + u] > 5))
		return -1;
	return (long)need;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy = malloc(size ? size : 1);
	const unsigned char *p, *end;
	unsigned char again[AGD_VLOG_VOICE_MAX];
	struct agd_vlog_rec r;
	size_t off = 0;
	int rc;

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	p = copy;
	end = copy + size;
	for (;;) {
		long want = ref_record(copy + off, size - off);

		rc = agd_vlog_decode(&p, end, &r);
		FUZZ_CHECK((rc == 1) == (want > 0) && (rc == 0) == (want == 0) &&
				   (rc == -EUCLEAN) == (want < 0),
			   "record at %zu: decoded %d, the layout says %ld", off, rc, want);
		if (rc != 1)
			break;
		FUZZ_CHECK(p == copy + off + (size_t)want, "record at %zu: %td bytes read, %ld long",
			   off, p - (copy + off), want);
		FUZZ_CHECK(agd_vlog_encode(again, &r) == (size_t)want &&
				   !memcmp(again, copy + off, (size_t)want),
			   "record at %zu does not encode back to its bytes", off);
		off += (size_t)want;
	}
	free(copy);
	return 0;
}
