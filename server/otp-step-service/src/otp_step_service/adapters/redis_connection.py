"""Clients for every Redis topology the store URL can name, and one way to run a script on them.

One Redis, a Sentinel-managed primary and a Redis Cluster all end here as a `RedisClient`; the store and the
step rate do not care which. Every client has short socket timeouts (a Redis that hangs fails a step quickly,
as a retryable store failure, instead of holding it to the caller's deadline) and one quick retry of a read
whose connection dropped (a failover closes every connection to the old primary).

`run_script(client, script, keys, args, replicas)` runs a Lua script exactly once and, with `replicas > 0`, a
`WAIT` on the same connection in the same round trip: WAIT counts the replicas that have this connection's
writes, so it must follow the script on the connection that ran it (redis-py's pooled calls may not), and it
cannot run inside the script itself. Never through redis-py's retry: a connection that drops (or times out)
after the script was sent may have run it, and a counter script run twice counts, or gives back, twice (a
wrong code counted twice, or an attempt given back twice: a free one). Such a call fails, retryably; a pooled
connection the server had already closed is replaced before the script is sent (the pool checks it), so a
failover does not cost the step that follows it.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.credentials import CredentialProvider
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ConnectionError,
    MovedError,
    NoPermissionError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    TimeoutError,
)

from otp_step_service.steps.errors import OtpStepError

log = logging.getLogger(__name__)

RedisClient = redis.Redis | RedisCluster

SOCKET_SECONDS = 2.0
# Milliseconds a WAIT may block for the replicas: past it the write is treated as not durable (the step fails
# retryably). A healthy replica acknowledges within a millisecond or two on one network.
WAIT_MILLISECONDS = 500


class RedisAddress(Protocol):
    """Where the store is, as `config.store_url.StoreAddress` says it (kind: redis, sentinel or cluster)."""

    @property
    def kind(self) -> str: ...
    @property
    def tls(self) -> bool: ...
    @property
    def url(self) -> str: ...
    @property
    def nodes(self) -> tuple[tuple[str, int], ...]: ...
    @property
    def master(self) -> str: ...
    @property
    def db(self) -> int: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def sentinel_username(self) -> str | None: ...
    @property
    def sentinel_password(self) -> str | None: ...


@dataclass(frozen=True)
class StoreSecrets:
    """The files beside the store URL: the password (re-read on change) and the TLS material for rediss."""

    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class PasswordFile(CredentialProvider):
    """The store password from a file, read again whenever the file changes (a rotated secret is used from
    the next connection on, without a restart; connections already authenticated stay so, as Redis keeps
    them). The user name is the URL's, if any."""

    def __init__(self, path: Path, username: str | None) -> None:
        self._path = path
        self._username = username
        self._seen: tuple[float, int] | None = None
        self._password = ""
        self._read()

    def _read(self) -> None:
        stat = os.stat(self._path)
        seen = (stat.st_mtime, stat.st_size)
        if seen != self._seen:
            self._password = self._path.read_text().strip()
            self._seen = seen

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        """(user, password), or (password,) for the default user."""
        try:
            self._read()
        except OSError as exc:  # a rotation in progress: keep the last password, say so without it
            log.warning("challenge store password file %s unreadable (%s)", self._path, type(exc).__name__)
        return (self._username, self._password) if self._username else (self._password,)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        """As get_credentials (a small local read)."""
        return self.get_credentials()

    def __repr__(self) -> str:
        return f"PasswordFile({str(self._path)!r})"


# The first line of every store script (Redis 7's shebang, no flags: "this script may write"). A replica refuses
# such a script (READONLY) even when the run at hand would only read; one without it runs on a replica until
# its first write, and a script with nothing to write (a challenge not yet replicated to a demoted primary)
# answers from stale data — "no such challenge" where the step must fail retryably. redis-py keeps a
# connection to a primary the sentinels demoted until a command fails on it (it does not follow
# +switch-master, redis/redis-py#3867); on READONLY it drops the connection, and the next asks the sentinels.
_PRIMARY_ONLY = "#!lua\n"


