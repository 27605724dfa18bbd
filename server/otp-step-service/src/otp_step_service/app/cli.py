"""The `otp-step-service` command (also `python -m otp_step_service`): serve (default) or self-test the configured connections."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from types import FrameType

from otp_step_service.app.connection_checks import (
    check_connections,
    close_connections,
    report_self_test,
    self_test_all,
)
from otp_step_service.app.connections import build_connections
from otp_step_service.app.service import Service
from otp_step_service.config.settings import (
    ServiceSettings,
    SettingsError,
    deprecated_variables,
    documented,
    mistyped_variables,
)
from otp_step_service.observability.step_log import configure_logging, flush_logs
from otp_step_service.observability.telemetry import configure_tracing
from otp_step_service.steps.errors import ConfigurationError

log = logging.getLogger("otp_step_service")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m otp_step_service",
        description="Cognito OTP Generate / Validate journey steps over gRPC (StepExecutor).",
        epilog="Environment: "
        + "; ".join(f"{name} (default {default!r}): {what}" for name, default, what in documented()),
    )
    sub = parser.add_subparsers(dest="command")
    for name in ("serve", "self-test"):
        command = sub.add_parser(name)
        command.add_argument(
            "--connections", dest="connections_path", help="connections file (OTP_STEP_CONNECTIONS)"
        )
        if name == "serve":
            command.add_argument("--listen", help="bind address (OTP_STEP_LISTEN)")
            command.add_argument("--processes", help="server processes sharing the port (OTP_STEP_PROCESSES)")
            command.add_argument(
                "--max-concurrent-steps", help="steps in flight bound (OTP_STEP_MAX_CONCURRENT_STEPS)"
            )
            command.add_argument(
                "--max-steps-per-caller", help="steps in flight per caller (OTP_STEP_MAX_STEPS_PER_CALLER)"
            )
            command.add_argument(
                "--challenge-store", help="'memory' or redis:// URL (OTP_STEP_CHALLENGE_STORE)"
            )
            command.add_argument(
                "--self-test", choices=("warn", "strict", "off"), help="(OTP_STEP_SELF_TEST)"
            )
            # store_const with default None, not store_true: an absent flag must leave the environment's
            # OTP_STEP_ALLOW_INSECURE in force (from_env drops None), not override it with False.
            command.add_argument(
                "--allow-insecure",
                action="store_const",
                const=True,
                default=None,
                help="serve plaintext beyond loopback on purpose, logged as a warning (OTP_STEP_ALLOW_INSECURE)",
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        settings = ServiceSettings.from_env(**overrides)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    for name in deprecated_variables():
        log.warning("%s no longer does anything: steps run on an event loop, not on worker threads", name)
    for name, meant in mistyped_variables():
        log.warning("%s is not a setting and is ignored: did you mean %s?", name, meant)
    try:
        if args.command == "self-test":
            return asyncio.run(_self_test(settings))
    except (ConfigurationError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    if settings.processes > 1:
        return _serve_processes(settings)
    return _serve(settings)


async def _self_test(settings: ServiceSettings) -> int:
    connections = build_connections(settings.connections_path, http_pool_size=4)
    try:
        return 0 if report_self_test(await self_test_all(connections)) else 1
    finally:
        await close_connections(connections)


def _serve(settings: ServiceSettings, self_test: bool = True) -> int:
    """Build, prepare and run one server process until SIGTERM / SIGINT."""
    provider = configure_tracing()
    try:
        code = asyncio.run(_serve_async(settings, self_test, tracing=provider is not None))
    finally:
        if provider is not None:
            provider.shutdown()  # type: ignore[attr-defined]
    if code == 0:
        log.info("stopped")
    return code


async def _serve_async(settings: ServiceSettings, self_test: bool, tracing: bool) -> int:
    try:
        service = Service.build(settings, tracing=tracing)
    except (ConfigurationError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    try:
        await service.prepare(self_test=self_test)
        await service.start()
    except (ConfigurationError, OSError) as exc:
        log.error("cannot start: %s", exc)
        await service.stop(0)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[str] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum.name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    reloads: set[asyncio.Task[bool]] = set()

    def on_reload() -> None:
        log.info("SIGHUP: reloading the connections file and secrets")
        task = loop.create_task(service.reload())
        reloads.add(task)  # held until done: the loop keeps only a weak reference to tasks
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_reload)
    log.info(
        "serving StepExecutor on %s (port %d; max %d concurrent steps, %d per caller)",
        settings.listen,
        service.port,
        settings.max_concurrent_steps,
        settings.max_steps_per_caller,
    )
    await stop.wait()
    log.info(
        "%s: NOT_SERVING for %.0f s, then draining in-flight steps (grace %.0f s)",
        received[0],
        settings.drain_notice_seconds,
        settings.grace_seconds,
    )
    await service.stop(settings.grace_seconds, settings.drain_notice_seconds)
    return 0


def _stop_with_parent() -> None:
    """Linux: have the kernel send this child SIGTERM when the parent dies, even by SIGKILL, so a killed
    supervisor never leaves servers holding the port. Elsewhere nothing is done."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _serve_processes(settings: ServiceSettings) -> int:
    """Fork OTP_STEP_PROCESSES servers sharing the port (SO_REUSEPORT), and pass signals on to them.

    One Python process runs its event loop on one core; this is how the service uses more. The
    kernel spreads incoming connections over the processes, so it pays off with several client connections
    (several orchestrator instances, or clients opening more than one channel). The parent creates no gRPC
    object and no running event loop before forking: neither survives fork.
    """
    try:
        # Configuration and the self-test are checked once, here, on an event loop that is closed again
        # before forking: it uses aiobotocore only, no gRPC, and leaves no connection open.
        connections = build_connections(settings.connections_path, http_pool_size=1)

        async def checked() -> None:
            try:
                await check_connections(connections, settings.self_test)
            finally:
                await close_connections(connections)

        asyncio.run(checked())
    except ConfigurationError as exc:
        log.error("cannot start: %s", exc)
        return 2
    children: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    # Installed before forking so a signal arriving meanwhile is not lost; each child resets it at once.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    for index in range(settings.processes):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            # Until its event loop handles it, a SIGHUP must not end the child (the default action).
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            _stop_with_parent()
            code = 1
            try:
                code = _serve(settings.for_process(index), self_test=False)
            finally:
                flush_logs()
                os._exit(code)
        children.append(pid)
    codes: dict[int, int] = {}
    while len(codes) < len(children):
        pid, status = os.wait()
        codes[pid] = os.waitstatus_to_exitcode(status)
        if codes[pid] != 0 and len(codes) < len(children):
            # One server failed (a port it could not bind, say): stop the rest rather than run short-handed.
            log.error("server process %d exited with %d; stopping the others", pid, codes[pid])
            forward(signal.SIGTERM, None)
    log.info("all %d server processes stopped (exit codes %s)", len(codes), sorted(codes.values()))
    return max(codes.values())
