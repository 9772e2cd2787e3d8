# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The config file and SIGHUP.

t_config_file, t_config_sighup and t_config_reload_clamp are one story on
one daemon (daemon "conf": a config file and --alpha 2): each later case
starts a daemon of its own and first replays the steps of the cases before
it, checks included, so its agents are where the story left them.
"""
import os
import signal

from agtest import case, check, daemon_argv, expect, expect_agent, fixture, jcheck, run_daemon


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)


def reload(d, text, mark="settings reloaded"):
    """Writes text to d's config file (d.config), sends SIGHUP and waits
    for mark to appear once more in the log."""
    n = d.log().count(mark)
    write_file(d.config, text)
    d.signal(signal.SIGHUP)
    d.wait_log(mark, count=n + 1)


@case("bad config file value or key: exit 2 naming file:line")
def t_config_bad_file(env):
    f = env.path("bad.conf")
    pin, st, listen = env.daemon_places("badconf")

    def refused(config):
        return run_daemon(env, daemon_argv(env.san, pin, st, listen, config)[1:], 2)

    write_file(f, "# agentgated\nalpha = 5\nrate = fast\n")
    out = refused(f)
    check(f + ":3:" in out and "rate" in out, "file:line not named: " + out)
    write_file(f, "rate = 50\ncolour = red\n")
    out = refused(f)
    check(f + ":2:" in out and "colour" in out, "file:line not named: " + out)
    out = refused(env.path("no-such.conf"))
    check("no-such.conf" in out, "the missing file is not named: " + out)
    check(not os.path.exists(pin), "a refused start created " + pin)


@fixture(scope="case")
def config_conf(env):
    """Daemon "conf": rate 50 and alpha 5 in its config file, --alpha 2 on
    its command line (d.config is the file)."""
    conf = env.path(env.unique("agentgated") + ".conf")
    write_file(conf, "# test config\nrate = 50   # tokens/s\nalpha = 5\n")
    d = env.daemon("conf", "--alpha", "2", config=conf).start()
    yield d
    d.stop()


def config_file_steps(d):
    expect(d.api.put("/v1/agents/c1", {}), 201, 'd["rate"] == 50', 'd["r0"] == 50',
           'd["alpha"] == 2')
    expect(d.api.post("/v1/ratings", {"agent": "c1", "score": 5}), 200,
           'd["agents"][0]["rate"] == 54')
    expect(d.api.post("/v1/ratings", {"agent": "c0", "score": 3}), 200,
           'd["agents"][0]["rate"] == 50')


def config_sighup_steps(d):
    reload(d, "rate = 70\nalpha = 7\nburst = 2s\n")
    expect(d.api.put("/v1/agents/c2", {}), 201, 'd["rate"] == 70', 'd["r0"] == 70',
           'd["alpha"] == 2', 'd["burst"] == 140', 'd["burst_policy"] == "2s"')
    # An agent that inherits the burst follows it; its own rate stays.
    expect_agent(d.api, "c1", 'd["rate"] == 54', 'd["burst"] == 108')
    jcheck(d.cli("agent", "show", "c1").json(), 'd["rate"] == 54', 'd["burst"] == 108')
    # A bad file on reload: refused, the running settings stay.
    reload(d, "rate = 90\nrate = fast\n", "reload failed")
    check(d.config + ":2:" in d.log(), "reload error does not name %s:2" % d.config)
    d.check_alive()
    expect(d.api.put("/v1/agents/c3", {}), 201, 'd["rate"] == 70', 'd["alpha"] == 2',
           'd["burst"] == 140')


@case("config file rate = 50 applies to new agents; --alpha on the command line wins")
def t_config_file(config_conf):
    config_file_steps(config_conf)


@case("SIGHUP reloads rate = 70 and burst = 2s (flag still wins); a bad reload keeps the "
      "settings")
def t_config_sighup(config_conf):
    config_file_steps(config_conf)
    config_sighup_steps(config_conf)


@case("SIGHUP with a lower r-max clamps inheriting agents (maps too), kept over a restart")
def t_config_reload_clamp(config_conf):
    d = config_conf
    config_file_steps(d)
    config_sighup_steps(d)
    # A lower default r_max clamps the agents that inherit it, in the maps
    # too, and the clamp is kept over a restart.
    reload(d, "rate = 40\nr-max = 60\n")
    expect_agent(d.api, "c2", 'd["rate"] == 60', 'd["r_max"] == 60')
    jcheck(d.cli("agent", "show", "c2").json(), 'd["rate"] == 60')
    expect_agent(d.api, "c1", 'd["rate"] == 54')
    expect(d.api.put("/v1/agents/c4", {}), 201, 'd["rate"] == 40')
    d.restart()
    expect_agent(d.api, "c2", 'd["rate"] == 60')
    expect_agent(d.api, "c3", 'd["rate"] == 60')
    expect_agent(d.api, "c1", 'd["rate"] == 54', 'd["burst"] == 54')
    expect_agent(d.api, "c4", 'd["rate"] == 40')
    jcheck(d.cli("agent", "show", "c2").json(), 'd["rate"] == 60')
    d.stop()
