"""`python -m otp_step_service`: serve (default) or self-test the configured connections."""

from __future__ import annotations

import argparse
import logging
import sys

from otp_step_service.connections import ConfigurationError, build_connections
from otp_step_service.service import SelfTestFailedError, Service, report_self_test, self_test_all
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
        provider = configure_tracing()
        service = Service.build(settings, tracing=provider is not None)
        service.prepare()
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
    stopped.wait()
    if provider is not None:
        provider.shutdown()  # type: ignore[attr-defined]
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
