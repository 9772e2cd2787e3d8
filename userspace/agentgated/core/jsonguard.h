/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The JSON guard: every JSON text a client sends (HTTP bodies, NDJSON lines,
 * stream and control socket messages) is parsed through agd_json_loadb,
 * which refuses text nested deeper than AGD_JSON_DEPTH_MAX before jansson
 * sees it (400 naming the limit). A leaf: it depends on jansson alone.
 */
#ifndef AGENTGATED_JSONGUARD_H
#define AGENTGATED_JSONGUARD_H

#include <jansson.h>
#include <stddef.h>

#define AGD_JSON_DEPTH_MAX 32

/* json_loadb() refusing text nested deeper than AGD_JSON_DEPTH_MAX. */
json_t *agd_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *err);

#endif
