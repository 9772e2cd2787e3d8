-- SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
-- A token bucket in Redis, the way applications limit agents without
-- agentgate: one hash per agent, refilled from the elapsed time on every
-- check, all in one atomic script (EVALSHA). bench/consume.sh measures it
-- against agentgated's POST /v1/agents/{agent}/consume.
--
-- KEYS[1]  the agent's bucket
-- ARGV     rate (tokens/s), burst (tokens), tokens wanted
-- Returns  {1, remaining} when allowed, {0, remaining, retry_after_ms} when not.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6

local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
end

local allowed = 0
if tokens >= want then
  tokens = tokens - want
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
-- A full bucket needs no state: let idle agents expire.
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
if allowed == 1 then
  return {1, tostring(tokens)}
end
return {0, tostring(tokens), math.ceil((want - tokens) / rate * 1000)}
