"""Generate's side of the challenge store on Redis: the Lua that reserves a send, takes a caller's budgets,
gives counts back, and settles the send.

`redis_store` registers and runs them, each one script in one slot (atomic on the server, one round trip).
Above each script: the keys and arguments it takes.
"""

from __future__ import annotations

from otp_step_service.adapters.redis_attempts import COUNTERS

# KEYS: challenge, sends counter, lockout counter, alias entry, alias hold, alias unresolved sends, the user's
#       sends, the user's failures, budgets... (keys the request has no use for are unused names in its slot)
# ARGV: placeholder json, now, execution id, cooldown s, placeholder TTL ms, send limit, send window s,
#       lockout threshold, reservation s (the hold of a placeholder without a lease), the user the caller read
#       from the alias entry ('' none), max unresolved sends, has alias ('1'/'0'), budgets' (limit, window)...
# A pending placeholder of the same execution whose lease lives is in flight; one whose lease ran out was lost
# with its instance, and this reservation takes its place (answering 'reserved', 'took_over').
# The alias entry names the identifier's Cognito user; the caller reads it first and passes that user's
# counters as keys. Should the entry have changed since, the script touches nothing and answers 'stale' with
# the user it found, and the caller runs it again with those keys: a script reads only keys it was given.
BEGIN_SEND = (
    COUNTERS
    + """
local now = tonumber(ARGV[2])
local has_alias = ARGV[12] == '1'
local user = has_alias and redis.call('GET', KEYS[4])
if (user or '') ~= ARGV[10] then return {'stale', user or ''} end
if count(KEYS[3]) >= tonumber(ARGV[8]) then return {'locked', false} end
if user and count(KEYS[8]) >= tonumber(ARGV[8]) then return {'locked', false} end
local raw = redis.call('GET', KEYS[1])
local lost = ''  -- the nonce of this execution's reservation whose lease ran out, taken over here
local replaced = ''  -- that reservation as stored, put back should the takeover send nothing
if raw then
  local c = cjson.decode(raw)
  if c.expires_at > now then
    local same = ARGV[3] ~= '' and c.step_execution_id == ARGV[3]
    if same and not c.pending and not c.unusable then return {'replay', raw} end
    if same and c.pending then
      local lease = c.lease_until
      if not lease or lease == 0 then lease = c.sent_at + tonumber(ARGV[9]) end
      if lease > now then return {'in_flight', tostring(lease - now)} end
      lost = c.nonce  -- its cooldown is this execution's own: no wait for it
      replaced = raw
      if c.replaces then  -- itself a takeover: the reservation it replaced is older, and not kept twice
        c.replaces = nil
        replaced = cjson.encode(c)
      end
    else
      local wait = c.sent_at + tonumber(ARGV[4]) - now
      if wait > 0 then return {'too_soon', tostring(math.max(wait, 1))} end
    end
  end
end
if count(KEYS[2]) >= tonumber(ARGV[6]) then
  return {'over_budget', tostring(math.max(redis.call('TTL', KEYS[2]), 1))}
end
if user and count(KEYS[7]) >= tonumber(ARGV[6]) then
  return {'over_budget', tostring(math.max(redis.call('TTL', KEYS[7]), 1))}
end
if not user and has_alias then
  -- This identifier's first code is on its way and its user is not known yet.
  local holder = redis.call('GET', KEYS[5])
  if holder and holder ~= lost then return {'too_soon', '1'} end
  if count(KEYS[6]) >= tonumber(ARGV[11]) then
    return {'too_soon', tostring(math.max(redis.call('TTL', KEYS[6]), 1))}
  end
end
for i = 9, #KEYS do
  local limit = tonumber(ARGV[13 + (i - 9) * 2])
  if count(KEYS[i]) >= limit then
    return {'budget_tripped', tostring(math.max(redis.call('TTL', KEYS[i]), 1))}
  end
end
add(KEYS[2], ARGV[7])
for i = 9, #KEYS do add(KEYS[i], ARGV[14 + (i - 9) * 2]) end
local placeholder = cjson.decode(ARGV[1])
if user then
  add(KEYS[7], ARGV[7])
  placeholder.user = user  -- what finish_send gives back or does not count twice
elseif has_alias then
  local lease = placeholder.lease_until
  if not lease or lease == 0 then lease = now + tonumber(ARGV[9]) end
  redis.call('SET', KEYS[5], placeholder.nonce, 'PX', math.max(1, math.floor((lease - now) * 1000)))
end
-- A lost reservation this one replaces keeps every count it made: a code that may have gone out; should
-- nothing be sent in its place (NOT_SENT), it is put back, and holds the cooldown as before.
if replaced ~= '' then placeholder.replaces = replaced end
redis.call('SET', KEYS[1], cjson.encode(placeholder), 'PX', ARGV[5])
return {'reserved', lost ~= '' and 'took_over' or false}
"""
)

