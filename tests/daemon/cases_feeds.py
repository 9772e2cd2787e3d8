# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Rule feeds: an agent's rules from the address ranges its operator
publishes (--rule-feed, PUT /v1/agents/{a}/feed, agentgate rule sync).

Feeds come from files and from a local HTTP server of the case's own that
changes, shrinks, breaks and disappears; frames from added and removed
ranges go through the attached program before and after a swap.
"""
import http.server
import itertools
import json
import os
import signal
import subprocess
import threading
import time

from agtest import Fail, case, check, expect, expect_error, fixture, jcheck, run_daemon, wait_for
from agtest.lab import Netns, send_frames

_labs = itertools.count(1)


def google_json(prefixes, created="2026-12-01T00:00:00.000000"):
    """A feed in the shape OpenAI's and Google's lists have."""
    return json.dumps({"creationTime": created, "prefixes": [
        {"ipv6Prefix" if ":" in p else "ipv4Prefix": p} for p in prefixes]}, indent=2)


def feed_rules(d, agent):
    """The agent's rules as GET /v1/rules lists them: sorted (prefix, port)."""
    r = d.api.get("/v1/rules")
    check(r.status == 200, "GET /v1/rules: %d" % r.status)
    return sorted((x["prefix"], x["port"]) for x in r.json() if x["agent"] == agent)


def feed_of(d, agent):
    r = d.api.get("/v1/agents/%s/feed" % agent)
    check(r.status == 200, "GET feed of %s: %d %s" % (agent, r.status, r.text))
    return r.json()


def wait_feed(d, agent, expr, timeout=10):
    """Until the feed object satisfies expr (a lambda of it)."""
    last = {}

    def ok():
        last["f"] = feed_of(d, agent)
        return expr(last["f"])
    try:
        wait_for(ok, timeout=timeout)
    except Fail:
        raise Fail("feed of %s never got there: %s" % (agent, json.dumps(last.get("f"))))
    return last["f"]