def primary_script(client: RedisClient, body: str) -> AsyncScript:
    """`body` as a script that only a primary runs (see _PRIMARY_ONLY); run it with run_script."""
    return client.register_script(_PRIMARY_ONLY + body)


def lost_under_redis_py(error: BaseException) -> bool:
    """Whether `error` (an AttributeError or TypeError) was raised inside redis-py or the asyncio transport
    under it: a connection closed under a command (by the peer, or by the cluster client refreshing its map)
    can escape as one of those instead of a ConnectionError (redis/redis-py#4287), and is a store failure like
    any other. Raised in this service's own code, it is a bug and stays one."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    if frame is None:
        return False
    where = Path(frame.tb_frame.f_code.co_filename).parts
    return "redis" in where or "asyncio" in where


def failure_reason(error: BaseException) -> str:
    """Why a Redis call failed, safe to log: the error's type and, for the failures only an operator can mend
    (TLS, credentials, permissions), what to check. Built from fixed words and the TLS library's own reason
    codes, never from the server's message (which may quote a key or a value)."""
    if isinstance(error, ScriptNotSentError) and error.__cause__ is not None:
        return failure_reason(error.__cause__)  # what failed, not where
    name = type(error).__name__
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"{name}: TLS certificate verify failed ({getattr(cause, 'verify_message', '')}): check "
                "OTP_STEP_CHALLENGE_STORE_CA_FILE and the names in the server's certificate"
            )
        if isinstance(cause, ssl.SSLError):
            return (
                f"{name}: TLS handshake failed ({getattr(cause, 'reason', '')}): a Redis that requires client certificates needs "
                "OTP_STEP_CHALLENGE_STORE_CERT_FILE and OTP_STEP_CHALLENGE_STORE_KEY_FILE"
            )
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, AuthenticationError):
        return (
            f"{name}: the user or password was refused: check the store URL's user and "
            "OTP_STEP_CHALLENGE_STORE_PASSWORD_FILE"
        )
    if isinstance(error, NoPermissionError):
        return f"{name}: the user may not run a command or touch a key the service needs (deploy/redis/otp-steps.acl)"
    return name


class _SentinelPrimaryConnection(SentinelManagedConnection):
    """A connection to the primary the sentinels name, which asks them again whenever it (re)connects.

    Works around redis/redis-py#3874: redis-py reconnects a dropped connection on its own (a retried read, a
    command sent on a connection that was closed) to the address it last had, after a failover the old
    primary, and asks the sentinels only when its pool hands a connection out."""

    async def connect_to(self, address: tuple[str, int]) -> None:
        self.host, self.port = address
        # The base's connect, not ours: the address was just asked for.
        await super().connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False
        )

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self.is_connected:
            return
        self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(
            check_health=check_health, retry_socket_connect=retry_socket_connect
        )


class _SentinelPrimarySSLConnection(_SentinelPrimaryConnection, SSLConnection):
    """The same over TLS (as redis-py's SentinelManagedSSLConnection pairs its own)."""


