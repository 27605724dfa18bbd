"""``python -m cognito_emulator``: run the emulator in the foreground, optionally seeded."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .seed import DEMO_POOL_NAME, seed_demo, write_connection_files
from .server import EmulatorServer
from .settings import DEFAULT_PORT, ENV_PORT, EmulatorSettings, SettingsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cognito_emulator",
        description="Local Cognito (cognito-idp) emulator: moto plus USER_AUTH with EMAIL_OTP / SMS_OTP.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get(ENV_PORT, DEFAULT_PORT)),
        help=f"port to listen on, 0 for any (default ${ENV_PORT} or {DEFAULT_PORT})",
    )
    parser.add_argument("--seed", action="store_true", help="create the demo pool, client and users at start")
    parser.add_argument("--connections", type=Path, help="with --seed: write the connections TOML here")
    parser.add_argument("--secret-file", type=Path, help="with --seed: write the client secret here (0600)")
    parser.add_argument("--connection-name", default="demo", help="name of the [connections.<name>] table")
    parser.add_argument("--attempt-cap", type=int, help="wrong codes allowed per OTP session [inferred]")
    parser.add_argument(
        "--code-lifetime-seconds",
        type=float,
        help="session/code lifetime override; default: the app client's AuthSessionValidity",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m cognito_emulator`` and the ``cognito-emulator`` script."""
    args = _parser().parse_args(argv)
    if (args.connections is None) != (args.secret_file is None) or (args.connections and not args.seed):
        print("--connections and --secret-file go together, and need --seed", file=sys.stderr)
        return 2
    try:
        settings = EmulatorSettings.from_env()
        overrides = {
            "attempt_cap": args.attempt_cap,
            "code_lifetime_seconds": args.code_lifetime_seconds,
        }
        settings = settings.updated({k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        print(f"invalid setting: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    server = EmulatorServer(host=args.host, port=args.port, settings=settings, verbose=args.verbose)
    server.start()
    try:
        print(f"cognito-emulator listening on {server.endpoint_url}", flush=True)
        if args.seed:
            result = seed_demo(server.endpoint_url)
            print(
                f"seeded pool {result.user_pool_id} ({DEMO_POOL_NAME}), client {result.client_id}, "
                f"users {', '.join(u.username for u in result.users)}",
                flush=True,
            )
            if args.connections is not None and args.secret_file is not None:
                write_connection_files(result, args.connections, args.secret_file, name=args.connection_name)
                print(f"wrote {args.connections} and {args.secret_file}", flush=True)
        # Polled, not a bare wait(): a signal delivered to another thread only runs its Python handler when the
        # main thread next executes bytecode, which a wait() without timeout may never do.
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
