"""Reloading the connections file and the client secrets without a restart (SIGHUP, or a change seen by
`ConfigurationWatch`).

A reload reads and validates everything first and changes nothing unless all of it is valid: an invalid file
or an unreadable secret is rejected with one log line naming the problem, and the running configuration is
kept. A valid one replaces the runner's connections in one assignment on the event loop, so a step sees
either the old set or the new one, never a mix; a step already running keeps the Connection it looked up
(old pool, old secret) until it ends. Unchanged connections keep their objects (and their warm HTTP clients);
changed and removed ones are closed once no step uses them any more.

The `[callers.*]` tables are applied with the connections, in the same step: a caller removed (a revoked
credential) or narrowed is refused from its next call on; a call already admitted finishes. The file is read
and parsed in a worker thread (the event loop keeps serving health checks and steps while a large file is
parsed), and a file above `MAX_FILE_BYTES` is refused unread.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol

from otp_step_service.app.connection_checks import report_self_test, self_test_all
from otp_step_service.app.connections import connection_from_config
from otp_step_service.app.execution import StepRunner
from otp_step_service.config.callers import Callers
from otp_step_service.config.connections import (
    Configuration,
    Source,
    load_configuration,
)
from otp_step_service.observability.metrics import Metrics
from otp_step_service.steps.errors import ConfigurationError
from otp_step_service.steps.ports import Connection

log = logging.getLogger(__name__)


class CallersHolder(Protocol):
    """What holds the callers a reload replaces (the port's authentication)."""

    @property
    def callers(self) -> Callers: ...

    def replace_callers(self, callers: Callers) -> None: ...


def caller_changes(old: Callers, new: Callers) -> str:
    """What a reload changes in the callers, for its log line ("none" when nothing)."""
    before, after = old.names(), new.names()
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(
        n
        for n in set(before) & set(after)
        if before[n] != after[n] or _identities(old, n) != _identities(new, n)
    )
    parts = [
        f"{label}: {', '.join(names)}"
        for label, names in (("added", added), ("removed", removed), ("changed", changed))
        if names
    ]
    return "; ".join(parts) or "none"


def _identities(callers: Callers, name: str) -> frozenset[str]:
    return frozenset(
        [f"cert:{i}" for i, c in callers.by_certificate.items() if c.name == name]
        + [f"sub:{i}" for i, c in callers.by_token_subject.items() if c.name == name]
    )


class ConnectionsReloader:
    """Re-reads the connections file (and secrets) into a running StepRunner; see the module docstring."""

    def __init__(
        self,
        runner: StepRunner,
        path: Path,
        *,
        http_pool_size: int,
        drain_seconds: float,
        self_test: str = "off",
        metrics: Metrics | None = None,
        callers: CallersHolder | None = None,
    ) -> None:
        self._runner = runner
        self._path = path
        self._http_pool_size = http_pool_size
        self._drain_seconds = drain_seconds
        self._self_test = self_test
        self._metrics = metrics
        self._sources: Mapping[str, Source] | None = None
        self._callers = callers
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._retired: list[Connection] = []

    def remember(self, configuration: Configuration) -> None:
        """Record what the running connections were built from, so the next reload rebuilds only changes.
        Without it, every connection counts as changed on the first reload (correct, only slower)."""
        self._sources = configuration.sources

    @property
    def retired_open(self) -> int:
        """Connections replaced or removed by a reload whose clients are not closed yet."""
        return len(self._retired)

    async def reload(self) -> bool:
        """Apply the file as it is now; False (and the old configuration kept) when it is invalid."""
        async with self._lock:  # two SIGHUPs in a row apply one after the other, never interleaved
            return await self._reload()

    async def _reload(self) -> bool:
        try:
            configuration = await asyncio.to_thread(load_configuration, self._path)
            if self._callers is not None and not len(configuration.callers):
                raise ConfigurationError(
                    f"callers authenticate, but {self._path} defines no [callers.<name>] table any more"
                )
        except ConfigurationError as exc:
            log.error("configuration reload rejected, the running configuration is kept: %s", exc)
            return False
        sources = configuration.sources
        current = self._runner.connections
        previous = self._sources or {}
        changed = [n for n, s in sources.items() if n not in current or previous.get(n) != s]
        removed = [n for n in current if n not in sources]
        built = {
            name: connection_from_config(name, config, secret, self._http_pool_size, self._metrics)
            for name, (config, secret) in sources.items()
            if name in changed
        }
        passed = not built or self._self_test == "off" or report_self_test(await self_test_all(built))
        if not passed and self._self_test == "strict":
            log.error(
                "configuration reload rejected, the running configuration is kept: a changed connection "
                "failed its self-test (OTP_STEP_SELF_TEST=strict): %s",
                ", ".join(sorted(built)),
            )
            self._close_later(built, 0)
            return False
        replacement = {name: built.get(name) or current[name] for name in sources}
        retired = {name: current[name] for name in [*changed, *removed] if name in current}
        callers = "not authenticated"
        if self._callers is not None:
            callers = caller_changes(self._callers.callers, configuration.callers)
            self._callers.replace_callers(configuration.callers)  # with the connections, no await between
        self._runner.replace_connections(replacement)
        self._sources = sources
        self._close_later(retired, self._drain_seconds)
        log.info(
            "configuration reloaded: %d connections (changed or added: %s; removed: %s); callers: %s",
            len(replacement),
            ", ".join(sorted(changed)) or "none",
            ", ".join(sorted(removed)) or "none",
            callers,
        )
        return True

    def _close_later(self, connections: Mapping[str, Connection], after: float) -> None:
        if not connections:
            return
        retired = list(connections.values())
        self._retired.extend(retired)

        async def close() -> None:
            # Steps that looked a retired connection up before the swap may still be using its clients: wait
            # until none is (each step is bounded by its deadline), and at most `after` plus a minute.
            give_up = loop.time() + after + 60
            while any(self._runner.steps_using(c) for c in retired) and loop.time() < give_up:
                await asyncio.sleep(0.1)
            for connection in retired:
                self._retired.remove(connection)
                await _close(connection)

        loop = asyncio.get_running_loop()
        task = loop.create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close retired connections now (at shutdown, once in-flight steps have drained)."""
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        while self._retired:
            await _close(self._retired.pop())


async def _close(connection: Connection) -> None:
    await connection.gateway.aclose()
    await connection.verifier.aclose()


# What identifies a file's content without reading it: a rewrite in place changes mtime or size, an atomic
# rename (how editors, `kubectl` secret mounts and config managers replace files) changes the inode.
Fingerprint = tuple[tuple[str, int, int, int] | None, ...]


def current_files(path: Path) -> list[Path]:
    """The files a change to which means a reload (just the connections file while it is invalid: a reload
    would be rejected anyway, and its next change is what matters)."""
    try:
        return list(load_configuration(path).files)
    except ConfigurationError:
        return [path]


def fingerprint(files: list[Path]) -> Fingerprint:
    """(path, mtime, size, inode) of each file, None for one that cannot be read now."""
    prints: list[tuple[str, int, int, int] | None] = []
    for file in files:
        try:
            stat = os.stat(file)
        except OSError:
            prints.append(None)
        else:
            prints.append((str(file), stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(prints)


class ConfigurationWatch:
    """Polls the connections file and its secret files every `interval` seconds on the event loop, and calls
    `reload` (the SIGHUP path) when any of them changed.

    Polling, not inotify: no dependency, works the same on every platform and on the mounted volumes
    (Kubernetes secrets, NFS) where file events are unreliable; a few stat calls every two seconds cost
    nothing. A change that makes the file invalid is rejected by the reload like a SIGHUP's, once: the
    watch remembers what it saw and tries again only when the files change again.
    """

    def __init__(self, path: Path, interval: float, reload: Callable[[], Awaitable[bool]]) -> None:
        self._path = path
        self.interval = interval
        self._reload = reload
        self._files = current_files(path)
        self._seen = fingerprint(self._files)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling on the running loop (nothing with an interval of 0)."""
        if self.interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="configuration-watch")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # a bug here must not end the watch, nor the service
                log.exception("configuration watch: checking for changes failed; will check again")

    async def check(self) -> bool | None:
        """Reload if a watched file changed since the last look; the reload's result, None if nothing did."""
        now = fingerprint(self._files)
        if now == self._seen:
            return None
        log.info("configuration watch: %s changed, reloading", self._path.name)
        # Noted before reloading: a rejected file is not retried every interval, only after its next change.
        self._seen = now
        # A valid file may name other secret files; an invalid one keeps watching the file alone. Both the
        # files and their fingerprint are taken *before* the reload reads them, so a write landing during or
        # just after the reload still differs from what was seen and is picked up at the next look.
        files = await asyncio.to_thread(current_files, self._path)
        files_seen = fingerprint(files)
        applied = await self._reload()
        if files != self._files:
            self._files, self._seen = files, files_seen
        return applied

    async def aclose(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