def redis_client(address: RedisAddress, secrets: StoreSecrets, max_connections: int) -> RedisClient:
    """A client for the store `address` names (not `memory`)."""
    common: dict[str, Any] = {
        "socket_timeout": SOCKET_SECONDS,
        "socket_connect_timeout": SOCKET_SECONDS,
        # Reads only (scripts go through run_script, never retried). Not on TimeoutError: redis-py's Retry
        # retries it unless told otherwise (its default supported errors), doubling the wait on a Redis that
        # hangs; the step fails retryably after one socket timeout instead, and its caller retries.
        "retry": Retry(
            ExponentialWithJitterBackoff(base=0.05, cap=0.5), 1, supported_errors=(ConnectionError,)
        ),
    }
    auth: dict[str, Any] = {}
    url = address.url
    if secrets.password_file is not None:
        username = address.username
        if address.kind == "redis" and "@" in urlsplit(url).netloc:
            # redis-py takes a user from the URL or from a credential provider, not both: move it over.
            parts = urlsplit(url)
            username = unquote(parts.username or "") or None
            url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        auth["credential_provider"] = PasswordFile(secrets.password_file, username)
    elif address.kind != "redis":
        auth.update(username=address.username, password=address.password)
    tls: dict[str, Any] = {}
    if address.tls:
        tls = {
            "ssl_ca_certs": str(secrets.ca_file) if secrets.ca_file else None,
            "ssl_certfile": str(secrets.cert_file) if secrets.cert_file else None,
            "ssl_keyfile": str(secrets.key_file) if secrets.key_file else None,
        }
    if address.kind == "redis":
        if address.tls:
            common.update({k: v for k, v in tls.items() if v is not None})
        return redis.Redis.from_url(
            url, health_check_interval=30, max_connections=max_connections, **common, **auth
        )
    if address.kind == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in address.nodes],
            max_connections=max_connections,
            ssl=address.tls,
            **({k: v for k, v in tls.items() if v is not None}),
            **common,
            **auth,
        )
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": SOCKET_SECONDS,
        "socket_connect_timeout": SOCKET_SECONDS,
        "username": address.sentinel_username,
        "password": address.sentinel_password,
    }
    if address.tls:
        # redis-py gives the sentinels only the socket options unless told (its sentinel_kwargs default).
        sentinel_kwargs.update(ssl=True, **{k: v for k, v in tls.items() if v is not None})
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        list(address.nodes),
        sentinel_kwargs=sentinel_kwargs,
        ssl=address.tls,
        **({k: v for k, v in tls.items() if v is not None}),
        **common,
        **auth,
    )
    # A SentinelConnectionPool asks the sentinels for the primary on every connection it hands out, and drops
    # a connection answered READONLY (the old primary, now a replica). Its gaps, and what covers them:
    # reconnecting without asking again (redis/redis-py#3874): _SentinelPrimaryConnection; no +switch-master
    # subscription (#3867), so a connection stays on a demoted primary until a command fails there: the
    # scripts are refused by a replica (_PRIMARY_ONLY), the step fails retryably, the next connection asks.
    primary: redis.Redis = sentinels.master_for(
        address.master,
        db=address.db,
        max_connections=max_connections,
        health_check_interval=30,
        connection_class=_SentinelPrimarySSLConnection if address.tls else _SentinelPrimaryConnection,
    )
    return primary


async def replicas_of_primary(client: RedisClient, key: str) -> int:
    """How many replicas the primary serving `key` has connected now."""
    if isinstance(client, RedisCluster):
        await client.initialize()  # the slot map, once (a no-op after the first call)
        node = client.get_node_from_key(key)
        info = await client.info("replication", target_nodes=node)
    else:
        info = await client.info("replication")
    return int(info.get("connected_slaves", 0))


async def _still_the_primary(client: RedisClient, connection: AbstractConnection) -> bool:
    """Behind Sentinel, when a WAIT fell short: whether the server `connection` wrote to is still the primary
    — every sentinel that answers names it, none is failing it over, and one at least answers.

    A replica being promoted leaves the old primary accepting writes with no replica, for seconds (until the
    sentinels convert it): a WAIT there falls short exactly as when a replica died, and what it accepted is
    thrown away when it becomes a replica. Only the sentinels tell the two apart (the one leading a failover
    flags it at once; all of them name the new primary a moment later)."""
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, SentinelConnectionPool):
        return True
    address = (connection.host, int(connection.port))  # type: ignore[attr-defined]
    answered = False
    for sentinel in pool.sentinel_manager.sentinels:
        try:
            state = await sentinel.sentinel_master(pool.service_name)
        except (RedisError, OSError):
            continue  # one sentinel down says nothing either way
        answered = True
        if (state["ip"], int(state["port"])) != address or "failover_in_progress" in state["flags"]:
            return False
    return answered


