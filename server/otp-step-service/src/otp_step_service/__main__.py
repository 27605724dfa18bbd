"""`python -m otp_step_service`: serve (default) or self-test the configured connections."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from types import FrameType

from otp_step_service.connections import ConfigurationError, build_connections
from otp_step_service.service import (
    SelfTestFailedError,
    Service,
    check_connections,
    report_self_test,
    self_test_all,
)
from otp_step_service.settings import ENVIRONMENT, ServiceSettings, SettingsError
from otp_step_service.step_log import configure_logging
from otp_step_service.telemetry import configure_tracing

log = logging.getLogger("otp_step_service")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m otp_step_service",
        description="Cognito OTP Generate / Validate journey steps over gRPC (StepExecutor).",
        epilog="Environment: "
        + "; ".join(f"{name} (default {default!r}): {what}" for name, (default, what) in ENVIRONMENT.items()),
    )
    sub = parser.add_subparsers(dest="command")
    for name in ("serve", "self-test"):
        command = sub.add_parser(name)
        command.add_argument(
            "--connections", dest="connections_path", help="connections file (OTP_STEP_CONNECTIONS)"
        )
        if name == "serve":
            command.add_argument("--listen", help="bind address (OTP_STEP_LISTEN)")
            command.add_argument("--workers", help="worker threads (OTP_STEP_WORKERS)")
            command.add_argument("--processes", help="server processes sharing the port (OTP_STEP_PROCESSES)")
            command.add_argument(
                "--max-concurrent-steps", help="in-flight bound (OTP_STEP_MAX_CONCURRENT_STEPS)"
            )
            command.add_argument(
                "--challenge-store", help="'memory' or redis:// URL (OTP_STEP_CHALLENGE_STORE)"
            )
            command.add_argument(
                "--self-test", choices=("warn", "strict", "off"), help="(OTP_STEP_SELF_TEST)"
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
    configure_logging(settings.log_level)
    try:
        if args.command == "self-test":
            connections = build_connections(settings.connections_path, max_connections=4)
            return 0 if report_self_test(self_test_all(connections)) else 1
    except (ConfigurationError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    if settings.processes > 1:
        return _serve_processes(settings)
    return _serve(settings)


def _serve(settings: ServiceSettings, self_test: bool = True) -> int:
    """Build, prepare and run one server process until SIGTERM / SIGINT."""
    try:
        provider = configure_tracing()
        service = Service.build(settings, tracing=provider is not None)
        service.prepare(self_test=self_test)
    except (ConfigurationError, SelfTestFailedError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    stopped = service.server.stop_on_signals(settings.grace_seconds)
    service.server.start()
    log.info(
        "serving StepExecutor on %s (port %d; workers %d, max %d concurrent steps)",
        settings.listen,
        service.server.port,
        settings.workers,
        settings.max_concurrent_steps,
    )
    # Polled, not a bare wait(): a signal delivered to another thread only runs its Python handler when the
    # main thread next executes bytecode, which a wait() without timeout may never do.
    while not stopped.wait(0.5):
        pass
    if provider is not None:
        provider.shutdown()  # type: ignore[attr-defined]
    log.info("stopped")
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

    One Python process runs steps on one core at a time (the GIL); this is how the service uses more. The
    kernel spreads incoming connections over the processes, so it pays off with several client connections
    (several orchestrator instances, or clients opening more than one channel). The parent creates no gRPC
    object before forking: gRPC's core does not survive fork.
    """
    try:
        # Configuration and the self-test are checked once, here: both use boto3 only, no gRPC.
        connections = build_connections(settings.connections_path, max_connections=1)
        check_connections(connections, settings.self_test)
    except (ConfigurationError, SelfTestFailedError) as exc:
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
    for _ in range(settings.processes):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _stop_with_parent()
            code = 1
            try:
                code = _serve(settings, self_test=False)
            finally:
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


if __name__ == "__main__":
    sys.exit(main())
