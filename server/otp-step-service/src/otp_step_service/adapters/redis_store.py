"""The shared challenge store on Redis (redis.asyncio): several service instances behind one load balancer.

Validate may land on another instance than Generate did, so challenges and counters live in Redis. Each of a
step's two bookkeeping operations is one Lua script (atomic on the server, one round trip), so two instances
can never spend the same attempt or the same send twice; keys carry a TTL, so expired challenges and counter
windows leave Redis by themselves. Sessions and usernames are sealed (`sealing.SessionSealer`): nothing
secret is in Redis in clear.

Keys (docs/fleet.md, "Key layout"): everything of one connection — its challenges, its identifiers' and
users' counters, its tenants', number ranges' and IPs' counters, its send budgets — carries the connection's
hash tag `{c:<16 hex>}`, so in a Redis Cluster it is in one slot and every script runs on one primary; a
caller's send budgets, which span connections, carry the caller's tag and are taken by a script of their own.
Scripts read only the keys they are passed: a key whose name depends on a stored value (the user an
identifier reached) is read first and passed in, and the script checks it is still the one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from otp_step_service.adapters.redis_attempts import BEGIN_ATTEMPT, FINISH_ATTEMPT, RELEASE_ATTEMPT
from otp_step_service.adapters.redis_connection import (
    RedisClient,
    ScriptNotSentError,
    failure_reason,
    lost_under_redis_py,
    primary_script,
    replicas_of_primary,
    run_script,
)
from otp_step_service.adapters.redis_encoding import decode_challenge, encode_challenge, text
from otp_step_service.adapters.redis_sends import BEGIN_SEND, FINISH_SEND, GIVE_BACK, TAKE_BUDGETS
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
    SendBudget,
    SendRequest,
    SendReservation,
    SendResult,
    SendVerdict,
    caller_scope,
)
from otp_step_service.steps.clock import SYSTEM_CLOCK, Clock
from otp_step_service.steps.errors import ChallengeStoreError

P = ParamSpec("P")

# Beside an identifier's alias entry: the one send in flight while the identifier's user is unknown.
_HOLD = ":hold"
# Beside it: codes that may have gone out while the user was unknown (MAX_UNRESOLVED_SENDS).
_UNRESOLVED = ":unresolved"
R = TypeVar("R")

# How long an unset OTP_STEP_STORE_MIN_REPLICAS trusts what it last saw of a primary's replicas.
REPLICAS_RECHECK_SECONDS = 10.0
# How long a step refused as not run spends giving back what its script may have taken (a reservation, an
# attempt) though its reply was lost: a fresh connection's round trip, with room for a loaded machine; a store
# that stays silent keeps the step no longer (the reservation then holds until its lease ends, the attempt
# stays spent, once).
RELEASE_SECONDS = 0.5


class ReplicasShortError(ChallengeStoreError):
    """A script ran on the primary, but fewer replicas than asked for hold its writes (`reply`: its answer)."""

    def __init__(self, reply: Any, message: str) -> None:
        super().__init__(message)
        self.reply = reply


def store_errors(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Redis failures leave as ChallengeStoreError: a retryable step failure, not a crashed RPC."""

    @functools.wraps(method)
    async def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        # RedisClusterException (no reachable node, a slot not covered during a failover) is not a RedisError.
        except (RedisError, RedisClusterException, OSError) as exc:
            raise ChallengeStoreError(failure_reason(exc)) from exc
        except (AttributeError, TypeError) as exc:
            if not lost_under_redis_py(exc):
                raise
            raise ChallengeStoreError(f"{type(exc).__name__}: a connection closed under redis-py") from exc

    return translated


def _may_have_run(error: BaseException) -> bool:
    """Whether a script whose call raised `error` may have run on the server all the same (its reply lost to a
    dropped connection or a timeout), rather than certainly not (no connection, or the server refused it)."""
    if isinstance(error, (AttributeError, TypeError)):
        return lost_under_redis_py(error)
    lost = isinstance(error, (RedisConnectionError, RedisTimeoutError))
    return lost and not isinstance(error, ScriptNotSentError)


def connection_tag(connection: str) -> str:
    """The hash tag of one connection's keys: a Redis Cluster keeps them in one slot, so each script's keys
    are on one primary. 16 hex digits of a digest: the connection's name is not spelled out."""
    return "{c:" + hashlib.sha256(connection.encode()).hexdigest()[:16] + "}"


