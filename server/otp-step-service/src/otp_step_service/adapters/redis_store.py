"""The shared challenge store on Redis (redis.asyncio): several service instances behind one load balancer.

Validate may land on another instance than Generate did, so challenges and counters live in Redis. Each of a
step's two bookkeeping operations is one Lua script (atomic on the server, one round trip), so two instances
can never spend the same attempt or the same send twice; keys carry a TTL, so expired challenges and counter
windows leave Redis by themselves. Sessions and usernames are sealed (`sealing.SessionSealer`): nothing
secret is in Redis in clear. A step's keys (its challenge, its identifier's counters) are not in one
hash slot: the store needs a single Redis (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as redis
from redis.exceptions import RedisError

from otp_step_service.adapters.sealing import SessionSealer
from otp_step_service.steps.challenges import (
    USER_FAILURES,
    USER_SENDS,
    AttemptGrant,
    AttemptRequest,
    AttemptVerdict,
    Challenge,
    ChallengeKey,
    Judgement,
    SendRequest,
    SendReservation,
    SendResult,
    SendVerdict,
)
from otp_step_service.steps.clock import SYSTEM_CLOCK, Clock
from otp_step_service.steps.errors import ChallengeStoreError
from otp_step_service.steps.outcomes import Channel

P = ParamSpec("P")

# Beside an identifier's alias entry: the one send in flight while the identifier's user is unknown.
_HOLD = ":hold"
# Beside it: codes that may have gone out while the user was unknown (MAX_UNRESOLVED_SENDS).
_UNRESOLVED = ":unresolved"
R = TypeVar("R")

# Shared by the scripts: a counter's value (0 when absent), and giving one event back.
_COUNTERS = """
local function count(key) return tonumber(redis.call('GET', key) or '0') end
local function give_back(key) if count(key) > 0 then redis.call('DECR', key) end end
local function add(key, window)
  redis.call('INCR', key)
  -- The window starts with the first event and is not restarted by a give-back to 0 (as in memory).
  if redis.call('PTTL', key) < 0 then redis.call('EXPIRE', key, window) end
end
"""

# KEYS: challenge, sends counter, lockout counter, alias entry, alias hold, alias unresolved sends, budgets...
# ARGV: placeholder json, now, execution id, cooldown s, placeholder TTL ms, send limit, send window s,
#       lockout threshold, reservation s, user sends prefix, user failures prefix, max unresolved sends,
#       budgets' (limit, window)...
# The alias entry names the identifier's Cognito user (a digest); that user's counters are built from it, so
# they are keys the script did not declare (fine on one Redis; see the module docstring).
_BEGIN_SEND = (
    _COUNTERS
    + """
local now = tonumber(ARGV[2])
local user = KEYS[4] ~= '' and redis.call('GET', KEYS[4])
if count(KEYS[3]) >= tonumber(ARGV[8]) then return {'locked', false} end
if user and count(ARGV[11] .. user) >= tonumber(ARGV[8]) then return {'locked', false} end
local raw = redis.call('GET', KEYS[1])
if raw then
  local c = cjson.decode(raw)
  if c.expires_at > now then
    local same = ARGV[3] ~= '' and c.step_execution_id == ARGV[3]
    if same and not c.pending and not c.unusable then return {'replay', raw} end
    local abandoned = c.pending and now - c.sent_at > tonumber(ARGV[9])
    local wait = c.sent_at + tonumber(ARGV[4]) - now
    if (same and not abandoned) or wait > 0 then return {'too_soon', tostring(math.max(wait, 1))} end
  end
end
if count(KEYS[2]) >= tonumber(ARGV[6]) then
  return {'over_budget', tostring(math.max(redis.call('TTL', KEYS[2]), 1))}
end
if user and count(ARGV[10] .. user) >= tonumber(ARGV[6]) then
  return {'over_budget', tostring(math.max(redis.call('TTL', ARGV[10] .. user), 1))}
