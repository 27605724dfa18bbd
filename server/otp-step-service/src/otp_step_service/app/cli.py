"""The `otp-step-service` command (also `python -m otp_step_service`): serve (default), self-test the configured
connections, or ask a running service whether it is healthy (`health`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from otp_step_service.app.health_probe import ProbeTls, check, default_target

if TYPE_CHECKING:
    from otp_step_service.config.settings import ServiceSettings

# The service's modules are imported where they are used, not here: `health` (run by the image's HEALTHCHECK
# every few seconds) needs none of them, and importing them all costs a second of CPU.

log = logging.getLogger("otp_step_service")


def _health_arguments(health: argparse.ArgumentParser) -> argparse.ArgumentParser:
    health.add_argument(
        "--target",
        help="host:port to ask (default: OTP_STEP_HEALTH_LISTEN, else OTP_STEP_LISTEN, on loopback)",
    )
    health.add_argument("--service", default="", help="health service name ('' : the server as a whole)")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds before the check fails")
    health.add_argument("--tls-ca", type=Path, help="speak TLS, verifying the server with this PEM CA bundle")
    health.add_argument("--tls-cert", type=Path, help="client certificate (PEM) for an mTLS port")
    health.add_argument("--tls-key", type=Path, help="client private key (PEM) for an mTLS port")
    health.add_argument("--tls-server-name", help="the name in the server's certificate, if not the target's")
    return health


def _parser() -> argparse.ArgumentParser:
    from otp_step_service.config.settings import documented

    parser = argparse.ArgumentParser(
        prog="python -m otp_step_service",
        description="Cognito OTP Generate / Validate journey steps over gRPC (StepExecutor).",
        epilog="Environment: "
        + "; ".join(f"{name} (default {default!r}): {what}" for name, default, what in documented()),
    )
    sub = parser.add_subparsers(dest="command")
    _health_arguments(
        sub.add_parser(
            "health",
            help="exit 0 when the running service reports SERVING (the image's HEALTHCHECK; an exec probe)",
        )
    )
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
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["health"]:
        return _health(
            _health_arguments(argparse.ArgumentParser(prog="otp-step-service health")).parse_args(argv[1:])
        )
    args = _parser().parse_args(argv)
    from otp_step_service.config.settings import (
        ServiceSettings,
        SettingsError,
        deprecated_variables,
        mistyped_variables,
    )
    from otp_step_service.observability.step_log import configure_logging
    from otp_step_service.steps.errors import ConfigurationError

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


def _health(args: argparse.Namespace) -> int:
    """Ask the service's health service; print the status, exit 0 only on SERVING."""
    if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_cert and args.tls_ca is None):
        print("health: --tls-cert and --tls-key go together, with --tls-ca", file=sys.stderr)
        return 2
    tls = None
    if args.tls_ca is not None:
        tls = ProbeTls(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    target = args.target or default_target()
    try:
        status = check(target, args.service, tls, args.timeout)
    except OSError as exc:  # a TLS file that cannot be read
        print(f"health: {exc}", file=sys.stderr)
        return 2
    print(f"{target}: {status}")
    return 0 if status == "SERVING" else 1


async def _self_test(settings: ServiceSettings) -> int:
    from otp_step_service.app.connection_checks import close_connections, report_self_test, self_test_all
    from otp_step_service.app.connections import build_connections

    connections = build_connections(settings.connections_path, http_pool_size=4)
    try:
        return 0 if report_self_test(await self_test_all(connections)) else 1
    finally:
        await close_connections(connections)


def _serve(settings: ServiceSettings, self_test: bool = True) -> int:
    """Build, prepare and run one server process until SIGTERM / SIGINT."""
    from otp_step_service.observability.telemetry import configure_tracing

    provider = configure_tracing()
    try:
        code = asyncio.run(_serve_async(settings, self_test, tracing=provider is not None))
    finally:
        if provider is not None:
            provider.shutdown()
    if code == 0:
        log.info("stopped")
    return code


async def _serve_async(settings: ServiceSettings, self_test: bool, tracing: bool) -> int:
    from otp_step_service.app.service import Service
    from otp_step_service.steps.errors import ConfigurationError

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
    # Everything built so far (modules, botocore's service model, gRPC, the connections) lives as long as
    # the process: frozen, the cyclic collector stops walking it again in every full collection, a large
    # share of a step's CPU otherwise (more so with spans recorded: docs/tracing.md). Frozen objects are
    # still freed by reference counting; only cycles among them (a reload's retired connections) stay.
    gc.collect()
    gc.freeze()
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
    from otp_step_service.app.connection_checks import check_connections, close_connections
    from otp_step_service.app.connections import build_connections
    from otp_step_service.steps.errors import ConfigurationError

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
                from otp_step_service.observability.step_log import flush_logs

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