async def _ready(connection: AbstractConnection) -> None:
    """What redis-py's ConnectionPool does for a pooled client before handing a connection out (a cluster
    node's free list does not): a connection the server closed, or with stray data on it, is replaced before
    a script is sent on it, so it cannot cost a step."""
    await connection.connect()  # type: ignore[no-untyped-call]
    try:
        stale = await connection.can_read()
    except (ConnectionError, TimeoutError, OSError):
        stale = True
    if stale:
        await connection.disconnect()
        await connection.connect()  # type: ignore[no-untyped-call]


class ScriptNotSentError(ConnectionError, OtpStepError):
    """No connection could be had for a script (`__cause__`: why): it was not sent, so it certainly did not
    run. Any other failure of run_script may come after the script ran on the server (its reply lost)."""


async def run_script(
    client: RedisClient, script: AsyncScript, keys: Sequence[str], args: Sequence[Any], replicas: int = 0
) -> tuple[Any, int]:
    """The script's reply and, with `replicas` > 0, how many replicas acknowledged its writes within
    WAIT_MILLISECONDS (0 asked: the reply and 0). Sent once (see the module's docstring). NOSCRIPT (a restarted
    or newly promoted primary has an empty script cache) loads the script and runs it again; MOVED/ASK (a slot
    moved in a cluster failover) refreshes the cluster's map and fails retryably. A failure before the script
    was sent raises ScriptNotSentError."""
    node: ClusterNode | None = None
    try:
        if isinstance(client, RedisCluster):
            await client.initialize()
            node = client.get_node_from_key(keys[0])
            assert node is not None, "a cluster serves every slot"
            connection: AbstractConnection = node.acquire_connection()
        else:
            # The pool connects (and releases on failure) before it hands the connection out.
            connection = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
    except (ConnectionError, TimeoutError, RedisClusterException, OSError) as exc:
        raise ScriptNotSentError(type(exc).__name__) from exc
    commands: list[tuple[Any, ...]] = [("EVALSHA", script.sha, len(keys), *keys, *args)]
    if replicas > 0:
        commands.append(("WAIT", replicas, WAIT_MILLISECONDS))
    healthy = sent = False
    try:
        if node is not None:
            # Inside the try: a node that refuses (down, restarting) must get its connection back, or every
            # step sent to it while it is down holds one until the node has none left to give (MaxConnectionsError
            # for good, though the node is back), and the map must be refreshed as for any other failure.
            await _ready(connection)
        for _ in range(2):
            sent = True
            await connection.send_packed_command(connection.pack_commands(commands))
            try:
                reply = await connection.read_response()
            except NoScriptError:
                if replicas > 0:
                    # WAIT's answer is still to come, after WAIT_MILLISECONDS when the (new) primary has no
                    # replica yet: a fresh connection is quicker than waiting for it.
                    await connection.disconnect()
                await connection.send_command("SCRIPT", "LOAD", script.script)
                await connection.read_response()
                continue
            acknowledged = int(await connection.read_response()) if replicas > 0 else 0
            if acknowledged < replicas and not await _still_the_primary(client, connection):
                raise ConnectionError("the sentinels are failing this primary over: its writes may be lost")
            healthy = True
            return reply, acknowledged
        raise NoScriptError("the script could not be loaded")
    except (MovedError, AskError, ConnectionError, TimeoutError) as exc:
        # A slot moved or its primary is gone (a cluster failover): this path bypasses the cluster client's
        # own handling, so refresh its slot map here; the step fails retryably and the next finds the new one.
        if node is not None and isinstance(client, RedisCluster):
            try:
                # The failed node asked last: the others know sooner whether it is gone or replaced.
                await client.nodes_manager.initialize(last_failed_node_name=node.name)
            except (RedisError, RedisClusterException, OSError) as refresh:
                log.debug("cluster map not refreshed yet (%s)", type(refresh).__name__)
        if not sent:
            raise ScriptNotSentError(type(exc).__name__) from exc
        raise
    finally:
        if not healthy:
            await connection.disconnect()
        if node is not None:
            node.release(connection)  # type: ignore[arg-type]
        else:
            await client.connection_pool.release(connection)  # type: ignore[union-attr]