# A caller's send budgets span connections, so they live in a slot of their own and are taken after the
# connection's script reserved the send (which is given back if they are spent).
# KEYS: budgets... ARGV: (limit, window)...
TAKE_BUDGETS = (
    COUNTERS
    + """
for i = 1, #KEYS do
  if count(KEYS[i]) >= tonumber(ARGV[i * 2 - 1]) then
    return {'budget_tripped', tostring(math.max(redis.call('TTL', KEYS[i]), 1))}
  end
end
for i = 1, #KEYS do add(KEYS[i], ARGV[i * 2]) end
return {'reserved', false}
"""
)

# KEYS: counters... (one event of each given back)
GIVE_BACK = (
    COUNTERS
    + """
for i = 1, #KEYS do give_back(KEYS[i]) end
return 1
"""
)

# KEYS: challenge, alias entry, alias hold, alias unresolved sends, the settled user's sends, the counted user's
#       sends, counted counters...
# ARGV: nonce, result, challenge json (or ''), TTL ms, the challenge's user (or ''), send window s,
#       alias TTL s, the user begin_send counted the send for (as the caller knows it), has alias ('1'/'0'),
#       a decoy's ('1'/'0': its user never replaces a known one, see Challenge.user).
FINISH_SEND = (
    COUNTERS
    + """
local raw = redis.call('GET', KEYS[1])
local current = raw and cjson.decode(raw)
local mine = current and current.nonce == ARGV[1]
local counted_user = (mine and current.user) or ''
if counted_user ~= ARGV[8] then return {'stale', counted_user} end
local has_alias = ARGV[9] == '1'
local holding = has_alias and redis.call('GET', KEYS[3]) == ARGV[1]
if ARGV[2] == 'not_sent' then
  -- Only this reservation's own counts, while it is one: a NOT_SENT made again, or made for a reservation
  -- whose script may not have run (its reply lost), gives nothing back twice or for nothing.
  local released = mine and current.pending
  if released then
    -- A takeover puts back the lost reservation it replaced (a code that may have gone out keeps its
    -- cooldown); any other reservation leaves the key free.
    if current.replaces then redis.call('SET', KEYS[1], current.replaces, 'KEEPTTL')
    else redis.call('DEL', KEYS[1]) end
    for i = 7, #KEYS do give_back(KEYS[i]) end
    if counted_user ~= '' then give_back(KEYS[6]) end
  end
  if holding then redis.call('DEL', KEYS[3]) end
  return {'settled', released and '1' or ''}
end
if not mine then
  -- Its reservation was taken over (its lease ran out: a slow instance) or is gone: it writes nothing (the
  -- takeover counts and records the execution's send), and ends only its own hold, if it still has one.
  if holding then redis.call('DEL', KEYS[3]) end
  return {'settled', ''}
end
-- Only over the reservation: a settle made again (its first reply lost) must not reset a challenge's attempts.
if current.pending and ARGV[3] ~= '' then redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) end
local user = ARGV[5]
local known = has_alias and ARGV[10] == '1' and redis.call('GET', KEYS[2])
if known then
  redis.call('EXPIRE', KEYS[2], ARGV[7])  -- kept, and held as a send holds it
elseif has_alias and user ~= '' then
  if user ~= counted_user then add(KEYS[5], ARGV[6]) end
  -- Codes that went out through this identifier while its user was unknown were this user's too.
  local lost = count(KEYS[4])
  if lost > 0 then
    redis.call('INCRBY', KEYS[5], lost)
    if redis.call('PTTL', KEYS[5]) < 0 then redis.call('EXPIRE', KEYS[5], ARGV[6]) end
    redis.call('DEL', KEYS[4])
  end
  redis.call('SET', KEYS[2], user, 'EX', ARGV[7])
elseif has_alias and counted_user == '' and ARGV[2] == 'lost' and current.pending then
  -- A code may have reached a user nobody can name yet; counted once, over the reservation (a settle made
  -- again finds its own record, no longer pending).
  add(KEYS[4], ARGV[6])
end
if holding then redis.call('DEL', KEYS[3]) end
return {'settled', ''}
"""
)
