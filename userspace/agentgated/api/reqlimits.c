// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "reply.h"
#include "reqlimits.h"
#include "server.h"

/* ---- headers and query parameters ---------------------------------------------------- */

static bool known(const char *const *names, const char *name, size_t len)
{
	for (; *names; names++)
		if (strlen(*names) == len && !memcmp(*names, name, len))
			return true;
	return false;
}

static int query_check(struct agd_conn *conn, const char *query, const char *const *names)
{
	const char *p = query;

	while (p && *p) {
		size_t seg = strcspn(p, "&"), name = strcspn(p, "=&");

		if (seg && !known(names, p, name))
			return agd_reply_error(conn, 400, NULL,
					      "query '%.*s': unknown parameter (this route takes %s%s%s)",
					      (int)(name > 64 ? 64 : name), p,
					      names[0] ? names[0] : "none",
					      names[0] && names[1] ? " and " : "",
					      names[0] && names[1] ? names[1] : "");
		p += seg + (p[seg] == '&');
	}
	return 0;
}

int agd_request_limits(struct agd_conn *conn, const char *const *names)
{
	static const char *const none[] = { NULL };
	const struct agd_reqinfo *ri = agd_conn_info(conn);

	/* The header count: agd_request_framing(), before anything is read. */
	return query_check(conn, ri->query_string, names ? names : none);
}
