#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""post_many.py HOST PORT AGENT COUNT ID_PREFIX SCORES

Posts COUNT ratings for AGENT, one request each over one keep-alive
connection: rating i has id ID_PREFIX-i and score SCORES[i % len(SCORES)]
(SCORES like "5,4,1"). Stops at the first connection error (the daemon may
be killed on purpose). Prints one JSON line:
  {"acked": n, "statuses": {"200": n, ...}, "last": <last 200 body or null>,
   "error": <text or null>}
"acked" counts the 200 answers: the ratings the daemon acknowledged.
"""
import http.client
import json
import sys


def main():
    host, port, agent, count, prefix, scores = sys.argv[1:7]
    scores = [int(x) for x in scores.split(",")]
    acked, statuses, last, error = 0, {}, None, None
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for i in range(int(count)):
            body = json.dumps({"id": "%s-%d" % (prefix, i), "agent": agent,
                               "score": scores[i % len(scores)]})
            conn.request("POST", "/v1/ratings", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            text = r.read().decode()
            statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
            if r.status == 200:
                acked += 1
                last = json.loads(text)
    except (OSError, http.client.HTTPException) as e:
        error = "%s: %s" % (type(e).__name__, e)
    finally:
        conn.close()
    print(json.dumps({"acked": acked, "statuses": statuses, "last": last, "error": error}))


if __name__ == "__main__":
    main()
