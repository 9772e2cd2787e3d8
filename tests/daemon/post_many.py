#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""post_many.py HOST PORT AGENT COUNT ID_PREFIX SCORES: posts COUNT ratings
for AGENT one request each over one keep-alive connection, rating i with id
ID_PREFIX-i and score SCORES[i % len(SCORES)] (SCORES like "5,1,4").
Prints one JSON line: {"acked": n, "statuses": {code: count}, "last": body}.
"""
import http.client
import json
import sys


def main():
    host, port, agent, count, prefix, scores = sys.argv[1:7]
    scores = [int(x) for x in scores.split(",")]
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    acked, statuses, last = 0, {}, None
    for i in range(int(count)):
        body = json.dumps({"id": "%s-%d" % (prefix, i), "agent": agent,
                           "score": scores[i % len(scores)]})
        conn.request("POST", "/v1/ratings", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        last = r.read().decode()
        statuses[r.status] = statuses.get(r.status, 0) + 1
        if r.status == 200:
            acked += 1
    conn.close()
    print(json.dumps({"acked": acked, "statuses": statuses, "last": json.loads(last)}))


if __name__ == "__main__":
    main()
