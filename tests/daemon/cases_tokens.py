# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Tokens an operator can rotate and revoke: keys chosen by kid (HS256,
RS256, ES256, EdDSA), algorithms fixed by the key, retired keys, lifetime
limits, revocation by jti and sub (API, file, restarts, open streams).
Tokens and keys come from PyJWT with cryptography (agtest.tokens), an
implementation independent of agentgated's. Each case starts its own
daemon on 0.0.0.0 (authentication required)."""
import json
import os
import signal
import time

from agtest import case, check, expect, expect_error, run_daemon
from agtest.tokens import keygen, mint, need
from agtest.ws import WS, Closed
from cases_auth import bearer, new_key, open_daemon

ADMIN = "agents:admin metrics:read"


def metrics(d, k):
    """/metrics through a token of the first key of k."""
    from agtest.prom import Metrics
    kid = sorted(k.files)[0]
    r = d.client(k.token(kid, k.kinds[kid], scope="metrics:read")).get("/metrics")
    check(r.status == 200, "GET /metrics: %d %s" % (r.status, r.text[:200]))
    return Metrics(r.text)


def refusals(d, k, reason):
    return metrics(d, k).val("agentgate_auth_refusals_total", reason=reason)


def status(d, t, path="/v1/agents"):
    return d.client(t).get(path).status


class Keys:
    """A keys directory (public keys and secrets) and the private keys beside it."""

    def __init__(self, env, name):
        self.dir = env.path(env.unique(name + "-keys"))
        self.priv = env.path(env.unique(name + "-private"))
        os.makedirs(self.dir)
        os.makedirs(self.priv)
        self.files, self.kinds = {}, {}

    def pair(self, kid, kind):
        priv = os.path.join(self.priv, kid + ".key")
        keygen(kind, priv, os.path.join(self.dir, kid + ".pem"))
        self.files[kid] = priv
        self.kinds[kid] = {"rsa": "RS256", "ec": "ES256", "ed": "EdDSA"}[kind]
        return priv

    def secret(self, kid):
        self.files[kid] = new_key(os.path.join(self.dir, kid + ".hs256"))
        self.kinds[kid] = "HS256"
        return self.files[kid]

    def token(self, kid, alg, scope=ADMIN, send_kid=True, **claims):
        c = {"sub": "ops", "exp": "NOW+600", "iat": "NOW", "scope": scope}
        c.update(claims)
        return mint({"key": self.files[kid], "alg": alg, "claims": c,
                     "kid": kid if send_kid else None})[0]


@case("keys by kid: an HS256 secret, RS256, ES256 and EdDSA public keys at once; a token "
      "without kid tries the keys of its algorithm; unknown kid, alg none, an algorithm "
      "other than its key's, a public key used as an HMAC secret, another key's signature, "
      "an expired or malformed token are 401, a missing scope 403, each counted by reason")
def t_tokens_keys(env):
    need()
    k = Keys(env, "kid")
    k.secret("hs")
    k.pair("rsa", "rsa")
    k.pair("ec", "ec")
    k.pair("ed", "ed")
    d = open_daemon(env, "kid", "--auth-keys", k.dir)
    for kid, alg in (("hs", "HS256"), ("rsa", "RS256"), ("ec", "ES256"), ("ed", "EdDSA")):
        check(status(d, k.token(kid, alg)) == 200, "%s %s refused" % (kid, alg))
        check(status(d, k.token(kid, alg, send_kid=False)) == 200,
              "%s %s without kid refused" % (kid, alg))
    bad = [
        ("unknown_kid", mint({"key": k.files["ed"], "alg": "EdDSA", "kid": "nobody",
                              "claims": {"sub": "x", "exp": "NOW+60", "scope": ADMIN}})[0]),
        ("alg", mint({"key": None, "alg": "none",
                      "claims": {"sub": "x", "exp": "NOW+60", "scope": ADMIN}})[0]),
        # RS256, signed by the RSA key, under the kid of the EC key.
        ("alg", mint({"key": k.files["rsa"], "alg": "RS256", "kid": "ec",
                      "claims": {"sub": "x", "exp": "NOW+60", "scope": ADMIN}})[0]),
        # The RSA public key file's bytes as an HS256 secret, kid rsa: alg confusion.
        ("alg", mint({"key": os.path.join(k.dir, "rsa.pem"), "alg": "HS256", "kid": "rsa",
                      "claims": {"sub": "x", "exp": "NOW+60", "scope": ADMIN}})[0]),
        # Signed by another Ed25519 key under kid ed.
        ("signature", mint({"key": keygen("ed", env.path("other-ed.key"),
                                          env.path("other-ed.pem"))[0],
                            "alg": "EdDSA", "kid": "ed",
                            "claims": {"sub": "x", "exp": "NOW+60", "scope": ADMIN}})[0]),
    ]
    bad.append(("expired", k.token("rsa", "RS256", exp="NOW-5", iat="NOW-60")))
    bad.append(("malformed", k.token("ed", "EdDSA")[:-3] + "!!!"))
    for reason, t in bad:
        before = refusals(d, k, reason)
        r = d.client(t).get("/v1/agents")
        check(r.status == 401, "%s token answered %d" % (reason, r.status))
        check(refusals(d, k, reason) == before + 1, "auth_refusals_total{reason=%s}" % reason)
    before = refusals(d, k, "scope")
    r = d.client(k.token("ec", "ES256", scope="metrics:read")).put("/v1/agents/x", {"rate": 5})
    check(r.status == 403, "a metrics:read token's PUT answered %d" % r.status)
    check(refusals(d, k, "scope") == before + 1, "auth_refusals_total{reason=scope}")
    d.stop()


@case("rotation without a cutover: a new key beside the old one, then the old one retired "
      "(KID.retired) on SIGHUP: its tokens issued before go on, tokens it signs afterwards "
      "are 401 retired_key; removed, its tokens are 401 unknown_kid")
def t_tokens_rotation(env):
    need()
    k = Keys(env, "rot")
    k.secret("old")
    d = open_daemon(env, "rot", "--auth-keys", k.dir)
    before = k.token("old", "HS256", iat="NOW-5")
    check(status(d, before) == 200, "old key's token refused")
    k.pair("new", "ed")
    with open(os.path.join(k.dir, "old.retired"), "w") as f:
        f.write("%d\n" % (int(time.time()) - 2))
    d.signal(signal.SIGHUP)
    d.wait_log("settings reloaded", count=1)
    check(status(d, before) == 200, "a token of the retired key issued before was refused")
    check(status(d, k.token("new", "EdDSA")) == 200, "the new key's token refused")
    after = k.token("old", "HS256")
    r = d.client(after).get("/v1/agents")
    check(r.status == 401 and "retired" in r.text, "retired key's new token: %d %s" %
          (r.status, r.text))
    check(refusals(d, k, "retired_key") == 1, "retired_key not counted")
    os.unlink(os.path.join(k.dir, "old.hs256"))
    os.unlink(os.path.join(k.dir, "old.retired"))
    d.signal(signal.SIGHUP)
    d.wait_log("settings reloaded", count=2)
    check(status(d, before) == 401, "a removed key's token still accepted")
    d.stop()


@case("refused keys: a private key, an RSA key of 1024 bits, an EC key off P-256, a PEM "
      "key named .hs256, a short secret, an empty directory: exit 2 naming the file")
def t_tokens_bad_keys(env):
    need()
    for name, make, word in (
            ("priv", lambda k: keygen("ed", os.path.join(k.dir, "a.pem"),
                                      os.path.join(k.priv, "a.pub")), "private key"),
            ("rsa1k", lambda k: keygen("rsa1024", os.path.join(k.priv, "a.key"),
                                       os.path.join(k.dir, "a.pem")), "2048"),
            ("ec384", lambda k: keygen("ec384", os.path.join(k.priv, "a.key"),
                                       os.path.join(k.dir, "a.pem")), "P-256"),
            ("pemhs", lambda k: keygen("ed", os.path.join(k.priv, "a.key"),
                                       os.path.join(k.dir, "a.hs256")), "PEM"),
            ("short", lambda k: open(os.path.join(k.dir, "a.hs256"), "w").write("x" * 31),
             "at least 32"),
            ("empty", lambda k: None, "no KID.pem")):
        k = Keys(env, "bad-" + name)
        make(k)
        d = env.daemon("bad-" + name, "--auth-keys", k.dir)
        out = run_daemon(env, d.argv()[1:], 2)
        check(word in out and k.dir in out, "%s: %s" % (name, out[-400:]))


@case("lifetimes: stream:read at most 15 min and any token 24 h by default, per scope by "
      "--auth-max-lifetime; iat and nbf may be 30 s ahead, no more; without iat the time "
      "left counts; each refusal 401 lifetime or not_yet_valid")
def t_tokens_lifetime(env):
    need()
    k = Keys(env, "life")
    k.secret("s")
    d = open_daemon(env, "life", "--auth-keys", k.dir)
    cases = (
        (200, dict(scope="stream:read metrics:read", exp="NOW+900", iat="NOW")),
        (401, dict(scope="stream:read metrics:read", exp="NOW+901", iat="NOW")),
        (200, dict(exp="NOW+86000", iat="NOW")),
        (401, dict(exp="NOW+86500", iat="NOW")),
        (200, dict(exp="NOW+3600", iat="NOW+25")),
        (401, dict(exp="NOW+3600", iat="NOW+120")),
        (200, dict(exp="NOW+3600", nbf="NOW+20")),
        (401, dict(exp="NOW+3600", nbf="NOW+120")),
        (200, dict(exp="NOW+3600", iat=None)),
        (401, dict(exp="NOW+90000", iat=None)),
    )
    for want, claims in cases:
        c = {"sub": "ops", "scope": ADMIN, "iat": "NOW"}
        c.update(claims)
        c = {a: b for a, b in c.items() if b is not None}
        t = mint({"key": k.files["s"], "alg": "HS256", "claims": c})[0]
        r = d.client(t).get("/v1/agents")
        check(r.status == want, "%s: %d %s, expected %d" % (claims, r.status, r.text, want))
    check(refusals(d, k, "lifetime") == 3, "lifetime %s" % refusals(d, k, "lifetime"))
    check(refusals(d, k, "not_yet_valid") == 2,
          "not_yet_valid %s" % refusals(d, k, "not_yet_valid"))
    d.stop()
    d = open_daemon(env, "life2", "--auth-keys", k.dir, "--auth-max-lifetime",
                    "metrics:read=1h,*=0")
    for want, exp in ((200, "NOW+3600"), (401, "NOW+3700")):
        t = k.token("s", "HS256", scope="metrics:read", exp=exp)
        check(status(d, t) == want, "metrics:read for %s" % exp)
    t = k.token("s", "HS256", scope="agents:admin", exp="NOW+9000000")
    check(status(d, t) == 200, "*=0 should leave agents:admin unlimited")
    d.stop()
    out = run_daemon(env, d.argv()[1:-2] + ["--auth-max-lifetime", "stream=1h"], 2)
    check("unknown scope 'stream'" in out, out[-300:])


@case("POST /v1/auth/revoke: a jti and a subject revoked at once (401 revoked, counted), "
      "other tokens go on, a subject's token issued afterwards passes; kept across a "
      "restart; bad bodies 400 naming the field; the scope is agents:admin")
def t_tokens_revoke(env):
    need()
    k = Keys(env, "rv")
    k.pair("ed", "ed")
    d = open_daemon(env, "rv", "--auth-keys", k.dir)
    admin = d.client(k.token("ed", "EdDSA", sub="root", jti="admin-1"))
    t1 = k.token("ed", "EdDSA", jti="leaked-1")
    t2 = k.token("ed", "EdDSA", jti="fine-2")
    t3 = k.token("ed", "EdDSA", sub="mallory", jti="m-1", iat="NOW-10")
    for t in (t1, t2, t3):
        check(status(d, t) == 200, "token refused before any revocation")
    expect(admin.post("/v1/auth/revoke", {"jti": "leaked-1"}), 200,
           'd["revoked"] == {"jti": "leaked-1"}', 'd["until"] >= d["at"] + 86400')
    expect(admin.post("/v1/auth/revoke", {"sub": "mallory"}), 200,
           'd["revoked"] == {"sub": "mallory"}')
    r = d.client(t1).get("/v1/agents")
    check(r.status == 401 and "revoked" in r.text, "revoked jti: %d %s" % (r.status, r.text))
    check(status(d, t3) == 401, "revoked subject's token accepted")
    check(status(d, t2) == 200, "another token refused")
    time.sleep(1.1)
    t4 = k.token("ed", "EdDSA", sub="mallory", jti="m-2", iat="NOW")
    check(status(d, t4) == 200, "a subject's token issued after the revocation refused")
    check(refusals(d, k, "revoked") == 2, "revoked %s" % refusals(d, k, "revoked"))
    check(metrics(d, k).val("agentgate_auth_revocations") == 2, "auth_revocations")
    with open(os.path.join(d.state, "audit.log")) as f:
        lines = [json.loads(x) for x in f if '"auth.revoke"' in x]
    check([(x["subject"], x["after"].get("jti") or x["after"].get("sub")) for x in lines] ==
          [("root", "leaked-1"), ("root", "mallory")], "audit: %s" % lines)
    for body, field in (({"jti": "a", "sub": "b"}, "jti"), ({}, "jti"), ({"jti": 5}, "jti"),
                        ({"jti": "a", "until": 5}, "until"), ({"sub": "a", "exp": 5}, "exp"),
                        ({"jti": "a" * 129}, "jti"), ({"jti": "a", "exp": "x"}, "exp"),
                        ({"jti": "a", "why": 1}, "why")):
        expect_error(admin.post("/v1/auth/revoke", body), 400, "bad_request", field)
    reader = d.client(k.token("ed", "EdDSA", scope="metrics:read"))
    expect_error(reader.post("/v1/auth/revoke", {"jti": "z"}), 403, "forbidden", "agents:admin")
    d.stop()
    d.start()
    check(status(d, t1) == 401 and status(d, t3) == 401, "revocations lost by a restart")
    check(status(d, t2) == 200 and status(d, t4) == 200, "a restart refused good tokens")
    d.stop()


@case("open streams: a revoked token's stream is closed with 4001 within about a second, "
      "an expired token's with 4002; others stay")
def t_tokens_streams(env):
    need()
    k = Keys(env, "st")
    k.secret("s")
    d = open_daemon(env, "st", "--auth-keys", k.dir)
    admin = d.client(k.token("s", "HS256", jti="adm"))
    doomed = k.token("s", "HS256", scope="stream:read", jti="doomed")
    keep = k.token("s", "HS256", scope="stream:read", jti="keep")
    short = k.token("s", "HS256", scope="stream:read", jti="short", exp="NOW+3")
    conns = {}
    for name, t in (("doomed", doomed), ("keep", keep), ("short", short)):
        c = WS.connect("127.0.0.1", d.port, "/v1/stream?token=" + t)
        check(c.status == 101, "%s: handshake %d %s" % (name, c.status, c.body))
        conns[name] = c
    expect(admin.post("/v1/auth/revoke", {"jti": "doomed"}), 200)
    t0 = time.monotonic()

    def close_code(c, timeout):
        try:
            while True:
                if c.recv_text(timeout) is None:
                    return None
        except Closed as e:
            return e.code

    code = close_code(conns["doomed"], 3)
    took = time.monotonic() - t0
    check(code == 4001 and took < 2.5, "revoked stream: code %s after %.1f s" % (code, took))
    code = close_code(conns["short"], 6)
    check(code == 4002, "expired stream: code %s" % code)
    conns["keep"].send_json({"action": "subscribe", "topic": "rating.global"})
    got = conns["keep"].collect(3, until=lambda m: m.get("type") == "subscribed")
    check(got and got[-1].get("type") == "subscribed", "the other stream: %s" % got)
    conns["keep"].close()
    d.stop()


@case("--auth-revoked FILE: listed jti and sub are 401 revoked; edited and SIGHUP applies "
      "it; a bad line exits 2 naming file:line")
def t_tokens_denylist(env):
    need()
    k = Keys(env, "dl")
    k.secret("s")
    deny = env.path("denylist")
    with open(deny, "w") as f:
        f.write("# leaked on 2026-12-01\njti bad-1\n\nsub eve\n")
    d = open_daemon(env, "dl", "--auth-keys", k.dir, "--auth-revoked", deny)
    check(status(d, k.token("s", "HS256", jti="bad-1")) == 401, "listed jti accepted")
    check(status(d, k.token("s", "HS256", sub="eve")) == 401, "listed sub accepted")
    check(status(d, k.token("s", "HS256", jti="bad-2")) == 200, "unlisted jti refused")
    with open(deny, "a") as f:
        f.write("jti bad-2\n")
    d.signal(signal.SIGHUP)
    d.wait_log("settings reloaded", count=1)
    check(status(d, k.token("s", "HS256", jti="bad-2")) == 401, "reloaded jti accepted")
    d.stop()
    with open(deny, "w") as f:
        f.write("jti ok\ntoken x\n")
    out = run_daemon(env, d.argv()[1:], 2)
    check(deny + ":2" in out, out[-300:])


@case("--auth-key-file holding a PEM public key (ES256): its tokens pass with or without a kid, "
      "an HS256 token signed with the file's bytes is 401 alg")
def t_tokens_key_file_pem(env):
    need()
    priv, pub = keygen("ec", env.path("file-ec.key"), env.path("file-ec.pem"))
    d = open_daemon(env, "kfile", "--auth-key-file", pub)
    claims = {"sub": "ops", "exp": "NOW+600", "iat": "NOW", "scope": ADMIN}
    good, kid, confused = mint({"key": priv, "alg": "ES256", "claims": claims},
                               {"key": priv, "alg": "ES256", "claims": claims, "kid": "any"},
                               {"key": pub, "alg": "HS256", "claims": claims})
    check(status(d, good) == 200, "the key file's token refused")
    check(status(d, kid) == 200, "a kid-less key refused a token with a kid")
    r = d.client(confused).get("/v1/agents")
    check(r.status == 401 and "algorithm" in r.text, "alg confusion: %d %s" % (r.status, r.text))
    d.stop()
