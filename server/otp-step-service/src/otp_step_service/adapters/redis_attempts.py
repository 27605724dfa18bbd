"""Validate's side of the challenge store on Redis: the Lua that spends an attempt, and the Lua that settles it.

`redis_store` registers and runs them, each one script in the connection's slot (atomic on the server, one
round trip); the counter helpers every script of the store shares are here too. Above each script: the keys
and arguments it takes.
"""

from __future__ import annotations

# Shared by the scripts: a counter's value (0 when absent), and giving one event back.
COUNTERS = """
local function count(key) return tonumber(redis.call('GET', key) or '0') end
local function give_back(key) if count(key) > 0 then redis.call('DECR', key) end end
local function add(key, window)
  redis.call('INCR', key)
  -- The window starts with the first event and is not restarted by a give-back to 0 (as in memory).
  if redis.call('PTTL', key) < 0 then redis.call('EXPIRE', key, window) end
end
"""


# How many spends a challenge remembers by request (see BEGIN_ATTEMPT): more than can be in flight at once
# on one challenge in practice, few enough to keep the challenge small.
SPENDS_REMEMBERED = 16

# KEYS: challenge, lockout counter, the user's failures.
# ARGV: now, lockout threshold, lockout window s, the challenge's user as the caller guessed it ('' none),
#       hide a user's lockout ('1'/'0', AttemptRequest.hide_user_lockout), the request's nonce.
# The challenge remembers which request spent each attempt, and which counts it took ('g': the identifier's
# and the user's, 'u': the identifier's only), so a request whose reply was lost can give back exactly what
# it spent, once (RELEASE_ATTEMPT).
BEGIN_ATTEMPT = (
    COUNTERS
    + f"local SPENDS_REMEMBERED = {SPENDS_REMEMBERED}"
    + """
if count(KEYS[2]) >= tonumber(ARGV[2]) then return {'locked', false} end
local raw = redis.call('GET', KEYS[1])
if not raw then return {'not_found', false} end
local c = cjson.decode(raw)
if c.pending or c.unusable then return {'not_found', false} end
local user = c.user or ''
if user ~= ARGV[4] then return {'stale', user} end
local user_locked = user ~= '' and count(KEYS[3]) >= tonumber(ARGV[2])
if user_locked and ARGV[5] ~= '1' then return {'locked', false} end
if c.expires_at <= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]); return {'expired', false} end
if c.attempts_used >= c.max_attempts then redis.call('DEL', KEYS[1]); return {'exhausted', false} end
c.attempts_used = c.attempts_used + 1
local spends = type(c.spends) == 'table' and c.spends or {}
table.insert(spends, ARGV[6] .. ':' .. (user_locked and 'u' or 'g'))
while #spends > SPENDS_REMEMBERED do table.remove(spends, 1) end
c.spends = spends
local encoded = cjson.encode(c)
redis.call('SET', KEYS[1], encoded, 'KEEPTTL')
add(KEYS[2], ARGV[3])
if user_locked then return {'user_locked', encoded} end  -- spent and counted, for nothing to judge
if user ~= '' then add(KEYS[3], ARGV[3]) end
return {'granted', encoded}
"""
)

# KEYS: challenge, lockout counters... ARGV: nonce, judgement.
FINISH_ATTEMPT = (
    COUNTERS
    + """
local raw = redis.call('GET', KEYS[1])
local c = raw and cjson.decode(raw)
local mine = c and c.nonce == ARGV[1]
local judgement = ARGV[2]
local function give_back_all() for i = 2, #KEYS do give_back(KEYS[i]) end end
if judgement == 'right' or judgement == 'session_dead' then
  if mine then redis.call('DEL', KEYS[1]) end
  give_back_all()
elseif judgement == 'unjudged' then
  if mine and c.attempts_used > 0 then
    c.attempts_used = c.attempts_used - 1
    redis.call('SET', KEYS[1], cjson.encode(c), 'KEEPTTL')
  end
  give_back_all()
elseif judgement == 'wrong' then
  if mine and c.attempts_used >= c.max_attempts then redis.call('DEL', KEYS[1]) end
elseif judgement == 'unknown' then
  give_back_all()  -- the attempt stays spent
end
return 1
"""
)

# KEYS: challenge, lockout counter, the user's failures. ARGV: the request's nonce.
# Gives back the attempt the request spent, and the counts it took, if the challenge remembers that spend (the
# request's BEGIN_ATTEMPT ran, its reply lost or its challenge unreadable); forgets it, so it is given back
# once. Touches nothing when BEGIN_ATTEMPT never ran for the request.
RELEASE_ATTEMPT = (
    COUNTERS
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local c = cjson.decode(raw)
if type(c.spends) ~= 'table' then return 0 end
for i, spend in ipairs(c.spends) do
  if spend == ARGV[1] .. ':g' or spend == ARGV[1] .. ':u' then
    table.remove(c.spends, i)
    if c.attempts_used > 0 then c.attempts_used = c.attempts_used - 1 end
    redis.call('SET', KEYS[1], cjson.encode(c), 'KEEPTTL')
    give_back(KEYS[2])
    if spend == ARGV[1] .. ':g' then give_back(KEYS[3]) end
    return 1
  end
end
return 0
"""
)
