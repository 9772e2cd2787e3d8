# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""nats-server as the fleet tests run it (NatsServer, NatsCluster: JetStream on
loopback ports, a store in the suite's scratch directory) and a small NATS client over a plain socket (Python's standard
library only), enough for the fleet tests to talk to nats-server directly:

  CONNECT (headers on), PING/PONG, PUB and HPUB (headers), SUB/UNSUB, MSG
  and HMSG parsing (headers included), request/reply through an inbox, and
  the JetStream API requests the tests need ($JS.API.STREAM.INFO,
  CONSUMER.INFO, STREAM.MSG.GET, publish with an ack).

  c = Nats.connect("127.0.0.1", 4222)
  c.pub("agentgate.ratings.x", b"{...}", headers={"Nats-Msg-Id": "r-1"})
  sid = c.sub("agentgate.ratings.dlq")
  m = c.next_msg(5)                      # Msg(subject, sid, reply, headers, data)
  info = c.js("STREAM.INFO.AGENTGATE")   # parsed JSON answer

Protocol: https://docs.nats.io/reference/reference-protocols/nats-protocol
"""
import base64
import json
import os
import socket
import signal
import time

from . import ports
from .api import Client
from .proc import stop_proc
from .util import Fail, check, wait_for


class NatsError(Exception):
    pass


class Msg:
    def __init__(self, subject, sid, reply, headers, data, status=None):
        self.subject, self.sid, self.reply = subject, sid, reply
        self.headers, self.data, self.status = headers, data, status

    def __repr__(self):
        return "Msg(%r, headers=%r, data=%r)" % (self.subject, self.headers, self.data[:200])


def parse_headers(block):
    """b"NATS/1.0[ status]\\r\\nK: V\\r\\n...\\r\\n\\r\\n" -> (status or None, {K: V})."""
    lines = block.decode("utf-8", "replace").split("\r\n")
    first = lines[0]
    if not first.startswith("NATS/1.0"):
        raise NatsError("bad header block: %r" % first)
    rest = first[len("NATS/1.0"):].strip()
    status = int(rest.split()[0]) if rest else None
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        k, _, v = line.partition(":")
        headers[k.strip()] = v.strip()
    return status, headers


def encode_headers(headers):
    out = "NATS/1.0\r\n"
    for k, v in headers.items():
        out += "%s: %s\r\n" % (k, v)
    return (out + "\r\n").encode()


class Nats:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.msgs = []
        self.next_sid = 1
        self.info = None

    @classmethod
    def connect(cls, host, port, timeout=5.0, name="agentgate-fleet-test"):
        s = socket.create_connection((host, port), timeout=timeout)
        c = cls(s)
        line = c._line(timeout)
        if not line.startswith(b"INFO "):
            raise NatsError("expected INFO, got %r" % line)
        c.info = json.loads(line[5:])
        if not c.info.get("headers"):
            raise NatsError("server does not support headers")
        opts = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                "protocol": 1, "name": name, "lang": "python-stdlib", "version": "1"}
        c._send(b"CONNECT " + json.dumps(opts).encode() + b"\r\n")
        c.flush(timeout)
        return c

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- wire -----------------------------------------------------------------

    def _send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(left)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise NatsError("connection closed by the server")
        self.buf += chunk

    def _line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _bytes(self, n, deadline):
        while len(self.buf) < n + 2:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _read_one(self, timeout):
        """Reads one protocol operation; MSG/HMSG are queued. Returns its verb."""
        deadline = time.monotonic() + timeout
        line = self._line(timeout)
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"PING":
            self._send(b"PONG\r\n")
        elif verb in (b"PONG", b"+OK"):
            pass
        elif verb == b"-ERR":
            raise NatsError(line.decode("utf-8", "replace"))
        elif verb == b"INFO":
            self.info = json.loads(line[5:])
        elif verb == b"MSG":
            parts = line.decode().split(" ")
            subject, sid = parts[1], parts[2]
            reply = parts[3] if len(parts) == 5 else None
            data = self._bytes(int(parts[-1]), deadline)
            self.msgs.append(Msg(subject, sid, reply, {}, data))
        elif verb == b"HMSG":
            parts = line.decode().split(" ")
            subject, sid = parts[1], parts[2]
            reply = parts[3] if len(parts) == 6 else None
            hlen, total = int(parts[-2]), int(parts[-1])
            raw = self._bytes(total, deadline)
            status, headers = parse_headers(raw[:hlen])
            self.msgs.append(Msg(subject, sid, reply, headers, raw[hlen:], status))
        else:
            raise NatsError("unexpected from the server: %r" % line)
        return verb

    def flush(self, timeout=5.0):
        """PING and wait for PONG: everything sent before was processed."""
        self._send(b"PING\r\n")
        deadline = time.monotonic() + timeout
        while self._read_one(max(0.001, deadline - time.monotonic())) != b"PONG":
            pass

    # ---- core NATS ------------------------------------------------------------

    def pub(self, subject, data, headers=None, reply=None):
        if isinstance(data, str):
            data = data.encode()
        r = (" " + reply) if reply else ""
        if headers:
            h = encode_headers(headers)
            self._send(("HPUB %s%s %d %d\r\n" % (subject, r, len(h), len(h) + len(data))).encode()
                       + h + data + b"\r\n")
        else:
            self._send(("PUB %s%s %d\r\n" % (subject, r, len(data))).encode() + data + b"\r\n")

    def sub(self, subject, queue=None):
        sid = str(self.next_sid)
        self.next_sid += 1
        q = (" " + queue) if queue else ""
        self._send(("SUB %s%s %s\r\n" % (subject, q, sid)).encode())
        return sid

    def unsub(self, sid):
        self._send(("UNSUB %s\r\n" % sid).encode())

    def next_msg(self, timeout=5.0, sid=None):
        """The next message (of sid when given); socket.timeout when none came."""
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.msgs):
                if sid is None or m.sid == sid:
                    return self.msgs.pop(i)
            self._read_one(max(0.001, deadline - time.monotonic()))

    def request(self, subject, data=b"", headers=None, timeout=5.0):
        inbox = "_INBOX.agtest.%s" % os.urandom(8).hex()
        sid = self.sub(inbox)
        try:
            self.pub(subject, data, headers=headers, reply=inbox)
            m = self.next_msg(timeout, sid=sid)
        finally:
            self.unsub(sid)
        if m.status == 503:
            raise NatsError("no responders on %s" % subject)
        return m

    # ---- JetStream --------------------------------------------------------------

    def js(self, api, req=None, timeout=5.0):
        """One $JS.API request; the parsed answer (which may hold "error")."""
        body = json.dumps(req).encode() if req is not None else b""
        return json.loads(self.request("$JS.API." + api, body, timeout=timeout).data)

    def js_publish(self, subject, data, headers=None, timeout=5.0):
        """Publish into a stream and wait for its ack {"stream","seq"[,"duplicate"]}."""
        m = self.request(subject, data, headers=headers, timeout=timeout)
        return json.loads(m.data)

    def stream_msg(self, stream, seq=None, last_by_subj=None, timeout=5.0):
        """A stored message: (subject, seq, headers, data, time), or None when absent."""
        req = {"seq": seq} if seq is not None else {"last_by_subj": last_by_subj}
        ans = self.js("STREAM.MSG.GET." + stream, req, timeout)
        if "error" in ans:
            if ans["error"].get("code") == 404:
                return None
            raise NatsError("STREAM.MSG.GET: %r" % ans["error"])
        m = ans["message"]
        headers = {}
        if m.get("hdrs"):
            headers = parse_headers(base64.b64decode(m["hdrs"]))[1]
        data = base64.b64decode(m.get("data", "")) if m.get("data") else b""
        return m["subject"], m["seq"], headers, data, m.get("time")


    def stream_count(self, stream, subject, timeout=5.0):
        """How many messages the stream holds on subject (no wildcards)."""
        ans = self.js("STREAM.INFO." + stream, {"subjects_filter": subject}, timeout)
        if "error" in ans:
            raise NatsError("STREAM.INFO: %r" % ans["error"])
        return (ans["state"].get("subjects") or {}).get(subject, 0)

    def stream_read(self, stream, subject, timeout=30.0):
        """Every message of the stream on subject, in order, through an ephemeral
        push consumer: [(stream sequence, headers, data)]."""
        want = self.stream_count(stream, subject)
        inbox = "_INBOX.agtest.%s" % os.urandom(8).hex()
        sid = self.sub(inbox)
        cfg = {"deliver_subject": inbox, "ack_policy": "none", "deliver_policy": "all",
               "filter_subject": subject, "mem_storage": True, "num_replicas": 1,
               "inactive_threshold": 30 * 10**9}
        try:
            ans = self.js("CONSUMER.CREATE." + stream, {"stream_name": stream, "config": cfg},
                          10)
        except (socket.timeout, NatsError):
            ans = {"error": "no answer"}
        if "error" in ans:
            # (A cluster missing a node may not place the consumer: read
            # message by message instead.)
            self.unsub(sid)
            return self.stream_scan(stream, subject, timeout)
        out = []
        try:
            deadline = time.monotonic() + timeout
            while len(out) < want:
                try:
                    m = self.next_msg(max(0.001, deadline - time.monotonic()), sid=sid)
                except socket.timeout:
                    raise NatsError("stream_read %s: %d of %d messages within %g s" %
                                    (subject, len(out), want, timeout))
                if m.status is not None:    # heartbeats, flow control: none asked for
                    continue
                # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
                seq = int(m.reply.split(".")[5]) if m.reply else None
                out.append((seq, m.headers, m.data))
        finally:
            self.unsub(sid)
            self.js("CONSUMER.DELETE.%s.%s" % (stream, ans["name"]), timeout=timeout)
        return out


    def stream_scan(self, stream, subject, timeout=5.0):
        """As stream_read, one STREAM.MSG.GET per sequence (slow: small streams)."""
        st = self.js("STREAM.INFO." + stream, timeout=timeout)["state"]
        out = []
        for q in range(st["first_seq"], st["last_seq"] + 1):
            m = self.stream_msg(stream, seq=q, timeout=timeout)
            if m and m[0] == subject:
                out.append((q, m[2], m[3]))
        return out


# ---- nats-server ----------------------------------------------------------------


def env_popen(env, argv, log):
    return env.popen(argv, log)


class NatsServer:
    """One nats-server; start() again after stop() reuses its ports and store."""

    def __init__(self, env, name, cluster_name=None):
        self.env, self.name = env, name
        self.dir = env.path("nats-" + name)
        self.store = os.path.join(self.dir, "js")
        self.conf = os.path.join(self.dir, "server.conf")
        self.log = os.path.join(self.dir, "server.log")
        os.makedirs(self.store, exist_ok=True)
        self.port, self.mon, self.cport = ports.free_ports(3)
        self.cluster_name = cluster_name
        self.routes = []
        self.proc = None

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    def write_conf(self):
        conf = ['server_name: "%s"' % self.name,
                'listen: "127.0.0.1:%d"' % self.port,
                'http: "127.0.0.1:%d"' % self.mon,
                'jetstream {',
                '  store_dir: "%s"' % self.store,
                '  max_memory_store: 64MB',
                '  max_file_store: 1GB',
                '}']
        if self.cluster_name:
            conf += ['cluster {',
                     '  name: "%s"' % self.cluster_name,
                     '  listen: "127.0.0.1:%d"' % self.cport,
                     '  routes: [%s]' % ", ".join('"nats://127.0.0.1:%d"' % p for p in self.routes),
                     '}']
        with open(self.conf, "w") as f:
            f.write("\n".join(conf) + "\n")

    def start(self):
        self.write_conf()
        with open(self.log, "a") as f:
            f.write("---- start %s\n" % time.strftime("%H:%M:%S"))
        self.proc = env_popen(self.env, ["nats-server", "-c", self.conf], self.log)
        return self

    def monitor(self, path):
        r = Client("http://127.0.0.1:%d" % self.mon, timeout=3).get(path)
        return r.status, r.text, dict(r.headers)

    def healthy(self):
        if self.proc is None or self.proc.poll() is not None:
            raise Fail("nats-server %s exited (%s): %s" % (
                self.name, self.proc and self.proc.returncode, self.log_tail()))
        try:
            st, body, _ = self.monitor("/healthz")
        except OSError:
            return False
        return st == 200 and json.loads(body).get("status") == "ok"

    def wait_ready(self, timeout=30):
        wait_for(self.healthy, timeout, what="nats-server %s /healthz" % self.name)
        st, body, _ = self.monitor("/jsz")
        check(st == 200 and json.loads(body).get("config", {}).get("store_dir", "").startswith(
            self.store), 
              "nats-server %s: JetStream not enabled on %s: %s" % (self.name, self.store,
                                                                   body[:500]))
        return self

    def jsz(self):
        return json.loads(self.monitor("/jsz")[1])

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None:
            stop_proc(self.proc, sig)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=1500):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""


class NatsCluster:
    """Three (or n) nats-servers routed to each other on loopback, JetStream clustered."""

    def __init__(self, env, n=3, prefix="c"):
        self.nodes = [NatsServer(env, "%s%d" % (prefix, i + 1), cluster_name="agtest-" + prefix)
                      for i in range(n)]
        for s in self.nodes:
            s.routes = [o.cport for o in self.nodes if o is not s]

    @property
    def urls(self):
        return [s.url for s in self.nodes]

    def start(self):
        for s in self.nodes:
            s.start()
        return self

    def meta_leader(self, alive=None):
        for s in alive or self.nodes:
            if not s.running():
                continue
            try:
                leader = s.jsz().get("meta_cluster", {}).get("leader")
            except (OSError, ValueError):
                continue
            if leader:
                return leader
        return None

    def wait_ready(self, timeout=45):
        for s in self.nodes:
            s.wait_ready(timeout)
        wait_for(self.meta_leader, timeout, what="a JetStream meta leader")
        for s in self.nodes:
            wait_for(lambda: s.jsz().get("meta_cluster", {}).get("cluster_size") == len(self.nodes),
                     timeout, what="%s sees a cluster of %d" % (s.name, len(self.nodes)))
        return self

    def stop(self):
        for s in self.nodes:
            s.stop()
