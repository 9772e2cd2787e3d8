/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The control socket: how `agentgate` changes policy while agentgated owns
 * the pin root (agentgate.h, "the owner of a pin root"). A Unix stream
 * socket (--control-socket, default <state dir>/control.sock, mode 0600)
 * takes one JSON request line per connection and answers one line:
 *   {"op":"agent.set","agent":A,"rate":R,"burst":B,"unit":"pps","pinned":true}
 *   {"op":"agent.delete"|"agent.reset"|"agent.explain","agent":A}
 *   {"op":"agent.drain","agent":A,"tokens":N}
 *   {"op":"rule.add","prefix":P,"port":N,"agent":A}, {"op":"rule.del","prefix":P,"port":N}
 *   {"op":"config.set","default_action":"pass"|"drop","dry_run":true|false}
 * -> {"ok":true,"result":{...}} or {"ok":false,"status":S,"error":CODE,"message":TEXT}
 * with S the status the HTTP API gives for the same failure. Changes run
 * through the same engine operations as the API's (stored, audited with the
 * peer's account as "local:USER", replicated in a fleet). Only root and the
 * daemon's own account are served (SO_PEERCRED). Requests are served one at
 * a time; a client has AGD_CONTROL_TIMEOUT_MS to send its line.
 */
#ifndef AGENTGATED_CONTROL_H
#define AGENTGATED_CONTROL_H

#include <stddef.h>

#include "core/engine.h"
#include "core/err.h"

#define AGD_CONTROL_FILE "control.sock"
#define AGD_CONTROL_TIMEOUT_MS 5000
/* A request line: most are small; a rule sync carries a whole feed. */
#define AGD_CONTROL_LINE_MAX (32u << 20)

struct agd_control;

/* Binds and listens (a socket file left by a previous run is replaced, any
 * other file is not); serving starts with agd_control_serve. */
int agd_control_open(const char *path, struct agd_control **out, struct agd_err *err);
/* Starts the thread that serves requests with e. */
int agd_control_serve(struct agd_control *c, struct agd_engine *e, struct agd_err *err);
const char *agd_control_path(const struct agd_control *c);
/* Finishes the request under way, stops, removes the socket file. */
void agd_control_stop(struct agd_control *c);

/* One request line's answer (a JSON line, malloc'd), as served: peer_uid
 * names the subject. Exposed for the fuzzer and the tests. */
char *agd_control_handle(struct agd_engine *e, const char *line, size_t len, const char *subject);

#endif
