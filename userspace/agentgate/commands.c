// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The command table: dispatch, every level of --help and the manual page
 * (agentgate --man) are generated from it, so they cannot disagree.
 */
#include "cli.h"

const struct command commands[] = {
	{ "attach", NULL,
	  "DEV [--mode native|generic] [--max-agents N] [--max-rules N] [--replace ID]",
	  "attach the datapath to a network device",
	  "Loads the XDP program against the pinned maps (creating them under the pin root "
	  "when missing, sized by --max-agents and --max-rules) and attaches it to DEV through "
	  "a bpf_link pinned at PIN/links/DEV, so it stays attached when no process runs. "
	  "DEV must carry Ethernet frames (an Ethernet NIC, a VLAN, bond, bridge or veth "
	  "device, or lo): the datapath parses Ethernet, so a device without an Ethernet "
	  "header (tun, WireGuard, ipip, gre, sit) is refused, naming its link type, and "
	  "nothing is attached; attach to the Ethernet device the traffic arrives on. "
	  "Native mode is used when the driver supports it, generic mode otherwise (with a "
	  "warning) or when asked. If agentgate is already attached to DEV, its program is "
	  "replaced atomically and the maps are kept. --replace ID replaces only while DEV "
	  "still runs program ID (as agentgate status showed it): when another program has "
	  "replaced it meanwhile, or DEV has no link, the command fails and the running "
	  "program stays. When DEV already runs another XDP program (an IDS, xdp-filter, a "
	  "DDoS filter; attached through netlink, as libxdp's tools and ip link do), agentgate "
	  "goes before it in its mode: that program becomes the one agentgate hands what it "
	  "passes to (a tail call; its verdict is the packet's), and agentgate replaces it on "
	  "DEV in one atomic step (XDP_FLAGS_REPLACE), attached through netlink and its "
	  "program pinned at PIN/progs/DEV (in JSON \"next_prog_id\" then names that "
	  "program). Upgrades and --replace work the same there.",
	  OPEN_CREATE, do_attach },
	{ "detach", NULL, "DEV", "detach the datapath from a network device",
	  "Detaches the program from DEV and removes the pinned link. The maps stay pinned. "
	  "Where agentgate runs before another program, that program takes its place on DEV "
	  "again in one atomic step and goes on running. A bpf_link attachment with a program "
	  "added by chain add refuses (chain del first).",
	  OPEN_WRITE, do_detach },
	{ "chain", "add", "DEV PATH | DEV id ID", "run another XDP program after agentgate on DEV",
	  "The program (loaded, not attached: a bpffs pin such as bpftool prog load makes, or "
	  "its id) runs on every packet agentgate passes on DEV, its verdict the packet's; "
	  "packets agentgate drops never reach it. It must be an XDP program loaded for the "
	  "xdp attach type without frags (as libbpf and libxdp load SEC(\"xdp\")). One a "
	  "device; it replaces the one there. agentgate status shows it.",
	  OPEN_WRITE, do_chain_add },
	{ "chain", "del", "DEV", "stop running another program after agentgate on DEV",
	  "Clears DEV's entry: what agentgate passes is passed.", OPEN_WRITE, do_chain_del },
	{ "status", NULL, "", "show attachments, agents, rules and global settings",
	  "Prints the pin root, each attached device with its mode and program id (and the "
	  "program that runs after agentgate there, if any: in JSON \"next\": {\"prog_id\", "
	  "\"name\"}, only then; \"link_id\" 0 for an attachment through netlink), the "
	  "agents and slots in use, the rules per family, the default action and dry-run.",
	  OPEN_READ, do_status },
	{ "agent", "list", "[--sort drops|rate|idle|name] [--limit N]", "list agents",
	  "One row per agent: slot, rate, burst, unit, tokens now, pinned, and passed and "
	  "dropped packets; while agentgated runs on the pin root also IDLE (seconds since "
	  "the agent's last traffic, rating, consume or change, as agentgated saw it) and "
	  "TTL (its idle TTL, - for none). Sorted by name unless --sort says otherwise (drops "
	  "and rate: highest first; idle: longest idle first, which needs agentgated); "
	  "--limit N prints the first N. Each column is as wide as its widest "
	  "value in the rows printed (a name has up to 64 characters), numbers right-aligned. "
	  "With --json, an array of the objects agent show prints (bytes too), with idle_s "
	  "and ttl (null without agentgated).",
	  OPEN_READ, do_agent_list },
	{ "agent", "show", "NAME", "show one agent",
	  "The agent's limit, tokens now, counters and rules.", OPEN_READ, do_agent_show },
	{ "agent", "set",
	  "NAME [rate R] [burst B] [unit pps|bps|conn] [parent P|none] [quota N/W|none] "
	  "[pin|unpin] [ttl T] [LIMIT V ...]",
	  "create or change an agent",
	  "Creates the agent when it does not exist (defaults: rate 100, burst one second of "
	  "rate, unit pps; a bps burst holds at least one 1518-byte frame), otherwise changes "
	  "the given fields. R is tokens per second (pps: packets, bps: bytes, conn: "
	  "connection openings: TCP SYN without ACK, QUIC Initial, SCTP INIT, DCCP-Request, "
	  "the agent's other packets cost nothing), a decimal "
	  "number with an optional k, M or G suffix; B is tokens. parent P puts the agent under "
	  "parent bucket P (agentgate parent set): its packets then pass only when P and every "
	  "parent above P admit them too; none takes it out. quota N/W adds a long-window "
	  "quota beside the rate: N tokens (the agent's unit) per calendar hour, day or 30d "
	  "(W), on the TAI clock, e.g. quota 1e7/day; what it refuses costs the rate nothing; "
	  "none removes it. A new unit without a burst "
	  "takes that unit's default burst. Tokens in the bucket are kept across a change, "
	  "capped at the new burst. pin marks the rate as set by an "
	  "operator, so ratings do not move it; unpin hands it back to the policy. ttl sets "
	  "the agent's idle TTL, which agentgated keeps (it must be running): after T "
	  "without traffic, ratings, consumes or changes, agentgated removes the agent. T is "
	  "whole seconds or a whole number of s, m, h or d (24h); 0 or never: no expiry. "
	  "LIMIT V sets one of the agent's own rating influence limits, which agentgated "
	  "keeps (it must be running; agentgated(8), POLICY): max-change F, change-window T, "
	  "wave-users N, wave-hold yes|no, user-cap POINTS; V default returns it to "
	  "agentgated's option.",
	  OPEN_WRITE, do_agent_set },
	{ "agent", "reset", "NAME", "refill an agent's bucket to its burst", NULL, OPEN_WRITE,
	  do_agent_reset },
	{ "agent", "drain", "NAME N", "take N tokens from an agent's bucket",
	  "A penalty: removes N tokens, down to an empty bucket (never below, so it costs at "
	  "most one burst of refill time).",
	  OPEN_WRITE, do_agent_drain },
	{ "agent", "del", "NAME", "delete an agent and its rules",
	  "Removes the agent, every rule that points at it and its bucket; its traffic "
	  "becomes unclassified.",
	  OPEN_WRITE, do_agent_del },
	{ "agent", "explain", "NAME", "tell where an agent's rate came from",
	  "Whether the rate is pinned (and by whom), comes from the ratings or was set by an "
	  "operator: the policy, the last ratings that moved the rate (time, user, score, id, "
	  "the rate after each), the last operator changes (who, when, what changed) and the "
	  "enforced rate and tokens now. While agentgated owns the pin root it answers; "
	  "otherwise the same is read from its state directory (--state-dir), read-only, with "
	  "the live values from the maps. A directory that holds no agentgated state store, "
	  "or a damaged one, is an error (exit 1). With --json, the object of GET "
	  "/v1/agents/NAME/explain (agentgated(8), EXPLAIN).",
	  OPEN_READ, do_agent_explain },
	{ "agent", "charge", "NAME N [max-debt DURATION]",
	  "charge a cost known afterwards, into debt",
	  "Takes N tokens from the agent's bucket and every parent above it whatever is left "
	  "(an LLM gateway's token count for a response): a bucket goes below empty, into "
	  "debt, by at most DURATION of its refill (default 60s; e.g. 500ms, 5m, 1h), the rest "
	  "forgiven. Until refill has paid the debt back the NIC drops the agent's packets and "
	  "consume refuses. Prints what is left (negative: the debt) and when one token will "
	  "be admitted again (JSON: name, charged, remaining, retry_after_ms).",
	  OPEN_WRITE, do_agent_charge },
	{ "parent", "set",
	  "NAME [rate R] [burst B] [unit pps|bps|conn] [parent P|none] [quota N/W|none]",
	  "create or change a parent bucket",
	  "A parent is a bucket that agents (and other parents) share: a customer, a team. A "
	  "packet passes only if its agent's bucket and every parent above it admit it, and a "
	  "packet refused anywhere costs nothing anywhere. Up to 4 buckets on a path (an "
	  "agent and 3 parents: org, team, sub-team). R, B and the units are as for agent set "
	  "(defaults: rate 100, burst one second); ratings never move a parent's rate. parent "
	  "P puts it under another parent (no cycles); quota N/W caps what all its agents "
	  "take in a calendar window (as for agent set). Parents and agents share one name "
	  "space and the slots of --max-agents; no rule points at a parent. While agentgated "
	  "runs the change goes through it (stored, audited, kept across reboots, in a fleet "
	  "on every host); without it the maps are written here and the change journaled.",
	  OPEN_WRITE, do_parent_set },
	{ "parent", "show", "NAME", "show one parent bucket",
	  "Its limit, tokens now, parent, children, quota (JSON \"quota\": {\"limit\", "
	  "\"window\", \"used\", \"remaining\", \"resets_in_s\"} or null), counters "
	  "(packets of its agents that reached it) and refusals by reason: its own rate, its "
	  "quota, or a parent above it (JSON \"refused\": {\"rate\", \"quota\", \"parent\"}).",
	  OPEN_READ, do_parent_show },
	{ "parent", "list", "", "list parent buckets",
	  "Every parent, by name, as parent show prints it (JSON: an array).", OPEN_READ,
	  do_parent_list },
	{ "parent", "del", "NAME", "delete a parent bucket",
	  "Refused while agents or parents name it as their parent (move or delete them "
	  "first).",
	  OPEN_WRITE, do_parent_del },
	{ "rule", "add", "PREFIX [port P] agent NAME", "classify a source prefix to an agent",
	  "Traffic from PREFIX (IPv4 or IPv6, any length; a bare address is a host) to "
	  "destination port P (any port when omitted) is charged to NAME. The longest "
	  "prefix wins; at equal length a rule with a port wins.",
	  OPEN_WRITE, do_rule_add },
	{ "rule", "del", "PREFIX [port P]", "delete a rule", NULL, OPEN_WRITE, do_rule_del },
	{ "rule", "list", "[agent NAME]", "list rules",
	  "A table of PREFIX, PORT (any when the rule has none) and AGENT, each column as "
	  "wide as its widest value. With --json, an array of {\"prefix\", \"port\", "
	  "\"agent\"}; port is null for any port.",
	  OPEN_READ, do_rule_list },
	{ "rule", "sync", "AGENT FILE", "replace an agent's feed rules by a published list",
	  "FILE (- for standard input) holds the agent's address ranges as its operator "
	  "publishes them: JSON {\"prefixes\": [{\"ipv4Prefix\": \"192.0.2.0/24\"}, "
	  "{\"ipv6Prefix\": \"2001:db8::/32\"}]} or one prefix a line ('#' comments). It "
	  "is checked whole (any bad entry: exit 2, nothing changed), then the agent's feed "
	  "rules become exactly these prefixes in one swap: the new ones first, then those "
	  "that left, so a source in both is never unclassified. Rules made with rule add "
	  "are kept apart and never removed by it; a prefix already another agent's stays "
	  "that agent's (counted as a conflict). Needs agentgated (exit 1 without it), which "
	  "stores the set; an agent fed from a source (agentgated --rule-feed or PUT "
	  "/v1/agents/NAME/feed) refuses it. With --json, the feed object of GET "
	  "/v1/agents/NAME/feed.",
	  OPEN_READ, do_rule_sync },
	{ "config", "set", "default-action pass|drop | dry-run on|off", "change a global setting",
	  "default-action applies to IP traffic no rule classifies (malformed and non-IP "
	  "frames always pass). dry-run on passes traffic over the limit and counts it as "
	  "would-drop, for a safe rollout.",
	  OPEN_WRITE, do_config_set },
	{ "config", "show", "", "show the global settings", NULL, OPEN_READ, do_config_show },
	{ "top", NULL, "[--sort drops|rate|name] [--limit N] [--interval S] [--count N]",
	  "live view of agents, refreshed every second",
	  "Per agent: rate, burst, tokens, passed and dropped packets per second over the "
	  "last interval, sorted by drops unless --sort says otherwise, in columns as wide as "
	  "their widest value. The title line counts every agent and, when fewer rows are "
	  "shown, how many and why: \"22 agents, 1 shown (--limit 1)\", or \"(terminal "
	  "height)\" when a terminal is too short for every row; \"1 agent\" when there is "
	  "one. q or Ctrl-C quits and restores the terminal. With --json, one JSON document "
	  "per interval, one per line, holding the first --limit agents. --count stops after "
	  "N intervals.",
	  OPEN_READ, do_top },
	{ "stats", NULL, "", "global counters",
	  "Packets by reason (unclassified, each malformed kind, dry-run would-drops, ...) "
	  "and the totals of every agent's counters.",
	  OPEN_READ, do_stats },
};

const size_t n_commands = sizeof(commands) / sizeof(commands[0]);
