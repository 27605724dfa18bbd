"""``python -m cognito_emulator.conformance``: check the emulator's rules against a cognito-idp endpoint.

Exit status: 0 when no rule failed, 1 when one did, 2 when the run could not start.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..settings import EmulatorSettings, SettingsError
from .codes import CodeSource, CommandCodeSource, MailboxCodeSource
from .report import ReportLeakError
from .runner import ConformanceOptions, ConformanceSetupError, Mode, run_conformance
from .suite import SuiteLimits

DEFAULT_OUT = Path("var/conformance")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cognito_emulator.conformance",
        description="Run the emulator's conformance suite (documented and inferred Cognito rules) against the "
        "local emulator (default) or a real user pool. See the docs, 'Checking against a real pool'.",
    )
    where = parser.add_argument_group("where")
    where.add_argument(
        "--mode",
        choices=["emulator", "create", "named"],
        help="emulator (default): a local emulator on a free port; create: a throw-away pool on AWS, deleted "
        "afterwards; named: --user-pool-id / --client-id (the default when they are given)",
    )
    where.add_argument("--region", help="AWS region (default: $AWS_REGION)")
    where.add_argument("--user-pool-id", help="named mode: the pool")
    where.add_argument("--client-id", help="named mode: the app client the service uses")
    secret = where.add_mutually_exclusive_group()
    secret.add_argument(
        "--client-secret-env", help="env var holding the client secret (else DescribeUserPoolClient)"
    )
    secret.add_argument("--client-secret-file", type=Path, help="file holding the client secret")
    where.add_argument(
        "--endpoint-url", help="cognito-idp endpoint override (default: AWS's regional endpoint)"
    )
    codes = parser.add_argument_group("codes (create / named modes)")
    codes.add_argument(
        "--email",
        default="conformance@example.com",
        help="mailbox the test users' codes go to; '{role}' in it becomes the user's role (plus-addressing)",
    )
    codes.add_argument("--phone-number", help="E.164 number for the SMS rules (skipped without it)")
    source = codes.add_mutually_exclusive_group()
    source.add_argument(
        "--code-command",
        help="command printing the newest code; gets CONFORMANCE_DESTINATION and CONFORMANCE_MEDIUM",
    )
    source.add_argument("--mailbox-url", help="GET-able mailbox; '{destination}' in it becomes the address")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-calls", type=int, default=SuiteLimits.max_calls)
    limits.add_argument("--timeout-seconds", type=float, default=SuiteLimits.timeout_seconds)
    limits.add_argument("--code-timeout-seconds", type=float, default=SuiteLimits.code_timeout_seconds)
    limits.add_argument("--max-codes-per-user", type=int, default=SuiteLimits.max_codes_per_user)
    limits.add_argument("--max-wrong-codes", type=int, default=SuiteLimits.max_wrong_codes)
    limits.add_argument(
        "--check-expiry", action="store_true", help="wait out AuthSessionValidity (3+ min) on a real pool"
    )
    emulator = parser.add_argument_group("emulator mode")
    emulator.add_argument("--attempt-cap", type=int, help="the started emulator's attempt_cap [inferred]")
    emulator.add_argument(
        "--auto-select-single-factor", action="store_true", help="the started emulator's knob [inferred]"
    )
    emulator.add_argument(
        "--default-prevent-user-existence-errors",
        choices=["LEGACY", "ENABLED"],
        help="the started emulator's knob [inferred]",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"report folder (default {DEFAULT_OUT})"
    )
    return parser


def _options(args: argparse.Namespace) -> ConformanceOptions:
    mode: Mode = args.mode or ("named" if args.user_pool_id or args.client_id else "emulator")
    secret = None
    if args.client_secret_env:
        secret = os.environ.get(args.client_secret_env)
        if not secret:
            raise ConformanceSetupError(f"--client-secret-env: {args.client_secret_env} is not set")
    elif args.client_secret_file:
        try:
            secret = args.client_secret_file.read_text().strip()
        except OSError as exc:
            raise ConformanceSetupError(f"--client-secret-file: cannot read it ({exc.strerror})") from None
    source: CodeSource | None = None
    if args.code_command:
        source = CommandCodeSource(args.code_command)
    elif args.mailbox_url:
        source = MailboxCodeSource(args.mailbox_url)
    settings = EmulatorSettings()
    changes: dict[str, object] = {}
    if args.attempt_cap is not None:
        changes["attempt_cap"] = args.attempt_cap
    if args.auto_select_single_factor:
        changes["auto_select_single_factor"] = True
    if args.default_prevent_user_existence_errors:
        changes["default_prevent_user_existence_errors"] = args.default_prevent_user_existence_errors
    return ConformanceOptions(
        mode=mode,
        region=args.region,
        endpoint_url=args.endpoint_url,
        user_pool_id=args.user_pool_id,
        client_id=args.client_id,
        client_secret=secret,
        email=args.email,
        phone_number=args.phone_number if mode != "emulator" else "+15555550199",
        code_source=source,
        emulator_settings=settings.updated(changes),
        limits=SuiteLimits(
            max_calls=args.max_calls,
            timeout_seconds=args.timeout_seconds,
            code_timeout_seconds=args.code_timeout_seconds,
            max_codes_per_user=args.max_codes_per_user,
            max_wrong_codes=min(max(args.max_wrong_codes, 1), 10),
            check_expiry=args.check_expiry,
        ),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the suite, write report.md and report.json, print the Markdown."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        outcome = run_conformance(_options(args))
        md_path, json_path = outcome.report.write(args.out, outcome.redactor)
    except (ConformanceSetupError, SettingsError, ValueError) as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 2
    except ReportLeakError as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 1
    print(md_path.read_text(), end="")
    print(f"\nreport: {md_path} and {json_path}", file=sys.stderr)
    return 1 if outcome.report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