end
if not user and KEYS[4] ~= '' then
  -- This identifier's first code is on its way and its user is not known yet.
  if redis.call('EXISTS', KEYS[5]) == 1 then return {'too_soon', '1'} end
  if count(KEYS[6]) >= tonumber(ARGV[12]) then
    return {'too_soon', tostring(math.max(redis.call('TTL', KEYS[6]), 1))}
  end
end
for i = 7, #KEYS do
  local limit = tonumber(ARGV[13 + (i - 7) * 2])
  if count(KEYS[i]) >= limit then
    return {'budget_tripped', tostring(math.max(redis.call('TTL', KEYS[i]), 1))}
  end
end
add(KEYS[2], ARGV[7])
for i = 7, #KEYS do add(KEYS[i], ARGV[14 + (i - 7) * 2]) end
local placeholder = cjson.decode(ARGV[1])
if user then
  add(ARGV[10] .. user, ARGV[7])
  placeholder.user = user  -- what finish_send gives back or does not count twice
elseif KEYS[4] ~= '' then
  redis.call('SET', KEYS[5], placeholder.nonce, 'PX', math.floor(tonumber(ARGV[9]) * 1000))
end
redis.call('SET', KEYS[1], cjson.encode(placeholder), 'PX', ARGV[5])
return {'reserved', false}
"""
)

# KEYS: challenge, alias entry, alias hold, alias unresolved sends, counted counters...
# ARGV: nonce, result, challenge json (or ''), TTL ms, the challenge's user (or ''), send window s,
#       alias TTL s, user sends prefix.
_FINISH_SEND = (
    _COUNTERS
    + """
local raw = redis.call('GET', KEYS[1])
local current = raw and cjson.decode(raw)
local mine = current and current.nonce == ARGV[1]
local counted_user = (mine and current.user) or ''
local holding = KEYS[2] ~= '' and redis.call('GET', KEYS[3]) == ARGV[1]
if ARGV[2] == 'not_sent' then
  if mine then redis.call('DEL', KEYS[1]) end
  for i = 5, #KEYS do give_back(KEYS[i]) end
  if counted_user ~= '' then give_back(ARGV[8] .. counted_user) end
  if holding then redis.call('DEL', KEYS[3]) end
  return 1
end
if mine and ARGV[3] ~= '' then redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) end
local user = ARGV[5]
if KEYS[2] ~= '' and user ~= '' then
  local sends = ARGV[8] .. user
  if user ~= counted_user then add(sends, ARGV[6]) end
  -- Codes that went out through this identifier while its user was unknown were this user's too.
  local lost = count(KEYS[4])
  if lost > 0 then
    redis.call('INCRBY', sends, lost)
    if redis.call('PTTL', sends) < 0 then redis.call('EXPIRE', sends, ARGV[6]) end
    redis.call('DEL', KEYS[4])
  end
  redis.call('SET', KEYS[2], user, 'EX', ARGV[7])
elseif KEYS[2] ~= '' and counted_user == '' and ARGV[2] == 'lost' then
  add(KEYS[4], ARGV[6])  -- a code may have reached a user nobody can name yet
end
if holding then redis.call('DEL', KEYS[3]) end
return 1
"""
)

# KEYS: challenge, lockout counter. ARGV: now, lockout threshold, lockout window s, user failures prefix.
_BEGIN_ATTEMPT = (
    _COUNTERS
    + """
