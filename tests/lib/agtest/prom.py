# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Prometheus text exposition as the suites check it, and promtool.

    m = Metrics(text)            # or daemon.metrics()
    m.types["agentgate_ratings_total"] == "counter"
    m.series("agentgate_agent_rate")       # [(labels, value)]
    m.val("agentgate_agent_rate", agent="a")  # the one sample with exactly those labels
    m.get(...)                   # the same, None when absent
    m.label_values("agentgate_agent_rate", "agent")
    m.check('val("agentgate_up") == 1', ...)  # expressions over these names
    promtool_check(text)         # `promtool check metrics`: its complaints, or ""
"""
import re
import shutil
import subprocess

from .checks import failing
from .util import Fail

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        if not m:
            raise ValueError("cannot parse line: %r" % line)
        labels = dict(LABEL.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, float(m.group(3))))
    return types, samples


class Metrics:
    def __init__(self, text):
        self.text = text
        self.types, self.samples = parse(text)

    def series(self, name):
        return [(l, v) for n, l, v in self.samples if n == name]

    def val(self, name, **labels):
        hits = [v for l, v in self.series(name) if l == labels]
        if len(hits) != 1:
            raise KeyError("%d samples %s%s" % (len(hits), name, labels))
        return hits[0]

    def get(self, name, **labels):
        hits = [v for l, v in self.series(name) if l == labels]
        return hits[0] if len(hits) == 1 else None

    def label_values(self, name, key):
        return {l.get(key) for l, _ in self.series(name)}

    def check(self, *exprs):
        env = {"types": self.types, "samples": self.samples, "series": self.series,
               "val": self.val, "get": self.get, "label_values": self.label_values}
        bad = failing(None, exprs, env)
        if bad:
            raise Fail("\n".join(bad + ["metrics:", self.text[:3000]]))
        return True


def promtool_check(text):
    """What `promtool check metrics` says about text ("" when it is happy)."""
    tool = shutil.which("promtool")
    if not tool:
        raise Fail("promtool not found (scripts/deps.sh installs it)")
    p = subprocess.run([tool, "check", "metrics"], input=text.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    out = p.stdout.decode(errors="replace")
    return out if p.returncode != 0 or out.strip() else ""
