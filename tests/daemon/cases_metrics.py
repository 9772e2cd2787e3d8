# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""GET /metrics (section 7 of the shell suite): promtool, the contract's
families and counts, and --metrics-max-agents. The cases only read the
metrics of one daemon the fixture metrics_met set up (its counts are
daemon-wide)."""
import re
import shutil

from agtest import Skip, case, check, expect, expect_error, fixture
from agtest.prom import Metrics, promtool_check

# The agents' rates from the API after metrics_met's ratings: m1 10+20 = 30,
# m2 20-20 = 1 (r_min), m3 30, m4 40, m5 50; their bursts 1 s of their rates.
RATES = {"m1": 30, "m2": 1, "m3": 30, "m4": 40, "m5": 50}


@fixture
def metrics_met(env):
    """A daemon with --metrics-max-agents 2 and five agents, rated: 2
    applied, 1 duplicate and 3 invalid ratings."""
    d = env.daemon("met", "--metrics-max-agents", "2").start()
    api = d.api
    for i, a in enumerate(("m1", "m2", "m3", "m4", "m5")):
        expect(api.put("/v1/agents/" + a, '{"rate":%d}' % (10 + 10 * i)), 201)
    expect(api.post("/v1/ratings", '[{"id":"x1","agent":"m1","score":5},'
                                   '{"agent":"m2","score":1}]'), 200, 'd["applied"] == 2')
    expect(api.post("/v1/ratings", '{"id":"x1","agent":"m1","score":5}'), 200,
           'd["duplicates"] == 1')
    expect(api.post("/v1/ratings", '[{"agent":"m1","score":9},{"agent":"m1"},'
                                   '{"agent":"m1","score":3}]'), 400)
    # The aggregate's label cannot be an agent's name.
    expect_error(api.put("/v1/agents/_other", "{}"), 400, "bad_request", "_other")
    expect(api.post("/v1/ratings", '{"agent":"_other","score":5}'), 400,
           '[(e["index"], e["field"]) for e in d["errors"]] == [(0, "agent")]')
    yield d
    d.stop()


def get_metrics(d):
    """GET /metrics: 200 and no sanitizer report in the log; the response."""
    r = d.api.get("/metrics")
    d.san_clean()
    check(r.status == 200, "expected status 200", r.describe())
    return r


@case("GET /metrics passes promtool check metrics; the contract's families and counts")
def t_metrics_promtool(metrics_met):
    if not shutil.which("promtool"):
        raise Skip("promtool not found")
    r = get_metrics(metrics_met)
    ctype = r.header("Content-Type") or ""
    check(ctype.startswith("text/plain"), "Content-Type '%s', expected text/plain" % ctype,
          r.describe())
    out = promtool_check(r.text)
    check(out == "", "promtool check metrics failed:", out)
    Metrics(r.text).check(
        'types["agentgate_packets_total"] == "counter"',
        'types["agentgate_bytes_total"] == "counter"',
        'types["agentgate_bucket_tokens"] == "gauge"',
        'types["agentgate_refill_rate"] == "gauge"',
        'types["agentgate_bucket_capacity"] == "gauge"',
        'types["agentgate_ratings_total"] == "counter"',
        'types["agentgate_rating_apply_seconds"] == "histogram"',
        'types["agentgate_unclassified_packets_total"] == "counter"',
        'types["agentgate_parse_errors_total"] == "counter"',
        'types["agentgate_agents"] == "gauge"', 'types["agentgate_agent_slots"] == "gauge"',
        'val("agentgate_agents") == 5', 'val("agentgate_agent_slots") == 65536',
        'val("agentgate_ratings_total", result="applied") == 2',
        'val("agentgate_ratings_total", result="duplicate") == 1',
        'val("agentgate_ratings_total", result="invalid") == 3',
        'val("agentgate_ratings_total", result="rejected") == 0',
        'val("agentgate_rating_apply_seconds_count") == 2',
        'val("agentgate_rating_apply_seconds_bucket", le="+Inf") == 2',
        'val("agentgate_rating_apply_seconds_sum") > 0',
        'len(series("agentgate_parse_errors_total")) >= 1',
        'all("reason" in l for l, v in series("agentgate_parse_errors_total"))',
        'label_values("agentgate_unclassified_packets_total", "verdict") >= {"pass"}',
        '{l["verdict"] for l, v in series("agentgate_packets_total")} >= {"pass", "drop"}')


def sample(text, name, agent):
    """The value of name{agent="AGENT"} in text, None when absent."""
    m = re.search(r'^%s\{agent="%s"\} (\S+)$' % (name, re.escape(agent)), text, re.M)
    return float(m.group(1)) if m else None


@case('--metrics-max-agents 2 with 5 agents: 2 own labels plus agent="_other" sums')
def t_metrics_other(metrics_met):
    text = get_metrics(metrics_met).text
    # --metrics-max-agents 2, 5 agents: two keep their own labels, the
    # other three are summed under agent="_other".
    Metrics(text).check(
        'len(label_values("agentgate_refill_rate", "agent") - {"_other"}) == 2',
        '"_other" in label_values("agentgate_refill_rate", "agent")',
        'label_values("agentgate_refill_rate", "agent") <= '
        '{"m1", "m2", "m3", "m4", "m5", "_other"}',
        'all(label_values(f, "agent") == label_values("agentgate_refill_rate", "agent") '
        'for f in ("agentgate_packets_total", "agentgate_bytes_total", '
        '"agentgate_bucket_tokens", "agentgate_bucket_capacity"))',
        'len(series("agentgate_refill_rate")) == 3',
        'val("agentgate_metrics_other_agents") == 3')
    own = sorted(set(re.findall(r'agentgate_refill_rate\{agent="(m[0-9])"\}', text)))
    # The _other series are the sums over the other agents.
    other = sum(v for k, v in RATES.items() if k not in own)
    bad = []
    for a in own:
        if sample(text, "agentgate_refill_rate", a) != RATES[a]:
            bad.append("refill_rate of %s: %s, expected %s" % (
                a, sample(text, "agentgate_refill_rate", a), RATES[a]))
        if sample(text, "agentgate_bucket_capacity", a) != RATES[a]:
            bad.append("bucket_capacity of %s" % a)
    if sample(text, "agentgate_refill_rate", "_other") != other:
        bad.append("refill_rate _other: %s, expected %s" % (
            sample(text, "agentgate_refill_rate", "_other"), other))
    if sample(text, "agentgate_bucket_capacity", "_other") != other:
        bad.append("bucket_capacity _other: %s, expected %s" % (
            sample(text, "agentgate_bucket_capacity", "_other"), other))
    check(not bad, "\n".join(bad))
