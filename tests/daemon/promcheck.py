#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""promcheck.py FILE EXPR...: every Python expression over a Prometheus text
exposition (FILE) must be True; prints each one that is not and exits 1.

In the expressions: types (family -> "counter", "gauge", ...),
samples (a list of (name, labels dict, value)), and helpers
  series(name)           -> [(labels, value)] of one sample name
  val(name, **labels)    -> the value of the one sample with exactly those labels
  label_values(name, k)  -> the set of values label k takes in that sample name
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from jcheck import check_all  # noqa: E402

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


def main():
    with open(sys.argv[1]) as f:
        text = f.read()
    try:
        types, samples = parse(text)
    except ValueError as e:
        print(e)
        return 1

    def series(name):
        return [(l, v) for n, l, v in samples if n == name]

    def val(name, **labels):
        hits = [v for l, v in series(name) if l == labels]
        if len(hits) != 1:
            raise KeyError("%d samples %s%s" % (len(hits), name, labels))
        return hits[0]

    def label_values(name, key):
        return {l.get(key) for l, _ in series(name)}

    env = {"types": types, "samples": samples, "series": series, "val": val,
           "label_values": label_values}
    return check_all(sys.argv[2:], env)


if __name__ == "__main__":
    sys.exit(main())