if count(KEYS[2]) >= tonumber(ARGV[2]) then return {'locked', false} end
local raw = redis.call('GET', KEYS[1])
if not raw then return {'not_found', false} end
local c = cjson.decode(raw)
if c.pending or c.unusable then return {'not_found', false} end
local user_failures = c.user and c.user ~= '' and (ARGV[4] .. c.user)
if user_failures and count(user_failures) >= tonumber(ARGV[2]) then return {'locked', false} end
if c.expires_at <= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]); return {'expired', false} end
if c.attempts_used >= c.max_attempts then redis.call('DEL', KEYS[1]); return {'exhausted', false} end
c.attempts_used = c.attempts_used + 1
local encoded = cjson.encode(c)
redis.call('SET', KEYS[1], encoded, 'KEEPTTL')
add(KEYS[2], ARGV[3])
if user_failures then add(user_failures, ARGV[3]) end
return {'granted', encoded}
"""
)

# KEYS: challenge, lockout counters... ARGV: nonce, judgement.
_FINISH_ATTEMPT = (
    _COUNTERS
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


def _encode(challenge: Challenge, sealer: SessionSealer, context: str) -> str:
    return json.dumps(
        {
            "username": sealer.seal(challenge.username, context),
            "session": sealer.seal(challenge.session, context),
            "channel": challenge.channel.value,
            "masked_destination": challenge.masked_destination,
            "expires_at": challenge.expires_at,
            "max_attempts": challenge.max_attempts,
            "attempts_used": challenge.attempts_used,
            "step_execution_id": challenge.step_execution_id,
            "sent_at": challenge.sent_at,
            "nonce": challenge.nonce,
            "pending": challenge.pending,
            "decoy": challenge.decoy,
            "unusable": challenge.unusable,
            "user": challenge.user,
        }
    )


def _decode(raw: str | bytes, sealer: SessionSealer, context: str) -> Challenge:
    data: dict[str, Any] = json.loads(raw)
    return Challenge(
        username=sealer.open(data["username"], context),
        session=sealer.open(data["session"], context),
        channel=Channel(data["channel"]),
        masked_destination=data["masked_destination"],
        expires_at=float(data["expires_at"]),
        max_attempts=int(data["max_attempts"]),
        attempts_used=int(data["attempts_used"]),
        step_execution_id=data.get("step_execution_id", ""),
        sent_at=float(data.get("sent_at", 0.0)),
        nonce=str(data.get("nonce", "")),
        pending=bool(data.get("pending", False)),
        decoy=bool(data.get("decoy", False)),
        unusable=bool(data.get("unusable", False)),
        user=str(data.get("user", "")),
    )


def redis_client(url: str, max_connections: int) -> redis.Redis:
    """A client for `redis://host:port/db` (or rediss://, unix://) with short socket timeouts: a Redis that
    hangs must fail a step quickly (a retryable store failure), not hold it to the caller's deadline."""
    return redis.Redis.from_url(
        url,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        health_check_interval=30,
        max_connections=max_connections,
    )


def text(value: Any) -> str:
    """A Redis reply as str (replies are bytes unless the client decodes them)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def store_errors(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Redis failures leave as ChallengeStoreError: a retryable step failure, not a crashed RPC."""

    @functools.wraps(method)
    async def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise ChallengeStoreError(type(exc).__name__) from exc

    return translated


class RedisChallengeStore:
    """ChallengeStore on Redis. Keys: `<prefix>challenge:<sha256>`, `<prefix>sends:…`, `<prefix>failures:…`."""

    def __init__(
        self,
        client: redis.Redis,
        sealer: SessionSealer,
        prefix: str = "otp-steps:",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._redis = client
        self._sealer = sealer
        self._prefix = prefix
        self._clock = clock
        self._begin_send = client.register_script(_BEGIN_SEND)
        self._finish_send = client.register_script(_FINISH_SEND)
        self._begin_attempt = client.register_script(_BEGIN_ATTEMPT)
        self._finish_attempt = client.register_script(_FINISH_ATTEMPT)

    @classmethod
    def from_url(
        cls, url: str, sealer: SessionSealer, *, max_connections: int = 256, clock: Clock = SYSTEM_CLOCK
    ) -> RedisChallengeStore:
        """A store for `redis://host:port/db` (or rediss://, unix://), with short socket timeouts."""
        return cls(redis_client(url, max_connections), sealer, clock=clock)

    def _key(self, key: ChallengeKey) -> str:
        return self._prefix + key.storage_key()

    def _ttl_ms(self, challenge: Challenge) -> int:
        return max(1, int((challenge.forget_at - self._clock.now()) * 1000))

    @store_errors
    async def begin_send(self, request: SendRequest) -> SendReservation:
        """Decide, count and hold the key in one script."""
        placeholder = request.placeholder
        alias = self._prefix + request.alias_subject if request.alias_subject else ""
        verdict, value = await self._begin_send(
            keys=[
                self._key(request.key),
                self._prefix + request.sends_subject,
                self._prefix + request.lockout_subject,
                alias,
                alias + _HOLD if alias else "",
                alias + _UNRESOLVED if alias else "",
                *(self._prefix + budget.subject for budget in request.budgets),
            ],
            args=[
                _encode(placeholder, self._sealer, request.key.storage_key()),
                request.now,
                placeholder.step_execution_id,
                request.cooldown_seconds,
                max(1, int((placeholder.forget_at - request.now) * 1000)),
                request.send_limit,
                request.send_window_seconds,
                request.lockout_threshold,
                request.reservation_seconds,
                self._prefix + USER_SENDS,
                self._prefix + USER_FAILURES,
                request.max_unresolved_sends,
                *(value for budget in request.budgets for value in (budget.limit, budget.window_seconds)),
            ],
        )
        name = text(verdict)
        if name == "replay":
            return SendReservation(
                SendVerdict.REPLAY, _decode(value, self._sealer, request.key.storage_key())
            )
        if name in ("too_soon", "over_budget", "budget_tripped"):
            return SendReservation(SendVerdict(name), wait_seconds=float(text(value)))
        return SendReservation(SendVerdict(name))

    @store_errors
    async def finish_send(
        self, request: SendRequest, result: SendResult, challenge: Challenge | None
    ) -> None:
        """Settle the reservation, and learn the identifier's user, in one script."""
        alias = self._prefix + request.alias_subject if request.alias_subject else ""
        context = request.key.storage_key()
        await self._finish_send(
            keys=[
                self._key(request.key),
                alias,
                alias + _HOLD if alias else "",
                alias + _UNRESOLVED if alias else "",
                *(self._prefix + subject for subject in request.counted),
            ],
            args=[
                request.nonce,
                result.value,
                _encode(challenge, self._sealer, context) if challenge is not None else "",
                self._ttl_ms(challenge) if challenge is not None else 1,
                challenge.user if challenge is not None else "",
                request.send_window_seconds,
                max(request.alias_seconds, 1),
                self._prefix + USER_SENDS,
            ],
        )

    @store_errors
    async def begin_attempt(self, request: AttemptRequest) -> AttemptGrant:
        """Check the lockouts, spend one attempt and count one wrong code in one script."""
        verdict, raw = await self._begin_attempt(
            keys=[self._key(request.key), self._prefix + request.lockout_subject],
            args=[
                request.now,
                request.lockout_threshold,
                request.lockout_window_seconds,
                self._prefix + USER_FAILURES,
            ],
        )
        name = text(verdict)
        if name == "granted":
            return AttemptGrant(AttemptVerdict.GRANTED, _decode(raw, self._sealer, request.key.storage_key()))
        return AttemptGrant(AttemptVerdict(name))

    @store_errors
    async def finish_attempt(
        self, key: ChallengeKey, nonce: str, judgement: Judgement, lockout_subjects: Sequence[str]
    ) -> None:
        """Settle the attempt in one script."""
        await self._finish_attempt(
            keys=[self._key(key), *(self._prefix + subject for subject in lockout_subjects)],
            args=[nonce, judgement.value],
        )

    @store_errors
    async def load(self, key: ChallengeKey) -> Challenge | None:
        """The live, usable challenge, if any."""
        raw = await self._redis.get(self._key(key))
        if raw is None:
            return None
        challenge = _decode(raw, self._sealer, key.storage_key())
        return challenge if challenge.usable and challenge.expires_at > self._clock.now() else None

    @store_errors
    async def events(self, subject: str) -> int:
        """The counter's value (0 when absent or expired)."""
        raw = await self._redis.get(self._prefix + subject)
        return int(raw) if raw is not None else 0

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()