class RedisChallengeStore:
    """ChallengeStore on Redis (one, Sentinel-managed or a Cluster); see the module docstring for the keys.

    `min_replicas`: replicas that must hold a security counter (sends, wrong codes) before the step goes on
    (None: 1 when the primary has replicas, checked at the first write; 0: no WAIT)."""

    def __init__(
        self,
        client: RedisClient,
        sealer: SessionSealer,
        prefix: str = "otp-steps:",
        clock: Clock = SYSTEM_CLOCK,
        min_replicas: int | None = 0,
    ) -> None:
        self._redis = client
        self._sealer = sealer
        self._prefix = prefix
        self._clock = clock
        self._min_replicas = min_replicas
        self._auto_replicas: dict[str, tuple[int, float]] = {}
        self._begin_send = primary_script(client, BEGIN_SEND)
        self._take_budgets = primary_script(client, TAKE_BUDGETS)
        self._give_back = primary_script(client, GIVE_BACK)
        self._finish_send = primary_script(client, FINISH_SEND)
        self._begin_attempt = primary_script(client, BEGIN_ATTEMPT)
        self._finish_attempt = primary_script(client, FINISH_ATTEMPT)
        self._release = primary_script(client, RELEASE_ATTEMPT)
        # The user each open reservation counted its send for (finish_send runs where begin_send ran); a
        # stale or missing entry costs one more round trip, never a wrong count (the script checks it).
        self._reserved_for: OrderedDict[str, str] = OrderedDict()

    # Key layout: <prefix>{c:<connection digest>}<subject> for everything of one connection,
    # <prefix>{<caller scope>}<subject> for a caller's budgets across connections.
    def _key(self, key: ChallengeKey) -> str:
        return self._prefix + connection_tag(key.connection) + key.storage_key()

    def _counter(self, connection: str, subject: str) -> str:
        scope = caller_scope(subject)
        if scope:
            return self._prefix + "{" + scope + "}" + subject
        return self._prefix + connection_tag(connection) + subject

    def _unused(self, connection: str) -> str:
        """A key name in the connection's slot that no script touches (a placeholder for an absent key)."""
        return self._prefix + connection_tag(connection) + "-"

    def _ttl_ms(self, challenge: Challenge) -> int:
        return max(1, int((challenge.forget_at - self._clock.now()) * 1000))

    async def _replicas(self, key: str, *, fresh: bool = False) -> int:
        """Replicas to WAIT for: the setting, or (unset) 1 while the key's primary has a replica, which is
        looked up again every REPLICAS_RECHECK_SECONDS (a failover leaves the new primary without one until
        the old one returns as its replica) and at once after a WAIT fell short."""
        if self._min_replicas is not None:
            return self._min_replicas
        slot = key[key.index("{") : key.index("}") + 1] if isinstance(self._redis, RedisCluster) else ""
        known = self._auto_replicas.get(slot)
        now = time.monotonic()
        if fresh or known is None or now - known[1] > REPLICAS_RECHECK_SECONDS:
            known = (1 if await replicas_of_primary(self._redis, key) > 0 else 0, now)
            if len(self._auto_replicas) > 4096:
                self._auto_replicas.clear()
            self._auto_replicas[slot] = known
        return known[0]

    async def _counted(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run a script that adds to a security counter; with replicas, only once one holds it."""
        wanted = await self._replicas(keys[0])
        reply, acknowledged = await run_script(self._redis, script, keys, args, wanted)
        if acknowledged < wanted and (
            self._min_replicas is not None or await self._replicas(keys[0], fresh=True)
        ):
            # The counter is on the primary alone while a replica could take over and forget it: Cognito is
            # not asked. (Unset, and the primary has no replica left at all: nothing can forget it by a
            # failover, and the step goes on.)
            raise ReplicasShortError(reply, f"WAIT: {acknowledged} of {wanted} replicas")
        return reply

    @store_errors
    async def begin_send(self, request: SendRequest) -> SendReservation:
        """Decide, count and hold the key in one script in the connection's slot; then the caller's budgets."""
        connection = request.key.connection
        unused = self._unused(connection)
        alias = self._counter(connection, request.alias_subject) if request.alias_subject else unused
        inside = [b for b in request.budgets if not caller_scope(b.subject)]
        across = [b for b in request.budgets if caller_scope(b.subject)]
        user = text(await self._redis.get(alias) or b"") if request.alias_subject else ""
        placeholder = request.placeholder
        for _ in range(3):
            keys = [
                self._key(request.key),
                self._counter(connection, request.sends_subject),
                self._counter(connection, request.lockout_subject),
                alias,
                alias + _HOLD if request.alias_subject else unused,
                alias + _UNRESOLVED if request.alias_subject else unused,
                self._counter(connection, USER_SENDS + user) if user else unused,
                self._counter(connection, USER_FAILURES + user) if user else unused,
                *(self._counter(connection, budget.subject) for budget in inside),
            ]
            args = [
                encode_challenge(placeholder, self._sealer, request.key.storage_key()),
                request.now,
                placeholder.step_execution_id,
                request.cooldown_seconds,
                max(1, int((placeholder.forget_at - request.now) * 1000)),
                request.send_limit,
                request.send_window_seconds,
                request.lockout_threshold,
                request.reservation_seconds,
                user,
                request.max_unresolved_sends,
                "1" if request.alias_subject else "0",
                *(value for budget in inside for value in (budget.limit, budget.window_seconds)),
            ]
            try:
                verdict, value = await self._counted(self._begin_send, keys, args)
            except ReplicasShortError as short:
                if text(short.reply[0]) == "reserved":
                    await self._undo(request, user)  # nothing goes out on counts a failover could forget
                raise
            except (RedisError, AttributeError, TypeError) as exc:
                if _may_have_run(exc):
                    # The script may have reserved, its reply lost: the step is refused as not run, so the
                    # reservation must not outlive it (a retry of its execution would wait for it, a ghost,
                    # until its lease ends). Released if it is there; a moment only, the store is failing.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._undo(request, user), RELEASE_SECONDS)
                raise
            if text(verdict) != "stale":
                break
            user = text(value)
        else:
            raise ChallengeStoreError("the identifier's user kept changing")
        name = text(verdict)
        took_over = name == "reserved" and value is not None
        if name == "reserved" and across:
            name, value = await self._take_across(request, across, user)
        if name == "reserved":
            self._remember(request.nonce, user)
            return SendReservation(SendVerdict.RESERVED, took_over=took_over)
        if name == "replay":
            return SendReservation(
                SendVerdict.REPLAY, decode_challenge(value, self._sealer, request.key.storage_key())
            )
        if name in ("too_soon", "over_budget", "budget_tripped", "in_flight"):
            return SendReservation(SendVerdict(name), wait_seconds=float(text(value)))
        return SendReservation(SendVerdict(name))

    async def _take_across(
        self, request: SendRequest, budgets: list[SendBudget], user: str
    ) -> tuple[str, Any]:
        """Take the caller's budgets; spent ones undo the reservation the connection's script made."""
        keys = [self._counter("", budget.subject) for budget in budgets]
        try:
            verdict, value = await self._counted(
                self._take_budgets,
                keys,
                [v for budget in budgets for v in (budget.limit, budget.window_seconds)],
            )
        except BaseException as exc:
            if isinstance(exc, ReplicasShortError) and text(exc.reply[0]) == "reserved":
                # Taken, but on the primary alone: nothing is sent, so they are given back with the rest.
                with contextlib.suppress(RedisError, RedisClusterException, OSError):
                    await run_script(self._redis, self._give_back, keys, [])
            await self._undo(request, user)
            raise
        if text(verdict) == "budget_tripped":
            await self._undo(request, user)
        return text(verdict), value

    async def _undo(self, request: SendRequest, user: str) -> None:
        try:
            self._remember(request.nonce, user)
            await self._settle(request, SendResult.NOT_SENT, None, caller_budgets=False)
        except (RedisError, RedisClusterException, OSError, ChallengeStoreError):
            pass  # the reservation is then abandoned: it holds the cooldown, and its counts, until its lease ends

    def _remember(self, nonce: str, user: str) -> None:
        self._reserved_for[nonce] = user
        while len(self._reserved_for) > 10_000:
            self._reserved_for.popitem(last=False)

    @store_errors
    async def finish_send(
        self, request: SendRequest, result: SendResult, challenge: Challenge | None
    ) -> None:
        """Settle the reservation, and learn the identifier's user, in one script (and give the caller's
        budgets back when nothing was sent)."""
        await self._settle(request, result, challenge, caller_budgets=True)

    async def _settle(
        self, request: SendRequest, result: SendResult, challenge: Challenge | None, *, caller_budgets: bool
    ) -> None:
        connection = request.key.connection
        unused = self._unused(connection)
        alias = self._counter(connection, request.alias_subject) if request.alias_subject else unused
        context = request.key.storage_key()
        settled_user = challenge.user if challenge is not None else ""
        counted_user = self._reserved_for.pop(request.nonce, "")
        counted = [s for s in request.counted if not caller_scope(s)]
        for _ in range(3):
            keys = [
                self._key(request.key),
                alias,
                alias + _HOLD if request.alias_subject else unused,
                alias + _UNRESOLVED if request.alias_subject else unused,
                self._counter(connection, USER_SENDS + settled_user) if settled_user else unused,
                self._counter(connection, USER_SENDS + counted_user) if counted_user else unused,
                *(self._counter(connection, subject) for subject in counted),
            ]
            args = [
                request.nonce,
                result.value,
                encode_challenge(challenge, self._sealer, context) if challenge is not None else "",
                self._ttl_ms(challenge) if challenge is not None else 1,
                settled_user,
                request.send_window_seconds,
                max(request.alias_seconds, 1),
                counted_user,
                "1" if request.alias_subject else "0",
                "1" if challenge is not None and challenge.decoy else "0",
            ]
            if result is SendResult.NOT_SENT:
                verdict, value = (await run_script(self._redis, self._finish_send, keys, args))[0]
            else:
                verdict, value = await self._counted(self._finish_send, keys, args)
            if text(verdict) != "stale":
                break
            counted_user = text(value)
        else:
            raise ChallengeStoreError("the reservation's user kept changing")
        across = [s for s in request.counted if caller_scope(s)]
        released = text(value) == "1"  # a NOT_SENT that gave this reservation's counts back
        if released and caller_budgets and across:
            await run_script(self._redis, self._give_back, [self._counter("", s) for s in across], [])

    @store_errors
    async def begin_attempt(self, request: AttemptRequest) -> AttemptGrant:
        """Check the lockouts, spend one attempt and count one wrong code in one script. An attempt spent for
        nothing to judge (the replicas do not hold it, its reply was lost, its challenge does not open) is
        given back, with its counts, by this request's nonce (redis_attempts.RELEASE_ATTEMPT): exactly what
        it spent, once, and nothing if the script never ran."""
        connection = request.key.connection
        nonce = secrets.token_hex(8)
        user = ""
        for _ in range(3):
            keys = [
                self._key(request.key),
                self._counter(connection, request.lockout_subject),
                self._counter(connection, USER_FAILURES + user) if user else self._unused(connection),
            ]
            hide = "1" if request.hide_user_lockout else "0"
            args = [request.now, request.lockout_threshold, request.lockout_window_seconds, user, hide, nonce]
            try:
                verdict, raw = await self._counted(self._begin_attempt, keys, args)
            except ReplicasShortError:
                await self._release_attempt(
                    keys, nonce
                )  # no code is judged on counts a failover could forget
                raise
            except (RedisError, AttributeError, TypeError) as exc:
                if _may_have_run(exc):
                    await self._release_attempt(keys, nonce)  # the step is refused as not run
                raise
            if text(verdict) != "stale":
                break
            user = text(raw)  # the challenge names its user: once more, with that user's counter
        else:
            raise ChallengeStoreError("the challenge's user kept changing")
        name = text(verdict)
        if name not in ("granted", "user_locked"):
            return AttemptGrant(AttemptVerdict(name))
        try:
            challenge = decode_challenge(raw, self._sealer, request.key.storage_key())
        except ChallengeStoreError:
            await self._release_attempt(keys, nonce)  # sealed with a key the keys file lost: nothing to judge
            raise
        return AttemptGrant(AttemptVerdict(name), challenge)

    async def _release_attempt(self, keys: list[str], nonce: str) -> None:
        """Give back what the request `nonce` spent, if it spent anything; a moment only (the store may be
        failing: the attempt then stays spent, once)."""
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            await asyncio.wait_for(run_script(self._redis, self._release, keys, [nonce]), RELEASE_SECONDS)

    @store_errors
    async def finish_attempt(
        self, key: ChallengeKey, nonce: str, judgement: Judgement, lockout_subjects: Sequence[str]
    ) -> None:
        """Settle the attempt in one script (it only gives counts back: no WAIT)."""
        await run_script(
            self._redis,
            self._finish_attempt,
            [self._key(key), *(self._counter(key.connection, subject) for subject in lockout_subjects)],
            [nonce, judgement.value],
        )

    @store_errors
    async def load(self, key: ChallengeKey) -> Challenge | None:
        """The live, usable challenge, if any."""
        raw = await self._redis.get(self._key(key))
        if raw is None:
            return None
        challenge = decode_challenge(raw, self._sealer, key.storage_key())
        return challenge if challenge.usable and challenge.expires_at > self._clock.now() else None

    @store_errors
    async def events(self, connection: str, subject: str) -> int:
        """The counter's value (0 when absent or expired)."""
        raw = await self._redis.get(self._counter(connection, subject))
        return int(raw) if raw is not None else 0

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()
