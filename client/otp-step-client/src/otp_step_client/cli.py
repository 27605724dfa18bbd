"""`otp-step`: run the steps from a shell.

    otp-step generate --connection demo --identifier ada@example.com --channel email --run run-1
    otp-step validate --connection demo --identifier ada@example.com --run run-1 --code 12345678
    otp-step check-connection demo
    otp-step health
    otp-step --cacert ca.crt --cert client.crt --key client.key health       (mTLS)
    OTP_STEP_TOKEN=eyJ... otp-step --cacert ca.crt check-connection demo     (TLS and a bearer token)

Prints each response as JSON (protobuf's JSON mapping). Exit code: 0 success outcome, 1 failure or abort
outcome, 2 the call could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from otp_step_client._client import Credentials, Journey, Step, StepExecutorClient, StepExecutorError

DEFAULT_TARGET = os.environ.get("OTP_STEP_TARGET", "127.0.0.1:50051")


def _step_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connection", default="demo", help="connection name (default: demo)")
    parser.add_argument("--identifier", required=True, help="email address or phone number")
    parser.add_argument("--run", default="", help="journey run id (Generate and Validate must share it)")
    parser.add_argument("--journey", default="cli-journey", help="journey id")
    parser.add_argument("--scope", action="append", default=[], help="OAuth scope (repeatable)")
    parser.add_argument(
        "--abort", action="store_true", help="failure behavior ABORT instead of the failure branch"
    )
    parser.add_argument(
        "--event-data",
        choices=("NONE", "STEP_INPUT_OUTPUT", "CUSTOM_PAYLOAD"),
        default="NONE",
        help="reporting",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otp-step", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--target", default=DEFAULT_TARGET, help=f"service address (default {DEFAULT_TARGET})"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline per call, seconds")
    tls = parser.add_argument_group("TLS and authentication (docs: TLS and authentication)")
    tls.add_argument(
        "--cacert", default=os.environ.get("OTP_STEP_CACERT"), help="CA bundle: use TLS ($OTP_STEP_CACERT)"
    )
    tls.add_argument(
        "--cert", default=os.environ.get("OTP_STEP_CERT"), help="client certificate, mTLS ($OTP_STEP_CERT)"
    )
    tls.add_argument(
        "--key", default=os.environ.get("OTP_STEP_KEY"), help="client private key, mTLS ($OTP_STEP_KEY)"
    )
    # A token on the command line is visible to other local users (ps); the variable is the safer way.
    tls.add_argument(
        "--token", default=os.environ.get("OTP_STEP_TOKEN"), help="bearer token ($OTP_STEP_TOKEN)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    generate = sub.add_parser("generate", help="Cognito OTP Generate")
    _step_arguments(generate)
    generate.add_argument("--channel", choices=("email", "sms"), required=True)
    validate = sub.add_parser("validate", help="Cognito OTP Validate")
    _step_arguments(validate)
    validate.add_argument("--code", required=True, help="the code the user received")
    check = sub.add_parser("check-connection", help="connection self-test")
    check.add_argument("connection")
    sub.add_parser("health", help="grpc.health.v1 check")
    return parser


def _print(message: Any) -> None:
    print(json.dumps(json_format.MessageToDict(message), indent=2))


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def credentials(args: argparse.Namespace) -> Credentials:
    """The client credentials the flags (or their variables) name."""
    if bool(args.cert) != bool(args.key):
        raise SystemExit("otp-step: --cert and --key go together")
    return Credentials(
        root_certificates=_read(args.cacert),
        certificate_chain=_read(args.cert),
        private_key=_read(args.key),
        token=args.token or None,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    with StepExecutorClient(args.target, timeout=args.timeout, credentials=credentials(args)) as client:
        try:
            if args.command == "health":
                status = client.health()
                print(status)
                return 0 if status == "SERVING" else 1
            if args.command == "check-connection":
                result = client.check_connection(args.connection)
                _print(result)
                return 0 if result.ok else 1
            run = args.run or f"cli-{uuid.uuid4().hex[:12]}"
            journey = Journey(args.journey, run_id=run, step_id=f"{args.command}-otp")
            step = Step(
                args.connection,
                args.identifier,
                channel=args.channel.upper() if args.command == "generate" else None,
                scopes=args.scope,
                abort_on_failure=args.abort,
                event_data=args.event_data,
            )
            if args.command == "generate":
                response: Any = client.generate_otp(journey, step)
                if not args.run:
                    print(f"# journey run id: {run} (pass --run {run} to validate)", file=sys.stderr)
            else:
                response = client.validate_otp(journey, step, args.code)
        except StepExecutorError as exc:
            print(f"error: {exc}", file=sys.stderr)
            for field, why in exc.field_violations:
                print(f"  {field}: {why}", file=sys.stderr)
            return 2
    _print(response)
    return 0 if response.WhichOneof("outcome") == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