class FeedServer:
    """An HTTP server on 127.0.0.1 serving one feed at /feed: body, status
    and ETag as the case sets them; every request's conditional headers are
    kept. down() stops it (connections refused)."""

    def __init__(self):
        self.body, self.status, self.etag, self.lastmod = b"", 200, None, None
        self.requests = []
        srv = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                srv.requests.append({"inm": self.headers.get("If-None-Match"),
                                     "ims": self.headers.get("If-Modified-Since")})
                if (srv.etag and self.headers.get("If-None-Match") == srv.etag) or \
                        (srv.lastmod and self.headers.get("If-Modified-Since") == srv.lastmod):
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(srv.status)
                if srv.etag:
                    self.send_header("ETag", srv.etag)
                if srv.lastmod:
                    self.send_header("Last-Modified", srv.lastmod)
                self.send_header("Content-Length", str(len(srv.body)))
                self.end_headers()
                self.wfile.write(srv.body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d/feed" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, body, etag=None, status=200, lastmod=None):
        self.body = body.encode() if isinstance(body, str) else body
        self.etag, self.status, self.lastmod = etag, status, lastmod

    def down(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


@fixture(scope="case")
def feed_server(env):
    s = FeedServer()
    yield s
    s.down()


def failures(d, agent, reason):
    m = d.metrics()
    return m.get("agentgate_rule_feed_failures_total", agent=agent, reason=reason)


V1 = ["192.0.2.0/24", "198.51.100.0/25", "203.0.113.7/32", "2001:db8:100::/48"]


@case("rule feed from a file (--rule-feed): applied, refreshed, kept on malformed, oversized, "
      "shrunk and missing files, reasons in GET feed, explain, metrics and the log; restart")
def t_feed_file(env):
    path = os.path.join(env.tmp, "gptbot.json")
    with open(path, "w") as f:
        f.write(google_json(V1))
    d = env.daemon("feedfile", "--rule-feed", "ff1=" + path, "--rule-feed-interval", "1s",
                   "--rule-feed-max-bytes", "4KiB").start()
    f = wait_feed(d, "ff1", lambda f: f["status"] == "ok")
    jcheck(f, 'd["source"] == %r' % path, 'd["prefixes"] == 4', 'd["conflicts"] == 0',
           'd["reason"] is None', 'd["created"] == "2026-12-01T00:00:00.000000"',
           'd["refreshes"]["applied"] == 1')
    check(feed_rules(d, "ff1") == sorted((p, 0) for p in V1), "rules: %r" % feed_rules(d, "ff1"))
    # A hand rule of the agent, and one for a prefix the feed also has.
    expect(d.api.post("/v1/rules", {"prefix": "10.77.0.0/16", "agent": "ff1"}), 201)
    expect(d.api.post("/v1/rules", {"prefix": "192.0.2.0/24", "agent": "ff1"}), 201)
    # The file changes (a new range, one gone): the rules follow, hand rules stay.
    v2 = V1[:1] + V1[2:] + ["198.51.100.128/25", "2001:db8:200::/48"]
    with open(path, "w") as f:
        f.write(google_json(v2, created="2026-12-02T00:00:00.000000"))
    wait_feed(d, "ff1", lambda f: f["prefixes"] == 5 and f["refreshes"]["applied"] == 2)
    check(feed_rules(d, "ff1") == sorted([(p, 0) for p in v2] + [("10.77.0.0/16", 0)]),
          "after the change: %r" % feed_rules(d, "ff1"))
    # The hand rule for a feed prefix: deleting it keeps the feed's rule.
    expect(d.api.delete("/v1/rules?prefix=192.0.2.0/24"), 200)
    check(("192.0.2.0/24", 0) in feed_rules(d, "ff1"), "a feed rule went with the hand rule")
    # ... and a feed rule alone cannot be deleted by hand (409, it stays).
    expect_error(d.api.delete("/v1/rules?prefix=192.0.2.0/24"), 409, "conflict", "feed")
    good = feed_rules(d, "ff1")
    # Malformed: the last good set stays, the reason is shown and counted.
    with open(path, "w") as f:
        f.write('{"prefixes": [{"ipv4Prefix": "192.0.2.0/24"}, {"ipv4Prefix": "300.1.2.0/24"}]}')
    f = wait_feed(d, "ff1", lambda f: f["status"] == "stale" and f["reason"] == "malformed")
    check("prefixes[1]" in f["error"], "error: %s" % f["error"])
    check(feed_rules(d, "ff1") == good, "malformed feed changed the rules")
    ex = d.api.get("/v1/agents/ff1/explain").json()
    jcheck(ex, 'd["feed"]["status"] == "stale"', 'd["feed"]["reason"] == "malformed"')
    # Oversized (over --rule-feed-max-bytes).
    with open(path, "w") as f:
        f.write(google_json(["10.%d.%d.0/24" % (i // 256, i % 256) for i in range(200)]))
    wait_feed(d, "ff1", lambda f: f["reason"] == "oversized")
    check(feed_rules(d, "ff1") == good, "oversized feed changed the rules")
    # Shrunk: 5 -> 1 prefixes is more than half gone.
    with open(path, "w") as f:
        f.write("# only one left\n203.0.113.7\n")
    f = wait_feed(d, "ff1", lambda f: f["reason"] == "shrunk")
    check("4 of its 5 prefixes" in f["error"], "error: %s" % f["error"])
    check(feed_rules(d, "ff1") == good, "shrunk feed changed the rules")
    # Gone: unreachable.
    os.unlink(path)
    wait_feed(d, "ff1", lambda f: f["reason"] == "unreachable")
    check(feed_rules(d, "ff1") == good, "a missing feed changed the rules")
    for reason in ("malformed", "oversized", "shrunk", "unreachable"):
        check(failures(d, "ff1", reason) >= 1, "no failure counted for %s" % reason)
    m = d.metrics()
    check(m.get("agentgate_rule_feed_stale", agent="ff1") == 1, "stale not 1")
    check(m.get("agentgate_rule_feed_prefixes", agent="ff1") == 5, "prefixes metric")
    check("feed of 'ff1' not refreshed (shrunk)" in d.log(), "no log line", d.log_tail())
    # Back, plain text, one prefix a line: applied again.
    with open(path, "w") as f:
        f.write("\n".join(v2[:3] + ["# comment", "", "2001:db8:300::/48  "]) + "\n")
    wait_feed(d, "ff1", lambda f: f["status"] == "ok" and f["prefixes"] == 4)
    v3 = sorted([(p, 0) for p in v2[:3] + ["2001:db8:300::/48", "10.77.0.0/16"]])
    check(feed_rules(d, "ff1") == v3, "text feed: %r" % feed_rules(d, "ff1"))
    # Restart with the source gone: the last good set is in the store.
    os.unlink(path)
    d.stop()
    d.start()
    check(feed_rules(d, "ff1") == v3, "after restart: %r" % feed_rules(d, "ff1"))
    f = wait_feed(d, "ff1", lambda f: f["status"] == "stale")
    jcheck(f, 'd["prefixes"] == 4', 'd["reason"] == "unreachable"')
    d.stop()


@case("rule feed over HTTP (PUT /v1/agents/{a}/feed): conditional requests, changes, a server "
      "that breaks and disappears; DELETE removes the feed's rules, not hand rules")
def t_feed_http(env, feed_server):
    s = feed_server
    d = env.daemon("feedhttp").start()
    c = d.api
    expect(c.put("/v1/agents/fh1", {}), 201)
    expect(c.post("/v1/rules", {"prefix": "10.88.0.0/16", "agent": "fh1"}), 201)
    s.serve(google_json(V1), etag='"v1"')
    expect(c.put("/v1/agents/fh1/feed", {"source": s.url, "interval": 1}), 201,
           'd["source"] == %r' % s.url, 'd["interval_s"] == 1')
    wait_feed(d, "fh1", lambda f: f["status"] == "ok" and f["prefixes"] == 4)
    check(feed_rules(d, "fh1") == sorted([(p, 0) for p in V1] + [("10.88.0.0/16", 0)]),
          "rules: %r" % feed_rules(d, "fh1"))
    # Unchanged: the next requests are conditional and answered 304.
    wait_for(lambda: any(r["inm"] == '"v1"' for r in s.requests), timeout=5)
    wait_feed(d, "fh1", lambda f: f["refreshes"]["unchanged"] >= 1)
    # A change with a new ETag.
    v2 = V1[1:] + ["2001:db8:400::/48"]
    s.serve(google_json(v2), etag='"v2"')
    wait_feed(d, "fh1", lambda f: f["etag"] == '"v2"' and f["refreshes"]["applied"] == 2)
    check(feed_rules(d, "fh1") == sorted([(p, 0) for p in v2] + [("10.88.0.0/16", 0)]),
          "after v2: %r" % feed_rules(d, "fh1"))
    # A server that sends Last-Modified only: If-Modified-Since comes back.
    lm = "Mon, 07 Dec 2026 01:00:00 GMT"
    s.serve(google_json(v2), lastmod=lm)
    wait_for(lambda: any(r["ims"] == lm for r in s.requests), timeout=5)
    f = wait_feed(d, "fh1", lambda f: f["last_modified"] == lm)
    check(f["status"] == "ok" and f["prefixes"] == len(v2), "after Last-Modified: %s" % f)
    good = feed_rules(d, "fh1")
    # The server breaks: 500.
    s.serve("oops", status=500)
    f = wait_feed(d, "fh1", lambda f: f["reason"] == "unreachable")
    check("HTTP status 500" in f["error"], "error: %s" % f["error"])
    check(feed_rules(d, "fh1") == good, "a 500 changed the rules")
    # It answers with something that is not a feed.
    s.serve("<html>maintenance</html>")
    wait_feed(d, "fh1", lambda f: f["reason"] == "malformed")
    # It disappears.
    s.down()
    wait_feed(d, "fh1", lambda f: f["reason"] == "unreachable" and
              "HTTP status" not in f["error"])
    check(feed_rules(d, "fh1") == good, "an unreachable server changed the rules")
    # DELETE: the feed's rules go, the hand rule stays.
    expect(c.delete("/v1/agents/fh1/feed"), 200, 'd == {"deleted_feed": "fh1"}')
    check(feed_rules(d, "fh1") == [("10.88.0.0/16", 0)], "after DELETE: %r" %
          feed_rules(d, "fh1"))
    expect_error(c.get("/v1/agents/fh1/feed"), 404, "not_found")
    check("feed" not in d.api.get("/v1/agents/fh1/explain").json(), "explain still has a feed")
    d.stop()


@case("PUT /v1/agents/{a}/feed refuses bad sources and intervals (400 naming the field), "
      "unknown agents (404); audit lines")
def t_feed_api_errors(api):
    c = api.api
    expect(c.put("/v1/agents/fe1", {}), 201)
    for body, word in (({}, "source"), ({"source": 5}, "source"),
                       ({"source": "relative/path"}, "source"),
                       ({"source": "ftp://example/x"}, "source"),
                       ({"source": "/x y"}, "source"),
                       ({"source": "/tmp/x", "interval": 0}, "interval"),
                       ({"source": "/tmp/x", "interval": "1y"}, "interval"),
                       ({"source": "/tmp/x", "colour": 1}, "colour")):
        expect_error(c.put("/v1/agents/fe1/feed", body), 400, "bad_request", word)
    expect_error(c.put("/v1/agents/fe-nobody/feed", {"source": "/tmp/x"}), 404, "not_found")
    expect_error(c.get("/v1/agents/fe1/feed"), 404, "not_found")
    expect_error(c.delete("/v1/agents/fe1/feed"), 404, "not_found")
    expect(c.put("/v1/agents/fe1/feed", {"source": "/nonexistent/fe1.txt", "interval": "1h"}),
           201, 'd["status"] == "pending"', 'd["interval_s"] == 3600')
    expect(c.put("/v1/agents/fe1/feed", {"source": "/nonexistent/fe1b.txt"}), 200,
           'd["source"] == "/nonexistent/fe1b.txt"', 'd["interval_s"] == 0')
    expect(c.delete("/v1/agents/fe1/feed"), 200)
    # Deleting the agent deletes its feed: made again, it has none.
    expect(c.put("/v1/agents/fe1/feed", {"source": "/nonexistent/fe1c.txt"}), 201)
    expect(c.delete("/v1/agents/fe1"), 200)
    expect(c.put("/v1/agents/fe1", {}), 201)
    expect_error(c.get("/v1/agents/fe1/feed"), 404, "not_found")
    audit = open(os.path.join(api.state, "audit.log")).read()
    for action in ("feed.put", "feed.delete"):
        check('"action":"%s","agent":"fe1"' % action in audit, "no %s audited" % action)


@case("agentgate rule sync AGENT FILE: through agentgated, bad files exit 2 unchanged, conflicts "
      "left to their agent, refused for a fed agent and without agentgated")
def t_feed_sync_cli(env):
    d = env.daemon("feedsync").start()
    c = d.api
    expect(c.put("/v1/agents/fs1", {}), 201)
    expect(c.put("/v1/agents/fs2", {}), 201)
    expect(c.post("/v1/rules", {"prefix": "198.51.100.0/25", "agent": "fs2"}), 201)
    path = os.path.join(env.tmp, "sync.txt")
    with open(path, "w") as f:
        f.write("\n".join(V1) + "\n")
    r = d.cli("rule", "sync", "fs1", path)
    check(r.rc == 0, "rule sync: %d %s" % (r.rc, r.out))
    jcheck(r.json(), 'd["prefixes"] == 4', 'd["conflicts"] == 1', 'd["source"] == ""')
    check(feed_rules(d, "fs1") == sorted((p, 0) for p in V1 if p != "198.51.100.0/25"),
          "fs1: %r" % feed_rules(d, "fs1"))
    check(feed_rules(d, "fs2") == [("198.51.100.0/25", 0)], "fs2 lost its rule")
    # Text output, and standard input.
    r = d.cli("rule", "sync", "fs1", "-", input=google_json(V1[:3]).encode(), json_mode=False)
    check(r.rc == 0 and "synced agent fs1: 3 prefixes" in r.out, "stdin: %d %s" % (r.rc, r.out))
    good = feed_rules(d, "fs1")
    # A bad file: exit 2, nothing changed.
    with open(path, "w") as f:
        f.write("192.0.2.0/24\n192.0.2.1/24\n")
    r = d.cli("rule", "sync", "fs1", path)
    check(r.rc == 2 and "line 2" in r.out, "bad file: %d %s" % (r.rc, r.out))
    check(feed_rules(d, "fs1") == good, "a bad file changed the rules")
    r = d.cli("rule", "sync", "fs-nobody", "/dev/null")
    check(r.rc == 1 and "fs-nobody" in r.out, "unknown agent: %d %s" % (r.rc, r.out))
    # An agent fed from a source refuses a sync.
    expect(c.put("/v1/agents/fs2/feed", {"source": "/nonexistent/fs2"}), 201)
    with open(path, "w") as f:
        f.write("203.0.113.0/24\n")
    r = d.cli("rule", "sync", "fs2", path)
    check(r.rc == 1 and "delete the feed first" in r.out, "fed agent: %d %s" % (r.rc, r.out))
    d.stop()
    r = d.cli("rule", "sync", "fs1", path)
    check(r.rc == 1 and "needs agentgated" in r.out, "no daemon: %d %s" % (r.rc, r.out))


@fixture(scope="case")
def feed_lab(env):
    ns = Netns(env, "feed%d" % next(_labs))
    a, b = ns.veth()
    yield ns, a, b
    subprocess.run(["ip", "netns", "del", ns.name], stderr=subprocess.DEVNULL)
    env.netns.remove(ns.name)


@case("frames through the attached program: added ranges charged to the agent after a swap, "
      "removed ones not; a source both sets cover is the agent's at every moment of 40 swaps")
def t_feed_swap_frames(env, feed_lab):
    ns, a, b = feed_lab
    d = env.daemon("feedxdp", "--attach", a, netns=ns.name).start()
    c = d.api
    expect(c.put("/v1/agents/fx1", {"rate": 1e6, "r_min": 1e6, "r_max": 1e6, "burst": 1e6}), 201)
    path = os.path.join(env.tmp, "fx1.txt")

    def sync(prefixes):
        with open(path, "w") as f:
            f.write("\n".join(prefixes) + "\n")
        r = d.cli("rule", "sync", "fx1", path)
        check(r.rc == 0, "rule sync: %d %s" % (r.rc, r.out))

    def packets():
        a_ = c.get("/v1/agents/fx1").json()
        return a_["passed_packets"] + a_["dropped_packets"]

    def send(count, src):
        send_frames(ns, b, count, src, peer_if=a)
        time.sleep(0.1)

    sync(["10.31.0.0/16"])
    send(10, "10.31.5.5")
    send(10, "10.32.5.5")
    check(packets() == 10, "before the swap: %d frames charged" % packets())
    sync(["10.32.0.0/16"])  # 10.31/16 leaves, 10.32/16 comes
    send(10, "10.31.5.5")
    send(10, "10.32.5.5")
    check(packets() == 20, "after the swap: %d frames charged (want 20)" % packets())
    # 10.33.1.1 is covered by every set below, by a different prefix each
    # time: frames sent throughout the swaps are all charged to fx1.
    sets = [["10.33.0.0/16"], ["10.33.0.0/17", "10.33.128.0/17"], ["10.33.1.0/24", "10.40.0.0/16"],
            ["10.33.1.1/32"]]
    before = packets()
    stop = threading.Event()
    sent = {}

    def flood():
        sent["n"] = send_frames(ns, b, 1, "10.33.1.1", peer_if=a, duration=8, every=0.0002)
    sync(sets[0])
    t = threading.Thread(target=flood)
    t.start()
    for i in range(40):
        sync(sets[i % len(sets)])
    t.join()
    stop.set()
    time.sleep(0.2)
    got = packets() - before
    check(sent.get("n", 0) > 1000, "only %s frames sent" % sent.get("n"))
    check(got == sent["n"], "%d frames sent from 10.33.1.1 during 40 swaps, %d charged to fx1"
          % (sent["n"], got))
    d.stop()


@case("an https feed whose certificate the system does not trust is unreachable, with "
      "libcurl's reason, nothing applied; with --rule-feed-ca naming its CA it is applied; "
      "an unreadable --rule-feed-ca exits 2")
def t_feed_https_untrusted(env):
    import ssl
    key, crt = os.path.join(env.tmp, "feed.key"), os.path.join(env.tmp, "feed.crt")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        key, "-out", crt, "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       capture_output=True, text=True)
    check(r.returncode == 0, "openssl: %s" % r.stderr[-500:])
    s = FeedServer()
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        s.httpd.socket = ctx.wrap_socket(s.httpd.socket, server_side=True)
        s.serve(google_json(V1))
        d = env.daemon("feedtls").start()
        expect(d.api.put("/v1/agents/ft1", {}), 201)
        url = "https://127.0.0.1:%d/feed" % s.port
        expect(d.api.put("/v1/agents/ft1/feed", {"source": url}), 201)
        f = wait_feed(d, "ft1", lambda f: f["reason"] == "unreachable")
        check("certificate" in f["error"].lower(), "error: %s" % f["error"])
        check(feed_rules(d, "ft1") == [] and f["prefixes"] == 0, "rules from an untrusted feed")
        d.stop()
        d.start(args=["--rule-feed-ca", crt])
        f = wait_feed(d, "ft1", lambda f: f["status"] == "ok")
        check(f["prefixes"] == len(V1), "with its CA: %s" % f)
        d.stop()
        r = run_daemon(env, ["--rule-feed-ca", "/nonexistent/ca.pem", "--state-dir",
                             env.path("feedtls-bad")], 2)
        check("--rule-feed-ca" in r, "no option named: %s" % r[-300:])
    finally:
        s.down()


@case("a --rule-feed added to the config file is bound on SIGHUP (the agent made, its set "
      "applied); one taken out again stays bound, as at a start")
def t_feed_sighup(env):
    conf = env.path("feedhup.conf")
    path = os.path.join(env.tmp, "hup.txt")
    with open(path, "w") as f:
        f.write("192.0.2.0/25\n")
    with open(conf, "w") as f:
        f.write("# no feeds yet\n")
    d = env.daemon("feedhup", config=conf).start()
    expect_error(d.api.get("/v1/agents/fhup/feed"), 404, "not_found")
    n = d.log().count("settings reloaded")
    with open(conf, "w") as f:
        f.write("rule-feed = fhup=%s\n" % path)
    d.signal(signal.SIGHUP)
    d.wait_log("settings reloaded", count=n + 1)
    check("takes effect on restart" not in d.log(), "rule-feed not reloaded", d.log_tail())
    f = wait_feed(d, "fhup", lambda f: f["status"] == "ok")
    check(f["source"] == path and feed_rules(d, "fhup") == [("192.0.2.0/25", 0)],
          "after SIGHUP: %s %r" % (f, feed_rules(d, "fhup")))
    with open(conf, "w") as f:
        f.write("# the feed taken out\n")
    d.signal(signal.SIGHUP)
    d.wait_log("settings reloaded", count=n + 2)
    check(feed_of(d, "fhup")["source"] == path, "unbound by the reload")
    d.stop()


@case("--rule-feed-max-prefixes 3: a feed of 4 distinct prefixes is oversized and the last good "
      "set stays; duplicates do not count")
def t_feed_max_prefixes(env):
    path = os.path.join(env.tmp, "maxp.txt")
    with open(path, "w") as f:
        f.write("192.0.2.0/26\n192.0.2.64/26\n192.0.2.64/26\n192.0.2.128/26\n")
    d = env.daemon("feedmaxp", "--rule-feed", "fmp=" + path, "--rule-feed-interval", "1s",
                   "--rule-feed-max-prefixes", "3").start()
    wait_feed(d, "fmp", lambda f: f["status"] == "ok" and f["prefixes"] == 3)
    good = feed_rules(d, "fmp")
    with open(path, "w") as f:
        f.write("192.0.2.0/26\n192.0.2.64/26\n192.0.2.128/26\n192.0.2.192/26\n")
    f = wait_feed(d, "fmp", lambda f: f["reason"] == "oversized")
    check("more than 3 prefixes" in f["error"], "error: %s" % f["error"])
    check(feed_rules(d, "fmp") == good, "an oversized feed changed the rules")
    d.stop()
